"""The project's local Slurm cluster (tests/cluster/slurm-local.sh) for the cluster tests.

Without a cluster the Slurm tests skip with the reason; CI starts one and sets
BADBLOCK_REQUIRE_SLURM=1, which turns a missing cluster into a failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Read at import: the autouse fixture in tests/conftest.py clears BADBLOCK_* before each test.
REQUIRE_SLURM = os.environ.get("BADBLOCK_REQUIRE_SLURM") == "1"
SLURM_DIR = Path(os.environ.get("BADBLOCK_SLURM_DIR", "/tmp/badblock-slurm"))
SLURM_CONF = Path(os.environ.get("SLURM_CONF") or SLURM_DIR / "etc" / "slurm.conf")
START = "tests/cluster/slurm-local.sh start"
DONE_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
               "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def slurm_env(locate: bool = True, **extra: str) -> dict[str, str]:
    """The environment for Slurm commands and jobs, one thread. ``locate``: name this checkout
    and this Python (BADBLOCK_REPO, BADBLOCK_PYTHON, PATH); without it the templates must find
    them themselves, and this Python's folder is not on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BADBLOCK_", "SLURM_", "MASTER_", "RANK", "WORLD_SIZE"))}
    env.update(SLURM_CONF=str(SLURM_CONF), BADBLOCK_PROGRESS="0", OMP_NUM_THREADS="1",
               BADBLOCK_RUN__THREADS="1")
    bin_dir = str(Path(sys.executable).parent)
    if locate:
        env.update(PATH=f"{bin_dir}:{env['PATH']}", BADBLOCK_PYTHON=sys.executable,
                   BADBLOCK_REPO=str(ROOT))
    else:
        env["PATH"] = ":".join(p for p in env["PATH"].split(":") if p != bin_dir)
    env.update(extra)
    return env


def _cluster_problem() -> str | None:
    if not SLURM_CONF.exists():
        return f"no local Slurm cluster ({SLURM_CONF} missing; start: {START})"
    try:
        subprocess.run(["scontrol", "ping"], env=slurm_env(), check=True, capture_output=True,
                       timeout=20)
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=slurm_env(), check=True,
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"local Slurm cluster not answering ({exc}); start: {START}"
    if not any(state.strip("*~#") in {"idle", "mixed", "allocated"} for state in out.split()):
        return f"local Slurm node not usable: {out.strip()!r}"
    return None


@pytest.fixture(scope="session")
def slurm() -> dict[str, str]:
    """Skip (fail in CI) unless the local cluster is up; the base environment for Slurm calls."""
    problem = _cluster_problem()
    if problem:
        if REQUIRE_SLURM:
            pytest.fail(problem + " (BADBLOCK_REQUIRE_SLURM=1)")
        pytest.skip(problem)
    return slurm_env()


def sbatch(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(["sbatch", "--parsable", *args], env=env, capture_output=True, text=True,
                          cwd=cwd, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job_state(env: dict[str, str], job: str) -> tuple[str, str]:
    """(state, exit code) of a job's allocation from sacct; ('', '') before it is recorded."""
    out = subprocess.run(["sacct", "-j", job, "-X", "-n", "-P", "-o", "State,ExitCode"], env=env,
                         capture_output=True, text=True, timeout=60).stdout.split()
    if not out:
        return "", ""
    state, code = out[-1].split("|")
    return state.split()[0], code


def in_queue(env: dict[str, str], job: str) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i"], env=env, capture_output=True,
                         text=True, timeout=60).stdout
    return bool(out.strip())


# Why a pending job can never start on this cluster (e.g. more CPUs than the node has).
NEVER_STARTS = {"PartitionConfig", "PartitionNodeLimit", "BadConstraints", "ReqNodeNotAvail"}


def wait_job(env: dict[str, str], job: str, timeout: float = 240) -> tuple[str, str]:
    """Wait until the job left the queue and sacct reports a final state; fail at once for a
    job that can never start."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        reason = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], env=env,
                                capture_output=True, text=True, timeout=60).stdout.split()
        if reason[:1] == ["PENDING"] and reason[1] in NEVER_STARTS:
            cpus = scontrol_job(env, job).get("NumCPUs")
            subprocess.run(["scancel", job], env=env, timeout=60)
            pytest.fail(f"job {job} can never start here: {reason[1]} ({cpus} CPUs asked)")
        if not reason:
            state, code = job_state(env, job)
            if state in DONE_STATES:
                return state, code
        time.sleep(1)
    subprocess.run(["scancel", job], env=env, timeout=60)
    pytest.fail(f"job {job} did not finish in {timeout} s: {job_state(env, job)}")


def scontrol_job(env: dict[str, str], job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True,
                         text=True, timeout=60).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def epochs_logged(run: Path) -> list[int]:
    """Epoch numbers a training run folder's log.jsonl holds, in order."""
    log = run / "log.jsonl"
    if not log.exists():
        return []
    return [json.loads(line)["epoch"] for line in log.read_text().splitlines() if line.strip()]


# The training the hand-preempted tests run (signalled as soon as its first epoch is logged, so
# it only needs epochs left after that), and its uninterrupted reference.
PREEMPT_EPOCHS = 8
_COMMON = ["--set", "data.batch_size=4", "--set", "model.width=4", "--set", "train.val_batches=1",
           "--set", "train.tensorboard=false", "--set", "run.threads=1"]
PREEMPT_ARGS = ["--epochs", str(PREEMPT_EPOCHS), *_COMMON, "--set", "data.epoch_size=256"]
# The training of the time-limit test: long enough for Slurm's time-limit signal of a --time=1
# job to land inside it (256 samples an epoch took about 40 s of steps on a CPU without bf16
# units but under 20 s on one with them, and the job then ended before any signal; 768 take
# over a minute on the faster one). Its job and its reference start before the first cluster
# test (_start_time_limit_run_early): they spend minutes waiting on Slurm's clock, which the
# other tests use.
TIME_LIMIT_EPOCHS = 14
TIME_LIMIT_ARGS = ["--epochs", str(TIME_LIMIT_EPOCHS), *_COMMON, "--set", "data.epoch_size=768"]
TIME_LIMIT_TEST = "test_time_limit_signal_preempts_and_the_job_finishes"
EPOCH_LINE = re.compile(r"^badblock train: epoch (\d+): (train \S+ +val \S+ +NRMSE .*? baseline "
                        r"\S+)", re.M)


def epoch_lines(text: str) -> list[tuple[int, str]]:
    """The trainer's per-epoch lines in a log, in order: (epoch, losses and NRMSEs). Every run
    of a requeued job appends to the same log, so a repeated epoch shows twice, a lost one not
    at all, and a resume from the wrong state changes the numbers."""
    return [(int(m.group(1)), m.group(2)) for m in EPOCH_LINE.finditer(text)]


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """A tiny training store: 2 simulated mini scans, preprocessed here (no Slurm)."""
    base = tmp_path_factory.mktemp("tiny-store")
    env = {**os.environ, "BADBLOCK_PROGRESS": "0"}
    bb = [sys.executable, "-m", "badblock"]
    subprocess.run([*bb, "simulate", "--scans", "2", "--counts", "2e5", "-o", str(base / "sim")],
                   env=env, check=True, capture_output=True, timeout=300)
    subprocess.run([*bb, "preprocess", str(base / "sim"), "-o", str(base)], env=env, check=True,
                   capture_output=True, timeout=300)
    # the demo preset's network corrects the model-based fill: its fills, one draw per scan
    subprocess.run([*bb, "fills", "--config", "demo", "-o", str(base), "--draws", "1"], env=env,
                   check=True, capture_output=True, timeout=300)
    return base / "store"


def fills_of(store: Path) -> str:
    """``data.fills=`` the fill folder ``tiny_store`` made beside the store."""
    return f"data.fills={store.parent / 'fills'}"


def _start_reference(store: Path, out: Path, args: list[str]) -> subprocess.Popen:
    """``badblock train`` with ``args`` on ``store``, uninterrupted, here (not under Slurm);
    its stderr goes to ``out/stderr.txt``."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BADBLOCK_", "SLURM_"))}
    env.update(BADBLOCK_PROGRESS="0", OMP_NUM_THREADS="1")
    with open(out / "stderr.txt", "wb") as err:
        return subprocess.Popen([sys.executable, "-m", "badblock", "train", "--config", "demo",
                                 "-o", str(out), *args, "--set", f"data.store={store}",
                                 "--set", fills_of(store)],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)


def _reference_lines(proc: subprocess.Popen, out: Path, epochs: int) -> list[tuple[int, str]]:
    """The per-epoch lines of a reference run started by :func:`_start_reference`."""
    code = proc.wait(timeout=900)
    text = (out / "stderr.txt").read_text()
    assert code == 0, text[-3000:]
    lines = epoch_lines(text)
    assert [e for e, _ in lines] == list(range(1, epochs + 1))
    return lines


@pytest.fixture(scope="session")
def reference_epochs(tiny_store, tmp_path_factory) -> list[tuple[int, str]]:
    """The per-epoch lines of PREEMPT_ARGS's training run here, uninterrupted."""
    out = tmp_path_factory.mktemp("reference")
    return _reference_lines(_start_reference(tiny_store, out, PREEMPT_ARGS), out, PREEMPT_EPOCHS)


@pytest.fixture(scope="session")
def time_limit_run(tiny_store, tmp_path_factory):
    """The time-limit test's job, submitted now (``--time=1``, Slurm's own USR2 15 s before the
    limit), and its uninterrupted reference, started now beside it; the test waits for both.
    A job the test did not wait for is cancelled at the end of the session."""
    base = tmp_path_factory.mktemp("time-limit")
    env = slurm_env(BADBLOCK_RUNTIME="host", BADBLOCK_OUTPUT=str(base))
    batch_log = base / "batch.log"
    job = sbatch(env, "--cpus-per-task=1", f"--output={batch_log}", "--time=1",
                 "--signal=B:USR2@15", str(ROOT / "slurm/train.sbatch"), *TIME_LIMIT_ARGS,
                 "--set", f"data.store={tiny_store}", "--set", fills_of(tiny_store), cwd=base)
    ref_out = base / "reference"
    ref = _start_reference(tiny_store, ref_out, TIME_LIMIT_ARGS)
    yield {"base": base, "env": env, "job": job, "batch_log": batch_log,
           "reference": lambda: _reference_lines(ref, ref_out, TIME_LIMIT_EPOCHS)}
    if ref.poll() is None:
        ref.kill()
        ref.wait()
    if in_queue(env, job):
        subprocess.run(["scancel", job], env=env, timeout=60)


@pytest.fixture(scope="session", autouse=True)
def _start_time_limit_run_early(request):
    """Start :func:`time_limit_run` before the first cluster test when the session holds the
    time-limit test and the cluster is up (else it starts, or skips, with that test)."""
    if (any(item.name == TIME_LIMIT_TEST for item in request.session.items)
            and _cluster_problem() is None):
        request.getfixturevalue("time_limit_run")
