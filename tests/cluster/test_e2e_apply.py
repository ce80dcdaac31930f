"""`kaitoctl apply / status / delete` end to end against the test cluster, as a user runs them."""

from __future__ import annotations

import json

from .conftest import (MODEL_IMAGE, gpu_node, interrupt, ready_pods, requests_of, workspace_doc,
                       writes)


def test_apply_ready_status_delete(sim, kaitoctl, write_ws):
    gpu_node(sim, "gpu-1", gpus=2)
    sim.add_node("cpu-1")
    path = write_ws()

    applied = kaitoctl("apply", "-f", path, "--timeout", "60s")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == ["service/falcon created", "deployment.apps/falcon created"]
    assert "gpu-1" in applied.stderr and "strategy RollingUpdate" in applied.stderr
    assert 'deployment "falcon" successfully rolled out' in applied.stderr
    assert len(ready_pods(sim, "falcon")) == 1

    # Server-side apply as field manager kaitoctl, every object dry-run before anything was written.
    patches = requests_of(sim, "PATCH")
    assert all(q.get("fieldManager") == "kaitoctl" for _, _, q in patches)
    dry = [p for _, p, q in patches if q.get("dryRun") == "All"]
    real = [p for _, p, q in patches if q.get("dryRun") != "All"]
    assert dry[:2] == real[:2] == ["/api/v1/namespaces/default/services/falcon",
                                   "/apis/apps/v1/namespaces/default/deployments/falcon"]
    first_real = next(i for i, r in enumerate(sim.requests) if r[0] == "PATCH" and r[2].get("dryRun") != "All")
    last_dry = max(i for i, r in enumerate(sim.requests) if r[0] == "PATCH" and r[2].get("dryRun") == "All")
    assert last_dry < first_real

    deploy = sim.get("Deployment", "default", "falcon")
    recorded = json.loads(deploy["metadata"]["annotations"]["kaitoctl.io/workspace"])
    assert recorded["metadata"] == {"name": "falcon", "namespace": "default"}
    assert deploy["metadata"]["annotations"]["kaitoctl.io/revision"] == "1"
    assert deploy["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}

    listed = kaitoctl("status")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACESUCCEEDED", "AGE",
                              "PRESET", "ADAPTERS", "READY", "ENDPOINT"]
    cells = row.split()
    assert cells[:5] == ["falcon", "Standard_NC12s_v3", "True", "True", "True"]
    assert cells[6:9] == ["falcon-7b", "-", "1/1"]
    assert cells[9].endswith(":80")

    detail = kaitoctl("status", "falcon")
    assert detail.returncode == 0, detail.stderr
    assert "Serving: yes, 1/1 pod(s) ready" in detail.stdout
    assert "kubectl port-forward -n default service/falcon 8080:80" in detail.stdout
    assert "curl -s http://127.0.0.1:8080/v1/chat/completions" in detail.stdout

    as_json = json.loads(kaitoctl("status", "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in as_json["items"][0]["status"]["conditions"]}
    assert conditions == {"ResourceReady": "True", "InferenceReady": "True", "WorkspaceSucceeded": "True"}

    sim.add_secret("default", "unrelated")
    deleted = kaitoctl("delete", "falcon", "--wait")
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.splitlines() == ["deployment.apps/falcon deleted", "service/falcon deleted",
                                           "configmap/falcon-kaitoctl-history deleted"]
    assert sim.get("Deployment", "default", "falcon") is None
    assert sim.list("Pod", "default", "kaito.sh/workspace=falcon") == []
    assert sim.get("Secret", "default", "unrelated") is not None
    again = kaitoctl("delete", "falcon")
    assert again.returncode == 4
    assert "workspace 'falcon' not found in namespace 'default'" in again.stderr


def test_reapply_unchanged_starts_no_rollout(sim, kaitoctl, write_ws):
    gpu_node(sim)
    path = write_ws()
    assert kaitoctl("apply", "-f", path).returncode == 0
    before = sim.get("Deployment", "default", "falcon")
    sim.clear_requests()

    again = kaitoctl("apply", "-f", path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["service/falcon unchanged", "deployment.apps/falcon unchanged"]
    assert writes(sim) == []
    after = sim.get("Deployment", "default", "falcon")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["metadata"]["annotations"]["kaitoctl.io/revision"] == "1"
    assert len(sim.list("ReplicaSet", "default")) == 1


def test_dry_run_client_and_server_write_nothing(sim, kaitoctl, write_ws):
    gpu_node(sim)
    path = write_ws()
    client = kaitoctl("apply", "-f", path, "--dry-run=client", "-o", "yaml")
    assert client.returncode == 0, client.stderr
    assert "kind: Deployment" in client.stdout
    assert "deployment.apps/falcon created (dry run)" in client.stderr
    assert requests_of(sim, "PATCH") == []
    server = kaitoctl("apply", "-f", path, "--dry-run", "server")
    assert server.returncode == 0, server.stderr
    assert server.stdout.splitlines() == ["service/falcon created (server dry run)",
                                          "deployment.apps/falcon created (server dry run)"]
    assert writes(sim) == []
    assert sim.get("Deployment", "default", "falcon") is None


def test_no_wait_returns_after_applying(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.set_image_behaviour(MODEL_IMAGE, "never_ready")
    result = kaitoctl("apply", "-f", write_ws(), "--wait=false")
    assert result.returncode == 0, result.stderr
    assert "kaitoctl status falcon -n default --watch" in result.stderr
    assert sim.get("Deployment", "default", "falcon") is not None


def test_namespace_flag_must_agree_with_the_file(sim, kaitoctl, write_ws):
    gpu_node(sim)
    result = kaitoctl("apply", "-f", write_ws(namespace="team-a"), "-n", "team-b")
    assert result.returncode == 2
    assert "the namespace from the provided object 'team-a' does not match the namespace 'team-b'" in result.stderr


def test_ctrl_c_leaves_everything_applied_and_says_how_to_resume(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.set_image_behaviour(MODEL_IMAGE, "never_ready")   # until Ctrl-C; then "fixed" for the resume
    proc = kaitoctl.start("apply", "-f", write_ws(), "--timeout", "120s")
    sim.wait_until(lambda: sim.list("Pod", "default", "kaito.sh/workspace=falcon"), timeout=30.0, what="the pod")
    sim.wait_until(lambda: requests_of(sim, "GET", "/pods") and any(q.get("watch") == "true"
                                                               for _, _, q in requests_of(sim, "GET", "/pods")),
                   timeout=30.0, what="the pod watch")
    code, _, err = interrupt(proc)
    assert code == 130
    assert "what was applied stays in place" in err
    assert "resume with: kaitoctl status falcon -n default --watch" in err
    assert "Traceback" not in err
    assert sim.get("Deployment", "default", "falcon") is not None
    assert sim.get("Service", "default", "falcon") is not None

    sim.set_image_behaviour(MODEL_IMAGE, "ok")
    resumed = kaitoctl("status", "falcon", "--watch", "--timeout", "60s")
    assert resumed.returncode == 0, resumed.stderr
    assert 'deployment "falcon" successfully rolled out' in resumed.stderr
    assert "Serving: yes, 1/1 pod(s) ready" in resumed.stdout


def test_several_namespaces_list_wide_and_delete_by_file(sim, kaitoctl, tmp_path):
    import yaml

    gpu_node(sim, gpus=4)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([workspace_doc("alpha", namespace="team-a"),
                                        workspace_doc("beta", namespace="team-b")]))
    sim.add_namespace("team-a")
    sim.add_namespace("team-b")
    applied = kaitoctl("apply", "-f", str(path), "--timeout", "60s")
    assert applied.returncode == 0, applied.stderr
    assert "deployment.apps/alpha created" in applied.stdout and "deployment.apps/beta created" in applied.stdout

    everywhere = kaitoctl("status", "-A", "-o", "wide")
    assert everywhere.returncode == 0, everywhere.stderr
    lines = everywhere.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"] and lines[0].split()[-4:] == ["REVISION", "STRATEGY",
                                                                                        "NODES", "IMAGE"]
    assert [line.split()[:2] for line in lines[1:]] == [["team-a", "alpha"], ["team-b", "beta"]]
    only_a = kaitoctl("status", "-n", "team-a")
    assert [line.split()[0] for line in only_a.stdout.splitlines()[1:]] == ["alpha"]

    deleted = kaitoctl("delete", "-f", str(path), "--wait")
    assert deleted.returncode == 0, deleted.stderr
    assert sim.list("Deployment") == [] and sim.list("Pod", "team-a") == []
