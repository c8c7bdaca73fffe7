"""neuface-jax annotate: real video(s) to FLAME meshes by NeuFace."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

from neuface_jax.cli.common import help_requested, parse, progress_factory


def define_model_and_fit_flags(fv: flags.FlagValues) -> None:
    """The model, landmark, encoder, optimizer and cache flags that annotate and annotate-dataset share."""
    from neuface_jax.annotation import pipeline as annotate_lib

    s, i, f, b, en = (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_bool,
                      flags.DEFINE_enum)
    s("flame_model", None, "FLAME model file (default: the demo head, a stand-in, not FLAME).", flag_values=fv)
    s("landmark_embedding", None, "Landmark embedding of --flame_model: 68-point (DECA landmark_embedding.npy) "
      "or mediapipe_landmark_embedding.npz.", flag_values=fv)
    en("landmark_set", "ibug68", list(annotate_lib.LANDMARK_SETS),
       "Fitted landmarks: MediaPipe -> iBUG-68, or FLAME's 105-point MediaPipe set (gathered by id).", flag_values=fv)
    en("contour", "auto", list(annotate_lib.CONTOURS), "68-point jaw contour: auto/static = the frontal row for "
       "every frame (right for MediaPipe's mesh-fixed jaw points), dynamic = DECA's yaw rule (use it for "
       "precomputed silhouette-following landmarks such as synthetic clips').", flag_values=fv)
    s("face_landmarker", None, "MediaPipe face_landmarker.task (default: $NEUFACE_FACE_LANDMARKER, then the user "
      "cache; see fetch-models).", flag_values=fv)
    i("epochs", annotate_lib.DEFAULT_EPOCHS, "NeuFace epochs (the reference 100: 1.5-2.5 min per shared clip on "
      "the 2-core CPU).", flag_values=fv)
    i("chunk_frames", 20, "Frames per chunk (reference: 20).", flag_values=fv)
    f("lr", None, "Learning rate (default 1e-4 from the packaged or another small checkpoint, 2e-5 from a "
      "ResNet-50 checkpoint, 1e-3 from a random encoder).", flag_values=fv)
    s("encoder", None, "Encoder checkpoint folder (encoder.save_encoder, orbax), or 'random'; default: the packaged "
      "pretrained small encoder on the demo head, a randomly initialized small encoder with a FLAME model.",
      flag_values=fv)
    i("stride", 1, "Take every k-th frame.", flag_values=fv)
    s("cache_dir", None, "Landmark cache folder (default ~/.cache/neuface_jax/landmarks).", flag_values=fv)
    b("cache", True, "Use the landmark cache.", flag_values=fv)
    i("seed", 0, "Encoder initialization seed.", flag_values=fv)


def annotate_main(argv: list[str]) -> int:
    """Real video(s) → FLAME meshes by NeuFace.

    neuface-jax annotate --video PATH[,PATH...] [--view_names a,b,c] --out DIR
        [--view_boxes x0:y0:x1:y1,...] [--flame_model F --landmark_embedding E]
        [--landmark_set ibug68|mediapipe105] [--contour auto|static|dynamic] [--epochs N]
        [--start/--end frames | --start_s/--end_s seconds] [--stride K] [--encoder CKPT] [--objs]

    --video takes one video (monocular), several comma-separated videos (synchronized views), a
    frame folder (MEAD img_%04d_<view>.jpg, numbered frames, or one sub-folder per view) or image(s).
    --view_boxes cuts ONE composite video into views by half-open pixel boxes (name=x0:y0:x1:y1
    names a view), e.g. the left column of the shared 3-view composite:
    --view_boxes=0:0:247:360,0:360:247:720,0:720:247:1080. Without --flame_model the demo head (a
    procedural stand-in for FLAME, not FLAME) is used. See neuface_jax/annotation/pipeline.py for the contour
    choice (static frontal contour for MediaPipe jaw points by default) and the metrics.
    """
    from neuface_jax.annotation import pipeline as annotate_lib

    fv = flags.FlagValues()
    s, i, f, b, ls, en = (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_bool,
                          flags.DEFINE_list, flags.DEFINE_enum)
    ls("video", None, "Input: video path(s) (comma-separated = synchronized views), a frame folder or image(s).",
       flag_values=fv)
    s("out", None, "Output folder (required).", flag_values=fv)
    ls("view_names", None, "One name per view (default: file stems, box names or view0, view1, ...).", flag_values=fv)
    ls("view_boxes", None, "Cut ONE composite video into views: x0:y0:x1:y1 (or name=x0:y0:x1:y1) per view, "
       "half-open pixel boxes.", flag_values=fv)
    define_model_and_fit_flags(fv)
    i("start", None, "First frame (0-based).", flag_values=fv)
    i("end", None, "End frame (exclusive).", flag_values=fv)
    f("start_s", None, "Start time in seconds.", flag_values=fv)
    f("end_s", None, "End time in seconds (exclusive).", flag_values=fv)
    f("fps", 25.0, "Frame rate of frame folders and images.", flag_values=fv)
    b("strict", False, "Views of different lengths or frame rates are an error (default: trim, warn).", flag_values=fv)
    en("crop_smoothing", "moving_average", ["moving_average", "savgol", "none"],
       "Temporal smoothing of the crop boxes (none = the per-frame reference boxes).", flag_values=fv)
    i("smoothing_window", 5, "Crop smoothing window in frames.", flag_values=fv)
    b("overlay", True, "Write overlay.mp4.", flag_values=fv)
    b("objs", False, "Write one OBJ per frame and view (objs/<view>/).", flag_values=fv)
    b("warm_compile", False, "Compile the NeuFace step in the background during detection (pays with spare "
      "cores).", flag_values=fv)
    help_requested(argv, fv, "neuface-jax annotate", annotate_main.__doc__)
    parse(fv, argv, "neuface-jax annotate")
    prog = "neuface-jax annotate"
    if not fv.video or not fv.out:
        sys.stderr.write(f"{prog}: --video and --out are required (see --help)\n")
        return 2

    from neuface_jax.media import detect
    from neuface_jax.media import video

    start = time.perf_counter()
    try:
        summary = annotate_lib.annotate(
            fv.video, out_dir=fv.out, view_names=fv.view_names, view_boxes=fv.view_boxes,
            flame_model=fv.flame_model, landmark_embedding=fv.landmark_embedding, landmark_set=fv.landmark_set,
            contour=fv.contour, face_landmarker=fv.face_landmarker, epochs=fv.epochs, chunk_frames=fv.chunk_frames,
            learning_rate=fv.lr, encoder=fv.encoder, start=fv.start, end=fv.end, start_s=fv.start_s, end_s=fv.end_s,
            stride=fv.stride, fps=fv.fps, strict=fv.strict,
            crop_smoothing=None if fv.crop_smoothing == "none" else fv.crop_smoothing,
            smoothing_window=fv.smoothing_window, write_video=fv.overlay, write_objs=fv.objs, cache_dir=fv.cache_dir,
            use_cache=fv.cache, seed=fv.seed, warm_compile=fv.warm_compile, progress=progress_factory(),
        )
    except (detect.NoFaceError, video.VideoError, detect.ModelNotFoundError, FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 1
    tp = summary["throughput"]
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in summary["seconds"].items() if k != "total")
    print(
        f"preprocessing (decode + detect): {tp['preprocess_frames_per_s']:.1f} frames/s"
        f" ({tp['preprocess_view_frames_per_s']:.1f} view-frames/s{', cached landmarks' if tp['detection_cached'] else ''})"
    )
    print(f"timings: {secs}; total {time.perf_counter() - start:.1f}s")
    names = ", ".join(p.name for k, p in summary["files"].items())
    print(f"wrote {Path(fv.out).resolve()}/{{{names}}}")
    return 0

