"""Weights fetched at pod start, end to end, against a Hub endpoint on 127.0.0.1 (tests/hubsim.py).

A kaito.sh/v1beta1 Workspace of a gated preset whose weights come at start (llama-3.1-8b-instruct),
with its HF_TOKEN Secret in the same file: kaitoctl renders the init container; the test runs
exactly that container's argv and environment (the Secret's value where the manifest has its
secretKeyRef, HF_ENDPOINT pointing at the local Hub that serves a tiny model under the preset's
repository and pinned revision, the weights volume mapped to a temporary directory); the server
then loads what was fetched and answers. With a wrong token the init step fails with the Hub's
answer, which reaches `kaitoctl apply`'s output through the pod's termination message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hubsim import HubSim
from kubesim import KubeSim
from cluster.conftest import Runner, gpu_node

PRESET = "llama-3.1-8b-instruct"
REPO, REVISION = "meta-llama/Llama-3.1-8B-Instruct", "0e9e39f249a1"
COMMIT = REVISION + "0" * 28
GOOD_TOKEN = "hf_good_token_for_the_test"
ITYPE = "Standard_NC24ads_A100_v4"
SERVER_IMAGE = "ghcr.io/kaitoctl/kaitoctl-server:0.1.0"


def workspace_file(tmp_path: Path, token: str) -> Path:
    docs = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token"}, "type": "Opaque",
         "stringData": {"HF_TOKEN": token}},
        {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "llama"},
         "resource": {"instanceType": ITYPE, "labelSelector": {"matchLabels": {"apps": "llm"}}},
         "inference": {"preset": {"name": PRESET, "presetOptions": {"modelAccessSecret": "hf-token"}}}},
    ]
    path = tmp_path / f"ws-{token[-4:]}.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def rendered(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, "-m", "kaitoctl", "render", "-f", str(path), "-o", "json"],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)["items"]


def init_step(objs: list[dict[str, Any]], secrets: dict[str, str], hub: HubSim, weights: Path,
              term: Path) -> tuple[list[str], dict[str, str]]:
    """The rendered fetch init container's argv and environment, as the kubelet would run them here."""
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    init = next(c for c in pod["initContainers"] if c["name"] == "kaitoctl-fetch-weights")
    mount = next(m["mountPath"] for m in init["volumeMounts"] if m["name"] == "weights")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "KAITOCTL_", "TRANSFORMERS_"))}
    for item in init["env"]:
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]  # never a literal: the Secret's value, as the kubelet does
            env[item["name"]] = secrets[f"{ref['name']}/{ref['key']}"]
        else:
            env[item["name"]] = item["value"].replace("/tmp", str(weights.parent / "tmp"))
    env["HF_ENDPOINT"] = hub.url
    argv = [sys.executable if part == "python" else part for part in init["command"]]
    args = [str(weights) if part == mount else part for part in init["args"]]
    return argv + args + ["--termination-log", str(term)], env


def run_init_step(objs: list[dict[str, Any]], secrets: dict[str, str], hub: HubSim, weights: Path,
                  term: Path) -> subprocess.CompletedProcess[str]:
    """Run the rendered fetch init container's command to its end."""
    argv, env = init_step(objs, secrets, hub, weights, term)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kaitoctl_server.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("hub") / "tiny-llama", "llama")


def test_weights_fetched_at_start_then_served(tmp_path: Path, tiny_repo: Path) -> None:
    path = workspace_file(tmp_path, GOOD_TOKEN)
    objs = rendered(path)
    assert GOOD_TOKEN not in json.dumps(objs)  # render never prints a Secret's value
    weights = tmp_path / "weights"
    # The Hub's branch is "main"; the catalog's 12-character pin resolves as a commit prefix.
    with HubSim(REPO, "main", COMMIT, tiny_repo, token=GOOD_TOKEN) as hub:
        result = run_init_step(objs, {"hf-token/HF_TOKEN": GOOD_TOKEN}, hub, weights, tmp_path / "term")
        assert result.returncode == 0, result.stderr
        files = [path for method, path in hub.requests if method == "GET" and "/resolve/" in path]
        assert files and all(path.startswith(f"/{REPO}/resolve/{COMMIT}/") for path in files)  # the full commit
        assert f"fetch: done: {REPO}@{REVISION}" in result.stdout
        assert "[1/" in result.stdout  # progress lines in the pod log
        # A restarted init container finds the finished fetch and downloads nothing.
        before = len(hub.requests)
        again = run_init_step(objs, {"hf-token/HF_TOKEN": GOOD_TOKEN}, hub, weights, tmp_path / "term")
        assert again.returncode == 0 and "already" in again.stdout and len(hub.requests) == before

    from kaitoctl_server.app import create_app
    from kaitoctl_server.config import ServerConfig
    from kaitoctl_server.loader import load_served_model

    main = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in main["env"] if "value" in e}
    assert env["KAITOCTL_MODEL"] == "/workspace/weights"  # the server loads what the init step fetched
    config = ServerConfig(model_dir=str(weights), pipeline="text-generation")
    app = create_app(config, served=load_served_model(config))
    response = app.test_client().post("/v1/completions", json={"model": "x", "prompt": "hello", "max_tokens": 3})
    assert response.status_code == 200, response.json
    assert response.json["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize("token,expected", [
    ("hf_wrong", "answered HTTP 401: Invalid credentials in Authorization header"),
])
def test_wrong_token_fails_the_rollout_with_the_hubs_answer(tmp_path: Path, tiny_repo: Path, token: str,
                                                            expected: str) -> None:
    path = workspace_file(tmp_path, token)
    objs = rendered(path)
    with HubSim(REPO, REVISION, COMMIT, tiny_repo, token=GOOD_TOKEN) as hub:
        result = run_init_step(objs, {"hf-token/HF_TOKEN": token}, hub, tmp_path / "weights", tmp_path / "term")
    assert result.returncode == 1
    message = (tmp_path / "term").read_text()
    assert expected in message and token not in message
    # The pod's init container fails as the real one did; its termination message reaches apply.
    with KubeSim(tick_seconds=0.02) as sim:
        gpu_node(sim, gpus=1, instance_type=ITYPE)
        sim.set_image_behaviour(SERVER_IMAGE, "init_error", log=result.stdout + result.stderr,
                                termination_message=message)
        applied = Runner(sim)("apply", "-f", str(path), "--timeout", "60s")
        assert applied.returncode == 6, applied.stderr
        assert "kaitoctl: error: the weights download (init container kaitoctl-fetch-weights) failed (Error, exit " \
               "code 1)" in applied.stderr
        assert expected in applied.stderr
        assert token not in applied.stderr + applied.stdout
        assert sim.get("Secret", "default", "hf-token") is not None  # applied with the workspace


def test_revision_not_found_says_so(tmp_path: Path, tiny_repo: Path) -> None:
    objs = rendered(workspace_file(tmp_path, GOOD_TOKEN))
    with HubSim(REPO, "somethingelse", COMMIT.replace("0e9e", "ffff"), tiny_repo, token=GOOD_TOKEN) as hub:
        result = run_init_step(objs, {"hf-token/HF_TOKEN": GOOD_TOKEN}, hub, tmp_path / "weights", tmp_path / "term")
    assert result.returncode == 1
    assert (tmp_path / "term").read_text().startswith(f"fetch failed: revision {REVISION} of {REPO} not found: ")
    assert "HTTP 404: Invalid rev id: 0e9e39f249a1" in (tmp_path / "term").read_text()


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path: Path, tiny_repo: Path) -> None:
    import shutil

    objs = rendered(workspace_file(tmp_path, GOOD_TOKEN))
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo)
    # huggingface_hub writes in 10 MiB chunks: a file big enough that the drop comes after one was written.
    (repo / "extra.safetensors").write_bytes(os.urandom(12 * 2**20))
    weights = tmp_path / "weights"
    with HubSim(REPO, REVISION, COMMIT, repo, token=GOOD_TOKEN, cut=("extra.safetensors", 11 * 2**20)) as hub:
        result = run_init_step(objs, {"hf-token/HF_TOKEN": GOOD_TOKEN}, hub, weights, tmp_path / "term")
        assert result.returncode == 0, result.stderr
        assert hub.ranges == [("extra.safetensors", f"bytes={10 * 2**20}-")]  # resumed, not fetched again
    assert (weights / "extra.safetensors").read_bytes() == (repo / "extra.safetensors").read_bytes()


def test_a_killed_init_container_goes_on_after_its_restart(tmp_path: Path, tiny_repo: Path) -> None:
    # The kubelet restarts a killed init container (OOM, a node hiccup) in the same pod: the emptyDir
    # is still there. The restart fetches only the files the killed attempt had not finished, and
    # removes the partial file it left (huggingface_hub cannot resume another process's partial file).
    import shutil
    import time

    objs = rendered(workspace_file(tmp_path, GOOD_TOKEN))
    repo = tmp_path / "repo"
    shutil.copytree(tiny_repo, repo)
    last = "zz-extra.safetensors"                  # fetched last (files go in name order)
    (repo / last).write_bytes(os.urandom(12 * 2**20))
    weights = tmp_path / "weights"
    secrets = {"hf-token/HF_TOKEN": GOOD_TOKEN}
    with HubSim(REPO, REVISION, COMMIT, repo, token=GOOD_TOKEN, stall=(last, 11 * 2**20)) as hub:
        argv, env = init_step(objs, secrets, hub, weights, tmp_path / "term")
        first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert hub.stalled.wait(timeout=120), "the download never reached the stalled file"
            partial: list[Path] = []
            deadline = time.monotonic() + 60
            while not partial and time.monotonic() < deadline:  # huggingface_hub writes 10 MiB chunks
                partial = [p for p in weights.rglob("*.incomplete") if p.stat().st_size >= 10 * 2**20]
                time.sleep(0.05)
            assert partial, sorted(str(p) for p in weights.rglob("*"))
        finally:
            first.kill()                            # SIGKILL: no cleanup, as a killed container
            first.communicate(timeout=30)
        done_before = {path for method, path in hub.requests if method == "GET" and "/resolve/" in path}
        done_before.discard(f"/{REPO}/resolve/{COMMIT}/{last}")
        assert done_before and not (weights / last).exists()
        hub.requests.clear()
        result = run_init_step(objs, secrets, hub, weights, tmp_path / "term")
        assert result.returncode == 0, result.stderr
    fetched_again = {path for method, path in hub.requests if method == "GET" and "/resolve/" in path}
    assert fetched_again == {f"/{REPO}/resolve/{COMMIT}/{last}"}   # the finished files were kept
    assert "fetch: removed 1 partial file(s) (10.0 MiB) an interrupted earlier attempt left" in result.stdout
    assert not list(weights.rglob("*.incomplete"))
    assert (weights / last).read_bytes() == (repo / last).read_bytes()
    assert f"fetch: done: {REPO}@{REVISION}" in result.stdout


def test_fetch_failure_reasons() -> None:
    import errno

    from kaitoctl_server.fetch import choose_files, reason

    full = OSError(errno.ENOSPC, "No space left on device")
    assert reason(full, "o/m", "abc", "/w", "https://hub", None) == (
        "disk full while writing the weights of o/m into /w: give the weights volume more room (the node's disk, or "
        "the emptyDir sizeLimit)")
    wrapped = RuntimeError("download failed")
    wrapped.__cause__ = full
    assert reason(wrapped, "o/m", "abc", "/w", "https://hub", None).startswith("disk full")
    assert choose_files(["model.safetensors", "pytorch_model.bin", "original/consolidated.pth", "config.json",
                         ".gitattributes", "tokenizer.json"]) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_kaitoctl_serve_downloads_the_presets_pinned_revision_then_serves_it_offline(tmp_path: Path,
                                                                                    tiny_repo: Path) -> None:
    # `kaitoctl serve -f` without --model fetches the preset's model as the pods do: at the catalog's
    # pinned commit (a 12-character prefix the Hub resolves), never the default branch; a later run
    # with HF_HUB_OFFLINE finds that snapshot in the cache.
    from local.conftest import Server, free_port

    path = workspace_file(tmp_path, GOOD_TOKEN)
    cache = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    # The Hub's only branch is not "main" here: a download of the default branch would fail.
    with HubSim(REPO, "release", COMMIT, tiny_repo, token=GOOD_TOKEN) as hub:
        server = Server(["serve", "-f", str(path), "--port", str(port := free_port())], port, tmp_path,
                        HF_HUB_OFFLINE="0", HF_ENDPOINT=hub.url, HF_TOKEN=GOOD_TOKEN, **cache)
        try:
            server.wait_ready()
            answer = server.post("/v1/completions", {"model": REPO, "prompt": "hello", "max_tokens": 3})
            assert answer["usage"]["completion_tokens"] >= 1
        finally:
            server.close()
        files = [p for method, p in hub.requests if "/resolve/" in p]
        assert files and all(p.startswith(f"/{REPO}/resolve/{COMMIT}/") for p in files), files
        assert f"downloading {REPO}@{REVISION} from the Hugging Face Hub" in server.stderr
        assert "default branch" not in server.stderr
    offline = Server(["serve", "-f", str(path), "--port", str(port := free_port())], port, tmp_path,
                     HF_HUB_OFFLINE="1", **cache)
    try:
        offline.wait_ready()
    finally:
        offline.close()
    assert f"using {REPO}@{REVISION} from the Hugging Face cache" in offline.stderr
