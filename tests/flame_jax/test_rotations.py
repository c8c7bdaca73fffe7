"""Rotation helpers against SciPy, with gradients at the identity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from flame_jax import rotations as R


@pytest.fixture(scope="module")
def rotvecs():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(64, 3))
    r = r / np.linalg.norm(r, axis=1, keepdims=True) * rng.uniform(0, np.pi * 0.999, size=(64, 1))
    r[0] = 0.0
    r[1] = [1e-7, 0, 0]
    r[2] = [0, np.pi * 0.999, 0]
    return r


def test_rodrigues_matches_scipy_and_is_orthonormal(rotvecs):
    m = np.asarray(R.axis_angle_to_matrix(jnp.asarray(rotvecs, jnp.float32)), np.float64)
    np.testing.assert_allclose(m, Rotation.from_rotvec(rotvecs).as_matrix(), atol=2e-6)
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=2e-6)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=2e-6)


def test_rodrigues_finite_gradient_at_zero():
    g = jax.jacfwd(lambda r: R.axis_angle_to_matrix(r))(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(g)))
    g = jax.grad(lambda r: jnp.sum(R.axis_angle_to_matrix(r) * jnp.arange(9.0).reshape(3, 3)))(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0


def test_quaternion_round_trips(rotvecs):
    r = jnp.asarray(rotvecs, jnp.float32)
    q = R.axis_angle_to_quaternion(r)
    sq = Rotation.from_rotvec(rotvecs).as_quat()  # (x, y, z, w)
    sq = np.concatenate([sq[:, 3:], sq[:, :3]], 1)
    sq *= np.where(sq[:, :1] < 0, -1, 1)
    np.testing.assert_allclose(np.asarray(q), sq, atol=2e-6)
    np.testing.assert_allclose(np.asarray(R.quaternion_to_axis_angle(q)), rotvecs, atol=2e-5)
    m = R.axis_angle_to_matrix(r)
    np.testing.assert_allclose(np.asarray(R.matrix_to_quaternion(m)), sq, atol=2e-5)
    np.testing.assert_allclose(np.asarray(R.quaternion_to_matrix(q)), np.asarray(m), atol=2e-6)
    np.testing.assert_allclose(np.asarray(R.matrix_to_axis_angle(m)), rotvecs, atol=1e-4)


def test_quaternion_gradients_finite_at_zero():
    for f in (R.axis_angle_to_quaternion, lambda r: R.quaternion_to_axis_angle(R.axis_angle_to_quaternion(r))):
        g = jax.jacfwd(f)(jnp.zeros(3))
        assert np.all(np.isfinite(np.asarray(g)))
        g = jax.jacrev(f)(jnp.zeros(3))
        assert np.all(np.isfinite(np.asarray(g)))


def test_6d_round_trip(rotvecs):
    m = R.axis_angle_to_matrix(jnp.asarray(rotvecs, jnp.float32))
    d6 = R.matrix_to_rotation_6d(m)
    np.testing.assert_allclose(np.asarray(d6[:, :3]), np.asarray(m[:, 0, :]))
    np.testing.assert_allclose(np.asarray(R.rotation_6d_to_matrix(d6)), np.asarray(m), atol=2e-6)
    # Gram–Schmidt turns any non-degenerate 6D vector into a rotation.
    rng = np.random.default_rng(1)
    m2 = np.asarray(R.rotation_6d_to_matrix(jnp.asarray(rng.normal(size=(10, 6)))), np.float64)
    np.testing.assert_allclose(np.linalg.det(m2), 1.0, atol=1e-5)


def test_deca_pose_conversion():
    p6 = jnp.arange(12.0).reshape(2, 6)
    full = R.deca_pose_to_full(p6)
    assert full.shape == (2, 15)
    np.testing.assert_array_equal(np.asarray(full[:, 0:3]), np.asarray(p6[:, :3]))
    np.testing.assert_array_equal(np.asarray(full[:, 6:9]), np.asarray(p6[:, 3:]))
    np.testing.assert_array_equal(np.asarray(full[:, 3:6]), 0)
    np.testing.assert_array_equal(np.asarray(full[:, 9:]), 0)
    np.testing.assert_array_equal(np.asarray(R.full_pose_to_deca(full)), np.asarray(p6))
    with pytest.raises(ValueError):
        R.deca_pose_to_full(jnp.zeros(5))
