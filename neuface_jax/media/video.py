"""Video input and output: single videos, synchronized multi-view videos, frame folders, mp4 writing.

Decoding runs the ``ffmpeg`` binary that ``imageio-ffmpeg`` ships (or the one named by the
``IMAGEIO_FFMPEG_EXE`` environment variable) and reads raw RGB frames from its pipe, so frames stream
one at a time (``iter_video_frames``) and a background thread can decode ahead
(``neuface_jax.media.sources.prefetch``). The eager readers (``read_video``, ``read_videos``,
``read_frame_folder``) return a ``VideoClip``.

Conventions:

* Frames are ``uint8`` RGB arrays ``[H, W, 3]``; a view's frames stack to ``[T, H, W, 3]``.
* Frame indices are 0-based indices of the frames stored in the file, in decode order (for frame
  folders: the frame number in the file name). ffmpeg passes the stored frames through as they are:
  a stream that starts after t = 0 (``VideoInfo.start_s``) or has gaps gets no copies of frames
  padded in. A time range in seconds selects the frames whose time ``index / fps`` (seconds after
  the stream's first frame) lies in ``[start_s, end_s)``; a frame range selects
  ``start <= index < end``; the stride is applied after the range (``start, start + stride, ...``).
* Rotation metadata (a display matrix) is applied on decode: frames come out upright as the file
  says they should be displayed; ``VideoInfo.rotation`` records the angle.
* Views of one clip are synchronized by time: frame ``i`` of a view is shown at
  ``start_s + i / fps``. Views of one frame rate and start are paired by index; views of different
  rates or starts are resampled to the slowest view's frames (nearest frame in time), with a
  warning, or rejected with ``ValueError`` when ``strict=True``. Views with different frame counts
  are trimmed to the shortest with a warning (``ValueError`` under ``strict``). Every trim and
  resampling is written into a ``report`` dict when the caller passes one (``sync_report``).
* Unreadable, empty or truncated files raise ``VideoError`` (a ``ValueError``) naming the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
import subprocess
import threading
import warnings
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

__all__ = [
    "check_frame_rates",
    "needs_time_sync",
    "sync_report",
    "timeline_view",
    "VideoError",
    "VideoInfo",
    "VideoClip",
    "FrameRange",
    "probe_video",
    "iter_video_frames",
    "iter_synchronized",
    "read_video",
    "read_videos",
    "read_frame_folder",
    "split_views",
    "VideoWriter",
    "write_video",
    "pad_to_even",
    "ffmpeg_exe",
    "read_image",
    "resolve_view_names",
    "check_file",
    "spawn",
    "parse_header",
    "last_lines",
    "scan_frame_folder",
]

#: File extensions read as still frames by ``read_frame_folder``.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: MEAD-style frame names: ``img_0001_front.jpg`` → (frame 1, view "front").
MEAD_FRAME_PATTERN = r"^img_(?P<index>\d+)_(?P<view>.+)$"

# ffmpeg messages (at -v error) that mean the stream ended before its container said it would.
_TRUNCATION_MARKERS = ("partial file", "moov atom not found", "Invalid data found", "End of file")


class VideoError(ValueError):
    """A video or frame file could not be read: missing, unreadable, empty or truncated.

    Attributes:
      path: the offending file (or folder), as a string.
    """

    def __init__(self, path, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """Stream facts of a video file, from ffmpeg's header.

    Attributes:
      path: the file.
      width, height: decoded frame size in pixels (after any rotation in the file's metadata).
      fps: frames per second (0.0 when ffmpeg could not tell).
      duration_s: container duration in seconds (0.0 when unknown).
      codec: codec name as ffmpeg prints it, e.g. "h264".
      start_s: time of the video stream's first frame in seconds (0.0 when it starts with the
        container or ffmpeg does not say).
      rotation: display rotation in degrees from the file's metadata (applied on decode).
    """

    path: str
    width: int
    height: int
    fps: float
    duration_s: float
    codec: str
    start_s: float = 0.0
    rotation: float = 0.0

    def frame_time(self, index) -> np.ndarray | float:
        """Time in seconds of frame ``index`` (nominal rate; an unknown rate counts as 25 fps)."""
        return self.start_s + np.asarray(index, np.float64) / (self.fps if self.fps > 0 else 25.0)

    @property
    def estimated_num_frames(self) -> int | None:
        """``round(duration · fps)`` when both are known; a hint, not a guarantee."""
        if self.fps > 0 and self.duration_s > 0:
            return int(round(self.duration_s * self.fps))
        return None


@dataclasses.dataclass(frozen=True)
class FrameRange:
    """Which frames to take: a range in frames or seconds, then a stride.

    Seconds win over frames when both are given for the same end. ``None`` means open-ended.
    """

    start: int | None = None
    end: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    stride: int = 1

    def __post_init__(self):
        if int(self.stride) < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        for name in ("start", "end", "start_s", "end_s"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")

    def bounds(self, fps: float) -> tuple[int, int | None]:
        """(first index, end index exclusive or None) in frames at ``fps``."""
        start = 0 if self.start is None else int(self.start)
        end = None if self.end is None else int(self.end)
        if self.start_s is not None or self.end_s is not None:
            if not fps or fps <= 0:
                raise ValueError("a time range in seconds needs a known frame rate")
            # Frame i is shown at i / fps; take i with start_s <= i / fps < end_s. The epsilon
            # keeps 0.2 s · 25 fps = 5.000000001 from becoming 6.
            if self.start_s is not None:
                start = int(math.ceil(self.start_s * fps - 1e-6))
            if self.end_s is not None:
                end = int(math.ceil(self.end_s * fps - 1e-6))
        return start, end

    def select(self, index: int, fps: float) -> bool:
        start, end = self.bounds(fps)
        return index >= start and (end is None or index < end) and (index - start) % int(self.stride) == 0

    def indices(self, n: int, fps: float) -> np.ndarray:
        """The selected indices among ``0..n-1``."""
        start, end = self.bounds(fps)
        end = n if end is None else min(end, n)
        return np.arange(start, max(start, end), int(self.stride), dtype=np.int64)




@dataclasses.dataclass
class VideoClip:
    """Decoded frames of one clip: one or more synchronized views.

    Attributes:
      frames: one ``uint8`` array ``[T, H_v, W_v, 3]`` per view (views may differ in size), RGB.
      view_names: one name per view.
      fps: frames per second of the source (after the stride: see ``effective_fps``).
      frame_indices: ``[T]`` int64 source frame index of each frame (shared by all views: for views
        synchronized by time, the indices of the timeline view, ``timeline_view``).
      sources: per view, the file (video or first frame) the view came from, or None for arrays.
      source_boxes: per view, the pixel box ``(x0, y0, x1, y1)`` (half-open) the view was cut from
        in its source (``split_views``), or None for the whole frame.
      stride: the frame stride used when reading.
    """

    frames: list[np.ndarray]
    view_names: tuple[str, ...]
    fps: float
    frame_indices: np.ndarray
    sources: tuple[str | None, ...] = ()
    source_boxes: tuple[tuple[int, int, int, int] | None, ...] = ()
    stride: int = 1

    def __post_init__(self):
        self.frames = [np.asarray(f) for f in self.frames]
        self.view_names = tuple(str(v) for v in self.view_names)
        self.frame_indices = np.asarray(self.frame_indices, np.int64).reshape(-1)
        if len(self.frames) != len(self.view_names):
            raise ValueError(f"{len(self.frames)} frame arrays for {len(self.view_names)} view names")
        if len(set(self.view_names)) != len(self.view_names):
            raise ValueError(f"view names must be unique, got {self.view_names}")
        for name, f in zip(self.view_names, self.frames):
            if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
                raise ValueError(f"view {name!r}: frames must be uint8 [T, H, W, 3], got {f.dtype} {f.shape}")
            if f.shape[0] != self.frame_indices.shape[0]:
                raise ValueError(
                    f"view {name!r} has {f.shape[0]} frames for {self.frame_indices.shape[0]} frame indices"
                )
        if not self.sources:
            self.sources = (None,) * len(self.frames)
        if not self.source_boxes:
            self.source_boxes = (None,) * len(self.frames)
        self.sources = tuple(None if s is None else str(s) for s in self.sources)
        self.source_boxes = tuple(None if b is None else tuple(int(x) for x in b) for b in self.source_boxes)
        if len(self.sources) != len(self.frames) or len(self.source_boxes) != len(self.frames):
            raise ValueError("sources and source_boxes need one entry per view")

    @property
    def num_views(self) -> int:
        return len(self.frames)

    @property
    def num_frames(self) -> int:
        return int(self.frame_indices.shape[0])

    @property
    def sizes(self) -> tuple[tuple[int, int], ...]:
        """Per view ``(width, height)`` in pixels."""
        return tuple((int(f.shape[2]), int(f.shape[1])) for f in self.frames)

    @property
    def timestamps_s(self) -> np.ndarray:
        """``[T]`` time of each frame in seconds (``frame_index / fps``)."""
        return self.frame_indices / float(self.fps) if self.fps else np.zeros(self.num_frames)

    @property
    def effective_fps(self) -> float:
        return float(self.fps) / max(1, int(self.stride))

    def view(self, name: str) -> np.ndarray:
        """Frames ``[T, H, W, 3]`` of the view called ``name``."""
        try:
            return self.frames[self.view_names.index(name)]
        except ValueError:
            raise KeyError(f"no view {name!r}; views are {self.view_names}") from None

    def subset(self, indices) -> "VideoClip":
        """A clip with the frames at positions ``indices`` (positions, not source frame indices)."""
        idx = np.asarray(indices, np.int64)
        return dataclasses.replace(
            self, frames=[f[idx] for f in self.frames], frame_indices=self.frame_indices[idx]
        )


# ----------------------------------------------------------------------------------------------
# ffmpeg


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (imageio-ffmpeg's, or ``IMAGEIO_FFMPEG_EXE``)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def passthrough_args(version: str | None = None) -> list[str]:
    """ffmpeg's "every stored frame once" option: ``-fps_mode`` from ffmpeg 5.1, ``-vsync`` before
    (ffmpeg 9 no longer knows ``-vsync``; the 4.2 binary of imageio-ffmpeg 0.5 does not know ``-fps_mode``)."""
    if version is None:
        version = _ffmpeg_version()
    m = re.search(r"(\d+)\.(\d+)", version or "")
    if m and (int(m.group(1)), int(m.group(2))) < (5, 1):
        return ["-vsync", "passthrough"]
    return ["-fps_mode", "passthrough"]


_FFMPEG_VERSION: dict[str, str] = {}


def _ffmpeg_version() -> str:
    exe = ffmpeg_exe()
    if exe not in _FFMPEG_VERSION:
        import imageio_ffmpeg  # lazily, as in ffmpeg_exe

        try:
            _FFMPEG_VERSION[exe] = imageio_ffmpeg.get_ffmpeg_version()
        except Exception:  # an unparsable banner: assume a current ffmpeg
            _FFMPEG_VERSION[exe] = ""
    return _FFMPEG_VERSION[exe]


def check_file(path) -> pathlib.Path:
    """``path`` as a ``pathlib.Path`` after checking it is an existing, non-empty file.

    Raises:
      VideoError: naming the path when it is missing, a folder or empty.
    """
    p = pathlib.Path(path)
    if not p.exists():
        raise VideoError(p, "no such file")
    if p.is_dir():
        raise VideoError(p, "is a folder, not a video file (use read_frame_folder for frame folders)")
    if p.stat().st_size == 0:
        raise VideoError(p, "file is empty")
    return p


_check_file = check_file  # the former private name, kept for existing callers


def spawn(cmd, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(cmd, **kwargs)`` the way this module starts ffmpeg.

    ``close_fds=False`` lets CPython use posix_spawn instead of fork: no fork of a multithreaded
    process (JAX, MediaPipe, prefetch threads) and no at-fork warnings. Python's own descriptors
    are non-inheritable, so nothing leaks into the child.
    """
    return subprocess.Popen(cmd, close_fds=False, **kwargs)


_spawn = spawn  # the former private name, kept for existing callers


_RE_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_RE_VIDEO = re.compile(r"Stream #\S+.*?: Video: (?P<codec>[\w-]+)(?P<rest>.*)")
# Not "0x001B" (a codec tag in hex): sides start with a non-zero digit.
_RE_SIZE = re.compile(r"[ ,]([1-9]\d{0,5})x([1-9]\d{0,5})\b")
_RE_FPS = re.compile(r"([\d.]+)(k?) fps")
_RE_TBR = re.compile(r"([\d.]+)(k?) tbr")
_RE_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees", re.IGNORECASE)
_RE_START = re.compile(r"Duration:.*?, start: (-?\d+(?:\.\d+)?)")
_RE_STREAM_START = re.compile(r", start (-?\d+(?:\.\d+)?)")


def parse_header(path, text: str) -> VideoInfo:
    """``VideoInfo`` of the first video stream in ffmpeg's stderr text (``ffmpeg -i ...``).

    Reads the stream's codec, frame size (sides swapped for a ±90° display rotation, which
    ffmpeg applies on decode), frame rate (fps, else tbr; 0 when unknown) and the duration.

    Raises:
      VideoError: naming ``path`` when the text has no video stream or no frame size.
    """
    path = pathlib.Path(path)
    lines = text.splitlines()
    vi = next((i for i, ln in enumerate(lines) if _RE_VIDEO.search(ln)), None)
    if vi is None:
        raise VideoError(path, f"not a readable video ({last_lines(text)})")
    m = _RE_VIDEO.search(lines[vi])
    rest = m.group("rest")
    size = _RE_SIZE.search(rest)
    if size is None:
        raise VideoError(path, f"no frame size in the video stream header: {lines[vi].strip()}")
    w, h = int(size.group(1)), int(size.group(2))
    fps = 0.0
    for rx in (_RE_FPS, _RE_TBR):
        f = rx.search(rest)
        if f:
            fps = float(f.group(1)) * (1000.0 if f.group(2) else 1.0)
            break
    # ffmpeg auto-rotates on decode: a ±90° display matrix swaps the decoded frame's sides.
    rotation = 0.0
    for ln in lines[vi + 1 : vi + 12]:
        if "Stream #" in ln:
            break
        r = _RE_ROTATION.search(ln)
        if r:
            rotation = float(r.group(1))
            if round(abs(rotation)) % 180 == 90:
                w, h = h, w
    d = _RE_DURATION.search(text)
    duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else 0.0
    # The stream's own start (newer ffmpeg prints it on the stream line), else the container's.
    start = _RE_STREAM_START.search(rest) or _RE_START.search(text)
    return VideoInfo(
        path=str(path), width=w, height=h, fps=fps, duration_s=duration, codec=m.group("codec"),
        start_s=float(start.group(1)) if start else 0.0, rotation=rotation,
    )


_parse_header = parse_header  # the former private name, kept for existing callers


def probe_video(path) -> VideoInfo:
    """Reads a video's header with ffmpeg (``ffmpeg -i``), without decoding.

    Raises:
      VideoError: the file is missing, empty, not a video, or has no video stream.
    """
    p = check_file(path)
    proc = spawn(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(p)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, err = proc.communicate(timeout=60)
    text = err.decode("utf-8", "replace")
    # ffmpeg exits 1 here ("At least one output file must be specified"); errors opening the
    # input show up in the text.
    if "Error opening input" in text or "Invalid data found" in text or "moov atom not found" in text:
        raise VideoError(p, f"not a readable video ({last_lines(text)})")
    return parse_header(p, text)


def last_lines(text: str, n: int = 3) -> str:
    """The last ``n`` non-empty lines of a tool's message joined with `` | `` (for error messages)."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip() and not ln.startswith("===")]
    return " | ".join(lines[-n:]) if lines else "no message"


_last_lines = last_lines  # the former private name, kept for existing callers


def iter_video_frames(
    path,
    *,
    frames: FrameRange | None = None,
    info: VideoInfo | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Streams ``(frame_index, frame)`` pairs from a video, one decoded frame at a time.

    Frames before ``start`` are decoded and dropped (exact indices, no keyframe seeking); ffmpeg
    stops once ``end`` is reached. Each yielded frame is a fresh ``uint8 [H, W, 3]`` RGB array.

    Args:
      path: video file.
      frames: a ``FrameRange`` (default: every frame).
      info: ``probe_video(path)`` if already known.

    Raises:
      VideoError: unreadable file; no frames in the requested range; or a truncated/corrupt stream
        (ffmpeg reports a partial file or fails) reached while decoding the range.
    """
    rng = frames if frames is not None else FrameRange()
    info = info or probe_video(path)
    first, last = rng.bounds(info.fps)
    w, h = info.width, info.height
    nbytes = w * h * 3
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", info.path, "-map", "0:v:0"]
    if last is not None:
        cmd += ["-frames:v", str(max(last, 1))]
    # passthrough: every stored frame once, none duplicated to fill a constant-rate timeline from 0.
    cmd += passthrough_args() + ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err_chunks: list[bytes] = []
    err_thread = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    err_thread.start()
    index = -1
    yielded = 0
    try:
        while last is None or index + 1 < last:
            frame = np.empty((h, w, 3), np.uint8)
            got = _read_into(proc.stdout, frame)
            if got == 0:
                # End of ffmpeg's output before ``last``: check how the stream ended.
                rc = proc.wait()
                err_thread.join()
                err = _err(err_chunks)
                if rc != 0:
                    raise VideoError(info.path, f"ffmpeg failed after {index + 1} frames ({last_lines(err)})")
                if any(m in err for m in _TRUNCATION_MARKERS):
                    raise VideoError(
                        info.path,
                        f"truncated or corrupt video: decoding stopped after {index + 1} frames ({last_lines(err)})",
                    )
                break
            if got != nbytes:
                proc.wait()
                err_thread.join()
                raise VideoError(info.path, f"truncated frame {index + 1} ({last_lines(_err(err_chunks))})")
            index += 1
            if index >= first and (index - first) % rng.stride == 0:
                yielded += 1
                yield index, frame
        if index < 0:
            raise VideoError(info.path, "no decodable frames")
        if yielded == 0:
            raise VideoError(info.path, f"no frames in the requested range {rng} (the video has {index + 1} frames)")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        err_thread.join(timeout=5.0)
        proc.stdout.close()
        if not err_thread.is_alive():
            proc.stderr.close()


def _read_into(stream, out: np.ndarray) -> int:
    """Fills ``out`` from ``stream``; returns the number of bytes read (short only at EOF)."""
    view = memoryview(out).cast("B")
    got = 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _err(chunks) -> str:
    return b"".join(chunks).decode("utf-8", "replace")


def read_video(
    path,
    *,
    view_name: str | None = None,
    frames: FrameRange | None = None,
) -> VideoClip:
    """Decodes one video into a single-view ``VideoClip`` (frames ``uint8 [T, H, W, 3]``).

    Args:
      path: video file.
      view_name: name of the view; the file stem by default.
      frames: the frames to take (a ``FrameRange``; default: every frame).

    Raises:
      VideoError: unreadable, empty or truncated file, naming it.
    """
    rng = frames if frames is not None else FrameRange()
    info = probe_video(path)
    idx, imgs = [], []
    for i, frame in iter_video_frames(path, frames=rng, info=info):
        idx.append(i)
        imgs.append(frame)
    return VideoClip(
        frames=[np.stack(imgs)],
        view_names=(view_name or pathlib.Path(path).stem,),
        fps=info.fps,
        frame_indices=np.asarray(idx, np.int64),
        sources=(str(path),),
        stride=rng.stride,
    )


def resolve_view_names(paths: Sequence, view_names: Sequence[str] | None = None) -> tuple[str, ...]:
    """One name per input: ``view_names`` checked against ``paths``, or names from the file stems.

    Without ``view_names`` each path's stem is its view's name; when two stems coincide (e.g.
    ``cam0/video.mp4`` and ``cam1/video.mp4``) the views are named ``view0``, ``view1``, ...

    Raises:
      ValueError: ``view_names`` has a different length than ``paths``.
    """
    if view_names is None:
        names = [pathlib.Path(p).stem for p in paths]
        if len(set(names)) != len(names):
            names = [f"view{i}" for i in range(len(paths))]
        return tuple(names)
    if len(view_names) != len(paths):
        raise ValueError(f"{len(view_names)} view names for {len(paths)} videos")
    return tuple(str(v) for v in view_names)


_view_names = resolve_view_names  # the former private name, kept for existing callers


def _align_lengths(lengths: Mapping[str, int], strict: bool, what: str, report: dict | None = None) -> int:
    """Common frame count of the views; warns (or raises under ``strict``) when they differ.

    A trim is also appended to ``report["trimmed"]`` when a report is given."""
    n = min(lengths.values())
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        if strict:
            raise ValueError(f"{what}: views have different frame counts ({detail}) and strict=True")
        msg = f"{what}: views have different frame counts ({detail}); trimmed to the shortest ({n})"
        if report is not None:
            report.setdefault("trimmed", []).append(msg)
        warnings.warn(msg, stacklevel=3)
    return n


def needs_time_sync(infos: Sequence[VideoInfo], rate: float | None = None) -> bool:
    """The views cannot be paired by index: their frame rates differ by more than 1 % (from
    ``rate``, default the first view's) or their streams start more than half a frame apart."""
    rate = rate or infos[0].fps or 25.0
    if any(inf.fps and abs(inf.fps - rate) > 0.01 * rate for inf in infos):
        return True
    starts = [inf.start_s for inf in infos]
    return max(starts) - min(starts) > 0.5 / rate


def timeline_view(infos: Sequence[VideoInfo]) -> int:
    """Index of the view whose frames make the common timeline: the slowest (the first of equals)."""
    rates = [inf.fps if inf.fps > 0 else 25.0 for inf in infos]
    return int(np.argmin(rates))


def sync_report(view_names: Sequence[str], infos: Sequence[VideoInfo]) -> dict:
    """How the views are put on one timeline: the facts known before decoding.

    ``{"sync": "index" | "time", "timeline": {"view", "fps"}, "views": {name: {"path", "fps",
    "start_s", "rotation"}}, "trimmed": [], "resampled": []}``; decoding adds what it drops
    (``trimmed``, ``resampled`` messages and per view ``frames_used``, ``first_frame``,
    ``last_frame``, ``frames_skipped``). Meant for ``metrics.json``.
    """
    ref = timeline_view(infos) if needs_time_sync(infos) else 0
    return {
        "sync": "time" if len(infos) > 1 and needs_time_sync(infos) else "index",
        "timeline": {"view": str(view_names[ref]), "fps": float(infos[ref].fps)},
        "views": {
            str(n): {
                "path": inf.path, "fps": float(inf.fps), "start_s": float(inf.start_s), "rotation": float(inf.rotation)
            }
            for n, inf in zip(view_names, infos)
        },
        "trimmed": [],
        "resampled": [],
    }


def read_videos(
    paths: Sequence,
    view_names: Sequence[str] | None = None,
    *,
    strict: bool = False,
    frames: FrameRange | None = None,
    report: dict | None = None,
) -> VideoClip:
    """Decodes synchronized videos, one per view, into one multi-view ``VideoClip``.

    Views of one frame rate and start are aligned by frame index; otherwise by time (see the
    module docstring): the frame indices and rate are then the slowest view's.

    Args:
      paths: one video per view.
      view_names: one name per view (file stems by default).
      strict: raise ``ValueError`` instead of trimming or resampling when views differ in frame
        count, frame rate or start.
      report: a dict filled with ``sync_report`` and what was trimmed or resampled.

    Raises:
      VideoError: a file is unreadable, empty or truncated (naming it).
      ValueError: ``strict`` and the views disagree in length, frame rate or start.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("no videos given")
    names = resolve_view_names(paths, view_names)
    rng = frames if frames is not None else FrameRange()
    infos = [probe_video(p) for p in paths]
    check_frame_rates(names, infos, strict=strict, stacklevel=3)
    report = {} if report is None else report
    report.update(sync_report(names, infos))
    if len(paths) > 1 and needs_time_sync(infos):
        idx, per_view = [], [[] for _ in paths]
        for i, fr in _iter_by_time(paths, infos, names, rng, report):
            idx.append(i)
            for v, f in enumerate(fr):
                per_view[v].append(f)
        if not idx:
            raise VideoError(paths[0], "the views share no time span")
        ref = timeline_view(infos)
        return VideoClip(
            frames=[np.stack(f) for f in per_view], view_names=names, fps=infos[ref].fps,
            frame_indices=np.asarray(idx, np.int64), sources=tuple(str(p) for p in paths), stride=rng.stride,
        )
    fps = infos[0].fps
    per_view = []
    for p, inf in zip(paths, infos):
        idx, imgs = [], []
        for i, frame in iter_video_frames(p, frames=rng, info=dataclasses.replace(inf, fps=fps or inf.fps)):
            idx.append(i)
            imgs.append(frame)
        per_view.append((np.asarray(idx, np.int64), imgs))
    n = _align_lengths({nm: len(v[0]) for nm, v in zip(names, per_view)}, strict, "read_videos", report)
    for nm, (idx, _) in zip(names, per_view):
        _record_used(report, nm, idx[:n], 0)
    return VideoClip(
        frames=[np.stack(imgs[:n]) for _, imgs in per_view],
        view_names=names,
        fps=fps,
        frame_indices=per_view[0][0][:n],
        sources=tuple(str(p) for p in paths),
        stride=rng.stride,
    )


def _record_used(report: dict, name: str, used, skipped: int) -> None:
    rec = report.setdefault("views", {}).setdefault(name, {})
    used = np.asarray(used, np.int64)
    rec["frames_used"] = int(used.size)
    rec["first_frame"] = int(used[0]) if used.size else None
    rec["last_frame"] = int(used[-1]) if used.size else None
    rec["frames_skipped"] = int(skipped)


def check_frame_rates(
    view_names: Sequence[str], infos: Sequence["VideoInfo"], *, strict: bool, rate: float | None = None,
    stacklevel: int = 2,
) -> None:
    """Views are paired by index when they share a frame rate (within 1 %, default the first view's)
    and a start; otherwise they are put on one timeline (the slowest view's frames) by time. That
    is a ``ValueError`` under ``strict``, else a warning naming the files."""
    rate = infos[0].fps if rate is None else rate
    msgs = []
    for name, inf in zip(view_names, infos):
        if rate and inf.fps and abs(inf.fps - rate) > 0.01 * rate:
            msgs.append(f"view {name!r} ({inf.path}) runs at {inf.fps} fps, view {view_names[0]!r} at {rate} fps")
    starts = [inf.start_s for inf in infos]
    if not msgs and max(starts) - min(starts) > 0.5 / (rate or 25.0):
        detail = ", ".join(f"{n!r} at {s:.3f} s" for n, s in zip(view_names, starts))
        msgs.append(f"the views' streams start at different times ({detail})")
    if not msgs:
        return
    if strict:
        raise ValueError("; ".join(msgs) + " and strict=True")
    ref = timeline_view(infos)
    warnings.warn(
        "; ".join(msgs) + f"; the views are synchronized by time on view {view_names[ref]!r}'s frames "
        f"({infos[ref].fps} fps, nearest frame of the others)",
        stacklevel=stacklevel + 1,
    )


class _Nearest:
    """A view's frames, picked by time: ``at(t)`` gives the frame nearest ``t`` (one frame of lookahead)."""

    def __init__(self, path, info: VideoInfo):
        self.info = info
        self.it = iter_video_frames(path, info=info)
        self.cur, self.nxt = next(self.it), None  # VideoError when the file has no frames
        self._pull()
        self.half = 0.5 / (info.fps if info.fps > 0 else 25.0) + 1e-6

    def _pull(self):
        self.nxt = next(self.it, None)

    def time(self, item) -> float:
        return float(self.info.frame_time(item[0]))

    def at(self, t: float):
        """``(index, frame)`` nearest ``t``; ``"before"`` when ``t`` is before the first frame,
        ``"after"`` after the last (by more than half a frame)."""
        while self.nxt is not None and self.time(self.nxt) <= t:
            self.cur = self.nxt
            self._pull()
        best = self.cur
        if self.nxt is not None and abs(self.time(self.nxt) - t) < abs(self.time(self.cur) - t):
            best = self.nxt
        dt = t - self.time(best)
        if abs(dt) <= self.half:
            return best
        return "before" if dt < 0 else "after"

    def close(self):
        self.it.close()


def _iter_by_time(paths, infos, names, rng: FrameRange, report: dict):
    """``(index, frames)`` on the slowest view's frames (``rng`` selects them); every other view gives
    its frame nearest in time. Timeline frames outside another view's span are dropped (trimmed);
    the drops and the resampling are recorded in ``report``."""
    ref = timeline_view(infos)
    others = {v: _Nearest(p, inf) for v, (p, inf) in enumerate(zip(paths, infos)) if v != ref}
    used: dict[int, list[int]] = {v: [] for v in range(len(paths))}
    before = after = 0
    last_range = rng.bounds(infos[ref].fps)[1]
    try:
        for index, frame in iter_video_frames(paths[ref], frames=rng, info=infos[ref]):
            t = float(infos[ref].frame_time(index))
            picks = {v: nv.at(t) for v, nv in others.items()}
            if any(p == "after" for p in picks.values()):
                after = 1
                break
            if any(p == "before" for p in picks.values()):
                before += 1
                continue
            used[ref].append(index)
            for v, p in picks.items():
                used[v].append(p[0])
            yield index, tuple(frame if v == ref else picks[v][1] for v in range(len(paths)))
        else:
            ended_by_file = last_range is None or not used[ref] or used[ref][-1] + rng.stride < last_range
            t_end = float(infos[ref].frame_time(used[ref][-1])) if used[ref] else 0.0
            longer = [
                names[v] for v, nv in others.items()
                if ended_by_file and nv.nxt is not None and nv.time(nv.nxt) > t_end + nv.half
            ]
            if longer:
                _trim_note(report, f"views {longer} continue after view {names[ref]!r} ends at {t_end:.3f} s: trimmed")
    finally:
        for nv in others.values():
            nv.close()
    if before:
        _trim_note(report, f"{before} frames of view {names[ref]!r} before every view had started were dropped")
    if after:
        short = [names[v] for v, p in picks.items() if p == "after"]
        _trim_note(report, f"view(s) {short} end before view {names[ref]!r} (at {t:.3f} s): trimmed there")
    for v in range(len(paths)):
        span = (used[v][-1] - used[v][0] + 1) if used[v] else 0
        _record_used(report, str(names[v]), used[v], max(0, span - len(used[v])) if v != ref else 0)
        if v != ref and abs(infos[v].fps - infos[ref].fps) > 0.01 * infos[ref].fps:
            report.setdefault("resampled", []).append(
                f"view {names[v]!r}: {infos[v].fps} fps resampled to view {names[ref]!r}'s {infos[ref].fps} fps "
                f"(nearest frame in time; {span - len(used[v])} of its frames in the span skipped)"
            )


def _trim_note(report: dict, msg: str) -> None:
    report.setdefault("trimmed", []).append(msg)
    warnings.warn(msg, stacklevel=3)


def iter_synchronized(
    paths: Sequence,
    *,
    strict: bool = False,
    frames: FrameRange | None = None,
    view_names: Sequence[str] | None = None,
    report: dict | None = None,
    check_rates: bool = True,
) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """Streams ``(frame_index, (frame_view0, frame_view1, ...))`` from synchronized videos.

    Views of one rate and start are paired by index and stop at the shortest: a length mismatch is
    only known at the end, it then warns, or raises ``ValueError`` under ``strict`` after the common
    frames were yielded. Other views are synchronized by time (``read_videos``; refused under
    ``strict``). ``view_names`` name the views in messages and in ``report`` (a dict), which
    receives ``sync_report`` and every trim or resampling. ``check_rates=False``: the caller has
    already run ``check_frame_rates`` (no second warning).
    """
    rng = frames if frames is not None else FrameRange()
    infos = [probe_video(p) for p in paths]
    names = list(view_names) if view_names else [str(p) for p in paths]
    report = {} if report is None else report
    report.update(sync_report(names, infos))
    if len(paths) > 1 and needs_time_sync(infos):
        if check_rates:
            check_frame_rates(names, infos, strict=strict, stacklevel=3)
        yield from _iter_by_time(paths, infos, names, rng, report)
        return
    fps = infos[0].fps
    its = [iter_video_frames(p, frames=rng, info=dataclasses.replace(inf, fps=fps or inf.fps)) for p, inf in zip(paths, infos)]
    count = 0
    try:
        while True:
            items = []
            for it in its:
                try:
                    items.append(next(it))
                except StopIteration:
                    items.append(None)
            if all(x is None for x in items):
                return
            if any(x is None for x in items):
                lengths = {str(p): count + (x is not None) + sum(1 for _ in it) for p, x, it in zip(paths, items, its)}
                _align_lengths(lengths, strict, "iter_synchronized", report)
                return
            count += 1
            yield items[0][0], tuple(x[1] for x in items)
    finally:
        for it in its:
            it.close()


# ----------------------------------------------------------------------------------------------
# Frame folders


def _number_in(stem: str) -> int | None:
    nums = re.findall(r"\d+", stem)
    return int(nums[-1]) if nums else None


def scan_frame_folder(folder, pattern: str | None = None) -> dict[str, dict[int, pathlib.Path]]:
    """The frames of a frame folder without reading them: view name → {frame number: image file}.

    Layouts (as ``read_frame_folder``): files matching ``pattern`` (a regex with optional named
    groups ``index`` and ``view``; default ``MEAD_FRAME_PATTERN``, ``img_%04d_<view>``); plain
    numbered images (one view named after the folder; the last number in the name is the frame
    number); or one sub-folder per view holding numbered images.

    Raises:
      VideoError: a file name without a frame number, two files with the same number and view, or
        a view sub-folder holding several views.
    """
    folder = pathlib.Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    views: dict[str, dict[int, pathlib.Path]] = {}
    if not files and subdirs:
        # One sub-folder per view, plain numbered frames inside.
        for d in subdirs:
            sub = scan_frame_folder(d, pattern)
            if sub:
                if len(sub) != 1:
                    raise VideoError(d, "a view sub-folder must hold a single view's frames")
                views[d.name] = next(iter(sub.values()))
        return views
    regex = re.compile(pattern or MEAD_FRAME_PATTERN)
    matched = [(p, regex.match(p.stem)) for p in files]
    if pattern is not None or (matched and all(m is not None for _, m in matched)):
        for p, m in matched:
            if m is None:
                continue
            gd = m.groupdict()
            num = int(gd["index"]) if gd.get("index") is not None else _number_in(p.stem)
            view = gd.get("view") or folder.name
            if num is None:
                raise VideoError(p, "frame file name has no frame number")
            if num in views.setdefault(view, {}):
                raise VideoError(p, f"two frames numbered {num} for view {view!r}")
            views[view][num] = p
        return views
    for p in files:
        num = _number_in(p.stem)
        if num is None:
            raise VideoError(p, "frame file name has no frame number")
        if num in views.setdefault(folder.name, {}):
            raise VideoError(p, f"two frames numbered {num} in {folder}")
        views[folder.name][num] = p
    return views


_scan_folder = scan_frame_folder  # the former private name, kept for existing callers


def read_image(path) -> np.ndarray:
    """Reads one still image (JPEG, PNG, ... through Pillow) as RGB ``uint8 [H, W, 3]``.

    Grey images are repeated to three channels, an alpha channel is dropped and 16-bit images are
    reduced to 8 bits.

    Raises:
      VideoError: naming the file when it is missing, empty, not a readable image, or of an
        unsupported shape or dtype.
    """
    import imageio.v3 as iio

    path = pathlib.Path(path)
    if not path.is_file():
        raise VideoError(path, "no such file")
    if path.stat().st_size == 0:
        raise VideoError(path, "file is empty")
    try:
        img = np.asarray(iio.imread(path, plugin="pillow"))
    except Exception as e:
        raise VideoError(path, f"not a readable image ({type(e).__name__}: {e})") from e
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise VideoError(path, f"unexpected image shape {img.shape}")
    if img.dtype != np.uint8:
        if img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        else:
            raise VideoError(path, f"unsupported image dtype {img.dtype}")
    return np.ascontiguousarray(img[..., :3])


_read_image = read_image  # the former private name, kept for existing callers


def read_frame_folder(
    folder,
    *,
    view_names: Sequence[str] | None = None,
    pattern: str | None = None,
    fps: float = 25.0,
    strict: bool = False,
    frames: FrameRange | None = None,
) -> VideoClip:
    """Reads a folder of frames into a ``VideoClip``.

    Layouts recognised:

    * MEAD naming ``img_%04d_<view>.jpg`` (one view per distinct ``<view>``);
    * plain numbered frames (``0001.png``, ``frame_000123.jpg``: the last number is the frame
      number), one view named after the folder;
    * one sub-folder per view holding numbered frames.

    ``pattern`` overrides the MEAD regex; it is matched against file stems and may define the named
    groups ``index`` and ``view``. Frames are ordered by frame number; views are paired by frame
    number: numbers missing in some view are dropped with a warning (``ValueError`` under
    ``strict``). The range/stride select among the common frames by position, with times
    ``position / fps``; ``frame_indices`` are the frame numbers from the names.

    Args:
      view_names: the views to read, in this order (all views, sorted, by default).
      fps: frame rate of the sequence (folders carry none).

    Raises:
      VideoError: the folder is missing or holds no frames; a frame file is unreadable.
    """
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise VideoError(folder, "no such folder")
    rng = frames if frames is not None else FrameRange()
    views = scan_frame_folder(folder, pattern)
    if not views:
        raise VideoError(folder, f"no frames found (image files {', '.join(IMAGE_EXTENSIONS)})")
    if view_names is None:
        names = tuple(sorted(views))
    else:
        missing = [v for v in view_names if v not in views]
        if missing:
            raise VideoError(folder, f"no frames for views {missing}; found views {sorted(views)}")
        names = tuple(view_names)
    numbers = [set(views[v]) for v in names]
    common = sorted(set.intersection(*numbers))
    if len(names) > 1 and any(len(s) != len(common) for s in numbers):
        _align_lengths({v: len(views[v]) for v in names}, strict, f"read_frame_folder({folder})")
    if not common:
        raise VideoError(folder, f"views {names} share no frame numbers")
    pos = rng.indices(len(common), fps)
    if pos.size == 0:
        raise VideoError(folder, f"no frames in the requested range {rng} ({len(common)} frames)")
    nums = [common[i] for i in pos]
    per_view = []
    for v in names:
        imgs = [read_image(views[v][k]) for k in nums]
        shapes = {im.shape for im in imgs}
        if len(shapes) != 1:
            raise VideoError(views[v][nums[0]].parent, f"view {v!r} frames differ in size: {sorted(shapes)}")
        per_view.append(np.stack(imgs))
    return VideoClip(
        frames=per_view,
        view_names=names,
        fps=float(fps),
        frame_indices=np.asarray(nums, np.int64),
        sources=tuple(str(views[v][nums[0]]) for v in names),
        stride=rng.stride,
    )


# ----------------------------------------------------------------------------------------------
# Tiled composites


def split_views(
    clip: VideoClip,
    boxes: Mapping[str, tuple[int, int, int, int]],
    *,
    view: str | int = 0,
) -> VideoClip:
    """Cuts a tiled composite video into views by pixel boxes.

    Args:
      clip: a clip whose view ``view`` holds the composite frames.
      boxes: view name → ``(x0, y0, x1, y1)`` half-open pixel box (``x0 <= x < x1``), e.g. the
        left column of a 3-row composite with 360-px rows:
        ``{"cam0": (0, 0, 247, 360), "cam1": (0, 360, 247, 720), "cam2": (0, 720, 247, 1080)}``.
      view: name or position of the composite view in ``clip``.

    Returns:
      A clip with one view per box (copies, C-contiguous), same frame indices and fps;
      ``source_boxes`` records each box (offset by any box the composite itself came from).
    """
    vi = clip.view_names.index(view) if isinstance(view, str) else int(view)
    comp = clip.frames[vi]
    h, w = comp.shape[1:3]
    parent = clip.source_boxes[vi]
    frames, names, out_boxes = [], [], []
    for name, box in boxes.items():
        x0, y0, x1, y1 = (int(v) for v in box)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"box {name!r} {box} is empty or outside the {w}x{h} frame")
        frames.append(np.ascontiguousarray(comp[:, y0:y1, x0:x1]))
        names.append(name)
        if parent is not None:
            x0, y0, x1, y1 = x0 + parent[0], y0 + parent[1], x1 + parent[0], y1 + parent[1]
        out_boxes.append((x0, y0, x1, y1))
    return VideoClip(
        frames=frames,
        view_names=tuple(names),
        fps=clip.fps,
        frame_indices=clip.frame_indices,
        sources=(clip.sources[vi],) * len(frames),
        source_boxes=tuple(out_boxes),
        stride=clip.stride,
    )


# ----------------------------------------------------------------------------------------------
# Writing


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """Pads ``[H, W, C]`` with black at the bottom/right to even height and width (yuv420p needs it).

    Pixel coordinates are unchanged: at most one row and one column are added.
    """
    h, w = frame.shape[:2]
    ph, pw = h % 2, w % 2
    if not ph and not pw:
        return frame
    return np.pad(frame, ((0, ph), (0, pw)) + ((0, 0),) * (frame.ndim - 2))


class VideoWriter:
    """Writes RGB frames to an H.264 mp4 (libx264, yuv420p) through ffmpeg.

    Frames of odd size are padded to even size (bottom/right, black). All frames must share the
    first frame's size. Use as a context manager, or call ``close()``::

        with VideoWriter("out.mp4", fps=25) as w:
            for frame in frames:
                w.append(frame)

    Args:
      path: output file; parent folders are created.
      fps: frame rate.
      crf: libx264 constant rate factor (0 lossless … 51 worst; 18 is visually lossless).
      preset: libx264 speed preset.
      codec, pix_fmt: ffmpeg encoder and output pixel format.

    Raises:
      VideoError: ffmpeg failed (message from ffmpeg, naming the file).
    """

    def __init__(
        self,
        path,
        fps: float = 25.0,
        *,
        crf: int = 18,
        preset: str = "medium",
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
    ):
        self.path = pathlib.Path(path)
        self.fps = float(fps)
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.crf, self.preset, self.codec, self.pix_fmt = int(crf), str(preset), str(codec), str(pix_fmt)
        self.size: tuple[int, int] | None = None  # (width, height) after padding
        self.num_frames = 0
        self._proc: subprocess.Popen | None = None
        self._err: list[bytes] = []
        self._err_thread: threading.Thread | None = None

    def _start(self, size: tuple[int, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            ffmpeg_exe(), "-nostdin", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}", "-r", f"{self.fps:.6g}", "-i", "-",
            "-an", "-c:v", self.codec, "-pix_fmt", self.pix_fmt,
        ]  # fmt: skip
        if self.codec == "libx264":
            cmd += ["-crf", str(self.crf), "-preset", self.preset]
        cmd += ["-movflags", "+faststart", str(self.path)]
        self._proc = spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._err_thread = threading.Thread(target=lambda: self._err.append(self._proc.stderr.read()), daemon=True)
        self._err_thread.start()
        self.size = size

    def append(self, frame: np.ndarray) -> None:
        """Appends one ``[H, W, 3]`` frame (uint8, or float in [0, 1])."""
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, -1)
        if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
            raise ValueError(f"{self.path}: frames must be [H, W, 3], got {frame.shape}")
        if frame.dtype != np.uint8:
            if np.issubdtype(frame.dtype, np.floating):
                frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            else:
                raise ValueError(f"{self.path}: frames must be uint8 or float, got {frame.dtype}")
        frame = np.ascontiguousarray(pad_to_even(frame[..., :3]))
        size = (frame.shape[1], frame.shape[0])
        if self._proc is None:
            self._start(size)
        elif size != self.size:
            raise ValueError(f"{self.path}: frame size {size} differs from the first frame's {self.size}")
        try:
            self._proc.stdin.write(memoryview(frame).cast("B"))
        except (BrokenPipeError, OSError) as e:
            self._finish()
            raise VideoError(self.path, f"ffmpeg stopped accepting frames ({last_lines(_err(self._err))})") from e
        self.num_frames += 1

    def extend(self, frames: Iterable[np.ndarray]) -> None:
        for f in frames:
            self.append(f)

    def _finish(self) -> int:
        proc, self._proc = self._proc, None
        if proc is None:
            return 0
        try:
            proc.stdin.close()
        except OSError:
            pass
        rc = proc.wait()
        self._err_thread.join(timeout=10.0)
        proc.stderr.close()
        return rc

    def close(self) -> None:
        """Finishes the file; raises ``VideoError`` if ffmpeg failed."""
        rc = self._finish()
        if rc != 0:
            raise VideoError(self.path, f"ffmpeg failed writing the video ({last_lines(_err(self._err))})")

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._finish()


def write_video(path, frames: Iterable[np.ndarray], fps: float = 25.0, **kwargs) -> pathlib.Path:
    """Writes frames to an mp4 with ``VideoWriter``; returns the path."""
    with VideoWriter(path, fps, **kwargs) as w:
        w.extend(frames)
    if w.num_frames == 0:
        raise ValueError(f"{path}: no frames to write")
    return pathlib.Path(path)
