"""4D face metrics (method.md §5) as pure functions over whole clips.

Conventions: time is axis 0 ([T, ...]); 3D points are in metres on input and reported in
millimetres (``scale=1000``); 2D points in pixels. Every function accepts NumPy or JAX
arrays and returns a float (NumPy); masked-out entries never contribute.

* ``nme`` — 2D landmark error / inter-ocular distance, %.
* ``msi`` — mesh stability index MSI_3D (StableFace): mean over points of 1/σ²(a_i), the
  inverse variance of each point's 3D acceleration; mm⁻²·frame⁴, higher = smoother.
* ``jitter`` — RMS 3D acceleration, mm/frame².
* ``cvd`` — cross-view vertex distance in the head-canonical frame, mm.
* ``vertex_error`` / ``landmark_error_3d`` — mean Euclidean error against ground truth,
  mm, optionally after rigid or similarity alignment (``rigid_align``).
"""

from __future__ import annotations

import numpy as np

#: Variance floor for MSI (mm²/frame⁴): a point moving with exactly constant velocity has zero
#: acceleration variance; its stability is capped at 1/floor instead of infinity.
MSI_VARIANCE_FLOOR = 1e-6


def _np(x, dtype=np.float64) -> np.ndarray:
    return np.asarray(x, dtype)


def second_difference(points) -> np.ndarray:
    """Acceleration a_t = p_{t+1} − 2 p_t + p_{t−1} along axis 0: [T, ...] → [T−2, ...]."""
    p = _np(points)
    if p.shape[0] < 3:
        raise ValueError(f"acceleration needs at least 3 frames, got {p.shape[0]}")
    return p[2:] - 2.0 * p[1:-1] + p[:-2]


def nme(pred_2d, gt_2d, visible=None, *, left_eye_idx: int = 36, right_eye_idx: int = 45) -> float:
    """Normalized mean error of 2D landmarks, in percent.

    NME = 100 · mean over visible (frame, landmark) of ‖p − g‖₂ / d_frame, with d_frame the
    inter-ocular distance ‖g_36 − g_45‖ (outer eye corners of the 68-point set) of the
    ground truth in that frame. Frames with no visible landmark, or a degenerate
    inter-ocular distance, are excluded.

    Args:
      pred_2d, gt_2d: [..., L, 2] pixels (any leading dims: frames, views).
      visible: [..., L] bool; None = all.

    Returns:
      NME in %; NaN when nothing is visible.
    """
    p, g = _np(pred_2d), _np(gt_2d)
    if p.shape != g.shape or p.shape[-1] != 2:
        raise ValueError(f"pred and gt must both be [..., L, 2], got {p.shape} and {g.shape}")
    p = p.reshape((-1,) + p.shape[-2:])
    g = g.reshape((-1,) + g.shape[-2:])
    vis = np.ones(p.shape[:2], bool) if visible is None else np.asarray(visible, bool).reshape(p.shape[:2])
    iod = np.linalg.norm(g[:, left_eye_idx] - g[:, right_eye_idx], axis=-1)
    err = np.linalg.norm(p - g, axis=-1)
    ok = vis & np.isfinite(err) & (iod[:, None] > 1e-6)
    if not ok.any():
        return float("nan")
    return float(100.0 * np.mean((err / np.where(iod > 1e-6, iod, 1.0)[:, None])[ok]))


def msi(points, *, scale: float = 1000.0, frame_mask=None) -> float:
    """Mesh stability index MSI_3D = (1/N) Σ_i 1 / σ²(a_i).

    a_i [T−2, 3] is the 3D acceleration (second difference over frames) of point i in
    millimetres (``points`` in metres × ``scale``); σ²(a_i) is its variance over frames and
    coordinates, (1/(3(T−2))) Σ_t Σ_c (a_itc − ā_ic)². Units: mm⁻²·frame⁴; higher is
    smoother. σ² is floored at ``MSI_VARIANCE_FLOOR``.

    Args:
      points: [T, N, 3] landmarks or vertices, metres.
      frame_mask: optional [T] bool; accelerations touching an invalid frame are dropped.
    """
    a = second_difference(_np(points) * scale)
    if frame_mask is not None:
        m = np.asarray(frame_mask, bool)
        keep = m[2:] & m[1:-1] & m[:-2]
        a = a[keep]
        if a.shape[0] < 2:
            return float("nan")
    var = np.mean((a - a.mean(axis=0, keepdims=True)) ** 2, axis=(0, 2))
    return float(np.mean(1.0 / np.maximum(var, MSI_VARIANCE_FLOOR)))


def jitter(points, *, scale: float = 1000.0, frame_mask=None) -> float:
    """RMS 3D acceleration, mm/frame²: sqrt(mean over frames and points of ‖a_it‖²).

    Args:
      points: [T, N, 3] metres (× ``scale`` → mm).
      frame_mask: optional [T] bool, as in ``msi``.
    """
    a = second_difference(_np(points) * scale)
    if frame_mask is not None:
        m = np.asarray(frame_mask, bool)
        a = a[m[2:] & m[1:-1] & m[:-2]]
        if a.shape[0] == 0:
            return float("nan")
    return float(np.sqrt(np.mean(np.sum(a**2, axis=-1))))


def cvd(canonical_vertices, *, scale: float = 1000.0, view_mask=None) -> float:
    """Cross-view vertex distance in the head-canonical frame, mm.

    CVD = mean over frames, view pairs (i < j) and vertices of ‖C_{t,i,v} − C_{t,j,v}‖₂ (a
    Euclidean distance per vertex; the paper writes an L1 norm without saying over what —
    we report the Euclidean one, in mm).

    Args:
      canonical_vertices: [T, W, N, 3] metres, the meshes with the head rotation zeroed.
      view_mask: optional [T, W] bool; pairs involving an invalid view are skipped.
    """
    c = _np(canonical_vertices) * scale
    if c.ndim != 4 or c.shape[-1] != 3:
        raise ValueError(f"canonical_vertices must be [T, W, N, 3], got {c.shape}")
    t, w = c.shape[:2]
    if w < 2:
        return 0.0
    m = np.ones((t, w), bool) if view_mask is None else np.asarray(view_mask, bool)
    total, count = 0.0, 0
    for i in range(w):
        for j in range(i + 1, w):
            ok = m[:, i] & m[:, j]
            if ok.any():
                d = np.linalg.norm(c[ok, i] - c[ok, j], axis=-1)
                total += d.sum()
                count += d.size
    return float(total / count) if count else float("nan")


def rigid_align(source, target, *, with_scale: bool = False) -> np.ndarray:
    """Best rigid (or similarity) transform of ``source`` [N, 3] onto ``target`` [N, 3] (Kabsch/Umeyama).

    Returns the transformed source [N, 3].
    """
    s, t = _np(source), _np(target)
    mu_s, mu_t = s.mean(0), t.mean(0)
    s0, t0 = s - mu_s, t - mu_t
    u, sig, vt = np.linalg.svd(s0.T @ t0)
    d = np.sign(np.linalg.det(u @ vt))
    corr = np.diag([1.0, 1.0, d])
    rot = (u @ corr @ vt).T
    c = 1.0
    if with_scale:
        c = float(np.sum(sig * np.diag(corr)) / max(np.sum(s0**2), 1e-18))
    return c * s0 @ rot.T + mu_t


def vertex_error(pred, gt, *, align: str | None = None, scale: float = 1000.0) -> float:
    """Mean per-vertex Euclidean error, mm: mean over frames and vertices of ‖p − g‖₂.

    Args:
      pred, gt: [T, N, 3] (or [N, 3]) metres, same frame (e.g. canonical).
      align: None (as given), "rigid" (per-frame rotation + translation) or "similarity"
        (+ uniform scale) of pred onto gt before measuring.
    """
    p, g = _np(pred), _np(gt)
    if p.shape != g.shape or p.shape[-1] != 3:
        raise ValueError(f"pred and gt must have the same [..., N, 3] shape, got {p.shape} and {g.shape}")
    if p.ndim == 2:
        p, g = p[None], g[None]
    p = p.reshape((-1,) + p.shape[-2:])
    g = g.reshape((-1,) + g.shape[-2:])
    if align is not None:
        if align not in ("rigid", "similarity"):
            raise ValueError(f"align must be None, 'rigid' or 'similarity', got {align!r}")
        p = np.stack([rigid_align(p[i], g[i], with_scale=align == "similarity") for i in range(p.shape[0])])
    return float(np.mean(np.linalg.norm(p - g, axis=-1)) * scale)


def landmark_error_3d(pred, gt, *, align: str | None = None, scale: float = 1000.0) -> float:
    """Mean 3D landmark error, mm (``vertex_error`` on landmark sets [T, L, 3])."""
    return vertex_error(pred, gt, align=align, scale=scale)
