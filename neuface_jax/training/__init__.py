"""Training encoders on real video: labelled frames from this project's annotations, and self-training.

``labels``: an ``annotate`` / ``annotate-dataset`` output → the encoder crops rebuilt from the videos with the
saved crop transforms, with the per-frame FLAME parameters, cameras and landmarks as targets
(``load_labelled_frames``, streamed per clip by ``iter_labelled_clips``). ``self_training``: fine-tune an
encoder on them (``train_encoder``; ``neuface-jax train-encoder``), validated on whole held-out clips.
"""

from neuface_jax.training.labels import (
    AnnotationError,
    ClipSource,
    LabelledFrames,
    find_annotations,
    iter_labelled_clips,
    load_labelled_frames,
)
from neuface_jax.training.self_training import SelfTrainConfig, train_encoder

__all__ = [
    "AnnotationError",
    "ClipSource",
    "LabelledFrames",
    "SelfTrainConfig",
    "find_annotations",
    "iter_labelled_clips",
    "load_labelled_frames",
    "train_encoder",
]
