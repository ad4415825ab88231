"""Factorised block-set masks against physics.dead_block_mask (LOR by LOR), and the sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from badblock.data.blockmasks import BlockSampler, BlockSetMasks
from badblock.errors import BadInputError
from badblock.physics.mask import dead_block_mask
from badblock.physics.scanners import get_scanner

MINI = get_scanner("mini")  # 16 x 3 blocks


@pytest.mark.parametrize("scanner,blocks", [
    ("mini", [(5, 1)]),
    ("mini", [(0, 0), (5, 1), (15, 2)]),  # far apart, all three axial blocks
    ("mini", [(5, 1), (6, 1)]),  # adjacent transaxially
    ("mini", [(15, 0), (0, 0)]),  # adjacent across the ring's seam
    ("mini", [(5, 0), (5, 1)]),  # adjacent axially
    ("mini", [(5, 0), (6, 0), (5, 1), (6, 1)]),
    ("mct", [(5, 1)]),  # the mCT has virtual gap crystals and rings
    ("mct", [(5, 1), (6, 1), (5, 2)]),
])
def test_block_set_masks_equal_the_physics_masks(scanner, blocks):
    sc = get_scanner(scanner)
    masks = BlockSetMasks(sc)
    ref = dead_block_mask(sc, blocks)
    got = masks.get(blocks)
    np.testing.assert_allclose(got[np.arange(sc.n_planes)], ref, atol=1e-5)
    touched = np.flatnonzero(ref.reshape(len(ref), -1).max(axis=1) > 0)
    np.testing.assert_array_equal(got.planes, touched)
    assert masks.get(list(reversed(blocks))) is got  # order ignored, cached


def test_block_set_masks_refuse_bad_sets():
    masks = BlockSetMasks(MINI)
    with pytest.raises(BadInputError, match="empty"):
        masks.get([])
    with pytest.raises(BadInputError):
        masks.get([(16, 0)])  # transaxial blocks are 0..15


def test_sampler_draws_the_configured_counts_with_adjacent_blocks():
    blocks = [(t, a) for t in range(16) for a in range(3)]
    sampler = BlockSampler(MINI, blocks, count=(1, 3), adjacent=0.7)
    rng = np.random.default_rng(0)
    draws = [sampler.draw(rng) for _ in range(3000)]
    sizes = Counter(len(d) for d in draws)
    assert set(sizes) == {1, 2, 3} and min(sizes.values()) > 800  # uniform 1..3
    positions = Counter(b for d in draws for b in d)
    assert set(positions) == set(blocks)  # every block position occurs

    def adjacent(p, q):
        (t1, a1), (t2, a2) = p, q
        return (a1 == a2 and (t1 - t2) % 16 in (1, 15)) or (t1 == t2 and abs(a1 - a2) == 1)

    pairs = [d for d in draws if len(d) == 2]
    share = np.mean([adjacent(*d) for d in pairs])
    # P(adjacent) = 0.7 + 0.3 * P(a random other block is a neighbour) ~ 0.7 + 0.3 * 3.33/47
    assert 0.66 < share < 0.78
    for d in draws:
        assert len(set(d)) == len(d) and list(d) == sorted(d)


def test_sampler_keeps_to_the_allowed_positions_and_checks_its_arguments():
    allowed = [(3, 1), (4, 1), (9, 2)]
    sampler = BlockSampler(MINI, allowed, count=(2, 2), adjacent=1.0)
    rng = np.random.default_rng(1)
    for _ in range(200):
        d = sampler.draw(rng)
        assert len(d) == 2 and set(d) <= set(allowed)
    with pytest.raises(BadInputError, match="blocks_per_sample"):
        BlockSampler(MINI, allowed, count=(0, 2))
    with pytest.raises(BadInputError, match="blocks_per_sample"):
        BlockSampler(MINI, allowed, count=(1, 4))  # more than the 3 allowed positions
    with pytest.raises(BadInputError, match="adjacent"):
        BlockSampler(MINI, allowed, adjacent=1.5)
    with pytest.raises(BadInputError, match="train_blocks"):
        BlockSampler(MINI, [])
