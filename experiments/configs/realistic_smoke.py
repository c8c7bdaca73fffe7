"""A seconds-long run of the realistic benchmark's machinery (tests/experiments/test_compare.py):
MediaPipe on the renders, occluders, withheld components, tuning on a development seed, test seed."""

REALISM = {"background": "cluttered", "light_jitter_deg": 35.0, "albedo_jitter": 0.15, "color_jitter": True,
           "occluder_fraction": 0.5, "occluder_episode_frames": 2, "detector": "mediapipe", "pose_bias": 0.05,
           "occlusion_bias": 0.15}
SETTINGS = [{"name": "mono_realistic", "views": "mono", "realism": REALISM, "withhold_shape": 50, "contour": "static"}]
NEUFACE = [{"name": "neuface", "method": "neuface", "init": "pretrained", "fit": {"learning_rate": 3e-4}}]
DIRECT = [
    {"name": "direct_keep", "method": "direct", "init": "pretrained", "fit": {"direct_undetected": "keep"}},
    {"name": "direct", "method": "direct", "init": "pretrained", "fit": {"direct_learning_rate": 3e-3}},
]


def _base(name, seeds, methods):
    return {"name": name, "description": "tiny realistic clips: checks the machinery, not the methods",
            "seeds": seeds, "num_frames": 4, "num_epochs": 2, "fit": {"chunk_frames": 2}, "settings": SETTINGS,
            "methods": methods}


def get_dev_config():
    return _base("realistic_smoke_dev", [900], NEUFACE + DIRECT)


def get_config():
    return _base("realistic_smoke", [0], NEUFACE + DIRECT[:1])
