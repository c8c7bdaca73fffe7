"""The ``neuface-jax`` command: ``neuface-jax <command> [--flags]``.

Commands:
  demo          synthetic 3-view clip → direct baseline and NeuFace → table, params.npz,
                metrics.json, overlay.mp4 (the embedded default: no FLAME file, no video)
  synth         write a synthetic clip with ground truth (one mp4 per view, landmarks, truth)
  fetch-models  download the MediaPipe face landmarker and check its SHA-256
  annotate      real video(s) → MediaPipe landmarks → crops → NeuFace → params.npz, metrics.json,
                overlay.mp4 (mesh over the original frames, views tiled), optional OBJs
  manifest      a folder tree of clips (MEAD, one video per clip, frame folders, synth clips) → a
                jsonl manifest with stable clip ids
  annotate-dataset
                a manifest → <out>/<clip_id>/{params.npz,metrics.json,done.json}: sharded, K clips
                packed per device, resumable, failures in failures.jsonl, a quality report
  report        the dataset quality report (report.json, report.md) of an annotate-dataset output

Flags are absl flags, one set per command (``neuface-jax <command> --help``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

USAGE = __doc__


def _progress_factory():
    from tqdm.auto import tqdm

    def make(desc, total):
        # disable=None: bars on a terminal, silent in logs and CI.
        return tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True, disable=None, mininterval=0.5)

    return make


def _parse(fv: flags.FlagValues, argv: list[str], prog: str) -> None:
    try:
        fv(argv)
    except flags.Error as e:
        sys.stderr.write(f"{prog}: {e}\n\n{fv.main_module_help() if hasattr(fv, 'main_module_help') else ''}\n")
        raise SystemExit(2)


def _help_requested(argv, fv, prog, doc):
    if any(a in ("-h", "--help", "-help", "--helpfull") for a in argv[1:]):
        print(doc.strip() + "\n")
        print(fv.get_help())
        raise SystemExit(0)


# --------------------------------------------------------------------------- demo
def demo_main(argv: list[str]) -> int:
    """Synthetic 3-view clip → direct baseline vs NeuFace; writes params.npz, metrics.json, overlay.mp4.

    NeuFace starts from the pretrained small encoder shipped with the package (--encoder=pretrained,
    trained on synthetic renders of the demo head), the direct baseline from its predictions.
    --encoder=random starts both from a randomly initialized encoder (NeuFace then underfits within
    this step budget: docs/experiments.md), --encoder=PATH from a checkpoint made by
    experiments/pretrain_encoder.py.
    """
    fv = flags.FlagValues()
    flags.DEFINE_string("out", "./neuface_demo", "Output folder.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Clip seed.", flag_values=fv)
    flags.DEFINE_integer("frames", 40, "Frames of the synthetic clip.", flag_values=fv)
    flags.DEFINE_string("views", "3", "Camera rig: mono, 3, mead, MEAD view names or yaw:pitch pairs.", flag_values=fv)
    flags.DEFINE_integer("epochs", 100, "Optimization epochs over the chunks (reference: 100).", flag_values=fv)
    flags.DEFINE_integer("chunk_frames", 20, "Frames per chunk (reference: 20).", flag_values=fv)
    flags.DEFINE_string(
        "encoder", "pretrained",
        "Where NeuFace starts (and the direct baseline's initial prediction comes from): 'pretrained' (the "
        "checkpoint shipped with the package), 'random', or a checkpoint directory.", flag_values=fv,
    )
    flags.DEFINE_float(
        "lr", None, "NeuFace learning rate (default 3e-4 from a pretrained encoder, 1e-3 from a random one).",
        flag_values=fv,
    )
    flags.DEFINE_float("direct_lr", 1e-2, "Direct-optimization learning rate.", flag_values=fv)
    flags.DEFINE_list("methods", ["direct", "neuface"], "Methods to run.", flag_values=fv)
    flags.DEFINE_bool("video", True, "Write overlay.mp4.", flag_values=fv)
    flags.DEFINE_bool("objs", False, "Write one OBJ per frame and view.", flag_values=fv)
    _help_requested(argv, fv, "neuface-jax demo", demo_main.__doc__)
    _parse(fv, argv, "neuface-jax demo")

    from neuface_jax import pipeline

    start = time.perf_counter()
    print("neuface-jax demo: the demo head is a procedural stand-in for FLAME (no FLAME file needed).")
    lr = fv.lr
    if lr is None:
        lr = pipeline.DEMO_LEARNING_RATES["random" if fv.encoder == "random" else "pretrained"]
    cfg = pipeline.DemoConfig(
        seed=fv.seed,
        num_frames=fv.frames,
        views=fv.views,
        encoder_init=fv.encoder,
        fit=pipeline.DemoConfig().fit.replace(
            num_epochs=fv.epochs, chunk_frames=fv.chunk_frames, learning_rate=lr, direct_learning_rate=fv.direct_lr,
            seed=fv.seed,
        ),
        methods=tuple(fv.methods),
    )
    try:
        out = pipeline.run_synthetic(
            cfg, out_dir=fv.out, write_video=fv.video, write_objs=fv.objs, progress_factory=_progress_factory()
        )
    except FileNotFoundError as e:  # a missing --encoder checkpoint
        sys.stderr.write(f"neuface-jax demo: {e}\n")
        return 2
    print()
    print(pipeline.format_table(out["metrics"]))
    print()
    extra = pipeline.format_table(
        {k: v for k, v in out["metrics"].items() if k != "ground_truth"}, pipeline.EXTRA_METRIC_NAMES
    )
    print(extra)
    print()
    print("units: nme %, msi mm^-2 frame^4 (higher = smoother), jitter and accel_error mm/frame^2, cvd mm, "
          "vertex errors mm (canonical frame; _similarity after per-frame similarity alignment)")
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in out["seconds"].items())
    print(f"timings: {secs}; total {time.perf_counter() - start:.1f}s")
    print(f"wrote {Path(fv.out).resolve()}/{{params.npz, metrics.json{', overlay.mp4' if fv.video else ''}}}")
    return 0


# --------------------------------------------------------------------------- synth
def synth_main(argv: list[str]) -> int:
    """Writes a synthetic clip with ground truth in the layout the video pipeline reads."""
    fv = flags.FlagValues()
    flags.DEFINE_string("out", None, "Output folder (required).", flag_values=fv)
    flags.DEFINE_list("views", ["mono"], "Camera rig: mono, 3, mead, MEAD view names or yaw:pitch pairs.", flag_values=fv)
    flags.DEFINE_integer("frames", 64, "Number of frames.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Clip seed.", flag_values=fv)
    flags.DEFINE_integer("size", 224, "Image size in pixels.", flag_values=fv)
    flags.DEFINE_float("noise_px", 1.0, "Per-landmark detection bias (pixels, std).", flag_values=fv)
    flags.DEFINE_float("jitter_px", 0.7, "Frame-to-frame landmark jitter (pixels, std).", flag_values=fv)
    flags.DEFINE_float("drop_frames", 0.0, "Probability that a frame has no detection.", flag_values=fv)
    flags.DEFINE_string("flame_model", None, "A FLAME model file (default: the demo head).", flag_values=fv)
    flags.DEFINE_string("landmark_embedding", None, "68-point embedding for --flame_model.", flag_values=fv)
    _help_requested(argv, fv, "neuface-jax synth", synth_main.__doc__)
    _parse(fv, argv, "neuface-jax synth")
    if not fv.out:
        sys.stderr.write("neuface-jax synth: --out is required\n")
        return 2

    import flame_jax
    from neuface_jax import synth

    cfg = synth.SynthConfig(
        num_frames=fv.frames, image_size=fv.size, landmark_noise_px=fv.noise_px, landmark_jitter_px=fv.jitter_px,
        drop_frame_probability=fv.drop_frames,
    )
    kwargs = {}
    if fv.flame_model:
        if not fv.landmark_embedding:
            sys.stderr.write("neuface-jax synth: --flame_model needs --landmark_embedding (a 68-point embedding)\n")
            return 2
        kwargs = dict(
            model=flame_jax.load_model(fv.flame_model),
            embedding68=flame_jax.load_landmark_embedding(fv.landmark_embedding),
        )
    from tqdm.auto import tqdm

    bar = tqdm(desc="render", total=1, dynamic_ncols=True, disable=None, mininterval=0.5)

    def cb(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    t0 = time.perf_counter()
    clip = synth.synthesize_clip(seed=fv.seed, rig=",".join(fv.views), config=cfg, progress=cb, **kwargs)
    bar.close()
    gen = time.perf_counter() - t0
    synth.write_clip(clip, fv.out)
    print(
        f"wrote {clip.num_frames} frames x {clip.num_views} views ({', '.join(clip.view_names)}) to "
        f"{Path(fv.out).resolve()} in {time.perf_counter() - t0:.1f}s (generation {gen:.1f}s)"
    )
    return 0


# --------------------------------------------------------------------------- annotate
def _define_model_and_fit_flags(fv: flags.FlagValues) -> None:
    """The model, landmark, encoder, optimizer and cache flags that annotate and annotate-dataset share."""
    from neuface_jax import annotate as annotate_lib

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
    procedural stand-in for FLAME, not FLAME) is used. See neuface_jax/annotate.py for the contour
    choice (static frontal contour for MediaPipe jaw points by default) and the metrics.
    """
    from neuface_jax import annotate as annotate_lib

    fv = flags.FlagValues()
    s, i, f, b, ls, en = (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_bool,
                          flags.DEFINE_list, flags.DEFINE_enum)
    ls("video", None, "Input: video path(s) (comma-separated = synchronized views), a frame folder or image(s).",
       flag_values=fv)
    s("out", None, "Output folder (required).", flag_values=fv)
    ls("view_names", None, "One name per view (default: file stems, box names or view0, view1, ...).", flag_values=fv)
    ls("view_boxes", None, "Cut ONE composite video into views: x0:y0:x1:y1 (or name=x0:y0:x1:y1) per view, "
       "half-open pixel boxes.", flag_values=fv)
    _define_model_and_fit_flags(fv)
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
    _help_requested(argv, fv, "neuface-jax annotate", annotate_main.__doc__)
    _parse(fv, argv, "neuface-jax annotate")
    prog = "neuface-jax annotate"
    if not fv.video or not fv.out:
        sys.stderr.write(f"{prog}: --video and --out are required (see --help)\n")
        return 2

    from neuface_jax import detect, video

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
            use_cache=fv.cache, seed=fv.seed, warm_compile=fv.warm_compile, progress=_progress_factory(),
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


# --------------------------------------------------------------------------- datasets
def annotate_dataset_main(argv: list[str]) -> int:
    """A manifest of clips → FLAME meshes by NeuFace, at dataset scale.

    neuface-jax annotate-dataset --manifest FILE --out DIR [--shard_id I --num_shards N]
        [--clips_per_device K] [--retry_failed] [--distributed] [annotate's model/encoder flags]

    Writes <out>/<clip_id>/{params.npz, metrics.json, done.json} (atomically; done.json last),
    failures.jsonl, summary-<shard>-of-<N>.json and report.{json,md}. Re-running the same command
    skips completed clips and resumes checkpointed groups; --retry_failed re-runs only the failed
    clips. See neuface_jax/dataset.py.
    """
    from neuface_jax import annotate as annotate_lib

    fv = flags.FlagValues()
    s, i, f, b, ls, en = (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_bool,
                          flags.DEFINE_list, flags.DEFINE_enum)
    s("manifest", None, "Manifest jsonl (neuface-jax manifest).", flag_values=fv)
    s("out", None, "Output root.", flag_values=fv)
    i("shard_id", 0, "This job's shard (0-based).", flag_values=fv)
    i("num_shards", 1, "Number of shards (stable hash of the clip id).", flag_values=fv)
    b("retry_failed", False, "Run only the clips recorded in failures.jsonl (and not completed since).",
      flag_values=fv)
    i("clips_per_device", 1, "K: clips packed per device in one optimization group.", flag_values=fv)
    ls("bucket_chunks", ["1", "2", "4", "8", "16", "32"], "Padded clip lengths, in chunks.", flag_values=fv)
    i("workers", 2, "Preprocessing threads (decode + landmarks + crops).", flag_values=fv)
    i("prefetch", None, "Clips prepared ahead of the optimizer (default: two groups).", flag_values=fv)
    i("checkpoint_every", 10, "Epochs between orbax checkpoints of long groups (0 = never).", flag_values=fv)
    i("checkpoint_min_frames", 200, "Groups padded to at least this many frames checkpoint.", flag_values=fv)
    _define_model_and_fit_flags(fv)
    f("fps", 25.0, "Frame rate of frame folders without one in the manifest.", flag_values=fv)
    b("strict", False, "Views of different lengths are a failure (default: trim, warn).", flag_values=fv)
    b("overlay", False, "Write overlay.mp4 per clip.", flag_values=fv)
    b("objs", False, "Write OBJs per clip.", flag_values=fv)
    b("distributed", False, "Call jax.distributed.initialize (TPU pods, Slurm, Kubernetes) and shard by process.",
      flag_values=fv)
    s("coordinator_address", None, "With --distributed: host:port of process 0 (default: auto-detect).",
      flag_values=fv)
    i("num_processes", None, "With --distributed: process count (default: auto-detect).", flag_values=fv)
    i("process_id", None, "With --distributed: this process (default: auto-detect).", flag_values=fv)
    b("report", True, "Write report.json / report.md at the end.", flag_values=fv)
    s("compilation_cache", None, "JAX persistent compilation cache folder: every process and re-run of the job "
      "reuses compiled steps instead of compiling its buckets again.", flag_values=fv)
    _help_requested(argv, fv, "neuface-jax annotate-dataset", annotate_dataset_main.__doc__)
    _parse(fv, argv, "neuface-jax annotate-dataset")
    prog = "neuface-jax annotate-dataset"
    if not fv.manifest or not fv.out:
        sys.stderr.write(f"{prog}: --manifest and --out are required (see --help)\n")
        return 2

    from neuface_jax import dataset, detect, manifest

    if fv.compilation_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(Path(fv.compilation_cache).expanduser().absolute()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if fv.distributed:
        pidx, pcount = dataset.init_distributed(fv.coordinator_address, fv.num_processes, fv.process_id)
        print(f"{prog}: process {pidx} of {pcount}")
    try:
        entries = manifest.read_manifest(fv.manifest)
        cfg = dataset.DatasetConfig(
            clips_per_device=fv.clips_per_device, bucket_chunks=tuple(int(x) for x in fv.bucket_chunks),
            workers=fv.workers, prefetch=fv.prefetch, checkpoint_every=fv.checkpoint_every,
            checkpoint_min_frames=fv.checkpoint_min_frames, write_video=fv.overlay, write_objs=fv.objs,
            stride=fv.stride, fps=fv.fps, strict=fv.strict, use_cache=fv.cache, cache_dir=fv.cache_dir,
        )
        need_mp = any(e.landmarks is None for e in entries)
        setup = annotate_lib.make_setup(
            flame_model=fv.flame_model, landmark_embedding=fv.landmark_embedding, landmark_set=fv.landmark_set,
            contour=fv.contour, face_landmarker=fv.face_landmarker, epochs=fv.epochs, chunk_frames=fv.chunk_frames,
            learning_rate=fv.lr, encoder=fv.encoder, seed=fv.seed, need_landmarker=need_mp,
        )
        summary = dataset.run(
            entries, fv.out, setup, cfg, shard_id=fv.shard_id, num_shards=fv.num_shards,
            retry_failed=fv.retry_failed, progress=_progress_factory(), report=fv.report,
        )
    except (detect.ModelNotFoundError, FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 1
    print(
        f"{prog}: {summary.done} done, {summary.failed} failed, {summary.skipped_done} skipped (done before), "
        f"{summary.skipped_failed} skipped (failed before) in {summary.seconds:.1f}s"
        f" = {summary.clips_per_hour:.0f} clips/hour; outputs in {Path(fv.out).resolve()}"
    )
    return 0


def manifest_main(argv: list[str]) -> int:
    from neuface_jax import manifest

    return int(manifest.manifest_main(argv) or 0)


def report_main(argv: list[str]) -> int:
    """The dataset quality report of an annotate-dataset output folder: report.json and report.md.

    neuface-jax report --out DIR
    """
    fv = flags.FlagValues()
    flags.DEFINE_string("out", None, "annotate-dataset output root.", flag_values=fv)
    flags.DEFINE_integer("worst", 10, "Worst clips listed per metric.", flag_values=fv)
    _help_requested(argv, fv, "neuface-jax report", report_main.__doc__)
    _parse(fv, argv, "neuface-jax report")
    if not fv.out or not Path(fv.out).is_dir():
        sys.stderr.write(f"neuface-jax report: --out must be an existing annotate-dataset folder, got {fv.out!r}\n")
        return 2
    from neuface_jax import dataset

    doc = dataset.write_report(fv.out, worst=fv.worst)
    print((Path(fv.out) / "report.md").read_text())
    print(f"wrote {Path(fv.out).resolve()}/report.{{json,md}} ({doc['completed']} clips, {doc['failed']} failed)")
    return 0


# --------------------------------------------------------------------------- dispatch
def fetch_models_main(argv: list[str]) -> int:
    from neuface_jax import detect

    return int(detect.fetch_models_main(argv[1:]) or 0)


COMMANDS = {
    "demo": demo_main,
    "synth": synth_main,
    "fetch-models": fetch_models_main,
    "annotate": annotate_main,
    "manifest": manifest_main,
    "annotate-dataset": annotate_dataset_main,
    "report": report_main,
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    # Orbax logs every checkpoint read at INFO through absl; the commands report what matters.
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(USAGE.strip())
        return 0 if len(argv) >= 2 else 2
    command = argv[1]
    if command not in COMMANDS:
        sys.stderr.write(f"neuface-jax: unknown command {command!r}\n\n{USAGE.strip()}\n")
        return 2
    return COMMANDS[command]([f"neuface-jax {command}"] + argv[2:])


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()
