"""The MediaPipe Face Landmarker: model file, options, per-frame detection and face tracking.

* **Model file.** ``resolve_model_path``: an explicit path (argument / flag) > the environment variable
  ``NEUFACE_FACE_LANDMARKER`` > the user cache ``~/.cache/neuface_jax/face_landmarker.task``
  (``$XDG_CACHE_HOME/neuface_jax`` when set). ``fetch_model`` downloads the official float16 v1 bundle
  and checks its SHA-256 (``neuface-jax fetch-models``).
* **Detection.** One ``FaceLandmarker`` per view (VIDEO mode keeps tracking state and needs increasing
  timestamps, ``timestamp_ms``); ``detect`` returns every face of a frame.
* **Several faces, shot cuts.** ``FaceTracker`` follows one face: the first is chosen by
  ``LandmarkerOptions.track`` (size and centrality, the largest, or an index from the left); later
  frames take the candidate nearest the previous choice (within ``max_jump`` face sizes), so the
  identity stays consistent. Within a shot, a track lost for more than ``reacquire_s`` seconds is
  re-acquired by the initial rule. A shot cut (``frame_signature`` / ``is_cut``: the colour
  histogram changes at once) ends that: after a cut only a face where the tracked one was, of its
  size and look (``face_descriptor``: the colours of the face's centre), continues the track; other
  faces are someone else (``new_track_at_cuts`` starts a new track at each cut instead, for clips
  split into shots).
* **Orientation.** ``orientation_scores``: the bundle's own face detector scores sample frames as
  stored and turned 180°; a face that scores clearly better turned is upside down (wrong rotation
  metadata), where the landmarker would still place an upright mesh on it.
* **Result per view.** ``FaceLandmarks``: points ``[T, 478, 3]`` in the view's pixels, a validity
  mask ``[T]`` (frames without the tracked face are invalid; their points are zeros) with the reason
  of each invalid frame (``REASONS``), a
  per-landmark visibility mask ``[T, 478]`` and the source frame indices. On a strongly turned head
  MediaPipe still returns all 478 points; those on the far side are guesses, and ``visible`` marks
  them False (``landmark_sets.landmark_visibility``) so fitting code gives them no target.

Pixel coordinates: x right, y down, continuous with the image spanning ``[0, W] × [0, H]`` (pixel
``(row i, column j)`` has its centre at ``(j + 0.5, i + 0.5)``), the convention of MediaPipe's
normalized outputs (``x_px = x_norm · W``) and of ``neuface_jax.core.camera``. The third coordinate is
MediaPipe's relative depth scaled like x (``z_norm · W``; smaller is nearer the camera; origin near
the head centre), useful for visibility but not metric.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import re
import shutil
import sys
import tempfile
import threading
import urllib.request
from typing import Callable

import numpy as np

from neuface_jax.common import atomic
from neuface_jax.media import landmark_sets

__all__ = [
    "MODEL_URL",
    "MODEL_SHA256",
    "MODEL_ENV_VAR",
    "NUM_LANDMARKS",
    "ModelNotFoundError",
    "ModelChecksumError",
    "LandmarkerOptions",
    "FaceLandmarker",
    "FaceTracker",
    "FaceLandmarks",
    "REASONS",
    "default_cache_dir",
    "face_descriptor",
    "frame_signature",
    "is_cut",
    "orientation_scores",
    "reason_runs",
    "default_model_path",
    "resolve_model_path",
    "fetch_model",
    "quiet_native_logs",
    "sha256_file",
    "timestamp_ms",
]

MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
)
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
MODEL_ENV_VAR = "NEUFACE_FACE_LANDMARKER"
MODEL_FILENAME = "face_landmarker.task"
FETCH_COMMAND = "neuface-jax fetch-models"
NUM_LANDMARKS = 478

#: Why a frame has no tracked face, by ``FaceLandmarks.reason`` code (0: it has one).
REASONS = (
    "face",
    "no face detected",
    "only other faces (the tracked face is absent)",
    "the tracked face was not found after a shot cut",
    "upside down (the view is masked)",
)
FACE, NO_FACE, OTHER_FACES, AFTER_CUT, UPSIDE_DOWN = range(len(REASONS))


class ModelNotFoundError(FileNotFoundError):
    """No face landmarker model file; the message says how to get one."""


class ModelChecksumError(ValueError):
    """A downloaded model's SHA-256 does not match the expected one (the file was deleted)."""


# ----------------------------------------------------------------------------------------------
# Model file


def default_cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/neuface_jax`` or ``~/.cache/neuface_jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "neuface_jax"


def default_model_path() -> pathlib.Path:
    """Where ``fetch_model`` puts the model and ``resolve_model_path`` looks last."""
    return default_cache_dir() / MODEL_FILENAME


def _how_to_get_model() -> str:
    return (
        f"Get the MediaPipe Face Landmarker model with `{FETCH_COMMAND}` (downloads {MODEL_URL} to "
        f"{default_model_path()} and checks its SHA-256 {MODEL_SHA256}); or, offline, download that URL "
        f"elsewhere, copy the file here and pass its path explicitly (--face_landmarker PATH) or set "
        f"{MODEL_ENV_VAR}=PATH."
    )


def resolve_model_path(model_path=None) -> pathlib.Path:
    """Finds the face landmarker model: explicit path > ``$NEUFACE_FACE_LANDMARKER`` > user cache.

    Raises:
      ModelNotFoundError: the chosen path does not exist, or no model is found; the message names
        the places searched, the download URL, the environment variable and the fetch command.
    """
    if model_path:
        p = pathlib.Path(model_path).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"face landmarker model {p} (given explicitly) does not exist. {_how_to_get_model()}")
        return p
    env = os.environ.get(MODEL_ENV_VAR)
    if env:
        p = pathlib.Path(env).expanduser()
        if not p.is_file():
            raise ModelNotFoundError(f"face landmarker model {p} (from ${MODEL_ENV_VAR}) does not exist. {_how_to_get_model()}")
        return p
    p = default_model_path()
    if p.is_file():
        return p
    raise ModelNotFoundError(
        f"no face landmarker model: none given, ${MODEL_ENV_VAR} is not set and {p} does not exist. {_how_to_get_model()}"
    )


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _urllib_download(url: str, dest: pathlib.Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as r, open(dest, "wb") as f:
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            f.write(chunk)


def fetch_model(
    dest=None,
    *,
    url: str = MODEL_URL,
    sha256: str | None = MODEL_SHA256,
    downloader: Callable[[str, pathlib.Path], None] | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> pathlib.Path:
    """Downloads the face landmarker model and verifies its SHA-256.

    An existing ``dest`` with the right checksum is kept (no download) unless ``force``. The
    download goes to a temporary file next to ``dest`` and is written into place atomically
    (``common.atomic``) only after the checksum matched; on a mismatch it is deleted and nothing
    is installed.

    Args:
      dest: target file (default ``default_model_path()``).
      url: source; any URL ``urllib`` opens (``https://``, ``file://``).
      sha256: expected hex digest, or None to skip the check (not recommended).
      downloader: ``downloader(url, path)`` writing the file at ``path``; replaces urllib (tests,
        proxies, mirrors).
      force: download even if ``dest`` already holds the expected file.

    Returns:
      The path of the verified model.

    Raises:
      ModelChecksumError: the downloaded bytes do not match ``sha256``.
      OSError: the download failed (offline, HTTP error); the message says how to get the file.
    """
    dest = pathlib.Path(dest).expanduser() if dest else default_model_path()
    if dest.is_file() and not force and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        try:
            if downloader is not None:
                downloader(url, tmp)
            else:
                _urllib_download(url, tmp, timeout)
        except Exception as e:
            raise OSError(
                f"could not download the face landmarker model from {url} ({type(e).__name__}: {e}). "
                f"Offline: download it on a connected machine, copy it to {dest} or point "
                f"{MODEL_ENV_VAR} at it."
            ) from e
        if not tmp.is_file():
            raise OSError(f"downloading {url} produced no file")
        if sha256 is not None:
            got = sha256_file(tmp)
            if got != sha256.lower():
                raise ModelChecksumError(
                    f"refusing the model downloaded from {url}: SHA-256 {got} != expected {sha256}; "
                    "the download was deleted"
                )
        atomic.atomic_write(dest, lambda f: _copy_file(tmp, f))
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _copy_file(src: pathlib.Path, out) -> None:
    with open(src, "rb") as f:
        shutil.copyfileobj(f, out, 1 << 20)


#: MediaPipe's native logging settings, read when its C++ library loads (glog-based releases honour
#: them; a value the user set wins). ``GLOG_minloglevel`` below 2 also keeps the lines that
#: ``quiet_native_logs`` would drop.
NATIVE_LOG_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
#: Native INFO/WARNING lines (absl/glog ``I0000 ...``/``W0000 ...``, TFLite ``INFO: ...``).
_NATIVE_NOISE = re.compile(rb"^(?:[IW]\d{4} |INFO: |WARNING: Logging before InitGoogle\(\))")
_NATIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def quiet_native_logs():
    """Silences MediaPipe's C++ INFO/WARNING lines while a graph is built (recent releases ignore
    the environment settings): stderr (fd 2, process-wide, so builds are serialized) goes to a
    temporary file and every other line is written back."""
    for key, value in NATIVE_LOG_ENV.items():
        os.environ.setdefault(key, value)
    if os.environ.get("GLOG_minloglevel", "2").strip() in ("0", "1"):
        yield
        return
    with _NATIVE_LOCK, tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True) if not _NATIVE_NOISE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


# ----------------------------------------------------------------------------------------------
# Landmarker


def timestamp_ms(index: int, fps: float) -> int:
    """MediaPipe VIDEO-mode timestamp of source frame ``index``: ``round(index · 1000 / fps)`` ms.

    An unknown or non-positive ``fps`` counts as 25. Strided selections keep their source times,
    so timestamps still increase (``FaceLandmarker.detect`` also forces them to increase).
    """
    return int(round(index * 1000.0 / (fps if fps and fps > 0 else 25.0)))


@dataclasses.dataclass(frozen=True)
class LandmarkerOptions:
    """Face landmarker and face-choice settings.

    Attributes:
      num_faces: faces MediaPipe may return per frame (>1 lets the tracker pick the right one).
      min_face_detection_confidence, min_face_presence_confidence, min_tracking_confidence:
        MediaPipe's thresholds in [0, 1].
      max_jump: largest move of the tracked face's box centre between accepted frames, in face
        sizes, per source frame elapsed (capped at 4 frames); candidates farther away are other people.
      reacquire_s: after this many seconds without the tracked face, choose afresh.
      centre_weight: weight of the distance to the image centre against face size when choosing
        the first face (score = size/diag − centre_weight · distance/diag).
      track: which face to follow: "central" (size and centrality, ``centre_weight``), "largest",
        "first" (the leftmost) or an index ``k`` ("0", "1", ...: the k-th face from the left).
      cut_threshold: a shot cut is a colour-histogram change between consecutive frames above this
        (``is_cut``, in [0, 1]; 1 turns cut detection off).
      new_track_at_cuts: start a new track at every cut (for clips split into shots) instead of
        continuing only with a face where the tracked one was.
      max_look_change: after a cut, a face whose ``face_descriptor`` differs from the tracked
        face's by more than this (in [0, 1]) is someone else.
      check_orientation: test whether a view is upside down (``orientation_scores``).
    """

    num_faces: int = 4
    min_face_detection_confidence: float = 0.5
    min_face_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    max_jump: float = 0.75
    reacquire_s: float = 1.0
    centre_weight: float = 0.5
    track: str = "central"
    cut_threshold: float = 0.4
    new_track_at_cuts: bool = False
    max_look_change: float = 0.3
    check_orientation: bool = True

    def __post_init__(self):
        if self.num_faces < 1:
            raise ValueError(f"num_faces must be >= 1, got {self.num_faces}")
        track = str(self.track)
        if track not in ("central", "largest", "first") and not (track.isdigit()):
            raise ValueError(f"track must be 'central', 'largest', 'first' or a face index >= 0, got {self.track!r}")
        object.__setattr__(self, "track", track)
        if not 0.0 <= self.cut_threshold <= 1.0:
            raise ValueError(f"cut_threshold must be in [0, 1], got {self.cut_threshold}")
        for k in ("min_face_detection_confidence", "min_face_presence_confidence", "min_tracking_confidence"):
            v = getattr(self, k)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} must be in [0, 1], got {v}")


class FaceLandmarker:
    """A MediaPipe Face Landmarker in VIDEO mode for one stream of frames (one view).

    ``detect(frame, timestamp_ms)`` returns every face as ``[N, 478, 3]`` pixel landmarks.
    Timestamps must increase; the landmarker keeps tracking state between calls. Close it (or use it
    as a context manager) to free the graph. Use one instance per thread.
    """

    def __init__(self, model_path=None, options: LandmarkerOptions | None = None):
        # Lazy: mediapipe is heavy and only detection needs it (model-file helpers and tests do not).
        with quiet_native_logs():  # the environment settings before the library loads
            import mediapipe as mp
            from mediapipe.tasks.python import vision

        self.model_path = resolve_model_path(model_path)
        self.options = options or LandmarkerOptions()
        self._mp = mp
        o = self.options
        mp_options = vision.FaceLandmarkerOptions(
            base_options=mp.tasks.BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO,
            num_faces=int(o.num_faces),
            min_face_detection_confidence=float(o.min_face_detection_confidence),
            min_face_presence_confidence=float(o.min_face_presence_confidence),
            min_tracking_confidence=float(o.min_tracking_confidence),
        )
        try:
            with quiet_native_logs():
                self._landmarker = vision.FaceLandmarker.create_from_options(mp_options)
        except Exception as e:
            raise ValueError(f"{self.model_path}: not a usable face landmarker model ({e})") from e
        self._last_ts = -1

    def detect(self, frame: np.ndarray, timestamp_ms: int) -> np.ndarray:
        """All faces in an RGB ``uint8 [H, W, 3]`` frame → ``float32 [N, 478, 3]`` pixels (N may be 0)."""
        frame = np.ascontiguousarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
        first = self._last_ts < 0
        ts = max(int(timestamp_ms), self._last_ts + 1)
        self._last_ts = ts
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=frame)
        # The first inference logs native warnings (tensor alignment, accelerator set-up).
        with quiet_native_logs() if first else contextlib.nullcontext():
            result = self._landmarker.detect_for_video(image, ts)
        h, w = frame.shape[:2]
        faces = [
            np.asarray([(p.x * w, p.y * h, p.z * w) for p in face], np.float32)
            for face in result.face_landmarks
            if len(face) == NUM_LANDMARKS
        ]
        if not faces:
            return np.zeros((0, NUM_LANDMARKS, 3), np.float32)
        return np.stack(faces)

    def close(self) -> None:
        if self._landmarker is not None:
            with quiet_native_logs():  # the accelerator's INFO line on teardown
                self._landmarker.close()
            self._landmarker = None

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _boxes(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres [N, 2] and sizes [N] (max side of the 2D landmark box) of faces [N, 478, 3]."""
    lo = faces[..., :2].min(axis=1)
    hi = faces[..., :2].max(axis=1)
    return (lo + hi) / 2.0, np.max(hi - lo, axis=-1)


class FaceTracker:
    """Chooses one face per frame among MediaPipe's candidates, consistently over time.

    ``choose(faces, frame_index, image_size, cut=False, looks=None)`` returns the index of the
    chosen face or None; ``reason`` then says why (a ``REASONS`` code). ``cut``: a shot cut just
    before this frame; ``looks``: ``[N, D]`` ``face_descriptor`` of the faces (checked after a cut).
    """

    def __init__(self, options: LandmarkerOptions, fps: float):
        self.options = options
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.centre: np.ndarray | None = None
        self.size: float | None = None
        self.last_index: int | None = None
        self.after_cut = False
        self.look: np.ndarray | None = None
        self.reason = NO_FACE

    def _initial(self, centres, sizes, image_size) -> int | None:
        track = self.options.track
        if track == "largest":
            return int(np.argmax(sizes))
        if track == "first" or track.isdigit():
            k = 0 if track == "first" else int(track)
            order = np.argsort(centres[:, 0], kind="stable")
            return int(order[k]) if k < len(order) else None
        w, h = image_size
        diag = float(np.hypot(w, h))
        dist = np.linalg.norm(centres - np.array([w / 2.0, h / 2.0]), axis=-1)
        score = sizes / diag - self.options.centre_weight * dist / diag
        return int(np.argmax(score))

    def _continue(self, centres, sizes, lost_for: int, looks) -> int | None:
        """The candidate that continues the track, or None (the tracked face is not among them).

        Within a shot: the nearest face, within ``max_jump`` face sizes per frame lost. After a
        cut: the nearest face within one such step, of a similar size and look."""
        d = np.linalg.norm(centres - self.centre, axis=-1)
        k = int(np.argmin(d))
        steps = 1 if self.after_cut else min(max(lost_for, 1), 4)
        if d[k] > self.options.max_jump * self.size * steps:
            return None
        if self.after_cut:
            if not 1 / 1.5 <= sizes[k] / self.size <= 1.5:
                return None
            known = looks is not None and self.look is not None
            if known and look_change(self.look, looks[k]) > self.options.max_look_change:
                return None
        return k

    def choose(
        self, faces: np.ndarray, frame_index: int, image_size: tuple[int, int], cut: bool = False, looks=None
    ) -> int | None:
        if cut and self.centre is not None:
            if self.options.new_track_at_cuts:
                self.centre = self.size = self.last_index = None
            self.after_cut = self.centre is not None
        if faces.shape[0] == 0:
            self.reason = AFTER_CUT if self.after_cut else NO_FACE
            return None
        centres, sizes = _boxes(faces)
        lost_for = None if self.last_index is None else frame_index - self.last_index
        if self.centre is None or (not self.after_cut and lost_for / self.fps > self.options.reacquire_s):
            k = self._initial(centres, sizes, image_size)
        else:
            k = self._continue(centres, sizes, lost_for, looks)
        if k is None:
            self.reason = AFTER_CUT if self.after_cut else OTHER_FACES
            return None
        self.centre, self.size, self.last_index = centres[k], float(sizes[k]), frame_index
        self.look = None if looks is None else np.asarray(looks[k])
        self.after_cut, self.reason = False, FACE
        return k


def face_descriptor(frame: np.ndarray, face: np.ndarray) -> np.ndarray:
    """``float [24]``: colour histogram (8 bins a channel) of the centre of a face's landmark box
    (the middle half each way: skin, eyes, nose, mouth; little background), for ``look_change``."""
    lo, hi = face[:, :2].min(axis=0), face[:, :2].max(axis=0)
    q = (hi - lo) / 4.0
    h, w = frame.shape[:2]
    x0, y0 = (int(np.clip(v, 0, lim - 1)) for v, lim in zip(lo + q, (w, h)))
    x1, y1 = (int(np.clip(v, 1, lim)) for v, lim in zip(hi - q, (w, h)))
    patch = frame[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
    return frame_signature(patch, bins=8, step=max(1, min(patch.shape[:2]) // 32))


def look_change(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance of two histograms of three channels, averaged (0 same, 1 disjoint)."""
    return float(np.abs(np.asarray(a) - np.asarray(b)).sum()) / 6.0


def frame_signature(frame: np.ndarray, bins: int = 16, step: int = 4) -> np.ndarray:
    """``float [3 · bins]`` colour histogram of a frame (every ``step``-th pixel each way), each
    channel summing to 1."""
    small = np.asarray(frame)[::step, ::step].reshape(-1, 3)
    hist = [np.bincount(small[:, c].astype(np.int32) * bins // 256, minlength=bins) for c in range(3)]
    return np.concatenate(hist).astype(np.float64) / max(1, small.shape[0])


def is_cut(previous: np.ndarray | None, current: np.ndarray, threshold: float) -> bool:
    """A shot cut between two frames: half the L1 distance of their ``frame_signature`` (averaged
    over the channels, in [0, 1]) exceeds ``threshold``."""
    if previous is None or threshold >= 1.0:
        return False
    return look_change(previous, current) > threshold


def reason_runs(reason: np.ndarray, frame_indices: np.ndarray) -> list[list]:
    """Invalid frames as runs ``[first frame index, last frame index, reason text]`` (for metrics.json)."""
    reason = np.asarray(reason)
    out: list[list] = []
    for t, r in enumerate(reason.tolist()):
        if r == FACE:
            continue
        if out and out[-1][2] == REASONS[r] and out[-1][3] == t - 1:
            out[-1][1], out[-1][3] = int(frame_indices[t]), t
        else:
            out.append([int(frame_indices[t]), int(frame_indices[t]), REASONS[r], t])
    return [run[:3] for run in out]


def orientation_scores(frames, model_path, samples: int = 6) -> tuple[float, float]:
    """``(as stored, turned 180°)``: the median best face-detector score over up to ``samples``
    frames spread over the clip, with the frames as they are and turned upside down.

    The detector is the one inside the landmarker bundle (``face_detector.tflite``); unlike the
    landmarker, which places an upright mesh even on an inverted face, it scores an inverted face
    clearly lower than an upright one.
    """
    # Lazy: mediapipe is heavy and only detection needs it.
    import zipfile

    with quiet_native_logs():  # the environment settings before the library loads
        import mediapipe as mp
        from mediapipe.tasks.python import vision

    with zipfile.ZipFile(resolve_model_path(model_path)) as z:
        buf = z.read("face_detector.tflite")
    opts = vision.FaceDetectorOptions(
        base_options=mp.tasks.BaseOptions(model_asset_buffer=buf), running_mode=vision.RunningMode.IMAGE,
        min_detection_confidence=0.1,
    )
    picks = np.unique(np.linspace(0, len(frames) - 1, min(samples, len(frames))).round().astype(int))
    scores = np.zeros((len(picks), 2))
    with quiet_native_logs():  # a few images: the detector's whole life, set-up to teardown
        detector = vision.FaceDetector.create_from_options(opts)
        try:
            for i, t in enumerate(picks):
                for j, img in enumerate((frames[t], frames[t][::-1, ::-1])):
                    res = detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img)))
                    scores[i, j] = max((d.categories[0].score for d in res.detections), default=0.0)
        finally:
            detector.close()
    return float(np.median(scores[:, 0])), float(np.median(scores[:, 1]))


@dataclasses.dataclass
class FaceLandmarks:
    """Landmarks of one face through one view of a clip.

    Attributes:
      points: ``float32 [T, 478, 3]``: x, y in the view's pixels (``[0, W] × [0, H]``), z relative
        depth scaled like x; zeros where ``valid`` is False.
      valid: ``bool [T]``: the tracked face was found.
      frame_indices: ``int64 [T]`` source frame index of each row.
      image_size: ``(width, height)`` of the view in pixels.
      num_faces: ``int16 [T]`` faces MediaPipe returned in each frame.
      fps: source frame rate.
      name: clip/view name used in messages.
      visible: ``bool [T, 478]``: the landmark is seen, not a far-side guess (False on invalid
        frames). Computed from ``points`` by ``landmark_sets.landmark_visibility`` when not given;
        a given mask is kept (and-ed with ``valid``).
      reason: ``int8 [T]`` why a frame is invalid (``REASONS``; 0 on valid frames); by default
        "no face detected" on every invalid frame.
    """

    points: np.ndarray
    valid: np.ndarray
    frame_indices: np.ndarray
    image_size: tuple[int, int]
    num_faces: np.ndarray
    fps: float = 25.0
    name: str = "clip"
    visible: np.ndarray | None = None
    reason: np.ndarray | None = None

    def __post_init__(self):
        self.points = np.asarray(self.points, np.float32)
        self.valid = np.asarray(self.valid, bool).reshape(-1)
        self.frame_indices = np.asarray(self.frame_indices, np.int64).reshape(-1)
        self.num_faces = np.asarray(self.num_faces, np.int16).reshape(-1)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        t = self.valid.shape[0]
        if self.points.shape != (t, NUM_LANDMARKS, 3):
            raise ValueError(f"{self.name}: points must be [{t}, {NUM_LANDMARKS}, 3], got {self.points.shape}")
        if self.frame_indices.shape[0] != t or self.num_faces.shape[0] != t:
            raise ValueError(f"{self.name}: frame_indices/num_faces need {t} entries")
        if self.visible is None:
            self.visible = landmark_sets.landmark_visibility(self.points, self.valid)
        else:
            self.visible = np.asarray(self.visible, bool)
            if self.visible.shape != (t, NUM_LANDMARKS):
                raise ValueError(f"{self.name}: visible must be [{t}, {NUM_LANDMARKS}], got {self.visible.shape}")
            self.visible = self.visible & self.valid[:, None]
        reason = np.full(t, NO_FACE) if self.reason is None else np.asarray(self.reason).reshape(-1)
        if reason.shape[0] != t:
            raise ValueError(f"{self.name}: reason needs {t} entries, got {reason.shape[0]}")
        self.reason = np.where(self.valid, FACE, np.maximum(reason, NO_FACE)).astype(np.int8)

    @property
    def num_frames(self) -> int:
        return int(self.valid.shape[0])

    @property
    def xy(self) -> np.ndarray:
        """``[T, 478, 2]`` pixel positions."""
        return self.points[..., :2]

    @property
    def valid_fraction(self) -> float:
        return float(self.valid.mean()) if self.num_frames else 0.0

    @property
    def visible_xy(self) -> np.ndarray:
        """``[T, 478, 2]`` pixel positions with NaN where the point is not visible (or the frame invalid)."""
        return np.where(self.visible[..., None], self.xy, np.nan).astype(np.float32)

    def with_visibility(self, min_facing: float = landmark_sets.DEFAULT_MIN_FACING) -> "FaceLandmarks":
        """A copy whose ``visible`` is recomputed with another ``min_facing`` margin."""
        vis = landmark_sets.landmark_visibility(self.points, self.valid, min_facing=min_facing)
        return dataclasses.replace(self, visible=vis)

    def to_npz_dict(self) -> dict:
        return dict(
            points=self.points,
            valid=self.valid,
            frame_indices=self.frame_indices,
            image_size=np.asarray(self.image_size, np.int64),
            num_faces=self.num_faces,
            fps=np.float64(self.fps),
            name=np.str_(self.name),
            visible=self.visible,
            reason=self.reason,
        )

    @classmethod
    def from_npz(cls, data) -> "FaceLandmarks":
        return cls(
            points=data["points"],
            valid=data["valid"],
            frame_indices=data["frame_indices"],
            image_size=tuple(int(v) for v in data["image_size"]),
            num_faces=data["num_faces"],
            fps=float(data["fps"]),
            name=str(data["name"]),
            visible=data["visible"] if "visible" in getattr(data, "files", data) else None,
            reason=data["reason"] if "reason" in getattr(data, "files", data) else None,
        )

    def save(self, path) -> None:
        """Writes an npz atomically (``common.atomic``: a reader never sees a partial file)."""
        atomic.atomic_write(path, lambda f: np.savez(f, **self.to_npz_dict()))

    @classmethod
    def load(cls, path) -> "FaceLandmarks":
        with np.load(path, allow_pickle=False) as d:
            return cls.from_npz(d)
