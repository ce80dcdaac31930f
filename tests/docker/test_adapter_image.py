"""The adapter image: peft's output under /data of a FROM scratch image, and the script that builds it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import ADAPTER_DOCKERFILE, REPO, script_env
from .dockerfile_model import Dockerfile, copy_sources

BUILD = REPO / "docker" / "adapter" / "build.sh"
IMAGE = "myregistry.azurecr.io/adapters/tiny-lora:0.1.0"


def _build(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(BUILD), *args], capture_output=True, text=True, env=script_env(**env), timeout=60)


def _copy_of(adapter_dir: Path, tmp_path: Path, *, drop: tuple[str, ...] = (), add: dict[str, str] | None = None) -> Path:
    out = tmp_path / "adapter"
    out.mkdir()
    for file in adapter_dir.iterdir():
        if file.name not in drop:
            (out / file.name).write_bytes(file.read_bytes())
    for name, text in (add or {}).items():
        (out / name).write_text(text)
    return out


def test_image_is_from_scratch_by_default(adapter_dockerfile: Dockerfile) -> None:
    assert adapter_dockerfile.global_args["BASE_IMAGE"] == "scratch"
    assert adapter_dockerfile.final.base == "scratch"
    assert len(adapter_dockerfile.stages) == 1
    assert not adapter_dockerfile.final.all("RUN")  # nothing to run in an image without a shell


def test_peft_output_lands_under_data_readable_by_non_root(adapter_dockerfile: Dockerfile, tiny_adapter: Path) -> None:
    (copy,) = adapter_dockerfile.final.all("COPY")
    sources, dest = copy_sources(copy)
    assert dest == "/data/"
    assert copy.flags.get("chmod") == ["0644"]  # safetensors saves 0600; the copying init container is uid 1000
    # what peft's save_pretrained writes is exactly what the Dockerfile copies
    for source in sources:
        assert (tiny_adapter / source).is_file(), f"peft's output has no {source}"
    assert sources == ["adapter_config.json", "adapter_model.safetensors"]


def test_build_script_builds_with_the_peft_directory_as_context(tiny_adapter: Path, fake_docker) -> None:
    docker, calls = fake_docker
    result = _build(str(tiny_adapter), IMAGE, DOCKER=str(docker))
    assert result.returncode == 0, result.stderr
    assert calls() == [["build", "--file", str(ADAPTER_DOCKERFILE), "--tag", IMAGE, str(tiny_adapter)]]
    assert f"image: {IMAGE}" in result.stderr


def test_build_script_pushes_and_can_use_a_shell_base_for_old_kaito(tiny_adapter: Path, fake_docker) -> None:
    docker, calls = fake_docker
    result = _build("--push", "--base", "busybox:1.36", str(tiny_adapter) + "/", IMAGE, DOCKER=str(docker))
    assert result.returncode == 0, result.stderr
    build, push = calls()
    assert build[build.index("--build-arg") + 1] == "BASE_IMAGE=busybox:1.36"
    assert build[-1] == str(tiny_adapter)
    assert push == ["push", IMAGE]


def test_pickle_adapters_are_refused(tiny_adapter: Path, tmp_path: Path, fake_docker) -> None:
    docker, calls = fake_docker
    directory = _copy_of(tiny_adapter, tmp_path, drop=("adapter_model.safetensors",), add={"adapter_model.bin": "pickle"})
    result = _build(str(directory), IMAGE, DOCKER=str(docker))
    assert result.returncode == 1
    assert "adapter_model.bin" in result.stderr and "safe_serialization=True" in result.stderr
    assert calls() == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"drop": ("adapter_config.json",)}, "adapter_config.json not found"),
        ({"drop": ("adapter_model.safetensors",)}, "adapter_model.safetensors not found"),
        ({"add": {"adapter_config.json": "{not json"}}, "is not valid JSON"),
        ({"add": {"adapter_config.json": json.dumps({"peft_type": "IA3"})}}, "only LoRA adapters"),
    ],
)
def test_directories_that_are_not_a_lora_adapter_are_refused(
    tiny_adapter: Path, tmp_path: Path, fake_docker, change: dict, message: str
) -> None:
    docker, calls = fake_docker
    directory = _copy_of(tiny_adapter, tmp_path, **change)
    result = _build(str(directory), IMAGE, DOCKER=str(docker))
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert calls() == []


def test_several_adapters_saved_together_point_at_their_subdirectories(tiny_adapter: Path, tmp_path: Path) -> None:
    parent = tmp_path / "saved"
    (parent / "first").mkdir(parents=True)
    for file in tiny_adapter.iterdir():
        (parent / "first" / file.name).write_bytes(file.read_bytes())
    result = _build(str(parent), IMAGE)
    assert result.returncode == 1
    assert f"pass one of: {parent}/first" in result.stderr


@pytest.mark.parametrize("image", ["tiny-lora:0.1.0", "myregistry.azurecr.io/tiny-lora", "reg.io/a@sha256:abc"])
def test_image_references_kaito_would_reject_are_refused(tiny_adapter: Path, image: str, fake_docker) -> None:
    docker, calls = fake_docker
    result = _build(str(tiny_adapter), image, DOCKER=str(docker))
    assert result.returncode == 1 and "registry/name:tag" in result.stderr
    assert calls() == []
