"""Files written whole or not at all, read back without unpickling code; strict JSON.

Every JSON archlab writes or prints (``metrics.jsonl``, ``results.json``,
``model.json``, the output of ``archlab train`` and ``archlab eval``) goes through
:func:`to_json`, so any JSON parser reads it: a NaN or infinite number becomes
``null``, and the object at the top gains a ``non_finite`` entry saying what each
was, by its path (keys joined by ``.``, list positions as numbers)::

    {"val": {"loss": null, "accuracy": 0.5}, "non_finite": {"val.loss": "nan"}}
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

NON_FINITE = "non_finite"  # the key that says which values were NaN or infinite


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (/proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def atomic_write(target: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``target``, then rename it over.

    A crash or Ctrl-C while writing leaves the previous ``target`` intact.  The file
    gets the mode ``open(target, "w")`` gives a new file (0o666 less the umask), not
    the temporary file's 0600 -- also when ``write`` replaces the file it was given.
    """
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write(target, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def to_json(obj: Any, *, indent: int | None = None) -> str:
    """``json.dumps`` for every JSON parser: NaN and infinities become null, with the reason.

    The reason, "nan", "inf" or "-inf", goes under ``non_finite`` in the top-level
    object, keyed by the value's path (see the module's docstring).  Real numbers that
    are not integers (NumPy's float32, ...) are written as floats.
    """
    found: dict[str, str] = {}
    clean = _finite(obj, "", found)
    if found and isinstance(clean, dict):
        clean[NON_FINITE] = {**clean.get(NON_FINITE, {}), **found}
    return json.dumps(clean, indent=indent, allow_nan=False)


def _finite(obj: Any, path: str, found: dict[str, str]) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v, f"{path}.{i}" if path else str(i), found) for i, v in enumerate(obj)]
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
        value = float(obj)
        if not math.isfinite(value):
            found[path] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
            return None
        return value
    return obj
