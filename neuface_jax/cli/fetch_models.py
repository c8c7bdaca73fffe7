"""neuface-jax fetch-models: download the MediaPipe Face Landmarker and check its SHA-256."""

from __future__ import annotations

import sys

from absl import flags

from neuface_jax.cli.common import parse_command
from neuface_jax.media import landmarker

PROG = landmarker.FETCH_COMMAND


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("dest", None, f"Target file (default {landmarker.default_model_path()}).", flag_values=fv)
    flags.DEFINE_string("url", landmarker.MODEL_URL, "Where to download it from.", flag_values=fv)
    flags.DEFINE_bool("force", False, "Download even if a verified copy exists.", flag_values=fv)


def fetch_models_main(argv: list[str]) -> int:
    """Downloads the MediaPipe Face Landmarker model and verifies its SHA-256.

    neuface-jax fetch-models [--dest PATH] [--url URL] [--force]

    A verified copy already at --dest is kept. annotate finds the model there (the user cache by
    default), or through --face_landmarker / $NEUFACE_FACE_LANDMARKER.
    """
    fv = parse_command(argv, PROG, fetch_models_main.__doc__, _define)
    try:
        path = landmarker.fetch_model(fv.dest, url=fv.url, force=fv.force)
    except (OSError, landmarker.ModelChecksumError) as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    print(f"face landmarker model: {path} (SHA-256 {landmarker.MODEL_SHA256})")
    return 0
