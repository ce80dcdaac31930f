"""Validation: every rule of KAITO's webhook, plus what KAITO misses (placeholder rules; being completed)."""

from __future__ import annotations

import sys
from typing import Callable, Optional

from kaitoctl.errors import InvalidWorkspace
from kaitoctl.loader import Finding, LoadedDocument, load_file
from kaitoctl.workspace import Workspace


def validate(ws: Workspace, doc: Optional[LoadedDocument] = None) -> list[Finding]:
    """Every rule, all findings (errors and warnings)."""
    return []


def print_warning(finding: Finding) -> None:
    """Default ``warn``: one line on stderr."""
    print(f"kaitoctl: warning: {finding.format()}", file=sys.stderr)


def load_workspaces(path: str, *, strict: bool = False,
                    warn: Callable[[Finding], None] = print_warning) -> list[Workspace]:
    """Load and validate every document of ``path``; raise InvalidWorkspace listing every error."""
    docs = load_file(path)
    findings: list[Finding] = []
    for doc in docs:
        findings.extend(doc.findings)
        if doc.workspace is not None:
            findings.extend(validate(doc.workspace, doc))
    errors = [f for f in findings if f.severity == "error" or strict]
    if errors:
        raise InvalidWorkspace(f"{docs[0].file}: {len(errors)} problem(s)", details=[f.format() for f in errors])
    for f in findings:
        warn(f)
    return [d.workspace for d in docs if d.workspace is not None]
