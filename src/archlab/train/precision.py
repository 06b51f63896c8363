"""What ``trainer.precision: auto`` trains in: measured on this machine, not guessed.

``fp32`` and ``bf16`` (autocast) are used as given.  ``auto`` on a GPU is bf16 where
the GPU supports it; on a CPU without bf16 matrix instructions it is fp32.  On a CPU
with them (AVX512-BF16, AMX), whether bf16 is faster depends on the model's size:
on a 2-core EPYC, gpt-shakespeare-char-small (6 x 384) trains 2.35x faster in bf16
(results/precision-gpt-small.json), while the demo's 4 x 128 GPT can be slower,
its matrices too small for the conversions to pay.  So ``auto`` times a few training
steps (forward and backward of a copy of the model on the run's first batch) in
each precision, interleaved, after a warm-up, and takes bf16 only if its fastest
step beats fp32's by :data:`MARGIN`.  The fastest of several steps is the measure,
as other processes only ever add time.  The choice is cached in
``$ARCHLAB_CACHE/precision``, keyed by the CPU, torch version, thread count, model,
task and batch shape, so each shape is probed once per machine (delete the file
to probe again); the run's config.yaml records it, so evaluation and resume use it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archlab.data.files import cache_root
from archlab.io import atomic_write_text

MARGIN = 0.05  # bf16 is chosen when its step takes at most (1 - MARGIN) of fp32's
PROBE_SECONDS = 1.5  # time for the timed rounds, after the warm-up
MIN_ROUNDS, MAX_ROUNDS = 3, 25  # timed steps per precision


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX) that oneDNN uses."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def hardware_precision(device: torch.device) -> str:
    """``auto`` without a probe: bf16 where the hardware has it, else fp32.

    What ``auto`` meant before the probe (config.yaml files of those runs); and the
    rule on GPUs, where bf16 is supported and fast alike.
    """
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of ``fp32`` / ``bf16`` (``auto``: :func:`hardware_precision`)."""
    if name == "auto":
        name = hardware_precision(device)
    return torch.bfloat16 if name == "bf16" else torch.float32


@dataclass(frozen=True)
class Probe:
    """The fastest training step measured in each precision, in seconds."""

    fp32: float
    bf16: float

    @property
    def choice(self) -> str:
        return "bf16" if self.bf16 <= (1 - MARGIN) * self.fp32 else "fp32"

    def summary(self) -> str:
        return (
            f"fp32 {self.fp32 * 1e3:.1f} ms/step, bf16 {self.bf16 * 1e3:.1f} ms/step; "
            f"bf16 needs {MARGIN:.0%} less"
        )


def time_steps(step: Callable[[bool], None], sync: Callable[[], None] = lambda: None) -> Probe:
    """The fastest of ``step(bf16)``'s timed calls in each precision, interleaved.

    One warm-up call each (first calls allocate and pick kernels), then rounds of
    one call each, alternating which goes first, for :data:`PROBE_SECONDS` (between
    :data:`MIN_ROUNDS` and :data:`MAX_ROUNDS` rounds).
    """
    for bf16 in (False, True):
        step(bf16)
    sync()
    times: dict[bool, list[float]] = {False: [], True: []}
    started = time.perf_counter()
    for round_ in range(MAX_ROUNDS):
        if round_ >= MIN_ROUNDS and time.perf_counter() - started > PROBE_SECONDS:
            break
        for bf16 in (False, True) if round_ % 2 == 0 else (True, False):
            t0 = time.perf_counter()
            step(bf16)
            sync()
            times[bf16].append(time.perf_counter() - t0)
    return Probe(fp32=min(times[False]), bf16=min(times[True]))


def probe_training_step(
    model: nn.Module, loss_of: Callable[[nn.Module], torch.Tensor], device: torch.device
) -> Probe:
    """Time forward (``loss_of(model)`` under autocast) + backward on a copy of ``model``.

    The model, its buffers (batch-norm statistics, power iterations) and every random
    generator are left as they were, so a run that probes trains exactly as one that
    does not.
    """
    from archlab.train.checkpoint import rng_state, set_rng_state

    state = rng_state()
    trial = copy.deepcopy(model).train()

    def step(bf16: bool) -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = loss_of(trial)
        loss.backward()
        trial.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        return time_steps(step, sync)
    finally:
        set_rng_state(state)


def batch_shapes(batch: Any) -> Any:
    """The shapes and dtypes of a batch's tensors (part of the probe's cache key)."""
    if isinstance(batch, torch.Tensor):
        return [list(batch.shape), str(batch.dtype)]
    if isinstance(batch, tuple | list):
        return [batch_shapes(b) for b in batch]
    if hasattr(batch, "__dict__"):
        return {k: batch_shapes(v) for k, v in sorted(vars(batch).items())}
    return type(batch).__name__


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(device: torch.device) -> dict[str, Any]:
    """What makes one machine's timings differ from another's."""
    return {
        "cpu": _cpu_name(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def choose_precision(
    device: torch.device,
    shape: dict[str, Any],
    probe: Callable[[], Probe],
) -> tuple[str, str]:
    """``auto``'s choice, ``fp32`` or ``bf16``, and a sentence saying how it was made.

    ``shape`` names what is trained (model, its config, task, batch shape); ``probe()``
    measures it.  A CPU with bf16 instructions is probed once per machine and shape.
    """
    if device.type != "cpu" or not cpu_has_fast_bf16():
        name = hardware_precision(device)
        return name, f"trainer.precision auto: {name} ({device.type} without a probe)"
    key = {"machine": machine_key(device), "shape": shape}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    path = cache_root() / "precision" / f"{digest[:24]}.json"
    try:
        cached = json.loads(path.read_text("utf-8"))
        return cached["choice"], (
            f"trainer.precision auto: {cached['choice']}, measured before on this machine "
            f"({cached['summary']}): {path}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass
    measured = probe()
    record = {"choice": measured.choice, "summary": measured.summary(), **key}
    record["seconds"] = {"fp32": measured.fp32, "bf16": measured.bf16}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    except OSError:  # a read-only cache: the choice holds for this run only
        pass
    return measured.choice, (
        f"trainer.precision auto: {measured.choice}, measured on this machine "
        f"({measured.summary()}); cached in {path}"
    )
