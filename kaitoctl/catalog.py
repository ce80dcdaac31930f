"""Preset and GPU SKU catalogs: data files under ``kaitoctl/data/``, looked up by name.

Adding a preset or a SKU means adding an entry to ``presets.yaml`` or
``skus.yaml``; no code changes. Memory quantities are kept as Kubernetes
quantity strings in the data and exposed in bytes.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Optional

DEFAULT_REGISTRY = "ghcr.io/kaitoctl"
REGISTRY_ENV = "KAITOCTL_PRESET_REGISTRY"

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_FACTORS = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_bytes(text: str) -> int:
    """Parse a Kubernetes memory quantity ("15Gi", "16G", "400") into bytes."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"not a memory quantity: {text!r}")
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


@dataclass(frozen=True)
class Preset:
    """One model preset. See kaito-facts §4 for where each value comes from."""

    name: str
    model_id: str                      # Hugging Face id the weights come from
    model_revision: str                # commit the image was built from
    family: str                        # falcon, mistral, phi-2, phi-3, llama-2, ...
    access: str                        # "public" or "private" (private: user supplies the image)
    image_name: str                    # repository under the registry, e.g. "kaitoctl-falcon-7b"
    image_tag: str
    kaito_tag: str                     # KAITO's image tag for the same preset (reference)
    disk: str                          # disk the weights need, quantity
    gpu_count: int                     # GPUs the model needs in total (KAITO's GPUCountRequirement)
    total_gpu_memory: str              # quantity
    per_gpu_memory: str                # quantity; "0" = no per-GPU floor (model is split over GPUs)
    dtype: str                         # bfloat16 | float16 | float32 | auto
    pipeline: str                      # text-generation | chat
    trust_remote_code: bool
    distributed: bool                  # multi-node StatefulSet + torchrun
    world_size: int                    # processes in total (distributed presets)
    readiness_timeout_seconds: int
    launcher: str                      # accelerate | torchrun | gunicorn
    tuning: bool = False
    small: bool = False                # fits a single T4-class (16 GB) GPU
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_gpu_memory_bytes(self) -> int:
        return quantity_bytes(self.total_gpu_memory)

    @property
    def per_gpu_memory_bytes(self) -> int:
        return quantity_bytes(self.per_gpu_memory)

    def image(self, registry: Optional[str] = None) -> str:
        """The public image reference for this preset (private presets: the user's image)."""
        registry = registry or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY
        return f"{registry.rstrip('/')}/{self.image_name}:{self.image_tag}"


@dataclass(frozen=True)
class Sku:
    """One GPU instance type: GPUs per node and GPU memory per node (total)."""

    name: str
    cloud: str               # azure | aws
    gpu_count: int
    gpu_memory_total: str    # quantity, whole node
    gpu_model: str
    note: str = ""

    @property
    def gpu_memory_total_bytes(self) -> int:
        return quantity_bytes(self.gpu_memory_total)

    @property
    def gpu_memory_per_gpu_bytes(self) -> int:
        return self.gpu_memory_total_bytes // self.gpu_count if self.gpu_count else 0


def _load(name: str) -> Any:
    import yaml

    text = resources.files("kaitoctl").joinpath("data", name).read_text(encoding="utf-8")
    return yaml.safe_load(text)


@functools.lru_cache(maxsize=None)
def presets() -> dict[str, Preset]:
    """All presets by name, in catalog order."""
    return {entry["name"]: Preset(**entry) for entry in _load("presets.yaml")["presets"]}


@functools.lru_cache(maxsize=None)
def skus() -> dict[str, Sku]:
    """All SKUs by name, in catalog order."""
    return {entry["name"]: Sku(**entry) for entry in _load("skus.yaml")["skus"]}


def get_preset(name: str) -> Optional[Preset]:
    """The preset called ``name`` (case-insensitive, as KAITO lower-cases it), or None."""
    return presets().get(name.lower())


def get_sku(name: str) -> Optional[Sku]:
    """The SKU called ``name`` (exact match), or None when the catalog does not know it."""
    return skus().get(name)
