"""Real processes: the pods' gunicorn command, `python -m kaitoctl_server`, and `kaitoctl serve`.

Each is started on 127.0.0.1 with a free port, requested from this process, and
stopped with a signal; it must exit cleanly.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import SERVED_STRENGTHS, free_port

BIN = Path(sys.executable).parent
STARTUP_DEADLINE_S = 180  # a generous wait for imports on a busy machine; never asserted on


def server_env(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITOCTL_")}
    env.update(changes)
    return env


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def wait_ready(base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            status, body = get(base + "/health")
            if status == 200:
                return
            assert (status, body["status"]) == (503, "Loading")  # up, not ready yet: the probe contract
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"server not ready in time:\n{log.read_text()}")


def stop(proc: subprocess.Popen, sig: int, log: Path) -> str:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"server did not stop on signal {sig}:\n{log.read_text()}")
    return log.read_text()


def adapters_json() -> str:
    return json.dumps([{"name": n, "strength": s} for n, s in SERVED_STRENGTHS.items()])


def test_gunicorn_pod_command_serves_the_merged_model_and_stops_on_sigterm(tiny, client, tmp_path):
    """The exact container command of the pods, with two adapters from KAITOCTL_ADAPTERS."""
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = server_env(KAITOCTL_MODEL=str(tiny.llama), KAITOCTL_ADAPTER_DIR=str(tiny.adapters),
                     KAITOCTL_ADAPTERS=adapters_json(), KAITOCTL_BIND=f"127.0.0.1:{port}", KAITOCTL_THREADS="4")
    proc = start([str(BIN / "gunicorn"), "--config", "python:kaitoctl_server.gunicorn_conf", "kaitoctl_server.wsgi:app"],
                 env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, log)
        body = {"prompt": "The quick brown fox", "return_full_text": False,
                "generate_kwargs": {"do_sample": False, "max_new_tokens": 10, "min_new_tokens": 10}}
        # same model, same adapters and strengths: the same tokens as the in-process server
        assert post(base + "/chat", body) == client.post("/chat", json=body).json

        status, models = get(base + "/v1/models")
        assert [(a["name"], a["strength"]) for a in models["data"][0]["adapters"]] == list(SERVED_STRENGTHS.items())

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"}, body=json.dumps(
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "min_tokens": 6, "stream": True}))
        response = conn.getresponse()
        assert response.getheader("Content-Type").startswith("text/event-stream")
        stream = response.read().decode()
        conn.close()
        assert stream.endswith("data: [DONE]\n\n")
        events = [json.loads(block[6:]) for block in stream.split("\n\n")[:-2]]
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        assert events[-1]["choices"][0]["finish_reason"] == "length"
    finally:
        output = stop(proc, signal.SIGTERM, log)
    assert proc.returncode == 0, output
    ready = [line for line in output.splitlines() if "ready: model" in line]
    assert len(ready) == 1 and "a1(r=4, alpha=8, strength=0.7" in ready[0] and "a2(r=8" in ready[0]
    assert "Traceback" not in output


def test_gunicorn_stops_with_the_reason_when_the_model_cannot_load(tmp_path):
    log = tmp_path / "gunicorn.log"
    env = server_env(KAITOCTL_MODEL=str(tmp_path / "missing"), KAITOCTL_ADAPTERS="[]",
                     KAITOCTL_BIND=f"127.0.0.1:{free_port()}")
    proc = start([str(BIN / "gunicorn"), "--config", "python:kaitoctl_server.gunicorn_conf", "kaitoctl_server.wsgi:app"],
                 env, log)
    try:
        proc.wait(timeout=STARTUP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"gunicorn kept running with a missing model:\n{log.read_text()}")
    output = log.read_text()
    assert proc.returncode == 3, output  # gunicorn's worker-boot-error: the pod restarts with this log
    assert f"model directory {tmp_path / 'missing'} does not exist" in output


def test_python_m_kaitoctl_server_runs_the_same_server(tiny, tmp_path):
    port = free_port()
    log = tmp_path / "module.log"
    env = server_env(KAITOCTL_ADAPTER_DIR=str(tiny.adapters))
    proc = start([sys.executable, "-m", "kaitoctl_server", "--model", str(tiny.llama), "--bind", f"127.0.0.1:{port}",
                  "--adapters", json.dumps([{"name": "a2", "strength": 0.5}])], env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, log)
        _, models = get(base + "/v1/models")
        assert [(a["name"], a["strength"]) for a in models["data"][0]["adapters"]] == [("a2", 0.5)]
    finally:
        output = stop(proc, signal.SIGTERM, log)
    assert proc.returncode == 0, output


def test_kaitoctl_serve_merges_adapters_and_stops_on_ctrl_c(tiny, tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    proc = start([str(BIN / "kaitoctl"), "serve", "--model", str(tiny.llama), "--port", str(port),
                  "--adapter", f"a1={tiny.adapter('a1')}:0.7", "--adapter", f"a3={tiny.adapter('a3')}"],
                 server_env(), log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, log)
        _, models = get(base + "/v1/models")
        assert [(a["name"], a["strength"]) for a in models["data"][0]["adapters"]] == [("a1", 0.7), ("a3", 1.0)]
        reply = post(base + "/v1/completions", {"prompt": "hi", "max_tokens": 3, "min_tokens": 3})
        assert reply["usage"]["completion_tokens"] == 3
    finally:
        output = stop(proc, signal.SIGINT, log)
    assert proc.returncode == 0, output
    assert f"at http://127.0.0.1:{port}" in output and "Traceback" not in output


def test_gunicorn_master_never_imports_torch():
    """What the master imports (config module, and the app with --preload) must not touch torch or CUDA."""
    code = ("import sys, kaitoctl_server.gunicorn_conf, kaitoctl_server.wsgi\n"
            "print('TORCH' if 'torch' in sys.modules else 'CLEAN')\n")
    env = server_env(KAITOCTL_MODEL="/nonexistent")  # the app is built; nothing is loaded at import
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "CLEAN", result.stderr


def test_probes_answer_while_every_generation_slot_is_busy_on_gunicorn(tiny, tmp_path):
    """The pods' real server (gunicorn via python -m kaitoctl_server) under more load than it holds.

    With 2 running + 2 queued long generations and more clients than server threads, /health and
    /metrics answer while no generation has finished yet (the old engine lock made them wait behind
    every queued generation), and the excess clients get a 429 with Retry-After at once.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    port = free_port()
    log = tmp_path / "load.log"
    proc = start([sys.executable, "-m", "kaitoctl_server", "--model", str(tiny.llama), "--adapters", "[]",
                  "--bind", f"127.0.0.1:{port}", "--max-batch", "2", "--max-queue", "2"], server_env(), log)
    base = f"http://127.0.0.1:{port}"
    clients = 16  # more than the server's 2 + 2 + 8 threads
    finished: list[int] = []
    rejected: list[tuple[str, str]] = []
    lock = threading.Lock()

    def generate(_: int) -> None:
        body = {"prompt": "hi", "max_tokens": 300, "min_tokens": 300, "temperature": 0}
        request = urllib.request.Request(base + "/v1/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
            with lock:
                finished.append(1)
        except urllib.error.HTTPError as err:
            with lock:
                rejected.append((str(err.code), err.headers.get("Retry-After", "")))

    def metric(name: str) -> float:
        with urllib.request.urlopen(base + "/metrics", timeout=30) as response:
            lines = response.read().decode().splitlines()
        return float(next(line.split()[1] for line in lines if line.startswith(name + " ")))

    try:
        wait_ready(base, proc, log)
        with ThreadPoolExecutor(max_workers=clients) as pool:
            futures = [pool.submit(generate, i) for i in range(clients)]
            deadline = time.monotonic() + STARTUP_DEADLINE_S
            def full() -> bool:  # 2 in the batch, 2 queued (just after submission all 4 may still be queued)
                return metric("vllm:num_requests_running") == 2 and metric("vllm:num_requests_waiting") == 2

            while not full() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert full()
            started = time.monotonic()
            status, body = get(base + "/health")
            health_seconds = time.monotonic() - started
            with lock:
                done_when_healthy = len(finished)
            for future in futures:
                future.result()
    finally:
        output = stop(proc, signal.SIGTERM, log)
    assert (status, body) == (200, {"status": "Healthy", "rank": 0, "world_size": 1})
    assert done_when_healthy == 0, f"/health waited for a generation to finish ({health_seconds:.1f} s)"
    assert len(finished) >= 4 and len(finished) + len(rejected) == clients
    assert rejected and all(code == "429" and retry for code, retry in rejected)
    assert proc.returncode == 0, output
