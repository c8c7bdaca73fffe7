"""Settings declared once: a frozen dataclass field carries its default, its help and its flag.

A stage's config is a frozen, hashable dataclass whose fields are made with :func:`setting`; the
command line defines one absl flag per field from that declaration (``neuface_jax.cli.flags``), so
the flag, the config field and the default exist in one place. Python callers build the same
dataclass directly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

_KEY = "neuface_setting"


@dataclasses.dataclass(frozen=True)
class Setting:
    """How a config field appears on the command line."""

    help: str
    flag: str | None = None  #: flag name (default: the field name)
    choices: tuple[str, ...] | None = None  #: an enum flag
    cli: bool = True  #: False: Python-only (no flag)


def setting(default: Any, help: str, *, flag: str | None = None, choices: Sequence[str] | None = None,
            cli: bool = True) -> Any:
    """A dataclass field with its command-line declaration."""
    meta = {_KEY: Setting(help=help, flag=flag, choices=tuple(choices) if choices else None, cli=cli)}
    return dataclasses.field(default=default, metadata=meta)


def settings_of(cls) -> list[tuple[dataclasses.Field, Setting]]:
    """The fields of ``cls`` declared with :func:`setting` and exposed on the command line."""
    out = []
    for f in dataclasses.fields(cls):
        s = f.metadata.get(_KEY)
        if s is not None and s.cli:
            out.append((f, s))
    return out
