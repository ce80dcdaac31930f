"""inference.config in the pod: the mounted inference_config.yaml becomes server settings; the rest is logged."""

from __future__ import annotations

import logging

import pytest

from kaitoctl.inference_config import interpret
from kaitoctl_server.config import ServerConfig
from kaitoctl_server.errors import ConfigError

KAITO_FILE = """\
max_probe_steps: 6
vllm:
  cpu-offload-gb: 0
  gpu-memory-utilization: 0.95
  swap-space: 4
  max-model-len: 4096
  max-num-seqs: 8
  dtype: half
  tensor-parallel-size: 2
transformers:
  max_new_tokens: 128
"""


def test_kaitos_file_becomes_settings_and_notes() -> None:
    config = interpret(KAITO_FILE)
    assert config.errors == []
    assert config.settings == {"KAITOCTL_MAX_MODEL_LEN": "4096", "KAITOCTL_MAX_BATCH": "8", "KAITOCTL_DTYPE": "float16",
                               "KAITOCTL_TENSOR_PARALLEL_SIZE": "2", "KAITOCTL_MAX_TOKENS": "128"}
    assert config.ignored == [
        "max_probe_steps: read by KAITO's controller (vLLM memory probing), not by kaitoctl's server",
        "vllm.cpu-offload-gb: a vLLM engine argument",
        "vllm.gpu-memory-utilization: a vLLM engine argument",
        "vllm.swap-space: a vLLM engine argument",
    ]


@pytest.mark.parametrize("text,problem", [
    ("vllm: [1, 2", "inference_config.yaml is not valid YAML at line"),
    ("- a\n- b\n", "inference_config.yaml must be a mapping"),
    ("vllm:\n  max-model-len: -3\n", "vllm.max-model-len must be a positive integer (tokens of context), found -3"),
    ("vllm:\n  dtype: int3\n", "vllm.dtype must be one of auto, float16, bfloat16, float32, found 'int3'"),
])
def test_broken_files_are_reported(text: str, problem: str) -> None:
    assert interpret(text).errors[0].startswith(problem)


def test_server_honours_the_mounted_file_over_the_preset_defaults(tmp_path, caplog) -> None:
    path = tmp_path / "inference_config.yaml"
    path.write_text(KAITO_FILE)
    with caplog.at_level(logging.INFO, logger="kaitoctl_server"):
        config = ServerConfig.from_env({"KAITOCTL_INFERENCE_CONFIG": str(path), "KAITOCTL_DTYPE": "bfloat16",
                                        "KAITOCTL_MODEL": "/m"})
    assert (config.dtype, config.max_tokens, config.max_batch, config.max_model_len) == ("float16", 128, 8, 4096)
    assert "inference config: ignored vllm.swap-space: a vLLM engine argument" in caplog.text


def test_server_refuses_a_broken_file(tmp_path) -> None:
    path = tmp_path / "inference_config.yaml"
    path.write_text("vllm:\n  max-num-seqs: many\n")
    with pytest.raises(ConfigError, match="vllm.max-num-seqs must be a positive integer"):
        ServerConfig.from_env({"KAITOCTL_INFERENCE_CONFIG": str(path)})


def test_max_model_len_caps_the_served_context(tiny, tmp_path) -> None:
    from kaitoctl_server.app import create_app
    from kaitoctl_server.loader import load_served_model

    path = tmp_path / "inference_config.yaml"
    path.write_text("vllm:\n  max-model-len: 16\n")
    config = ServerConfig.from_env({"KAITOCTL_INFERENCE_CONFIG": str(path), "KAITOCTL_MODEL": str(tiny.llama)})
    served = load_served_model(config)
    assert served.context_length == 16
    client = create_app(config, served=served).test_client()
    assert client.get("/v1/models").json["data"][0]["max_model_len"] == 16
    response = client.post("/v1/completions", json={"model": "x", "prompt": "word " * 40, "max_tokens": 2})
    assert response.status_code == 400 and response.json["error"]["code"] == "context_length_exceeded"
