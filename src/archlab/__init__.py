"""archlab: modern neural-network structures, correct, fast and measured, in PyTorch."""

from archlab.errors import ArchlabError
from archlab.registry import create_model, list_models


def load(run_dir):
    """The trained model and its task from a run directory (see :func:`archlab.run.load`).

    A directory of repeated runs (``train --seeds/--folds/--splits``) gives a
    :class:`archlab.run.RunGroup`: its ``members``, which ``evaluate`` and
    ``predict`` as one ensemble.
    """
    from archlab.run import load as load_run

    return load_run(run_dir)


__all__ = ["ArchlabError", "create_model", "list_models", "load"]
__version__ = "0.1.0"
