r"""Pretrains the small encoder on synthetic faces (our stand-in for DECA's pretrained encoder).

    python experiments/pretrain_encoder.py [--out=/tmp/pretrained_small_encoder] \
        [--num_clips=200] [--num_steps=600]

Renders ``num_clips`` short synthetic clips (seeds from 1,000,000 on, disjoint from the test clips),
trains the small encoder supervised (``neuface_jax.synthetic.pretrain``), saves it with orbax
(``encoder.save_encoder``) at ``--out`` and a summary (settings, validation errors, seconds) next to
it as ``<out>.pretrain.json``. Use it with ``experiments/compare.py --pretrained=<out>`` (methods
with ``"init": "pretrained"``), ``neuface-jax demo --encoder=<out>`` or ``encoder.load_encoder(out)``.

The package ships the checkpoint these defaults made (``neuface_jax/assets/pretrained_small_encoder``
and its ``.pretrain.json``, ``pretrain.packaged_checkpoint()``); the default ``--out``
(``pretrain.RETRAINED_CHECKPOINT``) is outside the package so a re-run never overwrites it. To ship a
re-trained one, copy both into ``neuface_jax/assets/``.
"""

from __future__ import annotations

import json
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "/tmp/pretrained_small_encoder",  # = pretrain.RETRAINED_CHECKPOINT
                    "Checkpoint directory (overwritten).")
flags.DEFINE_integer("num_clips", None, "Synthetic identities (default: PretrainConfig's).")
flags.DEFINE_integer("frames_per_clip", None, "Frames per clip.")
flags.DEFINE_integer("views_per_clip", None, "Random cameras per clip.")
flags.DEFINE_integer("num_steps", None, "Adam steps.")
flags.DEFINE_integer("batch_size", None, "Images per step.")
flags.DEFINE_float("learning_rate", None, "Peak learning rate.")
flags.DEFINE_integer("seed", None, "Initialization / batch-order seed.")
flags.DEFINE_integer("log_every", 100, "Steps between log lines.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint write at INFO
    from neuface_jax.synthetic import pretrain

    overrides = {
        k: getattr(FLAGS, k)
        for k in ("num_clips", "frames_per_clip", "views_per_clip", "num_steps", "batch_size", "learning_rate", "seed")
        if getattr(FLAGS, k) is not None
    }
    config = pretrain.PretrainConfig().replace(**overrides)
    t0 = time.perf_counter()
    result = pretrain.pretrain(config, log=lambda s: print(s, flush=True), log_every=FLAGS.log_every)
    path = pretrain.save_pretrained(FLAGS.out, result, config)
    total = time.perf_counter() - t0
    print(json.dumps({"checkpoint": str(path), "seconds": {**result.seconds, "total": total},
                      "validation": result.validation}, indent=1))


if __name__ == "__main__":
    app.run(main)
