"""A pretrained starting point for NeuFace: supervised training of an encoder on synthetic faces.

NeuFace (docs/method_notes.md) optimizes the weights of an encoder that *already* regresses FLAME
parameters — DECA's coarse encoder in the paper. Without DECA weights (and for the small CPU
encoder, which has no published weights at all) we build the same kind of prior ourselves: render
many synthetic faces of the demo head (or any FLAME-format model) with known parameters and train
the encoder to regress them, supervised.

Data (``generate_dataset``): ``synth.synthesize_clip`` is reused as is, so the training crops go
through exactly the renderer, detector noise, crop recipe (``crops.landmark_boxes`` →
``boxes_to_transforms``) and crop warp (``crops.prepare_clip`` → ``crops.warp_crop``) that the test
clips do. For diversity each "clip" is short (a few frames) with the motion sampled at a low frame
rate (frames far apart in time: different expressions, jaw, gaze, head pose), seen by a few cameras at
random yaw/pitch; every clip is a new identity, albedo and background. Seeds start at
``PretrainConfig.seed_offset`` (default 1,000,000) so they never collide with the small seeds of
test clips.

Targets per image: the clip's identity, the frame's expression, the view's head rotation and jaw
(axis-angle), the weak-perspective camera that best explains the true landmarks
(``fit_weak_perspective``, closed-form least squares) and the true (noise-free) 2D landmarks in
normalized crop coordinates.

Training (``pretrain``): Adam (cosine-decayed learning rate) on a weighted sum of
parameter regression (squared error per group), 2D landmark L1 through the predicted FLAME
mesh and weak-perspective camera (as DECA's landmark loss), and a 3D vertex L1 in the model frame.
BatchNorm trains with batch statistics so its running averages are meaningful for NeuFace's frozen
(EFT-style) BatchNorm afterwards.

Checkpoints: the package ships one (``packaged_checkpoint()``: the small encoder for the demo head,
trained by ``python experiments/pretrain_encoder.py`` with the defaults below, 1.5 MB). It is an orbax
checkpoint (tensorstore/OCDBT arrays + JSON metadata) read by ``encoder.load_encoder``: loading
executes no code from the files (no pickle). ``ensure_pretrained()`` loads the packaged one;
``ensure_pretrained(path)`` loads ``path`` or, when it does not exist, trains and saves one there
(``RETRAINED_CHECKPOINT`` is where the experiments put a re-trained one).

A prior for any FLAME-format model (``train_prior``, the ``neuface-jax pretrain`` command): per-image
renders (``render_examples``: identity, expression, jaw, blinks, yaw to ±70°, lighting, skin tones,
cluttered backgrounds, then ``augment``'s occluders, colour, blur, noise and JPEG, and a detector's
crop-box noise) streamed or drawn from a pool (``SyntheticStream``: batches are a function of the
step, so a resumed run sees the same data), trained with the batch sharded over a device mesh
(optionally a bfloat16 backbone), orbax training-state checkpoints beside the output
(``state_path``), and validated on held-out renders and on real clips (``prepare_real_clip`` /
``real_clip_errors``: raw-prediction NME against MediaPipe and yaw against its head rotation).
The legacy ``pretrain`` above is what made the shipped checkpoint and stays unchanged.

Example::

    from neuface_jax.synthetic import pretrain
    enc, cfg, info = pretrain.ensure_pretrained()          # the shipped checkpoint
    result = fit.NeuFace(face, cfg, fit_config).fit(clip_data, encoder=enc)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from scipy.spatial.transform import Rotation

import flame_jax
import flame_jax.demo
from neuface_jax.common.atomic import atomic_write_text
from neuface_jax.common.settings import setting
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.core import parallel as parallel_lib
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import detect as detect_lib
from neuface_jax.media import landmark_sets
from neuface_jax.media import render as render_lib
from neuface_jax.media import sources as sources_lib
from neuface_jax.priors import starting as starting_lib
from neuface_jax.synthetic import augment as augment_lib
from neuface_jax.synthetic import motion as motion_lib
from neuface_jax.synthetic import synth as synth_lib

#: First synthetic seed used for pretraining data (test clips use small seeds).
DEFAULT_SEED_OFFSET = 1_000_000
#: Where ``experiments/pretrain_encoder.py`` writes a re-trained checkpoint (the shipped one is
#: ``packaged_checkpoint()``).
RETRAINED_CHECKPOINT = "/tmp/pretrained_small_encoder"
#: Folder name of the shipped checkpoint inside ``neuface_jax/assets/`` (its summary is
#: ``<name>.pretrain.json`` beside it).
PACKAGED_CHECKPOINT_NAME = starting_lib.PACKAGED_CHECKPOINT_NAME


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Settings of the synthetic pretraining (defaults: ≈ 2.5 minutes on an idle 2-core CPU).

    Data:
      num_clips: synthetic identities (one short clip each).
      frames_per_clip: frames rendered per clip.
      views_per_clip: cameras per clip, each at a random yaw/pitch.
      motion_fps: frame rate at which the ground-truth motion is sampled (low = frames far apart).
      yaw_range_deg, pitch_range_deg: camera angles are uniform in ±these (the head's own motion
        adds turns up to ≈ 55° on top, as in the test clips).
      noise_range: the detector-noise factor of each clip (``SynthConfig.scaled_noise``) is uniform
        in this range; the noisy detections place the crop, so this is crop-jitter augmentation.
      seed_offset: the clips use seeds ``seed_offset + i``; validation clips follow the training clips.
      min_turn_width_s: ``MotionConfig.min_turn_width_s`` of the training motion. 2 s = the 4-frame
        minimum at 2 fps that the shipped checkpoint's data was rendered with (test clips use 0.3 s);
        kept so that the default settings reproduce that data exactly.
      num_val_clips: held-out clips for the validation errors.
      synth: other settings of the rendered clips (image size, head fill, ...).

    Training:
      num_steps, batch_size, learning_rate, warmup_steps: Adam with linear warm-up then cosine decay.
      weight_*: loss weights (parameter groups: squared error; landmarks: L1 in normalized crop
        units; vertices: L1 in metres of the posed mesh in the model frame; canonical: L1 in metres
        of the mesh with the head rotation zeroed — identity, expression and jaw only).
      seed: encoder initialization and batch order.
    """

    num_clips: int = 200
    frames_per_clip: int = 4
    views_per_clip: int = 4
    motion_fps: float = 2.0
    yaw_range_deg: float = 70.0
    pitch_range_deg: float = 30.0
    noise_range: tuple[float, float] = (1.0, 3.0)
    seed_offset: int = DEFAULT_SEED_OFFSET
    min_turn_width_s: float = 2.0
    num_val_clips: int = 16
    synth: synth_lib.SynthConfig = synth_lib.SynthConfig()

    num_steps: int = 600
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_shape: float = 1.0
    weight_expression: float = 1.0
    weight_pose: float = 10.0
    weight_cam: float = 0.1
    weight_landmark: float = 10.0
    weight_vertex: float = 100.0
    weight_canonical: float = 0.0
    seed: int = 0

    def replace(self, **kw) -> "PretrainConfig":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict[str, Any]:
        return synth_lib._jsonable(dataclasses.asdict(self))


@dataclasses.dataclass
class PretrainData:
    """Supervised training images. N images, S the encoder size.

    Attributes:
      images: uint8 [N, S, S, 3] encoder-sized crops.
      landmarks: float32 [N, 68, 2] true landmarks, normalized crop coordinates.
      shape: float32 [N, n_shape] identity coefficients.
      expression: float32 [N, n_expr].
      pose: float32 [N, 15] full FLAME pose of the view (global, neck, jaw, eyes).
      cam: float32 [N, 3] best weak-perspective camera (s, tx, ty) for the true landmarks.
      clip_index: int32 [N] which synthetic clip (identity) the image comes from.
    """

    images: np.ndarray
    landmarks: np.ndarray
    shape: np.ndarray
    expression: np.ndarray
    pose: np.ndarray
    cam: np.ndarray
    clip_index: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx) -> "PretrainData":
        return PretrainData(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})

    @staticmethod
    def concatenate(parts: list["PretrainData"]) -> "PretrainData":
        return PretrainData(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(PretrainData)}
        )


# --------------------------------------------------------------------------- data
def fit_weak_perspective(points3d: np.ndarray, points2d: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Least-squares weak-perspective camera of ``camera.project``: ``p = s·(X + t)`` with y flipped.

    Args:
      points3d: [..., N, 3] model-frame points (metres).
      points2d: [..., N, 2] their normalized crop coordinates.
      mask: [..., N] points to use (default all).

    Returns:
      [..., 3] cameras (s, tx, ty).
    """
    x = np.asarray(points3d, np.float64)
    p = np.asarray(points2d, np.float64)
    m = np.ones(x.shape[:-1]) if mask is None else np.asarray(mask, np.float64)
    # Unknowns u = (s, a = s·tx, b = s·ty):  p_x = s·X + a,  p_y = −s·Y − b.
    zeros, ones = np.zeros_like(x[..., 0]), np.ones_like(x[..., 0])
    ax = np.stack([x[..., 0], ones, zeros], -1)
    ay = np.stack([-x[..., 1], zeros, -ones], -1)
    a = np.concatenate([ax, ay], -2) * np.concatenate([m, m], -1)[..., None]
    rhs = np.concatenate([p[..., 0], p[..., 1]], -1) * np.concatenate([m, m], -1)
    ata = np.einsum("...ni,...nj->...ij", a, a) + 1e-9 * np.eye(3)
    atb = np.einsum("...ni,...n->...i", a, rhs)
    u = np.linalg.solve(ata, atb[..., None])[..., 0]
    s = u[..., 0]
    safe = np.where(np.abs(s) > 1e-9, s, 1.0)
    return np.stack([s, u[..., 1] / safe, u[..., 2] / safe], -1).astype(np.float32)


def random_rig(rng: np.random.Generator, num_views: int, yaw_range_deg: float, pitch_range_deg: float) -> motion_lib.CameraRig:
    """Cameras at uniformly random yaw/pitch (the first one frontal-ish, all distinct names)."""
    yaws = rng.uniform(-yaw_range_deg, yaw_range_deg, size=num_views)
    pitches = rng.uniform(-pitch_range_deg, pitch_range_deg, size=num_views)
    names = [f"cam{i}" for i in range(num_views)]
    return motion_lib.rig_from_angles(list(zip(yaws.tolist(), pitches.tolist())), names)


def clip_to_examples(clip: synth_lib.SynthClip, encoder_size: int, clip_index: int = 0) -> PretrainData:
    """Supervised examples (one per frame and view) from a synthetic clip with ground truth."""
    gt = clip.gt
    t, w = clip.num_frames, clip.num_views
    crop_size = int(clip.meta["config"]["crop_size"]) if "config" in clip.meta else 224
    data = crops_lib.prepare_clip(
        clip.images, gt["landmarks68_true"], clip.crop_transforms, encoder_size=encoder_size,
        crop_size=crop_size, valid=None, name=f"pretraining clip {clip.meta.get('seed')}",
    )
    lmk_norm = np.asarray(data.landmarks)
    model_frame = gt["landmarks3d"] - gt["translation"][:, :, None, :]
    cam = fit_weak_perspective(model_frame, lmk_norm)
    n = t * w
    flat = lambda x: np.asarray(x).reshape((n,) + np.asarray(x).shape[2:])  # noqa: E731
    return PretrainData(
        images=np.round(flat(data.images) * 255.0).astype(np.uint8),
        landmarks=flat(lmk_norm).astype(np.float32),
        shape=np.broadcast_to(gt["shape"], (n, gt["shape"].shape[-1])).astype(np.float32),
        expression=np.broadcast_to(gt["expression"][:, None], (t, w, gt["expression"].shape[-1])).reshape(n, -1).astype(np.float32),
        pose=flat(gt["pose"]).astype(np.float32),
        cam=flat(cam),
        clip_index=np.full((n,), clip_index, np.int32),
    )


def generate_dataset(
    config: PretrainConfig = PretrainConfig(),
    *,
    encoder_size: int = 64,
    num_clips: int | None = None,
    first_clip: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> PretrainData:
    """Renders ``num_clips`` (default ``config.num_clips``) synthetic clips → supervised examples.

    Clip ``i`` (counting from ``first_clip``) uses seed ``config.seed_offset + i``: deterministic, and
    disjoint from the test clips' small seeds.
    """
    num_clips = config.num_clips if num_clips is None else num_clips
    motion = dataclasses.replace(config.synth.motion, fps=config.motion_fps, min_turn_width_s=config.min_turn_width_s)
    parts = []
    for k in range(num_clips):
        i = first_clip + k
        seed = config.seed_offset + i
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA11]))
        rig = random_rig(rng, config.views_per_clip, config.yaw_range_deg, config.pitch_range_deg)
        noise = float(rng.uniform(*config.noise_range))
        synth_cfg = dataclasses.replace(
            config.synth.scaled_noise(noise), num_frames=config.frames_per_clip, motion=motion,
            drop_frame_probability=0.0,
        )
        clip = synth_lib.synthesize_clip(seed=seed, rig=rig, config=synth_cfg)
        parts.append(clip_to_examples(clip, encoder_size, clip_index=i))
        if progress is not None:
            progress(k + 1, num_clips)
    return PretrainData.concatenate(parts)


# --------------------------------------------------------------------------- training
def _targets_pose6(pose15: jax.Array) -> jax.Array:
    return jnp.concatenate([pose15[..., 0:3], pose15[..., 6:9]], -1)


def pretrain_loss(
    raw: jax.Array,
    batch: dict[str, jax.Array],
    face: fit_lib.FaceModel,
    encoder_config: encoder_lib.EncoderConfig,
    config: PretrainConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Supervised loss of raw encoder outputs [B, num_outputs] against a batch of targets."""
    p = encoder_lib.decode_outputs(raw, encoder_config)
    ns, ne = p.shape.shape[-1], p.expression.shape[-1]
    gt_shape = batch["shape"][:, :ns]
    gt_expr = batch["expression"][:, :ne]
    parts = {
        "shape": jnp.mean((p.shape - gt_shape) ** 2),
        "expression": jnp.mean((p.expression - gt_expr) ** 2),
        "pose": jnp.mean((_targets_pose6(p.pose) - _targets_pose6(batch["pose"])) ** 2),
        # Scale in units of 10 (s ≈ 9), translation in centimetres.
        "cam": jnp.mean(((p.cam - batch["cam"]) * jnp.asarray([0.1, 100.0, 100.0])) ** 2),
    }
    verts, lmk2d, _ = fit_lib.evaluate_params(face, p.shape, p.expression, p.pose, p.cam)
    parts["landmark"] = jnp.mean(jnp.abs(lmk2d - batch["landmarks"]))
    gt_pose = batch["pose"]
    gt = flame_jax.forward(face.flame, shape=batch["shape"], expression=batch["expression"], pose=gt_pose)
    # Posed vertices in the model frame (no translation); the ground truth includes the small
    # neck and eye rotations the encoder does not predict.
    parts["vertex"] = jnp.mean(jnp.abs(verts - gt.vertices))
    if config.weight_canonical:
        zero_rot = lambda pose: pose.at[..., 0:3].set(0.0)  # noqa: E731
        pc = flame_jax.forward(face.flame, shape=p.shape, expression=p.expression, pose=zero_rot(p.pose))
        gc = flame_jax.forward(face.flame, shape=batch["shape"], expression=batch["expression"], pose=zero_rot(gt_pose))
        parts["canonical"] = jnp.mean(jnp.abs(pc.vertices - gc.vertices))
    w = {
        "shape": config.weight_shape, "expression": config.weight_expression, "pose": config.weight_pose,
        "cam": config.weight_cam, "landmark": config.weight_landmark, "vertex": config.weight_vertex,
        "canonical": config.weight_canonical,
    }
    total = sum(w[k] * parts[k] for k in parts)
    return total, parts


def _batch_to_jax(data: PretrainData, idx: np.ndarray) -> dict[str, jax.Array]:
    return {
        "images": jnp.asarray(data.images[idx], jnp.float32) / 255.0,
        "landmarks": jnp.asarray(data.landmarks[idx]),
        "shape": jnp.asarray(data.shape[idx]),
        "expression": jnp.asarray(data.expression[idx]),
        "pose": jnp.asarray(data.pose[idx]),
        "cam": jnp.asarray(data.cam[idx]),
    }


def _schedule(config: PretrainConfig):
    warm = max(1, min(config.warmup_steps, config.num_steps // 2))
    return optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, warm, max(config.num_steps, warm + 1), end_value=config.learning_rate * 0.01
    )


@dataclasses.dataclass
class PretrainResult:
    """What ``pretrain`` returns: the trained encoder, its config and a summary."""

    encoder: encoder_lib.Encoder
    encoder_config: encoder_lib.EncoderConfig
    history: dict[str, list[float]]
    validation: dict[str, float]
    seconds: dict[str, float]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _errors(graphdef, encoder_config, face, trainable, rest, batch):
    raw = encoder_lib.apply(graphdef, trainable, rest, batch["images"])
    p = encoder_lib.decode_outputs(raw, encoder_config)
    verts, lmk2d, _ = fit_lib.evaluate_params(face, p.shape, p.expression, p.pose, p.cam)
    gt = flame_jax.forward(face.flame, shape=batch["shape"], expression=batch["expression"], pose=batch["pose"])
    rp = flame_jax.axis_angle_to_matrix(p.pose[:, 0:3])
    rg = flame_jax.axis_angle_to_matrix(batch["pose"][:, 0:3])
    cos = (jnp.trace(jnp.einsum("bij,bik->bjk", rp, rg), axis1=-2, axis2=-1) - 1.0) / 2.0
    ns, ne = p.shape.shape[-1], p.expression.shape[-1]
    zero_rot = lambda pose: pose.at[..., 0:3].set(0.0)  # noqa: E731
    pc = flame_jax.forward(face.flame, shape=p.shape, expression=p.expression, pose=zero_rot(p.pose))
    gc = flame_jax.forward(face.flame, shape=batch["shape"], expression=batch["expression"], pose=zero_rot(batch["pose"]))
    return {
        "landmark_l1": jnp.mean(jnp.abs(lmk2d - batch["landmarks"]), axis=(1, 2)),
        "canonical_error_mm": 1000.0 * jnp.mean(jnp.linalg.norm(pc.vertices - gc.vertices, axis=-1), axis=-1),
        "vertex_l1_mm": 1000.0 * jnp.mean(jnp.abs(verts - gt.vertices), axis=(1, 2)),
        "shape_se": jnp.mean((p.shape - batch["shape"][:, :ns]) ** 2, -1),
        "expression_se": jnp.mean((p.expression - batch["expression"][:, :ne]) ** 2, -1),
        "rotation_deg": jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0))),
        "jaw_deg": jnp.degrees(jnp.linalg.norm(p.pose[:, 6:9] - batch["pose"][:, 6:9], axis=-1)),
    }


def evaluate_encoder(
    encoder: encoder_lib.Encoder,
    encoder_config: encoder_lib.EncoderConfig,
    data: PretrainData,
    face: fit_lib.FaceModel,
    batch_size: int = 64,
) -> dict[str, float]:
    """Mean errors of an encoder's predictions on supervised examples (running BN statistics).

    Returns ``landmark_l1`` (normalized crop units), ``vertex_l1_mm`` (posed, model frame),
    ``canonical_error_mm`` (mean vertex distance with the head rotation zeroed, as the benchmark's
    ``vertex_error_mm``),
    ``shape_rmse``, ``expression_rmse``, ``rotation_deg`` (mean head-rotation angle error) and
    ``jaw_deg``.
    """
    graphdef, trainable, rest = encoder_lib.split_params(encoder, freeze_bn=True)
    acc: dict[str, list[np.ndarray]] = {}
    n = len(data)
    for start in range(0, n, batch_size):
        # Fixed batch shape (the last batch wraps around) so one compilation serves all.
        idx = np.arange(start, start + batch_size) % n
        keep = min(batch_size, n - start)
        out = jax.device_get(_errors(graphdef, encoder_config, face, trainable, rest, _batch_to_jax(data, idx)))
        for k, v in out.items():
            acc.setdefault(k, []).append(np.asarray(v)[:keep])
    res = {k: float(np.mean(np.concatenate(v))) for k, v in acc.items()}
    res["shape_rmse"] = float(np.sqrt(res.pop("shape_se")))
    res["expression_rmse"] = float(np.sqrt(res.pop("expression_se")))
    return res


def pretrain(
    config: PretrainConfig = PretrainConfig(),
    encoder_config: encoder_lib.EncoderConfig | None = None,
    *,
    data: PretrainData | None = None,
    val_data: PretrainData | None = None,
    face: fit_lib.FaceModel | None = None,
    encoder: encoder_lib.Encoder | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 200,
) -> PretrainResult:
    """Trains an encoder to regress FLAME parameters of synthetic faces (see the module docstring).

    Args:
      config: data and training settings.
      encoder_config: the architecture (default: the small CPU encoder for the demo head).
      data, val_data: pre-generated examples (default: generated from ``config``).
      face: FLAME model + 68-point embedding the targets refer to (default the demo head).
      encoder: initial weights (default a fresh encoder from ``config.seed``).
      log: optional line logger.
      log_every: steps between log lines / history entries.
    """
    seconds: dict[str, float] = {}
    if face is None:
        face = fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    if encoder_config is None:
        encoder_config = encoder_lib.EncoderConfig.small(
            n_shape=face.flame.num_shape, n_expr=face.flame.num_expression
        )
    t0 = time.perf_counter()
    if data is None:
        data = generate_dataset(config, encoder_size=encoder_config.image_size)
    if val_data is None and config.num_val_clips > 0:
        val_data = generate_dataset(
            config, encoder_size=encoder_config.image_size, num_clips=config.num_val_clips, first_clip=config.num_clips
        )
    seconds["data"] = time.perf_counter() - t0
    if log:
        log(f"pretraining data: {len(data)} images ({seconds['data']:.1f} s)")

    if encoder is None:
        encoder = encoder_lib.init_encoder(encoder_config, seed=config.seed)
    graphdef, trainable, rest = encoder_lib.split_params(encoder, freeze_bn=False)
    trainable = jax.tree.map(jnp.array, trainable)
    rest = jax.tree.map(jnp.array, rest)
    optimizer = optax.adam(_schedule(config))
    opt_state = optimizer.init(trainable)

    def loss_fn(tr, r, batch):
        raw, new_rest = encoder_lib.apply(graphdef, tr, r, batch["images"], update_bn_stats=True)
        total, parts = pretrain_loss(raw, batch, face, encoder_config, config)
        return total, (parts, new_rest)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(tr, r, s, batch):
        (loss, (parts, new_r)), grads = jax.value_and_grad(loss_fn, has_aux=True)(tr, r, batch)
        updates, s = optimizer.update(grads, s, tr)
        return optax.apply_updates(tr, updates), new_r, s, dict(parts, total=loss)

    rng = np.random.default_rng(config.seed)
    n = len(data)
    bs = min(config.batch_size, n)
    history: dict[str, list[float]] = {}
    perm, pos = rng.permutation(n), 0
    t0 = time.perf_counter()
    for it in range(config.num_steps):
        if pos + bs > n:
            perm, pos = rng.permutation(n), 0
        idx = np.sort(perm[pos : pos + bs])
        pos += bs
        trainable, rest, opt_state, parts = step(trainable, rest, opt_state, _batch_to_jax(data, idx))
        if it == 0:
            seconds["compile"] = time.perf_counter() - t0
        if (it + 1) % log_every == 0 or it == config.num_steps - 1:
            vals = {k: float(v) for k, v in jax.device_get(parts).items()}
            for k, v in vals.items():
                history.setdefault(k, []).append(v)
            history.setdefault("step", []).append(it + 1)
            if log:
                log(f"step {it + 1}/{config.num_steps}: " + " ".join(f"{k}={v:.4g}" for k, v in vals.items()))
    jax.block_until_ready(trainable)
    seconds["train"] = time.perf_counter() - t0
    trained = encoder_lib.merge_params(graphdef, trainable, rest)
    validation = {}
    if val_data is not None and len(val_data):
        t0 = time.perf_counter()
        validation = evaluate_encoder(trained, encoder_config, val_data, face)
        validation["untrained"] = evaluate_encoder(
            encoder_lib.init_encoder(encoder_config, seed=config.seed), encoder_config, val_data, face
        )
        seconds["validate"] = time.perf_counter() - t0
        if log:
            log("validation: " + " ".join(f"{k}={v:.4g}" for k, v in validation.items() if not isinstance(v, dict)))
    return PretrainResult(trained, encoder_config, history, validation, seconds)


# --------------------------------------------------------------------------- checkpoints
def save_pretrained(path, result: PretrainResult, config: PretrainConfig, *, overwrite: bool = True) -> Path:
    """Saves the encoder (``encoder.save_encoder``, orbax) plus ``pretrain.json`` (settings, errors, times)."""
    path = Path(path).expanduser().absolute()
    encoder_lib.save_encoder(path, result.encoder, result.encoder_config, overwrite=overwrite)
    summary = {
        "pretrain_config": config.to_dict(),
        "encoder_config": result.encoder_config.to_dict(),
        "validation": result.validation,
        "seconds": result.seconds,
        "history": result.history,
    }
    (path.parent / (path.name + ".pretrain.json")).write_text(json.dumps(summary, indent=2) + "\n")
    return path


def summary_path(path) -> Path:
    """Where ``save_pretrained`` writes the JSON summary of a checkpoint."""
    path = Path(path).expanduser().absolute()
    return path.parent / (path.name + ".pretrain.json")


def packaged_checkpoint() -> Path:
    """The pretrained small encoder shipped inside the package (``annotation.setup.packaged_checkpoint``).

    Its summary (settings, validation errors, seconds) is ``summary_path(packaged_checkpoint())``.

    Raises:
      FileNotFoundError: the package was installed without its data files.
    """
    return starting_lib.packaged_checkpoint(PACKAGED_CHECKPOINT_NAME)


def ensure_pretrained(
    path=None,
    config: PretrainConfig = PretrainConfig(),
    encoder_config: encoder_lib.EncoderConfig | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> tuple[encoder_lib.Encoder, encoder_lib.EncoderConfig, dict[str, Any]]:
    """Loads a pretrained encoder: the packaged one by default.

    Args:
      path: None for ``packaged_checkpoint()`` (never trains); otherwise a checkpoint directory,
        trained with ``config`` / ``encoder_config`` and saved there first if it does not exist.
      config, encoder_config: settings of that training.
      log: optional line logger.

    Returns ``(encoder, encoder_config, summary)`` (the summary of ``save_pretrained``; empty when the
    checkpoint was made elsewhere).
    """
    if path is None:
        path = packaged_checkpoint()
    path = Path(path).expanduser().absolute()
    if not path.is_dir():
        if log:
            log(f"no pretrained encoder at {path}: pretraining one on synthetic data")
        result = pretrain(config, encoder_config, log=log)
        save_pretrained(path, result, config)
    enc, cfg = encoder_lib.load_encoder(path)
    sp = summary_path(path)
    summary = json.loads(sp.read_text()) if sp.is_file() else {}
    return enc, cfg, summary



# =========================================================================== any FLAME-format model
# Per-image synthetic renders (the ranges real video shows), streamed or pooled, trained with a
# mesh-sharded, resumable, optionally bf16 loop; validated on held-out renders and real clips.


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Ranges of the per-image synthetic faces (``render_examples``): what real video shows."""

    yaw_deg: float = setting(70.0, "Head yaw range ±deg (uniform for most images; the rest near frontal).")
    pitch_deg: float = setting(12.0, "Head pitch standard deviation in degrees (clipped at ±2.5 std).")
    roll_deg: float = setting(8.0, "Head roll standard deviation in degrees (clipped at ±2.5 std).")
    shape_std: float = setting(0.8, "Identity coefficients' standard deviation.")
    expression_std: float = setting(0.8, "Expression coefficients' standard deviation (first component; "
                                    "decays as 1/sqrt(1+i)).")
    jaw_open_max_rad: float = setting(0.45, "Widest jaw opening (rad).")
    blink_probability: float = setting(0.3, "Images with the eyes (partly) closed (demo head: its blink "
                                       "component).")
    head_fill: tuple[float, float] = setting((0.35, 0.6), "Head width as a fraction of the render.", cli=False)
    render_scale: float = setting(1.6, "Render side as a multiple of the encoder's input side.")
    detector_noise: float = setting(0.012, "Landmark noise (fraction of the face size) before the crop box.")
    box_shift: float = setting(0.03, "Crop-box centre jitter (fraction of the box side).")
    box_scale: float = setting(0.05, "Crop-box side jitter (log-normal standard deviation).")
    augment: augment_lib.AugmentConfig = setting(augment_lib.AugmentConfig(), "Image augmentations.", cli=False)


@dataclasses.dataclass(frozen=True, eq=False)
class RenderAssets:
    """What rendering a model needs, built once: the model, its 68-point embedding, triangles,
    albedo variants, which vertices are skin (tinted by the skin tone) and the demo head's blink and
    lip components (None / () for other models)."""

    face: fit_lib.FaceModel
    faces: np.ndarray
    albedos: tuple[np.ndarray, ...]
    skin: np.ndarray
    blink_component: int | None
    speech_components: tuple[int, ...]

    @staticmethod
    def build(face: fit_lib.FaceModel, *, num_albedos: int = 4, demo_head: bool | None = None) -> "RenderAssets":
        model = face.flame
        if demo_head is None:
            demo_head = model.name == flame_jax.demo_model().name
        names = list(flame_jax.demo.DEMO_EXPRESSION_NAMES) if demo_head else []
        blink = names.index("blink") if "blink" in names else None
        speech = tuple(names.index(k) for k in ("lips_apart", "pucker") if k in names)
        albedos = tuple(synth_lib.procedural_albedo(model, face.embedding, seed=i) for i in range(num_albedos))
        eyes = np.asarray(model.lbs_weights)[:, 3:5].max(-1) > 0.5
        return RenderAssets(face=face, faces=np.asarray(model.faces), albedos=albedos, skin=~eyes,
                            blink_component=blink, speech_components=speech)


def sample_parameters(
    rng: np.random.Generator, assets: RenderAssets, config: RenderConfig, n: int
) -> dict[str, np.ndarray]:
    """``n`` random faces: identity, expression (blinks and the lip components of the demo head), jaw,
    gaze and head pose (yaw uniform in ±``yaw_deg`` for 80 % of images, near frontal otherwise)."""
    model = assets.face.flame
    ns, ne = model.num_shape, model.num_expression
    shape = rng.normal(size=(n, ns)) * config.shape_std
    expr = rng.normal(size=(n, ne)) * config.expression_std / np.sqrt(1.0 + np.arange(ne))
    expr *= rng.uniform(0.3, 1.5, size=(n, 1))  # neutral-ish to strong faces
    jaw = np.where(rng.random(n) < 0.5, rng.uniform(0, config.jaw_open_max_rad, n), rng.uniform(0, 0.06, n))
    for i, c in enumerate(assets.speech_components):
        expr[:, c] += (1.0 if i % 2 == 0 else -0.6) * rng.uniform(-0.3, 1.6, n)
    if assets.blink_component is not None:
        b = assets.blink_component
        closed = rng.random(n) < config.blink_probability
        expr[:, b] = np.where(closed, rng.uniform(1.2, 2.7, n), expr[:, b] * 0.2)
    clip = lambda x, sd: np.clip(x, -2.5 * sd, 2.5 * sd)  # noqa: E731
    yaw = np.where(rng.random(n) < 0.8, rng.uniform(-config.yaw_deg, config.yaw_deg, n), rng.normal(size=n) * 10.0)
    pitch = clip(rng.normal(size=n) * config.pitch_deg, config.pitch_deg)
    roll = clip(rng.normal(size=n) * config.roll_deg, config.roll_deg)
    pose = np.zeros((n, 15))
    pose[:, 0:3] = Rotation.from_euler("YXZ", np.stack([yaw, pitch, roll], 1), degrees=True).as_rotvec()
    pose[:, 6] = jaw
    pose[:, 9:11] = rng.normal(size=(n, 2)) * 0.12  # gaze: both eyes turn together (x: down, y: sideways)
    pose[:, 12:14] = pose[:, 9:11]
    return {"shape": shape.astype(np.float32), "expression": expr.astype(np.float32), "pose": pose.astype(np.float32)}


@jax.jit
def _pose_batch(face: fit_lib.FaceModel, faces, shape, expression, pose):
    out = flame_jax.forward(face.flame, shape=shape, expression=expression, pose=pose)
    lmk = flame_jax.landmarks(face.flame, face.embedding, out.vertices, pose)
    normals = jax.vmap(lambda v: flame_jax.vertex_normals(v, faces))(out.vertices)
    return out.vertices, lmk, normals


def render_examples(
    assets: RenderAssets,
    config: RenderConfig,
    seed: np.random.SeedSequence | int,
    n: int,
    encoder_size: int,
) -> PretrainData:
    """``n`` supervised examples rendered from scratch, a deterministic function of ``seed``.

    Each image: random parameters (``sample_parameters``), a pinhole camera at a random distance
    and head size, random light, albedo variant and skin tone, a cluttered background, then the
    augmentations of ``config.augment`` (occluders, colour, blur, noise, JPEG) on the render; the
    crop box comes from noisy landmarks (a detector) jittered by ``jitter_boxes`` and is warped to
    ``encoder_size``. Targets are the true parameters and the true landmarks in that crop.
    """
    rng = np.random.default_rng(seed)
    params = sample_parameters(rng, assets, config, n)
    verts, lmk3d, normals = jax.device_get(_pose_batch(
        assets.face, jnp.asarray(assets.faces), jnp.asarray(params["shape"]), jnp.asarray(params["expression"]),
        jnp.asarray(params["pose"]),
    ))
    size = max(32, int(round(encoder_size * config.render_scale)))
    head_width = float(np.ptp(np.asarray(assets.face.flame.v_template)[:, 0]))
    images = np.zeros((n, encoder_size, encoder_size, 3), np.uint8)
    lmk_norm = np.zeros((n, lmk3d.shape[1], 2), np.float32)
    flip = np.array([1.0, -1.0, -1.0])
    for i in range(n):
        distance = float(rng.uniform(0.6, 2.0))
        focal = float(rng.uniform(*config.head_fill)) * size * distance / head_width
        principal = np.array([size / 2.0, size / 2.0]) + rng.uniform(-0.08, 0.08, 2) * size
        screen = synth_lib.project_points(verts[i], focal, principal, distance)
        skin = augment_lib.skin_color(rng) / np.array([0.87, 0.68, 0.56])
        albedo = assets.albedos[int(rng.integers(len(assets.albedos)))].copy()
        albedo[assets.skin] = np.clip(albedo[assets.skin] * skin, 0, 1)
        light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.5), -1.0])
        background = augment_lib.random_background(rng, size, size)
        rendering = render_lib.render(
            screen, assets.faces, albedo, height=size, width=size, normals=normals[i] * flip,
            light_direction=light, ambient=float(rng.uniform(0.2, 0.5)), diffuse=float(rng.uniform(0.5, 0.9)),
            background=background, perspective_correct=True, cull_backfaces=True,
        )
        true2d = synth_lib.project_points(lmk3d[i], focal, principal, distance)[:, :2]
        image, _ = augment_lib.augment(render_lib.to_uint8(rendering.image), true2d, rng, config.augment)
        face_size = float(np.ptp(true2d, axis=0).max())
        detected = true2d + rng.normal(size=true2d.shape) * config.detector_noise * face_size
        box = augment_lib.jitter_boxes(crops_lib.landmark_boxes(detected), rng, shift=config.box_shift,
                                       scale=config.box_scale)
        m = crops_lib.box_to_transform(box, encoder_size)
        images[i] = crops_lib.warp_crop(image, m, encoder_size)
        lmk_norm[i] = crops_lib.to_normalized(crops_lib.apply_transform(true2d, m), encoder_size)
    model_frame = lmk3d.astype(np.float64)
    return PretrainData(
        images=images, landmarks=lmk_norm, shape=params["shape"], expression=params["expression"],
        pose=params["pose"], cam=fit_weak_perspective(model_frame, lmk_norm),
        clip_index=np.full((n,), -1, np.int32),
    )


def _seed(base: int, stream: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(base), int(stream), int(index)])


#: Seed streams: training batches / pool shards, and the held-out validation renders.
TRAIN_STREAM, VALIDATION_STREAM = 0, 1


class SyntheticStream:
    """Training batches as a pure function of the step: ``batch(step)``.

    ``pool_images == 0`` streams: every step renders ``batch_size`` new images (seeded by the step),
    ``workers`` threads render ahead of the training loop, nothing else is held in memory. With
    ``pool_images > 0`` that many images are rendered once (in shards of ``batch_size``, seeded by
    the shard index) and each step draws a batch from the pool (seeded by the step): the CPU preset,
    where rendering costs more than a training step. Either way a resumed run sees the same batches.
    """

    def __init__(self, assets: RenderAssets, config: RenderConfig, *, encoder_size: int, batch_size: int,
                 seed: int, pool_images: int = 0, workers: int = 1, prefetch: int = 4, progress=None):
        self.assets, self.config = assets, config
        self.encoder_size, self.batch_size, self.seed = int(encoder_size), int(batch_size), int(seed)
        self.workers, self.prefetch = max(1, int(workers)), max(1, int(prefetch))
        self._pool: PretrainData | None = None
        self._pending: dict[int, Any] = {}
        self._executor = None
        if pool_images > 0:
            shards = -(-int(pool_images) // self.batch_size)
            parts = []
            for k, part in enumerate(self._map(self._render, range(shards))):
                parts.append(part)
                if progress is not None:
                    progress(k + 1, shards)
            self._pool = PretrainData.concatenate(parts)

    def _map(self, fn, items):
        """``map`` on the rendering threads (in order), or in this thread with one worker."""
        if self.workers == 1:
            return map(fn, items)
        return self._pool_executor().map(fn, items)

    def _pool_executor(self):
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="pretrain-render")
        return self._executor

    def _render(self, index: int) -> PretrainData:
        return render_examples(self.assets, self.config, _seed(self.seed, TRAIN_STREAM, index), self.batch_size,
                               self.encoder_size)

    def batch(self, step: int) -> PretrainData:
        if self._pool is not None:
            idx = np.random.default_rng(_seed(self.seed, 2, step)).choice(len(self._pool), self.batch_size,
                                                                          replace=False)
            return self._pool.subset(np.sort(idx))
        if self.workers == 1 and self.prefetch <= 1:
            return self._render(step)
        executor = self._pool_executor()
        for s in range(step, step + self.prefetch):
            if s not in self._pending:
                self._pending[s] = executor.submit(self._render, s)
        for s in [s for s in self._pending if s < step]:
            self._pending.pop(s).cancel()
        return self._pending.pop(step).result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def validation_renders(assets: RenderAssets, config: RenderConfig, *, encoder_size: int, num_images: int,
                       seed: int, shard: int = 64) -> PretrainData:
    """Held-out renders (their own seed stream, never a training batch)."""
    parts = [render_examples(assets, config, _seed(seed, VALIDATION_STREAM, k), min(shard, num_images - k * shard),
                             encoder_size) for k in range(-(-num_images // shard))]
    return PretrainData.concatenate(parts)


# --------------------------------------------------------------------------- real clips
def yaw_pitch_deg(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Yaw and pitch (degrees) of rotations ``[..., 3, 3]`` in the FLAME frame (y up, face toward +z)."""
    f = np.asarray(r)[..., :, 2]
    return np.degrees(np.arctan2(f[..., 0], f[..., 2])), np.degrees(np.arcsin(np.clip(f[..., 1], -1, 1)))


#: FLAME frame (y up, z toward the camera) ↔ image frame (y down, z away).
_FLIP = np.diag([1.0, -1.0, -1.0])


@dataclasses.dataclass
class RealClip:
    """A real clip prepared for evaluating raw encoder predictions against MediaPipe.

    ``images`` uint8 [T, S, S, 3] encoder crops (the reference box recipe on MediaPipe's iBUG-68
    points, as annotate places them); ``landmarks`` [T, 68, 2] MediaPipe's points in normalized
    crop coordinates; ``visible`` [T, 68] (not a far-side guess); ``yaw_deg`` [T] MediaPipe's head
    yaw (``landmark_sets.head_rotation``: its 3D points fitted to the canonical face).
    """

    name: str
    images: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray
    yaw_deg: np.ndarray


def prepare_real_clip(path, *, encoder_size: int, frames=None, model_path=None, cache_dir=None,
                      name: str | None = None) -> RealClip:
    """Decodes a video, detects MediaPipe landmarks (cached like annotate's) and cuts the crops.

    Raises:
      detect.NoFaceError / video.VideoError / ValueError: naming the clip.
    """
    src = sources_lib.open_source(path, frames=frames)
    det = detect_lib.decode_and_detect(src, model_path=model_path, cache_dir=cache_dir)
    lm = det.landmarks[0]
    valid = lm.valid
    if not valid.any():
        raise detect_lib.NoFaceError(f"{path}: MediaPipe found no face in the selected frames")
    pts68 = landmark_sets.mediapipe_to_ibug68(lm.xy.astype(np.float64))[valid]
    vis68 = lm.visible[:, landmark_sets.MEDIAPIPE_TO_IBUG68][valid]
    r_img, _, _ = landmark_sets.head_rotation(lm.points[valid])
    yaw, _ = yaw_pitch_deg(_FLIP @ r_img @ _FLIP)
    boxes = crops_lib.landmark_boxes(pts68)
    ms = crops_lib.boxes_to_transforms(boxes, encoder_size)
    frames_img = det.images[valid, 0]
    images = np.stack([crops_lib.warp_crop(f, m, encoder_size) for f, m in zip(frames_img, ms)])
    lmk = crops_lib.to_normalized(crops_lib.apply_transform(pts68, ms), encoder_size)
    return RealClip(name=name or Path(str(path)).stem, images=images, landmarks=lmk.astype(np.float32),
                    visible=vis68.astype(bool), yaw_deg=yaw.astype(np.float32))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict(graphdef, encoder_config, face, trainable, rest, images):
    raw = encoder_lib.apply(graphdef, trainable, rest, images)
    p = encoder_lib.decode_outputs(raw, encoder_config)
    _, lmk2d, _ = fit_lib.evaluate_params(face, p.shape, p.expression, p.pose, p.cam)
    return lmk2d, p.pose[:, 0:3]


def real_clip_errors(encoder, encoder_config, face: fit_lib.FaceModel, clip: RealClip, *, batch_size: int = 32,
                     turned_deg: float = 25.0) -> dict[str, float]:
    """Raw-prediction errors of an encoder on a real clip (no optimization).

    ``nme_percent``: mean distance of the predicted 68 landmarks to MediaPipe's visible ones over the
    outer-eye-corner distance (iBUG 36–45), ×100; ``nme_inner_percent`` without the 17 jaw-contour
    points (MediaPipe's lie on the face surface, not the silhouette); ``yaw_error_deg`` mean
    |predicted − MediaPipe yaw|, ``yaw_slope`` the least-squares slope of predicted on MediaPipe yaw
    (1 = turns as far, < 1 under-rotates) and ``turned_yaw_error_deg`` on frames turned past
    ``turned_deg``.
    """
    graphdef, trainable, rest = encoder_lib.split_params(encoder, freeze_bn=True)
    n = len(clip.images)
    preds, rots = [], []
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n
        lmk, rot = jax.device_get(_predict(graphdef, encoder_config, face, trainable, rest,
                                           jnp.asarray(clip.images[idx], jnp.float32) / 255.0))
        keep = min(batch_size, n - start)
        preds.append(lmk[:keep])
        rots.append(rot[:keep])
    pred = np.concatenate(preds).astype(np.float64)
    rot = np.concatenate(rots).astype(np.float64)
    det = clip.landmarks.astype(np.float64)
    iod = np.linalg.norm(det[:, 36] - det[:, 45], axis=-1)
    err = np.linalg.norm(pred - det, axis=-1)
    vis = clip.visible

    def nme(mask):
        with np.errstate(invalid="ignore", divide="ignore"):
            per = (err * mask).sum(-1) / mask.sum(-1) / iod
        return float(100 * np.nanmean(per))

    inner = vis.copy()
    inner[:, :17] = False
    yaw_pred, _ = yaw_pitch_deg(np.asarray(flame_jax.axis_angle_to_matrix(rot)))
    yaw_mp = clip.yaw_deg.astype(np.float64)
    dy = np.abs(yaw_pred - yaw_mp)
    turned = np.abs(yaw_mp) > turned_deg
    return {
        "frames": int(n),
        "nme_percent": nme(vis),
        "nme_inner_percent": nme(inner),
        "yaw_error_deg": float(dy.mean()),
        "yaw_slope": float(np.sum(yaw_pred * yaw_mp) / max(np.sum(yaw_mp ** 2), 1e-9)),
        "turned_frames": int(turned.sum()),
        "turned_yaw_error_deg": float(dy[turned].mean()) if turned.any() else float("nan"),
        "mediapipe_yaw_range_deg": [float(yaw_mp.min()), float(yaw_mp.max())],
    }


# --------------------------------------------------------------------------- resumable training
@dataclasses.dataclass(frozen=True)
class SyntheticPretrainConfig:
    """Settings of ``train_prior`` (each is a ``neuface-jax pretrain`` flag)."""

    num_steps: int = setting(800, "Optimizer steps.")
    batch_size: int = setting(64, "Images per step (all devices together; a multiple of the device count).")
    learning_rate: float = setting(2e-3, "Peak Adam learning rate (linear warm-up, cosine decay).")
    warmup_steps: int = setting(100, "Warm-up steps.")
    seed: int = setting(0, "Seed of the initialization, the renders and the batch order.")
    pool_images: int = setting(4096, "Images rendered once and drawn from at every step (0 = render every "
                               "batch on the fly: large runs).")
    workers: int = setting(2, "Threads rendering batches ahead when streaming (--pool_images=0).")
    val_images: int = setting(256, "Held-out renders for the validation errors.")
    checkpoint_every: int = setting(200, "Steps between training-state checkpoints (for --resume).")
    log_every: int = setting(100, "Steps between progress lines.")
    bf16: bool = setting(False, "Backbone in bfloat16 (GPU/TPU); parameters, head and loss stay float32.")
    init: str = setting("", "Start from this encoder checkpoint instead of random weights (fine-tuning).")

    def loss_config(self) -> PretrainConfig:
        """The ``PretrainConfig`` carrying this run's optimizer settings (its loss weights are the defaults)."""
        return PretrainConfig(num_steps=self.num_steps, batch_size=self.batch_size, learning_rate=self.learning_rate,
                              warmup_steps=self.warmup_steps, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return synth_lib._jsonable(dataclasses.asdict(self))


#: Presets of ``neuface-jax pretrain --preset``: overrides of ``SyntheticPretrainConfig`` defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(num_steps=4, batch_size=4, pool_images=8, val_images=4, checkpoint_every=2, log_every=1,
                 warmup_steps=1, workers=1),
    "cpu": {},
    "gpu": dict(num_steps=60000, batch_size=128, learning_rate=1e-3, warmup_steps=1000, pool_images=0, workers=8,
                val_images=1024, checkpoint_every=2000, log_every=500, bf16=True),
}


def state_path(out) -> Path:
    """Where ``train_prior`` keeps its resumable training state: ``<out>.state/`` beside the checkpoint."""
    out = Path(out).expanduser().absolute()
    return out.parent / (out.name + ".state")


class _TrainState:
    """Orbax checkpoints of (trainable, rest, optimizer state) as a flat dict of leaves, plus the run's
    settings in ``run.json`` so a resume under other settings is refused."""

    def __init__(self, root: Path, key: dict[str, Any]):
        # orbax is imported when a run checkpoints (the library's other paths never need it).
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.root = root
        self.key = key
        root.mkdir(parents=True, exist_ok=True)
        self.manager = ocp.CheckpointManager(root / "steps", options=ocp.CheckpointManagerOptions(max_to_keep=2,
                                                                                                   create=True))

    def check_key(self) -> None:
        run = self.root / "run.json"
        if run.is_file():
            old, new = json.loads(run.read_text()), json.loads(json.dumps(self.key))
            if old != new:
                diff = sorted(
                    f"{k}.{j}" if isinstance(old.get(k), dict) and isinstance(new.get(k), dict) else k
                    for k in set(old) | set(new) if old.get(k) != new.get(k)
                    for j in (set(old[k]) | set(new[k]) if isinstance(old.get(k), dict) and isinstance(new.get(k), dict)
                              else [None])
                    if j is None or old[k].get(j) != new[k].get(j)
                )
                raise ValueError(f"{self.root}: the saved training state was made with other settings "
                                 f"({', '.join(diff)}); "
                                 "resume with the same flags or remove the folder")
        else:
            atomic_write_text(run, json.dumps(self.key, indent=1, sort_keys=True) + "\n")

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state) -> None:
        flat = {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(state))}
        self.manager.save(int(step), args=self.ocp.args.StandardSave(flat))
        self.manager.wait_until_finished()

    def restore(self, step: int, template):
        leaves, treedef = jax.tree.flatten(template)
        flat = {f"{i:05d}": leaf for i, leaf in enumerate(leaves)}
        got = self.manager.restore(int(step), args=self.ocp.args.StandardRestore(flat))
        return jax.tree.unflatten(treedef, [got[f"{i:05d}"] for i in range(len(leaves))])

    def close(self) -> None:
        self.manager.close()


def _jax_batch(data: PretrainData, sharding) -> dict[str, jax.Array]:
    host = {
        "images": data.images.astype(np.float32) / 255.0, "landmarks": data.landmarks, "shape": data.shape,
        "expression": data.expression, "pose": data.pose, "cam": data.cam,
    }
    return jax.device_put(host, sharding)


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(4,))
def _train_step(graphdef, encoder_config, loss_cfg: PretrainConfig, face, state, batch):
    """One Adam step of ``train_prior`` on a (possibly sharded) batch; compiled once per settings and shape."""
    trainable, rest, opt_state = state
    optimizer = optax.adam(_schedule(loss_cfg))

    def loss_fn(tr):
        raw, new_rest = encoder_lib.apply(graphdef, tr, rest, batch["images"], update_bn_stats=True)
        total, parts = pretrain_loss(raw.astype(jnp.float32), batch, face, encoder_config, loss_cfg)
        return total, (parts, new_rest)

    (loss, (parts, new_rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    new_rest = jax.tree.map(lambda a, b: a.astype(b.dtype), new_rest, rest)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return (optax.apply_updates(trainable, updates), new_rest, opt_state), dict(parts, total=loss)


def step_throughput(
    encoder_config: encoder_lib.EncoderConfig,
    face: fit_lib.FaceModel,
    data: PretrainData,
    *,
    bf16: bool = False,
    steps: int = 10,
    warmup: int = 2,
    devices=None,
) -> dict[str, float]:
    """Images per second of ``train_prior``'s training step on ``data`` (one batch, reused: the device's
    speed, not the renderer's), the batch sharded over ``devices`` as in training.

    Returns ``images_per_s``, ``step_ms``, ``compile_s`` and the batch size.
    """
    mesh = parallel_lib.make_mesh("data", devices)
    if len(data) % mesh.size:
        raise ValueError(f"a batch of {len(data)} images does not split over {mesh.size} devices")
    train_cfg = dataclasses.replace(encoder_config, dtype="bfloat16" if bf16 else "float32")
    loss_cfg = PretrainConfig(num_steps=max(steps + warmup, 2), batch_size=len(data), warmup_steps=1)
    graphdef, trainable, rest = encoder_lib.split_params(encoder_lib.init_encoder(train_cfg), freeze_bn=False)
    state = jax.device_put((trainable, rest, optax.adam(_schedule(loss_cfg)).init(trainable)),
                           NamedSharding(mesh, PartitionSpec()))
    batch = _jax_batch(data, NamedSharding(mesh, PartitionSpec("data")))
    t0 = time.perf_counter()
    state, parts = _train_step(graphdef, encoder_config, loss_cfg, face, state, batch)
    jax.block_until_ready(parts)
    compile_s = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        state, parts = _train_step(graphdef, encoder_config, loss_cfg, face, state, batch)
    jax.block_until_ready(parts)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, parts = _train_step(graphdef, encoder_config, loss_cfg, face, state, batch)
    jax.block_until_ready((state, parts))
    dt = (time.perf_counter() - t0) / steps
    if not np.isfinite(float(parts["total"])):
        raise FloatingPointError("the training step's loss is not finite")
    return {"images_per_s": len(data) / dt, "step_ms": 1000 * dt, "compile_s": compile_s, "batch_size": len(data),
            "devices": mesh.size, "dtype": train_cfg.dtype}


def train_prior(
    out,
    run: SyntheticPretrainConfig = SyntheticPretrainConfig(),
    render: RenderConfig = RenderConfig(),
    *,
    face: fit_lib.FaceModel | None = None,
    encoder_config: encoder_lib.EncoderConfig | None = None,
    resume: bool = False,
    real_clips: tuple[RealClip, ...] = (),
    devices=None,
    progress=None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Trains an encoder prior for ``face`` (default the demo head) on synthetic renders and saves it.

    Writes the encoder checkpoint at ``out`` (``encoder.load_encoder`` reads it), its summary at
    ``summary_path(out)`` (settings, held-out and real-clip errors, seconds, history) and the
    resumable training state under ``state_path(out)`` every ``run.checkpoint_every`` steps.
    ``resume=True`` continues from the last saved step (same settings required); batches are a
    function of the step, so a resumed run trains on what an uninterrupted one would.

    The batch is sharded over a 1-D device mesh (``parallel.make_mesh("data")``), the weights
    replicated: data parallelism with the gradient all-reduce inserted by XLA.

    Returns the summary dict.
    """
    log = log or (lambda s: None)
    seconds: dict[str, float] = {}
    out = Path(out).expanduser().absolute()
    if face is None:
        face = fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    if encoder_config is None:
        encoder_config = starting_lib.default_encoder_config(face.flame)
    starting_lib.check_fits(encoder_config, face.flame, what="the encoder to pretrain")
    mesh = parallel_lib.make_mesh("data", devices)
    if run.batch_size % mesh.size:
        raise ValueError(f"--batch_size {run.batch_size} is not a multiple of the {mesh.size} devices")
    data_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    train_cfg = dataclasses.replace(encoder_config, dtype="bfloat16" if run.bf16 else "float32")
    loss_cfg = run.loss_config()

    t0 = time.perf_counter()
    assets = RenderAssets.build(face)
    pool_bar = None if progress is None or not run.pool_images else progress(
        "rendering the image pool", -(-run.pool_images // run.batch_size))
    stream = SyntheticStream(assets, render, encoder_size=encoder_config.image_size, batch_size=run.batch_size,
                             seed=run.seed, pool_images=run.pool_images, workers=run.workers,
                             progress=None if pool_bar is None else pool_bar.set)
    if pool_bar is not None:
        pool_bar.close()
    val = validation_renders(assets, render, encoder_size=encoder_config.image_size, num_images=run.val_images,
                             seed=run.seed) if run.val_images > 0 else None
    seconds["data"] = time.perf_counter() - t0

    if run.init:
        start_enc, start_cfg = starting_lib.load_checkpoint(run.init, face.flame)
        if dataclasses.replace(start_cfg, dtype=train_cfg.dtype) != train_cfg:
            raise ValueError(f"--init {run.init}: its encoder ({start_cfg.arch}, {start_cfg.image_size} px, "
                             f"{start_cfg.n_shape}/{start_cfg.n_expr}) differs from the one to train")
        _, trainable, rest = encoder_lib.split_params(start_enc, freeze_bn=False)
        graphdef = encoder_lib.split_params(encoder_lib.init_encoder(train_cfg, seed=run.seed), freeze_bn=False)[0]
    else:
        graphdef, trainable, rest = encoder_lib.split_params(encoder_lib.init_encoder(train_cfg, seed=run.seed),
                                                             freeze_bn=False)
    optimizer = optax.adam(_schedule(loss_cfg))
    state = jax.device_put((trainable, rest, optimizer.init(trainable)), replicated)

    # What decides the trained weights (a resume must match it); logging, threads and validation do not.
    key = {"run": {k: v for k, v in run.to_dict().items()
                   if k not in ("log_every", "workers", "val_images", "checkpoint_every")},
           "render": synth_lib._jsonable(dataclasses.asdict(render)), "encoder": encoder_config.to_dict(),
           "model": face.flame.name}
    ckpt = _TrainState(state_path(out), key)
    first = 0
    if resume:
        ckpt.check_key()
        latest = ckpt.latest()
        if latest is not None:
            state = jax.device_put(ckpt.restore(latest, state), replicated)
            first = int(latest)
            log(f"resuming from step {first} ({state_path(out)})")
        else:
            log(f"--resume: no saved state under {state_path(out)}, starting at step 0")
    else:
        if ckpt.latest() is not None:
            shutil.rmtree(ckpt.root / "steps", ignore_errors=True)
            ckpt.close()
            (ckpt.root / "run.json").unlink(missing_ok=True)
            ckpt = _TrainState(state_path(out), key)
        ckpt.check_key()

    history: dict[str, list[float]] = {}
    bar = None if progress is None else progress("pretraining", run.num_steps)
    if bar is not None:
        bar.set(first, run.num_steps)
    t0 = time.perf_counter()
    t_data = 0.0
    try:
        for it in range(first, run.num_steps):
            td = time.perf_counter()
            batch = _jax_batch(stream.batch(it), data_sharding)
            t_data += time.perf_counter() - td
            state, parts = _train_step(graphdef, encoder_config, loss_cfg, face, state, batch)
            if it == first:
                jax.block_until_ready(parts)
                seconds["compile"] = time.perf_counter() - t0
            done = it + 1
            if done % run.log_every == 0 or done == run.num_steps:
                vals = {k: float(v) for k, v in jax.device_get(parts).items()}
                for k, v in vals.items():
                    history.setdefault(k, []).append(v)
                history.setdefault("step", []).append(done)
                log(f"step {done}/{run.num_steps}: " + " ".join(f"{k}={v:.4g}" for k, v in vals.items()))
            if run.checkpoint_every and (done % run.checkpoint_every == 0 or done == run.num_steps):
                ckpt.save(done, state)
            if bar is not None:
                bar.update(1)
        jax.block_until_ready(state)
    finally:
        stream.close()
        ckpt.close()
        if bar is not None:
            bar.close()
    seconds["train"] = time.perf_counter() - t0
    seconds["train_data_wait"] = t_data
    trainable, rest, _ = jax.device_get(state)
    trained = encoder_lib.merge_params(encoder_lib.split_params(
        encoder_lib.init_encoder(encoder_config, seed=run.seed), freeze_bn=False)[0], trainable, rest)

    t0 = time.perf_counter()
    validation: dict[str, Any] = {}
    if val is not None:
        validation = evaluate_encoder(trained, encoder_config, val, face)
        log("held-out renders: " + " ".join(f"{k}={v:.4g}" for k, v in validation.items()))
    real = {c.name: real_clip_errors(trained, encoder_config, face, c) for c in real_clips}
    for name, r in real.items():
        log(f"real clip {name}: NME {r['nme_percent']:.2f} % (inner {r['nme_inner_percent']:.2f} %), yaw error "
            f"{r['yaw_error_deg']:.1f} deg (turned {r['turned_yaw_error_deg']:.1f}), slope {r['yaw_slope']:.2f}")
    seconds["validate"] = time.perf_counter() - t0

    encoder_lib.save_encoder(out, trained, encoder_config, overwrite=True)
    summary = {
        "kind": "synthetic-prior",
        "model": face.flame.name,
        "run": run.to_dict(),
        "render": key["render"],
        "encoder_config": encoder_config.to_dict(),
        "devices": [str(d) for d in mesh.devices.flat],
        "resumed_from_step": first,
        "validation": validation,
        "real_clips": real,
        "seconds": seconds,
        "history": history,
    }
    atomic_write_text(summary_path(out), json.dumps(summary, indent=1, allow_nan=True) + "\n")
    return summary


__all__ = [
    "DEFAULT_SEED_OFFSET",
    "PRESETS",
    "RealClip",
    "RenderAssets",
    "RenderConfig",
    "SyntheticPretrainConfig",
    "SyntheticStream",
    "prepare_real_clip",
    "real_clip_errors",
    "render_examples",
    "sample_parameters",
    "state_path",
    "step_throughput",
    "train_prior",
    "validation_renders",
    "yaw_pitch_deg",
    "PACKAGED_CHECKPOINT_NAME",
    "RETRAINED_CHECKPOINT",
    "PretrainConfig",
    "PretrainData",
    "PretrainResult",
    "clip_to_examples",
    "ensure_pretrained",
    "evaluate_encoder",
    "fit_weak_perspective",
    "generate_dataset",
    "packaged_checkpoint",
    "pretrain",
    "pretrain_loss",
    "random_rig",
    "save_pretrained",
    "summary_path",
]
