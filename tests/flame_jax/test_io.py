"""flame_jax.io: FLAME pickles, project .npz, landmark embeddings, and the restricted unpickler.

Every file here is synthetic (flame_jax.testing): random contents in the official layouts.
Neither torch nor chumpy is needed.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import subprocess
import sys

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from flame_jax import io as fio
from flame_jax import testing as ft
from flame_jax.io import (
    UnsafeModelFileError,
    load_landmark_embedding,
    load_model,
    save_landmark_embedding,
    save_model,
)
from flame_jax.lbs import forward

SMALL = dict(num_vertices=60, num_faces=100)


def _np(x):
    return np.asarray(x)


def _assert_model_matches(model, written, n_shape=None, n_expr=None):
    ident, expr = written["identity"], written["expression"]
    if n_shape is not None:
        ident = ident[..., :n_shape]
    if n_expr is not None:
        expr = expr[..., :n_expr]
    v = written["v_template"].shape[0]
    assert _np(model.v_template).dtype == np.float32
    assert _np(model.faces).dtype == np.int32
    np.testing.assert_array_equal(_np(model.v_template), written["v_template"].astype(np.float32))
    np.testing.assert_array_equal(_np(model.shapedirs)[..., : ident.shape[-1]], ident.astype(np.float32))
    np.testing.assert_array_equal(_np(model.exprdirs), expr.astype(np.float32))
    np.testing.assert_array_equal(_np(model.posedirs), written["posedirs"].reshape(v * 3, 36).T.astype(np.float32))
    np.testing.assert_array_equal(_np(model.lbs_weights), written["weights"].astype(np.float32))
    np.testing.assert_array_equal(_np(model.joint_regressor), written["J_regressor"].astype(np.float32))
    np.testing.assert_array_equal(_np(model.faces), written["f"].astype(np.int32))
    assert model.parents == (-1, 0, 1, 1, 1)


# ----------------------------------------------------------------------------- models


def test_flame2020_full_layout(tmp_path):
    """The real FLAME 2020 layout (5023 v, 9976 f, 400 components, chumpy, private SciPy path) loads."""
    path = tmp_path / "generic_model.pkl"
    written = ft.write_flame2020_pickle(path, seed=3)
    # The file really has the awkward parts: chumpy objects, the private SciPy path, Python 2 strings.
    names = {arg for op, arg, _ in pickletools.genops(path.read_bytes()) if op.name == "GLOBAL"}
    assert {"chumpy.ch Ch", "scipy.sparse.csc csc_matrix", "numpy.core.multiarray _reconstruct"} <= names
    model = load_model(path)
    assert model.name == "FLAME (generic_model.pkl)"
    assert (model.num_vertices, model.num_faces, model.num_joints) == (5023, 9976, 5)
    assert model.shapedirs.shape == (5023, 3, 300)
    assert model.exprdirs.shape == (5023, 3, 100)
    assert model.posedirs.shape == (36, 15069)
    _assert_model_matches(model, written)
    np.testing.assert_allclose(_np(model.joint_template), written["J_regressor"] @ written["v_template"], atol=1e-6)


def test_truncation(tmp_path):
    path = tmp_path / "generic_model.pkl"
    written = ft.write_flame2020_pickle(path, seed=1, **SMALL)
    model = load_model(path, n_shape=10, n_expr=5)
    assert (model.num_shape, model.num_expression) == (10, 5)
    _assert_model_matches(model, written, n_shape=10, n_expr=5)
    model = load_model(path, n_shape=0, n_expr=100)
    assert (model.num_shape, model.num_expression) == (0, 100)
    for kwargs in (dict(n_shape=301), dict(n_expr=101), dict(n_shape=-1)):
        with pytest.raises(ValueError, match="generic_model.pkl"):
            load_model(path, **kwargs)


def test_writer_pads_identity_to_300(tmp_path):
    """Fewer identity components: the file still starts expressions at column 300."""
    path = tmp_path / "generic_model.pkl"
    written = ft.write_flame2020_pickle(path, seed=2, n_shape=20, n_expr=10, **SMALL)
    model = load_model(path, n_shape=20)
    assert (model.num_shape, model.num_expression) == (20, 10)
    _assert_model_matches(model, written)


@pytest.mark.parametrize("chumpy", [True, False])
@pytest.mark.parametrize("private", [True, False])
def test_flame2020_variants(tmp_path, chumpy, private):
    path = tmp_path / "flame2023.pkl"
    written = ft.write_flame2020_pickle(path, seed=4, chumpy=chumpy, private_scipy_path=private, **SMALL)
    model = load_model(path)
    assert model.name == "FLAME (flame2023.pkl)"
    _assert_model_matches(model, written)


def test_flame2023_open(tmp_path):
    path = tmp_path / "flame2023_Open.pkl"
    written = ft.write_flame2020_pickle(path, seed=5, open_2023=True, **SMALL)
    with open(path, "rb") as f:  # a plain pickle with the extra key (safe to read: we wrote it)
        assert "supr_expression_metadata" in pickle.load(f)
    model = load_model(path)
    _assert_model_matches(model, written)
    assert written["kintree_table"].dtype == np.int64


def _flame_dict(written, jreg):
    return {
        "v_template": written["v_template"],
        "f": written["f"],
        "shapedirs": written["shapedirs"],
        "posedirs": written["posedirs"],
        "J_regressor": jreg,
        "weights": written["weights"],
        "kintree_table": written["kintree_table"],
        "bs_style": "lbs",
    }


@pytest.mark.parametrize("protocol,private", [(0, False), (0, True), (2, False), (2, True), (4, False), (5, False)])
def test_real_scipy_pickles(tmp_path, protocol, private):
    """csc_matrix pickled by the real pickle module (NEWOBJ, or copyreg._reconstructor at
    protocol 0), also under the old private module path scipy.sparse.csc."""
    written = ft.write_flame2020_pickle(tmp_path / "x.pkl", seed=6, **SMALL)
    data = pickle.dumps(_flame_dict(written, sp.csc_matrix(written["J_regressor"])), protocol=protocol)
    if private:  # text GLOBAL opcodes at protocols 0-2: the module name can be swapped in place
        assert b"scipy.sparse._csc" in data
        data = data.replace(b"scipy.sparse._csc", b"scipy.sparse.csc")
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(data)
    _assert_model_matches(load_model(path), written)


def test_csr_and_dense_regressor(tmp_path):
    written = ft.write_flame2020_pickle(tmp_path / "x.pkl", seed=7, **SMALL)
    for jreg in (sp.csr_matrix(written["J_regressor"]), written["J_regressor"]):
        path = tmp_path / "model.pkl"
        path.write_bytes(pickle.dumps(_flame_dict(written, jreg), protocol=2))
        _assert_model_matches(load_model(path), written)


def test_chumpy_select(tmp_path):
    """A chumpy Select object: a.ravel()[idxs].reshape(preferred_shape)."""
    written = ft.write_flame2020_pickle(tmp_path / "x.pkl", seed=8, **SMALL)
    posedirs = written["posedirs"]
    flat = posedirs.ravel()
    perm = np.random.default_rng(0).permutation(flat.size)
    source = np.empty_like(flat)
    source[perm] = flat  # source[perm][i] == flat[i]
    d = {k: ft.py2_array(v) for k, v in _flame_dict(written, written["J_regressor"]).items() if k != "bs_style"}
    d["posedirs"] = ft.chumpy_select(source, perm, posedirs.shape)
    path = tmp_path / "model.pkl"
    path.write_bytes(ft.dumps(d, protocol=2))
    _assert_model_matches(load_model(path), written)


def test_chumpy_without_array_is_an_error(tmp_path):
    written = ft.write_flame2020_pickle(tmp_path / "x.pkl", seed=8, **SMALL)
    d = {k: ft.py2_array(v) for k, v in _flame_dict(written, written["J_regressor"]).items() if k != "bs_style"}
    d["shapedirs"] = ft.New(ft.Global("chumpy.ch_ops", "add"), (), {"a": 1, "b": 2})
    path = tmp_path / "model.pkl"
    path.write_bytes(ft.dumps(d, protocol=2))
    with pytest.raises(ValueError, match=r"model\.pkl.*shapedirs.*chumpy"):
        load_model(path)


def test_npz_round_trip_bit_exact(tmp_path):
    written = ft.write_flame2020_pickle(tmp_path / "generic_model.pkl", seed=9, **SMALL)
    model = load_model(tmp_path / "generic_model.pkl", n_shape=30, n_expr=7)
    out = tmp_path / "model.npz"
    save_model(model, out)
    assert sorted(os.listdir(tmp_path)) == ["generic_model.pkl", "model.npz"]  # no temp files left
    back = load_model(out)
    assert back.name == model.name and back.parents == model.parents
    assert (back.num_shape, back.num_expression) == (30, 7)
    la, ta = jax.tree_util.tree_flatten(model)
    lb, tb = jax.tree_util.tree_flatten(back)
    assert ta == tb
    for a, b in zip(la, lb):
        a, b = _np(a), _np(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    _assert_model_matches(back, written, n_shape=30, n_expr=7)
    # truncation on load of our own format, and the npz is plain (no pickles)
    assert load_model(out, n_shape=3, n_expr=2).num_shape == 3
    with np.load(out, allow_pickle=False) as z:
        assert str(z["format"]) == fio.MODEL_FORMAT
    # the exact path is written, whatever its suffix
    save_model(model, tmp_path / "model.bin")
    assert (tmp_path / "model.bin").exists() and load_model(tmp_path / "model.bin").name == model.name


def test_forward_on_loaded_model(tmp_path):
    ft.write_flame2020_pickle(tmp_path / "generic_model.pkl", seed=10, **SMALL)
    model = load_model(tmp_path / "generic_model.pkl", n_shape=100, n_expr=50)
    rng = np.random.default_rng(0)
    out = forward(
        model,
        shape=rng.normal(size=(4, 100)).astype(np.float32),
        expression=rng.normal(size=(4, 50)).astype(np.float32),
        pose=0.1 * rng.normal(size=(4, 15)).astype(np.float32),
        translation=np.zeros((4, 3), np.float32),
    )
    assert out.vertices.shape == (4, 60, 3) and out.joints.shape == (4, 5, 3)
    assert np.all(np.isfinite(_np(out.vertices)))


# ------------------------------------------------------------------ landmark embeddings


@pytest.mark.parametrize("transposed", [False, True])
def test_deca_embedding(tmp_path, transposed):
    path = tmp_path / "landmark_embedding.npy"
    written = ft.write_deca_landmark_embedding(path, seed=1, transposed=transposed)
    names = {arg for op, arg, _ in pickletools.genops(path.read_bytes()[128:]) if op.name == "SHORT_BINUNICODE"}
    assert {"torch._utils", "_rebuild_tensor_v2", "torch.storage", "_load_from_bytes"} <= names
    emb = load_landmark_embedding(path)
    assert emb.kind == "ibug68" and emb.num_landmarks == 68
    assert _np(emb.face_idx).dtype == np.int32 and _np(emb.bary_coords).dtype == np.float32
    np.testing.assert_array_equal(_np(emb.face_idx), written["static_lmk_faces_idx"])
    np.testing.assert_array_equal(_np(emb.bary_coords), written["static_lmk_bary_coords"].astype(np.float32))
    np.testing.assert_array_equal(_np(emb.dynamic_face_idx), written["dynamic_lmk_faces_idx"])
    np.testing.assert_array_equal(_np(emb.dynamic_bary_coords), written["dynamic_lmk_bary_coords"])
    assert _np(emb.dynamic_face_idx).dtype == np.int32 and _np(emb.dynamic_bary_coords).dtype == np.float32


def test_torch_tensor_decoding_dtypes_and_views(tmp_path):
    """Pickled torch tensors of several dtypes, with offsets, strides (incl. 0) and empty shapes."""
    rng = np.random.default_rng(0)
    storage64 = rng.normal(size=40)
    cases = {
        "f64_offset_T": (ft.torch_tensor(storage64, size=(3, 4), stride=(1, 5), offset=7),
                         np.lib.stride_tricks.as_strided(storage64[7:], (3, 4), (8, 40))),
        "i32": (ft.torch_tensor_from_array(np.arange(12, dtype=np.int32).reshape(3, 4)),
                np.arange(12, dtype=np.int32).reshape(3, 4)),
        "f16": (ft.torch_tensor_from_array(np.arange(6, dtype=np.float16)), np.arange(6, dtype=np.float16)),
        "bool": (ft.torch_tensor_from_array(np.array([True, False, True])), np.array([True, False, True])),
        "expanded": (ft.torch_tensor(storage64[:3], size=(3, 4), stride=(1, 0)), np.repeat(storage64[:3, None], 4, 1)),
        "empty": (ft.torch_tensor(storage64[:0], size=(0, 3), stride=(3, 1)), np.zeros((0, 3))),
        "scalar": (ft.torch_tensor(storage64[:1], size=(), stride=()), np.float64(storage64[0])),
    }
    path = tmp_path / "t.npy"
    ft.write_npy_object(path, {k: v[0] for k, v in cases.items()})
    got = fio._read_npy(path)[()]
    for k, (_, expected) in cases.items():
        np.testing.assert_array_equal(got[k], expected, err_msg=k)
        assert got[k].dtype == np.asarray(expected).dtype, k


def test_torch_tensor_out_of_bounds_refused(tmp_path):
    path = tmp_path / "landmark_embedding.npy"
    ft.write_npy_object(path, {"x": ft.torch_tensor(np.arange(10.0), size=(4, 4), stride=(4, 1))})
    with pytest.raises(ValueError, match="landmark_embedding.npy"):
        load_landmark_embedding(path)


def test_torch_stream_bad_persistent_id(tmp_path):
    stream = ft.torch_legacy_storage_bytes(np.arange(4, dtype=np.int64))
    bad = stream.replace(b"storage", b"os.syst")  # a persistent id that is not a storage
    path = tmp_path / "landmark_embedding.npy"
    ft.write_npy_object(path, {"x": ft.Call(ft.Global("torch.storage", "_load_from_bytes"), (bad,))})
    with pytest.raises(UnsafeModelFileError, match="persistent id"):
        load_landmark_embedding(path)
    # a persistent id outside a torch stream
    path.write_bytes(ft.dumps(ft.PersistentId(("storage", 1)), protocol=2))
    with pytest.raises(UnsafeModelFileError, match="persistent id"):
        load_model(path)


@pytest.mark.parametrize("cut", [0.3, 0.9, 0.999])
def test_truncated_torch_stream(tmp_path, cut):
    stream = ft.torch_legacy_storage_bytes(np.arange(40, dtype=np.float32))
    path = tmp_path / "landmark_embedding.npy"
    ft.write_npy_object(
        path, {"x": ft.Call(ft.Global("torch.storage", "_load_from_bytes"), (stream[: int(len(stream) * cut)],))}
    )
    with pytest.raises(ValueError, match="landmark_embedding.npy"):
        load_landmark_embedding(path)


def test_ringnet_embedding(tmp_path):
    written = ft.write_ringnet_embedding(tmp_path / "with", seed=2)
    for path in (written["static_path"], written["dynamic_path"]):  # either file of the pair
        emb = load_landmark_embedding(path)
        assert emb.kind == "ibug68"
        np.testing.assert_array_equal(_np(emb.face_idx), written["lmk_face_idx"].astype(np.int32))
        np.testing.assert_array_equal(_np(emb.bary_coords), written["lmk_b_coords"].astype(np.float32))
        np.testing.assert_array_equal(_np(emb.dynamic_face_idx), written["dynamic_lmk_face_idx"].astype(np.int32))
        np.testing.assert_array_equal(_np(emb.dynamic_bary_coords), written["dynamic_lmk_b_coords"].astype(np.float32))
    static_only = ft.write_ringnet_embedding(tmp_path / "without", seed=3, dynamic=False)
    emb = load_landmark_embedding(static_only["static_path"])
    assert emb.kind == "static" and emb.dynamic_face_idx is None and emb.num_landmarks == 51
    np.testing.assert_array_equal(_np(emb.face_idx), static_only["lmk_face_idx"].astype(np.int32))
    # a dynamic table with no static file beside it
    lone = tmp_path / "lone"
    lone.mkdir()
    os.replace(written["dynamic_path"], lone / "flame_dynamic_embedding.npy")
    with pytest.raises(ValueError, match="flame_static_embedding.pkl"):
        load_landmark_embedding(lone / "flame_dynamic_embedding.npy")


def test_mediapipe_embedding(tmp_path):
    path = tmp_path / "mediapipe_landmark_embedding.npz"
    written = ft.write_mediapipe_embedding(path, seed=4)
    emb = load_landmark_embedding(path)
    assert emb.kind == "mediapipe" and emb.num_landmarks == 105
    np.testing.assert_array_equal(_np(emb.face_idx), written["lmk_face_idx"].astype(np.int32))
    np.testing.assert_array_equal(_np(emb.bary_coords), written["lmk_b_coords"].astype(np.float32))
    np.testing.assert_array_equal(_np(emb.landmark_indices), written["landmark_indices"].astype(np.int32))


def test_embedding_round_trips(tmp_path):
    ft.write_deca_landmark_embedding(tmp_path / "deca.npy", seed=5)
    ft.write_mediapipe_embedding(tmp_path / "mp.npz", seed=5)
    ft.write_ringnet_embedding(tmp_path / "rn", seed=5, dynamic=False)
    for src in (tmp_path / "deca.npy", tmp_path / "mp.npz", tmp_path / "rn" / "flame_static_embedding.pkl"):
        emb = load_landmark_embedding(src)
        out = tmp_path / f"{src.stem}_own.npz"
        save_landmark_embedding(emb, out)
        back = load_landmark_embedding(out)
        assert back.kind == emb.kind
        la, ta = jax.tree_util.tree_flatten(emb)
        lb, tb = jax.tree_util.tree_flatten(back)
        assert ta == tb
        for a, b in zip(la, lb):
            assert _np(a).dtype == _np(b).dtype and _np(a).tobytes() == _np(b).tobytes()


def test_embedding_checked_against_model(tmp_path):
    ft.write_flame2020_pickle(tmp_path / "generic_model.pkl", seed=11, **SMALL)
    model = load_model(tmp_path / "generic_model.pkl")
    ok = tmp_path / "ok.npy"
    ft.write_deca_landmark_embedding(ok, num_faces=model.num_faces)
    assert load_landmark_embedding(ok, model=model).kind == "ibug68"
    too_big = tmp_path / "landmark_embedding.npy"
    ft.write_deca_landmark_embedding(too_big, num_faces=9976)  # indices for the full mesh
    with pytest.raises(ValueError, match=r"landmark_embedding\.npy.*out of range"):
        load_landmark_embedding(too_big, model=model)


# --------------------------------------------------------------------------- safety


@pytest.mark.parametrize("via,forbidden", [("os.system", "os.system"), ("builtins.eval", "builtins.eval")])
@pytest.mark.parametrize("name", ["generic_model.pkl", "landmark_embedding.npy"])
def test_malicious_pickles_refused(tmp_path, via, forbidden, name):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    ft.write_malicious_pickle(path, marker, via=via)
    assert not marker.exists()  # nothing ran while writing
    loader = load_model if name.endswith(".pkl") else load_landmark_embedding
    with pytest.raises(UnsafeModelFileError) as err:
        loader(path)
    assert forbidden in str(err.value) and name in str(err.value)
    assert isinstance(err.value, ValueError)
    assert not marker.exists()
    if name.endswith(".pkl"):  # the landmark loader reads .pkl files too
        with pytest.raises(UnsafeModelFileError):
            load_landmark_embedding(path)
        assert not marker.exists()


def test_malicious_pickle_is_live(tmp_path):
    """The refused file really is an exploit: plain pickle (in a child process) runs it."""
    marker = tmp_path / "pwned"
    path = tmp_path / "generic_model.pkl"
    ft.write_malicious_pickle(path, marker)
    code = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
    subprocess.run([sys.executable, "-c", code, str(path)], check=False, capture_output=True, timeout=60)
    assert marker.exists()


@pytest.mark.parametrize(
    "module,name",
    [("builtins", "getattr"), ("builtins", "__import__"), ("subprocess", "Popen"), ("posix", "system"),
     ("functools", "partial"), ("numpy", "load"), ("numpy.testing", "assert_equal"), ("torch", "load"),
     ("scipy.sparse", "load_npz"), ("chumpy.ch", "not an identifier"), ("__builtin__", "exec")],
)
def test_other_globals_refused(tmp_path, module, name):
    path = tmp_path / "generic_model.pkl"
    ft.write_pickle_calling(path, module, name, "x")
    with pytest.raises(UnsafeModelFileError, match="generic_model.pkl"):
        load_model(path)


def test_allowed_callables_cannot_be_tampered_with(tmp_path):
    """BUILD on an allow-listed global (to set attributes on it) fails, and later loads are unaffected."""
    targets = [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("chumpy.ch", "Ch"),
        ("scipy.sparse", "csc_matrix"),
        ("torch", "LongStorage"),
        ("collections", "OrderedDict"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("copy_reg", "_reconstructor"),
    ]
    for module, name in targets:
        glob = f"c{module}\n{name}\n".encode()
        data = ft.dumps({"x": ft.Global(module, name)}, protocol=2)
        assert glob in data
        # state (None, {'__call__': None}) then BUILD, right after the GLOBAL
        data = data.replace(glob, glob + b"N}U\x08__call__Ns\x86" + pickle.BUILD, 1)
        path = tmp_path / "generic_model.pkl"
        path.write_bytes(data)
        with pytest.raises(ValueError, match="generic_model.pkl"):
            load_model(path)
    ft.write_flame2020_pickle(tmp_path / "ok.pkl", seed=1, **SMALL)
    ft.write_deca_landmark_embedding(tmp_path / "ok.npy")
    load_model(tmp_path / "ok.pkl")
    assert load_landmark_embedding(tmp_path / "ok.npy").kind == "ibug68"


def _dtype(descr, state):
    return ft.Call(ft.Global("numpy", "dtype"), (descr, False, True), state)


def _array(shape, dtype, data, fortran=False):
    """A pickled ndarray: _reconstruct(ndarray, (0,), b'b') + BUILD((1, shape, dtype, fortran, data))."""
    return ft.Call(
        ft.Global("numpy.core.multiarray", "_reconstruct"),
        (ft.Global("numpy", "ndarray"), (0,), b"b"),
        (1, shape, dtype, fortran, data),
    )


_OBJ_DTYPE = _dtype("O8", (3, "|", None, None, None, -1, -1, 63))
_POINTERS = b"\x10" * 8
_HOSTILE_NUMPY = {
    # ndarray(shape, object dtype, buffer) forges object pointers: a segfault with real numpy
    "ndarray-buffer": ft.Call(ft.Global("numpy", "ndarray"), ((1,), _OBJ_DTYPE, _POINTERS)),
    # an object array whose state is raw bytes instead of a list
    "object-array-bytes": _array((1,), _OBJ_DTYPE, _POINTERS),
    # structured dtypes with an object field (void descr, or fields smuggled in through the state)
    "structured-dtype": _array((1,), _dtype("V8", (3, "|", None, ("a",), {"a": (_OBJ_DTYPE, 0)}, 8, 1, 0)), _POINTERS),
    "structured-state": _array((1,), _dtype("f8", (3, "|", None, ("a",), {"a": (_OBJ_DTYPE, 0)}, 8, 1, 0)), _POINTERS),
    "object-scalar": ft.Call(ft.Global("numpy.core.multiarray", "scalar"), (_OBJ_DTYPE, _POINTERS)),
    "object-frombuffer": ft.Call(ft.Global("numpy._core.numeric", "_frombuffer"), (_POINTERS, _OBJ_DTYPE, (1,), "C")),
    "short-data": _array((1000,), ft.py3_dtype(np.float64), b"\x00" * 8),
}


def test_numpy_reconstruction_is_hardened(tmp_path):
    """Pickled numpy objects are rebuilt by the loader, never by numpy's constructors from file data.

    Runs in a child process so that a regression shows up as a failed test, not a crashed run."""
    paths = []
    for name, payload in _HOSTILE_NUMPY.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(ft.dumps({"v_template": payload}, protocol=2))
        paths.append(str(path))
    code = (
        "import sys\n"
        "from flame_jax.io import load_model\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n        load_model(p)\n        print('LOADED', p)\n"
        "    except ValueError as e:\n        print('REFUSED', e)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=120, cwd=root)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == len(paths)
    for line, path in zip(lines, paths):
        assert line.startswith("REFUSED") and path in line, line


def test_python2_and_big_endian_arrays(tmp_path):
    written = ft.write_flame2020_pickle(tmp_path / "x.pkl", seed=14, **SMALL)
    d = {k: ft.py2_array(v) for k, v in _flame_dict(written, written["J_regressor"]).items() if k != "bs_style"}
    big = written["posedirs"].astype(">f8")
    d["posedirs"] = _array(big.shape, _dtype("f8", (3, ">", None, None, None, -1, -1, 0)), big.tobytes())
    fortran = np.asfortranarray(written["weights"])
    d["weights"] = _array(fortran.shape, ft.py3_dtype(np.float64), fortran.tobytes(order="F"), fortran=True)
    path = tmp_path / "model.pkl"
    path.write_bytes(ft.dumps(d, protocol=2))
    _assert_model_matches(load_model(path), written)


# ------------------------------------------------------------------------- bad input


def _write_flame(tmp_path, name="model.pkl", **changes):
    written = ft.write_flame2020_pickle(tmp_path / "src.pkl", seed=12, **SMALL)
    d = _flame_dict(written, sp.csc_matrix(written["J_regressor"]))
    for k, v in changes.items():
        if v is None:
            del d[k]
        else:
            d[k] = v
    path = tmp_path / name
    path.write_bytes(pickle.dumps(d, protocol=2))
    return path


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: _write_flame(p, weights=None), id="missing-key"),
        pytest.param(lambda p: _write_flame(p, weights=np.ones((60, 4))), id="wrong-shape-weights"),
        pytest.param(lambda p: _write_flame(p, shapedirs=np.ones((60, 3))), id="wrong-shape-shapedirs"),
        pytest.param(lambda p: _write_flame(p, posedirs=np.ones((60, 3, 35))), id="wrong-shape-posedirs"),
        pytest.param(lambda p: _write_flame(p, kintree_table=np.zeros((3, 5), np.int64)), id="wrong-kintree"),
        pytest.param(lambda p: _write_flame(p, f=np.full((10, 3), 999, np.uint32)), id="face-out-of-range"),
        pytest.param(lambda p: _write_flame(p, v_template="not an array"), id="string-array"),
        pytest.param(lambda p: _write_flame(p, v_template=np.full((60, 3), np.nan)), id="nan"),
        pytest.param(lambda p: _write_flame(p, J_regressor=sp.csc_matrix(np.ones((5, 59)))), id="wrong-regressor"),
    ],
)
def test_bad_model_content(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=r"model\.pkl"):
        load_model(path)


def _bad_file(tmp_path, kind):
    path = tmp_path / "model.pkl"
    good = ft.write_flame2020_pickle(tmp_path / "good.pkl", seed=13, **SMALL)
    data = (tmp_path / "good.pkl").read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-end":
        path.write_bytes(data[:-1])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("v 0 0 0\nf 1 2 3\n")
    elif kind == "not-a-dict":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    elif kind == "npy-numeric":
        path = tmp_path / "model.npy"
        np.save(path, np.zeros(3))
    elif kind == "npz-missing":
        path = tmp_path / "model.npz"
        model = load_model(tmp_path / "good.pkl")
        save_model(model, path)
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "weights"}
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    elif kind == "npz-foreign":
        path = tmp_path / "model.npz"
        with open(path, "wb") as f:
            np.savez(f, a=np.zeros(3))
    elif kind == "npz-wrong-format":
        path = tmp_path / "model.npz"
        with open(path, "wb") as f:
            np.savez(f, format=np.array("flame_jax-model-v99"), v_template=good["v_template"])
    elif kind == "npz-truncated":
        path = tmp_path / "model.npz"
        save_model(load_model(tmp_path / "good.pkl"), tmp_path / "full.npz")
        full = (tmp_path / "full.npz").read_bytes()
        path.write_bytes(full[: len(full) // 3])
    elif kind == "npz-object-array":
        path = tmp_path / "model.npz"
        with open(path, "wb") as f:
            np.savez(f, format=np.array(fio.MODEL_FORMAT), v_template=np.array([{"a": 1}], dtype=object))
    return path


@pytest.mark.parametrize(
    "kind",
    ["truncated", "truncated-end", "random", "empty", "text", "not-a-dict", "npy-numeric", "npz-missing",
     "npz-foreign", "npz-wrong-format", "npz-truncated", "npz-object-array"],
)
def test_bad_model_files(tmp_path, kind):
    path = _bad_file(tmp_path, kind)
    with pytest.raises(ValueError) as err:
        load_model(path)
    assert path.name in str(err.value)
    with pytest.raises(ValueError) as err:
        load_landmark_embedding(path)
    assert path.name in str(err.value)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param({"static_lmk_faces_idx": np.zeros(51, np.int64)}, id="deca-missing-keys"),
        pytest.param({"lmk_face_idx": np.zeros(51, np.int64), "lmk_b_coords": np.zeros((50, 3))}, id="bary-shape"),
        pytest.param({"lmk_face_idx": np.zeros(51), "lmk_b_coords": np.zeros((51, 3))}, id="float-indices"),
        pytest.param({"lmk_face_idx": -np.ones(51, np.int64), "lmk_b_coords": np.zeros((51, 3))}, id="negative"),
        pytest.param({"something": np.zeros(3)}, id="foreign-dict"),
    ],
)
def test_bad_embeddings(tmp_path, content):
    path = tmp_path / "embedding.npy"
    np.save(path, content, allow_pickle=True)
    with pytest.raises(ValueError, match=r"embedding\.npy"):
        load_landmark_embedding(path)


def test_bad_own_embedding_npz(tmp_path):
    path = tmp_path / "emb.npz"
    with open(path, "wb") as f:
        np.savez(f, format=np.array(fio.EMBEDDING_FORMAT), kind=np.array("ibug68"),
                 face_idx=np.zeros(51, np.int32), bary_coords=np.zeros((51, 3), np.float32))
    with pytest.raises(ValueError, match=r"emb\.npz.*ibug68"):
        load_landmark_embedding(path)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope" / "generic_model.pkl"
    with pytest.raises(FileNotFoundError, match="generic_model.pkl"):
        load_model(missing)
    with pytest.raises(FileNotFoundError, match="generic_model.pkl"):
        load_landmark_embedding(missing)
    with pytest.raises(ValueError, match="directory"):
        load_model(tmp_path)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_mutated_files_fail_cleanly(tmp_path):
    """Random byte flips, cuts and insertions: a model, an embedding, or a ValueError naming the file."""
    ft.write_flame2020_pickle(tmp_path / "m.pkl", seed=15, num_vertices=20, num_faces=30, n_shape=4, n_expr=3)
    ft.write_flame2020_pickle(tmp_path / "o.pkl", seed=15, num_vertices=20, num_faces=30, n_shape=4, n_expr=3,
                              open_2023=True)
    ft.write_deca_landmark_embedding(tmp_path / "e.npy", seed=15, num_faces=30)
    sources = [(tmp_path / "m.pkl", load_model), (tmp_path / "o.pkl", load_model),
               (tmp_path / "e.npy", load_landmark_embedding)]
    rng = np.random.default_rng(0)
    for it in range(300):
        src, loader = sources[it % 3]
        data = bytearray(src.read_bytes())
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(0, len(data)))
            op = int(rng.integers(0, 4))
            if op == 0:
                data[i] = int(rng.integers(0, 256))
            elif op == 1:
                del data[i : i + int(rng.integers(1, 50))]
            elif op == 2:
                data[i:i] = rng.bytes(int(rng.integers(1, 20)))
            else:
                del data[i:]
        path = tmp_path / f"fuzz{src.suffix}"
        path.write_bytes(bytes(data))
        try:
            loader(path)
        except ValueError as e:
            assert str(path) in str(e), (it, e)
