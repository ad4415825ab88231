"""Training samples drawn from a store: clean context stacks, targets and dead-block masks.

The loader only reads and pads; damage (binomial thinning with the mask) and augmentation run on
the training device in batches (``badblock.train.batch``), where they are cheapest. One sample:

All planes are ``Vw = Vp + 2 margin`` views wide: ``Vp`` the network's padded views, ``margin``
views more on each side for the prior's kernel (0 without a prior).

- ``clean``  ``[2k+1, Vw, B]``: the complete counts of the ``2k+1`` neighbouring planes
  of one TOF bin of one scan (clamped inside the segment), views padded to ``Vp`` with the
  flipped wrap (:func:`badblock.physics.stack.plane_stack`); uint16 / int16 when the store holds
  16-bit counts (half the bytes of float32 to collate and move), else float32;
- ``target`` float32 ``[1, Vw, B]``: the complete centre plane (measured counts), the store's
  noiseless ``truth`` (``data.target = truth``), or the other store's plane (``paired``);
- ``mask``   float32 ``[2k+1, Vw, B]``: fraction of LORs lost per bin (0..1). For ``inpaint``
  a set of dead blocks is drawn per sample (:class:`badblock.data.blockmasks.BlockSampler`);
  for ``denoise`` it is the constant ``1 - keep_rate``; for ``paired`` it is zero (the input
  is already damaged).
- ``damaged`` ``[2k+1, Vw, B]``, dtype of ``clean`` (only with ``thin_in_loader``, in place
  of ``clean``): the clean stack thinned with ``mask`` by numpy in the loader, per sample.
- ``where`` int64 ``[3]``: (scan index, TOF bin, plane) of the sample.
- ``truth`` float32 ``[1, Vw, B]`` (only ``with_truth`` and all scans have one).
- ``sens`` float32 ``[2k+1, Vw, B]`` (only with ``sensitivity``, the real LORs per bin
  ``[plane, view, bin]``): the sensitivity of every plane of the stack.
- ``measured`` float32 ``[1, Vw, B]`` (only ``with_measured``): the complete measured centre
  plane (the target scan's plane for ``paired``), what validation scores the network against
  whatever the training target is.

Samples are a pure function of ``(seed, index)``, so any worker count, any shuffling order and
an interrupted-and-resumed run see the same data. Nothing reads a whole scan: planes come from
memory maps, and empty planes (the store lists them) are never drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from badblock.data.blockmasks import BlockSampler
from badblock.data.corruption import thin
from badblock.errors import BadInputError
from badblock.physics.stack import mask_stack_into, plane_stack_into, whole_axis_segments


class SparseMask:
    """A ``[plane, view, bin]`` mask that stores only its affected planes (float16).

    Supports ``.shape`` and ``mask[planes]`` (int array) -> float32 ``[n, view, bin]``, which is
    all :func:`mask_stack` needs. One Vision block touches about 290 of 815 planes.
    """

    def __init__(self, dense: np.ndarray):
        self.shape = tuple(dense.shape)
        touched = np.flatnonzero(np.asarray(dense).reshape(dense.shape[0], -1).max(axis=1) > 0)
        self.planes = touched.astype(np.int64)
        self.values = np.asarray(dense[touched], dtype=np.float16)
        self._pos = np.full(self.shape[0], -1, np.int64)
        self._pos[touched] = np.arange(touched.size)

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self._pos.nbytes

    def __getitem__(self, planes) -> np.ndarray:
        planes = np.atleast_1d(np.asarray(planes, np.int64))
        out = np.zeros((planes.size,) + self.shape[1:], np.float32)
        pos = self._pos[planes]
        hit = pos >= 0
        out[hit] = self.values[pos[hit]]
        return out


def all_blocks(scanner) -> list[tuple[int, int]]:
    return [(t, a) for a in range(scanner.blocks_axial) for t in range(scanner.blocks_transaxial)]


def parse_block_list(items: list[str], where: str) -> list[tuple[int, int]]:
    from badblock.physics.mask import parse_blocks

    if not items:
        return []
    try:
        return list(parse_blocks(",".join(items)))
    except (ValueError, BadInputError) as exc:
        raise BadInputError(where, f"cannot parse dead blocks {items!r} ({exc})") from None


@dataclass
class SampleSpec:
    """What :class:`PlaneDataset` needs besides the store (built from the config)."""

    task: str = "inpaint"  # inpaint | denoise | paired
    context: int = 2
    views_to: int = 0  # 0 = no padding
    margin: int = 0  # extra views on each side of views_to (what the prior's kernel reads)
    target: str = "measured"  # measured | truth
    keep_rate: float = 0.25
    seed: int = 0
    thin_in_loader: bool = False  # deliver the damaged stack too (numpy binomial, per sample)


class PlaneDataset(torch.utils.data.Dataset):
    """Map-style dataset over the global sample index (``epoch * epoch_size + i``).

    ``scans``: the :class:`~badblock.data.store.StoreScan` objects to draw from (one split).
    ``masks``: a :class:`BlockSampler` (a set of blocks drawn per sample) or a fixed mask
    ``[plane, view, bin]`` (validation: the configured dead blocks). ``targets``: for
    ``paired``, the target scans (same order as ``scans``). ``fills``: per scan, its
    :class:`~badblock.data.fills.FillDraw` list (``model.fill_prior``): each sample takes the
    damage of one draw (its mask and its damaged counts, delivered as ``damaged``) and the
    draw's model-based fill of the centre plane (``fill``), instead of ``masks``.
    """

    def __init__(self, scans, spec: SampleSpec, *, segments=None, tof_order: str = "none",
                 masks: BlockSampler | np.ndarray | SparseMask | None = None, targets=None,
                 length: int | None = None, with_truth: bool = False,
                 with_measured: bool = False, sensitivity: np.ndarray | None = None,
                 fills: list | None = None):
        if not scans:
            raise BadInputError("store", "no scans to draw samples from")
        self.scans = list(scans)
        self.spec = spec
        self.tof_order = tof_order
        shape = self.scans[0].shape
        self.n_tof, self.n_planes, self.n_views, self.n_bins = shape
        self.segments = segments or whole_axis_segments(self.n_planes)
        self.views_to = spec.views_to or self.n_views
        self.width = self.views_to + 2 * int(spec.margin)
        self.sensitivity = None
        if sensitivity is not None:
            sens = np.asarray(sensitivity, np.float32)
            if sens.shape != (self.n_planes, self.n_views, self.n_bins):
                raise BadInputError("sensitivity", f"shape {sens.shape} does not match the "
                                    f"scans' [plane, view, bin] {shape[1:]}")
            self.sensitivity = sens[None]  # [1, P, V, B]: one "TOF bin", no TOF partner
        self.targets = targets
        self.length = length
        # the noiseless truth rides along for scoring (validation) when every scan has one
        self.with_truth = with_truth and all(s.truth is not None for s in self.scans)
        self.with_measured = with_measured
        self._fixed_mask = None
        self._blocks: BlockSampler | None = None
        if isinstance(masks, BlockSampler):
            self._blocks = masks
        elif masks is not None:
            self._fixed_mask = masks if isinstance(masks, SparseMask) else SparseMask(masks)
        self.fills = None
        if fills is not None:
            if spec.task != "inpaint" or len(fills) != len(self.scans) or not all(fills):
                raise BadInputError("data.fills", "fills need the inpaint task and draws for "
                                                  "every scan")
            self.fills = list(fills)
        if spec.task == "inpaint" and masks is None and fills is None:
            raise BadInputError("data.task", "inpaint needs dead-block masks")
        if spec.task == "paired" and targets is None:
            raise BadInputError("data.target_store", "the paired task needs target scans")
        if spec.target == "truth" and spec.task != "paired":
            missing = [s.id for s in self.scans if s.truth is None]
            if missing:
                raise BadInputError("data.target", f"'truth' but scans {missing[:3]} have no "
                                                   "noiseless truth in the store")
        # Flat (t * n_planes + p) indices of non-empty planes per scan: draws never hit empty ones.
        self._nonempty = [np.flatnonzero(s.nonempty.reshape(-1)) for s in self.scans]
        if not any(len(n) for n in self._nonempty):
            raise BadInputError("store", "every plane of these scans is empty")

    def __len__(self) -> int:
        return self.length if self.length is not None else 2**62

    def _pick(self, rng: np.random.Generator) -> tuple[int, int, int, object, int]:
        """(scan, t, p, mask, draw) of one sample (draw: index into the scan's fills, else -1);
        damaged planes only for inpaint."""
        for _ in range(64):
            s = int(rng.integers(len(self.scans)))
            nonempty = self.scans[s].nonempty
            if self.spec.task != "inpaint":
                cand = self._nonempty[s]
                if cand.size == 0:
                    continue
                flat = int(cand[rng.integers(cand.size)])
                return s, flat // self.n_planes, flat % self.n_planes, self._fixed_mask, -1
            draw = -1
            if self.fills is not None:
                draw = int(rng.integers(len(self.fills[s])))
                mask = self.fills[s][draw].mask
            elif self._blocks is not None:
                mask = self._blocks.mask(rng)
            else:
                mask = self._fixed_mask
            planes = mask.planes
            if planes.size == 0:
                continue
            t = int(rng.integers(self.n_tof))
            p = int(planes[rng.integers(planes.size)])
            if nonempty[t, p]:
                return s, t, p, mask, draw
        raise BadInputError("store", "could not find a non-empty plane touched by the dead "
                                     "blocks in 64 draws (is the mask empty or the data zero?)")

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def _count_dtype(self, scan) -> np.dtype:
        # counts travel in their own integer type (uint16: half of float32) when they fit
        raw = np.dtype(scan.data.dtype)
        if raw.kind in "ui" and raw.itemsize <= 2:
            return np.dtype(np.int16 if raw.kind == "i" else np.uint16)
        return np.dtype(np.float32)

    def __getitems__(self, indices) -> SampleBatch:
        """The samples of ``indices`` as one batch: what a DataLoader fetches per step.

        Each sample is drawn as ``self[i]`` would be, but written straight into batch arrays
        ``[N, ...]`` (:func:`~badblock.physics.stack.plane_stack_into`), not built one by one and
        stacked: stacking (``default_collate``) cost more than making the samples on a busy
        CPU. Give the DataLoader ``collate_fn=collate_samples`` to take the batch as it is.
        """
        spec = self.spec
        seed = spec.seed & 0xFFFFFFFF
        picks = [self._pick(np.random.default_rng([seed, int(i)])) for i in indices]
        n, k = len(picks), spec.context
        c = 2 * k + 1
        plane = (self.width, self.n_bins)
        counts = np.result_type(*{self._count_dtype(self.scans[s]) for s, *_ in picks})
        clean = np.empty((n, c) + plane, counts)
        target = np.empty((n, 1) + plane, np.float32)
        m = np.empty((n, c) + plane, np.float32)
        truth = np.empty((n, 1) + plane, np.float32) if self.with_truth else None
        sens = None if self.sensitivity is None else np.empty((n, c) + plane, np.float32)
        measured = np.empty((n, 1) + plane, np.float32) if self.with_measured else None
        fill = None if self.fills is None else np.empty((n, 1) + plane, np.float32)
        segs, tof = self.segments, self.tof_order
        for i, (s, t, p, mask, d) in enumerate(picks):
            scan = self.scans[s]
            if fill is not None:  # the draw's damaged counts: what its fill was made from
                plane_stack_into(clean[i], self.fills[s][d].damaged, t, p, k, segs, tof)
                plane_stack_into(fill[i], self.fills[s][d].fill, t, p, 0, segs, tof)
            else:
                plane_stack_into(clean[i], scan.data, t, p, k, segs, tof)
            if spec.task == "paired":
                source = self.targets[s].data if self.targets is not None else scan.target
            elif spec.target == "truth":
                source = scan.truth
            else:
                source = scan.data
            plane_stack_into(target[i], source, t, p, 0, segs, tof)
            if measured is not None:
                plane_stack_into(measured[i], source if spec.task == "paired" else scan.data,
                                 t, p, 0, segs, tof)
            if spec.task == "denoise":
                m[i] = np.float32(1.0 - spec.keep_rate)
            elif spec.task == "paired" or mask is None:
                m[i] = 0.0
            else:
                mask_stack_into(m[i], mask, p, k, segs)
            if truth is not None:
                plane_stack_into(truth[i], scan.truth, t, p, 0, segs, tof)
            if sens is not None:
                plane_stack_into(sens[i], self.sensitivity, 0, p, k, segs, "none")
        where = np.array([pick[:3] for pick in picks], np.int64).reshape(n, 3)
        out = {"clean": clean, "target": target, "mask": m, "where": where}
        if fill is not None:
            out["damaged"] = out.pop("clean")
            out["fill"] = fill
        elif spec.thin_in_loader and spec.task != "paired":
            for i, index in enumerate(indices):
                # a stream of its own, so the sample drawn does not depend on where thinning runs
                trng = np.random.default_rng([seed, int(index), 1])
                clean[i] = thin(clean[i], 1.0 - m[i], trng)
            out["damaged"] = out.pop("clean")  # in place: half the bytes to move
        if truth is not None:
            out["truth"] = truth
        if sens is not None:
            out["sens"] = sens
        if measured is not None:
            out["measured"] = measured
        return SampleBatch({key: torch.from_numpy(v) for key, v in out.items()})


class SampleBatch(Sequence):
    """``N`` samples fetched together (:meth:`PlaneDataset.__getitems__`).

    ``tensors`` maps each key to a tensor ``[N, ...]``. As a sequence it is the ``N`` sample
    dicts (views into those tensors), so code that expects a list of samples -- the default
    collate -- still works; :func:`collate_samples` hands the tensors over without a copy.
    """

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self._n = len(next(iter(tensors.values())))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return {key: v[i] for key, v in self.tensors.items()}

    def __iter__(self):
        return (self[i] for i in range(self._n))


def collate_samples(batch) -> dict:
    """``collate_fn`` for DataLoaders over :class:`PlaneDataset`: a :class:`SampleBatch` is
    already a batch (returned as a dict of ``[N, ...]`` tensors, no copy); anything else
    (e.g. a list of samples from a dataset without ``__getitems__``) goes to the default
    collate."""
    if isinstance(batch, SampleBatch):
        return dict(batch.tensors)
    return torch.utils.data.default_collate(batch)


class EpochSampler(torch.utils.data.Sampler):
    """Global sample indices of one epoch for one rank, from step ``start`` on.

    Index ``epoch * epoch_size + j``; rank ``r`` of ``w`` takes ``j = r, r + w, ...``. Changing
    ``epoch`` / ``start`` between epochs works with persistent workers (the sampler runs in
    the main process).
    """

    def __init__(self, epoch_size: int, batch_size: int, rank: int = 0, world: int = 1):
        self.epoch_size = epoch_size
        self.batch_size = batch_size
        self.rank = rank
        self.world = world
        self.epoch = 0
        self.start_step = 0

    def steps_per_epoch(self) -> int:
        return max(1, self.epoch_size // (self.batch_size * self.world))

    def __len__(self) -> int:
        return (self.steps_per_epoch() - self.start_step) * self.batch_size

    def __iter__(self):
        base = self.epoch * self.epoch_size
        first = self.start_step * self.batch_size
        for j in range(first, self.steps_per_epoch() * self.batch_size):
            yield base + j * self.world + self.rank


__all__ = ["PlaneDataset", "EpochSampler", "SampleSpec", "SampleBatch", "collate_samples",
           "SparseMask", "all_blocks", "parse_block_list"]
