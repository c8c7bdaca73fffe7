"""neuface-jax live: a camera, video file or stream → tracked FLAME parameters, a window or an overlay mp4."""

from __future__ import annotations

import sys

from absl import flags

from neuface_jax.cli import flags as flags_lib
from neuface_jax.cli.common import missing, parse_command
from neuface_jax.common import log as log_lib
from neuface_jax.media import landmarker as landmarker_lib
from neuface_jax.realtime import filters as filters_lib
from neuface_jax.realtime import live as live_lib
from neuface_jax.realtime import regressor as regressor_lib
from neuface_jax.realtime import sources as sources_lib
from neuface_jax.realtime import track as track_lib

PROG = "neuface-jax live"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("source", None, "A camera index (0), a video file or a stream URL (rtsp://, http://...).",
                        flag_values=fv)
    flags_lib.define(fv, track_lib.TrackConfig)
    flags_lib.define(fv, filters_lib.OneEuroConfig)
    flags_lib.define(fv, regressor_lib.HeadFit)
    flags_lib.define(fv, live_lib.LiveConfig)


def live_main(argv: list[str]) -> int:
    """Tracks a face live: detection, tracking, the regressor, One-Euro filtering.

    neuface-jax live --source 0|PATH|URL [--regressor DIR] [--show] [--out overlay.mp4]
        [--params out.npz|out.jsonl] [--redetect_every N] [--nostable_crop] [--nofilter] [--max_frames N]

    The face detector is BlazeFace from MediaPipe's face_landmarker.task (--face_landmarker, or
    $NEUFACE_FACE_LANDMARKER, or `neuface-jax fetch-models`). The regressor is a checkpoint from
    `neuface-jax train-regressor`. Prints per-stage median latencies and frames/s at the end.
    """
    fv = parse_command(argv, PROG, live_main.__doc__, _define)
    if missing(fv, PROG, "source"):
        return 2
    track_config = flags_lib.build(fv, track_lib.TrackConfig, one_euro=flags_lib.build(fv, filters_lib.OneEuroConfig),
                                   head_fit=flags_lib.build(fv, regressor_lib.HeadFit))
    config = flags_lib.build(fv, live_lib.LiveConfig)
    try:
        summary = live_lib.run_live(fv.source, track_config, config, progress=log_lib.progress_factory())
    except (FileNotFoundError, ValueError, RuntimeError, landmarker_lib.ModelNotFoundError) as e:
        kind = "source" if isinstance(e, sources_lib.SourceError) else "error"
        sys.stderr.write(f"{PROG}: {kind}: {e}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    if not summary.get("frames"):
        sys.stderr.write(f"{PROG}: no frames from {summary.get('source')} ({summary.get('end')})\n")
        return 1
    ms = ", ".join(f"{k} {v:.2f}" for k, v in summary["median_ms"].items())
    print(f"{summary['frames']} frames from {summary['source']} ({summary['end']}); face in "
          f"{100 * summary['valid_fraction']:.0f}%, detector on {summary['detector_runs']} frames")
    print(f"median ms per frame: {ms}; tracking {summary['tracking_frames_per_s']:.1f} frames/s"
          + (f"; overlay drawing {summary['overlay_median_ms']:.1f} ms" if "overlay_median_ms" in summary else ""))
    for name, path in summary["files"].items():
        print(f"wrote {name}: {path}")
    return 0
