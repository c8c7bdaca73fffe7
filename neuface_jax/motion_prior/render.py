"""Renders parameter sequences as shaded meshes, several views side by side (for generated clips)."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from scipy.spatial.transform import Rotation

import flame_jax
from neuface_jax.media import render as render_lib


@jax.jit
def _vertices(model, shape, expression, pose):
    return flame_jax.forward(model, shape=shape, expression=expression, pose=pose).vertices


def mesh_sequence(model, expression: np.ndarray, pose: np.ndarray, shape: np.ndarray, batch: int = 256) -> np.ndarray:
    """[T, V, 3] vertices of a sequence (expression [T, E], full pose [T, 15], shape [N])."""
    t = len(expression)
    e, n = min(expression.shape[1], model.num_expression), min(len(shape), model.num_shape)
    out = []
    for a in range(0, t, batch):
        b = min(t, a + batch)
        sh = np.broadcast_to(np.asarray(shape[:n], np.float32), (b - a, n))
        out.append(np.asarray(_vertices(model, sh, expression[a:b, :e], pose[a:b])))
    return np.concatenate(out)


def render_views(model, vertices: np.ndarray, yaws_deg: Sequence[float] = (0.0, 60.0), size: int = 256) -> np.ndarray:
    """uint8 [T, size, size * len(yaws), 3]: the sequence seen from each yaw (one framing per view)."""
    faces = np.asarray(model.faces)
    out = np.zeros((len(vertices), size, size * len(yaws_deg), 3), np.uint8)
    for w, yaw in enumerate(yaws_deg):
        rot = Rotation.from_euler("y", -yaw, degrees=True).as_matrix()
        screen = render_lib.fit_orthographic(vertices @ rot.T, size, size, fill=0.75)
        for t in range(len(vertices)):
            img = render_lib.render(screen[t], faces, height=size, width=size, background=0.08).image
            out[t, :, w * size : (w + 1) * size] = render_lib.to_uint8(img)
    return out
