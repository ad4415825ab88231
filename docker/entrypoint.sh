#!/usr/bin/env bash
# Container entrypoint: run one badblock stage. The image runs it after NVIDIA's own entrypoint
# (/opt/nvidia/nvidia_entrypoint.sh: CUDA compatibility set-up, banner), which execs it.
#
#   docker run IMAGE [STAGE] [ARGS...]      ARGS go to `badblock STAGE` unchanged
#   docker run -e BADBLOCK_STAGE=train IMAGE    the stage from the environment, no arguments
#   docker run -it IMAGE shell              an interactive shell (also: bash)
#   docker run IMAGE shell CMD [ARGS...]    runs CMD; `shell -c "..."` runs bash -c "..."
#
# The stage is the first argument when it names one, else $BADBLOCK_STAGE. The config comes from
# $BADBLOCK_CONFIG (a file or a shipped preset), input from $BADBLOCK_DATA (mounted read-only),
# output to $BADBLOCK_OUTPUT; badblock reads these itself, this script checks them first so that
# a wrong mount fails with one clear line instead of deep inside a stage.
#
# With BADBLOCK_REQUIRE_MOUNTS=1 (the image sets it) a stage runs only when $BADBLOCK_OUTPUT, and
# for the stages that read scans (preprocess, repair, evaluate) $BADBLOCK_DATA, lie on a mounted
# volume: a folder of the container's own file system disappears with the container, and with it
# every output. BADBLOCK_REQUIRE_MOUNTS=0 lets a stage write inside the container anyway.
set -euo pipefail

STAGES="simulate mask detect preprocess fills train repair evaluate launch demo"
me="badblock-entrypoint"

usage() {
  cat <<USAGE
usage: $me [STAGE] [ARGS...] | shell [CMD...]
  STAGE: one of: $STAGES (default \$BADBLOCK_STAGE)
  shell, bash: an interactive shell for debugging
environment: BADBLOCK_STAGE, BADBLOCK_CONFIG, BADBLOCK_DATA, BADBLOCK_OUTPUT, BADBLOCK_<SECTION>__<KEY>
USAGE
}

fail() { echo "$me: error: $*" >&2; exit 2; }

DATA_STAGES="preprocess repair evaluate"

# The mount point that holds PATH (which need not exist yet): the longest mount point of this
# process's mount namespace that is PATH or one of its parents; "/" when none but the root.
mount_of() {
  local path best=/ mp
  path=$(realpath -m -- "$1")
  while read -r mp; do
    mp=$(printf '%b' "$mp")  # mountinfo writes a space as \040
    case "$path/" in
      "${mp%/}"/*) [ "${#mp}" -le "${#best}" ] || best=$mp ;;
    esac
  done < <(awk '{print $5}' /proc/self/mountinfo)
  echo "$best"
}

require_mount() {  # require_mount VARIABLE WHAT
  local var=$1 what=$2 dir=${!1:-$PWD}
  [ "$(mount_of "$dir")" = / ] || return 0
  fail "$var=$dir is not on a mounted volume: $what (mount one there, e.g. docker run" \
       "-v HOST_DIR:$dir; or set BADBLOCK_REQUIRE_MOUNTS=0 if that is what you mean)"
}

is_stage() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# Run as any user (docker --user UID:GID): such a user may have no passwd entry and no writable
# home, and matplotlib, torch and pip all want one for caches.
if [ -z "${HOME:-}" ] || [ "${HOME}" = / ] || ! [ -w "${HOME}" ]; then
  HOME="${TMPDIR:-/tmp}/badblock-home-$(id -u)"
  export HOME
  mkdir -p "$HOME"
fi

stage=""
if [ $# -gt 0 ]; then
  case "$1" in
    shell | bash | sh)
      shift
      [ $# -gt 0 ] || exec bash -l
      case "$1" in -*) exec bash "$@" ;; *) exec "$@" ;; esac ;;
    -h | --help | help) if [ -z "${BADBLOCK_STAGE:-}" ]; then usage; exit 0; fi ;;
    -*) ;;  # options only: the stage comes from the environment
    *) if is_stage "$1"; then stage=$1; shift
       elif [ -z "${BADBLOCK_STAGE:-}" ]; then fail "unknown stage '$1' (stages: $STAGES; or: shell)"
       fi ;;
  esac
fi
if [ -z "$stage" ]; then
  stage=${BADBLOCK_STAGE:-}
  case "$stage" in
    "") usage >&2; fail "no stage: pass one or set BADBLOCK_STAGE" ;;
    shell | bash | sh) exec bash -l ;;
  esac
  is_stage "$stage" || fail "unknown stage '$stage' in BADBLOCK_STAGE (stages: $STAGES; or: shell)"
fi

if [ -n "${BADBLOCK_CONFIG:-}" ] && [[ "$BADBLOCK_CONFIG" == */* || "$BADBLOCK_CONFIG" == *.y*ml ]] \
   && ! [ -r "$BADBLOCK_CONFIG" ]; then
  fail "BADBLOCK_CONFIG=$BADBLOCK_CONFIG: no such readable file (is it mounted?)"
fi
if [ -n "${BADBLOCK_DATA:-}" ] && ! [ -d "$BADBLOCK_DATA" ]; then
  fail "BADBLOCK_DATA=$BADBLOCK_DATA: no such directory (is the data volume mounted?)"
fi
wants_help=0
for arg in "$@"; do case "$arg" in -h | --help) wants_help=1 ;; esac; done
if [ "${BADBLOCK_REQUIRE_MOUNTS:-0}" = 1 ] && [ "$wants_help" = 0 ]; then
  require_mount BADBLOCK_OUTPUT "what $stage writes would be lost with the container"
  case " $DATA_STAGES " in
    *" $stage "*) require_mount BADBLOCK_DATA "$stage would read the image's empty folder" ;;
  esac
fi
unset BADBLOCK_REQUIRE_MOUNTS  # this script's own setting, not one for badblock
if [ -n "${BADBLOCK_OUTPUT:-}" ]; then
  mkdir -p "$BADBLOCK_OUTPUT" 2>/dev/null || true
  if ! [ -d "$BADBLOCK_OUTPUT" ] || ! [ -w "$BADBLOCK_OUTPUT" ]; then
    fail "BADBLOCK_OUTPUT=$BADBLOCK_OUTPUT: not a writable directory (mount it writable for uid $(id -u))"
  fi
fi

if command -v badblock >/dev/null; then
  exec badblock "$stage" "$@"
fi
exec "${PYTHON:-python3}" -m badblock "$stage" "$@"
