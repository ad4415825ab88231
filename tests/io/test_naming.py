"""Scan naming: ids, truth sidecars found beside a scan, truth files recognised."""

from __future__ import annotations

from pathlib import Path

from badblock.io.naming import is_sidecar_name, scan_id, truth_sibling


def test_scan_id_is_the_name_up_to_the_first_dot():
    assert scan_id(Path("/x/scan_000.hs")) == "scan_000"
    assert scan_id(Path("frame1.s.hdr")) == "frame1"
    assert scan_id(Path("raw")) == "raw"


def test_truth_names():
    assert is_sidecar_name(Path("scan_000.truth.hs"))
    assert is_sidecar_name(Path("scan_000.truth.s"))
    assert is_sidecar_name(Path("scan.raw.truth"))
    assert not is_sidecar_name(Path("scan_000.hs"))
    assert not is_sidecar_name(Path("truthful.hs"))


def test_truth_sibling_found_only_when_it_exists(tmp_path):
    scan = tmp_path / "scan_000.hs"
    scan.write_text("!INTERFILE :=\n")
    assert truth_sibling(scan) is None
    (tmp_path / "scan_000.truth.hs").write_text("!INTERFILE :=\n")
    assert truth_sibling(scan) == tmp_path / "scan_000.truth.hs"
    e7 = tmp_path / "frame1.s.hdr"
    e7.write_text("!INTERFILE :=\n")
    (tmp_path / "frame1.truth.s.hdr").write_text("!INTERFILE :=\n")
    assert truth_sibling(e7) == tmp_path / "frame1.truth.s.hdr"
    raw = tmp_path / "counts.raw"
    raw.write_bytes(b"\0" * 4)
    (tmp_path / "counts.raw.truth").write_bytes(b"\0" * 4)
    assert truth_sibling(raw) == tmp_path / "counts.raw.truth"
