"""History records and adapter edits as pure functions (no cluster)."""

from __future__ import annotations

import json

import pytest

from kaitoctl import history as hist
from kaitoctl.adapters import AdapterEdits, deployed_adapters, diff, edit_adapters, parse_pairs
from kaitoctl.errors import UsageError


def ws(adapters, **resource):
    return {"apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "metadata": {"name": "llm"},
            "resource": {"count": 1, "instanceType": "Standard_NC12s_v3", **resource},
            "inference": {"preset": {"name": "falcon-7b"}, "adapters": adapters}}


def ad(name, strength="1.0", image=None, secrets=None):
    source = {"name": name, "image": image or f"reg/{name}:1"}
    if secrets:
        source["imagePullSecrets"] = secrets
    return {"source": source, "strength": strength}


def test_summary_lists_adapter_changes_then_other_fields():
    old = ws([ad("a", "0.2"), ad("b"), ad("gone")])
    new = ws([ad("a", "0.5"), ad("b", image="reg/b:2"), ad("c", "0.3")], count=2)
    assert hist.summarize_changes(old, new) == [
        "adapter a strength 0.2 → 0.5",
        "adapter b image reg/b:1 → reg/b:2",
        "adapter c added (reg/c:1, strength 0.3)",
        "adapter gone removed",
        "resource.count: 1 → 2",
    ]
    assert hist.summarize_changes(None, old) == ["created with adapters a=0.2, b=1.0, gone=1.0"]
    assert hist.summarize_changes(old, old) == ["no change to the Workspace"]


def test_history_configmap_round_trip_keeps_the_last_ten():
    history = hist.History("llm", "ml")
    for n in range(1, 14):
        history.revisions.append(hist.Revision(n, f"t{n}", ws([ad("a", f"0.{n % 10}")]), outcome="succeeded",
                                               rollout_seconds=float(n)))
    cm = hist.to_configmap(history)
    assert cm["metadata"]["name"] == "llm-kaitoctl-history"
    assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kaitoctl"
    assert cm["metadata"]["labels"]["kaito.sh/workspace"] == "llm"
    back = hist.parse(cm, "llm", "ml")
    assert [r.revision for r in back.revisions] == list(range(4, 14))
    assert back.latest == 13
    assert back.get(13).workspace == history.get(13).workspace
    assert back.last_rollout_seconds() == 13.0
    back.revisions[-1].outcome = "failed"
    assert back.last_rollout_seconds() == 12.0
    assert hist.parse({"data": {"revisions.json": "not json"}}, "llm", "ml").revisions == []


def test_recorded_workspace_and_revision_from_the_workload():
    workload = {"metadata": {"annotations": {"kaitoctl.io/workspace": json.dumps(ws([ad("a")])),
                                             "kaitoctl.io/revision": "7"}}}
    assert hist.recorded_workspace(workload)["metadata"]["name"] == "llm"
    assert hist.revision_of(workload) == 7
    assert hist.recorded_workspace({"metadata": {}}) is None
    assert hist.revision_of(None) == 0


def test_edits_combine_into_one_list():
    current = [ad("a", "0.2"), ad("b"), ad("c")]
    edits = AdapterEdits(images={"b": "reg/b:2", "d": "reg/d:1"}, strengths={"a": "0.5", "d": "0.1"},
                         pull_secrets={"d": ["regcred"]}, remove=["c"])
    assert edit_adapters(current, edits) == [
        ad("a", "0.5"), ad("b", image="reg/b:2"), {"source": {"name": "d", "image": "reg/d:1",
                                                             "imagePullSecrets": ["regcred"]}, "strength": "0.1"}]
    assert current[0]["strength"] == "0.2"  # the input is not modified


@pytest.mark.parametrize(
    "edits, message",
    [
        (AdapterEdits(remove=["ghost"]), "--remove ghost: the workspace has no adapter 'ghost'"),
        (AdapterEdits(strengths={"ghost": "0.5"}), "--strength ghost=...: the workspace has no adapter 'ghost'"),
        (AdapterEdits(remove=["a"], strengths={"a": "0.1"}), "adapter 'a' is both removed and changed"),
    ],
)
def test_edits_that_make_no_sense_are_usage_errors(edits, message):
    with pytest.raises(UsageError) as info:
        edit_adapters([ad("a")], edits)
    assert info.value.message == message


def test_pairs_need_name_and_value():
    assert parse_pairs(["a=0.5", "b=reg/b:1=x"], "--strength") == {"a": "0.5", "b": "reg/b:1=x"}
    with pytest.raises(UsageError):
        parse_pairs(["a"], "--strength")


def test_diff_per_adapter():
    rows = diff(ws([ad("a", "0.2"), ad("gone")]), ws([ad("a", "0.5"), ad("new")]))
    assert [(r.name, r.change) for r in rows] == [("a", "changed"), ("new", "added"), ("gone", "removed")]
    assert rows[0].before["strength"] == "0.2" and rows[0].after["strength"] == "0.5"


def _pod(adapters_env, init, ready=True):
    return {"metadata": {"name": "p"},
            "spec": {"initContainers": [{"name": n, "image": i} for n, i in init],
                     "containers": [{"name": "llm", "env": [{"name": "KAITOCTL_ADAPTERS",
                                                              "value": json.dumps(adapters_env)}]}]},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_deployed_adapters_counts_the_ready_pods_that_run_them():
    recorded = ws([ad("a", "0.5"), ad("b", "1.0")])
    pods = [
        _pod([{"name": "a", "strength": 0.5}, {"name": "b", "strength": 1.0}], [("a", "reg/a:1"), ("b", "reg/b:1")]),
        _pod([{"name": "a", "strength": 0.2}], [("a", "reg/a:1")]),                       # an older pod
        _pod([{"name": "a", "strength": 0.5}], [("a", "reg/a:1")], ready=False),           # not serving
    ]
    rows = deployed_adapters(recorded, pods)
    assert [(r["name"], r["podsWithIt"], r["readyPods"]) for r in rows] == [("a", 1, 2), ("b", 1, 2)]


def test_a_failed_update_returns_to_the_last_revision_that_did_not_fail():
    from kaitoctl.apply import rollback_target

    history = hist.History("llm", "ml", revisions=[
        hist.Revision(1, "t1", ws([ad("a", "0.1")]), outcome="succeeded"),
        hist.Revision(2, "t2", ws([ad("a", "0.2")]), outcome="failed"),     # left with --no-rollback
        hist.Revision(3, "t3", ws([ad("a", "0.3")]), outcome="failed"),     # the update failing now
    ])
    target, number = rollback_target(history, 3, ws([ad("a", "0.2")]), 2)
    assert number == 1 and target == ws([ad("a", "0.1")])
    history.revisions[1].outcome = "succeeded"
    assert rollback_target(history, 3, ws([ad("a", "0.2")]), 2)[1] == 2
    assert rollback_target(hist.History("llm", "ml"), 3, ws([]), 2) == (ws([]), 2)
