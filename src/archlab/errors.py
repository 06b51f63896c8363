"""Errors a user can cause and fix.

Anything raised as :class:`ArchlabError` is a user mistake (bad input, a missing
file, a wrong option): the CLI prints its message as one sentence and exits with
status 2, never with a traceback.  Shape errors inside models are
:class:`ShapeError`, which is also a ``ValueError`` so that library callers can
catch it the usual way.

A family's field library (RDKit for molecules, ...) is an extra of the package,
``pip install 'archlab[chem]'``, imported only when that family is used, through
:func:`require`: without it ``import archlab`` and every other family still work,
and using the family raises :class:`MissingExtraError`, which names the command
to run.
"""

import importlib
from types import ModuleType


class ArchlabError(Exception):
    """A mistake in what the user gave archlab; the message says what to fix."""


class ShapeError(ArchlabError, ValueError):
    """A tensor has the wrong shape, dtype or size for the module it was given to."""


class ConfigError(ArchlabError, ValueError):
    """A configuration value or name is unknown or has the wrong type."""


class CheckpointError(ArchlabError, ValueError):
    """A checkpoint directory or file is missing, incomplete or does not match its config."""


def expect(condition: bool, message: str, error: type[ArchlabError] = ShapeError) -> None:
    """Raise ``error(message)`` unless ``condition`` holds."""
    if not condition:
        raise error(message)


class MissingExtraError(ArchlabError, ImportError):
    """An optional library a family needs is not installed; the message names the extra."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or a :class:`MissingExtraError` naming ``pip install 'archlab[extra]'``.

    ``purpose`` says what needs it, e.g. ``"molecules (SMILES)"``.  The top-level package
    is imported first, so a missing (or hidden) package is noticed even when one of its
    submodules was imported before.
    """
    top = module.partition(".")[0]
    try:
        importlib.import_module(top)
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{top} is needed for {purpose} but could not be imported ({error}); install it "
            f"with: pip install 'archlab[{extra}]'"
        ) from error
