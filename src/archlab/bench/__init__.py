"""Speed and memory of archlab against the reference implementations, in one run.

Each benchmark module has ``run(quick: bool) -> dict`` returning its measurements,
with a one-line ``summary`` and the ``reference`` it measures against, and prints a
table of ratios (archlab / reference; > 1 means archlab is faster).
Machines are noisy, so each figure is a median over interleaved repeats.

``kge-reference`` is not a speed benchmark and not part of ``all``: it trains PyKEEN to
the end for the reference figures issue 16 lacks; its ``run`` also takes the options
``dataset``, ``models``, ``epochs`` and ``seeds`` (its module's ``OPTIONS``; ``kge``'s is
``cases``).  A module with ``RESUMES`` writes ``--out`` after each step and, run again
with the same ``--out``, takes up the steps that file already holds.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from archlab.errors import ConfigError
from archlab.io import atomic_write_text, to_json
from archlab.registry import unknown_name_message

BENCHMARKS = ("gpt", "gnn", "demo", "seq", "kge", "serve")
# run by name only (hours, not minutes): reference figures rather than speed ratios
REFERENCES = ("kge-reference",)


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def memory_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"{field} not in /proc/self/status")


def step_peak_mb(step: Callable[[], object]) -> float:
    """Peak RSS above the present one while ``step()`` runs, in MB: the peak is reset
    first (``/proc/self/clear_refs``), so what was set up before does not count."""
    Path("/proc/self/clear_refs").write_text("5")
    base = memory_mb("VmRSS")
    step()
    return memory_mb("VmHWM") - base


def in_fresh_process(code: str) -> float:
    """The number Python ``code`` prints last, run in a fresh interpreter (so that a memory
    figure sees none of this process's allocations)."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def interleaved_medians(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Call each function ``repeats`` times, round-robin; median of what each returns.

    Every other round runs in reverse order, so that no function always comes first
    (the first of a round can pay for what the last one left, e.g. freed memory).
    """
    results: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(repeats):
        for name, fn in list(fns.items())[:: -1 if i % 2 else 1]:
            results[name].append(fn())
    return {name: statistics.median(values) for name, values in results.items()}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _module(name: str):
    return importlib.import_module(f"archlab.bench.{name.replace('-', '_')}")


def run_benchmarks(
    names: list[str], *, quick: bool = False, out: str | None = None, options: dict | None = None
) -> dict:
    """Run ``names``; ``options`` (e.g. ``{"dataset": "kinship"}``, None values left out)
    go to the benchmarks that take them, and are an error for those that do not."""
    known = [*BENCHMARKS, *REFERENCES]
    for name in names:
        if name not in known:
            raise ConfigError(unknown_name_message("benchmark", name, known))
    if out and Path(out).is_dir():  # found now, not when the first measurement is saved
        raise ConfigError(f"--out {out} is a directory; give a file name, e.g. {out}/bench.json")
    options = {k: v for k, v in (options or {}).items() if v is not None}
    for name in names:
        extra = set(options) - set(getattr(_module(name), "OPTIONS", ()))
        if extra:
            flags = ", ".join(f"--{k}" for k in sorted(extra))
            raise ConfigError(f"bench {name} takes no {flags}")
    flags = [f"--{k} {','.join(v) if isinstance(v, list) else v}" for k, v in options.items()]
    report = {
        "command": " ".join(["archlab bench", *names, *(["--quick"] if quick else []), *flags]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "benchmarks": {},
    }
    previous = {}
    if out and Path(out).is_file():
        try:
            previous = json.loads(Path(out).read_text(encoding="utf-8")).get("benchmarks", {})
        except (ValueError, AttributeError):
            previous = {}

    def write() -> None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        # atomic: a benchmark that saves as it goes must not lose its hours to a Ctrl-C
        atomic_write_text(out, to_json(report, indent=2) + "\n")

    recipes = set()
    for name in names:
        module = _module(name)
        extra: dict = {}
        if out and getattr(module, "RESUMES", False):  # saves as it goes; takes up what is there

            def save(part: dict, name: str = name) -> None:
                report["benchmarks"][name] = part
                write()

            extra = {"previous": previous.get(name), "save": save}
        report["benchmarks"][name] = module.run(quick=quick, **options, **extra)
        recipes.add(getattr(module, "RECIPE", None))
    if len(recipes) == 1 and None not in recipes:  # the recipe the figures belong to
        report["recipe"] = recipes.pop()
    if out:
        write()
        print(f"wrote {out}")
    return report
