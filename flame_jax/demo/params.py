"""Generator parameters of the demo head (named proportions, metres) and small numeric helpers."""

from __future__ import annotations

import numpy as np


DEMO_NUM_SHAPE = 100
DEMO_NUM_EXPRESSION = 50

# =============================================================================
# Small numeric helpers
# =============================================================================


def _smoothstep(e0, e1, x):
    t = np.clip((np.asarray(x, np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _smax(a, b, k):
    """Polynomial smooth maximum (C1), blend width k."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.maximum(a, b) + h * h * k * 0.25


def _smin(a, b, k):
    return -_smax(-a, -b, k)


def _gauss(u):
    return np.exp(-0.5 * u * u)


def _bump(u):
    """Compact smooth bump: (1 - u^2)^2 for |u| < 1, else 0."""
    q = np.clip(1.0 - u * u, 0.0, None)
    return q * q


def _side(x, soft=0.004):
    """Weight of the subject's left side (+x), 0.5 on the midline."""
    return _smoothstep(-soft, soft, x)


# =============================================================================
# Generator parameters (metres). Identity and expression blend shapes are
# finite differences of the generator with respect to these.
# =============================================================================

_DEFAULTS: dict[str, float] = dict(
    # --- head loft
    y_fs=-0.070,  # lowest face row (top of the chin arc)
    y_ft=0.060,  # highest face row (forehead, start of the dome)
    z_face=0.061,  # front of the base rings over the face
    z_center=-0.030,  # depth of the widest point of the rings (ear line)
    w_cranium=0.0775,
    w_temple=0.0745,
    w_cheek=0.0725,
    w_jaw=0.0545,
    w_neck=0.0480,
    z_back=-0.123,
    z_neck_back=-0.086,
    z_neck_front=0.027,
    chin_r=0.018,
    throat_r=0.011,
    sub_tilt=0.06,
    head_top=0.128,
    z_pole=-0.030,
    # --- eyes (eye_x: half the distance between the eyeball centres)
    eye_x=0.0305,
    eye_y=0.028,
    eye_z=0.032,
    eye_r=0.0120,
    lid_t=0.0016,
    canth_in=0.0150,  # eye centre to inner corner (x)
    canth_out=0.0150,  # eye centre to outer corner (x)
    canth_in_dy=-0.0012,
    canth_out_dy=0.0006,
    lid_up_h=0.0060,
    lid_lo_h=0.0040,
    open_l=1.0,
    open_r=1.0,
    raise_lo_l=0.0,
    raise_lo_r=0.0,
    socket=0.020,
    # --- brows
    brow_dy=0.017,
    brow_prom=0.005,
    brow_raise_l=0.0,
    brow_raise_r=0.0,
    brow_frown=0.0,
    brow_inner=0.0,
    # --- nose
    nasion_y=0.032,
    nose_tip_y=-0.0065,
    nose_tip_h=0.017,
    nose_w=0.0165,
    nose_bridge_w=0.0062,
    subnasale_y=-0.0205,
    nose_wrinkle=0.0,
    # --- mouth
    mouth_y=-0.0425,
    mouth_w=0.0245,
    mouth_dx=0.0,
    lip_up_h=0.0082,
    lip_lo_h=0.0100,
    lip_proj=0.0035,
    mouth_gap=0.0010,
    lip_up_raise=0.0,
    lip_lo_drop=0.0,
    corner_dy_l=0.0,
    corner_dy_r=0.0,
    lip_roll=0.0,
    dimple=0.0,
    # --- chin, cheeks, ears
    chin_proj=0.004,
    chin_y=-0.079,
    cheekbone=0.005,
    cheek_l=0.0,
    cheek_r=0.0,
    ear_y=0.004,
    ear_z=-0.038,
    ear_h=0.030,
    ear_out=0.020,
)
_REF = _DEFAULTS

