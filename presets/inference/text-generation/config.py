"""Server configuration: one frozen object built from the environment (or flags).

The rendered pods pass everything as ``KAITOCTL_*`` environment variables (see
docs/server.md and the pod contract); ``python -m kaitoctl_server`` flags set
the same variables, and ``kaitoctl serve`` builds a ``ServerConfig`` directly.
Nothing here imports torch, so a bad value fails in milliseconds.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from . import inference_config
from .errors import ConfigError

DEFAULT_MODEL_DIR = "/workspace/tfs/weights"
DEFAULT_ADAPTER_DIR = "/mnt/adapter"
DEFAULT_BIND = "0.0.0.0:5000"
DTYPES = ("auto", "bfloat16", "float16", "float32")
DEVICES = ("auto", "cpu", "cuda")
# KAITO calls the chat pipeline "conversational"; both names are accepted.
PIPELINES = {"text-generation": "text-generation", "chat": "chat", "conversational": "chat"}
DEFAULT_MAX_TOKENS = 4096
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# Continuous batching (engine.py): generations in the running batch, and waiting for a place in it.
# Kept in step with engine.DEFAULT_MAX_BATCH / DEFAULT_MAX_QUEUE (this module must not import the engine).
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_QUEUE = 64
# gunicorn threads beyond max_batch + max_queue, so that /health and /metrics always find one free.
SPARE_THREADS = 8
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class AdapterRef:
    """One adapter to merge: its name, its directory and its strength."""

    name: str
    path: str
    strength: float = 1.0


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to know before it loads the model.

    ``adapters`` is ``None`` when no list was given: the server then falls back
    to KAITO's convention (scan ``adapter_dir``, strength from an environment
    variable named after each adapter). An empty tuple means "no adapters".
    """

    model_dir: str = DEFAULT_MODEL_DIR
    dtype: str = "auto"
    pipeline: str = "text-generation"
    trust_remote_code: bool = False
    device: str = "auto"
    adapter_dir: str = DEFAULT_ADAPTER_DIR
    adapters: Optional[tuple[AdapterRef, ...]] = None
    allow_pickled_adapters: bool = False
    api_key: Optional[str] = None
    bind: str = DEFAULT_BIND
    model_name: Optional[str] = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH
    max_queue: int = DEFAULT_MAX_QUEUE
    max_model_len: int = 0  # tokens of context served; 0: the model's own limit (KAITOCTL_MAX_MODEL_LEN)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"KAITOCTL_DTYPE: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.device not in DEVICES:
            raise ConfigError(f"KAITOCTL_DEVICE: {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.pipeline not in PIPELINES:
            raise ConfigError(
                f"KAITOCTL_PIPELINE: {self.pipeline!r} is not one of text-generation, chat (or KAITO's conversational)"
            )
        object.__setattr__(self, "pipeline", PIPELINES[self.pipeline])
        if self.max_tokens < 1:
            raise ConfigError(f"KAITOCTL_MAX_TOKENS must be a positive integer, not {self.max_tokens}")
        if self.max_batch < 1:
            raise ConfigError(f"KAITOCTL_MAX_BATCH must be a positive integer, not {self.max_batch}")
        if self.max_queue < 0:
            raise ConfigError(f"KAITOCTL_MAX_QUEUE must be 0 or more, not {self.max_queue}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"KAITOCTL_MAX_BODY_BYTES must be at least 1024, not {self.max_body_bytes}")

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "ServerConfig":
        """Read the ``KAITOCTL_*`` variables (see the module docstring for the list)."""
        env = dict(os.environ if environ is None else environ)
        env = inference_config.apply(env)  # the workspace's inference.config, when mounted
        adapter_dir = env.get("KAITOCTL_ADAPTER_DIR") or DEFAULT_ADAPTER_DIR
        adapters_json = env.get("KAITOCTL_ADAPTERS")
        return cls(
            model_dir=env.get("KAITOCTL_MODEL") or DEFAULT_MODEL_DIR,
            dtype=(env.get("KAITOCTL_DTYPE") or "auto").lower(),
            pipeline=(env.get("KAITOCTL_PIPELINE") or "text-generation").lower(),
            trust_remote_code=_env_bool(env, "KAITOCTL_TRUST_REMOTE_CODE"),
            device=(env.get("KAITOCTL_DEVICE") or "auto").lower(),
            adapter_dir=adapter_dir,
            adapters=None if adapters_json is None else parse_adapter_list(adapters_json, adapter_dir),
            allow_pickled_adapters=_env_bool(env, "KAITOCTL_ALLOW_PICKLED_ADAPTERS"),
            api_key=env.get("KAITOCTL_API_KEY") or None,
            bind=env.get("KAITOCTL_BIND") or DEFAULT_BIND,
            model_name=env.get("KAITOCTL_MODEL_NAME") or None,
            max_tokens=_env_int(env, "KAITOCTL_MAX_TOKENS", DEFAULT_MAX_TOKENS),
            max_body_bytes=_env_int(env, "KAITOCTL_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            max_batch=_env_int(env, "KAITOCTL_MAX_BATCH", DEFAULT_MAX_BATCH),
            max_queue=_env_int(env, "KAITOCTL_MAX_QUEUE", DEFAULT_MAX_QUEUE),
            max_model_len=_env_int(env, "KAITOCTL_MAX_MODEL_LEN", 0),
            environ=env,
        )

    @property
    def min_threads(self) -> int:
        """Server threads needed so that health and metrics never wait behind generation requests."""
        return self.max_batch + self.max_queue + SPARE_THREADS

    def with_changes(self, **changes: Any) -> "ServerConfig":
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)

    def adapter_refs(self) -> list[AdapterRef]:
        """The adapters to merge, in order: the explicit list, or KAITO's directory scan."""
        if self.adapters is not None:
            return list(self.adapters)
        return scan_adapter_dir(self.adapter_dir, self.environ)


def parse_adapter_list(text: str, adapter_dir: str) -> tuple[AdapterRef, ...]:
    """Parse ``KAITOCTL_ADAPTERS``: ``[{"name": "a", "strength": 0.2}, ...]`` in merge order.

    Each adapter lives at ``<adapter_dir>/<name>/``. ``strength`` is a JSON
    number (a numeric string is accepted too, as Workspaces spell it) and
    defaults to 1.0.
    """
    where = "KAITOCTL_ADAPTERS"
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{where} is not valid JSON ({err}); expected e.g. [{{\"name\":\"a\",\"strength\":0.5}}]")
    if not isinstance(items, list):
        raise ConfigError(f"{where} must be a JSON list of {{\"name\", \"strength\"}} objects, not {type(items).__name__}")
    refs: list[AdapterRef] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{where}[{i}] must be an object with a string \"name\", got {item!r}")
        unknown = set(item) - {"name", "strength"}
        if unknown:
            raise ConfigError(f"{where}[{i}] has unknown keys {sorted(unknown)}; only \"name\" and \"strength\" are allowed")
        name = item["name"]
        check_adapter_name(name, f"{where}[{i}].name")
        if name in seen:
            raise ConfigError(f"{where}: adapter {name!r} is listed twice; each adapter may appear once")
        seen.add(name)
        strength = parse_strength(item.get("strength", 1.0), f"{where}[{i}].strength")
        refs.append(AdapterRef(name=name, path=str(Path(adapter_dir) / name), strength=strength))
    return tuple(refs)


def scan_adapter_dir(adapter_dir: str, environ: Mapping[str, str]) -> list[AdapterRef]:
    """KAITO's convention: every subdirectory holding ``adapter_config.json``.

    The strength comes from an environment variable named after the adapter
    (default 1.0). KAITO takes ``os.listdir`` order; we sort by name so the
    merge order, and the log, are the same on every start.
    """
    root = Path(adapter_dir)
    if not root.is_dir():
        return []
    refs = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and (p / "adapter_config.json").is_file()):
        raw = environ.get(sub.name, "1.0")
        strength = parse_strength(raw, f"environment variable {sub.name} (strength of adapter {sub.name!r})")
        refs.append(AdapterRef(name=sub.name, path=str(sub), strength=strength))
    return refs


def check_adapter_name(name: str, where: str) -> None:
    """Adapter names become directory names and metric labels: keep them plain."""
    if not _ADAPTER_NAME.match(name):
        raise ConfigError(
            f"{where}: {name!r} is not a valid adapter name (letters, digits, '.', '_' and '-', not starting with '.')"
        )


def parse_strength(value: Any, where: str) -> float:
    """A finite float from a JSON number or a numeric string."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        strength = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number such as 0.5, got {value!r}") from None
    if not math.isfinite(strength):
        raise ConfigError(f"{where}: the strength must be a finite number, got {value!r}")
    return strength


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise ConfigError(f"{name}: expected true or false, got {env[name]!r}")


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
