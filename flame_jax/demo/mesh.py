"""The demo head's mesh: grid topology, the base loft, feature curves, row placement and relief."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from flame_jax.demo.params import _REF, _bump, _gauss, _side, _smax, _smin, _smoothstep


# =============================================================================
# Topology: a (rows x columns) grid lofted from the neck to the top of the head,
# a top pole, a cap centre under the neck, then two eyeballs (left, then right).
# =============================================================================

_NU = 72  # columns around the head (even, mirror symmetric, one on the midline)
_N_NECK, _N_CHIN, _N_S0 = 4, 8, 1
_N_LL, _N_UL = 6, 6  # lower / upper lip rows besides the inner margins
_N_POCKET = 3  # rows folded into the mouth and behind the eyelids
_N_S1A, _N_S1B = 3, 7  # subnasale -> nose tip, nose tip -> below the eyes
_N_EL, _N_EU = 4, 6  # lower / upper lid rows besides the margins
_N_S2 = 4
_N_DOME = 11
_EYE_RINGS, _EYE_SEGS = 10, 16
_SECTIONS = (
    ("neck", _N_NECK),
    ("chin", _N_CHIN),
    ("s0", _N_S0),
    ("mouth", 3 + _N_LL + _N_POCKET + _N_UL),
    ("s1a", _N_S1A),
    ("s1b", _N_S1B),
    ("eye", 3 + _N_EL + _N_POCKET + _N_EU),
    ("s2", _N_S2 + 1),
    ("dome", _N_DOME),
)


@dataclasses.dataclass(frozen=True)
class _Topology:
    theta: np.ndarray  # (NU,) column angles: 0 = front midline, increasing toward +x
    n_rows: int
    sections: dict
    rows: dict  # special row indices
    faces: np.ndarray
    num_grid_faces: int
    num_grid: int
    pole_top: int
    pole_bottom: int
    eye_left: np.ndarray
    eye_right: np.ndarray
    num_vertices: int
    sphere_dirs: np.ndarray


def _column_angles(n_half: int) -> np.ndarray:
    """Half-ring angles 0..pi: dense over the face, sparse at the back."""
    th = np.linspace(0.0, np.pi, 4001)
    x = 0.073 * np.sin(th)
    z = np.where(np.cos(th) >= 0, 0.091, 0.093) * np.cos(th)
    s = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(z)))])
    spacing = np.interp(s, [0.0, 0.025, 0.065, 0.10, 0.13, 0.19, 0.23], [2.7, 2.7, 3.6, 5.5, 8.0, 8.0, 18.0])
    n = np.concatenate([[0.0], np.cumsum(np.diff(s) / (0.5 * (spacing[1:] + spacing[:-1])))])
    n *= n_half / n[-1]
    return np.interp(np.arange(n_half + 1), n, th)


@functools.lru_cache(maxsize=None)
def _topology() -> _Topology:
    half = _column_angles(_NU // 2)
    theta = np.concatenate([-half[::-1][:-1], half[:-1]])  # -pi .. pi-step; index NU//2 is the front
    sections, start = {}, 0
    for name, n in _SECTIONS:
        sections[name] = slice(start, start + n)
        start += n
    n_rows = start
    m_lo = sections["mouth"].start + 1 + _N_LL
    e_lo = sections["eye"].start + 1 + _N_EL
    rows = dict(
        mouth_lo=m_lo,
        mouth_pocket=np.arange(m_lo + 1, m_lo + 1 + _N_POCKET),
        mouth_up=m_lo + 1 + _N_POCKET,
        eye_lo=e_lo,
        eye_pocket=np.arange(e_lo + 1, e_lo + 1 + _N_POCKET),
        eye_up=e_lo + 1 + _N_POCKET,
    )
    # Grid quads: two triangles each, mirror-symmetric diagonals; the first triangle of
    # quad (k, i) always starts with the row-k edge (k, i) -> (k, i + 1).
    k, i = np.meshgrid(np.arange(n_rows - 1), np.arange(_NU), indexing="ij")
    j = (i + 1) % _NU
    a, b, c, d = k * _NU + i, k * _NU + j, (k + 1) * _NU + j, (k + 1) * _NU + i
    mid = np.arctan2(np.sin(theta[i]) + np.sin(theta[j]), np.cos(theta[i]) + np.cos(theta[j]))
    left = mid > 0
    t1 = np.where(left[..., None], np.stack([a, b, c], -1), np.stack([a, b, d], -1))
    t2 = np.where(left[..., None], np.stack([a, c, d], -1), np.stack([b, c, d], -1))
    grid_faces = np.stack([t1, t2], 2).reshape(-1, 3)
    num_grid = n_rows * _NU
    pole_top, pole_bottom = num_grid, num_grid + 1
    top_ring = np.arange((n_rows - 1) * _NU, n_rows * _NU)
    bottom_ring = np.arange(_NU)
    faces = [
        grid_faces,
        np.stack([top_ring, np.roll(top_ring, -1), np.full(_NU, pole_top)], 1),
        np.stack([np.roll(bottom_ring, -1), bottom_ring, np.full(_NU, pole_bottom)], 1),
    ]
    # Eyeball: UV sphere with its poles on the gaze axis (vertex 0 = pupil centre, +z).
    pol = np.linspace(0, np.pi, _EYE_RINGS + 2)[1:-1]
    az = np.linspace(0, 2 * np.pi, _EYE_SEGS, endpoint=False)
    p, q = np.meshgrid(pol, az, indexing="ij")
    dirs = np.stack([np.sin(p) * np.cos(q), np.sin(p) * np.sin(q), np.cos(p)], -1).reshape(-1, 3)
    dirs = np.concatenate([[[0.0, 0.0, 1.0]], dirs, [[0.0, 0.0, -1.0]]])
    ve = len(dirs)
    ring = lambda r: 1 + r * _EYE_SEGS + np.arange(_EYE_SEGS)  # noqa: E731
    sf = [np.stack([np.zeros(_EYE_SEGS, np.int64), ring(0), np.roll(ring(0), -1)], 1)]
    for r in range(_EYE_RINGS - 1):
        a0, a1 = ring(r), ring(r + 1)
        sf += [np.stack([a0, a1, np.roll(a1, -1)], 1), np.stack([a0, np.roll(a1, -1), np.roll(a0, -1)], 1)]
    rl = ring(_EYE_RINGS - 1)
    sf.append(np.stack([rl, np.full(_EYE_SEGS, ve - 1), np.roll(rl, -1)], 1))
    sf = np.concatenate(sf)
    tri = dirs[sf]
    if np.sum(np.einsum("fc,fc->f", np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), tri.mean(1))) < 0:
        sf = sf[:, ::-1]
    eye_left = num_grid + 2 + np.arange(ve)
    eye_right = eye_left + ve
    faces += [sf + eye_left[0], sf + eye_right[0]]
    return _Topology(
        theta=theta,
        n_rows=n_rows,
        sections=sections,
        rows=rows,
        faces=np.concatenate(faces).astype(np.int64),
        num_grid_faces=len(grid_faces),
        num_grid=num_grid,
        pole_top=pole_top,
        pole_bottom=pole_bottom,
        eye_left=eye_left,
        eye_right=eye_right,
        num_vertices=int(eye_right[-1] + 1),
        sphere_dirs=dirs,
    )


@functools.lru_cache(maxsize=1)
def _ref_profile():
    return _profile(_REF)


def _row_section_weights(topo):
    """Per-row weights of the lateral warps around the eyes and the mouth."""
    n = topo.n_rows
    we, wm = np.zeros(n), np.zeros(n)
    s = topo.sections
    we[s["eye"]] = 1.0
    we[s["s2"]] = np.linspace(1.0, 0.0, s["s2"].stop - s["s2"].start)
    we[s["s1b"]] = np.linspace(0.0, 1.0, s["s1b"].stop - s["s1b"].start + 1)[1:]
    wm[s["mouth"]] = 1.0
    wm[s["s1a"]] = np.linspace(1.0, 0.0, s["s1a"].stop - s["s1a"].start + 1)[1:]
    wm[s["s0"]] = 0.6
    wm[s["chin"]] = np.linspace(0.0, 0.3, s["chin"].stop - s["chin"].start)
    return we, wm


# =============================================================================
# Base loft: each row is a ring between a front point F and a back point K
# (half-ellipses of half-width W, widest at depth zc); the rows' coordinate eta
# equals the height y over the face and continues as arc length along the front
# profile below (chin, throat, neck) and above (forehead, dome).
# =============================================================================


def _profile(P):
    """Ring parameters as functions of the row coordinate eta (tables for np.interp)."""
    y_fs, y_ft = P["y_fs"], P["y_ft"]
    rc, rt, tilt = P["chin_r"], P["throat_r"], P["sub_tilt"]
    z_nf = P["z_neck_front"]
    z_ff = P["z_face"]
    # Chin section, traced downward from the face: a convex arc under the chin (turning by
    # 90 deg + tilt), the submental line rising toward the throat, a concave arc into the neck.
    l_sub = max((z_ff - z_nf - (rc + rt) * (1 + np.sin(tilt))) / np.cos(tilt), 0.002)
    turn = np.pi / 2 + tilt
    l_c, l_t = rc * turn, rt * turn
    l_chin = l_c + l_sub + l_t
    sd = np.linspace(0.0, l_chin, 801)
    curv = np.where(sd < l_c, 1.0 / rc, np.where(sd < l_c + l_sub, 0.0, -1.0 / rt))
    beta = np.concatenate([[0.0], np.cumsum(0.5 * (curv[1:] + curv[:-1]) * np.diff(sd))])
    dy, dz = -np.cos(beta), -np.sin(beta)
    cy = y_fs + np.concatenate([[0.0], np.cumsum(0.5 * (dy[1:] + dy[:-1]) * np.diff(sd))])
    cz = z_ff + np.concatenate([[0.0], np.cumsum(0.5 * (dz[1:] + dz[:-1]) * np.diff(sd))])
    y_throat = cy[-1]  # where the neck front becomes vertical
    z_nf = cz[-1]
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
            [
                P["w_neck"],
                P["w_neck"],
                P["w_jaw"],
                0.5 * (P["w_jaw"] + P["w_cheek"]) + 0.003,
                P["w_cheek"],
                P["w_temple"],
                P["w_cranium"],
            ],
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
    # chin
    m = (eta >= eta_chin0) & (eta <= y_fs)
    s_down = y_fs - eta[m]
    yF[m] = np.interp(s_down, sd, cy)
    zF[m] = np.interp(s_down, sd, cz)
    yK[m] = y_throat + (y_fs - y_throat) * (1 - s_down / l_chin)
    # face
    m = (eta > y_fs) & (eta <= y_ft)
    yF[m] = eta[m]
    zF[m] = z_ff
    yK[m] = eta[m]
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
    # Smooth the piecewise-linear tables (kinks would show as creases).
    k = np.exp(-0.5 * (np.arange(-60, 61) / 30.0) ** 2)
    k /= k.sum()
    for arr in (W, zK):
        pad = np.concatenate([np.full(60, arr[0]), arr, np.full(60, arr[-1])])
        arr[:] = np.convolve(pad, k, mode="valid")
    W[-1] = 0.0
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
    x = W * s
    d = np.where(c >= 0, beta + (1 - beta) * c, beta + beta * c)
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
# Feature curves (frontal x, y): inner lip margins, eyelid margins, brows
# =============================================================================


def _mouth_curves(P, x):
    """Stomion line and the upper / lower inner-lip margins at frontal x."""
    xc = P["mouth_w"]
    xr = x - P["mouth_dx"]
    u = np.abs(xr) / xc
    sl = _side(xr)
    side_dy = sl * P["corner_dy_l"] + (1 - sl) * P["corner_dy_r"]
    y_s = P["mouth_y"] + (0.0006 + side_dy) * np.clip(u, 0, 1.2) ** 2
    inner = np.clip(1 - u * u, 0, None)
    g = P["mouth_gap"] * inner + 0.0003
    y_up = y_s + 0.5 * g + P["lip_up_raise"] * inner
    y_lo = y_s - 0.5 * g - P["lip_lo_drop"] * inner
    return y_s, y_up, y_lo


def _eye_curves(P, x):
    """Upper and lower eyelid margins at frontal x, and the fissure coordinate xi (0 inner, 1 outer)."""
    ax = np.abs(x)
    sl = _side(x, 0.002)
    xi = (ax - (P["eye_x"] - P["canth_in"])) / (P["canth_in"] + P["canth_out"])
    xc = np.clip(xi, 0.0, 1.0)
    y_axis = P["eye_y"] + P["canth_in_dy"] + (P["canth_out_dy"] - P["canth_in_dy"]) * xc
    f_u = np.sin(np.pi * xc**0.8)
    f_l = np.sin(np.pi * xc**1.27)
    raise_lo = sl * P["raise_lo_l"] + (1 - sl) * P["raise_lo_r"]
    opening = sl * P["open_l"] + (1 - sl) * P["open_r"]
    y_lo = y_axis - P["lid_lo_h"] * f_l * (1 - raise_lo) - 0.0002
    y_up_open = y_axis + P["lid_up_h"] * f_u + 0.0002
    y_up = y_lo + 0.0004 + (y_up_open - y_lo - 0.0004) * opening
    return y_up, y_lo, xi


def _brow_shift(P, x):
    """Vertical displacement of the brows (raise, frown, inner raise) at frontal x."""
    ax = np.abs(x)
    sl = _side(x)
    raise_ = (sl * P["brow_raise_l"] + (1 - sl) * P["brow_raise_r"]) * _bump((ax - 0.032) / 0.05)
    inner = _bump((ax - 0.010) / 0.022)
    return raise_ + (P["brow_inner"] - P["brow_frown"]) * inner


def _lateral_warp(P, x, we_row, wm_row):
    """Lateral shift of grid columns so the eye corners and mouth corners follow the parameters."""
    dx = np.zeros_like(x)
    # Mouth: the reference mouth [-w_r, w_r] maps onto [dx - w, dx + w].
    w_r, w = _REF["mouth_w"], P["mouth_w"]
    ax = np.abs(x)
    inside = P["mouth_dx"] + x * (w / w_r - 1)
    fade = np.exp(-(((ax - w_r) / 0.012) ** 2))
    outside = (P["mouth_dx"] + np.sign(x) * (w - w_r)) * fade
    dx += wm_row * np.where(ax <= w_r, inside, outside)
    # Eyes: the reference fissure [a_r, b_r] maps onto the current [a, b] (in |x|).
    a_r = _REF["eye_x"] - _REF["canth_in"]
    b_r = _REF["eye_x"] + _REF["canth_out"]
    a = P["eye_x"] - P["canth_in"]
    b = P["eye_x"] + P["canth_out"]
    t = (ax - a_r) / (b_r - a_r)
    mid = (a - a_r) * (1 - t) + (b - b_r) * t
    lo = (a - a_r) * np.exp(-(((a_r - ax) / 0.006) ** 2))
    hi = (b - b_r) * np.exp(-(((ax - b_r) / 0.012) ** 2))
    de = np.where(t < 0, lo, np.where(t > 1, hi, mid))
    dx += we_row * np.sign(x) * de
    return x + dx


# =============================================================================
# Rows: per-vertex row coordinate eta. The lips and eyelids meet along rows that
# fold into the head ("pockets"); rows are anchored to the features (margins,
# nose tip, brows) so the mesh, and the landmarks on it, follow the parameters.
# =============================================================================


def _span_rows(a1, a2, y_lo, y_up, n_lo, n_up, weight):
    """Rows of a span from a1 to a2 (excluded): evenly spaced where weight is 0; where it is 1,
    anchored: a1, n_lo rows, lower margin, the fold rows, upper margin, n_up rows."""
    u_lo = np.arange(1, n_lo + 1) / (n_lo + 1)
    u_up = np.arange(1, n_up + 1) / (n_up + 1)
    u_p = np.arange(1, _N_POCKET + 1) / (_N_POCKET + 1)
    gamma = 1.3
    shape = np.broadcast_shapes(np.shape(y_lo), np.shape(a2))
    rows = [np.broadcast_to(a1, shape)]
    rows += [a1 + (y_lo - a1) * (1 - (1 - u) ** gamma) for u in u_lo]
    rows += [y_lo]
    rows += [y_lo + (y_up - y_lo) * u for u in u_p]
    rows += [y_up]
    rows += [y_up + (a2 - y_up) * u**gamma for u in u_up]
    anchored = np.stack([np.broadcast_to(r, shape) for r in rows], 0)
    nominal = a1 + (a2 - a1) * np.linspace(0, 1, len(rows), endpoint=False)[:, None]
    return nominal * (1 - weight) + anchored * weight


def _lin(a, b, n, endpoint=False):
    u = np.linspace(0.0, 1.0, n, endpoint=endpoint)[:, None]
    return a + (b - a) * u


def _grid_rows(P, prof, topo):
    """Row coordinate eta and column angle theta of every grid vertex, and the span weights."""
    th = topo.theta
    sec = topo.sections
    nr = topo.n_rows
    front = np.cos(th) > 0
    we_row, wm_row = _row_section_weights(topo)
    # Over the face the columns keep their frontal x when the head's proportions change (so the
    # features are sampled alike), then the lateral warps move them with the eye and mouth corners.
    ref = _ref_profile()
    y_nom = np.where(wm_row[:, None] > 0, _REF["mouth_y"], _REF["eye_y"])
    x_ref = np.interp(y_nom, ref["eta"], ref["W"]) * np.sin(th)[None, :]
    w_cur = np.interp(y_nom, prof["eta"], prof["W"])
    frontal = front & (np.abs(th) < 1.2)
    x = np.where(frontal, _lateral_warp(P, x_ref, we_row[:, None], wm_row[:, None]), x_ref)
    th_face = np.where(frontal, np.arcsin(np.clip(x / w_cur, -0.999, 0.999)), th[None, :])
    face_rows = np.zeros(nr)
    face_rows[sec["s0"].start : sec["s2"].stop] = 1.0
    nc = sec["chin"].stop - sec["chin"].start
    face_rows[sec["chin"]] = np.linspace(0.0, 1.0, nc + 1)[1:]
    face_rows[sec["dome"].start : sec["dome"].start + 3] = [0.75, 0.5, 0.25]
    blend = face_rows[:, None] * (1 - _smoothstep(0.8, 1.15, np.abs(th)))[None, :]
    theta = th[None, :] + (th_face - th[None, :]) * blend
    eta = np.zeros((nr, _NU))
    # Row anchors follow the features over the face only; at the sides and the back the rows stay
    # where the reference head has them (no sliding under the ears when the eyes move).
    lat = 1 - _smoothstep(0.85, 1.15, np.abs(th))

    def anchor(key, offset=0.0):
        return _REF[key] + offset + (P[key] - _REF[key]) * lat

    m_a1 = P["y_fs"] + 0.0025
    m_a2 = anchor("subnasale_y", 0.0012)
    tip = anchor("nose_tip_y")
    e_a1 = anchor("eye_y", -0.017)
    n = sec["neck"].stop - sec["neck"].start
    eta[sec["neck"]] = _lin(prof["eta_bot"], prof["eta_chin0"], n)
    n = sec["chin"].stop - sec["chin"].start
    eta[sec["chin"]] = _lin(prof["eta_chin0"], P["y_fs"], n)
    eta[sec["s0"]] = _lin(P["y_fs"], m_a1, _N_S0)
    # Mouth span.
    xm = x[topo.rows["mouth_lo"]]  # the span's columns are straight (uniform warp weight)
    _, m_up, m_lo = _mouth_curves(P, xm)
    wm = 1 - _smoothstep(P["mouth_w"] + 0.003, P["mouth_w"] + 0.016, np.abs(xm - P["mouth_dx"]))
    wm = wm * front
    eta[sec["mouth"]] = _span_rows(m_a1, m_a2, m_lo, m_up, _N_LL, _N_UL, wm)
    eta[sec["s1a"]] = _lin(m_a2, tip, _N_S1A)
    eta[sec["s1b"]] = _lin(tip, e_a1, _N_S1B)
    # Eye span (upper anchor follows the brows).
    xe = x[topo.rows["eye_lo"]]
    e_up, e_lo, _ = _eye_curves(P, xe)
    ax = np.abs(xe)
    we = _smoothstep(P["eye_x"] - P["canth_in"] - 0.009, P["eye_x"] - P["canth_in"] - 0.001, ax) * (
        1 - _smoothstep(P["eye_x"] + P["canth_out"] + 0.002, P["eye_x"] + P["canth_out"] + 0.016, ax)
    )
    we = we * front
    e_a2 = anchor("eye_y", 0.023) + 0.6 * _brow_shift(P, x[sec["s2"].start]) * lat
    eta[sec["eye"]] = _span_rows(e_a1, e_a2, e_lo, e_up, _N_EL, _N_EU, we)
    eta[sec["s2"]] = _lin(e_a2, P["y_ft"], _N_S2 + 1, endpoint=True)
    n = sec["dome"].stop - sec["dome"].start
    u = np.arange(1, n + 1) / (n + 1)
    eta[sec["dome"]] = (P["y_ft"] + (prof["eta_top"] - P["y_ft"]) * u**1.5)[:, None]
    return eta, theta, dict(wm=wm, we=we)


# =============================================================================
# Relief: offset of the skin from the base point along the ray (+z on the face)
# =============================================================================


def _relief(P, x, y, z, n):
    """Offset h of the skin from the base point (x, y, z) with base normal n."""
    ax = np.abs(x)
    sl = _side(x)
    front = _smoothstep(-0.2, 0.3, n[..., 2])
    h = np.zeros_like(x)
    # Brow ridge and glabella.
    ys = _brow_shift(P, x)
    for sgn in (1.0, -1.0):
        xb = sgn * x
        yb = P["eye_y"] + P["brow_dy"] + 0.004 * _bump((xb - 0.034) / 0.03) + ys
        h += P["brow_prom"] * _gauss((y - yb) / 0.0075) * (1 - _smoothstep(0.05, 0.068, xb)) * _smoothstep(-0.006, 0.012, xb)
    h += 0.0025 * _gauss(x / 0.016) * _gauss((y - P["eye_y"] - 0.017 - 0.5 * ys) / 0.009)
    h -= 0.0025 * P["brow_frown"] / 0.004 * _gauss(x / 0.004) * _gauss((y - P["eye_y"] - 0.014) / 0.008)
    # Nasion.
    h -= 0.004 * _gauss(x / 0.013) * _gauss((y - P["nasion_y"]) / 0.008)
    # Eye sockets.
    for sgn in (1.0, -1.0):
        dx = x - sgn * P["eye_x"]
        dy = y - P["eye_y"] - 0.001
        r2 = (dx / 0.0195) ** 2 + (dy / 0.0145) ** 2
        h -= P["socket"] * np.exp(-(r2**1.6))
    # Cheekbones, cheeks (raise / puff).
    cheek = sl * P["cheek_l"] + (1 - sl) * P["cheek_r"]
    h += P["cheekbone"] * _gauss((ax - 0.047) / 0.013) * _gauss((y - 0.004) / 0.011)
    h += cheek * _gauss((ax - 0.038) / 0.014) * _gauss((y - P["mouth_y"] - 0.014) / 0.016)
    # Nose: dorsum and tip, alae.
    ny, ty, sy = P["nasion_y"], P["nose_tip_y"], P["subnasale_y"]
    l1 = P["nose_tip_h"] * np.clip((ny - y) / (ny - ty), -1, None)
    l2 = P["nose_tip_h"] * (y - sy) / (ty - sy)
    prof = _smax(_smin(l1, l2, 0.006), 0.0, 0.002) * (y > sy - 0.01) * (y < ny + 0.02)
    tn = np.clip((ny - y) / (ny - ty), 0, 1)
    wx = P["nose_bridge_w"] * (1.25 - 0.45 * np.sin(np.pi * tn) ** 2) + (0.0085 - P["nose_bridge_w"]) * tn**2
    h += prof * np.exp(-0.5 * np.abs(x / wx) ** 2.2)
    h += 0.0025 * _gauss(x / 0.007) * _gauss((y - ty) / 0.005)
    ya = sy + 0.0065 + P["nose_wrinkle"]
    h += 0.0072 * np.exp(-(((ax - P["nose_w"] + 0.0045) / 0.006) ** 2) - ((y - ya) / 0.0068) ** 2)
    h -= P["nose_wrinkle"] * 0.5 * _gauss(x / 0.01) * _gauss((y - ny + 0.004) / 0.004)
    # Narrower lower face (jaw and chin).
    h -= 0.007 * _smoothstep(-0.02, -0.075, y) * _smoothstep(0.012, 0.05, ax)
    # Chin.
    h += P["chin_proj"] * _gauss(x / 0.017) * _gauss((y - P["chin_y"]) / 0.011)
    # Lips, in lip-local coordinates (distance from the inner margins), so they follow the margins.
    y_s, m_up, m_lo = _mouth_curves(P, x)
    xr = x - P["mouth_dx"]
    u = np.abs(xr) / P["mouth_w"]
    lipw = np.clip(1 - u**2.5, 0, None)
    du = np.maximum(y - m_up, 0.0)
    dl = np.maximum(m_lo - y, 0.0)
    roll = 0.0028 + P["lip_roll"]
    lu, ll = P["lip_up_h"], P["lip_lo_h"]
    q_u = (P["lip_proj"] + 0.002) * _bump((du - 0.45 * lu) / (0.75 * lu)) - roll * np.exp(-du / 0.0012)
    q_u += 0.004 * np.clip(1 - du / 0.02, 0, 1)
    q_l = (P["lip_proj"] + 0.002) * _bump((dl - 0.45 * ll) / (0.8 * ll)) - roll * np.exp(-dl / 0.0012)
    q_l -= 0.0025 * _gauss((dl - 0.017) / 0.004)
    h += (np.where(y >= m_up, q_u, 0.0) + np.where(y <= m_lo, q_l, 0.0)) * lipw
    h -= (0.0018 + P["dimple"]) * _gauss((np.abs(xr) - P["mouth_w"] - 2.0 * P["dimple"]) / 0.003) * _gauss((y - y_s) / 0.003)
    h = h * front
    # Ears, on the sides.
    for sgn in (1.0, -1.0):
        side = _smoothstep(0.5, 0.8, sgn * n[..., 0])
        r2 = ((y - P["ear_y"]) / P["ear_h"]) ** 2 + ((z - P["ear_z"]) / 0.017) ** 2
        ear = P["ear_out"] * np.clip(1 - r2, 0, None) ** 1.2
        ear -= 0.007 * np.exp(-(((y - P["ear_y"] + 0.004) / 0.009) ** 2) - ((z - P["ear_z"] - 0.003) / 0.006) ** 2)
        h += side * np.maximum(ear, 0.0)
    return h


def _lids(P, x, y, z_skin):
    """Smoothly merges the skin with the eyelid shells (spheres just outside the eyeballs)."""
    out = z_skin
    rs = P["eye_r"] + P["lid_t"]
    for sgn in (1.0, -1.0):
        dx = x - sgn * P["eye_x"]
        dy = y - P["eye_y"]
        q = rs * rs - dx * dx - dy * dy
        zs = np.where(q > 0, P["eye_z"] + np.sqrt(np.maximum(q, 0)), P["eye_z"] - 0.05)
        out = _smax(out, zs, 0.003)
    return out


def _generate(P):
    """All vertices (skin grid, two poles, left eyeball, right eyeball) for parameters P."""
    topo = _topology()
    prof = _profile(P)
    eta, theta, meta = _grid_rows(P, prof, topo)
    base, nb = _base(prof, theta, eta)
    th = np.broadcast_to(topo.theta, eta.shape)
    # Rays: +z over the face (so frontal positions are exact), the base normal elsewhere.
    fw = (1 - _smoothstep(0.78, 1.25, np.abs(th))) * _smoothstep(P["y_fs"] - 0.012, P["y_fs"] + 0.004, eta)
    fw = fw * (1 - _smoothstep(0.052, 0.078, eta))
    d = nb * (1 - fw[..., None]) + np.array([0.0, 0.0, 1.0]) * fw[..., None]
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    x, y, z = base[..., 0], base[..., 1], base[..., 2]
    h = _relief(P, x, y, z, nb)
    zf = z + h
    h = h + (_lids(P, x, y, zf) - zf) * fw
    v = base + h[..., None] * d
    # Pockets: the rows between the margins fold into the head.
    rows = topo.rows
    t = np.arange(1, _N_POCKET + 1) / (_N_POCKET + 1)
    b = np.sin(np.pi * t) ** 0.5
    xm = x[rows["mouth_pocket"][1]]
    wm = meta["wm"]
    dm = 0.018 * np.clip(1 - ((xm - P["mouth_dx"]) / P["mouth_w"]) ** 2, 0, None) ** 1.5 * wm
    for j, r in enumerate(rows["mouth_pocket"]):
        v[r, :, 2] -= dm * b[j]
    xe = x[rows["eye_pocket"][1]]
    _, _, xi = _eye_curves(P, xe)
    we = meta["we"]
    o = np.sin(np.pi * np.clip(xi, 0, 1)) ** 0.7 * we
    for j, r in enumerate(rows["eye_pocket"]):
        v[r, :, 2] -= (P["lid_t"] + 0.006) * o * b[j]
    top = _ring_points(prof, 0.0, prof["eta_top"])
    bottom = np.array([0.0, prof["yF"][0], 0.5 * (prof["zF"][0] + prof["zK"][0])])
    # Eyeballs: a slight corneal bulge around the front pole.
    dirs = topo.sphere_dirs
    r_eye = P["eye_r"] + 0.0009 * np.clip((dirs[:, 2] - 0.82) / 0.18, 0, 1) ** 1.5
    eyes = [np.array([s * P["eye_x"], P["eye_y"], P["eye_z"]]) + r_eye[:, None] * dirs for s in (1.0, -1.0)]
    return np.concatenate([v.reshape(-1, 3), top[None], bottom[None]] + eyes)


