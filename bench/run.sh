#!/usr/bin/env bash
# jitbroker benchmark: in one run, measures
#   (a) the ceiling: a trivial endpoint on the broker's own listener
#       (bench/ceiling_server), next to the same endpoint on cpp-httplib (the
#       listener before issue #10, for reference), and
#   (b) allowed grant requests end to end (auth + policy + ES256 mint + durable
#       group-committed store/audit write) against the real daemon,
# then the grant path again, open loop at half its measured peak, and
#   (c) GitHub installation-token mints by the github_app issuer against the
#       fake GitHub, and (c') AWS AssumeRole mints by the aws_sts issuer
#       against the fake STS, with injected latency (bench/mint_bench.cc),
# and prints grants/s, p50/p99 latency, the ratio b/a, the half-rate p99 and
# mints/s against its target. The table is also written to
# bench/results/latest.txt. See bench/README.md.
#
# Environment:
#   BUILD_DIR        build directory (default build-bench)
#   BENCH_CONNS      connections (default 32)
#   BENCH_DURATION   measured seconds per phase (default 10)
#   BENCH_WARMUP     warm-up seconds before each closed-loop phase (default 2)
#   BENCH_THREADS    server worker threads, ceiling and broker (default 64)
#   BENCH_GH_CONCURRENCY  (c), (c') concurrent minting threads (default 200)
#   BENCH_GH_LATENCY_MS   (c), (c') injected upstream latency per request (default 50)
#   BENCH_EXCHANGE=0      skip (d), CI OIDC token exchanges (bench/exchange.sh;
#                         BENCH_EXCHANGE_TOKENS, BENCH_EXCHANGE_RUNS there)
#   BENCH_STRICT=1   exit 1 when a target is missed
#   BENCH_REBUILD=1  always run scripts/build.sh first
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build-bench}
BIN="$ROOT/$BUILD_DIR"
CONNS=${BENCH_CONNS:-32}
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
THREADS=${BENCH_THREADS:-64}
RESULTS_DIR="$ROOT/bench/results"

die() { echo "bench: $*" >&2; exit 1; }

# --- build (only when a binary is missing or older than the sources) --------
needs_build() {
  [[ "${BENCH_REBUILD:-0}" == 1 ]] && return 0
  local b
  for b in jitbroker ceiling_server loadgen mint_bench; do
    [[ -x "$BIN/$b" ]] || return 0
  done
  [[ -n "$(find broker issuers include bench CMakeLists.txt -newer "$BIN/jitbroker" \
            \( -name '*.cc' -o -name '*.h' -o -name CMakeLists.txt \) -print -quit)" ]]
}
if needs_build; then
  echo "bench: building into $BUILD_DIR" >&2
  if ! BUILD_DIR="$BUILD_DIR" bash scripts/build.sh >&2; then
    # The full build includes the test suites; the benchmark needs only these.
    echo "bench: full build failed; building the benchmark targets only" >&2
    cmake --build "$BUILD_DIR" -j"$(nproc)" --target jitbroker ceiling_server loadgen \
      mint_bench >&2 ||
      die "build failed"
  fi
fi
for b in jitbroker ceiling_server loadgen mint_bench; do
  [[ -x "$BIN/$b" ]] || die "$BIN/$b is missing"
done

# Other work on the box skews everything; record it with the results.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN {exit !(l > 0.25 * n)}'; then
  echo "bench: warning: load average is $LOAD_START before the run; results will be noisy" >&2
fi

# --- scratch space and cleanup ------------------------------------------------
umask 077
TMP=$(mktemp -d "${TMPDIR:-/tmp}/jitbroker-bench.XXXXXX")
CEILING_PID=""
BROKER_PID=""

stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  [[ -n "$CEILING_PID" ]] && stop_pid "$CEILING_PID"
  [[ -n "$BROKER_PID" ]] && stop_pid "$BROKER_PID"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (up to 20 s) for "... listening on port N" in $1; prints N.
wait_port() {
  local file=$1 pid=$2 i port
  for i in $(seq 1 200); do
    port=$(sed -n 's/.*listening on port \([0-9][0-9]*\).*/\1/p' "$file" | head -n 1)
    if [[ -n "$port" ]]; then
      echo "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# field NAME < RESULT line
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

# Mean group-commit batch size between two scrapes: (sum2-sum1)/(count2-count1).
commit_stats() {
  { curl -sS --max-time 5 "http://127.0.0.1:$1/metrics" || true; } |
    awk '/^jitbroker_audit_commit_batches_sum[ {]/ {s=$NF} /^jitbroker_audit_commit_batches_count[ {]/ {c=$NF}
         END {printf "%s %s\n", (s==""?0:s), (c==""?0:c)}'
}
mean_batch() {  # before-line after-line
  awk -v a="$1" -v b="$2" 'BEGIN {split(a, x, " "); split(b, y, " "); n = y[2] - x[2];
       if (n > 0) printf "%.1f", (y[1] - x[1]) / n; else printf "n/a"}'
}

json_field() {  # NAME < JSON (top-level string field)
  if command -v jq >/dev/null 2>&1; then
    jq -r --arg k "$1" '.[$k] // empty'
  else
    sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"
  fi
}

LOADGEN=("$BIN/loadgen" -c "$CONNS" -t 1)

# --- (a) ceiling, and the floor ------------------------------------------------
echo "bench: (a) ceiling: $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
"$BIN/ceiling_server" 0 "$THREADS" "$TMP/floor.journal" >"$TMP/ceiling.out" 2>"$TMP/ceiling.err" &
CEILING_PID=$!
CEILING_PORT=$(wait_port "$TMP/ceiling.out" "$CEILING_PID") ||
  die "ceiling_server did not start: $(cat "$TMP/ceiling.err")"
"${LOADGEN[@]}" -l ceiling -w "$WARMUP" -d "$DURATION" -m POST -b '{}' \
  --url "http://127.0.0.1:$CEILING_PORT/ping" >"$TMP/ceiling.txt" ||
  die "loadgen against the ceiling failed: $(cat "$TMP/ceiling.txt")"
cat "$TMP/ceiling.txt" >&2
CEIL=$(grep '^RESULT ' "$TMP/ceiling.txt")
# The floor: only what the specification makes every request do (an ES256
# signature and one durable group-committed append; an RS256 verification
# more for an exchange) on the same HTTP stack. See bench/ceiling_server.cc.
for f in grant exchange; do
  echo "bench: floor /floor/$f: $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
  "${LOADGEN[@]}" -l "floor-$f" -w "$WARMUP" -d "$DURATION" -m POST -b '{}' \
    --url "http://127.0.0.1:$CEILING_PORT/floor/$f" >"$TMP/floor-$f.txt" ||
    die "loadgen against the floor failed: $(cat "$TMP/floor-$f.txt")"
  cat "$TMP/floor-$f.txt" >&2
done
FLOOR_G=$(grep '^RESULT ' "$TMP/floor-grant.txt")
FLOOR_X=$(grep '^RESULT ' "$TMP/floor-exchange.txt")
stop_pid "$CEILING_PID"  # free the CPU for the broker run
CEILING_PID=""
rm -f "$TMP"/floor.journal*

# The same trivial endpoint on cpp-httplib, the listener before issue #10.
echo "bench: (a') cpp-httplib /ping: $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
"$BIN/ceiling_server" 0 "$THREADS" --stack httplib >"$TMP/httplib.out" 2>"$TMP/httplib.err" &
CEILING_PID=$!
HTTPLIB_PORT=$(wait_port "$TMP/httplib.out" "$CEILING_PID") ||
  die "ceiling_server --stack httplib did not start: $(cat "$TMP/httplib.err")"
"${LOADGEN[@]}" -l httplib -w "$WARMUP" -d "$DURATION" -m POST -b '{}' \
  --url "http://127.0.0.1:$HTTPLIB_PORT/ping" >"$TMP/httplib.txt" ||
  die "loadgen against cpp-httplib failed: $(cat "$TMP/httplib.txt")"
cat "$TMP/httplib.txt" >&2
HTTPLIB=$(grep '^RESULT ' "$TMP/httplib.txt")
stop_pid "$CEILING_PID"
CEILING_PID=""

# --- broker -------------------------------------------------------------------
cp bench/bench.yaml "$TMP/bench.yaml"
sed -i "s/^  threads: 64$/  threads: $THREADS/" "$TMP/bench.yaml"
API_KEY="jbk_$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')"  # 40 hex characters
printf '%s\n' "$API_KEY" >"$TMP/engineer.key"
printf 'Authorization: Bearer %s\n' "$API_KEY" >"$TMP/principal.headers"
unset API_KEY

"$BIN/jitbroker" --config "$TMP/bench.yaml" >"$TMP/broker.out" 2>"$TMP/broker.err" &
BROKER_PID=$!
BROKER_PORT=$(wait_port "$TMP/broker.out" "$BROKER_PID") ||
  die "jitbroker did not start: $(tail -n 20 "$TMP/broker.err")"
BASE="http://127.0.0.1:$BROKER_PORT"

SESSION_BODY='{"agent":{"id":"bench_agent"},"task":{"id":"bench_task","description":"jitbroker benchmark","scope":{"resources":["jwt://mcp.internal"],"max_tier":"read","issuers":["internal"]}},"ttl_seconds":900,"heartbeat_seconds":600}'
HTTP=$(curl -sS --max-time 10 -o "$TMP/session.json" -w '%{http_code}' -X POST \
  -H @"$TMP/principal.headers" -H 'Content-Type: application/json' \
  --data "$SESSION_BODY" "$BASE/v1/sessions") || die "POST /v1/sessions failed"
[[ "$HTTP" == 201 ]] || die "POST /v1/sessions answered $HTTP: $(cat "$TMP/session.json")"
SESSION_ID=$(json_field session_id <"$TMP/session.json")
SESSION_TOKEN=$(json_field session_token <"$TMP/session.json")
rm -f "$TMP/session.json"
[[ "$SESSION_ID" =~ ^ses_[A-Za-z0-9_-]+$ && -n "$SESSION_TOKEN" ]] ||
  die "unexpected session response"
printf 'Authorization: Bearer %s\n' "$SESSION_TOKEN" >"$TMP/session.headers"
unset SESSION_TOKEN

GRANT_PATH="/v1/sessions/$SESSION_ID/grants"
GRANT_BODY='{"tool":"mcp.search","operation":"read","resource":"jwt://mcp.internal","issuer":"internal","ttl_seconds":300}'
printf '%s' "$GRANT_BODY" >"$TMP/grant.json"
# One grant by hand first: the load must be allowed grants, not errors.
HTTP=$(curl -sS --max-time 10 -o "$TMP/grant.out" -w '%{http_code}' -X POST \
  -H @"$TMP/session.headers" -H 'Content-Type: application/json' \
  --data-binary @"$TMP/grant.json" "$BASE$GRANT_PATH") || die "grant request failed"
if [[ "$HTTP" != 201 ]]; then
  die "a grant answered $HTTP, expected 201: $(sed 's/"token":"[^"]*"/"token":"[redacted]"/' "$TMP/grant.out")"
fi
rm -f "$TMP/grant.out"

# --- (b) grants at peak -------------------------------------------------------------
echo "bench: (b) grants: $CONNS connections, ${WARMUP}s warm-up + ${DURATION}s" >&2
M0=$(commit_stats "$BROKER_PORT")
"${LOADGEN[@]}" -l grants -w "$WARMUP" -d "$DURATION" -m POST --header-file "$TMP/session.headers" \
  --body-file "$TMP/grant.json" --url "$BASE$GRANT_PATH" >"$TMP/grants.txt" ||
  die "loadgen against the broker failed: $(cat "$TMP/grants.txt"; tail -n 5 "$TMP/broker.err")"
cat "$TMP/grants.txt" >&2
M1=$(commit_stats "$BROKER_PORT")
GRANT=$(grep '^RESULT ' "$TMP/grants.txt")

# --- grants open loop at half the peak ---------------------------------------------
PEAK=$(field rps <<<"$GRANT")
HALF=$(awk -v p="$PEAK" 'BEGIN {printf "%.1f", p / 2}')
echo "bench: grants open loop at $HALF/s for ${DURATION}s (+1s warm-up)" >&2
"${LOADGEN[@]}" -l grants-half -w 1 -d "$DURATION" -r "$HALF" --drain 5 -m POST \
  --header-file "$TMP/session.headers" --body-file "$TMP/grant.json" \
  --url "$BASE$GRANT_PATH" >"$TMP/half.txt" ||
  die "loadgen (open loop) failed: $(cat "$TMP/half.txt")"
cat "$TMP/half.txt" >&2
M2=$(commit_stats "$BROKER_PORT")
HALFR=$(grep '^RESULT ' "$TMP/half.txt")
stop_pid "$BROKER_PID"  # free the CPU for the in-process GitHub benchmark
BROKER_PID=""

# --- (c) github_app mints against the fake GitHub, (c') aws_sts against the fake STS
GH_CONC=${BENCH_GH_CONCURRENCY:-200}
GH_LAT=${BENCH_GH_LATENCY_MS:-50}
mint_bench() {  # issuer output-file
  echo "bench: $1 mints: $GH_CONC threads, ${GH_LAT} ms upstream latency, ${WARMUP}s warm-up + ${DURATION}s" >&2
  "$BIN/mint_bench" --issuer "$1" --concurrency "$GH_CONC" --latency-ms "$GH_LAT" \
    --warmup-s "$WARMUP" --duration-s "$DURATION" >"$2" 2>&1 ||
    die "mint_bench --issuer $1 failed: $(cat "$2")"
  cat "$2" >&2
}
mint_bench github_app "$TMP/github.txt"
GH=$(grep '^RESULT ' "$TMP/github.txt")
mint_bench aws_sts "$TMP/aws.txt"
AWS=$(grep '^RESULT ' "$TMP/aws.txt")

# --- (d) CI OIDC token exchanges (bench/exchange.sh, same ceiling) ------------------
EX=""
if [[ "${BENCH_EXCHANGE:-1}" == 1 ]]; then
  echo "bench: (d) token exchanges (bench/exchange.sh)" >&2
  EXCHANGE_CEILING="$CEIL" BUILD_DIR="$BUILD_DIR" BENCH_STRICT=0 bash bench/exchange.sh \
    >"$TMP/exchange.txt" 2>"$TMP/exchange.err" ||
    die "bench/exchange.sh failed: $(tail -n 20 "$TMP/exchange.err")"
  cat "$TMP/exchange.err" >&2
  EX=$(grep '^RESULT bench=exchange' "$TMP/exchange.txt")
fi

# --- report -------------------------------------------------------------------------
C_RPS=$(field rps <<<"$CEIL");   C_P50=$(field p50_ms <<<"$CEIL");  C_P99=$(field p99_ms <<<"$CEIL")
G_RPS=$(field rps <<<"$GRANT");  G_P50=$(field p50_ms <<<"$GRANT"); G_P99=$(field p99_ms <<<"$GRANT")
H_RPS=$(field rps <<<"$HALFR");  H_P50=$(field p50_ms <<<"$HALFR"); H_P99=$(field p99_ms <<<"$HALFR")
errs() { echo "$(field non2xx <<<"$1") non-2xx, $(field errors <<<"$1") transport, $(field incomplete <<<"$1") incomplete"; }
RATIO=$(awk -v g="$G_RPS" -v c="$C_RPS" 'BEGIN {if (c > 0) printf "%.3f", g / c; else print "n/a"}')
F_RPS=$(field rps <<<"$FLOOR_G"); FX_RPS=$(field rps <<<"$FLOOR_X")
ratio() { awk -v n="$1" -v d="$2" 'BEGIN {if (d > 0) printf "%.3f", n / d; else print "n/a"}'; }
RATIO_OK=$(awk -v r="$RATIO" 'BEGIN {print (r + 0 >= 0.5) ? "PASS" : "FAIL"}')
HALF_OK=$(awk -v p="$H_P99" -v i="$(field incomplete <<<"$HALFR")" -v e="$(field errors <<<"$HALFR")" \
  -v n="$(field non2xx <<<"$HALFR")" 'BEGIN {print (p + 0 <= 10 && i == 0 && e == 0 && n == 0) ? "PASS" : "FAIL"}')
GH_RATE=$(field mints_per_s <<<"$GH"); GH_TARGET=$(field target <<<"$GH")
GH_OK=$([[ "$(field met <<<"$GH")" == 1 ]] && echo PASS || echo FAIL)
AWS_OK=$([[ "$(field met <<<"$AWS")" == 1 ]] && echo PASS || echo FAIL)
BATCH_PEAK=$(mean_batch "$M0" "$M1")
BATCH_HALF=$(mean_batch "$M1" "$M2")
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
REV=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)

mkdir -p "$RESULTS_DIR"
{
  echo "jitbroker benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)  rev $REV"
  echo "host: $(nproc) CPUs ($CPU); loadgen shares them with the server"
  echo "load average: $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end (other work on the host skews the figures)"
  echo "load: $CONNS keep-alive connections, 1 loadgen thread, ${WARMUP}s warm-up + ${DURATION}s per phase; server threads $THREADS"
  echo
  printf '%-34s %12s %10s %10s\n' "" "req/s" "p50 ms" "p99 ms"
  printf '%-34s %12s %10s %10s\n' "(a) ceiling POST /ping" "$C_RPS" "$C_P50" "$C_P99"
  printf '%-34s %12s %10s %10s\n' "(a') cpp-httplib POST /ping" "$(field rps <<<"$HTTPLIB")" \
    "$(field p50_ms <<<"$HTTPLIB")" "$(field p99_ms <<<"$HTTPLIB")"
  printf '%-34s %12s %10s %10s\n' "    floor POST /floor/grant" "$F_RPS" "$(field p50_ms <<<"$FLOOR_G")" "$(field p99_ms <<<"$FLOOR_G")"
  printf '%-34s %12s %10s %10s\n' "    floor POST /floor/exchange" "$FX_RPS" "$(field p50_ms <<<"$FLOOR_X")" "$(field p99_ms <<<"$FLOOR_X")"
  printf '%-34s %12s %10s %10s\n' "(b) grants (closed loop)" "$G_RPS" "$G_P50" "$G_P99"
  printf '%-34s %12s %10s %10s\n' "    grants open loop @ $HALF/s" "$H_RPS" "$H_P50" "$H_P99"
  echo
  printf 'ratio b/a                          %s   (target >= 0.5: %s)\n' "$RATIO" "$RATIO_OK"
  printf 'floor/a                            %s   (the most any grant path can reach here: ES256, audit line durable in store and file)\n' \
    "$(ratio "$F_RPS" "$C_RPS")"
  printf 'ratio b/floor                      %s   (the broker against that floor)\n' "$(ratio "$G_RPS" "$F_RPS")"
  printf 'half-rate p99                      %s ms   (target <= 10 ms: %s)\n' "$H_P99" "$HALF_OK"
  printf 'mean requests per group commit     %s at peak, %s at half rate\n' "$BATCH_PEAK" "$BATCH_HALF"
  printf '  (jitbroker_audit_commit_batches sum/count over each phase)\n'
  printf '(c) github_app mints/s             %s   (%s threads, %s ms latency; target >= %s: %s)\n' \
    "$GH_RATE" "$GH_CONC" "$GH_LAT" "$GH_TARGET" "$GH_OK"
  printf '    mint p50 / p99                 %s / %s ms; RSA signatures per 1,000 mints %s\n' \
    "$(field p50_ms <<<"$GH")" "$(field p99_ms <<<"$GH")" "$(field costly_per_1000_mints <<<"$GH")"
  printf '    RSS                            %s KiB start, %s KiB end, %s KiB peak (in-process fake included)\n' \
    "$(field rss_start_kb <<<"$GH")" "$(field rss_end_kb <<<"$GH")" "$(field rss_peak_kb <<<"$GH")"
  printf "(c') aws_sts mints/s               %s   (%s threads, %s ms latency; target >= %s: %s)\n" \
    "$(field mints_per_s <<<"$AWS")" "$GH_CONC" "$GH_LAT" "$(field target <<<"$AWS")" "$AWS_OK"
  printf '    mint p50 / p99                 %s / %s ms; SigV4 key derivations per 1,000 mints %s\n' \
    "$(field p50_ms <<<"$AWS")" "$(field p99_ms <<<"$AWS")" "$(field costly_per_1000_mints <<<"$AWS")"
  printf '    RSS                            %s KiB start, %s KiB end, %s KiB peak (in-process fake included)\n' \
    "$(field rss_start_kb <<<"$AWS")" "$(field rss_end_kb <<<"$AWS")" "$(field rss_peak_kb <<<"$AWS")"
  echo
  if [[ -n "$EX" ]]; then
    printf '(d) token exchanges/s              %s   p50 %s ms, p99 %s ms; ratio d/a %s (target >= %s: %s)\n' \
      "$(field rps <<<"$EX")" "$(field p50_ms <<<"$EX")" "$(field p99_ms <<<"$EX")" \
      "$(field ratio <<<"$EX")" "$(field target <<<"$EX")" \
      "$([[ "$(field met <<<"$EX")" == 1 ]] && echo PASS || echo FAIL)"
    printf '    floor/a %s (RS256 verify, ES256, audit line durable in store and file); ratio d/floor %s\n' \
      "$(ratio "$FX_RPS" "$C_RPS")" "$(ratio "$(field rps <<<"$EX")" "$FX_RPS")"
    printf '    (RS256 subject tokens, jwt issuer; %s requests per group commit; %s non-2xx)\n' \
      "$(field requests_per_commit <<<"$EX")" "$(field non2xx <<<"$EX")"
  fi
  echo "errors: ceiling $(errs "$CEIL"); floor $(errs "$FLOOR_G"), $(errs "$FLOOR_X"); grants $(errs "$GRANT"); half $(errs "$HALFR")"
} >"$TMP/table.txt"
cp "$TMP/table.txt" "$RESULTS_DIR/latest.txt"
chmod 644 "$RESULTS_DIR/latest.txt"
cat "$TMP/table.txt"

if [[ "${BENCH_STRICT:-0}" == 1 && ( "$RATIO_OK" != PASS || "$HALF_OK" != PASS || "$GH_OK" != PASS || "$AWS_OK" != PASS ) ]]; then
  exit 1
fi
