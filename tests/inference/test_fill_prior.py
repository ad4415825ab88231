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


def test_dead_weight_moves_only_fully_dead_bins_toward_the_fill(tmp_path):
    """model.dead_weight w: fully dead bins become fill + w (network - fill), the partly
    damaged ones stay the network's; w = 0 repairs fully dead bins exactly as model_fill."""
    scan, counts, mask = _scan(tmp_path)
    net = _predictor(False)
    torch.manual_seed(1)
    with torch.no_grad():  # a correction that is not zero: a "trained" network
        net.model.last_conv2.weight.normal_(0, 0.05)
        net.model.last_conv2.bias.fill_(0.3)
    got = {}
    for w in (1.0, 0.5, 0.0):
        net.dead_weight = w
        out = tmp_path / f"rep{w}.hs"
        repair_scan(scan, mask, net, out)
        got[w] = np.asarray(read_scan(out).data, np.float64)
    fill = model_fill(counts, mask, scanner="mini", tof_order="linear", iterations=1,
                      subsets=2, projector_options=CHEAP["projector"]).astype(np.float64)
    f = np.broadcast_to(mask, counts.shape)
    dead, partial = f >= 1 - 1e-6, (f > 0) & (f < 1 - 1e-6)
    assert dead.sum() > 1000 and partial.sum() > 1000
    # the network does move dead bins away from the fill, so the test can fail
    assert np.abs(got[1.0][dead] - fill[dead]).max() > 1.0
    # bit for bit the fill repair makes (the one the benchmark's model row is)
    np.testing.assert_array_equal(got[0.0][dead], fill[dead])
    np.testing.assert_allclose(got[0.5][dead], 0.5 * (fill[dead] + got[1.0][dead]),
                               rtol=2e-4, atol=1e-3)
    for w in (0.5, 0.0):
        np.testing.assert_array_equal(got[w][partial], got[1.0][partial])
        np.testing.assert_array_equal(got[w][f == 0], counts[f == 0])


def test_a_fill_made_beforehand_repairs_the_same_bytes_and_a_wrong_one_is_refused(tmp_path):
    from badblock.repair import scan_fill_for

    scan, _, mask = _scan(tmp_path)
    net = _predictor(False)
    repair_scan(scan, mask, net, tmp_path / "own.hs")
    fill = scan_fill_for(net, scan, mask, None)
    repair_scan(scan, mask, net, tmp_path / "given.hs", fill=fill)
    assert (tmp_path / "own.s").read_bytes() == (tmp_path / "given.s").read_bytes()
    with pytest.raises(BadInputError, match="fill"):
        repair_scan(scan, mask, net, tmp_path / "bad.hs", fill=fill[:, :-1])
    assert not (tmp_path / "bad.hs").exists()


def _trained_looking(net):
    torch.manual_seed(1)
    with torch.no_grad():  # a correction that is not zero: a "trained" network
        net.model.last_conv2.weight.normal_(0, 0.05)
        net.model.last_conv2.bias.fill_(0.3)
    return net


def test_partial_weight_moves_only_partly_damaged_bins_toward_the_fill(tmp_path):
    scan, counts, mask = _scan(tmp_path)
    net = _trained_looking(_predictor(False))
    repair_scan(scan, mask, net, tmp_path / "own.hs")
    net.partial_weight = 0.0
    repair_scan(scan, mask, net, tmp_path / "flat.hs")
    own, flat = (np.asarray(read_scan(tmp_path / n).data) for n in ("own.hs", "flat.hs"))
    fill = model_fill(counts, mask, scanner="mini", tof_order="linear", iterations=1,
                      subsets=2, projector_options=CHEAP["projector"])
    f = np.broadcast_to(mask, counts.shape)
    dead, partial = f >= 1 - 1e-6, (f > 0) & (f < 1 - 1e-6)
    assert np.abs(own[partial] - fill[partial]).max() > 1.0
    np.testing.assert_array_equal(flat[partial], fill[partial])
    np.testing.assert_array_equal(flat[dead], own[dead])


def test_self_check_repairs_with_the_weights_it_reports(tmp_path):
    """repair_scan(self_check=True): the summary's weights are in [0, 1], the output is the
    repair with exactly those weights, the caller's predictor keeps its own; without the dead
    blocks it does not run and says why."""
    scan, counts, mask = _scan(tmp_path)
    net = _trained_looking(_predictor(False))
    summary = repair_scan(scan, mask, net, tmp_path / "checked.hs", self_check=True,
                          damage=([(5, 0), (5, 1)], []))
    check = summary["self_check"]
    assert check["ran"] and check["shifts"] == [4, 8, 12]
    w = check["weights"]
    assert 0.0 <= w["partial"] <= 1.0 and 0.0 <= w["dead"] <= 1.0
    assert net.partial_weight == 1.0 and net.dead_weight == 1.0
    # this network's constant correction is far off: the counts say so (weights below 1)
    assert min(w.values()) < 0.9
    net.partial_weight, net.dead_weight = w["partial"], w["dead"]
    repair_scan(scan, mask, net, tmp_path / "by_hand.hs", self_check=False)
    assert (tmp_path / "checked.s").read_bytes() == (tmp_path / "by_hand.s").read_bytes()
    off = repair_scan(scan, mask, net, tmp_path / "mask_only.hs", self_check=True)
    assert not off["self_check"]["ran"] and "dead blocks" in off["self_check"]["why"]
