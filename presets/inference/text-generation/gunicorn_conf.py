"""gunicorn settings for the pods: ``gunicorn --config python:kaitoctl_server.gunicorn_conf kaitoctl_server.wsgi:app``.

Why these values:

- One worker, no ``--preload``. The model is loaded inside the worker, after
  the fork, so the master never runs torch: with preload, ops run in the
  master before fork leave GNU OpenMP's thread pool unusable in the child
  (generation hangs until the worker timeout), and CUDA initialised before a
  fork cannot be used after it. One worker also means one copy of the model
  per pod; scale with replicas.
- ``gthread`` with enough threads that health probes and /metrics always
  find a free one: every generation request holds a thread while it runs or
  waits in the engine's queue, and the engine holds at most
  ``KAITOCTL_MAX_BATCH`` running + ``KAITOCTL_MAX_QUEUE`` waiting (more are
  answered 429 at once), so ``threads >= max_batch + max_queue + 8`` leaves
  eight threads for probes, metrics and quick refusals whatever the load.
- The worker timeout is a heartbeat: gthread's main loop keeps beating while
  request threads generate, so long generations are not killed by it.
  SIGTERM lets requests in flight finish for up to ``graceful_timeout``
  seconds (keep the pod's terminationGracePeriodSeconds above it).

Environment: ``KAITOCTL_BIND`` (default 0.0.0.0:5000), ``KAITOCTL_THREADS``
(default and minimum: max batch + max queue + 8; a smaller value is raised to
it), ``KAITOCTL_GRACEFUL_TIMEOUT`` (default 25 s).

This module must not import torch (it is read by the master).
"""

from __future__ import annotations

import os
from typing import Any

from .config import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, SPARE_THREADS


def _int(name: str, default: int) -> int:
    """An integer variable; a bad value falls back to the default here (the server itself refuses it with a clear message)."""
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        return default


bind = [os.environ.get("KAITOCTL_BIND") or "0.0.0.0:5000"]
workers = 1
worker_class = "gthread"
threads = max(_int("KAITOCTL_THREADS", 0),
              _int("KAITOCTL_MAX_BATCH", DEFAULT_MAX_BATCH) + _int("KAITOCTL_MAX_QUEUE", DEFAULT_MAX_QUEUE) + SPARE_THREADS)
preload_app = False
timeout = 120
graceful_timeout = int(os.environ.get("KAITOCTL_GRACEFUL_TIMEOUT") or 25)
keepalive = 5
accesslog = "-"
errorlog = "-"
loglevel = "info"
# The heartbeat file lives in memory: container root filesystems may be read-only or slow.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


def post_worker_init(worker: Any) -> None:
    """Start loading and merging the model in this worker, in the background, as soon as it exists."""
    from .app import start_loading

    start_loading(worker.wsgi)


def worker_exit(server: Any, worker: Any) -> None:
    """After the last request: stop the scheduler thread before the interpreter finalizes.

    Rank 0 of a tensor-parallel job then tells the other ranks to stop and ends
    the worker at once with the exit code it was leaving with
    (``distributed.end_rank_zero``): gloo's teardown while the interpreter
    finalizes can abort the process. The master calls this hook too, when it
    reaps a worker: there ``worker.wsgi`` is not this process's app.
    """
    from .app import stop_engine

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions") and getattr(worker, "pid", None) == os.getpid():
        served = stop_engine(app)
        if served is not None and served.group is not None:
            import sys

            from .distributed import end_rank_zero

            leaving = sys.exc_info()[1]       # the SystemExit this hook runs under (gunicorn's finally)
            end_rank_zero(served.group, leaving.code if isinstance(leaving, SystemExit) else 0)
