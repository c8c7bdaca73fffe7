r"""Where XLA:CPU spends the ResNet-50 update: each backbone stage's forward and forward + backward,
under several XLA flag settings and compute dtypes, beside PyTorch's (oneDNN) same stages.

One subprocess per variant (XLA reads ``XLA_FLAGS`` once per process). Per stage (stem, layer1-4 at
224²) it times the stage alone on a batch of ``--batch`` images: the forward, and the forward +
backward (random cotangent) with respect to the stage's weights and its input (the input gradient
is what a stage below needs; the stem's is not taken, as in training), and the whole encoder's
forward + backward. Figures are CPU seconds of the process (all threads) per pass, the fastest of
``--repeats``; on a shared machine they are steadier than wall time. Variants differ in XLA flags,
compute dtype and the convolutions' backward formulation (``core.conv``).

    python experiments/profile_encoder_cpu.py --torch_python=/tmp/torchvenv/bin/python \
        --out=experiments/results/profile_encoder_cpu.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 4, "Images per pass.")
flags.DEFINE_integer("size", 224, "Image side.")
flags.DEFINE_integer("repeats", 2, "Timed passes per measurement (the fastest is kept).")
flags.DEFINE_list("variants", ["default", "onednn", "onednn_custom_call", "xnnpack", "classic_runtime", "bfloat16"],
                  "Variants to run (see VARIANTS).")
flags.DEFINE_string("torch_python", None, "Python with torch: also time the same stages in PyTorch.")
flags.DEFINE_string("out", None, "JSON output (default $TMPDIR/neuface_jax_benchmarks/profile_encoder_cpu.json).")
flags.DEFINE_string("child", None, "Internal: run one variant in this process and print its JSON.")
flags.DEFINE_bool("whole", True, "Also time the whole encoder's forward + backward.")

#: name → (XLA_FLAGS additions, compute dtype, convolution backward). The backward is "xla" (XLA's own
#: transposes, ``EncoderConfig.conv_backward="xla"``) or a (kernel-gradient, input-gradient) mode pair
#: of ``core.conv`` (``conv.DW_MODES`` × ``conv.DX_MODES``); ("taps", "polyphase") is the default.
VARIANTS = {
    "default": ("", "float32", ("taps", "polyphase")),
    "xla_conv": ("", "float32", "xla"),
    "dw_taps4d": ("", "float32", ("taps4d", "polyphase")),
    "dw_im2col": ("", "float32", ("im2col", "polyphase")),
    "dw_xla": ("", "float32", ("lax", "polyphase")),
    "dx_xla": ("", "float32", ("taps", "lax")),
    "no_ynnpack": ("--xla_cpu_experimental_ynn_fusion_type=", "float32", ("taps", "polyphase")),
    "xla_conv_no_ynnpack": ("--xla_cpu_experimental_ynn_fusion_type=", "float32", "xla"),
    "onednn": ("--xla_cpu_use_onednn=true", "float32", "xla"),
    "onednn_custom_call": ("--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true", "float32",
                           "xla"),
    "xnnpack": ("--xla_cpu_use_xnnpack=true", "float32", "xla"),
    "classic_runtime": ("--xla_cpu_use_thunk_runtime=false", "float32", "xla"),
    "fast_math": ("--xla_cpu_enable_fast_math=true", "float32", "xla"),
    "bfloat16": ("", "bfloat16", ("taps", "polyphase")),
}


def _cpu_time(fn, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn())  # compile + warm
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        jax.block_until_ready(fn())
        best = min(best, time.process_time() - c0)
    return best


def _child(name: str) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from neuface_jax.core import conv as conv_lib
    from neuface_jax.core import encoder as encoder_lib

    _, dtype, backward = VARIANTS[name]
    if backward != "xla":  # the encoder builds its convolutions with this function
        conv_lib.conv_general_dilated = conv_lib.make_conv_general_dilated(*backward)
    cfg = encoder_lib.EncoderConfig(arch="resnet50", image_size=FLAGS.size, dtype=dtype,
                                    conv_backward="xla" if backward == "xla" else "gemm")
    model = encoder_lib.init_encoder(cfg, seed=0)
    bb = model.backbone
    graphdef, params, rest = nnx.split(bb, nnx.Param, ...)
    x_img = jax.random.uniform(jax.random.key(0), (FLAGS.batch, FLAGS.size, FLAGS.size, 3)).astype(cfg.compute_dtype)
    out = {"variant": name, "xla_flags": os.environ.get("XLA_FLAGS", ""), "dtype": dtype, "batch": FLAGS.batch,
           "conv_backward": backward, "stages": {}}
    for k, stage in enumerate(encoder_lib.stage_names(cfg)):
        shape = encoder_lib.prefix_feature_shape(cfg, k, FLAGS.size)
        x = jax.random.uniform(jax.random.key(k), (FLAGS.batch,) + shape).astype(cfg.compute_dtype)

        def run(p, x, k=k):
            return nnx.merge(graphdef, p, rest).run_stages(x, True, k, k + 1)

        fwd = jax.jit(run)
        # A random cotangent (a plain sum would give XLA a constant one to fold); the stem's input
        # gradient is not taken (the images need none, and training never computes it).
        ct = jax.random.normal(jax.random.key(100 + k), jax.eval_shape(run, params, x).shape)
        loss = lambda p, x, ct=ct: jnp.sum(run(p, x).astype(jnp.float32) * ct)
        bwd = jax.jit(jax.grad(loss, argnums=0 if k == 0 else (0, 1)))
        out["stages"][stage] = {"forward_cpu_s": _cpu_time(lambda: fwd(params, x), FLAGS.repeats),
                                "forward_backward_cpu_s": _cpu_time(lambda: bwd(params, x), FLAGS.repeats)}
        logging.info("%s %s %s", name, stage, out["stages"][stage])
    if FLAGS.whole:
        g, p_all, r_all = encoder_lib.split_params(model)
        whole = jax.jit(jax.grad(lambda p: jnp.sum(encoder_lib.apply(g, p, r_all, x_img))))
        out["encoder_forward_backward_cpu_s"] = _cpu_time(lambda: whole(p_all), FLAGS.repeats)
    return out


def main(argv):
    del argv
    if FLAGS.child:
        print(json.dumps(_child(FLAGS.child)), flush=True)
        return
    results = []
    for name in FLAGS.variants:
        extra = VARIANTS[name][0]
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + extra).strip())
        cmd = [sys.executable, __file__, f"--child={name}", f"--batch={FLAGS.batch}", f"--size={FLAGS.size}",
               f"--repeats={FLAGS.repeats}", f"--whole={FLAGS.whole}"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            results.append({"variant": name, "xla_flags": env["XLA_FLAGS"],
                            "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        results[-1]["wall_s"] = time.perf_counter() - t0
        print(json.dumps(results[-1]), flush=True)
    torch = None
    if FLAGS.torch_python:
        script = Path(__file__).resolve().parent / "torch_reference_step.py"
        proc = subprocess.run([FLAGS.torch_python, str(script), "--per_stage", f"--frames={FLAGS.batch}", "--views=1",
                               f"--size={FLAGS.size}", f"--steps={FLAGS.repeats}"], capture_output=True, text=True)
        torch = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
        print(json.dumps(torch), flush=True)
    report = {"benchmark": "ResNet-50 stages alone: forward and forward+backward CPU seconds per pass",
              "batch": FLAGS.batch, "size": FLAGS.size, "cpu_count": os.cpu_count(), "variants": results,
              "torch": torch, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    out = Path(FLAGS.out or Path(os.environ.get("TMPDIR", "/tmp")) / "neuface_jax_benchmarks" / "profile_encoder_cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    ok = [r for r in results if "stages" in r]
    stages = list(ok[0]["stages"]) if ok else []
    header = "variant".ljust(20) + "".join(f"{s:>22}" for s in stages) + "   encoder fwd+bwd"
    print(header + "\n" + "(forward / forward+backward CPU-s per pass)")
    rows = [(r["variant"], r) for r in ok]
    if torch and "stages" in torch:
        rows.append(("pytorch (oneDNN)", torch))
    for name, r in rows:
        cells = "".join(f"{r['stages'][s]['forward_cpu_s']:>10.3f} / {r['stages'][s]['forward_backward_cpu_s']:<9.3f}"
                        for s in stages)
        print(name.ljust(20) + cells + f"   {r.get('encoder_forward_backward_cpu_s', float('nan')):.3f}")
    for r in results:
        if "error" in r:
            print(f"{r['variant']}: failed ({r['error']})")
    print(f"-> {out}")


if __name__ == "__main__":
    sys.exit(app.run(main))
