r"""Clips/hour of ``annotate-dataset`` on the Ray engine vs the local engine, same clips, same process.

Both engines run the same work (``runner.GroupWork``: preparation, packed fits, writes); what the
Ray engine adds is its overhead: starting Ray, starting the actors (each imports JAX, receives the
setup and compiles), moving prepared clips through Ray's object store and the driver's round trips.

Data: ``--clips`` synthetic clips of the demo head (``experiments/benchmark_dataset.py``'s
``make_data``: one mp4 + ``landmarks.npz`` each, so MediaPipe does not run), lengths ``--frames``
± ``--frames_spread``. Setup: annotate's defaults for the demo head (packaged small encoder),
``contour="dynamic"``, ``--epochs`` epochs, ``--chunk_frames``.

Order, in one process: a persistent JAX compilation cache is set (a fresh folder); a local
**warm-up** run (every clip, 1 epoch: every bucket and every clip length, whose eager padding and
metrics compile per length) fills it, so neither timed run pays compilation in full (the Ray actors
read the same cache: the engine hands the driver's cache folder to them; they still trace, and
load the compiled steps, in each new actor process). Then the **local** run (``dataset.run``,
``--workers`` preparation threads) and the **Ray** run (``ray_engine.run`` on a one-node ``ray.init(num_cpus=--ray_cpus)``: ``--workers``
preparation actors and one fitting actor), each on all clips into a fresh folder. ``ray.init``
is timed apart. The outputs are compared (max |Δ| of the fitted parameters).

    python experiments/benchmark_ray.py                 # the 2-core CPU figures
    python experiments/benchmark_ray.py --clips=64 --ray_cpus=16   # e.g. on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_dataset import _git_state, make_data  # noqa: E402 - the experiments folder

from neuface_jax import annotation, dataset  # noqa: E402
from neuface_jax.dataset import ray_engine  # noqa: E402

PARAM_KEYS = ("cam", "full_pose", "expr", "shapes")


def _args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--frames_spread", type=int, default=6)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--chunk_frames", type=int, default=20)
    p.add_argument("--clips_per_device", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="preparation threads (local) / actors (Ray)")
    p.add_argument("--ray_cpus", type=int, default=2)
    p.add_argument("--data_dir", default="/tmp/neuface_bench_dataset")
    p.add_argument("--out", default=None, help="JSON (default experiments/results/benchmark_ray_<platform>.json)")
    return p.parse_args(argv)


def _max_diff(a_dir: Path, b_dir: Path, ids) -> float:
    worst = 0.0
    for cid in ids:
        with np.load(a_dir / cid / "params.npz") as a, np.load(b_dir / cid / "params.npz") as b:
            worst = max(worst, *(float(np.max(np.abs(a[k] - b[k]))) for k in PARAM_KEYS))
    return worst


def _row(summary, seconds: float) -> dict:
    return {"seconds": seconds, "clips_per_hour": 3600.0 * summary.done / seconds, "done": summary.done,
            "failed": summary.failed, "groups": summary.groups, "retries": summary.retries,
            "seconds_by_stage": dict(summary.seconds_by_stage), "buckets": dict(summary.buckets)}


def main(argv=None) -> dict:
    a = _args(argv)
    work = Path(tempfile.mkdtemp(prefix="neuface_bench_ray_"))
    jax.config.update("jax_compilation_cache_dir", str(work / "jax_cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    entries, _, _, _ = make_data(Path(a.data_dir), a.clips, a.frames, a.frames_spread, "mono", a.size, 0)
    ids = [e.clip_id for e in entries]
    setup = annotation.make_setup(annotation.SetupConfig(contour="dynamic", epochs=a.epochs,
                                                         chunk_frames=a.chunk_frames), need_landmarker=False)
    warm = annotation.make_setup(annotation.SetupConfig(contour="dynamic", epochs=1, chunk_frames=a.chunk_frames),
                                 need_landmarker=False)
    cfg = dataset.DatasetConfig(workers=a.workers, clips_per_device=a.clips_per_device, checkpoint_every=0)
    t0 = time.perf_counter()
    dataset.run(entries, work / "warm", warm, cfg, report=False)
    warm_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    local = dataset.run(entries, work / "local", setup, cfg, report=False)
    local_row = _row(local, time.perf_counter() - t0)
    print(f"local: {local_row['seconds']:.1f}s = {local_row['clips_per_hour']:.0f} clips/hour")

    ray = ray_engine.import_ray()
    t0 = time.perf_counter()
    ray.init(num_cpus=a.ray_cpus, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    on_ray = ray_engine.run(entries, work / "ray", setup, cfg, ray_engine.EngineConfig(engine="ray"), report=False)
    ray_row = {**_row(on_ray, time.perf_counter() - t0), "ray_init_s": init_s}
    ray.shutdown()
    print(f"ray:   {ray_row['seconds']:.1f}s = {ray_row['clips_per_hour']:.0f} clips/hour (+ ray.init {init_s:.1f}s)")

    doc = {
        "benchmark": "annotate-dataset: Ray engine vs local engine, same clips, same process",
        "command": "python " + " ".join([f"experiments/{Path(__file__).name}", *(argv or sys.argv[1:])]),
        "device": f"{jax.default_backend()} ({jax.devices()[0].device_kind})", "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "jax": jax.__version__, "ray": ray.__version__, "git": _git_state(),
        "settings": vars(a), "lengths": [int(e.num_frames) for e in entries], "warmup_s": warm_s,
        "local": local_row, "ray": ray_row,
        "ray_over_local_seconds": ray_row["seconds"] / local_row["seconds"],
        "max_abs_param_diff_ray_vs_local": _max_diff(work / "ray", work / "local", ids),
    }
    out = Path(a.out or Path(__file__).resolve().parent / "results" / f"benchmark_ray_{jax.default_backend()}.json")
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("ray_over_local_seconds", "max_abs_param_diff_ray_vs_local")}))
    print(f"wrote {out}")
    return doc


if __name__ == "__main__":
    main()
