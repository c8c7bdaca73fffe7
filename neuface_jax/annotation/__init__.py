"""The annotation stage: real videos → FLAME meshes by NeuFace (``neuface-jax annotate``).

``config`` (SetupConfig / PrepareConfig / OutputConfig, each setting declared once) →
``preflight`` (every input checked before anything expensive is built) → ``setup`` (``make_setup``:
face model, encoder, learning rate, optimizer; once per run) → ``prepare`` (per clip: decode,
landmarks, crops) → the optimizer → ``write`` (params.npz, metrics.json with ``scoring``'s metrics,
overlay.mp4); ``run.annotate`` chains them for one clip. Reading params.npz back: ``neuface_jax.params``.
"""

from neuface_jax.annotation.config import (
    CONTOURS,
    CROP_SMOOTHING,
    DEFAULT_EPOCHS,
    LANDMARK_SETS,
    RANDOM_ENCODER,
    OutputConfig,
    PrepareConfig,
    SetupConfig,
)
from neuface_jax.annotation.face import FaceSetup, resolve_face_model, static_contour_embedding
from neuface_jax.annotation.prepare import PreparedClip, prepare
from neuface_jax.annotation.run import annotate, annotate_shots
from neuface_jax.annotation.scoring import clip_metrics
from neuface_jax.annotation.setup import (
    PRETRAINED_LR,
    PRETRAINED_SMALL_LR,
    RANDOM_INIT_LR,
    AnnotateSetup,
    default_encoder_config,
    default_learning_rate,
    make_setup,
    packaged_checkpoint,
    refine_result,
)
from neuface_jax.annotation.write import write_outputs
from neuface_jax.media.sources import parse_view_boxes

__all__ = [
    "CONTOURS",
    "CROP_SMOOTHING",
    "DEFAULT_EPOCHS",
    "LANDMARK_SETS",
    "PRETRAINED_LR",
    "PRETRAINED_SMALL_LR",
    "RANDOM_ENCODER",
    "RANDOM_INIT_LR",
    "AnnotateSetup",
    "FaceSetup",
    "OutputConfig",
    "PrepareConfig",
    "PreparedClip",
    "SetupConfig",
    "annotate",
    "annotate_shots",
    "clip_metrics",
    "default_encoder_config",
    "default_learning_rate",
    "make_setup",
    "packaged_checkpoint",
    "parse_view_boxes",
    "prepare",
    "refine_result",
    "resolve_face_model",
    "static_contour_embedding",
    "write_outputs",
]
