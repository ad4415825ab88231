"""The network's prior channel is the normconv baseline: a residual network whose correction is
still zero (its last convolution starts at zero) repairs a scan exactly as baselines.normconv."""

from __future__ import annotations

import numpy as np
import torch

from badblock.baselines import normconv
from badblock.inference import ChannelLayout, Predictor
from badblock.io import ScanHeader, read_scan, write_scan
from badblock.models import UNet
from badblock.physics import dead_block_mask, get_scanner
from badblock.physics.mask import real_lor_count
from badblock.physics.normconv import view_margin
from badblock.repair import repair_scan

SCANNER = get_scanner("mini")
# sigma_p 0.6: the baseline's plane radius ceil(3 x 0.6) = 2 equals the network's context,
# so both sum the same planes (with 0.7 the baseline also reads weights of 1e-4 at 3 planes)
WIDTHS = (0.6, 1.5, 0.7)


def test_untrained_residual_network_repairs_exactly_as_normconv(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    sens = real_lor_count(SCANNER)
    truth = rng.uniform(5, 40, size=SCANNER.shape) * sens[None]
    mask = dead_block_mask(SCANNER, [(5, 0), (5, 1), (6, 1)])  # adjacent blocks: wide holes
    counts = rng.binomial(rng.poisson(truth), 1 - mask).astype(np.float32)
    path = tmp_path / "dam.hs"
    header = ScanHeader(format="interfile", shape=counts.shape, dtype=np.dtype("<f4"),
                        data_file=path, segments=SCANNER.segments, tof_order="linear",
                        scanner="mini")
    write_scan(path, counts, header)

    layout = ChannelLayout(context=2, mask_channel=True, mask_stack=True, normalise="mean",
                           per_lor=True, prior_widths=WIDTHS, margin=view_margin(WIDTHS))
    net = UNet(in_channels=layout.in_channels, width=8, depth=2, bottom_convs=1,
               residual_channel=layout.prior_channel)
    predictor = Predictor(net, {**layout.to_dict(), "multiple": net.multiple,
                                "scanner": "mini"}, torch.device("cpu"))
    out = tmp_path / "rep.hs"
    repair_scan(read_scan(path), mask, predictor, out)
    got = np.asarray(read_scan(out).data)

    ref = normconv(counts, mask, widths=WIDTHS, segments=SCANNER.segments, tof_order="linear",
                   sensitivity=sens)
    damaged = np.broadcast_to(mask > 0, counts.shape)
    np.testing.assert_allclose(got[damaged], ref[damaged], rtol=2e-4, atol=1e-4)
    np.testing.assert_array_equal(got[~damaged], counts[~damaged])  # the rest is kept
