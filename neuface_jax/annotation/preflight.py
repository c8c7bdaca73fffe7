"""A run's inputs checked before anything expensive is built (``annotate``, ``annotate-dataset``).

Every check is cheap (a file's existence and first bytes, a small embedding file, a video's header
probe, a folder's permissions) and raises the error the later stage would raise, naming the file:
a wrong path costs a moment instead of the face model build, the encoder load and the compile.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Sequence

import flame_jax
from neuface_jax.annotation.config import RANDOM_ENCODER, PrepareConfig, SetupConfig
from neuface_jax.media import detect as detect_lib
from neuface_jax.media import video as video_lib
from neuface_jax.media.sources import Source, is_image, open_source

__all__ = ["InputError", "check_inputs", "check_output_dir", "check_setup_files", "check_videos"]

#: The file an orbax checkpoint folder always has (what ``encoder.load_encoder`` restores from).
_ORBAX_MARKER = "_CHECKPOINT_METADATA"


class InputError(ValueError):
    """An input that a run cannot use (names the flag or file and why)."""


def _existing_file(path, what: str) -> pathlib.Path:
    p = pathlib.Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what} {p}: no such file")
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} {p}: not readable")
    if p.stat().st_size == 0:
        raise InputError(f"{what} {p}: the file is empty")
    return p


def _check_encoder(path) -> None:
    p = pathlib.Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"--encoder {p}: no encoder checkpoint folder there (or pass 'random')")
    meta = p / "config" / "metadata"
    if not (p / _ORBAX_MARKER).is_file() or not meta.is_file():
        raise InputError(f"--encoder {p}: not an encoder checkpoint (no {_ORBAX_MARKER} or config/metadata)")
    try:
        json.loads(meta.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"--encoder {p}: unreadable checkpoint config ({e})") from None


def check_setup_files(config: SetupConfig, *, need_landmarker: bool = True) -> pathlib.Path | None:
    """Checks the files a ``SetupConfig`` names: the FLAME model (exists, not empty), its landmark
    embedding (loads), the encoder checkpoint (an orbax folder with its config) and, when
    ``need_landmarker``, the MediaPipe model. Returns the landmarker model's path (None when not needed).

    Raises:
      FileNotFoundError, InputError: naming the flag and the file.
      detect.ModelNotFoundError: no MediaPipe model (the message says how to get one).
    """
    if config.flame_model is not None:
        _existing_file(config.flame_model, "--flame_model")
        if config.landmark_embedding is None:
            raise InputError(f"--flame_model {config.flame_model} needs its --landmark_embedding")
    if config.landmark_embedding is not None:
        if config.flame_model is None:
            raise InputError("--landmark_embedding belongs to a FLAME model: pass --flame_model too")
        emb = _existing_file(config.landmark_embedding, "--landmark_embedding")
        try:
            flame_jax.load_landmark_embedding(emb)
        except ValueError as e:  # UnsafeModelFileError too
            raise InputError(f"--landmark_embedding {emb}: {e}") from None
    if config.encoder is not None and str(config.encoder) != RANDOM_ENCODER:
        _check_encoder(config.encoder)
    return detect_lib.resolve_model_path(config.face_landmarker) if need_landmarker else None


def check_output_dir(out_dir) -> pathlib.Path:
    """Checks that ``out_dir`` is a writable folder or can be created (without creating it).

    Raises:
      InputError: it is a file, lies under a file, or the folder it would be made in is not writable.
    """
    p = pathlib.Path(out_dir).expanduser().absolute()
    target = p
    while not target.exists():
        target = target.parent
    if not target.is_dir():
        how = "is a file" if target == p else f"cannot be created: {target} is a file"
        raise InputError(f"output folder {p} {how}")
    if not os.access(target, os.W_OK | os.X_OK):
        raise InputError(f"output folder {p}: {target} is not writable")
    return p


def check_videos(videos, view_names=None, view_boxes=None, prepare: PrepareConfig = PrepareConfig()) -> Source | None:
    """Probes a clip's input: video files open (headers only), folders and images exist; view names
    and boxes fit. Returns the opened ``Source`` of video files (None for folders, images, clips).

    Raises:
      video.VideoError: a missing, unreadable or truncated file (naming it).
      ValueError: inconsistent views, names or boxes.
    """
    if isinstance(videos, video_lib.VideoClip):
        return None
    paths = [str(videos)] if isinstance(videos, (str, os.PathLike)) else [str(v) for v in videos]
    paths = [p.strip() for p in paths if p.strip()]
    if len(paths) == 1 and pathlib.Path(paths[0]).is_dir():
        return None
    if paths and all(is_image(p) for p in paths):
        for p in paths:
            if not pathlib.Path(p).is_file():
                raise video_lib.VideoError(pathlib.Path(p), "no such file")
        return None
    return open_source(paths, view_names, view_boxes, prepare.frames, prepare.strict, prepare.fps)


def check_inputs(
    videos,
    out_dir,
    setup: SetupConfig | None,
    prepare: PrepareConfig = PrepareConfig(),
    *,
    view_names: Sequence[str] | None = None,
    view_boxes=None,
    landmarks_file=None,
) -> Source | None:
    """Every check ``annotate`` runs first: the setup's files (``setup`` None: already built), the
    output folder, the precomputed landmarks file, then the videos (a probe). Returns
    ``check_videos``'s source."""
    if setup is not None:
        check_setup_files(setup, need_landmarker=landmarks_file is None)
    check_output_dir(out_dir)
    if landmarks_file is not None:
        _existing_file(landmarks_file, "landmarks file")
    return check_videos(videos, view_names, view_boxes, prepare)
