"""Rollout status and pod diagnosis, as pure functions of plain dicts."""

from __future__ import annotations

import json

import pytest

from kaitoctl.rollout import current_pods, describe_pod, diagnose_pod, rollout_status, workload_status

WS = {"apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "metadata": {"name": "llm"},
      "inference": {"preset": {"name": "falcon-7b"}, "adapters": [
          {"source": {"name": "sql", "image": "reg.example.com/sql:1", "imagePullSecrets": ["regcred"]},
           "strength": "0.5"}]}}


def deployment(*, generation=2, observed=2, replicas=1, updated=1, total=1, available=1, ready=1, conditions=(),
               template_hash="h2", kind="Deployment", status_extra=None):
    status = {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
              "availableReplicas": available, "readyReplicas": ready, "conditions": list(conditions)}
    status.update(status_extra or {})
    return {
        "kind": kind,
        "metadata": {"name": "llm", "generation": generation,
                     "annotations": {"kaitoctl.io/workspace": json.dumps(WS), "kaitoctl.io/revision": "2"}},
        "spec": {"replicas": replicas,
                 "template": {"metadata": {"labels": {"kaito.sh/workspace": "llm",
                                                      "kaitoctl.io/pod-template-hash": template_hash}}}},
        "status": status,
    }


def pod(name="llm-abc", *, template_hash="h2", init=None, containers=None, conditions=None, node="gpu-1",
        pull_secrets=("regcred",), phase="Pending", deleting=False):
    obj = {
        "kind": "Pod",
        "metadata": {"name": name, "uid": f"u-{name}",
                     "labels": {"kaito.sh/workspace": "llm", "kaitoctl.io/pod-template-hash": template_hash}},
        "spec": {
            "nodeName": node,
            "imagePullSecrets": [{"name": s} for s in pull_secrets],
            "initContainers": [{"name": "kaitoctl-copy-tool", "image": "busybox:1.36.1-musl"},
                               {"name": "sql", "image": "reg.example.com/sql:1"}],
            "containers": [{"name": "llm", "image": "ghcr.io/kaitoctl/falcon-7b:0.1"}],
        },
        "status": {"phase": phase, "conditions": conditions or [],
                   "initContainerStatuses": init or [], "containerStatuses": containers or []},
    }
    if node is None:
        del obj["spec"]["nodeName"]
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return obj


def waiting(name, reason, message="", restarts=0, last=None):
    cs = {"name": name, "state": {"waiting": {"reason": reason, "message": message}}, "restartCount": restarts,
          "ready": False}
    if last:
        cs["lastState"] = {"terminated": last}
    return cs


DONE_INIT = [{"name": "kaitoctl-copy-tool", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
             {"name": "sql", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]


@pytest.mark.parametrize(
    "kwargs, message, done",
    [
        (dict(generation=3, observed=2), "Waiting for deployment spec update to be observed...", False),
        (dict(updated=0, available=0), 'Waiting for deployment "llm" rollout to finish: 0 out of 1 new replicas '
                                       "have been updated...", False),
        (dict(total=2), 'Waiting for deployment "llm" rollout to finish: 1 old replicas are pending termination...',
         False),
        (dict(available=0), 'Waiting for deployment "llm" rollout to finish: 0 of 1 updated replicas are '
                            "available...", False),
        ({}, 'deployment "llm" successfully rolled out', True),
    ],
)
def test_deployment_status_follows_kubectl(kwargs, message, done):
    assert workload_status(deployment(**kwargs)) == (message, done, None)


def test_progress_deadline_exceeded_is_a_failure():
    cond = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "llm-abc" has timed out progressing.'}
    _, done, failure = workload_status(deployment(available=0, conditions=[cond]))
    assert not done
    assert failure.reason == "ProgressDeadlineExceeded"
    assert failure.message == 'deployment "llm" exceeded its progress deadline'
    assert failure.details == ['ReplicaSet "llm-abc" has timed out progressing.']


def test_replica_failure_is_a_failure():
    cond = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
            "message": 'pods "llm-x" is forbidden: exceeded quota: gpu'}
    _, _, failure = workload_status(deployment(updated=0, available=0, ready=0, conditions=[cond]))
    assert failure.message == 'deployment "llm" cannot create pods: pods "llm-x" is forbidden: exceeded quota: gpu'


def test_statefulset_status():
    sts = deployment(kind="StatefulSet", ready=1, replicas=2)
    assert workload_status(sts) == ("Waiting for 1 pods to be ready...", False, None)
    sts = deployment(kind="StatefulSet", status_extra={"currentRevision": "a", "updateRevision": "b"})
    assert workload_status(sts)[0].startswith("Waiting for statefulset rolling update to complete")
    sts = deployment(kind="StatefulSet", status_extra={"currentRevision": "b", "updateRevision": "b"})
    assert workload_status(sts) == ("statefulset rolling update complete 1 pods at revision b...", True, None)


def test_statefulset_gets_a_deadline_of_its_own():
    sts = deployment(kind="StatefulSet", ready=0)
    running = pod(phase="Running", init=DONE_INIT,
                  containers=[{"name": "llm", "state": {"running": {}}, "ready": False, "restartCount": 0}])
    assert rollout_status(sts, [running], [], stalled_s=100, progress_deadline_s=300).failure is None
    failure = rollout_status(sts, [running], [], stalled_s=301, progress_deadline_s=300).failure
    assert failure.reason == "ProgressDeadlineExceeded"
    assert failure.message == "statefulset \"llm\" made no progress for 301s (kaitoctl's deadline for StatefulSets: 300s)"
    # A Deployment relies on the server's own deadline condition instead.
    assert rollout_status(deployment(available=0), [running], [], stalled_s=10_000,
                          progress_deadline_s=300).failure is None


def test_adapter_image_pull_names_the_adapter_and_the_secret():
    p = pod(init=[DONE_INIT[0], waiting("sql", "ImagePullBackOff", 'Back-off pulling image "reg.example.com/sql:1"')])
    events = [{"type": "Warning", "reason": "Failed", "involvedObject": {"kind": "Pod", "name": "llm-abc"},
               "message": 'Failed to pull image "reg.example.com/sql:1": 401 Unauthorized',
               "lastTimestamp": "2024-01-01T00:00:01Z"}]
    status = rollout_status(deployment(available=0), [p], events)
    f = status.failure
    assert f.reason == "ImagePullBackOff"
    assert f.message == "adapter 'sql' (init container sql): image reg.example.com/sql:1 cannot be pulled (ImagePullBackOff)"
    assert "pull secret(s) in use: regcred" in f.details
    assert 'event Failed: Failed to pull image "reg.example.com/sql:1": 401 Unauthorized' in f.details
    assert status.pods == ["pod llm-abc: Init:1/2 (adapter sql: ImagePullBackOff)"]


def test_model_image_pull_without_secret_says_where_to_set_one():
    p = pod(pull_secrets=(), init=DONE_INIT, containers=[waiting("llm", "ErrImagePull", "not found")])
    f = diagnose_pod(p, [], [])
    assert f.message == "container llm: image ghcr.io/kaitoctl/falcon-7b:0.1 cannot be pulled (ErrImagePull)"
    assert any("inference.preset.presetOptions.imagePullSecrets" in d for d in f.details)


def test_failed_init_container_asks_for_its_log():
    init = [DONE_INIT[0], {"name": "sql", "restartCount": 2,
                           "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                           "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]
    f = diagnose_pod(pod(init=init), [], [{"name": "sql", "image": "reg.example.com/sql:1", "strength": "0.5",
                                           "imagePullSecrets": []}])
    assert f.message == "adapter 'sql' (init container sql) failed (Error, exit code 1)"
    assert f.log == ("llm-abc", "sql", True)


def test_crash_loop_reports_last_termination_and_asks_for_previous_log():
    cs = waiting("llm", "CrashLoopBackOff", "back-off 20s", restarts=3,
                 last={"exitCode": 2, "reason": "Error", "message": "model dir missing"})
    f = diagnose_pod(pod(init=DONE_INIT, containers=[cs], phase="Running"), [], [])
    assert f.reason == "CrashLoopBackOff"
    assert f.message == ("container llm of pod llm-abc is crash-looping (restarted 3 times; last exit: Error, "
                         "exit code 2)")
    assert f.details == ["model dir missing"]
    assert f.log == ("llm-abc", "llm", True)


def test_oom_killed_fails_at_once():
    cs = {"name": "llm", "restartCount": 1, "ready": False, "state": {"running": {}},
          "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    f = diagnose_pod(pod(init=DONE_INIT, containers=[cs], phase="Running"), [], [])
    assert f.reason == "OOMKilled"
    assert "killed for using too much memory (OOMKilled, restarted 1 times)" in f.message
    assert "smaller model" in f.hint
    assert f.log == ("llm-abc", "llm", True)


def test_unschedulable_quotes_the_scheduler():
    cond = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
    p = pod(node=None, conditions=cond)
    f = diagnose_pod(p, [], [])
    assert f.reason == "Unschedulable"
    assert f.message == "pod llm-abc cannot be scheduled: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    assert describe_pod(p) == "Pending: Unschedulable"
    # The first Unschedulable is waited out for a minute: an autoscaler may not have reacted yet.
    assert f.grace_s == 60.0
    # ... and longer while the cluster autoscaler is adding a node for it.
    scale_up = [{"type": "Normal", "reason": "TriggeredScaleUp", "message": "pod triggered scale-up",
                 "involvedObject": {"kind": "Pod", "name": "llm-abc"}, "firstTimestamp": "2024-01-01T00:00:10Z"}]
    scaling = diagnose_pod(p, scale_up, [])
    assert scaling.grace_s == 900.0
    assert scaling.waiting == "no node fits yet; a cluster autoscaler asked for one at 2024-01-01T00:00:10Z"


UNSCHEDULABLE = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                  "lastTransitionTime": "2024-01-01T00:00:00Z",
                  "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]


def _event(reason, message, at, type_="Warning", name="llm-abc"):
    return {"type": type_, "reason": reason, "message": message, "firstTimestamp": at, "lastTimestamp": at,
            "involvedObject": {"kind": "Pod", "name": name}}


def test_unschedulable_is_waited_out_while_an_autoscaler_adds_a_node_then_fails():
    workload = deployment(available=0, ready=0)
    p = pod(node=None, conditions=UNSCHEDULABLE)
    asked = _event("TriggeredScaleUp", "pod triggered scale-up: [{gpu-pool 0->1 (max: 3)}]",
                   "2024-01-01T00:00:12Z", type_="Normal")
    early = rollout_status(workload, [p], [asked, _event("FailedScheduling", "0/3", "2024-01-01T00:03:00Z")])
    assert early.failure is None
    assert early.message == ("no node fits yet; a cluster autoscaler asked for one at 2024-01-01T00:00:12Z; "
                             "waiting up to 15m (unschedulable for 2m)")
    late = rollout_status(workload, [p], [asked, _event("FailedScheduling", "0/3", "2024-01-01T00:20:00Z")])
    assert late.failure.reason == "Unschedulable"
    assert late.failure.message.endswith("still failing after 19m")


def test_unschedulable_fails_at_once_when_nothing_can_match_or_the_autoscaler_declines():
    mismatch = [{**UNSCHEDULABLE[0],
                 "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."}]
    status = rollout_status(deployment(available=0, ready=0), [pod(node=None, conditions=mismatch)], [])
    assert status.failure.reason == "Unschedulable"
    declined = _event("NotTriggerScaleUp", "pod didn't trigger scale-up: 1 max node group size reached",
                      "2024-01-01T00:00:15Z", type_="Normal")
    status = rollout_status(deployment(available=0, ready=0), [pod(node=None, conditions=UNSCHEDULABLE)], [declined])
    assert status.failure.reason == "Unschedulable"
    assert status.failure.details == ["event NotTriggerScaleUp: pod didn't trigger scale-up: 1 max node group "
                                      "size reached"]


def test_a_throttled_image_pull_is_waited_out_and_a_missing_image_is_not():
    too_many = "failed to pull: unexpected status from GET request to https://ghcr.io/v2/x/manifests/1: 429 Too Many Requests"
    first = _event("Failed", f'Failed to pull image "ghcr.io/kaitoctl/falcon-7b:0.1": {too_many}',
                   "2024-01-01T00:00:00Z")
    later = _event("BackOff", "Back-off pulling image", "2024-01-01T00:00:45Z", type_="Normal")
    throttled = pod(init=DONE_INIT, containers=[waiting("llm", "ErrImagePull", too_many)])
    status = rollout_status(deployment(available=0, ready=0), [throttled], [first, later])
    assert status.failure is None
    assert status.message == ("image pull failing for 45 s: ErrImagePull (registry answered 429), waiting up to 5m "
                              "before giving up")
    # The watcher's own clock counts too (a quiet cluster writes no new timestamps).
    status = rollout_status(deployment(available=0, ready=0), [throttled], [first], seen_for=lambda key: 301.0)
    assert status.failure.reason == "ErrImagePull"
    for message in ("manifest unknown", "docker.io/x/y:1: not found", "pull access denied, repository does not "
                    "exist or may require authorization"):
        missing = pod(init=DONE_INIT, containers=[waiting("llm", "ErrImagePull", message)])
        assert rollout_status(deployment(available=0, ready=0), [missing], []).failure.reason == "ErrImagePull"
    invalid = pod(init=DONE_INIT, containers=[waiting("llm", "InvalidImageName", "couldn't parse image name")])
    assert rollout_status(deployment(available=0, ready=0), [invalid], []).failure.reason == "InvalidImageName"
    unavailable = pod(init=DONE_INIT, containers=[waiting("llm", "RegistryUnavailable", "503 Service Unavailable")])
    status = rollout_status(deployment(available=0, ready=0), [unavailable], [])
    assert status.failure is None and "RegistryUnavailable (registry answered 503)" in status.message


def test_only_pods_of_the_current_template_are_diagnosed():
    old = pod("llm-old", template_hash="h1", init=DONE_INIT,
              containers=[waiting("llm", "CrashLoopBackOff", restarts=9)], phase="Running")
    new = pod("llm-new", template_hash="h2", init=DONE_INIT,
              containers=[{"name": "llm", "state": {"running": {}}, "ready": False, "restartCount": 0}],
              phase="Running")
    workload = deployment(available=0)
    assert [p["metadata"]["name"] for p in current_pods(workload, [old, new])] == ["llm-new"]
    status = rollout_status(workload, [old, new], [])
    assert status.failure is None
    assert status.pods == ["pod llm-new: Running, not ready yet (loading the model)"]


def test_terminating_pods_are_not_failures():
    p = pod(deleting=True, init=DONE_INIT, containers=[waiting("llm", "CrashLoopBackOff", restarts=2)])
    assert diagnose_pod(p, [], []) is None
    assert describe_pod(p) == "Terminating"


def test_done_rollout_is_not_diagnosed():
    crashy_old = pod(init=DONE_INIT, containers=[waiting("llm", "CrashLoopBackOff", restarts=2)])
    status = rollout_status(deployment(), [crashy_old], [])
    assert status.done and status.failure is None


@pytest.mark.parametrize(
    "p, text",
    [
        (pod(node=None), "Pending: waiting to be scheduled"),
        (pod(init=[{"name": "kaitoctl-copy-tool", "state": {"running": {}}}]), "Init:0/2 (kaitoctl-copy-tool: running)"),
        (pod(init=DONE_INIT, containers=[waiting("llm", "ContainerCreating")]), "ContainerCreating"),
        (pod(init=DONE_INIT, containers=[{"name": "llm", "state": {"running": {}}, "ready": True, "restartCount": 1}],
             phase="Running"), "Running, ready, 1 restart(s)"),
    ],
)
def test_describe_pod(p, text):
    assert describe_pod(p) == text
