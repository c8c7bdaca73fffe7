"""Visibility outside the gradient: triangle ids and barycentrics of every crop pixel.

The differentiable renderer (``photometric.render``) interpolates attributes in JAX with fixed
triangle ids and barycentric coordinates. Those come from the project's NumPy rasterizer
(``neuface_jax.media.render.rasterize``), called on the host:

* ``rasterize_host`` — NumPy in, NumPy out (between steps, or for evaluation);
* ``rasterize`` — the same inside traced code through ``jax.pure_callback`` (jit, vmap, grad: its
  outputs are constants, as visibility is piecewise constant and its gradient is zero almost
  everywhere);
* ``rasterize_cached`` — ``rasterize`` refreshed only every ``refresh_every`` calls for the same
  images (a host-side memo keyed by a fingerprint of the images), the scheme of trackers that
  re-rasterize every few steps: the surface points a pixel sees stay valid surface points
  while the mesh moves, only coverage goes stale.

Geometry: the weak-perspective camera of ``core.camera`` — a model-frame vertex (metres; x right,
y up, z toward the camera) lands at crop pixel ``(p + 1)·S/2`` of its normalized projection ``p``;
depth is ``−z`` scaled like x and y (larger = farther), so normals computed in screen space are right.
Back faces are culled (a closed head seen from outside).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from neuface_jax.core import camera as camera_lib
from neuface_jax.media import render as render_lib


@dataclasses.dataclass(frozen=True)
class Raster:
    """Per-pixel visibility of a batch of images (a pytree; no gradient flows through it).

    Attributes:
      face_index: [..., H, W] int32, the visible triangle, -1 where the mesh does not cover the pixel.
      barycentric: [..., H, W, 3] float32 barycentric coordinates of the pixel centre in that triangle.
    """

    face_index: jax.Array
    barycentric: jax.Array

    @property
    def mask(self) -> jax.Array:
        """[..., H, W] float32, 1 where a triangle covers the pixel centre."""
        return (self.face_index >= 0).astype(jnp.float32)


jax.tree_util.register_dataclass(Raster, data_fields=["face_index", "barycentric"], meta_fields=[])


def screen_vertices(vertices, cam, size: int):
    """Model-frame vertices [..., V, 3] and cameras [..., 3] → crop-pixel screen vertices [..., V, 3]
    (x right, y down, depth larger = farther, in pixels). Works on JAX and NumPy arrays."""
    xp = np if isinstance(vertices, np.ndarray) and isinstance(cam, np.ndarray) else jnp
    v = xp.asarray(vertices)
    c = xp.asarray(cam)
    if xp is np:
        xy = c[..., None, 0:1] * (v[..., :2] + c[..., None, 1:3]) * np.array([1.0, -1.0])
    else:
        xy = camera_lib.project(v, c)
    px = camera_lib.normalized_to_pixels(xy, size, xp=xp)
    depth = -v[..., 2:3] * c[..., None, 0:1] * (size / 2.0)
    return xp.concatenate([px, depth], -1)


def rasterize_host(screen, faces, size: int, *, cull_backfaces: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """NumPy rasterization of a batch: screen vertices [..., V, 3] → (face_index [..., S, S] int32,
    barycentric [..., S, S, 3] float32). Non-finite meshes give empty images."""
    screen = np.asarray(screen, np.float64)
    faces = np.asarray(faces)
    lead = screen.shape[:-2]
    flat = screen.reshape((-1,) + screen.shape[-2:])
    fi = np.full((flat.shape[0], size, size), -1, np.int32)
    bary = np.zeros((flat.shape[0], size, size, 3), np.float32)
    for i, sv in enumerate(flat):
        if not np.all(np.isfinite(sv)):
            continue
        frags = render_lib.rasterize(sv, faces, size, size, cull_backfaces=cull_backfaces)
        fi[i] = frags.face_index
        bary[i] = frags.barycentric
    return fi.reshape(lead + (size, size)), bary.reshape(lead + (size, size, 3))


def _result_shapes(lead, size):
    return (
        jax.ShapeDtypeStruct(lead + (size, size), jnp.int32),
        jax.ShapeDtypeStruct(lead + (size, size, 3), jnp.float32),
    )


def rasterize(vertices, cam, faces, size: int, *, cull_backfaces: bool = True) -> Raster:
    """Visibility of model-frame meshes [..., V, 3] seen through cameras [..., 3] in S×S crops,
    computed on the host every call (usable under jit / vmap / grad; no gradient)."""
    screen = jax.lax.stop_gradient(screen_vertices(vertices, cam, size))
    faces = jnp.asarray(faces, jnp.int32)
    lead = screen.shape[:-2]

    def host(sv, f):
        f = np.asarray(f).reshape((-1,) + f.shape[-2:])[0]
        start = time.perf_counter()
        out = rasterize_host(sv, f, size, cull_backfaces=cull_backfaces)
        MEMO.record(time.perf_counter() - start)  # counted like a memo refresh (the raster's share of a fit)
        return out

    fi, bary = jax.pure_callback(host, _result_shapes(lead, size), screen, faces, vmap_method="broadcast_all")
    return Raster(fi, bary)


# --------------------------------------------------------------------------- refreshed every N calls
class RasterMemo:
    """Host-side memo of rasterizations, keyed by an image fingerprint; thread-safe and bounded.

    Each key remembers its last raster and how many times it was asked for; the raster is recomputed
    on the first request and every ``refresh_every``-th one after it. ``seconds`` counts the time spent
    rasterizing (the refresh's share of a fit's time).
    """

    def __init__(self, max_entries: int = 512):
        self.max_entries = int(max_entries)
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self.calls = 0
        self.refreshes = 0
        self.seconds = 0.0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.calls = self.refreshes = 0
            self.seconds = 0.0

    def record(self, seconds: float) -> None:
        """Counts one rasterization made outside the memo (``rasterize``, every call) with its time."""
        with self._lock:
            self.calls += 1
            self.refreshes += 1
            self.seconds += float(seconds)

    def lookup(self, key, refresh_every: int, compute):
        with self._lock:
            self.calls += 1
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry[0] += 1
                if (entry[0] - 1) % max(int(refresh_every), 1) != 0:
                    return entry[1]
        start = time.perf_counter()
        value = compute()
        with self._lock:
            self.refreshes += 1
            self.seconds += time.perf_counter() - start
            if entry is None:
                entry = [1, value]
                self._entries[key] = entry
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            else:
                entry[1] = value
        return value


#: The memo ``rasterize_cached`` uses (``MEMO.calls`` / ``MEMO.refreshes`` / ``MEMO.seconds`` count its
#: work and, through ``record``, every uncached ``rasterize`` call's).
MEMO = RasterMemo()

_FINGERPRINT_SEED = 1234


def image_fingerprint(images) -> jax.Array:
    """[..., H, W, C] images → [..., 2] float32: two fixed random projections of each image, a key
    that tells different frames apart (computed in JAX, cheap)."""
    images = jnp.asarray(images, jnp.float32)
    n = int(np.prod(images.shape[-3:]))
    proj = np.random.default_rng(_FINGERPRINT_SEED).normal(size=(n, 2)).astype(np.float32)
    return images.reshape(images.shape[:-3] + (n,)) @ jnp.asarray(proj)


def rasterize_cached(vertices, cam, faces, size: int, images, *, refresh_every: int = 8,
                     cull_backfaces: bool = True, memo: RasterMemo | None = None, tag: str = "") -> Raster:
    """``rasterize``, recomputed only every ``refresh_every`` calls for the same ``images`` batch
    (the others return the raster of the last refresh: the visibility of slightly older vertices).

    ``refresh_every=1`` is ``rasterize`` (pure). Keys include the images' fingerprint and shape, the
    crop size and the mesh size, so different clips, chunks and views never share an entry; ``tag``
    separates callers that count their refreshes independently (two loss terms on the same images).
    """
    if int(refresh_every) <= 1:
        return rasterize(vertices, cam, faces, size, cull_backfaces=cull_backfaces)
    memo = MEMO if memo is None else memo
    screen = jax.lax.stop_gradient(screen_vertices(vertices, cam, size))
    faces = jnp.asarray(faces, jnp.int32)
    lead = screen.shape[:-2]
    fp = jax.lax.stop_gradient(image_fingerprint(images))
    if fp.shape[:-1] != lead:
        raise ValueError(f"images {tuple(jnp.shape(images))} do not match the meshes' batch {lead}")

    def host(sv, f, key):
        f = np.asarray(f).reshape((-1,) + f.shape[-2:])[0]
        k = (tag, np.asarray(key, np.float32).round(3).tobytes(), sv.shape, size, f.shape[0], bool(cull_backfaces))
        return memo.lookup(k, refresh_every, lambda: rasterize_host(sv, f, size, cull_backfaces=cull_backfaces))

    fi, bary = jax.pure_callback(host, _result_shapes(lead, size), screen, faces, fp, vmap_method="broadcast_all")
    return Raster(fi, bary)


__all__ = ["MEMO", "Raster", "RasterMemo", "image_fingerprint", "rasterize", "rasterize_cached",
           "rasterize_host", "screen_vertices"]
