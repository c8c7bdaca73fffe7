"""Real videos → FLAME meshes: ``neuface-jax annotate``.

Pipeline (one clip, one or more synchronized views):

1. **Input.** One video file (a monocular clip); several video files (synchronized views, paired by
   frame index, trimmed to the shortest with a warning, or an error under ``strict``); one video file
   plus ``view_boxes`` (a tiled composite cut into views by pixel boxes); a folder of frames (MEAD
   naming ``img_%04d_<view>.jpg``, numbered frames, or one sub-folder per view, see
   ``video.read_frame_folder``); still images (one image = a one-frame clip; several images = views of
   one frame); or a decoded ``video.VideoClip``. A frame range / time range / stride selects frames.
2. **Landmarks.** The MediaPipe Face Landmarker (478 points, VIDEO mode), one landmarker per view.
   Decoding runs in a background thread (``detect.prefetch``) and each view's detection in its own
   worker thread, so decoding, detection of the views and the main thread overlap. Results are cached
   per view (``detect.cache_key``: source file identity, box, frames, options, model SHA-256), so a
   re-run only decodes. Frames without the face are invalid: excluded from the landmark loss and from
   NME, their crops interpolated from the neighbours. Points MediaPipe only guesses (the far side of
   a turned head: ``detect.FaceLandmarks.visible``) get no target (NaN): no landmark loss, no NME.
3. **Landmark set.** ``landmark_set="ibug68"`` (default): MediaPipe → iBUG-68
   (``landmark_sets.mediapipe_to_ibug68``) against the model's 68-point embedding;
   ``"mediapipe105"``: the points of FLAME's MediaPipe embedding, gathered **by id** from the 478
   detections using the embedding's own ``landmark_indices`` (the demo head's ids are a different
   105-id list, in a different order, from ``landmark_sets.MEDIAPIPE_105_IDS``; selecting by the
   embedding's ids is right for both).
4. **Crops.** The reference recipe (box of the iBUG-68 points, ×1.1 then ×1.25, square, similarity
   warp) with temporal smoothing of the box (``crop_smoothing``, default a centred 5-frame moving
   average; ``None`` = the per-frame reference boxes). Crops always come from the 68 points, whatever
   the landmark set (the 105 set has no jaw and would crop the chin away). The crop transforms are
   kept, so everything maps back to the original pixels.
5. **NeuFace.** ``fit.NeuFace`` from an encoder checkpoint (``encoder=PATH``, ``encoder.load_encoder``)
   or, on the demo head by default, from the packaged pretrained small encoder
   (``pretrain.packaged_checkpoint()``, trained on renders of the demo head), at learning rate 1e-4
   for a small encoder (2e-5, the reference, for a ResNet-50); or, with ``encoder="random"``, a FLAME
   model, or an ``encoder_config`` given, from a randomly initialized small CPU encoder
   (``pipeline.default_encoder_config``: predicts all of the model's shape/expression components)
   at 1e-3. On the shared clips the pretrained start mostly fixes the random start's under-rotation
   of turned heads (``experiments/annotate_encoder_comparison.py``, whole 400-frame wojtek clip, 100
   epochs: mean |fitted − MediaPipe yaw| 3.2° vs 9.6°, 7.9° vs 24.4° on the frames turned > 25°; NME
   6.6 vs 7.3 %), although the encoder itself does not transfer to real faces (its untrained yaw
   does not follow the head): it is a better-conditioned start, not a pose prior. ``epochs``
   defaults to ``DEFAULT_EPOCHS`` = 100, the reference (see there for timings: 1.5–2.5 minutes per
   shared clip on the 2-core CPU).
6. **Outputs** in ``out_dir`` (``write_outputs``; ``params.npz`` and ``metrics.json`` atomically): ``params.npz`` (``export.write_params``: the NeuFace layout and our
   additions), ``metrics.json``, ``overlay.mp4`` (the mesh over the original frames, views tiled
   left to right, detected landmarks as green dots) and optionally ``objs/<view>/frame_%05d.obj``.

**Contour.** MediaPipe's jaw points (the iBUG 0–16 of ``mediapipe_to_ibug68``) are points of its face
oval, fixed on the face surface: on a turned head the far-side ones stay on the (hidden) jaw and
project inside the face; they do *not* slide to the silhouette as a 2D detector's contour does.
FLAME's dynamic contour (DECA's yaw-dependent row of a 79-row table) models silhouette-following
detectors, so pairing it with MediaPipe points is wrong: on a turned head the two sets describe
different points and the landmark loss would pull the mesh's jaw sideways. ``contour="auto"``
(default) therefore uses a **static contour** for MediaPipe-derived 68 landmarks: the embedding's
row 0 (the frontal contour, fixed on the mesh) for every frame (``static_contour_embedding``).
``contour="dynamic"`` forces the DECA rule (for landmarks from an outline-following detector, or to
compare); ``"static"`` is the same as ``"auto"`` here. The 105-point MediaPipe set has no contour.

**Metrics** (``metrics.json``, top level): ``nme_percent`` — the fitted mesh's landmarks against the
detections, in original pixels, valid frames only, normalized by the detected outer-eye-corner
distance (iBUG 36/45; for the 105 set the MediaPipe ids 33/263 located in the embedding's id list);
``msi_landmarks``, ``msi_vertices``, ``jitter_mm`` — smoothness of the output meshes over all frames
(mean over views with a face); ``cvd_mm`` — cross-view vertex distance in the head-canonical frame,
frames where both views have a detection (multi-view clips only). There is no ground truth: NME is
agreement with MediaPipe, not accuracy. ``per_view``, ``seconds``, ``throughput``, ``clip`` and
``notes`` hold the details.

**Failure handling.** No face in any frame of any view → ``detect.NoFaceError`` naming the clip. A
view with no face at all in a multi-view clip → the view is kept but masked (no landmark loss, no
multi-view loss, excluded from the metrics, no mesh drawn in the overlay) with a warning and a note
in ``metrics.json``: the other views still give a result. Unreadable / truncated videos →
``video.VideoError`` naming the file.

**Stages.** ``annotate`` = ``make_setup`` (once per run: model, embedding, encoder, optimizer) →
``prepare`` (per clip: decode, landmarks — MediaPipe or a precomputed ``landmarks_file`` — and crops)
→ ``setup.optimizer.fit`` → ``write_outputs``. ``neuface_jax.dataset.runner`` runs the same stages over a
manifest, packing several clips per device.

Frames are held in memory (uint8; about 6 MB per 1080p frame and view): use a range or a stride
for long clips.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from neuface_jax.media import crops as crops_lib
from neuface_jax.media import detect as detect_lib
from neuface_jax.media import landmark_sets
from neuface_jax.media import video as video_lib
from neuface_jax.media.detect import decode_and_detect, read_precomputed_landmarks
from neuface_jax.media.sources import decode_frames, open_source, parse_view_boxes, stack_views

__all__ = [
    "DEFAULT_EPOCHS",
    "LANDMARK_SETS",
    "CONTOURS",
    "AnnotateSetup",
    "PreparedClip",
    "annotate",
    "make_setup",
    "prepare",
    "read_precomputed_landmarks",
    "write_outputs",
    "static_contour_embedding",
    "parse_view_boxes",
    "resolve_face_model",
]

#: Default NeuFace epochs: the reference's 100. One epoch = one Adam step per 20-frame chunk (all
#: views); a step costs ~0.05–0.1 s on the shared 2-core CPU and compiling the step + export ~30 s,
#: so 100 epochs take 1.5 min (MEAD, 118 frames) to 2.5 min (400 frames; 97 frames × 3 views) for
#: the whole command. From the randomly initialized encoder fewer epochs underfit the head rotation
#: badly on turned heads (400-frame clip: NME 16 % at 30 epochs, 8.2 % at 100; frontal MEAD: 3.9 % →
#: 3.3 %).
DEFAULT_EPOCHS = 100
#: Learning rates: a randomly initialized small encoder; a loaded small-encoder checkpoint (the
#: packaged pretrained one); any other loaded checkpoint (the reference 2e-5, tuned for DECA's
#: ResNet-50). For the packaged encoder on the four whole shared clips at 100 epochs
#: (``experiments/results/annotate_encoder_comparison.json``), 1e-4 had the best mean NME (5.07 %;
#: random init 5.54, 2e-5 5.42, 3e-4 5.43) and cut the yaw error on every clip; 3e-4 is better on
#: ≤ 100-frame clips but under-rotates the 400-frame wojtek clip as badly as random init (more
#: chunks per epoch), 2e-5 fits that clip best (NME 5.2 %) but the frontal clips worst.
RANDOM_INIT_LR = 1e-3
PRETRAINED_SMALL_LR = 1e-4
PRETRAINED_LR = 2e-5
#: ``encoder=RANDOM_ENCODER`` asks for a randomly initialized encoder even on the demo head.
RANDOM_ENCODER = "random"

LANDMARK_SETS = ("ibug68", "mediapipe105")
CONTOURS = ("auto", "static", "dynamic")

# MediaPipe ids of the outer eye corners (image-left = subject's right: 33; image-right: 263).
_EYE_CORNER_IDS = (33, 263)


# --------------------------------------------------------------------------- landmark embeddings
def static_contour_embedding(embedding, row: int = 0):
    """A 68-point embedding with a fixed contour: row ``row`` of the dynamic table for every frame.

    ``face_idx = concat(dynamic_face_idx[row], face_idx)`` (17 contour + 51 static points, iBUG order),
    barycentric coordinates likewise, kind ``"static"``. Row 0 is the frontal (yaw 0) contour, which is
    what MediaPipe's mesh-fixed jaw points correspond to.

    Raises:
      ValueError: the embedding has no dynamic contour table.
    """
    import flame_jax

    if embedding.dynamic_face_idx is None:
        raise ValueError(f"embedding of kind {embedding.kind!r} has no dynamic contour table to take a static row from")
    dyn_f = np.asarray(embedding.dynamic_face_idx)
    dyn_b = np.asarray(embedding.dynamic_bary_coords)
    if not 0 <= row < dyn_f.shape[0]:
        raise ValueError(f"contour row {row} out of range 0..{dyn_f.shape[0] - 1}")
    return flame_jax.LandmarkEmbedding.from_arrays(
        face_idx=np.concatenate([dyn_f[row], np.asarray(embedding.face_idx)]),
        bary_coords=np.concatenate([dyn_b[row], np.asarray(embedding.bary_coords)]),
        kind="static",
        source=f"static contour (row {row}) of a {embedding.kind} embedding",
    )


@dataclasses.dataclass(frozen=True)
class _FaceSetup:
    model: Any  # flame_jax.FlameModel
    embedding: Any  # flame_jax.LandmarkEmbedding used in the fit
    landmark_ids: np.ndarray  # MediaPipe ids of the fitted landmarks, in embedding order
    eye_idx: tuple[int, int]  # positions of the outer eye corners in the landmark set (for NME)
    landmark_set: str
    contour: str  # resolved: "static", "dynamic" or "none"
    model_label: str
    is_demo: bool


def resolve_face_model(
    flame_model=None, landmark_embedding=None, *, landmark_set: str = "ibug68", contour: str = "auto"
) -> _FaceSetup:
    """Loads (or takes) the FLAME model and the embedding for a landmark set and contour choice.

    Without ``flame_model`` the procedural demo head (not FLAME) and its embeddings are used. With a
    FLAME file, ``landmark_embedding`` is required (DECA's ``landmark_embedding.npy`` for ibug68,
    ``mediapipe_landmark_embedding.npz`` for mediapipe105).
    """
    import flame_jax

    if landmark_set not in LANDMARK_SETS:
        raise ValueError(f"unknown landmark set {landmark_set!r}; choose one of {LANDMARK_SETS}")
    if contour not in CONTOURS:
        raise ValueError(f"unknown contour mode {contour!r}; choose one of {CONTOURS}")
    is_demo = flame_model is None
    if is_demo:
        if landmark_embedding is not None and not isinstance(landmark_embedding, flame_jax.LandmarkEmbedding):
            raise ValueError("a landmark embedding file needs the FLAME model it belongs to (--flame_model)")
        model = flame_jax.demo_model()
        label = model.name
        if landmark_embedding is None:
            landmark_embedding = (
                flame_jax.demo_landmark_embedding() if landmark_set == "ibug68" else flame_jax.demo_mediapipe_embedding()
            )
    else:
        model = flame_model if isinstance(flame_model, flame_jax.FlameModel) else flame_jax.load_model(flame_model)
        label = getattr(model, "name", None) or str(flame_model)
        if landmark_embedding is None:
            want = "landmark_embedding.npy (68 points)" if landmark_set == "ibug68" else "mediapipe_landmark_embedding.npz"
            raise ValueError(f"a FLAME model needs its landmark embedding for the {landmark_set} set: pass {want}")
    emb = landmark_embedding
    if not isinstance(emb, flame_jax.LandmarkEmbedding):
        emb = flame_jax.load_landmark_embedding(emb, model=model)
    else:
        emb.check_faces(int(model.faces.shape[0]), "landmark embedding")

    if landmark_set == "ibug68":
        if emb.num_landmarks != 68:
            raise ValueError(
                f"landmark set ibug68 needs a 68-point embedding; got a {emb.kind} embedding with "
                f"{emb.num_landmarks} points (use --landmark_set=mediapipe105 for a MediaPipe embedding)"
            )
        ids = np.asarray(landmark_sets.MEDIAPIPE_TO_IBUG68)
        eye_idx = (36, 45)
        if emb.dynamic_face_idx is None:
            if contour == "dynamic":
                raise ValueError("contour='dynamic' needs an embedding with a dynamic contour table")
            resolved = "static"  # already static (e.g. a static 68-point file)
        elif contour == "dynamic":
            resolved = "dynamic"
        else:
            emb = static_contour_embedding(emb, 0)
            resolved = "static"
    else:
        if emb.landmark_indices is None:
            raise ValueError(
                f"landmark set mediapipe105 needs a MediaPipe embedding with landmark_indices (MediaPipe ids); "
                f"got a {emb.kind} embedding"
            )
        if emb.dynamic_face_idx is not None:
            raise ValueError("a MediaPipe embedding must not have a dynamic contour")
        ids = np.asarray(emb.landmark_indices).astype(np.int64)
        if ids.min() < 0 or ids.max() >= landmark_sets.NUM_MEDIAPIPE:
            raise ValueError(f"embedding landmark_indices must be MediaPipe ids 0..477, got {ids.min()}..{ids.max()}")
        missing = [i for i in _EYE_CORNER_IDS if i not in ids.tolist()]
        if missing:
            raise ValueError(f"the MediaPipe embedding lacks the outer eye corners {missing} needed for NME")
        eye_idx = tuple(int(np.flatnonzero(ids == i)[0]) for i in _EYE_CORNER_IDS)
        resolved = "none"
    return _FaceSetup(
        model=model, embedding=emb, landmark_ids=ids.astype(np.int64), eye_idx=eye_idx, landmark_set=landmark_set,
        contour=resolved, model_label=label, is_demo=is_demo,
    )


# --------------------------------------------------------------------------- helpers
def _progress_bar(enabled, desc, total):
    if not enabled:
        return None
    if callable(enabled):
        return enabled(desc, total)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True, disable=None, mininterval=0.5)


def _close(bar):
    if bar is not None:
        bar.close()


def _packaged_encoder(notes: list, say) -> pathlib.Path | None:
    """The packaged pretrained encoder (the demo head's default), or None with a note when it is missing."""
    from neuface_jax.synthetic import pretrain

    try:
        path = pretrain.packaged_checkpoint()
    except (AttributeError, FileNotFoundError) as e:
        msg = f"no packaged pretrained encoder ({e}); using a randomly initialized encoder"
        say(f"neuface-jax annotate: {msg}")
        notes.append(msg)
        return None
    notes.append("encoder: the packaged pretrained small encoder (trained on demo-head renders; encoder='random' for a random init)")
    return path


def _load_encoder(encoder, model):
    """``encoder``: None, a checkpoint path, an ``Encoder`` with ``encoder_config`` given, or (Encoder, EncoderConfig)."""
    from neuface_jax.core import encoder as encoder_lib

    if encoder is None:
        return None, None
    if isinstance(encoder, (str, os.PathLike)):
        enc, cfg = encoder_lib.load_encoder(encoder)
    elif isinstance(encoder, tuple) and len(encoder) == 2:
        enc, cfg = encoder
    else:
        return encoder, None
    if cfg.n_shape > model.num_shape or cfg.n_expr > model.num_expression:
        raise ValueError(
            f"encoder predicts {cfg.n_shape} shape / {cfg.n_expr} expression coefficients but the model has "
            f"{model.num_shape} / {model.num_expression}"
        )
    return enc, cfg


def _finite_or_nan(x) -> float:
    x = float(x)
    return x if np.isfinite(x) else float("nan")


def _warm_compile(opt, encoder, num_views: int, num_landmarks: int, est_frames: int | None) -> None:
    """Compiles NeuFace's step (and, with a frame-count estimate, its export) on dummy inputs of the
    clip's shapes, so that compilation overlaps decoding and detection. The real fit then finds the
    executables in jit's cache (same static optimizer, same avals)."""
    import jax
    import jax.numpy as jnp

    from neuface_jax.core import fit as fit_lib

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
    new_state, *_ = jax.block_until_ready(opt.step_fn(state, data(c), key, opt.initial_context(num_views), opt.face))
    if est_frames:
        t_pad = fit_lib.padded_length(int(est_frames), c)
        jax.block_until_ready(opt.export_fn(new_state.params, new_state.rest, data(t_pad), opt.face))


class _Background:
    """A function run once in a daemon thread; errors are kept, not raised (it is only a warm-up)."""

    def __init__(self, fn):
        import threading

        self.error: BaseException | None = None
        self.seconds = 0.0

        def run():
            t0 = time.perf_counter()
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - a failed warm-up only costs the compile later
                self.error = e
            self.seconds = time.perf_counter() - t0

        self.thread = threading.Thread(target=run, name="neuface-warm-compile", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join()


# --------------------------------------------------------------------------- stages
@dataclasses.dataclass(frozen=True)
class AnnotateSetup:
    """What a run resolves once and every clip shares: model, embedding, encoder, optimizer, landmarker.

    Attributes:
      face_setup: the model / embedding / landmark-set choice (``resolve_face_model``).
      face: the ``fit.FaceModel`` the fit runs through.
      encoder: the initial ``Encoder`` (None = a fresh random one per clip from ``fit_config.seed``).
      encoder_config: its ``EncoderConfig``.
      encoder_label: how the encoder was chosen, for ``metrics.json``.
      fit_config: the ``fit.FitConfig``.
      optimizer: the ``fit.NeuFace`` optimizer (equal settings share compiled steps across clips).
      model_path: the MediaPipe model (None when it is not needed: precomputed landmarks only).
      options: MediaPipe landmarker options.
      notes: run-level notes copied into every clip's ``metrics.json``.
    """

    face_setup: _FaceSetup
    face: Any
    encoder: Any
    encoder_config: Any
    encoder_label: str
    fit_config: Any
    optimizer: Any
    model_path: pathlib.Path | None
    options: detect_lib.LandmarkerOptions
    notes: tuple[str, ...]


def make_setup(
    *,
    flame_model=None,
    landmark_embedding=None,
    landmark_set: str = "ibug68",
    contour: str = "auto",
    face_landmarker=None,
    landmarker_options: detect_lib.LandmarkerOptions | None = None,
    epochs: int = DEFAULT_EPOCHS,
    chunk_frames: int = 20,
    learning_rate: float | None = None,
    encoder=None,
    encoder_config=None,
    fit_config=None,
    seed: int = 0,
    need_landmarker: bool = True,
    log: Callable[[str], None] | None = print,
) -> AnnotateSetup:
    """Resolves the model, embedding, encoder and optimizer once for one clip or a whole dataset.

    Arguments as in ``annotate``. ``need_landmarker=False`` tolerates a missing MediaPipe model
    (every clip brings precomputed landmarks); a clip that then needs detection fails with
    ``detect.ModelNotFoundError``.
    """
    from neuface_jax.core import fit as fit_lib
    from neuface_jax.synthetic import demo as pipeline

    say = log or (lambda s: None)
    notes: list[str] = []
    face_setup = resolve_face_model(flame_model, landmark_embedding, landmark_set=landmark_set, contour=contour)
    model = face_setup.model
    if face_setup.is_demo:
        msg = "no --flame_model: using the demo head (a procedural stand-in for FLAME, not FLAME)"
        say(f"neuface-jax annotate: {msg}")
        notes.append(msg)
    if face_setup.landmark_set == "ibug68":
        notes.append(
            f"contour: {face_setup.contour}"
            + (" (MediaPipe's jaw points are fixed on the face: frontal contour row for every frame)" if face_setup.contour == "static" else "")
        )
    if isinstance(encoder, str) and encoder == RANDOM_ENCODER:
        encoder = None
    elif encoder is None and face_setup.is_demo and encoder_config is None:
        encoder = _packaged_encoder(notes, say)  # None (random init) when the package lacks it
    enc, enc_cfg_loaded = _load_encoder(encoder, model)
    enc_cfg = enc_cfg_loaded or encoder_config or pipeline.default_encoder_config(model)
    if enc is not None and enc_cfg_loaded is None and encoder_config is None:
        raise ValueError("an Encoder object needs its encoder_config (or pass an (Encoder, EncoderConfig) pair)")
    if learning_rate is None:
        if enc is None:
            learning_rate = RANDOM_INIT_LR
        else:
            learning_rate = PRETRAINED_SMALL_LR if enc_cfg.arch == "small" else PRETRAINED_LR
    if fit_config is None:
        fit_config = fit_lib.FitConfig(
            num_epochs=int(epochs), chunk_frames=int(chunk_frames), learning_rate=float(learning_rate), seed=int(seed)
        )
    try:
        model_path = detect_lib.resolve_model_path(face_landmarker)
    except detect_lib.ModelNotFoundError:
        if need_landmarker:
            raise
        model_path = None
    face = fit_lib.FaceModel(model, face_setup.embedding)
    label = str(encoder) if isinstance(encoder, (str, os.PathLike)) else ("given" if enc is not None else "random init")
    return AnnotateSetup(
        face_setup=face_setup, face=face, encoder=enc, encoder_config=enc_cfg, encoder_label=label,
        fit_config=fit_config, optimizer=fit_lib.NeuFace(face, enc_cfg, fit_config), model_path=model_path,
        options=landmarker_options or detect_lib.LandmarkerOptions(), notes=tuple(notes),
    )


@dataclasses.dataclass
class PreparedClip:
    """One clip ready for the optimizer, with what its outputs need.

    Attributes:
      label: the clip, for messages.
      view_names: one name per view.
      images: uint8 ``[T, W, H, Wd, 3]`` original frames (views padded to the largest).
      data: the unpadded ``fit.ClipData`` (encoder-sized crops, normalized landmark targets, masks).
      crop_transforms: ``[T, W, 2, 3]`` original pixels → crop pixels of ``crop_size``.
      crop_size: side of the reference crop (224).
      target_px: ``[T, W, L, 2]`` fitted landmark targets in original pixels (NaN = no target).
      valid: ``bool [T, W]`` the face was detected.
      frame_indices: ``int64 [T]`` source frame of each row.
      image_sizes: ``(width, height)`` per view.
      out_fps: frame rate of the selected frames (for the overlay video).
      info: the ``clip`` block of ``metrics.json``.
      notes: clip-level notes (warnings) for ``metrics.json``.
      seconds: time spent per stage so far.
      throughput: preprocessing rates.
    """

    label: str
    view_names: tuple[str, ...]
    images: np.ndarray
    data: Any
    crop_transforms: np.ndarray
    crop_size: int
    target_px: np.ndarray
    valid: np.ndarray
    frame_indices: np.ndarray
    image_sizes: list[tuple[int, int]]
    out_fps: float
    info: dict[str, Any]
    notes: list[str]
    seconds: dict[str, float]
    throughput: dict[str, Any]

    @property
    def num_frames(self) -> int:
        return int(self.frame_indices.shape[0])

    @property
    def num_views(self) -> int:
        return len(self.view_names)


def prepare(
    setup: AnnotateSetup,
    videos,
    *,
    view_names: Sequence[str] | None = None,
    view_boxes=None,
    frames: video_lib.FrameRange | None = None,
    start: int | None = None,
    end: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    stride: int = 1,
    fps: float = 25.0,
    strict: bool = False,
    crop_smoothing: str | None = "moving_average",
    smoothing_window: int = 5,
    landmarks_file=None,
    cache_dir=None,
    use_cache: bool = True,
    label: str | None = None,
    progress=True,
    log: Callable[[str], None] | None = print,
    on_first_face: Callable[[], None] | None = None,
) -> PreparedClip:
    """Decodes a clip, finds its landmarks (MediaPipe, or ``landmarks_file``) and builds the crops.

    Arguments as in ``annotate``; ``landmarks_file`` takes precomputed 68-point landmarks
    (``read_precomputed_landmarks``) instead of running MediaPipe (ibug68 set only); ``label``
    names the clip in messages (default: its input paths).

    Raises:
      detect.NoFaceError, video.VideoError, detect.ModelNotFoundError, ValueError: as ``annotate``.
    """
    from neuface_jax.core import fit as fit_lib

    say = log or (lambda s: None)
    seconds: dict[str, float] = {}
    notes: list[str] = []
    face_setup = setup.face_setup
    t0 = time.perf_counter()
    if landmarks_file is not None and face_setup.landmark_set != "ibug68":
        raise ValueError(f"precomputed 68-point landmarks ({landmarks_file}) need landmark_set='ibug68'")
    rng = video_lib.frame_range(frames, start=start, end=end, start_s=start_s, end_s=end_s, stride=stride)
    src = open_source(videos, view_names, view_boxes, rng, strict, fps)
    if label:
        src = dataclasses.replace(src, label=str(label))
    seconds["setup"] = time.perf_counter() - t0

    # ---- decode + detect (background decoding, one detection worker per view)
    t0 = time.perf_counter()
    total = src.num_frames
    w = len(src.view_names)
    what = "decode" if landmarks_file is not None else "decode + detect"
    bar = _progress_bar(progress, f"{what} ({w} view{'s' * (w > 1)})", total)
    try:
        if landmarks_file is not None:
            view_frames, frame_indices = decode_frames(src, bar)
            cached = [True] * w
            pts68, target_px, valid = read_precomputed_landmarks(
                landmarks_file, src.view_names, frame_indices, src.label
            )
            if valid.any() and on_first_face is not None:
                on_first_face()
        else:
            if setup.model_path is None:
                setup_path = detect_lib.resolve_model_path(None)  # raises ModelNotFoundError with instructions
            else:
                setup_path = setup.model_path
            view_frames, lmks, frame_indices, cached = decode_and_detect(
                src, model_path=setup_path, options=setup.options, cache_dir=cache_dir, use_cache=use_cache, bar=bar,
                on_first_face=on_first_face,
            )
            valid = np.stack([l.valid for l in lmks], axis=1)  # [T, W]
            points478 = np.stack([l.xy for l in lmks], axis=1).astype(np.float64)  # [T, W, 478, 2]
            pts68 = landmark_sets.mediapipe_to_ibug68(points478)
            target_px = points478[:, :, face_setup.landmark_ids]  # [T, W, L, 2], gathered by MediaPipe id
            # Far-side guesses of a turned head (detect.FaceLandmarks.visible): no target, no NME.
            seen = np.stack([l.visible for l in lmks], axis=1)[:, :, face_setup.landmark_ids]  # [T, W, L]
            target_px = np.where(seen[..., None], target_px, np.nan)
    finally:
        _close(bar)
    seconds["decode_detect"] = time.perf_counter() - t0
    t_frames = len(frame_indices)
    if not valid.any():
        raise detect_lib.NoFaceError(
            f"{src.label}: no face {'in the precomputed landmarks of' if landmarks_file is not None else 'detected in'} "
            f"any of its {t_frames} frames" + (f" (views {', '.join(src.view_names)})" if w > 1 else "")
        )
    faceless = [src.view_names[v] for v in range(w) if not valid[:, v].any()]
    for name in faceless:
        msg = f"view {name!r} of {src.label}: no face detected in any of its {t_frames} frames; the view is masked"
        warnings.warn(msg, stacklevel=2)
        say(f"neuface-jax annotate: warning: {msg}")
        notes.append(msg)
    if landmarks_file is not None:
        notes.append(f"landmarks from {landmarks_file} (precomputed, not MediaPipe)")
    elif any(cached):
        notes.append(f"landmarks from the cache for views {[n for n, c in zip(src.view_names, cached) if c]}")
    say(
        f"neuface-jax annotate: {src.label}: {t_frames} frames x {w} view(s) decoded"
        f"{'' if landmarks_file is not None else ' and detected'} in {seconds['decode_detect']:.1f}s "
        f"({t_frames * w / max(seconds['decode_detect'], 1e-9):.1f} view-frames/s); faces in "
        + ", ".join(f"{n} {100 * valid[:, v].mean():.0f}%" for v, n in enumerate(src.view_names))
    )

    # ---- crops + encoder inputs
    t0 = time.perf_counter()
    images = stack_views(view_frames)
    del view_frames
    sizes = [(int(images.shape[3]), int(images.shape[2]))] * w
    if landmarks_file is None:
        sizes = [l.image_size for l in lmks]
    crop_size = crops_lib.CROP_SIZE
    crop_m = np.zeros((t_frames, w, 2, 3))
    crop_boxes = np.zeros((t_frames, w, 3))
    for v in range(w):
        if valid[:, v].any():
            ct = crops_lib.compute_crops(
                pts68[:, v], valid[:, v], size=crop_size, smoothing=crop_smoothing, window=smoothing_window
            )
            crop_m[:, v], crop_boxes[:, v] = ct.matrices, ct.boxes
        else:  # a view without a face: a centred square, frames masked anyway
            cw, ch = sizes[v]
            box = np.array([cw / 2.0, ch / 2.0, float(min(cw, ch))])
            crop_boxes[:, v] = box
            crop_m[:, v] = crops_lib.box_to_transform(box, crop_size)
    target_px = np.where(valid[..., None, None], target_px, np.nan)
    data = fit_lib.prepare_clip(
        images, target_px, crop_m, encoder_size=setup.encoder_config.image_size, crop_size=crop_size, valid=valid,
        name=src.label,
    )
    seconds["crops"] = time.perf_counter() - t0
    pre = seconds["decode_detect"]
    throughput = {
        "preprocess_frames_per_s": t_frames / pre if pre > 0 else float("nan"),
        "preprocess_view_frames_per_s": t_frames * w / pre if pre > 0 else float("nan"),
        "detection_cached": bool(all(cached)),
    }
    info = {
        "input": list(src.paths) or [src.label],
        "kind": src.kind,
        "views": list(src.view_names),
        "view_boxes": {n: list(c[1]) for n, c in zip(src.view_names, src.cache_ids) if c and c[1] is not None} or None,
        "image_sizes": {n: list(s) for n, s in zip(src.view_names, sizes)},
        "frames": t_frames,
        "first_last_frame_index": [int(frame_indices[0]), int(frame_indices[-1])],
        "stride": int(rng.stride),
        "fps": src.fps,
        "valid_fraction": {n: float(valid[:, v].mean()) for v, n in enumerate(src.view_names)},
        "views_without_face": faceless,
        "landmarks": str(landmarks_file) if landmarks_file is not None else "mediapipe",
        "crop_smoothing": crop_smoothing,
        "smoothing_window": smoothing_window,
    }
    return PreparedClip(
        label=src.label, view_names=tuple(src.view_names), images=images, data=data, crop_transforms=crop_m,
        crop_size=crop_size, target_px=target_px, valid=valid, frame_indices=np.asarray(frame_indices, np.int64),
        image_sizes=[tuple(s) for s in sizes], out_fps=src.out_fps, info=info, notes=notes, seconds=seconds,
        throughput=throughput,
    )


def write_outputs(
    setup: AnnotateSetup,
    clip: PreparedClip,
    result,
    out_dir,
    *,
    write_video: bool = True,
    write_objs: bool = False,
    overlay_max_side: int = 480,
    progress=True,
    log: Callable[[str], None] | None = print,
    extra: Mapping[str, Any] | None = None,
    started: float | None = None,
) -> tuple[dict[str, pathlib.Path], dict[str, Any]]:
    """Scores a fitted clip and writes ``params.npz``, ``metrics.json`` (each atomically: temporary
    file, fsync, rename) and optionally ``overlay.mp4`` and ``objs/`` into ``out_dir``.

    ``params.npz`` is written before ``metrics.json``; ``extra`` is merged into ``metrics.json``.
    ``started`` (a ``time.perf_counter()`` value): the clip's start, for ``seconds.total`` and
    ``throughput.seconds_per_clip``. Returns ``(files, metrics document)``.
    """
    from neuface_jax.media import export as export_lib
    from neuface_jax.core import metrics as metrics_lib
    from neuface_jax.synthetic import demo as pipeline

    say = log or (lambda s: None)
    seconds = dict(clip.seconds)
    fs = setup.face_setup
    t0 = time.perf_counter()
    metrics, per_view = _metrics(
        result, setup.face, fs, crop_m=clip.crop_transforms, target_px=clip.target_px, valid=clip.valid,
        crop_size=clip.crop_size, view_names=clip.view_names, pipeline=pipeline, metrics_lib=metrics_lib,
    )
    seconds["metrics"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, pathlib.Path] = {}
    files["params"] = export_lib.write_params(
        out / "params.npz", result, view_names=clip.view_names, detected_landmarks=np.asarray(clip.data.landmarks),
        landmarks_mask=np.asarray(clip.data.landmarks_mask) > 0, crop_transforms=clip.crop_transforms,
        valid=clip.valid, frame_indices=clip.frame_indices, crop_size=clip.crop_size, model_name=fs.model_label,
        method="neuface",
    )
    if write_objs:
        objs = export_lib.write_objs(out / "objs", result.vertices, np.asarray(fs.model.faces), clip.view_names)
        files["objs"] = out / "objs"
        say(f"neuface-jax annotate: wrote {len(objs)} OBJ files")
    if write_video:
        bar = _progress_bar(progress, "overlay video", clip.num_frames)
        try:
            files["overlay"] = _write_overlay(
                out / "overlay.mp4", clip.images, result, clip.crop_transforms, np.asarray(fs.model.faces),
                clip.target_px, clip.valid, crop_size=clip.crop_size, fps=clip.out_fps, max_side=overlay_max_side,
                bar=bar, export_lib=export_lib,
            )
        finally:
            _close(bar)
    seconds["export"] = time.perf_counter() - t0
    cfg = setup.fit_config
    doc = {
        **metrics,
        "per_view": per_view,
        "seconds": seconds,
        "throughput": dict(clip.throughput),
        "clip": {
            **clip.info,
            "model": fs.model_label,
            "landmark_set": fs.landmark_set,
            "num_landmarks": int(fs.landmark_ids.shape[0]),
            "contour": fs.contour,
            "encoder": setup.encoder_label,
            "encoder_config": setup.encoder_config.to_dict(),
            "epochs": cfg.num_epochs,
            "chunk_frames": cfg.chunk_frames,
            "learning_rate": cfg.learning_rate,
        },
        "notes": list(setup.notes) + list(clip.notes),
    }
    if extra:
        doc.update(extra)
    if started is not None:
        total = time.perf_counter() - started
        doc["seconds"]["total"] = total
        doc["throughput"]["seconds_per_clip"] = total
    files["metrics"] = export_lib.write_json(out / "metrics.json", doc)
    say(
        f"neuface-jax annotate: {clip.label}: "
        + ", ".join(f"{k} {metrics[k]:.4g}" for k in ("nme_percent", "msi_landmarks", "msi_vertices", "jitter_mm", "cvd_mm") if k in metrics)
    )
    return files, doc


# --------------------------------------------------------------------------- main entry
def annotate(
    videos,
    *,
    out_dir,
    view_names: Sequence[str] | None = None,
    view_boxes=None,
    flame_model=None,
    landmark_embedding=None,
    landmark_set: str = "ibug68",
    contour: str = "auto",
    face_landmarker=None,
    landmarker_options: detect_lib.LandmarkerOptions | None = None,
    epochs: int = DEFAULT_EPOCHS,
    chunk_frames: int = 20,
    learning_rate: float | None = None,
    frames: video_lib.FrameRange | None = None,
    start: int | None = None,
    end: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    stride: int = 1,
    fps: float = 25.0,
    strict: bool = False,
    crop_smoothing: str | None = "moving_average",
    smoothing_window: int = 5,
    encoder=None,
    encoder_config=None,
    fit_config=None,
    write_video: bool = True,
    write_objs: bool = False,
    overlay_max_side: int = 480,
    cache_dir=None,
    use_cache: bool = True,
    seed: int = 0,
    warm_compile: bool = False,
    landmarks_file=None,
    progress=True,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Annotates one clip (one or more synchronized views) with FLAME meshes by NeuFace.

    The stages are public for dataset runs (``neuface_jax.dataset.runner``): ``make_setup`` (once per run),
    ``prepare`` (per clip: decode, landmarks, crops), the optimizer (``setup.optimizer.fit``, or
    several clips packed with ``parallel.fit_packed``) and ``write_outputs``.

    Args:
      videos: a video path, several (synchronized views), a frame folder, image path(s), or a
        ``video.VideoClip``.
      out_dir: output folder (created).
      view_names: one name per view (file stems / box names by default).
      view_boxes: cut a single composite video into views: ``"x0:y0:x1:y1,..."``, optionally
        ``name=x0:y0:x1:y1``, a list of boxes or a ``{name: box}`` mapping (half-open pixel boxes).
      flame_model, landmark_embedding: paths (or loaded objects); None → the demo head (not FLAME).
      landmark_set: ``"ibug68"`` or ``"mediapipe105"``.
      contour: ``"auto"`` / ``"static"`` (frontal contour row for every frame) or ``"dynamic"``
        (DECA's yaw rule); see the module docstring.
      face_landmarker: the MediaPipe model file (else ``$NEUFACE_FACE_LANDMARKER`` or the user cache).
      epochs, chunk_frames, learning_rate: NeuFace settings (lr None → 1e-3 for a random encoder,
        1e-4 for a loaded small encoder, such as the packaged one, 2e-5 for a loaded ResNet-50).
      frames / start / end / start_s / end_s / stride: frame selection (``video.FrameRange``).
      fps: frame rate for frame folders and images (videos carry their own).
      strict: views of different lengths / frame rates are an error instead of a warning.
      crop_smoothing, smoothing_window: temporal smoothing of the crop boxes (None = per-frame).
      encoder: an orbax checkpoint folder (``encoder.save_encoder``), an ``(Encoder, EncoderConfig)``
        pair, ``"random"`` (random init of ``encoder_config``, default
        ``pipeline.default_encoder_config``), or None: on the demo head (no ``flame_model``) without an
        ``encoder_config``, the packaged pretrained encoder (``pretrain.packaged_checkpoint()``);
        otherwise random init.
      fit_config: a full ``fit.FitConfig`` (overrides epochs / chunk_frames / learning_rate / seed).
      write_video, write_objs: write ``overlay.mp4`` / ``objs/``.
      cache_dir, use_cache: the landmark cache (default ``~/.cache/neuface_jax/landmarks``).
      warm_compile: compile NeuFace's step (and export) in a background thread while decoding and
        detecting, started at the first detected face (a clip without a face never pays for it).
        Off by default: on the shared 2-core CPU compilation and MediaPipe compete for the same
        cores and the whole command was no faster (49.8/52.5 s vs 53.1/49.2 s on the 400-frame
        clip); it pays where cores are spare (an accelerator host).
      landmarks_file: precomputed 68-point landmarks instead of MediaPipe
        (``read_precomputed_landmarks``; e.g. a synthetic clip's ``landmarks.npz``).
      progress: tqdm bars (shown on a terminal only), False, or a factory ``(desc, total) -> bar``.
      log: where messages go (None = silent).

    Returns:
      A summary: ``out_dir``, ``files``, ``metrics`` (the metrics.json content), ``seconds``,
      ``throughput``, ``num_frames``, ``views``, ``valid_fraction``, ``model``, ``notes`` and ``result``
      (the ``fit.FitResult``).

    Raises:
      detect.NoFaceError: no face in any frame of any view (naming the clip).
      video.VideoError: unreadable / truncated input (naming the file).
      detect.ModelNotFoundError: no MediaPipe model (the message says how to get one).
    """
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    setup = make_setup(
        flame_model=flame_model, landmark_embedding=landmark_embedding, landmark_set=landmark_set, contour=contour,
        face_landmarker=face_landmarker, landmarker_options=landmarker_options, epochs=epochs,
        chunk_frames=chunk_frames, learning_rate=learning_rate, encoder=encoder, encoder_config=encoder_config,
        fit_config=fit_config, seed=seed, need_landmarker=landmarks_file is None, log=log,
    )
    setup_seconds = time.perf_counter() - t0
    say = log or (lambda s: None)
    opt = setup.optimizer
    warm: list[_Background] = []

    def start_warm_compile():
        if warm_compile:
            n_lmk = int(setup.face_setup.landmark_ids.shape[0])
            warm.append(_Background(lambda: _warm_compile(opt, setup.encoder, len(src0.view_names), n_lmk, src0.num_frames)))

    src0 = None
    if warm_compile:
        # Shapes are needed before the clip is prepared; opening the source only probes headers.
        rng0 = video_lib.frame_range(frames, start=start, end=end, start_s=start_s, end_s=end_s, stride=stride)
        src0 = open_source(videos, view_names, view_boxes, rng0, strict, fps)
    clip = prepare(
        setup, videos, view_names=view_names, view_boxes=view_boxes, frames=frames, start=start, end=end,
        start_s=start_s, end_s=end_s, stride=stride, fps=fps, strict=strict, crop_smoothing=crop_smoothing,
        smoothing_window=smoothing_window, landmarks_file=landmarks_file, cache_dir=cache_dir, use_cache=use_cache,
        progress=progress, log=log, on_first_face=start_warm_compile,
    )
    clip.seconds["setup"] += setup_seconds

    # ---- NeuFace
    t0 = time.perf_counter()
    notes = clip.notes
    for wt in warm:
        wt.join()  # waiting for a compile in flight costs no more than compiling here
        clip.seconds["warm_compile_background"] = wt.seconds
        if wt.error is not None:
            notes.append(f"background compile failed ({type(wt.error).__name__}: {wt.error}); compiled in the fit")
    fit_config = setup.fit_config
    bar = _progress_bar(progress, "NeuFace", fit_config.num_epochs)

    def on_epoch(epoch, parts):
        if bar is not None:
            bar.n = epoch
            bar.set_postfix(loss=f"{parts.get('total', float('nan')):.4g}", refresh=False)
            bar.refresh()

    try:
        result = opt.fit(clip.data, encoder=setup.encoder, progress=on_epoch)
    finally:
        _close(bar)
    clip.seconds["fit"] = time.perf_counter() - t0
    say(f"neuface-jax annotate: NeuFace {fit_config.num_epochs} epochs in {clip.seconds['fit']:.1f}s")

    # ---- outputs
    files, doc = write_outputs(
        setup, clip, result, out_dir, write_video=write_video, write_objs=write_objs,
        overlay_max_side=overlay_max_side, progress=progress, log=log, started=t_start,
    )
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

def _metrics(result, face, setup: _FaceSetup, *, crop_m, target_px, valid, crop_size, view_names, pipeline, metrics_lib):
    """metrics.json's fixed names (top level) and per-view values."""
    t, w = valid.shape
    keep = [v for v in range(w) if valid[:, v].any()]
    vis = np.isfinite(target_px).all(-1) & valid[..., None]
    # NME divides by the detected eye-corner distance: frames with a hidden (NaN) eye corner are left out.
    vis &= np.isfinite(target_px[..., list(setup.eye_idx), :]).all((-1, -2))[..., None]
    pred_px = pipeline.landmarks_to_pixels(result.landmarks2d, crop_m, crop_size)
    li, ri = setup.eye_idx

    def nme(views):
        return _finite_or_nan(
            metrics_lib.nme(
                pred_px[:, views], np.nan_to_num(target_px[:, views]), vis[:, views], left_eye_idx=li, right_eye_idx=ri
            )
        )

    out: dict[str, float] = {}
    sub = dataclasses.replace(
        result,
        expression=result.expression[:, keep], pose=result.pose[:, keep], cam=result.cam[:, keep],
        landmarks2d=result.landmarks2d[:, keep], vertices=result.vertices[:, keep],
        canonical_vertices=result.canonical_vertices[:, keep],
    )
    if t >= 3:
        ev = pipeline.evaluate(
            sub, face, crop_transforms=crop_m[:, keep], reference_landmarks_px=np.nan_to_num(target_px[:, keep]),
            reference_visible=vis[:, keep], crop_size=crop_size,
        )
        out.update({k: ev[k] for k in ("msi_landmarks", "msi_vertices", "jitter_mm")})
    else:  # smoothness needs 3 frames
        out.update({k: float("nan") for k in ("msi_landmarks", "msi_vertices", "jitter_mm")})
    # NME with the set's own eye corners (pipeline.evaluate assumes iBUG 36/45).
    out = {"nme_percent": nme(keep), **out}
    if w > 1:
        out["cvd_mm"] = _finite_or_nan(metrics_lib.cvd(result.canonical_vertices, view_mask=valid))
    per_view = {}
    lmk3d = pipeline.landmarks3d(face, result.vertices, result.pose) if t >= 3 else None
    for v, name in enumerate(view_names):
        d = {"nme_percent": nme([v]) if valid[:, v].any() else float("nan"), "valid_fraction": float(valid[:, v].mean())}
        if t >= 3:
            d["msi_landmarks"] = float(metrics_lib.msi(lmk3d[:, v]))
            d["msi_vertices"] = float(metrics_lib.msi(result.vertices[:, v]))
            d["jitter_mm"] = float(metrics_lib.jitter(result.vertices[:, v]))
        per_view[name] = d
    return out, per_view


def _write_overlay(path, images, result, crop_m, faces, target_px, valid, *, crop_size, fps, max_side, bar, export_lib):
    """Mesh over the original frames, views tiled; streamed to the mp4 in blocks of frames."""
    verts = np.array(result.vertices, np.float64, copy=True)
    for v in range(valid.shape[1]):
        if not valid[:, v].any():
            verts[:, v] = np.nan  # no mesh on a view that never saw the face
    writer = video_lib.VideoWriter(path, fps=max(fps, 1e-3))
    block = 8
    with writer:
        for s in range(0, images.shape[0], block):
            e = min(images.shape[0], s + block)
            tiles = export_lib.overlay_frames(
                images[s:e], verts[s:e], np.asarray(result.cam[s:e]), crop_m[s:e], faces, crop_size=crop_size,
                landmarks=target_px[s:e], max_side=max_side,
            )
            writer.extend(tiles)
            if bar is not None:
                bar.update(e - s)
    return pathlib.Path(path)
