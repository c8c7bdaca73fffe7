r"""Benchmark of the NeuFace update step: one Adam step on one chunk of frames × views.

What is timed is the production step, ``fit.NeuFace.step_fn`` (the jitted step with the state
donated, called exactly as ``NeuFace.run_epoch`` calls it): encoder forward + backward on C·W
images, FLAME forward, landmarks, the reference loss (10·landmark + 100·temporal + 200·multi-view)
and the Adam update. Inputs are synthetic (random images, random landmark targets, every frame and
landmark valid), built as a ``fit.ClipData``; FLAME is the procedural demo head. Two
configurations by default:

* ``small``: ``EncoderConfig.small`` at 64×64, a chunk of 20 frames × 3 views (60 images/step);
* ``resnet50``: DECA's ResNet-50 at 224×224, 20 frames × 7 views (140 images/step).

Per configuration it reports: images/s of the step (the mean over back-to-back timed steps, as
``run_epoch`` issues them; the fastest of --repeats such loops), trace/lowering and XLA compile
time (the step is compiled ahead of time; the timed calls go through ``step_fn`` and must not
compile again: ``recompiles_in_steps``), XLA's memory estimate of the compiled step (temp +
arguments + outputs, and the same less the donated, aliased state), the device's peak bytes in
use when the backend reports one (accelerators; a process-wide high-water mark), the step's FLOPs
from XLA's cost analysis, and how the step time splits between the encoder's forward + backward
alone and FLAME + losses alone (each compiled and timed on its own on the same batch). Model
FLOP utilization, for ResNet-50 at 224² only:

    MFU = 12.3 GFLOP/image (the nominal ResNet-50 forward + backward) × images/s / peak FLOP/s

with the peak from --peak_tflops or, for a few known GPUs, their dense spec-sheet peak for the
compute dtype (float32 counts as TF32: JAX's DEFAULT precision uses tensor cores on A100/H100);
"not computed" on CPU. The nominal 12.3 GFLOP is 3 × 4.1 G multiply-adds; XLA counts 2 FLOPs per
multiply-add (≈ 24 GFLOP/image here), so the MFU from XLA's own count (``mfu_xla``) is about
twice the nominal one.

    python experiments/benchmark_step.py                                       # CPU: minutes
    python experiments/benchmark_step.py --dtype=bfloat16 --peak_tflops=989.4  # e.g. H100 SXM

On CPU the ResNet-50 step needs ≈ 12 GiB (XLA's estimate for 140 images in float32) and takes
minutes per step on 2 cores; a configuration whose estimate exceeds the available host memory is
skipped with the reason in the report (--nocheck_host_memory runs it anyway).

Variants and the same-run reference: ``--resnet_views=1,7`` gives one ResNet-50 entry per view count,
``--trainable_stages=all,2,1`` one per ``FitConfig.trainable_stages`` (the frozen prefix computed once
per chunk, as ``NeuFace.cache_features`` does, and timed apart: ``prefix_s_per_chunk``), and
``--torch_python=PY`` runs ``experiments/torch_reference_step.py`` (the same update in PyTorch, released
and tuned modes) at each ResNet-50 entry's settings after it, recording both and their ratios in wall
and CPU seconds (``step_cpu_s``: the process's CPU time per step, steadier on a shared machine) and a
per-clip projection for the official schedule (``clip_projection``, ``--epochs``).

    python experiments/benchmark_step.py --configs=resnet50 --resnet_views=1,7 --trainable_stages=all,1 \
        --torch_python=/tmp/torchvenv/bin/python

Prints one JSON line per configuration, a one-line ``SUMMARY``, and writes the JSON to --out.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_list("configs", ["small", "resnet50"], "Configurations to measure: small, resnet50.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Encoder compute dtype (EncoderConfig.dtype).")
flags.DEFINE_integer("frames", 20, "Frames per chunk (FitConfig.chunk_frames).")
flags.DEFINE_integer("small_views", 3, "Views of the small configuration.")
flags.DEFINE_integer("small_size", 64, "Image side of the small configuration.")
flags.DEFINE_list("small_widths", None, "Override EncoderConfig.small's stage widths (e.g. 4,8 for a smoke test).")
flags.DEFINE_integer("small_head", None, "Override EncoderConfig.small's head width.")
flags.DEFINE_list("resnet_widths", None, "Override the ResNet-50 stage widths (e.g. 4,4,4,4 for a smoke test).")
flags.DEFINE_list("resnet_blocks", None, "Override the ResNet-50 blocks per stage (e.g. 1,1,1,1 for a smoke test).")
flags.DEFINE_list("resnet_views", ["7"], "Views of the ResNet-50 configuration (several: one entry each, e.g. 1,7).")
flags.DEFINE_integer("resnet_size", 224, "Image side of the ResNet-50 configuration.")
flags.DEFINE_list("conv_backward", ["gemm"], "EncoderConfig.conv_backward variants to time (gemm: core.conv's "
                  "matrix-product gradients, the default; xla: XLA's own convolution transposes), e.g. gemm,xla.")
flags.DEFINE_integer("warmup", None, "Untimed steps after compiling (default: 1 on CPU, 3 on an accelerator).")
flags.DEFINE_integer("small_steps", None, "Timed steps, small config (default: 5 on CPU, 50 on an accelerator).")
flags.DEFINE_integer("resnet_steps", None, "Timed steps, ResNet-50 (default: 2 on CPU, 20 on an accelerator).")
flags.DEFINE_integer("repeats", None, "Timed loops of --*_steps steps; the fastest is reported (default: 3 for "
                     "small, 1 for ResNet-50 on CPU; 3 on an accelerator).")
flags.DEFINE_bool("components", True, "Also time the encoder fwd+bwd and FLAME+losses fwd+bwd alone.")
flags.DEFINE_integer("component_steps", None, "Timed encoder-alone passes per loop (default: the config's timed "
                     "steps; 0 = not timed for ResNet-50 on CPU, where one pass takes minutes).")
flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s of the device for the dtype used (for MFU).")
flags.DEFINE_bool("check_host_memory", True, "On CPU, skip a config whose XLA memory estimate exceeds the "
                  "available host memory instead of letting the OOM killer end the run.")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic data and the encoder initialization.")
flags.DEFINE_list("trainable_stages", ["all"], "FitConfig.trainable_stages variants to time per configuration: "
                  "'all' (full fine-tuning) or a number of last backbone stages optimized (e.g. all,2,1).")
flags.DEFINE_string("torch_python", None, "Python of a venv with torch: also time experiments/torch_reference_step.py "
                    "(the same update in PyTorch) at each ResNet-50 entry's settings, in this run.")
flags.DEFINE_list("torch_modes", ["released", "tuned"], "Modes of the PyTorch reference (released: anomaly "
                  "detection on; tuned: off).")
flags.DEFINE_integer("torch_steps", 3, "Timed updates of the PyTorch reference (median reported).")
flags.DEFINE_integer("epochs", 100, "Epochs of the per-clip projection (the official schedule: 100).")
flags.DEFINE_string("out", None, "JSON output path (default $TMPDIR/neuface_jax_benchmarks/; the committed tables: --out=experiments/results/benchmark_step_<platform>.json; "
                    "_bfloat16 is appended to the name for --dtype=bfloat16, so the two GPU runs both stay).")

#: ResNet-50 forward + backward per 224² image, in the usual "FLOPs = multiply-adds" convention
#: (forward 4.1 G multiply-adds, backward about twice the forward).
RESNET50_GFLOP_PER_IMAGE = 12.3

#: Dense (no sparsity) spec-sheet peaks in TFLOP/s by device-kind substring: (bfloat16, tf32).
#: The first matching row wins, so the more specific names come first.
_KNOWN_PEAKS = (
    ("H100 PCIe", 756.5, 378.0),
    ("H100 NVL", 835.5, 417.5),
    ("H100", 989.4, 494.7),  # SXM5
    ("H200", 989.4, 494.7),
    ("GH200", 989.4, 494.7),
    ("A100", 312.0, 156.0),
)

MB = 2**20


def _peak_tflops(device, dtype: str) -> tuple[float | None, str]:
    """(peak TFLOP/s, where it came from) for MFU; (None, reason) when unknown."""
    if FLAGS.peak_tflops is not None:
        return float(FLAGS.peak_tflops), "--peak_tflops"
    if device.platform == "cpu":
        return None, "CPU: no peak (pass --peak_tflops to compute one)"
    kind = str(getattr(device, "device_kind", ""))
    for name, bf16, tf32 in _KNOWN_PEAKS:
        if name.lower() in kind.lower():
            peak = bf16 if dtype == "bfloat16" else tf32
            what = "bf16" if dtype == "bfloat16" else "TF32 (float32 under JAX's DEFAULT precision)"
            return peak, f"spec sheet, dense {what}, matched {name!r} in {kind!r}"
    return None, f"unknown device kind {kind!r} (pass --peak_tflops)"


def _cost_flops(compiled) -> float | None:
    """XLA's FLOP count of a compiled executable, when the backend reports one."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        return None
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    flops = float(cost["flops"])
    return flops if flops > 0 else None


def _memory(compiled) -> dict:
    """XLA's memory estimate of a compiled executable, in MiB."""
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001
        mem = None
    if mem is None:
        return {}
    total = mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
    return {
        "xla_temp_mb": mem.temp_size_in_bytes / MB,
        "xla_argument_mb": mem.argument_size_in_bytes / MB,
        "xla_output_mb": mem.output_size_in_bytes / MB,
        "xla_alias_mb": mem.alias_size_in_bytes / MB,
        # temp + arguments + outputs; donated state is counted as argument and output both ...
        "xla_total_mb": total / MB,
        # ... so the live high-water mark is closer to this.
        "xla_total_less_alias_mb": (total - mem.alias_size_in_bytes) / MB,
    }


def _device_peak_mb(device) -> float | None:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / MB
    return None


def _host_available_mb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return None


class _CompileCounter:
    """Counts XLA backend compilations (to prove that the timed steps reuse one executable)."""

    def __init__(self):
        import jax

        self.count = 0

        def listener(event, duration, **kwargs):
            if event == "/jax/core/compile/backend_compile_duration":
                self.count += 1

        jax.monitoring.register_event_duration_secs_listener(listener)


def _production_step(opt):
    """(the jitted step function, the leading arguments bound to it, whether it takes ``face``).

    ``NeuFace.step_fn`` is either a jitted function or a ``functools.partial`` binding the
    optimizer as the static first argument of a module-level jitted function; lowering needs the
    jitted function itself. Newer steps take the FLAME model as their last argument.
    """
    fn = opt.step_fn
    bound: tuple = ()
    if isinstance(fn, functools.partial):
        fn, bound = fn.func, fn.args
    takes_face = "face" in inspect.signature(opt._step).parameters
    return fn, bound, takes_face


def _time_loop(run, block, n: int) -> float:
    """Seconds per call of ``run`` over ``n`` back-to-back calls, blocking once at the end."""
    t0 = time.perf_counter()
    out = None
    for _ in range(n):
        out = run()
    block(out)
    return (time.perf_counter() - t0) / n


def _make_chunk(frames: int, views: int, size: int, num_landmarks: int, seed: int):
    import jax.numpy as jnp
    import numpy as np

    from neuface_jax.core import fit as fit_lib

    rng = np.random.default_rng(seed)
    return fit_lib.ClipData(
        images=jnp.asarray(rng.random((frames, views, size, size, 3), np.float32)),
        landmarks=jnp.asarray(np.clip(rng.normal(size=(frames, views, num_landmarks, 2)) * 0.3, -0.95, 0.95),
                              jnp.float32),
        landmarks_mask=jnp.ones((frames, views, num_landmarks), jnp.float32),
        frame_mask=jnp.ones((frames, views), jnp.float32),
    )


def _encoder_config(name: str, views: int | None = None, conv_backward: str = "gemm"):
    from neuface_jax.core import encoder as encoder_lib

    if name == "small":
        kw = {"image_size": FLAGS.small_size, "dtype": FLAGS.dtype, "conv_backward": conv_backward}
        if FLAGS.small_widths:
            widths = tuple(int(w) for w in FLAGS.small_widths)
            kw.update(small_widths=widths, small_blocks=(1,) * len(widths))
        if FLAGS.small_head:
            kw["head_hidden"] = FLAGS.small_head
        return encoder_lib.EncoderConfig.small(**kw), FLAGS.small_views, FLAGS.small_size
    if name == "resnet50":
        kw = {"conv_backward": conv_backward}
        if FLAGS.resnet_widths:
            kw["resnet_widths"] = tuple(int(w) for w in FLAGS.resnet_widths)
        if FLAGS.resnet_blocks:
            kw["resnet_blocks"] = tuple(int(b) for b in FLAGS.resnet_blocks)
        cfg = encoder_lib.EncoderConfig(arch="resnet50", image_size=FLAGS.resnet_size, dtype=FLAGS.dtype, **kw)
        return cfg, int(views if views is not None else FLAGS.resnet_views[0]), FLAGS.resnet_size
    raise ValueError(f"unknown config {name!r} (small, resnet50)")


def _bench_config(name: str, face, device, counter: _CompileCounter, accel: bool, views: int | None = None,
                  trainable_stages: int | None = None, conv_backward: str = "gemm") -> dict:
    import jax
    import jax.numpy as jnp

    from neuface_jax.core import encoder as encoder_lib
    from neuface_jax.core import fit as fit_lib

    ecfg, views, size = _encoder_config(name, views, conv_backward)
    frames = FLAGS.frames
    warmup = FLAGS.warmup if FLAGS.warmup is not None else (3 if accel else 1)
    default_steps = {"small": (50, 5), "resnet50": (20, 2)}[name]
    steps = getattr(FLAGS, f"{name.replace('50', '')}_steps")
    steps = steps if steps is not None else default_steps[0 if accel else 1]
    repeats = FLAGS.repeats if FLAGS.repeats is not None else (3 if accel or name == "small" else 1)
    images_per_step = frames * views

    entry: dict = {
        "config": name, "arch": ecfg.arch, "dtype": ecfg.dtype, "image_size": size, "frames": frames,
        "views": views, "images_per_step": images_per_step, "warmup_steps": warmup, "timed_steps": steps,
        "repeats": repeats, "trainable_stages": "all" if trainable_stages is None else trainable_stages,
        "conv_backward": ecfg.conv_backward,
    }
    cfg = fit_lib.FitConfig(chunk_frames=frames, seed=FLAGS.seed, trainable_stages=trainable_stages)
    opt = fit_lib.NeuFace(face, ecfg, cfg)
    state = opt.init_state(seed=FLAGS.seed)
    entry["trainable_params"] = int(sum(x.size for x in jax.tree.leaves(state.params)))
    chunk = _make_chunk(frames, views, size, face.embedding.num_landmarks, FLAGS.seed)
    staged = opt.frozen_stages > 0
    if staged:
        # The frozen prefix runs once per chunk and clip (NeuFace.cache_features), not per update.
        jax.block_until_ready(opt.cache_features(state, [chunk]))  # compiles the prefix
        t0, c0 = time.perf_counter(), time.process_time()
        (chunk,) = jax.block_until_ready(opt.cache_features(state, [chunk]))
        entry["prefix_s_per_chunk"] = time.perf_counter() - t0
        entry["prefix_cpu_s_per_chunk"] = time.process_time() - c0
        entry["cached_feature_bytes_per_image"] = int(chunk.images[0, 0].size * chunk.images.dtype.itemsize)
    key = jax.random.key(FLAGS.seed)
    prev = opt.initial_context(views)

    # ---- compile the production step ahead of time: compile time, memory and FLOPs.
    step_jit, bound, takes_face = _production_step(opt)
    extra = (face,) if takes_face else ()
    t0 = time.perf_counter()
    lowered = step_jit.lower(*bound, state, chunk, key, prev, *extra)
    entry["trace_lower_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    entry["compile_s"] = time.perf_counter() - t0
    entry.update(_memory(compiled))
    logging.info("[%s] step traced in %.1f s, compiled in %.1f s; XLA memory estimate %.0f MiB", name,
                 entry["trace_lower_s"], entry["compile_s"], entry.get("xla_total_mb", float("nan")))
    flops = _cost_flops(compiled)
    entry["xla_step_gflop"] = None if flops is None else flops / 1e9
    entry["xla_gflop_per_image"] = None if flops is None else flops / 1e9 / images_per_step
    del lowered, compiled

    if device.platform == "cpu" and FLAGS.check_host_memory and "xla_total_less_alias_mb" in entry:
        avail = _host_available_mb()
        if avail is not None and entry["xla_total_less_alias_mb"] > 0.9 * avail:
            entry["skipped"] = (f"XLA estimates {entry['xla_total_less_alias_mb']:.0f} MiB, host has {avail:.0f} MiB "
                                "available (--nocheck_host_memory to run anyway)")
            return entry

    def block(out):
        return jax.block_until_ready(out)

    # ---- components alone on the same batch, compiled up front so that their timing loops can be
    # interleaved with the step's (on a shared machine, load then hits all three alike).
    timers = {}
    comp_steps = 0
    if FLAGS.components:
        train_bn = not cfg.freeze_bn
        # Own copies: the step donates (deletes) the state's buffers.
        params, rest = jax.tree.map(jnp.copy, (state.params, state.rest))
        # The encoder alone costs as much as a step: on CPU a ResNet-50 pass takes minutes, so
        # there it is off by default and the split comes from FLAME + losses alone.
        comp_steps = FLAGS.component_steps
        if comp_steps is None:
            comp_steps = 0 if (name == "resnet50" and not accel) else steps
        if comp_steps > 0:
            def encoder_objective(params, rest, images):
                p = opt.predict(params, rest, images, update_bn_stats=train_bn, features=staged)
                p = p[0] if train_bn else p
                return sum(jnp.sum(x) for x in jax.tree.leaves(p))

            t0 = time.perf_counter()
            enc_compiled = jax.jit(jax.value_and_grad(encoder_objective)).lower(params, rest, chunk.images).compile()
            entry["encoder_compile_s"] = time.perf_counter() - t0
            enc_flops = _cost_flops(enc_compiled)
            entry["encoder_xla_gflop"] = None if enc_flops is None else enc_flops / 1e9
            entry["encoder_timed_passes"] = comp_steps
            timers["encoder"] = (lambda: enc_compiled(params, rest, chunk.images), comp_steps)

        predicted = jax.jit(lambda p, r, x: opt.predict(p, r, x, features=staged))(params, rest, chunk.images)

        def flame_objective(pred, data, k, face_model):
            c, w = data.frame_mask.shape
            shape = encoder_lib.clip_shape(pred.shape.reshape(c * w, -1), data.frame_mask.reshape(c * w))
            total, _ = fit_lib._loss_batch(face_model, data, shape, pred.expression, pred.pose, pred.cam, k,
                                           config=cfg)
            return total

        flame_compiled = jax.jit(jax.value_and_grad(flame_objective)).lower(predicted, chunk, key, face).compile()
        timers["flame_losses"] = (lambda: flame_compiled(predicted, chunk, key, face), max(steps, 3))

    # ---- the timed steps: NeuFace.step_fn itself (the jit cache holds the executable just built).
    keys = list(jax.random.split(key, max(warmup, 1) + steps * repeats))  # made here: no eager op between steps
    compiles_before = counter.count
    t0 = time.perf_counter()
    state, stats, _, _ = opt.step_fn(state, chunk, keys[0], prev, *extra)
    block(state)
    entry["first_call_s"] = time.perf_counter() - t0  # retrace + dispatch + one step, no recompile
    for i in range(1, warmup):
        state, stats, _, _ = opt.step_fn(state, chunk, keys[i], prev, *extra)
    block(state)
    recompiles = counter.count - compiles_before
    entry["device_peak_mb"] = _device_peak_mb(device)  # process-wide high-water mark so far
    # Warm the components too where a pass is cheap (an AOT-compiled executable compiles nothing on
    # its first call; the warm-up is for allocators and caches).
    for comp, (run, _) in timers.items():
        if comp != "encoder" or accel or name != "resnet50":
            block(run())

    holder = {"state": state, "i": max(warmup, 1)}

    def run_step():
        s, st, _, _ = opt.step_fn(holder["state"], chunk, keys[holder["i"]], prev, *extra)
        holder["state"], holder["i"] = s, holder["i"] + 1
        return s, st

    logging.info("[%s] first call %.2f s; timing %d x %d steps (and %s)", name, entry["first_call_s"], repeats,
                 steps, ", ".join(timers) or "no components")
    loop_s, loop_cpu_s, comp_s = [], [], {comp: [] for comp in timers}
    for _ in range(repeats):
        before = counter.count
        c0 = time.process_time()
        loop_s.append(_time_loop(run_step, block, steps))
        loop_cpu_s.append((time.process_time() - c0) / steps)
        recompiles += counter.count - before
        for comp, (run, n) in timers.items():
            comp_s[comp].append(_time_loop(run, block, n))
    step_s = min(loop_s)
    entry["step_s_all_loops"] = loop_s
    state, stats = holder["state"], None
    entry["recompiles_in_steps"] = recompiles
    entry["step_s"] = step_s
    # CPU seconds of this process (all threads) per step: the robust figure on a shared machine.
    entry["step_cpu_s"] = min(loop_cpu_s)
    entry["images_per_s"] = images_per_step / step_s
    entry["host_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    # ---- model FLOP utilization (ResNet-50 at 224² only: the nominal 12.3 GFLOP is for that).
    peak, source = _peak_tflops(device, ecfg.dtype)
    entry["peak_tflops"] = peak
    entry["peak_source"] = source
    entry["mfu"] = entry["mfu_xla"] = None
    full_resnet = not (FLAGS.resnet_widths or FLAGS.resnet_blocks) and trainable_stages is None
    if ecfg.arch == "resnet50" and size == 224 and full_resnet and peak:  # 12.3 GFLOP: the whole network
        entry["mfu"] = RESNET50_GFLOP_PER_IMAGE * 1e9 * entry["images_per_s"] / (peak * 1e12)
    if flops is not None and peak:
        entry["mfu_xla"] = flops / step_s / (peak * 1e12)
    entry["achieved_xla_tflops"] = None if flops is None else flops / step_s / 1e12

    # ---- where the step time goes (fastest loop of each part over the fastest step loop).
    if "encoder" in comp_s:
        entry["encoder_fwd_bwd_s"] = min(comp_s["encoder"])
        entry["encoder_fraction"] = entry["encoder_fwd_bwd_s"] / step_s
    if "flame_losses" in comp_s:
        entry["flame_losses_fwd_bwd_s"] = min(comp_s["flame_losses"])
        entry["flame_losses_fraction"] = entry["flame_losses_fwd_bwd_s"] / step_s
        if "encoder" in comp_s:
            # Adam, the has-data select, dispatch; negative when XLA overlaps or fuses across parts.
            entry["other_fraction"] = 1.0 - entry["encoder_fraction"] - entry["flame_losses_fraction"]
        else:
            entry["encoder_and_adam_fraction"] = 1.0 - entry["flame_losses_fraction"]
    return entry


def _torch_reference(entry: dict) -> dict:
    """experiments/torch_reference_step.py at the entry's settings, one subprocess per mode."""
    import subprocess

    script = Path(__file__).resolve().parent / "torch_reference_step.py"
    ts = entry["trainable_stages"]
    out = {}
    for mode in FLAGS.torch_modes:
        cmd = [FLAGS.torch_python, str(script), f"--frames={entry['frames']}", f"--views={entry['views']}",
               f"--size={entry['image_size']}", f"--mode={mode}", f"--steps={FLAGS.torch_steps}",
               f"--trainable_stages={5 if ts == 'all' else ts}", f"--seed={FLAGS.seed}"]
        logging.info("PyTorch reference: %s", " ".join(cmd[1:]))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            out[mode] = {"error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
            continue
        out[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _clip_projection(entry: dict) -> dict:
    """Seconds per clip for the official schedule (FLAGS.epochs epochs; a 100-frame clip at several
    views, a 200-frame one at one view) from the measured per-update (and per-chunk prefix) times."""
    frames = 100 if entry["views"] > 1 else 200
    chunks = -(-frames // entry["frames"])
    updates = FLAGS.epochs * chunks
    proj = {"clip_frames": frames, "chunks": chunks, "updates": updates,
            "jax_clip_s": updates * entry["step_s"] + chunks * entry.get("prefix_s_per_chunk", 0.0),
            "jax_clip_cpu_s": updates * entry["step_cpu_s"] + chunks * entry.get("prefix_cpu_s_per_chunk", 0.0)}
    for mode, ref in entry.get("torch", {}).items():
        if "step_s" in ref:
            proj[f"torch_{mode}_clip_s"] = updates * ref["step_s"]
            proj[f"torch_{mode}_clip_cpu_s"] = updates * ref["step_cpu_s"]
    return proj


def _fmt(x):
    return round(x, 5) if isinstance(x, float) else x


def main(argv):
    del argv
    import jax

    import flame_jax
    from neuface_jax.core import fit as fit_lib

    device = jax.devices()[0]
    accel = device.platform != "cpu"
    counter = _CompileCounter()
    face = fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    print(f"device: {device.platform} {getattr(device, 'device_kind', '')}; jax {jax.__version__}; "
          f"{len(jax.devices())} device(s); dtype {FLAGS.dtype}; FLAME demo head V={face.flame.num_vertices}",
          flush=True)

    results = []
    variants = [None if v.strip() == "all" else int(v) for v in FLAGS.trainable_stages]
    torch_runs = {}  # one PyTorch run per setting, shared by the conv_backward variants
    for name in FLAGS.configs:
        name = name.strip()
        for views in (FLAGS.resnet_views if name == "resnet50" else [None]):
            for ts, conv_backward in itertools.product(variants, FLAGS.conv_backward):
                entry = _bench_config(name, face, device, counter, accel, views, ts, conv_backward.strip())
                if FLAGS.torch_python and entry["arch"] == "resnet50" and "skipped" not in entry:
                    key = (entry["frames"], entry["views"], entry["image_size"], entry["trainable_stages"])
                    if key not in torch_runs:
                        torch_runs[key] = _torch_reference(entry)
                    entry["torch"] = torch_runs[key]
                    for mode, ref in entry["torch"].items():
                        if "step_s" in ref:
                            entry[f"speedup_vs_torch_{mode}"] = ref["step_s"] / entry["step_s"]
                            entry[f"cpu_speedup_vs_torch_{mode}"] = ref["step_cpu_s"] / entry["step_cpu_s"]
                if "skipped" not in entry:
                    entry["clip_projection"] = _clip_projection(entry)
                results.append(entry)
                print(json.dumps({k: _fmt(v) for k, v in entry.items()}), flush=True)

    report = {
        "benchmark": "NeuFace update step (NeuFace.step_fn: encoder fwd+bwd, FLAME, landmarks, "
                     "landmark+temporal+multi-view losses, Adam) on one chunk of frames x views",
        "device": f"{device.platform} {getattr(device, 'device_kind', '')}",
        "host": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "resnet50_nominal_gflop_per_image": RESNET50_GFLOP_PER_IMAGE,
        "results": results,
    }
    suffix = "" if FLAGS.dtype == "float32" else f"_{FLAGS.dtype}"
    out = Path(FLAGS.out or Path(tempfile.gettempdir()) / "neuface_jax_benchmarks" / f"benchmark_step_{device.platform}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    parts = []
    for e in results:
        head = f"{e['config']} {e['image_size']}² {e['frames']}x{e['views']}"
        if e["trainable_stages"] != "all":
            head += f" trainable_stages={e['trainable_stages']}"
        if e["conv_backward"] != "gemm":
            head += f" conv_backward={e['conv_backward']}"
        if "skipped" in e:
            parts.append(f"{head}: skipped ({e['skipped']})")
            continue
        mem = e.get("xla_total_mb")
        s = f"{head}: {e['images_per_s']:.1f} img/s ({e['step_s']:.3f} s/step), compile {e['compile_s']:.1f} s, "
        s += f"XLA mem {mem:.0f} MiB" if mem is not None else "XLA mem n/a"
        if e.get("device_peak_mb") is not None:
            s += f", device peak {e['device_peak_mb']:.0f} MiB"
        if e.get("xla_step_gflop") is not None:
            s += f", {e['xla_step_gflop']:.0f} GFLOP/step"
        if "encoder_fraction" in e:
            s += f", encoder alone {100 * e['encoder_fraction']:.0f}%"
        if "flame_losses_fraction" in e:
            s += f", FLAME+losses alone {100 * e['flame_losses_fraction']:.1f}%"
        if e["arch"] == "resnet50":
            s += ", MFU " + (f"{100 * e['mfu']:.1f}%" if e["mfu"] is not None else "not computed")
        s += f", {e['step_cpu_s']:.2f} CPU-s/step"
        for mode, ref in e.get("torch", {}).items():
            if "step_s" in ref:
                s += (f"; PyTorch {mode} {ref['step_s']:.2f} s ({ref['step_cpu_s']:.2f} CPU-s): "
                      f"{e[f'speedup_vs_torch_{mode}']:.2f}x ({e[f'cpu_speedup_vs_torch_{mode}']:.2f}x in CPU-s)")
            else:
                s += f"; PyTorch {mode} failed: {ref.get('error')}"
        if "clip_projection" in e:
            s += f"; per clip ({e['clip_projection']['clip_frames']} frames) {e['clip_projection']['jax_clip_s'] / 3600:.2f} h"
        parts.append(s)
    print(f"SUMMARY {device.platform} {FLAGS.dtype}: " + "; ".join(parts) + f"  -> {out}", flush=True)


if __name__ == "__main__":
    sys.exit(app.run(main))
