"""Fewer FLOPs per clip, and which cheap configuration can be NeuFace's default: ``trainable_stages.py``'s
comparison (full fine-tuning vs the last 2 / 1 backbone stages + head, the pretrained small encoder at 64×64,
20-frame monocular and 3-view clips, chunks of 10, lr 3e-4) extended by fewer epochs: 50 / 30 epochs with the
cosine schedule (``lr_schedule="cosine"``), early stopping on the epoch loss (``early_stop``), and half the
epochs at a higher rate. The 100-epoch runs keep their names, so ``trainable_stages``' results resume here.
"""

import runpy
from pathlib import Path

_BASE = runpy.run_path(str(Path(__file__).with_name("trainable_stages.py")))
_nf = _BASE["_nf"]
#: early stopping: window means of 5 epochs, stop below a 2 % relative decrease.
EARLY_STOP = {"early_stop": 0.02, "early_stop_window": 5}


def _cos(epochs):
    return {"num_epochs": epochs, "lr_schedule": "cosine"}


def get_config():
    methods = [_nf("full"), _nf("full_cos30", **_cos(30)), _nf("full_es", **EARLY_STOP)]
    for k in (2, 1):
        methods += [
            _nf(f"trainable_stages_{k}", trainable_stages=k),
            _nf(f"ts{k}_cos50", trainable_stages=k, **_cos(50)),
            _nf(f"ts{k}_cos30", trainable_stages=k, **_cos(30)),
            _nf(f"ts{k}_es", trainable_stages=k, **EARLY_STOP),
        ]
    # Is it the epochs or the learning-rate budget? Half the epochs at a higher rate.
    methods += [
        _nf("ts1_cos50_lr1e-3", trainable_stages=1, **_cos(50), learning_rate=1e-3),
        _nf("ts1_c50_lr6e-4", trainable_stages=1, num_epochs=50, learning_rate=6e-4),
    ]
    return {**_BASE["get_config"](), "name": "fewer_updates", "methods": methods,
            "description": "NeuFace full vs trainable_stages 2 / 1 at 100 constant-lr epochs, 50 / 30 cosine "
                           "epochs, early stopping (pretrained small encoder)"}
