"""Dataset-scale annotation: a manifest of clips in, one folder of results per clip out.

- ``manifest``: finding clips in a folder tree and the JSON-lines manifest (stable clip ids).
- ``config``: ``DatasetConfig``, what is prepared and written per clip and how clips are scheduled.
- ``layout``: the names of the run's own files in the output folder; reserved and nested clip ids.
- ``outdir``: the output folder made absolute, checked writable and leased per shard.
- ``records``: clip folders, completion records, ``failures.jsonl`` (transient or permanent),
  shard summaries and exit statuses.
- ``scheduler``: pure scheduling (shards, selection, order, buckets, groups).
- ``checkpoint``: mid-optimization orbax checkpoints of long groups.
- ``runner``: ``run``, the orchestration (preparation workers, packed fits, writes).
- ``report``: the quality report over an output folder.
- ``distributed``: ``jax.distributed`` start-up.
"""

from __future__ import annotations

import importlib

from neuface_jax.dataset.manifest import (
    MEAD_VIEWS,
    ClipEntry,
    build_manifest,
    read_manifest,
    select_shard,
    shard_of,
    write_manifest,
)

# The other names load on first use: the configs, records, runner and checkpoints pull in JAX and
# the annotation stage, and manifests (``neuface-jax manifest``) and the pure scheduler need neither.
_LAZY = {
    "DatasetConfig": "neuface_jax.dataset.config",
    **{name: "neuface_jax.dataset.records" for name in (
        "CHECKPOINT_DIR", "DONE_FILE", "FAILURES_FILE", "OUTCOMES", "RunSummary", "clip_dir", "completed_clips",
        "failed_clips", "failure_class", "is_done", "read_failures")},
    **{name: "neuface_jax.dataset.outdir" for name in ("OutputError", "OutputLockedError", "prepare_output")},
    "bucket_frames": "neuface_jax.dataset.scheduler",
    "write_report": "neuface_jax.dataset.report",
    "run": "neuface_jax.dataset.runner",
    "GroupCheckpoint": "neuface_jax.dataset.checkpoint",
    "init_distributed": "neuface_jax.dataset.distributed",
}

__all__ = [
    "CHECKPOINT_DIR",
    "DONE_FILE",
    "FAILURES_FILE",
    "MEAD_VIEWS",
    "OUTCOMES",
    "ClipEntry",
    "DatasetConfig",
    "GroupCheckpoint",
    "OutputError",
    "OutputLockedError",
    "RunSummary",
    "bucket_frames",
    "build_manifest",
    "clip_dir",
    "completed_clips",
    "failed_clips",
    "failure_class",
    "init_distributed",
    "is_done",
    "prepare_output",
    "read_failures",
    "read_manifest",
    "run",
    "select_shard",
    "shard_of",
    "write_manifest",
    "write_report",
]


def __getattr__(name: str):  # PEP 562: module attributes resolved on first use
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
