"""State and helpers shared by the API layer and the simulated controllers.

``Cluster`` owns the store, the simulated clock, recorded events, and the deletion
semantics (graceful pod termination, foreground/background/orphan propagation and
garbage collection by ownerReferences), so that a delete from the API and a delete
by a controller behave the same way.
"""

from __future__ import annotations

import copy
import hashlib
import random
import time
from typing import Any, Callable

from .resources import BY_PLURAL, RESOURCES, Resource
from .schema import apply_defaults
from .store import Store

SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
WORKLOADS = ("deployments", "replicasets", "statefulsets")
FOREGROUND = "foregroundDeletion"


def rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def short_hash(value: Any, length: int = 10) -> str:
    """A stable hash in Kubernetes' "safe" alphabet (no vowels), like pod-template-hash."""
    digest = int(hashlib.sha256(repr(_canonical(value)).encode()).hexdigest(), 16)
    chars = []
    for _ in range(length):
        digest, index = divmod(digest, len(SAFE_ALPHABET))
        chars.append(SAFE_ALPHABET[index])
    return "".join(chars)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_canonical(v) for v in value)
    return value


def controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_terminating(obj: dict[str, Any]) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


class Cluster:
    """The simulated cluster's shared state: store, clocks, randomness and events."""

    def __init__(self, seconds_per_tick: float, seed: int = 0) -> None:
        self.wall_offset = 0.0
        self.store = Store(self.now)
        self.seconds_per_tick = seconds_per_tick
        self.clock = 0.0  # simulated seconds since start; drives deadlines
        self.ticks = 0
        self.rng = random.Random(seed)
        self._events: dict[tuple[Any, ...], tuple[str, str]] = {}
        self.on_pod_removed: list[Callable[[dict[str, Any]], None]] = []
        self._collected_at = -1  # store.rv when garbage was last collected
        self.requests_cache: dict[str, Any] = {}  # pod uid -> effective resource requests

    # ------------------------------------------------------------------ time

    def now(self) -> str:
        """Timestamps in objects: wall time, shifted by ``advance()``."""
        return rfc3339(time.time() + self.wall_offset)

    def advance(self, seconds: float) -> None:
        with self.store.lock:
            self.clock += seconds
            self.wall_offset += seconds

    # ------------------------------------------------------------------ writes

    def random_suffix(self, length: int = 5) -> str:
        return "".join(self.rng.choice(SAFE_ALPHABET) for _ in range(length))

    def create(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object the way admission would (defaults, generation), without validation."""
        obj = copy.deepcopy(obj)
        res = BY_PLURAL[plural]
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + self.random_suffix()
        if plural in WORKLOADS:
            meta["generation"] = 1
        apply_defaults(res, obj)
        initial_status(res, obj, self)
        return self.store.create(plural, obj)

    def write(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store ``obj`` unless it equals what is stored; returns the stored object."""
        current = self.store.get(plural, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if current is not None and same_object(current, obj):
            return current
        return self.store.update(plural, obj)

    # ------------------------------------------------------------------ events

    def emit(
        self,
        involved: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        component: str,
        host: str | None = None,
        field_path: str | None = None,
    ) -> None:
        """Record a core/v1 Event; a repeat of the same event bumps count and lastTimestamp."""
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta.get("uid"), type_, reason, message, field_path)
        now = self.now()
        known = self._events.get(key)
        if known is not None:
            current = self.store.get("events", *known)
            if current is not None:
                event = copy.deepcopy(current)
                event["count"] = int(event.get("count") or 1) + 1
                event["lastTimestamp"] = now
                self.store.update("events", event)
                return
        reference = {
            "kind": involved.get("kind"),
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "apiVersion": involved.get("apiVersion"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if field_path:
            reference["fieldPath"] = field_path
        name = f"{meta.get('name')}.{self.rng.getrandbits(64):016x}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {k: v for k, v in reference.items() if v is not None},
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component, **({"host": host} if host else {})},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        self.store.create("events", event)
        self._events[key] = (namespace, name)

    # ------------------------------------------------------------------ deletion

    def dependents(self, owner: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        uid = owner["metadata"]["uid"]
        namespace = owner["metadata"].get("namespace")
        found = []
        for res in RESOURCES:
            if res.namespaced and namespace is None:
                continue
            for obj in self.store.items(res.plural, namespace if res.namespaced else None):
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                    found.append((res.plural, obj))
        return found

    def delete(
        self,
        res: Resource,
        obj: dict[str, Any],
        propagation: str = "Background",
        grace_seconds: int | None = None,
    ) -> dict[str, Any] | None:
        """Delete with Kubernetes semantics; returns the object while it still exists (terminating)."""
        meta = obj["metadata"]
        if res.plural == "namespaces":
            for other in RESOURCES:
                if other.namespaced:
                    for item in self.store.items(other.plural, meta["name"]):
                        self.store.remove(other.plural, meta["name"], item["metadata"]["name"])
            self.store.remove("namespaces", None, meta["name"])
            return None
        if res.plural == "pods":
            return self._delete_pod(obj, grace_seconds)
        if propagation == "Orphan":
            for plural, dependent in self.dependents(obj):
                orphaned = copy.deepcopy(dependent)
                orphaned["metadata"]["ownerReferences"] = [
                    r for r in dependent["metadata"].get("ownerReferences") or [] if r.get("uid") != meta["uid"]
                ]
                self.store.update(plural, orphaned)
        finalizers = list(meta.get("finalizers") or [])
        if propagation == "Foreground" and self.dependents(obj):
            finalizers = sorted(set(finalizers) | {FOREGROUND})
        if finalizers:
            if is_terminating(obj) and meta.get("finalizers") == finalizers:
                return obj
            marked = copy.deepcopy(obj)
            marked["metadata"].setdefault("deletionTimestamp", self.now())
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            marked["metadata"]["finalizers"] = finalizers
            return self.store.update(res.plural, marked)
        self.store.remove(res.plural, meta.get("namespace"), meta["name"])
        return None

    def _delete_pod(self, pod: dict[str, Any], grace_seconds: int | None) -> dict[str, Any] | None:
        meta = pod["metadata"]
        if grace_seconds is None:
            grace_seconds = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        if grace_seconds == 0 or not pod["spec"].get("nodeName") or pod["status"].get("phase") in ("Succeeded", "Failed"):
            self.remove_pod(pod)
            return None
        if is_terminating(pod):
            return pod
        marked = copy.deepcopy(pod)
        marked["metadata"]["deletionTimestamp"] = rfc3339(time.time() + self.wall_offset + grace_seconds)
        marked["metadata"]["deletionGracePeriodSeconds"] = grace_seconds
        return self.store.update("pods", marked)

    def remove_pod(self, pod: dict[str, Any]) -> None:
        self.store.remove("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
        for callback in self.on_pod_removed:
            callback(pod)

    def collect_garbage(self) -> None:
        """Delete objects whose owners are all gone; finish foreground deletions."""
        if self.store.rv == self._collected_at:
            return  # nothing changed since the last pass (including by that pass itself)
        self._collected_at = self.store.rv
        existing = {obj["metadata"]["uid"] for _, obj in self.store.all_items()}
        for plural, obj in self.store.all_items():
            refs = obj["metadata"].get("ownerReferences") or []
            if refs and not any(r.get("uid") in existing for r in refs):
                if not is_terminating(obj):
                    self.delete(BY_PLURAL[plural], obj)
        for plural, obj in self.store.all_items():
            meta = obj["metadata"]
            if FOREGROUND not in (meta.get("finalizers") or []):
                continue
            remaining = self.dependents(obj)
            for dep_plural, dependent in remaining:
                if not is_terminating(dependent):
                    self.delete(BY_PLURAL[dep_plural], dependent, "Foreground")
            if not remaining:
                finalizers = [f for f in meta["finalizers"] if f != FOREGROUND]
                if finalizers:
                    done = copy.deepcopy(obj)
                    done["metadata"]["finalizers"] = finalizers
                    self.store.update(plural, done)
                else:
                    self.store.remove(plural, meta.get("namespace"), meta["name"])


def same_object(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from resourceVersion (which every write changes)."""
    if a.keys() != b.keys():
        return False
    for key in a:
        if key == "metadata":
            ma = {k: v for k, v in a[key].items() if k != "resourceVersion"}
            mb = {k: v for k, v in b[key].items() if k != "resourceVersion"}
            if ma != mb:
                return False
        elif a[key] != b[key]:
            return False
    return True


def qos_class(spec: dict[str, Any]) -> str:
    containers = (spec.get("containers") or []) + (spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits.get(name)) != limits.get(name):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def initial_status(res: Resource, obj: dict[str, Any], cluster: Cluster) -> None:
    """The status a freshly created object starts with (what the API server resets it to)."""
    if res.plural == "pods":
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj.get("spec") or {})}
    elif res.plural == "namespaces":
        obj["status"] = {"phase": "Active"}
    elif res.plural in ("replicasets", "statefulsets"):
        obj["status"] = {"replicas": 0}
    elif res.plural == "deployments":
        obj["status"] = {}
    elif res.plural == "services":
        obj["status"] = {"loadBalancer": {}}
        spec = obj.setdefault("spec", {})
        if not spec.get("clusterIP"):
            n = cluster.rng.randrange(1, 65000)
            spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])


def set_condition(status: dict[str, Any], condition: dict[str, Any], now: str) -> None:
    """Add or update a condition; lastTransitionTime changes only when its status flips."""
    conditions = status.setdefault("conditions", [])
    for existing in conditions:
        if existing["type"] == condition["type"]:
            if existing.get("status") != condition["status"]:
                existing["lastTransitionTime"] = now
            for key in ("reason", "message"):
                existing.pop(key, None)
            existing.update(condition)
            return
    conditions.append({**condition, "lastProbeTime": None, "lastTransitionTime": now})
