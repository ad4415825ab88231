"""One run per folder: an exclusive ``flock`` on ``<folder>/.lock`` held while a stage works.

The lock belongs to the open file, so the kernel drops it when the process dies however it
dies (SIGKILL included): a killed run never blocks the next. The file itself holds the
holder's ``pid@host`` for the message a second run prints, and is removed on a clean exit. A
run that opened the file just as the previous holder removed it would lock a file nobody else
can see; it checks that the path still names the file it locked, and tries again if not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from badblock.errors import BadInputError
from badblock.utils.atomic import owner_tag

LOCK_NAME = ".lock"


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _acquire(path: Path, what: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise BadInputError(path.parent, f"another {what} is running in this folder "
                                             f"(process {holder}); wait for it to finish or "
                                             "use another folder") from None
        if _same_file(fd, path):
            os.ftruncate(fd, 0)
            os.write(fd, (owner_tag() + "\n").encode())
            return fd
        os.close(fd)  # its owner removed it between our open and our lock: again


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if missing) for the ``with`` block; ``what`` names
    the stage in the refusal. Raises :class:`BadInputError` naming the folder when another
    live process holds it. Yields the lock file's path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(folder, f"cannot create the folder ({exc.strerror})") from None
    path = folder / LOCK_NAME
    fd = _acquire(path, what)
    try:
        yield path
    finally:
        # removed while still held, so that no one can lock the old file after we let go
        with contextlib.suppress(FileNotFoundError):
            if _same_file(fd, path):
                path.unlink()
        os.close(fd)


__all__ = ["run_lock", "LOCK_NAME"]
