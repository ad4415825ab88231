"""Classical baselines on hand-made arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from badblock import baselines
from badblock.errors import BadInputError
from badblock.io.segments import Segment
from badblock.metrics import nrmse
from badblock.physics import radial_flip, wrap_partner


def _ramp(n_planes=2, n_views=12, n_bins=8):
    v = np.arange(n_views, dtype=np.float32)[:, None]
    b = np.arange(n_bins, dtype=np.float32)[None, :]
    plane = 5.0 + 2.0 * v + 0.5 * b
    return np.stack([plane * (p + 1) for p in range(n_planes)])


def test_divide_is_exact_on_thinned_expectation():
    rng = np.random.default_rng(0)
    truth = rng.uniform(1, 50, size=(3, 4, 6, 10)).astype(np.float32)
    mask = rng.uniform(0, 0.9, size=(4, 6, 10)).astype(np.float32)
    mask[1, 2, 3:5] = 1.0
    mask[0] = 0.0
    damaged = truth * (1 - mask)
    out = baselines.divide(damaged, mask)
    alive = np.broadcast_to(mask < 1, truth.shape)
    np.testing.assert_allclose(out[alive], truth[alive], rtol=1e-5)
    assert np.all(out[:, 1, 2, 3:5] == 0)
    assert out.dtype == np.float32


def test_none_copies():
    x = np.arange(24, dtype=np.uint16).reshape(1, 2, 3, 4)
    out = baselines.none(x, np.zeros((2, 3, 4), np.float32))
    assert out.dtype == np.float32 and np.array_equal(out, x)


def test_interp_reproduces_linear_ramp_along_views():
    truth = _ramp()
    mask = np.zeros(truth.shape, np.float32)
    mask[:, 4:7, 2:4] = 1.0  # fully dead run of three views
    mask[:, 8, 5] = 0.5  # partly damaged: divide's job
    damaged = truth * (1 - mask)
    out = baselines.interp(damaged, mask)
    np.testing.assert_allclose(out, truth, rtol=1e-5)
    # divide alone leaves the dead bins at zero
    assert np.all(baselines.divide(damaged, mask)[:, 4:7, 2:4] == 0)


def test_interp_uses_flipped_wrap_at_view_seam():
    rng = np.random.default_rng(1)
    n_views, n_bins = 8, 6
    truth = rng.uniform(1, 100, size=(1, n_views, n_bins)).astype(np.float32)
    mask = np.zeros(truth.shape, np.float32)
    mask[0, 0, 1] = 1.0  # dead first view
    mask[0, n_views - 1, 4] = 1.0  # dead last view
    out = baselines.interp(truth * (1 - mask), mask)
    flipped = radial_flip(truth[0])
    expect_first = 0.5 * (truth[0, 1, 1] + flipped[n_views - 1, 1])
    expect_last = 0.5 * (truth[0, n_views - 2, 4] + flipped[0, 4])
    np.testing.assert_allclose(out[0, 0, 1], expect_first, rtol=1e-5)
    np.testing.assert_allclose(out[0, n_views - 1, 4], expect_last, rtol=1e-5)
    # a plain (unflipped) wrap would give something else on this data
    assert not np.isclose(out[0, 0, 1], 0.5 * (truth[0, 1, 1] + truth[0, n_views - 1, 1]))


def test_interp_seam_takes_tof_and_segment_partner():
    rng = np.random.default_rng(2)
    segments = [Segment(0, -1, 1, 3), Segment(-1, -4, -2, 2), Segment(1, 2, 4, 2)]
    n_tof, n_views, n_bins = 3, 6, 5
    truth = rng.uniform(1, 100, size=(n_tof, 7, n_views, n_bins)).astype(np.float32)
    mask = np.zeros((7, n_views, n_bins), np.float32)
    mask[3, 0, 2] = 1.0  # first view of an oblique plane
    out = baselines.interp(truth * (1 - mask), mask, segments=segments, tof_order="siemens")
    for t in range(n_tof):
        t2, p2 = wrap_partner(segments, n_tof, "siemens", t, 3)
        expect = 0.5 * (truth[t, 3, 1, 2] + radial_flip(truth[t2, p2])[n_views - 1, 2])
        np.testing.assert_allclose(out[t, 3, 0, 2], expect, rtol=1e-5)


def test_biharmonic_fills_linear_image():
    truth = _ramp(n_planes=1, n_views=16, n_bins=12)
    mask = np.zeros(truth.shape, np.float32)
    mask[0, 6:9, 4:7] = 1.0
    mask[0, 2, 2] = 0.3
    out = baselines.biharmonic(truth * (1 - mask), mask)
    np.testing.assert_allclose(out, truth, rtol=1e-3)


def test_normconv_constant_with_holes_returns_constant():
    rng = np.random.default_rng(3)
    segments = [Segment(0, -1, 1, 5), Segment(-1, -4, -2, 3), Segment(1, 2, 4, 3)]
    mask = rng.uniform(0, 0.8, size=(11, 10, 16)).astype(np.float32)
    mask[rng.uniform(size=mask.shape) < 0.1] = 1.0
    mask[2, 3:6, 5:9] = 1.0
    const = np.full((2, 11, 10, 16), 42.0, np.float32)
    out = baselines.normconv(const * (1 - mask), mask, widths=(1.0, 1.5, 2.0), segments=segments,
                             tof_order="linear")
    np.testing.assert_allclose(out, const, rtol=1e-5)


def test_sensitivity_pattern_is_put_back():
    """Counts = activity per LOR x LORs per bin: gap bins (0 LORs) neither feed nor get counts."""
    from badblock.physics import get_scanner, real_lor_count

    sc = get_scanner("mini")
    sens = real_lor_count(sc).astype(np.float32)[:23]  # segment 0
    per_lor = _ramp(n_planes=23, n_views=sens.shape[1], n_bins=sens.shape[2]) / 10
    truth = per_lor * sens
    mask = np.zeros(truth.shape, np.float32)
    mask[:, 10:13, 20:26] = 1.0
    mask[:, 15, 30:40] = 0.5
    damaged = truth * (1 - mask)
    out = baselines.interp(damaged, mask, sensitivity=sens)
    np.testing.assert_allclose(out, truth, rtol=1e-4, atol=1e-4)
    plain = baselines.interp(damaged, mask)  # gap zeros pull the plain interpolation down
    assert not np.allclose(plain, truth, rtol=1e-2)
    const = 7.0 * sens
    out = baselines.normconv(const * (1 - mask), mask, widths=(1.0, 1.5, 1.5), sensitivity=sens)
    np.testing.assert_allclose(out, const, rtol=1e-5, atol=1e-5)
    out = baselines.biharmonic(damaged, mask, sensitivity=sens)
    np.testing.assert_allclose(out, truth, rtol=1e-3, atol=1e-3)


def test_normconv_denoises_undamaged_bins_too():
    rng = np.random.default_rng(4)
    truth = np.full((1, 4, 16, 24), 30.0, np.float32)
    noisy = rng.poisson(truth).astype(np.float32)
    mask = np.zeros(truth.shape[1:], np.float32)
    out = baselines.normconv(noisy, mask, widths=(1.0, 2.0, 2.0))
    assert not np.array_equal(out, noisy)
    assert np.std(out - truth) < 0.5 * np.std(noisy - truth)


def test_tune_normconv_returns_best_of_grid():
    rng = np.random.default_rng(5)
    truth = np.full((1, 4, 12, 16), 20.0, np.float32) + np.arange(16, dtype=np.float32)
    mask = np.zeros(truth.shape[1:], np.float32)
    mask[1:3, 4:8, 6:9] = 0.6
    mask[2, 5, 7] = 1.0
    scans = [rng.binomial(rng.poisson(truth).astype(np.int64), 1 - mask).astype(np.float32)
             for _ in range(2)]
    grid = ((0.0, 1.0), (0.7, 3.0), (0.7, 2.0))
    widths = baselines.tune_normconv(scans, [truth, truth], mask, grid=grid)
    assert widths[0] in grid[0] and widths[1] in grid[1] and widths[2] in grid[2]

    def err(w):
        return np.mean([nrmse(baselines.normconv(s, mask, widths=w), truth, mask) for s in scans])

    assert err(widths) <= min(err((a, b, c)) for a in grid[0] for b in grid[1] for c in grid[2])


def test_mask_shape_mismatch_is_clear():
    with pytest.raises(BadInputError, match="does not match"):
        baselines.interp(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))
    with pytest.raises(BadInputError, match="unknown baseline"):
        baselines.get_baseline("gapfil")


@pytest.fixture(scope="module")
def mini_dead_block():
    """A mini scan with one dead block, simulated LOR by LOR by the reference projector (not
    the fast one the model fill uses): complete expectation, damaged counts, mask, mu."""
    from badblock.physics.mask import dead_block_mask
    from badblock.physics.phantom import random_phantom, render
    from badblock.physics.projector import project, scanner_geometry
    from badblock.physics.scanners import get_scanner
    from badblock.physics.simulate import alive_crystals

    mini = get_scanner("mini")
    geom = scanner_geometry(mini)
    shapes = random_phantom(geom.grid, np.random.default_rng(11), geom.fov_radius_mm)
    act, mu = render(shapes, geom.grid), render(shapes, geom.grid, "mu")
    full, damaged = project(geom, act, mu, step_mm=geom.grid.voxel_mm[1] / 2,
                            alive=alive_crystals(mini, [(5, 1)]))
    scale = 2e8 / full.sum()  # high counts: noiseless-ish
    rng = np.random.default_rng(12)
    counts = rng.poisson(damaged * scale).astype(np.float32)
    return counts, (full * scale).astype(np.float32), dead_block_mask(mini, "5:1"), mu


def test_model_fill_beats_divide_and_interp_on_a_dead_block(mini_dead_block):
    counts, truth, mask, mu = mini_dead_block
    assert (mask >= 1).any() and ((mask > 0) & (mask < 1)).any()
    out = baselines.model_fill(counts, mask, scanner="mini", mu=mu, tof_order="linear")
    assert out.dtype == np.float32 and out.shape == counts.shape
    undamaged = np.broadcast_to(mask == 0, counts.shape)
    np.testing.assert_array_equal(out[undamaged], counts[undamaged])
    scores = {name: nrmse(fill(counts, mask, tof_order="linear"), truth, mask)
              for name, fill in [("divide", baselines.divide), ("interp", baselines.interp)]}
    scores["model"] = nrmse(out, truth, mask)
    assert scores["model"] < 0.3 * min(scores["divide"], scores["interp"]), scores
    dead = np.broadcast_to(mask >= 1, counts.shape)
    assert abs(out[dead].sum() / truth[dead].sum() - 1) < 0.1


def test_model_fill_reads_the_tof_order_and_finds_the_preset(mini_dead_block):
    from badblock.io import tof_offsets

    counts, _, mask, mu = mini_dead_block
    opts = {"iterations": 1, "subsets": 6, "mu": mu}
    linear = baselines.model_fill(counts, mask, scanner="mini", tof_order="linear", **opts)
    perm = tof_offsets(3, "siemens") + 1  # linear index of each Siemens-stored TOF bin
    siemens = baselines.model_fill(counts[perm], mask, tof_order="siemens", **opts)
    np.testing.assert_allclose(siemens, linear[perm], rtol=1e-5, atol=1e-3)
    assert baselines.get_baseline("model") is baselines.model_fill
    with pytest.raises(BadInputError, match="scanner"):
        baselines.model_fill(counts[:, :, :, :8], mask[:, :, :8])


def test_model_fill_takes_a_reconstruction_already_made(mini_dead_block):
    """Given the gaps-modelled OSEM image (made here with physics.osem directly), model_fill
    skips its own reconstruction and gives the same fill."""
    from badblock.physics.fastproj import FastProjector
    from badblock.physics.osem import osem

    counts, _, mask, mu = mini_dead_block
    opts = {"iterations": 1, "subsets": 3}
    popts = {"subviews": "mean", "tilts": "plane"}
    own = baselines.model_fill(counts, mask, scanner="mini", mu=mu, tof_order="linear",
                               projector_options=popts, **opts)
    image = osem(counts, FastProjector("mini", mu, **popts), sensitivity=1.0 - mask, **opts)
    given = baselines.model_fill(counts, mask, scanner="mini", mu=mu, tof_order="linear",
                                 projector_options=popts, image=image, **opts)
    np.testing.assert_allclose(given, own, rtol=1e-5, atol=1e-4)
    # a different image gives a different fill: the image is what the fill is made from
    other = baselines.model_fill(counts, mask, scanner="mini", mu=mu, tof_order="linear",
                                 projector_options=popts, image=2 * image, **opts)
    assert not np.allclose(other, own)
