"""Adapter checks: every problem is one clear error naming the adapter, the file or the module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from kaitoctl_server.adapters import load_adapter
from kaitoctl_server.config import AdapterRef, ServerConfig
from kaitoctl_server.errors import AdapterError
from kaitoctl_server.loader import load_served_model


@pytest.fixture(scope="module")
def llama(tiny):
    return AutoModelForCausalLM.from_pretrained(tiny.llama, dtype=torch.float32)


def copy_adapter(tiny, tmp_path: Path, name: str = "a1", new_name: str = "copy") -> Path:
    target = tmp_path / new_name
    shutil.copytree(tiny.adapter(name), target)
    return target


def edit_config(directory: Path, **changes) -> None:
    path = directory / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def load(directory: Path, model, **kwargs):
    return load_adapter(AdapterRef(directory.name, str(directory), 1.0), model, **kwargs)


def test_target_module_missing_from_the_model_names_adapter_and_module(tiny, tmp_path, llama):
    adapter = copy_adapter(tiny, tmp_path)
    edit_config(adapter, target_modules=["q_proj", "query_key_value"])
    with pytest.raises(AdapterError) as err:
        load(adapter, llama)
    assert "'copy'" in str(err.value) and "'query_key_value'" in str(err.value)
    assert "q_proj" in str(err.value)  # lists what the model does have


def test_adapter_for_another_architecture_is_refused_naming_the_module(tiny, llama):
    with pytest.raises(AdapterError) as err:
        load(tiny.adapter("g1"), llama)
    assert "'g1'" in str(err.value) and "c_attn" in str(err.value)


def test_adapter_for_a_different_size_of_base_is_a_shape_error(tiny, tmp_path, llama):
    from kaitoctl_server.tiny import make_lora_adapter, make_tiny_model

    other = make_tiny_model(tmp_path / "wide", "llama", hidden_size=32)
    adapter = make_lora_adapter(other, tmp_path / "wide-adapter", r=4, alpha=8)
    with pytest.raises(AdapterError) as err:
        load(adapter, llama)
    message = str(err.value)
    assert "'wide-adapter'" in message and "q_proj" in message and "different base model" in message
    assert "wide" in message  # the base it was trained on (base_model_name_or_path)


def test_pickled_weights_are_refused_unless_the_operator_opts_in(tiny, tmp_path, llama):
    adapter = copy_adapter(tiny, tmp_path)
    state = load_file(adapter / "adapter_model.safetensors")
    (adapter / "adapter_model.safetensors").unlink()
    torch.save(state, adapter / "adapter_model.bin")
    with pytest.raises(AdapterError) as err:
        load(adapter, llama)
    assert "adapter_model.bin" in str(err.value) and "KAITOCTL_ALLOW_PICKLED_ADAPTERS=true" in str(err.value)

    loaded = load(adapter, llama, allow_pickled=True)
    assert set(loaded.layers) == set(load(tiny.adapter("a1"), llama).layers)


def test_safetensors_win_over_a_pickle_next_to_them(tiny, tmp_path, llama):
    adapter = copy_adapter(tiny, tmp_path)
    (adapter / "adapter_model.bin").write_bytes(b"not even a pickle")
    assert load(adapter, llama).layers  # the .bin is never opened


@pytest.mark.parametrize("change,needle", [
    ({"use_dora": True}, "use_dora"),
    ({"bias": "all"}, "bias"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"peft_type": "PREFIX_TUNING"}, "peft_type"),
    ({"r": 0}, "r must be a positive number"),
])
def test_configs_that_cannot_be_merged_with_a_strength_are_refused(tiny, tmp_path, llama, change, needle):
    adapter = copy_adapter(tiny, tmp_path)
    edit_config(adapter, **change)
    with pytest.raises(AdapterError) as err:
        load(adapter, llama)
    assert needle in str(err.value) and "'copy'" in str(err.value)


def test_rank_in_config_disagreeing_with_the_weights_is_refused(tiny, tmp_path, llama):
    adapter = copy_adapter(tiny, tmp_path)
    edit_config(adapter, r=16)
    with pytest.raises(AdapterError, match="rank 4 in adapter_model.safetensors but 16"):
        load(adapter, llama)


def test_rank_and_alpha_patterns_give_per_module_scaling(tiny, tmp_path, llama):
    adapter = copy_adapter(tiny, tmp_path, "a1")
    edit_config(adapter, alpha_pattern={"v_proj": 32})
    loaded = load(adapter, llama)
    assert loaded.layers["model.layers.0.self_attn.q_proj"].scaling == 8 / 4
    assert loaded.layers["model.layers.0.self_attn.v_proj"].scaling == 32 / 4


def test_rslora_scaling_is_alpha_over_sqrt_r(tiny, llama):
    loaded = load(tiny.adapter("a3"), llama)  # r=2, alpha=4, use_rslora
    assert all(layer.scaling == pytest.approx(4 / 2 ** 0.5) for layer in loaded.layers.values())


@pytest.mark.parametrize("content,needle", [(None, "adapter_config.json is missing"), ("{oops", "cannot read")])
def test_missing_or_broken_config(tiny, tmp_path, llama, content, needle):
    adapter = copy_adapter(tiny, tmp_path)
    if content is None:
        (adapter / "adapter_config.json").unlink()
    else:
        (adapter / "adapter_config.json").write_text(content)
    with pytest.raises(AdapterError, match=needle):
        load(adapter, llama)


def test_missing_weights(tiny, tmp_path, llama):
    adapter = copy_adapter(tiny, tmp_path)
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="has no adapter_model.safetensors"):
        load(adapter, llama)


def test_base_model_name_mismatch_is_reported_as_a_warning(tiny, tmp_path):
    adapter = copy_adapter(tiny, tmp_path)
    edit_config(adapter, base_model_name_or_path="tiiuae/falcon-7b")
    served = load_served_model(ServerConfig(model_dir=str(tiny.llama), adapters=(AdapterRef("copy", str(adapter)),)))
    assert any("'copy'" in w and "tiiuae/falcon-7b" in w for w in served.warnings)

    matching = load_served_model(ServerConfig(model_dir=str(tiny.llama),
                                              adapters=(AdapterRef("a1", str(tiny.adapter("a1"))),)))
    assert matching.warnings == []


def test_adapter_problems_are_found_before_the_model_is_loaded(tiny, tmp_path, monkeypatch):
    """A missing adapter fails in milliseconds: the model loader is never called."""
    import transformers

    def boom(*args, **kwargs):
        raise AssertionError("the model should not be loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    config = ServerConfig(model_dir=str(tiny.llama), adapters=(AdapterRef("gone", str(tmp_path / "gone")),))
    with pytest.raises(AdapterError, match="'gone': directory .* does not exist"):
        load_served_model(config)


def embedding_adapter(tiny, tmp_path: Path) -> Path:
    """An adapter targeting embed_tokens, saved with PEFT's defaults (a full copy of the embedding layer inside)."""
    import warnings

    from kaitoctl_server.tiny import make_lora_adapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT: "Setting save_embedding_layers to True ..."
        adapter = make_lora_adapter(tiny.llama, tmp_path / "emb", r=4, alpha=8, targets=["q_proj", "embed_tokens"],
                                    seed=5)
    assert "base_model.model.model.embed_tokens.base_layer.weight" in load_file(adapter / "adapter_model.safetensors")
    return adapter


def test_peft_default_embedding_copy_is_merged_like_peft_does(tiny, tmp_path):
    """It used to be refused as 'not LoRA A/B matrices'; the copy equals the base, so the LoRA merges."""
    from peft import PeftModel

    from kaitoctl_server.merge import merge_adapters

    adapter = embedding_adapter(tiny, tmp_path)
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny.llama, dtype=torch.float32), adapter).merge_and_unload().state_dict()
    model = AutoModelForCausalLM.from_pretrained(tiny.llama, dtype=torch.float32)
    loaded = load(adapter, model)
    assert set(loaded.layers) >= {"model.embed_tokens", "model.layers.0.self_attn.q_proj"}
    merge_adapters(model, [loaded])
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("change,needle", [
    (lambda w: w + 0.01, "values differ from the served model's"),
    (lambda w: torch.cat([w, w[:4]]), "vocabulary was resized"),
])
def test_embedding_copy_that_differs_from_the_served_model_is_refused_for_what_it_is(tiny, tmp_path, llama,
                                                                                    change, needle):
    from safetensors.torch import save_file

    adapter = embedding_adapter(tiny, tmp_path)
    path = adapter / "adapter_model.safetensors"
    tensors = load_file(path)
    key = "base_model.model.model.embed_tokens.base_layer.weight"
    tensors[key] = change(tensors[key]).contiguous()
    save_file(tensors, path)
    with pytest.raises(AdapterError) as err:
        load(adapter, llama)
    message = str(err.value)
    assert "'emb'" in message and "full copy of 'model.embed_tokens'" in message and needle in message
    assert "save_embedding_layers" in message and "not LoRA A/B" not in message
