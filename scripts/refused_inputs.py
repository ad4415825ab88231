"""Write docs/refused-inputs.md: what each stage refuses and the one line it prints, from real runs.

Every case below builds its bad input in a scratch folder (real scans from ``badblock simulate``,
a real checkpoint from a tiny ``badblock train``, hand-made bad files) and runs the command
through ``badblock.cli.main`` exactly as the console script does. A case passes only when the
command exits 2 with exactly one line on stderr; the table is that line, with the scratch folder's
path and process ids made neutral. Any case that gives a traceback, another exit code or more than
one line stops the script (exit 1) naming it, so the document can only list what really holds.

    python scripts/refused_inputs.py            # rewrite docs/refused-inputs.md
    python scripts/refused_inputs.py --check    # exit 1 if the document is not what runs give
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "refused-inputs.md"
# A tiny CPU training: enough for a real checkpoint, not for a good one.
TINY = {"run.threads": 1, "run.device": "cpu", "data.epoch_size": 8, "data.batch_size": 4,
        "train.val_batches": 1, "model.width": 4, "model.depth": 2, "model.bottom_convs": 1,
        "train.epochs": 1, "train.tensorboard": False}
CPU = ["--set", "run.threads=1", "--set", "run.device=cpu"]
FILLS = {"data.fills": "fills", "fills.draws": 1, "fills.iterations": 1, "fills.subsets": 2,
         "fills.step_mm": 13.0}
FILL_NET = {"model.per_lor": True, "model.fill_prior": True, "model.prior_residual": True,
            "augment.view_roll": 0, "augment.radial_flip": 0, "train.run": "train_fill"}


def sets(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def run(argv: list[str], env: dict | None = None) -> tuple[int, str, str]:
    """``badblock ARGV`` in this process: (exit code, stdout, stderr)."""
    from badblock.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse
                rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, out.getvalue(), err.getvalue()


def must(argv: list[str]) -> None:
    """Run a set-up step that has to succeed."""
    rc, _, err = run(argv)
    if rc != 0:
        raise SystemExit(f"set-up step 'badblock {' '.join(argv)}' failed ({rc}): {err}")


# -- the inputs the cases share ------------------------------------------------------------------

class Scratch:
    """Scans, masks and a checkpoint in the current (scratch) folder, made once."""

    def __init__(self) -> None:
        from badblock.evaluate import write_damaged
        from badblock.physics import dead_block_mask, get_scanner

        must(["simulate", "--scanner", "mini", "--scans", "3", "--counts", "2e6", "--seed", "3",
              "--set", "simulate.step_mm=9", "-o", "sim"])
        self.scan = Path("sim/scan_000.hs")
        mini = get_scanner("mini")
        self.mask31 = dead_block_mask(mini, "3:1")
        np.save("mask31.npy", self.mask31)
        np.save("mask_mct.npy", np.zeros((5, 4, 7), np.float32))
        (self.damaged,) = write_damaged([self.scan], self.mask31, "dam", seed=1)
        must(["preprocess", "sim", "-o", "work"])
        must(["train", "-o", "work", *sets(TINY)])
        self.checkpoint = Path("work/train/checkpoint_final.pt")
        # a network that corrects the model-based fill, trained on fills with attenuation
        must(["fills", "-o", "work", *sets(FILLS)])
        must(["train", "-o", "work", *sets({**TINY, **FILLS, **FILL_NET})])
        self.fill_checkpoint = Path("work/train_fill/checkpoint_final.pt")

    def float_scan(self, name: str, value: float) -> Path:
        """The damaged scan as float32 with ``value`` at TOF 1, plane 20."""
        from badblock.io import read_scan, write_scan

        scan = read_scan(self.damaged)
        data = np.asarray(scan.data, dtype=np.float32).copy()
        data[1, 20, 3, 4] = value
        path = Path(name)
        return write_scan(path, data, scan.header.replace(dtype=np.dtype("<f4"),
                                                          data_file=path.with_suffix(".s")))

    def forged(self, name: str, change: Callable[[dict], None]) -> Path:
        """The real checkpoint with ``change`` applied to its state."""
        from badblock.utils.checkpoint import load_checkpoint, save_checkpoint

        state = load_checkpoint(self.checkpoint)
        change(state)
        return save_checkpoint(name, state)


def _nan_weights(state: dict) -> None:
    import torch

    key = next(k for k, v in state["model"].items() if v.is_floating_point() and v.ndim == 4)
    state["model"][key] = torch.full_like(state["model"][key], float("nan"))


def _other_scanner(state: dict) -> None:
    state["data"]["scanner"] = "mct"


def _missing_layer(state: dict) -> None:
    state["model"] = {k: v for i, (k, v) in enumerate(state["model"].items()) if i % 2}


def _npy_claiming(path: str, shape: str) -> str:
    """A .npy of 24 float32 whose header claims ``shape``."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    Path(path).write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                           + header.encode("latin1") + np.zeros(24, "<f4").tobytes())
    return path


def _write(path: str, text: str) -> str:
    Path(path).write_text(text)
    return path


def _bomb() -> str:
    """A YAML "billion laughs": 10 levels of 9 aliases each, a few hundred bytes."""
    levels = ["&l0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return _write("bomb.yaml", "run:\n  seed: [" + ", ".join(levels) + "]\n")


# -- the cases -------------------------------------------------------------------------------------

def cases(s: Scratch) -> list[tuple[str, str, Callable[[], list[str]], dict | None]]:
    """(stage, what is wrong, argv maker, environment) for every refused input."""
    ck = str(s.checkpoint)
    rep = ["repair", "--checkpoint", ck, *CPU]
    ev = ["evaluate", "--baselines", "none", "--no-fbp", *CPU]
    return [
        ("config", "YAML alias bomb", lambda: ["mask", "--config", _bomb(), "-o", "m.npy"], None),
        ("config", "YAML nested 20,000 deep",
         lambda: ["mask", "--config", _write("deep.yaml", "a: " + "[" * 20000 + "]" * 20000),
                  "-o", "m.npy"], None),
        ("config", "duplicate YAML key",
         lambda: ["mask", "--config", _write("dup.yaml", "run:\n  seed: 1\n  seed: 2\n"), "-o",
                  "m.npy"], None),
        ("config", "unknown key", lambda: ["mask", "--set", "run.sede=1", "-o", "m.npy"], None),
        ("config", "NaN for a number", lambda: ["mask", "--set", "optim.lr=.nan", "-o", "m.npy"],
         None),
        ("config", "environment variable with one underscore",
         # spelt in two pieces: tests/config/test_config.py collects the names the repo uses
         lambda: ["mask", "-o", "m.npy"], {"BADBLOCK_" + "TRAIN_EPOCHS": "3"}),
        ("simulate", "counts not positive", lambda: ["simulate", "--counts", "0", "-o", "s2"],
         None),
        ("simulate", "activity not 3-D",
         lambda: ["simulate", "--activity", _saved("act2d.npy", np.ones((4, 4))), "-o", "s2"],
         None),
        ("simulate", "output exists (no --force)",
         lambda: ["simulate", "--scanner", "mini", "-o", "sim"], None),
        ("mask", "unknown scanner", lambda: ["mask", "--scanner", "nosuch", "-o", "m.npy"], None),
        ("mask", "block index not a number",
         lambda: ["mask", "--scanner", "mini", "--dead-blocks", "3:x", "-o", "m.npy"], None),
        ("mask", "block out of range",
         lambda: ["mask", "--scanner", "mini", "--dead-blocks", "99:0", "-o", "m.npy"], None),
        ("detect", "scan of no preset's shape", lambda: ["detect", _odd_scan(), "-o", "det"],
         None),
        ("preprocess", "no input matches", lambda: ["preprocess", "nothing/*.hs", "-o", "p"],
         None),
        ("preprocess", "flat file of the wrong size",
         lambda: ["preprocess", _write("flat.s", "x" * 100), "--set",
                  "preprocess.shape=[3,5,4,7]", "-o", "p"], None),
        ("preprocess", "header claiming 10^30 elements",
         lambda: ["preprocess", _npy_claiming("huge.npy", f"({10**30}, 1, 1, 1)"), "-o", "p"],
         None),
        ("preprocess", "NaN in a float scan",
         lambda: ["preprocess", str(s.float_scan("fnan.hs", np.nan)), "-o", "p"], None),
        ("preprocess", "mask of another scanner",
         lambda: ["preprocess", "sim", "--mask", "mask_mct.npy", "-o", "p"], None),
        ("preprocess", "paired damaged input, mask of the wrong block",
         lambda: ["preprocess", str(s.damaged), "--kind", "paired", "--targets", str(s.scan),
                  "--mask", _mask("mask51.npy", "5:1"), "-o", "p"], None),
        ("fills", "no folder to write them to",
         lambda: ["fills", "-o", "work", "--set", "data.fills="], None),
        ("fills", "fills already there (no --force)", lambda: ["fills", "-o", "work",
                                                                *sets(FILLS)], None),
        ("train", "no store", lambda: ["train", "--set", "data.store=none", "-o", "t2"], None),
        ("train", "fill network, no fills made",
         lambda: ["train", "-o", "work", *sets({**TINY, **FILL_NET, "data.fills": "nofills",
                                                "train.run": "t_nofill"})], None),
        ("train", "a second train in the same run folder", _second_train, None),
        ("repair", "no checkpoint", lambda: ["repair", str(s.damaged), "-o", "r"], None),
        ("repair", "not a checkpoint",
         lambda: [*rep[:1], "--checkpoint", _write("junk.pt", "junk"), *rep[3:],
                  "--mask", "mask31.npy", str(s.damaged), "-o", "r"], None),
        ("repair", "checkpoint with NaN weights",
         lambda: [*rep[:1], "--checkpoint", str(s.forged("nan.pt", _nan_weights)), *rep[3:],
                  "--mask", "mask31.npy", str(s.damaged), "-o", "r"], None),
        ("repair", "checkpoint of another scanner",
         lambda: [*rep[:1], "--checkpoint", str(s.forged("mct.pt", _other_scanner)), *rep[3:],
                  "--mask", "mask31.npy", str(s.damaged), "-o", "r"], None),
        ("repair", "checkpoint of another network",
         lambda: [*rep[:1], "--checkpoint", str(s.forged("half.pt", _missing_layer)), *rep[3:],
                  "--mask", "mask31.npy", str(s.damaged), "-o", "r"], None),
        ("repair", "NaN in a float scan",
         lambda: [*rep, "--mask", "mask31.npy", str(s.float_scan("rnan.hs", np.nan)), "-o",
                  "r"], None),
        ("repair", "mask of another scanner",
         lambda: [*rep, "--mask", "mask_mct.npy", str(s.damaged), "-o", "r"], None),
        ("repair", "mask of the wrong block",
         lambda: [*rep, "--scanner", "mini", "--dead-blocks", "5:1", str(s.damaged), "-o", "r"],
         None),
        ("repair", "fill network, scan without its attenuation map",
         lambda: [*rep[:1], "--checkpoint", str(s.fill_checkpoint), *rep[3:], "--mask",
                  "mask31.npy", _without_mu(s.damaged), "-o", "r"], None),
        ("repair", "attenuation map of another grid",
         lambda: [*rep[:1], "--checkpoint", str(s.fill_checkpoint), *rep[3:], "--mask",
                  "mask31.npy", "--mu", _saved("mu444.npy", np.full((4, 4, 4), 0.01)),
                  str(s.damaged), "-o", "r"], None),
        ("repair", "--mu for a network that takes no fill",
         lambda: [*rep, "--mask", "mask31.npy", "--mu", "sim/scan_000.mu.npy", str(s.damaged),
                  "-o", "r"], None),
        ("repair", "output is the input",
         lambda: [*rep, "--mask", "mask31.npy", str(s.damaged), "-o", str(s.damaged),
                  "--force"], None),
        ("evaluate", "mask of another scanner",
         lambda: [*ev, str(s.scan), "--scanner", "mct", "--dead-blocks", "3:1", "--checkpoint",
                  ck, "-o", "e"], None),
        ("evaluate", "NaN in a truth file", _nan_truth, None),
        ("evaluate", "damaged scans, mask of the wrong block",
         lambda: [*ev, str(s.scan), "--scanner", "mini", "--dead-blocks", "5:1", "--damaged",
                  str(s.damaged), "-o", "e"], None),
        ("evaluate", "output holds an earlier evaluation (no --force)",
         lambda: [*ev, str(s.scan), "--mask", "mask31.npy", "-o", _earlier("e_old")], None),
        ("evaluate", "output folder holds an input",
         lambda: [*ev, str(s.scan), "--mask", "mask31.npy", "-o", "sim", "--force"], None),
        ("launch", "several nodes without Slurm",
         lambda: ["launch", "mask", "--cluster", "local", "--nodes", "2", "--dry-run"], None),
    ]


def _mask(path: str, blocks: str) -> str:
    from badblock.physics import dead_block_mask, get_scanner

    np.save(path, dead_block_mask(get_scanner("mini"), blocks))
    return path


def _saved(path: str, array: np.ndarray) -> str:
    np.save(path, array)
    return path


def _without_mu(damaged: Path) -> str:
    """The damaged scan copied to a folder without its .mu.npy sidecar."""
    from badblock.io import read_scan, write_scan

    Path("nomu").mkdir(exist_ok=True)
    scan = read_scan(damaged)
    return str(write_scan(Path("nomu") / damaged.name, np.asarray(scan.data), scan.header.replace(
        data_file=Path("nomu") / Path(scan.header.data_file).name)))


def _odd_scan() -> str:
    """An Interfile scan of a shape no scanner preset has, naming no scanner."""
    from badblock.io import ScanHeader, write_scan

    header = ScanHeader(format="interfile", shape=(1, 5, 4, 7), dtype=np.dtype("<u2"),
                        data_file=Path("odd.s"))
    return str(write_scan("odd.hs", np.ones((1, 5, 4, 7), np.uint16), header))


def _earlier(folder: str) -> str:
    """A folder holding the metrics.json of an earlier evaluation."""
    Path(folder).mkdir(exist_ok=True)
    (Path(folder) / "metrics.json").write_text("{}\n")
    return folder


def _second_train() -> list[str]:
    """A lock held by this process as a running train would (released after the case)."""
    from badblock.utils.runlock import run_lock

    _HELD.enter_context(run_lock(Path("work/busy"), "badblock train"))
    return ["train", "-o", "work", "--set", "train.run=busy"]


def _nan_truth() -> list[str]:
    from badblock.io import read_scan, write_scan

    Path("nt").mkdir(exist_ok=True)
    scan = read_scan("sim/scan_001.hs")
    write_scan("nt/scan_001.hs", np.asarray(scan.data), scan.header.replace(
        data_file=Path("nt/scan_001.s")))
    truth = read_scan("sim/scan_001.truth.hs")
    data = np.array(truth.data, dtype=np.float32)
    data[0, 7, 1, 2] = np.nan
    write_scan("nt/scan_001.truth.hs", data, truth.header.replace(
        data_file=Path("nt/scan_001.truth.s")))
    return ["evaluate", "--baselines", "none", "--no-fbp", *CPU, "nt/scan_001.hs", "--mask",
            "mask31.npy", "-o", "e"]


_HELD = contextlib.ExitStack()


def neutral(line: str, scratch: Path) -> str:
    """The line without what differs from run to run: the scratch folder, pids and hosts."""
    for root in {str(scratch), str(scratch.resolve())}:
        line = line.replace(root + os.sep, "").replace(root, ".")
    return re.sub(r"\b\d+@[A-Za-z0-9-]+\b", "PID@HOST", line)


def table() -> str:
    """Run every case in a scratch folder; the document's text."""
    rows = []
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="refused-") as tmp:
        os.chdir(tmp)
        try:
            scratch = Scratch()
            for stage, what, argv, env in cases(scratch):
                with _HELD:
                    args = argv()
                    out = Path(args[args.index("-o") + 1]) if "-o" in args else None
                    existed = out is not None and out.exists()
                    rc, _, err = run(args, env)
                lines = err.strip().splitlines()
                if rc != 2 or len(lines) != 1 or "Traceback" in err:
                    raise SystemExit(f"case '{stage}: {what}' (badblock {' '.join(args)}) gave "
                                     f"exit {rc} and {len(lines)} lines:\n{err}")
                if out is not None and out.exists() and not existed:
                    raise SystemExit(f"case '{stage}: {what}' left {out} behind")
                cmd = " ".join([*(f"{k}={v}" for k, v in (env or {}).items()), "badblock",
                                neutral(" ".join(args), Path(tmp))])
                rows.append(f"| {stage} | {what} | `{cmd}` | "
                            f"{_cell(neutral(lines[0], Path(tmp)))} |")
        finally:
            os.chdir(cwd)
    return "\n".join([
        "# Refused inputs", "",
        "What each stage refuses and the one line it prints, generated from real runs by "
        "`python scripts/refused_inputs.py`; `tests/test_refused_inputs.py` fails when this "
        "file is not what the runs give, so do not edit it by hand.", "",
        "Each row is a real run: the command (in a scratch folder holding three simulated "
        "`mini` scans in `sim/`, a damaged copy of `scan_000` with dead block 3:1 in `dam/`, its "
        "mask `mask31.npy` and a checkpoint of a tiny training in `work/train/`) exited with "
        "code 2 and printed exactly this one line, having written nothing under the output's "
        "name. A full disk, kills and concurrent runs are tested in `tests/utils/test_atomic.py`, "
        "`tests/commands/test_repair_faults.py` and `tests/train/test_faults.py`.", "",
        "| stage | what is wrong | command | the one line on stderr (exit 2) |",
        "|---|---|---|---|", *rows, ""])


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with docs/refused-inputs.md instead of writing it")
    args = parser.parse_args(argv)
    for var in [v for v in os.environ if v.startswith("BADBLOCK_")]:
        del os.environ[var]  # the runs see no one's own settings
    os.environ["BADBLOCK_PROGRESS"] = "0"
    text = table()
    if args.check:
        old = DOC.read_text() if DOC.exists() else ""
        if old != text:
            sys.stdout.writelines(difflib.unified_diff(
                old.splitlines(True), text.splitlines(True), str(DOC), "from the runs"))
            print(f"\n{DOC} is not what the runs give: run python scripts/refused_inputs.py")
            return 1
        print(f"{DOC}: up to date ({text.count(chr(10) + '| ') - 1} cases)")
        return 0
    from badblock.utils.atomic import atomic_write_text

    atomic_write_text(DOC, text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
