"""neuface-jax annotate: real video(s) to FLAME meshes by NeuFace."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

from neuface_jax import annotation
from neuface_jax.annotation.config import OutputConfig, PrepareConfig, SetupConfig
from neuface_jax.cli import flags as flags_lib
from neuface_jax.cli.common import missing, parse_command
from neuface_jax.common import log as log_lib
from neuface_jax.media import detect, video

PROG = "neuface-jax annotate"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_list("video", None, "Input: video path(s) (comma-separated = synchronized views), a frame "
                      "folder or image(s).", flag_values=fv)
    flags.DEFINE_string("out", None, "Output folder (required).", flag_values=fv)
    flags.DEFINE_list("view_names", None, "One name per view (default: file stems, box names or view0, view1, "
                      "...).", flag_values=fv)
    flags.DEFINE_list("view_boxes", None, "Cut ONE composite video into views: x0:y0:x1:y1 (or "
                      "name=x0:y0:x1:y1) per view, half-open pixel boxes.", flag_values=fv)
    flags_lib.define(fv, SetupConfig)
    flags_lib.define_frame_range(fv)
    flags_lib.define(fv, PrepareConfig)
    flags_lib.define(fv, OutputConfig)


def _report(summary, out: str, start: float) -> None:
    tp = summary["throughput"]
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in summary["seconds"].items() if k != "total")
    print(
        f"preprocessing (decode + detect): {tp['preprocess_frames_per_s']:.1f} frames/s"
        f" ({tp['preprocess_view_frames_per_s']:.1f} view-frames/s{', cached landmarks' if tp['detection_cached'] else ''})"
    )
    print(f"timings: {secs}; total {time.perf_counter() - start:.1f}s")
    names = ", ".join(p.name for k, p in summary["files"].items())
    print(f"wrote {Path(out).resolve()}/{{{names}}}")
    print(f"meshes: neuface-jax export-meshes --params={summary['files']['params']} --format=ply --out=DIR")


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
    procedural stand-in for FLAME, not FLAME) is used. See neuface_jax/annotation/ for the contour
    choice (face.py: static frontal contour for MediaPipe jaw points by default) and the metrics
    (scoring.py). Every input (videos, model files, the MediaPipe model, --out) is checked before
    anything is built; a bad one exits with status 1 and a message naming it. Meshes from the
    result: neuface-jax export-meshes (docs/params_format.md).
    """
    fv = parse_command(argv, PROG, annotate_main.__doc__, _define)
    if missing(fv, PROG, "video", "out"):
        return 2
    start = time.perf_counter()
    output = flags_lib.build(fv, OutputConfig)
    run = annotation.annotate_shots if output.split_at_cuts else annotation.annotate
    try:
        result = run(
            fv.video, out_dir=fv.out, setup=flags_lib.build(fv, SetupConfig),
            prepare=flags_lib.build(fv, PrepareConfig, frames=flags_lib.frame_range(fv)),
            output=output, view_names=fv.view_names, view_boxes=fv.view_boxes,
            progress=log_lib.progress_factory(),
        )
    except (detect.NoFaceError, video.VideoError, detect.ModelNotFoundError, FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    for summary in result if isinstance(result, list) else [result]:
        _report(summary, summary["out_dir"], start)
    return 0
