"""Pickled torch tensors without torch: storage stand-ins and the legacy ``torch.save`` stream.

The stream's object pickles are read by the unpickler class passed in (``unpickler.py`` owns it;
passing it keeps this module free of an import cycle).
"""

from __future__ import annotations

import functools
import io as _stdio
import math
import os

import numpy as np

from flame_jax.io.errors import _MAX_TENSOR_ELEMENTS, _charge, _charge_array, _fail, _short


class _StorageType:
    """Tag for a ``torch.<Type>Storage`` class named in a pickle (only used as a dtype)."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __setattr__(self, name, value):
        raise AttributeError("read-only")

    def __repr__(self):
        return f"torch.{self.name}"


# numpy dtype (little-endian) of each torch storage class.
_TORCH_STORAGE_DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "<c8",
    "ComplexDoubleStorage": "<c16",
    "UntypedStorage": "u1",
}
_STORAGE_TAGS = {name: _StorageType(name, dt) for name, dt in _TORCH_STORAGE_DTYPES.items()}
_TENSOR_TAG = _StorageType("Tensor", "")


class _TorchStorage:
    """A storage named in a ``torch.save`` pickle (data filled in after the object pickle, or read on
    first use through a loader set by ``fill_later``)."""

    __slots__ = ("key", "dtype", "numel", "data", "root", "offset", "loader")

    def __init__(self, key, dtype, numel, root=None, offset=0):
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "numel", numel)
        object.__setattr__(self, "data", None)
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "loader", None)

    def __setattr__(self, name, value):
        raise AttributeError("read-only")

    def fill(self, data: np.ndarray) -> None:
        object.__setattr__(self, "data", data)

    def fill_later(self, loader) -> None:
        """``loader()`` returns the data when a tensor first needs it (storages no tensor uses are never read)."""
        object.__setattr__(self, "loader", loader)

    def array(self) -> np.ndarray | None:
        """The data if it is there (never reads: inside a pickle, None means "rebuild the tensor later")."""
        if self.root is not None:
            base = self.root.array()
            return None if base is None else base[self.offset : self.offset + self.numel]
        return self.data

    def materialize(self) -> np.ndarray | None:
        """The data, read through the loader on first use."""
        if self.root is not None:
            base = self.root.materialize()
            return None if base is None else base[self.offset : self.offset + self.numel]
        if self.data is None and self.loader is not None:
            loader = self.loader
            object.__setattr__(self, "loader", None)
            self.fill(loader())
        return self.data


class _PendingTensor:
    """A tensor rebuilt inside a torch stream before its storage data was read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "stride", stride)

    def __setattr__(self, name, value):
        raise AttributeError("read-only")


def _np_dtype_of(name: str) -> np.dtype:
    if name == "bfloat16":
        return np.dtype("<u2")  # raw bits; widened to float32 in _load_torch_stream
    return np.dtype(name)


# Legacy torch.save stream constants.
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001


def _storage_dtype(storage: _TorchStorage, little: bool) -> np.dtype:
    """The dtype in which ``storage``'s raw bytes are stored (bfloat16 as raw 16-bit words)."""
    raw_dtype = _np_dtype_of(storage.dtype)
    return raw_dtype.newbyteorder("<" if little else ">") if raw_dtype.itemsize > 1 else raw_dtype


def _native_storage(arr: np.ndarray, dtype_name: str) -> np.ndarray:
    """Raw storage words → the native-order array tensors are viewed from (no copy when already native)."""
    if dtype_name == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _read_raw_at(f, start: int, numel: int, raw_dtype: np.dtype, source: str, what: str) -> np.ndarray:
    """``numel`` items of ``raw_dtype`` at byte ``start`` of the open file ``f``, read straight into
    their array (charged to the budget first; a short read is an error)."""
    nbytes = numel * raw_dtype.itemsize
    _charge(source, nbytes, what)
    arr = np.empty(numel, raw_dtype)
    f.seek(start)
    if f.readinto(arr.view(np.uint8)) != nbytes:
        raise _fail(source, f"truncated {what}")
    return arr


def _load_torch_stream(data, source: str, depth: int, unpickler: type, *, lazy: bool = False):
    """Decodes a legacy (non-zip) ``torch.save`` stream without torch.

    ``data`` is the stream's bytes or a binary file positioned at its start (a file is read one
    storage at a time, so the load holds each storage once, plus the tensors copied out of it).
    ``lazy`` (a real file only, kept open until the tensors are rebuilt): each storage's place is
    checked and recorded, and its data read only when a tensor needs it.

    Layout: pickled magic number, pickled protocol version, pickled system-info dict,
    the object pickle (storages as persistent ids
    ``('storage', <torch.XStorage>, key, location, numel[, view])``), a pickled list
    of storage keys, then for each key an int64 element count and the raw data. ``unpickler``
    reads the pickles (the restricted unpickler class).
    """
    f = data if hasattr(data, "read") else _stdio.BytesIO(data)

    def plain():
        return unpickler(f, source, depth=depth).load()

    start = f.tell()
    head = f.read(2)
    f.seek(start)
    if head == b"PK":
        raise _fail(source, "pickled torch storage in the zip format where a legacy torch.save stream was expected")
    magic = plain()
    if magic != _TORCH_MAGIC:
        raise _fail(source, "pickled torch storage without the torch.save magic number")
    version = plain()
    if version != _TORCH_PROTOCOL:
        raise _fail(source, f"unsupported torch.save protocol version {_short(version)}")
    sys_info = plain()
    little = True
    if isinstance(sys_info, dict):
        little = bool(sys_info.get("little_endian", True))
    storages: dict[str, _TorchStorage] = {}
    obj = unpickler(f, source, storages=storages, depth=depth).load()
    keys = plain()
    if not isinstance(keys, (list, tuple)):
        raise _fail(source, "torch stream without a storage key list")
    order = "<" if little else ">"
    for key in keys:
        storage = storages.get(str(key))
        if storage is None or storage.root is not None:
            raise _fail(source, f"torch stream holds data for unknown storage {_short(key)}")
        head = f.read(8)
        if len(head) != 8:
            raise _fail(source, "torch stream truncated (storage size)")
        count = int(np.frombuffer(head, dtype=order + "i8")[0])
        if count != storage.numel:
            raise _fail(source, f"torch storage {_short(key)} holds {count} elements, expected {storage.numel}")
        raw_dtype = _storage_dtype(storage, little)
        nbytes = count * raw_dtype.itemsize
        if lazy:
            start, size = f.tell(), os.fstat(f.fileno()).st_size
            if start + nbytes > size:
                raise _fail(source, f"torch stream truncated (storage {_short(key)} needs {nbytes} bytes, has "
                            f"{max(size - start, 0)})")
            f.seek(start + nbytes)
            storage.fill_later(functools.partial(_lazy_storage, f, start, storage, raw_dtype, source))
            continue
        _charge(source, nbytes, f"torch storage {_short(key)}")
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise _fail(source, f"torch stream truncated (storage {_short(key)} needs {nbytes} bytes, has {len(raw)})")
        storage.fill(_native_storage(np.frombuffer(raw, dtype=raw_dtype), storage.dtype))
    return obj  # the caller rebuilds arrays and tensors (``unpickler._finish``)


def _lazy_storage(f, start: int, storage: _TorchStorage, raw_dtype: np.dtype, source: str) -> np.ndarray:
    raw = _read_raw_at(f, start, storage.numel, raw_dtype, source, f"torch storage {_short(storage.key)}")
    return _native_storage(raw, storage.dtype)


def _tensor_array(t: _PendingTensor, source: str) -> np.ndarray:
    """The numpy array of a tensor view (bounds-checked, copied)."""
    data = t.storage.materialize()
    if data is None:
        raise _fail(source, f"torch storage {_short(t.storage.key)} has no data in the stream")
    size, stride, offset = t.size, t.stride, t.offset
    if len(size) != len(stride):
        raise _fail(source, f"torch tensor size {size} and stride {stride} differ in length")
    if any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise _fail(source, f"torch tensor with negative size/stride/offset {size} {stride} {offset}")
    count = math.prod(size)
    if count == 0:
        return np.zeros(size, data.dtype)
    if count > _MAX_TENSOR_ELEMENTS:  # stride-0 views could otherwise expand a tiny storage enormously
        raise _fail(source, f"torch tensor of {count} elements is larger than any landmark or model array")
    # Charged before the copy: a view (stride 0 included) costs its full size once materialized.
    _charge_array(source, size, data.dtype.itemsize, "a torch tensor")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= data.shape[0]:
        raise _fail(source, f"torch tensor reaches element {last} of a storage of {data.shape[0]}")
    base = np.ascontiguousarray(data[offset : last + 1])
    item = base.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(base, shape=size, strides=[s * item for s in stride], writeable=False)
    return np.array(view, copy=True, order="C")


