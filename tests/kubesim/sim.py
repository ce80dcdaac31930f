"""``KubeSim``: one test's view of the session's real control plane, with the suite's hooks.

    with KubeSim() as sim:
        sim.add_node("gpu-1", gpus=1, instance_type="Standard_NC6s_v3")
        run(["kaitoctl", "apply", "-f", path, "--kubeconfig", sim.kubeconfig_path])

The control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok; see
controlplane.py) starts on first use and serves the whole session. A ``KubeSim`` adds, for one
test: a fault-injecting proxy (proxy.py) that kaitoctl's kubeconfig points at, the "image
registry" that tells kwok's Stages what each pod's images do, and on exit a cleanup that leaves
the cluster as it found it (no nodes, no workloads, no test namespaces' objects). Use one
``KubeSim`` at a time. See README.md for the hooks.
"""

from __future__ import annotations

import base64
import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

import requests
import yaml

from . import controlplane
from .controlplane import ADMIN_TOKEN, USER_NAME, USER_TOKEN
from .proxy import FaultProxy

T = TypeVar("T")
Taint = dict[str, str] | str
A = "kubesim.kaitoctl.io/"
FAKE_NODE = "kwok.x-k8s.io/node"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
BEHAVIOURS = ("ok", "pull_error", "crash", "oom", "init_error", "never_ready", "slow")
DEFAULT_LOGS = {
    "crash": ("Traceback (most recent call last):\n"
              '  File "/workspace/server.py", line 1, in <module>\n'
              "RuntimeError: simulated crash\n"),
    "oom": "loading model weights\n",
    "init_error": "cp: can't stat '/data/*': No such file or directory\n",
}

# kind / plural / short name -> (API prefix, plural, namespaced)
_KINDS: dict[str, tuple[str, str, bool]] = {}
for _kind, _prefix, _plural, _ns, _short in [
    ("Namespace", "/api/v1", "namespaces", False, ("ns",)),
    ("Node", "/api/v1", "nodes", False, ("no",)),
    ("Pod", "/api/v1", "pods", True, ("po",)),
    ("Event", "/api/v1", "events", True, ("ev",)),
    ("Service", "/api/v1", "services", True, ("svc",)),
    ("Secret", "/api/v1", "secrets", True, ()),
    ("ConfigMap", "/api/v1", "configmaps", True, ("cm",)),
    ("ServiceAccount", "/api/v1", "serviceaccounts", True, ("sa",)),
    ("Deployment", "/apis/apps/v1", "deployments", True, ("deploy",)),
    ("ReplicaSet", "/apis/apps/v1", "replicasets", True, ("rs",)),
    ("StatefulSet", "/apis/apps/v1", "statefulsets", True, ("sts",)),
    ("ControllerRevision", "/apis/apps/v1", "controllerrevisions", True, ()),
    ("Lease", "/apis/coordination.k8s.io/v1", "leases", True, ()),
    ("ValidatingAdmissionPolicy", "/apis/admissionregistration.k8s.io/v1", "validatingadmissionpolicies", False,
     ()),
    ("ValidatingAdmissionPolicyBinding", "/apis/admissionregistration.k8s.io/v1",
     "validatingadmissionpolicybindings", False, ()),
]:
    for _alias in (_kind, _kind.lower(), _plural, *_short):
        _KINDS[_alias] = (_prefix, _plural, _ns)

# What forbid() can take away, per API group (RBAC has no "all but": the role lists the rest).
_RBAC_RESOURCES = {
    "": ["namespaces", "nodes", "pods", "pods/log", "pods/status", "pods/exec", "pods/portforward", "events",
         "services", "secrets", "configmaps", "serviceaccounts", "endpoints", "persistentvolumeclaims",
         "resourcequotas", "limitranges"],
    "apps": ["deployments", "deployments/status", "deployments/scale", "replicasets", "replicasets/status",
             "statefulsets", "statefulsets/status", "statefulsets/scale", "controllerrevisions", "daemonsets"],
    "events.k8s.io": ["events"],
    "authorization.k8s.io": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    "coordination.k8s.io": ["leases"],
    "discovery.k8s.io": ["endpointslices"],
    "batch": ["jobs"],
}
_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
_ROLE = "kubesim-user"


def _taint(value: Taint) -> dict[str, str]:
    """Accept ``{"key":..,"value":..,"effect":..}`` or kubectl's ``key=value:Effect`` / ``key:Effect``."""
    if isinstance(value, dict):
        return dict(value)
    key_value, _, effect = value.rpartition(":")
    key, _, taint_value = key_value.partition("=")
    taint = {"key": key, "effect": effect}
    if taint_value:
        taint["value"] = taint_value
    return taint


def _ready(obj: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: Optional[str] = None,
               interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class KubeSim:
    """One test's handle on the real control plane; the hooks of the former simulator, kept."""

    def __init__(self, *, tick_seconds: float = 0.025, token: str = USER_TOKEN, **_ignored: Any) -> None:
        # tick_seconds only scales `slow` (ticks x tick_seconds of wall time); the simulator's other
        # clock settings have no meaning on a real control plane and are accepted for compatibility.
        self.tick_seconds = tick_seconds
        self.token = token
        self.internal_errors: list[str] = []
        self.behaviours: dict[str, tuple[str, dict[str, Any]]] = {}
        self.plane: Optional[controlplane.ControlPlane] = None
        self.proxy: Optional[FaultProxy] = None
        self._dir = Path(tempfile.mkdtemp(prefix="kubesim-"))
        self.kubeconfig_path = str(self._dir / "kubeconfig")
        self._fake_nodes: set[str] = set()
        self._forbidden: set[tuple[str, str]] = set()
        self._ready_times: dict[tuple[str, str], float] = {}
        self.http = requests.Session()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "KubeSim":
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop()

    def start(self) -> "KubeSim":
        self.plane = controlplane.shared()
        self.http.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        self.http.verify = str(self.plane.ca)
        self.proxy = FaultProxy(self.plane.port, str(self.plane.ca), str(self.plane.key), str(self.plane.ca),
                                self._log_for).start()
        Path(self.kubeconfig_path).write_text(
            yaml.safe_dump(self.plane.kubeconfig(self.token, "sim-user", self.proxy.url)))
        self._set_role()
        # The RBAC authorizer reads roles and bindings from its informer cache, so a binding written on a
        # fresh control plane may not count yet for kaitoctl's first request: wait until it does.
        wait_until(lambda: self._allowed("patch", "deployments"), 10, "kaitoctl's user to be allowed")
        _Registry.attach(self)
        for pod in self.list("Pod"):
            self._seen(pod)
        self._pulls_stop = threading.Event()
        self._pulls = threading.Thread(target=self._pull_retries, daemon=True, name="kubesim-pull-retries")
        self._pulls.start()
        return self

    def _pull_retries(self, every: float = 1.0) -> None:
        """The kubelet retrying a failing pull: its Warning ``Failed`` "Failed to pull image ..." with the
        registry's answer, again every ``every`` seconds (count and lastTimestamp bumped). kwok's Stage
        events cannot carry the per-image message, so the fixture records them."""
        while not self._pulls_stop.wait(every):
            try:
                for pod in self.list("Pod"):
                    meta, spec = pod["metadata"], pod["spec"]
                    notes = meta.get("annotations") or {}
                    if notes.get(A + "fault") != "pull_error" or meta.get("deletionTimestamp"):
                        continue
                    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
                    image = next((c.get("image", "") for c in containers if c["name"] == notes.get(A + "container")),
                                 "")
                    self.add_event("Pod", meta["namespace"], meta["name"], "Failed",
                                   f'Failed to pull image "{image}": {notes.get(A + "message", "")}',
                                   type_="Warning", component="kubelet")
            except Exception:  # noqa: BLE001 - a pod gone meanwhile, or the test ending: next round
                continue

    def stop(self) -> None:
        if getattr(self, "_pulls", None) is not None:
            self._pulls_stop.set()
            self._pulls.join(timeout=10)
        try:
            self._cleanup()
        finally:
            _Registry.detach(self)
            if self.proxy is not None:
                self.proxy.stop()
            self.http.close()

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    @property
    def port(self) -> int:
        assert self.proxy is not None
        return self.proxy.port

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        assert self.proxy is not None
        return self.proxy.requests

    def clear_requests(self) -> None:
        assert self.proxy is not None
        self.proxy.clear()

    def kubeconfig(self) -> dict[str, Any]:
        return yaml.safe_load(Path(self.kubeconfig_path).read_text())

    def api_client(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig_path)

    # ------------------------------------------------------------------ REST as the admin

    def _path(self, kind: str, namespace: Optional[str], name: Optional[str] = None) -> str:
        prefix, plural, namespaced = _KINDS[kind]
        path = prefix + (f"/namespaces/{namespace}" if namespaced and namespace else "") + f"/{plural}"
        return path + (f"/{name}" if name else "")

    def _call(self, method: str, path: str, *, body: Any = None, params: Optional[dict[str, Any]] = None,
              content_type: str = "application/json", ok: tuple[int, ...] = (200, 201, 202)) -> Any:
        assert self.plane is not None
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        resp = self.http.request(method, self.plane.url + path, data=data, params=params, verify=self.http.verify,
                                 headers={"Content-Type": content_type}, timeout=30)
        if resp.status_code not in ok:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp.json() if resp.content else None

    def _try_get(self, path: str) -> Optional[dict[str, Any]]:
        assert self.plane is not None
        resp = self.http.get(self.plane.url + path, timeout=30, verify=self.http.verify)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json()

    def _create(self, kind: str, namespace: Optional[str], obj: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", self._path(kind, namespace), body=obj)

    def resource_version(self) -> int:
        """The cluster's current resourceVersion (etcd's revision)."""
        listed = self._call("GET", "/api/v1/namespaces", params={"limit": 1})
        return int(listed["metadata"]["resourceVersion"])

    # ------------------------------------------------------------------ cluster setup

    def add_namespace(self, name: str) -> dict[str, Any]:
        existing = self._try_get(f"/api/v1/namespaces/{name}")
        if existing is not None and not existing["metadata"].get("deletionTimestamp"):
            return existing
        if existing is not None:
            wait_until(lambda: self._try_get(f"/api/v1/namespaces/{name}") is None, 60, f"namespace {name} to go")
        return self._create("Namespace", None, {"metadata": {"name": name}})

    def add_node(self, name: str, labels: Optional[dict[str, str]] = None, gpus: int = 0,
                 taints: Iterable[Taint] = (), ready: bool = True, unschedulable: bool = False,
                 instance_type: Optional[str] = None, cpu: str = "8", memory: str = "32Gi") -> dict[str, Any]:
        """A node with ``gpus`` allocatable ``nvidia.com/gpu``; kwok plays its kubelet when ``ready``.

        A NotReady node is one whose kubelet does not run: nothing plays it, its Ready condition
        says KubeletNotReady and the node lifecycle controller keeps its not-ready taint.
        """
        all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                      "type": "kwok"}
        if instance_type:
            all_labels["node.kubernetes.io/instance-type"] = instance_type
            all_labels["beta.kubernetes.io/instance-type"] = instance_type
        all_labels.update(labels or {})
        capacity = {"cpu": str(cpu), "memory": str(memory), "pods": "110", "ephemeral-storage": "100Gi"}
        if gpus:
            capacity["nvidia.com/gpu"] = str(gpus)
        spec: dict[str, Any] = {"taints": [_taint(t) for t in taints]}
        if unschedulable:
            spec["unschedulable"] = True
        status: dict[str, Any] = {"capacity": capacity, "allocatable": dict(capacity)}
        annotations = {}
        if ready:
            annotations[FAKE_NODE] = "fake"
            self._fake_nodes.add(name)
        else:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            status["conditions"] = [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                     "message": "container runtime network not ready", "lastHeartbeatTime": now,
                                     "lastTransitionTime": now}]
        node = self._create("Node", None, {"metadata": {"name": name, "labels": all_labels,
                                                        "annotations": annotations},
                                           "spec": spec, "status": status})
        if ready:
            def settled() -> Optional[dict[str, Any]]:
                current = self._try_get(f"/api/v1/nodes/{name}")
                if current and _ready(current) and not any(
                        t.get("key") == "node.kubernetes.io/not-ready" for t in current["spec"].get("taints") or []):
                    return current
                return None
            node = wait_until(settled, 30, f"node {name} to turn Ready")
        return node

    def add_pod(self, namespace: str, name: str, node: str, gpus: int = 0, labels: Optional[dict[str, str]] = None,
                image: str = "registry.example/other-team/app:1.0") -> dict[str, Any]:
        """A pod that is none of the test's business, already bound to ``node`` and using ``gpus`` GPUs."""
        resources = {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
        self.add_namespace(namespace)
        pod = {"metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
               "spec": {"containers": [{"name": "app", "image": image, "resources": resources}],
                        "tolerations": [{"operator": "Exists"}], "terminationGracePeriodSeconds": 0}}
        if node in self._fake_nodes:
            # Bound by kube-scheduler itself (as a DaemonSet's pods are), not by nodeName: the scheduler then
            # counts its GPUs before the next pod comes, where its informer could still lag a direct binding.
            pod["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [
                    {"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}
        else:
            pod["spec"]["nodeName"] = node
        created = self._create("Pod", namespace, pod)
        if node in self._fake_nodes:
            created = wait_until(lambda: (lambda p: p if p and p["status"].get("phase") == "Running" else None)(
                self.get("Pod", namespace, name)), 30, f"pod {namespace}/{name} to run")
        return created

    def add_secret(self, namespace: str, name: str, data: Optional[dict[str, str]] = None,
                   type: str = "Opaque") -> dict[str, Any]:  # noqa: A002 - the Secret field is called type
        """A Secret; ``data`` values are plain strings (stored base64-encoded, as the API does)."""
        self.add_namespace(namespace)
        secret = {"metadata": {"name": name, "namespace": namespace}, "type": type,
                  "data": {k: base64.b64encode(v.encode()).decode() for k, v in (data or {}).items()}}
        return self._create("Secret", namespace, secret)

    # ------------------------------------------------------------------ reads

    def get(self, kind: str, namespace: Optional[str], name: str) -> Optional[dict[str, Any]]:
        """One object, or None. ``kind`` may be ``Deployment``, ``deployments``, ``deploy``..."""
        return self._try_get(self._path(kind, namespace, name))

    def list(self, kind: str, namespace: Optional[str] = None,
             label_selector: Optional[str] = None) -> list[dict[str, Any]]:
        """The objects of one kind (all namespaces when ``namespace`` is None), sorted by namespace and name."""
        params = {"labelSelector": label_selector} if label_selector else None
        items = self._call("GET", self._path(kind, namespace), params=params)["items"]
        return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def ready_time(self, namespace: str, pod: str) -> Optional[float]:
        """``time.time()`` when this process first saw the pod Ready (for latency benchmarks), or None."""
        return self._ready_times.get((namespace, pod))

    # ------------------------------------------------------------------ writes by others

    def update_as(self, manager: str, kind: str, namespace: Optional[str], name: str,
                  patch: dict[str, Any]) -> dict[str, Any]:
        """JSON-merge-patch an object as field manager ``manager`` (an Update, like ``kubectl edit``)."""
        return self._call("PATCH", self._path(kind, namespace, name), body=patch,
                          params={"fieldManager": manager}, content_type="application/merge-patch+json")

    def apply_as(self, manager: str, body: dict[str, Any], force: bool = False) -> dict[str, Any]:
        """A server-side apply of ``body`` by field manager ``manager``."""
        meta = body["metadata"]
        params = {"fieldManager": manager, "force": "true" if force else "false"}
        return self._call("PATCH", self._path(body["kind"], meta.get("namespace"), meta["name"]), body=body,
                          params=params, content_type="application/apply-patch+yaml")

    def delete(self, kind: str, namespace: Optional[str], name: str, propagation: str = "Background") -> None:
        self._call("DELETE", self._path(kind, namespace, name), body={"propagationPolicy": propagation},
                   ok=(200, 202, 404))

    def add_event(self, kind: str, namespace: Optional[str], name: str, reason: str, message: str,
                  type_: str = "Normal", component: str = "cluster-autoscaler") -> dict[str, Any]:
        """A real Event about an object, as another controller records it (e.g. the cluster autoscaler's
        ``TriggeredScaleUp`` on a pending pod); a repeat bumps count and lastTimestamp."""
        obj = self.get(kind, namespace, name)
        if obj is None:
            raise KeyError(f"{kind} {namespace}/{name} does not exist")
        meta = obj["metadata"]
        ns = namespace or "default"
        event_name = f"{meta['name']}.{component}.{reason}".lower()[:253]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        existing = self.get("Event", ns, event_name)
        if existing is not None:
            return self._call("PATCH", self._path("Event", ns, event_name),
                              body={"count": int(existing.get("count") or 1) + 1, "lastTimestamp": now,
                                    "message": message}, content_type="application/merge-patch+json")
        event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": event_name, "namespace": ns},
                 "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj["kind"], "name": meta["name"],
                                    "namespace": meta.get("namespace"), "uid": meta["uid"],
                                    "resourceVersion": meta.get("resourceVersion")},
                 "reason": reason, "message": message, "type": type_, "source": {"component": component},
                 "firstTimestamp": now, "lastTimestamp": now, "count": 1, "reportingComponent": component}
        return self._create("Event", ns, event)


    def set_image_behaviour(self, image: str, behaviour: str, **opts: Any) -> None:
        """What pods show for containers running ``image``: see README.md (``ok`` by default)."""
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; one of {', '.join(BEHAVIOURS)}")
        self.behaviours[image] = (behaviour, dict(opts))
        for pod in self.list("Pod"):
            if not pod["metadata"].get("deletionTimestamp") and image in _images(pod):
                self._classify(pod, force=True)

    def _annotations_for(self, pod: dict[str, Any]) -> dict[str, str]:
        spec = pod["spec"]
        delay_ms = 0
        for init, containers in ((True, spec.get("initContainers") or []), (False, spec.get("containers") or [])):
            for c in containers:
                behaviour, opts = self.behaviours.get(c.get("image", ""), ("ok", {}))
                if behaviour == "slow":
                    delay_ms += int(opts.get("ticks", 20) * self.tick_seconds * 1000)
                    continue
                if behaviour == "ok":
                    continue
                if init and behaviour in ("crash", "oom"):
                    behaviour = "init_error"
                if not init and behaviour == "init_error":
                    behaviour = "crash"
                out = {A + "fault": behaviour, A + "container": c["name"], A + "init": str(init).lower(),
                       A + "exit-code": str(opts.get("exit_code", 137 if behaviour == "oom" else 1)),
                       A + "reason": "OOMKilled" if behaviour == "oom" else "Error"}
                if behaviour in ("crash", "oom", "init_error") and opts.get("termination_message"):
                    # what the container wrote to its terminationMessagePath: the terminated state's message
                    out[A + "message"] = str(opts["termination_message"])
                if behaviour == "pull_error":
                    image = c.get("image", "")
                    out[A + "message"] = opts.get("message", f'rpc error: code = NotFound desc = failed to pull and '
                                                             f'unpack image "{image}": failed to resolve reference '
                                                             f'"{image}": {image}: not found')
                return out
        return {A + "fault": "ok", A + "delay": f"{delay_ms}ms"}

    def _classify(self, pod: dict[str, Any], force: bool = False) -> None:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") or pod["spec"].get("nodeName") not in self._fake_nodes:
            return
        have = meta.get("annotations") or {}
        if have.get(A + "fault") and not force:
            return
        want = self._annotations_for(pod)
        stale = {k: None for k in have if k.startswith(A) and k not in want}
        if all(have.get(k) == v for k, v in want.items()) and not stale:
            return
        try:
            self._call("PATCH", self._path("Pod", meta["namespace"], meta["name"]),
                       body={"metadata": {"annotations": {**stale, **want}}},
                       content_type="application/merge-patch+json", ok=(200, 404, 409))
        except Exception as err:  # noqa: BLE001 - reported at the end of the test
            self.internal_errors.append(f"classifying {meta['name']}: {err}")

    def _seen(self, pod: dict[str, Any]) -> None:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if key not in self._ready_times and _ready(pod):
            self._ready_times[key] = time.time()
        self._classify(pod)

    def _log_for(self, namespace: str, pod_name: str, container: Optional[str], previous: bool) -> str:
        pod = self.get("Pod", namespace, pod_name) or {"metadata": {}, "spec": {}}
        annotations = pod["metadata"].get("annotations") or {}
        containers = (pod["spec"].get("initContainers") or []) + (pod["spec"].get("containers") or [])
        name = container or (pod["spec"].get("containers") or [{"name": "?"}])[0]["name"]
        image = next((c.get("image", "") for c in containers if c["name"] == name), "")
        behaviour, opts = self.behaviours.get(image, ("ok", {}))
        fault = annotations.get(A + "fault", "ok")
        if annotations.get(A + "container") == name and fault in DEFAULT_LOGS:
            return opts.get("log") or DEFAULT_LOGS[fault]
        return opts.get("log") or f"[kubesim] {name} started\n"

    # ------------------------------------------------------------------ RBAC (a real restricted user)

    def _rules(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = [{"nonResourceURLs": ["*"], "verbs": ["get"]}]
        if not self._forbidden:
            return rules + [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
        for group, resources in _RBAC_RESOURCES.items():
            by_verbs: dict[tuple[str, ...], list[str]] = {}
            for resource in resources:
                verbs = tuple(v for v in _VERBS if not any(
                    fv in (v, "*") and fr in (resource, "*") for fv, fr in self._forbidden))
                if verbs:
                    by_verbs.setdefault(verbs, []).append(resource)
            for verbs, res in by_verbs.items():
                rules.append({"apiGroups": [group], "resources": res, "verbs": list(verbs)})
        return rules

    def _set_role(self) -> None:
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": _ROLE},
                "rules": self._rules()}
        binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": {"name": _ROLE},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": _ROLE},
                   "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER_NAME}]}
        base = "/apis/rbac.authorization.k8s.io/v1/clusterroles/"
        for path, obj in ((base + _ROLE, role), ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/" + _ROLE,
                                                  binding)):
            self._call("PATCH", path, body=obj, params={"fieldManager": "kubesim", "force": "true"},
                       content_type="application/apply-patch+yaml")

    def _allowed(self, verb: str, resource: str) -> bool:
        resource, _, sub = resource.partition("/")
        group = next((g for g, rs in _RBAC_RESOURCES.items() if resource in rs), "")
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                  "spec": {"user": USER_NAME, "groups": ["kubesim-users", "system:authenticated"],
                           "resourceAttributes": {"verb": verb, "resource": resource, "subresource": sub,
                                                  "group": group, "namespace": "default"}}}
        answer = self._call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review)
        return bool(answer["status"].get("allowed"))

    def _rbac_changed(self, verb: str, resource: str, allowed: bool) -> None:
        self._set_role()
        probe_verb = "get" if verb == "*" else verb
        probe_resource = "deployments" if resource == "*" else resource
        wait_until(lambda: self._allowed(probe_verb, probe_resource) == allowed, 10, "the RBAC change to apply")

    def forbid(self, verb: str, resource: str) -> None:
        """Take ``verb`` on ``resource`` (``deployments``, ``pods/log``, ``*``) away from kaitoctl's user."""
        self._forbidden.add((verb, resource))
        self._rbac_changed(verb, resource, False)

    def allow(self, verb: str, resource: str) -> None:
        self._forbidden.discard((verb, resource))
        self._rbac_changed(verb, resource, True)

    # ------------------------------------------------------------------ faults (the proxy)

    def fail_next(self, verb: str, resource: str, code: int, message: str,
                  causes: Optional[list[dict[str, str]]] = None, times: int = 1, after: int = 0) -> None:
        """The next matching request(s) through the proxy get this Status (``causes``: reason/field/message);
        ``after``: let that many matching requests through first (1: the dry run passes, the write fails)."""
        assert self.proxy is not None
        self.proxy.fail_next(verb, resource, code, message, causes, times, after)

    def clear_faults(self) -> None:
        """Forget every ``forbid`` (the role is given back) and every ``fail_next`` not used up yet."""
        assert self.proxy is not None
        self.proxy.clear_faults()
        if self._forbidden:
            probe = next(iter(self._forbidden))
            self._forbidden.clear()
            self._rbac_changed(*probe, True)

    def drop_watches(self) -> None:
        assert self.proxy is not None
        self.proxy.drop_watches()

    def expire_watch_history(self) -> None:
        """Open watches get a 410 Gone ERROR event, and so does any resume from an older resourceVersion."""
        assert self.proxy is not None
        self.proxy.expire(self.resource_version() + 1)

    # ------------------------------------------------------------------ time

    def advance(self, seconds: float) -> None:
        """Real time cannot be moved, so what kaitoctl measures grace periods from moves back instead.

        Every Event's ``firstTimestamp`` and every not-Ready pod's condition times go ``seconds``
        earlier (the admin may write both; ``lastTimestamp`` stays, so the cluster's latest time is
        still now), and a Deployment whose progressDeadlineSeconds would have passed gets
        progressDeadlineSeconds 1, so the deployment controller declares the deadline exceeded.
        """
        for event in self.list("Event"):
            first = event.get("firstTimestamp") or event.get("eventTime") or event.get("lastTimestamp")
            if first:
                meta = event["metadata"]
                self._call("PATCH", self._path("Event", meta["namespace"], meta["name"]),
                           body={"firstTimestamp": _shifted(first, seconds)},
                           content_type="application/merge-patch+json", ok=(200, 404))
        for pod in self.list("Pod"):
            meta = pod["metadata"]
            if meta["namespace"] in SYSTEM_NAMESPACES or _ready(pod) or meta.get("deletionTimestamp"):
                continue
            conditions = [{**c, "lastTransitionTime": _shifted(c["lastTransitionTime"], seconds)}
                          if c.get("lastTransitionTime") else c for c in pod["status"].get("conditions") or []]
            self._call("PATCH", self._path("Pod", meta["namespace"], meta["name"]) + "/status",
                       body={"metadata": {"resourceVersion": meta["resourceVersion"]},
                             "status": {"conditions": conditions}},
                       content_type="application/merge-patch+json", ok=(200, 404, 409))
        for deploy in self.list("Deployment"):
            if deploy["spec"].get("progressDeadlineSeconds", 600) <= seconds:
                meta = deploy["metadata"]
                self.update_as("kubesim-clock", "Deployment", meta["namespace"], meta["name"],
                               {"spec": {"progressDeadlineSeconds": 1}})
                # The clock is not a user: it must not own the field it moved (kaitoctl's next
                # server-side apply would meet a conflict no real cluster would have). The old
                # managedFields written back explicitly are taken as given by the API server.
                self._call("PATCH", self._path("Deployment", meta["namespace"], meta["name"]),
                           body={"metadata": {"managedFields": meta["managedFields"]}},
                           content_type="application/merge-patch+json")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Controllers, scheduler and kwok stand still (SIGSTOP); the API keeps serving."""
        assert self.plane is not None
        self.plane.pause()
        try:
            yield
        finally:
            self.plane.resume()

    def wait_until(self, predicate: Callable[[], T], timeout: float = 10.0, what: Optional[str] = None) -> T:
        return wait_until(predicate, timeout, what)

    # ------------------------------------------------------------------ cleanup

    def _cleanup(self) -> None:
        """Leave the control plane as the next test expects it: no nodes, no workloads, no grants taken."""
        if self.plane is None:
            return
        if self._forbidden:
            self._forbidden.clear()
            self._set_role()
        namespaces = [n["metadata"]["name"] for n in self.list("Namespace")
                      if n["metadata"]["name"] not in SYSTEM_NAMESPACES]
        collections = ("Deployment", "StatefulSet", "ReplicaSet", "ControllerRevision", "ConfigMap", "Secret",
                       "Event")
        deadline = time.monotonic() + 60
        while True:
            left = 0
            for ns in namespaces:
                for kind in collections:
                    self._call("DELETE", self._path(kind, ns), ok=(200, 404, 405),
                               params={"propagationPolicy": "Background"})
                for svc in self.list("Service", ns):
                    if svc["metadata"]["name"] != "kubernetes":
                        self.delete("Service", ns, svc["metadata"]["name"])
                        left += 1
                self._call("DELETE", self._path("Pod", ns), params={"gracePeriodSeconds": 0}, ok=(200, 404))
                left += len(self.list("Pod", ns)) + len(self.list("Deployment", ns)) + len(
                    self.list("ReplicaSet", ns)) + len(self.list("StatefulSet", ns))
            if not left or time.monotonic() > deadline:
                break

            time.sleep(0.1)
        self._call("DELETE", "/api/v1/nodes", ok=(200, 404))
        policies = self.list("ValidatingAdmissionPolicy")
        for kind in ("ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy"):
            self._call("DELETE", self._path(kind, None), ok=(200, 404))
        if policies:
            # The apiserver drops a deleted policy asynchronously: until it has, the next test's writes are denied.
            wait_until(lambda: self.admission_refusal() is None, 30,
                       "the deleted admission policies to stop being enforced")
        self._call("DELETE", self._path("Lease", "kube-node-lease"), ok=(200, 404))

    def admission_refusal(self) -> Optional[str]:
        """Why the apiserver refuses a plain Deployment (a dry run as the admin), or None when it admits it."""
        probe = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kubesim-admission-probe"},
                 "spec": {"selector": {"matchLabels": {"app": "probe"}}, "template": {
                     "metadata": {"labels": {"app": "probe"}},
                     "spec": {"containers": [{"name": "main", "image": "registry.example/probe:1"}]}}}}
        try:
            self._call("POST", "/apis/apps/v1/namespaces/default/deployments", body=probe, params={"dryRun": "All"})
        except RuntimeError as err:
            return str(err)
        return None


def _shifted(timestamp: str, seconds: float) -> str:
    """An RFC 3339 time ``seconds`` earlier, in the API's second precision."""
    import datetime

    when = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")) - datetime.timedelta(seconds=seconds)
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _images(pod: dict[str, Any]) -> set[str]:
    spec = pod.get("spec") or {}
    return {c.get("image", "") for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])}


class _Registry:
    """The image registry: one pod watch per session that hands pods to the current KubeSim,
    which annotates those on its fake nodes with what their images do (kwok's Stages read it)."""

    current: Optional[KubeSim] = None
    thread: Optional[threading.Thread] = None
    lock = threading.Lock()

    @classmethod
    def attach(cls, sim: KubeSim) -> None:
        with cls.lock:
            cls.current = sim
            if cls.thread is None:
                cls.thread = threading.Thread(target=cls.run, args=(sim.plane,), daemon=True, name="kubesim-registry")
                cls.thread.start()

    @classmethod
    def detach(cls, sim: KubeSim) -> None:
        with cls.lock:
            if cls.current is sim:
                cls.current = None

    @classmethod
    def run(cls, plane: controlplane.ControlPlane) -> None:
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        rv = ""
        while True:
            try:
                if not rv:
                    listed = http.get(plane.url + "/api/v1/pods", verify=str(plane.ca), timeout=30).json()
                    rv = listed["metadata"]["resourceVersion"]
                    for pod in listed["items"]:
                        cls.dispatch(pod)
                resp = http.get(plane.url + "/api/v1/pods", params={"watch": "true", "resourceVersion": rv,
                                                                    "allowWatchBookmarks": "true"},
                                stream=True, timeout=(5, 600), verify=str(plane.ca))
                for line in resp.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        rv = ""
                        break
                    rv = event["object"]["metadata"].get("resourceVersion", rv)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        cls.dispatch(event["object"])
            except Exception:  # noqa: BLE001 - the watch ended or the control plane stops: relist
                rv = ""
                time.sleep(0.2)

    @classmethod
    def dispatch(cls, pod: dict[str, Any]) -> None:
        with cls.lock:
            sim = cls.current
        if sim is not None:
            sim._seen(pod)
