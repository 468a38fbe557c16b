"""One writer per data directory: an exclusive ``flock`` on ``<dir>/writer.lock``.

The lock belongs to the open file, so the kernel drops it when the holder's
process ends in any way (exit, crash, SIGKILL): a directory is never left
locked by a dead process. The holder writes its pid into the file so the
error another process gets names who holds it.

``flock`` locks conflict between two opens in the *same* process too, so a
second store on one directory in one process is refused the same way.
The descriptor is not inherited across ``exec``; a child made by a bare
``fork`` shares the lock until it exits.
"""

from __future__ import annotations

import fcntl
import os
import time

from sagaloop.errors import StorageError, StoreLockedError

__all__ = ["DirectoryLock", "LOCK_FILE"]

LOCK_FILE = "writer.lock"


class DirectoryLock:
    """Exclusive, non-blocking writer lock on a directory (created if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(path)
        self.path = os.path.join(self.directory, LOCK_FILE)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise ``StoreLockedError`` naming the holder's pid."""
        if self._fd is not None:
            return
        try:
            os.makedirs(self.directory, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open the lock file {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_holder(fd)
            os.close(fd)
            holder = f"process {pid}" if pid is not None else "another process"
            raise StoreLockedError(
                f"the data directory {self.directory} is held for writing by {holder}",
                pid=pid) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {self.path}: {exc}") from exc
        try:
            data = str(os.getpid()).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError as exc:
            os.close(fd)  # closing drops the flock
            raise StorageError(f"cannot write the lock file {self.path}: {exc}") from exc
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent). The file stays; its content is stale until the next holder."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> int | None:
    # The holder writes its pid right after taking the lock; give it a moment
    # if we looked in between.
    for attempt in range(20):
        try:
            raw = os.pread(fd, 32, 0).strip()
        except OSError:
            return None
        if raw:
            try:
                return int(raw)
            except ValueError:
                return None
        time.sleep(0.0025)
    return None
