"""Activity phantoms for simulation: a random family of bodies, organs and lesions on a voxel grid.

Volumes are float32 arrays ``[z, y, x]`` on a :class:`VolumeGrid` centred on the scanner axis
(coordinates in mm, z along the axis). A phantom is a list of shapes (JSON-able dicts) painted in
order, each shape replacing what lies under it; edges are partial-volume weighted so that line
integrals through a voxelised shape match the analytic chord lengths closely.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from badblock.errors import BadInputError

WATER_MU_PER_MM = 0.0096  # linear attenuation of water at 511 keV, 1/mm


@dataclass(frozen=True)
class VolumeGrid:
    """A voxel grid centred on the scanner axis.

    ``shape`` is ``[z, y, x]`` voxels and ``voxel_mm`` their size ``[dz, dy, dx]`` in mm; voxel
    ``i`` along an axis has its centre at ``(i - (n - 1) / 2) * size`` mm.
    """

    shape: tuple[int, int, int]
    voxel_mm: tuple[float, float, float]

    def centres(self, axis: int) -> np.ndarray:
        """Voxel-centre coordinates in mm along ``axis`` (0 = z, 1 = y, 2 = x): float64 [n]."""
        n = self.shape[axis]
        return (np.arange(n) - (n - 1) / 2.0) * self.voxel_mm[axis]

    @property
    def half_extent_mm(self) -> np.ndarray:
        """Distance from the centre to the outer faces of the grid, mm: [z, y, x]."""
        return np.asarray(self.shape, float) * np.asarray(self.voxel_mm, float) / 2.0

    def to_index(self, points_mm: np.ndarray) -> np.ndarray:
        """Fractional voxel indices of points ``[..., 3]`` given as (z, y, x) mm."""
        shape = np.asarray(self.shape, float)
        return np.asarray(points_mm) / np.asarray(self.voxel_mm, float) + (shape - 1) / 2.0


def _soft_inside(rho: np.ndarray, scale_mm: float, voxel_mm: float) -> np.ndarray:
    """Partial-volume occupancy from a normalised radius (1 on the boundary).

    ``(1 - rho) * scale`` approximates the signed distance to the boundary in mm; a linear ramp
    one voxel wide around it gives each voxel about the fraction of it inside the shape.
    """
    return np.clip((1.0 - rho) * scale_mm / voxel_mm + 0.5, 0.0, 1.0)


def shape_occupancy(shape: dict, grid: VolumeGrid) -> tuple[tuple[slice, ...], np.ndarray]:
    """Fraction of each voxel inside one shape, over the shape's bounding box only.

    ``shape``: ``{"kind": "ellipsoid" | "cylinder", "centre_mm": [z, y, x],
    "semi_axes_mm": [az, ay, ax], "angle_rad": rotation in the x-y plane, ...}``; a cylinder's
    ``az`` is its axial half-length. Returns (slices into the grid, float32 occupancy 0..1).
    """
    cz, cy, cx = (float(v) for v in shape["centre_mm"])
    az, ay, ax = (float(v) for v in shape["semi_axes_mm"])
    angle = float(shape.get("angle_rad", 0.0))
    reach = max(ay, ax)
    vz, vy, vx = grid.voxel_mm
    slices = []
    for axis, (c, half, vox) in enumerate(((cz, az, vz), (cy, reach, vy), (cx, reach, vx))):
        n = grid.shape[axis]
        lo = int(math.floor((c - half) / vox + (n - 1) / 2.0)) - 1
        hi = int(math.ceil((c + half) / vox + (n - 1) / 2.0)) + 2
        slices.append(slice(max(lo, 0), min(max(hi, 0), n)))
    z = grid.centres(0)[slices[0]][:, None, None] - cz
    y = grid.centres(1)[slices[1]][None, :, None] - cy
    x = grid.centres(2)[slices[2]][None, None, :] - cx
    cos, sin = math.cos(angle), math.sin(angle)
    u = (x * cos + y * sin) / ax
    w = (-x * sin + y * cos) / ay
    pix = min(vy, vx)
    if shape["kind"] == "ellipsoid":
        rho = np.sqrt(u * u + w * w + (z / az) ** 2)
        occ = _soft_inside(rho, min(az, ay, ax), pix)
    elif shape["kind"] == "cylinder":
        inplane = _soft_inside(np.sqrt(u * u + w * w), min(ay, ax), pix)
        axial = np.clip((az - np.abs(z)) / vz + 0.5, 0.0, 1.0)
        occ = inplane * axial
    else:
        raise ValueError(f"unknown phantom shape kind {shape['kind']!r}")
    return tuple(slices), occ.astype(np.float32)


def render(shapes: list[dict], grid: VolumeGrid, key: str = "value") -> np.ndarray:
    """Paint ``shapes`` in order (each replaces what is under it): float32 ``[z, y, x]``.

    ``key`` picks which number of each shape is painted (``value`` = activity, ``mu`` =
    attenuation in 1/mm); a shape without that key is skipped.
    """
    vol = np.zeros(grid.shape, np.float32)
    for shape in shapes:
        if key not in shape:
            continue
        sl, occ = shape_occupancy(shape, grid)
        if occ.size == 0:
            continue
        block = vol[sl]
        block += occ * (np.float32(shape[key]) - block)
    return vol


def random_phantom(grid: VolumeGrid, rng: np.random.Generator,
                   fov_radius_mm: float | None = None) -> list[dict]:
    """A random phantom: a body with organs, hot and cold lesions, varying along the axis.

    The body is a stack of elliptical cylinder sections (its outline changes with z, like a
    torso narrowing to a neck) that fits inside ``fov_radius_mm`` (default: the grid's
    transaxial half-width). Activities are relative to a body background of 1. Returns the
    list of shapes (see :func:`shape_occupancy`), each with ``value`` (activity) and, for body
    and lung-like parts, ``mu`` (1/mm).
    """
    half = grid.half_extent_mm
    r_fov = float(fov_radius_mm if fov_radius_mm is not None else min(half[1], half[2]))
    z_half = float(half[0])
    shapes: list[dict] = []

    # Body: a few axial sections whose outline varies slowly; sometimes it ends inside the FOV.
    ax0 = rng.uniform(0.55, 0.85) * r_fov
    ay0 = ax0 * rng.uniform(0.6, 0.95)
    angle0 = rng.uniform(-0.2, 0.2)
    body_lo = -z_half if rng.random() < 0.7 else rng.uniform(-z_half, -0.3 * z_half)
    body_hi = z_half if rng.random() < 0.7 else rng.uniform(0.3 * z_half, z_half)
    n_sections = int(rng.integers(1, 4))
    edges = np.linspace(body_lo, body_hi, n_sections + 1)
    centre_xy = rng.uniform(-0.05, 0.05, 2) * r_fov
    body_axes = []
    for i in range(n_sections):
        scale = rng.uniform(0.8, 1.0) if i else 1.0
        ax, ay = ax0 * scale, ay0 * scale * rng.uniform(0.9, 1.05)
        ay = min(ay, 0.95 * r_fov)
        body_axes.append((ax, ay))
        shapes.append({"name": "body", "kind": "cylinder",
                       "centre_mm": [float((edges[i] + edges[i + 1]) / 2), float(centre_xy[0]),
                                     float(centre_xy[1])],
                       "semi_axes_mm": [float((edges[i + 1] - edges[i]) / 2), float(ay), float(ax)],
                       "angle_rad": float(angle0), "value": 1.0, "mu": WATER_MU_PER_MM})
    min_ax = min(min(a) for a in body_axes)
    z_lo, z_hi = float(body_lo), float(body_hi)

    def inside_point(margin: float) -> list[float]:
        # A random point well inside the narrowest body section.
        r = math.sqrt(rng.random()) * max(min_ax - margin, 0.0) * 0.8
        t = rng.uniform(0, 2 * math.pi)
        z = rng.uniform(z_lo + 0.1 * (z_hi - z_lo), z_hi - 0.1 * (z_hi - z_lo))
        return [float(z), float(centre_xy[0] + r * math.sin(t)),
                float(centre_xy[1] + r * math.cos(t))]

    # Organs: cylinders and ellipsoids of varying size and contrast, some lung-like (cold, low mu).
    for _ in range(int(rng.integers(2, 6))):
        size = rng.uniform(0.15, 0.4) * min_ax
        kind = "ellipsoid" if rng.random() < 0.6 else "cylinder"
        axial = rng.uniform(0.2, 0.8) * (z_hi - z_lo) / 2 if kind == "cylinder" else \
            rng.uniform(0.5, 2.0) * size
        lung = rng.random() < 0.2
        shape = {"name": "lung" if lung else "organ", "kind": kind,
                 "centre_mm": inside_point(size),
                 "semi_axes_mm": [float(max(axial, grid.voxel_mm[0])), float(size),
                                  float(size * rng.uniform(0.6, 1.4))],
                 "angle_rad": float(rng.uniform(0, math.pi)),
                 "value": float(rng.uniform(0.1, 0.4) if lung else rng.uniform(0.3, 4.0))}
        if lung:
            shape["mu"] = WATER_MU_PER_MM * 0.3
        shapes.append(shape)

    # Lesions: small spheres, mostly hot, some cold; at least two voxels across.
    vox = max(grid.voxel_mm[1], grid.voxel_mm[2])
    for _ in range(int(rng.integers(1, 6))):
        radius = rng.uniform(1.5, 4.0) * vox
        hot = rng.random() < 0.75
        shapes.append({"name": "hot lesion" if hot else "cold lesion", "kind": "ellipsoid",
                       "centre_mm": inside_point(radius),
                       "semi_axes_mm": [float(max(radius, grid.voxel_mm[0])), float(radius),
                                        float(radius)],
                       "angle_rad": 0.0,
                       "value": float(rng.uniform(3.0, 10.0) if hot else 0.0)})
    return shapes


def body_mu_map(activity: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """A water µ-map (1/mm) of a user's activity volume: its support with holes filled.

    The body outline of an arbitrary volume is unknown; everything above ``threshold`` times
    the maximum, with enclosed holes (cold organs) filled slice by slice, is taken as water.
    """
    from scipy.ndimage import binary_fill_holes

    peak = float(activity.max()) if activity.size else 0.0
    support = activity > threshold * peak if peak > 0 else np.zeros(activity.shape, bool)
    filled = np.stack([binary_fill_holes(s) for s in support]) if support.size else support
    return filled.astype(np.float32) * np.float32(WATER_MU_PER_MM)


def load_activity(path: str | os.PathLike, what: str = "activity") -> np.ndarray:
    """A user's activity volume ``[z, y, x]`` from ``.npy``: 3-D, finite, non-negative, not all 0.

    Raises :class:`BadInputError` naming the file otherwise (``what`` names the volume in the
    messages). Returns float32.
    """
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode=None)
    except FileNotFoundError:
        raise BadInputError(path, "no such file") from None
    except IsADirectoryError:
        raise BadInputError(path, "is a folder, not an .npy file") from None
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise BadInputError(path, f"not a plain .npy array ({reason})") from None
    except (OSError, EOFError) as exc:
        raise BadInputError(path, f"cannot read {what} volume ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise BadInputError(path, "holds several arrays (.npz); give one .npy [z, y, x]")
    if arr.ndim != 3:
        raise BadInputError(path, f"{what} must be 3-D [z, y, x], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise BadInputError(path, f"{what} must be real numbers, not {arr.dtype}")
    if min(arr.shape) == 0:
        raise BadInputError(path, f"{what} volume is empty (shape {arr.shape})")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise BadInputError(path, f"{what} holds NaN or infinite values")
    if arr.min() < 0:
        raise BadInputError(path, f"{what} must be non-negative (minimum {arr.min():g})")
    if not arr.any():
        raise BadInputError(path, f"{what} is zero everywhere")
    return arr


def load_mu_map(path: str | os.PathLike, scanner) -> np.ndarray:
    """A scan's attenuation map (1/mm, ``[z, y, x]`` on :func:`~badblock.physics.projector.
    scanner_grid` of ``scanner``) from ``.npy``, checked as :func:`load_activity` checks a
    volume and against the grid's shape. Returns float32."""
    from badblock.physics.projector import scanner_grid

    mu = load_activity(path, "attenuation map")
    grid = scanner_grid(scanner)
    if mu.shape != tuple(grid.shape):
        raise BadInputError(path, f"attenuation map shape {list(mu.shape)} is not the "
                                  f"{scanner.name} image grid {list(grid.shape)} [z, y, x]")
    return mu


def place_volume(volume: np.ndarray, grid: VolumeGrid) -> np.ndarray:
    """Centre a user's volume on ``grid`` (same voxel size): cropped or zero-padded per axis."""
    out = np.zeros(grid.shape, np.float32)
    src, dst = [], []
    for n_in, n_out in zip(volume.shape, grid.shape):
        if n_in >= n_out:
            lo = (n_in - n_out) // 2
            src.append(slice(lo, lo + n_out))
            dst.append(slice(0, n_out))
        else:
            lo = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(lo, lo + n_in))
    out[tuple(dst)] = volume[tuple(src)]
    return out
