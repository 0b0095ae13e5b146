#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (docs/testing.md, "Fuzzing") on their
# seed corpora for a fixed time each, and fails if any finds a crash, a leak,
# a sanitizer report, a timeout or an out-of-memory.
#
#   scripts/fuzz.sh [--build-dir DIR] [--seconds N] [--jobs J] [TARGET...]
#
# DIR holds the fuzzers (fuzz_NAME), built by a Clang sanitizer build with
# JITBROKER_FUZZ=ON; without one, this script makes it (build-sanitize/,
# as scripts/test.sh does). TARGET names (e.g. jws url) pick some; default
# all. N seconds per target (default 60; .ci/run uses a short budget). The
# corpus grows in a temporary copy: to keep what a long run found, pass
# --keep DIR (new inputs are written there, one directory per target).
# A crash's input is kept in fuzz/artifacts/NAME/ and reported; make it a
# regression test (its seed goes in fuzz/corpus/NAME/, the bug's test next
# to the parser's other tests).
#
# Prints one line per target: executions, executions/s, coverage (edges),
# features, corpus size, peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=build-sanitize
SECONDS_EACH=60
KEEP=""
TARGETS=()
while (($#)); do
  case "$1" in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --keep) KEEP=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
[[ "$SECONDS_EACH" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --seconds wants a positive integer" >&2; exit 2; }
if ((${#TARGETS[@]} == 0)); then
  for f in fuzz/*_fuzz.cc; do
    n=$(basename "$f" _fuzz.cc)
    TARGETS+=("$n")
  done
fi
missing=0
for t in "${TARGETS[@]}"; do
  [[ -f "fuzz/${t}_fuzz.cc" ]] || { echo "fuzz.sh: no fuzz target $t (fuzz/${t}_fuzz.cc)" >&2; exit 2; }
  [[ -x "$BUILD_DIR/fuzz_$t" ]] || missing=1
done
if ((missing)); then
  bash scripts/deps.sh
  CXX=clang++-19 BUILD_DIR="$BUILD_DIR" BUILD_TYPE=Debug \
    CMAKE_ARGS="-DJITBROKER_SANITIZE=ON -DJITBROKER_FUZZ=ON -DCMAKE_CXX_FLAGS_DEBUG=-g1" \
    BUILD_TARGETS="fuzzers" bash scripts/build.sh
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/jitbroker-fuzz.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
failed=()
printf '%-14s %12s %9s %7s %8s %7s %8s  %s\n' target execs exec/s cov ft corpus rss_mb result
for t in "${TARGETS[@]}"; do
  work="$TMP/$t"
  mkdir -p "$work/corpus" "$work/cwd" "fuzz/artifacts/$t"
  if [[ -d "fuzz/corpus/$t" ]]; then
    cp -r "fuzz/corpus/$t/." "$work/corpus/"
  fi
  # The config fuzzer resolves file: references; it runs in an empty
  # directory. detect_leaks: a parser that leaks per input is a finding.
  status=0
  (cd "$work/cwd" &&
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$ROOT/$BUILD_DIR/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$ROOT/fuzz/artifacts/$t/" \
      "$work/corpus" >"$work/log" 2>&1) || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work/log" | tail -n 1)
  last=$(grep -E '^#[0-9]+' "$work/log" | tail -n 1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  rate=$(awk -v e="${execs:-0}" -v s="$SECONDS_EACH" 'BEGIN {printf "%d", e / s}')
  result=ok
  if ((status != 0)); then
    result="FAILED (exit $status; log below)"
    failed+=("$t")
  fi
  printf '%-14s %12s %9s %7s %8s %7s %8s  %s\n' "$t" "${execs:-?}" "$rate" "${cov:-?}" "${ft:-?}" \
    "${corp:-?}" "${rss:-?}" "$result"
  if ((status != 0)); then
    grep -v '^#[0-9]' "$work/log" | tail -n 60 >&2
    ls -l "fuzz/artifacts/$t/" >&2
  fi
  if [[ -n "$KEEP" ]]; then
    mkdir -p "$KEEP/$t"
    cp -r "$work/corpus/." "$KEEP/$t/"
  fi
  rmdir "fuzz/artifacts/$t" 2>/dev/null || true
done
rmdir fuzz/artifacts 2>/dev/null || true
if ((${#failed[@]})); then
  echo "fuzz.sh: findings in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
