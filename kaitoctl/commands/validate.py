"""Command: ``kaitoctl validate`` — check Workspace files offline, as CI would.

Module level imports only typer and the shared option types: the loader,
pydantic and the catalogs load when the command runs. Never imports the
kubernetes client.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from kaitoctl.commands._options import FileOption, StrictOption


class ValidateFormat(str, Enum):
    """``-o`` values of ``validate``: summary lines, or every finding as data."""

    text = "text"
    json = "json"
    yaml = "yaml"


def validate_command(
    filename: FileOption,
    strict: StrictOption = False,
    output: Annotated[
        ValidateFormat,
        typer.Option("-o", "--output", help="text (one summary line per workspace), or json/yaml: every document "
                                            "with its findings, for CI annotations."),
    ] = ValidateFormat.text,
) -> None:
    """Validate every Workspace in FILE (or - for stdin) without a cluster.

    Exit 0 and one line per workspace when all are valid (warnings go to
    stderr); exit 3 with every problem of every document on stderr otherwise.
    With --strict, warnings fail too.
    """
    from kaitoctl.output import emit, stderr_console, stdout_console
    from kaitoctl.registry import preset_image
    from kaitoctl.validate import check_file, fails, raise_for, summary

    report = check_file(filename)
    failing = report.failing(strict)
    if output is ValidateFormat.text:
        if not failing:
            err = stderr_console()
            for finding in report.all_findings:
                err.print(f"kaitoctl: {finding.format()}", markup=False)
            out = stdout_console()
            for ws in report.workspaces:
                out.print(summary(ws), markup=False)
                image = preset_image(ws)
                if image is not None and image.registry is None:  # `apply` would refuse: say it now
                    err.print(f"kaitoctl: {ws.name}: note: {image.problem()}; `kaitoctl apply` refuses it until "
                              "then", markup=False)
    else:
        emit({
            "file": report.file,
            "valid": not failing,
            "documents": [
                {
                    "index": doc.index,
                    "kind": doc.data.get("kind") if isinstance(doc.data, dict) else None,
                    "name": ((doc.draft.name or None) if doc.draft else
                             (doc.companion["metadata"]["name"] if doc.companion is not None else None)),
                    "valid": (doc.workspace is not None or doc.companion is not None) and not [
                        f for f in report.findings[doc.index] if fails(f, strict)],
                    "summary": summary(doc.workspace) if doc.workspace else None,
                    "findings": [f.to_dict() for f in report.findings[doc.index]],
                }
                for doc in report.documents
            ],
        }, output.value)
    raise_for(report, strict=strict)


def register(app: typer.Typer) -> None:
    """Add ``validate`` to ``app``."""
    app.command("validate")(validate_command)
