"""GPU fit: preset requirements against count × SKU, compared exactly in bytes.

KAITO's arithmetic (kaito-facts §2.2) compares ceil(decimal GB) of Gi
requirements with integer GB, multiplies a node's total memory by its GPU
count a second time, and counts replicas of non-distributed presets as if
they pooled their GPUs. These tests pin the corrected arithmetic.
"""

from __future__ import annotations

import pytest

from kaitoctl import catalog
from kaitoctl.catalog import format_bytes, quantity_bytes

from ._support import findings_of, mutate, triples


@pytest.mark.parametrize("text,expected", [
    ("15Gi", 15 * 2**30), ("16Gi", 16 * 2**30), ("16G", 16 * 10**9), ("400", 400), ("1.5Ki", 1536),
    ("0.1", 1), ("0", 0), ("2Ti", 2 * 2**40), ("100M", 10**8),
])
def test_quantity_bytes_is_exact(text: str, expected: int) -> None:
    assert quantity_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "16 GB", "Gi", "-1Gi", "1e9", "16gi"])
def test_quantity_bytes_rejects_non_quantities(text: str) -> None:
    with pytest.raises(ValueError):
        quantity_bytes(text)


@pytest.mark.parametrize("value,expected", [(16 * 2**30, "16Gi"), (1536 * 2**20, "1.5Gi"), (512 * 2**20, "512Mi"),
                                            (400, "400"),
                                            (16 * 10**9, "14.9Gi")])
def test_format_bytes(value: int, expected: str) -> None:
    assert format_bytes(value) == expected


def test_a_15gi_requirement_fits_a_16_gb_v100() -> None:
    """The issue's example: 15Gi (16.1e9 bytes) fits a V100 sold as 16 GB, which has 16 GiB."""
    v100 = catalog.get_sku("Standard_NC6s_v3")
    assert v100 is not None and v100.gpu_memory_per_gpu_bytes == 16 * 2**30
    assert quantity_bytes("15Gi") <= v100.gpu_memory_per_gpu_bytes


def test_per_gpu_memory_is_node_total_divided_by_gpu_count() -> None:
    for name, per_gpu in [("Standard_NC12s_v3", "16Gi"), ("Standard_ND96amsr_A100_v4", "80Gi"),
                          ("Standard_NV72ads_A10_v5", "24Gi"), ("p4d.24xlarge", "40Gi"), ("g6.48xlarge", "24Gi")]:
        sku = catalog.get_sku(name)
        assert sku is not None and sku.gpu_memory_per_gpu == per_gpu, name


def _fit(preset: str, sku: str, count: int) -> list[tuple[str, str, str]]:
    spec: dict = {"name": preset}
    if catalog.presets()[preset].access == "private":
        spec.update(accessMode="private", presetOptions={"image": "r.io/me/llama:0.0.3"})
    return triples(findings_of(mutate({"inference.preset": spec, "resource.instanceType": sku,
                                       "resource.count": count})), "error")


FITS = [
    # KAITO's own example (llama-2-13b-chat on NC12s_v3): KAITO rejects it (15Gi -> "17 GB" > 16), it fits.
    ("llama-2-13b-chat", "Standard_NC12s_v3", 1),
    ("llama-2-13b-chat", "Standard_NC6s_v3", 2),          # 2 nodes x 1 V100: one process per node
    ("llama-2-70b", "Standard_NC96ads_A100_v4", 2),       # KAITO's example: 2 x 4 A100
    ("llama-2-70b-chat", "Standard_NC24ads_A100_v4", 8),  # 8 nodes x 1 A100, 8 x 80Gi >= 192Gi
    ("mistral-7b-instruct", "Standard_NC6s_v3", 1),       # 16Gi needed, 16Gi there: equal fits
    ("phi-3-medium-4k-instruct", "Standard_NC4as_T4_v3", 1),
    ("phi-3-mini-4k-instruct", "Standard_NC4as_T4_v3", 1),
    ("falcon-40b", "Standard_NC48ads_A100_v4", 1),
    ("falcon-40b", "Standard_NC48ads_A100_v4", 3),        # replicas: each node holds a whole copy
    ("mistral-7b", "g5.xlarge", 1),                       # AWS names are known
    ("falcon-7b", "g4dn.xlarge", 1),
]


@pytest.mark.parametrize("preset,sku,count", FITS)
def test_fits(preset: str, sku: str, count: int) -> None:
    assert _fit(preset, sku, count) == []


REJECTS = [
    ("falcon-40b", "Standard_NC6s_v3", 1, [
        "Insufficient number of GPUs: Instance type Standard_NC6s_v3 provides 1, but preset falcon-40b requires at "
        "least 2: choose an instance type with more GPUs",
        "Insufficient total GPU memory: Instance type Standard_NC6s_v3 has a total of 16Gi, but preset falcon-40b "
        "requires at least 90Gi: choose an instance type with more GPU memory"]),
    # KAITO would accept this (2 x 1 GPU >= 2, 2 x 80 >= 90), but each replica runs alone on a 1-GPU node.
    ("falcon-40b", "Standard_NC24ads_A100_v4", 2, [
        "Insufficient number of GPUs: Instance type Standard_NC24ads_A100_v4 provides 1, but preset falcon-40b "
        "requires at least 2 (the preset is not distributed: each of the 2 replicas runs on one node): choose an "
        "instance type with more GPUs",
        "Insufficient total GPU memory: Instance type Standard_NC24ads_A100_v4 has a total of 80Gi, but preset "
        "falcon-40b requires at least 90Gi (the preset is not distributed: each of the 2 replicas runs on one "
        "node): choose an instance type with more GPU memory"]),
    ("llama-2-13b-chat", "Standard_NC6s_v3", 1, [
        "Insufficient number of GPUs: Instance type Standard_NC6s_v3 provides 1, but preset llama-2-13b-chat "
        "requires at least 2: choose an instance type with more GPUs or raise count",
        "Insufficient total GPU memory: Instance type Standard_NC6s_v3 has a total of 16Gi, but preset "
        "llama-2-13b-chat requires at least 30Gi: choose an instance type with more GPU memory or raise count"]),
    ("llama-2-70b", "Standard_NC24s_v3", 2, [
        "Insufficient per GPU memory: Instance type Standard_NC24s_v3 provides 16Gi per GPU, but preset "
        "llama-2-70b requires at least 19Gi per GPU: choose an instance type with larger GPUs",
        # total = count x node total = 2 x 64Gi (KAITO: 2 x 64 x 4 = 512 and accepts).
        "Insufficient total GPU memory: Instance type Standard_NC24s_v3 has a total of 128Gi, but preset "
        "llama-2-70b requires at least 152Gi: choose an instance type with more GPU memory or raise count"]),
    ("llama-2-7b", "Standard_NV12ads_A10_v5", 1, [
        "Insufficient per GPU memory: Instance type Standard_NV12ads_A10_v5 provides 8Gi per GPU, but preset "
        "llama-2-7b requires at least 14Gi per GPU: choose an instance type with larger GPUs",
        "Insufficient total GPU memory: Instance type Standard_NV12ads_A10_v5 has a total of 8Gi, but preset "
        "llama-2-7b requires at least 14Gi: choose an instance type with more GPU memory"]),
    ("phi-3-mini-4k-instruct", "g4ad.xlarge", 1, [
        "instance type g4ad.xlarge has AMD Radeon Pro V520 accelerators, not NVIDIA GPUs: kaitoctl's preset images "
        "need CUDA (nvidia.com/gpu); choose an NVIDIA instance type (kaitoctl skus list)"]),
    ("mistral-7b", "inf2.xlarge", 1, [
        "instance type inf2.xlarge has AWS Inferentia2 accelerators, not NVIDIA GPUs: kaitoctl's preset images need "
        "CUDA (nvidia.com/gpu); choose an NVIDIA instance type (kaitoctl skus list)"]),
]


@pytest.mark.parametrize("preset,sku,count,messages", REJECTS, ids=[f"{p}-{s}-{c}" for p, s, c, _ in REJECTS])
def test_rejects_with_kaito_style_messages(preset: str, sku: str, count: int, messages: list[str]) -> None:
    assert _fit(preset, sku, count) == [("error", "resource.instanceType", m) for m in messages]


def test_distributed_processes_must_fit_each_node() -> None:
    """70b on one 4-GPU node: 8 processes cannot share 4 GPUs (KAITO renders an unschedulable pod)."""
    assert _fit("llama-2-70b", "Standard_NC96ads_A100_v4", 1) == [
        ("error", "resource.instanceType",
         "Insufficient number of GPUs: Instance type Standard_NC96ads_A100_v4 provides 4, but preset llama-2-70b "
         "requires at least 8: choose an instance type with more GPUs or raise count")]


@pytest.mark.parametrize("count,divisors", [(3, "1, 2"), (5, "1, 2")])
def test_world_size_must_divide_by_count(count: int, divisors: str) -> None:
    assert _fit("llama-2-13b-chat", "Standard_NC12s_v3", count) == [
        ("error", "resource.count", f"preset llama-2-13b-chat runs 2 processes (its world size), which cannot be "
                                    f"split evenly over count {count} nodes: set count to one of {divisors}")]


def test_world_size_checked_even_for_unknown_sku() -> None:
    findings = triples(findings_of(mutate({
        "inference.preset": {"name": "llama-2-70b", "accessMode": "private",
                             "presetOptions": {"image": "r.io/me/llama:1"}},
        "resource.instanceType": "my-own-gpu-node", "resource.count": 3})))
    assert [(s, p) for s, p, _ in findings] == [("warning", "resource.instanceType"), ("error", "resource.count")]
    assert "set count to one of 1, 2, 4, 8" in findings[1][2]


def test_unknown_sku_is_a_warning_and_skips_the_fit() -> None:
    findings = triples(findings_of(mutate({"inference.preset.name": "falcon-40b",
                                           "resource.instanceType": "Standard_NC4as_T4_v4"})))
    assert [(s, p) for s, p, _ in findings] == [("warning", "resource.instanceType")]
    assert "the GPU fit is unchecked" in findings[0][2]


def test_every_distributed_preset_splits_its_heads_over_its_world_size() -> None:
    distributed = [p for p in catalog.presets().values() if p.distributed]
    assert distributed
    for preset in distributed:
        assert preset.num_heads and preset.num_kv_heads, preset.name
        assert preset.tensor_parallel_problem(preset.world_size) is None, preset.name


def test_heads_that_do_not_divide_by_the_world_size_are_named(monkeypatch) -> None:
    import dataclasses

    real = catalog.presets()
    broken = dataclasses.replace(real["llama-2-70b"], num_kv_heads=12)  # 12 key/value heads over 8 processes
    monkeypatch.setattr(catalog, "presets", lambda: {**real, "llama-2-70b": broken})
    findings = triples(findings_of(mutate({
        "inference.preset": {"name": "llama-2-70b", "accessMode": "private",
                             "presetOptions": {"image": "r.io/me/llama:1"}},
        "resource.instanceType": "Standard_ND96asr_v4", "resource.count": 1})))
    assert findings == [("error", "inference.preset.name",
                         "preset llama-2-70b has 12 key/value heads, which cannot be split evenly over 8 processes "
                         "(tensor parallel); the process count must divide them: 1, 2, 4: "
                         "the catalog entry is inconsistent; choose another preset or serve the model with a template")]
