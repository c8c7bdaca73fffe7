"""experiments/gpu_check.sh --smoke: the prepared GPU run works end to end on a CPU (tiny network;
its figures mean nothing). The default run checks the script, its flags and its arithmetic; the long
tests run a reduced plan and the whole one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "gpu_check.sh"


def _run(results: Path, *extra: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", GPU_CHECK_TIMEOUT="900")
    proc = subprocess.run(["bash", str(SCRIPT), "--smoke", str(results), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((results / "gpu_check.json").read_text())
    summary = (results / "summary.txt").read_text()
    assert report["smoke"] is True and "SMOKE" in summary and "wall_s" in report
    for step in report["steps"]:
        assert step["step_s"] > 0 and step["recompiles_in_steps"] == 0
        assert step["mfu"] is None  # MFU is for the real ResNet-50 at 224² on a device with a known peak
    for clip in report["per_clip"]:
        assert clip["clip_s"] > 0 and clip["updates"] == 100 * -(-clip["clip_frames"] // 2)
    for d in report["dataset"]:
        assert d["clips_per_hour"] > 0 and d["images_per_step"] == d["clips_per_device"] * 2 * 7
    return report


def test_gpu_check_script_and_projection():
    """Cheap sibling of the smoke runs: the shell script parses, the Python entry point loads its flags,
    and the per-clip arithmetic is the official schedule's."""
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    text = SCRIPT.read_text()
    assert "priors helpers add ONE line each" in text and "--smoke" in text
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_check.py"), "--helpshort"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert "clips_per_device" in proc.stdout + proc.stderr, proc.stderr[-2000:]  # absl's help exits 1
    # In a subprocess: the script defines absl flags, which must not land in the test process's registry.
    code = ("import json, gpu_check as g; print(json.dumps([g._per_clip({'frames': 20, 'views': 7, 'step_s': 0.5, "
            "'prefix_s_per_chunk': 0.1}, 100, 100), g._per_clip({'frames': 20, 'views': 1, 'step_s': 1.0}, 200, 100)]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "experiments", env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    multi, mono = json.loads(proc.stdout.strip().splitlines()[-1])
    assert multi["updates"] == 500 and multi["clip_s"] == pytest.approx(500 * 0.5 + 5 * 0.1)
    assert mono["updates"] == 1000 and mono["clip_s"] == pytest.approx(1000.0)


@pytest.mark.long
def test_gpu_check_smoke_reduced(tmp_path):
    report = _run(tmp_path, "--dtypes=float32", "--cheap_stages=", "--nomono", "--clips_per_device=2")
    assert [(s["dtype"], s["views"], s["trainable_stages"]) for s in report["steps"]] == [("float32", 7, "all")]
    assert [c["clip"] for c in report["per_clip"]] == ["multiview_100x7"]
    assert [d["clips_per_device"] for d in report["dataset"]] == [2]


@pytest.mark.long
def test_gpu_check_smoke_full(tmp_path):
    report = _run(tmp_path)
    plan = [(s["dtype"], s["views"], s["trainable_stages"]) for s in report["steps"]]
    assert plan == [("float32", 7, "all"), ("bfloat16", 7, "all"), ("bfloat16", 7, 1), ("bfloat16", 1, "all"),
                    ("bfloat16", 1, 1)]
    cheap = report["steps"][2]
    assert cheap["prefix_s_per_chunk"] > 0 and cheap["cached_feature_bytes_per_image"] > 0
    assert [d["clips_per_device"] for d in report["dataset"]] == [1, 2, 4, 8]
    assert report["dataset"][0]["from"] == "the single-clip bfloat16 step"
