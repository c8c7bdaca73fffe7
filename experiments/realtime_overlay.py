"""Draws the live tracker's overlay on a few frames of a video, side by side (the picture in docs/realtime.md).

    python experiments/realtime_overlay.py --regressor=REG --video=VIDEO --frames=127,148,170 \
        --out=docs/realtime_overlay.png [--mirror_average]

The tracker runs from the first frame with its defaults (`neuface_jax.track`); each chosen frame is drawn by
`realtime.live.overlay_image` (the fitted mesh's visible edges and its 68 landmarks), as `neuface-jax live --out` does.
"""

from __future__ import annotations

import os

import imageio.v3 as iio
import numpy as np
from absl import app, flags

import neuface_jax
from neuface_jax.realtime import live, track
from neuface_jax.realtime import regressor as regressor_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("regressor", None, "Regressor checkpoint (neuface-jax train-regressor --out).")
flags.DEFINE_string("video", os.path.join(os.environ.get("NEUFACE_SHARED_DATA", "../shared/data"),
                                          "videos/liveportrait_d20.mp4"), "Video to track.")
flags.DEFINE_string("face_landmarker", None, "MediaPipe face_landmarker.task (default: $NEUFACE_FACE_LANDMARKER, "
                    "the user cache, or the shared data's copy).")
flags.DEFINE_list("frames", ["127", "148", "170"], "Frame numbers to draw.")
flags.DEFINE_bool("mirror_average", True, "Track with mirror averaging.")
flags.DEFINE_integer("max_side", 420, "Side of each drawn frame (pixels).")
flags.DEFINE_string("out", "docs/realtime_overlay.png", "PNG to write.")


def main(_):
    want = sorted(int(f) for f in FLAGS.frames)
    landmarker = FLAGS.face_landmarker
    shared = os.path.join(os.environ.get("NEUFACE_SHARED_DATA", "../shared/data"), "mediapipe/face_landmarker.task")
    if landmarker is None and not os.environ.get("NEUFACE_FACE_LANDMARKER") and os.path.isfile(shared):
        landmarker = shared
    cfg = track.TrackConfig(regressor=FLAGS.regressor, mirror_average=FLAGS.mirror_average, face_landmarker=landmarker)
    face = regressor_lib.demo_face()
    tiles = {}
    for frame in neuface_jax.track(FLAGS.video, cfg):
        if frame.index in want:
            tiles[frame.index] = live.overlay_image(frame, face, max_side=FLAGS.max_side)
        if frame.index >= want[-1]:
            break
    missing = [f for f in want if f not in tiles]
    if missing:
        raise SystemExit(f"{FLAGS.video}: frames {missing} not reached (the video is shorter)")
    iio.imwrite(FLAGS.out, np.concatenate([tiles[f] for f in want], 1))
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    flags.mark_flag_as_required("regressor")
    app.run(main)
