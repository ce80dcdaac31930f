"""Plain-dict builders for nodes, pods, workloads and events (what the API server returns)."""

from __future__ import annotations

from typing import Any, Optional

from kaitoctl.workspace import Workspace

GPU = "nvidia.com/gpu"
ITYPE = "node.kubernetes.io/instance-type"
GPU_TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
]


def node(name: str, *, gpus: int = 4, labels: Optional[dict[str, str]] = None, ready: bool = True,
         unschedulable: bool = False, taints: Optional[list[dict[str, Any]]] = None,
         instance_type: Optional[str] = "Standard_NC24ads_A100_v4") -> dict[str, Any]:
    all_labels = {"apps": "llm", **(labels or {})}
    if instance_type:
        all_labels[ITYPE] = instance_type
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": {"unschedulable": unschedulable, "taints": taints or []},
        "status": {
            "allocatable": {GPU: str(gpus), "cpu": "32"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "reason": "KubeletReady" if ready else "KubeletNotReady"}],
        },
    }


def pod(name: str, *, node_name: Optional[str], gpus: int = 1, namespace: str = "default",
        labels: Optional[dict[str, str]] = None, phase: str = "Running", ready: bool = True,
        **extra: Any) -> dict[str, Any]:
    obj = {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}, "uid": f"uid-{name}"},
        "spec": {"containers": [{"name": "main", "resources": {"limits": {GPU: str(gpus)}}}]},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
    if node_name:
        obj["spec"]["nodeName"] = node_name
    for key, value in extra.items():
        obj[key].update(value)
    return obj


def pod_spec(gpus: int = 1, tolerations: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    return {"containers": [{"name": "ws", "resources": {"requests": {GPU: str(gpus)}, "limits": {GPU: str(gpus)}}}],
            "tolerations": GPU_TOLERATIONS if tolerations is None else tolerations}


def workspace(name: str = "llm", *, count: int = 1, instance_type: str = "Standard_NC24ads_A100_v4",
              selector: Optional[dict[str, Any]] = None, preferred: Optional[list[str]] = None,
              adapters: Optional[list[dict[str, Any]]] = None, preset: str = "falcon-7b",
              pull_secrets: Optional[list[str]] = None, namespace: Optional[str] = None) -> Workspace:
    resource: dict[str, Any] = {"count": count, "instanceType": instance_type,
                                "labelSelector": selector if selector is not None else {"matchLabels": {"apps": "llm"}}}
    if preferred:
        resource["preferredNodes"] = preferred
    preset_spec: dict[str, Any] = {"name": preset}
    if pull_secrets:
        preset_spec = {"name": preset, "accessMode": "private",
                       "presetOptions": {"image": "registry.example.com/falcon:1", "imagePullSecrets": pull_secrets}}
    inference: dict[str, Any] = {"preset": preset_spec}
    if adapters:
        inference["adapters"] = adapters
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return Workspace.model_validate({"apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "metadata": meta,
                                     "resource": resource, "inference": inference})
