"""Differentiable rendering with fixed visibility: albedo × second-order spherical-harmonics light.

Each covered crop pixel sees one surface point, fixed by the raster (``photometric.raster``): a
triangle and barycentric weights. Everything else is recomputed in JAX from the current mesh, so
gradients reach the vertices (hence FLAME parameters and encoder weights), the camera, the albedo
and the light:

* the point's colour ``c = Σ_k b_k · albedo(v_k) · (Y(n(v_k)) · L)`` — Gouraud shading like the
  NumPy renderer (lit per vertex, interpolated), vertex normals of the current mesh, ``Y`` the 9 real
  SH basis functions of the unit normal (model frame: x right, y up, z toward the camera) and ``L``
  [9, 3] the light, 9 coefficients per colour channel (irradiance, already convolved: the shading
  is the plain dot product ``Y(n) · L``);
* the point's current position in the crop ``x = Σ_k b_k · π(v_k)`` (pixels): the photometric loss
  samples the image there, so the geometry also receives gradients through the image's own
  gradients (``photometric.loss``).

Written for one image and vmapped over any leading batch (frames × views × clips).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.geometry import vertex_normals
from neuface_jax.photometric import raster as raster_lib

#: Normalization constants of the real SH basis, bands 0–2 (order: 00, 1−1, 10, 11, 2−2, 2−1, 20, 21, 22).
_C0, _C1, _C2, _C3, _C4 = 0.28209479, 0.48860251, 1.09254843, 0.31539157, 0.54627422
NUM_SH = 9


def sh_basis(normals) -> jax.Array:
    """Unit normals [..., 3] → the 9 real SH basis functions [..., 9]."""
    n = jnp.asarray(normals)
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    return jnp.stack([
        jnp.full_like(x, _C0), _C1 * y, _C1 * z, _C1 * x,
        _C2 * x * y, _C2 * y * z, _C3 * (3.0 * z * z - 1.0), _C2 * x * z, _C4 * (x * x - y * y),
    ], -1)


def sh_shading(normals, sh) -> jax.Array:
    """Shading ``Y(n) · L`` per colour channel: normals [..., 3], light [..., 9, 3] → [..., 3]."""
    return jnp.einsum("...k,...kc->...c", sh_basis(normals), jnp.asarray(sh))


def directional_light_sh(direction, ambient: float = 0.3, diffuse: float = 0.7, *, samples: int = 20000) -> np.ndarray:
    """[9, 3] SH light closest (least squares over the sphere) to ``ambient + diffuse · max(0, n·l)``
    — the NumPy renderer's Lambert model — with ``direction`` toward the light in the model frame
    (x right, y up, z toward the camera). Grey: the three channels are equal."""
    lvec = np.asarray(direction, np.float64)
    lvec = lvec / np.linalg.norm(lvec)
    i = np.arange(samples) + 0.5
    z = 1.0 - 2.0 * i / samples
    phi = np.pi * (1.0 + 5.0**0.5) * i
    r = np.sqrt(1.0 - z * z)
    n = np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)
    y = np.asarray(sh_basis(n), np.float64)
    f = ambient + diffuse * np.maximum(n @ lvec, 0.0)
    coef, *_ = np.linalg.lstsq(y, f, rcond=None)
    return np.repeat(coef[:, None], 3, axis=1).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Rendering:
    """Output of ``render_batch`` (a pytree). Leading dims as the inputs'.

    Attributes:
      rgb: [..., H, W, 3] rendered colour of each covered pixel's surface point (0 elsewhere).
      mask: [..., H, W] float32 coverage (1 where the raster has a triangle).
      points: [..., H, W, 2] current crop-pixel position (x right, y down; pixel centres at +0.5) of
        each pixel's surface point — the pixel centre itself when the mesh has not moved since the
        raster was computed.
      face_index: [..., H, W] the raster's triangle ids (-1 where uncovered).
    """

    rgb: jax.Array
    mask: jax.Array
    points: jax.Array
    face_index: jax.Array


jax.tree_util.register_dataclass(Rendering, data_fields=["rgb", "mask", "points", "face_index"], meta_fields=[])


def _corners(face_index, bary, faces):
    covered = face_index >= 0
    tri = faces[jnp.where(covered, face_index, 0)]  # [..., H, W, 3] vertex ids
    return covered, tri, jnp.where(covered[..., None], bary, 0.0)


def pixel_centres(size: int) -> jax.Array:
    """[S, S, 2] crop-pixel centres (x right, y down, at +0.5)."""
    c = jnp.arange(size, dtype=jnp.float32) + 0.5
    return jnp.stack(jnp.meshgrid(c, c), -1)


def _cross(u, v):
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def current_barycentrics(corners, points, covered) -> jax.Array:
    """Barycentric coordinates [..., 3] of points [..., 2] in the triangles [..., 3, 2] (screen
    pixels) they lie in now — differentiable in the corners; outside the triangle they extrapolate
    linearly. 0 where not ``covered`` (and for degenerate triangles)."""
    a, b, c = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]
    area = _cross(b - a, c - a)
    ok = covered & (jnp.abs(area) > 1e-9)
    area = jnp.where(ok, area, 1.0)
    w0 = _cross(b - points, c - points) / area
    w1 = _cross(c - points, a - points) / area
    out = jnp.stack([w0, w1, 1.0 - w0 - w1], -1)
    return jnp.where(ok[..., None], out, 0.0)


def _render_one(vertices, cam, albedo, sh, face_index, bary, faces, size, pixel_aligned):
    screen = raster_lib.screen_vertices(vertices, cam, size)
    normals = vertex_normals(vertices, faces)
    colors = albedo * sh_shading(normals, sh[None])  # [V, 3] lit vertex colours (Gouraud)
    covered, tri, b = _corners(face_index, bary, faces)
    if pixel_aligned:
        # The surface point under each pixel centre now: the raster's triangle, barycentrics
        # recomputed from its current corners (geometry moves the colours across fixed pixels).
        centres = pixel_centres(size)
        b = current_barycentrics(screen[tri, :2], centres, covered)
        points = jnp.where(covered[..., None], centres, 0.0)
    else:
        points = jnp.einsum("hwk,hwkc->hwc", b, screen[tri, :2])
    rgb = jnp.einsum("hwk,hwkc->hwc", b, colors[tri])
    return rgb, covered.astype(jnp.float32), points


def surface_points(vertices, faces, cam, raster: raster_lib.Raster) -> jax.Array:
    """[..., H, W, 2] current crop-pixel positions of the raster's surface points (``Rendering.points``
    without the shading)."""
    size = raster.face_index.shape[-1]
    screen = raster_lib.screen_vertices(jnp.asarray(vertices), jnp.asarray(cam), size)[..., :2]
    _, tri, b = _corners(raster.face_index, raster.barycentric, jnp.asarray(faces, jnp.int32))
    lead = screen.shape[:-2]
    n = int(np.prod(lead)) if lead else 1
    corner = jax.vmap(lambda s, t: s[t])(screen.reshape((n,) + screen.shape[-2:]), tri.reshape((n,) + tri.shape[-3:]))
    return jnp.einsum("...hwk,...hwkc->...hwc", b, corner.reshape(tri.shape + (2,)))


def render_batch(vertices, faces, cam, albedo, sh, raster: raster_lib.Raster, *, pixel_aligned: bool = False) -> Rendering:
    """Renders meshes with fixed visibility, differentiably in vertices, camera, albedo and light.

    Two ways to follow a moving mesh between raster refreshes: by default each pixel keeps its
    surface point (``rgb`` its colour, ``points`` where it projects now — compare with the image
    sampled there); ``pixel_aligned`` keeps the pixel and its triangle and recomputes the
    barycentrics of the pixel centre (``rgb`` the colour of the surface point under the pixel now,
    ``points`` the fixed pixel centres — compare with the image's own pixels).

    Args:
      vertices: [..., V, 3] model-frame vertices (metres), one mesh per image.
      faces: [F, 3] triangles (those the raster was computed with).
      cam: [..., 3] weak-perspective cameras (s, tx, ty) (``core.camera.project``).
      albedo: [..., V, 3] per-vertex RGB albedo, or [V, 3] shared by all images.
      sh: [..., 9, 3] SH light per image, or [9, 3] shared.
      raster: ``Raster`` with [..., H, W] triangle ids (H = W = the crop size the cameras map to).
      pixel_aligned: see above.

    Returns:
      ``Rendering`` (rgb, mask, points, face_index).
    """
    vertices = jnp.asarray(vertices)
    if vertices.ndim < 2 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be [..., V, 3], got shape {vertices.shape}")
    faces = jnp.asarray(faces, jnp.int32)
    lead = vertices.shape[:-2]
    fi = jnp.asarray(raster.face_index)
    if fi.shape[:-2] != lead or fi.shape[-1] != fi.shape[-2]:
        raise ValueError(f"raster {fi.shape} must be [..., S, S] with the meshes' batch {lead}")
    size = fi.shape[-1]
    v = vertices.shape[-2]
    albedo = jnp.broadcast_to(jnp.asarray(albedo, vertices.dtype), lead + (v, 3))
    sh = jnp.broadcast_to(jnp.asarray(sh, vertices.dtype), lead + (NUM_SH, 3))
    cam = jnp.broadcast_to(jnp.asarray(cam, vertices.dtype), lead + (3,))
    n = int(np.prod(lead)) if lead else 1
    flat = lambda x, k: x.reshape((n,) + x.shape[len(lead):]) if k else x  # noqa: E731
    fn = jax.vmap(lambda a, c, al, s, f, b: _render_one(a, c, al, s, f, b, faces, size, pixel_aligned))
    rgb, mask, points = fn(flat(vertices, 1), flat(cam, 1), flat(albedo, 1), flat(sh, 1), flat(fi, 1),
                           flat(jnp.asarray(raster.barycentric), 1))
    unflat = lambda x: x.reshape(lead + x.shape[1:])  # noqa: E731
    return Rendering(unflat(rgb), unflat(mask), unflat(points), fi)


__all__ = ["NUM_SH", "Rendering", "current_barycentrics", "directional_light_sh", "pixel_centres", "render_batch",
           "sh_basis", "sh_shading", "surface_points"]
