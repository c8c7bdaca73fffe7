"""Ground-truth facial motion and camera rigs for synthetic clips.

Everything here is host-side NumPy and deterministic in its seed. A clip has one
identity; its head moves smoothly with realistic amplitude (turns past 45° included);
the jaw and the expression coefficients change like speech (syllables at 3–5 Hz in
words separated by pauses); the eyes blink every few seconds and the gaze wanders.

Poses are FLAME full poses [T, 15] = [global, neck, jaw, eye_left, eye_right]
axis-angle in the *head's world frame* (the frontal camera's frame). A camera rig
turns them into per-view poses: a view at yaw ψ / pitch φ sees the head rotated by
R_view = R_x(φ) · R_y(−ψ), i.e. a camera placed toward the subject's left (ψ > 0)
sees more of the left cheek.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from neuface_jax.common.views import MEAD_VIEW_ANGLES


# --------------------------------------------------------------------------- camera rigs
@dataclasses.dataclass(frozen=True)
class CameraRig:
    """Cameras around the head, all looking at it.

    Attributes:
      names: view names.
      yaw_deg: camera azimuth per view, degrees; positive = toward the subject's left (+x).
      pitch_deg: camera elevation per view, degrees; positive = above the head, looking down.
    """

    names: tuple[str, ...]
    yaw_deg: tuple[float, ...]
    pitch_deg: tuple[float, ...]

    def __post_init__(self):
        if not (len(self.names) == len(self.yaw_deg) == len(self.pitch_deg)) or not self.names:
            raise ValueError(f"a rig needs one name, yaw and pitch per view, got {self}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"view names must be unique, got {self.names}")

    @property
    def num_views(self) -> int:
        return len(self.names)

    def view_rotations(self) -> np.ndarray:
        """[Vw, 3, 3] rotations taking head-world coordinates into each camera's frame."""
        out = []
        for yaw, pitch in zip(self.yaw_deg, self.pitch_deg):
            r = Rotation.from_euler("x", pitch, degrees=True) * Rotation.from_euler("y", -yaw, degrees=True)
            out.append(r.as_matrix())
        return np.stack(out)


#: (name, yaw, pitch) of MEAD's 7 views, from the one table in ``common.views``.
MEAD_VIEWS = MEAD_VIEW_ANGLES


def monocular_rig() -> CameraRig:
    """One frontal camera."""
    return CameraRig(("front",), (0.0,), (0.0,))


def mead_rig() -> CameraRig:
    """A MEAD-like 7-view rig: front, left/right 30°, left/right 60°, top, down."""
    names, yaws, pitches = zip(*MEAD_VIEWS)
    return CameraRig(tuple(names), tuple(yaws), tuple(pitches))


def rig_from_angles(angles: Sequence[tuple[float, float]], names: Sequence[str] | None = None) -> CameraRig:
    """A rig from (yaw, pitch) pairs in degrees."""
    angles = [(float(y), float(p)) for y, p in angles]
    if names is None:
        names = [f"yaw{y:+.0f}_pitch{p:+.0f}" for y, p in angles]
    return CameraRig(tuple(names), tuple(a[0] for a in angles), tuple(a[1] for a in angles))


def parse_rig(spec: str | Sequence[str]) -> CameraRig:
    """Parses a rig: "mono"/"monocular", "mead"/"mead7", a count "3" (front ± 30°), view names
    from the MEAD rig ("front,left_30,right_60"), or yaw:pitch pairs ("0:0,45:0,-45:10")."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if not items:
        raise ValueError("empty camera rig specification")
    if len(items) == 1:
        key = items[0].lower()
        if key in ("mono", "monocular", "1"):
            return monocular_rig()
        if key in ("mead", "mead7", "7"):
            return mead_rig()
        if key == "3":
            return _select_mead(["front", "left_30", "right_30"])
    mead = {n for n, _, _ in MEAD_VIEWS}
    if all(i in mead for i in items):
        return _select_mead(items)
    try:
        pairs = [tuple(float(x) for x in i.split(":")) for i in items]
    except ValueError:
        raise ValueError(f"cannot parse camera rig {spec!r}: use mono, mead, MEAD view names or yaw:pitch pairs") from None
    if any(len(p) != 2 for p in pairs):
        raise ValueError(f"camera rig {spec!r}: each view must be yaw:pitch")
    return rig_from_angles(pairs)


def _select_mead(names: Sequence[str]) -> CameraRig:
    table = {n: (y, p) for n, y, p in MEAD_VIEWS}
    return CameraRig(tuple(names), tuple(table[n][0] for n in names), tuple(table[n][1] for n in names))


# --------------------------------------------------------------------------- motion
@dataclasses.dataclass(frozen=True)
class MotionConfig:
    """Amplitudes and rates of the synthetic motion (degrees, seconds, coefficient units)."""

    fps: float = 25.0
    shape_std: float = 0.8
    yaw_amplitude_deg: float = 30.0
    #: probability that a clip contains a large head turn past 45°.
    big_turn_probability: float = 0.5
    big_turn_deg: float = 55.0
    #: the large turn is a Gaussian in time of width max(T/6, this · fps) frames: never faster than a
    #: ~0.3 s turn, whatever the clip length (a fixed 4-frame minimum made 20-frame clips turn 55° in
    #: ~4 frames, up to 10°/frame).
    min_turn_width_s: float = 0.3
    pitch_amplitude_deg: float = 10.0
    roll_amplitude_deg: float = 6.0
    translation_amplitude_m: float = 0.01
    jaw_open_max_rad: float = 0.3
    syllable_rate_hz: float = 4.0
    expression_std: float = 0.8
    blink_interval_s: tuple[float, float] = (1.5, 4.0)
    blink_frames: int = 5
    gaze_amplitude_rad: float = 0.15


def _box_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average with edge padding; same length as ``x`` even when shorter than ``width``."""
    pad = width // 2
    xp = np.pad(x, (pad, width - 1 - pad), mode="edge")
    return np.convolve(xp, np.ones(width) / width, mode="valid")


def _smooth_noise(rng, t: int, channels: int, cutoff_hz: float, fps: float) -> np.ndarray:
    """Gaussian-filtered white noise with unit std in expectation, [t, channels].

    Normalized by the filter's gain (√Σk²), not by the sample std of this clip: a short
    clip of slow noise is mostly a drift whose sample std is tiny, and dividing by it
    would blow the drift up.
    """
    sigma = max(fps / (2.0 * np.pi * cutoff_hz), 0.5)
    pad = int(4 * sigma) + 1
    x = rng.normal(size=(t + 2 * pad, channels))
    k = np.exp(-0.5 * (np.arange(-pad, pad + 1) / sigma) ** 2)
    k /= k.sum()
    y = np.stack([np.convolve(x[:, c], k, mode="same") for c in range(channels)], 1)[pad : pad + t]
    return y / np.sqrt(np.sum(k**2))


def _head_motion(rng, t: int, config: MotionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Head rotation [T, 3] (slow smooth wandering plus, for some clips, one large turn) and neck [T, 3]."""
    fps = config.fps
    time = np.arange(t) / fps
    wander = _smooth_noise(rng, t, 3, cutoff_hz=0.4, fps=fps)
    yaw = config.yaw_amplitude_deg * 0.6 * wander[:, 0]
    if rng.random() < config.big_turn_probability:
        center = rng.uniform(0.3, 0.7) * t
        width = max(t / 6.0, config.min_turn_width_s * fps)
        sign = rng.choice([-1.0, 1.0])
        yaw = yaw + sign * config.big_turn_deg * np.exp(-0.5 * ((np.arange(t) - center) / width) ** 2)
    else:
        yaw = yaw + config.yaw_amplitude_deg * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * time + rng.uniform(0, 2 * np.pi))
    pitch = config.pitch_amplitude_deg * wander[:, 1]
    roll = config.roll_amplitude_deg * wander[:, 2]
    head = Rotation.from_euler("YXZ", np.stack([yaw, pitch, roll], 1), degrees=True)
    neck = 0.15 * _smooth_noise(rng, t, 3, cutoff_hz=0.5, fps=fps) * np.radians([4.0, 6.0, 2.0])
    return head.as_rotvec(), neck


def _speech(rng, t: int, config: MotionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Speech envelope × syllables [T] and jaw opening [T]: words (1–2.5 s) separated by pauses,
    syllables at ~4 Hz inside words."""
    fps = config.fps
    speaking = np.zeros(t)
    pos = int(rng.uniform(0, 0.5) * fps)
    while pos < t:
        length = int(rng.uniform(1.0, 2.5) * fps)
        speaking[pos : pos + length] = 1.0
        pos += length + int(rng.uniform(0.2, 0.8) * fps)
    envelope = _box_filter(speaking, 5)
    rate = config.syllable_rate_hz * (1.0 + 0.15 * _smooth_noise(rng, t, 1, 0.5, fps)[:, 0])
    phase = 2 * np.pi * np.cumsum(rate) / fps + rng.uniform(0, 2 * np.pi)
    syllables = 0.5 * (1.0 - np.cos(phase))
    speech = envelope * syllables
    jaw = config.jaw_open_max_rad * (0.15 * envelope + 0.85 * speech) * rng.uniform(0.6, 1.0)
    return speech, jaw


def _blinks(rng, t: int, config: MotionConfig) -> np.ndarray:
    """Blink closure [T] in [0, 1]: every 1.5–4 s, a closure profile over a few frames."""
    fps = config.fps
    blink = np.zeros(t)
    pos = int(rng.uniform(*config.blink_interval_s) * fps * rng.uniform(0.2, 1.0))
    profile = np.sin(np.linspace(0, np.pi, config.blink_frames + 2)[1:-1]) ** 0.7
    while pos < t:
        end = min(t, pos + len(profile))
        blink[pos:end] = np.maximum(blink[pos:end], profile[: end - pos])
        pos += int(rng.uniform(*config.blink_interval_s) * fps)
    return blink


def _gaze(rng, t: int, config: MotionConfig) -> np.ndarray:
    """Gaze [T, 2]: fixations with quick saccades (both eyes together)."""
    fps = config.fps
    gaze = np.zeros((t, 2))
    pos, target = 0, rng.normal(size=2) * config.gaze_amplitude_rad * 0.5
    while pos < t:
        dur = int(rng.uniform(0.3, 1.2) * fps)
        gaze[pos : pos + dur] = target
        pos += dur
        target = rng.normal(size=2) * config.gaze_amplitude_rad * 0.5
    return np.stack([_box_filter(gaze[:, c], 3) for c in range(2)], 1)


def generate_motion(
    *,
    num_frames: int,
    n_shape: int,
    n_expr: int,
    seed: int,
    config: MotionConfig = MotionConfig(),
    blink_component: int | None = None,
    speech_components: Sequence[int] = (),
) -> dict[str, np.ndarray]:
    """Ground-truth FLAME parameters of one clip.

    Args:
      num_frames: T.
      n_shape, n_expr: coefficient counts of the model.
      seed: everything is a deterministic function of it.
      config: amplitudes and rates.
      blink_component: expression index that closes the eyelids (+1 = closed), if any.
      speech_components: expression indices driven with the syllable rhythm (lips).

    Returns:
      dict with ``shape`` [n_shape], ``expression`` [T, n_expr], ``pose`` [T, 15]
      (head world frame), ``translation`` [T, 3] metres, ``speech`` [T] the speech
      envelope in [0, 1] and ``blink`` [T] the blink closure in [0, 1].
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be ≥ 1, got {num_frames}")
    # One generator drawn in a fixed order (shape, head, speech, expressions, blinks, gaze,
    # translation): the clip of a seed stays the same.
    rng = np.random.default_rng(seed)
    t = num_frames
    fps = config.fps

    shape = rng.normal(size=n_shape) * config.shape_std
    head, neck = _head_motion(rng, t, config)
    speech, jaw = _speech(rng, t, config)

    # Expressions: slow emotional drift on all components (decaying amplitude) plus
    # syllable-driven lip components.
    expr = _smooth_noise(rng, t, n_expr, cutoff_hz=0.6, fps=fps) if n_expr else np.zeros((t, 0))
    decay = config.expression_std / np.sqrt(1.0 + np.arange(n_expr))
    expr = expr * decay * rng.uniform(0.5, 1.0, size=n_expr)
    for i, c in enumerate(speech_components):
        if 0 <= c < n_expr:
            expr[:, c] += (1.0 if i % 2 == 0 else -0.6) * 1.2 * speech

    blink = _blinks(rng, t, config)
    if blink_component is not None and 0 <= blink_component < n_expr:
        expr[:, blink_component] = expr[:, blink_component] * 0.2 + 2.5 * blink
    gaze = _gaze(rng, t, config)

    pose = np.zeros((t, 15))
    pose[:, 0:3] = head
    pose[:, 3:6] = neck
    pose[:, 6] = jaw
    pose[:, 9:11] = gaze[:, ::-1] * [1.0, 1.0]  # x = look down/up, y = look left/right
    pose[:, 12:14] = pose[:, 9:11]

    translation = config.translation_amplitude_m * _smooth_noise(rng, t, 3, cutoff_hz=0.3, fps=fps)
    return {
        "shape": shape.astype(np.float32),
        "expression": expr.astype(np.float32),
        "pose": pose.astype(np.float32),
        "translation": translation.astype(np.float32),
        "speech": speech.astype(np.float32),
        "blink": blink.astype(np.float32),
    }


def per_view_pose(pose_world: np.ndarray, rig: CameraRig) -> np.ndarray:
    """[T, 15] head-world poses → [T, Vw, 15] per-view poses (global rotation composed with each view)."""
    pose_world = np.asarray(pose_world, np.float64)
    views = rig.view_rotations()
    head = Rotation.from_rotvec(pose_world[:, 0:3])
    out = np.repeat(pose_world[:, None, :], rig.num_views, axis=1)
    for v in range(rig.num_views):
        out[:, v, 0:3] = (Rotation.from_matrix(views[v]) * head).as_rotvec()
    return out.astype(np.float32)
