#!/usr/bin/env bash
# The OpenAPI contract test: docs/openapi.yaml against the route table
# (broker/http/server.cc) and against a real broker on loopback.
#
#   tests/openapi/openapi_test.sh BROKER_BINARY
#
# Exit status: 0 pass, 1 fail, 2 usage, 77 skipped (python3-jsonschema or
# python3-yaml is not installed).
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 BROKER_BINARY" >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"

if ! "$python" -c 'import jsonschema, yaml' 2>/dev/null; then
  echo "SKIP: $python cannot import jsonschema and yaml (apt-get install python3-jsonschema python3-yaml)" >&2
  exit 77
fi

exec "$python" "$here/openapi_test.py" "$1"
