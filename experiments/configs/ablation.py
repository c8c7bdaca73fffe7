"""Loss ablation of NeuFace (paper §4): L2D; +multi-view; +temporal; all.

NeuFace from the pretrained small encoder. Monocular clips have no multi-view term, so there
"+multi-view" equals "L2D" and "all" equals "+temporal" (the runner skips the duplicates).
Clean landmarks and noisy/occluded ones (detector noise ×3, 10 % of frames without detection).
"""

LOSSES = {
    "L2D": {"landmark": 10.0},
    "L2D+multiview": {"landmark": 10.0, "multiview": 200.0},
    "L2D+temporal": {"landmark": 10.0, "temporal": 100.0},
    "all": {"landmark": 10.0, "temporal": 100.0, "multiview": 200.0},
}


def get_config():
    return {
        "name": "ablation",
        "description": "NeuFace loss ablation (pretrained init), mono and 7-view, clean and noisy",
        "seeds": [0, 1, 2],
        "num_frames": 20,
        "num_epochs": 100,
        "fit": {"chunk_frames": 10},
        "settings": [
            {"name": "mono", "views": "mono"},
            {"name": "mono_noisy", "views": "mono", "noise": 3.0, "drop": 0.1},
            # 7 views: ~2-3 CPU-minutes per run, one seed.
            {"name": "mead7", "views": "mead", "seeds": [0]},
            {"name": "mead7_noisy", "views": "mead", "noise": 3.0, "drop": 0.1, "seeds": [0]},
        ],
        "methods": [
            {"name": name, "method": "neuface", "init": "pretrained", "fit": {"learning_rate": 3e-4, "loss": loss},
             "needs_views": 2 if "multiview" in loss else 1}
            for name, loss in LOSSES.items()
        ],
    }
