"""Deployment, ReplicaSet and StatefulSet controllers and garbage collection, seen through the client."""

from __future__ import annotations

from typing import Any

from kubernetes import client, watch

from . import KubeSim
from .manifests import RECREATE, SURGE, deployment, statefulset


def replay(list_fn: Any, since: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every event after ``since`` (the history is kept), as raw dicts."""
    stream = watch.Watch().stream(list_fn, *args, resource_version=since, timeout_seconds=1, **kwargs)
    return [{"type": e["type"], **e["raw_object"]} for e in stream]


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def rolled_out(apps: client.AppsV1Api, name: str = "web") -> bool:
    d = apps.read_namespaced_deployment(name, "default")
    s = d.status
    return (
        s.observed_generation == d.metadata.generation
        and s.updated_replicas == d.spec.replicas
        and s.replicas == d.spec.replicas
        and s.available_replicas == d.spec.replicas
    )


def test_deployment_creates_replicaset_and_ready_pods(sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    sim.add_node("n1", gpus=2)
    apps.create_namespaced_deployment("default", deployment(replicas=2))
    sim.wait_until(lambda: rolled_out(apps), what="rollout")
    d = apps.read_namespaced_deployment("web", "default")
    assert d.metadata.annotations["deployment.kubernetes.io/revision"] == "1"
    assert (d.status.ready_replicas, d.status.unavailable_replicas) == (2, None)
    reasons = {c.type: (c.status, c.reason) for c in d.status.conditions}
    assert reasons == {"Available": ("True", "MinimumReplicasAvailable"), "Progressing": ("True", "NewReplicaSetAvailable")}
    [rs] = apps.list_namespaced_replica_set("default").items
    template_hash = rs.metadata.labels["pod-template-hash"]
    assert rs.metadata.name == f"web-{template_hash}"
    assert rs.metadata.owner_references[0].uid == d.metadata.uid
    pods = core.list_namespaced_pod("default", label_selector=f"app=web,pod-template-hash={template_hash}").items
    assert len(pods) == 2
    assert all(p.metadata.owner_references[0].kind == "ReplicaSet" for p in pods)
    assert all(p.status.phase == "Running" and p.spec.node_name == "n1" for p in pods)


def test_rolling_update_with_surge_starts_the_new_pod_before_removing_the_old(
    sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    sim.add_node("n1", gpus=1)
    sim.add_node("n2", gpus=1)
    apps.create_namespaced_deployment("default", deployment(strategy=SURGE))
    sim.wait_until(lambda: rolled_out(apps))
    [old] = core.list_namespaced_pod("default").items
    since = core.list_namespaced_pod("default").metadata.resource_version
    apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "app:2"}]}}}})
    sim.wait_until(lambda: rolled_out(apps) and len(core.list_namespaced_pod("default").items) == 1)
    events = replay(core.list_namespaced_pod, since, "default")
    old_name = old.metadata.name
    first_new_ready = next(i for i, e in enumerate(events) if e["metadata"]["name"] != old_name and is_ready(e))
    old_terminating = next(
        i for i, e in enumerate(events) if e["metadata"]["name"] == old_name and e["metadata"].get("deletionTimestamp")
    )
    assert first_new_ready < old_terminating
    assert apps.read_namespaced_deployment("web", "default").metadata.annotations["deployment.kubernetes.io/revision"] == "2"


def test_recreate_removes_old_pods_before_creating_new_ones(
    sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    sim.add_node("n1", gpus=1)
    apps.create_namespaced_deployment("default", deployment(strategy=RECREATE))
    sim.wait_until(lambda: rolled_out(apps))
    [old] = core.list_namespaced_pod("default").items
    since = core.list_namespaced_pod("default").metadata.resource_version
    apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"metadata": {"labels": {"v": "2"}}}}})
    sim.wait_until(lambda: rolled_out(apps) and len(core.list_namespaced_pod("default").items) == 1)
    events = replay(core.list_namespaced_pod, since, "default")
    old_gone = next(i for i, e in enumerate(events) if e["type"] == "DELETED" and e["metadata"]["name"] == old.metadata.name)
    new_added = next(i for i, e in enumerate(events) if e["type"] == "ADDED")
    assert old_gone < new_added


def test_percent_surge_never_exceeds_replicas_plus_max_surge(
    sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    for i in range(5):
        sim.add_node(f"n{i}", gpus=1)
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    apps.create_namespaced_deployment("default", deployment(replicas=4, strategy=strategy))
    sim.wait_until(lambda: rolled_out(apps))
    before = apps.list_namespaced_replica_set("default")
    apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"metadata": {"labels": {"v": "2"}}}}})
    sim.wait_until(lambda: rolled_out(apps) and len(core.list_namespaced_pod("default").items) == 4)
    replicas = {rs.metadata.name: rs.spec.replicas for rs in before.items}
    available = {rs.metadata.name: rs.status.available_replicas for rs in before.items}
    since = before.metadata.resource_version
    peaks, floors = [], []
    for event in replay(apps.list_namespaced_replica_set, since, "default"):
        replicas[event["metadata"]["name"]] = event["spec"]["replicas"]
        available[event["metadata"]["name"]] = event["status"].get("availableReplicas", 0)
        peaks.append(sum(replicas.values()))
        floors.append(sum(available.values()))
    assert max(peaks) == 5  # 4 + ceil(25% of 4)
    assert min(floors) >= 3  # 4 - floor(25% of 4)
    assert len(replicas) == 2


def test_unschedulable_rollout_hits_the_progress_deadline_in_simulated_time(
    sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    sim.add_node("n1", gpus=1)
    apps.create_namespaced_deployment("default", deployment(strategy=SURGE))
    sim.wait_until(lambda: rolled_out(apps))
    apps.patch_namespaced_deployment("web", "default", {"spec": {"template": {"metadata": {"labels": {"v": "2"}}}}})

    def pending_message() -> str | None:
        for pod in core.list_namespaced_pod("default", field_selector="status.phase=Pending").items:
            for condition in pod.status.conditions or []:
                if condition.reason == "Unschedulable":
                    return condition.message
        return None

    assert sim.wait_until(pending_message) == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    sim.advance(601)

    def progressing_reason() -> str | None:
        conditions = apps.read_namespaced_deployment("web", "default").status.conditions
        reason = next(c.reason for c in conditions if c.type == "Progressing")
        return reason if reason == "ProgressDeadlineExceeded" else None

    sim.wait_until(progressing_reason)
    d = apps.read_namespaced_deployment("web", "default")
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert progressing.status == "False"
    assert progressing.message.endswith("has timed out progressing.")
    assert (d.status.updated_replicas, d.status.available_replicas, d.status.unavailable_replicas) == (1, 1, 1)


def test_statefulset_parallel_pods_labels_and_status(sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    sim.add_node("n1")
    apps.create_namespaced_stateful_set("default", statefulset(replicas=3))
    sim.wait_until(lambda: apps.read_namespaced_stateful_set("db", "default").status.ready_replicas == 3)
    pods = {p.metadata.name: p for p in core.list_namespaced_pod("default").items}
    assert sorted(pods) == ["db-0", "db-1", "db-2"]
    labels = pods["db-2"].metadata.labels
    assert labels["statefulset.kubernetes.io/pod-name"] == "db-2"
    assert labels["apps.kubernetes.io/pod-index"] == "2"
    status = apps.read_namespaced_stateful_set("db", "default").status
    assert labels["controller-revision-hash"] == status.update_revision == status.current_revision
    assert (status.replicas, status.available_replicas, status.current_replicas, status.updated_replicas) == (3, 3, 3, 3)
    assert pods["db-0"].spec.hostname == "db-0" and pods["db-0"].spec.subdomain == "db-headless"


def test_statefulset_ordered_ready_creates_pods_one_by_one(sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    sim.add_node("n1")
    since = core.list_namespaced_pod("default").metadata.resource_version
    apps.create_namespaced_stateful_set("default", statefulset(replicas=3, policy="OrderedReady"))
    sim.wait_until(lambda: apps.read_namespaced_stateful_set("db", "default").status.ready_replicas == 3)
    events = replay(core.list_namespaced_pod, since, "default")
    for previous, name in (("db-0", "db-1"), ("db-1", "db-2")):
        added = next(i for i, e in enumerate(events) if e["type"] == "ADDED" and e["metadata"]["name"] == name)
        ready = next(i for i, e in enumerate(events) if e["metadata"]["name"] == previous and is_ready(e))
        assert ready < added


def test_statefulset_rolling_update_replaces_highest_ordinal_first(
    sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    sim.add_node("n1")
    apps.create_namespaced_stateful_set("default", statefulset(replicas=3))
    sim.wait_until(lambda: apps.read_namespaced_stateful_set("db", "default").status.ready_replicas == 3)
    since = core.list_namespaced_pod("default").metadata.resource_version
    apps.patch_namespaced_stateful_set("db", "default", {"spec": {"template": {"metadata": {"labels": {"v": "2"}}}}})

    def updated() -> bool:
        status = apps.read_namespaced_stateful_set("db", "default").status
        return status.updated_replicas == 3 and status.ready_replicas == 3 and status.current_revision == status.update_revision

    sim.wait_until(updated)
    deleted = [e["metadata"]["name"] for e in replay(core.list_namespaced_pod, since, "default") if e["type"] == "DELETED"]
    assert deleted == ["db-2", "db-1", "db-0"]
    assert all(p.metadata.labels["v"] == "2" for p in core.list_namespaced_pod("default").items)


def test_parallel_statefulset_replaces_an_unhealthy_highest_ordinal(
    sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    # As the real controller: Parallel does not wait for every pod to be healthy before it replaces
    # the highest outdated ordinal; it then waits for that updated pod before the next.
    sim.add_node("n1")
    apps.create_namespaced_stateful_set("default", statefulset(replicas=2))
    sim.wait_until(lambda: apps.read_namespaced_stateful_set("db", "default").status.ready_replicas == 2)
    sim.set_image_behaviour("registry.example/db:2", "crash")
    apps.patch_namespaced_stateful_set("db", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "registry.example/db:2"}]}}}})
    sim.wait_until(lambda: [p for p in core.list_namespaced_pod("default").items if p.metadata.name == "db-1"
                            and p.spec.containers[0].image == "registry.example/db:2"], what="db-1 updated")
    first = core.read_namespaced_pod("db-0", "default").metadata.uid
    apps.patch_namespaced_stateful_set("db", "default", {"spec": {"template": {"spec": {"containers": [
        {"name": "main", "image": "registry.example/db:1"}]}}}})
    sim.wait_until(lambda: apps.read_namespaced_stateful_set("db", "default").status.ready_replicas == 2,
                   what="the crash-looping db-1 replaced by the fixed template")
    assert core.read_namespaced_pod("db-0", "default").metadata.uid == first


def test_pod_delete_goes_through_terminating(sim: KubeSim, core: client.CoreV1Api) -> None:
    sim.add_node("n1")
    sim.add_pod("default", "p", "n1")
    sim.wait_until(lambda: core.read_namespaced_pod("p", "default").status.phase == "Running")
    terminating = core.delete_namespaced_pod("p", "default")
    assert terminating.metadata.deletion_timestamp is not None
    sim.wait_until(lambda: not core.list_namespaced_pod("default").items)


def test_foreground_delete_waits_for_dependents(sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    sim.add_node("n1", gpus=1)
    apps.create_namespaced_deployment("default", deployment())
    sim.wait_until(lambda: rolled_out(apps))
    since = apps.list_namespaced_deployment("default").metadata.resource_version
    apps.delete_namespaced_deployment("web", "default", propagation_policy="Foreground")
    sim.wait_until(lambda: not apps.list_namespaced_deployment("default").items)
    assert apps.list_namespaced_replica_set("default").items == []
    assert core.list_namespaced_pod("default").items == []
    [marked, gone] = replay(apps.list_namespaced_deployment, since, "default")[-2:]
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert gone["type"] == "DELETED"


def test_background_delete_garbage_collects_and_orphan_keeps(
    sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api
) -> None:
    sim.add_node("n1", gpus=2)
    apps.create_namespaced_deployment("default", deployment(name="a"))
    apps.create_namespaced_deployment("default", deployment(name="b"))
    sim.wait_until(lambda: rolled_out(apps, "a") and rolled_out(apps, "b"))
    apps.delete_namespaced_deployment("a", "default")
    sim.delete("Deployment", "default", "b", propagation="Orphan")
    sim.wait_until(lambda: not core.list_namespaced_pod("default", label_selector="app=a").items)
    [rs] = apps.list_namespaced_replica_set("default").items
    assert rs.metadata.labels["app"] == "b" and not rs.metadata.owner_references
    assert len(core.list_namespaced_pod("default", label_selector="app=b").items) == 1
