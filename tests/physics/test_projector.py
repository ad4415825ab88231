"""Forward projection along the preset's own LORs: analytic chords, TOF, point sources, damage."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from badblock.physics.geometry import lor_geometry, plane_ring_pairs, ring_z_mm
from badblock.physics.mask import dead_block_mask
from badblock.physics.phantom import WATER_MU_PER_MM, VolumeGrid, render
from badblock.physics.projector import (
    TofKernel,
    line_integrals,
    project,
    scanner_geometry,
    scanner_grid,
)
from badblock.physics.scanners import get_scanner
from badblock.physics.simulate import alive_crystals

MINI = get_scanner("mini")


@pytest.fixture(scope="module")
def geom():
    return scanner_geometry(MINI)


@pytest.fixture(scope="module")
def geom_notof():
    return dataclasses.replace(scanner_geometry(MINI), tof=None)


def cylinder(grid: VolumeGrid, radius: float, value: float = 1.0, key: str = "value"):
    shape = {"kind": "cylinder", "centre_mm": [0, 0, 0],
             "semi_axes_mm": [grid.half_extent_mm[0] + 10, radius, radius], key: value}
    return render([shape], grid, key)


def lor_arrays(geom):
    """Per (plane pair, transaxial LOR): distance from the axis and 3-D / 2-D length ratio."""
    d = geom.yx2 - geom.yx1
    lxy = np.hypot(d[:, 0], d[:, 1])
    s = np.abs(geom.yx1[:, 0] * d[:, 1] - geom.yx1[:, 1] * d[:, 0]) / lxy
    dz = geom.ring_z[geom.pair_r2] - geom.ring_z[geom.pair_r1]
    sec = np.sqrt(1 + (dz[:, None] / lxy[None, :]) ** 2)  # [pairs, Lt]
    return s, sec


def analytic_bins(geom, per_lor):
    """Sum ``per_lor`` [pairs, Lt] into [plane, view * bin]."""
    out = np.zeros((geom.n_planes, geom.n_views * geom.n_bins))
    per_lor = np.broadcast_to(per_lor, (len(geom.pair_plane), len(geom.bin_index)))
    for i, p in enumerate(geom.pair_plane):
        out[p] += np.bincount(geom.bin_index, weights=per_lor[i], minlength=out.shape[1])
    return out.reshape(geom.n_planes, geom.n_views, geom.n_bins)


def test_grid_puts_a_slice_on_every_ring_and_covers_the_lors(geom):
    grid = scanner_grid(MINI)
    assert grid.shape[0] == 2 * MINI.n_rings - 1
    np.testing.assert_allclose(grid.centres(0)[::2], ring_z_mm(MINI))
    assert grid.half_extent_mm[1] >= geom.fov_radius_mm


def test_uniform_cylinder_projects_to_its_chord_lengths(geom_notof):
    radius = 90.0
    vol = cylinder(geom_notof.grid, radius)
    got, _ = project(geom_notof, vol, step_mm=geom_notof.grid.voxel_mm[1])  # the default step
    s, sec = lor_arrays(geom_notof)
    chord = 2 * np.sqrt(np.clip(radius**2 - s**2, 0, None))[None, :] * sec
    expected = analytic_bins(geom_notof, chord)
    inner = analytic_bins(geom_notof, (s < 0.85 * radius)[None, :] * 1.0)
    count = analytic_bins(geom_notof, np.ones_like(chord))
    well_inside = (inner == count) & (count > 0)
    assert well_inside.sum() > 1000
    rel = np.abs(got[0] - expected) / np.maximum(expected, 1e-9)
    assert np.median(rel[well_inside]) < 0.003
    assert rel[well_inside].max() < 0.015
    # Bins whose LORs all miss the cylinder see nothing; bins with no real LOR are 0.
    assert got[0][analytic_bins(geom_notof, (s[None, :] > radius + 10) * 1.0) == count].max() == 0
    assert (got[0][count == 0] == 0).all()


def test_attenuation_factor_is_exp_of_mu_times_chord(geom_notof):
    radius = 90.0
    grid = geom_notof.grid
    vol = cylinder(grid, radius)
    mu = cylinder(grid, radius, WATER_MU_PER_MM, "mu")
    # One central LOR through the axis, in the plane of ring 0.
    z0 = ring_z_mm(MINI)[0]
    p1 = np.array([[z0, 0.0, -200.0]])
    p2 = np.array([[z0, 0.0, 200.0]])
    act, att = line_integrals(grid, p1, p2, vol, mu, step_mm=1.0)
    assert act[0] == pytest.approx(2 * radius, rel=0.01)
    assert att[0] == pytest.approx(np.exp(-WATER_MU_PER_MM * 2 * radius), rel=0.01)
    full, _ = project(geom_notof, vol, mu, step_mm=4.0)
    plain, _ = project(geom_notof, vol, step_mm=4.0)
    ratio = full[plain > 1] / plain[plain > 1]
    assert ratio.max() <= 1.0 and ratio.min() > np.exp(-WATER_MU_PER_MM * 2 * radius * 1.1)


def test_reference_sampler_agrees_with_the_fast_projector(geom_notof):
    # The separable projector vs plain trilinear sampling of each LOR (map_coordinates).
    # A smooth random volume, so that the two samplings' different sample positions agree.
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    grid = geom_notof.grid
    vol = gaussian_filter(rng.random(grid.shape), 2.0).astype(np.float32)
    plane = 30  # an oblique plane: its ring pairs all tilt
    pairs = plane_ring_pairs(MINI)[plane]
    got, _ = project(geom_notof, vol, step_mm=2.0)
    ref = np.zeros(geom_notof.n_views * geom_notof.n_bins)
    for r1, r2 in pairs:
        n = len(geom_notof.bin_index)
        p1 = np.column_stack([np.full(n, geom_notof.ring_z[r1]), geom_notof.yx1])
        p2 = np.column_stack([np.full(n, geom_notof.ring_z[r2]), geom_notof.yx2])
        act, _ = line_integrals(grid, p1, p2, vol, step_mm=2.0)
        ref += np.bincount(geom_notof.bin_index, weights=act, minlength=ref.size)
    np.testing.assert_allclose(got[0, plane].ravel(), ref, rtol=2e-4, atol=1e-4)


def test_tof_bins_sum_to_the_non_tof_projection(geom, geom_notof):
    rng = np.random.default_rng(1)
    vol = rng.random(geom.grid.shape).astype(np.float32)
    mu = np.full(geom.grid.shape, 0.005, np.float32)
    tof, _ = project(geom, vol, mu, step_mm=5.0)
    flat, _ = project(geom_notof, vol, mu, step_mm=5.0)
    assert tof.shape == (3,) + flat.shape[1:]
    np.testing.assert_allclose(tof.sum(axis=0), flat[0], rtol=1e-5, atol=1e-6)
    assert (tof >= -1e-9).all()


def test_tof_kernel_from_ps_and_its_weights():
    k = TofKernel.from_ps(5, 100.0, 235.482)  # 100 ps = 15 mm; FWHM 235 ps: sigma 15 mm
    assert k.bin_mm == pytest.approx(14.9896, rel=1e-4)
    assert k.sigma_mm == pytest.approx(14.9896, rel=1e-4)
    w = k.weights(np.array([0.0, 30.0, -1e4]))
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert w[0].argmax() == 2 and w[1].argmax() == 4 and w[2, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(w[0], w[0][::-1])


def point_source(grid, z, y, x, value=1000.0):
    vol = np.zeros(grid.shape, np.float32)
    iz, iy, ix = np.round(grid.to_index(np.array([z, y, x]))).astype(int)
    vol[iz, iy, ix] = value
    return vol, (grid.centres(0)[iz], grid.centres(1)[iy], grid.centres(2)[ix])


def test_point_source_lands_in_the_bins_the_geometry_predicts(geom):
    vol, (z, y, x) = point_source(geom.grid, ring_z_mm(MINI)[4], 30.0, -45.0)
    proj, _ = project(geom, vol, step_mm=2.0)
    seg0 = MINI.segments[0].n_planes
    # Axially: the segment-0 plane whose ring pairs are centred on the source.
    plane_sum = proj.sum(axis=(0, 2, 3))
    centre_z = [ring_z_mm(MINI)[pp].mean() for pp in plane_ring_pairs(MINI)[:seg0]]
    assert int(np.argmax(plane_sum[:seg0])) == int(np.argmin(np.abs(np.subtract(centre_z, z))))
    # Transaxially: per view, the bin whose line (lor_geometry: x cos phi + y sin phi = s) passes
    # nearest the source, from the geometry module's own formula.
    phi, s = lor_geometry(MINI)
    dist = np.abs(x * np.cos(phi) + y * np.sin(phi) - s).min(axis=1)  # [view, bin]
    sino = proj.sum(axis=0)[int(np.argmax(plane_sum[:seg0]))]
    hit = sino.argmax(axis=1)
    predicted = dist.argmin(axis=1)
    assert np.abs(hit - predicted).max() <= 1
    assert (hit == predicted).mean() > 0.6


def test_tof_puts_an_off_centre_source_on_its_side_of_the_lor(geom):
    # A source 100 mm off the axis, seen by LORs through the axis (central bin): there it lies
    # 100 mm from the LOR midpoint, beyond the +-45 mm of the centre TOF bin of 600 ps.
    vol, (z, y, x) = point_source(geom.grid, ring_z_mm(MINI)[6], 0.0, 100.0)
    proj, _ = project(geom, vol, step_mm=2.0)
    centre = MINI.n_bins // 2
    v = int(proj[:, :, :, centre].sum(axis=(0, 1)).argmax())
    lt = np.nonzero(geom.bin_index == v * geom.n_bins + centre)[0][0]
    toward_det2 = np.hypot(*(geom.yx2[lt] - [y, x])) < np.hypot(*(geom.yx1[lt] - [y, x]))
    tof = proj[:, :, v, centre].sum(axis=1)
    assert tof.argmax() == (2 if toward_det2 else 0)
    assert tof[1] < 0.3 * tof.max()


def test_dead_blocks_remove_the_lors_the_mask_counts(geom_notof):
    # Uniform activity in a centred cylinder: the LORs of one bin see nearly the same activity,
    # so the damaged projection is (1 - f) x the full one, the binomial-thinning assumption.
    blocks = [(3, 1)]
    vol = cylinder(geom_notof.grid, 100.0)
    alive = alive_crystals(MINI, blocks)
    full, damaged = project(geom_notof, vol, step_mm=4.0, alive=alive)
    mask = dead_block_mask(MINI, blocks)
    assert (damaged <= full + 1e-9).all()
    untouched = (mask == 0) & (full[0] > 0)
    np.testing.assert_allclose(damaged[0][untouched], full[0][untouched])
    assert damaged[0][mask == 1].max() == 0
    partial = (mask > 0) & (mask < 1) & (full[0] > 1)
    thinned = (1 - mask) * full[0]
    assert abs(damaged[0][partial].sum() / thinned[partial].sum() - 1) < 0.03
    assert abs(damaged[0].sum() / thinned.sum() - 1) < 0.002


def test_view_ranges_tile_the_whole_projection(geom):
    rng = np.random.default_rng(2)
    vol = rng.random(geom.grid.shape).astype(np.float32)
    whole, _ = project(geom, vol, step_mm=6.0)
    parts = [project(geom, vol, step_mm=6.0, views=(a, min(a + 10, MINI.n_views)), budget=50_000)[0]
             for a in range(0, MINI.n_views, 10)]
    np.testing.assert_allclose(np.concatenate(parts, axis=2), whole, rtol=1e-5, atol=1e-7)
