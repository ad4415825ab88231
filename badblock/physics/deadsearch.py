"""The statistics that find dead blocks and crystals in a scan (for :mod:`badblock.physics.detect`).

Physics. A dead crystal records nothing, so every LOR through it is lost in every TOF bin: bin
``i`` keeps a fraction ``1 - f_i`` of its real LORs and its counts are Poisson with mean
``lambda_i (1 - theta f_i)``, where ``f_i`` is the fraction of the bin's (still alive) LORs
through the candidate (a block or one crystal, :mod:`badblock.physics.footprint`) and
``theta`` is 1 if the candidate is dead, 0 if not. TOF is summed first: ``f`` is the same for
all TOF bins, so the TOF sum is sufficient for ``theta``.

Expected counts without the truth. ``lambda_i = mu_i * alive_i``: ``alive_i`` is the number of
real LORs of the bin not through crystals already known dead, ``mu_i`` the counts per LOR, a
smooth function estimated by normalised convolution of the scan itself,
``mu = G * (w y) / G * (w alive)`` (Gaussian ``G`` across views, with the sinogram's flipped
wrap at 180 degrees, and across bins; ``w`` the bins used). Gap crystals and known dead LORs
drop out through ``alive``.

The test. The one-step Poisson maximum-likelihood estimate of ``theta`` from ``theta = 0`` is
``theta_hat = sum f (lambda - y) / sum f^2 lambda``, unbiased, with Poisson standard deviation
``1 / sqrt(I)`` if alive, ``I = sum f^2 lambda`` the Fisher information. An error ``eps`` of the
estimated ``lambda`` (relative) moves ``theta_hat`` by ``eps / fbar``, ``fbar = sum f^2 lambda /
sum f lambda`` the mean loss of the candidate's bins; ``eps`` is measured on the scan itself
(:func:`count_error`) and both parts make the standard deviation ``sd``. A candidate is

- *dead* when ``theta_hat >= 1/2``, ``sd <= 1 / (2 z)`` (1/2 lies ``z`` standard deviations
  from both 0 and 1; ``z = 5`` by default, for tens of thousands of candidates) and its fully
  dead bins (``f = 1``) hold no count at all (under "dead" they hold exactly 0; any count
  refutes it, whatever the estimate of ``lambda``);
- *cannot decide* when ``sd > 1 / (2 z)``: its LORs see too few expected counts, or it removes
  too small a share of its bins' LORs to be told from the error of the expected counts;
- otherwise alive.

Search: all candidates are scored at
once (the footprint sums, with ``mu`` from all bins); the most significant are verified one by
one with the exact mask of the candidate and ``mu`` re-estimated *without* the candidate's
bins (so a dead candidate's own deficit cannot hide it; where that leaves a hole wider than
the kernel, wider kernels fill it, else those bins carry no information); each accepted
candidate joins the known dead before the next search (so adjacent and several dead blocks are
found), and its neighbours are verified next whatever their scores (a dead neighbour's hole
leaves a candidate little but its own thinned bins to score with). Blocks first, then single
crystals outside the dead blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from badblock.physics.footprint import Footprint, block_footprint, crystal_footprint
from badblock.physics.mask import real_lor_count
from badblock.physics.scanners import Scanner
from badblock.physics.wrap import pad_views, partner_planes

Z_DEFAULT = 5.0
# Gaussian sigmas (views, bins) of the expected-count estimate, chosen on validation seeds
# (bench/detect.py --validate), not on the benchmark's.
WIDTHS = (1.0, 1.0)
# Candidates scored at least this dead are verified exactly, most significant first. Low on
# purpose: the scores' expected counts include the candidate's own (thinned) bins, so a dead
# candidate surrounded by dead neighbours scores well below 1 until verified.
SCAN_THETA = 0.15
MAX_TRIES = 6  # best-scored candidates verified per search round (neighbours come on top)
MIN_WEIGHT = 0.25  # a bin's estimate needs this share of the kernel weight of all bins
FILL_SCALES = (1.0, 2.0, 4.0)  # kernel widths (times WIDTHS) tried in turn to fill holes
FULL = 1.0 - 1e-6  # f at or above this: a fully dead bin
# Empty fully dead bins that would have held this many counts if alive (Poisson: e^-20 to see
# none) prove a candidate dead without comparing it to its neighbours.
FULL_PROOF = 20.0
# The verification's expected counts interpolate over a hole (the candidate's own bins): their
# relative error is taken as this many times the one measured on the scores of all candidates.
SYS_FACTOR = 2.0


class Model:
    """The scan (TOF summed) and the smoothing that estimates its counts per LOR."""

    def __init__(self, counts: np.ndarray, scanner: Scanner, widths=WIDTHS):
        self.counts = counts
        self.scanner = scanner
        self.n = real_lor_count(scanner).astype(np.float32)
        self.partners = partner_planes(list(scanner.segments))
        self.widths = widths

    def smooth(self, x: np.ndarray, scale: float = 1.0, partners=None) -> np.ndarray:
        """Separable Gaussian of ``x [plane, view, bin]`` (the widths times ``scale``): views
        with the sinogram's flipped wrap at 180 degrees (``partners[p]``: the row of plane p's
        partner in ``x``), bins reflected at the edges. Planes are not mixed."""
        from scipy.ndimage import gaussian_filter1d

        partners = self.partners if partners is None else partners
        s_view, s_bin = (w * scale for w in self.widths)
        n_views = x.shape[1]
        if s_view > 0:
            pad = int(math.ceil(4 * s_view))
            x = pad_views(x, x[partners], pad, pad)
            x = gaussian_filter1d(x, s_view, axis=1, mode="nearest")[:, pad:pad + n_views]
        if s_bin > 0:
            x = gaussian_filter1d(x, s_bin, axis=2, mode="reflect")
        return x

    def mu(self, alive: np.ndarray, use: np.ndarray, scales: Sequence[float] = (1.0,),
           need: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Counts per alive LOR estimated from the bins ``use``, and ``ok``: the bins whose
        estimate rests on at least ``MIN_WEIGHT`` of the kernel weight that all alive bins
        would give. Bins short of it at one width take the estimate of the next of ``scales``
        (holes left by a candidate's own bins and its dead neighbours). With ``need`` (bool
        ``[plane, view, bin]``) only the planes holding needed bins (and their wrap partners)
        are estimated, and wider scales stop once every needed bin is ok."""
        has = alive > 0
        mu = np.zeros(alive.shape, dtype=np.float32)
        ok = np.zeros(alive.shape, dtype=bool)
        rows, partners = slice(None), self.partners
        if need is not None and not need.any():
            return mu, ok
        if need is not None:
            planes = np.nonzero(need.any(axis=(1, 2)))[0]
            rows = np.union1d(planes, self.partners[planes])
            local = np.full(len(self.partners), -1)
            local[rows] = np.arange(len(rows))
            partners = local[self.partners[rows]]
        a, u, y, h = alive[rows], use[rows], self.counts[rows], has[rows]
        m, good_all = mu[rows], ok[rows]
        target = h if need is None else need[rows]
        for scale in scales:
            den_all = self.smooth(np.where(h, a, 0).astype(np.float32), scale, partners)
            den = den_all if np.array_equal(u, h) else self.smooth(
                np.where(u, a, 0).astype(np.float32), scale, partners)
            num = self.smooth(np.where(u, y, 0).astype(np.float32), scale, partners)
            good = ~good_all & h & (den > 1e-6) & (den >= MIN_WEIGHT * den_all)
            m[good] = num[good] / den[good]
            good_all |= good
            if good_all[target].all():
                break
        mu[rows], ok[rows] = m, good_all
        return mu, ok


@dataclass
class Verdict:
    """The evidence about one candidate: ``kind`` 'block' or 'crystal', ``index`` (T, A) or
    (crystal, ring); ``theta`` the deadness estimate, ``info`` its Fisher information; the
    fully dead bins it would have, the counts they hold and those expected if it were alive."""

    kind: str
    index: tuple[int, int]
    theta: float
    info: float
    full_bins: int
    full_counts: float
    full_expected: float
    z: float
    fbar: float = 1.0  # mean loss of the candidate's bins, sum f^2 lambda / sum f lambda
    eps: float = 0.0  # relative error of the expected counts (see :func:`count_error`)

    @property
    def sd(self) -> float:
        """Standard deviation of ``theta``: Poisson ``1/sqrt(I)`` and the expected counts'
        error ``SYS_FACTOR * eps / fbar`` (an error eps of lambda moves theta by eps/fbar)."""
        if self.info <= 0:
            return math.inf
        return math.sqrt(1 / self.info + (SYS_FACTOR * self.eps / max(self.fbar, 1e-12)) ** 2)

    @property
    def decided(self) -> bool:
        """Enough evidence: 1/2 lies ``z`` standard deviations from both 0 and 1."""
        return self.sd <= 1 / (2 * self.z)

    @property
    def dead(self) -> bool:
        return self.decided and self.theta >= 0.5 and self.full_counts == 0

    @property
    def name(self) -> str:
        return f"{self.index[0]}:{self.index[1]}"

    def as_dict(self) -> dict:
        def num(x, digits):  # JSON has no inf or nan
            return round(x, digits) if math.isfinite(x) else None

        return {"kind": self.kind, "index": self.name, "theta": round(self.theta, 4),
                "sd": num(self.sd, 4), "info": num(self.info, 1),
                "mean_loss": round(self.fbar, 4), "count_error": round(self.eps, 4),
                "fully_dead_bins": self.full_bins, "counts_in_fully_dead_bins": self.full_counts,
                "expected_there_if_alive": num(self.full_expected, 1)}


def verify(model: Model, kind: str, index, lost0: np.ndarray, lost1: np.ndarray,
           z: float, eps: float = 0.0) -> Verdict:
    """Exact test of one candidate: ``lost1 - lost0`` are its LORs not already known dead;
    ``eps`` the relative error of the expected counts (:func:`count_error`). A candidate whose
    fully dead bins hold a count is alive for certain: ``theta`` 0 with infinite ``info``."""
    alive = model.n - lost0
    extra = lost1 - lost0
    has = alive > 0
    f = np.divide(extra, alive, out=np.zeros_like(extra), where=has)
    full = has & (f >= FULL)
    seen = float(model.counts[full].sum())
    if seen > 0:  # a count where all LORs are its own proves it alive: no estimate needed
        return Verdict(kind, tuple(int(i) for i in index), 0.0, math.inf, int(full.sum()),
                       seen, math.nan, z)
    # its own bins left out; only its planes estimated
    mu, ok = model.mu(alive, has & (extra <= 0), FILL_SCALES, need=has & (extra > 0))
    lam = mu * alive
    fo, lo, yo = f[ok].astype(np.float64), lam[ok].astype(np.float64), model.counts[ok]
    info = float((fo * fo * lo).sum())
    theta = float((fo * (lo - yo)).sum() / info) if info > 0 else 0.0
    fbar = info / max(float((fo * lo).sum()), 1e-12)
    return Verdict(kind, tuple(int(i) for i in index), theta, info, int(full.sum()),
                   float(model.counts[full].sum()), float(lam[full & ok].sum()), z, fbar, eps)


@dataclass
class Search:
    """What :func:`search` found: dead ``blocks`` (T, A) and ``crystals`` (crystal, ring), the
    ``verdicts`` of the accepted ones (in the order found), and per kind the final scores of
    every candidate (``theta``/``info`` ``[axial, transaxial]``) with ``undecided`` those whose
    evidence could not decide, and ``eps`` the measured relative error of the expected
    counts (:func:`count_error`)."""

    blocks: list[tuple[int, int]] = field(default_factory=list)
    crystals: list[tuple[int, int]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    theta: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, np.ndarray] = field(default_factory=dict)
    undecided: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    eps: dict[str, float] = field(default_factory=dict)


def _scores(fp: Footprint, model: Model, alive: np.ndarray, mu: np.ndarray,
            ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """theta_hat, I and the mean loss ``sum f^2 lambda / sum f lambda`` of every candidate at
    once (footprint sums; ``mu`` from all bins)."""
    safe = np.where(ok, alive, 1.0)
    s_mu = fp.sums(np.where(ok, mu, 0))
    s_y = fp.sums(np.where(ok, model.counts / safe, 0))
    info = fp.sums(np.where(ok, mu / safe, 0), squared=True)
    theta = np.divide(s_mu - s_y, info, out=np.zeros_like(info), where=info > 0)
    fbar = np.divide(info, s_mu, out=np.zeros_like(info), where=s_mu > 0)
    return theta, info, fbar


def count_error(theta: np.ndarray, info: np.ndarray, fbar: np.ndarray, use: np.ndarray) -> float:
    """Relative error of the expected counts, measured on the candidates themselves.

    Almost every candidate is alive, so ``theta * fbar`` (the relative count deficit of its
    bins) scatters around 0 by the Poisson part ``fbar / sqrt(I)`` and by the error of the
    estimated ``lambda``; the latter is what is left of the robust spread (1.4826 x MAD) after
    the Poisson part. On the Vision a single crystal is about 1/70 of the LORs of its bins
    (8 sub-views x up to 10 ring pairs): a 2 % error of ``lambda`` then moves ``theta`` by more
    than 1, and this is what makes such crystals "cannot decide" rather than false positives.
    """
    use = use & (info > 0)
    if use.sum() < 8:
        return 0.0
    r = (theta * fbar)[use]
    spread = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    poisson = float(np.median((fbar[use] ** 2) / info[use]))
    return math.sqrt(max(0.0, spread * spread - poisson))


def block_count_error(model: Model, lost0: np.ndarray) -> float:
    """:func:`count_error` measured on the scores of all blocks, ``lost0`` known lost."""
    fp = block_footprint(model.scanner)
    alive = model.n - lost0
    mu, ok = model.mu(alive, alive > 0)
    return count_error(*_scores(fp, model, alive, mu, ok), fp.real)


def _neighbours(kind: str, sc: Scanner, index: tuple[int, int]) -> list[tuple[int, int]]:
    """The transaxial (around the ring) and axial neighbours of a block or crystal."""
    t, a = index
    n_t, n_a = (sc.blocks_transaxial, sc.blocks_axial) if kind == "block" else \
        (sc.crystals_per_ring, sc.n_rings)
    return [((t - 1) % n_t, a), ((t + 1) % n_t, a)] + [(t, a + d) for d in (-1, 1)
                                                       if 0 <= a + d < n_a]


def _trial(model: Model, lost, out: Search, kind: str, cand: tuple[int, int],
           lost0: np.ndarray, z: float, eps: float) -> Verdict:
    """Verify ``cand`` with the damage found so far known."""
    trial = (out.blocks + [cand], out.crystals) if kind == "block" else \
        (out.blocks, out.crystals + [cand])
    return verify(model, kind, cand, lost0, lost(*trial), z, eps)


def _skip(kind: str, fp: Footprint, sc: Scanner, out: Search, skip_blocks) -> np.ndarray:
    """bool ``[axial, transaxial]``: not candidates (virtual, already dead, in a dead block)."""
    skip = ~fp.real
    if kind == "block":
        for t, a in list(out.blocks) + list(skip_blocks):
            skip[a, t] = True
        return skip
    for t, a in out.blocks:
        skip[np.ix_(list(sc.block_rings(a)), list(sc.block_crystals(t)))] = True
    for c, r in out.crystals:
        skip[r, c] = True
    return skip


def search(model: Model, lost: Callable[[list, list], np.ndarray], *, crystals: bool = True,
           z: float = Z_DEFAULT, skip_blocks: Sequence = ()) -> Search:
    """Greedy search for dead blocks, then dead crystals. ``lost(blocks, crystals)`` gives the
    LORs per bin lost by the known damage plus those candidates (float32 ``[plane, view, bin]``);
    ``skip_blocks`` are not candidates.
    """
    sc = model.scanner
    out = Search()
    kinds = [("block", block_footprint(sc))] + ([("crystal", crystal_footprint(sc))]
                                                 if crystals else [])
    for kind, fp in kinds:
        found = out.blocks if kind == "block" else out.crystals
        unsure: set[tuple[int, int]] = set()  # verified, but not decided
        pending: set[tuple[int, int]] = set()  # neighbours of dead ones, to verify regardless
        while True:
            lost0 = lost(out.blocks, out.crystals)
            alive = model.n - lost0
            mu, ok = model.mu(alive, alive > 0)
            theta, info, fbar = _scores(fp, model, alive, mu, ok)
            skip = _skip(kind, fp, sc, out, skip_blocks)
            eps = count_error(theta, info, fbar, ~skip)
            sd = np.sqrt(np.divide(1.0, info, out=np.full_like(info, np.inf), where=info > 0)
                         + (SYS_FACTOR * eps / np.maximum(fbar, 1e-12)) ** 2)
            decidable = sd <= 1 / (2 * z)
            good = (~skip) & (theta >= SCAN_THETA) & decidable
            signif = np.where(good, theta * np.sqrt(np.maximum(info, 0)), -np.inf)
            top = [(int(t), int(a)) for a, t in zip(*np.unravel_index(
                np.argsort(-signif, axis=None)[:MAX_TRIES], theta.shape)) if good[a, t]]
            # Neighbours of dead ones first: their scores are the least reliable (a dead
            # neighbour's hole leaves a candidate's own thinned bins to estimate its counts).
            queue = [c for c in sorted(pending) if not skip[c[1], c[0]]]
            queue += [c for c in top if c not in pending]
            accepted = None
            for cand in queue:
                pending.discard(cand)
                v = _trial(model, lost, out, kind, cand, lost0, z, eps)
                if v.dead and v.full_expected < FULL_PROOF:
                    # Neighbours share many of its bins (an axially adjacent crystal most): the
                    # one that explains the deficit best is taken; if that one cannot be
                    # decided, neither can this one. Not needed when its own fully dead bins
                    # prove it: they would have held many counts.
                    rivals = [_trial(model, lost, out, kind, nb, lost0, z, eps)
                              for nb in _neighbours(kind, sc, cand) if not skip[nb[1], nb[0]]]
                    v = max([v] + rivals, key=lambda r: r.theta)
                if v.dead:
                    accepted = v
                    break
                (unsure.discard if v.decided else unsure.add)(v.index)
            if accepted is None:
                break
            found.append(accepted.index)
            out.verdicts.append(accepted)
            unsure.discard(accepted.index)
            pending.update(_neighbours(kind, sc, accepted.index))
        # the last round's scores: nothing more was found
        undecided = ~decidable & ~skip
        for t, a in unsure:
            undecided[a, t] |= not skip[a, t]
        out.theta[kind], out.info[kind], out.eps[kind] = theta, info, eps
        out.undecided[kind] = [(int(t), int(a)) for a, t in zip(*np.nonzero(undecided))]
    return out
