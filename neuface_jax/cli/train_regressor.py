"""neuface-jax train-regressor: the real-time regressor from synthetic renders and/or annotations."""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags

from neuface_jax.cli import flags as flags_lib
from neuface_jax.cli.common import missing, parse_command
from neuface_jax.common import log as log_lib
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.media import video as video_lib
from neuface_jax.realtime import train as train_lib

PROG = "neuface-jax train-regressor"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("out", None, "Checkpoint folder to write (an encoder checkpoint; also "
                        "<out>.train.json).", flag_values=fv)
    flags.DEFINE_list("distill", [], "Annotations to distil: annotate / annotate-dataset output folders, "
                      "comma-separated (the videos their metrics.json names are decoded again).", flag_values=fv)
    flags.DEFINE_list("video_dirs", [], "Folders to find moved videos in, by file name.", flag_values=fv)
    flags.DEFINE_list("unlabelled", [], "Videos without annotations (one person each), comma-separated: "
                      "landmark-free self-supervision (--weight_photometric, identity consistency); the last "
                      "--holdout_fraction of each is not used.", flag_values=fv)
    flags.DEFINE_list("weak_images", [], "Still images of other people (one each), comma-separated: MediaPipe's "
                      "landmarks are their only targets (--weak_share of every batch, --weight_weak).", flag_values=fv)
    flags.DEFINE_string("init", None, "Start from this regressor checkpoint (fine-tuning) instead of fresh weights.",
                        flag_values=fv)
    flags.DEFINE_string("face_landmarker", None, "MediaPipe face_landmarker.task whose face detector crops the "
                        "unlabelled videos and still images and labels the stills (default: $NEUFACE_FACE_LANDMARKER or the user "
                        "cache).", flag_values=fv)
    flags_lib.define(fv, train_lib.TrainConfig)


def train_regressor_main(argv: list[str]) -> int:
    """Trains the real-time regressor (a MobileNet encoder checkpoint).

    neuface-jax train-regressor --out DIR [--distill ANNOTATION_DIR,...] [--video_dirs DIR,...]
        [--unlabelled VIDEO,... --weight_photometric W] [--weak_images IMAGE,...] [--init DIR]
        [--synthetic_clips N] [--steps N] [--batch_size N] [--image_size PX] ...

    Synthetic renders of the demo head (--synthetic_clips, 16 images each) and frames of annotate
    outputs (--distill; the fitted parameters are the targets, the last --holdout_fraction of each
    clip is held out) are mixed in every batch. Frames of videos without annotations (--unlabelled,
    cropped by the live tracker's face detector) add landmark-free self-supervision: the photometric
    term (--weight_photometric, also applied to the distilled frames) and identity consistency.
    Still images of other people (--weak_images, one person each) add MediaPipe's landmarks as weak
    targets (no parameters).
    --profile_pitch 8,16 also turns every distilled frame out of plane by those pitch changes (chin
    down positive; the crop warped with its label mesh, the labels turned exactly; --profile_share of
    the distilled groups). --init DIR continues from a trained regressor. The checkpoint works with `neuface-jax live
    --regressor DIR` and as NeuFace's starting encoder (`neuface-jax annotate --encoder DIR`).
    """
    fv = parse_command(argv, PROG, train_regressor_main.__doc__, _define)
    if missing(fv, PROG, "out"):
        return 2
    config = flags_lib.build(fv, train_lib.TrainConfig)
    distill = list(fv.distill)
    try:
        encoder = None
        if fv.init:
            encoder, _ = encoder_lib.load_encoder(fv.init)
        result = train_lib.train(config, distill=distill, video_dirs=fv.video_dirs, unlabelled=fv.unlabelled,
                                 weak_images=fv.weak_images, face_landmarker=fv.face_landmarker, encoder=encoder,
                                 progress=log_lib.progress_factory())
    except (FileNotFoundError, ValueError, video_lib.VideoError) as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    path = train_lib.save(fv.out, result, config, distill=distill, unlabelled=fv.unlabelled,
                         weak_images=fv.weak_images)
    for name, errors in result.validation.items():
        print(f"validation ({name}): " + ", ".join(f"{k} {v:.4g}" for k, v in errors.items()))
    print(f"wrote {Path(path)} and {train_lib.summary_path(path)}")
    return 0
