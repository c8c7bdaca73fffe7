"""Per-frame refinement after NeuFace (core.refine): it follows per-frame motion NeuFace's result misses."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from neuface_jax import annotation
from neuface_jax.annotation.config import SetupConfig
from neuface_jax.core import fit, refine

from .test_fit import ecfg, face  # noqa: F401  (pytest fixtures)


def test_refinement_reaches_per_frame_expression_and_keeps_the_rest(face, ecfg):
    # Targets: a per-frame expression and jaw (a "blink" on two frames); the starting result has the clip's
    # smooth motion only (no expression, a constant jaw), as NeuFace leaves fast small motions.
    # Through annotate's own call (the dataset runner makes the same one), at the default rate.
    setup = annotation.make_setup(SetupConfig(chunk_frames=4, refine_steps=100), model=face.flame,
                                  embedding=face.embedding, encoder_config=ecfg, need_landmarker=False)
    face, cfg = setup.face, setup.fit_config  # the set-up face (its contour embedding)
    t, w = 7, 1
    rng = np.random.default_rng(0)
    shape = rng.normal(size=face.flame.num_shape).astype(np.float32) * 0.5
    expr = np.zeros((t, w, face.flame.num_expression), np.float32)
    expr[3:5, :, 0] = 0.5
    pose = np.zeros((t, w, 15), np.float32)
    pose[..., 1] = 0.3
    pose[..., 6] = np.where(np.arange(t) % 2, 0.25, 0.05)[:, None]
    cam = np.tile(np.array([9.0, 0.0, 0.02], np.float32), (t, w, 1))
    _, lmk, _ = fit.evaluate_params(face, jnp.asarray(shape), jnp.asarray(expr), jnp.asarray(pose), jnp.asarray(cam))
    frame_mask = np.ones((t, w), np.float32)
    frame_mask[6] = 0.0  # undetected: no target, interpolated from its neighbours
    data = fit.ClipData(images=jnp.zeros((t, w, 16, 16, 3)), landmarks=lmk,
                        landmarks_mask=jnp.asarray(np.broadcast_to(frame_mask[..., None], (t, w, 68))),
                        frame_mask=jnp.asarray(frame_mask))
    start_pose = pose.copy()
    start_pose[..., 6] = 0.15
    _, lmk0, _ = fit.evaluate_params(face, jnp.asarray(shape), jnp.zeros_like(jnp.asarray(expr)),
                                     jnp.asarray(start_pose), jnp.asarray(cam))
    start = fit.FitResult(shape=shape, expression=np.zeros_like(expr), pose=start_pose, cam=cam,
                          landmarks2d=np.asarray(lmk0), vertices=np.zeros((t, w, 1, 3)),
                          canonical_vertices=np.zeros((t, w, 1, 3)), history={"landmark": [1.0]})
    assert annotation.refine_result(dataclasses.replace(setup, config=SetupConfig(refine_steps=0)), data, start) is start
    out = annotation.refine_result(setup, data, start)

    err = lambda res: float(np.abs(np.asarray(res.landmarks2d) - np.asarray(lmk))[:6].mean())  # noqa: E731
    assert err(out) < 0.4 * err(start), (err(start), err(out))
    assert out.expression[3:5, 0, 0].min() > 0.2 and np.abs(out.expression[[0, 1, 2, 5], 0, 0]).max() < 0.1
    np.testing.assert_allclose(out.pose[:6, 0, 6], pose[:6, 0, 6], atol=0.03)  # the jaw follows each frame
    assert out.shape.shape == shape.shape  # one identity for the clip
    assert out.vertices.shape == (t, w, face.flame.num_vertices, 3) and out.expression.shape == expr.shape
    assert np.isfinite(out.expression).all() and np.isfinite(out.vertices).all()
    assert "landmark" in out.history and out.history["refine_landmark"][-1] < out.history["refine_landmark"][0]

    eyes = start_pose.copy()
    eyes[..., 9:15] = 0.1  # an encoder that predicts eye rotations: the direct fit cannot keep them, so no refinement
    assert refine.refine(face, ecfg, cfg, data, dataclasses.replace(start, pose=eyes), steps=5).pose is eyes
    with pytest.raises(ValueError, match="frames x views"):
        refine.refine(face, ecfg, cfg, data, dataclasses.replace(start, expression=expr[:3]), steps=5)
    # The inner-lip points (iBUG 60-67) weigh DEFAULT_INNER_LIP_WEIGHT times the others, on top of the fit's own
    # landmark weights; another landmark set, or a weight of 1, keeps the fit's weights.
    w = np.asarray(refine.refine_config(cfg, 10, 1e-3).landmark_weights)
    assert refine.DEFAULT_INNER_LIP_WEIGHT > 1 and (w[60:68] == refine.DEFAULT_INNER_LIP_WEIGHT).all()
    assert (w[:60] == 1).all()
    own = cfg.replace(landmark_weights=tuple(np.arange(1.0, 69.0)))
    np.testing.assert_array_equal(refine.refine_config(own, 10, 1e-3, inner_lip_weight=2.0).landmark_weights[58:62],
                                  [59.0, 60.0, 122.0, 124.0])
    assert refine.refine_config(cfg, 10, 1e-3, num_landmarks=105).landmark_weights == cfg.landmark_weights
    assert refine.refine_config(own, 10, 1e-3, inner_lip_weight=1.0).landmark_weights == own.landmark_weights
    with pytest.raises(ValueError, match="inner_lip_weight"):
        refine.refine_config(cfg, 10, 1e-3, inner_lip_weight=0.0)
    # identity / expression rates reparametrize (directions x k, coefficients / k, priors x k^2): same meshes, priors
    k, ke = 4.0, 3.0
    scaled, scfg = refine.scale_rates(face, cfg, k, ke)
    e2 = expr[:2] + 0.3
    v0, _, j0 = fit.evaluate_params(face, jnp.asarray(shape), jnp.asarray(e2), jnp.asarray(pose[:2]),
                                    jnp.asarray(cam[:2]))
    v1, _, j1 = fit.evaluate_params(scaled, jnp.asarray(shape) / k, jnp.asarray(e2) / ke, jnp.asarray(pose[:2]),
                                    jnp.asarray(cam[:2]))
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v0), atol=1e-6)
    np.testing.assert_allclose(np.asarray(j1), np.asarray(j0), atol=1e-6)
    prior = lambda x, w: float(np.sum(np.asarray(w) * np.asarray(x) ** 2))  # noqa: E731  (weighted_l2_prior's sum)
    assert prior(shape / k, scfg.shape_prior_weights) == pytest.approx(np.mean(shape**2), rel=1e-5)
    assert scfg.direct_prior_weights[1] == pytest.approx(cfg.direct_prior_weights[1] * ke**2)
    assert scaled.flame.num_shape == face.flame.num_shape and cfg.shape_prior_weights is None
    with pytest.raises(ValueError, match="identity_rate and expression_rate"):
        refine.refine(face, ecfg, cfg, data, start, steps=5, expression_rate=0.0)
    with pytest.raises(ValueError, match="expression_smooth"):  # a term on the raw coefficients would change
        refine.refine(face, ecfg, cfg.replace(loss={**cfg.loss, "expression_smooth": 1.0}), data, start, steps=5,
                      expression_rate=2.0)
    with pytest.raises(ValueError, match="refine"):
        SetupConfig(refine_steps=-1)
    with pytest.raises(ValueError, match="refine"):
        SetupConfig(refine_lr=0.0)
