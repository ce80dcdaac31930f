"""Preflight: will the cluster run this Workspace, and can an update surge? Pure functions on plain dicts.

KAITO never checks free GPUs, taints or pull secrets; users learn about them
from a Pending pod (kaito#242, #344). This module answers before anything is
written, from the nodes and pods the API returned:

- which nodes match the whole ``labelSelector`` (and the instance type, where
  the node carries the label), and for each: Ready, schedulable, taints the pod
  does not tolerate, allocatable ``nvidia.com/gpu`` minus what non-terminated
  pods on it already request, and whether one pod fits;
- ``preferredNodes`` that do not exist or do not match;
- enough room for ``count`` pods (for distributed presets: ``count`` nodes with
  the same GPU count);
- pull secrets the workspace names that are missing from the namespace;
- the rollout strategy: RollingUpdate (maxSurge 1, maxUnavailable 0) only when
  one more pod's GPUs fit next to the pods that will keep serving, else
  Recreate, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from kaitoctl.history import WORKSPACE_LABEL
from kaitoctl.plan import GPU_RESOURCE, Plan
from kaitoctl.workspace import Workspace

INSTANCE_TYPE_LABELS = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
# NVIDIA GPU Feature Discovery's node labels: what your own nodes (empty instanceType) tell about their GPUs.
GFD_PRODUCT = "nvidia.com/gpu.product"
GFD_COUNT = "nvidia.com/gpu.count"
GFD_MEMORY = "nvidia.com/gpu.memory"      # MiB per GPU
MIG_PREFIX = "nvidia.com/mig-"


@dataclass(frozen=True)
class GpuShape:
    """GPUs per node and memory per GPU, as GPU Feature Discovery labels say (the smallest matching node)."""

    count: int
    per_gpu_bytes: int
    product: str
    alike: bool           # every labelled matching node has the same product, count and memory


def gfd_of(labels: dict[str, str]) -> Optional[tuple[int, int, str]]:
    """(GPU count, bytes per GPU, product) from one node's GFD labels; None without them."""
    try:
        count, mib = int(labels[GFD_COUNT]), int(labels[GFD_MEMORY])
    except (KeyError, ValueError):
        return None
    return count, mib * 2**20, labels.get(GFD_PRODUCT, "")


def gfd_shape(ws: Workspace, nodes: list[dict[str, Any]]) -> Optional[GpuShape]:
    """The GPU shape of the nodes the workspace's labelSelector matches, from GFD labels (None: no labels)."""
    selector = ws.resource.labelSelector.model_dump(exclude_none=True) if ws.resource.labelSelector else None
    shapes = []
    for node in nodes:
        labels = (node.get("metadata") or {}).get("labels") or {}
        if selector_matches(selector, labels)[0]:
            shape = gfd_of(labels)
            if shape is not None:
                shapes.append(shape)
    if not shapes:
        return None
    count, per_gpu, product = min(shapes, key=lambda s: (s[0] * s[1], s[1]))
    return GpuShape(count, per_gpu, product, alike=len(set(shapes)) == 1)


def _gfd_problems(ws: Workspace, labels: dict[str, str], gpus: int) -> list[str]:
    """Why a node's GPUs (GFD labels) cannot hold the preset: memory for the pod's GPUs, compute capability."""
    from kaitoctl import catalog

    shape = gfd_of(labels)
    preset = catalog.get_preset(ws.preset_name or "") if ws.preset_name else None
    if shape is None or preset is None or preset.distributed or gpus <= 0:
        return []
    count, per_gpu, product = shape
    why = []
    if gpus * per_gpu < preset.total_gpu_memory_bytes:
        why.append(f"{gpus} × {product or 'GPU'} with {catalog.format_bytes(per_gpu)} each (GPU Feature Discovery "
                   f"labels) is less than the {preset.total_gpu_memory} preset {preset.name} needs")
    arch = catalog.architectures().get(preset.architecture) if preset.architecture else None
    gpu = catalog.get_gpu_model(product) if product else None
    if arch is not None and arch.min_compute_capability and gpu is not None and \
            catalog.compute_capability(gpu.compute_capability) < catalog.compute_capability(arch.min_compute_capability):
        why.append(f"{product} (compute capability {gpu.compute_capability}) cannot run {preset.architecture}: "
                   f"{arch.reason}")
    return why
TERMINATED_PHASES = ("Succeeded", "Failed")


# --------------------------------------------------------------------------------------------
# Small Kubernetes semantics


def parse_count(value: Any) -> int:
    """An integer resource quantity ("4", 4, "4000m" → 4); 0 when absent or unparsable."""
    if value is None:
        return 0
    text = str(value).strip()
    try:
        if text.endswith("m"):
            return int(text[:-1]) // 1000
        if text.endswith("k"):
            return int(text[:-1]) * 1000
        return int(float(text))
    except ValueError:
        return 0


def _container_gpus(container: dict[str, Any]) -> int:
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    # For extended resources a limit without a request implies an equal request.
    return parse_count(requests.get(GPU_RESOURCE, limits.get(GPU_RESOURCE)))


def pod_spec_gpus(spec: dict[str, Any]) -> int:
    """GPUs a pod with this spec holds: the containers' sum, or the largest init container if that is more."""
    main = sum(_container_gpus(c) for c in spec.get("containers") or [])
    init = max((_container_gpus(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def pod_ready(pod: dict[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def pod_holds_resources(pod: dict[str, Any]) -> bool:
    """A pod bound to a node that is not finished still holds its requests (the scheduler's view)."""
    return bool((pod.get("spec") or {}).get("nodeName")) and \
        (pod.get("status") or {}).get("phase") not in TERMINATED_PHASES


def selector_matches(selector: Optional[dict[str, Any]], labels: dict[str, str]) -> tuple[bool, list[str]]:
    """Whether ``labels`` satisfy a LabelSelector (matchLabels and matchExpressions), and why not."""
    if not selector:
        return True, []
    reasons: list[str] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            have = f"has {key}={labels[key]}" if key in labels else f"has no {key} label"
            reasons.append(f"label {key}={value} wanted, {have}")
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), list(expr.get("values") or [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(op, False)
        if not ok:
            shown = f" {values}" if values else ""
            have = f"has {key}={labels[key]}" if present else f"has no {key} label"
            reasons.append(f"{key} {op}{shown} not met ({have})")
    return not reasons, reasons


def tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """Kubernetes' toleration rule for one taint."""
    for tol in tolerations:
        effect = tol.get("effect")
        if effect and effect != taint.get("effect"):
            continue
        op = tol.get("operator", "Equal")
        key = tol.get("key")
        if not key and op == "Exists":
            return True
        if key != taint.get("key"):
            continue
        if op == "Exists" or (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def node_ready(node: dict[str, Any]) -> tuple[bool, str]:
    """Whether the node's Ready condition is True, and the condition's reason when not."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            if cond.get("status") == "True":
                return True, ""
            why = cond.get("reason") or cond.get("message") or f"Ready={cond.get('status')}"
            return False, why
    return False, "no Ready condition"


def _taint_text(taint: dict[str, Any]) -> str:
    value = f"={taint['value']}" if taint.get("value") else ""
    return f"{taint.get('key')}{value}:{taint.get('effect')}"


# --------------------------------------------------------------------------------------------
# The verdict


@dataclass
class NodeVerdict:
    """One row of the preflight table."""

    name: str
    instance_type: Optional[str]
    ready: bool
    schedulable: bool
    gpus_allocatable: int
    gpus_requested: int          # by every non-terminated pod on the node
    gpus_requested_ours: int     # of which by this workspace's own pods
    fits: bool
    gpus_requested_ours_unready: int = 0  # of which by its pods that are not Ready (the rollout replaces them)
    preferred: bool = False
    why_not: list[str] = field(default_factory=list)
    eligible: bool = True        # matches, Ready, schedulable, taints tolerated (GPUs aside)

    @property
    def gpus_free(self) -> int:
        return max(self.gpus_allocatable - self.gpus_requested, 0)

    @property
    def gpus_free_for_surge(self) -> int:
        """Free GPUs beside the workspace's serving pods (its pods that are not Ready give theirs up)."""
        return max(self.gpus_allocatable - self.gpus_requested + self.gpus_requested_ours_unready, 0)

    @property
    def gpus_free_if_replaced(self) -> int:
        """Free GPUs once this workspace's current pods are gone (they are replaced, not added to)."""
        return max(self.gpus_allocatable - self.gpus_requested + self.gpus_requested_ours, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.name,
            "instanceType": self.instance_type,
            "ready": self.ready,
            "schedulable": self.schedulable,
            "gpus": {"allocatable": self.gpus_allocatable, "requested": self.gpus_requested,
                     "requestedByThisWorkspace": self.gpus_requested_ours, "free": self.gpus_free},
            "fits": self.fits,
            "preferred": self.preferred,
            "whyNot": list(self.why_not),
        }


@dataclass
class PreflightReport:
    """Everything the preflight found; ``ok`` is False when ``problems`` is not empty."""

    workspace: str
    namespace: str
    gpus_per_pod: int
    count: int
    rows: list[NodeVerdict]
    unmatched_nodes: int                      # nodes outside the labelSelector (not in the table)
    problems: list[str]
    warnings: list[str]
    plan: Plan
    surge_fits: bool
    pods_of_workspace: int                    # non-terminated pods of the workspace now
    image: str = ""                           # "preset image R/x:t (registry from ...)": where pods pull from

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def fitting(self) -> list[NodeVerdict]:
        return [r for r in self.rows if r.fits]

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "namespace": self.namespace,
            "ok": self.ok,
            "gpusPerPod": self.gpus_per_pod,
            "count": self.count,
            "nodes": [r.to_dict() for r in self.rows],
            "nodesNotMatchingSelector": self.unmatched_nodes,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "strategy": self.plan.strategy,
            "strategyReason": self.plan.reason,
            "surgeFits": self.surge_fits,
            "image": self.image or None,
        }

    def surge_summary(self) -> list[str]:
        """Why a surge pod does not fit, and what would make it fit (for the refusal of an update)."""
        if not self.rows:
            return ["no node matches the workspace's labelSelector"]
        parts = []
        for row in self.rows:
            state = "" if row.eligible else f" ({'; '.join(w for w in row.why_not if 'GPU' not in w)})"
            parts.append(f"{row.name}: {row.gpus_free_for_surge} of {row.gpus_allocatable} GPUs free{state}")
        return [f"matching nodes: {', '.join(parts)}",
                f"a surge needs {self.gpus_per_pod} free GPU(s) on one Ready, schedulable matching node next to "
                "the serving pod(s)"]


def _slots(free: int, gpus_per_pod: int, cap: int) -> int:
    if gpus_per_pod <= 0:
        return cap
    return free // gpus_per_pod


def check(
    ws: Workspace,
    pod_spec: dict[str, Any],
    nodes: list[dict[str, Any]],
    pods: list[dict[str, Any]],
    *,
    namespace: str,
    distributed: bool = False,
    secrets: Optional[dict[str, bool]] = None,
    pods_complete: bool = True,
) -> PreflightReport:
    """The preflight verdict for ``ws`` whose pods will have ``pod_spec`` (the rendered pod template's spec).

    ``pods``: non-terminated pods of the cluster (all namespaces when
    ``pods_complete``; otherwise only some, and the GPU counts say so).
    ``secrets``: pull-secret name → exists in the namespace (None: not checked).
    """
    count = max(ws.resource.count, 1)
    gpus = pod_spec_gpus(pod_spec)
    tolerations = list(pod_spec.get("tolerations") or [])
    node_selector = dict(pod_spec.get("nodeSelector") or {})
    selector = ws.resource.labelSelector.model_dump(exclude_none=True) if ws.resource.labelSelector else None
    want_type = ws.resource.instanceType
    preferred = list(ws.resource.preferredNodes or [])
    problems: list[str] = []
    warnings: list[str] = []

    used: dict[str, int] = {}
    used_ours: dict[str, int] = {}
    used_ours_unready: dict[str, int] = {}
    ours_present = 0   # non-terminated pods of this workspace
    ours_serving = 0   # of which Ready on a node: they keep their GPUs while a surge pod starts
    for pod in pods:
        mine = _is_ours(pod, ws.name, namespace)
        if mine and (pod.get("status") or {}).get("phase") not in TERMINATED_PHASES:
            ours_present += 1
        if not pod_holds_resources(pod):
            continue
        node_name = pod["spec"]["nodeName"]
        n = pod_spec_gpus(pod.get("spec") or {})
        used[node_name] = used.get(node_name, 0) + n
        if mine and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            used_ours[node_name] = used_ours.get(node_name, 0) + n
            if pod_ready(pod):
                ours_serving += 1
            else:
                # A pod of ours that is not serving (a stuck or failing rollout) is replaced by the
                # next rollout without waiting: its GPUs count as free for the surge pod.
                used_ours_unready[node_name] = used_ours_unready.get(node_name, 0) + n

    rows: list[NodeVerdict] = []
    unmatched = 0
    by_name = {(n.get("metadata") or {}).get("name"): n for n in nodes}
    for name in preferred:
        node = by_name.get(name)
        if node is None:
            problems.append(f"preferred node {name!r} does not exist")
            continue
        labels = (node.get("metadata") or {}).get("labels") or {}
        ok, why = selector_matches(selector, labels)
        if not ok:
            problems.append(f"preferred node {name!r} does not match the labelSelector: {'; '.join(why)}")

    for node in sorted(nodes, key=lambda n: (n.get("metadata") or {}).get("name", "")):
        meta = node.get("metadata") or {}
        name = meta.get("name", "")
        labels = meta.get("labels") or {}
        ok, _ = selector_matches(selector, labels)
        ok_ns, _ = selector_matches({"matchLabels": node_selector} if node_selector else None, labels)
        if not (ok and ok_ns):
            unmatched += 1
            continue
        why: list[str] = []
        itype = next((labels[k] for k in INSTANCE_TYPE_LABELS if k in labels), None)
        if itype is not None and want_type.strip() and itype != want_type:
            why.append(f"instance type {itype} (workspace asks for {want_type})")
        if meta.get("deletionTimestamp"):
            why.append("being deleted")
        ready, ready_why = node_ready(node)
        if not ready:
            why.append(f"not Ready ({ready_why})")
        schedulable = not (node.get("spec") or {}).get("unschedulable")
        if not schedulable:
            why.append("cordoned (spec.unschedulable)")
        for taint in (node.get("spec") or {}).get("taints") or []:
            if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
                why.append(f"taint {_taint_text(taint)} not tolerated")
        alloc = parse_count(((node.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE))
        row = NodeVerdict(name=name, instance_type=itype, ready=ready, schedulable=schedulable,
                          gpus_allocatable=alloc, gpus_requested=used.get(name, 0),
                          gpus_requested_ours=used_ours.get(name, 0), fits=False, preferred=name in preferred,
                          why_not=why, eligible=not why, gpus_requested_ours_unready=used_ours_unready.get(name, 0))
        mig = next((k for k in _requested_resources(pod_spec) if k.startswith(MIG_PREFIX)), None)
        if mig is not None and parse_count(((node.get("status") or {}).get("allocatable") or {}).get(mig)) < 1:
            why.append(f"no {mig} allocatable (is MIG configured with this profile there?)")
        if ws.byo_nodes:
            why.extend(_gfd_problems(ws, labels, gpus))
        if gpus > 0:
            if alloc == 0:
                why.append(f"no {GPU_RESOURCE} allocatable (is the NVIDIA device plugin running there?)")
            elif alloc < gpus:
                why.append(f"has {alloc} GPU(s), a pod needs {gpus}")
            elif row.gpus_free_if_replaced < gpus:
                why.append(f"{row.gpus_free_if_replaced} GPU(s) free, a pod needs {gpus} "
                           f"({row.gpus_requested - row.gpus_requested_ours} requested by other pods)")
        row.fits = not why
        rows.append(row)

    if ws.byo_nodes:
        shape = gfd_shape(ws, nodes)
        if shape is None and rows:
            warnings.append(f"your own nodes carry no GPU Feature Discovery labels ({GFD_COUNT}, {GFD_MEMORY}): "
                            "the GPU memory fit is unchecked")
        elif shape is not None and not shape.alike:
            warnings.append("the matching nodes' GPUs differ (GPU Feature Discovery labels): KAITO expects alike "
                            f"nodes; kaitoctl planned for the smallest ({shape.count} × {shape.product})")
    if not pods_complete:
        warnings.append("GPUs requested by pods in other namespaces were not counted (no permission to list "
                        "pods in all namespaces): free GPU numbers may be too high")

    fitting = [r for r in rows if r.fits]
    cap = count + 1
    if not rows:
        problems.append(_no_match_message(selector, want_type, len(nodes)))
    elif distributed:
        groups: dict[int, list[NodeVerdict]] = {}
        for r in fitting:
            groups.setdefault(r.gpus_allocatable, []).append(r)
        best = max(groups.values(), key=len, default=[])
        if len(best) < count:
            if len(fitting) >= count:
                shapes = ", ".join(f"{r.name}: {r.gpus_allocatable}" for r in fitting)
                problems.append(f"a distributed preset needs {count} nodes with the same number of GPUs; "
                                f"the fitting nodes differ ({shapes})")
            else:
                problems.append(f"a distributed preset needs {count} fitting node(s) with {gpus} free GPU(s) each; "
                                f"{len(fitting)} fit{_fitting_names(fitting)}")
    else:
        room = sum(min(_slots(r.gpus_free_if_replaced, gpus, cap), cap) for r in fitting)
        if room < count:
            problems.append(f"{count} pod(s) of {gpus} GPU(s) each are needed; the matching nodes have room for "
                            f"{room}{_fitting_names(fitting)}")

    missing = sorted(name for name, present in (secrets or {}).items() if not present)
    for name in missing:
        problems.append(f"pull secret {name!r} does not exist in namespace {namespace!r}")

    surge_fits, strategy, reason = _strategy(rows, gpus, count, ours_serving, distributed, cap)
    order = sorted(fitting, key=lambda r: (not r.preferred, -r.gpus_free, r.name))
    plan = Plan(gpus_per_pod=gpus, strategy=strategy, reason=reason, nodes=tuple(r.name for r in order))
    return PreflightReport(workspace=ws.name, namespace=namespace, gpus_per_pod=gpus, count=count, rows=rows,
                           unmatched_nodes=unmatched, problems=problems, warnings=warnings, plan=plan,
                           surge_fits=surge_fits, pods_of_workspace=ours_present)


def _requested_resources(pod_spec: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        names.extend(resources.get("limits") or {})
        names.extend(resources.get("requests") or {})
    return names


def _is_ours(pod: dict[str, Any], name: str, namespace: str) -> bool:
    meta = pod.get("metadata") or {}
    return meta.get("namespace", namespace) == namespace and (meta.get("labels") or {}).get(WORKSPACE_LABEL) == name


def _fitting_names(fitting: list[NodeVerdict]) -> str:
    return f" ({', '.join(r.name for r in fitting)})" if fitting else ""


def _no_match_message(selector: Optional[dict[str, Any]], want_type: str, total: int) -> str:
    if total == 0:
        return "the cluster has no nodes"
    shown = []
    for k, v in ((selector or {}).get("matchLabels") or {}).items():
        shown.append(f"{k}={v}")
    for e in (selector or {}).get("matchExpressions") or []:
        shown.append(f"{e.get('key')} {e.get('operator')} {e.get('values') or ''}".strip())
    sel = ", ".join(shown) or "(empty)"
    return (f"none of the cluster's {total} node(s) match the labelSelector {sel}; label a GPU node "
            f"(kubectl label node NODE KEY=VALUE) or fix resource.labelSelector "
            f"({f'instance type {want_type}' if want_type.strip() else 'your own nodes: no instance type'})")


def _free_for_surge(row: NodeVerdict) -> str:
    """``NODE (N free)``, in the table's FREE numbers, and what this workspace's unready pods give back."""
    if row.gpus_free_for_surge == row.gpus_free:
        return f"{row.name} ({row.gpus_free} free)"
    return (f"{row.name} ({row.gpus_free} free now, {row.gpus_free_for_surge} once this workspace's pod(s) that "
            "are not Ready give theirs up)")


def _strategy(rows: list[NodeVerdict], gpus: int, count: int, ours_serving: int, distributed: bool,
              cap: int) -> tuple[bool, str, str]:
    """(surge fits, strategy, reason). A surge needs one more pod's GPUs while the serving pods keep theirs."""
    if distributed:
        return False, "Recreate", ("Distributed presets run as a StatefulSet whose pods form one torchrun job, so "
                                   "an update replaces them in place (downtime while the model loads).")
    if gpus <= 0:
        return True, "RollingUpdate", "The pods request no GPUs, so a surge pod can always be scheduled."
    eligible = [r for r in rows if r.eligible]
    # Pods still to place beside the serving ones, plus the surge pod.
    needed = max(count - ours_serving, 0) + 1
    room_now = sum(min(_slots(r.gpus_free_for_surge, gpus, cap), cap) for r in eligible
                   if r.gpus_allocatable >= gpus)
    if room_now >= needed:
        where = ", ".join(_free_for_surge(r) for r in eligible if r.gpus_free_for_surge >= gpus)
        return True, "RollingUpdate", (f"A second pod's {gpus} GPU(s) fit next to the serving pod(s) on {where}: "
                                       "an update starts the new pod and stops the old one only once the new one "
                                       "is Ready (maxSurge 1, maxUnavailable 0).")
    most = max((r.gpus_free_for_surge for r in eligible), default=0)
    return False, "Recreate", (f"No matching node has {gpus} GPU(s) free for a second pod next to the serving "
                               f"one(s) (most free on one node: {most}): an update stops the old pod(s) before "
                               "starting new ones.")
