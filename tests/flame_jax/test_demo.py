"""The procedural demo head: structure, geometry, skinning, blend shapes, landmarks."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from flame_jax import demo
from flame_jax.landmarks import contour_row, head_yaw_degrees, landmarks
from flame_jax.lbs import forward
from flame_jax.model import JOINT_NAMES, FlameModel

NAMES = demo.DEMO_EXPRESSION_NAMES


@pytest.fixture(scope="module")
def model():
    return demo.demo_model()


@pytest.fixture(scope="module")
def arrays(model):
    return {k: np.asarray(v, np.float64) if k not in ("f", "parents") else np.asarray(v) for k, v in model.to_numpy().items()}


@pytest.fixture(scope="module")
def emb68():
    return demo.demo_landmark_embedding()


def _expr(**named):
    e = np.zeros(demo.DEMO_NUM_EXPRESSION, np.float32)
    for k, val in named.items():
        e[NAMES.index(k)] = val
    return e


def _pose(**joints):
    p = np.zeros(15, np.float32)
    for name, rv in joints.items():
        j = JOINT_NAMES.index(name)
        p[3 * j : 3 * j + 3] = rv
    return p


def _run(model, emb, pose=None, expression=None, shape=None):
    pose = np.zeros(15, np.float32) if pose is None else pose
    out = forward(
        model,
        shape=None if shape is None else jnp.asarray(shape),
        expression=None if expression is None else jnp.asarray(expression),
        pose=jnp.asarray(pose),
    )
    lmk = landmarks(model, emb, out.vertices, jnp.asarray(pose))
    return np.asarray(out.vertices, np.float64), np.asarray(lmk, np.float64), np.asarray(out.joints, np.float64)


def _face_normals(v, f):
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])


def _vertex_normals(v, f):
    fn = _face_normals(v, f)
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    return vn / np.linalg.norm(vn, axis=1, keepdims=True)


def _signed_volume(v, f):
    return np.einsum("fc,fc->f", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0


def _eyeballs(arrays):
    w = arrays["weights"]
    return np.flatnonzero(w[:, 3] == 1.0), np.flatnonzero(w[:, 4] == 1.0)


# ----------------------------------------------------------------------------- determinism, structure


def test_deterministic_rebuild():
    first = demo._build.__wrapped__()
    second = demo._build.__wrapped__()
    for key in first["arrays"]:
        np.testing.assert_array_equal(first["arrays"][key], second["arrays"][key], err_msg=key)
    for part in ("ibug", "mediapipe"):
        for key in first[part]:
            np.testing.assert_array_equal(first[part][key], second[part][key], err_msg=f"{part}.{key}")
    cached = demo._build()
    np.testing.assert_array_equal(cached["arrays"]["shapedirs"], first["arrays"]["shapedirs"])


def test_structure_and_sizes(model, arrays):
    assert model.parents == (-1, 0, 1, 1, 1)
    assert 3000 <= model.num_vertices <= 6000
    assert model.num_shape == demo.DEMO_NUM_SHAPE and model.num_expression == demo.DEMO_NUM_EXPRESSION
    assert len(NAMES) == model.num_expression and len(set(NAMES)) == len(NAMES)
    assert "not FLAME" in model.name
    v, f = arrays["v_template"], arrays["f"].astype(np.int64)
    assert f.min() == 0 and f.max() == len(v) - 1
    assert np.all(np.isfinite(v))
    # FLAME frame and scale.
    assert 0.16 <= np.ptp(v[:, 0]) <= 0.21  # head width with the ears
    assert 0.07 <= v[:, 2].max() <= 0.09  # nose tip
    assert np.argmax(v[:, 2]) not in np.concatenate(_eyeballs(arrays))


def test_weights_and_regressor(arrays):
    w, jr, v = arrays["weights"], arrays["J_regressor"], arrays["v_template"]
    assert w.shape == (len(v), 5) and jr.shape == (5, len(v))
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
    assert w.min() >= 0.0
    np.testing.assert_allclose(jr.sum(1), 1.0, atol=1e-6)
    left, right = _eyeballs(arrays)
    assert len(left) == len(right) > 50
    assert left.min() > right.min() - len(right) - 1 and left.max() < right.min()  # left eyeball first
    joints = jr @ v
    # Eye joints at the eyeball centres (the regressor averages the eyeball), left at +x, ~0.061 m apart.
    np.testing.assert_allclose(joints[3], v[left].mean(0), atol=1e-4)
    np.testing.assert_allclose(joints[4], v[right].mean(0), atol=1e-4)
    assert joints[3, 0] > 0 > joints[4, 0]
    assert abs(np.linalg.norm(joints[3] - joints[4]) - 0.061) < 0.003
    for j in (3, 4):
        r = np.linalg.norm(v[left if j == 3 else right] - joints[j], axis=1)
        assert 0.010 < r.min() and r.max() < 0.0145
    # Jaw hinge on the midline, behind the face and at about ear height; root and neck in the neck.
    assert abs(joints[2, 0]) < 1e-6 and -0.04 < joints[2, 1] < 0.0 and -0.04 < joints[2, 2] < 0.01
    for j in (0, 1):
        assert abs(joints[j, 0]) < 1e-6 and joints[j, 1] < -0.08 and -0.06 < joints[j, 2] < 0.0
    # The jaw moves the chin, not the forehead; the eyes' weights are exactly their eyeballs.
    chin = np.argmin(np.where((np.abs(v[:, 0]) < 1e-9) & (v[:, 2] > 0.04), v[:, 1], np.inf))
    assert w[chin, 2] > 0.5
    assert w[np.argmax(v[:, 1]), 2] == 0.0
    assert set(np.flatnonzero(w[:, 3] > 0)) == set(left) and set(np.flatnonzero(w[:, 4] > 0)) == set(right)


def test_closed_outward_surfaces(arrays):
    """Skin and both eyeballs are closed, consistently wound, outward (positive volume)."""
    v, f = arrays["v_template"], arrays["f"].astype(np.int64)
    left, right = _eyeballs(arrays)
    is_eye = np.zeros(len(v), bool)
    is_eye[left] = is_eye[right] = True
    parts = {"skin": f[~is_eye[f].any(1)], "left": f[np.isin(f, left).all(1)], "right": f[np.isin(f, right).all(1)]}
    assert sum(len(p) for p in parts.values()) == len(f)
    for name, pf in parts.items():
        # Every directed edge appears once and its reverse once: closed and consistently oriented.
        e = np.concatenate([pf[:, [0, 1]], pf[:, [1, 2]], pf[:, [2, 0]]])
        fwd = set(map(tuple, e))
        assert len(fwd) == len(e), name
        assert all((b, a) in fwd for a, b in e), name
        assert _signed_volume(v, pf) > 0, name
    vol = _signed_volume(v, parts["left"])
    assert 0.8 < vol / (4 / 3 * np.pi * 0.012**3) < 1.1
    # Most skin normals point away from the head's centre.
    skin = parts["skin"]
    n = _face_normals(v, skin)
    c = v[skin].mean(1) - np.array([0.0, -0.01, -0.03])
    assert np.mean(np.einsum("fc,fc->f", n, c) > 0) > 0.9


def test_model_arrays_round_trip(model, arrays):
    assert set(arrays) == {"v_template", "shapedirs", "exprdirs", "posedirs", "weights", "J_regressor", "f", "parents"}
    rebuilt = FlameModel.from_arrays(
        v_template=arrays["v_template"],
        shapedirs=arrays["shapedirs"],
        exprdirs=arrays["exprdirs"],
        posedirs=arrays["posedirs"],
        lbs_weights=arrays["weights"],
        joint_regressor=arrays["J_regressor"],
        faces=arrays["f"],
        parents=arrays["parents"],
    )
    rng = np.random.default_rng(0)
    kw = dict(
        shape=jnp.asarray(rng.normal(size=20), jnp.float32),
        expression=jnp.asarray(rng.normal(size=10), jnp.float32),
        pose=jnp.asarray(rng.normal(size=15) * 0.2, jnp.float32),
    )
    np.testing.assert_allclose(forward(rebuilt, **kw).vertices, forward(model, **kw).vertices, atol=1e-6)
    small = demo.demo_model(n_shape=10, n_expr=5)
    assert small.num_shape == 10 and small.num_expression == 5


# ----------------------------------------------------------------------------- pose behaviour


def test_jaw_rotation_opens_the_mouth(model, emb68):
    _, lm0, j0 = _run(model, emb68)
    v1, lm1, j1 = _run(model, emb68, pose=_pose(jaw=[0.3, 0.0, 0.0]))
    assert (lm1[57, 1] - lm1[51, 1]) < (lm0[57, 1] - lm0[51, 1]) - 0.015  # lower lip down vs upper lip
    assert lm0[62, 1] - lm0[66, 1] < 0.003  # closed at rest
    assert lm1[62, 1] - lm1[66, 1] > 0.015  # inner lips apart
    np.testing.assert_allclose(lm1[[51, 62, 30, 36, 45]], lm0[[51, 62, 30, 36, 45]], atol=1e-4)  # upper face fixed
    assert lm1[8, 1] < lm0[8, 1] - 0.008  # chin down
    np.testing.assert_allclose(j1, j0, atol=1e-6)  # a jaw rotation moves no joint position
    _, lmc, _ = _run(model, emb68, pose=_pose(jaw=[-0.1, 0.0, 0.0]))
    assert lmc[57, 1] > lm0[57, 1]  # negative closes (lower lip up)


def test_eye_rotation_moves_only_the_eyeball(model, emb68, arrays):
    left, right = _eyeballs(arrays)
    v0, _, j0 = _run(model, emb68)
    v1, _, _ = _run(model, emb68, pose=_pose(eye_left=[0.0, 0.4, 0.0]))
    moved = np.flatnonzero(np.linalg.norm(v1 - v0, axis=1) > 1e-7)
    assert set(moved) <= set(left) and len(moved) > len(left) // 2
    np.testing.assert_allclose(np.linalg.norm(v1[left] - j0[3], axis=1), np.linalg.norm(v0[left] - j0[3], axis=1), atol=1e-6)
    pupil = left[np.argmax(v0[left, 2])]
    assert v1[pupil, 0] > v0[pupil, 0] + 0.003  # +y rotation turns the gaze toward +x
    v2, _, _ = _run(model, emb68, pose=_pose(eye_right=[0.3, 0.0, 0.0]))
    pupil_r = right[np.argmax(v0[right, 2])]
    assert v2[pupil_r, 1] < v0[pupil_r, 1] - 0.002  # +x rotation looks down
    assert np.all(np.asarray(model.posedirs)[18:] == 0.0)


def test_root_rotation_is_rigid_and_pose_correctives_are_small(model, emb68, arrays):
    v0, _, j0 = _run(model, emb68)
    v1, _, _ = _run(model, emb68, pose=_pose(**{"global": [0.1, 0.5, -0.2]}))
    d0 = np.linalg.norm(v0[:100] - v0[100:200], axis=1)
    d1 = np.linalg.norm(v1[:100] - v1[100:200], axis=1)
    np.testing.assert_allclose(d1, d0, atol=1e-6)
    pd = arrays["posedirs"]
    assert np.abs(pd).max() > 1e-3  # nonzero correctives...
    assert np.abs(pd).max() < 0.02  # ...and small
    # Smooth: correctives change by less than their size over a centimetre.
    v, f = arrays["v_template"], arrays["f"].astype(np.int64)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    length = np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1)
    gradient = np.abs(pd[e[:, 0]] - pd[e[:, 1]]).max(axis=(1, 2)) / length
    assert gradient.max() < 0.6


# ----------------------------------------------------------------------------- blend shapes


def _skin_flips(arrays, v_new):
    left, _ = _eyeballs(arrays)
    f = arrays["f"].astype(np.int64)
    skin = f[(f < left.min()).all(1)]
    n0 = _face_normals(arrays["v_template"], skin)
    area = np.linalg.norm(n0, axis=1)
    keep = area > np.percentile(area, 5)  # ignore the slivers inside the lip and lid folds
    n1 = _face_normals(v_new, skin)
    return np.mean(np.einsum("fc,fc->f", n0, n1)[keep] < 0)


def test_identity_components_pca_like_and_smooth(arrays):
    s = arrays["shapedirs"]
    flat = s.reshape(-1, s.shape[2])
    norms = np.linalg.norm(flat, axis=0)
    assert np.all(np.diff(norms) <= 1e-9)  # decreasing variance
    gram = flat.T @ flat
    off = gram - np.diag(np.diag(gram))
    assert np.abs(off).max() < 1e-6 * gram.max()  # orthogonal
    per_vertex = np.linalg.norm(s, axis=1)  # (V, S): 1-sigma displacement
    assert 0.003 < per_vertex[:, 0].max() < 0.012
    assert per_vertex.max() < 0.01  # 3 sigma stays under 3 cm
    v = arrays["v_template"]
    for k in range(s.shape[2]):
        for sign in (3.0, -3.0):
            assert _skin_flips(arrays, v + sign * s[..., k]) < 0.01, (k, sign)
    left, right = _eyeballs(arrays)
    for eye in (left, right):  # the eyeballs move rigidly with identity (no shear)
        d = s[eye]
        spread = np.abs(d - d.mean(0)).max()
        assert spread < 0.001
    rng = np.random.default_rng(1)
    for _ in range(5):
        assert _skin_flips(arrays, v + s @ rng.normal(size=s.shape[2])) < 0.01


def test_expression_components(arrays):
    e = arrays["exprdirs"]
    left, right = _eyeballs(arrays)
    assert np.all(e[left] == 0.0) and np.all(e[right] == 0.0)
    mag = np.linalg.norm(e, axis=1).max(0)
    named = [i for i, n in enumerate(NAMES) if not n.startswith("detail_")]
    assert len(named) >= 20
    assert np.all(mag[named] > 0.001) and np.all(mag[named] < 0.015)
    details = [i for i, n in enumerate(NAMES) if n.startswith("detail_")]
    assert mag[details].max() < mag[named].min()  # ordered roughly by magnitude
    assert mag[named[:8]].mean() > mag[named[-8:]].mean()
    v = arrays["v_template"]
    for k in range(e.shape[2]):
        for sign in (1.0, -1.0):
            assert _skin_flips(arrays, v + sign * e[..., k]) < 0.01, NAMES[k]


def _skin_z_at(v, f, xy):
    """Frontmost z of the faces under frontal point xy."""
    a, b, c = (v[f[:, k], :2] for k in range(3))
    det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    ok = np.abs(det) > 1e-14
    det = np.where(ok, det, 1.0)
    w0 = ((b[:, 1] - c[:, 1]) * (xy[0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (xy[1] - c[:, 1])) / det
    w1 = ((c[:, 1] - a[:, 1]) * (xy[0] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (xy[1] - c[:, 1])) / det
    w2 = 1 - w0 - w1
    inside = ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    z = w0 * v[f[:, 0], 2] + w1 * v[f[:, 1], 2] + w2 * v[f[:, 2], 2]
    return np.where(inside, z, -np.inf).max()


def test_blink_closes_the_eyes(model, emb68, arrays):
    left, right = _eyeballs(arrays)
    f = arrays["f"].astype(np.int64)
    skin = f[(f < left.min()).all(1)]
    v0, lm0, _ = _run(model, emb68)
    v1, lm1, _ = _run(model, emb68, expression=_expr(blink=1.0))
    for up, lo in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert np.linalg.norm(lm0[up] - lm0[lo]) > 0.006
        assert np.linalg.norm(lm1[up] - lm1[lo]) < 0.0015
    for eye in (left, right):
        pupil = eye[np.argmax(v0[eye, 2])]
        assert _skin_z_at(v0, skin, v0[pupil, :2]) < v0[pupil, 2]  # open: the pupil is visible
        assert _skin_z_at(v1, skin, v1[pupil, :2]) > v1[pupil, 2]  # closed: the upper lid covers it
    # A wink: blink + blink_asym closes the left eye only.
    _, lmw, _ = _run(model, emb68, expression=_expr(blink=0.5, blink_asym=1.0))
    assert np.linalg.norm(lmw[44] - lmw[46]) < 0.0015 and np.linalg.norm(lmw[37] - lmw[41]) > 0.006


def test_expressions_move_their_landmarks(model, emb68):
    _, lm0, _ = _run(model, emb68)
    _, lm, _ = _run(model, emb68, expression=_expr(smile=1.0))
    assert lm[48, 1] > lm0[48, 1] + 0.002 and lm[54, 1] > lm0[54, 1] + 0.002  # corners up
    assert lm[54, 0] - lm[48, 0] > lm0[54, 0] - lm0[48, 0] + 0.004  # and out
    _, lm, _ = _run(model, emb68, expression=_expr(brow_raise=1.0))
    assert np.all(lm[17:27, 1] > lm0[17:27, 1] + 0.001) and np.mean(lm[17:27, 1] - lm0[17:27, 1]) > 0.002
    _, lm, _ = _run(model, emb68, expression=_expr(lips_apart=1.0))
    assert lm[62, 1] - lm[66, 1] > 0.006
    _, lm, _ = _run(model, emb68, expression=_expr(pucker=1.0))
    assert lm[54, 0] - lm[48, 0] < lm0[54, 0] - lm0[48, 0] - 0.006


# ----------------------------------------------------------------------------- landmarks


def test_ibug_static_points_sit_on_the_features(model, emb68, arrays):
    _, lm, _ = _run(model, emb68)
    assert emb68.kind == "ibug68" and emb68.num_landmarks == 68
    x, y = lm[:, 0], lm[:, 1]
    assert x[36] < x[39] < 0 < x[42] < x[45]  # 36 = outer corner of the subject's right eye (image left)
    assert x[48] < 0 < x[54] and x[48] < x[60] < x[64] < x[54]
    assert np.argmax(lm[17:, 2]) + 17 == 30  # the nose tip is the most anterior static point
    v = arrays["v_template"]
    tip = np.argmax(np.where(np.abs(v[:, 0]) < 1e-9, v[:, 2], -1.0))
    np.testing.assert_allclose(lm[30], v[tip], atol=1e-6)
    assert y[27] > y[28] > y[29] > y[30] > y[33]
    assert y[51] > y[62] > y[66] > y[57]
    assert np.all(y[17:27] > y[36:48].max())  # brows above the eyes
    assert np.all(y[36:48] > y[27:36].min()) and np.all(y[48:68] < y[31:36].min())
    assert list(np.argsort(x[17:22])) == [0, 1, 2, 3, 4] and list(np.argsort(x[22:27])) == [0, 1, 2, 3, 4]
    # Symmetry of the template's landmarks.
    pairs = [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (48, 54), (31, 35), (17, 26), (0, 16), (4, 12)]
    for a, b in pairs:
        np.testing.assert_allclose(lm[a] * [-1, 1, 1], lm[b], atol=2e-4)
    # Points lie on the mesh: every (face, barycentric) is valid.
    emb68.check_faces(model.num_faces)
    b = np.asarray(emb68.bary_coords)
    assert np.all(b >= 0) and np.allclose(b.sum(1), 1, atol=1e-5)


def _rotate_y(v, deg):
    a = np.radians(deg)
    r = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    return v @ r.T


def _contour_normals(arrays, emb, row, deg):
    v, f = arrays["v_template"], arrays["f"].astype(np.int64)
    vr = _rotate_y(v, deg)
    vn = _vertex_normals(vr, f)
    fi = np.asarray(emb.dynamic_face_idx)[row]
    bc = np.asarray(emb.dynamic_bary_coords, np.float64)[row]
    n = np.einsum("lkc,lk->lc", vn[f[fi]], bc)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    p = np.einsum("lkc,lk->lc", vr[f[fi]], bc)
    return p, n


def test_contour_row_convention():
    """A positive rotation about +y (the face turns toward +x) is a positive yaw: rows 1..39."""
    for deg, row in ((0, 0), (10, 10), (30, 30), (60, 39), (-1, 40), (-30, 69), (-60, 78)):
        pose = _pose(**{"global": [0.0, np.radians(deg), 0.0]})
        assert int(contour_row(head_yaw_degrees(jnp.asarray(pose)))) == row


def test_contour_frontal_order_and_symmetry(arrays, emb68):
    p, n = _contour_normals(arrays, emb68, 0, 0.0)
    assert np.all(np.diff(p[:9, 0]) > 0) and np.all(np.diff(p[8:, 0]) > 0)  # right ear -> chin -> left ear
    assert np.argmin(p[:, 1]) == 8 and abs(p[8, 0]) < 1e-3
    assert p[0, 0] < -0.06 and p[16, 0] > 0.06
    np.testing.assert_allclose(p[::-1] * [-1, 1, 1], p, atol=2e-4)
    assert np.all(np.abs(n[:, 2]) < 0.3)  # all on the occluding contour


@pytest.mark.parametrize("deg", [-60, -30, -10, 0, 10, 30, 60])
def test_contour_follows_the_silhouette(model, emb68, arrays, deg):
    pose = _pose(**{"global": [0.0, np.radians(deg), 0.0]})
    verts, lm, _ = _run(model, emb68, pose=pose)
    row = int(contour_row(head_yaw_degrees(jnp.asarray(pose))))
    p, n = _contour_normals(arrays, emb68, row, float(deg))
    f = np.asarray(model.faces, np.int64)
    fi = np.asarray(emb68.dynamic_face_idx)[row]
    expected = np.einsum("lkc,lk->lc", verts[f[fi]], np.asarray(emb68.dynamic_bary_coords, np.float64)[row])
    np.testing.assert_allclose(lm[:17], expected, atol=1e-6)  # landmarks() picks this row
    far = list(range(9, 17)) if deg > 0 else list(range(0, 8)) if deg < 0 else list(range(17))
    near = [i for i in range(17) if i not in far and i != 8]
    limit = 0.3 if abs(deg) <= 39 else 0.5  # beyond 39 degrees the table's last row is reused
    assert np.all(np.abs(n[far, 2]) < limit), n[far, 2]
    assert np.all(n[near, 2] > -0.1)  # the near side stays visible (in front of the ears)


def test_every_contour_row_is_on_its_silhouette(arrays, emb68):
    for row in range(79):
        deg = row if row < 40 else 39 - row
        _, n = _contour_normals(arrays, emb68, row, float(deg))
        far = list(range(10, 17)) if deg > 0 else list(range(0, 7)) if deg < 0 else list(range(17))
        assert np.all(np.abs(n[far, 2]) < 0.3), (row, n[far, 2])


# ----------------------------------------------------------------------------- MediaPipe


def test_mediapipe_embedding_structure(model):
    mp = demo.demo_mediapipe_embedding()
    ids = np.asarray(mp.landmark_indices)
    assert mp.kind == "mediapipe" and ids.shape == (105,) and len(set(ids)) == 105 and ids.max() < 468
    mp.check_faces(model.num_faces)
    out = forward(model)
    pts = np.asarray(landmarks(model, mp, out.vertices), np.float64)
    pos = {int(i): p for i, p in zip(ids, pts)}
    lm68 = np.asarray(landmarks(model, demo.demo_landmark_embedding(), out.vertices, jnp.zeros(15)))
    # Named MediaPipe points coincide with their iBUG namesakes.
    for mp_id, ibug in ((33, 36), (133, 39), (362, 42), (263, 45), (61, 48), (291, 54), (0, 51), (17, 57), (13, 62), (14, 66)):
        np.testing.assert_allclose(pos[mp_id], lm68[ibug], atol=1.5e-3, err_msg=f"mediapipe {mp_id} vs ibug {ibug}")
    assert pos[159][1] > pos[145][1] and pos[386][1] > pos[374][1]  # upper lids above lower lids
    assert pos[4][2] > pos[6][2] and pos[2][1] < pos[4][1]  # nose tip forward, subnasale below it
    assert pos[105][1] > pos[159][1] and pos[334][1] > pos[386][1]  # brows above the eyes


def _read_obj_vertices(path: Path) -> np.ndarray:
    rows = [line.split()[1:4] for line in path.read_text().splitlines() if line.startswith("v ")]
    return np.asarray(rows, np.float64)


def _similarity_residual(a, b):
    """RMS and max distance of b to a after the best 2D similarity alignment of b onto a."""
    ma, mb = a.mean(0), b.mean(0)
    a0, b0 = a - ma, b - mb
    u, s, vt = np.linalg.svd(b0.T @ a0)
    r = u @ vt
    scale = s.sum() / (b0**2).sum()
    res = np.linalg.norm(scale * b0 @ r - a0, axis=1)
    return np.sqrt(np.mean(res**2)), res.max(), res


@pytest.mark.shared_data
def test_mediapipe_layout_matches_the_canonical_face(shared_data, model):
    obj = shared_data / "mediapipe" / "canonical_face_model.obj"
    if not obj.is_file():
        pytest.fail(f"{obj} is missing from NEUFACE_SHARED_DATA")
    canon = _read_obj_vertices(obj)
    assert canon.shape == (468, 3)
    # The hardcoded normalised table is a faithful copy of the canonical layout.
    origin = 0.5 * (canon[33] + canon[263])
    unit = canon[263, 0] - canon[33, 0]
    for region in demo._MP_TABLE.values():
        for i, x, y in region:
            np.testing.assert_allclose([x, y], (canon[i, :2] - origin[:2]) / unit, atol=6e-4, err_msg=str(i))
    # The demo head's MediaPipe points, seen from the front, have the canonical face's layout.
    mp = demo.demo_mediapipe_embedding()
    ids = np.asarray(mp.landmark_indices)
    pts = np.asarray(landmarks(model, mp, forward(model).vertices), np.float64)[:, :2]
    ref = (canon[ids, :2] - origin[:2]) / unit
    demo_norm = pts / (pts[list(ids).index(263), 0] - pts[list(ids).index(33), 0])
    rms, worst, _ = _similarity_residual(ref, demo_norm)
    assert rms < 0.05 and worst < 0.12, (rms, worst)
    # Region by region the agreement is closer.
    start = 0
    for name, region in demo._MP_TABLE.items():
        sel = slice(start, start + len(region))
        start += len(region)
        r_rms, _, _ = _similarity_residual(ref[sel], demo_norm[sel])
        assert r_rms < 0.03, (name, r_rms)


# ----------------------------------------------------------------------------- masks


def test_vertex_masks(model, arrays):
    masks = demo.demo_vertex_masks()
    left, right = _eyeballs(arrays)
    np.testing.assert_array_equal(np.sort(masks["left_eyeball"]), left)
    np.testing.assert_array_equal(np.sort(masks["right_eyeball"]), right)
    for name, idx in masks.items():
        assert len(idx) > 0 and idx.min() >= 0 and idx.max() < model.num_vertices, name
    v = arrays["v_template"]
    assert np.all(np.abs(v[masks["lips"], 1] - (-0.043)) < 0.015)
    assert np.all(v[masks["left_ear"], 0] > 0.05) and np.all(v[masks["right_ear"], 0] < -0.05)
