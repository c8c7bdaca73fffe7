r"""Evidence for the photometric and silhouette terms (docs/photometric.md has the tables).

    python experiments/photometric_eval.py --part=synthetic --seeds=0,1,2 --frames=10 --epochs=60 \
        --weight=5 --camera_distance=4            # → experiments/results/photometric_synthetic.json
    python experiments/photometric_eval.py --part=real --frames=20 --real_stride=3 --epochs=60 \
        --weight=5 --silhouette_weight=10         # → experiments/results/photometric_real.json + the overlay
    python experiments/photometric_eval.py --part=cost --frames=10 --views=3 --weight=5

* ``synthetic``: synthetic clips of the demo head (``synth.synthesize_clip``), fitted by the direct
  baseline from the packaged encoder's predictions, with and without the photometric term, in
  three conditions: all 68 landmarks; the jaw contour (points 0–16) removed; all landmarks with a
  hand-like occluder (``synthetic.augment.paint_occluders``) painted over the mouth in 20 % of the
  frames. Metrics: NME, vertex errors, and the lower-face vertex error (face-region vertices below the
  nose base, after a per-frame similarity alignment of the whole mesh); mean ± std over seeds.
* ``real``: a shared real clip (MediaPipe landmarks, cached) fitted by the direct baseline with and
  without the terms; IoU of the rendered face region with MediaPipe's face oval, NME against
  MediaPipe, and an overlay PNG (crop | each fit).
* ``cost``: a direct step (the whole clip) with and without the term, in one process, and the host
  rasterization of one refresh against it.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

import flame_jax
from flame_jax.geometry import rigid_align
from neuface_jax import photometric
from neuface_jax.annotation.config import PrepareConfig, SetupConfig
from neuface_jax.annotation.prepare import prepare
from neuface_jax.annotation.scoring import landmarks_to_pixels
from neuface_jax.annotation.setup import make_setup
from neuface_jax.core import fit as fit_lib
from neuface_jax.core import metrics as metrics_lib
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import detect as detect_lib
from neuface_jax.media import landmark_sets
from neuface_jax.media import render as np_render
from neuface_jax.media import sources, video
from neuface_jax.photometric import albedo as albedo_lib
from neuface_jax.photometric import raster as raster_lib
from neuface_jax.priors.starting import load_checkpoint, packaged_checkpoint
from neuface_jax.synthetic import augment
from neuface_jax.synthetic import demo as demo_lib
from neuface_jax.synthetic import synth as synth_lib

FLAGS = flags.FLAGS
flags.DEFINE_enum("part", "synthetic", ["synthetic", "real", "cost"], "Which evidence to produce.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Synthetic clip seeds.")
flags.DEFINE_list("conditions", ["all", "no_jaw", "occluded"], "Synthetic conditions.")
flags.DEFINE_integer("frames", 20, "Frames per synthetic clip.")
flags.DEFINE_string("views", "3", "Synthetic camera rig.")
flags.DEFINE_integer("epochs", 60, "Epochs (the direct baseline takes as many steps as NeuFace would).")
flags.DEFINE_float("weight", 2.0, "Photometric term weight (landmark 10, temporal 100, multiview 200).")
flags.DEFINE_integer("refresh_every", 8, "Re-rasterize every N steps.")
flags.DEFINE_float("camera_distance", 4.0, "Synthetic camera distance, metres (the renders are perspective; the fit's "
                   "camera is weak-perspective: 1.2 m, SynthConfig's default, distorts depth by ~8 % across the face).")
flags.DEFINE_float("shape_prior", 1e-4, "Direct baseline's L2 prior weight on the identity (FitConfig default 1e-4).")
flags.DEFINE_float("silhouette_weight", 10.0, "Silhouette term weight (real clip).")
flags.DEFINE_string("shared_data", "/work/shared/data", "The shared data folder (real clip).")
flags.DEFINE_string("real_clip", "liveportrait_d20.mp4", "Real clip under <shared_data>/videos (the default is MIT-licensed, so its overlay PNG may be committed).")
flags.DEFINE_integer("real_stride", 3, "Frame stride on the real clip.")
flags.DEFINE_integer("overlay_frame", 5, "Frame of the overlay PNG.")
flags.DEFINE_string("overlay_png", "docs/photometric_overlay.png", "Overlay PNG (real clip).")
flags.DEFINE_string("out", None, "JSON output (default experiments/results/photometric_<part>.json).")

BASE_LOSS = {"landmark": 10.0, "temporal": 100.0, "multiview": 200.0}


def lower_face_vertices(model, embedding) -> np.ndarray:
    """Face-region vertices below the nose base (iBUG 33): jaw, chin, lower cheeks, mouth."""
    region = albedo_lib.face_region(model, embedding) > 0
    lmk = np.asarray(flame_jax.landmarks(model, embedding, model.v_template, jnp.zeros(15)))
    return np.flatnonzero(region & (np.asarray(model.v_template)[:, 1] < lmk[33, 1]))


def lower_face_error(result: fit_lib.FitResult, clip, ids) -> float:
    """Mean lower-face vertex error (mm) in the canonical frame after a per-frame similarity alignment."""
    pred = np.asarray(result.canonical_vertices, np.float64)  # [T, W, V, 3]
    gt = np.broadcast_to(np.asarray(clip.gt["canonical_vertices"], np.float64)[:, None], pred.shape)
    aligned = rigid_align(pred, gt, with_scale=True)
    return float(np.linalg.norm(aligned[..., ids, :] - gt[..., ids, :], axis=-1).mean() * 1000.0)


def occlude(clip, fraction: float, seed: int) -> np.ndarray:
    """The clip's images with a hand-like occluder over the mouth in ``fraction`` of the frames."""
    rng = np.random.default_rng([seed, 7])
    images = clip.images.copy()
    frames = rng.choice(clip.num_frames, size=max(1, int(round(fraction * clip.num_frames))), replace=False)
    for t in frames:
        for w in range(clip.num_views):
            mouth = clip.gt["landmarks68_true"][t, w, 48:68]
            images[t, w], _ = augment.paint_occluders(images[t, w], mouth, rng, kinds=("hand",), coverage=(1.5, 2.5))
    return images


def run_synthetic():
    model, emb = flame_jax.demo_model(), flame_jax.demo_landmark_embedding()
    face = fit_lib.FaceModel(model, emb)
    encoder, enc_cfg = load_checkpoint(packaged_checkpoint(), model)
    ids = lower_face_vertices(model, emb)
    runs = []
    for seed in [int(s) for s in FLAGS.seeds]:
        clip = synth_lib.synthesize_clip(seed=seed, rig=FLAGS.views, config=synth_lib.SynthConfig(
            num_frames=FLAGS.frames, camera_distance=FLAGS.camera_distance))
        for cond in FLAGS.conditions:
            images = occlude(clip, 0.2, seed) if cond == "occluded" else clip.images
            data = crops_lib.prepare_clip(images, clip.landmarks68, clip.crop_transforms, encoder_size=enc_cfg.image_size,
                                          visible=clip.visible68, valid=clip.valid, crop_size=224, name=f"seed {seed}")
            if cond == "no_jaw":
                lmk = np.asarray(data.landmarks).copy()
                lmk[..., 0:17, :] = np.nan
                mask = np.asarray(data.landmarks_mask).copy()
                mask[..., 0:17] = 0.0
                data = dataclasses.replace(data, landmarks=jnp.asarray(lmk), landmarks_mask=jnp.asarray(mask))
            for name, loss in (("landmarks", BASE_LOSS),
                               ("photometric", {**BASE_LOSS, "photometric": ("photometric", FLAGS.weight,
                                                                             {"refresh_every": FLAGS.refresh_every})})):
                cfg = fit_lib.FitConfig(loss=loss, num_epochs=FLAGS.epochs, chunk_frames=20, seed=seed,
                                        direct_prior_weights=(FLAGS.shape_prior, 1e-4, 1e-4))
                t0 = time.perf_counter()
                res = fit_lib.DirectFit(face, enc_cfg, cfg).fit(data, encoder=encoder)
                secs = time.perf_counter() - t0
                m = demo_lib.evaluate_synthetic(res, face, clip, crop_size=224)
                m["lower_face_error_mm"] = lower_face_error(res, clip, ids)
                row = {"seed": seed, "condition": cond, "loss": name, "seconds": secs,
                       **{k: m[k] for k in ("nme_percent", "vertex_error_mm", "vertex_error_similarity_mm",
                                            "lower_face_error_mm", "jitter_mm", "cvd_mm")}}
                logging.info("%s", row)
                print(json.dumps(row), flush=True)
                runs.append(row)
    summary = {}
    for cond in FLAGS.conditions:
        for name in ("landmarks", "photometric"):
            sel = [r for r in runs if r["condition"] == cond and r["loss"] == name]
            summary[f"{cond}/{name}"] = {k: [float(np.mean([r[k] for r in sel])), float(np.std([r[k] for r in sel]))]
                                         for k in ("nme_percent", "vertex_error_mm", "vertex_error_similarity_mm",
                                                   "lower_face_error_mm", "jitter_mm", "cvd_mm")}
    for key, vals in summary.items():
        print(f"{key:28s} " + "  ".join(f"{k} {v[0]:.3f}±{v[1]:.3f}" for k, v in vals.items()))
    return {"runs": runs, "summary": summary}


def _fit_real(face, enc_cfg, encoder, data, loss, steps, seed=0):
    cfg = fit_lib.FitConfig(loss=loss, num_epochs=steps, chunk_frames=data.num_frames, seed=seed)
    t0 = time.perf_counter()
    res = fit_lib.DirectFit(face, enc_cfg, cfg).fit(data, encoder=encoder)
    return res, time.perf_counter() - t0


def run_real():
    """A shared real clip: direct fits with and without the terms; IoU with MediaPipe's face oval, NME."""
    data_root = Path(FLAGS.shared_data)
    clip_path = data_root / "videos" / FLAGS.real_clip
    frames = video.FrameRange(start=0, end=FLAGS.frames * FLAGS.real_stride, stride=FLAGS.real_stride)
    setup = make_setup(SetupConfig(face_landmarker=str(data_root / "mediapipe" / "face_landmarker.task")))
    prep = prepare(setup, [str(clip_path)], PrepareConfig(frames=frames))
    src = sources.open_source([str(clip_path)], None, None, frames, True, 25.0)
    det = detect_lib.decode_and_detect(src, model_path=setup.model_path, options=setup.options)
    pts478 = np.stack([lm.xy for lm in det.landmarks], axis=1).astype(np.float64)  # [T, W, 478, 2]
    oval_px = pts478[:, :, list(landmark_sets.FACE_OVAL_IDS)]
    oval_crop = np.einsum("twij,twnj->twni", prep.crop_transforms[..., :2], oval_px) + prep.crop_transforms[:, :, None, :, 2]
    face, encoder, enc_cfg = setup.face, setup.encoder, setup.encoder_config
    data = prep.data
    size = int(data.images.shape[-2])
    faces = np.asarray(face.flame.faces)
    valid = np.asarray(prep.valid)
    out = {"clip": FLAGS.real_clip, "frames": int(prep.num_frames), "stride": FLAGS.real_stride, "runs": {}}
    photo = {"photometric": ("photometric", FLAGS.weight, {"refresh_every": FLAGS.refresh_every}),
             "silhouette": FLAGS.silhouette_weight}
    overlays = {}
    for name, loss in (("landmarks", BASE_LOSS), ("photometric+silhouette", {**BASE_LOSS, **photo})):
        res, secs = _fit_real(face, enc_cfg, encoder, data, loss, FLAGS.epochs)
        screen = raster_lib.screen_vertices(np.asarray(res.vertices, np.float64), np.asarray(res.cam, np.float64), size)
        fi, _ = raster_lib.rasterize_host(screen, faces, size)
        scale = size / prep.crop_size
        ious = [photometric.loss.face_mask_iou(fi[t, w], faces, screen.shape[-2], oval_crop[t, w] * scale)
                for t in range(fi.shape[0]) for w in range(fi.shape[1]) if valid[t, w]]
        pred_px = landmarks_to_pixels(res.landmarks2d, prep.crop_transforms, prep.crop_size)
        nme = float(metrics_lib.nme(pred_px, prep.target_px, np.isfinite(prep.target_px).all(-1)))
        out["runs"][name] = {"iou_face_oval": float(np.mean(ious)), "iou_min": float(np.min(ious)), "nme_percent": nme,
                             "seconds": secs}
        print(name, out["runs"][name], flush=True)
        overlays[name] = (res, fi)
    # Overlay on a 256-px crop of the original frame: the crop | each fit's face region (shaded, over
    # the whole mesh's wireframe) with MediaPipe's face oval as green dots.
    t, big_size = int(FLAGS.overlay_frame), 256
    m = prep.crop_transforms[t, 0] * (big_size / prep.crop_size)
    crop = crops_lib.warp_crop(det.images[t, 0], m, big_size).astype(np.float32) / 255.0
    region = albedo_lib.face_region_for(face.flame.v_template.shape[0], faces.shape[0])
    tiles = [crop]
    for name, (res, _) in overlays.items():
        screen = raster_lib.screen_vertices(np.asarray(res.vertices[t, 0], np.float64), np.asarray(res.cam[t, 0], np.float64),
                                            big_size)
        colors = np.where(region[:, None] > 0, np.array([1.0, 0.75, 0.3]), np.array([0.6, 0.65, 0.8]))
        tile = np_render.overlay_mesh(crop, screen, faces, alpha=0.5, colors=colors)
        tiles.append(np.asarray(tile, np.float32))
    poly = oval_px[t, 0] @ m[:, :2].T + m[:, 2]
    tiles = [tiles[0]] + [np_render.draw_points(x, poly, color=(0.1, 1.0, 0.2), radius=2.5) for x in tiles[1:]]
    big = np.concatenate(tiles, 1)
    png = Path(FLAGS.overlay_png)
    png.parent.mkdir(parents=True, exist_ok=True)
    np_render.save_png(png, big)
    out["overlay_png"] = str(png)
    return out


def run_cost():
    """One direct step on a synthetic clip with and without the term (same process), and the
    rasterizer's share: the host rasterization of one refresh against the step time."""
    model, emb = flame_jax.demo_model(), flame_jax.demo_landmark_embedding()
    face = fit_lib.FaceModel(model, emb)
    encoder, enc_cfg = load_checkpoint(packaged_checkpoint(), model)
    clip = synth_lib.synthesize_clip(seed=0, rig=FLAGS.views, config=synth_lib.SynthConfig(num_frames=FLAGS.frames))
    data = crops_lib.prepare_clip(clip.images, clip.landmarks68, clip.crop_transforms, encoder_size=enc_cfg.image_size,
                                  visible=clip.visible68, valid=clip.valid, crop_size=224)
    out = {}
    steps = 16
    for name, loss in (("landmarks", BASE_LOSS),
                       ("photometric", {**BASE_LOSS, "photometric": ("photometric", FLAGS.weight,
                                                                     {"refresh_every": FLAGS.refresh_every})})):
        cfg = fit_lib.FitConfig(loss=loss, num_epochs=steps, chunk_frames=20)
        opt = fit_lib.DirectFit(face, enc_cfg, cfg)
        params = opt.init_params(data, encoder)
        key = jax.random.key(0)
        t0 = time.perf_counter()
        jax.block_until_ready(opt.run_fn(params, data, key, steps, face))
        first = time.perf_counter() - t0
        raster_lib.MEMO.clear()
        t0 = time.perf_counter()
        jax.block_until_ready(opt.run_fn(params, data, key, steps, face))
        run = time.perf_counter() - t0
        out[name] = {"first_call_s": first, "step_ms": 1000 * run / steps, "refreshes": raster_lib.MEMO.refreshes}
        print(name, out[name], flush=True)
    verts = np.asarray(clip.gt["vertices"] - clip.gt["translation"][:, :, None, :])
    cam = np.tile(np.array([7.0, 0.0, 0.0]), verts.shape[:2] + (1,))
    screen = raster_lib.screen_vertices(verts, cam, enc_cfg.image_size)
    t0 = time.perf_counter()
    raster_lib.rasterize_host(screen, np.asarray(model.faces), enc_cfg.image_size)
    out["raster_refresh_ms"] = 1000 * (time.perf_counter() - t0)
    out["images_per_step"] = int(np.prod(verts.shape[:2]))
    per_step = out["raster_refresh_ms"] / FLAGS.refresh_every
    out["raster_share_of_photometric_step"] = per_step / out["photometric"]["step_ms"]
    out["photometric_over_landmarks"] = out["photometric"]["step_ms"] / out["landmarks"]["step_ms"]
    print(json.dumps(out, indent=1))
    return out


def main(argv):
    del argv
    t0 = time.perf_counter()
    out = {"synthetic": run_synthetic, "real": run_real, "cost": run_cost}[FLAGS.part]()
    out["settings"] = {"seeds": FLAGS.seeds, "frames": FLAGS.frames, "views": FLAGS.views, "epochs": FLAGS.epochs,
                       "camera_distance": FLAGS.camera_distance, "shape_prior": FLAGS.shape_prior,
                       "weight": FLAGS.weight, "refresh_every": FLAGS.refresh_every, "method": "direct",
                       "machine": platform.processor() or platform.machine(), "seconds": time.perf_counter() - t0}
    path = Path(FLAGS.out or f"experiments/results/photometric_{FLAGS.part}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    app.run(main)
