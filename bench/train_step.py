"""Benchmark: training steps per second of the UNet, fp32 eager vs. channels-last (+ bf16 autocast).

One process, one model configuration, the variants side by side on every device measured:

- ``fp32 default heap`` (CPU only, measured first): float32, NCHW, glibc's default allocator,
  which maps and unmaps the large activations every step (``system_share`` shows the kernel's
  part of the CPU time);
- ``fp32``: the same with the heap kept (:func:`badblock.utils.hardware.tune_allocator`, what
  the trainer does; every later variant runs so);
- ``cl``: channels-last model and input, float32;
- ``cl+bf16``: channels-last and ``torch.autocast(dtype=torch.bfloat16)``: on CUDA and on CPUs
  with bf16 units only (elsewhere bf16 is emulated about 100x slower than float32; the record
  says it was skipped, and why);
- ``cl+bf16+compile``: the same under ``torch.compile`` (on CUDA by default, on the CPU with
  ``--compile``; a compile failure is reported, not fatal).

A step is forward + L1 loss + backward + Adam step on a random ``[batch, C, V, B]`` batch
(default ``[B, 5, 64, 520]``: five Vision planes, views padded to 64). FLOPs per step come from
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls, forward and backward);
on CUDA the achieved FLOP/s is also given as a share of the GPU's dense bf16 peak.

    python bench/train_step.py --batch 2 --steps 3                # CPU (and CUDA if present)
    python bench/train_step.py --shape 5,64,128 --width 32         # smaller, for a slow CPU
    python bench/train_step.py --devices cuda --batch 32 --steps 50
    python bench/train_step.py --tiny --out FILE                   # CI: seconds

Prints a table and the ratios to fp32; writes ``bench/results/train_step.json``.
Not a test: absolute times are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
__import__("badblock")  # before torch: badblock sets the OpenMP wait policy torch will read

import torch  # noqa: E402
from benchtools import cpu_seconds, load, machine, results_path  # noqa: E402

from badblock.models import UNet, parameter_count  # noqa: E402
from badblock.utils.atomic import atomic_write_json  # noqa: E402
from badblock.utils.hardware import cpu_description, native_bf16, tune_allocator  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 NVL": 835.0,
    "H100 PCIe": 756.0, "H100": 756.0, "A100": 312.0, "A30": 165.0, "L40S": 362.0,
    "L40": 181.0, "A10": 125.0, "L4": 121.0, "RTX 4090": 165.0, "RTX 3090": 71.0,
    "B200": 2250.0, "GH200": 989.0,
}


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):  # most specific name first
        if key in name:
            return PEAK_BF16_TFLOPS[key]
    return None


def make_step(model, opt, x, y, bf16: bool, device: torch.device):
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            pred = model(x)
        loss = (pred.float() - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def count_flops(args, device: torch.device) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model, opt, x, y = setup(args, device, channels_last=False)
    counter = FlopCounterMode(display=False)
    with counter:
        make_step(model, opt, x, y, False, device)()
    return int(counter.get_total_flops())


def setup(args, device: torch.device, channels_last: bool):
    torch.manual_seed(0)
    c, v, b = args.shape
    model = UNet(in_channels=c, width=args.width, depth=args.depth).to(device)
    x = torch.rand(args.batch, c, v, b, device=device)
    y = torch.rand(args.batch, 1, v, b, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    return model, opt, x, y


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args, device: torch.device, variant: str) -> dict:
    channels_last = variant.startswith("cl")
    bf16 = "bf16" in variant
    model, opt, x, y = setup(args, device, channels_last)
    if variant.endswith("compile"):
        model = torch.compile(model)
    step = make_step(model, opt, x, y, bf16, device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):  # includes compilation for the compiled variant
        step()
    sync(device)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    u0, s0 = cpu_seconds()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync(device)
    elapsed = time.perf_counter() - t0
    u1, s1 = cpu_seconds()
    cpu = u1 - u0 + s1 - s0
    out = {"variant": variant, "step_s": elapsed / args.steps,
           "samples_per_s": args.batch * args.steps / elapsed, "warmup_s": warm_s,
           "cpu_s_per_step": cpu / args.steps, "system_share": (s1 - s0) / max(cpu, 1e-9),
           "final_loss": loss.item(), "load_avg": load()}
    if device.type == "cuda":
        out["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--shape", default="5,64,520", help="C,V,B of one input stack")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--devices", default="auto", help="auto (cpu, and cuda when present), "
                    "cpu, cuda or cpu,cuda")
    ap.add_argument("--compile", action="store_true", help="also torch.compile on the CPU")
    ap.add_argument("--no-compile", action="store_true", help="never torch.compile")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's dense bf16 peak, when its name is not in the table")
    ap.add_argument("--tiny", action="store_true", help="CI: a width-4 net on 16 x 32 planes")
    ap.add_argument("--out", default=None,
                    help="results JSON (default bench/results/train_step.json)")
    args = ap.parse_args(argv)
    out = results_path(ap, args, "train_step.json")
    if args.tiny:
        args.shape, args.width, args.batch, args.steps, args.warmup = "5,16,32", 4, 2, 1, 1
    args.shape = tuple(int(s) for s in args.shape.split(","))
    if len(args.shape) != 3:
        ap.error("--shape needs C,V,B")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
             if args.devices == "auto" else args.devices.split(","))

    result = {"command": " ".join(["python", "bench/train_step.py", *(argv or sys.argv[1:])]),
              "machine": machine(),
              "torch": torch.__version__, "python": platform.python_version(),
              "batch": args.batch, "steps": args.steps, "shape": list(args.shape),
              "width": args.width, "depth": args.depth, "devices": {}}
    rows = []
    for name in names:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        label = (torch.cuda.get_device_name(device) if device.type == "cuda"
                 else f"{cpu_description()}, {torch.get_num_threads()} threads")
        flops = count_flops(args, device)
        peak = peak_tflops(label, args.peak_tflops) if device.type == "cuda" else None
        bf16_ok = device.type == "cuda" or native_bf16()
        variants = (["fp32 default heap"] if device.type == "cpu" else []) + ["fp32", "cl"]
        if bf16_ok:
            variants.append("cl+bf16")
        if bf16_ok and not args.no_compile and (device.type == "cuda" or args.compile):
            variants.append("cl+bf16+compile")
        runs = []
        for variant in variants:
            if variant == "fp32":
                tune_allocator()  # from here on as the trainer runs
            try:
                r = measure(args, device, variant)
            except Exception as exc:  # a backend that cannot compile here is a result, too
                r = {"variant": variant, "error": f"{type(exc).__name__}: {exc}"[:300]}
            if "step_s" in r:
                r["tflop_per_s"] = flops / r["step_s"] / 1e12
                if peak:
                    r["share_of_bf16_peak"] = r["tflop_per_s"] / peak
            runs.append(r)
            rows.append((name, r))
        if not bf16_ok:
            runs.append({"variant": "cl+bf16", "skipped": "this CPU has no bf16 units (AMX, "
                         "AVX512-BF16): emulated bf16 runs about 100x slower than float32"})
        base = runs[0].get("samples_per_s")
        for r in runs:
            if base and "samples_per_s" in r:
                r["speedup_vs_first"] = r["samples_per_s"] / base
        result["devices"][name] = {"name": label, "flops_per_step": flops,
                                   "peak_bf16_tflops": peak, "runs": runs}

    model = UNet(in_channels=args.shape[0], width=args.width, depth=args.depth)
    result["parameters"] = parameter_count(model)
    print(f"UNet {parameter_count(model):,} parameters, batch {args.batch} x "
          f"{list(args.shape)}, {args.steps} timed steps")
    print(f"{'device':7} {'variant':17} {'samples/s':>10} {'step s':>9} {'TFLOP/s':>8} "
          f"{'x first':>7} {'sys':>5} {'% peak':>7}")
    for name, r in rows:
        if "error" in r:
            print(f"{name:7} {r['variant']:17} failed: {r['error']}")
            continue
        share = r.get("share_of_bf16_peak")
        print(f"{name:7} {r['variant']:17} {r['samples_per_s']:10.3f} {r['step_s']:9.3f} "
              f"{r['tflop_per_s']:8.4f} {r.get('speedup_vs_first', float('nan')):7.2f} "
              f"{r['system_share']:5.2f} {'' if share is None else f'{100 * share:6.1f}%':>7}")
    for name, d in result["devices"].items():
        for r in d["runs"]:
            if "skipped" in r:
                print(f"{name:7} {r['variant']:17} skipped: {r['skipped']}")
    for name, d in result["devices"].items():
        print(f"{name}: {d['name']}, {d['flops_per_step'] / 1e9:.1f} GFLOP per step")
    atomic_write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
