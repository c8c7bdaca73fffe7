"""neuface-jax manifest: a folder tree of clips to a jsonl manifest."""

from __future__ import annotations

import collections
import contextlib
import sys
from pathlib import Path

from absl import flags

from neuface_jax.cli.common import help_requested, parse
from neuface_jax.common import log as log_lib
from neuface_jax.dataset.manifest import LAYOUTS, build_manifest, write_manifest


def manifest_main(argv: list[str]) -> int:
    """Lists the clips of a dataset folder as a JSON-lines manifest.

    neuface-jax manifest --root DIR --out FILE [--layout auto|mead|videos|frames|synth] [--probe_frames]

    Layouts: MEAD (<subject>/video/<view>/<emotion>/<level_k>/<take>.mp4, one clip per take with
    its views), one video per clip (VoxCeleb2, CelebV-HQ, any tree of .mp4/.avi/.mov/.mkv/.webm),
    frame folders (img_%04d_<view>.jpg, numbered frames, or one cam*/view*/MEAD-view sub-folder per
    view) and `neuface-jax synth` clip folders (clip.json); auto detects them per sub-tree. One JSON
    object per line, sorted by clip_id, written atomically; paths under FILE's folder are stored
    relative to it. --probe_frames counts every video's frames with ffmpeg (no decoding). See
    neuface_jax/dataset/manifest.py for the format.
    """
    fv = flags.FlagValues()
    flags.DEFINE_string("root", None, "Dataset folder to scan (required).", flag_values=fv)
    flags.DEFINE_string("out", None, "Manifest file to write (.jsonl; required).", flag_values=fv)
    flags.DEFINE_enum("layout", "auto", list(LAYOUTS), "Which layouts to look for (auto: all, detected per "
                      "sub-tree).", flag_values=fv)
    flags.DEFINE_bool("probe_frames", False, "Count every video's frames and read its frame rate with ffmpeg "
                      "(stream copy, no decoding).", flag_values=fv)
    flags.DEFINE_integer("probe_workers", None, "Parallel ffmpeg processes for --probe_frames "
                         "(default min(8, cpus)).", flag_values=fv)
    prog = "neuface-jax manifest"
    help_requested(argv, fv, prog, manifest_main.__doc__)
    parse(fv, argv, prog)
    if not fv.root or not fv.out:
        sys.stderr.write(f"{prog}: --root and --out are required (see --help)\n")
        return 2
    with contextlib.ExitStack() as stack:
        progress = None
        if fv.probe_frames:
            progress = stack.enter_context(log_lib.progress_factory()("probe", 0)).callback()
        try:
            entries = build_manifest(fv.root, layout=fv.layout, probe_frames=fv.probe_frames,
                                     probe_workers=fv.probe_workers, progress=progress)
            out = write_manifest(entries, fv.out)
        except (ValueError, OSError) as e:
            sys.stderr.write(f"{prog}: error: {e}\n")
            return 1
    print(f"wrote {len(entries)} clips ({counts_line(entries)}) to {Path(out).resolve()}")
    return 0


def counts_line(entries) -> str:
    """``"mead 1, video 2; 2 clips of 1 view, 1 clip of 3 views = 5 view streams"``: views are per clip,
    so three monocular clips are not "3 views"."""
    kinds = collections.Counter(e.kind for e in entries)
    per_clip = collections.Counter(e.num_views for e in entries)
    by_kind = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    shapes = ", ".join(f"{n} clip{'s' * (n != 1)} of {v} view{'s' * (v != 1)}" for v, n in sorted(per_clip.items()))
    streams = sum(e.num_views for e in entries)
    return f"{by_kind}; {shapes} = {streams} view stream{'s' * (streams != 1)}"

