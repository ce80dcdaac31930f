"""Fixtures: one test's KubeSim on the session's real control plane (skipped without KUBEBUILDER_ASSETS)."""

from __future__ import annotations

from typing import Iterator

import pytest

from . import KubeSim, controlplane


@pytest.fixture
def sim() -> Iterator[KubeSim]:
    controlplane.skip_unless_available()
    with KubeSim() as running:
        yield running
