"""Every example: loads, validates, renders to the reviewed golden file, passes Kubernetes' strict schema.

Regenerate the goldens after an intended change with

    KAITOCTL_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/render/test_examples.py

and review the diff line by line before committing it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from kaitoctl.cli import main as cli_main
from kaitoctl.output import dump_yaml
from kaitoctl.render import render_workspace
from kaitoctl.validate import load_workspaces

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("KAITOCTL_UPDATE_GOLDEN") == "1"
# The oldest version we promise (sleep preStop hooks and the pod-index label are there) and the newest known.
K8S_VERSIONS = ["1.35.0", kubernetes_validate.utils.latest_version()]


def render_file(path: Path) -> str:
    objects: list[dict] = []
    for ws in load_workspaces(str(path)):
        objects.extend(render_workspace(ws))
    return dump_yaml(objects)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_the_documented_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {
        "falcon-7b.yaml",
        "falcon-7b-adapters.yaml",
        "phi-3-mini.yaml",
        "mistral-7b-instruct.yaml",
        "llama-2-13b-chat.yaml",
        "phi-3-mini-t4.yaml",
    } <= names


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_matches_golden(example: Path) -> None:
    rendered = render_file(example)
    golden = GOLDEN / f"{example.stem}.yaml"
    if UPDATE:
        golden.write_text(rendered, encoding="utf-8")
    assert golden.exists(), f"no golden for {example.name}: run with KAITOCTL_UPDATE_GOLDEN=1 and review it"
    assert rendered == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_passes_strict_kubernetes_schema(example: Path, version: str) -> None:
    docs = list(yaml.safe_load_all(render_file(example)))
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_no_golden_without_an_example() -> None:
    assert {p.stem for p in GOLDEN.glob("*.yaml")} == {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_cli_render_yaml_is_the_golden(example: Path, capsys) -> None:
    code, out, err = run_cli(["render", "-f", str(example)], capsys)
    assert code == 0, err
    assert out == (GOLDEN / f"{example.stem}.yaml").read_text(encoding="utf-8")
    # The plan's reason goes to stderr, never into the data.
    assert "RollingUpdate" in err or "Recreate" in err


def test_cli_render_json_is_a_v1_list(capsys) -> None:
    example = ROOT / "examples" / "llama-2-13b-chat.yaml"
    code, out, _ = run_cli(["render", "-f", str(example), "-o", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["apiVersion"] == "v1" and data["kind"] == "List"
    assert data["items"] == list(yaml.safe_load_all((GOLDEN / "llama-2-13b-chat.yaml").read_text()))


def test_cli_registry_flag(capsys) -> None:
    code, out, _ = run_cli(["render", "-f", str(ROOT / "examples" / "falcon-7b.yaml"), "--registry", "mirror.io/k"], capsys)
    assert code == 0
    assert "image: mirror.io/k/kaitoctl-falcon-7b:" in out


@pytest.mark.parametrize(
    "argv_tail, content, exit_code, message",
    [
        ([], "apiVersion: kaito.sh/v1alpha1\nkind: Workspace\nmetadata: {name: w}\n"
             "resource: {instanceType: Standard_NC12s_v3}\ninference: {preset: {name: gpt-5}}\n", 3, "gpt-5"),
        (["-o", "table"], None, 2, "table"),
    ],
)
def test_cli_render_errors_are_clean(tmp_path, capsys, argv_tail, content, exit_code, message) -> None:
    path = tmp_path / "ws.yaml"
    path.write_text(content or (ROOT / "examples" / "falcon-7b.yaml").read_text())
    code, out, err = run_cli(["render", "-f", str(path), *argv_tail], capsys)
    assert code == exit_code
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_multi_document_file_renders_every_workspace_identically_across_processes(tmp_path) -> None:
    """Same input, byte-identical output, whatever the hash seed of the process."""
    combined = tmp_path / "all.yaml"
    combined.write_text("\n---\n".join(p.read_text() for p in EXAMPLES))
    expected = "---\n".join((GOLDEN / f"{p.stem}.yaml").read_text() for p in EXAMPLES)
    outputs = []
    for seed in ("1", "4242"):
        env = {k: v for k, v in os.environ.items() if k not in ("KAITOCTL_PRESET_REGISTRY", "KAITOCTL_COPY_TOOL_IMAGE")}
        env["PYTHONHASHSEED"] = seed
        proc = subprocess.run(
            [sys.executable, "-m", "kaitoctl", "render", "-f", str(combined)],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1] == expected
