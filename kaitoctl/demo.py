"""``kaitoctl demo``: the whole local pipeline, offline, on a tiny RANDOM-WEIGHT model.

A fresh machine has no GPU, no network and no 8 GB of Phi-3 weights, yet a new
user should see a workspace validated, an adapter merged at the workspace's
strength and both APIs answering. So the demo makes (once, then reuses) a tiny
random Llama and a random LoRA adapter under ``--dir``, writes a Workspace that
uses a real preset with that adapter at strength 0.7, and serves it through
exactly the ``kaitoctl serve -f`` path (kaitoctl/local.py). The weights are
random, so the answers are gibberish; everything around them is the real thing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import sys
import threading
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from kaitoctl.errors import Interrupted, ServeError, UsageError
from kaitoctl.local import LocalOptions, require_server_extra, server_import_error

FORMAT = "kaitoctl demo files, format 1"
PRESET = "phi-3-mini-4k-instruct"
WORKSPACE_NAME = "workspace-demo"
ADAPTER = "demo-lora"
STRENGTH = "0.7"
MODEL_DIRNAME = "tiny-random-llama"
BANNER = (
    "kaitoctl demo: RANDOM WEIGHTS. A tiny random Llama and a random LoRA adapter stand in for the "
    f"{PRESET} preset's weights, to try the pipeline offline (validate, merge at the workspace's strength, "
    "serve KAITO's and OpenAI's APIs). The answers are gibberish."
)

WORKSPACE_YAML = f"""\
# The kaitoctl demo's workspace. It uses a real preset ({PRESET}) and one LoRA adapter merged at
# strength {STRENGTH}; `kaitoctl validate -f` and `kaitoctl render -f` treat it as any other workspace.
#
# Locally, `kaitoctl demo` serves it with a tiny RANDOM-WEIGHT Llama ({MODEL_DIRNAME}/) standing in
# for the preset's weights and a random adapter (adapters/{ADAPTER}/) for the adapter image, through
# the same path as:
#   kaitoctl serve -f workspace.yaml --model {MODEL_DIRNAME} --adapter {ADAPTER}=adapters/{ADAPTER}
# Edit the strength below and run the demo again to see the merge change.
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: {WORKSPACE_NAME}
resource:
  instanceType: Standard_NC6s_v3
  labelSelector:
    matchLabels:
      apps: phi-3
inference:
  preset:
    name: {PRESET}
  adapters:
    - source:
        name: {ADAPTER}
        image: myregistry.azurecr.io/adapters/{ADAPTER}:0.1.0
      strength: "{STRENGTH}"
"""

README_TXT = f"""\
{FORMAT}

RANDOM WEIGHTS: nothing here is a trained model. These files exist to try kaitoctl's
local pipeline offline, without a GPU; the text the server answers with is gibberish.

  {MODEL_DIRNAME}/        a tiny randomly initialised Llama (2 layers, hidden size 64) and a
                           byte-level BPE tokenizer trained on a few sentences
  adapters/{ADAPTER}/    a random LoRA adapter for it (peft format: adapter_config.json,
                           adapter_model.safetensors), rank 8 on q/k/v/o projections
  workspace.yaml           a Workspace using the {PRESET} preset with that adapter at
                           strength {STRENGTH}

Run it again with `kaitoctl demo` (these files are reused), keep it serving with
`kaitoctl demo --serve`, or serve the workspace yourself:

  kaitoctl serve -f workspace.yaml --model {MODEL_DIRNAME} --adapter {ADAPTER}=adapters/{ADAPTER}

Delete this directory to start over.
"""


@dataclass(frozen=True)
class DemoFiles:
    """Where the demo's pieces live under its directory."""

    root: Path

    @property
    def model(self) -> Path:
        return self.root / MODEL_DIRNAME

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def adapter(self) -> Path:
        return self.adapters / ADAPTER

    @property
    def workspace(self) -> Path:
        return self.root / "workspace.yaml"

    @property
    def readme(self) -> Path:
        return self.root / "README.txt"

    def complete(self) -> bool:
        """Whether a previous run finished writing them (README.txt is written last)."""
        try:
            first = self.readme.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            return False
        return (first == FORMAT and (self.model / "config.json").is_file()
                and (self.adapter / "adapter_config.json").is_file() and self.workspace.is_file())


def _unusable_dir(root: Path, err: OSError) -> UsageError:
    return UsageError(f"--dir {root}: cannot create it ({err.strerror or err})",
                      hint="pick a directory you can write to, e.g. --dir ./demo")


def ensure_demo_files(root: Path, progress: Callable[[str], None]) -> tuple[DemoFiles, bool]:
    """The demo's files under ``root``, created unless a finished earlier run left them: (files, created).

    Only ever writes the demo's own paths: a directory holding anything else is
    refused rather than cleaned.
    """
    files = DemoFiles(root)
    if files.complete():
        return files, False
    ours = {files.model.name, files.adapters.name, files.workspace.name, files.readme.name}
    if root.is_symlink() and not root.exists():
        raise UsageError(f"--dir {root}: a symbolic link to {os.readlink(root)}, which does not exist",
                         hint="create the directory it points to, or pick another --dir")
    if root.exists() and not root.is_dir():
        raise UsageError(f"--dir {root}: not a directory")
    others = sorted(p.name for p in root.iterdir() if p.name not in ours) if root.is_dir() else []
    if others:
        raise UsageError(f"--dir {root} holds files the demo did not write ({', '.join(others[:5])})",
                         hint="pick an empty or new directory for --dir")
    try:
        for path in (files.readme, files.workspace):  # README.txt first: the set is incomplete from here on
            path.unlink(missing_ok=True)
    except OSError as err:
        raise _unusable_dir(root, err) from None
    for path in (files.model, files.adapters):
        shutil.rmtree(path, ignore_errors=True)
    progress(f"creating the demo files in {root} (once; later runs reuse them): a tiny random Llama and a "
             "random LoRA adapter")
    try:
        from kaitoctl_server.tiny import make_lora_adapter, make_tiny_model
    except ImportError as err:
        raise server_import_error(err) from None
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unusable_dir(root, err) from None
    try:
        with warnings.catch_warnings():  # library deprecation notices are noise for a newcomer
            warnings.simplefilter("ignore")
            make_tiny_model(files.model, "llama", hidden_size=64, num_layers=2, seed=0)
            make_lora_adapter(files.model, files.adapter, r=8, alpha=16,
                              targets=("q_proj", "k_proj", "v_proj", "o_proj"), seed=1)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted while creating the demo files in {root}: they are incomplete, and the "
                          "next `kaitoctl demo` makes them again") from None
    (files.adapter / "README.md").unlink(missing_ok=True)  # peft's model-card stub, not part of an adapter
    files.workspace.write_text(WORKSPACE_YAML, encoding="utf-8")
    files.readme.write_text(README_TXT, encoding="utf-8")
    return files, True


def post_json(url: str, body: dict[str, Any], api_key: Optional[str] = None, timeout: float = 300) -> Any:
    """POST ``body`` as JSON and return the decoded answer; ServeError for an HTTP error or a non-JSON answer."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never goes via a proxy
    try:
        with opener.open(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise ServeError(f"POST {url} answered {err.code}: {err.read().decode(errors='replace')[:500]}") from None
    except OSError as err:
        raise ServeError(f"POST {url} failed: {err}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise ServeError(f"POST {url} did not answer JSON: {raw[:200]!r}") from None


def check_answer(path: str, answer: Any) -> None:
    """Raise ServeError unless ``answer`` has the shape the route's API documents."""
    if path == "/chat":
        ok = isinstance(answer, dict) and isinstance(answer.get("Result"), str)
    else:
        choices = answer.get("choices") if isinstance(answer, dict) else None
        ok = (isinstance(choices, list) and len(choices) == 1 and isinstance(choices[0].get("message"), dict)
              and isinstance(choices[0]["message"].get("content"), str) and isinstance(answer.get("usage"), dict))
    if not ok:
        raise ServeError(f"{path} answered an unexpected shape: {json.dumps(answer)[:300]}")


def _port_taken(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def run_demo(directory: Path, options: LocalOptions, *, keep_serving: bool = False,
             any_free_port: bool = False) -> None:
    """Create (or reuse) the demo files, validate the workspace, serve it as ``serve -f`` does, try it.

    ``any_free_port``: the one-shot demo prints the port it used, so when the default port is
    taken (macOS's AirPlay receiver listens on 5000) it takes a free one instead of failing.
    """
    from kaitoctl import local
    from kaitoctl.output import stderr_console, stdout_console
    from kaitoctl.validate import load_workspaces, summary

    out, err = stdout_console(), stderr_console()

    def say(line: str = "") -> None:
        out.print(line, markup=False)
        sys.stdout.flush()

    def progress(message: str) -> None:
        err.print(f"kaitoctl: {message}", markup=False)

    require_server_extra("demo")  # before the banner: a CLI-only install gets one error with the fix
    say(BANNER)
    files, created = ensure_demo_files(directory, progress)
    if not created:
        progress(f"reusing the demo files in {directory} (delete it to start over)")
    say(f"$ kaitoctl validate -f {files.workspace}")
    workspaces = load_workspaces(str(files.workspace))  # `kaitoctl validate` semantics: exit 3 listing every error
    for ws in workspaces:
        say(summary(ws))
    ws = local.pick_workspace(workspaces, None, str(files.workspace))
    plan = local.plan_workspace(ws, model=str(files.model), adapter_dirs={ADAPTER: str(files.adapter)})
    if any_free_port and _port_taken(options.host, options.port):
        port = _free_port(options.host)
        progress(f"port {options.port} is in use; this run of the demo uses port {port} (choose with --port)")
        options = dataclasses.replace(options, port=port)
    say(f"$ kaitoctl serve -f {files.workspace} --model {files.model} --adapter {ADAPTER}={files.adapter} "
        f"--port {options.port}   # what the demo runs")

    stop = None if keep_serving else threading.Event()
    failures: list[BaseException] = []
    clients: list[threading.Thread] = []

    def try_it(served: Any, url: str) -> None:
        try:
            for path, body in local.example_requests(plan.pipeline, served.model_name):
                say(f"$ {local.curl_line(url, path, body, api_key=bool(options.api_key))}")
                answer = post_json(url + path, body, options.api_key)
                check_answer(path, answer)
                say(json.dumps(answer, indent=2))
        except BaseException as problem:  # noqa: BLE001 - reported by the main thread once the server stops
            failures.append(problem)
        finally:
            assert stop is not None
            stop.set()

    def ready(served: Any, url: str) -> None:
        for line in local.merge_summary(served):
            say(line)
        if keep_serving:
            say(f"serving workspace/{ws.name} at {url} (OpenAI base URL {url}/v1); press Ctrl-C to stop. Try:")
            for path, body in local.example_requests(plan.pipeline, served.model_name):
                say("  " + local.curl_line(url, path, body, api_key=bool(options.api_key)))
            return
        say(f"serving at {url}; sending one KAITO and one OpenAI request:")
        client = threading.Thread(target=try_it, args=(served, url), name="demo-client")
        clients.append(client)
        client.start()

    local.serve_plan(plan, options, on_ready=ready, progress=progress, stop_event=stop)
    for client in clients:
        client.join()
    if failures:
        problem = failures[0]
        if isinstance(problem, ServeError):
            raise problem
        raise ServeError(f"the demo's requests failed: {problem}")
    if not keep_serving:
        again = "kaitoctl demo --serve" + ("" if directory == Path(".demo") else f" --dir {directory}")
        say(f"demo done: server stopped. Keep it running with `{again}`, then use the curl lines above.")
