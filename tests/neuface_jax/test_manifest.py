"""Tests of neuface_jax.dataset.manifest: layouts, clip ids, JSON-lines round trip, sharding, errors, CLI."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import warnings
import zlib

import numpy as np
import pytest

from neuface_jax.cli.manifest import manifest_main
from neuface_jax.dataset import manifest as mf
from neuface_jax.media import video


# ---------------------------------------------------------------------------------------------
# Helpers: fake dataset trees


def _touch(path, data=b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _tiny_video(path, n, fps=10.0, size=16):
    frames = np.zeros((n, size, size, 3), np.uint8)
    frames[:, : size // 2] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    return video.write_video(path, frames, fps=fps, preset="ultrafast")


def _tiny_jpg(path, value=128, size=8):
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.full((size, size, 3), value, np.uint8), extension=path.suffix)
    return path


def _by_id(entries):
    return {e.clip_id: e for e in entries}


def _mead_tree(root, takes):
    """takes: {(view, emotion, level, take): ...} → empty files at MEAD paths under root/M003."""
    for view, emotion, level, take in takes:
        _touch(root / "M003" / "video" / view / emotion / level / f"{take}.mp4")
    _touch(root / "M003" / "audio" / "angry" / "level_1" / "001.m4a")  # MEAD's audio: not a clip


# ---------------------------------------------------------------------------------------------
# Constants agree with the modules they mirror


def test_constants_match_synth_and_motion():
    from neuface_jax.synthetic import motion
    from neuface_jax.synthetic import synth

    assert mf.SYNTH_CLIP_FORMAT == synth.CLIP_FORMAT
    assert mf.MEAD_VIEWS == tuple(name for name, _, _ in motion.MEAD_VIEWS)
    assert set(mf.IMAGE_EXTENSIONS) == set(video.IMAGE_EXTENSIONS)


# ---------------------------------------------------------------------------------------------
# Layout (a): MEAD


def test_mead_layout_groups_views_in_canonical_order(tmp_path, caplog):
    root = tmp_path / "MEAD"
    views = ["down", "front", "left_60", "right_30"]  # alphabetical order differs from canonical
    takes = [(v, "angry", "level_1", "001") for v in views]
    takes += [(v, "angry", "level_1", "002") for v in views if v != "left_60"]  # incomplete take
    takes += [(v, "neutral", "level_1", "001") for v in views]
    _mead_tree(root, takes)
    with caplog.at_level(logging.WARNING, logger="neuface_jax.dataset.manifest"):
        entries = mf.build_manifest(root)
    ids = [e.clip_id for e in entries]
    assert ids == ["M003/angry/level_1/001", "M003/angry/level_1/002", "M003/neutral/level_1/001"]
    full = _by_id(entries)["M003/angry/level_1/001"]
    assert full.kind == "mead"
    assert full.view_names == ("front", "right_30", "left_60", "down")
    assert full.inputs == tuple(str(root / "M003" / "video" / v / "angry" / "level_1" / "001.mp4")
                                for v in full.view_names)
    assert full.meta == {"subject": "M003", "emotion": "angry", "level": "level_1", "take": "001"}
    assert full.num_frames is None and full.fps is None and full.landmarks is None
    part = _by_id(entries)["M003/angry/level_1/002"]
    assert part.view_names == ("front", "right_30", "down")
    assert part.meta["missing_views"] == ["left_60"]
    assert len(part.inputs) == 3
    assert any("lack views" in r.message and "angry/level_1/002" in r.message for r in caplog.records)
    # The audio file is not listed and no per-view video is listed on its own.
    listed = [p for e in entries for p in e.inputs]
    assert len(listed) == len(set(listed)) == len(takes)


def test_mead_subject_id_when_root_is_the_subject_or_video_folder(tmp_path):
    _mead_tree(tmp_path, [("front", "happy", "level_3", "010"), ("top", "happy", "level_3", "010")])
    nested = mf.build_manifest(tmp_path)
    subject = mf.build_manifest(tmp_path / "M003")
    video_root = mf.build_manifest(tmp_path / "M003" / "video", layout="mead")
    for entries in (nested, subject, video_root):
        assert [e.clip_id for e in entries] == ["M003/happy/level_3/010"]
        assert entries[0].view_names == ("front", "top")
    # Deeper trees keep their relative path as the subject part of the id.
    deep = tmp_path / "deep"
    _mead_tree(deep / "part1", [("front", "sad", "level_2", "003")])
    assert [e.clip_id for e in mf.build_manifest(deep)] == ["part1/M003/sad/level_2/003"]
    assert mf.build_manifest(deep)[0].meta["subject"] == "M003"


def test_mead_probe_counts_frames_per_view(tmp_path):
    base = tmp_path / "M005" / "video"
    _tiny_video(base / "front" / "angry" / "level_1" / "001.mp4", 5, fps=10.0)
    _tiny_video(base / "left_30" / "angry" / "level_1" / "001.mp4", 4, fps=10.0)
    [entry] = mf.build_manifest(tmp_path, probe_frames=True, probe_workers=2)
    assert entry.view_names == ("front", "left_30")
    assert entry.num_frames == 4  # the shortest view (the runner trims to it)
    assert entry.fps == pytest.approx(10.0)
    assert entry.meta["frames_per_view"] == {"front": 5, "left_30": 4}


# ---------------------------------------------------------------------------------------------
# Layout (b): one video per clip


def test_video_layouts_voxceleb_celebv_and_extensions(tmp_path):
    root = tmp_path / "data"
    _touch(root / "vox" / "id00012" / "_raOc3-IRsw" / "00110.mp4")
    _touch(root / "vox" / "id00012" / "_raOc3-IRsw" / "00111.mp4")
    _touch(root / "celebv" / "-0Ht2jBMpcw_0.mp4")
    for ext in ("avi", "mov", "mkv", "webm", "MP4"):
        _touch(root / "misc" / f"clip_{ext}.{ext}")
    _touch(root / "misc" / "notes.txt")
    _touch(root / "misc" / "._clip_avi.avi")  # macOS resource fork: hidden, skipped
    _touch(root / ".cache" / "x.mp4")  # hidden folder: skipped
    entries = mf.build_manifest(root)
    assert [e.clip_id for e in entries] == [
        "celebv/-0Ht2jBMpcw_0",
        "misc/clip_MP4", "misc/clip_avi", "misc/clip_mkv", "misc/clip_mov", "misc/clip_webm",
        "vox/id00012/_raOc3-IRsw/00110", "vox/id00012/_raOc3-IRsw/00111",
    ]
    assert all(e.kind == "video" and e.view_names == ("front",) for e in entries)
    e = _by_id(entries)["vox/id00012/_raOc3-IRsw/00110"]
    assert e.inputs == (str(root / "vox" / "id00012" / "_raOc3-IRsw" / "00110.mp4"),)


def test_ids_are_stable_and_unique(tmp_path):
    root = tmp_path / "d"
    _touch(root / "a.mp4")
    _touch(root / "a.avi")  # same stem: both get their own suffix
    _touch(root / "b.mp4")
    _touch(root / "sub" / "c.mp4")
    first = mf.build_manifest(root)
    ids = [e.clip_id for e in first]
    assert len(ids) == len(set(ids)) == 4
    a_ids = {e.inputs[0].rsplit(".", 1)[1]: e.clip_id for e in first if os.path.basename(e.inputs[0])[0] == "a"}
    assert a_ids == {"mp4": f"a={zlib.crc32(b'a.mp4'):08x}", "avi": f"a={zlib.crc32(b'a.avi'):08x}"}
    assert "b" in ids and "sub/c" in ids
    # Same tree → same ids; new unrelated files leave the other ids alone.
    assert [e.clip_id for e in mf.build_manifest(root)] == ids
    _touch(root / "new" / "z.mp4")
    again = [e.clip_id for e in mf.build_manifest(root)]
    assert set(ids) <= set(again) and "new/z" in again
    # Ids depend on the path relative to the root, not on where the root is.
    moved = tmp_path / "elsewhere" / "d2"
    shutil.copytree(root, moved)
    assert [e.clip_id for e in mf.build_manifest(moved)] == again


def test_sanitize_clip_id_and_unsafe_names(tmp_path):
    for bad in ["", "/a", "a//b", "../a", "a/..", ".", "a/./b", "a b", "a\\b", "é", "a/", "x" * 256, "a:b"]:
        assert not mf.is_safe_clip_id(bad), bad
        s = mf.sanitize_clip_id(bad)
        assert mf.is_safe_clip_id(s), (bad, s)
        assert s == mf.sanitize_clip_id(bad)  # deterministic
    for good in ["a", "id00012/_raOc3-IRsw/00110", "M003/angry/level_1/001", "x=1+2.3", "...a", "-a"]:
        assert mf.is_safe_clip_id(good) and mf.sanitize_clip_id(good) == good
    assert mf.sanitize_clip_id("../../etc/passwd").startswith("__/__/etc/passwd=")
    # Different originals that sanitize alike stay different; a safe original keeps its id.
    assert mf.sanitize_clip_id("a b") != mf.sanitize_clip_id("a:b")
    assert mf.sanitize_clip_id("a_b") == "a_b" != mf.sanitize_clip_id("a b")
    # On disk: unsafe names become safe, unique ids.
    root = tmp_path / "r"
    for name in ["my clip.mp4", "my_clip.mp4", "my:clip.mp4", "ünï.mp4", "#5 (copy).mp4"]:
        _touch(root / "sp ace" / name)
    entries = mf.build_manifest(root)
    ids = [e.clip_id for e in entries]
    assert len(ids) == len(set(ids)) == 5
    assert all(mf.is_safe_clip_id(i) for i in ids)
    assert "sp_ace/my_clip" not in ids  # its folder was renamed by sanitizing, so it carries a hash
    assert sum(i.startswith("sp_ace/my_clip=") for i in ids) == 3
    # Each id is a folder strictly inside the output root.
    out = tmp_path / "out"
    for e in entries:
        d = e.output_dir(out)
        assert os.path.commonpath([d.resolve(), out.resolve()]) == str(out.resolve()) and d.resolve() != out.resolve()


def test_undecodable_names_and_symlink_loops(tmp_path, caplog):
    root = tmp_path / "r"
    root.mkdir()
    try:
        (root / os.fsdecode(b"caf\xe9.mp4")).write_bytes(b"")  # not UTF-8: a surrogate-escaped str
    except (OSError, UnicodeError):
        pytest.skip("the filesystem refuses non-UTF-8 names")
    _touch(root / "sub" / "v.mp4")
    os.symlink(root, root / "sub" / "loop")  # a cycle: must not recurse forever nor list v twice
    with caplog.at_level(logging.WARNING, logger="neuface_jax.dataset.manifest"):
        entries = mf.build_manifest(root)
    ids = [e.clip_id for e in entries]
    assert len(ids) == 2 and "sub/v" in ids and all(mf.is_safe_clip_id(i) for i in ids)
    assert any("already scanned" in r.message for r in caplog.records)
    path = mf.write_manifest(entries, tmp_path / "m.jsonl")
    assert mf.read_manifest(path) == entries
    assert os.path.exists(next(e for e in entries if e.clip_id != "sub/v").inputs[0])


# ---------------------------------------------------------------------------------------------
# Layout (c): frame folders


def test_frame_folder_layouts_are_what_the_reader_reads(tmp_path):
    root = tmp_path / "frames"
    mead = root / "mead_named"
    for i in (1, 2, 3):
        _tiny_jpg(mead / f"img_{i:04d}_front.jpg", 10 * i)
        _tiny_jpg(mead / f"img_{i:04d}_left_30.jpg", 10 * i)
    _tiny_jpg(mead / "img_0004_front.jpg")  # only in one view: not a common frame
    for i in range(5):
        _tiny_jpg(root / "numbered" / f"frame_{i:06d}.png")
    for cam in ("cam_220700191", "Camera2", "front"):
        for i in range(2):
            _tiny_jpg(root / "multicam" / cam / f"{i:05d}.jpg")
    for clip in ("camping", "clipA", "clipB"):  # image sub-folders not named as views: separate clips
        for i in range(2):
            _tiny_jpg(root / "seqs" / clip / f"{i}.jpg")
    entries = _by_id(mf.build_manifest(root))
    assert sorted(entries) == ["mead_named", "multicam", "numbered", "seqs/camping", "seqs/clipA", "seqs/clipB"]
    assert entries["mead_named"].view_names == ("front", "left_30")
    assert entries["mead_named"].num_frames == 3
    assert entries["numbered"].view_names == ("numbered",) and entries["numbered"].num_frames == 5
    assert entries["multicam"].view_names == ("front", "Camera2", "cam_220700191")  # MEAD views first
    assert entries["multicam"].num_frames == 2
    assert entries["seqs/clipA"].view_names == ("clipA",)
    for e in entries.values():
        assert e.kind == "frames" and len(e.inputs) == 1 and e.fps is None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clip = video.read_frame_folder(e.inputs[0], view_names=e.view_names)
        assert bool(caught) == (e.clip_id == "mead_named")  # the frame only one view has is dropped
        assert clip.view_names == e.view_names
        assert clip.num_frames == e.num_frames


def test_unreadable_frame_folder_is_skipped_with_a_warning(tmp_path, caplog):
    root = tmp_path / "r"
    _tiny_jpg(root / "bad" / "cover.jpg")  # no frame number: read_frame_folder would reject it
    _touch(root / "bad" / "movie.mp4")  # the video next to it is still a clip
    with caplog.at_level(logging.WARNING, logger="neuface_jax.dataset.manifest"):
        entries = mf.build_manifest(root)
    assert [(e.clip_id, e.kind) for e in entries] == [("bad/movie", "video")]
    assert any("not a readable frame folder" in r.message for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# Layout (d): synth clip folders


def _write_tiny_synth(out, views=("front", "left_30"), frames=3, seed=7):
    from neuface_jax.synthetic import synth

    t, w = frames, len(views)
    clip = synth.SynthClip(
        images=np.full((t, w, 16, 16, 3), 90, np.uint8),
        landmarks68=np.zeros((t, w, 68, 2), np.float32), visible68=np.ones((t, w, 68), bool),
        landmarks_mp=None, visible_mp=None, valid=np.ones((t, w), bool),
        crop_transforms=np.zeros((t, w, 2, 3), np.float32), gt={"shape": np.zeros(3, np.float32)},
        camera={"focal_px": 100.0}, view_names=tuple(views), fps=12.5,
        meta={"seed": seed, "model": "demo-head", "num_frames": t},
    )
    return synth.write_clip(clip, out)


def test_synth_clip_folder(tmp_path):
    root = tmp_path / "synth_set"
    _write_tiny_synth(root / "s0", views=("left_30", "front"), frames=3, seed=7)
    _write_tiny_synth(root / "s1", views=("front",), frames=2, seed=8)
    entries = _by_id(mf.build_manifest(root))
    assert sorted(entries) == ["s0", "s1"]  # the per-view mp4s are not listed as video clips
    e = entries["s0"]
    assert e.kind == "synth"
    assert e.view_names == ("left_30", "front")  # clip.json's order
    assert e.inputs == (str(root / "s0" / "left_30.mp4"), str(root / "s0" / "front.mp4"))
    assert e.landmarks == str(root / "s0" / "landmarks.npz")
    assert e.num_frames == 3 and e.fps == pytest.approx(12.5)
    assert e.meta["synthetic"] is True and e.meta["seed"] == 7
    assert entries["s1"].meta["seed"] == 8 and entries["s1"].num_frames == 2
    # The root itself being a clip folder: the clip takes the root's name.
    [alone] = mf.build_manifest(root / "s1")
    assert alone.clip_id == "s1" and alone.kind == "synth"
    # Explicit layouts: synth finds both; videos lists every per-view file instead.
    assert len(mf.build_manifest(root, layout="synth")) == 2
    assert sorted(e.clip_id for e in mf.build_manifest(root, layout="videos")) == [
        "s0/front", "s0/left_30", "s1/front"]


def test_clip_json_of_another_format_is_an_ordinary_folder(tmp_path, caplog):
    root = tmp_path / "r"
    _touch(root / "c" / "clip.json", json.dumps({"format": "something-else"}).encode())
    _touch(root / "c" / "v.mp4")
    with caplog.at_level(logging.WARNING, logger="neuface_jax.dataset.manifest"):
        entries = mf.build_manifest(root)
    assert [(e.clip_id, e.kind) for e in entries] == [("c/v", "video")]
    assert any("something-else" in r.message for r in caplog.records)


# ---------------------------------------------------------------------------------------------
# auto: mixed trees, each file once


def test_auto_mixed_tree_lists_each_file_once(tmp_path):
    root = tmp_path / "mixed"
    _write_tiny_synth(root / "synthetic" / "clip0", frames=2)
    _mead_tree(root / "MEAD", [("front", "angry", "level_1", "001"), ("left_30", "angry", "level_1", "001")])
    for i in range(2):
        _tiny_jpg(root / "frames" / "seq" / f"{i:04d}.jpg")
    _touch(root / "vox" / "id1" / "yt" / "00001.mp4")
    entries = mf.build_manifest(root)
    assert {e.clip_id: e.kind for e in entries} == {
        "synthetic/clip0": "synth", "MEAD/M003/angry/level_1/001": "mead", "frames/seq": "frames",
        "vox/id1/yt/00001": "video",
    }
    assert [e.clip_id for e in entries] == sorted(e.clip_id for e in entries)
    # Every video file in the tree is an input of exactly one clip.
    videos = sorted(str(p) for p in root.rglob("*.mp4"))
    listed = sorted(p for e in entries if e.kind != "frames" for p in e.inputs)
    assert listed == videos
    # Explicit layouts find only their own clips.
    assert [e.kind for e in mf.build_manifest(root, layout="mead")] == ["mead"]
    assert [e.clip_id for e in mf.build_manifest(root, layout="frames")] == ["frames/seq"]


# ---------------------------------------------------------------------------------------------
# JSON lines: round trip, relative paths, atomic writes


def _sample_entries(root):
    return [
        mf.ClipEntry("b/clip", "video", (str(root / "b" / "clip.mp4"),), ("front",), num_frames=12, fps=25.0),
        mf.ClipEntry("a/take", "mead", (str(root / "a" / "front.mp4"), str(root / "a" / "top.mp4")),
                     ("front", "top"), meta={"subject": "M003", "take": "001"}),
        mf.ClipEntry("s", "synth", (str(root / "s" / "front.mp4"),), ("front",),
                     landmarks=str(root / "s" / "landmarks.npz"), num_frames=3, fps=12.5, meta={"seed": 1}),
        mf.ClipEntry("f", "frames", (str(root / "f"),), ("cam0", "cam1"), num_frames=4),
    ]


def test_round_trip_relative_paths_and_move(tmp_path):
    ds = tmp_path / "dataset"
    outside = tmp_path / "other" / "ext.mp4"
    entries = _sample_entries(ds) + [mf.ClipEntry("ext", "video", (str(outside),), ("front",))]
    path = mf.write_manifest(entries, ds / "manifest.jsonl")
    lines = path.read_text().splitlines()
    objs = [json.loads(ln) for ln in lines]
    assert [o["clip_id"] for o in objs] == ["a/take", "b/clip", "ext", "f", "s"]  # sorted
    assert list(objs[0]) == ["clip_id", "kind", "inputs", "view_names", "landmarks", "num_frames", "fps", "meta"]
    assert objs[0]["inputs"] == ["a/front.mp4", "a/top.mp4"]
    assert objs[4]["landmarks"] == "s/landmarks.npz"
    assert objs[2]["inputs"] == [str(outside)]  # not under the manifest's folder: absolute
    back = mf.read_manifest(path)
    assert _by_id(back) == _by_id(entries)
    # Move the dataset folder with its manifest: paths follow; the outside one stays.
    moved = tmp_path / "moved" / "ds"
    moved.parent.mkdir()
    ds.mkdir(exist_ok=True)
    os.rename(ds, moved)
    again = _by_id(mf.read_manifest(moved / "manifest.jsonl"))
    assert again["a/take"].inputs == (str(moved / "a" / "front.mp4"), str(moved / "a" / "top.mp4"))
    assert again["s"].landmarks == str(moved / "s" / "landmarks.npz")
    assert again["f"].inputs == (str(moved / "f"),)
    assert again["ext"].inputs == (str(outside),)
    # Missing inputs are not checked at read time.
    assert not (moved / "a" / "front.mp4").exists()


def test_built_manifest_round_trip(tmp_path):
    root = tmp_path / "data"
    _mead_tree(root, [("front", "angry", "level_1", "001"), ("down", "angry", "level_1", "001")])
    _touch(root / "x" / "y.webm")
    built = mf.build_manifest(root)
    path = mf.write_manifest(built, root / "manifest.jsonl")
    assert mf.read_manifest(path) == built
    # Rebuilding with the manifest inside the root lists the same clips (a .jsonl is not a clip).
    assert mf.build_manifest(root) == built


def test_write_is_atomic_and_validates(tmp_path):
    path = tmp_path / "m.jsonl"
    entries = _sample_entries(tmp_path)
    mf.write_manifest(entries, path)
    before = path.read_bytes()
    bad = entries + [mf.ClipEntry("z", "video", ("z.mp4",), ("front",), meta={"x": object()})]
    with pytest.raises(TypeError):
        mf.write_manifest(bad, path)
    assert path.read_bytes() == before  # the old manifest is intact
    dup = entries + [mf.ClipEntry("a/take", "video", ("z.mp4",), ("front",))]
    with pytest.raises(ValueError, match="duplicate clip_id 'a/take'"):
        mf.write_manifest(dup, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]  # no temporary files left
    mf.write_manifest(entries[:1], path)  # overwriting works
    assert [e.clip_id for e in mf.read_manifest(path)] == ["b/clip"]


def test_clip_entry_validation():
    with pytest.raises(ValueError, match="unsafe clip_id"):
        mf.ClipEntry("../x", "video", ("a.mp4",), ("front",))
    with pytest.raises(ValueError, match="kind"):
        mf.ClipEntry("x", "movie", ("a.mp4",), ("front",))
    with pytest.raises(ValueError, match="2 inputs but 1 view_names"):
        mf.ClipEntry("x", "mead", ("a.mp4", "b.mp4"), ("front",))
    with pytest.raises(ValueError, match="num_frames"):
        mf.ClipEntry("x", "video", ("a.mp4",), ("front",), num_frames=0)
    with pytest.raises(ValueError, match="inputs"):
        mf.ClipEntry("x", "video", "a.mp4", ("front",))
    e = mf.ClipEntry("x", "video", ["a.mp4"], ["front"], fps=25)
    assert e.inputs == ("a.mp4",) and e.view_names == ("front",) and e.fps == 25.0 and isinstance(e.fps, float)


def _write_lines(path, lines):
    path.write_text("".join(ln + "\n" for ln in lines))
    return path


def test_read_malformed_lines_name_file_and_line(tmp_path):
    ok = json.dumps({"clip_id": "a", "kind": "video", "inputs": ["a.mp4"]})
    ok2 = json.dumps({"clip_id": "b", "kind": "video", "inputs": ["b.mp4"]})
    cases = {
        "bad JSON": [ok, "", '{"clip_id": "b", "kind": '],
        "missing clip_id": [ok, "", json.dumps({"kind": "video", "inputs": ["b.mp4"]})],
        "duplicate clip_id 'a' (first on line 1)": [ok, "", json.dumps({"clip_id": "a", "kind": "video",
                                                                         "inputs": ["c.mp4"]})],
        "unsafe clip_id": [ok, "", json.dumps({"clip_id": "../b", "kind": "video", "inputs": ["b.mp4"]})],
        "missing inputs": [ok, "", json.dumps({"clip_id": "b", "kind": "video"})],
        "frames entry needs view_names": [ok, "", json.dumps({"clip_id": "b", "kind": "frames",
                                                               "inputs": ["f"]})],
        "expected a JSON object": [ok, "", "[1, 2]"],
    }
    for what, lines in cases.items():
        path = _write_lines(tmp_path / "m.jsonl", lines)
        with pytest.raises(ValueError) as info:
            mf.read_manifest(path)
        msg = str(info.value)
        assert msg.startswith(f"{path}:3: "), msg
        assert what in msg, msg
    # Defaults: blank lines skipped, one input → "front", several → file stems.
    path = _write_lines(tmp_path / "m.jsonl", [ok, "   ", ok2, json.dumps(
        {"clip_id": "c", "kind": "mead", "inputs": ["x/front.mp4", "/abs/top.mp4"]})])
    entries = mf.read_manifest(path)
    assert [e.view_names for e in entries] == [("front",), ("front",), ("front", "top")]
    assert entries[0].inputs == (str(tmp_path / "a.mp4"),)
    assert entries[2].inputs == (str(tmp_path / "x" / "front.mp4"), "/abs/top.mp4")
    assert entries[0].meta == {} and entries[0].num_frames is None


# ---------------------------------------------------------------------------------------------
# Sharding


def test_shards_partition_the_clips_independently_of_order():
    ids = [f"id{i:05d}/yt{i % 7}/{i:05d}" for i in range(300)]
    entries = [mf.ClipEntry(i, "video", (f"/x/{i}.mp4",), ("front",)) for i in ids]
    assert mf.shard_of("hello", 1000) == 0x3610A686 % 1000  # the standard CRC-32 of b"hello"
    for n in (1, 3, 8):
        shards = [mf.select_shard(entries, k, n) for k in range(n)]
        got = [e.clip_id for s in shards for e in s]
        assert sorted(got) == sorted(ids) and len(got) == len(ids)  # each clip exactly once
        if n > 1:
            assert all(len(s) > 0 for s in shards)
        shuffled = entries[:]
        random.Random(0).shuffle(shuffled)
        for k in range(n):
            assert mf.select_shard(shuffled, k, n) == shards[k]
            assert [e.clip_id for e in shards[k]] == sorted(e.clip_id for e in shards[k])
            # A clip's shard does not depend on the other entries.
            assert mf.select_shard(shuffled[:50], k, n) == [e for e in shards[k] if e in shuffled[:50]]
    for bad in [(0, 0), (2, 2), (-1, 2), (True, 2)]:
        with pytest.raises(ValueError):
            mf.select_shard(entries, *bad)
    with pytest.raises(ValueError):
        mf.shard_of("a", 0)


# ---------------------------------------------------------------------------------------------
# Errors, probing, CLI


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path / 'nope'} does not exist"):
        mf.build_manifest(tmp_path / "nope")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    _touch(tmp_path / "empty" / "readme.txt")
    with pytest.raises(ValueError, match=f"{tmp_path / 'empty'} holds no clips"):
        mf.build_manifest(tmp_path / "empty")
    _touch(tmp_path / "vids" / "a.mp4")
    with pytest.raises(ValueError, match="holds no clips of the 'mead' layout"):
        mf.build_manifest(tmp_path / "vids", layout="mead")
    with pytest.raises(ValueError, match="unknown layout"):
        mf.build_manifest(tmp_path / "vids", layout="voxceleb")


def test_probe_frames_counts_and_unreadable_videos(tmp_path, caplog):
    root = tmp_path / "v"
    _tiny_video(root / "five.mp4", 5, fps=10.0)
    _tiny_video(root / "seven.mkv", 7, fps=30.0)
    _touch(root / "broken.mp4", b"this is not a video" * 10)
    with caplog.at_level(logging.WARNING, logger="neuface_jax.dataset.manifest"):
        entries = _by_id(mf.build_manifest(root, probe_frames=True))
    assert (entries["five"].num_frames, entries["five"].fps) == (5, pytest.approx(10.0))
    assert (entries["seven"].num_frames, entries["seven"].fps) == (7, pytest.approx(30.0))
    assert entries["broken"].num_frames is None and "broken.mp4" in entries["broken"].meta["probe_error"]
    assert any("cannot count frames" in r.message for r in caplog.records)
    # Without probing nothing is opened.
    assert mf.build_manifest(root)[0].num_frames is None
    with pytest.raises(video.VideoError, match="no such file"):
        mf.probe_video_frames(root / "missing.mp4")


def test_cli(tmp_path, capsys):
    root = tmp_path / "data"
    _tiny_video(root / "id1" / "yt" / "00001.mp4", 3, fps=25.0)
    _mead_tree(root, [("front", "angry", "level_1", "001")])
    out = root / "manifest.jsonl"
    rc = manifest_main(["neuface-jax manifest", f"--root={root}", f"--out={out}", "--probe_frames"])
    assert rc == 0
    assert "wrote 2 clips (mead 1, video 1; 2 clips of 1 view = 2 view streams)" in capsys.readouterr().out
    entries = _by_id(mf.read_manifest(out))
    assert entries["id1/yt/00001"].num_frames == 3
    assert json.loads(out.read_text().splitlines()[1])["inputs"] == ["id1/yt/00001.mp4"]
    assert entries["M003/angry/level_1/001"].meta.get("probe_error")  # an empty file: recorded, not fatal
    rc = manifest_main(["neuface-jax manifest", f"--root={root}", f"--out={tmp_path / 'v.jsonl'}",
                        "--layout=videos"])
    assert rc == 0 and len(mf.read_manifest(tmp_path / "v.jsonl")) == 2
    assert manifest_main(["neuface-jax manifest", f"--out={out}"]) == 2
    assert manifest_main(["neuface-jax manifest", f"--root={tmp_path / 'nope'}", f"--out={out}"]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        manifest_main(["neuface-jax manifest", "--layout=bogus", f"--root={root}", f"--out={out}"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        manifest_main(["neuface-jax manifest", "--help"])
    assert info.value.code == 0 and "--probe_frames" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Real data


@pytest.mark.shared_data
def test_manifest_of_the_shared_videos(shared_data, tmp_path):
    out = tmp_path / "videos.jsonl"
    rc = manifest_main(["neuface-jax manifest", f"--root={shared_data / 'videos'}", f"--out={out}",
                        "--probe_frames"])
    assert rc == 0
    entries = _by_id(mf.read_manifest(out))
    assert {k: (e.kind, e.num_frames) for k, e in entries.items()} == {
        "mead_M003_level_1_disgusted_015": ("video", 118),
        "liveportrait_d20": ("video", 175),
        "metrical_tracker_wojtek": ("video", 400),
        "multiview/vhap_nersemble_038_EMO-1_3views": ("video", 97),
    }
    for e in entries.values():
        assert e.fps == pytest.approx(25.0)
        assert os.path.isabs(e.inputs[0]) and os.path.isfile(e.inputs[0])
    # The probe's count is what decoding yields.
    n = sum(1 for _ in video.iter_video_frames(entries["liveportrait_d20"].inputs[0]))
    assert n == entries["liveportrait_d20"].num_frames
