"""Fewer trainable stages against full fine-tuning from a ResNet-50 prior (the DECA-layout backbone
whose update step the speed work is about), as ``trainable_stages.py`` does for the small encoder.

The prior is a ResNet-50 with the demo head's FLAME-sized output, pretrained on synthetic renders of
the demo head at 96 px (what a shared CPU can train in half an hour; the backbone's stages and
parameters are those of the 224-px network, on a 3×3 instead of 7×7 last feature map):

    neuface-jax pretrain --arch resnet50 --image_size 96 --preset cpu --num_steps 200 --batch_size 32 \\
        --learning_rate 1e-3 --warmup_steps 20 --pool_images 3072 --out ~/priors/demo_r50_96

then ``python experiments/compare.py --config=resnet50_trainable_stages --pretrained=~/priors/demo_r50_96
--paired=full`` (``NEUFACE_R50_PRIOR`` sets the default folder; the measured runs added ``--num_epochs=50``,
what the CPU allowed). ``trainable_stages.py``'s clips and methods at annotate's rate from a ResNet-50
checkpoint (the reference's 2e-5): chunks of 10 frames, 20-frame monocular and 3-view clips.
"""

import os
import runpy
from pathlib import Path

_BASE = runpy.run_path(str(Path(__file__).with_name("trainable_stages.py")))
#: annotate's rate from a ResNet-50 checkpoint (``priors.starting.PRETRAINED_LR``; written out so that
#: loading the config imports nothing heavy).
LR = 2e-5


def get_config():
    base = _BASE["get_config"]()
    methods = [{**m, "fit": {**m["fit"], "learning_rate": LR}} for m in base["methods"]]
    return {
        **base,
        "name": "resnet50_trainable_stages",
        "description": "NeuFace full fine-tuning vs the last 2 / 1 backbone stages + head (ResNet-50 prior at 96 px)",
        "pretrained": os.path.expanduser(os.environ.get("NEUFACE_R50_PRIOR", "~/priors/demo_r50_96")),
        # A missing folder is an error (not a small encoder pretrained there in its place).
        "pretrained_arch": "resnet50",
        "methods": methods,
    }
