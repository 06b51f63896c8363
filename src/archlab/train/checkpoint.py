"""Run-directory checkpoints: weights in safetensors, resume state without pickles.

A run directory holds
    model.safetensors + model.json  the model to use (best on validation, else last)
    last.safetensors + state.pt     where training resumes: weights, optimizer,
                                    scheduler, step, RNG states
Every file is written to a temporary name and renamed, so a crash mid-write never
leaves a half checkpoint.  ``state.pt`` holds only tensors and plain Python values
and is read back with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from archlab.errors import CheckpointError
from archlab.io import atomic_write, atomic_write_text

MODEL_FILE, MODEL_JSON, LAST_FILE, STATE_FILE = (
    "model.safetensors",
    "model.json",
    "last.safetensors",
    "state.pt",
)


def save_weights(model: nn.Module, path: Path) -> None:
    atomic_write(path, lambda tmp: save_model(model, tmp))


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``, refusing missing, extra or misshapen tensors."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the run directory is incomplete")
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} cannot be read (truncated or corrupt?): {exc}") from None
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{path} does not fit the model config: {exc}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the model config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


def save_model_files(model: nn.Module, run_dir: Path, name: str, config: dict) -> None:
    save_weights(model, run_dir / MODEL_FILE)
    atomic_write_text(run_dir / MODEL_JSON, json.dumps({"name": name, "config": config}, indent=2))


def save_state(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing, so the run cannot be resumed")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...: all mean "not ours"
        raise CheckpointError(f"{path} cannot be read as resume state: {exc}") from None
