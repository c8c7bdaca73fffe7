"""FLAME forward model: blend shapes, pose correctives, kinematic chain, linear blend skinning.

``forward`` accepts any leading batch dimensions (or none) and broadcasts the
parameter arrays against each other, so one identity can be shared by a batch of
poses without copying. It is a pure function of (model, parameters) and works
under ``jit``, ``vmap`` and ``grad``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from flame_jax.model import FlameModel
from flame_jax.rotations import axis_angle_to_matrix


@dataclasses.dataclass(frozen=True)
class FlameOutput:
    """Result of ``forward``.

    Attributes:
      vertices: [..., V, 3] posed vertices, metres (translation applied).
      joints: [..., J, 3] posed joint positions, metres (translation applied).
    """

    vertices: jax.Array
    joints: jax.Array


jax.tree_util.register_dataclass(FlameOutput, data_fields=["vertices", "joints"], meta_fields=[])


def _coefficients(x, available: int, name: str, batch, dtype):
    """Pads a [..., n] coefficient array with zeros to the model's component count.

    Padding (instead of slicing the blend-shape matrices) keeps every forward call on
    the full, contiguous matrices; zero coefficients contribute exactly nothing.
    """
    if x is None:
        return jnp.zeros(batch + (available,), dtype)
    x = jnp.asarray(x, dtype)
    n = x.shape[-1] if x.ndim else 0
    if x.ndim == 0:
        raise ValueError(f"{name} must be an array [..., n], got a scalar")
    if n > available:
        raise ValueError(f"{name} has {n} coefficients but the model holds only {available}")
    if n < available:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, available - n)])
    return jnp.broadcast_to(x, batch + (available,))


def forward(
    model: FlameModel,
    *,
    shape: jax.Array | None = None,
    expression: jax.Array | None = None,
    pose: jax.Array | None = None,
    translation: jax.Array | None = None,
) -> FlameOutput:
    """Evaluates FLAME.

    Args:
      model: the model pytree.
      shape: [..., n_s] identity coefficients (n_s ≤ model.num_shape; fewer means the
        leading components).
      expression: [..., n_e] expression coefficients (likewise).
      pose: [..., 3*J] axis-angle per joint, [global, neck, jaw, eye_left, eye_right]
        for FLAME (J = 5 → 15 values). None means the zero pose.
      translation: [..., 3] metres, added to vertices and joints.

    Returns:
      ``FlameOutput`` with vertices [..., V, 3] and joints [..., J, 3]; the leading
      dimensions are the broadcast of the inputs' leading dimensions (none for
      unbatched inputs).
    """
    num_j = model.num_joints
    dtype = model.v_template.dtype
    leading = []
    for name, x, width in (
        ("shape", shape, None),
        ("expression", expression, None),
        ("pose", pose, 3 * num_j),
        ("translation", translation, 3),
    ):
        if x is None:
            continue
        x = jnp.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"{name} must be an array [..., n], got a scalar")
        if width is not None and x.shape[-1] != width:
            raise ValueError(f"{name} must have {width} values in its last axis, got shape {x.shape}")
        leading.append(x.shape[:-1])
    try:
        batch = tuple(jnp.broadcast_shapes(*leading)) if leading else ()
    except ValueError:
        raise ValueError(
            "batch dimensions of shape/expression/pose/translation do not broadcast: "
            + ", ".join(str(s) for s in leading)
        ) from None

    betas = _coefficients(shape, model.num_shape, "shape", batch, dtype)
    psi = _coefficients(expression, model.num_expression, "expression", batch, dtype)
    pose = jnp.zeros(batch + (3 * num_j,), dtype) if pose is None else jnp.broadcast_to(jnp.asarray(pose, dtype), batch + (3 * num_j,))

    num_v = model.num_vertices
    flat = math.prod(batch)
    betas = betas.reshape(flat, -1)
    psi = psi.reshape(flat, -1)
    pose = pose.reshape(flat, num_j, 3)

    # 1-2. Identity and expression blend shapes; joints from the folded regressor.
    v_shaped = model.v_template.reshape(-1) + jnp.dot(
        betas, model.shapedirs.reshape(num_v * 3, -1).T, precision=jax.lax.Precision.HIGHEST
    ) + jnp.dot(psi, model.exprdirs.reshape(num_v * 3, -1).T, precision=jax.lax.Precision.HIGHEST)
    joints_rest = (
        model.joint_template
        + jnp.einsum("nk,jck->njc", betas, model.joint_shapedirs, precision=jax.lax.Precision.HIGHEST)
        + jnp.einsum("nk,jck->njc", psi, model.joint_exprdirs, precision=jax.lax.Precision.HIGHEST)
    )

    # 3-4. Rotations and pose correctives.
    rot = axis_angle_to_matrix(pose)  # (N, J, 3, 3)
    pose_feature = (rot[:, 1:] - jnp.eye(3, dtype=dtype)).reshape(flat, -1)
    v_posed = v_shaped + jnp.dot(pose_feature, model.posedirs, precision=jax.lax.Precision.HIGHEST)
    v_posed = v_posed.reshape(flat, num_v, 3)

    # 5. Kinematic chain (static parents: unrolled at trace time).
    g_rot = [None] * num_j
    g_trans = [None] * num_j
    for j, p in enumerate(model.parents):
        if p < 0:
            g_rot[j] = rot[:, j]
            g_trans[j] = joints_rest[:, j]
        else:
            rel = joints_rest[:, j] - joints_rest[:, p]
            g_rot[j] = g_rot[p] @ rot[:, j]
            g_trans[j] = jnp.einsum("nab,nb->na", g_rot[p], rel) + g_trans[p]
    g_rot = jnp.stack(g_rot, 1)  # (N, J, 3, 3)
    posed_joints = jnp.stack(g_trans, 1)  # (N, J, 3)
    skin_trans = posed_joints - jnp.einsum("njab,njb->nja", g_rot, joints_rest)

    # 6. Skinning: blend the 3x4 transforms per vertex (one small matmul), then apply.
    transforms = jnp.concatenate([g_rot, skin_trans[..., None]], -1).reshape(flat, num_j, 12)
    blended = jnp.einsum("vj,njk->nvk", model.lbs_weights, transforms, precision=jax.lax.Precision.HIGHEST)
    blended = blended.reshape(flat, num_v, 3, 4)
    vertices = (
        blended[..., 0] * v_posed[..., 0:1]
        + blended[..., 1] * v_posed[..., 1:2]
        + blended[..., 2] * v_posed[..., 2:3]
        + blended[..., 3]
    )

    # 7. Translation.
    if translation is not None:
        t = jnp.broadcast_to(jnp.asarray(translation, dtype), batch + (3,)).reshape(flat, 1, 3)
        vertices = vertices + t
        posed_joints = posed_joints + t

    return FlameOutput(
        vertices=vertices.reshape(batch + (num_v, 3)),
        joints=posed_joints.reshape(batch + (num_j, 3)),
    )
