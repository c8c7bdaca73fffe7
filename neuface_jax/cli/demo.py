"""neuface-jax demo: the embedded default (synthetic clip, direct baseline vs NeuFace)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

from neuface_jax.cli.common import help_requested, parse, progress_factory


def demo_main(argv: list[str]) -> int:
    """Synthetic 3-view clip → direct baseline vs NeuFace; writes params.npz, metrics.json, overlay.mp4.

    NeuFace starts from the pretrained small encoder shipped with the package (--encoder=pretrained,
    trained on synthetic renders of the demo head), the direct baseline from its predictions.
    --encoder=random starts both from a randomly initialized encoder (NeuFace then underfits within
    this step budget: docs/experiments.md), --encoder=PATH from a checkpoint made by
    experiments/pretrain_encoder.py.
    """
    fv = flags.FlagValues()
    flags.DEFINE_string("out", "./neuface_demo", "Output folder.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Clip seed.", flag_values=fv)
    flags.DEFINE_integer("frames", 40, "Frames of the synthetic clip.", flag_values=fv)
    flags.DEFINE_string("views", "3", "Camera rig: mono, 3, mead, MEAD view names or yaw:pitch pairs.", flag_values=fv)
    flags.DEFINE_integer("epochs", 100, "Optimization epochs over the chunks (reference: 100).", flag_values=fv)
    flags.DEFINE_integer("chunk_frames", 20, "Frames per chunk (reference: 20).", flag_values=fv)
    flags.DEFINE_string(
        "encoder", "pretrained",
        "Where NeuFace starts (and the direct baseline's initial prediction comes from): 'pretrained' (the "
        "checkpoint shipped with the package), 'random', or a checkpoint directory.", flag_values=fv,
    )
    flags.DEFINE_float(
        "lr", None, "NeuFace learning rate (default 3e-4 from a pretrained encoder, 1e-3 from a random one).",
        flag_values=fv,
    )
    flags.DEFINE_float("direct_lr", 1e-2, "Direct-optimization learning rate.", flag_values=fv)
    flags.DEFINE_list("methods", ["direct", "neuface"], "Methods to run.", flag_values=fv)
    flags.DEFINE_bool("video", True, "Write overlay.mp4.", flag_values=fv)
    flags.DEFINE_bool("objs", False, "Write one OBJ per frame and view.", flag_values=fv)
    help_requested(argv, fv, "neuface-jax demo", demo_main.__doc__)
    parse(fv, argv, "neuface-jax demo")

    from neuface_jax.synthetic import demo as pipeline

    start = time.perf_counter()
    print("neuface-jax demo: the demo head is a procedural stand-in for FLAME (no FLAME file needed).")
    lr = fv.lr
    if lr is None:
        lr = pipeline.DEMO_LEARNING_RATES["random" if fv.encoder == "random" else "pretrained"]
    cfg = pipeline.DemoConfig(
        seed=fv.seed,
        num_frames=fv.frames,
        views=fv.views,
        encoder_init=fv.encoder,
        fit=pipeline.DemoConfig().fit.replace(
            num_epochs=fv.epochs, chunk_frames=fv.chunk_frames, learning_rate=lr, direct_learning_rate=fv.direct_lr,
            seed=fv.seed,
        ),
        methods=tuple(fv.methods),
    )
    try:
        out = pipeline.run_synthetic(
            cfg, out_dir=fv.out, write_video=fv.video, write_objs=fv.objs, progress_factory=progress_factory()
        )
    except FileNotFoundError as e:  # a missing --encoder checkpoint
        sys.stderr.write(f"neuface-jax demo: {e}\n")
        return 2
    print()
    print(pipeline.format_table(out["metrics"]))
    print()
    extra = pipeline.format_table(
        {k: v for k, v in out["metrics"].items() if k != "ground_truth"}, pipeline.EXTRA_METRIC_NAMES
    )
    print(extra)
    print()
    print("units: nme %, msi mm^-2 frame^4 (higher = smoother), jitter and accel_error mm/frame^2, cvd mm, "
          "vertex errors mm (canonical frame; _similarity after per-frame similarity alignment)")
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in out["seconds"].items())
    print(f"timings: {secs}; total {time.perf_counter() - start:.1f}s")
    print(f"wrote {Path(fv.out).resolve()}/{{params.npz, metrics.json{', overlay.mp4' if fv.video else ''}}}")
    return 0

