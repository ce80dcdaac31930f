"""Today's Workspaces against the test cluster: both API versions are one workspace, and the
ConfigMaps/Secrets of a multi-document file are applied with it (and checked when only named)."""

from __future__ import annotations

import yaml

from .conftest import gpu_node, workspace_doc, writes

CONFIG = "vllm:\n  max-model-len: 2048\n  swap-space: 4\n"


def _file(tmp_path, name: str, docs: list[dict]) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def test_v1alpha1_reapplied_as_v1beta1_is_the_same_workspace(sim, kaitoctl, write_ws):
    gpu_node(sim)
    alpha = workspace_doc()
    assert kaitoctl("apply", "-f", write_ws(alpha), "--timeout", "60s").returncode == 0
    sim.clear_requests()
    beta = {**alpha, "apiVersion": "kaito.sh/v1beta1"}
    again = kaitoctl("apply", "-f", write_ws(beta), "--timeout", "60s")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["service/falcon unchanged", "deployment.apps/falcon unchanged"]
    assert writes(sim) == []
    history = kaitoctl("history", "falcon")
    assert history.returncode == 0 and [line.split()[0] for line in history.stdout.splitlines()[1:]
                                        if line[:1].isdigit()] == ["1*"]


def test_configmap_and_secret_of_the_file_are_applied_and_a_config_change_rolls_out(sim, kaitoctl, tmp_path):
    gpu_node(sim)
    ws = workspace_doc()
    ws["apiVersion"] = "kaito.sh/v1beta1"
    ws["inference"]["config"] = "falcon-config"
    ws["inference"]["preset"]["presetOptions"] = {"modelAccessSecret": "hf-token"}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token"},
              "stringData": {"HF_TOKEN": "hf_not_to_be_printed"}}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "falcon-config"},
              "data": {"inference_config.yaml": CONFIG}}
    path = _file(tmp_path, "ws.yaml", [secret, config, ws])
    applied = kaitoctl("apply", "-f", path, "--timeout", "60s", "-o", "yaml")
    assert applied.returncode == 0, applied.stderr
    said = applied.stdout + applied.stderr
    assert "secret/hf-token created" in said and "configmap/falcon-config created" in said
    assert "HF_TOKEN: <redacted>" in applied.stdout  # -o yaml shows the Secret's keys, never its values
    assert "hf_not_to_be_printed" not in applied.stdout + applied.stderr
    assert sim.get("ConfigMap", "default", "falcon-config")["data"]["inference_config.yaml"] == CONFIG
    managers = {m["manager"] for m in sim.get("Secret", "default", "hf-token")["metadata"]["managedFields"]}
    assert managers == {"kaitoctl"}
    template = sim.get("Deployment", "default", "falcon")["spec"]["template"]
    first_hash = template["metadata"]["annotations"]["kaitoctl.io/inference-config-hash"]

    again = kaitoctl("apply", "-f", path, "--timeout", "60s")
    assert again.returncode == 0 and all(line.endswith(" unchanged") for line in again.stdout.splitlines())

    config["data"]["inference_config.yaml"] = CONFIG.replace("2048", "4096")
    changed = kaitoctl("apply", "-f", _file(tmp_path, "ws2.yaml", [secret, config, ws]), "--timeout", "60s")
    assert changed.returncode == 0, changed.stderr
    assert "configmap/falcon-config configured" in changed.stdout
    assert "deployment.apps/falcon configured" in changed.stdout
    template = sim.get("Deployment", "default", "falcon")["spec"]["template"]
    assert template["metadata"]["annotations"]["kaitoctl.io/inference-config-hash"] != first_hash


def test_a_named_secret_missing_from_file_and_cluster_fails_the_preflight(sim, kaitoctl, write_ws):
    gpu_node(sim)
    ws = workspace_doc(preset_extra={"presetOptions": {"modelAccessSecret": "hf-token"}})
    result = kaitoctl("apply", "-f", write_ws(ws), "--timeout", "60s")
    assert result.returncode == 5, result.stderr
    assert ("Secret hf-token (named by presetOptions.modelAccessSecret) is neither in the file nor in namespace "
            "default") in result.stderr
    assert writes(sim) == []
    checked = kaitoctl("preflight", "-f", write_ws(ws))
    assert checked.returncode == 5 and "Secret hf-token (named by presetOptions.modelAccessSecret)" in checked.stderr
    sim.add_secret("default", "hf-token", data={"HF_TOKEN": "x"})
    assert kaitoctl("preflight", "-f", write_ws(ws)).returncode == 0
    assert kaitoctl("apply", "-f", write_ws(ws), "--timeout", "60s").returncode == 0


def test_your_own_nodes_gpus_per_pod_from_gpu_feature_discovery_labels(sim, kaitoctl, tmp_path):
    gfd = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920",
           "nvidia.com/gpu.count": "4"}
    gpu_node(sim, "own-1", gpus=4, instance_type="some-vm-size", labels=gfd)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "stringData": {"HF_TOKEN": "t"}}
    ws = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "llama"},
          "resource": {"instanceType": "", "labelSelector": {"matchLabels": {"apps": "llm"}}},
          "inference": {"preset": {"name": "llama-3.3-70b-instruct",
                                   "presetOptions": {"modelAccessSecret": "hf"}}}}
    result = kaitoctl("apply", "-f", _file(tmp_path, "own.yaml", [secret, ws]), "--timeout", "60s")
    assert result.returncode == 0, result.stderr
    container = sim.get("Deployment", "default", "llama")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}  # 145Gi over 80 GB GPUs, from the labels
    affinity = sim.get("Deployment", "default", "llama")["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "apps", "operator": "In", "values": ["llm"]}]}]
