"""GPUs per pod and the rollout strategy: the catalog's plan that offline render uses."""

from __future__ import annotations

import dataclasses

import pytest

from kaitoctl.catalog import get_preset, quantity_bytes
from kaitoctl.errors import InvalidWorkspace
from kaitoctl.plan import choose_strategy, default_plan, gpus_per_pod, template_gpus

GI = 2**30


def preset(gpu_count: int, total: str, *, distributed: bool = False, world_size: int = 1):
    base = get_preset("falcon-7b")
    return dataclasses.replace(
        base, gpu_count=gpu_count, total_gpu_memory=total, distributed=distributed, world_size=world_size
    )


@pytest.mark.parametrize(
    "model, count, node_gpus, per_gpu, expected",
    [
        (preset(1, "14Gi"), 1, 2, 16 * GI, 1),          # falcon-7b on a 2 x V100 node: one GPU is enough
        (preset(1, "16Gi"), 1, 2, 16 * 10**9, 2),       # 16Gi does not fit one 16 GB GPU: take two
        (preset(1, "30Gi"), 1, 4, 16 * GI, 2),          # ceil(30 / 16) = 2, more than the preset's minimum
        (preset(2, "14Gi"), 1, 4, 80 * GI, 2),          # never fewer than the preset's GPU count
        (preset(2, "90Gi"), 1, 1, 80 * GI, 1),          # never more than the node has (KAITO asks for 2)
        (preset(1, "200Gi"), 1, 8, 16 * GI, 8),         # capped at the node's GPUs
        (preset(2, "90Gi"), 1, None, None, 2),          # unknown SKU: the preset's GPU count
        (preset(8, "152Gi", distributed=True, world_size=8), 2, 4, 80 * GI, 4),  # world size / count
        (preset(8, "152Gi", distributed=True, world_size=8), 8, 1, 80 * GI, 1),
        (preset(2, "30Gi", distributed=True, world_size=2), 1, 2, 16 * GI, 2),
    ],
)
def test_gpus_per_pod(model, count, node_gpus, per_gpu, expected) -> None:
    assert gpus_per_pod(model, count, node_gpus, per_gpu) == expected


@pytest.mark.parametrize(
    "count, gpus, node_gpus, strategy",
    [
        (1, 1, 2, "RollingUpdate"),   # a second 1-GPU pod fits next to the first
        (1, 2, 2, "Recreate"),        # the pod takes the whole node
        (2, 1, 1, "Recreate"),        # 2 single-GPU nodes hold 2 pods, not 3
        (3, 2, 4, "RollingUpdate"),   # 3 nodes x 2 pods = 6 >= 4
        (1, 3, 4, "Recreate"),        # 4 // 3 = 1 pod per node
        (1, 1, None, "Recreate"),     # unknown SKU: cannot show a surge pod fits
        (1, 0, 1, "RollingUpdate"),   # no GPUs requested
    ],
)
def test_choose_strategy(count, gpus, node_gpus, strategy) -> None:
    chosen, reason = choose_strategy(count, gpus, node_gpus, "Standard_X")
    assert chosen == strategy
    assert reason.endswith(".") and len(reason) > 20


@pytest.mark.parametrize(
    "inference, resource, gpus, strategy",
    [
        ({"preset": {"name": "falcon-7b"}}, {"instanceType": "Standard_NC12s_v3"}, 1, "RollingUpdate"),
        ({"preset": {"name": "phi-3-mini-4k-instruct"}}, {"instanceType": "Standard_NC4as_T4_v3"}, 1, "Recreate"),
        ({"preset": {"name": "falcon-40b"}}, {"instanceType": "Standard_NC96ads_A100_v4"}, 2, "RollingUpdate"),
        ({"preset": {"name": "falcon-7b"}}, {"instanceType": "Standard_NX_unknown"}, 1, "Recreate"),
        ({"preset": {"name": "llama-2-70b", "accessMode": "private", "presetOptions": {"image": "r.io/l:1"}}},
         {"instanceType": "Standard_NC96ads_A100_v4", "count": 2}, 4, "Recreate"),
        ({"template": {"spec": {"containers": [{"name": "c", "image": "i:1", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}},
         {"instanceType": "Standard_NC12s_v3"}, 1, "RollingUpdate"),
    ],
)
def test_default_plan_from_catalog(make_ws, inference, resource, gpus, strategy) -> None:
    plan = default_plan(make_ws(inference=inference, resource=resource))
    assert (plan.gpus_per_pod, plan.strategy) == (gpus, strategy)
    assert plan.reason


def test_default_plan_fits_the_sku_memory(make_ws) -> None:
    # falcon-7b needs 14Gi: on a catalog SKU the pod's GPUs must hold it.
    from kaitoctl.catalog import get_sku

    sku = get_sku("Standard_NC12s_v3")
    plan = default_plan(make_ws())
    assert plan.gpus_per_pod * sku.gpu_memory_per_gpu_bytes >= quantity_bytes("14Gi")


def test_default_plan_unknown_preset(make_ws) -> None:
    with pytest.raises(InvalidWorkspace, match="presets list|known preset"):
        default_plan(make_ws(inference={"preset": {"name": "nope"}}))


@pytest.mark.parametrize(
    "template, gpus",
    [
        ({"spec": {"containers": [{"name": "a"}]}}, 0),
        ({"spec": {"containers": [{"resources": {"requests": {"nvidia.com/gpu": "2"}}}, {"resources": {"limits": {"nvidia.com/gpu": 1}}}]}}, 3),
        ({"spec": {"containers": ["junk", {"resources": {"limits": {"nvidia.com/gpu": "x"}}}]}}, 0),
        ({}, 0),
    ],
)
def test_template_gpus(template, gpus) -> None:
    assert template_gpus(template) == gpus
