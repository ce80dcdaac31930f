"""The simulated kubelet: init containers, readiness, events, logs, and each failure behaviour."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from . import KubeSim
from .manifests import container


def make_pod(core: client.CoreV1Api, name: str, image: str, init_images: tuple[str, ...] = (), **spec: Any) -> None:
    body: dict[str, Any] = {"metadata": {"name": name}, "spec": {"containers": [container("main", image, 0)], **spec}}
    if init_images:
        body["spec"]["initContainers"] = [container(f"init-{i}", img, 0) for i, img in enumerate(init_images)]
    core.create_namespaced_pod("default", body)


def main_status(core: client.CoreV1Api, name: str) -> client.V1ContainerStatus | None:
    statuses = core.read_namespaced_pod(name, "default").status.container_statuses
    return statuses[0] if statuses else None


def init_status(core: client.CoreV1Api, name: str, index: int = 0) -> client.V1ContainerStatus | None:
    statuses = core.read_namespaced_pod(name, "default").status.init_container_statuses
    return statuses[index] if statuses else None


def waiting_reason(status: client.V1ContainerStatus | None) -> str | None:
    return status.state.waiting.reason if status and status.state and status.state.waiting else None


def events_for(core: client.CoreV1Api, name: str) -> list[tuple[str, str, str]]:
    items = core.list_namespaced_event("default", field_selector=f"involvedObject.name={name}").items
    return [(e.type, e.reason, e.message) for e in items]


def pod_ready(core: client.CoreV1Api, name: str) -> bool:
    conditions = core.read_namespaced_pod(name, "default").status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


@pytest.fixture
def node(sim: KubeSim) -> str:
    sim.add_node("n1")
    return "n1"


def test_init_containers_run_in_order_then_main_becomes_ready(sim: KubeSim, core: client.CoreV1Api, node: str) -> None:
    make_pod(core, "p", "app:1", init_images=("adapter-a:1", "adapter-b:1"))

    def first_done_second_running() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("p", "default")
        statuses = pod.status.init_container_statuses or []
        if len(statuses) == 2 and statuses[0].state.terminated and statuses[1].state.running:
            return pod
        return None

    pod = sim.wait_until(first_done_second_running)
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    initialized = next(c for c in pod.status.conditions if c.type == "Initialized")
    assert (initialized.status, initialized.message) == ("False", "containers with incomplete status: [init-1]")

    sim.wait_until(lambda: pod_ready(core, "p"))
    pod = core.read_namespaced_pod("p", "default")
    assert pod.status.phase == "Running"
    assert [s.state.terminated.reason for s in pod.status.init_container_statuses] == ["Completed", "Completed"]
    assert {c.type: c.status for c in pod.status.conditions} == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    reasons = [reason for _, reason, _ in events_for(core, "p")]
    for expected in ("Scheduled", "Pulling", "Pulled", "Created", "Started"):
        assert expected in reasons
    assert pod.status.pod_ip and pod.status.host_ip


@pytest.mark.parametrize("as_init", [False, True])
def test_pull_error_becomes_image_pull_back_off(sim: KubeSim, core: client.CoreV1Api, node: str, as_init: bool) -> None:
    sim.set_image_behaviour("ghcr.io/x/missing:1", "pull_error")
    if as_init:
        make_pod(core, "p", "app:1", init_images=("ghcr.io/x/missing:1",))
        status = lambda: init_status(core, "p")  # noqa: E731
    else:
        make_pod(core, "p", "ghcr.io/x/missing:1")
        status = lambda: main_status(core, "p")  # noqa: E731
    sim.wait_until(lambda: waiting_reason(status()) == "ImagePullBackOff")
    assert core.read_namespaced_pod("p", "default").status.phase == "Pending"
    events = events_for(core, "p")
    assert (
        "Warning",
        "Failed",
        'Failed to pull image "ghcr.io/x/missing:1": rpc error: code = NotFound desc = failed to pull and unpack '
        'image "ghcr.io/x/missing:1": failed to resolve reference "ghcr.io/x/missing:1": ghcr.io/x/missing:1: not found',
    ) in events
    assert ("Normal", "BackOff", 'Back-off pulling image "ghcr.io/x/missing:1"') in events
    with pytest.raises(client.ApiException) as raised:
        core.read_namespaced_pod_log("p", "default", container="init-0" if as_init else "main")
    assert json.loads(raised.value.body)["message"].endswith("is waiting to start: trying and failing to pull image")


def test_crash_loop_with_restarts_and_logs(sim: KubeSim, core: client.CoreV1Api, node: str) -> None:
    sim.set_image_behaviour("app:bad", "crash", log="loading\nValueError: bad config\n")
    make_pod(core, "p", "app:bad")
    status = sim.wait_until(
        lambda: (s := main_status(core, "p")) and waiting_reason(s) == "CrashLoopBackOff" and s.restart_count >= 2 and s
    )
    assert status.last_state.terminated.exit_code == 1
    assert status.last_state.terminated.reason == "Error"
    assert core.read_namespaced_pod("p", "default").status.phase == "Running"
    assert core.read_namespaced_pod_log("p", "default", tail_lines=1) == "ValueError: bad config\n"
    assert core.read_namespaced_pod_log("p", "default", previous=True).startswith("loading")
    assert any(reason == "BackOff" and "Back-off restarting failed container main" in message for _, reason, message in events_for(core, "p"))


def test_oom_killed(sim: KubeSim, core: client.CoreV1Api, node: str) -> None:
    sim.set_image_behaviour("app:big", "oom")
    make_pod(core, "p", "app:big")
    status = sim.wait_until(lambda: (s := main_status(core, "p")) and s.last_state and s.last_state.terminated and s)
    assert (status.last_state.terminated.reason, status.last_state.terminated.exit_code) == ("OOMKilled", 137)


def test_init_error_then_init_crash_loop(sim: KubeSim, core: client.CoreV1Api, node: str) -> None:
    sim.set_image_behaviour("adapter:broken", "init_error", log="cp: can't stat '/data/*'\n")
    make_pod(core, "p", "app:1", init_images=("adapter:broken",))
    terminated = sim.wait_until(lambda: (s := init_status(core, "p")) and s.state.terminated)
    assert (terminated.exit_code, terminated.reason) == (1, "Error")  # kubectl shows Init:Error
    sim.wait_until(lambda: waiting_reason(init_status(core, "p")) == "CrashLoopBackOff")  # Init:CrashLoopBackOff
    pod = core.read_namespaced_pod("p", "default")
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "PodInitializing"
    assert core.read_namespaced_pod_log("p", "default", container="init-0") == "cp: can't stat '/data/*'\n"
    with pytest.raises(client.ApiException) as raised:
        core.read_namespaced_pod_log("p", "default", container="main")
    assert json.loads(raised.value.body)["message"] == 'container "main" in pod "p" is waiting to start: PodInitializing'


def test_init_error_with_restart_policy_never_fails_the_pod(sim: KubeSim, core: client.CoreV1Api, node: str) -> None:
    sim.set_image_behaviour("adapter:broken", "init_error")
    make_pod(core, "p", "app:1", init_images=("adapter:broken",), restartPolicy="Never")
    sim.wait_until(lambda: core.read_namespaced_pod("p", "default").status.phase == "Failed")


def test_never_ready_runs_but_reports_unhealthy(sim: KubeSim, core: client.CoreV1Api, node: str) -> None:
    sim.set_image_behaviour("app:hang", "never_ready")
    make_pod(core, "p", "app:hang")
    sim.wait_until(lambda: any(reason == "Unhealthy" for _, reason, _ in events_for(core, "p")))
    pod = core.read_namespaced_pod("p", "default")
    assert pod.status.phase == "Running"
    assert pod.status.container_statuses[0].state.running and not pod.status.container_statuses[0].ready
    ready = next(c for c in pod.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.message) == ("False", "ContainersNotReady", "containers with unready status: [main]")


def test_slow_becomes_ready_after_its_tick_count(sim: KubeSim, core: client.CoreV1Api, node: str) -> None:
    sim.set_image_behaviour("app:slow", "slow", ticks=10**6)
    make_pod(core, "slow", "app:slow")
    make_pod(core, "quick", "app:1")
    sim.wait_until(lambda: pod_ready(core, "quick"))
    assert core.read_namespaced_pod("slow", "default").status.phase == "Running"
    assert not pod_ready(core, "slow")
    sim.set_image_behaviour("app:slow", "slow", ticks=5)
    sim.wait_until(lambda: pod_ready(core, "slow"))
    assert sim.ready_time("default", "quick") <= sim.ready_time("default", "slow")


def test_log_errors_for_multi_container_pods(sim: KubeSim, core: client.CoreV1Api, node: str) -> None:
    body = {"metadata": {"name": "p"}, "spec": {"containers": [container("a", "x:1", 0), container("b", "y:1", 0)]}}
    core.create_namespaced_pod("default", body)
    sim.wait_until(lambda: pod_ready(core, "p"))
    with pytest.raises(client.ApiException) as raised:
        core.read_namespaced_pod_log("p", "default")
    assert json.loads(raised.value.body)["message"] == "a container name must be specified for pod p, choose one of: [a b]"
    assert core.read_namespaced_pod_log("p", "default", container="b") == "[kubesim] b started\n"
    with pytest.raises(client.ApiException) as previous:
        core.read_namespaced_pod_log("p", "default", container="b", previous=True)
    assert json.loads(previous.value.body)["message"] == 'previous terminated container "b" in pod "p" not found'
