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

from neuface_jax.core import fit as fit_lib


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


class PackedCheckpoint:
    """Interface of ``fit_packed``'s optional mid-optimization checkpoint (see ``dataset.GroupCheckpoint``).

    ``restore(template)`` returns ``(epochs_done, states)`` or None, with ``states`` shaped like the
    stacked ``template``; ``save(epochs_done, states)`` stores them; ``every`` is the epoch period.
    """

    every: int = 0

    def restore(self, template):  # pragma: no cover - interface
        return None

    def save(self, epochs_done: int, states) -> None:  # pragma: no cover - interface
        pass


def fit_packed(
    opt: fit_lib.NeuFace,
    clips: list[fit_lib.ClipData],
    *,
    encoder=None,
    mesh: jax.sharding.Mesh | None = None,
    progress=None,
    num_frames: int | None = None,
    num_slots: int | None = None,
    checkpoint: PackedCheckpoint | None = None,
) -> list[fit_lib.FitResult]:
    """Optimizes several clips at once, one fresh copy of ``encoder``'s weights per clip.

    Clips must share view count and image size; they are padded to the longest clip's
    chunk count, or to ``num_frames`` (padded frames are masked). The clip axis is padded
    with fully masked dummy clips to a multiple of the device count, or to ``num_slots``
    (a multiple of it): fixed ``num_frames`` / ``num_slots`` give one compiled shape per
    bucket however many clips a group holds. ``checkpoint`` (``PackedCheckpoint``) saves the
    stacked states every ``checkpoint.every`` epochs and resumes from the last save: the epoch
    keys are the same, so a resumed run continues the same optimization. Returns one result
    per input clip.
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
    if num_frames is not None:
        if num_frames % cfg.chunk_frames or num_frames < t_pad:
            raise ValueError(
                f"num_frames={num_frames} must be a multiple of chunk_frames={cfg.chunk_frames} and hold {t_pad} frames"
            )
        t_pad = int(num_frames)
    padded = [fit_lib.pad_clip(c, t_pad) for c in clips]
    k = len(padded)
    k_pad = -(-k // n_dev) * n_dev
    if num_slots is not None:
        if num_slots % n_dev or num_slots < k:
            raise ValueError(f"num_slots={num_slots} must be a multiple of the {n_dev} devices and hold {k} clips")
        k_pad = int(num_slots)
    padded += [_dummy_clip(padded[0])] * (k_pad - k)

    state0 = opt.init_state(encoder)
    clip_sharding = NamedSharding(mesh, P("clips"))
    states = fit_lib.with_clip_lengths(_stack([state0] * k_pad), cfg, lengths + [0] * (k_pad - k))  # lr schedule
    states = jax.device_put(states, clip_sharding)
    first_epoch = 0
    every = int(getattr(checkpoint, "every", 0) or 0) if checkpoint is not None else 0
    if checkpoint is not None:
        restored = checkpoint.restore(states)
        if restored is not None:
            first_epoch, states = restored
            states = jax.device_put(states, clip_sharding)
    data = jax.device_put(_stack(padded), clip_sharding)
    chunks = opt.to_chunks(data)
    # Chunks past every clip's end (bucket padding) would be no-op steps: skipped.
    active = max(fit_lib.padded_length(t, cfg.chunk_frames) for t in lengths) // cfg.chunk_frames
    chunks = opt.cache_features(states, chunks[:active], packed=True) + chunks[active:]
    base = jax.random.key(cfg.seed)
    totals, epochs = [], cfg.num_epochs
    for epoch in range(first_epoch, cfg.num_epochs):
        # The same per-clip key sequence as the single-clip path (fit.NeuFace.fit).
        states, mean = opt.run_epoch(
            states, chunks, jax.random.fold_in(base, epoch), packed=True, sharding=clip_sharding, active=active
        )
        if progress is not None:
            progress(epoch + 1, np.asarray(mean)[:k])
        if every and (epoch + 1) % every == 0 and epoch + 1 < cfg.num_epochs:
            checkpoint.save(epoch + 1, states)
        if cfg.early_stop > 0:  # every clip of the group must have converged
            totals.append(np.asarray(mean)[:k, -1])
            if fit_lib.should_stop(totals, cfg):
                epochs = epoch + 1
                break
    out = jax.device_get(opt.export_fn_packed(states.params, states.rest, data, opt.face))
    results = []
    for i, t in enumerate(lengths):
        results.append(fit_lib._result(jax.tree.map(lambda x: x[i], out), t, {"epochs_run": [float(epochs)]}))
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
    state = opt.init_state(encoder, num_frames=t)
    replicated = NamedSharding(mesh, P())
    frames_in_chunk = NamedSharding(mesh, P("frames"))
    state = jax.device_put(state, replicated)
    chunks = opt.cache_features(state, jax.device_put(opt.to_chunks(padded), frames_in_chunk))
    key = jax.random.key(cfg.seed)
    totals = []
    for epoch in range(cfg.num_epochs):
        state, mean = opt.run_epoch(state, chunks, jax.random.fold_in(key, epoch))
        if cfg.early_stop > 0:
            totals.append(float(np.asarray(mean)[-1]))
            if fit_lib.should_stop(totals, cfg):
                break
    data = jax.device_put(padded, NamedSharding(mesh, P("frames")))
    out = jax.device_get(opt.export_fn(state.params, state.rest, data, opt.face))
    return fit_lib._result(out, t, {})
