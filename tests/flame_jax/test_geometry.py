"""flame_jax.geometry: normals and Procrustes alignment, NumPy and JAX paths alike."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax import geometry
from flame_jax.rotations import axis_angle_to_matrix

# A unit square in the xy plane (two counter-clockwise triangles, normal +z) and an unused vertex.
SQUARE_V = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [5, 5, 5]], float)
SQUARE_F = np.array([[0, 1, 2], [0, 2, 3]])


def test_face_normals_unit_and_area():
    n = geometry.face_normals(SQUARE_V, SQUARE_F)
    np.testing.assert_allclose(n, [[0, 0, 1]] * 2)
    raw = geometry.face_normals(SQUARE_V, SQUARE_F, normalize=False)
    np.testing.assert_allclose(np.linalg.norm(raw, axis=-1), 1.0)  # 2 × area of each half-square


def test_vertex_normals_numpy_jax_agree_and_unused_vertex_is_zero():
    rng = np.random.default_rng(0)
    v = SQUARE_V + rng.normal(scale=0.05, size=SQUARE_V.shape) * [1, 1, 1]
    n_np = geometry.vertex_normals(v, SQUARE_F)
    n_jx = geometry.vertex_normals(jnp.asarray(v, jnp.float32), jnp.asarray(SQUARE_F))
    assert isinstance(n_np, np.ndarray) and isinstance(n_jx, jax.Array)
    np.testing.assert_allclose(np.asarray(n_jx), n_np, atol=1e-5)
    np.testing.assert_array_equal(n_np[4], 0.0)
    np.testing.assert_allclose(np.linalg.norm(n_np[:4], axis=-1), 1.0)


def test_vertex_normals_batches_and_winding():
    nb = geometry.vertex_normals(np.stack([SQUARE_V, SQUARE_V * [1, 1, -1]]), SQUARE_F[:, ::-1])
    assert nb.shape == (2, 5, 3)
    np.testing.assert_allclose(nb[:, :4], [[[0, 0, -1]] * 4] * 2)


def test_vertex_normals_gradient_is_finite_on_a_degenerate_mesh():
    flat = jnp.zeros((4, 3))  # every triangle degenerate: ‖n‖ = 0
    g = jax.grad(lambda v: jnp.sum(geometry.vertex_normals(v, jnp.asarray(SQUARE_F), eps=1e-6) * 0.0))(flat)
    assert np.all(np.isfinite(np.asarray(g)))


def test_vertex_normals_rejects_bad_shapes():
    with pytest.raises(ValueError):
        geometry.vertex_normals(np.zeros((4, 2)), SQUARE_F)
    with pytest.raises(ValueError):
        geometry.vertex_normals(jnp.zeros((4, 3)), jnp.zeros((3,), jnp.int32))


@pytest.mark.parametrize("with_scale", [False, True])
def test_rigid_transform_recovers_a_known_transform(with_scale):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 3))
    u, _, vt = np.linalg.svd(np.asarray(axis_angle_to_matrix(jnp.array([0.3, -0.5, 0.2])), np.float64))
    r = u @ vt  # exactly orthonormal in float64
    s = 1.7 if with_scale else 1.0
    t = np.array([0.1, -2.0, 0.5])
    y = s * x @ r.T + t
    s_hat, r_hat, t_hat = geometry.rigid_transform(x, y, with_scale=with_scale)
    np.testing.assert_allclose(s_hat, s, rtol=1e-9)
    np.testing.assert_allclose(r_hat, r, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(r_hat), 1.0, atol=1e-12)
    np.testing.assert_allclose(geometry.rigid_align(x, y, with_scale=with_scale), y, atol=1e-9)
    np.testing.assert_allclose(t_hat, y.mean(0) - s * r_hat @ x.mean(0), atol=1e-9)


def test_rigid_transform_reflection_is_never_returned_and_batches_broadcast():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20, 3))
    mirrored = x * [-1, 1, 1]
    ys = np.stack([x, mirrored])  # one fixed source, a batch of targets
    s, r, t = geometry.rigid_transform(x, ys, with_scale=True)
    assert r.shape == (2, 3, 3) and s.shape == (2,) and t.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    np.testing.assert_allclose(r[0], np.eye(3), atol=1e-9)


def test_rigid_transform_jax_matches_numpy_and_weights_select_points():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 3))
    y = x @ np.asarray(axis_angle_to_matrix(jnp.array([0.0, 0.4, 0.0])), np.float64).T
    y[:3] += 5.0  # outliers, weighted out
    w = np.ones(12)
    w[:3] = 0.0
    s_np, r_np, t_np = geometry.rigid_transform(x, y, weights=w)
    s_jx, r_jx, t_jx = jax.jit(lambda a, b, c: geometry.rigid_transform(a, b, weights=c))(
        jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(w, jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(r_jx), r_np, atol=1e-4)
    np.testing.assert_allclose(np.asarray(t_jx), t_np, atol=1e-4)
    np.testing.assert_allclose(geometry.rigid_align(x[3:], y[3:]), y[3:], atol=1e-5)
