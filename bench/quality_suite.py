"""The quality benchmark's suite file: reading, checking, and every seed the suite uses.

A suite (``bench/quality/suite.yaml``) names the scanner, the shipped training preset, how many
independent data sets, the activity families, count levels and dead-block patterns, and which
of them make the cases (their full product). Everything random in the benchmark derives from
the suite's ``seed`` through :func:`seeds_for`, in three disjoint streams:

- ``train``: data set ``d``'s training simulation (``simulate.seed`` and ``run.seed``); its
  store holds out validation scans, the only scans any choice is made on;
- ``test``: the test phantoms of data set ``d`` and family ``F`` (a ``simulate.seed`` per
  family); :func:`check_disjoint` refuses a suite whose test seeds meet a training seed;
- ``thin``: the binomial thinning that turns a complete test scan into a damaged one.

Stream names and family / level / pattern names enter the seed as CRC-32 numbers, so adding or
reordering entries of the suite never changes the seeds of the others.

Bad input (unknown keys, an unknown family, count level or pattern, blocks the scanner does not
have, family parameters that cannot make a phantom) raises
:class:`~badblock.errors.BadInputError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from badblock.errors import BadInputError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SUITE = ROOT / "bench" / "quality" / "suite.yaml"
STREAMS = ("train", "test", "thin")
PROJECTOR_OPTIONS = ("subviews", "tilts", "pool", "step_mm")


@dataclass
class CasesSpec:
    """The axes whose product is the suite's cases (names of the sections above them)."""

    families: list[str] = field(default_factory=list)
    counts: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)


@dataclass
class OsemSpec:
    """TOF OSEM with attenuation: the image domain's reconstructions and the model-based fill's.

    ``projector``: options of :class:`badblock.physics.fastproj.FastProjector` (``subviews``,
    ``tilts``, ``pool``, ``step_mm``); the simulation projects with the exact model, so a
    reconstruction with the fast one has the model mismatch a real reconstruction has."""

    iterations: int = 2
    subsets: int = 6
    projector: dict = field(default_factory=dict)


@dataclass
class SmokeSpec:
    """What ``--smoke`` changes: one data set, one case, a few training steps."""

    datasets: int = 1
    train_scans: int = 4
    test_scans: int = 1
    cases: CasesSpec = field(default_factory=CasesSpec)
    train: list[str] = field(default_factory=list)  # config overrides KEY=VALUE
    osem: OsemSpec = field(default_factory=OsemSpec)


@dataclass
class Suite:
    scanner: str = "mini"
    preset: str = "demo"  # the shipped training preset (badblock train --config PRESET)
    seed: int = 0
    datasets: int = 3
    train_scans: int = 16  # simulated per data set; the store holds some out for validation
    test_scans: int = 2  # test phantoms per (data set, family)
    families: dict = field(default_factory=dict)  # name -> physics.families parameters
    count_levels: dict = field(default_factory=dict)  # name -> multiple of simulate.counts
    patterns: dict = field(default_factory=dict)  # name -> dead blocks ["T:A", ...]
    cases: CasesSpec = field(default_factory=CasesSpec)
    baselines: list[str] = field(default_factory=list)
    osem: OsemSpec = field(default_factory=OsemSpec)
    fbp_planes: int = 12  # direct planes FBP'd per scan (the most damaged ones)
    image_scans: int = 1  # test scans per case reconstructed with OSEM (the first ones)
    smoke: SmokeSpec = field(default_factory=SmokeSpec)
    path: str = ""  # where it was read from (not a key of the file)

    def case_keys(self) -> list[tuple[str, str, str]]:
        """(family, count level, pattern) of every case of one data set, in suite order."""
        c = self.cases
        return [(f, n, p) for f in c.families for n in c.counts for p in c.patterns]


def _where(suite_path: str, key: str) -> str:
    return f"{suite_path}: {key}"


def _check(suite: Suite) -> None:
    from badblock import baselines as bl
    from badblock.config import presets
    from badblock.physics import dead_block_mask, get_scanner, parse_blocks
    from badblock.physics.families import check_family

    at = suite.path
    try:
        scanner = get_scanner(suite.scanner)
    except BadInputError as exc:
        raise BadInputError(_where(at, "scanner"), exc.problem) from None
    if suite.preset not in presets():
        raise BadInputError(_where(at, "preset"), f"unknown preset {suite.preset!r} (shipped: "
                                                  f"{', '.join(presets())})")
    for key in ("datasets", "train_scans", "test_scans", "fbp_planes", "image_scans"):
        if getattr(suite, key) < (2 if key == "train_scans" else 1):
            raise BadInputError(_where(at, key), f"must be at least "
                                                 f"{2 if key == 'train_scans' else 1}")
    for name, params in suite.families.items():
        if not isinstance(params, dict):
            raise BadInputError(_where(at, f"families.{name}"), "must be a mapping of the "
                                                                 "family's parameters")
        check_family(name, params, _where(at, f"families.{name}"))
    for name, level in suite.count_levels.items():
        if isinstance(level, bool) or not isinstance(level, (int, float)) or \
                not math.isfinite(level) or level <= 0:
            raise BadInputError(_where(at, f"count_levels.{name}"),
                                f"must be a positive multiple of simulate.counts, not {level!r}")
    for name, blocks in suite.patterns.items():
        where = _where(at, f"patterns.{name}")
        if not isinstance(blocks, list) or not blocks:
            raise BadInputError(where, "must be a non-empty list of dead blocks 'T:A'")
        try:
            mask = dead_block_mask(scanner, parse_blocks(blocks, where))
        except BadInputError as exc:
            raise BadInputError(where, exc.problem) from None
        if not (mask > 0).any():
            raise BadInputError(where, "damages no bin")
    for axis, section, what in (("families", suite.families, "activity family"),
                                ("counts", suite.count_levels, "count level"),
                                ("patterns", suite.patterns, "dead-block pattern")):
        for spec, key in ((suite.cases, "cases"), (suite.smoke.cases, "smoke.cases")):
            names = getattr(spec, axis)
            if not names:
                raise BadInputError(_where(at, f"{key}.{axis}"), "is empty")
            for n in names:
                if n not in section:
                    raise BadInputError(_where(at, f"{key}.{axis}"),
                                        f"unknown {what} {n!r} (defined: {', '.join(section)})")
    for i, name in enumerate(suite.baselines):
        if name not in bl.BASELINES:
            raise BadInputError(_where(at, f"baselines[{i}]"),
                                f"unknown baseline {name!r} (valid: {', '.join(bl.BASELINES)})")
    for spec, key in ((suite.osem, "osem"), (suite.smoke.osem, "smoke.osem")):
        if spec.iterations < 1 or spec.subsets < 1:
            raise BadInputError(_where(at, key), "iterations and subsets must be at least 1")
        unknown = sorted(set(spec.projector) - set(PROJECTOR_OPTIONS))
        if unknown:
            raise BadInputError(_where(at, f"{key}.projector"),
                                f"unknown projector option {unknown[0]!r} (valid: "
                                f"{', '.join(PROJECTOR_OPTIONS)})")
    _check_simulable(suite, scanner)


def _check_simulable(suite: Suite, scanner) -> None:
    """Make one phantom of every family used (a throw-away seed): parameters that fail, or a
    phantom with no activity inside the scanner's field of view, stop the suite before any
    training starts."""
    from badblock.physics.families import build
    from badblock.physics.projector import scanner_geometry

    geom = scanner_geometry(scanner)
    grid = geom.grid
    yy, xx = np.meshgrid(grid.centres(1), grid.centres(2), indexing="ij")
    in_fov = np.hypot(yy, xx) <= geom.fov_radius_mm
    used = set(suite.cases.families) | set(suite.smoke.cases.families)
    for name in suite.families:
        if name not in used:
            continue
        where = _where(suite.path, f"families.{name}")
        try:
            act, _, _ = build(name, grid, np.random.default_rng(0), geom.fov_radius_mm,
                              **suite.families[name])
        except BadInputError as exc:
            raise BadInputError(where, exc.problem) from None
        except (TypeError, ValueError) as exc:
            raise BadInputError(where, f"cannot make a phantom: {exc}") from None
        if not (act[:, in_fov] > 0).any():
            raise BadInputError(where, f"no activity inside the {scanner.name}'s field of view")


def load_suite(path: str | Path = DEFAULT_SUITE, smoke: bool = False) -> Suite:
    """Read and check a suite file; with ``smoke`` the smoke section replaces the data sets,
    scans per data set, cases, OSEM settings and adds its training overrides."""
    from badblock.config.loader import from_dict

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise BadInputError(path, "suite file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(path, f"cannot read the suite file ({exc})") from None
    except yaml.YAMLError as exc:
        raise BadInputError(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise BadInputError(path, "a suite file is a mapping of keys (see "
                                  "bench/quality/suite.yaml)")
    if "path" in data:
        raise BadInputError(path, "unknown key 'path'")
    suite = from_dict(Suite, data, str(path))
    suite.path = str(path)
    _check(suite)
    if smoke:
        s = suite.smoke
        suite = dataclasses.replace(suite, datasets=s.datasets, train_scans=s.train_scans,
                                    test_scans=s.test_scans, cases=s.cases, osem=s.osem)
    return suite


def _crc(name: str) -> int:
    return zlib.crc32(name.encode())


def seeds_for(suite: Suite, stream: str, dataset: int, *names: str) -> int:
    """A 31-bit seed of ``stream`` (``train``, ``test`` or ``thin``) for data set ``dataset``
    and the named family / level / pattern / scan: SeedSequence([suite seed, stream, d, ...])."""
    if stream not in STREAMS:
        raise ValueError(f"unknown seed stream {stream!r}")
    entropy = [int(suite.seed), _crc(stream), int(dataset), *(_crc(n) for n in names)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def check_disjoint(suite: Suite) -> None:
    """Refuse a suite whose test seeds could meet a training seed (the phantoms of a scan are a
    function of the simulation seed and the scan index, so distinct seeds mean distinct
    phantoms): every (data set, family) test seed must differ from every data set's training
    seed and from each other."""
    train = {seeds_for(suite, "train", d) for d in range(suite.datasets)}
    test = [seeds_for(suite, "test", d, f) for d in range(suite.datasets)
            for f in suite.cases.families]
    if len(train) != suite.datasets or len(set(test)) != len(test) or train & set(test):
        raise BadInputError(_where(suite.path, "seed"), "gives colliding training and test "
                                                        "seeds; choose another")


def view_shift_between(scanner, a: np.ndarray, b: np.ndarray) -> int | None:
    """The view shift k (0 <= k < 2V) with b[v] = a[v - k] continued past 180 degrees by the
    flipped wrap (partner planes), when one makes the masks ``a`` and ``b`` equal; else None.
    Bin 0 is left out of the comparison: its radial mirror lies outside the sinogram."""
    from badblock.baselines import extend_views, wrap_partners

    n_views = a.shape[1]
    partners = wrap_partners(1, a.shape[0], scanner.segments, "none")
    ext = extend_views(a[None], partners, np.arange(a.shape[0]), 2 * n_views, 0)[0]
    for k in range(2 * n_views):
        if np.array_equal(ext[:, 2 * n_views - k:3 * n_views - k, 1:], b[..., 1:]):
            return k
    return None


def relations(suite: Suite) -> dict:
    """How each pattern relates to what training and validation see: block count, whether the
    preset's training can draw it (``data.blocks_per_sample`` blocks per sample from
    ``data.train_blocks``, all positions when empty; any such set has a non-zero chance), and
    the exact view shift that maps the validation mask onto it (None: none does).
    Also the view shift of a one-block ring rotation (block pitch / mash)."""
    from badblock.config import load_config
    from badblock.physics import dead_block_mask, get_scanner, parse_blocks

    cfg = load_config(suite.preset)
    scanner = get_scanner(suite.scanner)
    val_blocks = parse_blocks(cfg.scanner.dead_blocks)
    val_mask = dead_block_mask(scanner, val_blocks)
    drawn = set(parse_blocks(cfg.data.train_blocks)) or {
        (t, a) for t in range(scanner.blocks_transaxial) for a in range(scanner.blocks_axial)}
    lo, hi = (int(v) for v in cfg.data.blocks_per_sample)
    out = {"validation_blocks": [f"{t}:{a}" for t, a in val_blocks],
           "blocks_per_sample": list(cfg.data.blocks_per_sample),
           "adjacent": cfg.data.adjacent,
           "training_positions": len(drawn),
           "one_block_rotation_views": scanner.block_pitch / scanner.mash, "patterns": {}}
    for name, spec in suite.patterns.items():
        blocks = parse_blocks(spec)
        out["patterns"][name] = {
            "blocks": len(blocks),
            "drawn_in_training": (lo <= len(blocks) <= hi) and set(blocks) <= drawn,
            "validation_view_shift": view_shift_between(
                scanner, val_mask, dead_block_mask(scanner, blocks))}
    return out
