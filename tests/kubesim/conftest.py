"""Fixtures: a running KubeSim and official-client APIs pointed at it through its kubeconfig."""

from __future__ import annotations

from typing import Iterator

import pytest
from kubernetes import client

from . import KubeSim


@pytest.fixture
def sim() -> Iterator[KubeSim]:
    with KubeSim() as running:
        yield running


@pytest.fixture
def api_client(sim: KubeSim) -> Iterator[client.ApiClient]:
    api = sim.api_client()
    yield api
    api.close()


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)
