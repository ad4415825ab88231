#!/usr/bin/env bash
# The GPU benchmark of issue 13 (bench/gpu.py says what it measures): under 8 minutes on one
# NVIDIA GPU, results in bench/results/gpu.json. Without a GPU it says so in one line (exit 2);
# --cpu-dry-run --out FILE runs every part tiny on the CPU (what CI does).
# The interpreter: $PYTHON, else the project's .venv, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
py=python3
if [ -x .venv/bin/python ]; then py=.venv/bin/python; fi
exec "${PYTHON:-$py}" bench/gpu.py "$@"
