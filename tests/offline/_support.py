"""Helpers for the offline tests: a valid base Workspace, mutations, findings as tuples."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from kaitoctl.loader import Finding, load_text
from kaitoctl.validate import check_documents

BASE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "Workspace",
    "metadata": {"name": "ws-falcon"},
    "resource": {"instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": {"apps": "falcon"}}},
    "inference": {"preset": {"name": "falcon-7b"}},
}

DELETE = object()


def _split(path: str) -> list[Any]:
    parts: list[Any] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        parts.append(int(token[1:-1]) if token.startswith("[") else token)
    return parts


def mutate(changes: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``base`` (default BASE) with ``{"a.b[0].c": value}`` set (DELETE removes the key)."""
    doc = copy.deepcopy(BASE if base is None else base)
    for path, value in changes.items():
        parts = _split(path)
        node: Any = doc
        for part, nxt in zip(parts, parts[1:]):
            if isinstance(part, int):
                node = node[part]
            else:
                if part not in node or node[part] is None:
                    node[part] = [] if isinstance(nxt, int) else {}
                node = node[part]
        last = parts[-1]
        if value is DELETE:
            del node[last]
        elif isinstance(last, int) and isinstance(node, list) and last == len(node):
            node.append(value)
        else:
            node[last] = value
    return doc


def adapter(name: str = "adapter-a", image: str = "myregistry.azurecr.io/adapters/a:0.0.1",
            strength: Any = "1.0", **source: Any) -> dict[str, Any]:
    """One image adapter entry."""
    entry: dict[str, Any] = {"source": {"name": name, "image": image, **source}}
    if strength is not None:
        entry["strength"] = strength
    return entry


def to_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def findings_of_text(text: str, name: str = "ws.yaml") -> list[Finding]:
    """Every finding (loader and rules) of every document of ``text``, as ``kaitoctl validate`` reports them."""
    return check_documents(load_text(text, name), name).all_findings


def findings_of(data: dict[str, Any]) -> list[Finding]:
    return findings_of_text(to_yaml(data))


def triples(findings: list[Finding], severity: str | None = None) -> list[tuple[str, str, str]]:
    """(severity, path, message) of each finding, optionally of one severity."""
    return [(f.severity, f.path, f.message) for f in findings if severity is None or f.severity == severity]
