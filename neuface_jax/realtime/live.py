"""The live loop: a source → ``track.track`` → parameters (file or generator), a window or an overlay mp4.

``run_live`` drives ``track.track`` and, per frame, writes the parameters (``track.ParamsSink``),
draws the overlay (``overlay_image``: the fitted mesh's visible edges with ``media.render``, the
model's landmarks, the frame label; "no face" frames marked) when a window or an mp4 wants it, and
shows or encodes it. Drawing is timed apart from the tracking stages, so the tracker's own rate is
reported with and without it. ``overlay_image`` draws one tracked frame.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

import flame_jax
from neuface_jax.common.settings import setting
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import export as export_lib
from neuface_jax.media import render as render_lib
from neuface_jax.media import video as video_lib
from neuface_jax.realtime import regressor as regressor_lib
from neuface_jax.realtime import track as track_lib

__all__ = ["LiveConfig", "overlay_image", "run_live", "summarize"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LiveConfig:
    """Outputs of the live command."""

    show: bool = setting(False, "Show the overlay in a window (needs a desktop OpenCV build and a display; "
                                "q or Esc quits).")
    out: str | None = setting(None, "Write the overlay as an mp4.")
    params: str | None = setting(None, "Write the per-frame parameters: .npz (annotate's params.npz format) or "
                                       ".jsonl (one line per frame, flushed as it goes).")
    max_frames: int | None = setting(None, "Stop after this many frames.")
    stall_timeout_s: float = setting(5.0, "End when a camera or stream delivers no frame for this long.")
    overlay_fps: float | None = setting(None, "Frame rate of the overlay mp4 (default: the source's).")


@jax.jit
def _vertices(flame, shape, expression, pose):
    return flame_jax.forward(flame, shape=shape[None], expression=expression[None], pose=pose[None]).vertices[0]


def overlay_image(frame: track_lib.TrackedFrame, face, *, max_side: int = 640) -> np.ndarray:
    """The frame (downscaled to ``max_side``) with the fitted mesh's visible edges, the model's 68
    landmarks and a label (status, frame number); a frame without a face gets a red border. uint8 RGB."""
    # cv2 (a declared dependency) is heavy; only drawing needs it here.
    import cv2

    h, w = frame.image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    img = frame.image
    if scale < 1.0:
        img = cv2.resize(img, (max(2, round(w * scale)), max(2, round(h * scale))), interpolation=cv2.INTER_AREA)
    short = min(img.shape[:2])
    if frame.valid:
        p = frame.params
        verts = np.asarray(_vertices(face.flame, p.shape, p.expression, p.pose))
        resize = np.array([[scale, 0.0, 0.0], [0.0, scale, 0.0]])
        m = crops_lib.compose_transforms(frame.crop_transform, crops_lib.invert_transform(resize))
        scr = export_lib.screen_vertices(verts, p.cam, m, frame.crop_size)
        img = render_lib.overlay_mesh(img, scr, np.asarray(face.flame.faces), mode="wireframe", alpha=0.6,
                                      wire_color=export_lib.WIRE_RGB, wire_spacing=max(5.0, short / 60))
        lmk = crops_lib.apply_transform(crops_lib.from_normalized(p.landmarks, frame.crop_size),
                                        crops_lib.invert_transform(m))
        img = render_lib.draw_points(img, lmk, color=export_lib.MODEL_LANDMARK_RGB, radius=max(1.0, short / 250))
    else:
        b = max(2, short // 60)
        img = np.array(img, copy=True)
        img[:b], img[-b:], img[:, :b], img[:, -b:] = (export_lib.NO_FACE_RGB,) * 4
    text = f"{frame.status}  frame {frame.index}"
    return render_lib.to_uint8(render_lib.draw_text(img, text, (4, 4), scale=max(0.3, short / 800)))


def _window(name: str):
    """``(show(image) → keep going?, close)`` for an OpenCV window, or a clear error without one."""
    import cv2  # heavy optional dependency of the window only

    try:
        cv2.namedWindow(name, cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise RuntimeError("--show needs OpenCV with a GUI backend (opencv-python, not -headless) and a display; "
                           f"use --out overlay.mp4 instead ({str(e).strip().splitlines()[-1]})") from None

    def show(image: np.ndarray) -> bool:
        cv2.imshow(name, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    return show, cv2.destroyAllWindows


def summarize(frames: list[dict[str, Any]], wall_s: float, overlay_s: list[float]) -> dict[str, Any]:
    """Per-stage medians (ms), frames/s of tracking alone and with the overlay, valid fraction."""
    if not frames:
        return {"frames": 0}
    stages = {k: float(np.median([f[k] for f in frames]) * 1e3) for k in track_lib.STAGES}
    track_s = sum(sum(f[k] for k in track_lib.STAGES) for f in frames)
    out = {
        "frames": len(frames),
        "valid_fraction": float(np.mean([f["valid"] for f in frames])),
        "detector_runs": int(sum(f["detect"] > 0 for f in frames)),
        "median_ms": stages,
        "tracking_frames_per_s": len(frames) / track_s if track_s > 0 else float("inf"),
        "wall_s": wall_s,
    }
    if overlay_s:
        out["overlay_median_ms"] = float(np.median(overlay_s) * 1e3)
    return out


def run_live(source, track_config: track_lib.TrackConfig = track_lib.TrackConfig(),
             config: LiveConfig = LiveConfig(), *, regressor: regressor_lib.Regressor | None = None,
             detector: track_lib.FaceDetector | None = None, progress=None) -> dict[str, Any]:
    """Tracks ``source`` and writes what ``config`` asks for; returns ``summarize``'s figures plus the
    source's end reason and the files written."""
    for path in (config.out, config.params):
        if path:
            track_lib.check_output_path(path)
    show = close_window = None
    if config.show:
        show, close_window = _window("neuface-jax live")
    reg = regressor if regressor is not None else track_lib.load_regressor(
        track_config.regressor, mirror_average=track_config.mirror_average)
    sink = track_lib.ParamsSink(config.params, model_name=track_lib.model_label(reg.face)) if config.params else None
    src = track_lib.open_frames(source, config.stall_timeout_s)
    writer = None
    rows, overlay_s = [], []
    bar = progress("live", config.max_frames) if progress else None
    t0 = time.perf_counter()
    try:
        for f in track_lib.track(src, track_config, regressor=reg, detector=detector, max_frames=config.max_frames):
            rows.append(dict(f.seconds, valid=f.valid))
            if sink:
                sink.write(f)
            if show is not None or config.out:
                t = time.perf_counter()
                img = overlay_image(f, reg.face)
                overlay_s.append(time.perf_counter() - t)
                if config.out:
                    if writer is None:
                        writer = video_lib.VideoWriter(config.out, fps=config.overlay_fps or src.fps or 25.0,
                                                       preset="veryfast")
                    writer.append(img)
                if show is not None and not show(img):
                    break
            if bar:
                bar.set(len(rows))
    finally:
        wall = time.perf_counter() - t0
        if bar:
            bar.close()
        files = {}
        if writer is not None:
            writer.close()
            files["overlay"] = str(Path(config.out))
        if sink is not None and rows:
            try:
                files["params"] = str(sink.close())
            except ValueError as e:  # no face anywhere: say so instead of writing an empty file
                logger.warning("%s", e)
        if close_window is not None:
            close_window()
    summary = summarize(rows, wall, overlay_s)
    summary.update(source=src.name, end=src.end_reason or "stopped", files=files)
    return summary
