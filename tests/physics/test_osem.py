"""TOF OSEM on the fast projector: MLEM convergence, gaps modelled, mask volumes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from badblock.errors import BadInputError
from badblock.physics.fastproj import FastProjector
from badblock.physics.mask import dead_block_mask
from badblock.physics.osem import mask_volume, osem, subset_views
from badblock.physics.phantom import random_phantom, render
from badblock.physics.projector import scanner_geometry
from badblock.physics.scanners import get_scanner

MINI = get_scanner("mini")
FAST = {"subviews": "mean", "tilts": 1, "pool": 2}  # the quick setting: tests, not physics


@pytest.fixture(scope="module")
def case():
    geom = scanner_geometry(MINI)
    shapes = random_phantom(geom.grid, np.random.default_rng(3), geom.fov_radius_mm)
    act = gaussian_filter(render(shapes, geom.grid), 1.0)  # smooth: MLEM gets close fast
    mu = render(shapes, geom.grid, "mu")
    proj = FastProjector(MINI, mu, **FAST)
    return act, proj, proj.forward(act).numpy()


def body_nrmse(img, act):
    body = act > 0.05 * act.max()
    return float(np.sqrt(((img - act)[body] ** 2).mean() / (act[body] ** 2).mean()))


def test_mlem_on_noiseless_data_converges_to_the_phantom(case):
    act, proj, y = case
    errs, loglik = [], []

    def record(it, x):
        errs.append(body_nrmse(x.numpy(), act))
        model = proj.forward(x).numpy()
        ok = model > 0
        loglik.append(float((y[ok] * np.log(model[ok]) - model[ok]).sum()))

    img = osem(y, proj, iterations=12, subsets=1, callback=record)
    assert len(errs) == 12
    assert np.all(np.diff(errs) < 0), errs  # the image error falls every iteration
    assert np.all(np.diff(loglik) > 0)  # EM never lowers the Poisson likelihood
    assert errs[0] > 0.3 and errs[-1] < 0.06
    assert img.dtype == np.float32 and img.min() >= 0
    outside = ~np.broadcast_to(np.hypot(*np.meshgrid(proj.grid.centres(1), proj.grid.centres(2),
                                                     indexing="ij")) <= proj.support_mm,
                               img.shape)
    assert img[outside].max() == 0


def test_gaps_modelled_osem_of_a_damaged_scan_matches_the_complete_one(case):
    act, proj, y = case
    mask = dead_block_mask(MINI, "3:1")
    damaged = y * (1 - mask)
    complete = osem(y, proj, iterations=4, subsets=6)
    modelled = osem(damaged, proj, iterations=4, subsets=6, sensitivity=1 - mask)
    ignored = osem(damaged, proj, iterations=4, subsets=6)
    diff = body_nrmse(modelled, complete)
    assert diff < 0.01
    assert body_nrmse(ignored, complete) > 5 * diff  # not modelling the gaps leaves a hole
    assert body_nrmse(complete, act) < 0.05


def test_background_term_is_part_of_the_model(case):
    act, proj, y = case
    bg = np.full(y.shape[1:], 0.2 * float(y.mean()), np.float32)
    data = y + bg  # broadcast over TOF: counts per TOF bin
    with_bg = osem(data, proj, iterations=3, subsets=6, background=bg)
    without = osem(data, proj, iterations=3, subsets=6)
    assert body_nrmse(with_bg, act) < 0.5 * body_nrmse(without, act)


def test_mask_volume_lights_up_the_dead_blocks_side():
    proj = FastProjector(MINI, **FAST)
    assert not mask_volume(proj, np.zeros(MINI.shape[1:], np.float32)).any()
    full = mask_volume(proj, np.ones(MINI.shape[1:], np.float32))
    inside = full > 0
    np.testing.assert_allclose(full[inside], 1.0, rtol=1e-5)
    block = 3
    vol = mask_volume(proj, dead_block_mask(MINI, f"{block}:1"))
    assert 0 < vol.mean() < 0.2 and vol.max() <= 1
    # A voxel near the dead block's crystals (angle of crystal c: 2 pi c / N) vs the one
    # opposite it, both in the middle of axial block 1.
    angle = 2 * np.pi * np.mean(list(MINI.block_crystals(block))) / MINI.crystals_per_ring
    r = 0.8 * proj.support_mm
    z = 2 * int(np.mean(list(MINI.block_rings(1))))
    near = proj.grid.to_index(np.array([0, r * np.sin(angle), r * np.cos(angle)]))
    far = proj.grid.to_index(np.array([0, -r * np.sin(angle), -r * np.cos(angle)]))
    v_near = vol[z, int(round(near[1])), int(round(near[2]))]
    v_far = vol[z, int(round(far[1])), int(round(far[2]))]
    assert v_near > 1.5 * v_far > 0


def test_subsets_and_bad_input(case):
    _, proj, y = case
    assert subset_views(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    with pytest.raises(BadInputError, match="subsets"):
        osem(y, proj, subsets=0)
    with pytest.raises(BadInputError, match="osem data"):
        osem(y[:, :5], proj)
    with pytest.raises(BadInputError, match="sensitivity"):
        osem(y, proj, sensitivity=-np.ones(y.shape[1:]))
    with pytest.raises(BadInputError, match="mask"):
        mask_volume(proj, np.zeros((2, 3, 4)))


def test_sensitivity_images_are_kept_for_the_next_reconstruction(case):
    act, proj, y = case
    plain = osem(y, proj, iterations=1, subsets=3)
    kept: dict = {}
    first = osem(y, proj, iterations=1, subsets=3, sens_images=kept)
    assert sorted(kept) == [(3, 0), (3, 1), (3, 2)]
    images = {k: v.clone() for k, v in kept.items()}
    second = osem(0.5 * y, proj, iterations=1, subsets=3, sens_images=kept)
    np.testing.assert_array_equal(first, plain)
    # EM is scale-equivariant: half the data, half the image (with the kept images unchanged)
    np.testing.assert_allclose(second, 0.5 * osem(y, proj, iterations=1, subsets=3), rtol=1e-4,
                               atol=1e-6 * float(plain.max()))
    assert all(bool((kept[k] == images[k]).all()) for k in images)
