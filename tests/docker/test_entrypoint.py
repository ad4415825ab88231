"""docker/entrypoint.sh run directly, as the image runs it: stage from the environment or the
first argument, arguments passed through, a shell on request, clear errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from badblock.cli import COMMANDS
from tests.docker.conftest import ROOT

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def entry(*args, env=None, cwd=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("BADBLOCK_")}
    # The image has `badblock` on PATH; so has the test environment's bin folder.
    e["PATH"] = f"{Path(sys.executable).parent}:{e['PATH']}"
    e["BADBLOCK_PROGRESS"] = "0"
    e.update(env or {})
    return subprocess.run(["bash", str(ENTRYPOINT), *args], env=e, capture_output=True, text=True,
                          cwd=cwd, stdin=subprocess.DEVNULL, timeout=120)


def test_entrypoint_knows_exactly_the_cli_stages():
    stages = re.search(r'^STAGES="([^"]+)"', ENTRYPOINT.read_text(), re.M).group(1).split()
    assert stages == COMMANDS


@pytest.mark.parametrize("stage", COMMANDS)
def test_every_stage_from_env_and_from_argument(stage):
    by_env = entry("--help", env={"BADBLOCK_STAGE": stage})
    assert by_env.returncode == 0, by_env.stderr
    assert by_env.stdout.startswith(f"usage: badblock {stage}")
    by_arg = entry(stage, "--help", env={"BADBLOCK_STAGE": "train"})  # the argument wins
    assert by_arg.returncode == 0, by_arg.stderr
    assert by_arg.stdout.startswith(f"usage: badblock {stage}")


def test_runs_a_stage_with_config_data_and_output_from_env(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("scanner:\n  name: mini\n  dead_blocks: ['2:0']\n")
    (tmp_path / "data").mkdir()
    out = tmp_path / "out" / "nested"  # created by the entrypoint
    proc = entry("--set", "scanner.dead_blocks=['1:1']", cwd=tmp_path, env={
        "BADBLOCK_STAGE": "mask", "BADBLOCK_CONFIG": str(cfg),
        "BADBLOCK_DATA": str(tmp_path / "data"), "BADBLOCK_OUTPUT": str(out)})
    assert proc.returncode == 0, proc.stderr
    mask = np.load(out / "mask.npy", allow_pickle=False)
    assert mask.ndim == 3 and mask.max() > 0
    resolved = (out / "config.resolved.yaml").read_text()
    assert "1:1" in resolved and "2:0" not in resolved  # config from env, --set passed through


def test_shell_on_request():
    proc = entry("shell", "-c", "echo shell-ok $BADBLOCK_STAGE", env={"BADBLOCK_STAGE": "x"})
    assert proc.returncode == 0 and proc.stdout.strip() == "shell-ok x"
    proc = entry("shell", "echo", "direct")
    assert proc.stdout.strip() == "direct"
    proc = entry(env={"BADBLOCK_STAGE": "shell"}, cwd=None)
    assert proc.returncode == 0  # an interactive shell; stdin is empty so it ends at once


def test_unknown_or_missing_stage_is_a_clear_error():
    proc = entry("trian")
    assert proc.returncode == 2
    assert "unknown stage 'trian'" in proc.stderr and "train" in proc.stderr
    proc = entry(env={"BADBLOCK_STAGE": "fly"})
    assert proc.returncode == 2 and "unknown stage 'fly' in BADBLOCK_STAGE" in proc.stderr
    proc = entry()
    assert proc.returncode == 2 and "no stage" in proc.stderr


def test_bad_mounts_fail_before_the_stage(tmp_path):
    proc = entry("mask", env={"BADBLOCK_DATA": str(tmp_path / "absent")})
    assert proc.returncode == 2 and "BADBLOCK_DATA" in proc.stderr and "mounted" in proc.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = entry("mask", env={"BADBLOCK_OUTPUT": str(blocker / "out")})
    assert proc.returncode == 2 and "not a writable directory" in proc.stderr
    proc = entry("mask", env={"BADBLOCK_CONFIG": str(tmp_path / "absent.yaml")})
    assert proc.returncode == 2 and "absent.yaml" in proc.stderr


def test_home_made_writable_for_a_user_without_one(tmp_path):
    proc = entry("shell", "sh", "-c", 'echo "$HOME"; test -w "$HOME"',
                 env={"HOME": "/", "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"{tmp_path}/badblock-home-{os.getuid()}"


def image_arguments() -> list[str]:
    """What `docker run IMAGE` with no arguments hands our entrypoint: the Dockerfile's
    ENTRYPOINT after our script, then its CMD (Docker appends CMD to ENTRYPOINT)."""
    steps = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text()).splitlines()
    def exec_form(word):
        found = [line[len(word):] for line in steps if line.startswith(word + " ")]
        return json.loads(found[-1]) if found else []
    entry = exec_form("ENTRYPOINT")
    return entry[entry.index("/opt/badblock/docker/entrypoint.sh") + 1:] + exec_form("CMD")


def test_the_image_runs_the_stage_from_the_environment_alone(tmp_path):
    """docker run -e BADBLOCK_STAGE=mask IMAGE: the stage runs; a batch job that only printed
    the stage's help and exited 0 would look like success."""
    out = tmp_path / "out"
    proc = entry(*image_arguments(), env={"BADBLOCK_STAGE": "mask", "BADBLOCK_OUTPUT": str(out),
                                          "BADBLOCK_SCANNER__NAME": "mini"})
    assert proc.returncode == 0, proc.stderr
    assert "usage:" not in proc.stdout
    assert np.load(out / "mask.npy", allow_pickle=False).max() > 0


def mounted_scratch() -> Path | None:
    """A writable folder on a mount of its own (not the root file system), if there is one."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in ["/dev/shm", "/run", "/tmp"]:
        if point in points and os.access(point, os.W_OK):
            return Path(point)
    return None


def test_unmounted_output_and_data_are_refused(tmp_path):
    """With BADBLOCK_REQUIRE_MOUNTS=1 (the image's setting) folders on the root file system are
    refused (tmp_path lies there on the machines this runs on), in one line, before the stage."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    if any(p != "/" and tmp_path.resolve().is_relative_to(p) for p in points):
        pytest.skip("tmp_path is on a mount of its own here: it cannot stand for an unmounted one")
    out = tmp_path / "out"
    env = {"BADBLOCK_REQUIRE_MOUNTS": "1", "BADBLOCK_OUTPUT": str(out),
           "BADBLOCK_DATA": str(tmp_path)}
    proc = entry("mask", "--scanner", "mini", env=env)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert f"BADBLOCK_OUTPUT={out} is not on a mounted volume" in line
    assert "BADBLOCK_REQUIRE_MOUNTS=0" in line
    assert not out.exists()
    assert entry("mask", "--help", env=env).returncode == 0  # help needs no volume
    # The explicit opt-out.
    proc = entry("mask", "--scanner", "mini", env={**env, "BADBLOCK_REQUIRE_MOUNTS": "0"})
    assert proc.returncode == 0, proc.stderr
    assert (out / "mask.npy").exists()


def test_output_on_a_mount_is_accepted_and_data_stages_need_data_mounted(tmp_path):
    scratch = mounted_scratch()
    if scratch is None:
        pytest.skip("no writable mount point other than / on this machine")
    out = Path(tempfile.mkdtemp(prefix="badblock-entry-", dir=scratch))
    try:
        env = {"BADBLOCK_REQUIRE_MOUNTS": "1", "BADBLOCK_OUTPUT": str(out / "nested"),
               "BADBLOCK_DATA": str(tmp_path)}
        proc = entry("mask", "--scanner", "mini", env=env)
        assert proc.returncode == 0, proc.stderr
        assert (out / "nested" / "mask.npy").exists()
        for stage in ["preprocess", "repair", "evaluate"]:
            proc = entry(stage, env=env)
            assert proc.returncode == 2
            assert f"BADBLOCK_DATA={tmp_path} is not on a mounted volume" in proc.stderr
    finally:
        shutil.rmtree(out)
