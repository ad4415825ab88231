"""Activity families: shapes, seeds, and that each one differs in the way it claims."""

from __future__ import annotations

import numpy as np
import pytest

from badblock.errors import BadInputError
from badblock.physics import families
from badblock.physics.phantom import WATER_MU_PER_MM, VolumeGrid, random_phantom, render

# The mini scanner's grid (scanner_grid): 23 slices of 2 mm, 60 x 60 voxels of 4.36 mm.
GRID = VolumeGrid((23, 60, 60), (2.0, 4.3633, 4.3633))
FOV = 128.5


def _make(name, seed=0, **params):
    return families.make(name, GRID, np.random.default_rng(seed), FOV, **params)


@pytest.mark.parametrize("name", families.family_names())
def test_shapes_units_and_reproducible(name):
    act, mu = _make(name, 3)
    assert act.shape == mu.shape == GRID.shape
    assert act.dtype == mu.dtype == np.float32
    assert act.min() >= 0 and act.max() > 0 and np.isfinite(act).all()
    assert mu.min() >= 0 and mu.max() <= WATER_MU_PER_MM + 1e-9
    assert not act[mu == 0].any()  # no activity outside the attenuating body
    again = _make(name, 3)
    assert np.array_equal(act, again[0]) and np.array_equal(mu, again[1])
    assert not np.array_equal(act, _make(name, 4)[0])
    # Everything lies inside the circle the LORs reach.
    yy, xx = np.meshgrid(GRID.centres(1), GRID.centres(2), indexing="ij")
    assert not act[:, np.hypot(yy, xx) > FOV + 5].any()


def test_train_family_is_random_phantom():
    act, mu = _make("random", 11)
    shapes = random_phantom(GRID, np.random.default_rng(11), FOV)
    assert np.array_equal(act, render(shapes, GRID))
    assert np.array_equal(mu, render(shapes, GRID, "mu"))


def _interior(mu):
    """Voxels well inside the body: water, and away from its partial-volume edge."""
    from scipy.ndimage import binary_erosion

    return binary_erosion(mu >= WATER_MU_PER_MM - 1e-9, iterations=2)


def test_textured_varies_smoothly_everywhere():
    act, mu = _make("textured", 1, contrast=0.6)
    inner = act[_interior(mu)]
    # Not piecewise constant: no value repeats (the training family is mostly background 1).
    assert np.unique(inner).size > 0.99 * inner.size
    train_act, train_mu = _make("random", 1)
    train_inner = train_act[_interior(train_mu)]
    assert np.unique(train_inner).size < 0.5 * train_inner.size
    cv = inner.std() / inner.mean()
    assert 0.3 < cv < 1.2  # the lognormal spread exp(c^2) - 1 ~ 0.66 for c = 0.6
    # Smooth: neighbouring voxels along x are strongly correlated; far ones are not.
    inside = _interior(mu)
    pair = inside[..., :-1] & inside[..., 1:]
    near = np.corrcoef(act[..., :-1][pair], act[..., 1:][pair])[0, 1]
    far_pair = inside[..., :-15] & inside[..., 15:]
    far = np.corrcoef(act[..., :-15][far_pair], act[..., 15:][far_pair])[0, 1]
    assert near > 0.7 and far < 0.5 * near
    flat, _ = _make("textured", 1, contrast=0.0)
    assert np.allclose(flat[_interior(mu)], 1.0)  # contrast 0: the body outline only


def test_lesions_hot_and_cold_of_several_sizes_in_warm_background():
    act, mu, record = families.build("lesions", GRID, np.random.default_rng(2), FOV,
                                     n_lesions=8, hot=4.0, cold_fraction=0.5)
    lesions = [s for s in record["shapes"] if "lesion" in s["name"]]
    assert len(lesions) >= 6
    radii = {s["semi_axes_mm"][0] for s in lesions}
    assert len(radii) >= 3
    kinds = {s["name"] for s in lesions}
    assert kinds == {"hot lesion", "cold lesion"}
    z, y, x = np.meshgrid(*(GRID.centres(a) for a in range(3)), indexing="ij")
    near_any = np.zeros(GRID.shape, bool)
    for s in lesions:
        cz, cy, cx = s["centre_mm"]
        r = s["semi_axes_mm"][0]
        d = np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)
        near_any |= d < r + 5.0
        core = d < 0.4 * r
        if core.any():  # the centre voxel(s) hold the lesion's own value
            assert np.allclose(act[core], s["value"], atol=1e-5)
    background = _interior(mu) & ~near_any
    assert np.allclose(act[background], 1.0)  # warm and uniform


def test_vessels_are_thin_tubes_across_the_axial_extent():
    act, mu, record = families.build("vessels", GRID, np.random.default_rng(5), FOV,
                                     n_vessels=4, radius_mm=3.0, value=4.0, background=0.25)
    body = mu > 0
    hot = act > 2.0
    # Thin: the tubes fill a few per cent of the body, and every hot voxel lies within a
    # radius plus a voxel diagonal of a curve's polyline.
    assert 0.002 < hot.sum() / body.sum() < 0.08
    z, y, x = np.meshgrid(*(GRID.centres(a) for a in range(3)), indexing="ij")
    pos = np.stack([z[hot], y[hot], x[hot]], axis=1)
    dist = np.full(len(pos), np.inf)
    curves = []
    for p0, p1, p2 in np.asarray(record["control_points_mm"]):
        s = np.linspace(0, 1, 2000)[:, None]  # the quadratic Bezier curve, densely
        curves.append((1 - s) ** 2 * p0 + 2 * s * (1 - s) * p1 + s * s * p2)
    for pts in curves:
        d = np.linalg.norm(pos[:, None, :] - pts[None, ::4, :], axis=2).min(axis=1)
        dist = np.minimum(dist, d)
    assert dist.max() < 3.0 + 4.4 / 2 + 0.5  # radius + half a voxel of partial volume
    # 3-D: tubes cross nearly every slice, and the low background stays elsewhere.
    assert (hot.any(axis=(1, 2))).mean() > 0.85
    inner = act[_interior(mu)]
    assert np.isclose(inner, 0.25).mean() > 0.9
    for pts in curves:
        assert np.ptp(pts[:, 0]) > 30.0  # of the 46 mm axial extent


def test_unknown_family_or_parameter():
    with pytest.raises(BadInputError, match="unknown activity family 'noise'"):
        _make("noise")
    with pytest.raises(BadInputError, match="no parameter 'radius'"):
        _make("vessels", radius=3.0)
    with pytest.raises(BadInputError, match="positive radii_mm"):
        _make("lesions", radii_mm=[0.0])
