"""One process per run directory: a lock file, taken as the directory is claimed.

A training process holds ``RUN_DIR/.lock`` from before it reads the recipe until it
ends (normally, by an error, Ctrl-C or SIGTERM).  The lock holds the holder's PID,
host, start time and, on Linux, the kernel's start time of that process (so a PID
reused by another process is not mistaken for the holder).  It is created with
``O_CREAT | O_EXCL``, so of two processes at most one gets it; a second process is
refused with one sentence naming the holder.  A lock whose process is gone (killed,
crashed) is taken over with a note.  A new directory is made with an exclusive
``mkdir``; the default name ``runs/RECIPE-YYYYmmdd-HHMMSS`` gets a suffix ``-2``,
``-3``, ... when another run made that directory first.

Readers (``archlab eval``, ``archlab.load``) take no lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from archlab.console import note
from archlab.errors import ArchlabError, CheckpointError, ConfigError

LOCK_FILE = ".lock"


class RunDirInUse(ArchlabError):
    """Another process holds the run directory's lock."""


@dataclass
class Claim:
    """A run directory this process holds; :meth:`release` (or ``with``) lets it go."""

    run_dir: Path
    token: str  # the lock file's text: ours, and no other process's
    created: bool  # this process made the directory

    def release(self) -> None:
        """Remove our lock; remove the directory too if we made it and it stayed empty."""
        lock = self.run_dir / LOCK_FILE
        with contextlib.suppress(OSError):
            if lock.read_text("utf-8") == self.token:
                lock.unlink()
        if self.created:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # fails, as it should, unless the directory is empty

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def default_run_dir(recipe_name: str) -> Path:
    """``runs/RECIPE-YYYYmmdd-HHMMSS`` (the first free name is ``claim_new``'s to find)."""
    stem = Path(recipe_name).stem
    return Path("runs") / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def claim_new(run_dir: Path | None, recipe_name: str) -> Claim:
    """A directory for a new run: ``run_dir`` (absent or empty), else a fresh default one."""
    if run_dir is None:
        base = default_run_dir(recipe_name)
        base.parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                os.mkdir(candidate)
            except FileExistsError:
                continue
            return _lock(candidate, created=True)
        raise ConfigError(f"no free run directory name beside {base}; give one with --out")
    created = _make_dir(run_dir)
    claim = _lock(run_dir, created=created)
    if any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        claim.release()
        raise ConfigError(
            f"{run_dir} already holds files; choose another --out, or continue it with "
            f"--resume {run_dir}"
        )
    return claim


def claim_existing(run_dir: Path) -> Claim:
    """An existing run directory, to resume it."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory")
    return _lock(run_dir, created=False)


def _make_dir(run_dir: Path) -> bool:
    """Make ``run_dir`` (and its parents); whether this call made it."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(run_dir)
    except FileExistsError:
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir} is a file, not a run directory") from None
        return False
    return True


def _lock(run_dir: Path, *, created: bool) -> Claim:
    lock = run_dir / LOCK_FILE
    token = json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now().isoformat(timespec="seconds"),
            "process_start": _process_start(os.getpid()),
        }
    )
    with _mutex(run_dir):
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _holder(lock)
                if holder is _RELEASED:
                    continue
                if holder is not None and _alive(holder):
                    if created:
                        Claim(run_dir, token, created).release()
                    raise RunDirInUse(_in_use_message(run_dir, holder)) from None
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                gone = "an unreadable lock" if holder is None else f"process {holder['pid']}"
                note(f"{run_dir} was held by {gone}, which is gone; this run takes it over")
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(token)
            return Claim(run_dir, token, created)
    raise RunDirInUse(f"{run_dir} is being claimed by other processes; try again")


def in_use(run_dir: Path) -> str | None:
    """Why ``run_dir``, or a run inside it (a repeated run's members), must not be removed:
    the in-use sentence of a lock whose holder still runs; None if there is none."""
    for lock in Path(run_dir).rglob(LOCK_FILE):
        holder = _holder(lock)
        if holder is not None and holder is not _RELEASED and _alive(holder):
            return _in_use_message(lock.parent, holder)
    return None


def _in_use_message(run_dir: Path, holder: dict) -> str:
    where = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
    message = (
        f"{run_dir} is in use by process {holder['pid']}{where} (since {holder.get('since')}); "
        "wait for it to end or stop it, or choose another directory"
    )
    if where:  # its liveness cannot be checked from here
        message += f" (if that process is gone, delete {run_dir / LOCK_FILE})"
    return message


_RELEASED = {"pid": 0}  # what _holder returns for a lock that vanished as it was read


def _holder(lock: Path) -> dict | None:
    """The lock's holder, or None if the lock cannot be read (after waiting for its writer)."""
    for _ in range(10):
        try:
            holder = json.loads(lock.read_text("utf-8"))
            if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
                return holder
        except FileNotFoundError:
            return _RELEASED
        except (OSError, ValueError):
            pass
        time.sleep(0.05)  # being written by a process without the mutex
    return None


def _alive(holder: dict) -> bool:
    """Whether the lock's holder still runs (a process on another host is assumed to)."""
    pid = holder["pid"]
    if holder.get("host") != socket.gethostname():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    start = _process_start(pid)
    if start == "zombie":
        return False
    return start is None or holder.get("process_start") in (None, start)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` ("zombie" for an exited one); None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after "PID (COMMAND)", which may hold spaces
    if fields[0] in ("Z", "X"):
        return "zombie"
    return fields[19]


@contextlib.contextmanager
def _mutex(run_dir: Path) -> Iterator[None]:
    """An advisory lock on the directory while its lock file is checked and replaced.

    It closes the gap between reading a stale lock and replacing it, in which another
    process could take the lock over too.  The kernel drops it when its holder dies.
    Where ``flock`` is missing (Windows) or refused (some network file systems), the
    lock file's ``O_EXCL`` alone decides.
    """
    try:
        import fcntl

        fd = os.open(run_dir, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the flock
