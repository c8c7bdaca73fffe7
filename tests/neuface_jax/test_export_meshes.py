"""``neuface-jax export-meshes``: params.npz → OBJ / binary PLY / npz per view."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import flame_jax
from flame_jax import mesh_io
from flame_jax import testing as flame_testing
from neuface_jax import cli
from neuface_jax import params as params_lib
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import export as export_lib

T, W = 4, 2


def _write(path, model, info):
    rng = np.random.default_rng(0)
    pose = np.zeros((T, W, 15))
    pose[..., 0:3] = rng.normal(0, 0.2, (T, W, 3))
    result = SimpleNamespace(
        expression=rng.normal(0, 0.5, (T, W, model.num_expression)), pose=pose,
        cam=np.concatenate([np.full((T, W, 1), 7.0), np.zeros((T, W, 2))], -1),
        shape=rng.normal(0, 0.5, model.num_shape), landmarks2d=np.zeros((T, W, 68, 2)),
    )
    box = crops_lib.box_to_transform(np.array([200.0, 150.0, 180.0]), crops_lib.CROP_SIZE)
    export_lib.write_params(
        path, result, view_names=["cam0", "cam1"], detected_landmarks=np.zeros((T, W, 68, 2)),
        landmarks_mask=np.ones((T, W, 68), bool), crop_transforms=np.broadcast_to(box, (T, W, 2, 3)),
        valid=np.ones((T, W), bool), model_name=model.name, extra=params_lib.model_arrays(info),
    )
    return path


@pytest.fixture(scope="module")
def demo_params(tmp_path_factory):
    model = flame_jax.demo_model()
    return _write(tmp_path_factory.mktemp("p") / "params.npz", model, params_lib.model_info(model))


def _export(*args):
    return cli.main(["neuface-jax", "export-meshes", *args])


def test_ply_obj_and_npz(demo_params, tmp_path):
    rec = params_lib.load_params(demo_params)
    want = params_lib.vertices(rec, frames="1:3")
    faces = np.asarray(flame_jax.demo_model().faces)

    assert _export(f"--params={demo_params}", "--format=ply", "--frames=1:3", f"--out={tmp_path / 'ply'}") == 0
    plys = sorted((tmp_path / "ply").rglob("*.ply"))
    assert [p.relative_to(tmp_path / "ply").as_posix() for p in plys] == [
        "cam0/frame_00001.ply", "cam0/frame_00002.ply", "cam1/frame_00001.ply", "cam1/frame_00002.ply"]
    assert plys[0].read_bytes().startswith(b"ply\nformat binary_little_endian")
    v, f, _ = mesh_io.load_ply(tmp_path / "ply" / "cam1" / "frame_00002.ply")
    np.testing.assert_allclose(v, want[1, 1], atol=1e-6)
    np.testing.assert_array_equal(f, faces)

    assert _export(f"--params={demo_params}", "--format=obj", "--frames=0", f"--out={tmp_path / 'obj'}") == 0
    v, f = mesh_io.load_obj(tmp_path / "obj" / "cam0" / "frame_00000.obj")
    np.testing.assert_allclose(v, params_lib.vertices(rec, frames=[0])[0, 0], atol=1e-5)

    assert _export(f"--params={demo_params}", "--format=npz", "--space=camera", f"--out={tmp_path / 'npz'}") == 0
    with np.load(tmp_path / "npz" / "cam1.npz", allow_pickle=False) as z:
        assert z["vertices"].shape == (T, rec.model.n_vertices, 3) and z["faces"].shape == faces.shape
        np.testing.assert_allclose(z["vertices"], params_lib.vertices(rec, space="camera")[:, 1], atol=1e-6)
        np.testing.assert_array_equal(z["frames"], np.arange(T))
        np.testing.assert_array_equal(z["frame_indices"], rec.frame_indices)
        assert str(z["space"]) == "camera" and str(z["view_name"]) == "cam1" and z["valid"].all()


def test_errors_are_clear(demo_params, tmp_path, capsys):
    assert _export(f"--params={demo_params}") == 2
    assert "--out are required" in capsys.readouterr().err
    assert _export(f"--params={tmp_path / 'none.npz'}", f"--out={tmp_path / 'o'}") == 1
    assert "none.npz" in capsys.readouterr().err
    assert _export(f"--params={demo_params}", "--frames=9", f"--out={tmp_path / 'o'}") == 1
    assert "out of range" in capsys.readouterr().err

    flame = tmp_path / "flame.pkl"
    flame_testing.write_flame2020_pickle(flame, num_vertices=40, num_faces=50, n_shape=6, n_expr=3, open_2023=True)
    model = flame_jax.load_model(flame)
    fitted = _write(tmp_path / "flame_params.npz", model, params_lib.model_info(model, flame))
    other = tmp_path / "other.pkl"
    flame_testing.write_flame2020_pickle(other, seed=3, num_vertices=40, num_faces=50, n_shape=6, n_expr=3,
                                         open_2023=True)
    assert _export(f"--params={fitted}", f"--model={other}", f"--out={tmp_path / 'o'}") == 1
    err = capsys.readouterr().err
    assert "flame_params.npz" in err and "not the same model" in err
    assert _export(f"--params={fitted}", f"--model={flame}", "--format=npz", f"--out={tmp_path / 'ok'}") == 0
    assert (tmp_path / "ok" / "cam0.npz").is_file()
