"""The benchmark's image domain: TOF OSEM of every repair, scored against the true activity.

Per test scan the projector is the project's :class:`~badblock.physics.fastproj.FastProjector`
with the scan's own attenuation map (as simulated) and the suite's ``osem.projector`` options;
:func:`badblock.physics.osem.osem` reconstructs, with the suite's iterations and subsets:

- the complete measured scan (the best any repair could give; once per scan, shared by the
  patterns);
- the damaged scan with the gaps modelled in the sensitivity (``1 - f``): the null comparator,
  "why fill at all?"; the model-based fill baseline projects this same reconstruction;
- every data-consistent repair of :data:`IMAGE_ROWS` that the suite runs.

The OSEM image estimates ``k x activity``, where ``k = sum(truth) / sum(A activity)`` is the
scale the simulation applied (``A``: the reconstruction's projector), so each image is divided
by ``k`` and compared with the phantom: NRMSE over the body (mu at least half water's), and the
bias of the mean in the *dead volume* (body voxels whose share of sensitivity through damaged
bins, :func:`badblock.physics.osem.mask_volume`, is at least ``DEAD_SHARE`` of its 99th
percentile in the body) and in a *background* ROI (body voxels with at most ``BACKGROUND_SHARE``
of it: the dead LORs barely cross them).
"""

from __future__ import annotations

import numpy as np
from quality_report import IMAGE_CLASSICAL

from badblock import metrics
from badblock.physics.phantom import WATER_MU_PER_MM

# The rows reconstructed besides the complete scan and the gaps-modelled one: 'none' and
# 'divide' leave fully dead bins empty, which no one would reconstruct (the gaps-modelled row is
# what doing nothing properly looks like).
SKIP_ROWS = ("none", "divide")
DEAD_SHARE = 0.5
BACKGROUND_SHARE = 0.1


class ImageScorer:
    """OSEM reconstructions and their scores for one suite (see module docstring)."""

    def __init__(self, suite, scanner):
        self.suite = suite
        self.scanner = scanner
        self._scan_key = None
        self._cache: dict = {}

    def osem_kwargs(self) -> dict:
        o = self.suite.osem
        return {"iterations": o.iterations, "subsets": o.subsets}

    def projector(self, scan):
        """The scan's projector (its mu-map; built once per scan)."""
        self._per_scan(scan)
        return self._cache["projector"]

    def _per_scan(self, scan) -> None:
        from badblock.physics.fastproj import FastProjector

        if self._scan_key != str(scan.path):
            self._cache = {"projector": FastProjector(self.scanner, scan.mu,
                                                      **self.suite.osem.projector)}
            self._scan_key = str(scan.path)

    def reconstruct(self, scan, counts: np.ndarray, sensitivity: np.ndarray | None = None
                    ) -> np.ndarray:
        """OSEM of ``counts`` (the scan's storage TOF order) with the scan's projector."""
        from badblock.physics.osem import osem

        from badblock.io import tof_time_order

        c4 = np.asarray(counts, np.float32)
        to_time = tof_time_order(c4.shape[0], scan.header.tof_order)
        return osem(c4[to_time], self.projector(scan), sensitivity=sensitivity,
                    desc="benchmark osem", **self.osem_kwargs())

    def gaps_modelled(self, scan, damaged: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """OSEM of the damaged scan with the gaps in the sensitivity (cached per scan and mask:
        the model-based fill and the null comparator share it)."""
        key = ("gaps", hash(mask.tobytes()), hash(np.asarray(damaged).tobytes()))
        self._per_scan(scan)
        if key not in self._cache:
            self._cache[key] = self.reconstruct(scan, damaged, np.clip(1.0 - mask, 0.0, 1.0))
        return self._cache[key]

    def _complete(self, scan) -> np.ndarray:
        self._per_scan(scan)
        if "complete" not in self._cache:
            self._cache["complete"] = self.reconstruct(scan, scan.measured)
        return self._cache["complete"]

    def rois(self, scan, mask: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(body, {"dead": ..., "background": ...}): bool ``[z, y, x]`` each."""
        from badblock.physics.osem import mask_volume

        body = np.asarray(scan.mu) >= 0.5 * WATER_MU_PER_MM
        share = mask_volume(self.projector(scan), mask)
        top = float(np.percentile(share[body], 99)) if body.any() else 0.0
        return body, {"dead": body & (share >= DEAD_SHARE * top),
                      "background": body & (share <= BACKGROUND_SHARE * top)}

    def score(self, scan, damaged: np.ndarray, outputs: dict[str, np.ndarray],
              mask: np.ndarray, keep_panel: bool = False):
        """Image scores per row (``{row: {"osem_nrmse", "osem_bias_dead",
        "osem_bias_background"}}``) and, with ``keep_panel``, the panel's slices (one axial
        slice through the dead volume of the truth and of each reconstruction)."""
        from quality_cases import ALL_BINS, COMPLETE

        proj = self.projector(scan)
        import torch

        act = np.asarray(scan.activity, np.float32)
        k = float(np.asarray(scan.truth, np.float64).sum()) / float(
            proj.forward(torch.as_tensor(act, dtype=proj.dtype)).double().sum())
        body, rois = self.rois(scan, mask)
        images = {COMPLETE: self._complete(scan),
                  IMAGE_CLASSICAL: self.gaps_modelled(scan, damaged, mask)}
        for name, x in outputs.items():
            if name in SKIP_ROWS or name in (COMPLETE, ALL_BINS):
                continue
            images[name] = self.reconstruct(scan, x)
        scores = {}
        for name, img in images.items():
            v = metrics.volume_scores(img / k, act, body, rois)
            scores[name] = {f"osem_{key}": val for key, val in v.items()}
        panel = None
        if keep_panel:
            z = int(np.argmax(rois["dead"].sum(axis=(1, 2))))
            panel = {"true activity": act[z]}
            panel.update({name: img[z] / k for name, img in images.items()})
        return scores, panel
