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

Example::

    from neuface_jax.synthetic import pretrain
    enc, cfg, info = pretrain.ensure_pretrained()          # the shipped checkpoint
    result = fit.NeuFace(face, cfg, fit_config).fit(clip_data, encoder=enc)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import flame_jax
from neuface_jax.priors import starting as starting_lib
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.media import crops as crops_lib
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


__all__ = [
    "DEFAULT_SEED_OFFSET",
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
