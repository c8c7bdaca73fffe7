"""Atomic writes: complete file or the old one, no temporary left behind, default permissions."""

from __future__ import annotations

import os

import numpy as np
import pytest

from neuface_jax.common import atomic
from neuface_jax.media import export


def test_atomic_write_replaces_and_leaves_nothing(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic.atomic_write_text(path, "old")
    atomic.atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "params.npz"
    export.write_json(tmp_path / "m.json", {"a": 1})
    atomic.atomic_write(path, lambda fh: np.savez(fh, x=np.arange(3)))

    def broken(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.atomic_write(path, broken)
    with np.load(path) as f:
        np.testing.assert_array_equal(f["x"], np.arange(3))
    assert not list(tmp_path.glob("*" + atomic.TMP_SUFFIX))
