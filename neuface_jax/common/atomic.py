"""Atomic file writes (a temporary file beside the target, fsync, rename, fsync of the folder).

The one implementation is ``flame_jax.atomic`` (the bottom layer, so that the FLAME file writers
use it too); this module re-exports it for ``neuface_jax``.
"""

from __future__ import annotations

from flame_jax.atomic import TMP_SUFFIX, atomic_write, atomic_write_text, fsync_dir

__all__ = ["TMP_SUFFIX", "atomic_write", "atomic_write_text", "fsync_dir"]
