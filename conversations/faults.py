"""Storage faults in plain words: a full disk, a read-only data folder, a database locked by another program.

The store turns the operating system's and SQLite's errors for these into ``StorageError``, a message for the user
(what happened and what to do), raised only after everything half-written has been removed. Any other error passes
through unchanged.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from qwen_image.generation import ValidationError

REASONS = {
    "full": "the disk that holds the data folder is full (free some space, then try again)",
    "read-only": "the data folder is read-only (make it writable again, then try again)",
    "locked": "the history database is locked by another program, such as a backup (try again in a moment)",
    "io": "the data folder could not be written (a disk error: is it full, read-only or gone?)",
}
_ERRNOS = {
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
    errno.EFBIG: "full",
    errno.EROFS: "read-only",
    errno.EACCES: "read-only",
    errno.EPERM: "read-only",
    errno.EIO: "io",
}
_SQLITE = {  # primary result codes (the low byte of an extended one)
    sqlite3.SQLITE_FULL: "full",
    sqlite3.SQLITE_READONLY: "read-only",
    sqlite3.SQLITE_CANTOPEN: "read-only",
    sqlite3.SQLITE_BUSY: "locked",
    sqlite3.SQLITE_LOCKED: "locked",
    sqlite3.SQLITE_IOERR: "io",
}


class StorageError(ValidationError):
    """Nothing was saved because of the data folder, not the request; ``kind``: full, read-only, locked or io."""

    def __init__(self, kind: str, prefix: str = "Nothing was saved: "):
        self.kind, self.reason = kind, REASONS[kind]
        super().__init__(prefix + self.reason + ".")


def fault_kind(exc: BaseException) -> str | None:
    """Which storage fault an exception is (None when it is none of them)."""
    if isinstance(exc, StorageError):
        return exc.kind
    if isinstance(exc, sqlite3.OperationalError):
        code = getattr(exc, "sqlite_errorcode", None)
        return _SQLITE.get(code & 0xFF) if isinstance(code, int) else None
    if isinstance(exc, OSError):
        return _ERRNOS.get(exc.errno)
    return None


@contextmanager
def storage_faults() -> Iterator[None]:
    """Inside: a storage fault becomes a StorageError (from the original, which stays in the log's traceback)."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, sqlite3.OperationalError) as exc:
        kind = fault_kind(exc)
        if kind is None:
            raise
        raise StorageError(kind) from exc
