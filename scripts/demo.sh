#!/usr/bin/env bash
# The demo command: set up .venv and run simulate -> preprocess -> train -> repair -> evaluate
# on built-in simulated data. Output (report, figures) goes to ${BADBLOCK_OUTPUT:-demo-output}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/badblock demo --output "${BADBLOCK_OUTPUT:-demo-output}" "$@"
