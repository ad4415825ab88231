"""Repair's self-check: how far to trust the network's correction on this scan, measured on the
scan's own counts.

Why. A residual network repairs a bin as its prior ``p`` (the model-based fill, or the normconv
estimate) plus a learnt correction ``d = o - p``. On the benchmark the correction helps on
average but not on every scan: at high counts and on structures it never saw it can make bins
worse than the prior it started from. Real data has no truth to tell which, but it has counts
the damage did not take.

How. The scan's dead blocks and crystals are rotated ``s`` blocks around the ring (the same
axial rows, so the same planes and the same kind of damage) and the rotated copy is laid on the
damaged scan as *virtual* damage: each count of a bin survives with probability
``(1 - f_c) / (1 - f_r)``, ``f_r`` the real lost fraction and ``f_c`` that of real and virtual
damage together (:func:`badblock.physics.mask.dead_block_mask` of the union). On a bin the real
damage missed (``f_r = 0``) that the virtual damage hits (``f_c > 0``), the surviving counts
``y'`` and the removed ones ``l = m - y'`` are independent Poisson variables of means
``(1 - f_c) lam`` and ``f_c lam`` (binomial thinning), so ``r = l / f_c`` is an unbiased estimate
of the truth ``lam``, independent of everything the repair of the virtually damaged scan sees,
with variance ``lam / f_c``. That repair gives ``p`` (the fill made again from the virtually
damaged scan: the real one has seen ``l``) and ``o`` on those bins, and for the rule
``x = p + w d`` the error against the truth,

    sum (p + w d - lam)^2,   minimised by   w* = sum (lam - p) d / sum d^2,

has its numerator estimated without bias by ``sum (r - p) d`` (``r`` is independent of ``p`` and
``d``): ``w^ = sum (r - p) d / sum d^2``, taken separately for partly damaged and fully dead bins
(``f >= 1 - badblock.metrics.DEAD_EPS``), over ``shifts`` rotated copies: 0 is the prior's
repair, 1 the network's own. Given ``p`` and ``d`` the estimate's only noise is that of ``r``
(variance ``lam / f``, estimated without bias by ``r / f``), so its standard error is

    se = sqrt(sum d^2 r / f) / sum d^2,

and the weight used is the lower confidence bound ``w = clip(w^ - z se, 0, 1)`` (``z``:
:data:`Z`): a correction is trusted only as far as the scan's counts show it helps. On fully
dead bins the correction is small against the held-out counts' noise, and ``w^`` scattered
around a best weight near 0: every overshoot made a bin worse than the prior
(docs/training.md). The NRMSE of prior, network and the weighted rule on those bins is
estimated as validation does (:func:`badblock.metrics.nrmse_estimate`): against the
truth, without it.

The thinning draws from a fixed seed, so the same scan repairs to the same bytes. Memory:
the virtually damaged scan and the repairs of it live in files under ``scratch`` (unlinked as
soon as they are mapped, so nothing is left behind even on a kill) and the thinning walks the
scan in chunks of planes: what the check adds in memory is of the mask's size, not the scan's
(but for a fill-prior network's fill, which :func:`badblock.baselines.scan_fill` makes in
memory). It needs
counts (an integer scan, or a float one holding whole counts), a residual network with the
mask channel, and the dead blocks and crystals the mask was made of (``--dead-blocks``/
``--scanner`` or ``auto``, not a bare mask file): without them repair runs with the
checkpoint's weights and says why.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from badblock.errors import BadInputError
from badblock.metrics import DEAD_EPS, nrmse_estimate
from badblock.physics.mask import dead_block_mask, thin_counts
from badblock.physics.scanners import get_scanner
from badblock.utils.atomic import reserve

# rotated copies of the damage whose bins are scored: one copy's weight moves with its block
# positions and its Poisson draw, so a few are pooled
SHIFTS = 3
SEED = 20191  # the thinning's seed: a fixed one, so that repair is reproducible
CLASSES = ("partial", "dead")
CHUNK_BYTES = 16 << 20  # counts per thinning chunk, as int64 (the working set is a few times it)
# standard errors the weight is lowered by (its lower confidence bound); chosen on the probe
# data sets, never the suite (bench/preset_probe.py, docs/training.md)
Z = 1.0


@dataclass
class SelfCheck:
    """The result of :func:`self_check`: ``weights`` per class (``partial``, ``dead``);
    ``bins`` scored per class (TOF bins counted apart); per class the unclipped ``estimate``
    ``w^`` and its standard error ``se``, and ``z`` the weights were lowered by (module
    docstring); per class and ``all`` the estimated NRMSE of the ``prior``, the ``network``
    and the weighted rule (``used``); the rotations
    ``shifts`` (in transaxial blocks); ``seconds`` it took. ``ran`` False (and ``why``) when
    it could not run."""

    ran: bool
    why: str = ""
    weights: dict = field(default_factory=dict)
    bins: dict = field(default_factory=dict)
    nrmse: dict = field(default_factory=dict)
    shifts: list = field(default_factory=list)
    seconds: float = 0.0
    estimate: dict = field(default_factory=dict)
    se: dict = field(default_factory=dict)
    z: float = Z

    def summary(self) -> dict:
        if not self.ran:
            return {"ran": False, "why": self.why}
        return {"ran": True, "shifts": self.shifts, "weights": self.weights, "bins": self.bins,
                "estimate": self.estimate, "se": self.se, "z": self.z,
                "estimated_nrmse": self.nrmse, "seconds": self.seconds}

    def line(self) -> str:
        """What repair prints."""
        if not self.ran:
            return f"self-check not run: {self.why}"
        n = self.nrmse["all"]
        w = {c: f"{self.weights[c]:.2f}" + (f" (estimate {self.estimate[c]:.2f} +- "
                                            f"{self.se[c]:.2f})" if self.estimate else "")
             for c in CLASSES}
        return (f"self-check on {len(self.shifts)} rotated copies of the damage: correction "
                f"weight {w['partial']} on partly damaged, {w['dead']} on fully dead bins"
                f"{f' (the estimates less {self.z:g} standard errors)' if self.z else ''}; "
                f"estimated NRMSE of the "
                f"damaged bins: prior {n['prior']:.4f}, network {n['network']:.4f}, "
                f"used {n['used']:.4f} ({self.seconds:.1f} s)")


def why_not(predictor, data, blocks, crystals, touched=None) -> str:
    """Why the self-check cannot run on this scan with this predictor ('' when it can);
    ``touched``: bool ``[P]``, the planes the damage touches (their values are checked)."""
    layout = getattr(predictor, "layout", None)
    if getattr(layout, "prior_channel", None) is None or not getattr(predictor, "mask_channel",
                                                                     False):
        return "the network is not a residual one with the mask channel"
    if not (getattr(predictor, "data", None) or {}).get("scanner"):
        return "the checkpoint names no scanner"
    if not blocks and not crystals:
        return ("the mask's dead blocks and crystals are not known (a mask file): give "
                "--scanner and --dead-blocks")
    kind = np.dtype(data.dtype).kind
    if kind not in "iuf":
        return f"the scan holds {np.dtype(data.dtype).name} values, not counts"
    if kind == "f" and touched is not None:
        # thinning needs whole counts; a float scan may hold them (a simulation) or not
        # (a corrected sinogram); the planes the damage touches are the ones it thins
        for t in range(data.shape[0]):
            for p in np.flatnonzero(touched):  # a plane at a time: no copy of the scan
                part = np.asarray(data[t, p])
                if not (np.isfinite(part).all() and (part >= 0).all()
                        and (part == np.rint(part)).all()):
                    return "the scan's values are not whole counts (a corrected sinogram?)"
    return ""


def rotations(scanner, blocks, crystals, shifts: int = SHIFTS) -> list[tuple[int, list, list]]:
    """``(s, blocks, crystals)`` of the damage rotated ``s`` transaxial blocks, for ``shifts``
    values of ``s`` spread evenly around the ring, each leaving the real blocks' positions (a
    damage that covers every position has none)."""
    n = scanner.blocks_transaxial
    taken = {t for t, _ in blocks}
    even = [round(j * n / (shifts + 1)) % n for j in range(1, shifts + 1)]
    out = []
    for s in dict.fromkeys(even + list(range(1, n))):
        moved = [((t + s) % n, a) for t, a in blocks]
        if s == 0 or taken & {t for t, _ in moved}:
            continue
        cr = [((c + s * scanner.block_pitch) % scanner.crystals_per_ring, r) for c, r in crystals]
        out.append((s, moved, cr))
        if len(out) == shifts:
            break
    return out


def _scratch(shape, dtype, where) -> np.ndarray:
    """A zeroed array mapped from a file in the folder ``where`` (None: the system's temporary
    folder), shared with forked repair workers. The file's space is reserved first (a map over
    unreserved space dies with SIGBUS when the disk fills; this way a full disk is one clear
    error) and the file is unlinked at once, so its space goes with the array, however the
    process ends."""
    nbytes = max(int(np.prod(shape)) * np.dtype(dtype).itemsize, 1)
    folder = Path(where if where is not None else tempfile.gettempdir())
    try:
        fd, name = tempfile.mkstemp(prefix=".badblock-selfcheck-", dir=folder)
    except OSError as exc:
        raise BadInputError(folder, f"the self-check cannot make its temporary files here "
                            f"({exc.strerror}); repair with --no-self-check") from None
    try:
        os.unlink(name)
        with os.fdopen(os.dup(fd), "r+b") as fh:
            try:
                reserve(fh, nbytes, folder)
            except BadInputError:  # a full disk: say what the room was for, and the ways out
                free = shutil.disk_usage(folder).free
                raise BadInputError(folder, f"no room for the self-check's temporary files "
                                    f"({nbytes} bytes more, {free} free): free some space, "
                                    "choose another output or repair with --no-self-check"
                                    ) from None
        buf = mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)
    return np.frombuffer(buf, dtype, int(np.prod(shape))).reshape(shape)


def thin_virtual(data: np.ndarray, mask: np.ndarray, both: np.ndarray,
                 generator: np.random.Generator, out: np.ndarray,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
    """``out`` = ``data`` ``[T, P, V, B]`` (damaged by ``mask``) thinned to the damage ``both``
    ``[P, V, B]`` (each count survives with probability ``(1 - both) / (1 - mask)``, 0 where
    ``mask`` is 1), in chunks of planes of about ``chunk_bytes``, walked in C order: the draws
    are those of one :func:`badblock.physics.mask.thin_counts` call on the whole scan."""
    n_tof, n_planes = data.shape[:2]
    step = max(1, int(chunk_bytes) // max(1, int(np.prod(data.shape[2:])) * 8))
    for t in range(n_tof):
        for a in range(0, n_planes, step):
            b = min(a + step, n_planes)
            m = mask[a:b]
            keep = np.where(m < 1.0, (1.0 - both[a:b]) / np.maximum(1.0 - m, 1e-12), 0.0)
            out[t, a:b] = thin_counts(np.asarray(data[t, a:b]), np.clip(keep, 0.0, 1.0),
                                      generator)


def _sums(r: np.ndarray, p: np.ndarray, o: np.ndarray, f: np.ndarray) -> np.ndarray:
    """float64 ``[7]``: sum (r - p) d, sum d^2, sum (r - p)^2, sum (r - o)^2, sum r / f,
    sum r^2, sum d^2 r / f over the given bins (``d = o - p``)."""
    d = o - p
    return np.array([((r - p) * d).sum(), (d * d).sum(), ((r - p) ** 2).sum(),
                     ((r - o) ** 2).sum(), (r / f).sum(), (r * r).sum(),
                     (d * d * r / f).sum()])


def lowered(estimate: float, se: float, z: float) -> float:
    """The weight used: ``clip(estimate - z se, 0, 1)``, rounded as repair reports it."""
    return round(float(np.clip(estimate - z * se, 0.0, 1.0)), 4)


def _nrmse(err, noise, ref2) -> float:
    return round(nrmse_estimate(float(err), float(noise), float(ref2)), 5)


def self_check(data: np.ndarray, mask: np.ndarray, predictor, predict, *, blocks, crystals=(),
               fill_for=None, shifts: int = SHIFTS, seed: int = SEED,
               scratch=None, z: float = Z) -> SelfCheck:
    """The correction weights of ``predictor`` for the damaged scan ``data`` ``[T, P, V, B]``
    with ``mask`` ``[P, V, B]`` made of ``blocks`` and ``crystals`` (module docstring).

    ``predict(data, mask, predictor, fill, out)`` repairs the scan ``data`` with ``mask`` into
    ``out`` (float32 ``[T, P, V, B]``, zeroed, only its damaged bins read) as repair does;
    ``fill_for(data, mask)``: the scan's model-based fill for a fill-prior network (None
    otherwise); ``scratch``: the folder of the temporary files (None: the system's temporary
    folder; repair gives its output's); ``z``: standard errors the weights are lowered by.
    The predictor is not changed."""
    import copy
    import time

    t0 = time.perf_counter()
    touched = mask.reshape(mask.shape[0], -1).max(axis=1, initial=0.0) > 0
    reason = why_not(predictor, data, blocks, crystals, touched)
    if reason:
        return SelfCheck(False, reason)
    scanner = get_scanner(predictor.data["scanner"])
    moves = rotations(scanner, list(blocks), list(crystals), shifts)
    if not moves:
        return SelfCheck(False, "the damage leaves no block position to rotate it to")
    own = copy.copy(predictor)
    own.partial_weight = own.dead_weight = 1.0
    flat = copy.copy(predictor)
    flat.partial_weight = flat.dead_weight = 0.0
    sums = {c: np.zeros(7) for c in CLASSES}
    n = {c: 0 for c in CLASSES}
    for j, (_, b2, c2) in enumerate(moves):
        both = dead_block_mask(scanner, sorted(set(blocks) | set(b2)),
                               sorted(set(crystals) | set(c2)))
        virtual = _scratch(data.shape, data.dtype, scratch)
        thin_virtual(data, mask, both, np.random.default_rng([seed, j]), virtual)
        fill = None if fill_for is None else fill_for(virtual, both)
        outs = []
        for who in (own, flat):
            if who is flat and fill is not None:
                outs.append(fill)  # weight 0 is the fill itself, bit for bit: no network call
                continue
            out = _scratch(data.shape, np.float32, scratch)
            predict(virtual, both, who, fill, out)
            outs.append(out)
        scored = (mask <= 0) & (both > 0)
        f = both[scored].astype(np.float64)
        dead = f >= 1.0 - DEAD_EPS
        for t in range(data.shape[0]):  # a TOF bin at a time: arrays of the scored bins' size
            m = np.asarray(data[t][scored], np.float64)
            r = (m - np.asarray(virtual[t][scored], np.float64)) / f
            o, p = (np.asarray(x[t][scored], np.float64) for x in outs)
            for c, sel in (("partial", ~dead), ("dead", dead)):
                sums[c] += _sums(r[sel], p[sel], o[sel], f[sel])
                n[c] += int(sel.sum())
        # unmapped, and the mask-sized arrays freed, before the next rotation makes its own
        del virtual, outs, fill, both, scored, f, dead
    # no correction on the scored bins (d = 0 everywhere): nothing to weigh, the network's own
    estimate = {c: (float(s[0] / s[1]) if s[1] > 0 else 1.0) for c, s in sums.items()}
    se = {c: (float(np.sqrt(max(s[6], 0.0)) / s[1]) if s[1] > 0 else 0.0)
          for c, s in sums.items()}
    # rounded before use: the weights repair applies are the ones its summary reports
    weights = {c: lowered(estimate[c], se[c], z) for c in CLASSES}
    nrmse = {}
    total = np.zeros(7)
    used_all = 0.0
    for c, s in sums.items():
        w = weights[c]
        # sum (r - p - w d)^2 = sum (r - p)^2 - 2 w sum (r - p) d + w^2 sum d^2
        used = s[2] - 2 * w * s[0] + w * w * s[1]
        used_all += used
        total += s
        nrmse[c] = {"prior": _nrmse(s[2], s[4], s[5]), "network": _nrmse(s[3], s[4], s[5]),
                    "used": _nrmse(used, s[4], s[5])}
    nrmse["all"] = {"prior": _nrmse(total[2], total[4], total[5]),
                    "network": _nrmse(total[3], total[4], total[5]),
                    "used": _nrmse(used_all, total[4], total[5])}
    return SelfCheck(True, weights=weights, bins=n,
                     nrmse=nrmse, shifts=[s for s, _, _ in moves],
                     seconds=round(time.perf_counter() - t0, 2),
                     estimate=estimate, se=se, z=float(z))


__all__ = ["SelfCheck", "self_check", "rotations", "thin_virtual", "why_not", "lowered",
           "SHIFTS", "SEED", "Z"]
