"""`status` scoped to its workspace, `status -A` under limited RBAC, missing namespaces, concurrent history writes."""

from __future__ import annotations

import json
from pathlib import Path

from kaitoctl import history as hist
from kaitoctl.kube import connect

from .conftest import MODEL_IMAGE, adapter, gpu_node, workspace_doc

BAD = "registry.example.com/adapters/bad:1"


def test_status_of_one_workspace_lists_only_its_events(sim, kaitoctl, write_ws):
    # Before: every event whose object name started with "falcon-" was listed, so falcon-2's failures
    # showed up under falcon.
    gpu_node(sim, gpus=4)
    sim.set_image_behaviour(BAD, "pull_error")
    assert kaitoctl("apply", "-f", write_ws(), "--timeout", "60s").returncode == 0
    other = kaitoctl("apply", "-f", write_ws(workspace_doc("falcon-2", adapters=[adapter("sql", image=BAD)])),
                     "--no-wait")
    assert other.returncode == 0, other.stderr
    sim.wait_until(lambda: [e for e in sim.list("Event", "default") if BAD in e.get("message", "")], timeout=30.0,
                   what="falcon-2's pull failure")
    mine = kaitoctl("status", "falcon")
    assert mine.returncode == 0, mine.stderr
    assert "falcon-2" not in mine.stdout and BAD not in mine.stdout
    theirs = kaitoctl("status", "falcon-2", "-o", "json")
    assert any(BAD in e["message"] for e in json.loads(theirs.stdout)["status"]["events"])


def test_status_all_namespaces_with_limited_rbac(sim, kaitoctl, write_ws):
    gpu_node(sim)
    assert kaitoctl("apply", "-f", write_ws(), "--timeout", "60s").returncode == 0
    sim.forbid("list", "services")
    degraded = kaitoctl("status", "-A")
    assert degraded.returncode == 0, degraded.stderr
    assert "cannot list services in every namespace (forbidden): shown without them; the ClusterRole " \
           "kaitoctl-status-all-namespaces in docs/rbac.yaml grants it" in degraded.stderr
    assert degraded.stdout.splitlines()[1].split()[:2] == ["default", "falcon"]
    sim.forbid("list", "deployments")
    refused = kaitoctl("status", "-A")
    assert refused.returncode == 4
    assert "kaitoctl-status-all-namespaces in docs/rbac.yaml grants it, or list one namespace with -n" \
        in refused.stderr
    rbac = Path(__file__).resolve().parents[2] / "docs" / "rbac.yaml"
    assert "name: kaitoctl-status-all-namespaces" in rbac.read_text()


def test_a_missing_namespace_says_so(sim, kaitoctl, write_ws):
    # Before: "service/falcon not found in namespace 'nope'" (and one such line per object).
    gpu_node(sim)
    applied = kaitoctl("apply", "-f", write_ws(), "-n", "nope")
    assert applied.returncode == 4
    assert "kaitoctl: error: namespace 'nope' not found; nothing was applied" in applied.stderr
    assert "kubectl create namespace nope" in applied.stderr
    for args in (("status", "falcon"), ("delete", "falcon"), ("history", "falcon")):
        result = kaitoctl(*args, "-n", "nope")
        assert result.returncode == 4
        assert "kaitoctl: error: namespace 'nope' not found" in result.stderr, args


def test_concurrent_history_writes_keep_every_entry(sim):
    # Two applies read the history at the same resourceVersion and both write: before, the second
    # write replaced the first one's entry; now it is refused (409), re-read and numbered after it.
    kube = connect(Path(sim.kubeconfig_path))
    ws = workspace_doc()
    a = hist.read(kube, "falcon", "default")
    b = hist.read(kube, "falcon", "default")
    first = hist.reserve(kube, a, workspace=ws, previous=None, strategy="RollingUpdate", change="apply", at_least=1)
    second = hist.reserve(kube, b, workspace=ws, previous=None, strategy="RollingUpdate", change="apply", at_least=1)
    assert (first, second) == (1, 2)
    c = hist.read(kube, "falcon", "default")
    d = hist.read(kube, "falcon", "default")
    hist.finish(kube, c, 1, outcome="succeeded", seconds=3.0)
    hist.finish(kube, d, 2, outcome="failed", failure="image pull")
    stored = hist.read(kube, "falcon", "default")
    assert [(r.revision, r.outcome) for r in stored.revisions] == [(1, "succeeded"), (2, "failed")]


def test_status_watch_completes_an_interrupted_revision(sim, kaitoctl, write_ws):
    gpu_node(sim, gpus=4)
    assert kaitoctl("apply", "-f", write_ws(), "--timeout", "60s").returncode == 0
    sim.forbid("watch", "pods")
    sim.set_image_behaviour(MODEL_IMAGE, "slow", ticks=80)   # the new pod takes ~2 s: the rollout needs the watch
    assert kaitoctl("apply", "-f", write_ws(adapters=[adapter("sql")]), "--timeout", "60s").returncode == 4
    sim.allow("watch", "pods")
    sim.set_image_behaviour(MODEL_IMAGE, "ok")
    watched = kaitoctl("status", "falcon", "--watch", "--timeout", "60s")
    assert watched.returncode == 0, watched.stderr
    assert "revision 2 recorded as succeeded (was interrupted)" in watched.stderr
    history = {r["revision"]: r["outcome"] for r in json.loads(kaitoctl("history", "falcon", "-o", "json").stdout)["items"]}
    assert history == {1: "succeeded", 2: "succeeded"}


def test_rollback_skips_an_interrupted_revision(sim, kaitoctl, write_ws):
    # Before: a revision whose watch died stayed "applied", and `rollback` took it for a good target.
    gpu_node(sim, gpus=4)
    assert kaitoctl("apply", "-f", write_ws(adapters=[adapter("sql", strength="0.1")]), "--timeout", "60s").returncode == 0
    sim.forbid("watch", "pods")
    sim.set_image_behaviour(MODEL_IMAGE, "slow", ticks=80)   # the new pod takes ~2 s: the rollout needs the watch
    assert kaitoctl("apply", "-f", write_ws(adapters=[adapter("sql", strength="0.2")]), "--timeout", "60s").returncode == 4
    sim.allow("watch", "pods")
    sim.set_image_behaviour(MODEL_IMAGE, "ok")
    assert kaitoctl("apply", "-f", write_ws(adapters=[adapter("sql", strength="0.3")]), "--timeout", "60s").returncode == 0
    back = kaitoctl("rollback", "falcon", "--timeout", "60s")
    assert back.returncode == 0, back.stderr
    assert "rolling back default/falcon to revision 1 " in back.stderr
    deploy = sim.get("Deployment", "default", "falcon")
    assert json.loads(deploy["metadata"]["annotations"]["kaitoctl.io/workspace"])["inference"]["adapters"][0][
        "strength"] == "0.1"
