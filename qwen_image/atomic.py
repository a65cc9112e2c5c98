"""Atomic file writes: a temporary file beside the target, fsynced, then renamed onto it (never half a file)."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | os.PathLike, suffix: str = ""):
    """Yield a binary file to write; when the block ends without error it replaces ``path`` in one step.

    The temporary file is named ``.tmp-*`` in the target's folder (what crash recovery sweeps) and removed on failure.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:  # e.g. the folder went read-only meanwhile: crash recovery sweeps ``.tmp-*`` files
            pass
        raise


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a file so that ``dst`` is either absent or complete."""
    with atomic_write(dst, Path(dst).suffix) as f, open(src, "rb") as s:
        shutil.copyfileobj(s, f)
