"""Generating motion from a start frame: the prior, and the two baselines it is compared with.

* ``sample``: the prior's continuations — z ~ p(z | past) and the decoded change of state, one
  ``lax.scan`` over time, ``vmap`` over samples; sample i uses the key ``fold_in(PRNGKey(seed), i)``,
  so it is the same whatever the number of samples.
* ``hold``: the start state repeated (no motion).
* ``ARModel``: a linear autoregressive model of order p on the normalized state with Gaussian
  innovations (full covariance), fitted by ridge least squares to the same training clips.

States are raw (un-normalized) ``data.Layout`` vectors [..., T, D]; ``start_history`` gives the
frames up to and including the start frame (a single frame is repeated to fill the history).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import flame_jax
from neuface_jax.media import video as video_lib
from neuface_jax.motion_prior import data as data_lib
from neuface_jax.motion_prior import model as model_lib
from neuface_jax.motion_prior import render as render_mp
from neuface_jax.motion_prior.train import Normalizer, Prior


def history_window(states: np.ndarray, frame: int, history: int) -> np.ndarray:
    """Up to ``history`` frames ending at ``frame`` (fewer at a clip's start: ``sample`` repeats the first)."""
    return np.asarray(states[max(0, frame - history + 1) : frame + 1], np.float32)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _sample(graphdef, num_frames: int, num_samples: int, params, norm, hist, ident, seed):
    hist_n = (hist - norm["mean"]) / norm["std"]
    ident_n = (ident - norm["id_mean"]) / norm["id_std"]
    base = jax.random.PRNGKey(seed)

    def one(key):
        def step(h, k):
            past = model_lib.past_features(h, ident_n, norm["delta_scale"])
            mu, lv = model_lib.prior(graphdef, params, past)
            k_z, k_d = jax.random.split(k)
            z = mu + jnp.exp(0.5 * lv) * jax.random.normal(k_z, mu.shape)
            out = model_lib.decode(graphdef, params, past, z)
            x = h[-1] + model_lib.sample_change(out, k_d, h.shape[-1]) * norm["delta_scale"]
            return jnp.concatenate([h[1:], x[None]], 0), x

        _, xs = jax.lax.scan(step, hist_n, jax.random.split(key, num_frames))
        return xs

    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(num_samples))
    xs = jax.vmap(one)(keys)
    return xs * norm["std"] + norm["mean"]


def sample(prior: Prior, start_history: np.ndarray, identity: np.ndarray, *, num_frames: int, num_samples: int,
           seed: int = 0) -> np.ndarray:
    """[num_samples, num_frames, D] raw states following the start (the start itself excluded)."""
    hist = _fill_history(start_history, prior.config.history)
    ident = data_lib.identity_vector(np.asarray(identity), prior.config.layout)
    out = _sample(prior.graphdef, int(num_frames), int(num_samples), prior.params, prior.norm.arrays(),
                  jnp.asarray(hist), jnp.asarray(ident), jnp.uint32(seed))
    return np.asarray(out)


def _fill_history(start_history: np.ndarray, history: int) -> np.ndarray:
    h = np.asarray(start_history, np.float32)
    if h.ndim == 1:
        h = h[None]
    if len(h) < history:
        h = np.concatenate([np.repeat(h[:1], history - len(h), 0), h])
    return h[-history:]


def hold(start_history: np.ndarray, *, num_frames: int, num_samples: int) -> np.ndarray:
    """The start state repeated: [num_samples, num_frames, D]."""
    last = np.asarray(start_history, np.float32).reshape(-1, np.shape(start_history)[-1])[-1]
    return np.broadcast_to(last, (num_samples, num_frames, len(last))).copy()


@dataclasses.dataclass(frozen=True, eq=False)
class ARModel:
    """x_t = Σ_k A_k x_{t−k} + b + L ε on normalized states (ε standard normal)."""

    coef: np.ndarray  # [p * D, D]
    bias: np.ndarray  # [D]
    chol: np.ndarray  # [D, D]
    norm: Normalizer

    @property
    def order(self) -> int:
        return self.coef.shape[0] // self.coef.shape[1]


def fit_ar(sequences: Sequence[np.ndarray], norm: Normalizer, order: int = 2, ridge: float = 1e-3) -> ARModel:
    """Least-squares AR(order) fit to raw state sequences (each a valid segment [T, D])."""
    xs, ys = [], []
    for seq in sequences:
        z = (np.asarray(seq, np.float64) - norm.mean) / norm.std
        if len(z) <= order:
            continue
        xs.append(np.concatenate([z[order - k - 1 : len(z) - k - 1] for k in range(order)], 1))
        ys.append(z[order:])
    x, y = np.concatenate(xs), np.concatenate(ys)
    x1 = np.concatenate([x, np.ones((len(x), 1))], 1)
    w = np.linalg.solve(x1.T @ x1 + ridge * len(x1) * np.eye(x1.shape[1]), x1.T @ y)
    resid = y - x1 @ w
    cov = np.cov(resid.T) + 1e-8 * np.eye(y.shape[1])
    return ARModel(w[:-1].astype(np.float64), w[-1], np.linalg.cholesky(cov), norm)


def sample_ar(ar: ARModel, start_history: np.ndarray, *, num_frames: int, num_samples: int,
              seed: int = 0) -> np.ndarray:
    """[num_samples, num_frames, D] raw states from the AR baseline."""
    p = ar.order
    h = (_fill_history(start_history, p) - ar.norm.mean) / ar.norm.std
    hist = np.repeat(h[None].astype(np.float64), num_samples, 0)  # [S, p, D]
    rng = np.random.default_rng(seed)
    out = np.empty((num_samples, num_frames, h.shape[-1]))
    for t in range(num_frames):
        lagged = np.concatenate([hist[:, -1 - k] for k in range(p)], 1)
        x = lagged @ ar.coef + ar.bias + rng.normal(size=(num_samples, h.shape[-1])) @ ar.chol.T
        out[:, t] = x
        hist = np.concatenate([hist[:, 1:], x[:, None]], 1)
    return (out * ar.norm.std + ar.norm.mean).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class Continuations:
    """Generated samples from one start frame, in FLAME parameters."""

    states: np.ndarray  # [S, T, D] raw states, T frames after the start
    expression: np.ndarray  # [S, T, n_expr]
    pose: np.ndarray  # [S, T, 15]
    start: data_lib.MotionClip
    frame: int
    fps: float


def continue_clip(prior: Prior, clip: data_lib.MotionClip, frame: int | None = None, *, seconds: float = 10.0,
                  samples: int = 4, seed: int = 0) -> Continuations:
    """``samples`` continuations of ``clip`` (resampled to the prior's rate) after ``frame`` (default its first)."""
    clip = data_lib.resample(clip, prior.fps)
    frame = 0 if frame is None else int(frame)
    if not 0 <= frame < clip.num_frames:
        raise ValueError(f"start frame {frame} outside the clip's {clip.num_frames} frames")
    states = data_lib.clip_state(clip, prior.config.layout)
    hist = history_window(states, frame, prior.config.history)
    num_frames = max(1, int(round(seconds * prior.fps)))
    xs = sample(prior, hist, clip.shape, num_frames=num_frames, num_samples=samples, seed=seed)
    expr, pose = data_lib.state_to_params(xs, prior.config.layout, clip.pose[frame])
    return Continuations(xs, expr, pose, clip, frame, prior.fps)


def write_continuations(result: Continuations, out, *, render: int = 1, model=None, size: int = 256,
                        yaws_deg: Sequence[float] = (0.0, 60.0)) -> list:
    """Writes ``sample_NNN/params.npz`` (annotation format, start frame first) per sample and, for the
    first ``render`` samples, ``sample_NNN/mesh.mp4`` (the views side by side). Returns the paths."""
    out = Path(out)
    clip, f = result.start, result.frame
    paths = []
    for i in range(len(result.states)):
        expr = np.concatenate([_pad(clip.expression[f : f + 1], result.expression.shape[-1]), result.expression[i]])
        pose = np.concatenate([clip.pose[f : f + 1], result.pose[i]])
        d = out / f"sample_{i:03d}"
        paths.append(data_lib.write_params(d / data_lib.PARAMS_FILE, expr, pose, clip.shape, cam=clip.cam[f],
                                           fps=result.fps, view_name=clip.view_name or "front", model=clip.model))
        if i < render:
            model = model if model is not None else flame_jax.demo_model()
            verts = render_mp.mesh_sequence(model, expr, pose, clip.shape)
            frames = render_mp.render_views(model, verts, yaws_deg, size)
            paths.append(video_lib.write_video(d / "mesh.mp4", frames, fps=result.fps))
    return paths


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(x), n), np.float32)
    k = min(n, x.shape[1])
    out[:, :k] = x[:, :k]
    return out
