"""Every shipped preset loads, validates, fits its scanner's geometry and builds its network."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from badblock.config import load_config, presets
from badblock.errors import BadInputError
from badblock.physics.scanners import get_scanner

SCANNERS = {"mini": "mini", "demo": "mini", "vision": "vision", "mct": "mct", "mmr": "mmr"}


def test_every_supported_scanner_has_a_preset():
    assert set(presets()) >= set(SCANNERS)


@pytest.mark.parametrize("name", sorted(SCANNERS))
def test_preset_loads_and_unknown_keys_still_fail(name):
    cfg = load_config(name, env={})
    assert cfg.scanner.name == SCANNERS[name]
    with pytest.raises(BadInputError, match="model.width"):
        load_config(name, ["model.widht=3"], env={})


@pytest.mark.parametrize("name", sorted(SCANNERS))
def test_preset_geometry_fits_the_network(name):
    """Padded views and bins divide by 2**depth, and the network builds and runs on one plane
    stack of the scanner's padded size (what training and repair will feed it)."""
    from badblock.train.setup import build_network, layout_for

    cfg = load_config(name, env={})
    sc = get_scanner(cfg.scanner.name)
    _, _, n_views, n_bins = sc.shape
    multiple = 2 ** cfg.model.depth
    views_to = cfg.data.views_to or -(-n_views // multiple) * multiple
    assert views_to >= n_views and views_to % multiple == 0 and n_bins % multiple == 0
    assert views_to - n_views <= n_views  # the flipped wrap pads from within one plane
    for block in cfg.scanner.dead_blocks:
        t, a = map(int, block.split(":"))
        assert t < sc.blocks_transaxial and a < sc.blocks_axial
    layout = layout_for(cfg)
    model = build_network(cfg, layout, torch.device("cpu"))
    assert model.config["in_channels"] == layout.in_channels
    x = torch.rand(1, layout.in_channels, views_to, n_bins)
    with torch.no_grad():
        out = model.eval()(x)
    assert out.shape == (1, 1, views_to, n_bins) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["vision", "mct", "mmr"])
def test_train_with_a_preset_gets_as_far_as_the_store(name, tmp_path):
    res = subprocess.run([sys.executable, "-m", "badblock", "train", "--config", name, "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--config" in res.stdout
    # the preset passes the config and trainer checks; only the missing store stops it
    res = subprocess.run([sys.executable, "-m", "badblock", "train", "--config", name, "--set",
                          f"data.store={tmp_path / 'none'}", "-o", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "no such store folder" in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["mini", "demo"])
def test_preset_smoke_run_simulate_preprocess_train_one_step_repair(name, tmp_path):
    """A reduced run of the preset: two simulated scans, the store, its fills, one optimiser
    step, and a repair of a damaged scan with that checkpoint (vision, mct and mmr wait for a faster
    simulator)."""
    import numpy as np

    from badblock.data.preprocess import preprocess
    from badblock.evaluate import write_damaged
    from badblock.inference import load_predictor
    from badblock.io import read_scan
    from badblock.physics.mask import resolve_mask
    from badblock.physics.simulate import simulate
    from badblock.repair import repair_files
    from badblock.train.loop import train

    sets = [f"run.output={tmp_path}", "simulate.scans=2", "train.epochs=1", "train.max_steps=1",
            "data.batch_size=4", "data.epoch_size=4", "train.val_batches=1",
            "train.tensorboard=false", "preprocess.val_fraction=0.5"]
    cfg = load_config(name, sets, env={})
    sim = simulate(cfg, tmp_path / "sim")
    scans = sorted(sim.glob("scan_00?.hs"))
    assert len(scans) == 2
    cfg = load_config(name, sets + [f"preprocess.inputs={[str(p) for p in scans]}"], env={})
    assert preprocess(cfg).status == "built"
    if cfg.model.fill_prior:  # the shipped mini/demo network corrects the model-based fill
        from badblock.data.fills import make_fills_for

        cfg.fills.draws = 1
        make_fills_for(cfg)
    folder = train(cfg)
    assert (folder / "checkpoint_final.pt").is_file()
    mask = resolve_mask(cfg.scanner).mask
    damaged = write_damaged(scans[:1], mask, tmp_path / "damaged", seed=0)
    predictor = load_predictor(folder / "checkpoint_final.pt", "cpu")
    (summary,) = repair_files(damaged, mask, predictor, tmp_path / "repaired")
    out = read_scan(summary["output"])
    before = read_scan(damaged[0])
    assert out.data.shape == before.data.shape and out.data.dtype == before.data.dtype
    untouched = ~(mask > 0)
    assert np.array_equal(np.asarray(out.data)[:, untouched], np.asarray(before.data)[:, untouched])
