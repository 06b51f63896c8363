"""From a recipe to a run directory, and from a run directory back to a model.

Data flows one way: recipe -> task -> data -> model -> trainer -> run directory.

Fine-tuning: ``model.init_from=DIR`` names a pretrained Hugging Face checkpoint
directory to start from (models with ``load_pretrained``, e.g. BERT).  It sits in
the model section beside ``name``, not in the model's config, because it says
where the weights start, not what the model is.  :func:`train` resolves it in
three steps, keeping the one-way flow: the model class reads the checkpoint
(``from_hf``, which refuses anything it cannot load); the task takes what the
checkpoint fixes for the data (:meth:`~archlab.tasks.Task.use_checkpoint`: its
tokenizer) before reading the data; :meth:`Recipe.build_model` takes the
checkpoint's architecture (``PRETRAINED_FIELDS``, overriding the recipe's sizes,
which it says on stderr), the task's fields (the classes), the recipe's others
(dropout, heads), and copies in the pretrained weights.  The run directory then
holds everything inference needs; ``load`` never reads DIR again (``--resume``
does, to rebuild the same model).
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archlab.compat import upgrade_config
from archlab.config import (
    apply_overrides,
    as_plain,
    coerce,
    dump_yaml,
    prefer_overrides,
    read_recipe,
    to_dataclass,
)
from archlab.console import note
from archlab.errors import CheckpointError, ConfigError
from archlab.io import atomic_write_text
from archlab.registry import list_models, model_entry
from archlab.tasks import Task, get_task
from archlab.train import Trainer, TrainerConfig
from archlab.train import checkpoint as ckpt
from archlab.train.trainer import EXCLUSIVE, resolve_device, resolve_precision


@dataclass
class Recipe:
    """A recipe with every section checked and typed; the model config waits for the data."""

    task: Task
    model_name: str
    model_values: dict[str, Any]
    trainer: TrainerConfig
    init_from: str | None = None  # a pretrained checkpoint directory (model.init_from)

    def pretrained_model(self) -> nn.Module | None:
        """The model ``init_from`` holds, its tokenizer handed to the task; None without one."""
        if self.init_from is None:
            return None
        pretrained = model_entry(self.model_name).model_cls.from_hf(self.init_from)
        self.task.use_checkpoint(Path(self.init_from))
        return pretrained

    def build_model(self, pretrained: nn.Module | None = None) -> tuple[nn.Module, dict]:
        """The model, with the fields the data decides (vocabulary size...) filled in.

        Given a ``pretrained`` model (:meth:`pretrained_model`), its architecture
        replaces the recipe's and its weights are copied in.
        """
        entry = model_entry(self.model_name)
        overrides = self.task.model_overrides()
        values = {**entry.defaults, **self.model_values, **overrides}
        config = to_dataclass(entry.config_cls, values, "model")
        if pretrained is None:
            return entry.model_cls(config), asdict(config)
        fixed = {f: getattr(pretrained.config, f) for f in pretrained.PRETRAINED_FIELDS}
        for key, value in overrides.items():
            if key in fixed and fixed[key] != value:
                raise CheckpointError(
                    f"the task needs model.{key}={value}, but the checkpoint {self.init_from} "
                    f"has {key}={fixed[key]}"
                )
        changed = [
            f"{key} {getattr(config, key)} -> {value}"
            for key, value in fixed.items()
            if key in self.model_values and getattr(config, key) != value
        ]
        config = replace(config, **fixed)
        model = entry.model_cls(config)
        fresh = model.load_pretrained(pretrained)
        note(
            f"model.init_from: weights and architecture from {self.init_from}"
            + (f" (overriding the recipe's {', '.join(changed)})" if changed else "")
            + (f"; new: {', '.join(fresh)}" if fresh else "")
        )
        return model, asdict(config)

    def resolved(self, model_config: dict) -> dict:
        start = {} if self.init_from is None else {"init_from": self.init_from}
        unused = self.task.unused_trainer_keys
        return {
            "task": {"name": self.task.name},
            "data": as_plain(self.task.data),
            "model": {"name": self.model_name, **start, **model_config},
            "trainer": {k: v for k, v in as_plain(self.trainer).items() if k not in unused},
        }


def resolve(raw: dict[str, dict]) -> Recipe:
    task_name = raw["task"].get("name")
    if not task_name:
        raise ConfigError("the recipe's task section needs a name (task.name)")
    extra = set(raw["task"]) - {"name"}
    if extra:
        raise ConfigError(f"unknown key task.{sorted(extra)[0]} (the task section has only name)")
    task_cls = get_task(str(task_name))
    model_values = dict(raw["model"])
    model_name = model_values.pop("name", None)
    if not model_name:
        raise ConfigError("the recipe's model section needs a name (model.name)")
    entry = model_entry(str(model_name))
    if entry.role not in task_cls.roles:
        fitting = [n for n in list_models() if model_entry(n).role in task_cls.roles]
        raise ConfigError(
            f"the {task_cls.name} task trains a {' or '.join(r.__name__ for r in task_cls.roles)}"
            f", and model {model_name} is a {entry.role.__name__}; models that fit: "
            f"{', '.join(fitting)}"
        )
    unused = sorted(set(raw["trainer"]) & set(task_cls.unused_trainer_keys))
    if unused:
        raise ConfigError(
            f"trainer.{unused[0]} means nothing to the {task_cls.name} task: "
            f"{task_cls.unused_trainer_keys[unused[0]]}; remove it"
        )
    init_from = coerce(model_values.pop("init_from", None), str | None, "model.init_from")
    if init_from is not None:
        if not hasattr(entry.model_cls, "load_pretrained"):
            raise ConfigError(
                f"model {model_name} cannot start from a pretrained checkpoint (model.init_from)"
            )
        init_from = str(Path(init_from).expanduser().resolve())  # config.yaml works from anywhere
    to_dataclass(entry.config_cls, {**entry.defaults, **model_values}, "model")  # check early
    trainer_values = prefer_overrides(raw["trainer"], EXCLUSIVE)
    trainer = to_dataclass(TrainerConfig, trainer_values, "trainer")
    rules = task_cls.selection_rules()
    if trainer.select_by is not None and trainer.select_by not in rules:
        raise ConfigError(
            f"trainer.select_by must be one of {', '.join(rules)} for the {task_cls.name} task, "
            f"got {trainer.select_by!r}"
        )
    task = task_cls(to_dataclass(task_cls.DataConfig, raw["data"], "data"))
    task.use_seed(trainer.seed)
    return Recipe(
        task=task,
        model_name=str(model_name),
        model_values=model_values,
        trainer=trainer,
        init_from=init_from,
    )


def default_run_dir(recipe_name: str) -> Path:
    stem = Path(recipe_name).stem
    return Path("runs") / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def train(
    recipe_name: str | None,
    overrides: list[str],
    *,
    out: str | None = None,
    resume: str | None = None,
    progress: bool = True,
) -> tuple[Path, dict]:
    """Train a recipe (or resume a run) and return the run directory and its results."""
    if resume:
        run_dir = Path(resume)
        raw = read_run_config(run_dir)
    else:
        run_dir = Path(out) if out else default_run_dir(recipe_name)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(
                f"{run_dir} already holds files; choose another --out, or continue it with "
                f"--resume {run_dir}"
            )
        raw = read_recipe(recipe_name)
    recipe = resolve(apply_overrides(raw, overrides))
    resolve_device(recipe.trainer.device)  # fail before reading data if the device is absent
    recipe.task.prepare(functools.partial(train, progress=progress))
    pretrained = recipe.pretrained_model()
    recipe.task.setup()
    torch.manual_seed(recipe.trainer.seed)
    model, model_config = recipe.build_model(pretrained)
    del pretrained  # its weights are in the model now
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        recipe.task,
        model,
        recipe.trainer,
        run_dir,
        recipe.model_name,
        model_config,
        progress=progress,
    )
    if resume:
        trainer.resume()
    recipe.trainer = trainer.cfg  # with precision auto resolved to what the trainer chose
    if trainer.is_main:
        dump_yaml(recipe.resolved(model_config), run_dir / "config.yaml")
        recipe.task.save_artifacts(run_dir)
    try:
        return run_dir, trainer.fit()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def train_repeats(
    recipe_name: str,
    overrides: list[str],
    *,
    key: str,
    values: list[int],
    label: str,
    out: str | None = None,
    progress: bool = True,
) -> tuple[Path, dict]:
    """Train once per value of ``key`` (seeds, folds) into RUN_DIR/LABEL-VALUE; aggregate.

    RUN_DIR/results.json holds, per split and metric, the mean under the metric's
    name, the standard deviation under NAME_std and the per-run values under NAME_runs;
    and under ``repeats`` what varied, with each run's data.split_seed where it has one.
    """
    run_dir = Path(out) if out else default_run_dir(recipe_name)
    runs, split_seeds = [], []
    for value in values:
        one_run, results = train(
            recipe_name,
            [*overrides, f"{key}={value}"],
            out=str(run_dir / f"{label}-{value}"),
            progress=progress,
        )
        runs.append(results)
        split_seeds.append(read_recipe(str(one_run / "config.yaml"))["data"].get("split_seed"))
    aggregated = aggregate(runs)
    aggregated["repeats"] = {"key": key, "values": values}
    if any(seed is not None for seed in split_seeds):
        aggregated["repeats"]["split_seeds"] = split_seeds
    atomic_write_text(run_dir / "results.json", json.dumps(aggregated, indent=2) + "\n")
    return run_dir, aggregated


def aggregate(runs: list[dict]) -> dict:
    out: dict = {}
    for split in ("val", "test"):
        metrics = [r[split] for r in runs if split in r]
        if not metrics:
            continue
        out[split] = {}
        for name in metrics[0]:
            values = torch.tensor([m[name] for m in metrics], dtype=torch.float64)
            out[split][name] = values.mean().item()
            out[split][f"{name}_std"] = values.std().item() if len(values) > 1 else 0.0
            out[split][f"{name}_runs"] = values.tolist()
    seconds = [r["train"]["seconds"] for r in runs if "train" in r]
    out["train"] = {"runs": len(runs), "seconds": round(sum(seconds), 2)}
    return out


def _run_file(run_dir: Path, name: str) -> Path:
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory")
    if not (run_dir / name).is_file():
        raise CheckpointError(f"{run_dir} is not an archlab run directory (it has no {name})")
    return run_dir / name


@dataclass
class LoadedRun:
    model: nn.Module
    task: Task
    trainer: TrainerConfig
    config: dict
    run_dir: Path

    def evaluate(self, split: str) -> dict[str, float]:
        """Metrics on ``split``, computed as the run's own final evaluation computed them."""
        if split not in self.task.splits():
            raise ConfigError(
                f"this task has no {split!r} split; choose one of {', '.join(self.task.splits())}"
            )
        self.task.setup()
        dtype = resolve_precision(self.trainer.precision, torch.device("cpu"))
        with torch.no_grad(), torch.autocast("cpu", dtype, enabled=dtype != torch.float32):
            return self.task.final_metrics(self.model, split, self.trainer.eval_batch_size)


def load(run_dir: str | Path) -> LoadedRun:
    """The trained model (in eval mode) and its task, from a run directory."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    recipe = resolve(config)
    model = ckpt.load_model(run_dir)
    recipe.task.load_artifacts(run_dir)
    return LoadedRun(model, recipe.task, recipe.trainer, config, run_dir)


def read_run_config(run_dir: Path) -> dict[str, dict]:
    """A run directory's config.yaml, with the keys of today's archlab (:mod:`archlab.compat`)."""
    return upgrade_config(read_recipe(str(_run_file(run_dir, "config.yaml"))))
