"""Errors of the FLAME file readers, and the limits that bound what a file may ask for."""

from __future__ import annotations

import contextlib
import math
import os


# Nested chumpy objects and torch streams are resolved recursively; this bounds the depth.
_MAX_DEPTH = 64
# Largest pickled torch tensor accepted (elements); FLAME's largest array has ~6e6.
_MAX_TENSOR_ELEMENTS = 2**28


#: Default memory budget of one load: bytes of arrays (and pickle objects) a file may make the loader
#: build. Official FLAME files need a few hundred MB; the budget leaves room for them.
DEFAULT_MAX_BYTES = 2 * 2**30
#: Environment variable overriding the default budget (an integer number of bytes).
MAX_BYTES_ENV = "FLAME_JAX_MAX_LOAD_BYTES"
# Bytes charged per pickle opcode: a bound on what each object the unpickler builds may cost.
_BYTES_PER_OPCODE = 64


class UnsafeModelFileError(ValueError):
    """A pickled file references a callable or class outside the loader's allow-list.

    Raised before anything the file names is called: nothing from the file runs.
    """


class _FileError(ValueError):
    """A ValueError whose message already names the file (re-raised unchanged)."""


class FileTooLargeError(_FileError):
    """A file asks the loader for more memory than its budget (declared array sizes, decompressed
    sizes, sparse shapes, expanded pickle structures); raised before the memory is allocated."""


def max_load_bytes(max_bytes: int | None = None) -> int:
    """The memory budget of one load: ``max_bytes`` when given, else ``$FLAME_JAX_MAX_LOAD_BYTES``,
    else ``DEFAULT_MAX_BYTES``."""
    if max_bytes is None:
        env = os.environ.get(MAX_BYTES_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_BYTES
        try:
            max_bytes = int(env)
        except ValueError:
            raise ValueError(f"${MAX_BYTES_ENV}={env!r} is not an integer number of bytes") from None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    return max_bytes


class _Source(str):
    """A file's name (what error messages print) carrying the memory budget of its load.

    Every reader receives the file's name anyway; the budget travels with it so that each place
    that allocates on the file's say-so can charge it first. A plain ``str`` gets a fresh default
    budget (see ``_budget_of``).
    """

    budget: "_Budget"

    def __new__(cls, name, max_bytes: int | None = None, *, budget: "_Budget | None" = None):
        self = super().__new__(cls, str(name))
        self.budget = budget if budget is not None else _Budget(max_load_bytes(max_bytes))
        return self

    def beside(self, name) -> "_Source":
        """Another file read by the same load: it shares this budget."""
        return _Source(name, budget=self.budget)


class _Budget:
    """Bytes a load may still allocate; every charge is checked before the allocation it announces."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def charge(self, source: str, nbytes: int, what: str) -> None:
        """Counts ``nbytes`` against the budget, or raises ``FileTooLargeError`` naming ``source``."""
        nbytes = int(nbytes)
        if nbytes < 0 or self.used + nbytes > self.limit:
            raise FileTooLargeError(
                f"{source}: {what} needs {_human(nbytes)}, beyond the memory budget of this load "
                f"({_human(self.limit)}, {_human(self.used)} already used); pass max_bytes= or set "
                f"${MAX_BYTES_ENV} to allow more for a file you trust"
            )
        self.used += nbytes


def _charge(source, nbytes: int, what: str) -> None:
    """Charges ``nbytes`` to the budget carried by ``source`` (a plain name: a fresh default budget)."""
    budget = getattr(source, "budget", None)
    (budget if budget is not None else _Budget(max_load_bytes())).charge(source, nbytes, what)


def _charge_array(source, shape, itemsize: int, what: str) -> None:
    """Charges an array of ``shape`` (exact Python integers: no overflow) before it is built."""
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise _fail(source, f"{what} has a negative dimension in {_short(shape)}")
    _charge(source, math.prod(shape) * int(itemsize), f"{what} of shape {_short(shape)}")


def _human(nbytes: int) -> str:
    if nbytes >= 2**60:
        return f"{nbytes:.3g} bytes"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes} bytes"


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
    except (UnsafeModelFileError, _FileError):  # a _FileError names its file (maybe one read beside)
        raise
    except ValueError as e:
        if source in str(e):
            raise
        raise _fail(source, str(e)) from None
    except (TypeError, IndexError, KeyError, AttributeError, OverflowError, MemoryError) as e:
        raise _fail(source, f"invalid {what} ({type(e).__name__}: {e})") from None
