"""Preflight verdicts from plain node and pod dicts (no cluster)."""

from __future__ import annotations

import pytest

from kaitoctl.preflight import check, pod_spec_gpus, selector_matches, tolerates

from .fixtures import node, pod, pod_spec, workspace


def _row(report, name):
    return next(r for r in report.rows if r.name == name)


def test_mixed_nodes_each_verdict_says_why():
    nodes = [
        node("gpu-ok", gpus=4),
        node("gpu-notready", ready=False),
        node("gpu-cordoned", unschedulable=True),
        node("gpu-tainted", taints=[{"key": "dedicated", "value": "training", "effect": "NoSchedule"}]),
        node("gpu-tolerated", taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"},
                                      {"key": "spot", "effect": "PreferNoSchedule"}]),
        node("gpu-othertype", instance_type="Standard_NC6s_v3"),
        node("gpu-nolabel", instance_type=None),
        node("gpu-full", gpus=4),
        node("gpu-small", gpus=1),
        node("gpu-none", gpus=0),
        node("cpu-1", labels={"apps": "web"}),
    ]
    pods = [
        pod("other-a", node_name="gpu-full", gpus=3, namespace="team-b"),
        pod("done", node_name="gpu-ok", gpus=4, phase="Succeeded"),   # finished pods hold nothing
        pod("pending", node_name=None, gpus=4),                        # unbound pods hold nothing
    ]
    report = check(workspace(), pod_spec(2), nodes, pods, namespace="default")
    assert report.ok
    assert report.unmatched_nodes == 1
    assert [r.name for r in report.rows] == sorted(n["metadata"]["name"] for n in nodes if n["metadata"]["name"] != "cpu-1")
    assert _row(report, "gpu-ok").fits and _row(report, "gpu-ok").gpus_free == 4
    assert _row(report, "gpu-tolerated").fits
    assert _row(report, "gpu-nolabel").fits            # nodes without the instance-type label are accepted (KAITO)
    expected = {
        "gpu-notready": "not Ready (KubeletNotReady)",
        "gpu-cordoned": "cordoned (spec.unschedulable)",
        "gpu-tainted": "taint dedicated=training:NoSchedule not tolerated",
        "gpu-othertype": "instance type Standard_NC6s_v3 (workspace asks for Standard_NC24ads_A100_v4)",
        "gpu-full": "1 GPU(s) free, a pod needs 2 (3 requested by other pods)",
        "gpu-small": "has 1 GPU(s), a pod needs 2",
        "gpu-none": "no nvidia.com/gpu allocatable (is the NVIDIA device plugin running there?)",
    }
    for name, why in expected.items():
        row = _row(report, name)
        assert not row.fits
        assert row.why_not == [why]
    assert _row(report, "gpu-full").gpus_requested == 3
    # Fitting nodes, most free GPUs first, then by name.
    assert report.plan.nodes == ("gpu-nolabel", "gpu-ok", "gpu-tolerated")
    assert report.plan.gpus_per_pod == 2


def test_no_node_matches_the_selector():
    report = check(workspace(selector={"matchLabels": {"apps": "falcon"}}), pod_spec(), [node("n1")], [],
                   namespace="default")
    assert not report.ok
    assert report.rows == []
    assert "none of the cluster's 1 node(s) match the labelSelector apps=falcon" in report.problems[0]


def test_not_enough_room_for_count():
    report = check(workspace(count=3), pod_spec(2), [node("a", gpus=4)], [], namespace="default")
    assert not report.ok
    assert report.problems == ["3 pod(s) of 2 GPU(s) each are needed; the matching nodes have room for 2 (a)"]


def test_preferred_nodes_must_exist_and_match():
    nodes = [node("a"), node("b", labels={"apps": "web"})]
    report = check(workspace(preferred=["a", "b", "ghost"]), pod_spec(), nodes, [], namespace="default")
    assert report.problems == [
        "preferred node 'b' does not match the labelSelector: label apps=llm wanted, has apps=web",
        "preferred node 'ghost' does not exist",
    ]
    assert _row(report, "a").preferred


def test_preferred_nodes_come_first_in_the_plan():
    nodes = [node("a", gpus=8), node("b", gpus=2)]
    report = check(workspace(preferred=["b"]), pod_spec(1), nodes, [], namespace="default")
    assert report.ok
    assert report.plan.nodes == ("b", "a")


def test_missing_pull_secret_fails():
    ws = workspace(pull_secrets=["regcred", "other"])
    report = check(ws, pod_spec(), [node("a")], [], namespace="ml", secrets={"regcred": True, "other": False})
    assert report.problems == ["pull secret 'other' does not exist in namespace 'ml'"]


def test_distributed_needs_uniform_gpu_counts():
    nodes = [node("a", gpus=4), node("b", gpus=8)]
    report = check(workspace(count=2), pod_spec(4), nodes, [], namespace="default", distributed=True)
    assert not report.ok
    assert "needs 2 nodes with the same number of GPUs" in report.problems[0]
    assert report.plan.strategy == "Recreate"
    uniform = check(workspace(count=2), pod_spec(4), [node("a"), node("b")], [], namespace="default",
                    distributed=True)
    assert uniform.ok


@pytest.mark.parametrize(
    "gpus_on_node, existing, strategy",
    [
        (1, False, "Recreate"),        # a new workspace that takes the node's only GPU cannot surge later
        (2, False, "RollingUpdate"),   # room for the pod and a surge pod
        (1, True, "Recreate"),         # the serving pod holds the only GPU
        (2, True, "RollingUpdate"),    # one GPU free next to the serving pod
    ],
)
def test_strategy_surges_only_when_a_second_pod_fits(gpus_on_node, existing, strategy):
    pods = [pod("llm-1", node_name="a", labels={"kaito.sh/workspace": "llm"})] if existing else []
    report = check(workspace(), pod_spec(1), [node("a", gpus=gpus_on_node)], pods, namespace="default")
    assert report.ok, report.problems          # our own pod's GPUs count as free for the replacement
    assert report.plan.strategy == strategy
    assert report.surge_fits is (strategy == "RollingUpdate")
    if strategy == "Recreate":
        assert "No matching node has 1 GPU(s) free for a second pod" in report.plan.reason
    else:
        assert "a:" not in report.plan.reason and "on a (" in report.plan.reason


def test_a_stuck_surge_pod_does_not_block_the_next_surge():
    # A failed update left a second pod of ours (not Ready) holding the node's other GPU: the
    # next rollout (a rollback, a fix) replaces it, so a surge still fits beside the serving pod.
    ours = {"kaito.sh/workspace": "llm"}
    pods = [pod("llm-old", node_name="a", labels=ours),
            pod("llm-new", node_name="a", labels=ours, ready=False, phase="Pending")]
    report = check(workspace(), pod_spec(1), [node("a", gpus=2)], pods, namespace="default")
    assert report.plan.strategy == "RollingUpdate"
    assert _row(report, "a").gpus_free == 0
    assert _row(report, "a").gpus_free_for_surge == 1
    # The text under the table counts as the table's FREE column does, and says where the other GPU comes from.
    assert ("on a (0 free now, 1 once this workspace's pod(s) that are not Ready give theirs up)"
            in report.plan.reason)
    # ... but a pod of someone else's is not ours to replace.
    pods[1]["metadata"]["labels"] = {"app": "other"}
    assert check(workspace(), pod_spec(1), [node("a", gpus=2)], pods, namespace="default").plan.strategy == "Recreate"


def test_own_pods_in_other_namespace_are_not_ours():
    pods = [pod("llm-1", node_name="a", labels={"kaito.sh/workspace": "llm"}, namespace="other")]
    report = check(workspace(), pod_spec(1), [node("a", gpus=1)], pods, namespace="default")
    assert not report.ok


def test_incomplete_pod_list_warns():
    report = check(workspace(), pod_spec(1), [node("a")], [], namespace="default", pods_complete=False)
    assert report.ok
    assert "pods in other namespaces were not counted" in report.warnings[0]


def test_pod_gpus_rule_init_containers_and_limits():
    spec = {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}},
                           {"resources": {"requests": {"nvidia.com/gpu": 2}}}],
            "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": "4"}}}]}
    assert pod_spec_gpus(spec) == 4
    spec["initContainers"] = []
    assert pod_spec_gpus(spec) == 3


@pytest.mark.parametrize(
    "selector, labels, ok",
    [
        ({"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100", "h100"]}]}, {"gpu": "h100"}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["a100"]}]}, {"gpu": "t4"}, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "NotIn", "values": ["t4"]}]}, {}, True),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, {}, False),
        ({"matchExpressions": [{"key": "spot", "operator": "DoesNotExist"}]}, {"spot": "1"}, False),
        ({"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]}, {"a": "1", "b": ""}, True),
    ],
)
def test_selector_operators(selector, labels, ok):
    assert selector_matches(selector, labels)[0] is ok


def test_toleration_rules():
    taint = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
    assert tolerates([{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}], taint)
    assert not tolerates([{"key": "sku", "operator": "Equal", "value": "cpu"}], taint)
    assert tolerates([{"operator": "Exists"}], taint)
    assert not tolerates([{"key": "sku", "operator": "Exists", "effect": "NoExecute"}], taint)
