"""Landmark-only multi-frame fitting: one identity per clip, any number of frames and views.

This is the per-clip half of model learning and, with the basis fixed, the test-time
reconstruction of a new clip with a learned model. A clip's parameters (:class:`ClipParams`) are one
identity for all its frames and views (the multi-frame / multi-view consistency), per-frame
expression and jaw shared by the views of a frame, and per-frame, per-view head rotation and
weak-perspective camera. The objective is the landmark L1 of ``core.losses`` through
``core.fit.evaluate_params`` plus L2 priors on the coefficients.

Only the landmarks enter the loss, so the fit runs through a *landmark sub-model*
(:func:`landmark_submodel`): the vertices of the triangles the embedding (static points and every
dynamic-contour row) lands on, a tenth of the demo head. Joints still come from the full model
(its folded regressor), so the sub-model's landmarks equal the full model's exactly.

Everything is written for one clip and vmapped over stacked clips; :func:`fit_clips` compiles once
per (clips, frames, views, landmarks, model size) shape.
"""

from __future__ import annotations

import dataclasses
import functools
import jax
import jax.numpy as jnp
import numpy as np
import optax

import flame_jax
from neuface_jax.common.settings import setting
from neuface_jax.core import fit as fit_lib
from neuface_jax.core import losses as losses_lib


# --------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class ClipFitConfig:
    """Adam on the clip parameters under the landmark loss and coefficient priors."""

    steps: int = setting(500, "Adam steps of the per-clip landmark fit.", flag="fit_steps")
    learning_rate: float = setting(2e-2, "Adam learning rate of the clip parameters (cosine decay to 10 %).",
                                   flag="fit_learning_rate")
    shape_prior: float = setting(2e-3, "Weight of the identity-coefficient prior (mean of squares).")
    expression_prior: float = setting(2e-4, "Weight of the expression-coefficient prior.")
    jaw_prior: float = setting(1e-3, "Weight of the jaw-rotation prior (radians squared).")


# --------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class LandmarkClip:
    """One clip's landmark targets (a pytree). T frames, W views, L landmarks.

    Attributes:
      landmarks: [T, W, L, 2] float32 targets in normalized crop coordinates ([-1, 1], y down).
      landmarks_mask: [T, W, L] float32 (0 = invisible, not detected, or padding).
      frame_mask: [T, W] float32 (0 = no detection, a missing view, or padding).
    """

    landmarks: jax.Array
    landmarks_mask: jax.Array
    frame_mask: jax.Array

    @property
    def num_frames(self) -> int:
        return int(self.frame_mask.shape[-2])

    @property
    def num_views(self) -> int:
        return int(self.frame_mask.shape[-1])


jax.tree_util.register_dataclass(
    LandmarkClip, data_fields=["landmarks", "landmarks_mask", "frame_mask"], meta_fields=[]
)


def pad_clip(clip: LandmarkClip, num_frames: int, num_views: int) -> LandmarkClip:
    """Pads frames and views with masked entries (host arrays)."""
    t, w = clip.num_frames, clip.num_views
    if t > num_frames or w > num_views:
        raise ValueError(f"cannot pad a clip of {t} frames x {w} views to {num_frames} x {num_views}")
    pad = ((0, num_frames - t), (0, num_views - w))
    return LandmarkClip(
        landmarks=np.pad(np.nan_to_num(np.asarray(clip.landmarks, np.float32)), pad + ((0, 0), (0, 0))),
        landmarks_mask=np.pad(np.asarray(clip.landmarks_mask, np.float32), pad + ((0, 0),)),
        frame_mask=np.pad(np.asarray(clip.frame_mask, np.float32), pad),
    )


def stack_clips(clips) -> LandmarkClip:
    """Clips padded to the longest and widest, stacked on a leading clip axis."""
    t = max(c.num_frames for c in clips)
    w = max(c.num_views for c in clips)
    padded = [pad_clip(c, t, w) for c in clips]
    return jax.tree.map(lambda *x: np.stack(x), *padded)


@dataclasses.dataclass(frozen=True)
class ClipParams:
    """One clip's parameters (a pytree).

    Attributes:
      shape: [S] identity coefficients (the clip's one identity).
      expression: [T, E] per frame, shared by the views.
      jaw: [T, 3] jaw axis-angle per frame, shared by the views.
      rotation: [T, W, 3] head (global) axis-angle per frame and view.
      cam: [T, W, 3] weak-perspective camera ``(s, tx, ty)`` per frame and view.
    """

    shape: jax.Array
    expression: jax.Array
    jaw: jax.Array
    rotation: jax.Array
    cam: jax.Array

    def full_pose(self) -> jax.Array:
        """[T, W, 15] FLAME pose (global, neck 0, jaw, eyes 0)."""
        jaw = jnp.broadcast_to(self.jaw[..., :, None, :], self.rotation.shape)
        zeros = jnp.zeros_like(self.rotation)
        return jnp.concatenate([self.rotation, zeros, jaw, zeros, zeros], axis=-1)


jax.tree_util.register_dataclass(
    ClipParams, data_fields=["shape", "expression", "jaw", "rotation", "cam"], meta_fields=[]
)


# --------------------------------------------------------------------------- the landmark sub-model
def landmark_submodel(model: flame_jax.FlameModel, embedding: flame_jax.LandmarkEmbedding):
    """The model restricted to the triangles the landmarks land on, with the embedding re-indexed.

    Returns ``(sub_model, sub_embedding, vertex_index)``: ``vertex_index`` [n] are the kept vertices
    of ``model``. Joint template and joint basis stay the full model's, so posed landmarks are
    identical to the full model's.
    """
    faces = np.asarray(model.faces)
    idx = [np.asarray(embedding.face_idx).ravel()]
    if embedding.dynamic_face_idx is not None:
        idx.append(np.asarray(embedding.dynamic_face_idx).ravel())
    used_faces = np.unique(np.concatenate(idx))
    verts = np.unique(faces[used_faces].ravel())
    vmap_ = np.full(model.num_vertices, -1, np.int64)
    vmap_[verts] = np.arange(len(verts))
    fmap = np.full(model.num_faces, -1, np.int64)
    fmap[used_faces] = np.arange(len(used_faces))
    n = len(verts)
    basis = np.asarray(model.basis).reshape(-1, model.num_vertices, 3)[:, verts].reshape(-1, n * 3)
    sub = dataclasses.replace(
        model,
        v_template=jnp.asarray(np.asarray(model.v_template)[verts]),
        basis=jnp.asarray(np.ascontiguousarray(basis)),
        lbs_weights=jnp.asarray(np.asarray(model.lbs_weights)[verts]),
        joint_regressor=jnp.asarray(np.asarray(model.joint_regressor)[:, verts]),
        faces=jnp.asarray(vmap_[faces[used_faces]].astype(np.int32)),
    )
    emb = dataclasses.replace(
        embedding,
        face_idx=jnp.asarray(fmap[np.asarray(embedding.face_idx)].astype(np.int32)),
        dynamic_face_idx=None if embedding.dynamic_face_idx is None
        else jnp.asarray(fmap[np.asarray(embedding.dynamic_face_idx)].astype(np.int32)),
    )
    return sub, emb, verts


def with_identity_components(model: flame_jax.FlameModel, components: jax.Array, joint_components: jax.Array):
    """``model`` with identity rows appended after its own (traceable: used inside the learning step).

    Args:
      components: [K, V*3] vertex offsets of the model's vertices (row-major (V, 3)).
      joint_components: [K, J*3] the joint regressor applied to the same offsets.
    """
    s = model.num_shape
    basis = jnp.concatenate([model.basis[:s], components.astype(model.basis.dtype), model.basis[s:]], axis=0)
    joint = jnp.concatenate([model.joint_basis[:s], joint_components.astype(model.joint_basis.dtype),
                             model.joint_basis[s:]], axis=0)
    return dataclasses.replace(model, basis=basis, joint_basis=joint, num_shape=s + int(components.shape[0]))


# --------------------------------------------------------------------------- initialization and loss
def init_params(face: fit_lib.FaceModel, clip: LandmarkClip) -> ClipParams:
    """Neutral face, zero rotation, and the camera that matches the landmarks' centre and spread.

    Written for one clip (traceable; vmap for several).
    """
    model, emb = face.flame, face.embedding
    t, w = clip.frame_mask.shape
    ref = flame_jax.landmarks(model, emb, model.v_template, jnp.zeros(15))[..., :2]  # [L, 2], y up
    m = clip.landmarks_mask * clip.frame_mask[..., None]
    den = jnp.maximum(jnp.sum(m, -1), 1.0)
    tgt = jnp.where(m[..., None] > 0, clip.landmarks, 0.0)
    mean_t = jnp.sum(tgt * m[..., None], -2) / den[..., None]  # [T, W, 2]
    mean_r = jnp.sum(ref * m[..., None], -2) / den[..., None]
    var_t = jnp.sum(jnp.sum((tgt - mean_t[..., None, :]) ** 2, -1) * m, -1) / den
    var_r = jnp.sum(jnp.sum((ref - mean_r[..., None, :]) ** 2, -1) * m, -1) / den
    s = jnp.where(var_r > 0, jnp.sqrt(var_t / jnp.maximum(var_r, 1e-12)), 8.0)
    s = jnp.where(s > 0, s, 8.0)
    tx = mean_t[..., 0] / s - mean_r[..., 0]
    ty = -mean_t[..., 1] / s - mean_r[..., 1]
    return ClipParams(
        shape=jnp.zeros(model.num_shape),
        expression=jnp.zeros((t, model.num_expression)),
        jaw=jnp.zeros((t, 3)),
        rotation=jnp.zeros((t, w, 3)),
        cam=jnp.stack([s, tx, ty], -1),
    )


def predict_landmarks(face: fit_lib.FaceModel, params: ClipParams) -> jax.Array:
    """[T, W, L, 2] projected landmarks of one clip (normalized crop coordinates)."""
    pose = params.full_pose()
    expression = jnp.broadcast_to(params.expression[:, None], pose.shape[:2] + params.expression.shape[-1:])
    return fit_lib.evaluate_params(face, params.shape, expression, pose, params.cam)[1]


def shape_prior_weights(num_shape: int, first_learned: int | None = None, learned_scale: float = 1.0) -> np.ndarray:
    """[num_shape] per-coefficient weights of the identity prior (``shape_prior · Σ w_i z_i²``).

    Without learned components, ``1 / num_shape`` each (the mean of squares). With components
    appended from ``first_learned`` on (each a unit-variance direction, like the base's), the base's
    keep ``1 / first_learned`` — appending components does not weaken the prior on the base's — and
    the learned ones get ``learned_scale / first_learned``: a stronger prior on the extra freedom
    keeps it from absorbing landmark noise on faces the base already represents.
    """
    if first_learned is None or first_learned >= num_shape:
        return np.full(num_shape, 1.0 / num_shape, np.float32)
    if first_learned < 1 or learned_scale < 0:
        raise ValueError(f"first_learned must be in [1, {num_shape}] and learned_scale >= 0, got {first_learned}, "
                         f"{learned_scale}")
    w = np.full(num_shape, 1.0 / first_learned, np.float32)
    w[first_learned:] *= float(learned_scale)
    return w


def clip_loss(face: fit_lib.FaceModel, params: ClipParams, clip: LandmarkClip, config: ClipFitConfig,
              shape_weights=None):
    """``(total, parts)`` of one clip: masked landmark L1 plus coefficient priors (``shape_weights``
    [S]: per-coefficient identity-prior weights, default the mean of squares)."""
    pred = predict_landmarks(face, params)
    mask = clip.landmarks_mask * clip.frame_mask[..., None]
    values, m = losses_lib.landmark_l1(pred, clip.landmarks, mask)
    landmark = losses_lib.masked_mean(values, m)
    fm = jnp.max(clip.frame_mask, axis=-1)[:, None]
    prior = (
        config.shape_prior * (jnp.mean(params.shape**2) if shape_weights is None
                              else jnp.sum(shape_weights * params.shape**2))
        + config.expression_prior
        * losses_lib.masked_mean(params.expression**2, jnp.broadcast_to(fm, params.expression.shape))
        + config.jaw_prior * losses_lib.masked_mean(params.jaw**2, jnp.broadcast_to(fm, params.jaw.shape))
    )
    return landmark + prior, {"landmark": landmark, "prior": prior}


def schedule(learning_rate: float, steps: int):
    """Cosine decay to 10 % over ``steps``."""
    return optax.cosine_decay_schedule(learning_rate, max(int(steps), 1), alpha=0.1)


# --------------------------------------------------------------------------- test-time fitting
@dataclasses.dataclass(frozen=True)
class ClipFit:
    """The result of :func:`fit_clips` for stacked clips (host arrays, leading clip axis N).

    Attributes:
      params: ``ClipParams`` with [N, ...] leaves.
      landmarks2d: [N, T, W, L, 2] fitted landmarks (normalized crop coordinates).
      landmark_error: [N] masked mean L1 landmark error per clip (normalized crop units).
    """

    params: ClipParams
    landmarks2d: np.ndarray
    landmark_error: np.ndarray


@functools.partial(jax.jit, static_argnames=("config",))
def fit_stacked(face: fit_lib.FaceModel, clips: LandmarkClip, config: ClipFitConfig, shape_weights=None):
    """Compiled fit of stacked clips [N, ...] through ``face`` (e.g. a landmark sub-model):
    ``(ClipParams [N, ...], landmarks2d [N, T, W, L, 2], landmark L1 [N])``; ``shape_weights``: see
    ``clip_loss``."""
    optimizer = optax.adam(schedule(config.learning_rate, config.steps))

    def one(clip):
        params = init_params(face, clip)
        state = optimizer.init(params)

        def body(carry, _):
            p, s = carry
            grads = jax.grad(lambda q: clip_loss(face, q, clip, config, shape_weights)[0])(p)
            updates, s = optimizer.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (params, _), _ = jax.lax.scan(body, (params, state), None, length=config.steps)
        pred = predict_landmarks(face, params)
        mask = clip.landmarks_mask * clip.frame_mask[..., None]
        values, m = losses_lib.landmark_l1(pred, clip.landmarks, mask)
        return params, pred, losses_lib.masked_mean(values, m)

    return jax.vmap(one)(clips)


def fit_clips(model: flame_jax.FlameModel, embedding: flame_jax.LandmarkEmbedding, clips,
              config: ClipFitConfig = ClipFitConfig(), *, shape_prior=None) -> ClipFit:
    """Fits clips with a fixed model: one identity per clip over all its frames and views.

    Args:
      model, embedding: any FLAME-format model (a learned one included) and its landmark embedding.
      clips: a ``LandmarkClip`` with a leading clip axis, or a sequence of ``LandmarkClip`` (padded
        and stacked here); any number of frames (one included) and views.
      config: optimization settings.
      shape_prior: [S] per-coefficient identity-prior weights (``shape_prior_weights``; for a learned
        model ``model_file.shape_prior_of``), default the mean of squares.
    """
    if shape_prior is not None and np.shape(shape_prior) != (model.num_shape,):
        raise ValueError(f"shape_prior must have the model's {model.num_shape} identity coefficients, "
                         f"got shape {np.shape(shape_prior)}")
    if not isinstance(clips, LandmarkClip):
        clips = stack_clips(list(clips))
    if np.ndim(clips.frame_mask) != 3:
        raise ValueError(f"clips must be stacked [N, T, W, ...], got frame_mask of shape {np.shape(clips.frame_mask)}")
    sub, emb, _ = landmark_submodel(model, embedding)
    stacked = jax.tree.map(jnp.asarray, clips)
    weights = None if shape_prior is None else jnp.asarray(shape_prior, jnp.float32)
    params, pred, err = jax.device_get(fit_stacked(fit_lib.FaceModel(sub, emb), stacked, config, weights))
    return ClipFit(params=params, landmarks2d=np.asarray(pred), landmark_error=np.asarray(err))


# --------------------------------------------------------------------------- identity meshes and errors
def posed_vertices(model: flame_jax.FlameModel, params: ClipParams) -> jax.Array:
    """[T, W, V, 3] the model's posed meshes of one clip's parameters (model frame; project them with
    ``params.cam``). Traceable."""
    pose = params.full_pose()
    expression = jnp.broadcast_to(jnp.asarray(params.expression)[:, None],
                                  pose.shape[:2] + jnp.shape(params.expression)[-1:])
    shape = jnp.broadcast_to(jnp.asarray(params.shape), pose.shape[:2] + jnp.shape(params.shape)[-1:])
    return flame_jax.forward(model, shape=shape, expression=expression, pose=pose).vertices


def clip_vertices(model: flame_jax.FlameModel, params: ClipParams) -> np.ndarray:
    """``posed_vertices`` on the host: [T, W, V, 3] the full model's posed meshes of one clip."""
    return np.asarray(posed_vertices(model, params))


def identity_vertices(model: flame_jax.FlameModel, shape) -> np.ndarray:
    """[..., V, 3] neutral meshes (zero expression and pose) of identity coefficients [..., S]."""
    out = flame_jax.forward(model, shape=jnp.asarray(shape))
    return np.asarray(out.vertices)


def identity_error_mm(pred, target, vertex_index=None) -> dict[str, np.ndarray]:
    """Per-mesh mean vertex distance in mm: as is (model frame) and after a similarity alignment.

    ``pred``, ``target``: [..., V, 3] metres; ``vertex_index``: the vertices to measure (and align
    on), default all.
    """
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    if vertex_index is not None:
        pred, target = pred[..., vertex_index, :], target[..., vertex_index, :]
    raw = np.linalg.norm(pred - target, axis=-1).mean(-1) * 1000.0
    aligned = np.asarray(flame_jax.rigid_align(pred, target, with_scale=True))
    sim = np.linalg.norm(aligned - target, axis=-1).mean(-1) * 1000.0
    return {"vertex_error_mm": raw, "vertex_error_similarity_mm": sim}


__all__ = [
    "ClipFit",
    "ClipFitConfig",
    "ClipParams",
    "LandmarkClip",
    "clip_loss",
    "clip_vertices",
    "fit_clips",
    "fit_stacked",
    "identity_error_mm",
    "identity_vertices",
    "init_params",
    "landmark_submodel",
    "pad_clip",
    "posed_vertices",
    "predict_landmarks",
    "shape_prior_weights",
    "stack_clips",
    "with_identity_components",
]
