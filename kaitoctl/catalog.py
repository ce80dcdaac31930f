"""Preset and GPU SKU catalogs: data files under ``kaitoctl/data/``, looked up by name.

Adding a preset or a SKU means adding an entry to ``presets.yaml`` or
``skus.yaml``; no code changes. Memory quantities are kept as Kubernetes
quantity strings in the data and exposed in bytes.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field, fields
from fractions import Fraction
from importlib import resources
from typing import Any, Optional

DEFAULT_REGISTRY = "ghcr.io/kaitoctl"
REGISTRY_ENV = "KAITOCTL_PRESET_REGISTRY"

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$")
_FACTORS = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
            "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}


def quantity_bytes(text: str) -> int:
    """Parse a Kubernetes memory quantity ("15Gi", "16G", "400") into bytes, exactly.

    Fractions are rounded up, as Kubernetes does for byte quantities ("1.5Ki" = 1536, "0.1" = 1).
    """
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(f"not a memory quantity: {text!r}")
    exact = Fraction(match.group(1)) * _FACTORS[match.group(2)]
    return -(-exact.numerator // exact.denominator)


def format_bytes(value: int) -> str:
    """Bytes for people: exact Ti/Gi when whole ("16Gi"), else Gi with one decimal; below 1Gi exact Mi/Ki."""
    for suffix, factor in (("Ti", 2**40), ("Gi", 2**30)):
        if value >= factor and value % factor == 0:
            return f"{value // factor}{suffix}"
    if value >= 2**30:
        return f"{value / 2**30:.1f}Gi"
    for suffix, factor in (("Mi", 2**20), ("Ki", 2**10)):
        if value >= factor and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


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
    launcher: str                      # how kaitoctl runs it: gunicorn (one server per pod) | torchrun
    tuning: bool = False               # KAITO supports tuning jobs for it (kaitoctl does not run them)
    small: bool = False                # fits a single T4-class (16 GiB) GPU
    description: str = ""
    kaito_launcher: str = ""           # KAITO's BaseCommand: accelerate | torchrun
    launcher_params: dict[str, Any] = field(default_factory=dict)  # KAITO's launcher parameters
    model_params: dict[str, Any] = field(default_factory=dict)     # KAITO's ModelRunParams
    note: str = ""
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
    vendor: str = "nvidia"   # nvidia (nvidia.com/gpu) | amd (amd.com/gpu) | aws (aws.amazon.com/neuron)
    note: str = ""

    @property
    def gpu_memory_per_gpu(self) -> str:
        """Per-GPU memory as a quantity, for messages and tables."""
        return format_bytes(self.gpu_memory_per_gpu_bytes)

    @property
    def gpu_memory_total_bytes(self) -> int:
        return quantity_bytes(self.gpu_memory_total)

    @property
    def gpu_memory_per_gpu_bytes(self) -> int:
        return self.gpu_memory_total_bytes // self.gpu_count if self.gpu_count else 0


def _load(name: str) -> Any:
    import yaml

    text = resources.files("kaitoctl").joinpath("data", name).read_text(encoding="utf-8")
    # libyaml's loader parses the catalogs ~8x faster than the pure-Python one: it is most of
    # what every offline command spends after its imports (bench/bench_render.py).
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _build(cls: type, entry: dict[str, Any]) -> Any:
    """One catalog entry → its dataclass, naming the entry when the data is wrong (a packaging bug)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"catalog entry {entry.get('name')!r}: unknown keys {unknown}")
    return cls(**entry)


@functools.lru_cache(maxsize=None)
def presets() -> dict[str, Preset]:
    """All presets by name, in catalog order."""
    return {entry["name"]: _build(Preset, entry) for entry in _load("presets.yaml")["presets"]}


@functools.lru_cache(maxsize=None)
def skus() -> dict[str, Sku]:
    """All SKUs by name, in catalog order."""
    return {entry["name"]: _build(Sku, entry) for entry in _load("skus.yaml")["skus"]}


def get_preset(name: str) -> Optional[Preset]:
    """The preset called ``name`` (case-insensitive, as KAITO lower-cases it), or None."""
    return presets().get(name.lower())


def get_sku(name: str) -> Optional[Sku]:
    """The SKU called ``name`` (exact match), or None when the catalog does not know it."""
    return skus().get(name)
