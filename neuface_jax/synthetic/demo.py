"""End-to-end runs: synthetic clip → NeuFace and direct optimization → metrics → exports.

``run_synthetic`` is what ``neuface-jax demo`` and the experiments call; ``evaluate``
computes the fixed metric names of ``metrics.json`` for a fit (plus extra ones with the
ground truth when it is known). By default NeuFace starts from the pretrained small encoder
shipped with the package (``annotation.setup.packaged_checkpoint()``), as the paper starts from
DECA, and the direct baseline starts from the same encoder's predictions.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

import flame_jax
from neuface_jax.annotation.scoring import frame_nme, landmarks3d, landmarks_to_pixels
from neuface_jax.annotation.write import check_finite_result
from neuface_jax.priors.starting import (
    default_encoder_config,
    default_learning_rate,
    load_checkpoint,
    packaged_checkpoint,
)
from neuface_jax.common import log as log_lib
from neuface_jax.common.settings import setting
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.core import metrics as metrics_lib
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import export as export_lib
from neuface_jax.photometric import loss as photometric_loss
from neuface_jax.synthetic import synth as synth_lib

logger = logging.getLogger(__name__)

#: The names of ``metrics.json`` live in ``core.metrics`` (re-exported here for callers of this module).
METRIC_NAMES = metrics_lib.METRIC_NAMES
EXTRA_METRIC_NAMES = metrics_lib.EXTRA_METRIC_NAMES

#: The demo's NeuFace learning rate from a loaded encoder (the packaged one by default): 3e-4, not
#: annotate's 1e-4 (``annotation.setup.default_learning_rate``). On the demo's short synthetic
#: clips 1e-4–3e-4 fit best and the reference 2e-5 is too small for this network
#: (docs/experiments.md); annotate's 1e-4 was chosen on long real clips, where 3e-4 under-rotates
#: turned heads. A random start uses the shared table's 1e-3.
DEMO_PRETRAINED_LR = 3e-4


def demo_learning_rate(encoder_init: str) -> float:
    """The demo's default NeuFace learning rate for a start (``DemoConfig.encoder_init``)."""
    if encoder_init == "random":
        return default_learning_rate(None, pretrained=False)
    return DEMO_PRETRAINED_LR


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Settings of the synthetic comparison (``neuface-jax demo``; each field declares its flag).

    ``fit`` holds the optimizer settings without a flag (loss weights, ...); ``fit_config()`` adds
    the epochs, chunk length, learning rates and seed set here.
    """

    seed: int = setting(0, "Clip seed.")
    num_frames: int = setting(40, "Frames of the synthetic clip.", flag="frames")
    views: str = setting("3", "Camera rig: mono, 3, mead, MEAD view names or yaw:pitch pairs.")
    encoder_init: str = setting(
        "pretrained", "Where NeuFace starts (and the direct baseline's initial prediction comes from): "
        "'pretrained' (the checkpoint shipped with the package), 'random', or a checkpoint directory.",
        flag="encoder")
    epochs: int = setting(100, "Optimization epochs over the chunks (reference: 100).")
    chunk_frames: int = setting(20, "Frames per chunk (reference: 20).")
    learning_rate: float | None = setting(
        None, "NeuFace learning rate (default 3e-4 from a pretrained encoder, 1e-3 from a random one: "
        "demo_learning_rate).", flag="lr")
    direct_learning_rate: float = setting(1e-2, "Direct-optimization learning rate.", flag="direct_lr")
    direct_undetected: str = setting(
        "interpolate", "Direct baseline, frames without a detection: interpolate (from the detected neighbours), "
        "temporal (also kept in the temporal terms) or keep (the encoder's first guess, the original baseline).",
        choices=fit_lib.DIRECT_UNDETECTED)
    trainable_stages: int | None = setting(None, fit_lib.TRAINABLE_STAGES_HELP)
    lr_schedule: str = setting("constant", fit_lib.LR_SCHEDULE_HELP, choices=fit_lib.LR_SCHEDULES)
    lr_warmup: float = setting(fit_lib.FitConfig.lr_warmup, fit_lib.LR_WARMUP_HELP)
    early_stop: float = setting(fit_lib.FitConfig.early_stop, fit_lib.EARLY_STOP_HELP)
    early_stop_window: int = setting(fit_lib.FitConfig.early_stop_window, fit_lib.EARLY_STOP_WINDOW_HELP)
    weight_photometric: float = setting(0.0, "Weight of the photometric term (0: off; the recipe's schedule: "
                                        "landmarks alone for --image_terms_start steps, then ramped in).")
    weight_silhouette: float = setting(0.0, "Weight of the silhouette / face-oval term (0: off; same schedule).")
    image_terms_start: int = setting(photometric_loss.RECIPE_START_STEP, "Optimizer steps before the image terms.")
    methods: tuple[str, ...] = setting(("direct", "neuface"), "Methods to run.")
    write_video: bool = setting(True, "Write overlay.mp4.", flag="video")
    overlay_style: str = setting(
        "wire", "Mesh in overlay.mp4: wire (hidden-line wireframe), shaded (translucent) or both.",
        choices=export_lib.OVERLAY_STYLES)
    side_by_side: bool = setting(False, "overlay.mp4 shows each view as the image | the mesh.")
    write_objs: bool = setting(False, "Write one OBJ per frame and view.", flag="objs")
    synth: synth_lib.SynthConfig = setting(synth_lib.SynthConfig(), "Synthetic clip settings.", cli=False)
    encoder: encoder_lib.EncoderConfig | None = setting(
        None, "Architecture of a random start (default: default_encoder_config).", cli=False)
    fit: fit_lib.FitConfig = setting(fit_lib.FitConfig(), "Other optimizer settings.", cli=False)

    def __post_init__(self):
        object.__setattr__(self, "methods", tuple(self.methods))  # flags give lists
        export_lib.check_overlay_style(self.overlay_style)

    def fit_config(self) -> fit_lib.FitConfig:
        """``fit`` with this config's epochs, chunk length, learning rates and seed."""
        lr = self.learning_rate if self.learning_rate is not None else demo_learning_rate(self.encoder_init)
        image_terms = photometric_loss.recipe_terms(float(self.weight_photometric), float(self.weight_silhouette),
                                                    start_step=int(self.image_terms_start))
        return self.fit.replace(
            loss={**self.fit.loss, **image_terms},
            num_epochs=int(self.epochs), chunk_frames=int(self.chunk_frames), learning_rate=float(lr),
            direct_learning_rate=float(self.direct_learning_rate), direct_undetected=str(self.direct_undetected),
            seed=int(self.seed), trainable_stages=self.trainable_stages, **fit_lib.schedule_settings(self),
        )

    def replace(self, **kw) -> "DemoConfig":
        return dataclasses.replace(self, **kw)


def load_start_encoder(
    init: str, model: flame_jax.FlameModel, encoder_config: encoder_lib.EncoderConfig | None = None
) -> tuple[Any, encoder_lib.EncoderConfig, str | None]:
    """The encoder a run starts from: ``(encoder or None for a random start, its config, checkpoint path)``.

    ``init`` is ``"pretrained"`` (``annotation.setup.packaged_checkpoint()``), ``"random"`` or a
    checkpoint directory. A checkpoint must exist (it is never trained here) and predict as many
    identity and expression components as ``model`` has at most. The packaged checkpoint was
    trained on the demo head: with another model, "pretrained" is refused (its components mean
    something else).

    Raises:
      FileNotFoundError: the checkpoint does not exist.
      ValueError: it does not fit ``model``.
    """
    if init == "random":
        return None, encoder_config or default_encoder_config(model), None
    if init == "pretrained" and not str(model.name).startswith("demo head"):
        raise ValueError(
            f"the packaged pretrained encoder was trained on the demo head, not on {model.name!r}: "
            "use encoder_init='random' or a checkpoint trained for this model"
        )
    path = packaged_checkpoint() if init == "pretrained" else Path(init).expanduser().absolute()
    enc, cfg = load_checkpoint(path, model)  # FileNotFoundError naming the path
    return enc, cfg, str(path)


# --------------------------------------------------------------------------- evaluation
def evaluate(
    result: fit_lib.FitResult,
    face: fit_lib.FaceModel,
    *,
    crop_transforms: np.ndarray,
    reference_landmarks_px: np.ndarray,
    reference_visible: np.ndarray,
    crop_size: int = crops_lib.CROP_SIZE,
    gt_canonical_vertices: np.ndarray | None = None,
    gt_vertices: np.ndarray | None = None,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """The metrics of ``metrics.json`` for one fit.

    Always (``METRIC_NAMES``, the fixed names):

    * ``nme_percent``: 2D landmark error in original pixels against ``reference_landmarks_px``
      (the noise-free truth for synthetic clips, the detections for real ones), visible
      points only, normalized by the reference inter-ocular distance (36/45), %;
    * ``msi_landmarks`` / ``msi_vertices``: MSI_3D of the posed 3D landmarks / vertices
      (per view, mean over views), mm⁻²·frame⁴ — higher is smoother;
    * ``jitter_mm``: RMS 3D vertex acceleration, mm/frame² (mean over views);
    * ``cvd_mm``: cross-view vertex distance in the canonical frame, mm (0 for one view);

    with ``gt_canonical_vertices`` [T, V, 3] (the true mesh with the head rotation zeroed):

    * ``vertex_error_mm``: mean canonical-frame vertex error against the truth, mm;
    * ``vertex_error_aligned_mm`` / ``vertex_error_similarity_mm``: the same after a per-frame
      rigid / similarity alignment (the weak-perspective camera cannot tell a large face far away
      from a small one near, so the similarity-aligned error is the scale-free identity error);

    with ``gt_vertices`` [T, W, V, 3] (the true posed meshes of each view in the model frame, i.e.
    without translation, as ``result.vertices``):

    * ``accel_error_mm``: RMS of (predicted − true) vertex acceleration, mm/frame² (mean over
      views) — the true motion accelerates too (speech, head turns), so ``jitter_mm`` is only
      better down to the truth's own; this one is 0 for a perfect fit;

    with ``valid`` [T, W] (detection validity) when some frame has no detection:

    * ``jitter_detected_mm`` / ``msi_vertices_detected``: smoothness over detected frames only
      (accelerations touching an undetected frame skipped).
    """
    t, w = result.expression.shape[:2]
    pred_px = landmarks_to_pixels(result.landmarks2d, crop_transforms, crop_size)
    out: dict[str, float] = {}
    out["nme_percent"] = float(metrics_lib.nme(pred_px, reference_landmarks_px, reference_visible))
    lmk3d = landmarks3d(face, result.vertices, result.pose)
    msi_l, msi_v, jit = [], [], []
    for v in range(w):
        msi_l.append(float(metrics_lib.msi(lmk3d[:, v])))
        msi_v.append(float(metrics_lib.msi(result.vertices[:, v])))
        jit.append(float(metrics_lib.jitter(result.vertices[:, v])))
    out["msi_landmarks"] = float(np.mean(msi_l))
    out["msi_vertices"] = float(np.mean(msi_v))
    out["jitter_mm"] = float(np.mean(jit))
    out["cvd_mm"] = float(metrics_lib.cvd(result.canonical_vertices)) if w > 1 else 0.0
    flat = lambda x: x.reshape((t * w,) + x.shape[2:])  # noqa: E731
    if gt_canonical_vertices is not None:
        gt = np.broadcast_to(np.asarray(gt_canonical_vertices)[:, None], result.canonical_vertices.shape)
        pred = flat(np.asarray(result.canonical_vertices))
        out["vertex_error_mm"] = float(metrics_lib.vertex_error(pred, flat(gt)))
        out["vertex_error_aligned_mm"] = float(metrics_lib.vertex_error(pred, flat(gt), align="rigid"))
        out["vertex_error_similarity_mm"] = float(metrics_lib.vertex_error(pred, flat(gt), align="similarity"))
    if gt_vertices is not None:
        true = np.asarray(gt_vertices)
        if true.shape != result.vertices.shape:
            raise ValueError(f"gt_vertices must be {result.vertices.shape} (per view, model frame), got {true.shape}")
        diff = np.asarray(result.vertices) - true
        out["accel_error_mm"] = float(np.mean([metrics_lib.jitter(diff[:, v]) for v in range(w)]))
    if valid is not None and not np.all(valid):
        valid = np.asarray(valid, bool)
        out["jitter_detected_mm"] = float(np.nanmean(
            [metrics_lib.jitter(result.vertices[:, v], frame_mask=valid[:, v]) for v in range(w)]))
        out["msi_vertices_detected"] = float(np.nanmean(
            [metrics_lib.msi(result.vertices[:, v], frame_mask=valid[:, v]) for v in range(w)]))
    return out


def evaluate_synthetic(
    result: fit_lib.FitResult, face: fit_lib.FaceModel, clip: synth_lib.SynthClip, *, crop_size: int | None = None
) -> dict[str, float]:
    """``evaluate`` of a fit of a synthetic clip against its ground truth (every metric).

    NME against the noise-free landmarks on the truly visible points (``gt["visible68_true"]``; the
    detector's visibility for clips written before it was recorded), undetected frames included: the
    truth is known there; vertex errors, acceleration error and the detected-frames smoothness from
    ``clip.gt``.
    """
    if crop_size is None:
        crop_size = int(clip.meta.get("config", {}).get("crop_size", crops_lib.CROP_SIZE))
    gt = clip.gt
    visible = gt.get("visible68_true")
    if visible is None:
        visible = clip.visible68 | ~clip.valid[..., None]
    return evaluate(
        result, face, crop_transforms=clip.crop_transforms, reference_landmarks_px=gt["landmarks68_true"],
        reference_visible=np.asarray(visible, bool), crop_size=crop_size,
        gt_canonical_vertices=gt["canonical_vertices"],
        gt_vertices=gt["vertices"] - gt["translation"][:, :, None, :], valid=clip.valid,
    )


def ground_truth_reference(clip: synth_lib.SynthClip, face: fit_lib.FaceModel) -> dict[str, float]:
    """The smoothness the true motion itself has (what a perfect fit would score)."""
    gt = clip.gt
    verts = gt["vertices"] - gt["translation"][:, :, None, :]
    lmk = gt["landmarks3d"] - gt["translation"][:, :, None, :]
    w = verts.shape[1]
    return {
        "msi_landmarks": float(np.mean([metrics_lib.msi(lmk[:, v]) for v in range(w)])),
        "msi_vertices": float(np.mean([metrics_lib.msi(verts[:, v]) for v in range(w)])),
        "jitter_mm": float(np.mean([metrics_lib.jitter(verts[:, v]) for v in range(w)])),
        "cvd_mm": 0.0,
        "vertex_error_mm": 0.0,
        "nme_percent": 0.0,
    }


# --------------------------------------------------------------------------- running
def fit_methods(
    data: fit_lib.ClipData,
    face: fit_lib.FaceModel,
    *,
    fit_config: fit_lib.FitConfig,
    encoder_config: encoder_lib.EncoderConfig,
    methods=("direct", "neuface"),
    encoder=None,
    progress: log_lib.ProgressFactory | None = None,
) -> dict[str, tuple[fit_lib.FitResult, float]]:
    """Runs the requested methods on one clip; returns {method: (result, seconds)}."""
    progress = progress or log_lib.quiet
    results = {}
    for method in methods:
        t0 = time.perf_counter()
        if method == "neuface":
            with progress("neuface optimization", fit_config.num_epochs) as bar:
                opt = fit_lib.NeuFace(face, encoder_config, fit_config)
                res = opt.fit(data, encoder=encoder, progress=lambda epoch, parts: bar.set(epoch))
        elif method == "direct":
            with progress("direct optimization", 1) as bar:
                res = fit_lib.DirectFit(face, encoder_config, fit_config).fit(data, encoder=encoder)
                bar.update(1)
        else:
            raise ValueError(f"unknown method {method!r} (use 'neuface' or 'direct')")
        results[method] = (res, time.perf_counter() - t0)
    return results


def _start(config: DemoConfig, model, encoder) -> tuple[Any, encoder_lib.EncoderConfig, str, str | None]:
    """``(encoder, its config, start label, checkpoint)``: ``encoder`` (given) wins over ``config.encoder_init``."""
    if encoder is not None:
        return encoder, config.encoder or default_encoder_config(model), "given", None
    enc, cfg, checkpoint = load_start_encoder(config.encoder_init, model, config.encoder)
    return enc, cfg, config.encoder_init, checkpoint


def _export(out: Path, config: DemoConfig, fits, data, clip, model, metrics, timings, settings) -> None:
    """params.npz per method, metrics.json and (optionally) OBJs and the overlay video."""
    crop_size = config.synth.crop_size
    for method, (res, _) in fits.items():
        check_finite_result(f"demo ({method})", res)
    out.mkdir(parents=True, exist_ok=True)
    for method, (res, _) in fits.items():
        name = "params.npz" if method == "neuface" else f"params_{method}.npz"
        export_lib.write_params(
            out / name, res, view_names=clip.view_names, detected_landmarks=np.asarray(data.landmarks),
            landmarks_mask=np.asarray(data.landmarks_mask) > 0, crop_transforms=clip.crop_transforms,
            valid=clip.valid, crop_size=crop_size, model_name=model.name, method=method,
        )
        if config.write_objs:
            export_lib.write_objs(out / f"objs_{method}", res.vertices, np.asarray(model.faces), clip.view_names)
    export_lib.write_json(
        out / "metrics.json",
        {**metrics, "seconds": timings, "settings": settings,
         "clip": {"seed": config.seed, "frames": config.num_frames, "views": list(clip.view_names),
                  "model": model.name}},
    )
    if config.write_video:
        _write_overlay(out / "overlay.mp4", config, fits["neuface" if "neuface" in fits else next(iter(fits))][0],
                       clip, np.asarray(model.faces))


def _write_overlay(path: Path, config: DemoConfig, res: fit_lib.FitResult, clip: synth_lib.SynthClip, faces) -> None:
    """The fit over the synthetic frames (also where the detection was dropped: the face is there); the
    labels' NME is against the drawn (noisy) detections."""
    crop_size = config.synth.crop_size
    detected = np.where(clip.visible68[..., None], clip.landmarks68, np.nan)
    model_px = landmarks_to_pixels(res.landmarks2d, clip.crop_transforms, crop_size)
    frames = export_lib.overlay_frames(
        clip.images, res.vertices, res.cam, clip.crop_transforms, faces, crop_size=crop_size, landmarks=detected,
        model_landmarks=model_px, nme=frame_nme(model_px, detected, clip.valid, (36, 45)),
        view_names=clip.view_names, style=config.overlay_style, side_by_side=config.side_by_side,
    )
    export_lib.write_overlay_video(path, frames, fps=clip.fps)


def run_synthetic(
    config: DemoConfig = DemoConfig(),
    *,
    out_dir: str | Path | None = None,
    model=None,
    embedding=None,
    encoder=None,
    progress: log_lib.ProgressFactory | None = None,
) -> dict[str, Any]:
    """Generates a synthetic clip, fits it with each method, evaluates and (optionally) exports.

    ``encoder`` (an ``encoder.Encoder``, with ``config.encoder`` its config) overrides
    ``config.encoder_init``; ``progress``: a ``common.log.ProgressFactory`` (None: silent).

    Returns a dict with ``metrics`` ({method: {name: value}} plus "ground_truth"),
    ``seconds`` ({stage: seconds}), ``results`` ({method: FitResult}), ``clip`` and
    ``settings`` (the encoder start, checkpoint and learning rates used).
    """
    progress = progress or log_lib.quiet
    fit_cfg = config.fit_config()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if model is None:
        model, embedding = flame_jax.demo_model(), flame_jax.demo_landmark_embedding()
    face = fit_lib.FaceModel(model, embedding)
    timings["model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    encoder, enc_cfg, init, checkpoint = _start(config, model, encoder)
    timings["encoder"] = time.perf_counter() - t0
    settings = {
        "encoder_init": init, "encoder_checkpoint": checkpoint, "encoder_arch": enc_cfg.arch,
        "encoder_image_size": enc_cfg.image_size, "learning_rate": fit_cfg.learning_rate,
        "direct_learning_rate": fit_cfg.direct_learning_rate, "direct_undetected": fit_cfg.direct_undetected,
        "epochs": fit_cfg.num_epochs,
        "chunk_frames": fit_cfg.chunk_frames,
    }
    logger.info(
        "NeuFace starts from %s (lr %g); the direct baseline from its predictions (lr %g)",
        "a random encoder" if encoder is None else (checkpoint or "the given encoder"), fit_cfg.learning_rate,
        fit_cfg.direct_learning_rate,
    )

    t0 = time.perf_counter()
    synth_cfg = dataclasses.replace(config.synth, num_frames=config.num_frames)
    kwargs = {} if model is flame_jax.demo_model() else {"model": model, "embedding68": embedding}
    with progress("render synthetic clip", 1) as bar:
        clip = synth_lib.synthesize_clip(
            seed=config.seed, rig=config.views, config=synth_cfg, progress=bar.callback(), **kwargs
        )
    timings["synthesize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = crops_lib.prepare_clip(
        clip.images, clip.landmarks68, clip.crop_transforms, encoder_size=enc_cfg.image_size,
        visible=clip.visible68, valid=clip.valid, crop_size=synth_cfg.crop_size, name=f"synthetic seed {config.seed}",
    )
    timings["prepare"] = time.perf_counter() - t0

    fits = fit_methods(data, face, fit_config=fit_cfg, encoder_config=enc_cfg, methods=config.methods,
                       encoder=encoder, progress=progress)
    metrics = {}
    for method, (res, secs) in fits.items():
        timings[method] = secs
        metrics[method] = evaluate_synthetic(res, face, clip, crop_size=synth_cfg.crop_size)
    metrics["ground_truth"] = ground_truth_reference(clip, face)

    if out_dir is not None:
        t0 = time.perf_counter()
        _export(Path(out_dir), config, fits, data, clip, model, metrics, timings, settings)
        timings["export"] = time.perf_counter() - t0
    return {"metrics": metrics, "seconds": timings, "results": {k: v[0] for k, v in fits.items()}, "clip": clip,
            "settings": settings}


def format_table(metrics: dict[str, dict[str, float]], columns=METRIC_NAMES) -> str:
    """A plain-text comparison table (one row per method; "-" where a method lacks a column; a text
    value, such as "n/a (one view)", is shown as it is)."""
    cols = [c for c in columns if any(c in vals for vals in metrics.values())] or list(columns)
    width = max(15, *(len(c) + 2 for c in cols))
    header = f"{'method':<14}" + "".join(f"{c:>{width}}" for c in cols)
    lines = [header, "-" * len(header)]
    for method, vals in metrics.items():
        cells = "".join(f"{vals[c]:>{width}.4f}" if isinstance(vals.get(c), (int, float, np.floating))
                        else f"{vals.get(c, '-')!s:>{width}}" for c in cols)
        lines.append(f"{method:<14}" + cells)
    return "\n".join(lines)
