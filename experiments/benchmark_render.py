r"""Benchmark of the NumPy z-buffer renderer (neuface_jax.media.render) on the CPU.

Renders a turning head — the demo FLAME-format head (5,582 vertices, 11,152 triangles)
and/or a UV sphere the size of FLAME (4,972 vertices, 9,940 triangles) — at
--size x --size, orthographic framing, and reports frames/s for:

* ``rasterize``: z-buffer, face index and barycentric buffers only;
* ``render``: rasterize + vertex normals + smooth Lambert shading of per-vertex colours
  over a background image (float image), and + conversion to uint8;
* ``overlay_solid`` / ``overlay_wireframe``: the overlays used on video frames;
* ``render_ss2``: render with 2x2 supersampling (anti-aliased synthetic frames).

References measured in the same run on the same frames (ratios reported):

* ``jax_tiles``: a jitted JAX rasterizer — every triangle enumerates a fixed tile of
  pixel candidates (the largest bounding box of the clip, rounded up to a power of
  two), scatter-min on depth, then a scatter for the face index. Its face-index
  buffer is compared with ours (fraction of identical pixels).
* ``python_loop``: a rasterizer looping over triangles in Python (each triangle's
  bounding box vectorized), timed on a few frames.

    python experiments/benchmark_render.py                  # demo head + sphere, 256 px
    python experiments/benchmark_render.py --mesh=sphere --size=224 --frames=30
    # the committed figures (README renderer table):
    python experiments/benchmark_render.py --out=experiments/results/benchmark_render_cpu.json

Prints a table and one summary line, and writes JSON to --out (default under the system's temporary
folder: a run never rewrites a tracked results file unless asked to).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("mesh", ["demo", "sphere"], "Meshes to render: demo (flame_jax demo head), sphere.")
flags.DEFINE_integer("size", 256, "Image height and width in pixels.")
flags.DEFINE_float("fill", 0.9, "Fraction of the image side the head's larger x/y extent fills.")
flags.DEFINE_integer("frames", 60, "Frames of the turning head rendered per timed repeat.")
flags.DEFINE_integer("repeats", 3, "Timed repeats; the best is reported.")
flags.DEFINE_bool("jax_reference", True, "Also time the jitted JAX tile rasterizer.")
flags.DEFINE_integer("loop_frames", 3, "Frames timed with the Python-loop reference (0 = skip).")
flags.DEFINE_integer("jax_frames", 6, "Frames timed (once, after a compile) with the JAX reference.")
flags.DEFINE_string("png_dir", "/tmp/benchmark_render", "Where sample frames are written as PNG ('' = none).")
flags.DEFINE_string("out", str(Path(tempfile.gettempdir()) / "neuface_jax_benchmarks" / "benchmark_render_cpu.json"),
                    "JSON output path (experiments/results/benchmark_render_cpu.json: the committed figures).")


# ------------------------------------------------------------------------ meshes
def _turning_head(mesh: str, frames: int, size: int, fill: float):
    """Screen vertices [T, V, 3], faces, per-vertex colours for a head turning ±60° in yaw."""
    import numpy as np

    from neuface_jax.media import render

    yaw = np.radians(60.0) * np.sin(np.linspace(0, 2 * np.pi, frames, endpoint=False))
    pitch = np.radians(15.0) * np.sin(np.linspace(0, 4 * np.pi, frames, endpoint=False))
    if mesh == "demo":
        import jax.numpy as jnp

        import flame_jax
        from neuface_jax.synthetic import synth

        model = flame_jax.demo_model()
        pose = np.zeros((frames, 15), np.float32)
        pose[:, 0], pose[:, 1] = pitch, yaw
        pose[:, 6] = 0.15 * (1 + np.sin(np.linspace(0, 6 * np.pi, frames)))  # jaw opening
        verts = np.asarray(flame_jax.forward(model, pose=jnp.asarray(pose)).vertices, np.float64)
        faces = np.asarray(model.faces)
        colors = synth.procedural_albedo(model, flame_jax.demo_embedding_68())
        name = f"demo head ({model.num_vertices} vertices, {model.num_faces} triangles)"
    elif mesh == "sphere":
        base, faces = render.uv_sphere(71, 71)
        base = base * np.array([0.08, 0.11, 0.09])  # head-sized ellipsoid, metres
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        ry = np.zeros((frames, 3, 3))
        ry[:, 0, 0], ry[:, 0, 2], ry[:, 1, 1], ry[:, 2, 0], ry[:, 2, 2] = cy, sy, 1, -sy, cy
        rx = np.zeros((frames, 3, 3))
        rx[:, 0, 0], rx[:, 1, 1], rx[:, 1, 2], rx[:, 2, 1], rx[:, 2, 2] = 1, cp, -sp, sp, cp
        verts = np.einsum("tij,tjk,vk->tvi", ry, rx, base)
        unit = base / np.linalg.norm(base, axis=1, keepdims=True)
        colors = 0.55 + 0.4 * unit * np.array([1.0, 0.8, 0.6])
        name = f"UV sphere ({base.shape[0]} vertices, {faces.shape[0]} triangles)"
    else:
        raise ValueError(f"unknown mesh {mesh!r}")
    screen = render.fit_orthographic(verts, size, size, fill=fill)
    return screen, faces.astype(np.int32), colors.astype(np.float32), name


def _background(size: int):
    import numpy as np

    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.35 + 0.2 * xx, 0.4 + 0.1 * yy, 0.5 - 0.15 * xx * yy], -1)
    return img.astype(np.float32)


# ---------------------------------------------------------------- references
def _jax_tile_rasterizer(faces, height: int, width: int, tile: int):
    """A jitted fixed-tile rasterizer: (V, 3) screen vertices → face index, depth (back faces culled)."""
    import jax
    import jax.numpy as jnp

    f = jnp.asarray(faces, jnp.int32)
    oy, ox = jnp.meshgrid(jnp.arange(tile), jnp.arange(tile), indexing="ij")
    ox, oy = ox.reshape(-1), oy.reshape(-1)
    num_f, num_pix = f.shape[0], height * width

    @jax.jit
    def rasterize(v):
        tri = v[f]
        x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]
        area2 = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (y[:, 1] - y[:, 0]) * (x[:, 2] - x[:, 0])
        col0 = jnp.clip(jnp.ceil(x.min(1) - 0.5), 0, width - 1).astype(jnp.int32)
        row0 = jnp.clip(jnp.ceil(y.min(1) - 0.5), 0, height - 1).astype(jnp.int32)
        col1 = jnp.floor(x.max(1) - 0.5).astype(jnp.int32)
        row1 = jnp.floor(y.max(1) - 0.5).astype(jnp.int32)
        px = col0[:, None] + ox
        py = row0[:, None] + oy
        ok = (px <= col1[:, None]) & (py <= row1[:, None]) & (px < width) & (py < height) & (area2 < 0)[:, None]
        cx, cy = px + 0.5, py + 0.5

        def edge(a, b):  # E_{a->b}(p), positive inside for area2 < 0 after the sign below
            return (x[:, b, None] - x[:, a, None]) * (cy - y[:, a, None]) - (y[:, b, None] - y[:, a, None]) * (
                cx - x[:, a, None]
            )

        s = jnp.sign(area2)[:, None]
        e = jnp.stack([edge(1, 2) * s, edge(2, 0) * s, edge(0, 1) * s], -1)
        inside = ok & (e >= 0).all(-1)
        bary = e / jnp.where(inside, e.sum(-1), 1.0)[..., None]
        depth = jnp.where(inside, (bary * z[:, None, :]).sum(-1), jnp.inf)
        pix = jnp.where(inside, py * width + px, num_pix).reshape(-1)
        zbuf = jnp.full(num_pix + 1, jnp.inf, depth.dtype).at[pix].min(depth.reshape(-1))
        win = inside.reshape(-1) & (depth.reshape(-1) == zbuf[pix])
        ids = jnp.broadcast_to(jnp.arange(num_f)[:, None], inside.shape).reshape(-1)
        fbuf = jnp.full(num_pix + 1, -1, jnp.int32).at[jnp.where(win, pix, num_pix)].max(ids)
        return fbuf[:-1].reshape(height, width), zbuf[:-1].reshape(height, width)

    return rasterize


def _python_loop_rasterize(v, faces, height: int, width: int):
    """One triangle at a time (its bounding box vectorized), back faces culled."""
    import numpy as np

    depth = np.full((height, width), np.inf)
    face_index = np.full((height, width), -1, np.int32)
    for fi, (a, b, c) in enumerate(faces):
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = v[a], v[b], v[c]
        area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area2 >= 0:
            continue
        c0, c1 = max(int(np.ceil(min(x0, x1, x2) - 0.5)), 0), min(int(np.floor(max(x0, x1, x2) - 0.5)), width - 1)
        r0, r1 = max(int(np.ceil(min(y0, y1, y2) - 0.5)), 0), min(int(np.floor(max(y0, y1, y2) - 0.5)), height - 1)
        if c1 < c0 or r1 < r0:
            continue
        py, px = np.mgrid[r0 : r1 + 1, c0 : c1 + 1] + 0.5
        w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) / area2
        w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) / area2
        w2 = 1.0 - w0 - w1
        z = w0 * z0 + w1 * z1 + w2 * z2
        win = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (z < depth[r0 : r1 + 1, c0 : c1 + 1])
        depth[r0 : r1 + 1, c0 : c1 + 1][win] = z[win]
        face_index[r0 : r1 + 1, c0 : c1 + 1][win] = fi
    return face_index, depth


# ---------------------------------------------------------------------- timing
def _fps(fn, frames, repeats: int) -> float:
    fn(frames[0])  # warm-up (compile for jitted functions)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for fr in frames:
            out = fn(fr)
        if hasattr(out, "block_until_ready"):
            out.block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return len(frames) / best


def _bench_mesh(mesh: str, size: int):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from neuface_jax.media import render

    screen, faces, colors, name = _turning_head(mesh, FLAGS.frames, size, FLAGS.fill)
    bg = _background(size)
    bg_u8 = render.to_uint8(bg)
    frames = list(screen)
    rows: dict[str, float] = {}

    rows["rasterize"] = _fps(lambda v: render.rasterize(v, faces, size, size, cull_backfaces=True), frames,
                             FLAGS.repeats)

    def full(v):
        return render.render(v, faces, colors, height=size, width=size, background=bg, cull_backfaces=True).image

    rows["render"] = _fps(full, frames, FLAGS.repeats)
    rows["render_uint8"] = _fps(lambda v: render.to_uint8(full(v)), frames, FLAGS.repeats)
    rows["render_ss2"] = _fps(
        lambda v: render.render(v, faces, colors, height=size, width=size, background=bg, cull_backfaces=True,
                                supersample=2).image, frames, FLAGS.repeats)
    rows["overlay_solid"] = _fps(lambda v: render.overlay_mesh(bg_u8, v, faces, mode="solid"), frames, FLAGS.repeats)
    rows["overlay_wireframe"] = _fps(lambda v: render.overlay_mesh(bg_u8, v, faces, mode="wireframe"), frames,
                                     FLAGS.repeats)

    # Statistics of the work: triangles drawn, covered pixels, candidate pixels per triangle.
    frag = render.rasterize(frames[0], faces, size, size, cull_backfaces=True)
    tri = screen[:, faces]
    span = np.maximum(np.ptp(tri[..., 0], axis=-1), np.ptp(tri[..., 1], axis=-1))
    stats = {
        "covered_pixels_frame0": int(frag.mask.sum()),
        "visible_triangles_frame0": int(np.unique(frag.face_index[frag.mask]).size),
        "max_triangle_bbox_px": float(span.max()),
        "mean_triangle_bbox_px": float(span.mean()),
    }

    refs: dict[str, dict] = {}
    if FLAGS.jax_reference:
        tile = int(2 ** np.ceil(np.log2(np.ceil(span.max()) + 2)))
        jr = _jax_tile_rasterizer(faces, size, size, tile)
        jframes = [jnp.asarray(f, jnp.float32) for f in frames[: FLAGS.jax_frames]]
        fps = _fps(lambda v: jr(v)[0], jframes, 1)
        agree = []
        for f, jf in zip(frames, jframes):
            ours = render.rasterize(f, faces, size, size, cull_backfaces=True).face_index
            theirs = np.asarray(jr(jf)[0])
            covered = (ours >= 0) | (theirs >= 0)
            agree.append(float((ours == theirs)[covered].mean()))
        refs["jax_tiles"] = {"fps": fps, "tile": tile, "devices": str(jax.devices()[0].platform),
                             "face_index_agreement": float(np.mean(agree))}
    if FLAGS.loop_frames > 0:
        lf = frames[: FLAGS.loop_frames]
        fps = _fps(lambda v: _python_loop_rasterize(v, faces, size, size), lf, 1)
        ours = render.rasterize(lf[0], faces, size, size, cull_backfaces=True).face_index
        theirs = _python_loop_rasterize(lf[0], faces, size, size)[0]
        covered = (ours >= 0) | (theirs >= 0)
        refs["python_loop"] = {"fps": fps, "face_index_agreement": float((ours == theirs)[covered].mean())}
    for r in refs.values():
        r["ratio_ours_rasterize_vs_reference"] = rows["rasterize"] / r["fps"]

    if FLAGS.png_dir:
        out = Path(FLAGS.png_dir)
        for k in (0, len(frames) // 4, len(frames) // 2):
            v = frames[k]
            render.save_png(out / f"{mesh}_{k:03d}_render.png",
                            render.render(v, faces, colors, height=size, width=size, background=bg,
                                          cull_backfaces=True, supersample=2).image)
            render.save_png(out / f"{mesh}_{k:03d}_wire.png", render.overlay_mesh(bg_u8, v, faces, mode="wireframe"))
            render.save_png(out / f"{mesh}_{k:03d}_solid.png", render.overlay_mesh(bg_u8, v, faces, mode="solid"))
    return {"mesh": name, "fps": rows, "stats": stats, "references": refs}


def main(argv):
    del argv
    import jax
    import numpy as np

    results = {
        "benchmark": "neuface_jax.media.render (NumPy z-buffer rasterizer)",
        "size": FLAGS.size,
        "frames": FLAGS.frames,
        "repeats": FLAGS.repeats,
        "fill": FLAGS.fill,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "numpy": np.__version__, "jax": jax.__version__},
        "meshes": {},
    }
    for mesh in FLAGS.mesh:
        res = _bench_mesh(mesh, FLAGS.size)
        results["meshes"][mesh] = res
        print(f"\n{res['mesh']} at {FLAGS.size}x{FLAGS.size}, {FLAGS.frames} frames of a turning head:")
        for k, v in res["fps"].items():
            print(f"  {k:<20s} {v:8.1f} frames/s   ({1000.0 / v:6.2f} ms/frame)")
        for k, r in res["references"].items():
            print(f"  ref {k:<16s} {r['fps']:8.1f} frames/s   ours/ref rasterize = "
                  f"{r['ratio_ours_rasterize_vs_reference']:.1f}x, face-index agreement {r['face_index_agreement']:.4f}")
        print(f"  stats: {res['stats']}")
    out = Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    summary = ", ".join(f"{m}: render {r['fps']['render']:.0f} fps" for m, r in results["meshes"].items())
    print(f"\nsummary ({FLAGS.size}px, {os.cpu_count()} CPUs): {summary}; wrote {out}")


if __name__ == "__main__":
    app.run(main)
