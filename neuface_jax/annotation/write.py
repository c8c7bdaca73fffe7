"""A fitted clip's outputs: ``params.npz``, ``metrics.json``, ``overlay.mp4`` and optionally OBJs.

``params.npz`` (``export.write_params``: the NeuFace layout and our additions, with the model
file's path, SHA-256 and component counts: ``neuface_jax.params``, docs/params_format.md) and
``metrics.json`` are written atomically, ``params.npz`` first; ``overlay.mp4`` draws the mesh over the original
frames (``OutputConfig.overlay_style``; side by side on request), views tiled left to right, the model's
projected and the detected landmarks in two colours, each view labelled with its name, the frame index
and the frame's NME; ``objs/<view>/frame_%05d.obj`` on request. Metric definitions: ``annotation.scoring``.
"""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Any, Mapping

import numpy as np

from neuface_jax import params as params_lib
from neuface_jax.annotation.config import OutputConfig
from neuface_jax.annotation.prepare import PreparedClip
from neuface_jax.annotation.scoring import clip_metrics, frame_nme, landmarks_to_pixels
from neuface_jax.annotation.setup import AnnotateSetup
from neuface_jax.common import log as log_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.core import metrics as metrics_lib
from neuface_jax.media import export as export_lib
from neuface_jax.media import video as video_lib

__all__ = ["check_finite_result", "write_outputs"]

logger = logging.getLogger(__name__)

#: Overlay frames rendered per block (bounded memory for long clips).
_OVERLAY_BLOCK = 8


def _clip_block(setup: AnnotateSetup, clip: PreparedClip) -> dict[str, Any]:
    fs, cfg = setup.face_setup, setup.fit_config
    return {
        **clip.info,
        "model": fs.model_label,
        "landmark_set": fs.landmark_set,
        "num_landmarks": int(fs.landmark_ids.shape[0]),
        "contour": fs.contour,
        "lip_points": setup.config.lip_points,
        "encoder": setup.encoder_label,
        "encoder_config": setup.encoder_config.to_dict(),
        "epochs": cfg.num_epochs,
        "chunk_frames": cfg.chunk_frames,
        "trainable_stages": cfg.trainable_stages,  # null: all stages (full fine-tuning)
        "learning_rate": cfg.learning_rate,
        "refine_steps": int(setup.config.refine_steps),
        "refine_lr": float(setup.config.refine_lr),
        "weight_photometric": float(setup.config.weight_photometric),
        "weight_silhouette": float(setup.config.weight_silhouette),
    }


def check_finite_result(label: str, result) -> None:
    """Raises ``ValueError`` naming ``label`` and the arrays when a fitted result is not finite (a NaN
    ``params.npz`` must never be written as a success)."""
    names = ("shape", "expression", "pose", "cam", "vertices")
    bad = [n for n in names if not np.all(np.isfinite(np.asarray(getattr(result, n))))]
    if bad:
        raise ValueError(f"{label}: the fit is not finite ({', '.join(bad)}); nothing was written")


def write_outputs(
    setup: AnnotateSetup,
    clip: PreparedClip,
    result,
    out_dir,
    config: OutputConfig = OutputConfig(),
    *,
    progress: log_lib.ProgressFactory | None = None,
    extra: Mapping[str, Any] | None = None,
    started: float | None = None,
) -> tuple[dict[str, pathlib.Path], dict[str, Any]]:
    """Scores a fitted clip and writes its outputs into ``out_dir`` (see the module docstring).

    ``extra`` is merged into ``metrics.json``. ``started`` (a ``time.perf_counter()`` value): the
    clip's start, for ``seconds.total`` and ``throughput.seconds_per_clip``. Returns ``(files,
    metrics document)``.
    """
    check_finite_result(clip.label, result)
    progress = progress or log_lib.quiet
    seconds = dict(clip.seconds)
    fs = setup.face_setup
    t0 = time.perf_counter()
    metrics, per_view = clip_metrics(
        result, setup.face, fs.eye_idx, crop_transforms=clip.crop_transforms, target_px=clip.target_px,
        valid=clip.valid, crop_size=clip.crop_size, view_names=clip.view_names,
    )
    seconds["metrics"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, pathlib.Path] = {}
    files["params"] = export_lib.write_params(
        out / "params.npz", result, view_names=clip.view_names, detected_landmarks=np.asarray(clip.data.landmarks),
        landmarks_mask=np.asarray(clip.data.landmarks_mask) > 0, crop_transforms=clip.crop_transforms,
        valid=clip.valid, frame_indices=clip.frame_indices, crop_size=clip.crop_size, model_name=fs.model_label,
        method="neuface", extra=params_lib.model_arrays(fs.model_info),
    )
    faces = np.asarray(fs.model.faces)
    if config.write_objs:
        objs = export_lib.write_objs(out / "objs", result.vertices, faces, clip.view_names)
        files["objs"] = out / "objs"
        logger.info("%s: wrote %d OBJ files", clip.label, len(objs))
    if config.write_video:
        with progress("overlay video", clip.num_frames) as bar:
            files["overlay"] = _write_overlay(out / "overlay.mp4", clip, result, faces, fs.eye_idx, config, bar)
    seconds["export"] = time.perf_counter() - t0
    doc = {
        **metrics,
        "per_view": per_view,
        "seconds": seconds,
        "throughput": dict(clip.throughput),
        "clip": {**_clip_block(setup, clip), "epochs_run": fit_lib.epochs_run(result, setup.fit_config)},
        "notes": list(setup.notes) + list(clip.notes),
    }
    if extra:
        doc.update(extra)
    if started is not None:
        total = time.perf_counter() - started
        doc["seconds"]["total"] = total
        doc["throughput"]["seconds_per_clip"] = total
    files["metrics"] = export_lib.write_json(out / "metrics.json", doc)
    logger.info("%s: metrics %s; outputs written in %.1fs", clip.label, metrics_line(metrics, clip.num_views),
                seconds["export"])
    return files, doc


#: How a metric that does not apply is shown (cross-view distance of a single view).
NOT_APPLICABLE = {"cvd_mm": "n/a (one view)"}


def metrics_line(metrics: Mapping[str, float], num_views: int) -> str:
    """``"nme_percent 2.1, ..., cvd_mm n/a (one view)"``: the clip's metrics for a log line."""
    parts = [f"{k} {metrics[k]:.4g}" for k in metrics_lib.METRIC_NAMES if k in metrics]
    if num_views == 1:
        parts += [f"{k} {text}" for k, text in NOT_APPLICABLE.items() if k not in metrics]
    return ", ".join(parts)


def _write_overlay(path, clip: PreparedClip, result, faces, eye_idx, config: OutputConfig,
                   bar: log_lib.Progress) -> pathlib.Path:
    """Mesh and landmarks over the original frames, views tiled, labelled with the frames' NME; streamed to
    the mp4 in blocks of frames."""
    if clip.images is None:
        raise ValueError(f"{clip.label}: the original frames were dropped; cannot draw the overlay video")
    verts = np.array(result.vertices, np.float64, copy=True)
    for v in range(clip.valid.shape[1]):
        if not clip.valid[:, v].any():
            verts[:, v] = np.nan  # no mesh on a view that never saw the face
    images, cam = clip.images, np.asarray(result.cam)
    model_px = landmarks_to_pixels(result.landmarks2d, clip.crop_transforms, clip.crop_size)
    nme = frame_nme(model_px, clip.target_px, clip.valid, eye_idx)
    with video_lib.VideoWriter(path, fps=max(clip.out_fps, 1e-3)) as writer:
        for s in range(0, images.shape[0], _OVERLAY_BLOCK):
            e = min(images.shape[0], s + _OVERLAY_BLOCK)
            writer.extend(export_lib.overlay_frames(
                images[s:e], verts[s:e], cam[s:e], clip.crop_transforms[s:e], faces, crop_size=clip.crop_size,
                landmarks=clip.target_px[s:e], model_landmarks=model_px[s:e], nme=nme[s:e],
                view_names=clip.view_names, frame_indices=np.asarray(clip.frame_indices)[s:e],
                style=config.overlay_style, side_by_side=config.side_by_side, max_side=config.overlay_max_side,
                valid=clip.valid[s:e],
            ))
            bar.update(e - s)
    return pathlib.Path(path)
