"""Smoke test of experiments/benchmark_dataset.py: the script runs end to end on a tiny config.

Not a timed test: 2 synthetic clips of 32² pixels through a 2-stage small encoder for 1 epoch, at
K = 1 and 2. It checks that the JSON report carries the figures (positive throughputs, groups,
buckets, compile times measured apart from the timed runs, load averages, the command, the device),
that packing two clips into one group is reported as such, and that K=2 gives K=1's params.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "benchmark_dataset.py"

# Lengths 10 ± 3 (12 and 10 for these two clips) with 8-frame chunks: both in the 2-chunk bucket.
TINY = ["--ks=1,2", "--check_k=2", "--clips=2", "--frames=10", "--frames_spread=3", "--chunk_frames=8", "--size=32",
        "--encoder_size=16", "--small_widths=4,8", "--small_head=16", "--epochs=1", "--workers=1"]


@pytest.mark.slow
def test_tiny_dataset_benchmark_runs(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, f"--data_dir={tmp_path / 'data'}", f"--out={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(out.read_text())

    assert report["device"].startswith("cpu") and report["jax_devices"]
    assert "benchmark_dataset.py" in report["command"] and "--ks=1,2" in report["command"]
    assert len(report["load_average_start"]) == 3 and len(report["load_average_end"]) == 3
    assert report["settings"]["clips"] == 2 and report["settings"]["epochs"] == 1
    assert report["data"]["generated"] == 2
    assert "head" in report["git"] and "modified" in report["git"]

    # The first K's per-length warm-up: the one clip length the bucket warm-up did not see (whether it
    # compiles anything new depends on what earlier work in the process already compiled).
    assert report["per_length_warmup"]["clips"] == 1 and report["per_length_warmup"]["compile_s"] >= 0

    rows = report["results"]
    assert [r["k"] for r in rows] == [1, 2]
    for r in rows:
        assert r["done"] == 2 and r["failed"] == 0, r
        assert r["wall_s"] > 0 and r["clips_per_hour"] > 0
        assert r["fit_s"] > 0 and r["fit_clips_per_hour"] > 0
        assert r["clips_per_hour"] <= r["fit_clips_per_hour"] * 1.0001, "the fit stage is part of the wall time"
        assert r["groups"] >= 1 and sum(r["buckets"].values()) == r["groups"]
        assert 0 < r["occupancy"] <= 1
        assert r["compile_s"] > 0 and r["compile"]["backend_compiles"] > 0, "the warm-up compiles"
        assert r["compile_s_in_timed_run"] >= 0
        assert r["speedup"] > 0 and r["fit_speedup"] > 0
        assert len(r["load_before"]) == 3 and len(r["load_after"]) == 3
        assert r["peak_rss_mb"] is None or r["peak_rss_mb"] > 0
    assert rows[0]["speedup"] == 1.0 and rows[0]["slots"] == 1 and rows[1]["slots"] == 2
    # Two clips of one bucket: one group at K=2, one group per clip at K=1.
    assert rows[0]["buckets"] == {"1v x 16f": 2} and rows[1]["buckets"] == {"1v x 16f": 1}
    assert rows[1]["occupancy"] == rows[0]["occupancy"] == (12 + 10) / 32

    check = report["check"]
    assert check["ran"] and check["k"] == 2 and check["clips_compared"] == 2
    assert check["passed"], check
    assert rows[1]["vs_k1"]["max_abs_params"] <= check["tolerance"] and check["within_tol_after_epochs"]
    # The 1-epoch warm-up (one clip here) agrees to float precision.
    assert check["clips_compared_1epoch"] == 1 and check["max_abs_params_1epoch"] <= check["tolerance_1epoch"]

    assert "| K |" in report["table_markdown"]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert len(summary) == 1 and "K=1" in summary[0] and "K=2" in summary[0], proc.stdout[-2000:]
    assert "jax.devices()" in proc.stdout
    # Nothing left behind but the data cache (the runs' outputs go to a temporary folder).
    assert not list((tmp_path / "data").glob("runs.*"))
