"""Encoder checkpoints: checksums recorded at save and checked at load, finite weights, validated
configs, and errors that name the checkpoint."""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from neuface_jax.core import encoder as enc

TINY = dict(n_shape=6, n_expr=4, image_size=16, small_widths=(4, 8), small_blocks=(1, 1), head_hidden=16)
PACKAGED = Path(enc.__file__).resolve().parents[1] / "assets" / "pretrained_small_encoder"


def _arrays(model) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model)))[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _save_tiny(path, seed=0, edit=None):
    cfg = enc.EncoderConfig.small(**TINY)
    model = enc.init_encoder(cfg, seed)
    if edit is not None:
        edit(model)
    enc.save_encoder(path, model, cfg)
    return model, cfg


def _rewrite_meta(path, change):
    f = Path(path) / "config" / "metadata"
    meta = json.loads(f.read_text())
    change(meta)
    f.write_text(json.dumps(meta))


def test_checksums_recorded_and_verified(tmp_path):
    model, cfg = _save_tiny(tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "config" / "metadata").read_text())
    arrays = _arrays(model)
    assert len(meta["checksums"]["arrays"]) == len(arrays)
    assert meta["checksums"]["arrays"] == enc.array_checksums(enc._to_pure_dict(nnx.state(model)))
    loaded, cfg2 = enc.load_encoder(tmp_path / "ck")
    assert cfg2 == cfg
    for k, a in _arrays(loaded).items():
        assert a.tobytes() == arrays[k].tobytes()


def test_digest_is_byte_order_independent():
    a = np.arange(12, dtype="<f4").reshape(3, 4)
    assert enc._array_digest(a) == enc._array_digest(a.astype(">f4")) == enc._array_digest(np.asfortranarray(a))
    assert enc._array_digest(a) != enc._array_digest(a.reshape(4, 3))


def test_other_weights_under_the_recorded_checksums_are_refused(tmp_path):
    _save_tiny(tmp_path / "a", seed=0)
    _save_tiny(tmp_path / "b", seed=1)
    shutil.rmtree(tmp_path / "a" / "state")
    shutil.copytree(tmp_path / "b" / "state", tmp_path / "a" / "state")
    with pytest.raises(ValueError, match="corrupted encoder checkpoint") as e:
        enc.load_encoder(tmp_path / "a")
    assert str(tmp_path / "a") in str(e.value)


@pytest.mark.parametrize("where", [0.3, 0.5, 0.7])
def test_flipped_bytes_are_refused_or_harmless(tmp_path, where):
    model, _ = _save_tiny(tmp_path / "ck")
    data = max(glob.glob(str(tmp_path / "ck" / "state" / "**" / "d" / "*"), recursive=True), key=os.path.getsize)
    raw = bytearray(Path(data).read_bytes())
    start = int(len(raw) * where)
    n = min(4096, len(raw) - start, 256)
    raw[start : start + n] = bytes(b ^ 0xFF for b in raw[start : start + n])
    Path(data).write_bytes(bytes(raw))
    try:
        loaded, _ = enc.load_encoder(tmp_path / "ck")
    except ValueError as e:
        assert str(tmp_path / "ck") in str(e)
    else:  # the flip hit nothing that is read: the weights must be exactly the saved ones
        want = _arrays(model)
        assert all(a.tobytes() == want[k].tobytes() for k, a in _arrays(loaded).items())


def test_non_finite_weights_are_refused(tmp_path):
    def poison(model):
        k = model.fc1.kernel
        k[...] = k[...].at[0, 0].set(np.nan)

    _save_tiny(tmp_path / "ck", edit=poison)
    with pytest.raises(ValueError, match="non-finite encoder weights in fc1/kernel") as e:
        enc.load_encoder(tmp_path / "ck")
    assert str(tmp_path / "ck") in str(e.value)


def test_checkpoint_without_checksums_loads_as_unverified(tmp_path, caplog):
    model, _ = _save_tiny(tmp_path / "ck")
    _rewrite_meta(tmp_path / "ck", lambda m: m.pop("checksums"))
    with caplog.at_level(logging.WARNING, logger="neuface_jax.core.encoder"):
        loaded, _ = enc.load_encoder(tmp_path / "ck")
    assert any("unverified" in r.getMessage() and str(tmp_path / "ck") in r.getMessage() for r in caplog.records)
    want = _arrays(model)
    assert all(a.tobytes() == want[k].tobytes() for k, a in _arrays(loaded).items())


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("image_size", 0, "image_size"),
        ("image_size", 1e6, "image_size"),
        ("image_size", -64, "image_size"),
        ("small_blocks", [100000, 1], "small_blocks"),
        ("small_widths", [4, 10**9], "small_widths"),
        ("head_hidden", 10**9, "head_hidden"),
        ("n_shape", -1, "n_shape"),
        ("cam_scale_init", "nan", "cam_scale_init"),
        ("predict_neck", "yes", "predict_neck"),
    ],
)
def test_crafted_config_refused_before_building(tmp_path, monkeypatch, field, value, needle):
    _save_tiny(tmp_path / "ck")
    _rewrite_meta(tmp_path / "ck", lambda m: m["config"].__setitem__(field, value))

    def no_build(*a, **k):
        raise AssertionError("an encoder was built from an unvalidated config")

    monkeypatch.setattr(enc, "Encoder", no_build)
    with pytest.raises(ValueError, match=needle) as e:
        enc.load_encoder(tmp_path / "ck")
    assert str(tmp_path / "ck") in str(e.value) and "invalid encoder config" in str(e.value)


@pytest.mark.parametrize("missing", ["config", "state"])
def test_missing_parts_name_the_checkpoint(tmp_path, missing):
    _save_tiny(tmp_path / "ck")
    shutil.rmtree(tmp_path / "ck" / missing)
    with pytest.raises(ValueError, match=f"no {missing}/") as e:
        enc.load_encoder(tmp_path / "ck")
    assert str(tmp_path / "ck") in str(e.value)


def test_metadata_without_config_names_the_checkpoint(tmp_path):
    _save_tiny(tmp_path / "ck")
    _rewrite_meta(tmp_path / "ck", lambda m: m.pop("config"))
    with pytest.raises(ValueError, match="no config") as e:
        enc.load_encoder(tmp_path / "ck")
    assert str(tmp_path / "ck") in str(e.value)


def test_config_ranges():
    enc.EncoderConfig.small(**TINY)  # the presets and test configs stay valid
    enc.EncoderConfig()
    for bad in (dict(image_size=0), dict(image_size=10**6), dict(small_blocks=(100000, 1, 1, 1)),
                dict(small_widths=(), small_blocks=()), dict(bn_momentum=2.0), dict(cam_translation_init=(0.0, np.inf)),
                dict(n_expr=True)):
        with pytest.raises(ValueError):
            enc.EncoderConfig.small(**bad)
    with pytest.raises(ValueError, match="JSON object"):
        enc.EncoderConfig.from_dict([1, 2])


def test_packaged_checkpoint_is_verified(caplog):
    meta = json.loads((PACKAGED / "config" / "metadata").read_text())
    assert len(meta["checksums"]["arrays"]) == 64
    with caplog.at_level(logging.WARNING, logger="neuface_jax.core.encoder"):
        _, cfg = enc.load_encoder(PACKAGED)
    assert not any("unverified" in r.getMessage() for r in caplog.records)
    summary = json.loads((PACKAGED.parent / (PACKAGED.name + ".pretrain.json")).read_text())
    assert enc.EncoderConfig.from_dict(summary["encoder_config"]) == cfg
