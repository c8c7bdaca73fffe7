"""Labelled real frames from this project's own annotations: encoder crops rebuilt from the videos.

An ``annotate`` output folder (or each clip folder of an ``annotate-dataset`` output, or each shot of a
``--split_at_cuts`` run) holds ``params.npz`` — per-frame FLAME parameters, the weak-perspective camera,
the detected landmarks in normalized crop coordinates with their mask, the validity of each frame and
the crop transforms (original pixels → crop pixels of ``crop_size``) — and ``metrics.json``, whose
``clip`` block names the input video(s), the view boxes and each view's image size. Nothing else is
needed to rebuild what the encoder saw: the frames are decoded again (``media.sources.open_source`` on
the recorded inputs and frame range) and warped through the saved transforms, scaled to the requested
encoder size exactly as ``media.crops.prepare_clip`` does for the annotation itself.

``iter_labelled_clips`` streams one clip at a time (a big corpus never has to fit in memory);
``load_labelled_frames`` concatenates them. Every failure names the folder or file: a missing or moved
video (``video_dirs`` lets a moved corpus be found by file name), a video whose frames or frame size
no longer match the annotation, a malformed ``params.npz`` or ``metrics.json``, annotations fitted with
different face models or landmark sets.

Example::

    frames = load_labelled_frames(["out/mead", "dataset_out"], 64, frame_stride=2)
    frames.images.shape          # (N, 64, 64, 3) uint8
    frames.expression[frames.clip_index == 0]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Callable, Iterator, Sequence

import numpy as np

from neuface_jax import params as params_lib
from neuface_jax.core import camera as camera_lib
from neuface_jax.media import crops as crops_lib
from neuface_jax.media import sources as sources_lib
from neuface_jax.media import video as video_lib

__all__ = [
    "AnnotationError",
    "ClipSource",
    "LabelledFrames",
    "find_annotations",
    "iter_labelled_clips",
    "load_labelled_frames",
    "read_clip_source",
]

logger = logging.getLogger(__name__)

#: ``recrop(image, transform, size) -> transform | None``: another crop of a labelled frame (e.g. where a
#: live face detector would put it); see ``iter_labelled_clips``.
Recrop = Callable[[np.ndarray, np.ndarray, int], "np.ndarray | None"]

PARAMS_FILE = "params.npz"
METRICS_FILE = "metrics.json"
DONE_FILE = "done.json"
SHOTS_FILE = "shots.json"


class AnnotationError(ValueError):
    """An annotation folder that cannot give labelled frames (the message names the folder or file)."""


@dataclasses.dataclass(frozen=True)
class ClipSource:
    """Where an annotated clip's frames come from and what its labels are (one per annotation folder).

    Attributes:
      clip_id: the folder's name (made unique by its parents when two folders share a name).
      folder: the annotation folder.
      inputs: the video file(s), frame folder or images that were annotated (resolved paths).
      kind: ``open_source``'s kind: "videos", "composite", "folder" or "images".
      view_names: the views, in the params file's order.
      view_boxes: ``{view: (x0, y0, x1, y1)}`` cutting a composite video, else None.
      image_sizes: ``(width, height)`` per view, as annotated.
      frame_range: the decoded range (first to last annotated frame, the annotation's stride).
      fps: the rate of inputs that carry none (frame folders, images).
      landmark_set, contour: the fitted landmarks (``annotation.face``), as recorded.
      model: the face model the parameters belong to.
    """

    clip_id: str
    folder: pathlib.Path
    inputs: tuple[str, ...]
    kind: str
    view_names: tuple[str, ...]
    view_boxes: dict | None
    image_sizes: tuple[tuple[int, int], ...]
    frame_range: video_lib.FrameRange
    fps: float
    landmark_set: str
    contour: str
    model: params_lib.ModelInfo


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledFrames:
    """Real frames with the annotation's labels. N frames (one per frame and view), S the crop side, L landmarks.

    Attributes:
      images: uint8 ``[N, S, S, 3]`` encoder crops (the annotation's crop transforms, scaled to S).
      shape: float32 ``[N, n_shape]`` the clip's identity.
      expression: float32 ``[N, n_expr]``.
      pose: float32 ``[N, 15]`` full FLAME pose (global, neck, jaw, eyes; axis-angle, the view's frame).
      cam: float32 ``[N, 3]`` weak-perspective camera (s, tx, ty) of the crop.
      landmarks: float32 ``[N, L, 2]`` detected landmarks, normalized crop coordinates (0 where masked).
      landmarks_mask: bool ``[N, L]`` a detected point to fit (visible, finite, frame detected).
      predicted_landmarks: float32 ``[N, L, 2]`` the fitted mesh's landmarks (the annotation's own).
      clip_index: int32 ``[N]`` index into ``clips``.
      view_index: int32 ``[N]`` the view within its clip.
      frame_index: int64 ``[N]`` source frame number in the clip's video.
      clips: the ``ClipSource`` of each clip index.
    """

    images: np.ndarray
    shape: np.ndarray
    expression: np.ndarray
    pose: np.ndarray
    cam: np.ndarray
    landmarks: np.ndarray
    landmarks_mask: np.ndarray
    predicted_landmarks: np.ndarray
    clip_index: np.ndarray
    view_index: np.ndarray
    frame_index: np.ndarray
    clips: tuple[ClipSource, ...] = ()

    _ARRAYS = ("images", "shape", "expression", "pose", "cam", "landmarks", "landmarks_mask",
               "predicted_landmarks", "clip_index", "view_index", "frame_index")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def clip_ids(self) -> tuple[str, ...]:
        return tuple(c.clip_id for c in self.clips)

    def subset(self, idx) -> "LabelledFrames":
        """The rows ``idx`` (clips kept: ``clip_index`` still points into the same ``clips``)."""
        return dataclasses.replace(self, **{k: getattr(self, k)[idx] for k in self._ARRAYS})

    def select_clips(self, clip_ids: Sequence[str]) -> "LabelledFrames":
        """The rows of the named clips (whole clips, e.g. a held-out split)."""
        unknown = sorted(set(clip_ids) - set(self.clip_ids))
        if unknown:
            raise KeyError(f"no clip(s) {unknown} among {list(self.clip_ids)}")
        keep = [i for i, c in enumerate(self.clip_ids) if c in set(clip_ids)]
        return self.subset(np.isin(self.clip_index, keep))

    @staticmethod
    def concatenate(parts: Sequence["LabelledFrames"]) -> "LabelledFrames":
        """Rows of several parts, clip indices renumbered into one ``clips`` tuple."""
        if not parts:
            raise ValueError("nothing to concatenate")
        clips: list[ClipSource] = []
        arrays: dict[str, list[np.ndarray]] = {k: [] for k in LabelledFrames._ARRAYS}
        for p in parts:
            for k in LabelledFrames._ARRAYS:
                a = getattr(p, k)
                arrays[k].append(a + len(clips) if k == "clip_index" else a)
            clips += list(p.clips)
        _check_same_labels(clips)
        return LabelledFrames(**{k: np.concatenate(v) for k, v in arrays.items()}, clips=tuple(clips))


# ------------------------------------------------------------------------------------- finding folders
def find_annotations(dirs: Sequence[str | pathlib.Path]) -> list[pathlib.Path]:
    """Annotation folders (each holding ``params.npz``) under the given folders, in a stable order.

    A folder holding ``params.npz`` is one ``annotate`` output; one holding ``shots.json`` is a clip split at
    its cuts (its ``shot_*`` folders); otherwise its sub-folders are ``annotate-dataset`` clips, each used
    only once its completion record ``done.json`` exists.

    Raises:
      AnnotationError: a folder that does not exist or holds no annotation at all.
    """
    out: list[pathlib.Path] = []
    for d in dirs:
        d = pathlib.Path(d).expanduser()
        if not d.is_dir():
            raise AnnotationError(f"{d}: no such annotation folder")
        if (d / PARAMS_FILE).is_file():
            out.append(d)
            continue
        if (d / SHOTS_FILE).is_file():
            found = [s for s in sorted(d.glob("shot_*")) if (s / PARAMS_FILE).is_file()]
        else:
            clips = [s for s in sorted(d.iterdir()) if (s / PARAMS_FILE).is_file()]
            found = [s for s in clips if (s / DONE_FILE).is_file()]
            partial = [s.name for s in clips if not (s / DONE_FILE).is_file()]
            if partial:
                logger.warning("%s: skipping %d clip folder(s) without %s (unfinished): %s", d, len(partial),
                               DONE_FILE, partial[:5])
        if not found:
            raise AnnotationError(f"{d}: no {PARAMS_FILE} in it nor in a finished clip folder below it "
                                  f"(an annotate or annotate-dataset output folder)")
        out += found
    unique = {f.resolve(): f for f in out}  # a folder given twice (or inside another given one) counts once
    return list(unique.values())


def _clip_ids(folders: Sequence[pathlib.Path]) -> list[str]:
    """Folder names, prefixed by their parents where two folders share a name."""
    names = [f.name for f in folders]
    if len(set(names)) == len(names):
        return names
    return ["/".join(f.resolve().parts[-2:]) if names.count(f.name) > 1 else f.name for f in folders]


# ------------------------------------------------------------------------------------- one folder
def _resolve_input(path: str, folder: pathlib.Path, video_dirs: Sequence[pathlib.Path]) -> pathlib.Path:
    """The recorded input path: as recorded, then relative to the annotation folder, then by file name in
    ``video_dirs``."""
    p = pathlib.Path(path).expanduser()
    tries = [p] if p.is_absolute() else [p, folder / p]
    tries += [pathlib.Path(d) / p.name for d in video_dirs]
    for t in tries:
        if t.exists():
            return t.resolve()
    where = f" nor under {[str(d) for d in video_dirs]}" if video_dirs else ""
    raise AnnotationError(
        f"{folder}: the annotated input {path} is missing (moved or deleted?) and was not found by name{where}; "
        f"pass the folder that holds it now (video_dirs / --video_dir)"
    )


def read_clip_source(folder, *, clip_id: str | None = None, video_dirs: Sequence = ()) -> ClipSource:
    """What ``metrics.json`` and ``params.npz`` of one annotation folder say about its input.

    Raises:
      AnnotationError: ``metrics.json`` missing, unreadable or without the input fields; the input missing.
    """
    folder = pathlib.Path(folder)
    mpath = folder / METRICS_FILE
    if not mpath.is_file():
        raise AnnotationError(f"{mpath}: missing (the annotation's metrics.json names its video)")
    try:
        clip = json.loads(mpath.read_text())["clip"]
        inputs = [str(x) for x in clip["input"]]
        kind = str(clip["kind"])
        views = tuple(str(v) for v in clip["views"])
        sizes = tuple(tuple(int(x) for x in clip["image_sizes"][v]) for v in views)
        first, last = (int(x) for x in clip["first_last_frame_index"])
        stride = int(clip.get("stride") or 1)
        boxes = clip.get("view_boxes") or None
        fps = float(clip.get("fps") or 25.0)
    except (ValueError, KeyError, TypeError) as e:
        raise AnnotationError(f"{mpath}: not an annotation metrics.json with a clip block "
                              f"({type(e).__name__}: {e})") from None
    if kind == "clip":
        raise AnnotationError(f"{mpath}: the clip was annotated from frames in memory; there is no file to "
                              f"rebuild its crops from")
    dirs = [pathlib.Path(d).expanduser() for d in video_dirs]
    resolved = tuple(str(_resolve_input(p, folder, dirs)) for p in inputs)
    if boxes is not None:
        boxes = {str(k): tuple(int(x) for x in b) for k, b in boxes.items()}
    model = _load_record(folder).model
    return ClipSource(
        clip_id=clip_id or folder.name, folder=folder, inputs=resolved, kind=kind, view_names=views,
        view_boxes=boxes, image_sizes=sizes, frame_range=video_lib.FrameRange(start=first, end=last + 1, stride=stride),
        fps=fps, landmark_set=str(clip.get("landmark_set", "ibug68")), contour=str(clip.get("contour", "static")),
        model=model,
    )


def _landmarks_mask(folder: pathlib.Path, record: params_lib.ParamsRecord) -> np.ndarray:
    """``bool [T, W, L]``: the file's ``landmarks_mask`` on the grid (finite detections where absent)."""
    lmk = record.landmarks2d
    with np.load(folder / PARAMS_FILE, allow_pickle=False) as z:
        if "landmarks_mask" not in z.files:
            return np.all(np.isfinite(lmk), -1)
        rows = np.asarray(z["landmarks_mask"], bool)
        fi, vi = np.asarray(z["frame_index"], np.int64), np.asarray(z["view_index"], np.int64)
    if rows.shape != (fi.shape[0],) + lmk.shape[2:3]:
        raise AnnotationError(f"{folder / PARAMS_FILE}: landmarks_mask has shape {rows.shape}, expected "
                              f"({fi.shape[0]}, {lmk.shape[2]})")
    out = np.zeros(lmk.shape[:3], bool)
    out[fi, vi] = rows
    return out


def _load_record(folder: pathlib.Path) -> params_lib.ParamsRecord:
    path = folder / PARAMS_FILE
    try:
        record = params_lib.load_params(path)
    except (params_lib.ParamsError, FileNotFoundError) as e:
        raise AnnotationError(str(e)) from None
    missing = [k for k in ("crop_transforms", "landmarks2d", "predicted_landmarks2d") if getattr(record, k) is None]
    if missing:
        raise AnnotationError(f"{path}: no {missing} recorded (written by an older version?); re-annotate the clip")
    bad = [k for k in ("shape", "expression", "pose", "cam", "crop_transforms")
           if not np.all(np.isfinite(getattr(record, k)))]
    if bad:
        raise AnnotationError(f"{path}: non-finite values in {bad}")
    return record


def _select_rows(valid: np.ndarray, frame_stride: int, max_frames: int | None) -> np.ndarray:
    """Row indices t of the frames to use: every ``frame_stride``-th row with a detection in some view,
    then at most ``max_frames`` of them evenly spread."""
    rows = np.flatnonzero(valid.any(-1))[:: max(1, int(frame_stride))]
    if max_frames is not None and rows.size > int(max_frames):
        rows = rows[np.unique(np.linspace(0, rows.size - 1, int(max_frames)).round().astype(int))]
    return rows


def _stream_frames(cs: ClipSource, wanted: np.ndarray) -> Iterator[tuple[int, tuple[np.ndarray, ...]]]:
    """``(source frame, views)`` of the wanted frames, decoded from the recorded inputs one at a time and
    checked against the annotation (views, frame size, every wanted frame present)."""
    label = f"{cs.folder}: input {', '.join(cs.inputs)}"
    try:
        source = sources_lib.open_source(
            list(cs.inputs) if len(cs.inputs) > 1 else cs.inputs[0], view_names=cs.view_names,
            view_boxes=cs.view_boxes, frames=cs.frame_range, fps=cs.fps,
        )
    except (video_lib.VideoError, ValueError) as e:
        raise AnnotationError(f"{label}: cannot be opened as annotated ({e})") from None
    if tuple(source.view_names) != cs.view_names:
        raise AnnotationError(f"{label}: has views {list(source.view_names)}, the annotation {list(cs.view_names)}")
    want = set(int(i) for i in wanted)
    last, seen = max(want), set()
    stream = source.stream()
    try:
        for idx, views in stream:
            if idx in want:
                sizes = tuple((int(v.shape[1]), int(v.shape[0])) for v in views)
                if sizes != cs.image_sizes:
                    raise AnnotationError(
                        f"{label}: frame {idx} is {sizes} (width, height per view) but the annotation was made on "
                        f"{cs.image_sizes}: not the annotated video")
                seen.add(idx)
                yield idx, views
            if idx >= last:
                break
    except video_lib.VideoError as e:
        raise AnnotationError(f"{label}: {e}") from None
    finally:
        stream.close()  # stops the decoder when the last wanted frame comes before the end
    lost = sorted(want - seen)
    if lost:
        raise AnnotationError(
            f"{label}: frames {lost[:5]}{'...' if len(lost) > 5 else ''} of the annotation are not in the video "
            f"({len(lost)} of {len(want)} missing): shorter than when it was annotated, not the annotated video")


def _reframing(old: np.ndarray, new: np.ndarray, size: int, where: str) -> tuple[float, np.ndarray]:
    """``(zoom, shift)`` of the map ``q → zoom·q + shift`` from the normalized coordinates of the crop ``old``
    to those of ``new`` (both [2, 3], image → ``size``-pixel crop); they must differ by a zoom and a shift."""
    rel = crops_lib.compose_transforms(np.asarray(new, np.float64), crops_lib.invert_transform(old))
    lin = rel[:, :2]
    zoom = float(np.sqrt(abs(np.linalg.det(lin))))
    if not np.isfinite(zoom) or zoom <= 0 or np.abs(lin - zoom * np.eye(2)).max() > 1e-6 * max(zoom, 1.0):
        raise AnnotationError(f"{where}: a re-crop must differ from the annotation's crop by a zoom and a shift "
                              f"only, got the linear part {lin.tolist()}")
    centre = crops_lib.to_normalized(crops_lib.apply_transform(crops_lib.from_normalized(np.zeros((1, 2)), size),
                                                               rel), size)[0]
    return zoom, centre


def _clip_frames(cs: ClipSource, crop_size: int, *, views: Sequence[str] | None, frame_stride: int,
                 max_frames: int | None, recrop: Recrop | None = None) -> LabelledFrames:
    record = _load_record(cs.folder)
    if record.view_names != cs.view_names:
        raise AnnotationError(f"{cs.folder}: params.npz has views {list(record.view_names)}, metrics.json "
                              f"{list(cs.view_names)}")
    fr = record.frame_indices
    if fr.size and (fr.min() < cs.frame_range.start or fr.max() >= cs.frame_range.end):
        raise AnnotationError(f"{cs.folder}: params.npz frames {fr.min()}..{fr.max()} lie outside metrics.json's "
                              f"range {cs.frame_range.start}..{cs.frame_range.end - 1}")
    wv = [i for i, n in enumerate(cs.view_names) if views is None or n in set(views)]
    if not wv:
        raise AnnotationError(f"{cs.folder}: none of the views {list(views or [])} is among {list(cs.view_names)}")
    mask = _landmarks_mask(cs.folder, record)
    rows = _select_rows(record.valid[:, wv], frame_stride, max_frames)
    if rows.size == 0:
        raise AnnotationError(f"{cs.folder}: no frame with a detected face to train on")
    row_of = {int(fr[t]): int(t) for t in rows}
    scale = float(crop_size) / float(record.crop_size)
    out: dict[str, list] = {k: [] for k in ("images", "t", "w", "zoom", "shift")}
    for idx, frame in _stream_frames(cs, fr[rows]):
        t = row_of[idx]
        for w in wv:
            if record.valid[t, w]:
                m = record.crop_transforms[t, w].astype(np.float64) * scale
                zoom, shift = 1.0, np.zeros(2)
                new = recrop(frame[w], m, crop_size) if recrop is not None else None
                if new is not None:
                    zoom, shift = _reframing(m, new, crop_size, f"{cs.folder} frame {idx}")
                    m = np.asarray(new, np.float64)
                out["images"].append(crops_lib.warp_crop(frame[w], m, crop_size))
                out["t"].append(t)
                out["w"].append(w)
                out["zoom"].append(zoom)
                out["shift"].append(shift)
    t, w = np.asarray(out["t"], np.int64), np.asarray(out["w"], np.int64)
    # Labels in the crop's normalized coordinates follow a re-crop: points q → zoom·q + shift, the camera to match.
    zoom, shift = np.asarray(out["zoom"], np.float64), np.asarray(out["shift"], np.float64).reshape(-1, 2)
    move = lambda q: q * zoom[:, None, None] + shift[:, None, :]  # noqa: E731
    keep = mask[t, w] & np.all(np.isfinite(record.landmarks2d[t, w]), -1)
    n = t.size
    return LabelledFrames(
        images=np.stack(out["images"]).astype(np.uint8),
        shape=np.broadcast_to(record.shape.astype(np.float32), (n, record.shape.shape[-1])).copy(),
        expression=np.array(record.expression[t, w], np.float32),
        pose=np.array(record.pose[t, w], np.float32),
        cam=camera_lib.reframe_camera(record.cam[t, w].astype(np.float64), zoom, shift, xp=np).astype(np.float32),
        landmarks=np.where(keep[..., None], move(np.nan_to_num(record.landmarks2d[t, w])), 0.0).astype(np.float32),
        landmarks_mask=keep,
        predicted_landmarks=move(record.predicted_landmarks2d[t, w].astype(np.float64)).astype(np.float32),
        clip_index=np.zeros(n, np.int32),
        view_index=w.astype(np.int32),
        frame_index=fr[t].astype(np.int64),
        clips=(cs,),
    )


def _check_same_labels(clips: Sequence[ClipSource]) -> None:
    """All clips labelled with one face model and landmark set (targets of different models do not mix)."""
    if not clips:
        return
    first = clips[0]
    for c in clips[1:]:
        if (c.landmark_set, c.contour) != (first.landmark_set, first.contour):
            raise AnnotationError(
                f"{c.folder}: fitted with landmarks {c.landmark_set}/{c.contour} but {first.folder} with "
                f"{first.landmark_set}/{first.contour}; train on annotations of one landmark set")
        a, b = c.model, first.model
        if a.sha256 and b.sha256:
            same = a.sha256 == b.sha256
        else:
            same = (a.name, a.n_shape, a.n_expr) == (b.name, b.n_shape, b.n_expr)
        if not same:
            raise AnnotationError(f"{c.folder}: fitted with the face model {a.name!r} but {first.folder} with "
                                  f"{b.name!r}; train on annotations of one model")


# ------------------------------------------------------------------------------------- public API
def iter_labelled_clips(
    annotation_dirs: Sequence[str | pathlib.Path],
    crop_size: int,
    *,
    views: Sequence[str] | None = None,
    frame_stride: int = 1,
    max_frames: int | None = None,
    video_dirs: Sequence[str | pathlib.Path] = (),
    recrop: Recrop | None = None,
) -> Iterator[LabelledFrames]:
    """Streams the labelled frames of each annotated clip (one ``LabelledFrames`` per clip, in order).

    Args:
      annotation_dirs: ``annotate`` / ``annotate-dataset`` output folders (``find_annotations``).
      crop_size: side of the encoder crops in pixels (the encoder's ``image_size``).
      views: view names to use (None: all).
      frame_stride: take every k-th annotated frame (of those with a detected face).
      max_frames: at most this many frames per clip (evenly spread; None: all).
      video_dirs: folders to look for a recorded input by its file name when it has moved.
      recrop: ``recrop(view_image, transform, crop_size)`` → another crop transform of the frame (image →
        ``crop_size`` pixels; a zoom and shift of the annotation's ``transform``, no rotation) or None to keep
        the annotation's (e.g. ``realtime.track.detector_recrop``: where the live tracker would crop). The
        labels move with it: landmarks and fitted landmarks in the new crop's coordinates, the camera
        ``core.camera.reframe_camera``'d; pose and coefficients do not change.

    Only frames and views with a detected face are returned. All clips are checked first (inputs found,
    one model and landmark set) so a corpus fails before any decoding.

    Raises:
      AnnotationError: naming the folder or file (see the module docstring).
    """
    if int(crop_size) < 8:
        raise ValueError(f"crop_size must be at least 8 pixels, got {crop_size}")
    folders = find_annotations(annotation_dirs)
    sources = [read_clip_source(f, clip_id=cid, video_dirs=video_dirs) for f, cid in zip(folders, _clip_ids(folders))]
    _check_same_labels(sources)
    for cs in sources:
        part = _clip_frames(cs, int(crop_size), views=views, frame_stride=frame_stride, max_frames=max_frames,
                            recrop=recrop)
        logger.info("%s: %d labelled frames (%d px crops)", cs.clip_id, len(part), crop_size)
        yield part


def load_labelled_frames(
    annotation_dirs: Sequence[str | pathlib.Path],
    crop_size: int,
    *,
    views: Sequence[str] | None = None,
    frame_stride: int = 1,
    max_frames: int | None = None,
    video_dirs: Sequence[str | pathlib.Path] = (),
    recrop: Recrop | None = None,
) -> LabelledFrames:
    """Every clip of ``iter_labelled_clips`` in one ``LabelledFrames`` (same arguments)."""
    return LabelledFrames.concatenate(list(iter_labelled_clips(
        annotation_dirs, crop_size, views=views, frame_stride=frame_stride, max_frames=max_frames,
        video_dirs=video_dirs, recrop=recrop,
    )))
