"""Synthetic pretraining of the encoder: data, closed-form camera, a few training steps, checkpoints."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import flame_jax
from neuface_jax import camera
from neuface_jax import encoder as enc
from neuface_jax import fit
from neuface_jax import pretrain
from neuface_jax import synth

# Tiny everything: two clips of 2 frames × 2 views rendered at 64 px, a 16 px encoder.
TINY_SYNTH = synth.SynthConfig(image_size=64, crop_size=64)
TINY = pretrain.PretrainConfig(
    num_clips=2, frames_per_clip=2, views_per_clip=2, num_val_clips=1, synth=TINY_SYNTH,
    num_steps=4, batch_size=4, warmup_steps=1, learning_rate=1e-3,
)


@pytest.fixture(scope="module")
def face():
    return fit.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())


@pytest.fixture(scope="module")
def ecfg(face):
    return enc.EncoderConfig.small(
        n_shape=face.flame.num_shape, n_expr=face.flame.num_expression, image_size=16,
        small_widths=(4, 8), small_blocks=(1, 1), head_hidden=16,
    )


@pytest.fixture(scope="module")
def data():
    return pretrain.generate_dataset(TINY, encoder_size=16)


def test_fit_weak_perspective_recovers_a_camera():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(3, 68, 3)).astype(np.float32) * 0.05
    cam = np.array([[9.0, 0.01, -0.02], [7.5, -0.03, 0.0], [11.0, 0.0, 0.04]], np.float32)
    p2 = np.array(camera.project(jnp.asarray(pts), jnp.asarray(cam)))
    np.testing.assert_allclose(pretrain.fit_weak_perspective(pts, p2), cam, rtol=1e-4, atol=1e-5)
    # Masked points do not count, even when their targets are garbage.
    p2[:, :5] = 100.0
    mask = np.ones((3, 68), bool)
    mask[:, :5] = False
    np.testing.assert_allclose(pretrain.fit_weak_perspective(pts, p2, mask), cam, rtol=1e-4, atol=1e-5)


def test_dataset_is_deterministic_and_consistent(data, face):
    n = TINY.num_clips * TINY.frames_per_clip * TINY.views_per_clip
    assert len(data) == n
    assert data.images.shape == (n, 16, 16, 3) and data.images.dtype == np.uint8
    assert data.landmarks.shape == (n, 68, 2) and np.all(np.isfinite(data.landmarks))
    assert data.pose.shape == (n, 15) and data.expression.shape == (n, face.flame.num_expression)
    assert set(data.clip_index.tolist()) == {0, 1}
    # The targets agree with each other: the ground-truth mesh through the fitted weak-perspective
    # camera lands on the true landmarks (up to the perspective of a camera 1.2 m away).
    out = flame_jax.forward(face.flame, shape=jnp.asarray(data.shape), expression=jnp.asarray(data.expression),
                            pose=jnp.asarray(data.pose))
    lmk = flame_jax.landmarks(face.flame, face.embedding, out.vertices, jnp.asarray(data.pose))
    proj = np.asarray(camera.project(lmk, jnp.asarray(data.cam)))
    assert np.abs(proj - data.landmarks).mean() < 0.03
    again = pretrain.generate_dataset(TINY, encoder_size=16, num_clips=1)
    np.testing.assert_array_equal(again.images, data.images[: len(again)])
    # Seeds start far above the test clips' seeds.
    other = pretrain.generate_dataset(TINY, encoder_size=16, num_clips=1, first_clip=1)
    np.testing.assert_array_equal(other.images, data.images[len(again) :])


def test_pretrain_steps_and_checkpoint_roundtrip(data, face, ecfg, tmp_path):
    res = pretrain.pretrain(TINY, ecfg, data=data, val_data=data.subset(np.arange(4)), face=face, log_every=2)
    assert res.history["step"] == [2, 4]
    assert all(np.isfinite(v) for vals in res.history.values() for v in vals)
    assert set(res.validation) >= {"landmark_l1", "vertex_l1_mm", "rotation_deg", "untrained"}
    # Training moved the weights and the BatchNorm statistics.
    before = enc.init_encoder(ecfg, seed=TINY.seed)
    moved = [
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(jax_leaves(res.encoder), jax_leaves(before))
    ]
    assert max(moved) > 0
    path = pretrain.save_pretrained(tmp_path / "ckpt", res, TINY)
    loaded, cfg, summary = pretrain.ensure_pretrained(path)
    assert cfg == ecfg
    assert summary["validation"]["landmark_l1"] == pytest.approx(res.validation["landmark_l1"])
    for a, b in zip(jax_leaves(loaded), jax_leaves(res.encoder)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The loaded encoder is a valid starting point: the direct baseline's initialization is its
    # prediction (NeuFace starts from the same weights).
    clip = fit.ClipData(
        images=jnp.asarray(data.images[:4].reshape(2, 2, 16, 16, 3), jnp.float32) / 255.0,
        landmarks=jnp.asarray(data.landmarks[:4].reshape(2, 2, 68, 2)),
        landmarks_mask=jnp.ones((2, 2, 68)), frame_mask=jnp.ones((2, 2)),
    )
    init = fit.DirectFit(face, cfg, fit.FitConfig()).init_params(clip, encoder=loaded)
    g, tr, rest = enc.split_params(res.encoder)
    raw = enc.decode_outputs(enc.apply(g, tr, rest, clip.images.reshape(4, 16, 16, 3)), cfg)
    np.testing.assert_allclose(np.asarray(init.expression).reshape(4, -1), np.asarray(raw.expression), atol=1e-5)
    assert np.abs(np.asarray(raw.expression)).max() > 0  # trained: no longer the mean face


def test_ensure_pretrained_trains_when_missing(face, ecfg, tmp_path, monkeypatch):
    calls = []
    real = pretrain.pretrain

    def tiny_pretrain(config, encoder_config=None, **kw):
        calls.append(config)
        return real(dataclasses.replace(TINY, num_clips=1, num_val_clips=0, num_steps=1), ecfg, face=face, **kw)

    monkeypatch.setattr(pretrain, "pretrain", tiny_pretrain)
    path = tmp_path / "auto"
    _, cfg, summary = pretrain.ensure_pretrained(path, TINY)
    assert path.is_dir() and cfg == ecfg and len(calls) == 1
    assert pretrain.summary_path(path).is_file() and "seconds" in summary
    pretrain.ensure_pretrained(path, TINY)  # second call loads
    assert len(calls) == 1


def jax_leaves(model):
    from flax import nnx

    import jax

    return jax.tree.leaves(nnx.state(model))
