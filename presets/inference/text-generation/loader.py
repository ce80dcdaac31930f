"""The start-up path, in one function shared by the pods and ``kaitoctl serve``.

    config -> base model loaded on the CPU -> adapter list -> each adapter
    checked -> exact float32 merge -> cast to the serving dtype -> moved to the
    device (spread over several GPUs when one is too small) -> one summary log
    line -> ``ServedModel``

Merging on the CPU, before the move, means the GPU only ever holds the merged
base weights: no LoRA modules, no per-token adapter cost, no second copy.

Under torchrun with more than one process (``WORLD_SIZE`` > 1) the model is
loaded with transformers' tensor-parallel plan instead: each rank reads only its
slice of every split weight, straight onto its device (its GPU, or the CPU),
and the merge adds each adapter's delta to that slice (see ``distributed.py``
and ``merge.py``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .adapters import LoraAdapter, load_adapter, read_adapter_config
from .config import ServerConfig
from .distributed import RankZeroRunner, World, heartbeat_seconds, init_group, timeout_seconds
from .engine import Engine
from .errors import ConfigError, StartupError
from .merge import merge_adapters

log = logging.getLogger("kaitoctl_server")

# Fraction of one GPU's free memory the weights may take before the model is
# spread over several GPUs (the rest is for activations and the KV cache).
_ONE_GPU_BUDGET = 0.85


@dataclass
class ServedModel:
    """A merged model on its device, with everything the HTTP layer needs to know about it."""

    model: Any
    tokenizer: Any
    engine: Engine
    config: ServerConfig
    model_name: str
    architecture: str
    num_parameters: int
    context_length: int
    dtype: str
    device: str
    adapters: list[dict[str, Any]] = field(default_factory=list)
    modules_touched: int = 0
    load_seconds: float = 0.0
    merge_seconds: float = 0.0
    move_seconds: float = 0.0
    created: int = 0
    warnings: list[str] = field(default_factory=list)
    group: Optional[RankZeroRunner] = None  # rank 0 of a tensor-parallel job: the broadcasting runner

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def load_served_model(config: ServerConfig) -> ServedModel:
    """Load, merge, cast and place the model described by ``config``; raise ``StartupError`` on any problem."""
    model_dir = Path(config.model_dir)
    raw_config = _read_model_config(model_dir)
    world = World.from_env()
    if world.distributed:
        _check_split(model_dir, raw_config, world.world_size)
    refs = config.adapter_refs()
    for ref in refs:  # cheap checks first: fail in milliseconds, not after loading the model
        read_adapter_config(ref)

    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    auto_class = _auto_model_class(raw_config)
    device = _resolve_device(config.device)
    split: dict[str, Any] = {}
    if world.distributed:
        if device == "cpu" and torch.cuda.is_available():
            # transformers' tensor-parallel plan always uses the accelerator it finds.
            raise ConfigError("KAITOCTL_DEVICE=cpu cannot split a model over processes on a machine with GPUs; "
                              "leave KAITOCTL_DEVICE unset (auto) or hide the GPUs (CUDA_VISIBLE_DEVICES=)")
        init_group(device)
        split = {"tp_plan": "auto"}
    stored = _stored_dtype(raw_config)
    serving = _serving_dtype(config.dtype, device, stored)
    active = [ref for ref in refs if ref.strength != 0]
    # Merge in a dtype that holds both the checkpoint and the served weights
    # exactly, so the only rounding is the final cast of W + delta.
    load_dtype = serving if (not active or stored == serving) else torch.float32

    # Progress for whoever watches the start (pod log, `kaitoctl serve`): a big model takes minutes here.
    where = f"split over {world.world_size} processes on {device}" if world.distributed else "on the CPU"
    log.info("loading the model from %s %s as %s", model_dir, where, str(load_dtype).replace("torch.", ""))
    started = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(model_dir), trust_remote_code=config.trust_remote_code, local_files_only=True
        )
        model = auto_class.from_pretrained(
            str(model_dir),
            trust_remote_code=config.trust_remote_code,
            local_files_only=True,
            **{_dtype_kwarg(): load_dtype},
            **split,
        )
    except (OSError, ValueError, KeyError, ImportError) as err:
        hint = "" if config.trust_remote_code else " (if the model needs custom code, set KAITOCTL_TRUST_REMOTE_CODE=true)"
        raise StartupError(f"cannot load the model from {model_dir}: {err}{hint}") from None
    model.eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    load_seconds = time.perf_counter() - started

    served_names = (str(model_dir), str(raw_config.get("_name_or_path") or ""))
    adapters: list[LoraAdapter] = [
        load_adapter(ref, model, allow_pickled=config.allow_pickled_adapters, served_model_names=served_names)
        for ref in refs
    ]
    if active:
        log.info("merging %d adapter(s) into the base weights in float32: %s", len(active),
                 ", ".join(f"{ref.name} (strength {ref.strength:g})" for ref in active))
    report = merge_adapters(model, adapters)
    warnings = [w for adapter in adapters for w in adapter.warnings]
    for warning in warnings:
        log.warning(warning)

    log.info("moving the model to %s as %s", device, str(serving).replace("torch.", ""))
    started = time.perf_counter()
    if model.dtype != serving:
        model.to(serving)
    try:
        if world.distributed:  # each shard is on its device already
            input_device = model.get_input_embeddings().weight.device
            device_desc = f"{input_device} (tensor-parallel rank {world.rank} of {world.world_size})"
        else:
            device_desc, input_device = _place(model, device)
    except torch.cuda.OutOfMemoryError:
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        raise StartupError(
            f"the model ({size / 2**30:.1f} GiB in {serving}) does not fit in GPU memory; use a GPU with more "
            "memory, more GPUs, or a smaller dtype (KAITOCTL_DTYPE)"
        ) from None
    move_seconds = time.perf_counter() - started

    group: Optional[RankZeroRunner] = None
    if world.distributed and world.rank == 0:  # rank 0 drives the others through its runner
        from .runner import BatchRunner

        group = RankZeroRunner(BatchRunner(model, input_device), init_group(device), world,
                               heartbeat=heartbeat_seconds(), stale_after=timeout_seconds())
    served = ServedModel(
        model=model,
        tokenizer=tokenizer,
        engine=Engine(model, tokenizer, input_device, runner=group, max_batch=config.max_batch,
                      max_queue=config.max_queue, generate_allowed=group is None),
        group=group,
        config=config,
        model_name=config.model_name or _model_name(model_dir, raw_config),
        architecture=type(model).__name__,
        num_parameters=sum(p.numel() for p in model.parameters()),
        context_length=min(_context_length(model, tokenizer), config.max_model_len or 2**62),
        dtype=str(serving).replace("torch.", ""),
        device=device_desc,
        adapters=[adapter.summary() for adapter in adapters],
        modules_touched=len(report.modules_touched),
        load_seconds=load_seconds,
        merge_seconds=report.seconds,
        move_seconds=move_seconds,
        created=int(time.time()),
        warnings=warnings,
    )
    log.info(summary_line(served))
    # From here on requests are validated by the API layer; transformers'
    # per-call advisories (KAITO's default top_k=10 with do_sample=false, a
    # checkpoint's max_length next to a request's max_new_tokens, ...) would
    # otherwise be logged for every request.
    hf_logging.set_verbosity_error()
    return served


def summary_line(served: ServedModel) -> str:
    """The one start-up log line: what is served, with which adapters, and how long each step took."""
    adapters = ", ".join(
        f"{a['name']}(r={a['rank']}, alpha={a['alpha']:g}, strength={a['strength']:g}, modules={a['modules']})"
        for a in served.adapters
    ) or "none"
    return (
        f"ready: model {served.model_name} ({served.architecture}, {served.num_parameters / 1e6:.2f}M params) "
        f"dtype={served.dtype} device={served.device} adapters=[{adapters}] "
        f"modules_touched={served.modules_touched} load={served.load_seconds:.2f}s "
        f"merge={served.merge_seconds:.2f}s move={served.move_seconds:.2f}s"
    )


def _auto_model_class(raw_config: dict[str, Any]) -> Any:
    """AutoModelForCausalLM, or AutoModelForImageTextToText for multimodal models it does not map
    (Mistral 3 / Ministral 3): served as text generation, prompts without images."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)

    model_type = raw_config.get("model_type")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


def _read_model_config(model_dir: Path) -> dict[str, Any]:
    if not model_dir.is_dir():
        raise StartupError(f"model directory {model_dir} does not exist (set KAITOCTL_MODEL or --model)")
    path = model_dir / "config.json"
    if not path.is_file():
        raise StartupError(f"{model_dir} has no config.json; point KAITOCTL_MODEL at a Hugging Face model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StartupError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise StartupError(f"{path} must hold a JSON object")
    return data


def _check_split(model_dir: Path, raw_config: dict[str, Any], processes: int) -> None:
    """Tensor parallelism splits attention by heads: the process count must divide both head counts."""
    heads = raw_config.get("num_attention_heads")
    kv_heads = raw_config.get("num_key_value_heads") or heads
    if not isinstance(heads, int) or not isinstance(kv_heads, int):
        raise StartupError(f"{model_dir}/config.json has no num_attention_heads: kaitoctl cannot split this model "
                           f"over WORLD_SIZE={processes} processes; serve it with one process")
    if heads % processes or kv_heads % processes:
        common = math.gcd(heads, kv_heads)
        fits = ", ".join(str(d) for d in range(1, common + 1) if common % d == 0)
        raise StartupError(
            f"the model in {model_dir} has {heads} attention heads and {kv_heads} key/value heads, which cannot be "
            f"split evenly over WORLD_SIZE={processes} processes (tensor parallel); run a number of processes "
            f"that divides both: {fits}"
        )


def _resolve_device(choice: str) -> str:
    import torch

    if choice == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if choice == "cuda":
        raise ConfigError("KAITOCTL_DEVICE=cuda but torch sees no CUDA device")
    return "cpu"


def _stored_dtype(raw_config: dict[str, Any]) -> "Any":
    import torch

    name = raw_config.get("dtype") or raw_config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name).replace("torch.", ""), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def _serving_dtype(choice: str, device: str, stored: Any) -> Any:
    """``auto``: float32 on a CPU (half precision is slow or unsupported there), the checkpoint's dtype on a GPU."""
    import torch

    if choice == "auto":
        return torch.float32 if device == "cpu" else stored
    return getattr(torch, choice)


def _dtype_kwarg() -> str:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _place(model: Any, device: str) -> tuple[str, Any]:
    """Move the model to its device(s); return (description, device of the input ids)."""
    import torch

    if device == "cpu":
        return "cpu", torch.device("cpu")
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    free, _total = torch.cuda.mem_get_info(0)
    if torch.cuda.device_count() == 1 or size < free * _ONE_GPU_BUDGET:
        model.to("cuda:0")
        return "cuda:0", torch.device("cuda:0")
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = sorted(getattr(model, "_no_split_modules", None) or [])
    max_memory = get_balanced_memory(model, no_split_module_classes=no_split, dtype=model.dtype)
    device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)
    dispatch_model(model, device_map=device_map)
    used = sorted({str(d) for d in device_map.values()})
    input_device = model.get_input_embeddings().weight.device
    return f"{len(used)} devices ({', '.join(used)})", input_device


def _context_length(model: Any, tokenizer: Any) -> int:
    # Multimodal models (Gemma 3, Mistral 3) keep the language model's limits in text_config.
    for config in (model.config, getattr(model.config, "text_config", None)):
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10_000_000:
        return limit
    return 2048


def _model_name(model_dir: Path, raw_config: dict[str, Any]) -> str:
    """The id /v1/models shows: the checkpoint's hub id when it recorded one, else the directory name."""
    name = str(raw_config.get("_name_or_path") or "")
    if name and not name.startswith(("/", ".")) and not Path(name).is_absolute():
        return name
    return model_dir.name or str(model_dir)


def optional_gpu_memory() -> Optional[list[tuple[str, int, int]]]:
    """(device, allocated bytes, reserved bytes) per visible GPU, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return [
        (f"cuda:{i}", torch.cuda.memory_allocated(i), torch.cuda.memory_reserved(i))
        for i in range(torch.cuda.device_count())
    ]
