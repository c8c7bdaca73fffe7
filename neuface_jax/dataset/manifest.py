"""Dataset manifests: the clips of a folder tree as a sorted JSON-lines file, one clip per line.

``neuface-jax manifest --root DIR --out FILE`` (``build_manifest``) walks ``DIR``, finds clips in the
layouts below, gives each a stable, filesystem-safe ``clip_id`` and writes them, sorted by id, to
``FILE`` atomically. ``neuface-jax annotate-dataset`` reads the file (``read_manifest``), shards it
(``select_shard``) and writes each clip's outputs to ``<out>/<clip_id>/``.

Layouts (``layout=``; ``auto`` detects them per sub-tree, in this order of precedence):

* ``synth`` — a folder holding a ``clip.json`` whose ``"format"`` is ``"neuface-clip-v1"`` (written
  by ``neuface-jax synth``, ``neuface_jax.synthetic.synth.write_clip``). One clip, kind ``"synth"``: inputs are
  the per-view videos in ``clip.json``'s view order, ``view_names`` from ``clip.json``, ``landmarks``
  the clip's ``landmarks.npz``, ``num_frames`` and ``fps`` from ``clip.json``, ``meta`` =
  ``{"synthetic": true, "seed": ..., "model": ..., "image_size": ...}``. Nothing below such a
  folder is listed again. A ``clip.json`` of another format is warned about and the folder is
  scanned as an ordinary one.
* ``mead`` — a folder named ``video`` with at least one sub-folder named as a MEAD view
  (``front, left_30, right_30, left_60, right_60, top, down``), holding
  ``<view>/<emotion>/<level_k>/<take>.<ext>``: MEAD's ``<subject>/video/...`` tree. Each
  ``(emotion, level, take)`` is one clip, kind ``"mead"``, with one input video per view present,
  in the canonical view order ``MEAD_VIEWS`` (any other view folder follows, sorted, with a
  warning). A take that lacks views other takes of the subject have is still one clip (warning;
  ``meta["missing_views"]`` lists them). ``clip_id`` = ``<subject>/<emotion>/<level_k>/<take>``
  where ``<subject>`` is the path of the folder holding ``video`` relative to the root (its name
  when that folder is the root or above it); ``meta`` = ``{"subject", "emotion", "level",
  "take"}``. Files at other depths under ``video`` are warned about and skipped.
* ``frames`` — a frame folder, read by ``neuface_jax.media.video.read_frame_folder``: a folder whose
  image files (``.jpg .jpeg .png .bmp .webp``) are MEAD-named ``img_%04d_<view>.jpg`` (views from
  the names) or numbered frames (one view, named after the folder, as the reader names it); or a
  folder with no images of its own whose image-holding sub-folders are all named as views (a MEAD
  view name, or ``cam``/``camera``/``view`` in any case followed by a non-letter or nothing:
  ``cam0``, ``cam_220700191``, ``Camera-2``, ``view1``), one sub-folder per view (not scanned further).
  Kind ``"frames"``, ``inputs`` = ``(folder,)``, ``view_names`` = the views the reader finds (MEAD
  views in canonical order, others sorted), ``num_frames`` = the number of frame numbers common to
  all views (what the reader reads), ``fps`` unknown (``None``). ``clip_id`` = the folder's path.
  A folder of image-holding sub-folders with other names is not one clip: each sub-folder is its
  own monocular clip. Images the reader would reject (no frame number, a duplicate number) are
  warned about and the folder is skipped.
* ``videos`` — every video file (``.mp4 .avi .mov .mkv .webm .m4v``) not claimed above is one
  clip, kind ``"video"``: VoxCeleb2's ``id*/<yt_id>/<nnnnn>.mp4``, CelebV-HQ's flat ``*.mp4`` or
  any tree. ``clip_id`` = the relative path without the extension; one view named ``"front"``
  (the name the synthetic monocular rig uses; the file stem would make per-view outputs of
  different clips differently named).

With an explicit layout only that layout is looked for (``videos`` then lists every video,
including a synth clip's or a MEAD take's per-view files). In every layout, names starting with
``.`` (hidden files, macOS ``._*`` files) are skipped, symbolic links are followed once (loops are
cut), and no file belongs to two clips. A clip folder that is the root itself takes the root's
name as its ``clip_id``.

Clip ids: ``/``-separated, no extension, derived from the path relative to the root. A safe id
(``is_safe_clip_id``) has non-empty parts of ``[A-Za-z0-9._+=-]`` only, none ``.`` or ``..``,
none longer than 255 characters, and no leading ``/``, so ``<out>/<clip_id>`` is always a folder
inside ``<out>``. ``sanitize_clip_id`` replaces other characters by ``_``, drops empty and ``.``
parts, replaces all-dot parts, shortens long parts and, whenever it changed anything, appends
``=<crc32 of the original, 8 hex digits>`` so different originals stay different. Two clips whose
ids still coincide (``a.mp4`` next to ``a.avi``, or a frame folder ``a`` next to ``a.mp4``) each get
``=<crc32 of their own relative path with extension>`` appended (with a warning). An id a dataset
run refuses (``neuface_jax.dataset.layout``) is renamed, with a warning: one whose first part is a
name of the run's own files or starts with ``_`` or ``.`` gets ``clip-`` in front (and the crc32
of its path appended), and a clip whose folder would hold another clip (``a`` beside ``a/b``) gets
the crc32 of its path appended. Ids are therefore a deterministic function of the file tree;
sorting is by ``clip_id`` (code-point order). ``read_manifest`` refuses reserved and nested ids.

JSON-lines format (``write_manifest``/``read_manifest``): one object per line, keys in this order::

    {"clip_id": "M003/angry/level_1/001", "kind": "mead",
     "inputs": ["M003/video/front/angry/level_1/001.mp4", "M003/video/left_30/angry/level_1/001.mp4"],
     "view_names": ["front", "left_30"], "landmarks": null, "num_frames": 118, "fps": 25.0,
     "meta": {"subject": "M003", "emotion": "angry", "level": "level_1", "take": "001"}}

(written on one line). Paths (``inputs``, ``landmarks``) lying under the manifest file's folder are
stored relative to it with ``/`` separators, others absolute, so a folder holding the dataset and
its manifest can be moved as a whole; ``read_manifest`` returns absolute paths. Required keys:
``clip_id``, ``kind``, ``inputs``; ``view_names`` may be left out for video kinds (``["front"]``
for one input, the file stems for several) but not for ``"frames"``; ``landmarks``,
``num_frames``, ``fps`` default to ``null`` and ``meta`` to ``{}``; unknown keys are ignored.
Blank lines are skipped. Input files are not checked for existence when reading (the runner
records a missing file as that clip's failure).

``num_frames`` is filled when cheap: synth clips (``clip.json``), frame folders (file counts),
and, with ``probe_frames=True`` (``--probe_frames``), videos — counted by a stream copy of the
video track with ffmpeg (no decoding), the minimum over a MEAD clip's views
(``meta["frames_per_view"]`` when they differ). A video ffmpeg cannot read keeps ``num_frames``
``null`` and gets ``meta["probe_error"]``.

Sharding: ``shard_of(clip_id, n) = zlib.crc32(clip_id.encode()) % n`` (stable across processes and
Python versions, unlike ``hash``); ``select_shard`` keeps one shard's entries, sorted by ``clip_id``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import re
import subprocess
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Sequence


from neuface_jax.media import video as video_lib
from neuface_jax.common.atomic import atomic_write_text
from neuface_jax.common.views import MEAD_VIEWS
from neuface_jax.dataset.layout import ancestors, check_clip_ids, reserved_reason

__all__ = [
    "ClipEntry",
    "KINDS",
    "LAYOUTS",
    "MEAD_VIEWS",
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "SYNTH_CLIP_FORMAT",
    "build_manifest",
    "write_manifest",
    "read_manifest",
    "sanitize_clip_id",
    "is_safe_clip_id",
    "shard_of",
    "select_shard",
    "probe_video_frames",
]

logger = logging.getLogger(__name__)

#: Entry kinds, one per layout.
KINDS = ("mead", "video", "frames", "synth")
#: ``build_manifest`` layouts.
LAYOUTS = ("auto", "mead", "videos", "frames", "synth")
#: File extensions listed as videos (lower case).
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
#: File extensions of frame images (those ``neuface_jax.media.video.read_frame_folder`` reads).
IMAGE_EXTENSIONS = tuple(video_lib.IMAGE_EXTENSIONS)
#: ``clip.json`` format of ``neuface_jax.synthetic.synth.write_clip``.
SYNTH_CLIP_FORMAT = "neuface-clip-v1"

_ID_PART = re.compile(r"[A-Za-z0-9._+=-]+")
_ID_BAD_CHAR = re.compile(r"[^A-Za-z0-9._+=-]")
_MAX_PART = 255
_SANITIZED_PART = 200  # a sanitized part plus "=xxxxxxxx" stays under _MAX_PART
_VIEW_DIR = re.compile(r"^(?:cam|camera|view)(?![a-z])", re.IGNORECASE)  # cam0, cam_2207, camera-1, view2
_MEAD_VIEW_SET = frozenset(MEAD_VIEWS)
_RE_FRAME = re.compile(r"frame=\s*(\d+)")


# --------------------------------------------------------------------------------------- ids
def _crc_hex(text: str) -> str:
    return f"{zlib.crc32(text.encode('utf-8', 'surrogateescape')) & 0xFFFFFFFF:08x}"


def is_safe_clip_id(clip_id: Any) -> bool:
    """Whether ``clip_id`` is a safe relative folder name (see the module docstring)."""
    if not isinstance(clip_id, str) or not clip_id:
        return False
    for part in clip_id.split("/"):
        if not _ID_PART.fullmatch(part) or part in (".", "..") or len(part) > _MAX_PART:
            return False
    return True


def sanitize_clip_id(raw: str) -> str:
    """A safe clip id for ``raw`` (a ``/``-separated relative path without extension).

    ``raw`` itself when it is already safe; otherwise characters outside ``[A-Za-z0-9._+=-]``
    become ``_``, empty and ``.`` parts are dropped, all-dot parts become underscores, parts are
    cut to 200 characters, and ``=<crc32(raw) as 8 hex digits>`` is appended. Deterministic.
    """
    raw = str(raw)
    if is_safe_clip_id(raw):
        return raw
    parts = []
    for part in raw.split("/"):
        if part in ("", "."):
            continue
        q = _ID_BAD_CHAR.sub("_", part)
        if set(q) == {"."}:
            q = "_" * len(q)
        parts.append(q[:_SANITIZED_PART])
    return "/".join(parts or ["_"]) + "=" + _crc_hex(raw)


# --------------------------------------------------------------------------------------- entries
def _opt_str(value, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{name} must be a non-empty path string or null, got {value!r}")
    return str(value)


@dataclasses.dataclass(frozen=True)
class ClipEntry:
    """One clip of a manifest.

    Attributes:
      clip_id: stable, safe relative id (``/``-separated, no extension); outputs go to
        ``<out>/<clip_id>/``.
      kind: ``"mead"`` | ``"video"`` | ``"frames"`` | ``"synth"``.
      inputs: absolute paths after ``read_manifest``/``build_manifest``: one video per view
        (mead, video, synth), or one frame folder (frames).
      view_names: one name per view, in input order (for frames: the views to read from the
        folder, ``read_frame_folder(..., view_names=...)``).
      landmarks: a precomputed landmark file (synth: ``landmarks.npz``), or ``None``.
      num_frames: frames per view when known (the shortest view's), else ``None``.
      fps: frames per second when known, else ``None``.
      meta: dataset-specific fields (JSON-serializable).
    """

    clip_id: str
    kind: str
    inputs: tuple[str, ...]
    view_names: tuple[str, ...]
    landmarks: str | None = None
    num_frames: int | None = None
    fps: float | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not is_safe_clip_id(self.clip_id):
            raise ValueError(
                f"unsafe clip_id {self.clip_id!r}: parts of [A-Za-z0-9._+=-], no '.'/'..'/empty parts, "
                "no leading '/'"
            )
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if isinstance(self.inputs, (str, os.PathLike)) or not isinstance(self.inputs, Sequence):
            raise ValueError(f"inputs must be a list of paths, got {self.inputs!r}")
        inputs = tuple(_opt_str(p, "inputs[]") or "" for p in self.inputs)
        if not inputs or not all(inputs):
            raise ValueError(f"inputs must be a non-empty list of non-empty paths, got {list(self.inputs)!r}")
        if isinstance(self.view_names, str) or not isinstance(self.view_names, Sequence):
            raise ValueError(f"view_names must be a list of strings, got {self.view_names!r}")
        views = tuple(self.view_names)
        if not views or not all(isinstance(v, str) and v for v in views):
            raise ValueError(f"view_names must be a non-empty list of non-empty strings, got {list(views)!r}")
        if len(set(views)) != len(views):
            raise ValueError(f"view_names repeat a name: {list(views)!r}")
        if self.kind == "frames":
            if len(inputs) != 1:
                raise ValueError(f"a frames entry has one input (the frame folder), got {len(inputs)}")
        elif len(views) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(views)} view_names")
        n = self.num_frames
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"num_frames must be a positive integer or null, got {n!r}")
        fps = self.fps
        if fps is not None:
            if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (0 < fps < float("inf")):
                raise ValueError(f"fps must be a positive number or null, got {fps!r}")
            fps = float(fps)
        if not isinstance(self.meta, dict):
            raise ValueError(f"meta must be an object, got {self.meta!r}")
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "view_names", views)
        object.__setattr__(self, "landmarks", _opt_str(self.landmarks, "landmarks"))
        object.__setattr__(self, "fps", fps)

    @property
    def num_views(self) -> int:
        return len(self.view_names)

    def output_dir(self, out_root) -> Path:
        """``<out_root>/<clip_id>`` — where the runner writes this clip's outputs."""
        return Path(out_root).joinpath(*self.clip_id.split("/"))

    def to_json(self, base_dir=None) -> dict:
        """The JSON object of this entry; paths under ``base_dir`` made relative to it."""
        rel = (lambda p: _relative_to(p, base_dir)) if base_dir is not None else (lambda p: p)
        return {
            "clip_id": self.clip_id,
            "kind": self.kind,
            "inputs": [rel(p) for p in self.inputs],
            "view_names": list(self.view_names),
            "landmarks": None if self.landmarks is None else rel(self.landmarks),
            "num_frames": self.num_frames,
            "fps": self.fps,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, obj: Any, base_dir=None) -> "ClipEntry":
        """An entry from a JSON object; relative paths are resolved against ``base_dir``.

        Raises:
          ValueError: a missing or invalid field (the message says which).
        """
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        for key in ("clip_id", "kind", "inputs"):
            if key not in obj:
                raise ValueError(f"missing {key}")
        if not isinstance(obj["clip_id"], str):
            raise ValueError(f"clip_id must be a string, got {obj['clip_id']!r}")
        inputs = obj["inputs"]
        if not isinstance(inputs, list) or not all(isinstance(p, str) and p for p in inputs):
            raise ValueError(f"inputs must be a list of non-empty path strings, got {inputs!r}")
        views = obj.get("view_names")
        if views is None:
            if obj["kind"] == "frames":
                raise ValueError("a frames entry needs view_names")
            views = ["front"] if len(inputs) == 1 else [PurePosixPath(p.replace(os.sep, "/")).stem for p in inputs]
        elif not isinstance(views, list):
            raise ValueError(f"view_names must be a list, got {views!r}")
        absolute = (lambda p: _absolute(p, base_dir)) if base_dir is not None else (lambda p: p)
        landmarks = obj.get("landmarks")
        if landmarks is not None and (not isinstance(landmarks, str) or not landmarks):
            raise ValueError(f"landmarks must be a non-empty path string or null, got {landmarks!r}")
        return cls(
            clip_id=obj["clip_id"],
            kind=obj["kind"],
            inputs=tuple(absolute(p) for p in inputs),
            view_names=tuple(views),
            landmarks=None if landmarks is None else absolute(landmarks),
            num_frames=obj.get("num_frames"),
            fps=obj.get("fps"),
            meta=obj.get("meta") if obj.get("meta") is not None else {},
        )


def _under(path: str, base: str) -> bool:
    try:
        return os.path.commonpath([path, base]) == base
    except ValueError:
        return False


def _relative_to(path: str, base_dir) -> str:
    """``path`` relative to ``base_dir`` ('/'-separated) when it lies under it, else absolute."""
    ap, base = os.path.abspath(path), os.path.abspath(base_dir)
    if _under(ap, base):
        return PurePosixPath(*Path(os.path.relpath(ap, base)).parts).as_posix() if ap != base else "."
    rp, rb = os.path.realpath(ap), os.path.realpath(base)
    if _under(rp, rb):
        return PurePosixPath(*Path(os.path.relpath(rp, rb)).parts).as_posix() if rp != rb else "."
    return ap


def _absolute(path: str, base_dir) -> str:
    p = Path(path)
    return os.path.normpath(str(p if p.is_absolute() else Path(os.path.abspath(base_dir)) / p))


# --------------------------------------------------------------------------------------- sharding
def shard_of(clip_id: str, num_shards: int) -> int:
    """The shard of a clip: ``zlib.crc32(clip_id.encode()) % num_shards`` (stable everywhere)."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
    return zlib.crc32(clip_id.encode("utf-8")) % num_shards


def select_shard(entries: Iterable[ClipEntry], shard_id: int, num_shards: int) -> list[ClipEntry]:
    """The entries of shard ``shard_id`` of ``num_shards``, sorted by ``clip_id``.

    The shards of ``0 .. num_shards - 1`` partition the entries; which shard a clip falls in
    depends only on its id (not on the entry order or the other entries).
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive integer, got {num_shards!r}")
    if isinstance(shard_id, bool) or not isinstance(shard_id, int) or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be an integer in [0, {num_shards}), got {shard_id!r}")
    return sorted((e for e in entries if shard_of(e.clip_id, num_shards) == shard_id), key=lambda e: e.clip_id)


# --------------------------------------------------------------------------------------- read/write
def _check_unique(entries: Sequence[ClipEntry]) -> None:
    seen = set()
    for e in entries:
        if e.clip_id in seen:
            raise ValueError(f"duplicate clip_id {e.clip_id!r}")
        seen.add(e.clip_id)


def write_manifest(entries: Iterable[ClipEntry], path) -> Path:
    """Writes entries, sorted by ``clip_id``, as JSON lines to ``path`` atomically.

    A temporary file in the same folder is written, flushed, fsync'ed and renamed over ``path``
    (``os.replace``), so readers see the old file or the new one, never a partial one. Paths under
    ``path``'s folder are stored relative to it. Parent folders are created.

    Raises:
      ValueError: two entries share a ``clip_id``.
    """
    path = Path(path)
    entries = sorted(entries, key=lambda e: e.clip_id)
    _check_unique(entries)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    base = os.path.abspath(folder)
    lines = [json.dumps(e.to_json(base)) + "\n" for e in entries]
    atomic_write_text(path, "".join(lines))
    return path


def read_manifest(path) -> list[ClipEntry]:
    """Reads a manifest written by ``write_manifest`` (or by hand); paths come back absolute.

    Entries are returned in file order. Input files are not checked for existence.

    Raises:
      FileNotFoundError: no such file.
      ValueError: ``<path>: <what is wrong>`` — a folder or an unreadable file; or
        ``<path>:<line>: <what is wrong>`` — text that is not UTF-8, bad JSON, a missing or invalid
        field, an unsafe, reserved, nested or duplicate ``clip_id`` (``layout.check_clip_ids``;
        naming the line of its first use).
    """
    path = Path(path)
    base = os.path.abspath(path.parent if str(path.parent) else ".")
    entries: list[ClipEntry] = []
    first_line: dict[str, int] = {}
    for lineno, line in _manifest_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: bad JSON ({e.msg} at column {e.colno})") from None
        try:
            entry = ClipEntry.from_json(obj, base_dir=base)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}:{lineno}: {e}") from None
        if entry.clip_id in first_line:
            raise ValueError(
                f"{path}:{lineno}: duplicate clip_id {entry.clip_id!r} (first on line {first_line[entry.clip_id]})"
            )
        first_line[entry.clip_id] = lineno
        entries.append(entry)
    check_clip_ids((cid, f"{path}:{n}") for cid, n in first_line.items())
    return entries


def _manifest_lines(path: Path) -> Iterable[tuple[int, str]]:
    """``(line number, text)`` of a manifest file; errors name the file (and the line)."""
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a manifest file (neuface-jax manifest writes one)")
    try:
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    yield lineno, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                     f"{e.start + 1}); a manifest is JSON lines in UTF-8") from None
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(f"{path}: cannot read the manifest: {e.strerror or e}") from None


# --------------------------------------------------------------------------------------- probing
def probe_video_frames(path, timeout_s: float = 300.0) -> tuple[int, float | None]:
    """``(frame count, fps or None)`` of a video's first video stream, without decoding.

    ffmpeg copies the video packets to a null muxer and reports how many it passed; for the
    usual one-packet-per-frame containers (mp4, mkv, avi, mov, webm) that is the frame count a
    decode yields.

    Raises:
      neuface_jax.media.video.VideoError: missing, empty or unreadable file, or no video stream.
    """
    p = video_lib._check_file(path)
    cmd = [video_lib.ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(p), "-map", "0:v:0", "-c", "copy",
           "-f", "null", "-"]  # fmt: skip
    proc = video_lib._spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise video_lib.VideoError(p, f"ffmpeg took more than {timeout_s:.0f}s to count frames") from None
    text = err.decode("utf-8", "replace").replace("\r", "\n")
    info = video_lib._parse_header(p, text)
    if proc.returncode != 0:
        raise video_lib.VideoError(p, f"ffmpeg failed counting frames ({video_lib._last_lines(text)})")
    counts = _RE_FRAME.findall(text)
    if not counts or int(counts[-1]) < 1:
        raise video_lib.VideoError(p, f"no video frames ({video_lib._last_lines(text)})")
    return int(counts[-1]), (info.fps if info.fps > 0 else None)


# --------------------------------------------------------------------------------------- scanning
@dataclasses.dataclass
class _Found:
    raw_id: str  # '/'-joined relative path (no extension) before sanitizing
    source: str  # relative path (with extension) that tells colliding clips apart
    kind: str
    inputs: list[str]
    view_names: list[str]
    landmarks: str | None = None
    num_frames: int | None = None
    fps: float | None = None
    meta: dict = dataclasses.field(default_factory=dict)


def _order_views(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [v for v in MEAD_VIEWS if v in names] + sorted(names - _MEAD_VIEW_SET)


def _is_video(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _is_view_dir(name: str) -> bool:
    return name in _MEAD_VIEW_SET or bool(_VIEW_DIR.match(name))


def _listdir(folder: str) -> tuple[list[str], list[str]]:
    """(files, sub-folders) of a folder, sorted, without hidden names."""
    files, dirs = [], []
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    if e.is_dir():
                        dirs.append(e.name)
                    elif e.is_file():
                        files.append(e.name)
                except OSError:
                    continue
    except OSError as e:
        logger.warning("manifest: cannot list %s (%s); skipped", folder, e)
    return sorted(files), sorted(dirs)


class _Scanner:
    def __init__(self, root: str, layout: str):
        self.root = root
        self.root_name = os.path.basename(root.rstrip(os.sep)) or "_"
        self.layout = layout
        self.found: list[_Found] = []
        self._visited: set[str] = set()
        self._listings: dict[str, tuple[list[str], list[str]]] = {}  # sub-folders listed ahead

    def listdir(self, folder: str) -> tuple[list[str], list[str]]:
        return self._listings.pop(folder, None) or _listdir(folder)

    def want(self, layout: str) -> bool:
        return self.layout in ("auto", layout)

    def rel_id(self, rel: tuple[str, ...]) -> str:
        return "/".join(rel) if rel else self.root_name

    def walk(self, folder: str, rel: tuple[str, ...]) -> None:
        real = os.path.realpath(folder)
        if real in self._visited:
            logger.warning("manifest: %s was already scanned (symbolic link loop or alias); skipped", folder)
            return
        self._visited.add(real)
        files, dirs = self.listdir(folder)
        if self.want("synth") and "clip.json" in files and self._synth(folder, rel):
            return
        if self.want("mead") and os.path.basename(folder) == "video" and any(d in _MEAD_VIEW_SET for d in dirs):
            self._mead(folder, rel, dirs)
            return
        claimed: set[str] = set()
        if self.want("frames"):
            if any(_is_image(f) for f in files):
                self._frames(folder, rel, None)
            else:
                view_dirs = []
                for d in dirs:
                    sub = os.path.join(folder, d)
                    self._listings[sub] = _listdir(sub)
                    if any(_is_image(f) for f in self._listings[sub][0]):
                        view_dirs.append(d)
                if view_dirs and all(_is_view_dir(d) for d in view_dirs):
                    if self._frames(folder, rel, view_dirs):
                        claimed = set(view_dirs)
        if self.want("videos"):
            for name in files:
                if _is_video(name):
                    stem = os.path.splitext(name)[0]
                    self.found.append(_Found(
                        raw_id="/".join(rel + (stem,)), source="/".join(rel + (name,)), kind="video",
                        inputs=[os.path.join(folder, name)], view_names=["front"],
                    ))
        for d in dirs:
            if d in claimed:
                self._listings.pop(os.path.join(folder, d), None)
            else:
                self.walk(os.path.join(folder, d), rel + (d,))

    # -- synth clip folders
    def _synth(self, folder: str, rel: tuple[str, ...]) -> bool:
        cj = os.path.join(folder, "clip.json")
        try:
            with open(cj, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            logger.warning("manifest: %s is not readable JSON (%s); folder scanned as an ordinary one", cj, e)
            return False
        if not isinstance(doc, dict) or doc.get("format") != SYNTH_CLIP_FORMAT:
            fmt = doc.get("format") if isinstance(doc, dict) else None
            logger.warning("manifest: %s has format %r, not %r; folder scanned as an ordinary one", cj, fmt,
                           SYNTH_CLIP_FORMAT)
            return False
        try:
            views = [str(v) for v in doc["views"]]
            videos = doc.get("videos") or {}
            missing = [v for v in views if v not in videos]
            if missing:
                logger.warning("manifest: %s has no video for views %s (written without videos?); clip skipped",
                               cj, missing)
                return True
            meta = doc.get("meta") or {}
            num_frames = doc.get("num_frames")
            fps = doc.get("fps")
            self.found.append(_Found(
                raw_id=self.rel_id(rel), source=self.rel_id(rel), kind="synth",
                inputs=[os.path.join(folder, videos[v]) for v in views], view_names=views,
                landmarks=os.path.join(folder, doc.get("landmarks") or "landmarks.npz"),
                num_frames=int(num_frames) if num_frames else None, fps=float(fps) if fps else None,
                meta={"synthetic": True, "seed": meta.get("seed"), "model": meta.get("model"),
                      "image_size": doc.get("image_size")},
            ))
        except (KeyError, TypeError, ValueError) as e:
            logger.warning("manifest: %s is malformed (%s: %s); clip skipped", cj, type(e).__name__, e)
        return True

    # -- MEAD <subject>/video/<view>/<emotion>/<level>/<take>.mp4
    def _mead(self, video_dir: str, rel: tuple[str, ...], view_dirs: list[str]) -> None:
        subject_dir = os.path.dirname(video_dir)
        subject = os.path.basename(subject_dir) or "_"
        subject_id = "/".join(rel[:-1]) if len(rel) >= 2 else subject
        unknown = [v for v in view_dirs if v not in _MEAD_VIEW_SET]
        if unknown:
            logger.warning("manifest: %s: view folders %s are not MEAD views; listed after the MEAD views",
                           video_dir, unknown)
        takes: dict[tuple[str, str, str], dict[str, str]] = {}
        stray: list[str] = []
        for view in view_dirs:
            vdir = os.path.join(video_dir, view)
            files, emotions = _listdir(vdir)
            stray += [os.path.join(vdir, f) for f in files]
            for emotion in emotions:
                edir = os.path.join(vdir, emotion)
                files, levels = _listdir(edir)
                stray += [os.path.join(edir, f) for f in files]
                for level in levels:
                    ldir = os.path.join(edir, level)
                    files, deeper = _listdir(ldir)
                    stray += [os.path.join(ldir, d) + os.sep for d in deeper]
                    for name in files:
                        if not _is_video(name):
                            stray.append(os.path.join(ldir, name))
                            continue
                        key = (emotion, level, os.path.splitext(name)[0])
                        per_view = takes.setdefault(key, {})
                        if view in per_view:
                            logger.warning("manifest: %s duplicates take %s of view %s; skipped",
                                           os.path.join(ldir, name), per_view[view], view)
                            continue
                        per_view[view] = os.path.join(ldir, name)
        if stray:
            logger.warning("manifest: %s: %d files/folders outside <view>/<emotion>/<level>/<take> video files "
                           "skipped, e.g. %s", video_dir, len(stray), stray[:3])
        all_views = _order_views(v for per_view in takes.values() for v in per_view)
        incomplete = []
        for (emotion, level, take), per_view in sorted(takes.items()):
            views = _order_views(per_view)
            meta: dict[str, Any] = {"subject": subject, "emotion": emotion, "level": level, "take": take}
            if len(views) < len(all_views):
                meta["missing_views"] = [v for v in all_views if v not in per_view]
                incomplete.append(f"{emotion}/{level}/{take} (no {', '.join(meta['missing_views'])})")
            first = per_view[views[0]]
            self.found.append(_Found(
                raw_id=f"{subject_id}/{emotion}/{level}/{take}",
                source=os.path.relpath(first, self.root).replace(os.sep, "/"),
                kind="mead", inputs=[per_view[v] for v in views], view_names=views, meta=meta,
            ))
        if incomplete:
            logger.warning("manifest: %s: %d of %d takes lack views the subject has (listed with the views "
                           "present), e.g. %s", video_dir, len(incomplete), len(takes), "; ".join(incomplete[:5]))

    # -- frame folders
    def _frames(self, folder: str, rel: tuple[str, ...], view_dirs: list[str] | None) -> bool:
        try:
            views = video_lib._scan_folder(Path(folder), None)
        except video_lib.VideoError as e:
            logger.warning("manifest: %s is not a readable frame folder (%s); skipped", folder, e)
            return False
        if view_dirs is not None:
            views = {v: views[v] for v in view_dirs if v in views}
        if not views:
            logger.warning("manifest: %s: no frames found; skipped", folder)
            return False
        names = _order_views(views)
        common = set.intersection(*(set(views[v]) for v in names))
        if not common:
            logger.warning("manifest: %s: views %s share no frame numbers; skipped", folder, names)
            return False
        meta = {}
        if len(names) > 1 and any(len(views[v]) != len(common) for v in names):
            meta["frames_per_view"] = {v: len(views[v]) for v in names}
        self.found.append(_Found(
            raw_id=self.rel_id(rel), source=self.rel_id(rel), kind="frames", inputs=[folder], view_names=names,
            num_frames=len(common), meta=meta,
        ))
        return True


def _assign_ids(found: list[_Found]) -> list[str]:
    ids = [sanitize_clip_id(f.raw_id) for f in found]
    groups: dict[str, list[int]] = {}
    for i, cid in enumerate(ids):
        groups.setdefault(cid, []).append(i)
    for cid, members in groups.items():
        if len(members) > 1:
            logger.warning("manifest: %d clips would share the id %r (%s); each gets its path's crc32 appended",
                           len(members), cid, ", ".join(found[i].source for i in members))
            for i in members:
                ids[i] = f"{cid}={_crc_hex(found[i].source)}"
    _avoid_reserved_and_nested(ids, found)
    # Pathological leftovers (a file literally named like a suffixed id, a crc32 collision): counters.
    while len(set(ids)) != len(ids):
        seen: dict[str, int] = {}
        for i in sorted(range(len(ids)), key=lambda i: (ids[i], found[i].source)):
            if ids[i] in seen:
                seen[ids[i]] += 1
                ids[i] = f"{ids[i]}={seen[ids[i]]}"
            else:
                seen[ids[i]] = 1
    return ids


def _avoid_reserved_and_nested(ids: list[str], found: list[_Found]) -> None:
    """Renames, in place, ids a run would refuse (``layout``): a reserved first part gets ``clip-``
    in front, a clip whose folder would hold another clip gets its path's crc32 appended."""
    for i, cid in enumerate(ids):
        if reserved_reason(cid) is not None:
            ids[i] = f"clip-{cid}={_crc_hex(found[i].source)}"
            logger.warning("manifest: %s would be a reserved clip id; it is %r", found[i].source, ids[i])
    outer = {a for cid in ids for a in ancestors(cid)}
    for i, cid in enumerate(ids):
        if cid in outer:
            ids[i] = f"{cid}={_crc_hex(found[i].source)}"
            logger.warning("manifest: other clips lie inside %s; its clip id is %r", found[i].source, ids[i])


def _probe_all(found: list[_Found], workers: int, progress: Callable[[int, int], None] | None) -> None:
    todo = [(i, j) for i, f in enumerate(found) if f.kind in ("mead", "video") for j in range(len(f.inputs))]
    if not todo:
        return
    results: dict[tuple[int, int], tuple[int, float | None] | Exception] = {}

    def one(key):
        try:
            return key, probe_video_frames(found[key[0]].inputs[key[1]])
        except (video_lib.VideoError, OSError) as e:
            return key, e

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for n, (key, res) in enumerate(pool.map(one, todo), 1):
            results[key] = res
            if progress is not None:
                progress(n, len(todo))
    for i, f in enumerate(found):
        if f.kind not in ("mead", "video"):
            continue
        per_view = [results[(i, j)] for j in range(len(f.inputs))]
        errors = [f"{f.view_names[j]}: {r}" for j, r in enumerate(per_view) if isinstance(r, Exception)]
        if errors:
            logger.warning("manifest: cannot count frames of %s", "; ".join(errors))
            f.meta["probe_error"] = "; ".join(errors)
            continue
        counts = [r[0] for r in per_view]
        f.num_frames = min(counts)
        f.fps = per_view[0][1]
        if len(set(counts)) > 1:
            f.meta["frames_per_view"] = dict(zip(f.view_names, counts))
        rates = {r[1] for r in per_view}
        if len(rates) > 1:
            logger.warning("manifest: views of %s differ in frame rate: %s", f.raw_id,
                           dict(zip(f.view_names, (r[1] for r in per_view))))


def build_manifest(
    root,
    layout: str = "auto",
    probe_frames: bool = False,
    *,
    probe_workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[ClipEntry]:
    """The clips under ``root``, sorted by ``clip_id`` (layouts and ids: see the module docstring).

    Args:
      root: the dataset folder.
      layout: ``"auto"`` (detect per sub-tree), ``"mead"``, ``"videos"``, ``"frames"`` or ``"synth"``.
      probe_frames: count the frames (and read the frame rate) of every video with ffmpeg.
      probe_workers: parallel ffmpeg processes for ``probe_frames`` (default ``min(8, cpus)``).
      progress: ``progress(done, total)`` called while probing.

    Returns:
      ``ClipEntry`` list with absolute paths.

    Raises:
      ValueError: ``root`` does not exist, is not a folder, or holds no clips of ``layout``;
        an unknown layout.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; one of {LAYOUTS}")
    root_abs = os.path.abspath(os.fspath(root))
    if not os.path.exists(root_abs):
        raise ValueError(f"manifest root {root_abs} does not exist")
    if not os.path.isdir(root_abs):
        raise ValueError(f"manifest root {root_abs} is not a folder")
    scanner = _Scanner(root_abs, layout)
    scanner.walk(root_abs, ())
    found = scanner.found
    if not found:
        what = "clips" if layout == "auto" else f"clips of the {layout!r} layout"
        raise ValueError(f"manifest root {root_abs} holds no {what}")
    if probe_frames:
        _probe_all(found, probe_workers or min(8, os.cpu_count() or 1), progress)
    ids = _assign_ids(found)
    entries = [
        ClipEntry(clip_id=cid, kind=f.kind, inputs=tuple(f.inputs), view_names=tuple(f.view_names),
                  landmarks=f.landmarks, num_frames=f.num_frames, fps=f.fps, meta=f.meta)
        for cid, f in zip(ids, found)
    ]
    return sorted(entries, key=lambda e: e.clip_id)
