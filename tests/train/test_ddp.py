"""Several processes: a real two-process gloo run (rank detection: tests/utils/test_ranks.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from badblock.utils.checkpoint import load_checkpoint
from tests.train.trainer_store import make_store

ROOT = Path(__file__).resolve().parents[2]


SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch
    from badblock.train.loop import Trainer
    from badblock.train import distributed as D
    from tests.train.trainer_store import tiny_config

    out = Path(sys.argv[1])
    cfg = tiny_config(out, **{"train.epochs": 2, "data.epoch_size": 16})
    trainer = Trainer(cfg)
    trainer.run()
    rank = trainer.env.rank
    torch.save(trainer.model.state_dict(), out / f"rank{rank}.pt")
    D.destroy_process_group()
""")


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    make_store(tmp_path / "store")
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BADBLOCK_", "SLURM_"))}
    env.update(PYTHONPATH=str(ROOT), BADBLOCK_PROGRESS="0", OMP_NUM_THREADS="1")
    # --standalone: a local rendezvous on a free port (no clash with other jobs on the host)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(tmp_path)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    # only rank 0 wrote: one set of logs, and its checkpoint holds those weights
    final = load_checkpoint(tmp_path / "train" / "checkpoint_final.pt")
    assert final["world_size"] == 2
    assert final["step"] == 4  # 16 samples / (4 per batch x 2 ranks) = 2 steps per epoch
    for key in w0:
        assert torch.equal(w0[key], final["model"][key])
    assert len((tmp_path / "train" / "train_loss.txt").read_text().splitlines()) == 2
