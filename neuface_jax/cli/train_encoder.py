"""neuface-jax train-encoder: fine-tune an encoder on real frames labelled by this project's annotations."""

from __future__ import annotations

import sys

from absl import flags

from neuface_jax.cli import flags as cli_flags
from neuface_jax.cli.common import missing, parse_command
from neuface_jax.common import log as log_lib
from neuface_jax.priors import starting as starting_lib
from neuface_jax.training import labels as labels_lib
from neuface_jax.training import self_training

PROG = "neuface-jax train-encoder"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_multi_string("annotations", None, "annotate or annotate-dataset output folder(s) (repeat, or "
                              "several after one flag separated by commas) (required).", flag_values=fv)
    flags.DEFINE_string("init", None, "Encoder checkpoint to start from (any folder load_encoder reads; default: "
                        "the packaged pretrained small encoder).", flag_values=fv)
    flags.DEFINE_string("out", None, "Checkpoint folder to write (required); use it with annotate --encoder.",
                        flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing checkpoint at --out.", flag_values=fv)
    flags.DEFINE_string("flame_model", None, "The FLAME model file the annotations were fitted with (default: the "
                        "demo head, or the model path they record).", flag_values=fv)
    flags.DEFINE_string("landmark_embedding", None, "Its landmark embedding (FLAME annotations).", flag_values=fv)
    flags.DEFINE_multi_string("video_dir", [], "Folder(s) where videos that moved since they were annotated are "
                              "found by file name.", flag_values=fv)
    cli_flags.define(fv, self_training.SelfTrainConfig)


def train_encoder_main(argv: list[str]) -> int:
    """Fine-tunes an encoder on real frames labelled by annotate / annotate-dataset outputs.

    neuface-jax train-encoder --annotations DIR [DIR ...] [--init CKPT] --out DIR [--val_clips ID,...]
        [--steps 300 --batch_size 32 --lr 3e-4] [--frame_stride K --max_frames N]

    The crops are rebuilt from the annotated videos with the saved crop transforms; the per-frame FLAME
    parameters and cameras are the targets, with the landmark loss against the detected points alongside.
    Clips named by --val_clips (annotation folder names) are held out whole and scored before and after
    (raw-prediction NME, yaw and label errors). The result is an encoder checkpoint for
    `neuface-jax annotate --encoder DIR`; its summary is DIR.pretrain.json beside it.
    """
    fv = parse_command(argv, PROG, train_encoder_main.__doc__, _define)
    if missing(fv, PROG, "annotations", "out"):
        return 2
    dirs = [d for arg in fv.annotations for d in arg.split(",") if d]
    try:
        config = cli_flags.build(fv, self_training.SelfTrainConfig)
    except ValueError as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 2
    log_lib.configure()
    try:
        init = fv.init or starting_lib.packaged_checkpoint()
        summary = self_training.train_encoder(
            dirs, init, fv.out, config, flame_model=fv.flame_model, landmark_embedding=fv.landmark_embedding,
            video_dirs=fv.video_dir, overwrite=fv.overwrite,
        )
    except (OSError, ValueError, KeyError) as e:  # AnnotationError is a ValueError; names the folder or file
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    after = summary.get("val_after") or {}
    figures = (f"; held-out raw NME {after['nme_percent']:.2f} %, yaw error {after['yaw_error_deg']:.1f} deg"
               if after else "")
    print(f"wrote {summary['out']} ({sum(summary['train_frames'].values())} training frames{figures}); "
          f"use it with --encoder {summary['out']}")
    return 0
