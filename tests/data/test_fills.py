"""Damage draws with their model-based fills: the folder make_fills writes, what training
samples take from it, and the refusals of a run that asks for the fill without one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from badblock.baselines import fill_settings, model_fill
from badblock.data.blockmasks import BlockSampler
from badblock.data.build import build_data
from badblock.data.dataset import all_blocks
from badblock.data.fills import MANIFEST, FillSet, make_fills
from badblock.data.store import Store
from badblock.errors import BadInputError
from badblock.physics import dead_block_mask, get_scanner
from badblock.physics.stack import plane_stack
from badblock.train.loop import Trainer
from tests.train.trainer_store import make_store, tiny_config

SCANNER = get_scanner("mini")
# one cheap OSEM (the tests check bookkeeping, not the fill's quality)
CHEAP = fill_settings(1, 2, {"subviews": "mean", "tilts": "plane", "step_mm": 13.0})
VAL_BLOCKS = [(9, 2)]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("fills")
    store = Store.open(make_store(out / "store"))
    sampler = BlockSampler(SCANNER, all_blocks(SCANNER), (1, 3), 0.7)
    make_fills(store, out / "fills", SCANNER, sampler, draws=2, seed=3,
               val_mask=dead_block_mask(SCANNER, VAL_BLOCKS), settings=CHEAP, workers=2)
    return out


def test_folder_holds_consistent_draws_and_their_fills(out):
    store = Store.open(out / "store")
    record = json.loads((out / "fills" / MANIFEST).read_text())
    assert record["settings"] == CHEAP and record["scanner"] == "mini"
    fills = FillSet(out / "fills")
    sampler = BlockSampler(SCANNER, all_blocks(SCANNER), (1, 3), 0.7)
    for scan in store.scans:
        split = record["scans"][scan.id]["split"]
        draws = fills.draws(scan, sampler.masks)
        assert len(draws) == (2 if split == "train" else 1)
        complete = np.asarray(scan.data)
        for i, d in enumerate(draws):
            blocks = record["scans"][scan.id]["draws"][i]["blocks"]
            mask = dead_block_mask(SCANNER, [tuple(b) for b in blocks] if blocks else VAL_BLOCKS)
            assert 1 <= len(blocks or VAL_BLOCKS) <= 3
            # (validation masks are kept as float16, as validation without fills keeps them)
            np.testing.assert_allclose(d.mask[np.arange(mask.shape[0])], mask,
                                       atol=1e-5 if blocks else 2.5e-4)
            dam = np.asarray(d.damaged)
            # a thinning: nothing gained, nothing lost where nothing is dead, all lost where dead
            assert dam.dtype == complete.dtype and (dam <= complete).all()
            np.testing.assert_array_equal(dam[:, mask == 0], complete[:, mask == 0])
            assert not dam[:, mask >= 1.0].any()
            # the fill of exactly those counts, by the recorded settings
            ref = model_fill(dam.astype(np.float32), mask, scanner="mini", tof_order="siemens",
                             iterations=1, subsets=2, projector_options=CHEAP["projector"])
            np.testing.assert_allclose(np.asarray(d.fill), ref, rtol=1e-5, atol=1e-4)


def test_samples_take_the_draws_damage_and_fill(out):
    cfg = tiny_config(out, **{"model.per_lor": True, "data.mask_channel": True,
                              "data.mask_stack": True, "model.fill_prior": True,
                              "model.prior_residual": True, "data.fills": "fills",
                              "augment.view_roll": 0, "augment.radial_flip": 0,
                              "scanner.dead_blocks": '["9:2"]'})
    train_ds, val_ds, info = build_data(cfg, 4)
    assert info["fill"]["iterations"] == 1 and info["fill"]["attenuation"] is False
    for ds in (train_ds, val_ds):
        batch = ds.__getitems__(list(range(6)))
        assert "clean" not in batch[0] and {"damaged", "fill"} <= set(batch[0])
        for i, (s, t, p) in enumerate(batch.tensors["where"].numpy()):
            hits = [d for d in ds.fills[s]
                    if np.array_equal(plane_stack(d.damaged, t, p, 2, ds.segments,
                                                  ds.tof_order, ds.width),
                                      batch.tensors["damaged"][i].numpy().astype(d.damaged.dtype))]
            assert hits, "the sample's damaged stack is one of its scan's draws"
            fill = plane_stack(hits[0].fill, t, p, 0, ds.segments, ds.tof_order, ds.width)
            np.testing.assert_array_equal(batch.tensors["fill"][i].numpy(), fill)


def test_an_untrained_fill_network_validates_as_the_fill_alone(out):
    """The residual base is the fill: before any step the network's repair is the fill, so its
    validation NRMSE is the fill's, computed here from the draws directly."""
    cfg = tiny_config(out, **{"model.per_lor": True, "data.mask_channel": True,
                              "data.mask_stack": True, "model.fill_prior": True,
                              "model.prior_residual": True, "data.fills": "fills",
                              "augment.view_roll": 0, "augment.radial_flip": 0,
                              "scanner.dead_blocks": '["9:2"]', "train.run": "untrained"})
    trainer = Trainer(cfg)
    trainer.build()
    got = trainer.validate()["nrmse_net_truth"]
    ds = trainer.val_ds
    batch = ds.__getitems__(list(range(len(ds))))
    err = ref = 0.0
    store = Store.open(out / "store")
    for s, t, p in batch.tensors["where"].numpy():
        d = ds.fills[s][0]
        f = d.mask[[p]][0]
        truth = np.asarray(store.split("val")[s].truth)[t, p]
        fill = np.asarray(d.fill)[t, p]
        err += float((((fill - truth) ** 2)[f > 0]).sum())
        ref += float(((truth ** 2)[f > 0]).sum())
    assert got == pytest.approx(np.sqrt(err / ref), rel=2e-3)


@pytest.mark.parametrize("sets, message", [
    ({"model.fill_prior": True}, "needs data.fills"),
    ({"model.fill_prior": True, "data.fills": "fills", "augment.dose": 0.5}, "augment.dose"),
    ({"model.fill_prior": True, "data.fills": "nowhere"}, "no fills.json"),
])
def test_fill_runs_refuse_what_cannot_work(out, sets, message):
    cfg = tiny_config(out, **{"model.per_lor": True, "data.mask_channel": True,
                              "data.mask_stack": True, "augment.view_roll": 0,
                              "augment.radial_flip": 0, **sets})
    with pytest.raises(BadInputError, match=message):
        trainer = Trainer(cfg)
        trainer.build()


def test_one_process_or_several_write_the_same_fills(out, tmp_path):
    store = Store.open(out / "store")
    sampler = BlockSampler(SCANNER, all_blocks(SCANNER), (1, 3), 0.7)
    make_fills(store, tmp_path / "one", SCANNER, sampler, draws=2, seed=3,
               val_mask=dead_block_mask(SCANNER, VAL_BLOCKS), settings=CHEAP, workers=1)
    a = json.loads((out / "fills" / MANIFEST).read_text())
    b = json.loads((tmp_path / "one" / MANIFEST).read_text())
    assert a["scans"] == b["scans"]
    for f in sorted((out / "fills").glob("*.npy")):
        np.testing.assert_array_equal(np.load(f), np.load(tmp_path / "one" / f.name))


def test_badblock_fills_reads_each_scans_attenuation_map_beside_its_source(tmp_path):
    """simulate writes <id>.mu.npy beside each scan; fills of its store model attenuation with
    exactly those maps, and a store where one map is missing is refused."""
    from badblock.config import load_config
    from badblock.data.fills import make_fills_for
    from badblock.data.preprocess import preprocess
    from badblock.physics.simulate import simulate

    sets = [f"run.output={tmp_path}", "scanner.name=mini", "simulate.scans=3",
            "simulate.step_mm=9", "simulate.counts=5.0e+4", "preprocess.val_fraction=0.34",
            "data.fills=fills", "fills.draws=1", "fills.iterations=1", "fills.subsets=2",
            "fills.step_mm=13.0", "scanner.dead_blocks=[\"9:2\"]"]
    sim = simulate(load_config(None, sets, env={}), tmp_path / "sim")
    scans = sorted(str(p) for p in sim.glob("scan_00?.hs"))
    cfg = load_config(None, sets + [f"preprocess.inputs={scans}"], env={})
    preprocess(cfg)
    folder = make_fills_for(cfg)
    record = json.loads((folder / MANIFEST).read_text())
    assert record["attenuation"] is True and len(record["scans"]) == 3
    store = Store.open(tmp_path / "store")
    scan = store.split("val")[0]
    d = FillSet(folder).draws(scan, BlockSampler(SCANNER, all_blocks(SCANNER)).masks)[0]
    mask = dead_block_mask(SCANNER, VAL_BLOCKS)
    mu = np.load(sim / f"{scan.id}.mu.npy", allow_pickle=False)
    ref = model_fill(np.asarray(d.damaged, np.float32), mask, scanner="mini", mu=mu,
                     tof_order=store.tof_order, iterations=1, subsets=2,
                     projector_options=CHEAP["projector"])
    np.testing.assert_allclose(np.asarray(d.fill), ref, rtol=1e-5, atol=1e-4)
    with pytest.raises(BadInputError, match="already holds fills"):
        make_fills_for(cfg)
    (sim / f"{scan.id}.mu.npy").unlink()
    with pytest.raises(BadInputError, match="attenuation maps"):
        make_fills_for(cfg, force=True)
    assert (folder / MANIFEST).exists()  # refused before the complete fills were touched
