"""Landmark sets over MediaPipe's 478 Face Landmarker points: iBUG-68, FLAME's 105-point embedding, irises.

MediaPipe ids follow the canonical face mesh (``canonical_face_model.obj``: 468 mesh vertices, then
10 iris points 468–477). MediaPipe's "right" is the subject's right, which is image-left in an
unmirrored frontal image; iBUG-68 numbers points in image order (point 36 is the outer corner of
the eye on the image left, the subject's right eye).

* ``MEDIAPIPE_TO_IBUG68``: one MediaPipe id per iBUG-68 point. The 17 jaw points (0–16) are points
  of MediaPipe's face oval (``FACE_OVAL_IDS``) chosen for even arc-length spacing from the ear at
  eye height (127 / 356) down to the chin (152) on the canonical mesh; the other 51 are the mesh
  vertices at the iBUG feature definitions (eye corners and lids, brow tops, nose ridge and base,
  lip contours). The face oval is fixed on the mesh: on a turned head the far-side jaw points
  stay on the (hidden) jaw and project inside the face, behind the nose or cheek, instead of
  sliding to the silhouette as a 2D detector's (FAN's) contour does. They therefore correspond
  (approximately) to FLAME's mesh-fixed frontal contour (the yaw-0 row of the dynamic table), not
  to the yaw-dependent dynamic contour, which models silhouette-following detectors.
* ``MEDIAPIPE_105_IDS``: the MediaPipe ids of FLAME's MediaPipe landmark embedding
  (``mediapipe_landmark_embedding.npz``, ``landmark_indices``: the set used by metrical-tracker and
  SMIRK): brows 10 + 10, eyes 16 + 16, nose 13, lips 40, in that file's order.
* ``IRIS_IDS``: 468–477 (468 right-iris centre + 4 ring points, 473 left-iris centre + 4).
* ``CANONICAL_MESH_VERTICES`` / ``CANONICAL_MESH_TRIANGLES``: MediaPipe's canonical face mesh with
  irises (478 vertices, 906 triangles; derived from MediaPipe's Apache-2.0 ``face_model_with_iris.obj``,
  see ``neuface_jax.media._mediapipe_mesh_data``), and ``CANONICAL_VERTEX_NORMALS``.
* **Far-side guesses.** MediaPipe returns all 478 points even on a strongly turned head; the ones on
  the far side of the face are guesses (it packs them along the silhouette). ``landmark_visibility``
  marks them: ``head_rotation`` fits the canonical mesh's upper face (everything above the upper
  lip, so an open jaw does not tilt it) to MediaPipe's own 3D output by a similarity Procrustes fit,
  ``landmark_facing`` rotates the canonical vertex normals with it and takes their component toward
  the camera, and a point is visible when that exceeds ``min_facing``. Rigid canonical normals are
  used rather than normals of the detected mesh, whose inner-lip and eyelid triangles flip with the
  expression (an open mouth would hide the inner lip corners). The test is orthographic in the
  image's pixel space and does not model occlusion by the nose.

The set functions take ``[..., 478, D]`` arrays (``D`` = 2 or 3, any leading batch) and return
``[..., K, D]`` gathers; they work on NumPy and JAX arrays alike. The rotation and visibility
functions are NumPy (host-side preprocessing).
"""

from __future__ import annotations

import numpy as np

from flame_jax.geometry import rigid_transform, vertex_normals

__all__ = [
    "NUM_MEDIAPIPE",
    "NUM_MEDIAPIPE_MESH",
    "MEDIAPIPE_TO_IBUG68",
    "MEDIAPIPE_105_IDS",
    "IRIS_IDS",
    "RIGHT_IRIS_IDS",
    "LEFT_IRIS_IDS",
    "FACE_OVAL_IDS",
    "IBUG68_MIRROR",
    "LANDMARK_SETS",
    "mediapipe_to_ibug68",
    "mediapipe_to_105",
    "mediapipe_iris",
    "select_landmarks",
    "landmark_set_ids",
    "CANONICAL_MESH_VERTICES",
    "CANONICAL_MESH_TRIANGLES",
    "CANONICAL_VERTEX_NORMALS",
    "ROTATION_FIT_IDS",
    "DEFAULT_MIN_FACING",
    "vertex_normals",
    "head_rotation",
    "landmark_facing",
    "landmark_visibility",
]

NUM_MEDIAPIPE = 478
NUM_MEDIAPIPE_MESH = 468

#: MediaPipe's face oval (``FaceLandmarksConnections.FACE_LANDMARKS_FACE_OVAL``), clockwise in the
#: image from the forehead top (10) over the image-right side (subject's left) to the chin (152)
#: and back up the image-left side.
FACE_OVAL_IDS = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip

# iBUG-68 in image order; comments name the feature (image-left = subject's right).
_IBUG68 = (
    # 0-16 jaw contour, image-left ear (eye height) → chin (8) → image-right ear; face-oval ids.
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,
    # 17-21 image-left brow, outer → inner (upper edge of the brow).
    70, 63, 105, 66, 107,
    # 22-26 image-right brow, inner → outer.
    336, 296, 334, 293, 300,
    # 27-30 nose ridge: nasion (between the eyes) → tip (30 = pronasale, the most anterior vertex).
    168, 197, 5, 4,
    # 31-35 nose base, image-left alar base → subnasale (33) → image-right alar base.
    98, 97, 2, 326, 327,
    # 36-41 image-left eye: outer corner, upper lid ×2, inner corner, lower lid ×2.
    33, 160, 158, 133, 153, 144,
    # 42-47 image-right eye: inner corner, upper lid ×2, outer corner, lower lid ×2.
    362, 385, 387, 263, 373, 380,
    # 48-59 outer lip: corner, upper lip (50/52 = cupid's bow peaks, 51 = centre), corner, lower lip.
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # 60-67 inner lip: corner, upper ×3, corner, lower ×3.
    78, 81, 13, 311, 308, 402, 14, 178,
)  # fmt: skip
MEDIAPIPE_TO_IBUG68 = np.asarray(_IBUG68, np.int32)
MEDIAPIPE_TO_IBUG68.flags.writeable = False

#: iBUG-68 left/right mirror permutation: point i of a mirrored face is point IBUG68_MIRROR[i].
IBUG68_MIRROR = np.asarray(
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46]
    + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65],
    np.int32,
)
IBUG68_MIRROR.flags.writeable = False

_MEDIAPIPE_105 = (
    # image-right brow (subject's left): 10
    276, 282, 283, 285, 293, 295, 296, 300, 334, 336,
    # image-left brow (subject's right): 10
    46, 52, 53, 55, 63, 65, 66, 70, 105, 107,
    # image-right eye: 16
    249, 263, 362, 373, 374, 380, 381, 382, 384, 385, 386, 387, 388, 390, 398, 466,
    # image-left eye: 16
    7, 33, 133, 144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 173, 246,
    # nose ridge and base: 13
    168, 6, 197, 195, 5, 4, 129, 98, 97, 2, 326, 327, 358,
    # lips, outer and inner: 40
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181,
    185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415,
)  # fmt: skip
#: MediaPipe ids of FLAME's 105-point MediaPipe embedding, in the embedding file's order.
MEDIAPIPE_105_IDS = np.asarray(_MEDIAPIPE_105, np.int32)
MEDIAPIPE_105_IDS.flags.writeable = False

RIGHT_IRIS_IDS = np.arange(468, 473, dtype=np.int32)  # centre 468, then the ring (subject's right, image-left)
LEFT_IRIS_IDS = np.arange(473, 478, dtype=np.int32)  # centre 473, then the ring
IRIS_IDS = np.arange(468, 478, dtype=np.int32)
for _a in (RIGHT_IRIS_IDS, LEFT_IRIS_IDS, IRIS_IDS):
    _a.flags.writeable = False

#: Selectable sets: name → MediaPipe ids.
LANDMARK_SETS: dict[str, np.ndarray] = {
    "ibug68": MEDIAPIPE_TO_IBUG68,
    "mediapipe105": MEDIAPIPE_105_IDS,
    "mediapipe105_iris": np.concatenate([MEDIAPIPE_105_IDS, IRIS_IDS]),
    "iris": IRIS_IDS,
    "mediapipe478": np.arange(NUM_MEDIAPIPE, dtype=np.int32),
}


def landmark_set_ids(name: str) -> np.ndarray:
    """MediaPipe ids of the named set (``LANDMARK_SETS``)."""
    try:
        return LANDMARK_SETS[name]
    except KeyError:
        raise ValueError(f"unknown landmark set {name!r}; choose one of {sorted(LANDMARK_SETS)}") from None


def _gather(lmk, ids: np.ndarray, what: str):
    shape = getattr(lmk, "shape", None)
    if shape is None:
        lmk = np.asarray(lmk)
        shape = lmk.shape
    if len(shape) < 2 or shape[-2] < int(ids.max()) + 1 or shape[-1] not in (2, 3):
        raise ValueError(f"{what}: expected MediaPipe landmarks [..., 478 (or 468), 2|3], got shape {tuple(shape)}")
    return lmk[..., ids, :]


def mediapipe_to_ibug68(lmk478):
    """``[..., 478, D]`` MediaPipe landmarks → ``[..., 68, D]`` in iBUG-68 order (D = 2 or 3)."""
    return _gather(lmk478, MEDIAPIPE_TO_IBUG68, "mediapipe_to_ibug68")


def mediapipe_to_105(lmk478):
    """``[..., 478, D]`` → ``[..., 105, D]``, FLAME's MediaPipe-embedding order (``MEDIAPIPE_105_IDS``)."""
    return _gather(lmk478, MEDIAPIPE_105_IDS, "mediapipe_to_105")


def mediapipe_iris(lmk478):
    """``[..., 478, D]`` → ``[..., 10, D]`` iris points 468–477."""
    return _gather(lmk478, IRIS_IDS, "mediapipe_iris")


def select_landmarks(lmk478, name: str):
    """``[..., 478, D]`` → ``[..., K, D]`` for the set ``name`` in ``LANDMARK_SETS``."""
    return _gather(lmk478, landmark_set_ids(name), f"select_landmarks({name!r})")


# ----------------------------------------------------------------------------------------------
# Canonical mesh, head rotation and far-side visibility


def _parse_table(text: str, dtype, cols: int = 3) -> np.ndarray:
    out = np.asarray(text.split(), dtype=np.float64).reshape(-1, cols).astype(dtype)
    out.flags.writeable = False
    return out


def _load_canonical_mesh():
    # Lazy: the mesh tables are large text, parsed only when the canonical mesh is first needed.
    from neuface_jax.media import _mediapipe_mesh_data as data

    verts = _parse_table(data.VERTICES, np.float64)
    tris = _parse_table(data.TRIANGLES, np.int32)
    if verts.shape != (NUM_MEDIAPIPE, 3) or tris.shape != (906, 3):  # pragma: no cover - data integrity
        raise RuntimeError(f"damaged canonical mesh tables: {verts.shape}, {tris.shape}")
    normals = vertex_normals(verts, tris)
    normals.flags.writeable = False
    return verts, tris, normals


#: MediaPipe's canonical face mesh with irises, ``[478, 3]`` centimetres: x toward the subject's left
#: (image right), y up, z toward the camera (the Face Landmarker's landmark order).
#: ``CANONICAL_MESH_TRIANGLES``: ``[906, 3]`` int32, counter-clockwise seen from the front (898 mesh
#: triangles, then 4 per iris). ``CANONICAL_VERTEX_NORMALS``: ``[478, 3]`` unit outward normals.
CANONICAL_MESH_VERTICES, CANONICAL_MESH_TRIANGLES, CANONICAL_VERTEX_NORMALS = _load_canonical_mesh()

#: MediaPipe ids used to fit the head rotation: the mesh vertices above the subnasale (id 2), i.e.
#: forehead, brows, eyes, nose and upper cheeks — not the lips, chin and jaw, which move with speech.
ROTATION_FIT_IDS = np.flatnonzero(
    CANONICAL_MESH_VERTICES[:NUM_MEDIAPIPE_MESH, 1] > CANONICAL_MESH_VERTICES[2, 1]
).astype(np.int32)
ROTATION_FIT_IDS.flags.writeable = False

#: Default ``min_facing`` of ``landmark_visibility``: a point is visible when its normal has a
#: positive component toward the camera. Measured on the shared clips: on the nearly frontal MEAD
#: and LivePortrait clips 1–2 of the 478 points per frame are hidden (of the iBUG-68 set only jaw
#: point 1, on 9 of LivePortrait's 175 frames); on the wojtek frames turned by more than 30° (58 of
#: 400) 55 points per frame are hidden, 7 of the 17 jaw points. A margin of 0.05 hid 3–4 more
#: jaw points on every LivePortrait frame (turned 7°): the ear-level face-oval normals of the
#: canonical mesh point only 0.16 toward the camera at yaw 0.
DEFAULT_MIN_FACING = 0.0

# Canonical frame → image frame (x right, y down, z away from the camera): a 180° turn about x.
_TO_IMAGE = np.array([1.0, -1.0, -1.0])


def head_rotation(points, ids=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity Procrustes fit of the canonical mesh to MediaPipe's 3D landmarks.

    Args:
      points: ``[..., 478 (or 468), 3]`` landmarks in the image frame: x right, y down (pixels), z
        depth scaled like x, growing away from the camera (``detect.FaceLandmarks.points``).
      ids: MediaPipe ids to fit (default ``ROTATION_FIT_IDS``, the upper face).

    Returns:
      ``(R [..., 3, 3], scale [...], t [..., 3])`` with ``points ≈ scale · R · c + t`` for the
      canonical vertices ``c`` expressed in the image frame (``CANONICAL_MESH_VERTICES · (1, -1, -1)``):
      ``R`` is a proper rotation; the identity means a frontal, upright face. Frames whose points
      are not finite or are degenerate (all zeros: no face) get the identity and scale 0.
    """
    pts = np.asarray(points, np.float64)
    if pts.ndim < 2 or pts.shape[-1] != 3 or pts.shape[-2] not in (NUM_MEDIAPIPE, NUM_MEDIAPIPE_MESH):
        raise ValueError(f"head_rotation: expected MediaPipe landmarks [..., 478, 3], got {pts.shape}")
    ids = ROTATION_FIT_IDS if ids is None else np.asarray(ids, np.int64)
    x = CANONICAL_MESH_VERTICES[ids] * _TO_IMAGE
    y = pts[..., ids, :]
    batch = y.shape[:-2]
    y = y.reshape(-1, len(ids), 3)
    ok = np.isfinite(y).all(axis=(-2, -1))
    y = np.where(ok[:, None, None], y, 0.0)
    scale, r, t = rigid_transform(x, y, with_scale=True)
    ok &= scale > 1e-9
    r = np.where(ok[:, None, None], r, np.eye(3))
    scale = np.where(ok, scale, 0.0)
    t = np.where(ok[:, None], t, y.mean(axis=1))
    return r.reshape(batch + (3, 3)), scale.reshape(batch), t.reshape(batch + (3,))


def landmark_facing(points, rotation=None) -> np.ndarray:
    """Cosine between each landmark's (rotated canonical) normal and the direction to the camera.

    Args:
      points: ``[..., 478, 3]`` MediaPipe landmarks in the image frame (see ``head_rotation``).
      rotation: ``[..., 3, 3]`` head rotations (default: ``head_rotation(points)``).

    Returns:
      ``[..., 478]`` in [-1, 1]: 1 faces the camera, 0 is on the silhouette, < 0 faces away
      (orthographic view along the image frame's +z).
    """
    pts = np.asarray(points, np.float64)
    r = head_rotation(pts)[0] if rotation is None else np.asarray(rotation, np.float64)
    n = CANONICAL_VERTEX_NORMALS[: pts.shape[-2]] * _TO_IMAGE
    return -np.einsum("...j,vj->...v", r[..., 2, :], n)


def landmark_visibility(points, valid=None, *, min_facing: float = DEFAULT_MIN_FACING) -> np.ndarray:
    """Which MediaPipe landmarks are seen rather than guessed: normal facing the camera.

    Args:
      points: ``[..., 478, 3]`` MediaPipe landmarks in the image frame (``FaceLandmarks.points``).
      valid: optional ``bool [...]`` frame validity; invalid frames are all invisible. Frames with
        non-finite or all-zero points are invisible too.
      min_facing: a point is visible when ``landmark_facing > min_facing`` (0 = front-facing; a
        positive margin also drops grazing points near the silhouette).

    Returns:
      ``bool [..., 478]``.
    """
    pts = np.asarray(points, np.float64)
    r, scale, _ = head_rotation(pts)
    vis = landmark_facing(pts, r) > float(min_facing)
    ok = scale > 0
    if valid is not None:
        ok = ok & np.asarray(valid, bool).reshape(ok.shape)
    return vis & ok[..., None]
