"""Every benchmark script runs to the end in its tiny mode, so that none rots unnoticed.

The tiny figures mean nothing (and no test looks at a timing); what is checked is that each
script still runs against today's library and writes the record its documentation promises,
with the counts that follow from its own definition of the workload (computed here by hand).
``bench/gpu.sh --cpu-dry-run`` runs the training-step, loader and repair benchmarks tiny as
parts of the GPU script, so those three are checked through it; the scripts in
:data:`TESTED_ELSEWHERE` have smoke tests of their own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
# scripts whose tiny (smoke) run has its own test, which names the script
TESTED_ELSEWHERE = {"bench_simulate.py": "tests/physics/test_bench_simulate.py",
                    "quality.py": "tests/bench/test_quality_smoke.py",
                    "quality_docs.py": "tests/bench/test_quality_smoke.py",
                    "image_ceiling.py": "tests/bench/test_quality_smoke.py",
                    "preset_sweep.py": "tests/bench/test_preset_sweep.py"}


def _env() -> dict:
    return {**os.environ, "BADBLOCK_PROGRESS": "0", "PYTHONPATH": str(ROOT),
            "OMP_WAIT_POLICY": "PASSIVE", "PYTHON": sys.executable}


def _run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=timeout)


def _gpu_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny_here(script: str, out: Path, tmp: Path) -> list[str]:
    extra = {"preprocess.py": ["--workdir", str(tmp)],
             "fill_prior.py": ["--work", str(tmp)],
             "preset_probe.py": ["--work", str(tmp), "--only", "plain", "count", "mixed",
                               "mixed_deadfill", "mixed_selfcheck", "mixed_selfcheck_z2",
                               "mixed_selfcheck_z1_deadfill",
                               "--baseline",
                               "plain"]}.get(script, [])
    return [sys.executable, str(BENCH / script), "--tiny", "--out", str(out), *extra]


TINY_HERE = ("preprocess.py", "detect.py", "projector_accuracy.py", "fill_prior.py",
             "preset_probe.py")


def test_every_bench_script_has_a_tiny_run_under_test(tmp_path):
    dry = _gpu_module().part_commands(True, tmp_path)
    in_dry_run = {Path(cmd[1]).name for cmd in dry.values()} - {"gpu.py"}
    assert in_dry_run == {"train_step.py", "loader.py", "repair.py"}
    assert all("--tiny" in cmd for cmd in dry.values() if Path(cmd[1]).name in in_dry_run)
    # a script is what can be run (the rest are its modules); gpu.py is tested below
    scripts = {p.name for p in BENCH.glob("*.py")
               if 'if __name__ == "__main__":' in p.read_text()} - {"gpu.py"}
    covered = set(TINY_HERE) | in_dry_run | set(TESTED_ELSEWHERE)
    assert scripts <= covered, f"bench scripts without a tiny run in the tests: {scripts - covered}"
    for script, test in TESTED_ELSEWHERE.items():
        assert script in (ROOT / test).read_text(), (script, test)


def test_a_tiny_run_never_replaces_the_measured_results():
    results = BENCH / "results" / "preprocess.json"
    before = results.read_bytes()
    res = _run([sys.executable, str(BENCH / "preprocess.py"), "--tiny"], timeout=120)
    assert res.returncode == 2
    assert "--tiny needs --out" in res.stderr
    assert results.read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("script", TINY_HERE)
def test_tiny_run_writes_its_record(script, tmp_path):
    out = tmp_path / ("out" if script == "preset_probe.py" else "out.json")
    work = tmp_path / "work"
    work.mkdir()
    res = _run(_tiny_here(script, out, work))
    assert res.returncode == 0, res.stderr[-3000:]
    rec = json.loads(out.read_text()) if out.is_file() else None
    if script == "preprocess.py":
        # --tiny is 0.5 % of the Vision's 815 planes: round(4.075) = 4 planes of 33 x 50 x 520
        assert rec["shape"] == [33, 4, 50, 520]
        assert rec["bytes"] == 33 * 4 * 50 * 520 * 2
        assert {"a_cp", "b_tutorial", "c_badblock"} <= set(rec["results"])
        assert set(rec["checksum_gb_per_s"]) == {"xxh3_128", "sha256", "blake2b"}
        assert list(work.iterdir()) == []  # its scan and stores are gone
    elif script == "detect.py":
        assert rec["seeds"] == [0]
        true_blocks = {"none": 0, "one": 1, "adjacent_transaxial": 2, "adjacent_axial": 2,
                       "three": 3, "crystals": 0}
        for level in ("demo", "0.1x"):
            for scenario, n in true_blocks.items():
                tally = rec["rates"][level][scenario]
                assert tally["scans"] == 1
                assert tally["true_blocks"] == n
                assert tally["true_crystals"] == (3 if scenario == "crystals" else 0)
        timing = rec["mini_timing"]
        assert timing["scan"] == [3, 57, 36, 64]
        assert set(timing) >= {"read_tof_sum", "check_mask", "detect_blocks",
                               "detect_blocks_and_crystals"}
    elif script == "fill_prior.py":
        assert rec["draws"] == 1 and set(rec["variants"]) == {"normconv", "fill"}
        # an untrained residual network returns its base: each variant's prior alone is scored
        for name, v in rec["variants"].items():
            assert v["epochs"] == 1 and 0 < v["val_truth_nrmse_prior"] < 1, name
        assert rec["variants"]["fill"]["sets"] == ["model.fill_prior=true"]
        # the fill folder: one draw per training scan, one per validation scan
        fills = json.loads((work / "fills-1" / "fills.json").read_text())
        assert {len(s["draws"]) for s in fills["scans"].values()} == {1}
    elif script == "preset_probe.py":
        import torch

        # --out is a folder: a record per variant and their summary
        recs = {n: json.loads((out / f"{n}.json").read_text())
                for n in ("plain", "count", "mixed")}
        summary = json.loads((out / "summary.json").read_text())
        for n, r in recs.items():
            # the smoke suite's one case, on one probe data set of another root seed
            assert r["seed"] == 4040 and list(r["datasets"]) == ["0"]
            scores = r["datasets"]["0"]["scores"]
            assert list(scores) == ["demo/pair_axial"] and set(scores["demo/pair_axial"]) == {
                "model", n}
            assert 0 < scores["demo/pair_axial"]["model"]["all"] < 1
            assert r["datasets"]["0"]["epochs"] == 1
            # the summary's ratio is the record's two numbers divided (one case, one set)
            cell = scores["demo/pair_axial"]
            assert summary["variants"][n]["ratio"] == pytest.approx(
                cell[n]["all"] / cell["model"]["all"])
        # all score the same fill of the same scans: the model rows agree
        for n in ("count", "mixed"):
            assert (recs["plain"]["datasets"]["0"]["scores"]["demo/pair_axial"]["model"]
                    == recs[n]["datasets"]["0"]["scores"]["demo/pair_axial"]["model"])
        # ... though each trained on the store of its data: random phantoms, or three families
        sims = {n: json.loads((work / n / "sim" / "train" / "simulation.json").read_text())
                for n in ("d0-random", "d0-mixed")}
        assert {s["phantom"]["family"] for s in sims["d0-random"]["scans"]} == {"random"}
        assert {s["phantom"]["family"] for s in sims["d0-mixed"]["scans"]} == {
            "random", "textured", "lesions"}
        assert (work / "d0-mixed" / "mixed" / "checkpoint_best.pt").exists()
        # the count variant's checkpoint has the channel: one input more than the plain one's
        data = {n: torch.load(work / "d0-random" / n / "checkpoint_best.pt",
                              weights_only=True)["data"]
                for n in ("plain", "count")}
        assert data["count"]["count_channel"] and not data["plain"]["count_channel"]
        # the output rule reuses mixed's network: fully dead bins are the fill's, the rest
        # the network's
        rule = json.loads((out / "mixed_deadfill.json").read_text())
        assert rule["network"] == "mixed" and rule["dead_weight"] == 0.0
        assert not (work / "d0-mixed" / "mixed_deadfill").exists()
        got = rule["datasets"]["0"]["scores"]["demo/pair_axial"]
        own = recs["mixed"]["datasets"]["0"]["scores"]["demo/pair_axial"]
        assert got["mixed_deadfill"]["dead"] == pytest.approx(got["model"]["dead"], rel=1e-3)
        assert got["mixed_deadfill"]["partial"] == own["mixed"]["partial"]
        # the self-check reuses the network too, with weights of its own on every scan: where
        # they are all 1 the repair is the network's, elsewhere it differs
        check = json.loads((out / "mixed_selfcheck.json").read_text())
        assert check["network"] == "mixed" and check["self_check"] is True
        assert rule["self_check"] is False
        assert not (work / "d0-mixed" / "mixed_selfcheck").exists()
        got_sc = check["datasets"]["0"]["scores"]["demo/pair_axial"]["mixed_selfcheck"]
        assert len(got_sc["weights"]) == len(got_sc["scans"])
        for w, a, b in zip(got_sc["weights"], got_sc["scans"], own["mixed"]["scans"]):
            assert set(w) == {"partial", "dead"} and all(0 <= v <= 1 for v in w.values())
            if w == {"partial": 1.0, "dead": 1.0}:
                assert a == b
            elif min(w.values()) < 0.9:  # (a weight near 1 may round to the same counts)
                assert a != b
        # z = 2 lowers each weight by two standard errors of the same self-check's estimate
        low = json.loads((out / "mixed_selfcheck_z2.json").read_text())
        got_z2 = low["datasets"]["0"]["scores"]["demo/pair_axial"]["mixed_selfcheck_z2"]
        assert low["network"] == "mixed" and low["z"] == 2.0
        assert got_z2["estimates"] == got_sc["estimates"]
        for w0, w2, e, a, b in zip(got_sc["weights"], got_z2["weights"], got_sc["estimates"],
                                   got_sc["scans"], got_z2["scans"]):
            for c in ("partial", "dead"):
                assert w0[c] == round(min(max(e["estimate"][c], 0.0), 1.0), 4)
                assert w2[c] == round(min(max(e["estimate"][c] - 2 * e["se"][c], 0.0), 1.0), 4)
                assert e["se"][c] >= 0
            if w0 == w2:
                assert a == b
        # the partial class at z = 1, the dead one at the fill: those bins are the fill's
        deadfill = json.loads((out / "mixed_selfcheck_z1_deadfill.json").read_text())
        got_df = deadfill["datasets"]["0"]["scores"]["demo/pair_axial"][
            "mixed_selfcheck_z1_deadfill"]
        assert deadfill["z"] == 1.0 and deadfill["z_dead"] == "fill"
        for w, e in zip(got_df["weights"], got_sc["estimates"]):
            assert w["dead"] == 0.0
            assert w["partial"] == round(min(max(e["estimate"]["partial"] - e["se"]["partial"],
                                                 0.0), 1.0), 4)
        for mine, fill in zip(got_df["scan_classes"], got["model"]["scan_classes"]):
            assert mine["dead"] == pytest.approx(fill["dead"], rel=1e-6)
        # the truth's weight on the real damaged bins is recorded with each estimate
        assert all(set(e["truth_weight"]) == {"partial", "dead"} for e in got_sc["estimates"])
        # its own rule picks z: cells of two scans (a suite case's), the class NRMSE their
        # mean; of those worse nowhere the lowest ratio, else the fewest cells worse
        zs = summary["self_check_z"]["mixed"]
        assert set(zs["variants"]) == {"mixed_selfcheck", "mixed_selfcheck_z2",
                                       "mixed_selfcheck_z1_deadfill"}
        per = len(got["model"]["scan_classes"]) // 4
        pairs = [[f * per + a + k for k in range(2) if a + k < per]
                 for f in range(4) for a in range(0, per, 2)]
        for n, r in (("mixed_selfcheck", got_sc), ("mixed_selfcheck_z2", got_z2),
                     ("mixed_selfcheck_z1_deadfill", got_df)):
            fill = got["model"]["scan_classes"]
            worse = sum(sum(r["scan_classes"][i][c] for i in p)
                        > sum(fill[i][c] for i in p) for p in pairs
                        for c in ("partial", "dead"))
            assert zs["variants"][n]["cells_worse"] == worse
            assert zs["variants"][n]["cells"] == len(pairs)
        key = {n: (v["cells_worse"], summary["variants"][n]["ratio"])
               for n, v in zs["variants"].items()}
        assert zs["choice"] == min(key, key=key.get)
        bias = summary["self_check_bias"]["mixed"]["dead"]["all"]
        assert bias["scans"] == len(got_sc["estimates"])
        diffs = [e["estimate"]["dead"] - e["truth_weight"]["dead"] for e in got_sc["estimates"]]
        assert bias["mean_diff"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-4)
        # every validation scan scored as each of the four families
        n_val = len(rule["datasets"]["0"]["validation_scans"])
        assert len(got["model"]["scans"]) == 4 * n_val
        assert summary["baseline"] == "plain"
        assert summary["choice"] in ("plain", "count", "mixed", "mixed_deadfill",
                                     "mixed_selfcheck")
        lo, hi = summary["variants"]["count"]["to_baseline_95"]
        assert lo <= summary["variants"]["count"]["to_baseline"] <= hi
    else:
        assert set(rec["cases"]) == {"mini", "vision-10"}
        for case in rec["cases"].values():
            assert len(case["settings"]) == 5
            for setting in case["settings"].values():
                for err in (setting["no_mu"], setting["with_mu"]):
                    assert 0 <= err["l1"] < 1 and 0 <= err["l2"] < 1


def test_gpu_script_without_a_gpu_says_so_in_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: the script would measure it")
    res = _run(["bash", str(BENCH / "gpu.sh"), "--out", str(tmp_path / "gpu.json")],
               timeout=120)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "no CUDA GPU" in res.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_gpu_dry_run_needs_an_out_file():
    res = _run(["bash", str(BENCH / "gpu.sh"), "--cpu-dry-run"], timeout=120)
    assert res.returncode == 2
    assert "--cpu-dry-run needs --out" in res.stderr


@pytest.mark.slow
def test_gpu_script_dry_run_runs_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    res = _run(["bash", str(BENCH / "gpu.sh"), "--cpu-dry-run", "--out", str(out),
                "--tmp", str(tmp_path)], timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["dry_run"] is True
    parts = rec["parts"]
    assert set(parts) == set(_gpu_module().PARTS)
    for name, part in parts.items():
        assert "error" not in part, (name, part.get("error"))
    train = parts["train_step"]["result"]["devices"]["cpu"]
    variants = [r["variant"] for r in train["runs"]]
    assert variants[:3] == ["fp32 default heap", "fp32", "cl"]
    assert parts["loader"]["result"]["command"]
    demo = parts["repair"]["result"]["networks"]["demo"]
    # block 3:1 of the mini scanner: planes of its mask with a dead bin, once per TOF bin
    from badblock.physics import dead_block_mask, get_scanner

    mask = dead_block_mask(get_scanner("mini"), "3:1")
    assert demo["images"] == 3 * int((mask.reshape(len(mask), -1) > 0).any(axis=1).sum())
    assert demo["baseline"] is None and demo["fast"]["device"] == "cpu"
    ddp = parts["ddp"]["result"]
    assert ddp["backend"] == "gloo" and ddp["processes"] == 2 and ddp["steps"] > 0
    proj = parts["projector"]["result"]
    assert proj["device"] == "cpu" and proj["sum"] > 0
    assert list(tmp_path.iterdir()) == [out]  # the parts' scans, stores and logs are gone
