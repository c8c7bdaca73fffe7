r"""Real videos: the pretrained small encoder vs a randomly initialized one in ``neuface-jax annotate``.

    python experiments/annotate_encoder_comparison.py [--clips=mead,liveportrait,wojtek,nersemble] \
        [--ranges=wojtek=100:200] [--epochs=100] \
        [--runs=random:default,pretrained:2e-5,pretrained:3e-4,pretrained:1e-3] \
        [--encoder=CKPT] [--out=experiments/results/annotate_encoder_comparison.json]

Clips (``$NEUFACE_SHARED_DATA/videos``; default frame ranges keep the runs CPU-sized): MEAD and
LivePortrait d20 (frames 0-100, nearly frontal), metrical-tracker wojtek (frames 100-200, which hold
its strongest head turn) and, optionally, the 3-view NeRSemble composite (97 frames, its side views
turned 40°+). Runs are ``init:lr``: ``random`` = a randomly initialized small encoder
(``encoder="random"``), ``pretrained`` = ``--encoder`` (default the packaged
``pretrain.packaged_checkpoint()``, else ``/tmp/pretrained_small_encoder``); ``lr`` a number or
``default`` (annotate's default for that start). Each run is ``annotate.annotate`` on the demo head —
the library call behind ``neuface-jax annotate --video=CLIP --start=S --end=E --epochs=N
[--encoder=CKPT|random] [--lr=LR]`` — and records:

* ``nme_percent``, ``jitter_mm``, ``msi_*`` from ``metrics.json`` and the seconds of the run;
* **head-turn agreement with MediaPipe**: MediaPipe's head yaw per frame and view
  (``landmark_sets.head_rotation`` on its 3D landmarks) against the fitted FLAME global rotation's
  yaw: the least-squares slope of fitted on MediaPipe yaw (1 = the mesh turns as far as the head,
  < 1 = under-rotation), the mean absolute yaw difference, and the same on the turned frames
  (|MediaPipe yaw| > ``--turned_deg``);
* **NME on the turned frames** (per-frame NME from ``params.npz``, in normalized crop coordinates:
  the similarity crop leaves NME unchanged).

It also saves PNGs of the overlay video at the most turned frames of each clip and one montage per
clip (rows = frames, columns = runs) under ``--work_dir/png``. The JSON holds the command, the load
average before/after and every figure; runs already in it (keyed ``"<init:lr> epochs=<N>"`` under
``"<clip>[<start>:<end>]"``) are kept unless run again, and each run records its command.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
import time

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("shared_data", os.environ.get("NEUFACE_SHARED_DATA"), "Shared data folder (videos/...).")
#: name → (file under <shared_data>/videos, view boxes or None, default frame range).
CLIPS = {
    "mead": ("mead_M003_level_1_disgusted_015.mp4", None, (0, 100)),
    "liveportrait": ("liveportrait_d20.mp4", None, (0, 100)),
    # Frames 100-200 hold the clip's strongest turn (about 130-185); 0-100 are nearly frontal.
    "wojtek": ("metrical_tracker_wojtek.mp4", None, (100, 200)),
    "nersemble": (
        "multiview/vhap_nersemble_038_EMO-1_3views.mp4",
        "cam0=0:0:247:360,cam1=0:360:247:720,cam2=0:720:247:1080",
        (0, 97),
    ),
}
flags.DEFINE_list("clips", ["mead", "liveportrait", "wojtek"], f"Clips, from {sorted(CLIPS)}.")
flags.DEFINE_list("ranges", [], "Frame ranges overriding the defaults, as name=start:end (end exclusive).")
flags.DEFINE_list(
    "runs",
    ["random:default", "pretrained:2e-5", "pretrained:3e-4", "pretrained:1e-3"],
    "Runs as init:lr with init random|pretrained and lr a number or 'default' (annotate's).",
)
flags.DEFINE_string("encoder", None, "Pretrained checkpoint (default: the packaged one, else /tmp/pretrained_small_encoder).")
flags.DEFINE_integer("epochs", 100, "NeuFace epochs.")
flags.DEFINE_float("turned_deg", 25.0, "|MediaPipe yaw| above which a frame counts as turned.")
flags.DEFINE_integer("png_frames", 3, "Overlay frames saved per clip (the most turned ones, spread out).")
flags.DEFINE_string("work_dir", "/tmp/annotate_encoder_comparison", "Run outputs, landmark cache and PNGs.")
flags.DEFINE_string(
    "out",
    str(pathlib.Path(__file__).resolve().parent / "results" / "annotate_encoder_comparison.json"),
    "Results JSON (clips already in it are kept unless run again).",
)

# Canonical/FLAME frame (x right in the image, y up, z toward the camera) ↔ image frame (y down, z away).
_FLIP = np.diag([1.0, -1.0, -1.0])


def _yaw_pitch(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Yaw and pitch (degrees) of rotations ``[..., 3, 3]`` in a frame with y up and the face toward +z."""
    f = r[..., :, 2]  # where the face's forward axis points
    return np.degrees(np.arctan2(f[..., 0], f[..., 2])), np.degrees(np.arcsin(np.clip(f[..., 1], -1, 1)))


def _default_encoder() -> str:
    from neuface_jax.synthetic import pretrain

    try:
        return str(pretrain.packaged_checkpoint())
    except (AttributeError, FileNotFoundError):
        return "/tmp/pretrained_small_encoder"


def _per_frame_nme(params) -> np.ndarray:
    """Per-frame NME (%) of the fitted landmarks against the detections, iBUG outer eye corners 36/45."""
    det = params["landmarks2d"].astype(np.float64)
    pred = params["predicted_landmarks2d"].astype(np.float64)
    mask = params["landmarks_mask"] & params["valid"][:, None]
    d = np.linalg.norm(np.nan_to_num(det[:, 36] - det[:, 45]), axis=-1)
    err = np.where(mask, np.linalg.norm(np.nan_to_num(pred - det), axis=-1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 100.0 * err.sum(-1) / (mask.sum(-1) * d)
    ok = mask.any(-1) & (d > 0) & mask[:, 36] & mask[:, 45]
    return np.where(ok, out, np.nan)


def _yaw_agreement(yaw_mp, yaw_fit, turned) -> dict:
    ok = np.isfinite(yaw_mp) & np.isfinite(yaw_fit)
    x, y = yaw_mp[ok], yaw_fit[ok]
    xm = x - x.mean()
    out = {
        "frames": int(ok.sum()),
        "slope": float((xm * (y - y.mean())).sum() / max((xm**2).sum(), 1e-12)),
        "mean_abs_diff_deg": float(np.abs(y - x).mean()),
        "mediapipe_yaw_range_deg": [float(x.min()), float(x.max())],
        "fitted_yaw_range_deg": [float(y.min()), float(y.max())],
    }
    t = turned & ok
    if t.any():
        out["turned_frames"] = int(t.sum())
        out["turned_mean_abs_diff_deg"] = float(np.abs(yaw_fit[t] - yaw_mp[t]).mean())
        out["turned_ratio_fitted_to_mediapipe"] = float(np.mean(yaw_fit[t] / yaw_mp[t]))
    return out


def _spread_pick(score: np.ndarray, k: int, gap: int) -> list[int]:
    picked: list[int] = []
    for i in np.argsort(-score):
        if len(picked) == k:
            break
        if all(abs(int(i) - p) >= gap for p in picked):
            picked.append(int(i))
    return sorted(picked)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint read at INFO
    import imageio.v3 as iio

    import flame_jax
    from neuface_jax import annotation as annotate_lib
    from neuface_jax.media import detect as detect_lib
    from neuface_jax.media import landmark_sets
    from neuface_jax.media import sources as sources_lib
    from neuface_jax.media import video as video_lib

    if not FLAGS.shared_data:
        raise app.UsageError("set --shared_data or NEUFACE_SHARED_DATA")
    shared = pathlib.Path(FLAGS.shared_data)
    model_path = shared / "mediapipe" / "face_landmarker.task"
    encoder = FLAGS.encoder or _default_encoder()
    work = pathlib.Path(FLAGS.work_dir)
    cache = work / "landmark_cache"
    png_dir = work / "png"
    png_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for spec in FLAGS.runs:
        init, _, lr = spec.partition(":")
        if init not in ("random", "pretrained"):
            raise app.UsageError(f"run {spec!r}: init must be random or pretrained")
        runs.append((spec, init, None if lr in ("", "default") else float(lr)))

    doc = {
        "command": " ".join([pathlib.Path(sys.argv[0]).name] + sys.argv[1:]),
        "settings": {
            "runs": FLAGS.runs, "encoder": encoder, "epochs": FLAGS.epochs, "turned_deg": FLAGS.turned_deg,
            "model": "demo head",
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_start": list(os.getloadavg())},
        "clips": {},
    }
    t_all = time.perf_counter()
    ranges = {}
    for item in FLAGS.ranges:
        name, _, rng = item.partition("=")
        a, _, b = rng.partition(":")
        ranges[name] = (int(a), int(b))
    for clip in FLAGS.clips:
        if clip not in CLIPS:
            raise app.UsageError(f"unknown clip {clip!r}; choose from {sorted(CLIPS)}")
        rel, boxes_spec, (start, end) = CLIPS[clip]
        start, end = ranges.get(clip, (start, end))
        path = shared / "videos" / rel
        # MediaPipe's own head yaw per frame and view ([T, W]), through annotate's landmark cache.
        src = sources_lib.open_source(path, view_boxes=boxes_spec, frames=video_lib.FrameRange(start=start, end=end))
        lmks = detect_lib.decode_and_detect(src, model_path=model_path, cache_dir=cache).landmarks
        valid = np.stack([l.valid for l in lmks], axis=1)
        r_img, _, _ = landmark_sets.head_rotation(np.stack([l.points for l in lmks], axis=1))
        yaw_mp, pitch_mp = _yaw_pitch(_FLIP @ r_img @ _FLIP)
        yaw_mp = np.where(valid, yaw_mp, np.nan).reshape(-1)  # params.npz order: frame-major, then view
        pitch_mp = np.where(valid, pitch_mp, np.nan)
        turned = np.abs(np.nan_to_num(yaw_mp)) > FLAGS.turned_deg
        visible = np.stack([l.visible for l in lmks], axis=1)[valid]
        entry = {
            "file": rel,
            "frames": [start, end],
            "views": list(src.view_names) if boxes_spec else None,
            "mediapipe_yaw_deg": {"min": float(np.nanmin(yaw_mp)), "max": float(np.nanmax(yaw_mp))},
            "mediapipe_pitch_deg": {"min": float(np.nanmin(pitch_mp)), "max": float(np.nanmax(pitch_mp))},
            "turned_frames": int(turned.sum()),
            "invisible_landmarks_per_frame": float((~visible).sum(-1).mean()),
            "runs": {},
        }
        n_frames = valid.shape[0]
        picks = _spread_pick(np.abs(np.nan_to_num(yaw_mp)).reshape(n_frames, -1).max(-1), FLAGS.png_frames,
                             max(5, n_frames // 10))
        entry["png_frames"] = [start + p for p in picks]
        tiles: dict[int, list[np.ndarray]] = {p: [] for p in picks}
        for spec, init, lr in runs:
            out_dir = work / clip / spec.replace(":", "_")
            t0 = time.perf_counter()
            summary = annotate_lib.annotate(
                str(path), out_dir=out_dir, view_boxes=boxes_spec,
                setup=annotate_lib.SetupConfig(
                    epochs=FLAGS.epochs, encoder=str(encoder) if init == "pretrained" else "random",
                    learning_rate=lr, face_landmarker=str(model_path)),
                prepare=annotate_lib.PrepareConfig(frames=video_lib.FrameRange(start=start, end=end),
                                                   cache_dir=str(cache)),
            )
            seconds = time.perf_counter() - t0
            m = summary["metrics"]
            with np.load(out_dir / "params.npz") as f:
                params = {k: f[k] for k in f.files}
            r_fit = np.asarray(flame_jax.axis_angle_to_matrix(params["full_pose"][:, :3].astype(np.float64)))
            yaw_fit, _ = _yaw_pitch(r_fit)
            nme_t = _per_frame_nme(params)
            res = {
                "learning_rate": m["clip"]["learning_rate"],
                "encoder": m["clip"]["encoder"],
                "nme_percent": m["nme_percent"],
                "nme_percent_turned_frames": float(np.nanmean(nme_t[turned])) if turned.any() else None,
                "nme_percent_other_frames": float(np.nanmean(nme_t[~turned])) if (~turned).any() else None,
                "jitter_mm": m["jitter_mm"],
                "msi_landmarks": m["msi_landmarks"],
                "msi_vertices": m["msi_vertices"],
                "yaw": _yaw_agreement(yaw_mp, yaw_fit, turned),
                "seconds": seconds,
                "seconds_fit": m["seconds"].get("fit"),
            }
            res["epochs"] = FLAGS.epochs
            res["command"] = doc["command"]
            entry["runs"][f"{spec} epochs={FLAGS.epochs}"] = res
            print(
                f"{clip} {spec}: NME {res['nme_percent']:.2f}% (turned {res['nme_percent_turned_frames']}), "
                f"yaw slope {res['yaw']['slope']:.2f}, |dyaw| {res['yaw']['mean_abs_diff_deg']:.1f} deg, {seconds:.0f}s",
                flush=True,
            )
            frames = dict(video_lib.iter_video_frames(out_dir / "overlay.mp4"))  # rows 0.. of the clip
            for p in picks:
                img = frames[p]
                iio.imwrite(png_dir / f"{clip}_{spec.replace(':', '_')}_{start + p:04d}.png", img)
                tiles[p].append(img)
        if picks:
            rows = [np.concatenate(tiles[p], axis=1) for p in picks]
            iio.imwrite(png_dir / f"{clip}_montage.png", np.concatenate(rows, axis=0))
        doc["clips"][f"{clip}[{start}:{end}]"] = entry
    doc["machine"]["loadavg_end"] = list(os.getloadavg())
    doc["seconds_total"] = time.perf_counter() - t_all
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_file():  # keep other clips' entries from earlier invocations, each with its own command
        old = json.loads(out.read_text())
        history = old.pop("earlier_invocations", [])
        old_clips = old.pop("clips", {})
        history.append(old)
        for key, entry in doc["clips"].items():  # runs are merged per clip: a re-run replaces its own key
            if key in old_clips:
                entry["runs"] = {**old_clips[key]["runs"], **entry["runs"]}
        doc["clips"] = {**old_clips, **doc["clips"]}
        doc["earlier_invocations"] = history
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out} and {png_dir}")


if __name__ == "__main__":
    app.run(main)
