"""experiments/compare.py: configs load, a tiny experiment runs end to end, tables and JSON."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from neuface_jax.priors import starting

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
    # A config that names its prior's architecture refuses a missing folder (nothing is trained there).
    r50 = compare.load_config("resnet50_trainable_stages")
    assert r50["pretrained_arch"] == "resnet50" and {m["name"] for m in r50["methods"]} >= {"full", "trainable_stages_1"}
    assert {m["fit"]["learning_rate"] for m in r50["methods"]} == {starting.PRETRAINED_LR}  # annotate's rate
    with pytest.raises(ValueError, match="no resnet50 prior"):
        compare.run_experiment({**r50, "pretrained": str(ROOT / "no_such_prior")}, log=lambda s: None)


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


def test_same_seed_twice_gives_the_same_numbers(compare):
    """Determinism: a (seed, setting, method) run repeated in one process reproduces every metric."""
    cfg = compare.normalize_config({
        "name": "determinism", "seeds": [5], "num_frames": 4, "num_epochs": 1, "fit": {"chunk_frames": 4},
        "encoder": {"small_widths": (4, 8), "small_blocks": (1, 1), "head_hidden": 16, "image_size": 16},
        "settings": [{"name": "mono", "views": "mono", "noise": 3.0, "drop": 0.25}],
        "methods": [{"name": "neuface", "method": "neuface", "fit": {"learning_rate": 1e-3}},
                    {"name": "direct", "method": "direct", "fit": {"direct_steps": 5}}],
    })
    a = compare.run_experiment(cfg, log=lambda s: None)["runs"]
    b = compare.run_experiment(cfg, log=lambda s: None)["runs"]
    assert [r["method"] for r in a] == ["neuface", "direct"]
    for ra, rb in zip(a, b):
        assert set(ra["metrics"]) == set(rb["metrics"])
        for k, v in ra["metrics"].items():  # exactly equal (NaN where both are NaN)
            assert v == rb["metrics"][k] or (v != v and rb["metrics"][k] != rb["metrics"][k]), (ra["method"], k)


def _fake_runs(values):
    """runs of compare.run_experiment from {(seed, method): {metric: value}} on setting "s"."""
    return [{"seed": seed, "setting": "s", "method": m, "metrics": v, "seconds": 1.0} for (seed, m), v in values.items()]


def test_wins_and_tuning_rule(compare):
    spec = importlib.util.spec_from_file_location("experiments_realistic", ROOT / "experiments" / "realistic_benchmark.py")
    rb = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("compare", compare)
    spec.loader.exec_module(rb)
    cfg = compare.normalize_config({
        "name": "t", "seeds": [0, 1], "settings": [{"name": "s", "views": "mono"}],
        "methods": [{"name": n, "method": f, "family": f} for n, f in
                    (("nf", "neuface"), ("nf2", "neuface"), ("d", "direct"), ("d2", "direct"))],
    })
    m = lambda ve, acc, nme: {"vertex_error_similarity_mm": ve, "accel_error_mm": acc, "nme_percent": nme,  # noqa: E731
                              "cvd_mm": 0.0, "msi_vertices": 1.0}
    runs = _fake_runs({
        (0, "nf"): m(1.0, 1.0, 5.0), (1, "nf"): m(1.0, 1.0, 5.0),
        (0, "nf2"): m(2.0, 2.0, 5.0), (1, "nf2"): m(2.0, 2.0, 5.0),
        (0, "d"): m(2.0, 1.0, 4.0), (1, "d"): m(0.5, 3.0, 4.0),
        (0, "d2"): m(4.0, 4.0, 4.0),  # one seed only: does not compete
    })
    w = compare.wins(cfg, runs, methods=["nf", "d"])
    assert w["s"]["nf"]["vertex_error_similarity_mm"] == 1 and w["s"]["d"]["vertex_error_similarity_mm"] == 1
    assert w["s"]["d"]["nme_percent"] == 2 and w["s"]["nf"]["cvd_mm"] == 2 == w["s"]["d"]["cvd_mm"]  # ties count
    tuning = rb.select(cfg, runs)
    assert tuning["s"]["neuface"]["chosen"] == "nf" and tuning["s"]["neuface"]["scores"]["nf"] == 1.0
    assert tuning["s"]["direct"]["chosen"] == "d" and set(tuning["s"]["direct"]["scores"]) == {"d"}
    r = rb.ratios(runs, "s", "nf", "d")
    assert r["vertex_error_similarity_mm"][0] == pytest.approx((0.5 + 2.0) / 2)
    assert r["vertex_error_similarity_mm"][3] == pytest.approx(1.0 / 1.25)
    assert "cvd_mm" not in r  # no ratio to a zero


@pytest.mark.long
def test_realistic_benchmark_end_to_end(compare, landmarker_model, tmp_path, monkeypatch):
    """experiments/realistic_benchmark.py on its smoke config: tuning on a development seed, the test
    run with the chosen variants, the docs section (cheaper siblings: test_wins_and_tuning_rule and
    tests/neuface_jax/test_realistic_synth.py)."""
    import subprocess

    monkeypatch.setenv("NEUFACE_FACE_LANDMARKER", str(landmarker_model))
    script = ROOT / "experiments" / "realistic_benchmark.py"
    common = ["--config=realistic_smoke", f"--dev_out={tmp_path / 'dev.json'}", f"--out={tmp_path / 'test.json'}",
              "--compile_cache="]
    for stage in ("dev", "test"):
        subprocess.run([sys.executable, str(script), f"--stage={stage}", *common], check=True, cwd=ROOT)
    doc = json.loads((tmp_path / "test.json").read_text())
    assert doc["tuned_on"]["seeds"] == [900] and doc["config"]["seeds"] == [0]
    chosen = doc["tuning"]["mono_realistic"]["direct"]["chosen"]
    assert chosen in ("direct", "direct_keep")
    assert {r["method"] for r in doc["runs"]} >= {"neuface", chosen}
    docs = tmp_path / "experiments.md"
    docs.write_text("# Experiments\n\nkept\n")
    subprocess.run([sys.executable, str(script), "--stage=docs", *common, f"--docs={docs}"], check=True, cwd=ROOT)
    subprocess.run([sys.executable, str(script), "--stage=docs", *common, f"--docs={docs}"], check=True, cwd=ROOT)
    text = docs.read_text()
    assert text.startswith("# Experiments\n\nkept\n") and text.count("BEGIN realistic benchmark") == 1
    assert "mean ± std" in text and "| vertex_error_similarity_mm |" in text
