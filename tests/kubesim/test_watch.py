"""Watch streams through ``kubernetes.watch.Watch``: resume, selectors, 410, dropped connections, bookmarks."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client, watch

from . import KubeSim


def configmap(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}}


def test_watch_from_a_list_version_sees_later_changes_filtered_by_label(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("before", app="x"))
    listed = core.list_namespaced_config_map("default", label_selector="app=x")
    core.create_namespaced_config_map("default", configmap("other", app="y"))
    core.create_namespaced_config_map("default", configmap("new", app="x"))
    core.patch_namespaced_config_map("new", "default", {"data": {"k": "v"}})
    core.patch_namespaced_config_map("new", "default", {"metadata": {"labels": {"app": "z"}}})
    core.delete_namespaced_config_map("before", "default")

    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        "default",
        label_selector="app=x",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=1,
    )
    seen = [(e["type"], e["object"].metadata.name) for e in stream]
    # "new" leaving the selector is a DELETED for this watch, as on a real API server.
    assert seen == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "new"), ("DELETED", "before")]


def test_watch_without_version_starts_with_current_objects(core: client.CoreV1Api) -> None:
    core.create_namespaced_config_map("default", configmap("a"))
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, "default", field_selector="metadata.name=a", timeout_seconds=1
    )
    assert [(e["type"], e["object"].metadata.name) for e in stream] == [("ADDED", "a")]


def test_watch_from_expired_history_is_410(sim: KubeSim, core: client.CoreV1Api) -> None:
    old = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", configmap("a"))
    sim.expire_watch_history()
    with pytest.raises(client.ApiException) as raised:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=old, timeout_seconds=5):
            pass
    assert raised.value.status == 410
    assert "too old resource version" in raised.value.reason
    # A fresh list gives a version to resume from.
    fresh = core.list_namespaced_config_map("default").metadata.resource_version
    stream = watch.Watch().stream(core.list_namespaced_config_map, "default", resource_version=fresh, timeout_seconds=1)
    assert list(stream) == []


def test_drop_watches_ends_open_streams(sim: KubeSim, core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    opened = threading.Event()
    ended = threading.Event()

    def consume() -> None:
        # _request_timeout makes a stream that is never dropped fail instead of hanging.
        stream = watch.Watch().stream(
            core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=60, _request_timeout=20
        )
        for event in stream:
            if event["object"].metadata.name == "ping":
                opened.set()
        ended.set()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    core.create_namespaced_config_map("default", configmap("ping"))
    assert opened.wait(10)
    sim.drop_watches()
    assert ended.wait(10)


def test_bookmarks_carry_the_current_version(core: client.CoreV1Api) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_config_map, "default", resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=5
    ):
        if event["type"] == "BOOKMARK":
            assert int(event["raw_object"]["metadata"]["resourceVersion"]) >= int(rv)
            w.stop()
            break
    else:
        pytest.fail("no BOOKMARK event")


def test_watch_deployments_through_apps_api(sim: KubeSim, apps: client.AppsV1Api) -> None:
    from .manifests import deployment

    sim.add_node("n1", gpus=1)
    rv = apps.list_namespaced_deployment("default").metadata.resource_version
    apps.create_namespaced_deployment("default", deployment())
    w = watch.Watch()
    for event in w.stream(apps.list_namespaced_deployment, "default", resource_version=rv, timeout_seconds=10):
        status = event["object"].status
        if status.available_replicas == 1:
            w.stop()
    assert status.ready_replicas == 1
