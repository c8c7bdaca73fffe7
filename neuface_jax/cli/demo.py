"""neuface-jax demo: the embedded default (synthetic clip, direct baseline vs NeuFace)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

from neuface_jax.annotation.write import NOT_APPLICABLE
from neuface_jax.cli import flags as flags_lib
from neuface_jax.cli.common import parse_command
from neuface_jax.common import log as log_lib
from neuface_jax.synthetic import demo as demo_lib

PROG = "neuface-jax demo"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("out", "./neuface_demo", "Output folder.", flag_values=fv)
    flags_lib.define(fv, demo_lib.DemoConfig)


def _shown(metrics: dict, num_views: int) -> dict:
    """The table's rows: a cross-view metric of a one-view clip reads "n/a (one view)", not 0."""
    if num_views > 1:
        return metrics
    return {m: {**v, **{k: text for k, text in NOT_APPLICABLE.items() if k in v}} for m, v in metrics.items()}


def _print_results(out: dict, out_dir: str, write_video: bool, start: float) -> None:
    metrics = _shown(out["metrics"], len(out["clip"].view_names))
    print()
    print(demo_lib.format_table(metrics))
    print()
    extra = {k: v for k, v in metrics.items() if k != "ground_truth"}
    print(demo_lib.format_table(extra, demo_lib.EXTRA_METRIC_NAMES))
    print()
    print("units: nme %, msi mm^-2 frame^4 (higher = smoother), jitter and accel_error mm/frame^2, cvd mm, "
          "vertex errors mm (canonical frame; _similarity after per-frame similarity alignment)")
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in out["seconds"].items())
    print(f"timings: {secs}; total {time.perf_counter() - start:.1f}s")
    print(f"wrote {Path(out_dir).resolve()}/{{params.npz, metrics.json{', overlay.mp4' if write_video else ''}}}")


def demo_main(argv: list[str]) -> int:
    """Synthetic 3-view clip → direct baseline vs NeuFace; writes params.npz, metrics.json, overlay.mp4.

    NeuFace starts from the pretrained small encoder shipped with the package (--encoder=pretrained,
    trained on synthetic renders of the demo head), the direct baseline from its predictions.
    --encoder=random starts both from a randomly initialized encoder (NeuFace then underfits within
    this step budget: docs/experiments.md), --encoder=PATH from a checkpoint made by
    experiments/pretrain_encoder.py.
    """
    fv = parse_command(argv, PROG, demo_main.__doc__, _define)

    start = time.perf_counter()
    print("neuface-jax demo: the demo head is a procedural stand-in for FLAME (no FLAME file needed).")
    cfg = flags_lib.build(fv, demo_lib.DemoConfig)
    try:
        out = demo_lib.run_synthetic(cfg, out_dir=fv.out, progress=log_lib.progress_factory())
    except FileNotFoundError as e:  # a missing --encoder checkpoint
        sys.stderr.write(f"{PROG}: {e}\n")
        return 2
    _print_results(out, fv.out, cfg.write_video, start)
    return 0
