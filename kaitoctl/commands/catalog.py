"""Commands: ``kaitoctl presets list|show`` and ``kaitoctl skus list`` — the catalogs, as tables or data.

Module level imports only typer: the catalogs and rich tables load when a
command runs. Never imports the kubernetes client.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Annotated, Any, Optional

import typer

from kaitoctl.commands._options import OutputOption
from kaitoctl.errors import UsageError
from kaitoctl.output import OutputFormat, print_table

presets_app = typer.Typer(name="presets", help="The model presets kaitoctl knows (KAITO's 17 of 2024 and 19 of today).",
                          no_args_is_help=True)
skus_app = typer.Typer(name="skus", help="The GPU instance types kaitoctl knows (Azure and AWS).",
                       no_args_is_help=True)


class Cloud(str, Enum):
    """``--cloud`` values."""

    azure = "azure"
    aws = "aws"


def _preset_dict(preset: Any) -> dict[str, Any]:
    data = dataclasses.asdict(preset)
    if not data.get("extra"):
        data.pop("extra", None)
    data["image"] = preset.image() if preset.access == "public" else None
    return data


def _sku_dict(sku: Any) -> dict[str, Any]:
    data = dataclasses.asdict(sku)
    data["gpu_memory_per_gpu"] = sku.gpu_memory_per_gpu
    return data


@presets_app.command("list")
def presets_list(output: OutputOption = OutputFormat.table) -> None:
    """List every preset: model, GPUs and memory it needs, access, distributed or not."""
    from kaitoctl import catalog
    from kaitoctl.output import emit

    presets = list(catalog.presets().values())
    if output in (OutputFormat.json, OutputFormat.yaml):
        emit([_preset_dict(p) for p in presets], output.value)
        return
    from rich.table import Table
    from rich.text import Text  # cells are data, never rich markup

    wide = output is OutputFormat.wide
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "MODEL", "GPUS", "GPU MEMORY", "PER GPU", "ACCESS", "DISTRIBUTED"):
        table.add_column(column, no_wrap=column == "NAME")  # what people type: never wrapped
    if wide:
        for column in ("DTYPE", "PIPELINE", "IMAGE"):
            table.add_column(column)
    for p in presets:
        name = p.name + (" (small)" if p.small else "")
        row = [name, p.model_id, str(p.gpu_count), p.total_gpu_memory,
               "-" if p.per_gpu_memory_bytes == 0 else p.per_gpu_memory,
               p.access + (" (gated: modelAccessSecret)" if p.gated else ""),
               f"yes ({p.world_size} processes)" if p.distributed else "no"]
        if wide:
            row += [p.dtype, p.pipeline, (p.image() + (" + weights at start" if p.weights_at_start else ""))
                    if p.access == "public" else "(your image)"]
        table.add_row(*(Text(cell) for cell in row))
    print_table(table)


@presets_app.command("show")
def presets_show(
    name: Annotated[str, typer.Argument(help="Preset name, e.g. falcon-7b.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Every fact about one preset."""
    import difflib

    from kaitoctl import catalog
    from kaitoctl.output import emit

    preset = catalog.get_preset(name)
    if preset is None:
        names = list(catalog.presets())
        close = difflib.get_close_matches(name.lower(), names, n=1)
        raise UsageError(f"unknown preset {name!r}" + (f" (did you mean {close[0]}?)" if close else ""),
                         hint="kaitoctl presets list shows every preset")
    data = _preset_dict(preset)
    if output in (OutputFormat.json, OutputFormat.yaml):
        emit(data, output.value)
        return
    from rich.table import Table
    from rich.text import Text  # cells are data, never rich markup

    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" if v != "" else str(k) for k, v in value.items()) or "-"
        elif value is None or value == "":
            value = "-"
        table.add_row(Text(key), Text(str(value)))
    print_table(table)


@skus_app.command("list")
def skus_list(
    cloud: Annotated[Optional[Cloud], typer.Option("--cloud", help="Only this cloud's instance types.")] = None,
    output: OutputOption = OutputFormat.table,
) -> None:
    """List the GPU instance types: GPUs per node, GPU memory per node and per GPU, GPU model."""
    from kaitoctl import catalog
    from kaitoctl.output import emit

    skus = [s for s in catalog.skus().values() if cloud is None or s.cloud == cloud.value]
    if output in (OutputFormat.json, OutputFormat.yaml):
        emit([_sku_dict(s) for s in skus], output.value)
        return
    from rich.table import Table
    from rich.text import Text  # cells are data, never rich markup

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "CLOUD", "GPUS", "GPU MEMORY", "PER GPU", "GPU MODEL"):
        table.add_column(column, no_wrap=column == "NAME")  # what people type: never wrapped
    if output is OutputFormat.wide:
        table.add_column("NOTE")
    for s in skus:
        row = [s.name, s.cloud, str(s.gpu_count), s.gpu_memory_total, s.gpu_memory_per_gpu, s.gpu_model]
        if output is OutputFormat.wide:
            row.append(s.note or "-")
        table.add_row(*(Text(cell) for cell in row))
    print_table(table)


def register(app: typer.Typer) -> None:
    """Add ``presets`` and ``skus`` to ``app``."""
    app.add_typer(presets_app)
    app.add_typer(skus_app)
