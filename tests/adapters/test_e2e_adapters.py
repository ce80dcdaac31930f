"""`kaitoctl adapters list|update`, `history`, `rollback` end to end against the test cluster."""

from __future__ import annotations

import json
import threading
import time

import yaml

from cluster.conftest import MODEL_IMAGE, adapter, gpu_node, ready_pods, workspace_doc, writes

SQL = "registry.example.com/adapters/sql:1"
CHAT = "registry.example.com/adapters/chat:1"
OLD = "registry.example.com/adapters/old:1"
BAD = "registry.example.com/adapters/bad:1"


def recorded(sim, name="falcon"):
    deploy = sim.get("Deployment", "default", name)
    return json.loads(deploy["metadata"]["annotations"]["kaitoctl.io/workspace"])


def recorded_adapters(sim, name="falcon"):
    return [(a["source"]["name"], a["strength"]) for a in recorded(sim, name)["inference"].get("adapters", [])]


def served_adapters(sim, name="falcon"):
    """KAITOCTL_ADAPTERS of every ready pod: what the servers merge right now."""
    out = []
    for pod in ready_pods(sim, name):
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
        out.append(json.loads(env["KAITOCTL_ADAPTERS"]))
    return out


class ReadyWatcher:
    """Samples the workspace's ready pods in the background: did serving ever stop?"""

    def __init__(self, sim, name="falcon"):
        self.sim, self.name = sim, name
        self.samples: list[int] = []
        self.most_pods = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(len(ready_pods(self.sim, self.name)))
            self.most_pods = max(self.most_pods, len(self.sim.list("Pod", "default", f"kaito.sh/workspace={self.name}")))
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def deploy(sim, kaitoctl, write_ws, adapters, gpus=2):
    gpu_node(sim, gpus=gpus)
    path = write_ws(workspace_doc(adapters=adapters))
    result = kaitoctl("apply", "-f", path, "--timeout", "60s")
    assert result.returncode == 0, result.stderr
    return path


def test_several_changes_become_one_surge_rollout(sim, kaitoctl, write_ws):
    deploy(sim, kaitoctl, write_ws, [adapter("sql", SQL, "0.2"), adapter("old", OLD)])
    sim.set_image_behaviour(MODEL_IMAGE, "slow", ticks=25)    # new pods take ~0.5 s to turn Ready
    generation = sim.get("Deployment", "default", "falcon")["metadata"]["generation"]
    sim.clear_requests()

    preview = kaitoctl("adapters", "update", "falcon", "--strength", "sql=0.5", "--adapter", f"chat={CHAT}",
                       "--remove", "old", "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.splitlines() == [
        "adapters of default/falcon:",
        f"  ~ sql: image {SQL}, strength 0.2 → 0.5, pull secrets -",
        f"  + chat: added: image {CHAT}, strength 1.0, pull secrets -",
        f"  - old: removed (was {OLD}, strength 1.0)",
    ]
    assert writes(sim) == []
    assert recorded_adapters(sim) == [("sql", "0.2"), ("old", "1.0")]

    with ReadyWatcher(sim) as watcher:
        result = kaitoctl("adapters", "update", "falcon", "--strength", "sql=0.5", "--adapter", f"chat={CHAT}",
                          "--remove", "old", "--timeout", "60s")
    assert result.returncode == 0, result.stderr
    assert "safe rollout: the new pod must be Ready before the old one stops serving" in result.stderr
    assert min(watcher.samples) >= 1            # a ready pod served throughout the update
    assert watcher.most_pods == 2               # the old pod stayed until the new one was ready
    # What the surge relies on: traffic only to Ready pods, and a stopping pod finishes its requests.
    assert not sim.get("Service", "default", "falcon")["spec"].get("publishNotReadyAddresses")
    pod_spec = sim.get("Deployment", "default", "falcon")["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["lifecycle"]["preStop"]
    assert pod_spec["terminationGracePeriodSeconds"] >= 60
    assert sim.get("Deployment", "default", "falcon")["metadata"]["generation"] == generation + 1
    assert recorded_adapters(sim) == [("sql", "0.5"), ("chat", "1.0")]
    assert served_adapters(sim) == [[{"name": "sql", "strength": 0.5}, {"name": "chat", "strength": 1.0}]]

    listed = json.loads(kaitoctl("adapters", "list", "falcon", "-o", "json").stdout)
    assert [(a["name"], a["image"], a["strength"], a["podsWithIt"]) for a in listed["items"]] == [
        ("sql", SQL, "0.5", 1), ("chat", CHAT, "1.0", 1)]
    table = kaitoctl("adapters", "list", "falcon").stdout.splitlines()
    assert table[0].split() == ["NAME", "IMAGE", "STRENGTH", "PULL", "SECRET", "IN", "PODS"]
    assert table[1].split()[:4] == ["sql", SQL, "0.5", "-"]

    history = json.loads(kaitoctl("history", "falcon", "-o", "json").stdout)["items"]
    assert [(h["revision"], h["current"], h["outcome"]) for h in history] == [(2, True, "succeeded"),
                                                                              (1, False, "succeeded")]
    assert history[0]["changes"] == ["adapter sql strength 0.2 → 0.5", f"adapter chat added ({CHAT}, strength 1.0)",
                                     "adapter old removed"]
    assert history[0]["change"] == "adapters update: changed sql, added chat, removed old"
    assert history[0]["workspace"]["inference"]["adapters"][1]["source"]["name"] == "chat"


def test_no_free_gpu_refuses_then_recreates_with_allow_downtime(sim, kaitoctl, write_ws):
    path = deploy(sim, kaitoctl, write_ws, [adapter("sql", SQL, "0.2")], gpus=1)
    before = sim.get("Deployment", "default", "falcon")

    refused = kaitoctl("adapters", "update", "falcon", "--strength", "sql=0.7")
    assert refused.returncode == 5, refused.stderr
    assert ("kaitoctl: error: updating default/falcon would stop it serving: a second pod cannot run next to the "
            "serving one") in refused.stderr
    assert "  matching nodes: gpu-1: 0 of 1 GPUs free" in refused.stderr
    assert ("  a surge needs 1 free GPU(s) on one Ready, schedulable matching node next to the serving pod(s)"
            in refused.stderr)
    assert "  expected outage: about " in refused.stderr and "(the last rollout took that long)" in refused.stderr
    assert "--allow-downtime" in refused.stderr
    after = sim.get("Deployment", "default", "falcon")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert recorded_adapters(sim) == [("sql", "0.2")]
    assert len(json.loads(kaitoctl("history", "falcon", "-o", "json").stdout)["items"]) == 1

    # Editing the YAML and applying it again goes through the same gate.
    doc = yaml.safe_load(open(path))
    doc["inference"]["adapters"][0]["strength"] = "0.7"
    edited = write_ws(doc)
    assert kaitoctl("apply", "-f", edited).returncode == 5

    allowed = kaitoctl("apply", "-f", edited, "--allow-downtime", "--timeout", "60s")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: --allow-downtime: Deployment falcon is replaced with Recreate; expected outage: about" \
        in allowed.stderr
    assert sim.get("Deployment", "default", "falcon")["spec"]["strategy"] == {"type": "Recreate"}
    assert served_adapters(sim) == [[{"name": "sql", "strength": 0.7}]]


def test_bad_adapter_image_rolls_back_and_the_old_adapters_serve(sim, kaitoctl, write_ws):
    deploy(sim, kaitoctl, write_ws, [adapter("sql", SQL, "0.2")])
    sim.set_image_behaviour(BAD, "pull_error")
    with ReadyWatcher(sim) as watcher:
        result = kaitoctl("adapters", "update", "falcon", "--adapter", f"bad={BAD}", "--timeout", "60s")
    assert result.returncode == 6, result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("kaitoctl: error:"))
    assert error.startswith(f"kaitoctl: error: adapter 'bad' (init container bad): image {BAD} cannot be pulled")
    assert error.endswith("; rolled back to revision 1, which is serving again (adapters: sql=0.2)")
    assert "rolling back to revision 1" in result.stderr
    assert min(watcher.samples) >= 1            # the surge kept the old pod serving throughout
    assert recorded_adapters(sim) == [("sql", "0.2")]
    assert served_adapters(sim) == [[{"name": "sql", "strength": 0.2}]]
    assert all("bad" not in [c["name"] for c in p["spec"].get("initContainers", [])]
               for p in sim.list("Pod", "default", "kaito.sh/workspace=falcon")
               if not p["metadata"].get("deletionTimestamp"))

    history = kaitoctl("history", "falcon")
    lines = history.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["3*", "2", "1"]
    assert "automatic rollback to revision 1" in lines[1] and "failed" in lines[2]
    assert f"revision 2 failed: adapter 'bad' (init container bad): image {BAD}" in history.stdout


def test_no_rollback_leaves_the_failed_revision(sim, kaitoctl, write_ws):
    deploy(sim, kaitoctl, write_ws, [adapter("sql", SQL, "0.2")])
    sim.set_image_behaviour(BAD, "pull_error")
    result = kaitoctl("adapters", "update", "falcon", "--adapter", f"bad={BAD}", "--no-rollback", "--timeout", "60s")
    assert result.returncode == 6
    assert "rolled back" not in result.stderr
    assert "--no-rollback: revision 2 is left in place for inspection; `kaitoctl rollback falcon -n default` " \
           "restores revision 1" in result.stderr
    assert recorded_adapters(sim) == [("sql", "0.2"), ("bad", "1.0")]
    assert served_adapters(sim) == [[{"name": "sql", "strength": 0.2}]]   # the old pod still serves (surge)

    back = kaitoctl("rollback", "falcon", "--timeout", "60s")
    assert back.returncode == 0, back.stderr
    assert "rolling back default/falcon to revision 1" in back.stderr
    assert recorded_adapters(sim) == [("sql", "0.2")]


def test_rollback_restores_the_whole_workspace(sim, kaitoctl, write_ws):
    gpu_node(sim, gpus=2)
    first = workspace_doc(adapters=[adapter("sql", SQL, "0.2")])
    assert kaitoctl("apply", "-f", write_ws(first), "--timeout", "60s").returncode == 0
    second = workspace_doc(adapters=[adapter("sql", SQL, "0.5"), adapter("chat", CHAT, "0.3")])
    second["metadata"]["annotations"] = {"kaito.sh/enablelb": "True"}     # the Service becomes a LoadBalancer
    assert kaitoctl("apply", "-f", write_ws(second), "--timeout", "60s").returncode == 0
    assert sim.get("Service", "default", "falcon")["spec"]["type"] == "LoadBalancer"

    missing = kaitoctl("rollback", "falcon", "--to-revision", "9")
    assert missing.returncode == 2
    assert "--to-revision 9: workspace default/falcon has no such revision" in missing.stderr
    assert "recorded revisions: 1, 2" in missing.stderr

    back = kaitoctl("rollback", "falcon", "--to-revision", "1", "--timeout", "60s")
    assert back.returncode == 0, back.stderr
    assert recorded_adapters(sim) == [("sql", "0.2")]
    assert "annotations" not in recorded(sim)["metadata"]
    assert sim.get("Service", "default", "falcon")["spec"]["type"] == "ClusterIP"   # not only the pod template
    assert served_adapters(sim) == [[{"name": "sql", "strength": 0.2}]]
    history = json.loads(kaitoctl("history", "falcon", "-o", "json").stdout)["items"]
    assert [(h["revision"], h["change"]) for h in history] == [(3, "rollback to revision 1"), (2, "apply"),
                                                               (1, "apply")]
    assert history[0]["workspace"] == history[2]["workspace"]
    assert "adapter chat removed" in history[0]["changes"]


def test_unchanged_workspace_makes_no_revision_and_no_rollout(sim, kaitoctl, write_ws):
    path = deploy(sim, kaitoctl, write_ws, [adapter("sql", SQL, "0.2")])
    sim.clear_requests()
    assert kaitoctl("apply", "-f", path).returncode == 0
    same = kaitoctl("adapters", "update", "falcon", "--strength", "sql=0.2")
    assert same.returncode == 0, same.stderr
    assert "nothing changes: no rollout" in same.stderr
    assert writes(sim) == []
    assert len(json.loads(kaitoctl("history", "falcon", "-o", "json").stdout)["items"]) == 1


def test_invalid_changes_are_refused_before_anything_is_sent(sim, kaitoctl, write_ws, tmp_path):
    deploy(sim, kaitoctl, write_ws, [adapter("sql", SQL, "0.2")])
    sim.clear_requests()
    too_strong = kaitoctl("adapters", "update", "falcon", "--strength", "sql=abc")
    assert too_strong.returncode == 3, too_strong.stderr
    assert "after the adapter changes is invalid; nothing was applied" in too_strong.stderr
    assert "inference.adapters[0].strength" in too_strong.stderr
    ghost = kaitoctl("adapters", "update", "falcon", "--remove", "ghost")
    assert ghost.returncode == 2
    assert "the workspace has no adapter 'ghost'" in ghost.stderr
    assert writes(sim) == []

    # The adapter list can also come from a Workspace file.
    other = write_ws(workspace_doc(adapters=[adapter("chat", CHAT, "0.4")]))
    from_file = kaitoctl("adapters", "update", "falcon", "-f", other, "--timeout", "60s")
    assert from_file.returncode == 0, from_file.stderr
    assert recorded_adapters(sim) == [("chat", "0.4")]
