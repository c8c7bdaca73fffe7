"""The two optimizers: NeuFace (optimize encoder weights) and direct 3DMM optimization.

Both consume a :class:`ClipData` — encoder-sized face crops, 2D landmark targets in
normalized crop coordinates and validity masks for frames × views — and return FLAME
parameters for every frame and view (:class:`FitResult`).

NeuFace: a fresh copy of the encoder weights per clip; chunks of ``chunk_frames``
consecutive frames × all views per Adam step, in order, for ``num_epochs`` epochs. With
``trainable_stages`` only the last backbone stages and the head are optimized: the frozen
prefix's activations (BatchNorm is frozen too) are the same every epoch, so they are computed
once per clip (``NeuFace.cache_features``) and each update runs only the rest of the network. The
clip is padded to a whole number of chunks and the padded frames are masked (never
dropped), so a clip compiles once per padded shape. An epoch is a Python loop over one
compiled, state-donating step (see :meth:`NeuFace.run_epoch` for why not ``lax.scan``).
Inside a chunk all images share one identity (the masked mean of the chunk's predicted
shapes); at export the clip's identity is the masked mean over all its images.

Direct (the paper's baseline): per-frame, per-view expression, head/jaw rotation and
camera plus one identity per clip, initialized from the same encoder's prediction,
optimized with the same loss terms plus L2 priors. Every step sees the whole clip (a
direct step is cheap; the steps are one ``lax.scan``), with as many steps as NeuFace takes
unless ``direct_steps`` / ``direct_early_stop`` say otherwise. Frames without a detection are
interpolated from their detected neighbours (``direct_undetected``), as a tracker would.

Several clips are packed by ``jax.vmap`` over stacked per-clip states; see
``neuface_jax.core.parallel`` for the device mesh. The settings and the method are
summarized in ``docs/method_notes.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import flame_jax
from neuface_jax.core import camera as camera_lib
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import losses as losses_lib


# --------------------------------------------------------------------------- config
#: Command-line help of ``FitConfig.trainable_stages`` (the demo settings expose it).
TRAINABLE_STAGES_HELP = (
    "Backbone stages optimized, counted from the last (ResNet-50: 5 = stem + layer1-4; the small encoder: stem + "
    "its stages); the earlier ones are frozen and their activations computed once per clip, so an update costs "
    "less. Default: all (full fine-tuning); 0: the head only.")

#: ``trainable_stages`` of annotation runs from a trained encoder (``annotation_trainable_stages``): the last
#: backbone stage and the head. On the synthetic benchmark (small encoder, 5 seeds, mono and 3-view) it is
#: within the seed spread of full fine-tuning on every metric; with ResNet-50 (layer4 + head) an update costs
#: about a seventh of full fine-tuning's (docs/speed.md).
ANNOTATION_TRAINABLE_STAGES = 1
#: ``SetupConfig.trainable_stages`` value that asks for full fine-tuning.
ALL_STAGES = -1

#: Command-line help of ``SetupConfig.trainable_stages`` (annotate, annotate-dataset).
ANNOTATION_TRAINABLE_STAGES_HELP = (
    "Backbone stages optimized, counted from the last (ResNet-50: 5 = stem + layer1-4; the small encoder: stem + "
    "its stages); the earlier ones are frozen and their activations computed once per clip, so an update costs "
    f"less. Default: {ANNOTATION_TRAINABLE_STAGES} (the last stage + head: within the seed spread of full "
    "fine-tuning on the synthetic benchmark; ResNet-50: a seventh of its time per update; the same count for every "
    "architecture) from a trained encoder, all from a random one (whose early stages must learn); "
    f"{ALL_STAGES}: all (full fine-tuning); 0: the head only.")


def annotation_trainable_stages(value: int | None, *, pretrained: bool) -> int | None:
    """``FitConfig.trainable_stages`` of an annotation run: ``value`` as given (``ALL_STAGES``: None, full
    fine-tuning), or when None the default by start: ``ANNOTATION_TRAINABLE_STAGES`` from a trained
    encoder, all stages from a random one."""
    if value is None:
        return ANNOTATION_TRAINABLE_STAGES if pretrained else None
    if int(value) < ALL_STAGES:
        raise ValueError(f"trainable_stages must be >= {ALL_STAGES} (all stages) or None (the default), got {value!r}")
    return None if int(value) == ALL_STAGES else int(value)


#: NeuFace learning-rate schedules (``FitConfig.lr_schedule``).
LR_SCHEDULES = ("constant", "cosine")

#: Command-line help of ``FitConfig.lr_schedule`` / ``lr_warmup`` / ``early_stop`` / ``early_stop_window``.
LR_SCHEDULE_HELP = (
    "NeuFace learning-rate schedule over the clip's updates (epochs x chunks): constant (the reference) or cosine "
    "(linear warm-up over --lr_warmup of the updates, then cosine decay to 0; for runs with fewer epochs, which "
    "cost accuracy on the synthetic benchmark).")
LR_WARMUP_HELP = "Fraction of the updates spent warming up the learning rate (cosine schedule only)."
EARLY_STOP_HELP = (
    "Stop NeuFace once the epoch loss's mean over the last --early_stop_window epochs fell by less than this "
    "fraction against the window before (0: off; the epochs run are recorded in metrics.json).")
EARLY_STOP_WINDOW_HELP = "Epochs per window of the early-stopping test (it needs two windows)."

#: How the direct baseline treats frames without a detection (``FitConfig.direct_undetected``).
DIRECT_UNDETECTED = ("interpolate", "temporal", "keep")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Optimization settings; the defaults are the released NeuFace code's (docs/method_notes.md).

    Frozen and hashable, so the compiled steps take it as a static argument: ``loss`` may be given
    as a dict and is stored as a ``losses.FrozenDict``; sequences are stored as tuples.
    """

    num_epochs: int = 100
    chunk_frames: int = 20
    learning_rate: float = 2e-5
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    #: loss terms (``losses.total_loss`` config). The reference: 10·L_lmk + 100·L_temp + 200·L_mv.
    loss: Mapping[str, Any] = losses_lib.freeze(losses_lib.REFERENCE_LOSS_CONFIG)
    #: frames of a chunk drawn for the multi-view loss per step (reference 5).
    multiview_frames: int = 5
    #: EFT-style frozen BatchNorm (running statistics, BN scale/bias not trained).
    freeze_bn: bool = True
    #: backbone stages optimized, counted from the last (``encoder.stage_names``: ResNet-50 has 5,
    #: stem + layer1-4); the earlier ones are frozen and their activations computed once per clip.
    #: None: all (full fine-tuning); 0: the head only. Needs ``freeze_bn``.
    trainable_stages: int | None = None
    #: learning-rate schedule over the clip's updates (``LR_SCHEDULES``); "cosine" warms up linearly
    #: over ``lr_warmup`` of them, then decays to 0. The fraction of the run done is computed in the
    #: step from a count and total held in Adam's state, so one executable serves any epoch count.
    lr_schedule: str = "constant"
    lr_warmup: float = 0.05
    #: early stopping on the epoch loss: stop once the mean of the last ``early_stop_window`` epochs
    #: fell by less than this fraction against the window before (0: off; ``should_stop``).
    early_stop: float = 0.0
    early_stop_window: int = 10
    #: carry the previous chunk's last frames (fixed) into the temporal windows.
    temporal_across_chunks: bool = False
    #: optional per-landmark weights, e.g. losses.IBUG68_REFERENCE_WEIGHTS.
    landmark_weights: tuple[float, ...] | None = None
    #: direct baseline: learning rate and prior weights (shape, expression, pose).
    direct_learning_rate: float = 1e-2
    direct_prior_weights: tuple[float, float, float] = (1e-4, 1e-4, 1e-4)
    #: per-identity-coefficient weights of the shape prior (``losses.weighted_l2_prior``: the direct
    #: baseline's and the ``shape_prior`` term's); None: the mean of squares. ``annotate`` takes them
    #: from the model file when it records them (``flame_jax.load_shape_prior``).
    shape_prior_weights: tuple[float, ...] | None = None
    #: direct baseline, frames without a detection: "interpolate" (their parameters interpolated
    #: linearly from the nearest detected frames of the view, before and after the optimization),
    #: "temporal" (interpolated at the start, then kept in the temporal / smoothing / multi-view
    #: terms, with no landmark target) or "keep" (left at the encoder's prediction and skipped by
    #: every term — the original baseline).
    direct_undetected: str = "interpolate"
    #: direct baseline Adam steps (0: as many as NeuFace takes, ``DirectFit.num_steps``).
    direct_steps: int = 0
    #: direct baseline early stopping: the parameters freeze once the landmark loss fell by less than
    #: this fraction over the last ``DirectFit.EARLY_STOP_WINDOW`` steps (0: off).
    direct_early_stop: float = 0.0
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "loss", losses_lib.freeze(self.loss))
        if self.landmark_weights is not None:
            object.__setattr__(self, "landmark_weights", tuple(float(w) for w in np.ravel(self.landmark_weights)))
        object.__setattr__(self, "direct_prior_weights", tuple(self.direct_prior_weights))
        if self.shape_prior_weights is not None:
            object.__setattr__(self, "shape_prior_weights", tuple(float(w) for w in np.ravel(self.shape_prior_weights)))
        if self.trainable_stages is not None:
            if isinstance(self.trainable_stages, bool) or int(self.trainable_stages) < 0:
                raise ValueError(f"trainable_stages must be None or >= 0, got {self.trainable_stages!r}")
            object.__setattr__(self, "trainable_stages", int(self.trainable_stages))
            if not self.freeze_bn:
                raise ValueError("trainable_stages needs freeze_bn=True (a frozen prefix with batch statistics "
                                 "would not compute the same activations every epoch)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not 0.0 <= float(self.lr_warmup) < 1.0:
            raise ValueError(f"lr_warmup must be in [0, 1), got {self.lr_warmup!r}")
        if float(self.early_stop) < 0 or int(self.early_stop_window) < 1:
            raise ValueError(f"early_stop must be >= 0 and early_stop_window >= 1, got {self.early_stop!r}, "
                             f"{self.early_stop_window!r}")
        if self.direct_undetected not in DIRECT_UNDETECTED:
            raise ValueError(f"direct_undetected must be one of {DIRECT_UNDETECTED}, got {self.direct_undetected!r}")

    def replace(self, **kw) -> "FitConfig":
        return dataclasses.replace(self, **kw)

    def compile_key(self) -> "FitConfig":
        """The settings a compiled step depends on: all but the epoch count and the seed (those
        drive only the Python loop and the initial weights), zeroed so that runs differing in
        them share one executable per shape; early stopping is decided between epochs, outside it."""
        return dataclasses.replace(self, num_epochs=0, seed=0, early_stop=0.0,
                                   early_stop_window=FitConfig.early_stop_window)


# --------------------------------------------------------------------------- schedule and early stopping
def learning_rate_at(config: FitConfig, fraction):
    """The NeuFace learning rate at ``fraction`` ∈ [0, 1] of the run's updates (pure, traceable):
    ``learning_rate`` for "constant"; for "cosine" a linear warm-up from 0 over ``lr_warmup``, then
    cosine decay to 0 (optax's warm-up cosine schedule, on the fraction rather than a step count)."""
    if config.lr_schedule == "constant":
        return jnp.asarray(config.learning_rate, jnp.float32) * jnp.ones_like(jnp.asarray(fraction, jnp.float32))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.lr_warmup, decay_steps=1.0, end_value=0.0)
    return schedule(jnp.clip(jnp.asarray(fraction, jnp.float32), 0.0, 1.0))


class RunScheduleState(NamedTuple):
    """Updates made (``count``) and planned (``total``; 0: not known, the rate stays at its peak)."""

    count: jax.Array
    total: jax.Array


def scale_by_run_schedule(config: FitConfig) -> optax.GradientTransformation:
    """Scales updates by ``-learning_rate_at(config, (count + ½) / total)``: the schedule runs over the
    fraction of the clip's updates done, with the total held in the state (``NeuFace.init_state``
    sets it from the clip length), so the compiled step does not depend on the epoch count. Midpoints
    (+½) keep the first and last updates off a zero rate."""

    def init_fn(params):
        del params
        return RunScheduleState(count=jnp.zeros((), jnp.int32), total=jnp.zeros((), jnp.float32))

    def update_fn(updates, state, params=None):
        del params
        known = state.total > 0
        fraction = jnp.where(known, (state.count.astype(jnp.float32) + 0.5) / jnp.maximum(state.total, 1.0), 0.0)
        lr = jnp.where(known, learning_rate_at(config, fraction), config.learning_rate)
        updates = jax.tree.map(lambda u: -lr * u, updates)
        return updates, RunScheduleState(count=state.count + 1, total=state.total)

    return optax.GradientTransformation(init_fn, update_fn)


def neuface_optimizer(config: FitConfig) -> optax.GradientTransformation:
    """Adam at ``learning_rate`` (the reference); with a schedule, Adam's scaling followed by
    ``scale_by_run_schedule``."""
    if config.lr_schedule == "constant":
        return optax.adam(config.learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
    return optax.chain(optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps),
                       scale_by_run_schedule(config))


def with_total_updates(opt_state, total):
    """``opt_state`` with the schedule's planned update count set to ``total`` (a scalar, or one per
    stacked clip); unchanged when the optimizer has no schedule."""
    def set_total(node):
        if isinstance(node, RunScheduleState):
            return node._replace(total=jnp.broadcast_to(jnp.asarray(total, jnp.float32), node.total.shape))
        return node

    return jax.tree.map(set_total, opt_state, is_leaf=lambda n: isinstance(n, RunScheduleState))


def should_stop(totals, config: FitConfig) -> bool:
    """Early stopping on the epoch losses so far (``totals`` [epochs] or [epochs, clips]): true once
    ``early_stop`` > 0 and, for every clip, the mean of the last ``early_stop_window`` epochs fell by
    less than ``early_stop`` (relative) against the mean of the window before. Window means rather than
    single epochs: the multi-view term samples frames, so one epoch's loss is noisy."""
    w = int(config.early_stop_window)
    totals = np.asarray(totals, np.float64)
    if config.early_stop <= 0 or totals.shape[0] < 2 * w:
        return False
    before, last = totals[-2 * w:-w].mean(axis=0), totals[-w:].mean(axis=0)
    return bool(np.all(before - last < config.early_stop * np.abs(before)))


#: FitConfig fields of the schedule and early stopping, also settings of annotate and demo.
SCHEDULE_FIELDS = ("lr_schedule", "lr_warmup", "early_stop", "early_stop_window")


def schedule_settings(settings) -> dict[str, Any]:
    """The ``SCHEDULE_FIELDS`` of a settings object (``SetupConfig``, ``DemoConfig``) as FitConfig keywords."""
    return {name: getattr(settings, name) for name in SCHEDULE_FIELDS}


def epochs_run(result: FitResult, config: FitConfig) -> int:
    """Epochs a NeuFace fit ran (fewer than ``num_epochs`` when early stopping stopped it)."""
    return int(result.history.get("epochs_run", [config.num_epochs])[0])


def with_clip_lengths(state: NeuFaceState, config: FitConfig, num_frames) -> NeuFaceState:
    """``state`` (one clip's, or stacked clips') with the schedule's total updates set from the clips'
    lengths (an int, or one per stacked clip; 0 for an empty slot)."""
    total = np.asarray([updates_per_clip(config, t) for t in np.ravel(num_frames)], np.float32)
    total = total.reshape(np.shape(num_frames))
    return dataclasses.replace(state, opt_state=with_total_updates(state.opt_state, total))


def updates_per_clip(config: FitConfig, num_frames: int) -> int:
    """Adam updates a full run makes on a clip of ``num_frames`` frames (chunks holding frames x epochs)."""
    return int(config.num_epochs) * padded_length(int(num_frames), config.chunk_frames) // config.chunk_frames


@dataclasses.dataclass(frozen=True)
class ClipData:
    """One clip's optimization inputs (a pytree). T frames, W views, L landmarks.

    Attributes:
      images: [T, W, S, S, 3] float32 RGB in [0, 1], encoder-sized crops.
      landmarks: [T, W, L, 2] float32 targets in normalized crop coordinates ([-1, 1]).
      landmarks_mask: [T, W, L] float32 (0 = invisible / NaN / dropped).
      frame_mask: [T, W] float32 (0 = no detection, a missing view, or padding).
      crops: None, or the crops themselves when ``images`` holds a frozen prefix's activations
        (``NeuFace.cache_features`` with an image-based loss term).
    """

    images: jax.Array
    landmarks: jax.Array
    landmarks_mask: jax.Array
    frame_mask: jax.Array
    crops: jax.Array | None = None

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.images.shape[1])


jax.tree_util.register_dataclass(
    ClipData, data_fields=["images", "landmarks", "landmarks_mask", "frame_mask", "crops"], meta_fields=[]
)


@dataclasses.dataclass(frozen=True)
class FitResult:
    """Per-frame, per-view FLAME parameters ([T, W, ...], T the unpadded frame count).

    Attributes:
      shape: [n_shape] identity of the clip.
      expression: [T, W, n_expr].
      pose: [T, W, 15] full FLAME pose (axis-angle).
      cam: [T, W, 3] weak-perspective camera (s, tx, ty).
      landmarks2d: [T, W, L, 2] predicted landmarks, normalized crop coordinates.
      vertices: [T, W, V, 3] posed vertices in each view's model frame, metres.
      canonical_vertices: [T, W, V, 3] the same with the head rotation zeroed.
      history: per-epoch (NeuFace) or per-step-block (direct) mean loss terms.
    """

    shape: np.ndarray
    expression: np.ndarray
    pose: np.ndarray
    cam: np.ndarray
    landmarks2d: np.ndarray
    vertices: np.ndarray
    canonical_vertices: np.ndarray
    history: dict[str, list[float]]


# --------------------------------------------------------------------------- data preparation
def pad_clip(data: ClipData, num_frames: int) -> ClipData:
    """Pads the frame axis to ``num_frames`` with masked frames (edge-replicated images)."""
    t = data.num_frames
    if num_frames < t:
        raise ValueError(f"cannot pad a clip of {t} frames to {num_frames}")
    if num_frames == t:
        return data
    pad = num_frames - t

    def edge(x):
        return jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)], axis=0)

    def zero(x):
        return jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)], axis=0)

    return ClipData(
        images=edge(data.images), landmarks=edge(data.landmarks),
        landmarks_mask=zero(data.landmarks_mask), frame_mask=zero(data.frame_mask),
    )


def padded_length(num_frames: int, chunk_frames: int) -> int:
    """Frames after padding to whole chunks."""
    return int(math.ceil(num_frames / chunk_frames) * chunk_frames)


# --------------------------------------------------------------------------- shared model evaluation
@dataclasses.dataclass(frozen=True)
class FaceModel:
    """The FLAME model and landmark embedding the fit runs through (a pytree)."""

    flame: flame_jax.FlameModel
    embedding: flame_jax.LandmarkEmbedding


jax.tree_util.register_dataclass(FaceModel, data_fields=["flame", "embedding"], meta_fields=[])


def evaluate_params(face: FaceModel, shape, expression, pose, cam):
    """FLAME + landmarks + projection for [..., W] images sharing one identity.

    Returns (vertices [..., V, 3], landmarks2d [..., L, 2], root joint [..., 3]).
    """
    batch = expression.shape[:-1]
    out = flame_jax.forward(
        face.flame,
        shape=jnp.broadcast_to(shape, batch + shape.shape[-1:]),
        expression=expression,
        pose=pose,
    )
    lmk3d = flame_jax.landmarks(face.flame, face.embedding, out.vertices, pose)
    lmk2d = camera_lib.project(lmk3d, cam)
    return out.vertices, lmk2d, out.joints[..., 0, :]


def _loss_batch(face, data_chunk, shape, expression, pose, cam, key, *, config: FitConfig, prev=None, step=None):
    """Builds the loss batch for one chunk [C, W] of images and evaluates the loss. ``step``: the
    optimizer's step count, for terms with a schedule (``batch["step"]``)."""
    verts, lmk2d, root = evaluate_params(face, shape, expression, pose, cam)
    frame_mask = data_chunk.frame_mask
    batch = {
        "landmarks_pred": lmk2d,
        "landmarks_target": data_chunk.landmarks,
        "landmarks_mask": data_chunk.landmarks_mask,
        "global_pose": pose[..., 0:3],
        "jaw_pose": pose[..., 6:9],
        "expression": expression,
        "frame_mask": frame_mask,
        "shape": shape,
        "pose": pose,
        "vertices": verts,
        # for image-based terms (photometric, silhouette): the crops, their cameras and the mesh
        "images": data_chunk.images,
        "cam": cam,
        "faces": face.flame.faces,
    }
    if data_chunk.images is None:  # NeuFace with a frozen prefix: the step sees its activations, not the crops
        del batch["images"]
    if step is not None:
        batch["step"] = step
    if config.landmark_weights is not None:
        batch["landmark_weights"] = jnp.asarray(config.landmark_weights, jnp.float32)
    if config.shape_prior_weights is not None:
        batch["shape_prior_weights"] = jnp.asarray(config.shape_prior_weights, jnp.float32)
    if prev is not None:
        batch.update(prev)
    loss_cfg = dict(config.loss)
    num_views = frame_mask.shape[1]
    if num_views >= 2 and loss_cfg.get("multiview", 0):
        idx, sample_mask = losses_lib.sample_frames(key, frame_mask.max(axis=1), config.multiview_frames)
        posed = verts[idx]
        batch["posed_vertices"] = posed
        batch["canonical_vertices"] = losses_lib.canonical_vertices(posed, pose[idx, :, 0:3], root[idx])
        batch["faces"] = face.flame.faces
        batch["view_mask"] = frame_mask[idx] * sample_mask[:, None]
    else:
        loss_cfg.pop("multiview", None)
    total, parts = losses_lib.total_loss(loss_cfg, batch)
    return total, parts


def _parts_template(config: FitConfig, num_views: int) -> list[str]:
    names = [n for n, spec in config.loss.items() if not (isinstance(spec, (int, float)) and spec == 0)]
    if num_views < 2 and "multiview" in names:
        names.remove("multiview")
    return names


# --------------------------------------------------------------------------- NeuFace
@dataclasses.dataclass(frozen=True)
class NeuFaceState:
    """Per-clip optimization state (a pytree): trainable encoder weights, the rest of the
    encoder state (BatchNorm statistics; updated only when BatchNorm is not frozen) and Adam."""

    params: Any
    rest: Any
    opt_state: Any
    step: jax.Array


jax.tree_util.register_dataclass(NeuFaceState, data_fields=["params", "rest", "opt_state", "step"], meta_fields=[])


def frozen_stage_count(encoder_config: encoder_lib.EncoderConfig, config: FitConfig) -> int:
    """Backbone stages frozen by ``config.trainable_stages`` (0 for full fine-tuning)."""
    if config.trainable_stages is None:
        return 0
    names = encoder_lib.stage_names(encoder_config)
    if config.trainable_stages > len(names):
        raise ValueError(f"trainable_stages={config.trainable_stages}, but the {encoder_config.arch} backbone has "
                         f"{len(names)} stages ({', '.join(names)})")
    return len(names) - config.trainable_stages


class NeuFace:
    """NeuFace optimizer bound to one encoder architecture and one FLAME model.

    Usage::

        opt = NeuFace(face_model, encoder_config, FitConfig(num_epochs=100))
        result = opt.fit(clip_data, encoder=my_pretrained_encoder)

    The compiled functions are module-level and take ``(encoder_config, config.compile_key())``
    as static arguments: every optimizer with the same settings reuses one executable per padded
    clip shape (length, view count, image size).
    """

    def __init__(self, face: FaceModel, encoder_config: encoder_lib.EncoderConfig, config: FitConfig = FitConfig()):
        self.face = face
        self.encoder_config = encoder_config
        self.config = config
        self.optimizer = neuface_optimizer(config)
        self.static = (encoder_config, config.compile_key())
        self.frozen_stages = frozen_stage_count(encoder_config, config)
        self._graphdef = self._split(nnx.eval_shape(lambda: encoder_lib.init_encoder(encoder_config, seed=0)))[0]

    def _split(self, encoder):
        return encoder_lib.split_params(encoder, freeze_bn=self.config.freeze_bn, frozen_stages=self.frozen_stages)

    # ---------------------------------------------------------------- setup
    def init_state(self, encoder=None, seed: int | None = None, num_frames: int | None = None) -> NeuFaceState:
        """A fresh state from ``encoder`` (an ``Encoder``; default a new one from ``seed``). ``num_frames``:
        the clip's length, which sets a learning-rate schedule's total updates (``updates_per_clip``)."""
        if encoder is None:
            encoder = encoder_lib.init_encoder(self.encoder_config, seed=self.config.seed if seed is None else seed)
        _, trainable, rest = self._split(encoder)
        # Copies: the epoch step donates its state, which must not delete the encoder's own buffers.
        params = jax.tree.map(jnp.array, trainable)
        rest = jax.tree.map(jnp.array, rest)
        state = NeuFaceState(params=params, rest=rest, opt_state=self.optimizer.init(params),
                             step=jnp.zeros((), jnp.int32))
        return state if num_frames is None else with_clip_lengths(state, self.config, num_frames)

    # ---------------------------------------------------------------- pure pieces
    def predict(self, params, rest, images, *, update_bn_stats: bool = False, features: bool = False):
        """Encoder on [..., S, S, 3] images → ``FlameParams`` with the same leading dims
        (and the updated encoder state when ``update_bn_stats``). ``features``: ``images`` are
        the frozen prefix's activations [..., h, w, c] (``cache_features``), not images."""
        lead = images.shape[:-3]
        flat = images.reshape((-1,) + images.shape[-3:])
        if features:
            raw = encoder_lib.apply_suffix(self._graphdef, params, rest, flat, self.frozen_stages)
        else:
            raw = encoder_lib.apply(self._graphdef, params, rest, flat, update_bn_stats=update_bn_stats)
        if update_bn_stats:
            raw, rest = raw
        decoded = encoder_lib.decode_outputs(raw, self.encoder_config)
        decoded = jax.tree.map(lambda x: x.reshape(lead + x.shape[1:]), decoded)
        return (decoded, rest) if update_bn_stats else decoded

    def chunk_loss(self, params, rest, chunk: ClipData, key, prev, face: FaceModel, step=None):
        """Loss of one chunk; returns (total, (parts, new_rest))."""
        train_bn = not self.config.freeze_bn
        p = self.predict(params, rest, chunk.images, update_bn_stats=train_bn, features=self.frozen_stages > 0)
        if train_bn:
            p, rest = p
        c, w = chunk.frame_mask.shape
        shape = encoder_lib.clip_shape(p.shape.reshape(c * w, -1), chunk.frame_mask.reshape(c * w))
        if self.frozen_stages > 0:  # image-based terms read the crops carried beside the activations (or fail)
            chunk = dataclasses.replace(chunk, images=chunk.crops, crops=None)
        total, parts = _loss_batch(face, chunk, shape, p.expression, p.pose, p.cam, key, config=self.config, prev=prev,
                                   step=step)
        return total, (parts, rest)

    _CONTEXT = 2  # frames of the previous chunk carried into the temporal windows

    def _step(self, state: NeuFaceState, chunk: ClipData, key, prev, face: FaceModel):
        """One Adam step on one chunk [C, W, ...]. Returns (state, stats [parts..., total], has_data, prev)."""
        names = _parts_template(self.config, chunk.frame_mask.shape[1])
        prev_batch = None
        if self.config.temporal_across_chunks:
            prev_batch = {"prev_global_pose": prev[0], "prev_frame_mask": prev[1]}
        (loss, (parts, new_rest)), grads = jax.value_and_grad(self.chunk_loss, has_aux=True)(
            state.params, state.rest, chunk, key, prev_batch, face, state.step
        )
        # A chunk with no valid frame (all padding) must not move the weights.
        has_data = (jnp.sum(chunk.frame_mask) > 0).astype(jnp.float32)
        keep = has_data > 0
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        new_params = optax.apply_updates(state.params, updates)
        select = lambda n, o: jnp.where(keep, n, o)  # noqa: E731
        new_state = NeuFaceState(
            params=jax.tree.map(select, new_params, state.params),
            rest=jax.tree.map(select, new_rest, state.rest),
            opt_state=jax.tree.map(select, opt_state, state.opt_state),
            step=state.step + has_data.astype(jnp.int32),
        )
        new_prev = prev
        if self.config.temporal_across_chunks:
            # Context for the next chunk: this chunk's last frames under the new weights, fixed.
            p = self.predict(jax.lax.stop_gradient(new_state.params), new_state.rest, chunk.images[-self._CONTEXT :],
                             features=self.frozen_stages > 0)
            new_prev = (p.pose[..., 0:3], chunk.frame_mask[-self._CONTEXT :])
        stats = jnp.stack([parts.get(n, jnp.zeros(())) for n in names] + [loss]) * has_data
        return new_state, stats, has_data, new_prev

    def initial_context(self, num_views: int, lead: tuple[int, ...] = ()):
        """Empty temporal context (masked) for the first chunk."""
        c = self._CONTEXT
        return (jnp.zeros(lead + (c, num_views, 3)), jnp.zeros(lead + (c, num_views)))

    def run_epoch(self, state, chunk_list, key, *, packed: bool = False, sharding=None, active: int | None = None):
        """One epoch: the chunks in order, one compiled step each. Returns (state, mean stats).

        A Python loop over a compiled step rather than ``lax.scan``: XLA:CPU compiles the
        scan body of a conv net several times slower than the same step on its own.
        ``sharding``: where the packed clip axis lives; the empty temporal context is placed
        there too, so that the first step of an epoch sees the same input shardings as the
        others (one compiled step, not two). ``active``: only the first ``active`` chunks hold
        frames (the rest is bucket padding, whose steps would leave the state unchanged); they
        are skipped, with the same per-chunk keys as a full epoch.
        """
        step = self.step_fn_packed if packed else self.step_fn
        lead = chunk_list[0].frame_mask.shape[:-2]
        prev = self.initial_context(chunk_list[0].frame_mask.shape[-1], lead)
        if sharding is not None:
            prev = jax.device_put(prev, sharding)
        keys = jax.random.split(key, len(chunk_list))
        total = 0.0
        count = 0.0
        for k, chunk in enumerate(chunk_list[: active or len(chunk_list)]):
            kk = jnp.stack([keys[k]] * lead[0]) if packed else keys[k]
            state, stats, has_data, prev = step(state, chunk, kk, prev, self.face)
            total = total + stats
            count = count + has_data
        mean = total / jnp.maximum(count, 1.0)[..., None] if packed else total / jnp.maximum(count, 1.0)
        return state, mean

    def _prefix(self, params, rest, images):
        """The frozen prefix's activations of [..., S, S, 3] images: [..., h, w, c]."""
        lead = images.shape[:-3]
        flat = images.reshape((-1,) + images.shape[-3:])
        feats = encoder_lib.apply_prefix(self._graphdef, params, rest, flat, self.frozen_stages)
        return feats.reshape(lead + feats.shape[1:])

    def cache_features(self, state: NeuFaceState, chunk_list: list[ClipData], *, packed: bool = False):
        """The chunks as the step consumes them: with frozen stages (``trainable_stages``) each
        chunk's images replaced by the frozen prefix's activations, computed once here (the frozen
        weights and BatchNorm statistics never change, so every epoch would recompute the same
        values); otherwise the chunks themselves. ``packed``: stacked states and chunks."""
        if self.frozen_stages == 0:
            return chunk_list
        fn = functools.partial(_neuface_prefix_packed if packed else _neuface_prefix, *self.static)
        keep = losses_lib.uses_images(self.config.loss)
        return [dataclasses.replace(c, images=fn(state.params, state.rest, c.images), crops=c.images if keep else None)
                for c in chunk_list]

    def _export(self, params, rest, data: ClipData, face: FaceModel):
        """Predictions for every frame and view of a (padded) clip, chunk by chunk."""
        k, c = data.frame_mask.shape[0] // self.config.chunk_frames, self.config.chunk_frames
        chunks = jax.tree.map(lambda x: x.reshape((k, c) + x.shape[1:]), data)
        preds = jax.lax.map(lambda ch: self.predict(params, rest, ch.images), chunks)
        preds = jax.tree.map(lambda x: x.reshape((k * c,) + x.shape[2:]), preds)
        t, w = data.frame_mask.shape
        shape = encoder_lib.clip_shape(preds.shape.reshape(t * w, -1), data.frame_mask.reshape(t * w))
        verts, lmk2d, root = evaluate_params(face, shape, preds.expression, preds.pose, preds.cam)
        canon = losses_lib.canonical_vertices(verts, preds.pose[..., 0:3], root)
        return shape, preds.expression, preds.pose, preds.cam, lmk2d, verts, canon

    # ---------------------------------------------------------------- compiled entry points
    @property
    def step_fn(self) -> Callable:
        """Compiled step for one clip: (state, chunk, key, prev, face) → (state, stats, has_data, prev)."""
        return functools.partial(_neuface_step, *self.static)

    def lower_step(self, state, chunk, key, prev, face):
        """Ahead-of-time lowering of the production step (for compile time, memory and cost analysis)."""
        return _neuface_step.lower(*self.static, state, chunk, key, prev, face)

    @property
    def step_fn_packed(self) -> Callable:
        """Compiled vmap(step) over stacked clips: all but ``face`` have a leading clip axis."""
        return functools.partial(_neuface_step_packed, *self.static)

    @property
    def export_fn(self) -> Callable:
        """Compiled export: (params, rest, data, face) → arrays of a FitResult."""
        return functools.partial(_neuface_export, *self.static)

    @property
    def export_fn_packed(self) -> Callable:
        return functools.partial(_neuface_export_packed, *self.static)

    def to_chunks(self, data: ClipData) -> list[ClipData]:
        """[..., T_pad, ...] → a list of K chunks [..., C, ...] (T_pad a multiple of the chunk length)."""
        c = self.config.chunk_frames
        lead = data.frame_mask.shape[:-2]
        k = data.frame_mask.shape[-2] // c
        axis = len(lead)
        return [
            jax.tree.map(lambda x: jax.lax.slice_in_dim(x, i * c, (i + 1) * c, axis=axis), data) for i in range(k)
        ]

    # ---------------------------------------------------------------- driver
    def fit(self, data: ClipData, *, encoder=None, progress: Callable[[int, dict], None] | None = None) -> FitResult:
        """Optimizes one clip from a fresh copy of ``encoder``'s weights, for ``num_epochs`` epochs or
        until ``should_stop`` (``history["epochs_run"]``: the epochs run)."""
        t = data.num_frames
        state = self.init_state(encoder, num_frames=t)
        padded = pad_clip(data, padded_length(t, self.config.chunk_frames))
        chunks = self.cache_features(state, self.to_chunks(padded))
        names = _parts_template(self.config, data.num_views)
        history = {n: [] for n in names + ["total"]}
        key = jax.random.key(self.config.seed)
        totals = []
        epochs = self.config.num_epochs
        for epoch in range(self.config.num_epochs):
            state, mean = self.run_epoch(state, chunks, jax.random.fold_in(key, epoch))
            if self.config.early_stop > 0:
                totals.append(float(np.asarray(mean)[-1]))
                if should_stop(totals, self.config):
                    epochs = epoch + 1
            if progress is not None or epoch + 1 == epochs or epoch % 10 == 0:
                values = np.asarray(mean)
                for n, v in zip(names + ["total"], values):
                    history[n].append(float(v))
                if progress is not None:
                    progress(epoch + 1, dict(zip(names + ["total"], values.tolist())))
            if epoch + 1 == epochs:
                break
        history["epochs_run"] = [float(epochs)]
        out = jax.device_get(self.export_fn(state.params, state.rest, padded, self.face))
        return _result(out, t, history)


def _result(out, t, history) -> FitResult:
    shape, expression, pose, cam, lmk2d, verts, canon = out
    return FitResult(
        shape=np.asarray(shape), expression=np.asarray(expression)[:t], pose=np.asarray(pose)[:t],
        cam=np.asarray(cam)[:t], landmarks2d=np.asarray(lmk2d)[:t], vertices=np.asarray(verts)[:t],
        canonical_vertices=np.asarray(canon)[:t], history=history,
    )


# --------------------------------------------------------------------------- direct baseline
@dataclasses.dataclass(frozen=True)
class DirectParams:
    """Raw per-frame parameters of the direct baseline (a pytree)."""

    shape: jax.Array  # [S]
    expression: jax.Array  # [T, W, E]
    rotation: jax.Array  # [T, W, 6]: global (3) + jaw (3), axis-angle
    cam: jax.Array  # [T, W, 3]


jax.tree_util.register_dataclass(DirectParams, data_fields=["shape", "expression", "rotation", "cam"], meta_fields=[])


def interpolate_undetected(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-frame values ``x`` [T, W, ...] with every frame whose ``mask`` [T, W] is 0 replaced by the
    linear interpolation of the nearest detected frames of its view before and after it (the nearest
    one alone at the clip's ends). A view without any detected frame is returned as it is.

    What a tracker does for a frame it could not see; cheap (two cumulative scans and a gather).
    """
    t, w = mask.shape
    idx = jnp.broadcast_to(jnp.arange(t)[:, None], (t, w))
    det = mask > 0
    prev = jax.lax.cummax(jnp.where(det, idx, -1), axis=0)
    nxt = jax.lax.cummin(jnp.where(det, idx, t), axis=0, reverse=True)
    has_prev, has_next = prev >= 0, nxt < t
    lo = jnp.where(has_prev, prev, jnp.where(has_next, nxt, idx))
    hi = jnp.where(has_next, nxt, lo)
    a = (idx - lo).astype(x.dtype) / jnp.maximum(hi - lo, 1).astype(x.dtype)
    col = jnp.broadcast_to(jnp.arange(w)[None], (t, w))
    extra = (1,) * (x.ndim - 2)
    mixed = (1 - a.reshape(a.shape + extra)) * x[lo, col] + a.reshape(a.shape + extra) * x[hi, col]
    return jnp.where(det.reshape(det.shape + extra), x, mixed)


def _interpolate_params(params: DirectParams, mask: jax.Array) -> DirectParams:
    f = functools.partial(interpolate_undetected, mask=mask)
    return DirectParams(
        shape=params.shape, expression=f(params.expression), rotation=f(params.rotation), cam=f(params.cam)
    )


class DirectFit:
    """Direct 3DMM optimization of per-frame FLAME and camera parameters (the paper's baseline).

    Made fair to NeuFace (which predicts undetected frames from their pixels) by
    ``FitConfig.direct_undetected``: undetected frames are interpolated from their detected
    neighbours and/or kept in the temporal terms rather than left at the encoder's first guess.
    ``direct_steps`` sets the step budget and ``direct_early_stop`` stops once the landmark loss
    stalls, so that the baseline's budget can be tuned like NeuFace's.
    """

    #: steps over which ``direct_early_stop`` measures the landmark loss's relative decrease.
    EARLY_STOP_WINDOW = 20

    def __init__(self, face: FaceModel, encoder_config: encoder_lib.EncoderConfig, config: FitConfig = FitConfig()):
        self.face = face
        self.encoder_config = encoder_config
        self.config = config
        self.optimizer = optax.adam(config.direct_learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
        self.static = (encoder_config, config.compile_key())

    def init_params(self, data: ClipData, encoder=None) -> DirectParams:
        """The encoder's prediction for every image (mean face at the initial camera when untrained);
        undetected frames interpolated from their neighbours unless ``direct_undetected="keep"``."""
        if encoder is None:
            encoder = encoder_lib.init_encoder(self.encoder_config, seed=self.config.seed)
        graphdef, trainable, rest = encoder_lib.split_params(encoder, freeze_bn=True)
        t, w = data.frame_mask.shape
        raw = _apply_encoder(graphdef, trainable, rest, data.images.reshape((t * w,) + data.images.shape[2:]))
        p = encoder_lib.decode_outputs(raw, self.encoder_config)
        shape = encoder_lib.clip_shape(p.shape, data.frame_mask.reshape(-1))
        params = DirectParams(
            shape=shape,
            expression=p.expression.reshape(t, w, -1),
            rotation=jnp.concatenate([p.pose[:, 0:3], p.pose[:, 6:9]], -1).reshape(t, w, 6),
            cam=p.cam.reshape(t, w, 3),
        )
        if self.config.direct_undetected != "keep":
            params = _interpolate_params(params, data.frame_mask)
        return params

    def loss_data(self, data: ClipData) -> ClipData:
        """The clip as the loss sees it: under ``direct_undetected="temporal"`` every frame of a view
        with some detection counts in the temporal, prior and multi-view terms (no landmark target
        where undetected); otherwise ``data`` itself."""
        if self.config.direct_undetected != "temporal":
            return data
        seen = jnp.broadcast_to(jnp.max(data.frame_mask, axis=0, keepdims=True), data.frame_mask.shape)
        return ClipData(
            images=data.images, landmarks=data.landmarks,
            landmarks_mask=data.landmarks_mask * data.frame_mask[..., None], frame_mask=seen,
        )

    def _loss(self, params: DirectParams, data: ClipData, key, face: FaceModel, step=None):
        pose = flame_jax.deca_pose_to_full(params.rotation)
        total, parts = _loss_batch(face, data, params.shape, params.expression, pose, params.cam, key, config=self.config,
                                   step=step)
        m = data.frame_mask[..., None]
        ws, we, wp = self.config.direct_prior_weights
        prior = (
            ws * losses_lib.masked_mean(*losses_lib.weighted_l2_prior(params.shape, self.config.shape_prior_weights))
            + we * losses_lib.masked_mean(params.expression**2, jnp.broadcast_to(m, params.expression.shape))
            + wp * losses_lib.masked_mean(params.rotation**2, jnp.broadcast_to(m, params.rotation.shape))
        )
        parts = dict(parts, prior=prior)
        return total + prior, parts

    def _run(self, params: DirectParams, data: ClipData, key, num_steps: int, face: FaceModel):
        opt_state = self.optimizer.init(params)
        names = _parts_template(self.config, data.frame_mask.shape[1]) + ["prior"]
        loss_data = self.loss_data(data)
        tol, window = float(self.config.direct_early_stop), self.EARLY_STOP_WINDOW

        def body(carry, k):
            p, s, recent, done, i = carry
            (loss, parts), grads = jax.value_and_grad(self._loss, has_aux=True)(p, loss_data, k, face, i)
            updates, new_s = self.optimizer.update(grads, s, p)
            new_p = optax.apply_updates(p, updates)
            if tol > 0:  # static: no early stopping compiles no ring buffer
                lmk = parts["landmark"]
                old = recent[i % window]
                done = done | ((i >= window) & (old - lmk < tol * old))
                recent = recent.at[i % window].set(lmk)
                new_p = jax.tree.map(lambda a, b: jnp.where(done, a, b), p, new_p)
                new_s = jax.tree.map(lambda a, b: jnp.where(done, a, b), s, new_s)
            stats = jnp.stack([parts[n] for n in names] + [loss, 1.0 - done.astype(jnp.float32)])
            return (new_p, new_s, recent, done, i + 1), stats

        carry = (params, opt_state, jnp.zeros((window,), jnp.float32), jnp.zeros((), bool), jnp.zeros((), jnp.int32))
        (params, *_), stats = jax.lax.scan(body, carry, jax.random.split(key, num_steps))
        if self.config.direct_undetected == "interpolate":
            params = _interpolate_params(params, data.frame_mask)
        pose = flame_jax.deca_pose_to_full(params.rotation)
        verts, lmk2d, root = evaluate_params(face, params.shape, params.expression, pose, params.cam)
        canon = losses_lib.canonical_vertices(verts, pose[..., 0:3], root)
        return (params.shape, params.expression, pose, params.cam, lmk2d, verts, canon), stats

    @property
    def run_fn(self) -> Callable:
        """Compiled run: (params, data, key, num_steps, face) → (FitResult arrays, per-step stats)."""
        return functools.partial(_direct_run, *self.static)

    def num_steps(self, num_frames: int) -> int:
        """``direct_steps``, or as many Adam steps as NeuFace takes on a clip of this length."""
        if self.config.direct_steps > 0:
            return int(self.config.direct_steps)
        return self.config.num_epochs * padded_length(num_frames, self.config.chunk_frames) // self.config.chunk_frames

    def fit(self, data: ClipData, *, encoder=None) -> FitResult:
        """Optimizes one clip; ``history`` holds the loss terms every tenth of the run and
        ``steps_taken`` (fewer than the budget when early stopping stopped it)."""
        params = self.init_params(data, encoder)
        steps = self.num_steps(data.num_frames)
        out, stats = self.run_fn(params, data, jax.random.key(self.config.seed), steps, self.face)
        out = jax.device_get(out)
        names = _parts_template(self.config, data.num_views) + ["prior", "total"]
        stats = np.asarray(stats)
        block = max(1, steps // 10)
        history = {n: [float(v) for v in stats[::block, i]] for i, n in enumerate(names)}
        history["steps_taken"] = [float(stats[:, -1].sum())]
        return _result(out, data.num_frames, history)


# --------------------------------------------------------------------------- compiled entry points
# Static arguments: (encoder_config, config) — both frozen and hashable; the optimizer object is
# rebuilt from them at trace time (building it is cheap and happens once per compilation).
@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2,))
def _neuface_step(encoder_config, config, state, chunk, key, prev, face):
    return NeuFace(face, encoder_config, config)._step(state, chunk, key, prev, face)


@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2,))
def _neuface_step_packed(encoder_config, config, state, chunk, key, prev, face):
    opt = NeuFace(face, encoder_config, config)
    return jax.vmap(lambda s, c, k, p: opt._step(s, c, k, p, face))(state, chunk, key, prev)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _neuface_prefix(encoder_config, config, params, rest, images):
    return NeuFace(None, encoder_config, config)._prefix(params, rest, images)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _neuface_prefix_packed(encoder_config, config, params, rest, images):
    return jax.vmap(NeuFace(None, encoder_config, config)._prefix)(params, rest, images)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _neuface_export(encoder_config, config, params, rest, data, face):
    return NeuFace(face, encoder_config, config)._export(params, rest, data, face)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _neuface_export_packed(encoder_config, config, params, rest, data, face):
    opt = NeuFace(face, encoder_config, config)
    return jax.vmap(lambda p, r, d: opt._export(p, r, d, face))(params, rest, data)


@functools.partial(jax.jit, static_argnums=(0, 1, 5))
def _direct_run(encoder_config, config, params, data, key, num_steps, face):
    return DirectFit(face, encoder_config, config)._run(params, data, key, num_steps, face)


@functools.partial(jax.jit, static_argnums=(0,))
def _apply_encoder(graphdef, trainable, rest, images):
    return encoder_lib.apply(graphdef, trainable, rest, images)
