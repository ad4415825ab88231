"""Activity families for simulation: four kinds of structure, from organs to thin vessels.

Every family is made by one call, :func:`make` ``(family, grid, rng, **params) -> (activity,
mu)``: float32 volumes ``[z, y, x]`` on a :class:`~badblock.physics.phantom.VolumeGrid`,
activity non-negative (relative units; the simulator scales the projection to the requested
counts) and ``mu`` the linear attenuation in 1/mm. Everything random comes from ``rng``, so the
same seed gives the same volumes. The families:

``random``
    :func:`badblock.physics.phantom.random_phantom`: bodies of 1-3 elliptical sections with
    uniform organs (0.3-4 x the background), lung-like cold regions and 1-5 small spheres. The
    family ``badblock simulate`` draws by default. The ``mini`` preset trains on it, ``textured``
    and ``lesions`` in equal shares (``simulate.phantom`` a list); ``vessels`` no preset trains on.
``textured``
    A body outline (one elliptical cylinder) filled with a smooth random texture: a lognormal
    field ``exp(c g - c^2 / 2)`` with ``g`` a sum of Gaussian-filtered white noise at the
    correlation lengths ``scales_mm`` (unit variance), so the activity varies continuously at
    every voxel with mean 1 and relative spread about ``c`` -- nothing in it is piecewise
    constant, unlike ``random``.
``lesions``
    A warm uniform background (1) with ``n_lesions`` non-overlapping spheres of several radii
    (``radii_mm``, cycled so that every size occurs), each hot (``hot`` x the background) or
    cold (0, with probability ``cold_fraction``).
``vessels``
    A low background (``background``) crossed by ``n_vessels`` thin tubes (radius
    ``radius_mm``, activity ``value``) along smooth 3-D curves (quadratic Bezier curves between
    points spread over the whole axial extent), so each tube runs obliquely through many
    planes and views: thin 3-D structures, which no other family has.

All but ``random`` share the body outline of :func:`body_shape` (water attenuation inside).
Partial-volume edges follow :mod:`badblock.physics.phantom`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from badblock.errors import BadInputError
from badblock.physics.phantom import WATER_MU_PER_MM, VolumeGrid, random_phantom, render

TRAINING_FAMILY = "random"  # the name simulate.phantom has always given it


def _fov(grid: VolumeGrid, fov_radius_mm: float | None) -> float:
    half = grid.half_extent_mm
    return float(fov_radius_mm if fov_radius_mm is not None else min(half[1], half[2]))


def body_shape(grid: VolumeGrid, rng: np.random.Generator, fov_radius_mm: float) -> dict:
    """One elliptical cylinder over the whole axial extent, semi-axes 0.6-0.85 (x) and 0.7-0.95
    of that (y) times ``fov_radius_mm``, slightly off-centre and rotated (a phantom shape dict)."""
    ax = rng.uniform(0.6, 0.85) * fov_radius_mm
    ay = ax * rng.uniform(0.7, 0.95)
    centre = rng.uniform(-0.04, 0.04, 2) * fov_radius_mm
    return {"name": "body", "kind": "cylinder",
            "centre_mm": [0.0, float(centre[0]), float(centre[1])],
            "semi_axes_mm": [float(grid.half_extent_mm[0]) + grid.voxel_mm[0], float(ay),
                             float(ax)],
            "angle_rad": float(rng.uniform(-0.3, 0.3)), "value": 1.0, "mu": WATER_MU_PER_MM}


def _inside(body: dict, y: float, x: float, margin: float) -> bool:
    """Whether the transaxial point (y, x) mm lies inside the body's ellipse shrunk by
    ``margin`` mm."""
    cy, cx = body["centre_mm"][1:]
    ay, ax = body["semi_axes_mm"][1:]
    c, s = math.cos(body["angle_rad"]), math.sin(body["angle_rad"])
    u = ((x - cx) * c + (y - cy) * s) / max(ax - margin, 1e-6)
    w = (-(x - cx) * s + (y - cy) * c) / max(ay - margin, 1e-6)
    return u * u + w * w <= 1.0


def _point_in_body(body: dict, grid: VolumeGrid, rng: np.random.Generator, margin: float,
                   z_margin: float) -> np.ndarray:
    """A uniformly random point (z, y, x) mm at least ``margin`` inside the body outline and
    ``z_margin`` inside the axial faces of the grid."""
    zh = float(grid.half_extent_mm[0]) - z_margin
    ay, ax = body["semi_axes_mm"][1:]
    for _ in range(1000):
        y = body["centre_mm"][1] + rng.uniform(-ay, ay)
        x = body["centre_mm"][2] + rng.uniform(-ax, ax)
        if _inside(body, y, x, margin):
            return np.array([rng.uniform(-zh, zh) if zh > 0 else 0.0, y, x])
    raise BadInputError("phantom", f"no room {margin:g} mm inside the body outline")


def _train(grid: VolumeGrid, rng: np.random.Generator, fov_radius_mm: float | None = None
           ) -> tuple[np.ndarray, np.ndarray, dict]:
    shapes = random_phantom(grid, rng, fov_radius_mm)
    return render(shapes, grid), render(shapes, grid, "mu"), {"shapes": shapes}


def _textured(grid: VolumeGrid, rng: np.random.Generator, fov_radius_mm: float | None = None, *,
              scales_mm: tuple[float, ...] = (6.0, 20.0), contrast: float = 0.6
              ) -> tuple[np.ndarray, np.ndarray, dict]:
    from scipy.ndimage import gaussian_filter

    scales = [float(s) for s in np.atleast_1d(scales_mm)]
    if not scales or min(scales) <= 0 or not contrast >= 0:
        raise BadInputError("textured", "needs positive scales_mm and contrast >= 0, got "
                                        f"{scales} and {contrast}")
    body = body_shape(grid, rng, _fov(grid, fov_radius_mm))
    field = np.zeros(grid.shape)
    for s in scales:
        sigma = [s / v for v in grid.voxel_mm]
        g = gaussian_filter(rng.standard_normal(grid.shape), sigma, mode="wrap")
        field += g / max(float(g.std()), 1e-12)
    field /= max(float(field.std()), 1e-12)
    c = float(contrast)
    texture = np.exp(c * field - 0.5 * c * c)
    occ = render([body], grid)
    return ((occ * texture).astype(np.float32), render([body], grid, "mu"),
            {"body": body, "scales_mm": scales, "contrast": c})


def _lesions(grid: VolumeGrid, rng: np.random.Generator, fov_radius_mm: float | None = None, *,
             n_lesions: int = 8, radii_mm: tuple[float, ...] = (4.0, 6.0, 9.0, 13.0),
             hot: float = 4.0, cold_fraction: float = 0.35
             ) -> tuple[np.ndarray, np.ndarray, dict]:
    radii = [float(r) for r in np.atleast_1d(radii_mm)]
    if n_lesions < 1 or not radii or min(radii) <= 0 or hot < 0 or not 0 <= cold_fraction <= 1:
        raise BadInputError("lesions", "needs n_lesions >= 1, positive radii_mm, hot >= 0 and "
                                       "cold_fraction in [0, 1]")
    body = body_shape(grid, rng, _fov(grid, fov_radius_mm))
    shapes, placed = [body], []
    for i in range(int(n_lesions)):
        r = radii[i % len(radii)]
        for _ in range(200):
            p = _point_in_body(body, grid, rng, r + 2.0, min(r, float(grid.half_extent_mm[0])))
            if all(np.linalg.norm(p - q) > r + rq + 2.0 for q, rq in placed):
                break
        else:
            continue  # no room left for this one: the body is full
        placed.append((p, r))
        cold = bool(rng.random() < cold_fraction)
        shapes.append({"name": "cold lesion" if cold else "hot lesion", "kind": "ellipsoid",
                       "centre_mm": [float(v) for v in p], "semi_axes_mm": [r, r, r],
                       "angle_rad": 0.0, "value": 0.0 if cold else float(hot)})
    return render(shapes, grid), render([body], grid, "mu"), {"shapes": shapes}


def _tube(grid: VolumeGrid, points: np.ndarray, radius: float) -> np.ndarray:
    """Partial-volume occupancy of a tube of ``radius`` mm around the polyline ``points``
    ``[n, 3]`` (z, y, x mm): float ``[z, y, x]``, from each voxel centre's distance to the line.

    The line is resampled every 0.25 mm and the distance taken to the nearest sample (a k-d
    tree), which overestimates the true distance by at most 0.125 mm."""
    from scipy.spatial import cKDTree

    seg = np.diff(points, axis=0)
    steps = np.maximum(1, np.ceil(np.linalg.norm(seg, axis=1) / 0.25)).astype(int)
    dense = np.concatenate([a + np.linspace(0.0, 1.0, n, endpoint=False)[:, None] * d
                            for a, d, n in zip(points[:-1], seg, steps)] + [points[-1:]])
    z, y, x = np.meshgrid(grid.centres(0), grid.centres(1), grid.centres(2), indexing="ij")
    pos = np.stack([z, y, x], axis=-1).reshape(-1, 3)
    pix = min(grid.voxel_mm[1], grid.voxel_mm[2])
    dist, _ = cKDTree(dense).query(pos, distance_upper_bound=radius + pix)
    return np.clip((radius - dist) / pix + 0.5, 0.0, 1.0).reshape(grid.shape)


def _vessels(grid: VolumeGrid, rng: np.random.Generator, fov_radius_mm: float | None = None, *,
             n_vessels: int = 6, radius_mm: float = 3.0, value: float = 4.0,
             background: float = 0.25) -> tuple[np.ndarray, np.ndarray, dict]:
    if n_vessels < 1 or radius_mm <= 0 or value < 0 or background < 0:
        raise BadInputError("vessels", "needs n_vessels >= 1, radius_mm > 0, value >= 0 and "
                                       "background >= 0")
    body = body_shape(grid, rng, _fov(grid, fov_radius_mm))
    zh = float(grid.half_extent_mm[0])
    occ = render([body], grid)
    act = occ * np.float32(background)
    curves = []
    for _ in range(int(n_vessels)):
        ends = [_point_in_body(body, grid, rng, 2 * radius_mm, 0.0) for _ in range(3)]
        # The two ends near opposite axial faces: every tube crosses the whole axial extent.
        ends[0][0], ends[2][0] = -0.9 * zh, 0.9 * zh
        if rng.random() < 0.5:
            ends[0][0], ends[2][0] = ends[2][0], ends[0][0]
        t = np.linspace(0.0, 1.0, 48)[:, None]
        pts = (1 - t) ** 2 * ends[0] + 2 * t * (1 - t) * ends[1] + t * t * ends[2]
        curves.append(ends)
        tube = _tube(grid, pts, float(radius_mm)) * occ
        act = act + tube * (np.float32(value) - act)
    return (act.astype(np.float32), render([body], grid, "mu"),
            {"body": body, "radius_mm": float(radius_mm), "value": float(value),
             "background": float(background),
             "control_points_mm": [[[float(v) for v in p] for p in c] for c in curves]})


FAMILIES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, dict]]] = {
    TRAINING_FAMILY: _train, "textured": _textured, "lesions": _lesions, "vessels": _vessels,
}


def family_names() -> list[str]:
    return list(FAMILIES)


def check_family(family: str, params: Mapping | None = None,
                 where: str = "family") -> None:
    """Raise :class:`BadInputError` at ``where`` for an unknown family or parameter name."""
    import inspect

    if family not in FAMILIES:
        raise BadInputError(where, f"unknown activity family {family!r} (valid: "
                                   f"{', '.join(FAMILIES)})")
    sig = inspect.signature(FAMILIES[family])
    allowed = [n for n, p in sig.parameters.items() if p.kind == p.KEYWORD_ONLY]
    for key in params or {}:
        if key not in allowed:
            raise BadInputError(where, f"family {family!r} has no parameter {key!r} (valid: "
                                       f"{', '.join(allowed) or 'none'})")


def build(family: str, grid: VolumeGrid, rng: np.random.Generator,
          fov_radius_mm: float | None = None, **params) -> tuple[np.ndarray, np.ndarray, dict]:
    """(activity, mu, record): :func:`make` plus a JSON-able record of what was drawn."""
    check_family(family, params)
    act, mu, record = FAMILIES[family](grid, rng, fov_radius_mm, **params)
    return (np.asarray(act, np.float32), np.asarray(mu, np.float32),
            {"family": family, "params": dict(params), **record})


def make(family: str, grid: VolumeGrid, rng: np.random.Generator,
         fov_radius_mm: float | None = None, **params) -> tuple[np.ndarray, np.ndarray]:
    """Activity and attenuation of one phantom of ``family``: float32 ``[z, y, x]`` each.

    ``grid``: the volume grid (e.g. :func:`badblock.physics.projector.scanner_grid`); ``rng``:
    the only source of randomness; ``fov_radius_mm``: the radius the body must fit in (default
    the grid's transaxial half-width; the simulator passes its LORs' reach); ``params``: the
    family's keyword parameters (module docstring). Activity in relative units, ``mu`` in 1/mm.
    """
    act, mu, _ = build(family, grid, rng, fov_radius_mm, **params)
    return act, mu
