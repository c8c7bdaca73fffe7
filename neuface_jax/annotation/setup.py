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
from typing import Any

from neuface_jax.annotation.config import RANDOM_ENCODER, SetupConfig
from neuface_jax.annotation.face import FaceSetup, resolve_face_model
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.media import detect as detect_lib

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
]

logger = logging.getLogger(__name__)

#: Default learning rates by starting encoder: a randomly initialized small encoder; a loaded
#: small-encoder checkpoint (the packaged pretrained one); any other loaded checkpoint (the
#: reference 2e-5, tuned for DECA's ResNet-50). For the packaged encoder on the whole shared real
#: clips at 100 epochs, 1e-4 had the best mean NME; 3e-4 is better on short clips but under-rotates
#: long ones (more chunks per epoch) as badly as a random start (README: encoder comparison).
RANDOM_INIT_LR = 1e-3
PRETRAINED_SMALL_LR = 1e-4
PRETRAINED_LR = 2e-5
#: Folder of the packaged pretrained small encoder, under ``neuface_jax/assets/``.
PACKAGED_CHECKPOINT_NAME = "pretrained_small_encoder"


def default_learning_rate(encoder_config: encoder_lib.EncoderConfig | None, *, pretrained: bool) -> float:
    """NeuFace's default learning rate for a start: random (``pretrained=False``) or a loaded checkpoint
    of ``encoder_config``'s architecture (small or ResNet-50)."""
    if not pretrained:
        return RANDOM_INIT_LR
    return PRETRAINED_SMALL_LR if encoder_config is not None and encoder_config.arch == "small" else PRETRAINED_LR


def default_encoder_config(model) -> encoder_lib.EncoderConfig:
    """The CPU-sized encoder predicting all of the model's components."""
    return encoder_lib.EncoderConfig.small(n_shape=model.num_shape, n_expr=model.num_expression)


def packaged_checkpoint(name: str = PACKAGED_CHECKPOINT_NAME) -> pathlib.Path:
    """The pretrained small encoder shipped inside the package (``neuface_jax/assets/<name>``).

    Trained on renders of the procedural demo head (not FLAME) by ``python
    experiments/pretrain_encoder.py`` with the default ``PretrainConfig``; it predicts the demo
    head's 100 identity / 50 expression components from 64×64 crops.

    Raises:
      FileNotFoundError: the package was installed without its data files.
    """
    path = pathlib.Path(__file__).resolve().parent.parent / "assets" / name
    if not (path / "_CHECKPOINT_METADATA").is_file():
        raise FileNotFoundError(
            f"the packaged pretrained encoder is missing ({path}): this neuface-jax installation lacks its "
            "data files (reinstall with `pip install .`), or pass a checkpoint made by "
            "`python experiments/pretrain_encoder.py --out=DIR`"
        )
    return path


def load_checkpoint(path, model) -> tuple[Any, encoder_lib.EncoderConfig]:
    """An encoder checkpoint that fits ``model`` (no more shape / expression components than it has).

    Raises:
      FileNotFoundError: the checkpoint does not exist (naming it).
      ValueError: the encoder predicts more components than the model has.
    """
    enc, cfg = encoder_lib.load_encoder(path)
    check_fits(cfg, model, what=f"encoder checkpoint {path}")
    return enc, cfg


def check_fits(cfg: encoder_lib.EncoderConfig, model, *, what: str = "encoder") -> None:
    """Raises ValueError when the encoder predicts more components than ``model`` has."""
    if cfg.n_shape > model.num_shape or cfg.n_expr > model.num_expression:
        raise ValueError(
            f"{what} predicts {cfg.n_shape} shape / {cfg.n_expr} expression coefficients but the model "
            f"{getattr(model, 'name', '')!r} has {model.num_shape} / {model.num_expression}"
        )


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
        logger.info("neuface-jax annotate: %s", msg)
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
            logger.info("neuface-jax annotate: %s", msg)
            notes.append(msg)
        else:
            notes.append("encoder: the packaged pretrained small encoder (trained on demo-head renders; "
                         "encoder='random' for a random init)")
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
    landmarks); a clip that then needs detection fails with ``detect.ModelNotFoundError``.
    """
    face_setup = resolve_face_model(
        config.flame_model if model is None else model,
        config.landmark_embedding if embedding is None else embedding,
        landmark_set=config.landmark_set, contour=config.contour,
    )
    notes = _face_notes(face_setup)
    enc, enc_cfg, label = _start_encoder(config, face_setup, encoder, encoder_config, notes)
    if fit_config is None:
        lr = config.learning_rate
        if lr is None:
            lr = default_learning_rate(enc_cfg, pretrained=enc is not None)
        fit_config = fit_lib.FitConfig(
            num_epochs=int(config.epochs), chunk_frames=int(config.chunk_frames), learning_rate=float(lr),
            seed=int(config.seed),
        )
    try:
        model_path = detect_lib.resolve_model_path(config.face_landmarker)
    except detect_lib.ModelNotFoundError:
        if need_landmarker:
            raise
        model_path = None
    face = fit_lib.FaceModel(face_setup.model, face_setup.embedding)
    return AnnotateSetup(
        config=config, face_setup=face_setup, face=face, encoder=enc, encoder_config=enc_cfg, encoder_label=label,
        fit_config=fit_config, optimizer=fit_lib.NeuFace(face, enc_cfg, fit_config), model_path=model_path,
        options=landmarker_options or detect_lib.LandmarkerOptions(), notes=tuple(notes),
    )
