"""Atomic file writes: a temporary file beside the target, fsync, rename, fsync of the folder.

A reader (or a resumed run after a kill -9) sees either the old file or the complete new one,
never a partial file. Temporary files are named ``.<name>.<pid>.<random>.tmp`` so a resumed run
can recognise and remove the leftovers of a killed writer (``neuface_jax.dataset`` does).

It lives in ``flame_jax`` (the bottom layer) so that the FLAME file writers and ``neuface_jax``
share it; ``neuface_jax.common.atomic`` re-exports it.
"""

from __future__ import annotations

import os
import pathlib
import uuid
from typing import Callable, IO

__all__ = ["TMP_SUFFIX", "atomic_write", "atomic_write_text", "fsync_dir"]

TMP_SUFFIX = ".tmp"


def fsync_dir(folder) -> None:
    """Makes a rename inside ``folder`` durable (best effort: not every filesystem allows it)."""
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


def atomic_write(path, write: Callable[[IO[bytes]], None]) -> pathlib.Path:
    """Calls ``write(binary file)`` on a temporary file, then fsyncs it and renames it to ``path``.

    The folder is created if needed; the file gets the default permissions (umask), unlike
    ``tempfile.mkstemp``'s 0600. On any error the temporary file is removed and the error raised.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path, text: str) -> pathlib.Path:
    """``atomic_write`` of UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data))
