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
from quality_report import IMAGE_CLASSICAL, PANEL_ROI

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
        # per test scan (the few of one family and count level at a time): its projector, the
        # OSEM of the complete scan, and gaps-modelled OSEMs keyed by (mask, damaged scan)
        self._scans: dict[str, dict] = {}

    def osem_kwargs(self) -> dict:
        o = self.suite.osem
        return {"iterations": o.iterations, "subsets": o.subsets}

    def _entry(self, scan) -> dict:
        from badblock.physics.fastproj import FastProjector

        key = str(scan.path)
        if key not in self._scans:
            while len(self._scans) >= max(1, self.suite.test_scans):
                self._scans.pop(next(iter(self._scans)))
            self._scans[key] = {"projector": FastProjector(self.scanner, scan.mu,
                                                           **self.suite.osem.projector)}
        return self._scans[key]

    def projector(self, scan):
        """The scan's projector (its own mu-map)."""
        return self._entry(scan)["projector"]

    def reconstruct(self, scan, counts: np.ndarray, sensitivity: np.ndarray | None = None
                    ) -> np.ndarray:
        """OSEM of ``counts`` (the scan's storage TOF order) with the scan's projector; the
        sensitivity images of the ungapped model are computed once per scan."""
        from badblock.io import tof_time_order
        from badblock.physics.osem import osem

        c4 = np.asarray(counts, np.float32)
        to_time = tof_time_order(c4.shape[0], scan.header.tof_order)
        kept = self._entry(scan).setdefault("sens", {}) if sensitivity is None else None
        return osem(c4[to_time], self.projector(scan), sensitivity=sensitivity,
                    desc="benchmark osem", sens_images=kept, **self.osem_kwargs())

    def gaps_modelled(self, scan, damaged: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """OSEM of the damaged scan with the gaps in the sensitivity (``1 - f``), made once per
        (scan, mask, damaged scan): the model-based fill projects it, the null comparator is
        it."""
        import hashlib

        entry = self._entry(scan)
        key = ("gaps", hashlib.sha1(np.ascontiguousarray(mask).tobytes()).hexdigest(),
               hashlib.sha1(np.ascontiguousarray(damaged).tobytes()).hexdigest())
        if key not in entry:
            entry[key] = self.reconstruct(scan, damaged, np.clip(1.0 - mask, 0.0, 1.0))
        return entry[key]

    def _complete(self, scan) -> np.ndarray:
        entry = self._entry(scan)
        if "complete" not in entry:
            entry["complete"] = self.reconstruct(scan, scan.measured)
        return entry["complete"]

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
        "osem_bias_background"}}``); with ``keep_panel`` the panel's slices (one axial slice
        through the dead volume of the truth and of each reconstruction, and the dead-volume
        ROI there, key :data:`PANEL_ROI`), else None; and the voxel counts of body and ROIs."""
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
        rois_info = {"body": int(body.sum()), **{n: int(r.sum()) for n, r in rois.items()}}
        panel = None
        if keep_panel:
            z = int(np.argmax(rois["dead"].sum(axis=(1, 2))))
            panel = {"true activity": act[z]}
            panel.update({name: img[z] / k for name, img in images.items()})
            panel[PANEL_ROI] = rois["dead"][z].astype(np.float32)
        return scores, panel, rois_info
