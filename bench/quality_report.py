"""Aggregates, tables and figures of the quality benchmark, all from its JSON records.

Per case and metric the *best classical* value is the smallest over the suite's classical
baselines (data-consistent; for image metrics the gaps-modelled reconstruction of the damaged
scan counts as a classical answer too). Each row's *ratio* is its value over that best: below 1
beats every classical method of the case. Aggregates over cases: the geometric mean and the
worst (largest) ratio; per data set the geometric mean over its cases, then the mean and the
worst over data sets. Bias-type metrics are not ratioed (a ratio to a bias near 0 means
nothing): their mean and worst absolute value over cases are reported instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# (key, label) of the error metrics aggregated as ratios to the best classical method.
RATIO_METRICS = [
    ("nrmse_all", "damaged bins NRMSE"), ("nrmse_partial", "partly damaged NRMSE"),
    ("nrmse_dead", "fully dead NRMSE"), ("lost_nrmse", "lost-count NRMSE"),
    ("fbp_nrmse", "FBP NRMSE"), ("osem_nrmse", "OSEM body NRMSE"),
]
# (key, label) of the biases reported as mean and worst |value| over cases.
BIAS_METRICS = [
    ("bias_all", "damaged bins bias"), ("lost_bias", "lost-count bias"),
    ("osem_bias_dead", "OSEM dead-volume ROI bias"),
    ("osem_bias_background", "OSEM background ROI bias"),
]
IMAGE_CLASSICAL = "gaps modelled (no fill)"
PANEL_ROI = "dead-volume ROI"


def classical_rows(result: dict, metric: str) -> list[str]:
    rows = list(result["suite"]["baselines"])
    if metric.startswith("osem_"):
        rows.append(IMAGE_CLASSICAL)
    return rows


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def ratios(result: dict, metric: str) -> dict[str, dict[str, float]]:
    """case name -> method -> value / best classical value of that case (cases where no
    classical value is finite are left out)."""
    out = {}
    for case in result["cases"]:
        m = case["methods"]
        best = [m[r][metric] for r in classical_rows(result, metric)
                if r in m and _finite(m[r].get(metric))]
        if not best or min(best) <= 0:
            continue
        b = min(best)
        out[case["case"]] = {name: v[metric] / b for name, v in m.items()
                             if _finite(v.get(metric))}
    return out


def gmean(vals: Sequence[float]) -> float:
    vals = [v for v in vals if _finite(v) and v > 0]
    return float(math.exp(np.mean(np.log(vals)))) if vals else float("nan")


def aggregate(result: dict) -> dict:
    """The aggregate block of the JSON: per ratio metric and method the geometric mean and the
    worst over cases and the mean and worst over data sets of the per-data-set geometric
    means; per bias metric the mean and worst |bias| over cases."""
    methods = list(result["cases"][0]["methods"]) if result["cases"] else []
    by_case = {c["case"]: c for c in result["cases"]}
    agg: dict = {"ratio": {}, "bias": {}}
    for key, _ in RATIO_METRICS:
        r = ratios(result, key)
        if not r:
            continue
        agg["ratio"][key] = {}
        for m in methods:
            vals = {c: v[m] for c, v in r.items() if m in v}
            if not vals:
                continue
            per_ds: dict[int, list[float]] = {}
            for c, v in vals.items():
                per_ds.setdefault(by_case[c]["dataset"], []).append(v)
            ds_means = [gmean(v) for v in per_ds.values()]
            worst_case = max(vals, key=vals.get)
            agg["ratio"][key][m] = {
                "gmean": gmean(list(vals.values())), "worst": vals[worst_case],
                "worst_case": worst_case, "cases": len(vals),
                "datasets_mean": float(np.mean(ds_means)), "datasets_worst": max(ds_means),
                "per_dataset": {str(d): gmean(v) for d, v in sorted(per_ds.items())},
                "wins": sum(v < 1.0 for v in vals.values())}
    for key, _ in BIAS_METRICS:
        agg["bias"][key] = {}
        for m in methods:
            vals = [abs(c["methods"][m][key]) for c in result["cases"]
                    if m in c["methods"] and _finite(c["methods"][m].get(key))]
            if vals:
                agg["bias"][key][m] = {"mean_abs": float(np.mean(vals)), "worst_abs": max(vals)}
        if not agg["bias"][key]:
            del agg["bias"][key]
    return agg


def _fmt(v, spec=".3f") -> str:
    return format(v, spec) if _finite(v) else "-"


def _method_table(block: dict, metrics: list[tuple[str, str]], cell) -> str:
    """Markdown: one row per method of ``block`` (metric -> method -> stats), one column per
    metric present, each cell ``cell(stats)``."""
    keys = [(k, lab) for k, lab in metrics if k in block]
    methods = list(dict.fromkeys(m for k, _ in keys for m in block[k]))
    lines = ["| method | " + " | ".join(lab for _, lab in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for m in methods:
        cells = [cell(block[k][m]) if m in block[k] else "-" for k, _ in keys]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def aggregate_table(result: dict) -> str:
    """Markdown: one row per method, per ratio metric 'geometric mean (worst)' over cases."""
    return _method_table(result["aggregate"]["ratio"], RATIO_METRICS,
                         lambda v: f"{_fmt(v['gmean'])} ({_fmt(v['worst'])})")


def dataset_table(result: dict, key: str = "nrmse_all") -> str:
    """Markdown: per method the geometric-mean ratio of each data set, their mean and worst."""
    agg = result["aggregate"]["ratio"].get(key, {})
    if not agg:
        return ""
    ds = list(next(iter(agg.values()))["per_dataset"])
    lines = ["| method | " + " | ".join(f"data set {d}" for d in ds) + " | mean | worst |",
             "|---|" + "---|" * (len(ds) + 2)]
    for m, v in agg.items():
        cells = [_fmt(v["per_dataset"].get(d)) for d in ds]
        lines.append(f"| {m} | " + " | ".join(cells) +
                     f" | {_fmt(v['datasets_mean'])} | {_fmt(v['datasets_worst'])} |")
    return "\n".join(lines)


def bias_table(result: dict) -> str:
    """Markdown: per method and bias metric 'mean |bias| (worst |bias|)' over cases."""
    return _method_table(result["aggregate"]["bias"], BIAS_METRICS,
                         lambda v: f"{_fmt(v['mean_abs'], '.4f')} ({_fmt(v['worst_abs'], '.4f')})")


def case_table(result: dict, key: str, spec: str = ".4f") -> str:
    """Markdown: one row per case, one column per method, the metric's value (the best
    classical value of each row in bold)."""
    cases = result["cases"]
    if not cases:
        return ""
    methods = list(cases[0]["methods"])
    methods = [m for m in methods if any(_finite(c["methods"][m].get(key)) for c in cases)]
    lines = ["| case | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for c in cases:
        vals = c["methods"]
        best = [vals[r][key] for r in classical_rows(result, key)
                if r in vals and _finite(vals[r].get(key))]
        best_v = min(best) if best else None
        cells = []
        for m in methods:
            v = vals[m].get(key)
            cell = _fmt(v, spec)
            cells.append(f"**{cell}**" if best_v is not None and v == best_v else cell)
        lines.append(f"| {c['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_summary(result: dict) -> str:
    """The printed summary: the aggregate table, the data-set table, wall time."""
    return "\n\n".join(["ratio to the best classical method per case: geometric mean (worst)",
                        aggregate_table(result), "damaged-bin NRMSE ratio per data set",
                        dataset_table(result), f"wall time {result['wall_s']:.0f} s"])


def _save(fig, path: Path) -> Path:
    """Write a figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    from badblock.utils.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def draw_bars(result: dict, path: Path, key: str = "nrmse_all") -> Path | None:
    """Per-case bars of ``key``'s ratio to the best classical method: one group per (family,
    level, pattern), the mean over data sets as the bar and their range as the error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = ratios(result, key)
    if not r:
        return None
    by_case = {c["case"]: c for c in result["cases"]}
    groups: dict[str, dict[str, list[float]]] = {}
    for name, vals in r.items():
        c = by_case[name]
        g = groups.setdefault(f"{c['family']}\n{c['count_level']}\n{c['pattern']}", {})
        for m, v in vals.items():
            g.setdefault(m, []).append(v)
    methods = [m for m in result["cases"][0]["methods"] if any(m in g for g in groups.values())]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 2), 4.2),
                           constrained_layout=True)
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for i, g in enumerate(groups.values()):
            if m in g:
                v = np.asarray(g[m])
                xs.append(i + (j - len(methods) / 2 + 0.5) * width)
                ys.append(gmean(v))
                lo.append(max(0.0, ys[-1] - v.min()))
                hi.append(max(0.0, v.max() - ys[-1]))
        ax.bar(xs, ys, width, yerr=[lo, hi], label=m, capsize=1.5)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(groups)), list(groups), fontsize=6)
    ax.set_ylabel(f"{dict(RATIO_METRICS).get(key, key)} / best classical")
    ax.legend(fontsize=6, ncol=4)
    return _save(fig, path)


def draw_panel(panel: dict, path: Path) -> Path | None:
    """The image-domain panel: one slice through the dead block's volume of the true activity
    and of each reconstruction, the dead-volume ROI outlined in red (``panel``: ``'images'``
    title -> 2-D image, the ROI under :data:`PANEL_ROI`; ``'case'``: its name)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {k: np.asarray(v) for k, v in panel["images"].items()}
    roi = images.pop(PANEL_ROI, None)
    n = len(images)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows), squeeze=False,
                             constrained_layout=True)
    vmax = float(np.percentile(images[next(iter(images))], 99.5)) or 1.0
    for ax, (title, img) in zip(axes.flat, images.items()):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=vmax * 1.2, interpolation="nearest")
        if roi is not None and roi.any():
            ax.contour(roi, levels=[0.5], colors="tab:red", linewidths=0.6)
        ax.set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(panel["case"], fontsize=8)
    return _save(fig, path)
