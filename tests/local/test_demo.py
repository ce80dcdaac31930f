"""`kaitoctl demo`: offline, no GPU, a tiny random-weight model served from a workspace and asked twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kaitoctl.demo import DemoFiles, ensure_demo_files
from kaitoctl.errors import UsageError

from .conftest import free_port, run_cli


def answers_after_curl_lines(stdout: str) -> list[tuple[str, object]]:
    """[(curl line, the JSON printed under it)] from the demo's output."""
    found: list[tuple[str, list[str]]] = []
    for line in stdout.splitlines():
        if line.startswith("$ curl "):
            found.append((line[2:], []))
        elif line.startswith(("$ ", "demo done")):
            continue
        elif found:
            found[-1][1].append(line)
    return [(curl, json.loads("\n".join(body))) for curl, body in found]


def test_demo_runs_offline_to_completion_with_json_answers_and_reuses_its_files(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    port = free_port()
    result = run_cli("demo", "--dir", str(demo_dir), "--port", str(port))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "RANDOM WEIGHTS" in out and "RANDOM WEIGHTS" in (demo_dir / "README.txt").read_text()
    assert "workspace/workspace-demo valid: preset phi-3-mini-4k-instruct, 1 × Standard_NC6s_v3, 1 adapter" in out
    assert "merged adapter demo-lora: rank 8, alpha 16, strength 0.7, 8 modules, targets k_proj, o_proj, q_proj, " \
           "v_proj" in out
    assert "modules touched by the merge: 8" in out

    answers = answers_after_curl_lines(out)
    assert [curl.split()[2] for curl, _ in answers] == [f"http://127.0.0.1:{port}/chat",
                                                        f"http://127.0.0.1:{port}/v1/chat/completions"]
    kaito, openai = answers[0][1], answers[1][1]
    assert isinstance(kaito, dict) and set(kaito) == {"Result"} and isinstance(kaito["Result"], str)
    assert isinstance(openai, dict) and openai["object"] == "chat.completion"
    assert openai["choices"][0]["message"]["role"] == "assistant"
    assert set(openai["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert "creating the demo files" in result.stderr and "Traceback" not in result.stderr

    # Second run: the files are reused, and the workspace (edited as its comment suggests) is what gets served.
    weights = demo_dir / "tiny-random-llama" / "model.safetensors"
    written = weights.stat().st_mtime_ns
    workspace = demo_dir / "workspace.yaml"
    workspace.write_text(workspace.read_text().replace('strength: "0.7"', 'strength: "0.25"'))
    again = run_cli("demo", "--dir", str(demo_dir), "--port", str(port))
    assert again.returncode == 0, again.stderr
    assert "reusing the demo files" in again.stderr and "creating" not in again.stderr
    assert weights.stat().st_mtime_ns == written
    assert "merged adapter demo-lora: rank 8, alpha 16, strength 0.25" in again.stdout
    assert len(answers_after_curl_lines(again.stdout)) == 2


def test_the_demo_workspace_is_a_valid_workspace_for_kaitoctl_validate_and_render(tmp_path: Path) -> None:
    from kaitoctl.demo import WORKSPACE_YAML

    (tmp_path / "ws.yaml").write_text(WORKSPACE_YAML)
    for command in ("validate", "render"):
        result = run_cli(command, "-f", str(tmp_path / "ws.yaml"))
        assert result.returncode == 0, result.stderr


def test_the_demo_never_writes_into_a_directory_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("mine")
    with pytest.raises(UsageError, match="holds files the demo did not write"):
        ensure_demo_files(tmp_path, lambda _message: None)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.md"]


def test_a_demo_directory_that_cannot_be_made_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    dangling = tmp_path / "demo"
    dangling.symlink_to(tmp_path / "gone")
    with pytest.raises(UsageError, match=r"a symbolic link to .*gone, which does not exist") as err:
        ensure_demo_files(dangling, lambda _message: None)
    assert "--dir" in err.value.hint
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(UsageError, match=r"a-file/demo: cannot create it \(Not a directory\)"):
        ensure_demo_files(tmp_path / "a-file" / "demo", lambda _message: None)
    assert (tmp_path / "a-file").read_text() == "mine" and not (tmp_path / "gone").exists()


def test_an_unfinished_demo_directory_is_recreated_not_reused(tmp_path: Path) -> None:
    files = DemoFiles(tmp_path)
    files.workspace.write_text("half-written")  # an interrupted first run: README.txt is written last
    files, created = ensure_demo_files(tmp_path, lambda _message: None)
    assert created and files.complete()
    assert "name: workspace-demo" in files.workspace.read_text()
    assert ensure_demo_files(tmp_path, lambda _message: None)[1] is False


def test_the_one_shot_demo_moves_to_a_free_port_when_its_default_is_taken(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from kaitoctl.demo import run_demo
    from kaitoctl.local import LocalOptions

    with socket.socket() as taken:  # e.g. macOS's AirPlay receiver on port 5000
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        run_demo(tmp_path / "demo", LocalOptions(port=busy), any_free_port=True)
    out, err = capsys.readouterr()
    assert f"port {busy} is in use; this run of the demo uses port" in err
    answers = answers_after_curl_lines(out)
    assert len(answers) == 2 and f":{busy}/" not in answers[0][0]
