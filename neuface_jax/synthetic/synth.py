"""Synthetic multi-view face clips with known ground truth.

``synthesize_clip`` turns a FLAME-format model (the demo head by default, a real FLAME
when given), a seed, a frame count and a camera rig into, deterministically:

* ground truth: one identity, smooth head motion with turns past 45°, speech-like jaw
  and expressions, blinks and gaze (``neuface_jax.synthetic.motion``); per-frame, per-view FLAME
  parameters and vertices;
* shaded RGB renders per frame and view (procedural albedo: skin, darker brows, red
  lips, eyes with iris and pupil) over a procedural background;
* 2D landmarks as a detector would report them, for the 68-point and the
  MediaPipe-style sets: the true projection plus a per-clip bias and frame-to-frame
  jitter (pixels); self-occluded points marked invisible (the jaw contour follows the
  silhouette through the dynamic embedding, as detectors do); optionally dropped
  frames (no detection);
* crop transforms (the reference recipe applied to the noisy 68 landmarks), camera
  parameters and view names.

Camera: a pinhole camera at ``camera_distance`` metres on the view axis, looking at
the head centre, focal length chosen so the head spans ``head_fill`` of the image.
Image coordinates: x right, y down, pixel centres at +0.5.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import flame_jax
from flame_jax import demo
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import landmark_sets
from neuface_jax.media import landmarker as landmarker_lib
from neuface_jax.media import render as render_lib
from neuface_jax.media import video as video_lib
from neuface_jax.photometric.albedo import procedural_albedo
from neuface_jax.photometric.render import directional_light_sh, sh_shading
from neuface_jax.synthetic import augment as augment_lib
from neuface_jax.synthetic import motion as motion_lib



@dataclasses.dataclass(frozen=True)
class RealismConfig:
    """What makes a clip look like real video rather than the model's own renders (all off by
    default: the "in-model" benchmark). Every random choice is drawn from the clip's seed.

    Attributes:
      background: "gradient" (a smooth procedural one) or "cluttered" (``augment.random_background``,
        one per view).
      light_jitter_deg: the light direction is the renderer's default turned by up to this many
        degrees (one direction per clip).
      albedo_jitter: per-clip skin tone (log-gain std per channel) and blotchy texture amplitude.
      color_jitter: per-view camera colour and lighting gradient (``augment.color_jitter``, fixed over
        the clip) and mild per-frame sensor noise.
      occluder_fraction: about this fraction of each view's frames lies under an occluder (a hand,
        hair or glasses-like bar, ``augment.paint_occluders``) that stays on for
        ``occluder_episode_frames`` frames and moves with the face.
      detector: "simulated" (the true projections plus seeded noise, ``SynthConfig``'s noise
        settings) or "mediapipe" (the project's MediaPipe Face Landmarker run on the rendered frames,
        iBUG-68 by ``landmark_sets.mediapipe_to_ibug68``: image-dependent errors, far-side guesses
        marked invisible, frames without a face invalid).
      face_landmarker: MediaPipe model file (default: ``landmarker.resolve_model_path``).
      pose_bias: with "mediapipe", an extra detector bias that grows with the head turn: every point
        shifted by ``pose_bias`` × inter-ocular distance × sin(yaw / pitch) toward the frontal pose.
      occlusion_bias: with "mediapipe", points under an occluder drift away from it by this many
        inter-ocular distances (a detector guessing what it cannot see).
    """

    background: str = "gradient"
    light_jitter_deg: float = 0.0
    albedo_jitter: float = 0.0
    color_jitter: bool = False
    occluder_fraction: float = 0.0
    occluder_episode_frames: int = 8
    detector: str = "simulated"
    face_landmarker: str | None = None
    pose_bias: float = 0.0
    occlusion_bias: float = 0.0

    def __post_init__(self):
        if self.background not in ("gradient", "cluttered"):
            raise ValueError(f"RealismConfig.background must be 'gradient' or 'cluttered', got {self.background!r}")
        if self.detector not in ("simulated", "mediapipe"):
            raise ValueError(f"RealismConfig.detector must be 'simulated' or 'mediapipe', got {self.detector!r}")
        if not 0.0 <= self.occluder_fraction <= 1.0:
            raise ValueError(f"RealismConfig.occluder_fraction must be in [0, 1], got {self.occluder_fraction}")


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """Settings of a synthetic clip (pixels refer to the rendered image)."""

    num_frames: int = 64
    image_size: int = 224
    camera_distance: float = 1.2
    head_fill: float = 0.5
    landmark_noise_px: float = 1.0
    landmark_jitter_px: float = 0.7
    occluded_noise_px: float = 3.0
    drop_frame_probability: float = 0.0
    crop_size: int = 224
    supersample: int = 1
    #: "lambert": ambient 0.3 + diffuse 0.7 · max(0, n·l) per vertex (the NumPy renderer's light);
    #: "sh": the same light's closest second-order SH light (``gt["light_sh"]``), which the
    #: photometric term's shading model represents exactly.
    shading: str = "lambert"
    motion: motion_lib.MotionConfig = motion_lib.MotionConfig()
    realism: RealismConfig = RealismConfig()

    def scaled_noise(self, factor: float) -> "SynthConfig":
        """The same clip settings with landmark noise and jitter multiplied by ``factor``."""
        return dataclasses.replace(
            self,
            landmark_noise_px=self.landmark_noise_px * factor,
            landmark_jitter_px=self.landmark_jitter_px * factor,
        )


@dataclasses.dataclass
class SynthClip:
    """A synthetic clip. Shapes: T frames, W views, V vertices.

    Attributes:
      images: uint8 [T, W, H, H, 3] renders.
      landmarks68: float32 [T, W, 68, 2] detected landmarks in image pixels.
      visible68: bool [T, W, 68] (False where self-occluded, outside the image or dropped).
      landmarks_mp: float32 [T, W, 105, 2] MediaPipe-style landmarks (None without that embedding).
      visible_mp: bool [T, W, 105].
      valid: bool [T, W] frame has a detection (False for dropped frames).
      crop_transforms: float32 [T, W, 2, 3] image pixels → crop pixels (size ``crop_size``).
      gt: ground truth dict: ``shape`` [S], ``expression`` [T, E], ``pose_world`` [T, 15],
        ``pose`` [T, W, 15] per view, ``translation`` [T, W, 3] per view (camera frame),
        ``vertices`` [T, W, V, 3] camera frame (metres), ``canonical_vertices`` [T, V, 3]
        (head rotation zeroed), ``landmarks3d`` [T, W, 68, 3], ``landmarks68_true`` [T, W, 68, 2]
        (noise-free projections); appearance: ``albedo`` [V, 3], ``light_direction`` [3], ``light_sh``
        [9, 3] (``appearance_ground_truth``).
      camera: dict with ``focal_px``, ``principal_px`` (2,), ``distance_m``, ``view_rotations`` [W, 3, 3].
      view_names: tuple of names.
      fps: frames per second.
      meta: generator settings and provenance.
    """

    images: np.ndarray
    landmarks68: np.ndarray
    visible68: np.ndarray
    landmarks_mp: np.ndarray | None
    visible_mp: np.ndarray | None
    valid: np.ndarray
    crop_transforms: np.ndarray
    gt: dict[str, np.ndarray]
    camera: dict[str, Any]
    view_names: tuple[str, ...]
    fps: float
    meta: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.images.shape[1])


# --------------------------------------------------------------------------- albedo
def _background(rng, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    base = rng.uniform(0.25, 0.6, size=3)
    tilt = rng.uniform(-0.2, 0.2, size=3)
    img = base[None, None] + tilt[None, None] * (0.6 * xx + 0.4 * yy)[..., None]
    img += 0.03 * np.sin(2 * np.pi * (xx * rng.uniform(1, 3) + yy * rng.uniform(1, 3)))[..., None]
    return np.clip(img, 0, 1).astype(np.float32)


def _vary_albedo(albedo: np.ndarray, model, amount: float, seed: int) -> np.ndarray:
    """Per-clip skin tone (a log-gain per channel) and low-frequency blotches on ``albedo`` (V, 3)."""
    if amount <= 0:
        return albedo
    rng = np.random.default_rng([seed, 0xA1B])
    verts = np.asarray(model.v_template, np.float64)
    verts = (verts - verts.mean(0)) / max(float(np.ptp(verts[:, 0])), 1e-9)
    tone = np.exp(rng.normal(size=3) * amount)
    blotch = sum(np.sin(verts @ rng.normal(size=3) * rng.uniform(6, 20) + rng.uniform(0, 2 * np.pi)) for _ in range(4))
    return np.clip(albedo * tone[None] * (1.0 + 0.5 * amount * blotch[:, None]), 0, 1).astype(np.float32)


def _light_direction(jitter_deg: float, seed: int) -> np.ndarray:
    """The renderer's default light turned by up to ``jitter_deg`` about the x and y axes."""
    light = np.asarray(render_lib.DEFAULT_LIGHT, np.float64)
    if jitter_deg <= 0:
        return light
    ax, ay = np.radians(np.random.default_rng([seed, 0x11]).uniform(-jitter_deg, jitter_deg, size=2))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    return ry @ rx @ light


def _local_max(depth: np.ndarray) -> np.ndarray:
    """3x3 maximum filter of a depth buffer (empty pixels are +inf and stay so)."""
    padded = np.pad(depth, 1, mode="edge")
    h, w = depth.shape
    return np.max(np.stack([padded[i : i + h, j : j + w] for i in range(3) for j in range(3)]), axis=0)


# --------------------------------------------------------------------------- projection
def project_points(points_cam: np.ndarray, focal: float, principal: np.ndarray, distance: float) -> np.ndarray:
    """Pinhole projection of FLAME-frame points seen by a camera at (0, 0, distance) looking at −z.

    points_cam: [..., 3] (x right, y up, z toward the camera). Returns [..., 3]:
    x_pix, y_pix (down), depth (metres from the camera, larger = farther).
    """
    depth = distance - points_cam[..., 2]
    x = principal[0] + focal * points_cam[..., 0] / depth
    y = principal[1] - focal * points_cam[..., 1] / depth
    return np.stack([x, y, depth], -1)


# --------------------------------------------------------------------------- generator
def default_assets():
    """The demo head with its 68-point and MediaPipe-style embeddings."""
    return demo.demo_model(), demo.demo_landmark_embedding(), demo.demo_mediapipe_embedding()


@jax.jit
def _forward_all(model, emb68, emb_mp, shape, expression, pose, translation, canonical_pose):
    out = flame_jax.forward(model, shape=shape, expression=expression, pose=pose, translation=translation)
    lmk68 = flame_jax.landmarks(model, emb68, out.vertices, pose)
    lmk_mp = None if emb_mp is None else flame_jax.landmarks(model, emb_mp, out.vertices, pose)
    canon = flame_jax.forward(model, shape=shape[:, 0], expression=expression[:, 0], pose=canonical_pose)
    return out.vertices, lmk68, lmk_mp, canon.vertices


@dataclasses.dataclass(frozen=True, eq=False)
class _Scene:
    """Ground-truth motion of a clip and its posed geometry per frame and view (camera frame)."""

    gt: dict[str, np.ndarray]  # generate_motion's output (world frame)
    pose_views: np.ndarray  # [T, W, 15]
    trans_views: np.ndarray  # [T, W, 3]
    view_rot: np.ndarray  # [W, 3, 3]
    verts: np.ndarray  # [T, W, V, 3]
    lmk68_3d: np.ndarray  # [T, W, 68, 3]
    lmk_mp_3d: np.ndarray | None  # [T, W, N, 3]
    canon: np.ndarray  # [T, V, 3] head rotation zeroed


@dataclasses.dataclass(frozen=True, eq=False)
class _Views:
    """Renders and noise-free landmark projections of every frame and view."""

    images: np.ndarray  # uint8 [T, W, H, H, 3]
    true68: np.ndarray  # [T, W, 68, 2]
    vis68: np.ndarray  # [T, W, 68]
    true_mp: np.ndarray  # [T, W, N, 2] (N = 0 without a MediaPipe embedding)
    vis_mp: np.ndarray  # [T, W, N]


def _resolve_assets(model, embedding68, embedding_mp, blink_component, speech_components):
    """The model, embeddings and blink/lip components to use: the demo head's by default."""
    if model is None:
        model, embedding68, embedding_mp = default_assets()
        names = list(demo.DEMO_EXPRESSION_NAMES)
        if blink_component is None:
            blink_component = names.index("blink")
        if speech_components is None:
            speech_components = tuple(names.index(k) for k in ("lips_apart", "pucker"))
    if embedding68 is None or embedding68.kind not in ("ibug68", "static") or embedding68.num_landmarks != 68:
        raise ValueError("synthesize_clip needs a 68-point landmark embedding (iBUG order, dynamic or static contour)")
    return model, embedding68, embedding_mp, blink_component, tuple(speech_components or ())


def _pose_scene(model, embedding68, embedding_mp, gt, rig: motion_lib.CameraRig) -> _Scene:
    """Poses the model with the ground truth as every view of the rig sees it."""
    num_t, num_w = gt["expression"].shape[0], rig.num_views
    pose_views = motion_lib.per_view_pose(gt["pose"], rig)  # [T, W, 15]
    view_rot = rig.view_rotations()  # [W, 3, 3]
    joint0 = np.asarray(flame_jax.forward(model, shape=gt["shape"]).joints[0])
    # Rotating the scene about the head centre (FLAME's origin) moves the root joint:
    # per-view translation t_v = R_v (J0 + t) − J0 keeps the per-view meshes rigidly identical.
    trans_views = np.einsum("wab,tb->twa", view_rot, joint0[None] + gt["translation"]) - joint0

    shape_b = np.broadcast_to(gt["shape"], (num_t, num_w, model.num_shape))
    expr_b = np.broadcast_to(gt["expression"][:, None], (num_t, num_w, model.num_expression))
    canon_pose = gt["pose"].copy()
    canon_pose[:, 0:3] = 0.0
    verts, lmk68_3d, lmk_mp_3d, canon = jax.device_get(
        _forward_all(
            model, embedding68, embedding_mp, jnp.asarray(shape_b), jnp.asarray(expr_b), jnp.asarray(pose_views),
            jnp.asarray(trans_views, jnp.float32), jnp.asarray(canon_pose),
        )
    )
    return _Scene(
        gt=gt, pose_views=pose_views, trans_views=trans_views, view_rot=view_rot, verts=verts, lmk68_3d=lmk68_3d,
        lmk_mp_3d=lmk_mp_3d, canon=canon,
    )


def _appearance(model, embedding68, config: SynthConfig, seed) -> tuple[np.ndarray, np.ndarray]:
    """The clip's per-vertex albedo (V, 3) and light direction (camera frame, toward the light)."""
    realism = config.realism
    albedo = _vary_albedo(procedural_albedo(model, embedding68, seed=seed), model, realism.albedo_jitter, seed)
    return albedo, _light_direction(realism.light_jitter_deg, seed)


def appearance_ground_truth(model, embedding68, config: SynthConfig, seed) -> dict[str, np.ndarray]:
    """``SynthClip.gt``'s appearance: ``albedo`` (V, 3); ``light_direction`` (3,) in the model frame
    (x right, y up, z toward the camera; the renders' Lambert light, ambient 0.3 + diffuse 0.7 · max(0, n·l),
    fixed to the camera); ``light_sh`` (9, 3) its closest second-order SH light
    (``photometric.render.directional_light_sh``)."""
    albedo, light = _appearance(model, embedding68, config, seed)
    light_model = np.asarray(light, np.float64) * np.array([1.0, -1.0, -1.0])
    light_model /= np.linalg.norm(light_model)
    return {"albedo": albedo, "light_direction": light_model.astype(np.float32),
            "light_sh": directional_light_sh(light_model, 0.3, 0.7)}


def _render_views(model, embedding68, scene: _Scene, focal, principal, config: SynthConfig, seed, progress) -> _Views:
    """Renders every frame and view and marks which landmarks each view sees."""
    num_t, num_w = scene.verts.shape[:2]
    size = config.image_size
    realism = config.realism
    albedo, light = _appearance(model, embedding68, config, seed)
    faces = np.asarray(model.faces)
    n_mp = 0 if scene.lmk_mp_3d is None else scene.lmk_mp_3d.shape[-2]
    out = _Views(
        images=np.zeros((num_t, num_w, size, size, 3), np.uint8),
        true68=np.zeros((num_t, num_w, 68, 2), np.float32),
        vis68=np.zeros((num_t, num_w, 68), bool),
        true_mp=np.zeros((num_t, num_w, n_mp, 2), np.float32),
        vis_mp=np.zeros((num_t, num_w, n_mp), bool),
    )
    if realism.background == "cluttered":
        backgrounds = [augment_lib.random_background(np.random.default_rng([seed, w, 0xB6]), size, size)
                       for w in range(num_w)]
    else:
        backgrounds = [_background(np.random.default_rng([seed, w]), size) for w in range(num_w)]
    flip = np.array([1.0, -1.0, -1.0])  # FLAME frame (y up, z toward camera) → camera frame (y down, z away)
    if config.shading not in ("lambert", "sh"):
        raise ValueError(f"SynthConfig.shading must be 'lambert' or 'sh', got {config.shading!r}")
    light_sh = appearance_ground_truth(model, embedding68, config, seed)["light_sh"] if config.shading == "sh" else None
    tol = 0.004  # metres of depth slack for the landmark occlusion test
    for ti in range(num_t):
        for w in range(num_w):
            screen = project_points(scene.verts[ti, w], focal, principal, config.camera_distance)
            normals = np.asarray(flame_jax.vertex_normals(scene.verts[ti, w], faces)) * flip
            if light_sh is None:
                colors, shading = albedo, "smooth"
            else:  # lit per vertex with the SH light (model-frame normals), interpolated
                colors, shading = albedo * np.asarray(sh_shading(normals * flip, light_sh)), "none"
            rendering = render_lib.render(
                screen, faces, colors, height=size, width=size, normals=normals, background=backgrounds[w],
                perspective_correct=True, supersample=config.supersample, cull_backfaces=True,
                light_direction=light, shading=shading,
            )
            out.images[ti, w] = render_lib.to_uint8(rendering.image)
            p68 = project_points(scene.lmk68_3d[ti, w], focal, principal, config.camera_distance)
            out.true68[ti, w] = p68[:, :2]
            # Farthest depth in each 3x3 neighbourhood: a landmark next to an occluding edge
            # is not declared hidden because one pixel centre sampled the nearer surface.
            depth_far = _local_max(rendering.depth)
            visible = render_lib.point_visibility(p68, depth_far, tolerance=tol)
            inside = (p68[:, 0] >= 0) & (p68[:, 0] < size) & (p68[:, 1] >= 0) & (p68[:, 1] < size)
            # The contour points sit on the silhouette by construction (detectors report it).
            if embedding68.kind == "ibug68":
                visible[:17] = inside[:17]
            out.vis68[ti, w] = visible & inside
            if n_mp:
                pmp = project_points(scene.lmk_mp_3d[ti, w], focal, principal, config.camera_distance)
                out.true_mp[ti, w] = pmp[:, :2]
                out.vis_mp[ti, w] = render_lib.point_visibility(pmp, depth_far, tolerance=tol)
            if progress is not None:
                progress(ti * num_w + w + 1, num_t * num_w)
    return out


def _detect(rng, true: np.ndarray, vis: np.ndarray, config: SynthConfig) -> np.ndarray:
    """Noise-free projections [T, W, N, 2] → landmarks as a detector reports them: a per-clip bias,
    frame-to-frame jitter and extra noise on occluded points."""
    num_t, num_w, n = true.shape[:3]
    bias = rng.normal(size=(1, num_w, n, 2)) * config.landmark_noise_px
    jitter = rng.normal(size=(num_t, num_w, n, 2)) * config.landmark_jitter_px
    occluded = rng.normal(size=(num_t, num_w, n, 2)) * config.occluded_noise_px * (~vis)[..., None]
    return (true + bias + jitter + occluded).astype(np.float32)


def _occluder_episodes(rng, num_t: int, fraction: float, length: int) -> np.ndarray:
    """[T] episode index per frame (-1: no occluder): about ``fraction`` of the frames in runs of ``length``."""
    episode = np.full(num_t, -1)
    if fraction <= 0 or num_t == 0:
        return episode
    length = max(1, min(int(length), num_t))
    count = max(1, int(round(fraction * num_t / length)))
    for k, start in enumerate(rng.integers(0, num_t - length + 1, size=count)):
        episode[start : start + length] = k
    return episode


def _realistic_frames(images: np.ndarray, true68: np.ndarray, realism: RealismConfig, seed: int):
    """Occluders over the rendered frames (moving with the face) and the camera's colour and noise.
    Returns (images, occluded [T, W, H, H] bool)."""
    num_t, num_w = images.shape[:2]
    out = images.copy()
    occluded = np.zeros(images.shape[:4], bool)
    for w in range(num_w):
        episode = _occluder_episodes(np.random.default_rng([seed, w, 0x0CC]), num_t, realism.occluder_fraction,
                                     realism.occluder_episode_frames)
        for t in range(num_t):
            img = out[t, w]
            if episode[t] >= 0:  # the same draws every frame of an episode: the same occluder
                img, occluded[t, w] = augment_lib.paint_occluders(
                    img, true68[t, w], np.random.default_rng([seed, w, 0x0CC, int(episode[t])]))
            if realism.color_jitter:
                img = augment_lib.color_jitter(img, np.random.default_rng([seed, w, 0xC0]))
                img = augment_lib.noise(img, np.random.default_rng([seed, w, t, 0xA0]), sigma=(0.0, 0.02))
            out[t, w] = img
    return out, occluded


def _detect_mediapipe(images, true68, occluded, pose_views, realism: RealismConfig, fps: float):
    """MediaPipe on every frame of every view (VIDEO mode, one landmarker per view) → iBUG-68 pixels
    [T, W, 68, 2], their visibility (far-side guesses False) and the frames with a face [T, W]; plus the
    pose- and occlusion-correlated bias of ``realism``."""
    num_t, num_w = images.shape[:2]
    lmk = np.zeros((num_t, num_w, 68, 2), np.float32)
    vis = np.zeros((num_t, num_w, 68), bool)
    valid = np.zeros((num_t, num_w), bool)
    options = landmarker_lib.LandmarkerOptions(num_faces=1, check_orientation=False)
    for w in range(num_w):
        with landmarker_lib.FaceLandmarker(realism.face_landmarker, options) as det:
            for t in range(num_t):
                faces = det.detect(images[t, w], landmarker_lib.timestamp_ms(t, fps))
                if len(faces) == 0:
                    continue
                valid[t, w] = True
                lmk[t, w] = landmark_sets.mediapipe_to_ibug68(faces[0])[:, :2]
                vis[t, w] = landmark_sets.landmark_visibility(faces[0][None])[0][landmark_sets.MEDIAPIPE_TO_IBUG68]
    iod = np.linalg.norm(true68[..., 36, :] - true68[..., 45, :], axis=-1)  # [T, W]
    if realism.pose_bias:
        # Toward the frontal pose: the detector under-reads the turn (image x right, y down).
        yaw, pitch = pose_views[..., 1], pose_views[..., 0]
        shift = np.stack([-np.sin(yaw), -np.sin(pitch)], -1) * (realism.pose_bias * iod)[..., None]
        lmk = lmk + shift[:, :, None, :].astype(np.float32)
    if realism.occlusion_bias and occluded.any():
        size = images.shape[2]
        for t, w in zip(*np.nonzero(occluded.any(axis=(2, 3)))):
            px = np.clip(np.round(true68[t, w] - 0.5).astype(int), 0, size - 1)
            under = occluded[t, w][px[:, 1], px[:, 0]]
            if not under.any():
                continue
            ys, xs = np.nonzero(occluded[t, w])
            away = true68[t, w] - np.array([xs.mean() + 0.5, ys.mean() + 0.5])
            away /= np.maximum(np.linalg.norm(away, axis=-1, keepdims=True), 1e-6)
            lmk[t, w] += (under[:, None] * away * realism.occlusion_bias * iod[t, w]).astype(np.float32)
    lmk[~valid] = 0.0
    return lmk, vis & valid[..., None], valid


def _crop_transforms(lmk68: np.ndarray, true68: np.ndarray, valid: np.ndarray, crop_size: int) -> np.ndarray:
    """Reference crop recipe on the noisy detections; dropped frames take the box interpolated from
    their neighbours (as the real-video pipeline does), a view with no detection the true landmarks' box."""
    boxes = crops_lib.landmark_boxes(lmk68, valid)  # [T, W, 3], NaN where dropped
    for w in range(valid.shape[1]):
        if not valid[:, w].any():
            boxes[:, w] = crops_lib.landmark_boxes(true68[:, w])
        else:
            boxes[:, w] = crops_lib.interpolate_invalid(boxes[:, w], valid[:, w])
    return crops_lib.boxes_to_transforms(boxes, crop_size).astype(np.float32)


def _ground_truth_arrays(scene: _Scene, true68: np.ndarray) -> dict[str, np.ndarray]:
    """``SynthClip.gt``."""
    gt = scene.gt
    return {
        "shape": gt["shape"],
        "expression": gt["expression"],
        "pose_world": gt["pose"],
        "translation_world": gt["translation"],
        "pose": scene.pose_views,
        "translation": scene.trans_views.astype(np.float32),
        "vertices": scene.verts.astype(np.float32),
        "canonical_vertices": scene.canon.astype(np.float32),
        "landmarks3d": scene.lmk68_3d.astype(np.float32),
        "landmarks68_true": true68,
        "speech": gt["speech"],
        "blink": gt["blink"],
    }


def _camera_record(focal, principal, scene: _Scene, rig: motion_lib.CameraRig, config: SynthConfig) -> dict[str, Any]:
    """``SynthClip.camera``."""
    return {
        "focal_px": float(focal),
        "principal_px": principal.astype(np.float32),
        "distance_m": float(config.camera_distance),
        "view_rotations": scene.view_rot.astype(np.float32),
        "yaw_deg": np.asarray(rig.yaw_deg, np.float32),
        "pitch_deg": np.asarray(rig.pitch_deg, np.float32),
    }


def synthesize_clip(
    *,
    seed: int = 0,
    rig: motion_lib.CameraRig | str = "mono",
    config: SynthConfig = SynthConfig(),
    model=None,
    embedding68=None,
    embedding_mp=None,
    blink_component: int | None = None,
    speech_components: tuple[int, ...] | None = None,
    progress=None,
) -> SynthClip:
    """Generates one clip (see the module docstring).

    Args:
      seed: the clip is a deterministic function of (seed, rig, config, model).
      rig: a CameraRig or a spec for ``motion.parse_rig`` ("mono", "mead", "front,left_30", "0:0,45:0").
      config: clip settings.
      model, embedding68, embedding_mp: a FLAME-format model and its embeddings; default
        the demo head (whose blink and lip components are then used automatically).
      blink_component, speech_components: expression indices for blinks and lip motion.
      progress: optional callable(done, total) for progress bars.
    """
    t0 = time.perf_counter()
    if isinstance(rig, str):
        rig = motion_lib.parse_rig(rig)
    model, embedding68, embedding_mp, blink_component, speech_components = _resolve_assets(
        model, embedding68, embedding_mp, blink_component, speech_components
    )
    num_t, num_w, size = config.num_frames, rig.num_views, config.image_size
    gt = motion_lib.generate_motion(
        num_frames=num_t, n_shape=model.num_shape, n_expr=model.num_expression, seed=seed, config=config.motion,
        blink_component=blink_component, speech_components=speech_components,
    )
    scene = _pose_scene(model, embedding68, embedding_mp, gt, rig)
    head_width = float(np.ptp(np.asarray(model.v_template)[:, 0]))
    focal = config.head_fill * size * config.camera_distance / head_width
    principal = np.array([size / 2.0, size / 2.0])
    views = _render_views(model, embedding68, scene, focal, principal, config, seed, progress)

    # Detector noise and dropped frames, drawn in this order from the clip's own generator.
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    has_mp = views.true_mp.shape[-2] > 0
    lmk68 = _detect(rng, views.true68, views.vis68, config)
    lmk_mp = _detect(rng, views.true_mp, views.vis_mp, config) if has_mp else None
    valid = rng.random((num_t, num_w)) >= config.drop_frame_probability
    vis68 = views.vis68 & valid[..., None]
    vis_mp = views.vis_mp & valid[..., None] if has_mp else None
    realism = config.realism
    images = views.images
    if realism.occluder_fraction > 0 or realism.color_jitter:
        images, occluded = _realistic_frames(images, views.true68, realism, seed)
    else:
        occluded = np.zeros(images.shape[:4], bool)
    if realism.detector == "mediapipe":
        # What the real pipeline sees: MediaPipe on the frames, no noise model (and no 105-point set).
        lmk68, vis68, valid = _detect_mediapipe(images, views.true68, occluded, scene.pose_views, realism,
                                                config.motion.fps)
        if not valid.any():
            raise ValueError(f"synthetic clip seed {seed}: MediaPipe found no face in any frame")
        lmk_mp = vis_mp = None

    meta = {
        "seed": int(seed),
        "model": model.name,
        "num_frames": num_t,
        "views": list(rig.names),
        "image_size": size,
        "config": _jsonable(dataclasses.asdict(config)),
        "generation_seconds": time.perf_counter() - t0,
    }
    gt = _ground_truth_arrays(scene, views.true68)
    gt.update(appearance_ground_truth(model, embedding68, config, seed))
    gt["visible68_true"] = views.vis68
    gt["occluded_fraction"] = occluded.mean(axis=(2, 3)).astype(np.float32)
    return SynthClip(
        images=images, landmarks68=lmk68, visible68=vis68, landmarks_mp=lmk_mp, visible_mp=vis_mp,
        valid=valid, crop_transforms=_crop_transforms(lmk68, views.true68, valid, config.crop_size),
        gt=gt, camera=_camera_record(focal, principal, scene, rig, config),
        view_names=tuple(rig.names), fps=config.motion.fps, meta=meta,
    )


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


# --------------------------------------------------------------------------- disk layout
CLIP_FORMAT = "neuface-clip-v1"


def write_clip(clip: SynthClip, out_dir, *, write_videos: bool = True) -> Path:
    """Writes a clip in the layout the real-video pipeline reads.

    ``out_dir/clip.json`` (format, fps, views, video files, provenance),
    ``out_dir/<view>.mp4`` one video per view, ``out_dir/landmarks.npz`` (``landmarks68``
    [T, W, 68, 2] pixels, ``visible68``, ``landmarks_mp``, ``visible_mp``, ``valid``,
    ``crop_transforms``, ``view_names``) and ``out_dir/ground_truth.npz`` (every
    ``clip.gt`` array plus the camera).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    videos = {}
    if write_videos:
        for w, name in enumerate(clip.view_names):
            path = out / f"{name}.mp4"
            video_lib.write_video(path, clip.images[:, w], fps=clip.fps)
            videos[name] = path.name
    lmk = {
        "landmarks68": clip.landmarks68,
        "visible68": clip.visible68,
        "valid": clip.valid,
        "crop_transforms": clip.crop_transforms,
        "view_names": np.array(clip.view_names),
    }
    if clip.landmarks_mp is not None:
        lmk["landmarks_mp"] = clip.landmarks_mp
        lmk["visible_mp"] = clip.visible_mp
    np.savez_compressed(out / "landmarks.npz", **lmk)
    np.savez_compressed(out / "ground_truth.npz", **clip.gt, **{f"camera_{k}": np.asarray(v) for k, v in clip.camera.items()})
    manifest = {
        "format": CLIP_FORMAT,
        "fps": clip.fps,
        "num_frames": clip.num_frames,
        "views": list(clip.view_names),
        "videos": videos,
        "image_size": int(clip.images.shape[2]),
        "landmarks": "landmarks.npz",
        "ground_truth": "ground_truth.npz",
        "meta": clip.meta,
    }
    (out / "clip.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def read_clip(clip_dir, *, load_images: bool = True) -> SynthClip:
    """Reads a clip written by ``write_clip`` (images decoded from the per-view videos)."""
    d = Path(clip_dir)
    manifest_path = d / "clip.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{d}: no clip.json (not a clip folder written by `neuface-jax synth`)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != CLIP_FORMAT:
        raise ValueError(f"{manifest_path}: unknown clip format {manifest.get('format')!r}")
    with np.load(d / manifest["landmarks"], allow_pickle=False) as f:
        lmk = {k: f[k] for k in f.files}
    with np.load(d / manifest["ground_truth"], allow_pickle=False) as f:
        gt_all = {k: f[k] for k in f.files}
    camera = {k[len("camera_"):]: gt_all.pop(k) for k in list(gt_all) if k.startswith("camera_")}
    views = tuple(manifest["views"])
    num_t = int(manifest["num_frames"])
    size = int(manifest["image_size"])
    images = np.zeros((num_t, len(views), size, size, 3), np.uint8)
    if load_images:
        for w, name in enumerate(views):
            frames = video_lib.read_video(d / manifest["videos"][name]).frames[0]
            if frames.shape[0] < num_t:
                raise ValueError(f"{d / manifest['videos'][name]}: {frames.shape[0]} frames, clip.json says {num_t}")
            images[:, w] = frames[:num_t, :size, :size]
    return SynthClip(
        images=images, landmarks68=lmk["landmarks68"], visible68=lmk["visible68"],
        landmarks_mp=lmk.get("landmarks_mp"), visible_mp=lmk.get("visible_mp"), valid=lmk["valid"],
        crop_transforms=lmk["crop_transforms"], gt=gt_all, camera=camera, view_names=views,
        fps=float(manifest["fps"]), meta=manifest.get("meta", {}),
    )
