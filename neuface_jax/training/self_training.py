"""Self-training: fine-tune an encoder on real frames labelled by this project's own annotations.

NeuFace's per-clip optimization makes labels — per-frame FLAME parameters and cameras that explain the
detected landmarks, smooth in time and consistent across views — better than the encoder it started from
predicts them. Training the encoder on those labels (the NeuFace paper fine-tunes DECA on its own
dataset the same way) gives a prior that has seen real faces, which the synthetic-only prior never has.

Data: ``labels.load_labelled_frames`` (the crops rebuilt from the videos with the saved crop transforms).
Targets per frame: the fitted identity, expression, full pose and camera, the fitted mesh (vertex term)
and the **detected** landmarks (the landmark term, L1 in normalized crop units through the predicted mesh
and camera, as DECA's); points MediaPipe did not see take the fitted mesh's own landmark as their target,
so they pull toward the label rather than toward nothing.

Training is ``synthetic.pretrain.pretrain`` itself — the same losses (``pretrain_loss``), optimizer,
schedule, BatchNorm handling and validation (``evaluate_encoder``) as the synthetic pretraining — on these
examples (``to_pretrain_data``), starting from any checkpoint ``load_encoder`` reads. Validation is on
**whole held-out clips** (``SelfTrainConfig.val_clips``): frames of a clip seen in training say nothing
about new faces. ``raw_predictions`` / ``raw_metrics`` score an encoder's raw output (no optimization) on
labelled frames: NME against the detected landmarks, head yaw against the labels, and the label errors.

The result is an ordinary encoder checkpoint (orbax, ``encoder.save_encoder``) with its summary beside it
(``pretrain.summary_path``): ``neuface-jax annotate --encoder DIR`` takes it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import flame_jax
from neuface_jax.annotation.face import resolve_face_model
from neuface_jax.common.atomic import atomic_write
from neuface_jax.common.settings import setting
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.params import DEMO_KIND
from neuface_jax.priors import starting as starting_lib
from neuface_jax.synthetic import pretrain as pretrain_lib
from neuface_jax.training import labels as labels_lib

__all__ = [
    "SelfTrainConfig",
    "eye_openness",
    "face_for",
    "frame_nme",
    "mouth_opening",
    "raw_metrics",
    "raw_predictions",
    "split_clips",
    "to_pretrain_data",
    "train_encoder",
    "yaw_pitch_deg",
]

logger = logging.getLogger(__name__)

#: Name of the self-training block in the checkpoint's summary JSON.
SUMMARY_KEY = "self_training"


@dataclasses.dataclass(frozen=True)
class SelfTrainConfig:
    """Settings of ``train_encoder`` (defaults: a CPU-sized fine-tuning of the small encoder)."""

    steps: int = setting(300, "Training steps (Adam, warm-up then cosine decay).")
    batch_size: int = setting(32, "Frames per step.")
    learning_rate: float = setting(3e-4, "Peak learning rate (a fine-tuning rate: the start is already trained).",
                                   flag="lr")
    warmup_steps: int = setting(30, "Linear warm-up steps.")
    weight_landmark: float = setting(10.0, "Landmark L1 (detected points through the predicted mesh and camera).")
    weight_vertex: float = setting(100.0, "Vertex L1 against the labelled mesh (metres, model frame).")
    weight_pose: float = setting(10.0, "Head and jaw rotation squared error against the labels.")
    weight_expression: float = setting(1.0, "Expression squared error against the labels.")
    weight_shape: float = setting(1.0, "Identity squared error against the labels.")
    weight_cam: float = setting(0.1, "Camera squared error against the labels (scale /10, translation in cm).")
    frame_stride: int = setting(1, "Use every k-th annotated frame.")
    max_frames: int = setting(0, "At most this many frames per clip, evenly spread (0: all).")
    val_clips: tuple[str, ...] = setting((), "Clip ids (annotation folder names) held out, whole, for validation.")
    seed: int = setting(0, "Batch order.")

    def __post_init__(self):
        for name in ("steps", "batch_size", "frame_stride"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.max_frames) < 0 or int(self.warmup_steps) < 0:
            raise ValueError(f"max_frames and warmup_steps must be >= 0, got {self.max_frames}, {self.warmup_steps}")
        if not float(self.learning_rate) > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        object.__setattr__(self, "val_clips", tuple(str(c) for c in (self.val_clips or ()) if str(c)))

    def pretrain_config(self) -> pretrain_lib.PretrainConfig:
        """The ``PretrainConfig`` of the training loop (no synthetic data: ``num_clips``/``num_val_clips`` 0)."""
        return pretrain_lib.PretrainConfig(
            num_clips=0, num_val_clips=0, num_steps=int(self.steps), batch_size=int(self.batch_size),
            learning_rate=float(self.learning_rate), warmup_steps=int(self.warmup_steps),
            weight_shape=float(self.weight_shape), weight_expression=float(self.weight_expression),
            weight_pose=float(self.weight_pose), weight_cam=float(self.weight_cam),
            weight_landmark=float(self.weight_landmark), weight_vertex=float(self.weight_vertex), seed=int(self.seed),
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


# ------------------------------------------------------------------------------------------ data
def to_pretrain_data(frames: labels_lib.LabelledFrames) -> pretrain_lib.PretrainData:
    """The supervised examples of ``pretrain``: the labels, and as landmark targets the detected points
    (the fitted mesh's landmark where a point was not detected)."""
    lmk = np.where(frames.landmarks_mask[..., None], frames.landmarks, frames.predicted_landmarks)
    return pretrain_lib.PretrainData(
        images=frames.images, landmarks=lmk.astype(np.float32), shape=frames.shape, expression=frames.expression,
        pose=frames.pose, cam=frames.cam, clip_index=frames.clip_index.astype(np.int32),
    )


def split_clips(frames: labels_lib.LabelledFrames, val_clips: Sequence[str]):
    """``(train, validation)``: whole clips apart (validation None without ``val_clips``).

    Raises:
      KeyError: a held-out clip that is not among the annotations.
      ValueError: every clip held out (nothing to train on).
    """
    if not val_clips:
        return frames, None
    val = frames.select_clips(val_clips)
    train_ids = [c for c in frames.clip_ids if c not in set(val_clips)]
    if not train_ids:
        raise ValueError(f"every clip ({list(frames.clip_ids)}) is held out for validation: nothing to train on")
    return frames.select_clips(train_ids), val


def face_for(frames: labels_lib.LabelledFrames, flame_model=None, landmark_embedding=None):
    """``(FaceModel, eye corner indices)`` the labels were fitted with (model and landmark set as recorded).

    The demo head needs nothing; a FLAME annotation needs its model file (``flame_model``, else the recorded
    path) and its landmark embedding.
    """
    cs = frames.clips[0]
    if flame_model is None and cs.model.kind != DEMO_KIND:
        if not cs.model.path or not pathlib.Path(cs.model.path).is_file():
            raise ValueError(f"{cs.folder}: fitted with the FLAME model {cs.model.name!r} "
                             f"({cs.model.path or 'path not recorded'}); pass that model file (--flame_model)")
        flame_model = cs.model.path
    fs = resolve_face_model(flame_model, landmark_embedding, landmark_set=cs.landmark_set,
                            contour="dynamic" if cs.contour == "dynamic" else "auto")
    if fs.model.num_vertices != cs.model.n_vertices and cs.model.n_vertices:
        raise ValueError(f"{cs.folder}: fitted on a {cs.model.n_vertices}-vertex mesh, the model given has "
                         f"{fs.model.num_vertices}")
    return fit_lib.FaceModel(fs.model, fs.embedding), tuple(int(i) for i in fs.eye_idx)


# ------------------------------------------------------------------------------------------ measures
def yaw_pitch_deg(rotations) -> tuple[np.ndarray, np.ndarray]:
    """Yaw and pitch (degrees) of rotation matrices ``[..., 3, 3]`` in a frame with y up and the face toward +z
    (FLAME's, and the weak-perspective camera's)."""
    f = np.asarray(rotations, np.float64)[..., :, 2]  # where the face's forward axis points
    return np.degrees(np.arctan2(f[..., 0], f[..., 2])), np.degrees(np.arcsin(np.clip(f[..., 1], -1.0, 1.0)))


def _dist(points, a: int, b: int) -> np.ndarray:
    p = np.asarray(points, np.float64)
    return np.linalg.norm(p[..., a, :] - p[..., b, :], axis=-1)


def eye_openness(points68) -> np.ndarray:
    """``[..., 2]`` (left, right) eye openness of iBUG-68 points: mean lid gap over the eye's width
    (eye aspect ratio; about 0.3 open, near 0 closed)."""
    left = (_dist(points68, 37, 41) + _dist(points68, 38, 40)) / (2.0 * _dist(points68, 36, 39))
    right = (_dist(points68, 43, 47) + _dist(points68, 44, 46)) / (2.0 * _dist(points68, 42, 45))
    return np.stack([left, right], -1)


def mouth_opening(points68) -> np.ndarray:
    """Inner-lip gap (iBUG 62–66) over the mouth's width (48–54): 0 closed, about 0.5 wide open."""
    return _dist(points68, 62, 66) / _dist(points68, 48, 54)


@functools.partial(jax.jit, static_argnums=(0, 1))  # static graph and config: one compile per batch shape
def _predict(graphdef, config, trainable, rest, images, face):
    raw = encoder_lib.apply(graphdef, trainable, rest, images)
    p = encoder_lib.decode_outputs(raw, config)
    _, lmk2d, _ = fit_lib.evaluate_params(face, p.shape, p.expression, p.pose, p.cam)
    return p.pose, p.cam, lmk2d


def raw_predictions(encoder, encoder_config: encoder_lib.EncoderConfig, frames: labels_lib.LabelledFrames,
                    face: fit_lib.FaceModel, *, batch_size: int = 64) -> dict[str, np.ndarray]:
    """The encoder's raw output (no optimization, running BatchNorm statistics) on every labelled frame:
    ``pose [N, 15]``, ``cam [N, 3]``, ``landmarks [N, L, 2]`` (normalized crop coordinates)."""
    graphdef, trainable, rest = encoder_lib.split_params(encoder, freeze_bn=True)
    out: dict[str, list[np.ndarray]] = {"pose": [], "cam": [], "landmarks": []}
    n = len(frames)
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n  # one batch shape: one compilation
        keep = min(batch_size, n - start)
        images = jnp.asarray(frames.images[idx], jnp.float32) / 255.0
        pose, cam, lmk = jax.device_get(_predict(graphdef, encoder_config, trainable, rest, images, face))
        for k, v in zip(("pose", "cam", "landmarks"), (pose, cam, lmk)):
            out[k].append(np.asarray(v)[:keep])
    return {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in out.items()}


def frame_nme(pred, detected, mask, eye_idx: tuple[int, int]) -> np.ndarray:
    """Per-frame NME (%) of landmarks ``[N, L, 2]`` against the detected ones ``[N, L, 2]`` (points where
    ``mask [N, L]`` is False left out), normalized by the detected outer-eye-corner distance (``eye_idx``);
    NaN where an eye corner was not detected."""
    det, mask = np.asarray(detected, np.float64), np.asarray(mask, bool)
    a, b = eye_idx
    d = np.linalg.norm(det[:, a] - det[:, b], axis=-1)
    err = np.where(mask, np.linalg.norm(np.asarray(pred, np.float64) - det, axis=-1), 0.0)
    ok = mask[:, a] & mask[:, b] & (d > 0) & mask.any(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, 100.0 * err.sum(-1) / (mask.sum(-1) * d), np.nan)


def raw_metrics(encoder, encoder_config, frames: labels_lib.LabelledFrames, face: fit_lib.FaceModel,
                eye_idx: tuple[int, int]) -> dict[str, float]:
    """Mean raw-prediction figures on labelled frames: ``nme_percent`` (against the detections),
    ``label_nme_percent`` (the labels' own fitted landmarks, for reference), ``yaw_error_deg`` (against the
    labelled head yaw), and ``pretrain.evaluate_encoder``'s label errors (vertex, rotation, jaw, ...)."""
    pred = raw_predictions(encoder, encoder_config, frames, face)
    yaw_p, _ = yaw_pitch_deg(np.asarray(flame_jax.axis_angle_to_matrix(pred["pose"][:, :3].astype(np.float64))))
    yaw_l, _ = yaw_pitch_deg(np.asarray(flame_jax.axis_angle_to_matrix(frames.pose[:, :3].astype(np.float64))))
    out = {
        "frames": len(frames),
        "nme_percent": float(np.nanmean(frame_nme(pred["landmarks"], frames.landmarks, frames.landmarks_mask,
                                                  eye_idx))),
        "label_nme_percent": float(np.nanmean(frame_nme(frames.predicted_landmarks, frames.landmarks,
                                                        frames.landmarks_mask, eye_idx))),
        "yaw_error_deg": float(np.mean(np.abs(yaw_p - yaw_l))),
    }
    out.update(pretrain_lib.evaluate_encoder(encoder, encoder_config, to_pretrain_data(frames), face))
    return out


# ------------------------------------------------------------------------------------------ training
def _per_clip(frames: labels_lib.LabelledFrames) -> dict[str, int]:
    return {cid: int((frames.clip_index == i).sum()) for i, cid in enumerate(frames.clip_ids)
            if (frames.clip_index == i).any()}


def train_encoder(
    annotation_dirs: Sequence[str | pathlib.Path],
    init,
    out=None,
    config: SelfTrainConfig = SelfTrainConfig(),
    *,
    frames: labels_lib.LabelledFrames | None = None,
    flame_model=None,
    landmark_embedding=None,
    video_dirs: Sequence[str | pathlib.Path] = (),
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fine-tunes the encoder at ``init`` on the annotations' labelled frames and saves it to ``out``.

    Args:
      annotation_dirs: ``annotate`` / ``annotate-dataset`` outputs (``labels.find_annotations``).
      init: the starting checkpoint (any folder ``encoder.load_encoder`` reads; the packaged one by default
        on the command line).
      out: the new checkpoint folder (None: not saved); its summary is ``pretrain.summary_path(out)``.
      config: the settings (whole clips ``config.val_clips`` held out).
      frames: already loaded labelled frames (skips loading; ``annotation_dirs`` is then only recorded).
      flame_model, landmark_embedding: the face model of FLAME annotations (``face_for``).
      video_dirs: where moved videos are looked up by file name.
      overwrite: replace an existing ``out``.
      log: optional line logger.

    Returns:
      The summary: settings, clips and frames per split, raw-prediction figures on the held-out clips
      before and after (``raw_metrics``), the training history and seconds.
    """
    say = log or logger.info
    seconds: dict[str, float] = {}
    if out is not None:
        out = pathlib.Path(out).expanduser().absolute()
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; choose a new --out or pass overwrite")
    init = pathlib.Path(init).expanduser()
    if not init.is_dir():
        raise FileNotFoundError(f"{init}: no encoder checkpoint folder to start from")
    t0 = time.perf_counter()
    enc, enc_cfg = encoder_lib.load_encoder(init)
    if frames is None:
        frames = labels_lib.load_labelled_frames(
            annotation_dirs, enc_cfg.image_size, frame_stride=config.frame_stride,
            max_frames=config.max_frames or None, video_dirs=video_dirs,
        )
    elif frames.images.shape[1] != enc_cfg.image_size:
        raise ValueError(f"the labelled frames are {frames.images.shape[1]} px crops but the encoder {init} takes "
                         f"{enc_cfg.image_size} px")
    seconds["load"] = time.perf_counter() - t0
    face, eye_idx = face_for(frames, flame_model, landmark_embedding)
    starting_lib.check_fits(enc_cfg, face.flame, what=f"encoder checkpoint {init}")
    train, val = split_clips(frames, config.val_clips)
    say(f"self-training on {len(train)} frames of {len(_per_clip(train))} clip(s); "
        f"{len(val) if val is not None else 0} held-out frames of {config.val_clips or 'no'} clip(s)")
    before = raw_metrics(enc, enc_cfg, val, face, eye_idx) if val is not None else {}
    pcfg = config.pretrain_config()
    t0 = time.perf_counter()
    result = pretrain_lib.pretrain(
        pcfg, enc_cfg, data=to_pretrain_data(train), val_data=None, face=face, encoder=enc, log=say,
        log_every=max(1, config.steps // 5),
    )
    seconds["train"] = time.perf_counter() - t0
    seconds.update({f"train_{k}": v for k, v in result.seconds.items()})
    after = raw_metrics(result.encoder, enc_cfg, val, face, eye_idx) if val is not None else {}
    result.validation = after
    summary = {
        "config": config.to_dict(),
        "init": str(init.absolute()),
        "annotations": [str(pathlib.Path(d).absolute()) for d in annotation_dirs],
        "train_frames": _per_clip(train),
        "val_frames": _per_clip(val) if val is not None else {},
        "landmark_set": frames.clips[0].landmark_set,
        "model": frames.clips[0].model.name,
        "val_before": before,
        "val_after": after,
        "history": result.history,
        "seconds": seconds,
    }
    if before:
        say("held-out clips, raw prediction before -> after: " + ", ".join(
            f"{k} {before[k]:.4g} -> {after[k]:.4g}" for k in ("nme_percent", "yaw_error_deg", "vertex_l1_mm",
                                                                 "rotation_deg")))
    if out is not None:
        pretrain_lib.save_pretrained(out, result, pcfg, overwrite=True)
        path = pretrain_lib.summary_path(out)
        doc = json.loads(path.read_text())
        doc[SUMMARY_KEY] = summary
        text = json.dumps(doc, indent=2) + "\n"
        atomic_write(path, lambda fh: fh.write(text.encode()))
        summary["out"] = str(out)
        say(f"wrote {out} (summary {path})")
    summary["encoder"], summary["encoder_config"] = result.encoder, enc_cfg
    return summary
