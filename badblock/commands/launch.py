"""Submit a stage to Slurm with submitit, or run it on this machine, with requeue on preemption.

The stage runs with the resolved config (written to OUTPUT/launch/<stage>-<time>/), one task per
GPU. Under Slurm, USR2 comes launch.signal_delay_s before the time limit: the stage saves its
checkpoint, submitit requeues the job and the stage resumes from checkpoint_latest.pt. To
preempt such a job by hand: scancel -s USR2 JOBID (to the job's tasks; not scancel -b, which
signals submitit's batch shell: it has no handler, dies, and the job ends FAILED). --args
passes arguments to the stage. Everything below is also in the config's launch section.

examples:
  badblock launch train --config my.yaml --nodes 2 --gpus-per-node 8 --partition batch --time 240
  badblock launch train -c my.yaml --gpus-per-node 8 --container-image ~/badblock.sqsh
  badblock launch preprocess -c my.yaml --cluster local --args '/raid/pet/scans'
  badblock launch train -c demo --cluster debug --set train.epochs=1
"""

from __future__ import annotations

import argparse
import json

from badblock.commands.common import add_config_arguments, config_from_args
from badblock.launch import STAGES

HELP = "submit a stage to Slurm with submitit (or run it locally), requeued on preemption"
# flag -> launch config key
FLAGS = {"cluster": "cluster", "nodes": "nodes", "gpus_per_node": "gpus_per_node",
         "tasks_per_node": "tasks_per_node", "cpus_per_task": "cpus_per_task",
         "mem_gb": "mem_gb", "partition": "partition", "time": "time_min",
         "signal_delay": "signal_delay_s", "container_image": "container_image"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES, help="the stage to run")
    parser.add_argument("--args", dest="stage_args", default="", metavar="'ARGS'",
                        help="arguments for the stage itself, as one quoted string "
                             "(e.g. --args '/raid/pet/scans --kind sinogram')")
    add_config_arguments(parser)
    g = parser.add_argument_group("where and how (launch.* in the config)")
    g.add_argument("--cluster", choices=["slurm", "local", "debug"],
                   help="slurm (default), local (subprocesses here) or debug (in this process)")
    g.add_argument("--nodes", type=int, metavar="N", help="Slurm nodes")
    g.add_argument("--gpus-per-node", type=int, metavar="G", help="also the tasks per node")
    g.add_argument("--tasks-per-node", type=int, metavar="T",
                   help="tasks per node when not one per GPU (e.g. CPU-only DDP)")
    g.add_argument("--cpus-per-task", type=int, metavar="C", help="CPUs Slurm gives each task")
    g.add_argument("--mem-gb", type=float, metavar="GB",
                   help="memory per node; 0 = the partition's default")
    g.add_argument("--partition", "-p", metavar="P", help="Slurm partition")
    g.add_argument("--time", type=int, metavar="MIN", help="time limit of one run, minutes")
    g.add_argument("--signal-delay", type=int, metavar="S",
                   help="USR2 this many seconds before the time limit")
    g.add_argument("--container-image", metavar="IMAGE", help="pyxis image (squashfs or URI)")
    wait = parser.add_mutually_exclusive_group()
    wait.add_argument("--wait", dest="wait", action="store_true", default=None,
                      help="wait for the job and print its result (default for local/debug)")
    wait.add_argument("--no-wait", dest="wait", action="store_false",
                      help="submit and return (default for slurm)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the submission (parameters, command) without submitting")


def run(args: argparse.Namespace) -> int:
    import shlex

    from badblock import launch

    stage_args = shlex.split(args.stage_args)
    extra = []
    for flag, key in FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            extra.append(f"launch.{key}={json.dumps(value)}")
    cfg = config_from_args(args, *extra)
    if args.dry_run:
        launch.check_launch_config(cfg.launch)
        params = launch.executor_parameters(cfg, args.stage)
        print(json.dumps({"cluster": cfg.launch.cluster, "parameters": params,
                          "command": ["python", "-m", "badblock", args.stage, "--config",
                                      "<resolved config>", *stage_args]}, indent=2))
        return 0
    job = launch.submit(cfg, args.stage, stage_args)
    print(f"badblock launch: {args.stage} submitted to {cfg.launch.cluster} as job {job.job_id}; "
          f"log {job.paths.stdout}")
    wait = args.wait if args.wait is not None else cfg.launch.cluster != "slurm"
    if not wait:
        return 0
    results = job.results()
    print(f"badblock launch: job {job.job_id} done: {json.dumps(results)}")
    return 0
