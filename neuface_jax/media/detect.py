"""One clip's decoding and landmark detection: a ``sources.Source`` → one ``DetectedClip``.

The third stage of the video path: ``video`` decodes, ``sources`` turns the input into synchronized
views and a frame range, this module gives every view its landmarks (from ``landmark_cache`` or the
``landmarker``), and ``crops`` cuts the encoder inputs.

``decode_and_detect`` streams the frames once: decoding runs in a background thread
(``sources.prefetch``) and each view that is not cached gets its own landmarker on its own worker
thread (VIDEO mode needs in-order calls), so decoding, the views' detections and the consumer
overlap. Results are cached per view, so a re-run only decodes. With ``detect=False`` it only
decodes (landmarks come from elsewhere, ``read_precomputed_landmarks``).

Every frame's colour histogram is compared with the previous one to find shot cuts
(``landmarker.is_cut``); the face tracker follows one face across them, and ``shot_ranges`` gives
the shots for clips split at cuts. A view whose face is upside down (``landmarker.orientation_scores``)
is masked with a warning; when every view is, it is a ``NoFaceError`` saying so.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import pathlib
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from neuface_jax.media import landmark_cache
from neuface_jax.media import landmark_sets
from neuface_jax.media import landmarker as landmarker_lib
from neuface_jax.media import video as video_lib
from neuface_jax.media.landmarker import (  # the detection stage's public names, importable from here too
    FaceLandmarks,
    LandmarkerOptions,
    ModelNotFoundError,
    resolve_model_path,
)
from neuface_jax.media.sources import Source, prefetch, stack_views

__all__ = [
    "DetectedClip",
    "FaceLandmarks",
    "LandmarkerOptions",
    "ModelNotFoundError",
    "NoFaceError",
    "ViewDetector",
    "check_faces",
    "decode_and_detect",
    "find_shots",
    "read_precomputed_landmarks",
    "resolve_model_path",
    "shot_ranges",
]


logger = logging.getLogger(__name__)

#: An upside-down view: the face detector scores the frames turned 180° at least this much better.
UPSIDE_DOWN_MARGIN = 0.1


class NoFaceError(ValueError):
    """No face was detected in any frame of a clip (or view)."""


def shot_ranges(cuts: Sequence[int], num_frames: int) -> list[tuple[int, int]]:
    """The shots of a clip as ``[(start, end), ...]`` row positions (end exclusive), given the
    positions of the rows that start a new shot (``DetectedClip.cuts``)."""
    bounds = [0] + sorted({int(c) for c in cuts if 0 < int(c) < num_frames}) + [int(num_frames)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclasses.dataclass(frozen=True, eq=False)
class DetectedClip:
    """The host record of one decoded clip: frames and landmarks of every view, what the crops need.

    Attributes:
      label: the clip, for messages.
      view_names: one name per view.
      images: ``uint8 [T, W, H, Wd, 3]`` frames, views padded (bottom/right, black) to the largest.
      image_sizes: ``(width, height)`` of each view before padding.
      frame_indices: ``int64 [T]`` source frame of each row (shared by the views).
      fps: source frame rate; ``out_fps`` the rate of the selected frames (after the stride).
      landmarks: one ``FaceLandmarks`` per view, or None when only decoded (``detect=False``).
      cached: per view, the landmarks came from the cache.
      source: where the frames came from (kind, paths, frame range, view boxes).
      cuts: per view, the row positions that start a new shot (``shot_ranges``).
      info: for ``metrics.json``: the source's timing and sync record (``Source.info``), shot cuts,
        the invalid frames with their reasons, the orientation check.
      notes: warnings about the clip, for ``metrics.json``.
    """

    label: str
    view_names: tuple[str, ...]
    images: np.ndarray
    image_sizes: tuple[tuple[int, int], ...]
    frame_indices: np.ndarray
    fps: float
    out_fps: float
    landmarks: tuple[FaceLandmarks, ...] | None
    cached: tuple[bool, ...]
    source: Source
    cuts: tuple[tuple[int, ...], ...] = ()
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def num_frames(self) -> int:
        return int(self.frame_indices.shape[0])

    @property
    def num_views(self) -> int:
        return len(self.view_names)

    @property
    def valid(self) -> np.ndarray:
        """``bool [T, W]``: the tracked face was found (needs landmarks)."""
        return np.stack([lm.valid for lm in self._require_landmarks()], axis=1)

    def shots(self, view: int = 0) -> list[tuple[int, int]]:
        """``[(start, end), ...]`` row ranges of the shots of ``view`` (one range without cuts)."""
        return shot_ranges(self.cuts[view] if self.cuts else (), self.num_frames)

    def shot_frame_ranges(self, view: int = 0) -> list[video_lib.FrameRange]:
        """One ``FrameRange`` of source frames per shot of ``view``: what a clip split at its cuts
        reads for each of its outputs (with ``LandmarkerOptions.new_track_at_cuts`` or without)."""
        rng = self.source.frame_range or video_lib.FrameRange()
        idx = self.frame_indices
        return [
            video_lib.FrameRange(start=int(idx[a]), end=int(idx[b - 1]) + 1, stride=rng.stride) for a, b in self.shots(view)
        ]

    def targets(self, landmark_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The landmarks as the fit uses them: ``(points68, targets, valid)``.

        ``points68`` ``[T, W, 68, 2]`` (iBUG-68 from MediaPipe, all points) place the crops;
        ``targets`` ``[T, W, L, 2]`` are the MediaPipe points with ids ``landmark_ids``, NaN where the
        point is a far-side guess (``FaceLandmarks.visible``) or the frame has no face; pixels.
        """
        lms = self._require_landmarks()
        valid = self.valid
        points478 = np.stack([lm.xy for lm in lms], axis=1).astype(np.float64)  # [T, W, 478, 2]
        ids = np.asarray(landmark_ids)
        seen = np.stack([lm.visible for lm in lms], axis=1)[:, :, ids] & valid[..., None]
        targets = np.where(seen[..., None], points478[:, :, ids], np.nan)
        return landmark_sets.mediapipe_to_ibug68(points478), targets, valid

    def _require_landmarks(self) -> tuple[FaceLandmarks, ...]:
        if self.landmarks is None:
            raise ValueError(f"{self.label}: decoded without detection, no landmarks")
        return self.landmarks


class ViewDetector:
    """One view's landmarker and face tracker on its own worker thread (VIDEO mode needs in-order calls)."""

    def __init__(self, model_path, options: LandmarkerOptions, fps: float):
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="neuface-detect")
        try:
            self.landmarker = self.pool.submit(landmarker_lib.FaceLandmarker, model_path, options).result()
        except BaseException:
            self.pool.shutdown(wait=True)
            raise
        self.tracker = landmarker_lib.FaceTracker(options, fps)

    def submit(self, frame, ts):
        return self.pool.submit(self.landmarker.detect, frame, ts)

    def close(self):
        with contextlib.suppress(Exception):
            self.pool.submit(self.landmarker.close).result()
        self.pool.shutdown(wait=True)


@dataclasses.dataclass
class _Track:
    """One detected view's rows, filled frame by frame."""

    rows: list = dataclasses.field(default_factory=list)
    valid: list = dataclasses.field(default_factory=list)
    counts: list = dataclasses.field(default_factory=list)
    reasons: list = dataclasses.field(default_factory=list)


class _Once:
    def __init__(self, fn: Callable[[], None] | None):
        self.fn = fn

    def __call__(self):
        fn, self.fn = self.fn, None
        if fn is not None:
            fn()


def _cache_paths(src: Source, options, model_path, cache_dir) -> list[pathlib.Path | None]:
    w = len(src.view_names)
    cdir = cache_dir or landmark_cache.default_landmark_cache_dir()
    out: list[pathlib.Path | None] = [None] * w
    for v, cid in enumerate(src.cache_ids):
        if cid is not None:
            path, box, frames_key = cid
            key = landmark_cache.cache_key(path, box=box, frames=frames_key, options=options, model_path=model_path)
            out[v] = landmark_cache.cache_file(cdir, path, src.view_names[v] if w > 1 or box else None, key)
    return out


def _stream(src: Source, detectors, tracks, progress, prefetch_size, in_flight, face_found, cut_threshold):
    """Reads every frame once, submitting each to the views' detectors; returns (frames per view,
    indices, per view the row positions where a shot cut starts a new shot)."""
    w = len(src.view_names)
    frames: list[list[np.ndarray]] = [[] for _ in range(w)]
    indices: list[int] = []
    cuts: list[list[int]] = [[] for _ in range(w)]
    signatures: list[np.ndarray | None] = [None] * w
    pending: collections.deque = collections.deque()

    def finish(item):
        index, fr, futs, cut = item
        for v, fut in futs.items():
            faces = fut.result()
            tracker = detectors[v].tracker
            looks = [landmarker_lib.face_descriptor(fr[v], f) for f in faces]
            k = tracker.choose(faces, index, (fr[v].shape[1], fr[v].shape[0]), cut=cut[v], looks=looks)
            tracks[v].rows.append(np.zeros((landmarker_lib.NUM_LANDMARKS, 3), np.float32) if k is None else faces[k])
            tracks[v].valid.append(k is not None)
            tracks[v].counts.append(int(faces.shape[0]))
            tracks[v].reasons.append(tracker.reason)
            if k is not None:
                face_found()
        if progress is not None:
            progress.update(1)

    for index, fr in prefetch(src.stream(), prefetch_size):
        if len(fr) != w:
            raise ValueError(f"{src.label}: {len(fr)} views in a frame, expected {w}")
        for v in range(w):
            if indices and fr[v].shape != frames[v][0].shape:
                raise ValueError(
                    f"{src.label}: view {src.view_names[v]!r} frame {index} is {fr[v].shape}, "
                    f"earlier frames {frames[v][0].shape}"
                )
            frames[v].append(fr[v])
        cut = []
        for v in range(w):
            sig = landmarker_lib.frame_signature(fr[v])
            cut.append(landmarker_lib.is_cut(signatures[v], sig, cut_threshold))
            signatures[v] = sig
            if cut[v]:
                cuts[v].append(len(indices))
        indices.append(int(index))
        ts = landmarker_lib.timestamp_ms(index, src.fps)
        pending.append((int(index), fr, {v: d.submit(fr[v], ts) for v, d in detectors.items()}, cut))
        while len(pending) > in_flight:
            finish(pending.popleft())
    while pending:
        finish(pending.popleft())
    if not indices:
        raise video_lib.VideoError(src.label, "no frames to read")
    return frames, np.asarray(indices, np.int64), cuts


def _view_landmarks(src, v, hit, track, cache_path, idx, size) -> FaceLandmarks:
    label = f"view {src.view_names[v]!r} of {src.label}"
    if hit is not None:
        if hit.num_frames != len(idx) or not np.array_equal(hit.frame_indices, idx):
            raise RuntimeError(f"{label}: cached landmarks do not match the decoded frames; clear {cache_path}")
        return hit
    res = FaceLandmarks(
        points=np.stack(track.rows), valid=np.asarray(track.valid), frame_indices=idx, image_size=size,
        num_faces=np.asarray(track.counts), fps=src.fps, name=label, reason=np.asarray(track.reasons),
    )
    if cache_path is not None:
        res.save(cache_path)
    return res


def decode_and_detect(
    src: Source,
    *,
    detect: bool = True,
    model_path=None,
    options: LandmarkerOptions | None = None,
    cache_dir=None,
    use_cache: bool = True,
    progress=None,
    prefetch_size: int = 8,
    in_flight: int = 4,
    on_first_face: Callable[[], None] | None = None,
) -> DetectedClip:
    """Streams a clip once: keeps its frames and detects the views that are not cached.

    Args:
      src: the clip (``sources.open_source``).
      detect: False to only decode (the record then has no landmarks).
      model_path: the landmarker model (``landmarker.resolve_model_path`` resolves None).
      options: landmarker and face-choice settings.
      cache_dir, use_cache: the landmark cache (``landmark_cache``; default folder under the user cache).
      progress: anything with ``update(n)`` (a ``common.log.Progress``), counted once per frame.
      prefetch_size: frames decoded ahead; in_flight: frames submitted to the detectors ahead.
      on_first_face: called once, as soon as some view has a face (a cached one, or the first
        detection), so the caller can start work that is only worth doing when the clip has a face.

    Raises:
      video.VideoError: no frame could be read (or a file is unreadable).
      landmarker.ModelNotFoundError: detection needed and no model file.
    """
    w = len(src.view_names)
    options = options or LandmarkerOptions()
    hits: list[FaceLandmarks | None] = [None] * w
    cache_paths: list[pathlib.Path | None] = [None] * w
    if detect:
        model_path = resolve_model_path(model_path)
        if use_cache:
            cache_paths = _cache_paths(src, options, model_path, cache_dir)
            hits = [None if p is None else landmark_cache.load_cached(p) for p in cache_paths]
    face_found = _Once(on_first_face)
    if any(h is not None and h.valid.any() for h in hits):
        face_found()
    todo = [v for v in range(w) if hits[v] is None] if detect else []
    detectors = {}
    try:
        for v in todo:
            detectors[v] = ViewDetector(model_path, options, src.fps)
        tracks = {v: _Track() for v in todo}
        frames, idx, cuts = _stream(
            src, detectors, tracks, progress, prefetch_size, in_flight, face_found, options.cut_threshold
        )
    finally:
        for d in detectors.values():
            d.close()
    sizes = tuple((int(f[0].shape[1]), int(f[0].shape[0])) for f in frames)
    images = stack_views(frames)
    landmarks, notes = None, []
    info = {**src.info, "shot_cuts": {n: [int(idx[c]) for c in cs] for n, cs in zip(src.view_names, cuts)}}
    if detect:
        landmarks = tuple(
            _view_landmarks(src, v, hits[v], tracks.get(v), cache_paths[v], idx, sizes[v]) for v in range(w)
        )
        if options.check_orientation:
            landmarks = _check_orientation(src, images, sizes, landmarks, model_path, notes, info)
        info["invalid_frames"] = {
            n: landmarker_lib.reason_runs(lm.reason, idx) for n, lm in zip(src.view_names, landmarks)
        }
    notes += [f"{src.label}: {m}" for m in src.info.get("trimmed", []) + src.info.get("resampled", [])]
    return DetectedClip(
        label=src.label, view_names=tuple(src.view_names), images=images, image_sizes=sizes,
        frame_indices=idx, fps=float(src.fps), out_fps=float(src.out_fps), landmarks=landmarks,
        cached=tuple(h is not None for h in hits), source=src, cuts=tuple(tuple(c) for c in cuts), info=info,
        notes=tuple(notes),
    )


def find_shots(src: Source, *, cut_threshold: float = LandmarkerOptions.cut_threshold, progress=None) -> list:
    """The shots of a clip as one ``video.FrameRange`` of source frames each (a decode-only pass,
    no detection): to split a clip at its cuts into separate outputs, annotate each range on its own."""
    det = decode_and_detect(src, detect=False, options=LandmarkerOptions(cut_threshold=cut_threshold), progress=progress)
    return det.shot_frame_ranges()


def _check_orientation(src: Source, images, sizes, landmarks, model_path, notes: list, info: dict):
    """Masks the views whose face is upside down (``landmarker.orientation_scores``), with a warning
    and a note; raises ``NoFaceError`` when every view is."""
    out, flagged = list(landmarks), []
    info["orientation"] = {}
    for v, name in enumerate(src.view_names):
        cw, ch = sizes[v]
        stored, turned = landmarker_lib.orientation_scores(images[:, v, :ch, :cw], model_path)
        upside_down = turned >= 0.5 and turned - stored >= UPSIDE_DOWN_MARGIN
        info["orientation"][name] = {
            "detector_score": stored, "detector_score_turned_180": turned, "upside_down": upside_down
        }
        if not upside_down:
            continue
        flagged.append(name)
        lm = out[v]
        out[v] = dataclasses.replace(
            lm, points=np.zeros_like(lm.points), valid=np.zeros_like(lm.valid), visible=None,
            reason=np.full(lm.num_frames, landmarker_lib.UPSIDE_DOWN),
        )
        msg = (
            f"view {name!r} of {src.label} looks upside down (face detector score {turned:.2f} turned 180° vs "
            f"{stored:.2f} as decoded): its rotation metadata is probably wrong; the view is masked "
            "(fix the file, e.g. ffmpeg -display_rotation 180 -i IN -c copy OUT)"
        )
        notes.append(msg)
        warnings.warn(msg, stacklevel=3)
    if flagged and len(flagged) == len(src.view_names):
        raise NoFaceError(f"{src.label}: every view looks upside down ({', '.join(flagged)}); no upright face to fit")
    return tuple(out)


def check_faces(label: str, view_names: Sequence[str], valid, *, where: str = "detected in") -> dict[str, str]:
    """Checks a clip has a face: ``{view name: warning}`` for the views without any (they get masked).

    A faceless view of a multi-view clip warns (``warnings``: the caller's user sees it once and
    the other views still give a result). ``where`` words the error (e.g. "in the precomputed
    landmarks of").

    Raises:
      NoFaceError: no frame of any view has a face; the message names the clip (and its views).
    """
    valid = np.asarray(valid, bool)
    t, w = valid.shape
    if not valid.any():
        views = f" (views {', '.join(view_names)})" if w > 1 else ""
        raise NoFaceError(f"{label}: no face {where} any of its {t} frames{views}")
    out = {}
    for v, name in enumerate(view_names):
        if not valid[:, v].any():
            out[name] = f"view {name!r} of {label}: no face detected in any of its {t} frames; the view is masked"
            warnings.warn(out[name], stacklevel=2)
    return out


def read_precomputed_landmarks(path, view_names: Sequence[str], frame_indices: np.ndarray, label: str):
    """68-point landmarks from a file instead of MediaPipe, for the decoded frames:
    ``(points [T, W, 68, 2] px, targets [T, W, 68, 2] px with NaN where invisible, valid [T, W])``.
    ``points`` (all 68, occluded ones included) place the crops; ``targets`` are fitted.

    The file is an ``.npz`` with ``landmarks68`` ``[N, W, 68, 2]`` (pixels of each view), optional
    ``visible68`` ``[N, W, 68]`` and ``valid`` ``[N, W]``, and ``view_names`` — the ``landmarks.npz``
    that ``neuface-jax synth`` writes. Rows are source frames 0..N-1; the decoded frames pick theirs.

    Raises:
      ValueError: naming the file when it is unreadable, lacks a key, or does not match the clip.
    """
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{path}: cannot read precomputed landmarks ({type(e).__name__}: {e})") from None
    if "landmarks68" not in arrays:
        raise ValueError(f"{path}: no 'landmarks68' array (keys: {sorted(arrays)})")
    pts = np.asarray(arrays["landmarks68"], np.float64)
    n = pts.shape[0]
    if pts.ndim != 4 or pts.shape[2:] != (68, 2):
        raise ValueError(f"{path}: landmarks68 must be [N, W, 68, 2], got {pts.shape}")
    if "view_names" in arrays:
        names = [str(s) for s in arrays["view_names"].tolist()]
        try:
            order = [names.index(v) for v in view_names]
        except ValueError:
            raise ValueError(f"{path}: views {names} do not include all of {label}'s views {list(view_names)}") from None
    elif pts.shape[1] == len(view_names):
        order = list(range(len(view_names)))
    else:
        raise ValueError(f"{path}: {pts.shape[1]} views of landmarks for {len(view_names)} views of {label}")
    idx = np.asarray(frame_indices, np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"{path}: landmarks for {n} frames but {label} has frame {int(idx.max())}")
    pts = pts[idx][:, order]
    vis = np.ones(pts.shape[:3], bool)
    if "visible68" in arrays:
        vis = np.asarray(arrays["visible68"], bool)[idx][:, order]
    valid = np.ones(pts.shape[:2], bool)
    if "valid" in arrays:
        valid = np.asarray(arrays["valid"], bool)[idx][:, order]
    valid &= np.isfinite(pts).all(-1).all(-1)
    pts = np.where(valid[..., None, None], pts, np.nan)
    return pts, np.where((vis & valid[..., None])[..., None], pts, np.nan), valid
