"""Writing results: ``params.npz`` (NeuFace release layout + our additions), ``metrics.json``,
per-frame OBJ files and an overlay video of the fitted mesh over the input frames.

``params.npz`` keys — the NeuFace release layout, S = frames × views flattened frame-major
(row ``s = t * W + w``; ``frame_index[s]`` and ``view_index[s]`` say which):

=================  ===============  =====================================================
``cam``            [S, 3]           weak-perspective camera (s, tx, ty)
``pose``           [S, 6]           head rotation (3) + jaw rotation (3), axis-angle
``expr``           [S, E]           expression coefficients
``shapes``         [S, N]           identity (identical rows: one identity per clip)
``landmarks2d``    [S, L, 2]        the detected landmarks, normalized crop coordinates
=================  ===============  =====================================================

our additions: ``full_pose`` [S, 15], ``predicted_landmarks2d`` [S, L, 2], ``frame_index``
[S], ``view_index`` [S], ``view_names`` [W], ``frame_indices`` [T] (source frame numbers),
``crop_transforms`` [S, 2, 3] (image pixels → crop pixels), ``crop_size``, ``valid`` [S],
``landmarks_mask`` [S, L], ``model`` (identifier string), ``method``, ``format``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from flame_jax import mesh_io as mesh_export
from neuface_jax.common.atomic import atomic_write
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import render as render_lib
from neuface_jax.media import video as video_lib

PARAMS_FORMAT = "neuface-jax-params-v1"


def write_params(
    path,
    result,
    *,
    view_names,
    detected_landmarks: np.ndarray,
    landmarks_mask: np.ndarray,
    crop_transforms: np.ndarray,
    valid: np.ndarray,
    frame_indices: np.ndarray | None = None,
    crop_size: int = crops_lib.CROP_SIZE,
    model_name: str = "",
    method: str = "neuface",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes a ``FitResult`` as ``params.npz`` (atomically: temporary file, fsync, rename).

    Args:
      result: ``fit.FitResult`` ([T, W, ...] arrays).
      view_names: W names.
      detected_landmarks: [T, W, L, 2] the targets, normalized crop coordinates.
      landmarks_mask, crop_transforms, valid: [T, W, L], [T, W, 2, 3], [T, W].
      frame_indices: [T] source frame numbers (default 0..T-1).
      extra: more keys (e.g. ``neuface_jax.params.model_arrays``: the model file's path and hash).
    """
    path = Path(path)
    t, w = result.expression.shape[:2]
    s = t * w
    flat = lambda x: np.asarray(x).reshape((s,) + np.asarray(x).shape[2:])  # noqa: E731
    pose = np.asarray(result.pose)
    arrays = {
        "cam": flat(result.cam).astype(np.float32),
        "pose": np.concatenate([flat(pose)[:, 0:3], flat(pose)[:, 6:9]], 1).astype(np.float32),
        "expr": flat(result.expression).astype(np.float32),
        "shapes": np.broadcast_to(np.asarray(result.shape, np.float32), (s, np.asarray(result.shape).shape[-1])).copy(),
        "landmarks2d": flat(detected_landmarks).astype(np.float32),
        "full_pose": flat(pose).astype(np.float32),
        "predicted_landmarks2d": flat(result.landmarks2d).astype(np.float32),
        "frame_index": np.repeat(np.arange(t), w).astype(np.int32),
        "view_index": np.tile(np.arange(w), t).astype(np.int32),
        "view_names": np.asarray(list(view_names)),
        "frame_indices": np.asarray(np.arange(t) if frame_indices is None else frame_indices, np.int64),
        "crop_transforms": flat(crop_transforms).astype(np.float32),
        "crop_size": np.int32(crop_size),
        "valid": flat(valid).astype(bool),
        "landmarks_mask": flat(landmarks_mask).astype(bool),
        "model": np.asarray(model_name),
        "method": np.asarray(method),
        "format": np.asarray(PARAMS_FORMAT),
        **(extra or {}),
    }
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return path


def write_json(path, data: Mapping[str, Any]) -> Path:
    """Writes JSON atomically (NaN/inf become null)."""
    path = Path(path)

    def clean(x):
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, (np.floating, float)):
            x = float(x)
            return x if np.isfinite(x) else None
        if isinstance(x, np.integer):
            return int(x)
        if isinstance(x, np.ndarray):
            return clean(x.tolist())
        return x

    text = json.dumps(clean(dict(data)), indent=2) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return path


def write_objs(directory, vertices: np.ndarray, faces: np.ndarray, view_names) -> list[Path]:
    """One OBJ per frame and view: ``directory/<view>/frame_00000.obj`` from vertices [T, W, V, 3]."""
    out = []
    for w, name in enumerate(view_names):
        out += mesh_export.save_obj_sequence(Path(directory) / str(name), vertices[:, w], faces)
    return out


def screen_vertices(vertices: np.ndarray, cam: np.ndarray, crop_transform: np.ndarray, crop_size: int) -> np.ndarray:
    """Weak-perspective projection of model-frame vertices [V, 3] into original image pixels.

    Returns [V, 3]: x_pix, y_pix (down), depth in pixels (larger = farther; the model
    faces +z, toward the camera).
    """
    s, tx, ty = [float(c) for c in cam]
    norm = np.stack([s * (vertices[:, 0] + tx), -s * (vertices[:, 1] + ty)], -1)
    crop_px = (norm + 1.0) * crop_size / 2.0
    inv = crops_lib.invert_transform(np.asarray(crop_transform, np.float64))
    img_px = crops_lib.apply_transform(crop_px, inv)
    pix_per_unit = np.sqrt(abs(np.linalg.det(inv[:, :2]))) * crop_size / 2.0
    depth = -vertices[:, 2] * s * pix_per_unit
    return np.concatenate([img_px, depth[:, None]], -1)


def overlay_frames(
    images: np.ndarray,
    vertices: np.ndarray,
    cams: np.ndarray,
    crop_transforms: np.ndarray,
    faces: np.ndarray,
    *,
    crop_size: int = crops_lib.CROP_SIZE,
    landmarks: np.ndarray | None = None,
    alpha: float = 0.55,
    mode: str = "solid",
    max_side: int = 480,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Tiles all views per frame with the mesh drawn over each image.

    Args:
      images: uint8 [T, W, H, Wd, 3] original frames (views may be padded to one size).
      vertices: [T, W, V, 3] fitted vertices (model frame); cams [T, W, 3]; crop transforms [T, W, 2, 3].
      landmarks: optional [T, W, L, 2] image-pixel points drawn as dots.
      max_side: each view is downscaled so its longer side is at most this many pixels.
      valid: optional bool [T, W]: where False the view had no tracked face; it is drawn as "no
        face" (a red frame and label), without the mesh or landmarks fitted there.

    Returns:
      uint8 [T, H', W * Wd', 3].
    """
    t, w, h, wd = images.shape[:4]
    scale = min(1.0, max_side / max(h, wd))
    oh, ow = max(2, int(round(h * scale))), max(2, int(round(wd * scale)))
    resize = np.array([[scale, 0, 0], [0, scale, 0]])
    out = np.zeros((t, oh, ow * w, 3), np.uint8)
    for ti in range(t):
        for wi in range(w):
            img = images[ti, wi]
            if scale != 1.0:
                img = crops_lib.warp_crop(img, np.vstack([resize]), size=max(oh, ow))[:oh, :ow]
            if valid is not None and not valid[ti, wi]:
                out[ti, :, wi * ow : (wi + 1) * ow] = _no_face(render_lib.to_uint8(img))
                continue
            m = crops_lib.compose_transforms(crop_transforms[ti, wi], crops_lib.invert_transform(resize))
            if np.all(np.isfinite(vertices[ti, wi])) and np.all(np.isfinite(m)):
                scr = screen_vertices(vertices[ti, wi], cams[ti, wi], m, crop_size)
                img = render_lib.overlay_mesh(img, scr, faces, alpha=alpha, mode=mode)
            if landmarks is not None:
                pts = np.asarray(landmarks[ti, wi], np.float64) * scale
                pts = pts[np.all(np.isfinite(pts), -1)]
                img = render_lib.draw_points(img, pts, color=(0.1, 1.0, 0.2), radius=max(1, int(round(2 * scale * max(h, wd) / 480))))
            out[ti, :, wi * ow : (wi + 1) * ow] = render_lib.to_uint8(img)
    return out


#: Colour of the "no face" marking in overlays.
NO_FACE_RGB = (230, 30, 30)


def _no_face(img: np.ndarray) -> np.ndarray:
    """A frame without the tracked face: a red frame around it and the label "no face"."""
    # Lazy: Pillow draws the label; only overlays with faceless frames need it.
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    b = max(2, min(h, w) // 60)
    out = Image.fromarray(np.ascontiguousarray(img))
    draw = ImageDraw.Draw(out)
    draw.rectangle([0, 0, w - 1, h - 1], outline=NO_FACE_RGB, width=b)
    draw.text((3 * b, 3 * b), "no face", fill=NO_FACE_RGB)
    return np.asarray(out)


def write_overlay_video(path, frames: np.ndarray, fps: float) -> Path:
    """Writes tiled overlay frames [T, H, W, 3] as an mp4 (H.264, yuv420p)."""
    return video_lib.write_video(Path(path), frames, fps=fps)
