"""Commands: serve and demo — run the bundled inference server on this machine.

The same start-up path and app as in the pods (kaitoctl_server): load the model
on the CPU, merge the LoRA adapters exactly, move it to the GPU when there is
one, then serve KAITO's and OpenAI's APIs. ``serve --model`` takes a model and
adapters from flags; ``serve -f`` takes them from a Workspace (kaitoctl/local.py);
``demo`` builds a tiny random model and serves a demo workspace through
``serve -f``'s path (kaitoctl/demo.py). torch and the server are imported only
when a command runs, so ``kaitoctl --help`` stays fast.
"""

from __future__ import annotations

import math
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from kaitoctl.errors import ServeError, UsageError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kaitoctl.local import LocalOptions


class Dtype(str, Enum):
    auto = "auto"
    bfloat16 = "bfloat16"
    float16 = "float16"
    float32 = "float32"


class Pipeline(str, Enum):
    text_generation = "text-generation"
    chat = "chat"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def parse_adapter_option(value: str) -> tuple[str, str, float]:
    """``NAME=DIR[:STRENGTH]`` -> (name, dir, strength); strength defaults to 1.0.

    The strength is split off the last ``:`` only when what follows is a
    number, so directories containing ``:`` still work.
    """
    name, sep, rest = value.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise UsageError(
            f"--adapter {value!r}: expected NAME=DIR[:STRENGTH]",
            hint="for example --adapter sql=./adapters/sql:0.5",
        )
    path, strength = rest, 1.0
    head, colon, tail = rest.rpartition(":")
    if colon and head:
        try:
            strength = float(tail)
            path = head
        except ValueError:
            pass  # the ':' belongs to the directory name
    if not math.isfinite(strength):
        raise UsageError(f"--adapter {value!r}: the strength must be a finite number")
    return name.strip(), path, strength


DEMO_PORT = 5000


def _serve_model(model: str, adapters: list[tuple[str, str, float]], *, host: str, port: int, dtype: str,
                 pipeline: str, device: str, trust_remote_code: bool, allow_pickled_adapters: bool,
                 api_key: Optional[str], max_tokens: int) -> None:
    """``serve --model``: a model directory and adapters given by flags, strengths included."""
    names = [name for name, _, _ in adapters]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"--adapter: {', '.join(duplicates)} given more than once; each name may appear once")
    from kaitoctl.local import require_server_extra, run_until_stopped, server_import_error

    require_server_extra("serve")
    try:
        from kaitoctl_server import local
        from kaitoctl_server.config import AdapterRef, ServerConfig, check_adapter_name
        from kaitoctl_server.errors import StartupError
    except ImportError as err:
        raise server_import_error(err) from None
    from kaitoctl.output import stderr_console

    console = stderr_console()

    def ready(served: object, url: str) -> None:
        console.print(
            f"kaitoctl: serving {getattr(served, 'model_name', model)} at {url} "
            f"(OpenAI base URL {url}/v1); press Ctrl-C to stop",
            markup=False,
        )

    for name in names:
        try:
            check_adapter_name(name, "--adapter")
        except StartupError as err:
            raise UsageError(str(err)) from None
    try:
        config = ServerConfig(
            model_dir=model,
            dtype=dtype,
            pipeline=pipeline,
            device=device,
            trust_remote_code=trust_remote_code,
            adapters=tuple(AdapterRef(name=n, path=p, strength=s) for n, p, s in adapters),
            allow_pickled_adapters=allow_pickled_adapters,
            api_key=api_key,
            bind=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            max_tokens=max_tokens,
        )
        run_until_stopped(local, config, ready)
    except StartupError as err:
        raise ServeError(str(err)) from None


def _serve_workspace(filename: str, name: Optional[str], model: Optional[str], adapter_options: list[str],
                     adapter_dir: Optional[str], options: "LocalOptions") -> None:
    """``serve -f``: everything but the files' locations comes from the workspace and its preset."""
    from kaitoctl import local
    from kaitoctl.output import stderr_console, stdout_console
    from kaitoctl.validate import load_workspaces

    err = stderr_console()
    local.require_server_extra("serve")
    ws = local.pick_workspace(load_workspaces(filename), name, filename)
    plan = local.plan_workspace(ws, model=model, adapter_dirs=local.parse_adapter_dirs(adapter_options, ws),
                                adapter_dir=adapter_dir)

    def progress(message: str) -> None:
        err.print(f"kaitoctl: {message}", markup=False)

    def ready(served: Any, url: str) -> None:
        processes = getattr(served, "processes", 1)
        if processes > 1:  # the merge summary is in rank 0's log line above ("ready: ...")
            progress(f"the model is split over {processes} processes (tensor parallel, as the preset's pods run it)")
        else:
            for line in local.merge_summary(served):
                progress(line)
        progress(f"workspace/{ws.name} is being served at {url} (OpenAI base URL {url}/v1); press Ctrl-C to stop")
        out = stdout_console()
        out.print("Try it:", markup=False)
        for path, body in local.example_requests(plan.pipeline, served.model_name):
            out.print("  " + local.curl_line(url, path, body, api_key=bool(options.api_key)), markup=False)
        sys.stdout.flush()

    local.serve_plan(plan, options, on_ready=ready, progress=progress)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``demo`` to ``app``."""

    @app.command("serve")
    def serve(
        filename: Annotated[
            Optional[str],
            typer.Option("-f", "--filename", help="Serve this Workspace file's preset with its adapters and their "
                                                  "strengths, as its pod would (or - for stdin)."),
        ] = None,
        name: Annotated[
            Optional[str], typer.Option("--name", help="With -f: the workspace to serve when the file holds several.")
        ] = None,
        model: Annotated[
            Optional[str],
            typer.Option("--model", help="Model directory (Hugging Face layout). With -f it may be a Hugging Face id "
                                         "(downloaded once); default with -f: the preset's model_id."),
        ] = None,
        adapter: Annotated[
            Optional[list[str]],
            typer.Option(
                "--adapter",
                metavar="NAME=DIR[:STRENGTH]",
                help="LoRA adapter to merge, as NAME=DIR[:STRENGTH] (strength default 1.0). Repeatable; "
                "merged in the order given. With -f: NAME=DIR for each adapter of the workspace (strengths come "
                "from the workspace).",
            ),
        ] = None,
        adapter_dir: Annotated[
            Optional[Path],
            typer.Option("--adapter-dir", help="With -f: find each adapter the workspace names at DIR/<name>/ (as the "
                                               "pod finds it at /mnt/adapter/<name>/), unless --adapter names it."),
        ] = None,
        host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 5000,
        dtype: Annotated[
            Optional[Dtype],
            typer.Option("--dtype", help="Serving dtype. Default: auto (float32 on CPU); with -f, the preset's dtype "
                                         "on a GPU and float32 on a CPU."),
        ] = None,
        pipeline: Annotated[
            Optional[Pipeline],
            typer.Option("--pipeline", help="What KAITO's /chat expects: a prompt or chat messages (default "
                                            "text-generation; with -f, the preset's)."),
        ] = None,
        device: Annotated[Device, typer.Option("--device", help="Where to run the model.")] = Device.auto,
        trust_remote_code: Annotated[
            bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code to run (with -f: as "
                                                           "the preset says).")
        ] = False,
        allow_pickled_adapters: Annotated[
            bool,
            typer.Option("--allow-pickled-adapters", help="Accept adapter_model.bin (pickle; runs code when loaded)."),
        ] = False,
        api_key: Annotated[
            Optional[str],
            typer.Option("--api-key", envvar="KAITOCTL_API_KEY", help="Require 'Authorization: Bearer <key>'."),
        ] = None,
        max_tokens: Annotated[
            int, typer.Option("--max-tokens", min=1, help="Most new tokens one request may ask for.")
        ] = 4096,
        nproc: Annotated[
            int, typer.Option("--nproc", min=1, help="With -f: split the model over N processes on this machine "
                                                     "(tensor parallel, torchrun; gloo on a CPU), as a distributed "
                                                     "preset's pods do.")
        ] = 1,
    ) -> None:
        """Serve a model, with LoRA adapters merged in, on this machine (KAITO and OpenAI APIs).

        With -f, serve a Workspace as its pod would: the preset's pipeline, dtype
        (float32 on a CPU) and trust_remote_code, the workspace's adapters merged
        at the workspace's strengths. Ctrl-C stops the server (exit 0).
        """
        if filename is None:
            if model is None:
                raise UsageError("serve needs --model DIR, or -f WORKSPACE.yaml",
                                 hint="try `kaitoctl demo` for a tiny model served end to end")
            split = nproc if nproc > 1 else None
            for flag, value in (("--name", name), ("--adapter-dir", adapter_dir), ("--nproc", split)):
                if value is not None:
                    raise UsageError(f"{flag} works with -f only")
            _serve_model(
                model, [parse_adapter_option(a) for a in adapter or []], host=host, port=port,
                dtype=(dtype or Dtype.auto).value, pipeline=(pipeline or Pipeline.text_generation).value,
                device=device.value, trust_remote_code=trust_remote_code,
                allow_pickled_adapters=allow_pickled_adapters, api_key=api_key, max_tokens=max_tokens,
            )
            return
        for flag, given in (("--pipeline", pipeline is not None), ("--trust-remote-code", trust_remote_code)):
            if given:
                raise UsageError(f"{flag} cannot be combined with -f: the workspace's preset sets it",
                                 hint="serve without -f (--model DIR) to choose it yourself")
        from kaitoctl.local import LocalOptions

        options = LocalOptions(host=host, port=port, dtype=dtype.value if dtype else None, device=device.value,
                               api_key=api_key, max_tokens=max_tokens,
                               allow_pickled_adapters=allow_pickled_adapters, nproc=nproc)
        _serve_workspace(filename, name, model, list(adapter or []), str(adapter_dir) if adapter_dir else None,
                         options)

    @app.command("demo")
    def demo(
        directory: Annotated[
            Path,
            typer.Option("--dir", envvar="KAITOCTL_DEMO_DIR",
                         help="Where the demo's model, adapter and workspace live (created once, then reused)."),
        ] = Path(".demo"),
        host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[
            Optional[int],
            typer.Option("--port", min=1, max=65535, envvar="KAITOCTL_DEMO_PORT",
                         help="Port to listen on [default: 5000; without --serve, a free port when 5000 is taken]."),
        ] = None,
        keep_serving: Annotated[
            bool, typer.Option("--serve", help="Keep serving until Ctrl-C instead of stopping after two requests.")
        ] = False,
    ) -> None:
        """Try the whole pipeline offline: a tiny RANDOM-WEIGHT model and LoRA adapter, served from a workspace.

        Creates (once) a tiny random Llama and a LoRA adapter under --dir with a
        workspace that uses the phi-3-mini-4k-instruct preset and the adapter at
        strength 0.7, validates it, serves it exactly as `kaitoctl serve -f`
        does, sends one /chat and one /v1/chat/completions request, prints the
        curl lines and the answers, and stops (exit 0). With --serve it keeps
        serving until Ctrl-C. No network, no GPU; the answers are gibberish.
        """
        from kaitoctl.demo import run_demo
        from kaitoctl.local import LocalOptions

        run_demo(directory, LocalOptions(host=host, port=port or DEMO_PORT), keep_serving=keep_serving,
                 any_free_port=port is None and not keep_serving)
