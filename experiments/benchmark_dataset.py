r"""Clips/hour of the dataset runner (``neuface-jax annotate-dataset``) for K packed clips.

What is timed is ``neuface_jax.dataset.run`` — the runner ``annotate-dataset`` calls — in-process,
end to end: background preparation (mp4 decode, precomputed landmarks, crops), bucketing, packed
optimization (``parallel.fit_packed``: K clips per device, vmap over stacked encoder weights),
atomic writes of ``params.npz`` / ``metrics.json`` / ``done.json`` and the quality report. One run
per K = ``clips_per_device`` in ``--ks``, each into a fresh output folder, on the same clips.

Data: ``--clips`` synthetic clips of the demo head (``neuface_jax.synthetic.synth``, what ``neuface-jax synth``
writes: one mp4 per view + ``landmarks.npz``, which the runner reads instead of running MediaPipe),
lengths ``--frames`` ± ``--frames_spread`` (deterministic per clip, so several length buckets are
used), ``--size`` pixels, ``--views`` rig. They are written once into ``--data_dir`` and reused by
later runs; the manifest comes from ``manifest.build_manifest`` (synth layout). The optimizer is
annotate's small configuration (``annotation.make_setup`` defaults: ``EncoderConfig.small``, 64² crops,
and whatever initial encoder and learning rate annotate picks for the demo head: the packaged
pretrained small encoder, or a random init without it or with ``--encoder=random`` or
``--encoder_size``/``--small_*``; the JSON records which) with ``contour="dynamic"`` (the
synthetic contour follows the silhouette), ``--epochs`` epochs, ``--chunk_frames`` frames per chunk.
The compute per step does not depend on the initial weights.

Compilation is measured apart from throughput. Before each K's timed run, the same runner runs a
**warm-up**: one clip of each length bucket, 1 epoch, into a throw-away folder. A group is always
padded to K·devices slots and to its bucket's length, so the warm-up compiles the shapes the timed
run's optimization needs (the packed step depends on K and the chunk only; the export on K and the
bucket); the compiled steps are keyed by the settings without the epoch count
(``FitConfig.compile_key``), so the timed run (``--epochs``) finds the executables in jit's cache. ``compile_s`` is what JAX reports (``jax.monitoring``: jaxpr
tracing + lowering to MLIR + XLA backend compile) during the warm-up. The first K's warm-up also
pays one-time compiles shared by every K (encoder init, eager ops).

The runner also compiles per distinct *clip length* (not per bucket): ``fit.pad_clip``'s eager
concatenations in ``fit_packed``, a ``stage`` op in preparation and ``flame_jax.landmarks`` in the
metrics of ``write_outputs`` see the unpadded length. Left in the timed runs, these compiles would
fall on the first K only (the caches are shared by every K) and bias the speedups, so after the
first K's warm-up a **per-length warm-up** runs one clip of every length not yet seen (1 epoch) and
is reported on its own (``per_length_warmup``: compile seconds per new length). A dataset pays this
once per distinct length, so it vanishes at scale. ``compile_s_in_timed_run`` is what still
compiles during a timed run and should be ~0. ``--nowarmup`` times cold runs instead (every compile
inside the figures, on the first K mostly).

Per K: wall seconds of ``dataset.run`` and clips/hour end to end; the optimization stage alone
(``summary.seconds_by_stage["fit"]``: ``fit_packed`` calls, including host→device copies and the
export; preparation and writing overlap it in threads) and its clips/hour; groups and buckets;
occupancy (real frames / frame slots computed = Σ groups × bucket frames × slots: dummy slots and
padding are waste); peak RSS of the process during the timed run (VmHWM reset before it); load
averages; speedups vs K=1 measured in the same invocation. Correctness: every clip's
``params.npz`` at each K is compared with K=1 (max |Δ| of cam, full_pose, expr, shapes, and the
predicted 2D landmarks in pixels), both after the 1-epoch warm-up (the same clips at every K) and
after the timed run's ``--epochs``. The **check** is the 1-epoch comparison: K=``--check_k`` must
equal K=1 to float precision (``--check_tol_1epoch``). After many epochs the runs differ more, and
that is expected: K=1 runs plain convolutions, K ≥ 2 the grouped convolutions that vmap over
per-clip weights lowers to (a different grouping per K), so the sums run in another order; Adam,
whose early steps move weights by about the learning rate whatever the gradient's size, amplifies
that float noise over the epochs (the unpacked single-clip path ``fit.NeuFace.fit`` drifts from
packed K=1 by the same order while it equals it after one epoch). Those figures are reported (``vs_k1``, ``packed_consistency``, and
``within_tol_after_epochs`` against ``--check_tol`` / ``--check_tol_px``) but do not decide the
check.

    python experiments/benchmark_dataset.py --epochs=10    # the CPU figures
    python experiments/benchmark_dataset.py                # defaults (20 epochs)
    python experiments/benchmark_dataset.py --clips=64     # e.g. on a GPU

On a CPU packing is *slower* per clip: XLA:CPU runs the grouped convolutions of a vmap over
per-clip weights slower than K plain ones, and there is no idle hardware for packing to fill.
Packing is meant for accelerators.

Prints a Markdown table and a one-line ``SUMMARY``; writes JSON to --out (default
``experiments/results/benchmark_dataset_<platform>.json``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

import flame_jax
from neuface_jax import annotation, dataset
from neuface_jax.common import log as log_lib
from neuface_jax.synthetic import synth

FLAGS = flags.FLAGS
flags.DEFINE_list("ks", ["1", "2", "4", "8"], "Clips per device (K) to measure, in order; K=1 is the reference.")
flags.DEFINE_integer("clips", 16, "Number of synthetic clips.")
flags.DEFINE_integer("frames", 40, "Mean clip length (frames).")
flags.DEFINE_integer("frames_spread", 6, "Clip lengths are frames ± up to this (deterministic per clip), so that "
                     "clips fall into several length buckets.")
flags.DEFINE_string("views", "mono", "Camera rig of the synthetic clips (mono, 3, mead, names, yaw:pitch pairs).")
flags.DEFINE_integer("size", 128, "Rendered image size (pixels) of the synthetic clips.")
flags.DEFINE_integer("epochs", 20, "NeuFace epochs per clip.")
flags.DEFINE_integer("chunk_frames", 20, "Frames per chunk (one Adam step per chunk).")
flags.DEFINE_list("bucket_chunks", None, "Padded lengths in chunks (default: DatasetConfig's).")
flags.DEFINE_integer("workers", 2, "Preparation threads (DatasetConfig.workers).")
flags.DEFINE_integer("encoder_size", None, "Encoder input size (default: annotate's small encoder, 64).")
flags.DEFINE_list("small_widths", None, "Override the small encoder's stage widths (tests: e.g. 4,8).")
flags.DEFINE_integer("small_head", None, "Override the small encoder's head width (tests).")
flags.DEFINE_bool("warmup", True, "Compile each K on a warm-up set first (1 clip per bucket, 1 epoch) so that the "
                  "timed run measures throughput; --nowarmup times cold runs.")
flags.DEFINE_string("encoder", None, "Initial encoder: None = annotate's default for the demo head (with "
                    "--encoder_size/--small_* overrides: a random init), 'random', or a checkpoint folder.")
flags.DEFINE_integer("check_k", 4, "K whose results are checked against K=1's.")
flags.DEFINE_float("check_tol_1epoch", 1e-4, "Tolerance (max abs params difference) of K=--check_k vs K=1 after the "
                   "1-epoch warm-up: float-precision agreement.")
flags.DEFINE_float("check_tol", 1e-2, "Informational tolerance (max abs params difference) of K=--check_k vs K=1 "
                   "after --epochs epochs (Adam amplifies float-level differences; see the module docstring).")
flags.DEFINE_float("check_tol_px", 0.25, "Informational tolerance of the same comparison on the predicted 2D "
                   "landmarks (pixels).")
flags.DEFINE_string("data_dir", "/tmp/neuface_bench_dataset", "Cache folder of the synthetic clips (reused).")
flags.DEFINE_string("work_dir", None, "Where the runs write their outputs (default: a temporary folder, removed "
                    "at the end unless --keep_outputs).")
flags.DEFINE_bool("keep_outputs", False, "Keep the runs' output folders.")
flags.DEFINE_integer("seed", 0, "Seed offset of the synthetic clips.")
flags.DEFINE_bool("verbose", False, "Print the runner's messages.")
flags.DEFINE_string("out", None, "JSON output (default $TMPDIR/neuface_jax_benchmarks/; the committed tables: --out=experiments/results/benchmark_dataset_<platform>.json).")

MB = 2**20
_COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "backend",
}
PARAM_KEYS = ("cam", "full_pose", "expr", "shapes")


# --------------------------------------------------------------------------- measurement helpers
class _CompileClock:
    """Accumulates JAX's compile-time events (seconds and backend compile count)."""

    def __init__(self):
        self.seconds = collections.Counter()
        self.backend_compiles = 0

        def listener(event, duration, **kwargs):
            name = _COMPILE_EVENTS.get(event)
            if name is not None:
                self.seconds[name] += float(duration)
                if name == "backend":
                    self.backend_compiles += 1

        jax.monitoring.register_event_duration_secs_listener(listener)

    def snapshot(self):
        return dict(self.seconds), self.backend_compiles

    def since(self, snap) -> dict:
        secs, n = snap
        d = {k: self.seconds[k] - secs.get(k, 0.0) for k in _COMPILE_EVENTS.values()}
        return {"total_s": sum(d.values()), **{f"{k}_s": v for k, v in d.items()},
                "backend_compiles": self.backend_compiles - n}


def _reset_peak_rss() -> bool:
    """Resets the process's VmHWM (Linux ≥ 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return None


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _git_state() -> dict:
    """HEAD and the modified tracked files of the checkout (the figures depend on the code)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True, timeout=10)
        return {"head": head.stdout.strip() or None,
                "modified": [line[3:] for line in dirty.stdout.splitlines() if line.strip()]}
    except (OSError, subprocess.SubprocessError):
        return {"head": None, "modified": None}


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# --------------------------------------------------------------------------- data
def clip_lengths(n: int, frames: int, spread: int, seed: int) -> list[int]:
    """Deterministic per-clip lengths frames ± spread (at least 2 frames)."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        out.append(max(2, frames + int(rng.integers(-spread, spread + 1))))
    return out


def make_data(data_dir: Path, n: int, frames: int, spread: int, views: str, size: int, seed: int):
    """Writes the missing synthetic clips under ``data_dir/<views>_<size>px/`` (each atomically: a hidden
    temporary folder renamed into place) and returns (manifest entries of exactly these clips, seconds
    spent generating, clips generated)."""
    root = data_dir / f"{views.replace(',', '+').replace(':', '_')}_{size}px"
    root.mkdir(parents=True, exist_ok=True)
    names = []
    made = 0
    t0 = time.perf_counter()
    for i, t in enumerate(clip_lengths(n, frames, spread, seed)):
        name = f"clip_{seed + i:04d}_{t:03d}f"
        names.append(name)
        final = root / name
        if (final / "clip.json").is_file():
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        clip = synth.synthesize_clip(seed=seed + i, rig=views, config=synth.SynthConfig(num_frames=t, image_size=size))
        synth.write_clip(clip, tmp)
        if final.exists():  # a half-written folder of a killed run (no clip.json)
            shutil.rmtree(final)
        os.replace(tmp, final)
        made += 1
        print(f"  synth {name}: {t} frames x {clip.num_views} view(s) at {size}px")
    gen_s = time.perf_counter() - t0
    entries = dataset.build_manifest(root, layout="synth")
    wanted = set(names)
    entries = [e for e in entries if e.clip_id in wanted]
    if len(entries) != n:
        raise RuntimeError(f"manifest of {root} has {len(entries)} of the {n} clips {sorted(wanted)[:3]}...")
    return entries, gen_s, made, root


def warmup_entries(entries, chunk: int, bucket_chunks) -> list:
    """One clip per length bucket (groups are padded to K slots, so one clip compiles a bucket's shapes)."""
    seen = {}
    for e in entries:
        b = dataset.bucket_frames(int(e.num_frames), chunk, bucket_chunks)
        seen.setdefault((e.num_views, b), e)
    return list(seen.values())


# --------------------------------------------------------------------------- the benchmark
def _setup(epochs: int):
    enc_cfg = None
    over = {}
    if FLAGS.encoder_size:
        over["image_size"] = FLAGS.encoder_size
    if FLAGS.small_widths:
        widths = tuple(int(w) for w in FLAGS.small_widths)
        over.update(small_widths=widths, small_blocks=(1,) * len(widths))
    if FLAGS.small_head:
        over["head_hidden"] = FLAGS.small_head
    if over:
        enc_cfg = dataclasses.replace(annotation.default_encoder_config(flame_jax.demo_model()), **over)
    config = annotation.SetupConfig(contour="dynamic", epochs=epochs, chunk_frames=FLAGS.chunk_frames,
                                    encoder=FLAGS.encoder)
    return annotation.make_setup(config, encoder_config=enc_cfg, need_landmarker=False)


def _occupancy(summary, entries, slots: int) -> float:
    """Real frames / frame slots computed (every group runs slots × its bucket's frames)."""
    done = set(summary.done_ids)
    real = sum(int(e.num_frames) * e.num_views for e in entries if e.clip_id in done)
    computed = 0
    for key, count in summary.buckets.items():
        views, frames = key.split(" x ")
        computed += count * slots * int(views.rstrip("v")) * int(frames.rstrip("f"))
    return real / computed if computed else float("nan")


def _compare(dir_a: Path, dir_b: Path, clip_ids) -> dict:
    """Max abs differences of each clip's params.npz between two runs."""
    per_clip = {}
    for cid in clip_ids:
        pa, pb = dir_a / cid / "params.npz", dir_b / cid / "params.npz"
        if not (pa.is_file() and pb.is_file()):
            per_clip[cid] = None
            continue
        with np.load(pa) as a, np.load(pb) as b:
            per_clip[cid] = {
                "params": max(float(np.abs(a[k] - b[k]).max()) for k in PARAM_KEYS),
                **{k: float(np.abs(a[k] - b[k]).max()) for k in PARAM_KEYS},
                "landmarks2d_px": float(np.abs(a["predicted_landmarks2d"] - b["predicted_landmarks2d"]).max()),
            }
    done = [v for v in per_clip.values() if v is not None]
    return {
        "clips_compared": len(done),
        "clips_missing": [c for c, v in per_clip.items() if v is None],
        "max_abs_params": max((v["params"] for v in done), default=float("nan")),
        "max_abs_landmarks2d_px": max((v["landmarks2d_px"] for v in done), default=float("nan")),
        **{f"max_abs_{k}": max((v[k] for v in done), default=float("nan")) for k in PARAM_KEYS},
    }


def run_k(k: int, entries, setup, warm_setup, work: Path, clock: _CompileClock, bucket_chunks,
          length_warmup: bool = False) -> dict:
    cfg_kw = {"clips_per_device": k, "workers": FLAGS.workers}
    if bucket_chunks is not None:
        cfg_kw["bucket_chunks"] = tuple(bucket_chunks)
    cfg = dataset.DatasetConfig(**cfg_kw)
    n_dev = len(jax.local_devices())
    row: dict = {"k": k, "slots": k * n_dev, "devices": n_dev}
    chunk = setup.fit_config.chunk_frames
    if FLAGS.warmup:
        warm = warmup_entries(entries, chunk, cfg.bucket_chunks)
        snap = clock.snapshot()
        t0 = time.perf_counter()
        s = dataset.run(warm, work / f"warmup_k{k}", warm_setup, cfg, report=False)
        row["warmup_wall_s"] = time.perf_counter() - t0
        row["warmup_clips"] = len(warm)
        row["warmup_failed"] = s.failed
        row["compile"] = clock.since(snap)
        row["compile_s"] = row["compile"]["total_s"]
        row["warmup_dir"] = str(work / f"warmup_k{k}")
        if length_warmup:
            # Clips of lengths not seen yet still compile a few small per-length functions (see
            # the module docstring); run one clip of each such length once, and report it apart.
            seen = {(e.num_views, int(e.num_frames)) for e in warm}
            rest = {}
            for e in entries:
                if (e.num_views, int(e.num_frames)) not in seen:
                    rest.setdefault((e.num_views, int(e.num_frames)), e)
            snap = clock.snapshot()
            t0 = time.perf_counter()
            failed = 0
            if rest:
                failed = dataset.run(list(rest.values()), work / "warmup_lengths", warm_setup, cfg,
                                     report=False).failed
            comp = clock.since(snap)
            row["length_warmup"] = {
                "clips": len(rest), "failed": failed, "wall_s": time.perf_counter() - t0, "compile": comp,
                "compile_s": comp["total_s"],
                "compile_s_per_length": comp["total_s"] / len(rest) if rest else float("nan"),
                "backend_compiles_per_length": comp["backend_compiles"] / len(rest) if rest else float("nan"),
            }
            shutil.rmtree(work / "warmup_lengths", ignore_errors=True)
    out = work / f"k{k}"
    row["load_before"] = _loadavg()
    rss_reset = _reset_peak_rss()
    snap = clock.snapshot()
    t0 = time.perf_counter()
    summary = dataset.run(entries, out, setup, cfg, report=True)
    wall = time.perf_counter() - t0
    compile_run = clock.since(snap)
    row["load_after"] = _loadavg()
    row["peak_rss_mb"] = _peak_rss_mb() if rss_reset else None
    if not FLAGS.warmup:
        row["compile"] = compile_run
        row["compile_s"] = compile_run["total_s"]
    row["compile_s_in_timed_run"] = compile_run["total_s"]
    row["backend_compiles_in_timed_run"] = compile_run["backend_compiles"]
    stages = dict(summary.seconds_by_stage)
    fit_s = stages.get("fit", float("nan"))
    row.update({
        "done": summary.done, "failed": summary.failed, "groups": summary.groups, "buckets": dict(summary.buckets),
        "wall_s": wall, "runner_seconds": summary.seconds, "clips_per_hour": 3600.0 * summary.done / wall,
        "fit_s": fit_s, "fit_clips_per_hour": 3600.0 * summary.done / fit_s if fit_s > 0 else float("nan"),
        "seconds_by_stage": stages, "occupancy": _occupancy(summary, entries, row["slots"]),
        "output_dir": str(out),
    })
    return row


def _fmt_buckets(b: dict) -> str:
    return ", ".join(f"{v}×{k.replace(' ', '')}" for k, v in b.items())


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| K | slots | groups (buckets) | occupancy | wall s | clips/h | speedup | fit s | fit clips/h | fit speedup "
        "| compile s | peak RSS MiB | max abs Δparams vs K=1: 1 epoch / all epochs | load avg before → after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r.get("vs_k1", {})
        w = r.get("vs_k1_warmup_1epoch", {})
        diff = "ref" if r["k"] == rows[0]["k"] else (
            f"{w.get('max_abs_params', float('nan')):.1e} / {d.get('max_abs_params', float('nan')):.1e}")
        rss = "" if r.get("peak_rss_mb") is None else f"{r['peak_rss_mb']:.0f}"
        lines.append(
            f"| {r['k']} | {r['slots']} | {r['groups']} ({_fmt_buckets(r['buckets'])}) | {100 * r['occupancy']:.0f}% "
            f"| {r['wall_s']:.1f} | {r['clips_per_hour']:.0f} | {r['speedup']:.2f}x | {r['fit_s']:.1f} "
            f"| {r['fit_clips_per_hour']:.0f} | {r['fit_speedup']:.2f}x | {r.get('compile_s', float('nan')):.1f} "
            f"| {rss} | {diff} | {r['load_before']} → {r['load_after']} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    # The runner's messages: failures always (warnings), everything with --verbose.
    log_lib.configure(logging.INFO if FLAGS.verbose else logging.WARNING)
    ks = [int(k) for k in FLAGS.ks]
    if not ks or ks[0] != 1:
        raise app.UsageError("--ks must start with 1 (the reference every speedup is measured against)")
    bucket_chunks = [int(b) for b in FLAGS.bucket_chunks] if FLAGS.bucket_chunks else None
    clock = _CompileClock()
    devices = jax.devices()
    dev = devices[0]
    device_str = f"{dev.platform} {getattr(dev, 'device_kind', '')}".strip()
    load_start = _loadavg()
    uptime_start = _uptime()
    git_state = _git_state()
    print(f"jax.devices(): {devices}", flush=True)
    print(f"device: {device_str}; {len(jax.local_devices())} local device(s); jax {jax.__version__}; "
          f"{os.cpu_count()} CPUs; {uptime_start}", flush=True)

    data_dir = Path(FLAGS.data_dir)
    entries, gen_s, made, data_root = make_data(data_dir, FLAGS.clips, FLAGS.frames, FLAGS.frames_spread,
                                                FLAGS.views, FLAGS.size, FLAGS.seed)
    lengths = sorted(int(e.num_frames) for e in entries)
    print(f"data: {len(entries)} clips in {data_root} ({made} generated in {gen_s:.1f}s, "
          f"{len(entries) - made} reused); lengths {lengths}", flush=True)

    setup = _setup(FLAGS.epochs)
    warm_setup = _setup(1)
    # The compiled steps are keyed by these static settings (all but the epoch count and the seed).
    assert warm_setup.optimizer.static == setup.optimizer.static, "the warm-up must share the timed run's steps"
    work = Path(FLAGS.work_dir) if FLAGS.work_dir else Path(tempfile.mkdtemp(prefix="runs.", dir=data_dir))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows = []
        for k in ks:
            print(f"K={k}: {'warm-up + ' if FLAGS.warmup else ''}timed run ...", flush=True)
            row = run_k(k, entries, setup, warm_setup, work, clock, bucket_chunks, length_warmup=not rows)
            rows.append(row)
            if "length_warmup" in row:
                lw = row["length_warmup"]
                print(f"  per-length warm-up: {lw['clips']} more clip lengths compiled in {lw['compile_s']:.1f}s "
                      f"({lw['compile_s_per_length']:.2f}s, {lw['backend_compiles_per_length']:.1f} XLA compiles "
                      f"per new length)", flush=True)
            print(f"K={k}: {row['done']} done, {row['failed']} failed, {row['wall_s']:.1f}s wall = "
                  f"{row['clips_per_hour']:.0f} clips/h; fit {row['fit_s']:.1f}s = {row['fit_clips_per_hour']:.0f} "
                  f"clips/h; compile {row.get('compile_s', float('nan')):.1f}s "
                  f"(+{row['compile_s_in_timed_run']:.2f}s in the timed run); groups {row['groups']} "
                  f"{row['buckets']}; load {row['load_after']}", flush=True)
        ref = rows[0]
        ids = [e.clip_id for e in entries]
        for r in rows:
            r["speedup"] = r["clips_per_hour"] / ref["clips_per_hour"]
            r["fit_speedup"] = r["fit_clips_per_hour"] / ref["fit_clips_per_hour"]
            if r is not ref:
                r["vs_k1"] = _compare(Path(ref["output_dir"]), Path(r["output_dir"]), ids)
                if "warmup_dir" in r:
                    warm_ids = [p.name for p in Path(ref["warmup_dir"]).iterdir() if (p / "params.npz").is_file()]
                    r["vs_k1_warmup_1epoch"] = _compare(Path(ref["warmup_dir"]), Path(r["warmup_dir"]), warm_ids)
        packed = [r for r in rows if r["k"] > 1]
        consistency = {
            f"K={r['k']} vs K={packed[0]['k']}":
                _compare(Path(packed[0]["output_dir"]), Path(r["output_dir"]), ids)["max_abs_params"]
            for r in packed[1:]
        }
    finally:
        if not FLAGS.keep_outputs and not FLAGS.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    check_row = next((r for r in rows if r["k"] == FLAGS.check_k), None)
    check = {"k": FLAGS.check_k, "epochs": FLAGS.epochs, "tolerance": FLAGS.check_tol,
             "tolerance_px": FLAGS.check_tol_px, "tolerance_1epoch": FLAGS.check_tol_1epoch,
             "ran": check_row is not None and check_row["k"] != 1, "packed_consistency_max_abs_params": consistency}
    if check["ran"]:
        v = check_row["vs_k1"]
        w = check_row.get("vs_k1_warmup_1epoch")
        check.update(max_abs_params=v["max_abs_params"], max_abs_landmarks2d_px=v["max_abs_landmarks2d_px"],
                     clips_compared=v["clips_compared"],
                     within_tol_after_epochs=bool(v["max_abs_params"] <= FLAGS.check_tol
                                                  and v["max_abs_landmarks2d_px"] <= FLAGS.check_tol_px))
        passed = v["clips_compared"] == len(ids)  # every clip done at both K
        if w is not None:
            check.update(max_abs_params_1epoch=w["max_abs_params"],
                         max_abs_landmarks2d_px_1epoch=w["max_abs_landmarks2d_px"],
                         clips_compared_1epoch=w["clips_compared"])
            passed = passed and w["clips_compared"] > 0 and w["max_abs_params"] <= FLAGS.check_tol_1epoch
        else:  # --nowarmup: no 1-epoch outputs; fall back on the informational tolerances
            passed = passed and check["within_tol_after_epochs"]
        check["passed"] = bool(passed)
    table = markdown_table(rows)
    load_end = _loadavg()
    report = {
        "benchmark": "neuface-jax annotate-dataset runner (dataset.run) clips/hour vs K clips packed per device",
        "device": device_str,
        "jax_devices": [str(d) for d in devices],
        "host": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "command": " ".join(["python", "experiments/benchmark_dataset.py"] + sys.argv[1:]),
        "git": git_state,
        "settings": {
            "clips": FLAGS.clips, "frames": FLAGS.frames, "frames_spread": FLAGS.frames_spread, "lengths": lengths,
            "views": FLAGS.views, "size": FLAGS.size, "epochs": FLAGS.epochs, "chunk_frames": FLAGS.chunk_frames,
            "bucket_chunks": list(bucket_chunks) if bucket_chunks else None, "workers": FLAGS.workers,
            "encoder_config": setup.encoder_config.to_dict(), "contour": "dynamic", "warmup": FLAGS.warmup,
            "learning_rate": setup.fit_config.learning_rate, "encoder": setup.encoder_label,
        },
        "data": {"dir": str(data_root), "generated": made, "generate_s": gen_s},
        "load_average_start": load_start,
        "load_average_end": load_end,
        "uptime_start": uptime_start,
        "uptime_end": _uptime(),
        "per_length_warmup": rows[0].get("length_warmup"),
        "results": rows,
        "check": check,
        "table_markdown": table,
    }
    out = Path(FLAGS.out or Path(tempfile.gettempdir()) / "neuface_jax_benchmarks" / f"benchmark_dataset_{dev.platform}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n")

    print()
    print(f"Device: {device_str}; load average start {load_start}, end {load_end}")
    print(table)
    print()
    ok = check.get("passed")
    if check["ran"]:
        if "max_abs_params_1epoch" in check:
            print(f"check: K={FLAGS.check_k} vs K=1 after the 1-epoch warm-up: max |Δparams| "
                  f"{check['max_abs_params_1epoch']:.3e}, max |Δlandmarks| "
                  f"{check['max_abs_landmarks2d_px_1epoch']:.3e} px "
                  f"over {check['clips_compared_1epoch']} clips (tol {FLAGS.check_tol_1epoch:g})")
        print(f"check: K={FLAGS.check_k} vs K=1 after {FLAGS.epochs} epochs (float noise amplified by Adam; "
              f"informational): max |Δparams| {check['max_abs_params']:.3e}, max |Δlandmarks| "
              f"{check['max_abs_landmarks2d_px']:.3e} px over {check['clips_compared']} clips "
              f"({'within' if check['within_tol_after_epochs'] else 'NOT within'} {FLAGS.check_tol:g}, "
              f"{FLAGS.check_tol_px:g} px)")
        if consistency:
            print("check: packed runs vs each other: " + ", ".join(f"{k} {v:.3e}" for k, v in consistency.items()))
        print(f"check (1-epoch equality, every clip done): {'PASS' if ok else 'FAIL'}")
    else:
        print(f"check: not run (K={FLAGS.check_k} not in --ks)")
    parts = [f"K={r['k']} {r['clips_per_hour']:.0f} clips/h ({r['speedup']:.2f}x; fit {r['fit_speedup']:.2f}x)"
             for r in rows]
    print(f"SUMMARY {dev.platform}: " + "; ".join(parts) + f"; load {load_end}  -> {out}", flush=True)


if __name__ == "__main__":
    sys.exit(app.run(main))
