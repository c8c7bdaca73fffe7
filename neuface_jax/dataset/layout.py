"""The names a dataset run gives its own files in ``--out``, and the clip ids that may not be used.

A clip's outputs go to ``<out>/<clip_id>/``; the run's own files sit beside them. A clip id is
*reserved* when its first part is one of those names (``failures.jsonl``, ``report.json``,
``report.md``, ``summary-*.json``) or starts with ``_`` or ``.`` (``_checkpoints``, ``_locks``,
temporary and hidden files), compared case-insensitively so that case-insensitive file systems
agree. Two ids *nest* when one is a folder of the other (``c1`` and ``c1/params.npz``): the inner
clip would write into the outer one's folder. Pure: no file access.
"""

from __future__ import annotations

import re
from typing import Iterable

DONE_FILE = "done.json"
FAILURES_FILE = "failures.jsonl"
CHECKPOINT_DIR = "_checkpoints"
LOCK_DIR = "_locks"
REPORT_FILES = ("report.json", "report.md")
SUMMARY_PATTERN = "summary-*-of-*.json"

_RESERVED_NAMES = frozenset(n.lower() for n in (FAILURES_FILE, *REPORT_FILES))
_SUMMARY_LIKE = re.compile(r"summary-.*\.json", re.IGNORECASE)


def summary_name(shard_id: int, num_shards: int) -> str:
    return f"summary-{shard_id:05d}-of-{num_shards:05d}.json"


def reserved_reason(clip_id: str) -> str | None:
    """Why ``clip_id`` cannot be a clip's folder name in ``--out`` (None: it can)."""
    first = clip_id.split("/", 1)[0]
    if first[:1] in ("_", "."):
        return f"its first part {first!r} starts with '{first[0]}' (reserved for the run's own files)"
    if first.lower() in _RESERVED_NAMES or _SUMMARY_LIKE.fullmatch(first):
        return f"its first part {first!r} is the name of one of the run's own files"
    return None


def check_clip_ids(ids: Iterable[tuple[str, str]]) -> None:
    """Rejects reserved and nested clip ids; ``ids`` are ``(clip_id, where)`` pairs, ``where``
    naming the id's origin in messages (``manifest.jsonl:12``).

    Raises:
      ValueError: ``<where>: clip_id '...' <what is wrong>`` for the first bad id.
    """
    where_of: dict[str, str] = {}
    for cid, where in ids:
        reason = reserved_reason(cid)
        if reason is not None:
            raise ValueError(f"{where}: clip_id {cid!r} is reserved: {reason}")
        where_of.setdefault(cid, where)
    for cid, where in where_of.items():
        outer = next((p for p in ancestors(cid) if p in where_of), None)
        if outer is not None:
            raise ValueError(f"{where}: clip_id {cid!r} lies inside the folder of clip {outer!r} "
                             f"({where_of[outer]}); a clip's folder cannot hold another clip")


def ancestors(clip_id: str) -> list[str]:
    """The ids of the folders above ``clip_id`` (``a/b/c`` -> ``a``, ``a/b``)."""
    parts = clip_id.split("/")
    return ["/".join(parts[:k]) for k in range(1, len(parts))]
