"""The quality benchmark's suite file: what the frozen suite holds, bad input, seeds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import quality  # noqa: E402
import quality_suite as qs  # noqa: E402


def test_frozen_suite_covers_what_the_protocol_asks():
    from badblock.config import load_config
    from badblock.physics import dead_block_mask, get_scanner, parse_blocks

    suite = qs.load_suite()
    assert suite.scanner == load_config("demo").scanner.name == "mini"
    assert suite.datasets >= 3
    fams = suite.cases.families
    assert "random" in fams and len([f for f in fams if f != "random"]) >= 2
    levels = [suite.count_levels[c] for c in suite.cases.counts]
    assert 1 in levels and max(levels) >= 8
    sc = get_scanner(suite.scanner)
    kinds = set()
    for name in suite.cases.patterns:
        blocks = parse_blocks(suite.patterns[name])
        ts, axs = {t for t, _ in blocks}, {a for _, a in blocks}
        if len(blocks) == 1:
            kinds.add("single")
        elif len(blocks) == 2 and len(axs) == 1 and abs(blocks[0][0] - blocks[1][0]) == 1:
            kinds.add("transaxial pair")
        elif len(blocks) == 2 and len(ts) == 1 and abs(blocks[0][1] - blocks[1][1]) == 1:
            kinds.add("axial pair")
        elif len(blocks) > 2:
            kinds.add("never drawn")  # training draws one block per sample
        assert (dead_block_mask(sc, blocks) > 0).any()
    assert kinds == {"single", "transaxial pair", "axial pair", "never drawn"}
    n = suite.datasets * len(fams) * len(suite.cases.counts) * len(suite.cases.patterns)
    assert len(suite.case_keys()) * suite.datasets == n


def test_smoke_mode_is_one_case_of_one_data_set():
    suite = qs.load_suite(smoke=True)
    assert suite.datasets == 1 and len(suite.case_keys()) == 1 and suite.test_scans == 1


def test_seed_streams_are_disjoint():
    suite = qs.load_suite()
    qs.check_disjoint(suite)
    train = [qs.seeds_for(suite, "train", d) for d in range(suite.datasets)]
    test = [qs.seeds_for(suite, "test", d, f) for d in range(suite.datasets)
            for f in suite.cases.families]
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not set(train) & set(test)
    # Seeds depend on names, not on positions: a reordered family list keeps them.
    assert qs.seeds_for(suite, "test", 0, "lesions") == qs.seeds_for(suite, "test", 0, "lesions")
    assert qs.seeds_for(suite, "test", 0, "lesions") != qs.seeds_for(suite, "test", 1, "lesions")
    with pytest.raises(ValueError):
        qs.seeds_for(suite, "choose", 0)


def _bad_suite(tmp_path, change):
    data = yaml.safe_load(qs.DEFAULT_SUITE.read_text())
    change(data)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BAD = {
    "unknown top key": (lambda d: d.update(dataset=3), "unknown key 'dataset'"),
    "unknown nested key": (lambda d: d["cases"].update(famlies=["random"]),
                           "unknown key 'cases.famlies'"),
    "unknown family in cases": (lambda d: d["cases"]["families"].append("noise"),
                                "cases.families: unknown activity family 'noise'"),
    "unknown family section": (lambda d: d["families"].update(noise={}),
                               "families.noise: unknown activity family 'noise'"),
    "unknown family parameter": (lambda d: d["families"]["vessels"].update(radius=2.0),
                                 "families.vessels: family 'vessels' has no parameter 'radius'"),
    "unknown count level": (lambda d: d["cases"]["counts"].append("medium"),
                            "cases.counts: unknown count level 'medium'"),
    "bad count level": (lambda d: d["count_levels"].update(demo=-1),
                        "count_levels.demo: must be a positive multiple"),
    "unknown pattern": (lambda d: d["smoke"]["cases"]["patterns"].append("ring"),
                        "smoke.cases.patterns: unknown dead-block pattern 'ring'"),
    "block the scanner lacks": (lambda d: d["patterns"].update(single=["16:1"]),
                                "patterns.single: transaxial block 16 outside 0..15"),
    "not a block": (lambda d: d["patterns"].update(single=["5-1"]),
                    "patterns.single: '5-1' is not a block"),
    "unknown baseline": (lambda d: d["baselines"].append("median"),
                         "baselines[6]: unknown baseline 'median'"),
    "phantom cannot be made": (lambda d: d["families"]["lesions"].update(radii_mm=[-3.0]),
                               "families.lesions: needs n_lesions >= 1, positive radii_mm"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_suite_is_one_line_naming_file_and_key_exit_2(tmp_path, capsys, name):
    change, expected = BAD[name]
    path = _bad_suite(tmp_path, change)
    rc = quality.main(["--suite", str(path), "--work", str(tmp_path / "w"),
                       "--out", str(tmp_path / "q.json")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith(f"quality: error: {path}")
    assert expected in err
    assert not (tmp_path / "w").exists() and not (tmp_path / "q.json").exists()


def test_missing_and_malformed_suite_files(tmp_path, capsys):
    assert quality.main(["--suite", str(tmp_path / "none.yaml")]) == 2
    assert "suite file not found" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("cases: [1, 2\n")
    assert quality.main(["--suite", str(tmp_path / "bad.yaml")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_view_shift_relations_of_block_masks():
    from badblock.physics import dead_block_mask, get_scanner

    sc = get_scanner("mini")
    m3 = dead_block_mask(sc, [(3, 1)])
    # Two blocks = 18 crystals = 9 views of mash 2: exact; one block = 4.5 views: none.
    assert qs.view_shift_between(sc, m3, dead_block_mask(sc, [(5, 1)])) == 9
    assert qs.view_shift_between(sc, m3, dead_block_mask(sc, [(4, 1)])) is None
    assert qs.view_shift_between(sc, m3, m3) == 0
    # Past 180 degrees the wrap flips: block 3 + 8 (72 crystals = 36 views = 180 degrees).
    assert qs.view_shift_between(sc, m3, dead_block_mask(sc, [(11, 1)])) == 36
    rel = qs.relations(qs.load_suite())
    assert rel["patterns"]["single"]["drawn_in_training"]
    # the demo preset draws 1-3 blocks a sample: the pairs can occur, the 4-block square never
    assert rel["blocks_per_sample"] == [1, 3]
    assert rel["patterns"]["pair_axial"]["drawn_in_training"]
    assert not rel["patterns"]["square"]["drawn_in_training"]
