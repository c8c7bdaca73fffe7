"""Forward model: flame.md §5 identities and a golden comparison against a NumPy reference."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import flame_jax
from flame_jax import forward

from .conftest import make_random_model


# --------------------------------------------------------------------------- reference
def _np_rodrigues(r):
    """Independent float64 Rodrigues with the same epsilon convention as FLAME."""
    angle = np.linalg.norm(r + 1e-8)
    k = r / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def numpy_reference(arrays, shape, expr, pose, trans):
    """A literal float64 transcription of flame.md §2 with per-vertex 4x4 matrices."""
    f32 = lambda k: np.asarray(arrays[k], np.float32).astype(np.float64)  # noqa: E731 — same stored values
    vt, sd, ed, pd = f32("v_template"), f32("shapedirs"), f32("exprdirs"), f32("posedirs")
    w, jr = f32("lbs_weights"), f32("joint_regressor")
    parents = [-1, 0, 1, 1, 1]
    ns, ne = len(shape), len(expr)
    v_shaped = vt + np.einsum("vck,k->vc", sd[..., :ns], shape) + np.einsum("vck,k->vc", ed[..., :ne], expr)
    joints = jr @ v_shaped
    rots = [_np_rodrigues(pose[3 * j : 3 * j + 3]) for j in range(5)]
    feat = np.concatenate([(rots[j] - np.eye(3)).reshape(-1) for j in range(1, 5)])
    v_posed = v_shaped + np.einsum("vcp,p->vc", pd, feat)
    g = []
    for j in range(5):
        local = np.eye(4)
        local[:3, :3] = rots[j]
        local[:3, 3] = joints[j] - (joints[parents[j]] if parents[j] >= 0 else 0)
        g.append(local if parents[j] < 0 else g[parents[j]] @ local)
    posed_joints = np.stack([gj[:3, 3] for gj in g])
    a = []
    for j in range(5):
        aj = g[j].copy()
        aj[:3, 3] = g[j][:3, 3] - g[j][:3, :3] @ joints[j]
        a.append(aj)
    a = np.stack(a)
    t_v = np.einsum("vj,jab->vab", w, a)
    vh = np.concatenate([v_posed, np.ones((len(v_posed), 1))], 1)
    verts = np.einsum("vab,vb->va", t_v, vh)[:, :3]
    return verts + trans, posed_joints + trans


# --------------------------------------------------------------------------- golden
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_golden_against_numpy_reference(seed):
    model, arrays = make_random_model(seed=seed)
    rng = np.random.default_rng(100 + seed)
    shape = rng.normal(size=12)
    expr = rng.normal(size=8)
    pose = rng.normal(size=15) * 0.4
    trans = rng.normal(size=3) * 0.1
    ref_v, ref_j = numpy_reference(arrays, shape, expr, pose, trans)
    out = forward(model, shape=shape, expression=expr, pose=pose, translation=trans)
    scale = np.abs(ref_v).max()
    np.testing.assert_allclose(np.asarray(out.vertices), ref_v, atol=2e-6 * scale, rtol=0)
    np.testing.assert_allclose(np.asarray(out.joints), ref_j, atol=2e-6 * scale, rtol=0)


def test_fewer_coefficients_use_leading_components():
    model, arrays = make_random_model()
    rng = np.random.default_rng(7)
    shape, expr, pose = rng.normal(size=5), rng.normal(size=3), rng.normal(size=15) * 0.3
    ref_v, _ = numpy_reference(arrays, shape, expr, pose, np.zeros(3))
    out = forward(model, shape=shape, expression=expr, pose=pose)
    np.testing.assert_allclose(np.asarray(out.vertices), ref_v, atol=2e-6 * np.abs(ref_v).max())
    full_shape = np.concatenate([shape, np.zeros(7)])
    out_full = forward(model, shape=full_shape, expression=np.concatenate([expr, np.zeros(5)]), pose=pose)
    np.testing.assert_array_equal(np.asarray(out.vertices), np.asarray(out_full.vertices))


def test_too_many_coefficients_is_an_error(random_model):
    model, _ = random_model
    with pytest.raises(ValueError, match="13 coefficients"):
        forward(model, shape=np.zeros(13))
    with pytest.raises(ValueError, match="15 values"):
        forward(model, pose=np.zeros(6))


# --------------------------------------------------------------------------- identities
def test_zero_parameters_give_template(random_model):
    model, arrays = random_model
    out = forward(model, shape=np.zeros(12), expression=np.zeros(8), pose=np.zeros(15))
    np.testing.assert_array_equal(np.asarray(out.vertices), np.asarray(model.v_template))
    np.testing.assert_allclose(
        np.asarray(out.joints), np.asarray(model.joint_regressor) @ np.asarray(model.v_template), atol=1e-7
    )


def test_shape_and_expression_are_linear(random_model):
    model, _ = random_model
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=12), rng.normal(size=12)
    ea, eb = rng.normal(size=8), rng.normal(size=8)
    f = lambda s, e: np.asarray(forward(model, shape=s, expression=e).vertices) - np.asarray(model.v_template)  # noqa: E731
    np.testing.assert_allclose(f(a + 2 * b, ea - eb), f(a, ea) + 2 * f(b, np.zeros(8)) - f(np.zeros(12), eb), atol=1e-6)


def test_root_rotation_is_rigid(random_model):
    model, _ = random_model
    rng = np.random.default_rng(4)
    shape = rng.normal(size=12)
    rotvec = np.array([0.3, -0.8, 0.5])
    pose = np.concatenate([rotvec, np.zeros(12)])
    trans = np.array([0.01, -0.02, 0.3])
    rest = forward(model, shape=shape)
    posed = forward(model, shape=shape, pose=pose, translation=trans)
    j0 = np.asarray(rest.joints[0])
    rot = Rotation.from_rotvec(rotvec).as_matrix()
    expected = (np.asarray(rest.vertices) - j0) @ rot.T + j0 + trans
    np.testing.assert_allclose(np.asarray(posed.vertices), expected, atol=2e-6)


def test_eye_rotation_moves_only_eye_vertices(random_model):
    model, arrays = random_model
    pose = np.zeros(15)
    pose[9:12] = [0.2, 0.4, 0.0]  # eye_left
    rest = np.asarray(forward(model).vertices)
    posed = np.asarray(forward(model, pose=pose).vertices)
    # Pose correctives of the eye joints are zeroed so only skinning is measured.
    moved = np.nonzero(np.abs(posed - rest).max(1) > 1e-7)[0]
    eye_weighted = np.nonzero(np.asarray(arrays["lbs_weights"])[:, 3] > 0)[0]
    correctives = np.asarray(model.posedirs)[18:27]  # rows of eye_left's (R - I)
    affected = np.union1d(eye_weighted, np.nonzero(np.abs(correctives).reshape(9, -1, 3).max((0, 2)) > 0)[0])
    assert set(moved) <= set(affected)
    model0 = flame_jax.FlameModel.from_arrays(
        **{k: v for k, v in arrays.items() if not k.startswith("eye_") and k != "posedirs"},
        posedirs=np.zeros_like(arrays["posedirs"]),
    )
    rest0 = np.asarray(forward(model0).vertices)
    posed0 = np.asarray(forward(model0, pose=pose).vertices)
    moved0 = np.nonzero(np.abs(posed0 - rest0).max(1) > 1e-7)[0]
    np.testing.assert_array_equal(moved0, arrays["eye_left"])


def test_joints_follow_expression(random_model):
    model, _ = random_model
    a = np.asarray(forward(model, expression=np.ones(8)).joints)
    b = np.asarray(forward(model).joints)
    assert np.abs(a - b).max() > 1e-5


# --------------------------------------------------------------------------- batching and transforms
@pytest.mark.parametrize("batch", [1, 7])
def test_batched_matches_unbatched(random_model, batch):
    model, _ = random_model
    rng = np.random.default_rng(batch)
    shape, expr = rng.normal(size=(batch, 12)), rng.normal(size=(batch, 8))
    pose, trans = rng.normal(size=(batch, 15)) * 0.3, rng.normal(size=(batch, 3))
    out = forward(model, shape=shape, expression=expr, pose=pose, translation=trans)
    assert out.vertices.shape == (batch, model.num_vertices, 3)
    assert out.joints.shape == (batch, 5, 3)
    for i in range(batch):
        single = forward(model, shape=shape[i], expression=expr[i], pose=pose[i], translation=trans[i])
        assert single.vertices.shape == (model.num_vertices, 3)
        np.testing.assert_allclose(np.asarray(out.vertices[i]), np.asarray(single.vertices), atol=1e-6)


def test_broadcast_shared_identity(random_model):
    model, _ = random_model
    rng = np.random.default_rng(11)
    shape = rng.normal(size=12)  # one identity
    pose = rng.normal(size=(4, 15)) * 0.2  # four poses
    out = forward(model, shape=shape, pose=pose)
    assert out.vertices.shape == (4, model.num_vertices, 3)
    np.testing.assert_allclose(
        np.asarray(out.vertices[2]), np.asarray(forward(model, shape=shape, pose=pose[2]).vertices), atol=1e-6
    )


def test_jit_vmap_and_single_trace(random_model):
    model, _ = random_model
    rng = np.random.default_rng(5)
    shape, pose = jnp.asarray(rng.normal(size=(6, 12))), jnp.asarray(rng.normal(size=(6, 15)) * 0.3)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(m, s, p):
        return forward(m, shape=s, pose=p).vertices

    a = f(model, shape, pose)
    f(model, shape + 1.0, pose)  # same shapes: no retrace
    b = jax.vmap(lambda s, p: forward(model, shape=s, pose=p).vertices)(shape, pose)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_finite_gradients_at_zero_pose(random_model):
    model, _ = random_model

    def loss(pose, shape, expr):
        out = forward(model, shape=shape, expression=expr, pose=pose)
        return jnp.sum(out.vertices**2) + jnp.sum(out.joints**2)

    grads = jax.grad(loss, argnums=(0, 1, 2))(jnp.zeros(15), jnp.zeros(12), jnp.zeros(8))
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))
    # A rotation gradient exists at zero: the loss is not flat in the root rotation.
    assert np.abs(np.asarray(grads[0][:3])).max() > 0


def test_gradient_matches_finite_differences(random_model):
    model, _ = random_model
    rng = np.random.default_rng(9)
    target = jnp.asarray(rng.normal(size=(model.num_vertices, 3)) * 0.05)
    pose0 = jnp.asarray(rng.normal(size=15) * 0.3)

    def loss(pose):
        return jnp.mean((forward(model, pose=pose).vertices - target) ** 2)

    g = np.asarray(jax.grad(loss)(pose0))
    eps = 1e-3
    for i in [0, 4, 7]:
        e = np.zeros(15)
        e[i] = eps
        fd = (float(loss(pose0 + e)) - float(loss(pose0 - e))) / (2 * eps)
        assert abs(fd - g[i]) < 1e-3 * max(1.0, abs(fd)) + 1e-6


def test_truncate_keeps_leading_components(random_model):
    model, arrays = random_model
    small = model.truncate(n_shape=4, n_expr=2)
    assert small.num_shape == 4 and small.num_expression == 2
    np.testing.assert_array_equal(np.asarray(small.shapedirs), np.asarray(model.shapedirs)[..., :4])
    np.testing.assert_array_equal(np.asarray(small.exprdirs), np.asarray(model.exprdirs)[..., :2])
    np.testing.assert_array_equal(np.asarray(small.posedirs), np.asarray(model.posedirs))
    rng = np.random.default_rng(2)
    s, e, p = rng.normal(size=4), rng.normal(size=2), rng.normal(size=15) * 0.2
    np.testing.assert_allclose(
        np.asarray(forward(small, shape=s, expression=e, pose=p).vertices),
        np.asarray(forward(model, shape=s, expression=e, pose=p).vertices),
        atol=1e-6,
    )
    with pytest.raises(ValueError):
        model.truncate(n_shape=99)


def test_from_arrays_rejects_bad_shapes():
    _, arrays = make_random_model()
    base = {k: v for k, v in arrays.items() if not k.startswith("eye_")}
    with pytest.raises(ValueError, match="mymodel.pkl: 'weights'"):
        flame_jax.FlameModel.from_arrays(**{**base, "lbs_weights": base["lbs_weights"][:, :4]}, source="mymodel.pkl")
    with pytest.raises(ValueError, match="'f' indexes vertex"):
        flame_jax.FlameModel.from_arrays(**{**base, "faces": base["faces"] + 10_000})
    bad = base["v_template"].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        flame_jax.FlameModel.from_arrays(**{**base, "v_template": bad})


def test_custom_skinning_gradient_matches_autodiff():
    """The skinning VJP against JAX autodiff of the plain formula, for every input."""
    from flame_jax.lbs import _skin_offset

    rng = np.random.default_rng(21)
    w = jnp.asarray(rng.random((40, 5)), jnp.float32)
    rot = jnp.asarray(rng.normal(size=(3, 5, 3, 3)) * 0.1, jnp.float32)
    t = jnp.asarray(rng.normal(size=(3, 5, 3)) * 0.01, jnp.float32)
    v = jnp.asarray(rng.normal(size=(3, 40, 3)) * 0.1, jnp.float32)
    g = jnp.asarray(rng.normal(size=(3, 40, 3)), jnp.float32)

    def plain(w, rot, t, v):
        return jnp.einsum("vj,njab,nvb->nva", w, rot, v) + jnp.einsum("vj,nja->nva", w, t)

    np.testing.assert_allclose(np.asarray(_skin_offset(w, rot, t, v)), np.asarray(plain(w, rot, t, v)), atol=1e-6)
    ours = jax.vjp(_skin_offset, w, rot, t, v)[1](g)
    ref = jax.vjp(plain, w, rot, t, v)[1](g)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
