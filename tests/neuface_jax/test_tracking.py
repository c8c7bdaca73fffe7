"""One face per track: the tracker across several faces and shot cuts, the reasons of invalid frames,
shots, the "no face" overlay, and upside-down views."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from neuface_jax.media import detect, export, landmarker, sources, video

FACE_A = "images/deca_AFLW2000_image00480.jpg"  # 450 x 450
FACE_B = "images/deca_AFLW2000_image04085.jpg"  # 450 x 450
SIZE = (640, 480)


def _face(cx, cy, size):
    """A fake [478, 3] face: points spread over a square of side ``size`` centred at (cx, cy)."""
    g = np.random.default_rng(0).uniform(-0.5, 0.5, size=(478, 3))
    g[0, :2], g[1, :2] = -0.5, 0.5
    return (g * [size, size, size] + [cx, cy, 0]).astype(np.float32)


def _run(tracker, frames, cuts=()):
    out = []
    for i, faces in enumerate(frames):
        k = tracker.choose(np.stack(faces) if faces else np.zeros((0, 478, 3), np.float32), i, SIZE, cut=i in cuts)
        out.append((k, tracker.reason))
    return out


def test_tracker_does_not_take_another_face_after_a_cut():
    """Before: lost for longer than ``reacquire_s``, the tracker chose afresh, whoever it was."""
    a, b_small, b_big = _face(200, 240, 150), _face(520, 240, 80), _face(360, 240, 210)
    frames = [[a, b_small]] * 3 + [[b_big]] * 15 + [[b_small, a]] * 2
    got = _run(landmarker.FaceTracker(landmarker.LandmarkerOptions(reacquire_s=0.5), fps=10), frames, cuts={3, 18})
    assert [k for k, _ in got[:3]] == [0, 0, 0]
    assert all(k is None and r == landmarker.AFTER_CUT for k, r in got[3:18])
    assert [k for k, _ in got[18:]] == [1, 1]  # the same face where it was: the track goes on
    # Starting a new track at each cut (clips split into shots) takes the shot's own face.
    opts = landmarker.LandmarkerOptions(reacquire_s=0.5, new_track_at_cuts=True)
    got = _run(landmarker.FaceTracker(opts, fps=10), frames, cuts={3, 18})
    assert all(k == 0 and r == landmarker.FACE for k, r in got[3:18])
    # Without a cut, another face elsewhere is "only other faces"; no face at all is "no face".
    tr = landmarker.FaceTracker(landmarker.LandmarkerOptions(), fps=10)
    assert _run(tr, [[a], [b_small], []]) == [(0, 0), (None, landmarker.OTHER_FACES), (None, landmarker.NO_FACE)]


def test_track_choice_options():
    left, middle, right = _face(100, 240, 100), _face(330, 240, 120), _face(560, 240, 160)
    faces = np.stack([right, left, middle])
    pick = lambda track: landmarker.FaceTracker(landmarker.LandmarkerOptions(track=track), 25).choose(faces, 0, SIZE)  # noqa: E731
    assert pick("central") == 2 and pick("largest") == 0 and pick("first") == 1
    assert pick("0") == 1 and pick("1") == 2 and pick("2") == 0 and pick("5") is None
    with pytest.raises(ValueError, match="track"):
        landmarker.LandmarkerOptions(track="loudest")


def test_cut_detection_and_shots():
    rng = np.random.default_rng(0)
    a = np.full((48, 64, 3), 60, np.uint8)
    a[:, :32] = 200
    noisy = np.clip(a + rng.integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
    b = np.zeros((48, 64, 3), np.uint8)
    b[..., 2] = 180
    sig = landmarker.frame_signature
    assert not landmarker.is_cut(sig(a), sig(noisy), 0.4)
    assert landmarker.is_cut(sig(a), sig(b), 0.4)
    assert not landmarker.is_cut(sig(a), sig(b), 1.0) and not landmarker.is_cut(None, sig(b), 0.4)
    assert detect.shot_ranges([3, 7], 10) == [(0, 3), (3, 7), (7, 10)]
    assert detect.shot_ranges([], 4) == [(0, 4)]
    runs = landmarker.reason_runs(np.array([0, 1, 1, 0, 3, 3, 2]), np.arange(10, 17))
    assert runs == [[11, 12, "no face detected"], [14, 15, landmarker.REASONS[3]], [16, 16, landmarker.REASONS[2]]]


def test_overlay_draws_no_face_on_invalid_frames():
    """Before: the fitted (made-up) mesh was drawn on frames without the face."""
    images = np.full((2, 1, 64, 64, 3), 90, np.uint8)
    verts = np.array([[[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]]] * 2)[:, None]  # [T, W, 3, 3]
    cams = np.tile([1.0, 0.0, 0.0], (2, 1, 1))
    crop = np.tile(np.array([[224 / 64, 0, 0], [0, 224 / 64, 0]]), (2, 1, 1, 1))
    faces = np.array([[0, 1, 2]])
    out = export.overlay_frames(images, verts, cams, crop, faces, valid=np.array([[True], [False]]), max_side=64)
    centre = (slice(24, 40), slice(24, 40))
    assert np.abs(out[0][centre].astype(int) - 90).max() > 10  # the mesh over the face
    assert np.all(out[1][centre] == 90)  # no mesh where the face is absent
    red = (out[1][..., 0] > 180) & (out[1][..., 1] < 80)
    assert red[:, 0].all() and red[0].all()  # the "no face" frame


def _canvas(bg, *placed):
    img = np.empty((240, 360, 3), np.uint8)
    img[:] = bg
    for face, x, y, s in placed:
        small = face[:: 450 // s, :: 450 // s][:s, :s]
        img[y : y + s, x : x + s] = small
    return img


@pytest.mark.shared_data
def test_identity_is_not_switched_after_a_cut(shared_data, landmarker_model):
    """Before: after the cut to the other person (longer than ``reacquire_s``) the track took them."""
    a, b = video.read_image(shared_data / FACE_A), video.read_image(shared_data / FACE_B)
    two = _canvas((40, 40, 40), (a, 20, 15, 225), (b, 270, 150, 75))  # A large on the left, B small
    solo = _canvas((150, 170, 200), (b, 67, 15, 225))  # another shot: B alone, large, centred
    frames = np.stack([two] * 3 + [solo] * 8 + [two] * 2)
    clip = video.VideoClip(frames=[frames], view_names=("v",), fps=5.0, frame_indices=np.arange(13))
    opts = landmarker.LandmarkerOptions(num_faces=2, check_orientation=False)
    det = detect.decode_and_detect(sources.open_source(clip), model_path=landmarker_model, options=opts, use_cache=False)
    lm = det.landmarks[0]
    np.testing.assert_array_equal(lm.valid, [True] * 3 + [False] * 8 + [True] * 2)
    assert set(lm.reason[3:11].tolist()) == {landmarker.AFTER_CUT}
    assert det.cuts == ((3, 11),) and det.shots() == [(0, 3), (3, 11), (11, 13)]
    assert det.info["shot_cuts"] == {"v": [3, 11]}
    assert det.info["invalid_frames"]["v"] == [[3, 10, landmarker.REASONS[landmarker.AFTER_CUT]]]
    # The tracked face is A's (left), before and after the cut.
    assert (lm.xy[[0, 1, 2, 11, 12], :, 0].mean(axis=1) < 180).all()


def _upside_down_video(tmp_path, face, rotation=None):
    frames = np.stack([face[::-1, ::-1]] * 4)
    path = video.write_video(tmp_path / "turned.mp4", frames, fps=10)
    if rotation is None:
        return path
    fixed = tmp_path / "fixed.mp4"
    cmd = [video.ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", str(rotation), "-i", str(path), "-c", "copy", str(fixed)]
    subprocess.run(cmd, check=True)
    return fixed


@pytest.mark.shared_data
def test_upside_down_view_is_flagged_not_fitted(shared_data, landmarker_model, tmp_path):
    """Before: the landmarker put an upright mesh on the inverted face (eyes on the mouth), silently."""
    face = video.read_image(shared_data / FACE_A)[::2, ::2]
    turned = _upside_down_video(tmp_path, face)
    with pytest.raises(detect.NoFaceError, match="upside down"), pytest.warns(UserWarning, match="upside down"):
        detect.decode_and_detect(sources.open_source(str(turned)), model_path=landmarker_model, use_cache=False)
    # Next to an upright view it is masked, with a warning, a note and the reason on every frame.
    upright = video.write_video(tmp_path / "upright.mp4", np.stack([face] * 4), fps=10)
    with pytest.warns(UserWarning, match="upside down"):
        det = detect.decode_and_detect(
            sources.open_source([str(upright), str(turned)]), model_path=landmarker_model, use_cache=False
        )
    up, down = det.landmarks
    assert up.valid.all() and not down.valid.any()
    assert set(down.reason.tolist()) == {landmarker.UPSIDE_DOWN}
    assert any("upside down" in n for n in det.notes)
    assert det.info["orientation"]["turned"]["upside_down"] and not det.info["orientation"]["upright"]["upside_down"]
    # The right rotation metadata on the same pixels: decoded upright, detected, not flagged.
    fixed = _upside_down_video(tmp_path, face, rotation=180)
    det = detect.decode_and_detect(sources.open_source(str(fixed)), model_path=landmarker_model, use_cache=False)
    assert det.landmarks[0].valid.all() and not det.info["orientation"]["fixed"]["upside_down"]


def test_find_shots_gives_a_frame_range_per_shot():
    a = np.full((6, 32, 48, 3), 40, np.uint8)
    b = np.zeros((4, 32, 48, 3), np.uint8)
    b[..., 2] = 200
    clip = video.VideoClip(frames=[np.concatenate([a, b, a])], view_names=("v",), fps=25.0, frame_indices=np.arange(10, 26))
    shots = detect.find_shots(sources.open_source(clip))
    assert [(r.start, r.end) for r in shots] == [(10, 16), (16, 20), (20, 26)]


@pytest.mark.shared_data
def test_annotate_splits_a_clip_at_its_cuts(shared_data, landmarker_model, tmp_path):
    """``--split_at_cuts``: one output per shot, each with its own face track, listed in shots.json."""
    import json

    from neuface_jax import annotation

    a, b = video.read_image(shared_data / FACE_A), video.read_image(shared_data / FACE_B)
    two = _canvas((40, 40, 40), (a, 20, 15, 225), (b, 270, 150, 75))
    solo = _canvas((150, 170, 200), (b, 67, 15, 225))
    clip = video.VideoClip(frames=[np.stack([two] * 4 + [solo] * 4)], view_names=("v",), fps=5.0,
                           frame_indices=np.arange(8))
    out = tmp_path / "out"
    summaries = annotation.annotate_shots(
        clip, out_dir=out,
        setup=annotation.SetupConfig(epochs=1, chunk_frames=4, face_landmarker=str(landmarker_model), refine_steps=0),
        prepare=annotation.PrepareConfig(use_cache=False), output=annotation.OutputConfig(write_video=False),
    )
    listing = json.loads((out / "shots.json").read_text())["shots"]
    assert [(s["folder"], s["start"], s["end"]) for s in listing] == [("shot_00", 0, 4), ("shot_01", 4, 8)]
    assert len(summaries) == 2
    for s, (lo, hi) in zip(summaries, [(0, 4), (4, 8)]):
        with np.load(s["files"]["params"]) as p:
            np.testing.assert_array_equal(p["frame_indices"], np.arange(lo, hi))
        assert s["valid_fraction"] == {"v": 1.0}  # the second shot tracks B from its first frame, not "after a cut"
