"""Learning corrective identity components (and albedo components) of a face model over a corpus of clips.

What is learned: K vertex-offset components appended to the base model's identity space
(the base's own components are kept unchanged), jointly with every clip's parameters — one
identity per clip over all its frames and views (``fit.ClipParams``) — under the landmark loss;
optionally K' per-vertex albedo components from the clips' images (``albedo``: the photometric step).

How the components are kept well-posed:

* **smooth**: each component is a combination of the M lowest-frequency eigenvectors of the mesh's
  graph Laplacian (``laplacian_basis``), penalized by their eigenvalues (the Laplacian energy
  ``Σ λ_m |W_m|²``): landmarks constrain a few hundred vertices, and the smooth extension decides
  the rest of the mesh;
* **apart from the base identity** (and, with ``orthogonal_to=identity_expression``, from the
  expression blend shapes too): the offsets are projected onto the orthogonal complement of that
  span, so no learned component duplicates a base component. Identity and expression are told apart
  by the clip's one identity over frames with changing expressions; projecting out the expression
  span as well removes real identity variation (a neutral face that resembles a base expression);
* **small**: an L2 penalty on the coefficients of the components and a prior on each clip's
  coefficients.

Procedure: (1) every clip is fitted with the base model alone (``fit``); (2a) every clip gets its
own smooth offset (same basis, projection and regularizers), and the components start as the
principal directions of these offsets; (2b) Adam on all clips' parameters and the shared components
jointly, the whole corpus per step (one step = one epoch); (3) the learned offsets of the training
clips, ``z_c · D``, are reduced by an SVD to K orthogonal components ordered by variance and scaled
so that a unit coefficient is one standard deviation over the corpus (the PCA convention of FLAME's
identity space); (4) with albedo components, each clip's per-vertex albedo at its fitted meshes and
their PCA (``albedo``). The result is an ordinary model.
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
from neuface_jax import photometric
from neuface_jax.core import fit as fit_lib
from neuface_jax.model_learning import albedo as malbedo
from neuface_jax.model_learning import fit as mfit
from neuface_jax.model_learning import model_file
from neuface_jax.model_learning.corpus import Corpus

logger = logging.getLogger(__name__)


ORTHOGONAL_TO = ("identity", "identity_expression", "none")
#: Joint-step learning rates after the per-clip start, as a fraction of the configured ones.
REFINE_RATE_FACTOR = 0.1


@dataclasses.dataclass(frozen=True)
class LearnConfig:
    """Settings of a model-learning run."""

    shape_components: int = setting(8, "Learned identity (vertex offset) components.")
    albedo_components: int = setting(
        0, "Learned per-vertex albedo components (the photometric step: needs the clips' face crops, "
        "corpus image_size > 0, and the 68-point landmark set); 0 = shape only.")
    albedo_ridge: float = setting(0.5, "Ridge of each clip's per-vertex albedo solve (toward the prior albedo).")
    basis_size: int = setting(128, "Mesh-Laplacian eigenvectors the learned components are made of (smoothness).")
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
    orthogonal_to: str = setting(
        "identity", "Span the learned components are kept orthogonal to: identity = the base's identity blend "
        "shapes (one identity per clip over its frames separates identity from expression); "
        "identity_expression = also the expression blend shapes (a face whose neutral shape resembles an "
        "expression of the base then cannot be represented); none = free (components may overlap the base's).",
        choices=ORTHOGONAL_TO)
    init: str = setting(
        "per_clip", "How the joint steps start: per_clip = every clip first gets its own smooth offset (same "
        "basis and regularizers), the components start as their principal directions and the joint steps refine "
        "them at a tenth of the learning rates; random = small random components, zero coefficients.", choices=("per_clip", "random"))
    init_steps: int = setting(300, "Adam steps of the per-clip offsets (init per_clip).")
    seed: int = setting(0, "Seed of the components' initialization (init random).")

    def __post_init__(self):
        if int(self.shape_components) < 1:
            raise ValueError(f"shape_components must be >= 1, got {self.shape_components}")
        if int(self.albedo_components) < 0:
            raise ValueError(f"albedo_components must be >= 0, got {self.albedo_components}")
        if self.orthogonal_to not in ORTHOGONAL_TO:
            raise ValueError(f"orthogonal_to must be one of {ORTHOGONAL_TO}, got {self.orthogonal_to!r}")
        if self.shared_offset not in ("drop", "apply"):
            raise ValueError(f"shared_offset must be drop or apply, got {self.shared_offset!r}")
        if self.init not in ("per_clip", "random"):
            raise ValueError(f"init must be per_clip or random, got {self.init!r}")
        if int(self.basis_size) < 2 or int(self.steps) < 0 or int(self.init_steps) < 0:
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


def complement_projector(model: flame_jax.FlameModel, *, expression: bool = True) -> np.ndarray:
    """[V*3, r] orthonormal basis of the span of the model's identity (and, by default, expression)
    blend shapes."""
    rows = np.asarray(model.basis[: model.num_shape + (model.num_expression if expression else 0)], np.float64)
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
    if k > 1:
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


def _offset_loss(trainable, consts: _Consts, clips: mfit.LandmarkClip, fit_config, config: LearnConfig):
    """Every clip with its own offset ``w_c`` [M, 3, 1] (a clip-specific template correction)."""
    def one(p, c, w):
        face, _ = _face_with(consts, w)
        total, parts = mfit.clip_loss(face, p, c, fit_config)
        return total + _regularizer(consts, w, config), parts["landmark"]

    per_clip, landmark = jax.vmap(one)(trainable["clips"], clips, trainable["w"])
    return jnp.mean(per_clip), {"landmark": jnp.mean(landmark)}


#: The two stages: their loss (per-clip offsets, or shared components) and step count.
_STAGES = {"per_clip": (_offset_loss, "init_steps"), "joint": (_joint_loss, "steps")}


def _optimizer(config: LearnConfig, stage: str):
    n = max(int(getattr(config, _STAGES[stage][1])), 1)
    # After the per-clip start the joint problem starts near a solution: Adam's first steps (about
    # the learning rate per coordinate, whatever the gradient) would undo it at the full rates.
    f = REFINE_RATE_FACTOR if stage == "joint" and config.init == "per_clip" else 1.0
    return optax.multi_transform(
        {"clips": optax.adam(mfit.schedule(config.learning_rate * f, n)),
         "w": optax.adam(mfit.schedule(config.basis_learning_rate * f, n))},
        {"clips": "clips", "w": "w"},
    )


@functools.partial(jax.jit, static_argnames=("fit_config", "config", "stage"), donate_argnums=(0, 1))
def _step(trainable, opt_state, consts, clips, fit_config, config, stage):
    """One Adam step of a stage over the whole corpus."""
    loss_fn = _STAGES[stage][0]
    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, consts, clips, fit_config, config)
    updates, opt_state = _optimizer(config, stage).update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, loss, parts


def _init_from_clip_offsets(consts: _Consts, w_clips: np.ndarray, k: int):
    """Principal directions of per-clip offsets ``w_clips`` [N, M, 3] (compared as vertex offsets):
    ``(w0 [M, 3, k + 1]`` — the mean offset, then k components of one standard deviation —
    ``, coordinates [N, k])``."""
    n = w_clips.shape[0]
    offsets = np.asarray(jax.vmap(lambda w: components_from_coefficients(consts, w[..., None])[0])(
        jnp.asarray(w_clips)), np.float64)  # [N, V*3]
    flat = np.asarray(w_clips, np.float64).reshape(n, -1)
    mean_o, mean_w = offsets.mean(0), flat.mean(0)
    u, sig, _ = np.linalg.svd(offsets - mean_o, full_matrices=False)
    count = min(k, len(sig))
    sig = np.maximum(sig[:count], 1e-12)
    # The map w -> offset is linear, so a principal direction is the same mix of the clips' w.
    dirs = (u[:, :count] / sig).T @ (flat - mean_w) * (sig / np.sqrt(n))[:, None]  # [count, M*3]
    w0 = np.zeros(w_clips.shape[1:] + (k + 1,), np.float32)
    w0[..., 0] = mean_w.reshape(w_clips.shape[1:])
    w0[..., 1:count + 1] = np.moveaxis(dirs.reshape((count,) + w_clips.shape[1:]), 0, -1)
    coords = np.zeros((n, k), np.float32)
    coords[:, :count] = u[:, :count] * np.sqrt(n)
    return w0, coords


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
      albedo: the learned per-vertex albedo model (mean and components), None without albedo learning.
    """

    model: flame_jax.FlameModel
    components: np.ndarray
    clip_shapes: np.ndarray
    record: dict[str, Any]
    albedo: photometric.AlbedoModel | None = None


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
        asked for with a corpus without images (naming the clip) or without the 68-point set.
    """
    if len(corpus) == 0:
        raise ValueError("an empty corpus")
    if int(config.albedo_components) > 0:
        if corpus.embedding.num_landmarks != 68:
            raise ValueError("albedo learning needs the 68-point landmark set (its face region comes from the "
                             f"68-point embedding), got {corpus.landmark_set}")
        for c in corpus.clips:
            if c.images is None:
                raise ValueError(f"{c.clip_id}: no images in the corpus (albedo_components > 0 needs the clips' "
                                 "face crops: load the corpus with image_size > 0)")
    corpus.embedding.check_faces(base.num_faces, "corpus landmark embedding")
    progress = progress or log_lib.quiet
    k = int(config.shape_components)
    t_start = time.perf_counter()

    phi, eig = laplacian_basis(base, int(config.basis_size))
    span = complement_projector(base, expression=config.orthogonal_to == "identity_expression")
    if config.orthogonal_to == "none":
        span = np.zeros((span.shape[0], 0), np.float32)
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

    # (2a) Start: every clip with its own smooth offset, the components their principal directions.
    t0 = time.perf_counter()
    history = {"loss": [], "landmark": [], "regularizer": [], "init_landmark": []}
    if config.init == "per_clip":
        n = len(corpus)
        trainable = {"clips": base_params, "w": jnp.zeros((n, phi.shape[1], 3, 1), jnp.float32)}
        opt_state = _optimizer(config, "per_clip").init(trainable)
        with progress("per-clip offsets", int(config.init_steps)) as bar:
            for step in range(int(config.init_steps)):
                trainable, opt_state, loss, parts = _step(trainable, opt_state, consts, clips, fit_config, config,
                                                          "per_clip")
                if step % 10 == 0 or step == config.init_steps - 1:
                    history["init_landmark"].append(float(parts["landmark"]))
                bar.update()
        w0, coords = _init_from_clip_offsets(consts, np.asarray(trainable["w"])[..., 0], k)
        start = trainable["clips"]
        start = dataclasses.replace(start, shape=jnp.concatenate([start.shape, jnp.asarray(coords)], -1))
    else:
        rng = np.random.default_rng(int(config.seed))
        w0 = rng.normal(size=(phi.shape[1], 3, k + 1)).astype(np.float32) * 0.1
        w0[..., 0] = 0.0
        start = dataclasses.replace(base_params, shape=jnp.concatenate(
            [base_params.shape, jnp.zeros(base_params.shape.shape[:-1] + (k,), base_params.shape.dtype)], -1))
    t_init = time.perf_counter() - t0

    # (2b) Joint: clip parameters and the shared components.
    trainable = {"clips": start, "w": jnp.asarray(w0)}
    opt_state = _optimizer(config, "joint").init(trainable)
    t0 = time.perf_counter()
    step_times = []
    with progress("model learning", int(config.steps)) as bar:
        for step in range(int(config.steps)):
            ts = time.perf_counter()
            trainable, opt_state, loss, parts = _step(trainable, opt_state, consts, clips, fit_config, config, "joint")
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

    # (4) Albedo: each clip's per-vertex albedo at its jointly fitted meshes, then their PCA.
    albedo_model, albedo_record = None, {"albedo_components": 0}
    if int(config.albedo_components) > 0:
        t0 = time.perf_counter()
        geometry = model_file.append_identity_components(base, comps, "joint fit",
                                                         template_offset=shared.reshape(base.num_vertices, 3))
        region = photometric.face_region(base, corpus.embedding)
        params = jax.device_get(trainable["clips"])
        albedos, coverages = [], []
        with progress("albedo of the corpus clips", len(corpus)) as bar:
            for i, c in enumerate(corpus.clips):
                p = jax.tree.map(lambda x: x[i], params)
                p = dataclasses.replace(p, shape=shapes[i])
                # Every clip padded to the corpus's frames x views (masked): one compilation.
                t, w = c.data.frame_mask.shape
                images = np.zeros(clips.frame_mask.shape[1:] + c.images.shape[-3:], np.float32)
                images[:t, :w] = c.images
                a, cov = malbedo.clip_vertex_albedo(base, mfit.clip_vertices(geometry, p), p.cam, images,
                                                    clips.frame_mask[i], region, ridge=config.albedo_ridge)
                albedos.append(a)
                coverages.append(cov)
                bar.update()
        albedo_model, seen = malbedo.albedo_pca(albedos, coverages, malbedo.prior_albedo(base),
                                                int(config.albedo_components))
        k_a = albedo_model.num_components
        albedo_record = {
            "albedo_components": k_a,
            "albedo_component_rms": [float(x) for x in
                                     np.sqrt(np.mean(np.sum(np.asarray(albedo_model.basis) ** 2, -1)[:, seen], -1))],
            "albedo_vertices_seen": int(seen.sum()), "albedo_seconds": time.perf_counter() - t0,
            "albedo_image_size": int(corpus.clips[0].images.shape[-2]),
        }
        logger.info("learned %d albedo components over %d seen vertices (%.1fs)", k_a, int(seen.sum()),
                    albedo_record["albedo_seconds"])

    rms_mm = std / np.sqrt(base.num_vertices) * 1000.0
    shared_rms_mm = float(np.linalg.norm(shared) / np.sqrt(base.num_vertices) * 1000.0)
    # The first step compiles; the rest is the time of an epoch (one step over the whole corpus).
    per_step = float(np.sum(step_times[1:]) / (len(step_times) - 1)) if len(step_times) > 1 else float("nan")
    record = {
        "base": {"name": base.name, "num_shape": base.num_shape, "num_expression": base.num_expression,
                 "num_vertices": base.num_vertices},
        "learned": {"shape_components": count, "first_component": base.num_shape,
                    "component_rms_mm": [float(x) for x in rms_mm], **albedo_record,
                    "shared_offset": config.shared_offset, "shared_offset_rms_mm": shared_rms_mm,
                    "orthogonal_to": config.orthogonal_to},
        "corpus": {"clips": len(corpus), "clip_ids": [c.clip_id for c in corpus.clips],
                   "landmark_set": corpus.landmark_set, "contour": corpus.contour,
                   "frames": int(clips.frame_mask.shape[1]), "views": int(clips.frame_mask.shape[2])},
        "config": dataclasses.asdict(config),
        "fit_config": dataclasses.asdict(fit_config),
        "landmark_l1": {"base_fit": float(base_err.mean()), "joint_fit": float(joint_err.mean())},
        "history": history,
        "seconds": {"setup": t_setup, "base_fit": t_base, "init": t_init, "joint": t_joint, "per_epoch": per_step,
                    "total": time.perf_counter() - t_start},
        "device": jax.devices()[0].platform,
    }
    logger.info("learned %d components (rms %s mm); landmark L1 %.5f -> %.5f; %.3fs per epoch", count,
                ", ".join(f"{x:.2f}" for x in rms_mm), base_err.mean(), joint_err.mean(), per_step)
    return LearnResult(model=model, components=comps.astype(np.float32), clip_shapes=shapes.astype(np.float32),
                       record=record, albedo=albedo_model)


__all__ = ["LearnConfig", "LearnResult", "complement_projector", "components_from_coefficients",
           "laplacian_basis", "learn_model"]
