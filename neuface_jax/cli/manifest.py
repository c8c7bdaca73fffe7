"""neuface-jax manifest: a folder tree of clips to a jsonl manifest."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from absl import flags

from neuface_jax.cli.common import help_requested, parse, progress_factory
from neuface_jax.dataset.manifest import LAYOUTS, build_manifest, logger, write_manifest


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
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False

    bar = None
    progress = None
    if fv.probe_frames:
        from tqdm.auto import tqdm

        bar = tqdm(desc="probe", total=0, dynamic_ncols=True, disable=None, mininterval=0.5)

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

    try:
        entries = build_manifest(fv.root, layout=fv.layout, probe_frames=fv.probe_frames,
                                 probe_workers=fv.probe_workers, progress=progress)
        out = write_manifest(entries, fv.out)
    except (ValueError, OSError) as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 1
    finally:
        if bar is not None:
            bar.close()
    kinds = {}
    for e in entries:
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    by_kind = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
    views = sum(e.num_views for e in entries)
    print(f"wrote {len(entries)} clips ({by_kind}; {views} views) to {Path(out).resolve()}")
    return 0

