"""Minutes-long checks of the real-time regressor: training end to end (the command included) and
NeuFace starting from a trained regressor (``annotate --encoder DIR``). Cheaper siblings in
test_realtime.py check the training data, the loss terms and the checkpoint's use by annotate's setup."""

from __future__ import annotations

import json

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
