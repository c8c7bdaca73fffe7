"""flame_jax: a pure-JAX FLAME face model.

Public API: ``load_model``, ``save_model``, ``forward``, ``load_landmark_embedding``,
``save_landmark_embedding``, ``landmarks``, ``demo_model``, rotation helpers, mesh
geometry (normals, Procrustes alignment) and mesh export (``flame_jax.mesh_io``). No
flax/optax here: this package knows nothing about videos or losses.
"""

from flame_jax.demo import (
    DEMO_EXPRESSION_NAMES,
    demo_embedding_68,
    demo_embeddings,
    demo_landmark_embedding,
    demo_mediapipe_embedding,
    demo_model,
    demo_vertex_masks,
)
from flame_jax.geometry import face_normals, rigid_align, rigid_transform, vertex_normals
from flame_jax.io import (
    UnsafeModelFileError,
    load_landmark_embedding,
    load_model,
    load_shape_prior,
    save_landmark_embedding,
    save_model,
)
from flame_jax.landmarks import LandmarkEmbedding, contour_row, head_yaw_degrees, landmarks
from flame_jax.lbs import FlameOutput, forward
from flame_jax.model import JOINT_NAMES, FlameModel
from flame_jax.rotations import (
    axis_angle_to_matrix,
    axis_angle_to_quaternion,
    deca_pose_to_full,
    full_pose_to_deca,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rotation_6d,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    rotation_6d_to_matrix,
)

__all__ = [
    "DEMO_EXPRESSION_NAMES",
    "demo_embedding_68",
    "demo_embeddings",
    "demo_landmark_embedding",
    "demo_mediapipe_embedding",
    "demo_model",
    "demo_vertex_masks",
    "face_normals",
    "rigid_align",
    "rigid_transform",
    "vertex_normals",
    "UnsafeModelFileError",
    "load_landmark_embedding",
    "load_model",
    "load_shape_prior",
    "save_landmark_embedding",
    "save_model",
    "FlameModel",
    "FlameOutput",
    "JOINT_NAMES",
    "LandmarkEmbedding",
    "axis_angle_to_matrix",
    "axis_angle_to_quaternion",
    "contour_row",
    "deca_pose_to_full",
    "forward",
    "full_pose_to_deca",
    "head_yaw_degrees",
    "landmarks",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rotation_6d",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "rotation_6d_to_matrix",
]
