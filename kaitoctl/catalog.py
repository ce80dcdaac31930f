"""Preset and GPU SKU catalogs: data files under ``kaitoctl/data/``, looked up by name.

Adding a preset or a SKU means adding an entry to ``presets.yaml`` or
``skus.yaml``; no code changes. Memory quantities are kept as Kubernetes
quantity strings in the data and exposed in bytes.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field, fields
from fractions import Fraction
from collections.abc import Iterator, Mapping
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
    # Today's presets (kaito-2026-facts): access to the repo, where the weights come from, and
    # the model's shape for the KV-cache fit (0 / "" where the facts give none).
    gated: bool = False                # gated Hugging Face repo: needs presetOptions.modelAccessSecret
    weights_at_start: bool = False     # fetched from Hugging Face when the pod starts (no per-model image)
    architecture: str = ""             # config.json architectures[0]
    weights: str = ""                  # safetensors size on disk, quantity
    context_length: int = 0            # the model's token limit
    hidden_size: int = 0
    num_layers: int = 0
    num_heads: int = 0
    num_kv_heads: int = 0
    # (num_heads, num_kv_heads also decide the tensor-parallel split: world_size must divide both.)

    def tensor_parallel_problem(self, processes: int) -> Optional[str]:
        """Why the model cannot be split over ``processes`` (tensor parallel), or None when it can."""
        uneven = [f"{n} {what}" for n, what in ((self.num_heads, "attention heads"),
                                                 (self.num_kv_heads, "key/value heads")) if n and n % processes]
        if not uneven:
            return None
        both = math.gcd(self.num_heads, self.num_kv_heads)
        fits = [d for d in range(1, both + 1) if both % d == 0]
        return (f"{self.name} has {' and '.join(uneven)}, which cannot be split evenly over {processes} processes "
                f"(tensor parallel); the process count must divide them: {', '.join(map(str, fits))}")

    @property
    def weight_bytes(self) -> int:
        return quantity_bytes(self.weights) if self.weights else 0

    def kv_cache_bytes(self, tokens: int, dtype_bytes: int = 2) -> int:
        """KV cache of ``tokens`` tokens (one sequence): 2 (K and V) × layers × kv heads × head dim × dtype.

        0 when the catalog has no shape for this preset.
        """
        if not (self.hidden_size and self.num_layers and self.num_heads and self.num_kv_heads):
            return 0
        head_dim = self.hidden_size // self.num_heads
        return 2 * self.num_layers * self.num_kv_heads * head_dim * dtype_bytes * tokens

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


@dataclass(frozen=True)
class Architecture:
    """Whether kaitoctl's server serves a model architecture, and on which GPUs."""

    name: str
    served: bool
    min_compute_capability: str = ""
    reason: str = ""


@dataclass(frozen=True)
class GpuModel:
    """A GPU model's CUDA compute capability ("8.0")."""

    name: str
    compute_capability: str


def compute_capability(text: str) -> tuple[int, ...]:
    """ "8.9" → (8, 9), for comparisons."""
    return tuple(int(part) for part in str(text).split(".") if part.isdigit())


def _read(name: str) -> str:
    # The package's loader reads its data (files, or a zip); importlib.resources would import
    # zipfile and tempfile, ~3 ms of start-up for every offline command.
    return __loader__.get_data(os.path.join(os.path.dirname(__file__), "data", name)).decode("utf-8")


def _parse(text: str) -> Any:
    import yaml

    # libyaml's loader parses the catalogs ~8x faster than the pure-Python one.
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _build(cls: type, entry: dict[str, Any]) -> Any:
    """One catalog entry → its dataclass, naming the entry when the data is wrong (a packaging bug)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ValueError(f"catalog entry {entry.get('name')!r}: unknown keys {unknown}")
    return cls(**entry)


# The first line of a catalog entry whose first key is a plain name: "- name: x" or "  - {name: x, ...}".
_ENTRY = re.compile(r" *- \{?name: ([A-Za-z0-9][A-Za-z0-9_.-]*)(?:[,}\s]|$)")


class _Catalog(Mapping[str, Any]):
    """One catalog's entries by name, in file order; a lookup by name parses only that entry.

    Parsing a whole catalog file costs ~2.5 ms, and a command that renders one workspace needs one
    preset and one SKU. The file is cut at its top-level list items; an entry is parsed from its
    own lines when first looked up, and checked to be the entry of that name. Anything unexpected
    (a layout the cut does not recognise, an entry that does not parse alone, a duplicate name)
    parses the whole file instead, as does listing or counting the entries.
    """

    def __init__(self, filename: str, key: str, cls: type) -> None:
        self._filename, self._key, self._cls = filename, key, cls
        self._text = _read(filename)
        self._chunks = self._cut(self._text)
        self._built: dict[str, Any] = {}
        self._all: Optional[dict[str, Any]] = None

    def _cut(self, text: str) -> Optional[dict[str, str]]:
        """Each entry's own lines by name, or None unless the file is exactly "<key>:" and a list."""
        lines = text.splitlines(keepends=True)
        body = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
        if len(body) < 2 or lines[body[0]].rstrip() != f"{self._key}:":
            return None
        indent = len(lines[body[1]]) - len(lines[body[1]].lstrip(" "))
        starts = []
        for i in body[1:]:
            depth = len(lines[i]) - len(lines[i].lstrip(" "))
            if depth < indent or (depth == indent and not lines[i][depth:].startswith("- ")):
                return None  # another key, or not a list
            if depth == indent:
                starts.append(i)
        chunks: dict[str, str] = {}
        for start, end in zip(starts, [*starts[1:], len(lines)]):
            match = _ENTRY.match(lines[start])
            if not match or match.group(1) in chunks:
                return None
            chunks[match.group(1)] = "".join(lines[start:end])
        return chunks

    def _everything(self) -> dict[str, Any]:
        if self._all is None:
            self._all = {entry["name"]: _build(self._cls, entry) for entry in _parse(self._text)[self._key]}
        return self._all

    def __getitem__(self, name: str) -> Any:
        if self._all is None and self._chunks is not None:
            if name not in self._built:
                chunk = self._chunks.get(name)
                if chunk is None:
                    raise KeyError(name)
                try:
                    parsed = _parse(chunk)
                except Exception:  # noqa: BLE001 - any surprise: parse the whole file instead
                    parsed = None
                if not (isinstance(parsed, list) and len(parsed) == 1 and isinstance(parsed[0], dict)
                        and parsed[0].get("name") == name):
                    return self._everything()[name]
                self._built[name] = _build(self._cls, parsed[0])
            return self._built[name]
        return self._everything()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._everything())

    def __len__(self) -> int:
        return len(self._everything())


@functools.lru_cache(maxsize=None)
def presets() -> Mapping[str, Preset]:
    """All presets by name, in catalog order."""
    return _Catalog("presets.yaml", "presets", Preset)


@functools.lru_cache(maxsize=None)
def skus() -> Mapping[str, Sku]:
    """All SKUs by name, in catalog order."""
    return _Catalog("skus.yaml", "skus", Sku)


@functools.lru_cache(maxsize=None)
def architectures() -> Mapping[str, Architecture]:
    """Model architectures kaitoctl's server knows, by name."""
    return _Catalog("architectures.yaml", "architectures", Architecture)


@functools.lru_cache(maxsize=None)
def gpu_models() -> Mapping[str, GpuModel]:
    """GPU models by name (as skus.yaml and GPU Feature Discovery's gpu.product write them)."""
    return _Catalog("gpus.yaml", "gpus", GpuModel)


def get_gpu_model(product: str) -> Optional[GpuModel]:
    """The GPU model for a name such as "NVIDIA A100-80GB" or GFD's "NVIDIA-A100-SXM4-80GB" (best effort)."""
    found = gpu_models().get(product)
    if found is not None:
        return found
    words = product.replace("-", " ").replace("_", " ").upper().split()
    best: Optional[GpuModel] = None
    for model in gpu_models().values():
        name = model.name.replace("-", " ").upper().split()
        if all(word in words for word in name) and (best is None or len(model.name) > len(best.name)):
            best = model
    return best


def get_preset(name: str) -> Optional[Preset]:
    """The preset called ``name`` (case-insensitive, as KAITO lower-cases it), or None."""
    return presets().get(name.lower())


def get_sku(name: str) -> Optional[Sku]:
    """The SKU called ``name`` (exact match), or None when the catalog does not know it."""
    return skus().get(name)
