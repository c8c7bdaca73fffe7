"""Barycentric landmark embeddings and the iBUG-68 dynamic jaw contour.

A landmark is a point on a mesh triangle: ``lmk = Σ_k b_k · V[f[face_idx], k]``.
A 68-point embedding (iBUG order) holds 51 static points and a 79-row table of
17 contour points; the row is chosen from the head yaw so the contour follows
the silhouette as the head turns (the DECA rule, see ``contour_row``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from flame_jax.rotations import axis_angle_to_matrix

NUM_CONTOUR = 17
NUM_CONTOUR_ROWS = 79
#: Largest |yaw| in degrees that has its own contour row.
MAX_CONTOUR_YAW = 39


@dataclasses.dataclass(frozen=True)
class LandmarkEmbedding:
    """Landmarks fixed to mesh triangles by barycentric coordinates.

    Attributes:
      face_idx: (L,) int32 triangle index of each static landmark.
      bary_coords: (L, 3) float32 barycentric coordinates.
      dynamic_face_idx: (79, 17) int32 contour table, or None.
      dynamic_bary_coords: (79, 17, 3) float32, or None.
      landmark_indices: (L,) int32 ids in another landmark scheme the static points
        correspond to (MediaPipe FaceMesh ids for the 105-point embedding), or None.
      kind: static tag: "ibug68" (17 dynamic + 51 static, iBUG order), "mediapipe"
        or "static".
    """

    face_idx: jax.Array
    bary_coords: jax.Array
    dynamic_face_idx: jax.Array | None = None
    dynamic_bary_coords: jax.Array | None = None
    landmark_indices: jax.Array | None = None
    kind: str = "static"

    @property
    def num_landmarks(self) -> int:
        n = int(self.face_idx.shape[0])
        if self.dynamic_face_idx is not None:
            n += int(self.dynamic_face_idx.shape[1])
        return n

    @classmethod
    def from_arrays(
        cls,
        *,
        face_idx,
        bary_coords,
        dynamic_face_idx=None,
        dynamic_bary_coords=None,
        landmark_indices=None,
        kind: str | None = None,
        source: str = "<arrays>",
    ) -> "LandmarkEmbedding":
        """Validates host arrays and builds an embedding.

        ``kind`` defaults to "ibug68" when a 51-point static set comes with a
        (79, 17) dynamic table, "mediapipe" when ``landmark_indices`` is given,
        otherwise "static".

        Raises:
          ValueError: naming ``source`` when shapes or values are inconsistent.
        """

        def bad(msg):
            return ValueError(f"{source}: {msg}")

        face_idx = np.asarray(face_idx).reshape(-1)
        bary = np.asarray(bary_coords, np.float64).reshape(-1, 3) if np.size(bary_coords) else np.zeros((0, 3))
        if not np.issubdtype(face_idx.dtype, np.integer):
            raise bad(f"landmark face indices must be integers, got {face_idx.dtype}")
        if bary.shape != (face_idx.shape[0], 3):
            raise bad(f"barycentric coordinates have shape {np.shape(bary_coords)}, expected ({face_idx.shape[0]}, 3)")
        if not np.all(np.isfinite(bary.astype(np.float32))):
            raise bad("barycentric coordinates contain NaN, infinite or out-of-range values")
        if face_idx.size and face_idx.min() < 0:
            raise bad(f"negative landmark face index {int(face_idx.min())}")
        dyn_f = dyn_b = None
        if (dynamic_face_idx is None) != (dynamic_bary_coords is None):
            raise bad("dynamic face indices and dynamic barycentric coordinates must come together")
        if dynamic_face_idx is not None:
            dyn_f = np.asarray(dynamic_face_idx)
            dyn_b = np.asarray(dynamic_bary_coords, np.float64)
            if dyn_f.ndim != 2 or not np.issubdtype(dyn_f.dtype, np.integer):
                raise bad(f"dynamic face indices must be an integer (rows, points) array, got {dyn_f.dtype} {dyn_f.shape}")
            if dyn_b.shape != dyn_f.shape + (3,):
                raise bad(f"dynamic barycentric coordinates have shape {dyn_b.shape}, expected {dyn_f.shape + (3,)}")
            if not np.all(np.isfinite(dyn_b.astype(np.float32))):
                raise bad("dynamic barycentric coordinates contain NaN, infinite or out-of-range values")
            if dyn_f.size and dyn_f.min() < 0:
                raise bad(f"negative dynamic landmark face index {int(dyn_f.min())}")
        lmk_ids = None
        if landmark_indices is not None:
            lmk_ids = np.asarray(landmark_indices).reshape(-1).astype(np.int32)
            if lmk_ids.shape != face_idx.shape:
                raise bad(f"landmark_indices has {lmk_ids.shape[0]} entries for {face_idx.shape[0]} landmarks")
        if kind is None:
            if dyn_f is not None and dyn_f.shape == (NUM_CONTOUR_ROWS, NUM_CONTOUR) and face_idx.shape[0] == 51:
                kind = "ibug68"
            elif lmk_ids is not None:
                kind = "mediapipe"
            else:
                kind = "static"
        if kind == "ibug68" and (dyn_f is None or dyn_f.shape != (NUM_CONTOUR_ROWS, NUM_CONTOUR) or face_idx.shape[0] != 51):
            raise bad("an ibug68 embedding needs 51 static points and a (79, 17) dynamic contour table")
        return cls(
            face_idx=jnp.asarray(face_idx.astype(np.int32)),
            bary_coords=jnp.asarray(bary.astype(np.float32)),
            dynamic_face_idx=None if dyn_f is None else jnp.asarray(dyn_f.astype(np.int32)),
            dynamic_bary_coords=None if dyn_b is None else jnp.asarray(dyn_b.astype(np.float32)),
            landmark_indices=None if lmk_ids is None else jnp.asarray(lmk_ids),
            kind=str(kind),
        )

    def check_faces(self, num_faces: int, source: str = "<embedding>") -> None:
        """Raises ValueError if any face index is out of range for a mesh with ``num_faces``."""
        biggest = int(np.max(np.asarray(self.face_idx))) if self.face_idx.size else -1
        if self.dynamic_face_idx is not None and self.dynamic_face_idx.size:
            biggest = max(biggest, int(np.max(np.asarray(self.dynamic_face_idx))))
        if biggest >= num_faces:
            raise ValueError(
                f"{source}: landmark face index {biggest} is out of range for a model with {num_faces} faces"
            )


jax.tree_util.register_dataclass(
    LandmarkEmbedding,
    data_fields=["face_idx", "bary_coords", "dynamic_face_idx", "dynamic_bary_coords", "landmark_indices"],
    meta_fields=["kind"],
)


def barycentric_points(vertices: jax.Array, faces: jax.Array, face_idx: jax.Array, bary: jax.Array) -> jax.Array:
    """Points on a mesh: vertices [..., V, 3], faces (F, 3), face_idx (L,), bary (L, 3) → [..., L, 3]."""
    tri = faces[face_idx]  # (L, 3)
    corners = vertices[..., tri, :]  # [..., L, 3, 3]
    return jnp.einsum("...lkc,lk->...lc", corners, bary.astype(vertices.dtype))


def head_yaw_degrees(pose: jax.Array) -> jax.Array:
    """Yaw of R_global · R_neck in degrees, DECA's convention. pose [..., 15] → [...]."""
    rot = axis_angle_to_matrix(pose[..., 0:3]) @ axis_angle_to_matrix(pose[..., 3:6])
    yaw = jnp.arctan2(-rot[..., 2, 0], jnp.sqrt(rot[..., 0, 0] ** 2 + rot[..., 1, 0] ** 2))
    return jnp.degrees(yaw)


def contour_row(yaw_degrees: jax.Array) -> jax.Array:
    """Row of the 79-row contour table for a head yaw (degrees), DECA's rule.

    a = round(min(yaw, 39)) with round-half-to-even; row = a for a ≥ 0,
    39 − a for −39 ≤ a < 0, and 78 for a < −39. Unit cases: 0 → 0, 10.4 → 10,
    45 → 39, −0.6 → 40, −1 → 40, −39 → 78, −50 → 78.
    """
    a = jnp.round(jnp.minimum(jnp.asarray(yaw_degrees), MAX_CONTOUR_YAW)).astype(jnp.int32)
    row = jnp.where(a >= 0, a, jnp.where(a >= -MAX_CONTOUR_YAW, MAX_CONTOUR_YAW - a, 2 * MAX_CONTOUR_YAW))
    return row


def landmarks(model, embedding: LandmarkEmbedding, vertices: jax.Array, pose: jax.Array | None = None) -> jax.Array:
    """Landmark positions on posed meshes.

    Args:
      model: a ``FlameModel`` (its ``faces`` are used).
      embedding: the landmark embedding.
      vertices: [..., V, 3] mesh vertices (any leading batch dims).
      pose: [..., 15] full pose; required for an embedding with a dynamic contour.

    Returns:
      [..., L, 3]. For an "ibug68" embedding: the 17 contour points chosen from the
      head yaw, then the 51 static points (iBUG order). The contour row choice has no
      gradient; positions are differentiable in ``vertices``.
    """
    faces = model.faces
    static = barycentric_points(vertices, faces, embedding.face_idx, embedding.bary_coords)
    if embedding.dynamic_face_idx is None:
        return static
    if pose is None:
        raise ValueError("this embedding has a dynamic contour: pass the full pose [..., 15] to choose its row")
    pose = jnp.asarray(pose)
    if pose.shape[-1] != 15:
        raise ValueError(f"pose must be [..., 15] axis-angle, got shape {pose.shape}")
    row = jax.lax.stop_gradient(contour_row(head_yaw_degrees(jax.lax.stop_gradient(pose))))
    batch = jnp.broadcast_shapes(vertices.shape[:-2], row.shape)
    row = jnp.broadcast_to(row, batch)
    vertices = jnp.broadcast_to(vertices, batch + vertices.shape[-2:])
    dyn_faces = embedding.dynamic_face_idx[row]  # [..., 17]
    dyn_bary = embedding.dynamic_bary_coords[row].astype(vertices.dtype)  # [..., 17, 3]
    tri = faces[dyn_faces]  # [..., 17, 3]
    corners = _gather_rows(vertices, tri)  # [..., 17, 3, 3]
    contour = jnp.einsum("...lkc,...lk->...lc", corners, dyn_bary)
    return jnp.concatenate([contour, static], axis=-2)


def _gather_rows(vertices: jax.Array, tri: jax.Array) -> jax.Array:
    """vertices [..., V, 3], tri [..., L, 3] int → [..., L, 3, 3] with matching batch dims."""
    batch = vertices.shape[:-2]
    flat_v = vertices.reshape((-1,) + vertices.shape[-2:])
    flat_t = tri.reshape((-1,) + tri.shape[-2:])
    out = jax.vmap(lambda v, t: v[t])(flat_v, flat_t)
    return out.reshape(batch + tri.shape[-2:] + (3,))
