"""The placement plan: what the preflight decided, and what rendering needs from it.

Offline (``render``, ``validate``) a plan is derived from the SKU catalog alone
(:func:`default_plan`); against a cluster the preflight computes it from live
nodes and pods, using the same two building blocks (:func:`gpus_per_pod` and
:func:`choose_strategy`) with the numbers it read from the nodes. Rendering is
a pure function of (workspace, preset, SKU, plan).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kaitoctl.catalog import Preset, Sku
    from kaitoctl.workspace import Workspace

Strategy = Literal["RollingUpdate", "Recreate"]

GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class Plan:
    """Decisions that depend on where the workspace will run.

    gpus_per_pod: ``nvidia.com/gpu`` requested (and limited) per pod.
    strategy: Deployment strategy. ``RollingUpdate`` always means maxSurge 1,
        maxUnavailable 0 (a new pod must be Ready before an old one stops);
        ``Recreate`` is chosen when a second pod's GPUs cannot fit.
    reason: one sentence saying why that strategy was chosen (shown to the user).
    nodes: names of the nodes the preflight found fitting, best first (informational).
    """

    gpus_per_pod: int
    strategy: Strategy = "Recreate"
    reason: str = ""
    nodes: tuple[str, ...] = field(default_factory=tuple)


def gpus_per_pod(preset: "Preset", count: int, node_gpus: Optional[int], per_gpu_bytes: Optional[int]) -> int:
    """GPUs one pod of ``preset`` should request on a node with ``node_gpus`` GPUs of ``per_gpu_bytes`` each.

    Distributed presets split ``world_size`` processes evenly over ``count`` pods
    (one GPU per process). Otherwise a pod takes what the model needs on that
    node: at least the preset's GPU count, more when its total memory does not
    fit in that many GPUs of this node, but never more GPUs than the node has
    (KAITO asks for the preset minimum, which can exceed a node and leave the
    pod Pending forever). Unknown node shape (``None``): the preset's GPU count.
    """
    if preset.distributed:
        return max(1, preset.world_size // max(count, 1))
    needed = preset.gpu_count
    if node_gpus and per_gpu_bytes:
        needed = max(needed, math.ceil(preset.total_gpu_memory_bytes / per_gpu_bytes))
        needed = min(needed, node_gpus)
    return max(needed, 1)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def choose_strategy(count: int, gpus_per_pod: int, node_gpus: Optional[int], sku_name: str) -> tuple[Strategy, str]:
    """``RollingUpdate`` (surge) when ``count`` nodes can hold ``count + 1`` pods, else ``Recreate``.

    A surge update needs one extra pod's GPUs while every old pod still holds
    its own; on GPU nodes that is often impossible, and a RollingUpdate then
    wedges with the new pod Pending (peers-facts §1.8). Returns the strategy and
    one sentence saying why, for the user.
    """
    if gpus_per_pod <= 0:
        return "RollingUpdate", "The pods request no GPUs, so a surge pod can always be scheduled."
    if not node_gpus and not sku_name.strip():
        return "Recreate", (
            "Your own nodes (empty instanceType): their GPUs are known only to the preflight, so offline kaitoctl "
            "cannot show that a surge pod fits; an update stops the old pods before starting new ones."
        )
    if not node_gpus:
        return "Recreate", (
            f"Instance type {sku_name} is not in the SKU catalog, so kaitoctl cannot show that a surge pod fits; "
            "an update stops the old pods before starting new ones (downtime while the model loads)."
        )
    pods_per_node = node_gpus // gpus_per_pod
    shape = f"A {sku_name} node has {_n(node_gpus, 'GPU')} and a pod needs {gpus_per_pod}"
    if count * pods_per_node >= count + 1:
        return "RollingUpdate", (
            f"{shape}, so {_n(count, 'node')} can run a surge pod next to the {_n(count, 'running pod')}: "
            "a new pod becomes Ready before an old one stops."
        )
    return "Recreate", (
        f"{shape}, so {_n(count, 'node')} cannot run a surge pod next to the {_n(count, 'running pod')}: "
        "an update stops the old pods before starting new ones (downtime while the model loads)."
    )


def template_gpus(template: dict[str, Any]) -> int:
    """``nvidia.com/gpu`` a custom pod template asks for (limits, else requests), summed over its containers."""
    spec = template.get("spec") if isinstance(template, dict) else None
    total = 0
    for container in (spec or {}).get("containers") or []:
        if not isinstance(container, dict):
            continue
        resources = container.get("resources") or {}
        value = (resources.get("limits") or {}).get(GPU_RESOURCE, (resources.get("requests") or {}).get(GPU_RESOURCE, 0))
        try:
            total += int(str(value))
        except ValueError:
            continue
    return total


def default_plan(ws: "Workspace", *, node_gpus: Optional[int] = None, per_gpu_bytes: Optional[int] = None,
                 shape_name: Optional[str] = None) -> Plan:
    """The plan for ``ws`` from the catalogs alone (offline ``render``, ``apply --dry-run``).

    Assumes every node is an empty node of ``resource.instanceType``. The
    cluster preflight replaces this with a plan computed from live nodes. For
    your own nodes (empty instanceType) the caller may give the node shape
    (GPUs per node, bytes per GPU, a name for messages) from their GPU Feature
    Discovery labels.
    """
    from kaitoctl.catalog import get_preset, get_sku
    from kaitoctl.errors import InvalidWorkspace

    count = max(ws.resource.count, 1)
    sku_name = ws.resource.instanceType
    sku: Optional[Sku] = get_sku(sku_name)
    if sku is not None:
        node_gpus, per_gpu_bytes = sku.gpu_count, sku.gpu_memory_per_gpu_bytes
    elif node_gpus:
        sku_name = shape_name or "your own"

    inference = ws.inference
    if inference is not None and inference.template is not None and inference.preset is None:
        gpus = template_gpus(inference.template)
        strategy, reason = choose_strategy(count, gpus, node_gpus, sku_name)
        return Plan(gpus_per_pod=gpus, strategy=strategy, reason=reason)

    name = ws.preset_name
    preset = get_preset(name) if name else None
    if preset is None:
        raise InvalidWorkspace(
            f"workspace {ws.name!r}: cannot plan placement without a known preset (inference.preset.name: {name!r})",
            hint="run `kaitoctl presets list` for the valid names",
        )
    gpus = gpus_per_pod(preset, count, node_gpus, per_gpu_bytes)
    partition = ws.resource.partition
    if partition is not None:
        # A MIG device is not an nvidia.com/gpu; N whole GPUs are exactly N.
        gpus = partition.count or 1 if partition.mode == "accelerator" else 0
    if preset.distributed:
        return Plan(
            gpus_per_pod=gpus,
            strategy="Recreate",
            reason=(
                "Distributed presets run as a StatefulSet whose pods form one torchrun job, so an update replaces "
                "them in place (downtime while the model loads)."
            ),
        )
    strategy, reason = choose_strategy(count, gpus, node_gpus, sku_name)
    return Plan(gpus_per_pod=gpus, strategy=strategy, reason=reason)
