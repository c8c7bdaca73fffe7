"""DECA's weak-perspective camera and the maps between crop and image pixels.

Coordinate frames:

* **FLAME / model frame**: metres, x to the subject's left (image right), y up, z toward the camera.
* **Normalized crop coordinates**: the square face crop spans [-1, 1] in both axes, x to the right, y
  *down* (image convention). ``project`` lands here.
* **Crop pixels**: ``pixel = (p + 1) · size / 2`` (so -1 is the crop's left/top edge and +1 its
  right/bottom edge; 224 pixels at the reference crop size).
* **Original-image pixels**: the frame the crop was cut from. A crop transform is a 2×3 affine matrix
  ``M`` mapping original pixels to crop pixels (``crop = M[:, :2] @ orig + M[:, 2]``), as used by an
  image warp.

Every function is written for one example and broadcasts over leading batch dimensions (frames,
views, clips), so ``jax.vmap`` is never required. The crop maths (``normalized_to_pixels``,
``pixels_to_normalized``, ``check_affine``, ``invert_affine``, ``apply_affine``) take ``xp``, the array
module: ``jax.numpy`` (default, traced code) or ``numpy`` (host preprocessing in float64,
``neuface_jax.media.crops``), so both use this one implementation.
"""

from __future__ import annotations

from types import ModuleType

import jax
import jax.numpy as jnp


def project(points: jax.Array, cam: jax.Array) -> jax.Array:
    """Weak-perspective projection of DECA: ``p_x = s·(X + t_x)``, ``p_y = −s·(Y + t_y)``.

    The y flip turns the model's y-up into the image's y-down; depth is ignored.

    Args:
      points: [..., N, 3] points in the model frame, metres.
      cam: [..., 3] camera ``(s, t_x, t_y)``; ``s`` in normalized crop units per metre, ``t`` in
        metres. Leading dimensions broadcast against those of ``points``.

    Returns:
      [..., N, 2] normalized crop coordinates.
    """
    points = jnp.asarray(points)
    cam = jnp.asarray(cam)
    if points.ndim < 2 or points.shape[-1] != 3:
        raise ValueError(f"points must be [..., N, 3], got shape {points.shape}")
    if cam.ndim < 1 or cam.shape[-1] != 3:
        raise ValueError(f"cam must be [..., 3], got shape {cam.shape}")
    s = cam[..., None, 0:1]
    t = cam[..., None, 1:3]
    xy = s * (points[..., :2] + t)
    return xy * jnp.asarray([1.0, -1.0], xy.dtype)


def normalized_to_pixels(p: jax.Array, size, *, xp: ModuleType = jnp) -> jax.Array:
    """Normalized crop coordinates [-1, 1] → crop pixels: ``(p + 1) · size / 2``.

    Args:
      p: [..., 2] normalized coordinates (x, y).
      size: crop side in pixels, a scalar, or ``(width, height)`` broadcastable to [..., 2].
    """
    p = xp.asarray(p)
    return (p + 1.0) * (xp.asarray(size, p.dtype) / 2.0)


def pixels_to_normalized(px: jax.Array, size, *, xp: ModuleType = jnp) -> jax.Array:
    """Crop pixels → normalized crop coordinates: ``px · 2 / size − 1`` (inverse of the above)."""
    px = xp.asarray(px)
    return px * (2.0 / xp.asarray(size, px.dtype)) - 1.0


def check_affine(m: jax.Array, *, xp: ModuleType = jnp) -> jax.Array:
    """``m`` as an array of 2×3 affine maps ``[..., 2, 3]`` (ValueError otherwise)."""
    m = xp.asarray(m)
    if m.ndim < 2 or m.shape[-2:] != (2, 3):
        raise ValueError(f"crop transform must be [..., 2, 3], got shape {m.shape}")
    return m


def invert_affine(m: jax.Array, *, xp: ModuleType = jnp) -> jax.Array:
    """Inverse of a 2×3 affine map: [..., 2, 3] → [..., 2, 3].

    ``y = A x + b`` ⇒ ``x = A⁻¹ y − A⁻¹ b``. Computed in closed form (2×2 adjugate) so it is cheap
    and differentiable.
    """
    m = check_affine(m, xp=xp)
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    inv = xp.stack([xp.stack([d, -b], -1), xp.stack([-c, a], -1)], -2) / det[..., None, None]
    t = -xp.einsum("...ij,...j->...i", inv, m[..., :, 2])
    return xp.concatenate([inv, t[..., None]], -1)


def apply_affine(points: jax.Array, m: jax.Array, *, xp: ModuleType = jnp) -> jax.Array:
    """Applies a 2×3 affine map to points.

    Args:
      points: [..., N, 2].
      m: [..., 2, 3], leading dimensions broadcast against those of ``points``.

    Returns:
      [..., N, 2] mapped points.
    """
    m = check_affine(m, xp=xp)
    points = xp.asarray(points)
    if points.ndim < 2 or points.shape[-1] != 2:
        raise ValueError(f"points must be [..., N, 2], got shape {points.shape}")
    return xp.einsum("...ij,...nj->...ni", m[..., :, :2], points) + m[..., None, :, 2]


def reframe_camera(cam, zoom, shift, *, xp: ModuleType = jnp):
    """The weak-perspective camera ``(s, tx, ty)`` [..., 3] after the normalized crop coordinates it
    projects to are mapped ``q → zoom·q + shift`` (``shift`` [..., 2] as (x, y); image y points down,
    the camera's y up): ``(zoom·s, tx + shift_x/(zoom·s), ty − shift_y/(zoom·s))``. Its inverse is the
    map with ``1/zoom`` and ``−shift/zoom``."""
    s = cam[..., 0] * zoom
    return xp.stack([s, cam[..., 1] + shift[..., 0] / s, cam[..., 2] - shift[..., 1] / s], axis=-1)


def original_to_crop(p_original_px: jax.Array, m: jax.Array) -> jax.Array:
    """Original-image pixels [..., N, 2] → crop pixels through the crop transform ``m`` [..., 2, 3]."""
    return apply_affine(p_original_px, m)


def crop_to_original(p_crop_px: jax.Array, m: jax.Array) -> jax.Array:
    """Crop pixels [..., N, 2] → original-image pixels, inverting the crop transform.

    Args:
      p_crop_px: [..., N, 2] crop pixels.
      m: [..., 2, 3] affine map from original pixels to crop pixels.
    """
    return apply_affine(p_crop_px, invert_affine(m))


def project_to_original(points: jax.Array, cam: jax.Array, m: jax.Array, crop_size) -> jax.Array:
    """Model-frame points [..., N, 3] → original-image pixels [..., N, 2].

    ``project`` → crop pixels at ``crop_size`` → inverse crop transform ``m`` [..., 2, 3].
    """
    return crop_to_original(normalized_to_pixels(project(points, cam), crop_size), m)
