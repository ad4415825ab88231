"""The preprocess stage: inputs -> store, streaming, idempotence, bad input.

Real files everywhere: flat raw files, Interfile scans written by badblock.io, the STIR sample
in tests/fixtures (stored view-major), .npy volumes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash

from badblock.config import load_config
from badblock.data.preprocess import Source, preprocess, stream_source
from badblock.data.store import MANIFEST, Store
from badblock.errors import BadInputError
from badblock.io import read_scan, write_scan

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (3, 5, 4, 6)


def counts(seed, shape=SHAPE, lam=2.0):
    a = np.random.default_rng(seed).poisson(lam, shape).astype(np.uint16)
    a[0, 1] = 0  # an empty plane in every scan
    return a


def raw_scans(folder: Path, n=3, truth=True) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = []
    for i in range(n):
        a = counts(i)
        a.tofile(folder / f"s{i}.s")
        if truth:
            (a.astype(np.float32) + 0.25).tofile(folder / f"s{i}.truth.s")
        arrays.append(a)
    return arrays


def config(tmp_path, inputs, *sets, out="out"):
    cfg = load_config(None, list(sets), env={})
    cfg.preprocess.inputs = [str(p) for p in inputs]
    cfg.run.output = str(tmp_path / out)
    return cfg


SHAPE_SET = "preprocess.shape=[3,5,4,6]"


def test_raw_folder_to_store_with_truth_stats_checksums_and_split(tmp_path):
    arrays = raw_scans(tmp_path / "raw")
    cfg = config(tmp_path, [tmp_path / "raw"], SHAPE_SET, "preprocess.val_fraction=0.34")
    result = preprocess(cfg)
    assert result.status == "built" and result.n_scans == 3
    store = Store.open(tmp_path / "out" / "store")
    assert [s.id for s in store.scans] == ["s0", "s1", "s2"]
    assert store.tof_order == "siemens"  # TOF data from a headerless Siemens-style file
    for s, a in zip(store.scans, arrays):
        assert s.data.dtype == np.uint16
        np.testing.assert_array_equal(s.data, a)
        np.testing.assert_array_equal(s.truth, a.astype(np.float32) + 0.25)
        np.testing.assert_array_equal(s.plane_max, a.max(axis=(2, 3)))
        np.testing.assert_array_equal(s.plane_sum, a.sum(axis=(2, 3)))
        assert not s.nonempty[0, 1] and s.nonempty.sum() == 3 * 5 - 1
        src = s.entry["data"]["source"]
        digest = xxhash.xxh3_128((tmp_path / "raw" / f"{s.id}.s").read_bytes()).hexdigest()
        assert src["checksum"] == f"xxh3_128:{digest}" and src["size"] == a.nbytes
        assert s.entry["data"]["in_place"]  # the default: raw files referenced, not copied
        assert src["mtime_ns"] == (tmp_path / "raw" / f"{s.id}.s").stat().st_mtime_ns
    # Split by whole scan: one validation scan, chosen by the seed alone.
    assert len(store.split("val")) == 1 and len(store.split("train")) == 2
    m = store.manifest
    assert m["split"]["seed"] == 0 and m["package_version"]
    assert m["config"]["preprocess"]["shape"] == [3, 5, 4, 6]
    assert (tmp_path / "out" / "store" / "config.resolved.yaml").exists()
    other = preprocess(config(tmp_path, [tmp_path / "raw"], SHAPE_SET,
                              "preprocess.val_fraction=0.34", out="out2"))
    assert other.val == result.val  # deterministic
    chosen = preprocess(config(tmp_path, [tmp_path / "raw"], SHAPE_SET,
                               "preprocess.val_scans=[s0, s2]", out="out3"))
    assert chosen.val == ["s0", "s2"] and chosen.train == ["s1"]


def test_reference_mode_maps_the_raw_files_in_place(tmp_path):
    arrays = raw_scans(tmp_path / "raw", n=2, truth=False)
    cfg = config(tmp_path, [tmp_path / "raw" / "*.s"], SHAPE_SET, "preprocess.copy=false")
    preprocess(cfg)
    path = tmp_path / "out" / "store"
    store = Store.open(path)
    assert list((path / "scans").iterdir()) == [] and store.manifest["storage"] == "reference"
    for s, a in zip(store.scans, arrays):
        assert s.entry["data"]["in_place"]
        assert Path(s.entry["data"]["file"]) == (tmp_path / "raw" / f"{s.id}.s").resolve()
        np.testing.assert_array_equal(s.data, a)
    # Touched (new modification time), same bytes: refused on open until preprocess re-checks
    # the checksum and records the new time.
    raw0 = tmp_path / "raw" / "s0.s"
    os.utime(raw0, ns=(raw0.stat().st_atime_ns, raw0.stat().st_mtime_ns + 10**9))
    with pytest.raises(BadInputError, match="modified since preprocess"):
        Store.open(path)
    unchecked = Store.open(path, check_sources=False)
    with pytest.raises(BadInputError, match="modified since preprocess"):
        unchecked.scans[0].data  # noqa: B018  (mapping an array checks its file again)
    assert preprocess(cfg).status == "up-to-date"
    np.testing.assert_array_equal(Store.open(path).scans[0].data, arrays[0])
    # Same size, other counts, time kept as it was: only the checksum can tell (preprocess).
    mtime = raw0.stat().st_mtime_ns
    counts(99).tofile(raw0)
    os.utime(raw0, ns=(mtime, mtime))
    assert Store.open(path).scans[0].data is not None
    os.utime(raw0, ns=(mtime, mtime + 1))
    with pytest.raises(BadInputError, match="--force"):
        preprocess(cfg)
    raw0.write_bytes(b"\0" * 10)  # the raw file shrinks under the store
    with pytest.raises(BadInputError, match="s0.s"):
        Store.open(path)
    with pytest.raises(BadInputError):
        Store.open(path, check_sources=False).scans[0].data  # noqa: B018
    raw0.unlink()
    with pytest.raises(BadInputError, match="missing"):
        Store.open(path)


def test_copy_mode_makes_a_self_contained_store(tmp_path):
    arrays = raw_scans(tmp_path / "raw", n=2, truth=False)
    preprocess(config(tmp_path, [tmp_path / "raw" / "*.s"], SHAPE_SET, "preprocess.copy=true"))
    path = tmp_path / "out" / "store"
    assert Store.open(path).manifest["storage"] == "copy"
    shutil.rmtree(tmp_path / "raw")  # the copy no longer needs the raw files
    store = Store.open(path)
    for s, a in zip(store.scans, arrays):
        assert not s.entry["data"]["in_place"] and s.entry["data"]["file"] == f"scans/{s.id}.npy"
        np.testing.assert_array_equal(np.load(path / "scans" / f"{s.id}.npy"), a)
        np.testing.assert_array_equal(s.data, a)
        np.testing.assert_array_equal(s.plane_sum, a.sum(axis=(2, 3)))


def test_interfile_headers_truth_sibling_and_view_major_fixture(tmp_path, test_data):
    a = counts(7)
    write_scan(tmp_path / "sim" / "scan_000.hs", a)
    write_scan(tmp_path / "sim" / "scan_000.truth.hs", a.astype(np.float32))
    preprocess(config(tmp_path, [tmp_path / "sim" / "*"]))  # headers kept, data files dropped
    store = Store.open(tmp_path / "out" / "store")
    assert [x.id for x in store.scans] == ["scan_000"]
    s = store.scans[0]
    np.testing.assert_array_equal(s.data, np.asarray(read_scan(tmp_path / "sim/scan_000.hs").data))
    assert s.truth is not None and s.truth.dtype == np.float32
    # STIR's own sample is stored view-major: the store holds it as [TOF, plane, view, bin].
    stir = tmp_path / "stir"
    stir.mkdir()
    for name in ("stir_smalllong.hs", "stir_smalllong.s"):
        shutil.copy(test_data / name, stir / name)
    preprocess(config(tmp_path, [stir / "stir_smalllong.hs"], out="out_stir"))
    st = Store.open(tmp_path / "out_stir" / "store")
    ref = np.asarray(read_scan(stir / "stir_smalllong.hs").data)
    np.testing.assert_array_equal(st.scans[0].data, ref)
    assert st.scans[0].data.shape == (1, 27, 64, 75)
    assert st.segments[0].n_planes == 27
    np.testing.assert_allclose(st.scans[0].plane_sum, ref.sum(axis=(2, 3), dtype=np.float64))


def test_image_and_paired_kinds(tmp_path):
    vol = np.random.default_rng(1).random((4, 8, 8)).astype(np.float32)
    np.save(tmp_path / "vol.npy", vol)
    preprocess(config(tmp_path, [tmp_path / "vol.npy"], "preprocess.kind=image"))
    store = Store.open(tmp_path / "out" / "store")
    assert store.kind == "image" and store.scans[0].data.shape == (1, 4, 8, 8)
    np.testing.assert_array_equal(store.scans[0].data[0], vol)
    vol.tofile(tmp_path / "vol.raw")  # a headerless volume with its shape
    preprocess(config(tmp_path, [tmp_path / "vol.raw"], "preprocess.kind=image",
                      "preprocess.shape=[4,8,8]", "preprocess.dtype=float32", out="o2"))
    np.testing.assert_array_equal(Store.open(tmp_path / "o2" / "store").scans[0].data[0], vol)
    low, full = tmp_path / "low", tmp_path / "full"
    low.mkdir()
    full.mkdir()
    for i in range(2):
        np.save(low / f"p{i}.npy", counts(i, lam=1.0))
        np.save(full / f"p{i}.npy", counts(i, lam=8.0))
    cfg = config(tmp_path, [low / "*.npy"], "preprocess.kind=paired", out="o3")
    cfg.preprocess.targets = [str(full / "*.npy")]
    preprocess(cfg)
    paired = Store.open(tmp_path / "o3" / "store")
    assert paired.kind == "paired"
    np.testing.assert_array_equal(paired.scan("p1").target, counts(1, lam=8.0))


def test_rerun_is_idempotent_and_changes_need_force(tmp_path):
    raw_scans(tmp_path / "raw", n=2)
    cfg = config(tmp_path, [tmp_path / "raw"], SHAPE_SET)
    assert preprocess(cfg).status == "built"
    manifest = tmp_path / "out" / "store" / MANIFEST
    before = manifest.stat().st_mtime_ns, manifest.read_text()
    assert preprocess(cfg).status == "up-to-date"
    assert (manifest.stat().st_mtime_ns, manifest.read_text()) == before  # not even rewritten
    raw0 = tmp_path / "raw" / "s0.s"
    os.utime(raw0, ns=(raw0.stat().st_atime_ns, raw0.stat().st_mtime_ns + 10**9))
    assert preprocess(cfg).status == "up-to-date"  # touched, same bytes: re-hashed, kept
    after = manifest.read_text()
    assert after.replace(str(raw0.stat().st_mtime_ns), "T") != after  # new time recorded
    before = manifest.stat().st_mtime_ns, after
    counts(99).tofile(tmp_path / "raw" / "s0.s")  # same size, other counts
    with pytest.raises(BadInputError, match="--force"):
        preprocess(cfg)
    assert manifest.read_text() == before[1]
    assert preprocess(cfg, force=True).status == "replaced"
    np.testing.assert_array_equal(Store.open(tmp_path / "out" / "store").scan("s0").data,
                                  counts(99))
    other = config(tmp_path, [tmp_path / "raw"], SHAPE_SET, "preprocess.val_fraction=0.5")
    with pytest.raises(BadInputError, match="other inputs or settings"):
        preprocess(other)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["store"]  # no temp folders left


def test_stream_reads_in_chunks_whatever_the_chunk_size(tmp_path):
    a = counts(3, shape=(2, 9, 4, 6))
    a.tofile(tmp_path / "x.s")
    src = Source(tmp_path / "x.s", tmp_path / "x.s", 0, np.dtype("<u2"), a.shape, "flat")
    ref, digest, size = stream_source(src, None, chunk_bytes=1 << 20)
    small, digest2, _ = stream_source(src, tmp_path / "x.npy", chunk_bytes=4 * 6 * 2 * 2)
    assert digest == digest2 == "xxh3_128:" + xxhash.xxh3_128(a.tobytes()).hexdigest()
    assert size == a.nbytes
    np.testing.assert_array_equal(small.plane_sum, ref.plane_sum)
    np.testing.assert_array_equal(small.plane_max, a.max(axis=(2, 3)).ravel())
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), a)


def test_stream_mapped_and_read_agree_across_windows_header_and_trailer(tmp_path, monkeypatch):
    """Memory-mapped windows (shrunk here to 4 KiB, so planes straddle them and the data start
    is not page aligned) and the plain-read fallback see the same bytes; bytes before and
    after the data count in the checksum, only the data in the statistics."""
    import badblock.data.stream as stream

    monkeypatch.setattr(stream, "MAP_BYTES", 4096)
    a = counts(5, shape=(2, 40, 8, 10))
    head, tail = b"H" * 1000, b"T" * 5000
    (tmp_path / "x.s").write_bytes(head + a.tobytes() + tail)
    src = Source(tmp_path / "x.s", tmp_path / "x.s", len(head), np.dtype("<u2"), a.shape, "flat")
    want = "xxh3_128:" + xxhash.xxh3_128(head + a.tobytes() + tail).hexdigest()
    results = [stream_source(src, tmp_path / f"x{m}.npy", chunk_bytes=3 * 8 * 10 * 2,
                             use_mmap=m) for m in (True, False)]
    for stats, digest, size in results:
        assert digest == want and size == len(head) + a.nbytes + len(tail)
        np.testing.assert_array_equal(stats.plane_sum, a.sum(axis=(2, 3)).ravel())
        np.testing.assert_array_equal(stats.plane_max, a.max(axis=(2, 3)).ravel())
        assert stats.empty_planes() == [[0, 1]]
    for m in (True, False):
        np.testing.assert_array_equal(np.load(tmp_path / f"x{m}.npy"), a)
    _, sha, _ = stream_source(src, None, algorithm="sha256")
    assert sha == "sha256:" + hashlib.sha256(head + a.tobytes() + tail).hexdigest()


PEAK = """
import sys
from badblock.config import load_config
from badblock.data.preprocess import preprocess
from badblock.utils.memory import peak_rss_mb
cfg = load_config(None, ["preprocess.shape=[" + sys.argv[2] + "]"], env={})
cfg.preprocess.inputs = [sys.argv[1]]
cfg.run.output = sys.argv[3]
preprocess(cfg)
print(peak_rss_mb())
"""


def test_peak_memory_does_not_grow_with_input_size(tmp_path):
    peaks = []
    for n_planes in (8, 400):  # 1.6 MB and 80 MB of counts
        shape = (1, n_planes, 100, 1000)
        path = tmp_path / f"scan{n_planes}.s"
        with open(path, "wb") as fh:  # written plane block by block: this test stays small too
            for _ in range(n_planes // 8):
                fh.write(np.full((8, 100, 1000), 3, np.uint16).tobytes())
        out = subprocess.run([sys.executable, "-c", PEAK, str(path), ",".join(map(str, shape)),
                              str(tmp_path / f"out{n_planes}")], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120, check=True)
        peaks.append(float(out.stdout.strip().splitlines()[-1]))
        path.unlink()
        shutil.rmtree(tmp_path / f"out{n_planes}")
    # A whole-file read (or a fully touched memmap) would add the 78 MB difference.
    print("peak RSS (MiB) for 1.6 MB and 80 MB inputs:", peaks)
    assert peaks[1] - peaks[0] < 25, peaks


# -- bad input: one line naming the file, exit 2, nothing left behind ---------------------------


@pytest.mark.parametrize("case", ["mask", "nan", "shapes", "unwritable", "overwrite", "truth"])
def test_bad_input_is_refused_and_leaves_nothing(tmp_path, case):
    raw_scans(tmp_path / "raw", n=2, truth=False)
    sets = [SHAPE_SET]
    inputs = [tmp_path / "raw"]
    out = "out"
    expect = None
    if case == "mask":
        np.save(tmp_path / "mask.npy", np.zeros((5, 4, 7), np.float32))
        sets.append(f"scanner.mask={tmp_path / 'mask.npy'}")
        expect = "mask.npy"
    elif case == "nan":
        f = np.ones(SHAPE, np.float32)
        f[2, 4, 3, 5] = np.nan
        f.tofile(tmp_path / "raw" / "s1.s")
        sets.append("preprocess.dtype=float32")
        (tmp_path / "raw" / "s0.s").unlink()
        np.ones(SHAPE, np.float32).tofile(tmp_path / "raw" / "s0.s")
        expect = "s1.s"
    elif case == "shapes":
        inputs = [tmp_path / "a.npy", tmp_path / "b.npy"]
        np.save(inputs[0], counts(0))
        np.save(inputs[1], counts(1, shape=(3, 5, 4, 7)))
        sets = []
        expect = "b.npy"
    elif case == "unwritable":
        (tmp_path / "afile").write_text("not a folder")
        out = "afile/out"
        expect = "afile"
    elif case == "overwrite":
        inputs = [tmp_path / "out" / "store" / "x.npy"]
        inputs[0].parent.mkdir(parents=True)
        np.save(inputs[0], counts(0))
        sets = []
        expect = "overwrite"
    elif case == "truth":
        np.ones((3, 5, 4, 6), np.float64).tofile(tmp_path / "raw" / "s0.truth.s")  # wrong size
        expect = "s0.truth.s"
    cfg = config(tmp_path, inputs, *sets, out=out)
    with pytest.raises(BadInputError) as err:
        preprocess(cfg)
    assert expect in str(err.value)
    if case == "overwrite":
        assert sorted(p.name for p in (tmp_path / "out" / "store").iterdir()) == ["x.npy"]
    else:
        assert not (tmp_path / "out").exists()
        assert not list(tmp_path.glob(".out*")) and not list(tmp_path.glob("out*"))


def _forged_npy(path: Path, shape: str) -> None:
    """A real .npy of 24 float32 whose header claims ``shape`` (written byte by byte here)."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little")
                     + header.encode("latin1") + np.zeros(24, "<f4").tobytes())


@pytest.mark.parametrize("shape, elements", [
    (f"({10**30}, 1, 1, 1)", 10**30),  # was an OverflowError traceback
    (f"({2**40}, {2**40}, 1, 1)", 2**80),  # int64 wrapped to 0 elements: "needs 0 bytes"
])
def test_a_header_claiming_more_than_int64_is_one_line(tmp_path, shape, elements):
    path = tmp_path / "forged.npy"
    _forged_npy(path, shape)
    offset = path.stat().st_size - 96
    with pytest.raises(BadInputError) as err:
        preprocess(config(tmp_path, [path]))
    msg = str(err.value)
    assert "forged.npy" in msg and "\n" not in msg
    assert f"({offset + 4 * elements} bytes)" in msg, msg
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_one_line_and_leaves_no_store(tmp_path, small_disk):
    """--copy into a file system that fills up halfway through the scans: one error naming
    what could not be written, no store, no temporary folder."""
    folder = tmp_path / "raw"
    folder.mkdir()
    shape = (4, 16, 32, 64)  # 256 KiB per uint16 scan; the disk holds about two
    for i in range(4):
        np.random.default_rng(i).poisson(3, shape).astype(np.uint16).tofile(folder / f"s{i}.s")
    disk = small_disk(600)
    cfg = config(tmp_path, [folder], f"preprocess.shape={list(shape)}", "preprocess.copy=true")
    cfg.run.output = str(disk / "out")
    with pytest.raises(BadInputError, match="No space left on device") as err:
        preprocess(cfg)
    assert "\n" not in str(err.value)
    assert list(disk.rglob("*")) == []
