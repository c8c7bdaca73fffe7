"""The fair direct baseline: undetected frames interpolated / kept in the temporal terms, step budget,
early stopping."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from neuface_jax.core import fit

# The small random model, the tiny encoder and the known-motion clip of the optimizer tests.
from .test_fit import _target_clip, ecfg, face  # noqa: F401  (pytest fixtures)


def test_interpolate_undetected_is_linear_between_neighbours_and_flat_at_the_ends():
    t = 8
    x = np.stack([np.arange(t, dtype=np.float32) * 2.0, 100.0 + np.arange(t, dtype=np.float32)], 1)[..., None]
    x = np.concatenate([x, -x], -1)  # [T, W=2, 2]
    mask = np.ones((t, 2), np.float32)
    mask[[0, 3, 4, 7], 0] = 0.0  # view 0: both ends and a gap of two
    mask[:, 1] = 0.0  # view 1: never detected
    corrupted = x.copy()
    corrupted[mask == 0] = 999.0
    corrupted[:, 1] = x[:, 1]
    out = np.asarray(fit.interpolate_undetected(jnp.asarray(corrupted), jnp.asarray(mask)))
    np.testing.assert_allclose(out[1:7, 0], x[1:7, 0], atol=1e-5)  # the gap: exactly linear
    np.testing.assert_allclose(out[0, 0], x[1, 0])  # the ends: the nearest detected frame
    np.testing.assert_allclose(out[7, 0], x[6, 0])
    np.testing.assert_array_equal(out[:, 1], x[:, 1])  # a view without detections is left alone


def _with_gap(data: fit.ClipData, frames) -> fit.ClipData:
    fm = np.array(data.frame_mask)
    lm = np.array(data.landmarks_mask)
    lmk = np.array(data.landmarks)
    fm[frames] = 0.0
    lm[frames] = 0.0
    lmk[frames] = np.nan
    return fit.ClipData(images=data.images, landmarks=jnp.asarray(lmk), landmarks_mask=jnp.asarray(lm),
                        frame_mask=jnp.asarray(fm))


def test_undetected_frames_interpolated_after_the_fit(face, ecfg):
    data = _with_gap(_target_clip(face, t=9, w=1), [3, 4])
    base = fit.FitConfig(num_epochs=10, chunk_frames=9, direct_learning_rate=1e-2, seed=1)
    interp = fit.DirectFit(face, ecfg, base).fit(data)
    for k, a in ((3, 1 / 3), (4, 2 / 3)):  # the undetected frames lie on the line between frames 2 and 5
        np.testing.assert_allclose(interp.cam[k, 0], (1 - a) * interp.cam[2, 0] + a * interp.cam[5, 0], atol=1e-5)
        np.testing.assert_allclose(interp.expression[k, 0],
                                   (1 - a) * interp.expression[2, 0] + a * interp.expression[5, 0], atol=1e-5)
    with pytest.raises(ValueError, match="direct_undetected"):
        fit.FitConfig(direct_undetected="zero")


def test_temporal_mode_step_budget_and_early_stopping(face, ecfg):
    data = _with_gap(_target_clip(face, t=6, w=1), [2])
    cfg = fit.FitConfig(num_epochs=1, chunk_frames=6, direct_learning_rate=2e-2, direct_steps=120,
                        direct_undetected="temporal", direct_early_stop=0.5, loss={"landmark": 10.0, "temporal": 100.0})
    d = fit.DirectFit(face, ecfg, cfg)
    assert d.num_steps(6) == 120
    res = d.fit(data)
    # early stopping: the landmark loss stalled before the budget was spent
    assert fit.DirectFit.EARLY_STOP_WINDOW <= res.history["steps_taken"][0] < 120
    assert np.all(np.isfinite(res.vertices))
    # "temporal": the undetected frame is in the temporal term, so it moved from its interpolated start
    start = d.init_params(data)
    assert np.abs(res.pose[2, 0, :3] - np.asarray(start.rotation)[2, 0, :3]).max() > 1e-4
