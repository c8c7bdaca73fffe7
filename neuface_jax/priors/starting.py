"""Where NeuFace starts: the packaged pretrained encoder, checkpoints that fit a model, default learning rates.

NeuFace is defined by its starting encoder. This module resolves the choices every pipeline shares
(``annotate``, the dataset runner, the synthetic demo, pretraining): the checkpoint shipped inside
the package, loading a checkpoint checked against the face model, the CPU-sized default encoder,
and the one table of default learning rates by starting encoder.
"""

from __future__ import annotations

import pathlib
from typing import Any

from neuface_jax.core import encoder as encoder_lib

__all__ = [
    "PACKAGED_CHECKPOINT_NAME",
    "PRETRAINED_LR",
    "PRETRAINED_SMALL_LR",
    "RANDOM_INIT_LR",
    "check_fits",
    "default_encoder_config",
    "default_learning_rate",
    "load_checkpoint",
    "packaged_checkpoint",
]

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
    of ``encoder_config``'s architecture (the small CNN and the real-time MobileNet, both under a
    million parameters, take the small rate; ResNet-50 the lower one)."""
    if not pretrained:
        return RANDOM_INIT_LR
    small = encoder_config is not None and encoder_config.arch in ("small", "mobilenet")
    return PRETRAINED_SMALL_LR if small else PRETRAINED_LR


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
