r"""Pretrains the small encoder on synthetic faces (our stand-in for DECA's pretrained encoder).

Three modes:

* ``--mode=legacy`` (default; reproduces the shipped checkpoint)::

      python experiments/pretrain_encoder.py [--out=/tmp/pretrained_small_encoder] [--num_clips=200] [--num_steps=600]

  Renders ``num_clips`` short synthetic clips (seeds from 1,000,000 on, disjoint from the test
  clips), trains the small encoder supervised (``neuface_jax.synthetic.pretrain.pretrain``), saves
  it with orbax at ``--out`` and a summary next to it as ``<out>.pretrain.json``. The package ships
  the checkpoint these defaults made (``neuface_jax/assets/pretrained_small_encoder``); the default
  ``--out`` is outside the package so a re-run never overwrites it.

* ``--mode=prior`` (the ``neuface-jax pretrain`` route: per-image renders with augmentations)::

      python experiments/pretrain_encoder.py --mode=prior --out=/tmp/prior_small [--preset=cpu] \
          [--init=CKPT] [--num_steps=N] [--real_clips=mead,liveportrait,wojtek] \
          [--results=experiments/results/pretrain_prior_cpu.json]

  Trains with ``pretrain.train_prior`` and then evaluates the new checkpoint and the shipped one
  with the same code in the same run on (1) held-out augmented renders, (2) the shipped
  checkpoint's own held-out clips (``generate_dataset`` validation seeds, un-augmented) and (3)
  the real shared clips (raw-prediction NME against MediaPipe's points, yaw against MediaPipe's head
  rotation; ``$NEUFACE_SHARED_DATA/videos``).

* ``--mode=annotate``: ``neuface-jax annotate`` (its defaults) from the shipped checkpoint and ``--out``
  (or ``--encoders=name=CKPT,...``) on ``--annotate_clips`` ranges: NME and jitter from ``metrics.json``,
  the fitted yaw against MediaPipe's head rotation per frame (all frames and those turned past 25°);
  written under ``"annotate"`` in ``--results``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import sys
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "legacy", ["legacy", "prior", "annotate"], "legacy: the shipped checkpoint's recipe; "
                  "prior: train_prior with augmentations, compared with the shipped checkpoint; annotate: "
                  "`neuface-jax annotate` from --encoders on real clip ranges (NME, jitter, yaw error).")
flags.DEFINE_string("out", "/tmp/pretrained_small_encoder",  # = pretrain.RETRAINED_CHECKPOINT
                    "Checkpoint directory (overwritten).")
flags.DEFINE_integer("num_clips", None, "legacy: synthetic identities (default: PretrainConfig's).")
flags.DEFINE_integer("frames_per_clip", None, "legacy: frames per clip.")
flags.DEFINE_integer("views_per_clip", None, "legacy: random cameras per clip.")
flags.DEFINE_integer("num_steps", None, "Adam steps.")
flags.DEFINE_integer("batch_size", None, "Images per step.")
flags.DEFINE_float("learning_rate", None, "Peak learning rate.")
flags.DEFINE_integer("seed", None, "Initialization / batch-order seed.")
flags.DEFINE_integer("log_every", 100, "Steps between log lines.")
flags.DEFINE_string("preset", "cpu", "prior: the neuface-jax pretrain preset.")
flags.DEFINE_string("init", "", "prior: start from this checkpoint (fine-tuning).")
flags.DEFINE_integer("pool_images", None, "prior: rendered image pool (0 = stream).")
flags.DEFINE_list("real_clips", ["mead", "liveportrait", "wojtek"], "prior: real clips to validate on.")
flags.DEFINE_integer("real_stride", 2, "prior: frame stride of the real clips.")
flags.DEFINE_integer("real_max_frames", 200, "prior: at most this many frames per real clip.")
flags.DEFINE_integer("old_val_clips", 16, "prior: the shipped checkpoint's validation clips to evaluate on.")
flags.DEFINE_list("encoders", [], "annotate: name=checkpoint pairs (default: shipped and --out as new).")
flags.DEFINE_list("annotate_clips", ["wojtek=100:200", "mead=0:100"], "annotate: name=start:end clip ranges.")
flags.DEFINE_string("results", str(pathlib.Path(__file__).resolve().parent / "results" / "pretrain_prior_cpu.json"),
                    "prior: results JSON (runs keyed by --out's name are replaced, others kept).")

CLIPS = {
    "mead": "mead_M003_level_1_disgusted_015.mp4",
    "liveportrait": "liveportrait_d20.mp4",
    "wojtek": "metrical_tracker_wojtek.mp4",
}


def legacy():
    from neuface_jax.synthetic import pretrain

    overrides = {
        k: getattr(FLAGS, k)
        for k in ("num_clips", "frames_per_clip", "views_per_clip", "num_steps", "batch_size", "learning_rate", "seed")
        if getattr(FLAGS, k) is not None
    }
    config = pretrain.PretrainConfig().replace(**overrides)
    t0 = time.perf_counter()
    result = pretrain.pretrain(config, log=lambda s: print(s, flush=True), log_every=FLAGS.log_every)
    path = pretrain.save_pretrained(FLAGS.out, result, config)
    total = time.perf_counter() - t0
    print(json.dumps({"checkpoint": str(path), "seconds": {**result.seconds, "total": total},
                      "validation": result.validation}, indent=1))


def prior():
    import numpy as np

    import flame_jax
    from neuface_jax.core import encoder as encoder_lib
    from neuface_jax.core import fit as fit_lib
    from neuface_jax.media import video
    from neuface_jax.synthetic import pretrain

    shared = os.environ.get("NEUFACE_SHARED_DATA")
    if FLAGS.real_clips and not shared:
        raise app.UsageError("set NEUFACE_SHARED_DATA (the real clips are under $NEUFACE_SHARED_DATA/videos)")
    load0 = os.getloadavg()
    face = fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    run = pretrain.SyntheticPretrainConfig()
    run = dataclasses.replace(run, **pretrain.PRESETS[FLAGS.preset])
    over = {k: getattr(FLAGS, k) for k in ("num_steps", "batch_size", "learning_rate", "seed", "pool_images")
            if getattr(FLAGS, k) is not None}
    run = dataclasses.replace(run, init=FLAGS.init, log_every=FLAGS.log_every, **over)
    render = pretrain.RenderConfig()
    enc_cfg = pretrain.starting_lib.default_encoder_config(face.flame)

    t0 = time.perf_counter()
    real = []
    for name in FLAGS.real_clips:
        frames = video.FrameRange(stride=FLAGS.real_stride, end=FLAGS.real_stride * FLAGS.real_max_frames)
        real.append(pretrain.prepare_real_clip(pathlib.Path(shared) / "videos" / CLIPS[name],
                                               encoder_size=enc_cfg.image_size, frames=frames,
                                               cache_dir="/tmp/pretrain_landmark_cache", name=name))
    t_real = time.perf_counter() - t0
    summary = pretrain.train_prior(FLAGS.out, run, render, face=face, encoder_config=enc_cfg, real_clips=tuple(real),
                                   log=lambda s: print(s, flush=True))

    # The same evaluation of both checkpoints, in this run.
    val_new = pretrain.validation_renders(pretrain.RenderAssets.build(face), render, encoder_size=enc_cfg.image_size,
                                          num_images=run.val_images, seed=run.seed)
    old_cfg = pretrain.PretrainConfig()
    val_old = pretrain.generate_dataset(old_cfg, encoder_size=enc_cfg.image_size, num_clips=FLAGS.old_val_clips,
                                        first_clip=old_cfg.num_clips)
    table = {}
    for label, path in (("shipped", pretrain.packaged_checkpoint()), ("new", pathlib.Path(FLAGS.out))):
        enc, cfg = encoder_lib.load_encoder(path)
        table[label] = {
            "checkpoint": str(path),
            "held_out_augmented_renders": pretrain.evaluate_encoder(enc, cfg, val_new, face),
            "held_out_shipped_validation_clips": pretrain.evaluate_encoder(enc, cfg, val_old, face),
            "real_clips": {c.name: pretrain.real_clip_errors(enc, cfg, face, c) for c in real},
        }
        rc = table[label]["real_clips"]
        if rc:
            table[label]["real_mean"] = {k: float(np.mean([r[k] for r in rc.values()]))
                                         for k in ("nme_percent", "nme_inner_percent", "yaw_error_deg",
                                                   "turned_yaw_error_deg", "yaw_slope")}
    entry = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, load average {load0[0]:.1f} before / "
                   f"{os.getloadavg()[0]:.1f} after",
        "run": summary["run"],
        "seconds": {**summary["seconds"], "real_clip_preparation": t_real},
        "devices": summary["devices"],
        "comparison": table,
    }
    out = pathlib.Path(FLAGS.results)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc[pathlib.Path(FLAGS.out).name] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    for label, t in table.items():
        a, b = t["held_out_augmented_renders"], t["held_out_shipped_validation_clips"]
        line = (f"{label:8s} augmented renders: rot {a['rotation_deg']:.1f} deg, lmk {a['landmark_l1']:.4f}, id RMSE "
                f"{a['shape_rmse']:.3f} | shipped val clips: rot {b['rotation_deg']:.1f}, lmk {b['landmark_l1']:.4f}")
        if "real_mean" in t:
            m = t["real_mean"]
            line += (f" | real: NME {m['nme_percent']:.2f} % (inner {m['nme_inner_percent']:.2f}), yaw err "
                     f"{m['yaw_error_deg']:.1f} (turned {m['turned_yaw_error_deg']:.1f}), slope {m['yaw_slope']:.2f}")
        print(line)
    print(f"wrote {out}")


def annotate_runs():
    """`neuface-jax annotate` (defaults: 100 epochs, annotate's learning rate) from each encoder, with the
    fitted yaw compared with MediaPipe's head rotation per frame."""
    import subprocess
    import tempfile

    import numpy as np

    import flame_jax
    from neuface_jax.media import detect, landmark_sets, sources, video
    from neuface_jax.synthetic import pretrain

    shared = os.environ.get("NEUFACE_SHARED_DATA")
    if not shared:
        raise app.UsageError("set NEUFACE_SHARED_DATA (the real clips are under $NEUFACE_SHARED_DATA/videos)")
    encoders = dict(e.split("=", 1) for e in FLAGS.encoders) or {
        "shipped": str(pretrain.packaged_checkpoint()), "new": FLAGS.out}
    load0 = os.getloadavg()
    table = {}
    work = pathlib.Path(tempfile.mkdtemp(prefix="pretrain_annotate_"))
    flip = np.diag([1.0, -1.0, -1.0])
    for item in FLAGS.annotate_clips:
        name, _, rng = item.partition("=")
        a, _, b = rng.partition(":")
        path = pathlib.Path(shared) / "videos" / CLIPS[name]
        lm = detect.decode_and_detect(sources.open_source(path, frames=video.FrameRange(start=int(a), end=int(b)))
                                      ).landmarks[0]
        r, _, _ = landmark_sets.head_rotation(lm.points)
        yaw_mp = np.where(lm.valid, pretrain.yaw_pitch_deg(flip @ r @ flip)[0], np.nan)
        turned = np.abs(np.nan_to_num(yaw_mp)) > 25
        for label, ckpt in encoders.items():
            out = work / f"{name}_{label}"
            cmd = [sys.executable, "-m", "neuface_jax.cli", "annotate", f"--video={path}", f"--out={out}",
                   f"--start={a}", f"--end={b}", f"--encoder={ckpt}", "--nooverlay"]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            seconds = time.perf_counter() - t0
            metrics = json.loads((out / "metrics.json").read_text())
            with np.load(out / "params.npz") as f:
                pose = f["full_pose"][:, :3].astype(np.float64)
            yaw_fit = pretrain.yaw_pitch_deg(np.asarray(flame_jax.axis_angle_to_matrix(pose)))[0]
            d = np.abs(yaw_fit - yaw_mp)
            table[f"{name}[{a}:{b}]/{label}"] = {
                "encoder": ckpt, "command": " ".join(["neuface-jax", *cmd[3:]]), "seconds": seconds,
                "nme_percent": metrics["nme_percent"], "jitter_mm": metrics["jitter_mm"],
                "yaw_error_deg": float(np.nanmean(d)), "turned_frames": int(turned.sum()),
                "turned_yaw_error_deg": float(np.nanmean(d[turned])) if turned.any() else None,
            }
            print(f"{name}[{a}:{b}] {label:8s}: NME {metrics['nme_percent']:.2f} %, jitter {metrics['jitter_mm']:.2f} mm, "
                  f"yaw error {np.nanmean(d):.2f} deg ({int(turned.sum())} frames turned > 25 deg)", flush=True)
    out = pathlib.Path(FLAGS.results)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc["annotate"] = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]),
                       "machine": f"{platform.machine()} {os.cpu_count()} CPUs, load average {load0[0]:.1f} before / "
                                  f"{os.getloadavg()[0]:.1f} after", "runs": table}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint write at INFO
    {"legacy": legacy, "prior": prior, "annotate": annotate_runs}[FLAGS.mode]()


if __name__ == "__main__":
    app.run(main)
