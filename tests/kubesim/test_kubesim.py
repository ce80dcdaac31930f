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
    sim.add_node("gpu-1", gpus=1)
    sim.set_image_behaviour("registry.example/oom:1", "oom")
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "gpu-1",
                                                "containers": [{"name": "main", "image": "registry.example/oom:1"}]}}
    sim._create("Pod", "default", pod)

    def last_state():
        status = (sim.get("Pod", "default", "p") or {}).get("status") or {}
        return ((status.get("containerStatuses") or [{}])[0].get("lastState") or {}).get("terminated")

    terminated = sim.wait_until(last_state, 15, "the OOMKilled container")
    assert (terminated["reason"], terminated["exitCode"]) == ("OOMKilled", 137)
    events = [(e["type"], e["reason"]) for e in sim.list("Event", "default") if e["involvedObject"]["name"] == "p"]
    assert ("Warning", "BackOff") in events
