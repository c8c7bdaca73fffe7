"""chumpy / sparse / generic array conversion of the unpickled stand-ins to plain NumPy arrays."""

from __future__ import annotations


import numpy as np
import scipy.sparse as sp

from flame_jax.io.errors import _FileError, _MAX_DEPTH, _charge_array, _fail, _short
from flame_jax.io.torch_stream import _PendingTensor, _StorageType, _TorchStorage
from flame_jax.io.unpickler import _Captured, _ChumpyObject, _Function, _SparseObject, _Tag, _as_int_tuple


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
            newshape = np.atleast_1d(_numeric(state["newshape"], source, key, depth + 1))
            return a.reshape(_as_int_tuple(tuple(newshape.tolist()), "newshape"))
        except (TypeError, ValueError) as e:
            raise _fail(source, f"'{key}': chumpy {label} with invalid shape ({e})") from None
    raise _fail(
        source,
        f"'{key}' is a chumpy {label} object without a stored array ('x'); it cannot be evaluated without chumpy",
    )


def _sparse_value(obj: _SparseObject, source: str, key: str, depth: int):
    fmt = type(obj)._format
    state = obj.state_dict()
    shape = state.get("_shape", state.get("shape"))
    try:
        shape = _as_int_tuple(tuple(shape), "shape")
        if len(shape) != 2:
            raise ValueError(f"shape {shape} is not 2-D")
        # Every caller densifies the matrix: its dense size is what the file asks for.
        _charge_array(source, shape, 8, f"'{key}' (sparse, densified)")
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
    # Nested lists/tuples may share sub-lists through the pickle memo: a DAG of a few hundred bytes
    # expands to 2**depth numbers. Count the expansion (memoized per node) before building it.
    _charge_array(source, (_expanded_size(obj, source, key, {}, depth),), 8, f"'{key}' (nested lists)")
    try:
        a = np.asarray(obj)
    except Exception as e:
        raise _fail(source, f"'{key}' is not an array ({type(e).__name__}: {e})") from None
    if a.dtype.hasobject or a.dtype.kind not in "biufc":
        raise _fail(source, f"'{key}' is not a numeric array (got {type(obj).__name__})")
    return a


def _expanded_size(obj, source: str, key: str, memo: dict, depth: int) -> int:
    """Number of elements ``np.asarray(obj)`` would hold; shared sub-lists are counted once per
    reference without being walked twice."""
    if isinstance(obj, np.ndarray):
        return obj.size
    if not isinstance(obj, (list, tuple)):
        return 1
    found = memo.get(id(obj))
    if found is not None:
        return found
    if depth > _MAX_DEPTH:
        raise _fail(source, f"'{key}' nested too deeply")
    n = sum(_expanded_size(v, source, key, memo, depth + 1) for v in obj)
    memo[id(obj)] = n
    return n


def _dense(obj, source: str, key: str) -> np.ndarray:
    a = _numeric(obj, source, key)
    if hasattr(a, "toarray"):
        a = a.toarray()
    return np.asarray(a)


