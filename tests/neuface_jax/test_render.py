"""Renderer on hand-checkable cases: coverage, depth order, interpolation, shading, overlays, text."""

from __future__ import annotations

import numpy as np
import pytest

from neuface_jax.media import render


def _brute_force_mask(tri2d, h, w):
    """Pixel centres inside (or on) a triangle, one pixel at a time."""
    (x0, y0), (x1, y1), (x2, y2) = tri2d
    mask = np.zeros((h, w), bool)
    for i in range(h):
        for j in range(w):
            px, py = j + 0.5, i + 0.5
            e0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
            e1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
            e2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
            mask[i, j] = (e0 >= 0 and e1 >= 0 and e2 >= 0) or (e0 <= 0 and e1 <= 0 and e2 <= 0)
    return mask


def _screen(tri2d, depth=1.0):
    return np.concatenate([np.asarray(tri2d, float), np.full((3, 1), depth)], axis=1)


FACE = np.array([[0, 1, 2]])


def test_single_triangle_covers_exactly_the_pixel_centres_inside():
    rng = np.random.default_rng(0)
    for _ in range(20):
        tri = rng.uniform(-3, 20, size=(3, 2))  # partly off-screen too
        for order in ([0, 1, 2], [0, 2, 1]):  # both windings
            frags = render.rasterize(_screen(tri[order]), FACE, 16, 17)
            np.testing.assert_array_equal(frags.mask, _brute_force_mask(tri[order], 16, 17))


def test_centres_on_edges_are_covered_inclusively():
    # Right triangle through pixel centres: covered centres (j+.5, i+.5) with i + j <= 6.
    tri = np.array([[0.5, 0.5], [6.5, 0.5], [0.5, 6.5]])
    frags = render.rasterize(_screen(tri), FACE, 8, 8)
    i, j = np.mgrid[:8, :8]
    np.testing.assert_array_equal(frags.mask, i + j <= 6)
    assert frags.mask.sum() == 28


def test_no_cracks_between_adjacent_triangles():
    # A jittered 6x6 grid of quads split into triangles covering [2, 30]^2: every pixel
    # centre inside the square must be covered, including those on shared edges
    # (the grid lines x = 2 + 4.666k pass through no centre, the diagonals through many).
    rng = np.random.default_rng(1)
    n = 7
    g = np.linspace(2.0, 30.0, n)
    xs, ys = np.meshgrid(g, g)
    inner = (slice(1, -1), slice(1, -1))
    xs[inner] += rng.uniform(-1.5, 1.5, xs[inner].shape)
    ys[inner] += rng.uniform(-1.5, 1.5, ys[inner].shape)
    # Also put some interior vertices exactly on pixel centres.
    xs[2, 2], ys[2, 2] = 10.5, 11.5
    verts = np.stack([xs.ravel(), ys.ravel(), np.ones(n * n)], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    frags = render.rasterize(verts, faces, 32, 32)
    i, j = np.mgrid[:32, :32]
    inside = (j + 0.5 >= 2) & (j + 0.5 <= 30) & (i + 0.5 >= 2) & (i + 0.5 <= 30)
    np.testing.assert_array_equal(frags.mask, inside)
    # Barycentrics are valid where covered.
    b = frags.barycentric[frags.mask]
    assert (b >= -1e-6).all() and np.allclose(b.sum(1), 1.0, atol=1e-5)


def test_no_cracks_on_spokes_through_pixel_centres():
    # A fan of 16 triangles around a pixel centre; the diagonal, horizontal and vertical
    # spokes pass (mathematically) through many pixel centres, and their rounded float
    # endpoints put those centres within rounding error of two triangles' edges at once.
    c = np.array([16.5, 16.5])
    ang = np.arange(16) * np.pi / 8
    rim = c + 13.0 * np.stack([np.cos(ang), np.sin(ang)], 1)
    verts = np.concatenate([[[*c, 1.0]], np.concatenate([rim, np.ones((16, 1))], 1)])
    faces = np.stack([np.zeros(16, int), 1 + np.arange(16), 1 + (np.arange(16) + 1) % 16], 1)
    i, j = np.mgrid[:33, :33]
    p = np.stack([j + 0.5, i + 0.5], -1)
    # inside the regular 16-gon by a margin: signed distance to every rim edge
    a, b = rim, np.roll(rim, -1, 0)
    nrm = np.stack([b[:, 1] - a[:, 1], a[:, 0] - b[:, 0]], 1)
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    dist = np.einsum("ijd,kd->ijk", p, nrm) - np.einsum("kd,kd->k", a, nrm)
    strictly_inside = (dist < -1e-6).all(-1)
    strictly_outside = (dist > 1e-6).any(-1)
    for fc in (faces, faces[:, ::-1]):
        mask = render.rasterize(verts, fc, 33, 33).mask
        assert mask[strictly_inside].all()
        assert not mask[strictly_outside].any()
    # on-spoke centres are indeed present (the test exercises shared edges)
    assert strictly_inside[16, :].sum() > 20 and strictly_inside[np.arange(33), np.arange(33)].sum() > 15


def test_shared_edge_through_a_pixel_centre_never_cracks():
    # Edges drawn through a pixel centre with random float endpoints: evaluated naively
    # (each triangle in its own vertex order) both triangles miss the centre by rounding
    # in about 1 case in 150; canonical edge functions make that impossible.
    rng = np.random.default_rng(7)
    for _ in range(400):
        p = rng.integers(8, 56, size=2) + 0.5
        ang = rng.uniform(0, np.pi)
        d = np.array([np.cos(ang), np.sin(ang)])
        a, b = p - rng.uniform(1, 8) * d, p + rng.uniform(1, 8) * d
        side = np.array([-d[1], d[0]]) * rng.uniform(2, 6)
        verts = np.array([[*a, 1.0], [*b, 1.0], [*(p + side), 1.0], [*(p - side), 1.0]])
        faces = np.array([[0, 1, 2], [1, 0, 3]])  # consistent winding across the shared edge
        frags = render.rasterize(verts, faces, 64, 64)
        assert frags.mask[int(p[1]), int(p[0])], (a, b, p)


def test_nearer_triangle_wins_regardless_of_draw_order():
    near = np.array([[2.0, 2.0, 1.0], [14.0, 3.0, 1.0], [4.0, 14.0, 1.0]])
    far = np.array([[1.0, 1.0, 5.0], [15.0, 1.0, 5.0], [1.0, 15.0, 5.0]])
    for verts, near_face in ((np.concatenate([near, far]), 0), (np.concatenate([far, near]), 1)):
        faces = np.array([[0, 1, 2], [3, 4, 5]])
        frags = render.rasterize(verts, faces, 16, 16)
        near_mask = _brute_force_mask(near[:, :2], 16, 16)
        far_mask = _brute_force_mask(far[:, :2], 16, 16)
        assert near_mask.sum() > 20 and (far_mask & ~near_mask).sum() > 5
        assert (frags.face_index[near_mask] == near_face).all()
        assert (frags.face_index[far_mask & ~near_mask] == 1 - near_face).all()
        np.testing.assert_allclose(frags.depth[near_mask], 1.0)
        np.testing.assert_allclose(frags.depth[far_mask & ~near_mask], 5.0)
        assert np.isinf(frags.depth[~(near_mask | far_mask)]).all()


def test_interpenetrating_triangles_split_by_depth():
    # Triangle A's depth grows along x, B's decreases: A wins left of the crossing.
    a = np.array([[0.0, 0.0, 0.0], [16.0, 0.0, 16.0], [0.0, 16.0, 0.0]])
    b = np.array([[0.0, 0.0, 16.0], [16.0, 0.0, 0.0], [0.0, 16.0, 16.0]])
    frags = render.rasterize(np.concatenate([a, b]), np.array([[0, 1, 2], [3, 4, 5]]), 16, 16)
    covered = frags.mask
    j = np.arange(16)[None, :].repeat(16, 0)
    # Depth A = x, depth B = 16 - x (on the shared region): A nearer for x < 8.
    assert (frags.face_index[covered & (j + 0.5 < 8)] == 0).all()
    assert (frags.face_index[covered & (j + 0.5 > 8)] == 1).all()


def test_vertex_colour_at_a_vertex_pixel_and_interpolation():
    verts = np.array([[0.5, 0.5, 1.0], [12.5, 0.5, 1.0], [0.5, 12.5, 1.0]])
    colors = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    r = render.render(verts, FACE, colors, height=14, width=14, shading="none")
    np.testing.assert_allclose(r.image[0, 0], colors[0], atol=1e-6)  # pixel centre == vertex 0
    np.testing.assert_allclose(r.image[0, 12], colors[1], atol=1e-6)
    np.testing.assert_allclose(r.image[12, 0], colors[2], atol=1e-6)
    # Pixel (row 3, col 6): centre (6.5, 3.5) → barycentrics (1 - 0.5 - 0.25, 0.5, 0.25).
    np.testing.assert_allclose(r.image[3, 6], [0.25, 0.5, 0.25], atol=1e-6)
    np.testing.assert_allclose(r.barycentric[3, 6], [0.25, 0.5, 0.25], atol=1e-6)
    attr = render.interpolate(r, FACE, np.array([[0.0], [12.0], [24.0]]))
    assert attr[3, 6, 0] == pytest.approx(12 * 0.5 + 24 * 0.25)


def test_perspective_correct_depth_and_barycentrics():
    # A plane slanted in depth; pixel centres must land on the plane in camera space.
    f, c = 20.0, 16.0
    cam = np.array([[-0.5, -0.5, 2.0], [0.6, -0.5, 3.5], [-0.5, 0.6, 2.5]])  # metres, z away
    scr = np.stack([f * cam[:, 0] / cam[:, 2] + c, f * cam[:, 1] / cam[:, 2] + c, cam[:, 2]], 1)
    frags = render.rasterize(scr, FACE, 32, 32, perspective_correct=True)
    n = np.cross(cam[1] - cam[0], cam[2] - cam[0])
    rows, cols = np.nonzero(frags.mask)
    ray = np.stack([(cols + 0.5 - c) / f, (rows + 0.5 - c) / f, np.ones(rows.size)], 1)
    z_true = (n @ cam[0]) / (ray @ n)  # ray-plane intersection depth
    np.testing.assert_allclose(frags.depth[rows, cols], z_true, rtol=1e-5)
    # Barycentrics interpolate the camera-space point exactly.
    p = np.einsum("nk,kc->nc", frags.barycentric[rows, cols].astype(np.float64), cam)
    np.testing.assert_allclose(p, ray * z_true[:, None], atol=1e-5)
    linear = render.rasterize(scr, FACE, 32, 32)
    assert np.abs(linear.depth[frags.mask] - frags.depth[frags.mask]).max() > 1e-2  # the correction matters


def test_shading_facing_light_is_brighter_and_background_kept():
    facing = np.array([[2.0, 2.0, 5.0], [14.0, 2.0, 5.0], [2.0, 14.0, 5.0]])  # normal along -z (toward camera)
    # Same footprint shifted right, tilted: depth grows with x (a 60-degree slope).
    tilted = facing + np.array([16.0, 0.0, 0.0])
    tilted[:, 2] = 5.0 + np.tan(np.radians(60)) * (tilted[:, 0] - 18.0)
    verts = np.concatenate([facing, tilted])
    faces = np.array([[0, 2, 1], [3, 5, 4]])  # counter-clockwise from outside in a y-up view
    bg = np.array([0.1, 0.2, 0.3])
    r = render.render(verts, faces, np.ones(3), height=16, width=32, shading="flat", light_direction=(0, 0, -1),
                      ambient=0.2, diffuse=0.8, background=bg)
    a = r.image[5, 5]
    b = r.image[5, 21]
    np.testing.assert_allclose(a, 1.0, atol=1e-6)  # ambient + diffuse · cos 0
    np.testing.assert_allclose(b, 0.2 + 0.8 * np.cos(np.radians(60)), atol=1e-5)
    assert (a > b).all()
    np.testing.assert_allclose(r.image[15, 15], bg, atol=1e-6)  # nothing drawn there
    assert r.coverage[15, 15] == 0 and r.coverage[5, 5] == 1
    # Smooth shading with the same (per-vertex) normals agrees; light from behind → ambient only.
    r2 = render.render(verts, faces, np.ones(3), height=16, width=32, light_direction=(0, 0, 1),
                       ambient=0.2, diffuse=0.8)
    np.testing.assert_allclose(r2.image[5, 5], 0.2, atol=1e-6)
    for shading in ("smooth", "phong"):  # per-vertex normals of two flat triangles = their face normals
        r3 = render.render(verts, faces, np.ones(3), height=16, width=32, shading=shading,
                           light_direction=(0, 0, -1), ambient=0.2, diffuse=0.8)
        np.testing.assert_allclose(r3.image[5, 5], a, atol=1e-5)
        np.testing.assert_allclose(r3.image[5, 21], b, atol=1e-5)


def test_gouraud_close_to_phong_on_a_dense_mesh():
    v, f = render.uv_sphere(48, 64)
    sv = render.fit_orthographic(v, 96, 96, fill=0.9)
    colors = 0.5 + 0.5 * v
    smooth = render.render(sv, f, colors, height=96, width=96, cull_backfaces=True).image
    phong = render.render(sv, f, colors, height=96, width=96, cull_backfaces=True, shading="phong").image
    flat = render.render(sv, f, colors, height=96, width=96, cull_backfaces=True, shading="flat").image
    d_smooth, d_flat = np.abs(smooth - phong).mean(), np.abs(flat - phong).mean()
    assert d_smooth < 1e-3 and d_flat > 5 * d_smooth


def test_backface_culling():
    ccw_up = np.array([[2.0, 2.0, 1.0], [2.0, 14.0, 1.0], [14.0, 2.0, 1.0]])  # front facing (area2 < 0)
    frags = render.rasterize(ccw_up, FACE, 16, 16, cull_backfaces=True)
    assert frags.mask.sum() > 50
    frags = render.rasterize(ccw_up[[0, 2, 1]], FACE, 16, 16, cull_backfaces=True)
    assert frags.mask.sum() == 0
    assert render.rasterize(ccw_up[[0, 2, 1]], FACE, 16, 16).mask.sum() > 50


def test_uv_sphere_closed_outward_and_normals():
    v, f = render.uv_sphere(8, 12)
    assert v.shape == (7 * 12 + 2, 3) and f.shape == (2 * 12 * 7, 3)
    edges = np.sort(f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()  # closed, manifold
    n = render.vertex_normals(v, f)
    assert (np.einsum("vc,vc->v", n, v) > 0.95).all()  # outward, close to radial
    fn = render.face_normals(v, f)
    assert (np.einsum("fc,fc->f", fn, v[f].mean(1)) > 0).all()
    import jax.numpy as jnp

    np.testing.assert_allclose(np.asarray(render.vertex_normals(jnp.asarray(v, jnp.float32), jnp.asarray(f))), n,
                               atol=1e-5)
    # In screen space (y down, depth away) the visible hemisphere faces the camera (-z).
    sv = render.fit_orthographic(v, 64, 64)
    ns = render.vertex_normals(sv, f)
    assert (ns[v[:, 2] > 0.5, 2] < 0).all()


def test_sphere_render_silhouette_and_visibility():
    v, f = render.uv_sphere(24, 32)
    sv = render.fit_orthographic(v, 64, 64, fill=0.75)  # radius 24 px, centre (32, 32)
    r = render.render(sv, f, height=64, width=64, cull_backfaces=True)
    i, j = np.mgrid[:64, :64]
    dist = np.hypot(j + 0.5 - 32, i + 0.5 - 32)
    assert r.mask[dist < 23].all() and not r.mask[dist > 24.01].any()
    # Shading peaks toward the light (upper right by default), darker at the far side.
    lum = r.image.mean(-1)
    assert lum[20, 40] > lum[44, 22]
    # Front points are visible, back points are not.
    front = sv[v[:, 2] > 0.3]
    back = sv[v[:, 2] < -0.3]
    assert render.point_visibility(front, r.depth, tolerance=1.0).all()
    assert not render.point_visibility(back, r.depth, tolerance=1.0).any()
    assert not render.point_visibility(np.array([[-1.0, 5.0, 0.0]]), r.depth, tolerance=1.0).any()


def test_supersampling_antialiases_edges():
    tri = np.array([[0.0, 0.0, 1.0], [16.0, 0.0, 1.0], [0.0, 16.0, 1.0]])
    r = render.render(tri, FACE, np.ones(3), height=16, width=16, shading="none", supersample=4, background=0.0)
    # Pixel (row 0, col 15): the hypotenuse x + y = 16 cuts it in half.
    assert r.coverage[0, 15] == pytest.approx(0.5, abs=0.2)
    assert r.coverage[5, 5] == 1.0 and r.coverage[15, 15] == 0.0
    np.testing.assert_allclose(r.image[..., 0], r.coverage, atol=1e-6)
    assert r.face_index[5, 5] == 0 and r.face_index[15, 15] == -1


def test_wireframe_draws_on_edges_only():
    tri = np.array([[2.0, 2.0], [28.0, 2.0], [2.0, 28.0]])
    img = np.zeros((32, 32, 3), np.uint8)
    out = render.draw_wireframe(img, tri, FACE, color=(1.0, 1.0, 1.0))
    assert out.dtype == np.uint8 and img.max() == 0  # input untouched
    painted = out[..., 0] > 0
    rows, cols = np.nonzero(painted)
    cx, cy = cols + 0.5, rows + 0.5
    # distance from each painted pixel centre to the nearest edge line
    d = np.min(np.stack([np.abs(cy - 2.0) + np.maximum(0, cx - 28.5) + np.maximum(0, 1.5 - cx),
                         np.abs(cx - 2.0) + np.maximum(0, cy - 28.5) + np.maximum(0, 1.5 - cy),
                         np.abs(cx + cy - 30.0) / np.sqrt(2)]), axis=0)
    assert (d <= 1.0).all()
    assert painted[2, 2] and painted[2, 27] and painted[27, 2]  # vertices
    assert not painted[10, 10] and not painted[30, 30]  # interior, outside
    # 8-connected: the hypotenuse has a pixel in every column between its ends
    assert all(painted[:, c].any() for c in range(2, 28))
    thick = render.draw_wireframe(img, tri, FACE, thickness=3)
    assert (thick[..., 1] > 0).sum() > 2 * painted.sum()


def test_hidden_line_removal_in_wireframe_overlay():
    v, f = render.uv_sphere(8, 12)
    sv = render.fit_orthographic(v, 64, 64, fill=0.8)
    img = np.zeros((64, 64, 3))
    all_lines = render.draw_wireframe(img, sv, f, color=(1, 1, 1))
    visible = render.overlay_mesh(img, sv, f, mode="wireframe", alpha=1.0, wire_color=(1, 1, 1))
    # The back edges are gone: fewer pixels, and all of them inside the silhouette.
    assert 0 < (visible[..., 0] > 0).sum() < (all_lines[..., 0] > 0).sum()
    solid = render.overlay_mesh(np.full((64, 64, 3), 255, np.uint8), sv, f, mode="solid", alpha=0.5)
    assert solid.dtype == np.uint8 and solid[0, 0].tolist() == [255, 255, 255]
    assert solid[32, 32].max() < 255  # blended with the grey mesh
    with pytest.raises(ValueError):
        render.overlay_mesh(img, sv, f, mode="points")


def test_overlay_both_is_shaded_with_visible_edges_on_top():
    v, f = render.uv_sphere(8, 12)
    sv = render.fit_orthographic(v, 64, 64, fill=0.8)
    img = np.zeros((64, 64, 3), np.uint8)
    solid = render.overlay_mesh(img, sv, f, mode="solid", alpha=0.4)
    wire = render.overlay_mesh(img, sv, f, mode="wireframe", alpha=1.0, wire_color=(1, 0, 0))
    both = render.overlay_mesh(img, sv, f, mode="both", alpha=0.4, wire_color=(1, 0, 0), wire_alpha=1.0)
    lines = wire[..., 0] > 0
    np.testing.assert_array_equal(both[lines], wire[lines])  # the visible edges, opaque, on top
    np.testing.assert_array_equal(both[~lines], solid[~lines])  # the translucent mesh elsewhere


def test_mesh_edges_and_coarsening():
    v, f = render.uv_sphere(16, 32)
    e = render.mesh_edges(f)
    assert e.shape == (v.shape[0] + f.shape[0] - 2, 2)  # Euler: E = V + F - 2 on a sphere
    assert (e[:, 0] < e[:, 1]).all() and len(np.unique(e[:, 0] * v.shape[0] + e[:, 1])) == len(e)
    np.testing.assert_array_equal(render.coarse_edges(f, 0), e)
    prev = e
    for level in (1, 2, 3):
        c = render.coarse_edges(f, level)
        kept = np.unique(c)
        assert len(kept) < 0.7 * len(np.unique(prev)) and len(c) < len(prev)
        assert set(kept.tolist()) <= set(np.unique(prev).tolist())  # a subset of the finer level's vertices
        prev = c
    # Coarse edges are longer: a wire overlay with a spacing draws fewer pixels than every edge.
    sv = render.fit_orthographic(v, 96, 96, fill=0.9)
    img = np.zeros((96, 96, 3), np.uint8)
    every = render.overlay_mesh(img, sv, f, mode="wireframe", alpha=1.0)
    sparse = render.overlay_mesh(img, sv, f, mode="wireframe", alpha=1.0, wire_spacing=20.0)
    assert 0 < (sparse.sum(-1) > 0).sum() < 0.6 * (every.sum(-1) > 0).sum()


def test_draw_text_changes_only_its_box():
    img = np.full((40, 120, 3), 100, np.uint8)
    out = render.draw_text(img, "frame 12", (5, 6), (1.0, 1.0, 1.0), scale=0.4)
    tw, th = render.text_size("frame 12", 0.4)
    changed = np.any(out != 100, axis=-1)
    rows, cols = np.nonzero(changed)
    assert out.dtype == np.uint8 and img.max() == 100  # input untouched
    assert rows.min() == 6 and cols.min() == 5 and rows.max() < 6 + th and cols.max() < 5 + tw
    assert out[changed].max() > 200 and out[changed].min() < 60  # white letters on a dark box
    assert np.any(render.draw_text(img, "frame 13", (5, 6), scale=0.4) != out)
    boxed = render.draw_box(img.astype(np.float32) / 255, (0, 0, 10, 5), (0, 0, 0), 1.0)
    assert boxed.dtype == np.float32 and boxed[:5, :10].max() == 0 and boxed[5:].min() > 0


def test_draw_points_and_save_png(tmp_path):
    img = np.zeros((20, 20, 3), np.float32)
    out = render.draw_points(img, np.array([[10.0, 10.0], [2.5, 3.5], [np.nan, 1.0]]), color=(1, 0, 0), radius=2.0,
                             visible=np.array([True, False, True]), hidden_color=(0, 0, 1))
    assert out[9, 9, 0] == 1.0 and out[11, 11, 0] == 0.0 and out[10, 10, 0] == 1.0
    assert out[3, 2, 2] == 1.0  # hidden point in its own colour
    assert out[0, 0].sum() == 0 and img.sum() == 0
    assert render.draw_points(img, np.array([[2.5, 3.5]]), visible=[False]).sum() == 0  # hidden, skipped
    path = tmp_path / "sub" / "points.png"
    render.save_png(path, out)
    import imageio.v3 as iio

    back = iio.imread(path)
    np.testing.assert_array_equal(back, render.to_uint8(out))


def test_input_validation():
    with pytest.raises(ValueError):
        render.rasterize(np.zeros((3, 2)), FACE, 4, 4)
    with pytest.raises(ValueError):
        render.rasterize(np.zeros((3, 3)), np.array([[0, 1, 3]]), 4, 4)
    with pytest.raises(ValueError):
        render.render(np.zeros((3, 3)), FACE, height=4, width=4, shading="toon")
    with pytest.raises(ValueError):
        render.render(np.zeros((3, 3)), FACE, np.ones((2, 3)), height=4, width=4)
    empty = render.rasterize(np.zeros((0, 3)), np.zeros((0, 3), int), 4, 5)
    assert empty.face_index.shape == (4, 5) and not empty.mask.any()
