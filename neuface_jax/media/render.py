"""Z-buffered triangle rasterizer, shading and 2D overlays (NumPy, CPU).

Used for the synthetic benchmark clips (shaded meshes with per-vertex colours) and
for overlays on real video frames (a translucent shaded mesh blended over a photo, a
hidden-line wireframe or both, landmark dots, text labels on a backing box).

Conventions
-----------
* **Screen space** (every ``screen_vertices`` argument): column 0 is x in pixels,
  to the right; column 1 is y in pixels, **down**; column 2 is depth, **larger is
  farther** from the camera (its unit is the caller's; use pixels for an
  orthographic / weak-perspective camera so that normals computed from screen
  vertices are right, or camera-space z for a pinhole camera).
* **Pixels**: pixel ``[i, j]`` (row i, column j) covers ``[j, j+1) x [i, i+1)``;
  its centre, where coverage, depth and attributes are sampled, is
  ``(j + 0.5, i + 0.5)``.
* **Camera frame** for normals and the light: the same axes as screen space
  (x right, y down, z away from the camera — OpenCV's camera frame). A surface
  facing the camera has a normal with negative z. ``light_direction`` points from
  the surface *toward* the light.
* **Front faces**: the winding of FLAME/OBJ meshes — counter-clockwise when seen
  from outside in a y-up view. In y-down pixel coordinates such a triangle has
  negative signed area ``(x1-x0)(y2-y0) - (y1-y0)(x2-x0)``, and its normal
  ``(v1-v0) x (v2-v0)`` computed from screen vertices points toward the camera.

Algorithm (``rasterize``): triangles are binned by their pixel bounding box rounded
up to a power-of-two tile; each bin evaluates the three edge functions at every pixel
centre of its tiles in one broadcast NumPy expression (no Python loop over triangles),
keeps the centres inside, interpolates depth, and a scatter-min (``np.minimum.at``)
builds the z-buffer; the fragments whose depth equals the buffer write their face
index and barycentric coordinates. Shading is deferred to the visible pixels only.
Each edge function is evaluated with the edge's endpoints in a canonical order
(lexicographic in (x, y)), so the two triangles sharing an edge compute exactly
opposite values at every pixel centre: a centre on the shared edge is covered by both
(the z-test picks one) and never, by rounding, by neither — no cracks. The inside test
is inclusive; there is no top-left rule.

Why NumPy rather than JAX: the number of fragments per triangle varies, which NumPy
handles with data-dependent shapes; a jitted JAX rasterizer must pad every triangle
to one fixed tile (the largest bounding box) and XLA's CPU scatter is slow.
``experiments/benchmark_render.py`` measures both.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from typing import Any

import numpy as np

from flame_jax.geometry import face_normals, vertex_normals  # noqa: F401  (re-exported: render.vertex_normals)

#: Default light: from the camera, slightly from above (-y) and the image's right (+x).
DEFAULT_LIGHT = (0.3, -0.5, -1.0)
#: Default mesh colour (light grey-blue) when no per-vertex colours are given.
DEFAULT_MESH_COLOR = (0.75, 0.78, 0.85)

# Candidate (triangle, pixel) pairs handled at once; bounds peak memory (~100 bytes each).
_CHUNK_CANDIDATES = 1 << 20


# --------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class Fragments:
    """Per-pixel result of rasterization.

    Attributes:
      face_index: (H, W) int32, index of the visible triangle, -1 where empty.
      depth: (H, W) float32 depth of the visible surface (screen-space depth units),
        +inf where empty.
      barycentric: (H, W, 3) float32 barycentric coordinates of the pixel centre in
        the visible triangle (perspective-correct when rasterized with
        ``perspective_correct=True``); 0 where empty.
    """

    face_index: np.ndarray
    depth: np.ndarray
    barycentric: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, True where a triangle covers the pixel centre."""
        return self.face_index >= 0


@dataclasses.dataclass(frozen=True)
class Rendering:
    """Result of :func:`render`.

    Attributes:
      image: (H, W, 3) RGB, float32 in [0, 1] (or uint8 when asked for).
      coverage: (H, W) float32 fraction of the pixel covered by the mesh (0 or 1
        without supersampling).
      face_index, depth, barycentric: the :class:`Fragments` buffers at the output
        resolution; with supersampling, those of the nearest sample in each pixel.
    """

    image: np.ndarray
    coverage: np.ndarray
    face_index: np.ndarray
    depth: np.ndarray
    barycentric: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool, True where the mesh covers the pixel (any sample)."""
        return self.face_index >= 0


# ----------------------------------------------------------------------- geometry
def _is_jax(x: Any) -> bool:
    """True for JAX arrays and tracers (never imports jax: without it loaded, x is not one)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def _xp(x):
    if _is_jax(x):
        import jax.numpy as jnp

        return jnp
    return np


def fit_orthographic(vertices, height: int, width: int, *, fill: float = 0.8) -> np.ndarray:
    """Orthographic screen vertices that frame a mesh (for previews and tests).

    Args:
      vertices: (..., V, 3) model-frame positions (FLAME convention: x right, y up,
        z toward the viewer; any unit). The bounding box of *all* of them is fitted,
        so a clip [T, V, 3] keeps one framing.
      height, width: image size in pixels.
      fill: fraction of the smaller image side the larger of the x/y extents fills.

    Returns:
      (..., V, 3) float64 screen vertices: x right and y down in pixels, depth =
      -z in pixels (same scale as x and y), centred on the box's centre.
    """
    v = np.asarray(vertices, np.float64)
    flat = v.reshape(-1, 3)
    lo, hi = flat.min(0), flat.max(0)
    center = 0.5 * (lo + hi)
    extent = max(hi[0] - lo[0], hi[1] - lo[1], 1e-12)
    s = fill * min(height, width) / extent
    out = np.empty_like(v)
    out[..., 0] = (v[..., 0] - center[0]) * s + 0.5 * width
    out[..., 1] = -(v[..., 1] - center[1]) * s + 0.5 * height
    out[..., 2] = -(v[..., 2] - center[2]) * s
    return out


def uv_sphere(rings: int = 32, segments: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A unit UV sphere with outward (counter-clockwise from outside) winding.

    For previews, tests and benchmarks (``uv_sphere(71, 71)`` has 4,972 vertices
    and 9,940 triangles, about a FLAME head's 5,023 / 9,976).

    Args:
      rings: latitude bands (>= 2).
      segments: longitude segments (>= 3).

    Returns:
      vertices (V, 3) float64 with V = (rings - 1) * segments + 2 (poles at +-y),
      faces (F, 3) int32 with F = 2 * segments * (rings - 1).
    """
    if rings < 2 or segments < 3:
        raise ValueError(f"need rings >= 2 and segments >= 3, got {rings}, {segments}")
    theta = np.pi * np.arange(1, rings) / rings  # polar angle from +y
    phi = 2 * np.pi * np.arange(segments) / segments
    st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
    ring = np.stack([st * np.sin(phi), np.broadcast_to(ct, (rings - 1, segments)), st * np.cos(phi)], -1)
    verts = np.concatenate([[[0.0, 1.0, 0.0]], ring.reshape(-1, 3), [[0.0, -1.0, 0.0]]])
    top, bottom = 0, verts.shape[0] - 1
    idx = 1 + np.arange((rings - 1) * segments).reshape(rings - 1, segments)
    nxt = np.roll(idx, -1, axis=1)
    faces = [np.stack([np.full(segments, top), idx[0], nxt[0]], 1)]
    a, b, c, d = idx[:-1], nxt[:-1], idx[1:], nxt[1:]
    faces.append(np.stack([a, c, d], -1).reshape(-1, 3))
    faces.append(np.stack([a, d, b], -1).reshape(-1, 3))
    faces.append(np.stack([np.full(segments, bottom), nxt[-1], idx[-1]], 1))
    return verts, np.concatenate(faces).astype(np.int32)


# --------------------------------------------------------------------- rasterize
def _check_mesh(screen_vertices, faces, name="screen_vertices"):
    v = np.asarray(screen_vertices, np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{name} must be (V, 3), got shape {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be an integer array (F, 3), got {f.dtype} {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
        raise ValueError(f"faces index vertices out of range [0, {v.shape[0]})")
    return v, f.astype(np.int64, copy=False)


def rasterize(
    screen_vertices,
    faces,
    height: int,
    width: int,
    *,
    cull_backfaces: bool = False,
    perspective_correct: bool = False,
) -> Fragments:
    """Z-buffered rasterization of a triangle mesh at pixel centres.

    A pixel is covered by a triangle when its centre lies inside or on the triangle
    (inclusive edge test, exact on shared edges — see the module docstring); the
    nearest (smallest depth) covering triangle wins.

    Args:
      screen_vertices: (V, 3) x_pix (right), y_pix (down), depth (larger = farther).
      faces: (F, 3) integer vertex indices.
      height, width: image size in pixels.
      cull_backfaces: drop triangles facing away from the camera (positive signed
        area in y-down pixel coordinates; see "Front faces" in the module docstring).
      perspective_correct: the depth column is camera-space z > 0 of a pinhole
        camera: interpolate 1/z linearly in the image and return perspective-correct
        barycentrics. Triangles with a vertex at z <= 0 are dropped (no clipping).
        Otherwise depth and barycentrics are linear in screen space (exact for
        orthographic and weak-perspective cameras).

    Returns:
      :class:`Fragments` with (H, W) face index / depth and (H, W, 3) barycentrics.
    """
    v, f = _check_mesh(screen_vertices, faces)
    height, width = int(height), int(width)
    num_pix = height * width
    depth_flat = np.full(num_pix, np.inf)
    face_flat = np.full(num_pix, -1, np.int32)
    bary_flat = np.zeros((num_pix, 3), np.float32)
    empty = Fragments(face_flat.reshape(height, width), depth_flat.astype(np.float32).reshape(height, width),
                      bary_flat.reshape(height, width, 3))
    if f.shape[0] == 0 or num_pix == 0:
        return empty

    # Structure of arrays: contiguous per-coordinate gathers are much faster than v[f].
    vx, vy, vz = (np.ascontiguousarray(v[:, k]) for k in range(3))
    f0, f1, f2 = (np.ascontiguousarray(f[:, k]) for k in range(3))
    x0, x1, x2 = vx[f0], vx[f1], vx[f2]
    y0, y1, y2 = vy[f0], vy[f1], vy[f2]
    area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    with np.errstate(invalid="ignore"):
        # Column j is sampled at j + 0.5: covered columns satisfy xmin <= j + 0.5 <= xmax.
        col0 = np.maximum(np.ceil(np.minimum(np.minimum(x0, x1), x2) - 0.5), 0)
        col1 = np.minimum(np.floor(np.maximum(np.maximum(x0, x1), x2) - 0.5), width - 1)
        row0 = np.maximum(np.ceil(np.minimum(np.minimum(y0, y1), y2) - 0.5), 0)
        row1 = np.minimum(np.floor(np.maximum(np.maximum(y0, y1), y2) - 0.5), height - 1)
        # NaN/inf coordinates fail these comparisons (or give a zero/NaN area).
        keep = np.isfinite(area2) & (area2 != 0) & (col1 >= col0) & (row1 >= row0)
        if cull_backfaces:
            keep &= area2 < 0
        zf = vz[f0], vz[f1], vz[f2]
        keep &= np.isfinite(zf[0]) & np.isfinite(zf[1]) & np.isfinite(zf[2])
        if perspective_correct:
            keep &= (zf[0] > 0) & (zf[1] > 0) & (zf[2] > 0)
    ids = np.flatnonzero(keep)
    if ids.size == 0:
        return empty

    x0, x1, x2, y0, y1, y2, area2 = (a[ids] for a in (x0, x1, x2, y0, y1, y2, area2))
    zt = [a[ids] for a in zf]
    col0, row0 = col0[ids].astype(np.int64), row0[ids].astype(np.int64)
    nx = col1[ids].astype(np.int64) - col0 + 1
    ny = row1[ids].astype(np.int64) - row0 + 1
    sgn = np.sign(area2)
    # e_k = A_k x + B_k y + C_k, positive inside; the barycentric of vertex k is e_k / Σe.
    coef = (_edge_coefficients(x1, y1, x2, y2, sgn)
            + _edge_coefficients(x2, y2, x0, y0, sgn)
            + _edge_coefficients(x0, y0, x1, y1, sgn))
    if perspective_correct:
        zt = [1.0 / a for a in zt]  # 1/z is linear in the image

    # Candidates: triangles are binned by their bounding box rounded up to a power-of-two
    # tile (tw x th); each bin is one dense broadcast (m, th, tw) — no per-candidate
    # gathers of the edge coefficients — and bins are split so that a block holds at
    # most _CHUNK_CANDIDATES candidates. The padding costs less than the gathers it saves.
    log_w = np.ceil(np.log2(nx)).astype(np.int64)
    log_h = np.ceil(np.log2(ny)).astype(np.int64)
    key = log_h * 64 + log_w
    order = np.argsort(key, kind="stable")
    skey = key[order]
    cuts = np.flatnonzero(np.diff(skey)) + 1
    kept = []
    for grp in np.split(order, cuts):
        lw, lh = int(log_w[grp[0]]), int(log_h[grp[0]])
        tw, th = 1 << lw, 1 << lh
        step = max(1, _CHUNK_CANDIDATES // (tw * th))
        ox = np.arange(tw, dtype=np.float64)
        oy = np.arange(th, dtype=np.float64)[:, None]
        for start in range(0, grp.size, step):
            t = grp[start:start + step]
            cx = (col0[t].astype(np.float64) + 0.5)[:, None, None] + ox  # (m, 1, tw)
            cy = (row0[t].astype(np.float64) + 0.5)[:, None, None] + oy  # (m, th, 1)
            e = []
            inside = (ox < nx[t][:, None, None]) & (oy < ny[t][:, None, None])
            for k in range(3):
                ek = coef[3 * k][t][:, None, None] * cx + coef[3 * k + 1][t][:, None, None] * cy
                ek += coef[3 * k + 2][t][:, None, None]
                inside &= ek >= 0
                e.append(ek)
            sel = np.flatnonzero(inside)
            local = t[sel >> (lw + lh)]
            dx = sel & (tw - 1)
            dy = (sel >> lw) & (th - 1)
            e0, e1, e2 = (ek.reshape(-1)[sel] for ek in e)
            esum = e0 + e1 + e2
            w = e0 * zt[0][local] + e1 * zt[1][local] + e2 * zt[2][local]
            zz = esum / w if perspective_correct else w / esum
            pix = (row0[local] + dy) * width + col0[local] + dx
            np.minimum.at(depth_flat, pix, zz)
            kept.append((pix, zz, local, e0, e1, e2, esum))

    for pix, zz, local, e0, e1, e2, esum in kept:
        win = np.flatnonzero(zz == depth_flat[pix])  # ties (equal depth) resolve arbitrarily
        wp = pix[win]
        lw = local[win]
        face_flat[wp] = ids[lw]
        e = np.stack([e0[win], e1[win], e2[win]], axis=1)
        if perspective_correct:  # b_k = (e_k / z_k) z / Σe ... with the 1/z factors
            e *= np.stack([zt[0][lw], zt[1][lw], zt[2][lw]], axis=1) * (zz[win] / esum[win])[:, None]
            bary_flat[wp] = e
        else:
            bary_flat[wp] = e / esum[win][:, None]
    return Fragments(
        face_flat.reshape(height, width),
        depth_flat.astype(np.float32).reshape(height, width),
        bary_flat.reshape(height, width, 3),
    )


def _edge_coefficients(ax, ay, bx, by, sign) -> list[np.ndarray]:
    """Coefficients [A, B, C] of the edge function of edge a→b, positive inside.

    For endpoints (lo, hi) sorted lexicographically by (x, y), E(p) = A px + B py + C
    with A = lo_y - hi_y, B = hi_x - lo_x, C = -(A lo_x + B lo_y): both triangles
    sharing an edge compute the same E up to an exact sign flip, so a pixel centre on
    the edge is inside both triangles, never inside neither by rounding. ``sign`` (that of
    the signed area) orients E to be positive inside.
    """
    swap = (ax > bx) | ((ax == bx) & (ay > by))
    lx, ly = np.where(swap, bx, ax), np.where(swap, by, ay)
    hx, hy = np.where(swap, ax, bx), np.where(swap, ay, by)
    coef_a = ly - hy
    coef_b = hx - lx
    coef_c = -(coef_a * lx + coef_b * ly)
    s = np.where(swap, -sign, sign)  # E_{a->b} = -E_canonical when swapped
    return [coef_a * s, coef_b * s, coef_c * s]


def interpolate(fragments: Fragments, faces, vertex_attributes) -> np.ndarray:
    """Interpolates per-vertex attributes at the visible surface of every pixel.

    Args:
      fragments: from :func:`rasterize`.
      faces: (F, 3) the faces that were rasterized.
      vertex_attributes: (V, C) values per vertex.

    Returns:
      (H, W, C) float32, zero where no triangle is visible.
    """
    attr = np.asarray(vertex_attributes)
    if attr.ndim != 2:
        raise ValueError(f"vertex_attributes must be (V, C), got shape {attr.shape}")
    f = np.asarray(faces, np.int64)
    h, w = fragments.face_index.shape
    out = np.zeros((h * w, attr.shape[1]), np.float32)
    sel = np.flatnonzero(fragments.face_index >= 0)
    fi = fragments.face_index.reshape(-1)[sel]
    b = fragments.barycentric.reshape(-1, 3)[sel]
    out[sel] = _interpolate_rows(fi, b, f, attr)
    return out.reshape(h, w, -1)


# ------------------------------------------------------------------------ shading
def _as_background(background, height: int, width: int) -> np.ndarray:
    bg = np.asarray(background)
    if bg.dtype == np.uint8:
        bg = bg.astype(np.float32) / 255.0
    bg = bg.astype(np.float32)
    if bg.ndim == 0:
        return np.full((height, width, 3), float(bg), np.float32)
    if bg.shape == (3,):
        return np.broadcast_to(bg, (height, width, 3)).copy()
    if bg.shape == (height, width, 3):
        return bg.copy()
    if bg.shape == (height, width):
        return np.repeat(bg[..., None], 3, axis=2)
    raise ValueError(f"background must be a scalar, an RGB colour (3,) or an image ({height}, {width}, 3); got {bg.shape}")


def _interpolate_rows(fi, b, faces, attr):
    """Σ_k b[:, k] attr[faces[fi, k]] for visible pixels: (n,) face ids, (n, 3) barycentrics → (n, C).

    ``np.take`` per corner is about 1.6x faster than one (n, 3, C) gather + einsum.
    """
    vid = np.take(faces, fi, axis=0)
    out = b[:, 0:1] * np.take(attr, vid[:, 0], axis=0)
    out += b[:, 1:2] * np.take(attr, vid[:, 1], axis=0)
    out += b[:, 2:3] * np.take(attr, vid[:, 2], axis=0)
    return out


def _shade_pixels(fi, b, faces, colors, normals, light, ambient, diffuse, shading, flat_normals):
    """Colours (n, 3) float32 of the visible pixels (face ids fi, barycentrics b)."""
    single = colors.ndim == 1
    if shading == "smooth":  # Gouraud: light the vertices, interpolate the colours
        lam = ambient + diffuse * np.maximum(normals @ light, 0.0).astype(np.float32)
        if single:
            return _interpolate_rows(fi, b, faces, lam[:, None]) * colors
        return _interpolate_rows(fi, b, faces, colors * lam[:, None])
    albedo = np.broadcast_to(colors, (fi.size, 3)) if single else _interpolate_rows(fi, b, faces, colors)
    if shading == "none":
        return np.asarray(albedo, np.float32)
    if shading == "flat":
        lam = (ambient + diffuse * np.maximum(flat_normals @ light, 0.0)).astype(np.float32)[fi]
    else:  # phong: per-pixel normals
        n = _interpolate_rows(fi, b, faces, normals.astype(np.float32))
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        lam = ambient + diffuse * np.maximum(n @ light.astype(np.float32), 0.0)
    return albedo * lam[:, None]


def render(
    screen_vertices,
    faces,
    colors=None,
    *,
    height: int,
    width: int,
    normals=None,
    light_direction=DEFAULT_LIGHT,
    ambient: float = 0.3,
    diffuse: float = 0.7,
    shading: str = "smooth",
    background=0.0,
    cull_backfaces: bool = False,
    perspective_correct: bool = False,
    supersample: int = 1,
    dtype=np.float32,
) -> Rendering:
    """Renders a shaded mesh with per-vertex colours over a background.

    colour = clip(albedo * (ambient + diffuse * max(0, n . l)), 0, 1), with albedo the
    vertex colour, n the unit normal and l the unit light direction (toward the light,
    camera frame), evaluated per vertex and interpolated ("smooth", Gouraud), per pixel
    ("phong") or per triangle ("flat"). Surfaces facing away from the light get the
    ambient term only.

    Args:
      screen_vertices: (V, 3) x_pix (right), y_pix (down), depth (larger = farther).
      faces: (F, 3) integer vertex indices.
      colors: (V, 3) per-vertex RGB in [0, 1], or one RGB (3,); None = a light grey.
      height, width: image size in pixels.
      normals: (V, 3) vertex normals in the camera frame (x right, y down, z away).
        None = :func:`vertex_normals` of ``screen_vertices`` — right when depth has
        the same unit as x and y (orthographic / weak-perspective); pass camera-frame
        normals for a pinhole camera.
      light_direction: (3,) direction toward the light in the camera frame; the
        default lights from the camera, a little from above and the right.
      ambient, diffuse: shading weights (1, 0 = unlit albedo).
      shading: "smooth" (Gouraud: lit per vertex, colours interpolated — the fast
        default, indistinguishable from "phong" on a FLAME-density mesh at video
        resolutions), "phong" (normals interpolated and lit per pixel), "flat" (one
        normal per triangle) or "none" (albedo only).
      background: scalar grey, RGB (3,), or an image (H, W, 3) float in [0, 1] or
        uint8, shown where no triangle is drawn.
      cull_backfaces: skip triangles facing away from the camera.
      perspective_correct: see :func:`rasterize`.
      supersample: k >= 1 renders k x k samples per pixel and averages them
        (anti-aliased silhouettes and edges; about k^2 times slower).
      dtype: np.float32 (values in [0, 1]) or np.uint8 for ``image``.

    Returns:
      :class:`Rendering` (image, coverage, face_index, depth, barycentric).
    """
    if shading not in ("smooth", "phong", "flat", "none"):
        raise ValueError(f"shading must be 'smooth', 'phong', 'flat' or 'none', got {shading!r}")
    k = int(supersample)
    if k < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    v, f = _check_mesh(screen_vertices, faces)
    height, width = int(height), int(width)
    if colors is None:
        colors = DEFAULT_MESH_COLOR
    colors = np.asarray(colors)
    colors = colors.astype(np.float32) / 255.0 if colors.dtype == np.uint8 else colors.astype(np.float32)
    if not (colors.shape == (3,) or colors.shape == (v.shape[0], 3)):
        raise ValueError(f"colors must be (3,) or (V, 3) = ({v.shape[0]}, 3), got {colors.shape}")
    light = np.asarray(light_direction, np.float64)
    light = light / max(np.linalg.norm(light), 1e-12)
    nrm = flat = None
    if shading in ("smooth", "phong"):
        nrm = vertex_normals(v, f) if normals is None else np.asarray(normals, np.float64)
        if nrm.shape != v.shape:
            raise ValueError(f"normals must be (V, 3) = {v.shape}, got {nrm.shape}")
    elif shading == "flat":
        if normals is None:
            flat = face_normals(v, f)
        else:
            nn = np.asarray(normals, np.float64)[f].sum(1)
            flat = nn / np.maximum(np.linalg.norm(nn, axis=1, keepdims=True), 1e-12)
    bg = _as_background(background, height, width)

    sv = v if k == 1 else v * np.array([k, k, 1.0])
    frags = rasterize(sv, f, height * k, width * k, cull_backfaces=cull_backfaces,
                      perspective_correct=perspective_correct)
    fidx = frags.face_index.reshape(-1)
    sel = np.flatnonzero(fidx >= 0)
    rgb = np.zeros((fidx.size, 3), np.float32)
    if sel.size:
        rgb[sel] = _shade_pixels(fidx[sel], frags.barycentric.reshape(-1, 3)[sel], f, colors,
                                 nrm, light, ambient, diffuse, shading, flat)
    np.clip(rgb, 0.0, 1.0, out=rgb)
    covered = (fidx >= 0).astype(np.float32)
    if k == 1:
        coverage = covered.reshape(height, width)
        image = rgb.reshape(height, width, 3) + (1.0 - coverage)[..., None] * bg
        face_index, depth, bary = frags.face_index, frags.depth, frags.barycentric
    else:
        coverage = covered.reshape(height, k, width, k).mean((1, 3))
        image = rgb.reshape(height, k, width, k, 3).mean((1, 3)) + (1.0 - coverage)[..., None] * bg
        # Buffers: the nearest of the k*k samples of each pixel.
        d = frags.depth.reshape(height, k, width, k).transpose(0, 2, 1, 3).reshape(height, width, k * k)
        pick = np.argmin(d, axis=-1)[..., None]
        depth = np.take_along_axis(d, pick, -1)[..., 0]
        fi = frags.face_index.reshape(height, k, width, k).transpose(0, 2, 1, 3).reshape(height, width, k * k)
        face_index = np.take_along_axis(fi, pick, -1)[..., 0]
        bb = frags.barycentric.reshape(height, k, width, k, 3).transpose(0, 2, 1, 3, 4).reshape(height, width, k * k, 3)
        bary = np.take_along_axis(bb, pick[..., None], 2)[:, :, 0]
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    if np.dtype(dtype) == np.uint8:
        image = to_uint8(image)
    return Rendering(image=image, coverage=coverage.astype(np.float32), face_index=face_index,
                     depth=depth, barycentric=bary)


def point_visibility(points, depth, *, tolerance: float) -> np.ndarray:
    """Whether screen-space points are visible given a depth buffer.

    A point is visible when it lies inside the image and its depth is at most the
    buffer's depth at the pixel containing it plus ``tolerance`` (empty pixels, depth
    +inf, count as visible — a surface point can fall just outside the sampled
    silhouette). Use it for landmarks: rasterize the mesh, then test the landmarks'
    screen positions (with the same depth convention).

    Args:
      points: (..., N, 3) x_pix, y_pix, depth.
      depth: (H, W) depth buffer (:attr:`Fragments.depth` / :attr:`Rendering.depth`).
      tolerance: slack in depth units (a point on the surface differs from the
        buffer by about |grad depth| x half a pixel).

    Returns:
      (..., N) bool.
    """
    p = np.asarray(points, np.float64)
    d = np.asarray(depth)
    h, w = d.shape
    col = np.floor(p[..., 0])
    row = np.floor(p[..., 1])
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h) & np.isfinite(p).all(-1)
    ci = np.where(inside, col, 0).astype(np.int64)
    ri = np.where(inside, row, 0).astype(np.int64)
    return inside & (p[..., 2] <= d[ri, ci] + tolerance)


# -------------------------------------------------------------------- 2D drawing
def _as_float_image(image) -> tuple[np.ndarray, bool]:
    img = np.asarray(image)
    was_uint8 = img.dtype == np.uint8
    if was_uint8:
        img = img.astype(np.float32) / 255.0
    else:
        img = img.astype(np.float32, copy=True)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) or (H, W), got shape {np.shape(image)}")
    return img, was_uint8


def _restore(img: np.ndarray, was_uint8: bool) -> np.ndarray:
    return to_uint8(img) if was_uint8 else img


def _blend(img: np.ndarray, flat_idx: np.ndarray, color: np.ndarray, alpha: float) -> None:
    flat = img.reshape(-1, 3)
    flat[flat_idx] = (1.0 - alpha) * flat[flat_idx] + alpha * color


def draw_wireframe(
    image,
    vertices,
    faces,
    color=(0.1, 1.0, 0.3),
    alpha: float = 1.0,
    *,
    thickness: int = 1,
    depth=None,
    depth_tolerance: float | None = None,
    cull_backfaces: bool = False,
) -> np.ndarray:
    """Draws the mesh's edges as 1-pixel (or thicker) lines.

    Every unique edge is sampled at steps of at most one pixel along its major axis
    and the pixels containing the samples are painted (8-connected lines, no
    anti-aliasing).

    Args:
      image: (H, W, 3) float in [0, 1] or uint8 (not modified).
      vertices: (V, 2) pixel positions (x right, y down), or (V, 3) screen vertices
        (needed with ``depth``).
      faces: (F, 3) integer vertex indices.
      color: RGB in [0, 1].
      alpha: opacity of the lines.
      thickness: line width in pixels (a square brush).
      depth: optional (H, W) depth buffer of the same mesh (:func:`rasterize`) for
        hidden-line removal: a sample is drawn when its depth is at most the largest
        buffer depth in the 3x3 neighbourhood of its pixel plus ``depth_tolerance``.
      depth_tolerance: slack in depth units; None = 1% of the mesh's depth range.
      cull_backfaces: draw only the edges of front-facing triangles.

    Returns:
      A new image, same dtype as ``image``.
    """
    v = np.asarray(vertices, np.float64)
    if v.ndim != 2 or v.shape[1] not in (2, 3):
        raise ValueError(f"vertices must be (V, 2) or (V, 3), got shape {v.shape}")
    f = np.asarray(faces, np.int64)
    if cull_backfaces:
        f = f[_signed_area2(v, f) < 0]
    return draw_edges(image, v, mesh_edges(f), color, alpha, thickness=thickness, depth=depth,
                      depth_tolerance=depth_tolerance)


def _signed_area2(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Twice the signed pixel area of each triangle; negative = front-facing (module docstring)."""
    t = v[f]
    return (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0])


def mesh_edges(faces) -> np.ndarray:
    """(E, 2) int64 unique undirected edges (smaller index first, sorted) of a triangle list (F, 3)."""
    f = np.ascontiguousarray(faces, np.int64).reshape(-1, 3)
    return _mesh_edges(f.tobytes(), f.shape[0]).copy()


def coarse_edges(faces, levels: int) -> np.ndarray:
    """(E', 2) edges of a mesh's edge graph coarsened ``levels`` times (for a readable wireframe).

    Each level matches neighbouring vertices greedily in the sorted edge order (every vertex
    joins at most one neighbour; about halving the vertex count, so edges become about sqrt(2)
    times longer) and keeps one vertex of each pair; two kept vertices are joined when some edge
    joined their groups. It depends on the topology only, so a coarsened wireframe follows the surface and
    does not flicker as the mesh deforms. Level 0 is :func:`mesh_edges`.
    """
    f = np.ascontiguousarray(faces, np.int64).reshape(-1, 3)
    return _coarse_edges(f.tobytes(), f.shape[0], max(0, int(levels))).copy()


# Overlays draw the same topology on every frame: edges and their coarsenings are cached by the
# faces' bytes.
@functools.lru_cache(maxsize=8)
def _mesh_edges(face_bytes: bytes, num_faces: int) -> np.ndarray:
    f = np.frombuffer(face_bytes, np.int64).reshape(num_faces, 3)
    e = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    return _unique_pairs(e, int(e.max()) + 1 if e.size else 0)


def _unique_pairs(pairs: np.ndarray, n: int) -> np.ndarray:
    """Sorted unique undirected pairs (smaller index first) of indices below ``n``, loops dropped."""
    p = np.sort(pairs, axis=1)
    p = p[p[:, 0] != p[:, 1]]
    key = np.unique(p[:, 0] * n + p[:, 1])
    return np.stack([key // max(n, 1), key % max(n, 1)], 1).astype(np.int64)


@functools.lru_cache(maxsize=16)
def _coarse_edges(face_bytes: bytes, num_faces: int, levels: int) -> np.ndarray:
    edges = _mesh_edges(face_bytes, num_faces)
    num_vertices = int(edges.max()) + 1 if edges.size else 0
    group = np.arange(num_vertices)  # vertex -> its kept vertex
    current = edges
    for _ in range(levels):
        matched = np.zeros(num_vertices, bool)
        keep = np.arange(num_vertices)
        for a, b in current.tolist():  # greedy matching, in the deterministic (sorted) edge order
            if not matched[a] and not matched[b]:
                matched[a] = matched[b] = True
                keep[b] = a
        group = keep[group]
        current = _unique_pairs(group[edges], num_vertices)
    return current


def draw_edges(
    image,
    vertices,
    edges,
    color=(0.1, 1.0, 0.3),
    alpha: float = 1.0,
    *,
    thickness: int = 1,
    depth=None,
    depth_tolerance: float | None = None,
) -> np.ndarray:
    """Draws line segments between vertices (:func:`draw_wireframe` with the edges given).

    Args:
      edges: (E, 2) integer vertex indices; the other arguments as :func:`draw_wireframe`.
    """
    img, was_uint8 = _as_float_image(image)
    h, w = img.shape[:2]
    v = np.asarray(vertices, np.float64)
    if depth is not None and v.shape[1] != 3:
        raise ValueError("hidden-line removal (depth=...) needs (V, 3) screen vertices")
    key = np.asarray(edges, np.int64).reshape(-1, 2)
    if key.size == 0:
        return _restore(img, was_uint8)
    a, b = v[key[:, 0]], v[key[:, 1]]
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    a, b = a[ok], b[ok]
    n = np.ceil(np.maximum(np.abs(b[:, 0] - a[:, 0]), np.abs(b[:, 1] - a[:, 1]))).astype(np.int64) + 1
    n = np.minimum(n, 4 * (h + w))  # edges far off-screen
    edge = np.repeat(np.arange(a.shape[0]), n)
    step = np.arange(edge.size) - np.repeat(np.cumsum(n) - n, n)
    t = step / np.maximum(n[edge] - 1, 1)
    p = a[edge] + t[:, None] * (b[edge] - a[edge])
    col = np.floor(p[:, 0]).astype(np.int64)
    row = np.floor(p[:, 1]).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    col, row, p = col[inside], row[inside], p[inside]
    if depth is not None:
        d = np.asarray(depth, np.float64)
        if d.shape != (h, w):
            raise ValueError(f"depth must be {(h, w)}, got {d.shape}")
        if depth_tolerance is None:
            zs = v[:, 2][np.isfinite(v[:, 2])]
            depth_tolerance = 0.01 * float(zs.max() - zs.min()) if zs.size else 0.0
        pad = np.pad(d, 1, mode="edge")
        dmax = np.max([pad[i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)
        vis = p[:, 2] <= dmax[row, col] + depth_tolerance
        col, row = col[vis], row[vis]
    mask = np.zeros((h, w), bool)
    r0 = -(thickness // 2)
    for dy in range(r0, r0 + thickness):
        for dx in range(r0, r0 + thickness):
            rr, cc = row + dy, col + dx
            ok = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            mask[rr[ok], cc[ok]] = True
    _blend(img, np.flatnonzero(mask), np.asarray(color, np.float32), float(alpha))
    return _restore(img, was_uint8)


def draw_points(
    image,
    points,
    color=(1.0, 0.15, 0.1),
    radius: float = 2.0,
    *,
    alpha: float = 1.0,
    visible=None,
    hidden_color=None,
) -> np.ndarray:
    """Draws filled discs, e.g. 2D landmarks.

    A pixel is painted when its centre is within ``radius`` of the point (a point is
    always painted at the pixel containing it).

    Args:
      image: (H, W, 3) float in [0, 1] or uint8 (not modified).
      points: (N, 2) pixel positions (x right, y down; pixel [i, j] spans
        [j, j+1) x [i, i+1)). Non-finite points are skipped.
      color: RGB (3,) or per-point (N, 3), in [0, 1].
      radius: disc radius in pixels.
      alpha: opacity.
      visible: optional (N,) bool; points marked False are drawn in ``hidden_color``,
        or skipped when it is None.
      hidden_color: RGB for invisible points.

    Returns:
      A new image, same dtype as ``image``.
    """
    img, was_uint8 = _as_float_image(image)
    h, w = img.shape[:2]
    p = np.asarray(points, np.float64).reshape(-1, 2)
    cols = np.broadcast_to(np.asarray(color, np.float32), (p.shape[0], 3)).copy()
    keep = np.isfinite(p).all(1)
    if visible is not None:
        vis = np.asarray(visible, bool).reshape(-1)
        if hidden_color is None:
            keep &= vis
        else:
            cols[~vis] = np.asarray(hidden_color, np.float32)
    p, cols = p[keep], cols[keep]
    r = int(np.ceil(radius)) + 1
    oy, ox = np.mgrid[-r:r + 1, -r:r + 1]
    base_c = np.floor(p[:, 0]).astype(np.int64)
    base_r = np.floor(p[:, 1]).astype(np.int64)
    cc = base_c[:, None] + ox.reshape(-1)
    rr = base_r[:, None] + oy.reshape(-1)
    dist2 = (cc + 0.5 - p[:, :1]) ** 2 + (rr + 0.5 - p[:, 1:]) ** 2
    hit = (dist2 <= radius * radius) | ((cc == base_c[:, None]) & (rr == base_r[:, None]))
    hit &= (cc >= 0) & (cc < w) & (rr >= 0) & (rr < h)
    idx = (rr * w + cc)[hit]
    src = np.broadcast_to(cols[:, None, :], hit.shape + (3,))[hit]
    flat = img.reshape(-1, 3)
    flat[idx] = (1.0 - alpha) * flat[idx] + alpha * src
    return _restore(img, was_uint8)


def overlay_mesh(
    image,
    screen_vertices,
    faces,
    *,
    alpha: float = 0.6,
    mode: str = "solid",
    colors=None,
    normals=None,
    light_direction=DEFAULT_LIGHT,
    wire_color=(0.1, 1.0, 0.3),
    wire_alpha: float | None = None,
    wire_spacing: float | None = None,
    cull_backfaces: bool = True,
    perspective_correct: bool = False,
) -> np.ndarray:
    """Draws a mesh over a photo.

    Args:
      image: (H, W, 3) float in [0, 1] or uint8 (not modified).
      screen_vertices: (V, 3) x_pix, y_pix (down), depth (larger = farther).
      faces: (F, 3) integer vertex indices.
      alpha: opacity of the mesh (solid) or of the lines (wireframe).
      mode: "solid" — a shaded mesh (see :func:`render`) blended over the image
        where it covers it; "wireframe" — the visible edges (back faces culled and
        hidden lines removed with the z-buffer); "both" — the shaded mesh at
        ``alpha`` with its visible edges on top at ``wire_alpha``.
      colors: (V, 3) or (3,) mesh colour for "solid" (None = light grey).
      normals, light_direction: shading, see :func:`render`.
      wire_color: RGB of the lines in "wireframe" and "both" modes.
      wire_alpha: opacity of the lines in "both" mode (None = ``alpha``).
      wire_spacing: None draws every edge; a length in pixels draws the edge graph
        coarsened (:func:`coarse_edges`) until its visible edges are about that long, so a
        dense mesh over a small image stays a readable net instead of a solid hatch.
      cull_backfaces: skip back-facing triangles (right for closed, outward-wound
        meshes such as FLAME).
      perspective_correct: see :func:`rasterize`.

    Returns:
      A new image, same dtype as ``image``.
    """
    if mode not in ("solid", "wireframe", "both"):
        raise ValueError(f"mode must be 'solid', 'wireframe' or 'both', got {mode!r}")
    img, was_uint8 = _as_float_image(image)
    h, w = img.shape[:2]
    if mode == "wireframe":
        frags = rasterize(screen_vertices, faces, h, w, cull_backfaces=cull_backfaces,
                          perspective_correct=perspective_correct)
        out = _wire(img, screen_vertices, faces, wire_color, alpha, frags.depth, wire_spacing, cull_backfaces)
        return _restore(np.clip(out, 0.0, 1.0).astype(np.float32), was_uint8)
    r = render(screen_vertices, faces, colors, height=h, width=w, normals=normals,
               light_direction=light_direction, background=img, cull_backfaces=cull_backfaces,
               perspective_correct=perspective_correct)
    cov = r.coverage[..., None] * float(alpha)
    out = (1.0 - cov) * img + cov * r.image
    if mode == "both":  # the shaded pass's depth buffer removes the hidden lines
        out = _wire(out, screen_vertices, faces, wire_color, alpha if wire_alpha is None else wire_alpha, r.depth,
                    wire_spacing, cull_backfaces)
    return _restore(np.clip(out, 0.0, 1.0).astype(np.float32), was_uint8)


def _wire(img, screen_vertices, faces, color, alpha, depth, spacing, cull_backfaces) -> np.ndarray:
    """Hidden-line wireframe, every edge or coarsened to about ``spacing`` pixels (see :func:`overlay_mesh`)."""
    if spacing is None:
        return draw_wireframe(img, screen_vertices, faces, color, alpha, depth=depth, cull_backfaces=cull_backfaces)
    v = np.asarray(screen_vertices, np.float64)
    f = np.asarray(faces, np.int64)
    e = mesh_edges(f[_signed_area2(v, f) < 0])  # the edges of the front
    length = np.linalg.norm(v[e[:, 0], :2] - v[e[:, 1], :2], axis=1)
    length = length[np.isfinite(length)]
    if length.size == 0:
        return img
    # Each level makes edges about sqrt(2) times longer.
    levels = int(np.clip(np.ceil(2 * np.log2(spacing / max(float(np.median(length)), 1e-6))), 0, 8))
    # A coarse edge is a chord across the surface's bumps (nose, lips): a larger depth slack than
    # draw_wireframe's 1% of the depth range keeps it drawn; the far side is still hidden.
    zs = v[:, 2][np.isfinite(v[:, 2])]
    slack = (0.01 + 0.02 * min(levels, 2) / 2) * float(zs.max() - zs.min()) if zs.size else 0.0
    return draw_edges(img, v, coarse_edges(faces, levels), color, alpha, depth=depth, depth_tolerance=slack)


def draw_box(image, box: tuple[int, int, int, int], color=(0.0, 0.0, 0.0), alpha: float = 0.55) -> np.ndarray:
    """Blends a filled rectangle ``box`` = (x0, y0, x1, y1) (pixels, end exclusive) over the image.

    Returns a new image, same dtype as ``image`` (e.g. the backing of a legend's colour swatch).
    """
    img, was_uint8 = _as_float_image(image)
    return _restore(_shade_box(img, box, color, alpha), was_uint8)


def _shade_box(img: np.ndarray, box, color, alpha: float) -> np.ndarray:
    h, w = img.shape[:2]
    c0, r0, c1, r1 = max(0, int(box[0])), max(0, int(box[1])), min(w, int(box[2])), min(h, int(box[3]))
    if alpha > 0 and r1 > r0 and c1 > c0:
        img[r0:r1, c0:c1] = (1.0 - alpha) * img[r0:r1, c0:c1] + alpha * np.asarray(color, np.float32)
    return img


def text_size(text: str, scale: float, *, pad: int = 2) -> tuple[int, int]:
    """(width, height) in pixels of the box :func:`draw_text` draws for one line at ``scale``."""
    # Lazy: OpenCV (a declared dependency) only draws text; importing it costs time the renderer does not need.
    import cv2

    (tw, ascent), descent = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, float(scale), _text_thickness(scale))
    return int(tw) + 2 * pad, int(ascent + descent) + 2 * pad


def _text_thickness(scale: float) -> int:
    return max(1, int(round(scale * 2)))


def draw_text(
    image,
    text: str,
    origin: tuple[int, int],
    color=(1.0, 1.0, 1.0),
    *,
    scale: float = 0.5,
    box_color=(0.0, 0.0, 0.0),
    box_alpha: float = 0.55,
    pad: int = 2,
) -> np.ndarray:
    """Draws one line of text (anti-aliased, OpenCV's Hershey font) on a translucent box.

    Args:
      image: (H, W, 3) float in [0, 1] or uint8 (not modified).
      text: ASCII text.
      origin: (x, y) pixel of the box's top-left corner.
      color: RGB in [0, 1] of the letters.
      scale: font scale (1.0 is about 22 pixels from the top of a capital to the bottom of a descender).
      box_color, box_alpha: the backing box, which keeps the text readable on any image
        (box_alpha 0: no box).
      pad: box margin around the text in pixels.

    Returns:
      A new image, same dtype as ``image``.
    """
    import cv2  # lazy, see text_size

    img, was_uint8 = _as_float_image(image)
    h, w = img.shape[:2]
    thick = _text_thickness(scale)
    (tw, ascent), descent = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, float(scale), thick)
    x0, y0 = int(origin[0]), int(origin[1])
    x1, y1 = x0 + tw + 2 * pad, y0 + ascent + descent + 2 * pad
    img = _shade_box(img, (x0, y0, x1, y1), box_color, box_alpha)
    # The letters' anti-aliased coverage, drawn on a one-channel mask of the box (OpenCV draws
    # text on 8-bit images only), blends the colour into the float image.
    c0, r0, c1, r1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if c1 > c0 and r1 > r0:
        ink = np.zeros((r1 - r0, c1 - c0), np.uint8)
        cv2.putText(ink, text, (x0 + pad - c0, y0 + pad + ascent - r0), cv2.FONT_HERSHEY_SIMPLEX, float(scale), 255,
                    thick, cv2.LINE_AA)
        a = ink[..., None].astype(np.float32) / 255.0
        img[r0:r1, c0:c1] = (1.0 - a) * img[r0:r1, c0:c1] + a * np.asarray(color, np.float32)
    return _restore(np.clip(img, 0.0, 1.0), was_uint8)


# ---------------------------------------------------------------------------- I/O
def to_uint8(image) -> np.ndarray:
    """Float image in [0, 1] → uint8 (clipped, rounded); uint8 passes through."""
    img = np.asarray(image)
    if img.dtype == np.uint8:
        return img
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_png(path: str | os.PathLike, image) -> None:
    """Writes an (H, W, 3) or (H, W) image, float in [0, 1] or uint8, as PNG.

    Parent directories are created.
    """
    import imageio.v3 as iio

    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    iio.imwrite(path, to_uint8(image), extension=".png")
