"""Options shared by several commands, spelled as kubectl spells them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kaitoctl.output import OutputFormat

FileOption = Annotated[
    str,
    typer.Option("-f", "--filename", help="Workspace YAML file, or - for stdin."),
]
OptionalFileOption = Annotated[
    Optional[str],
    typer.Option("-f", "--filename", help="Workspace YAML file, or - for stdin."),
]
NamespaceOption = Annotated[
    Optional[str],
    typer.Option("-n", "--namespace", help="Namespace (default: the workspace's, else the context's)."),
]
ContextOption = Annotated[
    Optional[str],
    typer.Option("--context", help="kubeconfig context to use."),
]
KubeconfigOption = Annotated[
    Optional[Path],
    typer.Option("--kubeconfig", help="Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
]
OutputOption = Annotated[
    OutputFormat,
    typer.Option("-o", "--output", help="Output format."),
]
StrictOption = Annotated[
    bool,
    typer.Option("--strict", help="Treat warnings as errors."),
]
