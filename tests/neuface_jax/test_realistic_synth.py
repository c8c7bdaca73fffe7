"""Realistic synthetic clips: MediaPipe on the renders, occluders, backgrounds, lighting, textures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import flame_jax
from flame_jax import demo as demo_head
from neuface_jax.annotation.face import static_contour_embedding
from neuface_jax.synthetic import synth


def test_realism_config_checks_its_values():
    with pytest.raises(ValueError, match="detector"):
        synth.RealismConfig(detector="oracle")
    with pytest.raises(ValueError, match="background"):
        synth.RealismConfig(background="photo")
    with pytest.raises(ValueError, match="occluder_fraction"):
        synth.RealismConfig(occluder_fraction=1.5)
    episodes = synth._occluder_episodes(np.random.default_rng(0), 20, 0.3, 5)
    assert 0 < (episodes >= 0).sum() <= 10 and set(np.unique(episodes)) <= {-1, 0, 1}


def _clip(landmarker_model, realism, seed=3, frames=5):
    emb = static_contour_embedding(flame_jax.demo_landmark_embedding())
    names = list(demo_head.DEMO_EXPRESSION_NAMES)
    cfg = dataclasses.replace(synth.SynthConfig(), num_frames=frames, realism=realism)
    return synth.synthesize_clip(
        seed=seed, rig="mono", config=cfg, model=flame_jax.demo_model(), embedding68=emb,
        embedding_mp=None, blink_component=names.index("blink"),
        speech_components=(names.index("lips_apart"), names.index("pucker")),
    )


def test_mediapipe_landmarks_occluders_and_looks(landmarker_model):
    plain = _clip(landmarker_model, synth.RealismConfig(detector="mediapipe", face_landmarker=str(landmarker_model)))
    real = _clip(landmarker_model, synth.RealismConfig(
        background="cluttered", light_jitter_deg=35.0, albedo_jitter=0.15, color_jitter=True,
        occluder_fraction=0.6, occluder_episode_frames=3, detector="mediapipe",
        face_landmarker=str(landmarker_model), pose_bias=0.05, occlusion_bias=0.15,
    ))
    # MediaPipe found the demo head on the plain renders, near the truth but not on it (its own
    # definition of the 68 points, image-dependent errors).
    assert plain.valid.all()
    true = plain.gt["landmarks68_true"]
    iod = np.linalg.norm(true[..., 36, :] - true[..., 45, :], axis=-1)
    inner = np.linalg.norm(plain.landmarks68 - true, axis=-1)[..., 17:] / iod[..., None]
    assert 0.005 < np.median(inner) < 0.25
    assert plain.landmarks_mp is None and plain.gt["visible68_true"].shape == plain.visible68.shape
    # The realistic clip: same motion and truth, different pixels and detections.
    np.testing.assert_array_equal(real.gt["vertices"], plain.gt["vertices"])
    assert np.abs(real.images.astype(float) - plain.images.astype(float)).mean() > 5.0
    occluded = real.gt["occluded_fraction"][:, 0] > 0
    assert 1 <= occluded.sum() < real.num_frames
    assert not np.allclose(real.landmarks68[real.valid], plain.landmarks68[real.valid])
    # Deterministic: the same seed gives the same frames.
    again = _clip(landmarker_model, real.meta and synth.RealismConfig(**real.meta["config"]["realism"]))
    np.testing.assert_array_equal(again.images, real.images)
    np.testing.assert_array_equal(again.landmarks68, real.landmarks68)
