"""Writing results: ``params.npz`` (NeuFace release layout + our additions), ``metrics.json``,
per-frame OBJ files and an overlay video of the fitted mesh over the input frames (wireframe,
translucent shaded or both; model and detected landmarks; labels and a legend; optionally side by side).

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

import dataclasses
import json
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


#: Overlay styles: the hidden-line wireframe, a translucent shaded mesh, or both (shaded, edges on top).
OVERLAY_STYLES = ("wire", "shaded", "both")


def check_overlay_style(style: str) -> str:
    """``style`` if it is one of ``OVERLAY_STYLES`` (configs check it before any work is done)."""
    if style not in OVERLAY_STYLES:
        raise ValueError(f"overlay style must be one of {OVERLAY_STYLES}, got {style!r}")
    return style


#: Colours (RGB in [0, 1]) of the overlay's marks, named by its legend: the fitted model's projected
#: landmarks, the detected landmarks (the fit's targets) and the wireframe.
MODEL_LANDMARK_RGB = (1.0, 0.2, 0.85)
DETECTED_LANDMARK_RGB = (0.15, 1.0, 0.25)
WIRE_RGB = (0.1, 0.75, 1.0)
#: Colour of the "no face" marking in overlays.
NO_FACE_RGB = (230, 30, 30)

#: style → (render.overlay_mesh mode, mesh or line opacity, line opacity in "both") over the photo,
#: light enough to see the face through; the side-by-side mesh panel draws the mesh opaque.
_OVER_PHOTO = {"wire": ("wireframe", 0.6, None), "shaded": ("solid", 0.35, None), "both": ("both", 0.25, 0.4)}
_OPAQUE = {"wire": ("wireframe", 0.9, None), "shaded": ("solid", 1.0, None), "both": ("both", 1.0, 0.5)}
#: The side-by-side mesh panel shows the photo this bright under the mesh (for context).
_BACKDROP = 0.3
#: Panels with a shorter side below this many pixels are not labelled (the text would cover the face).
_MIN_LABELLED = 120


def overlay_frames(
    images: np.ndarray,
    vertices: np.ndarray,
    cams: np.ndarray,
    crop_transforms: np.ndarray,
    faces: np.ndarray,
    *,
    crop_size: int = crops_lib.CROP_SIZE,
    landmarks: np.ndarray | None = None,
    model_landmarks: np.ndarray | None = None,
    nme: np.ndarray | None = None,
    view_names=None,
    frame_indices=None,
    style: str = "wire",
    side_by_side: bool = False,
    max_side: int = 480,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Tiles all views per frame with the mesh, the landmarks and labels drawn over each image.

    Each view is labelled with its name, the frame index and the frame's NME; a legend names the
    two landmark colours (``MODEL_LANDMARK_RGB``, ``DETECTED_LANDMARK_RGB``).

    Args:
      images: uint8 [T, W, H, Wd, 3] original frames (views may be padded to one size).
      vertices: [T, W, V, 3] fitted vertices (model frame); cams [T, W, 3]; crop transforms [T, W, 2, 3].
      landmarks: optional [T, W, L, 2] detected landmarks, image pixels (NaN = none).
      model_landmarks: optional [T, W, L, 2] the fitted model's projected landmarks, image pixels.
      nme: optional [T, W] per-frame NME in % (NaN: not scored), shown in the label.
      view_names: W names (default "view 0", ...); frame_indices: [T] source frame numbers (default 0..T-1).
      style: one of ``OVERLAY_STYLES``.
      side_by_side: each view as two panels, the image | the mesh (opaque, over the dimmed image).
      max_side: each view is downscaled so its longer side is at most this many pixels.
      valid: optional bool [T, W]: where False the view had no tracked face; it is drawn as "no
        face" (a red frame and label), without the mesh or landmarks fitted there.

    Returns:
      uint8 [T, H', W * Wd', 3] (W * 2 * Wd' side by side).
    """
    check_overlay_style(style)
    t, w, h, wd = images.shape[:4]
    scale = min(1.0, max_side / max(h, wd))
    oh, ow = max(2, int(round(h * scale))), max(2, int(round(wd * scale)))
    resize = np.array([[scale, 0, 0], [0, scale, 0]])
    frames = np.arange(t) if frame_indices is None else np.asarray(frame_indices)
    names = [f"view {i}" for i in range(w)] if view_names is None else [str(n) for n in view_names]
    look = _Look.for_size(oh, ow, scale * max(h, wd))
    panels = 2 if side_by_side else 1
    out = np.zeros((t, oh, ow * w * panels, 3), np.uint8)
    for ti in range(t):
        for wi in range(w):
            img = images[ti, wi]
            if scale != 1.0:
                img = crops_lib.warp_crop(img, resize, size=max(oh, ow))[:oh, :ow]
            img = render_lib.to_uint8(img)
            header = f"{names[wi]}  frame {int(frames[ti])}"
            if valid is not None and not valid[ti, wi]:
                tiles = [_no_face(img, header, look)] * panels
            else:
                m = crops_lib.compose_transforms(crop_transforms[ti, wi], crops_lib.invert_transform(resize))
                scr = None
                if np.all(np.isfinite(vertices[ti, wi])) and np.all(np.isfinite(m)):
                    scr = screen_vertices(vertices[ti, wi], cams[ti, wi], m, crop_size)
                pts = [None if a is None else np.asarray(a[ti, wi], np.float64) * scale
                       for a in (landmarks, model_landmarks)]
                lines = [header] + ([] if nme is None else [_nme_text(nme[ti, wi])])
                tiles = _view_tiles(img, scr, faces, pts, style, side_by_side, look, lines)
            for k, tile in enumerate(tiles):
                c = (wi * panels + k) * ow
                out[ti, :, c : c + ow] = tile
    return out


@dataclasses.dataclass(frozen=True)
class _Look:
    """Sizes of an overlay's marks and text for one panel size."""

    dot: float  # detected landmark radius (pixels); the model's are drawn smaller on top
    text: float  # font scale
    margin: int
    labels: bool  # panels too small for readable text get only the "no face" marking
    wire: float  # wireframe edge spacing in pixels (render.overlay_mesh's wire_spacing)

    @classmethod
    def for_size(cls, oh: int, ow: int, longer: float) -> "_Look":
        dot = max(1.5, 2.5 * longer / 480)
        short = min(oh, ow)
        return cls(dot=dot, text=max(0.3, short / 800), margin=max(2, short // 80), labels=short >= _MIN_LABELLED,
                   wire=max(5.0, short / 60))


def _nme_text(value: float) -> str:
    return f"NME {value:.2f}%" if np.isfinite(value) else "NME n/a"


def _view_tiles(img, scr, faces, pts, style, side_by_side, look, lines) -> list[np.ndarray]:
    """One view's panels: the overlay, or the image | the mesh."""
    detected, model = pts
    if not side_by_side:
        over = _mesh(img, scr, faces, _OVER_PHOTO[style], look)
        return [_label(_landmarks(over, detected, model, look), lines, look, legend=True)]
    backdrop = render_lib.to_uint8(img.astype(np.float32) / 255.0 * _BACKDROP)
    mesh = _landmarks(_mesh(backdrop, scr, faces, _OPAQUE[style], look), detected, model, look)
    return [_label(img, lines, look), _label(mesh, [], look, legend=True)]


def _mesh(img, scr, faces, mode, look: _Look) -> np.ndarray:
    if scr is None:
        return img
    kind, alpha, wire_alpha = mode
    return render_lib.overlay_mesh(img, scr, faces, alpha=alpha, mode=kind, wire_color=WIRE_RGB,
                                   wire_alpha=wire_alpha, wire_spacing=look.wire)


def _landmarks(img, detected, model, look: _Look) -> np.ndarray:
    """Detected landmarks as larger discs, the model's as smaller ones on top (both visible at a perfect fit)."""
    if detected is not None:
        img = render_lib.draw_points(img, detected, color=DETECTED_LANDMARK_RGB, radius=look.dot)
    if model is not None:
        img = render_lib.draw_points(img, model, color=MODEL_LANDMARK_RGB, radius=max(1.0, 0.65 * look.dot))
    return img


def _label(img, lines, look: _Look, *, legend: bool = False, inset: int | None = None) -> np.ndarray:
    """Text lines (a string, or (string, RGB)) at the top left, and the landmark legend at the bottom left."""
    if not look.labels:
        lines, legend = [line for line in lines if not isinstance(line, str)], False  # keep "no face"
    x = y = look.margin if inset is None else inset
    line_h = render_lib.text_size("Ag", look.text)[1]
    for line in lines:
        text, rgb = (line, (1.0, 1.0, 1.0)) if isinstance(line, str) else line
        img = render_lib.draw_text(img, text, (x, y), rgb, scale=look.text)
        y += line_h
    if legend:
        y = img.shape[0] - look.margin - line_h
        for name, rgb in (("detected", DETECTED_LANDMARK_RGB), ("model", MODEL_LANDMARK_RGB)):
            # A colour swatch (a dot on the text's backing box), then the name.
            img = render_lib.draw_box(img, (x, y, x + line_h, y + line_h))
            img = render_lib.draw_points(img, [[x + line_h * 0.6, y + line_h * 0.5]], color=rgb,
                                         radius=max(1.5, 0.28 * line_h))
            img = render_lib.draw_text(img, name, (x + line_h, y), scale=look.text)
            x += line_h + render_lib.text_size(name, look.text)[0] + look.margin
    return render_lib.to_uint8(img)


def _no_face(img: np.ndarray, header: str, look: _Look) -> np.ndarray:
    """A frame without the tracked face: a red frame around it, the label "no face" and the header."""
    b = max(2, min(img.shape[:2]) // 60)
    out = np.array(img, copy=True)
    out[:b], out[-b:], out[:, :b], out[:, -b:] = NO_FACE_RGB, NO_FACE_RGB, NO_FACE_RGB, NO_FACE_RGB
    return _label(out, [("no face", np.asarray(NO_FACE_RGB) / 255.0), header], look, inset=2 * b)


def write_overlay_video(path, frames: np.ndarray, fps: float) -> Path:
    """Writes tiled overlay frames [T, H, W, 3] as an mp4 (H.264, yuv420p)."""
    return video_lib.write_video(Path(path), frames, fps=fps)
