"""neuface-jax import-encoder: DECA's / EMOCA's encoder weights (PyTorch files) → a project encoder checkpoint."""

from __future__ import annotations

import sys

from absl import flags

from neuface_jax.cli.common import missing, parse_command
from neuface_jax.priors import deca_import

PROG = "neuface-jax import-encoder"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("format", None, sorted(deca_import.FORMATS), "deca: deca_model.tar (E_flame); emoca: an "
                      "EMOCA v2 .ckpt (E_flame plus the expression encoder E_expression) (required).", flag_values=fv)
    flags.DEFINE_string("input", None, "The PyTorch file (zip or legacy format; read without torch) (required).",
                        flag_values=fv)
    flags.DEFINE_string("out", None, "Encoder checkpoint folder to write (required).", flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing checkpoint at --out.", flag_values=fv)


def import_encoder_main(argv: list[str]) -> int:
    """Imports DECA's or EMOCA's encoder into an encoder checkpoint for --encoder.

    neuface-jax import-encoder --format deca|emoca --input PATH --out DIR [--overwrite]

    The file is read without torch and nothing in it is executed (an allow-list unpickler; trainer
    callbacks and hyper-parameters are ignored). The checkpoint predicts DECA's 236 raw values from
    224×224 RGB crops; annotate, annotate-dataset and demo take it with --encoder DIR; in Python,
    neuface_jax.load_encoder(DIR) returns (model, config). DECA / EMOCA weights are non-commercial and
    not redistributable: the checkpoint is derived from them, keep it under the same terms.
    """
    fv = parse_command(argv, PROG, import_encoder_main.__doc__, _define)
    if missing(fv, PROG, "format", "input", "out"):
        return 2
    try:
        _, config = deca_import.import_encoder(fv.format, fv.input, fv.out, overwrite=fv.overwrite)
    except (OSError, ValueError) as e:  # UnsafeModelFileError / FileTooLargeError are ValueErrors
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    two = " with the expression encoder" if config.expression_encoder else ""
    print(f"imported the {fv.format} encoder{two} (ResNet widths {list(config.resnet_widths)}, blocks "
          f"{list(config.resnet_blocks)}) into {fv.out}; use it with --encoder {fv.out}")
    return 0
