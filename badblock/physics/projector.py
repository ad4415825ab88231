"""Forward projection along a scanner's own lines of response (LORs), with TOF and attenuation.

Geometry (the convention the simulation and the masks share): crystal ``i`` of a ring of ``N``
(virtual gap crystals included, so the pitch is uniform) sits at angle ``2 pi i / N`` on a circle of
``radius_mm``: ``x = R cos(phi)``, ``y = R sin(phi)``. Ring ``r`` of ``n_rings`` sits at
``z = (r - (n_rings - 1) / 2) * ring_spacing_mm``. A LOR of plane ring pair ``(r1, r2)`` and
transaxial pair ``(det1, det2)`` joins crystal ``det1`` in ring ``r1`` to ``det2`` in ring ``r2``.

Line integrals are midpoint sums of trilinear samples taken at most ``step_mm`` apart along the
part of each LOR inside the volume (and inside a circle around its non-zero voxels).
:func:`project` shares the x-y sampling of a transaxial pair among all its ring pairs;
:func:`line_integrals` samples arbitrary segments with ``scipy.ndimage.map_coordinates`` (the
reference the tests hold :func:`project` to). TOF: the position of an
annihilation along the LOR, measured from the LOR's midpoint toward ``det2`` in mm, is blurred by a
Gaussian (sigma from the timing FWHM: ``dx = c dt / 2``) and binned into ``n_tof`` bins of
``c * tof_bin_ps / 2`` mm, symmetric about the midpoint; the two outermost bins also collect the
tails, so the TOF bins of a LOR sum exactly to its non-TOF line integral. Linear TOF index
``j`` (0..n_tof-1) is the offset ``j - (n_tof - 1) / 2`` in bins; swapping det1 and det2 maps
``j`` to ``n_tof - 1 - j``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates
from scipy.special import ndtr

from badblock.physics.phantom import VolumeGrid

C_MM_PER_PS = 0.299792458  # speed of light
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def crystal_yx(n_crystals: int, radius_mm: float) -> np.ndarray:
    """Transaxial crystal centres (y, x) in mm: float64 [n_crystals, 2]."""
    phi = 2.0 * np.pi * np.arange(n_crystals) / n_crystals
    return np.stack([radius_mm * np.sin(phi), radius_mm * np.cos(phi)], axis=1)


def ring_z(n_rings: int, ring_spacing_mm: float) -> np.ndarray:
    """Axial ring centres in mm, centred on 0: float64 [n_rings]."""
    return (np.arange(n_rings) - (n_rings - 1) / 2.0) * ring_spacing_mm


@dataclass(frozen=True)
class TofKernel:
    """TOF binning along a LOR: ``n_tof`` bins of ``bin_mm``, Gaussian blur ``sigma_mm``."""

    n_tof: int
    bin_mm: float
    sigma_mm: float

    @classmethod
    def from_ps(cls, n_tof: int, bin_ps: float, fwhm_ps: float) -> TofKernel:
        """From the bin width and timing FWHM in ps (a time difference dt shifts by c dt / 2)."""
        half_c = C_MM_PER_PS / 2.0
        return cls(int(n_tof), half_c * float(bin_ps), half_c * float(fwhm_ps) / FWHM_PER_SIGMA)

    def inner_edges(self) -> np.ndarray:
        """The ``n_tof - 1`` boundaries between bins, mm from the LOR midpoint toward det2."""
        return (np.arange(1, self.n_tof) - self.n_tof / 2.0) * self.bin_mm

    def weights(self, x_mm: np.ndarray) -> np.ndarray:
        """Probability that an event at ``x_mm`` lands in each bin: ``[..., n_tof]``, sums to 1."""
        cdf = ndtr((self.inner_edges() - np.asarray(x_mm)[..., None]) / self.sigma_mm)
        zeros = np.zeros(cdf.shape[:-1] + (1,))
        return np.diff(np.concatenate([zeros, cdf, zeros + 1.0], axis=-1), axis=-1)


def line_integrals(grid: VolumeGrid, p1: np.ndarray, p2: np.ndarray, activity: np.ndarray,
                   mu: np.ndarray | None = None, *, step_mm: float,
                   tof: TofKernel | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Integrals of ``activity`` (and ``mu``) along the segments ``p1 -> p2``.

    ``p1``, ``p2``: float [L, 3] endpoints as (z, y, x) mm; ``activity``, ``mu``: volumes
    ``[z, y, x]`` on ``grid`` (mu in 1/mm). The volume fills its box exactly (samples between the
    outer voxel centres and the box faces take the nearest voxel); outside it is empty.
    Returns ``(act, att)``: ``act`` float64 [L] (activity x mm), or [L, n_tof] in linear TOF
    order when ``tof`` is given; ``att`` = exp(-integral of mu) [L], or None without ``mu``.
    """
    p1 = np.asarray(p1, float)
    d = np.asarray(p2, float) - p1
    n = len(p1)
    length = np.sqrt((d * d).sum(axis=1))
    half = grid.half_extent_mm
    tmin = np.zeros(n)
    tmax = np.ones(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(3):
            t1 = (-half[a] - p1[:, a]) / d[:, a]
            t2 = (half[a] - p1[:, a]) / d[:, a]
            parallel = d[:, a] == 0
            inside = np.abs(p1[:, a]) <= half[a]
            lo = np.where(parallel, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2))
            hi = np.where(parallel, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2))
            tmin = np.maximum(tmin, lo)
            tmax = np.minimum(tmax, hi)
    span = np.clip(tmax - tmin, 0.0, None)
    chord = span * length
    k = max(1, int(math.ceil(float(chord.max(initial=0.0)) / step_mm)))
    frac = (np.arange(k) + 0.5) / k
    t = tmin[:, None] + span[:, None] * frac  # [L, K]
    ds = chord / k  # [L] mm per sample
    idx = grid.to_index(p1[:, None, :] + t[..., None] * d[:, None, :])  # [L, K, 3]
    coords = idx.reshape(-1, 3).T
    vals = map_coordinates(activity, coords, order=1, mode="nearest", prefilter=False)
    vals = vals.reshape(n, k) * ds[:, None]
    att = None
    if mu is not None:
        mvals = map_coordinates(mu, coords, order=1, mode="nearest", prefilter=False)
        att = np.exp(-(mvals.reshape(n, k) * ds[:, None]).sum(axis=1))
    total = vals.sum(axis=1)
    if tof is None or tof.n_tof <= 1:
        return (total if tof is None else total[:, None]), att
    x = (t - 0.5) * length[:, None]  # mm from the midpoint toward det2
    cdf = ndtr((tof.inner_edges()[None, None, :] - x[..., None]) / tof.sigma_mm)  # [L, K, E]
    below = np.einsum("lk,lke->le", vals, cdf)
    act = np.diff(np.concatenate([np.zeros((n, 1)), below, total[:, None]], axis=1), axis=1)
    return act, att


@dataclass
class ProjectionGeometry:
    """A scanner's LORs, as the projector walks them.

    ``det1``, ``det2``: int [Lt] crystal indices of the real transaxial pairs (gap crystals
    excluded), ordered by view; ``bin_index``: int [Lt] flat ``view * n_bins + bin`` each pair is
    summed into; ``yx1``, ``yx2``: float [Lt, 2] their positions (mm); ``ring_z``: float
    [n_rings] mm; ``pair_r1``, ``pair_r2``, ``pair_plane``: int [n_pairs] every (r1, r2) ring
    pair of the sinogram (r1 = det1's ring) and the plane it is summed into.
    """

    n_views: int
    n_bins: int
    n_planes: int
    n_crystals: int
    det1: np.ndarray
    det2: np.ndarray
    bin_index: np.ndarray
    yx1: np.ndarray
    yx2: np.ndarray
    ring_z: np.ndarray
    pair_r1: np.ndarray
    pair_r2: np.ndarray
    pair_plane: np.ndarray
    tof: TofKernel | None
    grid: VolumeGrid

    @property
    def n_tof(self) -> int:
        return 1 if self.tof is None else self.tof.n_tof

    @property
    def fov_radius_mm(self) -> float:
        """Largest distance of a real LOR from the scanner axis, mm."""
        return lor_fov_radius(self.yx1, self.yx2)


def lor_fov_radius(yx1: np.ndarray, yx2: np.ndarray) -> float:
    """Largest distance from the axis of the transaxial lines ``yx1 -> yx2`` (mm)."""
    d = yx2 - yx1
    cross = np.abs(yx1[:, 0] * d[:, 1] - yx1[:, 1] * d[:, 0])
    return float((cross / np.sqrt((d * d).sum(axis=1))).max(initial=0.0))


def build_geometry(det1: np.ndarray, det2: np.ndarray, valid: np.ndarray, n_crystals: int,
                   radius_mm: float, ring_positions_mm: np.ndarray,
                   plane_pairs: list[np.ndarray], grid: VolumeGrid,
                   tof: TofKernel | None = None) -> ProjectionGeometry:
    """Geometry from transaxial pairs ``det1, det2, valid`` (int/bool [view, mash, bin]) and the
    ring pairs of each plane (int [n, 2] per plane)."""
    det1 = np.asarray(det1)
    n_views, _, n_bins = det1.shape
    view = np.broadcast_to(np.arange(n_views)[:, None, None], det1.shape)
    b = np.broadcast_to(np.arange(n_bins)[None, None, :], det1.shape)
    keep = np.asarray(valid, bool)
    d1 = det1[keep].astype(np.int64)
    d2 = np.asarray(det2)[keep].astype(np.int64)
    pos = crystal_yx(n_crystals, radius_mm)
    pairs = [np.asarray(p, np.int64).reshape(-1, 2) for p in plane_pairs]
    planes = np.repeat(np.arange(len(pairs)), [len(p) for p in pairs])
    allp = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    ring_positions_mm = np.asarray(ring_positions_mm, float)
    zi = grid.to_index(np.column_stack([ring_positions_mm, np.zeros((len(ring_positions_mm), 2))]))
    if len(zi) and (zi[:, 0].min() < 0 or zi[:, 0].max() > grid.shape[0] - 1):
        raise ValueError("the volume grid must cover every ring axially")
    if not np.allclose(zi[:, 0], np.round(zi[:, 0]), atol=1e-6):
        raise ValueError("the volume grid must have a slice centred on every ring")
    return ProjectionGeometry(
        n_views=n_views, n_bins=n_bins, n_planes=len(pairs), n_crystals=n_crystals,
        det1=d1, det2=d2, bin_index=(view[keep] * n_bins + b[keep]).astype(np.int64),
        yx1=pos[d1], yx2=pos[d2], ring_z=ring_positions_mm,
        pair_r1=allp[:, 0].copy(), pair_r2=allp[:, 1].copy(), pair_plane=planes,
        tof=tof, grid=grid)


def _bilinear_columns(vol_yxz: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Bilinear samples at (iy, ix) of every slice of a volume stored ``[y, x, z]``: float32
    ``[*iy.shape, nz]`` (z fastest, so each gather reads one contiguous run of slices).

    Indices are clipped to the outer voxel centres (the volume fills its box; see
    :func:`line_integrals`).
    """
    ny, nx, _ = vol_yxz.shape
    iy = np.clip(iy, 0.0, ny - 1.0)
    ix = np.clip(ix, 0.0, nx - 1.0)
    y0 = np.minimum(np.floor(iy).astype(np.intp), max(ny - 2, 0))
    x0 = np.minimum(np.floor(ix).astype(np.intp), max(nx - 2, 0))
    fy = (iy - y0).astype(np.float32)[..., None]
    fx = (ix - x0).astype(np.float32)[..., None]
    y1 = np.minimum(y0 + 1, ny - 1)
    x1 = np.minimum(x0 + 1, nx - 1)
    out = vol_yxz[y0, x0] * ((1 - fy) * (1 - fx))
    out += vol_yxz[y0, x1] * ((1 - fy) * fx)
    out += vol_yxz[y1, x0] * (fy * (1 - fx))
    out += vol_yxz[y1, x1] * (fy * fx)
    return out


def support_radius(grid: VolumeGrid, activity: np.ndarray, mu: np.ndarray | None) -> float:
    """Radius (mm) of a circle around the axis outside which trilinear samples of the volumes
    are zero: the farthest non-zero voxel centre plus one voxel diagonal."""
    support = np.asarray(activity).max(axis=0) > 0
    if mu is not None:
        support |= np.asarray(mu).max(axis=0) > 0
    if not support.any():
        return 0.0
    yy, xx = np.meshgrid(grid.centres(1), grid.centres(2), indexing="ij")
    return float(np.hypot(yy, xx)[support].max() + np.hypot(*grid.voxel_mm[1:]))


def project(geom: ProjectionGeometry, activity: np.ndarray, mu: np.ndarray | None = None, *,
            step_mm: float, views: tuple[int, int] | None = None,
            alive: np.ndarray | None = None,
            budget: int = 1 << 22) -> tuple[np.ndarray, np.ndarray | None]:
    """Project a volume into sinogram bins: each bin sums its real LORs (the crystal pairs of its
    sub-views x the ring pairs of its plane), each LOR weighted by its attenuation factor.

    ``activity``, ``mu``: ``[z, y, x]`` on ``geom.grid`` (mu in 1/mm, None = no attenuation);
    ``views``: the half-open range of views to compute (default all); ``alive``: optional bool
    [n_rings, n_crystals], False for dead crystals, to also get the projection without the
    LORs that touch a dead crystal. ``budget`` bounds the samples held at once (memory about
    ``16 * budget`` bytes). Returns ``(full, damaged)``: float64
    ``[n_tof, plane, view in range, bin]`` in linear TOF order (damaged None without ``alive``).

    Every transaxial LOR is sampled once in the x-y plane (bilinear, for all slices at once);
    each ring pair then only interpolates between slices along its own tilt, so the cost per LOR
    is a gather, not a trilinear interpolation.
    """
    v0, v1 = views if views is not None else (0, geom.n_views)
    lo, hi = np.searchsorted(geom.bin_index, [v0 * geom.n_bins, v1 * geom.n_bins])
    n_tof = geom.n_tof
    n_flat = geom.n_planes * (v1 - v0) * geom.n_bins
    full = np.zeros((n_tof, n_flat))
    damaged = np.zeros((n_tof, n_flat)) if alive is not None else None
    shape = (n_tof, geom.n_planes, v1 - v0, geom.n_bins)
    if hi <= lo or len(geom.pair_plane) == 0:
        return full.reshape(shape), None if damaged is None else damaged.reshape(shape)

    grid = geom.grid
    nz = grid.shape[0]
    half = grid.half_extent_mm
    # Transaxial clipping to the box: t in [0, 1] runs from det1 to det2.
    d_all = geom.yx2 - geom.yx1
    lxy_all = np.sqrt((d_all * d_all).sum(axis=1))
    tmin_all = np.zeros(len(d_all))
    tmax_all = np.ones(len(d_all))
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(2):
            h = half[a + 1]
            p, d = geom.yx1[:, a], d_all[:, a]
            t1, t2 = (-h - p) / d, (h - p) / d
            par = d == 0
            inside = np.abs(p) <= h
            tmin_all = np.maximum(tmin_all, np.where(
                par, np.where(inside, -np.inf, np.inf), np.minimum(t1, t2)))
            tmax_all = np.minimum(tmax_all, np.where(
                par, np.where(inside, np.inf, -np.inf), np.maximum(t1, t2)))
    # Also clip to a circle around the volume's support: nothing outside it contributes.
    r_clip = support_radius(grid, activity, mu)
    a_q = lxy_all * lxy_all
    b_q = 2.0 * (geom.yx1 * d_all).sum(axis=1)
    c_q = (geom.yx1 * geom.yx1).sum(axis=1) - r_clip * r_clip
    disc = b_q * b_q - 4.0 * a_q * c_q
    root = np.sqrt(np.clip(disc, 0.0, None))
    tmin_all = np.maximum(tmin_all, (-b_q - root) / (2.0 * a_q))
    tmax_all = np.minimum(tmax_all, (-b_q + root) / (2.0 * a_q))
    span_all = np.where(disc > 0, np.clip(tmax_all - tmin_all, 0.0, None), 0.0)
    ring_slice = grid.to_index(np.column_stack([geom.ring_z,
                                                np.zeros((len(geom.ring_z), 2))]))[:, 0]

    rd = geom.pair_r2 - geom.pair_r1
    groups = [np.nonzero(rd == r)[0] for r in np.unique(rd)]
    n_max = max(len(g) for g in groups)
    # Each LOR's sample count depends only on its own chord (rounded up to a multiple of 4 so
    # that LORs share chunks): any split into views or chunks gives the same sums.
    chord = span_all[lo:hi] * lxy_all[lo:hi]
    k_lor = 4 * np.ceil(chord / (4.0 * step_mm)).astype(np.int64)
    order = lo + np.argsort(k_lor, kind="stable")
    k_sorted = k_lor[order - lo]
    order, k_sorted = order[k_sorted > 0], k_sorted[k_sorted > 0]  # LORs missing the support
    chunks = []
    for k_val in np.unique(k_sorted):
        run = order[k_sorted == k_val]
        per = max(1, budget // (int(k_val) * max(nz, n_max, n_tof - 1, 1)))
        chunks += [(int(k_val), run[i:i + per]) for i in range(0, len(run), per)]
    edges = geom.tof.inner_edges() if n_tof > 1 else None
    vb = (v1 - v0) * geom.n_bins
    # [y, x, z] copies: the x-y sampling then gathers whole runs of slices at once.
    act_yxz = np.ascontiguousarray(np.asarray(activity, np.float32).transpose(1, 2, 0))
    mu_yxz = None if mu is None else \
        np.ascontiguousarray(np.asarray(mu, np.float32).transpose(1, 2, 0))
    for k, sel in chunks:
        span, lxy = span_all[sel], lxy_all[sel]
        u = tmin_all[sel, None] + span[:, None] * ((np.arange(k) + 0.5) / k)  # [Lc, K]
        yx = geom.yx1[sel, None, :] + u[..., None] * d_all[sel, None, :]
        idx = grid.to_index(np.concatenate([np.zeros(yx.shape[:-1] + (1,)), yx], axis=-1))
        # Flat C-ordered copies, so the per-ring-pair gathers below index them directly.
        cols = _bilinear_columns(act_yxz, idx[..., 1], idx[..., 2]).ravel()
        mcols = None if mu is None else _bilinear_columns(mu_yxz, idx[..., 1], idx[..., 2]).ravel()
        lk = np.arange(len(sel) * k).reshape(len(sel), k) * nz
        local_bin = geom.bin_index[sel] - v0 * geom.n_bins
        cdf_cache: dict[float, np.ndarray] = {}
        for g in groups:
            r1, r2 = geom.pair_r1[g], geom.pair_r2[g]
            dz = geom.ring_z[r2[0]] - geom.ring_z[r1[0]]
            l3 = np.sqrt(lxy * lxy + dz * dz)  # [Lc] LOR length, mm
            ds = (span * l3 / k).astype(np.float32)[:, None, None]  # mm per sample
            # Rings sit on slice centres, so the slice pattern along a LOR depends only on the
            # ring difference: one [Lc, K] pattern per group, shifted by each pair's first ring.
            # Arrays are [Lc, n, K] (LOR, ring pair, sample): contiguous per LOR for matmul.
            zrel = u * (ring_slice[r2[0]] - ring_slice[r1[0]])
            b0 = np.floor(zrel).astype(np.intp)
            fz = (zrel - b0).astype(np.float32)[:, None, :]
            shift = ring_slice[r1].astype(np.intp)[None, :, None]
            flat0 = shift + (b0 + lk)[:, None, :]
            vals = cols[flat0]
            interp = bool(fz.any())
            if interp:
                flat1 = flat0 + 1
                vals *= 1 - fz
                vals += cols[flat1] * fz
            vals *= ds
            total = vals.sum(axis=2, dtype=np.float64)  # [Lc, n]
            if n_tof > 1:
                # The TOF kernel depends on |dz| only (through the LOR length): shared by the
                # segments of opposite sign.
                cdf = cdf_cache.get(abs(dz))
                if cdf is None:
                    x = ((u - 0.5) * l3[:, None]).astype(np.float32)  # mm from midpoint to det2
                    cdf = ndtr((edges.astype(np.float32)[None, None, :] - x[..., None])
                               / np.float32(geom.tof.sigma_mm))
                    cdf_cache[abs(dz)] = cdf
                below = np.matmul(vals, cdf)  # [Lc, n, E]: counts before each inner edge
                act = np.diff(np.concatenate([np.zeros(total.shape + (1,)), below,
                                              total[..., None]], axis=2), axis=2)
            else:
                act = total[..., None]
            if mcols is not None:
                mv = mcols[flat0]
                if interp:
                    mv *= 1 - fz
                    mv += mcols[flat1] * fz
                line_mu = (mv * ds).sum(axis=2, dtype=np.float64)
                act = act * np.exp(-line_mu)[..., None]
            target = (local_bin[:, None] + geom.pair_plane[g][None, :] * vb).ravel()
            w_alive = None
            if alive is not None:
                w_alive = (alive[r1[None, :], geom.det1[sel][:, None]]
                           & alive[r2[None, :], geom.det2[sel][:, None]]).ravel()
            act = act.reshape(-1, n_tof)
            for j in range(n_tof):
                full[j] += np.bincount(target, weights=act[:, j], minlength=n_flat)
                if w_alive is not None:
                    damaged[j] += np.bincount(target, weights=act[:, j] * w_alive,
                                              minlength=n_flat)
    return full.reshape(shape), None if damaged is None else damaged.reshape(shape)


def scanner_grid(scanner) -> VolumeGrid:
    """The volume a scanner sees: ``[2 n_rings - 1, n, n]`` voxels of ``[ring_spacing / 2,
    bin_size, bin_size]`` mm, so that every ring and every ring midpoint has a slice, and the
    x-y extent covers the largest circle the real LORs reach."""
    from badblock.physics.geometry import transaxial_pairs

    det1, det2, valid = transaxial_pairs(scanner)
    pos = crystal_yx(scanner.crystals_per_ring, scanner.radius_mm)
    r_fov = lor_fov_radius(pos[det1[valid]], pos[det2[valid]])
    n_xy = 2 * int(math.ceil(r_fov / scanner.bin_size_mm))
    return VolumeGrid((2 * scanner.n_rings - 1, n_xy, n_xy),
                      (scanner.ring_spacing_mm / 2.0, scanner.bin_size_mm, scanner.bin_size_mm))


def scanner_geometry(scanner, grid: VolumeGrid | None = None,
                     tof_fwhm_ps: float = 0.0) -> ProjectionGeometry:
    """The projection geometry of a scanner preset (its own LORs, the masks' geometry).

    ``tof_fwhm_ps`` > 0 replaces the preset's timing resolution; ``grid`` defaults to
    :func:`scanner_grid`.
    """
    from badblock.physics.geometry import plane_ring_pairs, ring_z_mm, transaxial_pairs

    det1, det2, valid = transaxial_pairs(scanner)
    tof = None
    if scanner.n_tof > 1:
        tof = TofKernel.from_ps(scanner.n_tof, scanner.tof_bin_ps,
                                tof_fwhm_ps if tof_fwhm_ps > 0 else scanner.tof_fwhm_ps)
    return build_geometry(det1, det2, valid, scanner.crystals_per_ring, scanner.radius_mm,
                          ring_z_mm(scanner), plane_ring_pairs(scanner),
                          grid if grid is not None else scanner_grid(scanner), tof)
