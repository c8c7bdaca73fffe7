"""Which clips a dataset run does, in what order, and how they are packed into groups.

Pure scheduling: no files, no threads, no JAX. The runner feeds it what it observed (clips already
done or failed, group checkpoints on disk, clips as their preparation ends) and carries out what it
decides (prepare these clips, fit this group, drop that checkpoint).

- **Shards**: the manifest sorted by clip id is split by a stable hash of the id; under
  ``jax.distributed`` each process takes its own sub-shard ``shard_id * P + process_index`` of
  ``num_shards * P``.
- **Selection**: completed clips are skipped, and so are failed ones unless ``retry_failed``
  (which runs *only* them) or their failure was transient (no space, an I/O error: run again).
- **Order**: clips of checkpointed groups first (they resume with the same members), then by
  length (similar lengths share buckets), then by id.
- **Buckets**: a clip of T frames is padded to the smallest bucket of ``bucket_chunks`` chunks that
  holds it; clips of one (views, padded length, crop size) key are packed ``slots`` (K clips per
  device x devices) to a group. One compiled step per key, whatever the dataset size.
- **Look-ahead**: at most ``prefetch`` clips are prepared but not yet fitted; when nothing is being
  prepared and nothing more can start, the fullest partial bucket goes.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

from neuface_jax.dataset.layout import check_clip_ids
from neuface_jax.dataset.manifest import ClipEntry, select_shard


def bucket_frames(num_frames: int, chunk_frames: int, bucket_chunks: Sequence[int]) -> int:
    """Padded length (frames) of a clip of ``num_frames``: the smallest bucket that holds it."""
    chunks = max(1, math.ceil(num_frames / chunk_frames))
    buckets = sorted(int(b) for b in bucket_chunks)
    for b in buckets:
        if chunks <= b:
            return b * chunk_frames
    top = buckets[-1]
    return math.ceil(chunks / top) * top * chunk_frames


def index_entries(entries: Iterable[ClipEntry]) -> dict[str, ClipEntry]:
    """``{clip_id: entry}``; a clip id that appears twice, is reserved or lies inside another
    clip's folder (``layout.check_clip_ids``) is an error."""
    by_id: dict[str, ClipEntry] = {}
    for e in entries:
        if e.clip_id in by_id:
            raise ValueError(f"clip id {e.clip_id!r} appears twice in the manifest")
        by_id[e.clip_id] = e
    check_clip_ids((cid, f"manifest entry {i + 1}") for i, cid in enumerate(by_id))
    return by_id


def process_shard(shard_id: int, num_shards: int, process_index: int = 0, process_count: int = 1) -> tuple[int, int]:
    """This process's ``(shard, number of shards)``: each of P processes takes a sub-shard."""
    if not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id {shard_id} is not in 0..{num_shards - 1}")
    return shard_id * process_count + process_index, num_shards * process_count


def shard_entries(by_id: Mapping[str, ClipEntry], shard_id: int, num_shards: int) -> list[ClipEntry]:
    """The entries of one shard, sorted by clip id."""
    return select_shard(sorted(by_id.values(), key=lambda e: e.clip_id), shard_id, num_shards)


@dataclasses.dataclass(frozen=True)
class Selection:
    """The clips of a shard that run now, and how many were left out."""

    todo: tuple[ClipEntry, ...]
    skipped_done: int
    skipped_failed: int
    failed_before: int  #: clips of the shard with a recorded failure (retried or skipped)
    retried_transient: int = 0  #: failed before, transiently, and run again


def select(mine: Sequence[ClipEntry], done: set[str], failed: set[str], retry_failed: bool = False,
           transient: set[str] = frozenset()) -> Selection:
    """Skips completed clips, and failed ones unless ``retry_failed`` (which runs only those) or
    their failure is in ``transient`` (a subset of ``failed``, run again on a plain resume)."""
    todo, skipped_done, skipped_failed, retried = [], 0, 0, 0
    for e in mine:
        cid = e.clip_id
        if cid in done:
            skipped_done += 1
        elif cid in failed and not retry_failed and cid not in transient:
            skipped_failed += 1
        elif retry_failed and cid not in failed:
            continue
        else:
            if cid in transient and cid in failed and not retry_failed:
                retried += 1
            todo.append(e)
    n_failed = sum(1 for e in mine if e.clip_id in failed)
    return Selection(tuple(todo), skipped_done, skipped_failed, n_failed, retried)


@dataclasses.dataclass(frozen=True)
class PinnedGroup:
    """A group checkpointed mid-optimization: it resumes with exactly these members."""

    group_id: str
    clip_ids: tuple[str, ...]
    num_frames: int
    epochs_done: int | None = None


def match_checkpoints(pending: Sequence[Mapping[str, Any]], *, settings: str, num_slots: int,
                      todo_ids: set[str], done_ids: set[str]) -> tuple[list[PinnedGroup], list[str]]:
    """Which checkpointed groups resume and which are finished leftovers of a kill.

    A group resumes when it was saved under the same settings and slot count and all its members
    are to run; it is finished (its checkpoint can go) when all its members are in ``done_ids``
    (completed clips of the manifest). Returns ``(resumed groups, finished group ids)``.
    """
    pinned, finished = [], []
    for meta in pending:
        ids = list(meta.get("clip_ids", []))
        if (meta.get("settings") == settings and meta.get("num_slots") == num_slots
                and ids and all(i in todo_ids for i in ids)):
            pinned.append(PinnedGroup(meta["group_id"], tuple(ids), int(meta["num_frames"]), meta.get("epochs_done")))
        elif ids and all(i in done_ids for i in ids):
            finished.append(meta["group_id"])
    return pinned, finished


def order(todo: Iterable[ClipEntry], pinned: Sequence[PinnedGroup] = ()) -> list[ClipEntry]:
    """Members of resumed groups first, then by length, then by id."""
    pinned_ids = {cid for g in pinned for cid in g.clip_ids}
    return sorted(todo, key=lambda e: (e.clip_id not in pinned_ids, e.num_frames or 0, e.clip_id))


@dataclasses.dataclass(frozen=True)
class Group:
    """Clips fitted together: ``entries[i]`` was prepared into ``clips[i]`` (opaque here)."""

    entries: tuple[ClipEntry, ...]
    clips: tuple[Any, ...]
    num_frames: int  #: the padded length of every member
    num_views: int
    pinned: PinnedGroup | None = None  #: the checkpointed group this resumes

    @property
    def clip_ids(self) -> list[str]:
        return [e.clip_id for e in self.entries]

    @property
    def label(self) -> str:
        return f"{self.num_views}v x {self.num_frames}f"

    def checkpoints(self, every: int, min_frames: int) -> bool:
        """Long groups (and resumed ones) save their optimizer states every ``every`` epochs."""
        return every > 0 and (self.pinned is not None or self.num_frames >= min_frames)


class Scheduler:
    """The preparation queue, the buckets and the resumed groups of one run (state, no I/O).

    The runner asks :meth:`to_prepare` for clips to start, reports each preparation through
    :meth:`prepared` or :meth:`failed`, and dispatches every :class:`Group` these, :meth:`release_pinned`
    and :meth:`flush` return, until :attr:`pending` is false and nothing is being prepared.
    """

    def __init__(self, todo: Sequence[ClipEntry], *, slots: int, chunk_frames: int, bucket_chunks: Sequence[int],
                 prefetch: int | None = None, pinned: Sequence[PinnedGroup] = ()):
        self.slots = int(slots)
        self.prefetch = int(prefetch or 2 * self.slots)
        self.chunk_frames = int(chunk_frames)
        self.bucket_chunks = tuple(bucket_chunks)
        self._queue = collections.deque(todo)
        self._unprepared = {e.clip_id for e in todo}  # queued or being prepared: what a pinned group waits for
        self._waiting = 0  # prepared, not yet in a dispatched group
        self._buckets: dict[tuple, list[tuple[ClipEntry, Any, int]]] = {}
        self._pinned = list(pinned)
        self._pinned_of = {cid: g.group_id for g in pinned for cid in g.clip_ids}
        self._pinned_ready: dict[str, list[tuple[ClipEntry, Any, int]]] = collections.defaultdict(list)

    @property
    def pending(self) -> bool:
        """Clips queued, or prepared and not yet dispatched."""
        return bool(self._queue or self._buckets or self._pinned_ready)

    def to_prepare(self, in_flight: int) -> list[ClipEntry]:
        """Clips to start preparing, keeping at most ``prefetch`` ahead of the optimizer."""
        out = []
        while self._queue and in_flight + len(out) + self._waiting < self.prefetch:
            out.append(self._queue.popleft())
        return out

    def failed(self, entry: ClipEntry) -> None:
        """``entry`` could not be prepared (the runner records the failure)."""
        self._unprepared.discard(entry.clip_id)

    def prepared(self, entry: ClipEntry, clip: Any, *, num_views: int, num_frames: int,
                 image_shape: Sequence[int]) -> Group | None:
        """``entry`` is prepared into ``clip``; returns its group when the bucket is full."""
        self._unprepared.discard(entry.clip_id)
        self._waiting += 1
        member = (entry, clip, int(num_views))
        gid = self._pinned_of.get(entry.clip_id)
        if gid is not None:
            self._pinned_ready[gid].append(member)
            return None
        t_bucket = bucket_frames(num_frames, self.chunk_frames, self.bucket_chunks)
        key = (int(num_views), t_bucket, tuple(image_shape))
        members = self._buckets.setdefault(key, [])
        members.append(member)
        if len(members) >= self.slots:
            return self._emit(self._buckets.pop(key), t_bucket)
        return None

    def release_pinned(self) -> tuple[list[Group], list[str]]:
        """Resumed groups whose members are all prepared, and the ids of checkpoints that no longer
        apply (a member failed to prepare: the survivors go back to the queue as ordinary clips)."""
        groups, dropped = [], []
        for g in list(self._pinned):
            if any(i in self._unprepared for i in g.clip_ids):
                continue
            self._pinned.remove(g)
            members = sorted(self._pinned_ready.pop(g.group_id, []), key=lambda m: g.clip_ids.index(m[0].clip_id))
            if len(members) == len(g.clip_ids):
                groups.append(self._emit(members, g.num_frames, g))
                continue
            dropped.append(g.group_id)
            for entry, _, _ in members:
                self._waiting -= 1
                self._queue.appendleft(entry)
                self._unprepared.add(entry.clip_id)
                self._pinned_of.pop(entry.clip_id, None)
        return groups, dropped

    def flush(self, in_flight: int) -> Group | None:
        """The fullest partial bucket, when nothing is being prepared and nothing more can start
        (queue empty or look-ahead full): the partial buckets will not fill."""
        if self._buckets and not in_flight and (not self._queue or self._waiting >= self.prefetch):
            key = max(self._buckets, key=lambda k: len(self._buckets[k]))
            return self._emit(self._buckets.pop(key), key[1])
        return None

    def _emit(self, members: list[tuple[ClipEntry, Any, int]], num_frames: int,
              pinned: PinnedGroup | None = None) -> Group:
        self._waiting -= len(members)
        return Group(tuple(m[0] for m in members), tuple(m[1] for m in members), int(num_frames),
                     members[0][2], pinned)
