"""neuface-jax annotate-dataset: a manifest of clips annotated at dataset scale."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import jax
from absl import flags

from neuface_jax import annotation, dataset
from neuface_jax.annotation.config import OutputConfig, PrepareConfig, SetupConfig
from neuface_jax.annotation.preflight import check_setup_files
from neuface_jax.cli import flags as flags_lib
from neuface_jax.cli.common import missing, parse_command
from neuface_jax.common import log as log_lib
from neuface_jax.dataset import ray_engine
from neuface_jax.dataset.config import DatasetConfig
from neuface_jax.media import detect

PROG = "neuface-jax annotate-dataset"


def _define(fv: flags.FlagValues) -> None:
    s, i, b = flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_bool
    s("manifest", None, "Manifest jsonl (neuface-jax manifest).", flag_values=fv)
    s("out", None, "Output root.", flag_values=fv)
    i("shard_id", 0, "This job's shard (0-based).", flag_values=fv)
    i("num_shards", 1, "Number of shards (stable hash of the clip id).", flag_values=fv)
    b("retry_failed", False, "Run only the clips recorded in failures.jsonl (and not completed since).",
      flag_values=fv)
    flags_lib.define(fv, DatasetConfig)
    flags_lib.define(fv, ray_engine.EngineConfig)
    flags_lib.define(fv, SetupConfig, exclude=("warm_compile",))  # groups compile per bucket
    flags_lib.define_frame_range(fv, only=("stride",))  # clips are taken whole
    flags_lib.define(fv, PrepareConfig)
    flags_lib.define(fv, OutputConfig, defaults=dataclasses.asdict(DatasetConfig().output),
                     exclude=("split_at_cuts",))  # a manifest's clips are taken whole
    b("distributed", False, "Call jax.distributed.initialize (TPU pods, Slurm, Kubernetes) and shard by process.",
      flag_values=fv)
    s("coordinator_address", None, "With --distributed: host:port of process 0 (default: auto-detect).",
      flag_values=fv)
    i("num_processes", None, "With --distributed: process count (default: auto-detect).", flag_values=fv)
    i("process_id", None, "With --distributed: this process (default: auto-detect).", flag_values=fv)
    b("report", True, "Write report.json / report.md at the end.", flag_values=fv)
    s("compilation_cache", None, "JAX persistent compilation cache folder: every process and re-run of the job "
      "reuses compiled steps instead of compiling its buckets again.", flag_values=fv)


def _use_compilation_cache(folder: str) -> None:
    jax.config.update("jax_compilation_cache_dir", str(Path(folder).expanduser().absolute()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def annotate_dataset_main(argv: list[str]) -> int:
    """A manifest of clips → FLAME meshes by NeuFace, at dataset scale.

    neuface-jax annotate-dataset --manifest FILE --out DIR [--shard_id I --num_shards N]
        [--clips_per_device K] [--retry_failed] [--distributed] [annotate's model/encoder flags]
        [--engine ray [--ray_address auto|HOST:PORT] [--ray_actors N] [--workers N]]

    Writes <out>/<clip_id>/{params.npz, metrics.json, done.json} (atomically; done.json last),
    failures.jsonl, summary-<shard>-of-<N>.json and report.{json,md}. Re-running the same command
    skips completed clips, resumes checkpointed groups and re-runs clips whose failure was
    transient (no space, I/O errors); --retry_failed re-runs all failed clips. --out is checked
    writable before any work and leased per shard (<out>/_locks): a second run of the same clips
    refuses, naming the holder's host and pid. See neuface_jax/dataset/.

    Exit status (also "exit_code" and "outcome" in the summary JSON):
      0  every clip of the shard is done
      1  an error before any clip ran (bad manifest, --out not writable or in use, missing models)
      2  a usage error
      3  some clips of the shard failed (in this run, or before and skipped; see failures.jsonl)
      4  every clip of the shard failed
    """
    fv = parse_command(argv, PROG, annotate_dataset_main.__doc__, _define)
    if missing(fv, PROG, "manifest", "out"):
        return 2
    if fv.compilation_cache:
        _use_compilation_cache(fv.compilation_cache)
    engine = flags_lib.build(fv, ray_engine.EngineConfig)
    if engine.engine == "ray" and fv.distributed:
        sys.stderr.write(f"{PROG}: --engine=ray and --distributed are two ways to spread one run; choose one\n")
        return 2
    if engine.engine == "ray":  # the setup below must not take a whole GPU on the driver's machine
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if fv.distributed:
        pidx, pcount = dataset.init_distributed(fv.coordinator_address, fv.num_processes, fv.process_id)
        print(f"{PROG}: process {pidx} of {pcount}")
    try:
        entries = dataset.read_manifest(fv.manifest)
        need_mp = any(e.landmarks is None for e in entries)
        setup_config = flags_lib.build(fv, SetupConfig)
        check_setup_files(setup_config, need_landmarker=need_mp)  # before anything is created or built
        out = dataset.prepare_output(fv.out)
        cfg = flags_lib.build(
            fv, DatasetConfig, prepare=flags_lib.build(fv, PrepareConfig, frames=flags_lib.frame_range(fv)),
            output=flags_lib.build(fv, OutputConfig),
        )
        setup = annotation.make_setup(setup_config, need_landmarker=need_mp)
        run_kw = dict(shard_id=fv.shard_id, num_shards=fv.num_shards, retry_failed=fv.retry_failed,
                      progress=log_lib.progress_factory(), report=fv.report)
        if engine.engine == "ray":
            summary = ray_engine.run(entries, out, setup, cfg, engine, **run_kw)
        else:
            summary = dataset.run(entries, out, setup, cfg, **run_kw)
    except (detect.ModelNotFoundError, FileNotFoundError, ImportError, ValueError, dataset.OutputError) as e:
        sys.stderr.write(f"{PROG}: error: {e}\n")
        return 1
    print(
        f"{PROG}: {summary.done} done, {summary.failed} failed, {summary.skipped_done} skipped (done before), "
        f"{summary.skipped_failed} skipped (failed before) in {summary.seconds:.1f}s"
        f" = {summary.clips_per_hour:.0f} clips/hour; outputs in {out}"
    )
    if summary.exit_code:
        sys.stderr.write(f"{PROG}: {dataset.OUTCOMES[summary.exit_code]} (exit status {summary.exit_code})\n")
    return summary.exit_code
