"""Binomial thinning follows the binomial law and keeps shape, dtype and device."""

from __future__ import annotations

import pytest
import torch

from badblock.data.corruption import thin
from badblock.errors import BadInputError

torch.set_num_threads(1)


@pytest.mark.parametrize("n,p", [(7.0, 0.3), (40.0, 0.85), (1000.0, 0.5)])
def test_mean_and_variance_match_the_binomial_law(n, p):
    g = torch.Generator().manual_seed(0)
    counts = torch.full((200_000,), n)
    out = thin(counts, p, g)
    assert out.mean().item() == pytest.approx(n * p, rel=0.01)
    assert out.var().item() == pytest.approx(n * p * (1 - p), rel=0.03)
    assert (out >= 0).all() and (out <= n).all() and torch.equal(out, out.round())


def test_survive_one_keeps_everything_zero_removes_everything():
    counts = torch.poisson(torch.full((3, 5, 8, 16), 30.0))
    assert torch.equal(thin(counts, 1.0), counts)
    assert torch.equal(thin(counts, 0.0), torch.zeros_like(counts))


def test_broadcast_survive_map_per_bin():
    counts = torch.full((2, 4, 50), 100.0)
    survive = torch.ones(50)
    survive[10:20] = 0.0
    survive[30:40] = 0.5
    out = thin(counts, survive, torch.Generator().manual_seed(1))
    assert torch.equal(out[..., :10], counts[..., :10])
    assert (out[..., 10:20] == 0).all()
    assert out[..., 30:40].mean().item() == pytest.approx(50, rel=0.1)


def test_integer_dtypes_and_reproducibility():
    counts = torch.randint(0, 50, (4, 64), dtype=torch.int32)
    a = thin(counts, 0.4, torch.Generator().manual_seed(3))
    b = thin(counts, 0.4, torch.Generator().manual_seed(3))
    assert a.dtype == torch.int32 and torch.equal(a, b)
    assert (a <= counts).all()


def test_bad_arguments():
    with pytest.raises(BadInputError, match="survive"):
        thin(torch.ones(3), 1.5)
    with pytest.raises(BadInputError, match="broadcast"):
        thin(torch.ones(3, 4), torch.ones(5))


def test_numpy_counts_draw_from_a_numpy_generator_like_numpy_binomial():
    import numpy as np

    counts = np.random.default_rng(4).poisson(20.0, size=(3, 6, 10)).astype(np.uint16)
    survive = np.linspace(0.0, 1.0, 10, dtype=np.float32)
    out = thin(counts, survive, np.random.default_rng(5))
    expect = np.random.default_rng(5).binomial(counts.astype(np.int64),
                                               np.broadcast_to(survive, counts.shape))
    assert out.dtype == np.uint16 and np.array_equal(out, expect)
    assert (out[..., 0] == 0).all() and np.array_equal(out[..., -1], counts[..., -1])
    floats = thin(np.array([2.6, 3.0]), 1.0, np.random.default_rng(0))
    assert floats.dtype == np.float64 and floats.tolist() == [3.0, 3.0]  # rounded, all kept
    with pytest.raises(BadInputError, match="negative"):
        thin(np.array([-1, 2]), 0.5, np.random.default_rng(0))
    with pytest.raises(BadInputError, match="numpy.random.Generator"):
        thin(counts, 0.5)
    with pytest.raises(BadInputError, match="broadcast"):
        thin(counts, np.ones(4), np.random.default_rng(0))
    with pytest.raises(BadInputError, match="survive"):
        thin(counts, 1.5, np.random.default_rng(0))
