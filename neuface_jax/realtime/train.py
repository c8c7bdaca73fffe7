"""Training the real-time regressor from synthetic renders and from this project's annotations.

Two sources of supervised examples, mixed in every batch:

* **Synthetic renders** of the chosen face model with known parameters: ``synthetic.pretrain``'s
  data generation (``generate_dataset``: the renderer, detector noise and crop recipe of the test
  clips) at the regressor's crop size.
* **Distillation** from annotations: ``annotate`` / ``annotate-dataset`` outputs, read back with
  ``training.labels`` (each frame re-cropped from its video with the annotation's own crop
  transform, at the regressor's crop size); the slow optimizer's parameters become the targets
  (``distillation_data``; the 2D landmark targets can be the detected points instead of the fitted
  mesh's, ``distill_landmarks``). The last ``holdout_fraction`` of each
  clip's frames is kept out of training for evaluation. With ``mirror``, every distilled frame also
  enters flipped left/right with its targets mirrored (``mirror_examples``), as another person.

Two weaker sources add people without annotations: **still images** (``weak_data``: MediaPipe's 68
points are the only targets, ``weak_landmark_loss``) and **unlabelled videos** (``unlabelled_data``:
the landmark-free photometric term and identity consistency only).

The loss is ``synthetic.pretrain.pretrain_loss`` (parameter regression, 2D landmarks through the
predicted mesh and camera, 3D vertices) for both sources, optionally the dense 2D term
(``projected_vertex_loss``: the whole mesh projected into the crop, what landmark NME measures;
rotation and camera errors that cancel in parameter space do not cancel there), plus **multi-frame identity
consistency**: batches are built from groups of ``group_size`` images of the same clip (one
person), and the variance of the predicted identity within a group is penalized. With full
supervision the targets already share one identity per clip, so this term mostly regularizes; it
is what ties frames together when the targets do not (see docs/realtime.md).

Images are augmented on the device: a random zoom, shift and in-plane rotation of the crop with the
landmark, camera and head-rotation targets moved to match (``reframe``: the live tracker places each
crop from the previous fit, so the regressor must measure where the face is in its crop rather than
assume the training framing; the rotation is exact for the weak-perspective camera,
``rotate_in_plane``), brightness, contrast, per-channel gain and greyscale changes (so that the
flat-shaded renders do not define what a face's colours look like), and optionally blur and noise. With
``profile_pitch``, every distilled frame is also turned *out of plane* once before training
(``realtime.profile``: the label mesh turned by each pitch change, the crop warped with it, the labels
turned exactly) and ``profile_share`` of the distilled groups come from those copies. BatchNorm trains with batch
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

from flame_jax import rotations as flame_rotations
from neuface_jax.common.settings import setting
from neuface_jax.core import camera as camera_lib
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.core import losses as losses_lib
from neuface_jax.core import mobilenet as mobilenet_lib
from neuface_jax.media import crops
from neuface_jax.media import landmark_sets as landmark_sets_lib
from neuface_jax.media import landmarker as landmarker_lib
from neuface_jax.media import video as video_lib
from neuface_jax.photometric import loss as photometric_lib
from neuface_jax.realtime import profile as profile_lib
from neuface_jax.realtime import regressor as regressor_lib
from neuface_jax.realtime import track as track_lib
from neuface_jax.synthetic import pretrain as pretrain_lib
from neuface_jax.training import labels as labels_lib

__all__ = [
    "TrainConfig",
    "TrainResult",
    "UnlabelledData",
    "augment",
    "distillation_data",
    "evaluate",
    "group_batches",
    "landmark_targets",
    "identity_consistency",
    "mirror_examples",
    "mirror_maps",
    "projected_vertex_loss",
    "reframe",
    "root_joint",
    "rotate_in_plane",
    "save",
    "self_supervised_loss",
    "synthetic_data",
    "train",
    "unlabelled_data",
    "WeakData",
    "weak_data",
    "weak_landmark_loss",
]

logger = logging.getLogger(__name__)

#: Sources of the distilled frames' 2D landmark targets (``landmark_targets``).
DISTILL_LANDMARKS = ("fitted", "detected", "both")
#: Crops of the distilled frames: the annotation's own, or where the live tracker's face detector puts them.
DISTILL_CROPS = ("annotation", "detector")
#: First clip index of distilled clips in ``PretrainData.clip_index`` (synthetic clips use seeds).
DISTILLED_CLIP_BASE = 2_000_000_000
#: First clip index of unlabelled videos.
UNLABELLED_CLIP_BASE = 1_500_000_000
#: First clip index of weakly labelled still images.
WEAK_CLIP_BASE = 1_600_000_000


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
    weight_shape: float = setting(1.0, "Weight of the identity-coefficient regression (squared error).")
    weight_landmark: float = setting(10.0, "Weight of the 2D landmark term (L1, normalized crop units): the predicted "
                                           "mesh's 68 landmarks against the label's.")
    weight_landmark_head: float = setting(0.0, "Weight of the spatial landmark head's term (L1, normalized crop units: "
                                               "its 68 points against the same 2D targets as weight_landmark). Above 0 "
                                               "the regressor gets the head (added to an --init regressor without one); "
                                               "its points come out as Prediction.head_landmarks.")
    weight_landmark_maps: float = setting(0.0, "Weight of the landmark head's map term: cross-entropy of each point's "
                                               "softmax map against a one-cell Gaussian at its 2D target, so that the "
                                               "maps peak where the points show (needs weight_landmark_head > 0).")
    weight_projected: float = setting(0.0, "Weight of the dense 2D term: every vertex of the predicted mesh projected "
                                           "into the crop against the label mesh's projection (L1, normalized crop "
                                           "units; what landmark NME measures, on the whole mesh).")
    weight_canonical: float = setting(0.0, "Weight of the dense 3D term: the predicted mesh's vertices with the head "
                                           "rotation zeroed against the label mesh's (L1, metres; identity and "
                                           "expression weighted by what they move, as the canonical vertex error "
                                           "measures them, rather than coefficient by coefficient).")
    freeze_bn: bool = setting(False, "Train with BatchNorm's running statistics, scales and offsets frozen (the "
                                     "inference-time network; for fine-tuning a trained regressor).")
    weight_photometric: float = setting(0.0, "Weight of the landmark-free photometric term (skin-attention-masked, "
                                             "albedo and light solved per image) on the real frames: distilled "
                                             "and unlabelled ones (0 = off).")
    unlabelled_share: float = setting(0.25, "Share of each batch drawn from unlabelled video frames (when there "
                                            "are any).")
    unlabelled_frames: int = setting(120, "Frames taken, evenly spaced, from the training part of each "
                                          "unlabelled video.")
    weak_share: float = setting(0.125, "Share of each batch drawn from weakly labelled still images (when there "
                                       "are any): other people, supervised by MediaPipe's landmarks only.")
    weight_weak: float = setting(1.0, "Weight of the landmark term on weakly labelled images (relative to the "
                                      "supervised landmark weight).")
    mirror: bool = setting(False, "Add a left/right mirrored copy of every distilled frame (image flipped, landmarks, "
                                  "pose, camera and coefficients mirrored; a new identity group): twice the real "
                                  "people and both turning directions.")
    augment: bool = setting(True, "Colour augmentation (brightness, contrast, channel gains, greyscale).")
    reframe_zoom: float = setting(0.25, "Random crop zoom up to this fraction either way, targets moved to match "
                                        "(a tracker needs a regressor that measures the face's place in its crop).")
    reframe_shift: float = setting(0.15, "Random crop shift up to this, normalized crop units (the crop spans 2).")
    reframe_rotation: float = setting(0.0, "Random in-plane rotation of the crop up to this many degrees either way, "
                                           "the head rotation, camera and landmark targets turned to match (exact "
                                           "for the weak-perspective camera): head roll beyond the distilled frames'.")
    blur: float = setting(0.0, "Share of the images also blurred (Gaussian, sigma 0.4-1.5 px) and given sensor noise.")
    distill_landmarks: str = setting(
        "fitted", "2D landmark targets of the distilled frames: the fitted model's ('fitted'), MediaPipe's detected "
        "68 points ('detected': what landmark NME is measured against; masked points keep the fitted ones) or "
        "their mean ('both'). Only the landmark term reads them.", choices=DISTILL_LANDMARKS)
    distill_crop: str = setting(
        "annotation", "Crops of the distilled frames: the annotation's own ('annotation') or the live tracker's "
        "('detector': the face detector run on each frame, its box placed as track.detection_box places it, the "
        "labels moved to match), so the regressor learns the framing it is given live.", choices=DISTILL_CROPS)
    profile_pitch: tuple[float, ...] = setting(
        (), "Out-of-plane pose augmentation ('face profiling', realtime.profile): every distilled training frame "
        "(mirrors included) also enters turned by each of these pitch changes, degrees, positive = chin down "
        "(e.g. 8,16), the crop warped with its label mesh and the labels turned exactly; computed once before "
        "training. Empty = off.")
    profile_yaw: float = setting(0.0, "With --profile_pitch: a random yaw change up to this many degrees either way "
                                      "per turned copy.")
    profile_share: float = setting(0.25, "With --profile_pitch: share of each batch's distilled groups drawn from "
                                         "the turned copies.")
    seed: int = setting(0, "Initialization, batch order and augmentation seed.")

    def __post_init__(self):
        try:
            pitches = tuple(float(p) for p in (self.profile_pitch or ()))  # flags give lists of strings
        except (TypeError, ValueError):
            raise ValueError(f"profile_pitch must be numbers (degrees), got {self.profile_pitch!r}") from None
        if not all(np.isfinite(pitches)) or any(abs(p) > 60 for p in pitches):
            raise ValueError(f"profile_pitch changes must be finite and within ±60°, got {pitches}")
        object.__setattr__(self, "profile_pitch", pitches)
        if not 0.0 <= self.profile_yaw <= 60.0:
            raise ValueError(f"profile_yaw must be in [0, 60] degrees, got {self.profile_yaw}")
        if not 0.0 < self.profile_share < 1.0:
            raise ValueError(f"profile_share must be in (0, 1), got {self.profile_share}")
        if self.batch_size < self.group_size or self.batch_size % self.group_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a positive multiple of group_size "
                             f"({self.group_size})")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if not 0.0 <= self.distill_fraction <= 1.0:
            raise ValueError(f"distill_fraction must be in [0, 1], got {self.distill_fraction}")
        if not 0.0 <= self.unlabelled_share < 1.0:
            raise ValueError(f"unlabelled_share must be in [0, 1), got {self.unlabelled_share}")
        if not 0.0 <= self.weak_share < 1.0 or self.weight_weak < 0:
            raise ValueError(f"weak_share must be in [0, 1) and weight_weak >= 0, got {self.weak_share}, "
                             f"{self.weight_weak}")
        if self.weight_photometric < 0 or self.unlabelled_frames < 1:
            raise ValueError("weight_photometric must be >= 0 and unlabelled_frames >= 1")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.weight_landmark_maps and not self.weight_landmark_head:
            raise ValueError("weight_landmark_maps needs the landmark head (weight_landmark_head > 0)")
        if self.distill_landmarks not in DISTILL_LANDMARKS:
            raise ValueError(f"distill_landmarks must be one of {DISTILL_LANDMARKS}, got {self.distill_landmarks!r}")
        if self.distill_crop not in DISTILL_CROPS:
            raise ValueError(f"distill_crop must be one of {DISTILL_CROPS}, got {self.distill_crop!r}")

    def pretrain_config(self) -> pretrain_lib.PretrainConfig:
        """The synthetic-data and loss settings in ``synthetic.pretrain``'s terms."""
        return pretrain_lib.PretrainConfig(
            num_clips=self.synthetic_clips, num_val_clips=self.synthetic_val_clips,
            seed_offset=self.synthetic_seed_offset, num_steps=self.steps, batch_size=self.batch_size,
            learning_rate=self.learning_rate, warmup_steps=self.warmup_steps, seed=self.seed,
            weight_shape=self.weight_shape, weight_landmark=self.weight_landmark,
            weight_canonical=self.weight_canonical,
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


def landmark_targets(frames: labels_lib.LabelledFrames, source: str = "fitted") -> np.ndarray:
    """``float32 [N, 68, 2]`` 2D landmark targets of labelled frames: the fitted mesh's (``"fitted"``), the
    detected points (``"detected"``) or the mean of the two (``"both"``); a masked detection (hidden,
    missing) keeps the fitted point, so every target is defined."""
    if source not in DISTILL_LANDMARKS:
        raise ValueError(f"landmark source must be one of {DISTILL_LANDMARKS}, got {source!r}")
    fitted = frames.predicted_landmarks.astype(np.float32)
    if source == "fitted":
        return fitted
    if frames.landmarks.shape != fitted.shape:
        raise ValueError(f"{frames.clip_ids}: detected landmarks {frames.landmarks.shape} do not match the fitted "
                         f"ones {fitted.shape}")
    detected = frames.landmarks.astype(np.float32)
    if source == "both":
        detected = 0.5 * (detected + fitted)
    return np.where(frames.landmarks_mask[..., None], detected, fitted).astype(np.float32)


def _to_examples(frames: labels_lib.LabelledFrames, clip_index: int,
                 landmarks: str = "fitted") -> pretrain_lib.PretrainData:
    """Labelled real frames as supervised examples: the fitted parameters and ``landmark_targets``."""
    if frames.predicted_landmarks.shape[-2] != 68:
        raise ValueError(f"{frames.clip_ids}: {frames.predicted_landmarks.shape[-2]} landmarks; the regressor's "
                         "landmark loss uses iBUG-68 (annotate with --landmark_set=ibug68)")
    n = len(frames)
    return pretrain_lib.PretrainData(
        images=frames.images, landmarks=landmark_targets(frames, landmarks),
        shape=frames.shape.astype(np.float32), expression=frames.expression.astype(np.float32),
        pose=frames.pose.astype(np.float32), cam=frames.cam.astype(np.float32),
        clip_index=np.full((n,), clip_index, np.int32),
    )


def distillation_data(annotation_dirs: Sequence, *, image_size: int = regressor_lib.DEFAULT_IMAGE_SIZE,
                      holdout_fraction: float = 0.3, video_dirs: Sequence = (), landmarks: str = "fitted",
                      recrop: labels_lib.Recrop | None = None):
    """``(train, held_out)`` examples distilled from annotations (``training.labels``), or ``(None, None)``.

    Args:
      annotation_dirs: ``annotate`` / ``annotate-dataset`` output folders.
      image_size: the regressor's crop size.
      holdout_fraction: the last fraction of each clip-view's frames goes to ``held_out``.
      video_dirs: where to look for moved videos by file name.
      landmarks: which 2D landmark targets (``landmark_targets``): ``"fitted"``, ``"detected"``, ``"both"``.
      recrop: another crop of each frame (``labels.iter_labelled_clips``; e.g. ``track.detector_recrop``).

    Targets: the fitted identity, expression, full pose and camera, and 2D landmarks (by default the
    fitted model's; normalized crop coordinates) of every frame with a face; the crop is the annotation's own
    (the camera unchanged) unless ``recrop`` moves it (the camera and points moved to match). Each clip (and
    view) is one identity group (``clip_index``).
    """
    train_parts, held_parts = [], []
    group = DISTILLED_CLIP_BASE
    for frames in labels_lib.iter_labelled_clips(list(annotation_dirs), image_size, video_dirs=video_dirs,
                                                 recrop=recrop):
        for view in np.unique(frames.view_index):
            rows = np.flatnonzero(frames.view_index == view)
            rows = rows[np.argsort(frames.frame_index[rows], kind="stable")]
            data = _to_examples(frames.subset(rows), group, landmarks)
            split = len(rows) - int(round(len(rows) * holdout_fraction))
            train_parts.append(data.subset(np.arange(split)))
            held_parts.append(data.subset(np.arange(split, len(rows))))
            logger.info("distilling %s (view %d): %d training frames, %d held out", frames.clip_ids, view, split,
                        len(rows) - split)
            group += 1
    return _concat(train_parts), _concat(held_parts)


#: The face model's left/right mirror maps (``regressor.mirror_maps``, shared with mirror averaging).
mirror_maps = regressor_lib.mirror_maps


def mirror_examples(data: pretrain_lib.PretrainData, face: fit_lib.FaceModel) -> pretrain_lib.PretrainData:
    """The left/right mirror image of every example: the crop flipped, the 68 landmarks' x negated and
    renumbered (``IBUG68_MIRROR``), rotations (x, y, z) → (x, −y, −z) with the eyes swapped, the
    camera's x translation negated, identity and expression through ``mirror_maps``. Each clip's
    mirror is a new group (``clip_index`` → −1 − it): a mirrored face is another person."""
    _, shape_map, expr_map = mirror_maps(face, data.shape.shape[-1], data.expression.shape[-1])
    shape, expr, pose, cam = regressor_lib.mirror_params(data.shape, data.expression, data.pose, data.cam, shape_map,
                                                         expr_map)
    lmk = data.landmarks[:, landmark_sets_lib.IBUG68_MIRROR] * np.array([-1.0, 1.0], np.float32)
    return pretrain_lib.PretrainData(
        images=np.ascontiguousarray(data.images[:, :, ::-1]), landmarks=lmk.astype(np.float32),
        shape=shape.astype(np.float32), expression=expr.astype(np.float32), pose=pose.astype(np.float32),
        cam=cam.astype(np.float32), clip_index=(-1 - data.clip_index).astype(np.int32),
    )


def _concat(parts):
    parts = [p for p in parts if p is not None and len(p)]
    return pretrain_lib.PretrainData.concatenate(parts) if parts else None


@dataclasses.dataclass
class UnlabelledData:
    """Face crops without targets: ``images`` uint8 [N, S, S, 3], ``clip_index`` [N] (one person per clip)."""

    images: np.ndarray
    clip_index: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


def unlabelled_data(videos: Sequence, *, image_size: int = regressor_lib.DEFAULT_IMAGE_SIZE,
                    holdout_fraction: float = 0.3, frames_per_video: int = 120, face_landmarker=None,
                    track_config: track_lib.TrackConfig = track_lib.TrackConfig(),
                    detector=None) -> UnlabelledData | None:
    """Face crops of videos that have no annotation, for landmark-free self-supervision.

    Each video is one person (one identity group). ``frames_per_video`` frames evenly spaced over the
    first ``1 − holdout_fraction`` of it are decoded; the face detector (the live tracker's, the
    best face of each frame) places the crop exactly as the tracker does (``track.detection_box``).
    Frames without a face are skipped; a video without any is an error naming it. ``detector``: a
    ready detector (default: ``track.FaceDetector`` from ``face_landmarker``).
    """
    images, groups = [], []
    if not videos:
        return None
    own = detector is None
    det = track_lib.FaceDetector(face_landmarker, track_config.min_detection_confidence) if own else detector
    try:
        for g, path in enumerate(videos):
            info = video_lib.probe_video(path)
            total = int(round(info.duration_s * info.fps)) if info.fps and info.duration_s else 0
            end = total - int(round(total * holdout_fraction)) if total else None
            stride = max(1, (end or frames_per_video) // frames_per_video)
            clip = video_lib.read_video(path, frames=video_lib.FrameRange(end=end, stride=stride))
            n = 0
            for frame in clip.frames[0][:frames_per_video]:
                dets = det.detect(frame)
                if not len(dets):
                    continue
                crop, _ = regressor_lib.crop_box(frame, track_lib.detection_box(dets[0], track_config), image_size)
                images.append(crop)
                groups.append(UNLABELLED_CLIP_BASE + g)
                n += 1
            if not n:
                raise ValueError(f"{path}: no face found in {len(clip.frames[0])} frames")
            logger.info("unlabelled %s: %d face crops (frames before %s, stride %d)", path, n, end, stride)
    finally:
        if own:
            det.close()
    return UnlabelledData(np.stack(images), np.asarray(groups, np.int32))


@dataclasses.dataclass
class WeakData:
    """Face crops with landmark targets only: ``images`` uint8 [N, S, S, 3], ``landmarks`` [N, 68, 2]
    (normalized crop coordinates), ``visible`` bool [N, 68], ``clip_index`` [N] (one person each)."""

    images: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray
    clip_index: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


def weak_data(paths: Sequence, *, image_size: int = regressor_lib.DEFAULT_IMAGE_SIZE, face_landmarker=None,
              mirror: bool = False, track_config: track_lib.TrackConfig = track_lib.TrackConfig(),
              detector=None) -> WeakData | None:
    """Still images of other people as weakly labelled examples: the crop the live tracker would take
    (BlazeFace's box, ``track.detection_box``) and MediaPipe's iBUG-68 points in it as the only
    targets (contour points facing away from the camera masked out, as ``annotate`` masks them).

    Each image is one person (its own identity group: the group's images differ by augmentation);
    with ``mirror`` its left/right mirror is another. An image that cannot be read is an error naming
    it; one where no face is found is skipped with a warning (an error when none is left).
    """
    # cv2 is heavy; only reading still images needs it here.
    import cv2

    if not paths:
        return None
    own = detector is None
    det = track_lib.FaceDetector(face_landmarker, track_config.min_detection_confidence) if own else detector
    images, lmks, vis = [], [], []
    try:
        for path in paths:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{path}: not a readable image")
            frame = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            dets = det.detect(frame)
            # A fresh landmarker per image: VIDEO mode would carry one image's face into the next.
            with landmarker_lib.FaceLandmarker(face_landmarker, landmarker_lib.LandmarkerOptions(num_faces=4)) as lm:
                faces = lm.detect(frame, 0) if len(dets) else []
            if not len(faces):
                # No targets to learn from (often a profile view): skipped, the others still count.
                logger.warning("%s: no face found by %s; skipped", path,
                               "MediaPipe's landmarker" if len(dets) else "the face detector")
                continue
            box = track_lib.detection_box(dets[0], track_config)
            nearest = int(np.argmin([np.linalg.norm(f[:, :2].mean(0) - box[:2]) for f in faces]))
            pts = faces[nearest]
            crop, m = regressor_lib.crop_box(frame, box, image_size)
            ibug = pts[landmark_sets_lib.MEDIAPIPE_TO_IBUG68, :2]
            images.append(crop)
            lmks.append(crops.to_normalized(crops.apply_transform(ibug, m), image_size).astype(np.float32))
            vis.append(landmark_sets_lib.landmark_visibility(pts)[landmark_sets_lib.MEDIAPIPE_TO_IBUG68])
            logger.info("weakly labelled %s: %d of 68 landmarks visible", path, int(vis[-1].sum()))
    finally:
        if own:
            det.close()
    if not images:
        raise ValueError(f"no face with landmarks in any of the {len(paths)} still images")
    out = WeakData(np.stack(images), np.stack(lmks), np.stack(vis),
                   WEAK_CLIP_BASE + np.arange(len(images), dtype=np.int32))
    if mirror:
        flipped = WeakData(np.ascontiguousarray(out.images[:, :, ::-1]),
                           out.landmarks[:, landmark_sets_lib.IBUG68_MIRROR] * np.array([-1.0, 1.0], np.float32),
                           out.visible[:, landmark_sets_lib.IBUG68_MIRROR], -1 - out.clip_index)
        out = WeakData(*(np.concatenate([a, b]) for a, b in zip(dataclasses.astuple(out), dataclasses.astuple(flipped))))
    return out


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


def self_supervised_loss(shape, expression, pose, cam, images: jax.Array, face: fit_lib.FaceModel) -> jax.Array:
    """The landmark-free photometric term of predicted parameters ([B, ...]: identity, expression,
    full pose, camera) on their crops [B, S, S, 3] in [0, 1]: ``photometric.loss.photometric_term``
    (the mesh rendered with albedo and SH light solved per image in closed form, a robust colour
    error over an image pyramid, pixels weighted by the mesh's face region and a skin-colour
    attention fitted to each image), re-rasterized every call."""
    verts, _, _ = fit_lib.evaluate_params(face, shape, expression, pose, cam)
    batch = {"images": images, "vertices": verts, "cam": cam, "faces": face.flame.faces}
    # The camera is a prediction like the rest (no landmarks place it on unlabelled frames).
    # The batch's crops come from unrelated clips: one light per image, no clip-wide frame weights.
    values, mask = photometric_lib.photometric_term(batch, refresh_every=1, camera_gradient=True, light="frame",
                                                    frame_outliers=0.0)
    return losses_lib.masked_mean(values, mask)


def weak_landmark_loss(shape, expression, pose, cam, landmarks: jax.Array, visible: jax.Array,
                       face: fit_lib.FaceModel) -> jax.Array:
    """Mean |error| of the predicted mesh's 68 landmarks against weak targets [B, 68, 2] (normalized),
    over the visible ones [B, 68]."""
    _, lmk, _ = fit_lib.evaluate_params(face, shape, expression, pose, cam)
    return losses_lib.masked_mean(*losses_lib.landmark_l1(lmk, landmarks, visible))


def projected_vertex_loss(shape, expression, pose, cam, targets: dict, face: fit_lib.FaceModel) -> jax.Array:
    """Mean |error| of the predicted mesh projected into the crop against the label mesh (``targets``:
    identity, expression, full pose and camera [B, ...]) projected with its own camera: the 2D fit that
    landmark NME measures, over every vertex (pose and camera errors that trade off in parameter
    space show up here as one image-space error)."""
    verts, _, _ = fit_lib.evaluate_params(face, shape, expression, pose, cam)
    gt, _, _ = fit_lib.evaluate_params(face, targets["shape"], targets["expression"], targets["pose"], targets["cam"])
    return jnp.mean(jnp.abs(camera_lib.project(verts, cam) - camera_lib.project(gt, targets["cam"])))


def augment(images: jax.Array, key: jax.Array, *, blur: float = 0.0) -> jax.Array:
    """Random photometric changes per image [B, H, W, 3] in [0, 1]: brightness, contrast, channel
    gains, and greyscale for one image in five; with ``blur`` > 0, that share of the images is also
    blurred (Gaussian, σ 0.4–1.5 px: webcam focus and motion) and given sensor noise (σ ≤ 0.03)."""
    b = images.shape[0]
    k1, k2, k3, k4 = jax.random.split(key, 4)
    k5 = jax.random.fold_in(key, 5)
    bright = jax.random.uniform(k1, (b, 1, 1, 1), minval=-0.15, maxval=0.15)
    contrast = jax.random.uniform(k2, (b, 1, 1, 1), minval=0.7, maxval=1.3)
    gains = jax.random.uniform(k3, (b, 1, 1, 3), minval=0.8, maxval=1.2)
    mean = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
    x = (images - mean) * contrast + mean + bright
    x = x * gains
    grey = jnp.mean(x, axis=-1, keepdims=True)
    x = jnp.where(jax.random.uniform(k4, (b, 1, 1, 1)) < 0.2, grey, x)
    if blur > 0:
        x = _blur_and_noise(x, k5, blur)
    return jnp.clip(x, 0.0, 1.0)


def _blur_and_noise(images: jax.Array, key: jax.Array, share: float) -> jax.Array:
    """A separable Gaussian blur (random σ per image, 7 taps, edges repeated) plus Gaussian noise, on
    ``share`` of the images [B, H, W, C]."""
    b = images.shape[0]
    k1, k2, k3, k4 = jax.random.split(key, 4)
    sigma = jax.random.uniform(k1, (b,), minval=0.4, maxval=1.5)
    taps = jnp.arange(-3, 4, dtype=images.dtype)
    kern = jnp.exp(-0.5 * (taps[None] / sigma[:, None]) ** 2)
    kern = kern / kern.sum(-1, keepdims=True)  # [B, 7]
    h, w = images.shape[1], images.shape[2]
    pad = jnp.pad(images, ((0, 0), (3, 3), (3, 3), (0, 0)), mode="edge")
    rows = sum(kern[:, i, None, None, None] * pad[:, i:i + h] for i in range(7))  # [B, H, W+6, C]
    out = sum(kern[:, i, None, None, None] * rows[:, :, i:i + w] for i in range(7))
    out = out + jax.random.normal(k2, images.shape, images.dtype) * jax.random.uniform(
        k3, (b, 1, 1, 1), maxval=0.03)
    return jnp.where(jax.random.uniform(k4, (b, 1, 1, 1)) < share, out, images)


def root_joint(face: fit_lib.FaceModel, shape: jax.Array, expression: jax.Array) -> jax.Array:
    """[..., 3] rest-pose position of the model's root joint (the centre of the global rotation) for
    the given identity and expression coefficients (fewer than the model's: the leading ones)."""
    flame = face.flame
    n_s, n_e = flame.num_shape, flame.num_expression
    shape, expression = shape[..., :n_s], expression[..., :n_e]
    basis = flame.joint_basis.reshape(n_s + n_e, flame.num_joints, 3)[:, 0]
    return (flame.joint_template[0] + shape @ basis[:shape.shape[-1]]
            + expression @ basis[n_s:n_s + expression.shape[-1]])


def rotate_in_plane(landmarks: jax.Array, cam: jax.Array, pose: jax.Array, root: jax.Array, angle: jax.Array):
    """Targets of a crop rotated by ``angle`` (radians, [B], counter-clockwise on screen: image
    points map ``q → Rot(angle)·q`` about the crop centre).

    Exact for the weak-perspective camera: the posed mesh turns about the camera's z axis by
    ``φ = −angle`` (the image's y points down), so the global rotation becomes ``Rz(φ)·R``; FLAME
    turns the head about its root joint ``J`` rather than the origin, so the camera translation
    becomes ``Rot2(φ)·t + (Rz(φ)·J − J)_xy`` (the depth part does not project).

    Args:
      landmarks: [B, L, 2] normalized crop coordinates.  cam: [B, 3].  pose: [B, 3·J] full pose
        (global rotation first).  root: [B, 3] ``root_joint`` of each label.

    Returns:
      ``(landmarks, cam, pose)`` of the rotated crop.
    """
    c, s = jnp.cos(angle), jnp.sin(angle)
    rot_img = jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)  # [B, 2, 2], image (x, y down)
    lmk = jnp.einsum("bij,blj->bli", rot_img, landmarks)
    zero, one = jnp.zeros_like(c), jnp.ones_like(c)
    rz = jnp.stack([jnp.stack([c, s, zero], -1), jnp.stack([-s, c, zero], -1),
                    jnp.stack([zero, zero, one], -1)], -2)  # Rz(−angle), model frame (y up)
    glob = flame_rotations.matrix_to_axis_angle(rz @ flame_rotations.axis_angle_to_matrix(pose[:, :3]))
    pose = jnp.concatenate([glob.astype(pose.dtype), pose[:, 3:]], -1)
    moved_root = jnp.einsum("bij,bj->bi", rz, root) - root
    t = jnp.einsum("bij,bj->bi", rz[:, :2, :2], cam[:, 1:]) + moved_root[:, :2]
    return lmk, jnp.concatenate([cam[:, :1], t], -1), pose


def reframe(images: jax.Array, landmarks: jax.Array, cam: jax.Array, key: jax.Array, *, max_zoom: float,
            max_shift: float, max_rotation: float = 0.0, pose: jax.Array | None = None,
            root: jax.Array | None = None):
    """Random zoom, shift and (optionally) in-plane rotation of each crop, with its targets moved to match.

    A live tracker places the next crop from the previous fit, so the regressor must *measure* where
    the face is in its crop (a network that always predicts the training framing drives the crop
    size away). Normalized crop coordinates map ``q → k·Rot(θ)·q + d`` (zoom ``k`` in
    ``[1/(1+max_zoom), 1+max_zoom]``, shift ``d`` in ``±max_shift``, ``θ`` in ``±max_rotation``
    degrees); the landmarks follow, the rotation moves the head rotation and camera translation
    (``rotate_in_plane``, exact), and the zoom and shift make the weak-perspective camera
    ``(k·s, t_x + d_x/(k·s), t_y − d_y/(k·s))``. Outside the original crop is black. Head roll on
    unseen frames is a rotation of a seen face: every distilled frame becomes many, with exact labels.

    Args:
      images: [B, S, S, 3] in [0, 1].  landmarks: [B, L, 2] normalized.  cam: [B, 3].
      pose: [B, 3·J] full pose and root: [B, 3] (``root_joint``), needed when ``max_rotation`` > 0.

    Returns:
      ``(images, landmarks, cam, pose)`` (``pose`` as given when there is no rotation).
    """
    b, size = images.shape[0], images.shape[1]
    k1, k2, k3 = jax.random.split(key, 3)
    lim = jnp.log1p(max_zoom)
    k = jnp.exp(jax.random.uniform(k1, (b,), minval=-lim, maxval=lim))
    d = jax.random.uniform(k2, (b, 2), minval=-max_shift, maxval=max_shift)  # (x, y)
    if not max_rotation:
        trans = (1.0 - k)[:, None] * size / 2.0 + d[:, ::-1] * size / 2.0  # (y, x) pixels

        def one(im, kk, tt):
            return jax.image.scale_and_translate(im, im.shape, (0, 1), jnp.stack([kk, kk]), tt, "linear",
                                                 antialias=True)

        out = jax.vmap(one)(images, k, trans)
        lmk = landmarks * k[:, None, None] + d[:, None, :]
        return out, lmk, regressor_lib.reframe_camera(cam, k, d, xp=jnp), pose
    if pose is None or root is None:
        raise ValueError("reframe with max_rotation > 0 needs the targets' pose and root joint")
    angle = jnp.deg2rad(jax.random.uniform(k3, (b,), minval=-max_rotation, maxval=max_rotation))
    landmarks, cam, pose = rotate_in_plane(landmarks, cam, pose, root, angle)
    # One bilinear resampling of the whole map: output pixel centre q_out → q_in = Rot(−θ)(q_out − d)/k.
    centres = (jnp.arange(size, dtype=images.dtype) + 0.5) / (size / 2.0) - 1.0
    qy, qx = jnp.meshgrid(centres, centres, indexing="ij")

    def one(im, kk, dd, th):
        x, y = (qx - dd[0]) / kk, (qy - dd[1]) / kk
        c, s = jnp.cos(th), jnp.sin(th)
        xi, yi = c * x + s * y, -s * x + c * y
        coords = [(yi + 1.0) * size / 2.0 - 0.5, (xi + 1.0) * size / 2.0 - 0.5]
        return jnp.stack([jax.scipy.ndimage.map_coordinates(im[..., ch], coords, order=1, mode="constant")
                          for ch in range(im.shape[-1])], -1)

    out = jax.vmap(one)(images, k, d, angle)
    lmk = landmarks * k[:, None, None] + d[:, None, :]
    return out, lmk, regressor_lib.reframe_camera(cam, k, d, xp=jnp), pose


def _batch(data: pretrain_lib.PretrainData, idx: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "images": data.images[idx], "landmarks": data.landmarks[idx], "shape": data.shape[idx],
        "expression": data.expression[idx], "pose": data.pose[idx], "cam": data.cam[idx],
    }


def _blank_targets(data: pretrain_lib.PretrainData) -> dict[str, np.ndarray]:
    """Placeholder targets of one unlabelled row (no supervised loss reads them; a unit camera
    scale keeps ``reframe`` finite)."""
    row = _batch(data, np.array([0]))
    out = {k: np.zeros_like(v[0]) for k, v in row.items() if k != "images"}
    out["cam"] = np.array([1.0, 0.0, 0.0], row["cam"].dtype)
    return out


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


def evaluate(encoder, encoder_config, data, face, batch_size: int = 64) -> dict[str, float]:
    """Mean errors on supervised examples (``synthetic.pretrain.evaluate_encoder``'s); with a landmark head
    also ``landmark_head_l1``, its points' mean |error| (normalized crop units, as ``landmark_l1``)."""
    out = pretrain_lib.evaluate_encoder(encoder, encoder_config, data, face)
    if encoder_config.landmark_head:
        graphdef, trainable, rest = encoder_lib.split_params(encoder, freeze_bn=True)
        fn = jax.jit(lambda images: encoder_lib.apply(graphdef, trainable, rest, images, landmarks=True)[1])
        n, errs = len(data), []
        for start in range(0, n, batch_size):
            idx = np.arange(start, start + batch_size) % n  # one batch shape (the last wraps around)
            pts = np.asarray(fn(jnp.asarray(data.images[idx], jnp.float32) / 255.0))
            errs.append(np.abs(pts - data.landmarks[idx]).mean(axis=(1, 2))[: min(batch_size, n - start)])
        out["landmark_head_l1"] = float(np.mean(np.concatenate(errs)))
    return out


def train(
    config: TrainConfig = TrainConfig(),
    *,
    distill: Sequence = (),
    video_dirs: Sequence = (),
    unlabelled: Sequence = (),
    weak_images: Sequence = (),
    face_landmarker=None,
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
      unlabelled: videos without annotations (``unlabelled_data``): self-supervision only (the
        photometric term when ``weight_photometric`` > 0, and identity consistency).
      weak_images: still images of other people (``weak_data``): MediaPipe's landmarks are their only
        targets (``weak_landmark_loss``), ``weak_share`` of every batch.
      face_landmarker: MediaPipe bundle whose face detector crops the unlabelled videos and still images
        (and the distilled frames with ``distill_crop="detector"``), and whose landmarker labels the still images.
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
        det = None
        if config.distill_crop == "detector":
            det = track_lib.FaceDetector(face_landmarker, track_lib.TrackConfig().min_detection_confidence)
        try:
            dis_train, dis_val = distillation_data(
                distill, image_size=config.image_size, holdout_fraction=config.holdout_fraction,
                video_dirs=video_dirs, landmarks=config.distill_landmarks,
                recrop=track_lib.detector_recrop(det) if det is not None else None)
        finally:
            if det is not None:
                det.close()
        if config.mirror and dis_train is not None:
            dis_train = _concat([dis_train, mirror_examples(dis_train, face)])
    profiled = None
    if config.profile_pitch and dis_train is not None:
        t1 = time.perf_counter()
        profiled = profile_lib.profile_examples(dis_train, face, config.profile_pitch, yaw_deg=config.profile_yaw,
                                                seed=config.seed)
        seconds["profile"] = time.perf_counter() - t1
    elif config.profile_pitch:
        logger.warning("--profile_pitch has no distilled frames to turn; ignored")
    if syn_train is None and dis_train is None:
        raise ValueError("no labelled training data: set synthetic_clips > 0 or give annotations to distil")
    unl = unlabelled_data(unlabelled, image_size=config.image_size, holdout_fraction=config.holdout_fraction,
                          frames_per_video=config.unlabelled_frames, face_landmarker=face_landmarker)
    weak = weak_data(weak_images, image_size=config.image_size, face_landmarker=face_landmarker, mirror=config.mirror)
    seconds["data"] = time.perf_counter() - t0
    counts = {"synthetic": len(syn_train) if syn_train is not None else 0,
              "distilled": len(dis_train) if dis_train is not None else 0,
              "unlabelled": len(unl) if unl is not None else 0,
              "weak": len(weak) if weak is not None else 0,
              "profiled": len(profiled) if profiled is not None else 0}
    logger.info("training data: %d synthetic, %d distilled (+%d turned out of plane), %d unlabelled, %d weakly "
                "labelled images (%.1f s)", counts["synthetic"], counts["distilled"], counts["profiled"],
                counts["unlabelled"], counts["weak"], seconds["data"])

    head_points = landmark_sets_lib.IBUG68_MIRROR.size if config.weight_landmark_head else 0
    enc_cfg = regressor_lib.regressor_config(face.flame.num_shape, face.flame.num_expression,
                                             image_size=config.image_size, landmark_head=head_points)
    if encoder is None:
        encoder = encoder_lib.init_encoder(enc_cfg, seed=config.seed)
    else:
        if head_points and not encoder.config.landmark_head:
            logger.info("adding a %d-point landmark head to the initial regressor", head_points)
            encoder = encoder_lib.with_landmark_head(encoder, head_points, seed=config.seed)
        enc_cfg = encoder.config
        if enc_cfg.image_size != config.image_size:
            # The network is convolutional up to a global pool: its weights fit any crop size.
            if enc_cfg.arch != "mobilenet":
                raise ValueError(f"the initial regressor takes {enc_cfg.image_size} px crops; image_size is "
                                 f"{config.image_size}")
            logger.info("continuing a %d px regressor at %d px", enc_cfg.image_size, config.image_size)
            enc_cfg = dataclasses.replace(enc_cfg, image_size=config.image_size)
            graphdef, _, _ = encoder_lib.split_params(encoder_lib.init_encoder(enc_cfg), freeze_bn=False)
            _, tr, rest = encoder_lib.split_params(encoder, freeze_bn=False)
            encoder = encoder_lib.merge_params(graphdef, tr, rest)
    pcfg = config.pretrain_config()
    graphdef, trainable, rest = encoder_lib.split_params(encoder, freeze_bn=config.freeze_bn)
    trainable = jax.tree.map(jnp.array, trainable)
    rest = jax.tree.map(jnp.array, rest)
    warm = max(1, min(config.warmup_steps, config.steps // 2))
    schedule = optax.warmup_cosine_decay_schedule(0.0, config.learning_rate, warm, max(config.steps, warm + 1),
                                                  end_value=config.learning_rate * 0.01)
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(trainable)
    gsize = config.group_size

    groups = config.batch_size // gsize
    n_unl = 0 if unl is None else max(1, int(round(groups * config.unlabelled_share)))
    n_weak = 0 if weak is None else max(1, int(round(groups * config.weak_share)))
    if n_unl + n_weak >= groups:
        raise ValueError(f"batch_size {config.batch_size} leaves no labelled group beside {n_unl} unlabelled and "
                         f"{n_weak} weakly labelled ones")
    labelled = groups - n_unl - n_weak
    n_dis = 0 if dis_train is None else (
        labelled if syn_train is None else int(round(labelled * config.distill_fraction)))
    n_syn = labelled - n_dis
    # Of the distilled groups, profile_share come from the turned copies (at least one, never all).
    n_prof = 0 if profiled is None or n_dis < 2 else min(n_dis - 1, max(1, int(round(n_dis * config.profile_share))))
    if profiled is not None and not n_prof:
        raise ValueError(f"batch_size {config.batch_size} leaves {n_dis} distilled group(s): --profile_pitch needs "
                         "two or more")
    # Rows of a batch: synthetic, distilled, weakly labelled, unlabelled groups in that order; the
    # photometric term sees the real ones (all but the synthetic).
    n_lab_rows, first_real = (n_syn + n_dis) * gsize, n_syn * gsize
    weak_rows = slice(n_lab_rows, n_lab_rows + n_weak * gsize)

    def loss_fn(tr, r, batch, key):
        batch = dict(batch)
        weak_visible = batch.pop("weak_visible", None)
        images = batch["images"].astype(jnp.float32) / 255.0
        if config.reframe_zoom or config.reframe_shift or config.reframe_rotation:
            key, sub = jax.random.split(key)
            root = root_joint(face, batch["shape"], batch["expression"]) if config.reframe_rotation else None
            images, lmk, cam, pose = reframe(images, batch["landmarks"], batch["cam"], sub,
                                             max_zoom=config.reframe_zoom, max_shift=config.reframe_shift,
                                             max_rotation=config.reframe_rotation, pose=batch["pose"], root=root)
            batch = dict(batch, landmarks=lmk, cam=cam, pose=pose)
        if config.augment:
            images = augment(images, key, blur=config.blur)
        head = bool(config.weight_landmark_head)
        want = ("maps" if config.weight_landmark_maps else True) if head else False
        if config.freeze_bn:
            raw, new_r = encoder_lib.apply(graphdef, tr, r, images, landmarks=want), r
        else:
            raw, new_r = encoder_lib.apply(graphdef, tr, r, images, update_bn_stats=True, landmarks=want)
        if head:
            raw, head_lmk, *head_maps = raw
        labelled_batch = {k: v[:n_lab_rows] for k, v in batch.items()}
        total, parts = pretrain_lib.pretrain_loss(raw[:n_lab_rows], labelled_batch, face, enc_cfg, pcfg)
        if head:
            ones = jnp.ones(head_lmk.shape[:2], bool)
            vis = ones if weak_visible is None else ones.at[weak_rows].set(weak_visible)
            rows = slice(0, weak_rows.stop if n_weak else n_lab_rows)
            parts["landmark_head"] = losses_lib.masked_mean(
                *losses_lib.landmark_l1(head_lmk[rows], batch["landmarks"][rows], vis[rows]))
            total = total + config.weight_landmark_head * parts["landmark_head"]
            if head_maps:
                ce = mobilenet_lib.heatmap_cross_entropy(head_maps[0][rows], batch["landmarks"][rows])
                parts["landmark_maps"] = losses_lib.masked_mean(ce, vis[rows])
                total = total + config.weight_landmark_maps * parts["landmark_maps"]
        p = encoder_lib.decode_outputs(raw, enc_cfg)
        if config.weight_projected:
            lab = slice(0, n_lab_rows)
            parts["projected"] = projected_vertex_loss(p.shape[lab], p.expression[lab], p.pose[lab], p.cam[lab],
                                                       labelled_batch, face)
            total = total + config.weight_projected * parts["projected"]
        parts["identity"] = identity_consistency(p.shape, gsize)
        total = total + config.weight_identity * parts["identity"]
        if n_weak:
            parts["weak_landmark"] = weak_landmark_loss(p.shape[weak_rows], p.expression[weak_rows], p.pose[weak_rows],
                                                        p.cam[weak_rows], batch["landmarks"][weak_rows], weak_visible,
                                                        face)
            total = total + config.weight_weak * pcfg.weight_landmark * parts["weak_landmark"]
        if config.weight_photometric and first_real < raw.shape[0]:
            real = slice(first_real, None)
            parts["photometric"] = self_supervised_loss(p.shape[real], p.expression[real], p.pose[real], p.cam[real],
                                                        images[real], face)
            total = total + config.weight_photometric * parts["photometric"]
        return total, (parts, new_r)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(tr, r, s, batch, key):
        (loss, (parts, new_r)), grads = jax.value_and_grad(loss_fn, has_aux=True)(tr, r, batch, key)
        updates, s = optimizer.update(grads, s, tr)
        return optax.apply_updates(tr, updates), new_r, s, dict(parts, total=loss)

    rng = np.random.default_rng(config.seed)
    key = jax.random.key(config.seed)
    blank = _blank_targets(syn_train if syn_train is not None else dis_train)
    history: dict[str, list[float]] = {}
    bar = progress("training the regressor", config.steps) if progress else None
    t0 = time.perf_counter()
    for it in range(config.steps):
        batch = None
        if n_syn:
            batch = _batch(syn_train, group_batches(syn_train.clip_index, n_syn, gsize, rng))
        if n_dis:
            b = _batch(dis_train, group_batches(dis_train.clip_index, n_dis - n_prof, gsize, rng))
            if n_prof:
                b = _merge_batches(b, _batch(profiled, group_batches(profiled.clip_index, n_prof, gsize, rng)))
            batch = _merge_batches(batch, b) if batch is not None else b
        if n_weak:
            idx_weak = group_batches(weak.clip_index, n_weak, gsize, rng)
            batch = _merge_batches(batch, dict({k: np.repeat(v[None], idx_weak.size, 0) for k, v in blank.items()},
                                               images=weak.images[idx_weak], landmarks=weak.landmarks[idx_weak]))
        if n_unl:
            idx = group_batches(unl.clip_index, n_unl, gsize, rng)
            batch = _merge_batches(batch, dict({k: np.repeat(v[None], idx.size, 0) for k, v in blank.items()},
                                               images=unl.images[idx]))
        if n_weak:
            batch["weak_visible"] = weak.visible[idx_weak]
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


def save(path, result: TrainResult, config: TrainConfig, *, distill=(), unlabelled=(), weak_images=(),
         overwrite: bool = True) -> Path:
    """Saves the regressor (``save_encoder``) and ``<path>.train.json`` (settings, errors, times)."""
    path = Path(path).expanduser().absolute()
    encoder_lib.save_encoder(path, result.encoder, result.encoder_config, overwrite=overwrite)
    summary = {
        "train_config": dataclasses.asdict(config),
        "encoder_config": result.encoder_config.to_dict(),
        "distilled_from": [str(a) for a in distill],
        "unlabelled_videos": [str(v) for v in unlabelled],
        "weak_images": [str(v) for v in weak_images],
        "counts": result.counts,
        "validation": result.validation,
        "seconds": result.seconds,
        "history": result.history,
    }
    summary_path(path).write_text(json.dumps(summary, indent=2) + "\n")
    return path
