"""archlab: modern neural-network structures, correct, fast and measured, in PyTorch."""

from archlab.errors import ArchlabError
from archlab.registry import create_model, list_models

__all__ = ["ArchlabError", "create_model", "list_models"]
__version__ = "0.1.0"
