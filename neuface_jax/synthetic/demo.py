"""End-to-end runs: synthetic clip → NeuFace and direct optimization → metrics → exports.

``run_synthetic`` is what ``neuface-jax demo`` and the experiments call; ``evaluate``
computes the fixed metric names of ``metrics.json`` for a fit (plus extra ones with the
ground truth when it is known). By default NeuFace starts from the pretrained small encoder
shipped with the package (``pretrain.packaged_checkpoint()``), as the paper starts from DECA,
and the direct baseline starts from the same encoder's predictions.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

import flame_jax
from neuface_jax.media import crops as crops_lib
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.media import export as export_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.core import metrics as metrics_lib
from neuface_jax.synthetic import synth as synth_lib

#: The fixed names of ``metrics.json`` (issue 4 §6), for every method.
METRIC_NAMES = ("nme_percent", "msi_landmarks", "msi_vertices", "jitter_mm", "cvd_mm", "vertex_error_mm")
#: Extra names ``evaluate`` adds when it has what they need (see its docstring).
EXTRA_METRIC_NAMES = (
    "accel_error_mm", "vertex_error_similarity_mm", "vertex_error_aligned_mm", "jitter_detected_mm",
    "msi_vertices_detected",
)

#: NeuFace learning rate per starting point of the small encoder (docs/experiments.md §1: from the
#: pretrained encoder 1e-4–3e-4 fit best, the reference 2e-5 is too small for this network; from
#: random weights 1e-3 is the least bad, and no rate fits well).
DEMO_LEARNING_RATES = {"pretrained": 3e-4, "random": 1e-3}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Settings of the synthetic comparison (the demo's defaults take ~2 CPU minutes).

    Attributes:
      encoder_init: where NeuFace starts (and the direct baseline's initialization comes from):
        ``"pretrained"`` (the packaged checkpoint), ``"random"`` (a fresh ``encoder`` /
        ``default_encoder_config``) or the path of a checkpoint directory (``encoder.save_encoder``).
      fit: optimization settings; the NeuFace learning rate suits ``encoder_init`` (use
        ``DEMO_LEARNING_RATES["random"]`` with a random start).
      encoder: the architecture of a random start (default ``default_encoder_config``).
    """

    seed: int = 0
    num_frames: int = 40
    views: str = "3"
    synth: synth_lib.SynthConfig = synth_lib.SynthConfig()
    encoder_init: str = "pretrained"
    fit: fit_lib.FitConfig = fit_lib.FitConfig(
        learning_rate=DEMO_LEARNING_RATES["pretrained"], direct_learning_rate=1e-2
    )
    encoder: encoder_lib.EncoderConfig | None = None
    methods: tuple[str, ...] = ("direct", "neuface")


def load_start_encoder(
    init: str, model: flame_jax.FlameModel, encoder_config: encoder_lib.EncoderConfig | None = None
) -> tuple[Any, encoder_lib.EncoderConfig, str | None]:
    """The encoder a run starts from: ``(encoder or None for a random start, its config, checkpoint path)``.

    ``init`` is ``"pretrained"`` (``pretrain.packaged_checkpoint()``), ``"random"`` or a checkpoint
    directory. A checkpoint must exist (it is never trained here) and predict as many identity and
    expression components as ``model`` has at most. The packaged checkpoint was trained on the demo
    head: with another model, "pretrained" is refused (its components mean something else).

    Raises:
      FileNotFoundError: the checkpoint does not exist.
      ValueError: it does not fit ``model``.
    """
    if init == "random":
        return None, encoder_config or default_encoder_config(model), None
    from neuface_jax.synthetic import pretrain

    if init == "pretrained" and not str(model.name).startswith("demo head"):
        raise ValueError(
            f"the packaged pretrained encoder was trained on the demo head, not on {model.name!r}: "
            "use encoder_init='random' or a checkpoint trained for this model"
        )
    path = pretrain.packaged_checkpoint() if init == "pretrained" else Path(init).expanduser().absolute()
    enc, cfg = encoder_lib.load_encoder(path)  # FileNotFoundError naming the path
    if cfg.n_shape > model.num_shape or cfg.n_expr > model.num_expression:
        raise ValueError(
            f"encoder checkpoint {path} predicts {cfg.n_shape} identity / {cfg.n_expr} expression components, "
            f"more than the model {model.name!r} has ({model.num_shape} / {model.num_expression})"
        )
    return enc, cfg, str(path)


# --------------------------------------------------------------------------- evaluation
def landmarks_to_pixels(landmarks_norm: np.ndarray, crop_transforms: np.ndarray, crop_size: int) -> np.ndarray:
    """[T, W, L, 2] normalized crop coordinates → original image pixels."""
    crop_px = crops_lib.from_normalized(np.asarray(landmarks_norm, np.float64), crop_size)
    inv = crops_lib.invert_transform(np.asarray(crop_transforms, np.float64))
    return crops_lib.apply_transform(crop_px, inv)


def landmarks3d(face: fit_lib.FaceModel, vertices: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """3D landmarks [T, W, L, 3] of fitted meshes."""
    return np.asarray(jax.jit(flame_jax.landmarks)(face.flame, face.embedding, vertices, pose))


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

    NME against the noise-free landmarks (undetected frames included: the truth is known there);
    vertex errors, acceleration error and the detected-frames smoothness from ``clip.gt``.
    """
    if crop_size is None:
        crop_size = int(clip.meta.get("config", {}).get("crop_size", crops_lib.CROP_SIZE))
    gt = clip.gt
    return evaluate(
        result, face, crop_transforms=clip.crop_transforms, reference_landmarks_px=gt["landmarks68_true"],
        reference_visible=clip.visible68 | ~clip.valid[..., None], crop_size=crop_size,
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
def default_encoder_config(model: flame_jax.FlameModel) -> encoder_lib.EncoderConfig:
    """The CPU-sized encoder predicting all of the model's components."""
    return encoder_lib.EncoderConfig.small(n_shape=model.num_shape, n_expr=model.num_expression)


def fit_methods(
    data: fit_lib.ClipData,
    face: fit_lib.FaceModel,
    *,
    fit_config: fit_lib.FitConfig,
    encoder_config: encoder_lib.EncoderConfig,
    methods=("direct", "neuface"),
    encoder=None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, tuple[fit_lib.FitResult, float]]:
    """Runs the requested methods on one clip; returns {method: (result, seconds)}."""
    results = {}
    for method in methods:
        t0 = time.perf_counter()
        if method == "neuface":
            opt = fit_lib.NeuFace(face, encoder_config, fit_config)
            cb = None if progress is None else (lambda e, parts: progress("neuface", e, fit_config.num_epochs))
            res = opt.fit(data, encoder=encoder, progress=cb)
        elif method == "direct":
            if progress is not None:
                progress("direct", 0, 1)
            res = fit_lib.DirectFit(face, encoder_config, fit_config).fit(data, encoder=encoder)
            if progress is not None:
                progress("direct", 1, 1)
        else:
            raise ValueError(f"unknown method {method!r} (use 'neuface' or 'direct')")
        results[method] = (res, time.perf_counter() - t0)
    return results


def run_synthetic(
    config: DemoConfig = DemoConfig(),
    *,
    out_dir: str | Path | None = None,
    model=None,
    embedding=None,
    encoder=None,
    write_video: bool = True,
    write_objs: bool = False,
    log: Callable[[str], None] = print,
    progress_factory: Callable[[str, int], Any] | None = None,
) -> dict[str, Any]:
    """Generates a synthetic clip, fits it with each method, evaluates and (optionally) exports.

    ``encoder`` (an ``encoder.Encoder``, with ``config.encoder`` its config) overrides
    ``config.encoder_init``.

    Returns a dict with ``metrics`` ({method: {name: value}} plus "ground_truth"),
    ``seconds`` ({stage: seconds}), ``results`` ({method: FitResult}), ``clip`` and
    ``settings`` (the encoder start, checkpoint and learning rates used).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if model is None:
        model, embedding = flame_jax.demo_model(), flame_jax.demo_landmark_embedding()
    face = fit_lib.FaceModel(model, embedding)
    timings["model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if encoder is not None:
        init, checkpoint = "given", None
        enc_cfg = config.encoder or default_encoder_config(model)
    else:
        init = config.encoder_init
        encoder, enc_cfg, checkpoint = load_start_encoder(init, model, config.encoder)
    timings["encoder"] = time.perf_counter() - t0
    settings = {
        "encoder_init": init, "encoder_checkpoint": checkpoint, "encoder_arch": enc_cfg.arch,
        "encoder_image_size": enc_cfg.image_size, "learning_rate": config.fit.learning_rate,
        "direct_learning_rate": config.fit.direct_learning_rate, "epochs": config.fit.num_epochs,
        "chunk_frames": config.fit.chunk_frames,
    }
    log(f"NeuFace starts from {'a random encoder' if encoder is None else (checkpoint or 'the given encoder')} "
        f"(lr {config.fit.learning_rate:g}); the direct baseline from its predictions (lr {config.fit.direct_learning_rate:g})")

    t0 = time.perf_counter()
    synth_cfg = dataclasses.replace(config.synth, num_frames=config.num_frames)
    bar = progress_factory("render synthetic clip", 1) if progress_factory else None
    cb = None
    if bar is not None:
        def cb(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()
    kwargs = {} if model is flame_jax.demo_model() else {"model": model, "embedding68": embedding}
    clip = synth_lib.synthesize_clip(seed=config.seed, rig=config.views, config=synth_cfg, progress=cb, **kwargs)
    if bar is not None:
        bar.close()
    timings["synthesize"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = fit_lib.prepare_clip(
        clip.images, clip.landmarks68, clip.crop_transforms, encoder_size=enc_cfg.image_size,
        visible=clip.visible68, valid=clip.valid, crop_size=synth_cfg.crop_size, name=f"synthetic seed {config.seed}",
    )
    timings["prepare"] = time.perf_counter() - t0

    bars: dict[str, Any] = {}

    def progress(method, done, total):
        if progress_factory is None:
            return
        if method not in bars:
            bars[method] = progress_factory(f"{method} optimization", total)
        b = bars[method]
        b.n = done
        b.refresh()
        if done >= total:
            b.close()

    fits = fit_methods(
        data, face, fit_config=config.fit, encoder_config=enc_cfg, methods=config.methods, encoder=encoder,
        progress=progress,
    )
    metrics = {}
    for method, (res, secs) in fits.items():
        timings[method] = secs
        metrics[method] = evaluate_synthetic(res, face, clip, crop_size=synth_cfg.crop_size)
    metrics["ground_truth"] = ground_truth_reference(clip, face)

    if out_dir is not None:
        t0 = time.perf_counter()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for method, (res, _) in fits.items():
            name = "params.npz" if method == "neuface" else f"params_{method}.npz"
            export_lib.write_params(
                out / name, res, view_names=clip.view_names, detected_landmarks=np.asarray(data.landmarks),
                landmarks_mask=np.asarray(data.landmarks_mask) > 0, crop_transforms=clip.crop_transforms,
                valid=clip.valid, crop_size=synth_cfg.crop_size, model_name=model.name, method=method,
            )
            if write_objs:
                export_lib.write_objs(out / f"objs_{method}", res.vertices, np.asarray(model.faces), clip.view_names)
        export_lib.write_json(
            out / "metrics.json",
            {**metrics, "seconds": timings, "settings": settings,
             "clip": {"seed": config.seed, "frames": config.num_frames, "views": list(clip.view_names),
                      "model": model.name}},
        )
        if write_video:
            main = "neuface" if "neuface" in fits else next(iter(fits))
            res = fits[main][0]
            frames = export_lib.overlay_frames(
                clip.images, res.vertices, res.cam, clip.crop_transforms, np.asarray(model.faces),
                crop_size=synth_cfg.crop_size, landmarks=clip.landmarks68,
            )
            export_lib.write_overlay_video(out / "overlay.mp4", frames, fps=clip.fps)
        timings["export"] = time.perf_counter() - t0
    return {"metrics": metrics, "seconds": timings, "results": {k: v[0] for k, v in fits.items()}, "clip": clip,
            "settings": settings}


def format_table(metrics: dict[str, dict[str, float]], columns=METRIC_NAMES) -> str:
    """A plain-text comparison table (one row per method; "-" where a method lacks a column)."""
    cols = [c for c in columns if any(c in vals for vals in metrics.values())] or list(columns)
    width = max(15, *(len(c) + 2 for c in cols))
    header = f"{'method':<14}" + "".join(f"{c:>{width}}" for c in cols)
    lines = [header, "-" * len(header)]
    for method, vals in metrics.items():
        cells = "".join(f"{vals[c]:>{width}.4f}" if c in vals else f"{'-':>{width}}" for c in cols)
        lines.append(f"{method:<14}" + cells)
    return "\n".join(lines)
