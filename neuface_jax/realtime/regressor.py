"""The real-time regressor: one face crop → identity, expression, jaw, head rotation and camera.

The regressor *is* an ``core.encoder.Encoder`` with the ``"mobilenet"`` backbone (``core.mobilenet``)
and the compact output layout, so it is saved and loaded with ``save_encoder`` / ``load_encoder``
and NeuFace can start from it (``annotate --encoder DIR``). ``regressor_config`` is its preset.

``Regressor`` wraps a loaded encoder for batch-1 inference: one compiled function takes a uint8
crop and returns the decoded parameters and the 68 model landmarks in normalized crop
coordinates (what the tracker needs to place the next frame's crop). Crops follow the project's
recipe (``media.crops``): the square box of the 68 landmarks ×1.1 ×1.25, warped to
``image_size`` pixels. A regressor with a spatial landmark head (``EncoderConfig.landmark_head``) also
returns the head's 68 points and, by default (``HeadFit``), fits the regressed head rotation and camera to them
(``fit_pose``) and the jaw opening to its outer lip points (``fit_jaw``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import spatial

import flame_jax
import flame_jax.rotations
from neuface_jax.common.settings import setting
from neuface_jax.core import camera as camera_lib
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import landmark_sets as landmark_sets_lib

__all__ = [
    "DEFAULT_IMAGE_SIZE", "HeadFit", "JAW_FIT_POINTS", "Prediction", "Regressor", "box_of_transform", "crop_box",
    "demo_face", "fit_jaw", "fit_pose", "landmark_submodel", "mirror_maps", "mirror_params", "reframe_camera",
    "regressor_config",
]

#: Crop side of the regressor (pixels).
DEFAULT_IMAGE_SIZE = 96
#: Stage widths and blocks of the default MobileNet (stem 16, four stride-2 stages).
DEFAULT_WIDTHS = (16, 32, 64, 128)
DEFAULT_BLOCKS = (1, 2, 3, 2)


def regressor_config(n_shape: int, n_expr: int, *, image_size: int = DEFAULT_IMAGE_SIZE,
                     widths=DEFAULT_WIDTHS, blocks=DEFAULT_BLOCKS, head_hidden: int = 256,
                     landmark_head: int = 0) -> encoder_lib.EncoderConfig:
    """The regressor's ``EncoderConfig``: MobileNet backbone, compact layout (no texture, light);
    ``landmark_head``: points of the spatial landmark head (0: none)."""
    return encoder_lib.EncoderConfig(
        arch="mobilenet", layout="compact", n_shape=int(n_shape), n_expr=int(n_expr), image_size=int(image_size),
        head_hidden=int(head_hidden), small_widths=tuple(widths), small_blocks=tuple(blocks),
        landmark_head=int(landmark_head),
    )


def reframe_camera(cam, zoom, shift, *, xp=np):
    """``core.camera.reframe_camera`` (NumPy by default): the camera after ``q → zoom·q + shift``."""
    return camera_lib.reframe_camera(cam, zoom, shift, xp=xp)


def mirror_maps(face: fit_lib.FaceModel, n_shape: int, n_expr: int, *, tolerance: float = 1e-3):
    """``(vertex_map [V], shape_map [n_shape, n_shape], expression_map [n_expr, n_expr])`` of the face
    model's left/right mirror (x → −x): vertex ``i`` of a mirrored mesh is vertex ``vertex_map[i]``,
    and coefficients ``c`` become ``c @ map``, the least-squares coefficients of the mirrored blend
    shapes (exact when the basis is closed under mirroring). Raises if the template is not symmetric
    within ``tolerance`` (model units)."""
    flame = face.flame
    v = np.asarray(flame.v_template, np.float64)
    mirrored = v * np.array([-1.0, 1.0, 1.0])
    dist, vertex_map = spatial.cKDTree(v).query(mirrored)
    if dist.max() > tolerance:
        raise ValueError(f"{flame.name}: the template is not left/right symmetric (a vertex's mirror image is "
                         f"{dist.max():.3g} from the nearest vertex); mirror augmentation needs a symmetric model")
    basis = np.asarray(flame.basis, np.float64).reshape(flame.basis.shape[0], -1, 3)

    def block(rows):
        b = basis[rows]
        m = (b[:, vertex_map] * np.array([-1.0, 1.0, 1.0])).reshape(len(b), -1)
        x, *_ = np.linalg.lstsq(b.reshape(len(b), -1).T, m.T, rcond=None)
        return x.T.astype(np.float32)

    ns = flame.num_shape
    if n_shape > ns or n_expr > flame.num_expression:
        raise ValueError(f"{n_shape} identity / {n_expr} expression coefficients; {flame.name} has {ns} / "
                         f"{flame.num_expression}")
    return vertex_map, block(np.arange(n_shape)), block(ns + np.arange(n_expr))


def mirror_params(shape, expression, pose, cam, shape_map, expression_map, *, xp=np):
    """The parameters [..., ·] of the left/right mirror image of a face: identity and expression through
    ``mirror_maps``' maps, rotations (x, y, z) → (x, −y, −z) with the two eyes swapped (full 15-value
    pose), the camera's x translation negated. Mirroring twice gives the parameters back (up to the
    maps' least-squares residual)."""
    flip = xp.asarray([1.0, -1.0, -1.0], pose.dtype)
    p = pose.reshape(pose.shape[:-1] + (5, 3)) * flip
    p = p[..., [0, 1, 2, 4, 3], :].reshape(pose.shape)
    return (shape @ shape_map, expression @ expression_map, p,
            cam * xp.asarray([1.0, -1.0, 1.0], cam.dtype))


def box_of_transform(m, size: int) -> np.ndarray:
    """The square box ``(cx, cy, side)`` that the similarity ``m`` [2, 3] (image → ``size``-pixel crop) crops."""
    m = np.asarray(m, np.float64)
    a = m[0, 0]
    return np.array([(size / 2.0 - m[0, 2]) / a, (size / 2.0 - m[1, 2]) / a, size / a])


def demo_face() -> fit_lib.FaceModel:
    """The procedural demo head with its 68-point embedding (the default face model)."""
    return fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())


def landmark_submodel(face: fit_lib.FaceModel) -> fit_lib.FaceModel:
    """The face model cut down to the vertices its landmark embedding touches, with the embedding's
    triangles renumbered: the same landmarks (skinning and blend shapes are per vertex; the joints
    come from their own folded blend shapes) for a fraction of the forward pass's cost."""
    flame, emb = face.flame, face.embedding
    used_faces = [np.asarray(emb.face_idx).ravel()]
    if emb.dynamic_face_idx is not None:
        used_faces.append(np.asarray(emb.dynamic_face_idx).ravel())
    used_faces = np.unique(np.concatenate(used_faces))
    tri = np.asarray(flame.faces)[used_faces]
    used_verts = np.unique(tri)
    vert_map = np.full(int(flame.v_template.shape[0]), -1, np.int64)
    vert_map[used_verts] = np.arange(used_verts.size)
    face_map = np.full(int(flame.faces.shape[0]), -1, np.int64)
    face_map[used_faces] = np.arange(used_faces.size)
    k = int(flame.basis.shape[0])
    basis = np.asarray(flame.basis).reshape(k, -1, 3)[:, used_verts].reshape(k, -1)
    sub = dataclasses.replace(
        flame, v_template=jnp.asarray(np.asarray(flame.v_template)[used_verts]), basis=jnp.asarray(basis),
        lbs_weights=jnp.asarray(np.asarray(flame.lbs_weights)[used_verts]),
        joint_regressor=jnp.asarray(np.asarray(flame.joint_regressor)[:, used_verts]),
        faces=jnp.asarray(vert_map[tri].astype(np.int32)),
    )
    sub_emb = dataclasses.replace(
        emb, face_idx=jnp.asarray(face_map[np.asarray(emb.face_idx)].astype(np.int32)),
        dynamic_face_idx=None if emb.dynamic_face_idx is None else jnp.asarray(
            face_map[np.asarray(emb.dynamic_face_idx)].astype(np.int32)),
    )
    return fit_lib.FaceModel(sub, sub_emb)


def crop_box(frame: np.ndarray, box, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(crop uint8 [size, size, 3], transform [2, 3])`` of the square box ``(cx, cy, side)`` in ``frame``.

    The box is snapped to whole pixels and that pixel square is resized (area filter when
    shrinking) to size × size, zeros outside the frame; the transform returned is the snapped box's,
    so it maps exactly onto the crop. One resize of the face's pixels only: cheaper than a warp of
    the frame with an anti-aliasing pre-resize of all of it.
    """
    # cv2 (a declared dependency) is heavy; only live cropping needs it here.
    import cv2

    side = max(1, int(round(float(box[2]))))
    x0, y0 = int(round(float(box[0]) - side / 2.0)), int(round(float(box[1]) - side / 2.0))
    m = crops_lib.box_to_transform((x0 + side / 2.0, y0 + side / 2.0, float(side)), size)
    h, w = frame.shape[:2]
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if cx1 <= cx0 or cy1 <= cy0:
        return np.zeros((size, size, 3), np.uint8), m
    roi = frame[cy0:cy1, cx0:cx1]
    pads = (cy0 - y0, y0 + side - cy1, cx0 - x0, x0 + side - cx1)
    if any(pads):
        roi = cv2.copyMakeBorder(roi, *pads, cv2.BORDER_CONSTANT, value=0)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(roi), (size, size), interpolation=interp), m


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One crop's regressed parameters (NumPy, float32).

    Attributes:
      shape: [n_shape] identity.  expression: [n_expr].  pose: [15] full FLAME pose (global, neck,
      jaw, eyes; neck and eyes zero).  cam: [3] weak-perspective camera (s, tx, ty) of the crop.
      landmarks: [68, 2] model landmarks, normalized crop coordinates.
      head_landmarks: [68, 2] the spatial landmark head's points (normalized crop coordinates) when the
        regressor has one (with ``HeadFit(enabled=True)`` the head rotation and camera above are fitted to
        them), else None.
    """

    shape: np.ndarray
    expression: np.ndarray
    pose: np.ndarray
    cam: np.ndarray
    landmarks: np.ndarray
    head_landmarks: np.ndarray | None = None

    def vector(self) -> np.ndarray:
        """Every parameter in one vector (shape, expression, pose, cam): what the filter smooths."""
        return np.concatenate([self.shape, self.expression, self.pose, self.cam])

    def with_vector(self, v: np.ndarray) -> "Prediction":
        """The same prediction with its parameters taken from ``v`` (landmarks kept)."""
        n = np.cumsum([0, self.shape.size, self.expression.size, self.pose.size, self.cam.size])
        v = np.asarray(v, np.float32)
        return dataclasses.replace(self, shape=v[n[0]:n[1]], expression=v[n[1]:n[2]], pose=v[n[2]:n[3]],
                                   cam=v[n[3]:n[4]])


@dataclasses.dataclass(frozen=True)
class HeadFit:
    """How a regressor with a spatial landmark head (``EncoderConfig.landmark_head``) uses the head's points:
    the regressed head rotation and camera fitted to all 68 (``fit_pose``, Gauss–Newton on six numbers), then
    the regressed jaw opening to its 12 outer lip points (``fit_jaw``), both on by default; the regressed values
    are the fits' Gaussian priors. A regressor without a head is not affected."""

    enabled: bool = setting(True, "Fit the head rotation and camera to the landmark head's points: on by default "
                                  "for a regressor trained with its head from the start (Wave 12: it takes a head "
                                  "looking 17-28 degrees down from 1.67x annotate's NME to 1.47x); a head added to "
                                  "an already trained regressor (Wave 11) reads worse than its mesh beyond the "
                                  "training poses, so turn it off there (--nohead_fit).", flag="head_fit")
    sigma_point: float = setting(0.03, "Point noise, normalized crop units (the crop is 2 wide).",
                                 flag="head_fit_sigma_point")
    sigma_rotation_deg: float = setting(10.0, "Prior on the change of the regressed head rotation (degrees).",
                                        flag="head_fit_sigma_rotation_deg")
    sigma_scale: float = setting(0.1, "Prior on the change of the camera's log scale.", flag="head_fit_sigma_scale")
    sigma_translation: float = setting(0.1, "Prior on the change of the face's place, normalized crop units.",
                                       flag="head_fit_sigma_translation")
    iterations: int = setting(1, "Gauss-Newton steps of the pose fit (one: within 0.1 point of converged on the "
                                 "benchmark's clips, 0.2 ms cheaper than three).", flag="head_fit_iterations")
    jaw: bool = setting(True, "Fit the jaw's opening to the landmark head's 12 outer lip points (one Gauss-Newton step "
                              "on one angle): on Wave 11's regressors it lowered the NME of a head looking 17-28 "
                              "degrees down, beyond the training poses, by 0.26-0.51 points and changed the others "
                              "by a few hundredths (docs/realtime.md, Wave 12).", flag="jaw_fit")
    sigma_jaw_deg: float = setting(3.0, "Prior on the change of the regressed jaw opening (degrees).",
                                   flag="jaw_fit_sigma_deg")

    def __post_init__(self):
        if self.iterations < 1:
            raise ValueError(f"HeadFit.iterations must be at least 1, got {self.iterations}")
        for k in ("sigma_point", "sigma_rotation_deg", "sigma_scale", "sigma_translation", "sigma_jaw_deg"):
            if not getattr(self, k) > 0:
                raise ValueError(f"HeadFit.{k} must be positive, got {getattr(self, k)}")

    def sigmas(self) -> np.ndarray:
        r = np.deg2rad(self.sigma_rotation_deg)
        return np.array([self.sigma_point, r, r, r, self.sigma_scale, self.sigma_translation, self.sigma_translation],
                        np.float32)

    def jaw_sigmas(self) -> np.ndarray:
        """``[σ of a point, σ of the jaw opening (radians)]`` of ``fit_jaw``."""
        return np.array([self.sigma_point, np.deg2rad(self.sigma_jaw_deg)], np.float32)


#: iBUG-68 indices of the outer lip contour: the points ``fit_jaw`` reads (with the inner lips too, 48-67, the
#: fitted opening agreed less with ``annotate``'s on MEAD and wojtek: docs/realtime.md, Wave 12).
JAW_FIT_POINTS = tuple(range(48, 60))


def fit_pose(face: fit_lib.FaceModel, shape, expression, pose, cam, points, weights, sigmas, iterations: int = 3):
    """The head rotation and camera fitted to 2D points of the model's landmarks (traceable).

    Gauss–Newton on θ = (Δr [3] added to the global axis-angle, Δ log s, Δu [2] the face's shift in
    normalized crop units), from the given values, minimizing
    Σ_k w_k ‖π(landmark_k) − point_k‖² / σ₀² + Σ_i (θ_i / σ_i)², identity, expression, jaw and the other
    joints fixed. The face model runs once: a new global rotation R' turns the posed landmarks about the
    root joint J as R'Rᵀ(l − J) + J (FLAME's root transform), so each step is closed-form in θ; the jaw
    contour's points stay on the vertices the starting yaw put them on (FLAME's dynamic contour slides
    with yaw; ``_predict`` recomputes the landmarks after the fit).

    Args:
      face: the face model.  shape, expression, pose [15], cam [3]: the starting parameters.
      points: [L, 2] target landmarks (normalized crop coordinates).  weights: [L].
      sigmas: [7] (σ₀ of a point, then σ of θ's six entries: ``HeadFit.sigmas``).

    Returns:
      ``(pose [15], cam [3])``.
    """
    out = flame_jax.forward(face.flame, shape=shape[None], expression=expression[None], pose=pose[None])
    lmk3d = flame_jax.landmarks(face.flame, face.embedding, out.vertices, pose[None])[0]
    root = out.joints[0, 0]
    local = (lmk3d - root) @ flame_jax.rotations.axis_angle_to_matrix(pose[:3])  # Rᵀ(l − J), row vectors
    sqrt_w = jnp.sqrt(weights)[:, None]

    def params(theta):
        s = cam[0] * jnp.exp(theta[3])
        return pose[:3] + theta[:3], jnp.stack([s, cam[1] + theta[4] / s, cam[2] - theta[5] / s])

    def residual(theta):
        r_new, c = params(theta)
        pts = local @ flame_jax.rotations.axis_angle_to_matrix(r_new).T + root
        r = (camera_lib.project(pts, c) - points) * sqrt_w / sigmas[0]
        return jnp.concatenate([r.ravel(), theta / sigmas[1:]])

    def step(theta, _):
        r = residual(theta)
        j = jax.jacfwd(residual)(theta)
        return theta - jnp.linalg.solve(j.T @ j, j.T @ r), None

    theta, _ = jax.lax.scan(step, jnp.zeros(6, pose.dtype), None, length=iterations)
    r_new, c = params(theta)
    return pose.at[:3].set(r_new), c


def fit_jaw(face: fit_lib.FaceModel, shape, expression, pose, cam, points, sigmas, iterations: int = 1,
            step: float = 1e-3):
    """The jaw's opening (``pose[6]``, the x component of the jaw's axis-angle) fitted to 2D points of the
    lips (traceable).

    Gauss–Newton on one number Δ added to the opening, minimizing
    Σ_k ‖π(landmark_k(Δ)) − point_k‖² / σ₀² + (Δ / σ_jaw)² over ``JAW_FIT_POINTS``, everything else fixed. The
    derivative is a forward difference of ``step`` radians (FLAME's skinning has a custom VJP, so there is no
    forward-mode derivative); both evaluations run as one batch of two.

    Args:
      face: the face model.  shape, expression, pose [15], cam [3]: the starting parameters.
      points: [68, 2] target landmarks (normalized crop coordinates; only the lips are read).
      sigmas: [2] (σ₀ of a point, σ_jaw in radians: ``HeadFit.jaw_sigmas``).

    Returns:
      pose [15] with the fitted opening.
    """
    idx = jnp.asarray(JAW_FIT_POINTS)
    target = points[idx]

    def lips(openings):
        return jax.vmap(lambda d: fit_lib.evaluate_params(face, shape, expression, pose.at[6].add(d), cam)[1][idx])(
            openings)

    def gauss_newton(delta, _):
        lo, hi = lips(jnp.stack([delta, delta + step]))
        r, j = lo - target, (hi - lo) / step
        grad = jnp.sum(j * r) / sigmas[0] ** 2 + delta / sigmas[1] ** 2
        hess = jnp.sum(j * j) / sigmas[0] ** 2 + 1.0 / sigmas[1] ** 2
        return delta - grad / hess, None

    delta, _ = jax.lax.scan(gauss_newton, jnp.zeros((), pose.dtype), None, length=iterations)
    return pose.at[6].add(delta)


def _predict(graphdef, config, trainable, rest, face, crop, maps=None, fit=None, jaw=None, *, iterations=3):
    images = crop[None].astype(jnp.float32) / 255.0
    if maps is not None:  # the crop and its mirror in one batch
        images = jnp.concatenate([images, images[:, :, ::-1]])
    head = None
    if config.landmark_head:
        raw, head = encoder_lib.apply(graphdef, trainable, rest, images, landmarks=True)
    else:
        raw = encoder_lib.apply(graphdef, trainable, rest, images)
    p = encoder_lib.decode_outputs(raw, config)
    out = p.shape[0], p.expression[0], p.pose[0], p.cam[0]
    if maps is not None:
        back = mirror_params(p.shape[1], p.expression[1], p.pose[1], p.cam[1], *maps, xp=jnp)
        out = tuple((a + b) / 2.0 for a, b in zip(out, back))
        if head is not None:
            head = head.at[1].set(head[1][landmark_sets_lib.IBUG68_MIRROR] * jnp.array([-1.0, 1.0]))
    if head is not None:
        head = jnp.mean(head, axis=0)
        if fit is not None:
            pose, cam = fit_pose(face, *out, head, jnp.ones(head.shape[0]), fit, iterations)
            out = (out[0], out[1], pose, cam)
        if jaw is not None:
            out = (out[0], out[1], fit_jaw(face, *out, head, jaw), out[3])
    _, lmk2d, _ = fit_lib.evaluate_params(face, *out)
    return (*out, lmk2d, head)


def _landmarks(face, shape, expression, pose, cam):
    return fit_lib.evaluate_params(face, shape, expression, pose, cam)[1]


class Regressor:
    """Batch-1 inference of a trained regressor (any ``Encoder`` works).

    Args:
      encoder: the network.  config: its ``EncoderConfig``.
      face: the face model its parameters belong to (default: the demo head).
      mirror_average: predict the crop and its left/right mirror in one batch of two, mirror the
        second prediction's parameters back (``mirror_params``) and average the two (test-time
        augmentation: the two predictions' errors are partly independent; twice the network's work in
        one call).
      head_fit: with a spatial landmark head, how the head rotation and camera are fitted to its points.
    """

    def __init__(self, encoder: encoder_lib.Encoder, config: encoder_lib.EncoderConfig,
                 face: fit_lib.FaceModel | None = None, *, mirror_average: bool = False,
                 head_fit: HeadFit = HeadFit()):
        self.encoder, self.config = encoder, config
        self.face = demo_face() if face is None else face
        if self.face.flame.num_shape < config.n_shape or self.face.flame.num_expression < config.n_expr:
            raise ValueError(
                f"the regressor predicts {config.n_shape} identity / {config.n_expr} expression components; the "
                f"face model has only {self.face.flame.num_shape} / {self.face.flame.num_expression}")
        self._landmark_face = landmark_submodel(self.face)
        #: The face model cut to its landmarks' vertices (``landmark_submodel``): the same landmarks, cheaper.
        self.landmark_face = self._landmark_face
        graphdef, self._trainable, self._rest = encoder_lib.split_params(encoder, freeze_bn=True)
        self.mirror_average = bool(mirror_average)
        #: ``(shape_map, expression_map)`` of ``mirror_maps`` when mirror averaging, else None.
        self.coefficient_mirror_maps = None
        if self.mirror_average:
            _, shape_map, expr_map = mirror_maps(self.face, config.n_shape, config.n_expr)
            self.coefficient_mirror_maps = (jnp.asarray(shape_map), jnp.asarray(expr_map))
        self.head_fit = head_fit
        self._fit_sigmas = jnp.asarray(head_fit.sigmas()) if config.landmark_head and head_fit.enabled else None
        self._jaw_sigmas = jnp.asarray(head_fit.jaw_sigmas()) if config.landmark_head and head_fit.jaw else None
        # The weights, face model and settings are bound into the compiled function as constants: passing the
        # network's ~150 arrays on every call cost 0.7 ms at batch 1 on a 2-core CPU (a quarter of the call), and
        # one flat output vector is one transfer instead of six.
        predict = functools.partial(_predict, graphdef, config, self._trainable, self._rest, self._landmark_face,
                                    maps=self.coefficient_mirror_maps, fit=self._fit_sigmas, jaw=self._jaw_sigmas,
                                    iterations=int(head_fit.iterations))
        self._fn = jax.jit(lambda crop: jnp.concatenate([jnp.ravel(a) for a in predict(crop) if a is not None]))
        sizes = [config.n_shape, config.n_expr, 15, 3, 68 * 2] + ([config.landmark_head * 2] if config.landmark_head
                                                                   else [])
        self._splits = np.cumsum(sizes)[:-1]
        self._lmk = jax.jit(_landmarks)
        self.image_size = int(config.image_size)

    @classmethod
    def load(cls, path, face: fit_lib.FaceModel | None = None, *, mirror_average: bool = False,
             head_fit: HeadFit = HeadFit()) -> "Regressor":
        """A regressor from an encoder checkpoint directory (``save_encoder``)."""
        enc, cfg = encoder_lib.load_encoder(path)
        return cls(enc, cfg, face, mirror_average=mirror_average, head_fit=head_fit)

    def crop(self, frame: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
        """``crop_box`` at this regressor's crop size."""
        return crop_box(frame, box, self.image_size)

    def __call__(self, crop: np.ndarray) -> Prediction:
        """Regresses one uint8 crop ``[S, S, 3]`` (S = ``image_size``)."""
        crop = np.asarray(crop)
        if crop.shape != (self.image_size, self.image_size, 3) or crop.dtype != np.uint8:
            raise ValueError(f"the regressor takes uint8 [{self.image_size}, {self.image_size}, 3] crops, got "
                             f"{crop.dtype} {crop.shape}")
        parts = np.split(np.asarray(self._fn(crop), np.float32), self._splits)
        shape, expression, pose, cam, lmk = parts[:5]
        head = parts[5].reshape(-1, 2) if len(parts) > 5 else None
        return Prediction(shape, expression, pose, cam, lmk.reshape(-1, 2), head)

    def landmarks(self, p: Prediction) -> np.ndarray:
        """[68, 2] model landmarks (normalized crop coordinates) of ``p``'s parameters (e.g. after filtering)."""
        return np.asarray(self._lmk(self._landmark_face, p.shape, p.expression, p.pose, p.cam), np.float32)

    def warmup(self) -> None:
        """Compiles the inference functions (the first call otherwise pays for it)."""
        self.landmarks(self(np.zeros((self.image_size, self.image_size, 3), np.uint8)))
