"""Mesh geometry shared by the model, the losses, the renderer and the landmark sets.

One implementation each of:

* ``face_normals`` / ``vertex_normals`` — triangle normals and area-weighted unit vertex normals;
* ``rigid_transform`` / ``rigid_align`` — the least-squares rigid or similarity (Procrustes) fit of
  one point set onto another (Kabsch; Umeyama with a scale).

Every function takes NumPy or JAX arrays and answers in the same library: NumPy inputs stay on
the host (float64 for non-float input), JAX inputs stay traceable (jit / vmap / grad).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def array_namespace(*xs: Any):
    """``jax.numpy`` if any argument is a JAX array or tracer, else ``numpy``."""
    return jnp if any(isinstance(x, jax.Array) for x in xs) else np


def _check_mesh(v, f) -> None:
    if v.ndim < 2 or v.shape[-1] != 3:
        raise ValueError(f"vertices must be [..., V, 3], got shape {v.shape}")
    if f.ndim != 2 or f.shape[-1] != 3:
        raise ValueError(f"faces must be [F, 3], got shape {f.shape}")


# ----------------------------------------------------------------------------------------- normals
def face_normals(vertices, faces, *, normalize: bool = True, eps: float = 1e-12):
    """Triangle normals ``(v1 - v0) x (v2 - v0)``.

    Counter-clockwise triangles (seen from outside) give outward normals.

    Args:
      vertices: (..., V, 3) vertex positions (NumPy or JAX array).
      faces: (F, 3) integer vertex indices.
      normalize: return unit vectors (else the cross products, whose length is twice
        the triangle's area).
      eps: lower bound on the norm when normalizing (degenerate triangles → ~0).

    Returns:
      (..., F, 3) normals, same array library as ``vertices``.
    """
    xp = array_namespace(vertices)
    v = xp.asarray(vertices)
    f = xp.asarray(faces)
    if xp is np and v.ndim == 2:  # fast path: per-coordinate gathers, explicit cross product
        vx, vy, vz = (np.ascontiguousarray(v[:, k]) for k in range(3))
        f0, f1, f2 = (np.ascontiguousarray(f[:, k]) for k in range(3))
        ax, ay, az = vx[f1] - vx[f0], vy[f1] - vy[f0], vz[f1] - vz[f0]
        bx, by, bz = vx[f2] - vx[f0], vy[f2] - vy[f0], vz[f2] - vz[f0]
        n = np.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], axis=1)
    else:
        tri = v[..., f, :]
        n = xp.cross(tri[..., 1, :] - tri[..., 0, :], tri[..., 2, :] - tri[..., 0, :])
    if normalize:
        n = n / xp.maximum(xp.linalg.norm(n, axis=-1, keepdims=True), eps)
    return n


def vertex_normals(vertices, faces, *, eps: float = 1e-12):
    """Area-weighted unit vertex normals.

    Each vertex normal is the normalized sum of the unnormalized normals (cross products,
    length = 2 × area) of the triangles around it; counter-clockwise triangles give outward
    normals. A vertex in no triangle (or only degenerate ones) gets a zero normal.

    NumPy input sums with ``np.bincount`` (float64 for non-float input); JAX input with
    ``.at[].add`` and divides by ``sqrt(max(‖n‖², eps²))`` — the same value as
    ``max(‖n‖, eps)`` but with a finite gradient at ``‖n‖ = 0`` (empty or masked meshes), where
    ``sqrt'(0) = ∞`` would turn a zero cotangent into NaN.

    Args:
      vertices: (..., V, 3) positions. Screen-space vertices (y down, depth away) give normals
        in that camera frame; FLAME vertices (y up, z toward the viewer) in the FLAME frame.
      faces: (F, 3) integer vertex indices.
      eps: lower bound on the norm.

    Returns:
      (..., V, 3) unit normals, same array library as ``vertices``.
    """
    if array_namespace(vertices) is jnp:
        v = jnp.asarray(vertices)
        f = jnp.asarray(faces)
        _check_mesh(v, f)
        fn = face_normals(v, f, normalize=False)  # (..., F, 3)
        acc = jnp.zeros(v.shape, fn.dtype)
        for k in range(3):
            acc = acc.at[..., f[:, k], :].add(fn)
        return acc / jnp.sqrt(jnp.maximum(jnp.sum(acc * acc, -1, keepdims=True), eps * eps))
    v = np.asarray(vertices)
    if not np.issubdtype(v.dtype, np.floating):
        v = v.astype(np.float64)
    f = np.asarray(faces, np.int64)
    _check_mesh(v, f)
    num_v = v.shape[-2]
    lead = v.shape[:-2]
    v2 = v.reshape((-1,) + v.shape[-2:])  # (B, V, 3)
    out = np.empty((v2.shape[0], num_v, 3), v.dtype)
    idx = f.T.reshape(-1)  # corner-major: all corner-0 vertices, then corner 1, corner 2
    for b in range(v2.shape[0]):
        fn = face_normals(v2[b], f, normalize=False)
        for c in range(3):
            out[b, :, c] = np.bincount(idx, weights=np.tile(fn[:, c], 3), minlength=num_v)
    out = out.reshape(lead + (num_v, 3))
    return out / np.maximum(np.sqrt((out * out).sum(-1, keepdims=True)), eps)


# ------------------------------------------------------------------------------ Procrustes
def _asarray(xp, x):
    return np.asarray(x, np.float64) if xp is np else xp.asarray(x)


def rigid_transform(source, target, *, with_scale: bool = False, weights=None):
    """Least-squares rigid (or similarity) transform from source to target.

    Finds s, R, t minimizing Σ_n w_n ‖s R x_n + t − y_n‖² (Kabsch; Umeyama with
    ``with_scale=True``); R is a proper rotation (det = +1).

    Args:
      source: [..., N, 3] points x.
      target: [..., N, 3] points y (leading axes broadcast; one transform each).
      with_scale: also fit a uniform scale s (else s = 1).
      weights: optional [..., N] non-negative weights.

    Returns:
      (s [...], R [..., 3, 3], t [..., 3]) as arrays of the input's library (NumPy: float64).
    """
    xp = array_namespace(source, target, weights)
    x = _asarray(xp, source)
    y = _asarray(xp, target)
    if x.shape[-1] != 3 or y.shape[-1] != 3 or x.shape[-2] != y.shape[-2]:
        raise ValueError(f"source and target must be [..., N, 3] with equal N, got {x.shape} and {y.shape}")
    w = xp.ones(x.shape[:-1], x.dtype) if weights is None else _asarray(xp, weights)
    w = w / xp.maximum(w.sum(-1, keepdims=True), 1e-30)
    mx = (w[..., None] * x).sum(-2)
    my = (w[..., None] * y).sum(-2)
    xc = x - mx[..., None, :]
    yc = y - my[..., None, :]
    cov = xp.einsum("...n,...ni,...nj->...ij", w, yc, xc)  # Σ w y xᵀ
    u, sv, vt = xp.linalg.svd(cov)
    d = xp.sign(xp.linalg.det(u) * xp.linalg.det(vt))
    d = xp.where(d == 0, 1.0, d)
    diag = xp.stack([xp.ones_like(d), xp.ones_like(d), d], -1)
    rot = xp.einsum("...ij,...j,...jk->...ik", u, diag, vt)
    if with_scale:
        var_x = (w * (xc * xc).sum(-1)).sum(-1)
        s = (sv * diag).sum(-1) / xp.maximum(var_x, 1e-30)
    else:
        s = xp.ones(rot.shape[:-2], rot.dtype)
    t = my - s[..., None] * xp.einsum("...ij,...j->...i", rot, mx)
    return s, rot, t


def rigid_align(source, target, *, with_scale: bool = False, weights=None):
    """Source points rigidly (or similarity-) aligned to target.

    Args:
      source, target: [..., N, 3]; one transform per leading index.
      with_scale: also fit a uniform scale (Umeyama).
      weights: optional [..., N] weights.

    Returns:
      [..., N, 3] s R source + t (see :func:`rigid_transform`).
    """
    xp = array_namespace(source, target, weights)
    s, rot, t = rigid_transform(source, target, with_scale=with_scale, weights=weights)
    x = _asarray(xp, source)
    return s[..., None, None] * xp.einsum("...ij,...nj->...ni", rot, x) + t[..., None, :]


__all__ = ["array_namespace", "face_normals", "rigid_align", "rigid_transform", "vertex_normals"]
