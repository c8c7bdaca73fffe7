"""Per-vertex albedo components learned with the photometric term over a corpus of clips.

After the shape step every clip has a fitted mesh per frame and view. A clip's face crops then give
one per-vertex albedo (shared by all its frames and views: the clip's one appearance) and one
spherical-harmonics light per image, by alternating least squares under the photometric model of
``neuface_jax.photometric`` (Lambertian albedo × 9-coefficient SH shading) at the rasterized surface
points: the light given the albedo (``solve_light``), the albedo given the light
(``solve_vertex_albedo``). Only the face region's pixels count (hair, eyes and background are not
skin the model describes).

The clips' albedos, each known on the vertices its images see, are reduced to a mean and K
components by a PCA with missing entries filled from the mean, scaled so that a unit coefficient is
one standard deviation over the corpus (the convention of the identity components). At test time,
``fit_albedo`` solves a clip's coefficients (and lights) with such a model.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import flame_jax
from neuface_jax.photometric import albedo as albedo_lib
from neuface_jax.photometric import raster as raster_lib
from neuface_jax.photometric import render as render_lib

#: Albedo of vertices no image of the corpus sees, when the base has no albedo model of its size.
DEFAULT_ALBEDO = (0.7, 0.5, 0.4)


def prior_albedo(model: flame_jax.FlameModel) -> np.ndarray:
    """[V, 3] the albedo a vertex keeps when nothing sees it: the demo head's procedural mean for the
    demo topology, else a uniform skin tone."""
    demo = albedo_lib.demo_albedo_model()
    if demo.mean.shape[0] == model.num_vertices:
        return np.asarray(demo.mean, np.float32)
    return np.tile(np.asarray(DEFAULT_ALBEDO, np.float32), (model.num_vertices, 1))


def _pixels(vertices, cams, faces, size: int, region, frame_mask):
    """Rasterizes [B, V, 3] meshes: (vertex ids [B, P, 3], barycentrics [B, P, 3], weights [B, P]) of the
    pixels covered by a face-region triangle (all three corners in ``region``) of a valid image."""
    screen = raster_lib.screen_vertices(np.asarray(vertices, np.float64), np.asarray(cams, np.float64), size)
    fi, bary = raster_lib.rasterize_host(screen, faces, size)
    b = fi.shape[0]
    fi, bary = fi.reshape(b, -1), bary.reshape(b, -1, 3)
    covered = fi >= 0
    vid = faces[np.where(covered, fi, 0)]
    in_region = np.all(np.asarray(region)[vid] > 0.5, -1)
    w = (covered & in_region).astype(np.float32) * np.asarray(frame_mask, np.float32)[:, None]
    return vid.astype(np.int32), np.where(covered[..., None], bary, 0.0).astype(np.float32), w


@functools.partial(jax.jit, static_argnames=("iterations",))
def _solve_vertex(vertices, faces, vid, bary, target, w, prior, ridge, light_ridge, iterations: int):
    """Alternating light / per-vertex albedo solves: (albedo [V, 3], coverage [V], light [B, 9, 3])."""
    nv = vertices.shape[-2]
    ybasis = render_lib.sh_basis(jax.vmap(lambda v: flame_jax.vertex_normals(v, faces))(vertices))  # [B, V, 9]
    y_corner = jax.vmap(lambda y, i: y[i])(ybasis, vid)  # [B, P, 3, 9]
    albedo = prior
    light = None
    for _ in range(iterations):
        design = jnp.einsum("bpk,bpkc,bpkl->bpcl", bary, albedo[vid], y_corner)
        light = albedo_lib.solve_light(design, target, w, per_image=True, ridge=light_ridge)
        shade = jnp.einsum("bvl,blc->bvc", ybasis, light)
        s_corner = jax.vmap(lambda s, i: s[i])(shade, vid)
        albedo = jnp.clip(albedo_lib.solve_vertex_albedo(vid, bary, s_corner, target, w, prior, nv, ridge=ridge), 0, 1)
    coverage = jax.ops.segment_sum((w[..., None] * bary).reshape(-1), vid.reshape(-1), num_segments=nv)
    return albedo, coverage, light


@functools.partial(jax.jit, static_argnames=("iterations",))
def _solve_coefficients(vertices, faces, vid, bary, target, w, mean, basis, ridge, light_ridge, iterations: int):
    """Alternating light / albedo-coefficient solves of one clip: (coefficients [K], light [B, 9, 3])."""
    ybasis = render_lib.sh_basis(jax.vmap(lambda v: flame_jax.vertex_normals(v, faces))(vertices))
    y_corner = jax.vmap(lambda y, i: y[i])(ybasis, vid)
    coef = jnp.zeros(basis.shape[0])
    light = None
    for _ in range(iterations):
        albedo = mean + jnp.einsum("j,jvc->vc", coef, basis)
        design = jnp.einsum("bpk,bpkc,bpkl->bpcl", bary, albedo[vid], y_corner)
        light = albedo_lib.solve_light(design, target, w, per_image=True, ridge=light_ridge)
        shade = jnp.einsum("bvl,blc->bvc", ybasis, light)
        s_corner = jax.vmap(lambda s, i: s[i])(shade, vid)  # [B, P, 3, 3]
        d = jnp.einsum("bpk,jbpkc->bpcj", bary, basis[:, vid] * s_corner[None])
        off = jnp.einsum("bpk,bpkc->bpc", bary, mean[vid] * s_corner)
        coef = albedo_lib.solve_albedo_coefficients(d, off, target, w, ridge=ridge)
    return coef, light


def _flatten(vertices, cams, images, frame_mask):
    v = np.asarray(vertices, np.float32)
    b = int(np.prod(v.shape[:-2]))
    return (v.reshape(b, -1, 3), np.asarray(cams, np.float32).reshape(b, 3),
            np.asarray(images, np.float32).reshape((b,) + np.shape(images)[-3:]),
            np.asarray(frame_mask, np.float32).reshape(b))


def clip_vertex_albedo(model: flame_jax.FlameModel, vertices, cams, images, frame_mask, region, *,
                       iterations: int = 3, ridge: float = 0.5, light_ridge: float = 1e-3):
    """One clip's per-vertex albedo from its images at fixed meshes.

    Args:
      model: gives the faces and the prior albedo of unseen vertices.
      vertices: [..., V, 3] posed meshes (model frame), one per image; cams: [..., 3] weak-perspective
        cameras (normalized crop coordinates); images: [..., S, S, 3] crops in [0, 1];
        frame_mask: [...] (0 = no image); region: [V] vertices whose pixels count.

    Returns:
      (albedo [V, 3], coverage [V]: the pixel weight each vertex got, 0 = unseen).
    """
    v, c, img, fm = _flatten(vertices, cams, images, frame_mask)
    faces = np.asarray(model.faces)
    vid, bary, w = _pixels(v, c, faces, img.shape[-2], region, fm)
    albedo, coverage, _ = _solve_vertex(jnp.asarray(v), jnp.asarray(faces), jnp.asarray(vid), jnp.asarray(bary),
                                        jnp.asarray(img.reshape(img.shape[0], -1, 3)), jnp.asarray(w),
                                        jnp.asarray(prior_albedo(model)), ridge, light_ridge, iterations=iterations)
    return np.asarray(albedo), np.asarray(coverage)


def fit_albedo(albedo_model: albedo_lib.AlbedoModel, model: flame_jax.FlameModel, vertices, cams, images,
               frame_mask, region, *, iterations: int = 3, ridge: float = 1.0,
               light_ridge: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Test-time appearance of one clip: the coefficients [K] of ``albedo_model`` and the light per
    image [..., 9, 3] that best explain its images at fixed meshes (arguments as
    :func:`clip_vertex_albedo`)."""
    v, c, img, fm = _flatten(vertices, cams, images, frame_mask)
    faces = np.asarray(model.faces)
    vid, bary, w = _pixels(v, c, faces, img.shape[-2], region, fm)
    coef, light = _solve_coefficients(jnp.asarray(v), jnp.asarray(faces), jnp.asarray(vid), jnp.asarray(bary),
                                      jnp.asarray(img.reshape(img.shape[0], -1, 3)), jnp.asarray(w),
                                      jnp.asarray(albedo_model.mean), jnp.asarray(albedo_model.basis), ridge,
                                      light_ridge, iterations=iterations)
    return np.asarray(coef), np.asarray(light).reshape(np.shape(frame_mask) + (9, 3))


def albedo_pca(albedos, coverages, prior, num_components: int, *, min_coverage: float = 0.5):
    """Mean and K components (unit coefficient = one standard deviation) of per-clip albedos.

    Args:
      albedos: [N, V, 3]; coverages: [N, V] (a vertex counts for a clip when its coverage reaches
        ``min_coverage``); prior: [V, 3] the mean of vertices no clip sees.

    Returns:
      ``(AlbedoModel(mean [V, 3], basis [K', V, 3]), seen [V] bool)`` with K' = min(K, N - 1).
    """
    a = np.asarray(albedos, np.float64)
    seen_c = np.asarray(coverages) >= min_coverage  # [N, V]
    count = seen_c.sum(0)
    seen = count > 0
    mean = np.where(seen[:, None], (a * seen_c[..., None]).sum(0) / np.maximum(count, 1)[:, None],
                    np.asarray(prior, np.float64))
    filled = np.where(seen_c[..., None], a, mean[None])  # missing entries: the mean (no variation)
    centred = (filled - mean[None]).reshape(len(a), -1)
    _, sig, vt = np.linalg.svd(centred, full_matrices=False)
    k = max(0, min(int(num_components), len(a) - 1, len(sig)))
    std = sig[:k] / np.sqrt(len(a))
    basis = (vt[:k] * std[:, None]).reshape(k, -1, 3)
    return albedo_lib.AlbedoModel(mean.astype(np.float32), basis.astype(np.float32)), seen


__all__ = ["DEFAULT_ALBEDO", "albedo_pca", "clip_vertex_albedo", "fit_albedo", "prior_albedo"]
