"""Local mode fixtures: a tiny model with two adapters, workspace files, and `kaitoctl` run as a real process.

Nothing is downloaded and no GPU is used: the model is a random tiny Llama
(kaitoctl_server.tiny), built once per session.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAITOCTL = Path(sys.executable).parent / "kaitoctl"
# name: (r, alpha, targets, seed)
ADAPTERS = {
    "a1": (4, 8, ("q_proj", "v_proj"), 1),
    "a2": (8, 16, ("q_proj", "k_proj", "v_proj", "o_proj"), 2),
}


@dataclass
class Tiny:
    model: Path
    adapters: Path  # adapters/<name>, the pod's layout

    def adapter(self, name: str) -> Path:
        return self.adapters / name


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    from kaitoctl_server.tiny import make_lora_adapter, make_tiny_model

    root = tmp_path_factory.mktemp("local-tiny")
    world = Tiny(root / "llama", root / "adapters")
    make_tiny_model(world.model, "llama")
    for name, (r, alpha, targets, seed) in ADAPTERS.items():
        make_lora_adapter(world.model, world.adapter(name), r=r, alpha=alpha, targets=targets, seed=seed)
    return world


def workspace_yaml(name: str, adapters: dict[str, str], *, preset: str = "falcon-7b",
                   instance_type: str = "Standard_NC12s_v3") -> str:
    """One Workspace document with ``adapters`` {name: strength}, as a user would write it."""
    lines = [
        "apiVersion: kaito.sh/v1alpha1",
        "kind: Workspace",
        "metadata:",
        f"  name: {name}",
        "resource:",
        f"  instanceType: {instance_type}",
        "  labelSelector:",
        "    matchLabels:",
        "      apps: llm",
        "inference:",
        "  preset:",
        f"    name: {preset}",
    ]
    if adapters:
        lines.append("  adapters:")
        for adapter, strength in adapters.items():
            lines += [
                "    - source:",
                f"        name: {adapter}",
                f"        image: registry.example.com/adapters/{adapter}:1",
                f'      strength: "{strength}"',
            ]
    return "\n".join(lines) + "\n"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITOCTL_")}
    env.update(NO_COLOR="1", COLUMNS="400", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KAITOCTL), *args], cwd=ROOT, env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout, check=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """A `kaitoctl` process that serves on 127.0.0.1:<port>, its output in files."""

    def __init__(self, args: list[str], port: int, workdir: Path, **env: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.out_path, self.err_path = workdir / "server.out", workdir / "server.err"
        self._out, self._err = self.out_path.open("w"), self.err_path.open("w")
        self.proc = subprocess.Popen([str(KAITOCTL), *args], cwd=ROOT, env=cli_env(**env), stdout=self._out,
                                     stderr=self._err, text=True)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.stderr}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        pytest.fail(f"server not ready after {timeout}s:\n{self.stderr}")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as answer:
            return json.loads(answer.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.loads(answer.read())

    def interrupt(self, timeout: float = 60) -> int:
        """Ctrl-C, as a terminal sends it; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._out.close()
        self._err.close()


@pytest.fixture
def start_server(tmp_path: Path):
    started: list[Server] = []

    def start(*args: str, **env: str) -> Server:
        """``kaitoctl *args --port <a free port>``."""
        port = free_port()
        server = Server([*args, "--port", str(port)], port, tmp_path, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
