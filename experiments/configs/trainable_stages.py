"""Fewer trainable stages (``FitConfig.trainable_stages``) against full fine-tuning: the frozen
prefix of the backbone is computed once per clip and only the later stages and the head are
optimized. From the shipped pretrained small encoder (stem + 4 stages at 64×64: what fits in CPU
time; the ResNet-50 ratio of saved work is larger), 20-frame monocular and 3-view clips, three
seeds, the reference loss, chunks of 10 frames, lr 3e-4 (the best pretrained rate of lr_sweep).
"""

LR = 3e-4


def _nf(name, **fit):
    return {"name": name, "method": "neuface", "init": "pretrained", "fit": {"learning_rate": LR, **fit}}


def get_config():
    return {
        "name": "trainable_stages",
        "description": "NeuFace full fine-tuning vs the last 2 / 1 backbone stages + head (pretrained small encoder)",
        "seeds": [0, 1, 2],
        "num_frames": 20,
        "num_epochs": 100,
        "fit": {"chunk_frames": 10},
        "settings": [
            {"name": "mono20", "views": "mono"},
            {"name": "3view20", "views": "3"},
        ],
        "methods": [
            _nf("full"),
            _nf("trainable_stages_2", trainable_stages=2),
            _nf("trainable_stages_1", trainable_stages=1),
        ],
    }
