"""The REST protocol as the official client speaks it: auth, CRUD, errors, selectors, patches, faults."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from kubernetes import client, config

from . import KubeSim
from .manifests import deployment


def status_of(exc: client.ApiException) -> dict:
    return json.loads(exc.body)


def test_request_without_the_token_is_401_status(sim: KubeSim) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"{sim.url}/api/v1/namespaces/default/pods")
    body = json.loads(raised.value.read())
    assert raised.value.code == 401
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized"


def test_kubeconfig_has_context_sim_with_namespace_default(sim: KubeSim) -> None:
    contexts, current = config.list_kube_config_contexts(config_file=sim.kubeconfig_path)
    assert current["name"] == "sim"
    assert current["context"]["namespace"] == "default"
    api = client.CoreV1Api(sim.api_client())
    assert {ns.metadata.name for ns in api.list_namespace().items} >= {"default", "kube-system"}


def test_create_get_conflicts_and_not_found(core: client.CoreV1Api) -> None:
    body = {"metadata": {"name": "settings"}, "data": {"a": "1"}}
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.uid and created.metadata.resource_version and created.metadata.creation_timestamp

    with pytest.raises(client.ApiException) as exists:
        core.create_namespaced_config_map("default", body)
    assert exists.value.status == 409
    assert status_of(exists.value)["reason"] == "AlreadyExists"
    assert status_of(exists.value)["message"] == 'configmaps "settings" already exists'

    stale = {"metadata": {"name": "settings", "resourceVersion": "1"}, "data": {"a": "2"}}
    with pytest.raises(client.ApiException) as modified:
        core.replace_namespaced_config_map("settings", "default", stale)
    assert status_of(modified.value)["reason"] == "Conflict"
    assert "the object has been modified" in status_of(modified.value)["message"]

    fresh = core.read_namespaced_config_map("settings", "default")
    fresh.data = {"a": "2"}
    assert core.replace_namespaced_config_map("settings", "default", fresh).data == {"a": "2"}

    core.delete_namespaced_config_map("settings", "default")
    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_config_map("settings", "default")
    assert missing.value.status == 404
    assert status_of(missing.value)["message"] == 'configmaps "settings" not found'
    assert status_of(missing.value)["details"] == {"name": "settings", "kind": "configmaps"}


def test_create_in_a_missing_namespace_is_404(core: client.CoreV1Api) -> None:
    with pytest.raises(client.ApiException) as raised:
        core.create_namespaced_config_map("nowhere", {"metadata": {"name": "x"}})
    assert status_of(raised.value)["message"] == 'namespaces "nowhere" not found'


def test_invalid_deployment_is_422_with_field_causes(apps: client.AppsV1Api) -> None:
    body = deployment(replicas=-1)
    template = body["spec"]["template"]["spec"]
    template["containers"].append({"name": "Main_1", "image": "x"})
    template["initContainers"] = [{"name": "main", "image": "y"}]
    with pytest.raises(client.ApiException) as raised:
        apps.create_namespaced_deployment("default", body)
    status = status_of(raised.value)
    assert raised.value.status == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith('Deployment.apps "web" is invalid: [')
    causes = {(c["field"], c["reason"]) for c in status["details"]["causes"]}
    assert ("spec.replicas", "FieldValueInvalid") in causes
    assert ("spec.template.spec.containers[1].name", "FieldValueInvalid") in causes
    assert ("spec.template.spec.containers[0].name", "FieldValueDuplicate") in causes


def test_missing_containers_and_unknown_volume_mount_are_422(apps: client.AppsV1Api) -> None:
    body = deployment()
    body["spec"]["template"]["spec"]["containers"] = []
    with pytest.raises(client.ApiException) as raised:
        apps.create_namespaced_deployment("default", body)
    assert status_of(raised.value)["message"] == (
        'Deployment.apps "web" is invalid: spec.template.spec.containers: Required value'
    )
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [{"name": "adapters", "mountPath": "/mnt"}]
    with pytest.raises(client.ApiException) as raised:
        apps.create_namespaced_deployment("default", body)
    cause = status_of(raised.value)["details"]["causes"][0]
    assert cause["field"] == "spec.template.spec.containers[0].volumeMounts[0].name"
    assert cause["message"] == 'Not found: "adapters"'


def test_label_selectors(core: client.CoreV1Api) -> None:
    for name, labels in {
        "a": {"tier": "gpu", "env": "prod"},
        "b": {"tier": "cpu", "env": "prod"},
        "c": {"tier": "gpu"},
    }.items():
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": labels}})

    def names(selector: str) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map("default", label_selector=selector).items]

    assert names("tier=gpu") == ["a", "c"]
    assert names("tier==gpu,env=prod") == ["a"]
    assert names("tier!=gpu") == ["b"]
    assert names("tier in (cpu, gpu),env") == ["a", "b"]
    assert names("env notin (prod)") == ["c"]
    assert names("!env") == ["c"]
    with pytest.raises(client.ApiException) as raised:
        core.list_namespaced_config_map("default", label_selector="tier in (gpu")
    assert raised.value.status == 400


def test_field_selectors_and_all_namespaces(sim: KubeSim, core: client.CoreV1Api) -> None:
    sim.add_node("n1", gpus=2)
    sim.add_node("n2", gpus=2)
    sim.add_pod("default", "p1", "n1", gpus=1)
    sim.add_pod("team-b", "p2", "n2", gpus=1)
    on_n1 = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items
    assert [p.metadata.name for p in on_n1] == ["p1"]
    everywhere = core.list_pod_for_all_namespaces(field_selector="metadata.namespace!=kube-system").items
    assert sorted(p.metadata.name for p in everywhere) == ["p1", "p2"]
    sim.wait_until(lambda: core.list_pod_for_all_namespaces(field_selector="status.phase=Running").items)
    events = core.list_namespaced_event(
        "default", field_selector="involvedObject.kind=Pod,involvedObject.name=p1,reason=Started"
    ).items
    assert [e.message for e in events] == ["Started container app"]
    with pytest.raises(client.ApiException) as raised:
        core.list_namespaced_pod("default", field_selector="spec.gpus=1")
    assert status_of(raised.value)["message"] == "field label not supported: spec.gpus"


def test_list_pages_with_limit_and_continue(core: client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
    first = core.list_namespaced_config_map("default", limit=2)
    assert [i.metadata.name for i in first.items] == ["cm-0", "cm-1"]
    second = core.list_namespaced_config_map("default", limit=10, _continue=first.metadata._continue)
    assert [i.metadata.name for i in second.items] == ["cm-2", "cm-3", "cm-4"]
    assert second.metadata._continue is None


def test_strategic_merge_patch_merges_containers_by_name(apps: client.AppsV1Api) -> None:
    body = deployment()
    body["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "side:1"})
    apps.create_namespaced_deployment("default", body)
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "side:2"}]}}}}
    patched = apps.patch_namespaced_deployment("web", "default", patch)
    images = {c.name: c.image for c in patched.spec.template.spec.containers}
    assert images == {"main": "registry.example/app:1", "sidecar": "side:2"}
    assert patched.metadata.generation == 2

    merged = apps.patch_namespaced_deployment(
        "web", "default", patch, _content_type="application/merge-patch+json"
    )
    assert [c.name for c in merged.spec.template.spec.containers] == ["sidecar"]


def test_json_patch_and_label_change_does_not_bump_generation(apps: client.AppsV1Api) -> None:
    apps.create_namespaced_deployment("default", deployment())
    relabelled = apps.patch_namespaced_deployment(
        "web", "default", [{"op": "add", "path": "/metadata/labels/team", "value": "ml"}]
    )
    assert relabelled.metadata.labels["team"] == "ml"
    assert relabelled.metadata.generation == 1
    scaled = apps.patch_namespaced_deployment("web", "default", [{"op": "replace", "path": "/spec/replicas", "value": 0}])
    assert scaled.metadata.generation == 2


def test_dry_run_create_patch_and_delete_persist_nothing(apps: client.AppsV1Api, sim: KubeSim) -> None:
    apps.create_namespaced_deployment("default", deployment(name="dry"), dry_run="All")
    assert sim.get("Deployment", "default", "dry") is None

    apps.create_namespaced_deployment("default", deployment())
    result = apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 3}}, dry_run="All")
    assert result.spec.replicas == 3
    apps.delete_namespaced_deployment("web", "default", dry_run="All")
    after = sim.get("Deployment", "default", "web")
    assert after["spec"]["replicas"] == 1
    assert after["metadata"]["generation"] == 1
    assert "deletionTimestamp" not in after["metadata"]


def test_forbid_answers_403_in_the_rbac_wording(sim: KubeSim, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    sim.forbid("patch", "deployments")
    sim.forbid("list", "nodes")
    with pytest.raises(client.ApiException) as raised:
        apps.patch_namespaced_deployment(
            "x", "default", deployment(name="x"), field_manager="kaitoctl", _content_type="application/apply-patch+yaml"
        )
    assert raised.value.status == 403
    assert status_of(raised.value)["message"] == (
        'deployments.apps "x" is forbidden: User "sim-user" cannot patch resource "deployments" '
        'in API group "apps" in the namespace "default"'
    )
    with pytest.raises(client.ApiException) as nodes:
        core.list_node()
    assert status_of(nodes.value)["message"] == (
        'nodes is forbidden: User "sim-user" cannot list resource "nodes" in API group "" at the cluster scope'
    )
    sim.allow("list", "nodes")
    assert core.list_node().items == []


def test_access_review_reflects_forbid(sim: KubeSim, api_client: client.ApiClient) -> None:
    sim.forbid("create", "pods")
    review_api = client.AuthorizationV1Api(api_client)

    def allowed(verb: str, resource: str) -> bool:
        body = {"spec": {"resourceAttributes": {"namespace": "default", "verb": verb, "resource": resource}}}
        return review_api.create_self_subject_access_review(body).status.allowed

    assert allowed("list", "pods") and not allowed("create", "pods")


def test_fail_next_fails_once_with_the_given_status(sim: KubeSim, core: client.CoreV1Api) -> None:
    causes = [{"reason": "FieldValueInvalid", "field": "data.x", "message": "Invalid value: nope"}]
    sim.fail_next("create", "configmaps", 422, 'ConfigMap "x" is invalid: data.x: Invalid value: nope', causes)
    with pytest.raises(client.ApiException) as raised:
        core.create_namespaced_config_map("default", {"metadata": {"name": "x"}})
    assert raised.value.status == 422
    assert status_of(raised.value)["details"]["causes"] == causes
    assert core.create_namespaced_config_map("default", {"metadata": {"name": "x"}}).metadata.name == "x"


def test_fail_next_after_lets_the_first_requests_through_and_clear_faults_disarms(
    sim: KubeSim, core: client.CoreV1Api
) -> None:
    sim.fail_next("create", "configmaps", 500, "etcdserver: request timed out", after=1)
    core.create_namespaced_config_map("default", {"metadata": {"name": "a"}})
    with pytest.raises(client.ApiException) as raised:
        core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
    assert raised.value.status == 500
    sim.fail_next("create", "configmaps", 500, "never reached")
    sim.forbid("list", "configmaps")
    sim.clear_faults()
    core.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
    assert len(core.list_namespaced_config_map("default").items) == 2


def test_requests_are_recorded_for_counting(sim: KubeSim, core: client.CoreV1Api) -> None:
    sim.clear_requests()
    core.list_namespaced_pod("default", label_selector="app=x")
    core.list_node()
    assert [(m, p) for m, p, _ in sim.requests] == [
        ("GET", "/api/v1/namespaces/default/pods"),
        ("GET", "/api/v1/nodes"),
    ]
    assert sim.requests[0][2] == {"labelSelector": "app=x"}


def test_secret_helper_and_status_subresource(sim: KubeSim, core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    sim.add_secret("default", "pull", {".dockerconfigjson": "{}"}, type="kubernetes.io/dockerconfigjson")
    assert core.read_namespaced_secret("pull", "default").type == "kubernetes.io/dockerconfigjson"
    apps.create_namespaced_deployment("default", deployment(gpus=0))
    sim.add_node("n1")
    status = sim.wait_until(
        lambda: apps.read_namespaced_deployment_status("web", "default").status.observed_generation
    )
    assert status == 1


def test_delete_collection_by_label_and_version(core: client.CoreV1Api, api_client: client.ApiClient) -> None:
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": {"app": app}}})
    core.delete_collection_namespaced_config_map("default", label_selector="app=x")
    assert [c.metadata.name for c in core.list_namespaced_config_map("default").items] == ["c"]
    assert client.VersionApi(api_client).get_code().git_version.startswith("v1.")
