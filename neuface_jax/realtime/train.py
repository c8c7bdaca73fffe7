"""Training the real-time regressor from synthetic renders and from this project's annotations.

Two sources of supervised examples, mixed in every batch:

* **Synthetic renders** of the chosen face model with known parameters: ``synthetic.pretrain``'s
  data generation (``generate_dataset``: the renderer, detector noise and crop recipe of the test
  clips) at the regressor's crop size.
* **Distillation** from annotations: ``annotate`` / ``annotate-dataset`` outputs, read back with
  ``training.labels`` (each frame re-cropped from its video with the annotation's own crop
  transform, at the regressor's crop size); the slow optimizer's parameters become the targets
  (``distillation_data``). The last ``holdout_fraction`` of each
  clip's frames is kept out of training for evaluation.

The loss is ``synthetic.pretrain.pretrain_loss`` (parameter regression, 2D landmarks through the
predicted mesh and camera, 3D vertices) for both sources, plus **multi-frame identity
consistency**: batches are built from groups of ``group_size`` images of the same clip (one
person), and the variance of the predicted identity within a group is penalized. With full
supervision the targets already share one identity per clip, so this term mostly regularizes; it
is what ties frames together when the targets do not (see docs/realtime.md).

Images are augmented on the device: a random zoom and shift of the crop with the landmark and camera
targets moved to match (``reframe``: the live tracker places each crop from the previous fit, so
the regressor must measure where the face is in its crop rather than assume the training framing),
and brightness, contrast, per-channel gain and greyscale changes (so that the flat-shaded renders
do not define what a face's colours look like). BatchNorm trains with batch
statistics. The result is an ``Encoder`` checkpoint (``save_encoder``) plus ``<dir>.train.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from neuface_jax.common.settings import setting
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.realtime import regressor as regressor_lib
from neuface_jax.synthetic import pretrain as pretrain_lib
from neuface_jax.training import labels as labels_lib

__all__ = [
    "TrainConfig",
    "TrainResult",
    "augment",
    "distillation_data",
    "evaluate",
    "group_batches",
    "identity_consistency",
    "reframe",
    "save",
    "synthetic_data",
    "train",
]

logger = logging.getLogger(__name__)

#: First clip index of distilled clips in ``PretrainData.clip_index`` (synthetic clips use seeds).
DISTILLED_CLIP_BASE = 2_000_000_000


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Settings of ``train`` (defaults: the run of docs/realtime.md, ≈ 25 minutes on a busy 2-core CPU)."""

    image_size: int = setting(regressor_lib.DEFAULT_IMAGE_SIZE, "Crop side of the regressor (pixels).")
    synthetic_clips: int = setting(100, "Synthetic identities rendered for training (16 images each; 0 = none).")
    synthetic_val_clips: int = setting(16, "Held-out synthetic identities for the validation errors.")
    synthetic_seed_offset: int = setting(pretrain_lib.DEFAULT_SEED_OFFSET,
                                         "Seed of the first synthetic clip (the test clips use small seeds).")
    holdout_fraction: float = setting(0.3, "Last fraction of each distilled clip's frames kept out of training.")
    distill_fraction: float = setting(0.5, "Share of each batch drawn from distilled frames (when there are any).")
    steps: int = setting(400, "Optimizer steps.")
    batch_size: int = setting(32, "Images per step (a multiple of group_size).")
    group_size: int = setting(4, "Images of one clip per group (multi-frame identity consistency).")
    learning_rate: float = setting(2e-3, "Peak learning rate (Adam, warm-up then cosine decay).", flag="lr")
    warmup_steps: int = setting(100, "Linear warm-up steps.")
    weight_identity: float = setting(1.0, "Weight of the identity-consistency term (variance within a group).")
    augment: bool = setting(True, "Colour augmentation (brightness, contrast, channel gains, greyscale).")
    reframe_zoom: float = setting(0.25, "Random crop zoom up to this fraction either way, targets moved to match "
                                        "(a tracker needs a regressor that measures the face's place in its crop).")
    reframe_shift: float = setting(0.15, "Random crop shift up to this, normalized crop units (the crop spans 2).")
    seed: int = setting(0, "Initialization, batch order and augmentation seed.")

    def __post_init__(self):
        if self.batch_size < self.group_size or self.batch_size % self.group_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a positive multiple of group_size "
                             f"({self.group_size})")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if not 0.0 <= self.distill_fraction <= 1.0:
            raise ValueError(f"distill_fraction must be in [0, 1], got {self.distill_fraction}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")

    def pretrain_config(self) -> pretrain_lib.PretrainConfig:
        """The synthetic-data and loss settings in ``synthetic.pretrain``'s terms."""
        return pretrain_lib.PretrainConfig(
            num_clips=self.synthetic_clips, num_val_clips=self.synthetic_val_clips,
            seed_offset=self.synthetic_seed_offset, num_steps=self.steps, batch_size=self.batch_size,
            learning_rate=self.learning_rate, warmup_steps=self.warmup_steps, seed=self.seed,
        )


# --------------------------------------------------------------------------- data
def synthetic_data(config: TrainConfig, *, progress: Callable[[int, int], None] | None = None):
    """``(train, validation)`` ``PretrainData`` of synthetic renders at the regressor's crop size."""
    pc = config.pretrain_config()
    train = val = None
    if config.synthetic_clips:
        train = pretrain_lib.generate_dataset(pc, encoder_size=config.image_size, progress=progress)
    if config.synthetic_val_clips:
        val = pretrain_lib.generate_dataset(pc, encoder_size=config.image_size, num_clips=config.synthetic_val_clips,
                                            first_clip=config.synthetic_clips)
    return train, val


def _to_examples(frames: labels_lib.LabelledFrames, clip_index: int) -> pretrain_lib.PretrainData:
    """Labelled real frames as supervised examples: the fitted parameters and the fitted mesh's landmarks."""
    if frames.predicted_landmarks.shape[-2] != 68:
        raise ValueError(f"{frames.clip_ids}: {frames.predicted_landmarks.shape[-2]} landmarks; the regressor's "
                         "landmark loss uses iBUG-68 (annotate with --landmark_set=ibug68)")
    n = len(frames)
    return pretrain_lib.PretrainData(
        images=frames.images, landmarks=frames.predicted_landmarks.astype(np.float32),
        shape=frames.shape.astype(np.float32), expression=frames.expression.astype(np.float32),
        pose=frames.pose.astype(np.float32), cam=frames.cam.astype(np.float32),
        clip_index=np.full((n,), clip_index, np.int32),
    )


def distillation_data(annotation_dirs: Sequence, *, image_size: int = regressor_lib.DEFAULT_IMAGE_SIZE,
                      holdout_fraction: float = 0.3, video_dirs: Sequence = ()):
    """``(train, held_out)`` examples distilled from annotations (``training.labels``), or ``(None, None)``.

    Args:
      annotation_dirs: ``annotate`` / ``annotate-dataset`` output folders.
      image_size: the regressor's crop size.
      holdout_fraction: the last fraction of each clip-view's frames goes to ``held_out``.
      video_dirs: where to look for moved videos by file name.

    Targets: the fitted identity, expression, full pose and camera, and the fitted model's landmarks
    (normalized crop coordinates) of every frame with a face; the crop is the annotation's own, so
    the camera needs no change. Each clip (and view) is one identity group (``clip_index``).
    """
    train_parts, held_parts = [], []
    group = DISTILLED_CLIP_BASE
    for frames in labels_lib.iter_labelled_clips(list(annotation_dirs), image_size, video_dirs=video_dirs):
        for view in np.unique(frames.view_index):
            rows = np.flatnonzero(frames.view_index == view)
            rows = rows[np.argsort(frames.frame_index[rows], kind="stable")]
            data = _to_examples(frames.subset(rows), group)
            split = len(rows) - int(round(len(rows) * holdout_fraction))
            train_parts.append(data.subset(np.arange(split)))
            held_parts.append(data.subset(np.arange(split, len(rows))))
            logger.info("distilling %s (view %d): %d training frames, %d held out", frames.clip_ids, view, split,
                        len(rows) - split)
            group += 1
    return _concat(train_parts), _concat(held_parts)


def _concat(parts):
    parts = [p for p in parts if p is not None and len(p)]
    return pretrain_lib.PretrainData.concatenate(parts) if parts else None


# --------------------------------------------------------------------------- batches and losses
def group_batches(clip_index: np.ndarray, num_groups: int, group_size: int, rng: np.random.Generator) -> np.ndarray:
    """``num_groups × group_size`` example indices, each group from one clip (with replacement within
    a clip smaller than the group)."""
    clips = np.unique(clip_index)
    chosen = rng.choice(clips, size=num_groups, replace=len(clips) < num_groups)
    out = []
    for c in chosen:
        members = np.flatnonzero(clip_index == c)
        out.append(rng.choice(members, size=group_size, replace=members.size < group_size))
    return np.concatenate(out)


def identity_consistency(shape: jax.Array, group_size: int) -> jax.Array:
    """Mean variance of the predicted identity [B, n_shape] within consecutive groups of ``group_size``."""
    g = shape.reshape((-1, group_size, shape.shape[-1]))
    return jnp.mean(jnp.var(g, axis=1))


def augment(images: jax.Array, key: jax.Array) -> jax.Array:
    """Random photometric changes per image [B, H, W, 3] in [0, 1]: brightness, contrast, channel
    gains, and greyscale for one image in five."""
    b = images.shape[0]
    k1, k2, k3, k4 = jax.random.split(key, 4)
    bright = jax.random.uniform(k1, (b, 1, 1, 1), minval=-0.15, maxval=0.15)
    contrast = jax.random.uniform(k2, (b, 1, 1, 1), minval=0.7, maxval=1.3)
    gains = jax.random.uniform(k3, (b, 1, 1, 3), minval=0.8, maxval=1.2)
    mean = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
    x = (images - mean) * contrast + mean + bright
    x = x * gains
    grey = jnp.mean(x, axis=-1, keepdims=True)
    x = jnp.where(jax.random.uniform(k4, (b, 1, 1, 1)) < 0.2, grey, x)
    return jnp.clip(x, 0.0, 1.0)


def reframe(images: jax.Array, landmarks: jax.Array, cam: jax.Array, key: jax.Array, *, max_zoom: float,
            max_shift: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Random zoom and shift of each crop, with its targets moved to match.

    A live tracker places the next crop from the previous fit, so the regressor must *measure* where
    the face is in its crop (a network that always predicts the training framing drives the crop
    size away). Normalized crop coordinates map ``q → k·q + d`` (zoom ``k`` in ``[1/(1+max_zoom),
    1+max_zoom]``, shift ``d`` in ``±max_shift``); the landmarks follow, and the weak-perspective camera
    becomes ``(k·s, t_x + d_x/(k·s), t_y − d_y/(k·s))``. Outside the original crop is black.

    Args:
      images: [B, S, S, 3] in [0, 1].  landmarks: [B, L, 2] normalized.  cam: [B, 3].
    """
    b, size = images.shape[0], images.shape[1]
    k1, k2 = jax.random.split(key)
    lim = jnp.log1p(max_zoom)
    k = jnp.exp(jax.random.uniform(k1, (b,), minval=-lim, maxval=lim))
    d = jax.random.uniform(k2, (b, 2), minval=-max_shift, maxval=max_shift)  # (x, y)
    trans = (1.0 - k)[:, None] * size / 2.0 + d[:, ::-1] * size / 2.0  # (y, x) pixels

    def one(im, kk, tt):
        return jax.image.scale_and_translate(im, im.shape, (0, 1), jnp.stack([kk, kk]), tt, "linear", antialias=True)

    out = jax.vmap(one)(images, k, trans)
    lmk = landmarks * k[:, None, None] + d[:, None, :]
    s = cam[:, 0] * k
    cam = jnp.stack([s, cam[:, 1] + d[:, 0] / s, cam[:, 2] - d[:, 1] / s], -1)
    return out, lmk, cam


def _batch(data: pretrain_lib.PretrainData, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "images": data.images[idx], "landmarks": data.landmarks[idx], "shape": data.shape[idx],
        "expression": data.expression[idx], "pose": data.pose[idx], "cam": data.cam[idx],
    }


def _merge_batches(a: dict, b: dict | None) -> dict:
    return a if b is None else {k: np.concatenate([a[k], b[k]]) for k in a}


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the regressor, its config and a summary."""

    encoder: encoder_lib.Encoder
    encoder_config: encoder_lib.EncoderConfig
    history: dict[str, list[float]]
    validation: dict[str, Any]
    seconds: dict[str, float]
    counts: dict[str, int]


def evaluate(encoder, encoder_config, data, face) -> dict[str, float]:
    """Mean errors on supervised examples (``synthetic.pretrain.evaluate_encoder``'s)."""
    return pretrain_lib.evaluate_encoder(encoder, encoder_config, data, face)


def train(
    config: TrainConfig = TrainConfig(),
    *,
    distill: Sequence = (),
    video_dirs: Sequence = (),
    face: fit_lib.FaceModel | None = None,
    encoder: encoder_lib.Encoder | None = None,
    progress: Callable[..., Any] | None = None,
    log_every: int = 100,
) -> TrainResult:
    """Trains a regressor (see the module docstring).

    Args:
      config: data and optimization settings.
      distill: annotation folders to distil from (``distillation_data``).
      video_dirs: where to look for their videos when they have moved.
      face: the face model (default: the demo head; synthetic data is rendered from the demo head,
        so with another model set ``synthetic_clips=0`` and distil).
      encoder: initial weights (default a fresh regressor from ``config.seed``).
      progress: a ``log.progress_factory()`` (progress lines for the rendering and the training).
    """
    face = regressor_lib.demo_face() if face is None else face
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    syn_train = syn_val = None
    if config.synthetic_clips or config.synthetic_val_clips:
        bar = progress("rendering synthetic faces", config.synthetic_clips) if progress else None
        syn_train, syn_val = synthetic_data(config, progress=bar.callback() if bar else None)
        if bar:
            bar.close()
    dis_train = dis_val = None
    if distill:
        dis_train, dis_val = distillation_data(distill, image_size=config.image_size,
                                               holdout_fraction=config.holdout_fraction, video_dirs=video_dirs)
    if syn_train is None and dis_train is None:
        raise ValueError("no training data: set synthetic_clips > 0 or give annotations to distil")
    seconds["data"] = time.perf_counter() - t0
    counts = {"synthetic": len(syn_train) if syn_train is not None else 0,
              "distilled": len(dis_train) if dis_train is not None else 0}
    logger.info("training data: %d synthetic, %d distilled images (%.1f s)", counts["synthetic"],
                counts["distilled"], seconds["data"])

    enc_cfg = regressor_lib.regressor_config(face.flame.num_shape, face.flame.num_expression,
                                             image_size=config.image_size)
    if encoder is None:
        encoder = encoder_lib.init_encoder(enc_cfg, seed=config.seed)
    else:
        enc_cfg = encoder.config
    pcfg = config.pretrain_config()
    graphdef, trainable, rest = encoder_lib.split_params(encoder, freeze_bn=False)
    trainable = jax.tree.map(jnp.array, trainable)
    rest = jax.tree.map(jnp.array, rest)
    warm = max(1, min(config.warmup_steps, config.steps // 2))
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warm, max(config.steps, warm + 1),
                                                  end_value=config.learning_rate * 0.01)
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(trainable)
    gsize = config.group_size

    def loss_fn(tr, r, batch, key):
        images = batch["images"].astype(jnp.float32) / 255.0
        if config.reframe_zoom or config.reframe_shift:
            key, sub = jax.random.split(key)
            images, lmk, cam = reframe(images, batch["landmarks"], batch["cam"], sub, max_zoom=config.reframe_zoom,
                                       max_shift=config.reframe_shift)
            batch = dict(batch, landmarks=lmk, cam=cam)
        if config.augment:
            images = augment(images, key)
        raw, new_r = encoder_lib.apply(graphdef, tr, r, images, update_bn_stats=True)
        total, parts = pretrain_lib.pretrain_loss(raw, batch, face, enc_cfg, pcfg)
        shape = encoder_lib.decode_outputs(raw, enc_cfg).shape
        parts["identity"] = identity_consistency(shape, gsize)
        total = total + config.weight_identity * parts["identity"]
        return total, (parts, new_r)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(tr, r, s, batch, key):
        (loss, (parts, new_r)), grads = jax.value_and_grad(loss_fn, has_aux=True)(tr, r, batch, key)
        updates, s = optimizer.update(grads, s, tr)
        return optax.apply_updates(tr, updates), new_r, s, dict(parts, total=loss)

    rng = np.random.default_rng(config.seed)
    key = jax.random.key(config.seed)
    groups = config.batch_size // gsize
    n_dis = 0 if dis_train is None else (groups if syn_train is None else int(round(groups * config.distill_fraction)))
    n_syn = groups - n_dis
    history: dict[str, list[float]] = {}
    bar = progress("training the regressor", config.steps) if progress else None
    t0 = time.perf_counter()
    for it in range(config.steps):
        batch = None
        if n_syn:
            batch = _batch(syn_train, group_batches(syn_train.clip_index, n_syn, gsize, rng))
        if n_dis:
            b = _batch(dis_train, group_batches(dis_train.clip_index, n_dis, gsize, rng))
            batch = _merge_batches(batch, b) if batch is not None else b
        key, sub = jax.random.split(key)
        trainable, rest, opt_state, parts = step(trainable, rest, opt_state, batch, sub)
        if it == 0:
            seconds["compile"] = time.perf_counter() - t0
        if (it + 1) % log_every == 0 or it == config.steps - 1:
            vals = {k: float(v) for k, v in jax.device_get(parts).items()}
            for k, v in vals.items():
                history.setdefault(k, []).append(v)
            history.setdefault("step", []).append(it + 1)
            logger.info("step %d/%d: %s", it + 1, config.steps, " ".join(f"{k}={v:.4g}" for k, v in vals.items()))
        if bar:
            bar.set(it + 1)
            if history.get("step", [None])[-1] == it + 1:
                bar.postfix(f"loss={history['total'][-1]:.4g}")
    if bar:
        bar.close()
    jax.block_until_ready(trainable)
    seconds["train"] = time.perf_counter() - t0
    trained = encoder_lib.merge_params(graphdef, trainable, rest)
    validation: dict[str, Any] = {}
    t0 = time.perf_counter()
    if syn_val is not None and len(syn_val):
        validation["synthetic"] = evaluate(trained, enc_cfg, syn_val, face)
    if dis_val is not None and len(dis_val):
        validation["distilled_held_out"] = evaluate(trained, enc_cfg, dis_val, face)
    seconds["validate"] = time.perf_counter() - t0
    for name, v in validation.items():
        logger.info("validation (%s): %s", name, " ".join(f"{k}={x:.4g}" for k, x in v.items()))
    return TrainResult(trained, enc_cfg, history, validation, seconds, counts)


def summary_path(path) -> Path:
    """Where ``save`` writes the JSON summary of a regressor checkpoint."""
    path = Path(path).expanduser().absolute()
    return path.parent / (path.name + ".train.json")


def save(path, result: TrainResult, config: TrainConfig, *, distill=(), overwrite: bool = True) -> Path:
    """Saves the regressor (``save_encoder``) and ``<path>.train.json`` (settings, errors, times)."""
    path = Path(path).expanduser().absolute()
    encoder_lib.save_encoder(path, result.encoder, result.encoder_config, overwrite=overwrite)
    summary = {
        "train_config": dataclasses.asdict(config),
        "encoder_config": result.encoder_config.to_dict(),
        "distilled_from": [str(a) for a in distill],
        "counts": result.counts,
        "validation": result.validation,
        "seconds": result.seconds,
        "history": result.history,
    }
    summary_path(path).write_text(json.dumps(summary, indent=2) + "\n")
    return path
