"""Errors a user can cause and fix.

Anything raised as :class:`ArchlabError` is a user mistake (bad input, a missing
file, a wrong option): the CLI prints its message as one sentence and exits with
status 2, never with a traceback.  Shape errors inside models are
:class:`ShapeError`, which is also a ``ValueError`` so that library callers can
catch it the usual way.
"""


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
