"""Tests of neuface_jax.media.video: readers, frame ranges, view alignment, corrupt files, writer, split."""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pytest

from neuface_jax.media import video

MEAD = "videos/mead_M003_level_1_disgusted_015.mp4"
LIVEPORTRAIT = "videos/liveportrait_d20.mp4"
COMPOSITE = "videos/multiview/vhap_nersemble_038_EMO-1_3views.mp4"
COMPOSITE_BOXES = {"cam0": (0, 0, 247, 360), "cam1": (0, 360, 247, 720), "cam2": (0, 720, 247, 1080)}


def _pattern_frames(n, h=48, w=64, offset=0):
    """Frames whose mean brightness encodes the frame number (robust to H.264 loss)."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i] = (20 * (i + offset)) % 250
        frames[i, : h // 2, : w // 2, 0] = 255  # a fixed red block
    return frames


def _write(path, frames, fps=25.0):
    return video.write_video(path, frames, fps=fps)


# ---------------------------------------------------------------------------------------------
# Frame ranges


def test_frame_range_seconds_and_stride():
    r = video.FrameRange(start_s=0.2, end_s=0.4, stride=2)
    np.testing.assert_array_equal(r.indices(100, 25.0), [5, 7, 9])
    assert r.select(7, 25.0) and not r.select(8, 25.0) and not r.select(10, 25.0)
    np.testing.assert_array_equal(video.FrameRange(start=3, end=8).indices(6, 25.0), [3, 4, 5])
    np.testing.assert_array_equal(video.FrameRange(stride=4).indices(10, 25.0), [0, 4, 8])
    with pytest.raises(ValueError):
        video.FrameRange(stride=0)
    with pytest.raises(ValueError):
        video.FrameRange(start_s=1.0).bounds(0.0)


# ---------------------------------------------------------------------------------------------
# Real videos


@pytest.mark.shared_data
def test_read_mead_with_time_range_and_stride(shared_data):
    path = shared_data / MEAD
    info = video.probe_video(path)
    assert (info.width, info.height, info.fps) == (1920, 1080, 25.0)
    assert info.estimated_num_frames == 118
    clip = video.read_video(path, frames=video.FrameRange(start_s=1.0, end_s=2.0, stride=5))
    np.testing.assert_array_equal(clip.frame_indices, [25, 30, 35, 40, 45])
    assert clip.view_names == ("mead_M003_level_1_disgusted_015",)
    assert clip.frames[0].shape == (5, 1080, 1920, 3) and clip.frames[0].dtype == np.uint8
    assert clip.fps == 25.0 and clip.effective_fps == 5.0
    np.testing.assert_allclose(clip.timestamps_s, [1.0, 1.2, 1.4, 1.6, 1.8])
    # Same frames by frame numbers; the image is not blank.
    again = video.read_video(path, frames=video.FrameRange(start=25, end=46, stride=5), view_name="front")
    np.testing.assert_array_equal(again.frames[0], clip.frames[0])
    assert again.view_names == ("front",)
    assert clip.frames[0].std() > 10


@pytest.mark.shared_data
def test_stream_counts_all_frames(shared_data):
    path = shared_data / LIVEPORTRAIT
    indices = [i for i, f in video.iter_video_frames(path)]
    assert indices == list(range(175))
    # Early stop releases ffmpeg without error.
    it = video.iter_video_frames(path, frames=video.FrameRange(stride=10))
    assert [next(it)[0] for _ in range(3)] == [0, 10, 20]
    it.close()


@pytest.mark.shared_data
def test_split_composite_into_views(shared_data):
    comp = video.read_video(shared_data / COMPOSITE, frames=video.FrameRange(end=3))
    assert comp.sizes == ((2224, 1080),)
    mv = video.split_views(comp, COMPOSITE_BOXES)
    assert mv.view_names == ("cam0", "cam1", "cam2")
    assert mv.sizes == ((247, 360),) * 3
    assert mv.source_boxes == tuple(COMPOSITE_BOXES.values())
    np.testing.assert_array_equal(mv.view("cam1"), comp.frames[0][:, 360:720, 0:247])
    # The three rows are different cameras, not copies.
    assert np.abs(mv.view("cam0").astype(int) - mv.view("cam1")).mean() > 5
    with pytest.raises(ValueError, match="outside"):
        video.split_views(comp, {"bad": (0, 1000, 247, 1100)})


# ---------------------------------------------------------------------------------------------
# Corrupt, truncated, missing


def _remux_faststart(src, dst):
    subprocess.run(
        [video.ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-c", "copy", "-movflags", "+faststart", str(dst)],
        check=True,
    )


def test_corrupt_and_missing_files_name_the_file(tmp_path):
    good = _write(tmp_path / "good.mp4", _pattern_frames(30))
    data = good.read_bytes()
    cases = {
        "head.mp4": data[: len(data) // 3],  # moov atom (at the end) missing
        "random.mp4": np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
        "empty.mp4": b"",
        "text.mp4": b"this is not a video\n" * 100,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(video.VideoError, match=name) as e:
            video.read_video(tmp_path / name)
        assert isinstance(e.value, ValueError) and e.value.path.endswith(name)
    with pytest.raises(video.VideoError, match="no_such.mp4"):
        video.read_video(tmp_path / "no_such.mp4")
    with pytest.raises(video.VideoError, match="folder"):
        video.read_video(tmp_path)


def test_truncated_stream_is_an_error_but_earlier_frames_read(tmp_path):
    frames = np.random.default_rng(1).integers(0, 255, (40, 64, 80, 3), dtype=np.uint8)  # noise: big frames
    good = _write(tmp_path / "noise.mp4", frames)
    fs = tmp_path / "faststart.mp4"
    _remux_faststart(good, fs)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fs.read_bytes()[: int(fs.stat().st_size * 0.6)])
    with pytest.raises(video.VideoError, match="cut.mp4.*truncated"):
        video.read_video(cut)
    # Frames before the cut are still readable when the range stops early.
    assert video.read_video(cut, frames=video.FrameRange(end=5)).num_frames == 5


@pytest.mark.shared_data
def test_truncated_real_video(shared_data, tmp_path):
    head = tmp_path / "mead_first_20k.mp4"
    head.write_bytes((shared_data / MEAD).read_bytes()[:20_000])
    with pytest.raises(video.VideoError, match="mead_first_20k.mp4"):
        video.read_video(head)


# ---------------------------------------------------------------------------------------------
# Multi-view alignment


def test_mismatched_view_lengths_trim_with_warning_or_fail_strict(tmp_path):
    a = _write(tmp_path / "a.mp4", _pattern_frames(10))
    b = _write(tmp_path / "b.mp4", _pattern_frames(8))
    with pytest.warns(UserWarning, match="trimmed to the shortest"):
        clip = video.read_videos([a, b], ["left", "right"])
    assert clip.num_frames == 8 and clip.view_names == ("left", "right")
    assert [f.shape for f in clip.frames] == [(8, 48, 64, 3)] * 2
    with pytest.raises(ValueError, match="strict"):
        video.read_videos([a, b], ["left", "right"], strict=True)
    # Equal lengths: no warning; stride applies to every view.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip = video.read_videos([a, a], ["x", "y"], frames=video.FrameRange(stride=3))
    np.testing.assert_array_equal(clip.frame_indices, [0, 3, 6, 9])
    # Streaming: stops at the shortest, then warns / raises.
    with pytest.warns(UserWarning, match="different frame counts"):
        got = [i for i, fr in video.iter_synchronized([a, b])]
    assert got == list(range(8))
    with pytest.raises(ValueError, match="strict"):
        list(video.iter_synchronized([a, b], strict=True))


def test_writer_pads_odd_sizes_and_round_trips(tmp_path):
    frames = _pattern_frames(6, h=17, w=33)
    path = video.write_video(tmp_path / "sub" / "odd.mp4", frames, fps=10)
    info = video.probe_video(path)
    assert (info.width, info.height, info.fps) == (34, 18, 10.0)
    back = video.read_video(path)
    assert back.frames[0].shape == (6, 18, 34, 3)
    # Lossy codec: compare frame brightness ordering and the red block.
    err = np.abs(back.frames[0][:, :17, :33].astype(float) - frames).mean()
    assert err < 12, err
    with video.VideoWriter(tmp_path / "f.mp4", 5) as w:
        w.append(np.zeros((8, 8, 3), np.float32))
        with pytest.raises(ValueError, match="differs"):
            w.append(np.zeros((10, 8, 3), np.uint8))


# ---------------------------------------------------------------------------------------------
# Frame folders


def _write_jpgs(folder, names, frames):
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    for name, f in zip(names, frames):
        iio.imwrite(folder / name, f, quality=95)


def test_frame_folder_mead_naming(tmp_path):
    frames = _pattern_frames(5)
    _write_jpgs(tmp_path, [f"img_{i:04d}_front.jpg" for i in range(1, 6)], frames)
    _write_jpgs(tmp_path, [f"img_{i:04d}_left_30.jpg" for i in range(1, 6)], frames[::-1])
    clip = video.read_frame_folder(tmp_path, fps=30)
    assert clip.view_names == ("front", "left_30")
    np.testing.assert_array_equal(clip.frame_indices, [1, 2, 3, 4, 5])
    assert clip.frames[0].shape == (5, 48, 64, 3) and clip.fps == 30
    np.testing.assert_allclose(clip.frames[0].mean(axis=(1, 2, 3)), frames.mean(axis=(1, 2, 3)), atol=3)
    np.testing.assert_allclose(clip.frames[1].mean(axis=(1, 2, 3)), frames[::-1].mean(axis=(1, 2, 3)), atol=3)
    sub = video.read_frame_folder(tmp_path, view_names=["left_30"], frames=video.FrameRange(stride=2))
    assert sub.view_names == ("left_30",)
    np.testing.assert_array_equal(sub.frame_indices, [1, 3, 5])
    with pytest.raises(video.VideoError, match="views"):
        video.read_frame_folder(tmp_path, view_names=["top"])


def test_frame_folder_plain_numbers_and_subfolders(tmp_path):
    import imageio.v3 as iio

    frames = _pattern_frames(4)
    plain = tmp_path / "plain"
    plain.mkdir()
    for i, f in enumerate(frames):
        iio.imwrite(plain / f"frame_{i * 2:06d}.png", f)  # numbers 0, 2, 4, 6
    clip = video.read_frame_folder(plain)
    assert clip.view_names == ("plain",)
    np.testing.assert_array_equal(clip.frame_indices, [0, 2, 4, 6])
    np.testing.assert_array_equal(clip.frames[0], frames)  # png: lossless
    np.testing.assert_array_equal(video.read_frame_folder(plain, frames=video.FrameRange(start=1, end=3)).frame_indices, [2, 4])

    views = tmp_path / "views"
    for v in ("cam_a", "cam_b"):
        (views / v).mkdir(parents=True)
        for i, f in enumerate(frames):
            iio.imwrite(views / v / f"{i:03d}.png", f)
    clip = video.read_frame_folder(views)
    assert clip.view_names == ("cam_a", "cam_b") and clip.num_frames == 4


def test_frame_folder_mismatch_and_errors(tmp_path):
    frames = _pattern_frames(4)
    _write_jpgs(tmp_path, [f"img_{i:04d}_front.jpg" for i in range(4)], frames)
    _write_jpgs(tmp_path, [f"img_{i:04d}_side.jpg" for i in range(3)], frames[:3])
    with pytest.warns(UserWarning, match="trimmed"):
        clip = video.read_frame_folder(tmp_path)
    assert clip.num_frames == 3
    with pytest.raises(ValueError, match="strict"):
        video.read_frame_folder(tmp_path, strict=True)
    (tmp_path / "img_0000_front.jpg").write_bytes(b"broken")
    with pytest.raises(video.VideoError, match="img_0000_front.jpg"):
        video.read_frame_folder(tmp_path, view_names=["front"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(video.VideoError, match="no frames"):
        video.read_frame_folder(empty)


def test_probe_parses_headers_and_rotation(tmp_path):
    src = _write(tmp_path / "wide.mp4", _pattern_frames(5, h=48, w=64), fps=30)
    info = video.probe_video(src)
    assert (info.width, info.height, info.fps, info.codec) == (64, 48, 30.0, "h264")
    assert info.estimated_num_frames == 5
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(
        [video.ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", "90", "-i", str(src), "-c", "copy", str(rotated)],
        check=True,
    )
    info = video.probe_video(rotated)
    assert (info.width, info.height) == (48, 64)
    clip = video.read_video(rotated)
    assert clip.frames[0].shape == (5, 64, 48, 3)
    # The fixed red block (top-left quarter before rotation) is now in a single quarter of the frame.
    red = (clip.frames[0][0, ..., 0] > 200) & (clip.frames[0][0, ..., 1] < 100)
    assert 0.15 < red.mean() < 0.35
    text = (
        "  Duration: 00:01:02.50, start: 0.000000, bitrate: 1 kb/s\n"
        "  Stream #0:0[0x100]: Video: h264 (High) ([27][0][0][0] / 0x001B), yuv420p, 1280x720 [SAR 1:1], 29.97 fps, 29.97 tbr\n"
    )
    info = video._parse_header(tmp_path / "x.ts", text)
    assert (info.width, info.height, info.fps, info.duration_s) == (1280, 720, 29.97, 62.5)


def test_public_helpers_keep_private_aliases(tmp_path):
    pairs = {
        "read_image": "_read_image", "resolve_view_names": "_view_names",
        "check_file": "_check_file", "spawn": "_spawn", "parse_header": "_parse_header",
        "last_lines": "_last_lines", "scan_frame_folder": "_scan_folder",
    }  # fmt: skip
    for public, private in pairs.items():
        assert getattr(video, public) is getattr(video, private) and public in video.__all__, public
    # a frame range is one FrameRange, checked when made.
    with pytest.raises(ValueError, match="stride"):
        video.FrameRange(stride=0)
    # resolve_view_names: stems, view0.. on clashes, explicit names checked against the count.
    assert video.resolve_view_names(["a/front.mp4", "b/left.mp4"]) == ("front", "left")
    assert video.resolve_view_names(["a/v.mp4", "b/v.mp4"]) == ("view0", "view1")
    assert video.resolve_view_names(["x.mp4"], ["cam"]) == ("cam",)
    with pytest.raises(ValueError, match="2 view names for 1 videos"):
        video.resolve_view_names(["x.mp4"], ["a", "b"])
    # read_image: RGB uint8, grey → 3 channels; missing / empty / garbage files name the file.
    import imageio.v3 as iio

    grey = (np.arange(12 * 10) % 256).astype(np.uint8).reshape(12, 10)
    iio.imwrite(tmp_path / "g.png", grey)
    img = video.read_image(tmp_path / "g.png")
    assert img.shape == (12, 10, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 1], grey)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    for name, msg in [("missing.png", "no such file"), ("empty.png", "empty"), ("junk.png", "not a readable image")]:
        with pytest.raises(video.VideoError, match=msg) as e:
            video.read_image(tmp_path / name)
        assert name in str(e.value)
