"""The ``neuface-jax`` command: ``neuface-jax <command> [--flags]``.

Commands:
  demo          synthetic 3-view clip → direct baseline and NeuFace → table, params.npz,
                metrics.json, overlay.mp4 (the embedded default: no FLAME file, no video)
  synth         write a synthetic clip with ground truth (one mp4 per view, landmarks, truth)
  fetch-models  download the MediaPipe face landmarker and check its SHA-256

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
    """Synthetic 3-view clip → direct baseline vs NeuFace; writes params.npz, metrics.json, overlay.mp4."""
    fv = flags.FlagValues()
    flags.DEFINE_string("out", "./neuface_demo", "Output folder.", flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Clip seed.", flag_values=fv)
    flags.DEFINE_integer("frames", 40, "Frames of the synthetic clip.", flag_values=fv)
    flags.DEFINE_string("views", "3", "Camera rig: mono, 3, mead, MEAD view names or yaw:pitch pairs.", flag_values=fv)
    flags.DEFINE_integer("epochs", 100, "Optimization epochs over the chunks (reference: 100).", flag_values=fv)
    flags.DEFINE_integer("chunk_frames", 20, "Frames per chunk (reference: 20).", flag_values=fv)
    flags.DEFINE_float("lr", 1e-3, "NeuFace learning rate (randomly initialized small encoder).", flag_values=fv)
    flags.DEFINE_float("direct_lr", 1e-2, "Direct-optimization learning rate.", flag_values=fv)
    flags.DEFINE_list("methods", ["direct", "neuface"], "Methods to run.", flag_values=fv)
    flags.DEFINE_bool("video", True, "Write overlay.mp4.", flag_values=fv)
    flags.DEFINE_bool("objs", False, "Write one OBJ per frame and view.", flag_values=fv)
    _help_requested(argv, fv, "neuface-jax demo", demo_main.__doc__)
    _parse(fv, argv, "neuface-jax demo")

    from neuface_jax import pipeline

    start = time.perf_counter()
    print("neuface-jax demo: the demo head is a procedural stand-in for FLAME (no FLAME file needed).")
    cfg = pipeline.DemoConfig(
        seed=fv.seed,
        num_frames=fv.frames,
        views=fv.views,
        fit=pipeline.DemoConfig().fit.replace(
            num_epochs=fv.epochs, chunk_frames=fv.chunk_frames, learning_rate=fv.lr, direct_learning_rate=fv.direct_lr,
            seed=fv.seed,
        ),
        methods=tuple(fv.methods),
    )
    out = pipeline.run_synthetic(
        cfg, out_dir=fv.out, write_video=fv.video, write_objs=fv.objs, progress_factory=_progress_factory()
    )
    print()
    print(pipeline.format_table(out["metrics"]))
    print()
    print("units: nme %, msi mm^-2 frame^4 (higher = smoother), jitter mm/frame^2, cvd mm, vertex error mm")
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


# --------------------------------------------------------------------------- dispatch
def fetch_models_main(argv: list[str]) -> int:
    from neuface_jax import detect

    return int(detect.fetch_models_main(argv[1:]) or 0)


COMMANDS = {"demo": demo_main, "synth": synth_main, "fetch-models": fetch_models_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
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
