"""neuface-jax annotate-dataset: a manifest of clips annotated at dataset scale."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

from neuface_jax.annotation.config import OutputConfig, PrepareConfig
from neuface_jax.cli import flags as flags_lib
from neuface_jax.cli.annotate import define_model_and_fit_flags
from neuface_jax.cli.common import help_requested, parse
from neuface_jax.common import log as log_lib
from neuface_jax.dataset.config import DatasetConfig


def annotate_dataset_main(argv: list[str]) -> int:
    """A manifest of clips → FLAME meshes by NeuFace, at dataset scale.

    neuface-jax annotate-dataset --manifest FILE --out DIR [--shard_id I --num_shards N]
        [--clips_per_device K] [--retry_failed] [--distributed] [annotate's model/encoder flags]

    Writes <out>/<clip_id>/{params.npz, metrics.json, done.json} (atomically; done.json last),
    failures.jsonl, summary-<shard>-of-<N>.json and report.{json,md}. Re-running the same command
    skips completed clips and resumes checkpointed groups; --retry_failed re-runs only the failed
    clips. See neuface_jax/dataset/runner.py.
    """
    from neuface_jax.annotation import pipeline as annotate_lib

    fv = flags.FlagValues()
    s, i, f, b, ls, en = (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float, flags.DEFINE_bool,
                          flags.DEFINE_list, flags.DEFINE_enum)
    s("manifest", None, "Manifest jsonl (neuface-jax manifest).", flag_values=fv)
    s("out", None, "Output root.", flag_values=fv)
    i("shard_id", 0, "This job's shard (0-based).", flag_values=fv)
    i("num_shards", 1, "Number of shards (stable hash of the clip id).", flag_values=fv)
    b("retry_failed", False, "Run only the clips recorded in failures.jsonl (and not completed since).",
      flag_values=fv)
    flags_lib.define(fv, DatasetConfig)
    define_model_and_fit_flags(fv)
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
    help_requested(argv, fv, "neuface-jax annotate-dataset", annotate_dataset_main.__doc__)
    parse(fv, argv, "neuface-jax annotate-dataset")
    prog = "neuface-jax annotate-dataset"
    log_lib.configure()
    if not fv.manifest or not fv.out:
        sys.stderr.write(f"{prog}: --manifest and --out are required (see --help)\n")
        return 2

    from neuface_jax import dataset
    from neuface_jax.media import detect
    from neuface_jax.media.video import FrameRange

    if fv.compilation_cache:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(Path(fv.compilation_cache).expanduser().absolute()))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if fv.distributed:
        pidx, pcount = dataset.init_distributed(fv.coordinator_address, fv.num_processes, fv.process_id)
        print(f"{prog}: process {pidx} of {pcount}")
    try:
        entries = dataset.read_manifest(fv.manifest)
        prepare = PrepareConfig(frames=FrameRange(stride=fv.stride), fps=fv.fps, strict=fv.strict,
                                use_cache=fv.cache, cache_dir=fv.cache_dir)
        output = OutputConfig(write_video=fv.overlay, write_objs=fv.objs)
        cfg = flags_lib.build(fv, DatasetConfig, prepare=prepare, output=output)
        need_mp = any(e.landmarks is None for e in entries)
        setup = annotate_lib.make_setup(
            flame_model=fv.flame_model, landmark_embedding=fv.landmark_embedding, landmark_set=fv.landmark_set,
            contour=fv.contour, face_landmarker=fv.face_landmarker, epochs=fv.epochs, chunk_frames=fv.chunk_frames,
            learning_rate=fv.lr, encoder=fv.encoder, seed=fv.seed, need_landmarker=need_mp,
        )
        summary = dataset.run(
            entries, fv.out, setup, cfg, shard_id=fv.shard_id, num_shards=fv.num_shards,
            retry_failed=fv.retry_failed, progress=log_lib.progress_factory(), report=fv.report,
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

