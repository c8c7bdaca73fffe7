"""Tests of neuface_jax.training.self_training and ``neuface-jax train-encoder``.

The end-to-end test fine-tunes a tiny encoder for two steps on a real (tiny) annotation and holds a second
clip folder out: plumbing, checkpoint and summary, not the quality of the prior (experiments/self_training.py
measures that).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

import flame_jax
import neuface_jax
from neuface_jax import annotation as annotate_lib
from neuface_jax import cli
from neuface_jax.cli import flags as cli_flags
from neuface_jax.cli.train_encoder import _define as define_train_encoder_flags
from neuface_jax.core import encoder
from neuface_jax.core import fit as fit_lib
from neuface_jax.synthetic import pretrain
from neuface_jax.training import labels
from neuface_jax.training import self_training as st

from tests.neuface_jax.test_training_labels import CROP, _copy, annotated_clip, tiny_encoder_config  # noqa: F401


def _points68(eye_gap: float, mouth_gap: float) -> np.ndarray:
    """iBUG-68 points with eyes 1 wide and lids ``eye_gap`` apart, mouth 2 wide and lips ``mouth_gap`` apart."""
    p = np.zeros((68, 2))
    for corner_a, corner_b, up, down, x0 in ((36, 39, (37, 38), (41, 40), 0.0), (42, 45, (43, 44), (47, 46), 3.0)):
        p[corner_a], p[corner_b] = (x0, 0.0), (x0 + 1.0, 0.0)
        for k, (u, d) in enumerate(zip(up, down)):
            p[u], p[d] = (x0 + 0.3 + 0.4 * k, eye_gap / 2), (x0 + 0.3 + 0.4 * k, -eye_gap / 2)
    p[48], p[54] = (0.0, -3.0), (2.0, -3.0)
    p[62], p[66] = (1.0, -3.0 + mouth_gap / 2), (1.0, -3.0 - mouth_gap / 2)
    return p


def test_eye_and_mouth_measures():
    pts = np.stack([_points68(0.3, 0.5), _points68(0.0, 0.0)])
    np.testing.assert_allclose(st.eye_openness(pts), [[0.3, 0.3], [0.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(st.mouth_opening(pts), [0.25, 0.0], atol=1e-12)
    yaw, pitch = st.yaw_pitch_deg(np.eye(3))
    assert yaw == 0 and pitch == 0
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    turned = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # 30 degrees about y: the face turns to +x
    np.testing.assert_allclose(st.yaw_pitch_deg(turned)[0], 30.0)


def _frames(n_clips=2, per=3, lmk=68) -> labels.LabelledFrames:
    rng = np.random.default_rng(0)
    n = n_clips * per
    mask = rng.random((n, lmk)) > 0.3
    clips = tuple(labels.ClipSource(
        clip_id=f"c{i}", folder=None, inputs=(), kind="videos", view_names=("v",), view_boxes=None,
        image_sizes=((8, 8),), frame_range=None, fps=25.0, landmark_set="ibug68", contour="static",
        model=neuface_jax.params.ModelInfo(kind="demo")) for i in range(n_clips))
    return labels.LabelledFrames(
        images=np.zeros((n, 8, 8, 3), np.uint8), shape=np.zeros((n, 4), np.float32),
        expression=np.zeros((n, 3), np.float32), pose=np.zeros((n, 15), np.float32), cam=np.ones((n, 3), np.float32),
        landmarks=np.where(mask[..., None], 1.0, 0.0).astype(np.float32), landmarks_mask=mask,
        predicted_landmarks=np.full((n, lmk, 2), -1.0, np.float32), clip_index=np.repeat(np.arange(n_clips), per),
        view_index=np.zeros(n, np.int32), frame_index=np.tile(np.arange(per), n_clips), clips=clips,
    )


def test_pretrain_data_and_whole_clip_split():
    f = _frames()
    d = st.to_pretrain_data(f)
    # detected points where MediaPipe saw them, the fitted mesh's landmark elsewhere
    want = np.broadcast_to(np.where(f.landmarks_mask[..., None], 1.0, -1.0), (6, 68, 2))
    np.testing.assert_array_equal(d.landmarks, want)
    assert isinstance(d, pretrain.PretrainData) and len(d) == 6
    train, val = st.split_clips(f, ["c1"])
    assert set(train.clip_index) == {0} and set(val.clip_index) == {1} and len(train) == len(val) == 3
    assert st.split_clips(f, [])[1] is None
    with pytest.raises(KeyError, match="c9"):
        st.split_clips(f, ["c9"])
    with pytest.raises(ValueError, match="every clip"):
        st.split_clips(f, ["c0", "c1"])
    det = np.zeros((2, 68, 2))
    det[:, 45, 0] = 1.0  # outer eye corners 1 apart
    mask = np.ones((2, 68), bool)
    mask[0, :10] = False  # masked points do not count
    mask[1, 45] = False  # no normalizer: NaN
    np.testing.assert_allclose(st.frame_nme(det + [0.1, 0.0], det, mask, (36, 45)), [10.0, np.nan])



def test_config_checks_and_flags():
    with pytest.raises(ValueError, match="steps"):
        st.SelfTrainConfig(steps=0)
    with pytest.raises(ValueError, match="learning_rate"):
        st.SelfTrainConfig(learning_rate=0.0)
    fv = flags.FlagValues()
    define_train_encoder_flags(fv)
    fv(["prog", "--annotations", "a,b", "--out", "o", "--val_clips", "x,y", "--lr", "1e-4", "--steps", "7"])
    cfg = cli_flags.build(fv, st.SelfTrainConfig)
    assert cfg.val_clips == ("x", "y") and cfg.learning_rate == 1e-4 and cfg.steps == 7 and hash(cfg)
    assert cfg.pretrain_config().num_steps == 7 and cfg.pretrain_config().num_clips == 0
    assert "train-encoder" in cli.COMMANDS


@pytest.mark.long  # ~20 s; the cheaper siblings in the default run: the config/flags, split and labels tests
@pytest.mark.shared_data
def test_train_encoder_command_end_to_end(annotated_clip, tmp_path, capsys):
    init = tmp_path / "init"
    encoder.save_encoder(init, encoder.init_encoder(tiny_encoder_config(), seed=3), tiny_encoder_config())
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a", "b"):  # an annotate-dataset layout: finished clip folders
        _copy(annotated_clip, corpus / name)
        (corpus / name / "done.json").write_text("{}")
    out = tmp_path / "self_trained"
    argv = ["neuface-jax", "train-encoder", "--annotations", str(corpus), "--init", str(init), "--out", str(out),
            "--steps", "2", "--batch_size", "4", "--val_clips", "b"]
    assert cli.main(argv) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model, cfg = neuface_jax.load_encoder(out)
    assert cfg == tiny_encoder_config()
    start, _ = neuface_jax.load_encoder(init)
    x = np.full((1, CROP, CROP, 3), 0.5, np.float32)
    assert not np.allclose(np.asarray(model(x)), np.asarray(start(x)))
    doc = json.loads(pretrain.summary_path(out).read_text())
    block = doc[st.SUMMARY_KEY]
    assert block["train_frames"] == {"a": 4} and block["val_frames"] == {"b": 4}
    for stage in ("val_before", "val_after"):
        assert np.isfinite(block[stage]["nme_percent"]) and np.isfinite(block[stage]["yaw_error_deg"])
        assert block[stage]["frames"] == 4
    # annotate takes the checkpoint
    setup = annotate_lib.make_setup(annotate_lib.SetupConfig(encoder=str(out), epochs=1), need_landmarker=False)
    assert setup.encoder_config == cfg
    # an existing --out is refused; a missing clip named as held out is an error naming it
    assert cli.main(argv) == 1
    assert "exists" in capsys.readouterr().err
    argv_bad = argv[:-1] + ["zz"] + ["--overwrite"]
    assert cli.main(argv_bad) == 1
    assert "zz" in capsys.readouterr().err


# --------------------------------------------------------------------------- the GPU throughput script
GPU_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "gpu_self_training.py"


def _gpu_script():
    spec = importlib.util.spec_from_file_location("gpu_self_training_under_test", GPU_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    # The script declares absl flags on the global registry, where another test's script may already hold
    # the same names (e.g. --out): set those aside, load, take the script's flags back, restore the others.
    declared = set(re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', GPU_SCRIPT.read_text()))
    stashed = {name: flags.FLAGS[name] for name in declared if name in flags.FLAGS}
    for name in stashed:
        delattr(flags.FLAGS, name)
    saved = set(flags.FLAGS)
    try:
        spec.loader.exec_module(module)
    finally:
        for name in set(flags.FLAGS) - saved:
            delattr(flags.FLAGS, name)
        for name, flag in stashed.items():
            flags.FLAGS[name] = flag
    return module


def test_gpu_script_labels_are_consistent():
    """The throughput script's frames: labels whose landmarks are the labelled mesh's (cheap sibling of the run)."""
    module = _gpu_script()
    face = fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    data = module.labelled_batch(3, 16, face)
    assert data.images.shape == (3, 16, 16, 3) and data.images.dtype == np.uint8 and len(data) == 3
    assert data.landmarks.shape == (3, 68, 2) and np.isfinite(data.landmarks).all()
    assert np.abs(data.landmarks).max() < 1.2  # about the crop (the default camera fills it)
    # the three frames' head poses differ, so do their landmarks
    assert np.abs(data.landmarks[0] - data.landmarks[1]).max() > 1e-3 and not data.pose[:, 3:6].any()


@pytest.mark.long
def test_gpu_script_tiny_run(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(GPU_SCRIPT.parents[1]))
    subprocess.run([sys.executable, str(GPU_SCRIPT), "--tiny", f"--out={out}"], check=True, env=env, timeout=600)
    doc = json.loads(out.read_text())
    (row,) = doc["runs"]
    assert row["images_per_s"] > 0 and row["steps"] == 3 and np.isfinite(row["final_loss"])
    assert doc["device"]["platform"] == "cpu" and "gpu_self_training.py --tiny" in doc["command"]
