"""absl flags made from config declarations (``neuface_jax.common.settings``), and configs made from flags.

``define(fv, Cls)`` defines one flag per command-line setting of the config class ``Cls``;
``build(fv, Cls)`` makes the config from the parsed flags. Commands that share a config share its
flag group by construction. The frame range (``media.video.FrameRange``, a media type without
setting declarations) has its flag group here: ``define_frame_range`` / ``frame_range``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Iterable

from absl import flags

from neuface_jax.common.settings import settings_of
from neuface_jax.media.video import FrameRange

#: The frame-range flags: name → (absl definer, help). Defaults are ``FrameRange()``'s.
FRAME_RANGE_FLAGS = {
    "start": (flags.DEFINE_integer, "First frame (0-based)."),
    "end": (flags.DEFINE_integer, "End frame (exclusive)."),
    "start_s": (flags.DEFINE_float, "Start time in seconds."),
    "end_s": (flags.DEFINE_float, "End time in seconds (exclusive)."),
    "stride": (flags.DEFINE_integer, "Take every k-th frame."),
}


def _kind(cls, field: dataclasses.Field):
    """The field's type without ``| None`` (``tuple[int, ...]`` stays whole: a list flag)."""
    hint = typing.get_type_hints(cls)[field.name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    return hint


_DEFINERS = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}


def define(fv: flags.FlagValues, cls, *, defaults: dict | None = None, exclude: Iterable[str] = ()) -> None:
    """Defines one flag per command-line setting of ``cls``.

    ``defaults`` overrides a field's default for this command (by field name); ``exclude`` leaves
    fields out (by field name; ``build`` then keeps their config defaults).
    """
    defaults = defaults or {}
    skip = set(exclude)
    for f, s in settings_of(cls):
        if f.name in skip:
            continue
        name = s.flag or f.name
        default = defaults.get(f.name, f.default)
        if s.choices:
            flags.DEFINE_enum(name, default, list(s.choices), s.help, flag_values=fv)
            continue
        kind = _kind(cls, f)
        if typing.get_origin(kind) is tuple:  # a list flag; the config converts its strings
            flags.DEFINE_list(name, None if default is None else [str(x) for x in default], s.help, flag_values=fv)
        elif kind in _DEFINERS:
            _DEFINERS[kind](name, default, s.help, flag_values=fv)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag type for {kind!r}")


def build(fv: flags.FlagValues, cls, **extra):
    """The ``cls`` config from parsed flags (``extra`` sets the Python-only or excluded fields)."""
    values = {f.name: fv[s.flag or f.name].value for f, s in settings_of(cls) if (s.flag or f.name) in fv}
    values.update(extra)
    return cls(**values)


def define_frame_range(fv: flags.FlagValues, *, only: Iterable[str] | None = None) -> None:
    """Defines the frame-range flags (``only``: a subset of their names, e.g. ``("stride",)``)."""
    names = FRAME_RANGE_FLAGS if only is None else list(only)
    defaults = FrameRange()
    for name in names:
        definer, help_ = FRAME_RANGE_FLAGS[name]
        definer(name, getattr(defaults, name), help_, flag_values=fv)


def frame_range(fv: flags.FlagValues) -> FrameRange:
    """The ``FrameRange`` of the parsed frame-range flags (those not defined keep their defaults)."""
    return FrameRange(**{name: fv[name].value for name in FRAME_RANGE_FLAGS if name in fv})
