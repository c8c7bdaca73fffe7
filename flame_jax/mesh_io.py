"""Mesh export: Wavefront OBJ and PLY (ASCII or binary little-endian).

Plain host-side writers (NumPy), for one mesh at a time; loop over frames to write
a sequence. Readers for the same formats are included for round-trip tests and
for reading meshes back into other tools.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _check(vertices, faces, path):
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"{path}: vertices must be (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"{path}: faces must be (F, 3), got {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
        raise ValueError(f"{path}: faces index vertex {int(f.max())} of a mesh with {v.shape[0]} vertices")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{path}: vertices contain NaN or infinite values")
    return v, f.astype(np.int64)


def _colors_u8(colors, n, path):
    if colors is None:
        return None
    c = np.asarray(colors)
    if c.shape != (n, 3):
        raise ValueError(f"{path}: colors must be ({n}, 3), got {c.shape}")
    if np.issubdtype(c.dtype, np.floating):
        c = np.clip(np.round(c * 255.0), 0, 255)
    return c.astype(np.uint8)


def save_obj(path, vertices, faces, *, colors=None, precision: int = 6) -> Path:
    """Writes a triangle mesh as OBJ (1-based faces); optional per-vertex RGB in [0, 1].

    Colors use the common ``v x y z r g b`` extension (MeshLab, Blender, Open3D).
    """
    path = Path(path)
    v, f = _check(vertices, faces, path)
    lines = []
    if colors is not None:
        c = np.asarray(colors, np.float64)
        if c.shape != v.shape:
            raise ValueError(f"{path}: colors must be {v.shape}, got {c.shape}")
        if np.issubdtype(np.asarray(colors).dtype, np.integer):
            c = c / 255.0
        body = np.concatenate([v, c], axis=1)
        fmt = " ".join([f"%.{precision}f"] * 6)
    else:
        body = v
        fmt = " ".join([f"%.{precision}f"] * 3)
    lines.extend("v " + (fmt % tuple(row)) for row in body)
    lines.extend("f %d %d %d" % tuple(row) for row in f + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def load_obj(path):
    """Reads vertices (V, 3) float64 and triangle faces (F, 3) int64 from an OBJ file.

    Polygons with more than three corners are fan-triangulated; texture/normal
    indices (``f 1/1/1 ...``) are ignored; negative (relative) indices are resolved.
    """
    path = Path(path)
    verts, faces = [], []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                if parts[0] == "v":
                    verts.append([float(x) for x in parts[1:4]])
                elif parts[0] == "f":
                    idx = []
                    for token in parts[1:]:
                        k = int(token.split("/")[0])
                        idx.append(k - 1 if k > 0 else len(verts) + k)
                    for i in range(1, len(idx) - 1):
                        faces.append([idx[0], idx[i], idx[i + 1]])
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{lineno}: malformed OBJ line {line.strip()!r}") from None
    v = np.asarray(verts, np.float64).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    _check(v, f, path)
    return v, f


def save_ply(path, vertices, faces, *, colors=None, binary: bool = True) -> Path:
    """Writes a triangle mesh as PLY (binary little-endian by default); optional RGB colors."""
    path = Path(path)
    v, f = _check(vertices, faces, path)
    c = _colors_u8(colors, v.shape[0], path)
    header = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0", "comment flame_jax export"]
    header += [f"element vertex {v.shape[0]}", "property float x", "property float y", "property float z"]
    if c is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {f.shape[0]}", "property list uchar int vertex_indices", "end_header"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        if binary:
            vfields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
            if c is not None:
                vfields += [("r", "u1"), ("g", "u1"), ("b", "u1")]
            vrec = np.empty(v.shape[0], dtype=vfields)
            vrec["x"], vrec["y"], vrec["z"] = v[:, 0], v[:, 1], v[:, 2]
            if c is not None:
                vrec["r"], vrec["g"], vrec["b"] = c[:, 0], c[:, 1], c[:, 2]
            fh.write(vrec.tobytes())
            frec = np.empty(f.shape[0], dtype=[("n", "u1"), ("i", "<i4", (3,))])
            frec["n"] = 3
            frec["i"] = f
            fh.write(frec.tobytes())
        else:
            rows = []
            for i in range(v.shape[0]):
                row = "%.6f %.6f %.6f" % tuple(v[i])
                if c is not None:
                    row += " %d %d %d" % tuple(c[i])
                rows.append(row)
            rows.extend("3 %d %d %d" % tuple(tri) for tri in f)
            fh.write(("\n".join(rows) + "\n").encode("ascii"))
    return path


def load_ply(path):
    """Reads a triangle PLY written by ``save_ply`` (ASCII or binary little-endian).

    Returns (vertices (V, 3) float64, faces (F, 3) int64, colors (V, 3) uint8 or None).
    """
    path = Path(path)
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii", "replace").splitlines()
    body = data[end + len(b"end_header\n") :]
    fmt = next((h.split()[1] for h in header if h.startswith("format")), None)
    n_v = n_f = 0
    vprops = []
    current = None
    for h in header:
        p = h.split()
        if p[:1] == ["element"]:
            current = p[1]
            if current == "vertex":
                n_v = int(p[2])
            elif current == "face":
                n_f = int(p[2])
        elif p[:1] == ["property"] and current == "vertex":
            vprops.append((p[2], p[1]))
    has_color = any(name == "red" for name, _ in vprops)
    try:
        if fmt == "binary_little_endian":
            types = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4"}
            vdt = np.dtype([(name, types[t]) for name, t in vprops])
            vrec = np.frombuffer(body, vdt, count=n_v)
            fdt = np.dtype([("n", "u1"), ("i", "<i4", (3,))])
            frec = np.frombuffer(body, fdt, count=n_f, offset=vdt.itemsize * n_v)
            if n_f and np.any(frec["n"] != 3):
                raise ValueError("only triangle faces are supported")
            v = np.stack([vrec["x"], vrec["y"], vrec["z"]], 1).astype(np.float64)
            f = frec["i"].astype(np.int64)
            c = np.stack([vrec["red"], vrec["green"], vrec["blue"]], 1) if has_color else None
        elif fmt == "ascii":
            rows = body.decode("ascii").split("\n")
            vals = np.array([r.split() for r in rows[:n_v]], np.float64).reshape(n_v, len(vprops))
            v = vals[:, :3]
            c = vals[:, 3:6].astype(np.uint8) if has_color else None
            f = np.array([r.split()[1:4] for r in rows[n_v : n_v + n_f]], np.int64).reshape(n_f, 3)
        else:
            raise ValueError(f"unsupported PLY format {fmt!r}")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: malformed PLY ({e})") from None
    _check(v, f, path)
    return v, f, c


def save_obj_sequence(directory, vertices, faces, *, prefix: str = "frame", colors=None) -> list[Path]:
    """Writes one OBJ per frame of vertices [T, V, 3] as ``{prefix}_{t:05d}.obj``."""
    directory = Path(directory)
    os.makedirs(directory, exist_ok=True)
    vertices = np.asarray(vertices)
    return [save_obj(directory / f"{prefix}_{t:05d}.obj", vertices[t], faces, colors=colors) for t in range(vertices.shape[0])]
