"""What the suite's tests rely on from kubesim: isolation between tests, and the hooks a real
apiserver has no switch for (RBAC changes, the proxy's faults, kwok's pod behaviours)."""

from __future__ import annotations

import json

import requests

from . import KubeSim, controlplane


def _as_user(sim: KubeSim, method: str, path: str, **kwargs):
    """A request as kaitoctl's restricted user, through the proxy (as kaitoctl sends them)."""
    assert sim.plane is not None
    return requests.request(method, sim.url + path, headers={"Authorization": f"Bearer {sim.token}"},
                            verify=str(sim.plane.ca), timeout=30, **kwargs)


def _last_terminated(sim: KubeSim, image: str):
    """Pod p running ``image`` on a fresh kwok node: its container's lastState.terminated, once kwok set it."""
    sim.add_node("gpu-1", gpus=1)
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "gpu-1", "containers": [{"name": "main", "image": image}]}}
    sim._create("Pod", "default", pod)

    def last_state():
        status = (sim.get("Pod", "default", "p") or {}).get("status") or {}
        return ((status.get("containerStatuses") or [{}])[0].get("lastState") or {}).get("terminated")

    return sim.wait_until(last_state, 15, f"the terminated container of {image}")


def test_a_test_finds_no_nodes_pods_or_objects_of_the_one_before():
    controlplane.skip_unless_available()
    with KubeSim() as first:
        first.add_node("gpu-1", gpus=2)
        first.add_pod("team-b", "trainer", "gpu-1", gpus=1)
        first.add_secret("default", "regcred")
        assert first.get("Pod", "team-b", "trainer")["status"]["phase"] == "Running"
    with KubeSim() as second:
        assert second.list("Node") == []
        assert second.list("Pod") == []
        assert second.get("Secret", "default", "regcred") is None
        assert second.requests == []


def test_forbid_and_allow_change_the_users_real_rbac(sim):
    path = "/apis/apps/v1/namespaces/default/deployments"
    assert _as_user(sim, "GET", path).status_code == 200
    sim.forbid("list", "deployments")
    refused = _as_user(sim, "GET", path)
    assert refused.status_code == 403
    assert 'User "kaitoctl-user" cannot list resource "deployments" in API group "apps"' in refused.json()["message"]
    assert _as_user(sim, "GET", "/api/v1/namespaces/default/pods").status_code == 200
    sim.allow("list", "deployments")
    assert _as_user(sim, "GET", path).status_code == 200


def test_fail_next_answers_once_then_the_apiserver_does(sim):
    sim.fail_next("list", "pods", 503, "etcd leader changed")
    path = "/api/v1/namespaces/default/pods"
    failed = _as_user(sim, "GET", path)
    assert failed.status_code == 503 and failed.json()["reason"] == "ServiceUnavailable"
    assert _as_user(sim, "GET", path).status_code == 200
    assert [(m, p) for m, p, _ in sim.requests] == [("GET", path), ("GET", path)]


def test_expired_history_sends_410_to_old_resumes(sim):
    rv = str(sim.resource_version())
    sim.add_secret("default", "moves-history")
    sim.expire_watch_history()
    resp = _as_user(sim, "GET", "/api/v1/namespaces/default/secrets",
                    params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"})
    event = json.loads(resp.text.splitlines()[0])
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


def test_image_behaviours_reach_the_pod_status_through_kwok(sim):
    sim.set_image_behaviour("registry.example/oom:1", "oom")
    terminated = _last_terminated(sim, "registry.example/oom:1")
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    events = [(e["type"], e["reason"]) for e in sim.list("Event", "default") if e["involvedObject"]["name"] == "p"]
    assert ("Warning", "BackOff") in events


def test_fail_next_after_lets_the_first_requests_through_and_clear_faults_disarms(sim):
    path = "/api/v1/namespaces/default/configmaps"
    sim.fail_next("create", "configmaps", 500, "etcdserver: request timed out", after=1)
    assert _as_user(sim, "POST", path, json={"metadata": {"name": "a"}}).status_code == 201
    assert _as_user(sim, "POST", path, json={"metadata": {"name": "b"}}).status_code == 500
    sim.fail_next("create", "configmaps", 500, "never reached")
    sim.forbid("list", "configmaps")
    sim.clear_faults()
    assert _as_user(sim, "POST", path, json={"metadata": {"name": "c"}}).status_code == 201
    names = {c["metadata"]["name"] for c in _as_user(sim, "GET", path).json()["items"]}
    assert {"a", "c"} <= names and "b" not in names


def test_crash_termination_message_reaches_the_last_state(sim):
    sim.set_image_behaviour("registry.example/crash:1", "crash", termination_message="weights: sha256 mismatch")
    terminated = _last_terminated(sim, "registry.example/crash:1")
    assert terminated["message"] == "weights: sha256 mismatch"


def test_add_event_is_a_real_event_and_advance_moves_its_start_back(sim):
    sim.add_node("gpu-1", gpus=1)
    sim.add_pod("default", "p", "gpu-1")
    first = sim.add_event("Pod", "default", "p", "TriggeredScaleUp", "pod triggered scale-up")
    again = sim.add_event("Pod", "default", "p", "TriggeredScaleUp", "pod triggered scale-up")
    assert again["count"] == 2 and again["involvedObject"]["uid"] == sim.get("Pod", "default", "p")["metadata"]["uid"]
    sim.advance(300)
    moved = sim.get("Event", "default", first["metadata"]["name"])
    assert moved["lastTimestamp"] == again["lastTimestamp"]
    from kubesim.sim import _shifted

    assert moved["firstTimestamp"] == _shifted(first["firstTimestamp"], 300)
