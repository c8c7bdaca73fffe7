"""Face landmarks with the MediaPipe Face Landmarker (Tasks API, 478 points, VIDEO running mode).

* **Model file.** ``resolve_model_path``: an explicit path (argument / flag) > the environment variable
  ``NEUFACE_FACE_LANDMARKER`` > the user cache ``~/.cache/neuface_jax/face_landmarker.task``
  (``$XDG_CACHE_HOME/neuface_jax`` when set). ``fetch_model`` downloads the official float16 v1 bundle
  and checks its SHA-256 (``neuface-jax fetch-models``, or ``python -m neuface_jax.media.detect fetch-models``).
* **Detection.** One ``FaceLandmarker`` per view (VIDEO mode keeps tracking state and needs increasing
  timestamps). Output per clip view: ``FaceLandmarks`` with points ``[T, 478, 3]`` in the view's pixels,
  a validity mask ``[T]`` (frames without the tracked face are invalid; their points are zeros),
  a per-landmark visibility mask ``[T, 478]`` and the source frame indices.
* **Far-side guesses.** On a strongly turned head MediaPipe still returns all 478 points; those on
  the far side of the face are guesses. ``FaceLandmarks.visible`` marks them False: the canonical
  mesh's normals, turned by the head rotation fitted to MediaPipe's own 3D output, must face the
  camera (``landmark_sets.landmark_visibility``). Fitting code drops invisible points from the
  landmark loss.
* **Several faces.** The first face is the one with the best size/centrality score; later frames take
  the candidate nearest the previous choice (within ``max_jump`` face sizes), so the identity stays
  consistent. A track lost for more than ``reacquire_s`` seconds is re-acquired by the initial rule.
* **Cache.** ``detect_video`` / ``detect_clip`` store one npz per view in a cache folder, keyed by the
  source file (absolute path, size, mtime), the crop box, the selected frames, the options and the
  model file's SHA-256, so re-runs skip detection.
* **Background work.** ``prefetch(iterable, size)`` runs any iterator in a thread and hands its items
  over through a bounded queue; ``detect_video`` decodes ahead with it, and a caller can wrap
  ``iter_detect`` in it to detect ahead of an optimizer.

Pixel coordinates: x right, y down, continuous with the image spanning ``[0, W] × [0, H]`` (pixel
``(row i, column j)`` has its centre at ``(j + 0.5, i + 0.5)``), the convention of MediaPipe's
normalized outputs (``x_px = x_norm · W``) and of ``neuface_jax.core.camera``. The third coordinate is
MediaPipe's relative depth scaled like x (``z_norm · W``; smaller is nearer the camera; origin near
the head centre), useful for visibility but not metric.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import threading
import urllib.request
import warnings
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from neuface_jax.media import landmark_sets
from neuface_jax.media import sources as sources_lib
from neuface_jax.media import video as video_lib
from neuface_jax.media.sources import prefetch

__all__ = [
    "MODEL_URL",
    "MODEL_SHA256",
    "MODEL_ENV_VAR",
    "ModelNotFoundError",
    "ModelChecksumError",
    "NoFaceError",
    "LandmarkerOptions",
    "FaceLandmarks",
    "default_cache_dir",
    "default_model_path",
    "resolve_model_path",
    "fetch_model",
    "fetch_models_main",
    "sha256_file",
    "FaceLandmarker",
    "FaceTracker",
    "iter_detect",
    "detect_frames",
    "detect_video",
    "detect_clip",
    "prefetch",
    "cache_key",
    "cache_file",
    "load_cached",
    "timestamp_ms",
    "default_landmark_cache_dir",
    "CACHE_VERSION",
]

MODEL_URL = (
    "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task"
)
MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
MODEL_ENV_VAR = "NEUFACE_FACE_LANDMARKER"
MODEL_FILENAME = "face_landmarker.task"
FETCH_COMMAND = "neuface-jax fetch-models"
NUM_LANDMARKS = 478
#: Version of the cached landmark files (part of the cache key). 2: files carry ``visible``.
CACHE_VERSION = 2
_CACHE_VERSION = CACHE_VERSION


class ModelNotFoundError(FileNotFoundError):
    """No face landmarker model file; the message says how to get one."""


class ModelChecksumError(ValueError):
    """A downloaded model's SHA-256 does not match the expected one (the file was deleted)."""


class NoFaceError(ValueError):
    """No face was detected in any frame of a clip (or view)."""


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
    download goes to a temporary file next to ``dest`` and is renamed into place only after the
    checksum matched; on a mismatch it is deleted and nothing is installed.

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
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def fetch_models_main(argv: Sequence[str] | None = None) -> int:
    """``neuface-jax fetch-models [--dest PATH] [--url URL] [--force]``: downloads and verifies the model."""
    import argparse

    ap = argparse.ArgumentParser(prog=FETCH_COMMAND, description="Download the MediaPipe Face Landmarker model.")
    ap.add_argument("--dest", default=None, help=f"target file (default {default_model_path()})")
    ap.add_argument("--url", default=MODEL_URL)
    ap.add_argument("--force", action="store_true", help="download even if a verified copy exists")
    args = ap.parse_args(argv)
    try:
        path = fetch_model(args.dest, url=args.url, force=args.force)
    except (OSError, ModelChecksumError) as e:
        print(f"error: {e}")
        return 1
    print(f"face landmarker model: {path} (SHA-256 {MODEL_SHA256})")
    return 0


# ----------------------------------------------------------------------------------------------
# Landmarker


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
    """

    num_faces: int = 4
    min_face_detection_confidence: float = 0.5
    min_face_presence_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    max_jump: float = 0.75
    reacquire_s: float = 1.0
    centre_weight: float = 0.5

    def __post_init__(self):
        if self.num_faces < 1:
            raise ValueError(f"num_faces must be >= 1, got {self.num_faces}")
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
            self._landmarker = vision.FaceLandmarker.create_from_options(mp_options)
        except Exception as e:
            raise ValueError(f"{self.model_path}: not a usable face landmarker model ({e})") from e
        self._last_ts = -1

    def detect(self, frame: np.ndarray, timestamp_ms: int) -> np.ndarray:
        """All faces in an RGB ``uint8 [H, W, 3]`` frame → ``float32 [N, 478, 3]`` pixels (N may be 0)."""
        frame = np.ascontiguousarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
        ts = max(int(timestamp_ms), self._last_ts + 1)
        self._last_ts = ts
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=frame)
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

    ``choose(faces, frame_index, image_size)`` returns the index of the chosen face or None.
    """

    def __init__(self, options: LandmarkerOptions, fps: float):
        self.options = options
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.centre: np.ndarray | None = None
        self.size: float | None = None
        self.last_index: int | None = None

    def _initial(self, centres, sizes, image_size) -> int:
        w, h = image_size
        diag = float(np.hypot(w, h))
        dist = np.linalg.norm(centres - np.array([w / 2.0, h / 2.0]), axis=-1)
        score = sizes / diag - self.options.centre_weight * dist / diag
        return int(np.argmax(score))

    def choose(self, faces: np.ndarray, frame_index: int, image_size: tuple[int, int]) -> int | None:
        if faces.shape[0] == 0:
            return None
        centres, sizes = _boxes(faces)
        lost_for = None if self.last_index is None else frame_index - self.last_index
        if self.centre is None or lost_for / self.fps > self.options.reacquire_s:
            k = self._initial(centres, sizes, image_size)
        else:
            d = np.linalg.norm(centres - self.centre, axis=-1)
            k = int(np.argmin(d))
            allowed = self.options.max_jump * self.size * min(max(lost_for, 1), 4)
            if d[k] > allowed:
                return None
        self.centre, self.size, self.last_index = centres[k], float(sizes[k]), frame_index
        return k


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
    """

    points: np.ndarray
    valid: np.ndarray
    frame_indices: np.ndarray
    image_size: tuple[int, int]
    num_faces: np.ndarray
    fps: float = 25.0
    name: str = "clip"
    visible: np.ndarray | None = None

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
        )

    def save(self, path) -> None:
        """Writes an npz atomically (temporary file, then rename)."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **self.to_npz_dict())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "FaceLandmarks":
        with np.load(path, allow_pickle=False) as d:
            return cls.from_npz(d)


# ----------------------------------------------------------------------------------------------
# Detection loops


def timestamp_ms(index: int, fps: float) -> int:
    """MediaPipe VIDEO-mode timestamp of source frame ``index``: ``round(index · 1000 / fps)`` ms.

    An unknown or non-positive ``fps`` counts as 25. Strided selections keep their source times,
    so timestamps still increase (``FaceLandmarker.detect`` also forces them to increase).
    """
    return int(round(index * 1000.0 / (fps if fps and fps > 0 else 25.0)))


_timestamp_ms = timestamp_ms  # the former private name, kept for existing callers


def iter_detect(
    frames: Iterable[tuple[int, np.ndarray]],
    *,
    fps: float,
    model_path=None,
    options: LandmarkerOptions | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None, int]]:
    """Streams detection over ``(frame_index, frame)`` pairs of one view.

    The landmarker is created inside the generator, so the whole loop may run in a background
    thread (``prefetch(iter_detect(...), size)``).

    Yields:
      ``(frame_index, frame, points, num_faces)``: ``points`` ``float32 [478, 3]`` of the tracked face
      in pixels, or None when it was not found.
    """
    options = options or LandmarkerOptions()
    tracker = FaceTracker(options, fps)
    with FaceLandmarker(model_path, options) as lm:
        for index, frame in frames:
            faces = lm.detect(frame, timestamp_ms(index, fps))
            k = tracker.choose(faces, index, (frame.shape[1], frame.shape[0]))
            yield index, frame, (None if k is None else faces[k]), int(faces.shape[0])


def detect_frames(
    frames,
    *,
    fps: float = 25.0,
    frame_indices: Sequence[int] | None = None,
    model_path=None,
    options: LandmarkerOptions | None = None,
    name: str = "clip",
    require_face: bool = True,
) -> FaceLandmarks:
    """Detects the tracked face in frames of one view.

    Args:
      frames: ``uint8 [T, H, W, 3]``, a sequence of ``[H, W, 3]`` frames, or an iterator of
        ``(frame_index, frame)`` pairs (then ``frame_indices`` is ignored).
      fps: frame rate, for MediaPipe's timestamps and the tracker's time limits.
      frame_indices: source index of each frame (0..T-1 by default).
      name: the clip/view name used in errors.
      require_face: raise ``NoFaceError`` when no frame has a face (else return all-invalid).

    Raises:
      NoFaceError: no face in any frame and ``require_face``; the message names the clip.
      ModelNotFoundError: no model file (see ``resolve_model_path``).
    """
    if isinstance(frames, np.ndarray) or isinstance(frames, (list, tuple)):
        idx = range(len(frames)) if frame_indices is None else frame_indices
        if len(idx) != len(frames):
            raise ValueError(f"{name}: {len(idx)} frame indices for {len(frames)} frames")
        pairs = zip((int(i) for i in idx), frames)
    else:
        pairs = iter(frames)
    rows, valid, indices, counts = [], [], [], []
    size = None
    for index, frame, pts, n in iter_detect(pairs, fps=fps, model_path=model_path, options=options):
        s = (int(frame.shape[1]), int(frame.shape[0]))
        if size is None:
            size = s
        elif s != size:
            raise ValueError(f"{name}: frame {index} is {s[0]}x{s[1]}, earlier frames {size[0]}x{size[1]}")
        rows.append(np.zeros((NUM_LANDMARKS, 3), np.float32) if pts is None else pts)
        valid.append(pts is not None)
        indices.append(index)
        counts.append(n)
    if not rows:
        raise ValueError(f"{name}: no frames to detect in")
    result = FaceLandmarks(
        points=np.stack(rows),
        valid=np.asarray(valid),
        frame_indices=np.asarray(indices),
        image_size=size,
        num_faces=np.asarray(counts),
        fps=fps,
        name=name,
    )
    _check_faces(result, require_face)
    return result


def _check_faces(result: FaceLandmarks, require_face: bool) -> None:
    if result.valid.any():
        return
    msg = f"{result.name}: no face detected in any of its {result.num_frames} frames"
    if require_face:
        raise NoFaceError(msg)
    warnings.warn(msg, stacklevel=3)


# ----------------------------------------------------------------------------------------------
# Cache


def _source_stat(path) -> dict:
    p = pathlib.Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def cache_key(source, *, box=None, frames, options: LandmarkerOptions, model_path) -> str:
    """Hex key of a detection result: source file identity, box, frame selection, options, model.

    ``frames`` is anything JSON-serialisable describing the selected frames (a ``FrameRange`` as a
    dict, or a list of frame indices).
    """
    model = pathlib.Path(model_path)
    payload = {
        "version": CACHE_VERSION,
        "source": _source_stat(source),
        "box": None if box is None else [int(v) for v in box],
        "frames": frames,
        "options": dataclasses.asdict(options),
        "model_sha256": _cached_sha256(model),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_SHA_MEMO: dict[tuple, str] = {}


def _cached_sha256(path: pathlib.Path) -> str:
    st = path.stat()
    k = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if k not in _SHA_MEMO:
        _SHA_MEMO[k] = sha256_file(path)
    return _SHA_MEMO[k]


def cache_file(cache_dir, source, view: str | None, key: str) -> pathlib.Path:
    """Path of a cached detection result: ``<cache_dir>/<source stem>[-<view>]-<key[:20]>.npz``.

    Args:
      cache_dir: the landmark cache folder (``default_landmark_cache_dir()`` by default elsewhere).
      source: the source video or image file (its stem names the file; unsafe characters → ``_``).
      view: the view's name when the source holds several views (a box of a composite), else None.
      key: ``cache_key(...)`` of the result.
    """
    stem = pathlib.Path(source).stem + (f"-{view}" if view else "")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80]
    return pathlib.Path(cache_dir) / f"{safe}-{key[:20]}.npz"


_cache_file = cache_file  # the former private name, kept for existing callers


def default_landmark_cache_dir() -> pathlib.Path:
    return default_cache_dir() / "landmarks"


def load_cached(path) -> FaceLandmarks | None:
    """The cached ``FaceLandmarks`` at ``path``, or None when there is none.

    A damaged or unreadable file is not fatal: it warns and returns None, so the caller detects
    again (and overwrites it). Files written before ``visible`` existed have a different cache key
    (``CACHE_VERSION``) and are not found; if read directly, their visibility is computed.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    try:
        return FaceLandmarks.load(path)
    except Exception as e:  # a damaged cache entry is recomputed, never fatal
        warnings.warn(f"ignoring unreadable landmark cache {path}: {e}", stacklevel=3)
        return None


_load_cached = load_cached  # the former private name, kept for existing callers


# ----------------------------------------------------------------------------------------------
# Videos and clips


def detect_video(
    path,
    *,
    box: tuple[int, int, int, int] | None = None,
    view_name: str | None = None,
    frames: video_lib.FrameRange | None = None,
    start: int | None = None,
    end: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    stride: int = 1,
    model_path=None,
    options: LandmarkerOptions | None = None,
    cache_dir=None,
    use_cache: bool = True,
    require_face: bool = True,
    prefetch_size: int = 8,
) -> FaceLandmarks:
    """Detects the face through a video file, decoding ahead in a background thread.

    Args:
      path: video file.
      box: optional ``(x0, y0, x1, y1)`` half-open pixel box: detect in that region only (a view of a
        tiled composite); landmarks are then in the box's pixels.
      view_name: name for messages and the cache file (file stem by default).
      frames / start / end / start_s / end_s / stride: the frames (see ``video.FrameRange``).
      cache_dir: landmark cache folder (default ``~/.cache/neuface_jax/landmarks``).
      use_cache: read and write the cache.
      prefetch_size: frames decoded ahead.

    Raises:
      VideoError: unreadable or truncated video.
      NoFaceError: no face in any selected frame (``require_face``), naming the video.
    """
    rng = video_lib.frame_range(frames, start=start, end=end, start_s=start_s, end_s=end_s, stride=stride)
    options = options or LandmarkerOptions()
    model = resolve_model_path(model_path)
    info = video_lib.probe_video(path)
    name = f"{path}" + (f" [{view_name}]" if view_name else "") + (f" box {tuple(box)}" if box is not None else "")
    cache_path = None
    if use_cache:
        key = cache_key(path, box=box, frames=dataclasses.asdict(rng), options=options, model_path=model)
        cache_path = cache_file(cache_dir or default_landmark_cache_dir(), path, view_name, key)
        hit = load_cached(cache_path)
        if hit is not None:
            _check_faces(hit, require_face)
            return hit
    it = video_lib.iter_video_frames(path, frames=rng, info=info)
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        if not (0 <= x0 < x1 <= info.width and 0 <= y0 < y1 <= info.height):
            raise ValueError(f"box {box} is empty or outside the {info.width}x{info.height} video {path}")
        it = ((i, np.ascontiguousarray(f[y0:y1, x0:x1])) for i, f in it)
    result = detect_frames(
        prefetch(it, prefetch_size), fps=info.fps, model_path=model, options=options, name=name, require_face=False
    )
    if cache_path is not None:
        result.save(cache_path)
    _check_faces(result, require_face)
    return result


def detect_clip(
    clip: video_lib.VideoClip,
    *,
    model_path=None,
    options: LandmarkerOptions | None = None,
    cache_dir=None,
    use_cache: bool = True,
    require_face: bool = True,
) -> dict[str, FaceLandmarks]:
    """Detects the face in every view of a decoded clip; returns view name → ``FaceLandmarks``.

    Views are detected one after another, each with its own landmarker. Views whose source is a
    file are cached (keyed by the file, the view's box and the frame indices); in-memory views
    (``sources`` None) are not.

    Raises:
      NoFaceError: a view has no face in any frame (``require_face``), naming the view and source.
    """
    options = options or LandmarkerOptions()
    model = resolve_model_path(model_path)
    out = {}
    for v, name in enumerate(clip.view_names):
        src, box = clip.sources[v], clip.source_boxes[v]
        label = f"view {name!r}" + (f" of {src}" if src else "") + (f" box {box}" if box else "")
        cache_path = None
        if use_cache and src and pathlib.Path(src).is_file():
            key = cache_key(src, box=box, frames=clip.frame_indices.tolist(), options=options, model_path=model)
            cache_path = cache_file(cache_dir or default_landmark_cache_dir(), src, name, key)
            hit = load_cached(cache_path)
            if hit is not None:
                _check_faces(hit, require_face)
                out[name] = hit
                continue
        res = detect_frames(
            clip.frames[v],
            fps=clip.fps,
            frame_indices=clip.frame_indices,
            model_path=model,
            options=options,
            name=label,
            require_face=False,
        )
        if cache_path is not None:
            res.save(cache_path)
        _check_faces(res, require_face)
        out[name] = res
    return out


# ----------------------------------------------------------------------------------------------
# One clip: decode + detect every view


class ViewDetector:
    """One view's landmarker on its own worker thread (VIDEO mode needs in-order calls)."""

    def __init__(self, model_path, options, fps):
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="neuface-detect")
        self.landmarker = self.pool.submit(FaceLandmarker, model_path, options).result()
        self.tracker = FaceTracker(options, fps)

    def submit(self, frame, ts):
        return self.pool.submit(self.landmarker.detect, frame, ts)

    def close(self):
        with contextlib.suppress(Exception):
            self.pool.submit(self.landmarker.close).result()
        self.pool.shutdown(wait=True)


def decode_and_detect(
    src: sources_lib.Source, *, model_path, options, cache_dir, use_cache, bar=None, prefetch_size=8, in_flight=4, on_first_face=None
):
    """Streams the frames once: stores them and detects the views that are not cached.

    ``on_first_face()`` is called once, as soon as some view has a face (a cached one, or the first
    detection), so the caller can start work that is only worth doing when the clip has a face.

    Returns (frames per view [T, H, W, 3], FaceLandmarks per view, frame indices [T], cache hits per view).
    """
    w = len(src.view_names)
    hits: list[FaceLandmarks | None] = [None] * w
    cache_paths: list[pathlib.Path | None] = [None] * w
    if use_cache:
        cdir = cache_dir or default_landmark_cache_dir()
        for v, cid in enumerate(src.cache_ids):
            if cid is None:
                continue
            path, box, frames_key = cid
            key = cache_key(path, box=box, frames=frames_key, options=options, model_path=model_path)
            cache_paths[v] = cache_file(cdir, path, src.view_names[v] if w > 1 or box else None, key)
            hits[v] = load_cached(cache_paths[v])
    todo = [v for v in range(w) if hits[v] is None]
    signalled = [False]

    def face_found():
        if not signalled[0] and on_first_face is not None:
            signalled[0] = True
            on_first_face()

    if any(h is not None and h.valid.any() for h in hits):
        face_found()
    detectors = {v: ViewDetector(model_path, options, src.fps) for v in todo}
    frames: list[list[np.ndarray]] = [[] for _ in range(w)]
    indices: list[int] = []
    rows = {v: [] for v in todo}
    valid = {v: [] for v in todo}
    counts = {v: [] for v in todo}
    pending: collections.deque = collections.deque()

    def finish(item):
        index, fr, futs = item
        for v, fut in futs.items():
            faces = fut.result()
            k = detectors[v].tracker.choose(faces, index, (fr[v].shape[1], fr[v].shape[0]))
            rows[v].append(np.zeros((NUM_LANDMARKS, 3), np.float32) if k is None else faces[k])
            valid[v].append(k is not None)
            counts[v].append(int(faces.shape[0]))
            if k is not None:
                face_found()
        if bar is not None:
            bar.update(1)

    try:
        for index, fr in prefetch(src.stream(), prefetch_size):
            if len(fr) != w:
                raise ValueError(f"{src.label}: {len(fr)} views in a frame, expected {w}")
            if indices:
                for v in range(w):
                    if fr[v].shape != frames[v][0].shape:
                        raise ValueError(
                            f"{src.label}: view {src.view_names[v]!r} frame {index} is {fr[v].shape}, "
                            f"earlier frames {frames[v][0].shape}"
                        )
            indices.append(int(index))
            for v in range(w):
                frames[v].append(fr[v])
            ts = timestamp_ms(index, src.fps)
            futs = {v: detectors[v].submit(fr[v], ts) for v in todo}
            pending.append((int(index), fr, futs))
            while len(pending) > in_flight:
                finish(pending.popleft())
        while pending:
            finish(pending.popleft())
    finally:
        for d in detectors.values():
            d.close()
    if not indices:
        raise video_lib.VideoError(src.label, "no frames to read")
    idx = np.asarray(indices, np.int64)
    results = []
    for v, name in enumerate(src.view_names):
        label = f"view {name!r} of {src.label}"
        if hits[v] is not None:
            res = hits[v]
            if res.num_frames != len(idx) or not np.array_equal(res.frame_indices, idx):
                raise RuntimeError(f"{label}: cached landmarks do not match the decoded frames; clear {cache_paths[v]}")
        else:
            f0 = frames[v][0]
            res = FaceLandmarks(
                points=np.stack(rows[v]), valid=np.asarray(valid[v]), frame_indices=idx,
                image_size=(int(f0.shape[1]), int(f0.shape[0])), num_faces=np.asarray(counts[v]), fps=src.fps,
                name=label,
            )
            if cache_paths[v] is not None:
                res.save(cache_paths[v])
        results.append(res)
    return frames, results, idx, [h is not None for h in hits]


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


if __name__ == "__main__":  # python -m neuface_jax.media.detect fetch-models [...]
    import sys

    args = sys.argv[1:]
    if args[:1] == ["fetch-models"]:
        args = args[1:]
    raise SystemExit(fetch_models_main(args))
