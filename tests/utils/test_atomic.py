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


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_orphans_of_dead_runs_go_live_ones_stay(tmp_path):
    import socket
    import subprocess
    import sys

    from badblock.utils.atomic import clean_orphans

    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            f".checkpoint_latest.pt.{dead}@{host}.ab12_x9q.tmp": "dead",
            f".checkpoint_latest.pt.{live.pid}@{host}.zz99_k1m.tmp": "live",
            f".store.{dead}@{host}.q1w2e3r4.partial": "dead",
            f".scan.hs.{dead}@other-host.q1w2e3r4.tmp": "other host",
            f".scan.hs.{dead}@{host}.q1w2e3r4.tmp": "dead",
            ".notours.tmp": "not ours",
            "checkpoint_latest.pt": "final",
        }
        for name, what in names.items():
            if name.endswith(".partial"):
                (tmp_path / name).mkdir()
                (tmp_path / name / "x").write_text(what)
            else:
                (tmp_path / name).write_text(what)
        # an old store whose replacement was killed before it came: it goes back
        (tmp_path / f".kept.old.{dead}@{host}").mkdir()
        (tmp_path / f".kept.old.{dead}@{host}" / "manifest.json").write_text("{}")
        # an old one whose replacement is in place: removed
        (tmp_path / "store").mkdir()
        (tmp_path / f".store.old.{dead}@{host}").mkdir()
        clean_orphans(tmp_path, names=["scan.hs"])
        assert not (tmp_path / f".scan.hs.{dead}@{host}.q1w2e3r4.tmp").exists()
        assert (tmp_path / f".checkpoint_latest.pt.{dead}@{host}.ab12_x9q.tmp").exists()
        clean_orphans(tmp_path)
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {f".checkpoint_latest.pt.{live.pid}@{host}.zz99_k1m.tmp",
                        f".scan.hs.{dead}@other-host.q1w2e3r4.tmp", ".notours.tmp",
                        "checkpoint_latest.pt", "kept", "store"}
        assert (tmp_path / "kept" / "manifest.json").read_text() == "{}"
    finally:
        live.kill()
        live.wait()


def test_temporaries_are_named_after_their_owner(tmp_path):
    from badblock.utils.atomic import owner_tag

    with atomic_path(tmp_path / "x.txt") as tmp:
        assert tmp.name.startswith(f".x.txt.{os.getpid()}@") and tmp.name.endswith(".tmp")
        assert tmp.name.startswith(f".x.txt.{owner_tag()}.")
    with atomic_dir(tmp_path / "d") as tmp:
        assert tmp.name.startswith(f".d.{owner_tag()}.") and tmp.name.endswith(".partial")


def test_disk_full_is_one_error_and_leaves_nothing(small_disk):
    disk = small_disk(64)
    (disk / "keep.txt").write_text("old")
    with pytest.raises(BadInputError, match="No space left on device") as err:
        atomic_write_text(disk / "keep.txt", "x" * (1 << 20))
    assert "keep.txt" in str(err.value) and "\n" not in str(err.value)
    assert sorted(p.name for p in disk.iterdir()) == ["keep.txt"]
    assert (disk / "keep.txt").read_text() == "old"
    with pytest.raises(BadInputError, match="No space left on device"):
        with atomic_dir(disk / "store") as tmp:
            (tmp / "big").write_bytes(b"x" * (1 << 20))
    assert sorted(p.name for p in disk.iterdir()) == ["keep.txt"]


def test_reserve_refuses_what_does_not_fit(small_disk):
    from badblock.utils.atomic import reserve

    disk = small_disk(64)
    with open(disk / "f", "wb") as fh:
        reserve(fh, 32 << 10, disk / "f")
        assert os.fstat(fh.fileno()).st_size == 32 << 10
        with pytest.raises(BadInputError, match="No space left on device"):
            reserve(fh, 1 << 20, disk / "f")


def _fill(folder, names):
    for name in names:
        (folder / name).write_text(name)


@pytest.mark.parametrize("kind", ["tmpfs", "bind"])
def test_a_folder_that_cannot_be_renamed_is_filled_in_place(kind, small_disk, bind_mount):
    """A mount point as the output (a container's /output): renaming it is EBUSY, so the new
    content is moved in file by file; with replace the old content goes, lost+found stays."""
    from badblock.utils.atomic import fixed_folder

    out = small_disk(1024) if kind == "tmpfs" else bind_mount()
    assert fixed_folder(out) and not fixed_folder(out.parent)
    with pytest.raises(OSError) as err:  # what atomic_dir used to do with it
        os.rename(out, out.with_name("elsewhere"))
    assert err.value.errno == 16  # EBUSY
    (out / "lost+found").mkdir()
    with atomic_dir(out, replace=True, last=["manifest.json"]) as tmp:
        assert tmp.parent == out
        _fill(tmp, ["a", "manifest.json"])
        os.mkdir(tmp / "sub")
        _fill(tmp / "sub", ["b"])
    assert sorted(p.name for p in out.iterdir()) == ["a", "lost+found", "manifest.json", "sub"]
    assert (out / "sub" / "b").read_text() == "b" and (out / "a").read_text() == "a"
    with pytest.raises(BadInputError, match="already exists"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):  # a failed build leaves the old content as it was
        with atomic_dir(out, replace=True) as tmp:
            _fill(tmp, ["c"])
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == ["a", "lost+found", "manifest.json", "sub"]
    with atomic_dir(out, replace=True, last=["manifest.json"]) as tmp:
        _fill(tmp, ["c"])
    assert sorted(p.name for p in out.iterdir()) == ["c", "lost+found"]


def test_in_place_orphans_of_a_killed_run_are_removed(bind_mount):
    out = bind_mount()
    from badblock.utils.atomic import _host

    pid = _dead_pid()
    for name in (f".{out.name}.{pid}@{_host()}.x1.partial",
                 f".{out.name}-old.{pid}@{_host()}.x2.partial"):
        (out / name).mkdir()
        _fill(out / name, ["half"])
    other = f".{out.name}.1@otherhost.x3.partial"
    (out / other).mkdir()  # another host's run: whether it lives is unknowable, so it stays
    _fill(out, ["old"])
    with atomic_dir(out, replace=True) as tmp:
        _fill(tmp, ["new"])
    assert sorted(p.name for p in out.iterdir()) == [other, "new"]


def test_a_folder_in_an_immutable_parent_is_filled_in_place(tmp_path):
    """Renaming a folder needs its parent writable; root too is refused under chattr +i."""
    import subprocess

    from badblock.utils.atomic import fixed_folder

    parent = tmp_path / "locked"
    out = parent / "out"
    out.mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(parent)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a file system that has it")
    try:
        assert fixed_folder(out)
        with atomic_dir(out, replace=True) as tmp:
            _fill(tmp, ["a"])
        assert sorted(p.name for p in out.iterdir()) == ["a"]
        assert sorted(p.name for p in parent.iterdir()) == ["out"]
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)


def test_a_failed_write_takes_back_the_folders_it_created(tmp_path):
    """repair -o new/folder with a broken checkpoint left the empty folders behind."""
    from badblock.utils.atomic import atomic_pair

    (tmp_path / "kept").mkdir()
    for write in (lambda p: atomic_path(p / "x.txt"), lambda p: atomic_dir(p / "d"),
                  lambda p: atomic_pair(p / "x.s", p / "x.hs")):
        with pytest.raises(RuntimeError):
            with write(tmp_path / "kept" / "new" / "deeper"):
                raise RuntimeError("the network predicted NaN")
        assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]
    with atomic_path(tmp_path / "a" / "b" / "x.txt") as tmp:
        tmp.write_text("x")
    assert (tmp_path / "a" / "b" / "x.txt").read_text() == "x"
