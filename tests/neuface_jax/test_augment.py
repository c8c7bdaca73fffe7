"""Image augmentations of synthetic renders: deterministic, dtype-preserving, doing what they say."""

from __future__ import annotations

import numpy as np
import pytest

from neuface_jax.synthetic import augment


def _face(size=96):
    """A flat skin-coloured disc on grey with a 68-point-like landmark ring and eyes."""
    yy, xx = np.mgrid[0:size, 0:size]
    c = size / 2
    disc = (xx - c) ** 2 + (yy - c) ** 2 < (0.3 * size) ** 2
    img = np.full((size, size, 3), 120, np.uint8)
    img[disc] = (220, 170, 140)
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lmk = np.stack([c + 0.28 * size * np.cos(ang), c + 0.28 * size * np.sin(ang)], 1)
    lmk[36:42] = [c - 0.1 * size, c - 0.05 * size]
    lmk[42:48] = [c + 0.1 * size, c - 0.05 * size]
    lmk[17:27, 1] = c - 0.12 * size
    return img, lmk, disc


@pytest.mark.parametrize("kind", augment.OCCLUDER_KINDS)
def test_occluders_cover_the_face_and_are_deterministic(kind):
    img, lmk, disc = _face()
    a, ma = augment.paint_occluders(img, lmk, np.random.default_rng(3), kinds=(kind,), coverage=(0.2, 0.2))
    b, mb = augment.paint_occluders(img, lmk, np.random.default_rng(3), kinds=(kind,), coverage=(0.2, 0.2))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ma, mb)
    assert a.dtype == np.uint8 and ma.dtype == bool and ma.shape == img.shape[:2]
    assert (ma & disc).sum() > 0.02 * disc.sum()  # it lands on the face
    changed = np.any(a != img, -1)
    assert changed[ma].mean() > 0.5
    assert not changed[~ma].any() or kind != "bar" or changed[~ma].mean() < 0.05  # soft edges only


def test_occluder_kinds_are_checked():
    img, lmk, _ = _face()
    with pytest.raises(ValueError, match="kinds"):
        augment.paint_occluders(img, lmk, np.random.default_rng(0), kinds=("scarf",))
    with pytest.raises(ValueError, match="finite"):
        augment.paint_occluders(img, np.full((68, 2), np.nan), np.random.default_rng(0))


def test_photometric_keep_dtype_and_change_the_image():
    img, lmk, disc = _face()
    f = img.astype(np.float32) / 255.0
    for fn in (augment.blur, augment.noise, augment.jpeg, augment.color_jitter):
        for x in (img, f):
            out = fn(x, np.random.default_rng(1))
            again = fn(x, np.random.default_rng(1))
            assert out.dtype == x.dtype and out.shape == x.shape
            np.testing.assert_array_equal(out, again)
            assert np.abs(out.astype(np.float64) - x.astype(np.float64)).mean() > (1e-3 if x.dtype != np.uint8 else 0.2)
    # blur lowers the disc edge's gradient; noise has about the asked-for deviation.
    g = lambda x: np.abs(np.diff(x.astype(np.float64), axis=1)).max()  # noqa: E731
    assert g(augment.blur(img, np.random.default_rng(0), (2.0, 2.0), motion_probability=0.0)) < 0.5 * g(img)
    flat = np.full((64, 64, 3), 0.5, np.float32)
    sd = augment.noise(flat, np.random.default_rng(0), (0.05, 0.05)).std()
    assert 0.03 < sd < 0.07


def test_background_composite_and_boxes():
    img, _, disc = _face()
    bg = augment.random_background(np.random.default_rng(0), 96, 96)
    assert bg.shape == (96, 96, 3) and bg.dtype == np.float32 and 0 <= bg.min() and bg.max() <= 1
    assert bg.std() > 0.02
    out = augment.composite(img, disc, bg)
    np.testing.assert_array_equal(out[48, 48], img[48, 48])
    assert abs(int(out[2, 2, 0]) - round(float(bg[2, 2, 0]) * 255)) <= 1
    with pytest.raises(ValueError, match="mask"):
        augment.composite(img, disc[:10], bg)
    boxes = np.tile([[100.0, 120.0, 200.0]], (4000, 1))
    j = augment.jitter_boxes(boxes, np.random.default_rng(0), shift=0.05, scale=0.1)
    assert abs(np.std(j[:, 0] - 100) / 200 - 0.05) < 0.005
    assert abs(np.std(np.log(j[:, 2] / 200)) - 0.1) < 0.01


def test_augment_pipeline():
    img, lmk, disc = _face()
    cfg = augment.AugmentConfig(occluder_probability=1.0, background_probability=1.0)
    a, occ = augment.augment(img, lmk, np.random.default_rng(5), cfg, face_mask=disc)
    b, _ = augment.augment(img, lmk, np.random.default_rng(5), cfg, face_mask=disc)
    np.testing.assert_array_equal(a, b)
    assert occ.any() and a.dtype == np.uint8
    same, occ0 = augment.augment(img, lmk, np.random.default_rng(5), augment.AugmentConfig.none(), face_mask=disc)
    np.testing.assert_array_equal(same, img)
    assert not occ0.any()
    with pytest.raises(ValueError, match="probability"):
        augment.AugmentConfig(blur_probability=2.0)
