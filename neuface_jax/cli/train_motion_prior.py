"""neuface-jax train-motion-prior: a generative motion prior from annotation folders."""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags

from neuface_jax.cli import flags as cli_flags
from neuface_jax.cli.common import help_requested, parse
from neuface_jax.common import log as log_lib
from neuface_jax.motion_prior import data as data_lib
from neuface_jax.motion_prior import model as model_lib
from neuface_jax.motion_prior import train as train_lib


def train_motion_prior_main(argv: list[str]) -> int:
    """Trains (or resumes) a motion prior on annotate / annotate-dataset outputs.

    neuface-jax train-motion-prior --data DIR [--data DIR ...] --out PRIOR_DIR
    """
    fv = flags.FlagValues()
    flags.DEFINE_multi_string("data", None, "annotate-dataset output folder or annotate output folder "
                              "(repeat or separate with commas).", flag_values=fv)
    flags.DEFINE_string("out", None, "Prior folder (prior.json, checkpoints/); an existing one is resumed.",
                        flag_values=fv)
    for cls in (data_lib.Layout, model_lib.PriorConfig, train_lib.TrainConfig):
        cli_flags.define(fv, cls)
    help_requested(argv, fv, "neuface-jax train-motion-prior", train_motion_prior_main.__doc__)
    parse(fv, argv, "neuface-jax train-motion-prior")
    dirs = [d for arg in (fv.data or []) for d in arg.split(",") if d]
    if not dirs or not fv.out:
        sys.stderr.write("neuface-jax train-motion-prior: --data and --out are required\n")
        return 2
    log_lib.configure()
    layout = cli_flags.build(fv, data_lib.Layout)
    prior_config = cli_flags.build(fv, model_lib.PriorConfig, layout=layout)
    config = cli_flags.build(fv, train_lib.TrainConfig)
    result = train_lib.train(dirs, fv.out, prior_config, config, progress=log_lib.progress_factory())
    final = result.get("final") or {}
    print(f"wrote {Path(fv.out).resolve()} (step {result['steps_done']}; "
          + ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k != "step") + ")")
    return 0
