"""Errors of the FLAME file readers, and the limits that bound what a file may ask for."""

from __future__ import annotations

import contextlib


# Nested chumpy objects and torch streams are resolved recursively; this bounds the depth.
_MAX_DEPTH = 64
# Largest pickled torch tensor accepted (elements); FLAME's largest array has ~6e6.
_MAX_TENSOR_ELEMENTS = 2**28


class UnsafeModelFileError(ValueError):
    """A pickled file references a callable or class outside the loader's allow-list.

    Raised before anything the file names is called: nothing from the file runs.
    """


class _FileError(ValueError):
    """A ValueError whose message already names the file (re-raised unchanged)."""


def _fail(source: str, msg: str) -> _FileError:
    return _FileError(f"{source}: {msg}")


def _short(x) -> str:
    """A bounded repr for error messages (file contents can be arbitrarily large)."""
    r = repr(x)
    return r if len(r) <= 80 else r[:77] + "..."




@contextlib.contextmanager
def _named_errors(source: str, what: str):
    """Turns errors raised while building ``what`` from ``source`` into ValueErrors that name the file
    (an ``UnsafeModelFileError``, or an error that already names it, passes unchanged)."""
    try:
        yield
    except UnsafeModelFileError:
        raise
    except ValueError as e:
        if source in str(e):
            raise
        raise _fail(source, str(e)) from None
    except (TypeError, IndexError, KeyError, AttributeError, OverflowError, MemoryError) as e:
        raise _fail(source, f"invalid {what} ({type(e).__name__}: {e})") from None
