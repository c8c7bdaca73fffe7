"""import-encoder: DECA / EMOCA layouts (tiny widths, random weights) imported without torch match torch's outputs.

Fixtures: tests/fixtures/torch_encoder/, written by experiments/make_torch_encoder_fixtures.py (torch 2.13.0).
The full-size (ResNet-50) parity run is documented in docs/priors_import.md.
"""

from __future__ import annotations

import os
import types

import numpy as np
import pytest

import neuface_jax
from neuface_jax import cli
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.priors import deca_import, starting

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "torch_encoder")


@pytest.fixture(scope="module")
def expected():
    data = np.load(os.path.join(FIXTURES, "expected.npz"))
    return {k: data[k] for k in data.files}


def _rel_error(got, want) -> float:
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


@pytest.mark.parametrize(
    "fmt, name, key",
    [
        ("deca", "deca_model.tar", "deca_out"),
        ("deca", "deca_legacy.tar", "deca_out"),
        ("emoca", "emoca.ckpt", "emoca_out"),
    ],
)
def test_imported_encoder_matches_torch(tmp_path, expected, fmt, name, key):
    out = tmp_path / "enc"
    deca_import.import_encoder(fmt, os.path.join(FIXTURES, name), out)
    model, config = neuface_jax.load_encoder(out)
    assert config.arch == "resnet50" and config.layout == "deca" and config.image_size == 224
    assert config.resnet_widths == (2, 4, 4, 8) and config.resnet_blocks == (1, 2, 1, 1)
    assert config.head_hidden == 16 and encoder_lib.num_outputs(config) == 236
    assert config.expression_encoder == (fmt == "emoca")
    images = expected["images"].astype(np.float32) / 255.0
    raw = model(images)
    assert raw.shape == (2, 236)
    assert _rel_error(raw, expected[key]) <= 1e-4
    # The functional core sees the same network (frozen BN: running statistics).
    graphdef, trainable, rest = encoder_lib.split_params(model)
    assert _rel_error(encoder_lib.apply(graphdef, trainable, rest, images), expected[key]) <= 1e-4


def test_cli_import_then_starting_checkpoint(tmp_path, capsys):
    out = str(tmp_path / "deca")
    argv = ["neuface-jax", "import-encoder", "--format", "deca", "--input", os.path.join(FIXTURES, "deca_model.tar")]
    assert cli.main(argv + ["--out", out]) == 0
    assert "--encoder" in capsys.readouterr().out
    # What annotate / annotate-dataset / demo do with --encoder: the component counts must fit the model.
    _, cfg = starting.load_checkpoint(out, types.SimpleNamespace(num_shape=100, num_expression=50, name="m"))
    assert (cfg.n_shape, cfg.n_expr) == (100, 50)
    with pytest.raises(ValueError, match="predicts 100 shape / 50 expression"):
        starting.load_checkpoint(out, types.SimpleNamespace(num_shape=100, num_expression=10, name="m"))
    assert starting.default_learning_rate(cfg, pretrained=True) == starting.PRETRAINED_LR


def test_cli_errors_name_the_problem(tmp_path, capsys):
    emoca = os.path.join(FIXTURES, "emoca.ckpt")
    out = str(tmp_path / "x")
    assert cli.main(["neuface-jax", "import-encoder", "--format", "deca", "--input", emoca, "--out", out]) == 1
    assert "'E_flame'" in capsys.readouterr().err
    assert cli.main(["neuface-jax", "import-encoder", "--format", "emoca", "--input", emoca]) == 2
    assert "--out" in capsys.readouterr().err


def test_layout_mismatch_is_an_error():
    weights = deca_import.read_encoder_weights(os.path.join(FIXTURES, "deca_model.tar"), "deca")
    weights["E_flame.encoder.layer1.0.extra.weight"] = np.zeros(3, np.float32)
    config = deca_import._config_from_weights(weights, "E_flame.", None)
    with pytest.raises(ValueError, match="unknown layout: E_flame.encoder.layer1.0.extra.weight"):
        deca_import.convert_state(weights, config, {"backbone": "E_flame.", "fc1": "E_flame.", "fc2": "E_flame."})
    del weights["E_flame.encoder.layer1.0.extra.weight"]
    weights["E_flame.layers.0.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"layers.0.bias has shape \(3,\)"):
        deca_import.convert_state(weights, config, {"backbone": "E_flame.", "fc1": "E_flame.", "fc2": "E_flame."})


def test_older_configs_without_the_new_fields_still_load():
    d = encoder_lib.EncoderConfig.small().to_dict()
    for name in ("resnet_widths", "resnet_blocks", "expression_encoder"):
        del d[name]
    assert encoder_lib.EncoderConfig.from_dict(d) == encoder_lib.EncoderConfig.small()
    with pytest.raises(ValueError, match="resnet_widths"):
        encoder_lib.EncoderConfig(resnet_widths=(64, 128, 256))


def test_a_flame_model_without_an_encoder_says_what_the_random_start_costs(tmp_path, caplog):
    """Never a silent random start: a FLAME-format model without --encoder warns and records a note."""
    import logging

    import flame_jax
    from neuface_jax import annotation

    model_file = tmp_path / "model.npz"
    flame_jax.save_model(flame_jax.demo_model(), model_file)
    emb_file = tmp_path / "emb.npz"
    flame_jax.save_landmark_embedding(flame_jax.demo_landmark_embedding(), emb_file)
    cfg = annotation.SetupConfig(flame_model=str(model_file), landmark_embedding=str(emb_file), epochs=1)
    with caplog.at_level(logging.WARNING, logger="neuface_jax"):
        setup = annotation.make_setup(cfg, need_landmarker=False)
    assert setup.encoder is None and setup.encoder_label == "random init"
    assert any("import-encoder" in n for n in setup.notes)
    assert any("import-encoder" in r.getMessage() for r in caplog.records)
    explicit = annotation.make_setup(cfg.replace(encoder="random"), need_landmarker=False)
    assert not any("import-encoder" in n for n in explicit.notes)
