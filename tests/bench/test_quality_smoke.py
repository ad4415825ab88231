"""The benchmark's smoke run (CI): one data set, one case, a few training steps, every column."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import quality_image as qi  # noqa: E402
import quality_report as qr  # noqa: E402

SINOGRAM = ["nrmse_all", "bias_all", "nrmse_partial", "bias_partial", "nrmse_dead", "bias_dead",
            "nrmse_measured", "lost_nrmse", "lost_bias", "psnr", "ssim", "fbp_nrmse"]
IMAGE = ["osem_nrmse", "osem_bias_dead", "osem_bias_background"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    out = tmp / "quality_smoke.json"
    cmd = [sys.executable, str(ROOT / "bench" / "quality.py"), "--smoke", "--work",
           str(tmp / "work"), "--out", str(out), "--figures", str(tmp), "--threads", "2"]
    # made ahead: the training and the choices, no test scan and no result
    first = subprocess.run([*cmd, "--prepare-only"], capture_output=True, text=True, cwd=tmp,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "no case scored" in first.stdout and not out.exists()
    d0 = tmp / "work" / "d0"
    assert (d0 / "choices.json").exists() and not (d0 / "cases").exists()
    assert not [p for p in (d0 / "sim").iterdir() if p.name.startswith("test-")]
    made = {p: p.stat().st_mtime_ns for p in [d0 / "choices.json", *d0.glob("train/*.pt")]}
    assert len(made) > 1
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # ... which the scoring run reuses: not trained or chosen again
    assert {p: p.stat().st_mtime_ns for p in made} == made
    return tmp, out, json.loads(out.read_text()), proc.stdout


def test_smoke_produces_every_column_for_every_method(smoke):
    tmp, out, result, stdout = smoke
    assert len(result["cases"]) == 1 and len(result["datasets"]) == 1
    case = result["cases"][0]
    # repair's self-check ran on every scan (the suite names the blocks, as a user would)
    assert len(case["self_check"]) == len(case["scans"])
    assert all(c["ran"] and 0 <= min(c["weights"].values()) <= 1 for c in case["self_check"])
    methods = case["methods"]
    suite = result["suite"]
    rows = [*suite["baselines"], "unet", "normconv, all bins (not data-consistent)",
            "complete scan (reference)", "truth-filled (reference)"]
    assert list(methods)[:len(rows)] == rows
    no_image = (*qi.SKIP_ROWS, "normconv, all bins (not data-consistent)")
    for m in rows:
        for key in SINOGRAM + IMAGE:
            assert key in methods[m], (m, key)  # one set of columns for every row
            if key in IMAGE and m in no_image:
                assert methods[m][key] is None, (m, key)  # not reconstructed: no fill of dead bins
            else:
                assert methods[m][key] is not None, (m, key)
    # The image-only row: the null comparator, OSEM of the damaged scan with the gaps modelled.
    assert all(methods[qr.IMAGE_CLASSICAL][k] is not None for k in IMAGE)
    assert all(methods[qr.IMAGE_CLASSICAL][k] is None for k in SINOGRAM)
    # Every aggregate column and the figures exist.
    for key, _ in qr.RATIO_METRICS:
        assert "unet" in result["aggregate"]["ratio"][key]
    assert (tmp / "quality_smoke_bars.png").stat().st_size > 1000
    assert (tmp / "quality_smoke_panel.png").stat().st_size > 1000
    assert "damaged bins NRMSE" in stdout and "wall time" in stdout


def test_smoke_makes_no_choice_on_test_data(smoke):
    tmp, out, result, _ = smoke
    from badblock.data.store import Store

    store = Store.open(tmp / "work" / "d0" / "store", check_sources=False)
    choices = json.loads((tmp / "work" / "d0" / "choices.json").read_text())
    assert choices["validation_ids"] == [s.id for s in store.split("val")]
    sims = {p.parent.name: json.loads(p.read_text())
            for p in (tmp / "work" / "d0" / "sim").glob("*/simulation.json")}
    train = sims["train"]
    tests = [v for k, v in sims.items() if k.startswith("test-")]
    assert tests and all(t["seed"] != train["seed"] for t in tests)


def test_docs_page_is_generated_from_the_json(smoke, tmp_path):
    tmp, out, result, _ = smoke
    page = tmp_path / "quality.md"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "quality_docs.py"), "--json",
                           str(out), "--out", str(page)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    unet = result["aggregate"]["ratio"]["nrmse_all"]["unet"]["gmean"]
    assert f"{unet:.3f}" in text and "python bench/quality.py --smoke" in text


def test_image_ceiling_remakes_the_scorings_rows_and_fills_with_the_truth(smoke, tmp_path):
    """bench/image_ceiling.py on the smoke scoring: every classical image it makes again is the
    scoring's bit for bit (same scan, damage, fills and OSEM), and its truth-filled row is the
    scoring's own; the page quotes it."""
    tmp, out, result, _ = smoke
    ceiling = tmp_path / "ceiling.json"
    cmd = [sys.executable, str(ROOT / "bench" / "image_ceiling.py"), "--scoring", str(out),
           "--work", str(tmp_path / "work"), "--out", str(ceiling)]
    refused = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert refused.returncode == 2 and "add --smoke" in refused.stderr
    proc = subprocess.run([*cmd, "--smoke"], capture_output=True, text=True, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(ceiling.read_text())
    assert got["classical_rows_agree_within"] == 0.0
    theirs = result["cases"][0]["methods"]["truth-filled (reference)"]
    mine = got["cases"][0]["methods"]["truth-filled (reference)"]
    assert mine["osem_nrmse"] == theirs["osem_nrmse"]
    assert set(got["summary"]) >= {"truth-filled (reference)", "unet",
                                   "truth on fully dead bins, model fill elsewhere"}
    # the scoring's repaired scan, read back, reconstructs to the scoring's own unet image
    # (checked within classical_rows_agree_within), and splits by bin class
    split = {"unet on partly damaged bins, model fill on fully dead",
             "unet on fully dead bins, model fill on partly damaged"}
    assert split <= set(got["cases"][0]["methods"]) and split <= set(got["summary"])
    assert "no repaired scan" not in proc.stderr
    # On fully dead bins the truth-filled value is the truth rounded (nothing survived): its
    # error t (over the fill's) is the rounding alone. A fill moved a of the way there keeps
    # (1 - a) of the fill's error plus a rounding of about the same size, independent of it,
    # so its error is close to sqrt((1 - a)^2 + t^2) of the fill's.
    t = got["summary"]["truth-filled (reference)"]["dead_over_model_gmean"]
    assert 0 < t < 1
    for a in (0.25, 0.5, 0.75):
        row = got["summary"][f"fully dead bins {a:.0%} of the way from the model fill to the truth"]
        assert abs(row["dead_over_model_gmean"] - ((1 - a) ** 2 + t ** 2) ** 0.5) < 0.03, (a, t)
    page = tmp_path / "quality.md"
    subprocess.run([sys.executable, str(ROOT / "bench" / "quality_docs.py"), "--json",
                    str(out), "--out", str(page)], check=True, capture_output=True)
    # quality_docs reads image_ceiling.json beside the scoring's JSON
    assert "What any fill can do" not in page.read_text()
    ceiling.rename(out.with_name("image_ceiling.json"))
    subprocess.run([sys.executable, str(ROOT / "bench" / "quality_docs.py"), "--json",
                    str(out), "--out", str(page)], check=True, capture_output=True)
    assert "What any fill can do in the image" in page.read_text()
