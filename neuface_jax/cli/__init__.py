"""The ``neuface-jax`` command: ``neuface-jax <command> [--flags]``.

Commands:
  demo          synthetic 3-view clip → direct baseline and NeuFace → table, params.npz,
                metrics.json, overlay.mp4 (the embedded default: no FLAME file, no video)
  synth         write a synthetic clip with ground truth (one mp4 per view, landmarks, truth)
  fetch-models  download the MediaPipe face landmarker and check its SHA-256
  annotate      real video(s) → MediaPipe landmarks → crops → NeuFace → params.npz, metrics.json,
                overlay.mp4 (mesh over the original frames, views tiled), optional OBJs
  manifest      a folder tree of clips (MEAD, one video per clip, frame folders, synth clips) → a
                jsonl manifest with stable clip ids
  annotate-dataset
                a manifest → <out>/<clip_id>/{params.npz,metrics.json,done.json}: sharded, K clips
                packed per device, resumable, failures in failures.jsonl, a quality report
  report        the dataset quality report (report.json, report.md) of an annotate-dataset output
  export-meshes a params.npz → meshes (OBJ, binary PLY or npz per view; model, camera or image space)
  import-encoder
                DECA's deca_model.tar or EMOCA's .ckpt (read without torch) → an encoder checkpoint
                for --encoder
  train-regressor
                the real-time regressor (MobileNet) from synthetic renders and annotate outputs
  live          camera / video file / stream → face detection, tracking, regression → params,
                a window or an overlay mp4
  pretrain      an encoder prior for any FLAME-format model (default the demo head), trained on
                synthetic renders; resumable, data-parallel over the local devices
  train-encoder fine-tune an encoder on real frames labelled by annotate / annotate-dataset outputs
  learn-model   learn identity components beyond a base model over a corpus of clips (a manifest)
                → an ordinary FLAME-format model file

Flags are absl flags, one set per command (``neuface-jax <command> --help``).
"""

from __future__ import annotations

import sys

from absl import logging as absl_logging

from neuface_jax.cli import annotate, annotate_dataset, demo, export_meshes, fetch_models, manifest, report, synth
from neuface_jax.cli import evaluate_motion, generate_motion, import_encoder, train_motion_prior
from neuface_jax.cli import live, train_regressor
from neuface_jax.cli import pretrain as pretrain_cli
from neuface_jax.cli import train_encoder
from neuface_jax.cli import learn_model
from neuface_jax.common import log as log_lib

USAGE = __doc__

COMMANDS = {
    "demo": demo.demo_main,
    "synth": synth.synth_main,
    "fetch-models": fetch_models.fetch_models_main,
    "annotate": annotate.annotate_main,
    "manifest": manifest.manifest_main,
    "annotate-dataset": annotate_dataset.annotate_dataset_main,
    "report": report.report_main,
    "export-meshes": export_meshes.export_meshes_main,
    "train-motion-prior": train_motion_prior.train_motion_prior_main,
    "generate-motion": generate_motion.generate_motion_main,
    "evaluate-motion": evaluate_motion.evaluate_motion_main,
    "import-encoder": import_encoder.import_encoder_main,
    "train-regressor": train_regressor.train_regressor_main,
    "live": live.live_main,
    "pretrain": pretrain_cli.pretrain_main,
    "train-encoder": train_encoder.train_encoder_main,
    "learn-model": learn_model.learn_model_main,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    # Orbax logs every checkpoint read at INFO through absl; the commands report what matters.
    absl_logging.set_verbosity(absl_logging.WARNING)
    log_lib.configure()  # the library's messages (logging.getLogger(__name__)) go to stderr
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(USAGE.strip())
        return 0 if len(argv) >= 2 else 2
    command = argv[1]
    if command not in COMMANDS:
        sys.stderr.write(f"neuface-jax: unknown command {command!r}\n\n{USAGE.strip()}\n")
        return 2
    return COMMANDS[command]([f"neuface-jax {command}"] + argv[2:])


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())

