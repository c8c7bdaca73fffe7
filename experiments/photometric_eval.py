r"""Evidence for the photometric and silhouette terms (docs/photometric.md has the tables).

    python experiments/photometric_eval.py --part=synthetic --seeds=0,1,2 --frames=6 --views=3 \
        --landmark_steps=60 --photo_steps=100 --weight=5 --refresh_every=4 --camera_distance=4
    python experiments/photometric_eval.py --part=real --frames=10 --real_stride=6 --landmark_steps=60 \
        --photo_steps=100 --weight=5 --refresh_every=4 --silhouette_weight=0 --overlay_frame=4 --albedo=vertex \
        --out=experiments/results/photometric_real_vertex.json
    python experiments/photometric_eval.py --part=cost --frames=6 --views=3 --weight=5 --refresh_every=4 \
        [--method=neuface]
    python experiments/photometric_eval.py --part=diagnose --seeds=0 --frames=6 --views=3 --camera_distance=4
    python experiments/photometric_eval.py --part=masks --seeds=0,1,2 --frames=6 --views=3 --camera_distance=4 \
        --outliers=2

Every fit takes ``landmark_steps + photo_steps`` direct-baseline steps; the term starts at
``landmark_steps`` and ramps in over ``ramp_steps``.

* ``synthetic``: synthetic clips of the demo head (``synth.synthesize_clip``), fitted by the direct
  baseline from the packaged encoder's predictions, with and without the photometric term, in
  three conditions: all 68 landmarks; the jaw contour (points 0–16) removed; all landmarks with a
  hand-like occluder (``synthetic.augment.paint_occluders``) painted over the mouth in 20 % of the
  frames. Metrics: NME, vertex errors, and the lower-face vertex error (face-region vertices below the
  nose base, after a per-frame similarity alignment of the whole mesh); mean ± std over seeds.
* ``real``: a shared real clip (MediaPipe landmarks, cached) fitted by the direct baseline with and
  without the terms; IoU of the rendered face region with MediaPipe's face oval, NME against
  MediaPipe, and an overlay PNG (crop | each fit).
* ``cost``: a direct or NeuFace step (the whole clip) with and without the term, in one process, and
  the share of the host rasterization (timed inside the same run) in the step with the term.
* ``masks``: the term's pixel weights at the ground truth of the occluded clips, on the hand and on
  the rest of the face, with and without the occluder rejection.
* ``--method=neuface``: the synthetic part with NeuFace instead of the direct baseline.
* ``diagnose``: whether the term is minimal at the ground truth: its value at the truth (appearance
  solved or the true one), with the jaw, identity or camera perturbed, and along the line from a
  landmarks-only fit to the truth.
"""

from __future__ import annotations

import dataclasses
import functools
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
from neuface_jax.core import losses as losses_lib
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
flags.DEFINE_enum("part", "synthetic", ["synthetic", "real", "cost", "diagnose", "masks"],
                  "Which evidence to produce.")
flags.DEFINE_enum("method", "direct", ["direct", "neuface"], "Synthetic part: the direct baseline (landmark_steps + "
                  "photo_steps steps) or NeuFace (as many epochs over the clip's one chunk, from the packaged encoder).")
flags.DEFINE_float("neuface_lr", 3e-4, "NeuFace learning rate (the demo's from the packaged encoder).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Synthetic clip seeds.")
flags.DEFINE_list("conditions", ["all", "no_jaw", "occluded"], "Synthetic conditions.")
flags.DEFINE_integer("frames", 6, "Frames per synthetic clip.")
flags.DEFINE_string("views", "3", "Synthetic camera rig.")
flags.DEFINE_integer("landmark_steps", 60, "Direct-baseline steps with the landmarks alone (the term's start_step).")
flags.DEFINE_integer("photo_steps", 140, "Steps after them (both runs take landmark_steps + photo_steps).")
flags.DEFINE_integer("ramp_steps", 20, "Steps over which the term's weight ramps in.")
flags.DEFINE_float("weight", 5.0, "Photometric term weight (landmark 10, temporal 100, multiview 200).")
flags.DEFINE_integer("refresh_every", 4, "Re-rasterize every N steps (NeuFace needs 1: with 4 it ran off).")
flags.DEFINE_enum("albedo", "auto", ["auto", "model", "vertex"], "The term's albedo (auto: the demo head's "
                  "basis on the demo head; vertex: a free per-vertex albedo per clip).")
flags.DEFINE_enum("photo_views", "consensus", ["consensus", "own"], "PhotometricConfig.views: the views' consensus "
                  "mesh or each view's own.")
flags.DEFINE_float("outliers", 0.0, "PhotometricConfig.outliers: occluder rejection threshold (0: off).")
flags.DEFINE_string("photo_options", "{}", "Extra PhotometricConfig options of the term, as JSON.")
flags.DEFINE_list("real_losses", ["landmarks", "photometric", "photometric+silhouette"], "Real part: fits to run "
                  "(landmarks, photometric, silhouette, photometric+silhouette).")
flags.DEFINE_float("landmark_weight", 10.0, "Landmark term weight.")
flags.DEFINE_list("losses", ["landmarks", "photometric"], "Fits per condition: landmarks, photometric (the flags' "
                  "term), photometric_clip_light (frame weights in the loss too, CLIP_LIGHT), photometric_frame_light "
                  "(one light per image, no frame weights: the previous defaults, FRAME_LIGHT), "
                  "photometric_before (views='own', outliers=0: the term before the multi-view / occluder changes).")
flags.DEFINE_bool("camera_gradient", True, "Let the term move the camera (PhotometricConfig.camera_gradient).")
flags.DEFINE_enum("shading", "lambert", ["lambert", "sh"], "Synthetic renders' light (SynthConfig.shading).")
flags.DEFINE_float("camera_distance", 4.0, "Synthetic camera distance, metres (the renders are perspective; the fit's "
                   "camera is weak-perspective: 1.2 m, SynthConfig's default, distorts depth by ~8 % across the face).")
flags.DEFINE_float("shape_prior", 1e-4, "Direct baseline's L2 prior weight on the identity (FitConfig default 1e-4).")
flags.DEFINE_float("silhouette_weight", 10.0, "Silhouette term weight (real clip).")
flags.DEFINE_string("shared_data", "/work/shared/data", "The shared data folder (real clip).")
flags.DEFINE_string("real_clip", "liveportrait_d20.mp4", "Real clip under <shared_data>/videos (the default is MIT-licensed, so its overlay PNG may be committed).")
flags.DEFINE_integer("real_stride", 3, "Frame stride on the real clip.")
flags.DEFINE_integer("overlay_frame", 5, "Frame of the overlay PNG.")
flags.DEFINE_string("overlay_png", "docs/photometric_overlay.png", "Overlay PNG (real clip).")
flags.DEFINE_integer("cost_repeats", 3, "Cost part: interleaved timing rounds (the fastest of each variant is kept).")
flags.DEFINE_integer("cost_steps", 16, "Cost part: timed optimizer steps (epochs of the one-chunk clip for NeuFace).")
flags.DEFINE_string("out", None, "JSON output (default experiments/results/photometric_<part>.json).")

BASE_LOSS = {"landmark": 10.0, "temporal": 100.0, "multiview": 200.0}
#: Last wave's opt-in occluder options: one light per clip, frame weights in the solve and the loss.
CLIP_LIGHT = {"light": "clip", "frame_outliers": 1.5, "frame_weights_in": "loss"}
#: The term's previous defaults: one light per image, no frame weights.
FRAME_LIGHT = {"light": "frame", "frame_outliers": 0.0}
METRICS = ("nme_percent", "vertex_error_mm", "vertex_error_similarity_mm", "lower_face_error_mm", "jitter_mm",
           "accel_error_mm", "cvd_mm")


def photo_loss(weight=None, **extra):
    """The loss with the photometric term under the recipe: landmarks alone for ``landmark_steps``,
    then the term ramped in (camera free, appearance solved in closed form every step)."""
    opts = {"refresh_every": FLAGS.refresh_every, "start_step": FLAGS.landmark_steps, "ramp_steps": FLAGS.ramp_steps,
            "camera_gradient": FLAGS.camera_gradient, "albedo": FLAGS.albedo, "views": FLAGS.photo_views,
            "outliers": FLAGS.outliers}
    opts.update(json.loads(FLAGS.photo_options))
    opts.update(extra.pop("options", {}))
    return {**base_loss(), "photometric": ("photometric", FLAGS.weight if weight is None else weight, opts), **extra}


def base_loss() -> dict:
    """The landmark, temporal and multi-view terms (``--landmark_weight``)."""
    return {**BASE_LOSS, "landmark": FLAGS.landmark_weight}


def named_losses() -> list[tuple[str, dict]]:
    """The ``--losses`` fits as (name, loss config)."""
    table = {"landmarks": base_loss, "photometric": photo_loss,
             "photometric_clip_light": lambda: photo_loss(options=CLIP_LIGHT),
             "photometric_frame_light": lambda: photo_loss(options=FRAME_LIGHT),
             "photometric_before": lambda: photo_loss(options={"views": "own", "outliers": 0.0})}
    return [(name, table[name]()) for name in FLAGS.losses]


def direct_config(loss, seed=0, **kw) -> fit_lib.FitConfig:
    return fit_lib.FitConfig(loss=loss, direct_steps=FLAGS.landmark_steps + FLAGS.photo_steps, chunk_frames=20,
                             seed=seed, **kw)


def lower_face_vertices(model, embedding) -> np.ndarray:
    """Face-region vertices below the nose base (iBUG 33): jaw, chin, lower cheeks, mouth."""
    region = albedo_lib.face_region(model, embedding) > 0
    lmk = np.asarray(flame_jax.landmarks(model, embedding, model.v_template, jnp.zeros(15)))
    return np.flatnonzero(region & (np.asarray(model.v_template)[:, 1] < lmk[33, 1]))


def lower_face_error(result: fit_lib.FitResult, clip, ids, frames=None) -> float:
    """Mean lower-face vertex error (mm) in the canonical frame after a per-frame similarity alignment
    (over ``frames`` only when given)."""
    pred = np.asarray(result.canonical_vertices, np.float64)  # [T, W, V, 3]
    gt = np.broadcast_to(np.asarray(clip.gt["canonical_vertices"], np.float64)[:, None], pred.shape)
    if frames is not None:
        pred, gt = pred[frames], gt[frames]
    aligned = rigid_align(pred, gt, with_scale=True)
    return float(np.linalg.norm(aligned[..., ids, :] - gt[..., ids, :], axis=-1).mean() * 1000.0)


def occlude(clip, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The clip's images with a hand-like occluder over the mouth in ``fraction`` of the frames, and those frames."""
    rng = np.random.default_rng([seed, 7])
    images = clip.images.copy()
    frames = rng.choice(clip.num_frames, size=max(1, int(round(fraction * clip.num_frames))), replace=False)
    for t in frames:
        for w in range(clip.num_views):
            mouth = clip.gt["landmarks68_true"][t, w, 48:68]
            images[t, w], _ = augment.paint_occluders(images[t, w], mouth, rng, kinds=("hand",), coverage=(1.5, 2.5))
    return images, np.sort(frames)


def run_synthetic():
    model, emb = flame_jax.demo_model(), flame_jax.demo_landmark_embedding()
    face = fit_lib.FaceModel(model, emb)
    encoder, enc_cfg = load_checkpoint(packaged_checkpoint(), model)
    ids = lower_face_vertices(model, emb)
    runs = []
    for seed in [int(s) for s in FLAGS.seeds]:
        clip = synth_lib.synthesize_clip(seed=seed, rig=FLAGS.views, config=synth_lib.SynthConfig(
            num_frames=FLAGS.frames, camera_distance=FLAGS.camera_distance, shading=FLAGS.shading))
        for cond in FLAGS.conditions:
            images, hidden = occlude(clip, 0.2, seed) if cond == "occluded" else (clip.images, None)
            data = crops_lib.prepare_clip(images, clip.landmarks68, clip.crop_transforms, encoder_size=enc_cfg.image_size,
                                          visible=clip.visible68, valid=clip.valid, crop_size=224, name=f"seed {seed}")
            if cond == "no_jaw":
                lmk = np.asarray(data.landmarks).copy()
                lmk[..., 0:17, :] = np.nan
                mask = np.asarray(data.landmarks_mask).copy()
                mask[..., 0:17] = 0.0
                data = dataclasses.replace(data, landmarks=jnp.asarray(lmk), landmarks_mask=jnp.asarray(mask))
            for name, loss in named_losses():
                cfg = direct_config(loss, seed, direct_prior_weights=(FLAGS.shape_prior, 1e-4, 1e-4))
                t0 = time.perf_counter()
                if FLAGS.method == "neuface":
                    cfg = cfg.replace(num_epochs=FLAGS.landmark_steps + FLAGS.photo_steps, learning_rate=FLAGS.neuface_lr)
                    res = fit_lib.NeuFace(face, enc_cfg, cfg).fit(data, encoder=encoder)
                else:
                    res = fit_lib.DirectFit(face, enc_cfg, cfg).fit(data, encoder=encoder)
                secs = time.perf_counter() - t0
                m = demo_lib.evaluate_synthetic(res, face, clip, crop_size=224)
                m["lower_face_error_mm"] = lower_face_error(res, clip, ids)
                row = {"seed": seed, "condition": cond, "loss": name, "seconds": secs, "method": FLAGS.method,
                       "true_jitter_mm": demo_lib.ground_truth_reference(clip, face)["jitter_mm"],
                       **{k: m[k] for k in METRICS}}
                if hidden is not None:  # the frames with the hand
                    row["lower_face_occluded_frames_mm"] = lower_face_error(res, clip, ids, hidden)
                logging.info("%s", row)
                print(json.dumps(row), flush=True)
                runs.append(row)
    summary = {}
    for cond in FLAGS.conditions:
        for name in FLAGS.losses:
            sel = [r for r in runs if r["condition"] == cond and r["loss"] == name]
            summary[f"{cond}/{name}"] = {k: [float(np.mean([r[k] for r in sel])), float(np.std([r[k] for r in sel]))]
                                         for k in METRICS + ("true_jitter_mm",)}
    for key, vals in summary.items():
        print(f"{key:28s} " + "  ".join(f"{k} {v[0]:.3f}±{v[1]:.3f}" for k, v in vals.items()))
    return {"runs": runs, "summary": summary}


def _fit_real(face, enc_cfg, encoder, data, loss, seed=0):
    cfg = direct_config(loss, seed).replace(chunk_frames=data.num_frames)
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
    sil = ("silhouette", FLAGS.silhouette_weight, {"refresh_every": FLAGS.refresh_every,
                                                   "start_step": FLAGS.landmark_steps, "ramp_steps": FLAGS.ramp_steps})
    table = {"landmarks": base_loss, "photometric": photo_loss, "silhouette": lambda: {**base_loss(), "silhouette": sil},
             "photometric+silhouette": lambda: photo_loss(silhouette=sil)}
    runs = [(name, table[name]()) for name in FLAGS.real_losses]
    overlays = {}
    for name, loss in runs:
        res, secs = _fit_real(face, enc_cfg, encoder, data, loss)
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
    """Seconds per optimizer step with and without the term, in one process on one synthetic clip —
    the direct baseline (``--method=direct``) or NeuFace from the packaged encoder (``--method=neuface``,
    annotate's default trainable stages) — and the rasterizer refresh's share of the step with the
    term: the host rasterization time counted inside the same timed run (``raster.MEMO.seconds``)."""
    model, emb = flame_jax.demo_model(), flame_jax.demo_landmark_embedding()
    face = fit_lib.FaceModel(model, emb)
    encoder, enc_cfg = load_checkpoint(packaged_checkpoint(), model)
    clip = synth_lib.synthesize_clip(seed=0, rig=FLAGS.views, config=synth_lib.SynthConfig(
        num_frames=FLAGS.frames, camera_distance=FLAGS.camera_distance))
    data = crops_lib.prepare_clip(clip.images, clip.landmarks68, clip.crop_transforms, encoder_size=enc_cfg.image_size,
                                  visible=clip.visible68, valid=clip.valid, crop_size=224)
    out = {"method": FLAGS.method, "images_per_step": int(np.prod(data.frame_mask.shape)),
           "encoder": getattr(enc_cfg, "arch", "?"), "image_size": enc_cfg.image_size}
    steps = FLAGS.cost_steps
    now = {"start_step": 0, "ramp_steps": 0}
    fits = [("landmarks", base_loss()), ("photometric", photo_loss(options=now)),
            ("photometric_frame_light", photo_loss(options={**now, **FRAME_LIGHT}))]
    runs = {}
    for name, loss in fits:
        if FLAGS.method == "neuface":
            cfg = fit_lib.FitConfig(loss=loss, num_epochs=steps, chunk_frames=data.num_frames,
                                    learning_rate=FLAGS.neuface_lr)
            run = functools.partial(fit_lib.NeuFace(face, enc_cfg, cfg).fit, data, encoder=encoder)
        else:
            cfg = fit_lib.FitConfig(loss=loss, num_epochs=steps, chunk_frames=data.num_frames)
            opt = fit_lib.DirectFit(face, enc_cfg, cfg)
            params = opt.init_params(data, encoder)
            run = functools.partial(opt.run_fn, params, data, jax.random.key(0), steps, face)
        t0 = time.perf_counter()
        jax.block_until_ready(jax.tree.leaves(run()))
        out[name] = {"first_call_s": time.perf_counter() - t0}
        runs[name] = run
    # The variants interleaved, FLAGS.cost_repeats rounds, the fastest round of each kept: the machine's
    # load from other jobs changes from minute to minute, and a ratio of back-to-back runs follows it.
    for _ in range(FLAGS.cost_repeats):
        for name, run in runs.items():
            raster_lib.MEMO.clear()
            t0 = time.perf_counter()
            jax.block_until_ready(jax.tree.leaves(run()))
            secs = time.perf_counter() - t0
            if secs * 1000 / steps < out[name].get("step_ms", np.inf):
                out[name].update(step_ms=1000 * secs / steps, refreshes=raster_lib.MEMO.refreshes,
                                 raster_s=raster_lib.MEMO.seconds, raster_share=raster_lib.MEMO.seconds / secs)
    for name in runs:
        print(name, out[name], flush=True)
    for name in runs:
        out[name]["over_landmarks"] = out[name]["step_ms"] / out["landmarks"]["step_ms"]
    out["raster_share_of_photometric_step"] = out["photometric"]["raster_share"]
    print(json.dumps(out, indent=1))
    return out


def gt_direct_params(clip, size: int) -> fit_lib.DirectParams:
    """The ground truth as the direct baseline's parameters: the clip's shape, expression, global and
    jaw rotation, and per image the weak-perspective camera closest (least squares over all vertices)
    to the renders' pinhole projection into the encoder crop."""
    gt, cam_rec = clip.gt, clip.camera
    verts = np.asarray(gt["vertices"] - gt["translation"][:, :, None], np.float64)
    pix = synth_lib.project_points(np.asarray(gt["vertices"], np.float64), cam_rec["focal_px"],
                                   np.asarray(cam_rec["principal_px"], np.float64), cam_rec["distance_m"])[..., :2]
    m = np.asarray(clip.crop_transforms, np.float64)
    norm = (np.einsum("twij,twnj->twni", m[..., :2], pix) + m[:, :, None, :, 2]) * (2.0 / clip.images.shape[-2]) - 1.0
    t, w = verts.shape[:2]
    cams, resid = np.zeros((t, w, 3)), []
    for i in range(t):
        for j in range(w):
            x, y = verts[i, j, :, 0], verts[i, j, :, 1]
            one, zero = np.ones_like(x), np.zeros_like(x)
            a = np.concatenate([np.stack([x, one, zero], 1), np.stack([-y, zero, one], 1)])
            b = np.concatenate([norm[i, j, :, 0], norm[i, j, :, 1]])
            (sc, u, v), *_ = np.linalg.lstsq(a, b, rcond=None)
            cams[i, j] = [sc, u / sc, -v / sc]
            resid.append(np.abs(a @ np.array([sc, u, v]) - b).max() * size / 2)
    logging.info("weak-perspective fit of the renders' projection: max residual %.2f px (crop %d)", max(resid), size)
    pose = gt["pose"]
    return fit_lib.DirectParams(
        shape=jnp.asarray(gt["shape"], jnp.float32),
        expression=jnp.broadcast_to(jnp.asarray(gt["expression"])[:, None], (t, w, gt["expression"].shape[-1])),
        rotation=jnp.asarray(np.concatenate([pose[..., 0:3], pose[..., 6:9]], -1), jnp.float32),
        cam=jnp.asarray(cams, jnp.float32)), float(max(resid))


def run_diagnose():
    """Is the term minimal at the truth? Its value at the ground truth (appearance solved, or the true
    one), with the jaw, identity or camera perturbed, and along the straight line from a
    landmarks-only fit to the truth (all parameters, or identity and camera alone)."""
    model, emb = flame_jax.demo_model(), flame_jax.demo_landmark_embedding()
    face = fit_lib.FaceModel(model, emb)
    encoder, enc_cfg = load_checkpoint(packaged_checkpoint(), model)
    seed = int(FLAGS.seeds[0])
    clip = synth_lib.synthesize_clip(seed=seed, rig=FLAGS.views, config=synth_lib.SynthConfig(
        num_frames=FLAGS.frames, camera_distance=FLAGS.camera_distance, shading=FLAGS.shading))
    data = crops_lib.prepare_clip(clip.images, clip.landmarks68, clip.crop_transforms, encoder_size=enc_cfg.image_size,
                                  visible=clip.visible68, valid=clip.valid, crop_size=224)
    truth, resid = gt_direct_params(clip, enc_cfg.image_size)
    ids = lower_face_vertices(model, emb)
    opts = {"refresh_every": 1, "camera_gradient": True}
    gt_app = {"albedo": jnp.asarray(clip.gt["albedo"]), "sh_light": jnp.asarray(clip.gt["light_sh"])}

    @functools.partial(jax.jit, static_argnames=("true_appearance",))
    def value(p, true_appearance=False):
        pose = flame_jax.deca_pose_to_full(p.rotation)
        verts, _, _ = fit_lib.evaluate_params(face, p.shape, p.expression, pose, p.cam)
        batch = {"images": data.images, "vertices": verts, "cam": p.cam, "faces": model.faces,
                 "frame_mask": data.frame_mask, "landmarks_target": data.landmarks, "landmarks_mask": data.landmarks_mask}
        o = dict(opts)
        if true_appearance:
            batch.update(gt_app)
            o.update(albedo="batch", light="batch")
        v, m = photometric.photometric_term(batch, **o)
        return losses_lib.masked_mean(v, m)

    def lower(p):
        pose = flame_jax.deca_pose_to_full(p.rotation)
        verts, _, root = fit_lib.evaluate_params(face, p.shape, p.expression, pose, p.cam)
        canon = np.asarray(losses_lib.canonical_vertices(verts, pose[..., 0:3], root), np.float64)
        ref = np.broadcast_to(np.asarray(clip.gt["canonical_vertices"], np.float64)[:, None], canon.shape)
        return float(np.linalg.norm(rigid_align(canon, ref, with_scale=True) - ref, axis=-1)[..., ids].mean() * 1000)

    out = {"seed": seed, "weak_perspective_residual_px": resid,
           "at_truth": {"solved_appearance": float(value(truth)), "true_appearance": float(value(truth, True))}}
    perturb = {"jaw +0.1 rad": dict(rotation=truth.rotation.at[..., 3].add(0.1)),
               "jaw +0.2 rad": dict(rotation=truth.rotation.at[..., 3].add(0.2)),
               "shape[0] +2": dict(shape=truth.shape.at[0].add(2.0)), "shape[1] -2": dict(shape=truth.shape.at[1].add(-2.0)),
               "scale x1.05": dict(cam=truth.cam.at[..., 0].multiply(1.05)),
               "tx +1 px": dict(cam=truth.cam.at[..., 1].add(2.0 / enc_cfg.image_size / truth.cam[..., 0]))}
    out["perturbed"] = {k: float(value(dataclasses.replace(truth, **v))) for k, v in perturb.items()}
    cfg = direct_config(BASE_LOSS, seed).replace(direct_steps=FLAGS.landmark_steps)
    fitted = fit_lib.DirectFit(face, enc_cfg, cfg)
    p0 = fitted.init_params(data, encoder)
    start, _ = fitted.run_fn(p0, data, jax.random.key(seed), FLAGS.landmark_steps, face)
    start = fit_lib.DirectParams(shape=jnp.asarray(start[0]), expression=jnp.asarray(start[1]),
                                 rotation=jnp.concatenate([start[2][..., 0:3], start[2][..., 6:9]], -1),
                                 cam=jnp.asarray(start[3]))
    line = {}
    for label, fields in (("all parameters", ("shape", "expression", "rotation", "cam")), ("identity + camera", ("shape", "cam"))):
        line[label] = []
        for a in (0.0, 0.25, 0.5, 0.75, 1.0):
            p = dataclasses.replace(start, **{k: getattr(start, k) + a * (getattr(truth, k) - getattr(start, k))
                                              for k in fields})
            line[label].append({"alpha": a, "photometric": float(value(p)), "lower_face_mm": lower(p)})
    out["line_from_landmark_fit"] = line
    print(json.dumps(out, indent=1))
    return out


def run_masks():
    """The term's pixel weights on the occluded clip at the ground truth: on the hand's pixels and on
    the rest of the face, for the occluded images and the clean ones, with and without the occluder
    rejection (``outliers``)."""
    model, emb = flame_jax.demo_model(), flame_jax.demo_landmark_embedding()
    face = fit_lib.FaceModel(model, emb)
    _, enc_cfg = load_checkpoint(packaged_checkpoint(), model)
    out = {}
    for seed in [int(s) for s in FLAGS.seeds]:
        clip = synth_lib.synthesize_clip(seed=seed, rig=FLAGS.views, config=synth_lib.SynthConfig(
            num_frames=FLAGS.frames, camera_distance=FLAGS.camera_distance, shading=FLAGS.shading))
        images, hidden = occlude(clip, 0.2, seed)
        prep = functools.partial(crops_lib.prepare_clip, landmarks_px=clip.landmarks68,
                                 crop_transforms=clip.crop_transforms, encoder_size=enc_cfg.image_size,
                                 visible=clip.visible68, valid=clip.valid, crop_size=224)
        data, clean = prep(images), prep(clip.images)
        hand = np.any(np.asarray(data.images) != np.asarray(clean.images), -1)  # [T, W, S, S]
        truth, _ = gt_direct_params(clip, enc_cfg.image_size)
        pose = flame_jax.deca_pose_to_full(truth.rotation)
        verts, _, _ = fit_lib.evaluate_params(face, truth.shape, truth.expression, pose, truth.cam)
        batch = {"images": data.images, "vertices": verts, "cam": truth.cam, "faces": model.faces,
                 "frame_mask": data.frame_mask, "landmarks_target": data.landmarks,
                 "landmarks_mask": data.landmarks_mask, "global_pose": pose[..., 0:3]}
        rows = {}
        for k in (0.0, FLAGS.outliers):
            x = photometric.loss.photometric_inputs(batch, photometric.PhotometricConfig(refresh_every=1, outliers=k))
            face_px = np.asarray(x.attention) > 0
            for name, w in (("attention", x.attention), ("weights", x.weights)):
                w = np.asarray(w)
                occluded = [float(w[t, v][face_px[t, v] & hand[t, v]].mean()) for t in hidden for v in range(w.shape[1])]
                rest = [float(w[t, v][face_px[t, v] & ~hand[t, v]].mean()) for t in hidden for v in range(w.shape[1])]
                clean_frames = [t for t in range(w.shape[0]) if t not in set(hidden.tolist())]
                rows[f"outliers={k}/{name}"] = {
                    "hand_pixels": occluded, "rest_of_face_occluded_images": rest,
                    "clean_images": float(np.mean([w[t][face_px[t]].mean() for t in clean_frames]))}
        out[f"seed {seed}"] = {"occluded_frames": hidden.tolist(), **rows}
    print(json.dumps(out, indent=1))
    return out


def main(argv):
    del argv
    t0 = time.perf_counter()
    out = {"synthetic": run_synthetic, "real": run_real, "cost": run_cost, "diagnose": run_diagnose,
           "masks": run_masks}[FLAGS.part]()
    out["settings"] = {"seeds": FLAGS.seeds, "frames": FLAGS.frames, "views": FLAGS.views,
                       "landmark_steps": FLAGS.landmark_steps, "photo_steps": FLAGS.photo_steps,
                       "ramp_steps": FLAGS.ramp_steps, "shading": FLAGS.shading, "albedo": FLAGS.albedo,
                       "camera_gradient": FLAGS.camera_gradient, "photo_views": FLAGS.photo_views,
                       "outliers": FLAGS.outliers, "losses": FLAGS.losses,
                       "neuface_lr": FLAGS.neuface_lr, "photo_options": FLAGS.photo_options,
                       "landmark_weight": FLAGS.landmark_weight, "silhouette_weight": FLAGS.silhouette_weight,
                       "camera_distance": FLAGS.camera_distance, "shape_prior": FLAGS.shape_prior,
                       "weight": FLAGS.weight, "refresh_every": FLAGS.refresh_every, "method": FLAGS.method,
                       "machine": platform.processor() or platform.machine(), "seconds": time.perf_counter() - t0}
    path = Path(FLAGS.out or f"experiments/results/photometric_{FLAGS.part}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    app.run(main)
