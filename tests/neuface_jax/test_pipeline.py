"""End to end: `neuface-jax demo` and `neuface-jax synth` on tiny settings; params.npz and metrics.json layouts."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest

from neuface_jax import cli, export, pipeline

METRICS = ("nme_percent", "msi_landmarks", "msi_vertices", "jitter_mm", "cvd_mm", "vertex_error_mm")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    rc = cli.main(["neuface-jax", "demo", "--out", str(out), "--frames", "8", "--chunk_frames", "4", "--epochs", "2",
                   "--views", "3"])
    assert rc == 0
    return out


def test_demo_writes_metrics_with_fixed_names(demo_dir):
    data = json.loads((demo_dir / "metrics.json").read_text())
    for method in ("neuface", "direct"):
        for name in METRICS:
            assert name in data[method], (method, name)
            assert np.isfinite(data[method][name]), (method, name)
        assert data[method]["cvd_mm"] >= 0.0 and data[method]["vertex_error_mm"] > 0.0
    assert data["ground_truth"]["jitter_mm"] > 0.0
    assert data["clip"]["views"] == ["front", "left_30", "right_30"]


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


def test_format_table():
    table = pipeline.format_table({"neuface": {n: 1.0 for n in METRICS}, "direct": {n: 2.0 for n in METRICS}})
    assert "neuface" in table and "vertex_error_mm" in table and "2.0000" in table
