"""The corpus a face model is learned from: landmark targets of many clips, read from a manifest.

A manifest (``neuface_jax.dataset.manifest``) lists clips of any kind:

* **synth** clip folders (``synthetic.synth.write_clip``) are read with ``synth.read_clip`` without
  decoding their videos: their detector-like landmarks go through the clip's crop transforms into
  normalized crop coordinates, and their ground-truth identity is kept for evaluation;
* **videos, MEAD takes, frame folders** go through the annotation stage's own preparation
  (``dataset.runner.prepare_entry``: decoding, MediaPipe with its landmark cache, crop boxes).

A corpus uses one landmark set and one embedding for all its clips, so synthetic clips (a
silhouette-following contour: the dynamic embedding) and real ones (MediaPipe's mesh-fixed jaw
points: the static contour) are not mixed in one corpus under the 68-point set.

Each clip keeps ``max_frames`` frames spread evenly over the selected part (``part``: all frames,
the first half or the second half, so a clip's two halves can serve as learning and held-out data).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import flame_jax
from neuface_jax.annotation import face as face_lib
from neuface_jax.annotation.config import LANDMARK_SETS, PrepareConfig, SetupConfig
from neuface_jax.annotation.setup import make_setup
from neuface_jax.common import log as log_lib
from neuface_jax.common.settings import setting
from neuface_jax.core import camera as camera_lib
from neuface_jax.dataset.config import DatasetConfig
from neuface_jax.dataset.manifest import ClipEntry, read_manifest
from neuface_jax.dataset.runner import prepare_entry
from neuface_jax.media import crops as crops_lib
from neuface_jax.model_learning.fit import LandmarkClip
from neuface_jax.synthetic import synth as synth_lib

logger = logging.getLogger(__name__)

PARTS = ("all", "first_half", "second_half")
CONTOURS = ("auto", "static", "dynamic")


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """Which landmarks and frames of each clip the corpus holds."""

    landmark_set: str = setting("ibug68", "Landmark set: ibug68 (68 points) or mediapipe105.", choices=LANDMARK_SETS)
    contour: str = setting(
        "auto", "68-point jaw contour: auto = dynamic for synthetic clips (silhouette-following landmarks), "
        "static for videos (MediaPipe).", choices=CONTOURS)
    part: str = setting("all", "Frames of each clip: all, first_half or second_half.", choices=PARTS)
    max_frames: int = setting(16, "Frames kept per clip, evenly spaced over the part.")
    image_size: int = setting(
        0, "Side (px) of the face crops kept per frame for the photometric albedo step (0 = landmarks only; "
        "learn-model sets 64 when --albedo_components > 0).", flag="corpus_image_size")

    def __post_init__(self):
        if self.landmark_set not in LANDMARK_SETS:
            raise ValueError(f"landmark_set must be one of {LANDMARK_SETS}, got {self.landmark_set!r}")
        if self.contour not in CONTOURS:
            raise ValueError(f"contour must be one of {CONTOURS}, got {self.contour!r}")
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")
        if int(self.max_frames) < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if int(self.image_size) < 0:
            raise ValueError(f"image_size must be >= 0, got {self.image_size}")


@dataclasses.dataclass(frozen=True)
class CorpusClip:
    """One clip of the corpus.

    Attributes:
      clip_id: the manifest's id.
      data: its ``LandmarkClip`` (normalized crop coordinates and masks).
      frame_indices: [T] source frame of each row.
      view_names: one name per view.
      truth: synthetic clips only: ``shape`` [S] ground-truth identity coefficients, ``albedo``
        [V, 3] the rendered per-vertex albedo, and ``model`` (the generating model's name); None for
        real clips.
      images: [T, W, S, S, 3] float32 RGB in [0, 1], the face crops in the landmarks' normalized
        frame (``CorpusConfig.image_size``); None when not asked for.
    """

    clip_id: str
    data: LandmarkClip
    frame_indices: np.ndarray
    view_names: tuple[str, ...]
    truth: dict[str, Any] | None = None
    images: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The clips, and the model embedding their landmarks are fitted with."""

    clips: tuple[CorpusClip, ...]
    embedding: flame_jax.LandmarkEmbedding
    landmark_set: str
    contour: str

    def __len__(self) -> int:
        return len(self.clips)


def select_frames(num_frames: int, part: str, max_frames: int) -> np.ndarray:
    """Row indices of a clip of ``num_frames``: the part, then at most ``max_frames`` evenly spaced."""
    if num_frames < 1:
        raise ValueError("a clip without frames")
    half = num_frames // 2
    lo, hi = {"all": (0, num_frames), "first_half": (0, max(half, 1)), "second_half": (half, num_frames)}[part]
    n = min(max_frames, hi - lo)
    return np.unique(np.round(np.linspace(lo, hi - 1, n)).astype(np.int64))


def _synth_clip(entry: ClipEntry, config: CorpusConfig) -> CorpusClip:
    folder = Path(entry.landmarks).parent if entry.landmarks else Path(entry.inputs[0]).parent
    clip = synth_lib.read_clip(folder, load_images=int(config.image_size) > 0)
    if config.landmark_set == "ibug68":
        lmk, vis = clip.landmarks68, clip.visible68
    else:
        if clip.landmarks_mp is None:
            raise ValueError(f"{entry.clip_id}: {folder} has no MediaPipe-style landmarks (landmark_set mediapipe105)")
        lmk, vis = clip.landmarks_mp, clip.visible_mp
    rows = select_frames(clip.num_frames, config.part, config.max_frames)
    size = int(clip.meta.get("config", {}).get("crop_size", synth_lib.SynthConfig().crop_size))
    crop_px = camera_lib.apply_affine(np.asarray(lmk, np.float64)[rows],
                                      np.asarray(clip.crop_transforms, np.float64)[rows], xp=np)
    target = camera_lib.pixels_to_normalized(crop_px, size, xp=np)
    mask = np.asarray(vis, bool)[rows] & np.all(np.isfinite(target), -1)
    frame = np.asarray(clip.valid, bool)[rows] & mask.any(-1)
    data = LandmarkClip(landmarks=np.nan_to_num(target).astype(np.float32),
                        landmarks_mask=(mask & frame[..., None]).astype(np.float32),
                        frame_mask=frame.astype(np.float32))
    truth = {"shape": np.asarray(clip.gt["shape"], np.float32), "model": str(clip.meta.get("model", ""))}
    if "albedo" in clip.gt:
        truth["albedo"] = np.asarray(clip.gt["albedo"], np.float32)
    images = None
    if int(config.image_size) > 0:
        s = int(config.image_size)
        scale = np.array([[s / size], [s / size]])
        transforms = np.asarray(clip.crop_transforms, np.float64)[rows] * scale  # → crops of s pixels
        images = np.stack([crops_lib.crop_frames(np.asarray(clip.images)[rows, w], transforms[:, w], s)
                           for w in range(len(clip.view_names))], 1).astype(np.float32) / 255.0
    return CorpusClip(entry.clip_id, data, rows, tuple(clip.view_names), truth, images)


def _video_clip(setup, entry: ClipEntry, config: CorpusConfig, prepare_config: PrepareConfig) -> CorpusClip:
    prepared = prepare_entry(setup, entry, DatasetConfig(prepare=prepare_config))
    rows = select_frames(prepared.num_frames, config.part, config.max_frames)
    d = prepared.data
    data = LandmarkClip(
        landmarks=np.nan_to_num(np.asarray(d.landmarks, np.float32)[rows]),
        landmarks_mask=np.asarray(d.landmarks_mask, np.float32)[rows],
        frame_mask=np.asarray(d.frame_mask, np.float32)[rows],
    )
    images = None
    if int(config.image_size) > 0:
        crops = np.asarray(d.images, np.float32)[rows]  # [T, W, E, E, 3] encoder-sized crops, same frame
        s, e = int(config.image_size), crops.shape[-2]
        identity = np.array([[s / e, 0.0, 0.0], [0.0, s / e, 0.0]])
        images = np.stack([[crops_lib.warp_crop(crops[t, w], identity, s, interpolation="area")
                            for w in range(crops.shape[1])] for t in range(crops.shape[0])]).astype(np.float32)
    return CorpusClip(entry.clip_id, data, prepared.frame_indices[rows], tuple(prepared.view_names), None, images)


def load_corpus(
    entries: Sequence[ClipEntry] | str | Path,
    model: flame_jax.FlameModel | None = None,
    embedding: flame_jax.LandmarkEmbedding | str | None = None,
    config: CorpusConfig = CorpusConfig(),
    *,
    prepare_config: PrepareConfig = PrepareConfig(),
    face_landmarker: str | None = None,
    progress: log_lib.ProgressFactory | None = None,
) -> Corpus:
    """Reads the clips of a manifest (a path or its entries) as landmark targets.

    Args:
      entries: a manifest file or its ``ClipEntry`` list.
      model, embedding: the model the corpus will be fitted with (default: the demo head) and its
        landmark embedding (required with a model other than the demo head).
      config: landmark set, contour, frames.
      prepare_config, face_landmarker: how video clips are decoded and detected (as ``annotate``).
      progress: a progress factory.

    Raises:
      ValueError: an empty manifest, a mixed synthetic/video corpus under the 68-point set, a clip
        without landmarks (naming it).
    """
    if isinstance(entries, (str, Path)):
        entries = read_manifest(entries)
    entries = list(entries)
    if not entries:
        raise ValueError("the manifest lists no clips")
    kinds = {"synth" if e.kind == "synth" else "video" for e in entries}
    contour = config.contour
    if config.landmark_set == "ibug68" and contour == "auto":
        if len(kinds) > 1:
            raise ValueError("the manifest mixes synthetic clips and videos: their 68-point contours differ "
                             "(silhouette-following vs MediaPipe's mesh-fixed); learn from one kind, or pass "
                             "contour=static or dynamic explicitly")
        contour = "dynamic" if kinds == {"synth"} else "static"
    face_setup = face_lib.resolve_face_model(model, embedding, landmark_set=config.landmark_set, contour=contour)
    setup = None
    if "video" in kinds:
        setup = make_setup(
            # The encoder is never used here: only the landmark preparation.
            SetupConfig(landmark_set=config.landmark_set, contour=contour, face_landmarker=face_landmarker,
                        encoder="random"),
            model=face_setup.model, embedding=face_setup.embedding,
        )
    progress = progress or log_lib.quiet
    clips = []
    with progress("corpus clips", len(entries)) as bar:
        for e in entries:
            try:
                clip = _synth_clip(e, config) if e.kind == "synth" else _video_clip(setup, e, config, prepare_config)
            except (OSError, ValueError) as err:
                raise ValueError(f"{e.clip_id}: cannot read its landmarks ({type(err).__name__}: {err})") from err
            if not np.any(clip.data.frame_mask):
                raise ValueError(f"{e.clip_id}: no frame with landmarks in the selected part ({config.part})")
            clips.append(clip)
            bar.update()
    logger.info("corpus: %d clips (%s), %s landmarks, %s contour, <= %d frames each", len(clips),
                ", ".join(sorted(kinds)), config.landmark_set, face_setup.contour, config.max_frames)
    return Corpus(clips=tuple(clips), embedding=face_setup.embedding, landmark_set=config.landmark_set,
                  contour=face_setup.contour)


__all__ = ["CONTOURS", "PARTS", "Corpus", "CorpusClip", "CorpusConfig", "load_corpus", "select_frames"]
