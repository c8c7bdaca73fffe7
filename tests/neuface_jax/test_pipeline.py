"""End to end: `neuface-jax demo` and `neuface-jax synth` on tiny settings; params.npz and metrics.json layouts."""

from __future__ import annotations

import dataclasses
import json

import imageio.v3 as iio
import numpy as np
import pytest

import flame_jax
from neuface_jax import annotation, cli
from neuface_jax.media import crops
from neuface_jax.media import export
from neuface_jax.core import fit
from neuface_jax.synthetic import demo as pipeline
from neuface_jax.synthetic import synth

METRICS = ("nme_percent", "msi_landmarks", "msi_vertices", "jitter_mm", "cvd_mm", "vertex_error_mm")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rc = cli.main(["neuface-jax", "demo", "--out", str(out), "--frames", "8", "--chunk_frames", "4", "--epochs", "2",
                   "--views", "3"])
    assert rc == 0
    return out


@pytest.mark.slow
def test_demo_writes_metrics_with_fixed_names(demo_dir):
    data = json.loads((demo_dir / "metrics.json").read_text())
    for method in ("neuface", "direct"):
        for name in METRICS:
            assert name in data[method], (method, name)
            assert np.isfinite(data[method][name]), (method, name)
        assert data[method]["cvd_mm"] >= 0.0 and data[method]["vertex_error_mm"] > 0.0
    assert data["ground_truth"]["jitter_mm"] > 0.0
    assert data["clip"]["views"] == ["front", "left_30", "right_30"]
    for method in ("neuface", "direct"):  # extra metrics against the ground truth
        for name in ("accel_error_mm", "vertex_error_similarity_mm"):
            assert np.isfinite(data[method][name]) and data[method][name] > 0.0, (method, name)
    # The demo starts from the packaged pretrained encoder at its learning rate.
    s = data["settings"]
    assert s["encoder_init"] == "pretrained" and s["learning_rate"] == pytest.approx(3e-4)
    assert s["encoder_checkpoint"].endswith("pretrained_small_encoder") and s["encoder_image_size"] == 64


def test_demo_params_npz_layout(demo_dir):
    with np.load(demo_dir / "params.npz", allow_pickle=False) as p:
        s = 8 * 3
        assert p["cam"].shape == (s, 3)
        assert p["pose"].shape == (s, 6)
        assert p["expr"].shape[0] == s and p["shapes"].shape[0] == s
        assert p["landmarks2d"].shape == (s, 68, 2)
        assert p["full_pose"].shape == (s, 15)
        np.testing.assert_array_equal(p["pose"][:, 3:], p["full_pose"][:, 6:9])
        assert np.all(p["shapes"] == p["shapes"][0])  # one identity per clip
        assert list(p["view_names"]) == ["front", "left_30", "right_30"]
        np.testing.assert_array_equal(p["frame_index"][:6], [0, 0, 0, 1, 1, 1])
        np.testing.assert_array_equal(p["view_index"][:6], [0, 1, 2, 0, 1, 2])
        assert p["crop_transforms"].shape == (s, 2, 3)
        assert str(p["format"]) == export.PARAMS_FORMAT and str(p["method"]) == "neuface"
    assert (demo_dir / "params_direct.npz").is_file()


def test_demo_overlay_video(demo_dir):
    frames = iio.imread(demo_dir / "overlay.mp4")
    assert frames.shape[0] == 8 and frames.shape[2] == 3 * 224
    assert frames.std() > 10  # not blank


def test_synth_command(tmp_path):
    rc = cli.main(["neuface-jax", "synth", "--out", str(tmp_path / "c"), "--views", "front,left_60", "--frames", "3",
                   "--size", "64"])
    assert rc == 0
    manifest = json.loads((tmp_path / "c" / "clip.json").read_text())
    assert manifest["views"] == ["front", "left_60"]
    assert (tmp_path / "c" / "left_60.mp4").is_file()
    with np.load(tmp_path / "c" / "landmarks.npz") as f:
        assert f["landmarks68"].shape == (3, 2, 68, 2)


def test_cli_errors(capsys):
    assert cli.main(["neuface-jax", "nope"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert cli.main(["neuface-jax", "synth"]) == 2
    with pytest.raises(SystemExit):
        cli.main(["neuface-jax", "demo", "--frames", "notanumber"])


def test_demo_missing_encoder_checkpoint(tmp_path, capsys):
    rc = cli.main(["neuface-jax", "demo", "--out", str(tmp_path / "d"), "--encoder", str(tmp_path / "nothing")])
    assert rc == 2
    assert "no encoder checkpoint" in capsys.readouterr().err


def test_start_encoder_choices():
    model = flame_jax.demo_model()
    enc, cfg, path = pipeline.load_start_encoder("random", model)
    assert enc is None and path is None and cfg == pipeline.default_encoder_config(model)
    enc, cfg, path = pipeline.load_start_encoder("pretrained", model)
    assert enc is not None and cfg.image_size == 64 and path.endswith("pretrained_small_encoder")
    enc2, cfg2, path2 = pipeline.load_start_encoder(path, model)  # a path works the same
    assert cfg2 == cfg and path2 == path
    assert pipeline.DemoConfig().encoder_init == "pretrained"
    # The packaged encoder knows the demo head only.
    with pytest.raises(ValueError, match="trained on the demo head"):
        pipeline.load_start_encoder("pretrained", dataclasses.replace(model, name="FLAME 2020"))
    assert pipeline.DemoConfig().fit_config().learning_rate == pipeline.DEMO_PRETRAINED_LR == 3e-4
    # A random start takes annotate's table (annotation.setup.default_learning_rate).
    assert pipeline.DemoConfig(encoder_init="random").fit_config().learning_rate == annotation.RANDOM_INIT_LR == 1e-3
    assert pipeline.DemoConfig(learning_rate=5e-4).fit_config().learning_rate == 5e-4


def _perfect_fit(clip, crop_size):
    """A FitResult equal to the clip's ground truth."""
    gt = clip.gt
    t, w = clip.num_frames, clip.num_views
    norm = crops.to_normalized(crops.apply_transform(gt["landmarks68_true"], clip.crop_transforms), crop_size)
    return fit.FitResult(
        shape=gt["shape"], expression=np.broadcast_to(gt["expression"][:, None], (t, w, gt["expression"].shape[-1])),
        pose=gt["pose"], cam=np.zeros((t, w, 3)), landmarks2d=norm,
        vertices=gt["vertices"] - gt["translation"][:, :, None, :],
        canonical_vertices=np.broadcast_to(gt["canonical_vertices"][:, None], gt["vertices"].shape).copy(),
        history={},
    )


def test_evaluate_extra_metrics_against_ground_truth():
    cfg = synth.SynthConfig(num_frames=8, image_size=96, drop_frame_probability=0.3)
    clip = synth.synthesize_clip(seed=2, rig="front,left_30", config=cfg)
    assert not clip.valid.all()
    face = fit.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    perfect = _perfect_fit(clip, cfg.crop_size)
    m = pipeline.evaluate_synthetic(perfect, face, clip)
    assert set(pipeline.METRIC_NAMES) | set(pipeline.EXTRA_METRIC_NAMES) <= set(m)
    for k in ("nme_percent", "vertex_error_mm", "vertex_error_similarity_mm", "accel_error_mm"):
        assert m[k] == pytest.approx(0.0, abs=1e-2), k
    assert m["jitter_mm"] == pytest.approx(pipeline.ground_truth_reference(clip, face)["jitter_mm"], rel=1e-4)
    assert np.isfinite(m["jitter_detected_mm"]) and np.isfinite(m["msi_vertices_detected"])
    # A drift with constant acceleration a (1.5 mm/frame² along x) → accel error exactly a; the
    # jitter changes, the identity does not. A 10 % larger face: vertex error, but none after a
    # similarity alignment.
    t = np.arange(clip.num_frames, dtype=np.float64)
    drift = np.zeros(perfect.vertices.shape)
    drift[..., 0] = (0.5 * 1.5e-3 * t**2)[:, None, None]
    big = perfect.canonical_vertices * 1.1
    moved = pipeline.evaluate_synthetic(
        dataclasses.replace(perfect, vertices=perfect.vertices + drift, canonical_vertices=big), face, clip)
    assert moved["accel_error_mm"] == pytest.approx(1.5, rel=1e-3)
    assert moved["vertex_error_mm"] > 1.0
    assert moved["vertex_error_similarity_mm"] == pytest.approx(0.0, abs=1e-2)
    assert moved["vertex_error_aligned_mm"] > moved["vertex_error_similarity_mm"]
    # No ground truth, no extra keys (what annotate gets for real videos).
    plain = pipeline.evaluate(perfect, face, crop_transforms=clip.crop_transforms,
                              reference_landmarks_px=clip.gt["landmarks68_true"], reference_visible=clip.visible68)
    assert set(plain) == set(pipeline.METRIC_NAMES) - {"vertex_error_mm"}


def test_format_table():
    table = pipeline.format_table({"neuface": {n: 1.0 for n in METRICS}, "direct": {n: 2.0 for n in METRICS}})
    assert "neuface" in table and "vertex_error_mm" in table and "2.0000" in table
    extra = pipeline.format_table({"neuface": {"accel_error_mm": 1.0}, "ground_truth": {}}, pipeline.EXTRA_METRIC_NAMES)
    assert "accel_error_mm" in extra and "jitter_detected_mm" not in extra and " -" in extra
