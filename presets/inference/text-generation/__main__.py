"""``python -m kaitoctl_server``: the pods' gunicorn server, started in-process.

Flags mirror the ``KAITOCTL_*`` environment variables (a flag wins over the
variable). The gunicorn settings are those of ``kaitoctl_server.gunicorn_conf``,
so this runs exactly what ``gunicorn --config python:kaitoctl_server.gunicorn_conf
kaitoctl_server.wsgi:app`` runs. This is the entry point under ``torchrun``
(distributed presets): the model is split over every process of the job
(tensor parallel, ``kaitoctl_server.distributed``). Global rank 0 serves the
API and drives the other ranks; every other rank loads its slice and replays
rank 0's calls, and the first process of each other node also serves /health
and /metrics on the port (its own rank's health), so the pod's probes work.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Optional

_FLAGS = [
    ("--model", "KAITOCTL_MODEL", "model directory (default /workspace/tfs/weights)"),
    ("--dtype", "KAITOCTL_DTYPE", "bfloat16 | float16 | float32 | auto (auto = float32 on CPU)"),
    ("--pipeline", "KAITOCTL_PIPELINE", "text-generation | chat"),
    ("--device", "KAITOCTL_DEVICE", "auto | cpu | cuda"),
    ("--adapter-dir", "KAITOCTL_ADAPTER_DIR", "directory of adapters (default /mnt/adapter)"),
    ("--adapters", "KAITOCTL_ADAPTERS", 'JSON list, e.g. [{"name":"a","strength":0.5}]'),
    ("--bind", "KAITOCTL_BIND", "host:port (default 0.0.0.0:5000)"),
    ("--model-name", "KAITOCTL_MODEL_NAME", "id shown by /v1/models"),
    ("--max-tokens", "KAITOCTL_MAX_TOKENS", "largest number of new tokens a request may ask for"),
    ("--max-batch", "KAITOCTL_MAX_BATCH", "generations batched together (default 16)"),
    ("--max-queue", "KAITOCTL_MAX_QUEUE", "generations waiting for the batch before 429 (default 64)"),
    ("--threads", "KAITOCTL_THREADS", "gunicorn threads (default and minimum: max batch + max queue + 8)"),
]
_SWITCHES = [
    ("--trust-remote-code", "KAITOCTL_TRUST_REMOTE_CODE", "allow the model's own Python code"),
    ("--allow-pickled-adapters", "KAITOCTL_ALLOW_PICKLED_ADAPTERS", "accept adapter_model.bin (pickle)"),
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kaitoctl_server", description=__doc__.split("\n\n")[0])
    for flag, env, text in _FLAGS:
        parser.add_argument(flag, dest=env, help=f"{text} [{env}]")
    for flag, env, text in _SWITCHES:
        parser.add_argument(flag, dest=env, action="store_const", const="true", help=f"{text} [{env}]")
    return parser


def _gunicorn(load: Callable[[], Any]) -> None:
    from gunicorn.app.base import BaseApplication

    from . import gunicorn_conf

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in vars(gunicorn_conf).items():
                if key in self.cfg.settings and value is not None:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return load()

    Server().run()


def _load_main_app() -> Any:
    from . import wsgi

    return wsgi.app


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    for env, value in vars(args).items():
        if value is not None:
            os.environ[env] = value
    from .config import ServerConfig
    from .errors import StartupError

    try:
        ServerConfig.from_env()  # fail here, before gunicorn starts, on a bad value
    except StartupError as err:
        print(f"kaitoctl_server: error: {err}", file=sys.stderr)
        return 2
    from .distributed import World, run_follower

    try:
        world = World.from_env()
    except StartupError as err:
        print(f"kaitoctl_server: error: {err}", file=sys.stderr)
        return 2
    if world.rank == 0:
        _gunicorn(_load_main_app)
        return 0
    return run_follower(ServerConfig.from_env(), world)


if __name__ == "__main__":
    sys.exit(main())
