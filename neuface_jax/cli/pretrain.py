"""neuface-jax pretrain: an encoder prior for any FLAME-format model, trained on synthetic renders."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time

from absl import flags

import flame_jax
from neuface_jax.cli import flags as flags_lib
from neuface_jax.cli.common import missing, parse_command
from neuface_jax.common import log as log_lib
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.media import detect, video
from neuface_jax.priors import starting
from neuface_jax.synthetic import augment, pretrain

PROG = "neuface-jax pretrain"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("out", None, "Encoder checkpoint folder to write (required); the summary goes to "
                        "<out>.pretrain.json and the resumable state to <out>.state/.", flag_values=fv)
    flags.DEFINE_string("flame_model", None, "FLAME-format model file (FLAME 2020/2023/Open .pkl or .npz); default: "
                        "the procedural demo head.", flag_values=fv)
    flags.DEFINE_string("landmark_embedding", None, "Its 68-point landmark embedding (needed with --flame_model).",
                        flag_values=fv)
    flags.DEFINE_enum("arch", "small", ["small", "resnet50"], "small: the CPU encoder at 64 px; resnet50: DECA's "
                      "backbone at 224 px (for accelerators).", flag_values=fv)
    flags.DEFINE_integer("image_size", None, "Encoder crop size in px, a multiple of 32 (default: 64 for small, "
                         "224 for resnet50; a step costs about the pixel count: 96 or 128 is a ResNet-50 a CPU can "
                         "train).",
                         flag_values=fv)
    flags.DEFINE_enum("preset", "cpu", sorted(pretrain.PRESETS), "Sizes: tiny (a smoke run), cpu (minutes on a "
                      "CPU), gpu (a long accelerator run, images rendered on the fly). Explicit flags override it.",
                      flag_values=fv)
    flags.DEFINE_bool("resume", False, "Continue from the last saved training state under <out>.state/ (same "
                      "settings).", flag_values=fv)
    flags.DEFINE_list("real_clips", [], "Real videos to validate on (raw-prediction NME against MediaPipe's points, "
                      "yaw against MediaPipe's head rotation).", flag_values=fv)
    flags.DEFINE_integer("real_stride", 2, "Frame stride of the real validation clips.", flag_values=fv)
    flags.DEFINE_integer("real_max_frames", 200, "At most this many frames of each real clip.", flag_values=fv)
    flags.DEFINE_string("face_landmarker", None, "MediaPipe face landmarker model (default: $NEUFACE_FACE_LANDMARKER "
                        "or the user cache; `neuface-jax fetch-models`).", flag_values=fv)
    flags_lib.define(fv, pretrain.SyntheticPretrainConfig)
    flags_lib.define(fv, pretrain.RenderConfig)
    flags_lib.define(fv, augment.AugmentConfig)


def _face(fv) -> fit_lib.FaceModel:
    if not fv.flame_model:
        return fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    if not fv.landmark_embedding:
        raise ValueError("--flame_model needs --landmark_embedding (the model's 68-point embedding)")
    model = flame_jax.load_model(fv.flame_model)
    emb = flame_jax.load_landmark_embedding(fv.landmark_embedding)
    if emb.kind != "ibug68":
        raise ValueError(f"--landmark_embedding {fv.landmark_embedding}: a 68-point (iBUG) embedding is needed, "
                         f"this one is {emb.kind!r}")
    return fit_lib.FaceModel(model, emb)


def encoder_config_for(arch: str, model, image_size: int | None = None) -> encoder_lib.EncoderConfig:
    """The encoder ``--arch`` trains for ``model``: the default (small, 64 px) or ResNet-50 at 224 px;
    ``image_size`` overrides the crop size (a ResNet-50 at 96–128 px is what a CPU can pretrain)."""
    cfg = starting.default_encoder_config(model)
    if arch == "resnet50":
        cfg = dataclasses.replace(cfg, arch="resnet50", image_size=224, head_hidden=1024)
    if image_size is not None:
        if image_size < 32 or image_size % 32:
            raise ValueError(f"--image_size {image_size}: must be a positive multiple of 32")
        cfg = dataclasses.replace(cfg, image_size=image_size)
    starting.check_fits(cfg, model)
    return cfg


def _run_config(fv) -> pretrain.SyntheticPretrainConfig:
    cfg = flags_lib.build(fv, pretrain.SyntheticPretrainConfig)
    preset = pretrain.PRESETS[fv.preset]
    # The preset fills the settings not given on the command line.
    return dataclasses.replace(cfg, **{k: v for k, v in preset.items() if not fv[k].present})


def pretrain_main(argv: list[str]) -> int:
    """Trains an encoder prior on synthetic renders of a FLAME-format model.

    neuface-jax pretrain --out DIR [--flame_model F --landmark_embedding E] [--arch small|resnet50] [--image_size N]
        [--preset tiny|cpu|gpu] [--resume] [--real_clips a.mp4,b.mp4] [--bf16] [--init CKPT]

    Renders faces of the model (default: the demo head) over the ranges real video shows — identity,
    expression, jaw, head yaw to ±70°, lighting, skin tones, backgrounds, hands / hair / glasses
    over the face, blur, noise, JPEG and the crop-box noise of a detector — and trains the encoder to
    regress their parameters. The batch is sharded over all local devices. Writes the checkpoint
    (for --encoder DIR / neuface_jax.load_encoder(DIR)), <out>.pretrain.json (held-out render
    errors, real-clip errors, timings) and <out>.state/ (resume with --resume). docs/pretraining.md
    says which prior to use when.
    """
    fv = parse_command(argv, PROG, pretrain_main.__doc__, _define)
    if missing(fv, PROG, "out"):
        return 2
    start = time.perf_counter()
    try:
        face = _face(fv)
        enc_cfg = encoder_config_for(fv.arch, face.flame, fv.image_size)
        run = _run_config(fv)
        render = flags_lib.build(fv, pretrain.RenderConfig, augment=flags_lib.build(fv, augment.AugmentConfig))
        real = []
        for path in fv.real_clips:
            frames = video.FrameRange(stride=fv.real_stride, end=fv.real_stride * fv.real_max_frames)
            real.append(pretrain.prepare_real_clip(
                path, encoder_size=enc_cfg.image_size, frames=frames, model_path=fv.face_landmarker,
            ))  # landmarks cached where annotate caches them
        summary = pretrain.train_prior(
            fv.out, run, render, face=face, encoder_config=enc_cfg, resume=fv.resume, real_clips=tuple(real),
            progress=log_lib.progress_factory(), log=logging.getLogger(__name__).info,
        )
    except (detect.NoFaceError, detect.ModelNotFoundError, video.VideoError, FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    val = summary["validation"]
    if val:
        print(f"held-out renders: rotation error {val['rotation_deg']:.1f} deg, landmark L1 {val['landmark_l1']:.4f}, "
              f"identity RMSE {val['shape_rmse']:.3f}, expression RMSE {val['expression_rmse']:.3f}")
    for name, r in summary["real_clips"].items():
        print(f"{name}: NME {r['nme_percent']:.2f} %, yaw error {r['yaw_error_deg']:.1f} deg "
              f"({r['turned_frames']} frames turned: {r['turned_yaw_error_deg']:.1f} deg)")
    print(f"wrote {os.path.abspath(fv.out)} ({fv.arch}, {enc_cfg.image_size} px) in "
          f"{time.perf_counter() - start:.0f} s; use it with --encoder {fv.out}")
    print(json.dumps({"seconds": summary["seconds"]}))
    return 0
