"""neuface-jax evaluate-motion: motion priors and baselines scored on held-out annotated sequences."""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags

import flame_jax
from neuface_jax.cli.common import help_requested, parse
from neuface_jax.common import log as log_lib
from neuface_jax.media import export as export_lib
from neuface_jax.motion_prior import evaluate as evaluate_lib
from neuface_jax.motion_prior import train as train_lib


def _split(values) -> list[str]:
    return [v for arg in (values or []) for v in arg.split(",") if v]


def evaluate_motion_main(argv: list[str]) -> int:
    """Realism, diversity, smoothness, plausibility and continuity of each prior's continuations of the
    held-out clips' start frames, beside holding the start pose and a linear AR model fitted to --train_data.

    neuface-jax evaluate-motion --prior P [--prior P2 ...] --data HELD_OUT_DIR [--train_data DIR] --out eval.json
    """
    fv = flags.FlagValues()
    flags.DEFINE_multi_string("prior", None, "Prior folder; NAME=DIR names its row.", flag_values=fv)
    flags.DEFINE_multi_string("data", None, "Held-out annotation folders.", flag_values=fv)
    flags.DEFINE_multi_string("train_data", None, "Folders the linear AR baseline is fitted to (none: no AR row).",
                              flag_values=fv)
    flags.DEFINE_float("seconds", 10.0, "Continuation length.", flag_values=fv)
    flags.DEFINE_integer("samples", 8, "Continuations per start frame.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=fv)
    flags.DEFINE_integer("view", 0, "View of multi-view annotations.", flag_values=fv)
    flags.DEFINE_string("flame_model", None, "FLAME model file (default: the demo head).", flag_values=fv)
    flags.DEFINE_string("landmark_embedding", None, "68-point embedding of --flame_model.", flag_values=fv)
    flags.DEFINE_string("out", None, "Write the table as JSON here (and a .md beside it).", flag_values=fv)
    help_requested(argv, fv, "neuface-jax evaluate-motion", evaluate_motion_main.__doc__)
    parse(fv, argv, "neuface-jax evaluate-motion")
    if not fv.prior or not fv.data:
        sys.stderr.write("neuface-jax evaluate-motion: --prior and --data are required\n")
        return 2
    if bool(fv.flame_model) != bool(fv.landmark_embedding):
        sys.stderr.write("neuface-jax evaluate-motion: --flame_model needs --landmark_embedding (and back)\n")
        return 2
    log_lib.configure()
    priors = {}
    for spec in _split(fv.prior):
        name, _, path = spec.rpartition("=")
        priors[name or Path(path).name] = train_lib.load_prior(path)
    first = next(iter(priors.values()))
    config = train_lib.TrainConfig(**{**first.meta["train"], "view": fv.view})
    held_out = train_lib.load_clips(_split(fv.data), config)
    ar_clips = train_lib.load_clips(_split(fv.train_data), config) if fv.train_data else []
    face = None
    if fv.flame_model:
        face = evaluate_lib.Face(flame_jax.load_model(fv.flame_model),
                                 flame_jax.load_landmark_embedding(fv.landmark_embedding))
    ar_data = {"linear AR(2)": ar_clips} if ar_clips else None
    doc = evaluate_lib.compare(priors, held_out, ar_data=ar_data, seconds=fv.seconds, samples=fv.samples,
                               seed=fv.seed, face=face)
    table = evaluate_lib.markdown_table(doc["rows"], list(next(iter(doc["rows"].values())).keys()))
    print(table)
    if fv.out:
        doc["command"] = " ".join(["neuface-jax evaluate-motion"] + argv[1:])
        export_lib.write_json(fv.out, doc)
        Path(fv.out).with_suffix(".md").write_text(table + "\n")
        print(f"wrote {Path(fv.out).resolve()}")
    return 0
