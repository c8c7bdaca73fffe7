"""experiments/compare.py: configs load, a tiny experiment runs end to end, tables and JSON."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("experiments_compare", ROOT / "experiments" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("experiments_compare", module)
    spec.loader.exec_module(module)
    return module


def test_every_config_loads(compare):
    names = sorted(p.stem for p in (ROOT / "experiments" / "configs").glob("*.py") if not p.stem.startswith("_"))
    assert {"direct_vs_neuface", "ablation", "smoke"} <= set(names)
    for name in names:
        cfg = compare.load_config(name)
        assert cfg["methods"] and cfg["settings"] and cfg["seeds"], name
        for m in cfg["methods"]:
            assert m["method"] in ("neuface", "direct") and m["init"] in ("random", "pretrained")
    ablation = compare.load_config("ablation")
    assert [m["fit"]["loss"] for m in ablation["methods"]] == [
        {"landmark": 10.0}, {"landmark": 10.0, "multiview": 200.0}, {"landmark": 10.0, "temporal": 100.0},
        {"landmark": 10.0, "temporal": 100.0, "multiview": 200.0},
    ]
    with pytest.raises(FileNotFoundError, match="known"):
        compare.load_config("no_such_experiment")
    with pytest.raises(ValueError, match="method"):
        compare.normalize_config({"name": "x", "methods": [{"method": "magic"}]})


@pytest.mark.slow
def test_tiny_experiment_runs_and_summarizes(compare, tmp_path):
    cfg = compare.normalize_config({
        "name": "tiny",
        "seeds": [3],
        "num_frames": 4,
        "num_epochs": 1,
        "fit": {"chunk_frames": 2},
        "encoder": {"small_widths": (4, 8), "small_blocks": (1, 1), "head_hidden": 16, "image_size": 16},
        "settings": [{"name": "two", "views": "front,left_30", "noise": 3.0, "drop": 0.5}],
        "methods": [
            {"name": "neuface", "method": "neuface", "fit": {"learning_rate": 1e-3}},
            {"name": "three_views", "method": "neuface", "needs_views": 3, "fit": {"learning_rate": 1e-3}},
        ],
    })
    calls = []
    result = compare.run_experiment(cfg, on_run=lambda runs, gt: calls.append(len(runs)), log=lambda s: None)
    runs = result["runs"]
    # The variant that needs three views is skipped on the two-view clip.
    assert [(r["setting"], r["method"]) for r in runs] == [("two", "neuface")]
    assert calls == [1]
    for r in runs:
        for k in compare.METRICS:
            assert math.isfinite(r["metrics"][k]), (r["method"], k)
    two = runs[0]["metrics"]
    assert "jitter_detected_mm" in two and two["cvd_mm"] >= 0 and "vertex_error_similarity_mm" in two
    assert set(result["ground_truth"]["two"]) == {"3"}
    summary = compare.summarize(cfg, runs)
    assert summary["two"]["neuface"]["nme_percent"][2] == 1
    table = compare.format_summary(summary)
    assert "[two]" in table and "neuface" in table and "±" in table
    # Resuming with everything done runs nothing.
    again = compare.run_experiment(cfg, previous=runs, previous_ground_truth=result["ground_truth"], log=lambda s: None)
    assert len(again["runs"]) == 1
    json.dumps(compare._jsonable({"config": cfg, "runs": runs}))


def test_prepare_undetected_frames(compare):
    """Undetected frames keep their crops (``crops.prepare_clip``), or are blacked out on request."""
    import numpy as np

    from neuface_jax.synthetic import synth

    clip = synth.synthesize_clip(seed=2, rig="mono", config=synth.SynthConfig(num_frames=12, image_size=64,
                                                                              crop_size=64, drop_frame_probability=0.3))
    dropped = ~clip.valid
    assert dropped.any() and clip.valid.any()
    kept = compare.prepare(clip, 16, 64)
    black = compare.prepare(clip, 16, 64, images_for_undetected_frames=False)
    img_kept, img_black = np.asarray(kept.images), np.asarray(black.images)
    assert np.all(img_kept[dropped].reshape(int(dropped.sum()), -1).std(-1) > 0.02)
    assert np.all(img_black[dropped] == 0.0)
    np.testing.assert_array_equal(img_kept[clip.valid], img_black[clip.valid])
    np.testing.assert_array_equal(np.asarray(kept.frame_mask), clip.valid.astype(np.float32))
    assert compare.load_config("smoke")["pretrained"] == "packaged"
