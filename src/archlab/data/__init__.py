"""Datasets (files, SHA-256, URLs, parsing) and tokenizers."""

from archlab.data import (  # noqa: F401  (registers their datasets)
    avdigits,
    fsdd,
    graphs,
    kg,
    mnist,
    molecules,
    music,
    text,
)
from archlab.data.files import cache_root, data_root, fetch, get_dataset, list_datasets

__all__ = ["cache_root", "data_root", "fetch", "get_dataset", "list_datasets"]
