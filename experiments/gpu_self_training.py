r"""Self-training throughput (images/s) of the encoder training step, fp32 and bf16, on whatever device JAX has.

    python experiments/gpu_self_training.py [--archs=resnet50,small] [--dtypes=float32,bfloat16] \
        [--batch_size=64] [--steps=30] [--out=experiments/results/gpu_self_training_<platform>.json]
    python experiments/gpu_self_training.py --tiny      # a seconds-long CPU smoke run (tests use it)

The step is ``training.train_encoder``'s: ``synthetic.pretrain.pretrain`` (the supervised losses through the
demo head's FLAME forward, Adam, training-mode BatchNorm) on labelled frames in ``to_pretrain_data``'s form.
The frames are random pixels with plausible labels (zero identity/expression, small random poses, the default
camera, the labels' own landmarks): throughput does not depend on what the pixels show, and the GPU machine
has no video to annotate. Each configuration runs ``--steps`` steps; the first (compilation) is timed apart and
images/s counts the others. ``small`` is the shipped 64 px encoder, ``resnet50`` DECA's backbone at 224 px.
The JSON (rewritten after every configuration, so a time limit keeps what was measured) records the
device, the command and every figure.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import sys
import time

import numpy as np
from absl import app, flags, logging

import flame_jax
import jax
from neuface_jax.core import encoder as encoder_lib
from neuface_jax.core import fit as fit_lib
from neuface_jax.synthetic import pretrain as pretrain_lib
from neuface_jax.training import self_training as st

FLAGS = flags.FLAGS
flags.DEFINE_list("archs", ["resnet50", "small"], "Encoders: resnet50 (224 px) and/or small (64 px).")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Backbone compute dtypes.")
flags.DEFINE_integer("batch_size", 64, "Images per step.")
flags.DEFINE_integer("steps", 30, "Steps per configuration (the first, with compilation, is timed apart).")
flags.DEFINE_bool("tiny", False, "A CPU smoke run: a 2-stage 16 px encoder, batch 4, 3 steps, fp32 only.")
flags.DEFINE_string("out", None, "Results JSON (default experiments/results/gpu_self_training_<platform>.json).")


def encoder_config(arch: str, dtype: str, model) -> encoder_lib.EncoderConfig:
    n = dict(n_shape=model.num_shape, n_expr=model.num_expression, dtype=dtype)
    if FLAGS.tiny:
        return encoder_lib.EncoderConfig.small(image_size=16, small_widths=(4, 8), small_blocks=(1, 1),
                                               head_hidden=16, **n)
    if arch == "small":
        return encoder_lib.EncoderConfig.small(**n)
    return encoder_lib.EncoderConfig(arch="resnet50", layout="compact", image_size=224, **n)


def labelled_batch(n: int, size: int, face: fit_lib.FaceModel, seed: int = 0) -> pretrain_lib.PretrainData:
    """``n`` frames of random pixels with consistent labels (landmarks of the labelled mesh)."""
    rng = np.random.default_rng(seed)
    model = face.flame
    pose = np.zeros((n, 15), np.float32)
    pose[:, :3] = rng.normal(0, 0.2, (n, 3))
    pose[:, 6] = np.abs(rng.normal(0, 0.1, n))
    shape = np.zeros((n, model.num_shape), np.float32)
    expr = np.zeros((n, model.num_expression), np.float32)
    cam = np.tile(np.asarray([encoder_lib.DEFAULT_CAM_SCALE, 0.0, 0.0], np.float32), (n, 1))
    _, lmk, _ = fit_lib.evaluate_params(face, shape, expr, pose, cam)
    return pretrain_lib.PretrainData(
        images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), landmarks=np.asarray(lmk, np.float32),
        shape=shape, expression=expr, pose=pose, cam=cam, clip_index=np.zeros(n, np.int32),
    )


def measure(arch: str, dtype: str, face) -> dict:
    cfg = encoder_config(arch, dtype, face.flame)
    bs = 4 if FLAGS.tiny else FLAGS.batch_size
    steps = 3 if FLAGS.tiny else FLAGS.steps
    data = labelled_batch(2 * bs, cfg.image_size, face)
    config = st.SelfTrainConfig(steps=steps, batch_size=bs, warmup_steps=1).pretrain_config()
    t0 = time.perf_counter()
    result = pretrain_lib.pretrain(config, cfg, data=data, face=face, encoder=encoder_lib.init_encoder(cfg),
                                   log_every=steps)
    wall = time.perf_counter() - t0
    timed = result.seconds["train"] - result.seconds["compile"]
    return {
        "arch": cfg.arch, "dtype": dtype, "image_size": cfg.image_size, "batch_size": bs, "steps": steps,
        "compile_and_first_step_s": result.seconds["compile"], "timed_steps_s": timed,
        "images_per_s": (steps - 1) * bs / timed if timed > 0 else None, "wall_s": wall,
        "final_loss": result.history["total"][-1],
    }


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    device = jax.devices()[0]
    face = fit_lib.FaceModel(flame_jax.demo_model(), flame_jax.demo_landmark_embedding())
    archs = ["small"] if FLAGS.tiny else FLAGS.archs
    dtypes = ["float32"] if FLAGS.tiny else FLAGS.dtypes
    doc = {
        "command": " ".join([pathlib.Path(sys.argv[0]).name] + sys.argv[1:]),
        "device": {"platform": device.platform, "kind": getattr(device, "device_kind", ""),
                   "count": jax.device_count()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg": list(os.getloadavg())},
        "runs": [],
    }
    out = pathlib.Path(FLAGS.out or pathlib.Path(__file__).resolve().parent / "results"
                       / f"gpu_self_training_{device.platform}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    for arch in archs:
        for dtype in dtypes:
            row = measure(arch, dtype, face)
            doc["runs"].append(row)
            out.write_text(json.dumps(doc, indent=1) + "\n")  # after every row: a time limit keeps what was measured
            print(f"self-training {row['arch']} {row['image_size']} px {dtype}: {row['images_per_s']:.1f} images/s "
                  f"(batch {row['batch_size']}, compile {row['compile_and_first_step_s']:.1f} s)", flush=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
