"""Per-frame refinement of a NeuFace result: a short direct optimization that starts where NeuFace ended.

NeuFace optimizes an encoder's weights, so every frame's parameters are a function of its pixels through
one shared network. With a small, low-resolution prior that function is too smooth for the face's fast,
small motions: on real clips the fitted eyes never close on blink frames (the encoder's expression does not
respond to the few pixels a blink changes) and the mouth opens only 50–75 % as far as detected, while a
direct per-frame fit of the same model to the same landmarks reaches both. The refinement keeps NeuFace's
result as the starting point — its identity, its temporally smooth, well-conditioned head pose and
camera, and its expression — and frees each frame's expression, head and jaw rotation and camera for
``steps`` Adam steps of the direct baseline (``fit.DirectFit``: the fit's own loss terms, so the temporal
term on the head rotation and the multi-view term still apply, plus its small L2 priors); the clip keeps
one identity, refined with the rest.

The eight inner-lip points (iBUG-68 60–67) weigh ``inner_lip_weight`` times the others in the refinement's
landmark term. A face model's lips are rarely as thick as the subject's (the demo head's are thinner than every
shared real clip's), so with equal weights the fit cannot put both the outer lip contour and the lips' contact
where they are detected, and it settles for a closed mouth left slightly open; the inner-lip gap is what says
whether the mouth is open, so it is the one kept.

Adam moves every coefficient by about the learning rate per step, so in a few hundred steps the identity and the
extreme frames' expressions stay near NeuFace's. ``identity_rate`` and ``expression_rate`` scale those steps
(``scale_rates``): the run optimizes ``shape / k`` and ``expression / k_e`` through the model's directions scaled
by the same factors (and their L2 priors by the squares), so the objective and its minimum are unchanged and only
the step sizes grow, while the head rotation and camera keep theirs.

The clip is padded to whole chunks (masked frames), as NeuFace pads it, so clips of similar length share
one compiled run. The direct fit has no neck or eye rotations: a result that carries them (an encoder that
predicts them) is returned unrefined, with a warning, rather than refined without them.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np

from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib

__all__ = ["refine", "refine_config", "scale_rates", "DEFAULT_REFINE_STEPS", "DEFAULT_REFINE_LR",
           "DEFAULT_INNER_LIP_WEIGHT", "DEFAULT_IDENTITY_RATE", "DEFAULT_EXPRESSION_RATE"]

logger = logging.getLogger(__name__)

#: Adam steps of the refinement and its learning rate (measured on the four shared real clips; the default of
#: ``annotate`` and ``annotate-dataset``).
DEFAULT_REFINE_STEPS = 300
DEFAULT_REFINE_LR = 3e-3
#: Weight of the inner-lip points (iBUG-68 60–67) in the refinement's landmark term (1: as the others).
DEFAULT_INNER_LIP_WEIGHT = 3.0
#: How many times faster than the head rotation and camera the refinement moves the clip's identity and each
#: frame's expression (1: alike; ``scale_rates``).
DEFAULT_IDENTITY_RATE = 1.0
DEFAULT_EXPRESSION_RATE = 1.0
_IBUG68_INNER_LIP = slice(60, 68)
#: Loss terms that read the raw expression coefficients (``scale_rates`` keeps only the direct priors exact).
_RAW_EXPRESSION_TERMS = ("expression_prior", "expression_smooth", "prior")


def scale_rates(face: fit_lib.FaceModel, config: fit_lib.FitConfig, identity: float = 1.0, expression: float = 1.0):
    """``face`` with its identity and expression directions (vertex and joint bases) times ``identity`` and
    ``expression``, and ``config`` with those coefficients' L2 priors times their squares: coefficients divided by
    the same factors give the same meshes and the same loss, while Adam's steps on them are that many times
    larger in the original units."""
    flame = face.flame
    s, e = int(flame.num_shape), int(flame.num_expression)
    rows = np.ones(flame.basis.shape[0], np.float32)
    rows[:s], rows[s:s + e] = identity, expression
    rows = jnp.asarray(rows)
    flame = dataclasses.replace(flame, basis=flame.basis * rows[:, None],
                                joint_basis=flame.joint_basis * rows[: flame.joint_basis.shape[0], None])
    w = np.full(s, 1.0 / s) if config.shape_prior_weights is None else np.asarray(config.shape_prior_weights, float)
    ws, we, wp = config.direct_prior_weights
    return (dataclasses.replace(face, flame=flame),
            config.replace(shape_prior_weights=tuple(float(x) for x in w * float(identity) ** 2),
                           direct_prior_weights=(ws, we * float(expression) ** 2, wp)))


def refine_config(config: fit_lib.FitConfig, steps: int, learning_rate: float, *,
                  inner_lip_weight: float = DEFAULT_INNER_LIP_WEIGHT, num_landmarks: int = 68) -> fit_lib.FitConfig:
    """The ``FitConfig`` of the refinement run: ``config``'s loss terms and priors, the direct
    optimizer's rate and step count set, no early stopping, and (for the 68 iBUG points) the inner-lip
    points weighted ``inner_lip_weight`` times ``config``'s landmark weights."""
    if int(steps) < 0 or not float(learning_rate) > 0:
        raise ValueError(f"refinement needs steps >= 0 and a positive learning rate, got {steps}, {learning_rate}")
    if not float(inner_lip_weight) > 0:
        raise ValueError(f"inner_lip_weight must be positive, got {inner_lip_weight}")
    weights = config.landmark_weights
    if float(inner_lip_weight) != 1.0 and num_landmarks == 68:
        w = np.ones(68, np.float64) if weights is None else np.array(weights, np.float64)
        w[_IBUG68_INNER_LIP] *= float(inner_lip_weight)
        weights = tuple(float(x) for x in w)
    return config.replace(direct_learning_rate=float(learning_rate), direct_steps=int(steps), direct_early_stop=0.0,
                          landmark_weights=weights)


def refine(
    face: fit_lib.FaceModel,
    encoder_config: encoder_lib.EncoderConfig,
    config: fit_lib.FitConfig,
    data: fit_lib.ClipData,
    result: fit_lib.FitResult,
    *,
    steps: int = DEFAULT_REFINE_STEPS,
    learning_rate: float = DEFAULT_REFINE_LR,
    inner_lip_weight: float = DEFAULT_INNER_LIP_WEIGHT,
    identity_rate: float = DEFAULT_IDENTITY_RATE,
    expression_rate: float = DEFAULT_EXPRESSION_RATE,
    seed: int = 0,
) -> fit_lib.FitResult:
    """``result`` (NeuFace's, on ``data``) refined per frame; ``steps=0`` returns it unchanged.

    ``history`` gains the refinement's loss terms as ``refine_<term>`` (every tenth of the run).
    """
    if steps == 0:
        return result
    if not (float(identity_rate) > 0 and float(expression_rate) > 0):
        raise ValueError(f"identity_rate and expression_rate must be positive, got {identity_rate}, {expression_rate}")
    cfg = refine_config(config, steps, learning_rate, inner_lip_weight=inner_lip_weight,
                        num_landmarks=int(data.landmarks.shape[-2]))
    k, ke = float(identity_rate), float(expression_rate)
    raw_terms = [n for n in _RAW_EXPRESSION_TERMS if cfg.loss.get(n)]
    if ke != 1.0 and raw_terms:
        raise ValueError(f"expression_rate={ke} rescales the expression coefficients that the fit's {raw_terms} "
                         "terms read; use expression_rate=1 with them")
    run_face, run_cfg = (face, cfg) if k == ke == 1.0 else scale_rates(face, cfg, k, ke)
    t, w = data.num_frames, data.num_views
    if result.expression.shape[:2] != (t, w):
        raise ValueError(f"result has {result.expression.shape[:2]} frames x views, the clip {(t, w)}")
    t_pad = fit_lib.padded_length(t, config.chunk_frames)

    def pad(x):
        x = jnp.asarray(x, jnp.float32)
        return jnp.concatenate([x, jnp.repeat(x[-1:], t_pad - t, axis=0)], axis=0)

    pose = np.asarray(result.pose, np.float32)
    if np.any(pose[..., 3:6] != 0) or np.any(pose[..., 9:15] != 0):
        logger.warning("per-frame refinement skipped: the fit has neck or eye rotations, which the direct fit "
                       "does not model")
        return result
    params = fit_lib.DirectParams(
        shape=jnp.asarray(result.shape, jnp.float32) / k,
        expression=pad(result.expression) / ke,
        rotation=pad(np.concatenate([pose[..., 0:3], pose[..., 6:9]], -1)),
        cam=pad(result.cam),
    )
    direct = fit_lib.DirectFit(run_face, encoder_config, run_cfg)
    out, stats = direct.run_fn(params, fit_lib.pad_clip(data, t_pad), jax.random.key(seed), int(steps), run_face)
    shape, expression, full, cam, lmk2d, verts, canon = (np.asarray(a)[:t] if i else np.asarray(a)
                                                          for i, a in enumerate(jax.device_get(out)))
    shape, expression = shape * np.float32(k), expression * np.float32(ke)
    names = fit_lib._parts_template(cfg, w) + ["prior", "total"]
    stats = np.asarray(stats)
    block = max(1, int(steps) // 10)
    history = dict(result.history)
    history.update({f"refine_{n}": [float(v) for v in stats[::block, i]] for i, n in enumerate(names)})
    return dataclasses.replace(
        result, shape=shape, expression=expression, pose=full, cam=cam, landmarks2d=lmk2d, vertices=verts,
        canonical_vertices=canon, history=history,
    )
