"""docker/server/weights.py: which Hub files go into an image, and weights the non-root server can read."""

from __future__ import annotations

import importlib.util
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import REPO


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kaitoctl_image_weights", REPO / "docker" / "server" / "weights.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


weights = _load()

FALCON_LISTING = [
    ".gitattributes", "README.md", "config.json", "configuration_falcon.py", "generation_config.json",
    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    "modeling_falcon.py", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
    "pytorch_model.bin.index.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
]
MISTRAL_LISTING = [
    "config.json", "consolidated.safetensors", "generation_config.json", "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors", "model.safetensors.index.json",
    "params.json", "special_tokens_map.json", "tokenizer.json", "tokenizer.model", "tokenizer.model.v3",
    "tokenizer_config.json", "original/consolidated.00.pth", "onnx/model.onnx",
]


def test_safetensors_are_chosen_over_pickles_and_docs_are_left_out() -> None:
    chosen = weights.select_files(FALCON_LISTING)
    assert chosen == [
        "config.json", "configuration_falcon.py", "generation_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
        "modeling_falcon.py", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
    ]


def test_native_checkpoints_and_subfolders_are_left_out() -> None:
    chosen = weights.select_files(MISTRAL_LISTING)
    assert "consolidated.safetensors" not in chosen
    assert not any("/" in name for name in chosen)
    assert {"tokenizer.model", "tokenizer.model.v3", "model-00003-of-00003.safetensors"} <= set(chosen)


def test_pickle_weights_are_taken_only_when_there_is_nothing_else() -> None:
    chosen = weights.select_files(["config.json", "pytorch_model.bin", "tokenizer.json", "training_args.bin"])
    assert chosen == ["config.json", "pytorch_model.bin", "tokenizer.json"]


def test_a_repository_without_weights_is_refused() -> None:
    with pytest.raises(weights.WeightsError, match="no model.safetensors"):
        weights.select_files(["config.json", "README.md", "original/consolidated.00.pth"])


@pytest.mark.parametrize("revision", ["", "user-built"])
def test_fetch_requires_a_pinned_revision(tmp_path: Path, revision: str) -> None:
    with pytest.raises(weights.WeightsError, match="MODEL_REVISION"):
        weights.fetch("tiiuae/falcon-7b", revision, tmp_path)


def test_finalize_makes_safetensors_readable_by_the_server_user(tiny_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "weights"
    model.mkdir()
    for file in tiny_model.iterdir():
        (model / file.name).write_bytes(file.read_bytes())
        (model / file.name).chmod(0o600)  # as safetensors leaves them
    (model / ".cache" / "huggingface").mkdir(parents=True)
    (model / ".cache" / "huggingface" / "download.lock").write_text("")
    summary = weights.finalize(model)
    assert not (model / ".cache").exists()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in model.iterdir()}
    assert modes and set(modes.values()) == {0o644}, modes  # readable by uid 1000, writable by nobody but root
    assert stat.S_IMODE(model.stat().st_mode) == 0o755
    assert summary.files == len(modes) and summary.total_bytes == sum(p.stat().st_size for p in model.iterdir())


def test_finalize_refuses_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    result = subprocess.run(
        [sys.executable, str(REPO / "docker" / "server" / "weights.py"), "finalize", str(tmp_path)],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "config.json is missing" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(weights.WeightsError, match="no \\*.safetensors"):
        weights.finalize(tmp_path)
