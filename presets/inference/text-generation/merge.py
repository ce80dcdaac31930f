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

Tensor-parallel shards (``kaitoctl_server.distributed``): a weight loaded with
transformers' ``tp_plan`` is a DTensor of which this rank holds one slice. The
merge then adds only that slice of the delta: for a column-parallel module
(the weight's rows split) the product of the slice's rows of B with A, for a
row-parallel one (columns split) B with the slice's columns of A. No rank ever
builds the whole delta or the whole weight.
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


Region = tuple[slice, slice]


def lora_delta(layer: LoraLayer, strength: float, region: "Region | None" = None) -> "torch.Tensor":
    """strength * scaling * B @ A, shaped like the module's weight (float32).

    ``region`` (rows, columns of the weight) asks for that block only, computed
    from the matching rows of B and columns of A.
    """
    a, b = layer.a, layer.b
    if region is not None:
        rows, cols = region
        if layer.transpose:  # the weight is (in, out): its rows are A's columns
            rows, cols = cols, rows
        a, b = a[:, cols], b[rows]
    delta = (b @ a) * (strength * layer.scaling)
    return delta.T if layer.transpose else delta


def _local_part(weight: "torch.Tensor") -> "tuple[torch.Tensor, Region | None]":
    """The tensor this process holds and where it sits in the whole weight (None: all of it)."""
    from torch.distributed.tensor import DTensor

    if not isinstance(weight, DTensor):
        return weight.detach(), None
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    shape, offset = compute_local_shape_and_global_offset(weight.shape, weight.device_mesh, weight.placements)
    if len(shape) != 2:
        raise ValueError(f"cannot merge into a {len(shape)}-dimensional sharded weight")
    rows, cols = (slice(o, o + n) for o, n in zip(offset, shape))
    return weight.to_local().detach(), (rows, cols)


def _replace(weight: "torch.Tensor", merged: "torch.Tensor") -> None:
    """Point ``weight`` (a Parameter, or a DTensor Parameter's local slice) at ``merged``."""
    from torch.distributed.tensor import DTensor

    if isinstance(weight, DTensor):
        weight._local_tensor.data = merged  # the slice this rank holds; placements unchanged
    else:
        weight.data = merged


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
            local, region = _local_part(weight)
            delta = None
            for adapter, layer in by_module[name]:
                part = lora_delta(layer, adapter.strength, region).to(local.device)
                delta = part if delta is None else delta.add_(part)
            assert delta is not None
            merged = local.to(torch.float32) + delta
            # Replace the storage rather than writing into it: the loaded
            # tensor may be a read-only memory map of the checkpoint. Tied
            # weights share the Parameter, so both names see the merge.
            _replace(weight, merged.to(local.dtype))
            report.modules_touched.append(name)
    report.seconds = time.perf_counter() - started
    return report
