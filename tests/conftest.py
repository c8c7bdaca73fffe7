"""Shared pytest configuration.

Tests that read real data find it through ``NEUFACE_SHARED_DATA`` (``.ci/run`` sets
it to ``../shared/data``). Unset (a user's fresh clone): those tests skip with a
visible reason. Set but missing: they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def shared_data_dir() -> Path | None:
    value = os.environ.get("NEUFACE_SHARED_DATA")
    return Path(value) if value else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if root is None:
        pytest.skip("NEUFACE_SHARED_DATA is not set: real-data test skipped (CI sets it to ../shared/data)")
    if not root.is_dir():
        pytest.fail(f"NEUFACE_SHARED_DATA={root} does not exist: the shared test data is expected but absent")
    return root
