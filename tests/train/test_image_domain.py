"""Image-domain data ([1, slice, H, W] stores): Augmentor augmentation, no flipped wrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badblock.config import load_config
from badblock.data.augment import augment_images
from badblock.data.store_writer import write_store
from badblock.errors import BadInputError
from badblock.train.loop import train
from tests.train.trainer_store import tiny_config


def image_store(path, h=32, w=32, n=3):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    vols = {}
    for i in range(n):
        lam = 20 * np.exp(-((yy - h / 2 - 3 * i) ** 2 + (xx - w / 2) ** 2) / 60.0)
        vols[f"vol_{i}"] = rng.poisson(np.broadcast_to(lam, (1, 6, h, w))).astype(np.uint16)
    return write_store(path, vols, kind="image", val=["vol_2"])


def test_augment_images_keeps_planes_aligned_and_is_seeded():
    cfg = load_config(None, ["augment.augmentor_rotate_p=1.0", "augment.augmentor_zoom_p=1.0",
                             "augment.augmentor_flip_lr=0.5"], env={}).augment
    h = w = 24
    marker = torch.zeros(4, 1, h, w)
    marker[:, :, 5:9, 3:15] = 1.0  # an off-centre bar: any flip/rotation moves it
    inp, target, mask = marker.repeat(1, 3, 1, 1), marker.clone(), marker.repeat(1, 3, 1, 1)
    out = augment_images(inp, target, mask, cfg, torch.Generator().manual_seed(1))
    again = augment_images(inp, target, mask, cfg, torch.Generator().manual_seed(1))
    for a, b in zip(out, again):
        assert torch.equal(a, b)
    o_inp, o_target, o_mask = out
    assert not torch.equal(o_target, target)
    for c in range(3):  # every plane of a sample moved the same way
        assert torch.equal(o_inp[:, c:c + 1], o_target)
        assert torch.equal(o_mask[:, c:c + 1], o_target)
    assert not torch.equal(o_target[0], o_target[1]) or not torch.equal(o_target[2], o_target[3])


def test_image_store_trains_with_augmentor(tmp_path):
    image_store(tmp_path / "store")
    cfg = tiny_config(tmp_path, **{"data.task": "denoise", "augment.augmentor": "true",
                                   "augment.augmentor_rotate_p": 1.0, "train.epochs": 1})
    run = train(cfg)
    assert (run / "checkpoint_final.pt").is_file()


def test_image_height_must_suit_the_depth(tmp_path):
    image_store(tmp_path / "store", h=30)
    cfg = tiny_config(tmp_path, **{"data.task": "denoise", "train.epochs": 1})
    with pytest.raises(BadInputError, match="image height 30"):
        train(cfg)
