#!/usr/bin/env bash
# The image's install step (the Dockerfile runs exactly this; tests/docker/ runs it in a fresh
# venv): install requirements.txt and badblock into a Python that already has torch, never
# replacing that torch. NGC's torch is a CUDA build with a pre-release version (2.8.0a0+...nv25.05)
# that pip would happily "upgrade" to a PyPI wheel, so the installed version is pinned in a
# constraints file, together with NGC's own /etc/pip/constraint.txt (NGC >= 25.03) when present.
#
#   docker/install-deps.sh [--requirements-only | --package-only] [SOURCE_DIR]
#
# SOURCE_DIR defaults to the current directory, $PYTHON picks the python. The Dockerfile runs the
# two halves as two layers, so that a code change does not reinstall the requirements.
#
# The site's pip settings come as BuildKit secrets, mounted for the install steps only:
# /run/secrets/pipconf, a pip.conf (index-url, extra-index-url, proxy, trusted-host...), and
# /run/secrets/pipcert, a CA bundle for a site mirror or a TLS-inspecting proxy.
set -euo pipefail
what=all
case "${1:-}" in
  --requirements-only) what=requirements; shift ;;
  --package-only) what=package; shift ;;
  -*) echo "install-deps: unknown option $1" >&2; exit 2 ;;
esac
src=${1:-.}
py=${PYTHON:-python}
pip=("$py" -m pip --disable-pip-version-check --no-input)
secrets=/run/secrets
if [ -r "$secrets/pipconf" ]; then
  export PIP_CONFIG_FILE=$secrets/pipconf
  echo "install-deps: pip settings from the build secret pipconf"
fi
if [ -r "$secrets/pipcert" ]; then
  export PIP_CERT=$secrets/pipcert
  echo "install-deps: CA bundle from the build secret pipcert"
fi

torch_version=$("$py" -c 'import torch; print(torch.__version__)') || {
  echo "install-deps: torch is not installed in $py: this step only adds badblock to an image" \
       "(or environment) that already has torch" >&2
  exit 1
}
pins=$(mktemp)
trap 'rm -f "$pins"' EXIT
echo "torch==$torch_version" > "$pins"
constraints=(-c "$pins")
if [ -f /etc/pip/constraint.txt ]; then
  constraints+=(-c /etc/pip/constraint.txt)
fi

if [ "$what" != package ]; then
  "${pip[@]}" install "${constraints[@]}" -r "$src/requirements.txt"
fi
if [ "$what" != requirements ]; then
  # --no-deps: requirements.txt was installed under the constraints; the package's own metadata
  # must not get a second chance to pull anything in. Not editable: the image holds a copy.
  "${pip[@]}" install --no-deps "$src"
fi

after=$("$py" -c 'import torch; print(torch.__version__)')
if [ "$after" != "$torch_version" ]; then
  echo "install-deps: torch changed from $torch_version to $after" >&2
  exit 1
fi
echo "install-deps: $what installed; torch $torch_version kept"
