"""A seconds-long run of the comparison machinery (used by tests/experiments/test_compare.py)."""


def get_config():
    return {
        "name": "smoke",
        "description": "tiny clips, two epochs: checks the runner, not the method",
        "seeds": [0],
        "num_frames": 6,
        "num_epochs": 2,
        "fit": {"chunk_frames": 3},
        "settings": [
            {"name": "mono", "views": "mono"},
            {"name": "2view_noisy", "views": "front,left_30", "noise": 3.0, "drop": 0.1},
        ],
        "methods": [
            {"name": "direct", "method": "direct", "fit": {"direct_learning_rate": 1e-2}},
            {"name": "neuface", "method": "neuface", "fit": {"learning_rate": 1e-3}},
        ],
    }
