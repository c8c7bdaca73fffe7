"""One clip, ready for the optimizer: decode, landmarks, crops (``prepare``).

**Input** (``media.sources.open_source``): one video file (a monocular clip); several video files
(synchronized views, paired by time: views of other frame rates or starts resampled to the slowest
view's frames and views of other lengths trimmed, with a warning and a record in ``metrics.json``,
or an error under ``strict``); one video plus ``view_boxes`` (a tiled composite cut into views); a folder of
frames; still images; or a decoded ``video.VideoClip``. ``PrepareConfig.frames`` selects frames.

**Landmarks.** The MediaPipe Face Landmarker, one per view, on worker threads while decoding runs in
the background (``media.detect.decode_and_detect``), cached per view; or precomputed 68-point
landmarks (``landmarks_file``). Frames without the face are invalid: excluded from the landmark loss
and from NME, their crops interpolated from the neighbours. Points MediaPipe only guesses (the far
side of a turned head) get no target (NaN). A view that never shows the face is kept but masked,
with a warning and a note; no face in any view is ``detect.NoFaceError``.

**Crops.** The reference recipe (``media.crops.compute_crops``) with temporal smoothing of the box
(``PrepareConfig.crop_smoothing``). Crops always come from the 68 points, whatever the landmark set
(the 105 set has no jaw and would crop the chin away). The transforms are kept, so everything maps
back to the original pixels. Frames are held in memory (uint8): use a range or a stride for long clips.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

import numpy as np

from neuface_jax.annotation.config import PrepareConfig
from neuface_jax.annotation.setup import AnnotateSetup
from neuface_jax.common import log as log_lib
from neuface_jax.media import crops as crops_lib
from neuface_jax.media.detect import DetectedClip, check_faces, decode_and_detect, read_precomputed_landmarks
from neuface_jax.media.sources import open_source

__all__ = ["PreparedClip", "prepare"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class PreparedClip:
    """One clip ready for the optimizer, with what its outputs need.

    Attributes:
      label: the clip, for messages.
      view_names: one name per view.
      images: uint8 ``[T, W, H, Wd, 3]`` original frames (views padded to the largest); None once
        dropped (only the overlay video needs them: ``without_images``).
      data: the unpadded ``fit.ClipData`` (encoder-sized crops, normalized landmark targets, masks).
      crop_transforms: ``[T, W, 2, 3]`` original pixels → crop pixels of ``crop_size``.
      crop_size: side of the reference crop (224).
      target_px: ``[T, W, L, 2]`` fitted landmark targets in original pixels (NaN = no target).
      valid: ``bool [T, W]`` the face was detected.
      frame_indices: ``int64 [T]`` source frame of each row.
      image_sizes: ``(width, height)`` per view.
      out_fps: frame rate of the selected frames (for the overlay video).
      info: the ``clip`` block of ``metrics.json``.
      notes: clip-level notes (warnings) for ``metrics.json``.
      seconds: time spent per stage so far.
      throughput: preprocessing rates.
    """

    label: str
    view_names: tuple[str, ...]
    images: np.ndarray | None
    data: Any
    crop_transforms: np.ndarray
    crop_size: int
    target_px: np.ndarray
    valid: np.ndarray
    frame_indices: np.ndarray
    image_sizes: tuple[tuple[int, int], ...]
    out_fps: float
    info: dict[str, Any]
    notes: tuple[str, ...]
    seconds: dict[str, float]
    throughput: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return int(self.frame_indices.shape[0])

    @property
    def num_views(self) -> int:
        return len(self.view_names)

    def without_images(self) -> "PreparedClip":
        """The clip without its original frames (what a run that writes no overlay keeps)."""
        return dataclasses.replace(self, images=None)


@dataclasses.dataclass(frozen=True, eq=False)
class _Landmarks:
    """A decoded clip's landmarks in original pixels."""

    points68: np.ndarray  # [T, W, 68, 2] every point (they place the crops)
    target_px: np.ndarray  # [T, W, L, 2] fitted targets (NaN = none)
    valid: np.ndarray  # bool [T, W]
    cached: tuple[bool, ...]  # per view: landmarks from the cache or a file


def _decode(setup: AnnotateSetup, src, config: PrepareConfig, landmarks_file, progress, on_first_face):
    """``(DetectedClip, _Landmarks)``: MediaPipe landmarks (cached ones read), or the precomputed file's."""
    w = len(src.view_names)
    what = "decode" if landmarks_file is not None else "decode + detect"
    with progress(f"{what} ({w} view{'s' * (w > 1)})", src.num_frames) as bar:
        det = decode_and_detect(
            src, detect=landmarks_file is None, model_path=setup.model_path, options=setup.options,
            cache_dir=config.cache_dir, use_cache=config.use_cache, progress=bar, on_first_face=on_first_face,
        )
    if landmarks_file is None:
        pts68, targets, valid = det.targets(setup.face_setup.landmark_ids)
        return det, _Landmarks(points68=pts68, target_px=targets, valid=valid, cached=tuple(det.cached))
    pts68, targets, valid = read_precomputed_landmarks(landmarks_file, det.view_names, det.frame_indices, det.label)
    if valid.any() and on_first_face is not None:
        on_first_face()
    return det, _Landmarks(points68=pts68, target_px=targets, valid=valid, cached=(True,) * w)


def _notes(det: DetectedClip, lm: _Landmarks, landmarks_file) -> list[str]:
    """Raises NoFaceError without any face; notes (and warns about) views without one."""
    where = "in the precomputed landmarks of" if landmarks_file is not None else "detected in"
    notes = list(det.notes) + list(check_faces(det.label, det.view_names, lm.valid, where=where).values())
    if landmarks_file is not None:
        notes.append(f"landmarks from {landmarks_file} (precomputed, not MediaPipe)")
    elif any(lm.cached):
        notes.append(f"landmarks from the cache for views {[n for n, c in zip(det.view_names, lm.cached) if c]}")
    return notes


def _crop_transforms(points68, valid, sizes, config: PrepareConfig, crop_size: int) -> np.ndarray:
    """``[T, W, 2, 3]`` crop transforms: the recipe per view with a face, a centred square otherwise."""
    t, w = valid.shape
    crop_m = np.zeros((t, w, 2, 3))
    for v in range(w):
        if valid[:, v].any():
            crop_m[:, v] = crops_lib.compute_crops(
                points68[:, v], valid[:, v], size=crop_size, smoothing=config.smoothing_method,
                window=config.smoothing_window,
            ).matrices
        else:  # a view without a face: frames masked anyway
            cw, ch = sizes[v]
            crop_m[:, v] = crops_lib.box_to_transform(np.array([cw / 2.0, ch / 2.0, float(min(cw, ch))]), crop_size)
    return crop_m


def _info(det: DetectedClip, lm: _Landmarks, config: PrepareConfig, landmarks_file) -> dict[str, Any]:
    """The ``clip`` block of ``metrics.json``."""
    src, idx, valid, names = det.source, det.frame_indices, lm.valid, det.view_names
    return {
        "input": list(src.paths) or [det.label],
        "kind": src.kind,
        "views": list(names),
        "view_boxes": {n: list(c[1]) for n, c in zip(names, src.cache_ids) if c and c[1] is not None} or None,
        "image_sizes": {n: list(s) for n, s in zip(names, det.image_sizes)},
        "frames": len(idx),
        "first_last_frame_index": [int(idx[0]), int(idx[-1])],
        "stride": int(config.frames.stride),
        "fps": det.fps,
        "valid_fraction": {n: float(valid[:, v].mean()) for v, n in enumerate(names)},
        "views_without_face": [n for v, n in enumerate(names) if not valid[:, v].any()],
        "landmarks": str(landmarks_file) if landmarks_file is not None else "mediapipe",
        "crop_smoothing": config.crop_smoothing,
        "smoothing_window": config.smoothing_window,
        "video": det.info,  # stream starts, rotation, sync (trims, resampling), shot cuts, invalid frames
    }


def _log_decoded(det: DetectedClip, lm: _Landmarks, seconds: float, detected: bool) -> None:
    t, w = det.num_frames, det.num_views
    faces = ", ".join(f"{n} {100 * lm.valid[:, v].mean():.0f}%" for v, n in enumerate(det.view_names))
    logger.info(
        "%s: %d frames x %d view(s) decoded%s in %.1fs (%.1f view-frames/s); faces in %s",
        det.label, t, w, " and detected" if detected else "", seconds, t * w / max(seconds, 1e-9), faces,
    )


def prepare(
    setup: AnnotateSetup,
    videos,
    config: PrepareConfig = PrepareConfig(),
    *,
    view_names: Sequence[str] | None = None,
    view_boxes=None,
    landmarks_file=None,
    label: str | None = None,
    progress: log_lib.ProgressFactory | None = None,
    on_first_face: Callable[[], None] | None = None,
) -> PreparedClip:
    """Decodes a clip, finds its landmarks (MediaPipe, or ``landmarks_file``) and builds the crops.

    ``videos``, ``view_names``, ``view_boxes``: as ``annotate``; ``landmarks_file`` takes
    precomputed 68-point landmarks (``media.detect.read_precomputed_landmarks``) instead of running
    MediaPipe (ibug68 set only); ``label`` names the clip in messages (default: its input paths);
    ``on_first_face()`` is called once as soon as some view has a face.

    Raises:
      detect.NoFaceError, video.VideoError, detect.ModelNotFoundError, ValueError: as ``annotate``.
    """
    progress = progress or log_lib.quiet
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    if landmarks_file is not None and setup.face_setup.landmark_set != "ibug68":
        raise ValueError(f"precomputed 68-point landmarks ({landmarks_file}) need landmark_set='ibug68'")
    src = open_source(videos, view_names, view_boxes, config.frames, config.strict, config.fps)
    if label:
        src = dataclasses.replace(src, label=str(label))
    seconds["setup"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    det, lm = _decode(setup, src, config, landmarks_file, progress, on_first_face)
    seconds["decode_detect"] = pre = time.perf_counter() - t0
    notes = _notes(det, lm, landmarks_file)
    _log_decoded(det, lm, pre, detected=landmarks_file is None)

    t0 = time.perf_counter()
    crop_size = crops_lib.CROP_SIZE
    crop_m = _crop_transforms(lm.points68, lm.valid, det.image_sizes, config, crop_size)
    data = crops_lib.prepare_clip(
        det.images, lm.target_px, crop_m, encoder_size=setup.encoder_config.image_size, crop_size=crop_size,
        valid=lm.valid, name=det.label,
    )
    seconds["crops"] = time.perf_counter() - t0
    t, w = det.num_frames, det.num_views
    logger.info("%s: %d crops of %d px (encoder input %d px) in %.1fs", det.label, t * w, crop_size,
                setup.encoder_config.image_size, seconds["crops"])
    throughput = {
        "preprocess_frames_per_s": t / pre if pre > 0 else float("nan"),
        "preprocess_view_frames_per_s": t * w / pre if pre > 0 else float("nan"),
        "detection_cached": bool(all(lm.cached)),
    }
    return PreparedClip(
        label=det.label, view_names=tuple(det.view_names), images=det.images, data=data, crop_transforms=crop_m,
        crop_size=crop_size, target_px=lm.target_px, valid=lm.valid,
        frame_indices=np.asarray(det.frame_indices, np.int64), image_sizes=tuple(det.image_sizes),
        out_fps=det.out_fps, info=_info(det, lm, config, landmarks_file), notes=tuple(notes), seconds=seconds,
        throughput=throughput,
    )
