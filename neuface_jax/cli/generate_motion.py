"""neuface-jax generate-motion: sampled continuations of a start frame from a motion prior."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

import flame_jax
from neuface_jax.cli.common import help_requested, parse
from neuface_jax.common import log as log_lib
from neuface_jax.motion_prior import data as data_lib
from neuface_jax.motion_prior import generate as generate_lib
from neuface_jax.motion_prior import train as train_lib


def generate_motion_main(argv: list[str]) -> int:
    """N continuations of a start frame: <out>/sample_NNN/params.npz (annotation format, the start frame
    first) and mesh.mp4 (views side by side) for the first --render samples.

    neuface-jax generate-motion --prior P --start params.npz[:FRAME] --seconds 10 --samples N --out DIR
    """
    fv = flags.FlagValues()
    flags.DEFINE_string("prior", None, "Prior folder (train-motion-prior --out).", flag_values=fv)
    flags.DEFINE_string("start", None, "params.npz (or its folder), optionally :FRAME (default frame 0).",
                        flag_values=fv)
    flags.DEFINE_float("seconds", 10.0, "Length of each continuation.", flag_values=fv)
    flags.DEFINE_integer("samples", 4, "Continuations.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Sampling seed (sample i is the same for any --samples).", flag_values=fv)
    flags.DEFINE_string("out", None, "Output folder.", flag_values=fv)
    flags.DEFINE_integer("render", 1, "Samples rendered as mesh.mp4 (0: none).", flag_values=fv)
    flags.DEFINE_integer("size", 256, "Rendered view size in pixels.", flag_values=fv)
    flags.DEFINE_string("flame_model", None, "FLAME model file for rendering (default: the demo head).",
                        flag_values=fv)
    flags.DEFINE_integer("view", 0, "View of a multi-view start file.", flag_values=fv)
    help_requested(argv, fv, "neuface-jax generate-motion", generate_motion_main.__doc__)
    parse(fv, argv, "neuface-jax generate-motion")
    if not (fv.prior and fv.start and fv.out):
        sys.stderr.write("neuface-jax generate-motion: --prior, --start and --out are required\n")
        return 2
    log_lib.configure()
    prior = train_lib.load_prior(fv.prior)
    path, frame = data_lib.parse_start(fv.start)
    clip = data_lib.load_clip(path, view=fv.view, default_fps=prior.fps)
    t0 = time.perf_counter()
    result = generate_lib.continue_clip(prior, clip, frame, seconds=fv.seconds, samples=fv.samples, seed=fv.seed)
    took = time.perf_counter() - t0
    model = flame_jax.load_model(fv.flame_model) if fv.flame_model else None
    paths = generate_lib.write_continuations(result, fv.out, render=fv.render, model=model, size=fv.size)
    print(f"generated {fv.samples} × {result.states.shape[1]} frames in {took:.2f}s (compilation included); "
          f"wrote {len(paths)} files under {Path(fv.out).resolve()}")
    return 0
