"""Atomic outputs: a reader sees the old file or the whole new one, never half of one.

Files are written to a temporary sibling and moved into place with ``os.replace`` (atomic on
POSIX within one file system). Folders are built under a hidden temporary sibling and renamed
into place as a whole. A pair of files that only mean something together (a scan's data and
its header) is put in place by :func:`replace_pair`: header out, data in, header in last.

Temporaries are named after their owner, ``.<name>.<pid>@<host>.<random>.tmp`` (folders
``.partial``; a folder being replaced waits as ``.<name>.old.<pid>@<host>``), so that the next
run of a stage can remove what a killed run left (:func:`clean_orphans`) -- only when that
process is dead, never the temporary of a live one. A full disk (ENOSPC, EDQUOT) while writing
becomes one :class:`~badblock.errors.BadInputError` naming the output, temporaries removed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from badblock.errors import BadInputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; outputs should get the permissions a plain open() would give.
_FILE_MODE = 0o666 & ~_current_umask()


def _check_writable_dir(folder: Path) -> list[Path]:
    """Create ``folder`` if needed and check it is writable; returns the folders it created,
    deepest first, for :func:`_remove_created` to take back when the write fails."""
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_created(created)
        raise BadInputError(folder, f"cannot create output folder ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInputError(folder, "output folder is not writable")
    return created


def _remove_created(created: list[Path]) -> None:
    """Remove the folders a failed write created, as long as they are empty."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            return


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def owner_tag() -> str:
    """``<pid>@<host>``: who owns a temporary (see :func:`clean_orphans`)."""
    return f"{os.getpid()}@{_host()}"


_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[A-Za-z0-9_]+"
                   r"\.(?:tmp|partial)$")
_OLD = re.compile(r"^\.(?P<name>.+)\.old\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)$")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the file system is full (or the user's quota is used up)."""
    return isinstance(exc, OSError) and exc.errno in DISK_FULL


def disk_full_error(path: str | os.PathLike, exc: OSError | None = None) -> BadInputError:
    """The one-line error for a full disk while writing ``path``."""
    path = Path(path)
    try:
        free = f"{shutil.disk_usage(path.parent if not path.is_dir() else path).free} bytes free"
    except OSError:
        free = "free space unknown"
    why = os.strerror(exc.errno) if exc is not None and exc.errno else "No space left on device"
    return BadInputError(path, f"cannot be written: {why} ({free} there); nothing was written "
                               "(temporary files removed): free some space or choose another "
                               "output")


def _temp_file(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".tmp",
                               dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was; a full
    disk raises :class:`BadInputError` naming ``path`` (see :func:`disk_full_error`).
    """
    path = Path(path)
    created = _check_writable_dir(path.parent)
    try:
        tmp = _temp_file(path)
    except OSError as exc:
        _remove_created(created)
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        _remove_created(created)
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise


@contextlib.contextmanager
def atomic_pair(data: str | os.PathLike, header: str | os.PathLike
                ) -> Iterator[tuple[Path, Path]]:
    """Yield temporary paths ``(data, header)`` next to the two outputs; when the block ends
    cleanly put them in place with :func:`replace_pair`, else remove them (a full disk: one
    :class:`BadInputError` naming the data file)."""
    data, header = Path(data), Path(header)
    created = [p for folder in dict.fromkeys([data.parent, header.parent])
               for p in _check_writable_dir(folder)]
    made: list[Path] = []
    try:
        made.append(_temp_file(data))
        made.append(_temp_file(header))
        yield made[0], made[1]
        replace_pair(made[0], data, made[1], header)
    except BaseException as exc:
        for tmp in made:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _remove_created(created)
        if is_disk_full(exc):
            raise disk_full_error(data, exc) from None
        raise


def replace_pair(tmp_data: Path, data: Path, tmp_header: Path, header: Path) -> None:
    """Move a complete data file and its header over ``data`` and ``header``, so that a kill
    at any moment never leaves a header beside data it does not describe.

    Order: the old header is removed first (from then on the old data alone are no scan), the
    new data moved in, the new header moved in last. Killed in between, the folder holds the
    data (old or new) without a header -- no readable scan -- and the temporaries, which the
    next run removes (:func:`clean_orphans`); a header is only ever visible over its own data.
    """
    if header.exists() or header.is_symlink():
        header.unlink()
    os.replace(tmp_data, data)
    os.replace(tmp_header, header)
    _fsync_dir(header.parent)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file's bytes to disk (before a rename publishes it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def reserve(fh, nbytes: int, path: str | os.PathLike) -> None:
    """Allocate ``nbytes`` of the open file ``fh`` on disk now (``posix_fallocate``).

    A memory map over unallocated space dies with SIGBUS when the disk fills up while it is
    written; reserved first, a full disk is one :class:`BadInputError` naming ``path`` before
    anything is written. File systems without fallocate get the file extended instead.
    """
    if nbytes <= 0:
        return
    try:
        os.posix_fallocate(fh.fileno(), 0, int(nbytes))
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fh.fileno(), int(nbytes))


def _owner_dead(pid: int, host: str) -> bool:
    """Whether the process ``pid`` on ``host`` is gone (unknowable on another host: False)."""
    if host != _host():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, somebody else's
        return False
    return False


def clean_orphans(folder: str | os.PathLike, names: Iterable[str] | None = None) -> list[Path]:
    """Remove the temporaries of dead runs in ``folder``; returns what was removed.

    Only files named by this module (``.<name>.<pid>@<host>.<random>.tmp`` / ``.partial``,
    ``.<name>.old.<pid>@<host>``) whose ``<name>`` is in ``names`` (default: any), and only
    when process ``<pid>`` on this host is dead. A folder left as ``.<name>.old.*`` by a
    replacement killed before the new one was in place goes back to ``<name>`` when nothing
    holds that name (it was complete: the user keeps it); otherwise it is removed.
    """
    folder = Path(folder)
    wanted = None if names is None else set(names)
    removed: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name) or _OLD.match(entry.name)
        if m is None or (wanted is not None and m["name"] not in wanted):
            continue
        if not _owner_dead(int(m["pid"]), m["host"]):
            continue
        target = folder / m["name"]
        if m.re is _OLD and not target.exists():
            os.replace(entry, target)  # the old store was whole; its replacement never came
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_save_npy(path: str | os.PathLike, array) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


# Entries of a mount point that belong to the file system, not to the output.
_FS_ENTRIES = frozenset({"lost+found"})
# What a rename of a folder raises when the folder cannot move (mount point, other device,
# a sticky parent owned by someone else, a parent we may not write).
_CANNOT_MOVE = (errno.EBUSY, errno.EXDEV, errno.EPERM, errno.EACCES, errno.EROFS)


def _mount_points() -> set[str]:
    """Mount points of this process (``/proc/self/mountinfo``; a bind mount of a folder of the
    same file system is one though ``os.path.ismount`` cannot tell)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return set()
    unescape = re.compile(r"\\([0-7]{3})")
    return {unescape.sub(lambda m: chr(int(m[1], 8)), line.split()[4])
            for line in lines if len(line.split()) > 4}


def fixed_folder(path: str | os.PathLike) -> bool:
    """Whether the existing folder ``path`` cannot be renamed: a mount point (a container's
    bind-mounted ``/output``), on another device than its parent, or in a parent this process
    may not change (not writable, or sticky and the folder someone else's)."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    real = path.resolve()
    if os.path.ismount(real) or str(real) in _mount_points():
        return True
    st, st_parent = os.stat(real), os.stat(real.parent)
    if st.st_dev != st_parent.st_dev or not os.access(real.parent, os.W_OK | os.X_OK):
        return True
    return bool(st_parent.st_mode & 0o1000) and os.geteuid() not in (0, st.st_uid)


def _move_entries(src: Path, dst: Path, names: Iterable[str], last: Iterable[str] = (),
                  first: Iterable[str] = ()) -> None:
    """``os.replace`` each of ``names`` from ``src`` into ``dst``: those in ``first`` first,
    those in ``last`` last."""
    early, late = set(first), set(last)
    for name in sorted(names, key=lambda n: (n not in early, n in late, n)):
        os.replace(src / name, dst / name)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = False,
               last: Iterable[str] = ()) -> Iterator[Path]:
    """Build a folder under a temporary name and rename it to ``path`` when complete.

    If ``path`` exists and ``replace`` is False, :class:`BadInputError` is raised before any
    work starts. With ``replace`` the old folder is swapped out only after the new one is whole.
    A full disk raises :class:`BadInputError` naming ``path``, the temporary folder removed.
    Temporaries a dead run left for ``path`` are removed first (:func:`clean_orphans`).

    A folder that cannot be renamed (:func:`fixed_folder`: a mount point, say) is filled in
    place instead: the new content is built in a hidden temporary folder inside ``path`` and
    its entries are moved in one by one (each an atomic rename), the names in ``last`` (the
    file that says the output is complete, e.g. a manifest) last; with ``replace`` the old
    entries (``last`` first) are moved aside beforehand and removed after. A run killed
    during those renames leaves ``path`` without its ``last`` file (no complete output) and
    temporaries the next run removes. ``lost+found`` and other runs' temporaries are left
    alone.
    """
    path = Path(path)
    inside = fixed_folder(path)
    home = path if inside else path.parent
    clean_orphans(home, [path.name, f"{path.name}-old"])
    if path.exists() and not replace:
        raise BadInputError(path, "already exists (refusing to overwrite)")
    created = _check_writable_dir(home)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{owner_tag()}.", suffix=".partial",
                                    dir=home))
    except OSError as exc:
        _remove_created(created)
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise
    os.chmod(tmp, 0o777 & ~_current_umask())
    old: Path | None = None
    try:
        yield tmp
        if inside:
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}-old.{owner_tag()}.",
                                        suffix=".partial", dir=path))
            # other runs' temporaries stay theirs (dead runs' were removed above)
            keep = [p.name for p in path.iterdir() if p.name not in _FS_ENTRIES
                    and not (_TEMP.match(p.name) or _OLD.match(p.name))]
            _move_entries(path, old, keep, first=last)
            _move_entries(tmp, path, [p.name for p in tmp.iterdir()], last)
            tmp.rmdir()
            _fsync_dir(path)
        elif path.exists():
            old = path.with_name(f".{path.name}.old.{owner_tag()}")
            os.replace(path, old)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        if old is not None and old.exists():  # put back what the failed swap moved aside
            with contextlib.suppress(OSError):
                if inside:
                    _move_entries(old, path, [p.name for p in old.iterdir()
                                              if not (path / p.name).exists()], last)
                    old.rmdir()
                elif not path.exists():
                    os.replace(old, path)
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        if isinstance(exc, OSError) and exc.errno in _CANNOT_MOVE:
            raise BadInputError(path, f"cannot be put in place ({os.strerror(exc.errno)}): "
                                      "choose a folder inside it as the output") from None
        raise
