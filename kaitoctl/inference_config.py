"""KAITO's ``inference_config.yaml`` (the ConfigMap named by ``inference.config``), as kaitoctl reads it.

KAITO's file holds ``max_probe_steps`` and a ``vllm:`` mapping of vLLM engine arguments, sometimes
a ``transformers:`` mapping. kaitoctl's server is transformers-based: it honours the settings that
mean something to it and reports every other key as ignored, in ``kaitoctl validate`` (notes)
and in the pod log. One module for both sides: the server (``kaitoctl_server.inference_config``)
imports this one, so the CLI's notes and the pod's behaviour cannot drift apart.

Imports only PyYAML (the CLI path stays light).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

SECTIONS = ("vllm", "transformers")
# Keys KAITO's controller reads itself; they mean nothing to a transformers server.
KAITO_KEYS = ("max_probe_steps",)
DTYPES = ("auto", "float16", "bfloat16", "float32")


def _positive_int(value: Any) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return str(value)


def _dtype(value: Any) -> Optional[str]:
    text = str(value).lower() if isinstance(value, str) else ""
    text = {"half": "float16", "fp16": "float16", "bf16": "bfloat16", "float": "float32", "fp32": "float32"}.get(text, text)
    return text if text in DTYPES else None


# Normalised key (lower case, "_" → "-") → (server environment variable, value check, what it is).
HONOURED: dict[str, tuple[str, Callable[[Any], Optional[str]], str]] = {
    "max-model-len": ("KAITOCTL_MAX_MODEL_LEN", _positive_int, "a positive integer (tokens of context)"),
    "max-tokens": ("KAITOCTL_MAX_TOKENS", _positive_int, "a positive integer (tokens per completion)"),
    "max-new-tokens": ("KAITOCTL_MAX_TOKENS", _positive_int, "a positive integer (tokens per completion)"),
    "dtype": ("KAITOCTL_DTYPE", _dtype, f"one of {', '.join(DTYPES)}"),
    "torch-dtype": ("KAITOCTL_DTYPE", _dtype, f"one of {', '.join(DTYPES)}"),
    "max-num-seqs": ("KAITOCTL_MAX_BATCH", _positive_int, "a positive integer (requests batched together)"),
    "max-batch-size": ("KAITOCTL_MAX_BATCH", _positive_int, "a positive integer (requests batched together)"),
    "max-queue": ("KAITOCTL_MAX_QUEUE", _positive_int, "a positive integer (requests waiting)"),
    "tensor-parallel-size": ("KAITOCTL_TENSOR_PARALLEL_SIZE", _positive_int, "a positive integer (GPUs per model copy)"),
}


@dataclass
class InferenceConfig:
    """What the file means to kaitoctl's server."""

    settings: dict[str, str] = field(default_factory=dict)   # env var → value
    ignored: list[str] = field(default_factory=list)         # "vllm.swap-space: vLLM-only", ...
    errors: list[str] = field(default_factory=list)          # file problems (bad YAML, bad values)

    def lines(self) -> list[str]:
        """One line per decision, for the pod log."""
        out = [f"inference config: {name}={value}" for name, value in sorted(self.settings.items())]
        out += [f"inference config: ignored {text}" for text in self.ignored]
        return out


def interpret(text: str) -> InferenceConfig:
    """Read the content of ``inference_config.yaml``. Never raises: problems land in ``errors``."""
    import yaml

    result = InferenceConfig()
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        result.errors.append(f"inference_config.yaml is not valid YAML{where}: {getattr(err, 'problem', err)}")
        return result
    if data is None:
        return result
    if not isinstance(data, dict):
        result.errors.append("inference_config.yaml must be a mapping (max_probe_steps, vllm:, transformers:)")
        return result
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            for inner, setting in value.items():
                _one(result, f"{key}.{inner}", str(inner), setting, section=str(key))
        elif key in KAITO_KEYS:
            result.ignored.append(f"{key}: read by KAITO's controller (vLLM memory probing), not by kaitoctl's server")
        else:
            _one(result, str(key), str(key), value, section="")
    return result


def _one(result: InferenceConfig, where: str, key: str, value: Any, *, section: str) -> None:
    normalised = key.lower().replace("_", "-")
    known = HONOURED.get(normalised)
    if known is None:
        why = "a vLLM engine argument" if section == "vllm" else "not a setting of kaitoctl's transformers server"
        result.ignored.append(f"{where}: {why}")
        return
    env, check, expected = known
    text = check(value)
    if text is None:
        result.errors.append(f"{where} must be {expected}, found {value!r}")
        return
    if env in result.settings and result.settings[env] != text:
        result.errors.append(f"{where} = {text} contradicts an earlier setting of the same thing "
                             f"({env}={result.settings[env]})")
        return
    result.settings[env] = text
