r"""Benchmark of the flame_jax forward model (vertices + 68 landmarks) and its gradient.

For a FLAME-sized model (5023 vertices, 9976 faces, 300 identity + 100 expression
components; random contents in the FLAME file layout, or a real FLAME file with
--model) it measures, per batch size: forward frames/s, forward+backward frames/s,
compile time, XLA's memory estimate (and the device's peak where the backend reports
one), and the frames/s of the blend-shape matrix product alone (the roofline this
machine allows). With --torch_python it also times the PyTorch smplx FLAME layer on the
same files in the same run (see experiments/smplx_reference.py) and reports ratios.

    python experiments/benchmark_flame.py --torch_python=/tmp/smplxvenv/bin/python

Prints one JSON line per batch, a one-line summary, and writes the JSON to --out (default under the
system's temporary folder, never into the checkout unless asked to).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["1", "64", "256", "1024"], "Batch sizes to measure.")
flags.DEFINE_string("model", None, "A FLAME .pkl/.npz to use instead of a random FLAME-layout model.")
flags.DEFINE_string("embedding", None, "Landmark embedding for --model (default: a random 68-point one).")
flags.DEFINE_integer("n_shape", 300, "Identity components used.")
flags.DEFINE_integer("n_expr", 100, "Expression components used.")
flags.DEFINE_integer("frames_per_measure", 4096, "About this many frames per timed repeat.")
flags.DEFINE_integer("repeats", 5, "Timed repeats; the best is reported.")
flags.DEFINE_string("torch_python", None, "Python of a venv with torch + smplx: also time smplx FLAME.")
flags.DEFINE_string("out", None, "JSON output path (default <temporary folder>/neuface_jax_benchmarks/"
                    "benchmark_flame_<platform>.json).")


def _best_time(fn, iters, repeats):
    fn()  # warm-up (and compile for jitted fns)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            out = fn()
        _block(out)
        best = min(best, (time.perf_counter() - t0) / iters)
    return best


def _block(x):
    import jax

    return jax.block_until_ready(x)


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np

    import flame_jax
    from flame_jax import io as fio
    from flame_jax import testing

    batch_sizes = [int(b) for b in FLAGS.batch_sizes]
    workdir = Path(tempfile.mkdtemp(prefix="bench_flame_"))
    if FLAGS.model:
        model = fio.load_model(FLAGS.model, n_shape=FLAGS.n_shape, n_expr=FLAGS.n_expr)
        if FLAGS.embedding:
            embedding = fio.load_landmark_embedding(FLAGS.embedding)
        else:
            testing.write_ringnet_embedding(workdir, seed=0, dynamic=True)
            embedding = fio.load_landmark_embedding(workdir / "flame_static_embedding.pkl")
        model_dir = None
    else:
        # Random contents in the real layout; smplx reads the same files (no chumpy objects).
        testing.write_flame2020_pickle(
            workdir / "FLAME_NEUTRAL.pkl", seed=0, chumpy=False, private_scipy_path=False, open_2023=False
        )
        testing.write_ringnet_embedding(workdir, seed=0, dynamic=True)
        model = fio.load_model(workdir / "FLAME_NEUTRAL.pkl", n_shape=FLAGS.n_shape, n_expr=FLAGS.n_expr)
        embedding = fio.load_landmark_embedding(workdir / "flame_static_embedding.pkl")
        model_dir = str(workdir)

    device = jax.devices()[0]
    print(f"device: {device.platform} {device.device_kind}; jax {jax.__version__}; model V={model.num_vertices} "
          f"F={model.num_faces} S={model.num_shape} E={model.num_expression}", flush=True)

    def fwd(m, e, shape, expr, pose):
        out = flame_jax.forward(m, shape=shape, expression=expr, pose=pose)
        return out.vertices, flame_jax.landmarks(m, e, out.vertices, pose)

    def loss(params, m, e):
        v, lmk = fwd(m, e, *params)
        return jnp.sum(v**2) + jnp.sum(lmk**2)

    fwd_jit = jax.jit(fwd)
    grad_jit = jax.jit(jax.value_and_grad(loss))
    roof_jit = jax.jit(lambda basis, c: jnp.dot(c, basis))

    results = []
    for batch in batch_sizes:
        rng = np.random.default_rng(batch)
        shape = jnp.asarray(rng.normal(size=(batch, model.num_shape)), jnp.float32)
        expr = jnp.asarray(rng.normal(size=(batch, model.num_expression)), jnp.float32)
        pose = jnp.asarray(rng.normal(size=(batch, 15)) * 0.2, jnp.float32)
        coeffs = jnp.asarray(rng.normal(size=(batch, model.basis.shape[0])), jnp.float32)
        iters = max(3, FLAGS.frames_per_measure // batch)

        entry = {"batch": batch}
        t0 = time.perf_counter()
        compiled_fwd = fwd_jit.lower(model, embedding, shape, expr, pose).compile()
        entry["compile_forward_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        compiled_grad = grad_jit.lower((shape, expr, pose), model, embedding).compile()
        entry["compile_forward_backward_s"] = time.perf_counter() - t0
        for name, compiled in (("forward", compiled_fwd), ("forward_backward", compiled_grad)):
            mem = compiled.memory_analysis()
            if mem is not None:
                entry[name + "_xla_temp_mb"] = mem.temp_size_in_bytes / 2**20
                entry[name + "_xla_total_mb"] = (
                    mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                ) / 2**20

        entry["forward_fps"] = batch / _best_time(lambda: compiled_fwd(model, embedding, shape, expr, pose), iters, FLAGS.repeats)
        entry["forward_backward_fps"] = batch / _best_time(
            lambda: compiled_grad((shape, expr, pose), model, embedding), iters, FLAGS.repeats
        )
        entry["blend_product_only_fps"] = batch / _best_time(lambda: roof_jit(model.basis, coeffs), iters, FLAGS.repeats)
        entry["forward_fraction_of_blend_roofline"] = entry["forward_fps"] / entry["blend_product_only_fps"]
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        if stats and "peak_bytes_in_use" in stats:
            entry["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
        results.append(entry)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}), flush=True)

    reference = None
    if FLAGS.torch_python:
        if model_dir is None:
            print("--torch_python needs the random model (smplx cannot read this --model without chumpy); skipped")
        else:
            request = dict(
                model_dir=model_dir, batch_sizes=batch_sizes, n_shape=FLAGS.n_shape, n_expr=FLAGS.n_expr,
                frames_per_measure=FLAGS.frames_per_measure, repeats=FLAGS.repeats,
            )
            script = Path(__file__).with_name("smplx_reference.py")
            proc = subprocess.run(
                [FLAGS.torch_python, str(script), json.dumps(request)], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                raise RuntimeError(f"smplx reference failed:\n{proc.stderr[-3000:]}")
            reference = json.loads(proc.stdout.strip().splitlines()[-1])
            for entry, ref in zip(results, reference["results"]):
                entry["smplx_forward_fps"] = ref["forward_fps"]
                entry["smplx_forward_backward_fps"] = ref["forward_backward_fps"]
                entry["speedup_forward"] = entry["forward_fps"] / ref["forward_fps"]
                entry["speedup_forward_backward"] = entry["forward_backward_fps"] / ref["forward_backward_fps"]

    report = {
        "benchmark": "flame_jax forward (vertices + 68 landmarks) and forward+backward",
        "device": f"{device.platform} {device.device_kind}",
        "host": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "model": {"vertices": model.num_vertices, "faces": model.num_faces, "n_shape": model.num_shape,
                  "n_expr": model.num_expression, "source": FLAGS.model or "random FLAME-layout model"},
        "smplx": None if reference is None else {"torch": reference["torch"], "threads": reference["threads"]},
        "results": results,
    }
    default = Path(tempfile.gettempdir()) / "neuface_jax_benchmarks" / f"benchmark_flame_{device.platform}.json"
    out = Path(FLAGS.out or default)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    parts = []
    for e in results:
        s = f"B={e['batch']}: fwd {e['forward_fps']:.0f} f/s, fwd+bwd {e['forward_backward_fps']:.0f} f/s"
        if "speedup_forward" in e:
            s += f" ({e['speedup_forward']:.1f}x / {e['speedup_forward_backward']:.1f}x smplx)"
        parts.append(s)
    print("SUMMARY " + device.platform + ": " + "; ".join(parts) + f"  -> {out}")


if __name__ == "__main__":
    sys.exit(app.run(main))
