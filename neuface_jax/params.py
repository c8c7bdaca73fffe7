"""Reading ``params.npz`` (what ``annotate``, ``annotate-dataset`` and ``demo`` write) back into meshes.

``load_params(path)`` returns a :class:`ParamsRecord`: the file's rows (frames × views, flattened
frame-major) put back on a ``[T, W, ...]`` grid, the view names, the source frame numbers, the
validity mask and what the file says about the face model (:class:`ModelInfo`). ``vertices(record,
model=None, frames=...)`` evaluates FLAME (``flame_jax.forward``) on it, in the model's frame, in
the fitted weak-perspective camera's frame, or in original image pixels.

The model check: a file written by ``annotate`` records the model file's path, SHA-256 and
component counts (``model_arrays``). A model given to ``vertices`` must be that file (same hash),
or, for a file that records no hash, have at least as many components as were fitted. Loading never
executes code (``np.load(..., allow_pickle=False)``). The schema: ``docs/params_format.md``.

This module lives at the package top (not in ``annotation``) because its readers only need
``flame_jax``: loading a result must not import the fitting stack.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib
import zipfile
from typing import Iterable, Mapping

import numpy as np

import flame_jax
from flame_jax import mesh_io
from neuface_jax.common.atomic import atomic_write

__all__ = [
    "FORMATS",
    "ModelInfo",
    "ParamsError",
    "ParamsRecord",
    "SPACES",
    "export_meshes",
    "file_sha256",
    "load_params",
    "model_arrays",
    "model_info",
    "parse_frames",
    "resolve_model",
    "vertices",
]

logger = logging.getLogger(__name__)

#: Coordinate frames ``vertices`` evaluates in: FLAME's model frame (metres, head pose applied);
#: the weak-perspective camera's normalized crop frame (x right, y up, depth scaled alike); original
#: image pixels (x right, y down, depth in pixels, larger = farther).
SPACES = ("model", "camera", "image")
#: Keys every params file has (the NeuFace layout's parameters and the row bookkeeping).
#: Mesh file formats ``export_meshes`` writes.
FORMATS = ("obj", "ply", "npz")
REQUIRED_KEYS = ("cam", "pose", "expr", "shapes", "frame_index", "view_index", "view_names")
#: ``ModelInfo.kind`` of the procedural demo head (its name starts with ``DEMO_NAME_PREFIX``).
DEMO_KIND, FLAME_KIND, UNKNOWN_KIND = "demo", "flame", "unknown"
DEMO_NAME_PREFIX = "demo head"
_HASH_BLOCK = 1 << 20
#: The reference crop side (``media.crops.CROP_SIZE``), for files that do not record theirs.
_CROP_SIZE = 224


class ParamsError(ValueError):
    """A params file that cannot be read or does not match the model it is evaluated with (names the file)."""


def file_sha256(path) -> str:
    """Hex SHA-256 of a file's bytes (read in blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The face model a params file was fitted with.

    Attributes:
      name: the model's provenance string (``FlameModel.name``).
      kind: ``"demo"`` (the procedural demo head: ``vertices`` rebuilds it), ``"flame"`` (a model
        file) or ``"unknown"`` (a file that records neither: written before the model keys).
      path: absolute path of the model file as fitted ("" when the model was given as an object).
      sha256: the file's SHA-256 ("" when unknown).
      n_shape, n_expr, n_vertices, n_faces: the model's component and mesh counts (0 when unknown).
    """

    name: str = ""
    kind: str = UNKNOWN_KIND
    path: str = ""
    sha256: str = ""
    n_shape: int = 0
    n_expr: int = 0
    n_vertices: int = 0
    n_faces: int = 0


def model_info(model, path=None) -> ModelInfo:
    """The ``ModelInfo`` of a loaded ``FlameModel`` (``path``: the file it was loaded from, hashed)."""
    name = str(getattr(model, "name", "") or "")
    if path is not None:
        p = pathlib.Path(path).expanduser().resolve()
        kind, path_s, sha = FLAME_KIND, str(p), file_sha256(p)
    else:
        kind, path_s, sha = (DEMO_KIND if name.startswith(DEMO_NAME_PREFIX) else FLAME_KIND), "", ""
    return ModelInfo(
        name=name, kind=kind, path=path_s, sha256=sha, n_shape=int(model.num_shape),
        n_expr=int(model.num_expression), n_vertices=int(model.num_vertices), n_faces=int(model.num_faces),
    )


def model_arrays(info: ModelInfo) -> dict[str, np.ndarray]:
    """The params-file keys recording ``info`` (``model`` itself, the name, is written by the writer)."""
    return {
        "model_kind": np.asarray(info.kind),
        "model_path": np.asarray(info.path),
        "model_sha256": np.asarray(info.sha256),
        "n_shape": np.int32(info.n_shape),
        "n_expr": np.int32(info.n_expr),
        "n_vertices": np.int32(info.n_vertices),
        "n_faces": np.int32(info.n_faces),
    }


@dataclasses.dataclass(frozen=True, eq=False)
class ParamsRecord:
    """A params file on a ``[T, W, ...]`` grid (T frames, W views). Arrays are read-only NumPy.

    Attributes:
      path: the file.
      format, method: the writer's format tag and fitting method (``"neuface"``, ``"direct"``).
      model: the face model it was fitted with (``ModelInfo``).
      view_names: W names.
      frame_indices: ``int64 [T]`` source frame number of each row t.
      valid: ``bool [T, W]`` the face was seen (landmark targets existed) in that frame and view.
      shape: ``[N]`` identity coefficients (one identity per clip).
      expression: ``[T, W, E]`` expression coefficients.
      pose: ``[T, W, 15]`` FLAME pose (global, neck, jaw, left eye, right eye; axis-angle).
      cam: ``[T, W, 3]`` weak-perspective camera (s, tx, ty).
      crop_transforms: ``[T, W, 2, 3]`` original pixels → crop pixels (None if not recorded).
      crop_size: side of the crop the camera's normalized frame spans.
      landmarks2d, predicted_landmarks2d: ``[T, W, L, 2]`` detected / model landmarks, normalized
        crop coordinates (None if not recorded).
    """

    path: pathlib.Path
    format: str
    method: str
    model: ModelInfo
    view_names: tuple[str, ...]
    frame_indices: np.ndarray
    valid: np.ndarray
    shape: np.ndarray
    expression: np.ndarray
    pose: np.ndarray
    cam: np.ndarray
    crop_transforms: np.ndarray | None
    crop_size: int
    landmarks2d: np.ndarray | None
    predicted_landmarks2d: np.ndarray | None

    @property
    def num_frames(self) -> int:
        return int(self.frame_indices.shape[0])

    @property
    def num_views(self) -> int:
        return len(self.view_names)


def _scalar(z: Mapping[str, np.ndarray], key: str, default):
    return z[key].item() if key in z else default


def _stored_model(z: Mapping[str, np.ndarray]) -> ModelInfo:
    name = str(_scalar(z, "model", ""))
    kind = str(_scalar(z, "model_kind", ""))
    if not kind:
        kind = DEMO_KIND if name.startswith(DEMO_NAME_PREFIX) else UNKNOWN_KIND
    return ModelInfo(
        name=name, kind=kind, path=str(_scalar(z, "model_path", "")), sha256=str(_scalar(z, "model_sha256", "")),
        n_shape=int(_scalar(z, "n_shape", 0)), n_expr=int(_scalar(z, "n_expr", 0)),
        n_vertices=int(_scalar(z, "n_vertices", 0)), n_faces=int(_scalar(z, "n_faces", 0)),
    )


def _grid(rows: np.ndarray, fi: np.ndarray, vi: np.ndarray, t: int, w: int) -> np.ndarray:
    out = np.zeros((t, w) + rows.shape[1:], rows.dtype)
    out[fi, vi] = rows
    out.setflags(write=False)
    return out


def _full_pose(z: Mapping[str, np.ndarray]) -> np.ndarray:
    """``full_pose`` rows, or the NeuFace layout's ``pose`` (global, jaw) put into FLAME's 15 values."""
    if "full_pose" in z:
        return np.asarray(z["full_pose"], np.float32)
    pose6 = np.asarray(z["pose"], np.float32)
    full = np.zeros((pose6.shape[0], 15), np.float32)
    full[:, 0:3], full[:, 6:9] = pose6[:, 0:3], pose6[:, 3:6]
    return full


def _read(path: pathlib.Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such params file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ParamsError(f"{path}: not a readable params.npz ({type(e).__name__}: {e})") from None


def load_params(path) -> ParamsRecord:
    """Reads a ``params.npz`` into a :class:`ParamsRecord` (no code is executed: no pickles).

    Raises:
      FileNotFoundError: no such file.
      ParamsError: not an npz, a required key missing, or inconsistent row bookkeeping (naming the
        file and the key).
    """
    path = pathlib.Path(path)
    z = _read(path)
    missing = [k for k in REQUIRED_KEYS if k not in z]
    if missing:
        raise ParamsError(f"{path}: missing key(s) {missing} (a params.npz has {list(REQUIRED_KEYS)})")
    fi, vi = np.asarray(z["frame_index"], np.int64), np.asarray(z["view_index"], np.int64)
    names = tuple(str(n) for n in np.atleast_1d(z["view_names"]))
    s, w = int(fi.shape[0]), len(names)
    t = int(fi.max()) + 1 if s else 0
    for key in ("cam", "pose", "expr", "shapes", "view_index"):
        if z[key].shape[0] != s:
            raise ParamsError(f"{path}: key {key!r} has {z[key].shape[0]} rows, frame_index has {s}")
    cells = np.unique(fi * max(w, 1) + vi).size if s else 0
    if s != t * w or (s and (fi.min() < 0 or vi.min() < 0 or vi.max() >= w)) or cells != s:
        raise ParamsError(f"{path}: {s} rows do not make {t} frames x {w} views (frame_index / view_index)")
    frame_indices = np.asarray(z.get("frame_indices", np.arange(t)), np.int64)
    if frame_indices.shape != (t,):
        raise ParamsError(f"{path}: frame_indices has shape {frame_indices.shape}, expected ({t},)")
    grid = lambda key, dtype=None: (  # noqa: E731
        _grid(np.asarray(z[key], dtype), fi, vi, t, w) if key in z else None
    )
    valid = grid("valid", bool)
    if valid is None:
        valid = np.ones((t, w), bool)
    shape = np.array(z["shapes"][0] if s else np.zeros((0,)), np.float32)
    for a in (frame_indices, shape):
        a.setflags(write=False)
    return ParamsRecord(
        path=path, format=str(_scalar(z, "format", "")), method=str(_scalar(z, "method", "")),
        model=_stored_model(z), view_names=names, frame_indices=frame_indices, valid=valid,
        shape=shape,
        expression=grid("expr", np.float32), pose=_grid(_full_pose(z), fi, vi, t, w), cam=grid("cam", np.float32),
        crop_transforms=grid("crop_transforms", np.float32), crop_size=int(_scalar(z, "crop_size", _CROP_SIZE)),
        landmarks2d=grid("landmarks2d", np.float32), predicted_landmarks2d=grid("predicted_landmarks2d", np.float32),
    )


# ----------------------------------------------------------------------------------------- the model
def _check_counts(record: ParamsRecord, model, what: str) -> None:
    n_s, n_e = int(record.shape.shape[-1]), int(record.expression.shape[-1])
    if n_s > model.num_shape or n_e > model.num_expression:
        raise ParamsError(
            f"{record.path}: fitted {n_s} shape / {n_e} expression components but {what} has "
            f"{model.num_shape} / {model.num_expression}"
        )
    rec = record.model
    if rec.n_vertices and rec.n_vertices != model.num_vertices:
        raise ParamsError(f"{record.path}: fitted on a {rec.n_vertices}-vertex mesh but {what} has "
                          f"{model.num_vertices} vertices")


def resolve_model(record: ParamsRecord, model=None, *, verify: bool = True):
    """The ``FlameModel`` to evaluate ``record`` with.

    ``model``: a model file (checked against the recorded SHA-256), a loaded ``FlameModel``
    (checked by component counts), or None: the demo head for a demo-head file, otherwise the
    recorded model file when it still exists (hash checked). ``verify=False`` skips the hash
    check (component counts are always checked).

    Raises:
      ParamsError: no model given for a FLAME file whose model file is gone, a hash mismatch, a
        FLAME file without a recorded hash (``verify=True``), or too few components.
    """
    rec = record.model
    if model is None:
        if rec.kind == DEMO_KIND:
            model = flame_jax.demo_model()
            _check_counts(record, model, "the demo head")
            return model
        if not rec.path or not pathlib.Path(rec.path).is_file():
            where = f" ({rec.path}, not found here)" if rec.path else ""
            raise ParamsError(f"{record.path}: fitted with the FLAME model {rec.name!r}{where}; pass that model file")
        model = rec.path
    if isinstance(model, flame_jax.FlameModel):
        _check_counts(record, model, f"the given model {model.name!r}")
        return model
    model_path = pathlib.Path(model).expanduser()
    if verify:
        if not rec.sha256:
            raise ParamsError(
                f"{record.path}: records no model_sha256 (written before model hashes, or with a model object), "
                f"so {model_path} cannot be checked; pass verify=False (--noverify_model) to use it anyway"
            )
        digest = file_sha256(model_path)
        if digest != rec.sha256:
            raise ParamsError(
                f"{record.path}: fitted with the model file {rec.path or rec.name!r} (sha256 {rec.sha256[:12]}...) "
                f"but {model_path} has sha256 {digest[:12]}...: not the same model"
            )
    loaded = flame_jax.load_model(model_path)
    _check_counts(record, loaded, str(model_path))
    return loaded


# ------------------------------------------------------------------------------------------ meshes
def parse_frames(spec: str | None, num_frames: int) -> np.ndarray:
    """Row indices from ``"0:10,15,20:"`` (half-open slices and single rows; negative from the end).

    None or "" = every row. Raises ValueError on a malformed item or a row out of range.
    """
    if not spec:
        return np.arange(num_frames)
    rows: list[int] = []
    for item in str(spec).split(","):
        item = item.strip()
        try:
            if ":" in item:
                parts = [int(p) if p.strip() else None for p in item.split(":")]
                if len(parts) > 3:
                    raise ValueError
                rows.extend(range(num_frames)[slice(*parts)])
            else:
                k = int(item)
                if not -num_frames <= k < num_frames:
                    raise ValueError(f"frame {k} out of range: the file has {num_frames} frames")
                rows.append(k % num_frames)
        except ValueError as e:
            why = e or "expected N, A:B or A:B:STEP"
            raise ValueError(f"bad frame selection {item!r} in {spec!r}: {why}") from None
    return np.asarray(rows, np.int64)


def _camera(v: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """Weak-perspective camera (s, tx, ty) on ``[..., V, 3]``: s·(x + tx), s·(y + ty), s·z."""
    s, t = cam[..., None, 0:1], np.concatenate([cam[..., 1:3], np.zeros_like(cam[..., :1])], -1)[..., None, :]
    return s * (v + t)


def _image(cam_v: np.ndarray, crop_transforms: np.ndarray, crop_size: int) -> np.ndarray:
    """Camera-frame ``[T, W, V, 3]`` → original image pixels (x right, y down, depth larger = farther)."""
    crop = np.stack([(cam_v[..., 0] + 1.0) * crop_size / 2.0, (1.0 - cam_v[..., 1]) * crop_size / 2.0], -1)
    lin, off = crop_transforms[..., :2], crop_transforms[..., 2]
    inv = np.linalg.inv(lin)  # [T, W, 2, 2]
    px = np.einsum("twij,twvj->twvi", inv, crop - off[..., None, :])
    pix_per_unit = np.sqrt(np.abs(np.linalg.det(inv)))[..., None] * crop_size / 2.0
    return np.concatenate([px, (-cam_v[..., 2] * pix_per_unit)[..., None]], -1)


def vertices(
    record: ParamsRecord,
    model=None,
    *,
    frames: Iterable[int] | str | None = None,
    space: str = "model",
    verify: bool = True,
) -> np.ndarray:
    """Mesh vertices ``float32 [T', W, V, 3]`` of the selected rows (``frames``: row indices or a
    ``parse_frames`` string; None = all) in ``space`` (``SPACES``). ``model``, ``verify``: as
    ``resolve_model``. The mesh's faces: ``resolve_model(record, model).faces``.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    rows = frames if frames is None or isinstance(frames, str) else ",".join(str(int(f)) for f in frames)
    rows = parse_frames(rows, record.num_frames)
    m = resolve_model(record, model, verify=verify)
    out = flame_jax.forward(m, shape=record.shape, expression=record.expression[rows], pose=record.pose[rows])
    v = np.asarray(out.vertices, np.float32)
    if space == "model":
        return v
    cam_v = _camera(v, record.cam[rows])
    if space == "camera":
        return cam_v.astype(np.float32)
    if record.crop_transforms is None:
        raise ParamsError(f"{record.path}: no crop_transforms recorded; image space needs them")
    return _image(cam_v, record.crop_transforms[rows].astype(np.float64), record.crop_size).astype(np.float32)


def _save_frames(folder: pathlib.Path, fmt: str, verts: np.ndarray, faces: np.ndarray, rows) -> list[pathlib.Path]:
    save = mesh_io.save_obj if fmt == "obj" else mesh_io.save_ply
    return [save(folder / f"frame_{int(r):05d}.{fmt}", v, faces) for r, v in zip(rows, verts)]


def _save_npz(path: pathlib.Path, verts: np.ndarray, faces: np.ndarray, rows: np.ndarray, record: ParamsRecord,
              view: int, space: str) -> pathlib.Path:
    arrays = {
        "vertices": verts.astype(np.float32), "faces": faces.astype(np.int32), "frames": rows.astype(np.int64),
        "frame_indices": record.frame_indices[rows], "valid": record.valid[rows, view],
        "view_name": np.asarray(record.view_names[view]), "space": np.asarray(space),
        "params": np.asarray(str(record.path)),
    }
    atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return path


def export_meshes(
    record: ParamsRecord,
    out_dir,
    model=None,
    *,
    fmt: str = "ply",
    frames: str | Iterable[int] | None = None,
    space: str = "model",
    verify: bool = True,
    block: int = 64,
    progress=None,
) -> list[pathlib.Path]:
    """Writes the record's meshes under ``out_dir``, one set per view.

    ``obj`` / ``ply`` (binary): ``<out>/<view>/frame_<t>.<fmt>``, ``t`` the row of the file (its source
    frame number is ``record.frame_indices[t]``); ``npz``: ``<out>/<view>.npz`` with ``vertices``
    ``float32 [T', V, 3]``, ``faces`` ``int32 [F, 3]`` once, ``frames`` (rows), ``frame_indices``
    (source frames), ``valid``, ``view_name``, ``space``. Meshes are evaluated ``block`` rows at a
    time (OBJ/PLY are written block by block); ``progress(done, total)`` counts rows.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    rows = frames if frames is None or isinstance(frames, str) else ",".join(str(int(f)) for f in frames)
    rows = parse_frames(rows, record.num_frames)
    m = resolve_model(record, model, verify=verify)
    faces = np.asarray(m.faces)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[pathlib.Path] = []
    kept: list[np.ndarray] = []  # npz: every block, written per view at the end
    for i in range(0, len(rows), block):
        sel = rows[i:i + block]
        verts = vertices(record, m, frames=sel, space=space)
        if fmt == "npz":
            kept.append(verts)
        else:
            for w, name in enumerate(record.view_names):
                written += _save_frames(out / name, fmt, verts[:, w], faces, sel)
        if progress is not None:
            progress(i + len(sel), len(rows))
    if fmt == "npz":
        verts = np.concatenate(kept, 0) if kept else np.zeros((0, record.num_views, m.num_vertices, 3), np.float32)
        written += [_save_npz(out / f"{name}.npz", verts[:, w], faces, rows, record, w, space)
                    for w, name in enumerate(record.view_names)]
    return written
