"""badblock evaluate: arrays, files, and the command line on the mini scanner."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from badblock.errors import BadInputError
from badblock.evaluate import (
    EvalCase,
    evaluate,
    evaluate_files,
    format_table,
    thin_scan,
    truth_path,
    write_damaged,
)
from badblock.io import ScanHeader, read_scan, write_scan
from badblock.physics import dead_block_mask, get_scanner

SCANNER = get_scanner("mini")


def blob_truth(seed: int, level: float = 40.0) -> np.ndarray:
    """Noiseless sinograms of a few Gaussian blobs: float32 ``[T, P, V, B]`` of the mini scanner.

    Bin ``b`` sits at s = b - B/2, so p(theta + pi, s) = p(theta, -s) holds with the preset's
    radial flip, as in real data."""
    rng = np.random.default_rng(seed)
    n_tof, n_planes, n_views, n_bins = SCANNER.shape
    theta = np.arange(n_views) * np.pi / n_views
    s = np.arange(n_bins) - n_bins / 2
    out = np.zeros(SCANNER.shape, np.float32)
    for _ in range(3):
        x0, y0 = rng.uniform(-15, 15, 2)
        amp = rng.uniform(0.5, 1.0) * level
        s0 = x0 * np.cos(theta) + y0 * np.sin(theta)
        plane = amp * np.exp(-((s[None] - s0[:, None]) ** 2) / (2 * 4.0 ** 2))
        axial = np.exp(-((np.arange(n_planes) - rng.uniform(10, 45)) ** 2) / 400.0)
        out += axial[None, :, None, None] * plane[None, None]
    tof_weight = np.array([0.5, 0.25, 0.25], np.float32)[:, None, None, None]
    return out * tof_weight + 1.0


def write_sim(folder, name: str, seed: int):
    """A simulated-looking scan on disk: prompts (uint16 Interfile) + float32 truth sidecar."""
    truth = blob_truth(seed)
    prompts = np.random.default_rng(seed + 100).poisson(truth).astype(np.uint16)
    header = ScanHeader(format="interfile", shape=SCANNER.shape, dtype=np.dtype("<u2"),
                        data_file=folder / f"{name}.s", segments=SCANNER.segments,
                        tof_order="linear", scanner="mini")
    path = write_scan(folder / f"{name}.hs", prompts, header)
    write_scan(folder / f"{name}.truth.hs", truth, header)
    return path, prompts, truth


@pytest.fixture(scope="module")
def mask():
    return dead_block_mask(SCANNER, "3:1")


def test_evaluate_arrays_scores_and_outputs(tmp_path, mask):
    truth = blob_truth(0)
    rng = np.random.default_rng(1)
    measured = rng.poisson(truth).astype(np.uint16)
    damaged = thin_scan(measured, mask, rng)
    assert damaged.dtype == np.uint16 and np.all(damaged[:, mask >= 1] == 0)
    case = EvalCase("s0", damaged, measured, truth, {"oracle": truth})
    res = evaluate([case], mask, tmp_path, widths=(1.0, 1.0, 1.5), segments=SCANNER.segments,
                   tof_order="siemens")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["methods"] == ["none", "divide", "interp", "biharmonic", "normconv", "model",
                                "oracle"]
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = res["mean"]
    # every method is put on equal terms: damaged bins filled, rounded as the scan is stored,
    # every other bin as measured -- so the oracle's error is its rounding alone ...
    sel = np.broadcast_to(mask > 0, truth.shape)
    err = np.rint(truth[sel]) - truth[sel]
    rounding = np.sqrt((err ** 2).sum() / (truth[sel] ** 2).sum())
    assert m["oracle"]["truth"]["nrmse"] == pytest.approx(rounding, rel=1e-6)
    # ... and no method's image gains from smoothing the bins it did not repair
    assert all(m[k]["image_truth"]["nrmse"] >= m["oracle"]["image_truth"]["nrmse"]
               for k in saved["methods"])
    assert m["none"]["image_measured"]["nrmse"] > m["interp"]["image_measured"]["nrmse"] > 0
    # no correction loses about the mean lost fraction of the counts of damaged bins
    assert m["none"]["truth"]["bias"] < -0.2
    # divide is unbiased on partly damaged bins; filling the dead ones brings the sum back
    assert m["interp"]["truth"]["nrmse"] < m["divide"]["truth"]["nrmse"] < m["none"]["truth"][
        "nrmse"]
    assert abs(m["interp"]["truth"]["bias"]) < 0.1
    # normconv denoises: closer to the noiseless truth than to the noisy measurement
    assert m["normconv"]["truth"]["nrmse"] < m["normconv"]["measured"]["nrmse"]
    assert m["normconv"]["truth"]["nrmse"] < m["interp"]["truth"]["nrmse"]
    assert res["normconv_widths"]["source"] == "given"
    assert res["fbp_planes"] and all(p < SCANNER.segments[0].n_planes for p in res["fbp_planes"])
    table = format_table(res)
    assert "oracle" in table and "NRMSE/truth" in table and "img/meas" in table


def test_evaluate_rejects_mismatched_shapes(tmp_path, mask):
    truth = blob_truth(0)
    case = EvalCase("bad", truth[:, :, :, :-1], truth=truth[:, :, :, :-1])
    with pytest.raises(BadInputError, match="does not match the mask"):
        evaluate([case], mask, tmp_path)
    with pytest.raises(BadInputError, match="needs a truth"):
        evaluate([EvalCase("x", truth)], mask, tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_evaluate_files_tunes_on_validation_scans(tmp_path, mask):
    test_path, _, _ = write_sim(tmp_path, "scan_000", 0)
    val_path, _, _ = write_sim(tmp_path, "scan_001", 1)
    assert truth_path(test_path) == tmp_path / "scan_000.truth.hs"
    damaged = write_damaged([test_path], mask, tmp_path / "damaged", seed=3)
    res = evaluate_files([test_path], mask, tmp_path / "ev", damaged=damaged,
                         repaired={"copy": damaged}, tune=[val_path],
                         baselines=["none", "normconv"])
    assert res["normconv_widths"]["source"].startswith("tuned on 1")
    assert res["inputs"]["truth"] == [str(tmp_path / "scan_000.truth.hs")]
    # a "repair" that is the damaged scan itself scores exactly like no correction
    assert res["mean"]["copy"]["truth"] == res["mean"]["none"]["truth"]
    with pytest.raises(BadInputError, match="same order"):
        evaluate_files([test_path], mask, tmp_path / "ev2", damaged=damaged * 2)


def test_cli_evaluate(tmp_path, mask):
    path, _, _ = write_sim(tmp_path, "scan_000", 0)
    np.save(tmp_path / "mask.npy", mask)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "badblock", "evaluate", str(path), "--mask",
           str(tmp_path / "mask.npy"), "--widths", "1,1,1.5", "--baselines",
           "none,divide,interp,normconv", "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "interp" in res.stdout and "NRMSE/truth" in res.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"] == ["none", "divide", "interp", "normconv"]
    assert (out / "config.resolved.yaml").exists() and (out / "report.png").exists()
    assert read_scan(path).header.segments == SCANNER.segments

    bad = tmp_path / "bad.npy"
    np.save(bad, mask[:, :, :-1])
    res = subprocess.run(cmd[:5] + [str(path), "--mask", str(bad), "-o", str(tmp_path / "o2")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "does not match the mask" in res.stderr
    assert not (tmp_path / "o2" / "metrics.json").exists()
