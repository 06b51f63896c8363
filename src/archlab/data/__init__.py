"""Datasets and pretrained checkpoints (files, SHA-256, URLs, parsing), and tokenizers."""

from archlab.data import (  # noqa: F401  (registers their datasets)
    avdigits,
    fsdd,
    graphs,
    kg,
    mnist,
    molecules,
    music,
    pretrained,
    text,
)
from archlab.data.files import cache_root, data_root, fetch, get_dataset, list_datasets
from archlab.data.pretrained import checkpoint_dir, get_checkpoint, list_checkpoints

__all__ = [
    "cache_root",
    "checkpoint_dir",
    "data_root",
    "fetch",
    "get_checkpoint",
    "list_checkpoints",
    "get_dataset",
    "list_datasets",
]
