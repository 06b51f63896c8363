"""Directories built once into the cache and shared by every later run.

:func:`build_once` makes ``target`` with ``build`` in a temporary directory
beside it, then renames it into place: the cache never holds half a directory,
whatever stops the build.  A lock file beside ``target`` lets one process build
while the others wait and then use its result; where locks are unavailable, the
rename only succeeds when ``target`` is absent, so a second builder's work is
discarded and the first one's kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on POSIX: rename-if-absent alone keeps the cache whole
    fcntl = None


@contextmanager
def _locked(lock_path: Path, on_wait: Callable[[], None] | None) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_once(
    target: Path,
    build: Callable[[Path], None],
    *,
    on_wait: Callable[[], None] | None = None,
) -> tuple[Path, bool]:
    """``target``, built by ``build(path)`` if it does not exist yet.

    ``build`` must create the directory ``path`` (in a temporary directory beside
    ``target``) and fill it.

    Returns (target, whether this call built it).  ``on_wait`` is called if another
    process holds the lock (is building it) when this one arrives.
    """
    target = Path(target)
    if target.is_dir():
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.with_name(target.name + ".lock"), on_wait):
        if target.is_dir():  # built by the process we waited for
            return target, False
        if fcntl is not None:  # we hold the lock: any temporary directory is a killed build's
            for stale in target.parent.glob(f".{target.name}.tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp / target.name)  # a path that does not exist yet
            try:
                os.rename(tmp / target.name, target)  # fails if target exists (no lock)
            except OSError:
                if not target.is_dir():
                    raise
                return target, False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target, True
