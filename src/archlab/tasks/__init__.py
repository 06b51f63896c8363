"""Tasks: a task knows its data, its loss, its metrics and how to use a trained model.

A task names the model roles it trains (:mod:`archlab.models.roles`), the verbs a
trained run of it supports (``generate``, ``translate``, ``predict``, ``sample``,
``embed``),
and how to judge validation results.  The Trainer sees only
``train_batch(step, ...)`` and ``loss(model, batch)``.
Batches are a pure function of (seed, step), so a resumed run draws exactly the
batches an uninterrupted one would, and data-parallel ranks can each take their
rows of the same global batch.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from archlab.errors import ArchlabError, ConfigError
from archlab.registry import unknown_name_message


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, also when the Trainer has wrapped it in DistributedDataParallel."""
    return getattr(model, "module", model)


# metrics for which a larger value is better; every other metric is minimised
HIGHER_IS_BETTER = frozenset({"accuracy", "bleu", "mrr", "hits@1", "hits@3", "hits@10"})
# what a trained run can be asked to do from the command line (and the server)
VERBS = ("generate", "translate", "predict", "sample", "embed")
# options of ``archlab predict`` that only some tasks take (Task.predict_options), and
# how the command line spells them
PREDICT_OPTIONS = {"side": "--head / --tail", "top_k": "--top-k"}
# the kinds of :attr:`Task.predict_inputs` that are files (the server takes them as
# uploads); every other input is text (a sentence, a SMILES, a date, an entity's name)
FILE_INPUTS = {"IMAGE": "image", "AUDIO": "audio"}


class Selection(NamedTuple):
    """What a validation result means to the Trainer (see :meth:`Task.select`)."""

    keep: bool  # keep this model as the best so far
    progress: bool  # counts as progress: resets early stopping's patience
    best: dict[str, float]  # the best values to compare the next result with


class Task(ABC):
    """Base class; subclasses set the class variables and implement the methods.

    A task's verbs (``verbs``) are methods of the task with these signatures:
        generate(model, prompt, max_new_tokens, temperature, top_k, top_p, seed) -> text
            (and generate_stream(...), the same text piece by piece as it is sampled)
        translate(model, text, beam) -> text
        predict(model, inputs: list[str], **options) -> one dict per input, e.g.
            {"label": "positive", "probability": 0.93} or {"value": -0.77}, or
            {"error": "why this input cannot be predicted"}; a task implements
            predict_scores and prediction_labels, and :meth:`predict` describes them.
            A task whose ``predicts`` is "query" reads its inputs together as one query
            and answers with one dict holding a ``ranking`` (link prediction); its
            ``predict_options`` name the options it takes (:data:`PREDICT_OPTIONS`), and
            ``predict_ensemble(models, inputs, **options)`` answers for several models.
        sample(model, out, n, seed) -> the layout of the PNG grid written to ``out``
        embed(model, texts: list[str]) -> sentence embeddings, a (len(texts), dim) float32
            tensor, pooled as the run's pooling says (:mod:`archlab.nn.pooling`)

    ``verbs`` is what runs of the task can do; :meth:`model_verbs` narrows it to what a
    trained model can (a classification run embeds only when its model is an encoder).
    """

    name: ClassVar[str]
    DataConfig: ClassVar[type]  # dataclass of the recipe's ``data`` section
    roles: ClassVar[tuple[type, ...]]  # the model roles (archlab.models.roles) it trains
    metric: ClassVar[str] = "loss"  # validation metric that picks the kept model by default
    # the values trainer.select_by may take: metric names, or rules of the task's own
    selectable: ClassVar[tuple[str, ...]] = ()
    verbs: ClassVar[frozenset[str]] = frozenset()  # a subset of VERBS
    # "each": predict answers every input; "query": the inputs are one query (a ranking)
    predicts: ClassVar[str] = "each"
    predict_options: ClassVar[frozenset[str]] = frozenset()  # keys of PREDICT_OPTIONS
    # trainer keys that mean nothing to this task, and why (a full-batch task has no
    # batch_size); a recipe that sets one is refused
    unused_trainer_keys: ClassVar[dict[str, str]] = {}
    # the model config fields the task fills in from the data (:meth:`model_overrides`), and
    # where each comes from: "data.block_size", or words; a recipe that sets one is refused
    derived_model_keys: ClassVar[dict[str, str]] = {}
    unit: ClassVar[str] = "ex"  # what train_batch sizes count, for throughput: tok, ex, ...
    # whether torchrun ranks may each take their rows of a training batch (a batch that is
    # one graph, or graphs packed into one, cannot be split by rows)
    data_parallel: ClassVar[bool] = True
    # methods without a trained network that the task scores with its own evaluation code
    # (``archlab baseline RECIPE --method NAME``): the seasonal naive forecast, ARIMA, a
    # logistic regression on a frozen pretrained encoder
    baselines: ClassVar[tuple[str, ...]] = ()
    # the files (or texts) one prediction reads, in order: ("TEXT",), ("SMILES",), or a
    # pair such as ("IMAGE", "AUDIO"); ``predict`` takes them in groups of this many.
    # Names in FILE_INPUTS are files, the others text
    predict_inputs: ClassVar[tuple[str, ...]] = ("INPUT",)

    def __init__(self, data: Any) -> None:
        self.data = data

    @classmethod
    def data_keys(cls) -> frozenset[str]:
        """The keys of the recipe's ``data`` section (``fold``, ``folds``, ``split_seed``,
        ...), to ask whether a repeat option has anything to vary."""
        return frozenset(f.name for f in dataclasses.fields(cls.DataConfig))

    @classmethod
    def selection_rules(cls) -> tuple[str, ...]:
        """What ``trainer.select_by`` may name: :attr:`metric`, then :attr:`selectable`."""
        return (cls.metric, *(s for s in cls.selectable if s != cls.metric))

    def setup(self) -> None:
        """Read and prepare the data (called once before training or evaluation)."""

    def prepare(self, train: Callable[..., tuple[Path, dict]]) -> None:
        """Fill in, before training, what the data settings leave to archlab (default: nothing).

        Called by :func:`archlab.run.train` before :meth:`setup`, with ``train(recipe,
        overrides, out=RUN_DIR)``: that same function, handed down so that a task can
        train a prerequisite recipe (the GANs' FID classifier) without importing the
        run module.  What the task fills in goes into its ``data``, so config.yaml
        records it and evaluation and resume use the same thing.
        """

    def use_seed(self, seed: int) -> None:
        """Take the run's seed (trainer.seed), for data that depends on it (default: none)."""

    def model_overrides(self) -> dict[str, Any]:
        """Model config fields the data decides (e.g. the vocabulary size), called after
        :meth:`setup`: the keys of :attr:`derived_model_keys`."""
        return {}

    def use_checkpoint(self, path: Path) -> None:
        """Take what a pretrained checkpoint fixes besides its weights (its tokenizer).

        Called before :meth:`setup` when the recipe sets ``model.init_from``.
        """
        raise ConfigError(
            f"the {self.name} task cannot start from a pretrained checkpoint (model.init_from)"
        )

    def use_model(self, model: nn.Module) -> None:
        """Note what the task needs to know of the model it trains (called before training)."""

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimizer step with the model (not DDP around it), e.g. to
        project its weights back onto their constraints (unit-norm embeddings)."""

    def model_verbs(self, model: nn.Module) -> frozenset[str]:
        """The verbs of a run of this task with ``model``: :attr:`verbs` by default."""
        return self.verbs

    @abstractmethod
    def train_batch(self, step: int, batch_size: int, seed: int) -> Any:
        """The training batch of ``step``: the same (seed, step) always gives the same batch."""

    @abstractmethod
    def batch_size_of(self, batch: Any) -> int:
        """How many ``unit`` a batch holds (tokens for language models)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any) -> Tensor:
        """The scalar training loss of ``model`` (or DDP around it) on ``batch``.

        The model is called through its forward, so that DDP averages every gradient.
        """

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """Metrics of ``model`` on a whole split, as a flat name -> number map."""

    def select(
        self, metrics: dict[str, float], best: dict[str, float] | None, by: str
    ) -> Selection:
        """Judge validation ``metrics`` against ``best`` (None before the first evaluation).

        ``by`` is one of :meth:`selection_rules`; by default a metric name: a strictly
        better value (larger for :data:`HIGHER_IS_BETTER` metrics) is kept and is progress.
        """
        value = metrics[by]
        if best is not None:
            better = value > best[by] if by in HIGHER_IS_BETTER else value < best[by]
            if not better:
                return Selection(False, False, best)
        return Selection(True, True, {by: value})

    def final_metrics(self, model: nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """Metrics for results.json; may add costly ones (BLEU) to :meth:`evaluate`'s."""
        return self.evaluate(model, split, batch_size)

    def run_baseline(self, name: str, pretrained: nn.Module | None = None) -> dict[str, Any]:
        """A results.json for baseline ``name`` (one of :attr:`baselines`), after :meth:`setup`.

        It holds the ``val`` and ``test`` metrics as :meth:`evaluate` computes them for a
        network, ``train.seconds`` (fitting and scoring), and what was fitted (``baseline``).
        ``pretrained`` is the recipe's ``model.init_from`` model, for baselines built on a
        frozen pretrained network (None without one).
        """
        raise NotImplementedError(f"the {self.name} task has no baselines")

    def steps_per_epoch(self, batch_size: int) -> int | None:
        """Optimizer steps in one pass over the training data, for tasks that have epochs."""
        return None

    def splits(self) -> tuple[str, ...]:
        """The evaluation splits, validation first."""
        return ("val",)

    def report(self, model: nn.Module, run_dir: Path) -> None:
        """Write task-specific figures of the kept model into the run directory (at the end)."""

    def save_artifacts(self, run_dir: Path) -> None:
        """Write what inference needs besides the weights (a tokenizer, label names)."""

    def load_artifacts(self, run_dir: Path) -> None:
        """Read back what :meth:`save_artifacts` wrote."""

    # ----- predict -----

    def prediction_labels(self) -> list[str] | None:
        """The class names :meth:`predict_scores` scores, in order; None for regression."""
        return None

    def predict_scores(self, model: nn.Module, inputs: list[str]) -> list[Tensor | str]:
        """Per input, a 1-D tensor of scores or the reason (one sentence) it cannot be scored.

        Scores are the class probabilities of a classifier (over :meth:`prediction_labels`)
        or the predicted values, in the data's units, of a regressor.  A bad input does
        not stop the others; only a problem with the whole call raises.
        """
        raise NotImplementedError(f"the {self.name} task does not predict")

    def predict(self, model: nn.Module, inputs: list[str], **options: Any) -> list[dict[str, Any]]:
        """One dict per input (see :func:`describe_predictions`), in the order given."""
        check_predict_options(type(self), options)
        return describe_predictions(self.prediction_labels(), [self.predict_scores(model, inputs)])

    def predict_ensemble(
        self, models: list[nn.Module], inputs: list[str], **options: Any
    ) -> list[dict[str, Any]]:
        """The answer of several models to one query (tasks whose ``predicts`` is "query")."""
        raise NotImplementedError(f"the {self.name} task predicts each input on its own")


def check_predict_options(task_cls: type[Task], options: dict[str, Any]) -> None:
    """Refuse the predict options (given, not None) that ``task_cls`` does not take."""
    for key, value in options.items():
        if value is not None and key not in task_cls.predict_options:
            raise ConfigError(
                f"{PREDICT_OPTIONS[key]} means nothing to a {task_cls.name} run; leave it out"
            )


def score_each(
    inputs: Sequence[str], read: Callable[[str], Any], score: Callable[[list[Any]], Tensor]
) -> list[Tensor | str]:
    """:meth:`Task.predict_scores` from two steps: ``read`` one input, ``score`` many.

    ``read`` turns one input into what ``score`` takes, raising :class:`ArchlabError`
    (whose message becomes the input's reason) for a bad one; ``score`` maps the good
    ones, in one batch, to a (good inputs, K) tensor.
    """
    out: list[Any] = []
    good: list[int] = []
    for i, text in enumerate(inputs):
        try:
            out.append(read(text))
            good.append(i)
        except ArchlabError as exc:
            out.append(str(exc))
    if good:
        for i, row in zip(good, score([out[i] for i in good]), strict=True):
            out[i] = row
    return out


def describe_predictions(
    labels: Sequence[str] | None, members: Sequence[Sequence[Tensor | str]]
) -> list[dict[str, Any]]:
    """What ``predict`` reports per input, from the scores of one or several models.

    ``members`` holds each model's :meth:`Task.predict_scores` of the same inputs.  A
    classifier's input gets the label of the largest mean probability and that mean
    (``label``, ``probability``); a regressor's the mean value (``value``).  With several
    models, the standard deviation across them follows (``probability_std``, of the
    chosen class, or ``value_std``), as a results.json ``NAME_std``.  An input that
    cannot be predicted gets ``{"error": reason}``.
    """
    out: list[dict[str, Any]] = []
    for scores in zip(*members, strict=True):
        reasons = [s for s in scores if isinstance(s, str)]
        if reasons:
            out.append({"error": reasons[0]})
            continue
        stacked = torch.stack([s.detach().double().cpu().flatten() for s in scores])
        mean = stacked.mean(0)
        std = stacked.std(0) if len(scores) > 1 else None
        if labels is None:
            if mean.numel() != 1:
                raise NotImplementedError("predict reports one value per input")
            k, name, row = 0, "value", {}
        else:
            k, name = int(mean.argmax()), "probability"
            row = {"label": labels[k]}
        row[name] = float(mean[k])
        if std is not None:
            row[f"{name}_std"] = float(std[k])
        out.append(row)
    return out


_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    assert dataclasses.is_dataclass(cls.DataConfig), f"{cls.__name__}.DataConfig"
    assert cls.roles and cls.verbs <= set(VERBS), cls.__name__
    _TASKS[cls.name] = cls
    return cls


def _load_tasks() -> None:
    from archlab.tasks import (  # noqa: F401  (registers)
        av_digits,
        char_lm,
        classification,
        forecast,
        gan,
        image_classification,
        link_prediction,
        molecules,
        music,
        node_classification,
        spoken_digits,
        synthetic,
        text_pretraining,
        translation,
    )


def list_tasks() -> list[str]:
    _load_tasks()
    return sorted(_TASKS)


def get_task(name: str) -> type[Task]:
    _load_tasks()
    if name not in _TASKS:
        raise ConfigError(unknown_name_message("task", name, list(_TASKS)))
    return _TASKS[name]
