"""GPU benchmark: what issue 13 asks to measure on one NVIDIA GPU, in under 8 minutes.

    bash bench/gpu.sh                      # a GPU machine: writes bench/results/gpu.json
    bash bench/gpu.sh --cpu-dry-run --out /tmp/gpu.json    # anywhere: every part, tiny, on CPU

Without a CUDA GPU (and without ``--cpu-dry-run``) it prints one line and exits with 2.
Each part runs in its own process under its own time limit (their sum, :data:`PARTS`, keeps
the whole under 8 minutes); a part that fails or runs out of time is recorded as such and the
others still run:

- ``train_step``: ``bench/train_step.py --devices cuda``: samples/s of a training step in
  float32, channels-last, bf16 + channels-last and + ``torch.compile``, with the achieved share
  of the GPU's dense bf16 peak (the table in that script);
- ``loader``: ``bench/loader.py``: the training loader's rate, and with thinning and
  augmentation on the GPU, against the training step's rate;
- ``repair``: ``bench/repair.py --device cuda --no-baseline``: a full Vision frame
  ``[33, 815, 50, 520]`` repaired on the GPU (both networks), including reading and writing it,
  next to the I/O floor measured in the same run;
- ``ddp``: ``badblock train`` under ``torchrun`` with two processes (NCCL; gloo in the dry run)
  on a synthetic Vision store: the DDP step rate from the run's own log. NCCL cannot put two
  ranks on one GPU, so with a single GPU this part says so instead of running;
- ``projector``: the fast projector (``badblock.physics.fastproj``) on the GPU: all 50 views of
  a Vision phantom with attenuation, forward and adjoint.

The dry run does the same on the ``mini`` scanner (the projector on a 10-ring Vision) with
narrow networks, so that CI keeps every part runnable; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# seconds each part may take on the GPU machine (the sum stays under 8 minutes)
PARTS = {"train_step": 120, "loader": 60, "repair": 150, "ddp": 60, "projector": 60}


def part_commands(dry: bool, tmp: Path) -> dict[str, list[str]]:
    py, bench = sys.executable, ROOT / "bench"
    if dry:
        return {
            "train_step": [py, str(bench / "train_step.py"), "--tiny", "--devices", "cpu"],
            "loader": [py, str(bench / "loader.py"), "--tiny"],
            "repair": [py, str(bench / "repair.py"), "--tiny", "--networks", "demo",
                       "--no-baseline", "--tmp", str(tmp)],
            "ddp": [py, __file__, "--part", "ddp", "--cpu-dry-run", "--tmp", str(tmp)],
            "projector": [py, __file__, "--part", "projector", "--cpu-dry-run"],
        }
    return {
        "train_step": [py, str(bench / "train_step.py"), "--devices", "cuda", "--batch", "32",
                       "--steps", "20", "--warmup", "3"],
        "loader": [py, str(bench / "loader.py"), "--seconds", "3", "--rounds", "2"],
        "repair": [py, str(bench / "repair.py"), "--device", "cuda", "--no-baseline",
                   "--batch-size", "64", "--tmp", str(tmp)],
        "ddp": [py, __file__, "--part", "ddp", "--tmp", str(tmp)],
        "projector": [py, __file__, "--part", "projector"],
    }


def run_part(name: str, cmd: list[str], timeout: float, out: Path) -> dict:
    """Run one part; its JSON (``--out``) or what went wrong."""
    env = dict(os.environ, BADBLOCK_PROGRESS="0")
    t0 = time.perf_counter()
    try:
        res = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True,
                             env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"ran out of its {timeout:.0f} s", "seconds": timeout}
    seconds = round(time.perf_counter() - t0, 1)
    if res.returncode != 0:
        return {"error": f"exit {res.returncode}: {res.stderr.strip()[-1500:]}",
                "seconds": seconds}
    return {"seconds": seconds, "result": json.loads(out.read_text()),
            "printed": res.stdout.strip().splitlines()[-12:]}


def part_ddp(args) -> dict:
    """Two-process ``badblock train`` on a synthetic store; the DDP step rate from its log."""
    import torch
    from loader import synthetic_store

    dry = args.cpu_dry_run
    if not dry and torch.cuda.device_count() < 2:
        return {"skipped": f"NCCL needs one GPU per rank; this machine has "
                           f"{torch.cuda.device_count()} (run on a 2-GPU machine)"}
    tmp = Path(tempfile.mkdtemp(prefix="gpu-ddp-", dir=args.tmp))
    scanner, preset, batch, steps = ("mini", "demo", 2, 4) if dry else ("vision", "vision", 16, 30)
    store = synthetic_store(tmp, 3, scanner)
    sets = [f"run.output={tmp}", f"data.store={store}", f"data.batch_size={batch}",
            f"data.epoch_size={2 * batch * steps}", "train.epochs=1", "train.val_batches=1",
            "train.tensorboard=false", "train.ema=0", f"scanner.name={scanner}",
            # the synthetic store has no fills: this part measures the DDP step, not the fill
            "model.fill_prior=false", "data.fills="]
    if dry:
        sets += ["model.width=4", "run.device=cpu"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "badblock", "train", "--config", preset]
    for s in sets:
        cmd += ["--set", s]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_",))}
    env.update(PYTHONPATH=str(ROOT), BADBLOCK_PROGRESS="0")
    if dry:
        env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        # torchrun's own report of a dead rank comes last and says little; the rank's reason
        # (an exception, gloo's terminate) can be far above it
        why = [ln for ln in res.stderr.splitlines()
               if re.search(r"error|exception|terminate|abort|signal|killed", ln, re.I)]
        # last, since the caller keeps the tail of what this prints
        raise SystemExit("two-process training failed (exit {}); its stderr ends:\n{}\n"
                         "its lines that say why:\n{}".format(
                             res.returncode, res.stderr[-400:], "\n".join(why[:12])[-1000:]))
    rec = json.loads((tmp / "train" / "log.jsonl").read_text().splitlines()[-1])
    return {"backend": "gloo" if dry else "nccl", "processes": 2, "batch_per_process": batch,
            "steps": rec["step"], "samples_per_s": rec["samples_per_s"],
            "epoch_time_s": rec["epoch_time_s"], "wall_s_including_start": round(wall, 1),
            "peak_gpu_mb": rec.get("peak_gpu_mb")}


def part_projector(args) -> dict:
    """The fast projector forward and adjoint over all views of a phantom with attenuation."""
    import torch
    from bench_simulate import _phantom, _scanner

    from badblock.physics.fastproj import FastProjector
    from badblock.physics.projector import support_radius

    dry = args.cpu_dry_run
    device = "cpu" if dry else "cuda"
    scanner = _scanner("vision-short" if dry else "vision")
    geom, act, mu = _phantom(scanner)
    proj = FastProjector(scanner, mu, support_mm=support_radius(geom.grid, act, mu),
                         device=device)
    views = list(range(scanner.n_views))

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    sino = proj.forward(act, views)
    sync()
    fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    sino2 = proj.forward(act, views)  # attenuation factors cached by now
    sync()
    fwd2 = time.perf_counter() - t0
    t0 = time.perf_counter()
    proj.adjoint(sino2, views)
    sync()
    adj = time.perf_counter() - t0
    return {"scanner": scanner.name, "shape": list(scanner.shape), "device": device,
            "options": {"subviews": proj.subviews, "tilts": proj.tilts, "pool": proj.pool},
            "forward_first_s": round(fwd, 2), "forward_s": round(fwd2, 2),
            "adjoint_s": round(adj, 2), "sum": float(sino.sum())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="every part on tiny sizes on the CPU (checks the script, measures "
                         "nothing)")
    ap.add_argument("--out", default=None,
                    help="results JSON (default bench/results/gpu.json; required with "
                         "--cpu-dry-run, which must not overwrite real figures)")
    ap.add_argument("--tmp", default=None, help="folder for scans and stores")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        out = {"ddp": part_ddp, "projector": part_projector}[args.part](args)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        return 0
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print(f"bench/gpu.sh: no CUDA GPU visible to torch {torch.__version__} "
              f"(CUDA build: {torch.version.cuda or 'no'}); nothing measured "
              "(--cpu-dry-run checks the script)", file=sys.stderr)
        return 2
    if args.cpu_dry_run and not args.out:
        ap.error("--cpu-dry-run needs --out (its figures are not results)")
    from benchtools import load, machine

    from badblock.utils.atomic import atomic_write_json

    out = Path(args.out or ROOT / "bench" / "results" / "gpu.json")
    result = {"command": "bash bench/gpu.sh " + " ".join(sys.argv[1:]), "machine": machine(),
              "dry_run": bool(args.cpu_dry_run), "parts": {}}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-gpu-") as tmp:
        tmp = Path(tmp)
        for name, cmd in part_commands(args.cpu_dry_run, tmp).items():
            limit = PARTS[name] * (5 if args.cpu_dry_run else 1)  # a slow CPU in CI
            print(f"{name} (at most {limit} s) ...", flush=True)
            rec = run_part(name, cmd, limit, tmp / f"{name}.json")
            rec["load_avg"] = load()
            result["parts"][name] = rec
            print(f"  {rec.get('error') or 'done in ' + str(rec['seconds']) + ' s'}", flush=True)
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(out, result)
    failed = [n for n, r in result["parts"].items() if "error" in r]
    print(f"wrote {out} in {result['total_s']} s" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
