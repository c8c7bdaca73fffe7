"""Training the motion prior from annotation folders; checkpoints; loading a trained prior.

A prior folder holds ``prior.json`` (model config, training config, the normalization statistics and
the data summary; written before the first step so that any checkpoint can be loaded) and
``checkpoints/`` (orbax: weights, optimizer state and step, every ``checkpoint_every`` steps and at
the end). Training resumes from the latest checkpoint; each step's batch and noise are functions of
(seed, step), so an interrupted and resumed run ends with the same weights as an uninterrupted one.

Each step draws ``batch`` windows of ``history + rollout`` valid frames and rolls the transition
model over the ``rollout`` frames (``lax.scan``): the posterior sees the true next change, the
decoder reconstructs it, and with a probability that ramps from 0 to ``sampling_max`` (scheduled
sampling) the next past is the model's own prediction instead of the data, so that the decoder
learns to recover from its own errors as it must during generation. The KL weight ramps from 0 to
``kl_weight`` over the first ``kl_anneal`` fraction of the steps (KL annealing).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from neuface_jax.common import log as log_lib
from neuface_jax.common.settings import setting
from neuface_jax.media import export as export_lib
from neuface_jax.motion_prior import data as data_lib
from neuface_jax.motion_prior import model as model_lib

logger = logging.getLogger(__name__)

PRIOR_FILE = "prior.json"
CHECKPOINTS = "checkpoints"
FORMAT = "neuface_jax.motion_prior"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a prior is trained (the model itself: ``model.PriorConfig``)."""

    steps: int = setting(3000, "Optimizer steps in all (a resumed run continues up to this count).")
    batch: int = setting(64, "Windows per step.")
    rollout: int = setting(25, "Transitions rolled out per window (frames after the history).")
    learning_rate: float = setting(1e-3, "Adam learning rate (cosine decay to 5% over the steps).", flag="lr")
    kl_weight: float = setting(0.05, "Weight of KL(posterior ‖ prior) after annealing (relative to the summed "
                               "squared error of the normalized change).")
    kl_anneal: float = setting(0.3, "Fraction of the steps over which the KL weight ramps up from 0.")
    sampling_max: float = setting(0.5, "Final probability that a rollout step feeds back its own prediction.")
    target_fps: float = setting(25.0, "Frame rate every clip is resampled to (the prior's rate).")
    default_fps: float = setting(25.0, "Frame rate of clips without a metrics.json telling theirs.", flag="fps")
    view: int = setting(0, "View of multi-view annotations used (index in view_names).")
    val_fraction: float = setting(0.1, "Fraction of the clips held out for validation (by clip id hash).")
    checkpoint_every: int = setting(500, "Steps between checkpoints.")
    seed: int = setting(0, "Initialization, batch and noise seed.")


@dataclasses.dataclass(frozen=True, eq=False)
class Normalizer:
    """Per-channel statistics of the training data (state, velocity scale, identity)."""

    mean: np.ndarray
    std: np.ndarray
    delta_scale: np.ndarray
    id_mean: np.ndarray
    id_std: np.ndarray

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(v, np.float64).tolist() for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d) -> "Normalizer":
        return cls(**{k: np.asarray(v, np.float32) for k, v in d.items()})

    def arrays(self) -> dict[str, jax.Array]:
        return {k: jnp.asarray(v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True, eq=False)
class Windows:
    """Concatenated normalized states of some clips and the valid window starts in them."""

    states: np.ndarray  # [N, D] normalized
    identity: np.ndarray  # [N, n_id] normalized, per frame
    starts: np.ndarray  # [M] first frame of each window lying inside one valid segment
    clips: tuple[str, ...]


def load_clips(dirs: Sequence[str | Path], config: TrainConfig) -> list[data_lib.MotionClip]:
    """Every clip below ``dirs`` at the target frame rate."""
    paths = data_lib.find_params(dirs)
    if not paths:
        raise FileNotFoundError(f"no params.npz found below {list(map(str, dirs))}")
    clips = []
    for p in paths:
        clip = data_lib.load_clip(p, view=config.view, default_fps=config.default_fps,
                                  clip_id=_clip_id(p, dirs))
        clips.append(data_lib.resample(clip, config.target_fps))
    return clips


def _clip_id(path: Path, dirs) -> str:
    """The clip folder's name, prefixed by its data root when several roots are given (ids stay unique)."""
    name = path.parent.name
    if len(dirs) > 1:
        for d in dirs:
            if Path(d) in path.parents and path.parent != Path(d):
                return f"{Path(d).name}/{name}"
    return name


def fit_normalizer(clips: Sequence[data_lib.MotionClip], layout: data_lib.Layout) -> Normalizer:
    states, deltas = [], []
    for c in clips:
        x = data_lib.clip_state(c, layout)
        for a, b in data_lib.segments(c.valid):
            states.append(x[a:b])
            deltas.append(np.diff(x[a:b], axis=0))
    x = np.concatenate(states)
    mean, std = x.mean(0), x.std(0)
    std = np.where(std < 1e-6, 1.0, np.maximum(std, 1e-3))
    d = np.concatenate(deltas) / std
    dscale = d.std(0)
    dscale = np.where(dscale < 1e-6, 1.0, np.maximum(dscale, 1e-4))
    ids = np.stack([data_lib.identity_vector(c.shape, layout) for c in clips])
    id_std = ids.std(0)
    return Normalizer(mean.astype(np.float32), std.astype(np.float32), dscale.astype(np.float32),
                      ids.mean(0).astype(np.float32), np.where(id_std < 1e-6, 1.0, id_std).astype(np.float32))


def make_windows(clips, layout: data_lib.Layout, norm: Normalizer, length: int) -> Windows:
    states, idents, starts, offset = [], [], [], 0
    for c in clips:
        x = (data_lib.clip_state(c, layout) - norm.mean) / norm.std
        ident = (data_lib.identity_vector(c.shape, layout) - norm.id_mean) / norm.id_std
        for a, b in data_lib.segments(c.valid):
            if b - a >= length:
                starts.append(offset + a + np.arange(b - a - length + 1))
        states.append(x)
        idents.append(np.broadcast_to(ident, (len(x), len(ident))))
        offset += len(x)
    if not states:
        n_id = layout.n_identity
        return Windows(np.zeros((0, layout.size), np.float32), np.zeros((0, n_id), np.float32),
                       np.zeros(0, np.int32), ())
    return Windows(
        states=np.concatenate(states).astype(np.float32), identity=np.concatenate(idents).astype(np.float32),
        starts=np.concatenate(starts).astype(np.int32) if starts else np.zeros(0, np.int32),
        clips=tuple(c.clip_id for c in clips),
    )


# --------------------------------------------------------------------------- the objective
def rollout_loss(graphdef, params, win, ident, key, sampling_p, delta_scale, history: int):
    """Mean per-window (reconstruction, KL) of one rollout over normalized windows [B, H + R, D]."""
    hist0, targets = win[:, :history], jnp.swapaxes(win[:, history:], 0, 1)
    keys = jax.random.split(key, targets.shape[0])

    def step(hist, inp):
        gt, k = inp
        k_eps, k_ss = jax.random.split(k)
        past = model_lib.past_features(hist, ident, delta_scale)
        target = (gt - hist[:, -1]) / delta_scale
        mu_q, lv_q = model_lib.posterior(graphdef, params, past, target)
        mu_p, lv_p = model_lib.prior(graphdef, params, past)
        z = mu_q + jnp.exp(0.5 * lv_q) * jax.random.normal(k_eps, mu_q.shape)
        out = model_lib.decode(graphdef, params, past, z)
        rec = model_lib.reconstruction(out, target)
        kl = model_lib.kl_gauss(mu_q, lv_q, mu_p, lv_p)
        pred = hist[:, -1] + model_lib.split_decoded(out, target.shape[-1])[0] * delta_scale
        own = jax.random.uniform(k_ss, (gt.shape[0], 1)) < sampling_p
        nxt = jnp.where(own, jax.lax.stop_gradient(pred), gt)
        return jnp.concatenate([hist[:, 1:], nxt[:, None]], 1), (rec, kl)

    _, (rec, kl) = jax.lax.scan(step, hist0, (targets, keys))
    return rec.sum(0).mean(), kl.sum(0).mean()


def schedules(step: int, config: TrainConfig) -> dict[str, float]:
    """Step-dependent values: scheduled-sampling probability, KL weight, learning rate (cosine to 5%)."""
    n = float(max(config.steps, 1))
    ramp = min(max((step - 0.2 * n) / max(0.5 * n, 1.0), 0.0), 1.0)
    beta = config.kl_weight * min(max(step / max(config.kl_anneal * n, 1.0), 0.0), 1.0)
    lr = config.learning_rate * (0.05 + 0.95 * 0.5 * (1.0 + np.cos(np.pi * min(step / n, 1.0))))
    return {"sampling": config.sampling_max * ramp, "beta": beta, "lr": lr}


def make_optimizer():
    """Clipped Adam with unit step size (the learning rate is applied per step from ``schedules``)."""
    return optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam())


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def train_step(graphdef, history: int, batch: int, rollout: int, params, opt_state, key, step, sched, data):
    """One optimizer step on a batch drawn from ``data`` by (key, step): → (params, opt_state, metrics).

    Only shapes are static, so runs that differ in schedules, seeds or step counts share one compilation.
    """
    k_batch, k_roll = jax.random.split(jax.random.fold_in(key, step))
    pick = jax.random.randint(k_batch, (batch,), 0, data["starts"].shape[0])
    rows = data["starts"][pick][:, None] + jnp.arange(history + rollout)
    win, ident = data["states"][rows], data["identity"][rows[:, 0]]

    def loss_fn(p):
        rec, kl = rollout_loss(graphdef, p, win, ident, k_roll, sched["sampling"], data["delta_scale"], history)
        return (rec + sched["beta"] * kl) / rollout, (rec, kl)

    (loss, (rec, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = make_optimizer().update(grads, opt_state, params)
    params = optax.apply_updates(params, jax.tree.map(lambda u: -sched["lr"] * u, updates))
    return params, opt_state, {"loss": loss, "rec": rec / rollout, "kl": kl / rollout}


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _validation(graphdef, history: int, rollout: int, params, win, ident, delta_scale):
    rec, kl = rollout_loss(graphdef, params, win, ident, jax.random.PRNGKey(1), 0.0, delta_scale, history)
    return rec / rollout, kl / rollout


def validation_windows(prior_config, config: TrainConfig, windows: Windows, count: int = 256):
    """Fixed validation windows (evenly spaced) and their identities, or None without any."""
    if len(windows.starts) == 0:
        return None
    pick = np.linspace(0, len(windows.starts) - 1, min(count, len(windows.starts))).astype(int)
    rows = windows.starts[pick][:, None] + np.arange(prior_config.history + config.rollout)
    return jnp.asarray(windows.states[rows]), jnp.asarray(windows.identity[rows[:, 0]])


# --------------------------------------------------------------------------- checkpoints
def _manager(out: Path):
    import orbax.checkpoint as ocp  # heavy; only needed when saving or restoring

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(os.path.abspath(out / CHECKPOINTS), options=options)


def _leaves(tree) -> dict[str, np.ndarray]:
    return {f"{i:05d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(tree))}


def _save(mgr, step: int, params, opt_state) -> None:
    import orbax.checkpoint as ocp

    mgr.save(step, args=ocp.args.StandardSave(_leaves((params, opt_state))))
    mgr.wait_until_finished()


def _restore(mgr, step: int, template):
    import orbax.checkpoint as ocp

    target = _leaves(template)
    restored = mgr.restore(step, args=ocp.args.StandardRestore(target))
    leaves = [jnp.asarray(restored[k]) for k in sorted(restored)]
    return jax.tree.unflatten(jax.tree.structure(template), leaves)


def _initial(prior_config: model_lib.PriorConfig, config: TrainConfig):
    graphdef, params = model_lib.split(model_lib.MotionPrior(prior_config, rngs=nnx.Rngs(config.seed)))
    return graphdef, params, make_optimizer().init(params)


def _meta(prior_config, config, norm: Normalizer, train_w: Windows, val_w: Windows) -> dict[str, Any]:
    return {
        "format": FORMAT, "version": 1, "config": prior_config.to_dict(), "train": dataclasses.asdict(config),
        "normalizer": norm.to_dict(),
        "data": {"train_clips": list(train_w.clips), "val_clips": list(val_w.clips),
                 "train_frames": int(len(train_w.states)), "val_frames": int(len(val_w.states)),
                 "train_windows": int(len(train_w.starts)), "val_windows": int(len(val_w.starts)),
                 "fps": config.target_fps},
    }


def _resume_state(out: Path, prior_config, config):
    """(meta, latest step) of an existing prior folder, checked against this run's configs, or (None, None)."""
    path = out / PRIOR_FILE
    if not path.is_file():
        return None, None
    meta = json.loads(path.read_text())
    if meta.get("config") != json.loads(json.dumps(prior_config.to_dict())):
        raise ValueError(f"{out}: holds a prior with another model config; use a new --out")
    same = {k: v for k, v in meta.get("train", {}).items() if k not in ("steps", "checkpoint_every")}
    mine = {k: v for k, v in json.loads(json.dumps(dataclasses.asdict(config))).items() if k in same}
    if same != mine:
        raise ValueError(f"{out}: was trained with other settings {same}; use a new --out")
    return meta, _manager(out).latest_step()


def train(dirs: Sequence[str | Path], out, prior_config: model_lib.PriorConfig = model_lib.PriorConfig(),
          config: TrainConfig = TrainConfig(), *, progress: log_lib.ProgressFactory = log_lib.quiet,
          stop_after: int | None = None) -> dict[str, Any]:
    """Trains (or resumes) a prior on the annotation folders ``dirs`` into the folder ``out``.

    ``stop_after``: stop (with a checkpoint) once this step count is reached, as an interruption would.
    Returns the summary stored in ``prior.json`` under "result".
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clips = load_clips(dirs, config)
    train_clips, val_clips = data_lib.split_clips(clips, config.val_fraction)
    meta, latest = _resume_state(out, prior_config, config)
    layout, length = prior_config.layout, prior_config.history + config.rollout
    norm = Normalizer.from_dict(meta["normalizer"]) if meta else fit_normalizer(train_clips, layout)
    train_w = make_windows(train_clips, layout, norm, length)
    val_w = make_windows(val_clips, layout, norm, length)
    if len(train_w.starts) == 0:
        raise ValueError(f"no valid window of {length} frames in the training clips")
    meta = dict(meta or _meta(prior_config, config, norm, train_w, val_w), train=dataclasses.asdict(config))
    export_lib.write_json(out / PRIOR_FILE, meta)

    graphdef, params, opt_state = _initial(prior_config, config)
    mgr = _manager(out)
    step0 = int(latest or 0)
    if latest:
        params, opt_state = _restore(mgr, step0, (params, opt_state))
        logger.info("resuming %s at step %d", out, step0)
    val = validation_windows(prior_config, config, val_w)
    key = jax.random.PRNGKey(config.seed)
    arrays = {"states": jnp.asarray(train_w.states), "identity": jnp.asarray(train_w.identity),
              "starts": jnp.asarray(train_w.starts), "delta_scale": jnp.asarray(norm.delta_scale)}
    last_step = min(config.steps, stop_after if stop_after is not None else config.steps)
    history = [h for h in meta.get("history", []) if h["step"] <= step0]
    with progress("train motion prior", config.steps) as bar:
        bar.set(step0)
        for step in range(step0, last_step):
            sched = {k: jnp.float32(v) for k, v in schedules(step, config).items()}
            params, opt_state, metrics = train_step(graphdef, prior_config.history, config.batch, config.rollout,
                                                    params, opt_state, key, jnp.int32(step), sched, arrays)
            done = step + 1
            if done % config.checkpoint_every == 0 or done == last_step:
                record = {"step": done, **{k: float(v) for k, v in metrics.items()}}
                if val is not None:
                    vr, vk = _validation(graphdef, prior_config.history, config.rollout, params, *val,
                                         arrays["delta_scale"])
                    record.update(val_rec=float(vr), val_kl=float(vk))
                history.append(record)
                _save(mgr, done, params, opt_state)
                export_lib.write_json(out / PRIOR_FILE, {**meta, "history": history})
                bar.postfix(", ".join(f"{k} {v:.3g}" for k, v in record.items() if k != "step"))
            bar.set(done)
    mgr.close()
    meta["history"] = history
    meta["result"] = {"steps_done": last_step, "final": history[-1] if history else None}
    export_lib.write_json(out / PRIOR_FILE, meta)
    return meta["result"]


# --------------------------------------------------------------------------- loading
@dataclasses.dataclass(frozen=True, eq=False)
class Prior:
    """A trained prior: model config, graph, weights, normalizer and its ``prior.json``."""

    config: model_lib.PriorConfig
    graphdef: Any
    params: Any
    norm: Normalizer
    meta: dict[str, Any]

    @property
    def fps(self) -> float:
        return float(self.meta["train"]["target_fps"])


def load_prior(path, step: int | None = None) -> Prior:
    """The prior in folder ``path`` at its latest checkpoint (or ``step``)."""
    path = Path(path)
    meta = json.loads((path / PRIOR_FILE).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a motion prior folder")
    prior_config = model_lib.PriorConfig.from_dict(meta["config"])
    config = TrainConfig(**meta["train"])
    graphdef, params, opt_state = _initial(prior_config, config)
    mgr = _manager(path)
    step = mgr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{path}: no checkpoint yet")
    params, _ = _restore(mgr, step, (params, opt_state))
    mgr.close()
    return Prior(prior_config, graphdef, params, Normalizer.from_dict(meta["normalizer"]), meta)
