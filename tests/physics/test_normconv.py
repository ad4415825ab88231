"""normconv_stack against a brute-force sum written out bin by bin, and its no-hole rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from badblock.errors import BadInputError
from badblock.physics.normconv import (
    check_widths,
    normconv_stack,
    plane_radius,
    view_margin,
)


def _g(sigma):
    r = max(1, math.ceil(3.0 * sigma - 1e-9))
    x = np.arange(-r, r + 1)
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return x, g / g.sum()


def _brute(y, keep, s, widths, margin):
    """rho = G*(sum_j w_j y_j) / G*(sum_j w_j k_j s_j), loops over every term; views beyond the
    stack are zero, bins reflect at the edge (d c b a | a b c d)."""
    sp, sv, sb = widths
    c, vw, nb = y.shape
    k = c // 2
    r = min(math.ceil(3 * sp - 1e-9), k)
    dv, gv = _g(sv)
    db, gb = _g(sb)
    out = np.zeros((vw - 2 * margin, nb))
    for v in range(margin, vw - margin):
        for b in range(nb):
            num = den = 0.0
            for j in range(c):
                if abs(j - k) > r:
                    continue
                wj = math.exp(-0.5 * ((j - k) / sp) ** 2)
                for ov, wv in zip(dv, gv):
                    vv = v + ov
                    if not 0 <= vv < vw:
                        continue
                    for ob, wb in zip(db, gb):
                        bb = b + ob
                        bb = -bb - 1 if bb < 0 else (2 * nb - 1 - bb if bb >= nb else bb)
                        num += wj * wv * wb * y[j, vv, bb]
                        den += wj * wv * wb * keep[j, vv, bb] * s[j, vv, bb]
            out[v - margin, b] = num / den
    return out


def test_equals_the_brute_force_sum():
    rng = np.random.default_rng(3)
    widths = (0.7, 1.5, 0.8)
    m = view_margin(widths)
    shape = (5, 6 + 2 * m, 9)
    s = rng.integers(1, 4, size=shape).astype(np.float64)
    keep = rng.uniform(0.4, 1.0, size=shape)  # support everywhere: the first scale is used
    y = rng.poisson(20 * keep * s).astype(np.float64)
    got = normconv_stack(torch.tensor(y[None]), torch.tensor(keep[None]), torch.tensor(s[None]),
                         widths, margin=m)[0].numpy()
    np.testing.assert_allclose(got, _brute(y, keep, s, widths, m), rtol=2e-5)


@pytest.mark.parametrize("dead_views", [2, 9, 40])  # narrower / wider than the kernel / the rest
def test_noiseless_constant_rate_is_exact_through_dead_regions(dead_views):
    """y = (1 - f) s rho exactly: the estimate is rho everywhere, holes bridged by the wider
    kernels or, where nothing survives, the stack mean (which is rho too)."""
    widths = (0.7, 1.0, 0.7)
    m = view_margin(widths)
    c, vw, nb = 5, 24 + 2 * m, 16
    rng = np.random.default_rng(0)
    s = rng.integers(0, 3, size=(c, vw, nb)).astype(np.float32)  # gap bins (s = 0) too
    f = np.zeros((c, vw, nb), np.float32)
    a = m + 4
    f[:, a:a + dead_views, :] = 1.0
    rho = 7.5
    y = (1 - f) * s * rho
    got = normconv_stack(torch.tensor(y[None]), torch.tensor(1 - f[None]), torch.tensor(s[None]),
                         widths, margin=m)[0].numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, rho, rtol=1e-5)


def test_widths_and_margins():
    assert check_widths([0.7, 1.5, 0.7]) == (0.7, 1.5, 0.7)
    assert plane_radius((0.7, 1, 1)) == 3 and plane_radius((0.7, 1, 1), context=2) == 2
    assert plane_radius((0.0, 1, 1)) == 0
    assert view_margin((0.7, 1.5, 0.7)) == 18  # 3 sigma at 4 x the width
    for bad in ([1.0, 1.0], [1.0, -1.0, 1.0], [1.0, float("nan"), 1.0]):
        with pytest.raises(BadInputError, match="sigmas"):
            check_widths(bad)
    y = torch.ones(1, 3, 10, 4)
    with pytest.raises(BadInputError, match="margin"):
        normconv_stack(y, y, y, (0.7, 1.0, 1.0), margin=2)
