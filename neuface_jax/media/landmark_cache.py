"""The on-disk landmark cache: one npz of ``landmarker.FaceLandmarks`` per view of a clip.

A result is keyed by the source file's identity (absolute path, size, mtime), the view's box in it,
the selected frames, the landmarker options, the model file's SHA-256 and ``CACHE_VERSION``, so a
re-run with the same inputs skips detection and any change detects again. Files are written
atomically (``landmarker.FaceLandmarks.save``); a damaged file is ignored and recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib

from neuface_jax.media import landmarker as landmarker_lib
from neuface_jax.media.landmarker import FaceLandmarks, LandmarkerOptions

__all__ = ["CACHE_VERSION", "cache_file", "cache_key", "default_landmark_cache_dir", "load_cached"]

_log = logging.getLogger(__name__)

#: Version of the cached landmark files (part of the cache key). 2: files carry ``visible``.
CACHE_VERSION = 3


def _source_stat(path) -> dict:
    p = pathlib.Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def cache_key(source, *, box=None, frames, options: LandmarkerOptions, model_path) -> str:
    """Hex key of a detection result: source file identity, box, frame selection, options, model.

    ``frames`` is anything JSON-serialisable describing the selected frames (a ``FrameRange`` as a
    dict, or a list of frame indices).
    """
    model = pathlib.Path(model_path)
    payload = {
        "version": CACHE_VERSION,
        "source": _source_stat(source),
        "box": None if box is None else [int(v) for v in box],
        "frames": frames,
        "options": dataclasses.asdict(options),
        "model_sha256": _cached_sha256(model),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_SHA_MEMO: dict[tuple, str] = {}


def _cached_sha256(path: pathlib.Path) -> str:
    st = path.stat()
    k = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if k not in _SHA_MEMO:
        _SHA_MEMO[k] = landmarker_lib.sha256_file(path)
    return _SHA_MEMO[k]


def cache_file(cache_dir, source, view: str | None, key: str) -> pathlib.Path:
    """Path of a cached detection result: ``<cache_dir>/<source stem>[-<view>]-<key[:20]>.npz``.

    Args:
      cache_dir: the landmark cache folder (``default_landmark_cache_dir()`` by default elsewhere).
      source: the source video or image file (its stem names the file; unsafe characters → ``_``).
      view: the view's name when the source holds several views (a box of a composite), else None.
      key: ``cache_key(...)`` of the result.
    """
    stem = pathlib.Path(source).stem + (f"-{view}" if view else "")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80]
    return pathlib.Path(cache_dir) / f"{safe}-{key[:20]}.npz"


def default_landmark_cache_dir() -> pathlib.Path:
    return landmarker_lib.default_cache_dir() / "landmarks"


def load_cached(path) -> FaceLandmarks | None:
    """The cached ``FaceLandmarks`` at ``path``, or None when there is none.

    A damaged or unreadable file is not fatal: it is logged and None returned, so the caller detects
    again (and overwrites it). Files written before ``visible`` existed have a different cache key
    (``CACHE_VERSION``) and are not found; if read directly, their visibility is computed.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    try:
        return FaceLandmarks.load(path)
    except Exception as e:  # a damaged cache entry is recomputed, never fatal
        _log.warning("ignoring unreadable landmark cache %s: %s", path, e)
        return None
