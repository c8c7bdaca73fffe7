r"""The prepared accelerator check of the NeuFace update (run by experiments/gpu_check.sh).

On one GPU, in one process (each part written to the results folder as soon as it is measured, so
a run cut short still reports what it finished):

1. **steps**: the production update step (``NeuFace.step_fn``: ResNet-50 at 224², 20 frames × 7 views
   = 140 images, FLAME, the reference losses, Adam) in float32 and bfloat16 with model FLOP utilization
   (12.3 GFLOP per image, the nominal ResNet-50 forward + backward; ``benchmark_step`` does the
   timing), the cheaper ``trainable_stages`` variant(s) in bfloat16, and the 20 × 1 monocular step;
2. **per clip**: seconds per clip for the official schedule (100 epochs; a 100-frame 7-view clip:
   5 chunks, 500 updates; a 200-frame monocular clip: 10 chunks, 1,000 updates) from those steps;
3. **dataset**: the packed step (``NeuFace.step_fn_packed``: K clips per device, vmap over stacked
   weights) for K = 1, 2, 4, 8 and the clips/hour it gives on 100-frame 7-view clips; a K whose
   XLA memory estimate exceeds the device's memory is skipped with the reason.

``--smoke`` runs every part on a tiny network and batch (a CPU checks that the script works end to
end in seconds; its figures mean nothing). Writes ``gpu_check.json`` and ``summary.txt`` to
``--results``.

    python experiments/gpu_check.py --results=/tmp/gpu_check          # on the GPU machine
    python experiments/gpu_check.py --smoke --results=/tmp/gpu_smoke  # anywhere
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags, logging

import benchmark_step as bench  # defines the step-benchmark flags this script sets

FLAGS = flags.FLAGS
flags.DEFINE_bool("smoke", False, "Tiny network and batch: checks the script end to end (figures meaningless).")
flags.DEFINE_string("results", None, "Results folder (gpu_check.json, summary.txt).")
flags.DEFINE_list("clips_per_device", ["1", "2", "4", "8"], "K values of the packed (dataset) step.")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes of the 20 x 7 full fine-tuning step.")
flags.DEFINE_list("cheap_stages", ["1"], "trainable_stages variants timed in bfloat16 (20 x 7, and the last at 20 x 1).")
flags.DEFINE_bool("mono", True, "Also time the 20 x 1 monocular step (bfloat16) for the 200-frame clip.")
flags.DEFINE_integer("packed_steps", None, "Timed packed steps per K (default 10; 2 with --smoke).")

#: The official schedule's clips: (name, frames, views).
CLIPS = (("multiview_100x7", 100, 7), ("mono_200x1", 200, 1))


def _configure_smoke() -> None:
    """Tiny settings for --smoke (set before anything reads the benchmark flags)."""
    for name, value in (("resnet_widths", ["4", "4", "4", "4"]), ("resnet_blocks", ["1", "1", "1", "1"]),
                        ("resnet_size", 32), ("frames", 2), ("warmup", 1), ("resnet_steps", 2), ("repeats", 1)):
        setattr(FLAGS, name, value)


def _write(results: Path, report: dict) -> None:
    (results / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")


def _step(face, device, counter, accel, dtype: str, views: int, trainable_stages: int | None) -> dict:
    FLAGS.dtype = dtype
    entry = bench._bench_config("resnet50", face, device, counter, accel, views, trainable_stages)
    keep = ("dtype", "frames", "views", "images_per_step", "image_size", "trainable_stages", "step_s", "images_per_s",
            "mfu", "mfu_xla", "achieved_xla_tflops", "peak_tflops", "peak_source", "compile_s", "xla_total_mb",
            "device_peak_mb", "prefix_s_per_chunk", "cached_feature_bytes_per_image", "recompiles_in_steps", "skipped")
    return {k: entry[k] for k in keep if k in entry}


def _packed(face, device, k: int, views: int, trainable_stages: int | None) -> dict:
    """Seconds per packed step of K clips (one chunk each) in bfloat16."""
    import jax

    from neuface_jax.core import fit as fit_lib
    from neuface_jax.core import parallel

    FLAGS.dtype = "bfloat16"
    ecfg, views, size = bench._encoder_config("resnet50", views)
    frames = FLAGS.frames
    opt = fit_lib.NeuFace(face, ecfg, fit_lib.FitConfig(chunk_frames=frames, trainable_stages=trainable_stages))
    state = opt.init_state(seed=0)
    states = parallel._stack([state] * k)
    chunk = bench._make_chunk(frames, views, size, face.embedding.num_landmarks, 0)
    chunks = opt.cache_features(states, [parallel._stack([chunk] * k)], packed=True)
    prev = opt.initial_context(views, (k,))
    keys = jax.random.split(jax.random.key(0), k)
    entry = {"clips_per_device": k, "images_per_step": k * frames * views}
    t0 = time.perf_counter()
    compiled = fit_lib._neuface_step_packed.lower(*opt.static, states, chunks[0], keys, prev, face).compile()
    entry["compile_s"] = time.perf_counter() - t0
    entry.update(bench._memory(compiled))
    limit = (device.memory_stats() or {}).get("bytes_limit") if hasattr(device, "memory_stats") else None
    if limit and entry.get("xla_total_less_alias_mb", 0) * bench.MB > 0.95 * limit:
        entry["skipped"] = f"XLA estimates {entry['xla_total_less_alias_mb']:.0f} MiB, device has {limit / bench.MB:.0f}"
        return entry
    del compiled
    steps = FLAGS.packed_steps or (2 if FLAGS.smoke else 10)
    states, *_ = opt.step_fn_packed(states, chunks[0], keys, prev, face)
    jax.block_until_ready(states)
    t0 = time.perf_counter()
    for _ in range(steps):
        states, *_ = opt.step_fn_packed(states, chunks[0], keys, prev, face)
    jax.block_until_ready(states)
    entry["step_s"] = (time.perf_counter() - t0) / steps
    entry["images_per_s"] = entry["images_per_step"] / entry["step_s"]
    return entry


def _per_clip(step: dict, frames: int, epochs: int) -> dict:
    chunks = -(-frames // step["frames"])
    updates = epochs * chunks
    seconds = updates * step["step_s"] + chunks * step.get("prefix_s_per_chunk", 0.0)
    return {"clip_frames": frames, "views": step["views"], "updates": updates, "clip_s": seconds}


def main(argv):
    del argv
    if not FLAGS.results:
        raise app.UsageError("--results is required")
    FLAGS.components = False  # the encoder-alone split costs a compile per step: not in the 8-minute budget
    if FLAGS.smoke:
        _configure_smoke()
    import jax

    import flame_jax
    from neuface_jax.core import fit as fit_lib

    results = Path(FLAGS.results)
    results.mkdir(parents=True, exist_ok=True)
    device = jax.devices()[0]
    accel = device.platform != "cpu"
    counter = bench._CompileCounter()
    face = fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    report = {"device": f"{device.platform} {getattr(device, 'device_kind', '')}", "jax": jax.__version__,
              "smoke": FLAGS.smoke, "command": " ".join(sys.argv), "epochs": FLAGS.epochs, "steps": [],
              "per_clip": [], "dataset": []}
    if not accel and not FLAGS.smoke:
        logging.warning("no accelerator: this is the GPU check; on a CPU use --smoke (or benchmark_step.py)")
    t_start = time.perf_counter()
    multi, mono = CLIPS[0][2], CLIPS[1][2]
    cheap = [int(s) for s in FLAGS.cheap_stages]
    plan = [(d, multi, None) for d in FLAGS.dtypes] + [("bfloat16", multi, s) for s in cheap]
    if FLAGS.mono:
        plan += [("bfloat16", mono, None)] + [("bfloat16", mono, s) for s in cheap[-1:]]
    for dtype, views, ts in plan:
        step = _step(face, device, counter, accel, dtype, views, ts)
        report["steps"].append(step)
        if "skipped" not in step:
            clip = CLIPS[0] if views > 1 else CLIPS[1]
            report["per_clip"].append({"clip": clip[0], "dtype": dtype, "trainable_stages": step["trainable_stages"],
                                       **_per_clip(step, clip[1], FLAGS.epochs)})
        logging.info("step %s", json.dumps(step))
        _write(results, report)
    best = min((c for c in report["per_clip"] if c["clip"] == CLIPS[0][0] and c["trainable_stages"] == "all"),
               key=lambda c: c["clip_s"], default=None)
    single = next((s for s in report["steps"] if s["dtype"] == "bfloat16" and s["views"] == multi
                   and s["trainable_stages"] == "all" and "step_s" in s), None)
    for k in (int(x) for x in FLAGS.clips_per_device):
        if k == 1 and single is not None:  # one clip per device is the single-clip step measured above
            entry = {"clips_per_device": 1, "images_per_step": single["images_per_step"], "step_s": single["step_s"],
                     "images_per_s": single["images_per_s"], "from": "the single-clip bfloat16 step"}
        else:
            entry = _packed(face, device, k, multi, None)
        if "step_s" in entry:
            updates = FLAGS.epochs * -(-CLIPS[0][1] // FLAGS.frames)
            entry["clips_per_hour"] = 3600.0 * k / (updates * entry["step_s"])
        report["dataset"].append(entry)
        logging.info("packed %s", json.dumps(entry))
        _write(results, report)
    report["wall_s"] = time.perf_counter() - t_start
    _write(results, report)

    lines = [f"GPU check on {report['device']} (jax {report['jax']}){' SMOKE: figures meaningless' if FLAGS.smoke else ''}"]
    for s in report["steps"]:
        head = f"step {s['dtype']} {s['frames']}x{s['views']} trainable_stages={s['trainable_stages']}"
        if "skipped" in s:
            lines.append(f"{head}: skipped ({s['skipped']})")
            continue
        mfu = f"{100 * s['mfu']:.1f}%" if s.get("mfu") is not None else "n/a"
        lines.append(f"{head}: {s['step_s'] * 1e3:.1f} ms, {s['images_per_s']:.0f} img/s, MFU {mfu}")
    for c in report["per_clip"]:
        lines.append(f"per clip {c['clip']} {c['dtype']} trainable_stages={c['trainable_stages']}: "
                     f"{c['clip_s']:.1f} s ({c['updates']} updates)")
    for d in report["dataset"]:
        if "skipped" in d:
            lines.append(f"dataset K={d['clips_per_device']}: skipped ({d['skipped']})")
        else:
            lines.append(f"dataset K={d['clips_per_device']}: {d['step_s'] * 1e3:.1f} ms/packed step, "
                         f"{d['clips_per_hour']:.1f} clips/hour (100-frame 7-view, bf16, full fine-tuning)")
    if best is not None:
        lines.append(f"best single-clip 100x7 full fine-tuning: {best['clip_s']:.1f} s ({best['dtype']})")
    lines.append(f"wall {report['wall_s']:.0f} s")
    (results / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(app.run(main))
