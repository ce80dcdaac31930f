"""WSGI entry point of the pods: ``gunicorn --config python:kaitoctl_server.gunicorn_conf kaitoctl_server.wsgi:app``.

Importing this module reads the configuration and builds the app; it does not
import torch or load the model (gunicorn_conf's ``post_worker_init`` starts
that in the worker, after the fork). A configuration or model error stops the
whole server with gunicorn's worker-boot-error exit code, so the container
exits with the reason as the last lines of its log instead of restarting the
worker forever.
"""

from __future__ import annotations

import logging
import os
import sys

from .app import create_app
from .config import ServerConfig
from .errors import StartupError
from .logs import configure_logging

# gunicorn's master halts (and exits with this code) when a worker exits with it.
WORKER_BOOT_ERROR = 3

log = logging.getLogger("kaitoctl_server")


def _stop_server(err: BaseException) -> None:
    """The model will not load on a retry either: end the worker so that gunicorn (and the pod) stop."""
    log.error("stopping the server: the model could not be loaded")
    for handler in log.handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(WORKER_BOOT_ERROR)


configure_logging()
try:
    _config = ServerConfig.from_env()
except StartupError as _err:
    log.error("cannot start: %s", _err)
    raise SystemExit(WORKER_BOOT_ERROR) from None

app = create_app(_config, on_load_failure=_stop_server)
