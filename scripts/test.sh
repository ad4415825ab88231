#!/usr/bin/env bash
# The test command: set up .venv with the test tools and run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k config -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export PATH="$PWD/.venv/bin:$PATH"
ruff check badblock tests bench
python -m pytest "$@"
