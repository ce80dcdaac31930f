"""The merge is exact: W + sum_i s_i * scaling_i * B_i @ A_i, weight by weight, checked against the raw files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from kaitoctl_server.adapters import load_adapter
from kaitoctl_server.config import AdapterRef, ServerConfig
from kaitoctl_server.loader import load_served_model
from kaitoctl_server.merge import merge_adapters

from .conftest import SERVED_STRENGTHS, greedy_ids


def fresh(model_dir: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def expected_state(base: dict[str, torch.Tensor], adapters: list[tuple[Path, float]], conv1d: bool):
    """The formula, computed here from adapter_config.json and the safetensors, independently of the server."""
    expected = {k: v.clone() for k, v in base.items()}
    touched = set()
    for directory, strength in adapters:
        config = json.loads((directory / "adapter_config.json").read_text())
        r, alpha = config["r"], config["lora_alpha"]
        scaling = alpha / (math.sqrt(r) if config["use_rslora"] else r)
        tensors = load_file(directory / "adapter_model.safetensors")
        for key, a in tensors.items():
            if ".lora_A." not in key:
                continue
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            delta = strength * scaling * (b @ a)
            expected[module + ".weight"] += delta.T if conv1d else delta
            if strength != 0:
                touched.add(module)
    return expected, touched


CASES = [
    ("llama", [("a1", 1.0)]),
    ("llama", [("a1", 0.7), ("a2", 0.4)]),
    ("llama", [("a1", 0.7), ("a2", -0.5), ("a3", 1.5)]),  # ranks 4, 8, 2; a3 is rsLoRA
    ("gpt2", [("g1", 1.0)]),
    ("gpt2", [("g1", 0.5), ("g2", 0.3)]),
    ("gpt2", [("g1", 0.5), ("g2", 0.3), ("g3", -1.0)]),  # Conv1D: fan_in_fan_out
]


@pytest.mark.parametrize("arch,adapters", CASES, ids=[f"{a}-{len(x)}" for a, x in CASES])
def test_merged_weights_equal_the_formula(tiny, arch, adapters):
    model = fresh(getattr(tiny, arch))
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    refs = [AdapterRef(name, str(tiny.adapter(name)), s) for name, s in adapters]
    loaded = [load_adapter(ref, model) for ref in refs]

    report = merge_adapters(model, loaded)

    expected, touched = expected_state(base, [(tiny.adapter(n), s) for n, s in adapters], conv1d=arch == "gpt2")
    assert set(report.modules_touched) == touched
    merged = model.state_dict()
    for name, value in merged.items():
        if name.removesuffix(".weight") in touched:
            torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
            assert not torch.equal(value, base[name]), f"{name} should have changed"
        else:
            assert torch.equal(value, base[name]), f"{name} is not targeted and must be bitwise unchanged"


def test_merge_equals_peft_set_scale_merge_and_unload(tiny):
    """PEFT's exact path (set_scale, then merge_and_unload) gives the same weights for mixed ranks."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    strengths = {"a1": 0.7, "a2": -0.5, "a3": 1.5}
    peft_model = PeftModel.from_pretrained(fresh(tiny.llama), tiny.adapter("a1"), adapter_name="a1")
    for name in ("a2", "a3"):
        peft_model.load_adapter(tiny.adapter(name), adapter_name=name)
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            for name, s in strengths.items():
                if name in module.lora_A:
                    module.set_scale(name, s)
    reference = peft_model.merge_and_unload(adapter_names=list(strengths)).state_dict()

    model = fresh(tiny.llama)
    merge_adapters(model, [load_adapter(AdapterRef(n, str(tiny.adapter(n)), s), model) for n, s in strengths.items()])
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-6, msg=name)


def test_greedy_tokens_match_unmerged_peft_model_and_differ_from_base(tiny, served):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    prompt = "The quick brown fox"
    peft_model = PeftModel.from_pretrained(fresh(tiny.llama), tiny.adapter("a1"), adapter_name="a1")
    peft_model.load_adapter(tiny.adapter("a2"), adapter_name="a2")
    peft_model.base_model.set_adapter(list(SERVED_STRENGTHS))
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            for name, s in SERVED_STRENGTHS.items():
                if name in module.lora_A:
                    module.set_scale(name, s)
    peft_model.eval()

    merged_tokens = greedy_ids(served.model, served.tokenizer, prompt)
    assert merged_tokens == greedy_ids(peft_model, served.tokenizer, prompt)
    assert merged_tokens != greedy_ids(fresh(tiny.llama), served.tokenizer, prompt)


def test_strength_zero_leaves_every_weight_bitwise_unchanged(tiny):
    base = fresh(tiny.llama).state_dict()
    config = ServerConfig(
        model_dir=str(tiny.llama),
        adapters=(AdapterRef("a1", str(tiny.adapter("a1")), 0.0), AdapterRef("a3", str(tiny.adapter("a3")), 0.0)),
    )
    served = load_served_model(config)
    assert served.modules_touched == 0
    for name, value in served.model.state_dict().items():
        assert torch.equal(value, base[name]), name


def test_zero_strength_adapter_next_to_an_active_one_touches_nothing_of_its_own(tiny):
    model = fresh(tiny.llama)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    refs = [AdapterRef("a1", str(tiny.adapter("a1")), 1.0), AdapterRef("a3", str(tiny.adapter("a3")), 0.0)]
    merge_adapters(model, [load_adapter(ref, model) for ref in refs])
    for name, value in model.state_dict().items():
        if ".mlp." in name:  # a3's modules
            assert torch.equal(value, base[name]), name
    assert not torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                           base["model.layers.0.self_attn.q_proj.weight"])


def test_half_precision_serving_is_the_float32_merge_rounded_once(tiny):
    """Checkpoint in float32, served in bfloat16: merge in float32, then one cast."""
    adapters = [("a1", 0.7), ("a2", 0.4)]
    base = fresh(tiny.llama).state_dict()
    expected, touched = expected_state(base, [(tiny.adapter(n), s) for n, s in adapters], conv1d=False)
    served = load_served_model(ServerConfig(
        model_dir=str(tiny.llama), dtype="bfloat16",
        adapters=tuple(AdapterRef(n, str(tiny.adapter(n)), s) for n, s in adapters),
    ))
    assert served.dtype == "bfloat16"
    for name, value in served.model.state_dict().items():
        assert value.dtype == torch.bfloat16
        if name.removesuffix(".weight") in touched:
            # one rounding of the exact float32 result (allowing for the summation order)
            torch.testing.assert_close(value, expected[name].to(torch.bfloat16), rtol=0.01, atol=1e-3)
        else:
            assert torch.equal(value, base[name].to(torch.bfloat16)), name
