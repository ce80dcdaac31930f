"""Exact LoRA merge: W += sum_i strength_i * scaling_i * B_i @ A_i, in float32, module by module.

Why not PEFT's ``add_weighted_adapter`` (KAITO's way): its ``linear``/``svd``
combinations are not the weighted sum for two or more adapters (cross terms
B_i A_j, or an SVD truncation), and ``linear`` needs equal ranks. Why not an
unmerged ``PeftModel``: every forward pass then pays for the LoRA products.

The merge works on one module at a time: the delta of every adapter touching
that module is summed in float32, added to the float32 view of the weight,
and the result is written back in the weight's dtype. Peak extra memory is one
module's weight in float32, never a second copy of the model. An adapter with
strength 0 is skipped, so a module touched only by such adapters keeps its
weight bit for bit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from .adapters import LoraAdapter, LoraLayer

if TYPE_CHECKING:
    import torch


@dataclass
class MergeReport:
    """What the merge did: modules touched and how long it took."""

    modules_touched: list[str] = field(default_factory=list)
    seconds: float = 0.0


def lora_delta(layer: LoraLayer, strength: float) -> "torch.Tensor":
    """strength * scaling * B @ A, shaped like the module's weight (float32)."""
    delta = (layer.b @ layer.a) * (strength * layer.scaling)
    return delta.T if layer.transpose else delta


def merge_adapters(model: "torch.nn.Module", adapters: Sequence[LoraAdapter]) -> MergeReport:
    """Fold every adapter into ``model``'s weights in place (see the module docstring)."""
    import torch

    started = time.perf_counter()
    by_module: dict[str, list[tuple[LoraAdapter, LoraLayer]]] = {}
    for adapter in adapters:
        if adapter.strength == 0:
            continue
        for name, layer in adapter.layers.items():
            by_module.setdefault(name, []).append((adapter, layer))
    report = MergeReport()
    with torch.no_grad():
        for name in sorted(by_module):
            weight = model.get_submodule(name).weight
            delta = None
            for adapter, layer in by_module[name]:
                part = lora_delta(layer, adapter.strength).to(weight.device)
                delta = part if delta is None else delta.add_(part)
            assert delta is not None
            merged = weight.detach().to(torch.float32) + delta
            # Replace the storage rather than writing into it: the loaded
            # tensor may be a read-only memory map of the checkpoint. Tied
            # weights share the Parameter, so both names see the merge.
            weight.data = merged.to(weight.dtype)
            report.modules_touched.append(name)
    report.seconds = time.perf_counter() - started
    return report
