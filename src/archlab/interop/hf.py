"""Hugging Face checkpoint directories in and out: ``config.json`` + ``model.safetensors``.

A model family describes its mapping as an explicit dictionary from archlab's
parameter names to Hugging Face's, with ``{}`` standing for the layer index::

    {"blocks.{}.attn_res.norm.weight": "h.{}.ln_1.weight", ...}

:func:`import_state` turns a Hugging Face state dict into archlab's, checking that
every tensor is present and has the shape the config implies; :func:`export_state`
does the reverse.  Formats that keep the query, key and value projections apart
see archlab's stacked ``W_qkv`` through :func:`split_qkv` / :func:`merge_qkv`.
Weights are read with safetensors only, never unpickled.

One module per family holds its map, config translation and ``from_hf`` /
``to_hf``: :mod:`archlab.interop.hf_gpt2`, :mod:`archlab.interop.hf_bert`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from archlab.errors import CheckpointError
from archlab.io import atomic_write, atomic_write_text

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
QKV = ("W_q", "W_k", "W_v")
QKV_PART = re.compile(r"^(.*)\.W_([qkv])\.(weight|bias)$")


def read_checkpoint(path: str | os.PathLike, model_types: Iterable[str]) -> tuple[dict, dict]:
    """Read ``config.json`` and ``model.safetensors`` from a checkpoint directory.

    Raises :class:`CheckpointError` naming the directory and what is wrong: not a
    directory, a missing file, JSON that does not parse, a ``model_type`` other than
    one of ``model_types``, or a weights file that safetensors cannot read.
    """
    root = Path(path)
    model_types = list(model_types)
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {str(root)!r} does not exist")
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (root / name).is_file()]
    if missing:
        hint = ""
        if WEIGHTS_FILE in missing and (root / "pytorch_model.bin").exists():
            hint = " (pickled pytorch_model.bin files are not read; re-save with safetensors)"
        raise CheckpointError(
            f"checkpoint directory {str(root)!r} lacks {' and '.join(missing)}{hint}"
        )
    try:
        config = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{root / CONFIG_FILE} is not valid JSON: {exc}") from None
    if not isinstance(config, dict) or config.get("model_type") not in model_types:
        found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(
            f"{root / CONFIG_FILE} describes model_type {found!r}, expected "
            f"{' or '.join(repr(t) for t in model_types)}"
        )
    try:
        state = load_file(root / WEIGHTS_FILE)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{root / WEIGHTS_FILE} cannot be read as safetensors: {exc}"
        ) from None
    return config, state


def write_checkpoint(path: str | os.PathLike, config: dict, state: Mapping[str, Tensor]) -> None:
    """Write a checkpoint directory; each file appears whole or not at all."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    atomic_write(
        root / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"})
    )
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write_text(root / CONFIG_FILE, text)


def expand_key_map(key_map: Mapping[str, str], n_layer: int) -> dict[str, str]:
    """Instantiate ``{}`` layer templates for layers 0..n_layer-1."""
    out: dict[str, str] = {}
    for ours, theirs in key_map.items():
        if "{}" in ours:
            out.update({ours.format(i): theirs.format(i) for i in range(n_layer)})
        else:
            out[ours] = theirs
    return out


def import_state(
    hf_state: Mapping[str, Tensor],
    key_map: Mapping[str, str],
    expected: Mapping[str, Tensor],
    *,
    transpose: Iterable[str] = (),
    source: str = "checkpoint",
) -> dict[str, Tensor]:
    """Map a Hugging Face state dict onto archlab names, checking presence and shapes.

    ``key_map`` is already expanded (ours -> theirs); ``expected`` is the archlab
    model's own state dict, giving each tensor's shape; archlab names that end in one
    of ``transpose`` are stored transposed by Hugging Face (GPT-2's Conv1D).
    """
    suffixes = tuple(transpose)
    out: dict[str, Tensor] = {}
    for ours, theirs in key_map.items():
        if theirs not in hf_state:
            raise CheckpointError(f"{source} lacks tensor {theirs!r}, which the config requires")
        flip = bool(suffixes) and ours.endswith(suffixes)
        tensor = hf_state[theirs].t() if flip else hf_state[theirs]
        if tensor.shape != expected[ours].shape:
            want = tuple(expected[ours].shape)
            raise CheckpointError(
                f"{source}: tensor {theirs!r} has shape {tuple(hf_state[theirs].shape)}, but "
                f"config.json implies {want[::-1] if flip else want}"
            )
        out[ours] = tensor.to(expected[ours].dtype).contiguous()
    return out


def export_state(
    state: Mapping[str, Tensor], key_map: Mapping[str, str], *, transpose: Iterable[str] = ()
) -> dict[str, Tensor]:
    """Map archlab names onto Hugging Face names (the inverse of :func:`import_state`)."""
    suffixes = tuple(transpose)
    out = {}
    for ours, theirs in key_map.items():
        tensor = state[ours]
        out[theirs] = tensor.t() if suffixes and ours.endswith(suffixes) else tensor
    return out


def split_qkv(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Replace each ``*.W_qkv.{weight,bias}`` by its row blocks ``*.W_q``, ``*.W_k``, ``*.W_v``."""
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        stem, sep, leaf = name.rpartition(".W_qkv.")
        if not sep:
            out[name] = tensor
            continue
        for part, block in zip(QKV, tensor.chunk(3), strict=True):
            out[f"{stem}.{part}.{leaf}"] = block
    return out


def merge_qkv(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`split_qkv`: stack ``W_q``, ``W_k``, ``W_v`` into ``W_qkv``."""
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        match = QKV_PART.match(name)
        if match is None:
            out[name] = tensor
        elif match.group(2) == "q":
            stem, leaf = match.group(1), match.group(3)
            out[f"{stem}.W_qkv.{leaf}"] = torch.cat([state[f"{stem}.{p}.{leaf}"] for p in QKV])
    return out


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop ``prefix`` from the keys that carry it (task models wrap a base model)."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def config_value(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """A field of a Hugging Face config, with a clear error if a required one is absent."""
    if key in config:
        return config[key]
    if default is None:
        raise CheckpointError(f"config.json lacks the field {key!r}")
    return default
