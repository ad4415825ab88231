"""The dataset over a real (tiny) store of the mini scanner (stacks: tests/physics/test_stack)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badblock.data.blockmasks import BlockSampler
from badblock.data.dataset import (
    EpochSampler,
    PlaneDataset,
    SampleSpec,
    SparseMask,
)
from badblock.data.store import Store
from badblock.data.store_writer import write_store
from badblock.physics.mask import dead_block_mask
from badblock.physics.scanners import get_scanner
from tests.train.trainer_store import synthetic_scan

SC = get_scanner("mini")  # [3 TOF, 57 planes (23, 17, 17), 36 views, 64 bins]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("ds") / "store"
    scans, truths = {}, {}
    for i in range(3):
        scans[f"s{i}"], truths[f"s{i}"] = synthetic_scan(i)
    scans["s0"][1, 30] = 0  # an empty plane: never drawn
    return Store.open(write_store(path, scans, truths=truths, val=["s2"], segments=SC.segments,
                                  tof_order="siemens", scanner="mini"))


def test_sparse_mask_stores_affected_planes_only():
    dense = dead_block_mask(SC, [(5, 0)])
    sparse = SparseMask(dense)
    np.testing.assert_allclose(sparse[np.arange(SC.n_planes)], dense, atol=1e-3)  # float16
    assert sparse.planes.size == (dense.reshape(len(dense), -1).max(1) > 0).sum()
    assert sparse.nbytes < dense.nbytes


def _ds(store, task="inpaint", **kw):
    spec = SampleSpec(task=task, context=2, views_to=40, seed=11, keep_rate=0.3)
    masks = BlockSampler(SC, [(3, 1), (9, 2)], count=(1, 1)) if task == "inpaint" else None
    return PlaneDataset(store.split("train"), spec, segments=store.segments,
                        tof_order=store.tof_order, masks=masks, **kw)


def test_inpaint_samples_are_deterministic_damaged_and_nonempty(store):
    ds = _ds(store)
    a, b = ds[12345], _ds(store)[12345]
    for key in a:
        assert torch.equal(a[key], b[key])
    assert a["clean"].shape == (5, 40, 64) and a["target"].shape == (1, 40, 64)
    seen = set()
    for i in range(300):
        s = ds[i]
        sc, t, p = s["where"].tolist()
        seen.add((sc, t, p))
        assert s["mask"][2].max() > 0  # the centre plane is damaged by the drawn block
        assert not (sc == 0 and t == 1 and p == 30)  # the empty plane is never drawn
        np.testing.assert_array_equal(s["target"][0, 2:38].numpy(),
                                      store.split("train")[sc].data[t, p])
    assert len(seen) > 100  # shuffled across scans, TOF bins and planes


def test_denoise_and_truth_targets(store):
    ds = _ds(store, "denoise")
    s = ds[3]
    np.testing.assert_allclose(s["mask"].numpy(), 0.7, rtol=1e-6)
    spec = SampleSpec(task="inpaint", context=1, views_to=36, target="truth", seed=1)
    tds = PlaneDataset(store.split("train"), spec, segments=store.segments,
                       tof_order=store.tof_order, masks=dead_block_mask(SC, [(3, 1)]))
    s = tds[0]
    sc, t, p = s["where"].tolist()
    np.testing.assert_array_equal(s["target"][0].numpy(), store.split("train")[sc].truth[t, p])
    assert s["clean"].shape == (3, 36, 64)


def test_paired_takes_targets_from_the_other_store(store, tmp_path):
    other = {f"s{i}": (store.scans[i].data[:] // 2).astype(np.uint16) for i in range(3)}
    tstore = Store.open(write_store(tmp_path / "t", other, val=["s2"], segments=SC.segments,
                                    tof_order="siemens", scanner="mini"))
    ds = _ds(store, "paired", targets=tstore.split("train"))
    s = ds[5]
    sc, t, p = s["where"].tolist()
    np.testing.assert_array_equal(s["target"][0, 2:38].numpy(),
                                  tstore.split("train")[sc].data[t, p])
    assert float(s["mask"].abs().sum()) == 0.0


def test_epoch_sampler_splits_ranks_and_resumes():
    s0, s1 = EpochSampler(32, 4, 0, 2), EpochSampler(32, 4, 1, 2)
    for s in (s0, s1):
        s.epoch = 3
    i0, i1 = list(s0), list(s1)
    assert len(i0) == len(i1) == 16 and not set(i0) & set(i1)
    assert set(i0) | set(i1) == set(range(96, 128))
    s0.start_step = 2
    assert list(s0) == i0[8:]


def test_workers_deliver_the_same_samples(store):
    ds = _ds(store)
    sampler = EpochSampler(16, 4)
    plain = [b["clean"] for b in torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler)]
    two = [b["clean"] for b in torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler,
                                                             num_workers=2)]
    for a, b in zip(plain, two, strict=True):
        assert torch.equal(a, b)
