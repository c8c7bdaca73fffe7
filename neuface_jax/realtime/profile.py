"""Out-of-plane pose augmentation of labelled face crops ("face profiling").

A distilled frame shows its person at one head pose; the regressor has to predict poses that no
labelled frame shows (a clip's held-out tail looking further down than any training frame, say).
In-plane rotation (``train.rotate_in_plane``) is exact but only turns the head about the camera's
axis. This module turns it *out of plane*: the frame's label mesh (the fitted identity, expression
and pose through the face model, projected by the crop's weak-perspective camera) is rotated by a
chosen Δpitch (and Δyaw), and the crop is warped so that the face moves with the mesh. The idea is
the face profiling published with 3DDFA (rotate the fitted 3D face, re-render the image); this is
the project's own implementation on its rasterizer:

1. **Targets** (``turn_targets``, exact): the new global rotation is ``R_Δ · R`` with
   ``R_Δ = R_y(Δyaw) · R_x(Δpitch)`` in the model frame (x right, y up, z toward the camera;
   positive Δpitch turns the chin down, positive Δyaw is ``flame_jax.head_yaw_degrees``' sign). FLAME
   turns the head about its root joint, so the mesh moves as ``R_Δ(v − J) + J``; the camera keeps its
   scale and its translation takes the shift that keeps the 68 landmarks' 3D centroid where it
   projected before (the face stays in the crop). Identity, expression and the other joints are
   unchanged; the 2D landmark targets are the turned mesh's landmarks projected by the new camera
   (the fitted ones: a detected point has no 3D position to turn).
2. **Image** (``warp_crop``, a backward warp): the turned mesh is rasterized in the crop; every pixel it
   covers is a point on the surface (triangle, barycentrics), which the source mesh places at a
   source pixel; where that point was visible in the source crop (a z-test against the source
   rasterization), the output pixel samples the source there. Elsewhere — outside the turned mesh
   (hair, neck, background) and where the turned mesh shows surface the source crop hid — the
   displacement is extended smoothly from the covered pixels (a normalized Gaussian convolution that
   fades to no displacement far from the face), so the head's surroundings move with it.

``profile_examples`` does both for every frame of a ``PretrainData`` once (host NumPy rasterization:
about 20 ms a frame at 96 px), before training; ``train`` mixes the result into the distilled groups
(``TrainConfig.profile_pitch``, ``profile_yaw``, ``profile_share``).
"""

from __future__ import annotations

import functools
import logging
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

import flame_jax
from flame_jax import rotations as flame_rotations
from neuface_jax.core import fit as fit_lib
from neuface_jax.media import render as render_lib
from neuface_jax.photometric import raster as raster_lib
from neuface_jax.synthetic import pretrain as pretrain_lib

__all__ = ["delta_rotation", "profile_examples", "turn_function", "turn_targets", "warp_crop"]

logger = logging.getLogger(__name__)

#: Depth tolerance of the source z-test, in pixels (screen depth is scaled like x and y).
DEPTH_TOLERANCE_PX = 1.0


def delta_rotation(pitch_deg, yaw_deg) -> jax.Array:
    """``R_y(yaw) · R_x(pitch)`` [..., 3, 3] in the model frame (positive pitch: chin down; positive
    yaw: ``flame_jax.head_yaw_degrees``' sign)."""
    a = jnp.deg2rad(jnp.asarray(pitch_deg, jnp.float32))
    b = jnp.deg2rad(jnp.asarray(yaw_deg, jnp.float32))
    a, b = jnp.broadcast_arrays(a, b)
    zero = jnp.zeros_like(a)
    rx = flame_rotations.axis_angle_to_matrix(jnp.stack([a, zero, zero], -1))
    ry = flame_rotations.axis_angle_to_matrix(jnp.stack([zero, b, zero], -1))
    return ry @ rx


def turn_targets(face: fit_lib.FaceModel, shape, expression, pose, cam, pitch_deg, yaw_deg):
    """The labels of a head turned out of plane by ``(Δpitch, Δyaw)`` degrees ([B] each).

    Args:
      shape, expression: [B, n] coefficients (unchanged).  pose: [B, 3·J] full pose.  cam: [B, 3].

    Returns:
      dict with ``pose`` and ``cam`` (the turned labels), ``landmarks`` [B, 68, 2] (the turned mesh's,
      projected), ``vertices`` [B, V, 3] (turned) and ``source_vertices`` [B, V, 3].
    """
    src = fit_lib.evaluate_params(face, shape, expression, pose, cam)[0]
    rot = delta_rotation(pitch_deg, yaw_deg)
    glob = flame_rotations.matrix_to_axis_angle(rot @ flame_rotations.axis_angle_to_matrix(pose[:, :3]))
    new_pose = jnp.concatenate([glob.astype(pose.dtype), pose[:, 3:]], -1)
    verts, _, _ = fit_lib.evaluate_params(face, shape, expression, new_pose, cam)
    # Keep the landmarks' 3D centroid's projection: t' = t + (c_src − c_new)_xy (p = s·(X + t)).
    lmk3d_src = _landmarks3d(face, src, pose)
    lmk3d_new = _landmarks3d(face, verts, new_pose)
    shift = jnp.mean(lmk3d_src, -2)[:, :2] - jnp.mean(lmk3d_new, -2)[:, :2]
    new_cam = jnp.concatenate([cam[:, :1], cam[:, 1:] + shift], -1)
    _, lmk, _ = fit_lib.evaluate_params(face, shape, expression, new_pose, new_cam)
    return {"pose": new_pose, "cam": new_cam, "landmarks": lmk, "vertices": verts, "source_vertices": src}


_TURN_CACHE: dict[int, tuple] = {}


def turn_function(face: fit_lib.FaceModel):
    """``turn_targets`` compiled for ``face`` (kept while the model lives: one compile per model and shape)."""
    hit = _TURN_CACHE.get(id(face))
    if hit is None or hit[0] is not face:
        hit = (face, jax.jit(functools.partial(turn_targets, face)))
        _TURN_CACHE.clear()  # one model at a time
        _TURN_CACHE[id(face)] = hit
    return hit[1]


def _landmarks3d(face, verts, pose):
    return flame_jax.landmarks(face.flame, face.embedding, verts, pose)


def _extend(field: np.ndarray, mask: np.ndarray, sigma: float, floor: float) -> np.ndarray:
    """Smooth extension of ``field`` [H, W, C] known where ``mask`` [H, W]: a normalized Gaussian
    convolution, divided by ``max(weight, floor)`` so that it fades to 0 far from the known pixels."""
    m = mask.astype(np.float64)
    w = ndimage.gaussian_filter(m, sigma, mode="constant")
    num = np.stack([ndimage.gaussian_filter(field[..., c] * m, sigma, mode="constant")
                    for c in range(field.shape[-1])], -1)
    return num / np.maximum(w, floor)[..., None]


def warp_crop(image: np.ndarray, source_vertices: np.ndarray, source_cam: np.ndarray, vertices: np.ndarray,
              cam: np.ndarray, faces: np.ndarray, *, fill_sigma: float | None = None,
              fill_floor: float = 0.35) -> tuple[np.ndarray, dict]:
    """Warps a square crop [S, S, C] so that the face on it follows its mesh from the source pose
    (``source_vertices`` [V, 3] seen through ``source_cam``) to the new one (``vertices``, ``cam``).

    Backward warp: each output pixel the new mesh covers samples the source where the same surface
    point was (when the source crop saw it: z-test); the other pixels take the smooth extension of
    those displacements (``fill_sigma``, default S/8 pixels; fading to none where the normalized
    weight is below ``fill_floor``). Bilinear sampling, edges repeated.

    Returns:
      ``(warped image of the input's dtype, stats)``: stats are the share of the crop the new mesh
      covers (``covered``) and the share of those pixels whose surface point the source hid
      (``hidden``).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"warp_crop needs a square crop [S, S, C], got {image.shape}")
    size = image.shape[0]
    faces = np.asarray(faces)
    src_screen = np.asarray(raster_lib.screen_vertices(np.asarray(source_vertices, np.float64),
                                                       np.asarray(source_cam, np.float64), size))
    dst_screen = np.asarray(raster_lib.screen_vertices(np.asarray(vertices, np.float64),
                                                       np.asarray(cam, np.float64), size))
    if not (np.all(np.isfinite(src_screen)) and np.all(np.isfinite(dst_screen))):
        raise ValueError("warp_crop: non-finite mesh or camera")
    dst = render_lib.rasterize(dst_screen, faces, size, size, cull_backfaces=True)
    src = render_lib.rasterize(src_screen, faces, size, size, cull_backfaces=True)
    covered = dst.face_index >= 0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    centres = np.stack([xx + 0.5, yy + 0.5], -1)  # pixel centres (x, y) in pixel units
    disp = np.zeros((size, size, 2))
    visible = np.zeros((size, size), bool)
    if covered.any():
        tri = faces[dst.face_index[covered]]  # [P, 3]
        bary = dst.barycentric[covered].astype(np.float64)  # [P, 3]
        pt = np.einsum("pk,pkc->pc", bary, src_screen[tri])  # the surface point in the source crop (x, y, depth)
        ix = np.clip(np.floor(pt[:, 0]).astype(int), 0, size - 1)
        iy = np.clip(np.floor(pt[:, 1]).astype(int), 0, size - 1)
        seen = pt[:, 2] <= src.depth[iy, ix] + DEPTH_TOLERANCE_PX
        inside = (pt[:, 0] >= 0) & (pt[:, 0] < size) & (pt[:, 1] >= 0) & (pt[:, 1] < size)
        ok = seen & inside
        d = pt[:, :2] - centres[covered]
        disp[covered] = np.where(ok[:, None], d, 0.0)
        visible[covered] = ok
    sigma = size / 8.0 if fill_sigma is None else float(fill_sigma)
    ext = _extend(disp, visible, sigma, fill_floor) if visible.any() else disp
    disp = np.where(visible[..., None], disp, ext)
    where = centres + disp - 0.5  # sample position in array index units (x, y)
    coords = [where[..., 1], where[..., 0]]
    out = np.stack([ndimage.map_coordinates(image[..., c].astype(np.float64), coords, order=1, mode="nearest")
                    for c in range(image.shape[-1])], -1)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.round(out), info.min, info.max)
    stats = {"covered": float(covered.mean()),
             "hidden": float(1.0 - visible[covered].mean()) if covered.any() else 0.0}
    return out.astype(image.dtype), stats


def profile_examples(data, face: fit_lib.FaceModel, pitch_deg: Sequence[float], *, yaw_deg: float = 0.0,
                     seed: int = 0, chunk: int = 64):
    """Every example of ``data`` (``synthetic.pretrain.PretrainData``: crops and their labels) turned
    out of plane once per Δpitch in ``pitch_deg`` (degrees, positive: chin down), with a random Δyaw
    in ``±yaw_deg`` per copy (``seed``): the warped crops and their exact turned labels (``turn_targets``;
    landmark targets are the turned mesh's). The clip indices are kept (the same person).
    """
    pitches = [float(p) for p in pitch_deg]
    if not pitches:
        raise ValueError("profile_examples needs at least one pitch change")
    if not all(np.isfinite(pitches)) or any(abs(p) > 60 for p in pitches) or not 0 <= yaw_deg <= 60:
        raise ValueError(f"profile pitch changes must be finite and within ±60°, yaw within [0, 60]; got "
                         f"{pitches}, {yaw_deg}")
    n = len(data)
    if n == 0:
        raise ValueError("profile_examples: no examples to turn")
    rng = np.random.default_rng(seed)
    turn = turn_function(face)
    faces = np.asarray(face.flame.faces)
    parts, hidden = [], []
    for p in pitches:
        yaw = rng.uniform(-yaw_deg, yaw_deg, n) if yaw_deg else np.zeros(n)
        images = np.empty_like(data.images)
        lmk = np.empty_like(data.landmarks)
        pose = np.empty_like(data.pose)
        cam = np.empty_like(data.cam)
        for lo in range(0, n, chunk):
            sl = slice(lo, min(n, lo + chunk))
            m = sl.stop - sl.start
            pad = chunk - m  # one compiled shape
            def padded(x):
                return np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x
            out = jax.device_get(turn(padded(data.shape[sl]), padded(data.expression[sl]), padded(data.pose[sl]),
                                      padded(data.cam[sl]), np.full(chunk, p, np.float32),
                                      padded(yaw[sl].astype(np.float32))))
            for i in range(m):
                images[lo + i], st = warp_crop(data.images[lo + i], out["source_vertices"][i], data.cam[lo + i],
                                               out["vertices"][i], out["cam"][i], faces)
                hidden.append(st["hidden"])
            lmk[sl], pose[sl], cam[sl] = out["landmarks"][:m], out["pose"][:m], out["cam"][:m]
        parts.append(pretrain_lib.PretrainData(images=images, landmarks=lmk.astype(np.float32), shape=data.shape,
                                               expression=data.expression, pose=pose.astype(np.float32),
                                               cam=cam.astype(np.float32), clip_index=data.clip_index))
    logger.info("profiled %d examples at pitch changes %s (yaw ±%g°): on average %.1f %% of the turned face "
                "was hidden in the source crop", n, pitches, yaw_deg, 100 * float(np.mean(hidden)))
    return pretrain_lib.PretrainData.concatenate(parts)
