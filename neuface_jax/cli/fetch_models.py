"""neuface-jax fetch-models: download the MediaPipe Face Landmarker."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

from neuface_jax.cli.common import help_requested, parse, progress_factory


def fetch_models_main(argv: list[str]) -> int:
    from neuface_jax.media import detect

    return int(detect.fetch_models_main(argv[1:]) or 0)

