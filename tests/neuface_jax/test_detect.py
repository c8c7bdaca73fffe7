"""Tests of the detection stage: neuface_jax.media.landmarker (model file, tracker), sources.prefetch,
detect (the one decode + detect pipeline), landmark_cache, and neuface_jax.media.landmark_sets."""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import threading

import numpy as np
import pytest

from neuface_jax import cli
from neuface_jax.media import detect
from neuface_jax.media import landmark_cache
from neuface_jax.media import landmarker
from neuface_jax.media import sources
from neuface_jax.media import video
from neuface_jax.media import landmark_sets as ls

MONOCULAR = (
    "videos/mead_M003_level_1_disgusted_015.mp4",
    "videos/liveportrait_d20.mp4",
    "videos/metrical_tracker_wojtek.mp4",
)
COMPOSITE = "videos/multiview/vhap_nersemble_038_EMO-1_3views.mp4"
COMPOSITE_BOXES = {"cam0": (0, 0, 247, 360), "cam1": (0, 360, 247, 720), "cam2": (0, 720, 247, 1080)}
PROFILE = "images/deca_AFLW2000_image00181.jpg"


def _read_obj_vertices(path) -> np.ndarray:
    return np.array([[float(v) for v in ln.split()[1:4]] for ln in open(path) if ln.startswith("v ")])


# ---------------------------------------------------------------------------------------------
# Landmark sets


def test_landmark_set_tables():
    assert ls.MEDIAPIPE_TO_IBUG68.shape == (68,) and len(set(ls.MEDIAPIPE_TO_IBUG68.tolist())) == 68
    assert ls.MEDIAPIPE_105_IDS.shape == (105,) and len(set(ls.MEDIAPIPE_105_IDS.tolist())) == 105
    assert ls.MEDIAPIPE_TO_IBUG68.max() < 468 and ls.MEDIAPIPE_105_IDS.max() < 468
    np.testing.assert_array_equal(ls.IRIS_IDS, np.arange(468, 478))
    assert set(ls.MEDIAPIPE_TO_IBUG68[:17].tolist()) <= set(ls.FACE_OVAL_IDS)
    # Mirror permutation is an involution.
    np.testing.assert_array_equal(ls.IBUG68_MIRROR[ls.IBUG68_MIRROR], np.arange(68))
    with pytest.raises(ValueError, match="unknown landmark set"):
        ls.landmark_set_ids("ibug70")


def test_landmark_sets_agree_with_mediapipe_topology():
    from mediapipe.tasks.python.vision import FaceLandmarksConnections as C

    def ids(conns):
        return {i for c in conns for i in (c.start, c.end)}

    oval = C.FACE_LANDMARKS_FACE_OVAL
    assert ids(oval) == set(ls.FACE_OVAL_IDS)
    # FACE_OVAL_IDS is the oval walked in order.
    walk = [oval[0].start] + [c.end for c in oval]
    assert tuple(walk[:-1]) == ls.FACE_OVAL_IDS
    mp105 = ls.MEDIAPIPE_105_IDS
    brows = ids(C.FACE_LANDMARKS_LEFT_EYEBROW) | ids(C.FACE_LANDMARKS_RIGHT_EYEBROW)
    eyes = ids(C.FACE_LANDMARKS_LEFT_EYE) | ids(C.FACE_LANDMARKS_RIGHT_EYE)
    lips = ids(C.FACE_LANDMARKS_LIPS)
    assert set(mp105[:20].tolist()) == brows
    assert set(mp105[20:52].tolist()) == eyes
    assert set(mp105[65:].tolist()) == lips
    assert len(mp105[52:65]) == 13 and not set(mp105[52:65].tolist()) & (brows | eyes | lips)


@pytest.mark.shared_data
def test_ibug68_layout_on_canonical_mesh(shared_data):
    verts = _read_obj_vertices(shared_data / "mediapipe" / "canonical_face_model.obj")
    assert verts.shape == (468, 3)
    # Canonical frame: x = image right, y up, z toward the camera. Image coordinates: (x, -y).
    p = ls.mediapipe_to_ibug68(verts)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    # 36 (outer corner of the image-left eye) < 39 (its inner corner) < 42 < 45, at eye height.
    assert x[36] < x[39] < x[42] < x[45]
    assert x[36] < 0 < x[45]
    assert np.all(np.abs(y[[36, 39, 42, 45]] - y[36]) < 0.5)
    # Lids: upper lid above the lower lid.
    assert y[37] > y[41] and y[38] > y[40] and y[43] > y[47] and y[44] > y[46]
    # Brows above the eyes, outer → inner on the left brow, inner → outer on the right one.
    assert y[17:27].min() > y[36:48].max()
    assert np.all(np.diff(x[17:22]) > 0) and np.all(np.diff(x[22:27]) > 0)
    # Nose: ridge descends to the tip 30, the most anterior of the 68 (and of the whole mesh).
    assert np.all(np.diff(y[27:31]) < 0)
    assert int(np.argmax(z)) == 30 and ls.MEDIAPIPE_TO_IBUG68[30] == int(np.argmax(verts[:, 2]))
    assert np.allclose(x[27:31], 0) and np.allclose(x[[33, 51, 57, 62, 66, 8]], 0)
    assert np.all(np.diff(x[31:36]) > 0) and y[31:36].max() < y[30]
    # Mouth: corners 48/54 left/right of the centre, below the nose; upper lip above lower lip.
    assert x[48] < x[51] < x[54] and x[60] < x[62] < x[64]
    assert max(y[48], y[54]) < y[33]
    assert y[51] > y[62] > y[66] > y[57]
    # Jaw: 0 at eye height near the ear, down to the chin 8 (lowest contour point), up to 16.
    assert int(np.argmin(y[:17])) == 8 and y[8] < y[57]
    assert np.all(np.diff(y[0:9]) < 0) and np.all(np.diff(y[8:17]) > 0)
    assert np.all(np.diff(x[0:17]) > 0)
    assert abs(y[0] - y[36]) < 1.0 and x[0] < x[17] - 1.0
    # Left/right mirror symmetry of the whole table (the canonical mesh is symmetric).
    np.testing.assert_allclose(p[ls.IBUG68_MIRROR] * [-1, 1, 1], p, atol=1e-4)


def test_landmark_set_gathers_shapes_and_jax():
    lmk = np.random.default_rng(0).normal(size=(2, 3, 478, 3)).astype(np.float32)
    out = ls.mediapipe_to_ibug68(lmk)
    assert out.shape == (2, 3, 68, 3)
    np.testing.assert_array_equal(out[..., 30, :], lmk[..., 4, :])
    assert ls.mediapipe_to_105(lmk[..., :2]).shape == (2, 3, 105, 2)
    assert ls.mediapipe_iris(lmk).shape == (2, 3, 10, 3)
    assert ls.select_landmarks(lmk, "mediapipe105_iris").shape == (2, 3, 115, 3)
    with pytest.raises(ValueError, match="478"):
        ls.mediapipe_to_ibug68(np.zeros((68, 2)))
    import jax.numpy as jnp

    np.testing.assert_array_equal(np.asarray(ls.mediapipe_to_105(jnp.asarray(lmk))), lmk[..., ls.MEDIAPIPE_105_IDS, :])


# ---------------------------------------------------------------------------------------------
# Model file: resolution and download


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv(landmarker.MODEL_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_resolve_model_path_precedence(clean_env, monkeypatch):
    tmp = clean_env
    with pytest.raises(landmarker.ModelNotFoundError) as e:
        landmarker.resolve_model_path()
    msg = str(e.value)
    assert landmarker.MODEL_URL in msg and landmarker.MODEL_ENV_VAR in msg and "neuface-jax fetch-models" in msg
    cached = landmarker.default_model_path()
    assert cached == tmp / "cache" / "neuface_jax" / "face_landmarker.task"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"cache")
    assert landmarker.resolve_model_path() == cached
    env_file = tmp / "env.task"
    env_file.write_bytes(b"env")
    monkeypatch.setenv(landmarker.MODEL_ENV_VAR, str(env_file))
    assert landmarker.resolve_model_path() == env_file
    explicit = tmp / "explicit.task"
    explicit.write_bytes(b"explicit")
    assert landmarker.resolve_model_path(explicit) == explicit
    with pytest.raises(landmarker.ModelNotFoundError, match="given explicitly"):
        landmarker.resolve_model_path(tmp / "missing.task")
    monkeypatch.setenv(landmarker.MODEL_ENV_VAR, str(tmp / "gone.task"))
    with pytest.raises(landmarker.ModelNotFoundError, match=landmarker.MODEL_ENV_VAR):
        landmarker.resolve_model_path()


def test_fetch_model_checks_sha256(clean_env):
    tmp = clean_env
    payload = b"pretend model bytes" * 100
    src = tmp / "served.task"
    src.write_bytes(payload)
    good_sha = hashlib.sha256(payload).hexdigest()
    url = src.as_uri()  # file:// works offline through urllib

    dest = landmarker.fetch_model(url=url, sha256=good_sha)
    assert dest == landmarker.default_model_path() and dest.read_bytes() == payload

    # A verified copy is kept: the downloader is not called again.
    def fail(url, path):
        raise AssertionError("should not download")

    assert landmarker.fetch_model(url=url, sha256=good_sha, downloader=fail) == dest

    # Wrong checksum: refused, nothing installed, no temporary left behind.
    other = tmp / "other" / "m.task"
    with pytest.raises(landmarker.ModelChecksumError, match="refusing"):
        landmarker.fetch_model(other, url=url, sha256="0" * 64)
    assert not other.exists() and list(other.parent.iterdir()) == []

    # The official checksum rejects these bytes too (the default expected digest).
    with pytest.raises(landmarker.ModelChecksumError, match=landmarker.MODEL_SHA256):
        landmarker.fetch_model(other, url=url)

    # Injected downloader; offline failure names the URL and how to proceed.
    calls = []

    def fake(url, path):
        calls.append(url)
        pathlib.Path(path).write_bytes(payload)

    assert landmarker.fetch_model(other, url="https://example.invalid/m.task", sha256=good_sha, downloader=fake) == other
    assert calls == ["https://example.invalid/m.task"]

    def offline(url, path):
        raise ConnectionError("no network")

    with pytest.raises(OSError, match="example.invalid.*NEUFACE_FACE_LANDMARKER"):
        landmarker.fetch_model(tmp / "x.task", url="https://example.invalid/m.task", downloader=offline)
    assert cli.main(["neuface-jax", "fetch-models", "--dest", str(tmp / "y.task"), "--url", (tmp / "nothing").as_uri()]) == 1


@pytest.mark.shared_data
def test_fetch_model_accepts_official_bytes(shared_data, tmp_path):
    src = shared_data / "mediapipe" / "face_landmarker.task"
    dest = landmarker.fetch_model(tmp_path / "m.task", url=src.as_uri())
    assert landmarker.sha256_file(dest) == landmarker.MODEL_SHA256


# ---------------------------------------------------------------------------------------------
# Face choice and prefetch (no model needed)


def _face(cx, cy, size):
    """A fake [478, 3] face: points spread over a square of side ``size`` centred at (cx, cy)."""
    g = np.random.default_rng(0).uniform(-0.5, 0.5, size=(478, 3))
    g[0, :2], g[1, :2] = -0.5, 0.5
    return (g * [size, size, size] + [cx, cy, 0]).astype(np.float32)


def test_tracker_picks_largest_central_then_follows():
    opts = landmarker.LandmarkerOptions(reacquire_s=0.5)
    tr = landmarker.FaceTracker(opts, fps=10)
    small_side = _face(80, 240, 60)
    big_centre = _face(320, 240, 150)
    assert tr.choose(np.stack([small_side, big_centre]), 0, (640, 480)) == 1
    # The other person grows and comes closer to the centre: keep following the first choice.
    moved = _face(330, 245, 150)
    other = _face(200, 240, 260)
    assert tr.choose(np.stack([other, moved]), 1, (640, 480)) == 1
    # Tracked face gone, only the other one, far away: no face for this track.
    assert tr.choose(np.stack([_face(60, 240, 100)]), 2, (640, 480)) is None
    assert tr.choose(np.zeros((0, 478, 3), np.float32), 3, (640, 480)) is None
    # Lost for longer than reacquire_s (0.5 s = 5 frames): choose afresh.
    assert tr.choose(np.stack([_face(60, 240, 100)]), 9, (640, 480)) == 0


def test_prefetch_order_errors_and_early_stop():
    assert list(sources.prefetch(range(100), 3)) == list(range(100))
    threads = []

    def gen():
        threads.append(threading.current_thread().name)
        yield 1
        raise RuntimeError("decoder broke")

    it = sources.prefetch(gen(), 2)
    assert next(it) == 1
    with pytest.raises(RuntimeError, match="decoder broke"):
        next(it)
    assert threads == ["neuface-prefetch"]

    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    it = sources.prefetch(endless(), 4)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert closed.wait(2.0)


# ---------------------------------------------------------------------------------------------
# Detection on the shared data


def _interocular(lmk: landmarker.FaceLandmarks) -> np.ndarray:
    p = ls.mediapipe_to_ibug68(lmk.xy)
    return np.linalg.norm(p[:, 36] - p[:, 45], axis=-1)


def _detect(inp, model_path, *, view_boxes=None, label=None, **kw) -> detect.DetectedClip:
    """The one decode + detect pipeline on an input (path, paths or ``video.VideoClip``); ``kw``: frame
    range (``start``/``end``/``stride``) and ``decode_and_detect`` arguments."""
    rng = video.FrameRange(**{k: kw.pop(k) for k in ("start", "end", "stride") if k in kw})
    src = sources.open_source(inp, view_boxes=view_boxes, frames=rng)
    if label:
        src = dataclasses.replace(src, label=label)
    return detect.decode_and_detect(src, model_path=model_path, **kw)


def _arrays(**views) -> video.VideoClip:
    """An in-memory clip: view name → uint8 [T, H, W, 3] frames."""
    t = len(next(iter(views.values())))
    return video.VideoClip(frames=list(views.values()), view_names=tuple(views), fps=25.0, frame_indices=np.arange(t))


@pytest.mark.shared_data
@pytest.mark.parametrize("rel", MONOCULAR)
def test_detect_monocular_clips(shared_data, landmarker_model, rel):
    res = _detect(shared_data / rel, landmarker_model, end=4, use_cache=False).landmarks[0]
    w, h = res.image_size
    assert res.num_frames == 4 and res.valid.all()
    np.testing.assert_array_equal(res.frame_indices, [0, 1, 2, 3])
    assert res.points.shape == (4, 478, 3) and res.points.dtype == np.float32
    xy = res.xy
    assert xy[..., 0].min() > 0 and xy[..., 0].max() < w and xy[..., 1].min() > 0 and xy[..., 1].max() < h
    iod = _interocular(res)
    # Plausible outer-eye-corner distance: 40-600 px, a sensible fraction of the face width.
    face_w = xy[..., 0].max(axis=1) - xy[..., 0].min(axis=1)
    assert np.all((iod > 40) & (iod < 600)), iod
    assert np.all((iod / face_w > 0.4) & (iod / face_w < 0.9)), iod / face_w
    # Image-left eye corner is left of the image-right one (unmirrored frontal faces).
    p68 = ls.mediapipe_to_ibug68(xy)
    assert np.all(p68[:, 36, 0] < p68[:, 45, 0]) and np.all(p68[:, 8, 1] > p68[:, 30, 1])
    # Smooth over consecutive frames (no identity jumps).
    assert np.abs(np.diff(p68, axis=0)).max() < 0.1 * w


@pytest.mark.shared_data
def test_profile_image_has_no_face(shared_data, landmarker_model):
    import imageio.v3 as iio

    img = iio.imread(shared_data / PROFILE)[..., :3]
    frontal = iio.imread(shared_data / "images/deca_AFLW2000_image00480.jpg")[..., :3]
    res = _detect(_arrays(mixed=np.stack([frontal, img])), landmarker_model).landmarks[0]
    np.testing.assert_array_equal(res.valid, [True, False])
    assert np.all(res.points[1] == 0) and res.num_faces[1] == 0
    clip = _detect(_arrays(v=np.stack([img] * 3)), landmarker_model, label="profile-only clip")
    with pytest.raises(detect.NoFaceError, match="profile-only clip.*no face"):
        detect.check_faces(clip.label, clip.view_names, clip.valid)
    # A view without a face beside one with a face: a warning, the view is reported (and masked by annotate).
    two = _detect(_arrays(front=np.stack([frontal] * 2), side=np.stack([img] * 2)), landmarker_model)
    with pytest.warns(UserWarning, match="no face"):
        faceless = detect.check_faces(two.label, two.view_names, two.valid)
    assert list(faceless) == ["side"] and not two.landmarks[1].valid.any()


@pytest.mark.shared_data
def test_composite_views_each_have_a_face(shared_data, landmarker_model, tmp_path):
    comp = video.read_video(shared_data / COMPOSITE, frames=video.FrameRange(end=9, stride=4))
    clip = video.split_views(comp, COMPOSITE_BOXES)
    rec = _detect(clip, landmarker_model, cache_dir=tmp_path)
    res = dict(zip(rec.view_names, rec.landmarks))
    assert list(res) == ["cam0", "cam1", "cam2"]
    for name, r in res.items():
        assert r.valid.all(), name
        assert r.image_size == (247, 360)
        np.testing.assert_array_equal(r.frame_indices, [0, 4, 8])
        assert 25 < _interocular(r).min() and _interocular(r).max() < 150
    # Streaming detection on the box agrees with detection on the split frames.
    streamed = _detect(
        shared_data / COMPOSITE, landmarker_model, view_boxes={"cam1": COMPOSITE_BOXES["cam1"]}, end=9, stride=4,
        use_cache=False,
    ).landmarks[0]
    np.testing.assert_allclose(streamed.points, res["cam1"].points, atol=1e-3)


@pytest.mark.shared_data
def test_landmark_cache_hit(shared_data, landmarker_model, tmp_path, monkeypatch):
    path = shared_data / MONOCULAR[1]
    kw = dict(end=3, cache_dir=tmp_path)
    first = _detect(path, landmarker_model, **kw).landmarks[0]
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith("liveportrait_d20-")

    # Second call must not run MediaPipe at all.
    def boom(*a, **k):
        raise AssertionError("detection ran despite the cache")

    monkeypatch.setattr(landmarker, "FaceLandmarker", boom)
    again = _detect(path, landmarker_model, **kw)
    second = again.landmarks[0]
    assert again.cached == (True,)
    np.testing.assert_array_equal(second.points, first.points)
    np.testing.assert_array_equal(second.valid, first.valid)
    assert second.image_size == first.image_size
    # Other options or frames → a different key → detection would run.
    with pytest.raises(AssertionError, match="despite the cache"):
        _detect(path, landmarker_model, **kw, options=landmarker.LandmarkerOptions(num_faces=1))
    with pytest.raises(AssertionError, match="despite the cache"):
        _detect(path, landmarker_model, **{**kw, "end": 4})


@pytest.mark.shared_data
def test_detection_runs_in_background_thread(shared_data, landmarker_model, monkeypatch):
    threads = []
    real = landmarker.FaceLandmarker.detect

    def spy(self, frame, ts):
        threads.append(threading.current_thread())
        return real(self, frame, ts)

    monkeypatch.setattr(landmarker.FaceLandmarker, "detect", spy)
    res = _detect(shared_data / MONOCULAR[2], landmarker_model, end=3, use_cache=False).landmarks[0]
    assert list(res.frame_indices) == [0, 1, 2]
    assert res.valid.all() and res.points.shape == (3, 478, 3) and np.all(res.num_faces == 1)
    assert len(threads) == 3 and all(t is not threading.main_thread() for t in threads)


def test_decode_only_and_record(tmp_path):
    """``detect=False`` decodes without a model; the record pads views to the largest and keeps their sizes."""
    a = np.full((2, 8, 6, 3), 10, np.uint8)
    b = np.full((2, 4, 10, 3), 200, np.uint8)
    rec = detect.decode_and_detect(sources.open_source(_arrays(a=a, b=b)), detect=False)
    assert rec.images.shape == (2, 2, 8, 10, 3) and rec.image_sizes == ((6, 8), (10, 4))
    assert rec.landmarks is None and rec.cached == (False, False) and rec.view_names == ("a", "b")
    np.testing.assert_array_equal(rec.images[:, 1, :4, :10], b)
    assert not rec.images[:, 1, 4:].any()
    np.testing.assert_array_equal(rec.frame_indices, [0, 1])
    with pytest.raises(ValueError, match="no landmarks"):
        rec.valid
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.label = "x"


# ---------------------------------------------------------------------------------------------
# Public helpers, per-landmark visibility (far-side guesses) and its cache


def test_public_helpers():
    for name in ("cache_file", "load_cached", "CACHE_VERSION"):
        assert name in landmark_cache.__all__
    assert "timestamp_ms" in landmarker.__all__
    assert landmarker.timestamp_ms(50, 25.0) == 2000 and landmarker.timestamp_ms(3, 0.0) == 120  # unknown fps → 25
    p = landmark_cache.cache_file("/c", "/x/My clip (1).mp4", "cam 0", "ab" * 32)
    assert p == pathlib.Path("/c/My_clip__1_-cam_0-" + "ab" * 10 + ".npz")
    assert landmark_cache.cache_file("dir", "/v/a.mp4", None, "f" * 64) == pathlib.Path("dir/a-" + "f" * 20 + ".npz")


def _turned_points(yaw_deg: float, scale: float = 40.0) -> np.ndarray:
    """Image-frame 478 landmarks of the canonical mesh turned by ``yaw_deg`` (a synthetic detection)."""
    c = np.radians(yaw_deg)
    r = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return (scale * (ls.CANONICAL_MESH_VERTICES * [1, -1, -1]) @ r.T + [256, 256, 0]).astype(np.float32)


def test_face_landmarks_visibility_round_trips_through_npz(tmp_path):
    pts = np.stack([_turned_points(0), _turned_points(60), np.zeros((478, 3), np.float32)])
    lm = landmarker.FaceLandmarks(
        points=pts, valid=[True, True, False], frame_indices=[0, 1, 2], image_size=(512, 512), num_faces=[1, 1, 0]
    )
    assert lm.visible.shape == (3, 478) and lm.visible.dtype == bool
    assert lm.visible[0].all() and not lm.visible[2].any()
    assert 60 < (~lm.visible[1]).sum() < 200  # the far side of the 60° turn
    np.testing.assert_array_equal(lm.visible, ls.landmark_visibility(pts, [True, True, False]))
    vxy = lm.visible_xy
    assert np.isnan(vxy[1][~lm.visible[1]]).all() and np.isfinite(vxy[1][lm.visible[1]]).all()
    # A given mask is kept (and-ed with valid) and survives save/load.
    mask = np.ones((3, 478), bool)
    mask[0, :10] = False
    given = dataclasses.replace(lm, visible=mask)
    np.testing.assert_array_equal(given.visible, mask & np.array([True, True, False])[:, None])
    given.save(tmp_path / "a.npz")
    back = landmarker.FaceLandmarks.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(back.visible, given.visible)
    with np.load(tmp_path / "a.npz") as f:
        assert f["visible"].shape == (3, 478)
    # A file written before `visible` existed gets it computed on load.
    old = {k: v for k, v in lm.to_npz_dict().items() if k != "visible"}
    np.savez(tmp_path / "old.npz", **old)
    np.testing.assert_array_equal(landmarker.FaceLandmarks.load(tmp_path / "old.npz").visible, lm.visible)
    # A stricter margin hides more.
    assert lm.with_visibility(0.3).visible.sum() < lm.visible.sum()
    with pytest.raises(ValueError, match="visible must be"):
        dataclasses.replace(lm, visible=np.ones((3, 68), bool))


def test_cache_key_depends_on_the_cache_version(tmp_path, monkeypatch):
    src = tmp_path / "v.mp4"
    src.write_bytes(b"0" * 100)
    model = tmp_path / "m.task"
    model.write_bytes(b"model")
    kw = dict(frames=[0, 1], options=landmarker.LandmarkerOptions(), model_path=model)
    k2 = landmark_cache.cache_key(src, **kw)
    assert landmark_cache.CACHE_VERSION >= 2  # files carry `visible`
    monkeypatch.setattr(landmark_cache, "CACHE_VERSION", 1)
    assert landmark_cache.cache_key(src, **kw) != k2


@pytest.mark.shared_data
def test_far_side_points_invisible_on_turned_head(shared_data, landmarker_model):
    """metrical-tracker wojtek turns its head far to one side around frames 130-185 and faces the camera
    around frames 80-100: far-side jaw points are marked invisible there, frontal frames keep everything."""
    res = _detect(shared_data / MONOCULAR[2], landmarker_model, start=80, end=200, stride=2, use_cache=False).landmarks[0]
    assert res.valid.all() and res.visible.shape == (60, 478)
    x = res.xy[..., 0]
    # How far the head is turned, from the image alone: where the nose tip sits between the outer
    # eye corners (1 = centred; > 3 or < 0: beyond three quarters of the way / past the far eye).
    ratio = (x[:, 4] - x[:, 33]) / (x[:, 263] - x[:, 4])
    turned = (ratio > 3) | (ratio < 0)
    frontal = (ratio > 0.8) & (ratio < 1.25)
    assert turned.sum() >= 15 and frontal.sum() >= 8
    jaw = ls.MEDIAPIPE_TO_IBUG68[:17]
    for t in np.flatnonzero(turned):
        # The nose points to the far side; here that is image-right (iBUG 10-16) in every turned frame.
        far, near = (jaw[10:], jaw[:7]) if x[t, 4] > x[t, [33, 263]].mean() else (jaw[:7], jaw[10:])
        assert (~res.visible[t, far]).mean() >= 0.8, (t, res.visible[t, far])
        assert res.visible[t, near].all(), t
    assert (~res.visible[turned]).sum(-1).mean() > 25
    vis_f = res.visible[frontal]
    assert vis_f.mean(-1).min() >= 0.99
    assert vis_f[:, ls.MEDIAPIPE_TO_IBUG68].all()
