"""Dataset annotation on a Ray cluster (``annotate-dataset --engine ray``): the local engine's work, on actors.

The driver (the calling process) does what the local engine does around the work: the output
folder's checks and lease, the selection of clips, resumed groups, the pure scheduler (buckets of
padded length, K clips per device), progress, the shard summary and the report. The work itself
runs in two kinds of Ray actors, through the local engine's own functions (``runner``):

- **preparation actors** (``--workers`` of them, CPU only): decode, landmarks, crops
  (``runner.prepare_entry``); a prepared clip stays in Ray's object store until its group is fitted.
- **fitting actors** (``--ray_actors``; default one per GPU of the cluster, else one): each fits the
  groups it is sent on its own devices (``runner.GroupWork``: one GPU each by default, with
  ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so several share a machine) and writes their clips'
  outputs and records into the output folder.

An actor that dies (killed, out of memory, its node gone) is restarted by Ray. A preparation it
held is retried by Ray; a group it held is sent again by the driver (``--ray_max_retries`` times,
then its clips fail), counted in the summary's ``retries``; a group sent again keeps the clips an
earlier attempt completed. The output folder contract is the local engine's, so either engine
resumes the other's run and ``neuface-jax report`` reads both; every node must see the output
folder at the same path (a shared file system, as for Slurm arrays).

Ray is an optional dependency (``pip install "neuface-jax[ray]"``), imported when a run starts.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pickle
import socket
import time
from typing import Any, Iterable

import jax

from neuface_jax.common.log import ProgressFactory, quiet
from neuface_jax.common.settings import setting
from neuface_jax.core import parallel
from neuface_jax.dataset import outdir, records, runner
from neuface_jax.dataset import scheduler as sched_lib
from neuface_jax.dataset.config import DatasetConfig
from neuface_jax.dataset.manifest import ClipEntry

logger = logging.getLogger(__name__)
PROG = runner.PROG
ENGINES = ("local", "ray")
#: Groups queued on one fitting actor at a time (the next is there when one ends).
_QUEUED_PER_ACTOR = 2
_TICK_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    """Where a dataset run's work runs: this process (``local``) or actors on a Ray cluster."""

    engine: str = setting("local", "Where the work runs: local (this process's devices) or ray (actors on a Ray "
                          "cluster; pip install 'neuface-jax[ray]'; --workers is then the preparation actors).",
                          choices=ENGINES)
    ray_address: str | None = setting(None, "With --engine=ray: the cluster to join (auto, HOST:PORT or "
                                      "ray://HOST:PORT; default: a one-node cluster on this machine for the run).")
    ray_actors: int | None = setting(None, "With --engine=ray: fitting actors (default: one per GPU of the "
                                     "cluster, else one).")
    ray_gpus_per_actor: float | None = setting(None, "With --engine=ray: GPUs per fitting actor (default: 1 when "
                                               "the cluster has GPUs, else 0).")
    ray_max_retries: int = setting(3, "With --engine=ray: times a group or a preparation runs again after the "
                                   "actor running it died (then its clips fail).")

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.ray_actors is not None and self.ray_actors < 1:
            raise ValueError(f"ray_actors must be >= 1, got {self.ray_actors}")
        if self.ray_max_retries < 0:
            raise ValueError(f"ray_max_retries must be >= 0, got {self.ray_max_retries}")


def import_ray():
    """Ray, imported on first use: an optional dependency (the ``ray`` extra)."""
    try:
        import ray
    except ImportError as e:
        raise ImportError('the Ray engine needs Ray: pip install "neuface-jax[ray]"') from e
    return ray


# --------------------------------------------------------------------------- the actors
def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any exception that cannot cross processes is described instead
        return RuntimeError(f"{type(error).__name__}: {error}")


class PrepareActor:
    """A CPU worker that prepares clips (``runner.prepare_entry``, as the local engine's threads)."""

    def __init__(self, setup, config: DatasetConfig):
        self.setup, self.config = setup, config

    def prepare(self, entry: ClipEntry) -> tuple[dict[str, Any], Any]:
        """``(what the scheduler needs, the clip)``; a failure comes back as ``{"error": ...}``."""
        t0 = time.perf_counter()
        try:
            clip = runner.prepare_entry(self.setup, entry, self.config)
        except Exception as e:  # noqa: BLE001 - the driver records it as the local engine does
            return {"error": _picklable(e), "seconds": time.perf_counter() - t0}, None
        meta = {"num_views": clip.num_views, "num_frames": clip.num_frames,
                "image_shape": tuple(clip.data.images.shape[2:]), "seconds": time.perf_counter() - t0}
        return meta, clip


class FitActor:
    """A worker that fits groups on its devices and writes their clips (``runner.GroupWork``)."""

    def __init__(self, setup, out, config: DatasetConfig, shard_id: int, num_shards: int):
        self.shard = (shard_id, num_shards)
        mesh = parallel.make_mesh("clips", jax.local_devices())
        self.work = runner.GroupWork(setup, out, config, mesh, runner.Recorder(out, self._summary()))

    def _summary(self) -> records.RunSummary:
        return records.RunSummary(shard_id=self.shard[0], num_shards=self.shard[1], clips_in_shard=0)

    def describe(self) -> dict[str, Any]:
        return {"slots": self.work.slots, "settings": self.work.settings, "host": socket.gethostname(),
                "pid": os.getpid(), "devices": [str(d) for d in self.work.mesh.devices.flat]}

    def ping(self) -> int:
        return os.getpid()

    def run_group(self, group: sched_lib.Group, attempt: int, *clips) -> records.RunSummary:
        """Fits ``group`` (its prepared ``clips`` resolved by Ray) and writes its clips; returns
        what this group did (the driver adds it to the shard's summary)."""
        summary = self._summary()
        self.work.recorder = runner.Recorder(self.work.out, summary)
        self.work.run_group(dataclasses.replace(group, clips=tuple(clips)), skip_done=attempt > 0)
        return summary


_COUNTS = ("done", "failed", "groups", "resumed_groups", "checkpoint_saves")


def merge_summary(into: records.RunSummary, part: records.RunSummary) -> None:
    """Adds what one actor's group did (``part``) to the shard's summary."""
    for k in _COUNTS:
        setattr(into, k, getattr(into, k) + getattr(part, k))
    into.done_ids += part.done_ids
    into.failed_ids += part.failed_ids
    for stage, s in part.seconds_by_stage.items():
        into.add_seconds(stage, s)
    for label, n in part.buckets.items():
        into.buckets[label] = into.buckets.get(label, 0) + n


# --------------------------------------------------------------------------- starting actors
@dataclasses.dataclass(frozen=True)
class ActorPlan:
    """How many actors of each kind, and the resources each asks for."""

    fit_actors: int
    gpus_per_fit_actor: float
    prepare_actors: int
    cpus_per_prepare_actor: float


def plan_actors(resources: dict[str, float], engine: EngineConfig, workers: int) -> ActorPlan:
    """The actors for a cluster of ``resources`` (``ray.cluster_resources()``): one fitting actor
    per GPU (or ``ray_actors``), one CPU each; the preparation actors share the CPUs left."""
    gpus = float(resources.get("GPU", 0.0))
    per = engine.ray_gpus_per_actor if engine.ray_gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    n_fit = engine.ray_actors or (max(1, int(gpus // per)) if per > 0 else 1)
    spare = float(resources.get("CPU", 1.0)) - n_fit
    return ActorPlan(n_fit, per, workers, max(0.1, min(1.0, spare / workers)))


def _jax_env() -> dict[str, str]:
    """The fitting actors' JAX settings: no GPU preallocation, the driver's compilation cache."""
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    cache = jax.config.jax_compilation_cache_dir
    if cache:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def start_actors(ray, plan: ActorPlan, setup_ref, out, config: DatasetConfig, shard: tuple[int, int]):
    """``(fitting actors, preparation actors)``, restarted by Ray whenever they die (from
    ``setup_ref``, the setup in the object store: the caller keeps it for as long as they run)."""
    fit_cls = ray.remote(FitActor).options(
        num_cpus=1, num_gpus=plan.gpus_per_fit_actor, max_restarts=-1, max_task_retries=0,
        runtime_env={"env_vars": _jax_env()})
    prep_cls = ray.remote(PrepareActor).options(
        num_cpus=plan.cpus_per_prepare_actor, max_restarts=-1, runtime_env={"env_vars": {"JAX_PLATFORMS": "cpu"}})
    fitters = [fit_cls.remote(setup_ref, out, config, *shard) for _ in range(plan.fit_actors)]
    preparers = [prep_cls.remote(setup_ref, config) for _ in range(plan.prepare_actors)]
    return fitters, preparers


# --------------------------------------------------------------------------- the driver
@dataclasses.dataclass
class _Job:
    """A call in flight: a preparation (``entry``) or a group's fit."""

    actor: int
    attempt: int
    entry: ClipEntry | None = None
    clip: Any = None  #: the prepared clip's object reference
    group: sched_lib.Group | None = None


class _Driver:
    """Feeds the actors from the scheduler and collects what comes back (one thread)."""

    def __init__(self, ray, engine: EngineConfig, recorder: runner.Recorder, sched: sched_lib.Scheduler,
                 fitters: list, preparers: list):
        self.ray, self.engine, self.recorder, self.sched = ray, engine, recorder, sched
        self.fitters, self.preparers = fitters, preparers
        self.preps: dict[Any, _Job] = {}
        self.fits: dict[Any, _Job] = {}
        self.queue: collections.deque[tuple[sched_lib.Group, int]] = collections.deque()
        self.load = [0] * len(fitters)
        self.down: set[int] = set()  # fitting actors being restarted (or gone)
        self.pings: dict[Any, int] = {}
        self._next_prep = 0

    # ---------------------------------------------------------------- sending
    def prepare(self, entry: ClipEntry) -> None:
        i = self._next_prep % len(self.preparers)
        self._next_prep += 1
        call = self.preparers[i].prepare.options(num_returns=2, max_task_retries=self.engine.ray_max_retries)
        meta, clip = call.remote(entry)
        self.preps[meta] = _Job(i, 0, entry=entry, clip=clip)

    def send_groups(self) -> None:
        while self.queue:
            free = [i for i in range(len(self.fitters)) if i not in self.down and self.load[i] < _QUEUED_PER_ACTOR]
            if not free:
                if len(self.down) == len(self.fitters) and not self.pings:  # every actor is gone for good
                    group, _ = self.queue.popleft()
                    self._fail(group, RuntimeError("no Ray fitting actor is left"))
                    continue
                return
            i = min(free, key=lambda j: self.load[j])
            group, attempt = self.queue.popleft()
            ref = self.fitters[i].run_group.remote(dataclasses.replace(group, clips=()), attempt, *group.clips)
            self.fits[ref] = _Job(i, attempt, group=group)
            self.load[i] += 1

    # ---------------------------------------------------------------- outcomes
    def _fail(self, group: sched_lib.Group, error: BaseException) -> None:
        for cid in group.clip_ids:
            if records.is_done(self.recorder.out, cid):  # completed by an attempt that died after it
                self.recorder.done(cid)
            else:
                self.recorder.failure(cid, "fit", error)

    def prepared(self, ref, job: _Job) -> None:
        entry = job.entry
        try:
            meta = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:  # its actor died more often than allowed
            meta = {"error": getattr(e, "cause", None) or e, "seconds": 0.0}
        self.recorder.summary.add_seconds("prepare", meta["seconds"])
        if "error" in meta:
            self.sched.failed(entry)
            self.recorder.failure(entry.clip_id, "prepare", meta["error"])
            return
        group = self.sched.prepared(entry, job.clip, num_views=meta["num_views"], num_frames=meta["num_frames"],
                                    image_shape=meta["image_shape"])
        if group is not None:
            self.queue.append((group, 0))

    def fitted(self, ref, job: _Job) -> None:
        self.load[job.actor] -= 1
        try:
            part = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as e:
            self._lost(job, e)
        except self.ray.exceptions.RayError as e:  # not the clips' fault (those are recorded by the actor)
            self._fail(job.group, getattr(e, "cause", None) or e)
        else:
            merge_summary(self.recorder.summary, part)

    def _lost(self, job: _Job, error: BaseException) -> None:
        """The actor fitting ``job`` died: restart it, send the group again (or fail it)."""
        group, again = job.group, job.attempt < self.engine.ray_max_retries
        self.recorder.summary.retries += int(again)
        logger.warning("%s: the Ray actor fitting %s died (%s); %s", PROG, group.clip_ids, type(error).__name__,
                       f"attempt {job.attempt + 2} follows" if again else "no attempt left: its clips fail")
        if again:
            self.queue.appendleft((group, job.attempt + 1))
        else:
            self._fail(group, error)
        if job.actor not in self.down:
            self.down.add(job.actor)
            self.pings[self.fitters[job.actor].ping.options(max_task_retries=-1).remote()] = job.actor

    def revived(self, ref) -> None:
        i = self.pings.pop(ref)
        try:
            self.ray.get(ref)
        except self.ray.exceptions.RayError:
            logger.warning("%s: Ray fitting actor %d is gone", PROG, i)
            return
        self.down.discard(i)

    # ---------------------------------------------------------------- the loop
    def collect(self) -> None:
        """Waits for at least one call (or the tick) and handles every call that has ended."""
        refs = [*self.preps, *self.fits, *self.pings]
        if not refs:
            return
        ready, _ = self.ray.wait(refs, num_returns=1, timeout=_TICK_SECONDS)
        if ready:
            ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            if ref in self.pings:
                self.revived(ref)
            elif ref in self.preps:
                self.prepared(ref, self.preps.pop(ref))
            else:
                self.fitted(ref, self.fits.pop(ref))

    def loop(self, ckpt_root, bar, total: int, t_start: float) -> None:
        """Prepares, packs and fits until every clip is done or failed."""
        sched, t_last = self.sched, time.perf_counter()
        while sched.pending or self.preps or self.fits or self.queue:
            for e in sched.to_prepare(len(self.preps)):
                self.prepare(e)
            self.send_groups()
            self.collect()
            self.queue.extend((g, 0) for g in runner.release_groups(sched, ckpt_root))
            group = sched.flush(len(self.preps))
            if group is not None:
                self.queue.append((group, 0))
            self.send_groups()
            if time.perf_counter() - t_last > _TICK_SECONDS:
                runner.show_progress(bar, self.recorder.summary, total, t_start)
                t_last = time.perf_counter()


def _connect(ray, engine: EngineConfig) -> bool:
    """Joins the cluster (or starts a local one); True when this call started Ray."""
    if ray.is_initialized():
        return False
    if engine.ray_address:
        ray.init(address=engine.ray_address)
    else:
        ray.init(include_dashboard=False)
    return True


def run(
    entries: Iterable[ClipEntry] | str | os.PathLike,
    out_dir,
    setup,
    config: DatasetConfig = DatasetConfig(),
    engine: EngineConfig = EngineConfig(engine="ray"),
    *,
    shard_id: int = 0,
    num_shards: int = 1,
    retry_failed: bool = False,
    progress: ProgressFactory | None = None,
    report: bool = True,
) -> records.RunSummary:
    """Annotates this shard of a manifest into ``out_dir`` on Ray actors (see the module docstring).

    The arguments are ``runner.run``'s (the devices are the actors'), plus ``engine``'s Ray
    settings. Uses the Ray session of the calling process when there is one (``ray.init``),
    else joins ``engine.ray_address`` or starts a one-node cluster for the run.
    """
    ray = import_ray()
    t_run = time.perf_counter()
    shard, shards = sched_lib.process_shard(shard_id, num_shards)
    by_id, mine = runner.shard_of_manifest(entries, shard, shards)
    out = outdir.prepare_output(out_dir)
    summary = records.RunSummary(shard_id=shard, num_shards=shards, clips_in_shard=len(mine))
    with outdir.acquire(out, shard, shards):
        started = _connect(ray, engine)
        actors: list = []
        try:
            plan = plan_actors(ray.cluster_resources(), engine, config.workers)
            setup_ref = ray.put(setup)  # held until the end: a restarted actor is built from it again
            fitters, preparers = start_actors(ray, plan, setup_ref, out, config, (shard, shards))
            actors = fitters + preparers
            info = ray.get(fitters[0].describe.remote())
            sel, pinned, todo = runner.plan(out, summary, mine, by_id, settings=info["settings"],
                                            slots=info["slots"], retry_failed=retry_failed)
            runner.log_start(summary, sel, pinned, retry_failed=retry_failed, k=config.clips_per_device,
                             workers=f"{plan.fit_actors} Ray actor(s) of {len(info['devices'])} device(s)")
            sched = sched_lib.Scheduler(
                todo, slots=info["slots"], chunk_frames=setup.fit_config.chunk_frames,
                bucket_chunks=config.bucket_chunks, prefetch=config.prefetch or 2 * info["slots"] * plan.fit_actors,
                pinned=pinned)
            driver = _Driver(ray, engine, runner.Recorder(out, summary), sched, fitters, preparers)
            bar = (progress or quiet)("annotate-dataset", len(todo))
            try:
                driver.loop(out / records.CHECKPOINT_DIR, bar, len(todo), t_run)
            finally:
                runner.show_progress(bar, summary, len(todo), t_run)
                bar.close()
        finally:
            for a in actors:
                ray.kill(a)
            if started:
                ray.shutdown()
        runner.finish(out, summary, time.perf_counter() - t_run, report)
    return summary
