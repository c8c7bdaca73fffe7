"""Learning rates of NeuFace (random and pretrained initialization) and of the direct baseline.

The reference 2e-5 is tuned for a pretrained ResNet-50 (DECA); the small encoder is a different
network, so the right step size is measured here. 20-frame clips in chunks of 10 (200 Adam steps).
"""

NEUFACE_RANDOM = (1e-4, 3e-4, 1e-3, 3e-3)
NEUFACE_PRETRAINED = (2e-5, 1e-4, 3e-4, 1e-3)


def get_config():
    methods = [
        {"name": f"neuface_random_{lr:g}", "method": "neuface", "init": "random", "fit": {"learning_rate": lr}}
        for lr in NEUFACE_RANDOM
    ] + [
        {"name": f"neuface_pre_{lr:g}", "method": "neuface", "init": "pretrained", "fit": {"learning_rate": lr}}
        for lr in NEUFACE_PRETRAINED
    ] + [
        {"name": "direct_random_0.01", "method": "direct", "init": "random", "fit": {"direct_learning_rate": 1e-2}},
        {"name": "direct_pre_0.001", "method": "direct", "init": "pretrained", "fit": {"direct_learning_rate": 1e-3}},
        {"name": "direct_pre_0.01", "method": "direct", "init": "pretrained", "fit": {"direct_learning_rate": 1e-2}},
    ]
    return {
        "name": "lr_sweep",
        "description": "learning-rate sweep, random vs pretrained init (mono and 3-view, 20 frames, chunks of 10)",
        "seeds": [0],
        "num_frames": 20,
        "num_epochs": 100,
        "fit": {"chunk_frames": 10},
        "settings": [{"name": "mono", "views": "mono"}, {"name": "3view", "views": "3"}],
        "methods": methods,
    }
