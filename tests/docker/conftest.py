"""Fixtures for the image tests: the parsed Dockerfiles, a tiny model and adapter, a fake docker."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Callable

import pytest

from .dockerfile_model import Dockerfile, parse

REPO = Path(__file__).resolve().parents[2]
SERVER_DOCKERFILE = REPO / "docker" / "server" / "Dockerfile"
SERVER_DOCKERIGNORE = REPO / "docker" / "server" / "Dockerfile.dockerignore"
ADAPTER_DOCKERFILE = REPO / "docker" / "adapter" / "Dockerfile"
BIN_DIR = Path(sys.executable).parent  # gunicorn, torchrun, python of this environment


@pytest.fixture(scope="session")
def server_dockerfile() -> Dockerfile:
    return parse(SERVER_DOCKERFILE)


@pytest.fixture(scope="session")
def adapter_dockerfile() -> Dockerfile:
    return parse(ADAPTER_DOCKERFILE)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random few-layer Llama with its tokenizer (the server engineer's builder)."""
    from kaitoctl_server.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A peft LoRA adapter for ``tiny_model``, as ``save_pretrained`` writes it."""
    from kaitoctl_server.tiny import make_lora_adapter

    return make_lora_adapter(tiny_model, tmp_path_factory.mktemp("tiny-adapter"))


@pytest.fixture
def fake_docker(tmp_path: Path) -> tuple[Path, Callable[[], list[list[str]]]]:
    """An executable that records each call's argv (one JSON line) instead of building."""
    log = tmp_path / "docker-calls.jsonl"
    script = tmp_path / "fake-docker"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def calls() -> list[list[str]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return script, calls


def script_env(**extra: str) -> dict[str, str]:
    """Environment for running the docker/ shell scripts with this test environment's Python."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "KAITOCTL_PRESET_REGISTRY")}
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env
