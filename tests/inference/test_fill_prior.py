"""A network that takes the model-based fill: repair makes the fill of the scan it repairs, and
a residual network whose correction is still zero repairs exactly as baselines.model_fill."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from badblock.baselines import fill_settings, model_fill
from badblock.errors import BadInputError
from badblock.inference import ChannelLayout, Predictor
from badblock.io import ScanHeader, read_scan, write_scan
from badblock.models import UNet
from badblock.physics import dead_block_mask, get_scanner
from badblock.physics.mask import real_lor_count
from badblock.physics.projector import scanner_grid
from badblock.repair import repair_scan

SCANNER = get_scanner("mini")
CHEAP = fill_settings(1, 2, {"subviews": "mean", "tilts": "plane", "step_mm": 13.0})


def _scan(tmp_path):
    rng = np.random.default_rng(7)
    truth = rng.uniform(5, 40, size=SCANNER.shape) * real_lor_count(SCANNER)[None]
    mask = dead_block_mask(SCANNER, [(5, 0), (5, 1)])
    counts = rng.binomial(rng.poisson(truth), 1 - mask).astype(np.float32)
    path = tmp_path / "dam.hs"
    header = ScanHeader(format="interfile", shape=counts.shape, dtype=np.dtype("<f4"),
                        data_file=path, segments=SCANNER.segments, tof_order="linear",
                        scanner="mini")
    write_scan(path, counts, header)
    return read_scan(path), counts, mask


def _predictor(attenuation: bool) -> Predictor:
    torch.manual_seed(0)
    layout = ChannelLayout(context=2, mask_channel=True, mask_stack=True, normalise="mean",
                           per_lor=True, fill_prior=True)
    net = UNet(in_channels=layout.in_channels, width=8, depth=2, bottom_convs=1,
               residual_channel=layout.prior_channel)
    return Predictor(net, {**layout.to_dict(), "multiple": net.multiple, "scanner": "mini",
                           "fill": {**CHEAP, "attenuation": attenuation}}, torch.device("cpu"))


def _water_cylinder() -> np.ndarray:
    grid = scanner_grid(SCANNER)
    nz, ny, nx = grid.shape
    y, x = np.mgrid[:ny, :nx] - (ny - 1) / 2
    disc = (x ** 2 + y ** 2) < (0.35 * nx) ** 2
    return np.broadcast_to(disc * np.float32(0.0096), grid.shape).astype(np.float32)


def test_untrained_fill_network_repairs_exactly_as_model_fill(tmp_path):
    scan, counts, mask = _scan(tmp_path)
    mu = _water_cylinder()
    out = tmp_path / "rep.hs"
    repair_scan(scan, mask, _predictor(True), out, mu=mu)
    got = np.asarray(read_scan(out).data)
    ref = model_fill(counts, mask, scanner="mini", mu=mu, tof_order="linear", iterations=1,
                     subsets=2, projector_options=CHEAP["projector"])
    damaged = np.broadcast_to(mask > 0, counts.shape)
    np.testing.assert_allclose(got[damaged], ref[damaged], rtol=2e-4, atol=1e-3)
    np.testing.assert_array_equal(got[~damaged], counts[~damaged])
    # the attenuation map matters: without it the fill differs, so the test could fail
    plain = model_fill(counts, mask, scanner="mini", tof_order="linear", iterations=1,
                       subsets=2, projector_options=CHEAP["projector"])
    assert np.abs(plain[damaged] - ref[damaged]).max() > 1e-2


@pytest.mark.parametrize("attenuation, give_mu, message", [
    (True, False, "give the scan's attenuation map"), (False, True, "without --mu")])
def test_the_fill_is_made_as_the_network_learnt_it(tmp_path, attenuation, give_mu, message):
    scan, _, mask = _scan(tmp_path)
    with pytest.raises(BadInputError, match=message):
        repair_scan(scan, mask, _predictor(attenuation), tmp_path / "rep.hs",
                    mu=_water_cylinder() if give_mu else None)
    assert not (tmp_path / "rep.hs").exists()
