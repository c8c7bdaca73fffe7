"""PyTorch checkpoints without torch: the zip format (torch >= 1.6) and the legacy stream, read safely.

``load_torch_checkpoint(path)`` returns the saved object with every tensor as a numpy array. Nothing
from the file is executed: pickles go through the restricted unpickler (an allow-list of names;
storages are dtype tokens; only ``'storage'`` persistent ids), each tensor's offset / size / stride is
checked against its storage before a view is made, and every allocation is charged to the load's
memory budget first (a storage once, plus the tensors copied out of it: about twice the file; storages
are read only when a tensor needs them, so ``select`` can leave most of a large file unread).

Zip layout: ``<stem>/data.pkl`` (the object; storages as persistent ids
``('storage', <torch.XStorage>, key, location, numel)``), ``<stem>/data/<key>`` (raw storage bytes,
stored uncompressed), ``<stem>/byteorder`` (``little`` / ``big``; absent in older files: little) and
small metadata entries, which are not read.

Training checkpoints (PyTorch Lightning, yacs / omegaconf configurations) hold objects that are not
tensors: with ``extras=True`` classes of the modules in ``EXTRA_MODULES`` become inert placeholders
(recorded, never called) so that the tensors beside them can be read; any other name is still refused.
"""

from __future__ import annotations

import io as _stdio
import os
import struct
import zipfile
import zlib
from typing import Any, Callable

import numpy as np

from flame_jax.io.errors import UnsafeModelFileError, _charge, _fail, _named_errors, _short, _Source
from flame_jax.io.torch_stream import _load_torch_stream, _native_storage, _read_raw_at, _storage_dtype
from flame_jax.io.unpickler import _Captured, _finish, _make_class, _RestrictedUnpickler

__all__ = ["EXTRA_MODULES", "Placeholder", "load_torch_checkpoint"]

#: Top-level modules whose classes a training checkpoint may name next to its weights (trainer
#: callbacks, hyper-parameter containers); with ``extras=True`` they load as inert ``Placeholder``s.
EXTRA_MODULES = ("pytorch_lightning", "lightning", "lightning_fabric", "omegaconf", "yacs", "typing", "pathlib")

_ZIP_MAGIC = b"PK\x03\x04"
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # the zip local file header (30 bytes)
_MAX_PICKLE_BYTES = 2**30


class Placeholder(_Captured):
    """An object of a class from ``EXTRA_MODULES``: its arguments and state recorded, nothing run."""

    __slots__ = ()
    _label = "placeholder"


class _StrictUnpickler(_RestrictedUnpickler):
    """The restricted unpickler; a class of ``EXTRA_MODULES`` is refused with a hint to ``extras=True``."""

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except UnsafeModelFileError as e:
            if module.split(".")[0] in EXTRA_MODULES:
                raise UnsafeModelFileError(
                    f"{e}; '{module}.{name}' belongs to a training checkpoint's extras (trainer callbacks, "
                    "hyper-parameters): load with extras=True to read them as inert placeholders"
                ) from None
            raise


class _ExtrasUnpickler(_RestrictedUnpickler):
    """The restricted unpickler, with classes of ``EXTRA_MODULES`` mapped to inert placeholders."""

    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except UnsafeModelFileError:
            if module.split(".")[0] not in EXTRA_MODULES or not name.isidentifier():
                raise
        # One placeholder class per name and load, so that a class named twice is the same key.
        cache = self.__dict__.setdefault("_placeholders", {})
        full = f"{module}.{name}"
        if full not in cache:
            cache[full] = _make_class(Placeholder, name, _label=full)
        return cache[full]


def load_torch_checkpoint(
    path, *, max_bytes: int | None = None, extras: bool = False, select: Callable[[Any], Any] | None = None
) -> Any:
    """The object saved by ``torch.save`` at ``path``, tensors as numpy arrays (torch is not needed).

    Args:
      path: a zip-format (torch >= 1.6) or legacy-format file.
      max_bytes: memory budget of the load (default: ``$FLAME_JAX_MAX_LOAD_BYTES``, else 2 GiB).
      extras: map classes of ``EXTRA_MODULES`` (trainer state, configurations) to ``Placeholder``s
        instead of refusing the file.
      select: applied to the unpickled object before any storage is read (its tensors are still
        pending: navigate dicts and lists only); only the storages of the tensors in what it returns
        are read. E.g. ``lambda obj: obj["state_dict"]``.

    Raises:
      UnsafeModelFileError: the file names a class or function outside the allow-list (nothing ran).
      FileTooLargeError: the file asks for more memory than the budget.
      ValueError: a malformed, truncated or inconsistent file (the message names it).
    """
    source = _Source(os.fspath(path), max_bytes)
    unpickler = _ExtrasUnpickler if extras else _StrictUnpickler
    with open(source, "rb") as f, _named_errors(source, "torch checkpoint"):
        head = f.read(len(_ZIP_MAGIC))
        f.seek(0)
        if head == _ZIP_MAGIC:
            obj = _load_zip(f, source, unpickler)
        elif head[:1] == b"\x80":
            obj = _load_torch_stream(f, source, 0, unpickler, lazy=True)
        else:
            raise _fail(source, "not a PyTorch checkpoint (neither the zip format nor a legacy torch.save stream)")
        if select is not None:
            obj = select(obj)
        return _finish(obj, source)  # reads the storages the tensors need, while the file is open


def _load_zip(f, source: str, unpickler: type):
    """Unpickles ``<stem>/data.pkl`` of the zip-format file ``f``, then fills the storages it names."""
    try:
        zf = zipfile.ZipFile(f)
    except zipfile.BadZipFile as e:
        raise _fail(source, f"unreadable zip-format torch checkpoint ({e})") from None
    with zf:
        entries = {info.filename: info for info in zf.infolist()}
        pickles = [name for name in entries if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise _fail(source, f"a zip-format torch checkpoint holds one <stem>/data.pkl, found {len(pickles)}")
        stem = pickles[0][: -len("data.pkl")]
        little = _byteorder(zf, entries.get(stem + "byteorder"), source)
        data_pkl = _read_small(zf, entries[pickles[0]], source)
        storages: dict = {}
        obj = unpickler(_stdio.BytesIO(data_pkl), source, storages=storages).load()
        for key, storage in storages.items():
            if storage.root is not None:
                raise _fail(source, f"storage view {_short(key)} in a zip-format checkpoint")
            info = entries.get(f"{stem}data/{key}")
            if info is None:
                raise _fail(source, f"the checkpoint names storage {_short(key)} but holds no {stem}data/{key}")
            storage.fill_later(_storage_loader(f, info, storage, little, source))
    return obj


def _byteorder(zf: zipfile.ZipFile, info, source: str) -> bool:
    """True when the storages are little-endian (``byteorder`` entry; absent: little)."""
    if info is None:
        return True
    order = _read_small(zf, info, source).strip()
    if order not in (b"little", b"big"):
        raise _fail(source, f"unknown byteorder {_short(order)} in the checkpoint")
    return order == b"little"


def _read_small(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> bytes:
    """A metadata entry or the pickle, read with its declared size charged first (never more)."""
    if info.file_size > _MAX_PICKLE_BYTES:
        raise _fail(source, f"{info.filename} declares {info.file_size} bytes")
    _charge(source, info.file_size, info.filename)
    try:
        with zf.open(info) as member:
            data = member.read(info.file_size + 1)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as e:
        raise _fail(source, f"unreadable entry {info.filename} ({type(e).__name__}: {e})") from None
    if len(data) != info.file_size:
        raise _fail(source, f"{info.filename} holds {len(data)} bytes, its header says {info.file_size}")
    return data


def _storage_loader(f, info: zipfile.ZipInfo, storage, little: bool, source: str):
    """Checks where one storage lies in the file; returns the function that reads it into its array
    (CRC checked) when a tensor first needs it."""
    dtype = _storage_dtype(storage, little)
    nbytes = storage.numel * dtype.itemsize
    name = info.filename
    if info.compress_type != zipfile.ZIP_STORED:
        raise _fail(source, f"storage {name} is compressed; torch stores storages uncompressed")
    if info.file_size != nbytes:
        raise _fail(source, f"storage {name} holds {info.file_size} bytes, {storage.numel} × {dtype} need {nbytes}")
    f.seek(info.header_offset)
    header = f.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != _ZIP_MAGIC:
        raise _fail(source, f"truncated or malformed zip header of storage {name}")
    name_len, extra_len = _LOCAL_HEADER.unpack(header)[-2:]
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    size = os.fstat(f.fileno()).st_size
    if start + nbytes > size:
        raise _fail(source, f"truncated storage {name}: needs bytes [{start}, {start + nbytes}) of a {size}-byte file")

    def load() -> np.ndarray:
        arr = _read_raw_at(f, start, storage.numel, dtype, source, f"torch storage {name}")
        if zlib.crc32(arr.view(np.uint8)) != info.CRC:
            raise _fail(source, f"storage {name} does not match its CRC-32 (corrupted file)")
        return _native_storage(arr, storage.dtype)

    return load
