"""neuface-jax fetch-models: download the MediaPipe Face Landmarker."""

from __future__ import annotations

from neuface_jax.media import landmarker


def fetch_models_main(argv: list[str]) -> int:
    return int(landmarker.fetch_models_main(argv[1:]) or 0)
