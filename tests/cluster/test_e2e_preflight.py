"""`kaitoctl preflight` on a mixed cluster, and the StatefulSet path of apply."""

from __future__ import annotations

import json

from .conftest import ITYPE, gpu_node, ready_pods, workspace_doc, writes


def test_preflight_verdicts_on_mixed_nodes(sim, kaitoctl, write_ws):
    gpu_node(sim, "gpu-free", gpus=2)
    gpu_node(sim, "gpu-busy", gpus=2)
    sim.add_pod("training", "trainer", "gpu-busy", gpus=2)
    gpu_node(sim, "gpu-cordoned", gpus=2, unschedulable=True)
    gpu_node(sim, "gpu-down", gpus=2, ready=False)
    gpu_node(sim, "gpu-tainted", gpus=2, taints=["dedicated=training:NoSchedule"])
    gpu_node(sim, "gpu-t4", gpus=1, instance_type="Standard_NC4as_T4_v3")
    sim.add_node("cpu-1", labels={"apps": "web"})
    path = write_ws()

    table = kaitoctl("preflight", "-f", path)
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines() if line.startswith("gpu-")}
    assert sorted(rows) == ["gpu-busy", "gpu-cordoned", "gpu-down", "gpu-free", "gpu-t4", "gpu-tainted"]
    assert rows["gpu-free"].split()[2:7] == ["yes", "2", "0", "2", "yes"]
    assert rows["gpu-busy"].split()[2:7] == ["yes", "2", "2", "0", "no"]
    assert "(1 other node(s) do not match the labelSelector)" in table.stdout
    assert "strategy RollingUpdate" in table.stdout
    assert writes(sim) == []

    report = json.loads(kaitoctl("preflight", "-f", path, "-o", "json").stdout)
    why = {n["node"]: n["whyNot"] for n in report["nodes"]}
    assert why["gpu-free"] == []
    assert why["gpu-busy"] == ["0 GPU(s) free, a pod needs 1 (2 requested by other pods)"]
    assert "cordoned (spec.unschedulable)" in why["gpu-cordoned"]
    assert "not Ready (KubeletNotReady)" in why["gpu-down"]
    assert why["gpu-tainted"] == ["taint dedicated=training:NoSchedule not tolerated"]
    assert why["gpu-t4"] == [f"instance type Standard_NC4as_T4_v3 (workspace asks for {ITYPE})"]
    assert report["ok"] is True and report["strategy"] == "RollingUpdate"


def test_apply_fails_preflight_when_nothing_fits(sim, kaitoctl, write_ws):
    gpu_node(sim, "gpu-1", gpus=1)
    sim.add_pod("training", "trainer", "gpu-1", gpus=1)
    result = kaitoctl("apply", "-f", write_ws(count=1, selector={"apps": "llm"}))
    assert result.returncode == 5
    assert "kaitoctl: error: preflight failed for workspace default/falcon: nothing was applied" in result.stderr
    assert "1 pod(s) of 1 GPU(s) each are needed; the matching nodes have room for 0" in result.stderr
    assert writes(sim) == []


def test_distributed_preset_runs_as_a_statefulset(sim, kaitoctl, write_ws):
    for name in ("gpu-a", "gpu-b"):
        gpu_node(sim, name, gpus=1, instance_type="Standard_NC6s_v3")
    sim.add_secret("default", "regcred")
    doc = workspace_doc("llama", preset="llama-2-13b-chat", count=2, instance_type="Standard_NC6s_v3",
                        preset_extra={"accessMode": "private", "presetOptions": {
                            "image": "registry.example.com/llama-2-13b-chat:0.1.0", "imagePullSecrets": ["regcred"]}})
    result = kaitoctl("apply", "-f", write_ws(doc), "--timeout", "60s")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["service/llama created", "service/llama-headless created",
                                          "statefulset.apps/llama created"]
    assert "statefulset rolling update complete 2 pods" in result.stderr
    assert len(ready_pods(sim, "llama")) == 2
    listed = kaitoctl("status")
    assert listed.stdout.splitlines()[1].split()[:5] == ["llama", "Standard_NC6s_v3", "True", "True", "True"]

    # To a preset that is not distributed: the StatefulSet and its headless Service give way to a
    # Deployment. That stops the serving pods, so it needs --allow-downtime.
    doc["inference"]["preset"]["name"] = "llama-2-7b-chat"
    doc["inference"]["preset"]["presetOptions"]["image"] = "registry.example.com/llama-2-7b-chat:0.1.0"
    doc["resource"]["count"] = 1
    path = write_ws(doc)
    refused = kaitoctl("apply", "-f", path)
    assert refused.returncode == 5, refused.stderr
    assert "its pods are replaced in place" in refused.stderr
    moved = kaitoctl("apply", "-f", path, "--allow-downtime", "--timeout", "60s")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines() == ["service/llama configured", "deployment.apps/llama created",
                                         "statefulset.apps/llama deleted", "service/llama-headless deleted"]
    assert sim.get("StatefulSet", "default", "llama") is None
    assert sim.get("Service", "default", "llama-headless") is None
    assert len(ready_pods(sim, "llama")) == 1
