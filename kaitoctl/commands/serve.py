"""Command: serve — run the bundled inference server on this machine.

The same start-up path and app as in the pods (kaitoctl_server): load the model
on the CPU, merge the given LoRA adapters exactly, move it to the GPU when
there is one, then serve KAITO's and OpenAI's APIs. torch and the server are
imported only when the command runs, so ``kaitoctl --help`` stays fast.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from kaitoctl.errors import ServeError, UsageError


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


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("serve")
    def serve(
        model: Annotated[Path, typer.Option("--model", help="Hugging Face model directory to serve.")],
        adapter: Annotated[
            Optional[list[str]],
            typer.Option(
                "--adapter",
                metavar="NAME=DIR[:STRENGTH]",
                help="LoRA adapter to merge, as NAME=DIR[:STRENGTH] (strength default 1.0). Repeatable; "
                "merged in the order given.",
            ),
        ] = None,
        host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 5000,
        dtype: Annotated[Dtype, typer.Option("--dtype", help="Serving dtype (auto = float32 on CPU).")] = Dtype.auto,
        pipeline: Annotated[
            Pipeline, typer.Option("--pipeline", help="What KAITO's /chat expects: a prompt or chat messages.")
        ] = Pipeline.text_generation,
        device: Annotated[Device, typer.Option("--device", help="Where to run the model.")] = Device.auto,
        trust_remote_code: Annotated[
            bool, typer.Option("--trust-remote-code", help="Allow the model's own Python code to run.")
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
    ) -> None:
        """Serve a model, with LoRA adapters merged in, on this machine (KAITO and OpenAI APIs)."""
        adapters = [parse_adapter_option(a) for a in adapter or []]
        names = [name for name, _, _ in adapters]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"--adapter: {', '.join(duplicates)} given more than once; each name may appear once")
        try:
            from kaitoctl_server import local
            from kaitoctl_server.config import AdapterRef, ServerConfig, check_adapter_name
            from kaitoctl_server.errors import StartupError
        except ImportError as err:
            raise ServeError(
                f"the inference server is not installed ({err})",
                hint="install it with: pip install 'kaitoctl[server]'",
            ) from None
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
                model_dir=str(model),
                dtype=dtype.value,
                pipeline=pipeline.value,
                device=device.value,
                trust_remote_code=trust_remote_code,
                adapters=tuple(AdapterRef(name=n, path=p, strength=s) for n, p, s in adapters),
                allow_pickled_adapters=allow_pickled_adapters,
                api_key=api_key,
                bind=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                max_tokens=max_tokens,
            )
            local.run(config, on_ready=ready)
        except StartupError as err:
            raise ServeError(str(err)) from None
