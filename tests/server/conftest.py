"""Tiny models, adapters and one served app, built once per session (no network, no GPU).

Layout under one temporary directory:

    llama/            tiny random Llama (context 1024)
    gpt2/             tiny random GPT-2 (Conv1D, fan_in_fan_out)
    adapters/a1..a3   LoRA adapters for llama (different ranks, alphas, targets; a3 uses rsLoRA)
    gpt2-adapters/g1..g3  the same for gpt2

The served app merges a1 at strength 0.7 and a2 at 0.4.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import pytest

LLAMA_ADAPTERS = {
    # name: (r, alpha, targets, seed, rslora)
    "a1": (4, 8, ("q_proj", "v_proj"), 1, False),
    "a2": (8, 16, ("q_proj", "k_proj", "v_proj", "o_proj"), 2, False),
    "a3": (2, 4, ("gate_proj", "up_proj", "down_proj"), 3, True),
}
GPT2_ADAPTERS = {
    "g1": (4, 8, ("c_attn",), 1, False),
    "g2": (8, 32, ("c_attn", "c_proj", "c_fc"), 2, False),
    "g3": (2, 2, ("c_fc",), 3, True),
}
SERVED_STRENGTHS = {"a1": 0.7, "a2": 0.4}


@dataclass
class TinyWorld:
    root: Path
    llama: Path
    gpt2: Path
    adapters: Path  # llama adapters: adapters/<name>
    gpt2_adapters: Path

    def adapter(self, name: str) -> Path:
        return (self.gpt2_adapters if name.startswith("g") else self.adapters) / name


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyWorld:
    from kaitoctl_server.tiny import make_lora_adapter, make_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    world = TinyWorld(root, root / "llama", root / "gpt2", root / "adapters", root / "gpt2-adapters")
    make_tiny_model(world.llama, "llama")
    make_tiny_model(world.gpt2, "gpt2", max_position_embeddings=256)
    for base, table, where in ((world.llama, LLAMA_ADAPTERS, world.adapters),
                               (world.gpt2, GPT2_ADAPTERS, world.gpt2_adapters)):
        for name, (r, alpha, targets, seed, rslora) in table.items():
            make_lora_adapter(base, where / name, r=r, alpha=alpha, targets=targets, seed=seed, use_rslora=rslora)
    return world


@pytest.fixture(scope="session")
def served_config(tiny: TinyWorld):
    from kaitoctl_server.config import AdapterRef, ServerConfig

    return ServerConfig(
        model_dir=str(tiny.llama),
        adapters=tuple(AdapterRef(n, str(tiny.adapter(n)), s) for n, s in SERVED_STRENGTHS.items()),
    )


@pytest.fixture(scope="session")
def served(served_config):
    from kaitoctl_server.loader import load_served_model

    return load_served_model(served_config)


@pytest.fixture(scope="session")
def app(served_config, served):
    from kaitoctl_server.app import create_app

    return create_app(served_config, served=served)


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def make_client(served_config, served):
    """A test client of a new app over the session's model, with some config fields changed."""
    from kaitoctl_server.app import create_app

    def make(**changes):
        return create_app(served_config.with_changes(**changes), served=served).test_client()

    return make


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve ``app`` on a real socket (werkzeug's threaded server, as `kaitoctl serve` runs it)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def live_url(app) -> Iterator[str]:
    with serving(app) as url:
        yield url


def greedy_ids(model, tokenizer, prompt: str, new_tokens: int = 12) -> list[int]:
    """Greedy continuation of ``prompt`` straight from ``generate`` (the reference the server must match)."""
    import torch

    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             pad_token_id=tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


def open_stream(live_url: str, path: str, body: dict):
    """POST ``body`` to a live server and return (connection, response) with the stream unread."""
    url = urlparse(live_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    return conn, response
