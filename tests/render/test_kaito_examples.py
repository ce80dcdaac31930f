"""KAITO's 30 example Workspaces of today (examples/kaito/, written from kaito-2026-facts).

Every file is kaito.sh/v1beta1, seven carry a Secret (HF_TOKEN) or a ConfigMap
(inference_config.yaml) next to the Workspace. Each validates and renders; the rendered objects
pass Kubernetes' strict OpenAPI schema and the test cluster's server-side dry run; a gated
preset's pods read HF_TOKEN from the named Secret by reference. The presets whose architecture
kaitoctl's server cannot load are refused at validate time, with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest

from kaitoctl import catalog
from kaitoctl.companions import redacted
from kaitoctl.plan import default_plan
from kaitoctl.render import render_workspace
from kaitoctl.validate import check_file, config_data

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "kaito").glob("kaito_workspace_*.yaml"))
# MistralLarge3ForCausalLM: transformers has no model class for it (KAITO serves it with vLLM only).
NOT_SERVED = {"mistral-large-3-675b-instruct"}


def _preset_of(path: Path) -> str:
    report = check_file(str(path))
    return next(d.draft for d in report.documents if d.draft is not None).preset_name or ""


def _rendered(path: Path) -> list[dict]:
    report = check_file(str(path))
    assert not report.failing(strict=True), [f.format() for f in report.failing(strict=True)]
    objs = [redacted(o) for o in report.companions]
    for ws in report.workspaces:
        objs += render_workspace(ws, default_plan(ws), config_data=config_data(ws, report.companions))
    return objs


def test_thirty_files_all_v1beta1_seven_with_companions() -> None:
    assert len(EXAMPLES) == 30
    reports = [check_file(str(p)) for p in EXAMPLES]
    assert all(d.data.get("apiVersion") == "kaito.sh/v1beta1" for r in reports for d in r.documents
               if d.data.get("kind") == "Workspace")
    assert sum(bool(r.companions) for r in reports) == 7


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_validates_renders_and_passes_the_schema(path: Path) -> None:
    preset = _preset_of(path)
    if preset in NOT_SERVED:
        errors = [f.message for f in check_file(str(path)).all_findings if f.severity == "error"]
        assert len(errors) == 1 and "which kaitoctl's server cannot serve: " in errors[0], errors
        return
    objs = _rendered(path)
    for obj in objs:
        kubernetes_validate.validate(obj, kubernetes_validate.utils.latest_version(), strict=True)
    text = json.dumps(objs)
    assert "hf_REPLACE_WITH_YOUR_TOKEN" not in text  # Secret values are never printed


def test_gated_preset_reads_the_token_from_the_secret() -> None:
    for path in EXAMPLES:
        preset = catalog.get_preset(_preset_of(path))
        if preset is None or not preset.gated:
            continue
        objs = _rendered(path)
        pod = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
        fetch = next(c for c in pod["initContainers"] if c["name"] == "kaitoctl-fetch-weights")
        token = next(e for e in fetch["env"] if e["name"] == "HF_TOKEN")
        assert token == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}}
        assert fetch["args"][:4] == ["--repo", preset.model_id, "--revision", preset.model_revision]


def test_examples_accepted_by_the_test_clusters_server_side_dry_run() -> None:
    from kubesim import KubeSim

    from kaitoctl.kube import connect

    with KubeSim() as sim:
        kube = connect(Path(sim.kubeconfig_path))
        for path in EXAMPLES:
            if _preset_of(path) in NOT_SERVED:
                continue
            for obj in _rendered(path):
                if obj["kind"] == "Secret":
                    obj = {**obj, "stringData": {k: "x" for k in obj.get("stringData", {})}}
                kube.apply({**obj, "metadata": {**obj["metadata"], "namespace": "default"}}, dry_run=True)


def test_a_changed_inference_config_changes_the_pod_template() -> None:
    path = next(p for p in EXAMPLES if p.stem.endswith("phi-4"))
    ws = check_file(str(path)).workspaces[0]
    first, second = (render_workspace(ws, default_plan(ws), config_data=text)[-1]["spec"]["template"]
                     for text in ("vllm:\n  max-model-len: 4096\n", "vllm:\n  max-model-len: 8192\n"))
    assert first["metadata"]["annotations"] != second["metadata"]["annotations"]  # apply rolls the pods
    assert first["spec"] == second["spec"]


def test_v1alpha1_and_v1beta1_are_the_same_workspace(tmp_path: Path) -> None:
    beta = next(p for p in EXAMPLES if p.stem.endswith("phi-4-mini-instruct")).read_text()
    alpha = tmp_path / "alpha.yaml"
    alpha.write_text(beta.replace("kaito.sh/v1beta1", "kaito.sh/v1alpha1"))
    (a,), (b,) = check_file(str(alpha)).workspaces, check_file(str(EXAMPLES[0].parent / "kaito_workspace_phi-4-mini-instruct.yaml")).workspaces
    assert a.apiVersion != b.apiVersion
    # The recorded Workspace (history, status, rollback) and every rendered object are identical.
    assert a.canonical() == b.canonical()
    assert render_workspace(a, default_plan(a)) == render_workspace(b, default_plan(b))


def test_adapter_from_a_volume_is_mounted_at_its_directory(tmp_path: Path) -> None:
    import yaml

    from kubesim import KubeSim

    from kaitoctl.kube import connect

    doc = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "phi"},
           "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"a": "b"}}},
           "inference": {"preset": {"name": "phi-4-mini-instruct"}, "adapters": [
               {"source": {"name": "from-pvc", "volumeSource": {"persistentVolumeClaim": {"claimName": "adapters"}}},
                "strength": "0.5"},
               {"source": {"name": "from-image", "image": "r.example.com/adapters/x:1"}}]}}
    path = tmp_path / "ws.yaml"
    path.write_text(yaml.safe_dump(doc))
    objs = _rendered(path)
    pod = objs[-1]["spec"]["template"]["spec"]
    assert {"name": "adapter-from-pvc", "persistentVolumeClaim": {"claimName": "adapters"}} in pod["volumes"]
    assert {"name": "adapter-from-pvc", "mountPath": "/mnt/adapter/from-pvc", "readOnly": True} in \
        pod["containers"][0]["volumeMounts"]
    assert [c["name"] for c in pod["initContainers"]] == ["kaitoctl-copy-tool", "from-image"]  # no copy for the PVC
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert json.loads(env["KAITOCTL_ADAPTERS"]) == [{"name": "from-pvc", "strength": 0.5},
                                                   {"name": "from-image", "strength": 1.0}]
    for obj in objs:
        kubernetes_validate.validate(obj, kubernetes_validate.utils.latest_version(), strict=True)
    with KubeSim() as sim:
        kube = connect(Path(sim.kubeconfig_path))
        for obj in objs:
            kube.apply({**obj, "metadata": {**obj["metadata"], "namespace": "default"}}, dry_run=True)


def test_any_preset_can_fetch_its_weights_at_start_on_request() -> None:
    path = next(p for p in EXAMPLES if p.stem.endswith("phi-4-mini-instruct"))
    ws = check_file(str(path)).workspaces[0]
    baked = render_workspace(ws, default_plan(ws))[-1]["spec"]["template"]["spec"]
    assert "initContainers" not in baked and baked["containers"][0]["image"].endswith("/kaitoctl-phi-4-mini-instruct:0.1.0")
    ws.metadata.annotations = {"kaitoctl.io/weights-at-start": "true"}
    fetched = render_workspace(ws, default_plan(ws))[-1]["spec"]["template"]["spec"]
    assert fetched["containers"][0]["image"] == "ghcr.io/kaitoctl/kaitoctl-server:0.1.0"
    assert fetched["initContainers"][0]["args"] == ["--repo", "microsoft/Phi-4-mini-instruct", "--revision",
                                                    "c0fb9e74abda", "--dir", "/workspace/weights"]
