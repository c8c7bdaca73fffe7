"""The photometric and silhouette loss terms, registered by name in the loss registry.

``photometric_loss`` compares a ``Rendering`` with images: each covered pixel has a model colour
(albedo × SH shading) and a position — by default the pixel itself, coloured by the surface point now
under it (``align="pixel"``), else the current position of the pixel's surface point, where the image
is sampled (bilinear) — at every level of a Gaussian image pyramid (blurred copies widen the basin:
the coarse levels see the face's outline from further away; ``level_steps`` brings them in coarse to
fine), and the per-pixel colour error goes through a robust penalty —
Geman–McClure ``e²/(e² + c²)`` or a trimmed L1 that drops each image's worst pixels — so that
occluders, hair and specularities the model cannot explain have bounded influence.

Masks (``pixel_weights``): surface points of the mesh's face region only (``albedo.face_region``,
no scalp, ears or neck); frame validity; and a skin attention on the image — a per-image Gaussian
colour model in chromaticity fitted (median / MAD) to the pixels the face covers, as a stand-in for
Deep3DFaceRecon's skin classifier. Inside MediaPipe's face oval (from the landmarks, when all its
points are known) non-skin pixels are down-weighted; outside it a face surface point means the model
is too large, so its error is kept at full weight.

``silhouette_loss``: a two-sided chamfer distance between the rendered face region's outline
(its boundary pixels' surface points, which move with the mesh) and MediaPipe's face oval — the
iBUG jaw points 0–16 (MediaPipe face-oval points) or a ``face_oval`` polygon in the batch — so the
rendered jaw line slides onto the oval instead of matching 17 fixed mesh points.

Registered terms (``core.losses`` resolves them by name once this package is imported):

* ``"photometric"`` — ``photometric_term(batch, **options)``; options are ``PhotometricConfig``
  fields (a schedule — ``start_step``, ``ramp_steps``, ``level_steps`` — reads ``batch["step"]``). Reads ``images`` [..., S, S, 3] (the encoder crops, RGB in [0, 1]), ``vertices`` [..., V, 3],
  ``cam`` [..., 3], ``faces`` [F, 3]; optional ``frame_mask`` [...], ``landmarks_target`` /
  ``landmarks_mask`` (the face oval), ``albedo`` [..., V, 3] or [V, 3] and ``sh_light`` [..., 9, 3]
  (used when the caller optimizes them; otherwise they are solved in closed form each step).
* ``"silhouette"`` (alias ``"face_oval"``) — ``silhouette_term(batch, **options)``; reads the same
  geometry keys and the oval.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.geometry import vertex_normals
from flame_jax.rotations import axis_angle_to_matrix
from neuface_jax.common.settings import setting
from neuface_jax.core import camera as camera_lib
from neuface_jax.core import losses as losses_lib
from neuface_jax.photometric import albedo as albedo_lib
from neuface_jax.photometric import raster as raster_lib
from neuface_jax.photometric import render as render_lib

logger = logging.getLogger(__name__)

#: iBUG-68 jaw contour (MediaPipe face-oval points in the MediaPipe → iBUG map).
JAW_IDS = tuple(range(17))
#: Rounds of occluder rejection and appearance re-solve (the first solve's light is bent by the occluder).
_OUTLIER_PASSES = 2
#: Occluder-pixel threshold of ``frame_weights_in="pixels"`` when ``outliers`` is off.
_PIXEL_OUTLIERS = 2.0


@dataclasses.dataclass(frozen=True)
class PhotometricConfig:
    """Options of the ``"photometric"`` term (pass them as the loss config's options dict)."""

    refresh_every: int = setting(8, "Re-rasterize every N evaluations of the same images (1 = every step). "
                                 "NeuFace needs 1: it moves every frame at once through the encoder's weights, and "
                                 "pixels that left their stale triangles extrapolate colours (docs/photometric.md).")
    penalty: str = setting("geman_mcclure", "Robust per-pixel penalty.", choices=("geman_mcclure", "trimmed", "l1", "l2"))
    scale: float = setting(0.15, "Geman-McClure scale c (colour units, RGB in [0, 1]).")
    trim: float = setting(0.2, "Trimmed penalty: fraction of each image's worst pixels dropped.")
    levels: int = setting(3, "Image pyramid levels (blur sigma 0, 1, 2, 4, ... pixels of the crop).")
    albedo: str = setting("auto", "Albedo: 'model' (the demo head's basis, coefficients solved per batch), "
                          "'vertex' (free per-vertex RGB solved per batch), 'batch' (batch['albedo']), "
                          "'auto' (model on the demo head, else vertex).", choices=("auto", "model", "vertex", "batch"))
    light: str = setting("clip", "SH light: one per batch ('clip': a clip, or a NeuFace chunk, lit the same "
                         "throughout, so an occluder cannot be explained by re-lighting its frame), one per image "
                         "('frame': a batch of unrelated crops) or batch['sh_light'].", choices=("frame", "clip", "batch"))
    light_prior: float = setting(0.0, "With light='frame': each image's light is pulled toward the batch's one "
                                 "light with this weight per weighted pixel (0: independent per-image lights), "
                                 "so an occluded image cannot re-light itself to explain the occluder.")
    region: str = setting("face", "Surface points compared: the mesh's face region or 'all'.", choices=("face", "all"))
    skin: bool = setting(True, "Skin attention: down-weight pixels whose colour is not the face's.")
    skin_floor: float = setting(0.25, "Weight of a non-skin pixel where the face oval is unknown.")
    outside_oval: float = setting(1.0, "Weight of face-region pixels outside MediaPipe's face oval (where the mesh "
                                  "is larger than the face; 0: leave the outline to the silhouette term).")
    solve_iterations: int = setting(3, "Alternations of the light and albedo solves.")
    solve_stride: int = setting(2, "Pixel stride of the appearance solves (1 = every pixel).")
    light_ridge: float = setting(1e-3, "Ridge on the non-constant SH coefficients (per weighted pixel).")
    albedo_ridge: float = setting(0.01, "Ridge of the albedo solves (a strong one leaves albedo the geometry then "
                                  "bends to explain).")
    align: str = setting("pixel", "Between raster refreshes, compare each image pixel with the surface point under it "
                         "now ('pixel') or each surface point with the image where it projects now ('surface'; it "
                         "lets the mesh slide its points onto flat skin and shrink).", choices=("pixel", "surface"))
    camera_gradient: bool = setting(True, "Let the term move the camera (scale, translation) too: the identity a "
                                    "landmark fit leaves is only reached by moving identity, pose and camera together.")
    start_step: int = setting(0, "Optimizer step at which the term starts (the landmarks fit alone before it; "
                              "needs the fit's step counter, batch['step']).")
    ramp_steps: int = setting(0, "Steps over which its weight ramps linearly from 0 to 1 after start_step.")
    level_steps: int = setting(0, "Coarse to fine: the blurred levels start first, each finer level this many "
                               "steps after the next coarser one (0: all levels from the start).")
    views: str = setting("consensus", "Multi-view clips ([..., W, V, 3] meshes with batch['global_pose']): each view "
                         "renders its own mesh ('own'), or the views' mean canonical mesh posed as that view "
                         "('consensus'): the term then moves only what the views share, so image noise in one "
                         "view cannot pull the views apart.", choices=("own", "consensus"))
    outliers: float = setting(0.0, "Occluder rejection (0: off): a pixel whose colour error (after the appearance "
                              "solve) exceeds the batch's typical error at the same surface point by this many mean "
                              "errors is dropped and the appearance re-solved. It drops a hand over the mouth, but "
                              "also feature edges of clean frames, which cost landmark accuracy (docs/photometric.md).")
    frame_outliers: float = setting(1.5, "Per-image robust weight (0: off): an image whose mean colour error (after "
                                    "the appearance solve) exceeds this many times the batch's median image error "
                                    "is down-weighted by (k · median / error)², and the appearance re-solved.")
    frame_weights_in: str = setting("solve", "Where the frame weights apply: the appearance solve only ('solve': an "
                                    "occluded frame cannot bend the clip's albedo and light, and every frame's "
                                    "geometry still sees its whole face under the robust penalty), the solve and the "
                                    "loss ('loss': a frame whose error spikes for a step loses the term and jumps), "
                                    "or the solve, and in the loss only the occluder pixels (occlusion_mask, "
                                    "threshold `outliers` or 2) of the down-weighted frames ('pixels').",
                                    choices=("loss", "solve", "pixels"))


@dataclasses.dataclass(frozen=True)
class SilhouetteConfig:
    """Options of the ``"silhouette"`` term."""

    refresh_every: int = setting(8, "Re-rasterize every N evaluations of the same images.")
    densify: int = setting(4, "Points per segment of the oval polyline.")
    region: str = setting("face", "Outline of the mesh's face region or of the whole mesh ('all').",
                          choices=("face", "all"))
    start_step: int = setting(0, "Optimizer step at which the term starts (needs batch['step']).")
    ramp_steps: int = setting(0, "Steps over which its weight ramps linearly from 0 to 1 after start_step.")


# --------------------------------------------------------------------------- image helpers
def bilinear_sample(image, points) -> jax.Array:
    """Samples an image [H, W, C] at crop-pixel points [..., 2] (x right, y down, centres at +0.5),
    bilinear, edge-clamped → [..., C]."""
    h, w = image.shape[:2]
    x = jnp.clip(points[..., 0] - 0.5, 0.0, w - 1.0)
    y = jnp.clip(points[..., 1] - 0.5, 0.0, h - 1.0)
    x0 = jnp.clip(jnp.floor(x), 0, w - 2).astype(jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, h - 2).astype(jnp.int32)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """[n, n] row-normalized Gaussian weights (edge pixels renormalized, not padded)."""
    i = np.arange(n)
    k = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    return (k / k.sum(1, keepdims=True)).astype(np.float32)


def gaussian_blur(images, sigma: float) -> jax.Array:
    """Separable Gaussian blur of [..., H, W, C] images (two small matrix products); sigma 0 returns
    them as they are."""
    if sigma <= 0:
        return images
    h, w = images.shape[-3], images.shape[-2]
    kh = jnp.asarray(_blur_matrix(h, sigma), images.dtype)
    kw = jnp.asarray(_blur_matrix(w, sigma), images.dtype)
    return jnp.einsum("ij,...jwc,kw->...ikc", kh, images, kw)


def pyramid(images, levels: int) -> list[jax.Array]:
    """Blurred copies of the images at sigma 0, 1, 2, 4, ... pixels (same resolution)."""
    return [gaussian_blur(images, 0.0 if i == 0 else 2.0 ** (i - 1)) for i in range(max(int(levels), 1))]


def robust_penalty(err, config: PhotometricConfig, mask) -> tuple[jax.Array, jax.Array]:
    """Per-pixel colour error norms [..., P] → (penalty values, mask) under ``config.penalty``.
    The trimmed mask drops, per image (last axis), the worst ``trim`` fraction (threshold fixed)."""
    if config.penalty == "geman_mcclure":
        c2 = config.scale**2
        return err * err / (err * err + c2), mask
    if config.penalty == "l2":
        return err * err, mask
    if config.penalty == "l1":
        return err, mask
    if config.penalty == "trimmed":
        e = jax.lax.stop_gradient(jnp.where(mask > 0, err, jnp.nan))
        thr = jnp.nanquantile(e, 1.0 - config.trim, axis=-1, keepdims=True)
        return err, mask * (jnp.nan_to_num(e, nan=jnp.inf) <= jnp.nan_to_num(thr, nan=jnp.inf))
    raise ValueError(f"unknown penalty {config.penalty!r}")


def skin_attention(images, weights, *, width: float = 2.5, iterations: int = 2) -> jax.Array:
    """Per-pixel skin probability [..., P] of images [..., P, 3]: a Gaussian colour model in
    chromaticity (r, g)/(r+g+b), fitted to the pixels ``weights`` [..., P] select by a weighted mean
    and standard deviation, re-fitted ``iterations`` times with the pixels reweighted by their own
    probability (so a minority of non-skin pixels does not widen it)."""
    rgb = jnp.maximum(images, 1e-4)
    chroma = rgb[..., :2] / jnp.sum(rgb, -1, keepdims=True)
    w = weights
    prob = jnp.ones_like(weights)
    for _ in range(max(int(iterations), 1) + 1):
        ww = (w * prob)[..., None]
        tot = jnp.maximum(jnp.sum(ww, -2, keepdims=True), 1e-6)
        mean = jnp.sum(ww * chroma, -2, keepdims=True) / tot
        std = jnp.sqrt(jnp.sum(ww * (chroma - mean) ** 2, -2, keepdims=True) / tot)
        std = jnp.maximum(std, 0.01)
        prob = jnp.exp(-0.5 * jnp.sum(((chroma - mean) / (width * std)) ** 2, -1))
    return prob


# --------------------------------------------------------------------------- the face oval
def oval_polygon(batch) -> tuple[jax.Array, jax.Array, bool] | None:
    """The face oval in normalized crop coordinates: (points [..., K, 2], valid [...], closed).

    ``batch["face_oval"]`` (a closed polygon, e.g. MediaPipe's 36 oval points) when present, else the
    iBUG-68 jaw points 0–16 of ``landmarks_target`` (an open curve from ear to ear) when the targets
    have 68 points; None otherwise. An image's oval is valid when all its points are finite and
    (for landmarks) unmasked.
    """
    if "face_oval" in batch:
        pts = jnp.asarray(batch["face_oval"])
        valid = jnp.all(jnp.isfinite(pts), axis=(-1, -2))
        return jnp.nan_to_num(pts), valid, True
    target = batch.get("landmarks_target")
    if target is None or target.shape[-2] != 68:
        return None
    pts = jnp.asarray(target)[..., JAW_IDS, :]
    valid = jnp.all(jnp.isfinite(pts), axis=(-1, -2))
    lm = batch.get("landmarks_mask")
    if lm is not None:
        valid = valid & jnp.all(jnp.asarray(lm)[..., JAW_IDS] > 0, -1)
    return jnp.nan_to_num(pts), valid, False


def oval_mask(points_px, polygon_px, closed: bool) -> jax.Array:
    """Inside the oval: points [P, 2] (pixels), polygon [K, 2] (pixels) → bool [P]. An open jaw curve is
    closed by its chord, and everything beyond the chord (away from the chin) counts as inside."""
    inside = albedo_lib.points_in_polygon(points_px, polygon_px)
    if closed:
        return inside
    a, b = polygon_px[0], polygon_px[-1]
    chin = polygon_px[polygon_px.shape[0] // 2]
    cross = lambda p: (b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0])  # noqa: E731
    beyond = jnp.sign(cross(points_px)) != jnp.sign(cross(chin))
    return inside | beyond


# --------------------------------------------------------------------------- rasterization and masks
def _region_per_face(faces, num_vertices: int, region: str):
    if region == "all":
        return None
    r = albedo_lib.face_region_for(num_vertices, faces.shape[0])
    if r is None:
        logger.info("no face region registered for a %d-vertex mesh: the whole mesh is used", num_vertices)
        return None
    return (jnp.asarray(r)[jnp.asarray(faces)].mean(-1) > 0.5).astype(jnp.float32)  # most corners inside


def _geometry(batch, term: str):
    images = jnp.asarray(losses_lib._get(batch, "images", term))
    verts = jnp.asarray(losses_lib._get(batch, "vertices", term))
    cam = jnp.asarray(losses_lib._get(batch, "cam", term))
    faces = jnp.asarray(losses_lib._get(batch, "faces", term), jnp.int32)
    lead = verts.shape[:-2]
    if images.shape[:-3] != lead or images.shape[-3] != images.shape[-2] or images.shape[-1] != 3:
        raise ValueError(f"loss term {term!r}: images must be [..., S, S, 3] with the meshes' batch {lead}, "
                         f"got {images.shape}")
    fm = batch.get("frame_mask")
    fm = jnp.ones(lead, jnp.float32) if fm is None else jnp.broadcast_to(jnp.asarray(fm, jnp.float32), lead)
    return images, verts, cam, faces, fm


def pixel_weights(raster, faces, num_vertices: int, frame_mask, *, region: str = "face") -> jax.Array:
    """[..., H, W] float weights of the covered pixels whose surface point is in the face region."""
    covered = raster.face_index >= 0
    per_face = _region_per_face(faces, num_vertices, region)
    w = covered.astype(jnp.float32)
    if per_face is not None:
        w = w * per_face[jnp.where(covered, raster.face_index, 0)]
    return w * frame_mask[..., None, None]


# --------------------------------------------------------------------------- appearance solve
def _solve_appearance(verts, faces, raster, target, weights, config: PhotometricConfig):
    """Albedo [..., V, 3] (or [V, 3]) and SH light [..., 9, 3] (or [9, 3]) fitted to the image colours
    ``target`` [..., H, W, 3] at the fixed surface points, by alternating least squares (no gradient)."""
    verts = jax.lax.stop_gradient(verts)
    lead = verts.shape[:-2]
    nv = verts.shape[-2]
    b_count = int(np.prod(lead)) if lead else 1
    vf = verts.reshape((b_count,) + verts.shape[-2:])
    st = max(int(config.solve_stride), 1)  # a sparser pixel grid is plenty for 9 + 7 unknowns
    fi = raster.face_index[..., ::st, ::st].reshape(b_count, -1)
    bary = raster.barycentric[..., ::st, ::st, :].reshape(b_count, -1, 3)
    w = weights[..., ::st, ::st].reshape(b_count, -1)
    tgt = target[..., ::st, ::st, :].reshape(b_count, -1, 3)
    covered = fi >= 0
    vid = faces[jnp.where(covered, fi, 0)]  # [B, P, 3]
    bary = jnp.where(covered[..., None], bary, 0.0)
    ybasis = render_lib.sh_basis(jax.vmap(lambda v: vertex_normals(v, faces))(vf))  # [B, V, 9]
    y_corner = jax.vmap(lambda y, i: y[i])(ybasis, vid)  # [B, P, 3, 9]

    mode = config.albedo
    if mode == "auto":
        demo = albedo_lib.demo_albedo_model()
        mode = "model" if demo.mean.shape[0] == nv else "vertex"
    if mode == "model":
        model = albedo_lib.demo_albedo_model()
        if model.mean.shape[0] != nv:
            raise ValueError(f"photometric albedo='model' is the demo head's ({model.mean.shape[0]} vertices); "
                             f"this mesh has {nv}: use albedo='vertex'")
        mean, basis = jnp.asarray(model.mean), jnp.asarray(model.basis)
        coef = jnp.zeros(basis.shape[0])
        albedo = mean
    else:
        prior = jnp.asarray([0.7, 0.5, 0.4])
        albedo = jnp.broadcast_to(prior, (nv, 3))
    per_image = config.light == "frame"

    def solve_light(design):
        if per_image and config.light_prior > 0:  # per-image lights tied to the batch's one light
            shared = albedo_lib.solve_light(design, tgt, w, per_image=False, ridge=config.light_ridge)
            return albedo_lib.solve_light(design, tgt, w, per_image=True, ridge=config.light_ridge, prior=shared,
                                          prior_weight=config.light_prior)
        return albedo_lib.solve_light(design, tgt, w, per_image=per_image, ridge=config.light_ridge)

    light = None
    for _ in range(max(int(config.solve_iterations), 1)):
        a_corner = albedo[vid]  # [B, P, 3, 3(channel)]
        design = jnp.einsum("bpk,bpkc,bpkl->bpcl", bary, a_corner, y_corner)
        light = solve_light(design)
        lb = light if per_image else jnp.broadcast_to(light, (b_count,) + light.shape)
        shade = jnp.einsum("bvl,blc->bvc", ybasis, lb)  # [B, V, 3]
        s_corner = jax.vmap(lambda s, i: s[i])(shade, vid)  # [B, P, 3, 3]
        if mode == "model":
            d = jnp.einsum("bpk,jbpkc->bpcj", bary, basis[:, vid] * s_corner[None])
            off = jnp.einsum("bpk,bpkc->bpc", bary, mean[vid] * s_corner)
            coef = albedo_lib.solve_albedo_coefficients(d, off, tgt, w, ridge=config.albedo_ridge)
            albedo = mean + jnp.einsum("j,jvc->vc", coef, basis)
        else:
            albedo = albedo_lib.solve_vertex_albedo(vid, bary, s_corner, tgt, w, albedo, nv,
                                                    ridge=config.albedo_ridge)
    albedo = jnp.clip(albedo, 0.0, 1.0)
    a_corner = albedo[vid]
    design = jnp.einsum("bpk,bpkc,bpkl->bpcl", bary, a_corner, y_corner)
    light = solve_light(design)
    if per_image:
        light = light.reshape(lead + light.shape[1:])
    return jax.lax.stop_gradient(albedo), jax.lax.stop_gradient(light)


# --------------------------------------------------------------------------- views and occluders
def view_consensus(vertices, global_pose, view_mask) -> jax.Array:
    """Each view's mesh replaced by the views' mean canonical mesh, posed as that view.

    Args:
      vertices: [..., W, V, 3] one mesh per view (W >= 2).
      global_pose: [..., W, 3] each view's head rotation (axis-angle).
      view_mask: [..., W] which views count in the mean.

    Returns:
      [..., W, V, 3]. Canonical meshes are taken about each mesh's centroid (not the root joint), so
      views that agree are returned as they are; the gradient of anything computed from the result
      reaches every counted view's mesh equally.
    """
    r = axis_angle_to_matrix(jnp.asarray(global_pose))  # [..., W, 3, 3]
    centre = jnp.mean(vertices, -2, keepdims=True)
    canon = jnp.einsum("...ni,...ij->...nj", vertices - centre, r)  # rows: (Rᵀ p)ᵀ = pᵀ R
    w = jnp.asarray(view_mask, vertices.dtype)[..., None, None]
    mean = jnp.sum(canon * w, -3, keepdims=True) / jnp.maximum(jnp.sum(w, -3, keepdims=True), 1e-6)
    return centre + jnp.einsum("...nj,...ij->...ni", mean, r)


def occlusion_mask(err, face_index, barycentric, faces, weights, num_vertices: int, k: float) -> jax.Array:
    """1 for the pixels to keep, 0 for occluder pixels ([B, P] each; no gradient).

    A pixel is an occluder pixel when its colour error ``err`` exceeds the typical error at its
    surface point — the weighted mean, over every image of the batch, of the errors of the pixels
    showing the same vertices (splatted to the triangle's corners by barycentric weight) — by ``k``
    times the batch's mean error. An object over the mouth in some frames stands out against the
    other frames; a misfit that every frame shares (the mesh's jaw past the real one) does not.
    """
    err = jax.lax.stop_gradient(err)
    w = (weights > 0).astype(err.dtype)
    covered = face_index >= 0
    vid = faces[jnp.where(covered, face_index, 0)]  # [B, P, 3]
    bw = jnp.where(covered[..., None], barycentric, 0.0) * w[..., None]
    sums = jnp.zeros(num_vertices, err.dtype).at[vid].add(bw * err[..., None])
    counts = jnp.zeros(num_vertices, err.dtype).at[vid].add(bw)
    typical_v = sums / jnp.maximum(counts, 1e-6)
    typical = jnp.sum(typical_v[vid] * jnp.where(covered[..., None], barycentric, 0.0), -1)
    scale = jnp.sum(err * w) / jnp.maximum(jnp.sum(w), 1.0)
    return (err <= typical + k * scale).astype(err.dtype)


def frame_weights(err, weights, k: float) -> jax.Array:
    """[B] per-image weights (no gradient): 1, or ``(k · m / e)²`` for an image whose weighted mean
    colour error ``e`` exceeds ``k`` times the median ``m`` of the batch's images (those with weighted
    pixels). A frame with a hand over the mouth stands out against the clip's other frames once the
    appearance is shared; a misfit the whole clip shares does not. err, weights: [B, P]."""
    err = jax.lax.stop_gradient(err)
    tot = jnp.sum(weights, -1)
    e = jnp.sum(err * weights, -1) / jnp.maximum(tot, 1e-6)
    has = tot > 0
    med = jnp.nanmedian(jnp.where(has, e, jnp.nan))
    w = jnp.clip((k * med / jnp.maximum(e, 1e-6)) ** 2, 0.0, 1.0)
    return jnp.where(has & jnp.isfinite(w), w, 0.0)


# --------------------------------------------------------------------------- the photometric loss
def photometric_loss(rendering: render_lib.Rendering, images, weights, *, levels: int = 3,
                     config: PhotometricConfig = PhotometricConfig()) -> tuple[jax.Array, jax.Array]:
    """Robust colour error between a rendering and images at its surface points' current positions.

    Level 0 compares each surface point's colour with the image sampled (bilinear) where the point
    now projects. Level l > 0 compares the image blurred by sigma 2^(l-1) pixels, sampled there, with
    the same blur of the rendering composited over the image (the image where the mesh does not
    cover), so that at a perfect fit every level's error is zero and the blur only widens the basin.

    Args:
      rendering: ``render_batch`` output, [..., H, W] (H = W = S).
      images: [..., S, S, 3] RGB in [0, 1].
      weights: [..., S, S] per-pixel weights (``pixel_weights`` × skin attention × ...).
      levels: pyramid levels (each level's error has equal weight).
      config: penalty settings.

    Returns:
      (values [L, ..., S·S], mask of the same shape): ``core.losses.masked_mean`` reduces them.
    """
    images = jax.lax.stop_gradient(jnp.asarray(images, jnp.float32))
    lead = images.shape[:-3]
    n = int(np.prod(lead)) if lead else 1
    pts = rendering.points.reshape((n, -1, 2))
    cover = rendering.mask[..., None]
    composite = cover * rendering.rgb + (1.0 - cover) * images
    w = jnp.broadcast_to(weights, rendering.mask.shape).reshape(n, -1)
    vals, masks = [], []
    for i, level in enumerate(pyramid(images, levels)):
        model = rendering.rgb if i == 0 else gaussian_blur(composite, 2.0 ** (i - 1))
        sampled = jax.vmap(bilinear_sample)(level.reshape((n,) + level.shape[-3:]), pts)
        diff = sampled - model.reshape(n, -1, 3)
        err = jnp.sqrt(jnp.sum(diff * diff, -1) + 1e-8)
        v, m = robust_penalty(err, config, w)
        vals.append(v.reshape(lead + v.shape[-1:]))
        masks.append(m.reshape(lead + m.shape[-1:]))
    return jnp.stack(vals), jnp.stack(masks)


def _step(batch, term: str) -> jax.Array:
    if "step" not in batch:
        raise ValueError(f"loss term {term!r}: a schedule (start_step / ramp_steps / level_steps) needs the "
                         "optimizer step in batch['step'] (core.fit passes it)")
    return jnp.asarray(batch["step"], jnp.float32)


def schedule_weight(batch, start_step: int, ramp_steps: int, term: str) -> jax.Array | float:
    """The term's weight factor at ``batch['step']``: 0 before ``start_step``, then a linear ramp to 1
    over ``ramp_steps`` (1 when no schedule is set)."""
    if start_step <= 0 and ramp_steps <= 0:
        return 1.0
    since = _step(batch, term) - start_step
    if ramp_steps <= 0:
        return (since >= 0).astype(jnp.float32)
    return jnp.clip((since + 1.0) / ramp_steps, 0.0, 1.0)


def level_weights(batch, config: PhotometricConfig, levels: int) -> jax.Array | None:
    """[L] 0/1 weights of the pyramid levels under the coarse-to-fine schedule (None: all on). Level l
    (0 the sharpest) starts ``(L - 1 - l) · level_steps`` steps after ``start_step``."""
    if config.level_steps <= 0 or levels <= 1:
        return None
    since = _step(batch, "photometric") - config.start_step
    delay = (levels - 1 - jnp.arange(levels)) * config.level_steps
    return (since >= delay).astype(jnp.float32)


class TermInputs(NamedTuple):
    """What the photometric term compares, before the differentiable render (``photometric_inputs``)."""

    images: jax.Array  # [..., S, S, 3]
    vertices: jax.Array  # [..., V, 3] (the views' consensus when config.views says so)
    cam: jax.Array  # [..., 3]
    faces: jax.Array  # [F, 3]
    raster: raster_lib.Raster
    attention: jax.Array  # [..., S, S] face region × validity × skin attention (no occluder rejection)
    weights: jax.Array  # [..., S, S] the pixel weights of the loss (attention × occluder rejection)
    albedo: jax.Array
    light: jax.Array


def photometric_inputs(batch, config: PhotometricConfig) -> TermInputs:
    """The term's geometry, raster, pixel weights and appearance for one loss batch (see
    ``photometric_term``); public so that the masks can be looked at."""
    images, verts, cam, faces, fm = _geometry(batch, "photometric")
    if config.views == "consensus" and verts.ndim >= 4 and verts.shape[-3] >= 2 and "global_pose" in batch:
        verts = view_consensus(verts, batch["global_pose"], fm)
    if not config.camera_gradient:
        cam = jax.lax.stop_gradient(cam)
    size = images.shape[-2]
    nv = verts.shape[-2]
    raster = raster_lib.rasterize_cached(verts, cam, faces, size, images, refresh_every=config.refresh_every,
                                         tag="photometric")
    weights = pixel_weights(raster, faces, nv, fm, region=config.region)
    lead = verts.shape[:-2]
    n = int(np.prod(lead)) if lead else 1
    # The image colour each surface point sees now (for the appearance solve and skin attention).
    if config.align == "pixel":
        seen = images.reshape(lead + (size * size, 3))
    else:
        points = render_lib.surface_points(jax.lax.stop_gradient(verts), faces, jax.lax.stop_gradient(cam), raster)
        seen = jax.vmap(bilinear_sample)(images.reshape((n,) + images.shape[-3:]),
                                         points.reshape(n, -1, 2)).reshape(lead + (size * size, 3))
    if config.skin:
        skin = skin_attention(seen, weights.reshape(lead + (-1,)))
        oval = oval_polygon(batch)
        floor = config.skin_floor
        image_w = floor + (1 - floor) * skin
        if oval is not None:
            pts, valid, closed = oval
            pix = render_lib.pixel_centres(size).reshape(-1, 2)
            poly_px = camera_lib.normalized_to_pixels(pts, size).reshape((n,) + pts.shape[-2:])
            inside = jax.vmap(lambda p: oval_mask(pix, p, closed))(poly_px).reshape(lead + (-1,))
            image_w = jnp.where(valid[..., None], jnp.where(inside, skin, config.outside_oval), image_w)
        weights = weights * jax.lax.stop_gradient(image_w).reshape(weights.shape)
    attention = weights
    if config.albedo == "batch" or config.light == "batch":
        albedo = losses_lib._get(batch, "albedo", "photometric")
        light = losses_lib._get(batch, "sh_light", "photometric")
        if config.albedo != "batch" or config.light != "batch":
            raise ValueError("photometric: albedo='batch' and light='batch' go together")
    else:
        target = seen.reshape(lead + (size, size, 3))
        albedo, light = _solve_appearance(verts, faces, raster, target, weights, config)

        def error(albedo, light):  # [n, P] colour error of the solved appearance (no gradient)
            fixed = render_lib.render_batch(jax.lax.stop_gradient(verts), faces, jax.lax.stop_gradient(cam), albedo,
                                            light, raster, pixel_aligned=config.align == "pixel")
            return jnp.linalg.norm(fixed.rgb - target, axis=-1).reshape(n, -1)

        for _ in range(_OUTLIER_PASSES if config.outliers > 0 else 0):  # a second pass sees a cleaner light
            keep = occlusion_mask(error(albedo, light), raster.face_index.reshape(n, -1),
                                  raster.barycentric.reshape(n, -1, 3), faces, weights.reshape(n, -1), nv,
                                  config.outliers)
            weights = weights * keep.reshape(weights.shape)
            albedo, light = _solve_appearance(verts, faces, raster, target, weights, config)
        if config.frame_outliers > 0:
            frame_w = frame_weights(error(albedo, light), weights.reshape(n, -1), config.frame_outliers)
            solve_w = weights * frame_w.reshape(lead + (1, 1))
            albedo, light = _solve_appearance(verts, faces, raster, target, solve_w, config)
            if config.frame_weights_in == "loss":
                weights = solve_w
            elif config.frame_weights_in == "pixels":  # the flagged frames lose only their occluder pixels
                keep = occlusion_mask(error(albedo, light), raster.face_index.reshape(n, -1),
                                      raster.barycentric.reshape(n, -1, 3), faces, weights.reshape(n, -1), nv,
                                      config.outliers if config.outliers > 0 else _PIXEL_OUTLIERS)
                flagged = (frame_w < 1.0)[:, None]
                weights = weights * jnp.where(flagged, keep, 1.0).reshape(weights.shape)
    return TermInputs(images, verts, cam, faces, raster, attention, weights, albedo, light)


def photometric_term(batch, **options):
    """Registered ``"photometric"`` term (options: ``PhotometricConfig`` fields)."""
    config = PhotometricConfig(**options)
    x = photometric_inputs(batch, config)
    rendering = render_lib.render_batch(x.vertices, x.faces, x.cam, x.albedo, x.light, x.raster,
                                        pixel_aligned=config.align == "pixel")
    values, mask = photometric_loss(rendering, x.images, x.weights, levels=config.levels, config=config)
    active = level_weights(batch, config, values.shape[0])
    if active is not None:
        mask = mask * active.reshape((-1,) + (1,) * (mask.ndim - 1))
    return values * schedule_weight(batch, config.start_step, config.ramp_steps, "photometric"), mask


# --------------------------------------------------------------------------- silhouette / face oval
def _boundary(mask) -> jax.Array:
    """[H, W] bool → pixels of the mask with a 4-neighbour outside it."""
    p = jnp.pad(mask, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def _outward(mask) -> jax.Array:
    """[H, W] bool → [H, W, 2] unit direction (x, y) from each pixel toward its 4-neighbours outside the
    mask (0 where none): the outline's surface point is half a pixel inside the silhouette's edge."""
    p = jnp.pad(mask, 1, constant_values=False)
    out = lambda q: (~q).astype(jnp.float32)  # noqa: E731
    dx = out(p[1:-1, 2:]) - out(p[1:-1, :-2])
    dy = out(p[2:, 1:-1]) - out(p[:-2, 1:-1])
    d = jnp.stack([dx, dy], -1)
    return d / jnp.maximum(jnp.linalg.norm(d, axis=-1, keepdims=True), 1e-6)


def _densify(poly, k: int, closed: bool) -> jax.Array:
    nxt = jnp.roll(poly, -1, axis=0) if closed else poly[1:]
    start = poly if closed else poly[:-1]
    t = (jnp.arange(k) / k)[None, :, None]
    pts = (start[:, None] + t * (nxt - start)[:, None]).reshape(-1, 2)
    return pts if closed else jnp.concatenate([pts, poly[-1:]], 0)


def silhouette_loss(points, outline, polygon_px, valid, closed: bool, *, densify: int = 4) -> jax.Array:
    """Two-sided chamfer distance (pixels) between outline points and a polyline, for one image.

    Args:
      points: [P, 2] current positions of the rendered outline's surface points (pixels).
      outline: [P] bool, which points are outline points.
      polygon_px: [K, 2] the oval; valid: bool; closed: a closed polygon or an open jaw curve (then
        only the outline on the chin's side of the ear-to-ear chord is matched).

    Returns:
      scalar: mean nearest distance outline → oval plus oval → outline (0 when invalid or empty).
    """
    target = _densify(polygon_px, densify, closed)
    if not closed:
        a, b = polygon_px[0], polygon_px[-1]
        chin = polygon_px[polygon_px.shape[0] // 2]
        cross = lambda p: (b[0] - a[0]) * (p[..., 1] - a[1]) - (b[1] - a[1]) * (p[..., 0] - a[0])  # noqa: E731
        fixed = jax.lax.stop_gradient(points)
        outline = outline & (jnp.sign(cross(fixed)) == jnp.sign(cross(chin)))
    d = jnp.sqrt(jnp.sum((points[:, None] - target[None]) ** 2, -1) + 1e-6)  # [P, K]
    big = 1e6
    d_out = jnp.min(d, 1)
    n_out = jnp.sum(outline)
    to_oval = jnp.sum(jnp.where(outline, d_out, 0.0)) / jnp.maximum(n_out, 1)
    to_outline = jnp.mean(jnp.min(jnp.where(outline[:, None], d, big), 0))
    ok = valid & (n_out > 0)
    return jnp.where(ok, to_oval + to_outline, 0.0), ok.astype(jnp.float32)


def silhouette_term(batch, **options):
    """Registered ``"silhouette"`` / ``"face_oval"`` term: chamfer distance (normalized crop units)
    between the rendered face outline and MediaPipe's face oval, per image (masked where the oval is
    unknown). Options: ``SilhouetteConfig`` fields."""
    config = SilhouetteConfig(**options)
    images, verts, cam, faces, fm = _geometry(batch, "silhouette")
    size = images.shape[-2]
    lead = verts.shape[:-2]
    n = int(np.prod(lead)) if lead else 1
    oval = oval_polygon(batch)
    if oval is None:
        raise ValueError("loss term 'silhouette' needs batch['face_oval'] or 68-point landmarks_target")
    pts, valid, closed = oval
    raster = raster_lib.rasterize_cached(verts, cam, faces, size, images, refresh_every=config.refresh_every,
                                         tag="silhouette")
    weights = pixel_weights(raster, faces, verts.shape[-2], jnp.ones(lead), region=config.region)
    face_mask = (weights > 0).reshape(n, size, size)
    # The outline's surface points, moved half a pixel outward (fixed offset) onto the edge itself.
    points = render_lib.surface_points(verts, faces, cam, raster).reshape(n, size, size, 2)
    points = points + 0.5 * jax.vmap(_outward)(face_mask)
    outline = jax.vmap(_boundary)(face_mask).reshape(n, -1)
    poly_px = camera_lib.normalized_to_pixels(pts, size).reshape((n,) + pts.shape[-2:])
    values, ok = jax.vmap(lambda p, o, q, v: silhouette_loss(p, o, q, v, closed, densify=config.densify))(
        points.reshape(n, -1, 2), outline, poly_px, valid.reshape(n))
    values = values.reshape(lead) * (2.0 / size)
    return values * schedule_weight(batch, config.start_step, config.ramp_steps, "silhouette"), ok.reshape(lead) * fm


def face_mask_iou(face_index, faces, num_vertices: int, polygon_px, *, closed: bool = True) -> float:
    """Host evaluation: IoU of a rendered face-region mask ([S, S] triangle ids) with an oval polygon
    ([K, 2] crop pixels)."""
    fi = np.asarray(face_index)
    size = fi.shape[-1]
    region = albedo_lib.face_region_for(num_vertices, np.asarray(faces).shape[0])
    covered = fi >= 0
    face = covered if region is None else covered & (region[np.asarray(faces)].min(-1)[np.where(covered, fi, 0)] > 0)
    c = np.arange(size) + 0.5
    xx, yy = np.meshgrid(c, c)
    pix = np.stack([xx, yy], -1).reshape(-1, 2)
    inside = albedo_lib.points_in_polygon(pix, np.asarray(polygon_px, np.float64), xp=np).reshape(size, size)
    union = np.sum(face | inside)
    return float(np.sum(face & inside) / union) if union else 0.0


#: The recipe's schedule: the landmarks fit alone, then the image terms ramp in.
RECIPE_START_STEP = 40
RECIPE_RAMP_STEPS = 20
RECIPE_REFRESH_EVERY = 4
#: The recipe's photometric options (the term's defaults otherwise): annotate and the demo fit
#: NeuFace, which moves every frame at once through the encoder's weights; with a raster a few
#: updates old, pixels leave their triangles, their extrapolated colours pull the fit away and it
#: ran off (one light per clip, docs/photometric.md), so the term re-rasterizes every update.
RECIPE_PHOTOMETRIC_OPTIONS = {"refresh_every": 1}


def recipe_terms(photometric: float = 0.0, silhouette: float = 0.0, *, start_step: int = RECIPE_START_STEP,
                 ramp_steps: int = RECIPE_RAMP_STEPS, refresh_every: int = RECIPE_REFRESH_EVERY) -> dict:
    """Loss-config entries adding the photometric and/or silhouette term under the recipe: the
    landmarks alone for ``start_step`` optimizer steps, then each term ramped in linearly over
    ``ramp_steps`` (an image term from the first step pulls a mesh the landmarks have not yet placed);
    the photometric term with ``RECIPE_PHOTOMETRIC_OPTIONS`` (a raster refresh every update, whatever
    ``refresh_every`` says: that one is the silhouette term's).
    A weight of 0 leaves its term out; ``{}`` when both are 0."""
    if photometric < 0 or silhouette < 0:
        raise ValueError(f"image term weights must be >= 0, got photometric {photometric}, silhouette {silhouette}")
    schedule = {"start_step": int(start_step), "ramp_steps": int(ramp_steps), "refresh_every": int(refresh_every)}
    out = {}
    if photometric > 0:
        out["photometric"] = ("photometric", float(photometric), {**schedule, **RECIPE_PHOTOMETRIC_OPTIONS})
    if silhouette > 0:
        out["silhouette"] = ("silhouette", float(silhouette), dict(schedule))
    return out


losses_lib.register_term("photometric", photometric_term, overwrite=True)
losses_lib.register_term("silhouette", silhouette_term, overwrite=True)
losses_lib.register_term("face_oval", silhouette_term, overwrite=True)

__all__ = [
    "JAW_IDS", "PhotometricConfig", "SilhouetteConfig", "TermInputs", "bilinear_sample", "face_mask_iou", "gaussian_blur", "level_weights",
    "occlusion_mask", "oval_mask", "oval_polygon", "photometric_inputs", "photometric_loss", "photometric_term", "pixel_weights", "pyramid",
    "recipe_terms", "robust_penalty", "frame_weights", "schedule_weight", "silhouette_loss", "silhouette_term", "skin_attention", "view_consensus",
]
