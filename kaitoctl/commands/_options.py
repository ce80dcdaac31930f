"""Options shared by several commands, spelled as kubectl spells them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kaitoctl.output import OutputFormat

FileOption = Annotated[
    str,
    typer.Option("-f", "--filename", metavar="FILE", help="Workspace YAML file, or - for stdin."),
]
OptionalFileOption = Annotated[
    Optional[str],
    typer.Option("-f", "--filename", metavar="FILE", help="Workspace YAML file, or - for stdin."),
]
NamespaceOption = Annotated[
    Optional[str],
    typer.Option("-n", "--namespace", metavar="NAMESPACE",
                 help="Namespace (default: the workspace's, else the context's)."),
]
ContextOption = Annotated[
    Optional[str],
    typer.Option("--context", metavar="CONTEXT", help="kubeconfig context to use."),
]
KubeconfigOption = Annotated[
    Optional[Path],
    typer.Option("--kubeconfig", metavar="PATH",
                 help="Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)."),
]
OutputOption = Annotated[
    OutputFormat,
    typer.Option("-o", "--output", help="Output format."),
]
StrictOption = Annotated[
    bool,
    typer.Option("--strict", help="Treat warnings as errors."),
]
RegistryOption = Annotated[
    Optional[str],
    typer.Option("--registry", metavar="REGISTRY",
                 help="Registry the pods pull the public preset images from, where you pushed them (default: "
                      "$KAITOCTL_PRESET_REGISTRY, else the running workload's; nothing is published at "
                      "ghcr.io/kaitoctl)."),
]
