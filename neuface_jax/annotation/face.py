"""The face model a run fits: FLAME (or the demo head), its landmark embedding and landmark set.

**Landmark sets.** ``"ibug68"`` (default): MediaPipe → iBUG-68 (``landmark_sets.mediapipe_to_ibug68``)
against the model's 68-point embedding; ``"mediapipe105"``: the points of FLAME's MediaPipe
embedding, gathered **by id** from the 478 detections using the embedding's own
``landmark_indices`` (the demo head's ids are a different 105-id list, in a different order, from
``landmark_sets.MEDIAPIPE_105_IDS``; selecting by the embedding's ids is right for both).

**Contour.** MediaPipe's jaw points (the iBUG 0–16 of ``mediapipe_to_ibug68``) are points of its face
oval, fixed on the face surface: on a turned head the far-side ones stay on the (hidden) jaw and
project inside the face; they do *not* slide to the silhouette as a 2D detector's contour does.
FLAME's dynamic contour (DECA's yaw-dependent row of a 79-row table) models silhouette-following
detectors, so pairing it with MediaPipe points would pull the mesh's jaw sideways on a turned head.
``contour="auto"`` (default) therefore uses a **static contour** for MediaPipe-derived 68 landmarks:
the embedding's row 0 (the frontal contour, fixed on the mesh) for every frame
(``static_contour_embedding``). ``contour="dynamic"`` forces the DECA rule (for landmarks from an
outline-following detector, or to compare); ``"static"`` is the same as ``"auto"``. The 105-point
MediaPipe set has no contour.

**Lip points.** ``lip_points="embedding"`` (default) fits the 68-point set's lip points where the embedding
puts them; ``"mediapipe"`` first moves the ones between the corners and the midline along the model's lips to
where MediaPipe's ids for them sit (``mediapipe_lip_embedding``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

import flame_jax
from neuface_jax import params as params_lib
from neuface_jax.annotation.config import CONTOURS, LANDMARK_SETS, LIP_POINTS
from neuface_jax.core import metrics as metrics_lib
from neuface_jax.media import landmark_sets

__all__ = ["FaceSetup", "resolve_face_model", "static_contour_embedding", "mediapipe_lip_embedding"]

#: iBUG-68 lip points ``mediapipe_lip_embedding`` moves, each with its neighbours along the lip line (the corners
#: 48 / 54 / 60 / 64 and the midline points 51 / 57 / 62 / 66 stay where the embedding puts them).
_LIP_NEIGHBOURS = {
    49: (48, 50), 50: (49, 51), 52: (51, 53), 53: (52, 54),
    55: (54, 56), 56: (55, 57), 58: (57, 59), 59: (58, 48),
    61: (60, 62), 63: (62, 64), 65: (64, 66), 67: (66, 60),
}  # fmt: skip


def static_contour_embedding(embedding, row: int = 0):
    """A 68-point embedding with a fixed contour: row ``row`` of the dynamic table for every frame.

    ``face_idx = concat(dynamic_face_idx[row], face_idx)`` (17 contour + 51 static points, iBUG order),
    barycentric coordinates likewise, kind ``"static"``. Row 0 is the frontal (yaw 0) contour, which is
    what MediaPipe's mesh-fixed jaw points correspond to.

    Raises:
      ValueError: the embedding has no dynamic contour table.
    """
    if embedding.dynamic_face_idx is None:
        raise ValueError(f"embedding of kind {embedding.kind!r} has no dynamic contour table to take a static row from")
    dyn_f = np.asarray(embedding.dynamic_face_idx)
    dyn_b = np.asarray(embedding.dynamic_bary_coords)
    if not 0 <= row < dyn_f.shape[0]:
        raise ValueError(f"contour row {row} out of range 0..{dyn_f.shape[0] - 1}")
    return flame_jax.LandmarkEmbedding.from_arrays(
        face_idx=np.concatenate([dyn_f[row], np.asarray(embedding.face_idx)]),
        bary_coords=np.concatenate([dyn_b[row], np.asarray(embedding.bary_coords)]),
        kind="static",
        source=f"static contour (row {row}) of a {embedding.kind} embedding",
    )


def _frontmost_on_mesh(xy: np.ndarray, tri: np.ndarray) -> tuple[int, np.ndarray]:
    """The frontmost (largest z) surface point under ``xy`` [2] on triangles ``tri`` [F, 3, 3] (a ray along −z):
    its triangle and barycentric coordinates."""
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    ok = np.abs(det) > 1e-18
    det = np.where(ok, det, 1.0)
    w0 = ((b[:, 1] - c[:, 1]) * (xy[0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (xy[1] - c[:, 1])) / det
    w1 = ((c[:, 1] - a[:, 1]) * (xy[0] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (xy[1] - c[:, 1])) / det
    w = np.stack([w0, w1, 1.0 - w0 - w1], -1)
    inside = ok & (w >= -1e-9).all(-1)
    if not inside.any():
        raise ValueError(f"no surface of the model's template under the lip point ({xy[0]:.4f}, {xy[1]:.4f})")
    z = np.einsum("fk,fk->f", w, tri[:, :, 2])
    f = int(np.argmax(np.where(inside, z, -np.inf)))
    return f, np.clip(w[f], 0.0, 1.0) / np.clip(w[f], 0.0, 1.0).sum()


def mediapipe_lip_embedding(embedding, model):
    """A 68-point embedding whose lip points sit where MediaPipe's do along the lips.

    The iBUG-68 lip points between the corners and the midline (49–50, 52–53, 55–56, 58–59 outer; 61, 63, 65, 67
    inner) are a matter of definition, and MediaPipe's ids for them (``landmark_sets.MEDIAPIPE_TO_IBUG68``) need
    not sit where a model's embedding puts them: on the demo head 49 is at 0.55 of the half mouth width from the
    midline, MediaPipe's at 0.78, so a fit leaves those points a few millimetres off on every frame. Each moved
    point stays on its lip line: on the model's template its height is the quadratic (height against
    across-the-mouth position) through the point and its two neighbours along the lip line, evaluated at
    MediaPipe's across-the-mouth position (the fraction of the half mouth width the point has on MediaPipe's
    canonical face mesh), and the point is the frontmost surface point of the template there. The contour
    (static or dynamic), the corners and the midline points are unchanged. Host-side, once per model; the fit
    sees an ordinary embedding. (On the shared clips it lowers NME and jitter but widens the fitted mouth, so it
    is an option, not the default: ``docs/self_training.md``.)

    Raises:
      ValueError: the embedding is not a 68-point one.
    """
    if embedding.num_landmarks != 68:
        raise ValueError(f"MediaPipe lip points need a 68-point embedding, got {embedding.num_landmarks} points")
    face_idx = np.array(embedding.face_idx, np.int64)
    bary = np.array(embedding.bary_coords, np.float64)
    off = 68 - len(face_idx)  # 17 for a dynamic-contour embedding (its static part starts at point 17)
    verts = np.asarray(model.v_template, np.float64)
    faces = np.asarray(model.faces, np.int64)
    pts = np.full((68, 3), np.nan)
    pts[off:] = np.einsum("lk,lkd->ld", bary, verts[faces[face_idx]])
    mp = np.asarray(landmark_sets.CANONICAL_MESH_VERTICES, np.float64)[landmark_sets.MEDIAPIPE_TO_IBUG68]

    def across(q):  # signed fraction of the half mouth width, from the midline between the outer corners
        mid, half = (q[48, 0] + q[54, 0]) / 2, (q[54, 0] - q[48, 0]) / 2
        return (q[:, 0] - mid) / half, mid, half

    f_mp, _ = across(mp)[:2]
    _, mid, half = across(pts)
    tri = verts[faces]
    for k, (i, j) in _LIP_NEIGHBOURS.items():
        x = pts[[i, k, j], 0]
        target_x = mid + f_mp[k] * half
        target_y = np.polyval(np.polyfit(x, pts[[i, k, j], 1], 2), target_x)
        face_idx[k - off], bary[k - off] = _frontmost_on_mesh(np.array([target_x, target_y]), tri)
    return flame_jax.LandmarkEmbedding.from_arrays(
        face_idx=face_idx.astype(np.int32), bary_coords=bary, dynamic_face_idx=embedding.dynamic_face_idx,
        dynamic_bary_coords=embedding.dynamic_bary_coords, kind=embedding.kind,
        source=f"{embedding.kind} embedding with MediaPipe's lip points",
    )


@dataclasses.dataclass(frozen=True)
class FaceSetup:
    """The face model and landmark set a run fits (``resolve_face_model``)."""

    model: Any  # flame_jax.FlameModel
    embedding: Any  # flame_jax.LandmarkEmbedding used in the fit
    landmark_ids: np.ndarray  # MediaPipe ids of the fitted landmarks, in embedding order
    eye_idx: tuple[int, int]  # positions of the outer eye corners in the landmark set (for NME)
    landmark_set: str
    contour: str  # resolved: "static", "dynamic" or "none"
    model_label: str
    is_demo: bool
    model_info: params_lib.ModelInfo = params_lib.ModelInfo()  # recorded in params.npz (path, hash, counts)


def resolve_face_model(
    flame_model=None, landmark_embedding=None, *, landmark_set: str = "ibug68", contour: str = "auto",
    lip_points: str = "embedding",
) -> FaceSetup:
    """Loads (or takes) the FLAME model and the embedding for a landmark set and contour choice.

    Without ``flame_model`` the procedural demo head (not FLAME) and its embeddings are used. With a
    FLAME file, ``landmark_embedding`` is required (DECA's ``landmark_embedding.npy`` for ibug68,
    ``mediapipe_landmark_embedding.npz`` for mediapipe105). ``lip_points="mediapipe"`` moves the 68-point set's
    lip points to MediaPipe's positions along the lips (``mediapipe_lip_embedding``); ``"embedding"`` keeps the
    embedding's. The 105-point set is gathered by MediaPipe id and needs neither.
    """
    if landmark_set not in LANDMARK_SETS:
        raise ValueError(f"unknown landmark set {landmark_set!r}; choose one of {LANDMARK_SETS}")
    if contour not in CONTOURS:
        raise ValueError(f"unknown contour mode {contour!r}; choose one of {CONTOURS}")
    if lip_points not in LIP_POINTS:
        raise ValueError(f"unknown lip points {lip_points!r}; choose one of {LIP_POINTS}")
    is_demo = flame_model is None
    if is_demo:
        if landmark_embedding is not None and not isinstance(landmark_embedding, flame_jax.LandmarkEmbedding):
            raise ValueError("a landmark embedding file needs the FLAME model it belongs to (--flame_model)")
        model = flame_jax.demo_model()
        label = model.name
        if landmark_embedding is None:
            landmark_embedding = (
                flame_jax.demo_landmark_embedding() if landmark_set == "ibug68" else flame_jax.demo_mediapipe_embedding()
            )
    else:
        if landmark_embedding is None:
            want = "landmark_embedding.npy (68 points)" if landmark_set == "ibug68" else "mediapipe_landmark_embedding.npz"
            raise ValueError(f"a FLAME model needs its landmark embedding for the {landmark_set} set: pass {want}")
        model = flame_model if isinstance(flame_model, flame_jax.FlameModel) else flame_jax.load_model(flame_model)
        label = getattr(model, "name", None) or str(flame_model)
    emb = landmark_embedding
    if not isinstance(emb, flame_jax.LandmarkEmbedding):
        emb = flame_jax.load_landmark_embedding(emb, model=model)
    else:
        emb.check_faces(int(model.faces.shape[0]), "landmark embedding")

    if landmark_set == "ibug68":
        if emb.num_landmarks != 68:
            raise ValueError(
                f"landmark set ibug68 needs a 68-point embedding; got a {emb.kind} embedding with "
                f"{emb.num_landmarks} points (use --landmark_set=mediapipe105 for a MediaPipe embedding)"
            )
        ids = np.asarray(landmark_sets.MEDIAPIPE_TO_IBUG68)
        eye_idx = metrics_lib.eye_corners(None)
        if emb.dynamic_face_idx is None:
            if contour == "dynamic":
                raise ValueError("contour='dynamic' needs an embedding with a dynamic contour table")
            resolved = "static"  # already static (e.g. a static 68-point file)
        elif contour == "dynamic":
            resolved = "dynamic"
        else:
            emb = static_contour_embedding(emb, 0)
            resolved = "static"
        if lip_points == "mediapipe":
            emb = mediapipe_lip_embedding(emb, model)
    else:
        if emb.landmark_indices is None:
            raise ValueError(
                f"landmark set mediapipe105 needs a MediaPipe embedding with landmark_indices (MediaPipe ids); "
                f"got a {emb.kind} embedding"
            )
        if emb.dynamic_face_idx is not None:
            raise ValueError("a MediaPipe embedding must not have a dynamic contour")
        ids = np.asarray(emb.landmark_indices).astype(np.int64)
        if ids.min() < 0 or ids.max() >= landmark_sets.NUM_MEDIAPIPE:
            raise ValueError(f"embedding landmark_indices must be MediaPipe ids 0..477, got {ids.min()}..{ids.max()}")
        eye_idx = metrics_lib.eye_corners(ids)  # ValueError when the set lacks one
        resolved = "none"
    return FaceSetup(
        model=model, embedding=emb, landmark_ids=ids.astype(np.int64), eye_idx=eye_idx, landmark_set=landmark_set,
        contour=resolved, model_label=label, is_demo=is_demo,
        model_info=params_lib.model_info(model, None if is_demo or isinstance(flame_model, flame_jax.FlameModel)
                                         else flame_model),
    )
