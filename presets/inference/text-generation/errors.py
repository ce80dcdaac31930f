"""Errors the server raises before it can serve: bad configuration, model or adapter.

They carry a message written for the operator (which file, which field, what to
change). ``kaitoctl serve`` turns them into ``kaitoctl.errors.ServeError``; in a
pod the worker logs them and exits, so the container restarts with the reason
in its log.
"""

from __future__ import annotations


class StartupError(Exception):
    """The server cannot start: the message says what to fix."""


class ConfigError(StartupError):
    """An environment variable or flag has a value the server cannot use."""


class AdapterError(StartupError):
    """A LoRA adapter cannot be merged into this model."""
