"""The output folder of a dataset run, made safe before any work: absolute, writable, locked.

- **Absolute**: ``--out`` is resolved once, at the start (orbax checkpoints need absolute paths,
  and nothing later depends on the working directory).
- **Writable**: a probe file is created and removed, so a read-only or full folder is an error
  before any clip is prepared; the run's own entries (``failures.jsonl``, ``_checkpoints``,
  ``_locks``) may not be symbolic links (writes would land outside the folder).
- **Locked**: each run holds a lease ``<out>/_locks/shard-<i>-of-<N>.json`` naming its host, pid
  and shard, renewed by a background thread. Runs of different shards of the same sharding (the
  processes of a ``--distributed`` run, or separate jobs) share a folder; a run whose shard is
  held, or that shards differently from a live run (their clips would overlap), refuses with the
  holder's host and pid. A lease is stale, and taken over, when it expired (its holder stopped
  renewing it: killed, or a host gone) or when its holder is a process of this host (and pid
  namespace) that no longer exists. Lock files are read and written under ``flock`` on ``_locks/.guard``, so two
  runs starting together never both win.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import pathlib
import socket
import tempfile
import threading
import time
import uuid
from typing import Any, Callable

from neuface_jax.common.atomic import atomic_write_text
from neuface_jax.dataset.layout import CHECKPOINT_DIR, FAILURES_FILE, LOCK_DIR

logger = logging.getLogger(__name__)

#: Seconds a lease lasts without renewal; it is renewed every quarter of that.
LEASE_SECONDS = 300.0
_GUARD = ".guard"


class OutputError(RuntimeError):
    """The output folder cannot be used (not creatable, not writable, a symbolic link inside)."""


class OutputLockedError(OutputError):
    """Another live run holds the output folder for clips this run would do."""


def resolve(out_dir) -> pathlib.Path:
    """``out_dir`` as an absolute path (``~`` expanded, symbolic links of the folder itself resolved)."""
    return pathlib.Path(os.path.expanduser(os.fspath(out_dir))).resolve()


def make_usable(out: pathlib.Path) -> None:
    """Creates ``out`` and checks that the run can write there (see the module docstring).

    Raises:
      OutputError: naming the folder and the reason.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    if not out.is_dir():
        raise OutputError(f"the output folder {out} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"the output folder {out} is not writable: {e.strerror or e}") from None
    for name in (FAILURES_FILE, CHECKPOINT_DIR, LOCK_DIR):
        if (out / name).is_symlink():
            raise OutputError(f"{out / name} is a symbolic link; a run writes only inside its output folder")


def prepare_output(out_dir) -> pathlib.Path:
    """``out_dir`` made absolute (``resolve``), created and checked (``make_usable``)."""
    out = resolve(out_dir)
    make_usable(out)
    return out


# --------------------------------------------------------------------------- leases
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def this_host() -> str:
    """This machine and process namespace: pids are comparable only between equal values (two
    containers may share a host name, not a pid namespace)."""
    try:
        return f"{socket.gethostname()}/pidns:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return socket.gethostname()


def is_stale(holder: dict[str, Any], *, now: float, host: str) -> bool:
    """Whether a lease no longer protects anything: expired (or unreadable), or its process is
    gone (judged only when it ran in this ``host``, a ``this_host()`` value)."""
    try:
        if float(holder["expires"]) < now:
            return True
        return holder.get("where") == host and not _pid_alive(int(holder["pid"]))
    except (KeyError, TypeError, ValueError):
        return True


def conflicts(holder: dict[str, Any], shard_id: int, num_shards: int) -> bool:
    """Whether a live run holding ``holder`` may do clips of shard ``shard_id`` of ``num_shards``."""
    return holder.get("num_shards") != num_shards or holder.get("shard_id") == shard_id


def describe(holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("started", 0))))
    return (f"host {holder.get('host')} pid {holder.get('pid')} (shard {holder.get('shard_id')} of "
            f"{holder.get('num_shards')}, since {started})")


@contextlib.contextmanager
def _guarded(lock_dir: pathlib.Path):
    fd = os.open(lock_dir / _GUARD, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _read(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


@dataclasses.dataclass
class Lease:
    """This run's lease on its shard of the output folder; ``release`` ends it."""

    path: pathlib.Path
    holder: dict[str, Any]
    lease_seconds: float
    clock: Callable[[], float] = time.time
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def renew(self) -> None:
        with _guarded(self.path.parent):
            held = _read(self.path)
            if held is None or held.get("token") != self.holder["token"]:
                logger.warning("the lease %s lapsed and was removed or taken by another run", self.path)
                return
            self.holder["expires"] = self.clock() + self.lease_seconds
            atomic_write_text(self.path, json.dumps(self.holder, indent=1) + "\n")

    def _renew_until_released(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            try:
                self.renew()
            except OSError as e:  # a full disk must not end the run; the lease may then lapse
                logger.warning("cannot renew the lease %s: %s", self.path, e)

    def start(self) -> "Lease":
        self._thread = threading.Thread(target=self._renew_until_released, name="neuface-lease", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with _guarded(self.path.parent):
            held = _read(self.path)
            if held is not None and held.get("token") == self.holder["token"]:
                self.path.unlink(missing_ok=True)


def acquire(out: pathlib.Path, shard_id: int, num_shards: int, *, lease_seconds: float = LEASE_SECONDS,
            clock: Callable[[], float] = time.time) -> Lease:
    """Takes this run's lease on ``out`` (see the module docstring); stale leases are removed.

    Raises:
      OutputLockedError: a live run holds this shard or shards ``out`` differently.
    """
    lock_dir = out / LOCK_DIR
    lock_dir.mkdir(exist_ok=True)
    where, now = this_host(), clock()
    mine = lock_dir / f"shard-{shard_id:05d}-of-{num_shards:05d}.json"
    with _guarded(lock_dir):
        for path in sorted(lock_dir.glob("shard-*.json")):
            holder = _read(path)
            if holder is None or is_stale(holder, now=now, host=where):
                logger.warning("removing the stale lock %s%s", path, f" of {describe(holder)}" if holder else "")
                path.unlink(missing_ok=True)
            elif conflicts(holder, shard_id, num_shards):
                raise OutputLockedError(
                    f"the output folder {out} is in use by another run: {describe(holder)}; wait for it to end, "
                    f"or remove {path} if that run is gone")
        holder = {"host": socket.gethostname(), "where": where, "pid": os.getpid(), "shard_id": shard_id, "num_shards": num_shards,
                  "token": uuid.uuid4().hex, "started": now, "expires": now + lease_seconds}
        atomic_write_text(mine, json.dumps(holder, indent=1) + "\n")
    return Lease(mine, holder, lease_seconds, clock).start()

