#!/usr/bin/env bash
# Quick start: installs what is missing, builds, and runs the broker on the
# embedded default config (conf/dev.yaml: SQLite and keys under ./data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
bash scripts/build.sh
exec build/jitbroker --config conf/dev.yaml "$@"
