"""The FLAME model as a JAX pytree.

A :class:`FlameModel` holds every array the forward model needs (leaves) and the
kinematic tree and provenance (static metadata), so a model can be passed
straight through ``jax.jit``/``vmap``/``grad`` as an argument. The model is
built once on the host (``from_arrays``), where derived quantities that save
work at every forward call are precomputed:

* identity, expression and pose-corrective blend shapes are concatenated into one
  coefficient-major matrix, so all three are a single matrix product;
* the joint regressor is folded into the blend shapes
  (``joint_template = J_regressor @ v_template``, ``joint_basis =
  J_regressor @ [shapedirs | exprdirs]``) so joints never need a (J, V) product at
  run time.

Coordinate frame (FLAME convention): metres, +y up, the face looks toward +z,
+x is the subject's left.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Joint order of FLAME's kinematic tree.
JOINT_NAMES = ("global", "neck", "jaw", "eye_left", "eye_right")
NUM_JOINTS = 5
#: Number of identity components in official FLAME files (the first 300 columns of
#: ``shapedirs``); expression components follow.
FLAME_NUM_SHAPE_FILE = 300


@dataclasses.dataclass(frozen=True)
class FlameModel:
    """Arrays of a FLAME-format model.

    The identity, expression and pose-corrective blend shapes are stored as one
    coefficient-major matrix ``basis`` (S+E+P, V*3) so the forward model evaluates all
    of them with a single matrix product, and its gradient needs no transposed copy of
    the matrix; ``shapedirs``, ``exprdirs`` and ``posedirs`` are views of it.

    Attributes:
      v_template: (V, 3) float32 template vertices, metres.
      basis: (S+E+P, V*3) float32: identity | expression | pose-corrective rows.
        The pose rows multiply the row-major flattening of (R_j - I) for joints
        1..J-1 (P = 9 * (J - 1)).
      lbs_weights: (V, J) float32 skinning weights (rows sum to 1).
      joint_regressor: (J, V) float32 dense joint regressor.
      joint_template: (J, 3) float32, ``joint_regressor @ v_template``.
      joint_basis: (S+E, J*3) float32, the regressor applied to the identity and
        expression rows of ``basis`` (joints move with shape and expression).
      faces: (F, 3) int32 triangle vertex indices.
      parents: static tuple of parent joint indices, root = -1.
      num_shape: static number of identity components S.
      num_expression: static number of expression components E.
      name: static free-form provenance string (e.g. "FLAME 2020", "demo head").
    """

    v_template: jax.Array
    basis: jax.Array
    lbs_weights: jax.Array
    joint_regressor: jax.Array
    joint_template: jax.Array
    joint_basis: jax.Array
    faces: jax.Array
    parents: tuple[int, ...] = (-1, 0, 1, 1, 1)
    num_shape: int = 0
    num_expression: int = 0
    name: str = "FLAME"

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def shapedirs(self) -> jax.Array:
        """(V, 3, S) identity blend shapes (a view of ``basis``)."""
        return self.basis[: self.num_shape].T.reshape(self.num_vertices, 3, self.num_shape)

    @property
    def exprdirs(self) -> jax.Array:
        """(V, 3, E) expression blend shapes (a view of ``basis``)."""
        s, e = self.num_shape, self.num_expression
        return self.basis[s : s + e].T.reshape(self.num_vertices, 3, e)

    @property
    def posedirs(self) -> jax.Array:
        """(P, V*3) pose-corrective blend shapes (a view of ``basis``)."""
        return self.basis[self.num_shape + self.num_expression :]

    # ----------------------------------------------------------- construction
    @classmethod
    def from_arrays(
        cls,
        *,
        v_template: Any,
        shapedirs: Any,
        exprdirs: Any,
        posedirs: Any,
        lbs_weights: Any,
        joint_regressor: Any,
        faces: Any,
        parents: Any,
        name: str = "FLAME",
        source: str = "<arrays>",
    ) -> "FlameModel":
        """Validates host arrays, converts to float32/int32 and precomputes.

        Args:
          v_template: (V, 3) template vertices.
          shapedirs: (V, 3, S) identity blend shapes.
          exprdirs: (V, 3, E) expression blend shapes.
          posedirs: (V, 3, P) as in FLAME files, or already (P, V*3).
          lbs_weights: (V, J) skinning weights.
          joint_regressor: (J, V) dense array or scipy sparse matrix.
          faces: (F, 3) vertex indices.
          parents: (J,) parent indices; the root may be stored as -1 or 2**32-1.
          name: provenance string.
          source: file name used in error messages.

        Raises:
          ValueError: naming ``source`` and the offending array when a shape,
            index or value is invalid.
        """

        def bad(msg: str) -> ValueError:
            return ValueError(f"{source}: {msg}")

        def arr(x, key, dtype=np.float32):
            if hasattr(x, "toarray"):  # scipy sparse
                x = x.toarray()
            try:
                a = np.asarray(x, dtype=dtype)
            except (TypeError, ValueError) as e:
                raise bad(f"'{key}' is not a numeric array ({e})") from None
            if dtype == np.float32 and not np.all(np.isfinite(a)):
                raise bad(f"'{key}' contains NaN or infinite values")
            return a

        v_template = arr(v_template, "v_template")
        if v_template.ndim != 2 or v_template.shape[1] != 3 or v_template.shape[0] < 3:
            raise bad(f"'v_template' must have shape (V, 3), got {v_template.shape}")
        num_v = v_template.shape[0]

        shapedirs = arr(shapedirs, "shapedirs")
        exprdirs = arr(exprdirs, "exprdirs")
        for key, d in (("shapedirs", shapedirs), ("exprdirs", exprdirs)):
            if d.ndim != 3 or d.shape[:2] != (num_v, 3):
                raise bad(f"'{key}' must have shape ({num_v}, 3, K), got {d.shape}")

        raw_parents = np.asarray(parents).astype(np.int64).reshape(-1)
        raw_parents = np.where(raw_parents >= 2**31, -1, raw_parents)
        parents_t = tuple(int(p) for p in raw_parents)
        num_j = len(parents_t)
        if num_j < 1 or parents_t[0] != -1:
            raise bad(f"kinematic tree must start with a root (parent -1), got parents {parents_t}")
        for j, p in enumerate(parents_t[1:], start=1):
            if not 0 <= p < j:
                raise bad(f"joint {j} has parent {p}; parents must precede their children")

        posedirs = arr(posedirs, "posedirs")
        num_p = 9 * (num_j - 1)
        if posedirs.ndim == 3:
            if posedirs.shape != (num_v, 3, num_p):
                raise bad(f"'posedirs' must have shape ({num_v}, 3, {num_p}), got {posedirs.shape}")
            posedirs = posedirs.reshape(num_v * 3, num_p).T
        elif posedirs.shape != (num_p, num_v * 3):
            raise bad(f"'posedirs' must have shape ({num_v}, 3, {num_p}), got {posedirs.shape}")

        lbs_weights = arr(lbs_weights, "weights")
        if lbs_weights.shape != (num_v, num_j):
            raise bad(f"'weights' must have shape ({num_v}, {num_j}), got {lbs_weights.shape}")

        joint_regressor = arr(joint_regressor, "J_regressor")
        if joint_regressor.shape != (num_j, num_v):
            raise bad(f"'J_regressor' must have shape ({num_j}, {num_v}), got {joint_regressor.shape}")

        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
            raise bad(f"'f' must be an integer array of shape (F, 3), got {faces.dtype} {faces.shape}")
        if faces.size and (faces.min() < 0 or faces.max() >= num_v):
            raise bad(f"'f' indexes vertex {int(faces.max())} but the model has {num_v} vertices")
        faces = faces.astype(np.int32)

        # Precompute in float64 so the folded regressor is as exact as the unfolded one.
        num_s, num_e = shapedirs.shape[2], exprdirs.shape[2]
        basis = np.concatenate(
            [shapedirs.reshape(num_v * 3, num_s).T, exprdirs.reshape(num_v * 3, num_e).T, posedirs], axis=0
        )
        jr64 = joint_regressor.astype(np.float64)
        joint_template = jr64 @ v_template.astype(np.float64)
        joint_basis = np.einsum("jv,kvc->kjc", jr64, basis[: num_s + num_e].reshape(-1, num_v, 3).astype(np.float64))

        return cls(
            v_template=jnp.asarray(v_template),
            basis=jnp.asarray(np.ascontiguousarray(basis)),
            lbs_weights=jnp.asarray(lbs_weights),
            joint_regressor=jnp.asarray(joint_regressor),
            joint_template=jnp.asarray(joint_template, jnp.float32),
            joint_basis=jnp.asarray(joint_basis.reshape(num_s + num_e, num_j * 3), jnp.float32),
            faces=jnp.asarray(faces),
            parents=parents_t,
            num_shape=int(num_s),
            num_expression=int(num_e),
            name=str(name),
        )

    def truncate(self, n_shape: int | None = None, n_expr: int | None = None) -> "FlameModel":
        """Returns a model keeping only the leading identity/expression components."""
        ns = self.num_shape if n_shape is None else int(n_shape)
        ne = self.num_expression if n_expr is None else int(n_expr)
        if not 0 <= ns <= self.num_shape:
            raise ValueError(f"n_shape={ns} but the model has {self.num_shape} identity components")
        if not 0 <= ne <= self.num_expression:
            raise ValueError(f"n_expr={ne} but the model has {self.num_expression} expression components")
        if (ns, ne) == (self.num_shape, self.num_expression):
            return self
        s, e = self.num_shape, self.num_expression
        keep = np.concatenate([np.arange(ns), s + np.arange(ne), np.arange(s + e, self.basis.shape[0])])
        keep_joint = np.concatenate([np.arange(ns), s + np.arange(ne)])
        return dataclasses.replace(
            self,
            basis=jnp.asarray(np.ascontiguousarray(np.asarray(self.basis)[keep])),
            joint_basis=jnp.asarray(np.ascontiguousarray(np.asarray(self.joint_basis)[keep_joint])),
            num_shape=ns,
            num_expression=ne,
        )

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Host copies of the primary arrays (FLAME file layout, float32/int32)."""
        num_v = self.num_vertices
        return {
            "v_template": np.asarray(self.v_template),
            "shapedirs": np.asarray(self.shapedirs),
            "exprdirs": np.asarray(self.exprdirs),
            "posedirs": np.asarray(self.posedirs).T.reshape(num_v, 3, -1),
            "weights": np.asarray(self.lbs_weights),
            "J_regressor": np.asarray(self.joint_regressor),
            "f": np.asarray(self.faces),
            "parents": np.asarray(self.parents, np.int32),
        }


jax.tree_util.register_dataclass(
    FlameModel,
    data_fields=["v_template", "basis", "lbs_weights", "joint_regressor", "joint_template", "joint_basis", "faces"],
    meta_fields=["parents", "num_shape", "num_expression", "name"],
)
