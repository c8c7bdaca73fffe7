"""neuface-jax learn-model: learn corrective identity components of a face model over a corpus of clips."""

from __future__ import annotations

import sys

from absl import flags

from neuface_jax.annotation.config import PrepareConfig
from neuface_jax.cli import flags as cli_flags
from neuface_jax.cli.common import missing, parse_command
from neuface_jax.common import log as log_lib
from neuface_jax.model_learning.corpus import CorpusConfig
from neuface_jax.model_learning.fit import ClipFitConfig
from neuface_jax.model_learning.learn import LearnConfig
from neuface_jax.model_learning.run import embedding_path_for, learn_from_manifest

PROG = "neuface-jax learn-model"
_CONFIGS = (LearnConfig, CorpusConfig, ClipFitConfig)


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("manifest", None, "Manifest of the corpus (neuface-jax manifest): synth clips or videos.",
                        flag_values=fv)
    flags.DEFINE_string("out", None, "The learned model (.npz, flame_jax format).", flag_values=fv)
    flags.DEFINE_string("base_model", None, "Base FLAME-format model (default: the demo head).", flag_values=fv)
    flags.DEFINE_string("landmark_embedding", None, "Landmark embedding of --base_model.", flag_values=fv)
    flags.DEFINE_string("face_landmarker", None, "MediaPipe face_landmarker.task for video clips (default: "
                        "$NEUFACE_FACE_LANDMARKER, then the user cache).", flag_values=fv)
    for cls in _CONFIGS:
        cli_flags.define(fv, cls)
    cli_flags.define(fv, PrepareConfig)


def learn_model_main(argv: list[str]) -> int:
    """Learns identity components (vertex offsets) beyond a base model's over a corpus of clips.

    neuface-jax learn-model --manifest M --out model.npz [--base_model F --landmark_embedding E]
        [--shape_components 8] [--albedo_components 0] [--max_frames 16] [--part all|first_half|second_half]

    Every clip gets one identity over all its frames and views; the learned components are smooth
    fields over the mesh (free by default; --orthogonal_to keeps them off the base's spans), scaled
    so a unit coefficient is one standard deviation over the corpus; --reassign optionally moves into
    them the part of the clips' base identity and mean expression that is correlated with them over
    the corpus. Their test-time prior (--test_prior times a base coefficient's) is written into the
    file's shape_prior_weights member, which annotate --flame_model applies. With
    --albedo_components K the clips' face crops also give per-vertex albedo components (the
    photometric step), written into the model file's albedo_mean / albedo_basis members. The result
    is an ordinary model file (with <stem>.landmark_embedding.npz beside it) for annotate
    --flame_model, synth --flame_model and flame_jax.load_model; the learning run is recorded inside it.
    """
    fv = parse_command(argv, PROG, learn_model_main.__doc__, _define)
    if missing(fv, PROG, "manifest", "out"):
        return 2
    log_lib.configure()
    try:
        record = learn_from_manifest(
            fv.manifest, fv.out, base_model=fv.base_model, landmark_embedding=fv.landmark_embedding,
            config=cli_flags.build(fv, LearnConfig), corpus_config=cli_flags.build(fv, CorpusConfig),
            fit_config=cli_flags.build(fv, ClipFitConfig), prepare_config=cli_flags.build(fv, PrepareConfig),
            face_landmarker=fv.face_landmarker, command=" ".join(["neuface-jax learn-model"] + argv[1:]),
            progress=log_lib.progress_factory(),
        )
    except (FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"{PROG}: {e}\n")
        return 1
    lmk = record["landmark_l1"]
    print(f"wrote {fv.out} ({record['learned']['shape_components']} learned identity components after "
          f"{record['learned']['first_component']}; corpus landmark L1 {lmk['base_fit']:.5f} -> "
          f"{lmk['joint_fit']:.5f}; {record['learned']['albedo_components']} albedo components; "
          f"{record['seconds']['per_epoch']:.3f} s/epoch) and {embedding_path_for(fv.out)}")
    return 0
