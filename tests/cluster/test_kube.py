"""Connection resolution and API-error translation of kaitoctl.kube (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import urllib3.exceptions as ux

from kaitoctl import kube
from kaitoctl.errors import ClusterError, Conflict, NotFound


def _status(code, message, causes=None):
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message}
    if causes is not None:
        body["details"] = {"causes": causes}
    return body


DEPLOY = kube.KINDS["Deployment"]
NODES = kube.KINDS["Node"]
SERVER = "https://10.0.0.1:6443"


def test_forbidden_names_verb_resource_and_rule():
    msg = 'deployments.apps "llm" is forbidden: User "alice" cannot patch resource "deployments" in API group "apps"'
    err = kube.api_error(403, json.dumps(_status(403, msg)), "patch", DEPLOY, "llm", "ml", SERVER)
    assert type(err) is ClusterError and err.exit_code == 4
    assert err.message == 'forbidden: you may not patch deployments.apps "llm" in namespace "ml"'
    assert f"server said: {msg}" in err.details
    assert 'RBAC rule that would allow it (Role (or ClusterRole)): apiGroups: ["apps"], resources: ["deployments"], ' \
           'verbs: ["patch"]' in err.details
    assert "docs/cluster.md" in err.hint


def test_forbidden_cluster_scoped_needs_a_clusterrole():
    err = kube.api_error(403, json.dumps(_status(403, "no")), "list", NODES, None, None, SERVER)
    assert err.message == "forbidden: you may not list nodes"
    assert 'RBAC rule that would allow it (ClusterRole): apiGroups: [""], resources: ["nodes"], verbs: ["list"]' \
        in err.details


@pytest.mark.parametrize("message, headline, hint", [
    ('deployments.apps "llm" is forbidden: unable to create new content in namespace ml because it is being '
     "terminated", "namespace 'ml' is being deleted: cannot patch deployments.apps", "wait until it is gone"),
    ('deployments.apps "llm" is forbidden: exceeded quota: gpu, requested: requests.nvidia.com/gpu=1',
     "a ResourceQuota refused it: cannot patch deployments.apps", "kubectl describe resourcequota"),
    ('admission webhook "validate.kyverno.svc" denied the request: images must come from registry.internal',
     "an admission webhook refused it: cannot patch deployments.apps", "the webhook's message"),
    ("deployments.apps \"llm\" is forbidden: ValidatingAdmissionPolicy 'gpu-limit' with binding 'b' denied request: "
     "at most 4 GPUs", "an admission policy refused it: cannot patch deployments.apps", "the policy's message"),
])
def test_a_403_that_is_not_rbac_says_what_refused_it(message, headline, hint):
    # Before: every 403 was explained as missing RBAC, with a rule that would not have helped.
    err = kube.api_error(403, json.dumps(_status(403, message)), "patch", DEPLOY, "llm", "ml", SERVER)
    assert err.message.startswith(headline)
    assert f"server said: {message}" in err.details
    assert not any("RBAC rule" in d for d in err.details)
    assert hint in err.hint


def test_a_missing_namespace_says_so():
    body = _status(404, 'namespaces "nope" not found')
    body["details"] = {"name": "nope", "kind": "namespaces"}
    err = kube.api_error(404, json.dumps(body), "patch", kube.KINDS["Service"], "llm", "nope", SERVER)
    assert isinstance(err, NotFound)
    assert err.message == "namespace 'nope' not found"
    assert "kubectl create namespace nope" in err.hint


def test_unauthorized_names_the_server():
    err = kube.api_error(401, json.dumps(_status(401, "Unauthorized")), "list", NODES, None, None, SERVER)
    assert err.message == f"unauthorized: the API server at {SERVER} did not accept kaitoctl's credentials to list nodes"


def test_not_found():
    err = kube.api_error(404, json.dumps(_status(404, 'deployments.apps "x" not found')), "get", DEPLOY, "x",
                         "ml", SERVER)
    assert isinstance(err, NotFound)
    assert err.message == "deployment.apps/x not found in namespace 'ml'"


def test_apply_conflict_lists_fields_and_owner():
    causes = [{"reason": "FieldManagerConflict", "message": 'conflict with "kubectl-edit" using apps/v1',
               "field": ".spec.replicas"}]
    err = kube.api_error(409, json.dumps(_status(409, "Apply failed with 1 conflict", causes)), "patch",
                         DEPLOY, "llm", "ml", SERVER)
    assert isinstance(err, Conflict)
    assert err.message == ("server-side apply conflict on deployment.apps/llm: 1 field(s) are owned by another "
                           "field manager")
    assert err.details == ['.spec.replicas: conflict with "kubectl-edit" using apps/v1']
    assert "--force-conflicts" in err.hint


def test_invalid_lists_the_servers_field_causes():
    causes = [{"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0",
               "field": "spec.replicas"},
              {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.template.spec.containers"}]
    err = kube.api_error(422, json.dumps(_status(422, "Deployment.apps \"llm\" is invalid", causes)),
                         "patch", DEPLOY, "llm", "ml", SERVER)
    assert err.message == "the API server rejected deployment.apps/llm as invalid"
    assert err.details == ["spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                           "spec.template.spec.containers: Required value"]


@pytest.mark.parametrize(
    "exc, message",
    [
        (ux.MaxRetryError(None, "/api", ux.NewConnectionError(None, "[Errno 111] Connection refused")),
         f"cannot reach the API server at {SERVER}: connection refused"),
        (ux.MaxRetryError(None, "/api", ux.SSLError("certificate verify failed: self-signed certificate")),
         f"TLS error talking to the API server at {SERVER}"),
        (ux.ReadTimeoutError(None, "/api", "Read timed out. (read timeout=60)"),
         f"timed out talking to the API server at {SERVER}"),
    ],
)
def test_transport_errors_name_the_server(exc, message):
    assert kube.transport_error(exc, SERVER).message == message


def _write_kubeconfig(path: Path, contexts: dict[str, str | None], current: str, server: str = "http://127.0.0.1:1"):
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
                     for name, ns in contexts.items()],
        "current-context": current,
    }))


def test_namespace_comes_from_flag_then_context_then_default(tmp_path):
    cfg = tmp_path / "config"
    _write_kubeconfig(cfg, {"a": "team-a", "b": None}, "a")
    assert kube.connect(cfg).namespace == "team-a"
    assert kube.connect(cfg, namespace="x").namespace == "x"
    assert kube.connect(cfg, context="b").namespace == "default"
    assert kube.connect(cfg, context="b").connection.context == "b"
    assert kube.connect(cfg).server == "http://127.0.0.1:1"


def test_unknown_context_lists_the_known_ones(tmp_path):
    cfg = tmp_path / "config"
    _write_kubeconfig(cfg, {"a": None, "b": None}, "a")
    with pytest.raises(ClusterError) as info:
        kube.connect(cfg, context="prod")
    assert info.value.message == f"context 'prod' not found in {cfg}"
    assert info.value.hint == "known contexts: a, b"


def test_kubeconfig_env_path_list_is_merged(tmp_path, monkeypatch):
    first, second = tmp_path / "one", tmp_path / "two"
    _write_kubeconfig(first, {"a": "from-one"}, "a", server="http://127.0.0.1:11")
    _write_kubeconfig(second, {"b": "from-two"}, "b", server="http://127.0.0.1:22")
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{first}:{second}")
    conn = kube.connect(context="b").connection
    assert conn.namespace == "from-two"


def test_missing_kubeconfig_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError) as info:
        kube.connect(tmp_path / "nope")
    assert info.value.message == f"no Kubernetes configuration found: --kubeconfig {tmp_path / 'nope'} does not exist"


def test_in_cluster_config_is_used_when_no_kubeconfig_exists(tmp_path, monkeypatch):
    from kubernetes.config import incluster_config

    token, ca, ns = tmp_path / "token", tmp_path / "ca.crt", tmp_path / "namespace"
    token.write_text("secret-token")
    ca.write_text("not really a cert")
    ns.write_text("serving\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setattr(kube, "IN_CLUSTER_NAMESPACE_FILE", str(ns))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    conn = kube.connect().connection
    assert conn.source == "in-cluster"
    assert conn.namespace == "serving"
    assert conn.server == "https://10.96.0.1:443"
