"""Safe file access: path checks, format sniffing, ``.npy``/``.npz``/pickle reading through the
restricted unpickler, and atomic ``.npz`` writing.
"""

from __future__ import annotations

import errno
import io
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from flame_jax.atomic import atomic_write
from flame_jax.io.errors import UnsafeModelFileError, _charge, _charge_array, _FileError, _fail, _short
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


def _read_bytes(f, source: str, what: str) -> bytes:
    """The rest of the open file ``f``, charged to the budget before it is read."""
    size = os.fstat(f.fileno()).st_size - f.tell()
    _charge(source, size, what)
    return f.read(size)


def _unpickle_file(path: Path, source: str | None = None):
    source = str(path) if source is None else source
    with open(path, "rb") as f:
        # In memory: the C unpickler allocates a counted string's declared size before reading it
        # from a file, but reads only what is there from a BytesIO (after the opcode pre-scan).
        data = _read_bytes(f, source, "the pickle")
    return _unpickle_stream(io.BytesIO(data), source)


def _npy_header(f, source: str, what: str):
    """Reads a ``.npy`` magic and header from ``f``: ``(shape, fortran_order, dtype)``."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(f)
        raise ValueError(f"unsupported .npy format version {version}")
    except Exception as e:
        raise _fail(source, f"not a valid {what} ({e})") from None


def _declared_nbytes(shape, dtype: np.dtype, source: str) -> int:
    if any(int(n) < 0 for n in shape):
        raise _fail(source, f"negative array shape {shape}")
    return math.prod(int(n) for n in shape) * dtype.itemsize


def _read_npy(path: Path, source: str | None = None):
    """Reads a ``.npy`` file; an object array's pickled payload goes through the restricted unpickler.

    A numeric array's declared size must be present in the file and within the budget before
    anything is allocated.
    """
    source = str(path) if source is None else source
    with open(path, "rb") as f:
        shape, fortran, dtype = _npy_header(f, source, ".npy file")
        if not dtype.hasobject:
            nbytes = _declared_nbytes(shape, dtype, source)
            held = os.fstat(f.fileno()).st_size - f.tell()
            if held < nbytes:
                raise _fail(source, f"the header declares {shape} {dtype} ({nbytes} bytes), the file holds {held}")
            _charge_array(source, shape, dtype.itemsize, "the array")
            try:
                return _array_from_stream(f, shape, fortran, dtype, nbytes)
            except Exception as e:
                raise _fail(source, f"cannot read the array ({type(e).__name__}: {e})") from None
        obj = _unpickle_stream(io.BytesIO(_read_bytes(f, source, "the pickled payload")), source)
    if not isinstance(obj, np.ndarray) or obj.shape != tuple(shape):
        raise _fail(source, f".npy payload is not an array of the declared shape {shape}")
    return obj


def _array_from_stream(f, shape, fortran: bool, dtype: np.dtype, nbytes: int) -> np.ndarray:
    """Reads exactly ``nbytes`` (already checked against the budget) into an array."""
    buf = bytearray(nbytes)
    view, got = memoryview(buf), 0
    while got < nbytes:
        n = f.readinto(view[got : got + (1 << 24)])
        if not n:
            raise ValueError(f"truncated array data ({got} of {nbytes} bytes)")
        got += n
    arr = np.frombuffer(buf, dtype=dtype)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


def _read_npz(path: Path, source: str | None = None) -> dict[str, np.ndarray]:
    """Reads an ``.npz`` archive of numeric ``.npy`` members (``allow_pickle=False`` semantics).

    Each member's declared decompressed size is charged before it is opened, its ``.npy`` header
    must match that size, and no more than that is inflated (a lying zip header ends in an error).
    """
    source = str(path) if source is None else source
    try:
        with zipfile.ZipFile(path) as zf:
            return dict(_npz_member(zf, info, source) for info in zf.infolist())
    except (UnsafeModelFileError, _FileError):
        raise
    except Exception as e:  # BadZipFile (bad CRC after a lying header), truncation, ...
        raise _fail(source, f"not a readable .npz archive ({type(e).__name__}: {e})") from None


def _npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> tuple[str, np.ndarray]:
    name = info.filename
    what = f"member {_short(name)}"
    _charge(source, info.file_size, f"{what} (decompressed)")
    with zf.open(info) as m:
        shape, fortran, dtype = _npy_header(m, source, f".npy {what}")
        if dtype.hasobject:
            raise _fail(source, f"{what} is an object array; .npz archives are read without pickles")
        nbytes = _declared_nbytes(shape, dtype, source)
        if m.tell() + nbytes != info.file_size:
            raise _fail(
                source, f"{what}: the header declares {shape} {dtype} ({nbytes} bytes), the zip entry {info.file_size}"
            )
        arr = _array_from_stream(m, shape, fortran, dtype, nbytes)
        if m.read(1):
            raise _fail(source, f"{what} holds more data than it declares")
    return (name[:-4] if name.endswith(".npy") else name), arr


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
