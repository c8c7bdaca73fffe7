"""The dataset stage's settings: how a manifest run schedules its clips, each declared once.

A dataset run prepares and writes every clip as ``annotate`` does (``prepare`` and ``output``, the
annotation stage's own configs; dataset runs write no overlay video by default) and adds its
scheduling: K clips packed per device, padded-length buckets, preparation workers, look-ahead and
mid-group checkpoints. The command line builds it from flags (``neuface_jax.cli.flags``).
"""

from __future__ import annotations

import dataclasses

from neuface_jax.annotation.config import OutputConfig, PrepareConfig
from neuface_jax.common.settings import setting

DEFAULT_BUCKET_CHUNKS = (1, 2, 4, 8, 16, 32)


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """How a dataset run schedules its work (the optimizer settings live in ``SetupConfig``)."""

    prepare: PrepareConfig = PrepareConfig()
    output: OutputConfig = OutputConfig(write_video=False)
    clips_per_device: int = setting(1, "K: clips packed per device in one optimization group.")
    bucket_chunks: tuple[int, ...] = setting(
        DEFAULT_BUCKET_CHUNKS, "Padded clip lengths, in chunks: a clip goes to the smallest bucket holding it "
        "(longer clips: the next multiple of the largest bucket).")
    workers: int = setting(2, "Preprocessing threads (decode + landmarks + crops).")
    prefetch: int | None = setting(None, "Clips prepared ahead of the optimizer (default: two groups).")
    checkpoint_every: int = setting(10, "Epochs between orbax checkpoints of long groups (0 = never).")
    checkpoint_min_frames: int = setting(200, "Groups padded to at least this many frames checkpoint.")

    def __post_init__(self):
        # Flags and JSON give lists (of strings); the config keeps a hashable tuple of ints.
        object.__setattr__(self, "bucket_chunks", tuple(int(b) for b in self.bucket_chunks))
        if self.clips_per_device < 1:
            raise ValueError(f"clips_per_device must be >= 1, got {self.clips_per_device}")
        if not self.bucket_chunks or any(b < 1 for b in self.bucket_chunks):
            raise ValueError(f"bucket_chunks must be positive chunk counts, got {self.bucket_chunks}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    def replace(self, **kw) -> "DatasetConfig":
        return dataclasses.replace(self, **kw)
