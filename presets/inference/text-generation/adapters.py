"""Read and check PEFT LoRA adapters before anything is merged.

An adapter directory holds ``adapter_config.json`` and
``adapter_model.safetensors`` (the layout PEFT's ``save_pretrained`` writes and
KAITO's adapter images carry). We read both ourselves rather than through
PEFT, so that every problem becomes one clear message naming the adapter, the
file and the module, before the model is touched:

- the config must describe a plain LoRA (not DoRA, not LoRA with biases or
  ``modules_to_save``: those cannot be scaled by a strength and folded into W);
- each target module must exist in the model, with the shapes the LoRA
  matrices expect (a mismatch means the adapter was trained on another base);
- weights come from safetensors only: a pickled ``adapter_model.bin`` runs
  code when unpickled, so it is refused unless the operator opts in
  (``KAITOCTL_ALLOW_PICKLED_ADAPTERS=true``, and even then it is read with
  ``torch.load(weights_only=True)``).

A ``base_model_name_or_path`` that does not name the served model is reported
as a warning, not an error: adapters are routinely trained against a hub id
(``tiiuae/falcon-7b``) and served from a directory (``/workspace/tfs/weights``);
the shape checks catch real mismatches.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .config import AdapterRef
from .errors import AdapterError

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "adapter_config.json"
SAFETENSORS_FILE = "adapter_model.safetensors"
PICKLE_FILE = "adapter_model.bin"

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$")
_EMBEDDING_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_embedding_A|lora_embedding_B)$")
# A whole layer's weight: PEFT's save_embedding_layers (on by default when target_modules names an
# embedding layer, or when the vocabulary was resized) stores full copies of the embedding layers.
_FULL_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+?)(?:\.base_layer)?\.weight$")

# Config features whose effect is not W += s * scaling * B @ A: merging them
# with a strength would silently serve something else than what was trained.
_UNMERGEABLE = {
    "use_dora": "DoRA (use_dora) rescales the merged weight by a learned magnitude",
    "lora_bias": "lora_bias adds a trained bias",
    "modules_to_save": "modules_to_save replaces whole modules with trained copies",
    "target_parameters": "target_parameters adapts raw parameters, not modules",
    "trainable_token_indices": "trainable_token_indices replaces embedding rows",
    "layer_replication": "layer_replication changes the model's layer structure",
    "alora_invocation_tokens": "activated LoRA applies only after its invocation tokens",
    "use_qalora": "QA-LoRA pools the input before the LoRA product",
}


@dataclass
class LoraLayer:
    """One module's LoRA pair, ready to merge: delta = scaling * B @ A (transposed if ``transpose``)."""

    module: str
    a: "torch.Tensor"  # (r, in), float32
    b: "torch.Tensor"  # (out, r), float32
    scaling: float
    transpose: bool  # GPT-2's Conv1D (fan_in_fan_out) and embeddings store W as (in, out)

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


@dataclass
class LoraAdapter:
    """A checked adapter: its reference (name, path, strength), its config and its layers."""

    ref: AdapterRef
    r: int
    alpha: float
    use_rslora: bool
    target_modules: Any
    base_model_name_or_path: Optional[str]
    layers: dict[str, LoraLayer] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def strength(self) -> float:
        return self.ref.strength

    def summary(self) -> dict[str, Any]:
        """What /v1/models and the start-up log show about this adapter."""
        return {
            "name": self.name,
            "strength": self.strength,
            "rank": self.r,
            "alpha": self.alpha,
            "use_rslora": self.use_rslora,
            "modules": len(self.layers),
            "path": self.ref.path,
            "base_model_name_or_path": self.base_model_name_or_path,
        }


def read_adapter_config(ref: AdapterRef) -> dict[str, Any]:
    """Read and check ``<dir>/adapter_config.json`` (no model needed: fails fast at start-up)."""
    directory = Path(ref.path)
    path = directory / CONFIG_FILE
    if not directory.is_dir():
        raise AdapterError(f"adapter {ref.name!r}: directory {directory} does not exist")
    if not path.is_file():
        raise AdapterError(
            f"adapter {ref.name!r}: {path} is missing; an adapter directory holds {CONFIG_FILE} and {SAFETENSORS_FILE}"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AdapterError(f"adapter {ref.name!r}: cannot read {path}: {err}") from None
    if not isinstance(config, dict):
        raise AdapterError(f"adapter {ref.name!r}: {path} must hold a JSON object")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise AdapterError(
            f"adapter {ref.name!r}: {path} has peft_type {config.get('peft_type')!r}; only LORA adapters can be merged"
        )
    for key, why in _UNMERGEABLE.items():
        if config.get(key):
            raise AdapterError(
                f"adapter {ref.name!r}: {path} sets {key}={config[key]!r}, which cannot be merged with a strength "
                f"({why}); retrain the adapter without it"
            )
    if config.get("bias", "none") != "none":
        raise AdapterError(
            f"adapter {ref.name!r}: {path} sets bias={config['bias']!r}, which trains biases that cannot be "
            "merged with a strength; retrain with bias=\"none\""
        )
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise AdapterError(f"adapter {ref.name!r}: {path}: {key} must be a positive number, got {value!r}")
    if not config.get("target_modules"):
        raise AdapterError(f"adapter {ref.name!r}: {path}: target_modules is empty")
    return config


def load_adapter(
    ref: AdapterRef,
    model: "torch.nn.Module",
    *,
    allow_pickled: bool = False,
    served_model_names: tuple[str, ...] = (),
) -> LoraAdapter:
    """Read the adapter at ``ref.path`` and check it against ``model``.

    ``served_model_names`` are the names the served model goes by (its
    directory, its ``_name_or_path``); a ``base_model_name_or_path`` matching
    none of them gives a warning.
    """
    config = read_adapter_config(ref)
    tensors = _read_weights(ref, allow_pickled=allow_pickled)
    r = int(config["r"])
    alpha = float(config["lora_alpha"])
    use_rslora = bool(config.get("use_rslora", False))
    adapter = LoraAdapter(
        ref=ref,
        r=r,
        alpha=alpha,
        use_rslora=use_rslora,
        target_modules=config["target_modules"],
        base_model_name_or_path=config.get("base_model_name_or_path"),
    )
    base_hint = (
        f" (it was trained on {adapter.base_model_name_or_path!r})" if adapter.base_model_name_or_path else ""
    )
    modules = dict(model.named_modules())
    tensors = _drop_embedding_copies(ref, tensors, model, modules)
    pairs = _pair_tensors(ref, tensors)
    _check_targets(ref, config["target_modules"], modules)
    for module_name, (kind, a, b) in sorted(pairs.items()):
        module = modules.get(module_name)
        if module is None:
            raise AdapterError(
                f"adapter {ref.name!r}: its weights adapt module {module_name!r}, which does not exist in the "
                f"served model{base_hint}; serve it with the base model it was trained on"
            )
        transpose, in_features, out_features = _module_geometry(ref, module_name, module, kind)
        layer_r = int(a.shape[0])
        if tuple(a.shape) != (layer_r, in_features) or tuple(b.shape) != (out_features, layer_r):
            raise AdapterError(
                f"adapter {ref.name!r}: module {module_name!r} is {in_features}->{out_features} in the served model "
                f"but the adapter's LoRA matrices are A{tuple(a.shape)} B{tuple(b.shape)}{base_hint}; "
                "the adapter was trained on a different base model"
            )
        module_r, module_alpha = _pattern_rank_alpha(config, module_name, r, alpha)
        if layer_r != module_r:
            raise AdapterError(
                f"adapter {ref.name!r}: module {module_name!r} has LoRA rank {layer_r} in {SAFETENSORS_FILE} but "
                f"{module_r} in {CONFIG_FILE} (r / rank_pattern); the two files do not belong together"
            )
        scaling = module_alpha / (math.sqrt(module_r) if use_rslora else module_r)
        adapter.layers[module_name] = LoraLayer(
            module=module_name, a=a, b=b, scaling=scaling, transpose=transpose
        )
    if not adapter.layers:
        raise AdapterError(f"adapter {ref.name!r}: {Path(ref.path) / SAFETENSORS_FILE} holds no LoRA weights")
    if adapter.base_model_name_or_path and served_model_names:
        if not _same_model(adapter.base_model_name_or_path, served_model_names):
            adapter.warnings.append(
                f"adapter {ref.name!r} was trained on {adapter.base_model_name_or_path!r} but the served model is "
                f"{served_model_names[0]!r}; its shapes fit, so it was merged: check it is the right base model"
            )
    return adapter


def _read_weights(ref: AdapterRef, *, allow_pickled: bool) -> dict[str, "torch.Tensor"]:
    directory = Path(ref.path)
    safetensors_path = directory / SAFETENSORS_FILE
    pickle_path = directory / PICKLE_FILE
    if safetensors_path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(safetensors_path), device="cpu")
        except (OSError, SafetensorError) as err:
            raise AdapterError(f"adapter {ref.name!r}: cannot read {safetensors_path}: {err}") from None
    if pickle_path.is_file():
        if not allow_pickled:
            raise AdapterError(
                f"adapter {ref.name!r}: {directory} has only pickled weights ({PICKLE_FILE}), which can run code "
                f"when loaded; convert them to {SAFETENSORS_FILE}, or set KAITOCTL_ALLOW_PICKLED_ADAPTERS=true "
                "(kaitoctl serve --allow-pickled-adapters) if you trust the file"
            )
        import torch

        try:
            state = torch.load(str(pickle_path), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is the file's fault
            raise AdapterError(f"adapter {ref.name!r}: cannot read {pickle_path}: {err}") from None
        if not isinstance(state, dict):
            raise AdapterError(f"adapter {ref.name!r}: {pickle_path} does not hold a state dict")
        return state
    raise AdapterError(f"adapter {ref.name!r}: {directory} has no {SAFETENSORS_FILE}")


def _drop_embedding_copies(ref: AdapterRef, tensors: dict[str, "torch.Tensor"], model: Any,
                           modules: dict[str, Any]) -> dict[str, "torch.Tensor"]:
    """Remove PEFT's saved copies of the embedding layers when they equal the served model's; refuse them otherwise.

    A copy equal to the served weights changes nothing, so the LoRA matrices merge as usual. A copy that
    differs (a resized vocabulary, trained embeddings) replaces the layer instead of adding a low-rank
    delta: it cannot be scaled by a strength, so the adapter is refused, saying why.
    """
    import torch

    embeddings = {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None}
    kept = {}
    for key, tensor in tensors.items():
        match = None if (_KEY.match(key) or _EMBEDDING_KEY.match(key)) else _FULL_KEY.match(key)
        module = modules.get(match["module"]) if match else None
        if module is None or id(module) not in embeddings:
            kept[key] = tensor
            continue
        served = module.weight
        where = f"adapter {ref.name!r}: {SAFETENSORS_FILE} holds a full copy of {match['module']!r}"
        why = ("(PEFT saves the embedding layers when target_modules names one or the vocabulary was resized; "
               "save_embedding_layers)")
        if tuple(tensor.shape) != tuple(served.shape):
            raise AdapterError(
                f"{where} of shape {tuple(tensor.shape)}, but the served model's is {tuple(served.shape)} {why}: the "
                "vocabulary was resized during fine-tuning, which a LoRA merge cannot reproduce; serve the "
                "fine-tuned model with its resized vocabulary instead"
            )
        if not torch.equal(served.detach().to("cpu", tensor.dtype), tensor):
            raise AdapterError(
                f"{where} whose values differ from the served model's {why}: the embeddings were trained, and "
                "replacing a layer cannot be scaled by a strength; serve the fine-tuned model, or save the adapter "
                "again with save_embedding_layers=False if the embeddings were not meant to change"
            )
    return kept


def _pair_tensors(ref: AdapterRef, tensors: dict[str, "torch.Tensor"]) -> dict[str, tuple[str, Any, Any]]:
    """Group tensors by module: {module: (kind, A, B)} with A, B in float32."""
    import torch

    found: dict[str, dict[str, Any]] = {}
    unknown = []
    for key, tensor in tensors.items():
        match = _KEY.match(key) or _EMBEDDING_KEY.match(key)
        if not match:
            unknown.append(key)
            continue
        part = match["part"]
        kind = "embedding" if part.startswith("lora_embedding") else "linear"
        entry = found.setdefault(match["module"], {"kind": kind})
        entry["A" if part.endswith("A") else "B"] = tensor.to(torch.float32)
    if unknown:
        shown = ", ".join(unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise AdapterError(
            f"adapter {ref.name!r}: {SAFETENSORS_FILE} holds tensors that are not LoRA A/B matrices ({shown}); "
            "only plain LoRA adapters can be merged"
        )
    pairs = {}
    for module, entry in found.items():
        if "A" not in entry or "B" not in entry:
            missing = "lora_B" if "A" in entry else "lora_A"
            raise AdapterError(f"adapter {ref.name!r}: module {module!r} has no {missing} weight in {SAFETENSORS_FILE}")
        pairs[module] = (entry["kind"], entry["A"], entry["B"])
    return pairs


def _check_targets(ref: AdapterRef, targets: Any, modules: dict[str, Any]) -> None:
    """Every entry of ``target_modules`` must name at least one module of the model (PEFT's suffix rule)."""
    if isinstance(targets, str):
        if targets == "all-linear":
            return
        if not any(re.fullmatch(targets, name) for name in modules):
            raise AdapterError(
                f"adapter {ref.name!r}: target_modules regex {targets!r} matches no module of the served model"
            )
        return
    leaf_names = sorted({name.rsplit(".", 1)[-1] for name, module in modules.items() if hasattr(module, "weight")})
    for target in targets:
        if not any(name == target or name.endswith("." + target) for name in modules):
            raise AdapterError(
                f"adapter {ref.name!r}: target module {target!r} (adapter_config.json target_modules) does not "
                f"exist in the served model; its modules with weights are: {', '.join(leaf_names)}"
            )


def _module_geometry(ref: AdapterRef, name: str, module: Any, kind: str) -> tuple[bool, int, int]:
    """(transpose, in_features, out_features) of the module a LoRA pair adapts."""
    import torch
    from transformers.pytorch_utils import Conv1D

    if kind == "embedding":
        if not isinstance(module, torch.nn.Embedding):
            raise AdapterError(f"adapter {ref.name!r}: module {name!r} has embedding LoRA weights but is not an embedding")
        return True, module.num_embeddings, module.embedding_dim
    if isinstance(module, torch.nn.Linear):
        return False, module.in_features, module.out_features
    if isinstance(module, Conv1D):
        # GPT-2 style: weight is (in, out); PEFT forces fan_in_fan_out for it.
        in_features, out_features = module.weight.shape
        return True, int(in_features), int(out_features)
    raise AdapterError(
        f"adapter {ref.name!r}: module {name!r} is a {type(module).__name__}; only Linear, Conv1D (GPT-2) and "
        "Embedding modules can be merged"
    )


def _pattern_rank_alpha(config: dict[str, Any], module: str, r: int, alpha: float) -> tuple[int, float]:
    """Per-module rank and alpha from ``rank_pattern`` / ``alpha_pattern`` (PEFT's suffix-regex rule)."""

    def lookup(patterns: Any, default: Any) -> Any:
        for pattern, value in (patterns or {}).items():
            if re.fullmatch(rf"(.*\.)?(?:{pattern})", module):
                return value
        return default

    return int(lookup(config.get("rank_pattern"), r)), float(lookup(config.get("alpha_pattern"), alpha))


def _same_model(trained_on: str, served_names: tuple[str, ...]) -> bool:
    """Loose match: same path, same hub id, or same last path component (``org/falcon-7b`` ~ ``.../falcon-7b``)."""

    def norm(text: str) -> str:
        return text.rstrip("/").lower()

    trained = norm(trained_on)
    for name in served_names:
        if not name:
            continue
        served = norm(name)
        if trained == served or trained.rsplit("/", 1)[-1] == served.rsplit("/", 1)[-1]:
            return True
    return False
