"""From a recipe to a run directory, and from a run directory back to a model.

Data flows one way: recipe -> task -> data -> model -> trainer -> run directory.

Fine-tuning: ``model.init_from=NAME_OR_DIR`` names a pretrained checkpoint to
start from (models with ``load_pretrained``, e.g. BERT): a registered checkpoint
(``archlab list checkpoints``; its files are checked against their SHA-256 first,
:mod:`archlab.data.pretrained`) or a Hugging Face checkpoint directory.  It sits in
the model section beside ``name``, not in the model's config, because it says
where the weights start, not what the model is; ``model.init_sha256``, beside it,
is the SHA-256 of the checkpoint's weights, which config.yaml records (given in a
recipe, it pins them: other weights are refused).  :func:`train` resolves it in
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

import dataclasses
import functools
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
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
    is_override,
    prefer_overrides,
    read_recipe,
    to_dataclass,
    yaml_text,
)
from archlab.console import note
from archlab.data.pretrained import (
    checkpoint_dir,
    get_checkpoint,
    is_checkpoint,
    list_checkpoints,
    weights_sha256,
)
from archlab.errors import CheckpointError, ConfigError
from archlab.io import atomic_write_text, to_json
from archlab.registry import list_models, model_entry
from archlab.tasks import Task, check_predict_options, describe_predictions, get_task
from archlab.train import Trainer, TrainerConfig, rundir
from archlab.train import checkpoint as ckpt
from archlab.train.trainer import (
    EXCLUSIVE,
    _rank_world,
    _sigterm_as_interrupt,
    init_process_group,
    resolve_device,
    resolve_precision,
)


@dataclass
class Recipe:
    """A recipe with every section checked and typed; the model config waits for the data."""

    task: Task
    model_name: str
    model_values: dict[str, Any]
    trainer: TrainerConfig
    # a registered checkpoint's name or a checkpoint directory (model.init_from), and the
    # SHA-256 of its weights (model.init_sha256: recorded; if given, required)
    init_from: str | None = None
    init_sha256: str | None = None

    def pretrained_model(self) -> nn.Module | None:
        """The model ``init_from`` holds, its tokenizer handed to the task; None without one.

        A registered checkpoint's files are verified first; the weights' SHA-256 must be
        ``init_sha256`` when that is set, and is recorded there otherwise.
        """
        if self.init_from is None:
            return None
        if is_checkpoint(self.init_from):
            directory = checkpoint_dir(self.init_from)  # every file checked, or a DataError
            digest = get_checkpoint(self.init_from).weights.sha256
        else:
            directory, digest = Path(self.init_from), None
        if (directory / "config.yaml").is_file():  # an archlab run: its kept model
            run = load(directory)
            if isinstance(run, RunGroup):
                raise ConfigError(
                    f"model.init_from {directory} holds a repeated run; name one member's directory"
                )
            pretrained = run.model
        else:
            pretrained = model_entry(self.model_name).model_cls.from_hf(directory)
        digest = digest or weights_sha256(directory)
        if self.init_sha256 is not None and digest != self.init_sha256:
            raise CheckpointError(
                f"the weights of {self.init_from} have SHA-256 {digest[:16]}..., not the "
                f"{self.init_sha256[:16]}... that model.init_sha256 requires (the checkpoint "
                "changed since the run started, or the recipe pins other weights)"
            )
        self.init_sha256 = digest
        self.task.use_checkpoint(directory)
        return pretrained

    def build_model(self, pretrained: nn.Module | None = None) -> tuple[nn.Module, dict]:
        """The model, with the fields the data decides (vocabulary size...) filled in.

        Given a ``pretrained`` model (:meth:`pretrained_model`), its architecture
        replaces the recipe's and its weights are copied in.
        """
        entry = model_entry(self.model_name)
        overrides = self.task.model_overrides()
        assert overrides.keys() == self.task.derived_model_keys.keys(), self.task.name
        # a task that trains models of several roles derives each one's fields (the
        # spoken-digit task: in_dim for a sequence model, input_size for a CNN)
        fields = {f.name for f in dataclasses.fields(entry.config_cls)}
        overrides = {key: value for key, value in overrides.items() if key in fields}
        values = {**entry.defaults, **self.model_values, **overrides}
        config = to_dataclass(entry.config_cls, values, "model")
        if pretrained is None:
            return entry.model_cls(config), asdict(config)
        kept = getattr(pretrained, "PRETRAINED_FIELDS", ())
        if not kept or not set(kept) <= fields:
            raise ConfigError(
                f"model.init_from {self.init_from} holds a {type(pretrained).__name__}, "
                f"which cannot start a {self.model_name} (a model of the same architecture can)"
            )
        fixed = {f: getattr(pretrained.config, f) for f in kept}
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
        start = {}
        if self.init_from is not None:
            start = {"init_from": self.init_from, "init_sha256": self.init_sha256}
        unused = self.task.unused_trainer_keys
        return {
            "task": {"name": self.task.name},
            "data": as_plain(self.task.data),
            "model": {"name": self.model_name, **start, **model_config},
            "trainer": {k: v for k, v in as_plain(self.trainer).items() if k not in unused},
        }


def resolve(raw: dict[str, dict], *, run_config: bool = False) -> Recipe:
    """Check and type every section of ``raw``, a recipe (after ``--set``).

    ``run_config``: ``raw`` is a run directory's config.yaml, whose model section holds
    the fields the task derived from the data; only ``--set`` may not change them.
    """
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
    model_values = _swapped_model_values(model_values, model_name, entry)
    if entry.role not in task_cls.roles:
        fitting = [n for n in list_models() if model_entry(n).role in task_cls.roles]
        raise ConfigError(
            f"the {task_cls.name} task trains a {' or '.join(r.__name__ for r in task_cls.roles)}"
            f", and model {model_name} is a {entry.role.__name__}; models that fit: "
            f"{', '.join(fitting)}"
        )
    for key, source in task_cls.derived_model_keys.items():
        if key in model_values and (not run_config or is_override(model_values[key])):
            raise ConfigError(derived_key_message(task_cls, key, source))
    unused = sorted(set(raw["trainer"]) & set(task_cls.unused_trainer_keys))
    if unused:
        raise ConfigError(
            f"trainer.{unused[0]} means nothing to the {task_cls.name} task: "
            f"{task_cls.unused_trainer_keys[unused[0]]}; remove it"
        )
    init_from = coerce(model_values.pop("init_from", None), str | None, "model.init_from")
    init_sha256 = coerce(model_values.pop("init_sha256", None), str | None, "model.init_sha256")
    if init_from is not None:
        if not hasattr(entry.model_cls, "load_pretrained"):
            raise ConfigError(
                f"model {model_name} cannot start from a pretrained checkpoint (model.init_from)"
            )
        init_from = _checkpoint_name_or_dir(init_from)
    elif init_sha256 is not None:
        raise ConfigError("model.init_sha256 pins the weights of model.init_from, which is unset")
    if init_sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", init_sha256):
        raise ConfigError(
            f"model.init_sha256 must be 64 lower-case hexadecimal digits, got {init_sha256!r}"
        )
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
        init_sha256=init_sha256,
    )


def _checkpoint_name_or_dir(value: str) -> str:
    """A registered checkpoint's name as it is; a directory as an absolute path (so that
    config.yaml works from anywhere).  A name that is neither is refused."""
    if is_checkpoint(value):
        return value
    path = Path(value).expanduser()
    if not path.exists() and len(path.parts) == 1:
        raise ConfigError(
            f"model.init_from {value!r} is neither a registered checkpoint (known: "
            f"{', '.join(list_checkpoints())}; see `archlab list checkpoints`) nor a directory"
        )
    return str(path.resolve())


def _swapped_model_values(values: dict[str, Any], name: Any, entry) -> dict[str, Any]:
    """The recipe's model keys for a model swapped in with ``--set model.name=...``.

    The recipe's keys that the new model does not have (a TCN's ``channels`` for an
    LSTM) are dropped with a note; keys given with ``--set`` are always kept, and
    checked.
    """
    if not is_override(name):
        return values
    fields = {f.name for f in dataclasses.fields(entry.config_cls)} | {"init_from", "init_sha256"}
    foreign = sorted(k for k, v in values.items() if k not in fields and not is_override(v))
    if foreign:
        note(f"model.name={name}: the recipe's model.{', model.'.join(foreign)} do not apply")
    return {k: v for k, v in values.items() if k not in foreign}


def derived_key_message(task_cls: type[Task], key: str, source: str) -> str:
    if source.startswith("data."):
        data_key = source.split()[0]
        return (
            f"model.{key} comes from {source} in the {task_cls.name} task; set {data_key} "
            f"instead of model.{key}"
        )
    return f"model.{key} comes from the data in the {task_cls.name} task ({source}); remove it"


def train(
    recipe_name: str | None,
    overrides: list[str],
    *,
    out: str | None = None,
    resume: str | None = None,
    progress: bool = True,
) -> tuple[Path, dict]:
    """Train a recipe (or resume a run) and return the run directory and its results.

    The run directory is held by this process until it returns (:mod:`archlab.train.rundir`);
    under torchrun, rank 0 holds it for all ranks.
    """
    rank, world = _rank_world()
    claim = None
    if rank == 0:
        if resume:
            _run_file(Path(resume), "config.yaml")
            claim = rundir.claim_existing(Path(resume))
        else:
            claim = rundir.claim_new(Path(out) if out else None, recipe_name)
    run_dir = claim.run_dir if claim else Path(resume or out or "")
    try:
        with _sigterm_as_interrupt():  # so that `kill` lets the run directory go
            return _train(
                recipe_name, overrides, run_dir, resume=resume, out=out, progress=progress
            )
    except KeyboardInterrupt as exc:
        if rank == 0 and (run_dir / "config.yaml").is_file():  # else nothing to resume
            raise RunInterrupted(run_dir) from exc
        raise
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        if claim is not None:
            claim.release()


def _train(
    recipe_name: str | None,
    overrides: list[str],
    run_dir: Path,
    *,
    resume: str | None,
    out: str | None,
    progress: bool,
) -> tuple[Path, dict]:
    """:func:`train`, in a run directory this process holds (or rank 0 does)."""
    rank, world = _rank_world()
    raw = read_run_config(run_dir) if resume else read_recipe(recipe_name)
    recipe = resolve(apply_overrides(raw, overrides), run_config=bool(resume))
    device = resolve_device(recipe.trainer.device)  # fail before reading data if it is absent
    if world > 1 and not (resume or out) and recipe.task.data_parallel:
        run_dir = _rank0_path(run_dir, rank, device)  # the default name rank 0 chose
    recipe.task.prepare(functools.partial(train, progress=progress))
    pretrained = recipe.pretrained_model()
    recipe.task.setup()
    torch.manual_seed(recipe.trainer.seed)
    model, model_config = recipe.build_model(pretrained)
    del pretrained  # its weights are in the model now
    trainer = Trainer(
        recipe.task,
        model,
        recipe.trainer,
        run_dir,
        recipe.model_name,
        model_config,
        progress=progress,
    )
    if resume and (run_dir / ckpt.STATE_FILE).exists():
        trainer.resume()
    elif resume:  # the run failed before its first checkpoint: there is nothing to continue
        note(f"{run_dir} has no checkpoint yet, so it trains afresh from its config.yaml")
        trainer.log.truncate_after(-1)
    recipe.trainer = trainer.cfg  # with precision auto resolved to what the trainer chose
    if trainer.is_main:
        dump_yaml(recipe.resolved(model_config), run_dir / "config.yaml")
        recipe.task.save_artifacts(run_dir)
    return run_dir, trainer.fit()


def baseline(
    recipe_name: str,
    overrides: list[str],
    method: str,
    *,
    out: str | None = None,
    folds: int | None = None,
) -> tuple[Path, dict]:
    """Score the task's baseline ``method`` on the recipe's data; results.json into a directory.

    The recipe's trainer section is checked but unused: a baseline trains no network.
    Its ``model.init_from``, if set, is loaded (and verified) for baselines on a frozen
    pretrained network.  With ``folds``, the baseline is scored on each of that many
    folds (data.fold 0..folds-1) and results.json aggregates them as ``train --folds``
    does.  The directory holds only results.json (``archlab eval`` has no model to load).
    """
    if folds is not None:
        overrides = [*overrides, f"data.folds={folds}"]
    recipe = resolve(apply_overrides(read_recipe(recipe_name), overrides))
    task = recipe.task
    if method not in task.baselines:
        has = ", ".join(task.baselines) or "none"
        raise ConfigError(f"the {task.name} task has no baseline {method!r} (its baselines: {has})")
    if folds is not None and "fold" not in task.data_keys():
        raise ConfigError(f"the {task.name} task has no data.fold, so --folds has nothing to vary")
    pretrained = recipe.pretrained_model()
    claim = rundir.claim_new(Path(out) if out else None, f"{Path(recipe_name).stem}-{method}")
    try:
        if folds is None:
            task.setup()
            results = task.run_baseline(method, pretrained)
            results["baseline"]["data"] = as_plain(task.data)
        else:
            runs = []
            for fold in range(folds):  # one task: what it caches (embeddings) serves every fold
                task.data = replace(task.data, fold=fold)
                task.setup()
                runs.append(task.run_baseline(method, pretrained))
            results = aggregate(runs)
            results["repeats"] = {"key": "data.fold", "values": list(range(folds))}
            results["baseline"] = {
                **{k: v for k, v in runs[0]["baseline"].items() if k not in ("C",)},
                "folds": [r["baseline"] for r in runs],
                "data": {**as_plain(task.data), "fold": None},
            }
        if recipe.init_from is not None:
            results["baseline"]["init_from"] = recipe.init_from
            results["baseline"]["init_sha256"] = recipe.init_sha256
        atomic_write_text(claim.run_dir / "results.json", to_json(results, indent=2) + "\n")
        return claim.run_dir, results
    finally:
        claim.release()


def _rank0_path(path: Path, rank: int, device: torch.device) -> Path:
    """Rank 0's ``path``, for every rank (it joins the process group the Trainer uses)."""
    init_process_group(device)
    shared = [str(path) if rank == 0 else None]
    torch.distributed.broadcast_object_list(shared, src=0)
    return Path(shared[0])


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a training; ``run_dir`` holds it, saved, for ``--resume``."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


# how a repeated run began, in its directory, so that ``--resume RUN_DIR`` continues it: the
# recipe as it was read (a recipe file) and the call's overrides and repeats
REPEATS_FILE, REPEATS_RECIPE = "repeats.json", "recipe.yaml"


def is_repeated(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a repeated training that ``resume_repeats`` can continue."""
    return (Path(run_dir) / REPEATS_FILE).is_file()


@dataclass
class Repeats:
    """How a repeated training began (REPEATS_FILE): its recipe file, overrides, repeats."""

    recipe_file: Path
    overrides: list[str]
    key: str
    label: str
    values: list[int]

    def recipe(self) -> dict[str, dict]:
        """The recipe as the training began, with its overrides."""
        return apply_overrides(read_recipe(str(self.recipe_file)), self.overrides)


def read_repeats(run_dir: str | Path) -> Repeats:
    """``run_dir``'s REPEATS_FILE, checked; one sentence if it cannot be read as one."""
    run_dir = Path(run_dir)
    try:
        spec = json.loads((run_dir / REPEATS_FILE).read_text("utf-8"))
        repeats = Repeats(
            run_dir / REPEATS_RECIPE,
            [str(o) for o in spec["overrides"]],
            str(spec["key"]),
            str(spec["label"]),
            [int(v) for v in spec["values"]],
        )
        repeats.recipe()
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(
            f"{run_dir / REPEATS_FILE} (or {REPEATS_RECIPE} beside it) cannot be read as the "
            f"start of a repeated training: {exc}"
        ) from None
    return repeats


def resume_repeats(run_dir: str | Path, progress: bool = True) -> tuple[Path, dict]:
    """Continue a repeated training as it began: finished runs are read back, the stopped
    one resumes, the others train from the recipe as it was when the training began."""
    repeats = read_repeats(run_dir)
    return train_repeats(
        str(repeats.recipe_file),
        repeats.overrides,
        key=repeats.key,
        values=repeats.values,
        label=repeats.label,
        out=str(run_dir),
        progress=progress,
        keep_finished=True,
    )


def train_repeats(
    recipe_name: str,
    overrides: list[str],
    *,
    key: str,
    values: list[int],
    label: str,
    out: str | None = None,
    progress: bool = True,
    keep_finished: bool = False,
) -> tuple[Path, dict]:
    """Train once per value of ``key`` (seeds, folds) into RUN_DIR/LABEL-VALUE; aggregate.

    RUN_DIR/results.json holds, per split and metric, the mean under the metric's
    name, the standard deviation under NAME_std and the per-run values under NAME_runs;
    and under ``repeats`` what varied, with each run's data.split_seed where it has one.

    ``keep_finished``: ``out`` may hold the runs of an earlier call with the same
    arguments (``archlab tune`` continuing, ``resume_repeats``); a run that finished (it
    has results.json) is read, not trained again, and one that was stopped continues as
    ``--resume`` does, from its own config.yaml.

    A new RUN_DIR first gets REPEATS_FILE and REPEATS_RECIPE, so that ``resume_repeats``
    continues it after Ctrl-C (:class:`RunInterrupted`, naming RUN_DIR); they go again if
    the call stops before any run began (a bad --set), as the directory then does.
    """
    rank, world = _rank_world()
    if world > 1 and not out:
        raise ConfigError(
            "under torchrun, repeated runs need a directory all processes agree on: give --out"
        )
    claim = None
    if rank == 0 and keep_finished and out and Path(out).is_dir():
        claim = rundir.claim_existing(Path(out))
    elif rank == 0:
        claim = rundir.claim_new(Path(out) if out else None, recipe_name)
    run_dir = claim.run_dir if claim else Path(out)
    try:
        if rank == 0 and not is_repeated(run_dir):
            spec = {"recipe": recipe_name, "overrides": overrides, "key": key, "label": label,
                    "values": values}  # fmt: skip
            atomic_write_text(run_dir / REPEATS_RECIPE, yaml_text(read_recipe(recipe_name)))
            atomic_write_text(run_dir / REPEATS_FILE, to_json(spec, indent=2) + "\n")
        runs, split_seeds = [], []
        for value in values:
            one_run = run_dir / f"{label}-{value}"
            if keep_finished and (one_run / "results.json").is_file():
                results = json.loads((one_run / "results.json").read_text("utf-8"))
            elif keep_finished and (one_run / "config.yaml").is_file():
                one_run, results = train(None, [], resume=str(one_run), progress=progress)
            else:
                one_run, results = train(
                    recipe_name,
                    [*overrides, f"{key}={value}"],
                    out=str(one_run),
                    progress=progress,
                )
            runs.append(results)
            config = read_recipe(str(one_run / "config.yaml"))
            split_seeds.append(config["data"].get("split_seed"))
        aggregated = aggregate(runs)
        aggregated["repeats"] = {"key": key, "values": values}
        if any(seed is not None for seed in split_seeds):
            aggregated["repeats"]["split_seeds"] = split_seeds
        if rank == 0:
            atomic_write_text(run_dir / "results.json", to_json(aggregated, indent=2) + "\n")
        return run_dir, aggregated
    except BaseException as exc:
        if rank == 0 and not any((run_dir / f"{label}-{v}/config.yaml").is_file() for v in values):
            for name in (REPEATS_FILE, REPEATS_RECIPE):  # no run began: nothing to resume
                (run_dir / name).unlink(missing_ok=True)  # (and a directory it made goes)
        elif rank == 0 and isinstance(exc, KeyboardInterrupt):
            raise RunInterrupted(run_dir) from exc
        raise
    finally:
        if claim is not None:
            claim.release()


def aggregate(runs: list[dict]) -> dict:
    out: dict = {}
    for split in ("val", "test"):
        metrics = [r[split] for r in runs if split in r]
        if not metrics:
            continue
        out[split] = {}
        for name in metrics[0]:
            values = torch.tensor(  # a non-finite figure is null in a results.json read back
                [math.nan if m[name] is None else m[name] for m in metrics], dtype=torch.float64
            )
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

    @property
    def verbs(self) -> frozenset[str]:
        """What this run can do (:meth:`archlab.tasks.Task.model_verbs`): predict, embed..."""
        return self.task.model_verbs(self.model)

    def predict(self, inputs: list[str], **options: Any) -> list[dict[str, Any]]:
        """The task's prediction for each input (:meth:`archlab.tasks.Task.predict`)."""
        return self.task.predict(self.model, inputs, **options)

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Sentence embeddings (len(texts), dim) (:meth:`archlab.tasks.Task.embed`)."""
        if "embed" not in self.verbs:
            raise ConfigError(f"{self.run_dir} holds a run that cannot embed")
        with torch.inference_mode():
            return self.task.embed(self.model, texts)


# the member directories of a repeated run: LABEL-VALUE, by the key that varied
REPEAT_LABELS = {"trainer.seed": "seed", "data.fold": "fold", "data.split_seed": "split"}


@dataclass
class RunGroup:
    """A repeated run (``train --seeds/--folds/--splits``): one member run per value.

    ``evaluate`` evaluates every member, each on its own data (a fold's test set, a
    split seed's split), and aggregates the way results.json does; ``predict`` is the
    members' ensemble: the mean class probability or value, with the standard
    deviation across members beside it.  Members load on first use.
    """

    run_dir: Path
    key: str  # what varied: trainer.seed, data.fold or data.split_seed
    values: list[int]
    member_dirs: list[Path]
    _loaded: dict[int, LoadedRun] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        """What a member is called: seed, fold or split."""
        return REPEAT_LABELS.get(self.key, self.key)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def members(self) -> list[LoadedRun]:
        """Every member run, loaded, in the order trained."""
        return [self._load(i) for i in range(len(self.values))]

    def _load(self, i: int) -> LoadedRun:
        if i not in self._loaded:
            self._loaded[i] = load_run(self.member_dirs[i])
        return self._loaded[i]

    def member(self, which: int | str) -> LoadedRun:
        """The member run of a value of the key (seed 2, fold 3) or directory name (seed-2)."""
        text = str(which).strip()
        for i, (value, path) in enumerate(zip(self.values, self.member_dirs, strict=True)):
            if text in (str(value), path.name):
                return self._load(i)
        raise ConfigError(
            f"{self.run_dir} has no member {text!r}; its runs are {self.label} "
            f"{', '.join(map(str, self.values))} (give --member one of these values)"
        )

    def task_class(self) -> type[Task]:
        """The members' task class, from the first member's config (no model is loaded)."""
        return get_task(str(read_run_config(self.member_dirs[0])["task"]["name"]))

    def evaluate(self, split: str) -> dict[str, float | list[float]]:
        """Every member's metrics on its own ``split``: NAME (mean), NAME_std and NAME_runs."""
        return aggregate([{split: run.evaluate(split)} for run in self.members])[split]

    def predict(self, inputs: list[str], **options: Any) -> list[dict[str, Any]]:
        """The members' mean prediction per input, with the spread across them (``*_std``);
        for a query (link prediction), the ranking by the members' mean score."""
        members = self.members
        task = members[0].task
        if task.predicts == "query":
            return task.predict_ensemble([run.model for run in members], inputs, **options)
        check_predict_options(type(task), options)
        scores = [run.task.predict_scores(run.model, inputs) for run in members]
        return describe_predictions(task.prediction_labels(), scores)


def load(run_dir: str | Path) -> LoadedRun | RunGroup:
    """What a run directory holds: a :class:`LoadedRun`, or for a repeated run a :class:`RunGroup`.

    A run is its trained model (in eval mode) and its task.  A directory that
    ``train --seeds/--folds/--splits`` wrote holds one run per value; ``load`` gives
    them as a group (``group.members``, ``group.member(2)``), which evaluates and
    predicts like one run.
    """
    run_dir = Path(run_dir)
    if run_dir.is_dir() and not (run_dir / "config.yaml").exists():
        group = load_group(run_dir)
        if group is not None:
            return group
    return load_run(run_dir)


def load_run(run_dir: str | Path) -> LoadedRun:
    """The trained model (in eval mode) and its task, from one run's directory."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    recipe = resolve(config, run_config=True)
    model = ckpt.load_model(run_dir)
    recipe.task.load_artifacts(run_dir)
    return LoadedRun(model, recipe.task, recipe.trainer, config, run_dir)


def load_group(run_dir: str | Path) -> RunGroup | None:
    """The repeated run in ``run_dir`` (results.json names its ``repeats``); None if none."""
    run_dir = Path(run_dir)
    try:
        repeats = json.loads((run_dir / "results.json").read_text("utf-8"))["repeats"]
        key, values = str(repeats["key"]), [int(v) for v in repeats["values"]]
    except FileNotFoundError:
        started = sorted(p.name for p in run_dir.glob("*-*") if (p / "config.yaml").is_file())
        if started:
            finish = (f"continue it with `archlab train --resume {run_dir}`, or "
                      if is_repeated(run_dir) else "")  # fmt: skip
            raise CheckpointError(
                f"{run_dir} holds the runs {', '.join(started)} of a repeated training that did "
                f"not finish (it has no results.json); {finish}give one of them, e.g. "
                f"{run_dir / started[0]}"
            ) from None
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    label = REPEAT_LABELS.get(key)
    dirs = [run_dir / f"{label}-{value}" for value in values]
    missing = [d.name for d in dirs if not (d / "config.yaml").is_file()]
    if label is None or missing or not values:
        raise CheckpointError(
            f"{run_dir} holds a repeated run over {key} whose member directories "
            f"({', '.join(missing) or 'none'}) are missing"
        )
    return RunGroup(run_dir, key, values, dirs)


def read_run_config(run_dir: Path) -> dict[str, dict]:
    """A run directory's config.yaml, with the keys of today's archlab (:mod:`archlab.compat`)."""
    return upgrade_config(read_recipe(str(_run_file(run_dir, "config.yaml"))))
