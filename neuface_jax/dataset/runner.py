"""Dataset-scale annotation: ``neuface-jax annotate-dataset``.

Clips never talk to each other, so the unit of work is a clip and the unit of resumption is a clip's
output folder ``<out>/<clip_id>/``. A run:

1. **Shards** the manifest (``manifest.read_manifest``, sorted by clip id) by a stable hash
   (``zlib.crc32(clip_id) % num_shards``; with ``--distributed`` each JAX process takes its own
   sub-shard ``shard_id * P + process_index`` of ``num_shards * P``).
2. **Skips** clips whose completion record ``done.json`` exists and whose files are intact, and clips
   recorded in ``failures.jsonl`` (``retry_failed=True`` runs *only* those).
3. **Prepares** clips in background worker threads (``annotate.prepare``: decode, MediaPipe or a
   precomputed landmark file, crops), a bounded number ahead of the optimizer, so the step never waits.
4. **Buckets** prepared clips by view count and length: a clip of T frames is padded to the smallest
   bucket of ``bucket_chunks`` chunks holding it, and K = ``clips_per_device`` clips per device are
   packed in one group (``parallel.fit_packed``: vmap over stacked per-clip encoder weights, clip axis
   sharded over the local device mesh; short groups are padded with masked dummy clips). One compiled
   step per (bucket, views): a dataset of a million clips compiles a handful of times.
5. **Writes** each clip's ``params.npz`` and ``metrics.json`` atomically (temporary file, fsync,
   rename; ``annotate.write_outputs``) in a writer thread while the next group optimizes, then its
   completion record ``done.json`` (also atomic) last. A kill at any moment leaves every clip either
   complete (with its record) or without a record (re-done on resume); stale temporary files are
   removed before a clip is re-written.
6. **Checkpoints** long groups (padded length ≥ ``checkpoint_min_frames``) every
   ``checkpoint_every`` epochs with orbax under ``<out>/_checkpoints/<group>/``: a pre-empted group
   resumes mid-optimization with the same members, the same per-epoch keys and so the same result.
7. **Isolates faults**: a clip that fails (missing or unreadable input, no face, non-finite result,
   a write error) gets one line in ``failures.jsonl`` (clip id, stage, error type, message) and the run
   goes on. A group whose optimization raises fails its clips only.
8. **Reports**: a progress bar with clips/hour and ETA, ``summary-<shard>-of-<N>.json`` (done, failed,
   skipped, throughput, time per stage) and a dataset quality report (``write_report``:
   ``report.json`` and ``report.md`` with NME / jitter / MSI / CVD distributions and the worst clips).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from neuface_jax.dataset import manifest as manifest_lib
from neuface_jax.common.atomic import TMP_SUFFIX, atomic_write_text

DONE_FILE = "done.json"
FAILURES_FILE = "failures.jsonl"
CHECKPOINT_DIR = "_checkpoints"
RECORD_VERSION = 1

__all__ = [
    "CHECKPOINT_DIR",
    "DONE_FILE",
    "FAILURES_FILE",
    "DatasetConfig",
    "GroupCheckpoint",
    "RunSummary",
    "bucket_frames",
    "clip_dir",
    "completed_clips",
    "failed_clips",
    "init_distributed",
    "is_done",
    "read_failures",
    "run",
    "write_report",
]


# --------------------------------------------------------------------------- settings
@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """How a dataset run schedules its work (the optimizer settings live in ``annotate.make_setup``).

    Attributes:
      clips_per_device: K, clips packed per device in one optimization group.
      bucket_chunks: padded lengths in chunks; a clip goes to the smallest bucket holding it (longer
        clips: the next multiple of the largest bucket).
      workers: preprocessing threads (each runs decoding + one MediaPipe landmarker per view).
      prefetch: clips prepared ahead of the optimizer (default: two groups).
      checkpoint_every: epochs between orbax checkpoints of a long group (0 = never).
      checkpoint_min_frames: only groups padded to at least this many frames checkpoint.
      write_video, write_objs: per-clip overlay.mp4 / OBJs (off by default for datasets).
      stride, fps, strict, crop_smoothing, smoothing_window: as in ``annotate.prepare``.
      use_cache, cache_dir: the landmark cache.
    """

    clips_per_device: int = 1
    bucket_chunks: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    workers: int = 2
    prefetch: int | None = None
    checkpoint_every: int = 10
    checkpoint_min_frames: int = 200
    write_video: bool = False
    write_objs: bool = False
    stride: int = 1
    fps: float = 25.0
    strict: bool = False
    crop_smoothing: str | None = "moving_average"
    smoothing_window: int = 5
    use_cache: bool = True
    cache_dir: str | None = None

    def __post_init__(self):
        if self.clips_per_device < 1:
            raise ValueError(f"clips_per_device must be >= 1, got {self.clips_per_device}")
        if not self.bucket_chunks or any(int(b) < 1 for b in self.bucket_chunks):
            raise ValueError(f"bucket_chunks must be positive chunk counts, got {self.bucket_chunks}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")


def bucket_frames(num_frames: int, chunk_frames: int, bucket_chunks: Sequence[int]) -> int:
    """Padded length (frames) of a clip of ``num_frames``: the smallest bucket that holds it."""
    chunks = max(1, math.ceil(num_frames / chunk_frames))
    buckets = sorted(int(b) for b in bucket_chunks)
    for b in buckets:
        if chunks <= b:
            return b * chunk_frames
    top = buckets[-1]
    return math.ceil(chunks / top) * top * chunk_frames


# --------------------------------------------------------------------------- records
def clip_dir(out_dir, clip_id: str) -> pathlib.Path:
    """``<out>/<clip_id>/`` (the id is checked to stay inside ``out``)."""
    if not manifest_lib.is_safe_clip_id(clip_id):
        raise ValueError(f"unsafe clip id {clip_id!r} (it must stay inside the output folder)")
    return pathlib.Path(out_dir) / clip_id


def is_done(out_dir, clip_id: str) -> bool:
    """True when ``<out>/<clip_id>/done.json`` is a valid record and the files it lists have the
    recorded sizes (a record is written only after its files, so this is the completion test)."""
    d = clip_dir(out_dir, clip_id)
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


def _append_line(path: pathlib.Path, record: Mapping[str, Any]) -> None:
    """One JSON line appended with a single write (O_APPEND: lines of concurrent writers never mix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


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
    return {cid: rec for cid, rec in sorted(last.items()) if not is_done(out_dir, cid)}


# --------------------------------------------------------------------------- checkpoints
class GroupCheckpoint:
    """Orbax checkpoint of one packed group's stacked optimizer states (``parallel.PackedCheckpoint``).

    ``<out>/_checkpoints/<group_id>/`` holds the orbax steps (one kept) and ``group.json`` (members,
    shapes, settings, epochs done). The states are saved as a flat ``{index: array}`` dict of the
    pytree's leaves and restored into the caller's template (same tree, same sharding).
    """

    def __init__(self, root: pathlib.Path, group_id: str, meta: Mapping[str, Any], every: int):
        self.dir = pathlib.Path(root) / group_id
        self.group_id = group_id
        self.meta = dict(meta)
        self.every = int(every)
        self.saves = 0
        self._manager = None

    @staticmethod
    def group_id(clip_ids: Sequence[str], settings: str) -> str:
        h = hashlib.sha256(("\n".join(clip_ids) + "\n" + settings).encode()).hexdigest()
        return h[:20]

    def _mgr(self):
        import orbax.checkpoint as ocp

        if self._manager is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._manager = ocp.CheckpointManager(
                self.dir / "state", options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
            )
        return self._manager

    @staticmethod
    def _flat(states) -> dict[str, Any]:
        import jax

        return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(states))}

    def save(self, epochs_done: int, states) -> None:
        import orbax.checkpoint as ocp

        mgr = self._mgr()
        mgr.save(int(epochs_done), args=ocp.args.StandardSave(self._flat(states)))
        mgr.wait_until_finished()
        atomic_write_text(self.dir / "group.json", json.dumps({**self.meta, "epochs_done": int(epochs_done)}, indent=1))
        self.saves += 1

    def restore(self, template):
        import jax
        import orbax.checkpoint as ocp

        if not (self.dir / "group.json").is_file():
            return None
        mgr = self._mgr()
        step = mgr.latest_step()
        if step is None:
            return None
        flat = mgr.restore(step, args=ocp.args.StandardRestore(self._flat(template)))
        leaves = [flat[f"{i:05d}"] for i in range(len(flat))]
        return int(step), jax.tree.unflatten(jax.tree.structure(template), leaves)

    def close(self, delete: bool = False) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None
        if delete:
            shutil.rmtree(self.dir, ignore_errors=True)


def _pending_checkpoints(root: pathlib.Path) -> list[dict[str, Any]]:
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        try:
            meta = json.loads((d / "group.json").read_text())
        except (OSError, ValueError):
            continue
        meta["group_id"] = d.name
        out.append(meta)
    return out


# --------------------------------------------------------------------------- distributed
def init_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> tuple[int, int]:
    """``jax.distributed.initialize`` (arguments None = auto-detected on Cloud TPU, Slurm, Kubernetes).

    Returns ``(process_index, process_count)``.
    """
    import jax

    kw = {}
    if coordinator_address:
        kw["coordinator_address"] = coordinator_address
    if num_processes is not None:
        kw["num_processes"] = int(num_processes)
    if process_id is not None:
        kw["process_id"] = int(process_id)
    jax.distributed.initialize(**kw)
    return jax.process_index(), jax.process_count()


# --------------------------------------------------------------------------- the run
@dataclasses.dataclass
class RunSummary:
    """What a run did (also written as ``summary-<shard>-of-<N>.json``)."""

    shard_id: int
    num_shards: int
    clips_in_shard: int
    skipped_done: int = 0
    skipped_failed: int = 0
    done: int = 0
    failed: int = 0
    groups: int = 0
    resumed_groups: int = 0
    checkpoint_saves: int = 0
    seconds: float = 0.0
    seconds_by_stage: dict[str, float] = dataclasses.field(default_factory=dict)
    buckets: dict[str, int] = dataclasses.field(default_factory=dict)
    done_ids: list[str] = dataclasses.field(default_factory=list)
    failed_ids: list[str] = dataclasses.field(default_factory=list)

    @property
    def clips_per_hour(self) -> float:
        return 3600.0 * self.done / self.seconds if self.seconds > 0 else float("nan")

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds_by_stage[stage] = self.seconds_by_stage.get(stage, 0.0) + float(seconds)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["clips_per_hour"] = self.clips_per_hour
        return d


class _Failure(Exception):
    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"{stage}: {type(error).__name__}: {error}")
        self.stage = stage
        self.error = error


class _Runner:
    def __init__(self, setup, out_dir, config: DatasetConfig, *, shard_id, num_shards, mesh, progress, log):
        self.setup = setup
        self.out = pathlib.Path(out_dir)
        self.config = config
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.mesh = mesh
        self.progress = progress
        self.say = log or (lambda s: None)
        self.n_dev = int(mesh.devices.size)
        self.slots = config.clips_per_device * self.n_dev
        self.chunk = setup.fit_config.chunk_frames
        self.host = socket.gethostname()
        self.lock = threading.Lock()
        self.settings = self._settings_key()

    def _settings_key(self) -> str:
        s = self.setup
        doc = {
            "fit": {k: repr(v) for k, v in dataclasses.asdict(s.fit_config).items()},
            "encoder": s.encoder_label,
            "encoder_config": s.encoder_config.to_dict(),
            "model": s.face_setup.model_label,
            "landmark_set": s.face_setup.landmark_set,
            "contour": s.face_setup.contour,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    # ---------------------------------------------------------------- records
    def record_failure(self, summary: RunSummary, clip_id: str, stage: str, error: BaseException) -> None:
        msg = str(error) or type(error).__name__
        rec = {
            "clip_id": clip_id, "stage": stage, "error": type(error).__name__, "message": msg[:2000],
            "time": time.time(), "host": self.host, "pid": os.getpid(), "shard": f"{self.shard_id}/{self.num_shards}",
        }
        _append_line(self.out / FAILURES_FILE, rec)
        with self.lock:
            summary.failed += 1
            summary.failed_ids.append(clip_id)
        self.say(f"neuface-jax annotate-dataset: FAILED {clip_id} ({stage}): {type(error).__name__}: {msg[:300]}")

    # ---------------------------------------------------------------- stages
    def prepare(self, entry: manifest_lib.ClipEntry):
        from neuface_jax.annotation import pipeline as annotate_lib

        cfg = self.config
        for p in entry.inputs:
            if not pathlib.Path(p).exists():
                raise FileNotFoundError(f"{entry.clip_id}: input {p} does not exist")
        if entry.landmarks is not None and not pathlib.Path(entry.landmarks).is_file():
            raise FileNotFoundError(f"{entry.clip_id}: landmark file {entry.landmarks} does not exist")
        videos: Any = list(entry.inputs)
        view_names = list(entry.view_names) if entry.view_names else None
        if entry.kind == "frames":
            videos = entry.inputs[0]
        clip = annotate_lib.prepare(
            self.setup, videos, view_names=view_names, stride=cfg.stride, fps=entry.fps or cfg.fps,
            strict=cfg.strict, crop_smoothing=cfg.crop_smoothing, smoothing_window=cfg.smoothing_window,
            landmarks_file=entry.landmarks, cache_dir=cfg.cache_dir, use_cache=cfg.use_cache, label=entry.clip_id,
            progress=False, log=None,
        )
        if not cfg.write_video:
            clip.images = None  # original frames are only needed for the overlay video
        return clip

    def finish(self, summary: RunSummary, entry, clip, result, group_info: dict) -> None:
        """Writes one clip's outputs and then its completion record (in the writer thread)."""
        from neuface_jax.annotation import pipeline as annotate_lib

        t0 = time.perf_counter()
        cid = entry.clip_id
        try:
            arrays = [result.shape, result.expression, result.pose, result.cam]
            bad = [n for n, a in zip(("shape", "expression", "pose", "cam"), arrays) if not np.all(np.isfinite(a))]
            if bad:
                raise FloatingPointError(f"{cid}: non-finite fitted {', '.join(bad)}")
            d = clip_dir(self.out, cid)
            d.mkdir(parents=True, exist_ok=True)
            for stale in list(d.glob(f".*{TMP_SUFFIX}")) + [d / DONE_FILE]:
                stale.unlink(missing_ok=True)  # leftovers of a killed run
            files, doc = annotate_lib.write_outputs(
                self.setup, clip, result, d, write_video=self.config.write_video, write_objs=self.config.write_objs,
                progress=False, log=None, extra={"dataset": {"clip_id": cid, **group_info, "meta": dict(entry.meta)}},
            )
            record = {
                "version": RECORD_VERSION,
                "clip_id": cid,
                "status": "done",
                "files": {p.name: p.stat().st_size for p in files.values() if p.is_file()},
                "metrics": {k: doc.get(k) for k in ("nme_percent", "msi_landmarks", "msi_vertices", "jitter_mm", "cvd_mm") if k in doc},
                "num_frames": clip.num_frames,
                "views": list(clip.view_names),
                "group": group_info,
                "finished_at": time.time(),
                "host": self.host,
                "pid": os.getpid(),
                "shard": f"{self.shard_id}/{self.num_shards}",
            }
            atomic_write_text(d / DONE_FILE, json.dumps(record, indent=1) + "\n")
        except Exception as e:  # noqa: BLE001 - one clip's failure never stops the run
            self.record_failure(summary, cid, "write", e)
            return
        finally:
            with self.lock:
                summary.add_seconds("write", time.perf_counter() - t0)
        with self.lock:
            summary.done += 1
            summary.done_ids.append(cid)

    def fit_group(self, summary: RunSummary, members, t_bucket: int, checkpoint: GroupCheckpoint | None):
        from neuface_jax.core import parallel

        t0 = time.perf_counter()
        try:
            results = parallel.fit_packed(
                self.setup.optimizer, [c.data for _, c in members], encoder=self.setup.encoder, mesh=self.mesh,
                num_frames=t_bucket, num_slots=self.slots, checkpoint=checkpoint,
            )
        finally:
            summary.add_seconds("fit", time.perf_counter() - t0)
        return results


def _entries_by_id(entries) -> dict[str, manifest_lib.ClipEntry]:
    by_id = {}
    for e in entries:
        if e.clip_id in by_id:
            raise ValueError(f"clip id {e.clip_id!r} appears twice in the manifest")
        by_id[e.clip_id] = e
    return by_id


def run(
    entries: Iterable[manifest_lib.ClipEntry] | str | os.PathLike,
    out_dir,
    setup,
    config: DatasetConfig = DatasetConfig(),
    *,
    shard_id: int = 0,
    num_shards: int = 1,
    retry_failed: bool = False,
    mesh=None,
    progress=True,
    log: Callable[[str], None] | None = print,
    report: bool = True,
) -> RunSummary:
    """Annotates this shard of a manifest into ``out_dir`` (see the module docstring).

    Args:
      entries: ``ClipEntry`` objects or a manifest path.
      out_dir: output root (``<out>/<clip_id>/``, ``failures.jsonl``, summaries, report).
      setup: ``annotate.make_setup(...)`` (model, encoder, optimizer; shared by every clip).
      config: scheduling settings (``DatasetConfig``).
      shard_id, num_shards: this job's shard (stable hash of the clip id). Under
        ``jax.distributed`` each process further takes its own sub-shard.
      retry_failed: run only the clips recorded in ``failures.jsonl`` and not completed since.
      mesh: the device mesh (default: a 1-D ``("clips",)`` mesh over this process's devices).
      progress: a tqdm bar (terminal only), False, or a factory ``(desc, total) -> bar``.
      log: where messages go (None = silent).
      report: write ``report.json`` / ``report.md`` over everything in ``out_dir`` at the end.

    Returns:
      The ``RunSummary`` (also written to ``summary-<shard>-of-<N>.json``).
    """
    import jax

    from neuface_jax.core import parallel

    t_run = time.perf_counter()
    say = log or (lambda s: None)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} is not in 0..{num_shards - 1}")
    if isinstance(entries, (str, os.PathLike)):
        entries = manifest_lib.read_manifest(entries)
    by_id = _entries_by_id(entries)
    p_idx, p_count = jax.process_index(), jax.process_count()
    eff_shard, eff_num = shard_id * p_count + p_idx, num_shards * p_count
    mine = manifest_lib.select_shard(sorted(by_id.values(), key=lambda e: e.clip_id), eff_shard, eff_num)
    if mesh is None:
        mesh = parallel.make_mesh("clips", jax.local_devices())
    runner = _Runner(setup, out, config, shard_id=eff_shard, num_shards=eff_num, mesh=mesh, progress=progress, log=log)
    summary = RunSummary(shard_id=eff_shard, num_shards=eff_num, clips_in_shard=len(mine))

    failed_before = failed_clips(out)
    todo: list[manifest_lib.ClipEntry] = []
    for e in mine:
        if is_done(out, e.clip_id):
            summary.skipped_done += 1
        elif e.clip_id in failed_before and not retry_failed:
            summary.skipped_failed += 1
        elif retry_failed and e.clip_id not in failed_before:
            continue
        else:
            todo.append(e)
    todo_ids = {e.clip_id for e in todo}

    # Groups pre-empted mid-optimization: resume them with the same members.
    ckpt_root = out / CHECKPOINT_DIR
    pinned: list[dict[str, Any]] = []
    for meta in _pending_checkpoints(ckpt_root):
        ids = meta.get("clip_ids", [])
        ok = (
            meta.get("settings") == runner.settings and meta.get("num_slots") == runner.slots
            and ids and all(i in todo_ids for i in ids)
        )
        if ok:
            pinned.append(meta)
        elif ids and all(i in by_id for i in ids) and all(is_done(out, i) for i in ids):
            shutil.rmtree(ckpt_root / meta["group_id"], ignore_errors=True)  # finished, left by a kill
    pinned_of = {cid: m["group_id"] for m in pinned for cid in m["clip_ids"]}
    # Pinned clips first, then by length (similar lengths share buckets), then by id.
    todo.sort(key=lambda e: (e.clip_id not in pinned_of, e.num_frames or 0, e.clip_id))
    n_failed = sum(1 for e in mine if e.clip_id in failed_before)
    say(
        f"neuface-jax annotate-dataset: shard {eff_shard}/{eff_num}: {len(mine)} clips, {summary.skipped_done} done, "
        f"{n_failed} failed before ({'retried' if retry_failed else 'skipped; --retry_failed re-runs them'}), "
        f"{len(todo)} to run; {runner.n_dev} device(s) x K={config.clips_per_device}"
        + (f"; resuming {len(pinned)} checkpointed group(s)" if pinned else "")
    )

    bar = _make_bar(progress, len(todo))
    prefetch = config.prefetch or 2 * runner.slots
    pool = concurrent.futures.ThreadPoolExecutor(config.workers, thread_name_prefix="neuface-prepare")
    writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="neuface-write")
    writes: list[concurrent.futures.Future] = []
    queue = collections.deque(todo)
    running: dict[concurrent.futures.Future, manifest_lib.ClipEntry] = {}
    buckets: dict[tuple, list] = collections.OrderedDict()
    pinned_ready: dict[str, list] = collections.defaultdict(list)
    waiting = 0
    unprepared = {e.clip_id for e in todo}  # queued or being prepared: what a pinned group waits for
    t_last = time.perf_counter()

    def timed_prepare(entry):
        t0 = time.perf_counter()
        try:
            return runner.prepare(entry)
        finally:
            with runner.lock:
                summary.add_seconds("prepare", time.perf_counter() - t0)

    def tick():
        if bar is None:
            return
        finished = summary.done + summary.failed
        bar.n = finished
        elapsed = time.perf_counter() - t_run
        rate = 3600.0 * finished / elapsed if elapsed > 0 and finished else float("nan")
        left = len(todo) - finished
        eta = left / rate * 3600.0 if rate == rate and rate > 0 else float("nan")
        bar.set_postfix_str(
            f"done={summary.done} failed={summary.failed} {rate:.0f} clips/h ETA {_fmt_s(eta)}", refresh=False
        )
        bar.refresh()

    def dispatch(members, t_bucket, pinned_meta=None):
        nonlocal waiting
        waiting -= len(members)
        ids = [e.clip_id for e, _ in members]
        checkpoint = None
        if config.checkpoint_every > 0 and (pinned_meta is not None or t_bucket >= config.checkpoint_min_frames):
            gid = pinned_meta["group_id"] if pinned_meta else GroupCheckpoint.group_id(ids, runner.settings)
            meta = {"clip_ids": ids, "num_frames": t_bucket, "num_slots": runner.slots, "settings": runner.settings}
            checkpoint = GroupCheckpoint(ckpt_root, gid, meta, config.checkpoint_every)
        if pinned_meta is not None:
            summary.resumed_groups += 1
            say(f"neuface-jax annotate-dataset: resuming group {pinned_meta['group_id']} at epoch "
                f"{pinned_meta.get('epochs_done')} ({len(ids)} clips)")
        views = members[0][1].num_views
        info = {"bucket_frames": t_bucket, "group_size": len(members), "slots": runner.slots, "views": views}
        summary.groups += 1
        bkey = f"{views}v x {t_bucket}f"
        summary.buckets[bkey] = summary.buckets.get(bkey, 0) + 1
        try:
            results = runner.fit_group(summary, members, t_bucket, checkpoint)
        except Exception as e:  # noqa: BLE001 - a group's failure fails its clips only
            for entry, _ in members:
                runner.record_failure(summary, entry.clip_id, "fit", e)
            if checkpoint is not None:
                checkpoint.close(delete=False)
            tick()
            return
        for (entry, clip), res in zip(members, results):
            writes.append(writer.submit(runner.finish, summary, entry, clip, res, info))
        if checkpoint is not None:
            summary.checkpoint_saves += checkpoint.saves
            # Deleted only once the members' records exist (a kill before that resumes the group).
            ckpt = checkpoint

            def drop_checkpoint():
                ckpt.close(delete=all(is_done(out, i) for i in ids))

            writes.append(writer.submit(drop_checkpoint))

    def flush_fullest():
        key = max(buckets, key=lambda k: len(buckets[k]))
        dispatch(buckets.pop(key), key[1])

    try:
        while queue or running or buckets or pinned_ready:
            # Keep the workers busy, never holding more than `prefetch` clips ahead.
            while queue and len(running) + waiting < prefetch:
                e = queue.popleft()
                running[pool.submit(timed_prepare, e)] = e
            if running:
                done_f, _ = concurrent.futures.wait(list(running), return_when=concurrent.futures.FIRST_COMPLETED)
                for f in sorted(done_f, key=lambda f: running[f].clip_id):
                    entry = running.pop(f)
                    unprepared.discard(entry.clip_id)
                    try:
                        clip = f.result()
                    except Exception as e:  # noqa: BLE001
                        runner.record_failure(summary, entry.clip_id, "prepare", e)
                        continue
                    waiting += 1
                    gid = pinned_of.get(entry.clip_id)
                    if gid is not None:
                        pinned_ready[gid].append((entry, clip))
                        continue
                    t_bucket = bucket_frames(clip.num_frames, runner.chunk, config.bucket_chunks)
                    key = (clip.num_views, t_bucket, tuple(clip.data.images.shape[2:]))
                    buckets.setdefault(key, []).append((entry, clip))
                    if len(buckets[key]) >= runner.slots:
                        dispatch(buckets.pop(key), t_bucket)
            # Pinned groups go as soon as all their (surviving) members are prepared.
            for meta in list(pinned):
                gid = meta["group_id"]
                if any(i in unprepared for i in meta["clip_ids"]):
                    continue
                pinned.remove(meta)
                members = sorted(pinned_ready.pop(gid, []), key=lambda m: meta["clip_ids"].index(m[0].clip_id))
                if len(members) == len(meta["clip_ids"]):
                    dispatch(members, int(meta["num_frames"]), meta)
                else:  # a member failed to prepare: the checkpoint no longer applies
                    shutil.rmtree(ckpt_root / gid, ignore_errors=True)
                    for m in members:
                        waiting -= 1
                        queue.appendleft(m[0])
                        unprepared.add(m[0].clip_id)
                        pinned_of.pop(m[0].clip_id, None)
            # Nothing is being prepared and nothing more can start (queue empty or look-ahead full):
            # the partial buckets will not fill; run the fullest.
            if buckets and not running and (not queue or waiting >= prefetch):
                flush_fullest()
            if time.perf_counter() - t_last > 0.5:
                tick()
                t_last = time.perf_counter()
        for w in writes:
            w.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        tick()
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - t_run
    summary.done_ids.sort()
    summary.failed_ids.sort()
    name = f"summary-{eff_shard:05d}-of-{eff_num:05d}.json"
    atomic_write_text(out / name, json.dumps(summary.to_dict(), indent=1, default=_json_default) + "\n")
    say(
        f"neuface-jax annotate-dataset: shard {eff_shard}/{eff_num}: {summary.done} done, {summary.failed} failed, "
        f"{summary.skipped_done} already done in {summary.seconds:.1f}s ({summary.clips_per_hour:.0f} clips/hour; "
        f"{summary.groups} group(s): {dict(summary.buckets)})"
    )
    if report:
        write_report(out)
    return summary


def _make_bar(progress, total):
    if not progress:
        return None
    if callable(progress):
        return progress("annotate-dataset", total)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="annotate-dataset", unit="clip", dynamic_ncols=True, disable=None, mininterval=0.5)


def _fmt_s(s: float) -> str:
    if not (s == s) or s == float("inf"):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, pathlib.Path):
        return str(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


# --------------------------------------------------------------------------- quality report
_REPORT_METRICS = ("nme_percent", "jitter_mm", "msi_vertices", "msi_landmarks", "cvd_mm")


def _distribution(values: list[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if v.size == 0:
        return {"count": 0}
    qs = np.percentile(v, [5, 25, 50, 75, 95])
    counts, edges = np.histogram(v, bins=min(10, max(1, v.size)))
    return {
        "count": int(v.size), "mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
        "p5": float(qs[0]), "p25": float(qs[1]), "median": float(qs[2]), "p75": float(qs[3]), "p95": float(qs[4]),
        "max": float(v.max()), "histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
    }


def write_report(out_dir, *, worst: int = 10) -> dict[str, Any]:
    """The dataset quality report over every completed clip in ``out_dir``: ``report.json`` and
    ``report.md`` (distributions of NME, jitter, MSI and CVD; the worst clips by NME and by jitter;
    failures by stage and error; throughput of the shard summaries)."""
    out = pathlib.Path(out_dir)
    records = completed_clips(out)
    failures = failed_clips(out)
    dist = {m: _distribution([r.get("metrics", {}).get(m) for r in records]) for m in _REPORT_METRICS}

    def worst_by(metric):
        rows = [(r["metrics"][metric], r["clip_id"]) for r in records
                if r.get("metrics", {}).get(metric) is not None and np.isfinite(r["metrics"][metric])]
        rows.sort(reverse=True)
        return [{"clip_id": c, metric: float(v)} for v, c in rows[:worst]]

    by_reason = collections.Counter(f"{r.get('stage')}: {r.get('error')}" for r in failures.values())
    summaries = []
    for p in sorted(out.glob("summary-*-of-*.json")):
        try:
            summaries.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            pass
    frames = sum(int(r.get("num_frames") or 0) for r in records)
    doc = {
        "out_dir": str(out),
        "completed": len(records),
        "failed": len(failures),
        "frames": frames,
        "metrics": dist,
        "worst_nme": worst_by("nme_percent"),
        "worst_jitter": worst_by("jitter_mm"),
        "failures_by_reason": dict(by_reason.most_common()),
        "failures": [{"clip_id": c, "stage": r.get("stage"), "error": r.get("error"), "message": r.get("message")}
                     for c, r in failures.items()][:100],
        "shards": [{k: s.get(k) for k in ("shard_id", "num_shards", "done", "failed", "skipped_done", "seconds",
                                          "clips_per_hour", "groups")} for s in summaries],
        "generated_at": time.time(),
    }
    atomic_write_text(out / "report.json", json.dumps(doc, indent=1, default=_json_default) + "\n")
    atomic_write_text(out / "report.md", _report_markdown(doc))
    return doc


def _report_markdown(doc: Mapping[str, Any]) -> str:
    lines = [
        "# Dataset annotation report", "",
        f"Output: `{doc['out_dir']}`. Completed clips: **{doc['completed']}** ({doc['frames']} frames); "
        f"failed: **{doc['failed']}**.", "",
        "## Metrics over completed clips", "",
        "| metric | count | mean | median | p5 | p95 | max |", "|---|---|---|---|---|---|---|",
    ]
    for m, d in doc["metrics"].items():
        if d.get("count"):
            lines.append(
                f"| {m} | {d['count']} | {d['mean']:.4g} | {d['median']:.4g} | {d['p5']:.4g} | {d['p95']:.4g} | {d['max']:.4g} |"
            )
        else:
            lines.append(f"| {m} | 0 | | | | | |")
    for title, key, metric in (("Worst clips by NME", "worst_nme", "nme_percent"),
                               ("Worst clips by jitter", "worst_jitter", "jitter_mm")):
        lines += ["", f"## {title}", "", f"| clip | {metric} |", "|---|---|"]
        lines += [f"| `{r['clip_id']}` | {r[metric]:.4g} |" for r in doc[key]]
    lines += ["", "## Failures", ""]
    if doc["failures_by_reason"]:
        lines += ["| stage: error | clips |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in doc["failures_by_reason"].items()]
        lines += [""] + [f"- `{f['clip_id']}` ({f['stage']}): {str(f['message'])[:200]}" for f in doc["failures"]]
    else:
        lines.append("None.")
    if doc["shards"]:
        lines += ["", "## Shards", "", "| shard | done | failed | skipped (done) | seconds | clips/hour |",
                  "|---|---|---|---|---|---|"]
        for s in doc["shards"]:
            cph = s.get("clips_per_hour")
            lines.append(
                f"| {s.get('shard_id')}/{s.get('num_shards')} | {s.get('done')} | {s.get('failed')} | "
                f"{s.get('skipped_done')} | {float(s.get('seconds') or 0):.1f} | "
                f"{'' if cph is None else f'{float(cph):.0f}'} |"
            )
    return "\n".join(lines) + "\n"
