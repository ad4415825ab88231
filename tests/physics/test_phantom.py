"""Phantoms: the random family, partial-volume rendering, and validation of a user's volume."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from badblock.errors import BadInputError
from badblock.physics.phantom import (
    WATER_MU_PER_MM,
    VolumeGrid,
    body_mu_map,
    load_activity,
    place_volume,
    random_phantom,
    render,
)

GRID = VolumeGrid((23, 60, 60), (2.0, 4.3633, 4.3633))


def test_grid_centres_are_symmetric_and_map_back_to_indices():
    z = GRID.centres(0)
    assert z[0] == pytest.approx(-22.0) and z[-1] == pytest.approx(22.0)
    points = np.array([[0.0, 0.0, 0.0], [z[3], GRID.centres(1)[7], GRID.centres(2)[59]]])
    idx = GRID.to_index(points)
    np.testing.assert_allclose(idx, [[11, 29.5, 29.5], [3, 7, 59]])


def test_rendered_cylinder_holds_its_analytic_volume():
    # Partial-volume edges: the voxel sum matches the continuous volume, not a jagged one.
    shape = {"kind": "cylinder", "centre_mm": [0, 3.0, -5.0], "semi_axes_mm": [15.0, 40.0, 55.0],
             "angle_rad": 0.4, "value": 2.0}
    vol = render([shape], GRID)
    voxel = np.prod(GRID.voxel_mm)
    expected = math.pi * 40 * 55 * 30 * 2.0
    assert vol.sum() * voxel == pytest.approx(expected, rel=0.02)
    assert vol.max() == pytest.approx(2.0)


def test_later_shapes_replace_what_lies_under_them():
    body = {"kind": "cylinder", "centre_mm": [0, 0, 0], "semi_axes_mm": [50, 80, 80], "value": 1.0}
    cold = {"kind": "ellipsoid", "centre_mm": [0, 0, 0], "semi_axes_mm": [8, 20, 20], "value": 0.0}
    vol = render([body, cold], GRID)
    assert vol[11, 29:31, 29:31].max() == 0.0
    assert vol[11, 29, 5] == 0.0 and vol[11, 29, 15] == pytest.approx(1.0)


def test_random_phantoms_are_reproducible_varied_and_inside_the_fov():
    a = random_phantom(GRID, np.random.default_rng(5), fov_radius_mm=120.0)
    b = random_phantom(GRID, np.random.default_rng(5), fov_radius_mm=120.0)
    c = random_phantom(GRID, np.random.default_rng(6), fov_radius_mm=120.0)
    assert a == b and a != c
    names = [s["name"] for s in a]
    assert "body" in names and any("lesion" in n for n in names)
    assert any(n in ("organ", "lung") for n in names)
    vol = render(a, GRID)
    assert np.isfinite(vol).all() and vol.min() >= 0 and vol.max() > 1.0
    # Nothing beyond the FOV radius (plus one voxel of partial-volume edge).
    yy, xx = np.meshgrid(GRID.centres(1), GRID.centres(2), indexing="ij")
    outside = np.hypot(yy, xx) > 120.0 + GRID.voxel_mm[1]
    assert vol[:, outside].max() == 0.0
    mu = render(a, GRID, "mu")
    assert mu.max() == pytest.approx(WATER_MU_PER_MM)
    # Family, not a template: body sizes and lesion counts vary over seeds.
    sizes = {round(random_phantom(GRID, np.random.default_rng(s))[0]["semi_axes_mm"][2], 3)
             for s in range(8)}
    assert len(sizes) == 8


def test_axial_variation_changes_the_outline_along_z():
    found = False
    for seed in range(20):
        shapes = random_phantom(GRID, np.random.default_rng(seed))
        body = render([s for s in shapes if s["name"] == "body"], GRID)
        areas = (body > 0.5).sum(axis=(1, 2))
        if areas.max() > 0 and areas[areas > 0].min() < 0.95 * areas.max():
            found = True
            break
    assert found


def test_body_mu_map_fills_cold_holes():
    vol = np.zeros((3, 20, 20), np.float32)
    vol[:, 4:16, 4:16] = 1.0
    vol[:, 8:12, 8:12] = 0.0  # a cold organ: still water
    mu = body_mu_map(vol)
    assert mu[1, 9, 9] == pytest.approx(WATER_MU_PER_MM)
    assert mu[1, 1, 1] == 0.0


def test_place_volume_centres_pads_and_crops():
    vol = np.ones((3, 10, 70), np.float32)
    out = place_volume(vol, GRID)
    assert out.shape == GRID.shape
    assert out.sum() == 3 * 10 * 60
    assert out[10:13].any() and not out[:10].any()


def test_load_activity_accepts_a_good_volume(tmp_path):
    path = tmp_path / "act.npy"
    np.save(path, np.ones((4, 5, 6), np.float64))
    vol = load_activity(path)
    assert vol.dtype == np.float32 and vol.shape == (4, 5, 6)


@pytest.mark.parametrize("array, problem", [
    (np.ones((5, 6)), "3-D"),
    (np.full((2, 3, 3), np.nan), "NaN"),
    (-np.ones((2, 3, 3)), "non-negative"),
    (np.zeros((2, 3, 3)), "zero everywhere"),
    (np.array([[["a"]]]), "real numbers"),
])
def test_load_activity_rejects_bad_volumes_naming_the_file(tmp_path, array, problem):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(BadInputError, match=problem) as err:
        load_activity(path)
    assert err.value.where == str(path)


def test_load_activity_refuses_pickles_and_missing_files(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(BadInputError, match="not a plain .npy"):
        load_activity(path)
    raw = tmp_path / "pickle.npy"
    raw.write_bytes(pickle.dumps(np.ones((2, 2, 2))))
    with pytest.raises(BadInputError):
        load_activity(raw)
    with pytest.raises(BadInputError, match="no such file"):
        load_activity(tmp_path / "missing.npy")
