#!/usr/bin/env bash
# Run badblock's image with Docker: a stage, or an interactive shell for debugging.
#
#   ./run-docker.sh [OPTIONS] [STAGE [ARGS...]]     e.g. ./run-docker.sh --data /raid/pet train
#   ./run-docker.sh [OPTIONS] shell                 an interactive shell in the container
#
# Options (each also settable by the environment variable shown):
#   --image IMAGE     image to run ($BADBLOCK_IMAGE, default badblock:latest)
#   --data DIR        input root, mounted read-only at /data ($BADBLOCK_DATA, default ./data)
#   --output DIR      output root, mounted writable at /output ($BADBLOCK_OUTPUT, default
#                     ./badblock-output; created if missing)
#   --config FILE     config file, mounted read-only at /config/<name>; a preset name (demo, ...)
#                     is passed as it is ($BADBLOCK_CONFIG)
#   --gpus SPEC       docker --gpus value ($BADBLOCK_GPUS, default all; none = no GPU)
#   --ulimits MODE    auto | on | off ($BADBLOCK_DOCKER_ULIMITS, default auto): NVIDIA's
#                     --ulimit memlock=-1 --ulimit stack=67108864. auto tries them first with a
#                     throw-away container and leaves them out, with a note, where the daemon
#                     cannot raise the limits (rootless Docker, some VMs: exit 125, "error
#                     setting rlimit"); on passes them always, off never.
#   --socket PATH     Docker socket to use ($BADBLOCK_DOCKER_SOCKET). On a DGX each user has
#                     /mnt/docker_socks/$USER/docker.sock; it is used when it exists.
#   --name NAME       container name
#   --dry-run         print the docker command instead of running it
#   -e NAME[=VALUE]   one more environment variable for the container (repeatable)
#   -v SRC:DST[:OPT]  one more volume (repeatable)
#   -h, --help
#
# The container runs as the calling user (--user UID:GID) so that outputs belong to them, with
# --ipc=host (DataLoader workers die in Docker's default 64 MB /dev/shm), unlimited locked memory
# and a 64 MB stack as NVIDIA recommends (where the daemon allows them), and --init so that signals (Slurm's preemption USR2,
# docker stop's TERM) reach the Python process and worker zombies are reaped.
# Every BADBLOCK_* variable of the caller's environment is passed through; inside a Slurm job
# also SLURM_*, MASTER_ADDR/PORT, NCCL_* (ranks for torch.distributed), with --network=host.
set -euo pipefail

die() { echo "run-docker.sh: error: $*" >&2; exit 2; }

image=${BADBLOCK_IMAGE:-badblock:latest}
data=${BADBLOCK_DATA:-./data}
output=${BADBLOCK_OUTPUT:-./badblock-output}
config=${BADBLOCK_CONFIG:-}
gpus=${BADBLOCK_GPUS:-all}
ulimits=${BADBLOCK_DOCKER_ULIMITS:-auto}
socket=${BADBLOCK_DOCKER_SOCKET:-}
socks_root=${BADBLOCK_DOCKER_SOCKS:-/mnt/docker_socks}
name=""
dry_run=0
extra=()

while [ $# -gt 0 ]; do
  case "$1" in
    --image) image=${2:?--image needs a value}; shift 2 ;;
    --data) data=${2:?--data needs a value}; shift 2 ;;
    --output) output=${2:?--output needs a value}; shift 2 ;;
    --config) config=${2:?--config needs a value}; shift 2 ;;
    --gpus) gpus=${2:?--gpus needs a value}; shift 2 ;;
    --ulimits) ulimits=${2:?--ulimits needs a value}; shift 2 ;;
    --socket) socket=${2:?--socket needs a value}; shift 2 ;;
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -e) extra+=(-e "${2:?-e needs a value}"); shift 2 ;;
    -v) extra+=(-v "${2:?-v needs a value}"); shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done

case "$ulimits" in auto | on | off) ;; *) die "--ulimits $ulimits: use auto, on or off" ;; esac

mode=stage
if [ $# -eq 0 ] || [ "$1" = shell ] || [ "$1" = bash ]; then
  mode=shell
  [ $# -eq 0 ] || shift
fi

[ -d "$data" ] || die "data folder $data does not exist (--data or BADBLOCK_DATA)"
mkdir -p "$output" || die "cannot create output folder $output"
data=$(cd "$data" && pwd -P)
output=$(cd "$output" && pwd -P)

if [ -z "$socket" ] && [ -n "${USER:-$(id -un 2>/dev/null)}" ]; then
  candidate="$socks_root/${USER:-$(id -un)}/docker.sock"
  [ -S "$candidate" ] && socket=$candidate
fi

docker=(docker)
if [ -n "$socket" ]; then
  [ -S "$socket" ] || die "Docker socket $socket does not exist (--socket or BADBLOCK_DOCKER_SOCKET)"
  docker+=(-H "unix://$socket")
fi

limits=(--ulimit memlock=-1 --ulimit stack=67108864)
if [ "$ulimits" = auto ] && [ "$dry_run" = 0 ]; then
  # A container that only runs `true`: where the daemon cannot raise the limits, its runtime
  # fails before the container starts, and every real run would fail the same way.
  if probe=$("${docker[@]}" run --rm "${limits[@]}" --entrypoint true "$image" 2>&1 >/dev/null); then
    :
  elif [[ "$probe" == *rlimit* ]]; then
    echo "run-docker.sh: note: this Docker daemon cannot raise memlock/stack limits (rootless or" \
         "restricted); running without --ulimit (--ulimits off skips this check)" >&2
    ulimits=off
  fi
fi
[ "$ulimits" != off ] || limits=()

args=(run --rm --init --ipc=host "${limits[@]}"
      --user "$(id -u):$(id -g)"
      -v "$data:/data:ro" -v "$output:/output"
      -e BADBLOCK_DATA=/data -e BADBLOCK_OUTPUT=/output -e HOME=/tmp -w /output)
if [ "$gpus" != none ]; then
  args+=(--gpus "$gpus")
fi
[ -z "$name" ] || args+=(--name "$name")

if [ -n "$config" ]; then
  if [ -f "$config" ]; then
    config_abs=$(cd "$(dirname "$config")" && pwd -P)/$(basename "$config")
    args+=(-v "$config_abs:/config/$(basename "$config"):ro" -e "BADBLOCK_CONFIG=/config/$(basename "$config")")
  elif [[ "$config" == */* || "$config" == *.y*ml ]]; then
    die "config file $config does not exist"
  else
    args+=(-e "BADBLOCK_CONFIG=$config")  # a preset shipped in the image
  fi
fi

# Pass the caller's BADBLOCK_* settings through by name (values stay out of `ps`), except the
# paths rewritten above to their places inside the container.
while IFS= read -r var; do
  case "$var" in
    BADBLOCK_DATA | BADBLOCK_OUTPUT | BADBLOCK_CONFIG | BADBLOCK_IMAGE | BADBLOCK_GPUS) ;;
    BADBLOCK_DOCKER_SOCKET | BADBLOCK_DOCKER_SOCKS | BADBLOCK_DOCKER_ULIMITS) ;;
    BADBLOCK_*) args+=(-e "$var") ;;
    # Under Slurm: the task's rank and the rendezvous, for torch.distributed in the container.
    SLURM_CONF | SLURM_CPU_BIND* | SLURM_GPUS_ON_NODE) ;;
    SLURM_* | MASTER_ADDR | MASTER_PORT | RANK | WORLD_SIZE | LOCAL_RANK | LOCAL_WORLD_SIZE | NCCL_*)
      args+=(-e "$var") ;;
  esac
done < <(compgen -e)
# Multi-node training needs the nodes' own network (NCCL, the rendezvous port).
[ -z "${SLURM_JOB_ID:-}" ] || args+=(--network=host)
args+=("${extra[@]}")

if [ "$mode" = shell ]; then
  if [ -t 0 ]; then args+=(-it); else args+=(-i); fi
  args+=("$image" shell "$@")
else
  [ ! -t 0 ] || [ ! -t 1 ] || args+=(-t)
  args+=("$image" "$@")
fi

if [ "$dry_run" = 1 ]; then
  printf '%q ' "${docker[@]}" "${args[@]}"
  echo
  exit 0
fi
exec "${docker[@]}" "${args[@]}"
