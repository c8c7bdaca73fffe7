"""Minutes-long checks of the real-time regressor: training end to end (the command included) and
NeuFace starting from a trained regressor (``annotate --encoder DIR``). Cheaper siblings in
test_realtime.py check the training data, the loss terms and the checkpoint's use by annotate's setup."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuface_jax.core import encoder as encoder_lib
from neuface_jax.realtime import regressor, train

pytestmark = pytest.mark.long

TINY_TRAIN = dict(synthetic_clips=2, synthetic_val_clips=1, steps=3, batch_size=8, group_size=4, image_size=32,
                  warmup_steps=1)


def test_train_regressor_command_writes_a_loadable_regressor(tmp_path, capsys):
    from neuface_jax import cli

    out = tmp_path / "reg"
    args = ["neuface-jax", "train-regressor", f"--out={out}"] + [f"--{k}={v}" for k, v in TINY_TRAIN.items()]
    assert cli.main(args) == 0
    assert "validation (synthetic)" in capsys.readouterr().out
    enc, cfg = encoder_lib.load_encoder(out)
    assert cfg.arch == "mobilenet" and cfg.image_size == 32
    summary = json.loads(train.summary_path(out).read_text())
    assert summary["counts"]["synthetic"] == 2 * 16 and len(summary["history"]["total"]) >= 1
    p = regressor.Regressor(enc, cfg)(np.zeros((32, 32, 3), np.uint8))
    assert np.all(np.isfinite(p.landmarks))


def test_training_lowers_the_loss():
    cfg = train.TrainConfig(**{**TINY_TRAIN, "steps": 30, "synthetic_clips": 4, "learning_rate": 3e-3})
    result = train.train(cfg, log_every=10)
    total = result.history["total"]
    assert total[-1] < total[0]


def test_fine_tuning_with_frozen_batchnorm_and_the_dense_2d_term():
    cfg = train.TrainConfig(**{**TINY_TRAIN, "steps": 2, "freeze_bn": True, "weight_projected": 5.0,
                               "weight_shape": 0.1, "weight_canonical": 100.0, "reframe_rotation": 15.0,
                               "blur": 0.5})
    start = encoder_lib.init_encoder(regressor.regressor_config(100, 50, image_size=32), seed=3)
    _, _, rest0 = encoder_lib.split_params(start, freeze_bn=True)
    result = train.train(cfg, encoder=start, log_every=1)
    assert len(result.history["projected"]) == 2 and result.history["projected"][0] > 0
    assert len(result.history["canonical"]) == 2 and result.history["canonical"][0] > 0
    _, _, rest1 = encoder_lib.split_params(result.encoder, freeze_bn=True)
    # BatchNorm's statistics, scales and offsets are exactly the starting ones.
    for a, b in zip(jax.tree.leaves(rest0), jax.tree.leaves(rest1)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_rotated_crops_move_the_picture_with_the_targets_and_blur_spreads_a_dot():
    """Image side of the in-plane rotation (the label side, cheaper, is in test_realtime.py)."""
    img = jnp.full((4, 8, 8, 3), 0.5)
    blurred = train.augment(img.at[:, 4, 4].set(1.0), jax.random.key(0), blur=1.0)
    assert float(blurred[:, 4, 4].max()) < 0.9 and float(blurred[:, 4, 5].min()) > 0.0  # the dot spread
    # The crop's rotation moves the picture with its landmarks: a bright dot lands where its landmark goes.
    dot = np.zeros((2, 32, 32, 3), np.float32)
    dot[:, 7:10, 21:24] = 1.0  # centred on pixel (22.5, 8.5): normalized (0.40625, -0.46875)
    q = np.tile(np.float32([[[0.40625, -0.46875]]]), (2, 1, 1))
    out, lmk, _, _ = train.reframe(jnp.asarray(dot), q, np.float32([[9.0, 0, 0]] * 2), jax.random.key(1),
                                   max_zoom=0.1, max_shift=0.1, max_rotation=40.0, pose=np.zeros((2, 15), np.float32),
                                   root=np.zeros((2, 3), np.float32))
    w = np.asarray(out[..., 0])
    centre = (np.stack([np.einsum("byx,x->b", w, np.arange(32) + 0.5), np.einsum("byx,y->b", w, np.arange(32) + 0.5)],
                       -1) / w.sum((1, 2))[:, None]) / 16.0 - 1.0
    np.testing.assert_allclose(centre, np.asarray(lmk[:, 0]), atol=0.03)
    assert np.abs(np.asarray(lmk[:, 0]) - q[:, 0]).max() > 0.05


@pytest.mark.shared_data
def test_annotate_starts_from_a_trained_regressor(shared_data, landmarker_model, tmp_path):
    from neuface_jax import cli, load_params

    enc = encoder_lib.init_encoder(regressor.regressor_config(100, 50, image_size=64))
    cfg = enc.config
    encoder_lib.save_encoder(tmp_path / "reg", enc, cfg)
    out = tmp_path / "ann"
    rc = cli.main(["neuface-jax", "annotate", f"--video={shared_data / 'videos' / 'liveportrait_d20.mp4'}",
                   f"--out={out}", f"--face_landmarker={landmarker_model}", f"--encoder={tmp_path / 'reg'}",
                   "--end=8", "--epochs=2", "--nooverlay", "--nocache"])
    assert rc == 0
    rec = load_params(out / "params.npz")
    assert rec.expression.shape[0] == 8 and np.all(np.isfinite(rec.expression))
    clip = json.loads((out / "metrics.json").read_text())["clip"]
    assert clip["encoder_config"]["arch"] == "mobilenet"


def test_photometric_self_supervision_prefers_the_face_that_made_the_image():
    """The landmark-free term of train-regressor: a demo-head rendering over a grey background scores
    better at its own parameters than with the face moved or turned, and its gradient is finite."""
    from neuface_jax.core import fit as fit_lib
    from neuface_jax.photometric import albedo as albedo_lib
    from neuface_jax.photometric import raster as raster_lib
    from neuface_jax.photometric import render as render_lib

    face, size = regressor.demo_face(), 48
    shape, expr = jnp.zeros((1, 100)), jnp.zeros((1, 50))
    pose = jnp.zeros((1, 15)).at[0, 1].set(0.2)
    cam = jnp.asarray([[9.0, 0.0, 0.01]])
    verts = fit_lib.evaluate_params(face, shape, expr, pose, cam)[0]
    ras = raster_lib.rasterize(verts, cam, face.flame.faces, size)
    albedo = jnp.asarray(albedo_lib.demo_albedo_model().mean)
    light = jnp.asarray(render_lib.directional_light_sh([0.3, 0.2, 1.0]))[None]
    r = render_lib.render_batch(verts, face.flame.faces, cam, albedo, light, ras)
    image = r.rgb * r.mask[..., None] + 0.35 * (1.0 - r.mask[..., None])
    loss = jax.jit(lambda c, p: train.self_supervised_loss(shape, expr, p, c, image, face))
    own = float(loss(cam, pose))
    moved = float(loss(cam.at[0, 1].add(0.015), pose))
    turned = float(loss(cam, pose.at[0, 1].set(-0.2)))
    assert own < 0.7 * moved and own < 0.7 * turned
    g = jax.grad(lambda c: train.self_supervised_loss(shape, expr, pose, c, image, face))(cam.at[0, 1].add(0.015))
    assert np.all(np.isfinite(g)) and float(g[0, 1]) > 0  # pushes the face back


@pytest.mark.shared_data
def test_train_regressor_with_unlabelled_video_and_the_photometric_term(shared_data, landmarker_model, tmp_path):
    from neuface_jax import cli

    out = tmp_path / "reg"
    args = ["neuface-jax", "train-regressor", f"--out={out}", f"--face_landmarker={landmarker_model}",
            f"--unlabelled={shared_data / 'videos' / 'liveportrait_d20.mp4'}", "--unlabelled_frames=4",
            "--weight_photometric=1.0", "--unlabelled_share=0.5"] + [f"--{k}={v}" for k, v in TINY_TRAIN.items()]
    assert cli.main(args) == 0
    summary = json.loads(train.summary_path(out).read_text())
    assert summary["counts"]["unlabelled"] == 4
    assert np.isfinite(summary["history"]["photometric"][-1]) and summary["history"]["photometric"][-1] > 0


def test_training_mixes_frames_turned_out_of_plane(monkeypatch):
    """``--profile_pitch``: the distilled frames (here synthetic renders standing in for an annotation)
    are turned once before training and a share of the distilled groups is drawn from the copies."""
    cfg = train.TrainConfig(**{**TINY_TRAIN, "steps": 2, "batch_size": 16, "distill_fraction": 0.5, "mirror": True,
                               "profile_pitch": ("10", "-5"), "profile_share": 0.5})
    data, _ = train.synthetic_data(train.TrainConfig(**{**TINY_TRAIN, "synthetic_val_clips": 0}))
    monkeypatch.setattr(train, "distillation_data", lambda *a, **k: (data, None))
    result = train.train(cfg, distill=["fake"], log_every=1)
    assert result.counts["distilled"] == 2 * len(data)  # + mirrors
    assert result.counts["profiled"] == 2 * result.counts["distilled"]  # two pitch changes
    assert result.seconds["profile"] > 0 and np.isfinite(result.history["total"]).all()
