"""Fixtures for the rendering tests: Workspaces built from plain dicts, a clean environment."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from kaitoctl.workspace import Workspace

BASE: dict[str, Any] = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "Workspace",
    "metadata": {"name": "ws"},
    "resource": {"instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": {"apps": "falcon-7b"}}},
    "inference": {"preset": {"name": "falcon-7b"}},
}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` and ``resource`` are updated key by key; anything else (``inference``) is replaced."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if key in ("metadata", "resource") and isinstance(value, dict):
            out[key] = {**out[key], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture
def make_ws() -> Callable[..., Workspace]:
    """``make_ws(inference=..., resource=...)``: the base falcon-7b workspace with overrides merged in."""

    def make(overrides: dict[str, Any] | None = None, **kwargs: Any) -> Workspace:
        data = _merge(BASE, overrides or {})
        data = _merge(data, kwargs)
        return Workspace.model_validate(data)

    return make


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rendering reads these two overrides; a developer's shell must not change the goldens.
    monkeypatch.delenv("KAITOCTL_PRESET_REGISTRY", raising=False)
    monkeypatch.delenv("KAITOCTL_COPY_TOOL_IMAGE", raising=False)
