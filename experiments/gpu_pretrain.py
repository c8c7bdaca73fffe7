r"""Pretraining throughput: training-step images/s in float32 and bfloat16, and host rendering images/s.

    python experiments/gpu_pretrain.py [--archs=resnet50,small] [--batch_size=64] [--steps=20] \
        [--render_images=128] [--workers=8] [--out=experiments/results/gpu_pretrain.json]
    python experiments/gpu_pretrain.py --tiny --out=/tmp/gpu_pretrain_tiny.json     # seconds, on a CPU

For each architecture (``resnet50`` at 224 px: the accelerator prior; ``small`` at 64 px) and
dtype, ``pretrain.step_throughput`` times ``neuface-jax pretrain``'s compiled step on one rendered
batch reused (the device's speed; the batch sharded over every local device as in training),
after a compile and warm-up it reports apart. The renderer runs on the host CPU: its images/s with
``--workers`` threads (``pretrain.SyntheticStream`` streaming mode) says whether it can feed the
device (``neuface-jax pretrain --pool_images`` trades variety for speed when it cannot). The JSON
holds the device, the command and every figure.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_list("archs", ["resnet50", "small"], "Encoders: resnet50 (224 px), small (64 px).")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Backbone dtypes.")
flags.DEFINE_integer("batch_size", 64, "Images per step (all devices together).")
flags.DEFINE_integer("steps", 20, "Timed steps.")
flags.DEFINE_integer("render_images", 128, "Images rendered to time the host renderer (0: skip).")
flags.DEFINE_integer("workers", 8, "Rendering threads.")
flags.DEFINE_bool("tiny", False, "A seconds-long CPU smoke run: small encoder at 32 px, batch 2, 2 steps.")
flags.DEFINE_string("out", str(pathlib.Path(__file__).resolve().parent / "results" / "gpu_pretrain.json"),
                    "Results JSON.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import dataclasses

    import jax

    import flame_jax
    from neuface_jax.core import fit as fit_lib
    from neuface_jax.synthetic import pretrain

    archs, dtypes, batch = FLAGS.archs, FLAGS.dtypes, FLAGS.batch_size
    steps, n_render = FLAGS.steps, FLAGS.render_images
    if FLAGS.tiny:
        archs, batch, steps, n_render = ["small"], 2 * jax.device_count(), 2, 4
    face = fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    assets = pretrain.RenderAssets.build(face, num_albedos=1)
    result = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(), "devices": jax.device_count(),
        "host": f"{platform.machine()} {os.cpu_count()} CPUs", "steps": {}, "render": {},
    }
    for arch in archs:
        cfg = pretrain.starting_lib.default_encoder_config(face.flame)
        if arch == "resnet50":
            cfg = dataclasses.replace(cfg, arch="resnet50", image_size=224, head_hidden=1024)
        if FLAGS.tiny:
            cfg = dataclasses.replace(cfg, image_size=32, small_widths=(4, 8), small_blocks=(1, 1), head_hidden=16)
        data = pretrain.render_examples(assets, pretrain.RenderConfig(), 0, batch, cfg.image_size)
        for dtype in dtypes:
            r = pretrain.step_throughput(cfg, face, data, bf16=dtype == "bfloat16", steps=steps)
            result["steps"][f"{arch}/{dtype}"] = {**r, "image_size": cfg.image_size}
            print(f"{arch:8s} {dtype:8s} batch {batch}: {r['images_per_s']:8.1f} images/s ({r['step_ms']:.1f} ms/step, "
                  f"compile {r['compile_s']:.1f} s)", flush=True)
        if n_render:
            # Warm-up (compiles the posing for this chunk size), then chunks rendered on --workers threads,
            # as SyntheticStream does when streaming.
            chunk = min(16, n_render)
            pretrain.render_examples(assets, pretrain.RenderConfig(), 0, chunk, cfg.image_size)
            k = -(-n_render // chunk)
            t0 = time.perf_counter()
            with ThreadPoolExecutor(FLAGS.workers) as pool:
                list(pool.map(lambda i: pretrain.render_examples(assets, pretrain.RenderConfig(), i + 1, chunk,
                                                                 cfg.image_size), range(k)))
            dt = time.perf_counter() - t0
            result["render"][arch] = {"images_per_s": k * chunk / dt, "workers": FLAGS.workers,
                                      "image_size": cfg.image_size, "images": k * chunk}
            print(f"{arch:8s} host rendering: {result['render'][arch]['images_per_s']:.1f} images/s "
                  f"({FLAGS.workers} threads)", flush=True)
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
