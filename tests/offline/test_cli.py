"""``kaitoctl validate``, ``presets`` and ``skus`` as a user runs them: exit codes, stdout, stderr.

Most cases call ``kaitoctl.cli.main`` in-process; a few run the real command
in a subprocess to pin the exit codes and streams end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kaitoctl.cli import main

from ._support import adapter, mutate, to_yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BASE_TEXT = """\
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: ws-falcon
resource:
  count: 1
  instanceType: Standard_NC12s_v3
  labelSelector:
    matchLabels:
      apps: falcon
inference:
  preset:
    name: falcon-7b
"""
ADAPTER_TEXT = """\
  adapters:
  - source:
      name: adapter-a
      image: myregistry.azurecr.io/adapters/a:0.0.1
    strength: "{strength}"
"""


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture
def ws_file(tmp_path: Path):
    def write(data, name: str = "ws.yaml") -> str:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else to_yaml(data))
        return str(path)
    return write


def test_valid_file_prints_one_summary_line(ws_file, capsys) -> None:
    path = ws_file(mutate({"inference.adapters": [adapter("a"), adapter("b")]}))
    code, out, err = run(["validate", "-f", path], capsys)
    assert (code, err) == (0, "")
    assert out == "workspace/ws-falcon valid: preset falcon-7b, 1 × Standard_NC12s_v3, 2 adapters\n"


def test_notes_go_to_stderr_and_do_not_fail(ws_file, capsys) -> None:
    path = ws_file(BASE_TEXT + ADAPTER_TEXT.format(strength="0.5"))
    code, out, err = run(["validate", "-f", path], capsys)
    assert code == 0 and out.startswith("workspace/ws-falcon valid")
    assert err == (f"kaitoctl: {path}:18:15: note: inference.adapters[0].strength: strength is not portable to "
                   "KAITO's vLLM runtime (it rejects adapter strength; KAITO's transformers runtime and kaitoctl "
                   "honour it)\n")


def test_strict_makes_warnings_fail(ws_file, capsys) -> None:
    path = ws_file(mutate({"inference.adapters": [adapter("a", strength=1)]}))  # a YAML number: a warning
    code, out, err = run(["validate", "-f", path, "--strict"], capsys)
    assert code == 3 and out == ""
    assert err.splitlines()[0] == (f"kaitoctl: error: {path} is not a valid Workspace file: 1 warning (--strict "
                                   "makes warnings fail)")
    assert "warning: inference.adapters[0].strength: strength is written as a YAML number" in err


def test_strict_does_not_fail_on_portability_notes(ws_file, capsys) -> None:
    path = ws_file(mutate({"inference.adapters": [adapter("a", strength="0.5")]}))
    code, out, err = run(["validate", "-f", path, "--strict"], capsys)
    assert code == 0 and out.startswith("workspace/ws-falcon valid")
    assert "note: inference.adapters[0].strength: strength is not portable" in err


def test_render_does_not_repeat_portability_notes(ws_file, capsys) -> None:
    path = ws_file(mutate({"inference.adapters": [adapter("a", strength="0.5")]}))
    code, out, err = run(["render", "-f", path], capsys)
    assert code == 0 and "kind: Deployment" in out
    assert "not portable" not in err


def test_invalid_file_exits_3_with_every_problem_of_every_document(ws_file, capsys) -> None:
    first = BASE_TEXT.replace("count: 1", "count: 0")
    second = BASE_TEXT.replace("ws-falcon", "second") + ADAPTER_TEXT.format(strength="2")
    path = ws_file(first + "---\n" + second)
    code, out, err = run(["validate", "-f", path], capsys)
    assert code == 3 and out == ""
    assert err.splitlines() == [
        f"kaitoctl: error: {path} is not a valid Workspace file: 2 errors",
        f"  {path}:6:10: resource.count: count must be at least 1, found 0: it is the number of GPU nodes (and of "
        "replicas for presets that are not distributed)",
        f"  {path}:32:15: inference.adapters[0].strength: Strength value for Adapter 'adapter-a' must be between 0 "
        "and 1 (found 2): it scales the adapter's weights, 1.0 applies them fully",
        f"hint: fix the fields listed above, then run: kaitoctl validate -f {path}",
    ]


def test_same_workspace_twice_in_a_file(ws_file, capsys) -> None:
    path = ws_file(BASE_TEXT + "---\n" + BASE_TEXT)
    code, _, err = run(["validate", "-f", path], capsys)
    assert code == 3
    assert (f"  {path}:18:9: metadata.name: workspace ws-falcon is defined twice in this file (documents 1 and 2): "
            "give each a different name") in err.splitlines()


def test_json_output_lists_every_document_and_finding(ws_file, capsys) -> None:
    path = ws_file(BASE_TEXT + "---\n" + BASE_TEXT.replace("ws-falcon", "x").replace("count: 1", "count: 0"))
    code, out, err = run(["validate", "-f", path, "-o", "json"], capsys)
    assert code == 3
    report = json.loads(out)
    assert report["valid"] is False and report["file"] == path
    assert [(d["index"], d["name"], d["valid"]) for d in report["documents"]] == [
        (0, "ws-falcon", True), (1, "x", False)]
    assert report["documents"][1]["findings"] == [{
        "severity": "error", "file": path, "line": 20, "column": 10, "path": "resource.count",
        "message": "count must be at least 1, found 0: it is the number of GPU nodes (and of replicas for presets "
                   "that are not distributed)"}]
    assert "kaitoctl: error:" in err


def test_yaml_output_when_valid(ws_file, capsys) -> None:
    code, out, _ = run(["validate", "-f", ws_file(mutate({})), "-o", "yaml"], capsys)
    assert code == 0
    assert yaml.safe_load(out)["documents"][0]["summary"] == (
        "workspace/ws-falcon valid: preset falcon-7b, 1 × Standard_NC12s_v3")


def test_missing_file_exits_3(tmp_path, capsys) -> None:
    code, out, err = run(["validate", "-f", str(tmp_path / "nope.yaml")], capsys)
    assert code == 3 and out == ""
    assert f"  {tmp_path / 'nope.yaml'}: no such file" in err.splitlines()


def test_missing_flag_is_a_usage_error(capsys) -> None:
    code, _, err = run(["validate"], capsys)
    assert code == 2 and "-f" in err


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_validates(example: str, capsys) -> None:
    code, out, err = run(["validate", "-f", str(EXAMPLES / example)], capsys)
    assert code == 0 and " valid" in out and "error" not in err


def test_presets_list_table_and_json(capsys) -> None:
    code, out, _ = run(["presets", "list"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "MODEL", "GPUS"]
    assert len(lines) == 37 and any(line.startswith("phi-3-mini-4k-instruct (small)") for line in lines)
    code, out, _ = run(["presets", "list", "-o", "json"], capsys)
    items = json.loads(out)["items"]
    assert [p["name"] for p in items][:2] == ["falcon-7b", "falcon-7b-instruct"] and len(items) == 36
    falcon = items[0]
    assert falcon["image"] == "ghcr.io/kaitoctl/kaitoctl-falcon-7b:0.1.0" and falcon["kaito_tag"] == "0.0.5"


def test_presets_show(capsys) -> None:
    code, out, _ = run(["presets", "show", "llama-2-70b", "-o", "yaml"], capsys)
    data = yaml.safe_load(out)
    assert code == 0
    assert (data["gpu_count"], data["per_gpu_memory"], data["world_size"], data["distributed"], data["image"]) == (
        8, "19Gi", 8, True, None)
    code, out, _ = run(["presets", "show", "falcon-40b"], capsys)
    assert code == 0 and "disk" in out and "400Gi" in out


def test_presets_show_unknown_suggests(capsys) -> None:
    code, out, err = run(["presets", "show", "falcon7b"], capsys)
    assert code == 2 and out == ""
    assert err.splitlines() == ["kaitoctl: error: unknown preset 'falcon7b' (did you mean falcon-7b?)",
                                "hint: kaitoctl presets list shows every preset"]


def test_skus_list_by_cloud(capsys) -> None:
    code, out, _ = run(["skus", "list", "--cloud", "aws", "-o", "json"], capsys)
    items = json.loads(out)["items"]
    assert code == 0 and len(items) == 57 and {s["cloud"] for s in items} == {"aws"}
    code, out, _ = run(["skus", "list"], capsys)
    assert len(out.splitlines()) == 1 + 97
    row = next(line for line in out.splitlines() if line.startswith("Standard_NC12s_v3 "))
    assert row.split()[:5] == ["Standard_NC12s_v3", "azure", "2", "32Gi", "16Gi"]


def _kaitoctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "kaitoctl", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=120)


def test_subprocess_valid_from_stdin() -> None:
    result = _kaitoctl("validate", "-f", "-", stdin=to_yaml(mutate({})))
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "workspace/ws-falcon valid: preset falcon-7b, 1 × Standard_NC12s_v3\n", "")


def test_subprocess_invalid_from_stdin() -> None:
    result = _kaitoctl("validate", "-f", "-", stdin=to_yaml(mutate({"inference.preset.name": "gpt-5"})))
    assert result.returncode == 3 and result.stdout == ""
    assert result.stderr.splitlines()[:2] == [
        "kaitoctl: error: <stdin> is not a valid Workspace file: 1 error",
        "  <stdin>:12:11: inference.preset.name: Unsupported inference preset name gpt-5; valid names: falcon-7b, "
        "falcon-7b-instruct, falcon-40b, falcon-40b-instruct, mistral-7b, mistral-7b-instruct, phi-2, "
        "phi-3-mini-4k-instruct, phi-3-mini-128k-instruct, phi-3-medium-4k-instruct, phi-3-medium-128k-instruct, "
        "llama-2-7b, llama-2-7b-chat, llama-2-13b, llama-2-13b-chat, llama-2-70b, llama-2-70b-chat, "
        "llama-3.1-8b-instruct, llama-3.3-70b-instruct, deepseek-r1-0528, deepseek-v3-0324, ministral-3-3b-instruct, ministral-3-8b-instruct, ministral-3-14b-instruct, mistral-large-3-675b-instruct, phi-3.5-mini-instruct, phi-4-mini-instruct, phi-4, qwen2.5-coder-7b-instruct, qwen2.5-coder-32b-instruct, deepseek-r1-distill-qwen-14b, deepseek-r1-distill-llama-8b, gemma-3-4b-instruct, gemma-3-27b-instruct, gpt-oss-20b, gpt-oss-120b",
    ]
    assert result.stderr.splitlines()[-1] == "hint: fix the fields listed above, then run: kaitoctl validate -f -"
    assert "Traceback" not in result.stderr


def test_subprocess_binary_file(tmp_path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 4)
    result = _kaitoctl("validate", "-f", str(path))
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "is it a binary file?" in result.stderr


def test_offline_commands_import_no_cluster_or_ml_library() -> None:
    """validate, presets and skus stay fast and work without a cluster client installed."""
    code = (
        "import contextlib, io, sys\n"
        "from kaitoctl.cli import main\n"
        f"argvs = [['validate', '-f', {str(EXAMPLES / 'falcon-7b-adapters.yaml')!r}], ['presets', 'list'],\n"
        "         ['presets', 'show', 'falcon-7b'], ['skus', 'list', '-o', 'json']]\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    for argv in argvs:\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as exc:\n"
        "            assert not exc.code, (argv, exc.code)\n"
        "heavy = ('kubernetes', 'torch', 'transformers', 'peft', 'flask')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "[]\n", "")


def test_unreadable_input_says_so_without_a_field_hint(tmp_path, capsys) -> None:
    code, out, err = run(["validate", "-f", str(tmp_path)], capsys)
    assert (code, out) == (3, "")
    assert err.splitlines() == [f"kaitoctl: error: cannot read a Workspace from {tmp_path}",
                                f"  {tmp_path}: is a directory: give a Workspace YAML file (or - for stdin)"]
