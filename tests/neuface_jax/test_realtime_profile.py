"""Out-of-plane pose augmentation of labelled crops (``realtime.profile``): exact labels, a warp that
matches a fresh render of the turned face, the identity at zero turn, refusals."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from scipy import ndimage

from neuface_jax.media import render as render_lib
from neuface_jax.photometric import raster as raster_lib
from neuface_jax.realtime import profile, regressor
from neuface_jax.realtime import train as train_lib
from neuface_jax.synthetic import pretrain

SIZE = 64


@functools.lru_cache(maxsize=1)
def _labels():
    """Two labelled heads on the landmark submodel (the demo head's vertices around its landmarks: the
    same FLAME code and landmarks for a tenth of the compile time)."""
    face = regressor.landmark_submodel(regressor.demo_face())
    rng = np.random.default_rng(0)
    n = 2
    shape = (rng.normal(size=(n, 100)) * 0.5).astype(np.float32)
    expr = (rng.normal(size=(n, 50)) * 0.5).astype(np.float32)
    pose = np.zeros((n, 15), np.float32)
    pose[:, 0:3] = [[0.05, 0.3, 0.02], [-0.1, -0.2, 0.0]]  # turned heads
    pose[:, 6] = 0.1
    cam = np.float32([[9.0, 0.0, -0.01], [8.5, 0.01, 0.0]])
    return face, shape, expr, pose, cam, profile.turn_function(face)


def _render(verts, cam, faces, colors):
    sv = raster_lib.screen_vertices(np.asarray(verts, np.float64), np.asarray(cam, np.float64), SIZE)
    return render_lib.render(sv, faces, colors, height=SIZE, width=SIZE, shading="none", background=0.2,
                             cull_backfaces=True)


def _pitch(pose):
    from flame_jax import rotations
    m = np.asarray(rotations.axis_angle_to_matrix(pose[:, :3]))
    return np.degrees(np.arctan2(m[:, 2, 1], m[:, 2, 2]))  # the benchmark's pitch (positive: chin down)


def test_turned_labels_are_exact():
    face, shape, expr, pose, cam, turn = _labels()
    pitch, yaw = np.float32([12.0, -10.0]), np.float32([0.0, 15.0])
    out = jax.device_get(turn(shape, expr, pose, cam, pitch, yaw))
    zero = jax.device_get(turn(shape, expr, pose, cam, np.zeros(2, np.float32), np.zeros(2, np.float32)))
    # The turned labels' mesh is the source mesh turned about FLAME's root joint (not the origin).
    root = np.asarray(train_lib.root_joint(face, shape, expr))
    rot = np.asarray(profile.delta_rotation(pitch, yaw))
    expect = np.einsum("bij,bvj->bvi", rot, zero["vertices"] - root[:, None]) + root[:, None]
    np.testing.assert_allclose(out["vertices"], expect, atol=2e-5)
    np.testing.assert_allclose(out["source_vertices"], zero["vertices"], atol=1e-6)
    # Only the global rotation and the camera's translation change; the landmarks' mean stays put.
    np.testing.assert_array_equal(out["pose"][:, 3:], pose[:, 3:])
    np.testing.assert_array_equal(out["cam"][:, 0], cam[:, 0])
    np.testing.assert_allclose(out["landmarks"].mean(1), zero["landmarks"].mean(1), atol=1e-5)
    assert np.abs(out["landmarks"] - zero["landmarks"]).max() > 0.05
    assert _pitch(out["pose"])[0] - _pitch(pose)[0] == pytest.approx(12.0, abs=1.0)  # positive: chin down
    # Zero turn: the same labels.
    np.testing.assert_allclose(zero["cam"], cam, atol=1e-6)
    np.testing.assert_allclose(zero["pose"], pose, atol=1e-6)


def test_warped_crop_matches_a_fresh_render_and_zero_turn_is_the_identity():
    head = regressor.demo_face().flame
    faces = np.asarray(head.faces)
    verts = np.asarray(head.v_template, np.float64)
    root = np.asarray(head.joint_template[0], np.float64)
    # A smooth, non-uniform colour per vertex: the texture the warp must carry with the mesh.
    colors = 0.5 + 0.45 * np.stack([np.sin(60 * verts[:, 0]), np.sin(50 * verts[:, 1] + 1),
                                    np.cos(40 * verts[:, 2])], -1)
    cam = np.array([6.0, 0.0, -0.02])
    src = _render(verts, cam, faces, colors)
    image = (src.image * 255).round().astype(np.uint8)
    same, stats = profile.warp_crop(image, verts, cam, verts, cam, faces)
    assert stats["covered"] > 0.2 and stats["hidden"] < 0.01
    assert np.abs(same.astype(int) - image).max() <= 1
    for pitch, yaw in [(15.0, 0.0), (-12.0, 10.0)]:
        rot = np.asarray(profile.delta_rotation(pitch, yaw), np.float64)
        turned = (verts - root) @ rot.T + root
        ref = _render(turned, cam, faces, colors)
        warped, stats = profile.warp_crop(image, verts, cam, turned, cam, faces)
        assert 0.0 < stats["hidden"] < 0.2
        inner = ndimage.binary_erosion(ref.mask, iterations=2)  # away from the silhouette
        err = np.abs(warped.astype(float) / 255 - ref.image)[inner].mean()
        before = np.abs(image.astype(float) / 255 - ref.image)[inner].mean()
        assert err < 0.03 and err < 0.3 * before, (pitch, yaw, err, before)


def test_profile_examples_and_bad_input():
    face, shape, expr, pose, cam, turn = _labels()
    zeros = np.zeros(2, np.float32)
    lmk = np.asarray(turn(shape, expr, pose, cam, zeros, zeros)["landmarks"])
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), np.uint8)
    data = pretrain.PretrainData(images, lmk, shape, expr, pose, cam, np.array([3, 4], np.int32))
    out = profile.profile_examples(data, face, [10.0, -10.0], chunk=2)
    assert len(out) == 4 and out.images.dtype == np.uint8
    np.testing.assert_array_equal(out.clip_index, [3, 4, 3, 4])  # the same people
    np.testing.assert_array_equal(out.shape, np.concatenate([shape, shape]))
    ref = jax.device_get(turn(shape, expr, pose, cam, np.float32([10.0, 10.0]), zeros))
    np.testing.assert_allclose(out.landmarks[:2], ref["landmarks"], atol=1e-5)
    np.testing.assert_allclose(out.cam[:2], ref["cam"], atol=1e-6)
    with pytest.raises(ValueError, match="within ±60"):
        profile.profile_examples(data, face, [90.0])
    with pytest.raises(ValueError, match="at least one"):
        profile.profile_examples(data, face, [])
    with pytest.raises(ValueError, match="square crop"):
        profile.warp_crop(images[0, :20], ref["source_vertices"][0], cam[0], ref["vertices"][0], ref["cam"][0],
                          np.asarray(face.flame.faces))
    with pytest.raises(ValueError, match="non-finite"):
        profile.warp_crop(images[0], ref["source_vertices"][0], cam[0] * np.nan, ref["vertices"][0], ref["cam"][0],
                          np.asarray(face.flame.faces))
    assert train_lib.TrainConfig(profile_pitch=["8", "16"]).profile_pitch == (8.0, 16.0)  # flags give strings
    with pytest.raises(ValueError, match="profile_share"):
        train_lib.TrainConfig(profile_pitch=(10.0,), profile_share=1.0)
    with pytest.raises(ValueError, match="profile_pitch"):
        train_lib.TrainConfig(profile_pitch=("down",))
    with pytest.raises(ValueError, match="profile_pitch"):
        train_lib.TrainConfig(profile_pitch=(75.0,))
