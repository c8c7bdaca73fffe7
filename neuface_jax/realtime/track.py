"""Live tracking: a face detector places each crop, the regressor fits it, a filter smooths the fits.

Per frame (``Tracker.step``):

1. **Detect** (``FaceDetector``: BlazeFace short range, ``face_detector.tflite`` read from inside
   MediaPipe's ``face_landmarker.task`` bundle, never extracted) every ``redetect_every`` frames
   (default every frame), and whenever there is no track. The detector's box gives the crop
   (``detection_box``: ``detector_crop_scale`` × its width, shifted down by ``detector_offset_y``).
   The regressor localizes a face in its crop only weakly (a shifted crop moves its landmarks by
   about a third of the shift), so a crop placed from the previous fit drifts with it; the
   detector measures the face's place afresh each time (``detector_crop=False`` instead follows
   the fit between detections, refined once after a new detection).
2. **Follow**: between detections, the crop is the landmark box of the previous frame's fit.
3. **Stabilize** (``stable_crop``): the crop box passes through a One-Euro filter, so that the
   detector's frame-to-frame jitter does not reach the regressor.
4. **Regress** the crop (``regressor.Regressor``: one compiled call), then **check**: a fit whose
   landmark box leaves the frame, shrinks below ``min_face_px`` or differs in size from its crop by
   more than ``max_size_change`` ends the track (the next frame re-detects). At a detection, a face
   overlapping the track less than ``min_iou`` starts a new track; no face at all marks the frame
   invalid.
5. **Filter** (``Smoother``): expression, pose and the camera *in frame coordinates* through a
   One-Euro filter; the identity is the running mean of the track's per-frame identities.

``track(source, ...)`` runs this over a ``sources.FrameSource`` (or anything ``open_source``
accepts) and yields one ``TrackedFrame`` per frame with the per-stage times (decode, detect, crop,
regress, filter). ``ParamsSink`` writes the stream as a ``params.npz`` (the format ``annotate``
writes, read back by ``neuface_jax.load_params``) or as JSON lines, flushed per frame.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from neuface_jax.common.settings import setting
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import export as export_lib
from neuface_jax.media import landmarker as landmarker_lib
from neuface_jax.priors import starting as starting_lib
from neuface_jax.realtime import filters as filters_lib
from neuface_jax.realtime import regressor as regressor_lib
from neuface_jax.realtime import sources as sources_lib

__all__ = [
    "STAGES",
    "FaceDetector",
    "ParamsSink",
    "Smoother",
    "TrackConfig",
    "TrackedFrame",
    "Tracker",
    "detection_box",
    "detector_recrop",
    "load_regressor",
    "open_frames",
    "track",
]

logger = logging.getLogger(__name__)

#: Timed stages of a frame, in order.
STAGES = ("decode", "detect", "crop", "regress", "filter")


@dataclasses.dataclass(frozen=True)
class TrackConfig:
    """Settings of the live tracker."""

    regressor: str | None = setting(None, "Regressor checkpoint (train-regressor --out); default: the packaged "
                                          "small encoder (slower, trained on demo-head renders only).")
    face_landmarker: str | None = setting(None, "MediaPipe face_landmarker.task (its face_detector.tflite is used); "
                                                "default: $NEUFACE_FACE_LANDMARKER or the user cache.")
    redetect_every: int = setting(1, "Run the face detector every N frames even while tracking (0 = only "
                                     "when the track is lost).")
    min_detection_confidence: float = setting(0.5, "Face detector score threshold.")
    detector_crop_scale: float = setting(1.16, "Crop side at a detection, in detector box widths (the project's "
                                               "crop measured against BlazeFace's box).")
    detector_offset_y: float = setting(0.09, "Crop centre below the detector box centre at a detection, in box "
                                             "widths.")
    min_face_px: float = setting(24.0, "A fitted face smaller than this (crop side, pixels) ends the track.")
    max_size_change: float = setting(1.6, "A crop growing or shrinking by more than this factor between frames "
                                          "ends the track.")
    min_iou: float = setting(0.3, "At a re-detection, a detected face overlapping the track less than this "
                                  "replaces it.")
    filter: bool = setting(True, "One-Euro filtering of expression, pose and camera (in frame coordinates); "
                                 "identity averaged over the track.")
    detector_crop: bool = setting(True, "At every detection, crop at the detector's box (the face's place measured "
                                        "afresh) instead of following the previous fit; with redetect_every=1 "
                                        "every crop comes from the detector.")
    mirror_average: bool = setting(False, "Regress each crop and its left/right mirror and average the two "
                                          "(mirrored back, one batch of two): more accurate, about a third slower.")
    stable_crop: bool = setting(True, "Smooth the crop box over time with the One-Euro settings (the crop's "
                                      "jitter otherwise reaches the regressor).")
    one_euro: filters_lib.OneEuroConfig = setting(filters_lib.OneEuroConfig(), "One-Euro settings.", cli=False)
    head_fit: regressor_lib.HeadFit = setting(regressor_lib.HeadFit(), "How a regressor with a landmark head fits "
                                                                         "the head rotation and camera to its points.",
                                              cli=False)

    def __post_init__(self):
        if self.redetect_every < 0:
            raise ValueError(f"redetect_every must be >= 0, got {self.redetect_every}")
        if not 0.0 <= self.min_detection_confidence <= 1.0:
            raise ValueError(f"min_detection_confidence must be in [0, 1], got {self.min_detection_confidence}")
        if not self.detector_crop_scale > 0 or not self.max_size_change > 1 or not self.min_face_px > 0:
            raise ValueError("detector_crop_scale and min_face_px must be positive and max_size_change above 1")


# --------------------------------------------------------------------------- detector
class FaceDetector:
    """MediaPipe's BlazeFace detector, loaded from the landmarker bundle in memory (IMAGE mode).

    ``detect(image)`` → ``float32 [N, 5]`` rows ``(x0, y0, x1, y1, score)`` in pixels, best first.
    """

    def __init__(self, model_path=None, min_confidence: float = 0.5):
        # Lazy: mediapipe is heavy and only the live detector needs it.
        with landmarker_lib.quiet_native_logs():
            import mediapipe as mp
            from mediapipe.tasks.python import vision

        self.model_path = landmarker_lib.resolve_model_path(model_path)
        try:
            with zipfile.ZipFile(self.model_path) as z:
                buf = z.read("face_detector.tflite")
        except (zipfile.BadZipFile, KeyError) as e:
            raise ValueError(f"{self.model_path}: not a face landmarker bundle with a face_detector.tflite ({e})") from e
        self._mp = mp
        opts = vision.FaceDetectorOptions(
            base_options=mp.tasks.BaseOptions(model_asset_buffer=buf), running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=float(min_confidence),
        )
        with landmarker_lib.quiet_native_logs():
            self._detector = vision.FaceDetector.create_from_options(opts)

    def detect(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        res = self._detector.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=image))
        rows = [(b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height, d.categories[0].score)
                for d in res.detections for b in (d.bounding_box,)]
        rows.sort(key=lambda r: -r[4])
        return np.asarray(rows, np.float32).reshape(-1, 5)

    def close(self) -> None:
        if self._detector is not None:
            with landmarker_lib.quiet_native_logs():
                self._detector.close()
            self._detector = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detection_box(detection, config: TrackConfig = TrackConfig()) -> np.ndarray:
    """The crop box ``(cx, cy, side)`` of a detector row ``(x0, y0, x1, y1, score)``: the box's width ×
    ``detector_crop_scale``, centred ``detector_offset_y`` widths below the box's centre."""
    x0, y0, x1, y1 = (float(v) for v in detection[:4])
    w = x1 - x0
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2 + w * config.detector_offset_y, w * config.detector_crop_scale])


def detector_recrop(detector: "FaceDetector", config: TrackConfig = TrackConfig()):
    """A ``training.labels`` re-crop: each labelled frame cropped where the live tracker crops it.

    ``recrop(image, transform, size)`` runs ``detector`` on the frame and returns the crop transform
    (image → ``size`` pixels) of ``detection_box`` for the detected face that overlaps the annotation's crop
    most, or None (the annotation's crop is kept) when no face overlaps it by ``config.min_iou``. Training
    on these crops shows the regressor its faces framed as the tracker frames them (BlazeFace's box moves
    against the face with head pose and person, by up to a tenth of the crop), not as ``annotate`` framed them.
    """

    def recrop(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray | None:
        dets = detector.detect(image)
        if not len(dets):
            return None
        ref = regressor_lib.box_of_transform(transform, size)
        boxes = [detection_box(d, config) for d in dets]
        ious = [_box_iou(b, ref) for b in boxes]
        best = int(np.argmax(ious))
        if ious[best] < config.min_iou:
            return None
        return crops_lib.box_to_transform(tuple(float(v) for v in boxes[best]), size)

    return recrop


def _box_iou(a, b) -> float:
    """IoU of two square boxes ``(cx, cy, side)``."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[2] / 2, a[0] + a[2] / 2, a[1] + a[2] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[2] / 2, b[0] + b[2] / 2, b[1] + b[2] / 2
    iw, ih = max(0.0, min(ax1, bx1) - max(ax0, bx0)), max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    return float(inter / (a[2] ** 2 + b[2] ** 2 - inter + 1e-9))


# --------------------------------------------------------------------------- temporal filter
class Smoother:
    """Temporal filtering of one track's per-frame predictions.

    The identity is the running mean of the track's identities (one person). Expression, pose and
    camera go through a One-Euro filter, the camera *in frame coordinates*: each prediction's camera
    belongs to its own crop, and crops move from frame to frame, so a camera filtered in crop
    coordinates would pass the crop's jitter straight through. The camera is moved to a frame
    reference (the track's first crop: ``reframe_camera``), filtered, and moved back into the current
    crop.
    """

    def __init__(self, config: filters_lib.OneEuroConfig = filters_lib.OneEuroConfig()):
        self._filter = filters_lib.OneEuroFilter(config)
        self.reset()

    def reset(self) -> None:
        """Forgets the track."""
        self._filter.reset()
        self._identity_sum = None
        self._identity_n = 0
        self._reference = None

    def __call__(self, pred: regressor_lib.Prediction, box, t: float) -> regressor_lib.Prediction:
        """The filtered prediction (landmarks not updated) of ``pred``, regressed from the crop ``box``
        ``(cx, cy, side)`` at time ``t`` (seconds)."""
        box = np.asarray(box, np.float64)
        if self._reference is None:
            self._reference = box.copy()
        ref = self._reference
        # Crop-normalized → reference-normalized coordinates: q → k·q + d.
        k = box[2] / ref[2]
        d = (box[:2] - ref[:2]) / (ref[2] / 2.0)
        self._identity_sum = pred.shape.astype(np.float64) if self._identity_sum is None else (
            self._identity_sum + pred.shape)
        self._identity_n += 1
        identity = self._identity_sum / self._identity_n
        cam = regressor_lib.reframe_camera(pred.cam.astype(np.float64), k, d)
        rest = self._filter(np.concatenate([pred.expression, pred.pose, cam]), t)
        n = pred.expression.size + pred.pose.size
        cam = regressor_lib.reframe_camera(rest[n:], 1.0 / k, -d / k)
        return pred.with_vector(np.concatenate([identity, rest[:n], cam]))


# --------------------------------------------------------------------------- tracker
@dataclasses.dataclass
class TrackedFrame:
    """The tracker's output for one frame.

    Attributes:
      index, time_s: the source frame's number and time.
      valid: a face was fitted.
      status: "tracked", "detected", "no face" or "lost".
      params: the (filtered) ``regressor.Prediction`` (None when not valid).
      raw: the unfiltered prediction.
      box: the crop box ``(cx, cy, side)`` in pixels (None when not valid).
      crop_transform: [2, 3] image pixels → crop pixels of the regressor's crop.
      crop_size: the regressor's crop side.
      seconds: per-stage times (``STAGES``).
      image: the frame (RGB uint8).
    """

    index: int
    time_s: float
    valid: bool
    status: str
    params: regressor_lib.Prediction | None
    raw: regressor_lib.Prediction | None
    box: np.ndarray | None
    crop_transform: np.ndarray | None
    crop_size: int
    seconds: dict
    image: np.ndarray


class Tracker:
    """Follows one face through a stream of frames (see the module docstring)."""

    def __init__(self, regressor: regressor_lib.Regressor, detector: FaceDetector, config: TrackConfig = TrackConfig()):
        self.regressor, self.detector, self.config = regressor, detector, config
        self._smoother = Smoother(config.one_euro)
        self._box_filter = filters_lib.OneEuroFilter(config.one_euro)
        self.reset()

    def reset(self) -> None:
        """Forgets the track (the next frame detects)."""
        self._box = None
        self._since_detect = 0
        self._smoother.reset()
        self._box_filter.reset()
        self._crop_reference = None

    def _fit_box(self, pred: regressor_lib.Prediction, m: np.ndarray) -> np.ndarray:
        pts = crops_lib.apply_transform(crops_lib.from_normalized(pred.landmarks, self.regressor.image_size),
                                        crops_lib.invert_transform(m))
        return crops_lib.landmark_boxes(pts[None])[0]

    def _plausible(self, box: np.ndarray, previous, shape) -> bool:
        h, w = shape[:2]
        if not np.all(np.isfinite(box)) or box[2] < self.config.min_face_px:
            return False
        if not (0 <= box[0] <= w and 0 <= box[1] <= h) or box[2] > 4 * max(h, w):
            return False
        if previous is not None:
            r = box[2] / previous[2]
            if r > self.config.max_size_change or r < 1.0 / self.config.max_size_change:
                return False
        return True

    def _regress(self, image, box, seconds):
        t = time.perf_counter()
        crop, m = self.regressor.crop(image, box)
        seconds["crop"] += time.perf_counter() - t
        t = time.perf_counter()
        pred = self.regressor(crop)
        seconds["regress"] += time.perf_counter() - t
        return pred, m

    def step(self, frame: sources_lib.Frame, decode_s: float = 0.0) -> TrackedFrame:
        """Tracks the face in one frame."""
        image = frame.image
        seconds = dict.fromkeys(STAGES, 0.0)
        seconds["decode"] = decode_s
        cfg = self.config
        status = "tracked"
        due = cfg.redetect_every and self._since_detect >= cfg.redetect_every
        if self._box is None or due:
            t = time.perf_counter()
            dets = self.detector.detect(image)
            seconds["detect"] = time.perf_counter() - t
            self._since_detect = 0
            boxes = [detection_box(d, cfg) for d in dets]
            if not boxes:
                self.reset()
                return TrackedFrame(frame.index, frame.time_s, False, "no face", None, None, None, None,
                                    self.regressor.image_size, seconds, image)
            ious = [_box_iou(b, self._box) for b in boxes] if self._box is not None else [0.0]
            if max(ious) < cfg.min_iou:
                # A new track (or the tracked face is gone and another one is there).
                self.reset()
                status = "detected"
                if cfg.detector_crop:
                    self._box = boxes[0]
                else:  # start from the detector's box, refined once by a fit
                    pred, m = self._regress(image, boxes[0], seconds)
                    self._box = self._fit_box(pred, m)
            elif cfg.detector_crop:
                self._box = boxes[int(np.argmax(ious))]
        self._since_detect += 1
        previous = self._box
        if cfg.stable_crop:
            if self._crop_reference is None:
                self._crop_reference = previous[2]
            previous = self._box_filter(previous / self._crop_reference, frame.time_s) * self._crop_reference
        pred, m = self._regress(image, previous, seconds)
        box = self._fit_box(pred, m)
        if not self._plausible(box, previous, image.shape):
            self.reset()
            return TrackedFrame(frame.index, frame.time_s, False, "lost", None, pred, None, None,
                                self.regressor.image_size, seconds, image)
        self._box = box
        t = time.perf_counter()
        out = pred
        if cfg.filter:
            out = self._smoother(pred, regressor_lib.box_of_transform(m, self.regressor.image_size), frame.time_s)
            out = dataclasses.replace(out, landmarks=self.regressor.landmarks(out))
        seconds["filter"] = time.perf_counter() - t
        return TrackedFrame(frame.index, frame.time_s, True, status, out, pred, previous, m,
                            self.regressor.image_size, seconds, image)


def load_regressor(path=None, face=None, *, mirror_average: bool = False,
                   head_fit: regressor_lib.HeadFit = regressor_lib.HeadFit()) -> regressor_lib.Regressor:
    """The regressor at ``path``, or the packaged small encoder (with a warning) when None
    (``mirror_average``, ``head_fit``: ``regressor.Regressor``'s)."""
    if path is None:
        logger.warning("no --regressor: using the packaged small encoder (a 64 px ResNet trained on demo-head "
                       "renders, not the real-time regressor; train one with `neuface-jax train-regressor`)")
        path = starting_lib.packaged_checkpoint()
    enc, cfg = encoder_lib.load_encoder(path)
    return regressor_lib.Regressor(enc, cfg, face, mirror_average=mirror_average, head_fit=head_fit)


def open_frames(source, stall_timeout_s: float = 5.0) -> sources_lib.FrameSource:
    """``source`` itself when it is a ``FrameSource``, else ``sources.open_source(source)``."""
    if isinstance(source, sources_lib.FrameSource):
        return source
    return sources_lib.open_source(source, stall_timeout_s=stall_timeout_s)


def track(source, config: TrackConfig = TrackConfig(), *, regressor: regressor_lib.Regressor | None = None,
          detector: FaceDetector | None = None, stall_timeout_s: float = 5.0,
          max_frames: int | None = None) -> Iterator[TrackedFrame]:
    """Tracks the face through a source, one ``TrackedFrame`` per frame::

        for frame in neuface_jax.track("video.mp4", TrackConfig(regressor="REGRESSOR_DIR")):
            if frame.valid:
                print(frame.index, frame.params.pose[:3])

    Args:
      source: a camera index, a file, a URL (``sources.open_source``) or a ``FrameSource``.
      config: tracker settings (``config.regressor``: the checkpoint).
      regressor, detector: ready objects (instead of loading them from ``config``).
      stall_timeout_s: a live source without a new frame for this long ends the iteration.
      max_frames: stop after this many frames.
    """
    reg = regressor if regressor is not None else load_regressor(config.regressor, mirror_average=config.mirror_average,
                                                                 head_fit=config.head_fit)
    det = detector if detector is not None else FaceDetector(config.face_landmarker, config.min_detection_confidence)
    reg.warmup()
    src = open_frames(source, stall_timeout_s)
    tracker = Tracker(reg, det, config)
    n = 0
    try:
        it = iter(src)
        while max_frames is None or n < max_frames:
            t = time.perf_counter()
            frame = next(it, None)
            if frame is None:
                break
            yield tracker.step(frame, time.perf_counter() - t)
            n += 1
    finally:
        src.close()
        if detector is None:
            det.close()
        logger.info("%s: %d frames (%s)", src.name, n, src.end_reason or "stopped")


# --------------------------------------------------------------------------- output
class ParamsSink:
    """Writes tracked frames: ``.npz`` (``annotate``'s params.npz format, written on ``close``) or
    ``.jsonl`` (one JSON object per frame, flushed as it comes)."""

    def __init__(self, path, *, model_name: str = ""):
        self.path = Path(path)
        self.kind = self.path.suffix.lower()
        if self.kind not in (".npz", ".jsonl"):
            raise ValueError(f"{self.path}: parameter output must end in .npz or .jsonl")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: the folder {self.path.parent} does not exist")
        self.model_name = model_name
        self._rows: list[TrackedFrame] = []
        self._fh = open(self.path, "w") if self.kind == ".jsonl" else None

    def write(self, f: TrackedFrame) -> None:
        if self._fh is not None:
            rec = {"index": f.index, "time_s": round(f.time_s, 6), "valid": f.valid, "status": f.status}
            if f.valid:
                p = f.params
                rec.update(shape=p.shape.tolist(), expression=p.expression.tolist(), pose=p.pose.tolist(),
                           cam=p.cam.tolist(), crop_transform=f.crop_transform.tolist(), crop_size=f.crop_size)
            self._fh.write(json.dumps(rec) + "\n")
            self._fh.flush()
        else:
            self._rows.append(dataclasses.replace(f, image=None))

    def close(self) -> Path:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            return self.path
        rows = self._rows
        if not rows:
            raise ValueError(f"{self.path}: no frames to write")
        ok = [r for r in rows if r.valid]
        if not ok:
            raise ValueError(f"{self.path}: no frame had a face; nothing to write")
        ref = ok[0].params
        blank = lambda a: np.zeros_like(a)  # noqa: E731
        get = lambda r, k: getattr(r.params, k) if r.valid else blank(getattr(ref, k))  # noqa: E731
        t = len(rows)
        identity = np.mean([r.params.shape for r in ok], axis=0)
        result = _Result(
            shape=identity,
            expression=np.stack([get(r, "expression") for r in rows])[:, None],
            pose=np.stack([get(r, "pose") for r in rows])[:, None],
            cam=np.stack([get(r, "cam") for r in rows])[:, None],
            landmarks2d=np.stack([get(r, "landmarks") for r in rows])[:, None],
        )
        eye = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        transforms = np.stack([r.crop_transform if r.valid else eye for r in rows])[:, None]
        valid = np.array([r.valid for r in rows])[:, None]
        export_lib.write_params(
            self.path, result, view_names=["live"], detected_landmarks=result.landmarks2d,
            landmarks_mask=np.repeat(valid[..., None], ref.landmarks.shape[0], -1), crop_transforms=transforms,
            valid=valid, frame_indices=np.array([r.index for r in rows]), crop_size=rows[0].crop_size,
            model_name=self.model_name, method="realtime",
            extra={"time_s": np.array([r.time_s for r in rows]), "per_frame_shapes": np.stack(
                [get(r, "shape") for r in rows]).astype(np.float32)},
        )
        self._rows = []
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclasses.dataclass
class _Result:
    """The fields of ``fit.FitResult`` that ``export.write_params`` reads ([T, 1, ...] arrays)."""

    shape: np.ndarray
    expression: np.ndarray
    pose: np.ndarray
    cam: np.ndarray
    landmarks2d: np.ndarray


def model_label(face) -> str:
    """The face model's name for the params file."""
    return str(getattr(face.flame, "name", "") or "")


def check_output_path(path) -> None:
    """A clear error for an output file whose folder does not exist."""
    parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"{path}: the folder {parent} does not exist")
