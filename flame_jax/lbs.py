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

# CPU ignores it; on GPU/TPU it keeps the blend-shape product in full float32
# rather than TF32/bf16 passes, so results match the float64 reference.
_PRECISION = jax.lax.Precision.HIGHEST


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


@jax.custom_vjp
def _skin_offset(weights, rot_dev, trans, v_posed):
    """Σ_j w_vj (rot_dev_j v + t_j) for weights (V, J), rot_dev (N, J, 3, 3), trans (N, J, 3), v_posed (N, V, 3).

    Written elementwise so XLA fuses it into one pass over the vertices: neither a
    per-vertex 3x4 transform nor a per-joint copy of the mesh is materialized. The
    custom VJP keeps the backward pass equally lean: the vertex gradient is the same
    fused loop with transposed rotations, and the per-joint gradients are a single
    contraction over vertices instead of dozens of strided reductions.
    """
    out = None
    for j in range(weights.shape[1]):
        r, t = rot_dev[:, j], trans[:, j]
        moved = (
            r[:, None, :, 0] * v_posed[..., 0:1]
            + r[:, None, :, 1] * v_posed[..., 1:2]
            + r[:, None, :, 2] * v_posed[..., 2:3]
            + t[:, None, :]
        )
        term = weights[None, :, j, None] * moved
        out = term if out is None else out + term
    return out


def _skin_offset_fwd(weights, rot_dev, trans, v_posed):
    return _skin_offset(weights, rot_dev, trans, v_posed), (weights, rot_dev, trans, v_posed)


def _skin_offset_bwd(res, g):
    weights, rot_dev, trans, v_posed = res
    # d/dv_posed: Σ_j w_vj rot_dev_jᵀ g_v (same fused form, transposed rotations).
    grad_v = _skin_offset(weights, jnp.swapaxes(rot_dev, -1, -2), jnp.zeros(rot_dev.shape[:-1], g.dtype), g)
    # d/drot_dev_j[a, b] = Σ_v w_vj g_va v_b and d/dt_j[a] = Σ_v w_vj g_va: one contraction over v.
    outer = jnp.concatenate([(g[..., :, None] * v_posed[..., None, :]).reshape(g.shape[:-1] + (9,)), g], -1)
    per_joint = jnp.einsum("vj,nvk->njk", weights, outer, precision=_PRECISION)
    n, j = rot_dev.shape[:2]
    grad_rot = per_joint[..., :9].reshape(n, j, 3, 3)
    grad_t = per_joint[..., 9:]
    # Gradient for the skinning weights (dead code, removed by XLA, unless requested).
    moved = jnp.einsum("njab,nvb->nvja", rot_dev, v_posed, precision=_PRECISION) + trans[:, None]
    grad_w = jnp.einsum("nvja,nva->vj", moved, g, precision=_PRECISION)
    return grad_w, grad_rot, grad_t, grad_v


_skin_offset.defvjp(_skin_offset_fwd, _skin_offset_bwd)


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
    coeffs = jnp.concatenate([betas.reshape(flat, -1), psi.reshape(flat, -1)], axis=-1)
    pose = pose.reshape(flat, num_j, 3)

    # 3. Rotations (needed first: the pose correctives share the blend-shape product).
    rot = axis_angle_to_matrix(pose)  # (N, J, 3, 3)
    pose_feature = (rot[:, 1:] - jnp.eye(3, dtype=dtype)).reshape(flat, -1)

    # 1, 2, 4. Identity + expression + pose correctives in one product; joints from
    # the folded regressor (shape and expression only, as in FLAME).
    all_coeffs = jnp.concatenate([coeffs, pose_feature], axis=-1)
    v_posed = model.v_template.reshape(1, -1) + jnp.dot(all_coeffs, model.basis, precision=_PRECISION)
    v_posed = v_posed.reshape(flat, num_v, 3)
    joints_rest = model.joint_template + jnp.dot(coeffs, model.joint_basis, precision=_PRECISION).reshape(
        flat, num_j, 3
    )

    # 5. Kinematic chain (static parents: unrolled at trace time), written as offsets
    # from the rest pose: d_j = g_j − J_j is the joint's displacement and G_j − I the
    # deviation of its world rotation from the identity. Every term
    # is exactly zero at the zero pose, so zero parameters reproduce v_template
    # bit for bit and small poses keep full float32 resolution.
    eye = jnp.eye(3, dtype=dtype)
    g_rot = [None] * num_j
    d_trans = [None] * num_j
    for j, p in enumerate(model.parents):
        if p < 0:
            g_rot[j] = rot[:, j]
            d_trans[j] = jnp.zeros_like(joints_rest[:, j])
        else:
            rel = joints_rest[:, j] - joints_rest[:, p]
            g_rot[j] = g_rot[p] @ rot[:, j]
            d_trans[j] = jnp.einsum("nab,nb->na", g_rot[p] - eye, rel) + d_trans[p]
    posed_joints = joints_rest + jnp.stack(d_trans, 1)  # (N, J, 3)

    # 6. Skinning: v = v_posed + Σ_j w_vj ((G_j − I) v_posed + t_j), t_j = d_j − (G_j − I) J_j
    # (equal to Σ_j w_vj (G_j v_posed + g_j − G_j J_j) when the weights sum to one).
    rot_dev = jnp.stack(g_rot, 1) - eye  # (N, J, 3, 3)
    skin_t = jnp.stack(d_trans, 1) - jnp.einsum("njab,njb->nja", rot_dev, joints_rest)
    vertices = v_posed + _skin_offset(model.lbs_weights, rot_dev, skin_t, v_posed)

    # 7. Translation.
    if translation is not None:
        t = jnp.broadcast_to(jnp.asarray(translation, dtype), batch + (3,)).reshape(flat, 1, 3)
        vertices = vertices + t
        posed_joints = posed_joints + t

    return FlameOutput(
        vertices=vertices.reshape(batch + (num_v, 3)),
        joints=posed_joints.reshape(batch + (num_j, 3)),
    )
