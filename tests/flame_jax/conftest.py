"""Fixtures: a random FLAME-structured model built directly from arrays."""

from __future__ import annotations

import numpy as np
import pytest

from flame_jax.model import FlameModel


def make_random_model(seed=0, num_v=600, num_f=1100, n_shape=12, n_expr=8, scale=1e-2) -> tuple[FlameModel, dict]:
    """A random FLAME-layout model: 5 joints, parents (-1,0,1,1,1), eye vertices weighted to eye joints only.

    Returns the model and the float64 arrays it was built from.
    """
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(num_v, 3)) * 0.08
    weights = rng.random((num_v, 5)) ** 3
    weights[:, 3:] = 0.0
    eye_l = np.arange(num_v - 40, num_v - 20)
    eye_r = np.arange(num_v - 20, num_v)
    weights[eye_l] = [0, 0, 0, 1, 0]
    weights[eye_r] = [0, 0, 0, 0, 1]
    weights /= weights.sum(1, keepdims=True)
    jreg = rng.random((5, num_v)) * (rng.random((5, num_v)) < 0.05)
    jreg[3] = 0
    jreg[3, eye_l] = 1
    jreg[4] = 0
    jreg[4, eye_r] = 1
    jreg /= jreg.sum(1, keepdims=True)
    arrays = dict(
        v_template=v,
        shapedirs=rng.normal(size=(num_v, 3, n_shape)) * scale,
        exprdirs=rng.normal(size=(num_v, 3, n_expr)) * scale,
        posedirs=rng.normal(size=(num_v, 3, 36)) * scale,
        lbs_weights=weights,
        joint_regressor=jreg,
        faces=rng.integers(0, num_v, size=(num_f, 3)),
        parents=np.array([2**32 - 1, 0, 1, 1, 1], np.uint32),
    )
    arrays["eye_left"] = eye_l
    arrays["eye_right"] = eye_r
    model = FlameModel.from_arrays(**{k: a for k, a in arrays.items() if not k.startswith("eye_")}, name="random")
    return model, arrays


@pytest.fixture(scope="module")
def random_model():
    return make_random_model()


def make_random_embedding68(num_faces: int, seed: int = 0):
    """A random iBUG-68 embedding (51 static points + a 79x17 contour table) for a mesh with ``num_faces``."""
    from flame_jax.landmarks import LandmarkEmbedding

    rng = np.random.default_rng(seed)
    b = rng.random((51, 3))
    b /= b.sum(1, keepdims=True)
    db = rng.random((79, 17, 3))
    db /= db.sum(-1, keepdims=True)
    return LandmarkEmbedding.from_arrays(
        face_idx=rng.integers(0, num_faces, 51), bary_coords=b,
        dynamic_face_idx=rng.integers(0, num_faces, (79, 17)), dynamic_bary_coords=db,
    )
