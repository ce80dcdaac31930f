"""The simulated kube-scheduler: bind each pending pod to a node that fits, or say why none does.

Filters run in kube-scheduler's order and each node reports the first one it fails
(NodeUnschedulable, TaintToleration, NodeAffinity, NodeResourcesFit); the reasons
are counted into the scheduler's message, e.g.
``0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match Pod's node affinity/selector.``
"""

from __future__ import annotations

import copy
from collections import Counter
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from .cluster import Cluster, is_terminating, set_condition
from .selectors import node_term_matches

UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
NOT_READY_TAINT = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}


def quantity(value: Any) -> Decimal:
    return Decimal(parse_quantity(str(value)))


def pod_requests(spec: dict[str, Any]) -> dict[str, Decimal]:
    """Effective requests: max(sum of containers, largest init container), per resource.

    Extended resources given only as limits count as requested, as on a real cluster.
    """

    def container_requests(container: dict[str, Any]) -> dict[str, Decimal]:
        resources = container.get("resources") or {}
        merged = dict(resources.get("limits") or {})
        merged = {k: v for k, v in merged.items() if "/" in k}
        merged.update(resources.get("requests") or {})
        return {k: quantity(v) for k, v in merged.items()}

    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for name, amount in container_requests(container).items():
            total[name] = total.get(name, Decimal(0)) + amount
    for container in spec.get("initContainers") or []:
        for name, amount in container_requests(container).items():
            total[name] = max(total.get(name, Decimal(0)), amount)
    return total


def tolerates(toleration: dict[str, Any], taint: dict[str, Any]) -> bool:
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    operator = toleration.get("operator") or "Equal"
    if not toleration.get("key"):
        return operator == "Exists"
    if toleration["key"] != taint.get("key"):
        return False
    return operator == "Exists" or (toleration.get("value") or "") == (taint.get("value") or "")


def node_ready(node: dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def affinity_matches(spec: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = node["metadata"].get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
        or {}
    )
    terms = required.get("nodeSelectorTerms")
    if terms is None:
        return True
    return any(node_term_matches(t, labels, node["metadata"]["name"]) for t in terms)


def preference_score(spec: dict[str, Any], node: dict[str, Any]) -> int:
    labels = node["metadata"].get("labels") or {}
    preferred = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    ) or []
    return sum(
        int(p.get("weight") or 0)
        for p in preferred
        if node_term_matches(p.get("preference") or {}, labels, node["metadata"]["name"])
    )


def cached_requests(cluster: Cluster, pod: dict[str, Any]) -> dict[str, Decimal]:
    """pod_requests, computed once per pod (a pod's resources never change)."""
    uid = pod["metadata"]["uid"]
    if uid not in cluster.requests_cache:
        cluster.requests_cache[uid] = pod_requests(pod["spec"])
    return cluster.requests_cache[uid]


def node_usage(cluster: Cluster) -> dict[str, dict[str, Decimal]]:
    """Requests of every non-terminated pod bound to each node (terminating pods still count)."""
    usage: dict[str, dict[str, Decimal]] = {}
    for pod in cluster.store.items("pods"):
        node = pod["spec"].get("nodeName")
        if not node or pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        used = usage.setdefault(node, {})
        for name, amount in cached_requests(cluster, pod).items():
            used[name] = used.get(name, Decimal(0)) + amount
    return usage


def first_failure(spec: dict[str, Any], node: dict[str, Any], used: dict[str, Decimal]) -> list[str]:
    """Why this node cannot take the pod ([] when it can), in the scheduler's words."""
    tolerations = spec.get("tolerations") or []
    if (node.get("spec") or {}).get("unschedulable") and not any(tolerates(t, UNSCHEDULABLE_TAINT) for t in tolerations):
        return ["node(s) were unschedulable"]
    taints = list((node.get("spec") or {}).get("taints") or [])
    if not node_ready(node) and not any(t.get("key") == NOT_READY_TAINT["key"] for t in taints):
        taints.append(NOT_READY_TAINT)
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"]
    if not affinity_matches(spec, node):
        return ["node(s) didn't match Pod's node affinity/selector"]
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    missing = []
    for name, amount in sorted(pod_requests(spec).items()):
        if amount <= 0:
            continue
        free = quantity(allocatable.get(name, "0")) - used.get(name, Decimal(0))
        if amount > free:
            missing.append(f"Insufficient {name}")
    return missing


def unschedulable_message(failures: Counter[str], node_count: int) -> str:
    if node_count == 0:
        return "no nodes available to schedule pods"
    reasons = sorted(f"{count} {reason}" for reason, count in failures.items())
    return f"0/{node_count} nodes are available: {', '.join(reasons)}."


def schedule(cluster: Cluster) -> None:
    """One scheduling pass over every pending pod."""
    store = cluster.store
    nodes = store.items("nodes")
    usage = node_usage(cluster)
    for pod in store.items("pods"):
        spec = pod["spec"]
        if spec.get("nodeName") or is_terminating(pod) or spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            continue
        failures: Counter[str] = Counter()
        candidates = []
        for node in nodes:
            name = node["metadata"]["name"]
            reasons = first_failure(spec, node, usage.get(name, {}))
            if reasons:
                failures.update(reasons)
                continue
            gpus = quantity(((node.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", "0"))
            free = gpus - usage.get(name, {}).get("nvidia.com/gpu", Decimal(0))
            candidates.append((-preference_score(spec, node), -free, name))
        if candidates:
            chosen = min(candidates)[2]
            used = usage.setdefault(chosen, {})
            for resource, amount in pod_requests(spec).items():
                used[resource] = used.get(resource, Decimal(0)) + amount
            _bind(cluster, pod, chosen)
        else:
            _mark_unschedulable(cluster, pod, unschedulable_message(failures, len(nodes)))


def _bind(cluster: Cluster, pod: dict[str, Any], node: str) -> None:
    bound = copy.deepcopy(pod)
    bound["spec"]["nodeName"] = node
    set_condition(bound["status"], {"type": "PodScheduled", "status": "True"}, cluster.now())
    stored = cluster.store.update("pods", bound)
    meta = pod["metadata"]
    cluster.emit(
        stored,
        "Normal",
        "Scheduled",
        f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}",
        "default-scheduler",
    )


def _mark_unschedulable(cluster: Cluster, pod: dict[str, Any], message: str) -> None:
    for condition in pod["status"].get("conditions") or []:
        if condition["type"] == "PodScheduled" and condition.get("message") == message:
            return
    updated = copy.deepcopy(pod)
    set_condition(
        updated["status"],
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message},
        cluster.now(),
    )
    stored = cluster.store.update("pods", updated)
    cluster.emit(stored, "Warning", "FailedScheduling", message, "default-scheduler")
