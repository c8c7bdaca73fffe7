"""One-Euro filtering of per-frame outputs: smooth when still, responsive when moving.

The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is a first-order low-pass filter whose
cut-off frequency rises with the signal's speed: ``f_c = min_cutoff + beta · |dx/dt|`` (the
derivative itself low-passed at ``d_cutoff``). Slow changes (a still face: detector and regressor
noise) are filtered heavily; fast ones (a turn, a mouth opening) pass with little lag.

Pure functions over arrays, one filter per element of a vector (every parameter of a frame is
filtered independently with the same settings): ``init(x, t)`` makes the state, ``step(state, x,
t)`` filters the next sample at time ``t`` (seconds; irregular spacing is fine, as with a live
camera) and returns ``(y, new_state)``. ``OneEuroFilter`` wraps them for a stream.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from neuface_jax.common.settings import setting

__all__ = ["OneEuroConfig", "OneEuroState", "OneEuroFilter", "init", "step", "smoothing_factor"]


@dataclasses.dataclass(frozen=True)
class OneEuroConfig:
    """Settings of the One-Euro filter (units of the filtered values per second for ``beta``)."""

    # Defaults: the least jitter whose filtered NME is no higher than the raw output's on the training
    # frames of the distilled clips (docs/realtime.md, "Choosing the One-Euro settings").
    min_cutoff: float = setting(3.0, "One-Euro filter: cut-off frequency (Hz) of a still signal (lower = smoother).",
                                flag="filter_min_cutoff")
    beta: float = setting(1.0, "One-Euro filter: how fast the cut-off rises with speed (higher = less lag).",
                          flag="filter_beta")
    d_cutoff: float = setting(1.0, "One-Euro filter: cut-off frequency (Hz) of the speed estimate.",
                              flag="filter_d_cutoff")

    def __post_init__(self):
        for name in ("min_cutoff", "d_cutoff"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive number of Hz, got {v}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be >= 0, got {self.beta}")


@dataclasses.dataclass(frozen=True)
class OneEuroState:
    """The filter's memory: last output, last (filtered) derivative, last time (seconds)."""

    x: np.ndarray
    dx: np.ndarray
    t: float


def smoothing_factor(dt: float, cutoff) -> np.ndarray:
    """Exponential smoothing weight of a first-order low-pass at ``cutoff`` Hz over ``dt`` seconds."""
    r = 2.0 * math.pi * np.asarray(cutoff, np.float64) * dt
    return r / (r + 1.0)


def init(x, t: float) -> OneEuroState:
    """The state after the first sample ``x`` (passed through unchanged) at time ``t``."""
    x = np.asarray(x, np.float64)
    return OneEuroState(x=x.copy(), dx=np.zeros_like(x), t=float(t))


def step(state: OneEuroState, x, t: float, config: OneEuroConfig = OneEuroConfig()) -> tuple[np.ndarray, OneEuroState]:
    """Filters sample ``x`` at time ``t`` → ``(filtered x, new state)``.

    A time that does not advance (a repeated timestamp) returns the previous output unchanged.
    """
    x = np.asarray(x, np.float64)
    if x.shape != state.x.shape:
        raise ValueError(f"the filtered vector changed shape: {state.x.shape} → {x.shape}")
    dt = float(t) - state.t
    if not dt > 0:
        return state.x.copy(), state
    a_d = smoothing_factor(dt, config.d_cutoff)
    dx = a_d * (x - state.x) / dt + (1.0 - a_d) * state.dx
    a = smoothing_factor(dt, config.min_cutoff + config.beta * np.abs(dx))
    y = a * x + (1.0 - a) * state.x
    return y, OneEuroState(x=y, dx=dx, t=float(t))


class OneEuroFilter:
    """A stream of vectors through ``step``; ``reset()`` forgets the past (a new track)."""

    def __init__(self, config: OneEuroConfig = OneEuroConfig()):
        self.config = config
        self.state: OneEuroState | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, x, t: float) -> np.ndarray:
        if self.state is None:
            self.state = init(x, t)
            return self.state.x.copy()
        y, self.state = step(self.state, x, t, self.config)
        return y
