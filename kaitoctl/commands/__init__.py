"""CLI commands, one module per area. Each module exposes ``register(app)``.

Modules here import only typer/rich/stdlib (and kaitoctl's light modules) at
module level: heavy or cluster-only imports (kubernetes, torch, the server)
happen inside the command functions so that ``kaitoctl --help`` and the offline
commands stay fast and never import the kubernetes client.
"""

from __future__ import annotations

from typing import Callable

import typer

from kaitoctl.commands import adapters, catalog, cluster, render, serve, validate

REGISTERED: list[Callable[[typer.Typer], None]] = [
    validate.register,
    render.register,
    catalog.register,
    cluster.register,
    adapters.register,
    serve.register,
]
