"""What a run resolves once and every clip shares: face model, encoder, learning rate, optimizer, landmarker.

**Encoder.** NeuFace starts from an encoder checkpoint (``SetupConfig.encoder=PATH``), or, on the
demo head by default, from the packaged pretrained small encoder (``packaged_checkpoint()``,
trained on renders of the demo head); or, with ``encoder="random"``, a FLAME model, or an
``encoder_config`` given, from a randomly initialized small CPU encoder (``default_encoder_config``:
all of the model's shape/expression components). On real clips the pretrained start mostly fixes
the random start's under-rotation of turned heads, although the encoder itself does not transfer
to real faces: it is a better-conditioned start, not a pose prior (README: encoder comparison).

**Learning rate.** ``default_learning_rate`` is the one table of default rates by starting encoder,
used by ``annotate``, the dataset runner and the synthetic demo's random start.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from typing import Any

import flame_jax
from neuface_jax.annotation.config import RANDOM_ENCODER, SetupConfig
from neuface_jax.annotation.face import FaceSetup, resolve_face_model
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.core import losses as losses_lib
from neuface_jax.core import refine as refine_lib
from neuface_jax.media import detect as detect_lib
from neuface_jax import photometric  # registers the "photometric" / "silhouette" loss terms
from neuface_jax.priors.starting import (  # re-exported: the starting-encoder choices live in priors
    PACKAGED_CHECKPOINT_NAME,
    PRETRAINED_LR,
    PRETRAINED_SMALL_LR,
    RANDOM_INIT_LR,
    check_fits,
    default_encoder_config,
    default_learning_rate,
    load_checkpoint,
    packaged_checkpoint,
)

__all__ = [
    "AnnotateSetup",
    "PRETRAINED_LR",
    "PRETRAINED_SMALL_LR",
    "RANDOM_INIT_LR",
    "default_encoder_config",
    "default_learning_rate",
    "load_checkpoint",
    "make_setup",
    "packaged_checkpoint",
    "refine_result",
]

logger = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class AnnotateSetup:
    """What a run resolves once and every clip shares: model, embedding, encoder, optimizer, landmarker.

    Attributes:
      config: the ``SetupConfig`` it was made from.
      face_setup: the model / embedding / landmark-set choice (``resolve_face_model``).
      face: the ``fit.FaceModel`` the fit runs through.
      encoder: the initial ``Encoder`` (None = a fresh random one per clip from ``fit_config.seed``).
      encoder_config: its ``EncoderConfig``.
      encoder_label: how the encoder was chosen, for ``metrics.json``.
      fit_config: the ``fit.FitConfig``.
      optimizer: the ``fit.NeuFace`` optimizer (equal settings share compiled steps across clips).
      model_path: the MediaPipe model (None when it is not needed: precomputed landmarks only).
      options: MediaPipe landmarker options.
      notes: run-level notes copied into every clip's ``metrics.json``.
    """

    config: SetupConfig
    face_setup: FaceSetup
    face: Any
    encoder: Any
    encoder_config: Any
    encoder_label: str
    fit_config: Any
    optimizer: Any
    model_path: pathlib.Path | None
    options: detect_lib.LandmarkerOptions
    notes: tuple[str, ...]


def _face_notes(face_setup: FaceSetup) -> list[str]:
    notes = []
    if face_setup.is_demo:
        msg = "no --flame_model: using the demo head (a procedural stand-in for FLAME, not FLAME)"
        logger.info("%s", msg)
        notes.append(msg)
    if face_setup.landmark_set == "ibug68":
        static = " (MediaPipe's jaw points are fixed on the face: frontal contour row for every frame)"
        notes.append(f"contour: {face_setup.contour}" + (static if face_setup.contour == "static" else ""))
    return notes


def _start_encoder(config: SetupConfig, face_setup: FaceSetup, encoder, encoder_config, notes: list[str]):
    """``(Encoder or None, EncoderConfig, label)``: what NeuFace starts from (see the module docstring).

    ``encoder`` (Python callers): an ``Encoder`` (with ``encoder_config``) or an ``(Encoder,
    EncoderConfig)`` pair; it wins over ``config.encoder``.
    """
    model = face_setup.model
    if encoder is not None:
        enc, cfg = encoder if isinstance(encoder, tuple) else (encoder, encoder_config)
        if cfg is None:
            raise ValueError("an Encoder object needs its encoder_config (or pass an (Encoder, EncoderConfig) pair)")
        check_fits(cfg, model)
        return enc, cfg, "given"
    path = config.encoder
    if path is None and face_setup.is_demo and encoder_config is None:
        try:
            path = packaged_checkpoint()
        except FileNotFoundError as e:
            msg = f"no packaged pretrained encoder ({e}); using a randomly initialized encoder"
            logger.info("%s", msg)
            notes.append(msg)
        else:
            notes.append("encoder: the packaged pretrained small encoder (trained on demo-head renders; "
                         "encoder='random' for a random init)")
    if path is None and not face_setup.is_demo and encoder_config is None:
        # Never silently: from random weights NeuFace barely fits within a sane budget.
        msg = ("no --encoder for this FLAME model: NeuFace starts from a randomly initialized small encoder, "
               "which fits far worse than a pretrained one (head rotation, blinks, mouth range); import DECA/EMOCA "
               "weights with `neuface-jax import-encoder --format deca|emoca --input FILE --out DIR` and pass "
               "--encoder=DIR (or --encoder=random to choose the random start explicitly)")
        logger.warning("%s", msg)
        notes.append(msg)
    if path is None or str(path) == RANDOM_ENCODER:
        return None, encoder_config or default_encoder_config(model), "random init"
    enc, cfg = load_checkpoint(path, model)
    return enc, cfg, str(path)


def make_setup(
    config: SetupConfig = SetupConfig(),
    *,
    model=None,
    embedding=None,
    encoder=None,
    encoder_config: encoder_lib.EncoderConfig | None = None,
    fit_config: fit_lib.FitConfig | None = None,
    landmarker_options: detect_lib.LandmarkerOptions | None = None,
    need_landmarker: bool = True,
) -> AnnotateSetup:
    """Resolves the model, embedding, encoder and optimizer once for one clip or a whole dataset.

    The keyword arguments are Python-only objects: a loaded ``model`` / ``embedding`` (instead of
    ``config.flame_model`` / ``config.landmark_embedding``), an ``encoder`` object (see
    ``_start_encoder``), the ``encoder_config`` of a random start, a full ``fit_config`` (instead
    of ``config``'s epochs / chunk_frames / learning_rate / seed) and MediaPipe options.
    ``need_landmarker=False`` tolerates a missing MediaPipe model (every clip brings precomputed
    landmarks); a clip that then needs detection fails with ``detect.ModelNotFoundError``. The
    landmarker is looked up first: a missing one fails before the model and encoder are built.
    """
    t0 = time.perf_counter()
    try:
        model_path = detect_lib.resolve_model_path(config.face_landmarker)
    except detect_lib.ModelNotFoundError:
        if need_landmarker:
            raise
        model_path = None
    face_setup = resolve_face_model(
        config.flame_model if model is None else model,
        config.landmark_embedding if embedding is None else embedding,
        landmark_set=config.landmark_set, contour=config.contour, lip_points=config.lip_points,
    )
    notes = _face_notes(face_setup)
    enc, enc_cfg, label = _start_encoder(config, face_setup, encoder, encoder_config, notes)
    if fit_config is None:
        lr = config.learning_rate
        if lr is None:
            lr = default_learning_rate(enc_cfg, pretrained=enc is not None)
        fit_config = fit_lib.FitConfig(
            num_epochs=int(config.epochs), chunk_frames=int(config.chunk_frames), learning_rate=float(lr),
            seed=int(config.seed), **fit_lib.schedule_settings(config),
            trainable_stages=fit_lib.annotation_trainable_stages(config.trainable_stages, pretrained=enc is not None),
        )
    flame_file = config.flame_model if model is None else None
    recorded = None if flame_file is None else flame_jax.load_shape_prior(flame_file)
    if recorded is not None and fit_config.shape_prior_weights is None:
        # A model whose components need unequal priors (e.g. learned ones, `learn-model`) records them.
        if len(recorded) != face_setup.model.num_shape:
            raise ValueError(f"{flame_file}: records {len(recorded)} identity-prior weights for "
                             f"{face_setup.model.num_shape} identity components")
        fit_config = fit_config.replace(shape_prior_weights=recorded)
        notes.append("shape prior: the per-coefficient weights recorded in the model file")
    if config.image_terms():  # --weight_photometric / --weight_silhouette
        fit_config = fit_config.replace(loss={**fit_config.loss, **config.image_terms()})
    face = fit_lib.FaceModel(face_setup.model, face_setup.embedding)
    if losses_lib.uses_images(fit_config.loss) and not face_setup.is_demo:
        # The photometric / silhouette terms compare the mesh's face region, looked up by mesh size.
        if getattr(face_setup.embedding, "num_landmarks", 0) == 68:
            photometric.register_face_region(face_setup.model, face_setup.embedding)
        else:
            raise ValueError(
                f"setup: the photometric / silhouette terms compare the mesh's face region, found through a 68-point "
                f"landmark embedding; {face_setup.model_label} has a "
                f"{getattr(face_setup.embedding, 'num_landmarks', '?')}-point one: pass a 68-point "
                "--landmark_embedding, or leave --weight_photometric / --weight_silhouette at 0")
    logger.info("setup: model %s (%s, %s contour), encoder %s, lr %.3g; in %.1fs", face_setup.model_label,
                face_setup.landmark_set, face_setup.contour, label, fit_config.learning_rate, time.perf_counter() - t0)
    return AnnotateSetup(
        config=config, face_setup=face_setup, face=face, encoder=enc, encoder_config=enc_cfg, encoder_label=label,
        fit_config=fit_config, optimizer=fit_lib.NeuFace(face, enc_cfg, fit_config), model_path=model_path,
        options=landmarker_options or detect_lib.LandmarkerOptions(track=config.track), notes=tuple(notes),
    )


def refine_result(setup: AnnotateSetup, data: fit_lib.ClipData, result: fit_lib.FitResult, *,
                  inner_lip_weight: float = refine_lib.DEFAULT_INNER_LIP_WEIGHT,
                  identity_rate: float = refine_lib.DEFAULT_IDENTITY_RATE,
                  expression_rate: float = refine_lib.DEFAULT_EXPRESSION_RATE) -> fit_lib.FitResult:
    """NeuFace's ``result`` on ``data`` refined per frame as ``setup.config`` says (``refine_steps``, ``refine_lr``;
    ``core.refine``): what ``annotate`` and the dataset runner write (``inner_lip_weight``, ``identity_rate``,
    ``expression_rate``: ``core.refine``'s)."""
    cfg = setup.config
    return refine_lib.refine(setup.face, setup.encoder_config, setup.fit_config, data, result,
                             steps=int(cfg.refine_steps), learning_rate=float(cfg.refine_lr), seed=setup.fit_config.seed,
                             inner_lip_weight=inner_lip_weight, identity_rate=identity_rate,
                             expression_rate=expression_rate)
