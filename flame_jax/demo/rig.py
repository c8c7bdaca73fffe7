"""The demo head's rig: joints, skinning weights, the joint regressor and pose correctives."""

from __future__ import annotations

import numpy as np

from flame_jax.demo.mesh import _NU
from flame_jax.demo.params import _gauss, _smoothstep


# =============================================================================
# Joints, skinning weights, joint regressor, pose correctives
# =============================================================================

# Joints of the template (metres): root and neck on the neck's axis (depth _NECK_AXIS_Z, at the
# height of two neck rings), the jaw hinge between the ears, the eye joints at the eyeball centres.
_NECK_AXIS_Z = -0.030
_JOINT_JAW = np.array([0.0, -0.015, -0.012])


def _grid(v, topo):
    return v[: topo.num_grid].reshape(topo.n_rows, _NU, 3)


def _chin_fraction(topo):
    """Per-row position in the chin section: 0 at the throat, 1 at the face; 0 below, 1 above."""
    s = np.zeros(topo.n_rows)
    c = topo.sections["chin"]
    s[c] = np.arange(c.stop - c.start) / (c.stop - c.start)
    s[c.stop :] = 1.0
    return s


def _jaw_weight(P, v, topo):
    """Jaw skinning weight of the grid vertices (n_rows, NU)."""
    g = _grid(v, topo)
    x, y, z = g[..., 0], g[..., 1], g[..., 2]
    rows = topo.rows
    sec = topo.sections
    xr = x - P["mouth_dx"]
    # Below the line from the mouth corner back to the jaw hinge.
    z_mc = P["z_face"] - 0.016
    y_mc, y_t, z_t = P["mouth_y"], _JOINT_JAW[1], _JOINT_JAW[2]
    f = np.clip((z_mc - z) / (z_mc - z_t), 0.0, 1.0)
    y_line = y_mc + (y_t - y_mc) * f
    width = 0.0008 + 0.009 * _smoothstep(0.6 * P["mouth_w"], P["mouth_w"] + 0.02, np.abs(xr))
    w_cheek = _smoothstep(-width, width, y_line - y)
    # Explicit rows at the lips: lower lip down -> 1, upper lip up -> 0, pockets in between.
    explicit = np.zeros(topo.n_rows)
    explicit[: rows["mouth_lo"] + 1] = 1.0
    explicit[rows["mouth_pocket"]] = [0.85, 0.5, 0.15]
    wm = np.zeros_like(x)
    wm[sec["mouth"]] = 1.0
    wm = wm * (1 - _smoothstep(P["mouth_w"] - 0.004, P["mouth_w"] + 0.006, np.abs(xr))) * (np.cos(topo.theta) > 0)
    w1 = wm * explicit[:, None] + (1 - wm) * w_cheek
    # Above the jaw-neck junction (the submental skin shares), measured as arc length up each
    # column from the throat so the blend is as wide where the rows bunch up; in front of the ramus.
    c0 = sec["chin"].start
    steps = np.linalg.norm(np.diff(g, axis=0), axis=-1)
    arc = np.zeros_like(x)
    arc[c0 + 1 :] = np.cumsum(steps[c0:], axis=0)
    arc[:c0] = -np.cumsum(steps[:c0][::-1], axis=0)[::-1]
    w2 = _smoothstep(-0.022, 0.034, arc)
    w3 = _smoothstep(-0.052, -0.024, z)
    return w1 * w2 * w3


def _skinning_weights(P, v, topo):
    nv = topo.num_vertices
    w = np.zeros((nv, 5))
    y = v[: topo.num_grid, 1]
    w_glob = _smoothstep(-0.118, -0.150, y)
    w_jaw = _jaw_weight(P, v, topo).reshape(-1) * (1 - w_glob)
    w[: topo.num_grid, 0] = w_glob
    w[: topo.num_grid, 2] = w_jaw
    w[: topo.num_grid, 1] = 1 - w_glob - w_jaw
    w[topo.pole_top, 1] = 1.0
    w[topo.pole_bottom, 0] = 1.0
    w[topo.eye_left, 3] = 1.0
    w[topo.eye_right, 4] = 1.0
    return w


def _regressor_row(v, idx, base_w, target):
    """Weights over vertices idx, close to base_w, summing to 1, with sum w_i v_i = target exactly."""
    w0 = base_w / base_w.sum()
    a = np.concatenate([v[idx].T, np.ones((1, len(idx)))])  # (4, n)
    r = np.concatenate([target - v[idx].T @ w0, [0.0]])
    aw = a * w0
    delta = w0 * (a.T @ np.linalg.solve(aw @ a.T, r))
    return w0 + delta


def _joint_regressor(P, v, topo):
    nv = topo.num_vertices
    jr = np.zeros((5, nv))
    g = _grid(v, topo)
    # Column spacing, so rings average like their area rather than their (front-heavy) vertex density.
    th = topo.theta
    dth = 0.5 * ((np.roll(th, -1) - np.roll(th, 1)) % (2 * np.pi))
    # Root and neck: area-weighted averages of two horizontal rings of the neck, centred on its axis.
    for j, row in enumerate([topo.sections["neck"].stop - 1, topo.sections["chin"].start]):
        idx = row * _NU + np.arange(_NU)
        target = np.array([0.0, g[row, :, 1].mean(), _NECK_AXIS_Z])
        jr[j, idx] = _regressor_row(v, idx, dth, target)
    # Jaw: skin in front of the ears around the hinge height, both sides.
    grid = v[: topo.num_grid]
    d = np.hypot((grid[:, 1] - _JOINT_JAW[1]) / 0.012, (grid[:, 2] - _JOINT_JAW[2]) / 0.008)
    idx = np.flatnonzero((d < 1.0) & (np.abs(grid[:, 0]) > 0.045))
    jr[2, idx] = _regressor_row(v, idx, np.ones(len(idx)), _JOINT_JAW)
    for j, eye, sgn in ((3, topo.eye_left, 1.0), (4, topo.eye_right, -1.0)):
        c = np.array([sgn * P["eye_x"], P["eye_y"], P["eye_z"]])
        jr[j, eye] = _regressor_row(v, eye, np.ones(len(eye)), c)
    return jr


def _posedirs(P, v, weights, topo):
    """Small smooth pose correctives (V, 3, 36): jaw opening and neck rotations; none for the eyes."""
    nv = topo.num_vertices
    pd = np.zeros((nv, 3, 36))
    # Smooth outward directions (radial from inside the jaw / from the neck axis), not mesh normals,
    # which turn quickly at the folds of the lips and along the jaw line.
    n = v - np.array([0.0, -0.045, 0.0])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    n_neck = np.stack([v[:, 0], np.zeros(nv), v[:, 2] - _NECK_AXIS_Z], 1)
    n_neck /= np.maximum(np.linalg.norm(n_neck, axis=1, keepdims=True), 1e-9)
    w_glob = weights[:, 0]
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    # Jaw opening (pose feature 9 + 3*2 + 1 = R_jaw[2, 1] = sin angle): the skin under the chin
    # bulges, the cheeks beside the mouth corners draw in.
    sub = np.exp(-0.5 * ((x / 0.03) ** 2 + ((y + 0.088) / 0.012) ** 2 + ((z - 0.03) / 0.02) ** 2))
    cheek = _gauss((np.abs(x) - 0.036) / 0.011) * _gauss((y - P["mouth_y"] + 0.004) / 0.011) * _smoothstep(0.0, 0.03, z)
    pd[:, :, 16] = (0.006 * sub - 0.003 * cheek)[:, None] * n
    pd[:, :, 14] = -0.5 * pd[:, :, 16]  # R_jaw[1, 2] = -sin angle
    # Neck: nodding (R_neck[2, 1]) bulges the throat; turning (R_neck[0, 2]) twists the neck skin.
    neck = _smoothstep(-0.16, -0.125, y) * _smoothstep(-0.075, -0.095, y)
    front = _smoothstep(-0.02, 0.02, z)
    pd[:, :, 7] = 0.006 * (neck * front)[:, None] * n_neck
    twist = np.stack([v[:, 2] - _NECK_AXIS_Z, np.zeros(nv), -v[:, 0]], 1)
    pd[:, :, 2] = 0.05 * (4 * w_glob * (1 - w_glob))[:, None] * twist
    pd[topo.eye_left] = 0.0
    pd[topo.eye_right] = 0.0
    return pd


