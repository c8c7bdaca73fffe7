"""Tests of neuface_jax.media.crops: recipe, transforms, pixel convention of the warp, smoothing, real crops."""

from __future__ import annotations

import numpy as np
import pytest

from neuface_jax.media import crops

MEAD = "videos/mead_M003_level_1_disgusted_015.mp4"


def _random_boxes(rng, t):
    return np.stack([rng.uniform(100, 1800, t), rng.uniform(100, 1000, t), rng.uniform(50, 900, t)], -1)


def test_box_recipe():
    pts = np.array([[[10.0, 20.0], [110.0, 60.0], [50.0, 40.0]]])  # w 100, h 40
    box = crops.landmark_boxes(pts)[0]
    np.testing.assert_allclose(box, [60.0, 40.0, 100 * 1.1 * 1.25])
    box = crops.landmark_boxes(pts, box_scale=1.0, crop_scale=2.0)[0]
    np.testing.assert_allclose(box, [60.0, 40.0, 200.0])
    # Tall set: the height decides; z is ignored.
    tall = np.array([[0.0, 0.0, 5.0], [10.0, 80.0, -5.0]])
    np.testing.assert_allclose(crops.landmark_boxes(tall), [5.0, 40.0, 110.0])
    assert np.isnan(crops.landmark_boxes(np.stack([pts[0], pts[0]]), [True, False])[1]).all()


def test_transform_round_trip_within_1e4_px():
    rng = np.random.default_rng(0)
    boxes = _random_boxes(rng, 16)
    m = crops.boxes_to_transforms(boxes, 224)
    pts = rng.uniform(0, 1920, size=(16, 68, 2))
    back = crops.apply_transform(crops.apply_transform(pts, m), crops.invert_transform(m))
    assert np.abs(back - pts).max() < 1e-4
    # The box maps onto the crop: centre → (112, 112), corners → (0, 0) and (224, 224).
    cx, cy, s = boxes[3]
    corners = np.array([[cx, cy], [cx - s / 2, cy - s / 2], [cx + s / 2, cy + s / 2]])
    np.testing.assert_allclose(crops.apply_transform(corners, m[3]), [[112, 112], [0, 0], [224, 224]], atol=1e-9)
    # Normalized coordinates: p / size · 2 − 1 and back.
    np.testing.assert_allclose(crops.to_normalized(np.array([[0.0, 224.0], [112.0, 56.0]]), 224), [[-1, 1], [0, -0.5]])
    q = rng.uniform(-1, 1, (5, 2))
    np.testing.assert_allclose(crops.to_normalized(crops.from_normalized(q, 224), 224), q, atol=1e-12)
    # Composition and inverse are consistent; depth scales with the similarity scale.
    ident = crops.compose_transforms(crops.invert_transform(m), m)
    np.testing.assert_allclose(ident, np.broadcast_to([[1, 0, 0], [0, 1, 0]], ident.shape), atol=1e-9)
    p3 = np.concatenate([pts, rng.normal(size=(16, 68, 1))], -1)
    out3 = crops.apply_transform(p3, m)
    np.testing.assert_allclose(out3[..., 2], p3[..., 2] * (224 / boxes[:, 2])[:, None])
    t = crops.CropTransforms(matrices=m, boxes=boxes, size=224, valid=np.ones(16, bool))
    assert np.abs(t.from_normalized(t.to_normalized(pts)) - pts).max() < 1e-4


def test_numpy_helpers_match_camera_module():
    from neuface_jax.core import camera
    rng = np.random.default_rng(1)
    m = crops.boxes_to_transforms(_random_boxes(rng, 4), 224)
    pts = rng.uniform(0, 1000, (4, 10, 2))
    np.testing.assert_allclose(np.asarray(camera.apply_affine(pts, m)), crops.apply_transform(pts, m), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(np.asarray(camera.invert_affine(m)), crops.invert_transform(m), rtol=1e-5, atol=1e-3)
    if hasattr(camera, "pixels_to_normalized"):
        p = rng.uniform(0, 224, (3, 2))
        np.testing.assert_allclose(np.asarray(camera.pixels_to_normalized(p, 224)), crops.to_normalized(p, 224), atol=1e-5)


def _blob(h, w, cx, cy, sigma):
    """Gaussian blob centred at continuous pixel coordinates (cx, cy) (pixel j's centre is j + 0.5)."""
    x = np.arange(w) + 0.5
    y = np.arange(h) + 0.5
    g = np.exp(-((x[None] - cx) ** 2 + (y[:, None] - cy) ** 2) / (2 * sigma**2))
    return np.repeat((g * 255).astype(np.float32)[..., None], 3, -1)


def _centroid(img):
    w = img[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(w * (xs + 0.5)).sum() / w.sum(), (w * (ys + 0.5)).sum() / w.sum()])


@pytest.mark.parametrize("side", [100.0, 300.0, 1200.0])  # upscale, mild and strong (>2×) downscale
def test_warp_puts_pixels_where_the_transform_says(side):
    h, w = 720, 1280
    cx, cy = 611.3, 402.7
    img = _blob(h, w, cx, cy, sigma=side / 40)
    box = np.array([cx + 0.17 * side, cy - 0.11 * side, side])  # blob off-centre in the crop
    m = crops.box_to_transform(box, 224)
    crop = crops.warp_crop(img, m, 224)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.float32
    expected = crops.apply_transform(np.array([[cx, cy]]), m)[0]
    np.testing.assert_allclose(_centroid(crop), expected, atol=0.05)


def test_crop_frames_dtype_and_border():
    frames = np.full((2, 40, 60, 3), 200, np.uint8)
    m = crops.boxes_to_transforms(np.array([[30.0, 20.0, 40.0], [0.0, 0.0, 40.0]]), 32)
    out = crops.crop_frames(frames, m, 32)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    assert (out[0] == 200).all()
    # Second box is centred on the image corner: three quarters are outside → black.
    assert out[1, :15, :15].max() == 0 and (out[1, 17:, 17:] == 200).all()


def test_interpolation_and_smoothing():
    t = np.arange(10, dtype=float)
    ramp = np.stack([2 * t + 1, -t + 50, 0.5 * t + 100], -1)
    valid = np.ones(10, bool)
    valid[[0, 4, 5, 9]] = False
    holey = np.where(valid[:, None], ramp, np.nan)
    filled = crops.interpolate_invalid(holey, valid)
    np.testing.assert_allclose(filled[1:9], ramp[1:9])  # interior gaps: linear
    np.testing.assert_allclose(filled[0], ramp[1])  # ends: nearest valid
    np.testing.assert_allclose(filled[9], ramp[8])
    # Centred moving average and Savitzky–Golay keep a linear ramp exactly (no lag).
    for method in ("moving_average", "savgol"):
        np.testing.assert_allclose(crops.smooth_boxes(ramp, method=method, window=5), ramp, atol=1e-9)
    # ... and reduce noise.
    rng = np.random.default_rng(0)
    noisy = ramp + rng.normal(0, 3, ramp.shape)
    for method in ("moving_average", "savgol"):
        sm = crops.smooth_boxes(noisy, method=method, window=5)
        assert np.abs(sm - ramp)[2:-2].mean() < np.abs(noisy - ramp)[2:-2].mean()
    with pytest.raises(ValueError, match="no valid"):
        crops.interpolate_invalid(holey, np.zeros(10, bool))
    with pytest.raises(ValueError, match="unknown smoothing"):
        crops.smooth_boxes(ramp, method="kalman")
    # compute_crops: invalid frames get interpolated boxes and finite transforms.
    pts = np.stack([ramp[:, :2] - 20, ramp[:, :2] + 20], 1)
    c = crops.compute_crops(pts, valid, smoothing="moving_average", window=3)
    assert np.isfinite(c.matrices).all() and c.matrices.shape == (10, 2, 3)
    np.testing.assert_array_equal(c.valid, valid)
    np.testing.assert_allclose(c.boxes[4, :2], ramp[4, :2])


@pytest.mark.shared_data
def test_crop_of_detected_face(shared_data, landmarker_model):
    from neuface_jax.media import detect
    from neuface_jax.media import sources
    from neuface_jax.media import video
    from neuface_jax.media import landmark_sets as ls

    clip = video.read_video(shared_data / MEAD, frames=video.FrameRange(end=6, stride=2))
    lmk = detect.decode_and_detect(sources.open_source(clip), model_path=landmarker_model, use_cache=False).landmarks[0]
    p68 = ls.mediapipe_to_ibug68(lmk.xy)
    c = crops.compute_crops(p68, lmk.valid)
    q = c.to_normalized(p68)
    assert np.abs(q).max() <= 1.0
    # The face fills the crop: the landmark box spans 1 / (1.1 · 1.25) of it in its long side.
    extent = (q.max(axis=1) - q.min(axis=1)).max(axis=-1)
    np.testing.assert_allclose(extent, 2 / (1.1 * 1.25), rtol=1e-6)
    # Landmarks map back to the original pixels.
    assert np.abs(c.from_normalized(q) - p68).max() < 1e-4
    # The crop image is the original region resampled: its centre shows the box centre's pixels.
    img = c.crop(clip.frames[0])
    assert img.shape == (3, 224, 224, 3) and img.dtype == np.uint8
    inv = crops.invert_transform(c.matrices[0])
    centre_src = crops.apply_transform(np.array([[112.0, 112.0]]), inv)[0]
    np.testing.assert_allclose(centre_src, c.boxes[0, :2], atol=1e-9)
    x, y = (int(v) for v in centre_src)
    patch = clip.frames[0][0, y - 2 : y + 3, x - 2 : x + 3].reshape(-1, 3).mean(0)
    assert np.abs(img[0, 110:115, 110:115].reshape(-1, 3).mean(0) - patch).max() < 25


# ---------------------------------------------------------------------------------------------
# Clip preparation (encoder crops + normalized targets)


def test_prepare_clip_masks_bad_input(tmp_path):
    t, w, size = 3, 2, 32
    images = np.full((t, w, size, size, 3), 128, np.uint8)
    lmk = np.tile(np.linspace(8, 24, 68)[None, None, :, None], (t, w, 1, 2)).astype(np.float32)
    lmk[0, 0, 10] = np.nan
    transforms = np.tile(np.array([[7.0, 0, 0], [0, 7.0, 0]], np.float32), (t, w, 1, 1))
    valid = np.ones((t, w), bool)
    valid[1, 1] = False
    data = crops.prepare_clip(images, lmk, transforms, encoder_size=16, valid=valid, crop_size=224)
    assert float(data.landmarks_mask[0, 0, 10]) == 0.0 and float(data.landmarks_mask[0, 0, 11]) == 1.0
    assert float(data.frame_mask[1, 1]) == 0.0 and float(data.landmarks_mask[1, 1].sum()) == 0.0
    assert np.all(np.isfinite(np.asarray(data.landmarks)))
    np.testing.assert_allclose(float(data.landmarks[0, 0, 0, 0]), 8 * 7 / 224 * 2 - 1, atol=1e-5)
    with pytest.raises(ValueError, match="my clip: no frame"):
        crops.prepare_clip(images, np.full_like(lmk, np.nan), transforms, encoder_size=16, name="my clip")


def test_prepare_clip_keeps_pixels_of_undetected_frames():
    """A frame without detection keeps its crop when the crop box is known (the encoder still sees the
    face; only the losses ignore it); a frame without a finite crop transform is left black."""
    t, w, size = 3, 2, 32
    rng = np.random.default_rng(0)
    images = rng.integers(30, 230, size=(t, w, size, size, 3), dtype=np.uint8)
    lmk = np.tile(np.linspace(8, 24, 68)[None, None, :, None], (t, w, 1, 2)).astype(np.float32)
    clean_crops = np.tile(np.array([[7.0, 0, 0], [0, 7.0, 0]], np.float32), (t, w, 1, 1))
    all_valid = crops.prepare_clip(images, lmk, clean_crops, encoder_size=16, crop_size=224)
    transforms = clean_crops.copy()
    valid = np.ones((t, w), bool)
    valid[1, 0] = False  # no detection, interpolated crop box
    lmk[2, 1] = np.nan  # detector returned nothing usable
    transforms[0, 1] = np.nan  # no crop box at all
    data = crops.prepare_clip(images, lmk, transforms, encoder_size=16, valid=valid, crop_size=224)
    img = np.asarray(data.images)
    ref = np.asarray(all_valid.images)
    for ti, wi in [(1, 0), (2, 1)]:
        assert float(data.frame_mask[ti, wi]) == 0.0 and float(data.landmarks_mask[ti, wi].sum()) == 0.0
        assert img[ti, wi].std() > 0.05  # real pixels, not a black square
        np.testing.assert_array_equal(img[ti, wi], ref[ti, wi])  # the same crop as a detected frame
    assert float(data.frame_mask[0, 1]) == 0.0 and np.all(img[0, 1] == 0.0)
    assert float(data.frame_mask[0, 0]) == 1.0 and img[0, 0].std() > 0.05
