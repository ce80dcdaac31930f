"""The preset and SKU catalogs: KAITO's facts (kaito-facts §3, §4), with its data bugs corrected."""

from __future__ import annotations

import pytest

from kaitoctl import catalog
from kaitoctl.catalog import quantity_bytes

from ._support import findings_of, mutate, triples

# name: (model_id, access, kaito_tag, disk, gpus, total, per_gpu, distributed, world_size, readiness minutes)
KAITO_PRESETS = {
    "falcon-7b": ("tiiuae/falcon-7b", "public", "0.0.5", "50Gi", 1, "14Gi", "0", False, 1, 30),
    "falcon-7b-instruct": ("tiiuae/falcon-7b-instruct", "public", "0.0.5", "50Gi", 1, "14Gi", "0", False, 1, 30),
    "falcon-40b": ("tiiuae/falcon-40b", "public", "0.0.6", "400Gi", 2, "90Gi", "0", False, 1, 30),
    "falcon-40b-instruct": ("tiiuae/falcon-40b-instruct", "public", "0.0.6", "400Gi", 2, "90Gi", "0", False, 1, 30),
    "mistral-7b": ("mistralai/Mistral-7B-v0.3", "public", "0.0.6", "100Gi", 1, "14Gi", "0", False, 1, 30),
    "mistral-7b-instruct": ("mistralai/Mistral-7B-Instruct-v0.3", "public", "0.0.6", "100Gi", 1, "16Gi", "0", False,
                            1, 30),
    "phi-2": ("microsoft/phi-2", "public", "0.0.4", "50Gi", 1, "12Gi", "0", False, 1, 30),
    "phi-3-mini-4k-instruct": ("microsoft/Phi-3-mini-4k-instruct", "public", "0.0.1", "50Gi", 1, "9Gi", "0", False,
                               1, 30),
    "phi-3-mini-128k-instruct": ("microsoft/Phi-3-mini-128k-instruct", "public", "0.0.1", "50Gi", 1, "9Gi", "0",
                                 False, 1, 30),
    "phi-3-medium-4k-instruct": ("microsoft/Phi-3-medium-4k-instruct", "public", "0.0.1", "50Gi", 1, "16Gi", "0",
                                 False, 1, 30),
    "phi-3-medium-128k-instruct": ("microsoft/Phi-3-medium-128k-instruct", "public", "0.0.1", "50Gi", 1, "16Gi", "0",
                                   False, 1, 30),
    "llama-2-7b": ("meta-llama/Llama-2-7b-hf", "private", "0.0.3", "34Gi", 1, "14Gi", "14Gi", False, 1, 10),
    "llama-2-7b-chat": ("meta-llama/Llama-2-7b-chat-hf", "private", "0.0.3", "34Gi", 1, "16Gi", "14Gi", False, 1, 10),
    "llama-2-13b": ("meta-llama/Llama-2-13b-hf", "private", "0.0.3", "46Gi", 2, "30Gi", "15Gi", True, 2, 20),
    "llama-2-13b-chat": ("meta-llama/Llama-2-13b-chat-hf", "private", "0.0.3", "46Gi", 2, "30Gi", "15Gi", True, 2, 20),
    "llama-2-70b": ("meta-llama/Llama-2-70b-hf", "private", "0.0.3", "158Gi", 8, "152Gi", "19Gi", True, 8, 30),
    "llama-2-70b-chat": ("meta-llama/Llama-2-70b-chat-hf", "private", "0.0.3", "158Gi", 8, "192Gi", "19Gi", True, 8,
                         30),
}


def test_all_17_kaito_presets_in_kaitos_order() -> None:
    assert list(catalog.presets())[:17] == list(KAITO_PRESETS)


@pytest.mark.parametrize("name", list(KAITO_PRESETS))
def test_preset_facts(name: str) -> None:
    p = catalog.presets()[name]
    model_id, access, kaito_tag, disk, gpus, total, per_gpu, distributed, world, minutes = KAITO_PRESETS[name]
    assert (p.model_id, p.access, p.kaito_tag, p.disk, p.gpu_count, p.total_gpu_memory, p.per_gpu_memory,
            p.distributed, p.world_size, p.readiness_timeout_seconds) == (
        model_id, access, kaito_tag, disk, gpus, total, per_gpu, distributed, world, minutes * 60)
    assert (p.image_name, p.image_tag) == (f"kaitoctl-{name}", "0.1.0")
    assert p.pipeline == ("chat" if name.endswith(("-chat", "-instruct")) else "text-generation")
    assert p.trust_remote_code == name.startswith("phi-3")
    assert p.launcher == ("torchrun" if distributed else "gunicorn")
    assert p.kaito_launcher == ("torchrun" if name.startswith("llama") else "accelerate")
    assert p.dtype in ("bfloat16", "float16", "auto")
    if distributed:
        assert p.world_size == p.gpu_count  # one process per GPU


def test_falcon_40b_disk_is_a_real_quantity() -> None:
    """KAITO writes "400" (400 bytes); the weights need about 400Gi."""
    assert quantity_bytes(catalog.presets()["falcon-40b"].disk) == 400 * 2**30


def test_preset_lookup_and_image() -> None:
    assert catalog.get_preset("Falcon-7B") is catalog.presets()["falcon-7b"]
    assert catalog.get_preset("gpt-5") is None
    assert catalog.presets()["phi-2"].image("registry.example.com/") == "registry.example.com/kaitoctl-phi-2:0.1.0"


@pytest.mark.parametrize("name", [n for n, p in catalog.presets().items() if p.small])
def test_small_presets_fit_a_single_t4(name: str) -> None:
    # Notes never fail (the KV-cache note says how much context fits); nothing else may be found.
    assert [t for t in triples(findings_of(mutate({"inference.preset.name": name,
                                                   "resource.instanceType": "Standard_NC4as_T4_v3"})))
            if t[0] != "note"] == []


def test_there_is_a_small_preset() -> None:
    assert "phi-3-mini-4k-instruct" in [n for n, p in catalog.presets().items() if p.small]


# KAITO's example SKUs per preset (kaito-facts §4): each must fit under kaitoctl's arithmetic.
EXAMPLE_SKUS = {
    "falcon-7b": ("Standard_NC12s_v3", 1), "falcon-7b-instruct": ("Standard_NC12s_v3", 1),
    "mistral-7b": ("Standard_NC12s_v3", 1), "mistral-7b-instruct": ("Standard_NC12s_v3", 1),
    "llama-2-7b": ("Standard_NC12s_v3", 1), "llama-2-7b-chat": ("Standard_NC12s_v3", 1),
    "llama-2-13b": ("Standard_NC12s_v3", 1), "llama-2-13b-chat": ("Standard_NC12s_v3", 1),
    "phi-2": ("Standard_NC6s_v3", 1), "phi-3-mini-4k-instruct": ("Standard_NC6s_v3", 1),
    "phi-3-mini-128k-instruct": ("Standard_NC6s_v3", 1), "phi-3-medium-4k-instruct": ("Standard_NC6s_v3", 1),
    "phi-3-medium-128k-instruct": ("Standard_NC6s_v3", 1),
    "falcon-40b": ("Standard_NC96ads_A100_v4", 1), "falcon-40b-instruct": ("Standard_NC96ads_A100_v4", 1),
    "llama-2-70b": ("Standard_NC96ads_A100_v4", 2), "llama-2-70b-chat": ("Standard_NC96ads_A100_v4", 2),
}


@pytest.mark.parametrize("name", list(EXAMPLE_SKUS))
def test_kaito_example_placements_fit(name: str) -> None:
    sku, count = EXAMPLE_SKUS[name]
    preset: dict = {"name": name}
    if catalog.presets()[name].access == "private":
        preset.update(accessMode="private", presetOptions={"image": f"r.io/me/{name}:0.0.3"})
    assert [t for t in triples(findings_of(mutate({"inference.preset": preset, "resource.instanceType": sku,
                                                   "resource.count": count}))) if t[0] != "note"] == []


def test_sku_counts_and_clouds() -> None:
    skus = catalog.skus()
    assert len(skus) == 97  # KAITO's 95 of 2024, plus the H100/H200 nodes today's biggest presets need
    assert sum(s.cloud == "azure" for s in skus.values()) == 40
    assert sum(s.cloud == "aws" for s in skus.values()) == 57


@pytest.mark.parametrize("name,gpus,total,per_gpu,model", [
    ("Standard_NC12s_v3", 2, "32Gi", "16Gi", "NVIDIA V100"),        # the CRD default
    ("Standard_NC4as_T4_v3", 1, "16Gi", "16Gi", "NVIDIA T4"),
    ("Standard_ND96amsr_A100_v4", 8, "640Gi", "80Gi", "NVIDIA A100-80GB"),  # pkg/sku says 80 in total: a bug
    ("Standard_NV6ads_A10_v5", 1, "4Gi", "4Gi", "NVIDIA A10"),      # a 1/6 partition counts as one GPU
    ("Standard_NC96ads_A100_v4", 4, "320Gi", "80Gi", "NVIDIA A100-80GB"),
    ("p5.48xlarge", 8, "640Gi", "80Gi", "NVIDIA H100"),
    ("g5g.xlarge", 1, "16Gi", "16Gi", "NVIDIA T4G"),                # KAITO says T4
    ("g3.4xlarge", 1, "8Gi", "8Gi", "NVIDIA M60"),                  # KAITO says g3s.4xlarge
    ("inf2.48xlarge", 12, "384Gi", "32Gi", "AWS Inferentia2"),
])
def test_sku_facts(name: str, gpus: int, total: str, per_gpu: str, model: str) -> None:
    sku = catalog.get_sku(name)
    assert sku is not None
    assert (sku.gpu_count, sku.gpu_memory_total, sku.gpu_memory_per_gpu, sku.gpu_model) == (gpus, total, per_gpu, model)


def test_corrected_entries_say_why() -> None:
    for name in ("Standard_ND96amsr_A100_v4", "g5g.xlarge", "g3.4xlarge"):
        assert "KAITO" in catalog.skus()[name].note, name


def test_every_sku_is_consistent() -> None:
    for sku in catalog.skus().values():
        assert sku.gpu_count >= 1 and sku.gpu_memory_total_bytes % sku.gpu_count == 0, sku.name
        assert sku.vendor in ("nvidia", "amd", "aws"), sku.name
        assert sku.gpu_model.split()[0] == {"nvidia": "NVIDIA", "amd": "AMD", "aws": "AWS"}[sku.vendor], sku.name


def test_sku_lookup_is_exact() -> None:
    assert catalog.get_sku("standard_nc12s_v3") is None
    assert catalog.get_sku("g5.xlarge") is not None
