"""Dataset-scale annotation (``neuface-jax annotate-dataset``): the orchestration.

A run checks its clip ids (``layout``), makes its output folder absolute, writable and its own
(``outdir``: a lease per shard, so a second run of the same clips refuses), takes its shard of the
manifest, skips completed clips and permanently failed ones (transient failures run again), and
then, until every selected clip is done or failed:

1. **Prepares** clips in background worker threads (``annotation.prepare``: decode, MediaPipe or a
   precomputed landmark file, crops), a bounded number ahead of the optimizer.
2. **Packs** prepared clips into groups (``scheduler.Scheduler``: buckets of padded length, K
   clips per device) and **fits** each group at once (``parallel.fit_packed``: the clip axis is
   sharded over the local device mesh; long groups checkpoint mid-optimization, ``checkpoint``).
3. **Writes** each clip's outputs and then its completion record (``records``) in a writer thread
   while the next group optimizes. A kill at any moment leaves every clip either complete or
   without a record (re-done on resume).

A clip that fails (missing or unreadable input, no face, non-finite result, a write error) gets one
line in ``failures.jsonl`` and the run goes on; a group whose optimization raises fails its clips
only. The run ends with ``summary-<shard>-of-<N>.json`` (with the exit status: ``RunSummary.exit_code``)
and the quality report (``report``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import pathlib
import socket
import threading
import time
from typing import Any, Iterable

import jax

from neuface_jax import annotation
from neuface_jax.annotation.write import check_finite_result
from neuface_jax.common.log import ProgressFactory, quiet
from neuface_jax.core import parallel
from neuface_jax.dataset import checkpoint as checkpoint_lib
from neuface_jax.dataset import outdir, records
from neuface_jax.dataset import scheduler as sched_lib
from neuface_jax.dataset.config import DatasetConfig
from neuface_jax.dataset.manifest import ClipEntry, read_manifest
from neuface_jax.dataset.report import write_report

logger = logging.getLogger(__name__)
PROG = "neuface-jax annotate-dataset"
_TICK_SECONDS = 0.5


def prepare_entry(setup, entry: ClipEntry, config: DatasetConfig):
    """One manifest entry decoded, detected and cropped (``annotation.prepare``)."""
    for p in entry.inputs:
        if not pathlib.Path(p).exists():
            raise FileNotFoundError(f"{entry.clip_id}: input {p} does not exist")
    if entry.landmarks is not None and not pathlib.Path(entry.landmarks).is_file():
        raise FileNotFoundError(f"{entry.clip_id}: landmark file {entry.landmarks} does not exist")
    videos: Any = entry.inputs[0] if entry.kind == "frames" else list(entry.inputs)
    pc = dataclasses.replace(config.prepare, fps=entry.fps or config.prepare.fps)
    clip = annotation.prepare(
        setup, videos, pc, view_names=list(entry.view_names) if entry.view_names else None,
        landmarks_file=entry.landmarks, label=entry.clip_id,
    )
    # The original frames are only needed for the overlay video.
    return clip if config.output.write_video else clip.without_images()


def _fmt_s(s: float) -> str:
    if not (s == s) or s == float("inf"):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{(s % 3600) // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def show_progress(bar, summary: records.RunSummary, total: int, t_start: float) -> None:
    """Clips finished, clips/hour and the time left, on ``bar`` (a ``common.log.Progress``)."""
    if bar is None:
        return
    s = summary
    finished = s.done + s.failed
    elapsed = time.perf_counter() - t_start
    rate = 3600.0 * finished / elapsed if elapsed > 0 and finished else float("nan")
    eta = (total - finished) / rate * 3600.0 if rate == rate and rate > 0 else float("nan")
    bar.postfix(f"done={s.done} failed={s.failed} {rate:.0f} clips/h ETA {_fmt_s(eta)}")
    bar.set(finished)


def origin_of(summary: records.RunSummary) -> dict[str, Any]:
    """Who did a clip (in its ``done.json`` and failure lines): host, process and shard."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "shard": f"{summary.shard_id}/{summary.num_shards}"}


class Recorder:
    """Where one process puts what its clips came to: ``failures.jsonl`` and a ``RunSummary``
    (thread-safe: the writer and preparation threads report here too)."""

    def __init__(self, out: pathlib.Path, summary: records.RunSummary):
        self.out, self.summary = out, summary
        self.origin = origin_of(summary)
        self.lock = threading.Lock()

    def timed(self, stage: str, t0: float) -> None:
        with self.lock:
            self.summary.add_seconds(stage, time.perf_counter() - t0)

    def done(self, clip_id: str) -> None:
        with self.lock:
            self.summary.done += 1
            self.summary.done_ids.append(clip_id)

    def failure(self, clip_id: str, stage: str, error: BaseException) -> None:
        msg = records.append_failure(self.out, clip_id, stage, error, self.origin)
        with self.lock:
            self.summary.failed += 1
            self.summary.failed_ids.append(clip_id)
        logger.warning("%s: FAILED %s (%s, %s): %s: %s", PROG, clip_id, stage, records.failure_class(error),
                       type(error).__name__, msg[:300])


def _now(fn, *args) -> None:
    fn(*args)


class GroupWork:
    """The work on clips that every engine runs: preparation, packed fits, writes and records.

    One per process that fits (the local run; each Ray actor), over that process's device mesh.
    """

    def __init__(self, setup, out: pathlib.Path, config: DatasetConfig, mesh, recorder: Recorder):
        self.setup, self.out, self.config, self.mesh, self.recorder = setup, out, config, mesh, recorder
        self.slots = config.clips_per_device * int(mesh.devices.size)
        self.settings = checkpoint_lib.settings_key(setup)
        self.ckpt_root = out / records.CHECKPOINT_DIR

    def prepare(self, entry: ClipEntry):
        t0 = time.perf_counter()
        try:
            return prepare_entry(self.setup, entry, self.config)
        finally:
            self.recorder.timed("prepare", t0)

    def write_clip(self, entry: ClipEntry, clip, result, info: dict, skip_done: bool = False) -> None:
        """Writes one clip's outputs and then its completion record. ``skip_done``: a clip whose
        record exists already (written by an attempt whose worker died after it) is kept as it is."""
        t0 = time.perf_counter()
        cid = entry.clip_id
        rec = self.recorder
        try:
            if not (skip_done and records.is_done(self.out, cid)):
                check_finite_result(cid, result)  # before the clip's folder is started
                folder = records.start_clip(self.out, cid)
                files, doc = annotation.write_outputs(
                    self.setup, clip, result, folder, self.config.output,
                    extra={"dataset": {"clip_id": cid, **info, "meta": dict(entry.meta)}},
                )
                records.write_done(folder, records.done_record(
                    cid, files, doc, num_frames=clip.num_frames, views=clip.view_names, group=info,
                    origin=rec.origin))
        except Exception as e:  # noqa: BLE001 - one clip's failure never stops the run
            rec.failure(cid, "write", e)
            return
        finally:
            rec.timed("write", t0)
        rec.done(cid)

    def _checkpoint_for(self, group: sched_lib.Group) -> checkpoint_lib.GroupCheckpoint | None:
        cfg = self.config
        if not group.checkpoints(cfg.checkpoint_every, cfg.checkpoint_min_frames):
            return None
        ids = group.clip_ids
        gid = group.pinned.group_id if group.pinned else checkpoint_lib.GroupCheckpoint.group_id(ids, self.settings)
        meta = {"clip_ids": ids, "num_frames": group.num_frames, "num_slots": self.slots, "settings": self.settings}
        return checkpoint_lib.GroupCheckpoint(self.ckpt_root, gid, meta, cfg.checkpoint_every)

    def fit(self, group: sched_lib.Group, checkpoint) -> list:
        t0 = time.perf_counter()
        try:
            results = parallel.fit_packed(
                self.setup.optimizer, [c.data for c in group.clips], encoder=self.setup.encoder, mesh=self.mesh,
                num_frames=group.num_frames, num_slots=self.slots, checkpoint=checkpoint,
            )
            return [annotation.refine_result(self.setup, c.data, r) for c, r in zip(group.clips, results)]
        finally:
            self.recorder.timed("fit", t0)

    def run_group(self, group: sched_lib.Group, submit=_now, skip_done: bool = False) -> bool:
        """Fits one group, then hands its clips' writes (and the checkpoint's removal after them)
        to ``submit(fn, *args)`` (default: now). False when the fit failed (its clips are failed)."""
        checkpoint = self._checkpoint_for(group)
        rec = self.recorder
        s = rec.summary
        if group.pinned is not None:
            s.resumed_groups += 1
            logger.info("%s: resuming group %s at epoch %s (%d clips)", PROG, group.pinned.group_id,
                        group.pinned.epochs_done, len(group.entries))
        info = {"bucket_frames": group.num_frames, "group_size": len(group.entries), "slots": self.slots,
                "views": group.num_views}
        s.groups += 1
        s.buckets[group.label] = s.buckets.get(group.label, 0) + 1
        try:
            results = self.fit(group, checkpoint)
        except Exception as e:  # noqa: BLE001 - a group's failure fails its clips only
            for cid in group.clip_ids:
                rec.failure(cid, "fit", e)
            if checkpoint is not None:
                checkpoint.close(delete=False)
            return False
        for entry, clip, res in zip(group.entries, group.clips, results):
            submit(self.write_clip, entry, clip, res, info, skip_done)
        if checkpoint is not None:
            s.checkpoint_saves += checkpoint.saves
            # Deleted only once the members' records exist (a kill before that resumes the group).
            submit(self._drop_checkpoint, checkpoint, group.clip_ids)
        return True

    def _drop_checkpoint(self, checkpoint, clip_ids) -> None:
        checkpoint.close(delete=all(records.is_done(self.out, i) for i in clip_ids))


class _Run:
    """The local engine's loop: preparation threads, this process's fits, a writer thread."""

    def __init__(self, work: GroupWork, config: DatasetConfig):
        self.work = work
        self.pool = concurrent.futures.ThreadPoolExecutor(config.workers, thread_name_prefix="neuface-prepare")
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="neuface-write")
        self.writes: list[concurrent.futures.Future] = []
        self.bar = None
        self.total = 0
        self.t_start = time.perf_counter()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.writer.shutdown(wait=True)
        self.tick()
        if self.bar is not None:
            self.bar.close()

    def tick(self) -> None:
        show_progress(self.bar, self.work.recorder.summary, self.total, self.t_start)

    def _write_later(self, fn, *args) -> None:
        self.writes.append(self.writer.submit(fn, *args))

    def dispatch(self, group: sched_lib.Group) -> None:
        if not self.work.run_group(group, self._write_later):
            self.tick()

    def _collect(self, sched: sched_lib.Scheduler, running: dict) -> None:
        """Waits for at least one preparation and hands the outcomes to the scheduler."""
        finished, _ = concurrent.futures.wait(list(running), return_when=concurrent.futures.FIRST_COMPLETED)
        for f in sorted(finished, key=lambda f: running[f].clip_id):
            entry = running.pop(f)
            try:
                clip = f.result()
            except Exception as e:  # noqa: BLE001 - recorded; the run goes on
                sched.failed(entry)
                self.work.recorder.failure(entry.clip_id, "prepare", e)
                continue
            group = sched.prepared(entry, clip, num_views=clip.num_views, num_frames=clip.num_frames,
                                   image_shape=clip.data.images.shape[2:])
            if group is not None:
                self.dispatch(group)

    def loop(self, sched: sched_lib.Scheduler) -> None:
        """Prepares, packs and fits until every clip is done or failed; waits for the writes."""
        running: dict[concurrent.futures.Future, ClipEntry] = {}
        t_last = time.perf_counter()
        while sched.pending or running:
            for e in sched.to_prepare(len(running)):
                running[self.pool.submit(self.work.prepare, e)] = e
            if running:
                self._collect(sched, running)
            for g in release_groups(sched, self.work.ckpt_root):
                self.dispatch(g)
            group = sched.flush(len(running))
            if group is not None:
                self.dispatch(group)
            if time.perf_counter() - t_last > _TICK_SECONDS:
                self.tick()
                t_last = time.perf_counter()
        for w in self.writes:
            w.result()


def release_groups(sched: sched_lib.Scheduler, ckpt_root: pathlib.Path) -> list[sched_lib.Group]:
    """Resumed groups whose members are all prepared; checkpoints that no longer apply (a member
    failed to prepare) are removed."""
    groups, dropped = sched.release_pinned()
    for gid in dropped:
        checkpoint_lib.remove(ckpt_root, gid)
    return groups


def shard_of_manifest(entries, shard: int, shards: int) -> tuple[dict[str, ClipEntry], list[ClipEntry]]:
    """``({clip_id: entry}`` of the whole manifest (ids checked), this shard's entries``)``."""
    if isinstance(entries, (str, os.PathLike)):
        entries = read_manifest(entries)
    by_id = sched_lib.index_entries(entries)
    return by_id, sched_lib.shard_entries(by_id, shard, shards)


def plan(out: pathlib.Path, summary: records.RunSummary, mine: list[ClipEntry], by_id, *, settings: str,
         slots: int, retry_failed: bool) -> tuple[sched_lib.Selection, list, list]:
    """What this shard runs: the selection, the resumed groups and the ordered clips to prepare
    (the selection's counts go to ``summary``)."""
    ckpt_root = out / records.CHECKPOINT_DIR
    done = {e.clip_id for e in mine if records.is_done(out, e.clip_id)}
    failed = records.failed_clips(out)
    transient = {cid for cid, rec in failed.items() if records.is_transient(rec)}
    sel = sched_lib.select(mine, done, set(failed), retry_failed, transient)
    pending = checkpoint_lib.pending_checkpoints(ckpt_root)
    members = {i for m in pending for i in m.get("clip_ids", []) if i in by_id}
    pinned, finished = sched_lib.match_checkpoints(
        pending, settings=settings, num_slots=slots, todo_ids={e.clip_id for e in sel.todo},
        done_ids={i for i in members if records.is_done(out, i)},
    )
    for gid in finished:  # left by a kill after its members' records were written
        checkpoint_lib.remove(ckpt_root, gid)
    summary.skipped_done, summary.skipped_failed = sel.skipped_done, sel.skipped_failed
    summary.retried_transient = sel.retried_transient
    return sel, pinned, sched_lib.order(sel.todo, pinned)


def log_start(summary: records.RunSummary, sel: sched_lib.Selection, pinned, *, workers: str, k: int,
              retry_failed: bool) -> None:
    """One line: what the shard holds and runs, and on what (``workers``: e.g. "1 device(s)")."""
    retried = "retried" if retry_failed else (
        f"{sel.retried_transient} transient ones retried, the others skipped; --retry_failed re-runs them")
    logger.info(
        "%s: shard %d/%d: %d clips, %d done, %d failed before (%s), %d to run; %s x K=%d%s",
        PROG, summary.shard_id, summary.num_shards, summary.clips_in_shard, sel.skipped_done, sel.failed_before,
        retried, len(sel.todo), workers, k, f"; resuming {len(pinned)} checkpointed group(s)" if pinned else "",
    )


def finish(out: pathlib.Path, summary: records.RunSummary, seconds: float, report: bool) -> None:
    """Writes the shard summary (and the report), and logs the totals."""
    summary.seconds = seconds
    summary.done_ids.sort()
    summary.failed_ids.sort()
    records.write_summary(out, summary)
    logger.info(
        "%s: shard %d/%d: %d done, %d failed, %d already done in %.1fs (%.0f clips/hour; %d group(s): %s)",
        PROG, summary.shard_id, summary.num_shards, summary.done, summary.failed, summary.skipped_done,
        summary.seconds, summary.clips_per_hour, summary.groups, dict(summary.buckets),
    )
    if report:
        write_report(out)


def run(
    entries: Iterable[ClipEntry] | str | os.PathLike,
    out_dir,
    setup,
    config: DatasetConfig = DatasetConfig(),
    *,
    shard_id: int = 0,
    num_shards: int = 1,
    retry_failed: bool = False,
    mesh=None,
    progress: ProgressFactory | None = None,
    report: bool = True,
) -> records.RunSummary:
    """Annotates this shard of a manifest into ``out_dir`` (see the module docstring).

    Args:
      entries: ``ClipEntry`` objects or a manifest path.
      out_dir: output root (``<out>/<clip_id>/``, ``failures.jsonl``, summaries, report); made
        absolute, checked writable and leased for this shard before any work (``outdir``).
      setup: ``annotation.make_setup(...)`` (model, encoder, optimizer; shared by every clip).
      config: what is prepared and written per clip, and the scheduling (``DatasetConfig``).
      shard_id, num_shards: this job's shard (stable hash of the clip id). Under
        ``jax.distributed`` each process further takes its own sub-shard.
      retry_failed: run only the clips recorded in ``failures.jsonl`` and not completed since.
      mesh: the device mesh (default: a 1-D ``("clips",)`` mesh over this process's devices).
      progress: a ``ProgressFactory`` for the clip counter (default: none shown).
      report: write ``report.json`` / ``report.md`` over everything in ``out_dir`` at the end.

    Returns:
      The ``RunSummary`` (also written to ``summary-<shard>-of-<N>.json``).

    Raises:
      ValueError: a bad manifest (unsafe, reserved, nested or duplicate clip ids; bad shards).
      outdir.OutputError: ``out_dir`` cannot be created or written, or another live run holds it
        (``outdir.OutputLockedError``).
    """
    t_run = time.perf_counter()
    shard, shards = sched_lib.process_shard(shard_id, num_shards, jax.process_index(), jax.process_count())
    by_id, mine = shard_of_manifest(entries, shard, shards)
    out = outdir.prepare_output(out_dir)
    if mesh is None:
        mesh = parallel.make_mesh("clips", jax.local_devices())
    summary = records.RunSummary(shard_id=shard, num_shards=shards, clips_in_shard=len(mine))
    with outdir.acquire(out, shard, shards):
        work = GroupWork(setup, out, config, mesh, Recorder(out, summary))
        state = _Run(work, config)
        try:
            sel, pinned, todo = plan(out, summary, mine, by_id, settings=work.settings, slots=work.slots,
                                     retry_failed=retry_failed)
            log_start(summary, sel, pinned, workers=f"{int(mesh.devices.size)} device(s)",
                      k=config.clips_per_device, retry_failed=retry_failed)
            state.total, state.t_start = len(todo), t_run
            state.bar = (progress or quiet)("annotate-dataset", len(todo))
            sched = sched_lib.Scheduler(todo, slots=work.slots, chunk_frames=setup.fit_config.chunk_frames,
                                        bucket_chunks=config.bucket_chunks, prefetch=config.prefetch, pinned=pinned)
            state.loop(sched)
        finally:
            state.close()
        finish(out, summary, time.perf_counter() - t_run, report)
    return summary
