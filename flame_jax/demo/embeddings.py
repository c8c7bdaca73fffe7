"""The demo head's landmark embeddings: iBUG-68 static points, the MediaPipe-style 105-point set and
the dynamic jaw contour.
"""

from __future__ import annotations

import numpy as np

from flame_jax.demo.mesh import _NU, _N_POCKET, _mouth_curves
from flame_jax.demo.params import _bump, _gauss
from flame_jax.demo.rig import _chin_fraction, _grid


# =============================================================================
# Landmark placement helpers (on the template)
# =============================================================================


def _edge_point(v, topo, row, x_target):
    """Point on grid row `row` at frontal x: (face index, barycentric) on the row's edge."""
    xs = v[row * _NU : (row + 1) * _NU, 0]
    lo, hi = _NU // 2 - 24, _NU // 2 + 24  # front columns, x increasing
    i0 = lo + int(np.clip(np.searchsorted(xs[lo:hi], x_target) - 1, 0, hi - lo - 2))
    a = float(np.clip((x_target - xs[i0]) / (xs[i0 + 1] - xs[i0]), 0.0, 1.0))
    return 2 * (row * _NU + i0), np.array([1.0 - a, a, 0.0])


def _vertex_point(topo, row, col):
    """A grid vertex as a landmark (the first corner of the quad it starts)."""
    return 2 * (row * _NU + col), np.array([1.0, 0.0, 0.0])


def _surface_points(v, topo, xy):
    """Frontmost skin point under each frontal (x, y) (a ray along -z): faces and barycentrics."""
    f = topo.faces[: topo.num_grid_faces]
    tri = v[f]  # (F, 3, 3)
    a, b, c = tri[:, 0, :2], tri[:, 1, :2], tri[:, 2, :2]
    det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    facing = det > 1e-12  # counter-clockwise in the image: front-facing
    faces, barys = [], []
    for px, py in np.asarray(xy, np.float64):
        w0 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / np.where(facing, det, 1)
        w1 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / np.where(facing, det, 1)
        w2 = 1 - w0 - w1
        inside = facing & (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        if not inside.any():
            raise RuntimeError(f"no skin under frontal point ({px:.4f}, {py:.4f})")
        z = w0 * tri[:, 0, 2] + w1 * tri[:, 1, 2] + w2 * tri[:, 2, 2]
        k = int(np.argmax(np.where(inside, z, -np.inf)))
        faces.append(k)
        barys.append(np.clip([w0[k], w1[k], w2[k]], 0, 1) / np.clip([w0[k], w1[k], w2[k]], 0, 1).sum())
    return faces, barys


def _feature_points(P, v, topo):
    """Named feature positions of the template used by both landmark embeddings."""
    rows = topo.rows
    mid_eye = rows["eye_pocket"][_N_POCKET // 2]
    mid_mouth = rows["mouth_pocket"][_N_POCKET // 2]
    xc, mdx = P["mouth_w"], P["mouth_dx"]
    fp = dict(mid_eye=mid_eye, mid_mouth=mid_mouth)
    fp["x_in"] = P["eye_x"] - P["canth_in"]
    fp["x_out"] = P["eye_x"] + P["canth_out"]
    fp["x_mouth"] = (mdx - xc, mdx + xc)
    fp["x_mouth_in"] = (mdx - xc + 0.003, mdx + xc - 0.003)
    # Nose tip: the most anterior vertex of the midline column.
    mid = v[: topo.num_grid].reshape(topo.n_rows, _NU, 3)[:, _NU // 2]
    band = (mid[:, 1] > P["subnasale_y"]) & (mid[:, 1] < P["nasion_y"])
    fp["tip_row"] = int(np.flatnonzero(band)[np.argmax(mid[band, 2])])
    fp["tip_y"] = float(mid[fp["tip_row"], 1])
    return fp


def _lip_borders(P, x):
    """Outer (vermilion) borders of the upper and lower lips at frontal x."""
    _, m_up, m_lo = _mouth_curves(P, x)
    u2 = ((x - P["mouth_dx"]) / P["mouth_w"]) ** 2
    y_ub = m_up + P["lip_up_h"] * (1 - 0.35 * u2) - 0.0008 * _gauss((x - P["mouth_dx"]) / 0.004)
    y_lb = m_lo - P["lip_lo_h"] * (1 - 0.35 * u2)
    return y_ub, y_lb


def _ibug_static(P, v, topo):
    """The 51 static iBUG points (17..67) as (faces, barycentrics)."""
    fp = _feature_points(P, v, topo)
    rows = topo.rows
    out = {}
    # Brows 17..21 (subject's right, outer to inner), 22..26 (left, inner to outer).
    bx = np.array([0.057, 0.047, 0.037, 0.027, 0.017])
    yb = lambda x: P["eye_y"] + P["brow_dy"] + 0.004 * _bump((np.abs(x) - 0.034) / 0.03) + 0.002  # noqa: E731
    xy = [(-x, yb(x)) for x in bx] + [(x, yb(x)) for x in bx[::-1]]
    # Nose bridge 27..29 (30 is the tip vertex), nostrils 31..35.
    y27 = P["nasion_y"]
    xy += [(0.0, y27 + (fp["tip_y"] - y27) * t) for t in (0.0, 1 / 3, 2 / 3)]
    sy = P["subnasale_y"]
    xy += [(-0.0125, sy + 0.0035), (-0.0065, sy + 0.0018), (0.0, sy), (0.0065, sy + 0.0018), (0.0125, sy + 0.0035)]
    # Outer lips 49..53 and 55..59 on the vermilion borders.
    xc, mdx = P["mouth_w"], P["mouth_dx"]
    ux = np.array([-0.55, -0.25, 0.0, 0.25, 0.55]) * xc + mdx
    y_ub, _ = _lip_borders(P, ux)
    lx = np.array([0.55, 0.25, 0.0, -0.25, -0.55]) * xc + mdx
    _, y_lb = _lip_borders(P, lx)
    xy += list(zip(ux, y_ub)) + list(zip(lx, y_lb))
    faces, barys = _surface_points(v, topo, xy)
    ids = list(range(17, 30)) + list(range(31, 36)) + list(range(49, 54)) + list(range(55, 60))
    out.update({i: (f, b) for i, f, b in zip(ids, faces, barys)})
    out[30] = _vertex_point(topo, fp["tip_row"], _NU // 2)
    # Eyes: corners on the middle fold row, lids on the margins (they move with a blink).
    x_in, x_out = fp["x_in"], fp["x_out"]
    xi = lambda t: x_in + (x_out - x_in) * t  # noqa: E731
    for sgn, ids_ in ((-1.0, (36, 37, 38, 39, 40, 41)), (1.0, (45, 44, 43, 42, 47, 46))):
        o, u2, u1, i, l1, l2 = ids_
        out[o] = _edge_point(v, topo, fp["mid_eye"], sgn * x_out)
        out[i] = _edge_point(v, topo, fp["mid_eye"], sgn * x_in)
        out[u2] = _edge_point(v, topo, rows["eye_up"], sgn * xi(2 / 3))
        out[u1] = _edge_point(v, topo, rows["eye_up"], sgn * xi(1 / 3))
        out[l1] = _edge_point(v, topo, rows["eye_lo"], sgn * xi(1 / 3))
        out[l2] = _edge_point(v, topo, rows["eye_lo"], sgn * xi(2 / 3))
    # Mouth corners (outer 48/54, inner 60/64) on the middle fold row; inner lips on the margins.
    out[48] = _edge_point(v, topo, fp["mid_mouth"], fp["x_mouth"][0])
    out[54] = _edge_point(v, topo, fp["mid_mouth"], fp["x_mouth"][1])
    out[60] = _edge_point(v, topo, fp["mid_mouth"], fp["x_mouth_in"][0])
    out[64] = _edge_point(v, topo, fp["mid_mouth"], fp["x_mouth_in"][1])
    for i, t in ((61, -0.5), (62, 0.0), (63, 0.5)):
        out[i] = _edge_point(v, topo, rows["mouth_up"], mdx + t * xc)
    for i, t in ((65, 0.5), (66, 0.0), (67, -0.5)):
        out[i] = _edge_point(v, topo, rows["mouth_lo"], mdx + t * xc)
    faces = np.array([out[i][0] for i in range(17, 68)], np.int64)
    barys = np.array([out[i][1] for i in range(17, 68)], np.float64)
    return faces, barys


# =============================================================================
# MediaPipe-style 105-point embedding
# =============================================================================

# MediaPipe FaceMesh ids (public topology, Apache-2.0) and their frontal position on
# MediaPipe's canonical face model, normalised: origin between the outer eye corners
# (ids 33, 263), unit = their distance, +x the subject's left, +y up. Regions: brows
# 10 + 10, eyes 16 + 16, nose 13, lips 20 outer + 20 inner.
_MP_TABLE = {
    "brow_r": ((46, -0.591, 0.137), (53, -0.516, 0.184), (52, -0.420, 0.207), (65, -0.297, 0.209),
               (55, -0.137, 0.166), (70, -0.643, 0.179), (63, -0.561, 0.241), (105, -0.448, 0.275),
               (66, -0.310, 0.274), (107, -0.157, 0.264)),
    "brow_l": ((276, 0.591, 0.137), (283, 0.516, 0.184), (282, 0.420, 0.207), (295, 0.297, 0.209),
               (285, 0.137, 0.166), (300, 0.643, 0.179), (293, 0.561, 0.241), (334, 0.448, 0.275),
               (296, 0.310, 0.274), (336, 0.157, 0.264)),
    "eye_r": ((33, -0.500, 0.000), (7, -0.478, -0.010), (163, -0.452, -0.020), (144, -0.413, -0.034),
              (145, -0.357, -0.042), (153, -0.306, -0.039), (154, -0.257, -0.030), (155, -0.225, -0.019),
              (133, -0.209, -0.009), (246, -0.478, 0.012), (161, -0.452, 0.022), (160, -0.413, 0.030),
              (159, -0.357, 0.034), (158, -0.306, 0.033), (157, -0.257, 0.025), (173, -0.225, 0.009)),
    "eye_l": ((263, 0.500, 0.000), (249, 0.478, -0.010), (390, 0.452, -0.020), (373, 0.413, -0.034),
              (374, 0.357, -0.042), (380, 0.306, -0.039), (381, 0.257, -0.030), (382, 0.225, -0.019),
              (362, 0.209, -0.009), (466, 0.478, 0.012), (388, 0.452, 0.022), (387, 0.413, 0.030),
              (386, 0.357, 0.034), (385, 0.306, 0.033), (384, 0.257, 0.025), (398, 0.225, 0.009)),
    "nose": ((168, 0.000, 0.068), (6, 0.000, -0.021), (197, 0.000, -0.105), (195, 0.000, -0.180),
             (5, 0.000, -0.258), (4, 0.000, -0.352), (1, 0.000, -0.426), (19, 0.000, -0.468),
             (2, 0.000, -0.535), (98, -0.158, -0.492), (327, 0.158, -0.492), (48, -0.181, -0.406),
             (278, 0.181, -0.406)),
    "lips_outer": ((61, -0.276, -0.788), (146, -0.247, -0.817), (91, -0.207, -0.843), (181, -0.149, -0.874),
                   (84, -0.079, -0.895), (17, 0.000, -0.903), (314, 0.079, -0.895), (405, 0.149, -0.874),
                   (321, 0.207, -0.843), (375, 0.247, -0.817), (291, 0.276, -0.788), (185, -0.257, -0.755),
                   (40, -0.215, -0.727), (39, -0.161, -0.693), (37, -0.080, -0.674), (0, 0.000, -0.683),
                   (267, 0.080, -0.674), (269, 0.161, -0.693), (270, 0.215, -0.727), (409, 0.257, -0.755)),
    "lips_inner": ((78, -0.242, -0.781), (95, -0.205, -0.794), (88, -0.173, -0.797), (178, -0.124, -0.801),
                   (87, -0.066, -0.808), (14, 0.000, -0.810), (317, 0.066, -0.808), (402, 0.124, -0.801),
                   (318, 0.173, -0.797), (324, 0.205, -0.794), (308, 0.242, -0.781), (191, -0.208, -0.761),
                   (80, -0.165, -0.754), (81, -0.115, -0.748), (82, -0.060, -0.749), (13, 0.000, -0.749),
                   (312, 0.060, -0.749), (311, 0.115, -0.748), (310, 0.165, -0.754), (415, 0.208, -0.761)),
}
#: MediaPipe FaceMesh ids of the 105 points, in the embedding's order.
_MEDIAPIPE_IDS = tuple(i for region in _MP_TABLE.values() for i, _, _ in region)


def _mediapipe_static(P, v, topo):
    """Places the 105 MediaPipe points on the demo head, region by region."""
    fp = _feature_points(P, v, topo)
    rows = topo.rows
    x_in, x_out = fp["x_in"], fp["x_out"]
    eye_line = P["eye_y"] + 0.5 * (P["canth_in_dy"] + P["canth_out_dy"])
    out = []
    # Brows: x through the eye corners, height scaled to the demo brows.
    brow_h = np.mean([P["brow_dy"] + 0.004 * _bump((x - 0.034) / 0.03) for x in np.linspace(0.015, 0.06, 10)])
    canon_h = np.mean([y for _, _, y in _MP_TABLE["brow_l"]])
    for region in ("brow_r", "brow_l"):
        xy = []
        for _, cx, cy in _MP_TABLE[region]:
            t = (abs(cx) - 0.209) / (0.5 - 0.209)
            xy.append((np.sign(cx) * (x_in + t * (x_out - x_in)), eye_line + cy * brow_h / canon_h))
        out += list(zip(*_surface_points(v, topo, xy)))
    # Eyes: corners on the middle fold row, the rest on the lid margins at the same fissure fraction.
    for region in ("eye_r", "eye_l"):
        for i, cx, cy in _MP_TABLE[region]:
            t = (abs(cx) - 0.209) / (0.5 - 0.209)
            x = np.sign(cx) * (x_in + t * (x_out - x_in))
            if i in (33, 133, 263, 362):
                row = fp["mid_eye"]
            else:
                row = rows["eye_up"] if cy > 0 else rows["eye_lo"]
            out.append(_edge_point(v, topo, row, x))
    # Nose: heights piecewise linear through eye line -> tip (id 4) -> subnasale (id 2); widths via the alar base.
    sy = P["subnasale_y"]
    x31 = 0.0125
    xy = []
    for _, cx, cy in _MP_TABLE["nose"]:
        if cy >= -0.352:
            y = eye_line + (fp["tip_y"] - eye_line) * (cy / -0.352)
        else:
            y = fp["tip_y"] + (sy + 0.0035 * min(abs(cx) / 0.158, 1) - fp["tip_y"]) * ((cy + 0.352) / (-0.535 + 0.352))
        xy.append((cx * x31 / 0.158, y))
    out += list(zip(*_surface_points(v, topo, xy)))
    # Outer lips: x through the mouth corners, y on the demo's vermilion borders.
    xl, xr = fp["x_mouth"]
    xy, corner = [], {}
    for i, cx, cy in _MP_TABLE["lips_outer"]:
        x = 0.5 * (xl + xr) + cx / 0.276 * 0.5 * (xr - xl)
        if i in (61, 291):
            corner[len(xy)] = _edge_point(v, topo, fp["mid_mouth"], x)
            xy.append((x, 0.0))
            continue
        y_ub, y_lb = _lip_borders(P, np.array(x))
        xy.append((x, float(y_ub if cy > -0.788 else y_lb)))
    fs, bs = _surface_points(v, topo, [p for k, p in enumerate(xy) if k not in corner])
    it = iter(zip(fs, bs))
    out += [corner[k] if k in corner else next(it) for k in range(len(xy))]
    # Inner lips: corners on the middle fold row, the rest on the inner margins.
    xl, xr = fp["x_mouth_in"]
    for i, cx, cy in _MP_TABLE["lips_inner"]:
        x = 0.5 * (xl + xr) + cx / 0.242 * 0.5 * (xr - xl)
        if i in (78, 308):
            row = fp["mid_mouth"]
        else:
            row = rows["mouth_up"] if cy > -0.781 else rows["mouth_lo"]
        out.append(_edge_point(v, topo, row, x))
    faces = np.array([f for f, _ in out], np.int64)
    barys = np.array([b for _, b in out], np.float64)
    return faces, barys


# =============================================================================
# Dynamic jaw contour: 79 rows x 17 points, each row on the occluding contour of
# the lower face seen from the front after a yaw of a degrees (a = row for rows
# 0..39, a = 39 - row for rows 40..78; DECA's rule, see landmarks.contour_row).
# =============================================================================


def _rot_y(deg):
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _contour_region(P, v, topo):
    """Skin faces of the jaw and cheeks (in front of the ears, below the eyes, above the throat)."""
    g = _grid(v, topo)
    x, y, z = g[..., 0], g[..., 1], g[..., 2]
    chin = _chin_fraction(topo)[:, None]
    zb = np.interp(y, [-0.09, -0.06, -0.025, 0.03], [-0.045, -0.040, -0.012, -0.012])
    m = (y <= P["eye_y"] + 0.004) & (z >= zb) & (chin >= 0.37)
    m &= ~((np.abs(x) < P["eye_x"] + P["canth_out"] + 0.006) & (y > P["eye_y"] - 0.013))
    m &= ~((np.abs(x) < 0.028) & (y > P["mouth_y"] + 0.008))
    m &= ~((np.abs(x - P["mouth_dx"]) < P["mouth_w"] + 0.005) & (np.abs(y - P["mouth_y"]) < 0.012))
    vm = np.zeros(topo.num_vertices, bool)
    vm[: topo.num_grid] = m.reshape(-1)
    f = topo.faces[: topo.num_grid_faces]
    return np.flatnonzero(vm[f].all(1))


def _contour_exits(p2, faces, centre, dirs):
    """For rays centre + s*dir (2D), the farthest exit from the projected faces: (s, face) per ray."""
    tri = p2[faces]  # (F, 3, 2)
    p = tri
    q = np.roll(tri, -1, axis=1)
    d = q - p  # (F, 3, 2)
    w = p - centre  # (F, 3, 2)
    ux, uy = dirs[:, 0][:, None, None], dirs[:, 1][:, None, None]
    det = -ux * d[None, ..., 1] + d[None, ..., 0] * uy
    ok = np.abs(det) > 1e-14
    det = np.where(ok, det, 1.0)
    s = (-w[None, ..., 0] * d[None, ..., 1] + d[None, ..., 0] * w[None, ..., 1]) / det
    t = (ux * w[None, ..., 1] - uy * w[None, ..., 0]) / det
    s = np.where(ok & (t >= -1e-9) & (t <= 1 + 1e-9) & (s > 0), s, -np.inf)
    return s.max(-1)  # (D, F): farthest exit of each face along each ray


def _contour_row(P, v, topo, region, c_head, dirs, yaw):
    R = _rot_y(yaw)
    vr = v @ R.T
    p2 = vr[:, :2]
    faces = topo.faces[region]
    centre = (R @ c_head)[:2]
    exits = _contour_exits(p2, faces, centre, dirs)  # (17, F)
    tri = p2[faces]
    area = (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) - (tri[:, 2, 0] - tri[:, 0, 0]) * (
        tri[:, 1, 1] - tri[:, 0, 1]
    )
    out_f, out_b = [], []
    for j in range(len(dirs)):
        smax = exits[j].max()
        cand = np.flatnonzero(exits[j] >= smax - 1e-7)
        front = cand[area[cand] > 0]
        k = front[0] if len(front) else cand[0]
        pt = centre + (smax - 2e-5) * dirs[j]
        a, b, c = tri[k]
        den = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        w0 = ((b[1] - c[1]) * (pt[0] - c[0]) + (c[0] - b[0]) * (pt[1] - c[1])) / den
        w1 = ((c[1] - a[1]) * (pt[0] - c[0]) + (a[0] - c[0]) * (pt[1] - c[1])) / den
        bary = np.clip([w0, w1, 1 - w0 - w1], 0.0, 1.0)
        out_f.append(region[k])
        out_b.append(bary / bary.sum())
    return out_f, out_b


def _contour_directions(P, v, topo, region, c_head):
    """17 image directions from the centre: equal arc length along the frontal outline, ear to chin to ear."""
    p2 = v[:, :2]
    faces = topo.faces[region]
    # Start direction: the outline point at the height of (just below) the eye corners.
    ang = np.radians(np.linspace(100.0, 440.0, 171))
    dirs = np.stack([np.cos(ang), np.sin(ang)], 1)
    s = _contour_exits(p2, faces, c_head[:2], dirs).max(1)
    pts = c_head[:2] + s[:, None] * dirs
    y0 = P["eye_y"] - 0.006
    right = (ang < np.radians(270)) & np.isfinite(s)
    a0 = ang[right][np.argmin(np.abs(pts[right, 1] - y0))]
    a1 = 3 * np.pi - a0  # mirror about the downward direction
    sel = (ang >= a0) & (ang <= a1)
    seg = np.cumsum(np.r_[0.0, np.linalg.norm(np.diff(pts[sel], axis=0), axis=1)])
    targets = np.linspace(0, seg[-1], 17)
    a = np.interp(targets, seg, ang[sel])
    a[8] = 1.5 * np.pi
    return np.stack([np.cos(a), np.sin(a)], 1)


def _contour_table(P, v, topo):
    region = _contour_region(P, v, topo)
    c_head = np.array([0.0, 0.5 * (P["nose_tip_y"] + P["mouth_y"]), 0.0])
    dirs = _contour_directions(P, v, topo, region, c_head)
    faces = np.zeros((79, 17), np.int64)
    barys = np.zeros((79, 17, 3))
    for row in range(79):
        yaw = row if row < 40 else 39 - row
        f, b = _contour_row(P, v, topo, region, c_head, dirs, yaw)
        faces[row], barys[row] = f, b
    return faces, barys


