"""Non-finite fits are never written as results: ``annotate`` (``write_outputs``) and the synthetic
demo refuse before writing anything, with a ValueError naming the clip (``annotate`` exits 1)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from neuface_jax.annotation import write as write_lib
from neuface_jax.synthetic import demo as demo_lib


def _result(nan_in: str | None):
    r = types.SimpleNamespace(
        shape=np.zeros(4), expression=np.zeros((2, 1, 3)), pose=np.zeros((2, 1, 15)), cam=np.ones((2, 1, 3)),
        vertices=np.zeros((2, 1, 5, 3)),
    )
    if nan_in:
        getattr(r, nan_in).flat[0] = np.nan
    return r


@pytest.mark.parametrize("field", ["shape", "expression", "pose", "cam", "vertices"])
def test_check_finite_result(field):
    write_lib.check_finite_result("clip", _result(None))
    with pytest.raises(ValueError, match=f"clip: the fit is not finite \\({field}\\)"):
        write_lib.check_finite_result("clip", _result(field))


def test_write_outputs_refuses_a_nan_fit_before_writing(tmp_path):
    clip = types.SimpleNamespace(label="talk.mp4", seconds={})
    with pytest.raises(ValueError, match="talk.mp4: the fit is not finite"):
        write_lib.write_outputs(types.SimpleNamespace(), clip, _result("expression"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_demo_refuses_a_nan_fit_before_writing(tmp_path):
    config = types.SimpleNamespace(synth=types.SimpleNamespace(crop_size=64))
    fits = {"neuface": (_result(None), None), "direct": (_result("pose"), None)}
    with pytest.raises(ValueError, match="demo \\(direct\\): the fit is not finite \\(pose\\)"):
        demo_lib._export(tmp_path / "out", config, fits, None, None, None, {}, {}, {})
    assert not (tmp_path / "out").exists()


def test_annotate_setup_refuses_a_checkpoint_with_non_finite_weights(tmp_path):
    # The reported path to a NaN params.npz: a damaged encoder checkpoint. It now stops at setup
    # (a ValueError, which the annotate command turns into exit status 1 and a message).
    from neuface_jax import annotation
    from neuface_jax.annotation import SetupConfig
    from neuface_jax.core import encoder as enc

    cfg = enc.EncoderConfig.small(n_shape=6, n_expr=4, image_size=16, small_widths=(4, 8), small_blocks=(1, 1),
                                  head_hidden=16)
    model = enc.init_encoder(cfg, 0)
    model.fc2.bias[...] = model.fc2.bias[...] * np.nan
    enc.save_encoder(tmp_path / "ck", model, cfg)
    with pytest.raises(ValueError, match="non-finite encoder weights in fc2/bias") as e:
        annotation.make_setup(SetupConfig(encoder=str(tmp_path / "ck"), epochs=1), need_landmarker=False)
    assert str(tmp_path / "ck") in str(e.value)
