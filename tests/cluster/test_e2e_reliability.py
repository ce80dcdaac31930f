"""No half-applied workspaces, scaling watched, and every watch error ends a revision (issue 13)."""

from __future__ import annotations

import json

from .conftest import MODEL_IMAGE, Lines, adapter, gpu_node, ready_pods, scheduler_retry, workspace_doc, writes

BAD = "registry.example.com/adapters/bad:1"


def history_of(kaitoctl, name="falcon"):
    result = kaitoctl("history", name, "-o", "json")
    assert result.returncode == 0, result.stderr
    return {r["revision"]: r for r in json.loads(result.stdout)["items"]}


def test_a_forbidden_history_write_applies_nothing(sim, kaitoctl, write_ws):
    # Before: the Service and the Deployment were created, then the history write failed: exit 4 with
    # an RBAC error, a re-apply said "unchanged", and no revision was ever recorded.
    gpu_node(sim)
    sim.forbid("patch", "configmaps")
    result = kaitoctl("apply", "-f", write_ws())
    assert result.returncode == 4, result.stderr
    assert "forbidden: you may not patch configmaps" in result.stderr
    assert "nothing was applied" in result.stderr
    assert writes(sim) == []
    assert sim.get("Service", "default", "falcon") is None
    assert sim.get("Deployment", "default", "falcon") is None


def test_a_write_refused_part_way_is_undone_and_recorded_as_failed(sim, kaitoctl, write_ws):
    gpu_node(sim, gpus=4)
    first = kaitoctl("apply", "-f", write_ws(adapters=[adapter("sql", strength="0.5")]), "--timeout", "60s")
    assert first.returncode == 0, first.stderr
    before = sim.get("Deployment", "default", "falcon")

    # The dry run of the Deployment passes; the real write is refused by an admission webhook.
    sim.fail_next("patch", "deployments", 403, 'admission webhook "policy.example.com" denied the request: '
                  "adapters must come from registry.internal", after=1)
    result = kaitoctl("apply", "-f", write_ws(adapters=[adapter("sql", strength="0.9")]), "--timeout", "60s")
    assert result.returncode == 4, result.stderr
    assert "an admission webhook refused it" in result.stderr
    assert "RBAC rule" not in result.stderr              # a webhook's 403 is not an RBAC problem
    assert "the apply stopped there and was undone" in result.stderr
    after = sim.get("Deployment", "default", "falcon")
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["annotations"]["kaitoctl.io/revision"] == "1"
    revisions = history_of(kaitoctl)
    assert revisions[2]["outcome"] == "failed"
    assert "apply failed: an admission webhook refused it" in revisions[2]["failure"]
    assert revisions[1]["current"] is True

    # Re-applying is not "unchanged": the change was never made, so it is made now.
    again = kaitoctl("apply", "-f", write_ws(adapters=[adapter("sql", strength="0.9")]), "--timeout", "60s")
    assert again.returncode == 0, again.stderr
    assert "deployment.apps/falcon configured" in again.stdout
    assert history_of(kaitoctl)[3]["outcome"] == "succeeded"


def test_a_first_apply_refused_part_way_removes_what_it_created(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.fail_next("patch", "deployments", 403, 'deployments.apps "falcon" is forbidden: exceeded quota: gpu, '
                  "requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=8, limited: "
                  "requests.nvidia.com/gpu=8", after=1)
    result = kaitoctl("apply", "-f", write_ws(), "--timeout", "60s")
    assert result.returncode == 4, result.stderr
    assert "a ResourceQuota refused it" in result.stderr
    assert "service/falcon removed" in result.stderr
    assert sim.get("Service", "default", "falcon") is None
    assert sim.get("Deployment", "default", "falcon") is None
    assert history_of(kaitoctl)[1]["outcome"] == "failed"


def test_a_forbidden_pod_watch_ends_the_revision_as_interrupted_and_rollback_skips_it(sim, kaitoctl, write_ws):
    gpu_node(sim, gpus=4)
    assert kaitoctl("apply", "-f", write_ws(adapters=[adapter("sql")]), "--timeout", "60s").returncode == 0
    sim.forbid("watch", "pods")
    sim.set_image_behaviour(MODEL_IMAGE, "slow", ticks=80)   # the new pod takes ~2 s: the rollout needs the watch
    watched = kaitoctl("apply", "-f", write_ws(adapters=[adapter("sql", strength="0.5")]), "--timeout", "60s")
    assert watched.returncode == 4, watched.stderr
    assert "forbidden: you may not watch pods" in watched.stderr
    assert "revision 2 is recorded as interrupted" in watched.stderr
    revisions = history_of(kaitoctl)
    assert revisions[2]["outcome"] == "interrupted"
    assert "the rollout watch ended early" in revisions[2]["failure"]
    sim.allow("watch", "pods")

    # Revision 3 fails: the automatic rollback goes to revision 1, the last one seen serving, not to 2.
    sim.set_image_behaviour(BAD, "pull_error")
    failed = kaitoctl("apply", "-f", write_ws(adapters=[adapter("sql", image=BAD)]), "--timeout", "60s")
    assert failed.returncode == 6, failed.stderr
    assert "rolled back to revision 1" in failed.stderr
    assert sim.get("Deployment", "default", "falcon")["metadata"]["annotations"]["kaitoctl.io/revision"] == "4"
    assert history_of(kaitoctl)[4]["change"] == "automatic rollback to revision 1"


def test_scaling_up_is_watched_and_recorded(sim, kaitoctl, write_ws):
    # Before: count 1 -> 2 printed "the pod template did not change: no rollout" and exited 0 with a pod
    # that never became Ready; history said "no rollout".
    gpu_node(sim, gpus=4)
    assert kaitoctl("apply", "-f", write_ws(), "--timeout", "60s").returncode == 0
    sim.set_image_behaviour(MODEL_IMAGE, "never_ready")     # the serving pod stays Ready; a new one never is
    proc = kaitoctl.start("apply", "-f", write_ws(count=2), "--timeout", "120s")
    sim.wait_until(lambda: len(sim.list("Pod", "default", "kaito.sh/workspace=falcon")) == 2, timeout=60.0,
                   what="the second pod")
    sim.advance(3000)                                       # past the Deployment's progressDeadlineSeconds
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 6, err
    assert "scaling from 1 to 2 pod(s)" in err
    assert "no rollout" not in err
    assert 'deployment "falcon" exceeded its progress deadline' in err
    assert "rolled back to revision 1" in err
    revisions = history_of(kaitoctl)
    assert revisions[2]["outcome"] == "failed"
    assert "resource.count: 1 → 2" in revisions[2]["changes"]
    assert sim.get("Deployment", "default", "falcon")["spec"]["replicas"] == 1


def test_scaling_up_that_succeeds_is_a_rollout(sim, kaitoctl, write_ws):
    gpu_node(sim, gpus=4)
    assert kaitoctl("apply", "-f", write_ws(), "--timeout", "60s").returncode == 0
    result = kaitoctl("apply", "-f", write_ws(count=2), "--timeout", "60s")
    assert result.returncode == 0, result.stderr
    assert 'deployment "falcon" successfully rolled out' in result.stderr
    assert history_of(kaitoctl)[2]["outcome"] == "succeeded"


def _pods(sim, name="falcon"):
    return sim.list("Pod", "default", f"kaito.sh/workspace={name}")


def _waiting_reason(pod):
    return [((c.get("state") or {}).get("waiting") or {}).get("reason") for c in pod["status"].get("containerStatuses") or []]


def test_a_throttled_registry_is_waited_out(sim, kaitoctl, write_ws):
    # Before: the first ErrImagePull (a registry 429) failed the rollout at once.
    gpu_node(sim)
    sim.set_image_behaviour(MODEL_IMAGE, "pull_error", message=(
        f'failed to pull and unpack image "{MODEL_IMAGE}": unexpected status from HEAD request: 429 Too Many Requests'))
    proc = kaitoctl.start("apply", "-f", write_ws(), "--timeout", "120s")
    sim.wait_until(lambda: any("ErrImagePull" in _waiting_reason(p) or "ImagePullBackOff" in _waiting_reason(p)
                               for p in _pods(sim)), timeout=30.0, what="the failing pull")
    sim.wait_until(lambda: sum(e.get("count", 1) for e in sim.list("Event", "default")
                               if "429" in e.get("message", "")) >= 3, timeout=30.0, what="pull retries")
    sim.set_image_behaviour(MODEL_IMAGE, "ok")              # the registry lets it through again
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "image pull failing for" in err
    assert "ErrImagePull (registry answered 429), waiting up to 5m before giving up" in err
    assert 'deployment "falcon" successfully rolled out' in err


def test_a_throttled_registry_that_never_recovers_fails_after_the_grace(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.set_image_behaviour(MODEL_IMAGE, "pull_error", message="toomanyrequests: 429 Too Many Requests")
    proc = kaitoctl.start("apply", "-f", write_ws(), "--timeout", "120s")
    sim.wait_until(lambda: [e for e in sim.list("Event", "default") if "429" in e.get("message", "")],
                   timeout=30.0, what="the failing pull")
    sim.advance(400)                                          # the cluster's clock moves past the 5m grace
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 6, err
    assert "cannot be pulled (ErrImagePull); still failing after 6m" in err or \
        "cannot be pulled (ImagePullBackOff); still failing after 6m" in err


def test_an_unschedulable_pod_waits_for_the_node_an_autoscaler_adds(sim, kaitoctl, write_ws):
    # Before: the first Unschedulable failed the rollout before the autoscaler had said anything.
    gpu_node(sim, gpus=1)
    sim.add_pod("team-b", "trainer", "gpu-1", gpus=1)
    proc = kaitoctl.start("apply", "-f", write_ws(), "--skip-preflight", "--timeout", "120s")
    pending = sim.wait_until(lambda: [p for p in _pods(sim) if any(
        c.get("reason") == "Unschedulable" for c in p["status"].get("conditions") or [])], timeout=30.0,
        what="the unschedulable pod")
    sim.add_event("Pod", "default", pending[0]["metadata"]["name"], "TriggeredScaleUp",
                  "pod triggered scale-up: [{gpu-pool 1->2 (max: 3)}]")
    stderr = Lines(proc.stderr)
    # Pods and events come over separate watches: the clock moves only once kaitoctl has the event.
    sim.wait_until(lambda: stderr.has("no node fits yet; a cluster autoscaler asked for one at "), timeout=30.0,
                   what="kaitoctl to see the scale-up")
    sim.advance(120)        # past the first minute: without the autoscaler's event this would have failed
    scheduler_retry(sim)
    sim.wait_until(lambda: [line for line in list(stderr.lines)
                            if "asked for one at " in line and "(unschedulable for 2m)" in line], timeout=30.0,
                   what="kaitoctl to wait on past the first minute")
    assert proc.poll() is None, stderr.text()
    gpu_node(sim, "gpu-2", gpus=1)                           # the autoscaler's node joins
    assert proc.wait(timeout=120) == 0, stderr.text()
    err = stderr.text()
    assert 'deployment "falcon" successfully rolled out' in err


def test_a_failed_statefulset_update_rolls_back_through_the_unhealthy_highest_ordinal(sim, kaitoctl, write_ws):
    # The StatefulSet controller (Parallel) replaces the highest outdated ordinal even when it is unhealthy:
    # the rollback of a failed update replaces the broken pod-1 and never touches pod-0.
    for name in ("gpu-a", "gpu-b"):
        gpu_node(sim, name, gpus=1, instance_type="Standard_NC6s_v3")
    sim.set_image_behaviour(BAD, "pull_error")
    sim.add_secret("default", "regcred")
    doc = workspace_doc("llama", preset="llama-2-13b-chat", count=2, instance_type="Standard_NC6s_v3",
                        preset_extra={"accessMode": "private", "presetOptions": {
                            "image": "registry.example.com/llama-2-13b-chat:0.1.0", "imagePullSecrets": ["regcred"]}})
    first = kaitoctl("apply", "-f", write_ws(doc), "--timeout", "60s")
    assert first.returncode == 0, first.stderr
    uid_0 = sim.get("Pod", "default", "llama-0")["metadata"]["uid"]
    doc["inference"]["adapters"] = [adapter("sql", image=BAD)]
    result = kaitoctl("apply", "-f", write_ws(doc), "--allow-downtime", "--timeout", "60s")
    assert result.returncode == 6, result.stderr
    assert "adapter 'sql' (init container sql): image registry.example.com/adapters/bad:1 cannot be pulled" \
        in result.stderr
    assert "pod llama-1:" in result.stderr and "pod llama-0:" not in result.stderr.split("rolling back")[0]
    assert "rolled back to revision 1, which is serving again" in result.stderr
    sts = sim.get("StatefulSet", "default", "llama")
    assert sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
    assert sim.get("Pod", "default", "llama-0")["metadata"]["uid"] == uid_0
    assert len(ready_pods(sim, "llama")) == 2
    revisions = history_of(kaitoctl, "llama")
    assert (revisions[2]["outcome"], revisions[3]["outcome"]) == ("failed", "succeeded")


def test_nodes_with_only_the_beta_instance_type_label_are_placed_by_it(sim, kaitoctl, write_ws):
    # An older node carries only beta.kubernetes.io/instance-type. Preflight reads it; so must the rendered
    # affinity. Before, the pod also landed on a beta-only node of another type (the "no GA label" term).
    sim.add_node("old-wrong", gpus=2, labels={"apps": "llm", "beta.kubernetes.io/instance-type": "Standard_NC6s_v3"})
    wrong = kaitoctl("apply", "-f", write_ws(), "--skip-preflight", "--timeout", "60s")
    assert wrong.returncode == 6, wrong.stderr
    assert "didn't match Pod's node affinity/selector" in wrong.stderr
    assert kaitoctl("delete", "falcon").returncode == 0

    sim.add_node("old-right", gpus=2, labels={"apps": "llm", "beta.kubernetes.io/instance-type": "Standard_NC12s_v3"})
    preflight = kaitoctl("preflight", "-f", write_ws())
    assert preflight.returncode == 0, preflight.stdout + preflight.stderr
    right = kaitoctl("apply", "-f", write_ws(), "--timeout", "60s")
    assert right.returncode == 0, right.stderr
    assert [p["spec"]["nodeName"] for p in ready_pods(sim, "falcon")] == ["old-right"]
