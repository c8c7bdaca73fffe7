import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax.rotations import axis_angle_to_matrix
from neuface_jax.core import losses


def jcall(fn, *args, **kwargs):
    """Calls ``fn`` under ``jax.jit`` (one compile instead of one per eager op: keeps tests fast)."""
    return jax.jit(lambda *a: fn(*a, **kwargs))(*args)


def total_loss(config, batch, **kwargs):
    """``losses.total_loss`` under ``jax.jit`` (the config, holding functions, stays static)."""
    return jax.jit(lambda b: losses.total_loss(config, b, **kwargs))(batch)


# ----------------------------------------------------------------------------- masked reductions


def test_masked_mean_all_masked_is_zero_and_ignores_nan():
    v = jnp.array([1.0, jnp.nan, 3.0])
    assert float(losses.masked_mean(v, jnp.array([1.0, 0.0, 1.0]))) == pytest.approx(2.0)
    assert float(losses.masked_mean(v, jnp.zeros(3))) == 0.0
    g = jax.jit(jax.grad(lambda x: losses.masked_mean(x, jnp.array([1.0, 0.0, 1.0]))))(v)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [0.5, 0.0, 0.5])


def test_masked_mean_axis_and_float_mask():
    v = jnp.array([[1.0, 2.0], [3.0, 5.0]])
    np.testing.assert_allclose(losses.masked_mean(v, jnp.array([[1.0, 0.0], [0.5, 0.5]]), axis=1), [1.0, 4.0])


# ----------------------------------------------------------------------------- landmarks


def test_landmark_l1_hand_case():
    pred = jnp.array([[0.0, 0.0], [1.0, 1.0]])
    target = jnp.array([[0.5, 0.0], [1.0, 0.0]])
    values, mask = losses.landmark_l1(pred, target)
    np.testing.assert_allclose(values, [0.25, 0.5])
    # Reference Σ|π − j|₁ / (2 Σ m) = (0.5 + 1) / 4.
    assert float(losses.masked_mean(values, mask)) == pytest.approx(0.375)
    values, mask = losses.landmark_l1(pred, target, mask=jnp.array([True, False]))
    assert float(losses.masked_mean(values, mask)) == pytest.approx(0.25)
    values, mask = losses.landmark_l1(pred, target, weights=jnp.array([2.0, 1.0]))
    assert float(losses.masked_mean(values, mask)) == pytest.approx((1.0 + 1.0) / 4)


def test_reference_landmark_weights():
    w = losses.IBUG68_REFERENCE_WEIGHTS
    assert w.shape == (68,)
    assert w[[5, 6, 10, 11]].tolist() == [2.0] * 4
    assert w[[27, 28, 32, 34]].tolist() == [1.5] * 4
    assert w[[30, 31, 35]].tolist() == [3.0] * 3
    assert w[[48, 54]].tolist() == [3.0, 3.0]
    assert w[[49, 60, 67]].tolist() == [1.5] * 3
    assert w[[0, 4, 7, 16, 17, 36, 47]].tolist() == [1.0] * 7


def test_landmark_nan_masked_gives_finite_loss_and_grads():
    rng = np.random.default_rng(0)
    pred = jnp.asarray(rng.normal(size=(3, 68, 2)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(3, 68, 2)), jnp.float32)
    mask = jnp.ones((3, 68)).at[0, 5].set(0.0).at[2].set(0.0)
    target = target.at[0, 5].set(jnp.nan).at[2].set(jnp.nan)

    def loss(p):
        v, m = losses.landmark_l1(p, target, mask, losses.IBUG68_REFERENCE_WEIGHTS)
        return losses.masked_mean(v, m)

    val, g = jax.jit(jax.value_and_grad(loss))(pred)
    assert np.isfinite(float(val)) and float(val) > 0
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_array_equal(g[2], 0.0)
    np.testing.assert_array_equal(g[0, 5], 0.0)
    # NaN targets are masked automatically even when the caller's mask says visible.
    v, m = losses.landmark_l1(pred, target)
    assert float(m[0, 5]) == 0.0 and np.all(np.asarray(m[2]) == 0.0)
    g2 = jax.jit(jax.grad(lambda p: losses.masked_mean(*losses.landmark_l1(p, target))))(pred)
    assert np.all(np.isfinite(np.asarray(g2)))


def test_landmark_all_masked_is_zero_with_zero_grad():
    pred = jnp.ones((4, 2))
    target = jnp.full((4, 2), jnp.nan)
    val, g = jax.jit(jax.value_and_grad(lambda p: losses.masked_mean(*losses.landmark_l1(p, target))))(pred)
    assert float(val) == 0.0
    np.testing.assert_array_equal(g, 0.0)


# ----------------------------------------------------------------------------- temporal


def _yaw_track(T, spike_at=None, spike=0.3, base=0.1):
    r = jnp.zeros((T, 3)).at[:, 1].set(base)
    if spike_at is not None:
        r = r.at[spike_at, 1].add(spike)
    return r


def test_temporal_constant_rotation_is_zero():
    r = jnp.tile(jnp.array([[0.1, -0.2, 0.05]]), (12, 1))
    values, mask = jcall(losses.temporal_rotation, r)
    assert values.shape == (12, 4) and mask.shape == (12, 4)
    np.testing.assert_allclose(values, 0.0, atol=1e-12)


def test_temporal_spike_is_positive_and_localized():
    values, mask = jcall(losses.temporal_rotation, _yaw_track(12, spike_at=5))
    per_frame = np.asarray(values.sum(-1))
    # Frames whose window (t−2, t−1, t, t+1) contains frame 5: t = 4..7.
    assert np.all(per_frame[[4, 5, 6, 7]] > 1e-6)
    np.testing.assert_allclose(per_frame[[0, 1, 2, 3, 8, 9, 10, 11]], 0.0, atol=1e-12)
    assert per_frame[5] == per_frame.max()


def test_temporal_reference_border_rule_and_hand_value():
    T = 8
    q_mean = jcall(losses.quaternion_moving_average, 
        jnp.tile(jnp.array([[1.0, 0.0, 0.0, 0.0]]), (T, 1)).at[3].set(jnp.array([0.0, 1.0, 0.0, 0.0]))
    )
    # Frame 3 is interior (2 ≤ 3 < T−2): mean of q1, q2, q3, q4 = (3/4, 1/4, 0, 0), normalized.
    expect = np.array([3.0, 1.0, 0.0, 0.0]) / np.sqrt(10.0)
    np.testing.assert_allclose(q_mean[3], expect, rtol=1e-6)
    # Borders keep their own quaternion: t < 2 and t ≥ T − 2.
    for t in (0, 1, 6, 7):
        np.testing.assert_allclose(q_mean[t], [1.0, 0.0, 0.0, 0.0])


def test_temporal_masked_frame_excluded():
    r = _yaw_track(12, spike_at=5, spike=0.5).at[5].set(jnp.nan)
    mask = jnp.ones(12).at[5].set(0.0)

    def loss(x):
        v, m = jcall(losses.temporal_rotation, x, mask)
        return losses.reference_temporal_reduce(v, m)

    val, g = jax.jit(jax.value_and_grad(loss))(r)
    # The masked (NaN) spike neither contributes nor changes its neighbours' targets.
    assert float(val) == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_array_equal(g[5], 0.0)
    _, m = jcall(losses.temporal_rotation, r, mask)
    assert float(m[5].sum()) == 0.0


def test_temporal_padding_matches_unpadded_chunk():
    r = jnp.asarray(0.2 * np.random.default_rng(3).normal(size=(9, 3)), jnp.float32)
    v_ref, _ = jcall(losses.temporal_rotation, r)
    padded = jnp.concatenate([r, jnp.full((3, 3), jnp.nan)], 0)
    mask = jnp.arange(12) < 9
    v_pad, m_pad = jcall(losses.temporal_rotation, padded, mask)
    np.testing.assert_allclose(v_pad[:9], v_ref, rtol=1e-5, atol=1e-12)
    np.testing.assert_array_equal(v_pad[9:], 0.0)
    np.testing.assert_array_equal(m_pad[9:], 0.0)
    # Frames whose whole window is padding keep finite gradients.
    g = jax.jit(jax.grad(lambda x: losses.reference_temporal_reduce(*losses.temporal_rotation(x, mask))))(padded)
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_array_equal(np.asarray(g)[9:], 0.0)


def test_temporal_prev_context_changes_border_targets():
    r = _yaw_track(8, base=0.1)
    v0, _ = jcall(losses.temporal_rotation, r)
    np.testing.assert_allclose(v0[:2], 0.0, atol=1e-12)
    ctx = jnp.zeros((2, 3)).at[:, 1].set(-0.3)
    v1, _ = jcall(losses.temporal_rotation, r, prev_context=ctx)
    assert float(v1[0].sum()) > 1e-6 and float(v1[1].sum()) > 1e-6
    # The context itself is fixed: no gradient flows to it.
    g = jax.jit(jax.grad(lambda c: losses.temporal_rotation(r, prev_context=c)[0].sum()))(ctx)
    np.testing.assert_array_equal(g, 0.0)
    # A masked context frame is like no context at that position.
    v2, _ = jcall(losses.temporal_rotation, r, prev_context=ctx, prev_mask=jnp.zeros(2))
    np.testing.assert_allclose(v2, v0, atol=1e-12)


def test_temporal_stop_gradient_option_changes_grads():
    r = _yaw_track(10, spike_at=4)
    g_code = jax.jit(jax.grad(lambda x: losses.temporal_rotation(x)[0].sum()))(r)
    g_paper = jax.jit(jax.grad(lambda x: losses.temporal_rotation(x, stop_gradient_target=True)[0].sum()))(r)
    assert not np.allclose(g_code, g_paper)
    # With a fixed target only frames with a residual get gradient (frame 4's neighbours do too).
    assert np.all(np.isfinite(np.asarray(g_paper)))


def test_temporal_views_and_reference_reduction():
    T, V = 10, 2
    r = jnp.stack([_yaw_track(T, spike_at=4), _yaw_track(T)], 1)  # [T, V, 3]
    values, mask = jcall(losses.temporal_rotation, r)
    assert values.shape == (T, V, 4)
    ref = losses.reference_temporal_reduce(values, mask)
    expect = sum(float(values[:, v].sum()) / (4 * T) for v in range(V))
    assert float(ref) == pytest.approx(expect, rel=1e-6)
    # A [T] frame mask broadcasts over views.
    v2, m2 = jcall(losses.temporal_rotation, r, jnp.ones(T).at[4].set(0))
    assert m2.shape == (T, V, 4) and float(m2[4].sum()) == 0.0


def test_moving_average_ramp_hand_value():
    x = jnp.arange(10.0)[:, None] * jnp.array([[1.0, 2.0]])
    values, mask = jcall(losses.temporal_moving_average, x)
    # Interior: x̂_t = x_t − slope/2 → residual (slope/2)²; borders 0.
    np.testing.assert_allclose(values[2:8], np.tile([[0.25, 1.0]], (6, 1)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(values)[[0, 1, 8, 9]], 0.0)
    values, _ = jcall(losses.temporal_moving_average, jnp.ones((10, 4)) * 3.0)
    np.testing.assert_allclose(values, 0.0)


def test_acceleration_hand_values_mask_and_context():
    t = jnp.arange(8.0)
    x = jnp.stack([t, t**2], -1)  # [T, 2]
    values, mask = jcall(losses.temporal_acceleration, x)
    np.testing.assert_allclose(values[1:7, 0], 0.0, atol=1e-9)
    np.testing.assert_allclose(values[1:7, 1], 4.0)
    np.testing.assert_array_equal(np.asarray(mask)[[0, 7]], 0.0)
    _, m = jcall(losses.temporal_acceleration, x, jnp.ones(8).at[3].set(0))
    np.testing.assert_array_equal(np.asarray(m[:, 0]), [0, 1, 0, 0, 0, 1, 1, 0])
    v, m = jcall(losses.temporal_acceleration, x, prev_context=jnp.array([[-1.0, 1.0]]))
    assert float(m[0, 0]) == 1.0
    np.testing.assert_allclose(v[0], [0.0, 4.0])
    # Vertices [T, Vw, N, 3] with event_ndim=2.
    verts = jnp.zeros((6, 2, 5, 3)).at[3, 1, 2, 0].set(1.0)
    v, m = jcall(losses.temporal_acceleration, verts, event_ndim=2)
    assert v.shape == verts.shape
    assert float(v[3, 1, 2, 0]) == pytest.approx(4.0) and float(v[2, 1, 2, 0]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- multi-view

TRI = jnp.array([[0, 1, 2]])
TRI_VERTS = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _tilt_x(verts, cos_angle):
    """Rotates about the x axis so the triangle's normal has z component ``cos_angle``."""
    a = np.arccos(cos_angle)
    rot = axis_angle_to_matrix(jnp.array([a, 0.0, 0.0]))
    return verts @ rot.T


def test_vertex_normals_area_weighted():
    # Vertex 0 is shared by a triangle in the xy plane (cross product (0, 0, 4): area 2, normal +z)
    # and one in the xz plane ((v3 − v0) × (v1 − v0) = (0, 2, 0): area 1, normal +y): the sum is
    # (0, 2, 4), i.e. weighted 1:2 by area.
    verts = jnp.array([[0.0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 1]])
    faces = jnp.array([[0, 1, 2], [0, 3, 1]])
    n = jcall(losses.vertex_normals, verts, faces)
    np.testing.assert_allclose(n[0], np.array([0.0, 2.0, 4.0]) / np.sqrt(20.0), rtol=1e-6)
    np.testing.assert_allclose(n[2], [0, 0, 1.0], atol=1e-7)
    assert jcall(losses.vertex_normals, jnp.stack([verts, verts]), faces).shape == (2, 4, 3)


def test_multiview_identical_views_zero_loss():
    m = jnp.stack([TRI_VERTS, _tilt_x(TRI_VERTS, 0.6), TRI_VERTS])
    c = jnp.stack([TRI_VERTS] * 3) + 0.1
    values, mask = jcall(losses.multiview_l1, m, c, TRI)
    assert values.shape == (3, 3, 3)
    np.testing.assert_allclose(values, 0.0, atol=1e-6)


def test_multiview_offset_hand_computed_softmax_weights():
    d = jnp.array([0.01, -0.02, 0.03])
    m = jnp.stack([TRI_VERTS, _tilt_x(TRI_VERTS, 0.6)])  # scores 1.0 and 0.6
    c = jnp.stack([TRI_VERTS, TRI_VERTS + d])
    values, mask = jcall(losses.multiview_l1, m, c, TRI)
    w1 = np.exp(6.0) / (np.exp(10.0) + np.exp(6.0))
    w0 = 1.0 - w1
    np.testing.assert_allclose(values[0], np.tile(w1 * np.abs(d), (3, 1)), rtol=1e-3)
    np.testing.assert_allclose(values[1], np.tile(w0 * np.abs(d), (3, 1)), rtol=1e-5)
    w = losses.view_weights(jcall(losses.visibility_scores, m, TRI))
    np.testing.assert_allclose(w[:, 0], [w0, w1], rtol=1e-5)


def test_multiview_invisible_views_get_other_or_uniform_weights():
    d = jnp.array([0.0, 0.05, 0.0])
    # View 1 tilted past the 0.28 threshold (n_z = 0.2): invisible → weight ≈ 0.
    m = jnp.stack([TRI_VERTS, _tilt_x(TRI_VERTS, 0.2)])
    c = jnp.stack([TRI_VERTS, TRI_VERTS + d])
    values, _ = jcall(losses.multiview_l1, m, c, TRI)
    np.testing.assert_allclose(values[0], 0.0, atol=1e-7)
    np.testing.assert_allclose(values[1], np.tile(np.abs(d), (3, 1)), rtol=1e-6)
    # Both facing away (reversed winding): uniform weights.
    back = jnp.array([[0, 2, 1]])
    values, _ = jcall(losses.multiview_l1, jnp.stack([TRI_VERTS, TRI_VERTS]), c, back)
    np.testing.assert_allclose(values, np.tile(0.5 * np.abs(d), (2, 3, 1)), rtol=1e-6)
    # Depth threshold: behind z = −0.08 is invisible even when facing the camera.
    deep = TRI_VERTS - jnp.array([0.0, 0.0, 0.1])
    s = jcall(losses.visibility_scores, jnp.stack([TRI_VERTS, deep]), TRI)
    np.testing.assert_allclose(s, [[1.0] * 3, [0.0] * 3])


def test_multiview_view_mask_excludes_view_and_nan():
    d = jnp.array([0.01, -0.02, 0.03])
    m2 = jnp.stack([TRI_VERTS, _tilt_x(TRI_VERTS, 0.6)])
    c2 = jnp.stack([TRI_VERTS, TRI_VERTS + d])
    ref, _ = jcall(losses.multiview_l1, m2, c2, TRI)
    m3 = jnp.concatenate([m2, jnp.full((1, 3, 3), jnp.nan)])
    c3 = jnp.concatenate([c2, jnp.full((1, 3, 3), jnp.nan)])
    vmask = jnp.array([1.0, 1.0, 0.0])

    def loss(c):
        return losses.masked_mean(*jcall(losses.multiview_l1, m3, c, TRI, vmask))

    values, mask = jcall(losses.multiview_l1, m3, c3, TRI, vmask)
    np.testing.assert_allclose(values[:2], ref, rtol=1e-5)
    np.testing.assert_array_equal(mask[2], 0.0)
    val, g = jax.jit(jax.value_and_grad(loss))(c3)
    assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(g)))
    # Gradients to the posed meshes (through normals and weights) stay finite for a NaN, masked view.
    g_m = jax.jit(jax.grad(lambda m: losses.masked_mean(*losses.multiview_l1(m, c3, TRI, vmask))))(m3)
    assert np.all(np.isfinite(np.asarray(g_m)))
    # All views invalid → nothing, never NaN.
    val0 = losses.masked_mean(*jcall(losses.multiview_l1, m3, c3, TRI, jnp.zeros(3)))
    assert float(val0) == 0.0


def test_multiview_frames_and_options():
    m = jnp.broadcast_to(TRI_VERTS, (4, 3, 3, 3))
    c = m + jnp.asarray(0.01 * np.random.default_rng(0).normal(size=m.shape), jnp.float32)
    values, mask = jcall(losses.multiview_l1, m, c, TRI, jnp.ones((4, 3)).at[1].set(0.0))
    assert values.shape == (4, 3, 3, 3)
    np.testing.assert_array_equal(mask[1], 0.0)
    # Median of three equally visible views: the middle one has zero loss per coordinate somewhere.
    vm, _ = jcall(losses.multiview_l1, m, c, TRI, merge="median")
    assert np.all(np.asarray(vm).min(axis=1) < 1e-7)
    g_sg = jax.jit(jax.grad(lambda x: losses.multiview_l1(m, x, TRI, stop_gradient_target=True)[0].sum()))(c)
    g = jax.jit(jax.grad(lambda x: losses.multiview_l1(m, x, TRI)[0].sum()))(c)
    assert not np.allclose(g, g_sg)
    with pytest.raises(ValueError):
        jcall(losses.multiview_l1, m, c, TRI, merge="mode")


def test_canonical_vertices_undo_rotation():
    verts = jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)), jnp.float32)
    j0 = jnp.array([0.1, -0.2, 0.3])
    r = jnp.array([0.2, -0.4, 0.1])
    posed = (verts - j0) @ axis_angle_to_matrix(r).T + j0
    np.testing.assert_allclose(losses.canonical_vertices(posed, r, j0), verts, atol=1e-5)


def test_sample_frames_prefers_valid_and_distinct():
    mask = jnp.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], bool)
    idx, smask = losses.sample_frames(jax.random.key(0), mask, 5)
    assert len(set(np.asarray(idx).tolist())) == 5
    assert np.all(np.asarray(mask)[np.asarray(idx)]) and np.all(np.asarray(smask) == 1)
    idx, smask = losses.sample_frames(jax.random.key(1), jnp.array([1, 0, 0], bool), 5)
    assert idx.shape == (3,) and int(idx[0]) == 0 and np.asarray(smask).tolist() == [1, 0, 0]


# ----------------------------------------------------------------------------- priors and composition


def test_l2_prior_frame_mask():
    x = jnp.array([[1.0, 2.0], [jnp.nan, 3.0]])
    v, m = losses.l2_prior(x, jnp.array([1.0, 0.0]))
    assert float(losses.masked_mean(v, m)) == pytest.approx(2.5)


def _tiny_batch(T=6, V=2):
    rng = np.random.default_rng(0)

    def normal(*shape):
        return rng.normal(size=shape).astype(np.float32)

    posed = np.broadcast_to(np.asarray(TRI_VERTS), (T, V, 3, 3))
    return {
        "landmarks_pred": normal(T, V, 5, 2),
        "landmarks_target": normal(T, V, 5, 2),
        "global_pose": 0.1 * normal(T, V, 3),
        "frame_mask": np.ones((T, V), np.float32),
        "posed_vertices": posed,
        "canonical_vertices": posed + 0.01 * normal(*posed.shape),
        "faces": np.asarray(TRI),
        "expression": np.ones((T, V, 4), np.float32),
        "shape": np.ones((10,), np.float32),
        "pose": np.zeros((T, V, 15), np.float32),
    }


def test_total_loss_builtin_reference_config():
    batch = _tiny_batch()
    total, parts = total_loss(losses.REFERENCE_LOSS_CONFIG, batch)
    assert set(parts) == {"landmark", "temporal", "multiview"}
    expect = 10 * parts["landmark"] + 100 * parts["temporal"] + 200 * parts["multiview"]
    assert float(total) == pytest.approx(float(expect), rel=1e-6)
    lmk = jcall(lambda p, t: losses.masked_mean(*losses.landmark_l1(p, t)), batch["landmarks_pred"], batch["landmarks_target"])
    assert float(parts["landmark"]) == pytest.approx(float(lmk), rel=1e-6)


def test_custom_term_via_config_affects_total():
    batch = _tiny_batch()
    base, _ = total_loss({"landmark": 10.0}, batch)

    def my_term(b, *, power=2):
        return jnp.abs(b["expression"]) ** power, None

    total, parts = total_loss({"landmark": 10.0, "my_term": (my_term, 0.5)}, batch)
    assert float(parts["my_term"]) == pytest.approx(1.0)
    assert float(total) == pytest.approx(float(base) + 0.5)
    total3, parts3 = total_loss({"landmark": 10.0, "my_term": (my_term, 0.5, {"power": 3})}, batch)
    assert float(total3) == pytest.approx(float(base) + 0.5)
    # A scalar-returning term and a builtin with options by name.
    total4, parts4 = total_loss(
        {
            "scalar": losses.LossTerm(lambda b: jnp.float32(2.0), 3.0),
            "jaw": ("temporal", 1.0, {"stop_gradient_target": True}),
            "mv": (functools.partial(losses.multiview_term, merge="median"), 1.0),
        },
        batch,
    )
    assert float(parts4["scalar"]) == 2.0
    assert float(total4) == pytest.approx(6.0 + float(parts4["jaw"]) + float(parts4["mv"]), rel=1e-6)


def test_register_and_errors():
    registry = dict(losses.BUILTIN_TERMS)
    losses.register_term("expr_l1", lambda b: (jnp.abs(b["expression"]), None), registry=registry)
    total, parts = total_loss({"expr_l1": 2.0}, _tiny_batch(), registry=registry)
    assert float(total) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        losses.register_term("landmark", lambda b: 0.0, registry=registry)
    with pytest.raises(ValueError, match="unknown loss term"):
        total_loss({"nope": 1.0}, _tiny_batch())
    with pytest.raises(KeyError, match="posed_vertices"):
        total_loss({"multiview": 1.0}, {"faces": TRI})
    # Weight 0 terms are not evaluated.
    total, parts = total_loss({"multiview": 0.0}, {})
    assert float(total) == 0.0 and parts == {}


def test_smoothing_and_prior_builtins():
    batch = _tiny_batch()
    batch["jaw_pose"] = np.zeros((6, 2, 3), np.float32)
    batch["jaw_pose"][3, 0, 0] = 0.2
    batch["vertices"] = np.zeros((6, 2, 3, 3), np.float32)
    batch["vertices"][3] = 0.01
    total, parts = total_loss(
        {"jaw_smooth": 1.0, "expression_smooth": 1.0, "vertex_acceleration": 1.0, "prior": 1.0, "shape_prior": 1.0},
        batch,
    )
    assert float(parts["jaw_smooth"]) > 0 and float(parts["expression_smooth"]) == 0.0
    assert float(parts["vertex_acceleration"]) > 0
    assert float(parts["shape_prior"]) == pytest.approx(1.0)
    assert float(parts["prior"]) == pytest.approx(1.0 + 1.0 + 0.0)
