"""The metrics of a fitted clip without ground truth: ``metrics.json``'s fixed names, overall and per view.

``nme_percent`` — the fitted mesh's landmarks against the detections, in original pixels, valid
frames and visible points only, normalized by the detected outer-eye-corner distance (the landmark
set's own eye corners: ``FaceSetup.eye_idx``); ``msi_landmarks``, ``msi_vertices``, ``jitter_mm`` —
smoothness of the output meshes over all frames (mean over views with a face; NaN under 3 frames);
``cvd_mm`` — cross-view vertex distance in the head-canonical frame, frames where both views have
a detection (multi-view clips only). There is no ground truth: NME is agreement with the
detector, not accuracy. The synthetic demo scores against its ground truth with the same helpers.
"""

from __future__ import annotations

import jax
import numpy as np

import flame_jax
from neuface_jax.core import metrics as metrics_lib
from neuface_jax.media import crops as crops_lib

__all__ = ["clip_metrics", "frame_nme", "landmarks3d", "landmarks_to_pixels"]

#: Smoothness metrics need two accelerations.
_MIN_FRAMES = 3
_SMOOTHNESS = ("msi_landmarks", "msi_vertices", "jitter_mm")


def landmarks_to_pixels(landmarks_norm: np.ndarray, crop_transforms: np.ndarray, crop_size: int) -> np.ndarray:
    """[T, W, L, 2] normalized crop coordinates → original image pixels."""
    crop_px = crops_lib.from_normalized(np.asarray(landmarks_norm, np.float64), crop_size)
    inv = crops_lib.invert_transform(np.asarray(crop_transforms, np.float64))
    return crops_lib.apply_transform(crop_px, inv)


def landmarks3d(face, vertices: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """3D landmarks [T, W, L, 3] of fitted meshes (``face``: a ``fit.FaceModel``)."""
    return np.asarray(jax.jit(flame_jax.landmarks)(face.flame, face.embedding, vertices, pose))


def _finite_or_nan(x) -> float:
    x = float(x)
    return x if np.isfinite(x) else float("nan")


def _scored(target_px: np.ndarray, valid: np.ndarray, eye_idx) -> np.ndarray:
    """[T, W, L] the points NME scores: detected, on frames with a face and both eye corners."""
    vis = np.isfinite(target_px).all(-1) & np.asarray(valid, bool)[..., None]
    # NME divides by the detected eye-corner distance: frames with a hidden (NaN) eye corner are left out.
    return vis & np.isfinite(target_px[..., list(eye_idx), :]).all((-1, -2))[..., None]


def frame_nme(pred_px: np.ndarray, target_px: np.ndarray, valid: np.ndarray, eye_idx) -> np.ndarray:
    """[T, W] NME (%) of each frame and view, as ``clip_metrics`` scores it before the mean (NaN: not scored).

    ``pred_px``, ``target_px``: [T, W, L, 2] fitted and detected landmarks in original pixels
    (NaN = no detection); ``valid`` [T, W].
    """
    li, ri = eye_idx
    return np.asarray(metrics_lib.nme_per_frame(
        pred_px, np.nan_to_num(target_px), _scored(target_px, valid, eye_idx), left_eye_idx=li, right_eye_idx=ri))


def clip_metrics(result, face, eye_idx, *, crop_transforms, target_px, valid, crop_size, view_names):
    """``(top-level metrics, {view: metrics})`` of a fit (``fit.FitResult``) against detections.

    ``target_px`` [T, W, L, 2] (NaN = no target), ``valid`` [T, W] (a face was detected).
    """
    t, w = valid.shape
    keep = [v for v in range(w) if valid[:, v].any()]
    vis = _scored(target_px, valid, eye_idx)
    pred_px = landmarks_to_pixels(result.landmarks2d, crop_transforms, crop_size)
    ref_px = np.nan_to_num(target_px)
    li, ri = eye_idx

    def nme(views):
        return _finite_or_nan(
            metrics_lib.nme(pred_px[:, views], ref_px[:, views], vis[:, views], left_eye_idx=li, right_eye_idx=ri)
        )

    lmk3d = landmarks3d(face, result.vertices, result.pose) if t >= _MIN_FRAMES else None
    per_view = {}
    for v, name in enumerate(view_names):
        d = {"nme_percent": nme([v]) if v in keep else float("nan"), "valid_fraction": float(valid[:, v].mean())}
        if lmk3d is not None:
            d["msi_landmarks"] = float(metrics_lib.msi(lmk3d[:, v]))
            d["msi_vertices"] = float(metrics_lib.msi(result.vertices[:, v]))
            d["jitter_mm"] = float(metrics_lib.jitter(result.vertices[:, v]))
        per_view[name] = d
    out = {"nme_percent": nme(keep)}
    for k in _SMOOTHNESS:  # the mean over the views with a face
        out[k] = float(np.mean([per_view[view_names[v]][k] for v in keep])) if lmk3d is not None else float("nan")
    if w > 1:
        out["cvd_mm"] = _finite_or_nan(metrics_lib.cvd(result.canonical_vertices, view_mask=valid))
    return out, per_view
