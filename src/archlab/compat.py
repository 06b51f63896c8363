"""Run directories written by earlier versions of archlab, read with today's keys.

A run directory's ``config.yaml`` and ``model.json`` are read through these
functions, so that old runs still load, evaluate and resume.  What changed, and
when (each change is idempotent: an up-to-date file passes unchanged):

2026-12-02, the trainer section took over training settings:
- ``data.select_by`` (node classification) is ``trainer.select_by``;
- ``data.d_lr_scale`` (image generation) is ``trainer.lr_scales: {discriminator: x}``;
- trainer keys a task has no use for (a full-batch task's ``batch_size``) were
  written to config.yaml; they are dropped;
- a sentence classifier built on BERT was model ``bert`` (whose ``classify`` gave
  logits); it is ``bert_classifier``, with the same weights.

2026-12-02, later: ``trainer.precision: auto`` is decided by a timed probe, and
config.yaml records the choice (``fp32`` or ``bf16``); ``auto`` in an older
config.yaml meant bf16 wherever the hardware has bf16 instructions, and still does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def upgrade_config(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A run's config.yaml sections (as read) with today's keys."""
    from archlab.tasks import get_task

    raw = {section: dict(values) for section, values in raw.items()}
    data, trainer, model = raw.get("data", {}), raw.get("trainer", {}), raw.get("model", {})
    if "select_by" in data:
        trainer.setdefault("select_by", data.pop("select_by"))
    if "d_lr_scale" in data:
        scale = data.pop("d_lr_scale")
        if scale != 1.0:
            trainer.setdefault("lr_scales", {"discriminator": scale})
    if trainer.get("precision", "auto") == "auto":
        trainer["precision"] = _old_auto_precision(str(trainer.get("device", "auto")))
    task_name = raw.get("task", {}).get("name")
    if task_name:
        for key in get_task(str(task_name)).unused_trainer_keys:
            trainer.pop(key, None)
        model["name"] = upgrade_model_name(model.get("name"), str(task_name))
    return raw


def _old_auto_precision(device: str) -> str:
    """What ``trainer.precision: auto`` trained in before the probe: the hardware's rule."""
    import torch

    from archlab.train.precision import hardware_precision

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return hardware_precision(torch.device("cuda" if cuda else "cpu"))


def upgrade_model_name(name: Any, task_name: str | None) -> Any:
    """Today's name of a model that a run of ``task_name`` saved as ``name``."""
    if name == "bert" and task_name == "classification":
        return "bert_classifier"
    return name


def upgrade_model_spec(name: str, values: dict, run_dir: Path) -> tuple[str, dict]:
    """A run's model.json (name, config) with today's names."""
    task_name = None
    config = run_dir / "config.yaml"
    if config.is_file():
        try:
            task_name = (yaml.safe_load(config.read_text("utf-8")) or {}).get("task", {})["name"]
        except (yaml.YAMLError, AttributeError, KeyError, TypeError):
            task_name = None
    return upgrade_model_name(name, task_name), values
