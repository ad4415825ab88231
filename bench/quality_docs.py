"""Write docs/quality.md from the quality benchmark's JSON, so the numbers never drift.

    python bench/quality_docs.py [--json bench/results/quality.json] [--out docs/quality.md]

Everything in the page that is a number comes from the JSON (and the suite it records); the
prose around it is fixed here. Rerun after ``python bench/quality.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_image import BACKGROUND_SHARE, DEAD_SHARE
from quality_report import (
    BIAS_METRICS,
    RATIO_METRICS,
    aggregate_table,
    bias_table,
    case_table,
    dataset_table,
    gmean,
)
from quality_suite import ROOT


def trained_families(result: dict) -> list[str]:
    """The activity families the scored preset trained on (older JSON: random alone)."""
    phantom = (result.get("preset_data") or {}).get("phantom", "random")
    return [phantom] if isinstance(phantom, str) else list(phantom)


PROTOCOL = """\
## Protocol (enforced by the code)

- **Choices on validation data only.** Per data set the network is trained once, exactly as a
  user would: `badblock simulate` (the preset's phantom families, seed stream *train*) ->
  `badblock preprocess` (the store holds out a quarter of the scans for validation) ->
  `badblock train --config {preset}` (the library functions the CLI calls). `checkpoint_best.pt`
  is the trainer's pick on those validation scans. normconv's widths are tuned per (dead-block
  pattern, count level) on the same validation scans (the same phantoms re-simulated at the
  count level), against their noiseless truth -- the most favourable choice for the baseline,
  so the classical reference is as strong as it honestly can be. `quality_data.choose` accepts
  nothing but the store's validation split (`ValidationScans.from_store`), and the choices are
  written to the work folder before the first test scan is simulated.
- **Test scans never seen.** Test phantoms come from seed stream *test* (one seed per data set
  and family, derived from the suite seed and the names), the thinning from stream *thin*;
  `quality_suite.check_disjoint` refuses a suite whose test seeds meet a training seed.
  No preset or hyperparameter of the product was chosen on this suite.
- **Same bins, same rounding.** Every method's output goes through
  `badblock.metrics.data_consistent`: only bins with f > 0 are filled, every other bin keeps
  the measured counts, everything is rounded to the scan's dtype (uint16). The network's repair
  (`badblock repair`) passes through unchanged. normconv's raw output, which smooths every bin,
  appears only as the labelled extra row *{all_bins}*.
"""

WHY = """\
## Why a benchmark and not a `badblock` stage

It trains a network per data set, simulates hundreds of scans and runs for hours; what it
produces is a statement about the product (how well the shipped preset repairs data it never
saw, next to every classical method), not something a user runs on their own scans. The stage
for that is `badblock evaluate`; the benchmark scores with the same library functions
(`badblock.metrics`, `badblock.baselines`, `badblock.repair`, `badblock.physics`).
"""

METRICS = """\
## Metrics

Per case the scores are means over its test scans; every ratio below is a row's value over the
best classical method *of that case* (the smallest over the suite's baselines; for OSEM scores
the gaps-modelled reconstruction counts as a classical answer), so below 1 beats them all.

- **damaged bins NRMSE / bias** against the noiseless truth over all bins with f > 0, and split
  into partly damaged (0 < f < 1) and fully dead (f = 1) bins: ||x - t|| / ||t||,
  (sum x - sum t) / sum t.
- **lost-count NRMSE / bias**: a method's estimate of what the dead block removed,
  repaired - surviving counts, against f x truth (its expectation) over f > 0 -- the part of
  the job only a repair does. For fully dead bins it equals the damaged-bin error.
- **FBP NRMSE**: FBP (ramp, TOF summed) of the {fbp_planes} most damaged direct planes, inside the
  reconstruction circle, against the FBP of the truth (FBP needs complete data: a fill matters
  most there).
- **OSEM**: TOF OSEM with attenuation ({osem_it} iterations x {osem_sub} subsets,
  `physics.osem` on `physics.fastproj`, {osem_proj}; the simulation used the exact
  LOR-by-LOR projector, so the reconstruction has a model mismatch as a real one does) of the
  first {image_scans} test scan(s) of each case, divided by the simulation's count scale and
  scored against the true activity: NRMSE over the body (mu at least half water's), and the
  bias of the mean in two ROIs from a back-projection of the mask (`physics.osem.mask_volume`:
  each voxel's share of sensitivity through damaged bins): the *dead volume*, share at least
  {dead:g} x its 99th percentile in the body (on average {roi_dead:.0f} of {roi_body:.0f} body
  voxels), and a *background* ROI, share at most {bg:g} x it ({roi_bg:.0f} voxels). Rows: every
  repair except `none` and `divide` (they leave fully dead bins empty, which nobody would
  reconstruct), the complete scan (the best any repair could give), and the damaged scan with
  the gaps modelled in the sensitivity (the null comparator: "why fill at all?"; the model-based
  fill projects this same reconstruction).
- *complete scan (reference)* is the complete measured scan scored like a repair: the Poisson
  noise floor of the damaged bins (a method that denoises can go below it).
- The network's `checkpoint_best.pt` is chosen by the trainer without the truth: the damaged-bin
  NRMSE estimated from the measured validation scans alone (the lost counts over f are an
  unbiased estimate of the truth independent of the network's input; `badblock.train.validate`).
"""


def _roi_means(result: dict) -> dict:
    rois = [c["roi_voxels"] for c in result["cases"] if c.get("roi_voxels")]
    mean = {k: sum(r[k] for r in rois) / len(rois) if rois else float("nan")
            for k in ("body", "dead", "background")}
    return {"roi_body": mean["body"], "roi_dead": mean["dead"], "roi_bg": mean["background"]}


def _suite_section(result: dict) -> str:
    s = result["suite"]
    lines = ["## The suite (`bench/quality/suite.yaml`)", "",
             f"Scanner `{s['scanner']}` (the demo's), preset `{s['preset']}`, suite seed "
             f"{s['seed']}: **{s['datasets']} data sets** x the product of "
             f"{len(s['cases']['families'])} activity families x {len(s['cases']['counts'])} "
             f"count levels x {len(s['cases']['patterns'])} dead-block patterns = "
             f"**{len(result['cases'])} cases**, {s['test_scans']} test scans each; "
             f"{s['train_scans']} scans of the preset's families "
             f"({', '.join(trained_families(result))}) per data set for training and "
             "validation.", "",
             "| family | parameters | in the preset's training |", "|---|---|---|"]
    for f in s["cases"]["families"]:
        params = ", ".join(f"{k} {v}" for k, v in s["families"][f].items()) or \
            "the simulator's default phantoms (`physics.phantom.random_phantom`), test seeds"
        seen = "yes (other seeds)" if f in trained_families(result) else "**never**"
        lines.append(f"| `{f}` | {params} | {seen} |")
    lines += ["", "| count level | expected prompts per scan |", "|---|---|"]
    base = result["cases"][0]["counts"] / s["count_levels"][result["cases"][0]["count_level"]]
    for c in s["cases"]["counts"]:
        lines.append(f"| `{c}` ({s['count_levels'][c]:g} x) | {s['count_levels'][c] * base:.3g} |")
    lines += ["", "| pattern | dead blocks (T:A) |", "|---|---|"]
    for p in s["cases"]["patterns"]:
        lines.append(f"| `{p}` | {', '.join(s['patterns'][p])} |")
    lines += ["", _symmetry(result)]
    return "\n".join(lines)


def _symmetry(result: dict) -> str:
    """How the test patterns relate to the training and validation positions (from the JSON's
    ``relations``, computed from the scanner's masks)."""
    r = result["relations"]
    rot = r["one_block_rotation_views"]
    lines = [
        f"How test and training positions relate. Training draws "
        f"{'-'.join(str(v) for v in r['blocks_per_sample'])} dead blocks per sample from "
        f"{r['training_positions']} positions, each further block adjacent to one already drawn "
        f"with probability {r.get('adjacent', 0):g}; validation (checkpoint choice) uses "
        f"{', '.join(r['validation_blocks'])}. Rotating the ring by one block is a view shift "
        f"of block pitch / mash = {rot:g} views"
        + (", an exact symmetry of the binned sinogram." if float(rot).is_integer() else
           f"; the binning does not preserve a fractional shift, so only rotations by "
           f"multiples of {2 if (2 * rot).is_integer() else 'several'} blocks are exact "
           "symmetries (odd and even blocks differ at the sub-view level)."),
        "Axial blocks mirror each other about the scanner's centre (z flip with segments "
        "+k and -k swapped).", "",
        "| pattern | blocks | drawn in training | exact view shift of the validation mask |",
        "|---|---|---|---|"]
    for name, p in r["patterns"].items():
        k = p["validation_view_shift"]
        lines.append(f"| `{name}` | {p['blocks']} | {'yes' if p['drawn_in_training'] else 'no'}"
                     f" | {'none' if k is None else f'{k} views'} |")
    return "\n".join(lines)


def _findings(result: dict) -> str:
    agg = result["aggregate"]["ratio"]
    lines = ["## What it shows", ""]
    for key, label in RATIO_METRICS:
        if key not in agg or "unet" not in agg[key]:
            continue
        u = agg[key]["unet"]
        lines.append(f"- {label}: the network is {u['gmean']:.3f} x the best classical method "
                     f"of each case (geometric mean over {u['cases']} cases), worst "
                     f"{u['worst']:.3f} x ({u['worst_case']}); below every classical method "
                     f"in {u['wins']} of {u['cases']} cases; per data set "
                     + ", ".join(f"{v:.3f}" for v in u["per_dataset"].values()) +
                     f" (mean {u['datasets_mean']:.3f}, worst {u['datasets_worst']:.3f}).")
    best = {}
    for c in result["cases"]:
        m = c["methods"]
        names = [b for b in result["suite"]["baselines"] if b in m]
        if names:
            w = min(names, key=lambda b: m[b]["nrmse_all"] if m[b]["nrmse_all"] is not None
                    else float("inf"))
            best[w] = best.get(w, 0) + 1
    lines.append("- best classical method on damaged-bin NRMSE, cases won: " +
                 ", ".join(f"{k} {v}" for k, v in sorted(best.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines)


def _targets(result: dict) -> str:
    """The learned repair against the targets it was built for (all numbers from the JSON)."""
    import statistics as st

    from badblock.config import load_config

    cases = result["cases"]
    if not cases or "unet" not in cases[0]["methods"]:
        return ""
    classical = [b for b in result["suite"]["baselines"] if b in cases[0]["methods"]]

    def nr(c, m, key="nrmse_all"):
        v = c["methods"].get(m, {}).get(key)
        return float("inf") if v is None else v

    def gm(xs):
        xs = [x for x in xs if x and x != float("inf")]
        return st.geometric_mean(xs) if xs else float("nan")

    lines = ["## The learned repair against its targets", "",
             "| damaged-bin NRMSE (geometric mean over cases) | "
             + " | ".join(["normconv", "model", "unet"]) + " |", "|---|---|---|---|"]
    for level in dict.fromkeys(c["count_level"] for c in cases):
        cs = [c for c in cases if c["count_level"] == level]
        lines.append(f"| count level `{level}` ({len(cs)} cases) | "
                     + " | ".join(f"{gm([nr(c, m) for c in cs]):.4f}"
                                  for m in ("normconv", "model", "unet")) + " |")
    lines += ["", "| count level | unet / model: damaged bins | partly damaged | fully dead "
              "| OSEM body |", "|---|---|---|---|---|"]
    for level in dict.fromkeys(c["count_level"] for c in cases):
        cs = [c for c in cases if c["count_level"] == level]
        lines.append(f"| `{level}` | " + " | ".join(
            f"{gm([nr(c, 'unet', k) / nr(c, 'model', k) for c in cs]):.3f}"
            for k in ("nrmse_all", "nrmse_partial", "nrmse_dead", "osem_nrmse")) + " |")
    lines += ["", "| data set | unet / model, count level " + " | ".join(
        f"`{lv}`" for lv in dict.fromkeys(c["count_level"] for c in cases)) + " | kept epoch |",
        "|---|" + "---|" * (len(set(c["count_level"] for c in cases)) + 1)]
    for d in result["datasets"]:
        cells = []
        for level in dict.fromkeys(c["count_level"] for c in cases):
            cs = [c for c in cases if c["count_level"] == level and c["dataset"] == d["dataset"]]
            cells.append(f"{gm([nr(c, 'unet') / nr(c, 'model') for c in cs]):.3f}")
        lines.append(f"| {d['dataset']} | " + " | ".join(cells) + f" | {d.get('best_epoch')} |")
    lines += ["", "| activity family | unet / model | unet / normconv |", "|---|---|---|"]
    for fam in dict.fromkeys(c["family"] for c in cases):
        cs = [c for c in cases if c["family"] == fam]
        lines.append(f"| `{fam}` | {gm([nr(c, 'unet') / nr(c, 'model') for c in cs]):.3f} | "
                     f"{gm([nr(c, 'unet') / nr(c, 'normconv') for c in cs]):.3f} |")
    wins = sum(nr(c, "unet") < min(nr(c, m) for m in classical) for c in cases)
    # the scored preset's model section (older JSON: the preset as it is now)
    model_cfg = result.get("preset_model") or vars(
        load_config(result["suite"]["preset"], env={}).model)
    prior = [float(v) for v in model_cfg.get("prior_widths") or ()]
    own = [c for c in cases if c.get("normconv_widths") == prior]
    lines += ["", f"- Below every classical method on {wins} of {len(cases)} cases."]
    base = None
    if model_cfg.get("fill_prior") and "model" in classical:
        base, own, what = "model", cases, "the model-based fill it corrects: the `model` row"
    elif own and prior:
        base, what = "normconv", (f"normconv with the prior's widths {tuple(prior)}, the tuned "
                                  "choice")
    if base:
        for key, label in (("nrmse_partial", "partly damaged"), ("nrmse_dead", "fully dead")):
            r = [nr(c, "unet", key) / nr(c, base, key) for c in own]
            lines.append(f"- Against its own prior ({what}, in {len(own)} of {len(cases)} "
                         f"cases), {label} bins: {gm(r):.3f} x (geometric mean), worse in "
                         f"{sum(x > 1 for x in r)} cases, at most {max(r):.3f} x.")
    for m in ("unet", "complete scan (reference)"):
        b = [c["methods"][m]["osem_bias_dead"] for c in cases
             if c["methods"].get(m, {}).get("osem_bias_dead") is not None]
        if b:
            lines.append(f"- OSEM dead-volume ROI bias, {m}: mean {100 * st.mean(b):+.2f} %, "
                         f"from {100 * min(b):+.2f} % to {100 * max(b):+.2f} %; within +-1 % in "
                         f"{sum(abs(x) <= 0.01 for x in b)} of {len(b)} cases.")
    img = [c for c in cases if c["methods"].get("unet", {}).get("osem_nrmse") is not None]
    if img:
        ok = sum(nr(c, "unet", "osem_nrmse") <= min(nr(c, m, "osem_nrmse") for m in classical)
                 for c in img)
        lines.append(f"- OSEM body NRMSE no worse than OSEM of every classical fill in {ok} of "
                     f"{len(img)} cases.")
        # which fill the network's image has to beat, and by how little the images differ
        imaged = [m for m in classical if all(nr(c, m, "osem_nrmse") is not None for c in img)]
        best = Counter(min(imaged, key=lambda m, c=c: nr(c, m, "osem_nrmse")) for c in img)
        lines.append("- The classical fill with the lowest OSEM body NRMSE: " + ", ".join(
            f"`{m}` in {k}" for m, k in best.most_common()) + " cases.")
        for m in ("model", "complete scan (reference)"):
            if all(nr(c, m, "osem_nrmse") is not None for c in img):
                r = [nr(c, "unet", "osem_nrmse") / nr(c, m, "osem_nrmse") for c in img]
                lines.append(f"- OSEM body NRMSE, unet / {m}: {gm(r):.4f} x (geometric mean), "
                             f"from {min(r):.4f} to {max(r):.4f} x.")
    lines += _self_checks(cases)
    return "\n".join(lines)


def _self_checks(cases: list[dict]) -> list[str]:
    """Repair's self-check on the suite: the weights it took, by count level and family
    (older JSON: none)."""
    import statistics as st

    ran = [(c, s) for c in cases for s in c.get("self_check") or () if s.get("ran")]
    if not ran:
        return []
    out = ["", f"Repair's self-check ran on {len(ran)} of "
           f"{sum(len(c.get('self_check') or ()) for c in cases)} repaired scans; its weights "
           "of the network's correction (0 = the fill, 1 = the network), mean and range:", "",
           "| scans | partly damaged | fully dead |", "|---|---|---|"]
    groups = [(f"count level `{v}`", "count_level", v)
              for v in dict.fromkeys(c["count_level"] for c, _ in ran)]
    groups += [(f"`{v}`", "family", v) for v in dict.fromkeys(c["family"] for c, _ in ran)]
    groups += [(f"data set {v}", "dataset", v) for v in dict.fromkeys(c["dataset"] for c, _ in ran)]
    for label, key, value in groups:
        cells = []
        for cls in ("partial", "dead"):
            w = [s["weights"][cls] for c, s in ran if c[key] == value]
            cells.append(f"{st.mean(w):.2f} ({min(w):.2f}-{max(w):.2f})")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    with_se = [s for _, s in ran if "se" in s]
    if with_se:
        zs = sorted({s["z"] for s in with_se})
        out += ["", "Each weight is the self-check's estimate less "
                + " or ".join(f"{z:g}" for z in zs) + " of its standard errors (clipped to "
                "0-1); the standard error averages " + ", ".join(
                    f"{st.mean(s['se'][cls] for s in with_se):.3f} on "
                    f"{'partly damaged' if cls == 'partial' else 'fully dead'} bins"
                    for cls in ("partial", "dead")) + "."]
    # how far one case's scans (same family, counts and blocks; other draws) disagree: the
    # weight estimate's own noise
    pairs = [[s["weights"] for s in c["self_check"] if s.get("ran")] for c in cases]
    pairs = [w for w in pairs if len(w) > 1]
    if pairs:
        spread = {cls: [max(x[cls] for x in w) - min(x[cls] for x in w) for w in pairs]
                  for cls in ("partial", "dead")}
        out += ["", "Between the scans of one case the weights differ by " + ", ".join(
            f"{st.mean(v):.2f} on average (at most {max(v):.2f}) on "
            f"{'partly damaged' if cls == 'partial' else 'fully dead'} bins"
            for cls, v in spread.items()) + "."]
    for cls, name in (("partial", "partly damaged"), ("dead", "fully dead")):
        worse = [(c, c["methods"]["unet"][f"nrmse_{cls}"] / c["methods"]["model"][f"nrmse_{cls}"])
                 for c in cases if c.get("self_check") and "model" in c["methods"]]
        worse = [(c, r) for c, r in worse if r > 1]
        if worse:
            items = []
            for c, r in worse:
                ws = ", ".join(f"{s['weights'][cls]:.2f}" for s in c["self_check"] if s.get("ran"))
                items.append(f"{c['case']} {r:.6f} ({ws})")
            out += ["", f"Cases worse than the fill on {name} bins (unet / model; the scans' "
                    "weights): " + "; ".join(items) + "."]
    return out


def _ceiling(result: dict, path: Path) -> str:
    """What a fill that knew the truth does in the image (``bench/image_ceiling.py``, made on
    this scoring's cases; absent or of another scoring: nothing)."""
    if not path.exists():
        return ""
    ceiling = json.loads(path.read_text())
    if ceiling.get("scoring_fingerprint") != result.get("fingerprint"):
        return ""
    rows = ceiling["summary"]
    n = next(iter(rows.values()))["cases"]
    agree = ceiling["classical_rows_agree_within"]
    agree = "exactly" if agree == 0 else f"within {100 * agree:.2g} %"
    lines = ["## What any fill can do in the image", "",
             f"`{ceiling['command']}` (evaluation only: it chooses nothing) fills each case's "
             "first test scan, damaged as the suite damages it, with the truth: the expected "
             "lost counts `f x truth` on the damaged bins (`truth-filled`), or on one bin class "
             "with the model-based fill on the other, or the model-based fill moved part of the "
             "way to the truth on the fully dead bins alone (rounded as every row), and "
             "reconstructs it as every row above "
             f"(the classical rows it makes again agree with this scoring's {agree}; `unet` "
             "and the complete "
             f"scan are this scoring's). Over {n} cases:", "",
             "| row | fully dead bins' NRMSE / model fill | OSEM body NRMSE / model fill "
             "(range) | / best classical answer | no worse than every classical fill | "
             "dead-volume ROI bias within +-1 % (range) |",
             "|---|---|---|---|---|---|"]
    for row, v in rows.items():
        lo, hi = v["over_model_range"]
        dead = v.get("dead_over_model_gmean")
        if dead is None and row == "unet":  # the scoring's, over the case's scans
            dead = gmean([c["methods"]["unet"]["nrmse_dead"] / c["methods"]["model"]["nrmse_dead"]
                        for c in result["cases"]])
        lines.append(f"| {row} | {'-' if dead is None else f'{dead:.3f}'} | "
                     f"{v['over_model_gmean']:.4f} ({lo:.3f}-{hi:.3f}) | "
                     f"{v['osem_nrmse_ratio_gmean']:.4f} | "
                     f"{v['no_worse_than_every_classical_fill']} of {v['cases']} | "
                     f"{v['bias_dead_within_1pct']} of {v['cases']} "
                     f"({100 * v['bias_dead_min']:+.2f} to {100 * v['bias_dead_max']:+.2f} %) |")
    return "\n".join(lines)


def render(result: dict, json_path: Path) -> str:
    s = result["suite"]
    machine = result["machine"]
    fig = result.get("figures", {})
    parts = [
        "# The quality benchmark",
        "",
        "<!-- generated by `python bench/quality_docs.py` from "
        f"`{json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path}`; "
        "do not edit by hand -->",
        "",
        "Every repair method on a frozen suite of simulated cases the training never saw: "
        "held-out phantoms of the activity families the preset trains on ("
        + ", ".join(trained_families(result)) + ") and of families it never sees ("
        + ", ".join(f for f in s["cases"]["families"] if f not in trained_families(result))
        + "), the demo's count level and 8 x it, and dead-block patterns up to one the "
        "training never draws (four blocks); "
        "sinogram and image domain, every method on the same bins.",
        "",
        "```",
        result["command"] + "    # then: python bench/quality_docs.py",
        "```",
        "",
        f"Compute time, as recorded when each part was made: **"
        f"{result.get('compute_s', result['wall_s']) / 60:.0f} min** on "
        f"{machine['cpus']} shared CPU cores ({machine['torch_threads']} torch threads, "
        f"{machine['platform']}" + (f", {machine['cpu']}" if machine.get("cpu") else "")
        + "); per data set: " + "; ".join(
            f"{d['dataset']}: train {d['train_s']:.0f} s, choices {d['choices_s']:.0f} s, "
            f"cases {d['cases_s']:.0f} s" for d in result["datasets"]) + ". The command that "
        f"wrote the JSON took {result['wall_s']:.0f} s ({result.get('cases_reused', 0)} of "
        f"{len(result['cases'])} cases reused from its work folder).",
        "",
        WHY, _suite_section(result), "",
        PROTOCOL.format(preset=s["preset"], all_bins="normconv, all bins (not "
                        "data-consistent)"),
        METRICS.format(fbp_planes=s["fbp_planes"], osem_it=s["osem"]["iterations"],
                       osem_sub=s["osem"]["subsets"],
                       osem_proj=", ".join(f"{k}={v}" for k, v in s["osem"]["projector"].items())
                       or "default",
                       image_scans=s["image_scans"], dead=DEAD_SHARE, bg=BACKGROUND_SHARE,
                       **_roi_means(result)),
        "## Results", "",
        "### Aggregate: ratio to the best classical method of each case",
        "", "Geometric mean over all cases (worst case in brackets); below 1 beats every "
        "classical method.", "", aggregate_table(result), "",
        "### Spread over data sets (ratio, geometric mean per data set; mean and worst)", "",
        "Damaged-bin NRMSE:", "", dataset_table(result), "",
        "OSEM body NRMSE:", "", dataset_table(result, "osem_nrmse"), "",
        "### Biases: mean |bias| over cases (worst)", "", bias_table(result), "",
    ]
    if fig.get("bars"):
        parts += [f"![per-case bars]({Path(fig['bars']).relative_to('docs')})"
                  if fig["bars"].startswith("docs/") else f"![per-case bars](../{fig['bars']})",
                  "", "Damaged-bin NRMSE over the best classical method, per (family, count "
                  "level, pattern): bar = geometric mean over data sets, whiskers = their "
                  "range.", ""]
    if fig.get("panel"):
        parts += [f"![image-domain panel]({Path(fig['panel']).relative_to('docs')})"
                  if fig["panel"].startswith("docs/") else
                  f"![image-domain panel](../{fig['panel']})", "",
                  "One slice through the dead blocks' volume: true activity, OSEM of the "
                  "complete scan, of the damaged scan with the gaps modelled, and of each "
                  "repair.", ""]
    parts += [_findings(result), "", _targets(result), "",
              _ceiling(result, json_path.with_name("image_ceiling.json")), "",
              "## Every case", ""]
    labels = dict(RATIO_METRICS + BIAS_METRICS)
    for key in ("nrmse_all", "nrmse_partial", "nrmse_dead", "lost_nrmse", "bias_all",
                "fbp_nrmse", "osem_nrmse", "osem_bias_dead", "osem_bias_background"):
        table = case_table(result, key, ".4f")
        if table and "|" in table.splitlines()[-1]:
            parts += [f"<details><summary>{labels.get(key, key)} (best classical in bold)"
                      "</summary>", "", table, "", "</details>", ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    from badblock.utils.atomic import atomic_write_text

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "quality.json"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "quality.md"))
    args = ap.parse_args(argv)
    path = Path(args.json).resolve()
    result = json.loads(path.read_text())
    atomic_write_text(args.out, render(result, path) + "\n")
    print(f"wrote {args.out} from {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
