"""Tests of neuface_jax.media.landmark_sets: the shipped canonical MediaPipe mesh, head rotation, far-side visibility."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from neuface_jax.media import landmark_sets as ls

# Canonical frame → image frame (x right, y down, z away from the camera).
TO_IMAGE = np.array([1.0, -1.0, -1.0])


def _read_obj(path):
    verts, tris = [], []
    for ln in open(path):
        s = ln.split()
        if s and s[0] == "v":
            verts.append([float(v) for v in s[1:4]])
        elif s and s[0] == "f":
            tris.append([int(t.split("/")[0]) - 1 for t in s[1:4]])
    return np.asarray(verts), np.asarray(tris)


def _pose(yaw=0.0, pitch=0.0, roll=0.0, scale=40.0, t=(256.0, 240.0, 3000.0)):
    """Image-frame landmarks of the canonical mesh turned by (yaw, pitch, roll) degrees, and the rotation."""
    r = Rotation.from_euler("yxz", [yaw, pitch, roll], degrees=True).as_matrix()
    pts = scale * (ls.CANONICAL_MESH_VERTICES * TO_IMAGE) @ r.T + np.asarray(t)
    return pts, r


def _angle_deg(r1, r2):
    c = (np.trace(np.swapaxes(r1, -1, -2) @ r2, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


@pytest.mark.shared_data
def test_canonical_mesh_tables_match_mediapipe_obj(shared_data):
    verts, tris = _read_obj(shared_data / "mediapipe" / "face_model_with_iris.obj")
    np.testing.assert_array_equal(ls.CANONICAL_MESH_VERTICES, verts)
    np.testing.assert_array_equal(ls.CANONICAL_MESH_TRIANGLES, tris)
    v468, t468 = _read_obj(shared_data / "mediapipe" / "canonical_face_model.obj")
    np.testing.assert_array_equal(ls.CANONICAL_MESH_VERTICES[:468], v468)
    np.testing.assert_array_equal(ls.CANONICAL_MESH_TRIANGLES[:898], t468)


def test_canonical_mesh_properties():
    v, t, n = ls.CANONICAL_MESH_VERTICES, ls.CANONICAL_MESH_TRIANGLES, ls.CANONICAL_VERTEX_NORMALS
    assert v.shape == (478, 3) and t.shape == (906, 3) and n.shape == (478, 3)
    assert t.dtype == np.int32 and t.min() == 0 and t.max() == 477
    assert len(np.unique(t)) == 478  # every landmark is on the mesh
    assert not v.flags.writeable and not t.flags.writeable and not n.flags.writeable
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-12)
    # Outward winding: at the frontal pose every normal has a component toward the camera (+z),
    # the nose tip's points straight at it, and the side of the face points sideways.
    assert n[:, 2].min() > 0.0
    assert n[4, 2] > 0.95
    assert n[454, 0] > 0.5 and n[234, 0] < -0.5  # image-right / image-left ear-level face oval
    # Left/right mirror symmetry of positions and normals.
    mirror = np.array([np.argmin(np.linalg.norm(v - v[i] * [-1, 1, 1], axis=-1)) for i in range(478)])
    np.testing.assert_allclose(v[mirror], v * [-1, 1, 1], atol=1e-5)
    np.testing.assert_allclose(n[mirror], n * [-1, 1, 1], atol=1e-3)
    # The rotation fit uses the upper face only: no lip, chin or jaw point.
    fit = set(ls.ROTATION_FIT_IDS.tolist())
    assert 150 < len(fit) < 468 and not fit & {0, 13, 14, 17, 61, 291, 152, 148, 377}
    assert {33, 263, 4, 168, 10} <= fit


def test_vertex_normals_of_a_square_and_batches():
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [5, 5, 5]], float)
    t = np.array([[0, 1, 2], [0, 2, 3]])
    n = ls.vertex_normals(v, t)
    np.testing.assert_allclose(n[:4], [[0, 0, 1]] * 4)
    np.testing.assert_array_equal(n[4], 0.0)  # unused vertex
    nb = ls.vertex_normals(np.stack([v, v * [1, 1, -1]]), t[:, ::-1])
    np.testing.assert_allclose(nb[0, :4], [[0, 0, -1]] * 4)


def test_head_rotation_recovers_pose():
    rng = np.random.default_rng(0)
    poses = [(0, 0, 0), (60, 0, 0), (-45, 20, 10), (30, -30, -20), (75, 5, 0)]
    pts, rots = zip(*(_pose(*p, scale=s) for p, s in zip(poses, [30, 40, 55, 20, 45])))
    pts = np.stack(pts) + rng.normal(scale=0.3, size=(len(poses), 478, 3))  # ~1 % of the face width
    r, scale, t = ls.head_rotation(pts)
    assert r.shape == (5, 3, 3) and scale.shape == (5,) and t.shape == (5, 3)
    assert _angle_deg(r, np.stack(rots)).max() < 1.0
    np.testing.assert_allclose(scale, [30, 40, 55, 20, 45], rtol=0.01)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-9)
    fitted = scale[:, None, None] * (ls.CANONICAL_MESH_VERTICES * TO_IMAGE) @ np.swapaxes(r, -1, -2) + t[:, None]
    assert np.abs(fitted - pts)[:, ls.ROTATION_FIT_IDS].mean() < 1.0
    # Speech does not tilt the head: opening the jaw (turning every lower-face point 20° about an
    # axis through the ears) changes nothing; a fit to the whole mesh would tilt.
    lower = np.setdiff1d(np.arange(478), ls.ROTATION_FIT_IDS)
    hinge = np.array([0.0, 0.7, -2.4]) * TO_IMAGE
    jaw = Rotation.from_euler("x", 20, degrees=True).as_matrix()
    canon = ls.CANONICAL_MESH_VERTICES * TO_IMAGE
    canon_open = canon.copy()
    canon_open[lower] = (canon[lower] - hinge) @ jaw.T + hinge
    opened = np.stack([s * canon_open @ rot.T for s, rot in zip([30, 40, 55, 20, 45], rots)])
    np.testing.assert_allclose(ls.head_rotation(opened)[0], np.stack(rots), atol=1e-9)
    assert _angle_deg(ls.head_rotation(opened, ids=np.arange(468))[0], np.stack(rots)).min() > 1.0
    # Missing faces: zeros and NaN → identity, scale 0; leading batch axes are kept.
    bad = np.stack([np.zeros((478, 3)), np.full((478, 3), np.nan)])[None]
    r_bad, s_bad, _ = ls.head_rotation(bad)
    assert r_bad.shape == (1, 2, 3, 3)
    np.testing.assert_array_equal(r_bad, np.broadcast_to(np.eye(3), (1, 2, 3, 3)))
    np.testing.assert_array_equal(s_bad, 0.0)
    with pytest.raises(ValueError, match="478"):
        ls.head_rotation(np.zeros((68, 3)))


def test_far_side_points_are_invisible_on_a_turned_head():
    oval = np.asarray(ls.FACE_OVAL_IDS)
    cx = ls.CANONICAL_MESH_VERTICES[:, 0]
    right_oval = oval[cx[oval] > 3.0]  # image-right side of the face (subject's left), off the midline
    left_oval = oval[cx[oval] < -3.0]
    assert len(right_oval) >= 10 and len(left_oval) >= 10
    # Frontal: everything is visible; nearly frontal: all of the iBUG-68 and 105 sets and >= 99 % of
    # the 478 (the underside of the upper lip at the mouth corners, 183/407, faces down).
    assert ls.landmark_visibility(_pose()[0]).all()
    for pose in [(5, 5, 0), (0, -10, 5), (-8, 8, -5)]:
        vis = ls.landmark_visibility(_pose(*pose)[0])
        assert vis[ls.MEDIAPIPE_TO_IBUG68].all() and vis[ls.MEDIAPIPE_105_IDS].all() and vis[ls.IRIS_IDS].all(), pose
        assert vis.mean() >= 0.99, pose
    sides = []
    for yaw in (60.0, -60.0):
        pts, r = _pose(yaw)
        vis = ls.landmark_visibility(pts)
        facing = ls.landmark_facing(pts)
        # Facing = the rotated canonical normal's component toward the camera (image -z).
        np.testing.assert_allclose(facing, -((ls.CANONICAL_VERTEX_NORMALS * TO_IMAGE) @ r.T)[:, 2], atol=0.02)
        # Which side is far follows from the image: the nose tip moves toward the far side.
        nose_dx = pts[4, 0] - pts[:468, 0].mean()
        far, near = (right_oval, left_oval) if nose_dx > 0 else (left_oval, right_oval)
        sides.append(np.sign(nose_dx))
        assert (~vis[far]).mean() >= 0.7, (yaw, (~vis[far]).mean())
        assert vis[near].all(), yaw
        # The near half is seen, but for a few folds that face the midline (e.g. 292/62 beside the mouth).
        near_side = cx * np.sign(-nose_dx) > 1.0
        assert vis[near_side].mean() > 0.98
        assert 60 < (~vis).sum() < 200
    assert sides[0] == -sides[1]  # the two turns hide opposite sides
    # A margin only removes points; invalid frames see nothing.
    pts, _ = _pose(40)
    v0 = ls.landmark_visibility(pts)
    v1 = ls.landmark_visibility(pts, min_facing=0.2)
    assert (v1 <= v0).all() and v1.sum() < v0.sum()
    both = ls.landmark_visibility(np.stack([pts, pts]), valid=[True, False])
    np.testing.assert_array_equal(both[0], v0)
    assert not both[1].any()
    assert not ls.landmark_visibility(np.zeros((478, 3))).any()
