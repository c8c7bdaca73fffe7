"""Landmarks: DECA contour rule unit cases, barycentric points, dynamic contour selection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flame_jax
from flame_jax.landmarks import LandmarkEmbedding, contour_row, head_yaw_degrees

from .conftest import make_random_model


@pytest.mark.parametrize(
    "yaw,row", [(0.0, 0), (10.4, 10), (45.0, 39), (-0.6, 40), (-1.0, 40), (-39.0, 78), (-50.0, 78), (0.5, 0), (1.5, 2), (-2.5, 41)]
)
def test_contour_row_unit_cases(yaw, row):
    assert int(contour_row(jnp.float32(yaw))) == row


def test_head_yaw_from_pose():
    for deg in (-50.0, -12.0, 0.0, 25.0):
        pose = np.zeros(15, np.float32)
        pose[1] = np.radians(deg)  # rotation about +y
        # DECA's yaw is atan2(-R[2,0], ...): a rotation of +θ about y gives R[2,0] = -sin θ.
        assert float(head_yaw_degrees(jnp.asarray(pose))) == pytest.approx(deg, abs=1e-3)
    # the neck adds to the global rotation
    pose = np.zeros(15, np.float32)
    pose[1] = np.radians(10.0)
    pose[4] = np.radians(15.0)
    assert float(head_yaw_degrees(jnp.asarray(pose))) == pytest.approx(25.0, abs=1e-3)


def _embedding(model, rng, n_static=51, dynamic=True):
    f = model.num_faces
    bary = rng.random((n_static, 3))
    bary /= bary.sum(1, keepdims=True)
    kw = {}
    if dynamic:
        db = rng.random((79, 17, 3))
        kw = dict(dynamic_face_idx=rng.integers(0, f, (79, 17)), dynamic_bary_coords=db / db.sum(-1, keepdims=True))
    return LandmarkEmbedding.from_arrays(face_idx=rng.integers(0, f, n_static), bary_coords=bary, **kw)


def test_one_hot_barycentric_returns_the_vertex():
    model, _ = make_random_model()
    faces = np.asarray(model.faces)
    emb = LandmarkEmbedding.from_arrays(face_idx=np.array([3, 10, 10]), bary_coords=np.eye(3))
    verts = np.asarray(model.v_template)
    lmk = np.asarray(flame_jax.landmarks(model, emb, model.v_template))
    np.testing.assert_array_equal(lmk, verts[[faces[3, 0], faces[10, 1], faces[10, 2]]])
    assert emb.kind == "static"


def test_ibug68_selects_contour_row_from_yaw():
    model, _ = make_random_model()
    rng = np.random.default_rng(0)
    emb = _embedding(model, rng)
    assert emb.kind == "ibug68" and emb.num_landmarks == 68
    faces = np.asarray(model.faces)
    poses = np.zeros((4, 15), np.float32)
    yaws = [0.0, 20.2, -7.0, -60.0]
    poses[:, 1] = np.radians(yaws)
    out = flame_jax.forward(model, pose=poses)
    lmk = np.asarray(flame_jax.landmarks(model, emb, out.vertices, poses))
    assert lmk.shape == (4, 68, 3)
    verts = np.asarray(out.vertices)
    for b, yaw in enumerate(yaws):
        row = int(contour_row(jnp.float32(yaw)))
        tri = faces[np.asarray(emb.dynamic_face_idx)[row]]
        expect = np.einsum("lkc,lk->lc", verts[b][tri], np.asarray(emb.dynamic_bary_coords)[row])
        np.testing.assert_allclose(lmk[b, :17], expect, atol=1e-6)
        tri_s = faces[np.asarray(emb.face_idx)]
        expect_s = np.einsum("lkc,lk->lc", verts[b][tri_s], np.asarray(emb.bary_coords))
        np.testing.assert_allclose(lmk[b, 17:], expect_s, atol=1e-6)


def test_landmarks_need_pose_for_dynamic_and_are_differentiable():
    model, _ = make_random_model()
    emb = _embedding(model, np.random.default_rng(1))
    with pytest.raises(ValueError, match="pose"):
        flame_jax.landmarks(model, emb, model.v_template)

    def loss(pose):
        v = flame_jax.forward(model, pose=pose).vertices
        return jnp.sum(flame_jax.landmarks(model, emb, v, pose) ** 2)

    g = jax.jit(jax.grad(loss))(jnp.zeros(15))
    assert np.all(np.isfinite(np.asarray(g)))
    # vmap over a batch of single examples equals the batched call
    poses = jnp.asarray(np.random.default_rng(2).normal(size=(3, 15)) * 0.3, jnp.float32)
    verts = flame_jax.forward(model, pose=poses).vertices
    a = flame_jax.landmarks(model, emb, verts, poses)
    b = jax.vmap(lambda v, p: flame_jax.landmarks(model, emb, v, p))(verts, poses)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_embedding_validation():
    model, _ = make_random_model()
    with pytest.raises(ValueError, match="emb.npz"):
        LandmarkEmbedding.from_arrays(face_idx=np.arange(4), bary_coords=np.ones((3, 3)), source="emb.npz")
    emb = LandmarkEmbedding.from_arrays(face_idx=np.array([model.num_faces + 5]), bary_coords=np.ones((1, 3)) / 3)
    with pytest.raises(ValueError, match="out of range"):
        emb.check_faces(model.num_faces, source="emb.npz")
