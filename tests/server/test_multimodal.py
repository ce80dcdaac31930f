"""Today's multimodal presets (Gemma 3, Ministral 3) are served as text generation by the bundled server."""

from __future__ import annotations

import pytest

from kaitoctl import catalog


@pytest.mark.parametrize("arch,architecture", [("gemma3", "Gemma3ForConditionalGeneration"),
                                               ("mistral3", "Mistral3ForConditionalGeneration")])
def test_multimodal_architecture_is_served_as_text(tmp_path, arch: str, architecture: str) -> None:
    from kaitoctl_server.app import create_app
    from kaitoctl_server.config import ServerConfig
    from kaitoctl_server.loader import load_served_model
    from kaitoctl_server.tiny import make_tiny_model

    directory = make_tiny_model(tmp_path / arch, arch, max_position_embeddings=512)
    config = ServerConfig(model_dir=str(directory), pipeline="text-generation")
    served = load_served_model(config)
    assert (served.architecture, served.context_length) == (architecture, 512)
    # The catalog's verdict (what validate says) is what the server does.
    assert catalog.architectures()[architecture].served
    response = create_app(config, served=served).test_client().post(
        "/v1/completions", json={"model": "x", "prompt": "hello there", "max_tokens": 3})
    assert response.status_code == 200, response.json
    assert response.json["usage"]["completion_tokens"] == 3


def test_the_architecture_table_agrees_with_the_servers_transformers() -> None:
    # validate's verdicts (kaitoctl/data/architectures.yaml) are data the CLI reads without importing
    # transformers; this keeps them true for the transformers the server image installs.
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)

    loadable = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()) | set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.values())
    table = catalog.architectures()
    assert {name for name, arch in table.items() if arch.served} <= loadable
    assert {name for name, arch in table.items() if not arch.served} == {"MistralLarge3ForCausalLM"}
    assert "MistralLarge3ForCausalLM" not in loadable
    # Every architecture a preset names is in the table (validate has a verdict for each).
    assert {p.architecture for p in catalog.presets().values() if p.architecture} <= set(table)
