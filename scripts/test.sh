#!/usr/bin/env bash
# Runs the whole test suite (unit + integration): installs what is missing,
# builds, and runs CTest. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j2 "$@"
