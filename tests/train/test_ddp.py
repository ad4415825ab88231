"""Several processes: rank detection (torchrun, Slurm) and a real two-process gloo run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from badblock.train.checkpoint import load_checkpoint
from badblock.train.distributed import detect_env, parse_nodelist, port_from_job_id
from tests.train.trainer_store import make_store

ROOT = Path(__file__).resolve().parents[2]


def test_ranks_from_torchrun_env():
    env = detect_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h1",
                      "MASTER_PORT": "29500", "SLURM_PROCID": "0", "SLURM_NTASKS": "8"})
    assert (env.rank, env.world_size, env.local_rank, env.source) == (3, 8, 1, "torchrun")
    assert (env.master_addr, env.master_port) == ("h1", 29500)


def test_ranks_from_slurm_env():
    env = detect_env({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16",
                      "SLURM_JOB_NODELIST": "dgx[007-008,010],login1", "SLURM_JOB_ID": "123456"})
    assert (env.rank, env.world_size, env.local_rank, env.source) == (5, 16, 1, "slurm")
    assert env.master_addr == "dgx007"
    assert env.master_port == port_from_job_id("123456") == port_from_job_id(123456)
    assert 20000 <= env.master_port < 40000
    # a single Slurm task is a plain single process
    assert not detect_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).distributed
    assert not detect_env({}).distributed


@pytest.mark.parametrize("text,hosts", [
    ("node1", ["node1"]),
    ("n[01-03,07]", ["n01", "n02", "n03", "n07"]),
    ("a[1-2],b3", ["a1", "a2", "b3"]),
    ("rack1-n[9-10]", ["rack1-n9", "rack1-n10"]),
])
def test_parse_nodelist(text, hosts):
    assert parse_nodelist(text) == hosts


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
