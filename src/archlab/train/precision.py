"""What ``trainer.precision: auto`` trains in: measured on this machine, not guessed.

``fp32`` and ``bf16`` (autocast) are used as given.  ``auto`` on a GPU is bf16 where
the GPU supports it; on a CPU without bf16 matrix instructions it is fp32.  On a CPU
with them (AVX512-BF16, AMX), whether bf16 is faster depends on the model's size:
on a 2-core EPYC, gpt-shakespeare-char-small (6 x 384) trains 2.35x faster in bf16
(results/precision-gpt-small.json), while the demo's 4 x 128 GPT can be slower,
its matrices too small for the conversions to pay.  So ``auto`` times a few training
steps (forward and backward of a copy of the model on the run's first batch) in
each precision, interleaved, after a warm-up, and takes bf16 only if it is
:data:`MARGIN` faster both by its fastest step and by the median round
(:class:`Probe`).  A settled choice is cached in ``$ARCHLAB_CACHE/precision``,
keyed by the CPU, torch version, thread count, model, task and batch shape, so
each shape is probed once per machine (delete the file to probe again); one the
load made unclear gives fp32 and is probed again next time.  The run's
config.yaml records the choice, so evaluation and resume use it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import statistics
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
MIN_ROUNDS, MAX_ROUNDS = 5, 25  # timed steps per precision
# a probe whose median step is this much slower than its fastest (in either precision)
# ran on a machine too busy to tell: measured here under a load of 9 on 2 cores, 1-thread
# probes stayed within 1.25, 2-thread ones spread to 1.5-5.8
MAX_SPREAD = 1.25
# ...or whose main thread ran less than this share of the time: its threads were waiting
# for a CPU (here: 0.5 for a 2-thread probe beside one busy process, 1.0 on a free core)
MIN_CPU_SHARE = 0.85


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
    """Timed training steps in each precision (seconds), round by round.

    Two measures of bf16's time relative to fp32's: the ratio of the fastest steps
    (other processes only ever add time) and the median of each round's ratio (the
    two steps of a round run back to back, under the same load).  bf16 is chosen
    when both say it is :data:`MARGIN` faster.  The probe is *settled* when both
    are on the same side of that line, the steps of each precision took about the
    same time (:data:`MAX_SPREAD`) and the process had the CPUs it asked for
    (:data:`MIN_CPU_SHARE`); else the machine was too busy to tell.
    """

    fp32_times: tuple[float, ...]
    bf16_times: tuple[float, ...]
    cpu_share: float = 1.0  # the main thread's CPU time / wall time over the timed steps

    @property
    def fp32(self) -> float:
        return min(self.fp32_times)

    @property
    def bf16(self) -> float:
        return min(self.bf16_times)

    @property
    def ratios(self) -> tuple[float, float]:
        """bf16 / fp32: of the fastest steps, and the median of the rounds' ratios."""
        rounds = [b / f for f, b in zip(self.fp32_times, self.bf16_times, strict=True)]
        return self.bf16 / self.fp32, statistics.median(rounds)

    @property
    def spread(self) -> float:
        """The larger of median / fastest step over the two precisions."""
        return max(statistics.median(t) / min(t) for t in (self.fp32_times, self.bf16_times))

    @property
    def settled(self) -> bool:
        agree = (max(self.ratios) <= 1 - MARGIN) == (min(self.ratios) <= 1 - MARGIN)
        return agree and self.spread <= MAX_SPREAD and self.cpu_share >= MIN_CPU_SHARE

    @property
    def choice(self) -> str:
        """bf16 if settled and faster by both measures; else fp32."""
        return "bf16" if self.settled and max(self.ratios) <= 1 - MARGIN else "fp32"

    def summary(self) -> str:
        fastest, rounds = self.ratios
        return (
            f"fp32 {self.fp32 * 1e3:.1f} ms/step, bf16 {self.bf16 * 1e3:.1f} ms/step, "
            f"bf16/fp32 {fastest:.2f} (fastest), {rounds:.2f} (median round), CPU share "
            f"{self.cpu_share:.2f}; bf16 needs {MARGIN:.0%} less in both"
        )


def time_steps(step: Callable[[bool], None], sync: Callable[[], None] = lambda: None) -> Probe:
    """``step(bf16)`` timed in both precisions, interleaved.

    One warm-up call each (first calls allocate and pick kernels), then rounds of
    one call each, alternating which goes first, for :data:`PROBE_SECONDS` (between
    :data:`MIN_ROUNDS` and :data:`MAX_ROUNDS` rounds).
    """
    for bf16 in (False, True):
        step(bf16)
    sync()
    times: dict[bool, list[float]] = {False: [], True: []}
    started, cpu_started = time.perf_counter(), time.thread_time()
    for round_ in range(MAX_ROUNDS):
        if round_ >= MIN_ROUNDS and time.perf_counter() - started > PROBE_SECONDS:
            break
        for bf16 in (False, True) if round_ % 2 == 0 else (True, False):
            t0 = time.perf_counter()
            step(bf16)
            sync()
            times[bf16].append(time.perf_counter() - t0)
    share = (time.thread_time() - cpu_started) / (time.perf_counter() - started)
    return Probe(tuple(times[False]), tuple(times[True]), share)


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
    measures it.  A CPU with bf16 instructions is probed once per machine and shape;
    a probe that was not settled (:class:`Probe`) gives fp32 and is not cached.
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
    said = f"trainer.precision auto: {measured.choice}, measured on this machine "
    said += f"({measured.summary()})"
    if not measured.settled:  # too busy to tell: the safe choice, and a new probe next time
        return measured.choice, f"{said}; the machine was too busy to tell, so not cached"
    record = {"choice": measured.choice, "summary": measured.summary(), **key}
    record["seconds"] = {"fp32": measured.fp32_times, "bf16": measured.bf16_times}
    record["cpu_share"] = measured.cpu_share
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    except OSError:  # a read-only cache: the choice holds for this run only
        pass
    return measured.choice, f"{said}; cached in {path}"
