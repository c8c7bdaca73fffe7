"""The regressor's spatial landmark head, the head-rotation-and-camera fit to 2D points, and training with it."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.core.mobilenet import heatmap_cross_entropy, soft_argmax
from neuface_jax.realtime import regressor, train

# Three stages: the head reads the stride-8 and stride-16 activations.
TINY3 = dict(widths=(8, 16, 16), blocks=(1, 1, 1), head_hidden=32, image_size=32)


def test_soft_argmax_reads_cell_centres_in_normalized_crop_coordinates():
    h, w = 4, 6
    logits = np.full((1, h, w, 3), -50.0, np.float32)
    logits[0, 1, 4, 0] = 50.0  # a peak: that cell's centre
    logits[0, :, :, 1] = 0.0  # uniform: the middle of the crop
    logits[0, 3, 0, 2] = logits[0, 3, 1, 2] = 50.0  # two equal peaks: halfway between
    pts = np.asarray(soft_argmax(jnp.asarray(logits)))[0]
    np.testing.assert_allclose(pts[0], [(4.5 / w) * 2 - 1, (1.5 / h) * 2 - 1], atol=1e-6)
    np.testing.assert_allclose(pts[1], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(pts[2], [(1.0 / w) * 2 - 1, (3.5 / h) * 2 - 1], atol=1e-6)


def test_heatmap_cross_entropy_is_lowest_for_a_map_peaked_at_the_target():
    h, w = 12, 12
    target = jnp.asarray([[[0.1, -0.3]]], jnp.float32)
    cy, cx = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    tx, ty = (0.1 + 1) / 2 * w, (-0.3 + 1) / 2 * h

    def gaussian_at(x, y, sigma=1.0):
        return jnp.asarray((-0.5 * ((cx - x) ** 2 + (cy - y) ** 2) / sigma**2)[None, :, :, None], jnp.float32)

    at = float(heatmap_cross_entropy(gaussian_at(tx, ty), target)[0, 0])
    off = float(heatmap_cross_entropy(gaussian_at(tx + 2, ty - 1), target)[0, 0])
    flat = float(heatmap_cross_entropy(jnp.zeros((1, h, w, 1)), target)[0, 0])
    assert at < off and at < flat
    assert flat == pytest.approx(np.log(h * w), rel=1e-5)  # a uniform map: log of the cell count
    # Both maps give the same soft-argmax point: the term, not the coordinate loss, tells them apart.
    wide = gaussian_at(tx, ty, sigma=4.0)
    np.testing.assert_allclose(np.asarray(soft_argmax(gaussian_at(tx, ty))), [[[0.1, -0.3]]], atol=1e-4)
    assert float(heatmap_cross_entropy(wide, target)[0, 0]) > at


def test_landmark_head_config_checkpoint_and_added_head(tmp_path):
    cfg = regressor.regressor_config(100, 50, landmark_head=68, **TINY3)
    assert encoder_lib.EncoderConfig.from_dict(cfg.to_dict()) == cfg
    plain = regressor.regressor_config(100, 50, **TINY3)
    assert "landmark_head" not in plain.to_dict()  # configs written before the head existed still match
    with pytest.raises(ValueError, match="landmark_head needs the mobilenet"):
        encoder_lib.EncoderConfig.small(landmark_head=68)
    with pytest.raises(ValueError, match="landmark_head"):
        dataclasses.replace(cfg, landmark_head=5000)
    enc = encoder_lib.init_encoder(plain, seed=1)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)), jnp.float32)
    with pytest.raises(ValueError, match="no landmark head"):
        enc.with_landmarks(x)
    # Adding a head keeps every other weight: the parameter outputs are unchanged.
    headed = encoder_lib.with_landmark_head(enc, 68, seed=2)
    raw, pts = headed.with_landmarks(x)
    np.testing.assert_array_equal(np.asarray(raw), np.asarray(enc(x)))
    np.testing.assert_array_equal(np.asarray(headed(x)), np.asarray(enc(x)))
    assert pts.shape == (2, 68, 2)
    np.testing.assert_allclose(np.asarray(pts), 0.0, atol=1e-6)  # zero logits: uniform maps, the crop's centre
    # The head's weights move with training like any other and round-trip through a checkpoint.
    g, tr, rest = encoder_lib.split_params(headed)
    import jax

    tr = jax.tree.map(lambda a: a + 0.05 * jnp.sin(jnp.arange(a.size, dtype=a.dtype).reshape(a.shape)), tr)
    moved = encoder_lib.merge_params(g, tr, rest)
    encoder_lib.save_encoder(tmp_path / "reg", moved, moved.config)
    loaded, loaded_cfg = encoder_lib.load_encoder(tmp_path / "reg")
    assert loaded_cfg.landmark_head == 68
    for a, b in zip(loaded.with_landmarks(x), moved.with_landmarks(x)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(np.abs(np.asarray(moved.with_landmarks(x)[1])).max()) > 1e-3
    raw2, pts2 = encoder_lib.apply(g, tr, rest, x, landmarks=True)
    np.testing.assert_allclose(np.asarray(pts2), np.asarray(moved.with_landmarks(x)[1]), atol=1e-6)


def _face_and_params(seed=0):
    face = regressor.landmark_submodel(regressor.demo_face())
    rng = np.random.default_rng(seed)
    shape = jnp.asarray(rng.normal(size=100) * 0.5, jnp.float32)
    expr = jnp.asarray(rng.normal(size=50) * 0.3, jnp.float32)
    pose = np.zeros(15, np.float32)
    pose[:3] = [0.2, -0.1, 0.05]
    return face, shape, expr, jnp.asarray(pose), jnp.asarray([9.0, 0.002, -0.004], jnp.float32)


def test_fit_pose_recovers_the_head_rotation_and_camera_from_68_points():
    face, shape, expr, pose, cam = _face_and_params()
    target = np.asarray(pose).copy()
    target[:3] += [np.deg2rad(9.0), np.deg2rad(-4.0), 0.0]  # the head turned further down and aside
    target_cam = jnp.asarray([9.5, 0.006, -0.001], jnp.float32)
    pts = fit_lib.evaluate_params(face, shape, expr, jnp.asarray(target), target_cam)[1]
    sig = jnp.asarray(regressor.HeadFit(sigma_point=0.001, sigma_rotation_deg=30.0, sigma_scale=0.3,
                                        sigma_translation=0.3).sigmas())
    # The jaw contour (points 0-16) slides over the mesh with the head's yaw (FLAME's dynamic contour), which
    # the fit holds where the regressed yaw put it: exact on the other 51 points, close on all 68.
    inner = jnp.asarray(np.arange(68) >= 17, jnp.float32)
    p, c = regressor.fit_pose(face, shape, expr, pose, cam, pts, inner, sig, 5)
    np.testing.assert_allclose(np.asarray(p)[:3], target[:3], atol=2e-4)
    np.testing.assert_allclose(np.asarray(c), np.asarray(target_cam), rtol=2e-4, atol=2e-5)
    p, c = regressor.fit_pose(face, shape, expr, pose, cam, pts, jnp.ones(68), sig, 5)
    np.testing.assert_allclose(np.asarray(p)[:3], target[:3], atol=5e-3)
    # A strong prior keeps the regressed values; zero weights leave them exactly.
    sig_strong = jnp.asarray(regressor.HeadFit(sigma_point=1.0, sigma_rotation_deg=0.01, sigma_scale=1e-4,
                                               sigma_translation=1e-4).sigmas())
    p2, _ = regressor.fit_pose(face, shape, expr, pose, cam, pts, jnp.ones(68),
                               sig_strong, 3)
    assert np.abs(np.asarray(p2)[:3] - np.asarray(pose)[:3]).max() < 1e-4
    p3, c3 = regressor.fit_pose(face, shape, expr, pose, cam, pts, jnp.zeros(68),
                                sig, 3)
    np.testing.assert_allclose(np.asarray(p3), np.asarray(pose), atol=1e-6)
    np.testing.assert_allclose(np.asarray(c3), np.asarray(cam), rtol=1e-6)


def test_fit_jaw_recovers_the_opening_from_the_lips():
    face, shape, expr, pose, cam = _face_and_params(1)
    target = np.asarray(pose).copy()
    target[6] += np.deg2rad(6.0)  # the mouth opened further
    pts = fit_lib.evaluate_params(face, shape, expr, jnp.asarray(target), cam)[1]
    weak = jnp.asarray(regressor.HeadFit(sigma_point=0.001, sigma_jaw_deg=90.0).jaw_sigmas())
    p = np.asarray(regressor.fit_jaw(face, shape, expr, pose, cam, pts, weak, 3))
    np.testing.assert_allclose(p[6], target[6], atol=2e-4)
    np.testing.assert_array_equal(np.delete(p, 6), np.delete(np.asarray(pose), 6))  # only the opening moves
    one = np.asarray(regressor.fit_jaw(face, shape, expr, pose, cam, pts, weak))  # the default: one step
    assert abs(one[6] - target[6]) < 0.1 * abs(target[6] - float(pose[6]))
    # Only the outer lips are read: moving every other point changes nothing.
    others = jnp.asarray(np.asarray(pts) + ~np.isin(np.arange(68), regressor.JAW_FIT_POINTS)[:, None] * 0.3)
    np.testing.assert_array_equal(np.asarray(regressor.fit_jaw(face, shape, expr, pose, cam, others, weak)), one)
    # A strong prior keeps the regressed opening.
    strong = jnp.asarray(regressor.HeadFit(sigma_point=1.0, sigma_jaw_deg=0.01).jaw_sigmas())
    assert abs(float(regressor.fit_jaw(face, shape, expr, pose, cam, pts, strong)[6]) - float(pose[6])) < 1e-5
    with pytest.raises(ValueError, match="sigma_jaw_deg"):
        regressor.HeadFit(sigma_jaw_deg=0.0)


def _spread_head(seed):
    """A tiny regressor whose head's points spread over the crop (a fresh head puts all at the centre), and a crop."""
    cfg = regressor.regressor_config(100, 50, landmark_head=68, **TINY3)
    enc = encoder_lib.init_encoder(cfg, seed=0)
    rng = np.random.default_rng(seed)
    enc.landmark_head.logits.kernel[...] = jnp.asarray(rng.normal(size=enc.landmark_head.logits.kernel.shape) * 2.0,
                                                        jnp.float32)
    return cfg, enc, rng.integers(0, 255, (32, 32, 3), np.uint8)


def test_regressor_with_a_landmark_head_fits_its_jaw_to_the_lips():
    cfg, enc, crop = _spread_head(4)
    default = regressor.Regressor(enc, cfg, head_fit=regressor.HeadFit(enabled=False))(crop)  # the jaw fit alone
    plain = regressor.Regressor(enc, cfg, head_fit=regressor.HeadFit(enabled=False, jaw=False))(crop)
    assert regressor.HeadFit().jaw and regressor.HeadFit().enabled  # both fits are on by default
    assert abs(default.pose[6] - plain.pose[6]) > 1e-4
    np.testing.assert_array_equal(np.delete(default.pose, 6), np.delete(plain.pose, 6))
    np.testing.assert_array_equal(default.expression, plain.expression)
    np.testing.assert_array_equal(default.cam, plain.cam)
    lips = list(regressor.JAW_FIT_POINTS)
    err = lambda p: np.square(p.landmarks[lips] - p.head_landmarks[lips]).sum()  # noqa: E731
    assert err(default) < err(plain)
    # The landmarks are the fitted parameters' own, with both fits (the default) too.
    reg = regressor.Regressor(enc, cfg)
    np.testing.assert_allclose(reg.landmarks(default), default.landmarks, atol=1e-6)
    both = reg(crop)
    np.testing.assert_allclose(reg.landmarks(both), both.landmarks, atol=1e-6)
    posed = regressor.Regressor(enc, cfg, head_fit=regressor.HeadFit(jaw=False))(crop)
    np.testing.assert_array_equal(np.delete(both.pose, 6), np.delete(posed.pose, 6))  # the jaw fit runs last
    assert abs(both.pose[6] - posed.pose[6]) > 1e-4


def test_regressor_with_a_landmark_head_fits_its_pose_to_the_points():
    cfg, enc, crop = _spread_head(3)
    fitted = regressor.Regressor(enc, cfg, head_fit=regressor.HeadFit(enabled=True, jaw=False, iterations=3))(crop)
    plain = regressor.Regressor(enc, cfg, head_fit=regressor.HeadFit(enabled=False, jaw=False))(crop)  # no fit
    one = regressor.Regressor(enc, cfg, head_fit=regressor.HeadFit(jaw=False))(crop)  # the default: one step
    assert fitted.head_landmarks.shape == (68, 2)
    np.testing.assert_array_equal(fitted.head_landmarks, plain.head_landmarks)
    np.testing.assert_array_equal(fitted.shape, plain.shape)  # only the head rotation and camera move
    np.testing.assert_array_equal(fitted.pose[3:], plain.pose[3:])
    err = lambda p: np.abs(p.landmarks - p.head_landmarks).mean()  # noqa: E731
    assert err(fitted) < 0.8 * err(plain)
    assert err(fitted) <= err(one) < err(plain)
    # Mirror averaging: the mirrored crop's points come back mirrored (x negated, left and right swapped).
    both = regressor.Regressor(enc, cfg, mirror_average=True)(crop)
    m = regressor.Regressor(enc, cfg)(np.ascontiguousarray(crop[:, ::-1]))
    assert np.abs(both.head_landmarks - plain.head_landmarks).max() > 1e-3
    from neuface_jax.media import landmark_sets

    back = m.head_landmarks[landmark_sets.IBUG68_MIRROR] * np.array([-1.0, 1.0])
    np.testing.assert_allclose(both.head_landmarks, (plain.head_landmarks + back) / 2, atol=1e-5)
    # Without a head: no points.
    assert regressor.Regressor(*(lambda c: (encoder_lib.init_encoder(c), c))(
        regressor.regressor_config(100, 50, **TINY3)))(crop).head_landmarks is None


def test_training_adds_and_trains_the_landmark_head():
    tiny = dict(synthetic_clips=2, synthetic_val_clips=1, steps=2, batch_size=8, group_size=4, image_size=32,
                warmup_steps=1, weight_landmark_head=60.0, weight_landmark_maps=1.0)
    start = encoder_lib.init_encoder(regressor.regressor_config(100, 50, image_size=32), seed=3)
    result = train.train(train.TrainConfig(**tiny), encoder=start, log_every=1)
    assert result.encoder_config.landmark_head == 68 and result.encoder.landmark_head is not None
    h = result.history["landmark_head"]
    assert len(h) == 2 and h[0] > 0
    assert result.validation["synthetic"]["landmark_head_l1"] > 0
    # The map term: about log(cells) for the fresh head's uniform maps.
    assert np.log(16) * 0.9 < result.history["landmark_maps"][0] < np.log(16) * 1.1
    with pytest.raises(ValueError, match="weight_landmark_maps needs"):
        train.TrainConfig(weight_landmark_maps=1.0)
    # The head moved off its zero start.
    x = jnp.zeros((1, 32, 32, 3), jnp.float32) + 0.5
    assert float(np.abs(np.asarray(result.encoder.with_landmarks(x)[1])).max()) > 0
