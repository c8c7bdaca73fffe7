"""The annotation stage's settings, each declared once (field, default, help and flag together).

``SetupConfig`` is resolved once per run (model, landmarks, encoder, optimizer: ``make_setup``),
``PrepareConfig`` once per clip's decoding/detection/crops (``prepare``), ``OutputConfig`` for what
``write_outputs`` writes. ``annotate`` and the dataset runner take the same objects; the command
line builds them from flags (``neuface_jax.cli.flags``).
"""

from __future__ import annotations

import dataclasses

from neuface_jax.common.settings import setting
from neuface_jax.core import fit as fit_lib
from neuface_jax.core import refine as refine_lib
from neuface_jax.media.export import OVERLAY_STYLES, check_overlay_style
from neuface_jax.media.video import FrameRange
from neuface_jax.photometric import loss as photometric_loss

LANDMARK_SETS = ("ibug68", "mediapipe105")
CONTOURS = ("auto", "static", "dynamic")
LIP_POINTS = ("embedding", "mediapipe")
#: Crop-box smoothing methods; "none" keeps the per-frame reference boxes.
CROP_SMOOTHING = ("moving_average", "savgol", "none")
#: ``SetupConfig.encoder`` value that asks for a randomly initialized encoder (even on the demo head).
RANDOM_ENCODER = "random"
#: NeuFace epochs: the reference's 100. From a random encoder fewer epochs underfit the head
#: rotation of turned heads badly (README: real-video figures).
DEFAULT_EPOCHS = 100


@dataclasses.dataclass(frozen=True)
class SetupConfig:
    """What a run resolves once: face model, landmark set, landmarker, encoder and optimizer settings."""

    flame_model: str | None = setting(None, "FLAME model file (default: the demo head, a stand-in, not FLAME).")
    landmark_embedding: str | None = setting(
        None, "Landmark embedding of --flame_model: 68-point (DECA landmark_embedding.npy) or "
        "mediapipe_landmark_embedding.npz.")
    landmark_set: str = setting(
        "ibug68", "Fitted landmarks: MediaPipe -> iBUG-68, or FLAME's 105-point MediaPipe set (gathered by id).",
        choices=LANDMARK_SETS)
    contour: str = setting(
        "auto", "68-point jaw contour: auto/static = the frontal row for every frame (right for MediaPipe's "
        "mesh-fixed jaw points), dynamic = DECA's yaw rule (for precomputed silhouette-following landmarks "
        "such as synthetic clips').", choices=CONTOURS)
    lip_points: str = setting(
        "embedding", "68-point lip points between the corners and the midline: embedding = where the landmark "
        "embedding puts them, mediapipe = moved along the model's lips to MediaPipe's positions (see "
        "annotation/face.py).", choices=LIP_POINTS)
    face_landmarker: str | None = setting(
        None, "MediaPipe face_landmarker.task (default: $NEUFACE_FACE_LANDMARKER, then the user cache; see "
        "fetch-models).")
    encoder: str | None = setting(
        None, "Encoder checkpoint folder (orbax), or 'random'; default: the packaged pretrained small encoder "
        "on the demo head, a randomly initialized small encoder with a FLAME model.")
    epochs: int = setting(DEFAULT_EPOCHS, "NeuFace epochs over the chunks (reference: 100).")
    chunk_frames: int = setting(20, "Frames per chunk (reference: 20).")
    learning_rate: float | None = setting(
        None, "Learning rate (default: by the starting encoder: 1e-4 from the packaged or another small "
        "checkpoint, 2e-5 from a ResNet-50 checkpoint, 1e-3 from a random encoder).", flag="lr")
    seed: int = setting(0, "Encoder initialization and optimization seed.")
    trainable_stages: int | None = setting(None, fit_lib.ANNOTATION_TRAINABLE_STAGES_HELP)
    lr_schedule: str = setting("constant", fit_lib.LR_SCHEDULE_HELP, choices=fit_lib.LR_SCHEDULES)
    lr_warmup: float = setting(fit_lib.FitConfig.lr_warmup, fit_lib.LR_WARMUP_HELP)
    early_stop: float = setting(fit_lib.FitConfig.early_stop, fit_lib.EARLY_STOP_HELP)
    early_stop_window: int = setting(fit_lib.FitConfig.early_stop_window, fit_lib.EARLY_STOP_WINDOW_HELP)
    refine_steps: int = setting(
        refine_lib.DEFAULT_REFINE_STEPS, "Per-frame refinement after NeuFace: Adam steps of a direct fit of each "
        "frame's expression, head/jaw rotation and camera from NeuFace's result, which lets blinks close and the "
        "mouth reach its range (0: NeuFace's result as it is).")
    refine_lr: float = setting(refine_lib.DEFAULT_REFINE_LR, "Learning rate of the per-frame refinement.")
    weight_photometric: float = setting(
        0.0, "Weight of the photometric term (rendered mesh vs the crops, albedo and light solved per step; 0: off; "
        "about 1 for NeuFace, 5 for a direct fit). It starts after --image_terms_start optimizer steps, ramped in "
        "over 20.")
    weight_silhouette: float = setting(
        0.0, "Weight of the silhouette term (rendered face outline vs MediaPipe's face oval; 0: off). Same schedule.")
    image_terms_start: int = setting(
        photometric_loss.RECIPE_START_STEP, "Optimizer steps the landmarks fit alone before the image terms start.")
    warm_compile: bool = setting(
        False, "Compile the NeuFace step in the background during detection (pays with spare cores; "
        "annotate only).")
    track: str = setting(
        "central", "The face to follow when a clip shows several: central (size and centrality), largest, "
        "first (the leftmost) or an index from the left (0, 1, ...).")

    def __post_init__(self):
        if self.landmark_set not in LANDMARK_SETS:
            raise ValueError(f"landmark_set must be one of {LANDMARK_SETS}, got {self.landmark_set!r}")
        if self.contour not in CONTOURS:
            raise ValueError(f"contour must be one of {CONTOURS}, got {self.contour!r}")
        if int(self.refine_steps) < 0 or not float(self.refine_lr) > 0:
            raise ValueError(f"refine_steps must be >= 0 and refine_lr > 0, got {self.refine_steps}, {self.refine_lr}")
        if int(self.epochs) < 1 or int(self.chunk_frames) < 1:
            raise ValueError(f"epochs and chunk_frames must be >= 1, got {self.epochs}, {self.chunk_frames}")
        self.image_terms()  # validates the weights

    def image_terms(self) -> dict:
        """The photometric / silhouette loss entries these settings add to the fit's loss ({} when off)."""
        return photometric_loss.recipe_terms(float(self.weight_photometric), float(self.weight_silhouette),
                                             start_step=int(self.image_terms_start))

    def replace(self, **kw) -> "SetupConfig":
        return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """How one clip is decoded, detected and cropped."""

    frames: FrameRange = setting(
        FrameRange(), "Frames to take (start/end, start_s/end_s, stride; flags in cli.flags).", cli=False)
    fps: float = setting(25.0, "Frame rate of frame folders and images.")
    strict: bool = setting(
        False, "Views of different lengths, frame rates or starts are an error (default: trim, resample by "
        "time, warn, record in metrics.json).")
    crop_smoothing: str = setting(
        "moving_average", "Temporal smoothing of the crop boxes (none = the per-frame reference boxes).",
        choices=CROP_SMOOTHING)
    smoothing_window: int = setting(5, "Crop smoothing window in frames.")
    use_cache: bool = setting(True, "Use the landmark cache.", flag="cache")
    cache_dir: str | None = setting(None, "Landmark cache folder (default ~/.cache/neuface_jax/landmarks).")

    def __post_init__(self):
        if self.crop_smoothing not in CROP_SMOOTHING:
            raise ValueError(f"crop_smoothing must be one of {CROP_SMOOTHING}, got {self.crop_smoothing!r}")
        if int(self.smoothing_window) < 1:
            raise ValueError(f"smoothing_window must be >= 1, got {self.smoothing_window}")

    @property
    def smoothing_method(self) -> str | None:
        """``crop_smoothing`` as ``media.crops`` takes it (None = no smoothing)."""
        return None if self.crop_smoothing == "none" else self.crop_smoothing

    def replace(self, **kw) -> "PrepareConfig":
        return dataclasses.replace(self, **kw)


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    """What is written per clip besides params.npz and metrics.json."""

    write_video: bool = setting(True, "Write overlay.mp4.", flag="overlay")
    write_objs: bool = setting(False, "Write one OBJ per frame and view (objs/<view>/).", flag="objs")
    overlay_max_side: int = setting(480, "Longest side of the overlay video in pixels.")
    overlay_style: str = setting(
        "wire", "Mesh in overlay.mp4: wire (hidden-line wireframe), shaded (translucent) or both.",
        choices=OVERLAY_STYLES)
    side_by_side: bool = setting(False, "overlay.mp4 shows each view as the image | the mesh.")
    split_at_cuts: bool = setting(
        False, "Split the clip at its shot cuts into separate outputs (<out>/shot_NN/, listed in <out>/shots.json), "
        "each shot tracking its own face.")

    def __post_init__(self):
        check_overlay_style(self.overlay_style)

    def replace(self, **kw) -> "OutputConfig":
        return dataclasses.replace(self, **kw)
