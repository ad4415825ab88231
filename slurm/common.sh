# shellcheck shell=bash
# Shared body of slurm/{preprocess,train,repair}.sbatch: sourced, not run. The caller sets STAGE
# and passes its own arguments on (they go to `badblock STAGE`).
#
# Settings (environment; sbatch exports the submitting shell's environment to the job):
#   BADBLOCK_RUNTIME  pyxis | docker | host | auto (default auto: pyxis when srun knows
#                     --container-image, else host)
#   BADBLOCK_IMAGE    pyxis: a squashfs file or docker://URI (default $SLURM_SUBMIT_DIR/badblock.sqsh);
#                     docker: an image name (default badblock:latest)
#   BADBLOCK_CONFIG   config file or preset (default demo)
#   BADBLOCK_DATA     input root on the host, read-only in containers (default $SLURM_SUBMIT_DIR/data)
#   BADBLOCK_OUTPUT   output root on the host (default $SLURM_SUBMIT_DIR/badblock-output); the
#                     stage's logs go to $BADBLOCK_OUTPUT/logs/<job name>-<job id>.{out,err}
#   BADBLOCK_ARGS     more arguments for `badblock STAGE` (word-split), after the script's own.
#                     preprocess with no arguments at all reads the data folder; repair needs
#                     its scans named (the job stops at once with one line otherwise)
#   BADBLOCK_PYTHON   host runtime: the python to use (default: $SLURM_SUBMIT_DIR/.venv/bin/python
#                     when it exists, else python3)
#   BADBLOCK_SRUN_ARGS more srun options (word-split), e.g. "--container-mount-home"
#   BADBLOCK_DRY_RUN  1: print the command the job would run, and stop
#
# CPUs: the templates ask for none beyond Slurm's default (one per task), so that they fit any
# node; with --cpus-per-task=N each task's torch uses N threads (run.threads, unless set).
#
# Preemption and time limits: the templates ask for `--requeue` and `--signal=B:USR2@<s>`. The
# signal reaches this batch shell, which forwards it to the job step (srun passes it on to every
# task; the trainer finishes its step and saves checkpoint_latest.pt), waits for the step, and
# then requeues the job itself with `scontrol requeue`. The batch shell does this rather than the
# trainer because it runs on the host: containers (pyxis, docker) have no scontrol. The trainer's
# own requeue is therefore switched off here (BADBLOCK_TRAIN__REQUEUE=false). A requeued job runs
# the same command again, and the trainer resumes from checkpoint_latest.pt in its run folder.

badblock_log() { echo "badblock-slurm: $*" >&2; }

badblock_die() { badblock_log "error: $*"; exit 2; }

# Print an array as a shell command line that can be pasted.
badblock_quote() { local out; printf -v out '%q ' "$@"; echo "${out% }"; }

badblock_main() {
  local stage=$1; shift
  local submit=${SLURM_SUBMIT_DIR:-$PWD}
  local runtime=${BADBLOCK_RUNTIME:-auto}
  local config=${BADBLOCK_CONFIG:-demo}
  local data=${BADBLOCK_DATA:-$submit/data}
  local output=${BADBLOCK_OUTPUT:-$submit/badblock-output}
  local job=${SLURM_JOB_ID:-0} name=${SLURM_JOB_NAME:-badblock-$stage}
  local extra=() srun_extra=() read_data=0
  # Word-splitting on purpose: these hold several arguments.
  # shellcheck disable=SC2206
  extra=("$@" ${BADBLOCK_ARGS:-})
  # shellcheck disable=SC2206
  srun_extra=(${BADBLOCK_SRUN_ARGS:-})

  # No inputs: preprocess reads the data folder; repair cannot guess which scans to repair.
  if [ "${#extra[@]}" = 0 ]; then
    case "$stage" in
      preprocess)
        [ -d "$data" ] || badblock_die "no inputs: pass scans or folders (sbatch" \
          "slurm/preprocess.sbatch INPUT...) or put them in the data folder $data (BADBLOCK_DATA)," \
          "which does not exist"
        read_data=1 ;;
      repair) badblock_die "no scans to repair: sbatch slurm/repair.sbatch [OPTIONS] SCAN.hs..." \
                "(with --checkpoint and --mask or --dead-blocks)" ;;
    esac
  fi

  if [ "$runtime" = auto ]; then
    if srun --help 2>/dev/null | grep -q -- --container-image; then runtime=pyxis; else runtime=host; fi
  fi
  case "$runtime" in pyxis | docker | host) ;; *) badblock_die "BADBLOCK_RUNTIME=$runtime: use pyxis, docker or host" ;; esac

  mkdir -p "$output/logs" || badblock_die "cannot create $output/logs"
  output=$(cd "$output" && pwd -P)
  [ -d "$data" ] && data=$(cd "$data" && pwd -P)
  if [ "$read_data" = 1 ]; then
    if [ "$runtime" = host ]; then extra=("$data"); else extra=(/data); fi
  fi
  local config_host=""
  if [ -f "$config" ]; then
    config_host=$(cd "$(dirname "$config")" && pwd -P)/$(basename "$config")
    config=$config_host
  fi

  # torch.distributed rendezvous: the first host of the job, a port derived from the job id so
  # that two jobs sharing a node do not collide. The trainer reads SLURM_PROCID/LOCALID/NTASKS.
  if [ -z "${MASTER_ADDR:-}" ]; then
    MASTER_ADDR=127.0.0.1
    if [ -n "${SLURM_JOB_NODELIST:-}" ]; then
      MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" 2>/dev/null | head -n 1 || true)
      MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
    fi
  fi
  MASTER_PORT=${MASTER_PORT:-$((20000 + job % 20000))}
  export MASTER_ADDR MASTER_PORT
  export BADBLOCK_TRAIN__REQUEUE=false  # this script requeues (see the top of this file)
  export PYTHONUNBUFFERED=1
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ] && [ -z "${BADBLOCK_RUN__THREADS:-}" ]; then
    export BADBLOCK_RUN__THREADS=$SLURM_CPUS_PER_TASK OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
  fi

  local srun=(srun --kill-on-bad-exit=1 --open-mode=append
              "--output=$output/logs/%x-%j.out" "--error=$output/logs/%x-%j.err" "${srun_extra[@]}")
  local cmd=()
  case "$runtime" in
    host)
      local py=${BADBLOCK_PYTHON:-}
      if [ -z "$py" ]; then
        if [ -x "$submit/.venv/bin/python" ]; then py=$submit/.venv/bin/python; else py=python3; fi
      fi
      export BADBLOCK_CONFIG=$config BADBLOCK_DATA=$data BADBLOCK_OUTPUT=$output
      badblock_log "python: $py"
      cmd=("${srun[@]}" "$py" -m badblock "$stage" "${extra[@]}")
      ;;
    pyxis)
      local image=${BADBLOCK_IMAGE:-$submit/badblock.sqsh}
      local mounts="$data:/data:ro,$output:/output"
      if [ -n "$config_host" ]; then
        mounts+=",$config_host:/config/$(basename "$config_host"):ro"
        config=/config/$(basename "$config_host")
      fi
      export BADBLOCK_CONFIG=$config BADBLOCK_DATA=/data BADBLOCK_OUTPUT=/output
      # NGC's NVIDIA_VISIBLE_DEVICES=all makes enroot's GPU hook fail on a node without the
      # NVIDIA driver: there, ask for no GPU.
      if [ -z "${NVIDIA_VISIBLE_DEVICES:-}" ] && ! command -v nvidia-smi >/dev/null; then
        export NVIDIA_VISIBLE_DEVICES=void
        badblock_log "no NVIDIA driver on this node: NVIDIA_VISIBLE_DEVICES=void for enroot"
      fi
      # pyxis does not run the image's ENTRYPOINT unless asked: call both entrypoints by path,
      # NVIDIA's first (CUDA forward compatibility), as `docker run` does.
      cmd=("${srun[@]}" "--container-image=$image" "--container-mounts=$mounts"
           --container-workdir=/output /opt/nvidia/nvidia_entrypoint.sh
           /opt/badblock/docker/entrypoint.sh "$stage" "${extra[@]}")
      ;;
    docker)
      local image=${BADBLOCK_IMAGE:-badblock:latest}
      local repo=${BADBLOCK_REPO:-$submit}
      local gpus=${BADBLOCK_GPUS:-all}
      # Docker starts containers outside the job's cgroup: hand it exactly the job's GPUs.
      if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then gpus="\"device=$CUDA_VISIBLE_DEVICES\""; fi
      cmd=("${srun[@]}" bash "$repo/run-docker.sh" --image "$image" --data "$data" --output "$output"
           --config "$config" --gpus "$gpus" "$stage" "${extra[@]}")
      ;;
  esac

  badblock_log "job $job ($name), restart ${SLURM_RESTART_COUNT:-0}, runtime $runtime," \
               "${SLURM_NNODES:-1} node(s) x ${SLURM_NTASKS_PER_NODE:-1} task(s)," \
               "GPUs ${CUDA_VISIBLE_DEVICES:-none}, rendezvous $MASTER_ADDR:$MASTER_PORT"
  badblock_log "logs: $output/logs/$name-$job.out and .err"
  badblock_log "command: $(badblock_quote "${cmd[@]}")"
  if [ "${BADBLOCK_DRY_RUN:-0}" = 1 ]; then
    badblock_quote "${cmd[@]}"
    return 0
  fi

  preempted=""
  forwarded=""
  step=""
  step_interrupted=0
  # The traps come first: Slurm's time-limit USR2 may arrive at any moment, even before the step
  # starts (up to a minute early), and an untrapped USR2 would kill this shell, not requeue.
  trap 'badblock_forward USR2' USR2
  trap 'badblock_forward TERM' TERM
  "${cmd[@]}" &
  step=$!
  for sig in $forwarded; do kill -s "$sig" "$step" 2>/dev/null || true; done
  local rc
  while :; do
    step_interrupted=0
    rc=0
    wait "$step" || rc=$?
    [ "$step_interrupted" = 1 ] || break
  done
  trap - USR2 TERM

  if [ -n "$preempted" ]; then
    if [ -z "${SLURM_JOB_ID:-}" ]; then
      badblock_log "$preempted received outside Slurm: step exited with $rc, nothing to requeue"
      return "$rc"
    fi
    badblock_log "$preempted received: the step exited with $rc; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID" || badblock_die "scontrol requeue $SLURM_JOB_ID failed"
    return 0
  fi
  badblock_log "step exited with $rc"
  return "$rc"
}

# Trap handler: pass a signal on to the running step once per signal name; srun forwards it to
# every task. USR2 (the templates' --signal, or `scancel -b -s USR2`) means "preempted or out of
# time: checkpoint and requeue". TERM (scancel, or Slurm's own preemption, which requeues by
# itself) is forwarded so that the trainer saves a checkpoint, but does not requeue.
badblock_forward() {
  local sig=$1
  step_interrupted=1
  case " $forwarded " in *" $sig "*) return 0 ;; esac
  forwarded+=" $sig"
  [ "$sig" != USR2 ] || preempted=$sig
  if [ -z "$step" ]; then
    badblock_log "caught SIG$sig before the step started: passing it on once it has"
    return 0
  fi
  badblock_log "caught SIG$sig: forwarding it to the step (pid $step)"
  kill -s "$sig" "$step" 2>/dev/null || true
}
