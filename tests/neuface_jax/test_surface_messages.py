"""What commands say: "n/a (one view)" for a cross-view metric of one view, per-clip view counts,
fetch-models on absl flags, MediaPipe's native INFO/WARNING lines silenced."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from neuface_jax import cli
from neuface_jax.annotation.write import metrics_line
from neuface_jax.cli.demo import _shown
from neuface_jax.cli.manifest import counts_line
from neuface_jax.dataset.manifest import ClipEntry
from neuface_jax.dataset.report import report_markdown
from neuface_jax.synthetic.demo import format_table


def test_one_view_cvd_is_not_applicable():
    line = metrics_line({"nme_percent": 2.0, "jitter_mm": 1.5}, 1)
    assert line == "nme_percent 2, jitter_mm 1.5, cvd_mm n/a (one view)"
    assert metrics_line({"nme_percent": 2.0, "cvd_mm": 0.05}, 3) == "nme_percent 2, cvd_mm 0.05"
    demo = {"neuface": {"nme_percent": 3.0, "cvd_mm": 0.0}, "ground_truth": {"cvd_mm": 0.0}}
    table = format_table(_shown(demo, 1))
    assert "n/a (one view)" in table and "0.0000" not in table.split("\n")[2].split()[-1]
    assert _shown(demo, 3) is demo
    dist = {"count": 2, "mean": 1.0, "median": 1.0, "p5": 1.0, "p95": 1.0, "max": 1.0}
    doc = {"out_dir": "o", "completed": 2, "failed": 0, "frames": 10, "failures_by_reason": {}, "failures": [],
           "shards": [], "worst_nme": [], "worst_jitter": [],
           "metrics": {"nme_percent": dist, "cvd_mm": {"count": 0}}}
    assert "| cvd_mm | 0 | n/a (one view) |" in report_markdown(doc)


def test_manifest_counts_views_per_clip():
    mono = [ClipEntry(clip_id=f"c{k}", kind="video", inputs=(f"/v/{k}.mp4",), view_names=("front",)) for k in range(3)]
    assert counts_line(mono) == "video 3; 3 clips of 1 view = 3 view streams"
    multi = ClipEntry(clip_id="m", kind="mead", inputs=("/a.mp4", "/b.mp4", "/c.mp4"), view_names=("a", "b", "c"))
    assert counts_line(mono[:1] + [multi]) == "mead 1, video 1; 1 clip of 1 view, 1 clip of 3 views = 4 view streams"


def test_fetch_models_uses_absl_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["neuface-jax", "fetch-models", "--help"])
    assert e.value.code == 0 and "--dest" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["neuface-jax", "fetch-models", "--no_such_flag"])
    assert e.value.code == 2 and "no_such_flag" in capsys.readouterr().err
    assert cli.main(["neuface-jax", "fetch-models", f"--dest={tmp_path / 'm.task'}",
                     f"--url={(tmp_path / 'nothing').as_uri()}"]) == 1
    assert capsys.readouterr().err.startswith("neuface-jax fetch-models: error:")


@pytest.mark.shared_data
def test_mediapipe_native_logs_are_silenced(landmarker_model):
    code = ("import numpy as np; from neuface_jax.media import landmarker as L; "
            f"lm = L.FaceLandmarker({str(landmarker_model)!r}); lm.detect(np.zeros((64, 64, 3), np.uint8), 0); "
            "lm.close(); print('done')")
    env = {k: v for k, v in os.environ.items() if k not in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr
    assert "InitGoogle" not in proc.stderr and "W0000" not in proc.stderr and "XNNPACK" not in proc.stderr, proc.stderr
