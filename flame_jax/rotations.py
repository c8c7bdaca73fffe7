"""Rotation representations, written for one rotation and batched by broadcasting.

Every function accepts arbitrary leading batch dimensions (``[..., 3]`` axis-angle,
``[..., 3, 3]`` matrices, ``[..., 4]`` quaternions ``(w, x, y, z)``, ``[..., 6]``
6D) and is differentiable with finite gradients at the identity rotation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_RODRIGUES_EPS = 1e-8


def skew(v: jax.Array) -> jax.Array:
    """[..., 3] → [..., 3, 3] cross-product matrix K with K @ u = v × u."""
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = jnp.zeros_like(x)
    return jnp.stack(
        [
            jnp.stack([zero, -z, y], -1),
            jnp.stack([z, zero, -x], -1),
            jnp.stack([-y, x, zero], -1),
        ],
        -2,
    )


def axis_angle_to_matrix(rotvec: jax.Array) -> jax.Array:
    """Rodrigues' formula, FLAME's convention: [..., 3] axis-angle → [..., 3, 3].

    The angle is ``‖r + 1e-8‖`` (epsilon added per component before the norm), as in
    the reference FLAME implementations, which keeps the gradient finite at r = 0
    while changing outputs by less than float32 resolution.
    """
    rotvec = jnp.asarray(rotvec)
    angle = jnp.linalg.norm(rotvec + _RODRIGUES_EPS, axis=-1, keepdims=True)
    axis = rotvec / angle
    k = skew(axis)
    s = jnp.sin(angle)[..., None]
    c = jnp.cos(angle)[..., None]
    eye = jnp.eye(3, dtype=rotvec.dtype)
    return eye + s * k + (1.0 - c) * (k @ k)


def matrix_to_quaternion(matrix: jax.Array) -> jax.Array:
    """[..., 3, 3] rotation matrix → [..., 4] unit quaternion (w, x, y, z) with w ≥ 0.

    Uses the numerically stable branch (largest of w, x, y, z) selected per element.
    """
    m = jnp.asarray(matrix)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Four candidate quaternions, each exact where its leading component is large.
    q_abs_sq = jnp.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
    )
    q_abs = jnp.sqrt(jnp.maximum(q_abs_sq, 1e-12))
    cands = jnp.stack(
        [
            jnp.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
            jnp.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
            jnp.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
            jnp.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1),
        ],
        -2,
    )
    cands = cands / (2.0 * q_abs[..., None])
    best = jnp.argmax(q_abs_sq, axis=-1)
    q = jnp.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
    return q * jnp.where(q[..., :1] < 0, -1.0, 1.0)


def quaternion_to_matrix(quat: jax.Array) -> jax.Array:
    """[..., 4] quaternion (w, x, y, z), not necessarily unit → [..., 3, 3]."""
    q = quat / jnp.linalg.norm(quat, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return jnp.stack(
        [
            jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def axis_angle_to_quaternion(rotvec: jax.Array) -> jax.Array:
    """[..., 3] axis-angle → [..., 4] unit quaternion (w, x, y, z), w ≥ 0 for angles ≤ π.

    Uses sin(a/2)/a written through ``sinc`` so the value and gradient are exact at 0.
    """
    rotvec = jnp.asarray(rotvec)
    angle = jnp.sqrt(jnp.sum(rotvec * rotvec, axis=-1, keepdims=True) + 1e-24)
    half = 0.5 * angle
    # sin(a/2)/a = 0.5 * sinc(a / (2π)) with numpy's normalized sinc.
    scale = 0.5 * jnp.sinc(half / jnp.pi)
    q = jnp.concatenate([jnp.cos(half), rotvec * scale], -1)
    return q * jnp.where(q[..., :1] < 0, -1.0, 1.0)


def quaternion_to_axis_angle(quat: jax.Array) -> jax.Array:
    """[..., 4] quaternion (w, x, y, z) → [..., 3] axis-angle with angle in [0, π]."""
    q = quat / jnp.linalg.norm(quat, axis=-1, keepdims=True)
    q = q * jnp.where(q[..., :1] < 0, -1.0, 1.0)
    w = q[..., :1]
    xyz = q[..., 1:]
    sin_half = jnp.sqrt(jnp.sum(xyz * xyz, axis=-1, keepdims=True) + 1e-24)
    angle = 2.0 * jnp.arctan2(sin_half, w)
    # angle / sin(angle/2); → 2 as the angle → 0.
    scale = jnp.where(sin_half > 1e-6, angle / sin_half, 2.0 + angle**2 / 12.0)
    return xyz * scale


def matrix_to_axis_angle(matrix: jax.Array) -> jax.Array:
    """[..., 3, 3] rotation matrix → [..., 3] axis-angle (angle in [0, π])."""
    return quaternion_to_axis_angle(matrix_to_quaternion(matrix))


def rotation_6d_to_matrix(d6: jax.Array) -> jax.Array:
    """[..., 6] 6D rotation (first two rows of R, Zhou et al.) → [..., 3, 3] via Gram–Schmidt.

    This matches metrical-tracker's convention: the 6 numbers are rows 0 and 1 of R.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / jnp.linalg.norm(a1, axis=-1, keepdims=True)
    a2p = a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2p / jnp.linalg.norm(a2p, axis=-1, keepdims=True)
    b3 = jnp.cross(b1, b2)
    return jnp.stack([b1, b2, b3], -2)


def matrix_to_rotation_6d(matrix: jax.Array) -> jax.Array:
    """[..., 3, 3] → [..., 6]: the first two rows of R, concatenated."""
    return jnp.concatenate([matrix[..., 0, :], matrix[..., 1, :]], -1)


def deca_pose_to_full(pose6: jax.Array) -> jax.Array:
    """DECA/EMOCA 6-dim pose [..., 6] = [global(3), jaw(3)] → FLAME full pose [..., 15].

    The full pose is [global, neck, jaw, eye_left, eye_right]; neck and eyes are zero.
    """
    pose6 = jnp.asarray(pose6)
    if pose6.shape[-1] != 6:
        raise ValueError(f"DECA pose must have 6 values in its last axis, got shape {pose6.shape}")
    zeros = jnp.zeros(pose6.shape[:-1] + (3,), pose6.dtype)
    return jnp.concatenate([pose6[..., :3], zeros, pose6[..., 3:], zeros, zeros], -1)


def full_pose_to_deca(pose15: jax.Array) -> jax.Array:
    """FLAME full pose [..., 15] → DECA 6-dim pose [global, jaw]; neck and eyes are dropped."""
    pose15 = jnp.asarray(pose15)
    if pose15.shape[-1] != 15:
        raise ValueError(f"full pose must have 15 values in its last axis, got shape {pose15.shape}")
    return jnp.concatenate([pose15[..., 0:3], pose15[..., 6:9]], -1)
