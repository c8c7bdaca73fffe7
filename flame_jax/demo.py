"""A procedural demo head in FLAME's format (a stand-in for FLAME, not FLAME).

WIP
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

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


# =============================================================================
# Generator parameters (metres). Identity and expression blend shapes are
# finite differences of the generator with respect to these.
# =============================================================================

_DEFAULTS: dict[str, float] = dict(
    # --- head loft
    y_fs=-0.066,  # lowest face row (top of the chin arc)
    y_ft=0.060,  # highest face row (forehead, start of the dome)
    z_face=0.061,  # front of the base rings over the face
    z_center=-0.030,  # depth of the widest point of the rings (ear line)
    w_cranium=0.0775,
    w_temple=0.0745,
    w_cheek=0.0725,
    w_jaw=0.0600,
    w_neck=0.0520,
    z_back=-0.123,
    z_neck_back=-0.086,
    z_neck_front=0.027,
    chin_r=0.022,
    throat_r=0.012,
    head_top=0.128,
    z_pole=-0.030,
    # --- eyes
    eye_x=0.0305,
    eye_y=0.028,
    eye_z=0.032,
    eye_r=0.0120,
    lid_t=0.0016,
    canth_in=0.0150,  # distance from eye centre to the inner corner (x)
    canth_out=0.0150,  # distance from eye centre to the outer corner (x)
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
    # --- nose
    nasion_y=0.031,
    nose_tip_y=-0.011,
    nose_tip_h=0.019,
    nose_w=0.0165,
    nose_bridge_w=0.0062,
    subnasale_y=-0.026,
    # --- mouth
    mouth_y=-0.0465,
    mouth_w=0.0245,
    lip_up_h=0.0075,
    lip_lo_h=0.0095,
    lip_proj=0.0035,
    mouth_gap=0.0010,
    corner_dy_l=0.0,
    corner_dy_r=0.0,
    # --- chin, cheeks, ears
    chin_proj=0.004,
    chin_y=-0.079,
    cheekbone=0.005,
    ear_y=0.004,
    ear_z=-0.038,
    ear_h=0.030,
    ear_out=0.017,
)


# =============================================================================
# Topology: a (rows x columns) grid over a lofted base surface, a top pole, a
# bottom cap centre, then two eyeballs (left, then right, as in FLAME).
# =============================================================================

_NU = 64  # columns around the head (even: mirror symmetric, a column on the midline)
_N_NECK = 5
_N_CHIN = 9
_N_DOME = 12
_N_S0 = 1
_N_LL, _N_UL = 6, 6  # lower/upper lip rows (besides the margins)
_N_POCKET = 3  # rows inside the mouth / eye pockets
_N_S1 = 11
_N_EL, _N_EU = 4, 6  # lower/upper lid rows (besides the margins)
_N_S2 = 4
_EYE_RINGS, _EYE_SEGS = 10, 16


@dataclasses.dataclass(frozen=True)
class _Topology:
    theta: np.ndarray  # (NU,) column angles, 0 = front midline, + toward +x
    n_rows: int
    sections: dict  # name -> slice of rows
    faces: np.ndarray
    num_grid: int
    pole_top: int
    pole_bottom: int
    eye_left: np.ndarray
    eye_right: np.ndarray
    num_vertices: int
    sphere_dirs: np.ndarray  # (Ve, 3) unit directions of an eyeball's vertices


def _column_angles(n_half: int) -> np.ndarray:
    """Half-ring angles 0..pi, dense over the face, sparse at the back."""
    # Arc length of a reference ring (ellipse, half-width 0.073, front depth 0.091, back 0.093).
    th = np.linspace(0.0, np.pi, 4001)
    w, af, ab = 0.073, 0.091, 0.093
    x = w * np.sin(th)
    z = np.where(np.cos(th) >= 0, af, ab) * np.cos(th)
    s = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(z)))])
    spacing = np.interp(s, [0.0, 0.028, 0.07, 0.12, 0.16], [2.3, 2.3, 3.6, 12.0, 17.0])
    n = np.concatenate([[0.0], np.cumsum(np.diff(s) / (0.5 * (spacing[1:] + spacing[:-1])))])
    n *= n_half / n[-1]
    return np.interp(np.arange(n_half + 1), n, th)


def _grid_faces(n_rows: int, nu: int, theta: np.ndarray) -> np.ndarray:
    faces = []
    idx = np.arange(n_rows * nu).reshape(n_rows, nu)
    for k in range(n_rows - 1):
        for i in range(nu):
            j = (i + 1) % nu
            a, b, c, d = idx[k, i], idx[k, j], idx[k + 1, j], idx[k + 1, i]
            mid = math.atan2(math.sin(theta[i]) + math.sin(theta[j]), math.cos(theta[i]) + math.cos(theta[j]))
            if mid > 0:  # left side: diagonal a-c
                faces += [(a, b, c), (a, c, d)]
            else:  # right side: mirrored diagonal b-d
                faces += [(a, b, d), (b, c, d)]
    return np.asarray(faces, np.int64)


@functools.lru_cache(maxsize=None)
def _topology() -> _Topology:
    half = _column_angles(_NU // 2)
    theta = np.concatenate([-half[::-1][:-1], half[:-1]])  # -pi .. (pi - step); index NU//2 is the front
    counts = [
        ("neck", _N_NECK),
        ("chin", _N_CHIN),
        ("s0", _N_S0),
        ("mouth", 1 + _N_LL + 1 + _N_POCKET + 1 + _N_UL),
        ("s1", _N_S1),
        ("eye", 1 + _N_EL + 1 + _N_POCKET + 1 + _N_EU),
        ("s2", _N_S2 + 1),
        ("dome", _N_DOME),
    ]
    sections, start = {}, 0
    for name, n in counts:
        sections[name] = slice(start, start + n)
        start += n
    n_rows = start
    faces = [_grid_faces(n_rows, _NU, theta)]
    num_grid = n_rows * _NU
    pole_top, pole_bottom = num_grid, num_grid + 1
    top_ring = np.arange((n_rows - 1) * _NU, n_rows * _NU)
    bottom_ring = np.arange(_NU)
    faces.append(np.stack([top_ring, np.roll(top_ring, -1), np.full(_NU, pole_top)], 1))
    faces.append(np.stack([np.roll(bottom_ring, -1), bottom_ring, np.full(_NU, pole_bottom)], 1))
    # Eyeball: UV sphere whose poles lie on the gaze axis (+z = front pole = pupil centre).
    pol = np.linspace(0, np.pi, _EYE_RINGS + 2)[1:-1]
    az = np.linspace(0, 2 * np.pi, _EYE_SEGS, endpoint=False)
    p, a = np.meshgrid(pol, az, indexing="ij")
    dirs = np.stack([np.sin(p) * np.cos(a), np.sin(p) * np.sin(a), np.cos(p)], -1).reshape(-1, 3)
    dirs = np.concatenate([[[0.0, 0.0, 1.0]], dirs, [[0.0, 0.0, -1.0]]])
    ve = len(dirs)
    ring = lambda r: 1 + r * _EYE_SEGS + np.arange(_EYE_SEGS)  # noqa: E731
    sf = []
    r0 = ring(0)
    sf.append(np.stack([np.zeros(_EYE_SEGS, int), r0, np.roll(r0, -1)], 1))
    for r in range(_EYE_RINGS - 1):
        a0, a1 = ring(r), ring(r + 1)
        sf.append(np.stack([a0, a1, np.roll(a1, -1)], 1))
        sf.append(np.stack([a0, np.roll(a1, -1), np.roll(a0, -1)], 1))
    rl = ring(_EYE_RINGS - 1)
    sf.append(np.stack([rl, np.full(_EYE_SEGS, ve - 1), np.roll(rl, -1)], 1))
    sf = np.concatenate(sf)
    # Orientation check against the sphere's outward direction; flip if needed.
    tri = dirs[sf]
    nrm = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    if np.sum(np.einsum("fc,fc->f", nrm, tri.mean(1))) < 0:
        sf = sf[:, ::-1]
    eye_left = num_grid + 2 + np.arange(ve)
    eye_right = eye_left + ve
    faces += [sf + eye_left[0], sf + eye_right[0]]
    return _Topology(
        theta=theta,
        n_rows=n_rows,
        sections=sections,
        faces=np.concatenate(faces).astype(np.int64),
        num_grid=num_grid,
        pole_top=pole_top,
        pole_bottom=pole_bottom,
        eye_left=eye_left,
        eye_right=eye_right,
        num_vertices=int(eye_right[-1] + 1),
        sphere_dirs=dirs,
    )


# =============================================================================
# Base loft: rings between a front point F and a back point K
# =============================================================================


def _profile(P):
    """Ring parameters as functions of the row coordinate eta (tables for np.interp).

    eta equals the height y over the face; below (chin arc, neck) and above (dome)
    it continues as arc length along the front profile.
    """
    y_fs, y_ft = P["y_fs"], P["y_ft"]
    rc, rt = P["chin_r"], P["throat_r"]
    z_nf = P["z_neck_front"]
    z_ff = P["z_face"]
    # Chin section: convex arc (centre (y_fs, z_ff - rc)), straight submental, concave throat arc.
    l_sub = max(z_ff - rc - rt - z_nf, 0.0)
    l_c, l_t = rc * np.pi / 2, rt * np.pi / 2
    l_chin = l_c + l_sub + l_t
    y_throat = y_fs - rc - rt  # where the neck front becomes vertical
    l_neck = y_throat - (-0.165)
    eta_chin0 = y_fs - l_chin
    eta_bot = eta_chin0 - l_neck
    # Dome: quarter ellipse to the pole, parameterised by angle psi; eta = y_ft + psi * l_dome / (pi/2).
    l_dome = 0.11

    def back_z(y):
        return np.interp(
            y,
            [-0.20, -0.10, -0.066, -0.03, 0.0, 0.03, 0.06],
            [P["z_neck_back"], P["z_neck_back"], P["z_neck_back"] - 0.004, -0.106, -0.119, P["z_back"], P["z_back"] + 0.006],
        )

    def width(y):
        return np.interp(
            y,
            [-0.20, -0.105, -0.07, -0.04, 0.0, 0.03, 0.06],
            [P["w_neck"], P["w_neck"], P["w_jaw"], 0.5 * (P["w_jaw"] + P["w_cheek"]) + 0.002, P["w_cheek"], P["w_temple"], P["w_cranium"]],
        )

    eta = np.linspace(eta_bot, y_ft + l_dome, 1601)
    yF = np.empty_like(eta)
    zF = np.empty_like(eta)
    yK = np.empty_like(eta)
    zK = np.empty_like(eta)
    W = np.empty_like(eta)
    # neck
    m = eta < eta_chin0
    yF[m] = y_throat - (eta_chin0 - eta[m])
    zF[m] = z_nf
    yK[m] = yF[m]
    # chin: s = arc length from the throat upward
    m = (eta >= eta_chin0) & (eta <= y_fs)
    s = eta[m] - eta_chin0
    # concave throat arc: centre (y_throat, z_nf + rt), from pointing +y to pointing +z
    a_t = np.clip(s / rt, 0, np.pi / 2)
    y1 = y_throat + rt * np.sin(a_t)
    z1 = z_nf + rt - rt * np.cos(a_t)
    s2 = np.clip(s - l_t, 0, l_sub)
    a_c = np.clip((s - l_t - l_sub) / rc, 0, np.pi / 2)
    # convex chin arc: centre (y_fs, z_ff - rc)... starts at (y_fs - rc, z_ff - rc) heading +z
    y3 = np.where(s > l_t + l_sub, (y_fs - rc) + rc * (1 - np.cos(a_c)), y1)
    z3 = np.where(s > l_t + l_sub, (z_ff - rc) + rc * np.sin(a_c), z1 + s2)
    yF[m] = y3
    zF[m] = z3
    yK[m] = y_throat + (y_fs - y_throat) * (s / l_chin)
    # face
    m = (eta > y_fs) & (eta <= y_ft)
    yF[m] = eta[m]
    zF[m] = z_ff
    yK[m] = eta[m]
    zK_face = None  # noqa: F841
    # dome
    m = eta > y_ft
    psi = np.clip((eta[m] - y_ft) / l_dome * (np.pi / 2), 0, np.pi / 2)
    yF[m] = y_ft + (P["head_top"] - y_ft) * np.sin(psi)
    zF[m] = P["z_pole"] + (z_ff - P["z_pole"]) * np.cos(psi)
    yK[m] = yF[m]
    zK_top = back_z(y_ft)
    zK[:] = back_z(yK)
    zK[m] = P["z_pole"] + (zK_top - P["z_pole"]) * np.cos(psi)
    W[:] = width(yK)
    W[m] = width(y_ft) * np.cos(psi) ** 0.8
    zc = np.full_like(eta, P["z_center"])
    zc[m] = P["z_pole"] + (P["z_center"] - P["z_pole"]) * np.cos(psi)
    return dict(eta=eta, yF=yF, zF=zF, yK=yK, zK=zK, W=W, zc=zc, eta_bot=eta_bot, eta_top=eta[-1], eta_chin0=eta_chin0)


def _ring_points(prof, theta, eta):
    """Base points for arrays theta, eta (broadcast)."""
    e = prof["eta"]
    yF = np.interp(eta, e, prof["yF"])
    zF = np.interp(eta, e, prof["zF"])
    yK = np.interp(eta, e, prof["yK"])
    zK = np.interp(eta, e, prof["zK"])
    W = np.interp(eta, e, prof["W"])
    zc = np.interp(eta, e, prof["zc"])
    beta = np.clip((zc - zK) / np.maximum(zF - zK, 1e-6), 0.15, 0.85)
    s, c = np.sin(theta), np.cos(theta)
    pf = 2.0
    x = W * np.sign(s) * np.abs(s) ** (2.0 / pf)
    cc = np.abs(c) ** (2.0 / pf)
    d = np.where(c >= 0, beta + (1 - beta) * cc, beta - beta * cc)
    y = yK + (yF - yK) * d
    z = zK + (zF - zK) * d
    return np.stack(np.broadcast_arrays(x, y, z), -1)


def _base(prof, theta, eta):
    p = _ring_points(prof, theta, eta)
    dt, de = 1e-4, 1e-5
    pt = _ring_points(prof, theta + dt, eta) - _ring_points(prof, theta - dt, eta)
    pe = _ring_points(prof, theta, eta + de) - _ring_points(prof, theta, eta - de)
    n = np.cross(pt, pe)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return p, n


# =============================================================================
# Rows: per-vertex row coordinate eta (= height y over the face), with the
# mouth and eye "pockets" (the lips and eyelids meet along rows whose columns
# fold into the head behind them).
# =============================================================================


def _mouth_curves(P, x):
    """Stomion line and inner-lip margins at frontal x (both sides)."""
    xc = P["mouth_w"]
    u = np.abs(x) / xc
    side_dy = np.where(x >= 0, P["corner_dy_l"], P["corner_dy_r"])
    y_s = P["mouth_y"] + (0.0006 + side_dy) * np.clip(u, 0, 1.2) ** 2
    g = P["mouth_gap"] * np.clip(1 - u * u, 0, None) ** 0.7 + 0.0003
    return y_s, y_s + 0.5 * g, y_s - 0.5 * g


def _eye_curves(P, x):
    """Eyelid margins (upper, lower) at frontal x, and the fissure coordinate xi (0 inner, 1 outer)."""
    ax = np.abs(x)
    left = x >= 0
    xi = (ax - (P["eye_x"] - P["canth_in"])) / (P["canth_in"] + P["canth_out"])
    xc = np.clip(xi, 0.0, 1.0)
    y_axis = P["eye_y"] + P["canth_in_dy"] + (P["canth_out_dy"] - P["canth_in_dy"]) * xc
    f_u = np.sin(np.pi * xc**0.8) ** 0.85
    f_l = np.sin(np.pi * xc**1.27) ** 0.85
    raise_lo = np.where(left, P["raise_lo_l"], P["raise_lo_r"])
    opening = np.where(left, P["open_l"], P["open_r"])
    y_lo = y_axis - P["lid_lo_h"] * f_l * (1 - raise_lo) - 0.0002
    y_up_open = y_axis + P["lid_up_h"] * f_u + 0.0002
    y_up = y_lo + 0.0004 + (y_up_open - y_lo - 0.0004) * opening
    return y_up, y_lo, xi


def _span_rows(nominal, a1, a2, y_lo, y_up, n_lo, n_up, weight):
    """Rows of an anchored span: a1, n_lo rows, lower margin, pockets, upper margin, n_up rows (a2 excluded)."""
    u_lo = np.arange(1, n_lo + 1) / (n_lo + 1)
    u_up = np.arange(1, n_up + 1) / (n_up + 1)
    u_p = np.arange(1, _N_POCKET + 1) / (_N_POCKET + 1)
    gamma = 1.3
    rows = [np.broadcast_to(a1, y_lo.shape)]
    rows += [a1 + (y_lo - a1) * (1 - (1 - u) ** gamma) for u in u_lo]
    rows += [y_lo]
    rows += [y_lo + (y_up - y_lo) * u for u in u_p]
    rows += [y_up]
    rows += [y_up + (a2 - y_up) * u**gamma for u in u_up]
    anchored = np.stack(rows, 0)
    return nominal[:, None] * (1 - weight) + anchored * weight


def _anchors(P):
    return dict(
        m_a1=P["y_fs"] + 0.0025,
        m_a2=P["subnasale_y"] + 0.0012,
        e_a1=P["eye_y"] - 0.017,
        e_a2=P["eye_y"] + 0.023,
    )


def _row_eta(P, prof, topo):
    """(n_rows, NU) row coordinate per grid vertex plus span metadata."""
    th = topo.theta
    sec = topo.sections
    A = _anchors(P)
    eta = np.zeros((topo.n_rows, _NU))
    front = np.cos(th) > 0
    # Frontal x of each column at the mouth and eye heights (columns are nearly vertical there).
    def col_x(y):
        w = np.interp(y, prof["eta"], prof["W"])
        return np.where(front, w * np.sin(th), np.sign(np.sin(th)) * 1.0)

    n = sec["neck"].stop - sec["neck"].start
    eta[sec["neck"]] = np.linspace(prof["eta_bot"], prof["eta_chin0"], n, endpoint=False)[:, None]
    n = sec["chin"].stop - sec["chin"].start
    eta[sec["chin"]] = np.linspace(prof["eta_chin0"], P["y_fs"], n, endpoint=False)[:, None]
    eta[sec["s0"]] = np.linspace(P["y_fs"], A["m_a1"], _N_S0, endpoint=False)[:, None]
    # mouth span
    xm = col_x(P["mouth_y"])
    _, m_up, m_lo = _mouth_curves(P, xm)
    wm = 1 - _smoothstep(P["mouth_w"] + 0.003, P["mouth_w"] + 0.016, np.abs(xm))
    n = sec["mouth"].stop - sec["mouth"].start
    nominal = np.linspace(A["m_a1"], A["m_a2"], n, endpoint=False)
    eta[sec["mouth"]] = _span_rows(nominal, A["m_a1"], A["m_a2"], m_lo, m_up, _N_LL, _N_UL, wm)
    eta[sec["s1"]] = np.linspace(A["m_a2"], A["e_a1"], _N_S1, endpoint=False)[:, None]
    # eye span
    xe = col_x(P["eye_y"])
    e_up, e_lo, _ = _eye_curves(P, xe)
    ax = np.abs(xe)
    we = _smoothstep(P["eye_x"] - P["canth_in"] - 0.009, P["eye_x"] - P["canth_in"] - 0.001, ax) * (
        1 - _smoothstep(P["eye_x"] + P["canth_out"] + 0.002, P["eye_x"] + P["canth_out"] + 0.016, ax)
    )
    n = sec["eye"].stop - sec["eye"].start
    nominal = np.linspace(A["e_a1"], A["e_a2"], n, endpoint=False)
    eta[sec["eye"]] = _span_rows(nominal, A["e_a1"], A["e_a2"], e_lo, e_up, _N_EL, _N_EU, we)
    eta[sec["s2"]] = np.linspace(A["e_a2"], P["y_ft"], _N_S2 + 1)[:, None]
    n = sec["dome"].stop - sec["dome"].start
    u = np.arange(1, n + 1) / (n + 1)
    eta[sec["dome"]] = (P["y_ft"] + (prof["eta_top"] - P["y_ft"]) * u**0.85)[:, None]
    meta = dict(xm=xm, wm=wm, xe=xe, we=we, m_up=m_up, m_lo=m_lo, e_up=e_up, e_lo=e_lo)
    return eta, meta


# Row indices (within the grid) of the special rows.
def _special_rows(topo):
    m0 = topo.sections["mouth"].start
    e0 = topo.sections["eye"].start
    m_lo = m0 + 1 + _N_LL
    e_lo = e0 + 1 + _N_EL
    return dict(
        mouth_lo=m_lo,
        mouth_pocket=list(range(m_lo + 1, m_lo + 1 + _N_POCKET)),
        mouth_up=m_lo + 1 + _N_POCKET,
        eye_lo=e_lo,
        eye_pocket=list(range(e_lo + 1, e_lo + 1 + _N_POCKET)),
        eye_up=e_lo + 1 + _N_POCKET,
    )


# =============================================================================
# Surface detail: offsets along the ray direction (+z over the face)
# =============================================================================


def _features(P, x, y, z, n, meta_v):
    """Offset h of the skin from the base point (x, y, z) with base normal n."""
    ax = np.abs(x)
    front = _smoothstep(0.15, 0.5, n[..., 2])
    h = np.zeros_like(x)
    # Brow ridge and glabella.
    for sgn, raise_key in ((1.0, "brow_raise_l"), (-1.0, "brow_raise_r")):
        xb = sgn * x
        yb = P["eye_y"] + P["brow_dy"] + 0.004 * _bump((xb - 0.034) / 0.03) + P[raise_key] * _bump((xb - 0.03) / 0.035)
        yb = yb - P["brow_frown"] * _bump((xb - 0.012) / 0.02)
        h += P["brow_prom"] * _gauss((y - yb) / 0.0075) * (1 - _smoothstep(0.05, 0.068, xb)) * (xb > -0.004)
    h += 0.002 * _gauss(x / 0.012) * _gauss((y - P["eye_y"] - 0.016) / 0.009)
    # Nasion.
    h -= 0.004 * _gauss(x / 0.013) * _gauss((y - P["nasion_y"]) / 0.008)
    # Eye sockets.
    for sgn in (1.0, -1.0):
        dx = x - sgn * P["eye_x"]
        dy = y - P["eye_y"] - 0.001
        r2 = (dx / 0.0195) ** 2 + (dy / 0.0145) ** 2
        h -= P["socket"] * np.exp(-(r2**1.6))
    # Cheekbones and cheeks.
    h += P["cheekbone"] * _gauss((ax - 0.047) / 0.013) * _gauss((y - 0.004) / 0.011)
    # Nose.
    ny, ty, sy = P["nasion_y"], P["nose_tip_y"], P["subnasale_y"]
    th_ = P["nose_tip_h"]
    l1 = th_ * np.clip((ny - y) / (ny - ty), -1, None) ** 1.0
    l2 = th_ * (y - sy) / (ty - sy)
    prof = _smin(l1, l2, 0.006)
    prof = _smax(prof, 0.0, 0.002) * (y > sy - 0.01) * (y < ny + 0.02)
    wx = P["nose_bridge_w"] + (0.0085 - P["nose_bridge_w"]) * np.clip((ny - y) / (ny - ty), 0, 1) ** 1.5
    h += prof * np.exp(-np.abs(x / wx) ** 2.4)
    h += 0.0025 * _gauss(x / 0.007) * _gauss((y - ty) / 0.005)
    h += 0.0075 * np.exp(-(((ax - P["nose_w"] + 0.005) / 0.0058) ** 2) - ((y - sy - 0.006) / 0.0068) ** 2)
    # Chin.
    h += P["chin_proj"] * _gauss(x / 0.017) * _gauss((y - P["chin_y"]) / 0.011)
    # Lips (in lip-local coordinates: distance from the inner margins).
    xc = P["mouth_w"]
    u = ax / xc
    lipw = np.clip(1 - u**2, 0, None) ** 0.5
    du = np.maximum(y - meta_v["m_up"], 0.0)
    dl = np.maximum(meta_v["m_lo"] - y, 0.0)
    upper = y >= meta_v["m_up"] - 1e-9
    lower = y <= meta_v["m_lo"] + 1e-9
    lu = P["lip_up_h"]
    q_u = (P["lip_proj"] + 0.002) * _bump((du - 0.45 * lu) / (0.75 * lu)) - 0.0028 * np.exp(-du / 0.0012)
    q_u += 0.004 * np.clip(1 - du / 0.02, 0, 1)  # upper lip ahead of the face plane
    ll = P["lip_lo_h"]
    q_l = (P["lip_proj"] + 0.002) * _bump((dl - 0.45 * ll) / (0.8 * ll)) - 0.0028 * np.exp(-dl / 0.0012)
    q_l -= 0.0025 * _gauss((dl - 0.017) / 0.004)
    h += np.where(upper, q_u, 0.0) * lipw * front + np.where(lower, q_l, 0.0) * lipw * front
    h -= 0.0018 * _gauss((ax - xc) / 0.003) * _gauss((y - P["mouth_y"]) / 0.003)
    # Ears (on the sides).
    for sgn in (1.0, -1.0):
        side = _smoothstep(0.5, 0.8, sgn * n[..., 0])
        r2 = ((y - P["ear_y"]) / P["ear_h"]) ** 2 + ((z - P["ear_z"]) / 0.017) ** 2
        ear = P["ear_out"] * np.clip(1 - r2, 0, None) ** 0.6
        ear -= 0.007 * np.exp(-(((y - P["ear_y"] + 0.004) / 0.009) ** 2) - ((z - P["ear_z"] - 0.003) / 0.006) ** 2)
        h += side * np.maximum(ear, 0.0)
    return h


def _lids(P, x, y, z_skin):
    """Smoothly merge the skin with the eyelid shells (spheres around the eyeballs)."""
    out = z_skin
    rs = P["eye_r"] + P["lid_t"]
    for sgn in (1.0, -1.0):
        dx = x - sgn * P["eye_x"]
        dy = y - P["eye_y"]
        q = rs * rs - dx * dx - dy * dy
        zs = np.where(q > 0, P["eye_z"] + np.sqrt(np.maximum(q, 0)), P["eye_z"] - 0.05)
        out = _smax(out, zs, 0.003)
    return out


def _skin(P, topo):
    prof = _profile(P)
    eta, meta = _row_eta(P, prof, topo)
    th = np.broadcast_to(topo.theta, eta.shape)
    base, nb = _base(prof, th, eta)
    front_w = (1 - _smoothstep(0.78, 1.25, np.abs(th))) * _smoothstep(P["y_fs"] - 0.012, P["y_fs"] + 0.004, eta)
    front_w = front_w * (1 - _smoothstep(0.052, 0.078, eta))
    d = nb * (1 - front_w[..., None]) + np.array([0.0, 0.0, 1.0]) * front_w[..., None]
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    x, y, z = base[..., 0], base[..., 1], base[..., 2]
    _, m_up, m_lo = _mouth_curves(P, x)
    h = _features(P, x, y, z, nb, dict(m_up=m_up, m_lo=m_lo))
    zf = z + h
    zl = _lids(P, x, y, zf)
    h = h + (zl - zf) * front_w
    v = base + h[..., None] * d
    # Pockets: rows between the margins fold into the head.
    sr = _special_rows(topo)
    t = np.arange(1, _N_POCKET + 1) / (_N_POCKET + 1)
    b = np.sin(np.pi * t) ** 0.5
    xm = meta["xm"]
    dm = 0.018 * np.clip(1 - (xm / P["mouth_w"]) ** 2, 0, None) ** 1.5 * meta["wm"]
    zu, zl_ = v[sr["mouth_up"], :, 2], v[sr["mouth_lo"], :, 2]
    for j, r in enumerate(sr["mouth_pocket"]):
        v[r, :, 2] = zl_ + (zu - zl_) * t[j] - dm * b[j]
    _, _, xi = _eye_curves(P, meta["xe"])
    o = np.sin(np.pi * np.clip(xi, 0, 1)) ** 0.5 * meta["we"]
    zu, zl_ = v[sr["eye_up"], :, 2], v[sr["eye_lo"], :, 2]
    for j, r in enumerate(sr["eye_pocket"]):
        v[r, :, 2] = zl_ + (zu - zl_) * t[j] - (P["lid_t"] + 0.006) * o * b[j]
    verts = v.reshape(-1, 3)
    top = _ring_points(prof, 0.0, prof["eta_top"])
    bottom = np.array([0.0, -0.165, 0.5 * (P["z_neck_front"] + P["z_neck_back"])])
    return np.concatenate([verts, top[None], bottom[None]]), dict(eta=eta, meta=meta, base=base, nb=nb)


def _eyeballs(P, topo):
    dirs = topo.sphere_dirs
    cornea = 0.0009 * np.clip((dirs[:, 2] - 0.82) / 0.18, 0, 1) ** 1.5
    r = P["eye_r"] + cornea
    out = []
    for sgn in (1.0, -1.0):
        c = np.array([sgn * P["eye_x"], P["eye_y"], P["eye_z"]])
        out.append(c + r[:, None] * dirs)
    return np.concatenate(out)


def _vertices(P):
    topo = _topology()
    skin, aux = _skin(P, topo)
    return np.concatenate([skin, _eyeballs(P, topo)]), aux
