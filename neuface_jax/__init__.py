"""neuface_jax: FLAME face meshes from videos by NeuFace's neural re-parameterized optimization.

Packages, lower layers first (each imports only from the ones above it in this list):

- ``common``: atomic writes, logging and progress, settings declared once, view names.
- ``core``: camera, encoder (Flax NNX), losses, the NeuFace and direct fitters, data parallelism,
  metrics. Arrays in, arrays out; no files, no images.
- ``media``: video decoding, sources (views, frame ranges), the MediaPipe landmarker and its cache,
  landmark sets, crops (clip preparation), the CPU renderer, exports.
- ``synthetic``: synthetic motion and clips with ground truth, encoder pretraining, the demo pipeline.
- ``annotation``: one clip of real video → params.npz / metrics.json / overlay (``annotate``).
- ``dataset``: manifests and the resumable, sharded dataset runner.
- ``cli``: the ``neuface-jax`` command, one module per command.

The main entry points are importable from here (loaded on first use, so ``import neuface_jax`` stays
cheap): ``annotate``, ``make_setup``, ``SetupConfig``, ``PrepareConfig``, ``OutputConfig``,
``run_dataset``, ``DatasetConfig``, ``load_encoder``, ``save_encoder``, ``EncoderConfig``,
``FitConfig``, ``NeuFace``, ``DirectFit``, ``FaceModel``, ``total_loss``; results back:
``load_params`` (a params.npz as a ``ParamsRecord``) and ``vertices`` (its meshes); live:
``track`` (a camera, file or stream → per-frame parameters).
"""

from __future__ import annotations

import importlib

_API = {
    "annotate": ("neuface_jax.annotation.run", "annotate"),
    "make_setup": ("neuface_jax.annotation.setup", "make_setup"),
    "prepare": ("neuface_jax.annotation.prepare", "prepare"),
    "write_outputs": ("neuface_jax.annotation.write", "write_outputs"),
    "SetupConfig": ("neuface_jax.annotation.config", "SetupConfig"),
    "PrepareConfig": ("neuface_jax.annotation.config", "PrepareConfig"),
    "OutputConfig": ("neuface_jax.annotation.config", "OutputConfig"),
    "run_dataset": ("neuface_jax.dataset.runner", "run"),
    "DatasetConfig": ("neuface_jax.dataset.config", "DatasetConfig"),
    "read_manifest": ("neuface_jax.dataset.manifest", "read_manifest"),
    "build_manifest": ("neuface_jax.dataset.manifest", "build_manifest"),
    "load_encoder": ("neuface_jax.core.encoder", "load_encoder"),
    "save_encoder": ("neuface_jax.core.encoder", "save_encoder"),
    "init_encoder": ("neuface_jax.core.encoder", "init_encoder"),
    "EncoderConfig": ("neuface_jax.core.encoder", "EncoderConfig"),
    "FitConfig": ("neuface_jax.core.fit", "FitConfig"),
    "NeuFace": ("neuface_jax.core.fit", "NeuFace"),
    "DirectFit": ("neuface_jax.core.fit", "DirectFit"),
    "FaceModel": ("neuface_jax.core.fit", "FaceModel"),
    "total_loss": ("neuface_jax.core.losses", "total_loss"),
    "FrameRange": ("neuface_jax.media.video", "FrameRange"),
    "load_params": ("neuface_jax.params", "load_params"),
    "vertices": ("neuface_jax.params", "vertices"),
    "ParamsRecord": ("neuface_jax.params", "ParamsRecord"),
    "track": ("neuface_jax.realtime.track", "track"),
}

__all__ = sorted(_API)


def __getattr__(name: str):
    # PEP 562: the entry points import JAX, Flax and the stages only when first used.
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'neuface_jax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
