"""A fast TOF projector with attenuation and its exact adjoint, in torch (CPU or CUDA).

The same system model as :func:`badblock.physics.projector.project` (the LOR-by-LOR reference):
sinogram ``[n_tof (linear TOF order), plane, view, bin]``, volume ``[z, y, x]`` on
:func:`badblock.physics.projector.scanner_grid` (a slice on every ring and every ring midpoint),
each bin the sum of its real LORs, each LOR weighted by its attenuation factor
``a = exp(-integral of mu)`` (fixed, computed once per view along the same rays), TOF binned as
:class:`~badblock.physics.projector.TofKernel` does. Gap-crystal bins are 0. Volumes are taken
as zero outside the support cylinder (``support_mm``, default the box's inscribed circle).

How one view is projected:

1. **Transaxial rays**: one per real crystal pair of every sub-view (``subviews="all"``) or
   one mean ray per bin (``"mean"``: the normalised mean direction of the bin's real sub-view
   pairs, standing for their number). Each is sampled every ``step_mm`` along ``t`` (mm from
   its chord midpoint toward det2), bilinearly in x-y and in all slices at once: the volume is
   a table ``[y * x, z]`` and ``embedding_bag`` sums, per sample, the 4 weighted rows (whole
   columns of slices) -- per ray a 2-D image ``F(t, z)`` of the vertical plane through it.
2. ``pool`` consecutive samples are summed in the same ``embedding_bag`` (a box filter along
   the ray, ``dx = pool * step_mm``; anti-aliased, unlike sampling every ``dx``).
3. **Axial tilts**: ring pair ``(r1, r2)``, ``d = r2 - r1``, runs through slice
   ``r1 + r2 + 2 d x / L3`` at 3-D distance ``x`` from its midpoint (``L3`` det to det), at
   ``t = x Lxy / L3``. One bilinear ``grid_sample`` per batch of bins samples every tilt at the
   same 3-D positions ``x_k = (k - (K - 1) / 2) dx``: per ring pair (``tilts="ring"``) or ``n``
   mean tilts per plane (``tilts=n``; the plane's pairs sorted by ``d`` in ``n`` runs, each its
   mean ``d`` weighted by its size; ``"plane"`` = 1).
4. **TOF and line sum in one matmul** with ``W[x_k, n_tof] = TofKernel.weights(x_k) * step``,
   the same for every ray and tilt because the samples sit at the same 3-D positions. The
   pooling's box widens the timing kernel by ``dx^2 / 12`` in variance; W's sigma is reduced by
   that, so the total stays the scanner's.
5. Times the LOR count and attenuation factor of each (tilt, ray); sub-views summed into their
   view, tilts into their plane.

The adjoint runs the same steps transposed (``W^T``, ``grid_sampler_2d_backward``, the
transpose of the ``embedding_bag`` by autograd): the exact adjoint of the discrete forward,
``<A x, y> = <x, A^T y>`` to rounding (1e-16 in float64).

Accuracy against the reference (``bench/projector_accuracy.py``; relative L1 error over all
bins, a random phantom, without / with its water mu-map):

- exact geometry (``subviews="all", tilts="ring", pool=1``, the default for scanners of at most
  ``EXACT_MAX_LORS`` LORs such as ``mini``): 1.2e-3 / 1.1e-3 on mini, 1e-4 on a 10- and a
  20-ring Vision -- the difference of two samplings of the same trilinear interpolant;
- the clinical default (``"mean"``, 2 tilts per plane, ``dx`` about 6.5 mm: pool 4 on the
  Vision): 0.46 % / 1.1 % on the 20-ring Vision with its span 19 (0.23 % / 0.40 % at span 7);
  totals within 0.03 %. The error is the axial spread of a plane's tilts and the Jensen gap of
  the attenuation averaged over them (one tilt per plane: 1.3 % / 3.1 %; every ring pair:
  0.15 % / 0.27 %); the mean ray costs about 0.1 %.

Speed (``bench/bench_simulate.py``): a whole Vision scan with attenuation in 90 s (48 s CPU) on
2 loaded cores, 640 x the reference in the same run (one view took 1143 s, extrapolated x 50);
the time is the step-3 ``grid_sample`` (about 55 %), the TOF matmul (15 %) and the attenuation
pass (a projection without TOF, once per view: about 40 % of the total in a first pass). Cost
grows with ``views x bins x tilts x samples``: ``tilts`` and ``pool`` are the levers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from badblock.errors import BadInputError
from badblock.physics.fastgeom import (
    SUBVIEWS,
    _perp,
    default_options,
    ray_geometry,
    tilt_groups,
)
from badblock.physics.projector import TofKernel, scanner_grid
from badblock.physics.scanners import Scanner, get_scanner

_BILINEAR, _ZEROS = 0, 0  # grid_sampler_2d_backward's interpolation and padding codes


class FastProjector:
    """Forward and adjoint TOF projection of ``[z, y, x]`` volumes on ``scanner_grid(scanner)``.

    ``mu``: attenuation map ``[z, y, x]`` (1/mm) or None; ``subviews`` (``"all"`` | ``"mean"``),
    ``tilts`` (``"ring"`` | ``"plane"`` | an int: mean tilts per plane), ``pool`` (int >= 1):
    the accuracy / speed options (module docstring), None = :func:`default_options`;
    ``step_mm``: fine sample spacing along each ray (default the transaxial voxel);
    ``support_mm``: radius of the cylinder outside which the volumes are taken as zero (default
    the box's inscribed circle, which holds the field of view); ``tof_fwhm_ps`` > 0 replaces the
    scanner's timing resolution; ``device``, ``dtype``: where and in what precision to compute
    (float64 for adjoint tests); ``batch`` bounds the 3-D samples of one step (memory about
    ``12 * batch`` bytes); ``cache_mb`` bounds what is kept between views and calls (sampling
    grids and the attenuation factors).
    """

    def __init__(self, scanner: Scanner | str, mu=None, *, subviews: str | None = None,
                 tilts: str | int | None = None, pool: int | None = None, step_mm: float = 0.0,
                 support_mm: float | None = None, tof_fwhm_ps: float = 0.0,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 batch: int = 1 << 23, cache_mb: float = 1024.0):
        self.scanner = sc = get_scanner(scanner)
        self.grid = grid = scanner_grid(sc)
        step = float(step_mm) if step_mm else float(min(grid.voxel_mm[1:]))
        opts = default_options(sc, step)
        self.subviews = subviews or opts["subviews"]
        self.tilts = tilts if tilts is not None else opts["tilts"]
        self.pool = int(pool) if pool is not None else opts["pool"]
        per_plane = {"ring": 0, "plane": 1}.get(self.tilts, self.tilts)
        if self.subviews not in SUBVIEWS or isinstance(per_plane, (str, bool)) \
                or not isinstance(per_plane, int) or per_plane < 1 and self.tilts != "ring" \
                or self.pool < 1:
            raise BadInputError("projector", f"subviews must be one of {SUBVIEWS}, tilts 'ring', "
                                f"'plane' or a count >= 1, pool >= 1 (got {subviews!r}, "
                                f"{tilts!r}, {pool!r})")
        self.device, self.dtype = torch.device(device), dtype
        self.step_mm, self.dx_mm = step, step * self.pool
        rays = ray_geometry(sc, self.subviews)
        groups = tilt_groups(sc, per_plane)
        self.n_groups = len(groups["d"])
        self.per_bin = m = rays["lxy"].size // sc.n_bins  # rays per bin: mash or 1
        half_xy = float(min(grid.half_extent_mm[1:]))
        limit = float(np.hypot(*grid.half_extent_mm[1:]))
        self.support_mm = half_xy if support_mm is None else min(float(support_mm), limit)
        s_bin = np.abs((rays["mid"][0] * _perp(rays["u"][0])).sum(-1)).reshape(-1, m)[:, 0]
        self._half = np.sqrt(np.clip(self.support_mm ** 2 - s_bin ** 2, 0.0, None))  # [B] mm
        self._lxy = rays["lxy"].reshape(-1, m)[:, 0]
        self._groups = groups
        self._buckets = self._make_buckets(batch)
        self._layout()
        tensor = lambda a, dt=dtype: torch.as_tensor(a, dtype=dt, device=self.device)  # noqa: E731
        self._mid, self._u = tensor(rays["mid"]), tensor(rays["u"])
        self._ray_weight = tensor(rays["weight"])
        self._bag_ray = tensor(self._bag_ray_np, torch.int64)
        self._fine_t = tensor(self._fine_t_np)
        self._fine_keep = tensor(self._fine_keep_np, torch.bool)
        self._plane_index = tensor(groups["plane"], torch.int64)
        self._count = tensor(groups["count"])

        # One tilt per plane in plane order: the tilts are the planes (no sum needed).
        self._sum_tilts = not np.array_equal(groups["plane"], np.arange(sc.n_planes))
        self._tof = None
        if sc.n_tof > 1:
            self._tof = TofKernel.from_ps(sc.n_tof, sc.tof_bin_ps,
                                          tof_fwhm_ps if tof_fwhm_ps > 0 else sc.tof_fwhm_ps)
        k_max = max(b[3] for b in self._buckets)
        self._w_tof = self._weights(k_max)
        self._cache: dict = {}
        self._cache_left = float(cache_mb) * 2**20
        self._mu = None
        self.set_attenuation(mu)

    # -- set-up -------------------------------------------------------------------------------

    def set_attenuation(self, mu) -> None:
        """Use the attenuation map ``mu`` ``[z, y, x]`` (1/mm; None = none) from now on; the
        attenuation factors are recomputed on first use of each view."""
        for key in [k for k in self._cache if k[0] == "factor"]:
            val = self._cache.pop(key)
            self._cache_left += val.numel() * val.element_size()
        self._mu = None if mu is None else self._volume(mu)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """Sinogram shape ``[n_tof, plane, view, bin]``."""
        return self.scanner.shape

    def prepare(self, volume) -> torch.Tensor:
        """A ``[z, y, x]`` volume as the ``[y * x, z]`` table step 1 reads whole rows of;
        :meth:`forward` takes it in place of the volume (to project one volume in parts)."""
        return self._volume(volume)

    def _volume(self, vol) -> torch.Tensor:
        nz, ny, nx = self.grid.shape
        if torch.is_tensor(vol) and tuple(vol.shape) == (ny * nx, nz):
            return vol.to(device=self.device, dtype=self.dtype)  # prepared already
        t = vol if torch.is_tensor(vol) else torch.as_tensor(np.asarray(vol))
        if tuple(t.shape) != tuple(self.grid.shape):
            raise BadInputError("volume", f"shape {tuple(t.shape)} is not the {self.scanner.name} "
                                f"grid {self.grid.shape} [z, y, x]")
        t = t.to(device=self.device, dtype=self.dtype)
        return t.permute(1, 2, 0).reshape(-1, t.shape[0]).contiguous()

    def _make_buckets(self, batch: int) -> list[tuple[int, int, int, int]]:
        """Runs of bins ``(b0, b1, kq, k)`` projected together: ``kq`` pooled samples cover the
        longest support chord of the run, ``k`` 3-D samples the same at the steepest tilt."""
        dz = np.abs(self._groups["d"]).max(initial=0.0) * self.scanner.ring_spacing_mm
        sec = np.sqrt(1.0 + (dz / self._lxy) ** 2)
        # At least 3 samples, so that the normalised coordinates below stay finite.
        kq = 2 * np.maximum(np.ceil(self._half / self.dx_mm), 1).astype(int) + 1
        k = 2 * np.maximum(np.ceil(self._half * sec / self.dx_mm), 1).astype(int) + 1
        per = max(1, batch // max(1, self.n_groups * int(k.max()) * self.per_bin))
        n = self.scanner.n_bins
        return [(b0, min(b0 + per, n), int(kq[b0:b0 + per].max()), int(k[b0:b0 + per].max()))
                for b0 in range(0, n, per)]

    def _layout(self) -> None:
        """Where step 1 samples, the same for every view: bag ``j`` (one pooled sample) of ray
        ``_bag_ray_np[j]`` averages ``pool`` fine samples at ``_fine_t_np[j]`` (mm along the
        ray); bucket ``bi``'s bags are ``_off[bi]:_off[bi + 1]``, ray-major."""
        rays, ts, keep, off = [], [], [], [0]
        for b0, b1, kq, _ in self._buckets:
            kt = kq * self.pool
            t = ((np.arange(kt) - (kt - 1) / 2) * self.step_mm).reshape(kq, self.pool)
            r = np.arange(b0 * self.per_bin, b1 * self.per_bin)
            rays.append(np.repeat(r, kq))
            ts.append(np.broadcast_to(t, (len(r), kq, self.pool)).reshape(-1, self.pool))
            half = np.repeat(self._half[b0:b1], self.per_bin)[:, None, None]
            keep.append((np.abs(t)[None] <= half).reshape(-1, self.pool))
            off.append(off[-1] + len(r) * kq)
        self._bag_ray_np = np.concatenate(rays)
        self._fine_t_np, self._fine_keep_np = np.concatenate(ts), np.concatenate(keep)
        self._off = off

    def _weights(self, k: int) -> torch.Tensor:
        """``W [k, n_tof]`` (``[k, 1]`` for a plain line integral): the TOF bin of each 3-D
        sample times the fine step (step 1's pooled samples are sums of ``pool`` samples)."""
        x = (np.arange(k) - (k - 1) / 2) * self.dx_mm
        if self._tof is not None:
            kern = self._tof
            if self.pool > 1:  # the pooling's box filter already widens the kernel
                sig = math.sqrt(max(kern.sigma_mm ** 2 - self.dx_mm ** 2 / 12.0, 1e-6))
                kern = TofKernel(kern.n_tof, kern.bin_mm, sig)
            w = kern.weights(x)
        else:
            w = np.ones((k, 1))
        return torch.as_tensor(w * self.step_mm, dtype=self.dtype, device=self.device)

    def _w(self, bi: int) -> torch.Tensor:
        k = self._buckets[bi][3]
        full = self._w_tof
        k0 = (full.shape[0] - k) // 2
        return full[k0:k0 + k]

    def _cached(self, key, make):
        """``make()``, kept for later calls while the cache budget lasts."""
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        val = make()
        size = val.numel() * val.element_size()
        if size <= self._cache_left:
            self._cache[key] = val
            self._cache_left -= size
        return val

    def _grid2(self, bi: int) -> torch.Tensor:
        """Step-3 sampling grid of bucket ``bi``: ``[bins, G, k, 2]`` = (z, t) normalised for
        columns ``[.., kq (t), Z (z)]`` (the same for every view)."""
        def make():
            b0, b1, kq, k = self._buckets[bi]
            f64 = dict(dtype=torch.float64, device=self.device)
            g = self._groups
            lxy = torch.as_tensor(self._lxy[b0:b1], **f64)[:, None, None]
            dz = torch.as_tensor(g["d"] * self.scanner.ring_spacing_mm, **f64)[None, :, None]
            x = ((torch.arange(k, **f64) - (k - 1) / 2) * self.dx_mm)[None, None, :]
            l3 = torch.sqrt(lxy * lxy + dz * dz)
            n_z = self.grid.shape[0]
            gsum = torch.as_tensor(g["sum"], **f64)[None, :, None]
            gd = torch.as_tensor(g["d"], **f64)[None, :, None]
            z_n = (gsum + 2.0 * gd * x / l3) * (2.0 / (n_z - 1)) - 1.0
            t_n = x * (lxy / l3) * (2.0 / (self.dx_mm * (kq - 1)))
            return torch.stack(torch.broadcast_tensors(z_n, t_n), dim=-1).to(self.dtype)
        return self._cached(("grid", bi), make)

    # -- the steps ----------------------------------------------------------------------------

    def _interp(self, view: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 1 of ``view``: per bag (pooled sample, see :meth:`_layout`) the ``4 * pool``
        voxels (rows of the ``[y * x, z]`` table) and bilinear weights it sums. Samples beyond
        a ray's support chord or outside the box weigh 0; inside the box beyond the outer voxel
        centres they take the nearest voxel, as the reference does."""
        ray = self._bag_ray
        pts = self._mid[view, ray, None, :] + self._fine_t[..., None] * self._u[view, ray, None, :]
        ny, nx = self.grid.shape[1:]
        opts = dict(dtype=self.dtype, device=self.device)
        half = torch.as_tensor(self.grid.half_extent_mm[1:], **opts)
        keep = self._fine_keep & (pts.abs() <= half).all(-1)
        vox = torch.as_tensor(self.grid.voxel_mm[1:], **opts)
        size = torch.as_tensor([ny - 1, nx - 1], **opts)
        idx = torch.minimum((pts / vox + size / 2).clamp_(min=0), size)
        lo = torch.minimum(idx.floor(), size - 1)
        f = idx - lo
        lo = lo.long()
        i00 = lo[..., 0] * nx + lo[..., 1]
        rows = torch.stack([i00, i00 + 1, i00 + nx, i00 + nx + 1], dim=-1)
        fy, fx = f[..., 0], f[..., 1]
        w = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], dim=-1)
        w *= keep[..., None]
        return rows.view(rows.shape[0], -1), w.view(w.shape[0], -1)

    def _columns(self, table: torch.Tensor, view: int) -> torch.Tensor:
        """Steps 1-2: ``F(t, z)`` of every ray of ``view``, bags ``[n_bags, Z]`` (sums of
        ``pool`` fine samples)."""
        rows, w = self._interp(view)
        return F.embedding_bag(rows, table, per_sample_weights=w, mode="sum")

    def _bucket_cols(self, cols: torch.Tensor, bi: int) -> torch.Tensor:
        """Bucket ``bi``'s part of :meth:`_columns`: ``[bins, per_bin, kq, Z]``."""
        b0, b1, kq, _ = self._buckets[bi]
        return cols[self._off[bi]:self._off[bi + 1]].view(b1 - b0, self.per_bin, kq, -1)

    def _columns_adjoint(self, gcols: torch.Tensor, view: int) -> torch.Tensor:
        """Transpose of :meth:`_columns`: ``[n_bags, Z]`` -> table ``[y * x, z]`` (the
        gradient of the linear step, by autograd)."""
        rows, w = self._interp(view)
        ny, nx = self.grid.shape[1:]
        leaf = torch.zeros((ny * nx, gcols.shape[1]), dtype=self.dtype, device=self.device,
                           requires_grad=True)
        with torch.enable_grad():
            out = F.embedding_bag(rows, leaf, per_sample_weights=w, mode="sum")
            (grad,) = torch.autograd.grad(out, leaf, gcols)
        return grad

    def _sample(self, cols: torch.Tensor, bi: int, w: torch.Tensor) -> torch.Tensor:
        """Steps 3-4: columns ``[bins, per_bin, kq, Z]`` -> ``[G, n_tof, bins, per_bin]`` line
        integrals (TOF-binned). The sub-views of a bin share its grid: they are channels. The
        result comes bins-last, the order the sinogram stores them in."""
        nb, m = cols.shape[:2]
        s = F.grid_sample(cols, self._grid2(bi), mode="bilinear", padding_mode="zeros",
                          align_corners=True)  # [bins, per_bin, G, k]
        g, k = s.shape[2:]
        return torch.matmul(w.T, s.permute(2, 3, 0, 1).reshape(g, k, nb * m)).view(g, -1, nb, m)

    def _sample_adjoint(self, gout: torch.Tensor, bi: int, w: torch.Tensor) -> torch.Tensor:
        """Transpose of :meth:`_sample`: ``[G, n_tof, bins, per_bin]`` -> columns."""
        b0, b1, kq, _ = self._buckets[bi]
        g, _, nb, m = gout.shape
        gs = torch.matmul(w, gout.reshape(g, -1, nb * m)).view(g, -1, nb, m)
        gs = gs.permute(2, 3, 0, 1).contiguous()  # [bins, per_bin, G, k]
        dummy = torch.zeros((), dtype=self.dtype, device=self.device).expand(
            nb, m, kq, self.grid.shape[0])
        gin, _ = torch.ops.aten.grid_sampler_2d_backward(gs, dummy, self._grid2(bi), _BILINEAR,
                                                         _ZEROS, True, [True, False])
        return gin

    def factor(self, view: int) -> torch.Tensor:
        """``[G, bins, per_bin]``: real LORs x attenuation factor of each (tilt, ray) of
        ``view`` (the attenuation along the same rays, computed once)."""
        def make():
            w = self._ray_weight[view].view(self.scanner.n_bins, self.per_bin)
            f = self._count[:, None, None] * w
            if self._mu is not None:
                cols = self._columns(self._mu, view)
                for bi, (b0, b1, _, k) in enumerate(self._buckets):
                    w = torch.full((k, 1), self.step_mm, dtype=self.dtype, device=self.device)
                    line = self._sample(self._bucket_cols(cols, bi), bi, w)
                    f[:, b0:b1] *= torch.exp(-line[:, 0])
            return f
        return self._cached(("factor", view), make)

    def _to_bins(self, vals: torch.Tensor) -> torch.Tensor:
        """``[G, T, bins, per_bin]`` -> ``[plane, T, bins]``: sub-views into bins, tilts into
        planes."""
        vals = vals.sum(3) if self.per_bin > 1 else vals[..., 0]
        if self._sum_tilts:
            out = vals.new_zeros((self.scanner.n_planes,) + vals.shape[1:])
            vals = out.index_add_(0, self._plane_index, vals)
        return vals

    def _from_bins(self, y: torch.Tensor) -> torch.Tensor:
        """Transpose of :meth:`_to_bins`."""
        if self._sum_tilts:
            y = y.index_select(0, self._plane_index)
        return y.unsqueeze(3)

    # -- public -------------------------------------------------------------------------------

    def _views(self, views) -> list[int]:
        vlist = list(range(self.scanner.n_views)) if views is None else [int(v) for v in views]
        if any(not 0 <= v < self.scanner.n_views for v in vlist):
            raise BadInputError("views", f"view indices must lie in 0..{self.scanner.n_views - 1}")
        return vlist

    @torch.no_grad()
    def forward(self, volume, views: Sequence[int] | None = None) -> torch.Tensor:
        """``A x``: ``[n_tof, plane, len(views), bin]`` (linear TOF order) of a volume
        ``[z, y, x]`` (or its :meth:`prepare` table); ``views`` a sequence of view indices
        (default all)."""
        table = self._volume(volume)
        vlist = self._views(views)
        sc = self.scanner
        # Every bin of every view is written below (gap bins as 0): no need to clear.
        out = torch.empty((sc.n_tof, sc.n_planes, len(vlist), sc.n_bins), dtype=self.dtype,
                          device=self.device)
        for vi, v in enumerate(vlist):
            fac = self.factor(v)
            cols = self._columns(table, v)
            for bi, (b0, b1, _, _) in enumerate(self._buckets):
                vals = self._sample(self._bucket_cols(cols, bi), bi, self._w(bi))
                vals *= fac[:, None, b0:b1]
                out[:, :, vi, b0:b1] = self._to_bins(vals).transpose(0, 1)
        return out

    @torch.no_grad()
    def adjoint(self, sino, views: Sequence[int] | None = None) -> torch.Tensor:
        """``A^T y``: volume ``[z, y, x]`` from a sinogram ``[n_tof, plane, len(views), bin]``."""
        vlist = self._views(views)
        sc = self.scanner
        y = sino if torch.is_tensor(sino) else torch.as_tensor(np.asarray(sino))
        y = y.to(device=self.device, dtype=self.dtype)
        want = (sc.n_tof, sc.n_planes, len(vlist), sc.n_bins)
        if tuple(y.shape) != want:
            raise BadInputError("sinogram", f"shape {tuple(y.shape)} is not {want}")
        nz, ny, nx = self.grid.shape
        table = torch.zeros((ny * nx, nz), dtype=self.dtype, device=self.device)
        gcols = torch.empty((self._off[-1], nz), dtype=self.dtype, device=self.device)
        for vi, v in enumerate(vlist):
            fac = self.factor(v)
            for bi, (b0, b1, _, _) in enumerate(self._buckets):
                g = self._from_bins(y[:, :, vi, b0:b1].transpose(0, 1)) * fac[:, None, b0:b1]
                gc = self._sample_adjoint(g, bi, self._w(bi))
                gcols[self._off[bi]:self._off[bi + 1]] = gc.reshape(-1, nz)
            table += self._columns_adjoint(gcols, v)
        return table.view(ny, nx, nz).permute(2, 0, 1).contiguous()
