#!/usr/bin/env bash
# The test command: install what the tests need (as root: Slurm, munge, MariaDB, Docker,
# debootstrap, shellcheck; always: .venv with the test tools), start the project's own
# single-node Slurm cluster and Docker daemon (and make the image tests' NGC stand-in base when
# it is missing or out of date), run ruff and the whole test suite, stop both daemons by pid.
# Extra arguments go to pytest (e.g. scripts/test.sh -k config -x). Without root the Slurm and
# image tests skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
system_ok=1
bash scripts/setup-system.sh || system_ok=0
bash scripts/setup.sh --dev
export PATH="$PWD/.venv/bin:$PATH"
ruff check badblock tests bench
if [ "$system_ok" = 1 ] && [ "$(id -u)" = 0 ]; then
  trap 'bash tests/cluster/slurm-local.sh stop; bash tests/docker/docker-local.sh stop' EXIT
  bash tests/cluster/slurm-local.sh start
  bash tests/docker/docker-local.sh start
  # Before pytest, so that the time it takes is not counted against any one test's timeout.
  PYTHON="$PWD/.venv/bin/python" bash tests/docker/docker-local.sh base
fi
python -m pytest "$@"
