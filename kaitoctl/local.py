"""Local mode: serve a Workspace on this machine with the pods' server (``kaitoctl serve -f``).

One straight line, as in the pod:

    Workspace (validated) ──plan──▶ what it names, found on this machine (model
    directory or Hugging Face id, one directory per adapter, strengths from the
    workspace) ──server_config──▶ the ServerConfig the pod's KAITOCTL_* variables
    would give ──serve──▶ kaitoctl_server.local.run: load, exact merge, move to
    the device, serve KAITO's and OpenAI's APIs on 127.0.0.1

Everything a workspace names that is not on this machine is reported at once,
before torch is even imported. ``kaitoctl demo`` (kaitoctl/demo.py) goes
through exactly this path. Nothing here imports torch or the server at module
level: ``kaitoctl --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from kaitoctl.errors import Interrupted, ServeError, UsageError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kaitoctl.catalog import Preset
    from kaitoctl.workspace import Workspace

# What `kaitoctl serve` and `kaitoctl demo` import, by import name: the `server` extra (setup.cfg).
SERVER_MODULES = ("torch", "transformers", "peft", "safetensors", "flask")
SERVER_EXTRA_HINT = ("install the server extra: `pip install torch==2.13.0` (or the build your machine needs), then "
                     "`pip install '.[server]'` in the kaitoctl checkout; or run `make demo`, which installs "
                     "everything into .venv")


def require_server_extra(command: str) -> None:
    """ServeError (exit 8) naming the fix when the CLI-only install lacks the server's packages.

    Checked before anything is created or loaded, without importing them (find_spec only).
    """
    import importlib.util

    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ServeError(f"kaitoctl {command} runs the bundled inference server, whose packages are not installed "
                         f"here: {', '.join(missing)} (the CLI-only `pip install .` leaves them out)",
                         hint=SERVER_EXTRA_HINT)


def run_until_stopped(server: Any, config: Any, on_ready: Callable[[Any, str], None],
                      stop_event: Optional[threading.Event] = None, *, nproc: int = 1) -> None:
    """``kaitoctl_server.local.run``; a Ctrl-C before the model is served says what it interrupted (exit 130)."""
    ready = threading.Event()

    def mark_ready(served: Any, url: str) -> None:
        ready.set()
        on_ready(served, url)

    try:
        server.run(config, on_ready=mark_ready, stop_event=stop_event, nproc=nproc)
    except KeyboardInterrupt:
        if ready.is_set():
            raise
        raise Interrupted(f"interrupted while loading the model from {config.model_dir} (load, adapter merge, move "
                          "to the device): nothing was served") from None


def server_import_error(err: ImportError) -> ServeError:
    """The ServeError for an import of the server's packages that failed anyway."""
    return ServeError(f"the inference server cannot be imported: {err}", hint=SERVER_EXTRA_HINT)


# "org/name": how the Hugging Face Hub spells a model id.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# A --adapter value NAME=DIR:STRENGTH; in -f mode the strength comes from the workspace.
_STRENGTH_SUFFIX = re.compile(r"^(?P<path>.+):(?P<strength>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)$")
# Files the server reads from a Hugging Face model repository: weights in safetensors, configs,
# tokenizer files and, for trust_remote_code presets, the model's own Python code.
_HUB_FILES = ["*.json", "*.safetensors", "*.py", "*.model", "*.tiktoken", "*.txt", "*.jinja"]
API_KEY_ANNOTATION = "kaitoctl.io/api-key-secret"


@dataclass(frozen=True)
class LocalModel:
    """Where the base weights come from: a directory here, or a Hugging Face id (downloaded once)."""

    location: str
    hub: bool = False
    revision: Optional[str] = None

    def describe(self) -> str:
        if not self.hub:
            return self.location
        return f"{self.location}@{self.revision}" if self.revision else self.location


@dataclass(frozen=True)
class LocalAdapter:
    """One adapter of the workspace, with its directory on this machine and the workspace's strength."""

    name: str
    path: str
    strength: float
    field: str  # where the workspace names it, e.g. inference.adapters[0]


@dataclass(frozen=True)
class LocalPlan:
    """A workspace mapped onto this machine: everything the server needs, nothing loaded yet."""

    workspace: "Workspace"
    preset: "Preset"
    model: LocalModel
    adapters: tuple[LocalAdapter, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def pipeline(self) -> str:
        return self.preset.pipeline


def pick_workspace(workspaces: Sequence["Workspace"], name: Optional[str], filename: str) -> "Workspace":
    """The one workspace of the file to serve: ``--name``, or the only one there is."""
    names = [ws.name for ws in workspaces]
    if name is not None:
        for ws in workspaces:
            if ws.name == name:
                return ws
        raise UsageError(f"--name {name}: {filename} has no workspace of that name",
                         hint=f"its workspaces are: {', '.join(names)}")
    if len(workspaces) != 1:
        raise UsageError(f"{filename} holds {len(workspaces)} workspaces; kaitoctl serve runs one",
                         hint=f"pick one with --name ({', '.join(names)})")
    return workspaces[0]


def parse_adapter_dirs(options: Sequence[str], ws: "Workspace") -> dict[str, str]:
    """``--adapter NAME=DIR`` values (in -f mode) -> {name: dir}, checked against the workspace's adapters.

    A ``:STRENGTH`` suffix is refused: the strengths are the workspace's, as in
    the pod (unless the whole value is an existing directory whose name happens
    to end in ``:<number>``).
    """
    known = {adapter.name: i for i, adapter in enumerate(ws.adapters)}
    dirs: dict[str, str] = {}
    unknown: list[str] = []
    for value in options:
        name, sep, path = value.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise UsageError(f"--adapter {value!r}: expected NAME=DIR",
                             hint="for example --adapter sql=./adapters/sql (a directory with adapter_config.json)")
        suffix = _STRENGTH_SUFFIX.match(path)
        if suffix and not Path(path).is_dir():
            index = known.get(name)
            where = (f"inference.adapters[{index}].strength is {ws.adapters[index].strength_value:g}"
                     if index is not None else "the workspace sets each adapter's strength")
            raise UsageError(
                f"--adapter {value}: with -f the strength comes from the workspace ({where}); "
                f"drop ':{suffix.group('strength')}'",
                hint="change the strength in the workspace file, or serve without -f: "
                     "kaitoctl serve --model DIR --adapter NAME=DIR:STRENGTH",
            )
        if name in dirs:
            raise UsageError(f"--adapter: {name} given more than once; each adapter may appear once")
        if name not in known:
            unknown.append(name)
        dirs[name] = path
    if unknown:
        have = ", ".join(known) if known else "none"
        raise UsageError(
            f"--adapter: workspace/{ws.name} has no adapter named {', '.join(unknown)}",
            hint=f"its adapters (inference.adapters[*].source.name) are: {have}",
        )
    return dirs


def plan_workspace(ws: "Workspace", *, model: Optional[str], adapter_dirs: dict[str, str],
                   adapter_dir: Optional[str] = None) -> LocalPlan:
    """Map ``ws`` onto this machine, or raise ServeError listing everything it names that is missing here.

    The model is ``model`` (a directory, or a Hugging Face id), else the
    preset's ``model_id`` at its ``model_revision``. Each adapter is
    ``adapter_dirs[name]``, else ``<adapter_dir>/<name>`` (the pod's layout).
    """
    from kaitoctl.catalog import get_preset

    if ws.inference is not None and ws.inference.template is not None:
        raise ServeError(
            f"workspace/{ws.name} runs its own pod (inference.template): kaitoctl serve runs the bundled "
            "server for presets only, so this workspace cannot be served locally",
            hint="run the template's container image yourself (docker run ...), or use a workspace with "
                 "inference.preset",
        )
    preset = get_preset(ws.preset_name or "")
    if preset is None:  # validation rejects this already; kept for workspaces built in code
        raise ServeError(f"workspace/{ws.name}: inference.preset.name {ws.preset_name!r} is not a known preset",
                         hint="run `kaitoctl presets list` for the valid names")
    missing: list[str] = []
    notes: list[str] = []
    local_model = _locate_model(model, preset, missing, notes)
    adapters = []
    for index, spec in enumerate(ws.adapters):
        where = f"inference.adapters[{index}]"
        given = adapter_dirs.get(spec.name)
        path = given or (str(Path(adapter_dir) / spec.name) if adapter_dir else None)
        image = spec.source.image if spec.source and spec.source.image else None
        whence = f" (its image {image} holds it under /data)" if image else ""
        if path is None:
            missing.append(f"adapter {spec.name} ({where}): no local directory given; pass "
                           f"--adapter {spec.name}=DIR{whence}")
        elif not Path(path).is_dir():
            flag = f"--adapter {spec.name}={given}" if given else f"--adapter-dir {adapter_dir}"
            missing.append(f"adapter {spec.name} ({where}): directory {path} does not exist ({flag})")
        elif not (Path(path) / "adapter_config.json").is_file():
            missing.append(f"adapter {spec.name} ({where}): {path} has no adapter_config.json; an adapter "
                           "directory holds adapter_config.json and adapter_model.safetensors")
        adapters.append(LocalAdapter(spec.name, path or "", spec.strength_value, where))
    if missing:
        count = len(missing)
        raise ServeError(
            f"workspace/{ws.name} names {count} thing{'s' if count != 1 else ''} not found on this machine",
            details=missing,
            hint=("copy an adapter out of its image with: docker create --name x IMAGE true && "
                  "docker cp x:/data DIR && docker rm x") if any(m.startswith("adapter ") for m in missing) else None,
        )
    secret = (ws.metadata.annotations or {}).get(API_KEY_ANNOTATION)
    if secret:
        notes.append(f"the workspace reads its API key from Secret {secret}; locally, pass --api-key "
                     "(or set KAITOCTL_API_KEY) to require one")
    return LocalPlan(ws, preset, local_model, tuple(adapters), tuple(notes))


def _locate_model(model: Optional[str], preset: "Preset", missing: list[str], notes: list[str]) -> LocalModel:
    """The model to load, appending to ``missing`` what cannot be found (nothing is downloaded here).

    ``--model`` is a directory when one exists there or when it does not look
    like a Hugging Face id (``org/name``).
    """
    if model is not None and (Path(model).exists() or not _HUB_ID.match(model)):
        if not Path(model).is_dir():
            missing.append(f"model: directory {model} does not exist (--model)")
        elif not (Path(model) / "config.json").is_file():
            missing.append(f"model: {model} has no config.json; --model takes a Hugging Face model directory")
        return LocalModel(model)
    if model is None and preset.access == "private":
        missing.append(f"model: preset {preset.name} is private (its weights are in the image you build); "
                       "pass --model DIR with the weights")
        return LocalModel(preset.model_id, hub=True)
    hub_id = model or preset.model_id
    # The preset pins the commit its image was built from, as the pods fetch it. The catalog keeps
    # KAITO's 12-character commit prefixes, which the Hub resolves to the full commit (huggingface_hub
    # records the prefix under refs/, so a later offline run finds the snapshot in the cache).
    revision = preset.model_revision if hub_id == preset.model_id else None
    local = LocalModel(hub_id, hub=True, revision=revision)
    if _hub_offline() and _cached_snapshot(local) is None:
        origin = "--model" if model else f"preset {preset.name}'s model_id"
        missing.append(f"model: {local.describe()} ({origin}) is not a directory here nor in the Hugging Face cache, "
                       "and HF_HUB_OFFLINE is set; pass --model DIR with the weights, or download them with network")
    return local


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cached_snapshot(model: LocalModel) -> Optional[str]:
    """The cached snapshot directory of a hub model, or None when it is not (fully) cached."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return snapshot_download(model.location, revision=model.revision, allow_patterns=_HUB_FILES,
                                 local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not usable from the cache"
        return None


def resolve_model_dir(model: LocalModel, progress: Callable[[str], None]) -> str:
    """A directory holding the weights: ``model`` itself, or its Hugging Face snapshot (downloaded if needed)."""
    if not model.hub:
        return model.location
    cached = _cached_snapshot(model)
    if cached is not None:
        progress(f"using {model.describe()} from the Hugging Face cache ({cached})")
        return cached
    progress(f"downloading {model.describe()} from the Hugging Face Hub (safetensors, configs, tokenizer); "
             "this happens once")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model.location, revision=model.revision, allow_patterns=_HUB_FILES)
    except Exception as err:  # noqa: BLE001 - network, auth and missing-repo errors all end here
        raise ServeError(f"cannot download model {model.describe()} from the Hugging Face Hub: {err}",
                         hint="check the network and HF_TOKEN (gated models), or pass --model DIR") from None


@dataclass(frozen=True)
class LocalOptions:
    """How to serve locally: the flags of ``kaitoctl serve`` that are not about the workspace."""

    host: str = "127.0.0.1"
    port: int = 5000
    dtype: Optional[str] = None  # None: the preset's dtype on a GPU, float32 on a CPU
    device: str = "auto"
    api_key: Optional[str] = None
    max_tokens: int = 4096
    allow_pickled_adapters: bool = False
    nproc: int = 1  # > 1: the model split over this many processes (tensor parallel), as distributed pods run it

    @property
    def bind(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def local_dtype(preset_dtype: str, on_gpu: bool) -> tuple[str, str]:
    """(dtype, why) for a preset served here when ``--dtype`` is not given.

    On a GPU: the preset's dtype, as the pod serves it. On a CPU: float32,
    whatever the preset says. bfloat16 and float16 matrix products are slow on
    most CPUs (float16 ones partly unsupported), and float32 serves the exact
    merge unrounded; the price is twice the memory of bfloat16.
    """
    if on_gpu:
        return preset_dtype, f"the preset's dtype ({preset_dtype}), as in the pod"
    if preset_dtype in ("float32", "auto"):
        return "float32", f"the preset's {preset_dtype} on a CPU"
    return "float32", (f"the preset's {preset_dtype} is slow on CPUs, so float32 here (twice the memory; "
                       f"--dtype {preset_dtype} to keep it)")


def server_config(plan: LocalPlan, options: LocalOptions, model_dir: str, dtype: str) -> Any:
    """The ServerConfig the pod's KAITOCTL_* variables would give, pointed at this machine's files."""
    from kaitoctl_server.config import AdapterRef, ServerConfig

    return ServerConfig(
        model_dir=model_dir,
        dtype=dtype,
        pipeline=plan.preset.pipeline,
        trust_remote_code=plan.preset.trust_remote_code,
        device=options.device,
        adapters=tuple(AdapterRef(name=a.name, path=a.path, strength=a.strength) for a in plan.adapters),
        allow_pickled_adapters=options.allow_pickled_adapters,
        api_key=options.api_key,
        bind=options.bind,
        # A hub snapshot's directory is named after its commit: /v1/models shows the hub id instead.
        model_name=plan.model.location if plan.model.hub else None,
        max_tokens=options.max_tokens,
    )


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses (a wildcard address is reached through loopback)."""
    reach = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{reach}]:{port}" if ":" in reach else f"http://{reach}:{port}"


EXAMPLE_QUESTION = "What does a LoRA adapter do?"


def example_requests(pipeline: str, model_name: str, max_tokens: int = 24) -> list[tuple[str, dict[str, Any]]]:
    """(path, JSON body) of one KAITO /chat and one OpenAI chat request that this server answers."""
    messages = [{"role": "user", "content": EXAMPLE_QUESTION}]
    kaito: dict[str, Any] = (
        {"messages": messages} if pipeline == "chat" else {"prompt": EXAMPLE_QUESTION}
    )
    kaito["generate_kwargs"] = {"max_new_tokens": max_tokens}
    openai = {"model": model_name, "messages": messages, "max_tokens": max_tokens}
    return [("/chat", kaito), ("/v1/chat/completions", openai)]


def curl_line(url: str, path: str, body: dict[str, Any], *, api_key: bool = False) -> str:
    """The curl command that sends ``body`` to ``url + path`` (single-quoted JSON, POSIX shells)."""
    auth = ' -H "Authorization: Bearer $KAITOCTL_API_KEY"' if api_key else ""
    data = shlex.quote(json.dumps(body, separators=(", ", ": ")))
    return f"curl -s {url}{path} -H 'Content-Type: application/json'{auth} -d {data}"


def merge_summary(served: Any) -> list[str]:
    """One line per merged adapter (rank, alpha, strength, modules), then the total, from the loaded model."""
    lines = []
    for adapter in served.adapters:
        targets = _targets(adapter.get("path"))
        what = f", targets {', '.join(targets)}" if targets else ""
        skipped = " (strength 0: skipped)" if adapter["strength"] == 0 else ""
        lines.append(
            f"merged adapter {adapter['name']}: rank {adapter['rank']}, alpha {adapter['alpha']:g}, "
            f"strength {adapter['strength']:g}, {adapter['modules']} modules{what}{skipped}"
        )
    if not served.adapters:
        lines.append("no adapters: serving the base model")
    lines.append(f"modules touched by the merge: {served.modules_touched}; serving {served.model_name} "
                 f"({served.num_parameters / 1e6:.2f}M params) as {served.dtype} on {served.device}")
    return lines


def _targets(path: Optional[str]) -> list[str]:
    if not path:
        return []
    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    targets = config.get("target_modules") if isinstance(config, dict) else None
    if isinstance(targets, str):
        return [targets]
    return sorted(str(t) for t in targets) if isinstance(targets, list) else []


def serve_plan(plan: LocalPlan, options: LocalOptions, *,
               on_ready: Callable[[Any, str], None],
               progress: Callable[[str], None],
               stop_event: Optional[threading.Event] = None) -> None:
    """Load, merge and serve ``plan`` here until Ctrl-C, SIGTERM or ``stop_event``; ServeError on failure.

    ``on_ready(served, url)`` runs once the merged model is on its device and
    the port is open; ``url`` is the one a client on this machine uses.
    """
    try:
        from kaitoctl_server import local
        from kaitoctl_server.errors import StartupError
    except ImportError as err:
        raise server_import_error(err) from None
    if options.nproc > 1:
        problem = plan.preset.tensor_parallel_problem(options.nproc)
        if problem:
            raise UsageError(f"--nproc {options.nproc}: {problem}")
    try:
        on_gpu = local.serving_device(options.device) == "cuda"
    except StartupError as err:
        raise ServeError(str(err)) from None
    if options.dtype is None:
        dtype, why = local_dtype(plan.preset.dtype, on_gpu)
    else:
        dtype, why = options.dtype, "--dtype"
    for note in plan.notes:
        progress(note)
    model_dir = resolve_model_dir(plan.model, progress)
    progress(f"workspace/{plan.workspace.name}: preset {plan.preset.name} (pipeline {plan.preset.pipeline}, "
             f"trust_remote_code {str(plan.preset.trust_remote_code).lower()}), model {model_dir}, "
             f"dtype {dtype}: {why}")
    url = base_url(options.host, options.port)
    try:
        config = server_config(plan, options, model_dir, dtype)
        run_until_stopped(local, config, lambda served, _bound: on_ready(served, url), stop_event,
                          nproc=options.nproc)
    except StartupError as err:
        raise ServeError(str(err)) from None


__all__ = [
    "LocalAdapter", "LocalModel", "LocalOptions", "LocalPlan", "base_url", "curl_line", "example_requests",
    "local_dtype", "merge_summary", "parse_adapter_dirs", "pick_workspace", "plan_workspace", "serve_plan",
    "server_config",
]
