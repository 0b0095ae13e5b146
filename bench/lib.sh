# shellcheck shell=bash
# Shared by the benchmark scripts (bench/*.sh): sourced after `cd` to the
# repository root, with BENCH_NAME (the prefix of messages), BUILD_DIR and
# BIN set. See bench/README.md.

die() { echo "$BENCH_NAME: $*" >&2; exit 1; }

# Builds the given targets into $BUILD_DIR (scripts/build.sh; it configures
# first, so the bench/*.cc glob picks up new sources) when one is missing or
# older than the sources, or always with BENCH_REBUILD=1; then checks that
# each exists.
bench_build() {
  local b stale=0
  [[ "${BENCH_REBUILD:-0}" == 1 ]] && stale=1
  for b in "$@"; do
    if [[ ! -x "$BIN/$b" ]] ||
      [[ -n "$(find broker issuers include bench cli CMakeLists.txt -newer "$BIN/$b" \
                \( -name '*.cc' -o -name '*.h' -o -name CMakeLists.txt \) -print -quit)" ]]; then
      stale=1
    fi
  done
  if [[ "$stale" == 1 ]]; then
    echo "$BENCH_NAME: building $* into $BUILD_DIR" >&2
    BUILD_DIR="$BUILD_DIR" BUILD_TARGETS="$*" bash scripts/build.sh >&2 || die "build failed"
  fi
  for b in "$@"; do
    [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing"
  done
}

# Sets LOAD_START to the load averages, and warns when other work on the box
# will skew the figures.
bench_note_load() {
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN {exit !(l > 0.25 * n)}'; then
    echo "$BENCH_NAME: warning: load average is $LOAD_START before the run; results will be noisy" >&2
  fi
}

# Stops process $1: SIGTERM, up to 10 s for it to exit, then SIGKILL.
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# Sets audit.file_sync ($FILE_SYNC: interval or commit; and, for interval,
# file_sync_interval_ms = $FILE_SYNC_INTERVAL_MS) in the broker config $1, a
# copy of bench/bench.yaml whose audit section is `audit: {}`, `audit:` or
# absent.
set_file_sync() {
  local conf=$1
  awk -v mode="$FILE_SYNC" -v ms="$FILE_SYNC_INTERVAL_MS" -v who="$BENCH_NAME" '
    function keys() {
      print "audit:"
      print "  file_sync: " mode "  # set by " who " (BENCH_FILE_SYNC)"
      if (mode == "interval") print "  file_sync_interval_ms: " ms
    }
    /^audit:[[:space:]]*(\{[[:space:]]*\})?[[:space:]]*(#.*)?$/ && !done { keys(); done = 1; next }
    /^audit:/ { bad = 1 }
    { print }
    END { if (!done) { print ""; keys() } if (bad) exit 3 }' "$conf" >"$conf.new" ||
    die "cannot set audit.file_sync in $conf: its audit section is not 'audit: {}' or 'audit:'"
  mv "$conf.new" "$conf"
}
