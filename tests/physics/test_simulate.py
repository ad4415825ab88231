"""`badblock simulate`: files, counts, TOF order, seeds, bad activity files, no partial output."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from badblock.config import RESOLVED_NAME, load_config
from badblock.errors import BadInputError
from badblock.io import read_scan, tof_time_order
from badblock.physics.mask import dead_block_mask, real_lor_count
from badblock.physics.scanners import get_scanner
from badblock.physics.simulate import simulate

ROOT = Path(__file__).resolve().parents[2]
FAST = ["simulate.step_mm=9", "simulate.counts=50000"]  # coarse sampling: tests, not physics


def cfg(*overrides):
    return load_config(None, [*FAST, *overrides])


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and p.name != RESOLVED_NAME}


def test_writes_scans_truth_record_and_config(tmp_path):
    out = simulate(cfg("simulate.scans=2", "simulate.seed=3"), tmp_path / "sim")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([RESOLVED_NAME, "simulation.json", "scan_000.hs", "scan_000.s",
                            "scan_000.truth.hs", "scan_000.truth.s", "scan_000.mu.npy",
                            "scan_001.hs", "scan_001.s", "scan_001.truth.hs", "scan_001.truth.s",
                            "scan_001.mu.npy"])
    # the attenuation map the model-based fill needs: water inside the body, on the image grid
    from badblock.physics.projector import scanner_grid

    mu = np.load(out / "scan_000.mu.npy", allow_pickle=False)
    assert mu.shape == scanner_grid(get_scanner("mini")).shape and mu.dtype == np.float32
    assert mu.min() == 0.0 and mu.max() == pytest.approx(0.0096) and (mu > 0).mean() > 0.05
    mini = get_scanner("mini")
    scan, truth = read_scan(out / "scan_000.hs"), read_scan(out / "scan_000.truth.hs")
    assert scan.shape == truth.shape == mini.shape
    assert scan.header.dtype == np.dtype("<u2") and truth.header.dtype == np.dtype("<f4")
    assert [s.n_planes for s in scan.header.segments] == [s.n_planes for s in mini.segments]
    t = np.asarray(truth.data, np.float64)
    assert t.sum() == pytest.approx(50000, rel=1e-5)
    counts = int(np.asarray(scan.data, np.int64).sum())
    assert abs(counts - 50000) < 5 * np.sqrt(50000)
    record = json.loads((out / "simulation.json").read_text())
    assert record["seed"] == 3 and record["scanner"] == "mini" and record["counts"] == 50000
    assert record["scans"][1]["scan"] == "scan_001.hs"
    assert record["scans"][0]["noise"]["counts"] == counts
    assert record["scans"][0]["phantom"]["shapes"][0]["name"] == "body"
    assert record["scans"][0]["phantom"] != record["scans"][1]["phantom"]
    assert "simulate:" in (out / RESOLVED_NAME).read_text()
    # Bins whose LORs all touch a gap crystal hold no real LOR: exactly zero.
    no_lor = real_lor_count(mini) == 0
    assert no_lor.sum() > 1000
    assert (t >= 0).all() and t[:, no_lor].max() == 0 and t[:, ~no_lor].max() > 0


def test_counts_range_gives_each_scan_its_own_dose(tmp_path):
    out = simulate(cfg("simulate.scans=3", "simulate.counts_range=[0.5,4.0]"), tmp_path / "sim")
    record = json.loads((out / "simulation.json").read_text())
    got = [float(np.asarray(read_scan(out / f"scan_00{i}.truth.hs").data, np.float64).sum())
           for i in range(3)]
    assert [r["expected_counts"] for r in record["scans"]] == pytest.approx(got, rel=1e-5)
    assert all(0.5 * 50000 <= g <= 4.0 * 50000 for g in got) and len(set(got)) == 3
    assert record["counts_range"] == [0.5, 4.0]
    # stratified: one scan in each third of the log range (3 independent draws would fall in
    # the same third 1 time in 9)
    strata = sorted(int(3 * math.log(g / (0.5 * 50000)) / math.log(8.0)) for g in got)
    assert strata == [0, 1, 2]
    with pytest.raises(BadInputError, match="counts_range"):
        simulate(cfg("simulate.counts_range=[2.0,1.0]"), tmp_path / "bad")


def test_counts_scale_the_truth_exactly(tmp_path):
    a = simulate(cfg("simulate.scans=1", "simulate.counts=1000"), tmp_path / "a")
    b = simulate(cfg("simulate.scans=1", "simulate.counts=3000"), tmp_path / "b")
    ta = np.asarray(read_scan(a / "scan_000.truth.hs").data)
    tb = np.asarray(read_scan(b / "scan_000.truth.hs").data)
    np.testing.assert_allclose(tb, 3 * ta, rtol=1e-5, atol=1e-9)


def test_same_seed_gives_identical_files_other_seed_differs(tmp_path):
    a = simulate(cfg("simulate.scans=2", "simulate.seed=7"), tmp_path / "a")
    b = simulate(cfg("simulate.scans=2", "simulate.seed=7"), tmp_path / "b")
    c = simulate(cfg("simulate.scans=2", "simulate.seed=8"), tmp_path / "c")
    fa, fb, fc = files(a), files(b), files(c)
    assert fa == fb
    assert fa["scan_000.s"] != fc["scan_000.s"]
    # Scan i depends only on (seed, i): a shorter run reproduces the first scan of a longer one.
    d = simulate(cfg("simulate.scans=1", "simulate.seed=7"), tmp_path / "d")
    assert files(d)["scan_000.s"] == fa["scan_000.s"]


def test_formats_store_the_same_counts_in_their_own_tof_order(tmp_path):
    inter = simulate(cfg("simulate.scans=1"), tmp_path / "i")
    e7 = simulate(cfg("simulate.scans=1", "simulate.format=e7"), tmp_path / "e")
    flat = simulate(cfg("simulate.scans=1", "simulate.format=flat"), tmp_path / "f")
    assert (e7 / "scan_000.s.hdr").exists() and (e7 / "scan_000.truth.s.hdr").exists()
    assert (flat / "scan_000.s").exists() and (flat / "scan_000.truth.s").exists()
    scans = [read_scan(inter / "scan_000.hs"), read_scan(e7 / "scan_000.s.hdr"),
             read_scan(flat / "scan_000.s")]
    assert [s.header.tof_order for s in scans] == ["linear", "siemens", "siemens"]
    timed = [np.asarray(s.data)[tof_time_order(3, s.header.tof_order)] for s in scans]
    np.testing.assert_array_equal(timed[0], timed[1])
    np.testing.assert_array_equal(timed[0], timed[2])
    truth = np.asarray(read_scan(inter / "scan_000.truth.hs").data)
    # Siemens centre-first: the stored first bin is the centre (linear index 1).
    np.testing.assert_array_equal(np.asarray(read_scan(e7 / "scan_000.truth.s.hdr").data)[0],
                                  truth[1])


def test_non_tof_scanner_writes_one_tof_bin(tmp_path):
    mini = get_scanner("mini", n_tof=1, tof_fwhm_ps=0.0, tof_bin_ps=0.0, tof_order="none")
    out = simulate(cfg("simulate.scans=1", "simulate.format=e7"), tmp_path / "s", scanner=mini)
    scan = read_scan(out / "scan_000.s.hdr")
    assert scan.shape == (1, mini.n_planes, mini.n_views, mini.n_bins)
    assert np.asarray(read_scan(out / "scan_000.truth.s.hdr").data).sum() == pytest.approx(5e4)


def test_uint16_overflow_is_clipped_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="badblock.simulate"):
        out = simulate(cfg("simulate.scans=1", "simulate.counts=1.0e+10"), tmp_path / "s")
    data = np.asarray(read_scan(out / "scan_000.hs").data)
    assert data.max() == 65535
    assert "clipped" in caplog.text
    record = json.loads((out / "simulation.json").read_text())
    assert record["scans"][0]["noise"]["clipped_bins"] > 0


def test_user_activity_volume(tmp_path):
    vol = np.zeros((23, 60, 60), np.float32)
    vol[5:18, 20:40, 25:35] = 1.0
    path = tmp_path / "act.npy"
    np.save(path, vol)
    out = simulate(cfg("simulate.scans=2", f"simulate.activity={path}", "simulate.phantom=file"),
                   tmp_path / "s")
    record = json.loads((out / "simulation.json").read_text())
    assert record["scans"][0]["phantom"] == {"file": str(path), "shape": [23, 60, 60]}
    t0 = np.asarray(read_scan(out / "scan_000.truth.hs").data)
    t1 = np.asarray(read_scan(out / "scan_001.truth.hs").data)
    np.testing.assert_array_equal(t0, t1)  # same activity, different noise
    assert files(out)["scan_000.s"] != files(out)["scan_001.s"]


def test_dead_blocks_write_a_damaged_copy_matching_the_mask_in_expectation(tmp_path):
    out = simulate(cfg("simulate.scans=1", "simulate.dead_blocks=['3:1']",
                       "simulate.attenuation=false"), tmp_path / "s")
    full = np.asarray(read_scan(out / "scan_000.truth.hs").data, np.float64)
    dmg = np.asarray(read_scan(out / "damaged" / "scan_000.truth.hs").data, np.float64)
    assert (out / "damaged" / "scan_000.hs").exists()
    mask = dead_block_mask("mini", "3:1")
    assert dmg[:, mask == 1].max() == 0
    np.testing.assert_allclose(dmg[:, mask == 0], full[:, mask == 0], rtol=1e-5)
    hit = (mask > 0) & (mask < 1)
    thinned = (1 - mask) * full
    # Binomial thinning by the mask vs LOR-level damage: equal up to the activity variation
    # among the LORs of one bin (a random phantom with lesions, so loosely).
    assert abs(dmg[:, hit].sum() / thinned[:, hit].sum() - 1) < 0.1


def test_existing_output_is_refused_unless_forced(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BadInputError, match="already exists"):
        simulate(cfg("simulate.scans=1"), out)
    assert (out / "keep.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    simulate(cfg("simulate.scans=1"), empty)
    assert (empty / "scan_000.hs").exists()


def test_failure_mid_run_leaves_no_partial_output(tmp_path):
    # Activity only in the corners of a huge volume: cropped away, it projects to zero; the
    # error comes after the first truth file was opened and partly written.
    vol = np.zeros((23, 400, 400), np.float32)
    vol[:, :5, :5] = 1.0
    path = tmp_path / "corner.npy"
    np.save(path, vol)
    with pytest.raises(BadInputError, match="projects to zero"):
        simulate(cfg("simulate.scans=2", f"simulate.activity={path}"), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corner.npy"]


def test_fast_projector_agrees_with_exact_and_thins_the_damaged_copy(tmp_path):
    common = ["simulate.scans=1", "simulate.dead_blocks=['3:1']", "simulate.step_mm=0"]
    exact = simulate(cfg(*common, "simulate.projector=exact"), tmp_path / "e")
    fast = simulate(cfg(*common, "simulate.projector=fast"), tmp_path / "f")
    te = np.asarray(read_scan(exact / "scan_000.truth.hs").data, np.float64)
    tf = np.asarray(read_scan(fast / "scan_000.truth.hs").data, np.float64)
    # Both scaled to the same expected counts; on mini the fast one runs the exact geometry.
    assert np.abs(tf - te).sum() / te.sum() < 5e-3
    dmg = np.asarray(read_scan(fast / "damaged" / "scan_000.truth.hs").data, np.float64)
    mask = dead_block_mask("mini", "3:1")
    np.testing.assert_allclose(dmg, tf * (1 - mask), rtol=1e-6, atol=1e-9)
    rec_e = json.loads((exact / "simulation.json").read_text())
    rec_f = json.loads((fast / "simulation.json").read_text())
    assert rec_e["projector"] == "exact" and rec_e["damage_model"].startswith("LOR level")
    assert rec_f["projector"] == "fast" and rec_f["damage_model"].startswith("binomial")
    # the same seed draws the same noise from (nearly) the same expectation
    assert abs(rec_f["scans"][0]["noise"]["counts"] - rec_e["scans"][0]["noise"]["counts"]) \
        < 0.01 * rec_e["scans"][0]["noise"]["counts"]


def test_activity_families_are_simulated_from_the_seed(tmp_path):
    """simulate.phantom picks a family of physics.families; its phantoms are the family's own
    draws from the scan's seed, and the projection of a phantom made here independently
    matches the stored truth up to the count scale."""
    from badblock.physics.families import make
    from badblock.physics.projector import project, scanner_geometry

    params = {"n_vessels": 3, "radius_mm": 4.0}
    out = simulate(cfg("simulate.scans=1", "simulate.seed=5", "simulate.phantom=vessels",
                       f"simulate.phantom_params={json.dumps(params)}"), tmp_path / "sim")
    record = json.loads((out / "simulation.json").read_text())["scans"][0]["phantom"]
    assert record["family"] == "vessels" and record["params"] == params
    geom = scanner_geometry(get_scanner("mini"))
    act, mu = make("vessels", geom.grid, np.random.default_rng(np.random.SeedSequence([5, 0, 0])),
                   geom.fov_radius_mm, **params)
    want, _ = project(geom, act, mu, step_mm=9.0)
    scan = read_scan(out / "scan_000.truth.hs")
    truth = np.asarray(scan.data, np.float64)[tof_time_order(3, scan.header.tof_order)]
    assert np.allclose(truth * (want.sum() / truth.sum()), want, rtol=1e-4,
                       atol=1e-6 * want.max())


def test_a_list_of_families_mixes_them_in_equal_shares_over_the_dose_range(tmp_path):
    """simulate.phantom as a list: each family gets an equal share of the scans, each share
    spread over the whole dose range (sorted by dose, the families take turns), and scan i is
    the very phantom a one-family run of its family draws for scan i."""
    from badblock.physics.simulate import scan_counts, scan_families

    names = ["random", "textured", "lesions"]
    many = cfg("simulate.scans=11", "simulate.seed=2", "simulate.counts_range=[0.25,10.0]",
               "simulate.phantom=random,textured,lesions")
    fam = scan_families(many.simulate, 11)
    assert sorted(fam.count(n) for n in names) == [3, 4, 4]
    by_dose = sorted(range(11), key=lambda i: scan_counts(many.simulate, i))
    assert [fam[i] for i in by_dose] == [names[j % 3] for j in range(11)]

    params = {"textured": {"contrast": 0.3}}
    mixed = cfg("simulate.scans=3", "simulate.seed=4", "simulate.phantom=textured,lesions",
                f"simulate.phantom_params={json.dumps(params)}")
    out = simulate(mixed, tmp_path / "mixed")
    record = json.loads((out / "simulation.json").read_text())["scans"]
    fams = [r["phantom"]["family"] for r in record]
    assert fams == scan_families(mixed.simulate, 3) and set(fams) == {"textured", "lesions"}
    i = fams.index("textured")
    assert record[i]["phantom"]["contrast"] == 0.3
    one = simulate(cfg("simulate.scans=3", "simulate.seed=4", "simulate.phantom=textured",
                       "simulate.phantom_params={contrast: 0.3}"), tmp_path / "one")
    name = f"scan_{i:03d}.truth.s"
    assert (out / name).read_bytes() == (one / name).read_bytes()


@pytest.mark.parametrize("phantom, params, problem", [
    ("random,file", "{}", "at most once and not 'file'"),
    ("lesions,lesions", "{}", "at most once"),
    ("random,lesions", "{vessels: {}}", "maps a family of simulate.phantom"),
    ("random,lesions", "{lesions: {radius: 2}}", "family 'lesions' has no parameter 'radius'"),
])
def test_a_bad_list_of_families_is_refused_before_any_output(tmp_path, phantom, params, problem):
    with pytest.raises(BadInputError, match=problem):
        simulate(cfg(f"simulate.phantom={phantom}", f"simulate.phantom_params={params}"),
                 tmp_path / "sim")
    assert not (tmp_path / "sim").exists()


def test_bad_family_parameters_are_refused_before_any_output(tmp_path):
    with pytest.raises(BadInputError, match="simulate.phantom_params: family 'lesions' has no "
                                            "parameter 'radius'"):
        simulate(cfg("simulate.phantom=lesions", "simulate.phantom_params={radius: 2}"),
                 tmp_path / "sim")
    with pytest.raises(BadInputError, match="simulate.phantom_params: parameters are for a "
                                            "phantom family"):
        simulate(cfg("simulate.phantom=file", "simulate.activity=x.npy",
                     "simulate.phantom_params={radius: 2}"), tmp_path / "sim2")
    assert not (tmp_path / "sim").exists() and not (tmp_path / "sim2").exists()
