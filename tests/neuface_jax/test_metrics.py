"""Metrics on hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from neuface_jax.core import metrics
from neuface_jax.media import landmark_sets


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


# ---------------------------------------------------------------- more hand-built cases
def test_sinusoid_known_acceleration():
    # x = A sin(ω t): second difference = −4 sin²(ω/2) x exactly, so its RMS over a whole
    # number of periods is 4 sin²(ω/2) · A / sqrt(2); the mean is 0, so σ² = RMS² / 3.
    amp_mm, omega = 2.0, 2 * np.pi / 8  # period 8 frames
    t = np.arange(2 + 8 * 5)  # accelerations at frames 1..40: exactly 5 periods
    pts = np.zeros((t.size, 1, 3))
    pts[:, 0, 0] = amp_mm / 1000.0 * np.sin(omega * t)
    rms = 4 * np.sin(omega / 2) ** 2 * amp_mm / np.sqrt(2)
    assert metrics.jitter(pts) == pytest.approx(rms, rel=1e-9)
    assert metrics.msi(pts) == pytest.approx(3.0 / rms**2, rel=1e-9)
    np.testing.assert_allclose(
        metrics.acceleration(pts)[:, 0, 0], -4 * np.sin(omega / 2) ** 2 * 1000 * pts[1:-1, 0, 0], atol=1e-9
    )


def test_msi_variance_floor_and_views_axis():
    pts = np.zeros((6, 2, 4, 3))  # [T, views, N, 3] at rest
    assert metrics.msi(pts) == pytest.approx(1.0 / metrics.MSI_VARIANCE_FLOOR)
    assert metrics.msi(pts, variance_floor=0.0) == np.inf
    assert metrics.msi_landmarks(pts) == metrics.msi_vertices(pts) == metrics.msi(pts)
    mask = np.zeros(6, bool)
    mask[:3] = True  # only one valid acceleration: variance undefined
    assert np.isnan(metrics.msi(pts, frame_mask=mask))
    assert metrics.jitter(pts, frame_mask=mask) == 0.0
    assert np.isnan(metrics.jitter(pts, frame_mask=np.zeros(6, bool)))
    with pytest.raises(ValueError):
        metrics.jitter(pts[:2])


def test_nme_is_a_mean_over_frames():
    # Frame 0: 10 visible landmarks, 1 px error; frame 1: 1 visible landmark, 4 px error;
    # IOD 100 px. Per frame: 1 % and 4 % → NME 2.5 % (each frame weighs the same).
    gt = np.zeros((2, 68, 2))
    gt[:, 45, 0] = 100.0
    pred = gt.copy()
    pred[0, :, 0] += 1.0
    pred[1, :, 1] += 4.0
    vis = np.zeros((2, 68), bool)
    vis[0, 50:60] = True
    vis[1, 50] = True
    np.testing.assert_allclose(metrics.nme_per_frame(pred, gt, vis), [1.0, 4.0])
    pred_nan = pred.copy()
    pred_nan[0, 51] = np.nan  # a missing prediction is skipped like an invisible landmark
    np.testing.assert_allclose(metrics.nme_per_frame(pred_nan, gt, vis), [1.0, 4.0])
    assert metrics.nme(pred, gt, vis) == pytest.approx(2.5)
    # A custom normalizer (e.g. box size 200 px) halves it; other eye indices are honoured.
    assert metrics.nme(pred, gt, vis, normalizer=np.full(2, 200.0)) == pytest.approx(1.25)
    gt2 = gt.copy()
    gt2[:, 1, 0] = 50.0  # IOD between landmarks 0 and 1 = 50 px
    pred2 = pred + (gt2 - gt)
    assert metrics.nme(pred2, gt2, vis, left_eye_idx=0, right_eye_idx=1) == pytest.approx(5.0)


def test_cvd_l1_and_partial_mask():
    c = np.zeros((3, 2, 10, 3))
    c[:, 1] += np.array([0.003, 0.0, 0.004])  # 3-4-5 mm offset
    assert metrics.cvd(c) == pytest.approx(5.0)
    assert metrics.cvd(c, norm="l1") == pytest.approx(7.0)
    c[2, 1] += 1.0  # a wild frame, masked out
    mask = np.ones((3, 2), bool)
    mask[2, 1] = False
    assert metrics.cvd(c, view_mask=mask) == pytest.approx(5.0)
    assert np.isnan(metrics.cvd(c, view_mask=np.zeros((3, 2), bool)))
    with pytest.raises(ValueError):
        metrics.cvd(c, norm="l3")


def test_rigid_transform_recovers_rotation_scale_translation():
    rng = np.random.default_rng(3)
    src = rng.normal(size=(4, 40, 3))
    rots = Rotation.from_rotvec(rng.normal(size=(4, 3))).as_matrix()
    t = rng.normal(size=(4, 3))
    dst = 1.7 * np.einsum("bij,bnj->bni", rots, src) + t[:, None]
    s, r, tt = metrics.rigid_transform(src, dst, with_scale=True)
    np.testing.assert_allclose(s, 1.7, rtol=1e-9)
    np.testing.assert_allclose(r, rots, atol=1e-9)
    np.testing.assert_allclose(tt, t, atol=1e-9)
    np.testing.assert_allclose(metrics.rigid_align(src, dst, with_scale=True), dst, atol=1e-9)
    # A mirror image is not a rotation: the best proper rotation leaves a residual.
    mirrored = src * np.array([-1.0, 1.0, 1.0])
    _, r2, _ = metrics.rigid_transform(src, mirrored)
    np.testing.assert_allclose(np.linalg.det(r2), 1.0, atol=1e-9)
    assert metrics.vertex_error(src, mirrored, align="rigid", scale=1.0) > 0.1
    # Weights: outliers with zero weight do not move the fit.
    noisy = dst.copy()
    noisy[:, :5] += 10.0
    w = np.ones((4, 40))
    w[:, :5] = 0.0
    np.testing.assert_allclose(metrics.rigid_transform(src, noisy, with_scale=True, weights=w)[1], rots, atol=1e-9)


def test_vertex_error_translation_alignment_mask_and_landmarks():
    rng = np.random.default_rng(4)
    gt = rng.normal(size=(3, 20, 3)) * 0.05
    shifted = gt + np.array([0.0, 0.0, 0.01])  # 10 mm
    assert metrics.vertex_error(shifted, gt) == pytest.approx(10.0)
    assert metrics.vertex_error(shifted, gt, align="translation") == pytest.approx(0.0, abs=1e-9)
    bad = shifted.copy()
    bad[1] += 1.0
    assert metrics.vertex_error(bad, gt, valid=np.array([True, False, True])) == pytest.approx(10.0)
    assert metrics.landmark_error_3d(shifted[:, :5], gt[:, :5]) == pytest.approx(10.0)
    assert metrics.vertex_error(shifted[0], gt[0]) == pytest.approx(10.0)  # a single mesh [N, 3]


def test_jax_arrays_and_jit_agree_with_numpy():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(5)
    pts = rng.normal(size=(12, 2, 30, 3)) * 0.01
    mask = np.ones(12, bool)
    mask[4] = False
    gt2 = rng.normal(size=(12, 68, 2)) * 50
    pred2 = gt2 + rng.normal(size=gt2.shape)
    vis = rng.random((12, 68)) > 0.2
    expected = {
        "jitter": metrics.jitter(pts, frame_mask=mask),
        "msi": metrics.msi(pts, frame_mask=mask),
        "cvd": metrics.cvd(pts[:, :, :, :].reshape(12, 2, 30, 3)),
        "err": metrics.vertex_error(pts[:, 0], pts[:, 1], align="rigid"),
        "nme": metrics.nme(pred2, gt2, vis),
    }

    @jax.jit
    def all_metrics(p, m, pr, g, v):
        return {
            "jitter": metrics.jitter(p, frame_mask=m),
            "msi": metrics.msi(p, frame_mask=m),
            "cvd": metrics.cvd(p),
            "err": metrics.vertex_error(p[:, 0], p[:, 1], align="rigid"),
            "nme": metrics.nme(pr, g, v),
        }

    got = all_metrics(jnp.asarray(pts), jnp.asarray(mask), jnp.asarray(pred2), jnp.asarray(gt2), jnp.asarray(vis))
    for k, v in expected.items():
        assert isinstance(v, float)
        assert float(got[k]) == pytest.approx(v, rel=2e-3), k


def test_eye_corners_of_landmark_sets():
    assert metrics.eye_corners() == (36, 45)
    assert metrics.eye_corners(landmark_sets.landmark_set_ids("ibug68")) == (36, 45)
    ids = landmark_sets.landmark_set_ids("mediapipe105")
    left, right = metrics.eye_corners(ids)
    assert (ids[left], ids[right]) == metrics.EYE_CORNER_MEDIAPIPE_IDS
    with pytest.raises(ValueError, match="eye corners"):
        metrics.eye_corners([1, 2, 33])


def test_landmark_set_nme_uses_the_set_eye_corners_and_skips_hidden_corners():
    rng = np.random.default_rng(0)
    ids = np.array([5, 263, 7, 33])  # right corner at position 1, left at 3
    gt = rng.normal(size=(3, 4, 2)) * 10
    gt[:, 3] = [0.0, 0.0]
    gt[:, 1] = [4.0, 0.0]  # inter-ocular distance 4
    pred = gt + [[0.4, 0.0]]  # every point off by 0.4: 10 %
    assert metrics.landmark_set_nme(pred, gt, landmark_ids=ids) == pytest.approx(10.0)
    assert metrics.landmark_set_nme(pred, gt, landmark_ids=ids) == metrics.nme(pred, gt, left_eye_idx=3, right_eye_idx=1)
    gt_hidden = gt.copy()
    gt_hidden[0, 3] = np.nan  # frame 0 has no normalizer: left out, the others still 10 %
    pred[1] += [[0.4, 0.0]]  # frame 1 now 20 %
    assert metrics.landmark_set_nme(pred, gt_hidden, landmark_ids=ids) == pytest.approx(15.0)


def test_metric_names_are_declared_once():
    assert "nme_percent" in metrics.METRIC_NAMES and "accel_error_mm" in metrics.EXTRA_METRIC_NAMES
    assert not set(metrics.METRIC_NAMES) & set(metrics.EXTRA_METRIC_NAMES)
