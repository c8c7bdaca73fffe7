"""The comparison again on 40-frame clips (longer, slower head motion than 20-frame clips).

Written when ``motion.generate_motion`` gave a clip's large head turn a Gaussian width of
max(T/6, 4) frames, so that in 20-frame clips a 55° turn happened within ~4 frames (~10°/frame);
the width is now max(T/6, 0.3 s · fps) (7.5 frames at 25 fps), so 20-frame clips turn at most
~4.5°/frame and 40-frame clips barely changed. This config checks the main conclusions (and the
temporal term) on 40-frame clips: mono (3 seeds) and 3-view (front ±30°, 2 seeds; 7-view × 40
frames costs ~5 CPU-minutes per NeuFace run).
"""

REFERENCE = {"landmark": 10.0, "temporal": 100.0, "multiview": 200.0}
NO_TEMPORAL = {"landmark": 10.0, "multiview": 200.0}


def get_config():
    return {
        "name": "long_clips",
        "description": "direct vs NeuFace (pretrained) and the temporal term on 40-frame clips",
        "seeds": [0, 1, 2],
        "num_frames": 40,
        "num_epochs": 100,
        "fit": {"chunk_frames": 10},
        "settings": [
            {"name": "mono40", "views": "mono"},
            {"name": "3view40", "views": "3", "seeds": [0, 1]},
        ],
        "methods": [
            {"name": "direct_pretrained", "method": "direct", "init": "pretrained", "fit": {"direct_learning_rate": 1e-2}},
            {"name": "direct_pretrained_lr1e-3", "method": "direct", "init": "pretrained",
             "fit": {"direct_learning_rate": 1e-3}, "only_settings": ["mono40"]},
            {"name": "neuface_pretrained", "method": "neuface", "init": "pretrained",
             "fit": {"learning_rate": 3e-4, "loss": REFERENCE}},
            {"name": "neuface_pretrained_no_temporal", "method": "neuface", "init": "pretrained",
             "fit": {"learning_rate": 3e-4, "loss": NO_TEMPORAL}},
        ],
    }
