"""Logging set-up shared by the gunicorn worker, ``python -m kaitoctl_server`` and ``kaitoctl serve``."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Send the server's log lines to stderr (the container log) unless a handler is already set."""
    logger = logging.getLogger("kaitoctl_server")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, datefmt="[%Y-%m-%d %H:%M:%S %z]"))
        logger.addHandler(handler)
        logger.propagate = False
