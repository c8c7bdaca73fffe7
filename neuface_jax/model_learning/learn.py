"""Learning corrective identity components of a face model over a corpus of clips.

What is learned: K vertex-offset components appended to the base model's identity space
(the base's own components are kept unchanged), jointly with every clip's parameters — one
identity per clip over all its frames and views (``fit.ClipParams``) — under the landmark loss.

How the components are kept well-posed:

* **smooth**: each component is a combination of the M lowest-frequency eigenvectors of the mesh's
  graph Laplacian (``laplacian_basis``), penalized by their eigenvalues (the Laplacian energy
  ``Σ λ_m |W_m|²``): landmarks constrain a few hundred vertices, and the smooth extension decides
  the rest of the mesh;
* **apart from expression and from the base identity**: the offsets are projected onto the
  orthogonal complement of the span of the base model's identity *and* expression blend shapes, so
  no learned component can explain an expression (or duplicate a base component);
* **small**: an L2 penalty on the coefficients of the components and a prior on each clip's
  coefficients.

Procedure: (1) every clip is fitted with the base model alone (``fit``); (2) Adam on all clips'
parameters and the shared components jointly, the whole corpus per step (one step = one epoch);
(3) the learned offsets of the training clips, ``z_c · D``, are reduced by an SVD to K orthogonal
components ordered by variance and scaled so that a unit coefficient is one standard deviation
over the corpus (the PCA convention of FLAME's identity space). The result is an ordinary model.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse
import scipy.sparse.linalg

import flame_jax
from neuface_jax.common import log as log_lib
from neuface_jax.common.settings import setting
from neuface_jax.core import fit as fit_lib
from neuface_jax.model_learning import fit as mfit
from neuface_jax.model_learning import model_file
from neuface_jax.model_learning.corpus import Corpus

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LearnConfig:
    """Settings of a model-learning run."""

    shape_components: int = setting(8, "Learned identity (vertex offset) components.")
    albedo_components: int = setting(
        0, "Learned per-vertex albedo components: not implemented yet (needs the clips' images and the "
        "photometric term); must be 0.")
    basis_size: int = setting(32, "Mesh-Laplacian eigenvectors the learned components are made of (smoothness).")
    steps: int = setting(400, "Joint Adam steps (epochs: each step sees the whole corpus).", flag="learn_steps")
    learning_rate: float = setting(2e-2, "Adam learning rate of the clip parameters in the joint steps.",
                                   flag="learn_learning_rate")
    basis_learning_rate: float = setting(3e-2, "Adam learning rate of the component coefficients (mm units).")
    smoothness: float = setting(1e-2, "Weight of the components' Laplacian energy.")
    norm: float = setting(1e-6, "Weight of the components' squared norm (mm).")
    shared_offset: str = setting(
        "drop", "The offset every clip shares (a population mean unlike the base template, or a systematic "
        "landmark/camera-model bias) is learned apart from the components: drop = not written (the base "
        "template is kept), apply = added to the template.", choices=("drop", "apply"))
    seed: int = setting(0, "Seed of the components' initialization.")

    def __post_init__(self):
        if int(self.shape_components) < 1:
            raise ValueError(f"shape_components must be >= 1, got {self.shape_components}")
        if int(self.albedo_components) < 0:
            raise ValueError(f"albedo_components must be >= 0, got {self.albedo_components}")
        if self.shared_offset not in ("drop", "apply"):
            raise ValueError(f"shared_offset must be drop or apply, got {self.shared_offset!r}")
        if int(self.basis_size) < 2 or int(self.steps) < 0:
            raise ValueError(f"basis_size must be >= 2 and steps >= 0, got {self.basis_size}, {self.steps}")


# --------------------------------------------------------------------------- the smooth basis
def laplacian_basis(model: flame_jax.FlameModel, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(phi [V, size], eigenvalues [size])``: the lowest-frequency eigenvectors of the mesh's graph
    Laplacian (orthonormal columns), ascending eigenvalues.

    The uniform (combinatorial) Laplacian ``L = D − A`` of the triangle edges; a shift-invert
    Lanczos solve, so a few seconds for a FLAME-size mesh.
    """
    v = model.num_vertices
    if not 2 <= size < v - 1:
        raise ValueError(f"basis_size={size} must be in [2, {v - 2}] for a mesh of {v} vertices")
    f = np.asarray(model.faces, np.int64)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    a = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(v, v))
    a = (a + a.T).tocsr()
    lap = scipy.sparse.diags(np.asarray(a.sum(1)).ravel()) - a
    vals, vecs = scipy.sparse.linalg.eigsh(lap.tocsc(), k=size, sigma=-1e-3, which="LM",
                                           v0=np.ones(v) / np.sqrt(v))
    order = np.argsort(vals)
    return vecs[:, order].astype(np.float32), np.maximum(vals[order], 0.0).astype(np.float32)


def complement_projector(model: flame_jax.FlameModel) -> np.ndarray:
    """[V*3, r] orthonormal basis of the span of the model's identity and expression blend shapes."""
    rows = np.asarray(model.basis[: model.num_shape + model.num_expression], np.float64)
    q, r = np.linalg.qr(rows.T)
    keep = np.abs(np.diag(r)) > 1e-9 * max(np.abs(np.diag(r)).max(), 1e-30)
    return q[:, keep].astype(np.float32)


# --------------------------------------------------------------------------- the joint problem
@dataclasses.dataclass(frozen=True)
class _Consts:
    """What the joint step needs besides the trainable values (a pytree)."""

    phi: jax.Array  # [V, M]
    eigenvalues: jax.Array  # [M]
    span: jax.Array  # [V*3, r]
    joint_regressor: jax.Array  # [J, V]
    vertex_index: jax.Array  # [n] landmark sub-model vertices
    face: fit_lib.FaceModel  # the base landmark sub-model
    scale: jax.Array  # metres per unit coefficient


jax.tree_util.register_dataclass(
    _Consts, data_fields=["phi", "eigenvalues", "span", "joint_regressor", "vertex_index", "face", "scale"],
    meta_fields=[],
)


def components_from_coefficients(consts: _Consts, w: jax.Array) -> jax.Array:
    """[K, V*3] learned offsets: ``phi @ W`` scaled, minus their part in the base identity/expression span."""
    d = jnp.einsum("vm,mck->kvc", consts.phi, w) * consts.scale
    flat = d.reshape(d.shape[0], -1)
    return flat - (flat @ consts.span) @ consts.span.T


def _face_with(consts: _Consts, w):
    """The landmark sub-model with the learned offsets: ``w[..., 0]`` is the offset shared by every
    clip (added to the template), ``w[..., 1:]`` the identity components."""
    d = components_from_coefficients(consts, w)
    k = d.shape[0]
    d3 = d.reshape(k, -1, 3)
    sub = d3[:, consts.vertex_index]
    joints = jnp.einsum("jv,kvc->kjc", consts.joint_regressor, d3)
    flame = consts.face.flame
    flame = dataclasses.replace(flame, v_template=flame.v_template + sub[0],
                                joint_template=flame.joint_template + joints[0])
    flame = mfit.with_identity_components(flame, sub[1:].reshape(k - 1, -1), joints[1:].reshape(k - 1, -1))
    return fit_lib.FaceModel(flame, consts.face.embedding), d


def _regularizer(consts: _Consts, w, config: LearnConfig):
    energy = jnp.sum(consts.eigenvalues[:, None, None] * w**2) / w.shape[-1]
    return config.smoothness * energy + config.norm * jnp.sum(w**2) / w.shape[-1]


def _joint_loss(trainable, consts: _Consts, clips: mfit.LandmarkClip, fit_config, config: LearnConfig):
    face, _ = _face_with(consts, trainable["w"])
    per_clip, parts = jax.vmap(lambda p, c: mfit.clip_loss(face, p, c, fit_config))(trainable["clips"], clips)
    reg = _regularizer(consts, trainable["w"], config)
    return jnp.mean(per_clip) + reg, {"landmark": jnp.mean(parts["landmark"]), "regularizer": reg}


@functools.partial(jax.jit, static_argnames=("fit_config", "config"), donate_argnums=(0, 1))
def _joint_step(trainable, opt_state, consts, clips, fit_config, config):
    optimizer = _optimizer(config)
    (loss, parts), grads = jax.value_and_grad(_joint_loss, has_aux=True)(trainable, consts, clips, fit_config, config)
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss, parts


def _optimizer(config: LearnConfig):
    n = max(int(config.steps), 1)
    return optax.multi_transform(
        {"clips": optax.adam(mfit.schedule(config.learning_rate, n)),
         "w": optax.adam(mfit.schedule(config.basis_learning_rate, n))},
        {"clips": "clips", "w": "w"},
    )


@functools.partial(jax.jit, static_argnames=("fit_config",))
def _per_clip_errors(face, params, clips, fit_config):
    def one(p, c):
        return mfit.clip_loss(face, p, c, fit_config)[1]["landmark"]

    return jax.vmap(one)(params, clips)


# --------------------------------------------------------------------------- driver
@dataclasses.dataclass(frozen=True)
class LearnResult:
    """A learning run's outcome.

    Attributes:
      model: the learned model (base identity components, then the learned ones).
      components: [K, V, 3] the learned components (metres per unit coefficient).
      clip_shapes: [N, S+K] each training clip's identity in the learned model.
      record: the learning record stored in the model file (settings, losses, timings).
    """

    model: flame_jax.FlameModel
    components: np.ndarray
    clip_shapes: np.ndarray
    record: dict[str, Any]


def learn_model(
    base: flame_jax.FlameModel,
    corpus: Corpus,
    config: LearnConfig = LearnConfig(),
    fit_config: mfit.ClipFitConfig = mfit.ClipFitConfig(),
    *,
    name: str | None = None,
    progress: log_lib.ProgressFactory | None = None,
) -> LearnResult:
    """Learns ``config.shape_components`` corrective identity components of ``base`` over ``corpus``.

    Raises:
      ValueError: an empty corpus, an embedding that does not fit the model, or albedo components
        asked for (not implemented).
    """
    if int(config.albedo_components) > 0:
        raise ValueError("albedo_components > 0 is not implemented: the corpus holds landmarks only (no images) "
                         "and the photometric albedo step is not integrated; learn shape components only "
                         "(albedo_components=0)")
    if len(corpus) == 0:
        raise ValueError("an empty corpus")
    corpus.embedding.check_faces(base.num_faces, "corpus landmark embedding")
    progress = progress or log_lib.quiet
    k = int(config.shape_components)
    t_start = time.perf_counter()

    phi, eig = laplacian_basis(base, int(config.basis_size))
    span = complement_projector(base)
    sub, emb, vidx = mfit.landmark_submodel(base, corpus.embedding)
    consts = _Consts(
        phi=jnp.asarray(phi), eigenvalues=jnp.asarray(eig), span=jnp.asarray(span),
        joint_regressor=jnp.asarray(base.joint_regressor), vertex_index=jnp.asarray(vidx, jnp.int32),
        face=fit_lib.FaceModel(sub, emb), scale=jnp.asarray(1e-3 * np.sqrt(base.num_vertices), jnp.float32),
    )
    clips = jax.tree.map(jnp.asarray, mfit.stack_clips([c.data for c in corpus.clips]))
    t_setup = time.perf_counter() - t_start

    # (1) Every clip with the base model alone.
    t0 = time.perf_counter()
    base_params = jax.block_until_ready(mfit.fit_stacked(consts.face, clips, fit_config)[0])
    base_err = np.asarray(_per_clip_errors(consts.face, base_params, clips, fit_config))
    t_base = time.perf_counter() - t0
    logger.info("base fit of %d clips: landmark L1 %.5f (%.1fs)", len(corpus), base_err.mean(), t_base)

    # (2) Joint: clip parameters and the shared components.
    rng = np.random.default_rng(int(config.seed))
    w0 = rng.normal(size=(phi.shape[1], 3, k + 1)).astype(np.float32) * 0.1
    w0[..., 0] = 0.0
    pad = lambda s: jnp.concatenate([s, jnp.zeros(s.shape[:-1] + (k,), s.dtype)], -1)  # noqa: E731
    trainable = {"clips": dataclasses.replace(base_params, shape=pad(base_params.shape)), "w": jnp.asarray(w0)}
    opt_state = _optimizer(config).init(trainable)
    history = {"loss": [], "landmark": [], "regularizer": []}
    t0 = time.perf_counter()
    step_times = []
    with progress("model learning", int(config.steps)) as bar:
        for step in range(int(config.steps)):
            ts = time.perf_counter()
            trainable, opt_state, loss, parts = _joint_step(trainable, opt_state, consts, clips, fit_config, config)
            jax.block_until_ready(loss)
            if step % 10 == 0 or step == config.steps - 1:
                loss = float(loss)
                history["loss"].append(loss)
                history["landmark"].append(float(parts["landmark"]))
                history["regularizer"].append(float(parts["regularizer"]))
                bar.postfix(f"landmark {float(parts['landmark']):.5f}")
            step_times.append(time.perf_counter() - ts)
            bar.update()
    jax.block_until_ready(trainable)
    t_joint = time.perf_counter() - t0
    face_learned, d = _face_with(consts, trainable["w"])
    joint_err = np.asarray(_per_clip_errors(face_learned, trainable["clips"], clips, fit_config))

    # (3) Orthogonal components ordered by variance over the corpus (a PCA of the clips' offsets).
    d = np.asarray(d, np.float64)
    z = np.asarray(trainable["clips"].shape, np.float64)[:, base.num_shape:]
    offsets = z @ d[1:]  # [N, V*3]
    mean = offsets.mean(0)
    shared = d[0] + mean  # what every clip has in common
    _, sig, vt = np.linalg.svd(offsets - mean, full_matrices=False)
    n = offsets.shape[0]
    count = min(k, len(sig))
    std = np.maximum(sig[:count] / np.sqrt(n), 1e-12)
    comps = (vt[:count] * std[:, None]).reshape(count, base.num_vertices, 3)
    coords = (offsets - mean) @ vt[:count].T / std
    shapes = np.concatenate([np.asarray(trainable["clips"].shape)[:, : base.num_shape], coords], -1)
    label = name or f"{base.name} + {count} learned identity components"
    template_offset = shared.reshape(base.num_vertices, 3) if config.shared_offset == "apply" else None
    model = model_file.append_identity_components(base, comps, label, template_offset=template_offset)

    rms_mm = std / np.sqrt(base.num_vertices) * 1000.0
    shared_rms_mm = float(np.linalg.norm(shared) / np.sqrt(base.num_vertices) * 1000.0)
    # The first step compiles; the rest is the time of an epoch (one step over the whole corpus).
    per_step = float(np.sum(step_times[1:]) / (len(step_times) - 1)) if len(step_times) > 1 else float("nan")
    record = {
        "base": {"name": base.name, "num_shape": base.num_shape, "num_expression": base.num_expression,
                 "num_vertices": base.num_vertices},
        "learned": {"shape_components": count, "first_component": base.num_shape,
                    "component_rms_mm": [float(x) for x in rms_mm], "albedo_components": 0,
                    "shared_offset": config.shared_offset, "shared_offset_rms_mm": shared_rms_mm,
                    "orthogonal_to": "base identity and expression blend shapes"},
        "corpus": {"clips": len(corpus), "clip_ids": [c.clip_id for c in corpus.clips],
                   "landmark_set": corpus.landmark_set, "contour": corpus.contour,
                   "frames": int(clips.frame_mask.shape[1]), "views": int(clips.frame_mask.shape[2])},
        "config": dataclasses.asdict(config),
        "fit_config": dataclasses.asdict(fit_config),
        "landmark_l1": {"base_fit": float(base_err.mean()), "joint_fit": float(joint_err.mean())},
        "history": history,
        "seconds": {"setup": t_setup, "base_fit": t_base, "joint": t_joint, "per_epoch": per_step,
                    "total": time.perf_counter() - t_start},
        "device": jax.devices()[0].platform,
    }
    logger.info("learned %d components (rms %s mm); landmark L1 %.5f -> %.5f; %.3fs per epoch", count,
                ", ".join(f"{x:.2f}" for x in rms_mm), base_err.mean(), joint_err.mean(), per_step)
    return LearnResult(model=model, components=comps.astype(np.float32), clip_shapes=shapes.astype(np.float32),
                       record=record)


__all__ = ["LearnConfig", "LearnResult", "complement_projector", "components_from_coefficients",
           "laplacian_basis", "learn_model"]
