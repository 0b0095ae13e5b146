#!/usr/bin/env bash
# Runs the whole test suite (unit + conformance + integration): installs what is missing,
# builds, and runs CTest; then does the same in a sanitizer build with Clang
# (AddressSanitizer + UndefinedBehaviorSanitizer, build-sanitize/) unless
# JITBROKER_SKIP_SANITIZE=1, and runs the libFuzzer targets built there for
# JITBROKER_FUZZ_SECONDS (10) each (scripts/fuzz.sh; JITBROKER_SKIP_FUZZ=1
# skips); last, scripts/lint.sh (clang-tidy-19 and clang-format-19) unless
# JITBROKER_SKIP_LINT=1. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each phase's wall time, so that the CI log shows where its budget goes.
phase() { echo "== [$(date -u +%T), ${SECONDS}s] $*"; }
phase "dependencies"
bash scripts/deps.sh
phase "build (${BUILD_DIR:-build})"
bash scripts/build.sh
phase "tests"
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure -j2 "$@")
if [ "${JITBROKER_SKIP_SANITIZE:-0}" != "1" ]; then
  phase "sanitizer build (Clang; address, undefined; fuzzers)"
  # Clang, so that one build serves the tests and the libFuzzer targets
  # (fuzz/, docs/testing.md "Fuzzing"); GCC builds the main one above. The
  # benchmarks are not run here: build only what the tests and fuzzers need.
  # Line tables only (-g1): the sanitizers' reports keep file:line, and the
  # build is ~15 % faster than with full debug information.
  CXX=clang++-19 BUILD_DIR=build-sanitize BUILD_TYPE=Debug \
    CMAKE_ARGS="-DJITBROKER_SANITIZE=ON -DJITBROKER_FUZZ=ON -DCMAKE_CXX_FLAGS_DEBUG=-g1" \
    BUILD_TARGETS="jitbroker jitctl unit_tests integration_tests conformance_tests fuzzers" \
    bash scripts/build.sh
  phase "sanitizer tests"
  (cd build-sanitize && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j2 "$@")
  if [ "${JITBROKER_SKIP_FUZZ:-0}" != "1" ]; then
    phase "fuzz (${JITBROKER_FUZZ_SECONDS:-10}s per target)"
    bash scripts/fuzz.sh --build-dir build-sanitize --seconds "${JITBROKER_FUZZ_SECONDS:-10}"
  fi
fi
if [ "${JITBROKER_SKIP_LINT:-0}" != "1" ]; then
  phase "lint (clang-tidy-19, clang-format-19)"
  bash scripts/lint.sh
fi
phase "done"
