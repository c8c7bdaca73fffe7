"""The real-time regressor, its training data, the One-Euro filter, frame sources and live tracking."""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core.mobilenet import depthwise_conv3x3
from neuface_jax.media import crops as crops_lib
from neuface_jax.realtime import filters, regressor, sources
from neuface_jax.realtime import track as track_lib

TINY = dict(widths=(8, 16), blocks=(1, 1), head_hidden=32, image_size=32)


def tiny_regressor(seed: int = 0):
    cfg = regressor.regressor_config(100, 50, **TINY)
    return encoder_lib.init_encoder(cfg, seed=seed), cfg


# ------------------------------------------------------------------------------ network
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_conv_matches_grouped_convolution(stride):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 9, 8, 5)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(3, 3, 5)), jnp.float32)
    ref = jax.lax.conv_general_dilated(x, k[:, :, None, :], (stride, stride), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=5)
    out = depthwise_conv3x3(x, k, stride)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_regressor_is_an_encoder_checkpoint_and_starts_annotate(tmp_path):
    from neuface_jax.annotation.config import SetupConfig
    from neuface_jax.annotation.setup import make_setup

    enc, cfg = tiny_regressor()
    # Non-trivial weights: a few BN statistics and the head moved away from their initial values.
    state = jax.tree.map(lambda a: a + 0.01 * jnp.arange(a.size, dtype=a.dtype).reshape(a.shape) / max(a.size, 1),
                         encoder_lib.split_params(enc)[1])
    enc = encoder_lib.merge_params(encoder_lib.split_params(enc)[0], state, encoder_lib.split_params(enc)[2])
    encoder_lib.save_encoder(tmp_path / "reg", enc, cfg)
    loaded, loaded_cfg = encoder_lib.load_encoder(tmp_path / "reg")
    assert loaded_cfg == cfg and loaded_cfg.arch == "mobilenet"
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 32, 32, 3)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(enc(x)))
    # annotate --encoder DIR resolves it like any encoder checkpoint.
    setup = make_setup(SetupConfig(encoder=str(tmp_path / "reg"), warm_compile=False), need_landmarker=False)
    assert setup.encoder_config.arch == "mobilenet"
    assert setup.encoder_label == str(tmp_path / "reg")
    # Its stages (for a frozen prefix) and NeuFace's learning rate for it: those of a small encoder.
    from neuface_jax.priors import starting

    assert encoder_lib.stage_names(cfg) == enc.backbone.stage_names == ("stem", "stage1", "stage2")
    assert starting.default_learning_rate(cfg, pretrained=True) == starting.PRETRAINED_SMALL_LR


def test_regressor_inference_and_landmark_submodel():
    enc, cfg = tiny_regressor()
    reg = regressor.Regressor(enc, cfg)
    crop = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
    p = reg(crop)
    assert p.shape.shape == (100,) and p.expression.shape == (50,) and p.pose.shape == (15,)
    assert p.landmarks.shape == (68, 2) and np.all(np.isfinite(p.landmarks))
    # The landmarks of the cut-down model equal those of the full one.
    from neuface_jax.core import fit as fit_lib

    face, sub = reg.face, regressor.landmark_submodel(reg.face)
    assert sub.flame.v_template.shape[0] < face.flame.v_template.shape[0] / 4
    rng = np.random.default_rng(2)
    args = [jnp.asarray(rng.normal(size=n) * 0.3, jnp.float32) for n in (100, 50)]
    pose = jnp.asarray(rng.normal(size=15) * 0.2, jnp.float32)
    cam = jnp.asarray([9.0, 0.01, -0.02])
    full = fit_lib.evaluate_params(face, *args, pose, cam)[1]
    cut = fit_lib.evaluate_params(sub, *args, pose, cam)[1]
    np.testing.assert_allclose(cut, full, atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        reg(np.zeros((32, 32, 3), np.float32))
    # Mirror averaging: the crop's prediction and its mirror's, mirrored back, averaged.
    mirrored = regressor.Regressor(enc, cfg, reg.face, mirror_average=True)
    both = mirrored(crop)
    m = reg(np.ascontiguousarray(crop[:, ::-1]))
    back = regressor.mirror_params(m.shape, m.expression, m.pose, m.cam,
                                   *(np.asarray(a) for a in mirrored.coefficient_mirror_maps))
    for got, a, b in zip((both.shape, both.expression, both.pose, both.cam), (p.shape, p.expression, p.pose, p.cam),
                         back):
        np.testing.assert_allclose(got, (a + b) / 2, atol=1e-4)


# ------------------------------------------------------------------------------ training data
def test_distillation_data_crops_the_annotation_and_holds_out_the_end(tmp_path):
    from neuface_jax.core import fit as fit_lib
    from neuface_jax.media import crops, export, video
    from neuface_jax.realtime import train

    rng = np.random.default_rng(0)
    t, size = 10, 160
    frames = rng.integers(0, 255, (t, size, size, 3), np.uint8)
    video.write_video(tmp_path / "clip.mp4", frames, fps=25.0, crf=0)
    decoded = video.read_video(tmp_path / "clip.mp4").frames[0]
    boxes = np.stack([np.full(t, 80.0), np.full(t, 75.0) + np.arange(t), np.full(t, 100.0)], -1)
    m = crops.boxes_to_transforms(boxes, 224)[:, None]
    res = fit_lib.FitResult(
        shape=rng.normal(size=100).astype(np.float32), expression=rng.normal(size=(t, 1, 50)).astype(np.float32),
        pose=rng.normal(size=(t, 1, 15)).astype(np.float32) * 0.1, cam=np.tile([9.0, 0.0, 0.0], (t, 1, 1)),
        landmarks2d=rng.uniform(-1, 1, (t, 1, 68, 2)).astype(np.float32), vertices=np.zeros((t, 1, 1, 3)),
        canonical_vertices=np.zeros((t, 1, 1, 3)), history={},
    )
    valid = np.ones((t, 1), bool)
    valid[3] = False
    (tmp_path / "ann").mkdir()
    # MediaPipe's points differ from the fitted ones; a masked one must keep the fitted target.
    detected = (res.landmarks2d + rng.normal(0, 0.05, res.landmarks2d.shape)).astype(np.float32)
    lmk_mask = np.ones((t, 1, 68), bool)
    lmk_mask[0, 0, :5] = False
    export.write_params(tmp_path / "ann" / "params.npz", res, view_names=["clip"], detected_landmarks=detected,
                        landmarks_mask=lmk_mask, crop_transforms=m, valid=valid, crop_size=224)
    clip = {"input": [str(tmp_path / "clip.mp4")], "kind": "videos", "views": ["clip"],
            "image_sizes": {"clip": [size, size]}, "first_last_frame_index": [0, t - 1], "stride": 1, "fps": 25.0}
    (tmp_path / "ann" / "metrics.json").write_text(json.dumps({"clip": clip}))
    tr, held = train.distillation_data([tmp_path / "ann"], image_size=32, holdout_fraction=0.3)
    assert len(tr) + len(held) == t - 1 and len(held) == 3
    kept = [i for i in range(t) if i != 3]
    np.testing.assert_allclose(tr.expression, res.expression[kept[:6], 0])
    np.testing.assert_allclose(held.pose, res.pose[kept[6:], 0])
    np.testing.assert_allclose(tr.landmarks, res.landmarks2d[kept[:6], 0])
    assert len(set(tr.clip_index) | set(held.clip_index)) == 1
    want_det = np.where(lmk_mask[..., None], detected, res.landmarks2d)[kept, 0]
    det, det_held = train.distillation_data([tmp_path / "ann"], image_size=32, landmarks="detected")
    np.testing.assert_allclose(np.concatenate([det.landmarks, det_held.landmarks]), want_det, atol=1e-6)
    assert np.abs(det.landmarks[0, :5] - detected[0, 0, :5]).min() > 0  # the masked points stayed fitted
    np.testing.assert_allclose(det.pose, tr.pose)  # only the landmark targets change
    both, _ = train.distillation_data([tmp_path / "ann"], image_size=32, landmarks="both")
    np.testing.assert_allclose(both.landmarks, 0.5 * (tr.landmarks + det.landmarks), atol=1e-6)
    with pytest.raises(ValueError, match="distill_landmarks"):
        train.TrainConfig(distill_landmarks="mediapipe")
    with pytest.raises(ValueError, match="distill_crop"):
        train.TrainConfig(distill_crop="box")
    # A re-crop (here a zoom out by 1.25 about the same centre) reaches the labels: points and camera follow.
    from neuface_jax.realtime import regressor

    def wide(image, mm, n):
        cx, cy, side = regressor.box_of_transform(mm, n)
        return crops.box_to_transform((cx, cy, 1.25 * side), n)

    zoomed, _ = train.distillation_data([tmp_path / "ann"], image_size=32, recrop=wide)
    np.testing.assert_allclose(zoomed.landmarks, tr.landmarks / 1.25, atol=1e-5)
    np.testing.assert_allclose(zoomed.cam[:, 0], tr.cam[:, 0] / 1.25, rtol=1e-5)
    want = crops.warp_crop(decoded[kept[0]], np.diag([32 / 224, 32 / 224]) @ m[kept[0], 0], 32)
    assert np.abs(tr.images[0].astype(int) - want).mean() < 2.0
    (tmp_path / "ann" / "metrics.json").unlink()
    with pytest.raises(ValueError, match="metrics.json"):
        train.distillation_data([tmp_path / "ann"])


def test_mirror_examples_mirror_the_image_landmarks_and_parameters():
    import dataclasses as dc

    from neuface_jax.core import fit as fit_lib
    from neuface_jax.realtime import train
    from neuface_jax.synthetic import pretrain

    face = regressor.demo_face()
    small = regressor.landmark_submodel(face)  # the same landmarks, cheaper
    rng = np.random.default_rng(0)
    n = 3
    shape = (rng.normal(size=(n, 100)) * 0.5).astype(np.float32)
    expr = (rng.normal(size=(n, 50)) * 0.5).astype(np.float32)
    pose = np.zeros((n, 15), np.float32)
    pose[:, 0:3] = rng.normal(size=(n, 3)) * [0.1, 0.6, 0.1]  # turned heads
    pose[:, 6] = 0.15
    pose[:, 9:12], pose[:, 12:15] = [0.1, 0.2, 0.0], [0.0, -0.1, 0.0]
    cam = np.tile(np.float32([9.0, 0.01, -0.02]), (n, 1))
    landmarks = jax.jit(lambda *a: fit_lib.evaluate_params(small, *a)[1])  # one compile for both calls
    lmk = np.asarray(landmarks(shape, expr, pose, cam))
    images = rng.integers(0, 255, (n, 8, 8, 3), np.uint8)
    data = pretrain.PretrainData(images, lmk, shape, expr, pose, cam, np.array([5, 5, 7], np.int32))
    m = train.mirror_examples(data, face)
    np.testing.assert_array_equal(m.images, images[:, :, ::-1])
    assert set(m.clip_index) == {-6, -8}  # new identity groups
    np.testing.assert_allclose(m.pose[:, 1], -pose[:, 1])
    np.testing.assert_allclose(m.pose[:, 9:12], pose[:, 12:15] * [1, -1, -1])  # the eyes swap
    np.testing.assert_allclose(m.cam, cam * [1, -1, 1])
    # The mirrored parameters make the mirrored landmarks (the basis is nearly closed under mirroring)...
    got = np.asarray(landmarks(m.shape, m.expression, m.pose, m.cam))
    assert np.abs(got - m.landmarks).mean() < 0.01 < np.abs(lmk - m.landmarks).mean()
    assert m.landmarks[0, 36, 0] == pytest.approx(-lmk[0, 45, 0])  # outer eye corners swap sides
    # An in-plane rotation of the crop turns the head about the camera axis and moves the camera so
    # that the turned labels project exactly onto the turned landmarks (the root joint is FLAME's pivot).
    angle = np.deg2rad(np.float32([-25.0, 5.0, 30.0]))
    turn = jax.jit(lambda *a: train.rotate_in_plane(*a[:3], train.root_joint(small, *a[3:5]), a[5]))  # one compile
    l2, c2, p2 = turn(lmk, cam, pose, shape, expr, angle)
    np.testing.assert_allclose(np.asarray(landmarks(shape, expr, np.asarray(p2), np.asarray(c2))), l2, atol=1e-5)
    assert np.abs(np.asarray(l2) - lmk).max() > 0.1 and np.asarray(p2)[:, 3:] == pytest.approx(pose[:, 3:])
    # The dense 2D term: zero at the label, and a camera moved by dx moves every projected x by s·dx.
    targets = {"shape": shape, "expression": expr, "pose": pose, "cam": cam}
    projected = jax.jit(lambda *a: train.projected_vertex_loss(*a, targets, small))
    assert float(projected(shape, expr, pose, cam)) == pytest.approx(0.0, abs=1e-6)
    moved = cam + np.float32([0.0, 0.002, 0.0])
    assert float(projected(shape, expr, pose, moved)) == pytest.approx(9.0 * 0.002 / 2, rel=1e-3)
    # The dense 3D term (``weight_canonical``) ignores the head's rotation and sees its shape.
    cfg = train.TrainConfig(weight_canonical=1000.0).pretrain_config()
    assert cfg.weight_canonical == 1000.0
    enc_cfg = regressor.regressor_config(100, 50, **TINY)
    raw = jnp.tile(encoder_lib.initial_output(enc_cfg), (n, 1)) + 0.1 * rng.normal(
        size=(n, encoder_lib.num_outputs(enc_cfg))).astype(np.float32)
    p = encoder_lib.decode_outputs(raw, enc_cfg)
    label = {"shape": np.asarray(p.shape), "expression": np.asarray(p.expression), "pose": np.asarray(p.pose),
             "cam": np.asarray(p.cam), "landmarks": np.zeros((n, 68, 2), np.float32)}
    parts = jax.jit(lambda lab: pretrain.pretrain_loss(raw, lab, small, enc_cfg, cfg)[1])
    turned = parts(dict(label, pose=label["pose"] + np.float32([0.0, 0.3] + [0.0] * 13)))
    assert float(turned["canonical"]) < 1e-6 < 1e-4 < float(turned["vertex"])
    wider = parts(dict(label, shape=label["shape"] + np.float32(0.5)))
    assert float(wider["canonical"]) > 1e-4
    # ...and mirroring twice gives the example back.
    mm = train.mirror_examples(m, face)
    for f in ("images", "landmarks", "pose", "cam", "clip_index"):
        np.testing.assert_allclose(getattr(mm, f), getattr(data, f), atol=1e-6)
    np.testing.assert_allclose(mm.shape[:, :20], shape[:, :20], atol=0.1)  # the main identity components
    # An asymmetric model cannot be mirrored.
    lopsided = dc.replace(face.flame, v_template=face.flame.v_template.at[0, 0].add(0.01))
    with pytest.raises(ValueError, match="not left/right symmetric"):
        train.mirror_maps(fit_lib.FaceModel(lopsided, face.embedding), 100, 50)


def test_identity_consistency_and_groups():
    from neuface_jax.realtime import train

    rng = np.random.default_rng(0)
    clip = np.repeat(np.arange(5), [1, 3, 6, 2, 8])
    idx = train.group_batches(clip, 6, 4, rng)
    assert idx.shape == (24,)
    assert all(len(set(clip[idx[g * 4:(g + 1) * 4]])) == 1 for g in range(6))
    same = jnp.tile(jnp.arange(10.0), (8, 1))
    assert float(train.identity_consistency(same, 4)) == 0.0
    assert float(train.identity_consistency(same + jnp.arange(8.0)[:, None], 4)) > 0.5
    img = jnp.full((4, 8, 8, 3), 0.5)
    out = train.augment(img, jax.random.key(0))
    assert out.shape == img.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    assert float(jnp.std(out)) > 0.01  # the images were changed


def test_unlabelled_frames_are_cropped_like_the_tracker_and_hold_out_the_end(tmp_path):
    from neuface_jax.media import video
    from neuface_jax.realtime import train

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (20, 64, 80, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(20) * 10  # frame numbers, to check which frames were used
    video.write_video(tmp_path / "a.mp4", frames, fps=25.0, crf=0)
    det = _FixedDetector((20, 10, 44, 34, 0.9))
    data = train.unlabelled_data([tmp_path / "a.mp4", tmp_path / "a.mp4"], image_size=32, holdout_fraction=0.3,
                                 frames_per_video=7, detector=det)
    assert len(data) == 14 and det.calls == 14 and len(set(data.clip_index.tolist())) == 2
    decoded = video.read_video(tmp_path / "a.mp4").frames[0]
    want, _ = regressor.crop_box(decoded[0], track_lib.detection_box(det.box), 32)
    np.testing.assert_array_equal(data.images[0], want)
    # 7 frames spread over the first 14 (the last 30 % held out): every second one.
    used = [int(np.argmin([np.abs(regressor.crop_box(f, track_lib.detection_box(det.box), 32)[0].astype(int)
                                  - im).mean() for f in decoded])) for im in data.images[:7]]
    assert used == list(range(0, 14, 2))
    det.box = None
    with pytest.raises(ValueError, match="a.mp4: no face"):
        train.unlabelled_data([tmp_path / "a.mp4"], image_size=32, detector=det)


@pytest.mark.shared_data
def test_weak_images_are_cropped_like_the_tracker_with_mediapipe_targets(shared_data, landmarker_model, tmp_path,
                                                                           caplog):
    import cv2

    from neuface_jax.media import video
    from neuface_jax.realtime import train

    frame = video.read_video(shared_data / "videos" / "liveportrait_d20.mp4",
                             frames=video.FrameRange(end=1)).frames[0][0]
    cv2.imwrite(str(tmp_path / "face.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((64, 64, 3), np.uint8))
    data = train.weak_data([tmp_path / "face.png", tmp_path / "blank.png"], image_size=48,
                           face_landmarker=landmarker_model, mirror=True)
    assert "blank.png: no face found" in caplog.text  # skipped, not fatal
    assert len(data) == 2 and data.images.shape == (2, 48, 48, 3) and data.clip_index[0] == -1 - data.clip_index[1]
    lmk, vis = data.landmarks[0], data.visible[0]
    assert vis.sum() > 50 and np.abs(lmk).max() < 1.0  # the face's points lie inside its crop
    assert lmk[36, 0] < lmk[45, 0] and lmk[8, 1] > lmk[27, 1]  # image-left eye corner left, chin below the nose
    np.testing.assert_allclose(data.landmarks[1, 45], lmk[36] * np.array([-1.0, 1.0]), atol=1e-6)
    np.testing.assert_array_equal(data.images[1], data.images[0][:, ::-1])
    # The loss reads only the visible points.
    from neuface_jax.core import fit as fit_lib

    face = regressor.landmark_submodel(regressor.demo_face())  # the same landmarks, a tenth of the mesh
    p = (jnp.zeros((1, 100)), jnp.zeros((1, 50)), jnp.zeros((1, 15)), jnp.array([[8.0, 0.0, 0.0]]))
    only_moved = jnp.zeros((1, 68), bool).at[0, :10].set(True)

    @jax.jit
    def losses():
        moved = fit_lib.evaluate_params(face, *p)[1].at[:, :10].add(0.5)
        return jnp.stack([train.weak_landmark_loss(*p, moved, v, face) for v in (~only_moved, only_moved)])

    losses = losses()
    np.testing.assert_allclose(np.asarray(losses), [0.0, 0.5], atol=1e-5)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png: not a readable image"):
        train.weak_data([tmp_path / "bad.png"], image_size=48, face_landmarker=landmarker_model)


# ------------------------------------------------------------------------------ filter
def test_one_euro_smooths_noise_and_follows_motion():
    rng = np.random.default_rng(0)
    ts = np.arange(200) / 30.0
    still = 1.0 + 0.05 * rng.normal(size=(200, 3))
    f = filters.OneEuroFilter(filters.OneEuroConfig(min_cutoff=1.0, beta=0.0))
    out = np.stack([f(x, t) for x, t in zip(still, ts)])
    assert out[0] == pytest.approx(still[0])
    assert np.std(out[50:], 0).max() < 0.4 * np.std(still[50:], 0).min()
    ramp = 2.0 * ts[:, None]  # 2 units / s
    lag = {}
    for beta in (0.0, 5.0):
        f = filters.OneEuroFilter(filters.OneEuroConfig(min_cutoff=1.0, beta=beta))
        y = np.stack([f(x, t) for x, t in zip(ramp, ts)])
        lag[beta] = float(np.mean(ramp[100:] - y[100:]))
    assert lag[5.0] < 0.3 * lag[0.0]
    y, st = filters.step(filters.init([1.0], 0.0), [5.0], 0.0)  # no time passed: unchanged
    assert y[0] == 1.0
    with pytest.raises(ValueError, match="min_cutoff"):
        filters.OneEuroConfig(min_cutoff=0.0)


def test_smoother_filters_the_camera_in_frame_coordinates():
    """A still face seen through a jittering crop: each crop's camera differs, the face in the frame
    does not. Filtering in frame coordinates returns the still face exactly; filtering the crop
    cameras themselves (the earlier tracker) passes the crop's jitter through."""
    rng = np.random.default_rng(0)
    still = np.array([1.1, 0.02, -0.05])  # the face's camera in the first crop's coordinates
    ref = np.array([200.0, 150.0, 120.0])
    boxes = ref + rng.normal(size=(40, 3)) * [4.0, 4.0, 6.0]
    boxes[0] = ref
    ts = np.arange(40) / 30.0
    sm = track_lib.Smoother(filters.OneEuroConfig(min_cutoff=1.0, beta=0.0))
    crop_filter = filters.OneEuroFilter(filters.OneEuroConfig(min_cutoff=1.0, beta=0.0))
    err_frame, err_crop = [], []
    for t, box in zip(ts, boxes):
        k, d = box[2] / ref[2], (box[:2] - ref[:2]) / (ref[2] / 2)
        cam = regressor.reframe_camera(still, 1.0 / k, -d / k)  # the same face, this crop's camera
        pred = regressor.Prediction(np.full(3, t), np.zeros(2), np.zeros(15), cam.astype(np.float32), np.zeros((68, 2)))
        out = sm(pred, box, t)
        err_frame.append(np.abs(regressor.reframe_camera(out.cam.astype(np.float64), k, d) - still).max())
        err_crop.append(np.abs(regressor.reframe_camera(crop_filter(cam, t), k, d) - still).max())
    assert max(err_frame) < 1e-5 < 1e-3 < np.mean(err_crop)
    np.testing.assert_allclose(out.shape, np.full(3, ts.mean()), rtol=1e-5)  # identity: running mean
    np.testing.assert_allclose(regressor.box_of_transform(crops_lib.box_to_transform(ref, 96), 96), ref)


# ------------------------------------------------------------------------------ sources
def test_paced_source_keeps_time_and_ends():
    frames = np.zeros((6, 4, 4, 3), np.uint8) + np.arange(6)[:, None, None, None].astype(np.uint8)
    src = sources.PacedSource(frames, fps=50.0)
    t0 = time.perf_counter()
    got = list(src)
    took = time.perf_counter() - t0
    assert [f.image[0, 0, 0] for f in got] == list(range(6)) and src.end_reason == "ended"
    assert took >= 5 / 50.0 * 0.9
    assert all(b.time_s > a.time_s for a, b in zip(got, got[1:]))


def test_paced_source_drops_frames_for_a_slow_consumer_and_reports_a_stall():
    frames = np.zeros((40, 2, 2, 3), np.uint8)
    src = sources.PacedSource(frames, fps=200.0, stall_after=20, stall_timeout_s=0.3)
    got = []
    for f in src:
        got.append(f.index)
        time.sleep(0.02)  # slower than the camera: older frames are dropped
    src.close()
    assert src.end_reason == "stalled"
    assert len(got) < 20 and got[-1] >= 15
    src = sources.PacedSource(frames, fps=200.0, stall_after=2, stall_timeout_s=0.2, on_stall="error")
    with pytest.raises(sources.StreamStalledError, match="stalled"):
        list(src)
    src.close()


def test_open_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sources.open_source(tmp_path / "nope.mp4")
    with pytest.raises(sources.SourceError, match="camera 57 cannot be opened"):
        sources.open_source(57)
    assert sources.source_kind("rtsp://host/x") == "url" and sources.source_kind("3") == "camera"


def test_live_command_reports_a_missing_camera(capsys):
    from neuface_jax import cli

    assert cli.main(["neuface-jax", "live", "--source", "57"]) == 1
    assert "camera 57 cannot be opened" in capsys.readouterr().err


# ------------------------------------------------------------------------------ tracking
class _FixedDetector:
    """A detector stand-in for frames without a real face: reports a box (or none) on every call."""

    def __init__(self, box):
        self.box, self.calls = box, 0

    def detect(self, image):
        self.calls += 1
        return np.zeros((0, 5), np.float32) if self.box is None else np.asarray([self.box], np.float32)


def test_tracker_without_a_face_and_param_outputs(tmp_path):
    from neuface_jax import params as params_lib

    enc, cfg = tiny_regressor()
    reg = regressor.Regressor(enc, cfg)
    blank = np.zeros((5, 48, 64, 3), np.uint8)
    none = list(track_lib.track(sources.ArraySource(blank), regressor=reg, detector=_FixedDetector(None)))
    assert [f.status for f in none] == ["no face"] * 5 and not any(f.valid for f in none)
    det = _FixedDetector((20, 10, 44, 34, 0.9))
    cfg_t = track_lib.TrackConfig(redetect_every=2, min_face_px=4.0, max_size_change=10.0, stable_crop=False)
    got = list(track_lib.track(sources.ArraySource(blank), cfg_t, regressor=reg, detector=det))
    assert got[0].status == "detected" and all(f.valid for f in got)
    assert det.calls == 3  # frames 0, 2 and 4
    # Detection frames crop at the detector's box; the others follow the previous fit.
    for i in (0, 2, 4):
        np.testing.assert_allclose(got[i].box, track_lib.detection_box(det.box, cfg_t))
    fit0 = crops_lib.apply_transform(crops_lib.from_normalized(got[0].raw.landmarks, 32),
                                     crops_lib.invert_transform(got[0].crop_transform))
    np.testing.assert_allclose(got[1].box, crops_lib.landmark_boxes(fit0[None])[0], rtol=1e-5)
    # A smoothed crop box starts at the detection and then lags a moving one.
    moving = [(20 + 3 * i, 10, 44 + 3 * i, 34, 0.9) for i in range(5)]
    tr = track_lib.Tracker(reg, _FixedDetector(None), dataclasses.replace(cfg_t, redetect_every=1, stable_crop=True))
    boxes = []
    for i, box in enumerate(moving):
        tr.detector.box = box
        boxes.append(tr.step(sources.Frame(i, i / 30.0, blank[i])).box)
    assert boxes[0][0] == pytest.approx(track_lib.detection_box(moving[0], cfg_t)[0])
    assert all(b[0] < track_lib.detection_box(m, cfg_t)[0] - 0.5 for b, m in zip(boxes[1:], moving[1:]))
    assert set(track_lib.STAGES) <= set(got[0].seconds)
    with track_lib.ParamsSink(tmp_path / "p.npz") as sink:
        for f in none[:2] + got:
            sink.write(f)
    rec = params_lib.load_params(tmp_path / "p.npz")
    assert rec.valid[:, 0].tolist() == [False, False] + [True] * 5 and rec.crop_size == 32
    np.testing.assert_allclose(rec.pose[-1, 0], got[-1].params.pose, atol=1e-6)
    with track_lib.ParamsSink(tmp_path / "p.jsonl") as sink:
        for f in got:
            sink.write(f)
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and lines[0]["status"] == "detected" and len(lines[0]["expression"]) == 50


@pytest.mark.shared_data
def test_live_on_a_video_file_with_the_real_detector(shared_data, landmarker_model, tmp_path):
    from neuface_jax.realtime import live

    enc, cfg = tiny_regressor()
    reg = regressor.Regressor(enc, cfg)
    cfg_t = track_lib.TrackConfig(face_landmarker=str(landmarker_model), redetect_every=4, max_size_change=10.0)
    summary = live.run_live(str(shared_data / "videos" / "liveportrait_d20.mp4"), cfg_t,
                            live.LiveConfig(max_frames=6, params=str(tmp_path / "p.npz"), out=str(tmp_path / "o.mp4")),
                            regressor=reg)
    assert summary["frames"] == 6 and summary["detector_runs"] >= 2
    assert (tmp_path / "o.mp4").stat().st_size > 0 and (tmp_path / "p.npz").is_file()
    # The detector found the face: the first crop lies on the face of this portrait video (centre third).
    first = next(track_lib.track(str(shared_data / "videos" / "liveportrait_d20.mp4"), cfg_t, regressor=reg,
                                 max_frames=1))
    assert first.status == "detected"
    assert 480 / 4 < first.box[0] < 480 * 3 / 4 and 60 < first.box[2] < 480
