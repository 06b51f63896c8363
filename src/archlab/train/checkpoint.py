"""Run-directory checkpoints: weights in safetensors, resume state without pickles.

A run directory holds
    model.safetensors + model.json  the model to use (best on validation, else last);
                                    :func:`load_model` builds it back
    last.safetensors + state.pt     where training resumes: weights, optimizer,
                                    scheduler, step, and the RNG states of Python,
                                    NumPy, torch's CPU and every CUDA device
Every file is written to a temporary name and renamed, so a crash mid-write never
leaves a half checkpoint.  ``state.pt`` holds only tensors and plain Python values
and is read back with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as load_into
from safetensors.torch import save_model
from torch import Tensor, nn

from archlab.compat import upgrade_model_spec
from archlab.config import to_dataclass
from archlab.errors import CheckpointError
from archlab.io import atomic_write, atomic_write_text, to_json
from archlab.registry import model_entry

MODEL_FILE, MODEL_JSON, LAST_FILE, STATE_FILE = (
    "model.safetensors",
    "model.json",
    "last.safetensors",
    "state.pt",
)


def save_weights(model: nn.Module, path: Path, step: int | None = None) -> None:
    """Write ``model``'s weights; ``step``, if given, goes into the file's metadata."""
    metadata = None if step is None else {"step": str(step)}
    atomic_write(path, lambda tmp: save_model(model, tmp, metadata=metadata))


def load_weights(model: nn.Module, path: Path, step: int | None = None) -> None:
    """Load safetensors weights into ``model``, refusing missing, extra or misshapen tensors.

    With ``step``, also refuse a file whose metadata names another step (the state file
    of a resume and its weights were written by different saves).
    """
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the run directory is incomplete")
    try:
        if step is not None:
            with safe_open(str(path), "pt") as f:
                saved = (f.metadata() or {}).get("step")
            if saved is not None and saved != str(step):
                raise CheckpointError(
                    f"{path} holds the weights of step {saved}, but the resume state is of "
                    f"step {step}; the run was stopped while saving and cannot be resumed exactly"
                )
        missing, unexpected = load_into(model, str(path), strict=False)
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
    atomic_write_text(run_dir / MODEL_JSON, to_json({"name": name, "config": config}, indent=2))


def save_state(state: dict[str, Any], path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing, so the run cannot be resumed")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...: all mean "not ours"
        raise CheckpointError(f"{path} cannot be read as resume state: {exc}") from None


def load_model(run_dir: str | Path) -> nn.Module:
    """The model a run directory keeps (``model.json`` + ``model.safetensors``), in eval mode."""
    run_dir = Path(run_dir)
    spec_file = run_dir / MODEL_JSON
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a directory")
    if not spec_file.is_file():
        raise CheckpointError(f"{run_dir} is not an archlab run directory (it has no {MODEL_JSON})")
    try:
        spec = json.loads(spec_file.read_text("utf-8"))
        name, values = upgrade_model_spec(spec["name"], spec["config"], run_dir)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{spec_file} is not a model description: {exc}") from None
    entry = model_entry(name)
    model = entry.model_cls(to_dataclass(entry.config_cls, values, "model"))
    load_weights(model, run_dir / MODEL_FILE)
    return model.eval()


def rng_state() -> dict[str, Any]:
    """Every random generator a run draws from: Python's, NumPy's, torch's CPU and CUDA ones.

    As tensors and plain values only, so ``torch.load(weights_only=True)`` reads it back.
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Tensor | dict[str, Any]) -> None:
    """Restore :func:`rng_state` (or a torch CPU state alone, as state files before 2026-12)."""
    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(
        (np_state["kind"], keys, np_state["pos"], np_state["has_gauss"], np_state["cached"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
