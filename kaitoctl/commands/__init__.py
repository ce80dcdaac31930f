"""CLI commands, one module per area. Each module exposes ``register(app)``.

Modules here import only typer/rich/stdlib (and kaitoctl's light modules) at
module level: heavy or cluster-only imports (kubernetes, torch, the server)
happen inside the command functions so that ``kaitoctl --help`` and the offline
commands stay fast and never import the kubernetes client.

The CLI imports these modules lazily (``kaitoctl.cli``): running ``kaitoctl
render`` imports only ``render``'s module, because building every command's
options costs start-up time that a single command never uses. ``--help``, shell
completion and an unknown command name import them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover - typing only
    import typer

# Every command module, in registration order (``kaitoctl --help`` lists commands in this order).
MODULES: tuple[str, ...] = ("validate", "render", "catalog", "cluster", "adapters", "serve")

# The module that registers each top-level command name, so that running one command imports
# one module. Only a shortcut: a name missing or stale here still works (the CLI then imports
# every module); tests/test_imports.py checks that this table matches what the modules register.
COMMAND_MODULES: dict[str, str] = {
    "validate": "validate",
    "render": "render",
    "presets": "catalog",
    "skus": "catalog",
    "apply": "cluster",
    "preflight": "cluster",
    "status": "cluster",
    "delete": "cluster",
    "adapters": "adapters",
    "history": "adapters",
    "rollback": "adapters",
    "serve": "serve",
    "demo": "serve",
}


def register_function(module: str) -> Callable[["typer.Typer"], None]:
    """Import ``kaitoctl.commands.<module>`` and return its ``register(app)``."""
    return importlib.import_module(f"{__name__}.{module}").register
