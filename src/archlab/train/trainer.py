"""The Trainer: batches in, loss out.  It owns every training setting.

    lr(s) = lr * (s + 1) / warmup                                  s < warmup
    lr(s) = min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,        p = (s - warmup) / (S - warmup)

(``schedule: cosine``; ``constant`` keeps lr; ``step`` keeps lr to S / 2, then lr / 10, as
the RotatE authors' code), times each parameter group's ``lr_scales`` factor.  AdamW
(fused where the device supports it; or Adam, or Adadelta) with weight decay on matrices
and embeddings (on biases and norms too with ``decay_vectors``), gradient clipping by
global norm, gradient accumulation, bf16 autocast where asked, evaluation with
best-checkpoint keeping (the task judges the results by ``select_by``) and early
stopping, atomic checkpoints, exact resume, and data parallelism under torchrun (each
rank takes its rows of the same global batch; DDP averages the gradients, so N
processes compute what one does).

Lengths and intervals are in steps or, for tasks that have epochs, in epochs:
``max_steps`` / ``max_epochs`` (training ends at whichever comes first),
``eval_every`` / ``eval_every_epochs``, ``checkpoint_every`` /
``checkpoint_every_epochs``, ``warmup_steps`` / ``warmup_epochs``
(:func:`plan_steps` turns them into steps).
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn

from archlab.config import (
    Config,
    Count,
    NonNegativeFloat,
    OneOf,
    PositiveFloat,
    Probability,
    Size,
)
from archlab.console import note
from archlab.errors import ArchlabError, ConfigError
from archlab.tasks import Task
from archlab.train import checkpoint as ckpt
from archlab.train.logging import MetricsLog
from archlab.train.precision import (  # noqa: F401  (cpu_has_fast_bf16: importable here too)
    batch_shapes,
    choose_precision,
    cpu_has_fast_bf16,
    probe_training_step,
    resolve_precision,
)

PRECISIONS = ("auto", "fp32", "bf16")
OPTIMIZERS = ("adamw", "adam", "adadelta", "rmsprop")


@dataclass
class TrainerConfig(Config):
    section: ClassVar[str] = "trainer"

    max_steps: Size | None = None  # optimizer steps; training ends at max_steps or max_epochs
    max_epochs: Size | None = None  # passes over the training data, for tasks with epochs
    batch_size: Size = 32  # global batch (summed over data-parallel ranks)
    eval_batch_size: Size = 64
    lr: PositiveFloat = 1e-3
    # learning-rate factors by module name, e.g. {discriminator: 4.0}: the parameters
    # under that module train at lr x factor (the schedule scales every group alike)
    lr_scales: dict[str, PositiveFloat] = field(default_factory=dict)
    min_lr: NonNegativeFloat = 0.0
    warmup_steps: Count = 0
    warmup_epochs: Count | None = None  # instead of warmup_steps, for tasks with epochs
    # after warm-up: cosine, constant, or step (lr / 10 from halfway, the RotatE authors')
    schedule: Annotated[str, OneOf(("cosine", "constant", "step"))] = "cosine"
    # adamw; adam (L2 added to the gradient); adadelta (rho = beta2); rmsprop (alpha = beta2)
    optimizer: Annotated[str, OneOf(OPTIMIZERS)] = "adamw"
    weight_decay: NonNegativeFloat = 0.0
    decay_only: str = ""  # if set, only parameters whose name starts with it are decayed
    decay_vectors: bool = False  # decay biases and norm gains too (the GAT authors' code does)
    beta1: Probability = 0.9
    beta2: Probability = 0.999
    grad_clip: NonNegativeFloat = 1.0  # max global gradient norm; 0 = no clipping
    grad_accum: Size = 1  # micro-batches per optimizer step
    # evaluation on validation, every N steps or every N epochs (default: each epoch
    # for tasks with epochs, else every 250 steps)
    eval_every: Size | None = None
    eval_every_epochs: Size | None = None
    select_by: str | None = None  # what picks the kept model (default: the task's metric)
    # resume checkpoints, every N steps or epochs (default: at each evaluation)
    checkpoint_every: Size | None = None
    checkpoint_every_epochs: Size | None = None
    log_every: Size = 10
    early_stopping_patience: Count = 0  # evaluations without improvement; 0 = never stop early
    seed: Count = 0
    device: str = "auto"  # cpu, cuda or auto
    # fp32, bf16 or auto: bf16 where it trains this model faster here (train/precision.py)
    precision: Annotated[str, OneOf(PRECISIONS)] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_steps is None and self.max_epochs is None:
            raise ConfigError(f"set {self.key('max_steps')} or {self.key('max_epochs')} (or both)")
        for steps, epochs in (
            ("eval_every", "eval_every_epochs"),
            ("checkpoint_every", "checkpoint_every_epochs"),
        ):
            if getattr(self, steps) is not None and getattr(self, epochs) is not None:
                raise ConfigError(f"set {self.key(steps)} or {self.key(epochs)}, not both")
        if self.warmup_epochs is not None and self.warmup_steps:
            raise ConfigError(
                f"set {self.key('warmup_steps')} or {self.key('warmup_epochs')}, not both"
            )


# each setting in epochs, and its counterpart in steps
STEP_KEYS = {
    "max_epochs": "max_steps",
    "eval_every_epochs": "eval_every",
    "checkpoint_every_epochs": "checkpoint_every",
    "warmup_epochs": "warmup_steps",
}
# the pairs that say one thing two ways: a recipe gives one (--set of one drops the other)
EXCLUSIVE = (
    ("eval_every", "eval_every_epochs"),
    ("checkpoint_every", "checkpoint_every_epochs"),
    ("warmup_steps", "warmup_epochs"),
)


@dataclass(frozen=True)
class StepPlan:
    """Every length and interval of a run in optimizer steps (see :func:`plan_steps`)."""

    max_steps: int
    eval_every: int
    checkpoint_every: int
    warmup_steps: int


def plan_steps(cfg: TrainerConfig, steps_per_epoch: int | None, task_name: str) -> StepPlan:
    """The run's lengths in steps: epoch settings times ``steps_per_epoch`` (the task's).

    Training ends at ``max_steps`` or after ``max_epochs``, whichever comes first.
    """
    epoch_keys = [k for k in STEP_KEYS if getattr(cfg, k) is not None]
    if steps_per_epoch is None and epoch_keys:
        in_steps = STEP_KEYS[epoch_keys[0]]
        raise ConfigError(
            f"the {task_name} task draws batches without epochs, so trainer.{epoch_keys[0]} "
            f"means nothing to it; give it in steps (trainer.{in_steps})"
        )
    per_epoch = steps_per_epoch or 0
    limits = [cfg.max_steps, None if cfg.max_epochs is None else cfg.max_epochs * per_epoch]
    max_steps = min(n for n in limits if n is not None)

    def interval(steps: int | None, epochs: int | None, default: int) -> int:
        if steps is not None:
            return steps
        return default if epochs is None else epochs * per_epoch

    eval_every = interval(cfg.eval_every, cfg.eval_every_epochs, per_epoch or 250)
    checkpoint_every = interval(cfg.checkpoint_every, cfg.checkpoint_every_epochs, eval_every)
    warmup = cfg.warmup_steps if cfg.warmup_epochs is None else cfg.warmup_epochs * per_epoch
    return StepPlan(max_steps, eval_every, checkpoint_every, warmup)


class TrainingStopped(ArchlabError):
    """Training stopped before the end (a non-finite loss); the last finite state is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but no GPU is available here; use cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"device must be cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def lr_at(
    step: int, cfg: TrainerConfig, total_steps: int | None = None, warmup_steps: int | None = None
) -> float:
    """The learning rate at ``step`` of ``total_steps`` (default ``cfg.max_steps``)."""
    total_steps = total_steps or cfg.max_steps
    warmup = cfg.warmup_steps if warmup_steps is None else warmup_steps
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr / 10 if step >= total_steps // 2 else cfg.lr
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


class Schedule:
    """The learning-rate scheduler: :func:`lr_at` times each group's ``lr_scale``.

    The rate is a pure function of the step and the plan; the state saved for resume
    is that plan and the last step set, so a resumed run knows whether it continues
    the same schedule (a changed ``max_steps`` stretches the cosine).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainerConfig, plan: StepPlan):
        self.optimizer, self.cfg = optimizer, cfg
        self.total_steps, self.warmup_steps = plan.max_steps, plan.warmup_steps
        self.last_step = -1

    def step_to(self, step: int) -> float:
        """Set every group's rate for optimizer step ``step``; returns the unscaled rate."""
        lr = lr_at(step, self.cfg, self.total_steps, self.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.last_step = step
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "schedule": self.cfg.schedule,
            "lr": self.cfg.lr,
            "min_lr": self.cfg.min_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "last_step": self.last_step,
        }

    def differs_from(self, saved: dict[str, Any]) -> list[str]:
        """The settings in which this schedule differs from a saved one's."""
        ours = self.state_dict()
        return [k for k in ours if k != "last_step" and k in saved and saved[k] != ours[k]]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state.get("last_step", -1))


def make_optimizer(model: nn.Module, cfg: TrainerConfig, device: torch.device):
    """Weight decay goes to matrices and embeddings (not biases or norms, unless
    ``decay_vectors``), and with ``decay_only`` only to those under that name prefix
    (Kipf & Welling decay GCN's first layer only). ``adamw`` decouples the decay;
    ``adam`` adds it to the gradient, i.e. an L2 penalty (weight_decay / 2) ||w||^2 in
    the loss, as the GCN and GAT papers do. ``lr_scales`` multiplies the learning rate
    of the parameters under a module name (a GAN's two time-scale update rule:
    ``{discriminator: 4.0}``); each group keeps its factor as ``lr_scale``, and the
    first group is always the unscaled one.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    lr_scales = cfg.lr_scales
    for prefix in lr_scales:
        if not any(_under(name, prefix) for name, _ in named):
            modules = sorted({name.split(".")[0] for name, _ in named})
            raise ConfigError(
                f"trainer.lr_scales names {prefix!r}, which holds no parameter of this model; "
                f"its modules are {', '.join(modules)}"
            )

    def decayed(name: str, p: torch.Tensor) -> bool:
        return (p.dim() >= 2 or cfg.decay_vectors) and name.startswith(cfg.decay_only)

    def scale(name: str) -> float:
        return next((s for prefix, s in lr_scales.items() if _under(name, prefix)), 1.0)

    groups = [
        {
            "params": [p for n, p in named if decayed(n, p) == decay and scale(n) == s],
            "weight_decay": cfg.weight_decay if decay else 0.0,
            "lr_scale": s,
        }
        for s in (1.0, *sorted(set(lr_scales.values()) - {1.0}))
        for decay in (True, False)
    ]
    fused = device.type in ("cpu", "cuda")
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr, rho=cfg.beta2, eps=1e-6)
    if cfg.optimizer == "rmsprop":  # PyTorch's defaults (alpha 0.99), as the TCN authors use it
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.beta2)
    adam = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def _under(name: str, module: str) -> bool:
    """Whether parameter ``name`` belongs to ``module`` (a dotted module path)."""
    return name == module or name.startswith(module.rstrip(".") + ".")


def _rank_world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_process_group(device: torch.device) -> None:
    """Join torchrun's process group (once): NCCL on GPUs, gloo on CPUs."""
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a job scheduler) stops training as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _StopRequests:
    """SIGINT and SIGTERM while training: the first only asks the trainer to stop.

    The trainer looks at :attr:`signal_name` at the end of each step, when weights,
    optimizer, scheduler, RNG and step count agree, saves them and stops.  A second
    signal of the same kind (Ctrl-C twice) stops at once with ``KeyboardInterrupt``,
    leaving the last checkpoint on disk as it was -- except while a checkpoint is being
    written (:meth:`saving`): then it stops right after the writing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool) -> None:
        self.signal_name: str | None = None
        self.announce = announce
        self._received: set[int] = set()
        self._writing = False
        self._stop_after_writing = False

    def _handle(self, signum: int, frame: object) -> None:
        if signum not in self._received:
            self._received.add(signum)
            if self.signal_name is None:
                self.signal_name = signal.Signals(signum).name
                if self.announce:  # os.write: no buffered stream to re-enter
                    again = "Ctrl-C" if signum == signal.SIGINT else self.signal_name
                    os.write(
                        2,
                        f"\narchlab: {self.signal_name}: stopping after this step to save the "
                        f"run ({again} again stops at once)\n".encode(),
                    )
            return
        if self._writing:
            self._stop_after_writing = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[_StopRequests]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals reach the main thread only
            return
        previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextmanager
    def saving(self) -> Iterator[None]:
        """Within the block, a second signal waits for the block's end."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._stop_after_writing:
            raise KeyboardInterrupt


def _shard(batch: Any, rank: int, world: int) -> Any:
    """This rank's rows of a global batch (a tensor or a tuple/list of tensors)."""
    if world == 1:
        return batch
    if isinstance(batch, tuple | list):
        return type(batch)(_shard(b, rank, world) for b in batch)
    return batch[rank::world]


class Trainer:
    def __init__(
        self,
        task: Task,
        model: nn.Module,
        cfg: TrainerConfig,
        run_dir: Path,
        model_name: str,
        model_config: dict,
        *,
        progress: bool = True,
    ) -> None:
        self.task, self.cfg, self.run_dir = task, cfg, run_dir
        self.model_name, self.model_config = model_name, model_config
        self.rank, self.world = _rank_world()
        self.is_main = self.rank == 0
        self.device = resolve_device(cfg.device)
        if self.world > 1 and not task.data_parallel:
            raise ConfigError(
                f"the {task.name} task trains in one process only; run it without torchrun"
            )
        if cfg.batch_size % self.world:
            raise ConfigError(
                f"trainer.batch_size ({cfg.batch_size}) must divide evenly over {self.world} "
                "processes"
            )
        self.model = model.to(self.device)
        task.use_model(self.model)
        self.train_module = self.model  # what task.loss calls: the model, or DDP around it
        if self.world > 1:
            init_process_group(self.device)
            self.train_module = nn.parallel.DistributedDataParallel(self.model)
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.plan = plan_steps(
            cfg, task.steps_per_epoch(cfg.batch_size * cfg.grad_accum), task.name
        )
        self.max_steps = self.plan.max_steps
        self.schedule = Schedule(self.optimizer, cfg, self.plan)
        self.select_by = cfg.select_by or task.metric
        self.step = 0
        self.best: dict[str, float] | None = None  # the task's best validation values
        self.kept_val: dict[str, float] | None = None  # the kept model's validation metrics
        self.stale_evals = 0
        self.train_seconds = 0.0  # time in training steps
        self.eval_seconds = 0.0  # time in evaluations during training
        self.progress = progress and self.is_main
        self.log = MetricsLog(run_dir, enabled=self.is_main)
        self.saved_step: int | None = None  # the step of the checkpoint on disk
        self._stops = _StopRequests(announce=self.is_main)
        if cfg.precision == "auto":  # run.py writes self.cfg, with the choice, to config.yaml
            self.cfg = replace(cfg, precision=self._auto_precision())
        self.dtype = resolve_precision(self.cfg.precision, self.device)

    def _auto_precision(self) -> str:
        """``fp32`` or ``bf16``: which trains this model faster here (:mod:`.precision`)."""
        name = ""
        if self.is_main:
            cfg = self.cfg
            batch = self.task.train_batch(0, cfg.batch_size, cfg.seed)
            batch = _to_device(_shard(batch, self.rank, self.world), self.device)
            shape = {
                "model": self.model_name,
                "config": self.model_config,
                "task": self.task.name,
                "batch": batch_shapes(batch),
            }
            name, message = choose_precision(
                self.device,
                shape,
                lambda: probe_training_step(
                    self.model, lambda model: self.task.loss(model, batch), self.device
                ),
            )
            note(message)
        if self.world > 1:  # every rank trains in rank 0's choice
            chosen = [name]
            dist.broadcast_object_list(chosen, src=0)
            name = chosen[0]
        return name

    # ----- state -----

    def _state(self, rng: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "rng": rng or ckpt.rng_state(),
            "best": self.best,
            "kept_val": self.kept_val,
            "stale_evals": self.stale_evals,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "model_config": json.dumps(self.model_config, sort_keys=True),
        }

    def save_checkpoint(self, rng: dict[str, Any] | None = None) -> None:
        """Write the resume state (with ``rng``, the RNG state to resume with, if not now's).

        The step goes into both files; a second Ctrl-C waits until both are written.
        """
        self.saved_step = self.step
        if not self.is_main:
            return
        with self._stops.saving():
            ckpt.save_weights(self.model, self.run_dir / ckpt.LAST_FILE, step=self.step)
            ckpt.save_state(self._state(rng), self.run_dir / ckpt.STATE_FILE)
            if self.best is None:  # nothing evaluated yet: the last weights are the model
                ckpt.save_model_files(self.model, self.run_dir, self.model_name, self.model_config)

    def resume(self) -> None:
        state = ckpt.load_state(self.run_dir / ckpt.STATE_FILE)
        if state.get("model_config") != json.dumps(self.model_config, sort_keys=True):
            raise ConfigError(
                f"the model config differs from the one {self.run_dir} was trained with; "
                "resume with the same model settings (see its config.yaml)"
            )
        ckpt.load_weights(self.model, self.run_dir / ckpt.LAST_FILE, step=state["step"])
        self.optimizer.load_state_dict(state["optimizer"])
        ckpt.set_rng_state(state["rng"])
        if "scheduler" in state:  # state files before 2026-12 had none (the same function)
            changed = self.schedule.differs_from(state["scheduler"])
            if changed:
                note(
                    f"the learning-rate schedule changed on resume ({', '.join(changed)}); "
                    "the run is not the uninterrupted run of either schedule"
                )
            self.schedule.load_state_dict(state["scheduler"])
        self.step, self.best = state["step"], state["best"]
        self.kept_val = state.get("kept_val")  # state files before 2026-12-03 had none
        if isinstance(self.best, float):  # written before tasks chose how to compare
            self.best = {self.select_by: self.best}
        self.stale_evals, self.train_seconds = state["stale_evals"], state["train_seconds"]
        self.eval_seconds = state["eval_seconds"]
        self.saved_step = self.step
        self.log.truncate_after(self.step)

    # ----- evaluation -----

    def _autocast(self):
        return torch.autocast(self.device.type, self.dtype, enabled=self.dtype != torch.float32)

    def evaluate(self, split: str, final: bool = False) -> dict[str, float]:
        self.model.eval()
        measure = self.task.final_metrics if final else self.task.evaluate
        with torch.no_grad(), self._autocast():
            metrics = measure(self.model, split, self.cfg.eval_batch_size)
        self.model.train()
        return metrics

    def _evaluate_and_keep_best(self) -> bool:
        """Evaluate on validation; save the model if best. Returns True to stop early."""
        started = time.perf_counter()
        metrics = self.evaluate("val")
        self.eval_seconds += time.perf_counter() - started
        self.log.write(
            {
                "step": self.step,
                "split": "val",
                "train_seconds": round(self.train_seconds, 2),
                **metrics,
            }
        )
        value = metrics.get(self.select_by)
        if isinstance(value, float) and not math.isfinite(value):
            keep = progress = False  # a diverged model is never the best one
        else:
            keep, progress, self.best = self.task.select(metrics, self.best, self.select_by)
        if keep:
            self.kept_val = metrics
            if self.is_main:
                ckpt.save_model_files(self.model, self.run_dir, self.model_name, self.model_config)
        self.stale_evals = 0 if progress else self.stale_evals + 1
        self.log.plot(self.task.metric)
        patience = self.cfg.early_stopping_patience
        return patience > 0 and self.stale_evals >= patience

    # ----- training -----

    def _train_step(self) -> tuple[float, int]:
        cfg = self.cfg
        rng_at_start = ckpt.rng_state()  # a non-finite loss saves the state of this moment
        self.schedule.step_to(self.step)
        total_loss, count = torch.zeros((), device=self.device), 0
        for micro in range(cfg.grad_accum):
            batch = self.task.train_batch(
                self.step * cfg.grad_accum + micro, cfg.batch_size, cfg.seed
            )
            batch = _to_device(_shard(batch, self.rank, self.world), self.device)
            with self._autocast():
                loss = self.task.loss(self.train_module, batch) / cfg.grad_accum
            loss.backward()
            total_loss += loss.detach()
            count += self.task.batch_size_of(batch) * self.world
        if self.world > 1:
            dist.all_reduce(total_loss, op=dist.ReduceOp.AVG)
        total_loss = float(total_loss)
        if not math.isfinite(total_loss):
            self._stop_on_non_finite(total_loss, rng_at_start)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.task.after_step(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total_loss, count

    def _stop_on_non_finite(self, loss: float, rng_at_start: dict[str, Any]) -> None:
        """Keep the state before this step (nothing has changed it yet) and stop.

        The weights, optimizer and scheduler are still those of the step's start, and
        ``rng_at_start`` the RNG state then: a consistent checkpoint at ``self.step``,
        written unless one is on disk already (or the weights themselves are not finite).
        """
        self.optimizer.zero_grad(set_to_none=True)
        finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        if self.saved_step != self.step and finite:
            self.save_checkpoint(rng=rng_at_start)
        if self.saved_step is None:
            kept = "nothing is saved, as the weights are not finite either"
        else:
            when = "at its start" if self.saved_step == 0 else f"after step {self.saved_step}"
            kept = (
                f"the run is saved as it was {when} in {self.run_dir}: "
                f"resume it with a lower rate (archlab train --resume {self.run_dir} "
                f"--set trainer.lr={self.cfg.lr / 10:g}) or start again with one"
            )
        raise TrainingStopped(f"the loss became {loss} at step {self.step + 1}; {kept}")

    def fit(self) -> dict[str, dict[str, float]]:
        """Train to ``max_steps`` (or an early stop), then evaluate the kept model.

        Ctrl-C or SIGTERM stops at the end of the step under way, after saving a
        checkpoint, with ``KeyboardInterrupt``; a second one stops at once, the last
        checkpoint standing (see :class:`_StopRequests`).  During the final
        evaluation both stop at once: the checkpoint of the last step is on disk.
        """
        with _sigterm_as_interrupt():
            with self._stops.installed():
                self._fit()
            if self._stops.signal_name is not None:  # came after the last step's look
                raise KeyboardInterrupt  # the last step's checkpoint is on disk
            return self.final_results()

    def _stop_requested(self) -> bool:
        """Whether a signal asked to stop (on any rank: they stop at the same step)."""
        stop = self._stops.signal_name is not None
        if self.world > 1:
            flag = torch.tensor([float(stop)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        return stop

    def _fit(self) -> None:
        from tqdm import tqdm

        cfg = self.cfg
        self.model.train()
        bar = tqdm(
            total=self.max_steps,
            initial=self.step,
            disable=not self.progress,
            unit="step",
            dynamic_ncols=True,
        )
        window_start, window_count = time.perf_counter(), 0
        try:
            while self.step < self.max_steps:
                started = time.perf_counter()
                loss, count = self._train_step()
                self.train_seconds += time.perf_counter() - started
                window_count += count
                if self.step % cfg.log_every == 0 or self.step == self.max_steps:
                    rate = window_count / (time.perf_counter() - window_start)
                    lr = self.optimizer.param_groups[0]["lr"]
                    self.log.write(
                        {
                            "step": self.step,
                            "split": "train",
                            "loss": loss,
                            "lr": lr,
                            f"{self.task.unit}_per_s": rate,
                        }
                    )
                    bar.set_postfix(
                        loss=f"{loss:.4f}",
                        lr=f"{lr:.2e}",
                        **{f"{self.task.unit}/s": f"{rate:,.0f}"},
                    )
                    window_start, window_count = time.perf_counter(), 0
                bar.update(1)
                last = self.step == self.max_steps
                stop = False
                if self.step % self.plan.eval_every == 0 or last:
                    stop = self._evaluate_and_keep_best()
                if self.step % self.plan.checkpoint_every == 0 or last or stop:
                    self.save_checkpoint()
                if stop:
                    bar.write(
                        f"early stop at step {self.step}: no progress on validation "
                        f"in {cfg.early_stopping_patience} evaluations"
                    )
                    break
                if self._stop_requested():
                    if self.saved_step != self.step:
                        self.save_checkpoint()
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            bar.close()  # the checkpoint on disk is consistent: saved just now, or before
            self.log.plot(self.task.metric, force=True)
            self.log.close()
            raise
        except BaseException:
            bar.close()  # so that the error is printed on a line of its own
            self.log.close()
            raise
        bar.close()

    def _final_metrics(self, split: str) -> dict[str, float]:
        """The kept model's metrics on ``split`` for results.json.

        Validation metrics measured when the model was kept are those same weights'
        (evaluation is deterministic), so they are not measured again unless the task
        adds costly final metrics (:meth:`Task.final_metrics` overridden).
        """
        reuse = type(self.task).final_metrics is Task.final_metrics
        if split == "val" and reuse and self.kept_val is not None:
            return dict(self.kept_val)
        return self.evaluate(split, final=True)

    def final_results(self) -> dict[str, dict[str, float]]:
        """Evaluate the kept (best) model on every split and write results.json."""
        if self.world > 1:
            dist.barrier()  # rank 0 has written the best model
        ckpt.load_weights(self.model, self.run_dir / ckpt.MODEL_FILE)
        started = time.perf_counter()
        results = {split: self._final_metrics(split) for split in self.task.splits()}
        results["train"] = {
            "steps": self.step,
            "seconds": round(self.train_seconds, 2),
            "eval_seconds": round(self.eval_seconds, 2),
            "final_eval_seconds": round(time.perf_counter() - started, 2),
        }
        if self.is_main:
            self.log.write_results(results)
            self.log.plot(self.task.metric, force=True)
            self.log.close()
            self.task.report(self.model, self.run_dir)
        return results


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(b, device) for b in batch)
    return batch
