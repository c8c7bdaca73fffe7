"""absl flags made from config declarations (``neuface_jax.common.settings``), and configs made from flags."""

from __future__ import annotations

import dataclasses
import typing

from absl import flags

from neuface_jax.common.settings import settings_of


def _kind(cls, field: dataclasses.Field) -> type:
    hint = typing.get_type_hints(cls)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0]


def define(fv: flags.FlagValues, cls, *, defaults: dict | None = None) -> None:
    """Defines one flag per command-line setting of ``cls`` (defaults overridable per command)."""
    defaults = defaults or {}
    for f, s in settings_of(cls):
        name = s.flag or f.name
        default = defaults.get(f.name, f.default)
        kind = _kind(cls, f)
        if s.choices:
            flags.DEFINE_enum(name, default, list(s.choices), s.help, flag_values=fv)
        elif kind is bool:
            flags.DEFINE_bool(name, default, s.help, flag_values=fv)
        elif kind is int:
            flags.DEFINE_integer(name, default, s.help, flag_values=fv)
        elif kind is float:
            flags.DEFINE_float(name, default, s.help, flag_values=fv)
        elif kind is str:
            flags.DEFINE_string(name, default, s.help, flag_values=fv)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag type for {kind!r}")


def build(fv: flags.FlagValues, cls, **extra):
    """The ``cls`` config from parsed flags (``extra`` sets the Python-only fields)."""
    values = {f.name: fv[s.flag or f.name].value for f, s in settings_of(cls)}
    values.update(extra)
    return cls(**values)
