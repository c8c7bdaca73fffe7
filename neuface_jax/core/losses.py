"""Loss terms of NeuFace as pure functions, composable by configuration (see docs/method_notes.md).

Every element-wise term returns ``(values, mask)``: per-element values (no reduction) and a float
mask of the same shape (1 = counts, 0 = ignored, fractional = confidence). Reduce with
``masked_mean``. Masked positions never leak NaN: inputs are cleaned with ``jnp.where`` *before*
any arithmetic, so NaN landmarks of invisible points poison neither the loss nor its gradient, and
a fully masked term is exactly 0.

Axis conventions: time (frames) is axis 0 in temporal terms; the view axis is the one just before
the vertex axis in multi-view terms (``[..., Vw, N, 3]``). Units: normalized crop units for 2D
landmarks, metres for vertices, unit quaternions for rotations.

Terms:

* ``landmark_l1`` — L1 reprojection error per landmark, optional per-landmark weights
  (``IBUG68_REFERENCE_WEIGHTS``). ``masked_mean`` of it is the reference Σ m|π−j|₁ / (2Σm).
* ``temporal_rotation`` — the paper's quaternion moving average on the head rotation;
  ``temporal_moving_average`` (expression, jaw…), ``temporal_acceleration`` (vertices…): extensions.
  All accept fixed context frames from the neighbouring chunks so windows span chunk borders.
* ``multiview_l1`` — multi-view bootstrapping: visibility-weighted merge of the canonical meshes of
  all views into a pseudo-ground-truth, L1 to each view (``vertex_normals``, ``view_weights``,
  ``merge_views`` are its pieces).
* ``l2_prior`` — priors on raw parameters for the direct-optimization baseline.

Composition — a loss is a mapping from term names to weights; a user adds a term by writing a
function of the batch dict, no library edit::

    import functools
    from neuface_jax.core import losses

    def my_term(batch):                       # returns a scalar, or (values, mask)
        return batch["expression"] ** 2, None

    config = {
        "landmark": 10.0,                      # builtin, reference weights 10 / 100 / 200
        "temporal": 100.0,
        "multiview": (functools.partial(losses.multiview_term, stop_gradient_target=True), 200.0),
        "my_term": (my_term, 1.0),            # custom: (function, weight)
        "jaw_smooth": ("jaw_smooth", 5.0, {"stop_gradient_target": True}),  # (name, weight, options)
    }
    total, per_term = losses.total_loss(config, batch)

Builtin terms (``BUILTIN_TERMS``) read these batch keys (a missing optional key means "all valid" /
"no context"); per-term values in ``total_loss``'s second output are unweighted:

* ``landmark``: ``landmarks_pred`` [..., L, 2], ``landmarks_target`` [..., L, 2]; optional
  ``landmarks_mask`` [..., L], ``landmark_weights`` [L].
* ``temporal``: ``global_pose`` [T, ..., 3] axis-angle; optional ``frame_mask`` [T, ...] (or [T]),
  ``prev_global_pose`` [K, ..., 3] with ``prev_frame_mask`` [K, ...], ``next_global_pose`` with
  ``next_frame_mask``. Reduced with the reference normalization (``reference_temporal_reduce``).
* ``expression_smooth`` / ``jaw_smooth``: ``expression`` [T, ..., E] / ``jaw_pose`` [T, ..., 3], with
  ``frame_mask`` and ``prev_``/``next_`` context keys as above.
* ``vertex_acceleration``: ``vertices`` [T, ..., N, 3], ``frame_mask``, ``prev_vertices``/``next_vertices``.
* ``multiview``: ``posed_vertices`` [..., Vw, N, 3], ``canonical_vertices`` (same shape), ``faces``
  [F, 3]; optional ``view_mask`` [..., Vw] (default: ``frame_mask``).
* ``shape_prior`` / ``expression_prior`` / ``pose_prior``: ``shape`` / ``expression`` / ``pose``
  (optional per-coefficient weights ``shape_prior_weights`` [S], ... : ``weighted_l2_prior``);
  ``prior`` is the sum of the three.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.geometry import vertex_normals
from flame_jax.rotations import axis_angle_to_matrix, axis_angle_to_quaternion

# ---------------------------------------------------------------------------------------------------
# Reductions and masks


def _as_mask(mask, shape, dtype=jnp.float32, *, leading: bool = False) -> jax.Array:
    """None → ones; bool/float → ``dtype``, broadcast to ``shape``.

    ``leading=True`` aligns a lower-rank mask with the *leading* axes (a [T] frame mask for [T, D]
    values); otherwise numpy's trailing alignment applies.
    """
    if mask is None:
        return jnp.ones(shape, dtype)
    m = jnp.asarray(mask).astype(dtype)
    if leading and m.ndim < len(shape):
        m = m.reshape(m.shape + (1,) * (len(shape) - m.ndim))
    try:
        return jnp.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"mask of shape {m.shape} does not broadcast to shape {tuple(shape)}") from None


def masked_mean(values: jax.Array, mask: jax.Array | None = None, axis=None) -> jax.Array:
    """Σ m·v / Σ m, with 0 where Σ m = 0 and NaN/inf at masked positions ignored.

    Args:
      values: per-element values.
      mask: None (plain mean), or bool/float weights broadcastable to ``values`` (numpy rules:
        index a [T, Vw] mask as ``mask[..., None, None]`` for [T, Vw, N, 3] values).
      axis: axes to reduce (None = all).
    """
    values = jnp.asarray(values)
    m = _as_mask(mask, values.shape, values.dtype if jnp.issubdtype(values.dtype, jnp.floating) else jnp.float32)
    keep = m > 0
    num = jnp.sum(jnp.where(keep, values, 0.0) * m, axis=axis)
    den = jnp.sum(m, axis=axis)
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def masked_sum(values: jax.Array, mask: jax.Array | None = None, axis=None) -> jax.Array:
    """Σ m·v with NaN/inf at masked positions ignored."""
    values = jnp.asarray(values)
    m = _as_mask(mask, values.shape, values.dtype)
    return jnp.sum(jnp.where(m > 0, values, 0.0) * m, axis=axis)


def _clean(x: jax.Array, keep: jax.Array) -> jax.Array:
    """Replaces entries outside ``keep`` (broadcast) with 0 before any arithmetic touches them."""
    return jnp.where(keep, x, jnp.zeros_like(x))


# ---------------------------------------------------------------------------------------------------
# 2D landmarks

#: Per-landmark weights of the reference (released, but off by default), iBUG-68 order (0-based):
#: contour 5–6, 10–11 ×2; nose 27–35 ×1.5; nostrils/tip 30, 31, 35 ×3; mouth 48–67 ×1.5;
#: mouth corners 48, 54 ×3; all others 1.
IBUG68_REFERENCE_WEIGHTS = np.ones(68, np.float32)
IBUG68_REFERENCE_WEIGHTS[[5, 6, 10, 11]] = 2.0
IBUG68_REFERENCE_WEIGHTS[27:36] = 1.5
IBUG68_REFERENCE_WEIGHTS[[30, 31, 35]] = 3.0
IBUG68_REFERENCE_WEIGHTS[48:68] = 1.5
IBUG68_REFERENCE_WEIGHTS[[48, 54]] = 3.0
IBUG68_REFERENCE_WEIGHTS.setflags(write=False)


def landmark_l1(
    pred: jax.Array,
    target: jax.Array,
    mask: jax.Array | None = None,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Per-landmark L1 reprojection error, averaged over the two coordinates.

    ``values = w_k · (|Δx| + |Δy|) / 2``, so ``masked_mean(values, mask)`` is the reference
    Σ m·|π(J) − j|₁ / (2·Σ m) (weights, when given, multiply the numerator only).

    Landmarks whose target is not finite (NaN from a failed detection) are masked automatically.

    Args:
      pred: [..., L, 2] projected model landmarks, normalized crop units.
      target: [..., L, 2] detected landmarks, same units.
      mask: [..., L] visibility/confidence (bool or float in [0, 1]); None = all visible.
      weights: [L] per-landmark weights (e.g. ``IBUG68_REFERENCE_WEIGHTS``); None = 1.

    Returns:
      (values [..., L], mask [..., L] float).
    """
    pred = jnp.asarray(pred)
    target = jnp.asarray(target)
    if pred.ndim < 2 or pred.shape[-1] != 2:
        raise ValueError(f"pred must be [..., L, 2], got shape {pred.shape}")
    shape = jnp.broadcast_shapes(pred.shape, target.shape)
    m = _as_mask(mask, shape[:-1], pred.dtype)
    m = jnp.where(jnp.all(jnp.isfinite(target), -1), m, 0.0)
    keep = (m > 0)[..., None]
    diff = _clean(pred, keep) - _clean(target, keep)
    values = 0.5 * jnp.sum(jnp.abs(diff), -1)
    if weights is not None:
        weights = jnp.asarray(weights, values.dtype)
        if weights.shape != (shape[-2],):
            raise ValueError(f"weights must be [{shape[-2]}], got shape {weights.shape}")
        values = values * weights
    return values, m


# ---------------------------------------------------------------------------------------------------
# Temporal terms (time = axis 0)

#: The reference window: target at frame t is the mean over frames t−2, t−1, t, t+1.
REFERENCE_WINDOW = (-2, -1, 0, 1)


def _frame_mask(mask, x: jax.Array, event_ndim: int) -> jax.Array:
    """A [T, ...] float frame mask for x [T, ..., *event] (None → ones), NaN frames masked."""
    batch_shape = x.shape[: x.ndim - event_ndim]
    m = _as_mask(mask, batch_shape, jnp.float32, leading=True)
    finite = jnp.all(jnp.isfinite(x), axis=tuple(range(x.ndim - event_ndim, x.ndim))) if event_ndim else jnp.isfinite(x)
    return jnp.where(finite, m, 0.0)


def _with_context(x, mask, prev, prev_mask, nxt, next_mask, event_ndim):
    """Concatenates fixed (stop-gradient) context frames around the chunk along axis 0.

    Returns (x_ext, valid_ext, start) where the chunk occupies ``x_ext[start:start + T]``.
    """
    seq, valid, start = [], [], 0
    for which, ctx, cmask in (("prev_context", prev, prev_mask), (None, None, None), ("next_context", nxt, next_mask)):
        if which is None:
            seq.append(x)
            valid.append(mask)
            continue
        if ctx is None:
            continue
        c = jax.lax.stop_gradient(jnp.asarray(ctx, x.dtype))
        if c.ndim != x.ndim or c.shape[1:] != x.shape[1:]:
            raise ValueError(f"{which} must be [K, {', '.join(map(str, x.shape[1:]))}], got shape {c.shape}")
        seq.append(c)
        valid.append(_frame_mask(cmask, c, event_ndim))
        if which == "prev_context":
            start = c.shape[0]
    return jnp.concatenate(seq, 0), jnp.concatenate(valid, 0), start


def _shift(a: jax.Array, offset: int, fill) -> jax.Array:
    """out[t] = a[t + offset] along axis 0, ``fill`` outside the sequence."""
    if offset == 0:
        return a
    n = a.shape[0]
    pad = [(0, 0)] * a.ndim
    if offset > 0:
        pad[0] = (0, offset)
        return jnp.pad(a, pad, constant_values=fill)[offset : offset + n]
    pad[0] = (-offset, 0)
    return jnp.pad(a, pad, constant_values=fill)[:n]


def _window_target(x_ext, valid_ext, window, event_ndim, align_sign=False):
    """Masked window means and the interior flag over an extended sequence.

    Frame t is *interior* when it is valid and there are valid frames at or before t + min(window)
    and at or after t + max(window) + 1 — the reference's rule (2 ≤ t < T − 2 for the window
    (−2, −1, 0, 1)) written in terms of valid frames, so padded tails and masked frames behave like
    the end of the sequence. Masked frames inside a window are left out of the mean.
    """
    lo, hi = min(window), max(window) + 1
    v = valid_ext > 0
    vi = v.astype(jnp.int32)
    seen_before = jax.lax.cummax(vi, axis=0) > 0  # a valid frame at index ≤ t
    seen_after = jax.lax.cummax(vi, axis=0, reverse=True) > 0  # … at index ≥ t
    interior = v & _shift(seen_before, lo, False) & _shift(seen_after, hi, False)

    ev = (slice(None),) * valid_ext.ndim + (None,) * event_ndim
    x_clean = _clean(x_ext, v[ev])
    total = jnp.zeros_like(x_clean)
    count = jnp.zeros(valid_ext.shape, x_clean.dtype)
    for o in window:
        xo = _shift(x_clean, o, 0.0)
        vo = _shift(v, o, False)
        if align_sign:
            # q and −q are the same rotation: bring window members to q_t's hemisphere.
            sign = jnp.where(jnp.sum(xo * x_clean, -1, keepdims=True) < 0, -1.0, 1.0)
            xo = xo * jax.lax.stop_gradient(sign)
        total = total + jnp.where(vo[ev], xo, 0.0)
        count = count + vo.astype(x_clean.dtype)
    mean = total / jnp.maximum(count, 1.0)[ev]
    return mean, interior, x_clean


def quaternion_moving_average(
    quaternions: jax.Array,
    mask: jax.Array | None = None,
    *,
    prev_context: jax.Array | None = None,
    prev_mask: jax.Array | None = None,
    next_context: jax.Array | None = None,
    next_mask: jax.Array | None = None,
    window: tuple[int, ...] = REFERENCE_WINDOW,
) -> jax.Array:
    """The paper's smoothed rotation target q̂ (per frame; equal to q at borders and masked frames).

    q̂_t = normalize(mean of the valid q in the window) for interior frames t, q̂_t = q_t
    otherwise (see ``_window_target`` for "interior"). Window members are first flipped to q_t's
    hemisphere (a no-op for w ≥ 0 quaternions of head rotations below 180°).

    Args:
      quaternions: [T, ..., 4] unit quaternions (w, x, y, z).
      mask: [T, ...] frame validity; None = all valid.
      prev_context, next_context: [K, ..., 4] fixed frames of the previous/next chunk (no gradient),
        so windows cross chunk borders. ``prev_mask``/``next_mask``: their validity.
      window: frame offsets averaged (reference: (−2, −1, 0, 1)).

    Returns:
      [T, ..., 4] targets (with gradient through q; apply ``stop_gradient`` for the paper's EM view).
    """
    q = jnp.asarray(quaternions)
    if q.ndim < 1 or q.shape[-1] != 4:
        raise ValueError(f"quaternions must be [T, ..., 4], got shape {q.shape}")
    m = _frame_mask(mask, q, 1)
    q_ext, v_ext, start = _with_context(q, m, prev_context, prev_mask, next_context, next_mask, 1)
    mean, interior, q_clean = _window_target(q_ext, v_ext, window, 1, align_sign=True)
    # Safe norm: a window with no valid member has mean 0 (its target is not used, but its
    # gradient must stay finite).
    smoothed = mean / jnp.sqrt(jnp.maximum(jnp.sum(mean * mean, -1, keepdims=True), 1e-24))
    target = jnp.where(interior[..., None], smoothed, q_clean)
    return target[start : start + q.shape[0]]


def temporal_rotation(
    global_pose: jax.Array,
    mask: jax.Array | None = None,
    *,
    prev_context: jax.Array | None = None,
    prev_mask: jax.Array | None = None,
    next_context: jax.Array | None = None,
    next_mask: jax.Array | None = None,
    stop_gradient_target: bool = False,
    window: tuple[int, ...] = REFERENCE_WINDOW,
) -> tuple[jax.Array, jax.Array]:
    """Temporal loss on the head rotation: (q − q̂)² per quaternion component.

    Args:
      global_pose: [T, ..., 3] head rotation per frame (and view), axis-angle.
      mask: [T, ...] frame validity (padding, failed detections); None = all valid. A masked frame
        contributes nothing and is left out of its neighbours' windows.
      prev_context, next_context: [K, ..., 3] axis-angle of fixed neighbouring-chunk frames.
      prev_mask, next_mask: [K, ...] their validity.
      stop_gradient_target: the paper's fixed target (EM); default False follows the released code
        (gradients flow through q̂).
      window: offsets of the moving average.

    Returns:
      (values [T, ..., 4], mask [T, ..., 4]). ``reference_temporal_reduce`` gives the reference
      normalization Σ_views (1/(4T)) Σ_t Σ_c.
    """
    r = jnp.asarray(global_pose)
    if r.ndim < 2 or r.shape[-1] != 3:
        raise ValueError(f"global_pose must be [T, ..., 3], got shape {r.shape}")
    m = _frame_mask(mask, r, 1)
    keep = (m > 0)[..., None]
    q = axis_angle_to_quaternion(_clean(r, keep))

    def ctx(c):
        if c is None:
            return None
        c = jnp.asarray(c)
        return axis_angle_to_quaternion(jnp.where(jnp.isfinite(c), c, 0.0))

    def ctx_mask(c, cm):
        if c is None:
            return None
        return _frame_mask(cm, jnp.asarray(c), 1)

    target = quaternion_moving_average(
        q,
        m,
        prev_context=ctx(prev_context),
        prev_mask=ctx_mask(prev_context, prev_mask),
        next_context=ctx(next_context),
        next_mask=ctx_mask(next_context, next_mask),
        window=window,
    )
    if stop_gradient_target:
        target = jax.lax.stop_gradient(target)
    values = jnp.where(keep, (q - target) ** 2, 0.0)
    return values, jnp.broadcast_to(m[..., None], values.shape)


def temporal_moving_average(
    x: jax.Array,
    mask: jax.Array | None = None,
    *,
    prev_context: jax.Array | None = None,
    prev_mask: jax.Array | None = None,
    next_context: jax.Array | None = None,
    next_mask: jax.Array | None = None,
    stop_gradient_target: bool = False,
    window: tuple[int, ...] = REFERENCE_WINDOW,
    event_ndim: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """(x − x̂)² with x̂ the masked moving average of x over ``window`` (an extension: the reference
    smooths only the head rotation). Use it for expression, jaw pose, camera…

    Same border, mask and context rules as ``temporal_rotation`` (x̂ = x at borders), without the
    normalization.

    Args:
      x: [T, ..., *event] per-frame vectors (``event_ndim`` trailing axes form one element, e.g. 1
        for [T, Vw, 50] expressions, 2 for [T, Vw, N, 3] vertices).
      mask: [T, ...] frame validity.

    Returns:
      (values, mask), both shaped like ``x``.
    """
    x = jnp.asarray(x)
    if x.ndim < 1 + event_ndim:
        raise ValueError(f"x must have a time axis and {event_ndim} event axes, got shape {x.shape}")
    m = _frame_mask(mask, x, event_ndim)
    x_ext, v_ext, start = _with_context(x, m, prev_context, prev_mask, next_context, next_mask, event_ndim)
    mean, interior, x_clean = _window_target(x_ext, v_ext, window, event_ndim)
    ev = (...,) + (None,) * event_ndim
    target = jnp.where(interior[ev], mean, x_clean)[start : start + x.shape[0]]
    if stop_gradient_target:
        target = jax.lax.stop_gradient(target)
    values = (x_clean[start : start + x.shape[0]] - target) ** 2
    return values, jnp.broadcast_to(m[ev], values.shape)


def temporal_acceleration(
    x: jax.Array,
    mask: jax.Array | None = None,
    *,
    prev_context: jax.Array | None = None,
    prev_mask: jax.Array | None = None,
    next_context: jax.Array | None = None,
    next_mask: jax.Array | None = None,
    event_ndim: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """Squared second differences a_t = x_{t+1} − 2x_t + x_{t−1} (jitter; e.g. vertex acceleration).

    a_t is defined (mask 1) only when frames t−1, t, t+1 are all valid; context frames (fixed)
    let the first/last frames of a chunk have an acceleration too.

    Args:
      x: [T, ..., *event], e.g. [T, Vw, N, 3] vertices with ``event_ndim=2``.
      mask: [T, ...] frame validity.

    Returns:
      (values, mask), shaped like ``x``; values are a² per element (metres²/frame⁴ for vertices).
    """
    x = jnp.asarray(x)
    if x.ndim < 1 + event_ndim:
        raise ValueError(f"x must have a time axis and {event_ndim} event axes, got shape {x.shape}")
    m = _frame_mask(mask, x, event_ndim)
    x_ext, v_ext, start = _with_context(x, m, prev_context, prev_mask, next_context, next_mask, event_ndim)
    v = v_ext > 0
    ev = (...,) + (None,) * event_ndim
    xc = _clean(x_ext, v[ev])
    acc = _shift(xc, 1, 0.0) - 2.0 * xc + _shift(xc, -1, 0.0)
    ok = v & _shift(v, 1, False) & _shift(v, -1, False)
    acc = jnp.where(ok[ev], acc, 0.0)[start : start + x.shape[0]]
    ok = ok[start : start + x.shape[0]].astype(x.dtype)
    return acc**2, jnp.broadcast_to(ok[ev], acc.shape)


def reference_temporal_reduce(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The reference normalization Σ_v (1/(4T)) Σ_t Σ_c for values [T, ..., 4]:

    a masked mean over time and components for every other index (view), summed over those.
    With masks T is the number of valid frames of that view; a view without valid frames adds 0.
    """
    values = jnp.asarray(values)
    per_view = masked_mean(values, mask, axis=(0, values.ndim - 1))
    return jnp.sum(per_view)


# ---------------------------------------------------------------------------------------------------
# Multi-view bootstrapping

DEFAULT_VISIBILITY_THRESHOLD = 0.28
DEFAULT_DEPTH_THRESHOLD = -0.08
DEFAULT_VIEW_TEMPERATURE = 0.1
_INVISIBLE_LOGIT = -1000.0
#: Norm floor of the vertex normals of the visibility score (meshes in metres).
_NORMAL_EPS = 1e-6


def visibility_scores(
    posed_vertices: jax.Array,
    faces,
    *,
    visibility_threshold: float = DEFAULT_VISIBILITY_THRESHOLD,
    depth_threshold: float = DEFAULT_DEPTH_THRESHOLD,
) -> jax.Array:
    """s = n·(0, 0, 1) where that is ≥ ``visibility_threshold`` and z ≥ ``depth_threshold``, else 0.

    Args:
      posed_vertices: [..., N, 3] posed mesh (camera looks along −z; z toward the camera), metres.
      faces: [F, 3].

    Returns:
      [..., N] visibility scores (0 = not visible).
    """
    posed_vertices = jnp.asarray(posed_vertices)
    c = vertex_normals(posed_vertices, faces, eps=_NORMAL_EPS)[..., 2]
    visible = (c >= visibility_threshold) & (posed_vertices[..., 2] >= depth_threshold)
    return jnp.where(visible, c, 0.0)


def view_weights(
    scores: jax.Array,
    view_mask: jax.Array | None = None,
    *,
    temperature: float = DEFAULT_VIEW_TEMPERATURE,
) -> jax.Array:
    """Per-vertex softmax over views of s / temperature, invisible (s = 0) entries at logit −1000.

    A vertex invisible in every view gets uniform weights over the valid views; invalid views
    (``view_mask`` 0) get weight 0; if no view is valid every weight is 0.

    Args:
      scores: [..., Vw, N] visibility scores (``visibility_scores``).
      view_mask: [..., Vw] view validity (missing view, invalid frame); None = all valid.

    Returns:
      [..., Vw, N] weights summing to 1 over views (or all 0).
    """
    scores = jnp.asarray(scores)
    if scores.ndim < 2:
        raise ValueError(f"scores must be [..., Vw, N], got shape {scores.shape}")
    vm = _as_mask(view_mask, scores.shape[:-1])[..., None] > 0
    vm = jnp.broadcast_to(vm, scores.shape)
    s = _clean(scores, vm)
    logits = jnp.where(s > 0, s / temperature, _INVISIBLE_LOGIT)
    top = jnp.max(jnp.where(vm, logits, -jnp.inf), axis=-2, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    e = jnp.where(vm, jnp.exp(jnp.where(vm, logits, top) - top), 0.0)
    z = jnp.sum(e, axis=-2, keepdims=True)
    return e / jnp.where(z > 0, z, 1.0)


def _masked_median(x: jax.Array, member: jax.Array, axis: int) -> jax.Array:
    """Median over ``axis`` of the entries where ``member`` (mean of the two middles for even counts)."""
    big = jnp.asarray(jnp.finfo(x.dtype).max, x.dtype)
    xs = jnp.sort(jnp.where(member, x, big), axis=axis)
    k = jnp.sum(member, axis=axis, keepdims=True)
    lo = jnp.clip((k - 1) // 2, 0, None)
    hi = jnp.clip(k // 2, 0, x.shape[axis] - 1)
    a = jnp.take_along_axis(xs, lo, axis=axis)
    b = jnp.take_along_axis(xs, hi, axis=axis)
    med = jnp.where(k > 0, 0.5 * (a + b), 0.0)
    return jnp.squeeze(med, axis=axis)


def merge_views(
    canonical_vertices: jax.Array,
    weights: jax.Array,
    view_mask: jax.Array | None = None,
    *,
    merge: str = "softmax",
    scores: jax.Array | None = None,
) -> jax.Array:
    """Merged pseudo-ground-truth Ĉ from the canonical meshes of all views.

    Args:
      canonical_vertices: [..., Vw, N, 3] per-view meshes with the head rotation removed.
      weights: [..., Vw, N] from ``view_weights``.
      view_mask: [..., Vw] view validity.
      merge: "softmax" (Σ_v w C, the reference) or "median" (per-coordinate median over the valid
        views in which the vertex is visible — ``scores`` > 0 — or over all valid views when it is
        visible in none).
      scores: [..., Vw, N] visibility scores, needed by "median" (without them every valid view
        takes part).

    Returns:
      [..., N, 3].
    """
    c = jnp.asarray(canonical_vertices)
    vm = _as_mask(view_mask, c.shape[:-2])[..., None, None] > 0
    c = _clean(c, vm)
    if merge == "softmax":
        return jnp.sum(weights[..., None] * c, axis=-3)
    if merge == "median":
        valid = jnp.broadcast_to(vm[..., 0], c.shape[:-1])
        vis = valid if scores is None else valid & (jnp.asarray(scores) > 0)
        member = jnp.where(jnp.any(vis, axis=-2, keepdims=True), vis, valid)[..., None]
        return _masked_median(c, jnp.broadcast_to(member, c.shape), axis=-3)
    raise ValueError(f"merge must be 'softmax' or 'median', got {merge!r}")


def multiview_l1(
    posed_vertices: jax.Array,
    canonical_vertices: jax.Array,
    faces,
    view_mask: jax.Array | None = None,
    *,
    visibility_threshold: float = DEFAULT_VISIBILITY_THRESHOLD,
    depth_threshold: float = DEFAULT_DEPTH_THRESHOLD,
    temperature: float = DEFAULT_VIEW_TEMPERATURE,
    stop_gradient_target: bool = False,
    merge: str = "softmax",
) -> tuple[jax.Array, jax.Array]:
    """Multi-view bootstrapping loss |Ĉ − C| per frame, view, vertex and coordinate.

    Steps (docs/method_notes.md): visibility of every vertex in its own view from the posed mesh M's
    normals and depth; per-vertex softmax over views (temperature 0.1); merged canonical mesh Ĉ;
    L1 of each view's canonical mesh C to Ĉ.

    Args:
      posed_vertices: [..., Vw, N, 3] posed meshes M (as seen by each view's camera), metres.
      canonical_vertices: [..., Vw, N, 3] the same meshes with the head rotation zeroed.
      faces: [F, 3].
      view_mask: [..., Vw] validity (missing view / invalid frame → excluded from the softmax and
        the loss; a frame with no valid view contributes nothing).
      stop_gradient_target: fixed Ĉ (paper); default False follows the released code.
      merge: "softmax" (reference) or "median".

    Returns:
      (values [..., Vw, N, 3], mask of the same shape).
    """
    m_ = jnp.asarray(posed_vertices)
    c = jnp.asarray(canonical_vertices)
    if m_.shape != c.shape or m_.ndim < 3 or m_.shape[-1] != 3:
        raise ValueError(
            f"posed and canonical vertices must both be [..., Vw, N, 3], got {m_.shape} and {c.shape}"
        )
    vm = _as_mask(view_mask, m_.shape[:-2], leading=True)
    finite = jnp.all(jnp.isfinite(m_), (-2, -1)) & jnp.all(jnp.isfinite(c), (-2, -1))
    vm = jnp.where(finite, vm, 0.0)
    keep = (vm > 0)[..., None, None]
    m_ = _clean(m_, keep)
    c = _clean(c, keep)
    scores = visibility_scores(
        m_, faces, visibility_threshold=visibility_threshold, depth_threshold=depth_threshold
    )
    w = view_weights(scores, vm, temperature=temperature)
    target = merge_views(c, w, vm, merge=merge, scores=scores)
    if stop_gradient_target:
        target = jax.lax.stop_gradient(target)
    values = jnp.abs(target[..., None, :, :] - c)
    return values, jnp.broadcast_to(vm[..., None, None], values.shape)


def canonical_vertices(vertices: jax.Array, global_pose: jax.Array, root_joint: jax.Array) -> jax.Array:
    """Removes the head rotation: Rᵀ(M − J₀) + J₀.

    Args:
      vertices: [..., N, 3] posed vertices.
      global_pose: [..., 3] head rotation, axis-angle.
      root_joint: [..., 3] posed root joint J₀ (the rotation centre).

    Returns:
      [..., N, 3]. Equals FLAME evaluated with a zero global rotation.
    """
    r = axis_angle_to_matrix(jnp.asarray(global_pose))
    j0 = jnp.asarray(root_joint)[..., None, :]
    # Row vectors: (Rᵀ p)ᵀ = pᵀ R.
    return jnp.einsum("...ni,...ij->...nj", jnp.asarray(vertices) - j0, r) + j0


def sample_frames(key: jax.Array, frame_mask: jax.Array, num: int = 5) -> tuple[jax.Array, jax.Array]:
    """Random frames for the multi-view loss (the reference uses 5 per chunk), valid frames first.

    Args:
      key: a ``jax.random.key``.
      frame_mask: [T] validity.
      num: frames to draw (static; clipped to T).

    Returns:
      (indices [num'] int32, sample_mask [num'] float): distinct indices, valid frames preferred;
      ``sample_mask`` marks indices that point at valid frames (fewer than ``num`` valid → some 0).
    """
    fm = jnp.asarray(frame_mask) > 0
    n = min(int(num), fm.shape[0])
    u = jax.random.uniform(key, fm.shape)
    order = jnp.argsort(jnp.where(fm, u, 2.0 + u))
    idx = order[:n].astype(jnp.int32)
    return idx, fm[idx].astype(jnp.float32)


# ---------------------------------------------------------------------------------------------------
# Priors (direct-optimization baseline)


def l2_prior(x: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """x² per element; ``mask`` covers leading dimensions (e.g. a [T] frame mask for [T, D])."""
    x = jnp.asarray(x)
    m = _as_mask(mask, x.shape, x.dtype, leading=True)
    m = jnp.where(jnp.isfinite(x), m, 0.0)
    xc = _clean(x, m > 0)
    return xc * xc, m


# ---------------------------------------------------------------------------------------------------
# Composition

TermFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class LossTerm:
    """One weighted term: ``fn(batch, **options)`` → scalar or ``(values, mask)``.

    ``fn`` may also be the name of a registered term.
    """

    fn: TermFn | str
    weight: float = 1.0
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _get(batch: Mapping[str, Any], key: str, term: str):
    try:
        return batch[key]
    except KeyError:
        raise KeyError(f"loss term {term!r} needs batch[{key!r}]; batch has {sorted(batch)}") from None


def landmark_term(batch, *, weights=None):
    """Builtin "landmark": reference L_lmk."""
    w = weights if weights is not None else batch.get("landmark_weights")
    return landmark_l1(
        _get(batch, "landmarks_pred", "landmark"),
        _get(batch, "landmarks_target", "landmark"),
        batch.get("landmarks_mask"),
        w,
    )


def temporal_term(batch, *, stop_gradient_target=False, window=REFERENCE_WINDOW, reference_normalization=True):
    """Builtin "temporal": quaternion moving average on ``global_pose`` [T, ..., 3].

    Reduced with ``reference_temporal_reduce`` (summed over views) unless
    ``reference_normalization=False`` (plain masked mean).
    """
    values, mask = temporal_rotation(
        _get(batch, "global_pose", "temporal"),
        batch.get("frame_mask"),
        prev_context=batch.get("prev_global_pose"),
        prev_mask=batch.get("prev_frame_mask"),
        next_context=batch.get("next_global_pose"),
        next_mask=batch.get("next_frame_mask"),
        stop_gradient_target=stop_gradient_target,
        window=window,
    )
    if reference_normalization:
        return reference_temporal_reduce(values, mask)
    return values, mask


def _smooth_term(key: str, name: str, event_ndim: int):
    def term(batch, *, stop_gradient_target=False, window=REFERENCE_WINDOW):
        return temporal_moving_average(
            _get(batch, key, name),
            batch.get("frame_mask"),
            prev_context=batch.get("prev_" + key),
            prev_mask=batch.get("prev_frame_mask"),
            next_context=batch.get("next_" + key),
            next_mask=batch.get("next_frame_mask"),
            stop_gradient_target=stop_gradient_target,
            window=window,
            event_ndim=event_ndim,
        )

    term.__name__ = f"{name}_term"
    term.__doc__ = f'Builtin "{name}": moving-average residual of batch["{key}"] [T, ...].'
    return term


expression_smooth_term = _smooth_term("expression", "expression_smooth", 1)
jaw_smooth_term = _smooth_term("jaw_pose", "jaw_smooth", 1)


def vertex_acceleration_term(batch):
    """Builtin "vertex_acceleration": squared second differences of ``vertices`` [T, ..., N, 3]."""
    return temporal_acceleration(
        _get(batch, "vertices", "vertex_acceleration"),
        batch.get("frame_mask"),
        prev_context=batch.get("prev_vertices"),
        prev_mask=batch.get("prev_frame_mask"),
        next_context=batch.get("next_vertices"),
        next_mask=batch.get("next_frame_mask"),
        event_ndim=2,
    )


def multiview_term(batch, **options):
    """Builtin "multiview": ``multiview_l1`` (options: thresholds, temperature, stop_gradient_target, merge)."""
    return multiview_l1(
        _get(batch, "posed_vertices", "multiview"),
        _get(batch, "canonical_vertices", "multiview"),
        _get(batch, "faces", "multiview"),
        batch.get("view_mask", batch.get("frame_mask")),
        **options,
    )


def weighted_l2_prior(x: jax.Array, weights=None, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``l2_prior`` with per-coefficient weights ``w`` [D] over the last axis, scaled so the masked mean
    is ``Σ_i w_i x_i²`` per leading index (``w = 1/D`` each: the plain mean of squares). A model file
    can record such weights for its identity coefficients (``flame_jax.load_shape_prior``)."""
    values, m = l2_prior(x, mask)
    if weights is None:
        return values, m
    return values * (jnp.asarray(weights, values.dtype) * values.shape[-1]), m


def _prior_term(key: str):
    def term(batch):
        mask = batch.get("frame_mask")
        x = _get(batch, key, f"{key}_prior")
        if mask is not None and jnp.ndim(mask) >= jnp.ndim(x):
            mask = None  # a frame mask cannot describe a per-clip quantity (shape)
        return weighted_l2_prior(x, batch.get(f"{key}_prior_weights"), mask)

    term.__name__ = f"{key}_prior_term"
    term.__doc__ = f'Builtin "{key}_prior": L2 on batch["{key}"] (per-coefficient weights batch["{key}_prior_weights"] when given).'
    return term


shape_prior_term = _prior_term("shape")
expression_prior_term = _prior_term("expression")
pose_prior_term = _prior_term("pose")


def prior_term(batch):
    """Builtin "prior": the sum of the shape, expression and pose L2 priors (each a masked mean)."""
    return sum(_reduce(t(batch)) for t in (shape_prior_term, expression_prior_term, pose_prior_term))


#: Named terms usable in a loss config by name. Extend with ``register_term`` or pass your own
#: ``registry`` to ``total_loss``.
BUILTIN_TERMS: dict[str, TermFn] = {
    "landmark": landmark_term,
    "temporal": temporal_term,
    "expression_smooth": expression_smooth_term,
    "jaw_smooth": jaw_smooth_term,
    "vertex_acceleration": vertex_acceleration_term,
    "multiview": multiview_term,
    "shape_prior": shape_prior_term,
    "expression_prior": expression_prior_term,
    "pose_prior": pose_prior_term,
    "prior": prior_term,
}

#: Terms registered by a higher layer when it is imported (named in the unknown-term error).
_TERM_PROVIDERS = {"photometric": "neuface_jax.photometric", "silhouette": "neuface_jax.photometric",
                   "face_oval": "neuface_jax.photometric"}

#: Terms that read the crops themselves (``batch["images"]``).
IMAGE_TERMS = frozenset({"photometric", "silhouette", "face_oval"})


def uses_images(config: Mapping[str, Any]) -> bool:
    """Whether a loss config names a term that reads the crops (by its name or its term's name)."""
    for name, spec in config.items():
        fn = spec.fn if isinstance(spec, LossTerm) else spec[0] if isinstance(spec, (tuple, list)) and spec else name
        weight = spec if isinstance(spec, (int, float)) else 1.0
        if weight and (name in IMAGE_TERMS or (isinstance(fn, str) and fn in IMAGE_TERMS)):
            return True
    return False


#: The released code's loss: 10·L_lmk + 100·L_temp + 200·L_mv.
REFERENCE_LOSS_CONFIG: dict[str, float] = {"landmark": 10.0, "temporal": 100.0, "multiview": 200.0}


class FrozenDict(dict):
    """An immutable, hashable dict: a loss config that can live in a frozen, hashable config.

    A ``dict`` subclass, so ``json``, ``dataclasses.asdict`` and ``dict(...)`` treat it as a dict and
    its ``repr`` is a dict's. Two frozen dicts are equal when their items are equal *in order*
    (term order fixes the order of the per-term statistics a compiled step returns); against a
    plain dict, equality is a dict's.
    """

    def __hash__(self):
        return hash(tuple(self.items()))

    def __eq__(self, other):
        if isinstance(other, FrozenDict):
            return tuple(self.items()) == tuple(other.items())
        return dict.__eq__(self, other)

    def __ne__(self, other):
        return not self == other

    def _immutable(self, *args, **kwargs):
        raise TypeError("FrozenDict is immutable; build a new one (e.g. FrozenDict({**d, key: value}))")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = __ior__ = _immutable

    def __reduce__(self):
        return (FrozenDict, (dict(self),))


def freeze(value):
    """A hashable copy of a loss-config value: mappings → ``FrozenDict``, lists/tuples → tuples,
    ``LossTerm`` options frozen; numbers, strings and callables as they are."""
    if isinstance(value, LossTerm):
        return dataclasses.replace(value, options=freeze(value.options))
    if isinstance(value, Mapping):
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def register_term(name: str, fn: TermFn, *, registry: dict[str, TermFn] | None = None, overwrite: bool = False) -> None:
    """Adds a named term to ``registry`` (default ``BUILTIN_TERMS``)."""
    registry = BUILTIN_TERMS if registry is None else registry
    if name in registry and not overwrite:
        raise ValueError(f"loss term {name!r} is already registered (pass overwrite=True)")
    registry[name] = fn


def resolve_terms(config: Mapping[str, Any], registry: Mapping[str, TermFn] | None = None) -> dict[str, LossTerm]:
    """Normalizes a loss config into ``{name: LossTerm}`` with callables.

    Accepted values per name: a number (the registered term of that name with that weight);
    ``(fn_or_name, weight)``; ``(fn_or_name, weight, options)``; a ``LossTerm``.
    """
    registry = BUILTIN_TERMS if registry is None else registry
    out = {}
    for name, spec in config.items():
        if isinstance(spec, LossTerm):
            term = spec
        elif isinstance(spec, (int, float)) and not isinstance(spec, bool):
            term = LossTerm(name, float(spec))
        elif isinstance(spec, (tuple, list)) and len(spec) in (2, 3):
            term = LossTerm(spec[0], float(spec[1]), dict(spec[2]) if len(spec) == 3 else {})
        else:
            raise ValueError(
                f"loss term {name!r}: expected a weight, (fn, weight), (fn, weight, options) or LossTerm, got {spec!r}"
            )
        fn = term.fn
        if isinstance(fn, str):
            if fn not in registry:
                hint = _TERM_PROVIDERS.get(fn)
                hint = f" (import {hint} to register it)" if hint else ""
                raise ValueError(f"unknown loss term {fn!r}{hint}; registered: {sorted(registry)}")
            fn = registry[fn]
        if not callable(fn):
            raise ValueError(f"loss term {name!r}: {fn!r} is not callable")
        out[name] = LossTerm(fn, term.weight, dict(term.options))
    return out


def _reduce(result) -> jax.Array:
    if isinstance(result, tuple):
        if len(result) != 2:
            raise ValueError("a loss term must return a scalar or (values, mask)")
        return masked_mean(result[0], result[1])
    result = jnp.asarray(result)
    if result.ndim != 0:
        raise ValueError(f"a loss term returned an array of shape {result.shape}; return a scalar or (values, mask)")
    return result


def total_loss(
    config: Mapping[str, Any], batch: Mapping[str, Any], *, registry: Mapping[str, TermFn] | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted sum of the configured terms.

    Args:
      config: ``{name: weight | (fn_or_name, weight[, options]) | LossTerm}`` (see module docs).
      batch: everything the terms read (predictions, targets, masks).
      registry: named terms (default ``BUILTIN_TERMS``).

    Returns:
      (total scalar, {name: unweighted scalar}). Terms with weight 0 are skipped (not evaluated).
    """
    terms = resolve_terms(config, registry)
    total = jnp.zeros((), jnp.float32)
    parts = {}
    for name, term in terms.items():
        if term.weight == 0.0:
            continue
        value = _reduce(term.fn(batch, **term.options))
        parts[name] = value
        total = total + term.weight * value
    return total, parts


__all__ = [
    "BUILTIN_TERMS",
    "FrozenDict",
    "IBUG68_REFERENCE_WEIGHTS",
    "LossTerm",
    "REFERENCE_LOSS_CONFIG",
    "REFERENCE_WINDOW",
    "canonical_vertices",
    "freeze",
    "l2_prior",
    "weighted_l2_prior",
    "landmark_l1",
    "masked_mean",
    "masked_sum",
    "merge_views",
    "multiview_l1",
    "quaternion_moving_average",
    "reference_temporal_reduce",
    "register_term",
    "resolve_terms",
    "sample_frames",
    "temporal_acceleration",
    "temporal_moving_average",
    "temporal_rotation",
    "total_loss",
    "vertex_normals",
    "view_weights",
    "visibility_scores",
]
