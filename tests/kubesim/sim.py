"""``KubeSim``: a Kubernetes API server on 127.0.0.1 plus simulated controllers, for tests.

    with KubeSim() as sim:
        sim.add_node("gpu-1", gpus=1, instance_type="Standard_NC6s_v3")
        run(["kaitoctl", "apply", "-f", path, "--kubeconfig", sim.kubeconfig_path])

See README.md in this directory for the hooks and what is (not) simulated.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import yaml

from .api import MERGE, Api, Fault
from .cluster import Cluster
from .controllers import Controllers
from .kubelet import Kubelet
from .resources import lookup
from .scheduler import schedule
from .selectors import make_filter
from .server import SimServer

T = TypeVar("T")
Taint = dict[str, str] | str


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


class KubeSim:
    """A fake cluster reachable through ``kubeconfig_path``, driven by a background clock.

    Every ``tick_seconds`` of wall time the controllers, scheduler and kubelet take one
    step and simulated time moves ``seconds_per_tick`` (deadlines such as
    progressDeadlineSeconds are measured in simulated time).
    """

    def __init__(
        self,
        *,
        tick_seconds: float = 0.025,
        seconds_per_tick: float = 1.0,
        ready_ticks: int = 3,
        pull_ticks: int = 1,
        init_ticks: int = 2,
        backoff_ticks: int = 4,
        terminate_ticks: int = 2,
        history_limit: int = 20000,
        token: str = "kubesim-token",
        seed: int = 0,
    ) -> None:
        self.tick_seconds = tick_seconds
        self.token = token
        self.cluster = Cluster(seconds_per_tick, seed)
        self.cluster.store.history_limit = history_limit
        self.kubelet = Kubelet(self.cluster, ready_ticks, pull_ticks, init_ticks, backoff_ticks, terminate_ticks)
        self.controllers = Controllers(self.cluster)
        self.api = Api(self.cluster, self.kubelet.read_log)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.internal_errors: list[str] = []
        self.watch_epoch = 0
        self._requests_lock = threading.Lock()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._server: SimServer | None = None
        self._threads: list[threading.Thread] = []
        self._tmp: str | None = None
        self.kubeconfig_path = ""
        self.url = ""
        self.port = 0
        for namespace in ("default", "kube-system"):
            self.add_namespace(namespace)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "KubeSim":
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.stop()
        if exc_type is None and self.internal_errors:
            raise AssertionError("kubesim hit internal errors:\n" + "\n".join(self.internal_errors[:3]))

    def start(self) -> "KubeSim":
        """Serve on 127.0.0.1 at a free port, start the clock, write the kubeconfig."""
        self._server = SimServer(self)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.mkdtemp(prefix="kubesim-")
        self.kubeconfig_path = str(Path(self._tmp) / "kubeconfig")
        Path(self.kubeconfig_path).write_text(yaml.safe_dump(self.kubeconfig()))
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True),
            threading.Thread(target=self._run_clock, daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.stopping.set()
            with self.cluster.store.changed:
                self.cluster.store.changed.notify_all()
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def kubeconfig(self) -> dict[str, Any]:
        """The kubeconfig written to ``kubeconfig_path`` (context ``sim``, namespace ``default``)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "sim", "cluster": {"server": self.url}}],
            "users": [{"name": "sim-user", "user": {"token": self.token}}],
            "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim-user", "namespace": "default"}}],
            "current-context": "sim",
        }

    def api_client(self) -> Any:
        """An official-client ``ApiClient`` configured from the kubeconfig."""
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig_path, context="sim")

    def _run_clock(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            if not self._paused.is_set():
                self.tick()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Freeze the controllers (the API keeps serving), e.g. to compare resourceVersions."""
        self._paused.set()
        with self.cluster.store.lock:  # let a tick in progress finish
            pass
        try:
            yield
        finally:
            self._paused.clear()

    def tick(self) -> None:
        """One step of every controller (the clock thread calls this; tests rarely need to)."""
        cluster = self.cluster
        with cluster.store.lock:
            cluster.ticks += 1
            cluster.clock += cluster.seconds_per_tick
            try:
                cluster.collect_garbage()
                self.controllers.tick()
                schedule(cluster)
                self.kubelet.tick()
            except Exception:
                if len(self.internal_errors) < 20:
                    self.internal_errors.append(traceback.format_exc())

    def record_request(self, method: str, path: str, query: dict[str, str]) -> None:
        with self._requests_lock:
            self.requests.append((method, path, query))

    # ------------------------------------------------------------------ cluster setup

    def add_namespace(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.cluster.create("namespaces", {"metadata": {"name": name}}))

    def add_node(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        gpus: int = 0,
        taints: Iterable[Taint] = (),
        ready: bool = True,
        unschedulable: bool = False,
        instance_type: str | None = None,
        cpu: str = "8",
        memory: str = "32Gi",
    ) -> dict[str, Any]:
        """Add a node; its allocatable ``nvidia.com/gpu`` is ``gpus``.

        A NotReady node gets the ``node.kubernetes.io/not-ready`` taint and a cordoned one the
        ``node.kubernetes.io/unschedulable`` taint, as the node lifecycle controller would add.
        """
        all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        if instance_type:
            all_labels["node.kubernetes.io/instance-type"] = instance_type
            all_labels["beta.kubernetes.io/instance-type"] = instance_type
        all_labels.update(labels or {})
        node_taints = [_taint(t) for t in taints]
        if not ready:
            node_taints.append({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"})
        if unschedulable:
            node_taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"})
        spec: dict[str, Any] = {}
        if node_taints:
            spec["taints"] = node_taints
        if unschedulable:
            spec["unschedulable"] = True
        capacity = {"cpu": str(cpu), "memory": str(memory), "pods": "110", "ephemeral-storage": "100Gi"}
        if gpus:
            capacity["nvidia.com/gpu"] = str(gpus)
        now = self.cluster.now()
        index = len(self.cluster.store.items("nodes")) + 4
        ready_condition = (
            {"status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}
            if ready
            else {"status": "False", "reason": "KubeletNotReady", "message": "container runtime network not ready"}
        )
        node = {
            "metadata": {"name": name, "labels": all_labels},
            "spec": spec,
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "conditions": [
                    {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                    {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
                    {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available", "lastHeartbeatTime": now, "lastTransitionTime": now},
                    {"type": "Ready", **ready_condition, "lastHeartbeatTime": now, "lastTransitionTime": now},
                ],
                "addresses": [
                    {"type": "InternalIP", "address": f"10.0.{index // 250}.{index % 250}"},
                    {"type": "Hostname", "address": name},
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": "00000000-0000-0000-0000-000000000000",
                    "containerRuntimeVersion": "containerd://1.7.15",
                    "kernelVersion": "5.15.0",
                    "kubeProxyVersion": "v1.31.0",
                    "kubeletVersion": "v1.31.0",
                    "machineID": name,
                    "operatingSystem": "linux",
                    "osImage": "Ubuntu 22.04.4 LTS",
                    "systemUUID": name,
                },
            },
        }
        with self.cluster.store.lock:
            return copy.deepcopy(self.cluster.create("nodes", node))

    def add_pod(
        self,
        namespace: str,
        name: str,
        node: str,
        gpus: int = 0,
        labels: dict[str, str] | None = None,
        image: str = "registry.example/other-team/app:1.0",
    ) -> dict[str, Any]:
        """A pod that is none of the test's business, already bound to ``node`` and using ``gpus`` GPUs."""
        resources = {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
        pod = {
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "app", "image": image, "resources": resources}]},
        }
        with self.cluster.store.lock:
            if self.cluster.store.get("namespaces", None, namespace) is None:
                self.add_namespace(namespace)
            return copy.deepcopy(self.cluster.create("pods", pod))

    def add_secret(
        self,
        namespace: str,
        name: str,
        data: dict[str, str] | None = None,
        type: str = "Opaque",  # noqa: A002 - the Secret field is called type
    ) -> dict[str, Any]:
        """A Secret; ``data`` values are plain strings (stored base64-encoded, as the API does)."""
        import base64

        secret = {
            "metadata": {"name": name, "namespace": namespace},
            "type": type,
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in (data or {}).items()},
        }
        with self.cluster.store.lock:
            return copy.deepcopy(self.cluster.create("secrets", secret))

    # ------------------------------------------------------------------ reads

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of one object, or None. ``kind`` may be ``Deployment``, ``deployments``, ``deploy``..."""
        res = lookup(kind)
        with self.cluster.store.lock:
            obj = self.cluster.store.get(res.plural, namespace if res.namespaced else None, name)
            return copy.deepcopy(obj)

    def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Copies of the objects of one kind (all namespaces when ``namespace`` is None)."""
        res = lookup(kind)
        matches = make_filter(res, label_selector, None)
        with self.cluster.store.lock:
            return [copy.deepcopy(o) for o in self.cluster.store.items(res.plural, namespace) if matches(o)]

    def ready_time(self, namespace: str, pod: str) -> float | None:
        """``time.time()`` when the pod first turned Ready (for latency benchmarks), or None."""
        return self.kubelet.ready_times.get((namespace, pod))

    # ------------------------------------------------------------------ writes by others

    def update_as(self, manager: str, kind: str, namespace: str | None, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """JSON-merge-patch an object as field manager ``manager`` (an Update, like ``kubectl edit``)."""
        res = lookup(kind)
        body = json.dumps(patch).encode()
        return copy.deepcopy(self.api.patch(res, namespace, name, MERGE, body, {"fieldManager": manager}, manager))

    def apply_as(self, manager: str, body: dict[str, Any], force: bool = False) -> dict[str, Any]:
        """Server-side apply ``body`` as field manager ``manager``."""
        res = lookup(body["kind"])
        meta = body.get("metadata") or {}
        namespace = (meta.get("namespace") or "default") if res.namespaced else None
        return copy.deepcopy(self.api.apply(res, namespace, meta["name"], body, manager, force))

    def delete(self, kind: str, namespace: str | None, name: str, propagation: str = "Background") -> None:
        """Delete as a user would (pods terminate gracefully; dependents follow ``propagation``)."""
        res = lookup(kind)
        self.api.delete(res, namespace, name, {"propagationPolicy": propagation}, None)

    def add_event(self, kind: str, namespace: str | None, name: str, reason: str, message: str,
                  type_: str = "Normal", component: str = "cluster-autoscaler") -> None:
        """Record an Event about an object as another controller would (e.g. the cluster autoscaler's
        ``TriggeredScaleUp`` on a pending pod); a repeat bumps count and lastTimestamp."""
        obj = self.get(kind, namespace, name)
        if obj is None:
            raise KeyError(f"{kind} {namespace}/{name} does not exist")
        with self.cluster.store.lock:
            self.cluster.emit(obj, type_, reason, message, component)

    # ------------------------------------------------------------------ faults

    def forbid(self, verb: str, resource: str) -> None:
        """Answer 403 to ``verb`` (get/list/watch/create/update/patch/delete, or ``*``) on
        ``resource`` (``deployments``, ``pods/log``, ``*``) until ``allow`` is called."""
        with self.api.faults.lock:
            self.api.faults.forbidden.add((verb, resource))

    def allow(self, verb: str, resource: str) -> None:
        with self.api.faults.lock:
            self.api.faults.forbidden.discard((verb, resource))

    def fail_next(
        self,
        verb: str,
        resource: str,
        code: int,
        message: str,
        causes: list[dict[str, str]] | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """Answer the next ``times`` matching requests with a Status of ``code``.

        ``causes`` become ``details.causes`` (dicts with reason/field/message). ``after``: let
        that many matching requests through first (e.g. 1 = the dry run passes, the write fails).
        """
        with self.api.faults.lock:
            self.api.faults.pending.append(Fault(verb, resource, code, message, causes, times, after))

    def clear_faults(self) -> None:
        """Forget every ``forbid`` and every ``fail_next`` not used up yet."""
        with self.api.faults.lock:
            self.api.faults.forbidden.clear()
            self.api.faults.pending.clear()

    def clear_requests(self) -> None:
        with self._requests_lock:
            self.requests.clear()

    # ------------------------------------------------------------------ controllers and watches

    def set_image_behaviour(self, image: str, behaviour: str, **opts: Any) -> None:
        """Choose how containers running ``image`` behave (see README.md for the options)."""
        with self.cluster.store.lock:
            self.kubelet.set_behaviour(image, behaviour, opts)

    def advance(self, seconds: float) -> None:
        """Move simulated time (and object timestamps) forward, e.g. past a progress deadline."""
        self.cluster.advance(seconds)

    def expire_watch_history(self) -> None:
        """Forget the change history: a watch resumed from any older resourceVersion gets 410."""
        self.cluster.store.expire_history()

    def drop_watches(self) -> None:
        """End every open watch stream now (the client sees its watch end)."""
        with self.cluster.store.changed:
            self.watch_epoch += 1
            self.cluster.store.changed.notify_all()

    def wait_until(self, predicate: Callable[[], T], timeout: float = 10.0, what: str | None = None) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that.

        Raises AssertionError naming ``what`` when it does not happen within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"kubesim: timed out after {timeout}s waiting for {what or predicate}")
            time.sleep(0.01)


__all__ = ["KubeSim"]
