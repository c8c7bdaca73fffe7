"""``neuface-jax pretrain``: synthetic renders of any FLAME-format model → an encoder prior; resumable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import flame_jax
from neuface_jax.cli import main as cli_main
from neuface_jax.cli.pretrain import encoder_config_for
from neuface_jax.core import camera as camera_lib
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.synthetic import pretrain

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--preset=tiny", "--num_steps=2", "--checkpoint_every=1", "--batch_size=2", "--pool_images=2",
        "--val_images=2"]


@pytest.fixture(scope="module")
def face():
    return fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())


@pytest.fixture(scope="module")
def assets(face):
    return pretrain.RenderAssets.build(face, num_albedos=1)


def _weights(path):
    enc, cfg = encoder_lib.load_encoder(path)
    return cfg, [np.asarray(x) for x in jax.tree.leaves(encoder_lib.split_params(enc, freeze_bn=False)[1:])]


def test_cli_trains_saves_and_resumes(tmp_path, capsys):
    out = tmp_path / "prior"
    assert cli_main(["neuface-jax", "pretrain", f"--out={out}", *TINY]) == 0
    cfg, first = _weights(out)  # neuface_jax.load_encoder's reader
    assert cfg.arch == "small" and cfg.image_size == 64 and cfg.n_shape == 100
    summary = json.loads(pretrain.summary_path(out).read_text())
    assert summary["kind"] == "synthetic-prior" and summary["resumed_from_step"] == 0
    assert np.isfinite(summary["validation"]["rotation_deg"]) and summary["history"]["step"][-1] == 2
    steps = pretrain.state_path(out) / "steps"
    assert sorted(p.name for p in steps.iterdir() if p.name.isdigit()) == ["1", "2"]

    # Pre-empted after step 1: resuming trains step 2 on the same batch and ends bit-identical.
    shutil.rmtree(steps / "2")
    assert cli_main(["neuface-jax", "pretrain", f"--out={out}", *TINY, "--resume"]) == 0
    summary = json.loads(pretrain.summary_path(out).read_text())
    assert summary["resumed_from_step"] == 1
    _, again = _weights(out)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)

    # Other settings cannot resume that state; the message names the setting.
    assert cli_main(["neuface-jax", "pretrain", f"--out={out}", *TINY, "--resume", "--learning_rate=0.1"]) == 1
    assert "run.learning_rate" in capsys.readouterr().err


def test_cli_refuses_bad_inputs(tmp_path, capsys):
    assert cli_main(["neuface-jax", "pretrain", f"--out={tmp_path / 'p'}", "--flame_model=/nope.pkl"]) == 1
    assert "--landmark_embedding" in capsys.readouterr().err
    assert cli_main(["neuface-jax", "pretrain", f"--out={tmp_path / 'p'}", "--flame_model=/nope.pkl",
                     "--landmark_embedding=/nope.npy"]) == 1
    assert "nope.pkl" in capsys.readouterr().err
    assert cli_main(["neuface-jax", "pretrain"]) == 2
    assert cli_main(["neuface-jax", "pretrain", f"--out={tmp_path / 'p'}", "--arch=resnet50", "--image_size=100"]) == 1
    assert "--image_size 100" in capsys.readouterr().err
    # A ResNet-50 at another crop size (what a CPU can pretrain): the same backbone and head.
    r50 = encoder_config_for("resnet50", flame_jax.demo_model(), 128)
    assert (r50.arch, r50.image_size, r50.head_hidden) == ("resnet50", 128, 1024)
    assert encoder_config_for("resnet50", flame_jax.demo_model()).image_size == 224


def test_renders_are_deterministic_and_labelled(face, assets):
    cfg = pretrain.RenderConfig()
    a = pretrain.render_examples(assets, cfg, 7, 4, 48)
    b = pretrain.render_examples(assets, cfg, 7, 4, 48)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.images.shape == (4, 48, 48, 3) and a.images.dtype == np.uint8
    # The true landmarks lie in the crop (the box follows noisy detections, jittered a few percent).
    assert np.all(np.abs(a.landmarks) < 1.0)
    # The camera explains the landmarks through the model: its projection matches the targets.
    out = flame_jax.forward(face.flame, shape=a.shape, expression=a.expression, pose=a.pose)
    lmk3d = np.asarray(flame_jax.landmarks(face.flame, face.embedding, out.vertices, a.pose))
    proj = np.asarray(camera_lib.project(lmk3d, a.cam))
    assert np.abs(proj - a.landmarks).mean() < 0.05  # weak perspective vs the true pinhole projection
    yaw, _ = pretrain.yaw_pitch_deg(np.asarray(flame_jax.axis_angle_to_matrix(a.pose[:, :3])))
    assert np.all(np.abs(yaw) <= 71)
    c = pretrain.render_examples(assets, cfg, 8, 4, 48)
    assert np.abs(c.images.astype(int) - a.images).mean() > 5


def test_stream_is_a_function_of_the_step(assets):
    kw = dict(encoder_size=32, batch_size=2, seed=3)
    streamed = pretrain.SyntheticStream(assets, pretrain.RenderConfig(), workers=2, prefetch=2, **kw)
    direct = pretrain.SyntheticStream(assets, pretrain.RenderConfig(), workers=1, prefetch=1, **kw)
    try:
        for step in (0, 1, 5):
            np.testing.assert_array_equal(streamed.batch(step).images, direct.batch(step).images)
    finally:
        streamed.close()
    pooled = pretrain.SyntheticStream(assets, pretrain.RenderConfig(), pool_images=4, **kw)
    threaded = pretrain.SyntheticStream(assets, pretrain.RenderConfig(), pool_images=4, workers=2, **kw)
    threaded.close()
    np.testing.assert_array_equal(pooled._pool.images, threaded._pool.images)  # shards rendered on threads
    b3 = pooled.batch(3)
    np.testing.assert_array_equal(b3.images, pooled.batch(3).images)
    pool = pooled._pool.images.reshape(4, -1)
    assert all(any(np.array_equal(img, p) for p in pool) for img in b3.images.reshape(2, -1))  # drawn from the pool


def test_real_clip_errors_measure_yaw_and_nme(face, assets):
    """On renders presented as a 'real' clip (true landmarks and yaw as MediaPipe's), the shipped encoder
    follows the yaw (better than never turning) and its landmark error is finite."""
    cfg = pretrain.RenderConfig(augment=pretrain.augment_lib.AugmentConfig.none(), yaw_deg=50.0)
    d = pretrain.render_examples(assets, cfg, 11, 16, 64)
    yaw, _ = pretrain.yaw_pitch_deg(np.asarray(flame_jax.axis_angle_to_matrix(d.pose[:, :3])))
    clip = pretrain.RealClip("synthetic", d.images, d.landmarks, np.ones((16, 68), bool), yaw.astype(np.float32))
    enc, ecfg, _ = pretrain.ensure_pretrained()
    r = pretrain.real_clip_errors(enc, ecfg, face, clip)
    assert r["frames"] == 16 and 0 < r["nme_percent"] < 30
    assert r["yaw_error_deg"] < 0.75 * np.abs(yaw).mean() and r["yaw_slope"] > 0.3


def test_step_throughput_tiny(face, assets):
    """The measurement behind experiments/gpu_pretrain.py (float32 here; bf16 in the long script test).
    Same encoder, batch and schedule as the CLI test's run, so it reuses that compiled step."""
    cfg = encoder_lib.EncoderConfig.small()
    data = pretrain.render_examples(assets, pretrain.RenderConfig(), 0, 2, cfg.image_size)
    r = pretrain.step_throughput(cfg, face, data, steps=1, warmup=1)
    assert r["images_per_s"] > 0 and r["batch_size"] == 2 and r["dtype"] == "float32" and r["devices"] == 1


@pytest.mark.long
def test_gpu_pretrain_script_tiny(tmp_path):
    """experiments/gpu_pretrain.py in its CPU mode: both dtypes measured, the renderer timed."""
    out = tmp_path / "gpu.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_pretrain.py"), "--tiny", f"--out={out}",
                           "--workers=1"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["steps"]) == {"small/float32", "small/bfloat16"}
    assert all(r["images_per_s"] > 0 and r["compile_s"] > 0 for r in res["steps"].values())
    assert res["render"]["small"]["images_per_s"] > 0 and res["platform"] == "cpu"


@pytest.mark.long
def test_cli_data_parallel_streaming_two_devices(tmp_path):
    """Two simulated devices, images rendered on the fly by two threads, bf16: the batch is sharded."""
    out = tmp_path / "prior"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-m", "neuface_jax.cli", "pretrain", f"--out={out}", "--preset=tiny",
                           "--pool_images=0", "--workers=2", "--bf16", "--batch_size=4"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(pretrain.summary_path(out).read_text())
    assert len(summary["devices"]) == 2 and summary["run"]["bf16"]
    cfg, _ = _weights(out)
    assert cfg.dtype == "float32"  # saved for any device; trained with a bf16 backbone
