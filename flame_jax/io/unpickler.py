"""The restricted unpickler: resolves only an allow-list of globals, mapping each to an inert stand-in
(or to a decoder written here), then rebuilds arrays from what the pickle stored.
"""

from __future__ import annotations

import collections
import math
import operator
import pickle
import pickletools
from typing import Any, Callable

import numpy as np

from flame_jax.io.errors import (
    UnsafeModelFileError,
    _BYTES_PER_OPCODE,
    _MAX_DEPTH,
    _charge,
    _charge_array,
    _fail,
    _short,
)
from flame_jax.io.torch_stream import (
    _STORAGE_TAGS,
    _TENSOR_TAG,
    _PendingTensor,
    _StorageType,
    _TorchStorage,
    _load_torch_stream,
    _tensor_array,
)


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
        self._file = file
        self._source = source
        self._storages = storages
        self._depth = depth
        self._chumpy_classes: dict[str, type] = {}
        self._allowed = self._allow_list()

    def load(self):
        """Pre-scans the pickle (``_prescan``), then unpickles it."""
        _prescan(self._file, self._source)
        return super().load()

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

        def empty_bytes(*args):
            # How Python 3 writes an empty bytes object at pickle protocol <= 2 (e.g. the data of an
            # empty array): builtins.bytes(). Only the empty call is accepted.
            if args:
                raise UnsafeModelFileError(f"{src}: refusing to load: builtins.bytes called with arguments")
            return b""

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
        table["builtins.bytes"] = _Function(empty_bytes, "builtins.bytes")
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
        obj = _load_torch_stream(bytes(data), self._source, self._depth + 1, _RestrictedUnpickler)
        return _finish(obj, self._source)


def _prescan(f, source: str) -> None:
    """Walks the pickle's opcodes (from ``f``'s position, which is restored) before it is loaded.

    Each opcode is charged to the load's memory budget (``_BYTES_PER_OPCODE``): the objects the
    unpickler builds, memo references included, are at most one per opcode. Counted strings must fit
    in what is left of the stream (the C unpickler allocates a declared length before reading it).
    """
    start = f.tell()
    count = 0
    try:
        for _op, _arg, _pos in pickletools.genops(f):
            count += 1
    except Exception as e:  # ValueError: truncated counted string, unknown opcode, ...
        detail = str(e) if len(str(e)) <= 200 else str(e)[:197] + "..."
        raise _fail(source, f"not a readable pickle of FLAME data ({type(e).__name__}: {detail})") from None
    finally:
        f.seek(start)
    _charge(source, count * _BYTES_PER_OPCODE, f"unpickling {count} opcodes")


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
    _charge_array(source, shape, dt.itemsize, "a pickled array")
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
        _charge_array(source, shape, dt.itemsize, "a pickled object array")
        out = np.empty(len(data), dtype=object)
        for i, item in enumerate(data):
            out[i] = _finish(item, source, memo, depth + 1)
        return out.reshape(shape, order="F" if fortran else "C")
    return _array_from_bytes(_raw_bytes(data, source), dt, shape, fortran, source)

