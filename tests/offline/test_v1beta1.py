"""kaito.sh/v1beta1 rules, multi-document files with ConfigMaps/Secrets, today's presets: validate's findings."""

from __future__ import annotations

import json

import pytest
import yaml

from kaitoctl.cli import main as cli_main
from kaitoctl.loader import load_text
from kaitoctl.validate import check_documents


def ws(preset: str = "phi-4-mini-instruct", itype: str = "Standard_NC24ads_A100_v4", version: str = "kaito.sh/v1beta1",
       **extra: object) -> dict:
    doc: dict = {"apiVersion": version, "kind": "Workspace", "metadata": {"name": "w"},
                 "resource": {"instanceType": itype, "labelSelector": {"matchLabels": {"a": "b"}}},
                 "inference": {"preset": {"name": preset}}}
    for path, value in extra.items():
        node = doc
        *parents, last = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return doc


def findings(*docs: dict) -> list[tuple[str, str, str]]:
    report = check_documents(load_text(yaml.safe_dump_all(list(docs), sort_keys=False), "f.yaml"), "f.yaml")
    return [(f.severity, f.path, f.message) for f in report.all_findings]


def test_deprecated_fields_are_notes_under_v1beta1_only() -> None:
    doc = ws(resource__count=1, resource__preferredNodes=["n1"])
    assert [(s, p) for s, p, _ in findings(doc)] == [("note", "resource.count"), ("note", "resource.preferredNodes")]
    assert findings(ws(version="kaito.sh/v1alpha1", resource__count=1, resource__preferredNodes=["n1"])) == []


@pytest.mark.parametrize("partition,itype,expected", [
    ({"mode": "mig", "profile": "3g.40gb"}, "Standard_NC24ads_A100_v4",
     "partition needs your own nodes: set resource.instanceType to \"\""),
    ({"mode": "mig"}, "", "mode: mig needs a profile"),
    ({"mode": "mig", "profile": "big"}, "", "MIG profile \"big\" is not of the form <n>g.<m>gb"),
    ({"mode": "mig", "profile": "1g.5gb"}, "", "MIG profile 1g.5gb has 5 GB of GPU memory, but preset "
                                               "phi-4-mini-instruct needs 8Gi"),
    ({"mode": "accelerator"}, "", "mode: accelerator needs count"),
    ({"mode": "accelerator", "count": 0}, "", "count must be at least 1, found 0"),
    ({"mode": "accelerator", "count": 1, "profile": "1g.10gb"}, "", "profile is for mode: mig"),
])
def test_partition_is_rendered_or_refused_with_the_reason(partition: dict, itype: str, expected: str) -> None:
    errors = [m for s, _, m in findings(ws(itype=itype, resource__partition=partition)) if s == "error"]
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_gated_preset_without_secret_is_an_error_at_validate_time() -> None:
    errors = [m for s, _, m in findings(ws("llama-3.1-8b-instruct")) if s == "error"]
    assert errors == ["preset llama-3.1-8b-instruct downloads meta-llama/Llama-3.1-8B-Instruct from Hugging Face "
                      "when the pod starts, and that repository is gated: set presetOptions.modelAccessSecret to a "
                      "Secret whose key HF_TOKEN holds a token of an account that accepted the model's license "
                      "(kubectl create secret generic hf-token --from-literal=HF_TOKEN=hf_...)"]
    named = findings(ws("llama-3.1-8b-instruct", inference__preset__presetOptions={"modelAccessSecret": "hf"}))
    assert named == [("note", "inference.preset.presetOptions.modelAccessSecret",
                      "Secret hf is not in this file: it must exist in the namespace it is applied to with the key "
                      "HF_TOKEN (kaitoctl apply's preflight checks it)")]


def test_architectures_the_server_cannot_load_or_run_are_refused() -> None:
    (error,) = [m for s, _, m in findings(ws("mistral-large-3-675b-instruct", "Standard_ND96isr_H200_v5"))
                if s == "error"]
    assert error == ("preset mistral-large-3-675b-instruct is a MistralLarge3ForCausalLM model, which kaitoctl's "
                     "server cannot serve: transformers has no model class for this architecture (KAITO serves it "
                     "with vLLM only); pick a preset it serves (kaitoctl presets list) or run this one with KAITO")
    errors = [m for s, _, m in findings(ws("deepseek-v3-0324", "p4de.24xlarge")) if s == "error"]
    assert any("cannot run on NVIDIA A100-80GB (compute capability 8.0)" in m
               and m.endswith("pick an instance type with GPUs of compute capability 8.9 or newer (NVIDIA L4, "
                              "NVIDIA L40S, NVIDIA H100, NVIDIA H200; kaitoctl skus list shows each type's GPU model)")
               for m in errors), errors


def test_companions_are_checked_and_cross_referenced() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "data": {"HF_TOKEN": "not base64!"}}
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"other.yaml": "a: 1"},
              "spec": {}}
    doc = ws("llama-3.1-8b-instruct", inference__preset__presetOptions={"modelAccessSecret": "hf"},
             inference__config="cfg")
    got = [(s, p, m.split(":")[0]) for s, p, m in findings(secret, config, doc)]
    assert ("error", "data.HF_TOKEN", "the value of HF_TOKEN in data must be base64-encoded; write the plain text "
                                      "under stringData instead") in [(s, p, m) for s, p, m in findings(secret)]
    assert ("error", "spec", "unknown field \"spec\" of a ConfigMap") in got
    config.pop("spec")
    assert ("error", "inference.config", "ConfigMap cfg (in this file) has no key inference_config.yaml: add "
                                         "inference_config.yaml to its data") in findings(config, doc)
    unused = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}, "data": {}}
    assert ("note", "", "ConfigMap other is not named by a Workspace of this file: kaitoctl applies it with them all "
                        "the same") in findings(unused, ws())


def test_render_prints_secret_keys_never_values(tmp_path, capsys) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"},
              "stringData": {"HF_TOKEN": "hf_top_secret"}, "data": {"extra": "c2VjcmV0"}}
    doc = ws("llama-3.1-8b-instruct", inference__preset__presetOptions={"modelAccessSecret": "hf"})
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump_all([secret, doc], sort_keys=False))
    with pytest.raises(SystemExit) as exit_:
        cli_main(["render", "-f", str(path), "-o", "json"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "hf_top_secret" not in out and "c2VjcmV0" not in out
    rendered = json.loads(out)["items"][0]
    assert rendered["stringData"] == {"HF_TOKEN": "<redacted>", "extra": "<redacted>"} and "data" not in rendered


def test_tensor_parallel_size_is_checked_against_the_pods_gpus() -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
              "data": {"inference_config.yaml": "vllm:\n  tensor-parallel-size: 4\n  max-model-len: 8192\n"}}
    got = findings(config, ws("llama-3.3-70b-instruct", "Standard_NC96ads_A100_v4", inference__config="cfg",
                              inference__preset__presetOptions={"modelAccessSecret": "hf"}))
    assert ("warning", "inference.config", "ConfigMap cfg: tensor-parallel-size is 4, but each pod gets 2 GPU(s) on "
            "Standard_NC96ads_A100_v4, over which kaitoctl's server spreads the model: set tensor-parallel-size: 2 "
            "(or remove it)") in got


@pytest.mark.parametrize("key,value,expected", [
    ("kaito.sh/runtime", "transformers", []),
    ("kaito.sh/runtime", "vllm", [("note", "kaito.sh/runtime: kaitoctl always runs its bundled transformers server; "
                                           "vLLM engine arguments of inference.config are listed as ignored")]),
    ("kaito.sh/runtime", "tgi", [("error", "kaito.sh/runtime must be one of transformers, vllm, found \"tgi\"")]),
    ("kaito.sh/performance-mode", "fast", [("error", "kaito.sh/performance-mode must be one of balanced, "
                                                     "interactivity, throughput, found \"fast\"")]),
    ("kaito.sh/disable-benchmark", "true", [("note", "kaito.sh/disable-benchmark: kaitoctl runs no benchmark at "
                                                     "start")]),
])
def test_kaito_annotations(key: str, value: str, expected: list) -> None:
    assert [(s, m) for s, _, m in findings(ws(metadata__annotations={key: value}))] == expected


def test_validate_json_lists_the_configmaps_and_secrets_too(tmp_path, capsys) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "stringData": {"HF_TOKEN": "x"}}
    doc = ws("llama-3.1-8b-instruct", inference__preset__presetOptions={"modelAccessSecret": "hf"})
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump_all([secret, doc], sort_keys=False))
    with pytest.raises(SystemExit) as exit_:
        cli_main(["validate", "-f", str(path), "-o", "json"])
    report = json.loads(capsys.readouterr().out)
    assert exit_.value.code == 0
    assert [(d["kind"], d["name"], d["valid"]) for d in report["documents"]] == [("Secret", "hf", True),
                                                                              ("Workspace", "w", True)]


def test_a_companion_without_namespace_goes_with_the_workspace() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "stringData": {"HF_TOKEN": "x"}}
    doc = ws("llama-3.1-8b-instruct", inference__preset__presetOptions={"modelAccessSecret": "hf"},
             metadata__namespace="llm")
    assert findings(secret, doc) == []
