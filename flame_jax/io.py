"""Reading and writing FLAME model files and landmark embeddings.

Model files (``load_model``):

* official FLAME 2020 ``generic_model.pkl`` (and the male/female variants),
  FLAME 2023 ``flame2023.pkl`` / ``flame2023_no_jaw.pkl`` and FLAME 2023 Open
  ``flame2023_Open.pkl``: Python pickles of a dict whose arrays may be chumpy
  objects and whose joint regressor is a SciPy sparse matrix;
* this project's own ``.npz`` (written by ``save_model``).

Landmark embeddings (``load_landmark_embedding``):

* DECA ``landmark_embedding.npy`` (its dynamic contour table is pickled *torch*
  tensors; they are decoded here without torch);
* RingNet/smplx ``flame_static_embedding.pkl`` (+ ``flame_dynamic_embedding.npy``
  beside it);
* MediaPipe ``mediapipe_landmark_embedding.npz``;
* this project's own ``.npz`` (written by ``save_landmark_embedding``).

Safety: a pickle can run arbitrary code while it is read. Every pickle (``.pkl``
files and the pickled payload of object ``.npy`` files) is read by a restricted
unpickler whose ``find_class`` resolves only an allow-list of names -- numpy's array
reconstruction, SciPy sparse matrices, chumpy classes (mapped to inert stubs that
keep their stored array) and the handful of torch names a pickled CPU tensor uses
(mapped to a decoder written here). Any other global -- ``os.system``,
``builtins.eval``, ... -- raises :class:`UnsafeModelFileError` before anything named
in the file is called. ``.npz`` files are always read with ``allow_pickle=False``.
"""

from __future__ import annotations

import collections
import errno
import io as _stdio
import math
import operator
import os
import pickle
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flame_jax.landmarks import NUM_CONTOUR, NUM_CONTOUR_ROWS, LandmarkEmbedding
from flame_jax.model import FLAME_NUM_SHAPE_FILE, FlameModel

__all__ = [
    "EMBEDDING_FORMAT",
    "MODEL_FORMAT",
    "UnsafeModelFileError",
    "load_landmark_embedding",
    "load_model",
    "save_landmark_embedding",
    "save_model",
]

#: Format marker stored in (and required of) this project's model ``.npz`` files.
MODEL_FORMAT = "flame_jax-model-v1"
#: Format marker stored in (and required of) this project's landmark ``.npz`` files.
EMBEDDING_FORMAT = "flame_jax-landmarks-v1"

_MODEL_KEYS = ("v_template", "shapedirs", "exprdirs", "posedirs", "weights", "J_regressor", "f", "parents")
_FLAME_PKL_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
_DECA_KEYS = ("static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords")
_RINGNET_STATIC = "flame_static_embedding.pkl"
_RINGNET_DYNAMIC = "flame_dynamic_embedding.npy"

# Nested chumpy objects and torch streams are resolved recursively; this bounds the depth.
_MAX_DEPTH = 64
# Largest pickled torch tensor accepted (elements); FLAME's largest array has ~6e6.
_MAX_TENSOR_ELEMENTS = 2**28


class UnsafeModelFileError(ValueError):
    """A pickled file references a callable or class outside the loader's allow-list.

    Raised before anything the file names is called: nothing from the file runs.
    """


class _FileError(ValueError):
    """A ValueError whose message already names the file (re-raised unchanged)."""


def _fail(source: str, msg: str) -> _FileError:
    return _FileError(f"{source}: {msg}")


def _short(x) -> str:
    """A bounded repr for error messages (file contents can be arbitrarily large)."""
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."


# =============================================================================
# Inert stand-ins for objects named in a pickle
# =============================================================================


class _Frozen(type):
    """Metaclass of the stub classes: a pickle cannot set attributes on them (BUILD)."""

    def __setattr__(cls, name, value):
        raise AttributeError(f"{cls.__name__} is read-only")

    def __delattr__(cls, name):
        raise AttributeError(f"{cls.__name__} is read-only")


class _Captured(metaclass=_Frozen):
    """An instance of a pickled class, recorded but never executed.

    Pickle creates it with ``cls.__new__(cls, *args)`` (NEWOBJ), ``cls(*args)``
    (REDUCE) or ``copyreg._reconstructor``; ``__setstate__`` (BUILD) records the state.
    """

    __slots__ = ("_args", "_state")
    _label = "<object>"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        object.__setattr__(self, "_args", args)
        object.__setattr__(self, "_state", None)
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        object.__setattr__(self, "_state", state)

    def __setattr__(self, name, value):
        raise AttributeError(f"{self._label} stub is read-only")

    def state_dict(self) -> dict:
        """The recorded state as a dict (pickle may pass (dict, slotstate))."""
        state = self._state
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            merged = dict(state[0] or {})
            if isinstance(state[1], dict):
                merged.update(state[1])
            return merged
        return state if isinstance(state, dict) else {}

    def __repr__(self):
        return f"<{self._label} stub>"


class _ChumpyObject(_Captured):
    """Any ``chumpy.*`` object; evaluated later from its stored array (see ``_chumpy_value``)."""

    __slots__ = ()
    _label = "chumpy"


class _SparseObject(_Captured):
    """A pickled SciPy sparse matrix; rebuilt (and validated) by ``_sparse_value``."""

    __slots__ = ()
    _label = "scipy.sparse"
    _format = "csc"


class _ArrayObject(_Captured):
    """A pickled ndarray (``_reconstruct`` + BUILD state); rebuilt by ``_array_value``.

    numpy's own ``ndarray``/``dtype`` are never handed to a pickle: ``ndarray(shape,
    object_dtype, buffer)`` forges object pointers (a crash, or worse), and dtype
    state can describe arbitrary layouts. Arrays are rebuilt here from a plain
    numeric dtype and a byte string, or from a list for object arrays.
    """

    __slots__ = ()
    _label = "numpy.ndarray"


class _DtypeObject(_Captured):
    """A pickled ``numpy.dtype(descr, align, copy)`` + BUILD state; see ``_dtype_value``."""

    __slots__ = ()
    _label = "numpy.dtype"


class _Tag:
    """A non-callable stand-in for a class that a pickle may only name, never call."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)

    def __setattr__(self, name, value):
        raise AttributeError("read-only")

    def __repr__(self):
        return f"<{self.name}>"


_NDARRAY_TAG = _Tag("numpy.ndarray")


def _make_class(base: type, name: str, **attrs) -> type:
    return _Frozen(name, (base,), {"__slots__": (), **attrs})


_SPARSE_CLASSES = {
    fmt: _make_class(_SparseObject, f"{fmt}_stub", _format=fmt, _label=f"scipy.sparse.{fmt}")
    for fmt in ("csc", "csr", "coo")
}


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
    """A storage read from a legacy ``torch.save`` stream (data filled in after the object pickle)."""

    __slots__ = ("key", "dtype", "numel", "data", "root", "offset")

    def __init__(self, key, dtype, numel, root=None, offset=0):
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "numel", numel)
        object.__setattr__(self, "data", None)
        object.__setattr__(self, "root", root)
        object.__setattr__(self, "offset", offset)

    def __setattr__(self, name, value):
        raise AttributeError("read-only")

    def fill(self, data: np.ndarray) -> None:
        object.__setattr__(self, "data", data)

    def array(self) -> np.ndarray | None:
        if self.root is not None:
            base = self.root.array()
            return None if base is None else base[self.offset : self.offset + self.numel]
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


class _Function:
    """A callable handed to the unpickler; attribute assignment (BUILD) is refused."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Callable, name: str):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_name", name)

    def __call__(self, *args):
        return self._fn(*args)

    def __setattr__(self, name, value):
        raise AttributeError(f"{self._name} is read-only")

    def __repr__(self):
        return f"<allowed {self._name}>"


# =============================================================================
# Restricted unpickler
# =============================================================================

# Python 2 module names (protocol <= 2 pickles) -> Python 3.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _as_int(x, what: str) -> int:
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{what} must be an integer, got {_short(x)}")
    return operator.index(x)


def _as_int_tuple(x, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)):
        raise TypeError(f"{what} must be a tuple of integers, got {type(x).__name__}")
    return tuple(_as_int(v, what) for v in x)


def _np_dtype_of(name: str) -> np.dtype:
    if name == "bfloat16":
        return np.dtype("<u2")  # raw bits; widened to float32 in _load_torch_stream
    return np.dtype(name)


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only allow-listed globals.

    Args:
      file: binary file object positioned at the pickle.
      source: file name for error messages.
      storages: when given (inside a legacy ``torch.save`` stream), a dict that
        receives the storages named by persistent ids; otherwise persistent ids are
        refused.
      depth: nesting depth of torch streams (bounded).
    """

    def __init__(self, file, source: str, *, storages: dict | None = None, depth: int = 0):
        super().__init__(file, encoding="latin1")
        self._source = source
        self._storages = storages
        self._depth = depth
        self._chumpy_classes: dict[str, type] = {}
        self._allowed = self._allow_list()

    # ------------------------------------------------------------------ names
    def _allow_list(self) -> dict[str, Any]:
        src = self._source

        def reconstruct(subtype, shape=None, typecode=None):
            # numpy's ndarray.__reduce__: _reconstruct(ndarray, (0,), b'b'), then BUILD(state).
            if subtype is not _NDARRAY_TAG:
                raise UnsafeModelFileError(f"{src}: refusing to load: numpy array reconstruction of {_short(subtype)}")
            return _ArrayObject.__new__(_ArrayObject)

        def scalar(dtype, data=None):
            dt = _dtype_value(dtype, src)
            if dt.hasobject:
                raise _fail(src, "numpy scalar with an object dtype")
            raw = _raw_bytes(data, src)
            if len(raw) != dt.itemsize:
                raise _fail(src, f"numpy scalar of {dt} with {len(raw)} bytes")
            return np.frombuffer(raw, dtype=dt)[0]

        def frombuffer(buf, dtype, shape, order):
            # numpy's pickle protocol 5 path: _frombuffer(buffer, dtype, shape, order).
            dt = _dtype_value(dtype, src)
            if dt.hasobject:
                raise _fail(src, "numpy buffer with an object dtype")
            shape = _as_int_tuple(shape, "shape") if isinstance(shape, (tuple, list)) else (_as_int(shape, "shape"),)
            return _array_from_bytes(_raw_bytes(buf, src), dt, shape, order == "F", src)

        def reconstructor(cls, base, state):
            # copyreg._reconstructor(cls, base, state): protocol 0/1 pickles of plain objects.
            if base is not object or state is not None or not (isinstance(cls, type) and issubclass(cls, _Captured)):
                raise UnsafeModelFileError(
                    f"{src}: refusing to load: copyreg._reconstructor called with {_short(cls)}, {_short(base)}; "
                    "only chumpy and scipy.sparse objects may be rebuilt this way"
                )
            return cls.__new__(cls)

        def codecs_encode(text, encoding="utf-8", *rest):
            # How Python 3 writes bytes at pickle protocol <= 2: _codecs.encode(str, 'latin1').
            if rest or str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
                raise UnsafeModelFileError(f"{src}: refusing to load: _codecs.encode with encoding {_short(encoding)}")
            if not isinstance(text, str):
                raise _fail(src, "_codecs.encode of a non-string")
            return text.encode("latin1")

        def inert_set(items=()):
            # Python 2 sets (e.g. in chumpy's bookkeeping state): kept as a tuple, never hashed.
            return tuple(items)

        table: dict[str, Any] = {
            "numpy.ndarray": _NDARRAY_TAG,
            "numpy.dtype": _DtypeObject,
            "builtins.object": object,
            "collections.OrderedDict": collections.OrderedDict,
        }
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            table[f"{mod}._reconstruct"] = _Function(reconstruct, f"{mod}._reconstruct")
            table[f"{mod}.scalar"] = _Function(scalar, f"{mod}.scalar")
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            table[f"{mod}._frombuffer"] = _Function(frombuffer, f"{mod}._frombuffer")
        table["copyreg._reconstructor"] = _Function(reconstructor, "copyreg._reconstructor")
        table["_codecs.encode"] = _Function(codecs_encode, "_codecs.encode")
        table["builtins.set"] = _Function(inert_set, "builtins.set")
        table["builtins.frozenset"] = _Function(inert_set, "builtins.frozenset")
        for fmt, cls in _SPARSE_CLASSES.items():
            for kind in ("matrix", "array"):
                for mod in ("scipy.sparse", f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
                    table[f"{mod}.{fmt}_{kind}"] = cls
        # torch: a pickled CPU tensor (see _load_torch_stream).
        table["torch._utils._rebuild_tensor_v2"] = _Function(self._rebuild_tensor_v2, "torch._utils._rebuild_tensor_v2")
        table["torch._utils._rebuild_tensor"] = _Function(self._rebuild_tensor, "torch._utils._rebuild_tensor")
        table["torch._utils._rebuild_parameter"] = _Function(
            lambda data, *rest: data, "torch._utils._rebuild_parameter"
        )
        table["torch._utils._rebuild_parameter_with_state"] = _Function(
            lambda data, *rest: data, "torch._utils._rebuild_parameter_with_state"
        )
        table["torch._tensor._rebuild_from_type_v2"] = _Function(
            self._rebuild_from_type_v2, "torch._tensor._rebuild_from_type_v2"
        )
        table["torch.storage._load_from_bytes"] = _Function(self._load_from_bytes, "torch.storage._load_from_bytes")
        for name, tag in _STORAGE_TAGS.items():
            table[f"torch.{name}"] = tag
        table["torch.storage.UntypedStorage"] = _STORAGE_TAGS["UntypedStorage"]
        table["torch.Tensor"] = _TENSOR_TAG
        table["torch._tensor.Tensor"] = _TENSOR_TAG
        return table

    def find_class(self, module, name):
        module = _PY2_MODULES.get(module, module)
        full = f"{module}.{name}"
        found = self._allowed.get(full)
        if found is not None:
            return found
        if (module == "chumpy" or module.startswith("chumpy.")) and name.isidentifier():
            cls = self._chumpy_classes.get(full)
            if cls is None:
                cls = _make_class(_ChumpyObject, name, _label=full)
                self._chumpy_classes[full] = cls
            return cls
        raise UnsafeModelFileError(
            f"{self._source}: refusing to load: the file references '{full}', which is not on the "
            "allow-list (numpy arrays, scipy.sparse matrices, chumpy arrays, torch CPU tensors); "
            "nothing from the file was executed"
        )

    def persistent_load(self, pid):
        if self._storages is None:
            raise UnsafeModelFileError(
                f"{self._source}: refusing to load: unexpected persistent id {_short(pid)} outside a torch stream"
            )
        return self._storage_from_pid(pid)

    # ------------------------------------------------------------------ torch
    def _storage_from_pid(self, pid):
        src = self._source
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise UnsafeModelFileError(f"{src}: refusing to load: persistent id {_short(pid)} is not a torch storage")
        _, tag, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(tag, _StorageType) or tag is _TENSOR_TAG:
            raise _fail(src, f"torch storage of unknown type {_short(tag)}")
        if not isinstance(key, (str, int)):
            raise _fail(src, f"torch storage key {_short(key)} is not a string")
        key = str(key)
        numel = _as_int(numel, "storage size")
        if numel < 0:
            raise _fail(src, f"torch storage of negative size {numel}")
        root = self._storages.get(key)
        if root is None:
            root = _TorchStorage(key, tag.dtype, numel)
            self._storages[key] = root
        if view is None:
            return root
        # Old torch: (view_key, offset, view_size) -- a view into the root storage.
        if not (isinstance(view, tuple) and len(view) == 3):
            raise _fail(src, f"malformed torch storage view {_short(view)}")
        view_key, offset, size = str(view[0]), _as_int(view[1], "view offset"), _as_int(view[2], "view size")
        if offset < 0 or size < 0 or offset + size > numel:
            raise _fail(src, f"torch storage view [{offset}, {offset + size}) outside a storage of {numel} elements")
        cached = self._storages.get(view_key)
        if cached is None:
            cached = _TorchStorage(view_key, tag.dtype, size, root=root, offset=offset)
            self._storages[view_key] = cached
        return cached

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, *rest):
        # rest: requires_grad, backward_hooks[, metadata] -- irrelevant for host arrays.
        return self._rebuild_tensor(storage, storage_offset, size, stride)

    def _rebuild_tensor(self, storage, storage_offset, size, stride):
        if not isinstance(storage, _TorchStorage):
            raise _fail(self._source, f"torch tensor rebuilt from {type(storage).__name__}, not a storage")
        offset = _as_int(storage_offset, "storage offset")
        size = _as_int_tuple(size, "tensor size")
        stride = _as_int_tuple(stride, "tensor stride")
        pending = _PendingTensor(storage, offset, size, stride)
        if storage.array() is None:
            return pending  # data follows later in the stream
        return _tensor_array(pending, self._source)

    def _rebuild_from_type_v2(self, func, new_type, args, state):
        if not isinstance(func, _Function) or new_type is not _TENSOR_TAG or not isinstance(args, tuple):
            raise UnsafeModelFileError(f"{self._source}: refusing to load: unexpected tensor subclass rebuild")
        return func(*args)

    def _load_from_bytes(self, data):
        if isinstance(data, str):
            data = data.encode("latin1")
        if not isinstance(data, (bytes, bytearray)):
            raise _fail(self._source, "torch.storage._load_from_bytes without a bytes argument")
        if self._depth >= 4:
            raise _fail(self._source, "torch streams nested too deeply")
        return _load_torch_stream(bytes(data), self._source, self._depth + 1)


# Legacy torch.save stream constants.
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001


def _load_torch_stream(data: bytes, source: str, depth: int):
    """Decodes a legacy (non-zip) ``torch.save`` stream without torch.

    Layout: pickled magic number, pickled protocol version, pickled system-info dict,
    the object pickle (storages as persistent ids
    ``('storage', <torch.XStorage>, key, location, numel[, view])``), a pickled list
    of storage keys, then for each key an int64 element count and the raw data.
    """
    f = _stdio.BytesIO(data)

    def plain():
        return _RestrictedUnpickler(f, source, depth=depth).load()

    if data[:2] == b"PK":
        raise _fail(source, "pickled torch storage in the zip format; only the legacy stream is supported")
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
    obj = _RestrictedUnpickler(f, source, storages=storages, depth=depth).load()
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
        raw_dtype = _np_dtype_of(storage.dtype)
        if raw_dtype.itemsize > 1:
            raw_dtype = raw_dtype.newbyteorder(order)
        nbytes = count * raw_dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise _fail(source, f"torch stream truncated (storage {_short(key)} needs {nbytes} bytes, has {len(raw)})")
        arr = np.frombuffer(raw, dtype=raw_dtype)
        if storage.dtype == "bfloat16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        else:
            arr = arr.astype(raw_dtype.newbyteorder("="))
        storage.fill(arr)
    return _finish(obj, source)


def _tensor_array(t: _PendingTensor, source: str) -> np.ndarray:
    """The numpy array of a tensor view (bounds-checked, copied)."""
    data = t.storage.array()
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
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= data.shape[0]:
        raise _fail(source, f"torch tensor reaches element {last} of a storage of {data.shape[0]}")
    base = np.ascontiguousarray(data[offset : last + 1])
    item = base.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(base, shape=size, strides=[s * item for s in stride], writeable=False)
    return np.array(view, copy=True)


def _finish(obj, source: str, memo: dict | None = None, depth: int = 0):
    """Rebuilds what the unpickler left as stand-ins: arrays (``_ArrayObject``) and
    tensors whose data followed in their stream (``_PendingTensor``), throughout
    dicts, lists, tuples and the recorded state of chumpy/sparse stubs."""
    if memo is None:
        memo = {}
    key = id(obj)
    if key in memo:
        return memo[key][1]
    if depth > _MAX_DEPTH:
        raise _fail(source, "data nested too deeply")
    if isinstance(obj, dict):
        memo[key] = (obj, obj)
        for k in list(obj):
            obj[k] = _finish(obj[k], source, memo, depth + 1)
        return obj
    if isinstance(obj, list):
        memo[key] = (obj, obj)
        obj[:] = [_finish(v, source, memo, depth + 1) for v in obj]
        return obj
    if isinstance(obj, _ArrayObject):
        result = _array_value(obj, source, memo, depth)
    elif isinstance(obj, _PendingTensor):
        result = _tensor_array(obj, source)
    elif isinstance(obj, tuple):
        result = tuple(_finish(v, source, memo, depth + 1) for v in obj)
    elif isinstance(obj, (_ChumpyObject, _SparseObject)):
        memo[key] = (obj, obj)
        object.__setattr__(obj, "_state", _finish(obj._state, source, memo, depth + 1))
        object.__setattr__(obj, "_args", _finish(obj._args, source, memo, depth + 1))
        return obj
    else:
        result = obj
    memo[key] = (obj, result)  # keeps obj alive so its id is not reused during the walk
    return result


# Plain dtypes a pickle may describe: bool, integers, floats, complex, bytes, unicode, object.
_DTYPE_KINDS = set("biufcSUO?")


def _dtype_value(obj, source: str) -> np.dtype:
    """A numpy dtype from a pickled ``numpy.dtype(descr, align, copy)`` + state; structured,
    sub-array, void and datetime dtypes are refused."""
    if not isinstance(obj, _DtypeObject):
        raise _fail(source, f"expected a numpy dtype, got {_short(obj)}")
    args = obj._args
    descr = args[0] if args else None
    if isinstance(descr, bytes):
        descr = descr.decode("latin1")
    plain = isinstance(descr, str) and descr and descr[0] in _DTYPE_KINDS
    if not plain or (descr[1:] and not descr[1:].isdigit()):
        raise _fail(source, f"unsupported numpy dtype {_short(descr)} in the pickle")
    state = obj._state
    byteorder = "|"
    if state is not None:
        if not isinstance(state, tuple) or len(state) < 2:
            raise _fail(source, f"malformed numpy dtype state {_short(state)}")
        byteorder = state[1]
        if isinstance(byteorder, bytes):
            byteorder = byteorder.decode("latin1")
        if byteorder not in ("<", ">", "|", "="):
            raise _fail(source, f"malformed numpy dtype byte order {_short(byteorder)}")
        if any(x is not None for x in state[2:5]):
            raise _fail(source, "structured or sub-array numpy dtypes are not supported in model files")
        if descr[0] in "SU" and descr[1:] in ("", "0") and len(state) > 5:
            size = _as_int(state[5], "dtype size")
            descr = f"{descr[0]}{size // 4 if descr[0] == 'U' else size}"
    try:
        dt = np.dtype(descr)
    except (TypeError, ValueError) as e:
        raise _fail(source, f"unsupported numpy dtype {_short(descr)} ({e})") from None
    if dt.kind not in "biufcSUO" or dt.fields is not None or dt.subdtype is not None:
        raise _fail(source, f"unsupported numpy dtype {_short(descr)}")
    if byteorder in "<>" and dt.itemsize > 1 and dt.kind != "O":
        dt = dt.newbyteorder(byteorder)
    return dt


def _raw_bytes(data, source: str) -> bytes:
    if isinstance(data, str):  # Python 2 str read with encoding='latin1'
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, pickle.PickleBuffer):
        return bytes(data.raw())
    raise _fail(source, f"expected array bytes, got {type(data).__name__}")


def _array_from_bytes(raw: bytes, dt: np.dtype, shape: tuple, fortran: bool, source: str) -> np.ndarray:
    if any(n < 0 for n in shape):
        raise _fail(source, f"negative array shape {shape}")
    count = math.prod(shape)
    if len(raw) != count * dt.itemsize:
        raise _fail(source, f"array of {shape} {dt} needs {count * dt.itemsize} bytes, the pickle holds {len(raw)}")
    arr = np.frombuffer(raw, dtype=dt, count=count).reshape(shape, order="F" if fortran else "C")
    return arr.astype(dt.newbyteorder("="), order="C") if dt.itemsize > 1 and dt.kind != "O" else arr.copy()


def _array_value(obj: _ArrayObject, source: str, memo: dict, depth: int) -> np.ndarray:
    state = obj._state
    if isinstance(state, tuple) and len(state) == 5:
        _version, shape, dtype, fortran, data = state
    elif isinstance(state, tuple) and len(state) == 4:
        shape, dtype, fortran, data = state
    else:
        raise _fail(source, "malformed pickled numpy array")
    try:
        shape = _as_int_tuple(shape, "array shape")
    except TypeError as e:
        raise _fail(source, f"malformed pickled numpy array ({e})") from None
    dt = _dtype_value(dtype, source)
    fortran = bool(fortran)
    if dt.hasobject:
        if not isinstance(data, list) or len(data) != math.prod(shape) or any(n < 0 for n in shape):
            raise _fail(source, f"pickled object array of shape {shape} without a matching item list")
        out = np.empty(len(data), dtype=object)
        for i, item in enumerate(data):
            out[i] = _finish(item, source, memo, depth + 1)
        return out.reshape(shape, order="F" if fortran else "C")
    return _array_from_bytes(_raw_bytes(data, source), dt, shape, fortran, source)


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


# =============================================================================
# chumpy / sparse / generic array conversion
# =============================================================================


def _chumpy_value(obj: _ChumpyObject, source: str, key: str, depth: int) -> np.ndarray:
    label = type(obj)._label
    state = obj.state_dict()
    if "x" in state:
        return _numeric(state["x"], source, key, depth + 1)
    if "a" in state and "idxs" in state:  # chumpy.reordering.Select
        a = _numeric(state["a"], source, key, depth + 1).ravel()
        idxs = np.asarray(_numeric(state["idxs"], source, key, depth + 1)).ravel()
        if not np.issubdtype(idxs.dtype, np.integer) or (idxs.size and (idxs.min() < -a.size or idxs.max() >= a.size)):
            raise _fail(source, f"'{key}': chumpy {label} indices out of range")
        out = a[idxs]
        shape = state.get("preferred_shape")
        if shape is not None:
            try:
                out = out.reshape(_as_int_tuple(tuple(shape), "preferred_shape"))
            except (TypeError, ValueError) as e:
                raise _fail(
                    source, f"'{key}': chumpy {label} preferred_shape {_short(shape)} does not fit ({e})"
                ) from None
        return out
    if "a" in state and "axes" in state:  # chumpy.reordering.transpose
        a = _numeric(state["a"], source, key, depth + 1)
        try:
            axes = state["axes"]
            return np.transpose(a, None if axes is None else _as_int_tuple(tuple(axes), "axes"))
        except (TypeError, ValueError) as e:
            raise _fail(source, f"'{key}': chumpy {label} with invalid axes ({e})") from None
    if "a" in state and "newshape" in state:  # chumpy.reordering.reshape
        a = _numeric(state["a"], source, key, depth + 1)
        try:
            return a.reshape(_as_int_tuple(tuple(np.atleast_1d(state["newshape"]).tolist()), "newshape"))
        except (TypeError, ValueError) as e:
            raise _fail(source, f"'{key}': chumpy {label} with invalid shape ({e})") from None
    raise _fail(
        source,
        f"'{key}' is a chumpy {label} object without a stored array ('x'); it cannot be evaluated without chumpy",
    )


def _sparse_value(obj: _SparseObject, source: str, key: str, depth: int):
    import scipy.sparse as sp

    fmt = type(obj)._format
    state = obj.state_dict()
    shape = state.get("_shape", state.get("shape"))
    try:
        shape = _as_int_tuple(tuple(shape), "shape")
        if len(shape) != 2:
            raise ValueError(f"shape {shape} is not 2-D")
        if fmt == "coo":
            if "coords" in state:
                row, col = (_numeric(c, source, key, depth + 1) for c in state["coords"])
            else:
                row = _numeric(state["row"], source, key, depth + 1)
                col = _numeric(state["col"], source, key, depth + 1)
            data = _numeric(state["data"], source, key, depth + 1)
            mat = sp.coo_matrix((data, (row, col)), shape=shape)
        else:
            data = _numeric(state["data"], source, key, depth + 1)
            indices = _numeric(state["indices"], source, key, depth + 1)
            indptr = _numeric(state["indptr"], source, key, depth + 1)
            cls = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
            mat = cls((data, indices, indptr), shape=shape)
            mat.check_format(full_check=True)
        return mat
    except _FileError:
        raise
    except Exception as e:
        raise _fail(source, f"'{key}' is not a valid sparse {fmt} matrix ({type(e).__name__}: {e})") from None


def _numeric(obj, source: str, key: str, depth: int = 0):
    """Turns a loaded value (ndarray, chumpy stub, sparse stub, list, scalar) into an ndarray or sparse matrix."""
    if depth > _MAX_DEPTH:
        raise _fail(source, f"'{key}' nested too deeply")
    if isinstance(obj, _ChumpyObject):
        return _chumpy_value(obj, source, key, depth)
    if isinstance(obj, _SparseObject):
        return _sparse_value(obj, source, key, depth)
    if isinstance(obj, (_Captured, _TorchStorage, _PendingTensor, _StorageType, _Function, _Tag)):
        raise _fail(source, f"'{key}' is a {_short(obj)}, not an array")
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise _fail(source, f"'{key}' is an object array, not a numeric array")
        return obj
    try:
        a = np.asarray(obj)
    except Exception as e:
        raise _fail(source, f"'{key}' is not an array ({type(e).__name__}: {e})") from None
    if a.dtype.hasobject or a.dtype.kind not in "biufc":
        raise _fail(source, f"'{key}' is not a numeric array (got {type(obj).__name__})")
    return a


def _dense(obj, source: str, key: str) -> np.ndarray:
    a = _numeric(obj, source, key)
    if hasattr(a, "toarray"):
        a = a.toarray()
    return np.asarray(a)


# =============================================================================
# Models
# =============================================================================


def _component_count(n, available: int, what: str, source: str) -> int:
    if n is None:
        return available
    try:
        n = _as_int(n, what)
    except TypeError:
        raise ValueError(f"{source}: {what} must be an integer, got {n!r}") from None
    if n < 0:
        raise ValueError(f"{source}: {what}={n} must not be negative")
    if n > available:
        raise ValueError(f"{source}: {what}={n} but the file holds only {available} components")
    return n


def _model_from_pickle_dict(d, source: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise _fail(source, f"expected a pickled dict of FLAME arrays, got {type(d).__name__}")
    missing = [k for k in _FLAME_PKL_KEYS if k not in d]
    if missing:
        raise _fail(source, f"missing FLAME key(s) {missing}; is this a FLAME model file?")
    shapedirs = _dense(d["shapedirs"], source, "shapedirs")
    if shapedirs.ndim != 3:
        raise _fail(source, f"'shapedirs' must have shape (V, 3, K), got {shapedirs.shape}")
    split = min(FLAME_NUM_SHAPE_FILE, shapedirs.shape[2])
    kintree = _dense(d["kintree_table"], source, "kintree_table")
    if kintree.ndim != 2 or kintree.shape[0] != 2 or not np.issubdtype(kintree.dtype, np.integer):
        raise _fail(source, f"'kintree_table' must be an integer (2, J) array, got {kintree.dtype} {kintree.shape}")
    jreg = _numeric(d["J_regressor"], source, "J_regressor")
    return {
        "v_template": _dense(d["v_template"], source, "v_template"),
        "shapedirs": shapedirs[..., :split],
        "exprdirs": shapedirs[..., split:],
        "posedirs": _dense(d["posedirs"], source, "posedirs"),
        "weights": _dense(d["weights"], source, "weights"),
        "J_regressor": jreg.toarray() if hasattr(jreg, "toarray") else np.asarray(jreg),
        "f": _dense(d["f"], source, "f"),
        "parents": kintree[0],
    }


def _model_from_npz(z: dict, source: str) -> tuple[dict[str, Any], str | None]:
    if "format" not in z:
        if all(k in z for k in _FLAME_PKL_KEYS):  # a FLAME pickle converted key for key
            return _model_from_pickle_dict(z, source), None
        raise _fail(source, f"not a flame_jax model archive (no 'format' marker; keys {sorted(z)})")
    try:
        fmt = _text(z["format"])
    except ValueError:
        raise _fail(source, "the 'format' marker is not a string") from None
    if fmt != MODEL_FORMAT:
        raise _fail(source, f"unsupported format {_short(fmt)} (expected {MODEL_FORMAT!r})")
    missing = [k for k in _MODEL_KEYS if k not in z]
    if missing:
        raise _fail(source, f"missing key(s) {missing}")
    name = None
    if "name" in z:
        try:
            name = _text(z["name"])
        except ValueError:
            raise _fail(source, "'name' is not a string") from None
    return {k: z[k] for k in _MODEL_KEYS}, name


def load_model(path, *, n_shape: int | None = None, n_expr: int | None = None) -> FlameModel:
    """Loads a FLAME model.

    Args:
      path: an official FLAME ``.pkl`` (2020 ``generic_model.pkl``, 2023
        ``flame2023.pkl``, 2023 Open ``flame2023_Open.pkl``) or a ``.npz`` written by
        :func:`save_model`. The format is recognized from the content.
      n_shape: keep only the leading identity components (default: all, 300 in
        official files).
      n_expr: keep only the leading expression components (default: all, 100).

    Returns:
      A :class:`FlameModel` (float32/int32).

    Raises:
      FileNotFoundError: ``path`` does not exist.
      UnsafeModelFileError: the pickle references a non-allow-listed global (nothing runs).
      ValueError: naming the file, for any malformed content.
    """
    p = _check_path(path)
    source = str(p)
    kind = _sniff(p)
    name = None
    if kind == "npz":
        arrays, name = _model_from_npz(_read_npz(p), source)
    elif kind == "npy":
        raise _fail(source, "a .npy file is not a FLAME model (expected a .pkl or a flame_jax .npz)")
    else:
        arrays = _model_from_pickle_dict(_unpickle_file(p), source)
    shapedirs, exprdirs = np.asarray(arrays["shapedirs"]), np.asarray(arrays["exprdirs"])
    if shapedirs.ndim != 3 or exprdirs.ndim != 3:
        raise _fail(source, f"blend shapes must be (V, 3, K), got {shapedirs.shape} and {exprdirs.shape}")
    ns = _component_count(n_shape, shapedirs.shape[2], "n_shape", source)
    ne = _component_count(n_expr, exprdirs.shape[2], "n_expr", source)
    try:
        return FlameModel.from_arrays(
            v_template=arrays["v_template"],
            shapedirs=shapedirs[..., :ns],
            exprdirs=exprdirs[..., :ne],
            posedirs=arrays["posedirs"],
            lbs_weights=arrays["weights"],
            joint_regressor=arrays["J_regressor"],
            faces=arrays["f"],
            parents=arrays["parents"],
            name=name if name is not None else f"FLAME ({p.name})",
            source=source,
        )
    except ValueError as e:
        if source in str(e):
            raise
        raise _fail(source, str(e)) from None
    except (TypeError, IndexError, KeyError, AttributeError, OverflowError, MemoryError) as e:
        raise _fail(source, f"invalid model arrays ({type(e).__name__}: {e})") from None


def _atomic_savez(path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez to exactly ``path`` (no ``.npz`` appended), via a temporary file and a rename."""
    p = Path(os.fspath(path))
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:  # default permissions (umask), unlike mkstemp's 0600
            np.savez(f, **arrays)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_model(model: FlameModel, path) -> None:
    """Writes ``model`` as this project's ``.npz`` (exactly the given path; round trip is bit-exact)."""
    arrays = dict(model.to_numpy())
    arrays["name"] = np.array(str(model.name))
    arrays["format"] = np.array(MODEL_FORMAT)
    _atomic_savez(path, arrays)


# =============================================================================
# Landmark embeddings
# =============================================================================


def _array_key(d: dict, key: str, source: str) -> np.ndarray:
    if key not in d:
        raise _fail(source, f"missing key '{key}'")
    return _dense(d[key], source, key)


def _ringnet_dynamic(path: Path) -> tuple[np.ndarray, np.ndarray]:
    source = str(path)
    d = _unwrap_container(_read_npy(path), source)
    if not isinstance(d, dict):
        raise _fail(source, "expected a dict with 'lmk_face_idx' and 'lmk_b_coords'")
    face = _array_key(d, "lmk_face_idx", source)
    bary = _array_key(d, "lmk_b_coords", source)
    if face.shape != (NUM_CONTOUR_ROWS, NUM_CONTOUR) or bary.shape != (NUM_CONTOUR_ROWS, NUM_CONTOUR, 3):
        raise _fail(
            source,
            f"dynamic contour table must be ({NUM_CONTOUR_ROWS}, {NUM_CONTOUR}) and "
            f"({NUM_CONTOUR_ROWS}, {NUM_CONTOUR}, 3), got {face.shape} and {bary.shape}",
        )
    return face, bary


def _ringnet_static(path: Path) -> tuple[np.ndarray, np.ndarray]:
    source = str(path)
    d = _unwrap_container(_unpickle_file(path) if _sniff(path) == "pickle" else _read_npy(path), source)
    if not isinstance(d, dict):
        raise _fail(source, "expected a dict with 'lmk_face_idx' and 'lmk_b_coords'")
    return _array_key(d, "lmk_face_idx", source), _array_key(d, "lmk_b_coords", source)


def _embedding_from_dict(d, path: Path) -> LandmarkEmbedding:
    source = str(path)
    if not isinstance(d, dict):
        raise _fail(source, f"expected a dict of landmark arrays, got {type(d).__name__}")
    if any(k in d for k in _DECA_KEYS):  # DECA landmark_embedding.npy
        a = {k: _array_key(d, k, source) for k in _DECA_KEYS}
        return LandmarkEmbedding.from_arrays(
            face_idx=a["static_lmk_faces_idx"],
            bary_coords=a["static_lmk_bary_coords"],
            dynamic_face_idx=a["dynamic_lmk_faces_idx"],
            dynamic_bary_coords=a["dynamic_lmk_bary_coords"],
            kind="ibug68",
            source=source,
        )
    if "lmk_face_idx" in d or "lmk_b_coords" in d:
        face = _array_key(d, "lmk_face_idx", source)
        bary = _array_key(d, "lmk_b_coords", source)
        if "landmark_indices" in d:  # MediaPipe
            return LandmarkEmbedding.from_arrays(
                face_idx=face,
                bary_coords=bary,
                landmark_indices=_array_key(d, "landmark_indices", source),
                kind="mediapipe",
                source=source,
            )
        if face.ndim == 2:  # RingNet flame_dynamic_embedding.npy: needs the static file beside it
            static = path.with_name(_RINGNET_STATIC)
            if not static.exists():
                raise _fail(
                    source, f"a dynamic contour table alone is not an embedding; {static.name} not found beside it"
                )
            face_s, bary_s = _ringnet_static(static)
            dyn_f, dyn_b = _ringnet_dynamic(path)
            return LandmarkEmbedding.from_arrays(
                face_idx=face_s, bary_coords=bary_s, dynamic_face_idx=dyn_f, dynamic_bary_coords=dyn_b,
                kind="ibug68", source=f"{static} + {path.name}",
            )
        dynamic = path.with_name(_RINGNET_DYNAMIC)
        if face.reshape(-1).shape[0] == 51 and dynamic.exists() and dynamic != path:
            dyn_f, dyn_b = _ringnet_dynamic(dynamic)
            return LandmarkEmbedding.from_arrays(
                face_idx=face, bary_coords=bary, dynamic_face_idx=dyn_f, dynamic_bary_coords=dyn_b,
                kind="ibug68", source=source,
            )
        return LandmarkEmbedding.from_arrays(face_idx=face, bary_coords=bary, kind="static", source=source)
    raise _fail(source, f"not a landmark embedding (keys {sorted(map(str, d))})")


def _embedding_from_own_npz(z: dict, source: str) -> LandmarkEmbedding:
    try:
        fmt = _text(z["format"])
    except ValueError:
        raise _fail(source, "the 'format' marker is not a string") from None
    if fmt != EMBEDDING_FORMAT:
        raise _fail(source, f"unsupported format {_short(fmt)} (expected {EMBEDDING_FORMAT!r})")
    for k in ("face_idx", "bary_coords", "kind"):
        if k not in z:
            raise _fail(source, f"missing key '{k}'")
    try:
        kind = _text(z["kind"])
    except ValueError:
        raise _fail(source, "'kind' is not a string") from None
    return LandmarkEmbedding.from_arrays(
        face_idx=z["face_idx"],
        bary_coords=z["bary_coords"],
        dynamic_face_idx=z.get("dynamic_face_idx"),
        dynamic_bary_coords=z.get("dynamic_bary_coords"),
        landmark_indices=z.get("landmark_indices"),
        kind=kind,
        source=source,
    )


def load_landmark_embedding(path, *, model: FlameModel | None = None) -> LandmarkEmbedding:
    """Loads a landmark embedding.

    Recognized (from the content): DECA ``landmark_embedding.npy`` → "ibug68";
    RingNet ``flame_static_embedding.pkl`` → "ibug68" when
    ``flame_dynamic_embedding.npy`` lies beside it, else a 51-point "static"
    embedding; MediaPipe ``mediapipe_landmark_embedding.npz`` → "mediapipe"; this
    project's ``.npz`` (``save_landmark_embedding``) → its stored kind.

    Args:
      path: the file.
      model: when given, every face index is checked against ``model.num_faces``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      UnsafeModelFileError: a pickle references a non-allow-listed global (nothing runs).
      ValueError: naming the file, for malformed content or out-of-range face indices.
    """
    p = _check_path(path)
    source = str(p)
    kind = _sniff(p)
    try:
        if kind == "npz":
            z = _read_npz(p)
            emb = _embedding_from_own_npz(z, source) if "format" in z else _embedding_from_dict(z, p)
        elif kind == "npy":
            emb = _embedding_from_dict(_unwrap_container(_read_npy(p), source), p)
        else:
            emb = _embedding_from_dict(_unwrap_container(_unpickle_file(p), source), p)
    except UnsafeModelFileError:
        raise
    except ValueError as e:
        if source in str(e):
            raise
        raise _fail(source, str(e)) from None
    except (TypeError, IndexError, KeyError, AttributeError, OverflowError, MemoryError) as e:
        raise _fail(source, f"invalid landmark arrays ({type(e).__name__}: {e})") from None
    if model is not None:
        emb.check_faces(model.num_faces, source=source)
    return emb


def save_landmark_embedding(embedding: LandmarkEmbedding, path) -> None:
    """Writes ``embedding`` as this project's ``.npz`` (exactly the given path)."""
    arrays = {
        "format": np.array(EMBEDDING_FORMAT),
        "kind": np.array(str(embedding.kind)),
        "face_idx": np.asarray(embedding.face_idx),
        "bary_coords": np.asarray(embedding.bary_coords),
    }
    if embedding.dynamic_face_idx is not None:
        arrays["dynamic_face_idx"] = np.asarray(embedding.dynamic_face_idx)
        arrays["dynamic_bary_coords"] = np.asarray(embedding.dynamic_bary_coords)
    if embedding.landmark_indices is not None:
        arrays["landmark_indices"] = np.asarray(embedding.landmark_indices)
    _atomic_savez(path, arrays)
