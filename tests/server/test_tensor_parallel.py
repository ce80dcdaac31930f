"""Tensor parallelism on CPU with gloo: a model split over two torchrun processes (docs/distributed.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kaitoctl_server.config import AdapterRef, ServerConfig
from kaitoctl_server.loader import load_served_model

HERE = Path(__file__).parent
# Two adapters of different ranks (8, 2) and strengths, one rsLoRA, touching
# column-parallel (q/k/v, gate/up) and row-parallel (o, down) projections.
TP_ADAPTERS = {"a2": -0.6, "a3": 1.5}


def torchrun(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def server_env(tiny, strengths: dict[str, float], **extra: str) -> dict[str, str]:
    import json

    env = dict(os.environ)
    env.update(
        KAITOCTL_MODEL=str(tiny.llama),
        KAITOCTL_ADAPTER_DIR=str(tiny.adapters),
        KAITOCTL_ADAPTERS=json.dumps([{"name": n, "strength": s} for n, s in strengths.items()]),
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def grouped_query_world(tiny, root: Path):
    """A tiny Llama with 2 key/value heads for 4 query heads (as llama-2-70b: 8 for 64), and a2/a3 made for it."""
    from types import SimpleNamespace

    from kaitoctl_server.tiny import make_lora_adapter, make_tiny_model

    from .conftest import LLAMA_ADAPTERS

    make_tiny_model(root / "llama", "llama", num_kv_heads=2)
    for name in TP_ADAPTERS:
        r, alpha, targets, seed, rslora = LLAMA_ADAPTERS[name]
        make_lora_adapter(root / "llama", root / "adapters" / name, r=r, alpha=alpha, targets=targets, seed=seed,
                          use_rslora=rslora)
    return SimpleNamespace(llama=root / "llama", adapters=root / "adapters",
                           adapter=lambda name: root / "adapters" / name)


@pytest.mark.parametrize("heads", ["multi-head", "grouped-query"])
def test_sharded_merge_equals_the_unsharded_merge(tiny, tmp_path, heads):
    if heads == "grouped-query":
        tiny = grouped_query_world(tiny, tmp_path / "gqa")
    out = tmp_path / "gathered.pt"
    run = torchrun(["--standalone", "--nproc_per_node=2", str(HERE / "tp_shard_dump.py"), str(out)],
                   server_env(tiny, TP_ADAPTERS))
    assert run.returncode == 0, run.stderr[-4000:]
    dumped = torch.load(out)
    single = load_served_model(ServerConfig(
        model_dir=str(tiny.llama),
        adapters=tuple(AdapterRef(n, str(tiny.adapter(n)), s) for n, s in TP_ADAPTERS.items()),
    )).model
    if heads == "grouped-query":
        assert dumped["weights"]["model.layers.0.self_attn.k_proj.weight"].shape == (32, 64)  # 2 heads of 16
    expected = dict(single.named_parameters())
    assert dumped["weights"].keys() == expected.keys()
    for name, weight in expected.items():
        assert torch.equal(dumped["weights"][name], weight.detach()), name
    # Split, not copied: column-parallel rows, row-parallel columns, vocabulary rows of the embeddings.
    placements = dumped["placements"]
    assert placements["model.layers.0.self_attn.q_proj.weight"] == "(Shard(dim=0),)"
    assert placements["model.layers.0.self_attn.o_proj.weight"] == "(Shard(dim=1),)"
    assert placements["model.layers.1.mlp.down_proj.weight"] == "(Shard(dim=1),)"
    whole = sum(w.numel() for w in expected.values())
    assert all(held / whole <= 0.55 for held in dumped["held"]), (dumped["held"], whole)
    # ... and the adapters really changed the weights the test compares.
    base = load_served_model(ServerConfig(model_dir=str(tiny.llama))).model
    assert not torch.equal(base.get_submodule("model.layers.0.self_attn.o_proj").weight,
                           expected["model.layers.0.self_attn.o_proj.weight"])
    assert not torch.equal(base.get_submodule("model.layers.1.mlp.down_proj").weight,
                           expected["model.layers.1.mlp.down_proj.weight"])


def test_a_process_count_that_does_not_divide_the_heads_is_refused_before_loading(tiny, monkeypatch):
    from kaitoctl_server.errors import StartupError

    monkeypatch.setenv("WORLD_SIZE", "3")  # the tiny Llama has 4 heads
    with pytest.raises(StartupError, match=r"4 attention heads and 4 key/value heads.*WORLD_SIZE=3.*: 1, 2, 4$"):
        load_served_model(ServerConfig(model_dir=str(tiny.llama)))


# --- two "nodes" on this machine: the pods' entry point under torchrun, one process per node ----------


class Node:
    """One torchrun launcher, ``--nnodes=2 --nproc_per_node=1``, running ``python -m kaitoctl_server``."""

    def __init__(self, rank: int, master_port: int, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
             f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={master_port}",
             "-m", "kaitoctl_server"],
            env={**env, "KAITOCTL_BIND": f"127.0.0.1:{self.port}"}, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def health(self) -> tuple[int, dict]:
        return http("GET", self.url + "/health", timeout=5)

    def kill(self) -> None:
        """The node dies: its launcher and every process it started (torchrun puts workers in their own sessions)."""
        import psutil

        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for process in family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=30)
        self._log.close()


def http(method: str, url: str, body: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def stream_text(url: str, body: dict, timeout: float = 60) -> tuple[str, list[str]]:
    """(concatenated text, raw events) of an OpenAI completions stream."""
    import json
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps({**body, "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    events, text = [], ""
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        for line in answer:
            line = line.decode().strip()
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            if line[6:] != "[DONE]":
                choices = json.loads(line[6:]).get("choices") or [{}]
                text += choices[0].get("text") or ""
    return text, events


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check, what: str, nodes: list[Node], timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in nodes:
            if node.proc.poll() is not None:
                pytest.fail(f"a node exited with {node.proc.returncode}:\n{node.log.read_text()[-4000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"not {what} after {timeout}s:\n" + "\n".join(n.log.read_text()[-3000:] for n in nodes))


@pytest.fixture()
def two_nodes(tiny, tmp_path):
    env = server_env(tiny, TP_ADAPTERS, KAITOCTL_TP_HEARTBEAT="0.5", KAITOCTL_TP_TIMEOUT="30",
                     KAITOCTL_THREADS="8")
    master = free_port()
    nodes = [Node(rank, master, env, tmp_path / f"node{rank}.log") for rank in (0, 1)]
    try:
        wait_until(lambda: all(node.health()[0] == 200 for node in nodes), "healthy", nodes)
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def reference_app(tiny):
    from kaitoctl_server.app import create_app

    config = ServerConfig(
        model_dir=str(tiny.llama),
        adapters=tuple(AdapterRef(n, str(tiny.adapter(n)), s) for n, s in TP_ADAPTERS.items()),
    )
    return create_app(config, served=load_served_model(config)).test_client()


GREEDY_CHAT = {"prompt": "Kubernetes schedules pods", "generate_kwargs": {"do_sample": False, "max_new_tokens": 10}}
GREEDY = {"prompt": "Kubernetes schedules pods", "max_tokens": 10, "temperature": 0}


def test_two_nodes_serve_the_merged_model_split_and_a_dead_node_turns_rank_zero_unhealthy(tiny, two_nodes):
    import concurrent.futures
    import json
    import time
    import urllib.request

    rank0, rank1 = two_nodes
    assert rank0.health() == (200, {"status": "Healthy", "rank": 0, "world_size": 2})
    assert rank1.health() == (200, {"status": "Healthy", "rank": 1, "world_size": 2})

    # Greedy output through /chat, /v1/completions and a stream equals the exactly merged single-process model.
    reference = reference_app(tiny)
    expected_chat = reference.post("/chat", json=GREEDY_CHAT).get_json()["Result"]
    expected = reference.post("/v1/completions", json=GREEDY).get_json()["choices"][0]["text"]
    assert expected and expected != reference_base_text(tiny)  # the adapters change this continuation
    assert http("POST", rank0.url + "/chat", GREEDY_CHAT) == (200, {"Result": expected_chat})
    status, answer = http("POST", rank0.url + "/v1/completions", GREEDY)
    assert status == 200, answer
    assert answer["choices"][0]["text"] == expected
    assert stream_text(rank0.url + "/v1/completions", GREEDY)[0] == expected

    # Three concurrent requests (different prompts and lengths, batched together) all correct.
    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0}
              for p, n in (("The pod", 12), ("A node with GPUs", 7), ("Adapters merge", 15))]
    wanted = [reference.post("/v1/completions", json=b).get_json()["choices"][0]["text"] for b in bodies]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda b: http("POST", rank0.url + "/v1/completions", b), bodies))
    assert [(s, a["choices"][0]["text"]) for s, a in got] == [(200, w) for w in wanted]

    # A client that leaves mid-stream: its row leaves the batch on every rank, and the group stays in step.
    long = {"prompt": "Kubernetes", "max_tokens": 900, "temperature": 0, "min_tokens": 900}
    leaving = urllib.request.urlopen(urllib.request.Request(
        rank0.url + "/v1/completions", data=json.dumps({**long, "stream": True}).encode(),
        headers={"Content-Type": "application/json"}), timeout=60)
    while not leaving.readline().startswith(b"data: "):
        pass
    leaving.close()
    wait_until(lambda: "vllm:num_requests_running 0.0" in metrics(rank0), "cancelled", [rank0], timeout=60)
    status, answer = http("POST", rank0.url + "/v1/completions", GREEDY)
    assert status == 200, answer
    assert answer["choices"][0]["text"] == expected

    # The other node dies during a long generation: the request in flight ends with a 5xx, no hang,
    # and rank 0 reports unhealthy within seconds.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(http, "POST", rank0.url + "/v1/completions", long, 60)
        wait_until(lambda: "vllm:num_requests_running 1.0" in metrics(rank0) or in_flight.done(),
                   "running", [rank0], timeout=60)
        rank1.kill()
        killed = time.monotonic()
        status, answer = in_flight.result(timeout=60)
    assert status >= 500, answer
    wait_until(lambda: rank0.health()[0] == 503, "unhealthy", [rank0], timeout=30)
    status, body = rank0.health()
    assert body["status"] == "Unhealthy" and (body["rank"], body["world_size"]) == (0, 2)
    assert "broken" in body["detail"]
    assert time.monotonic() - killed < 30
    # New requests fail at once instead of waiting on the dead rank.
    assert http("POST", rank0.url + "/v1/completions", GREEDY, timeout=30)[0] >= 500


def reference_base_text(tiny) -> str:
    from kaitoctl_server.app import create_app

    config = ServerConfig(model_dir=str(tiny.llama), adapters=())
    app = create_app(config, served=load_served_model(config)).test_client()
    return app.post("/v1/completions", json=GREEDY).get_json()["choices"][0]["text"]


def metrics(node: Node) -> str:
    import urllib.request

    with urllib.request.urlopen(node.url + "/metrics", timeout=5) as answer:
        return answer.read().decode()
