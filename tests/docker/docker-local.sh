#!/usr/bin/env bash
# A Docker engine of the project's own on this machine, and a stand-in for NVIDIA's NGC PyTorch
# image to build the Dockerfile on, for the image tests (tests/docker/test_image_build.py) and CI.
#
#   tests/docker/docker-local.sh start    # dockerd with its own state and socket; waits until it answers
#   tests/docker/docker-local.sh base     # the stand-in base image (kept while its recipe is unchanged)
#   tests/docker/docker-local.sh stop     # stops the dockerd that `start` started, waits on its pid
#   tests/docker/docker-local.sh status   # exit 0 when our daemon answers
#   tests/docker/docker-local.sh env      # prints `export DOCKER_HOST=...` for the shell
#
# Needs root and the Debian packages docker.io, tini and debootstrap (scripts/setup-system.sh).
# Everything lives in $BADBLOCK_DOCKER_DIR (default /var/tmp/badblock-docker, so that images and
# the build cache survive between runs): the daemon's data and exec roots, its socket, pid file
# and log. The daemon leaves the host's networking alone: no iptables rules, no bridge, no IP
# forwarding or masquerading; builds and containers use --network host. A system dockerd, if
# any, is neither used nor touched.
#
# The base: no container registry is reachable here, so `base` makes what the Dockerfile's
# default FROM names (nvcr.io/nvidia/pytorch:<NGC_TAG>-py3, NGC_TAG read from the Dockerfile)
# from Debian (debootstrap, minbase) and the torch wheel this machine's pip finds ($TORCH_SPEC,
# default torch==2.13.0, the CPU build), shaped like NGC where it matters to the build:
#   - torch's installed version is a pre-release, <release>a0+nv<NGC_TAG> (dist-info folder,
#     METADATA, RECORD, torch/version.py), which a `torch>=<release>` requirement would "upgrade";
#   - /etc/pip/constraint.txt pins it and PIP_CONSTRAINT names that file (NGC from 25.03 on);
#   - pip may install into the system Python (no EXTERNALLY-MANAGED marker);
#   - ENTRYPOINT /opt/nvidia/nvidia_entrypoint.sh prints a banner on stdout, then exec "$@".
# Real NGC pins every package it ships and has Python 3.12; this one pins torch, on Python 3.11.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DIR=${BADBLOCK_DOCKER_DIR:-/var/tmp/badblock-docker}
SOCK=$DIR/docker.sock
STARTED=$DIR/started.pid   # the pid of the dockerd *this script* started (dockerd deletes its own)
# Debian's client: the `docker` first on PATH may lack BuildKit (no buildx plugin).
DOCKER=${BADBLOCK_DOCKER_CLIENT:-/usr/bin/docker}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

log() { echo "docker-local: $*" >&2; }
die() { log "error: $*"; exit 1; }

dk() { DOCKER_HOST=unix://$SOCK "$DOCKER" "$@"; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.3
  done
  log "$what: ready"
}

status() { [ -S "$SOCK" ] && dk info >/dev/null 2>&1; }

ours() {  # ours: the pid in $STARTED when it is still a dockerd (a stale file names no process)
  local pid
  [ -s "$STARTED" ] || return 1
  pid=$(cat "$STARTED")
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && echo "$pid"
}

launch() {  # launch DRIVER: start dockerd with one storage driver; 0 when it answers
  local driver=$1
  rm -f "$DIR/docker.pid"
  setsid dockerd --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
    --bridge=none --data-root "$DIR/data" --exec-root "$DIR/exec" -H "unix://$SOCK" \
    --pidfile "$DIR/docker.pid" --storage-driver "$driver" --log-level warn \
    </dev/null >>"$DIR/dockerd.log" 2>&1 &
  echo $! > "$STARTED"
  wait_for 60 "dockerd ($driver)" status
}

start() {
  [ "$(id -u)" = 0 ] || die "must run as root (dockerd)"
  command -v dockerd >/dev/null || die "dockerd is missing: apt-get install docker.io tini"
  [ -x "$DOCKER" ] || die "$DOCKER is missing: apt-get install docker.io"
  if status; then log "already running (export DOCKER_HOST=unix://$SOCK)"; return; fi
  mkdir -p "$DIR"
  if ! launch overlay2; then
    log "overlay2 did not come up (see $DIR/dockerd.log): trying vfs"
    stop >/dev/null 2>&1 || true
    launch vfs || die "dockerd did not start: $DIR/dockerd.log"
  fi
  log "up: export DOCKER_HOST=unix://$SOCK"
}

stop() {
  local pid
  if ! pid=$(ours); then rm -f "$STARTED"; log "not running"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  local end=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$end" ]; then
      log "dockerd ($pid) ignored SIGTERM for 60 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.2
  done
  rm -f "$STARTED"
  # dockerd leaves its bind mount of the host's network namespace (exec/netns/default) behind:
  # undo every mount under our own folder, deepest first, and only those.
  awk -v dir="$DIR/" 'index($5, dir) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r point; do umount "$point" 2>/dev/null || umount -l "$point" || true; done
  log "stopped"
}

ngc_tag() { sed -n 's/^ARG NGC_TAG=\([0-9][0-9]\.[0-9][0-9]\)$/\1/p' "$ROOT/Dockerfile" | head -n 1; }

debian_mirror() {
  [ -z "${BADBLOCK_DEBIAN_MIRROR:-}" ] || { echo "$BADBLOCK_DEBIAN_MIRROR"; return; }
  local uri
  uri=$(awk '/^URIs:/ && !/security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# --- base recipe: what the base image is made of (its hash decides whether to make it anew) ---

# Rename the installed torch's version to NGC's kind: dist-info folder, METADATA, RECORD (the
# rewritten files' hashes and sizes), torch/version.py. Python, because RECORD wants sha256.
rename_torch() {  # rename_torch SITE_PACKAGES NEW_VERSION
  python3 - "$1" "$2" <<'PY'
import base64, hashlib, pathlib, re, sys
site, new = pathlib.Path(sys.argv[1]), sys.argv[2]
[old_info] = site.glob("torch-*.dist-info")
old = old_info.name[len("torch-"):-len(".dist-info")]
new_info = site / f"torch-{new}.dist-info"
old_info.rename(new_info)
def rewrite(path, pattern, repl):
    text = path.read_text()
    text, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    assert n == 1, (path, pattern)
    path.write_text(text)
rewrite(new_info / "METADATA", r"^Version: .*$", f"Version: {new}")
rewrite(site / "torch" / "version.py", r"^__version__ = .*$", f"__version__ = '{new}'")
for pyc in (site / "torch" / "__pycache__").glob("version.*.pyc"):
    pyc.unlink()
def entry(rel):
    data = (site / rel).read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{rel},sha256={digest},{len(data)}"
lines = []
for line in (new_info / "RECORD").read_text().splitlines():
    path = line.split(",", 1)[0].replace(f"torch-{old}.dist-info/", f"torch-{new}.dist-info/")
    if path in (f"torch-{new}.dist-info/METADATA", "torch/version.py"):
        lines.append(entry(path))
    else:
        lines.append(path + line[len(line.split(",", 1)[0]):])
(new_info / "RECORD").write_text("\n".join(lines) + "\n")
print(f"torch {old} -> {new}")
PY
}

base() {
  status || die "the daemon is not running: $0 start"
  local tag ngc image recipe
  ngc=$(ngc_tag)
  [ -n "$ngc" ] || die "no 'ARG NGC_TAG=YY.MM' in $ROOT/Dockerfile"
  image=nvcr.io/nvidia/pytorch:$ngc-py3
  # The image is kept while its recipe (the part of this script marked so) and torch are unchanged.
  recipe=$( (sed -n '/^# --- base recipe/,/^# --- end of base recipe/p' "$0"; echo "$TORCH_SPEC $ngc") \
           | sha256sum | cut -c1-16)
  tag=$(dk image inspect -f '{{index .Config.Labels "badblock.base.recipe"}}' "$image" 2>/dev/null || true)
  if [ "$tag" = "$recipe" ]; then log "base $image is up to date"; return; fi
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
  local work=$DIR/base-work
  rm -rf "$work"
  mkdir -p "$work/wheels"
  local t0=$SECONDS
  log "downloading $TORCH_SPEC and its requirements with this machine's pip"
  "${PYTHON:-python3}" -m pip download -q --dest "$work/wheels" "$TORCH_SPEC" \
    > "$work/download.log" 2>&1 || die "pip download $TORCH_SPEC failed: $work/download.log"
  log "debootstrap bookworm from $(debian_mirror) (a minute or two)"
  debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
    bookworm "$work/rootfs" "$(debian_mirror)" > "$work/debootstrap.log" 2>&1 \
    || die "debootstrap failed: $work/debootstrap.log"
  local rootfs=$work/rootfs
  cp -r "$work/wheels" "$rootfs/tmp/wheels"
  # A clean environment: this machine's PIP_* settings name paths that the chroot does not have.
  chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root LC_ALL=C.UTF-8 \
    python3 -m pip install -q --no-index --find-links /tmp/wheels \
    --break-system-packages --root-user-action=ignore --disable-pip-version-check "$TORCH_SPEC" \
    || die "pip install $TORCH_SPEC in the base failed"
  rm -rf "$rootfs/tmp/wheels" "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  local site release version
  site=$(echo "$rootfs"/usr/local/lib/python3*/dist-packages)
  release=$(sed -n 's/^Version: \([0-9.]*\).*/\1/p' "$site"/torch-*.dist-info/METADATA)
  version=${release}a0+nv$ngc
  rename_torch "$site" "$version"
  mkdir -p "$rootfs/etc/pip" "$rootfs/opt/nvidia" "$rootfs/workspace"
  echo "torch==$version" > "$rootfs/etc/pip/constraint.txt"
  cat > "$rootfs/opt/nvidia/nvidia_entrypoint.sh" <<EOF
#!/bin/bash
# Stand-in for NGC's entrypoint (made by badblock's tests/docker/docker-local.sh): the banner and
# warnings on stdout, as NVIDIA's does, then the command.
echo
echo "=============
== PyTorch ==
=============

NVIDIA Release $ngc (stand-in for nvcr.io/nvidia/pytorch:$ngc-py3)
PyTorch Version $version"
if [ ! -e /dev/nvidiactl ]; then
  echo
  echo "WARNING: The NVIDIA Driver was not detected.  GPU functionality will not be available."
fi
echo
if [[ \$# -eq 0 ]]; then
  exec /bin/bash
else
  exec "\$@"
fi
EOF
  chmod 755 "$rootfs/opt/nvidia/nvidia_entrypoint.sh"
  log "importing $image"
  tar -C "$rootfs" -c . | dk import \
    --change "ENV PIP_CONSTRAINT=/etc/pip/constraint.txt" \
    --change "ENV NVIDIA_VISIBLE_DEVICES=all" \
    --change "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility,video" \
    --change "ENV NVIDIA_PYTORCH_VERSION=$ngc" \
    --change "ENV PYTORCH_VERSION=$version" \
    --change "ENV LC_ALL=C.UTF-8" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "WORKDIR /workspace" \
    --change "LABEL badblock.base.recipe=$recipe" \
    --change 'ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"]' - "$image" >/dev/null
  rm -rf "$work"
  log "base $image (torch $version) made in $((SECONDS - t0)) s"
}
# --- end of base recipe ---

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  base) base ;;
  status) if status; then echo "up (unix://$SOCK)"; else echo "down"; exit 1; fi ;;
  env) echo "export DOCKER_HOST=unix://$SOCK" ;;
  *) echo "usage: $0 start|base|stop|status|env" >&2; exit 2 ;;
esac
