"""Datasets (files, SHA-256, URLs, parsing) and tokenizers."""

from archlab.data import avdigits, fsdd, graphs, mnist, molecules, music, text  # noqa: F401  (registers their datasets)
from archlab.data.files import cache_root, data_root, fetch, get_dataset, list_datasets

__all__ = ["cache_root", "data_root", "fetch", "get_dataset", "list_datasets"]
