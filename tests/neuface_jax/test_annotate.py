"""Tests of neuface_jax.annotation (``neuface-jax annotate``): real clips end to end, failure paths,
the static-contour embedding, the landmark-set plumbing and the flags made from the stage configs.

The end-to-end runs use a tiny encoder and 1–2 epochs: they check the plumbing (files, keys, shapes,
metric names, the overlay), not fit quality.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re

import numpy as np
import pytest

from absl import flags

import flame_jax
import neuface_jax
from neuface_jax import annotation as annotate_lib
from neuface_jax import cli
from neuface_jax.annotation import OutputConfig, PrepareConfig, SetupConfig
from neuface_jax.cli import flags as flags_lib
from neuface_jax.cli.annotate import _define as define_annotate_flags
from neuface_jax.cli.annotate_dataset import _define as define_dataset_flags
from neuface_jax.common.settings import settings_of
from neuface_jax.media import detect
from neuface_jax.media import sources
from neuface_jax.core import encoder
from neuface_jax.media import video
from neuface_jax.media import landmark_sets as ls

MEAD = "videos/mead_M003_level_1_disgusted_015.mp4"
COMPOSITE = "videos/multiview/vhap_nersemble_038_EMO-1_3views.mp4"
COMPOSITE_BOXES = "cam0=0:0:247:360,cam1=0:360:247:720,cam2=0:720:247:1080"
PROFILE = "images/deca_AFLW2000_image00181.jpg"
FRONTAL = "images/deca_AFLW2000_image00480.jpg"

PARAM_KEYS = {
    "cam", "pose", "expr", "shapes", "landmarks2d", "full_pose", "predicted_landmarks2d", "frame_index",
    "view_index", "view_names", "frame_indices", "crop_transforms", "crop_size", "valid", "landmarks_mask",
    "model", "method", "format", "model_kind", "model_path", "model_sha256", "n_shape", "n_expr", "n_vertices",
    "n_faces",
}
METRICS = ("nme_percent", "msi_landmarks", "msi_vertices", "jitter_mm")


@contextlib.contextmanager
def _log_lines():
    """The messages logged under ``neuface_jax`` meanwhile (whatever handlers a command installed)."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    root = logging.getLogger("neuface_jax")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _tiny_encoder_config():
    model = flame_jax.demo_model()
    return encoder.EncoderConfig.small(
        n_shape=model.num_shape, n_expr=model.num_expression, image_size=32, small_widths=(8, 16),
        small_blocks=(1, 1), head_hidden=32,
    )


def _run(shared_data, landmarker_model, tmp_path, videos, *, out_dir=None, view_boxes=None, epochs=1,
         frames=video.FrameRange(), refine_steps=0, **output):
    # refine_steps=0 (NeuFace's result as it is) unless a test checks the default per-frame refinement.
    setup = annotate_lib.make_setup(
        SetupConfig(face_landmarker=str(landmarker_model), epochs=epochs, chunk_frames=6, refine_steps=refine_steps),
        encoder_config=_tiny_encoder_config(),
    )
    return annotate_lib.annotate(
        videos, out_dir=out_dir or tmp_path / "out", setup=setup,
        prepare=PrepareConfig(frames=frames, cache_dir=str(tmp_path / "cache")), output=OutputConfig(**output),
        view_boxes=view_boxes,
    )


# --------------------------------------------------------------------------- no data needed
def test_static_contour_embedding():
    dyn = flame_jax.demo_landmark_embedding()
    st = annotate_lib.static_contour_embedding(dyn)
    assert st.kind == "static" and st.dynamic_face_idx is None and st.num_landmarks == 68
    np.testing.assert_array_equal(np.asarray(st.face_idx[:17]), np.asarray(dyn.dynamic_face_idx[0]))
    np.testing.assert_array_equal(np.asarray(st.face_idx[17:]), np.asarray(dyn.face_idx))
    np.testing.assert_allclose(np.asarray(st.bary_coords[:17]), np.asarray(dyn.dynamic_bary_coords[0]))
    model = flame_jax.demo_model()
    verts = np.asarray(flame_jax.forward(model, shape=np.zeros(10), expression=np.zeros(10), pose=np.zeros(15)).vertices)
    # Frontal head: the static contour is the dynamic one (row 0).
    np.testing.assert_allclose(
        np.asarray(flame_jax.landmarks(model, st, verts)), np.asarray(flame_jax.landmarks(model, dyn, verts, np.zeros(15))),
        atol=1e-6,
    )
    # Turned head: the dynamic contour moves to another row, the static one stays on the mesh.
    pose = np.zeros(15, np.float32)
    pose[1] = np.radians(30.0)
    turned = np.asarray(flame_jax.forward(model, shape=np.zeros(10), expression=np.zeros(10), pose=pose).vertices)
    d = np.asarray(flame_jax.landmarks(model, dyn, turned, pose))
    s = np.asarray(flame_jax.landmarks(model, st, turned))
    assert np.abs(d[:17] - s[:17]).max() > 1e-3
    np.testing.assert_allclose(d[17:], s[17:], atol=1e-6)
    with pytest.raises(ValueError, match="no dynamic contour"):
        annotate_lib.static_contour_embedding(st)


def test_resolve_face_model_sets_and_contours():
    auto = annotate_lib.resolve_face_model(landmark_set="ibug68", contour="auto")
    assert auto.is_demo and auto.contour == "static" and auto.embedding.kind == "static"
    np.testing.assert_array_equal(auto.landmark_ids, ls.MEDIAPIPE_TO_IBUG68)
    assert auto.eye_idx == (36, 45)
    dyn = annotate_lib.resolve_face_model(landmark_set="ibug68", contour="dynamic")
    assert dyn.contour == "dynamic" and dyn.embedding.kind == "ibug68"
    # The demo head's MediaPipe ids are not MEDIAPIPE_105_IDS in the same order: targets are
    # gathered by the embedding's own ids.
    mp = annotate_lib.resolve_face_model(landmark_set="mediapipe105")
    ids = np.asarray(flame_jax.demo_mediapipe_embedding().landmark_indices)
    np.testing.assert_array_equal(mp.landmark_ids, ids)
    assert not np.array_equal(ids, ls.MEDIAPIPE_105_IDS)
    assert mp.contour == "none" and ids[mp.eye_idx[0]] == 33 and ids[mp.eye_idx[1]] == 263
    fake = np.random.default_rng(0).normal(size=(2, 478, 2))
    np.testing.assert_array_equal(fake[:, mp.landmark_ids], fake[:, ids])
    with pytest.raises(ValueError, match="68-point"):
        annotate_lib.resolve_face_model(landmark_embedding=flame_jax.demo_mediapipe_embedding(), landmark_set="ibug68")
    with pytest.raises(ValueError, match="dynamic"):
        annotate_lib.resolve_face_model(landmark_embedding=auto.embedding, contour="dynamic")
    with pytest.raises(ValueError, match="landmark_indices"):
        annotate_lib.resolve_face_model(landmark_embedding=auto.embedding, landmark_set="mediapipe105")


def test_default_encoder_is_the_packaged_one_on_the_demo_head():
    from neuface_jax.synthetic import pretrain

    kw = dict(need_landmarker=False)
    packaged = pretrain.packaged_checkpoint()
    assert packaged == annotate_lib.packaged_checkpoint()
    s = annotate_lib.make_setup(**kw)
    assert s.encoder is not None and s.encoder_label == str(packaged)
    assert s.encoder_config.arch == "small" and s.fit_config.learning_rate == annotate_lib.PRETRAINED_SMALL_LR == 1e-4
    assert any("packaged pretrained" in n for n in s.notes)
    # Opting out, or asking for a specific architecture: a random start at 1e-3.
    r = annotate_lib.make_setup(SetupConfig(encoder="random"), **kw)
    assert r.encoder is None and r.encoder_label == "random init" and r.fit_config.learning_rate == 1e-3
    t = annotate_lib.make_setup(encoder_config=_tiny_encoder_config(), **kw)
    assert t.encoder is None and t.encoder_config.image_size == 32
    # An explicit checkpoint and an explicit lr are kept.
    e = annotate_lib.make_setup(SetupConfig(encoder=str(packaged), learning_rate=2e-5), **kw)
    assert e.encoder is not None and e.fit_config.learning_rate == 2e-5
    # One table of default learning rates by start.
    assert annotate_lib.default_learning_rate(None, pretrained=False) == annotate_lib.RANDOM_INIT_LR == 1e-3
    assert annotate_lib.default_learning_rate(e.encoder_config, pretrained=True) == 1e-4
    big = encoder.EncoderConfig(arch="resnet50", n_shape=10, n_expr=10)
    assert annotate_lib.default_learning_rate(big, pretrained=True) == annotate_lib.PRETRAINED_LR == 2e-5


def test_flags_are_the_config_declarations():
    fv = flags.FlagValues()
    define_annotate_flags(fv)
    fv(["annotate", "--lr=3e-4", "--end=24", "--stride=2", "--crop_smoothing=none", "--nocache", "--objs",
        "--nooverlay", "--encoder=random", "--epochs=7"])
    setup = flags_lib.build(fv, SetupConfig)
    assert setup == SetupConfig(learning_rate=3e-4, encoder="random", epochs=7)
    prep = flags_lib.build(fv, PrepareConfig, frames=flags_lib.frame_range(fv))
    assert prep == PrepareConfig(frames=video.FrameRange(end=24, stride=2), crop_smoothing="none", use_cache=False)
    assert prep.smoothing_method is None and PrepareConfig().smoothing_method == "moving_average"
    assert flags_lib.build(fv, OutputConfig) == OutputConfig(write_video=False, write_objs=True)
    hash((setup, prep, OutputConfig()))  # frozen, hashable
    # Defaults are the configs' own; annotate-dataset shares the setup / prepare groups (no overlay
    # by default, whole clips: only --stride of the frame range).
    fv0 = flags.FlagValues()
    define_annotate_flags(fv0)
    fv0(["annotate"])
    assert flags_lib.build(fv0, SetupConfig) == SetupConfig()
    assert flags_lib.build(fv0, PrepareConfig, frames=flags_lib.frame_range(fv0)) == PrepareConfig()
    assert flags_lib.build(fv0, OutputConfig) == OutputConfig()
    ds = flags.FlagValues()
    define_dataset_flags(ds)
    ds(["annotate-dataset", "--stride=3"])
    shared = [s.flag or f.name for cls in (SetupConfig, PrepareConfig, OutputConfig)
              for f, s in settings_of(cls) if f.name not in ("warm_compile", "split_at_cuts")]
    for name in shared:
        assert name in ds and name in fv0, name
        if name != "overlay":
            assert ds[name].default == fv0[name].default, name
    assert fv0["overlay"].default is True and ds["overlay"].default is False
    assert "start" not in ds and "warm_compile" not in ds and "split_at_cuts" not in ds and "split_at_cuts" in fv0
    assert flags_lib.frame_range(ds) == video.FrameRange(stride=3)


def test_real_video_path_does_not_import_the_synthetic_pipeline():
    import subprocess
    import sys

    code = ("import sys, neuface_jax.annotation; "
            "print([m for m in sys.modules if m.startswith('neuface_jax.synthetic')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_annotate_precomputed_landmarks_with_warm_compile(tmp_path):
    # The orchestration without MediaPipe: a synthetic two-view clip and its own landmarks file, the
    # step compiled in the background while decoding, no overlay, a frame range.
    from neuface_jax.synthetic import synth

    clip = synth.synthesize_clip(seed=1, rig="front,left_30", config=synth.SynthConfig(num_frames=8, image_size=64))
    synth.write_clip(clip, tmp_path / "clip")
    videos = [str(tmp_path / "clip" / f"{v}.mp4") for v in clip.view_names]
    with _log_lines() as lines:
        setup = annotate_lib.make_setup(
            SetupConfig(epochs=1, chunk_frames=4, contour="dynamic", warm_compile=True, refine_steps=0),
            encoder_config=_tiny_encoder_config(), need_landmarker=False,
        )
        s = annotate_lib.annotate(
            videos, out_dir=tmp_path / "out", setup=setup,
            prepare=PrepareConfig(frames=video.FrameRange(start=1, end=7)), output=OutputConfig(write_video=False),
            landmarks_file=tmp_path / "clip" / "landmarks.npz",
        )
    # One line per stage, with its time and key figure; none claims to be the annotate command.
    for pattern in (r"^setup: model demo head.* in \d+\.\ds$", r": 6 frames x 2 view\(s\) decoded in \d+\.\ds",
                    r": 12 crops of 224 px .* in \d+\.\ds$", r": NeuFace 1 epochs in \d+\.\ds, final loss [\d.e+-]+$",
                    r": metrics nme_percent [\d.e+-]+, .*cvd_mm [\d.e+-]+; outputs written in \d+\.\ds$"):
        assert any(re.search(pattern, line) for line in lines), (pattern, lines)
    assert not any(line.startswith("neuface-jax annotate:") for line in lines), lines
    assert s["num_frames"] == 6 and s["views"] == list(clip.view_names)
    assert set(s["files"]) == {"params", "metrics"} and not (tmp_path / "out" / "overlay.mp4").exists()
    m = s["metrics"]
    assert "warm_compile_background" in m["seconds"] and "fit" in m["seconds"] and "total" in m["seconds"]
    assert m["clip"]["landmarks"].endswith("landmarks.npz") and m["clip"]["first_last_frame_index"] == [1, 6]
    assert m["throughput"]["detection_cached"] and np.isfinite(m["cvd_mm"])
    assert not any("background compile failed" in n for n in m["notes"])
    with np.load(tmp_path / "out" / "params.npz") as p:
        np.testing.assert_array_equal(p["frame_indices"], np.arange(1, 7))
        assert set(p.files) == PARAM_KEYS
        model = flame_jax.demo_model()
        assert str(p["model_kind"]) == "demo" and str(p["model_sha256"]) == "" and str(p["model_path"]) == ""
        assert (int(p["n_shape"]), int(p["n_expr"]), int(p["n_vertices"])) == (
            model.num_shape, model.num_expression, model.num_vertices)
    rec = neuface_jax.load_params(tmp_path / "out" / "params.npz")
    assert rec.view_names == tuple(clip.view_names) and rec.model.kind == "demo"
    np.testing.assert_allclose(neuface_jax.vertices(rec), s["result"].vertices, atol=1e-4)


def test_parse_view_boxes():
    assert annotate_lib.parse_view_boxes("0:0:247:360,0:360:247:720") == {
        "view0": (0, 0, 247, 360), "view1": (0, 360, 247, 720)
    }
    assert annotate_lib.parse_view_boxes(["a=1:2:3:4", "b=5:6:7:8"]) == {"a": (1, 2, 3, 4), "b": (5, 6, 7, 8)}
    assert annotate_lib.parse_view_boxes(None) is None
    for bad in ("1:2:3", "3:0:1:5", "a:b:c:d"):
        with pytest.raises(ValueError):
            annotate_lib.parse_view_boxes(bad)


def test_corrupt_video_names_the_file(tmp_path):
    bad = tmp_path / "broken_clip.mp4"
    bad.write_bytes(b"not a video at all\n" * 500)
    model = tmp_path / "fake.task"  # never opened: the video is probed first
    model.write_bytes(b"x")
    with pytest.raises(video.VideoError, match="broken_clip.mp4"):
        annotate_lib.annotate(bad, out_dir=tmp_path / "out", setup=SetupConfig(face_landmarker=str(model)))
    # The command reports it and exits 1.
    rc = cli.main(["neuface-jax", "annotate", f"--video={bad}", f"--out={tmp_path / 'out'}", f"--face_landmarker={model}"])
    assert rc == 1
    assert not (tmp_path / "out" / "params.npz").exists()


# --------------------------------------------------------------------------- real data
@pytest.mark.shared_data
def test_profile_image_is_a_clip_without_face(shared_data, landmarker_model, tmp_path):
    path = shared_data / PROFILE
    with pytest.raises(detect.NoFaceError, match="deca_AFLW2000_image00181.jpg.*no face"):
        _run(shared_data, landmarker_model, tmp_path, [path])
    assert not (tmp_path / "out").exists()


@pytest.mark.shared_data
def test_truncated_real_video_names_the_file(shared_data, landmarker_model, tmp_path):
    cut = tmp_path / "mead_cut.mp4"
    cut.write_bytes((shared_data / MEAD).read_bytes()[:30_000])
    with pytest.raises(video.VideoError, match="mead_cut.mp4"):
        _run(shared_data, landmarker_model, tmp_path, cut)


@pytest.mark.shared_data
def test_annotate_monocular_clip(shared_data, landmarker_model, tmp_path):
    # The default path: NeuFace, then the default per-frame refinement.
    s = _run(shared_data, landmarker_model, tmp_path, shared_data / MEAD, frames=video.FrameRange(end=24, stride=2), epochs=2,
             refine_steps=SetupConfig().refine_steps, write_objs=True)
    out = tmp_path / "out"
    t = 12
    assert s["num_frames"] == t and s["views"] == ["mead_M003_level_1_disgusted_015"]
    for name in ("params.npz", "metrics.json", "overlay.mp4"):
        assert (out / name).is_file(), name
    with np.load(out / "params.npz") as p:
        assert set(p.files) == PARAM_KEYS
        model = flame_jax.demo_model()
        assert p["cam"].shape == (t, 3) and p["pose"].shape == (t, 6) and p["full_pose"].shape == (t, 15)
        assert p["expr"].shape == (t, model.num_expression) and p["shapes"].shape == (t, model.num_shape)
        assert p["landmarks2d"].shape == (t, 68, 2) and p["predicted_landmarks2d"].shape == (t, 68, 2)
        assert p["crop_transforms"].shape == (t, 2, 3) and int(p["crop_size"]) == 224
        np.testing.assert_array_equal(p["frame_indices"], np.arange(0, 24, 2))
        assert p["valid"].all() and p["landmarks_mask"].all()
        assert all(np.isfinite(p[k]).all() for k in ("cam", "pose", "expr", "shapes", "predicted_landmarks2d"))
    m = json.loads((out / "metrics.json").read_text())
    for k in METRICS:
        assert isinstance(m[k], float) and np.isfinite(m[k]), k
    assert "cvd_mm" not in m
    assert m["clip"]["contour"] == "static" and m["clip"]["landmark_set"] == "ibug68"
    assert any("demo head" in n for n in m["notes"])
    assert m["clip"]["refine_steps"] == SetupConfig().refine_steps > 0
    refine_lmk = s["result"].history["refine_landmark"]
    assert refine_lmk[-1] < 0.9 * refine_lmk[0], refine_lmk
    assert m["throughput"]["preprocess_frames_per_s"] > 0
    ov = video.read_video(out / "overlay.mp4")
    assert ov.num_frames == t and ov.frames[0].shape[1:] == (270, 480, 3)
    objs = sorted((out / "objs").rglob("*.obj"))
    assert len(objs) == t
    # A second run reads the landmark cache (no detection); without the refinement (the same, deterministic
    # NeuFace result) it explains the detected landmarks worse.
    s2 = _run(shared_data, landmarker_model, tmp_path, shared_data / MEAD, frames=video.FrameRange(end=24, stride=2),
              epochs=2, write_video=False, out_dir=tmp_path / "out2")
    assert s2["throughput"]["detection_cached"]
    assert s2["metrics"]["clip"]["refine_steps"] == 0 and "refine_landmark" not in s2["result"].history
    assert m["nme_percent"] < 0.9 * s2["metrics"]["nme_percent"], (m["nme_percent"], s2["metrics"]["nme_percent"])


@pytest.mark.shared_data
def test_far_side_guesses_get_no_target(shared_data, landmarker_model, tmp_path):
    # wojtek frames 150-170: the head is turned far to the image right; MediaPipe still returns the
    # far-side jaw points (guesses), which must not be landmark targets.
    s = _run(shared_data, landmarker_model, tmp_path, shared_data / "videos/metrical_tracker_wojtek.mp4",
             frames=video.FrameRange(start=150, end=174, stride=4), write_video=False)
    src = sources.open_source(shared_data / "videos/metrical_tracker_wojtek.mp4",
                              frames=video.FrameRange(start=150, end=174, stride=4))
    lmk = detect.decode_and_detect(src, model_path=landmarker_model, cache_dir=tmp_path / "cache").landmarks[0]
    assert s["num_frames"] == 6 and lmk.valid.all()
    with np.load(tmp_path / "out" / "params.npz") as p:
        mask = p["landmarks_mask"]  # [T, 68]
    np.testing.assert_array_equal(mask, lmk.visible[:, ls.MEDIAPIPE_TO_IBUG68])
    assert not mask[:, 11:17].any()  # far-side jaw (image right)
    assert mask[:, :8].all() and mask[:, 17:26].all()  # near-side jaw, brows, ...
    assert np.isfinite(s["metrics"]["nme_percent"])


@pytest.mark.shared_data
def test_annotate_composite_three_views(shared_data, landmarker_model, tmp_path):
    # 4 frames: MSI needs 2 accelerations.
    s = _run(shared_data, landmarker_model, tmp_path, shared_data / COMPOSITE, view_boxes=COMPOSITE_BOXES,
             frames=video.FrameRange(end=13, stride=4))
    assert s["views"] == ["cam0", "cam1", "cam2"] and s["num_frames"] == 4
    m = s["metrics"]
    assert "cvd_mm" in m and np.isfinite(m["cvd_mm"]) and m["cvd_mm"] > 0
    for k in METRICS:
        assert np.isfinite(m[k]), k
    assert set(m["per_view"]) == {"cam0", "cam1", "cam2"}
    with np.load(tmp_path / "out" / "params.npz") as p:
        assert p["cam"].shape == (12, 3) and list(p["view_names"]) == ["cam0", "cam1", "cam2"]
        np.testing.assert_array_equal(p["view_index"], np.tile([0, 1, 2], 4))
        np.testing.assert_array_equal(p["frame_indices"], [0, 4, 8, 12])
    ov = video.read_video(tmp_path / "out" / "overlay.mp4")
    # Three 247x360 views (under the 480-px cap: unscaled), tiled left to right, padded to even width.
    assert ov.num_frames == 4 and ov.frames[0].shape[1:3] == (360, 742)


@pytest.mark.shared_data
def test_view_without_face_is_masked(shared_data, landmarker_model, tmp_path):
    import imageio.v3 as iio

    # Two composite views and a "view" that is the full-profile image (no face): 3 views × 4 frames,
    # the composite test's compiled shapes (views may differ in size; they are padded).
    comp = video.read_video(shared_data / COMPOSITE, frames=video.FrameRange(end=13, stride=4))
    two = video.split_views(comp, annotate_lib.parse_view_boxes(COMPOSITE_BOXES.rsplit(",", 1)[0]))
    profile = iio.imread(shared_data / PROFILE)[..., :3]
    clip = video.VideoClip(
        frames=[*two.frames, np.stack([profile] * 4)], view_names=("cam0", "cam1", "profile"), fps=25.0,
        frame_indices=two.frame_indices,
    )
    with pytest.warns(UserWarning, match="'profile'.*no face"):
        s = _run(shared_data, landmarker_model, tmp_path, clip)
    m = s["metrics"]
    assert m["clip"]["views_without_face"] == ["profile"]
    assert np.isfinite(m["nme_percent"]) and np.isnan(m["per_view"]["profile"]["nme_percent"])
    assert np.isfinite(m["cvd_mm"])  # over the two views with a face
    with np.load(tmp_path / "out" / "params.npz") as p:
        np.testing.assert_array_equal(p["valid"], np.tile([True, True, False], 4))
        assert not p["landmarks_mask"][2::3].any()
    # The overlay tiles all three views (padded to 450x450; max side 450 < 480: unscaled).
    assert video.read_video(tmp_path / "out" / "overlay.mp4").frames[0].shape[1:3] == (450, 1350)
