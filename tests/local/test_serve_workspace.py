"""`kaitoctl serve -f`: a Workspace served on this machine as its pod would serve it.

Real processes on 127.0.0.1 with a tiny random model: the workspace's strengths
must reach the merge, whatever the workspace names that is not here must be
reported at once before anything loads, and Ctrl-C must stop the server cleanly.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

from .conftest import ROOT, Tiny, run_cli, workspace_yaml

GREEDY = {"prompt": "Kubernetes schedules pods", "max_tokens": 12, "temperature": 0}


def in_process_completion(tiny: Tiny, strengths: dict[str, float]) -> str:
    """The same greedy request, answered by an app built in this process with ``strengths``."""
    from kaitoctl_server.app import create_app
    from kaitoctl_server.config import AdapterRef, ServerConfig
    from kaitoctl_server.loader import load_served_model

    config = ServerConfig(model_dir=str(tiny.model), dtype="float32", device="cpu",
                          adapters=tuple(AdapterRef(n, str(tiny.adapter(n)), s) for n, s in strengths.items()))
    answer = create_app(config, served=load_served_model(config)).test_client().post("/v1/completions", json=GREEDY)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()["choices"][0]["text"]


def test_serve_f_merges_at_the_workspace_strengths_prints_working_curl_lines_and_stops_on_ctrl_c(
        tiny: Tiny, tmp_path: Path, start_server) -> None:
    # Two workspaces in one file: --name picks one, and its strengths (not the other's) reach the merge.
    ws = tmp_path / "workspaces.yaml"
    ws.write_text(workspace_yaml("ws-tuned", {"a1": "0.3", "a2": "0.9"}) + "---\n"
                  + workspace_yaml("ws-other", {"a1": "1.0", "a2": "1.0"}))
    server = start_server("serve", "-f", str(ws), "--name", "ws-tuned", "--model", str(tiny.model),
                          "--adapter", f"a1={tiny.adapter('a1')}", "--adapter-dir", str(tiny.adapters))
    server.wait_ready()

    card = server.get("/v1/models")["data"][0]
    assert [(a["name"], a["strength"], a["rank"]) for a in card["adapters"]] == [("a1", 0.3, 4), ("a2", 0.9, 8)]
    assert card["dtype"] == "float32"  # falcon-7b's bfloat16 becomes float32 on a CPU
    served_text = server.post("/v1/completions", GREEDY)["choices"][0]["text"]
    assert served_text == in_process_completion(tiny, {"a1": 0.3, "a2": 0.9})
    assert served_text != in_process_completion(tiny, {"a1": 1.0, "a2": 1.0})  # the strengths matter here

    # The curl lines printed when ready work as printed, against the real port.
    curl_lines = [line.strip() for line in server.stdout.splitlines() if line.strip().startswith("curl ")]
    assert [line.split()[2] for line in curl_lines] == [f"{server.url}/chat", f"{server.url}/v1/chat/completions"]
    assert shutil.which("curl"), "curl is needed to run the printed lines"
    answers = [json.loads(subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=120,
                                         check=True).stdout) for line in curl_lines]
    assert isinstance(answers[0]["Result"], str)  # falcon-7b: text-generation pipeline, a prompt
    assert answers[1]["object"] == "chat.completion" and answers[1]["choices"][0]["message"]["role"] == "assistant"

    assert server.interrupt() == 0
    log = server.stderr
    assert "merging 2 adapter(s)" in log and "a1 (strength 0.3), a2 (strength 0.9)" in log
    assert "merged adapter a2: rank 8, alpha 16, strength 0.9, 8 modules" in log
    assert "Traceback" not in log


def test_everything_the_workspace_names_that_is_missing_is_reported_together(tmp_path: Path) -> None:
    ws = tmp_path / "ws.yaml"
    ws.write_text(workspace_yaml("ws", {"a1": "0.5", "a2": "0.5", "a3": "0.5"}))
    no_config = tmp_path / "not-an-adapter"
    no_config.mkdir()
    result = run_cli("serve", "-f", str(ws), "--model", str(tmp_path / "no-model"),
                     "--adapter", f"a1={tmp_path / 'gone'}", "--adapter", f"a3={no_config}",
                     HF_HOME=str(tmp_path / "hf"))
    assert result.returncode == 8, result.stderr
    err = result.stderr
    assert "workspace/ws names 4 things not found on this machine" in err
    assert f"model: directory {tmp_path / 'no-model'} does not exist (--model)" in err
    assert f"adapter a1 (inference.adapters[0]): directory {tmp_path / 'gone'} does not exist" in err
    assert "adapter a2 (inference.adapters[1]): no local directory given; pass --adapter a2=DIR" in err
    assert "registry.example.com/adapters/a2:1 holds it under /data" in err
    assert f"adapter a3 (inference.adapters[2]): {no_config} has no adapter_config.json" in err
    assert "Traceback" not in err


def test_without_model_the_presets_hub_model_is_looked_up_and_reported_when_offline(tmp_path: Path,
                                                                                     tiny: Tiny) -> None:
    ws = tmp_path / "ws.yaml"
    ws.write_text(workspace_yaml("ws", {"a1": "0.5"}))
    result = run_cli("serve", "-f", str(ws), "--adapter-dir", str(tiny.adapters), HF_HOME=str(tmp_path / "hf"))
    assert result.returncode == 8
    assert ("model: tiiuae/falcon-7b@898df1396f35e447d5fe44e0a3ccaaaa69f30d36 (preset falcon-7b's model_id) is not "
            "a directory here nor in the Hugging Face cache, and HF_HUB_OFFLINE is set") in result.stderr


def test_a_strength_on_adapter_is_refused_with_f(tiny: Tiny, tmp_path: Path) -> None:
    ws = tmp_path / "ws.yaml"
    ws.write_text(workspace_yaml("ws", {"a1": "0.25"}))
    result = run_cli("serve", "-f", str(ws), "--model", str(tiny.model), "--adapter", f"a1={tiny.adapter('a1')}:0.8")
    assert result.returncode == 2
    assert "with -f the strength comes from the workspace (inference.adapters[0].strength is 0.25); drop ':0.8'" \
        in result.stderr


def test_template_workspaces_are_not_servable_locally(tmp_path: Path) -> None:
    ws = tmp_path / "template.yaml"
    ws.write_text(
        "apiVersion: kaito.sh/v1alpha1\nkind: Workspace\nmetadata:\n  name: custom\n"
        "resource:\n  instanceType: Standard_NC12s_v3\n  labelSelector:\n    matchLabels:\n      apps: llm\n"
        "inference:\n  template:\n    spec:\n      containers:\n        - name: server\n"
        "          image: registry.example.com/my-server:1\n"
    )
    result = run_cli("serve", "-f", str(ws), "--model", str(tmp_path))
    assert result.returncode == 8
    assert "workspace/custom runs its own pod (inference.template)" in result.stderr
    assert "cannot be served locally" in result.stderr


def test_file_with_several_workspaces_needs_name(tmp_path: Path) -> None:
    ws = tmp_path / "two.yaml"
    ws.write_text(workspace_yaml("one", {}) + "---\n" + workspace_yaml("two", {}))
    result = run_cli("serve", "-f", str(ws), "--model", str(tmp_path))
    assert result.returncode == 2
    assert "holds 2 workspaces" in result.stderr and "pick one with --name (one, two)" in result.stderr
    result = run_cli("serve", "-f", str(ws), "--name", "three", "--model", str(tmp_path))
    assert result.returncode == 2 and "has no workspace of that name" in result.stderr


def test_an_adapter_the_workspace_does_not_name_is_a_usage_error(tiny: Tiny, tmp_path: Path) -> None:
    ws = tmp_path / "ws.yaml"
    ws.write_text(workspace_yaml("ws", {"a1": "0.5"}))
    result = run_cli("serve", "-f", str(ws), "--model", str(tiny.model), "--adapter", f"sql={tiny.adapter('a2')}")
    assert result.returncode == 2
    assert "workspace/ws has no adapter named sql" in result.stderr and "are: a1" in result.stderr


def test_an_invalid_workspace_is_exit_3_with_every_finding(tmp_path: Path) -> None:
    ws = tmp_path / "bad.yaml"
    ws.write_text(workspace_yaml("Bad_Name", {"a1": "1.5"}))
    result = run_cli("serve", "-f", str(ws), "--model", str(tmp_path))
    assert result.returncode == 3
    assert "metadata.name" in result.stderr and "inference.adapters[0].strength" in result.stderr


def test_the_pipeline_and_remote_code_come_from_the_preset_with_f(tiny: Tiny, tmp_path: Path) -> None:
    ws = tmp_path / "ws.yaml"
    ws.write_text(workspace_yaml("ws", {}))
    result = run_cli("serve", "-f", str(ws), "--model", str(tiny.model), "--pipeline", "chat")
    assert result.returncode == 2 and "--pipeline cannot be combined with -f" in result.stderr


def test_serve_runs_from_the_repository_root_with_an_example(tmp_path: Path) -> None:
    # The shipped examples are servable workspaces: only the local files are missing.
    result = run_cli("serve", "-f", str(ROOT / "examples" / "falcon-7b-adapters.yaml"), "--model", str(tmp_path))
    assert result.returncode == 8
    assert "adapter falcon-7b-adapter (inference.adapters[0]): no local directory given" in result.stderr
    assert "adapter additional-source (inference.adapters[1]): no local directory given" in result.stderr


def test_a_hugging_face_id_is_served_from_the_local_cache_offline_and_sigterm_stops_it(
        tiny: Tiny, tmp_path: Path, start_server) -> None:
    # The layout huggingface_hub caches a download in: refs/main names the snapshot's commit.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    shutil.copytree(tiny.model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    ws = tmp_path / "ws.yaml"
    ws.write_text(workspace_yaml("ws", {"a2": "0.6"}))
    server = start_server("serve", "-f", str(ws), "--model", "acme/tiny-llama", "--adapter-dir", str(tiny.adapters),
                          HF_HUB_CACHE=str(tmp_path / "hub"))
    server.wait_ready()
    card = server.get("/v1/models")["data"][0]
    assert card["id"] == "acme/tiny-llama"
    assert [(a["name"], a["strength"]) for a in card["adapters"]] == [("a2", 0.6)]
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    assert "using acme/tiny-llama from the Hugging Face cache" in server.stderr


def test_serve_f_nproc_splits_the_model_over_processes_with_the_same_answers(
        tiny: Tiny, tmp_path: Path, start_server) -> None:
    import time

    import psutil

    ws = tmp_path / "ws.yaml"
    ws.write_text(workspace_yaml("ws-split", {"a1": "0.3", "a2": "0.9"}))
    server = start_server("serve", "-f", str(ws), "--model", str(tiny.model), "--adapter-dir", str(tiny.adapters),
                          "--nproc", "2")
    server.wait_ready(timeout=180)
    assert server.get("/health") == {"status": "Healthy", "rank": 0, "world_size": 2}
    assert server.post("/v1/completions", GREEDY)["choices"][0]["text"] == in_process_completion(
        tiny, {"a1": 0.3, "a2": 0.9})
    processes = psutil.Process(server.proc.pid).children(recursive=True)
    # kaitoctl sees rank 0 healthy on its own poll, a moment after this test did: wait for its lines.
    deadline = time.monotonic() + 60
    while server.stdout.count("curl ") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "split over 2 processes" in server.stderr
    assert "tensor-parallel rank 1 of 2" in server.stderr  # the second process loaded its own slice
    curl_lines = [line for line in server.stdout.splitlines() if line.strip().startswith("curl ")]
    assert len(curl_lines) == 2 and '"model": "llama"' in curl_lines[1], server.stdout
    assert server.interrupt() == 0, server.stderr
    _gone, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, server.stderr
    # Rank 0 stopped gracefully and told rank 1 to end: no broken group, no traceback from torchrun, and
    # neither rank aborted in gloo's teardown (gunicorn would say its worker "was sent SIGABRT").
    assert "Traceback" not in server.stderr and "broken" not in server.stderr, server.stderr
    assert "SIGABRT" not in server.stderr and "terminate called" not in server.stderr, server.stderr
    assert "rank 0 of 2: the other ranks were told to stop; exiting (0)" in server.stderr


def test_nproc_that_does_not_divide_the_presets_heads_is_a_usage_error(tiny: Tiny, tmp_path: Path) -> None:
    ws = tmp_path / "ws.yaml"
    ws.write_text(workspace_yaml("ws-13b", {}, preset="llama-2-13b", instance_type="Standard_NC12s_v3")
                  .replace("    name: llama-2-13b\n", "    name: llama-2-13b\n    accessMode: private\n"
                           "    presetOptions:\n      image: r.io/me/llama:1\n"))
    result = run_cli("serve", "-f", str(ws), "--model", str(tiny.model), "--nproc", "3")
    assert result.returncode == 2, result.stderr
    assert ("--nproc 3: llama-2-13b has 40 attention heads and 40 key/value heads, which cannot be split evenly "
            "over 3 processes (tensor parallel); the process count must divide them: 1, 2, 4, 5, 8, 10, 20, 40"
            in result.stderr)
    assert "Traceback" not in result.stderr


def test_a_killed_serve_nproc_leaves_no_server_processes_behind(tiny: Tiny, tmp_path: Path, start_server) -> None:
    import psutil

    ws = tmp_path / "ws.yaml"
    ws.write_text(workspace_yaml("ws-split", {}))
    server = start_server("serve", "-f", str(ws), "--model", str(tiny.model), "--nproc", "2")
    server.wait_ready(timeout=180)
    processes = psutil.Process(server.proc.pid).children(recursive=True)
    assert len(processes) >= 3  # torchrun and its two ranks
    server.proc.kill()  # no chance to clean up: the job must still end with it
    _gone, alive = psutil.wait_procs(processes, timeout=90)
    assert not alive, server.stderr
