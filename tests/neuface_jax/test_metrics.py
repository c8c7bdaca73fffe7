"""Metrics on hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from neuface_jax import metrics


def _trajectory(fn, t=20, n=5):
    times = np.arange(t, dtype=np.float64)[:, None, None]
    base = np.random.default_rng(0).normal(size=(1, n, 3)) * 0.05
    return base + fn(times)


def test_constant_velocity_has_zero_acceleration():
    pts = _trajectory(lambda t: t * np.array([0.001, -0.002, 0.0005]))
    np.testing.assert_allclose(metrics.second_difference(pts), 0.0, atol=1e-12)
    assert metrics.jitter(pts) == pytest.approx(0.0, abs=1e-9)
    assert metrics.msi(pts) == pytest.approx(1.0 / metrics.MSI_VARIANCE_FLOOR)


def test_quadratic_motion_known_jitter():
    # p = 0.5 · a · t² with a = 1 mm/frame² along x → acceleration exactly 1 mm/frame².
    pts = _trajectory(lambda t: 0.5 * 0.001 * t**2 * np.array([1.0, 0.0, 0.0]))
    assert metrics.jitter(pts) == pytest.approx(1.0, rel=1e-9)
    # constant acceleration → zero variance → capped stability
    assert metrics.msi(pts) == pytest.approx(1.0 / metrics.MSI_VARIANCE_FLOOR)


def test_alternating_noise_known_msi_and_jitter():
    # x alternates ±e mm: acceleration alternates ∓4e; variance over (frames, xyz) = (16e²)/3.
    e = 0.5
    sign = (-1.0) ** np.arange(12)
    pts = np.zeros((12, 2, 3))
    pts[:, :, 0] = (e / 1000.0) * sign[:, None]
    a = 4 * e
    assert metrics.jitter(pts) == pytest.approx(a, rel=1e-9)
    # The alternating acceleration averages to 0 over the (even) frame count, so
    # σ² = mean over frames and xyz of a² = a² / 3 (only x moves).
    var = a**2 / 3.0
    assert metrics.msi(pts) == pytest.approx(1.0 / var, rel=1e-6)
    smoother = pts * 0.5
    assert metrics.msi(smoother) > metrics.msi(pts)  # higher = smoother


def test_frame_mask_drops_accelerations():
    pts = _trajectory(lambda t: t * np.array([0.001, 0, 0]), t=10)
    pts[5] += 0.01  # a spike
    mask = np.ones(10, bool)
    mask[5] = False
    assert metrics.jitter(pts) > 1.0
    assert metrics.jitter(pts, frame_mask=mask) == pytest.approx(0.0, abs=1e-9)


def test_cvd():
    rng = np.random.default_rng(1)
    c = rng.normal(size=(4, 1, 30, 3)) * 0.05
    same = np.repeat(c, 3, axis=1)
    assert metrics.cvd(same) == 0.0
    shifted = same.copy()
    shifted[:, 2] += np.array([0.003, 0.0, 0.004])  # 5 mm offset of view 2
    # pairs (0,1)=0, (0,2)=5, (1,2)=5 → mean 10/3 mm
    assert metrics.cvd(shifted) == pytest.approx(10.0 / 3.0, rel=1e-9)
    mask = np.ones((4, 3), bool)
    mask[:, 2] = False
    assert metrics.cvd(shifted, view_mask=mask) == pytest.approx(0.0, abs=1e-12)
    assert metrics.cvd(c) == 0.0  # one view


def test_vertex_error_and_alignment():
    rng = np.random.default_rng(2)
    gt = rng.normal(size=(3, 50, 3)) * 0.05
    assert metrics.vertex_error(gt + np.array([0.0, 0.002, 0.0]), gt) == pytest.approx(2.0, rel=1e-9)
    rot = Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix()
    moved = gt @ rot.T + np.array([0.01, 0.02, -0.03])
    assert metrics.vertex_error(moved, gt) > 10.0
    assert metrics.vertex_error(moved, gt, align="rigid") == pytest.approx(0.0, abs=1e-9)
    scaled = 1.1 * moved
    assert metrics.vertex_error(scaled, gt, align="rigid") > 0.5
    assert metrics.vertex_error(scaled, gt, align="similarity") == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        metrics.vertex_error(gt, gt[:, :10])


def test_nme_known_offset_and_visibility():
    gt = np.zeros((2, 68, 2))
    gt[:, :, 0] = np.linspace(0, 100, 68)
    gt[:, 36] = [10.0, 50.0]
    gt[:, 45] = [110.0, 50.0]  # inter-ocular distance 100 px
    pred = gt + np.array([3.0, 4.0])  # 5 px everywhere → 5 %
    assert metrics.nme(pred, gt) == pytest.approx(5.0)
    vis = np.ones((2, 68), bool)
    pred2 = pred.copy()
    pred2[0, 10] += 1000.0
    vis[0, 10] = False
    assert metrics.nme(pred2, gt, vis) == pytest.approx(5.0)
    assert metrics.nme(pred2, gt) > 5.0
    assert np.isnan(metrics.nme(pred, gt, np.zeros((2, 68), bool)))
    # works with a view axis and JAX arrays
    import jax.numpy as jnp

    assert metrics.nme(jnp.asarray(pred[None]), jnp.asarray(gt[None])) == pytest.approx(5.0)
