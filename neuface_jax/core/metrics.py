"""4D face metrics over whole clips (the NeuFace paper's evaluation; see docs/method_notes.md).

Every function is pure and works on NumPy arrays (evaluated in NumPy float64 and
returned as a Python ``float`` — exact hand-checkable values) and on JAX arrays
(evaluated with ``jax.numpy`` and returned as a JAX scalar, so the functions can be
jitted; under ``jit`` all inputs are tracers and the JAX path is taken). Masks are
applied as weights, never by boolean indexing, so shapes stay static under ``jit``.

Units: 3D inputs are in metres (FLAME) and are multiplied by ``scale`` (default
1000) so that every 3D result is in millimetres; pass ``scale=1.0`` for inputs that
are already in millimetres. Time is in frames. 2D inputs are in any consistent unit
(pixels, normalized crop units): NME is a ratio.

Summary (leading axes: T frames, optionally views; N points):

* ``nme``: 100 · mean_t [ mean_{k visible} ‖p_tk − g_tk‖₂ / ‖g_t,36 − g_t,45‖₂ ], in %;
  ``landmark_set_nme`` picks the outer eye corners of any MediaPipe-id landmark set.
* ``msi`` (MSI_3D): mean_i 1 / σ²(a_i), in mm⁻² · frame⁴ (higher = smoother).
* ``jitter``: sqrt(mean_{t,i} ‖a_ti‖₂²), in mm / frame².
* ``cvd``: mean_{views v<w, t, i} ‖C_tvi − C_twi‖₂ (or ‖·‖₁), in mm.
* ``vertex_error`` / ``landmark_error_3d``: mean_{t,i} ‖A_t(P_ti) − G_ti‖₂, in mm,
  with A_t the identity or a per-frame translation / rigid / similarity alignment.

with a_ti = x_{t+1,i} − 2 x_{t,i} + x_{t−1,i} the second difference over frames.

``METRIC_NAMES`` / ``EXTRA_METRIC_NAMES`` are the names of ``metrics.json`` (every writer uses them).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from flame_jax.geometry import array_namespace, rigid_align, rigid_transform

__all__ = [
    "EXTRA_METRIC_NAMES",
    "EYE_CORNER_MEDIAPIPE_IDS",
    "IBUG68_EYE_CORNERS",
    "METRIC_NAMES",
    "MSI_VARIANCE_FLOOR",
    "acceleration",
    "cvd",
    "eye_corners",
    "jitter",
    "landmark_error_3d",
    "landmark_set_nme",
    "msi",
    "msi_landmarks",
    "msi_vertices",
    "nme",
    "nme_per_frame",
    "rigid_align",
    "rigid_transform",
    "second_difference",
    "vertex_error",
]

#: Floor on the acceleration variance in :func:`msi`, mm²/frame⁴: a point moving with
#: exactly constant velocity (or acceleration) has zero variance; its stability term is
#: capped at 1/floor = 1e6 instead of +inf, so results stay finite and JSON-serializable.
MSI_VARIANCE_FLOOR = 1e-6

#: The fixed names of ``metrics.json``, for every method.
METRIC_NAMES = ("nme_percent", "msi_landmarks", "msi_vertices", "jitter_mm", "cvd_mm", "vertex_error_mm")
#: Extra names an evaluation adds when it has what they need (the ground truth, detection validity).
EXTRA_METRIC_NAMES = (
    "accel_error_mm", "vertex_error_similarity_mm", "vertex_error_aligned_mm", "jitter_detected_mm",
    "msi_vertices_detected",
)

#: MediaPipe ids of the outer eye corners that normalize NME (image-left = the subject's right: 33;
#: image-right: 263).
EYE_CORNER_MEDIAPIPE_IDS = (33, 263)
#: Their positions in the iBUG-68 set (the 300-W convention).
IBUG68_EYE_CORNERS = (36, 45)


def _xp(*xs: Any):
    return array_namespace(*(x for x in xs if x is not None))


def _out(xp, value):
    """NumPy path → Python float; JAX path → JAX scalar (traceable)."""
    return float(value) if xp is np else value


def _asarray(xp, x, dtype=None):
    if xp is np:
        return np.asarray(x, dtype=np.float64 if dtype is None else dtype)
    return xp.asarray(x, dtype=dtype)


# --------------------------------------------------------------------------- NME
def nme_per_frame(
    pred_2d,
    gt_2d,
    visible=None,
    *,
    left_eye_idx: int = 36,
    right_eye_idx: int = 45,
    normalizer=None,
):
    """Per-frame normalized mean landmark error, in percent.

    nme_t = 100 · Σ_k m_tk ‖p_tk − g_tk‖₂ / (Σ_k m_tk · d_t), with d_t the
    inter-ocular distance ‖g_t,left − g_t,right‖₂ of the ground truth (300-W
    convention; 68-point outer eye corners 36 and 45) and m the visibility mask.

    Args:
      pred_2d: [..., L, 2] predicted landmarks (any leading axes: frames, views).
      gt_2d: [..., L, 2] ground-truth landmarks, same unit.
      visible: optional [..., L] bool/float mask; invisible landmarks are excluded,
        and so are landmarks whose prediction or ground truth is not finite.
      left_eye_idx, right_eye_idx: landmark indices of the normalizing eye corners
        (of ``gt_2d``, used even when those landmarks are marked invisible).
      normalizer: optional [...] per-frame normalizing distance that replaces the
        inter-ocular distance (e.g. a bounding-box size).

    Returns:
      [...] NME per frame in %; NaN for frames with no visible landmark or a zero
      normalizer.
    """
    xp = _xp(pred_2d, gt_2d, visible, normalizer)
    p = _asarray(xp, pred_2d)
    g = _asarray(xp, gt_2d)
    if p.shape != g.shape or p.ndim < 2 or p.shape[-1] != 2:
        raise ValueError(f"pred_2d and gt_2d must both be [..., L, 2], got {p.shape} and {g.shape}")
    err = xp.linalg.norm(p - g, axis=-1)  # [..., L]
    m = xp.ones_like(err) if visible is None else _asarray(xp, visible, err.dtype)
    if m.shape != err.shape:
        raise ValueError(f"visible must be {err.shape} (pred_2d without the xy axis), got {m.shape}")
    if normalizer is None:
        d = xp.linalg.norm(g[..., left_eye_idx, :] - g[..., right_eye_idx, :], axis=-1)
    else:
        d = _asarray(xp, normalizer)
        if d.shape != err.shape[:-1]:
            raise ValueError(f"normalizer must be {err.shape[:-1]}, got {d.shape}")
    finite = xp.isfinite(err)  # a missing (NaN) prediction or ground truth counts as invisible
    m = xp.where(finite, m, 0.0)
    err = xp.where(finite, err, 0.0)
    count = m.sum(-1)
    ok = (count > 0) & (d > 0)
    safe = xp.where(ok, count * d, 1.0)
    return xp.where(ok, 100.0 * (m * err).sum(-1) / safe, xp.nan)


def nme(
    pred_2d,
    gt_2d,
    visible=None,
    *,
    left_eye_idx: int = 36,
    right_eye_idx: int = 45,
    normalizer=None,
):
    """Normalized mean 2D landmark error over a clip, in percent.

    NME = mean over valid frames t of nme_t (see :func:`nme_per_frame`): each frame's
    mean error over its visible landmarks divided by its ground-truth inter-ocular
    distance, then averaged over frames (and views — every leading axis is a frame),
    each frame weighing the same (300-W convention: per-image NME, then the mean over
    images). Frames with no visible landmark (e.g. dropped detections) or a zero
    inter-ocular distance are excluded.

    Args:
      pred_2d: [T, L, 2] or [T, Vw, L, 2] (any leading axes) predicted landmarks.
      gt_2d: same shape, ground truth.
      visible: optional [T, L] / [T, Vw, L] mask.
      left_eye_idx, right_eye_idx, normalizer: see :func:`nme_per_frame`.

    Returns:
      Scalar NME in %; NaN when no frame has a visible landmark.
    """
    xp = _xp(pred_2d, gt_2d, visible, normalizer)
    per = nme_per_frame(pred_2d, gt_2d, visible, left_eye_idx=left_eye_idx,
                        right_eye_idx=right_eye_idx, normalizer=normalizer)
    ok = ~xp.isnan(per)
    n = ok.sum()
    return _out(xp, xp.where(n > 0, xp.where(ok, per, 0.0).sum() / xp.maximum(n, 1), xp.nan))


def eye_corners(landmark_ids=None) -> tuple[int, int]:
    """Positions of the outer eye corners (NME's normalizer) in a landmark set.

    Args:
      landmark_ids: the set's points as MediaPipe ids (e.g. ``landmark_sets.landmark_set_ids(name)``:
        the iBUG-68 or MediaPipe-105 set); None for the iBUG-68 order.

    Returns:
      ``(left, right)`` positions: (36, 45) for iBUG-68; those of MediaPipe ids 33 and 263 otherwise.

    Raises:
      ValueError: the set lacks one of the eye corners.
    """
    if landmark_ids is None:
        return IBUG68_EYE_CORNERS
    ids = np.asarray(landmark_ids).reshape(-1).tolist()
    missing = [i for i in EYE_CORNER_MEDIAPIPE_IDS if i not in ids]
    if missing:
        raise ValueError(f"the landmark set lacks the outer eye corners {missing} (MediaPipe ids) needed for NME")
    return tuple(ids.index(i) for i in EYE_CORNER_MEDIAPIPE_IDS)


def landmark_set_nme(pred_2d, gt_2d, visible=None, *, landmark_ids=None):
    """:func:`nme` normalized by the outer eye corners of the landmark set (:func:`eye_corners`).

    Frames whose ground-truth eye corners are not finite (hidden, undetected) have no normalizer
    and are left out; non-finite points count as invisible.
    """
    left, right = eye_corners(landmark_ids)
    return nme(pred_2d, gt_2d, visible, left_eye_idx=left, right_eye_idx=right)


# -------------------------------------------------------------- temporal metrics
def _frames_mask(xp, valid, num_frames: int, dtype):
    if valid is None:
        return None
    v = _asarray(xp, valid, dtype)
    if v.shape != (num_frames,):
        raise ValueError(f"frame_mask must be [T] = ({num_frames},), got {v.shape}")
    # An acceleration at t needs frames t-1, t, t+1.
    return v[:-2] * v[1:-1] * v[2:]


def second_difference(points):
    """a_t = p_{t+1} − 2 p_t + p_{t−1} along axis 0: [T, ...] → [T−2, ...] (same unit)."""
    xp = _xp(points)
    p = _asarray(xp, points)
    if p.ndim < 1 or p.shape[0] < 3:
        raise ValueError(f"acceleration needs at least 3 frames, got shape {p.shape}")
    return p[2:] - 2.0 * p[1:-1] + p[:-2]


def acceleration(points, *, scale: float = 1000.0):
    """Second difference over frames: a_t = x_{t+1} − 2 x_t + x_{t−1}.

    Args:
      points: [T, ..., 3] positions in metres (or any unit with a matching ``scale``).
      scale: factor to the output unit (1000: metres → mm).

    Returns:
      [T−2, ..., 3] accelerations in mm/frame² (for frames 1 .. T−2).
    """
    xp = _xp(points)
    x = _asarray(xp, points)
    if x.ndim < 2 or x.shape[0] < 3:
        raise ValueError(f"points must be [T, ..., D] with T >= 3, got {x.shape}")
    # Centre each trajectory first: differences of small numbers round less (float32).
    return second_difference((x - x.mean(0, keepdims=True)) * scale)


def jitter(points, *, scale: float = 1000.0, frame_mask=None):
    """RMS 3D acceleration, mm/frame².

    jitter = sqrt( Σ_{t,i} w_t ‖a_ti‖₂² / (N Σ_t w_t) ), a_ti the second difference
    of point i at frame t (:func:`acceleration`), w_t = 1 when frames t−1, t, t+1 are
    all valid. Zero for motion at constant velocity.

    Args:
      points: [T, N, 3] (or [T, Vw, N, 3], any middle axes are points) positions in
        metres.
      scale: unit factor to mm (1.0 for inputs already in mm).
      frame_mask: optional [T] bool mask of valid frames.

    Returns:
      Scalar, mm/frame². NaN if no acceleration is valid.
    """
    xp = _xp(points, frame_mask)
    a = acceleration(points, scale=scale)
    sq = (a * a).sum(-1).reshape(a.shape[0], -1).mean(1)  # [T-2]
    w = _frames_mask(xp, frame_mask, a.shape[0] + 2, sq.dtype)
    if w is None:
        return _out(xp, xp.sqrt(sq.mean()))
    n = w.sum()
    return _out(xp, xp.where(n > 0, xp.sqrt((w * sq).sum() / xp.maximum(n, 1)), xp.nan))


def msi(points, *, scale: float = 1000.0, frame_mask=None, variance_floor: float = MSI_VARIANCE_FLOOR):
    """Mesh stability index MSI_3D (StableFace; NeuFace Table 2), mm⁻² · frame⁴.

    MSI = (1/N) Σ_i 1 / max(σ²_i, floor), with the acceleration variance of point i

        σ²_i = (1 / (3 T_a)) Σ_t Σ_{c∈xyz} (a_tic − ā_ic)²,

    a_ti the second difference over frames in mm/frame² (:func:`acceleration`), ā_i
    its mean over the T_a = T − 2 accelerations (per coordinate), i.e. the population
    variance over frames averaged over x, y, z. Higher is more stable. For a point
    moving at constant velocity (or constant acceleration) σ² = 0; the floor
    (``variance_floor``, default :data:`MSI_VARIANCE_FLOOR` = 1e-6 mm²/frame⁴) caps its
    term at 1e6 instead of +inf so results stay finite (and JSON-serializable); pass
    ``variance_floor=0`` for +inf. For scale: an RMS acceleration of 1 mm/frame² with
    zero mean gives σ² = 1/3 and MSI = 3.

    Args:
      points: [T, N, 3] landmarks (MSI^L) or vertices (MSI^V) in metres; any middle
        axes (e.g. views) are flattened into points.
      scale: unit factor to mm.
      frame_mask: optional [T] bool mask of valid frames (an acceleration counts when
        its three frames are valid).
      variance_floor: lower bound on σ², mm²/frame⁴.

    Returns:
      Scalar MSI, mm⁻² · frame⁴; NaN with fewer than 2 valid accelerations.
    """
    xp = _xp(points, frame_mask)
    a = acceleration(points, scale=scale)
    a = a.reshape(a.shape[0], -1, a.shape[-1])  # [Ta, N, 3]
    w = _frames_mask(xp, frame_mask, a.shape[0] + 2, a.dtype)
    if w is None:
        w = xp.ones((a.shape[0],), a.dtype)
    count = w.sum()
    n = xp.maximum(count, 1.0)
    mean = (w[:, None, None] * a).sum(0) / n  # [N, 3]
    var = (w[:, None, None] * (a - mean) ** 2).sum(0).mean(-1) / n  # [N]
    with np.errstate(divide="ignore"):  # variance_floor=0 asks for +inf
        value = (1.0 / xp.maximum(var, variance_floor)).mean()
    return _out(xp, xp.where(count >= 2, value, xp.nan))


def msi_landmarks(landmarks_3d, **kwargs):
    """MSI^L: :func:`msi` of 3D landmarks [T, L, 3] (metres), mm⁻² · frame⁴."""
    return msi(landmarks_3d, **kwargs)


def msi_vertices(vertices, **kwargs):
    """MSI^V: :func:`msi` of mesh vertices [T, V, 3] (metres), mm⁻² · frame⁴."""
    return msi(vertices, **kwargs)


# ---------------------------------------------------------------- cross-view CVD
def cvd(canonical_vertices, *, scale: float = 1000.0, norm: str = "l2", view_mask=None):
    """Cross-view vertex distance in the head-canonical frame, mm.

    CVD = mean over view pairs v < w, frames t and vertices i of
    ‖C_tvi − C_twi‖, where C are the meshes of the same frame seen from different
    views with each view's head rotation removed (the caller canonicalizes). The
    default is the Euclidean norm per vertex (``norm="l2"``, a distance in mm);
    ``norm="l1"`` uses |dx| + |dy| + |dz| per vertex, the paper's ‖·‖₁.

    Args:
      canonical_vertices: [T, Vw, N, 3] metres, the meshes with the head rotation
        zeroed (R_vᵀ(M − J0) + J0).
      scale: unit factor to mm.
      norm: "l2" or "l1".
      view_mask: optional [T, Vw] bool; a pair counts at frame t when both views are
        valid there.

    Returns:
      Scalar CVD in mm; 0.0 for a single view; NaN if no valid pair.
    """
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    xp = _xp(canonical_vertices, view_mask)
    c = _asarray(xp, canonical_vertices)
    if c.ndim != 4 or c.shape[-1] != 3:
        raise ValueError(f"canonical_vertices must be [T, Vw, N, 3], got {c.shape}")
    num_t, num_views = c.shape[:2]
    if num_views < 2:
        return _out(xp, xp.zeros((), c.dtype))
    m = xp.ones((num_t, num_views), c.dtype) if view_mask is None else _asarray(xp, view_mask, c.dtype)
    if m.shape != (num_t, num_views):
        raise ValueError(f"view_mask must be [T, Vw] = {(num_t, num_views)}, got {m.shape}")
    total = 0.0
    weight = 0.0
    for v, w in itertools.combinations(range(num_views), 2):
        d = (c[:, v] - c[:, w]) * scale
        dist = xp.abs(d).sum(-1) if norm == "l1" else xp.linalg.norm(d, axis=-1)  # [T, N]
        pw = m[:, v] * m[:, w]
        total = total + (pw * dist.mean(-1)).sum()
        weight = weight + pw.sum()
    return _out(xp, xp.where(weight > 0, total / xp.maximum(weight, 1.0), xp.nan))


# ----------------------------------------------------------- ground-truth errors
def vertex_error(pred, gt, *, align: str | None = None, scale: float = 1000.0, valid=None):
    """Mean per-vertex Euclidean error, mm.

    err = mean over frames t (valid ones) and points i of ‖A_t(P_ti) − G_ti‖₂, with
    A_t the identity (``align=None``, e.g. both in the head-canonical frame), the
    per-frame translation that matches centroids (``"translation"``), the best rigid
    transform (``"rigid"``, Kabsch) or similarity (``"similarity"``, Umeyama) of the
    prediction onto the ground truth.

    Args:
      pred: [T, N, 3] (any leading axes, or none) predicted positions, metres.
      gt: same shape, ground truth.
      align: None, "translation", "rigid" or "similarity" (per leading index).
      scale: unit factor to mm.
      valid: optional bool mask over the leading axes ([T] or [T, Vw]).

    Returns:
      Scalar mean error, mm (NaN if nothing is valid).
    """
    if align not in (None, "translation", "rigid", "similarity"):
        raise ValueError(f"align must be None, 'translation', 'rigid' or 'similarity', got {align!r}")
    xp = _xp(pred, gt, valid)
    p = _asarray(xp, pred)
    g = _asarray(xp, gt)
    if p.shape != g.shape or p.ndim < 2 or p.shape[-1] != 3:
        raise ValueError(f"pred and gt must both be [..., N, 3], got {p.shape} and {g.shape}")
    if align == "translation":
        p = p - p.mean(-2, keepdims=True) + g.mean(-2, keepdims=True)
    elif align in ("rigid", "similarity"):
        p = rigid_align(p, g, with_scale=align == "similarity")
    err = xp.linalg.norm((p - g) * scale, axis=-1).mean(-1)  # [...]
    if valid is None:
        return _out(xp, err.mean())
    m = _asarray(xp, valid, err.dtype)
    if m.shape != err.shape:
        raise ValueError(f"valid must be {err.shape}, got {m.shape}")
    n = m.sum()
    return _out(xp, xp.where(n > 0, (m * err).sum() / xp.maximum(n, 1.0), xp.nan))


def landmark_error_3d(pred_landmarks, gt_landmarks, *, align: str | None = None, scale: float = 1000.0, valid=None):
    """Mean 3D landmark error, mm: :func:`vertex_error` on [T, L, 3] landmarks."""
    return vertex_error(pred_landmarks, gt_landmarks, align=align, scale=scale, valid=valid)
