"""Figures: the evaluation's ``report.png`` (truth / damaged / each repair, error maps, FBP
images) and the mask stage's picture of the most affected planes.

matplotlib with the Agg backend (no display needed); files written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from badblock.io.segments import Segment
from badblock.utils.atomic import atomic_path


def _plane(x: np.ndarray, p: int) -> np.ndarray:
    """Plane ``p`` of a scan summed over TOF: ``[view, bin]`` float64."""
    x = np.asarray(x)
    return (x[:, p].sum(axis=0, dtype=np.float64) if x.ndim == 4
            else np.asarray(x[p], np.float64))


def show_plane(mask: np.ndarray, fbp_planes: Sequence[int]) -> int:
    """The plane to draw: the most damaged reconstructed direct plane, else the most damaged."""
    damage = (np.asarray(mask) > 0).sum(axis=(1, 2))
    if len(fbp_planes):
        return int(max(fbp_planes, key=lambda p: damage[p]))
    return int(np.argmax(damage))


def draw_report(path: str | os.PathLike, case, outputs: Mapping[str, np.ndarray],
                mask: np.ndarray, images: Mapping[str, np.ndarray], fbp_planes: Sequence[int],
                segments: Sequence[Segment] | None = None) -> Path:
    """Draw one scan's figure: columns reference, damaged, each method; rows sinogram of the most
    damaged plane (TOF summed), error against the reference, and its FBP image when
    ``images`` (method -> ``[n, H, W]`` for ``fbp_planes``, plus ``'reference'``) has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    p = show_plane(mask, fbp_planes)
    ref_name = "truth" if case.truth is not None else "measured"
    ref = _plane(case.truth if case.truth is not None else case.measured, p)
    methods = [m for m in outputs if m != "none"]
    cols = [(ref_name, ref), ("damaged", _plane(case.damaged, p))]
    cols += [(m, _plane(outputs[m], p)) for m in methods]
    k = list(fbp_planes).index(p) if images and p in list(fbp_planes) else None
    rows = 3 if k is not None else 2
    fig, axes = plt.subplots(rows, len(cols), figsize=(2.4 * len(cols), 2.2 * rows),
                             squeeze=False, constrained_layout=True)
    vmax = float(ref.max()) or 1.0
    err_max = max(float(np.abs(x - ref).max()) for _, x in cols[1:]) or 1.0
    for j, (name, x) in enumerate(cols):
        ax = axes[0, j]
        ax.imshow(x, cmap="gray_r", vmin=0, vmax=vmax, aspect="auto", interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax = axes[1, j]
        if j == 0:
            ax.imshow(mask[p], cmap="magma", vmin=0, vmax=1, aspect="auto",
                      interpolation="nearest")
            ax.set_title("mask f (lost fraction)", fontsize=8)
        else:
            im = ax.imshow(x - ref, cmap="RdBu_r", vmin=-err_max, vmax=err_max, aspect="auto",
                           interpolation="nearest")
            ax.set_title(f"{name} - {ref_name}", fontsize=8)
        if k is not None:
            ax = axes[2, j]
            key = "reference" if j == 0 else name
            img = images.get(key) if key != "damaged" else images.get("none")
            if img is not None:
                ref_img = images["reference"][k]
                ax.imshow(img[k], cmap="gray_r", vmin=0, vmax=float(ref_img.max()) or 1.0,
                          interpolation="nearest")
                ax.set_title(f"FBP {key if j else ref_name}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel(f"plane {p}\nview", fontsize=8)
    axes[1, 0].set_ylabel("error", fontsize=8)
    if rows == 3:
        axes[2, 0].set_ylabel("FBP (direct plane)", fontsize=8)
    if len(cols) > 1:
        fig.colorbar(im, ax=axes[1, 1:].tolist(), shrink=0.8, label="counts error")
    fig.suptitle(f"{case.name}: plane {p} (summed over TOF), rows: sinogram / error / FBP",
                 fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def draw_mask(path: str | os.PathLike, mask: np.ndarray, planes: Sequence[int],
              title: str) -> Path:
    """Draw the lost fraction f ``[view, bin]`` of each of ``planes`` of a mask ``[plane, view,
    bin]`` side by side (plane 0 when ``planes`` is empty), with one colour bar 0..1, to
    ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    planes = list(planes) or [0]
    fig, axes = plt.subplots(1, len(planes), figsize=(3.6 * len(planes) + 1, 3.6), squeeze=False,
                             layout="constrained")
    for ax, p in zip(axes[0], planes):
        im = ax.imshow(mask[p], vmin=0, vmax=1, cmap="magma", aspect="auto",
                       interpolation="nearest")
        ax.set_title(f"plane {p}")
        ax.set_xlabel("bin")
        ax.set_ylabel("view")
    fig.colorbar(im, ax=axes[0].tolist(), label="fraction of LORs lost")
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path
