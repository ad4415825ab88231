"""Atomic outputs: the old file or the whole new one, no temporary left, folders swapped whole."""

from __future__ import annotations

import os

import numpy as np
import pytest

from badblock.errors import BadInputError
from badblock.utils.atomic import (
    atomic_dir,
    atomic_path,
    atomic_save_npy,
    atomic_write_json,
    atomic_write_text,
)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_files_get_the_permissions_of_a_plain_open(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": [1, 2]})
    (tmp_path / "plain").write_text("x")
    assert os.stat(tmp_path / "a.json").st_mode == os.stat(tmp_path / "plain").st_mode
    assert (tmp_path / "a.json").read_text() == '{\n  "x": [\n    1,\n    2\n  ]\n}\n'


def test_npy_round_trip_and_no_pickles(tmp_path):
    atomic_save_npy(tmp_path / "a.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.load(tmp_path / "a.npy").tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError):
        atomic_save_npy(tmp_path / "b.npy", np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "b.npy").exists() and len(list(tmp_path.iterdir())) == 1


def test_atomic_dir_refuses_replaces_whole_and_cleans_up(tmp_path):
    out = tmp_path / "store"
    with atomic_dir(out) as tmp:
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(BadInputError, match="already exists"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, replace=True) as tmp:
            (tmp / "b").write_text("2")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_unwritable_folder_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(BadInputError, match="not writable"):
            atomic_write_text(ro / "x.txt", "x")
    finally:
        ro.chmod(0o700)
