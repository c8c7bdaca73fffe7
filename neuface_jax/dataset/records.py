"""A dataset run's records on disk: clip folders, completion records, failures and shard summaries.

Clips never talk to each other, so the unit of resumption is a clip's folder ``<out>/<clip_id>/``.
Its completion record ``done.json`` is written atomically after its files and lists their sizes: a
clip is complete exactly when the record exists and the files still have those sizes. A clip that
fails gets one line in ``<out>/failures.jsonl`` (appended with a single write, so concurrent
writers never mix lines) with its class: *transient* (the file system's fault: no space, quota, I/O
errors) or *permanent* (the clip's: a bad video, no face, a non-finite result); a plain resume runs
transient ones again. A later completion supersedes a failure. Each shard writes what it did, and
its exit status, to ``summary-<shard>-of-<N>.json``. Clip folders are real folders inside
``<out>``: a symbolic link on the way is refused, never followed.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pathlib
import time
from typing import Any, Mapping

import numpy as np

from neuface_jax.common.atomic import TMP_SUFFIX, atomic_write_text
from neuface_jax.core.metrics import METRIC_NAMES
from neuface_jax.dataset.layout import CHECKPOINT_DIR, DONE_FILE, FAILURES_FILE, summary_name
from neuface_jax.dataset.manifest import is_safe_clip_id

RECORD_VERSION = 1
#: The per-clip metrics copied into ``done.json`` (and summarized by the report): real videos have no
#: ground truth, so no vertex error.
RECORD_METRICS = tuple(m for m in METRIC_NAMES if m != "vertex_error_mm")


# --------------------------------------------------------------------------- clip folders
def clip_dir(out_dir, clip_id: str) -> pathlib.Path:
    """``<out>/<clip_id>/`` (the id is checked to stay inside ``out``)."""
    if not is_safe_clip_id(clip_id):
        raise ValueError(f"unsafe clip id {clip_id!r} (it must stay inside the output folder)")
    return pathlib.Path(out_dir) / clip_id


def symlink_on_the_way(out_dir, clip_id: str) -> pathlib.Path | None:
    """The first symbolic link among the folders from ``<out>`` down to ``<out>/<clip_id>``."""
    d = pathlib.Path(out_dir)
    for part in clip_id.split("/"):
        d = d / part
        if d.is_symlink():
            return d
    return None


def is_done(out_dir, clip_id: str) -> bool:
    """True when ``<out>/<clip_id>/done.json`` is a valid record and the files it lists have the
    recorded sizes (a record is written only after its files, so this is the completion test); a
    folder reached through a symbolic link is never complete."""
    d = clip_dir(out_dir, clip_id)
    if symlink_on_the_way(out_dir, clip_id) is not None:
        return False
    try:
        rec = json.loads((d / DONE_FILE).read_text())
        if rec.get("clip_id") != clip_id or rec.get("status") != "done":
            return False
        for name, size in rec.get("files", {}).items():
            if (d / name).stat().st_size != int(size):
                return False
        return True
    except (OSError, ValueError, TypeError, AttributeError):
        return False


class OutsideOutputError(ValueError):
    """A clip's folder would be reached through a symbolic link (outputs stay inside ``<out>``)."""


def start_clip(out_dir, clip_id: str) -> pathlib.Path:
    """Creates the clip's folder and removes what a killed run may have left (temporary files, a
    stale record) and any symbolic link in it, so the clip is re-written from scratch, in place.

    Raises:
      OutsideOutputError: a folder on the way is a symbolic link.
    """
    d = clip_dir(out_dir, clip_id)
    link = symlink_on_the_way(out_dir, clip_id)
    if link is None:
        d.mkdir(parents=True, exist_ok=True)
        link = symlink_on_the_way(out_dir, clip_id)  # created meanwhile by someone else
    if link is not None:
        raise OutsideOutputError(f"{link} is a symbolic link; outputs are written only inside the output folder")
    for stale in list(d.glob(f".*{TMP_SUFFIX}")) + [d / DONE_FILE] + [p for p in d.iterdir() if p.is_symlink()]:
        stale.unlink(missing_ok=True)
    return d


def write_done(folder: pathlib.Path, record: Mapping[str, Any]) -> None:
    """The completion record, written atomically and last."""
    atomic_write_text(folder / DONE_FILE, json.dumps(dict(record), indent=1) + "\n")


def done_record(clip_id: str, files: Mapping[str, pathlib.Path], metrics: Mapping[str, Any], *,
                num_frames: int, views, group: Mapping[str, Any], origin: Mapping[str, Any]) -> dict[str, Any]:
    """The ``done.json`` document of a clip whose ``files`` are written."""
    return {
        "version": RECORD_VERSION,
        "clip_id": clip_id,
        "status": "done",
        "files": {p.name: p.stat().st_size for p in files.values() if p.is_file()},
        "metrics": {k: metrics.get(k) for k in RECORD_METRICS if k in metrics},
        "num_frames": num_frames,
        "views": list(views),
        "group": dict(group),
        "finished_at": time.time(),
        **origin,
    }


def completed_clips(out_dir) -> list[dict[str, Any]]:
    """Every completion record under ``out_dir`` (sorted by clip id)."""
    out = pathlib.Path(out_dir)
    records = []
    for path in out.rglob(DONE_FILE):
        if CHECKPOINT_DIR in path.relative_to(out).parts:
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("status") == "done" and "clip_id" in rec:
            records.append(rec)
    return sorted(records, key=lambda r: r["clip_id"])


# --------------------------------------------------------------------------- failures
def _append_line(path: pathlib.Path, record: Mapping[str, Any]) -> None:
    """One JSON line appended with a single write (O_APPEND: lines of concurrent writers never mix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


#: ``errno`` values of failures that are the storage's, not the clip's: re-run on a plain resume.
TRANSIENT_ERRNOS = frozenset(getattr(errno, n) for n in (
    "ENOSPC", "EDQUOT", "EIO", "EAGAIN", "EBUSY", "EINTR", "ENOMEM", "ENFILE", "EMFILE", "ESTALE", "ETIMEDOUT",
    "ECONNRESET", "ECONNABORTED", "ENETDOWN", "ENETUNREACH", "EHOSTUNREACH", "EROFS") if hasattr(errno, n))
TRANSIENT, PERMANENT = "transient", "permanent"


def failure_class(error: BaseException) -> str:
    """``"transient"`` when ``error`` (or an error it was raised from) is an ``OSError`` of
    ``TRANSIENT_ERRNOS``; else ``"permanent"``."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
            return TRANSIENT
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return PERMANENT


def append_failure(out_dir, clip_id: str, stage: str, error: BaseException, origin: Mapping[str, Any]) -> str:
    """Records one clip's failure, with its class, in ``failures.jsonl``; returns the message."""
    msg = str(error) or type(error).__name__
    rec = {"clip_id": clip_id, "stage": stage, "error": type(error).__name__, "class": failure_class(error),
           "message": msg[:2000], "time": time.time(), **origin}
    _append_line(pathlib.Path(out_dir) / FAILURES_FILE, rec)
    return msg


def read_failures(out_dir) -> list[dict[str, Any]]:
    """The lines of ``failures.jsonl`` (a torn last line from a kill is ignored)."""
    path = pathlib.Path(out_dir) / FAILURES_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "clip_id" in rec:
            rows.append(rec)
    return rows


def failed_clips(out_dir) -> dict[str, dict[str, Any]]:
    """Clips whose latest failure is not followed by a completion: ``{clip_id: last failure}``."""
    last: dict[str, dict[str, Any]] = {}
    for rec in read_failures(out_dir):
        last[rec["clip_id"]] = rec
    return {cid: rec for cid, rec in sorted(last.items()) if is_safe_clip_id(cid) and not is_done(out_dir, cid)}


def is_transient(failure: Mapping[str, Any]) -> bool:
    """Whether a ``failures.jsonl`` record is of a transient failure (records without a class, from
    older runs, count as permanent)."""
    return failure.get("class") == TRANSIENT


# --------------------------------------------------------------------------- shard summaries
#: Exit statuses of ``annotate-dataset`` (``RunSummary.exit_code``; 1 and 2 are the command's own:
#: an error before any clip ran, and a usage error).
EXIT_OK, EXIT_SOME_FAILED, EXIT_ALL_FAILED = 0, 3, 4
OUTCOMES = {EXIT_OK: "every clip of the shard is done",
            EXIT_SOME_FAILED: "some clips of the shard failed (this run or before; failures.jsonl)",
            EXIT_ALL_FAILED: "every clip of the shard failed (this run or before; failures.jsonl)"}


@dataclasses.dataclass
class RunSummary:
    """What a run did (also written as ``summary-<shard>-of-<N>.json``, with ``exit_code`` and
    ``outcome``)."""

    shard_id: int
    num_shards: int
    clips_in_shard: int
    skipped_done: int = 0
    skipped_failed: int = 0
    retried_transient: int = 0
    done: int = 0
    failed: int = 0
    groups: int = 0
    resumed_groups: int = 0
    checkpoint_saves: int = 0
    retries: int = 0  #: groups and preparations run again after the worker running them died (Ray engine)
    seconds: float = 0.0
    seconds_by_stage: dict[str, float] = dataclasses.field(default_factory=dict)
    buckets: dict[str, int] = dataclasses.field(default_factory=dict)
    done_ids: list[str] = dataclasses.field(default_factory=list)
    failed_ids: list[str] = dataclasses.field(default_factory=list)

    @property
    def clips_per_hour(self) -> float:
        return 3600.0 * self.done / self.seconds if self.seconds > 0 else float("nan")

    @property
    def exit_code(self) -> int:
        """0: no clip of the shard left failed; 3: some are; 4: all are (none done). Failures
        skipped as recorded before count: a resume that skips them does not make them done."""
        failed = self.failed + self.skipped_failed
        if not failed:
            return EXIT_OK
        return EXIT_ALL_FAILED if self.done + self.skipped_done == 0 else EXIT_SOME_FAILED

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds_by_stage[stage] = self.seconds_by_stage.get(stage, 0.0) + float(seconds)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["clips_per_hour"] = self.clips_per_hour
        d["exit_code"] = self.exit_code
        d["outcome"] = OUTCOMES[self.exit_code]
        return d


def summary_path(out_dir, shard_id: int, num_shards: int) -> pathlib.Path:
    return pathlib.Path(out_dir) / summary_name(shard_id, num_shards)


def read_summaries(out_dir) -> list[dict[str, Any]]:
    """Every shard summary in ``out_dir`` (unreadable ones skipped)."""
    rows = []
    for p in sorted(pathlib.Path(out_dir).glob("summary-*-of-*.json")):
        try:
            rows.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            pass
    return rows


def json_default(x):
    """``json.dumps`` ``default=`` for NumPy scalars and paths."""
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, pathlib.Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


def write_summary(out_dir, summary: RunSummary) -> pathlib.Path:
    path = summary_path(out_dir, summary.shard_id, summary.num_shards)
    atomic_write_text(path, json.dumps(summary.to_dict(), indent=1, default=json_default) + "\n")
    return path
