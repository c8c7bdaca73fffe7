"""Data parallelism over devices with ``jax.jit`` and a device mesh (the successor of ``pmap``).

Per-clip optimization is embarrassingly parallel. Two layouts:

* **packed clips** (``fit_packed``): K clips' encoder weights and Adam states are stacked
  on a leading clip axis, the epoch step is ``vmap``-ed over it and that axis is sharded
  over a 1-D mesh ``("clips",)``: every device optimizes its own clips and no gradient
  is ever exchanged. The clip count is padded to a multiple of the device count with
  fully masked dummy clips, so the compiled shape never changes.
* **sharded frames** (``fit_sharded_frames``): one large clip whose chunk does not fit a
  device: the frames of every chunk are sharded over a mesh ``("frames",)`` and the
  weights replicated; XLA inserts the gradient all-reduce.

Both call the same compiled functions as the single-clip path (``fit.NeuFace``), so on
one device they give the same numbers; ``tests/neuface_jax/test_parallel.py`` checks it
on 8 simulated CPU devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from neuface_jax import fit as fit_lib


def make_mesh(axis: str, devices=None) -> jax.sharding.Mesh:
    """A 1-D mesh over ``devices`` (default: all) with automatic sharding propagation."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (axis,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _dummy_clip(like: fit_lib.ClipData) -> fit_lib.ClipData:
    return fit_lib.ClipData(
        images=jnp.zeros_like(like.images), landmarks=jnp.zeros_like(like.landmarks),
        landmarks_mask=jnp.zeros_like(like.landmarks_mask), frame_mask=jnp.zeros_like(like.frame_mask),
    )


def fit_packed(
    opt: fit_lib.NeuFace,
    clips: list[fit_lib.ClipData],
    *,
    encoder=None,
    mesh: jax.sharding.Mesh | None = None,
    progress=None,
) -> list[fit_lib.FitResult]:
    """Optimizes several clips at once, one fresh copy of ``encoder``'s weights per clip.

    Clips must share view count and image size; they are padded to the longest clip's
    chunk count (padded frames are masked). Returns one result per input clip.
    """
    if not clips:
        return []
    mesh = make_mesh("clips") if mesh is None else mesh
    n_dev = mesh.devices.size
    views = {c.num_views for c in clips}
    sizes = {tuple(c.images.shape[2:]) for c in clips}
    if len(views) != 1 or len(sizes) != 1:
        raise ValueError(f"packed clips must share views and image size, got views {views} sizes {sizes}")
    cfg = opt.config
    lengths = [c.num_frames for c in clips]
    t_pad = max(fit_lib.padded_length(t, cfg.chunk_frames) for t in lengths)
    padded = [fit_lib.pad_clip(c, t_pad) for c in clips]
    k = len(padded)
    k_pad = -(-k // n_dev) * n_dev
    padded += [_dummy_clip(padded[0])] * (k_pad - k)

    state0 = opt.init_state(encoder)
    clip_sharding = NamedSharding(mesh, P("clips"))
    states = jax.device_put(_stack([state0] * k_pad), clip_sharding)
    data = jax.device_put(_stack(padded), clip_sharding)
    chunks = opt.to_chunks(data)
    base = jax.random.key(cfg.seed)
    for epoch in range(cfg.num_epochs):
        # The same per-clip key sequence as the single-clip path (fit.NeuFace.fit).
        states, mean = opt.run_epoch(states, chunks, jax.random.fold_in(base, epoch), packed=True)
        if progress is not None:
            progress(epoch + 1, np.asarray(mean)[:k])
    out = jax.device_get(opt.export_fn_packed(states.params, states.rest, data, opt.face))
    results = []
    for i, t in enumerate(lengths):
        results.append(fit_lib._result(jax.tree.map(lambda x: x[i], out), t, {}))
    return results


def fit_sharded_frames(
    opt: fit_lib.NeuFace,
    clip: fit_lib.ClipData,
    *,
    encoder=None,
    mesh: jax.sharding.Mesh | None = None,
) -> fit_lib.FitResult:
    """Optimizes one clip with every chunk's frames sharded over the devices.

    ``chunk_frames`` must be a multiple of the device count.
    """
    mesh = make_mesh("frames") if mesh is None else mesh
    n_dev = mesh.devices.size
    cfg = opt.config
    if cfg.chunk_frames % n_dev:
        raise ValueError(f"chunk_frames={cfg.chunk_frames} must be a multiple of the {n_dev} devices to shard frames")
    t = clip.num_frames
    padded = fit_lib.pad_clip(clip, fit_lib.padded_length(t, cfg.chunk_frames))
    state = opt.init_state(encoder)
    replicated = NamedSharding(mesh, P())
    frames_in_chunk = NamedSharding(mesh, P("frames"))
    state = jax.device_put(state, replicated)
    chunks = jax.device_put(opt.to_chunks(padded), frames_in_chunk)
    key = jax.random.key(cfg.seed)
    for epoch in range(cfg.num_epochs):
        state, _ = opt.run_epoch(state, chunks, jax.random.fold_in(key, epoch))
    data = jax.device_put(padded, NamedSharding(mesh, P("frames")))
    out = jax.device_get(opt.export_fn(state.params, state.rest, data, opt.face))
    return fit_lib._result(out, t, {})
