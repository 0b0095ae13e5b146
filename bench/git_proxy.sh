#!/usr/bin/env bash
# git through the broker (issue #14): clone and push of a repository of
# BENCH_GIT_MB MB (default 100) through the broker's git proxy against the
# same operations done directly to the same git server, in one run
# (bench/git_proxy_bench.cc). Targets: ratio >= 0.8 for clone and for push,
# broker RSS growth <= 64 MB during a transfer. The table goes to
# bench/results/git-proxy-latest.txt. See bench/README.md.
#
# Environment: BUILD_DIR (default build-bench), BENCH_GIT_MB (100),
# BENCH_GIT_RUNS (3; the best of the runs is reported), BENCH_STRICT=1 (exit
# 1 when a target is missed), BENCH_REBUILD=1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build-bench}
BIN="$ROOT/$BUILD_DIR"
BENCH_NAME=bench/git_proxy
# shellcheck source=bench/lib.sh
source bench/lib.sh
bench_build jitbroker jitctl git_proxy_bench
STRICT=()
[[ "${BENCH_STRICT:-0}" == 1 ]] && STRICT=(--strict)
mkdir -p bench/results
OUT="bench/results/git-proxy-latest.txt"
{
  echo "# bench/git_proxy.sh, $(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# git $(git --version | cut -d' ' -f3); upstream: git http-backend behind cpp-httplib (tests/support)"
  "$BIN/git_proxy_bench" --jitbroker "$BIN/jitbroker" --jitctl "$BIN/jitctl" \
    --size-mb "${BENCH_GIT_MB:-100}" --runs "${BENCH_GIT_RUNS:-3}" "${STRICT[@]}" 2>/dev/null
} | tee "$OUT.tmp"
rc=${PIPESTATUS[0]}
mv "$OUT.tmp" "$OUT"
exit "$rc"
