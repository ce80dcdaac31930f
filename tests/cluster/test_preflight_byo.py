"""Preflight on your own nodes (empty instanceType): GPU facts from GPU Feature Discovery labels; partitions."""

from __future__ import annotations

from typing import Any, Optional

from kaitoctl.plan import default_plan
from kaitoctl.preflight import check, gfd_shape
from kaitoctl.render import render_workspace
from kaitoctl.workspace import Workspace

A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920"}
A10 = {"nvidia.com/gpu.product": "NVIDIA-A10", "nvidia.com/gpu.memory": "23028"}


def node(name: str, gpus: int, gfd: Optional[dict[str, str]], extra: Optional[dict[str, str]] = None,
         allocatable: Optional[dict[str, str]] = None) -> dict[str, Any]:
    labels = {"apps": "mine", "node.kubernetes.io/instance-type": "some-vm-size", **(extra or {})}
    if gfd is not None:
        labels.update(gfd, **{"nvidia.com/gpu.count": str(gpus)})
    return {"metadata": {"name": name, "labels": labels},
            "spec": {},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus), **(allocatable or {})},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def byo(preset: str, partition: Optional[dict[str, Any]] = None) -> Workspace:
    resource: dict[str, Any] = {"instanceType": "", "labelSelector": {"matchLabels": {"apps": "mine"}}}
    if partition:
        resource["partition"] = partition
    return Workspace.model_validate({"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                                     "metadata": {"name": "mine"}, "resource": resource,
                                     "inference": {"preset": {"name": preset}}})


def preflight(ws: Workspace, nodes: list[dict[str, Any]]):
    shape = gfd_shape(ws, nodes)
    plan = default_plan(ws, node_gpus=shape.count, per_gpu_bytes=shape.per_gpu_bytes) if shape else default_plan(ws)
    workload = render_workspace(ws, plan)[-1]
    return check(ws, workload["spec"]["template"]["spec"], nodes, [], namespace="default")


def test_gpus_per_pod_come_from_the_labels_and_the_model_fits() -> None:
    report = preflight(byo("llama-3.3-70b-instruct"), [node("n1", 4, A100)])
    assert report.ok, report.problems
    assert report.gpus_per_pod == 2  # 145Gi over 80 GB GPUs; the instance-type label is no mismatch here
    assert [r.name for r in report.fitting] == ["n1"]


def test_too_little_gpu_memory_is_named() -> None:
    report = preflight(byo("phi-4"), [node("n1", 1, A10)])
    assert not report.ok
    assert any("less than the 31Gi preset phi-4 needs" in w for w in report.rows[0].why_not), report.rows[0].why_not


def test_compute_capability_from_the_product_label() -> None:
    report = preflight(byo("deepseek-r1-0528"), [node("n1", 8, A100)])
    assert any("compute capability 8.0" in w and "FP8" in w for w in report.rows[0].why_not)


def test_nodes_without_labels_warn_and_unalike_nodes_too() -> None:
    assert any("no GPU Feature Discovery labels" in w for w in preflight(byo("phi-4-mini-instruct"),
                                                                        [node("n1", 1, None)]).warnings)
    mixed = preflight(byo("phi-4-mini-instruct"), [node("n1", 1, A100), node("n2", 1, A10)])
    assert any("GPUs differ" in w for w in mixed.warnings)


def test_mig_partition_needs_the_mig_resource_on_the_node() -> None:
    ws = byo("phi-4-mini-instruct", {"mode": "mig", "profile": "3g.40gb"})
    container = render_workspace(ws, default_plan(ws))[-1]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"nvidia.com/mig-3g.40gb": "1"},
                                      "limits": {"nvidia.com/mig-3g.40gb": "1"}}
    missing = preflight(ws, [node("n1", 0, None)])
    assert "no nvidia.com/mig-3g.40gb allocatable (is MIG configured with this profile there?)" in \
        missing.rows[0].why_not
    present = preflight(ws, [node("n1", 0, None, allocatable={"nvidia.com/mig-3g.40gb": "2"})])
    assert present.ok, present.problems


def test_accelerator_partition_requests_whole_gpus() -> None:
    ws = byo("phi-4-mini-instruct", {"mode": "accelerator", "count": 2})
    container = render_workspace(ws, default_plan(ws))[-1]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
