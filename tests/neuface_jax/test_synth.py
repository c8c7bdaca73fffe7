"""Synthetic clips: determinism, ground truth consistency, landmarks on the rendered features, disk round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import flame_jax
from neuface_jax.media import crops
from neuface_jax.synthetic import motion
from neuface_jax.synthetic import synth


@pytest.fixture(scope="module")
def clip3():
    return synth.synthesize_clip(seed=5, rig="3", config=synth.SynthConfig(num_frames=6, image_size=96))


def test_rigs():
    assert motion.mead_rig().names == ("front", "left_30", "right_30", "left_60", "right_60", "top", "down")
    assert motion.parse_rig("mono").num_views == 1
    r = motion.parse_rig("0:0,45:10")
    assert r.yaw_deg == (0.0, 45.0) and r.pitch_deg == (0.0, 10.0)
    assert motion.parse_rig(["front", "left_60"]).yaw_deg == (0.0, 60.0)
    with pytest.raises(ValueError, match="cannot parse"):
        motion.parse_rig("sideways")
    # A camera toward the subject's left (+x) sees the head rotated by −yaw about y.
    rot = motion.parse_rig("30:0").view_rotations()[0]
    np.testing.assert_allclose(rot @ np.array([1.0, 0, 0]), [np.cos(np.radians(30)), 0, np.sin(np.radians(30))], atol=1e-9)


def test_motion_is_deterministic_and_realistic():
    a = motion.generate_motion(num_frames=250, n_shape=10, n_expr=8, seed=3, blink_component=1)
    b = motion.generate_motion(num_frames=250, n_shape=10, n_expr=8, seed=3, blink_component=1)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    angles = np.degrees(np.linalg.norm(a["pose"][:, 0:3], axis=1))
    assert angles.max() < 100 and angles.std() > 1.0
    assert np.abs(np.diff(a["pose"][:, 0:3], axis=0)).max() < 0.1  # smooth: < ~6° per frame
    assert a["blink"].max() > 0.9  # at least one blink in 10 s
    assert a["pose"][:, 6].max() > 0.05 and a["pose"][:, 6].min() >= 0.0  # the jaw opens, never over-closes
    assert np.abs(a["translation"]).max() < 0.05
    turns = [np.degrees(np.abs(motion.generate_motion(num_frames=100, n_shape=1, n_expr=1, seed=s)["pose"][:, 1])).max()
             for s in range(8)]
    assert max(turns) > 45.0  # some clips turn past 45°


def test_head_turn_never_faster_than_a_third_of_a_second():
    """The large turn is a Gaussian of width max(T/6, 0.3 s · fps) frames: on a 20-frame clip at 25 fps
    it spans 7.5 frames (peak speed 55° · e^-½ / 7.5 ≈ 4.4°/frame), not 4 frames (≈ 8.3°/frame)."""
    turn_only = motion.MotionConfig(yaw_amplitude_deg=0, pitch_amplitude_deg=0, roll_amplitude_deg=0,
                                    big_turn_probability=1.0)
    for t, fps, width in [(20, 25.0, 7.5), (90, 25.0, 15.0), (20, 10.0, 20 / 6)]:
        cfg = dataclasses.replace(turn_only, fps=fps)
        for seed in range(3):
            yaw = np.degrees(motion.generate_motion(num_frames=t, n_shape=1, n_expr=1, seed=seed, config=cfg)["pose"][:, 1])
            peak = 55.0 * np.exp(-0.5) / width  # the Gaussian's steepest slope, degrees per frame
            speed = np.abs(np.diff(yaw)).max()
            assert 0.85 * peak < speed <= 1.001 * peak, (t, fps, seed, speed, peak)


def test_clip_shapes_and_determinism(clip3):
    t, w = 6, 3
    assert clip3.images.shape == (t, w, 96, 96, 3) and clip3.images.dtype == np.uint8
    assert clip3.landmarks68.shape == (t, w, 68, 2)
    assert clip3.landmarks_mp.shape == (t, w, 105, 2)
    assert clip3.crop_transforms.shape == (t, w, 2, 3)
    assert clip3.gt["vertices"].shape[:2] == (t, w)
    again = synth.synthesize_clip(seed=5, rig="3", config=synth.SynthConfig(num_frames=6, image_size=96))
    np.testing.assert_array_equal(again.images, clip3.images)
    np.testing.assert_array_equal(again.landmarks68, clip3.landmarks68)
    other = synth.synthesize_clip(seed=6, rig="3", config=synth.SynthConfig(num_frames=6, image_size=96))
    assert np.abs(other.gt["shape"] - clip3.gt["shape"]).max() > 0.1


def test_per_view_meshes_are_the_same_face(clip3):
    """Rotating each view's mesh back into the world frame gives one and the same mesh."""
    rot = clip3.camera["view_rotations"]
    verts = clip3.gt["vertices"]
    world = np.einsum("wba,twvb->twva", rot, verts)  # R_vᵀ v
    np.testing.assert_allclose(world[:, 1], world[:, 0], atol=2e-5)
    np.testing.assert_allclose(world[:, 2], world[:, 0], atol=2e-5)
    # canonical vertices are FLAME with the head rotation zeroed
    model = flame_jax.demo_model()
    pose = clip3.gt["pose_world"].copy()
    pose[:, 0:3] = 0
    canon = flame_jax.forward(model, shape=clip3.gt["shape"], expression=clip3.gt["expression"], pose=pose).vertices
    np.testing.assert_allclose(clip3.gt["canonical_vertices"], np.asarray(canon), atol=1e-6)


def test_landmarks_sit_on_rendered_features(clip3):
    """Visible landmarks fall on the head (not the background) and the eye corners on darker eye pixels."""
    t, w = 0, 0
    img = clip3.images[t, w].astype(float)
    true = clip3.gt["landmarks68_true"][t, w]
    vis = clip3.visible68[t, w]
    bg = synth._background(np.random.default_rng([5, w]), 96)
    on_head = []
    for (x, y), v in zip(true, vis):
        if v:
            px = img[int(y), int(x)] / 255.0
            on_head.append(np.abs(px - bg[int(y), int(x)]).max() > 0.05)
    assert np.mean(on_head) > 0.9
    noise = np.linalg.norm(clip3.landmarks68 - clip3.gt["landmarks68_true"], axis=-1)[clip3.visible68]
    assert 0.3 < np.median(noise) < 5.0  # detector-like pixel noise


def test_turned_head_marks_far_side_points_invisible():
    still = motion.MotionConfig(yaw_amplitude_deg=0, big_turn_probability=0, pitch_amplitude_deg=0, roll_amplitude_deg=0)
    cfg = synth.SynthConfig(num_frames=2, image_size=96, motion=still)
    clip = synth.synthesize_clip(seed=1, rig="70:0", config=cfg)
    # Camera at the subject's left: the right eye's outer corner (36) is hidden, the left one (45) visible.
    assert not clip.visible68[:, 0, 36].any()
    assert clip.visible68[:, 0, 45].all()
    assert clip.visible68[:, 0, :17].mean() > 0.8  # the contour follows the silhouette


def test_dropped_frames_and_crops():
    cfg = synth.SynthConfig(num_frames=20, image_size=64, drop_frame_probability=0.3)
    clip = synth.synthesize_clip(seed=2, rig="mono", config=cfg)
    assert 0 < (~clip.valid).sum() < 20
    assert not clip.visible68[~clip.valid].any()
    assert np.all(np.isfinite(clip.crop_transforms))
    # Crop recipe: the detected 68 landmarks span 1/1.375 of the crop on their longer side.
    t = int(np.argmax(clip.valid[:, 0]))
    crop_px = crops.apply_transform(clip.landmarks68[t, 0], clip.crop_transforms[t, 0])
    span = np.ptp(crop_px, axis=0).max()
    assert span == pytest.approx(224 / 1.375, rel=1e-3)


def test_write_and_read_clip(tmp_path, clip3):
    synth.write_clip(clip3, tmp_path / "clip")
    assert (tmp_path / "clip" / "front.mp4").is_file()
    back = synth.read_clip(tmp_path / "clip")
    assert back.view_names == clip3.view_names
    np.testing.assert_array_equal(back.landmarks68, clip3.landmarks68)
    np.testing.assert_array_equal(back.gt["canonical_vertices"], clip3.gt["canonical_vertices"])
    # video round trip is lossy (H.264) but close
    assert np.abs(back.images.astype(int) - clip3.images.astype(int)).mean() < 6
    with pytest.raises(FileNotFoundError, match="clip.json"):
        synth.read_clip(tmp_path)
