"""neuface-jax export-meshes: a params.npz's meshes as OBJ, binary PLY or one npz per view."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

from neuface_jax import params as params_lib
from neuface_jax.cli.common import missing, parse_command
from neuface_jax.common import log as log_lib

PROG = "neuface-jax export-meshes"


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("params", None, "params.npz written by annotate, annotate-dataset or demo (required).",
                        flag_values=fv)
    flags.DEFINE_string("model", None, "The FLAME model file it was fitted with (checked by SHA-256; default: the "
                        "demo head for a demo-head file, else the model path recorded in the file).", flag_values=fv)
    flags.DEFINE_enum("format", "ply", list(params_lib.FORMATS), "obj (text), ply (binary) or npz (vertices "
                      "[frames, V, 3] and faces once, one file per view).", flag_values=fv)
    flags.DEFINE_string("frames", None, "Rows of the file to export: N, A:B, A:B:STEP, comma-separated (half-open, "
                        "0-based rows, not source frame numbers; default all).", flag_values=fv)
    flags.DEFINE_enum("space", "model", list(params_lib.SPACES), "model: FLAME's frame (metres, fitted head pose); "
                      "camera: the fitted weak-perspective camera per view (normalized crop frame, y up); image: "
                      "the view's original pixels (y down).", flag_values=fv)
    flags.DEFINE_bool("verify_model", True, "Check --model against the SHA-256 recorded in the file.", flag_values=fv)
    flags.DEFINE_string("out", None, "Output folder (required).", flag_values=fv)


def export_meshes_main(argv: list[str]) -> int:
    """A params.npz's meshes, evaluated with FLAME (or the demo head) and written per view.

    neuface-jax export-meshes --params params.npz [--model F] --format obj|ply|npz
        [--frames 0:10,15] [--space model|camera|image] --out DIR

    obj/ply: DIR/<view>/frame_<row>.<ext> (binary little-endian PLY); npz: DIR/<view>.npz with
    vertices [frames, V, 3], faces [F, 3] once, frames, frame_indices (source frame numbers), valid.
    A file fitted with a FLAME model records the model file's path and SHA-256: --model must be that
    file (the recorded path is used when it still exists). The file format: docs/params_format.md;
    in Python: neuface_jax.load_params / neuface_jax.params.vertices.
    """
    fv = parse_command(argv, PROG, export_meshes_main.__doc__, _define)
    if missing(fv, PROG, "params", "out"):
        return 2
    start = time.perf_counter()
    try:
        record = params_lib.load_params(fv.params)
        with log_lib.progress_factory()("meshes", record.num_frames) as bar:
            files = params_lib.export_meshes(
                record, fv.out, fv.model, fmt=fv.format, frames=fv.frames, space=fv.space,
                verify=fv.verify_model, progress=bar.callback(),
            )
    except (OSError, ValueError) as e:  # ParamsError, UnsafeModelFileError: ValueErrors
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    print(f"wrote {len(files)} {fv.format} file(s) for {record.num_views} view(s) ({', '.join(record.view_names)}) "
          f"in {fv.space} space to {Path(fv.out).resolve()} in {time.perf_counter() - start:.1f}s")
    return 0
