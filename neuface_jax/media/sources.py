"""Clip inputs → one stream of synchronized views.

The second stage of the video path (``video`` decodes; here the input becomes views and a frame
range; ``detect`` adds landmarks; ``crops`` cuts the encoder inputs). ``open_source`` accepts a
video file, several synchronized video files, a composite video cut into views by pixel boxes, a
frame folder, still images or an already decoded ``video.VideoClip``, and returns a ``Source`` that
streams ``(frame index, views)`` once, in order. ``prefetch`` runs such a stream (or any iterator)
in a background thread so decoding overlaps the consumer.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import queue
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from neuface_jax.media import video as video_lib

__all__ = ["Source", "is_image", "open_source", "parse_view_boxes", "prefetch", "stack_views"]


def parse_view_boxes(spec) -> dict[str, tuple[int, int, int, int]] | None:
    """``"x0:y0:x1:y1,..."`` (or ``"name=x0:y0:x1:y1,..."``), a list of such strings, a list of 4-tuples
    or a mapping → ``{name: (x0, y0, x1, y1)}`` (half-open pixel boxes; default names ``view0``, ...)."""
    if spec is None or (isinstance(spec, (str, list, tuple, dict)) and len(spec) == 0):
        return None
    if isinstance(spec, Mapping):
        return {str(k): tuple(int(v) for v in b) for k, b in spec.items()}
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = {}
    for i, item in enumerate(items):
        name = f"view{i}"
        if isinstance(item, str):
            item = item.strip()
            if "=" in item:
                name, item = (s.strip() for s in item.split("=", 1))
            parts = item.split(":")
            try:
                box = tuple(int(p) for p in parts)
            except ValueError:
                raise ValueError(f"view box {item!r} is not x0:y0:x1:y1 integers") from None
        else:
            box = tuple(int(v) for v in item)
        if len(box) != 4:
            raise ValueError(f"view box {item!r} needs 4 numbers x0:y0:x1:y1, got {len(box)}")
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            raise ValueError(f"view box {item!r} is empty (need x0 < x1 and y0 < y1)")
        if name in out:
            raise ValueError(f"two view boxes named {name!r}")
        out[name] = box
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """Where a clip's frames come from, per view, and how to stream them (one pass, in order).

    ``stream()`` yields ``(source frame index, (frame of view 0, frame of view 1, ...))``; the views
    of a frame are synchronized. ``cache_ids`` identify each view's pixels on disk (source file,
    box in it, selected frames) so detections can be cached; in-memory views have None.
    ``info`` holds the video files' timing (``video.sync_report``: stream starts, rotations, how the
    views were synchronized); streaming adds every trim and resampling to it, so read it after
    the stream is done (for ``metrics.json``).
    """

    label: str  # the clip, for messages
    view_names: tuple[str, ...]
    fps: float
    stream: Callable[[], Iterator[tuple[int, tuple[np.ndarray, ...]]]]
    cache_ids: tuple[tuple[str, Any, Any] | None, ...]  # per view: (source file, box, frames key) or None
    kind: str
    paths: tuple[str, ...]
    frame_range: video_lib.FrameRange | None
    num_frames: int | None = None  # exact for decoded clips; estimated from the header for videos (or None)
    out_fps: float = 25.0  # frame rate of the selected frames (after the stride), for the overlay video
    info: dict = dataclasses.field(default_factory=dict)  # video timing and sync record (see above)


def is_image(path) -> bool:
    """The path names a still image (by its extension)."""
    return pathlib.Path(path).suffix.lower() in video_lib.IMAGE_EXTENSIONS


#: A stream: (source frame index, the views' frames).
_Frames = Iterator[tuple[int, tuple[np.ndarray, ...]]]


def _clip_frames(clip: video_lib.VideoClip) -> _Frames:
    for t, idx in enumerate(clip.frame_indices):
        yield int(idx), tuple(f[t] for f in clip.frames)


def _composite_frames(path: str, rng: video_lib.FrameRange, info, box_list) -> _Frames:
    for i, f in video_lib.iter_video_frames(path, frames=rng, info=info):
        yield i, tuple(np.ascontiguousarray(f[y0:y1, x0:x1]) for x0, y0, x1, y1 in box_list)


def _single_video_frames(path: str, rng: video_lib.FrameRange, info) -> _Frames:
    for i, f in video_lib.iter_video_frames(path, frames=rng, info=info):
        yield i, (f,)


def _clip_source(clip: video_lib.VideoClip, label: str, kind: str, paths, rng) -> Source:
    cache_ids = []
    for v in range(clip.num_views):
        src = clip.sources[v]
        ok = src is not None and pathlib.Path(src).is_file()
        cache_ids.append((src, clip.source_boxes[v], clip.frame_indices.tolist()) if ok else None)
    return Source(
        label=label, view_names=clip.view_names, fps=float(clip.fps or 25.0),
        stream=functools.partial(_clip_frames, clip), cache_ids=tuple(cache_ids), kind=kind, paths=tuple(paths),
        frame_range=rng, num_frames=clip.num_frames,
        out_fps=float(clip.fps or 25.0) / max(1, int(clip.stride)),
    )


def _decoded_clip_source(clip: video_lib.VideoClip, view_names, boxes, rng) -> Source:
    """An already decoded clip, cut into views by ``boxes`` and renamed if asked."""
    if boxes:
        clip = video_lib.split_views(clip, boxes)
    if view_names:
        clip = dataclasses.replace(clip, view_names=tuple(view_names))
    if rng is not None and rng != video_lib.FrameRange():  # the range, in the clip's own frame numbers
        fps = float(clip.fps or 25.0)
        keep = [i for i, f in enumerate(clip.frame_indices.tolist()) if rng.select(int(f), fps)]
        if not keep:
            raise video_lib.VideoError(", ".join(s for s in clip.sources if s) or "clip", f"no frames in {rng}")
        clip = clip.subset(keep)
    label = ", ".join(s for s in dict.fromkeys(clip.sources) if s) or "clip"
    return _clip_source(clip, label, "clip", [s for s in clip.sources if s], rng)


def _input_paths(videos) -> list[str]:
    """One path or several → the non-blank paths (at least one)."""
    if isinstance(videos, (str, os.PathLike)):
        paths = [str(videos)]
    else:
        paths = [str(p) for p in videos]
    paths = [p.strip() for p in paths if str(p).strip()]
    if not paths:
        raise ValueError("no input video given")
    return paths


def _folder_source(path: str, names, boxes, rng, fps: float, strict: bool) -> Source:
    clip = video_lib.read_frame_folder(path, view_names=names, fps=fps, strict=strict, frames=rng)
    if boxes:
        if clip.num_views != 1:
            raise ValueError("view boxes cut a single-view composite; the frame folder holds several views")
        clip = video_lib.split_views(clip, boxes)
    return _clip_source(clip, path, "folder", [path], rng)


def _images_source(paths: list[str], names, boxes, rng, fps: float) -> Source:
    imgs = []
    for p in paths:
        pp = pathlib.Path(p)
        if not pp.is_file():
            raise video_lib.VideoError(pp, "no such file")
        imgs.append(video_lib.read_image(pp)[None])
    vnames = tuple(names) if names else video_lib.resolve_view_names(paths, None)
    if len(vnames) != len(paths):
        raise ValueError(f"{len(vnames)} view names for {len(paths)} images")
    clip = video_lib.VideoClip(
        frames=imgs, view_names=vnames, fps=fps, frame_indices=np.zeros(1, np.int64), sources=tuple(paths)
    )
    if boxes:
        if clip.num_views != 1:
            raise ValueError("view boxes cut one composite image, not several")
        clip = video_lib.split_views(clip, boxes)
    return _clip_source(clip, ",".join(paths), "images", paths, rng)


def _composite_source(paths: list[str], names, boxes, rng, infos, rate: float, n_est) -> Source:
    """One video cut into views by pixel boxes."""
    if len(paths) != 1:
        raise ValueError("view boxes cut one composite video into views; give a single video with them")
    info = infos[0]
    for name, (x0, y0, x1, y1) in boxes.items():
        if not (x1 <= info.width and y1 <= info.height):
            raise ValueError(f"view box {name!r} {(x0, y0, x1, y1)} is outside the {info.width}x{info.height} video {paths[0]}")
    vnames = tuple(names) if names else tuple(boxes)
    if len(vnames) != len(boxes):
        raise ValueError(f"{len(vnames)} view names for {len(boxes)} view boxes")
    box_list = list(boxes.values())
    frames_key = dataclasses.asdict(rng)
    return Source(
        label=",".join(paths), view_names=vnames, fps=rate,
        stream=functools.partial(_composite_frames, paths[0], rng, info, box_list),
        cache_ids=tuple((paths[0], b, frames_key) for b in box_list), kind="composite", paths=tuple(paths),
        frame_range=rng, num_frames=n_est, out_fps=rate / rng.stride,
        info=video_lib.sync_report([pathlib.Path(paths[0]).stem], infos),
    )


def _videos_source(paths: list[str], names, rng, infos, rate: float, n_est, fps: float, strict: bool) -> Source:
    """One video file per view (synchronized by frame index, or by time where the rates differ)."""
    vnames = video_lib.resolve_view_names(paths, names)
    report = video_lib.sync_report(vnames, infos)
    frames_key = dataclasses.asdict(rng)
    if len(paths) == 1:
        stream = functools.partial(_single_video_frames, paths[0], rng, infos[0])
    else:
        # stacklevel: the warning names the caller of open_source's caller (of annotation.prepare, say).
        video_lib.check_frame_rates(vnames, infos, strict=strict, rate=rate, stacklevel=4)
        if video_lib.needs_time_sync(infos, rate):
            # Frames on the slowest view's timeline: the frame indices and rate are that view's, and
            # a view's pixels depend on the other files (so does its cache entry).
            ref = infos[video_lib.timeline_view(infos)]
            rate = ref.fps or fps
            frames_key = {**frames_key, "synchronized_by_time": [str(p) for p in paths]}
            n_est = len(rng.indices(ref.estimated_num_frames, rate)) if ref.estimated_num_frames else None
        stream = functools.partial(
            video_lib.iter_synchronized, paths, strict=strict, frames=rng, view_names=vnames, report=report,
            check_rates=False,
        )
    return Source(
        label=",".join(paths), view_names=vnames, fps=rate, stream=stream,
        cache_ids=tuple((p, None, frames_key) for p in paths), kind="videos", paths=tuple(paths), frame_range=rng,
        num_frames=n_est, out_fps=rate / rng.stride, info=report,
    )


def open_source(
    videos,
    view_names=None,
    view_boxes=None,
    frames: video_lib.FrameRange | None = None,
    strict: bool = False,
    fps: float = 25.0,
) -> Source:
    """Opens a clip's input as one ``Source`` of synchronized views.

    ``videos``: a video file, several video files (synchronized views), a frame folder
    (``video.read_frame_folder``), one or several still images, or a decoded ``video.VideoClip``;
    ``view_boxes`` (``parse_view_boxes``) cut a single composite into views. ``frames`` selects
    the frames (all by default); ``strict`` turns view-length/frame-rate mismatches into errors; ``fps`` is the rate of
    inputs that carry none (folders, images).

    Raises:
      video.VideoError: a file is missing, unreadable or truncated (naming it).
      ValueError: inconsistent views, names or boxes.
    """
    rng = frames if frames is not None else video_lib.FrameRange()
    boxes = parse_view_boxes(view_boxes)
    if isinstance(videos, video_lib.VideoClip):
        return _decoded_clip_source(videos, view_names, boxes, rng)
    paths = _input_paths(videos)
    names = list(view_names) if view_names else None
    if len(paths) == 1 and pathlib.Path(paths[0]).is_dir():
        return _folder_source(paths[0], names, boxes, rng, fps, strict)
    if all(is_image(p) for p in paths):
        return _images_source(paths, names, boxes, rng, fps)

    infos = [video_lib.probe_video(p) for p in paths]  # VideoError naming the file
    rate = infos[0].fps or fps
    est = [i.estimated_num_frames for i in infos]
    n_est = len(rng.indices(min(est), rate)) if all(est) and rate else None
    if boxes:
        return _composite_source(paths, names, boxes, rng, infos, rate, n_est)
    if any(is_image(p) for p in paths):
        raise ValueError(f"mixing images and videos is not supported: {paths}")
    return _videos_source(paths, names, rng, infos, rate, n_est, fps, strict)


def stack_views(frames: list[list[np.ndarray]]) -> np.ndarray:
    """Per-view frame lists → uint8 [T, W, H, Wd, 3], padded (bottom/right, black) to the largest view.

    Frees the lists as it copies (peak memory ≈ one copy)."""
    t = len(frames[0])
    h = max(f[0].shape[0] for f in frames)
    wd = max(f[0].shape[1] for f in frames)
    out = np.zeros((t, len(frames), h, wd, 3), np.uint8)
    for v, lst in enumerate(frames):
        for ti in range(t):
            f = lst[ti]
            out[ti, v, : f.shape[0], : f.shape[1]] = f
            lst[ti] = None
    return out


# ----------------------------------------------------------------------------------------------
# Background prefetching


class _Raised:
    def __init__(self, exc: BaseException):
        self.exc = exc


_DONE = object()


def prefetch(iterable: Iterable, size: int = 8) -> Iterator:
    """Iterates ``iterable`` in a background thread, up to ``size`` items ahead.

    Exceptions raised by the iterable are re-raised in the consumer. Stopping early (``break``,
    ``close()``, garbage collection) stops the thread and closes the iterable if it is a generator
    (so decoders release their ffmpeg process).
    """
    if size < 1:
        raise ValueError(f"prefetch size must be >= 1, got {size}")
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def worker():
        it = iter(iterable)
        try:
            for item in it:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as e:  # handed to the consumer
            put(_Raised(e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # pragma: no cover
                    pass

    thread = threading.Thread(target=worker, name="neuface-prefetch", daemon=True)
    thread.start()

    def consume():
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, _Raised):
                    raise item.exc
                yield item
        finally:
            stop.set()
            while thread.is_alive():
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
                thread.join(timeout=0.05)

    return consume()
