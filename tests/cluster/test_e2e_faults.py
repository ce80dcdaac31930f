"""API faults: refused, conflicting, invalid, unreachable, and watches that drop or expire."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import yaml

from .conftest import MODEL_IMAGE, gpu_node, requests_of, writes


def test_forbidden_names_the_rule_and_writes_nothing(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.forbid("patch", "deployments")
    result = kaitoctl("apply", "-f", write_ws())
    assert result.returncode == 4, result.stderr
    assert ('kaitoctl: error: server-side dry run: forbidden: you may not patch deployments.apps "falcon" in '
            'namespace "default"; nothing was applied') in result.stderr
    assert 'RBAC rule that would allow it (Role (or ClusterRole)): apiGroups: ["apps"], resources: ' \
           '["deployments"], verbs: ["patch"]' in result.stderr
    assert writes(sim) == []
    assert sim.get("Service", "default", "falcon") is None


def test_conflict_with_another_manager_then_force(sim, kaitoctl, write_ws):
    gpu_node(sim, gpus=4)
    path = write_ws()
    assert kaitoctl("apply", "-f", path).returncode == 0
    sim.update_as("kubectl-edit", "Deployment", "default", "falcon", {"spec": {"replicas": 2}})

    result = kaitoctl("apply", "-f", path)
    assert result.returncode == 4, result.stderr
    assert ("server-side apply conflict on deployment.apps/falcon: 1 field(s) are owned by another field manager"
            in result.stderr)
    assert '.spec.replicas: conflict with "kubectl-edit"' in result.stderr
    assert "--force-conflicts" in result.stderr
    assert sim.get("Deployment", "default", "falcon")["spec"]["replicas"] == 2

    forced = kaitoctl("apply", "-f", path, "--force-conflicts", "--timeout", "60s")
    assert forced.returncode == 0, forced.stderr
    assert "deployment.apps/falcon configured" in forced.stdout
    assert sim.get("Deployment", "default", "falcon")["spec"]["replicas"] == 1


def test_invalid_object_lists_the_servers_causes_and_nothing_is_applied(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.fail_next("patch", "deployments", 422, 'Deployment.apps "falcon" is invalid',
                  causes=[{"reason": "FieldValueForbidden", "field": "spec.template.spec.containers[0].image",
                           "message": "Forbidden: image registry not allowed by policy"}])
    result = kaitoctl("apply", "-f", write_ws())
    assert result.returncode == 4, result.stderr
    assert "the API server rejected deployment.apps/falcon as invalid" in result.stderr
    assert ("  spec.template.spec.containers[0].image: Forbidden: image registry not allowed by policy"
            in result.stderr)
    assert sim.get("Service", "default", "falcon") is None       # its dry run passed; nothing was written


def test_dropped_and_expired_watches_are_resumed(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.set_image_behaviour(MODEL_IMAGE, "never_ready")    # until the watches have been dropped and expired
    proc = kaitoctl.start("apply", "-f", write_ws(), "--timeout", "60s")

    def pod_watches():
        return [q for _, p, q in requests_of(sim, "GET", "/pods") if q.get("watch") == "true"]

    sim.wait_until(lambda: pod_watches(), timeout=30.0, what="the pod watch")
    lists_before = len([q for _, p, q in requests_of(sim, "GET", "/namespaces/default/pods")
                        if q.get("watch") != "true"])
    sim.drop_watches()
    sim.wait_until(lambda: len(pod_watches()) >= 2, timeout=30.0, what="the pod watch to resume")
    sim.add_secret("default", "unrelated-change")  # history moves past every watcher's resourceVersion...
    sim.expire_watch_history()                       # ... and is forgotten: the watches get 410 Gone
    # relisted and watching again (were the pod Ready before, the relist alone would end the rollout)
    sim.wait_until(lambda: len(pod_watches()) >= 3, timeout=30.0, what="the pod watch after the 410")
    sim.set_image_behaviour(MODEL_IMAGE, "ok")       # now the pod turns Ready
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert 'deployment "falcon" successfully rolled out' in err
    lists_after = len([q for _, p, q in requests_of(sim, "GET", "/namespaces/default/pods")
                       if q.get("watch") != "true"])
    assert lists_after > lists_before          # the 410 made it relist


def test_events_are_optional(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.forbid("watch", "events")
    sim.forbid("list", "events")
    result = kaitoctl("apply", "-f", write_ws(), "--timeout", "60s")
    assert result.returncode == 0, result.stderr
    detail = kaitoctl("status", "falcon")
    assert detail.returncode == 0, detail.stderr
    assert "Serving: yes" in detail.stdout


def test_unreachable_and_unauthorized_servers(sim, kaitoctl, write_ws, tmp_path: Path):
    gpu_node(sim)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = yaml.safe_load(Path(sim.kubeconfig_path).read_text())
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{port}"
    closed = tmp_path / "closed"
    closed.write_text(yaml.safe_dump(config))
    import subprocess
    import sys

    from .conftest import ROOT, kaitoctl_env

    def run(kubeconfig):
        return subprocess.run([sys.executable, "-m", "kaitoctl", "status", "--kubeconfig", str(kubeconfig)],
                              cwd=ROOT, env=kaitoctl_env(), capture_output=True, text=True, timeout=60)

    refused = run(closed)
    assert refused.returncode == 4
    assert f"kaitoctl: error: cannot reach the API server at http://127.0.0.1:{port}: connection refused" \
        in refused.stderr

    config = yaml.safe_load(Path(sim.kubeconfig_path).read_text())
    config["users"][0]["user"]["token"] = "expired"
    bad = tmp_path / "bad-token"
    bad.write_text(json.dumps(config))
    denied = run(bad)
    assert denied.returncode == 4
    assert f"kaitoctl: error: unauthorized: the API server at {sim.url} did not accept kaitoctl's credentials" \
        in denied.stderr


def test_a_real_admission_policy_422_lists_its_cause_and_nothing_is_applied(sim, kaitoctl, write_ws):
    gpu_node(sim)
    sim.apply_as("cluster-admin", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": "trusted-registries"},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                         "operations": ["CREATE", "UPDATE"],
                                                         "resources": ["deployments"]}]},
                 "validations": [{"expression": "object.spec.template.spec.containers.all(c, "
                                                "c.image.startsWith('mcr.microsoft.com/'))",
                                  "message": "image registry not allowed by policy",
                                  "reason": "Invalid"}]}})
    sim.apply_as("cluster-admin", {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "trusted-registries"},
        "spec": {"policyName": "trusted-registries", "validationActions": ["Deny"]}})

    # Policies load asynchronously: wait (as the admin, a dry run) until the apiserver enforces it, so the
    # dry run of kaitoctl's apply, not its real write, is what meets it.
    sim.wait_until(lambda: "not allowed by policy" in (sim.admission_refusal() or ""), 30,
                   "the policy to take effect")
    result = kaitoctl("apply", "-f", write_ws())
    assert result.returncode == 4, result.stderr
    assert "the API server rejected deployment.apps/falcon as invalid" in result.stderr
    assert ("  (object): ValidatingAdmissionPolicy 'trusted-registries' with binding 'trusted-registries' denied "
            "request: image registry not allowed by policy") in result.stderr
    assert "server-side dry run: " in result.stderr and "nothing was applied" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert writes(sim) == []
    assert sim.get("Service", "default", "falcon") is None
