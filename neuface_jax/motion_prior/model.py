"""The motion prior: a conditional VAE over one-frame transitions (Flax NNX).

The state of frame t is x_t (``data.Layout``), normalized per channel with the training data's mean
and standard deviation. The *past* of a transition is the last normalized state, the last
``history - 1`` normalized velocities (each divided by the data's per-channel velocity scale, so
every input is of unit order) and the clip's normalized identity. Three MLPs:

* posterior q(z | past, Δ_t) — sees the true next change Δ_t = (x_t − x_{t−1}) / scale;
* learned conditional prior p(z | past);
* decoder Δ̂_t = g(past, z) — the change of state, added to x_{t−1} to give x_t.

Training (``train``) minimizes, over a rollout, the reconstruction error of Δ_t under the posterior's
z plus β·KL(q ‖ p); generation samples z from p and integrates the decoded changes (``generate``).
With ``decoder_variance`` the decoder also predicts a per-channel variance of Δ_t (Gaussian
likelihood; its noise is sampled when generating).
Everything here is a pure function of ``(graphdef, params)`` for ``jax.jit`` / ``vmap`` / ``scan``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from neuface_jax.common.settings import setting
from neuface_jax.motion_prior.data import Layout


@dataclasses.dataclass(frozen=True)
class PriorConfig:
    """Static description of a prior (stored as JSON next to its weights)."""

    layout: Layout = setting(Layout(), "What the state holds.", cli=False)
    history: int = setting(3, "Frames of past per transition (the last state and history-1 velocities).")
    latent: int = setting(64, "Latent size of a transition.")
    hidden: int = setting(256, "Hidden width of the posterior, prior and decoder MLPs.")
    layers: int = setting(2, "Hidden layers per MLP.")
    decoder_variance: bool = setting(
        False, "The decoder also predicts a per-channel variance of the change (sampled when generating); "
        "by default the change is the decoder's output and all randomness comes from the latent.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PriorConfig":
        d = dict(d)
        d["layout"] = Layout(**d.get("layout", {}))
        return cls(**d)

    @property
    def past_size(self) -> int:
        return self.layout.size * self.history + self.layout.n_identity


class MLP(nnx.Module):
    def __init__(self, sizes: list[int], *, rngs: nnx.Rngs, zero_last: bool = False):
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        if zero_last:  # start as "no change" / the standard normal, so early rollouts are tame
            last = self.layers[-1]
            last.kernel.value = jnp.zeros_like(last.kernel.value)

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.gelu(layer(x))
        return self.layers[-1](x)


class MotionPrior(nnx.Module):
    def __init__(self, config: PriorConfig, *, rngs: nnx.Rngs):
        d, p, lat, h = config.layout.size, config.past_size, config.latent, config.hidden
        mid = [h] * config.layers
        self.posterior = MLP([p + d, *mid, 2 * lat], rngs=rngs, zero_last=True)
        self.prior = MLP([p, *mid, 2 * lat], rngs=rngs, zero_last=True)
        self.decoder = MLP([p + lat, *mid, 2 * d if config.decoder_variance else d], rngs=rngs, zero_last=True)


def split(model: MotionPrior):
    """(graphdef, params) of a model."""
    return nnx.split(model, nnx.Param)


def past_features(hist_n: jax.Array, ident_n: jax.Array, delta_scale: jax.Array) -> jax.Array:
    """[..., H, D] normalized states + [..., n_id] identity → [..., past_size]."""
    vel = (hist_n[..., 1:, :] - hist_n[..., :-1, :]) / delta_scale
    vel = vel.reshape(vel.shape[:-2] + (-1,))
    return jnp.concatenate([hist_n[..., -1, :], vel, ident_n], -1)


def _gauss(out: jax.Array) -> tuple[jax.Array, jax.Array]:
    mu, log_var = jnp.split(out, 2, -1)
    return mu, jnp.clip(log_var, -12.0, 6.0)


def posterior(graphdef, params, past, delta_n):
    return _gauss(nnx.merge(graphdef, params).posterior(jnp.concatenate([past, delta_n], -1)))


def prior(graphdef, params, past):
    return _gauss(nnx.merge(graphdef, params).prior(past))


def decode(graphdef, params, past, z):
    """The decoder's raw output: the normalized change's mean [, log variance] (``split_decoded``)."""
    return nnx.merge(graphdef, params).decoder(jnp.concatenate([past, z], -1))


def split_decoded(out: jax.Array, size: int) -> tuple[jax.Array, jax.Array | None]:
    if out.shape[-1] == 2 * size:
        mu, log_var = jnp.split(out, 2, -1)
        return mu, jnp.clip(log_var, -10.0, 4.0)
    return out, None


def sample_change(out: jax.Array, key: jax.Array, size: int) -> jax.Array:
    """A normalized change of ``size`` channels drawn from the decoder output (its mean when it has no variance)."""
    mu, log_var = split_decoded(out, size)
    if log_var is None:
        return mu
    return mu + jnp.exp(0.5 * log_var) * jax.random.normal(key, mu.shape)


def reconstruction(out: jax.Array, target: jax.Array) -> jax.Array:
    """Per-row negative log-likelihood (up to a constant) of ``target`` under the decoder output
    (unit variance when the decoder has none), summed over channels."""
    mu, log_var = split_decoded(out, target.shape[-1])
    if log_var is None:
        return 0.5 * jnp.sum((mu - target) ** 2, -1)
    return 0.5 * jnp.sum((mu - target) ** 2 * jnp.exp(-log_var) + log_var, -1)


def kl_gauss(mu_q, lv_q, mu_p, lv_p) -> jax.Array:
    """KL(N(mu_q, e^lv_q) ‖ N(mu_p, e^lv_p)), summed over the last axis."""
    return 0.5 * jnp.sum(lv_p - lv_q + (jnp.exp(lv_q) + (mu_q - mu_p) ** 2) / jnp.exp(lv_p) - 1.0, -1)
