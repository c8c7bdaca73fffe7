"""Safe file access: path checks, format sniffing, ``.npy``/``.npz``/pickle reading through the
restricted unpickler, and atomic ``.npz`` writing.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np

from flame_jax.atomic import atomic_write
from flame_jax.io.errors import UnsafeModelFileError, _FileError, _fail, _short
from flame_jax.io.unpickler import _RestrictedUnpickler, _finish


# =============================================================================
# Reading files
# =============================================================================


def _check_path(path) -> Path:
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(p))
    if p.is_dir():
        raise _fail(str(p), "is a directory, not a file")
    return p


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(6)
    if not head:
        raise _fail(str(path), "the file is empty")
    if head.startswith(b"PK"):
        return "npz"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    return "pickle"


def _unpickle_stream(f, source: str):
    try:
        obj = _RestrictedUnpickler(f, source).load()
        return _finish(obj, source)
    except (UnsafeModelFileError, _FileError):
        raise
    except Exception as e:  # UnpicklingError, EOFError, TypeError, MemoryError, RecursionError, ...
        detail = str(e) if len(str(e)) <= 200 else str(e)[:197] + "..."
        raise _fail(source, f"not a readable pickle of FLAME data ({type(e).__name__}: {detail})") from None


def _unpickle_file(path: Path):
    with open(path, "rb") as f:
        return _unpickle_stream(f, str(path))


def _read_npy(path: Path):
    """Reads a ``.npy`` file; an object array's pickled payload goes through the restricted unpickler."""
    source = str(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except Exception as e:
            raise _fail(source, f"not a valid .npy file ({e})") from None
        if not dtype.hasobject:
            try:
                f.seek(0)
                return np.load(f, allow_pickle=False)
            except Exception as e:
                raise _fail(source, f"cannot read the array ({type(e).__name__}: {e})") from None
        obj = _unpickle_stream(f, source)
    if not isinstance(obj, np.ndarray) or obj.shape != tuple(shape):
        raise _fail(source, f".npy payload is not an array of the declared shape {shape}")
    return obj


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    source = str(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile, object arrays (allow_pickle=False), truncation, ...
        raise _fail(source, f"not a readable .npz archive ({type(e).__name__}: {e})") from None


def _unwrap_container(obj, source: str):
    """A 0-d object array (np.save of a dict) -> the dict."""
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj[()]
    return obj


def _text(value) -> str:
    a = np.asarray(value)
    if a.shape != () or a.dtype.kind not in "US":
        raise ValueError("not a string")
    v = a[()]
    return v.decode("latin1") if isinstance(v, bytes) else str(v)


def _check_format(z: dict, expected: str, source: str) -> None:
    """Raises unless ``z["format"]`` is the string ``expected`` (this project's format markers)."""
    try:
        fmt = _text(z["format"])
    except ValueError:
        raise _fail(source, "the 'format' marker is not a string") from None
    if fmt != expected:
        raise _fail(source, f"unsupported format {_short(fmt)} (expected {expected!r})")


def _atomic_savez(path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to exactly ``path`` (no ``.npz`` appended), atomically (``flame_jax.atomic``)."""
    atomic_write(os.fspath(path), lambda f: np.savez(f, **arrays))
