"""neuface-jax synth: a synthetic clip with ground truth on disk."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

import flame_jax
from neuface_jax.cli.common import help_requested, parse
from neuface_jax.common import log as log_lib
from neuface_jax.synthetic import synth


def synth_main(argv: list[str]) -> int:
    """Writes a synthetic clip with ground truth in the layout the video pipeline reads."""
    fv = flags.FlagValues()
    flags.DEFINE_string("out", None, "Output folder (required).", flag_values=fv)
    flags.DEFINE_list("views", ["mono"], "Camera rig: mono, 3, mead, MEAD view names or yaw:pitch pairs.", flag_values=fv)
    flags.DEFINE_integer("frames", 64, "Number of frames.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Clip seed.", flag_values=fv)
    flags.DEFINE_integer("size", 224, "Image size in pixels.", flag_values=fv)
    flags.DEFINE_float("noise_px", 1.0, "Per-landmark detection bias (pixels, std).", flag_values=fv)
    flags.DEFINE_float("jitter_px", 0.7, "Frame-to-frame landmark jitter (pixels, std).", flag_values=fv)
    flags.DEFINE_float("drop_frames", 0.0, "Probability that a frame has no detection.", flag_values=fv)
    flags.DEFINE_string("flame_model", None, "A FLAME model file (default: the demo head).", flag_values=fv)
    flags.DEFINE_string("landmark_embedding", None, "68-point embedding for --flame_model.", flag_values=fv)
    help_requested(argv, fv, "neuface-jax synth", synth_main.__doc__)
    parse(fv, argv, "neuface-jax synth")
    if not fv.out:
        sys.stderr.write("neuface-jax synth: --out is required\n")
        return 2

    cfg = synth.SynthConfig(
        num_frames=fv.frames, image_size=fv.size, landmark_noise_px=fv.noise_px, landmark_jitter_px=fv.jitter_px,
        drop_frame_probability=fv.drop_frames,
    )
    kwargs = {}
    if fv.flame_model:
        if not fv.landmark_embedding:
            sys.stderr.write("neuface-jax synth: --flame_model needs --landmark_embedding (a 68-point embedding)\n")
            return 2
        kwargs = dict(
            model=flame_jax.load_model(fv.flame_model),
            embedding68=flame_jax.load_landmark_embedding(fv.landmark_embedding),
        )
    t0 = time.perf_counter()
    with log_lib.progress_factory()("render", 1) as bar:
        clip = synth.synthesize_clip(seed=fv.seed, rig=",".join(fv.views), config=cfg, progress=bar.callback(),
                                     **kwargs)
    gen = time.perf_counter() - t0
    synth.write_clip(clip, fv.out)
    print(
        f"wrote {clip.num_frames} frames x {clip.num_views} views ({', '.join(clip.view_names)}) to "
        f"{Path(fv.out).resolve()} in {time.perf_counter() - t0:.1f}s (generation {gen:.1f}s)"
    )
    return 0

