"""The benchmark's protocol: choices see the store's validation scans and nothing else."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import quality_cases as qc  # noqa: E402
import quality_data as qd  # noqa: E402
import quality_suite as qs  # noqa: E402


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 4-scan training simulation of data set 0 and its store (1 validation scan)."""
    from badblock.data.preprocess import preprocess
    from badblock.demo import scan_headers

    work = tmp_path_factory.mktemp("work")
    suite = dataclasses.replace(qs.load_suite(), train_scans=4, datasets=1)
    seed = qs.seeds_for(suite, "train", 0)
    cfg = qd._config(suite, work / "d0", seed)
    sim = qd.simulate_folder(cfg, work / "d0" / "sim" / "train", scans=4,
                             counts=cfg.simulate.counts, seed=seed)
    cfg.preprocess.inputs = [str(p) for p in scan_headers(sim)]
    store = preprocess(cfg, force=True)
    return suite, cfg, work, sim, store


def test_validation_scans_are_the_stores_held_out_split(small):
    suite, cfg, work, sim, store = small
    v = qd.ValidationScans.from_store(0, store.store, sim)
    assert list(v.ids) == list(store.val) and len(v.ids) == 1
    assert not set(v.ids) & set(store.train)
    from badblock.io.naming import scan_id

    assert [scan_id(p) for p in v.paths()] == list(store.val)


def test_validation_pairs_are_validation_phantoms_at_each_level(small):
    from badblock.io import read_scan

    suite, cfg, work, sim, store = small
    v = qd.ValidationScans.from_store(0, store.store, sim)
    pairs = qd.validation_pairs(v, suite, cfg, work, "demo")
    own = np.asarray(read_scan(sim / f"{store.val[0]}.hs").data)
    assert len(pairs) == 1 and np.array_equal(pairs[0][0], own)
    high = qd.validation_pairs(v, suite, cfg, work, "high")
    truth_1 = pairs[0][1]
    # The same phantom at 8 x the counts: the truth scales exactly, the noise is new.
    assert np.allclose(high[0][1], 8 * truth_1, rtol=1e-5)
    assert high[0][0].sum() > 6 * own.sum()


def test_choose_refuses_anything_but_validation_scans(small, tmp_path):
    suite, cfg, work, sim, store = small
    from badblock.io import read_scan

    scan = read_scan(sim / "scan_000.hs")
    test = qc.TestScan("scan_000", sim / "scan_000.hs", np.asarray(scan.data),
                       np.asarray(scan.data, np.float32), scan.header)
    for wrong in (test, [test], [sim / "scan_000.hs"], store):
        with pytest.raises(qd.ProtocolError, match="validation scans only"):
            qd.choose(wrong, suite, cfg, tmp_path, {})


def test_choices_come_from_validation_scans_only(small):
    """The widths choose() fixes are those tune_normconv finds on the validation scans thinned
    by the pattern, computed here independently; the test stream never enters."""
    from badblock import baselines as bl
    from badblock.evaluate import thin_scan
    from badblock.io import read_scan
    from badblock.physics import dead_block_mask, get_scanner, real_lor_count

    suite, cfg, work, sim, store = small
    suite = dataclasses.replace(suite, cases=qs.CasesSpec(["random"], ["demo"], ["pair_axial"]))
    sc = get_scanner("mini")
    mask = dead_block_mask(sc, [(5, 0), (5, 1)])
    v = qd.ValidationScans.from_store(0, store.store, sim)
    got = qd.choose(v, suite, cfg, work, {"pair_axial": mask}, log=lambda m: None)
    assert got.validation_ids == list(store.val)
    path = sim / f"{store.val[0]}.hs"
    measured = np.asarray(read_scan(path).data)
    truth = np.asarray(read_scan(sim / f"{store.val[0]}.truth.hs").data, np.float32)
    rng = np.random.default_rng(qs.seeds_for(suite, "thin", 0, "validation", "pair_axial",
                                             "demo", "0"))
    header = read_scan(path).header
    want = bl.tune_normconv([thin_scan(measured, mask, rng)], [truth], mask,
                            segments=header.segments, tof_order=header.tof_order,
                            sensitivity=real_lor_count(sc).astype(np.float32))
    assert got.normconv_widths == {"pair_axial/demo": list(want)}


def test_a_rerun_reuses_choices_only_when_made_on_the_same_validation_scans(tmp_path):
    import json

    import quality

    suite = qs.load_suite()
    keys = {f"{p}/{c}": [0.7, 1.5, 0.7] for p in suite.cases.patterns
            for c in suite.cases.counts}
    path = tmp_path / "choices.json"
    path.write_text(json.dumps({"dataset": 0, "validation_ids": ["a", "b"],
                                "normconv_widths": keys, "seconds": 1.0}))

    class Val:
        ids = ["a", "b"]

    got = quality._cached_choices(path, Val, suite)
    assert got is not None and got.normconv_widths == keys
    Val.ids = ["a", "c"]  # other validation scans: choose again
    assert quality._cached_choices(path, Val, suite) is None
    Val.ids = ["a", "b"]
    path.write_text(json.dumps({"dataset": 0, "validation_ids": ["a", "b"],
                                "normconv_widths": {"single/demo": [1, 1, 1]}}))
    assert quality._cached_choices(path, Val, suite) is None  # a pattern not chosen for
    assert quality._cached_choices(tmp_path / "none.json", Val, suite) is None


def test_a_work_folder_of_another_suite_or_preset_is_refused(tmp_path):
    import quality

    from badblock.errors import BadInputError

    suite = qs.load_suite()
    fp = quality._fingerprint(suite, smoke=False)
    work = tmp_path / "work"
    quality._claim_work(work, fp)
    assert (work / "fingerprint.txt").read_text() == fp + "\n"
    quality._claim_work(work, fp)  # the same suite and preset: reused
    # the same preset file with other content is another benchmark run, refused
    preset = tmp_path / "preset.yaml"
    preset.write_text("base: mini\nmodel: {dead_weight: 1.0}\n")
    mine = dataclasses.replace(suite, preset=str(preset))
    fp = quality._fingerprint(mine, smoke=False)
    work = tmp_path / "work2"
    quality._claim_work(work, fp)
    preset.write_text("base: mini\nmodel: {dead_weight: 0.5}\n")
    other = quality._fingerprint(mine, smoke=False)
    assert other != fp
    with pytest.raises(BadInputError, match="another suite or preset"):
        quality._claim_work(work, other)
    assert (work / "fingerprint.txt").read_text() == fp + "\n"
