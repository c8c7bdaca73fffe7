"""NeuFace settings beyond the learning rate: chunk size, frozen BatchNorm, loss weights, extended
temporal terms — from the pretrained encoder, monocular 40-frame clips (realistic head motion, see
long_clips.py) with noisy/occluded landmarks (detector noise ×3, 10 % of frames without detection).

The base ("reference") is the released code's loss (10·L_lmk + 100·L_temp [+ 200·L_mv]), frozen BN,
chunks of 10 frames, lr 3e-4 (the best pretrained rate of lr_sweep).
"""

from neuface_jax.core import losses

LR = 3e-4
REFERENCE = {"landmark": 10.0, "temporal": 100.0, "multiview": 200.0}


def _nf(name, **fit):
    return {"name": name, "method": "neuface", "init": "pretrained", "fit": {"learning_rate": LR, **fit}}


def get_config():
    return {
        "name": "options",
        "description": "NeuFace options: chunk size, BN, loss weights, smoothing terms (pretrained init, mono)",
        "seeds": [0, 1],
        "num_frames": 40,
        "num_epochs": 100,
        "fit": {"chunk_frames": 10},
        "settings": [{"name": "mono40_noisy", "views": "mono", "noise": 3.0, "drop": 0.1}],
        "methods": [
            _nf("reference"),
            _nf("chunk_5", chunk_frames=5),
            _nf("chunk_20", chunk_frames=20),
            _nf("chunk_40", chunk_frames=40),
            _nf("bn_trained", freeze_bn=False),
            _nf("temporal_x10", loss={**REFERENCE, "temporal": 1000.0}),
            _nf("landmark_weights", landmark_weights=tuple(float(w) for w in losses.IBUG68_REFERENCE_WEIGHTS)),
            _nf("smooth_expr_jaw", temporal_across_chunks=True,
                loss={**REFERENCE, "expression_smooth": 100.0, "jaw_smooth": 100.0}),
            {"name": "direct_pretrained", "method": "direct", "init": "pretrained", "fit": {"direct_learning_rate": 1e-2}},
            {"name": "direct_pretrained_smooth", "method": "direct", "init": "pretrained",
             "fit": {"direct_learning_rate": 1e-2, "loss": {**REFERENCE, "expression_smooth": 100.0, "jaw_smooth": 100.0}}},
        ],
    }
