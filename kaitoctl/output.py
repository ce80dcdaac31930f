"""Consoles and output formats: data to stdout, progress and diagnostics to stderr."""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported when a console is needed: `render` and `validate` never need one
    from rich.console import Console


class OutputFormat(str, Enum):
    """``-o`` values shared by the commands that print data."""

    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


def _no_color() -> bool:
    return "NO_COLOR" in os.environ


def stdout_console() -> "Console":
    """Console for data. Never colourised when piped; honours NO_COLOR."""
    from rich.console import Console

    return Console(file=sys.stdout, no_color=_no_color(), soft_wrap=True, highlight=False)


def stderr_console() -> "Console":
    """Console for progress, warnings and errors."""
    from rich.console import Console

    return Console(file=sys.stderr, no_color=_no_color(), soft_wrap=True, highlight=False)


def print_table(table: Any, console: "Console | None" = None) -> None:
    """Print a rich Table without ever cutting a cell (no "…"), as kubectl prints tables.

    Not on a terminal (piped, redirected, captured): every row on one line at its full width, so
    ``grep``/``awk`` see whole values. On a terminal: the terminal's width; columns built with
    ``no_wrap`` (the values people read or type: names, images) keep their width while the others
    wrap, and a cell that still does not fit folds onto the next line instead of being cut.
    """
    from rich.measure import Measurement

    console = console or stdout_console()
    for column in table.columns:
        column.overflow = "fold"
    if not console.is_terminal:
        natural = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
        console.width = max(console.width, natural)
    console.print(table)


def dump_yaml(data: Any) -> str:
    """YAML in Kubernetes' usual style: block style, keys in the order given."""
    import yaml

    # libyaml's emitter when available: same bytes as the pure-Python one, ~5x faster.
    class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    if isinstance(data, list):
        return "---\n".join(
            yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)
            for doc in data
        )
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def dump_json(data: Any) -> str:
    """Indented JSON, keys in the order given, with a trailing newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def emit(data: Any, fmt: OutputFormat | str) -> None:
    """Write ``data`` to stdout as JSON or YAML (a list becomes a YAML stream / JSON List)."""
    fmt = OutputFormat(fmt)
    if fmt is OutputFormat.json:
        if isinstance(data, list):
            data = {"apiVersion": "v1", "kind": "List", "items": data}
        sys.stdout.write(dump_json(data))
    elif fmt is OutputFormat.yaml:
        sys.stdout.write(dump_yaml(data))
    else:  # pragma: no cover - callers render tables themselves
        raise ValueError(f"emit() does not render {fmt.value}")
    sys.stdout.flush()
