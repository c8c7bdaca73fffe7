r"""Self-training on real video (NeuFace's Table 3 experiment at this project's scale).

    python experiments/self_training.py [--work=/tmp/selftrain] [--epochs=100] [--steps=300] \
        [--folds=mead+wojtek/liveportrait+nersemble,liveportrait+nersemble/mead+wojtek] \
        [--out=experiments/results/self_training.json]

1. **Labels**: ``neuface-jax annotate`` (the library call) of each shared clip (``$NEUFACE_SHARED_DATA/videos``;
   MEAD 118 frames, LivePortrait d20 175, metrical-tracker wojtek 400 at stride 2, the 3-view NeRSemble
   composite 97 × 3) from the **shipped synthetic-only prior** (the packaged small encoder), ``--epochs``
   epochs, annotate's defaults otherwise. These runs are also the shipped prior's annotate figures. An
   output folder already holding a run with the same settings is reused.
2. **Folds** split the clips by whole clips (``train/held-out``): ``training.train_encoder`` fine-tunes the
   shipped prior on the training clips' labelled frames (crops rebuilt from the videos) and saves a
   checkpoint; the held-out clips are never seen in training.
3. **Held-out clips**, each prior (shipped vs self-trained of the fold that holds the clip out):
   * raw prediction (the encoder alone, no optimization): NME against MediaPipe's points and yaw error against
     MediaPipe's own head rotation (``landmark_sets.head_rotation`` on its 3D landmarks), all frames and frames
     turned 25–60°;
   * ``annotate`` from that prior at the same epochs: NME, jitter, yaw error (all / turned 25–60°), eye openness
     on blink frames (fitted vs detected), mouth opening (fitted vs detected at the widest frame; fitted on
     closed frames).

Measures (iBUG-68 points, normalized crop coordinates, both from ``params.npz``: detected ``landmarks2d`` and
fitted ``predicted_landmarks2d``): eye openness = mean lid gap / eye width per eye, averaged over both eyes
(``self_training.eye_openness``); blink frames = detected openness < ``--blink_fraction`` × the clip's median;
mouth opening = inner-lip gap (62–66) / mouth width (48–54); closed frames = detected opening ≤
``--closed_mouth``. Only frames where MediaPipe saw the points count. Yaw: ``self_training.yaw_pitch_deg``.

``--refine_steps`` sets annotate's per-frame refinement after NeuFace (``core.refine``; annotate's default; 0:
NeuFace's result as it is); ``--labels_only`` stops after step 1 and reports those annotate figures per clip (the
before/after comparison of the refinement: ``docs/self_training.md``). ``--refine_from=DIR`` refines saved
NeuFace-only annotate outputs (``DIR/<clip>``, made with ``--refine_steps=0``) through annotate's own refinement
call with annotate's settings, writes each result beside the others (``--work/refined_from/<clip>``) and reports
the same figures: NeuFace's part is deterministic, so this gives annotate's refined figures in seconds rather
than a new 100-epoch fit per clip. With it, ``--refine_part=first_half|second_half`` refines and scores one half
of each clip's frames, and ``--refine_model=F`` refines with another FLAME-format model (e.g. ``learn-model``'s,
learned on the other half), the saved identity padded with zeros to its components; ``--lip_points``,
``--refine_lr``, ``--inner_lip_weight``, ``--identity_rate`` and ``--expression_rate`` refine with annotate's lip-point
option, another refinement rate, or ``core.refine``'s weights and step scales.

The mouth figures also give, at the widest detected frames, the fitted ÷ detected inner-lip gap alone
(``widest_gap_ratio``, same image, no width) and mouth width (``widest_width_ratio``), and for multi-view clips
every view's own figures (``mouth_per_view``): in a turned view the fitted face's near side projects too wide,
so the width-normalized opening mixes the width's error into the mouth's (``docs/self_training.md``).

Writes ``--out`` (command, settings, load averages, every figure) and prints a table.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
import time

import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

import flame_jax
from neuface_jax import annotation as annotate_lib
from neuface_jax.annotation import scoring
from neuface_jax.core import fit as fit_lib
from neuface_jax.core import losses as losses_lib
from neuface_jax.core import refine as refine_lib
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.media import detect as detect_lib
from neuface_jax.media import landmark_sets
from neuface_jax.media import sources as sources_lib
from neuface_jax.media import video as video_lib
from neuface_jax.model_learning import run as model_run
from neuface_jax.priors import starting as starting_lib
from neuface_jax.synthetic import pretrain as pretrain_lib
from neuface_jax.training import labels as labels_lib
from neuface_jax.training import self_training as st

FLAGS = flags.FLAGS
flags.DEFINE_string("shared_data", os.environ.get("NEUFACE_SHARED_DATA"), "Shared data folder (videos/...).")
flags.DEFINE_string("work", "/tmp/selftrain", "Annotation outputs, checkpoints and the landmark cache.")
flags.DEFINE_list("clips", ["mead", "liveportrait", "wojtek", "nersemble"], "Clips to annotate.")
flags.DEFINE_list("folds", ["mead+wojtek/liveportrait+nersemble", "liveportrait+nersemble/mead+wojtek"],
                  "Folds as train+train/held+held (whole clips).")
flags.DEFINE_integer("epochs", 100, "annotate epochs, equal for both priors.")
flags.DEFINE_integer("refine_steps", annotate_lib.SetupConfig().refine_steps,
                     "annotate's per-frame refinement steps after NeuFace (0: NeuFace's result as it is).")
flags.DEFINE_string("refine_from", None, "Refine the saved NeuFace-only annotate outputs DIR/<clip> (see the "
                    "module docs) and report their figures; nothing else runs.")
flags.DEFINE_string("refine_model", None, "With --refine_from: refine with this FLAME-format model (e.g. one from "
                    "learn-model; its landmark embedding beside it) instead of the saved run's; the saved identity "
                    "is padded with zeros to its identity components.")
flags.DEFINE_enum("refine_part", "all", ["all", "first_half", "second_half"], "With --refine_from: the frames "
                  "refined and scored (a held-out part when --refine_model was learned on the other).")
flags.DEFINE_float("inner_lip_weight", None, "With --refine_from: the refinement's inner-lip weight "
                   "(default: core.refine's).")
flags.DEFINE_float("refine_lr", annotate_lib.SetupConfig().refine_lr, "annotate's --refine_lr (the per-frame "
                   "refinement's learning rate).")
flags.DEFINE_float("identity_rate", None, "With --refine_from: the refinement's identity step scale "
                   "(core.refine's identity_rate; default: annotate's).")
flags.DEFINE_float("expression_rate", None, "With --refine_from: the refinement's expression step scale "
                   "(core.refine's expression_rate; default: annotate's).")
flags.DEFINE_enum("lip_points", None, list(annotate_lib.config.LIP_POINTS), "With --refine_from: the "
                  "refinement's 68-point lip points (annotate's --lip_points; default: annotate's).")
flags.DEFINE_bool("labels_only", False, "Stop after the labels: print and save the shipped prior's annotate "
                  "figures per clip (no self-training).")
flags.DEFINE_integer("steps", 300, "Self-training steps.")
flags.DEFINE_integer("batch_size", 32, "Self-training batch size.")
flags.DEFINE_float("lr", 3e-4, "Self-training peak learning rate.")
flags.DEFINE_float("blink_fraction", 0.5, "Blink frames: detected eye openness below this fraction of the median.")
flags.DEFINE_float("closed_mouth", 0.02, "Closed-mouth frames: detected mouth opening at most this.")
flags.DEFINE_list("turned_deg", ["25", "60"], "|MediaPipe yaw| range of the turned frames.")
flags.DEFINE_bool("reuse_checkpoints", False, "Reuse a fold's self-trained checkpoint (and its summary) when it "
                  "exists instead of training again.")
flags.DEFINE_string("out", str(pathlib.Path(__file__).resolve().parent / "results" / "self_training.json"),
                    "Results JSON.")

#: name → (file under videos/, view boxes, frame range).
CLIPS = {
    "mead": ("mead_M003_level_1_disgusted_015.mp4", None, video_lib.FrameRange()),
    "liveportrait": ("liveportrait_d20.mp4", None, video_lib.FrameRange()),
    "wojtek": ("metrical_tracker_wojtek.mp4", None, video_lib.FrameRange(stride=2)),
    "nersemble": ("multiview/vhap_nersemble_038_EMO-1_3views.mp4",
                  "cam0=0:0:247:360,cam1=0:360:247:720,cam2=0:720:247:1080", video_lib.FrameRange()),
}


def _paths():
    shared = pathlib.Path(FLAGS.shared_data)
    return shared, shared / "mediapipe" / "face_landmarker.task", pathlib.Path(FLAGS.work)


def annotate(clip: str, encoder: pathlib.Path, out_dir: pathlib.Path) -> dict:
    """``annotate`` of one clip from ``encoder`` (a finished run with the same settings is reused)."""
    shared, model_path, work = _paths()
    rel, boxes, rng = CLIPS[clip]
    m = out_dir / "metrics.json"
    if m.is_file() and (out_dir / "params.npz").is_file():
        doc = json.loads(m.read_text())
        c = doc["clip"]
        if (c["epochs"] == FLAGS.epochs and pathlib.Path(c["encoder"]).resolve() == encoder.resolve()
                and int(c["stride"]) == rng.stride and int(c.get("refine_steps", 0)) == FLAGS.refine_steps):
            print(f"  reusing {out_dir}", flush=True)
            return doc
    t0 = time.perf_counter()
    summary = annotate_lib.annotate(
        str(shared / "videos" / rel), out_dir=out_dir, view_boxes=boxes,
        setup=annotate_lib.SetupConfig(epochs=FLAGS.epochs, encoder=str(encoder), face_landmarker=str(model_path),
                                       refine_steps=FLAGS.refine_steps, refine_lr=FLAGS.refine_lr),
        prepare=annotate_lib.PrepareConfig(frames=rng, cache_dir=str(work / "landmark_cache")),
        output=annotate_lib.OutputConfig(write_video=False),
    )
    print(f"  annotated {clip} from {encoder.name} in {time.perf_counter() - t0:.0f}s", flush=True)
    return summary["metrics"]


def refine_saved(clip: str, src: pathlib.Path, out_dir: pathlib.Path) -> dict:
    """Annotate's per-frame refinement (``annotation.refine_result``, ``--refine_steps``) of the NeuFace-only
    annotate output ``src``; writes ``out_dir/params.npz`` (``src``'s, the fitted arrays replaced) and returns
    ``annotate_measures`` of it with annotate's own clip metrics."""
    shared, model_path, _ = _paths()
    doc = json.loads((src / "metrics.json").read_text())
    if int(doc["clip"].get("refine_steps", 0)) != 0:
        raise app.UsageError(f"{src}: --refine_from needs NeuFace-only outputs (annotate --refine_steps=0)")
    with np.load(src / "params.npz") as z:
        p = {k: z[k] for k in z.files}
    names = [str(n) for n in p["view_names"]]
    w = len(names)
    t = len(p["valid"]) // w
    if FLAGS.refine_part != "all":  # keep one half of the frames (rows: frame-major, then view)
        keep = slice(0, t // 2) if FLAGS.refine_part == "first_half" else slice(t // 2, t)
        p = {k: (v.reshape((t, w) + v.shape[1:])[keep].reshape((-1,) + v.shape[1:]) if v.ndim and len(v) == t * w
                 else v[keep] if k == "frame_indices" else v) for k, v in p.items()}
        t = len(p["frame_indices"])
    r = lambda a: np.asarray(a).reshape((t, w) + np.shape(a)[1:])  # noqa: E731  (rows: frame-major, then view)
    model = {} if FLAGS.refine_model is None else {
        "flame_model": FLAGS.refine_model, "landmark_embedding": str(model_run.embedding_path_for(FLAGS.refine_model))}
    setup = annotate_lib.make_setup(
        annotate_lib.SetupConfig(epochs=int(doc["clip"]["epochs"]), encoder=doc["clip"]["encoder"],
                                 refine_steps=FLAGS.refine_steps, refine_lr=FLAGS.refine_lr,
                                 face_landmarker=str(model_path), **model,
                                 **({} if FLAGS.lip_points is None else {"lip_points": FLAGS.lip_points})),
        need_landmarker=False)
    valid = r(p["valid"]).astype(bool)
    mask = r(p["landmarks_mask"]).astype(bool) & valid[..., None]
    data = fit_lib.ClipData(images=jnp.zeros((t, w, 1, 1, 3), jnp.float32),
                            landmarks=jnp.asarray(r(p["landmarks2d"]), jnp.float32),
                            landmarks_mask=jnp.asarray(mask, jnp.float32), frame_mask=jnp.asarray(valid, jnp.float32))
    shape = np.asarray(p["shapes"][np.flatnonzero(p["valid"])[0]], np.float32)
    n_shape = int(setup.face.flame.num_shape)
    if len(shape) > n_shape:
        raise app.UsageError(f"{src}: {len(shape)} identity coefficients, the refinement's model has {n_shape}")
    shape = jnp.asarray(np.pad(shape, (0, n_shape - len(shape))))  # a learned model's extra components start at 0
    expr, pose, cam = (jnp.asarray(r(p[k]), jnp.float32) for k in ("expr", "full_pose", "cam"))
    verts, lmk2d, root = fit_lib.evaluate_params(setup.face, shape, expr, pose, cam)
    start = fit_lib.FitResult(shape=np.asarray(shape), expression=np.asarray(expr), pose=np.asarray(pose),
                              cam=np.asarray(cam), landmarks2d=np.asarray(lmk2d), vertices=np.asarray(verts),
                              canonical_vertices=np.asarray(losses_lib.canonical_vertices(verts, pose[..., 0:3], root)),
                              history={})
    t0 = time.perf_counter()
    lips = {} if FLAGS.inner_lip_weight is None else {"inner_lip_weight": FLAGS.inner_lip_weight}
    for name in ("identity_rate", "expression_rate"):
        if FLAGS[name].value is not None:
            lips[name] = FLAGS[name].value
    res = annotate_lib.refine_result(setup, data, start, **lips)
    seconds = time.perf_counter() - t0
    crop_size = int(p["crop_size"])
    transforms = r(p["crop_transforms"])
    target_px = np.where(mask[..., None], scoring.landmarks_to_pixels(r(p["landmarks2d"]), transforms, crop_size),
                         np.nan)
    metrics, _ = scoring.clip_metrics(res, setup.face, setup.face_setup.eye_idx, crop_transforms=transforms,
                                      target_px=target_px, valid=valid, crop_size=crop_size, view_names=names)
    metrics["seconds"] = {"fit": seconds}
    flat = lambda a: np.asarray(a).reshape((t * w,) + np.shape(a)[2:])  # noqa: E731
    p.update(expr=flat(res.expression), full_pose=flat(res.pose), cam=flat(res.cam),
             predicted_landmarks2d=flat(res.landmarks2d),
             shapes=np.broadcast_to(res.shape, (t * w,) + np.shape(res.shape)).copy(),
             pose=np.concatenate([flat(res.pose)[:, 0:3], flat(res.pose)[:, 6:9]], -1))
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / "params.npz", **p)
    fi, yaw = mediapipe_yaw(clip)
    m = annotate_measures(out_dir, metrics, yaw[np.isin(fi, p["frame_indices"])])
    m["cvd_mm"] = metrics.get("cvd_mm")
    print(f"  refined {clip} ({FLAGS.refine_steps} steps) in {seconds:.0f}s: NME {m['nme_percent']:.2f} %", flush=True)
    return m


def mediapipe_yaw(clip: str) -> tuple[np.ndarray, np.ndarray]:
    """``(frame_indices [T], yaw [T, W])``: MediaPipe's head yaw (degrees, NaN without a face), from the cache."""
    shared, model_path, work = _paths()
    rel, boxes, rng = CLIPS[clip]
    src = sources_lib.open_source(shared / "videos" / rel, view_boxes=boxes, frames=rng)
    det = detect_lib.decode_and_detect(src, model_path=model_path, cache_dir=work / "landmark_cache")
    lmks = det.landmarks
    valid = np.stack([l.valid for l in lmks], axis=1)
    r_img, _, _ = landmark_sets.head_rotation(np.stack([l.points for l in lmks], axis=1))
    flip = np.diag([1.0, -1.0, -1.0])  # image frame (y down, z away) ↔ FLAME's (y up, z toward the camera)
    yaw, _ = st.yaw_pitch_deg(flip @ r_img @ flip)
    return np.asarray(det.frame_indices), np.where(valid, yaw, np.nan)


def _yaw_of(pose15: np.ndarray) -> np.ndarray:
    rot = flame_jax.axis_angle_to_matrix(np.asarray(pose15)[..., :3].astype(np.float64))
    return st.yaw_pitch_deg(np.asarray(rot))[0]


def _turned(yaw_mp: np.ndarray) -> np.ndarray:
    lo, hi = (float(x) for x in FLAGS.turned_deg)
    a = np.abs(np.nan_to_num(yaw_mp))
    return (a >= lo) & (a <= hi)


def _yaw_errors(yaw_fit, yaw_mp) -> dict:
    ok = np.isfinite(yaw_mp) & np.isfinite(yaw_fit)
    t = _turned(yaw_mp) & ok
    return {
        "yaw_error_deg": float(np.abs(yaw_fit - yaw_mp)[ok].mean()),
        "turned_frames": int(t.sum()),
        "yaw_error_turned_deg": float(np.abs(yaw_fit - yaw_mp)[t].mean()) if t.any() else None,
    }


def _dist(points, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)


def face_measures(det, fit, mask) -> dict:
    """Eye openness on blink frames and mouth range, detected vs fitted (rows with the points detected)."""
    eyes = [36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47]
    mouth = [48, 54, 62, 66]
    out = {}
    ok = mask[:, eyes].all(-1)
    d_eye, f_eye = st.eye_openness(det).mean(-1), st.eye_openness(fit).mean(-1)
    if ok.any():
        med = float(np.median(d_eye[ok]))
        blink = ok & (d_eye < FLAGS.blink_fraction * med)
        out["eyes"] = {
            "median_detected": med, "median_fitted": float(np.median(f_eye[ok])), "blink_frames": int(blink.sum()),
            "blink_detected": float(d_eye[blink].mean()) if blink.any() else None,
            "blink_fitted": float(f_eye[blink].mean()) if blink.any() else None,
            "blink_abs_error": float(np.abs(f_eye - d_eye)[blink].mean()) if blink.any() else None,
        }
    ok = mask[:, mouth].all(-1)
    d_m, f_m = st.mouth_opening(det), st.mouth_opening(fit)
    if ok.any():
        idx = np.flatnonzero(ok)
        top = idx[np.argsort(-d_m[idx])[:3]]  # the three widest detected frames
        closed = ok & (d_m <= FLAGS.closed_mouth)
        out["mouth"] = {
            "widest_detected": float(d_m[top].mean()), "widest_fitted": float(f_m[top].mean()),
            "widest_ratio": float(f_m[top].mean() / max(d_m[top].mean(), 1e-9)),
            # the inner-lip gaps alone, in the same image's units (no mouth width; see docs/self_training.md)
            "widest_gap_ratio": float(_dist(fit[top], 62, 66).mean() / max(_dist(det[top], 62, 66).mean(), 1e-9)),
            "widest_width_ratio": float(_dist(fit[top], 48, 54).mean() / max(_dist(det[top], 48, 54).mean(), 1e-9)),
            "closed_frames": int(closed.sum()),
            "closed_detected": float(d_m[closed].mean()) if closed.any() else None,
            "closed_fitted": float(f_m[closed].mean()) if closed.any() else None,
        }
    return out


def annotate_measures(out_dir: pathlib.Path, metrics: dict, yaw_mp: np.ndarray) -> dict:
    """Figures of one annotate run (``yaw_mp`` [T, W] on its rows)."""
    with np.load(out_dir / "params.npz") as z:
        p = {k: z[k] for k in z.files}
    valid = p["valid"].astype(bool)
    mask = p["landmarks_mask"].astype(bool) & valid[:, None]
    det, fit = p["landmarks2d"].astype(np.float64), p["predicted_landmarks2d"].astype(np.float64)
    yaw_mp = yaw_mp.reshape(-1)  # params rows: frame-major, then view
    nme = st.frame_nme(fit, det, mask, (36, 45))
    t = _turned(yaw_mp) & valid
    views = [str(v) for v in p["view_names"]]
    per_view = {}
    if len(views) > 1:  # each view's own widest and closed frames (rows: frame-major, then view)
        for i, name in enumerate(views):
            rows = valid & (np.arange(len(valid)) % len(views) == i)
            per_view[name] = face_measures(det[rows], fit[rows], mask[rows]).get("mouth")
    return {
        "nme_percent": metrics["nme_percent"], "jitter_mm": metrics["jitter_mm"],
        "nme_turned_percent": float(np.nanmean(nme[t])) if t.any() else None,
        **_yaw_errors(np.where(valid, _yaw_of(p["full_pose"]), np.nan), yaw_mp),
        **face_measures(det[valid], fit[valid], mask[valid]),
        **({"mouth_per_view": per_view} if per_view else {}),
        "seconds_fit": metrics["seconds"].get("fit"),
    }


def raw_measures(encoder, enc_cfg, frames: labels_lib.LabelledFrames, face, yaw_lookup) -> dict:
    """Raw-prediction figures of an encoder on held-out labelled frames."""
    pred = st.raw_predictions(encoder, enc_cfg, frames, face)
    yaw_mp = np.array([yaw_lookup[(int(f), int(v))] for f, v in zip(frames.frame_index, frames.view_index)])
    nme = st.frame_nme(pred["landmarks"], frames.landmarks, frames.landmarks_mask, (36, 45))
    t = _turned(yaw_mp)
    return {
        "frames": len(frames), "nme_percent": float(np.nanmean(nme)),
        "nme_turned_percent": float(np.nanmean(nme[t])) if t.any() else None,
        **_yaw_errors(_yaw_of(pred["pose"]), yaw_mp),
    }


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.shared_data:
        raise app.UsageError("set --shared_data or NEUFACE_SHARED_DATA")
    shared, _, work = _paths()
    t_all = time.perf_counter()
    shipped = starting_lib.packaged_checkpoint()
    folds = []
    for spec in FLAGS.folds:
        train, _, held = spec.partition("/")
        folds.append((train.split("+"), held.split("+")))
        unknown = set(folds[-1][0] + folds[-1][1]) - set(FLAGS.clips)
        if unknown or set(folds[-1][0]) & set(folds[-1][1]):
            raise app.UsageError(f"fold {spec!r}: clips must be among --clips and disjoint")
    doc = {
        "command": " ".join([pathlib.Path(sys.argv[0]).name] + sys.argv[1:]),
        "settings": {
            "clips": {c: {"file": CLIPS[c][0], "view_boxes": CLIPS[c][1], "stride": CLIPS[c][2].stride}
                      for c in FLAGS.clips},
            "folds": FLAGS.folds, "epochs": FLAGS.epochs, "refine_steps": FLAGS.refine_steps,
            "refine_lr": FLAGS.refine_lr,
            "steps": FLAGS.steps, "batch_size": FLAGS.batch_size,
            "lr": FLAGS.lr, "blink_fraction": FLAGS.blink_fraction, "closed_mouth": FLAGS.closed_mouth,
            "turned_deg": [float(x) for x in FLAGS.turned_deg], "model": "demo head", "shipped_prior": str(shipped),
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_start": list(os.getloadavg())},
        "seconds": {}, "clips": {}, "folds": {},
    }

    doc["settings"]["refine_inner_lip_weight"] = (refine_lib.DEFAULT_INNER_LIP_WEIGHT if FLAGS.inner_lip_weight is None
                                                  else FLAGS.inner_lip_weight)
    doc["settings"]["refine_identity_rate"] = (refine_lib.DEFAULT_IDENTITY_RATE if FLAGS.identity_rate is None
                                               else FLAGS.identity_rate)
    doc["settings"]["refine_expression_rate"] = (refine_lib.DEFAULT_EXPRESSION_RATE if FLAGS.expression_rate is None
                                                 else FLAGS.expression_rate)
    if FLAGS.refine_from:
        doc["settings"].update(refine_from=FLAGS.refine_from, refine_part=FLAGS.refine_part,
                               refine_model=FLAGS.refine_model,
                               lip_points=FLAGS.lip_points or annotate_lib.SetupConfig().lip_points)
        doc["clips"] = {c: {"annotate": {"refined": refine_saved(c, pathlib.Path(FLAGS.refine_from) / c,
                                                                 work / "refined_from" / c)}} for c in FLAGS.clips}
        doc["summary"] = labels_summary({c: e["annotate"]["refined"] for c, e in doc["clips"].items()})
        print(json.dumps(doc["summary"], indent=1))
        return write_results(doc, t_all)
    # 1. labels = the shipped prior's annotations (also its annotate figures)
    t0 = time.perf_counter()
    base = {c: annotate(c, shipped, work / "base" / c) for c in FLAGS.clips}
    doc["seconds"]["annotate_shipped"] = time.perf_counter() - t0
    yaws = {c: mediapipe_yaw(c) for c in FLAGS.clips}
    if FLAGS.labels_only:
        doc["clips"] = {c: {"annotate": {"shipped": annotate_measures(work / "base" / c, base[c], yaws[c][1])}}
                        for c in FLAGS.clips}
        doc["summary"] = labels_summary({c: e["annotate"]["shipped"] for c, e in doc["clips"].items()})
        print(json.dumps(doc["summary"], indent=1))
        return write_results(doc, t_all)
    t0 = time.perf_counter()
    frames = labels_lib.load_labelled_frames([work / "base" / c for c in FLAGS.clips], 64)
    doc["seconds"]["load_frames"] = time.perf_counter() - t0
    face, eye_idx = st.face_for(frames)
    shipped_enc, shipped_cfg = encoder_lib.load_encoder(shipped)

    for train_clips, held in folds:
        name = "+".join(train_clips) + "/" + "+".join(held)
        ckpt = work / "self_trained" / "+".join(train_clips)
        t0 = time.perf_counter()
        config = st.SelfTrainConfig(steps=FLAGS.steps, batch_size=FLAGS.batch_size, learning_rate=FLAGS.lr,
                                    val_clips=tuple(held))
        summary_file = pretrain_lib.summary_path(ckpt)
        if FLAGS.reuse_checkpoints and summary_file.is_file():
            summary = json.loads(summary_file.read_text())[st.SUMMARY_KEY]
            if summary["config"] != config.to_dict():
                raise app.UsageError(f"{ckpt} was trained with other settings; run without --reuse_checkpoints")
            enc, cfg = encoder_lib.load_encoder(ckpt)
            print(f"  reusing {ckpt}", flush=True)
        else:
            summary = st.train_encoder([work / "base" / c for c in train_clips + held], shipped, ckpt, config,
                                       frames=frames.select_clips(train_clips + held), overwrite=True, log=print)
            enc, cfg = summary.pop("encoder"), summary.pop("encoder_config")
        doc["folds"][name] = {"checkpoint": str(ckpt), "seconds": time.perf_counter() - t0,
                              "training_seconds": summary["seconds"],
                              **{k: summary[k] for k in ("train_frames", "val_frames", "val_before", "val_after")}}
        for c in held:
            fi, yaw = yaws[c]
            lookup = {(int(f), v): float(yaw[t, v]) for t, f in enumerate(fi) for v in range(yaw.shape[1])}
            held_frames = frames.select_clips([c])
            entry = {"fold": name, "raw": {}, "annotate": {}}
            entry["raw"]["shipped"] = raw_measures(shipped_enc, shipped_cfg, held_frames, face, lookup)
            entry["raw"]["self_trained"] = raw_measures(enc, cfg, held_frames, face, lookup)
            entry["annotate"]["shipped"] = annotate_measures(work / "base" / c, base[c], yaw)
            out_dir = work / "from_self_trained" / c
            m = annotate(c, ckpt, out_dir)
            entry["annotate"]["self_trained"] = annotate_measures(out_dir, m, yaw)
            doc["clips"][c] = entry
            for kind in ("raw", "annotate"):
                a, b = entry[kind]["shipped"], entry[kind]["self_trained"]
                print(f"{c} {kind}: NME {a['nme_percent']:.2f} -> {b['nme_percent']:.2f} %, yaw error "
                      f"{a['yaw_error_deg']:.1f} -> {b['yaw_error_deg']:.1f} deg "
                      f"(turned {a['yaw_error_turned_deg']} -> {b['yaw_error_turned_deg']})", flush=True)
    held_all = [c for c in doc["clips"]]
    if held_all:
        def mean(kind, prior, key):
            return float(np.mean([doc["clips"][c][kind][prior][key] for c in held_all]))

        doc["summary"] = {
            f"{kind}_{key}_{prior}": mean(kind, prior, key)
            for kind in ("raw", "annotate") for key in ("nme_percent", "yaw_error_deg")
            for prior in ("shipped", "self_trained")
        }
        doc["summary"].update({f"annotate_jitter_mm_{p}": mean("annotate", p, "jitter_mm")
                               for p in ("shipped", "self_trained")})
        s = doc["summary"]
        s["annotate_nme_ratio"] = s["annotate_nme_percent_self_trained"] / s["annotate_nme_percent_shipped"]
        s["annotate_jitter_ratio"] = s["annotate_jitter_mm_self_trained"] / s["annotate_jitter_mm_shipped"]
        print(json.dumps(s, indent=1))
    write_results(doc, t_all)


def labels_summary(per_clip: dict) -> dict:
    """Per-clip annotate figures of one prior → the issue's measures side by side and their means."""
    def get(m, *keys):
        for k in keys:
            m = (m or {}).get(k)
        return m

    rows = {c: {"nme_percent": m["nme_percent"], "jitter_mm": m["jitter_mm"],
                "yaw_error_turned_deg": m["yaw_error_turned_deg"], "turned_frames": m["turned_frames"],
                "blink_detected": get(m, "eyes", "blink_detected"), "blink_fitted": get(m, "eyes", "blink_fitted"),
                "mouth_widest_ratio": get(m, "mouth", "widest_ratio"),
                "mouth_widest_gap_ratio": get(m, "mouth", "widest_gap_ratio"),
                "mouth_closed_fitted": get(m, "mouth", "closed_fitted"),
                **({"mouth_per_view": {v: {k: (x or {}).get(k) for k in ("widest_ratio", "widest_gap_ratio",
                                                                          "closed_fitted")}
                                       for v, x in m["mouth_per_view"].items()}} if "mouth_per_view" in m else {})}
            for c, m in per_clip.items()}
    for c, r in rows.items():
        print(f"{c:13s} " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()
                                      if k != "mouth_per_view"))
        for v, x in r.get("mouth_per_view", {}).items():
            print(f"{'':13s} {v}: " + "  ".join(f"{k} {y:.3f}" if isinstance(y, float) else f"{k} {y}"
                                               for k, y in x.items()))
    return {"per_clip": rows, "mean_nme_percent": float(np.mean([r["nme_percent"] for r in rows.values()])),
            "mean_jitter_mm": float(np.mean([r["jitter_mm"] for r in rows.values()]))}


def write_results(doc: dict, t_all: float) -> None:
    """Writes ``--out`` (keeping earlier invocations' commands) and says where."""
    doc["machine"]["loadavg_end"] = list(os.getloadavg())
    doc["seconds"]["total"] = time.perf_counter() - t_all
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_file():  # earlier invocations (e.g. the one that trained what --reuse_checkpoints reused)
        old = json.loads(out.read_text())
        history = old.pop("earlier_invocations", [])
        doc["earlier_invocations"] = history + [{k: old.get(k) for k in ("command", "seconds", "machine")}]
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
