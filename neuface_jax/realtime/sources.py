"""Frame sources for live tracking: a camera, a video file, a network stream, or frames paced like a camera.

``open_source(source)`` takes ``0`` / ``"0"`` (a camera index), a file path, or a URL
(``rtsp://``, ``http(s)://``, ...) and returns a ``FrameSource``: an iterator of ``Frame`` (RGB
uint8, a frame number and a time in seconds) that is also a context manager.

* **Files** are read frame by frame, none dropped; a frame's time is its index / fps.
* **Cameras and streams** are read by a background thread, started by the first iteration, that
  keeps only the newest frame (a tracker that falls behind skips frames rather than lagging
  further); times are wall-clock seconds since the iteration started. A stream that delivers no frame for ``stall_timeout_s``
  ends the iteration with ``end_reason = "stalled"`` (or raises ``StreamStalledError`` with
  ``on_stall="error"``); one that ends says ``"ended"``.
* ``ArraySource`` hands out given frames in order (evaluation); ``PacedSource`` serves given frames at a fixed rate in wall-clock time, through the same
  newest-frame thread as a camera: what tests and benchmarks use where no camera exists. It can
  stall on purpose (``stall_after``).

A camera that cannot be opened raises ``SourceError`` naming it; a missing file raises
``FileNotFoundError``. OpenCV (``opencv-python-headless``) does the capture.
"""

from __future__ import annotations

import abc

import dataclasses
import logging
import os
import queue
import re
import threading
import time
from typing import Callable, Iterable, Iterator

import numpy as np

__all__ = ["ArraySource", "Frame", "FrameSource", "PacedSource", "SourceError", "StreamStalledError", "open_source", "source_kind"]

logger = logging.getLogger(__name__)

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SourceError(RuntimeError):
    """A camera or stream that cannot be opened or read."""


class StreamStalledError(SourceError):
    """A live source delivered no frame for longer than its stall timeout."""


@dataclasses.dataclass(frozen=True)
class Frame:
    """One frame: ``image`` RGB uint8 [H, W, 3], ``index`` (0-based, counts every frame the source
    produced, so dropped frames leave gaps) and ``time_s`` (seconds)."""

    index: int
    time_s: float
    image: np.ndarray


def source_kind(source) -> str:
    """``"camera"``, ``"url"`` or ``"file"`` for a ``--source`` value."""
    if isinstance(source, (int, np.integer)) or (isinstance(source, str) and source.strip().isdigit()):
        return "camera"
    if isinstance(source, str) and _URL.match(source):
        return "url"
    return "file"


class FrameSource(abc.ABC):
    """Base class: an iterator of ``Frame`` with ``close()``, ``fps`` and ``end_reason``."""

    fps: float = 0.0
    name: str = ""
    end_reason: str | None = None

    @abc.abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yields the frames in order until the source ends (``end_reason`` says why)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_END = object()


class _NewestFrameReader(FrameSource):
    """A thread calls ``read()`` (blocking until the next frame; None = the source ended) and keeps
    only the newest frame; the iterator hands out each new frame once."""

    def __init__(self, read: Callable[[], np.ndarray | None], *, name: str, fps: float, stall_timeout_s: float,
                 on_stall: str, release: Callable[[], None] = lambda: None):
        if on_stall not in ("end", "error"):
            raise ValueError(f"on_stall must be 'end' or 'error', got {on_stall!r}")
        self.name, self.fps = name, float(fps)
        self._read, self._release = read, release
        self._stall, self._on_stall = float(stall_timeout_s), on_stall
        self._slot: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._count = 0
        self._error: BaseException | None = None
        # Started by the first iteration: frames produced before anyone reads are stale.
        self._thread = threading.Thread(target=self._run, name=f"frames:{name}", daemon=True)

    def _put_newest(self, item) -> None:
        while True:
            try:
                self._slot.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._slot.get_nowait()  # drop the older frame: the consumer is behind
                except queue.Empty:
                    pass

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                image = self._read()
                if image is None:
                    break
                frame = Frame(self._count, time.perf_counter() - self._t0, image)
                self._count += 1
                self._put_newest(frame)
        except BaseException as e:  # reported to the consumer, not lost in the thread
            self._error = e
        self._put_newest(_END)

    def __iter__(self) -> Iterator[Frame]:
        if not self._thread.is_alive() and self._thread.ident is None:
            self._t0 = time.perf_counter()
            self._thread.start()
        while True:
            try:
                item = self._slot.get(timeout=self._stall)
            except queue.Empty:
                self.end_reason = "stalled"
                msg = f"{self.name}: no frame for {self._stall:g} s (the stream stalled)"
                if self._on_stall == "error":
                    raise StreamStalledError(msg) from None
                logger.warning("%s; stopping", msg)
                return
            if item is _END:
                if self._error is not None:
                    raise SourceError(f"{self.name}: reading failed ({self._error})") from self._error
                self.end_reason = "ended"
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._release()


class _FileReader(FrameSource):
    """Every frame of a video file, in order (OpenCV)."""

    def __init__(self, cap, name: str):
        import cv2  # heavy optional dependency of capture only

        self._cap, self._cv2, self.name = cap, cv2, name
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if fps > 0 else 25.0

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        while True:
            ok, bgr = self._cap.read()
            if not ok or bgr is None:
                self.end_reason = "ended"
                return
            yield Frame(i, i / self.fps, self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB))
            i += 1

    def close(self) -> None:
        self._cap.release()


class ArraySource(FrameSource):
    """Given frames in order, none dropped, at times index / fps (like a file; for evaluation)."""

    def __init__(self, frames: Iterable[np.ndarray], fps: float = 25.0, *, name: str = "frames"):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self._frames, self.fps, self.name = frames, float(fps), name

    def __iter__(self) -> Iterator[Frame]:
        for i, image in enumerate(self._frames):
            yield Frame(i, i / self.fps, np.ascontiguousarray(image, np.uint8))
        self.end_reason = "ended"


def open_source(source, *, stall_timeout_s: float = 5.0, on_stall: str = "end", width: int | None = None,
                height: int | None = None) -> FrameSource:
    """Opens a camera index, a video file or a stream URL (see the module docstring).

    Args:
      source: ``0`` / ``"0"`` (camera), a path, or a URL.
      stall_timeout_s: a camera or stream without a new frame for this long ends (or raises).
      on_stall: ``"end"`` or ``"error"``.
      width, height: a capture size to ask a camera for (it may choose another).

    Raises:
      FileNotFoundError: a path that does not exist.
      SourceError: a camera or stream that cannot be opened, or a file OpenCV cannot decode.
    """
    import cv2  # heavy optional dependency of capture only

    kind = source_kind(source)
    if kind == "file":
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"video source {path} does not exist (a camera is a number, e.g. --source 0)")
        cap = cv2.VideoCapture(path)
        if not cap.isOpened():
            raise SourceError(f"{path}: OpenCV cannot decode this file")
        return _FileReader(cap, path)
    if kind == "camera":
        index = int(source)
        name = f"camera {index}"
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"{name} cannot be opened: no such device, or it is busy or not permitted "
                              f"(/dev/video{index} on Linux)")
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(width))
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(height))
    else:
        name = str(source)
        cap = cv2.VideoCapture(name)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"stream {name} cannot be opened (unreachable, or a protocol OpenCV's FFmpeg lacks)")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def read():
        ok, bgr = cap.read()
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok and bgr is not None else None

    return _NewestFrameReader(read, name=name, fps=fps if fps > 0 else 30.0, stall_timeout_s=stall_timeout_s,
                              on_stall=on_stall, release=cap.release)


class PacedSource(_NewestFrameReader):
    """Frames served at ``fps`` in wall-clock time, newest frame only, like a camera.

    Args:
      frames: RGB uint8 images (an array [T, H, W, 3] or any iterable).
      fps: the pace.
      stall_after: after this many frames, stop delivering without ending (a stalled stream).
      stall_timeout_s, on_stall: as ``open_source``.
    """

    def __init__(self, frames: Iterable[np.ndarray], fps: float = 30.0, *, stall_after: int | None = None,
                 stall_timeout_s: float = 1.0, on_stall: str = "end", name: str = "paced frames"):
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        it = iter(frames)
        period = 1.0 / float(fps)
        state = {"n": 0, "next": None}
        stop = threading.Event()

        def read():
            if state["next"] is None:
                state["next"] = time.perf_counter()
            if stall_after is not None and state["n"] >= stall_after:
                stop.wait()  # hangs like a stalled network stream until closed
                return None
            delay = state["next"] - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            state["next"] += period
            try:
                image = next(it)
            except StopIteration:
                return None
            state["n"] += 1
            return np.ascontiguousarray(image, np.uint8)

        super().__init__(read, name=name, fps=fps, stall_timeout_s=stall_timeout_s, on_stall=on_stall,
                         release=stop.set)
