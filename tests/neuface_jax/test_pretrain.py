"""Synthetic pretraining of the encoder: data, closed-form camera, a few training steps, checkpoints."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import flame_jax
from neuface_jax.core import camera
from neuface_jax.core import encoder as enc
from neuface_jax.core import fit
from neuface_jax.media import crops
from neuface_jax.synthetic import pretrain
from neuface_jax.synthetic import synth

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


@pytest.mark.slow
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


# --------------------------------------------------------------------------- the packaged checkpoint
def test_packaged_checkpoint_loads_with_the_expected_config():
    path = pretrain.packaged_checkpoint()
    assert path.is_dir() and path.parent.name == "assets" and path.parent.parent.name == "neuface_jax"
    loaded, cfg, summary = pretrain.ensure_pretrained()  # the default is the packaged checkpoint
    assert cfg == enc.EncoderConfig.small(n_shape=100, n_expr=50)  # the demo head's components, 64×64 crops
    assert (cfg.arch, cfg.image_size, cfg.n_shape, cfg.n_expr) == ("small", 64, 100, 50)
    model = flame_jax.demo_model()
    assert (cfg.n_shape, cfg.n_expr) == (model.num_shape, model.num_expression)
    # Its summary sits beside it and describes it.
    assert pretrain.summary_path(path).is_file()
    assert summary["encoder_config"] == cfg.to_dict()
    assert summary["validation"]["rotation_deg"] < 0.5 * summary["validation"]["untrained"]["rotation_deg"]
    n = sum(int(np.prod(np.shape(x))) for x in jax_leaves(loaded))
    assert 100_000 < n < 1_000_000  # the small encoder (1.5 MB of float32)


def test_packaged_checkpoint_settings_are_the_defaults():
    """``python experiments/pretrain_encoder.py`` with the defaults re-makes the shipped checkpoint's
    training data: every setting recorded in its summary equals today's default."""
    shipped = pretrain.ensure_pretrained()[2]["pretrain_config"]
    now = pretrain.PretrainConfig().to_dict()

    def check(a, b, where):
        for k, v in a.items():
            assert k in b, f"{where}{k}"
            if isinstance(v, dict):
                check(v, b[k], f"{where}{k}.")
            else:
                assert v == b[k], (f"{where}{k}", v, b[k])

    check(shipped, now, "")


def test_packaged_checkpoint_is_data_only(monkeypatch):
    """The checkpoint holds JSON, text markers and tensorstore OCDBT/zstd data only, and loading it
    unpickles nothing (no code from the files runs)."""
    import json
    import pickle

    root = pretrain.packaged_checkpoint()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) >= 5
    for p in files:
        head = p.read_bytes()[:4]
        if head[:1] == b"{":
            json.loads(p.read_text())
        elif p.name == "commit_success.txt":
            assert p.read_text().isprintable()
        else:  # OCDBT manifest/B-tree nodes, or zstd-compressed array chunks
            assert head[:2] == b"\x0c\xdb" or head == b"\x28\xb5\x2f\xfd", (p, head)

    def forbidden(*a, **k):
        raise AssertionError("loading an encoder checkpoint must not unpickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    real_np_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: real_np_load(*a, **{**k, "allow_pickle": False}))
    loaded, cfg = enc.load_encoder(root)
    assert cfg.arch == "small" and len(jax_leaves(loaded)) > 10


def test_packaged_checkpoint_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(pretrain, "PACKAGED_CHECKPOINT_NAME", "no_such_checkpoint")
    with pytest.raises(FileNotFoundError, match="packaged pretrained encoder is missing"):
        pretrain.ensure_pretrained()  # never trains silently into the package


@pytest.mark.slow
def test_packaged_encoder_predicts_synthetic_faces():
    """Raw predictions (no optimization) of the packaged encoder on a synthetic clip it never saw land
    near the true landmarks; a randomly initialized encoder (the mean face) is far off."""
    from neuface_jax.core import metrics
    from neuface_jax.synthetic import demo as pipeline

    face = fit.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    clip = synth.synthesize_clip(seed=0, rig="mono", config=synth.SynthConfig(num_frames=4))
    loaded, cfg, _ = pretrain.ensure_pretrained()
    data = crops.prepare_clip(clip.images, clip.landmarks68, clip.crop_transforms, encoder_size=cfg.image_size,
                            visible=clip.visible68, valid=clip.valid)
    t, w = clip.num_frames, clip.num_views

    def raw_nme(model):
        g, tr, rest = enc.split_params(model, freeze_bn=True)
        p = enc.decode_outputs(enc.apply(g, tr, rest, data.images.reshape((t * w,) + data.images.shape[2:])), cfg)
        _, lmk2d, _ = fit.evaluate_params(face, p.shape, p.expression, p.pose, p.cam)
        px = pipeline.landmarks_to_pixels(np.asarray(lmk2d).reshape(t, w, 68, 2), clip.crop_transforms, 224)
        return float(metrics.nme(px, clip.gt["landmarks68_true"], clip.visible68))

    pretrained, random = raw_nme(loaded), raw_nme(enc.init_encoder(cfg, seed=0))
    # Measured: 3.5 % vs 23 %.
    assert pretrained < 8.0 and pretrained < random / 3, (pretrained, random)
