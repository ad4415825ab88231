"""The fast projector against the LOR-by-LOR reference, its adjoint, TOF and gap bins."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badblock.errors import BadInputError
from badblock.physics.fastgeom import default_options
from badblock.physics.fastproj import FastProjector
from badblock.physics.mask import real_lor_count
from badblock.physics.phantom import random_phantom, render
from badblock.physics.projector import project, scanner_geometry
from badblock.physics.scanners import get_scanner

MINI = get_scanner("mini")
MINI_NOTOF = get_scanner("mini", n_tof=1, tof_fwhm_ps=0.0, tof_bin_ps=0.0, tof_order="none")
# A big-scanner-like case the reference can afford: the Vision's rings, crystals, mashing, bins
# and TOF, but 10 rings (span 7, so three segments) instead of 80.
VISION_SHORT = get_scanner("vision", rings_per_block=5, blocks_axial=2, span=7, max_ring_diff=9)
EXACT = {"subviews": "all", "tilts": "ring", "pool": 1}


def phantom(scanner, seed, radius_scale=1.0):
    geom = scanner_geometry(scanner)
    shapes = random_phantom(geom.grid, np.random.default_rng(seed),
                            radius_scale * geom.fov_radius_mm)
    return geom, render(shapes, geom.grid), render(shapes, geom.grid, "mu")


def rel_l1(got, ref):
    return float(np.abs(got - ref).sum() / np.abs(ref).sum())


@pytest.fixture(scope="module")
def mini_case():
    geom, act, mu = phantom(MINI, 1)
    # The reference samples 4 x finer than the voxel: its own sampling error stays below ours.
    step = geom.grid.voxel_mm[1] / 4
    refs = {m: project(geom, act, mu if m else None, step_mm=step)[0] for m in (False, True)}
    return act, mu, refs


@pytest.mark.parametrize("with_mu", [False, True])
def test_exact_setting_matches_the_reference_on_mini(mini_case, with_mu):
    act, mu, refs = mini_case
    ref = refs[with_mu]
    got = FastProjector(MINI, mu if with_mu else None, **EXACT).forward(act).numpy()
    assert got.shape == ref.shape == MINI.shape
    # Both are trilinear interpolants sampled along the same LORs, at other points.
    assert rel_l1(got, ref) < 3e-3
    bright = ref > 0.05 * ref.max()
    assert np.median(np.abs(got - ref)[bright] / ref[bright]) < 2e-3
    assert abs(got.sum() / ref.sum() - 1) < 2e-4


@pytest.mark.parametrize("with_mu", [False, True])
def test_fast_setting_error_on_mini(mini_case, with_mu):
    act, mu, refs = mini_case
    ref = refs[with_mu]
    got = FastProjector(MINI, mu if with_mu else None, subviews="mean", tilts=2,
                        pool=2).forward(act).numpy()
    assert rel_l1(got, ref) < 1.5e-2
    assert abs(got.sum() / ref.sum() - 1) < 2e-3


def test_without_tof_against_the_reference():
    geom, act, mu = phantom(MINI_NOTOF, 4)
    ref, _ = project(geom, act, mu, step_mm=geom.grid.voxel_mm[1] / 4)
    got = FastProjector(MINI_NOTOF, mu, **EXACT).forward(act).numpy()
    assert got.shape == ref.shape and got.shape[0] == 1
    assert rel_l1(got, ref) < 3e-3


@pytest.mark.slow
def test_big_scanner_like_case_both_settings():
    # Two views of the reduced Vision; the reference takes seconds per view here.
    geom, act, mu = phantom(VISION_SHORT, 2, radius_scale=0.6)
    views = [3, 29]
    ref = np.concatenate([project(geom, act, mu, step_mm=geom.grid.voxel_mm[1] / 2,
                                  views=(v, v + 1))[0] for v in views], axis=2)
    exact = FastProjector(VISION_SHORT, mu, **EXACT).forward(act, views).numpy()
    assert rel_l1(exact, ref) < 1e-3
    opts = default_options(get_scanner("vision"))
    assert opts == {"subviews": "mean", "tilts": 2, "pool": 4}
    fast = FastProjector(VISION_SHORT, mu, **opts).forward(act, views).numpy()
    assert rel_l1(fast, ref) < 2e-2
    assert abs(fast.sum() / ref.sum() - 1) < 3e-3


@pytest.mark.parametrize("opts", [EXACT, {"subviews": "mean", "tilts": 2, "pool": 3}])
def test_adjoint_is_exact_in_float64(opts):
    rng = np.random.default_rng(5)
    grid_shape = FastProjector(MINI, **opts).grid.shape
    mu = np.abs(rng.normal(size=grid_shape)) * 2e-3
    proj = FastProjector(MINI, mu, dtype=torch.float64, **opts)
    views = [0, 7, 35]
    x = torch.as_tensor(rng.random(grid_shape))
    y = torch.as_tensor(rng.random((MINI.n_tof, MINI.n_planes, len(views), MINI.n_bins)))
    lhs = float((proj.forward(x, views) * y).sum())
    rhs = float((x * proj.adjoint(y, views)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)
    assert lhs > 0


def test_tof_bins_sum_to_the_non_tof_projection():
    _, act, mu = phantom(MINI, 3)
    tof = FastProjector(MINI, mu, subviews="mean", tilts=2, pool=2).forward(act).numpy()
    flat = FastProjector(MINI_NOTOF, mu, subviews="mean", tilts=2, pool=2).forward(act).numpy()
    np.testing.assert_allclose(tof.sum(axis=0), flat[0], rtol=1e-4, atol=1e-4 * flat.max())
    assert (tof >= -1e-6 * tof.max()).all()


@pytest.mark.parametrize("opts", [EXACT, {"subviews": "mean", "tilts": 1, "pool": 2}])
def test_bins_without_real_lors_stay_zero(opts):
    _, act, _ = phantom(MINI, 6)
    got = FastProjector(MINI, **opts).forward(act).numpy()
    no_lor = real_lor_count(MINI) == 0
    assert no_lor.any() and got[:, no_lor].max() == 0
    assert got[:, ~no_lor].max() > 0


def test_views_are_independent_of_the_batch():
    _, act, mu = phantom(MINI, 7)
    proj = FastProjector(MINI, mu)
    whole = proj.forward(act).numpy()
    part = proj.forward(act, [30, 2, 11]).numpy()
    np.testing.assert_allclose(part, whole[:, :, [30, 2, 11]], rtol=1e-6, atol=1e-6)


def test_bad_volume_and_options_are_refused():
    proj = FastProjector(MINI)
    with pytest.raises(BadInputError, match="grid"):
        proj.forward(np.zeros((3, 4, 5), np.float32))
    with pytest.raises(BadInputError, match="shape"):
        proj.adjoint(np.zeros((1, 2, 3, 4), np.float32))
    with pytest.raises(BadInputError, match="view"):
        proj.forward(np.zeros(proj.grid.shape, np.float32), [MINI.n_views])
    for bad in [{"subviews": "some"}, {"tilts": "segment"}, {"tilts": 0}, {"pool": 0}]:
        with pytest.raises(BadInputError, match="projector"):
            FastProjector(MINI, **bad)
