#!/usr/bin/env bash
# Static checks that .ci/run runs after the tests (see docs/testing.md):
# clang-tidy-19 with the checks of .clang-tidy over the C++ sources of the
# compile database (build-lint/, configured here), and clang-format-19 over
# every C++ file. Debian's clang-19 is needed: clang-14 cannot parse
# libstdc++ 12's <expected>.
#
# clang-tidy reads the shipped code (broker/, issuers/, cli/) by default:
# that is where a finding matters, and it keeps .ci/run inside its time
# budget. `scripts/lint.sh --all` also reads tests/ and bench/ (about twice
# the time); run it when changing .clang-tidy or the test support code.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
# clang-tidy needs one compile command per source file: the build batches the
# test sources (unity build), so lint configures its own tree without that.
# Configuring is enough; clang-tidy builds nothing.
LINT_DIR=${LINT_DIR:-build-lint}
cmake -S . -B "$LINT_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DJITBROKER_UNITY_TESTS=OFF >/dev/null

tidy_paths=('broker/*.cc' 'issuers/*.cc' 'cli/*.cc')
case "${1:-}" in
  --all) tidy_paths+=('tests/*.cc' 'bench/*.cc') ;;
  "") ;;
  *) echo "usage: scripts/lint.sh [--all]" >&2; exit 2 ;;
esac
mapfile -t sources < <(git ls-files "${tidy_paths[@]}")
echo "== clang-tidy-19: ${#sources[@]} files"
# The compiler's own warnings are GCC's to judge (the build has -Werror):
# clang's -Wconversion also means -Wsign-conversion, which the build does not
# enforce, and clang flags libstdc++'s own use of get_temporary_buffer (under
# std::stable_sort) as deprecated in C++23.
run-clang-tidy-19 -quiet -p "$LINT_DIR" -j "$(nproc)" \
  -extra-arg=-Wno-sign-conversion -extra-arg=-Wno-deprecated-declarations \
  "${sources[@]/#/$PWD/}" \
  > "$LINT_DIR/clang-tidy.log" 2>&1 || {
  grep -E "error:|warning:" -A3 "$LINT_DIR/clang-tidy.log" | head -200
  echo "clang-tidy found problems (full log: $LINT_DIR/clang-tidy.log)" >&2
  exit 1
}

mapfile -t all < <(git ls-files '*.cc' '*.h')
echo "== clang-format-19: ${#all[@]} files"
clang-format-19 --dry-run --Werror "${all[@]}"
echo "lint: ok"
