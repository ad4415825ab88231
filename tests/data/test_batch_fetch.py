"""Whole-batch fetching (``PlaneDataset.__getitems__``) gives exactly the per-sample samples.

The reference below is the per-sample ``__getitem__`` as it was before batches were fetched
whole (context stacks from ``plane_stack`` / ``mask_stack``, which pad with ``pad_views``), so
the batch path is checked against an independent implementation, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badblock.data.blockmasks import BlockSampler
from badblock.data.build import train_loader
from badblock.data.dataset import (
    EpochSampler,
    PlaneDataset,
    SampleBatch,
    SampleSpec,
    SparseMask,
    collate_samples,
)
from badblock.data.store import Store
from badblock.data.store_writer import write_store
from badblock.physics.mask import dead_block_mask
from badblock.physics.scanners import get_scanner
from badblock.physics.stack import mask_stack, plane_stack
from tests.train.trainer_store import synthetic_scan

SC = get_scanner("mini")  # [3 TOF, 57 planes (23, 17, 17), 36 views, 64 bins]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("batch") / "store"
    scans, truths = {}, {}
    for i in range(3):
        scans[f"s{i}"], truths[f"s{i}"] = synthetic_scan(i)
    return Store.open(write_store(path, scans, truths=truths, val=["s2"], segments=SC.segments,
                                  tof_order="siemens", scanner="mini"))


def reference_sample(ds: PlaneDataset, index: int) -> dict:
    """The per-sample path as it was (one sample, built from plane_stack / mask_stack)."""
    rng = np.random.default_rng([ds.spec.seed & 0xFFFFFFFF, int(index)])
    s, t, p, mask, _ = ds._pick(rng)
    scan = ds.scans[s]
    k = ds.spec.context
    raw = np.dtype(scan.data.dtype)
    small = raw.kind in "ui" and raw.itemsize <= 2
    clean = plane_stack(scan.data, t, p, k, ds.segments, ds.tof_order, ds.views_to,
                        dtype=np.int16 if small and raw.kind == "i" else
                        np.uint16 if small else np.float32)
    if ds.spec.task == "paired":
        source = ds.targets[s].data
    elif ds.spec.target == "truth":
        source = scan.truth
    else:
        source = scan.data
    target = plane_stack(source, t, p, 0, ds.segments, ds.tof_order, ds.views_to)
    c = 2 * k + 1
    if ds.spec.task == "denoise":
        m = np.full((c, ds.views_to, ds.n_bins), 1.0 - ds.spec.keep_rate, np.float32)
    elif ds.spec.task == "paired" or mask is None:
        m = np.zeros((c, ds.views_to, ds.n_bins), np.float32)
    else:
        m = mask_stack(mask, p, k, ds.segments, ds.views_to)
    out = {"clean": torch.from_numpy(clean), "target": torch.from_numpy(target),
           "mask": torch.from_numpy(m), "where": torch.tensor([s, t, p], dtype=torch.int64)}
    if ds.spec.thin_in_loader and ds.spec.task != "paired":
        trng = np.random.default_rng([ds.spec.seed & 0xFFFFFFFF, int(index), 1])
        damaged = trng.binomial(clean.astype(np.int64), 1.0 - m).astype(clean.dtype)
        out["damaged"] = torch.from_numpy(damaged)
        del out["clean"]
    if ds.with_truth:
        out["truth"] = torch.from_numpy(
            plane_stack(scan.truth, t, p, 0, ds.segments, ds.tof_order, ds.views_to))
    return out


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


def _ds(store, task="inpaint", views_to=40, context=2, **kw):
    spec_kw = {k: kw.pop(k) for k in ("target", "thin_in_loader") if k in kw}
    spec = SampleSpec(task=task, context=context, views_to=views_to, seed=11, keep_rate=0.3,
                      **spec_kw)
    if "masks" not in kw:
        kw["masks"] = (BlockSampler(SC, [(3, 1), (9, 2), (0, 0)], count=(1, 2))
                       if task == "inpaint" else None)
    return PlaneDataset(store.split("train"), spec, segments=store.segments,
                        tof_order=store.tof_order, **kw)


INDICES = [0, 1, 7, 123456, 2**40 + 3, 55, 55]  # a repeat too


@pytest.mark.parametrize("case", ["inpaint", "inpaint_long_pad", "inpaint_no_pad", "thin",
                                  "denoise", "truth_target", "fixed_mask_with_truth", "paired"])
def test_batch_equals_the_per_sample_reference(store, case):
    kw = {}
    if case == "inpaint_long_pad":
        kw["views_to"] = 112  # pads longer than the 36 views: whole turns come in
    elif case == "inpaint_no_pad":
        kw["views_to"] = 36
    elif case == "thin":
        kw["thin_in_loader"] = True
    elif case == "truth_target":
        kw["target"] = "truth"
    elif case == "fixed_mask_with_truth":
        kw["masks"] = SparseMask(dead_block_mask(SC, [(3, 1)]))
        kw["with_truth"] = True
    task = {"denoise": "denoise", "paired": "paired"}.get(case, "inpaint")
    if task == "paired":
        kw["targets"] = [_Halved(s) for s in store.split("train")]
    ds = _ds(store, task, **kw)
    batch = ds.__getitems__(INDICES)
    assert isinstance(batch, SampleBatch) and len(batch) == len(INDICES)
    for i, index in enumerate(INDICES):
        want = reference_sample(ds, index)
        _same(batch[i], want)
        _same(ds[index], want)
    if case == "thin":
        assert "clean" not in batch.tensors


class _Halved:
    """A target scan: half the counts of ``scan`` (a different array from the input)."""

    def __init__(self, scan):
        self.data = (np.asarray(scan.data) // 2).astype(np.uint16)


def test_context_zero_and_float_counts(store, tmp_path):
    data = {"f0": synthetic_scan(5)[1] * 3.5, "f1": synthetic_scan(6)[1]}  # float32 counts
    fstore = Store.open(write_store(tmp_path / "f", data, val=["f1"], segments=SC.segments,
                                    tof_order="siemens", scanner="mini"))
    ds = _ds(fstore, context=0)
    batch = ds.__getitems__([3, 4, 5])
    assert batch.tensors["clean"].dtype == torch.float32
    for i, index in enumerate([3, 4, 5]):
        _same(batch[i], reference_sample(ds, index))


def test_loaders_deliver_the_reference_batches(store):
    ds = _ds(store)
    sampler = EpochSampler(24, 4)
    sampler.epoch = 2
    want = [[reference_sample(ds, i) for i in idx] for idx in np.reshape(list(sampler), (-1, 4))]
    cpu = torch.device("cpu")
    for workers in (0, 2):
        got = list(train_loader(ds, sampler, 4, workers, cpu))
        assert len(got) == len(want)
        for b, samples in zip(got, want, strict=True):
            assert isinstance(b, dict) and b["clean"].shape == (4, 5, 40, 64)
            for i, w in enumerate(samples):
                _same({k: v[i] for k, v in b.items()}, w)
    # a DataLoader with the default collate still works (it stacks the batch's samples)
    plain = list(torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler))
    for a, b in zip(plain, got, strict=True):
        for key in b:
            assert torch.equal(a[key], b[key])


def test_collate_samples_passes_batches_through_and_stacks_lists(store):
    ds = _ds(store, "denoise")
    batch = ds.__getitems__([1, 2])
    out = collate_samples(batch)
    assert out["clean"].data_ptr() == batch.tensors["clean"].data_ptr()  # no copy
    stacked = collate_samples([ds[1], ds[2]])
    for key in out:
        assert torch.equal(out[key], stacked[key])
    assert [s["where"].tolist() for s in batch] == [s["where"].tolist() for s in batch[:]]
    with pytest.raises(IndexError):
        batch[2]
