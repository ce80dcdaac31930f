"""The simulated scheduler: fit by readiness, taints, node affinity and free GPUs; kube-scheduler's messages."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from . import KubeSim
from .manifests import container


def pod(name: str, gpus: int = 1, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": [container("main", "app:1", gpus)], **spec}}


def node_of(core: client.CoreV1Api, name: str) -> str | None:
    return core.read_namespaced_pod(name, "default").spec.node_name


def scheduling_failure(core: client.CoreV1Api, name: str) -> str | None:
    for condition in core.read_namespaced_pod(name, "default").status.conditions or []:
        if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
            return condition.message
    return None


GPU_POOL = {"nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]}


def test_unschedulable_message_counts_reasons_and_retries(sim: KubeSim, core: client.CoreV1Api) -> None:
    sim.add_node("cpu-node", labels={"pool": "cpu"}, gpus=1)
    sim.add_node("tainted", labels={"pool": "gpu"}, gpus=1, taints=["sku=gpu:NoSchedule"])
    sim.add_node("busy", labels={"pool": "gpu"}, gpus=1)
    sim.add_pod("other-team", "foreign", "busy", gpus=1)
    core.create_namespaced_pod("default", pod("p", affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": GPU_POOL}}))
    message = sim.wait_until(lambda: scheduling_failure(core, "p"))
    assert message == (
        "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, "
        "1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {sku: gpu}."
    )
    [event] = core.list_namespaced_event("default", field_selector="involvedObject.name=p,reason=FailedScheduling").items
    assert (event.type, event.message) == ("Warning", message)

    sim.add_node("fresh", labels={"pool": "gpu"}, gpus=1)
    assert sim.wait_until(lambda: node_of(core, "p")) == "fresh"


def test_tolerations_exists_and_equal(sim: KubeSim, core: client.CoreV1Api) -> None:
    sim.add_node("a", gpus=1, taints=["sku=gpu:NoSchedule"])
    sim.add_node("b", gpus=1, taints=["nvidia.com/gpu:NoExecute"])
    core.create_namespaced_pod("default", pod("eq", tolerations=[{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]))
    core.create_namespaced_pod("default", pod("ex", tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]))
    core.create_namespaced_pod("default", pod("wrong", tolerations=[{"key": "sku", "operator": "Equal", "value": "cpu"}]))
    assert sim.wait_until(lambda: node_of(core, "eq")) == "a"
    assert sim.wait_until(lambda: node_of(core, "ex")) == "b"
    assert sim.wait_until(lambda: scheduling_failure(core, "wrong")) == (
        "0/2 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: }, "
        "1 node(s) had untolerated taint {sku: gpu}."
    )


def test_not_ready_and_cordoned_nodes_are_skipped(sim: KubeSim, core: client.CoreV1Api) -> None:
    sim.add_node("down", gpus=1, ready=False)
    sim.add_node("cordoned", gpus=1, unschedulable=True)
    core.create_namespaced_pod("default", pod("p"))
    assert sim.wait_until(lambda: scheduling_failure(core, "p")) == (
        "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, "
        "1 node(s) were unschedulable."
    )


def test_node_affinity_operators_and_ored_terms(sim: KubeSim, core: client.CoreV1Api) -> None:
    sim.add_node("small", labels={"gpu-mem": "16", "zone": "a"}, gpus=0)
    sim.add_node("large", labels={"gpu-mem": "80", "zone": "a", "spot": "true"}, gpus=0)
    sim.add_node("other-zone", labels={"gpu-mem": "16", "zone": "b"}, gpus=0)

    def required(*terms: list[dict[str, Any]]) -> dict[str, Any]:
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": t} for t in terms]}}}

    cases = {
        "gt": (required([{"key": "gpu-mem", "operator": "Gt", "values": ["40"]}]), {"large"}),
        "lt-not-spot": (required([{"key": "gpu-mem", "operator": "Lt", "values": ["40"]}, {"key": "zone", "operator": "NotIn", "values": ["a"]}]), {"other-zone"}),
        "no-spot-zone-a": (required([{"key": "spot", "operator": "DoesNotExist"}, {"key": "zone", "operator": "In", "values": ["a"]}]), {"small"}),
        "either": (required([{"key": "spot", "operator": "Exists"}], [{"key": "zone", "operator": "In", "values": ["b"]}]), {"large", "other-zone"}),
    }
    for name, (affinity, _) in cases.items():
        core.create_namespaced_pod("default", pod(name, gpus=0, affinity=affinity))
    core.create_namespaced_pod("default", pod("selector", gpus=0, nodeSelector={"zone": "b"}))
    for name, (_, allowed) in cases.items():
        assert sim.wait_until(lambda: node_of(core, name)) in allowed
    assert sim.wait_until(lambda: node_of(core, "selector")) == "other-zone"


def test_preferred_affinity_weight_and_gpu_accounting(sim: KubeSim, core: client.CoreV1Api) -> None:
    sim.add_node("plain", gpus=2)
    sim.add_node("preferred", labels={"fast": "yes"}, gpus=2)
    preferred = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [{"key": "fast", "operator": "In", "values": ["yes"]}]}}
            ]
        }
    }
    core.create_namespaced_pod("default", pod("first", gpus=2, affinity=preferred))
    assert sim.wait_until(lambda: node_of(core, "first")) == "preferred"
    core.create_namespaced_pod("default", pod("second", gpus=1, affinity=preferred))
    assert sim.wait_until(lambda: node_of(core, "second")) == "plain"
    core.create_namespaced_pod("default", pod("third", gpus=2))
    assert sim.wait_until(lambda: scheduling_failure(core, "third")) == (
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    )
    core.delete_namespaced_pod("first", "default")
    assert sim.wait_until(lambda: node_of(core, "third")) == "preferred"


def test_cpu_and_memory_requests_count(sim: KubeSim, core: client.CoreV1Api) -> None:
    sim.add_node("n1", cpu="4", memory="8Gi")
    body = pod("big", gpus=0)
    body["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "3500m", "memory": "12Gi"}}
    core.create_namespaced_pod("default", body)
    assert sim.wait_until(lambda: scheduling_failure(core, "big")) == (
        "0/1 nodes are available: 1 Insufficient memory."
    )
