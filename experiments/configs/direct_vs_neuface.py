"""Direct 3DMM optimization vs NeuFace (paper Table 2), from random and from pretrained weights.

The direct baseline is initialized with the same encoder's predictions as NeuFace (the mean face
for a random encoder), uses the same loss (10·L_lmk + 100·L_temp + 200·L_mv) plus L2 priors and
takes as many Adam steps as NeuFace (100 epochs × 2 chunks of 10 frames = 200). "pretrained" = the
small encoder trained on synthetic faces by experiments/pretrain_encoder.py (seeds ≥ 1,000,000; the
test clips use seeds 0, 1, 2) — the checkpoint shipped in neuface_jax/assets (the runner's default
"pretrained": "packaged"). Learning rates from experiments/configs/lr_sweep.py.
"""


def get_config():
    return {
        "name": "direct_vs_neuface",
        "description": "direct vs NeuFace, random and pretrained initialization, mono and 7-view (MEAD rig)",
        "seeds": [0, 1, 2],
        "num_frames": 20,
        "num_epochs": 100,
        "fit": {"chunk_frames": 10},
        "settings": [
            {"name": "mono", "views": "mono"},
            {"name": "mono_noisy", "views": "mono", "noise": 3.0, "drop": 0.1},
            # 7 views × 20 frames: ~3 CPU-minutes per NeuFace run, so two seeds.
            {"name": "mead7", "views": "mead", "seeds": [0, 1]},
            {"name": "mead7_noisy", "views": "mead", "noise": 3.0, "drop": 0.1, "seeds": [0, 1]},
        ],
        "methods": [
            {"name": "direct", "method": "direct", "init": "random", "fit": {"direct_learning_rate": 1e-2}},
            {"name": "neuface", "method": "neuface", "init": "random", "fit": {"learning_rate": 1e-3},
             "only_settings": ["mono", "mono_noisy"]},
            {"name": "direct_pretrained", "method": "direct", "init": "pretrained", "fit": {"direct_learning_rate": 1e-2}},
            {"name": "direct_pretrained_lr1e-3", "method": "direct", "init": "pretrained",
             "fit": {"direct_learning_rate": 1e-3}},
            {"name": "neuface_pretrained", "method": "neuface", "init": "pretrained", "fit": {"learning_rate": 3e-4}},
        ],
    }
