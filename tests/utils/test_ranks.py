"""Rank detection from torchrun and Slurm environments, Slurm node lists, device choice."""

from __future__ import annotations

import pytest

from badblock.utils.ranks import detect_env, parse_nodelist, port_from_job_id


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
