"""Small manifest builders for kubesim's own tests."""

from __future__ import annotations

from typing import Any


def container(name: str = "main", image: str = "registry.example/app:1", gpus: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "image": image}
    if gpus:
        spec["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"nvidia.com/gpu": str(gpus)}}
    return spec


def deployment(
    name: str = "web",
    image: str = "registry.example/app:1",
    replicas: int = 1,
    gpus: int = 1,
    strategy: dict[str, Any] | None = None,
    init_images: tuple[str, ...] = (),
    **pod_spec: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container("main", image, gpus)], **pod_spec}
    if init_images:
        spec["initContainers"] = [container(f"init-{i}", img, 0) for i, img in enumerate(init_images)]
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }
    if strategy is not None:
        body["spec"]["strategy"] = strategy
    return body


def statefulset(
    name: str = "db",
    image: str = "registry.example/db:1",
    replicas: int = 3,
    policy: str = "Parallel",
    gpus: int = 0,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": f"{name}-headless",
            "podManagementPolicy": policy,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container("main", image, gpus)]}},
        },
    }


SURGE = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
RECREATE = {"type": "Recreate"}
