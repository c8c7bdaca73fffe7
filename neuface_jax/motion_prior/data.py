"""Motion data for the prior: annotation ``params.npz`` files → per-clip FLAME parameter sequences.

A clip is read from one view of a ``params.npz`` written by ``annotate`` / ``annotate-dataset``
(``neuface_jax.media.export.write_params``: rows are frames × views, ``frame_index`` / ``view_index``
say which). Its frame rate comes from the ``metrics.json`` beside it (``clip.fps / clip.stride``,
the rate of the fitted frames) or a fallback. Clips are resampled to one target rate; frames flagged
invalid (no face) split a clip into segments and training windows never cross them.

The modeled *state* of a frame is ``[expression[:n_expr], jaw (3), head rotation (3), eyes (6)?]``
(axis-angle, the view's camera frame for the head); the identity (``shapes``) is a per-clip
condition. ``write_params`` writes a generated or synthetic sequence back in the annotation format.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from neuface_jax.common.settings import setting
from neuface_jax import params as params_lib
from neuface_jax.media import export as export_lib

logger = logging.getLogger(__name__)

PARAMS_FILE = "params.npz"
DONE_FILE = "done.json"


@dataclasses.dataclass(frozen=True)
class Layout:
    """Which FLAME parameters form the state vector (and in which order)."""

    n_expr: int = setting(50, "Expression coefficients modeled (fewer in the data: zero-padded).")
    eyes: bool = setting(True, "Model the eyeball rotations (otherwise held at the start frame's).")
    n_identity: int = setting(10, "Identity (shape) coefficients given to the prior as a condition.")

    @property
    def size(self) -> int:
        return self.n_expr + 6 + (6 if self.eyes else 0)

    def slices(self) -> dict[str, slice]:
        e = self.n_expr
        out = {"expression": slice(0, e), "jaw": slice(e, e + 3), "head": slice(e + 3, e + 6)}
        if self.eyes:
            out["eyes"] = slice(e + 6, e + 12)
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class MotionClip:
    """One view of one annotated clip.

    Attributes:
      clip_id: a stable name (the folder name).
      fps: frame rate of the rows.
      expression: [T, E]; pose: [T, 15] full pose (global, neck, jaw, eyes) in this view's frame.
      shape: [N] identity; cam: [T, 3] weak-perspective camera; valid: [T] bool.
      view_name: the view read; source: the params.npz path; model: the face model it was fitted with.
    """

    clip_id: str
    fps: float
    expression: np.ndarray
    pose: np.ndarray
    shape: np.ndarray
    cam: np.ndarray
    valid: np.ndarray
    view_name: str = ""
    source: str = ""
    model: params_lib.ModelInfo = params_lib.ModelInfo()

    @property
    def num_frames(self) -> int:
        return int(self.expression.shape[0])


def find_params(dirs: Sequence[str | Path]) -> list[Path]:
    """``params.npz`` files under the given folders.

    A folder holding ``params.npz`` is one ``annotate`` output; otherwise its sub-folders are
    ``annotate-dataset`` clips, each used only when its completion record ``done.json`` exists.
    """
    out: list[Path] = []
    for d in dirs:
        d = Path(d)
        if (d / PARAMS_FILE).is_file():
            out.append(d / PARAMS_FILE)
        elif d.is_dir():
            found = [s / PARAMS_FILE for s in sorted(d.iterdir())
                     if (s / PARAMS_FILE).is_file() and (s / DONE_FILE).is_file()]
            if not found:
                logger.warning("%s: no params.npz with done.json below it", d)
            out += found
        else:
            raise FileNotFoundError(f"{d}: not a folder")
    return out


def _clip_fps(params_path: Path, default: float) -> float:
    metrics = params_path.parent / "metrics.json"
    if metrics.is_file():
        try:
            clip = json.loads(metrics.read_text()).get("clip", {})
            fps = float(clip.get("fps") or 0.0) / max(1, int(clip.get("stride") or 1))
            if fps > 0:
                return fps
        except (ValueError, TypeError, AttributeError):
            logger.warning("%s: unreadable metrics.json, assuming %.3g fps", params_path.parent, default)
    return float(default)


def load_clip(path, *, view: int | str = 0, fps: float | None = None, default_fps: float = 25.0,
              clip_id: str | None = None) -> MotionClip:
    """Reads one view of a ``params.npz`` (a file, or a folder holding one).

    Args:
      view: view index or name (default the first view).
      fps: the frame rate of the rows; default ``metrics.json`` beside the file, else ``default_fps``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / PARAMS_FILE
    rec = params_lib.load_params(path)
    v = rec.view_names.index(view) if isinstance(view, str) else int(view)
    if not 0 <= v < rec.num_views:
        raise ValueError(f"{path}: view {view!r} not among {list(rec.view_names)}")
    expr, pose = rec.expression[:, v], rec.pose[:, v]
    valid = rec.valid[:, v] & np.all(np.isfinite(expr), -1) & np.all(np.isfinite(pose), -1)
    return MotionClip(
        clip_id=clip_id or path.parent.name,
        fps=float(fps) if fps else _clip_fps(path, default_fps),
        expression=np.nan_to_num(expr).astype(np.float32), pose=np.nan_to_num(pose).astype(np.float32),
        shape=np.asarray(rec.shape, np.float32), cam=np.asarray(rec.cam[:, v], np.float32), valid=valid,
        view_name=rec.view_names[v], source=str(path), model=rec.model,
    )


def parse_start(spec: str) -> tuple[str, int | None]:
    """``"path/params.npz:120"`` → (path, 120); ``"path"`` → (path, None)."""
    head, sep, tail = str(spec).rpartition(":")
    if sep and tail.isdigit() and head:
        return head, int(tail)
    return str(spec), None


def resample(clip: MotionClip, target_fps: float) -> MotionClip:
    """The clip at ``target_fps`` (linear interpolation; a new frame is valid only when both neighbours are)."""
    if clip.num_frames < 2 or abs(clip.fps - target_fps) < 1e-6:
        return clip
    duration = (clip.num_frames - 1) / clip.fps
    t_new = np.arange(int(np.floor(duration * target_fps + 1e-6)) + 1) / target_fps
    pos = t_new * clip.fps
    lo = np.clip(np.floor(pos).astype(int), 0, clip.num_frames - 1)
    hi = np.clip(lo + 1, 0, clip.num_frames - 1)
    w = (pos - lo)[:, None].astype(np.float32)

    def lerp(x):
        return (x[lo] * (1 - w) + x[hi] * w).astype(np.float32)

    valid = clip.valid[lo] & (clip.valid[hi] | (w[:, 0] < 1e-6))
    return dataclasses.replace(clip, fps=float(target_fps), expression=lerp(clip.expression), pose=lerp(clip.pose),
                               cam=lerp(clip.cam), valid=valid)


def segments(valid: np.ndarray) -> list[tuple[int, int]]:
    """Runs ``[start, stop)`` of consecutive valid frames."""
    v = np.concatenate([[False], np.asarray(valid, bool), [False]])
    edges = np.flatnonzero(np.diff(v.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def clip_state(clip: MotionClip, layout: Layout) -> np.ndarray:
    """[T, D] state vectors (expression padded with zeros or truncated to ``layout.n_expr``)."""
    t = clip.num_frames
    expr = np.zeros((t, layout.n_expr), np.float32)
    k = min(layout.n_expr, clip.expression.shape[1])
    expr[:, :k] = clip.expression[:, :k]
    parts = [expr, clip.pose[:, 6:9], clip.pose[:, 0:3]]
    if layout.eyes:
        parts.append(clip.pose[:, 9:15])
    return np.concatenate(parts, 1).astype(np.float32)


def identity_vector(shape: np.ndarray, layout: Layout) -> np.ndarray:
    out = np.zeros(layout.n_identity, np.float32)
    k = min(layout.n_identity, len(shape))
    out[:k] = shape[:k]
    return out


def state_to_params(states: np.ndarray, layout: Layout, base_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[..., T, D] states → (expression [..., T, n_expr], full pose [..., T, 15]); neck (and eyes
    when not modeled) are taken from ``base_pose`` [15]."""
    sl = layout.slices()
    pose = np.broadcast_to(np.asarray(base_pose, np.float32), states.shape[:-1] + (15,)).copy()
    pose[..., 6:9] = states[..., sl["jaw"]]
    pose[..., 0:3] = states[..., sl["head"]]
    if layout.eyes:
        pose[..., 9:15] = states[..., sl["eyes"]]
    return np.asarray(states[..., sl["expression"]], np.float32), pose


def is_validation(clip_id: str, fraction: float) -> bool:
    """A stable, order-free split by clip: a hash of the id decides."""
    return (zlib.crc32(clip_id.encode()) % 10_000) < fraction * 10_000


def split_clips(clips: Sequence[MotionClip], val_fraction: float) -> tuple[list[MotionClip], list[MotionClip]]:
    """(train, validation) by clip id; with two or more clips each side gets at least one."""
    val = [c for c in clips if is_validation(c.clip_id, val_fraction)]
    train = [c for c in clips if not is_validation(c.clip_id, val_fraction)]
    if val_fraction > 0 and len(clips) >= 2:
        if not val:
            val, train = [train[-1]], train[:-1]
        elif not train:
            train, val = [val[0]], val[1:]
    return train, val


def write_params(path, expression: np.ndarray, pose: np.ndarray, shape: np.ndarray, *, cam=None, fps: float,
                 view_name: str = "front", crop_transform=None, num_landmarks: int = 68,
                 method: str = "motion-prior", model: params_lib.ModelInfo | None = None) -> Path:
    """Writes one view's parameter sequence as an annotation ``params.npz`` (plus a ``metrics.json``
    carrying its frame rate, as ``annotate`` writes one).

    There are no images behind these frames: the landmark arrays are NaN with an all-False mask.
    ``model``: the face model the parameters belong to (recorded as ``annotate`` records it).
    """
    t = int(expression.shape[0])
    cam = np.broadcast_to(np.asarray([9.0, 0.0, 0.0] if cam is None else cam, np.float32), (t, 3))
    crop = np.asarray([[1.0, 0, 0], [0, 1.0, 0]] if crop_transform is None else crop_transform, np.float32)
    nan_l = np.full((t, 1, num_landmarks, 2), np.nan, np.float32)
    result = _Sequence(
        expression=np.asarray(expression, np.float32)[:, None], pose=np.asarray(pose, np.float32)[:, None],
        cam=np.asarray(cam)[:, None], shape=np.asarray(shape, np.float32), landmarks2d=nan_l,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_lib.write_params(
        path, result, view_names=[view_name], detected_landmarks=nan_l,
        landmarks_mask=np.zeros((t, 1, num_landmarks), bool), crop_transforms=np.broadcast_to(crop, (t, 1, 2, 3)),
        valid=np.ones((t, 1), bool), model_name=model.name if model else "", method=method,
        extra=params_lib.model_arrays(model) if model else None,
    )
    export_lib.write_json(path.parent / "metrics.json", {"clip": {"fps": float(fps), "stride": 1, "frames": t,
                                                                   "views": [view_name]}, "method": method})
    return path


@dataclasses.dataclass(frozen=True)
class _Sequence:
    """The fields of a fit result that ``export.write_params`` reads ([T, W, ...] arrays)."""

    expression: np.ndarray
    pose: np.ndarray
    cam: np.ndarray
    shape: np.ndarray
    landmarks2d: np.ndarray
