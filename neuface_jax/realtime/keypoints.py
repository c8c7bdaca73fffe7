"""Head pose from the face detector's keypoints: a per-frame refinement of the regressor's pose and camera.

The regressor reads head pitch from the whole crop and, like any regression, shrinks it toward the
poses it was trained on: a head looking further down than any training frame reads as looking less
down (``docs/realtime.md``, Waves 8–10). MediaPipe's face detector (BlazeFace), which the tracker
runs anyway, also gives six keypoints per face — the two eye centres, the nose tip, the mouth centre
and the two ear tragions. Where the nose tip sits between the eyes and the mouth is a direct,
geometric reading of pitch (it moves with the head, whatever poses training saw), and the four
central points pin the face's place and size in the crop. This module fits the regressor's global
rotation and weak-perspective camera to those four points, with the regressor's own values as a
Gaussian prior (a few Gauss–Newton steps on six numbers, one compiled call):

* **Anchors.** Each keypoint is a point of the face model: the mean of the iBUG-68 eye contour
  (36–41, 42–47), the nose tip (30) and the mean of the inner lips (60–67), each plus a fixed offset in
  the head's frame (``offsets`` [4, 3], model units), because BlazeFace's points are not exactly these
  (its nose tip sits about 5 % of the eye distance below iBUG's). ``calibrate_offsets`` fits the
  offsets by linear least squares from labelled frames (an ``annotate`` output's parameters and the
  detector's keypoints on the same frames); ``calibrate_annotations`` does it from annotation folders
  (the frames a regressor was distilled on) and ``save_anchors`` / ``load_anchors`` keep the result
  as JSON beside the regressor.
* **Keypoints at the face's scale** (``roi_keypoints``): the detector runs on the square around the
  crop box (``KeypointConfig.roi_scale`` × its side) resized to the detector's 128-pixel input, not on
  the whole frame, where a face a few dozen pixels wide gets keypoints coarse by a tenth of its eye
  distance.
* **Refinement** (``refine``): minimizes Σ‖π(anchor_k) − keypoint_k‖²/σ_kp² + Σ(Δθ/σ_θ)² over the global
  rotation (additive axis-angle change Δr), the log scale and the crop-plane translation, starting from
  the regressor's values; identity, expression, jaw and the other joints stay the regressor's.

The tracker uses it with ``TrackConfig.keypoint_anchors`` (``realtime.track``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import flame_jax
import flame_jax.rotations
from neuface_jax.common.settings import setting
from neuface_jax.core import camera as camera_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.media import crops as crops_lib

__all__ = [
    "ANCHOR_NAMES", "KeypointConfig", "anchor_matrix", "calibrate_annotations", "calibrate_offsets", "fit_pose",
    "load_anchors", "refine", "roi_keypoints", "save_anchors", "to_crop",
]

logger = logging.getLogger(__name__)

#: The detector keypoints used, in BlazeFace's order (its first four; the ear tragions are left out:
#: one of them is hidden whenever the head turns).
ANCHOR_NAMES = ("eye_image_left", "eye_image_right", "nose_tip", "mouth_centre")
#: The iBUG-68 points each anchor is the mean of (image-left eye = the person's right eye, 36–41).
_ANCHOR_POINTS = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47), (30,), (60, 61, 62, 63, 64, 65, 66, 67))
ANCHORS_FORMAT = "neuface-jax keypoint anchors v1"
ANCHORS_FILE = "keypoint_anchors.json"


@dataclasses.dataclass(frozen=True)
class KeypointConfig:
    """Settings of the keypoint refinement."""

    roi_scale: float = setting(1.5, "The detector runs on the square of this many crop sides around the crop.")
    roi_size: int = setting(128, "Side (pixels) the square is resized to (BlazeFace short range's input).")
    sigma_keypoint: float = setting(0.02, "Keypoint noise, normalized crop units (the crop is 2 wide).")
    sigma_rotation_deg: float = setting(6.0, "Prior on the change of the regressor's head rotation (degrees).")
    sigma_scale: float = setting(0.05, "Prior on the change of the camera's log scale.")
    sigma_translation: float = setting(0.05, "Prior on the change of the face's place, normalized crop units.")
    iterations: int = setting(3, "Gauss-Newton steps.")
    min_score: float = setting(0.5, "A detection below this score gives no keypoints (the fit is kept).")

    def __post_init__(self):
        if not self.roi_scale > 0 or self.roi_size < 16 or self.iterations < 1:
            raise ValueError("roi_scale must be positive, roi_size at least 16 and iterations at least 1")
        for k in ("sigma_keypoint", "sigma_rotation_deg", "sigma_scale", "sigma_translation"):
            if not getattr(self, k) > 0:
                raise ValueError(f"{k} must be positive, got {getattr(self, k)}")


def anchor_matrix(n_landmarks: int = 68) -> np.ndarray:
    """``float32 [4, n_landmarks]``: each anchor as a weighted mean of the iBUG-68 landmarks."""
    if n_landmarks != 68:
        raise ValueError(f"the keypoint anchors are defined on the iBUG-68 landmarks, not {n_landmarks}")
    w = np.zeros((len(_ANCHOR_POINTS), n_landmarks), np.float32)
    for k, idx in enumerate(_ANCHOR_POINTS):
        w[k, list(idx)] = 1.0 / len(idx)
    return w


def _anchors_3d(face: fit_lib.FaceModel, shape, expression, pose, anchors=None):
    """The anchors' model-frame points [K, 3] (offsets not added; ``anchors`` [K, 68] weights of the
    landmarks, default ``anchor_matrix``), the global rotation [3, 3] and the root joint [3] about which
    FLAME turns the head."""
    out = flame_jax.forward(face.flame, shape=shape[None], expression=expression[None], pose=pose[None])
    lmk3d = flame_jax.landmarks(face.flame, face.embedding, out.vertices, pose[None])[0]
    w = jnp.asarray(anchor_matrix(lmk3d.shape[0])) if anchors is None else anchors
    return w @ lmk3d, flame_jax.rotations.axis_angle_to_matrix(pose[:3]), out.joints[0, 0]


def _project_anchors(face, shape, expression, pose, cam, offsets):
    a, rot, _ = _anchors_3d(face, shape, expression, pose)
    return camera_lib.project(a + offsets @ rot.T, cam)


def fit_pose(face, anchors, offsets, shape, expression, pose, cam, points, weights, sigmas, iterations: int = 3):
    """The head rotation and camera fitted to 2D points (traceable; ``refine`` and the regressor's landmark
    head use it): Gauss–Newton on θ = (Δr [3], Δlog s, Δu [2]) minimizing
    Σ w_k‖π(anchor_k) − point_k‖²/σ₀² + Σ(θ_i/σ_i)², ``anchors`` [K, 68] landmark weights, ``offsets`` [K, 3]
    (head frame), ``points`` [K, 2] normalized crop coordinates, ``weights`` [K], ``sigmas`` [7]. The face
    model runs once: a new global rotation R' turns the posed anchors about the root joint J as
    R'Rᵀ(a − J) + J (FLAME's root transform), so the residual is closed-form in θ.

    Returns ``(pose [15], cam [3])``."""
    a, rot, root = _anchors_3d(face, shape, expression, pose, anchors)
    local = (a - root) @ rot  # Rᵀ(a − J), row vectors

    def params(theta):
        s = cam[0] * jnp.exp(theta[3])
        return pose[:3] + theta[:3], jnp.stack([s, cam[1] + theta[4] / s, cam[2] - theta[5] / s])

    def residual(theta):
        r_new, c = params(theta)
        rot_new = flame_jax.rotations.axis_angle_to_matrix(r_new)
        pts = (local + offsets) @ rot_new.T + root
        r = (camera_lib.project(pts, c) - points) * jnp.sqrt(weights)[:, None] / sigmas[0]
        return jnp.concatenate([r.ravel(), theta / sigmas[1:]])

    def step(theta, _):
        r = residual(theta)
        j = jax.jacfwd(residual)(theta)
        return theta - jnp.linalg.solve(j.T @ j, j.T @ r), None

    theta, _ = jax.lax.scan(step, jnp.zeros(6, pose.dtype), None, length=iterations)
    r_new, c = params(theta)
    return pose.at[:3].set(r_new), c


@functools.partial(jax.jit, static_argnames=("iterations",))
def _refine(face, shape, expression, pose, cam, keypoints, weights, offsets, sigmas, *, iterations: int):
    p, c = fit_pose(face, jnp.asarray(anchor_matrix()), offsets, shape, expression, pose, cam, keypoints, weights,
                    sigmas, iterations)
    return p, c, fit_lib.evaluate_params(face, shape, expression, p, c)[1]


def refine(face: fit_lib.FaceModel, offsets, shape, expression, pose, cam, keypoints, valid=None,
           config: KeypointConfig = KeypointConfig()):
    """The regressor's head rotation and camera fitted to the detector's keypoints (module docstring).

    Args:
      face: the face model (e.g. ``regressor.landmark_submodel`` of the regressor's: the same landmarks).
      offsets: [4, 3] anchor offsets (``calibrate_offsets``).
      shape, expression, pose [15], cam [3]: one prediction (crop camera).
      keypoints: [4, 2] (or [6, 2]; the first four are used) normalized crop coordinates.
      valid: [4] bool, the keypoints to use (default: the finite ones).

    Returns:
      ``(pose [15], cam [3], landmarks [68, 2])`` as NumPy float32; unchanged when no keypoint is valid.
    """
    kp = np.asarray(keypoints, np.float32)[:4]
    ok = np.all(np.isfinite(kp), -1) if valid is None else (np.asarray(valid, bool)[:4] & np.all(np.isfinite(kp), -1))
    sig = np.array([config.sigma_keypoint, *(3 * [math.radians(config.sigma_rotation_deg)]), config.sigma_scale,
                    config.sigma_translation, config.sigma_translation], np.float32)
    out = _refine(face, jnp.asarray(shape), jnp.asarray(expression), jnp.asarray(pose), jnp.asarray(cam),
                  jnp.asarray(np.nan_to_num(kp)), jnp.asarray(ok, jnp.float32), jnp.asarray(offsets, jnp.float32),
                  jnp.asarray(sig), iterations=int(config.iterations))
    return tuple(np.asarray(a, np.float32) for a in jax.device_get(out))


def calibrate_offsets(face: fit_lib.FaceModel, shape, expression, pose, cam, keypoints) -> np.ndarray:
    """The anchor offsets [4, 3] (model units, head frame) that best map labelled frames onto the detector's
    keypoints: linear least squares over the frames (N: shape [N, n_shape], expression [N, n_expr], pose
    [N, 15], cam [N, 3] crop cameras, keypoints [N, ≥4, 2] normalized crop coordinates of the same crops,
    NaN where the detector found none). The component along the camera's axis is not observed and is
    set to zero (minimum-norm solution)."""
    shape, expression, pose, cam = (np.asarray(a, np.float32) for a in (shape, expression, pose, cam))
    kp = np.asarray(keypoints, np.float64)[:, :4]
    if not (len(shape) == len(expression) == len(pose) == len(cam) == len(kp)) or len(kp) == 0:
        raise ValueError("calibrate_offsets needs the same number (> 0) of labels and keypoint rows")
    f = jax.jit(jax.vmap(functools.partial(_anchors_3d, face)))
    a, rot, _ = (np.asarray(x, np.float64) for x in f(jnp.asarray(shape), jnp.asarray(expression), jnp.asarray(pose)))
    c = cam.astype(np.float64)
    # p_x = s (a_x + (R d)_x + t_x),  p_y = -s (a_y + (R d)_y + t_y)  →  rows of R times d.
    lhs_x = kp[..., 0] / c[:, :1] - a[..., 0] - c[:, 1:2]          # [N, 4]
    lhs_y = -kp[..., 1] / c[:, :1] - a[..., 1] - c[:, 2:3]
    offsets = np.zeros((4, 3))
    for k in range(4):
        ok = np.isfinite(lhs_x[:, k]) & np.isfinite(lhs_y[:, k])
        if ok.sum() < 3:
            raise ValueError(f"keypoint {ANCHOR_NAMES[k]}: found in {int(ok.sum())} frames; at least 3 are needed")
        m = np.concatenate([rot[ok, 0, :], rot[ok, 1, :]])
        b = np.concatenate([lhs_x[ok, k], lhs_y[ok, k]])
        offsets[k] = np.linalg.lstsq(m, b, rcond=None)[0]
    return offsets.astype(np.float32)


def to_crop(points_px, m, size: int) -> np.ndarray:
    """Frame pixels [..., 2] → normalized crop coordinates of the crop with transform ``m`` [2, 3] at ``size``."""
    return crops_lib.to_normalized(crops_lib.apply_transform(np.asarray(points_px, np.float64), m), size).astype(np.float32)


def roi_keypoints(detector, image: np.ndarray, box, config: KeypointConfig = KeypointConfig()):
    """The detector's six keypoints [6, 2] (frame pixels) of the face in the crop box ``(cx, cy, side)``,
    detected in the square of ``roi_scale`` × its side around it (resized to ``roi_size``); None when the
    detector finds no face there above ``min_score``. ``detector``: a ``track.FaceDetector``."""
    from neuface_jax.realtime import regressor as regressor_lib

    box = np.asarray(box, np.float64)
    roi_box = np.array([box[0], box[1], box[2] * config.roi_scale])
    roi, m = regressor_lib.crop_box(image, roi_box, config.roi_size)
    rows, kps = detector.detect_keypoints(roi)
    if len(rows) == 0 or rows[0, 4] < config.min_score:
        return None
    return crops_lib.apply_transform(kps[0].astype(np.float64), crops_lib.invert_transform(m)).astype(np.float32)


def save_anchors(path, offsets, *, meta: dict | None = None) -> Path:
    """Writes the offsets as JSON (``path`` a file, or a directory: ``ANCHORS_FILE`` inside it)."""
    path = Path(path)
    if path.is_dir():
        path = path / ANCHORS_FILE
    offsets = np.asarray(offsets, np.float64)
    if offsets.shape != (4, 3) or not np.all(np.isfinite(offsets)):
        raise ValueError(f"anchor offsets must be finite [4, 3], got {offsets.shape}")
    path.write_text(json.dumps({"format": ANCHORS_FORMAT, "anchors": list(ANCHOR_NAMES),
                                "offsets": offsets.tolist(), **({"meta": meta} if meta else {})}, indent=1))
    return path


def load_anchors(path) -> np.ndarray:
    """The offsets [4, 3] of a ``save_anchors`` file (or of ``ANCHORS_FILE`` in a directory). Plain JSON:
    nothing in it is executed; a malformed file raises ``ValueError`` naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / ANCHORS_FILE
    try:
        d = json.loads(path.read_text())
        if d.get("format") != ANCHORS_FORMAT or list(d.get("anchors", [])) != list(ANCHOR_NAMES):
            raise ValueError(f"not a {ANCHORS_FORMAT!r} file with anchors {list(ANCHOR_NAMES)}")
        offsets = np.asarray(d["offsets"], np.float64)
        if offsets.shape != (4, 3) or not np.all(np.isfinite(offsets)):
            raise ValueError(f"offsets must be finite [4, 3], got shape {offsets.shape}")
    except FileNotFoundError:
        raise ValueError(f"{path}: no keypoint anchors file (make one with calibrate-keypoints)") from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{path}: unreadable keypoint anchors ({e})") from None
    return offsets.astype(np.float32)


def calibrate_annotations(folders: Sequence, face: fit_lib.FaceModel, detector, *, fraction: float = 1.0,
                          config: KeypointConfig = KeypointConfig()) -> tuple[np.ndarray, dict]:
    """``calibrate_offsets`` from ``annotate`` outputs: each folder's frames up to ``fraction`` of the clip
    (every view), the detector's ``roi_keypoints`` around the annotation's crop box, its parameters as the
    labels. Returns the offsets and a summary (frames used per clip, the keypoints' RMS residual after
    calibration in normalized crop units)."""
    from neuface_jax.realtime import regressor as regressor_lib
    from neuface_jax.training import labels as labels_lib

    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    rows = {k: [] for k in ("shape", "expression", "pose", "cam", "kp")}
    used = {}
    for folder in labels_lib.find_annotations(folders):
        n = 0
        for rec, t, v, image in labels_lib.iter_annotated_frames(folder, fraction=fraction):
            m = rec.crop_transforms[t, v]
            kp = roi_keypoints(detector, image, regressor_lib.box_of_transform(m, rec.crop_size), config)
            kp = np.full((4, 2), np.nan, np.float32) if kp is None else to_crop(kp[:4], m, rec.crop_size)
            rows["shape"].append(rec.shape)
            rows["expression"].append(rec.expression[t, v])
            rows["pose"].append(rec.pose[t, v])
            rows["cam"].append(rec.cam[t, v])
            rows["kp"].append(kp)
            n += 1
        used[str(folder)] = n
    arrays = {k: np.stack(v) for k, v in rows.items()} if rows["kp"] else None
    if arrays is None:
        raise ValueError(f"{list(map(str, folders))}: no annotated frames to calibrate the keypoints on")
    ns, ne = face.flame.num_shape, face.flame.num_expression
    shape = arrays["shape"][:, :ns]
    expr = arrays["expression"][:, :ne]
    offsets = calibrate_offsets(face, shape, expr, arrays["pose"], arrays["cam"], arrays["kp"])
    proj = jax.jit(jax.vmap(functools.partial(_project_anchors, face), in_axes=(0, 0, 0, 0, None)))(
        jnp.asarray(shape), jnp.asarray(expr), jnp.asarray(arrays["pose"]), jnp.asarray(arrays["cam"]),
        jnp.asarray(offsets))
    res = np.asarray(proj) - arrays["kp"]
    rms = np.sqrt(np.nanmean(np.sum(res ** 2, -1), 0))
    summary = {"frames": used, "found_fraction": float(np.mean(np.isfinite(arrays["kp"][:, 0, 0]))),
               "rms_residual_normalized": dict(zip(ANCHOR_NAMES, map(float, rms))), "fraction": fraction}
    logger.info("keypoint anchors from %d frames: RMS residual %s", len(arrays["kp"]), summary["rms_residual_normalized"])
    return offsets, summary
