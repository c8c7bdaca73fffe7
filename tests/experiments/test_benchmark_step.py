"""Smoke test of experiments/benchmark_step.py: the script runs end to end on a tiny config.

Not a timed test: it checks that the production step is measured without recompiling, that
the JSON report and the SUMMARY line carry the figures, and that MFU is "not computed" on CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "benchmark_step.py"

# 2 frames × 2 views (the multi-view loss is on) of 16² images through a 2-stage small ResNet.
TINY = ["--configs=small", "--frames=2", "--small_views=2", "--small_size=16", "--small_widths=4,8",
        "--small_head=16", "--warmup=1", "--small_steps=2"]


def _run(tmp_path, *extra):
    out = tmp_path / "bench.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(SCRIPT), *TINY, *extra, f"--out={out}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, json.loads(out.read_text())


def _check_common(stdout, report, peak=None):
    (entry,) = report["results"]
    assert report["device"].startswith("cpu")
    assert entry["config"] == "small" and entry["images_per_step"] == 4 and entry["timed_steps"] == 2
    assert entry["recompiles_in_steps"] == 0, "the timed steps must reuse the executable compiled ahead of time"
    assert entry["step_s"] > 0 and entry["images_per_s"] == pytest.approx(4 / entry["step_s"])
    assert entry["compile_s"] > 0
    # XLA's memory estimate covers the temporaries and the donated (aliased) state.
    assert entry["xla_total_mb"] >= entry["xla_temp_mb"] > 0
    assert entry["xla_alias_mb"] > 0, "the state is donated: its buffers alias the outputs"
    assert entry["xla_step_gflop"] is None or entry["xla_step_gflop"] > 0
    # MFU is ResNet-50-at-224 only (the nominal 12.3 GFLOP/image); on CPU there is no known peak.
    assert entry["mfu"] is None and entry["peak_tflops"] == peak
    summary = [line for line in stdout.splitlines() if line.startswith("SUMMARY ")]
    assert len(summary) == 1, stdout[-2000:]
    assert "small 16² 2x2" in summary[0] and "img/s" in summary[0]
    json_lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert [e["config"] for e in json_lines] == ["small"]
    return entry


@pytest.mark.slow
def test_tiny_step_benchmark_runs(tmp_path):
    stdout, report = _run(tmp_path, "--nocomponents")
    entry = _check_common(stdout, report)
    assert "encoder_fraction" not in entry


@pytest.mark.slow
def test_tiny_step_benchmark_components(tmp_path):
    stdout, report = _run(tmp_path, "--peak_tflops=1.0")
    entry = _check_common(stdout, report, peak=1.0)
    assert entry["encoder_fwd_bwd_s"] > 0 and entry["flame_losses_fwd_bwd_s"] > 0
    assert entry["encoder_fraction"] > 0 and entry["flame_losses_fraction"] > 0
    # An explicit peak gives an XLA-count utilization even on CPU; the nominal MFU stays ResNet-50-only.
    assert entry["mfu_xla"] is None or entry["mfu_xla"] > 0
