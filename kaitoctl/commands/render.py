"""Command: ``kaitoctl render`` — the objects ``apply`` would send, offline, to stdout.

Module level imports only typer and kaitoctl's light option types: the loader,
pydantic and the renderer are imported when the command runs, so other
commands' start-up does not pay for them. Never imports the kubernetes client.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from kaitoctl.commands._options import FileOption, RegistryOption, StrictOption

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kaitoctl.loader import Finding


class RenderFormat(str, Enum):
    """``-o`` values of ``render``: a YAML ``---`` stream, or a JSON ``v1`` List."""

    yaml = "yaml"
    json = "json"


def render_command(
    filename: FileOption,
    output: Annotated[RenderFormat, typer.Option("-o", "--output", help="yaml (a --- stream) or json (a v1 List).")]
    = RenderFormat.yaml,
    registry: RegistryOption = None,
    strict: StrictOption = False,
) -> None:
    """Print the Kubernetes objects for each Workspace in FILE (no cluster needed).

    Placement uses the SKU catalog's view of resource.instanceType: GPUs per pod
    and the rollout strategy (with the reason on stderr). `kaitoctl apply`
    computes the same from the live nodes instead.
    """
    from kaitoctl.companions import redacted
    from kaitoctl.output import emit
    from kaitoctl.plan import default_plan
    from kaitoctl.registry import preset_image
    from kaitoctl.render import render_workspace
    from kaitoctl.validate import config_data, load_objects

    workspaces, companions = load_objects(filename, strict=strict, warn=_print_warning)
    # The file's ConfigMaps and Secrets first, as apply sends them; Secret values never printed.
    objects: list[dict] = [redacted(obj) for obj in companions]
    for ws in workspaces:
        plan = default_plan(ws)
        if plan.reason:
            print(f"# {ws.name}: {plan.strategy}: {plan.reason}", file=sys.stderr)
        image = preset_image(ws, registry)
        if image is not None:  # where the pods would pull from; never a silent default
            print(f"# {ws.name}: " + (image.describe() if image.registry else
                  f"{image.image} is a placeholder: {image.problem()}; `kaitoctl apply` refuses it"),
                  file=sys.stderr)
        objects.extend(render_workspace(ws, plan, registry=registry, config_data=config_data(ws, companions)))
    emit(objects, output.value)


def _print_warning(finding: "Finding") -> None:
    # The same line as validate's default, with print(): rich costs ~13 ms of start-up, and
    # render's data path never needs it.
    print(f"kaitoctl: {finding.format()}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add ``render`` to ``app``."""
    app.command("render")(render_command)
