r"""Time to generate synthetic clips (target: 7 views × 64 frames at 224 px in under a minute).

    python experiments/benchmark_synth.py --views=mead --frames=64 --size=224

Reports the cold time (first clip: demo head build + JIT compile + render) and the warm
time (a second clip, another seed), the renders per second, and writes JSON to --out.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("views", "mead", "Camera rig (mono, 3, mead, names or yaw:pitch pairs).")
flags.DEFINE_integer("frames", 64, "Frames per clip.")
flags.DEFINE_integer("size", 224, "Image size.")
flags.DEFINE_string("out", None, "JSON output (default $TMPDIR/neuface_jax_benchmarks/; the committed tables: --out=experiments/results/benchmark_synth.json).")


def main(argv):
    del argv
    from neuface_jax.synthetic import synth

    cfg = synth.SynthConfig(num_frames=FLAGS.frames, image_size=FLAGS.size)
    t0 = time.perf_counter()
    clip = synth.synthesize_clip(seed=0, rig=FLAGS.views, config=cfg)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    synth.synthesize_clip(seed=1, rig=FLAGS.views, config=cfg)
    warm = time.perf_counter() - t0
    renders = clip.num_frames * clip.num_views
    report = {
        "views": list(clip.view_names), "frames": clip.num_frames, "size": FLAGS.size,
        "cold_seconds": cold, "warm_seconds": warm, "renders": renders,
        "warm_renders_per_second": renders / warm,
        "visible_landmark_fraction": float(clip.visible68.mean()),
    }
    out = Path(FLAGS.out or Path(tempfile.gettempdir()) / "neuface_jax_benchmarks" / "benchmark_synth.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    print(f"SUMMARY synth: {clip.num_views} views x {clip.num_frames} frames at {FLAGS.size}px: cold {cold:.1f}s, "
          f"warm {warm:.1f}s ({renders / warm:.0f} renders/s incl. landmarks and visibility) -> {out}")


if __name__ == "__main__":
    sys.exit(app.run(main))
