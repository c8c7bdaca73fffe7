"""``neuface_jax.params``: params.npz back into a typed record and meshes; the model check by hash."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import flame_jax
import neuface_jax
from flame_jax import testing as flame_testing
from neuface_jax import params as params_lib
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import export as export_lib

T, W = 5, 2


def _result(model, seed=0):
    rng = np.random.default_rng(seed)
    pose = np.zeros((T, W, 15))
    pose[..., 0:3] = rng.normal(0, 0.2, (T, W, 3))
    pose[..., 6:9] = rng.normal(0, 0.05, (T, W, 3))
    return SimpleNamespace(
        expression=rng.normal(0, 0.5, (T, W, model.num_expression)), pose=pose,
        cam=np.concatenate([rng.uniform(5, 9, (T, W, 1)), rng.normal(0, 0.01, (T, W, 2))], -1),
        shape=rng.normal(0, 0.5, model.num_shape), landmarks2d=rng.normal(0, 0.3, (T, W, 68, 2)),
    )


def _crop_transforms():
    box = crops_lib.box_to_transform(np.array([320.0, 240.0, 300.0]), crops_lib.CROP_SIZE)
    return np.broadcast_to(box, (T, W, 2, 3)).copy()


def _write(path, model, info, *, seed=0, valid=None):
    result = _result(model, seed)
    valid = np.ones((T, W), bool) if valid is None else valid
    export_lib.write_params(
        path, result, view_names=["front", "side"], detected_landmarks=np.zeros((T, W, 68, 2)),
        landmarks_mask=np.ones((T, W, 68), bool), crop_transforms=_crop_transforms(), valid=valid,
        frame_indices=np.arange(10, 10 + 2 * T, 2), model_name=model.name,
        extra=None if info is None else params_lib.model_arrays(info),
    )
    return result


@pytest.fixture(scope="module")
def demo():
    return flame_jax.demo_model()


@pytest.fixture(scope="module")
def tiny_flame(tmp_path_factory):
    """Two small FLAME-layout pickles with different contents (different hashes)."""
    d = tmp_path_factory.mktemp("flame")
    paths = []
    for seed in (0, 1):
        p = d / f"flame_{seed}.pkl"
        flame_testing.write_flame2020_pickle(p, seed=seed, num_vertices=60, num_faces=80, n_shape=8, n_expr=4,
                                             open_2023=True)
        paths.append(p)
    return paths


def test_record_of_a_demo_head_file(tmp_path, demo):
    path = tmp_path / "params.npz"
    valid = np.ones((T, W), bool)
    valid[1, 0] = False
    result = _write(path, demo, params_lib.model_info(demo), valid=valid)
    rec = neuface_jax.load_params(path)
    assert rec.view_names == ("front", "side") and rec.num_frames == T and rec.num_views == W
    np.testing.assert_array_equal(rec.frame_indices, np.arange(10, 20, 2))
    np.testing.assert_array_equal(rec.valid, valid)
    assert rec.model.kind == "demo" and rec.model.sha256 == "" and rec.model.n_vertices == demo.num_vertices
    assert rec.model.n_shape == demo.num_shape and rec.model.n_expr == demo.num_expression
    assert rec.method == "neuface" and rec.format == export_lib.PARAMS_FORMAT
    np.testing.assert_allclose(rec.pose, result.pose, atol=1e-6)
    np.testing.assert_allclose(rec.cam, result.cam, rtol=1e-6)
    assert not rec.expression.flags.writeable
    with pytest.raises(Exception):
        rec.view_names = ()  # frozen

    v = neuface_jax.vertices(rec, frames="1:3")
    want = flame_jax.forward(demo, shape=result.shape, expression=result.expression[1:3], pose=result.pose[1:3])
    assert v.shape == (2, W, demo.num_vertices, 3) and v.dtype == np.float32
    np.testing.assert_allclose(v, np.asarray(want.vertices), atol=1e-5)

    cam = params_lib.vertices(rec, frames=[2], space="camera")[0]
    s, tx, ty = result.cam[2, 1]
    np.testing.assert_allclose(cam[1, :, 0], s * (v[1, 1, :, 0] + tx), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cam[1, :, 2], s * v[1, 1, :, 2], rtol=1e-4, atol=1e-5)

    img = params_lib.vertices(rec, frames=[2], space="image")[0]
    ref = export_lib.screen_vertices(np.asarray(v[1, 0], np.float64), result.cam[2, 0], _crop_transforms()[2, 0],
                                     crops_lib.CROP_SIZE)
    np.testing.assert_allclose(img[0], ref, rtol=1e-4, atol=1e-2)


def test_files_without_model_keys_still_load(tmp_path, demo):
    path = tmp_path / "old.npz"
    _write(path, demo, None)
    rec = params_lib.load_params(path)
    assert rec.model.kind == "demo" and rec.model.sha256 == ""  # from the model name
    assert params_lib.vertices(rec, frames=[0]).shape == (1, W, demo.num_vertices, 3)


def test_flame_file_is_checked_by_hash(tmp_path, tiny_flame):
    right, other = tiny_flame
    model = flame_jax.load_model(right)
    path = tmp_path / "params.npz"
    _write(path, model, params_lib.model_info(model, right))
    rec = params_lib.load_params(path)
    assert rec.model.kind == "flame" and rec.model.path == str(right.resolve())
    assert rec.model.sha256 == params_lib.file_sha256(right) and len(rec.model.sha256) == 64
    counts = (rec.model.n_shape, rec.model.n_expr, rec.model.n_vertices, rec.model.n_faces)
    assert counts == (model.num_shape, 4, 60, 80)

    by_path = params_lib.vertices(rec, right)
    recorded = params_lib.vertices(rec)  # the recorded model file, hash checked
    np.testing.assert_array_equal(by_path, recorded)
    np.testing.assert_array_equal(params_lib.vertices(rec, model), by_path)  # a model object: counts only
    with pytest.raises(params_lib.ParamsError, match=r"params\.npz.*not the same model"):
        params_lib.vertices(rec, other)
    assert params_lib.vertices(rec, other, verify=False).shape == by_path.shape

    moved = tmp_path / "moved.pkl"
    right_bytes = right.read_bytes()
    moved.write_bytes(right_bytes)
    gone = params_lib.load_params(path)
    object.__setattr__(gone, "model", params_lib.ModelInfo(**{**vars(gone.model), "path": str(tmp_path / "nope.pkl")}))
    with pytest.raises(params_lib.ParamsError, match="pass that model file"):
        params_lib.vertices(gone)
    np.testing.assert_array_equal(params_lib.vertices(gone, moved), by_path)  # same bytes, same hash


def test_missing_hash_needs_verify_false(tmp_path, tiny_flame):
    model = flame_jax.load_model(tiny_flame[0])
    path = tmp_path / "nohash.npz"
    _write(path, model, None)
    rec = params_lib.load_params(path)
    assert rec.model.kind == "unknown"
    with pytest.raises(params_lib.ParamsError, match="pass that model file"):
        params_lib.vertices(rec)
    with pytest.raises(params_lib.ParamsError, match="no model_sha256"):
        params_lib.vertices(rec, tiny_flame[0])
    assert params_lib.vertices(rec, tiny_flame[0], verify=False).shape == (T, W, 60, 3)


def test_too_few_components_is_an_error(tmp_path, demo, tiny_flame):
    path = tmp_path / "params.npz"
    _write(path, demo, params_lib.model_info(demo))
    with pytest.raises(params_lib.ParamsError, match="components"):
        params_lib.vertices(params_lib.load_params(path), flame_jax.load_model(tiny_flame[0]))


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        params_lib.load_params(tmp_path / "missing.npz")
    notzip = tmp_path / "notzip.npz"
    notzip.write_bytes(b"hello")
    with pytest.raises(params_lib.ParamsError, match="notzip.npz"):
        params_lib.load_params(notzip)
    partial = tmp_path / "partial.npz"
    np.savez(partial, cam=np.zeros((2, 3)))
    with pytest.raises(params_lib.ParamsError, match=r"partial.npz: missing key\(s\) \['pose'"):
        params_lib.load_params(partial)
    # An object array would need a pickle: refused, never executed.
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, cam=np.zeros((2, 3)), pose=np.zeros((2, 6)), expr=np.zeros((2, 4)), shapes=np.zeros((2, 3)),
             frame_index=np.arange(2), view_index=np.zeros(2, int), view_names=np.array([{"a": 1}], dtype=object))
    with pytest.raises(params_lib.ParamsError, match="pickled.npz"):
        params_lib.load_params(pickled)


def test_parse_frames():
    np.testing.assert_array_equal(params_lib.parse_frames("0:3,7,-1", 10), [0, 1, 2, 7, 9])
    np.testing.assert_array_equal(params_lib.parse_frames("8:,::4", 10), [8, 9, 0, 4, 8])
    np.testing.assert_array_equal(params_lib.parse_frames(None, 3), [0, 1, 2])
    for bad in ("x", "10", "1:2:3:4"):
        with pytest.raises(ValueError, match="bad frame selection"):
            params_lib.parse_frames(bad, 10)
