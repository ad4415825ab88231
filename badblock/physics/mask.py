"""Dead-block masks: the fraction of real LORs each sinogram bin loses, ``[plane, view, bin]``.

One bin sums the LORs of its view's ``mash`` sub-views (transaxial) times the ring pairs of its
plane (axial). An LOR ``(d1, r1)-(d2, r2)`` is lost when either end is a dead (crystal, ring).
Rings fall into classes by their set of dead crystals (one class per distinct set, plus the
class of rings with none); for ring classes ``(k1, k2)`` of an LOR's two ends the loss depends
only on ``d1 in S_k1 or d2 in S_k2``. So the lost count of a bin is a short sum of outer
products ``Q[k1, k2][plane] * P[k1, k2][view, bin]``: exact for any set of dead blocks and
crystals, and seconds for the Vision instead of an enumeration of 10^9 LORs.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from badblock.errors import BadInputError
from badblock.physics.geometry import ring_is_real, ring_pair_plane, transaxial_pairs
from badblock.physics.scanners import Scanner, get_scanner

_YAML_HINT = ("; quote it in YAML ('3:1'): unquoted 3:1 is read as the base-60 number 181")


def _parse_pairs(spec: str | Iterable, what: str, where: str) -> list[tuple[int, int]]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            out.append((int(item[0]), int(item[1])))
            continue
        text = str(item).strip()
        if not text:
            continue
        parts = text.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            out.append((int(parts[0]), int(parts[1])))
        except ValueError:
            hint = _YAML_HINT if text.isdigit() and int(text) >= 60 else ""
            raise BadInputError(where, f"{text!r} is not {what}{hint}") from None
    return out


def parse_blocks(spec: str | Iterable, where: str = "dead blocks") -> list[tuple[int, int]]:
    """``"3:1,4:1"`` (or ``["3:1", "4:1"]``) -> ``[(3, 1), (4, 1)]``: (transaxial, axial) block."""
    return _parse_pairs(spec, "a block 'T:A' (transaxial:axial block index)", where)


def parse_crystals(spec: str | Iterable, where: str = "dead crystals") -> list[tuple[int, int]]:
    """``"100:7,101:7"`` -> ``[(100, 7), (101, 7)]``: (crystal index in ring, ring index)."""
    return _parse_pairs(spec, "a crystal 'c:r' (crystal:ring index)", where)


def dead_set(scanner: Scanner, blocks: Sequence = (), crystals: Sequence = ()) \
        -> dict[int, frozenset[int]]:
    """Dead crystals per ring: ``{ring: frozenset(crystal indices)}`` (rings with none left out)."""
    dead: dict[int, set[int]] = {}
    for t, a in blocks:
        cr = scanner.block_crystals(t)
        for r in scanner.block_rings(a):
            dead.setdefault(r, set()).update(cr)
    for c, r in crystals:
        if not (0 <= c < scanner.crystals_per_ring and 0 <= r < scanner.n_rings):
            raise BadInputError("dead crystal", f"{c}:{r} outside the {scanner.name}'s "
                                f"{scanner.crystals_per_ring} crystals x {scanner.n_rings} rings")
        dead.setdefault(r, set()).add(c)
    return {r: frozenset(s) for r, s in dead.items()}


def _axial_counts(scanner: Scanner, ring_class: np.ndarray, n_class: int) -> np.ndarray:
    """int64 ``[class1, class2, plane]``: real ring pairs of each plane by the rings' classes."""
    table = ring_pair_plane(scanner)
    real = ring_is_real(scanner)
    r1, r2 = np.nonzero((table >= 0) & real[:, None] & real[None, :])
    key = (ring_class[r1] * n_class + ring_class[r2]) * scanner.n_planes + table[r1, r2]
    counts = np.bincount(key, minlength=n_class * n_class * scanner.n_planes)
    return counts.reshape(n_class, n_class, scanner.n_planes)


def real_lor_count(scanner: Scanner) -> np.ndarray:
    """int32 ``[plane, view, bin]``: real LORs summed in each bin (0 in bins of gap crystals)."""
    _, _, valid = transaxial_pairs(scanner)
    axial = _axial_counts(scanner, np.zeros(scanner.n_rings, dtype=np.int64), 1)[0, 0]
    return (axial[:, None, None] * valid.sum(axis=1)[None]).astype(np.int32)


def lost_lor_count(scanner: Scanner, blocks: Sequence = (), crystals: Sequence = ()) \
        -> np.ndarray:
    """float32 ``[plane, view, bin]``: real LORs of each bin with a dead end (exact counts)."""
    dead = dead_set(scanner, blocks, crystals)
    sets = [frozenset()] + sorted(set(dead.values()), key=sorted)
    index = {s: i for i, s in enumerate(sets)}
    ring_class = np.array([index[dead.get(r, frozenset())] for r in range(scanner.n_rings)])
    axial = _axial_counts(scanner, ring_class, len(sets))

    det1, det2, valid = transaxial_pairs(scanner)
    hit1 = [valid & np.isin(det1, list(s)) for s in sets]
    hit2 = [valid & np.isin(det2, list(s)) for s in sets]
    lost = np.zeros((scanner.n_planes, scanner.n_views, scanner.n_bins), dtype=np.float32)
    for k1 in range(len(sets)):
        for k2 in range(len(sets)):
            if k1 == 0 and k2 == 0:
                continue  # neither end on a ring with dead crystals
            planes = np.nonzero(axial[k1, k2])[0]
            if len(planes) == 0:
                continue
            trans = (hit1[k1] | hit2[k2]).sum(axis=1, dtype=np.float32)  # [view, bin]
            if not trans.any():
                continue
            for p in planes:  # plane by plane: no temporary the size of the sinogram
                lost[p] += np.float32(axial[k1, k2, p]) * trans
    return lost


def thin_counts(counts: np.ndarray, survive, generator: np.random.Generator) -> np.ndarray:
    """Binomial thinning of numpy counts (the numpy half of
    :func:`badblock.data.corruption.thin`, here so that inference may use it too): every count
    survives with probability ``survive`` (broadcast to ``counts``, clipped to [0, 1]), drawn
    from ``generator``; float counts are rounded first; returns ``counts``' dtype."""
    if not isinstance(generator, np.random.Generator):
        raise BadInputError("generator", "thinning numpy counts needs a numpy.random.Generator")
    n = np.rint(counts).astype(np.int64) if counts.dtype.kind == "f" else \
        counts.astype(np.int64)
    if n.min(initial=0) < 0:
        raise BadInputError("counts", "negative counts cannot be thinned")
    p = np.asarray(survive)
    if p.ndim == 0 and not 0.0 <= float(p) <= 1.0:
        raise BadInputError("survive", f"must be a probability in [0, 1], got {float(p)}")
    try:
        p = np.broadcast_to(np.clip(p, 0.0, 1.0), n.shape)
    except ValueError:
        raise BadInputError("survive", f"shape {list(p.shape)} does not broadcast to the counts' "
                            f"shape {list(n.shape)}") from None
    return generator.binomial(n, p).astype(counts.dtype, copy=False)


def dead_block_mask(scanner: Scanner | str, blocks: Sequence | str = (),
                    crystals: Sequence | str = ()) -> np.ndarray:
    """Fraction of real LORs lost per bin: float32 ``[plane, view, bin]`` in 0..1.

    ``blocks``: (transaxial, axial) block indices or a ``"T:A,..."`` string; ``crystals``:
    (crystal, ring) pairs or ``"c:r,..."``. Bins without any real LOR (those of the virtual gap
    crystals) get 0: nothing is lost there, they never hold counts (see :func:`real_lor_count`).
    The mask is the same for all TOF bins.
    """
    scanner = get_scanner(scanner)
    if isinstance(blocks, str):
        blocks = parse_blocks(blocks)
    if isinstance(crystals, str):
        crystals = parse_crystals(crystals)
    mask = lost_lor_count(scanner, blocks, crystals)
    _, _, valid = transaxial_pairs(scanner)
    trans = valid.sum(axis=1).astype(np.float32)
    axial = _axial_counts(scanner, np.zeros(scanner.n_rings, dtype=np.int64), 1)[0, 0]
    for p in np.nonzero(axial)[0]:  # in place, plane by plane: peak memory stays one mask
        total = np.float32(axial[p]) * trans
        np.divide(mask[p], total, out=mask[p], where=total > 0)
    return np.clip(mask, 0.0, 1.0, out=mask)


def mask_summary(mask: np.ndarray) -> dict:
    """The numbers ``badblock mask`` prints: share of bins affected, planes touched, share of
    affected bins fully dead, median loss of affected bins, and the most affected planes."""
    hit = mask > 0
    n_hit = int(hit.sum())
    per_plane = mask.sum(axis=(1, 2))
    return {
        "bins": int(mask.size),
        "bins_affected": n_hit,
        "percent_bins_affected": 100.0 * n_hit / mask.size,
        "planes_touched": int((per_plane > 0).sum()),
        "planes": int(mask.shape[0]),
        "percent_affected_fully_dead": 100.0 * float((mask >= 1.0).sum()) / max(n_hit, 1),
        "median_loss_affected": float(np.median(mask[hit])) if n_hit else 0.0,
        "worst_planes": [int(p) for p in np.argsort(per_plane)[::-1][:4] if per_plane[p] > 0],
    }


def load_mask(path: str | os.PathLike, scanner: Scanner | str | None = None,
              allow_pickle: bool = False, shape: Sequence[int] | None = None) -> np.ndarray:
    """Read a mask ``.npy`` (float ``[plane, view, bin]``, fraction lost) as float32.

    Checks it is 3-D (a leading axis of 1 is dropped), finite, within 0..1 and, given a
    scanner, of its sinogram shape; given ``shape`` (the scans' ``[TOF, plane, view, bin]`` or
    ``[plane, view, bin]``), of theirs. A legacy pickled mask (the ``mask.pkl`` of the 2019
    scripts this project replaces) loads only with ``allow_pickle=True``: unpickling runs code
    from the file, so it is for files you made yourself. Every problem is a
    :class:`BadInputError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "mask file not found")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    try:
        if magic == b"\x93NUMPY":
            arr = np.load(path, allow_pickle=False)
        elif allow_pickle:
            with open(path, "rb") as fh:
                arr = np.asarray(pickle.load(fh))
        else:
            raise BadInputError(path, "not a .npy file; a legacy pickled mask needs the explicit "
                                "allow_pickle flag (only for files you trust)")
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise BadInputError(path, f"cannot read mask ({exc})") from None
    if arr.dtype.kind not in "fiub":
        raise BadInputError(path, f"mask must be numeric, not {arr.dtype}")
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise BadInputError(path, f"mask must be [plane, view, bin], got shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise BadInputError(path, "mask values must be fractions of LORs lost, within 0..1")
    if scanner is not None:
        sc = get_scanner(scanner)
        want = sc.shape[1:]
        if arr.shape != want:
            raise BadInputError(path, f"mask shape {arr.shape} does not match scanner {sc.name} "
                                f"[plane, view, bin] = {want}")
    if shape is not None and arr.shape != tuple(shape)[-3:]:
        raise BadInputError(path, f"mask shape {list(arr.shape)} does not match the scans' "
                                  f"[plane, view, bin] {list(tuple(shape)[-3:])}")
    return arr


@dataclass
class ResolvedMask:
    """A dead-block mask and where it came from (:func:`resolve_mask`).

    ``mask``: float32 ``[plane, view, bin]``, fraction of real LORs lost per bin (0..1, the
    same for every TOF bin). ``path``: the file it was read from (None when computed);
    ``scanner``: the preset whose geometry computed or checked it (None for a file read
    unchecked); ``blocks`` / ``crystals``: the dead (transaxial, axial) blocks and (crystal,
    ring) crystals it was computed from.
    """

    mask: np.ndarray
    path: Path | None = None
    scanner: str | None = None
    blocks: list[tuple[int, int]] = field(default_factory=list)
    crystals: list[tuple[int, int]] = field(default_factory=list)

    def describe(self, with_scanner: bool = True) -> str:
        """One line: ``mask FILE`` or ``[vision ]dead blocks 3:1[ crystals 100:7]``."""
        if self.path is not None:
            return f"mask {self.path}"
        what = "dead blocks " + ",".join(f"{t}:{a}" for t, a in self.blocks)
        if self.crystals:
            what += " crystals " + ",".join(f"{c}:{r}" for c, r in self.crystals)
        return f"{self.scanner} {what}" if with_scanner else what


def resolve_mask(scanner_cfg, *, mask_path: str | os.PathLike | None = None,
                 scanner: Scanner | str | None = None, dead_blocks: str | Sequence | None = None,
                 dead_crystals: str | Sequence | None = None,
                 data_root: str | os.PathLike = ".", fallback: np.ndarray | None = None,
                 check_shape: bool = False, allow_pickle: bool = False) -> ResolvedMask:
    """The dead-block mask a stage works with, from a ``scanner`` config section and flags.

    ``scanner_cfg`` is a ``ScannerConfig`` (``name``, ``dead_blocks``, ``dead_crystals``,
    ``mask``). Precedence: ``mask_path`` (a ``--mask`` file) > ``scanner`` given (a
    ``--scanner`` flag: computed, ``scanner_cfg.mask`` is then ignored) > ``scanner_cfg.mask``
    > ``fallback`` (a mask already at hand, e.g. the training store's) > computed from the dead
    blocks and crystals (``dead_blocks`` / ``dead_crystals`` when given, else the section's) on
    ``scanner`` or ``scanner_cfg.name``. Relative mask paths are taken under ``data_root``.
    ``check_shape``: a mask file must have the scanner's ``[plane, view, bin]`` shape (else the
    caller checks it against its scans). Raises :class:`BadInputError` when nothing names a
    dead block, crystal or mask file.
    """
    path = mask_path if mask_path is not None else (None if scanner else scanner_cfg.mask)
    name = scanner if scanner is not None else scanner_cfg.name
    if path is not None:
        path = Path(data_root) / path
        checked = get_scanner(name) if check_shape else None
        return ResolvedMask(load_mask(path, checked, allow_pickle=allow_pickle), path=path,
                            scanner=None if checked is None else checked.name)
    if fallback is not None:
        return ResolvedMask(np.asarray(fallback, np.float32))
    sc = get_scanner(name)
    blocks = parse_blocks(dead_blocks, "dead blocks") if dead_blocks is not None else \
        parse_blocks(scanner_cfg.dead_blocks, "scanner.dead_blocks")
    crystals = parse_crystals(dead_crystals, "dead crystals") if dead_crystals is not None \
        else parse_crystals(scanner_cfg.dead_crystals, "scanner.dead_crystals")
    if not blocks and not crystals:
        raise BadInputError("scanner.dead_blocks", "no dead blocks or crystals given (and no "
                                                   "mask file: scanner.mask or --mask)")
    return ResolvedMask(dead_block_mask(sc, blocks, crystals), scanner=sc.name, blocks=blocks,
                        crystals=crystals)


def sensitivity_map(scanner: Scanner | str, views_to: int | None = None) -> np.ndarray:
    """float32 ``[views_to, bin]``: the share of real LORs in each bin of the scanner's
    transaxial layout, ``valid sub-LORs / mash`` (0 in bins of gap crystals, 1/2 where one of
    two mashed views is real, ...). Every plane has this pattern, scaled by its ring-pair
    count (:func:`real_lor_count`). Views are padded to ``views_to`` (default: none) with the
    sinogram's flipped wrap, like the data (:func:`badblock.physics.stack.plane_stack`)."""
    from badblock.physics.stack import view_padding
    from badblock.physics.wrap import pad_views

    scanner = get_scanner(scanner)
    _, _, valid = transaxial_pairs(scanner)  # [view, mash, bin]
    share = valid.sum(axis=1).astype(np.float32) / float(valid.shape[1])
    before, after = view_padding(scanner.n_views, views_to or scanner.n_views)
    return np.ascontiguousarray(pad_views(share, None, before, after), dtype=np.float32)
