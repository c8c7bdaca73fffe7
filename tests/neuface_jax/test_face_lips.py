"""MediaPipe lip points on the model (``annotation.face.mediapipe_lip_embedding``, ``lip_points``)."""

from __future__ import annotations

import numpy as np
import pytest

import flame_jax
from neuface_jax.annotation import face as face_lib
from neuface_jax.media import landmark_sets

MOVED = [49, 50, 52, 53, 55, 56, 58, 59, 61, 63, 65, 67]


def _static_points(model, embedding):
    """The embedding's static points on the template (NumPy: no JAX dispatch in a default-run test)."""
    v, f = np.asarray(model.v_template, np.float64), np.asarray(model.faces)
    return np.einsum("lk,lkd->ld", np.asarray(embedding.bary_coords, np.float64), v[f[np.asarray(embedding.face_idx)]])


def _across(points):
    mid, half = (points[48, 0] + points[54, 0]) / 2, (points[54, 0] - points[48, 0]) / 2
    return (points[:, 0] - mid) / half


def test_lip_points_move_to_mediapipes_positions_along_the_lips():
    setup = face_lib.resolve_face_model(None, None)
    moved = face_lib.resolve_face_model(None, None, lip_points="mediapipe")
    assert moved.contour == "static" and moved.embedding.num_landmarks == 68
    old, new = _static_points(setup.model, setup.embedding), _static_points(moved.model, moved.embedding)
    mp = _across(np.asarray(landmark_sets.CANONICAL_MESH_VERTICES)[landmark_sets.MEDIAPIPE_TO_IBUG68])
    # across the mouth: MediaPipe's fractions (the demo head's own 49 sits at 0.55, MediaPipe's at 0.78)
    np.testing.assert_allclose(_across(new)[MOVED], mp[MOVED], atol=0.01)
    assert abs(_across(old)[49] - mp[49]) > 0.15
    # everything else stays, and the moved points stay on their lip (between the corner's and the lip's height)
    keep = np.setdiff1d(np.arange(68), MOVED)
    np.testing.assert_array_equal(new[keep], old[keep])
    for k, lo, hi in ((49, 48, 50), (53, 54, 52), (55, 54, 56), (59, 48, 58)):
        assert min(old[lo, 1], old[hi, 1]) - 1e-4 <= new[k, 1] <= max(old[lo, 1], old[hi, 1]) + 1e-4, k
    assert np.abs(new - old).max() < 0.01  # metres: a few millimetres along the lip, not a jump elsewhere


def test_lip_points_keep_a_dynamic_contour():
    model = flame_jax.demo_model()
    dyn = face_lib.resolve_face_model(model, flame_jax.demo_landmark_embedding(), contour="dynamic",
                                      lip_points="mediapipe")
    static = face_lib.resolve_face_model(model, flame_jax.demo_landmark_embedding(), lip_points="mediapipe")
    assert dyn.embedding.dynamic_face_idx is not None and dyn.contour == "dynamic"
    np.testing.assert_array_equal(dyn.embedding.dynamic_face_idx, flame_jax.demo_landmark_embedding().dynamic_face_idx)
    np.testing.assert_allclose(_static_points(model, dyn.embedding), _static_points(model, static.embedding)[17:])


def test_lip_points_errors():
    with pytest.raises(ValueError, match="lip points 'fan'"):
        face_lib.resolve_face_model(None, None, lip_points="fan")
    with pytest.raises(ValueError, match="68-point"):
        face_lib.mediapipe_lip_embedding(flame_jax.demo_mediapipe_embedding(), flame_jax.demo_model())
    # the 105-point set is gathered by MediaPipe id: the option leaves it alone
    mp = face_lib.resolve_face_model(None, None, landmark_set="mediapipe105", lip_points="mediapipe")
    assert mp.embedding.num_landmarks == flame_jax.demo_mediapipe_embedding().num_landmarks
