"""One logging channel and one progress helper for every stage and command.

Library code logs through ``logging.getLogger(__name__)`` (all loggers live under ``neuface_jax``);
commands call :func:`configure` once so those messages reach stderr. Results a command prints for a
person (tables, "wrote ...") stay on stdout.

Progress is shown by :class:`Progress`: a tqdm bar when stderr is a terminal; otherwise (Slurm,
nohup, CI) one log line at most every ``interval`` seconds and one at the end, with the count,
the rate and the time left, so long runs say something without flooding a log file.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Protocol

ROOT = "neuface_jax"


def configure(level: int = logging.INFO) -> logging.Logger:
    """Sends the project's log records to stderr (once; a handler the caller installed is kept)."""
    root = logging.getLogger(ROOT)
    root.setLevel(level)
    if not root.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        # Ours is the one output: a root handler that appears later (a library calling logging.info()
        # installs one) would print every line a second time.
        root.propagate = False
    return root


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Progress:
    """A counter with a description: a bar on a terminal, periodic log lines elsewhere.

    ``update(n)`` adds to the count, ``set(done, total)`` replaces both (for callbacks that report
    absolute progress), ``postfix(text)`` attaches a short status such as the current metric.
    Usable as a context manager; ``close()`` is idempotent.
    """

    def __init__(self, desc: str, total: int | None = None, *, unit: str = "it", interval: float = 30.0,
                 logger: logging.Logger | None = None, bar: bool | None = None):
        self.desc, self.total, self.unit, self.interval = desc, total, unit, float(interval)
        self.done = 0
        self._text = ""
        self._log = logger or logging.getLogger(ROOT)
        self._start = self._last = time.monotonic()
        self._closed = False
        self._emitted = None
        self._bar = None
        if bar is None:
            bar = _is_terminal(sys.stderr)
        if bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=True, dynamic_ncols=True, mininterval=0.5)

    # -- counting
    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done = done
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.n = done
            self._bar.refresh()
        elif time.monotonic() - self._last >= self.interval:
            self._emit()

    def postfix(self, text: str) -> None:
        self._text = text
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def callback(self) -> Callable[[int, int], None]:
        """A ``(done, total)`` callback for code that reports absolute progress."""
        return lambda done, total: self.set(done, total)

    # -- output
    def line(self) -> str:
        elapsed = time.monotonic() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        total = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0 and self.done < self.total:
            eta = f", {(self.total - self.done) / rate:.0f}s left"
        extra = f"; {self._text}" if self._text else ""
        return f"{self.desc}: {self.done}{total} {self.unit} in {elapsed:.1f}s ({rate:.2f} {self.unit}/s{eta}){extra}"

    def _emit(self) -> None:
        self._last = time.monotonic()
        self._emitted = (self.done, self.total, self._text)
        self._log.info(self.line())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._emitted != (self.done, self.total, self._text):  # the last state, once
            self._emit()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ProgressFactory(Protocol):
    def __call__(self, desc: str, total: int | None = None) -> Progress: ...


def progress_factory(*, interval: float = 30.0, bar: bool | None = None) -> ProgressFactory:
    """A factory for :class:`Progress` with shared settings (what commands pass to library code)."""

    def make(desc: str, total: int | None = None, unit: str = "it") -> Progress:
        return Progress(desc, total, unit=unit, interval=interval, bar=bar)

    return make


def quiet(desc: str, total: int | None = None, unit: str = "it") -> Progress:
    """A factory that shows nothing (library default): counts, never prints."""
    return Progress(desc, total, unit=unit, interval=float("inf"), bar=False, logger=_SILENT)


_SILENT = logging.getLogger(ROOT + "._silent")
_SILENT.disabled = True
