"""Real videos → FLAME meshes: ``annotate`` (what ``neuface-jax annotate`` runs).

``annotate`` = ``preflight.check_inputs`` (every input checked first, cheaply) → ``make_setup``
(once per run: model, embedding, encoder, optimizer) → ``prepare`` (per clip: decode, landmarks,
crops) → ``setup.optimizer.fit`` → ``write_outputs``. The dataset runner (``neuface_jax.dataset``)
runs the same stages over a manifest, packing several clips per device.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import threading
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from neuface_jax.annotation.config import OutputConfig, PrepareConfig, SetupConfig
from neuface_jax.annotation.preflight import check_inputs
from neuface_jax.annotation.prepare import PreparedClip, prepare as prepare_clip
from neuface_jax.annotation.setup import AnnotateSetup, make_setup, refine_result
from neuface_jax.annotation.write import write_outputs
from neuface_jax.common import log as log_lib
from neuface_jax.common.atomic import atomic_write_text
from neuface_jax.core import fit as fit_lib
from neuface_jax.media import detect as detect_lib
from neuface_jax.media.sources import open_source

__all__ = ["annotate", "annotate_shots"]

logger = logging.getLogger(__name__)


def _warm_compile(opt, encoder, num_views: int, num_landmarks: int, est_frames: int | None) -> None:
    """Compiles NeuFace's step (with frozen stages, the prefix and the step on its activations; with a
    frame-count estimate, the export too) on dummy inputs of the clip's shapes, so that compilation
    overlaps decoding and detection. The real fit then finds the executables in jit's cache (same
    static optimizer, same avals)."""
    c, s = opt.config.chunk_frames, opt.encoder_config.image_size

    def data(t):
        return fit_lib.ClipData(
            images=jnp.zeros((t, num_views, s, s, 3), jnp.float32),
            landmarks=jnp.zeros((t, num_views, num_landmarks, 2), jnp.float32),
            landmarks_mask=jnp.zeros((t, num_views, num_landmarks), jnp.float32),
            frame_mask=jnp.zeros((t, num_views), jnp.float32),
        )

    state = opt.init_state(encoder)
    key = jax.random.split(jax.random.key(0), 2)[0]
    # With trainable_stages the step consumes the frozen prefix's activations, not the crops.
    (chunk,) = opt.cache_features(state, [data(c)])
    new_state, *_ = jax.block_until_ready(opt.step_fn(state, chunk, key, opt.initial_context(num_views), opt.face))
    if est_frames:
        t_pad = fit_lib.padded_length(int(est_frames), c)
        jax.block_until_ready(opt.export_fn(new_state.params, new_state.rest, data(t_pad), opt.face))


class _WarmCompile:
    """Compiles NeuFace's step in a daemon thread, started at the clip's first face (``start``).

    Errors are kept, not raised: a failed warm-up only costs the compile later, in the fit.
    """

    def __init__(self, setup: AnnotateSetup, num_views: int, est_frames: int | None):
        self.args = (setup.optimizer, setup.encoder, num_views, int(setup.face_setup.landmark_ids.shape[0]), est_frames)
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def _run(self) -> None:
        t0 = time.perf_counter()
        try:
            _warm_compile(*self.args)
        except BaseException as e:  # noqa: BLE001 - only a warm-up
            self.error = e
        self.seconds = time.perf_counter() - t0

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="neuface-warm-compile", daemon=True)
            self.thread.start()

    def join(self, clip: PreparedClip) -> PreparedClip:
        """Waits for a compile in flight (no dearer than compiling in the fit); records it in the clip."""
        if self.thread is None:
            return clip
        self.thread.join()
        notes = clip.notes
        if self.error is not None:
            notes += (f"background compile failed ({type(self.error).__name__}: {self.error}); compiled in the fit",)
        return dataclasses.replace(clip, notes=notes, seconds={**clip.seconds, "warm_compile_background": self.seconds})


def _fit(setup: AnnotateSetup, clip: PreparedClip, progress: log_lib.ProgressFactory):
    """``(FitResult, last total loss)``."""
    epochs = setup.fit_config.num_epochs
    last = {"total": float("nan")}
    with progress("NeuFace", epochs) as bar:
        def on_epoch(epoch, parts):
            last["total"] = float(parts.get("total", float("nan")))
            bar.postfix(f"loss={last['total']:.4g}")
            bar.set(epoch)

        result = setup.optimizer.fit(clip.data, encoder=setup.encoder, progress=on_epoch)
    return refine_result(setup, clip.data, result), last["total"]


def _check_first(setup, videos, out_dir, prepare: PrepareConfig, view_names, view_boxes, landmarks_file):
    """``preflight.check_inputs`` for a config or a built setup (whose landmarker may be missing)."""
    if isinstance(setup, AnnotateSetup) and landmarks_file is None and setup.model_path is None:
        detect_lib.resolve_model_path(setup.config.face_landmarker)  # ModelNotFoundError, how to get one
    return check_inputs(
        videos, out_dir, None if isinstance(setup, AnnotateSetup) else setup, prepare, view_names=view_names,
        view_boxes=view_boxes, landmarks_file=landmarks_file,
    )


def annotate(
    videos,
    *,
    out_dir,
    setup: SetupConfig | AnnotateSetup = SetupConfig(),
    prepare: PrepareConfig = PrepareConfig(),
    output: OutputConfig = OutputConfig(),
    view_names: Sequence[str] | None = None,
    view_boxes=None,
    landmarks_file=None,
    progress: log_lib.ProgressFactory | None = None,
) -> dict[str, Any]:
    """Annotates one clip (one or more synchronized views) with FLAME meshes by NeuFace.

    Args:
      videos: a video path, several (synchronized views), a frame folder, image path(s), or a
        ``video.VideoClip``.
      out_dir: output folder (created).
      setup: the run's ``SetupConfig``, or an ``AnnotateSetup`` already made by ``make_setup``
        (Python callers that bring objects: a loaded model, an encoder, a full ``FitConfig``).
      prepare: how the clip is decoded, detected and cropped (``PrepareConfig``: frames, fps, ...).
      output: what is written besides params.npz and metrics.json (``OutputConfig``).
      view_names: one name per view (file stems / box names by default).
      view_boxes: cut a single composite video into views: ``"x0:y0:x1:y1,..."``, optionally
        ``name=x0:y0:x1:y1``, a list of boxes or a ``{name: box}`` mapping (half-open pixel boxes).
      landmarks_file: precomputed 68-point landmarks instead of MediaPipe (e.g. a synthetic clip's
        ``landmarks.npz``).
      progress: a ``common.log.ProgressFactory`` (None: silent).

    Returns:
      A summary: ``out_dir``, ``files``, ``metrics`` (the metrics.json content), ``seconds``,
      ``throughput``, ``num_frames``, ``views``, ``valid_fraction``, ``model``, ``notes`` and ``result``
      (the ``fit.FitResult``).

    Every input is checked before anything is built (``preflight``): the model, embedding and
    encoder files, the MediaPipe model, the output folder and the videos (a header probe).

    Raises:
      detect.NoFaceError: no face in any frame of any view (naming the clip).
      video.VideoError: missing, unreadable or truncated input (naming the file).
      detect.ModelNotFoundError: no MediaPipe model (the message says how to get one).
      FileNotFoundError, preflight.InputError: a missing or unusable model / encoder file, an
        output folder that cannot be written (naming it).
    """
    progress = progress or log_lib.quiet
    t_start = time.perf_counter()
    probed = _check_first(setup, videos, out_dir, prepare, view_names, view_boxes, landmarks_file)
    if not isinstance(setup, AnnotateSetup):
        setup = make_setup(setup, need_landmarker=landmarks_file is None)
    setup_seconds = time.perf_counter() - t_start
    warm = None
    if setup.config.warm_compile:
        # Shapes are needed before the clip is prepared; opening the source only probes headers.
        src = probed or open_source(videos, view_names, view_boxes, prepare.frames, prepare.strict, prepare.fps)
        warm = _WarmCompile(setup, len(src.view_names), src.num_frames)
    clip = prepare_clip(
        setup, videos, prepare, view_names=view_names, view_boxes=view_boxes, landmarks_file=landmarks_file,
        progress=progress, on_first_face=warm.start if warm else None,
    )
    clip = dataclasses.replace(clip, seconds={**clip.seconds, "setup": clip.seconds["setup"] + setup_seconds})

    t0 = time.perf_counter()
    if warm is not None:
        clip = warm.join(clip)
    result, loss = _fit(setup, clip, progress)
    fit_seconds = time.perf_counter() - t0
    clip = dataclasses.replace(clip, seconds={**clip.seconds, "fit": fit_seconds})
    logger.info("%s: NeuFace %d epochs in %.1fs, final loss %.4g", clip.label, setup.fit_config.num_epochs,
                fit_seconds, loss)

    files, doc = write_outputs(setup, clip, result, out_dir, output, progress=progress, started=t_start)
    return {
        "out_dir": pathlib.Path(out_dir),
        "files": files,
        "metrics": doc,
        "seconds": doc["seconds"],
        "throughput": doc["throughput"],
        "num_frames": clip.num_frames,
        "views": list(clip.view_names),
        "valid_fraction": doc["clip"]["valid_fraction"],
        "model": setup.face_setup.model_label,
        "notes": doc["notes"],
        "result": result,
    }


def annotate_shots(
    videos,
    *,
    out_dir,
    setup: SetupConfig | AnnotateSetup = SetupConfig(),
    prepare: PrepareConfig = PrepareConfig(),
    output: OutputConfig = OutputConfig(),
    view_names: Sequence[str] | None = None,
    view_boxes=None,
    progress: log_lib.ProgressFactory | None = None,
) -> list[dict[str, Any]]:
    """A clip split at its shot cuts: one ``annotate`` output per shot, ``<out_dir>/shot_NN/``.

    The cuts come from a decode-only pass (``detect.find_shots``: a colour-histogram jump between
    frames); each shot is then annotated on its own frame range with a face track of its own
    (``LandmarkerOptions.new_track_at_cuts``), so a cut to another person starts a new identity
    instead of being fitted as the first one. ``<out_dir>/shots.json`` lists the shots' source
    frame ranges and folders. Returns one ``annotate`` summary per shot.
    """
    _check_first(setup, videos, out_dir, prepare, view_names, view_boxes, None)
    if not isinstance(setup, AnnotateSetup):
        setup = make_setup(setup)
    setup = dataclasses.replace(setup, options=dataclasses.replace(setup.options, new_track_at_cuts=True))
    src = open_source(videos, view_names, view_boxes, prepare.frames, prepare.strict, prepare.fps)
    ranges = detect_lib.find_shots(src, cut_threshold=setup.options.cut_threshold)
    out = pathlib.Path(out_dir)
    summaries, listing = [], []
    for i, rng in enumerate(ranges):
        shot_dir = out / f"shot_{i:02d}"
        logger.info("%s: shot %d of %d, source frames %d-%d", src.label, i + 1, len(ranges), rng.start, rng.end - 1)
        summaries.append(annotate(
            videos, out_dir=shot_dir, setup=setup, prepare=prepare.replace(frames=rng), output=output,
            view_names=view_names, view_boxes=view_boxes, progress=progress,
        ))
        listing.append({"shot": i, "folder": shot_dir.name, "start": rng.start, "end": rng.end, "stride": rng.stride})
    atomic_write_text(out / "shots.json", json.dumps({"clip": src.label, "shots": listing}, indent=1) + "\n")
    return summaries
