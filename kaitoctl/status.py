"""Status: what runs, is it serving, and if not, why. Built from live objects only.

KAITO's Workspace status conditions (ResourceReady, InferenceReady,
WorkspaceSucceeded) are derived here from the workload, its pods and events,
so that ``kaitoctl status`` reads like ``kubectl get workspace`` without a
controller. The list view makes one LIST per kind for the namespace (or all
namespaces): the number of API calls does not grow with the number of
workspaces. The one-workspace view adds that workspace's events and history.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from kaitoctl.history import (MANAGED_BY, MANAGED_BY_LABEL, WORKSPACE_LABEL, adapters_of, recorded_workspace,
                              revision_of)
from kaitoctl.render import SERVICE_PORT
from kaitoctl.rollout import current_pods, describe_pod, event_time, rollout_status

KAITOCTL_SELECTOR = f"{WORKSPACE_LABEL},{MANAGED_BY_LABEL}={MANAGED_BY}"


@dataclass
class Condition:
    type: str
    status: str            # True | False | Unknown
    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type, "status": self.status, "reason": self.reason, "message": self.message}


@dataclass
class WorkspaceView:
    """One workspace as the cluster shows it."""

    name: str
    namespace: str
    kind: str
    workload: dict[str, Any]
    workspace: Optional[dict[str, Any]]
    pods: list[dict[str, Any]]
    service: Optional[dict[str, Any]]
    conditions: list[Condition]
    rollout_message: str
    failure: Optional[str] = None
    failure_details: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def revision(self) -> int:
        return revision_of(self.workload)

    @property
    def preset(self) -> str:
        inference = (self.workspace or {}).get("inference") or {}
        return ((inference.get("preset") or {}).get("name")) or ("template" if inference.get("template") else "?")

    @property
    def instance_type(self) -> str:
        return ((self.workspace or {}).get("resource") or {}).get("instanceType", "?")

    @property
    def adapters(self) -> list[dict[str, Any]]:
        return adapters_of(self.workspace)

    @property
    def replicas(self) -> int:
        return int((self.workload.get("spec") or {}).get("replicas", 1))

    @property
    def ready_replicas(self) -> int:
        return int((self.workload.get("status") or {}).get("readyReplicas", 0))

    @property
    def serving(self) -> bool:
        return self.ready_replicas > 0

    @property
    def nodes(self) -> list[str]:
        return sorted({(p.get("spec") or {}).get("nodeName") for p in self.pods
                       if (p.get("spec") or {}).get("nodeName")})

    @property
    def image(self) -> str:
        containers = (((self.workload.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers")
        return (containers or [{}])[0].get("image", "?")

    @property
    def strategy(self) -> str:
        spec = self.workload.get("spec") or {}
        return ((spec.get("strategy") or spec.get("updateStrategy") or {}).get("type")) or "?"

    def condition(self, ctype: str) -> str:
        return next((c.status for c in self.conditions if c.type == ctype), "Unknown")

    @property
    def endpoint(self) -> str:
        return endpoint(self.service, self.name, self.namespace)

    def age(self, now: Optional[datetime.datetime] = None) -> str:
        return age((self.workload.get("metadata") or {}).get("creationTimestamp"), now)

    def to_dict(self) -> dict[str, Any]:
        """A Workspace object as ``kubectl get workspace -o yaml`` would show it, status derived."""
        out = dict(self.workspace or {"apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace",
                                      "metadata": {"name": self.name, "namespace": self.namespace}})
        out["status"] = {
            "conditions": [c.to_dict() for c in self.conditions],
            "workerNodes": self.nodes,
            "readyReplicas": self.ready_replicas,
            "replicas": self.replicas,
            "revision": self.revision,
            "workload": f"{self.kind}/{self.name}",
            "endpoint": self.endpoint,
            "rollout": self.rollout_message,
        }
        if self.failure:
            out["status"]["failure"] = self.failure
        return out


def parse_time(text: Optional[str]) -> Optional[datetime.datetime]:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


def age(timestamp: Optional[str], now: Optional[datetime.datetime] = None) -> str:
    """kubectl's AGE: 42s, 5m, 3h, 12d."""
    then = parse_time(timestamp)
    if then is None:
        return "<unknown>"
    now = now or datetime.datetime.now(datetime.timezone.utc)
    seconds = max(int((now - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def endpoint(service: Optional[dict[str, Any]], name: str, namespace: str) -> str:
    """Where clients reach the workspace: the LoadBalancer address, the ClusterIP, or the DNS name."""
    if not service:
        return "<none>"
    spec = service.get("spec") or {}
    port = next((p.get("port") for p in spec.get("ports") or [] if p.get("name") == "http"), SERVICE_PORT)
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if spec.get("type") == "LoadBalancer" and ingress:
        host = ingress[0].get("ip") or ingress[0].get("hostname")
        return f"{host}:{port}"
    ip = spec.get("clusterIP")
    if ip and ip != "None":
        return f"{ip}:{port}"
    return f"{name}.{namespace}.svc:{port}"


def derive_conditions(workload: dict[str, Any], pods: list[dict[str, Any]],
                      events: list[dict[str, Any]]) -> tuple[list[Condition], str, Any]:
    """KAITO's three conditions from live objects, plus the rollout message and failure."""
    status = rollout_status(workload, pods, events)
    mine = [p for p in current_pods(workload, pods) if not (p.get("metadata") or {}).get("deletionTimestamp")]
    replicas = int((workload.get("spec") or {}).get("replicas", 1))
    scheduled = [p for p in mine if (p.get("spec") or {}).get("nodeName")]
    failure = status.failure
    if failure is not None and failure.reason == "Unschedulable":
        resource = Condition("ResourceReady", "False", "Unschedulable", failure.message)
    elif len(scheduled) >= replicas:
        resource = Condition("ResourceReady", "True", "workspaceResourceStatusSuccess", "workspace resource is ready")
    else:
        resource = Condition("ResourceReady", "False", "workspaceResourcePending",
                             f"{len(scheduled)} of {replicas} pod(s) placed on a node")
    if status.done:
        inference = Condition("InferenceReady", "True", "WorkspaceInferenceStatusSuccess",
                              "Inference has been deployed successfully")
    elif failure is not None:
        inference = Condition("InferenceReady", "False", failure.reason, failure.message)
    else:
        inference = Condition("InferenceReady", "False", "WorkspaceInferenceStatusPending", status.message)
    if resource.status == "True" and inference.status == "True":
        succeeded = Condition("WorkspaceSucceeded", "True", "workspaceSucceeded", "workspace succeeds")
    elif failure is not None:
        succeeded = Condition("WorkspaceSucceeded", "False", "workspaceFailed", failure.message)
    else:
        succeeded = Condition("WorkspaceSucceeded", "False", "workspacePending", "workspace has not completed")
    return [resource, inference, succeeded], status.message, failure


def build_views(workloads: list[dict[str, Any]], pods: list[dict[str, Any]], services: list[dict[str, Any]],
                events: Optional[list[dict[str, Any]]] = None) -> list[WorkspaceView]:
    """Views for every kaitoctl workload in the lists (grouped locally: no per-workspace calls)."""
    by_ns_name: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace", ""), (meta.get("labels") or {}).get(WORKSPACE_LABEL, ""))
        by_ns_name.setdefault(key, []).append(pod)
    svc_by = {((s.get("metadata") or {}).get("namespace", ""), (s.get("metadata") or {}).get("name")): s
              for s in services}
    views = []
    for workload in workloads:
        meta = workload.get("metadata") or {}
        name, namespace = meta.get("name", ""), meta.get("namespace", "")
        if (meta.get("labels") or {}).get(WORKSPACE_LABEL) != name:
            continue
        its_pods = by_ns_name.get((namespace, name), [])
        its_events = [e for e in events or [] if (e.get("metadata") or {}).get("namespace", namespace) == namespace]
        conditions, message, failure = derive_conditions(workload, its_pods, its_events)
        views.append(WorkspaceView(
            name=name, namespace=namespace, kind=workload.get("kind", "?"), workload=workload,
            workspace=recorded_workspace(workload), pods=sorted(its_pods, key=lambda p: p["metadata"]["name"]),
            service=svc_by.get((namespace, name)), conditions=conditions, rollout_message=message,
            failure=failure.message if failure else None, failure_details=list(failure.details) if failure else [],
        ))
    return sorted(views, key=lambda v: (v.namespace, v.name))


ALL_NAMESPACES_ROLE = "kaitoctl-status-all-namespaces"


def list_workspaces(kube: Any, namespace: Optional[str], all_namespaces: bool = False,
                    warn: Callable[[str], None] = lambda text: None) -> list[WorkspaceView]:
    """Every kaitoctl workspace of the namespace (or cluster): four LISTs, whatever their number.

    Workloads must be readable; pods and Services only add detail: when they are forbidden the
    list still comes, without them, and ``warn`` says what is missing and why.
    """
    from kaitoctl.errors import ClusterError
    from kaitoctl.kube import is_forbidden

    where = "in every namespace" if all_namespaces else f"in namespace {namespace or kube.namespace!r}"

    def lst(kind: str, selector: str, optional: bool = False) -> list[dict[str, Any]]:
        try:
            items, _ = kube.list(kind, namespace, all_namespaces=all_namespaces, label_selector=selector)
        except ClusterError as err:
            if not is_forbidden(err):
                raise
            grant = (f"the ClusterRole {ALL_NAMESPACES_ROLE} in docs/rbac.yaml grants it" if all_namespaces
                     else "the Role in docs/rbac.yaml grants it")
            if not optional:
                err.hint = f"{grant}, or list one namespace with -n NAMESPACE" if all_namespaces else grant
                raise
            warn(f"cannot list {kind.lower()}s {where} (forbidden): shown without them; {grant}")
            return []
        return items

    from concurrent.futures import ThreadPoolExecutor

    # The four LISTs go out together: one round trip of wall time instead of four.
    wanted = [("Deployment", KAITOCTL_SELECTOR, False), ("StatefulSet", KAITOCTL_SELECTOR, False),
              ("Pod", WORKSPACE_LABEL, True), ("Service", KAITOCTL_SELECTOR, True)]
    with ThreadPoolExecutor(len(wanted)) as pool:
        deployments, statefulsets, pods, services = pool.map(lambda w: lst(*w), wanted)
    return build_views(deployments + statefulsets, pods, services)


def get_workspace(kube: Any, name: str, namespace: Optional[str]) -> WorkspaceView:
    """One workspace with its events; NotFound when kaitoctl has no workload of that name there."""
    from kaitoctl.errors import NotFound

    ns = namespace or kube.namespace
    selector = f"{WORKSPACE_LABEL}={name}"
    workloads: list[dict[str, Any]] = []
    for kind in ("Deployment", "StatefulSet"):
        items, _ = kube.list(kind, ns, label_selector=selector)
        workloads.extend(items)
    workloads = [w for w in workloads if (w.get("metadata") or {}).get("name") == name]
    if not workloads:
        from kaitoctl.kube import namespace_missing

        raise namespace_missing(kube, ns) or NotFound(f"workspace {name!r} not found in namespace {ns!r}",
                       hint=f"`kaitoctl status -n {ns}` lists the workspaces there (-A: all namespaces)")
    pods, _ = kube.list("Pod", ns, label_selector=selector)
    services, _ = kube.list("Service", ns, label_selector=selector)
    from kaitoctl.errors import ClusterError
    from kaitoctl.kube import is_forbidden

    events: list[dict[str, Any]] = []
    try:
        events, _ = kube.list("Event", ns)
    except ClusterError as err:  # events only add detail; RBAC may hide them
        if not is_forbidden(err):
            raise
    for obj in workloads + pods + services:
        obj.setdefault("metadata", {}).setdefault("namespace", ns)
    view = build_views(workloads, pods, services, events)[0]
    view.events = sorted(own_events(name, workloads, pods, services, events), key=event_time)
    return view


def own_events(name: str, workloads: list[dict[str, Any]], pods: list[dict[str, Any]],
               services: list[dict[str, Any]], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events about this workspace's objects only (another workspace may be called ``<name>-2``)."""
    mine: set[tuple[str, str]] = {(o.get("kind", ""), o["metadata"]["name"]) for o in workloads + pods + services}
    for pod in pods:   # a Deployment's ReplicaSets are <deployment>-<pod-template-hash>
        template_hash = ((pod.get("metadata") or {}).get("labels") or {}).get("pod-template-hash")
        if template_hash:
            mine.add(("ReplicaSet", f"{name}-{template_hash}"))
    uids = {(o.get("metadata") or {}).get("uid") for o in workloads + pods + services} - {None}
    out = []
    for event in events:
        inv = event.get("involvedObject") or {}
        if (inv.get("kind", ""), inv.get("name", "")) in mine or (inv.get("uid") and inv.get("uid") in uids):
            out.append(event)
    return out


def pod_rows(view: WorkspaceView) -> list[dict[str, Any]]:
    """One row per pod with its containers' and init containers' states (for the one-workspace screen)."""
    rows = []
    for pod in view.pods:
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        statuses = status.get("containerStatuses") or []
        containers = []
        for kind_key, label in (("initContainerStatuses", "init"), ("containerStatuses", "container")):
            for cs in status.get(kind_key) or []:
                containers.append({"kind": label, "name": cs.get("name"), "state": container_state(cs),
                                   "restarts": cs.get("restartCount", 0), "ready": bool(cs.get("ready"))})
        rows.append({
            "name": pod["metadata"]["name"],
            "ready": f"{sum(1 for c in statuses if c.get('ready'))}/{len(spec.get('containers') or [])}",
            "status": describe_pod(pod, view.adapters),
            "restarts": sum(c.get("restartCount", 0) for c in statuses),
            "node": spec.get("nodeName") or "<none>",
            "age": age((pod.get("metadata") or {}).get("creationTimestamp")),
            "containers": containers,
        })
    return rows


def container_state(cs: dict[str, Any]) -> str:
    """``running``, ``waiting: ImagePullBackOff (msg)``, ``terminated: Completed`` plus the last termination."""
    state = cs.get("state") or {}
    if "running" in state:
        text = "running" + (", ready" if cs.get("ready") else ", not ready")
    elif "waiting" in state:
        waiting = state["waiting"] or {}
        text = f"waiting: {waiting.get('reason', '?')}"
        if waiting.get("message"):
            text += f" ({waiting['message'][:160]})"
    elif "terminated" in state:
        term = state["terminated"] or {}
        text = f"terminated: {term.get('reason', '?')} (exit code {term.get('exitCode', '?')})"
    else:
        text = "unknown"
    last = (cs.get("lastState") or {}).get("terminated")
    if last:
        text += f"; last exit: {last.get('reason', '?')} (exit code {last.get('exitCode', '?')})"
    return text


def port_forward_lines(view: WorkspaceView, local_port: int = 8080) -> list[str]:
    """Ready-to-paste commands to reach the workspace from this machine."""
    if not view.service:
        return []
    model = view.preset
    body = ('{"model":"%s","messages":[{"role":"user","content":"Hello!"}],"max_tokens":64}' % model)
    return [
        f"kubectl port-forward -n {view.namespace} service/{view.name} {local_port}:{SERVICE_PORT}",
        f"curl -s http://127.0.0.1:{local_port}/v1/chat/completions -H 'Content-Type: application/json' "
        f"-d '{body}'",
    ]
