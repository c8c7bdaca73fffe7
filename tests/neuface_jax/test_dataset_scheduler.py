"""The dataset scheduler alone (no files, no threads, no JAX): shards, selection, order, buckets,
look-ahead, resumed groups."""

from __future__ import annotations

import pytest

from neuface_jax.dataset import scheduler as sch
from neuface_jax.dataset.manifest import ClipEntry, shard_of


def _entry(cid: str, frames: int | None = 8) -> ClipEntry:
    return ClipEntry(clip_id=cid, kind="video", inputs=(f"/x/{cid}.mp4",), view_names=("front",), landmarks=None,
                     num_frames=frames, fps=25.0, meta={})


def _prepared(s: sch.Scheduler, e: ClipEntry, frames: int, views: int = 1, shape=(16, 16, 3)):
    return s.prepared(e, f"clip:{e.clip_id}", num_views=views, num_frames=frames, image_shape=shape)


def test_bucket_frames():
    assert sch.bucket_frames(5, 8, (1, 2, 4)) == 8
    assert sch.bucket_frames(9, 8, (1, 2, 4)) == 16
    assert sch.bucket_frames(17, 8, (1, 2, 4)) == 32
    assert sch.bucket_frames(33, 8, (1, 2, 4)) == 64  # beyond the largest: multiples of it
    assert sch.bucket_frames(100, 8, (4, 1, 2)) == 128


def test_shards_and_duplicates():
    entries = [_entry(f"c{i:02d}") for i in range(20)]
    by_id = sch.index_entries(reversed(entries))
    with pytest.raises(ValueError, match="twice"):
        sch.index_entries(entries + entries[:1])
    # Two processes of two shards: four disjoint sub-shards covering the manifest.
    seen = []
    for shard in range(2):
        for p in range(2):
            s, n = sch.process_shard(shard, 2, p, 2)
            assert (s, n) == (shard * 2 + p, 4)
            part = sch.shard_entries(by_id, s, n)
            assert [e.clip_id for e in part] == sorted(e.clip_id for e in part)
            assert all(shard_of(e.clip_id, 4) == s for e in part)
            seen += [e.clip_id for e in part]
    assert sorted(seen) == [e.clip_id for e in entries]
    with pytest.raises(ValueError):
        sch.process_shard(2, 2)


def test_select_skips_done_and_failed_unless_retried():
    mine = [_entry(c) for c in "abcde"]
    sel = sch.select(mine, done={"a"}, failed={"b", "c"})
    assert [e.clip_id for e in sel.todo] == ["d", "e"]
    assert (sel.skipped_done, sel.skipped_failed, sel.failed_before) == (1, 2, 2)
    retry = sch.select(mine, done={"a"}, failed={"b", "c"}, retry_failed=True)
    assert [e.clip_id for e in retry.todo] == ["b", "c"] and retry.skipped_failed == 0


def test_select_runs_transient_failures_again():
    mine = [_entry(c) for c in "abcde"]
    sel = sch.select(mine, done={"a"}, failed={"b", "c"}, transient={"c"})
    assert [e.clip_id for e in sel.todo] == ["c", "d", "e"]
    assert (sel.skipped_failed, sel.failed_before, sel.retried_transient) == (1, 2, 1)
    retry = sch.select(mine, done={"a"}, failed={"b", "c"}, retry_failed=True, transient={"c"})
    assert [e.clip_id for e in retry.todo] == ["b", "c"]


def test_index_rejects_reserved_and_nested_ids():
    for cid in ("report.json", "summary-00000-of-00001.json", "_checkpoints", "_locks", ".x", "failures.jsonl",
                "Report.MD/x"):
        with pytest.raises(ValueError, match=r"manifest entry 2: clip_id .* is reserved"):
            sch.index_entries([_entry("ok"), _entry(cid)])
    with pytest.raises(ValueError, match=r"'c1/params.npz' lies inside the folder of clip 'c1'"):
        sch.index_entries([_entry("c1"), _entry("c1/params.npz")])
    assert set(sch.index_entries([_entry("c1x"), _entry("c1/a"), _entry("c2/_a")])) == {"c1x", "c1/a", "c2/_a"}


def test_checkpoints_resume_or_are_cleared_and_members_go_first():
    pending = [
        {"group_id": "g1", "clip_ids": ["d", "e"], "num_frames": 32, "num_slots": 2, "settings": "S", "epochs_done": 2},
        {"group_id": "g2", "clip_ids": ["a", "b"], "num_frames": 32, "num_slots": 2, "settings": "S"},
        {"group_id": "g3", "clip_ids": ["c", "x"], "num_frames": 32, "num_slots": 2, "settings": "other"},
        {"group_id": "g4", "clip_ids": ["d", "e"], "num_frames": 32, "num_slots": 4, "settings": "S"},
    ]
    pinned, finished = sch.match_checkpoints(pending, settings="S", num_slots=2, todo_ids={"c", "d", "e"},
                                             done_ids={"a", "b"})
    assert pinned == [sch.PinnedGroup("g1", ("d", "e"), 32, 2)]
    assert finished == ["g2"]  # every member complete: a leftover of a kill
    todo = [_entry("c", 4), _entry("d", 20), _entry("e", 30), _entry("f", 2)]
    assert [e.clip_id for e in sch.order(todo, pinned)] == ["d", "e", "f", "c"]


def test_buckets_fill_to_slots_and_lookahead_is_bounded():
    todo = [_entry(c) for c in "abcdef"]
    s = sch.Scheduler(todo, slots=2, chunk_frames=8, bucket_chunks=(1, 2))
    assert s.prefetch == 4  # two groups by default
    first = s.to_prepare(in_flight=0)
    assert [e.clip_id for e in first] == ["a", "b", "c", "d"]
    assert s.to_prepare(in_flight=4) == []
    assert _prepared(s, first[0], 5) is None
    assert _prepared(s, first[1], 12) is None  # another bucket (16 frames)
    g = _prepared(s, first[2], 8)
    assert g.clip_ids == ["a", "c"] and g.num_frames == 8 and g.label == "1v x 8f" and g.clips == ("clip:a", "clip:c")
    # b waits in its bucket: with d still being prepared, one more clip may start.
    assert [e.clip_id for e in s.to_prepare(in_flight=1)] == ["e", "f"]
    s.failed(first[3])
    assert s.flush(in_flight=2) is None  # clips still being prepared: the bucket may fill
    assert _prepared(s, todo[4], 9, views=3) is None  # another key: 3 views
    assert s.flush(in_flight=1) is None
    assert _prepared(s, todo[5], 16) .clip_ids == ["b", "f"]
    last = s.flush(in_flight=0)
    assert last.clip_ids == ["e"] and last.num_views == 3 and last.num_frames == 16
    assert not s.pending


def test_flush_takes_the_fullest_bucket_when_lookahead_is_full():
    todo = [_entry(c) for c in "abcde"]
    s = sch.Scheduler(todo, slots=3, chunk_frames=8, bucket_chunks=(1, 2), prefetch=3)
    a, b, c = s.to_prepare(0)
    _prepared(s, a, 4)
    _prepared(s, b, 12)
    _prepared(s, c, 14)
    assert s.to_prepare(0) == []  # three prepared, none dispatched: the look-ahead is full
    g = s.flush(in_flight=0)
    assert g.clip_ids == ["b", "c"] and g.num_frames == 16
    assert [e.clip_id for e in s.to_prepare(0)] == ["d", "e"]


def test_resumed_group_waits_for_its_members_and_keeps_their_order():
    pinned = [sch.PinnedGroup("g", ("b", "a"), 32, 1)]
    todo = sch.order([_entry("a"), _entry("b"), _entry("c")], pinned)
    s = sch.Scheduler(todo, slots=2, chunk_frames=8, bucket_chunks=(1,), pinned=pinned)
    entries = s.to_prepare(0)
    assert {e.clip_id for e in entries[:2]} == {"a", "b"}
    _prepared(s, next(e for e in entries if e.clip_id == "a"), 8)
    assert s.release_pinned() == ([], [])
    _prepared(s, next(e for e in entries if e.clip_id == "b"), 8)
    groups, dropped = s.release_pinned()
    assert dropped == [] and len(groups) == 1
    g = groups[0]
    assert g.clip_ids == ["b", "a"] and g.num_frames == 32 and g.pinned == pinned[0]
    assert g.checkpoints(every=1, min_frames=10_000)  # a resumed group keeps checkpointing
    assert not g.checkpoints(every=0, min_frames=0)


def test_resumed_group_with_a_failed_member_is_dropped_and_survivors_requeued():
    pinned = [sch.PinnedGroup("g", ("a", "b"), 16)]
    s = sch.Scheduler([_entry("a"), _entry("b"), _entry("c")], slots=2, chunk_frames=8, bucket_chunks=(1, 2),
                      pinned=pinned, prefetch=2)
    a, b = s.to_prepare(0)
    _prepared(s, a, 8)
    s.failed(b)
    assert s.release_pinned() == ([], ["g"])
    # a goes back to the queue ahead of c, now as an ordinary clip.
    assert [e.clip_id for e in s.to_prepare(0)] == ["a", "c"]
    assert _prepared(s, a, 8) is None
    g = _prepared(s, _entry("c"), 3)
    assert g.clip_ids == ["a", "c"] and g.pinned is None and g.num_frames == 8
