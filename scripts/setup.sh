#!/usr/bin/env bash
# Set up a virtual environment in .venv with torch (CPU build unless one is already there),
# badblock (editable) and, with --dev, the test tools. Safe to re-run: it only installs what
# changed. Debian/Ubuntu packages it needs (python3-venv) are installed when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
VENV=${BADBLOCK_VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c "import ensurepip" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
  else
    echo "setup.sh: python3 -m venv is missing: sudo apt-get install python3-venv" >&2; exit 1
  fi
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

stamp="$VENV/.badblock-setup"
want=$(cat pyproject.toml requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)-$dev
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# torch first, so that nothing that depends on it pulls a multi-GB CUDA build by accident.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" install "$TORCH_SPEC"
"${pip[@]}" install -r requirements.txt
"${pip[@]}" install --no-deps -e .
if [ "$dev" = 1 ]; then
  "${pip[@]}" install -r requirements-dev.txt
fi
echo "$want" > "$stamp"
