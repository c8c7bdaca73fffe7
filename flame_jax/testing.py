"""Synthetic stand-ins for FLAME files, for tests (no real FLAME data anywhere).

The writers produce files with the *layout* of the official files and random,
plausible contents (skinning weights and joint-regressor rows sum to one,
barycentric coordinates sum to one, indices in range). They emit pickles byte by
byte through a small pickler that can name globals that are not importable here
-- ``chumpy.ch.Ch``, ``torch._utils._rebuild_tensor_v2``, ``os.system`` -- without
importing or calling them, so nothing named in a file runs while it is written,
and neither chumpy nor torch is needed.

Each writer returns the arrays it wrote, so tests can compare what a loader reads.
No pytest import here: this module is usable from outside code.
"""

from __future__ import annotations

import io
import os
import pickle
import shlex
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "write_deca_landmark_embedding",
    "write_flame2020_pickle",
    "write_malicious_pickle",
    "write_mediapipe_embedding",
    "write_pickle_calling",
    "write_ringnet_embedding",
]

FLAME_NUM_SHAPE_FILE = 300
_KINTREE_ROOT = 2**32 - 1


# =============================================================================
# A pickler for names that are not importable (never resolved, never called)
# =============================================================================


class Global:
    """A module-level name written into a pickle (GLOBAL / STACK_GLOBAL), never looked up.

    Instances are interned, so a name used twice is memoized (written once, then
    fetched with GET) as the standard pickler does.
    """

    _interned: dict[tuple[str, str], "Global"] = {}

    def __new__(cls, module: str, name: str):
        key = (module, name)
        obj = cls._interned.get(key)
        if obj is None:
            obj = super().__new__(cls)
            obj.module, obj.name = module, name
            cls._interned[key] = obj
        return obj


class Call:
    """An object pickled as ``func(*args)`` (REDUCE), then ``BUILD(state)`` when state is not None."""

    def __init__(self, func: Global, args: tuple = (), state: Any = None):
        self.func, self.args, self.state = func, tuple(args), state


class New:
    """An object pickled as ``cls.__new__(cls, *args)`` (NEWOBJ) + BUILD(state): how protocol 2 pickles instances."""

    def __init__(self, cls: Global, args: tuple = (), state: Any = None):
        self.cls, self.args, self.state = cls, tuple(args), state


class Py2Str(bytes):
    """A Python 2 ``str`` (SHORT_BINSTRING / BINSTRING); read back as ``str`` with encoding='latin1'."""


class PersistentId:
    """Written as a persistent id (BINPERSID) of ``pid``; used for torch storages."""

    def __init__(self, pid: tuple):
        self.pid = pid


class _Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table is extensible
    dispatch = pickle._Pickler.dispatch.copy()

    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, PersistentId) else None

    def _save_global_ref(self, obj: Global):
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    def _save_call(self, obj: Call):
        self.save(obj.func)
        self.save(obj.args)
        self.write(pickle.REDUCE)
        self.memoize(obj)
        if obj.state is not None:
            self.save(obj.state)
            self.write(pickle.BUILD)

    def _save_new(self, obj: New):
        self.save(obj.cls)
        self.save(obj.args)
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        if obj.state is not None:
            self.save(obj.state)
            self.write(pickle.BUILD)

    def _save_py2str(self, obj: Py2Str):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + bytes(obj))
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + bytes(obj))
        self.memoize(obj)

    dispatch[Global] = _save_global_ref
    dispatch[Call] = _save_call
    dispatch[New] = _save_new
    dispatch[Py2Str] = _save_py2str


def dumps(obj, protocol: int = 2) -> bytes:
    """Pickles ``obj`` (which may contain Global/Call/New/Py2Str/PersistentId) without resolving names."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def _write(path, data: bytes) -> Path:
    p = Path(os.fspath(path))
    p.write_bytes(data)
    return p


# ------------------------------------------------------------- numpy, Python 2 style
_RECONSTRUCT_PY2 = Global("numpy.core.multiarray", "_reconstruct")


def py2_dtype(dtype) -> Call:
    """A numpy dtype as numpy under Python 2 pickled it."""
    dt = np.dtype(dtype)
    order = "|" if dt.itemsize == 1 or dt.byteorder == "|" else "<"
    state = (3, Py2Str(order.encode()), None, None, None, -1, -1, 0)
    return Call(Global("numpy", "dtype"), (Py2Str(dt.str[1:].encode()), 0, 1), state)


def py2_array(a) -> Call:
    """An ndarray as numpy under Python 2 pickled it (data as a ``str``, needs encoding='latin1')."""
    a = np.asarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    data = np.ascontiguousarray(a).tobytes()
    return Call(
        _RECONSTRUCT_PY2,
        (Global("numpy", "ndarray"), (0,), Py2Str(b"b")),
        (1, tuple(a.shape), py2_dtype(a.dtype), False, Py2Str(data)),
    )


_PY3_DTYPES: dict[str, Call] = {}


def py3_dtype(dtype) -> Call:
    """A numpy dtype as numpy under Python 3 pickles it (one shared object per dtype, like numpy's)."""
    dt = np.dtype(dtype)
    key = dt.str
    if key not in _PY3_DTYPES:
        if dt.hasobject:
            state = (3, "|", None, None, None, -1, -1, 63)
        else:
            state = (3, "|" if dt.itemsize == 1 else "<", None, None, None, -1, -1, 0)
        descr = "O8" if dt.hasobject else dt.str[1:]
        _PY3_DTYPES[key] = Call(Global("numpy", "dtype"), (descr, False, True), state)
    return _PY3_DTYPES[key]


def py3_array(a, module: str = "numpy.core.multiarray") -> Call:
    """An ndarray as numpy under Python 3 pickles it (data as bytes).

    ``module``: numpy 1.x writes ``numpy.core.multiarray`` (as in DECA's file),
    numpy 2.x ``numpy._core.multiarray``.
    """
    a = np.ascontiguousarray(a)
    return Call(
        Global(module, "_reconstruct"),
        (Global("numpy", "ndarray"), tuple([0]), b"b"),
        (1, tuple(a.shape), py3_dtype(a.dtype), False, a.tobytes()),
    )


def object_array_0d(item, module: str = "numpy.core.multiarray") -> Call:
    """A 0-d object array holding ``item`` (what ``np.save`` pickles for a dict)."""
    return Call(
        Global(module, "_reconstruct"),
        (Global("numpy", "ndarray"), tuple([0]), b"b"),
        (1, (), py3_dtype(object), False, [item]),
    )


def write_npy_object(path, item, *, protocol: int = 4, numpy_module: str = "numpy.core.multiarray") -> Path:
    """A ``.npy`` whose payload is a pickled 0-d object array holding ``item`` (as ``np.save`` writes a dict)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return _write(path, buf.getvalue() + dumps(object_array_0d(item, numpy_module), protocol=protocol))


def chumpy_ch(a) -> New:
    """A ``chumpy.ch.Ch`` object as Python 2 pickled it: NEWOBJ + a state dict holding ``x``."""
    return New(
        Global("chumpy.ch", "Ch"),
        (),
        {
            "x": py2_array(a),
            "_dirty_vars": Call(Global("__builtin__", "set"), ([],)),
            "_depends_on_deps": {},
            "_itr": None,
        },
    )


def chumpy_select(a, idxs, preferred_shape) -> New:
    """A ``chumpy.reordering.Select`` (``a.ravel()[idxs].reshape(preferred_shape)``)."""
    return New(
        Global("chumpy.reordering", "Select"),
        (),
        {"a": chumpy_ch(a), "idxs": py2_array(np.asarray(idxs)), "preferred_shape": tuple(preferred_shape)},
    )


def sparse_csc(dense, *, private_path: bool = True) -> New:
    """A scipy csc_matrix as (old) SciPy pickled it: NEWOBJ + state dict."""
    m = sp.csc_matrix(np.asarray(dense))
    module = "scipy.sparse.csc" if private_path else "scipy.sparse._csc"
    return New(
        Global(module, "csc_matrix"),
        (),
        {
            "_shape": tuple(m.shape),
            "maxprint": 50,
            "format": Py2Str(b"csc"),
            "indices": py2_array(m.indices.astype(np.int32)),
            "indptr": py2_array(m.indptr.astype(np.int32)),
            "data": py2_array(m.data),
            "_has_sorted_indices": True,
        },
    )


# =============================================================================
# FLAME model files
# =============================================================================


def _random_model_arrays(rng, num_vertices, num_faces, n_shape, n_expr, num_joints=5):
    v, nj = num_vertices, num_joints
    v_template = rng.normal(0.0, 0.05, (v, 3))
    ident = rng.normal(0.0, 1e-3, (v, 3, n_shape))
    # The file layout fixes 300 identity columns; expression starts at column 300.
    pad = np.zeros((v, 3, max(0, FLAME_NUM_SHAPE_FILE - n_shape))) if n_expr else np.zeros((v, 3, 0))
    expr = rng.normal(0.0, 1e-3, (v, 3, n_expr))
    shapedirs = np.concatenate([ident, pad, expr], axis=2)
    posedirs = rng.normal(0.0, 1e-3, (v, 3, 9 * (nj - 1)))
    weights = rng.random((v, nj)) ** 4
    weights /= weights.sum(axis=1, keepdims=True)
    jreg = np.zeros((nj, v))
    k = min(v, 24)
    for j in range(nj):
        cols = rng.choice(v, size=k, replace=False)
        w = rng.random(k) + 0.1
        jreg[j, cols] = w / w.sum()
    faces = rng.integers(0, v, (num_faces, 3)).astype(np.uint32)
    return {
        "v_template": v_template,
        "f": faces,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "weights": weights,
        "J_regressor": jreg,
        "identity": ident,
        "expression": expr,
        "parents": np.array([-1, 0, 1, 1, 1][:nj], np.int64),
    }


def write_flame2020_pickle(
    path,
    *,
    seed: int = 0,
    num_vertices: int = 5023,
    num_faces: int = 9976,
    n_shape: int = 300,
    n_expr: int = 100,
    chumpy: bool = True,
    private_scipy_path: bool = True,
    open_2023: bool = False,
) -> dict[str, np.ndarray]:
    """Writes a pickle with the FLAME 2020 (or 2023 Open) layout and random contents.

    FLAME 2020 / 2023 (``open_2023=False``): a Python-2 style protocol-2 pickle;
    ``shapedirs``, ``v_template`` and ``J`` are ``chumpy.ch.Ch`` objects (when
    ``chumpy``), ``J_regressor`` a csc_matrix (under the old private path
    ``scipy.sparse.csc`` when ``private_scipy_path``), ``kintree_table`` uint32 with
    the root stored as 2**32-1, ``f`` uint32, plus ignored keys (``J``,
    ``bs_style``, ``bs_type``, ``weights_prior``).

    FLAME 2023 Open (``open_2023=True``): a Python 3 pickle of plain numpy arrays (no
    chumpy), int64 ``kintree_table`` and the extra key ``supr_expression_metadata``.

    ``shapedirs`` in the file always has its expression part starting at column 300
    (the official layout): with ``n_shape < 300`` the identity part is zero-padded.

    Returns:
      The arrays written (float64): ``v_template``, ``f``, ``shapedirs`` (file
      layout), ``identity`` (V, 3, n_shape), ``expression`` (V, 3, n_expr),
      ``posedirs``, ``weights``, ``J_regressor`` (dense), ``kintree_table``,
      ``parents`` (root -1).
    """
    rng = np.random.default_rng(seed)
    a = _random_model_arrays(rng, num_vertices, num_faces, n_shape, n_expr)
    joints = a["J_regressor"] @ a["v_template"]
    if open_2023:
        kintree = np.array([[-1, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64)
        kintree[0, 0] = _KINTREE_ROOT
        data = {
            "v_template": a["v_template"],
            "f": a["f"],
            "shapedirs": a["shapedirs"],
            "posedirs": a["posedirs"],
            "J_regressor": sp.csc_matrix(a["J_regressor"]),
            "weights": a["weights"],
            "kintree_table": kintree,
            "J": joints,
            "bs_style": "lbs",
            "bs_type": "lrotmin",
            "supr_expression_metadata": {
                "source": "synthetic",
                "components": np.array([f"expr_{i:03d}" for i in range(min(n_expr, 8))]),
                "scale": np.float64(1.0),
                "order": [1, 2, 3],
            },
        }
        _write(path, pickle.dumps(data, protocol=4))
    else:
        kintree = np.array([[_KINTREE_ROOT, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.uint32)
        wrap = chumpy_ch if chumpy else py2_array
        data = {
            Py2Str(b"J_regressor_prior"): sparse_csc(a["J_regressor"], private_path=private_scipy_path),
            Py2Str(b"f"): py2_array(a["f"]),
            Py2Str(b"J_regressor"): sparse_csc(a["J_regressor"], private_path=private_scipy_path),
            Py2Str(b"kintree_table"): py2_array(kintree),
            Py2Str(b"J"): wrap(joints),
            Py2Str(b"weights_prior"): py2_array(a["weights"]),
            Py2Str(b"weights"): py2_array(a["weights"]),
            Py2Str(b"posedirs"): py2_array(a["posedirs"]),
            Py2Str(b"bs_style"): Py2Str(b"lbs"),
            Py2Str(b"v_template"): wrap(a["v_template"]),
            Py2Str(b"shapedirs"): wrap(a["shapedirs"]),
            Py2Str(b"bs_type"): Py2Str(b"lrotmin"),
        }
        _write(path, dumps(data, protocol=2))
    keys = ("v_template", "f", "shapedirs", "identity", "expression", "posedirs", "weights", "J_regressor", "parents")
    out = {k: a[k] for k in keys}
    out["kintree_table"] = kintree
    return out


# =============================================================================
# Landmark embeddings
# =============================================================================


def _bary(rng, shape) -> np.ndarray:
    return rng.dirichlet(np.ones(3), size=shape)


_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001
_TORCH_STORAGE = {
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.bool_): "BoolStorage",
}


def torch_legacy_storage_bytes(flat: np.ndarray, key: str = "94371026513744") -> bytes:
    """What ``torch.save(storage, f, _use_new_zipfile_serialization=False)`` writes for a CPU storage.

    Pickled magic number, protocol version and system info (protocol 2), the object
    pickle (just a persistent id ``('storage', torch.XStorage, key, 'cpu', numel,
    None)``), the pickled key list, then the int64 element count and the raw
    little-endian data.
    """
    flat = np.ascontiguousarray(flat).reshape(-1)
    flat = flat.astype(flat.dtype.newbyteorder("<"))
    storage_type = _TORCH_STORAGE[np.dtype(flat.dtype.newbyteorder("="))]
    sys_info = {
        "protocol_version": _TORCH_PROTOCOL,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    pid = ("storage", Global("torch", storage_type), key, "cpu", int(flat.size), None)
    return (
        pickle.dumps(_TORCH_MAGIC, protocol=2)
        + pickle.dumps(_TORCH_PROTOCOL, protocol=2)
        + pickle.dumps(sys_info, protocol=2)
        + dumps(PersistentId(pid), protocol=2)
        + pickle.dumps([key], protocol=2)
        + struct.pack("<q", flat.size)
        + flat.tobytes()
    )


def torch_tensor(storage: np.ndarray, *, size, stride, offset: int = 0, key: str = "94371026513744") -> Call:
    """A torch CPU tensor as ``pickle`` writes it (``Tensor.__reduce_ex__``): a view
    (``size``, ``stride``, ``offset``, in elements) of the 1-D ``storage``."""
    storage_obj = Call(Global("torch.storage", "_load_from_bytes"), (torch_legacy_storage_bytes(storage, key),))
    return Call(
        Global("torch._utils", "_rebuild_tensor_v2"),
        (storage_obj, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride), False,
         Call(Global("collections", "OrderedDict"), ())),
    )


def torch_tensor_from_array(a: np.ndarray, *, transposed: bool = False, key: str = "94371026513744") -> Call:
    """A pickled torch tensor equal to ``a``; with ``transposed`` its storage holds ``a``
    in reversed-axis order and the strides undo it (a non-contiguous tensor)."""
    a = np.asarray(a)
    if not transposed:
        strides = [int(np.prod(a.shape[i + 1 :])) for i in range(a.ndim)]
        return torch_tensor(a.reshape(-1), size=a.shape, stride=strides, key=key)
    t = np.ascontiguousarray(a.transpose())  # layout of a.T
    t_strides = [int(np.prod(t.shape[i + 1 :])) for i in range(t.ndim)]
    return torch_tensor(t.reshape(-1), size=a.shape, stride=t_strides[::-1], key=key)


def write_deca_landmark_embedding(
    path,
    *,
    seed: int = 0,
    num_faces: int = 9976,
    transposed: bool = False,
    numpy_module: str = "numpy.core.multiarray",
) -> dict[str, np.ndarray]:
    """Writes a DECA-style ``landmark_embedding.npy`` with random contents.

    A 0-d object array (np.save of a dict) whose static and full arrays are numpy
    arrays and whose two dynamic arrays are pickled torch tensors (``LongStorage``
    and ``FloatStorage``), byte for byte as torch pickles them, but written without
    torch. ``transposed`` stores the barycentric table as a non-contiguous
    (transposed-storage) tensor. ``numpy_module``: the array-reconstruction module
    named in the pickle (numpy 1.x, which wrote DECA's file: ``numpy.core.multiarray``;
    numpy 2.x: ``numpy._core.multiarray``).

    Returns:
      The arrays: ``static_lmk_faces_idx`` (51,) int64, ``static_lmk_bary_coords``
      (51, 3) float64, ``dynamic_lmk_faces_idx`` (79, 17) int64,
      ``dynamic_lmk_bary_coords`` (79, 17, 3) float32, ``full_lmk_faces_idx`` (1, 68),
      ``full_lmk_bary_coords`` (1, 68, 3).
    """
    rng = np.random.default_rng(seed)
    arrays = {
        "static_lmk_faces_idx": rng.integers(0, num_faces, 51).astype(np.int64),
        "static_lmk_bary_coords": _bary(rng, 51),
        "dynamic_lmk_faces_idx": rng.integers(0, num_faces, (79, 17)).astype(np.int64),
        "dynamic_lmk_bary_coords": _bary(rng, (79, 17)).astype(np.float32),
    }
    arrays["full_lmk_faces_idx"] = np.concatenate(
        [arrays["dynamic_lmk_faces_idx"][0], arrays["static_lmk_faces_idx"]]
    )[None]
    arrays["full_lmk_bary_coords"] = np.concatenate(
        [arrays["dynamic_lmk_bary_coords"][0].astype(np.float64), arrays["static_lmk_bary_coords"]]
    )[None]
    item = {
        "static_lmk_faces_idx": py3_array(arrays["static_lmk_faces_idx"], numpy_module),
        "static_lmk_bary_coords": py3_array(arrays["static_lmk_bary_coords"], numpy_module),
        "dynamic_lmk_faces_idx": torch_tensor_from_array(arrays["dynamic_lmk_faces_idx"], key="94371026513744"),
        "dynamic_lmk_bary_coords": torch_tensor_from_array(
            arrays["dynamic_lmk_bary_coords"], transposed=transposed, key="94371026513968"
        ),
        "full_lmk_faces_idx": py3_array(arrays["full_lmk_faces_idx"], numpy_module),
        "full_lmk_bary_coords": py3_array(arrays["full_lmk_bary_coords"], numpy_module),
    }
    write_npy_object(path, item, protocol=4, numpy_module=numpy_module)
    return arrays


def write_ringnet_embedding(directory, *, seed: int = 0, dynamic: bool = True, num_faces: int = 9976) -> dict[str, Any]:
    """Writes RingNet/smplx ``flame_static_embedding.pkl`` (Python-2 style pickle) and,
    with ``dynamic``, ``flame_dynamic_embedding.npy`` (np.save of a dict) into ``directory``.

    Returns:
      ``lmk_face_idx`` (51,), ``lmk_b_coords`` (51, 3), and with ``dynamic``
      ``dynamic_lmk_face_idx`` (79, 17), ``dynamic_lmk_b_coords`` (79, 17, 3); plus
      ``static_path`` / ``dynamic_path``.
    """
    d = Path(os.fspath(directory))
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "lmk_face_idx": rng.integers(0, num_faces, 51).astype(np.uint32),
        "lmk_b_coords": _bary(rng, 51),
    }
    static = {
        Py2Str(b"lmk_face_idx"): py2_array(out["lmk_face_idx"]),
        Py2Str(b"lmk_b_coords"): py2_array(out["lmk_b_coords"]),
    }
    out["static_path"] = _write(d / "flame_static_embedding.pkl", dumps(static, protocol=2))
    if dynamic:
        out["dynamic_lmk_face_idx"] = rng.integers(0, num_faces, (79, 17)).astype(np.int64)
        out["dynamic_lmk_b_coords"] = _bary(rng, (79, 17))
        out["dynamic_path"] = d / "flame_dynamic_embedding.npy"
        np.save(
            out["dynamic_path"],
            {"lmk_face_idx": out["dynamic_lmk_face_idx"], "lmk_b_coords": out["dynamic_lmk_b_coords"]},
            allow_pickle=True,
        )
    return out


def write_mediapipe_embedding(path, *, seed: int = 0, num_faces: int = 9976) -> dict[str, np.ndarray]:
    """Writes a MediaPipe ``mediapipe_landmark_embedding.npz`` (105 points) with random contents."""
    rng = np.random.default_rng(seed)
    arrays = {
        "lmk_face_idx": rng.integers(0, num_faces, 105).astype(np.int64),
        "lmk_b_coords": _bary(rng, 105),
        "landmark_indices": np.sort(rng.choice(468, 105, replace=False)).astype(np.int64),
    }
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return arrays


# =============================================================================
# Hostile files
# =============================================================================


def write_pickle_calling(path, module: str, name: str, *args) -> Path:
    """Writes a pickle that, read by plain ``pickle``, calls ``module.name(*args)``.

    Written as bytes: nothing is imported or called here. A ``.npy`` path gets an
    object-array ``.npy`` whose dict holds the call (as a poisoned embedding would).
    """
    call = Call(Global(module, name), args)
    if Path(os.fspath(path)).suffix == ".npy":
        return write_npy_object(path, {"static_lmk_faces_idx": call}, protocol=4)
    return _write(path, dumps({"v_template": call}, protocol=2))


def write_malicious_pickle(path, marker_path, *, via: str = "os.system") -> Path:
    """Writes a pickle whose unpickling would create ``marker_path`` (``touch``).

    ``via``: ``"os.system"`` (``os.system("touch ...")``, the classic ``__reduce__``
    exploit) or ``"builtins.eval"`` (evaluates an expression doing the same).
    A ``.npy`` path gets an object-array ``.npy`` payload. Nothing runs while writing.
    """
    command = f"touch {shlex.quote(os.fspath(marker_path))}"
    if via == "os.system":
        return write_pickle_calling(path, "os", "system", command)
    if via == "builtins.eval":
        return write_pickle_calling(path, "builtins", "eval", f"__import__('os').system({command!r})")
    raise ValueError(f"unknown via={via!r}")


# ------------------------------------------------------------- memory bombs (tiny files, huge asks)


def write_zero_stride_npy(path, *, side: int = 2**14, copies: int = 3) -> Path:
    """A DECA-style ``.npy`` whose ``copies`` torch tensors are ``side``×``side`` float32 views with
    stride 0 of a one-element storage: under a kilobyte on disk, ``copies × side² × 4`` bytes if
    materialized (1 GiB each at the default side)."""
    one = np.zeros(1, np.float32)
    item = {
        f"dynamic_lmk_bary_coords_{i}": torch_tensor(one, size=(side, side), stride=(0, 0), key=str(1000 + i))
        for i in range(copies)
    }
    item["static_lmk_faces_idx"] = py3_array(np.zeros(51, np.int64))
    return write_npy_object(path, item, protocol=4)


def write_list_dag_pickle(path, *, depth: int = 34, key: str = "v_template") -> Path:
    """A FLAME-layout pickle whose ``key`` is a list DAG (each level a list holding the level below
    twice, through the pickle memo): under a kilobyte, ``2**depth`` numbers once expanded."""
    level: Any = [0.0]
    for _ in range(depth):
        level = [level, level]
    data = _small_flame_dict()
    data[key] = level
    return _write(path, dumps(data, protocol=2))


def write_counted_bytes_pickle(path, *, declared: int = 2**40) -> Path:
    """A pickle whose BINBYTES8 opcode declares ``declared`` bytes and holds none (the C unpickler
    allocates the declared size before reading)."""
    return _write(path, b"\x80\x04" + b"\x8e" + struct.pack("<Q", declared) + b".")


def write_sparse_regressor_pickle(path, *, shape=(16384, 16384), fmt: str = "coo", seed: int = 0) -> Path:
    """A FLAME-layout pickle (small arrays) whose ``J_regressor`` sparse matrix declares ``shape``
    (``coo``: any shape from a few entries; ``csc``: an index pointer of ``shape[1] + 1``)."""
    if fmt == "coo":
        reg = New(
            Global("scipy.sparse._coo", "coo_matrix"),
            (),
            {
                "_shape": tuple(int(s) for s in shape),
                "row": py3_array(np.zeros(3, np.int64)),
                "col": py3_array(np.arange(3, dtype=np.int64)),
                "data": py3_array(np.ones(3)),
            },
        )
    else:
        cols = int(shape[1])
        reg = New(
            Global("scipy.sparse._csc", "csc_matrix"),
            (),
            {
                "_shape": (int(shape[0]), cols),
                "indices": py3_array(np.zeros(1, np.int32)),
                "indptr": py3_array(np.concatenate([[0], np.ones(cols, np.int32)]).astype(np.int32)),
                "data": py3_array(np.ones(1)),
            },
        )
    data = _small_flame_dict(seed)
    data["J_regressor"] = reg
    return _write(path, dumps(data, protocol=4))


def _small_flame_dict(seed: int = 0, v: int = 6) -> dict:
    """The keys of a FLAME pickle with tiny arrays (6 vertices, 5 joints), for hostile variants."""
    rng = np.random.default_rng(seed)
    return {
        "v_template": py3_array(rng.normal(size=(v, 3))),
        "f": py3_array(np.zeros((2, 3), np.uint32)),
        "shapedirs": py3_array(np.zeros((v, 3, 4))),
        "posedirs": py3_array(np.zeros((v, 3, 36))),
        "weights": py3_array(np.full((v, 5), 0.2)),
        "kintree_table": py3_array(np.array([[0, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64)),
        "J_regressor": py3_array(np.full((5, v), 1.0 / v)),
    }


def write_npz_bomb(path, *, inflated: int = 2**28, declared_shape=None, lie: bool = False) -> Path:
    """An ``.npz`` whose one member inflates to about ``inflated`` bytes from a tiny deflate stream.

    ``declared_shape``: the member's ``.npy`` header declares this shape (float64) whatever the data
    (an allocation asked for by a header alone). ``lie``: the zip headers declare the member as 64
    bytes while its deflate stream inflates to ``inflated``.
    """
    shape = tuple(declared_shape) if declared_shape is not None else (inflated // 8,)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f8", "fortran_order": False, "shape": shape})
    header = head.getvalue()
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunks, crc, size = [comp.compress(header)], zlib.crc32(header), len(header)
    left = (inflated // 8) * 8
    while left > 0:
        block = bytes(min(left, 2**20))
        chunks.append(comp.compress(block))
        crc, size, left = zlib.crc32(block, crc), size + len(block), left - len(block)
    chunks.append(comp.flush())
    body = b"".join(chunks)
    info = zipfile.ZipInfo("x.npy", date_time=(2020, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.CRC = crc
    info.compress_size = len(body)
    info.file_size = 64 if lie else size
    local = info.FileHeader(zip64=False)
    central_offset = len(local) + len(body)
    central = _central_record(info, 0)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), central_offset, 0)
    return _write(path, local + body + central + end)


def _central_record(info, header_offset: int) -> bytes:
    name = info.filename.encode()
    dostime = info.date_time[3] << 11 | info.date_time[4] << 5 | info.date_time[5] // 2
    dosdate = (info.date_time[0] - 1980) << 9 | info.date_time[1] << 5 | info.date_time[2]
    return struct.pack(
        "<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, info.compress_type, dostime, dosdate,
        info.CRC, info.compress_size, info.file_size, len(name), 0, 0, 0, 0, 0, header_offset,
    ) + name


def write_empty_array_embedding(path) -> Path:
    """A valid RingNet-style embedding pickle (Python 3, protocol 2) holding one empty array next to
    the real ones, as ``pickle.dumps`` writes it (an empty array's data is pickled as ``bytes()``)."""
    rng = np.random.default_rng(0)
    d = {
        "lmk_face_idx": rng.integers(0, 100, 51).astype(np.uint32),
        "lmk_b_coords": _bary(rng, 51),
        "unused": np.zeros((0, 3)),
    }
    return _write(path, pickle.dumps(d, protocol=2))
