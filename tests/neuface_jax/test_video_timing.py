"""Video timing: the file's own frame numbers, stream start offsets, views of different frame rates
synchronized by time (trims and resampling recorded), rotation metadata."""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pytest

from neuface_jax.media import sources, video


def _ffmpeg(*args):
    subprocess.run([video.ffmpeg_exe(), "-nostdin", "-v", "error", "-y", *args], check=True)


def _counting(path, n, fps):
    """A flat grey video whose brightness encodes each frame's own number (10 + 6 i)."""
    frames = np.zeros((n, 32, 48, 3), np.uint8)
    for i in range(n):
        frames[i] = 10 + 6 * i
    return video.write_video(path, frames, fps=fps, crf=0)


def _numbers(frames):
    return np.round((np.asarray(frames, np.float64).mean(axis=(1, 2, 3)) - 10) / 6).astype(int)


def _late_start(tmp_path, n=10, offset=0.4):
    """A video whose stream starts ``offset`` s after the container (an audio stream starts at 0)."""
    base = _counting(tmp_path / "base.mp4", n, 25)
    out = tmp_path / "late.mp4"
    _ffmpeg(
        "-f", "lavfi", "-t", "0.8", "-i", "anullsrc=r=8000:cl=mono", "-itsoffset", str(offset), "-i", str(base),
        "-map", "1:v", "-map", "0:a", "-c:v", "copy", "-c:a", "aac", str(out),
    )  # fmt: skip
    return out


def test_stream_starting_late_keeps_the_files_frames(tmp_path):
    """Before: 20 frames, the first 11 copies of frame 0 (a constant-rate timeline from t = 0)."""
    path = _late_start(tmp_path)
    info = video.probe_video(path)
    assert info.start_s == pytest.approx(0.4)
    clip = video.read_video(path)
    np.testing.assert_array_equal(clip.frame_indices, np.arange(10))
    np.testing.assert_array_equal(_numbers(clip.frames[0]), np.arange(10))
    # A range in frames and the streaming reader give the same numbering.
    part = video.read_video(path, frames=video.FrameRange(start=3, end=7))
    np.testing.assert_array_equal(_numbers(part.frames[0]), [3, 4, 5, 6])
    # The start offset reaches the Source's info (metrics.json).
    src = sources.open_source(str(path))
    assert [i for i, _ in src.stream()] == list(range(10))
    assert src.info["views"]["late"]["start_s"] == pytest.approx(0.4)


def test_views_of_different_rates_are_synchronized_by_time(tmp_path):
    """Before: paired by index with a warning (frame 10 of the 30 fps view beside frame 10 at 25 fps)."""
    a = _counting(tmp_path / "slow.mp4", 10, 25)  # 0.4 s
    b = _counting(tmp_path / "fast.mp4", 12, 30)  # 0.4 s
    report = {}
    with pytest.warns(UserWarning, match="synchronized by time"):
        clip = video.read_videos([b, a], ["fast", "slow"], report=report)
    assert clip.fps == 25.0 and clip.view_names == ("fast", "slow")
    np.testing.assert_array_equal(clip.frame_indices, np.arange(10))
    slow, fast = _numbers(clip.view("slow")), _numbers(clip.view("fast"))
    np.testing.assert_array_equal(slow, np.arange(10))
    # Each fast frame is the one nearest in time: |j/30 - i/25| <= half a 30 fps frame.
    assert np.all(np.abs(fast / 30.0 - slow / 25.0) <= 0.5 / 30 + 1e-9)
    assert report["sync"] == "time" and report["timeline"] == {"view": "slow", "fps": 25.0}
    assert report["views"]["fast"]["fps"] == 30.0 and report["views"]["fast"]["frames_used"] == 10
    assert any("resampled" in r and "'fast'" in r for r in report["resampled"])
    with pytest.raises(ValueError, match="strict"):
        video.read_videos([b, a], strict=True)
    # The same through a Source: the stream is on the slow view's frames; its info records the resampling.
    with pytest.warns(UserWarning, match="synchronized by time"):
        src = sources.open_source([str(b), str(a)], view_names=["fast", "slow"])
    assert src.fps == 25.0
    got = list(src.stream())
    assert [i for i, _ in got] == list(range(10))
    np.testing.assert_array_equal(_numbers(np.stack([fr[1] for _, fr in got])), slow)
    np.testing.assert_array_equal(_numbers(np.stack([fr[0] for _, fr in got])), fast)
    assert src.info["resampled"] and src.info["views"]["fast"]["frames_skipped"] == 2
    assert src.cache_ids[0][2] != sources.open_source(str(b)).cache_ids[0][2]


def test_views_starting_at_different_times_are_aligned_and_the_trim_recorded(tmp_path):
    a = _counting(tmp_path / "early.mp4", 10, 25)
    late = _late_start(tmp_path, n=10, offset=0.2)  # its frame 0 is shown with frame 5 of `early`
    report = {}
    with pytest.warns(UserWarning):
        clip = video.read_videos([a, late], ["early", "late"], report=report)
    np.testing.assert_array_equal(_numbers(clip.view("late")), _numbers(clip.view("early")) - 5)
    assert clip.num_frames == 5 and report["trimmed"]


def test_length_trim_is_recorded(tmp_path):
    a = _counting(tmp_path / "a.mp4", 6, 25)
    b = _counting(tmp_path / "b.mp4", 4, 25)
    report = {}
    with pytest.warns(UserWarning, match="trimmed to the shortest"):
        video.read_videos([a, b], report=report)
    assert report["sync"] == "index" and len(report["trimmed"]) == 1
    src = sources.open_source([str(a), str(b)])
    with pytest.warns(UserWarning, match="different frame counts"):
        assert len(list(src.stream())) == 4
    assert src.info["trimmed"]
    # Equal views: nothing recorded, no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = {}
        video.read_videos([a, a], ["x", "y"], report=report)
    assert report["trimmed"] == [] and report["resampled"] == []


def test_rotation_metadata_is_applied_and_recorded(tmp_path):
    frames = np.full((2, 32, 48, 3), 20, np.uint8)
    frames[:, :8, :8] = 250  # a bright block top left as stored
    base = video.write_video(tmp_path / "base.mp4", frames, fps=25, crf=0)
    rotated = tmp_path / "rotated.mp4"
    _ffmpeg("-display_rotation", "180", "-i", str(base), "-c", "copy", str(rotated))
    info = video.probe_video(rotated)
    assert abs(info.rotation) == 180.0
    shown = video.read_video(rotated).frames[0][0]
    assert shown[-4, -4].mean() > 200 and shown[4, 4].mean() < 60  # displayed turned: block bottom right
    assert sources.open_source(str(rotated)).info["views"]["rotated"]["rotation"] == info.rotation


def test_passthrough_option_follows_the_ffmpeg_version():
    assert video.passthrough_args("4.2.2-static") == ["-vsync", "passthrough"]
    assert video.passthrough_args("5.0.1") == ["-vsync", "passthrough"]
    assert video.passthrough_args("5.1") == ["-fps_mode", "passthrough"]
    assert video.passthrough_args("n9.0.2-17-g2a571b6068-20260930") == ["-fps_mode", "passthrough"]
