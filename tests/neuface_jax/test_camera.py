import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuface_jax.core import camera


def test_project_unit_camera_flips_y():
    pts = jnp.array([[0.1, 0.2, 0.3], [-0.5, 0.25, -1.0]])
    out = camera.project(pts, jnp.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(out, [[0.1, -0.2], [-0.5, -0.25]], atol=1e-7)


def test_project_scale_and_translation_hand_case():
    pts = jnp.array([[0.1, 0.2, 5.0]])
    out = camera.project(pts, jnp.array([2.0, 0.05, -0.1]))
    # x = 2·(0.1 + 0.05) = 0.3 ; y = −2·(0.2 − 0.1) = −0.2 ; depth ignored.
    np.testing.assert_allclose(out, [[0.3, -0.2]], atol=1e-6)


def test_project_broadcasts_leading_dims():
    key = jax.random.key(0)
    pts = jax.random.normal(key, (2, 3, 5, 3))
    cams = jax.random.uniform(jax.random.key(1), (2, 3, 3), minval=0.5, maxval=2.0)
    out = camera.project(pts, cams)
    assert out.shape == (2, 3, 5, 2)
    np.testing.assert_allclose(out[1, 2], camera.project(pts[1, 2], cams[1, 2]), rtol=1e-6)
    # One camera shared by many images.
    shared = camera.project(pts, cams[0, 0])
    np.testing.assert_allclose(shared[1, 1], camera.project(pts[1, 1], cams[0, 0]), rtol=1e-6)


def test_project_rejects_bad_shapes():
    with pytest.raises(ValueError):
        camera.project(jnp.zeros((4, 2)), jnp.ones(3))
    with pytest.raises(ValueError):
        camera.project(jnp.zeros((4, 3)), jnp.ones(2))


def test_normalized_pixels_round_trip_and_edges():
    p = jnp.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.5]])
    px = camera.normalized_to_pixels(p, 224)
    np.testing.assert_allclose(px, [[0, 0], [224, 224], [112, 168]], atol=1e-5)
    np.testing.assert_allclose(camera.pixels_to_normalized(px, 224), p, atol=1e-6)
    # Non-square (width, height).
    px2 = camera.normalized_to_pixels(p, (200, 100))
    np.testing.assert_allclose(px2[2], [100, 75], atol=1e-5)
    np.testing.assert_allclose(camera.pixels_to_normalized(px2, (200, 100)), p, atol=1e-6)


def _similarity(scale, angle, tx, ty):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]], np.float32)


def test_crop_transform_round_trip():
    m = _similarity(0.37, 0.3, -120.0, 45.0)
    orig = jnp.array([[10.0, 20.0], [640.0, 360.0], [333.3, 12.5]])
    crop = camera.original_to_crop(orig, m)
    # Against a plain numpy evaluation of the affine map.
    np.testing.assert_allclose(crop, orig @ m[:, :2].T + m[:, 2], rtol=1e-5)
    back = camera.crop_to_original(crop, m)
    np.testing.assert_allclose(back, orig, atol=1e-3)
    inv = np.asarray(camera.invert_affine(m))
    full = np.vstack([m, [0, 0, 1]])
    np.testing.assert_allclose(inv, np.linalg.inv(full)[:2], rtol=1e-5, atol=1e-5)


def test_crop_transform_batched():
    ms = jnp.stack([_similarity(0.5, 0.0, 1.0, 2.0), _similarity(2.0, -0.4, -3.0, 7.0)])
    pts = jnp.ones((2, 4, 2)) * 5.0
    back = camera.crop_to_original(camera.original_to_crop(pts, ms), ms)
    np.testing.assert_allclose(back, pts, atol=1e-4)
    with pytest.raises(ValueError):
        camera.crop_to_original(pts, jnp.zeros((3, 3)))


def test_project_to_original_composes():
    m = _similarity(0.5, 0.1, -20.0, 10.0)
    pts = jnp.array([[0.01, -0.02, 0.0], [0.05, 0.03, 0.1]])
    cam = jnp.array([9.0, 0.0, 0.01])
    direct = camera.project_to_original(pts, cam, m, 224)
    crop_px = camera.normalized_to_pixels(camera.project(pts, cam), 224)
    np.testing.assert_allclose(camera.original_to_crop(direct, m), crop_px, atol=1e-3)
