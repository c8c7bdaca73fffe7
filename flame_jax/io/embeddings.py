"""Landmark embeddings: DECA ``.npy``, RingNet/smplx ``.pkl`` (+ ``.npy``), MediaPipe ``.npz`` and this
project's ``.npz``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flame_jax.io.convert import _dense
from flame_jax.io.errors import _Source, _fail, _named_errors
from flame_jax.io.files import (
    _atomic_savez,
    _check_format,
    _check_path,
    _read_npy,
    _read_npz,
    _sniff,
    _text,
    _unpickle_file,
    _unwrap_container,
)
from flame_jax.landmarks import NUM_CONTOUR, NUM_CONTOUR_ROWS, LandmarkEmbedding
from flame_jax.model import FlameModel


#: Format marker stored in (and required of) this project's landmark ``.npz`` files.
EMBEDDING_FORMAT = "flame_jax-landmarks-v1"

_DECA_KEYS = ("static_lmk_faces_idx", "static_lmk_bary_coords", "dynamic_lmk_faces_idx", "dynamic_lmk_bary_coords")
_RINGNET_STATIC = "flame_static_embedding.pkl"
_RINGNET_DYNAMIC = "flame_dynamic_embedding.npy"

# =============================================================================
# Landmark embeddings
# =============================================================================


def _array_key(d: dict, key: str, source: str) -> np.ndarray:
    if key not in d:
        raise _fail(source, f"missing key '{key}'")
    return _dense(d[key], source, key)


def _ringnet_dynamic(path: Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unwrap_container(_read_npy(path, source), source)
    if not isinstance(d, dict):
        raise _fail(source, "expected a dict with 'lmk_face_idx' and 'lmk_b_coords'")
    face = _array_key(d, "lmk_face_idx", source)
    bary = _array_key(d, "lmk_b_coords", source)
    if face.shape != (NUM_CONTOUR_ROWS, NUM_CONTOUR) or bary.shape != (NUM_CONTOUR_ROWS, NUM_CONTOUR, 3):
        raise _fail(
            source,
            f"dynamic contour table must be ({NUM_CONTOUR_ROWS}, {NUM_CONTOUR}) and "
            f"({NUM_CONTOUR_ROWS}, {NUM_CONTOUR}, 3), got {face.shape} and {bary.shape}",
        )
    return face, bary


def _ringnet_static(path: Path, source: str) -> tuple[np.ndarray, np.ndarray]:
    d = _unwrap_container(
        _unpickle_file(path, source) if _sniff(path) == "pickle" else _read_npy(path, source), source
    )
    if not isinstance(d, dict):
        raise _fail(source, "expected a dict with 'lmk_face_idx' and 'lmk_b_coords'")
    return _array_key(d, "lmk_face_idx", source), _array_key(d, "lmk_b_coords", source)


def _embedding_from_dict(d, path: Path, source: _Source) -> LandmarkEmbedding:
    if not isinstance(d, dict):
        raise _fail(source, f"expected a dict of landmark arrays, got {type(d).__name__}")
    if any(k in d for k in _DECA_KEYS):  # DECA landmark_embedding.npy
        a = {k: _array_key(d, k, source) for k in _DECA_KEYS}
        return LandmarkEmbedding.from_arrays(
            face_idx=a["static_lmk_faces_idx"],
            bary_coords=a["static_lmk_bary_coords"],
            dynamic_face_idx=a["dynamic_lmk_faces_idx"],
            dynamic_bary_coords=a["dynamic_lmk_bary_coords"],
            kind="ibug68",
            source=source,
        )
    if "lmk_face_idx" in d or "lmk_b_coords" in d:
        face = _array_key(d, "lmk_face_idx", source)
        bary = _array_key(d, "lmk_b_coords", source)
        if "landmark_indices" in d:  # MediaPipe
            return LandmarkEmbedding.from_arrays(
                face_idx=face,
                bary_coords=bary,
                landmark_indices=_array_key(d, "landmark_indices", source),
                kind="mediapipe",
                source=source,
            )
        if face.ndim == 2:  # RingNet flame_dynamic_embedding.npy: needs the static file beside it
            static = path.with_name(_RINGNET_STATIC)
            if not static.exists():
                raise _fail(
                    source, f"a dynamic contour table alone is not an embedding; {static.name} not found beside it"
                )
            face_s, bary_s = _ringnet_static(static, source.beside(static))
            dyn_f, dyn_b = _ringnet_dynamic(path, source)
            return LandmarkEmbedding.from_arrays(
                face_idx=face_s, bary_coords=bary_s, dynamic_face_idx=dyn_f, dynamic_bary_coords=dyn_b,
                kind="ibug68", source=f"{static} + {path.name}",
            )
        dynamic = path.with_name(_RINGNET_DYNAMIC)
        if face.reshape(-1).shape[0] == 51 and dynamic.exists() and dynamic != path:
            dyn_f, dyn_b = _ringnet_dynamic(dynamic, source.beside(dynamic))
            return LandmarkEmbedding.from_arrays(
                face_idx=face, bary_coords=bary, dynamic_face_idx=dyn_f, dynamic_bary_coords=dyn_b,
                kind="ibug68", source=source,
            )
        return LandmarkEmbedding.from_arrays(face_idx=face, bary_coords=bary, kind="static", source=source)
    raise _fail(source, f"not a landmark embedding (keys {sorted(map(str, d))})")


def _embedding_from_own_npz(z: dict, source: str) -> LandmarkEmbedding:
    _check_format(z, EMBEDDING_FORMAT, source)
    for k in ("face_idx", "bary_coords", "kind"):
        if k not in z:
            raise _fail(source, f"missing key '{k}'")
    try:
        kind = _text(z["kind"])
    except ValueError:
        raise _fail(source, "'kind' is not a string") from None
    return LandmarkEmbedding.from_arrays(
        face_idx=z["face_idx"],
        bary_coords=z["bary_coords"],
        dynamic_face_idx=z.get("dynamic_face_idx"),
        dynamic_bary_coords=z.get("dynamic_bary_coords"),
        landmark_indices=z.get("landmark_indices"),
        kind=kind,
        source=source,
    )


def load_landmark_embedding(
    path, *, model: FlameModel | None = None, max_bytes: int | None = None
) -> LandmarkEmbedding:
    """Loads a landmark embedding.

    Recognized (from the content): DECA ``landmark_embedding.npy`` → "ibug68";
    RingNet ``flame_static_embedding.pkl`` → "ibug68" when
    ``flame_dynamic_embedding.npy`` lies beside it, else a 51-point "static"
    embedding; MediaPipe ``mediapipe_landmark_embedding.npz`` → "mediapipe"; this
    project's ``.npz`` (``save_landmark_embedding``) → its stored kind.

    Args:
      path: the file.
      model: when given, every face index is checked against ``model.num_faces``.
      max_bytes: memory budget of the load (this file and a RingNet file beside it), as in
        :func:`flame_jax.io.load_model`.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      UnsafeModelFileError: a pickle references a non-allow-listed global (nothing runs).
      FileTooLargeError: (a ValueError) naming the file, when it asks for more than ``max_bytes``.
      ValueError: naming the file, for malformed content or out-of-range face indices.
    """
    p = _check_path(path)
    source = _Source(p, max_bytes)
    kind = _sniff(p)
    with _named_errors(source, "landmark arrays"):
        if kind == "npz":
            z = _read_npz(p, source)
            emb = _embedding_from_own_npz(z, source) if "format" in z else _embedding_from_dict(z, p, source)
        elif kind == "npy":
            emb = _embedding_from_dict(_unwrap_container(_read_npy(p, source), source), p, source)
        else:
            emb = _embedding_from_dict(_unwrap_container(_unpickle_file(p, source), source), p, source)
    if model is not None:
        emb.check_faces(model.num_faces, source=source)
    return emb


def save_landmark_embedding(embedding: LandmarkEmbedding, path) -> None:
    """Writes ``embedding`` as this project's ``.npz`` (exactly the given path)."""
    arrays = {
        "format": np.array(EMBEDDING_FORMAT),
        "kind": np.array(str(embedding.kind)),
        "face_idx": np.asarray(embedding.face_idx),
        "bary_coords": np.asarray(embedding.bary_coords),
    }
    if embedding.dynamic_face_idx is not None:
        arrays["dynamic_face_idx"] = np.asarray(embedding.dynamic_face_idx)
        arrays["dynamic_bary_coords"] = np.asarray(embedding.dynamic_bary_coords)
    if embedding.landmark_indices is not None:
        arrays["landmark_indices"] = np.asarray(embedding.landmark_indices)
    _atomic_savez(path, arrays)
