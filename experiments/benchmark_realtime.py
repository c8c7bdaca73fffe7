r"""Benchmark of the real-time regressor and live tracker: latency per stage, and accuracy.

Latency (one 640×480 video made from a shared clip: its centre 4:3 region resized, written as
H.264 to a temporary file):

* the regressor alone at batch 1 (one compiled call: crop → parameters and 68 landmarks; and the
  network alone), median over --latency_repeats calls;
* the live pipeline (``realtime.track``) over the video: median milliseconds per stage (decode,
  detect, crop, regress, filter) and frames/s of their sum (overlay drawing excluded, measured
  apart on the same frames);
* MediaPipe's Face Landmarker alone (VIDEO mode, ``media.landmarker.FaceLandmarker``) on the same
  decoded frames, in the same run.

Accuracy:

* held-out synthetic clips (seeds --synthetic_seeds, monocular, --synthetic_frames frames; never
  used in training, whose clips start at seed 1,000,000): canonical vertex error of the regressor
  on the crops NeuFace uses, against NeuFace's fit of the same clips from the packaged encoder
  (``synthetic.demo.fit_methods``, --neuface_epochs), both scored by ``demo.evaluate_synthetic``;
* real shared clips with an ``annotate`` output (--annotations NAME=DIR): the tracker runs over the
  clip's frames (its own crops, detector included) from --eval_from (the fraction of the clip held
  out of training; 0 for a clip never trained on). NME against MediaPipe's landmarks (the 68 iBUG
  points that annotate fits, visible ones) for the tracker and for annotate's fit on the same
  frames; 2D jitter (mean second difference of the landmarks, % of the inter-ocular distance) of
  MediaPipe's own landmarks, annotate's and the tracker's (raw and One-Euro filtered). Another
  annotation of the same clips (--extra_annotations, e.g. NeuFace only, without per-frame
  refinement) is scored on the same frames as an extra column. ``NAME=DIR:0-0.7`` selects a clip's
  training frames instead (e.g. to tune the filter with --parts=jitter without touching held-out ones).
  Also the raw regressor's head yaw and pitch against annotate's (mean, mean error, mean |error|).

Diagnoses (--parts): ``jitter`` (where the tracker's jitter comes from: crop, regressor, filter) and
``pose`` (accuracy in bins of annotate's head yaw and pitch: NME of the tracker and of the regressor at
annotate's crops, the regressor's angles against annotate's, the crop against annotate's; overlays of
each bin's median and worst frame with --pose_overlay_dir), ``fit_split`` (at annotate's crops: NME with
parameter groups swapped between the regressor and its labels, mirror averaging), ``profile_bias`` (how
crops turned out of plane by ``--profile_pitch``'s warp read to the regressor — the change of its pitch
against the labels' — beside how real pitch changes read to it: the slope over each clip's frames).

    python experiments/benchmark_realtime.py --regressor=DIR \
        --annotations=mead=ANNOTATE_OUT/mead,liveportrait=...,wojtek=...:0 --extra_annotations=mead=OLD/mead,...

Prints the tables and writes the JSON to --out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("regressor", None, "Regressor checkpoint (neuface-jax train-regressor --out).")
flags.DEFINE_string("face_landmarker", "/work/shared/data/mediapipe/face_landmarker.task", "MediaPipe bundle.")
flags.DEFINE_string("latency_video", "/work/shared/data/videos/mead_M003_level_1_disgusted_015.mp4",
                    "Video made into the 640×480 latency clip.")
flags.DEFINE_integer("latency_frames", 118, "Frames of the latency clip.")
flags.DEFINE_integer("latency_repeats", 300, "Batch-1 regressor calls timed.")
flags.DEFINE_list("latency_sizes", [], "Other crop sides (pixels) at which the network alone is also timed, "
                  "in the same run (the same architecture; latency does not depend on the weights).")
flags.DEFINE_integer("overlay_frames", 20, "Frames whose overlay drawing is timed.")
flags.DEFINE_list("synthetic_seeds", ["901", "902"], "Held-out synthetic clip seeds.")
flags.DEFINE_integer("synthetic_frames", 40, "Frames per synthetic clip.")
flags.DEFINE_integer("neuface_epochs", 100, "NeuFace epochs of the synthetic reference fit.")
flags.DEFINE_string("neuface_cache", None, "JSON file keeping NeuFace's synthetic fits (they do not depend on the "
                    "regressor): read when present, written otherwise.")
flags.DEFINE_list("annotations", [], "NAME=ANNOTATE_DIR[:EVAL_FROM[-EVAL_TO]] of real clips (EVAL_FROM: the "
                  "held-out fraction's start, default 0.7; 0 for a clip not trained on; EVAL_TO, default 1: e.g. "
                  "0-0.7 for a clip's training frames, to tune the filter on).")
flags.DEFINE_list("extra_annotations", [], "NAME=ANNOTATE_DIR of other annotate outputs of the same clips (e.g. "
                  "NeuFace only, without per-frame refinement): their NME on the same held-out frames is an extra "
                  "column, 'annotate_extra'.")
flags.DEFINE_list("parts", ["latency", "synthetic", "real"], "What to run: latency, synthetic, real, jitter (the "
                  "jitter diagnosis: crop vs regressor vs filter, and the One-Euro sweep), pose (accuracy against "
                  "head yaw and pitch), fit_split (the error split at annotate's crops: parameters swapped between regressor and "
                  "labels, mirror averaging), profile_bias (how --profile_pitch's turned crops read to the regressor "
                  "against real pitch changes).")
flags.DEFINE_bool("mirror_average", False, "Regress each crop and its mirror and average the two (the tracker's "
                  "--mirror_average; every part).")
flags.DEFINE_float("filter_min_cutoff", None, "One-Euro min cut-off of the tracker (default: TrackConfig's).")
flags.DEFINE_float("filter_beta", None, "One-Euro beta of the tracker (default: TrackConfig's).")
flags.DEFINE_list("sweep_min_cutoff", ["0.25", "0.5", "1.0", "1.5", "3.0"], "Jitter part: One-Euro min cut-offs.")
flags.DEFINE_list("sweep_beta", ["0", "0.3", "1", "3"], "Jitter part: One-Euro betas.")
flags.DEFINE_list("pose_bins", ["0", "10", "20", "30", "45", "90"], "Pose part: |yaw| and |pitch| bin edges "
                  "(degrees).")
flags.DEFINE_string("pose_overlay_dir", None, "Pose part: where to write overlays of each yaw bin's median and "
                    "worst frame (PNG).")
flags.DEFINE_list("profile_bias_pitches", ["-8", "8"], "profile_bias part: the pitch changes (degrees) of the turned "
                  "copies.")
flags.DEFINE_bool("head_fit", True, "With a landmark-head regressor: fit the head rotation and camera to the "
                  "head's points (regressor.HeadFit.enabled, the tracker's default); false (and --nojaw_fit) scores "
                  "the regressed parameters alone, as Wave 11's figures did.")
flags.DEFINE_float("head_fit_sigma_point", None, "HeadFit.sigma_point (default: HeadFit's).")
flags.DEFINE_integer("head_fit_iterations", None, "HeadFit.iterations (default: HeadFit's).")
flags.DEFINE_bool("jaw_fit", True, "With a landmark-head regressor: fit the jaw opening to the head's lip points "
                  "(regressor.HeadFit.jaw, the tracker's default); false scores the regressed jaw.")
flags.DEFINE_float("jaw_fit_sigma_deg", None, "HeadFit.sigma_jaw_deg (default: HeadFit's).")
flags.DEFINE_string("out", "experiments/results/benchmark_realtime_cpu.json", "JSON output.")


def _median_ms(xs) -> float:
    return float(np.median(xs) * 1e3)


def make_latency_clip(path: str, frames: int) -> tuple[str, np.ndarray]:
    """The centre 4:3 region of ``path`` at 640×480 as an H.264 file (and its decoded frames)."""
    import cv2

    from neuface_jax.media import video as video_lib

    clip = video_lib.read_video(path, frames=video_lib.FrameRange(end=frames)).frames[0]
    h, w = clip.shape[1:3]
    cw = min(w, h * 4 // 3)
    x0 = (w - cw) // 2
    out = np.stack([cv2.resize(f[:, x0:x0 + cw], (640, 480), interpolation=cv2.INTER_AREA) for f in clip])
    dst = os.path.join(tempfile.mkdtemp(prefix="rt_bench_"), "clip640x480.mp4")
    video_lib.write_video(dst, out, fps=25.0)
    decoded = np.stack([f.image for f in _file_frames(dst)])
    return dst, decoded


def _file_frames(path):
    from neuface_jax.realtime import sources

    with sources.open_source(path) as src:
        yield from src


def latency(reg, det_path: str) -> dict:
    import jax

    from neuface_jax.core import encoder as encoder_lib
    from neuface_jax.media import landmarker as landmarker_lib
    from neuface_jax.realtime import live, track
    from neuface_jax.realtime import regressor as regressor_lib

    path, frames = make_latency_clip(FLAGS.latency_video, FLAGS.latency_frames)
    out: dict = {"clip": f"{FLAGS.latency_video} (centre 4:3, 640x480, {len(frames)} frames)"}
    # The regressor alone, batch 1.
    crop = np.ascontiguousarray(np.random.default_rng(0).integers(0, 255, (reg.image_size,) * 2 + (3,), np.uint8))
    reg.warmup()
    g, tr, rest = encoder_lib.split_params(reg.encoder)
    net = jax.jit(lambda tr, rest, x: encoder_lib.apply(g, tr, rest, x[None].astype(jax.numpy.float32) / 255.0))
    net(tr, rest, crop).block_until_ready()
    # With mirror averaging, the plain regressor is timed in alternation (the same machine load).
    plain = regressor_lib.Regressor(reg.encoder, reg.config, reg.face) if reg.mirror_average else None
    if plain is not None:
        plain.warmup()
    ts_net, ts_reg, ts_plain = [], [], []
    for _ in range(FLAGS.latency_repeats):
        t = time.perf_counter()
        net(tr, rest, crop).block_until_ready()
        ts_net.append(time.perf_counter() - t)
        t = time.perf_counter()
        reg(crop)
        ts_reg.append(time.perf_counter() - t)
        if plain is not None:
            t = time.perf_counter()
            plain(crop)
            ts_plain.append(time.perf_counter() - t)
    out["network_ms"] = _median_ms(ts_net)
    out["regressor_ms"] = _median_ms(ts_reg)
    out["regressor_ms_p90"] = float(np.percentile(ts_reg, 90) * 1e3)
    out["mirror_average"] = reg.mirror_average
    if plain is not None:
        out["regressor_without_mirror_average_ms"] = _median_ms(ts_plain)
    if FLAGS.latency_sizes:
        # Timed in alternation with the trained network, so both see the same machine load.
        sizes = [int(s) for s in FLAGS.latency_sizes]
        others = {}
        for s in sizes:
            e = encoder_lib.init_encoder(dataclasses.replace(reg.config, image_size=s))
            g2, tr2, rest2 = encoder_lib.split_params(e)
            x = np.ascontiguousarray(np.random.default_rng(1).integers(0, 255, (s, s, 3), np.uint8))
            f = jax.jit(lambda tr, rest, x, g2=g2: encoder_lib.apply(g2, tr, rest, x[None].astype(jax.numpy.float32)
                                                                    / 255.0))
            f(tr2, rest2, x).block_until_ready()
            others[s] = (f, tr2, rest2, x)
        ts = {s: [] for s in ["trained"] + sizes}
        for _ in range(FLAGS.latency_repeats):
            t = time.perf_counter()
            net(tr, rest, crop).block_until_ready()
            ts["trained"].append(time.perf_counter() - t)
            for s, (f, tr2, rest2, x) in others.items():
                t = time.perf_counter()
                f(tr2, rest2, x).block_until_ready()
                ts[s].append(time.perf_counter() - t)
        out["network_ms_by_size"] = {f"{reg.image_size} (trained)" if s == "trained" else str(s): _median_ms(v)
                                     for s, v in ts.items()}
    # The pipeline over the file (decode included, overlay apart).
    cfg = track.TrackConfig(face_landmarker=det_path)
    det = track.FaceDetector(det_path, cfg.min_detection_confidence)
    rows, tracked = [], []
    for f in track.track(path, cfg, regressor=reg, detector=det):
        rows.append(dict(f.seconds, valid=f.valid))
        tracked.append(f)
    s = live.summarize(rows, 0.0, [])
    out["pipeline"] = {"median_ms": s["median_ms"], "mean_ms": {k: float(np.mean([r[k] for r in rows]) * 1e3)
                                                                for k in track.STAGES},
                       "frames_per_s": s["tracking_frames_per_s"], "detector_runs": s["detector_runs"],
                       "valid_fraction": s["valid_fraction"], "frames": s["frames"]}
    ov = []
    for f in tracked[: FLAGS.overlay_frames]:
        t = time.perf_counter()
        live.overlay_image(f, reg.face)
        ov.append(time.perf_counter() - t)
    out["overlay_ms"] = _median_ms(ov)
    det.close()
    # MediaPipe's Face Landmarker alone on the same decoded frames.
    ts = []
    with landmarker_lib.FaceLandmarker(det_path) as lm:
        lm.detect(frames[0], 0)
        for i, fr in enumerate(frames[1:], 1):
            t = time.perf_counter()
            lm.detect(fr, landmarker_lib.timestamp_ms(i, 25.0))
            ts.append(time.perf_counter() - t)
    out["mediapipe_landmarker_ms"] = _median_ms(ts)
    out["mediapipe_landmarker_frames_per_s"] = 1.0 / float(np.median(ts))
    return out


def _prediction_result(preds, face):
    """A ``fit.FitResult`` [T, 1] of per-frame predictions, identity = the causal running mean (as live)."""
    import flame_jax
    import jax.numpy as jnp

    from neuface_jax.core import fit as fit_lib

    shapes = np.stack([p.shape for p in preds])
    running = np.cumsum(shapes, 0) / np.arange(1, len(preds) + 1)[:, None]
    expr = np.stack([p.expression for p in preds])
    pose = np.stack([p.pose for p in preds])
    cam = np.stack([p.cam for p in preds])
    fwd = flame_jax.forward(face.flame, shape=jnp.asarray(running), expression=jnp.asarray(expr),
                            pose=jnp.asarray(pose))
    canon_pose = pose.copy()
    canon_pose[:, 0:3] = 0.0
    canon = flame_jax.forward(face.flame, shape=jnp.asarray(running), expression=jnp.asarray(expr),
                              pose=jnp.asarray(canon_pose))
    _, lmk, _ = fit_lib.evaluate_params(face, jnp.asarray(running), jnp.asarray(expr), jnp.asarray(pose),
                                        jnp.asarray(cam))
    return fit_lib.FitResult(
        shape=running[-1], expression=expr[:, None], pose=pose[:, None], cam=cam[:, None],
        landmarks2d=np.asarray(lmk)[:, None], vertices=np.asarray(fwd.vertices)[:, None],
        canonical_vertices=np.asarray(canon.vertices)[:, None], history={},
    )


def synthetic(reg) -> dict:
    from neuface_jax.core import fit as fit_lib
    from neuface_jax.media import crops
    from neuface_jax.realtime import regressor as regressor_lib
    from neuface_jax.realtime import track
    from neuface_jax.synthetic import demo as pipeline
    from neuface_jax.synthetic import pretrain
    from neuface_jax.synthetic import synth as synth_lib

    face = reg.face
    enc, enc_cfg, _ = pretrain.ensure_pretrained()
    rows = []
    for seed in [int(s) for s in FLAGS.synthetic_seeds]:
        cfg = dataclasses.replace(synth_lib.SynthConfig(), num_frames=FLAGS.synthetic_frames)
        clip = synth_lib.synthesize_clip(seed=seed, rig="mono", config=cfg)
        scale = np.diag([reg.image_size / cfg.crop_size] * 2)
        ms = [scale @ clip.crop_transforms[t, 0] for t in range(clip.num_frames)]
        preds = [reg(crops.warp_crop(clip.images[t, 0], m, reg.image_size)) for t, m in enumerate(ms)]
        # Normalized crop coordinates do not depend on the crop's pixel size: score them through the
        # clip's own crop transforms and size.
        ours = pipeline.evaluate_synthetic(_prediction_result(preds, face), face, clip, crop_size=cfg.crop_size)
        # The tracker's filter (camera in frame coordinates), identity kept as the causal running mean.
        sm = track.Smoother(track.TrackConfig().one_euro)
        smoothed = []
        for t, (p, m) in enumerate(zip(preds, ms)):
            q = sm(p, regressor_lib.box_of_transform(m, reg.image_size), t / 25.0)
            smoothed.append(q.with_vector(np.concatenate([p.shape, q.vector()[p.shape.size:]])))
        ours_filtered = pipeline.evaluate_synthetic(_prediction_result(smoothed, face), face, clip,
                                                    crop_size=cfg.crop_size)
        cache = Path(FLAGS.neuface_cache) if FLAGS.neuface_cache else None
        key = f"seed{seed}_frames{clip.num_frames}_epochs{FLAGS.neuface_epochs}"
        cached = json.loads(cache.read_text()) if cache and cache.is_file() else {}
        if key in cached:
            theirs, secs = cached[key]["metrics"], cached[key]["seconds"]
            row = {"seed": seed, "frames": clip.num_frames, "regressor": ours, "regressor_filtered": ours_filtered,
                   "neuface": theirs, "neuface_seconds": secs, "neuface_from_cache": str(cache)}
            print(f"synthetic seed {seed}: vertex error regressor {ours['vertex_error_mm']:.2f} mm, NeuFace "
                  f"{theirs['vertex_error_mm']:.2f} mm (cached)", flush=True)
            rows.append(row)
            continue
        data = crops.prepare_clip(clip.images, clip.landmarks68, clip.crop_transforms, encoder_size=enc_cfg.image_size,
                                  visible=clip.visible68, valid=clip.valid, crop_size=cfg.crop_size)
        t0 = time.perf_counter()
        fits = pipeline.fit_methods(data, face, fit_config=fit_lib.FitConfig(num_epochs=FLAGS.neuface_epochs),
                                    encoder_config=enc_cfg, methods=("neuface",), encoder=enc)
        secs = time.perf_counter() - t0
        theirs = pipeline.evaluate_synthetic(fits["neuface"][0], face, clip)
        if cache:
            cached[key] = {"metrics": theirs, "seconds": secs}
            cache.write_text(json.dumps(cached, indent=1) + "\n")
        row = {"seed": seed, "frames": clip.num_frames, "regressor": ours, "regressor_filtered": ours_filtered,
               "neuface": theirs, "neuface_seconds": secs}
        print(f"synthetic seed {seed}: vertex error regressor {ours['vertex_error_mm']:.2f} mm, NeuFace "
              f"{theirs['vertex_error_mm']:.2f} mm ({secs:.0f} s)", flush=True)
        rows.append(row)
    mean = lambda who, k: float(np.mean([r[who][k] for r in rows]))  # noqa: E731
    keys = ("vertex_error_mm", "vertex_error_similarity_mm", "nme_percent", "jitter_mm")
    return {"clips": rows,
            "mean": {who: {k: mean(who, k) for k in keys} for who in ("regressor", "regressor_filtered", "neuface")},
            "ratio_vertex_error": mean("regressor", "vertex_error_mm") / mean("neuface", "vertex_error_mm")}


def jitter_2d(points: np.ndarray, iod: np.ndarray) -> float:
    """Mean |second difference| of 2D landmarks [T, L, 2], % of the inter-ocular distance."""
    acc = np.linalg.norm(points[2:] - 2 * points[1:-1] + points[:-2], axis=-1).mean(-1)
    return float(np.mean(acc / iod[1:-1]) * 100.0)


@dataclasses.dataclass
class RealClip:
    """Held-out frames of a real clip with its references (pixels of the video)."""

    name: str
    frames: list
    fps: float
    first_frame: int
    start_frac: float
    mediapipe: np.ndarray  # [T, 68, 2] MediaPipe's iBUG-68 points
    annotate: np.ndarray  # [T, 68, 2] annotate's fitted landmarks
    visible: np.ndarray  # [T, 68]
    boxes: np.ndarray  # [T, 3] annotate's crop boxes (from MediaPipe's landmarks, smoothed over time)
    pose: np.ndarray  # [T, 15] annotate's full pose
    frame_indices: np.ndarray | None = None  # [T] the video's frame numbers

    @property
    def iod(self) -> np.ndarray:
        return np.linalg.norm(self.mediapipe[:, 36] - self.mediapipe[:, 45], axis=-1)


def load_real_clip(item: str) -> RealClip:
    """``NAME=ANNOTATE_DIR[:EVAL_FROM]`` → the clip's frames from EVAL_FROM on and their references."""
    from neuface_jax import params as params_lib
    from neuface_jax.media import crops
    from neuface_jax.media import video as video_lib
    from neuface_jax.realtime import regressor as regressor_lib
    from neuface_jax.training import labels as labels_lib

    name, _, rest = item.partition("=")
    ann, _, frac = rest.partition(":")
    start, _, end = frac.partition("-")
    start_frac = float(start) if start else 0.7
    end_frac = float(end) if end else 1.0
    if not 0.0 <= start_frac < end_frac <= 1.0:
        raise ValueError(f"--annotations {item!r}: the frame range must be 0 <= FROM < TO <= 1")
    rec = params_lib.load_params(Path(ann) / "params.npz")
    z = np.load(Path(ann) / "params.npz", allow_pickle=False)
    t_all = len(rec.frame_indices)
    sel = np.arange(int(round(t_all * start_frac)), int(round(t_all * end_frac)))
    video = labels_lib.read_clip_source(ann).inputs[0]
    fi = rec.frame_indices[sel]
    decoded = video_lib.read_video(video, frames=video_lib.FrameRange(start=int(fi.min()), end=int(fi.max()) + 1))
    by = {int(i): f for i, f in zip(decoded.frame_indices, decoded.frames[0])}
    to_px = lambda norm, t: crops.apply_transform(  # noqa: E731
        crops.from_normalized(norm, rec.crop_size), crops.invert_transform(rec.crop_transforms[t, 0]))
    lmk = np.asarray(z["landmarks2d"]).reshape(rec.valid.shape + (-1, 2))[:, 0]
    pred = np.asarray(z["predicted_landmarks2d"]).reshape(rec.valid.shape + (-1, 2))[:, 0]
    mask = np.asarray(z["landmarks_mask"]).reshape(rec.valid.shape + (-1,))[:, 0]
    stride = float(np.median(np.diff(fi))) if len(fi) > 1 else 1.0  # annotations may skip frames
    return RealClip(name=name, frames=[by[int(i)] for i in fi], fps=float(decoded.fps or 25.0) / stride,
                    first_frame=int(fi[0]),
                    start_frac=start_frac, mediapipe=np.stack([to_px(lmk[t], t) for t in sel]),
                    annotate=np.stack([to_px(pred[t], t) for t in sel]),
                    visible=mask[sel] & rec.valid[sel, 0][:, None],
                    boxes=np.stack([regressor_lib.box_of_transform(rec.crop_transforms[t, 0], rec.crop_size)
                                    for t in sel]),
                    pose=np.asarray(z["full_pose"]).reshape(rec.valid.shape + (-1,))[sel, 0],
                    frame_indices=np.asarray(fi))


def annotation_pixels(ann: str, frame_indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An ``annotate`` output's fitted landmarks and its MediaPipe targets (image pixels, [T, 68, 2]) on
    the given video frames (first view), to score another annotation of a clip on the same frames."""
    from neuface_jax import params as params_lib
    from neuface_jax.media import crops

    rec = params_lib.load_params(Path(ann) / "params.npz")
    z = np.load(Path(ann) / "params.npz", allow_pickle=False)
    row = {int(f): t for t, f in enumerate(rec.frame_indices)}
    missing = [int(f) for f in frame_indices if int(f) not in row]
    if missing:
        raise ValueError(f"{ann}: no annotation of frames {missing[:5]}{'...' if len(missing) > 5 else ''}")
    shape = rec.valid.shape + (-1, 2)
    out = []
    for key in ("predicted_landmarks2d", "landmarks2d"):
        pts = np.asarray(z[key]).reshape(shape)[:, 0]
        out.append(np.stack([crops.apply_transform(crops.from_normalized(pts[row[int(f)]], rec.crop_size),
                                                   crops.invert_transform(rec.crop_transforms[row[int(f)], 0]))
                             for f in frame_indices]))
    return out[0], out[1]


def _pixels(norm, m, size):
    from neuface_jax.media import crops

    return crops.apply_transform(crops.from_normalized(norm, size), crops.invert_transform(m))


def real(reg, det_path: str) -> dict:
    from neuface_jax.core import metrics as metrics_lib
    from neuface_jax.realtime import sources, track

    out = {}
    extra = dict(e.split("=", 1) for e in FLAGS.extra_annotations)
    for item in FLAGS.annotations:
        clip = load_real_clip(item)
        name, frames, mp, ann_px, vis = clip.name, clip.frames, clip.mediapipe, clip.annotate, clip.visible
        raw_px, filt_px, ok, angles, head_px = [], [], [], [], []
        src = sources.ArraySource(frames, fps=clip.fps, name=name)
        for f in track.track(src, _track_config(det_path), regressor=reg):
            ok.append(f.valid)
            nan = np.full((68, 2), np.nan)
            if reg.config.landmark_head:
                head_px.append(_pixels(f.raw.head_landmarks, f.crop_transform, f.crop_size) if f.valid else nan)
            angles.append(_yaw_pitch_deg(f.raw.pose) if f.valid else np.full(2, np.nan))
            raw_px.append(_pixels(f.raw.landmarks, f.crop_transform, f.crop_size) if f.valid else nan)
            filt_px.append(_pixels(f.params.landmarks, f.crop_transform, f.crop_size) if f.valid else nan)
        ok = np.asarray(ok)
        raw_px, filt_px = np.stack(raw_px), np.stack(filt_px)
        both = vis & ok[:, None]
        iod = clip.iod
        every = ok.all()
        row = {
            "frames": len(frames), "first_frame": clip.first_frame, "held_out_from_fraction": clip.start_frac,
            "tracked_fraction": float(ok.mean()),
            "nme_percent": {
                "annotate": float(metrics_lib.nme(ann_px, mp, both)),
                "regressor_raw": float(metrics_lib.nme(np.nan_to_num(raw_px), mp, both)),
                "regressor_filtered": float(metrics_lib.nme(np.nan_to_num(filt_px), mp, both)),
            },
            "jitter_2d_percent_iod": {
                "mediapipe": jitter_2d(mp, iod),
                "annotate": jitter_2d(ann_px, iod),
                **({"regressor_raw": jitter_2d(raw_px, iod), "regressor_filtered": jitter_2d(filt_px, iod)}
                   if every else {}),
            },
        }
        # Head yaw and pitch (degrees, positive pitch: chin down) of the raw regressor against annotate's.
        ann_ang, reg_ang = _yaw_pitch_deg(clip.pose), np.stack(angles)
        err = (reg_ang - ann_ang)[ok]
        row["yaw_pitch_deg"] = {"annotate_mean": ann_ang.mean(0).tolist(),
                                "regressor_raw_mean": np.nanmean(reg_ang[ok], 0).tolist() if ok.any() else None,
                                "mean_error": err.mean(0).tolist() if ok.any() else None,
                                "mean_abs_error": np.abs(err).mean(0).tolist() if ok.any() else None}
        if name in extra:
            # Another annotation of the clip, scored against this one's MediaPipe targets on the same frames.
            other_px, other_mp = annotation_pixels(extra[name], clip.frame_indices)
            row["nme_percent"]["annotate_extra"] = float(metrics_lib.nme(other_px, mp, both))
            row["jitter_2d_percent_iod"]["annotate_extra"] = jitter_2d(other_px, iod)
            row["annotate_extra"] = {"dir": extra[name],
                                     "mediapipe_max_difference_px": float(np.abs(other_mp - mp).max())}
        if head_px:  # the landmark head's own points (what the head rotation and camera are fitted to)
            row["nme_percent"]["landmark_head_points"] = float(metrics_lib.nme(np.nan_to_num(np.stack(head_px)), mp,
                                                                               both))
        nme = row["nme_percent"]
        row["ratio_to_annotate"] = {k: nme[k] / nme["annotate"] for k in ("regressor_raw", "regressor_filtered")}
        out[name] = row
        print(f"{name}: {row['frames']} frames, NME % {row['nme_percent']}, jitter {row['jitter_2d_percent_iod']}, "
              f"yaw/pitch {row['yaw_pitch_deg']}", flush=True)
    return out


def fit_split(reg) -> dict:
    """Where the regressor's error lies, per clip and frame range, at annotate's own crops (the crops it
    was trained on, no augmentation, inference-time BatchNorm): NME against MediaPipe's points of the
    label parameters, of the regressor's, and of each with one group (identity, expression, full pose,
    global rotation, jaw, camera) taken from the other; the regressor's landmarks against the labels'
    (how well it fits its own targets); and mirror averaging (the crop and its mirror predicted, the
    mirror's parameters mirrored back, the two averaged)."""
    import jax
    import jax.numpy as jnp

    from neuface_jax.core import encoder as encoder_lib
    from neuface_jax.core import fit as fit_lib
    from neuface_jax.core import metrics as metrics_lib
    from neuface_jax.realtime import regressor as regressor_lib
    from neuface_jax.training import labels as labels_lib

    cfg, face = reg.config, reg.face
    g, tr, rest = encoder_lib.split_params(reg.encoder)

    @jax.jit
    def predict(images):
        p = encoder_lib.decode_outputs(encoder_lib.apply(g, tr, rest, images.astype(jnp.float32) / 255.0), cfg)
        return {"shape": p.shape, "expression": p.expression, "pose": p.pose, "cam": p.cam}

    landmarks = jax.jit(lambda d: fit_lib.evaluate_params(face, d["shape"], d["expression"], d["pose"], d["cam"])[1])
    _, shape_map, expr_map = regressor_lib.mirror_maps(face, cfg.n_shape, cfg.n_expr)
    out = {}
    for item in FLAGS.annotations:
        name, _, rest_ = item.partition("=")
        ann, _, frac = rest_.partition(":")
        start, _, end = frac.partition("-")
        frames = next(labels_lib.iter_labelled_clips([ann], reg.image_size))
        n = len(frames)
        f = frames.subset(np.arange(int(round(n * float(start or 0.7))), int(round(n * float(end or 1.0)))))
        mp, mask = f.landmarks, f.landmarks_mask
        lab = {"shape": f.shape[:, :cfg.n_shape], "expression": f.expression[:, :cfg.n_expr], "pose": f.pose,
               "cam": f.cam}
        net = jax.device_get(predict(jnp.asarray(f.images)))
        mir = jax.device_get(predict(jnp.asarray(np.ascontiguousarray(f.images[:, :, ::-1]))))
        back = dict(zip(("shape", "expression", "pose", "cam"), regressor_lib.mirror_params(
            mir["shape"], mir["expression"], mir["pose"], mir["cam"], shape_map, expr_map)))

        def nme(d):
            return float(metrics_lib.nme(np.asarray(landmarks(d)), mp, mask))

        def with_pose_part(base, other, cols):
            pose = np.array(base["pose"])
            pose[:, cols] = other["pose"][:, cols]
            return dict(base, pose=pose)

        row = {"frames": len(f), "range": [float(start or 0.7), float(end or 1.0)],
               "nme_percent": {"annotate_stored": float(metrics_lib.nme(f.predicted_landmarks, mp, mask)),
                               "labels": nme(lab), "regressor": nme(net),
                               "mirror_only": nme(back),
                               "mirror_average": nme({k: (net[k] + back[k]) / 2 for k in net})},
               "regressor_vs_label_landmarks_percent": float(metrics_lib.nme(np.asarray(landmarks(net)),
                                                                             f.predicted_landmarks, mask))}
        swaps = {}
        for k in ("shape", "expression", "pose", "cam"):
            swaps[f"labels_with_regressor_{k}"] = nme(dict(lab, **{k: net[k]}))
            swaps[f"regressor_with_labels_{k}"] = nme(dict(net, **{k: lab[k]}))
        swaps["labels_with_regressor_global_rotation"] = nme(with_pose_part(lab, net, slice(0, 3)))
        swaps["labels_with_regressor_jaw"] = nme(with_pose_part(lab, net, slice(6, 9)))
        swaps["labels_with_regressor_rotation_and_cam"] = nme(dict(with_pose_part(lab, net, slice(0, 3)),
                                                                   cam=net["cam"]))
        row["swapped_nme_percent"] = swaps
        out[name] = row
        print(f"{name} {row['range']}: {json.dumps({k: round(v, 2) for k, v in row['nme_percent'].items()})} "
              f"vs labels {row['regressor_vs_label_landmarks_percent']:.2f}; "
              f"{json.dumps({k: round(v, 2) for k, v in swaps.items()})}", flush=True)
    return out


def profile_bias(reg) -> dict:
    """How crops turned out of plane by ``neuface_jax.realtime.profile`` read to the regressor, against how
    real pitch changes read to it. Per clip, at annotate's crops: the slope of the regressor's head pitch
    against annotate's over all the clip's frames (how a *real* change of pitch reads), and for each Δpitch
    of --profile_bias_pitches, on the evaluation frames (those after EVAL_FROM), the mean change of the
    regressor's pitch from a crop to its turned copy against the labels' change (how a *warped* change
    reads). A warp that looked as turned as its label says would read like a real change: equal ratios;
    a lower ratio for the warp means its crops look less turned than their labels."""
    from neuface_jax.realtime import profile as profile_lib
    from neuface_jax.realtime import train as train_lib
    from neuface_jax.synthetic import pretrain as pretrain_lib

    def pitch_of(images):
        return _yaw_pitch_deg(np.stack([reg(im).pose for im in images]))[:, 1]

    out = {}
    for item in FLAGS.annotations:
        name, _, rest_ = item.partition("=")
        ann, _, frac = rest_.partition(":")
        start = float(frac.partition("-")[0] or 0.7)
        train, held = train_lib.distillation_data([ann], image_size=reg.image_size, holdout_fraction=1.0 - start)
        if train is None or held is None or len(held) == 0:
            raise ValueError(f"profile_bias: no frames with a face in {ann}")
        everything = pretrain_lib.PretrainData.concatenate([train, held])
        lab, pred = _yaw_pitch_deg(everything.pose)[:, 1], pitch_of(everything.images)
        slope = float(np.cov(lab, pred)[0, 1] / np.var(lab, ddof=1))
        row = {"frames": len(everything), "eval_frames": len(held),
               "real": {"label_pitch_range_deg": [float(lab.min()), float(lab.max())], "slope": slope,
                        "mean_error_deg": float(np.mean(pred - lab))},
               "turned": {}}
        base = pred[len(train):]  # the evaluation frames' own predictions (held comes last)
        for d in (float(x) for x in FLAGS.profile_bias_pitches):
            turned = profile_lib.profile_examples(held, reg.face, [d])
            label_change = _yaw_pitch_deg(turned.pose)[:, 1] - _yaw_pitch_deg(held.pose)[:, 1]
            read_change = pitch_of(turned.images) - base
            row["turned"][f"{d:+g}"] = {"label_change_deg": float(label_change.mean()),
                                        "read_change_deg": float(read_change.mean()),
                                        "ratio": float(read_change.mean() / label_change.mean())}
        out[name] = row
        print(f"{name}: real slope {slope:.2f} over pitch {lab.min():.1f}..{lab.max():.1f}°; turned: "
              + ", ".join(f"{k}: reads {v['read_change_deg']:+.1f}° of {v['label_change_deg']:+.1f}° "
                          f"(ratio {v['ratio']:.2f})" for k, v in row["turned"].items()), flush=True)
    return out


def _track_config(det_path: str, **kw):
    from neuface_jax.realtime import filters, track

    oe = filters.OneEuroConfig()
    oe = dataclasses.replace(oe, **{k: v for k, v in (("min_cutoff", FLAGS.filter_min_cutoff),
                                                      ("beta", FLAGS.filter_beta)) if v is not None})
    return track.TrackConfig(face_landmarker=det_path, one_euro=oe, **kw)


def lag_frames(filtered: np.ndarray, reference: np.ndarray, max_lag: float = 6.0) -> float:
    """The delay (frames, in steps of 0.1) that best aligns a filtered landmark track [T, L, 2] with its
    unfiltered reference: argmin over τ of the mean distance between ``filtered(t)`` and
    ``reference(t − τ)``, the reference first smoothed without delay (centred Gaussian, σ = 1 frame) so
    that interpolating it between frames does not favour half-frame shifts."""
    reference = _smooth_boxes(reference.reshape(len(reference), -1), sigma=1.0).reshape(reference.shape)
    t = np.arange(len(reference), dtype=np.float64)
    best, best_err = 0.0, np.inf
    skip = int(np.ceil(max_lag)) + 1
    for tau in np.arange(0.0, max_lag + 1e-9, 0.1):
        src = t[skip:] - tau
        i0 = np.floor(src).astype(int)
        w = (src - i0)[:, None, None]
        shifted = reference[i0] * (1 - w) + reference[np.minimum(i0 + 1, len(t) - 1)] * w
        err = float(np.mean(np.linalg.norm(filtered[skip:] - shifted, axis=-1)))
        if err < best_err:
            best, best_err = float(tau), err
    return best


def _smooth_boxes(boxes: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Centred Gaussian smoothing of a sequence [T, D] (edge-padded), e.g. boxes: a crop without
    frame-to-frame jitter."""
    r = int(3 * sigma)
    w = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    w /= w.sum()
    padded = np.pad(boxes, ((r, r), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, j], w, mode="valid") for j in range(boxes.shape[1])], -1)


def _regress_at(reg, image, box) -> np.ndarray:
    """The regressor's 68 landmarks (image pixels) on the crop ``box`` of ``image``."""
    crop, m = reg.crop(image, box)
    return _pixels(reg(crop).landmarks, m, reg.image_size)


def _box_corners(boxes: np.ndarray) -> np.ndarray:
    c, h = boxes[:, None, :2], boxes[:, None, 2:3] / 2.0
    return c + h * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)


def _filter_offline(reg, preds, transforms, times, config, *, frame_coordinates: bool):
    """Filters a raw prediction sequence as the tracker would (``track.Smoother``), or — the
    previous tracker's way — with the camera filtered in each frame's own crop coordinates; landmarks
    in pixels."""
    from neuface_jax.realtime import filters, regressor, track

    out = []
    if frame_coordinates:
        sm = track.Smoother(config)
        for p, m, t in zip(preds, transforms, times):
            q = sm(p, regressor.box_of_transform(m, reg.image_size), t)
            out.append(_pixels(reg.landmarks(q), m, reg.image_size))
    else:
        f = filters.OneEuroFilter(config)
        ident = np.cumsum([p.shape for p in preds], 0) / np.arange(1, len(preds) + 1)[:, None]
        for i, (p, m, t) in enumerate(zip(preds, transforms, times)):
            rest = f(np.concatenate([p.expression, p.pose, p.cam]), t)
            q = p.with_vector(np.concatenate([ident[i], rest]))
            out.append(_pixels(reg.landmarks(q), m, reg.image_size))
    return np.stack(out)


def jitter_diagnosis(reg, det_path: str) -> dict:
    """Where the tracker's 2D jitter comes from, per clip (held-out frames), all in % of the inter-ocular
    distance (mean |second difference|):

    * ``crop_box``: the crop's corners (the box the tracker places from the previous fit);
    * ``tracker_raw``: the raw landmarks of the tracker without filtering (crop from the raw fit);
    * ``smoothed_crop_raw``: the same frames regressed at a jitter-free crop (the tracker's boxes,
      centred Gaussian σ = 2 frames): the regressor's own frame-to-frame noise plus real motion;
    * ``still_frame_under_box_jitter``: one frame regressed again and again under the tracker's box
      residuals (box − smoothed box): the jitter that the crop's jitter alone causes;
    * filtered variants of the raw sequence (camera filtered in crop vs frame coordinates) and a
      One-Euro sweep (jitter, lag in frames vs the raw sequence, NME);
    * ``tracker``: the tracker as configured; ``crop_variants``: the crop placed from the previous fit
      or from the detector, every N frames, with or without a smoothed crop box.
    """
    from neuface_jax.core import metrics as metrics_lib
    from neuface_jax.realtime import regressor as regressor_lib
    from neuface_jax.realtime import sources, track

    size = reg.image_size
    out = {}
    det = track.FaceDetector(det_path)
    for item in FLAGS.annotations:
        clip = load_real_clip(item)
        iod, vis, mp = clip.iod, clip.visible, clip.mediapipe
        jit = lambda pts: jitter_2d(pts, iod)  # noqa: E731
        nme = lambda pts: float(metrics_lib.nme(pts, mp, vis))  # noqa: E731
        times = np.arange(len(clip.frames)) / clip.fps
        # The tracker, unfiltered.
        frames = list(track.track(sources.ArraySource(clip.frames, fps=clip.fps, name=clip.name),
                                  _track_config(det_path, filter=False), regressor=reg, detector=det))
        if not all(f.valid for f in frames):
            print(f"{clip.name}: the raw tracker lost the face on {sum(not f.valid for f in frames)} frames; "
                  "skipped", flush=True)
            continue
        preds = [f.raw for f in frames]
        ms = [f.crop_transform for f in frames]
        raw_px = np.stack([_pixels(p.landmarks, m, size) for p, m in zip(preds, ms)])
        boxes = np.stack([regressor_lib.box_of_transform(m, size) for m in ms])
        smooth = _smooth_boxes(boxes)
        fixed = np.stack([_regress_at(reg, img, b) for img, b in zip(clip.frames, smooth)])
        at_annotate = np.stack([_regress_at(reg, img, b) for img, b in zip(clip.frames, clip.boxes)])
        # How far the landmarks follow a moved crop (image pixels per pixel of box shift; 0 = they
        # stay on the face, 1 = they ride on the box), from ±8 % shifts of annotate's crop.
        gains = []
        for i in np.linspace(0, len(clip.frames) - 1, 5).astype(int):
            b = clip.boxes[i]
            for axis in (0, 1):
                delta = np.zeros(3)
                delta[axis] = 0.08 * b[2]
                moved = (_regress_at(reg, clip.frames[i], b + delta) - _regress_at(reg, clip.frames[i], b - delta))
                gains.append(float(np.mean(moved[:, axis]) / (2 * delta[axis])))
        residual = (boxes - smooth) / smooth[:, 2:3]
        still = []
        for i in np.linspace(0, len(clip.frames) - 1, 5).astype(int):
            seq = [_regress_at(reg, clip.frames[i], smooth[i] + r * smooth[i, 2]) for r in residual]
            still.append(jitter_2d(np.stack(seq), np.full(len(seq), iod[i])))
        row = {
            "frames": len(clip.frames), "first_frame": clip.first_frame,
            "jitter": {"mediapipe": jit(mp), "annotate": jit(clip.annotate), "crop_box": jit(_box_corners(boxes)),
                       "crop_box_smoothed": jit(_box_corners(smooth)), "tracker_raw": jit(raw_px),
                       "smoothed_crop_raw": jit(fixed), "still_frame_under_box_jitter": float(np.mean(still))},
            "nme": {"annotate": nme(clip.annotate), "tracker_raw": nme(raw_px), "smoothed_crop_raw": nme(fixed),
                    "at_annotate_crop": nme(at_annotate)},
            "box_following_gain": float(np.mean(gains)),
            "box_residual_std_percent_of_side": (residual.std(0) * 100).tolist(),
        }
        default = track.TrackConfig().one_euro
        for label, fc in (("filter_crop_coordinates", False), ("filter_frame_coordinates", True)):
            px = _filter_offline(reg, preds, ms, times, default, frame_coordinates=fc)
            row["jitter"][label] = jit(px)
            row["nme"][label] = nme(px)
            row.setdefault("lag_frames", {})[label] = lag_frames(px, raw_px)

        def run_tracker(cfg):
            fr = list(track.track(sources.ArraySource(clip.frames, fps=clip.fps, name=clip.name), cfg,
                                  regressor=reg, detector=det))
            if not all(f.valid for f in fr):
                return {"lost_frames": int(sum(not f.valid for f in fr))}
            raw2 = np.stack([_pixels(f.raw.landmarks, f.crop_transform, size) for f in fr])
            filt2 = np.stack([_pixels(f.params.landmarks, f.crop_transform, size) for f in fr])
            return {"one_euro": dataclasses.asdict(cfg.one_euro), "stable_crop": cfg.stable_crop,
                    "detector_crop": cfg.detector_crop, "redetect_every": cfg.redetect_every,
                    "jitter_raw": jit(raw2), "jitter_filtered": jit(filt2), "nme_raw": nme(raw2),
                    "nme_filtered": nme(filt2), "lag_frames": lag_frames(filt2, raw2),
                    "jitter_crop_box": jit(_box_corners(np.stack([f.box for f in fr])))}

        # The tracker as configured, the crop placements side by side, then a One-Euro sweep.
        cfg = _track_config(det_path)
        row["tracker"] = run_tracker(cfg)
        row["crop_variants"] = {
            f"{'detector' if dc else 'fit'}_every_{n}{'_stable' if st else ''}": run_tracker(
                dataclasses.replace(cfg, detector_crop=dc, redetect_every=n, stable_crop=st))
            for dc, n, st in ((False, 10, False), (False, 10, True), (True, 10, False), (True, 1, False),
                              (True, 1, True))}
        row["one_euro_sweep"] = sweep = []
        for mc in FLAGS.sweep_min_cutoff:
            for beta in FLAGS.sweep_beta:
                oe = dataclasses.replace(cfg.one_euro, min_cutoff=float(mc), beta=float(beta))
                sweep.append(run_tracker(dataclasses.replace(cfg, one_euro=oe)))
        out[clip.name] = row
        print(f"{clip.name}: jitter {json.dumps({k: round(v, 2) for k, v in row['jitter'].items()})}", flush=True)
        print(f"{clip.name}: box-following gain {row['box_following_gain']:.2f}", flush=True)
        print(f"{clip.name}: nme {json.dumps({k: round(v, 2) for k, v in row['nme'].items()})} lag "
              f"{row['lag_frames']}", flush=True)
        print(f"{clip.name}: tracker {json.dumps(row['tracker'])}", flush=True)
        for k, r in row["crop_variants"].items():
            print(f"  crop {k}: {json.dumps({a: round(b, 2) for a, b in r.items() if isinstance(b, float)})}",
                  flush=True)
        for r in sweep:
            if "one_euro" in r:
                print(f"  one-euro min_cutoff {r['one_euro']['min_cutoff']:.2f} beta {r['one_euro']['beta']:.2f}: "
                      f"jitter {r['jitter_filtered']:.2f} (raw {r['jitter_raw']:.2f}) nme {r['nme_filtered']:.2f} "
                      f"lag {r['lag_frames']:.1f} frames", flush=True)
    det.close()
    return out


def _yaw_pitch_deg(pose15: np.ndarray) -> np.ndarray:
    """Head yaw and pitch (degrees, [..., 2]) of full poses [..., 15] (global and neck rotation): yaw
    as ``flame_jax.head_yaw_degrees``, pitch about the head's x axis (positive: chin down)."""
    import flame_jax

    pose15 = np.asarray(pose15, np.float32)
    rot = np.asarray(flame_jax.axis_angle_to_matrix(pose15[..., 0:3]) @ flame_jax.axis_angle_to_matrix(
        pose15[..., 3:6]), np.float64)
    yaw = np.asarray(flame_jax.head_yaw_degrees(pose15), np.float64)
    pitch = np.degrees(np.arctan2(rot[..., 2, 1], rot[..., 2, 2]))
    return np.stack([yaw, pitch], -1)


def _draw_points(image: np.ndarray, pts: np.ndarray, colour, radius: int = 2) -> None:
    import cv2

    for x, y in np.asarray(pts):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(image, (int(round(x)), int(round(y))), radius, colour, -1, lineType=cv2.LINE_AA)


def _draw_box(image: np.ndarray, box, colour) -> None:
    import cv2

    c = _box_corners(np.asarray(box, np.float64)[None])[0].round().astype(np.int32)
    cv2.polylines(image, [c], True, colour, 2, lineType=cv2.LINE_AA)


def _angle_bins(angle, edges, per, ok, detected, angles, reg_trk, reg_ann, offset, ratio):
    """Rows of the pose diagnosis over bins of |angle| (see ``pose_diagnosis``)."""
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (np.abs(angle) >= lo) & (np.abs(angle) < hi)
        if not sel.any():
            continue

        def mean(a):
            a = a[sel & np.isfinite(a)] if a.ndim == 1 else a[sel & np.isfinite(a).all(-1)]
            return a.mean(0).tolist() if a.size else None

        rows.append({
            "bin_deg": [lo, hi], "frames": int(sel.sum()), "tracked": int((sel & ok).sum()),
            "detected": int((sel & detected).sum()),
            "nme_percent": {k: mean(v) for k, v in per.items()},
            "annotate_yaw_pitch_deg": mean(angles),
            "regressor_yaw_pitch_deg": {"tracker": mean(reg_trk), "at_annotate_crop": mean(reg_ann)},
            "abs_error_yaw_pitch_deg": {"tracker": mean(np.abs(reg_trk - angles)),
                                        "at_annotate_crop": mean(np.abs(reg_ann - angles))},
            "crop_offset_of_side": mean(offset), "crop_size_ratio": mean(ratio),
        })
    return rows


def pose_diagnosis(reg, det_path: str) -> dict:
    """Accuracy against head pose, per clip, in bins of annotate's |yaw| and |pitch| (--pose_bins):

    NME of annotate, of the tracker (its own crops) and of the regressor at annotate's crops; the
    regressor's yaw and pitch (tracker crops and annotate's) against annotate's, and their linear
    slopes (1 = the right amount of turn, < 1 saturating, > 1 exaggerating); the tracker's crop
    against annotate's (centre offset and size ratio, in units of annotate's crop side) and
    BlazeFace's detection rate. With --pose_overlay_dir, a strip of each yaw bin's median and worst
    frame (green: MediaPipe; blue: annotate; red: the tracker; boxes: the tracker's crop in red,
    annotate's in blue).
    """
    import cv2

    from neuface_jax.core import metrics as metrics_lib
    from neuface_jax.realtime import regressor as regressor_lib
    from neuface_jax.realtime import sources, track

    size = reg.image_size
    edges = [float(e) for e in FLAGS.pose_bins]
    out = {}
    det = track.FaceDetector(det_path)
    nan2 = np.full(2, np.nan)
    for item in FLAGS.annotations:
        clip = load_real_clip(item)
        mp, vis = clip.mediapipe, clip.visible
        frames = list(track.track(sources.ArraySource(clip.frames, fps=clip.fps, name=clip.name),
                                  _track_config(det_path, filter=False), regressor=reg, detector=det))
        ok = np.array([f.valid for f in frames])
        nan = np.full((68, 2), np.nan)
        trk_px = np.stack([_pixels(f.raw.landmarks, f.crop_transform, size) if f.valid else nan for f in frames])
        trk_ang = np.stack([_yaw_pitch_deg(f.raw.pose) if f.valid else nan2 for f in frames])
        trk_box = np.stack([f.box if f.valid else np.full(3, np.nan) for f in frames])
        at_ann, ann_ang = [], []
        for img, b in zip(clip.frames, clip.boxes):
            crop, m = reg.crop(img, b)
            p = reg(crop)
            at_ann.append(_pixels(p.landmarks, m, size))
            ann_ang.append(_yaw_pitch_deg(p.pose))
        at_ann, ann_ang = np.stack(at_ann), np.stack(ann_ang)
        detected = np.array([len(det.detect(img)) > 0 for img in clip.frames])
        angles = _yaw_pitch_deg(clip.pose)
        per = {
            "annotate": metrics_lib.nme_per_frame(clip.annotate, mp, vis),
            "tracker": metrics_lib.nme_per_frame(np.nan_to_num(trk_px), mp, vis & ok[:, None]),
            "at_annotate_crop": metrics_lib.nme_per_frame(at_ann, mp, vis),
        }
        per = {k: np.asarray(v, np.float64) for k, v in per.items()}
        offset = np.linalg.norm(trk_box[:, :2] - clip.boxes[:, :2], axis=-1) / clip.boxes[:, 2]
        ratio = trk_box[:, 2] / clip.boxes[:, 2]
        args = (per, ok, detected, angles, trk_ang, ann_ang, offset, ratio)

        def slope(pred, j):
            fin = np.isfinite(pred[:, j])
            return float(np.polyfit(angles[fin, j], pred[fin, j], 1)[0]) if fin.sum() > 2 else None

        row = {"frames": len(clip.frames), "first_frame": clip.first_frame,
               "yaw_bins": _angle_bins(angles[:, 0], edges, *args),
               "pitch_bins": _angle_bins(angles[:, 1], edges, *args),
               "slope_yaw_pitch": {"tracker": [slope(trk_ang, 0), slope(trk_ang, 1)],
                                   "at_annotate_crop": [slope(ann_ang, 0), slope(ann_ang, 1)]},
               "nme_percent": {k: float(np.nanmean(v)) for k, v in per.items()},
               "yaw_range_deg": [float(angles[:, 0].min()), float(angles[:, 0].max())],
               "pitch_range_deg": [float(angles[:, 1].min()), float(angles[:, 1].max())]}
        out[clip.name] = row
        print(f"{clip.name}: yaw {row['yaw_range_deg'][0]:.0f}..{row['yaw_range_deg'][1]:.0f}, pitch "
              f"{row['pitch_range_deg'][0]:.0f}..{row['pitch_range_deg'][1]:.0f} deg; regressor slopes (yaw, pitch) "
              f"{json.dumps(row['slope_yaw_pitch'])}; NME {json.dumps(row['nme_percent'])}", flush=True)
        for label in ("yaw", "pitch"):
            print(f"  |{label}| bin frames det  NME ann / tracker / at-ann-crop   |err| yaw,pitch trk / at-ann-crop"
                  "   crop offset, size", flush=True)
            for b in row[f"{label}_bins"]:
                n, e = b["nme_percent"], b["abs_error_yaw_pitch_deg"]
                f = lambda v: float("nan") if v is None else v  # noqa: E731
                print(f"  {b['bin_deg'][0]:3.0f}-{b['bin_deg'][1]:3.0f} {b['frames']:5d} {b['detected']:4d}  "
                      f"{f(n['annotate']):.2f} / {f(n['tracker']):.2f} / {f(n['at_annotate_crop']):.2f}   "
                      f"{f((e['tracker'] or [None])[0]):.1f},{f((e['tracker'] or [None, None])[1]):.1f} / "
                      f"{e['at_annotate_crop'][0]:.1f},{e['at_annotate_crop'][1]:.1f}   "
                      f"{f(b['crop_offset_of_side']):.3f}, {f(b['crop_size_ratio']):.2f}", flush=True)
        if FLAGS.pose_overlay_dir:
            # Per |yaw| bin: its median frame and its worst (by the tracker's NME).
            err = np.nan_to_num(per["tracker"], nan=1e9)
            picks = []
            for lo, hi in zip(edges[:-1], edges[1:]):
                idx = np.flatnonzero((np.abs(angles[:, 0]) >= lo) & (np.abs(angles[:, 0]) < hi))
                if idx.size:
                    order = idx[np.argsort(err[idx])]
                    picks += [int(order[len(order) // 2]), int(order[-1])]
            tiles = []
            for i in picks:
                img = np.ascontiguousarray(clip.frames[i].copy())
                _draw_points(img, mp[i], (0, 255, 0))
                _draw_points(img, clip.annotate[i], (0, 128, 255))
                _draw_points(img, trk_px[i], (255, 0, 0))
                _draw_box(img, clip.boxes[i], (0, 128, 255))
                if ok[i]:
                    _draw_box(img, trk_box[i], (255, 0, 0))
                c = clip.boxes[i]
                crop, _ = regressor_lib.crop_box(img, np.array([c[0], c[1], c[2] * 1.3]), 256)
                y, pt = angles[i]
                cv2.putText(crop, f"yaw {y:.0f} pitch {pt:.0f} | reg {trk_ang[i, 0]:.0f} {trk_ang[i, 1]:.0f} | "
                            f"nme {per['tracker'][i]:.1f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                            (255, 255, 255), 1, cv2.LINE_AA)
                tiles.append(crop)
            path = Path(FLAGS.pose_overlay_dir) / f"pose_frames_{clip.name}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR))
            print(f"  frames: {path}", flush=True)
    det.close()
    return out


def main(argv):
    del argv
    import jax

    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint read at INFO

    from neuface_jax.realtime import track

    from neuface_jax.realtime import regressor as regressor_lib

    reg = track.load_regressor(FLAGS.regressor, mirror_average=FLAGS.mirror_average,
                               head_fit=regressor_lib.HeadFit(enabled=FLAGS.head_fit, jaw=FLAGS.jaw_fit, **{
                                   k: v for k, v in (("sigma_point", FLAGS.head_fit_sigma_point),
                                                     ("iterations", FLAGS.head_fit_iterations),
                                                     ("sigma_jaw_deg", FLAGS.jaw_fit_sigma_deg)) if v is not None}))
    report = {
        "command": "python experiments/benchmark_realtime.py " + " ".join(
            f"--{k}={FLAGS[k].value if not isinstance(FLAGS[k].value, list) else ','.join(FLAGS[k].value)}"
            for k in ("regressor", "annotations", "extra_annotations", "parts", "latency_sizes", "synthetic_seeds", "neuface_epochs", "mirror_average", "filter_min_cutoff",
                      "filter_beta", "pose_bins", "profile_bias_pitches", "head_fit", "head_fit_sigma_point", "head_fit_iterations",
                      "jaw_fit", "jaw_fit_sigma_deg")),
        "head_fit": dataclasses.asdict(reg.head_fit) if reg.config.landmark_head else None,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
                    "loadavg_before": os.getloadavg()},
        "regressor": FLAGS.regressor, "encoder_config": reg.config.to_dict(),
    }
    summary_file = Path(str(FLAGS.regressor) + ".train.json") if FLAGS.regressor else None
    if summary_file and summary_file.is_file():
        tr = json.loads(summary_file.read_text())
        report["training"] = {k: tr.get(k) for k in ("train_config", "counts", "seconds", "validation",
                                                     "distilled_from")}
    if "latency" in FLAGS.parts:
        report["latency"] = latency(reg, FLAGS.face_landmarker)
        lat = report["latency"]
        print(json.dumps(lat, indent=1), flush=True)
    if "synthetic" in FLAGS.parts:
        report["synthetic"] = synthetic(reg)
    if "real" in FLAGS.parts:
        report["real"] = real(reg, FLAGS.face_landmarker)
    if "jitter" in FLAGS.parts:
        report["jitter"] = jitter_diagnosis(reg, FLAGS.face_landmarker)
    if "pose" in FLAGS.parts:
        report["pose"] = pose_diagnosis(reg, FLAGS.face_landmarker)
    if "fit_split" in FLAGS.parts:
        report["fit_split"] = fit_split(reg)
    if "profile_bias" in FLAGS.parts:
        report["profile_bias"] = profile_bias(reg)
    report["machine"]["loadavg_after"] = os.getloadavg()
    Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(FLAGS.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
