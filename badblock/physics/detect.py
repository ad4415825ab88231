"""Find the dead blocks and dead crystals of a scanner from a damaged scan itself; check a
declared mask against the scan.

:func:`detect` returns a :class:`Detection` (the dead blocks and crystals, the evidence, what
could not be decided, and the mask via :meth:`Detection.mask`); :func:`check_mask` raises
:class:`~badblock.errors.BadInputError` when a mask contradicts the scan. Both work on the
prompts summed over TOF, read plane by plane (a memory map stays on disk). The statistics -- a
Poisson test of each candidate against expected counts estimated from the scan itself -- are in
:mod:`badblock.physics.deadsearch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from badblock.errors import BadInputError
from badblock.physics.deadsearch import (
    FILL_SCALES,
    FULL,
    Z_DEFAULT,
    Model,
    Verdict,
    block_count_error,
    search,
    verify,
)
from badblock.physics.footprint import block_footprint, crystal_footprint
from badblock.physics.mask import dead_block_mask, lost_lor_count
from badblock.physics.scanners import PRESETS, Scanner, get_scanner


def tof_sum(data, where: str = "scan", chunk: int = 16) -> np.ndarray:
    """float32 ``[plane, view, bin]``: the scan ``[TOF, plane, view, bin]`` (or 3-D) summed over
    TOF, read ``chunk`` planes at a time (a memory map stays on disk). Refuses non-finite or
    negative values: detection needs prompts (counts), not corrected data."""
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise BadInputError(where, f"shape {data.shape} is not [TOF, plane, view, bin]")
    out = np.empty(data.shape[1:], dtype=np.float32)
    for p0 in range(0, data.shape[1], chunk):
        block = np.asarray(data[:, p0:p0 + chunk])
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            raise BadInputError(where, f"non-finite values in planes {p0}..{p0 + chunk - 1}")
        if block.dtype.kind in "fi" and block.min(initial=0) < 0:
            raise BadInputError(where, "negative values: detection needs prompts (raw counts), "
                                       "not randoms-subtracted or corrected data")
        out[p0:p0 + chunk] = block.sum(axis=0, dtype=np.float64)
    return out


def scanner_for(shape: Sequence[int], scanner: Scanner | str | None, where: str) -> Scanner:
    """The scanner preset of a scan ``[.., plane, view, bin]``: the one given (checked) or the
    only preset of that shape."""
    shape = tuple(int(n) for n in shape[-3:])
    if scanner is None:
        match = [s for s in PRESETS.values() if s.shape[1:] == shape]
        if len(match) != 1:
            raise BadInputError(where, f"no scanner given and {len(match)} presets have "
                                       f"[plane, view, bin] = {list(shape)}: name the scanner")
        return match[0]
    sc = get_scanner(scanner)
    if sc.shape[1:] != shape:
        raise BadInputError(where, f"[plane, view, bin] = {list(shape)} is not the {sc.name}'s "
                                   f"{list(sc.shape[1:])}")
    return sc


def _names(pairs) -> list[str]:
    return [f"{a}:{b}" for a, b in pairs]


@dataclass
class Detection:
    """What :func:`detect` found in one scan.

    ``blocks``: dead blocks ``(T, A)``; ``crystals``: dead single crystals ``(crystal, ring)``
    outside them; ``verdicts``: the evidence for each, in the order found;
    ``block_theta``/``block_info``: deadness estimate and its Fisher information of every
    block ``[axial, transaxial]`` (the found ones as verified); ``undecided_blocks`` and
    ``undecided_crystals``: candidates the evidence could not decide (too few counts, or too
    small a share of their bins' LORs; None for crystals when they were not searched);
    ``counts``: the scan summed over TOF.
    """

    scanner: Scanner
    blocks: list[tuple[int, int]]
    crystals: list[tuple[int, int]]
    verdicts: list[Verdict]
    block_theta: np.ndarray
    block_info: np.ndarray
    undecided_blocks: list[tuple[int, int]]
    undecided_crystals: list[tuple[int, int]] | None
    z: float
    counts: np.ndarray

    def mask(self) -> np.ndarray:
        """The dead-block mask of what was found: float32 ``[plane, view, bin]``."""
        return dead_block_mask(self.scanner, self.blocks, self.crystals)

    def summary(self) -> dict:
        """JSON-able summary: the blocks and crystals found, the evidence, the undecided."""
        und = self.undecided_crystals
        return {
            "scanner": self.scanner.name, "dead_blocks": _names(self.blocks),
            "dead_crystals": _names(self.crystals), "z": self.z,
            "evidence": [v.as_dict() for v in self.verdicts],
            "undecided_blocks": _names(self.undecided_blocks),
            "crystals_searched": und is not None,
            "undecided_crystals": None if und is None else len(und),
            "crystal_candidates": None if und is None else int(
                crystal_footprint(self.scanner).real.sum()),
        }


def detect(data, scanner: Scanner | str | None = None, *, crystals: bool = True,
           z: float = Z_DEFAULT, where: str = "scan") -> Detection:
    """Find the dead blocks (and, with ``crystals``, dead single crystals) in a damaged scan.

    ``data``: prompts ``[TOF, plane, view, bin]`` or ``[plane, view, bin]`` (array or memory
    map, raw counts); ``scanner``: its preset (default: the one preset of that shape); ``z``:
    the evidence needed, in standard deviations (see :mod:`badblock.physics.deadsearch`).
    Raises :class:`BadInputError` for a scan of the wrong shape, negative or non-finite values.
    """
    if not z > 0:
        raise BadInputError("z", f"must be positive, not {z}")
    sc = scanner_for(np.shape(data), scanner, where)
    model = Model(tof_sum(data, where), sc)
    found = search(model, lambda b, c: lost_lor_count(sc, b, c), crystals=crystals, z=z)
    theta, info = found.theta["block"].copy(), found.info["block"].copy()
    for v in found.verdicts:
        if v.kind == "block":
            theta[v.index[1], v.index[0]], info[v.index[1], v.index[0]] = v.theta, v.info
    return Detection(sc, sorted(found.blocks), sorted(found.crystals), found.verdicts, theta, info,
                     found.undecided["block"], found.undecided.get("crystal"), z, model.counts)


def detect_scan(path, scanner: Scanner | str | None = None, *, crystals: bool = True,
                z: float = Z_DEFAULT) -> Detection:
    """:func:`detect` on a scan file (any format :func:`badblock.io.read_scan` reads), read by
    memory map. ``scanner`` defaults to the header's, else the one preset of that shape."""
    from badblock.io import read_scan

    scan = read_scan(path)
    if scanner is None and scan.header.scanner in PRESETS:
        scanner = scan.header.scanner
    return detect(scan.data, scanner, crystals=crystals, z=z, where=str(path))


def _block_at(sc: Scanner, n: np.ndarray, mask: np.ndarray, p: int, v: int, e: int) -> str:
    """Who declares bin (p, v, e) fully dead: of the blocks that hold all of the bin's LORs,
    the one whose own fully dead bins the mask covers best (an error path: exact masks)."""
    fp = block_footprint(sc)
    row = v * sc.n_bins + e
    g = (np.outer(fp.a1[p], fp.t1[row].toarray().ravel())
         + np.outer(fp.a2[p], fp.t2[row].toarray().ravel()))
    whole = [(int(t), int(a)) for a, t in np.argwhere(g >= n[p, v, e] - 0.5)]
    if not whole:  # a mask not made of whole blocks
        return "the mask"

    def covered(block):
        own = lost_lor_count(sc, [block]) >= n - 0.5
        own &= n > 0
        return float((mask[own] >= FULL).mean()) if own.any() else 0.0

    t, a = max(whole, key=covered)
    return f"the mask declares block {t}:{a} dead, but"


def _check_declared(model: Model, blocks: list, crystals: list, mask: np.ndarray, z: float,
                    eps: float, where: str) -> list[dict]:
    """Verify each declared block and crystal with the others known dead (step 3)."""
    sc = model.scanner
    if np.abs(dead_block_mask(sc, blocks, crystals) - mask).max() > 1e-5:
        raise BadInputError(where, "the mask is not the one of the declared dead blocks "
                                   f"{_names(blocks) or 'none'} and crystals "
                                   f"{_names(crystals) or 'none'}")
    everything = lost_lor_count(sc, blocks, crystals)
    out = []
    for kind, items in (("block", blocks), ("crystal", crystals)):
        for item in items:
            others = ([b for b in blocks if b != item], crystals) if kind == "block" else \
                (blocks, [c for c in crystals if c != item])
            v = verify(model, kind, item, lost_lor_count(sc, *others), everything, z, eps)
            if v.decided and v.theta < 0.5:
                raise BadInputError(where, f"declared dead {kind} {v.name} is alive in this scan: "
                                    f"its bins hold {100 * (1 - v.theta * v.fbar):.0f}% of the "
                                    f"counts expected if alive (deadness {v.theta:.2f} +- "
                                    f"{v.sd:.2f})")
            out.append(v.as_dict())
    return out


def check_mask(data, mask: np.ndarray, scanner: Scanner | str | None = None, *,
               blocks: Sequence | None = None, crystals: Sequence | None = None,
               z: float = Z_DEFAULT, undeclared: bool = True, search_crystals: bool = False,
               where: str = "mask") -> dict:
    """Check a dead-block ``mask`` (fraction of LORs lost, ``[plane, view, bin]``) against the
    damaged scan ``data`` it is meant for; raise :class:`BadInputError` on a contradiction.

    1. Bins the mask calls fully dead (f = 1) must hold no count: a dead crystal records
       nothing, so one count there proves the mask wrong (the message names the block the mask
       declares there and the counts found).
    2. The bins the mask thins must be thinned: the deadness estimate of the mask as a whole
       (``theta``, 1 when the declared loss is in the data, 0 when not) must reach 1/2 wherever
       its information allows a decision (else the report says it could not decide).
    3. Given the declared ``blocks`` (T, A) and ``crystals`` (crystal, ring) the mask was
       made of, each must be dead on its own: none may be decided alive (this catches an alive
       crystal declared beside a right block, which step 2 averages away).
    4. With ``undeclared``, the declared damage must explain the scan: a search for further
       dead blocks (and crystals, with ``search_crystals``) with the mask's loss taken as
       known must find none.

    Statistical steps use the z-sigma rule of :mod:`badblock.physics.deadsearch`, so planes
    with few counts decide nothing by chance. Returns a JSON-able report.
    """
    mask = np.asarray(mask, dtype=np.float32)
    if mask.ndim != 3 or mask.shape != tuple(np.shape(data)[-3:]):
        raise BadInputError(where, f"mask shape {list(mask.shape)} does not match the scan's "
                                   f"[plane, view, bin] {list(np.shape(data)[-3:])}")
    sc = scanner_for(mask.shape, scanner, where)
    model = Model(tof_sum(data, "scan"), sc)
    counts, n = model.counts, model.n
    full = (mask >= FULL) & (n > 0)
    bad = full & (counts > 0)
    if bad.any():
        p, v, e = np.unravel_index(np.argmax(np.where(bad, counts, 0)), counts.shape)
        raise BadInputError(where, f"{_block_at(sc, n, mask, p, v, e)} {int(bad.sum())} of the "
                            f"{int(full.sum())} bins it calls fully dead hold "
                            f"{counts[bad].sum():.0f} counts (most at plane {p}, view {v}, bin "
                            f"{e}: {counts[p, v, e]:.0f}); a dead crystal records nothing, so the "
                            "mask does not fit this scan (wrong block?)")
    report = {"scanner": sc.name, "fully_dead_bins": int(full.sum()),
              "counts_in_fully_dead_bins": 0}
    eps = block_count_error(model, n * mask)
    # estimated from the bins the mask spares, on the planes it touches
    mu, ok = model.mu(n, (n > 0) & (mask <= 0), FILL_SCALES, need=(n > 0) & (mask > 0))
    ok &= mask > 0
    f, lam, y = mask[ok].astype(np.float64), (mu * n)[ok].astype(np.float64), counts[ok]
    info = float((f * f * lam).sum())
    whole = Verdict("mask", (0, 0), float((f * (lam - y)).sum() / info) if info > 0 else 0.0,
                    info, 0, 0.0, 0.0, z, info / max(float((f * lam).sum()), 1e-12), eps)
    report.update(theta=round(whole.theta, 4) if info > 0 else None, info=round(info, 1),
                  count_error=round(eps, 4), thinning_decided=whole.decided)
    if whole.decided and whole.theta < 0.5:
        raise BadInputError(where, f"the bins the mask thins are not thinned in this scan: "
                            f"deadness {whole.theta:.2f} +- {whole.sd:.2f} (1 if the declared "
                            "blocks are dead, 0 if not): the mask does not fit this scan")
    if blocks is not None or crystals is not None:
        report["declared"] = _check_declared(model, list(blocks or ()), list(crystals or ()),
                                             mask, z, eps, where)
    if undeclared:
        lost_known = n * mask
        found = search(model, lambda b, c: lost_known + (1 - mask) * lost_lor_count(sc, b, c),
                       crystals=search_crystals, z=z, skip_blocks=blocks or ())
        if found.verdicts:
            v = found.verdicts[0]
            what = (f"its {v.full_bins} fully dead bins hold no count where "
                    f"{v.full_expected:.0f} were expected" if v.full_bins else
                    f"its bins hold {100 * (1 - v.theta * v.fbar):.0f}% of the counts expected")
            raise BadInputError(where, f"the scan shows a dead {v.kind} {v.name} the mask does "
                                f"not declare: {what} (deadness {v.theta:.2f} +- {v.sd:.2f})")
        report["undecided_blocks"] = _names(found.undecided["block"])
    report["undeclared_checked"] = bool(undeclared)
    return report


def check_scan_mask(data, mask: np.ndarray, scanner: Scanner | str | None = None, *,
                    blocks: Sequence | None = None, crystals: Sequence | None = None,
                    where: str = "scan", what: str = "the mask") -> dict:
    """:func:`check_mask` as the stages run it on a damaged scan ``data`` before using
    ``mask`` on it; returns the JSON-able report, ``checked`` saying whether it ran.

    ``scanner``: the preset the mask was made for, else the scan's (its header's, when a
    preset), else the one preset of the scan's shape; when no preset knows the geometry the
    check cannot run and the report says why. ``blocks``/``crystals``: what the mask was made
    of, when known. A contradiction raises :class:`BadInputError` naming ``where`` (the scan),
    with check_mask's reason (the block and the counts found), ``what`` (how the mask was
    given) and the way to override.
    """
    if scanner is None or (isinstance(scanner, str) and scanner not in PRESETS):
        try:
            scanner = scanner_for(np.shape(mask), None, where)
        except BadInputError as exc:
            return {"checked": False, "why": f"no preset scanner to check it with ({exc.problem})"}
    try:
        counts = tof_sum(data, where)  # read once; what check_mask sums is then 3-D
    except BadInputError as exc:  # not prompts (negative values): nothing to test it on
        return {"checked": False, "why": exc.problem}
    try:
        report = check_mask(counts, mask, scanner, blocks=blocks, crystals=crystals, where=where)
    except BadInputError as exc:
        raise BadInputError(where, f"{what} does not fit this scan: {exc.problem} "
                                   "(--no-mask-check uses it anyway)") from None
    return {"checked": True, "mask": what, **report}
