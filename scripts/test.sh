#!/usr/bin/env bash
# The test command: install what the tests need (as root: Slurm, munge, MariaDB, shellcheck;
# always: .venv with the test tools), start the project's own single-node Slurm cluster, run
# ruff and the whole test suite, stop the cluster. Extra arguments go to pytest
# (e.g. scripts/test.sh -k config -x). Without root the Slurm tests skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
system_ok=1
bash scripts/setup-system.sh || system_ok=0
bash scripts/setup.sh --dev
export PATH="$PWD/.venv/bin:$PATH"
ruff check badblock tests bench
if [ "$system_ok" = 1 ] && [ "$(id -u)" = 0 ]; then
  trap 'bash tests/cluster/slurm-local.sh stop' EXIT
  bash tests/cluster/slurm-local.sh start
fi
python -m pytest "$@"
