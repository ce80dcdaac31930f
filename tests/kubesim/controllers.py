"""The simulated kube-controller-manager: Deployment, ReplicaSet and StatefulSet controllers.

They follow the real controllers' arithmetic closely enough for rollout logic to be
tested against them: pod-template-hash ReplicaSets, RollingUpdate with maxSurge /
maxUnavailable (ints or percentages), Recreate (old pods fully gone first), the
Available/Progressing conditions with ProgressDeadlineExceeded measured in simulated
time, and StatefulSet ordinals, revisions and highest-ordinal-first rolling updates.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from .cluster import Cluster, controller_uid, is_terminating, owner_ref, set_condition, short_hash
from .resources import BY_PLURAL

REVISION = "deployment.kubernetes.io/revision"


def _index_by_controller(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    index: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        uid = controller_uid(item)
        if uid:
            index.setdefault(uid, []).append(item)
    return index


def pod_ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or []
    )


def _active(pod: dict[str, Any]) -> bool:
    return not is_terminating(pod) and pod["status"].get("phase") not in ("Succeeded", "Failed")


def _scaled(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(value or 0)


def _complete(deployment: dict[str, Any]) -> bool:
    """Rolled out: the Progressing condition says NewReplicaSetAvailable for the current generation."""
    status = deployment.get("status") or {}
    if status.get("observedGeneration") != deployment["metadata"].get("generation"):
        return False
    return any(
        c.get("type") == "Progressing" and c.get("reason") == "NewReplicaSetAvailable" for c in status.get("conditions") or []
    )


def _drop_zeros(status: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if not (k in keys and v == 0)}


class Controllers:
    """All workload controllers; ``tick`` runs one sync of each."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.last_progress: dict[str, float] = {}  # deployment uid -> simulated time of last progress
        self._hashes: dict[tuple[str, Any], str] = {}
        self._settled: dict[str, tuple[Any, ...]] = {}  # deployment uid -> inputs of its last complete sync

    def template_hash(self, workload: dict[str, Any]) -> str:
        """pod-template-hash of a workload's template, cached per (uid, generation)."""
        key = (workload["metadata"]["uid"], workload["metadata"].get("generation"))
        if key not in self._hashes:
            self._hashes[key] = short_hash(workload["spec"]["template"])
        return self._hashes[key]

    def tick(self) -> None:
        self.sync_deployments()
        self.sync_replicasets()
        self.sync_statefulsets()

    # ------------------------------------------------------------------ ReplicaSets

    def sync_replicasets(self) -> None:
        store = self.cluster.store
        pods_by_owner = _index_by_controller(store.items("pods"))
        for rs in store.items("replicasets"):
            if is_terminating(rs):
                continue
            pods = pods_by_owner.get(rs["metadata"]["uid"], [])
            active = [p for p in pods if _active(p)]
            wanted = int(rs["spec"].get("replicas", 1))
            if len(active) < wanted:
                for _ in range(wanted - len(active)):
                    active.append(self._create_rs_pod(rs))
            elif len(active) > wanted:
                for pod in sorted(active, key=self._deletion_rank)[: len(active) - wanted]:
                    self.cluster.delete(BY_PLURAL["pods"], pod)
                    self.cluster.emit(rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}", "replicaset-controller")
                    active.remove(pod)
            ready = sum(1 for p in active if pod_ready(p))
            status = {
                "replicas": len(active),
                "fullyLabeledReplicas": len(active),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            }
            self._write_status("replicasets", rs, _drop_zeros(status, ("fullyLabeledReplicas", "readyReplicas", "availableReplicas")))

    @staticmethod
    def _deletion_rank(pod: dict[str, Any]) -> tuple[Any, ...]:
        phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(pod["status"].get("phase"), 0)
        created = pod["metadata"].get("creationTimestamp", "")
        inverted = tuple(-ord(ch) for ch in created)
        return (bool(pod["spec"].get("nodeName")), phase_rank, pod_ready(pod), inverted)

    def _create_rs_pod(self, rs: dict[str, Any]) -> dict[str, Any]:
        template = rs["spec"]["template"]
        meta = template.get("metadata") or {}
        pod = {
            "metadata": {
                "generateName": f"{rs['metadata']['name']}-",
                "namespace": rs["metadata"]["namespace"],
                "labels": dict(meta.get("labels") or {}),
                "ownerReferences": [owner_ref(rs)],
                **({"annotations": dict(meta["annotations"])} if meta.get("annotations") else {}),
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
        }
        created = self.cluster.create("pods", pod)
        self.cluster.emit(rs, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", "replicaset-controller")
        return created

    def _write_status(self, plural: str, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        current = self.cluster.store.get(plural, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if current is None or current.get("status") == status:
            return current or obj
        updated = copy.deepcopy(current)
        updated["status"] = status
        return self.cluster.store.update(plural, updated)

    def _scale(self, deployment: dict[str, Any], rs: dict[str, Any], replicas: int) -> dict[str, Any]:
        current = self.cluster.store.get("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"]) or rs
        before = int(current["spec"].get("replicas", 0))
        if before == replicas:
            return current
        updated = copy.deepcopy(current)
        updated["spec"]["replicas"] = replicas
        updated["metadata"].setdefault("annotations", {})["deployment.kubernetes.io/desired-replicas"] = str(
            deployment["spec"].get("replicas", 1)
        )
        updated["metadata"]["generation"] = int(updated["metadata"].get("generation", 1)) + 1
        stored = self.cluster.store.update("replicasets", updated)
        direction = "up" if replicas > before else "down"
        self.cluster.emit(
            deployment,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {direction} replica set {rs['metadata']['name']} to {replicas} from {before}",
            "deployment-controller",
        )
        return stored

    # ------------------------------------------------------------------ Deployments

    def sync_deployments(self) -> None:
        store = self.cluster.store
        rs_by_owner = _index_by_controller(store.items("replicasets"))
        pods_by_owner = _index_by_controller(store.items("pods"))
        for deployment in store.items("deployments"):
            if is_terminating(deployment):
                continue
            uid = deployment["metadata"]["uid"]
            owned = [rs for rs in rs_by_owner.get(uid, []) if not is_terminating(rs)]
            inputs = (
                deployment["metadata"]["resourceVersion"],
                tuple((rs["metadata"]["resourceVersion"], len(pods_by_owner.get(rs["metadata"]["uid"], []))) for rs in owned),
            )
            if self._settled.get(uid) == inputs:
                continue  # complete and nothing changed: a real controller would not be woken either
            self._sync_deployment(deployment, owned, pods_by_owner)
            current = store.get("deployments", deployment["metadata"]["namespace"], deployment["metadata"]["name"])
            if current is not None and _complete(current):
                self._settled[uid] = (
                    current["metadata"]["resourceVersion"],
                    tuple(
                        (rs["metadata"]["resourceVersion"], len(pods_by_owner.get(rs["metadata"]["uid"], [])))
                        for rs in (store.get("replicasets", r["metadata"]["namespace"], r["metadata"]["name"]) or r for r in owned)
                    ),
                )

    def _sync_deployment(
        self, deployment: dict[str, Any], owned: list[dict[str, Any]], pods_by_owner: dict[str, list[dict[str, Any]]]
    ) -> None:
        cluster = self.cluster
        uid = deployment["metadata"]["uid"]
        spec = deployment["spec"]
        replicas = int(spec.get("replicas", 1))
        template_hash = self.template_hash(deployment)
        new_rs = next((rs for rs in owned if rs["metadata"].get("labels", {}).get("pod-template-hash") == template_hash), None)
        old_rss = sorted(
            (rs for rs in owned if rs is not new_rs), key=lambda rs: int(rs["metadata"].get("annotations", {}).get(REVISION, 0))
        )
        max_revision = max((int(rs["metadata"].get("annotations", {}).get(REVISION, 0)) for rs in owned), default=0)
        created_new = False
        if new_rs is None:
            new_rs = self._create_rs(deployment, template_hash, max_revision + 1)
            created_new = True
            self.last_progress[uid] = cluster.clock
        elif old_rss and int(new_rs["metadata"].get("annotations", {}).get(REVISION, 0)) < max_revision:
            bumped = copy.deepcopy(new_rs)
            bumped["metadata"]["annotations"][REVISION] = str(max_revision + 1)
            new_rs = cluster.store.update("replicasets", bumped)
        self.last_progress.setdefault(uid, cluster.clock)

        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate":
            max_surge, max_unavailable = 0, 0
            for rs in old_rss:
                self._scale(deployment, rs, 0)
            old_pods = [p for rs in old_rss for p in pods_by_owner.get(rs["metadata"]["uid"], [])]
            if not old_pods:
                new_rs = self._scale(deployment, new_rs, replicas)
        else:
            rolling = strategy.get("rollingUpdate") or {}
            max_surge = _scaled(rolling.get("maxSurge", "25%"), replicas, True)
            max_unavailable = _scaled(rolling.get("maxUnavailable", "25%"), replicas, False)
            if max_surge == 0 and max_unavailable == 0:
                max_unavailable = 1
            new_rs = self._roll(deployment, new_rs, old_rss, replicas, max_surge, max_unavailable)
        self._cleanup_history(deployment, old_rss, pods_by_owner)
        self._update_deployment_status(deployment, new_rs, old_rss, replicas, max_unavailable, created_new)

    def _create_rs(self, deployment: dict[str, Any], template_hash: str, revision: int) -> dict[str, Any]:
        meta, spec = deployment["metadata"], deployment["spec"]
        template = copy.deepcopy(spec["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = template_hash
        selector = copy.deepcopy(spec["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = template_hash
        rs = {
            "metadata": {
                "name": f"{meta['name']}-{template_hash}",
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    REVISION: str(revision),
                    "deployment.kubernetes.io/desired-replicas": str(spec.get("replicas", 1)),
                    "deployment.kubernetes.io/max-replicas": str(spec.get("replicas", 1)),
                },
                "ownerReferences": [owner_ref(deployment)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": int(spec.get("minReadySeconds") or 0),
                "selector": selector,
                "template": template,
            },
        }
        created = self.cluster.create("replicasets", rs)
        return created

    def _roll(
        self,
        deployment: dict[str, Any],
        new_rs: dict[str, Any],
        old_rss: list[dict[str, Any]],
        replicas: int,
        max_surge: int,
        max_unavailable: int,
    ) -> dict[str, Any]:
        """One RollingUpdate step: kube's reconcileNewReplicaSet + reconcileOldReplicaSets."""
        store = self.cluster.store

        def fresh(rs: dict[str, Any]) -> dict[str, Any]:
            return store.get("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"]) or rs

        def spec_replicas(rs: dict[str, Any]) -> int:
            return int(fresh(rs)["spec"].get("replicas", 0))

        def available(rs: dict[str, Any]) -> int:
            return int(fresh(rs)["status"].get("availableReplicas", 0))

        new_count = spec_replicas(new_rs)
        if new_count > replicas:
            new_rs = self._scale(deployment, new_rs, replicas)
        elif new_count < replicas:
            total = new_count + sum(spec_replicas(rs) for rs in old_rss)
            room = replicas + max_surge - total
            if room > 0:
                new_rs = self._scale(deployment, new_rs, min(replicas, new_count + room))

        all_count = spec_replicas(new_rs) + sum(spec_replicas(rs) for rs in old_rss)
        min_available = replicas - max_unavailable
        new_unavailable = spec_replicas(new_rs) - available(new_rs)
        budget = all_count - min_available - new_unavailable
        if budget <= 0:
            return new_rs
        for rs in old_rss:  # oldest first: remove pods that are not available anyway
            if budget <= 0:
                break
            unhealthy = spec_replicas(rs) - available(rs)
            if unhealthy > 0:
                cut = min(unhealthy, budget)
                self._scale(deployment, rs, spec_replicas(rs) - cut)
                budget -= cut
        total_available = available(new_rs) + sum(available(rs) for rs in old_rss)
        scale_down = min(total_available - min_available, budget)
        for rs in old_rss:
            if scale_down <= 0:
                break
            cut = min(spec_replicas(rs), scale_down)
            if cut > 0:
                self._scale(deployment, rs, spec_replicas(rs) - cut)
                scale_down -= cut
        return new_rs

    def _cleanup_history(
        self, deployment: dict[str, Any], old_rss: list[dict[str, Any]], pods_by_owner: dict[str, list[dict[str, Any]]]
    ) -> None:
        limit = int(deployment["spec"].get("revisionHistoryLimit", 10))
        store = self.cluster.store
        idle = [
            rs
            for rs in old_rss
            if (store.get("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"]) or rs)["spec"].get("replicas", 0) == 0
            and not pods_by_owner.get(rs["metadata"]["uid"])
        ]
        for rs in idle[: max(0, len(idle) - limit)]:
            self.cluster.delete(BY_PLURAL["replicasets"], rs)

    def _update_deployment_status(
        self,
        deployment: dict[str, Any],
        new_rs: dict[str, Any],
        old_rss: list[dict[str, Any]],
        replicas: int,
        max_unavailable: int,
        created_new: bool,
    ) -> None:
        cluster, store = self.cluster, self.cluster.store
        uid = deployment["metadata"]["uid"]
        current = store.get("deployments", deployment["metadata"]["namespace"], deployment["metadata"]["name"])
        if current is None:
            return
        all_rss = [store.get("replicasets", rs["metadata"]["namespace"], rs["metadata"]["name"]) or rs for rs in [new_rs, *old_rss]]
        new_status = all_rss[0]["status"]

        def total(key: str, source: str = "status") -> int:
            return sum(int(rs[source].get(key, 0)) for rs in all_rss)

        status: dict[str, Any] = {
            "observedGeneration": current["metadata"].get("generation", 1),
            "replicas": total("replicas"),
            "updatedReplicas": int(new_status.get("replicas", 0)),
            "readyReplicas": total("readyReplicas"),
            "availableReplicas": total("availableReplicas"),
            "unavailableReplicas": max(0, total("replicas", "spec") - total("availableReplicas")),
        }
        previous = current.get("status") or {}
        now = cluster.now()
        new_name = new_rs["metadata"]["name"]
        status["conditions"] = [dict(c) for c in previous.get("conditions") or []]
        if status["availableReplicas"] >= replicas - max_unavailable:
            available = {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."}
        else:
            available = {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."}
        self._set_deployment_condition(status, available, now)

        progressing = next((c for c in status["conditions"] if c["type"] == "Progressing"), None)
        complete = (
            status["updatedReplicas"] == replicas
            and status["replicas"] == replicas
            and status["availableReplicas"] == replicas
        )
        old_replicas = previous.get("replicas", 0) - previous.get("updatedReplicas", 0)
        made_progress = (
            status["updatedReplicas"] > previous.get("updatedReplicas", 0)
            or status["readyReplicas"] > previous.get("readyReplicas", 0)
            or status["availableReplicas"] > previous.get("availableReplicas", 0)
            or status["replicas"] - status["updatedReplicas"] < old_replicas
        )
        deadline = deployment["spec"].get("progressDeadlineSeconds")
        if created_new:
            condition = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated", "message": f'Created new replica set "{new_name}"'}
            self._set_deployment_condition(status, condition, now, touch=True)
        elif complete:
            if not progressing or progressing.get("reason") != "NewReplicaSetAvailable":
                condition = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": f'ReplicaSet "{new_name}" has successfully progressed.'}
                self._set_deployment_condition(status, condition, now, touch=True)
            self.last_progress[uid] = cluster.clock
        elif made_progress or progressing is None:
            condition = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "message": f'ReplicaSet "{new_name}" is progressing.'}
            self._set_deployment_condition(status, condition, now, touch=True)
            self.last_progress[uid] = cluster.clock
        elif (
            deadline is not None
            and progressing.get("reason") != "ProgressDeadlineExceeded"
            and cluster.clock - self.last_progress.get(uid, cluster.clock) > float(deadline)
        ):
            condition = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": f'ReplicaSet "{new_name}" has timed out progressing.'}
            self._set_deployment_condition(status, condition, now, touch=True)
        status["conditions"].sort(key=lambda c: 0 if c["type"] == "Available" else 1)
        status = _drop_zeros(status, ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas"))

        annotations = current["metadata"].get("annotations") or {}
        revision = new_rs["metadata"].get("annotations", {}).get(REVISION)
        if status == current.get("status") and (not revision or annotations.get(REVISION) == revision):
            return
        updated = {**current, "status": status}
        if revision:
            updated["metadata"] = {**current["metadata"], "annotations": {**annotations, REVISION: revision}}
        cluster.store.update("deployments", updated)

    @staticmethod
    def _set_deployment_condition(status: dict[str, Any], condition: dict[str, Any], now: str, touch: bool = False) -> None:
        existing = next((c for c in status["conditions"] if c["type"] == condition["type"]), None)
        if existing is not None and all(existing.get(k) == v for k, v in condition.items()) and not touch:
            return
        if existing is not None and all(existing.get(k) == v for k, v in condition.items()) and touch:
            existing["lastUpdateTime"] = now
            return
        set_condition(status, condition, now)
        for c in status["conditions"]:
            if c["type"] == condition["type"]:
                c.pop("lastProbeTime", None)
                c["lastUpdateTime"] = now

    # ------------------------------------------------------------------ StatefulSets

    def sync_statefulsets(self) -> None:
        store = self.cluster.store
        pods_by_owner = _index_by_controller(store.items("pods"))
        for sts in store.items("statefulsets"):
            if not is_terminating(sts):
                self._sync_statefulset(sts, pods_by_owner.get(sts["metadata"]["uid"], []))

    def _sync_statefulset(self, sts: dict[str, Any], owned: list[dict[str, Any]]) -> None:
        cluster = self.cluster
        meta, spec = sts["metadata"], sts["spec"]
        name = meta["name"]
        replicas = int(spec.get("replicas", 1))
        update_revision = f"{name}-{self.template_hash(sts)}"
        previous = sts.get("status") or {}
        current_revision = previous.get("currentRevision") or update_revision
        ordered = spec.get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        by_ordinal: dict[int, dict[str, Any]] = {}
        for pod in owned:
            suffix = pod["metadata"]["name"].rsplit("-", 1)[-1]
            if suffix.isdigit():
                by_ordinal[int(suffix)] = pod

        def healthy(pod: dict[str, Any] | None) -> bool:
            return pod is not None and not is_terminating(pod) and pod["status"].get("phase") == "Running" and pod_ready(pod)

        for ordinal in range(replicas):
            if ordinal in by_ordinal:
                continue
            if ordered and not all(healthy(by_ordinal.get(i)) for i in range(ordinal)):
                break
            by_ordinal[ordinal] = self._create_sts_pod(sts, ordinal, update_revision)
            if ordered:
                break
        extra = sorted((o for o in by_ordinal if o >= replicas), reverse=True)
        for ordinal in extra:
            pod = by_ordinal[ordinal]
            if not is_terminating(pod):
                self._delete_sts_pod(sts, pod)
            if ordered:
                break
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
            members = [by_ordinal.get(i) for i in range(replicas)]
            # As the real controller: OrderedReady waits until every pod is Running and Ready; Parallel
            # does not, and replaces the highest outdated ordinal even when it is unhealthy, then waits
            # for each updated pod (from the top) to be healthy before the next.
            if not ordered or all(healthy(p) for p in members):
                for ordinal in range(replicas - 1, partition - 1, -1):
                    pod = by_ordinal.get(ordinal)
                    if pod is None:
                        break
                    if pod["metadata"].get("labels", {}).get("controller-revision-hash") != update_revision:
                        if not is_terminating(pod):
                            self._delete_sts_pod(sts, pod)
                        break
                    if not healthy(pod):
                        break

        active = [p for p in by_ordinal.values() if not is_terminating(p)]
        revisions = [p["metadata"].get("labels", {}).get("controller-revision-hash") for p in active]
        updated = revisions.count(update_revision)
        if updated == len(active) == replicas:
            current_revision = update_revision
        ready = sum(1 for p in active if pod_ready(p))
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(active),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": revisions.count(current_revision),
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update_revision,
            "collisionCount": 0,
        }
        self._write_status("statefulsets", sts, _drop_zeros(status, ("readyReplicas", "availableReplicas", "currentReplicas", "updatedReplicas")))

    def _create_sts_pod(self, sts: dict[str, Any], ordinal: int, revision: str) -> dict[str, Any]:
        meta, spec = sts["metadata"], sts["spec"]
        template = spec["template"]
        pod_name = f"{meta['name']}-{ordinal}"
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels.update(
            {
                "statefulset.kubernetes.io/pod-name": pod_name,
                "apps.kubernetes.io/pod-index": str(ordinal),
                "controller-revision-hash": revision,
            }
        )
        pod_spec = copy.deepcopy(template.get("spec") or {})
        pod_spec["hostname"] = pod_name
        if spec.get("serviceName"):
            pod_spec["subdomain"] = spec["serviceName"]
        annotations = (template.get("metadata") or {}).get("annotations")
        pod = {
            "metadata": {
                "name": pod_name,
                "namespace": meta["namespace"],
                "labels": labels,
                "ownerReferences": [owner_ref(sts)],
                **({"annotations": dict(annotations)} if annotations else {}),
            },
            "spec": pod_spec,
        }
        created = self.cluster.create("pods", pod)
        self.cluster.emit(sts, "Normal", "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {meta['name']} successful", "statefulset-controller")
        return created

    def _delete_sts_pod(self, sts: dict[str, Any], pod: dict[str, Any]) -> None:
        self.cluster.delete(BY_PLURAL["pods"], pod)
        self.cluster.emit(
            sts,
            "Normal",
            "SuccessfulDelete",
            f"delete Pod {pod['metadata']['name']} in StatefulSet {sts['metadata']['name']} successful",
            "statefulset-controller",
        )
