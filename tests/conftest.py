"""Shared pytest configuration and fixtures for the real shared data.

Tests that read real data find it through ``NEUFACE_SHARED_DATA`` (``.ci/run`` sets
it to ``../shared/data``). Unset (a user's fresh clone): those tests skip with a
visible reason. Set but missing files: they fail, so a broken CI data mount never
passes silently.
"""

from __future__ import annotations

import logging
import os

# Multi-threaded OpenBLAS makes small NumPy linear algebra 40-200x slower on a loaded
# 2-core machine; the tests only do small host-side algebra.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import pathlib

import pytest

SHARED_DATA_ENV = "NEUFACE_SHARED_DATA"

#: Files the neuface_jax data tests read (relative to the shared data folder).
REQUIRED_FILES = (
    "mediapipe/face_landmarker.task",
    "mediapipe/canonical_face_model.obj",
    "videos/mead_M003_level_1_disgusted_015.mp4",
    "videos/liveportrait_d20.mp4",
    "videos/metrical_tracker_wojtek.mp4",
    "videos/multiview/vhap_nersemble_038_EMO-1_3views.mp4",
    "images/deca_AFLW2000_image00181.jpg",
)


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The shared data folder as a ``pathlib.Path`` (skips when ``NEUFACE_SHARED_DATA`` is unset)."""
    root = os.environ.get(SHARED_DATA_ENV)
    if not root:
        pytest.skip(f"{SHARED_DATA_ENV} is not set: tests on the real shared data (../shared/data) are skipped")
    path = pathlib.Path(root).expanduser().resolve()
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        pytest.fail(f"{SHARED_DATA_ENV}={root} ({path}) is set but these files are missing: {missing}")
    return path


@pytest.fixture(scope="session")
def landmarker_model(shared_data) -> pathlib.Path:
    """The MediaPipe face landmarker model from the shared data."""
    return shared_data / "mediapipe" / "face_landmarker.task"


@pytest.fixture(autouse=True)
def _restore_project_logging():
    """Commands call ``common.log.configure()`` (own handler, no propagation); give every test the
    logging state it started with, so a command run in one test cannot hide records from the next
    test's ``caplog``."""
    log = logging.getLogger("neuface_jax")
    saved = (list(log.handlers), log.propagate, log.level)
    yield
    log.handlers[:] = saved[0]
    log.propagate, log.level = saved[1], saved[2]
