r"""Preprocessing throughput and whole-command time of ``neuface-jax annotate`` on the shared clips.

    python experiments/annotate_throughput.py [--clips=mead,liveportrait,wojtek,nersemble] [--repeats=1] \
        [--out=experiments/results/annotate_throughput.json]

Runs ``neuface-jax annotate --video=<clip> --out=<tmp> --cache_dir=<fresh folder>`` (default settings
otherwise; the NeRSemble composite cut into its three views with ``--view_boxes``) once per clip and
repeat as a separate process, so each run pays everything a user's first run pays: interpreter
start, imports, MediaPipe detection (fresh landmark cache), compilation, the fit and the outputs.
Records per run the wall seconds of the whole command, the decode + detect seconds and frames/s
that ``metrics.json`` reports, and the 1-minute load average (``os.getloadavg``, as ``uptime``
shows it) before and after the run.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("shared_data", os.environ.get("NEUFACE_SHARED_DATA"), "Shared data folder (videos/...).")
flags.DEFINE_list("clips", ["mead", "liveportrait", "wojtek", "nersemble"], "Clips to time.")
flags.DEFINE_integer("repeats", 1, "Runs per clip.")
flags.DEFINE_list("extra", [], "Extra annotate flags, e.g. --epochs=100 (passed through).")
flags.DEFINE_string(
    "out", str(pathlib.Path(__file__).resolve().parent / "results" / "annotate_throughput.json"), "Results JSON."
)

#: name → (file under <shared_data>/videos, extra annotate flags).
CLIPS = {
    "mead": ("mead_M003_level_1_disgusted_015.mp4", []),
    "liveportrait": ("liveportrait_d20.mp4", []),
    "wojtek": ("metrical_tracker_wojtek.mp4", []),
    "nersemble": (
        "multiview/vhap_nersemble_038_EMO-1_3views.mp4",
        ["--view_boxes=0:0:247:360,0:360:247:720,0:720:247:1080"],
    ),
}


def main(argv):
    del argv
    if not FLAGS.shared_data:
        raise app.UsageError("set --shared_data or NEUFACE_SHARED_DATA")
    shared = pathlib.Path(FLAGS.shared_data)
    model = shared / "mediapipe" / "face_landmarker.task"
    runs = []
    for clip in FLAGS.clips:
        rel, extra = CLIPS[clip]
        for rep in range(FLAGS.repeats):
            work = pathlib.Path(tempfile.mkdtemp(prefix=f"annotate_throughput_{clip}_"))
            cmd = [
                sys.executable, "-m", "neuface_jax.cli", "annotate", f"--video={shared / 'videos' / rel}",
                f"--out={work / 'out'}", f"--cache_dir={work / 'cache'}", f"--face_landmarker={model}", *extra,
                *FLAGS.extra,
            ]  # fmt: skip
            load0 = os.getloadavg()
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            load1 = os.getloadavg()
            if proc.returncode != 0:
                raise RuntimeError(f"{clip}: annotate failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            m = json.loads((work / "out" / "metrics.json").read_text())
            views = len(m["clip"]["views"])
            frames = m["clip"]["frames"]
            row = {
                "clip": clip,
                "repeat": rep,
                "frames": frames,
                "views": views,
                "command_seconds": wall,
                "decode_detect_seconds": m["seconds"]["decode_detect"],
                "preprocess_frames_per_s": m["throughput"]["preprocess_frames_per_s"],
                "preprocess_view_frames_per_s": m["throughput"]["preprocess_view_frames_per_s"],
                "seconds": m["seconds"],
                "nme_percent": m["nme_percent"],
                "jitter_mm": m["jitter_mm"],
                "cvd_mm": m.get("cvd_mm"),
                "encoder": m["clip"]["encoder"],
                "learning_rate": m["clip"]["learning_rate"],
                "epochs": m["clip"]["epochs"],
                "loadavg_1min_before_after": [load0[0], load1[0]],
                "command": " ".join(["neuface-jax", *cmd[3:]]),
            }
            runs.append(row)
            print(
                f"{clip}: {frames} frames x {views} view(s): decode+detect {row['preprocess_frames_per_s']:.1f} frames/s, "
                f"command {wall:.1f} s, NME {row['nme_percent']:.2f} %, load {load0[0]:.1f} -> {load1[0]:.1f}",
                flush=True,
            )
            shutil.rmtree(work, ignore_errors=True)
    doc = {
        "command": " ".join([pathlib.Path(sys.argv[0]).name] + sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "runs": runs,
    }
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
