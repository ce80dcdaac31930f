"""Server-side apply through the official client: ownership, conflicts, force, dry run."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from . import KubeSim
from .manifests import deployment

APPLY = "application/apply-patch+yaml"


def apply(apps: client.AppsV1Api, body: dict, manager: str = "kaitoctl", **kwargs: object) -> client.V1Deployment:
    return apps.patch_namespaced_deployment(
        body["metadata"]["name"], "default", body, field_manager=manager, _content_type=APPLY, **kwargs
    )


def test_apply_creates_and_records_managed_fields(apps: client.AppsV1Api) -> None:
    created = apply(apps, deployment())
    assert created.metadata.generation == 1
    [entry] = created.metadata.managed_fields
    assert (entry.manager, entry.operation, entry.api_version) == ("kaitoctl", "Apply", "apps/v1")
    assert entry.fields_v1["f:spec"]["f:replicas"] == {}
    containers = entry.fields_v1["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert containers['k:{"name":"main"}']["f:image"] == {}


def test_apply_without_field_manager_is_400(apps: client.AppsV1Api) -> None:
    with pytest.raises(client.ApiException) as raised:
        apps.patch_namespaced_deployment("web", "default", deployment(), _content_type=APPLY)
    assert raised.value.status == 400
    assert "fieldManager is required" in json.loads(raised.value.body)["message"]


def test_apply_body_must_name_kind_and_match_the_url(apps: client.AppsV1Api) -> None:
    body = deployment()
    del body["kind"]
    with pytest.raises(client.ApiException) as raised:
        apply(apps, body)
    assert raised.value.status == 400
    with pytest.raises(client.ApiException) as mismatch:
        apps.patch_namespaced_deployment("other", "default", deployment(), field_manager="k", _content_type=APPLY)
    assert "does not match the name on the URL" in json.loads(mismatch.value.body)["message"]


def test_reapplying_the_same_config_changes_nothing(apps: client.AppsV1Api, sim: KubeSim) -> None:
    with sim.paused():  # keep the controllers from writing status in between
        first = apply(apps, deployment())
        second = apply(apps, deployment())
    assert second.metadata.resource_version == first.metadata.resource_version
    assert second.metadata.generation == 1


def test_fields_dropped_from_the_config_are_removed_unless_owned_by_others(
    apps: client.AppsV1Api, sim: KubeSim
) -> None:
    body = deployment()
    body["metadata"]["labels"].update({"a": "1", "b": "2"})
    apply(apps, body)
    sim.update_as("kubectl-label", "deployments", "default", "web", {"metadata": {"labels": {"c": "3"}}})
    del body["metadata"]["labels"]["a"]
    result = apply(apps, body)
    assert result.metadata.labels == {"app": "web", "b": "2", "c": "3"}


def test_conflict_with_another_manager_and_force(apps: client.AppsV1Api, sim: KubeSim) -> None:
    apply(apps, deployment())
    sim.update_as("kubectl-edit", "deployments", "default", "web", {"spec": {"replicas": 2}})

    with pytest.raises(client.ApiException) as raised:
        apply(apps, deployment(replicas=1))
    status = json.loads(raised.value.body)
    assert raised.value.status == 409 and status["reason"] == "Conflict"
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas'
    )
    assert status["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": 'conflict with "kubectl-edit" using apps/v1', "field": ".spec.replicas"}
    ]
    # Applying the value the other manager set is not a conflict (shared ownership).
    assert apply(apps, deployment(replicas=2)).spec.replicas == 2

    forced = apply(apps, deployment(replicas=1), force=True)
    assert forced.spec.replicas == 1
    assert [m.manager for m in forced.metadata.managed_fields] == ["kaitoctl"]


def test_conflict_between_two_appliers_names_the_container_field(apps: client.AppsV1Api, sim: KubeSim) -> None:
    sim.apply_as("team-a", deployment(image="app:1"))
    with pytest.raises(client.ApiException) as raised:
        apply(apps, deployment(image="app:2", replicas=3), manager="team-b")
    message = json.loads(raised.value.body)["message"]
    assert message == (
        'Apply failed with 2 conflicts: conflicts with "team-a" using apps/v1:\n'
        "- .spec.replicas\n"
        '- .spec.template.spec.containers[name="main"].image'
    )


def test_dry_run_apply_validates_and_persists_nothing(apps: client.AppsV1Api, sim: KubeSim) -> None:
    preview = apply(apps, deployment(), dry_run="All")
    assert preview.spec.replicas == 1
    assert sim.get("deployments", "default", "web") is None

    bad = deployment()
    bad["spec"]["template"]["spec"]["containers"][0]["name"] = "Not_A_Label"
    with pytest.raises(client.ApiException) as raised:
        apply(apps, bad, dry_run="All")
    assert raised.value.status == 422

    apply(apps, deployment())
    apply(apps, deployment(image="app:9"), dry_run="All")
    stored = sim.get("deployments", "default", "web")
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/app:1"
    assert stored["metadata"]["generation"] == 1


def test_switching_strategy_removes_fields_the_manager_applied_before(apps: client.AppsV1Api) -> None:
    surge = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    apply(apps, deployment(strategy=surge))
    recreate = apply(apps, deployment(strategy={"type": "Recreate"}))
    assert recreate.spec.strategy.type == "Recreate"
    assert recreate.spec.strategy.rolling_update is None


def test_apply_over_defaulted_rolling_update_is_422_like_a_real_cluster(apps: client.AppsV1Api) -> None:
    apply(apps, deployment())  # strategy defaulted to RollingUpdate 25%/25%, owned by nobody
    with pytest.raises(client.ApiException) as raised:
        apply(apps, deployment(strategy={"type": "Recreate"}))
    cause = json.loads(raised.value.body)["details"]["causes"][0]
    assert cause["field"] == "spec.strategy.rollingUpdate"


def test_service_apply_keeps_the_allocated_cluster_ip(core: client.CoreV1Api) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 5000}]},
    }
    first = core.patch_namespaced_service("web", "default", service, field_manager="kaitoctl", _content_type=APPLY)
    assert first.spec.cluster_ip and first.spec.type == "ClusterIP"
    again = core.patch_namespaced_service("web", "default", service, field_manager="kaitoctl", _content_type=APPLY)
    assert again.metadata.resource_version == first.metadata.resource_version
    headless = {**service, "metadata": {"name": "web-headless"}, "spec": {**service["spec"], "clusterIP": "None"}}
    created = core.patch_namespaced_service("web-headless", "default", headless, field_manager="kaitoctl", _content_type=APPLY)
    assert created.spec.cluster_ip == "None"


def test_dropping_a_keyed_list_item_removes_the_whole_item(apps: client.AppsV1Api) -> None:
    apply(apps, deployment(init_images=("adapter-a:1", "adapter-b:1")))
    result = apply(apps, deployment(init_images=("adapter-a:1",)))
    [remaining] = result.spec.template.spec.init_containers
    assert (remaining.name, remaining.image) == ("init-0", "adapter-a:1")
    assert remaining.image_pull_policy == "IfNotPresent"  # defaulted fields of kept items stay
    assert result.metadata.generation == 2
