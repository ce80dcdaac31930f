"""Serving on a laptop (``kaitoctl serve``): the same app, in this process, no fork.

gunicorn forks its workers; a model already loaded in the parent (which is
how ``kaitoctl serve`` reports a bad model or adapter as a clean error before
listening) must not be used across a fork. So local mode serves the app with
werkzeug's threaded WSGI server in the process that loaded the model. The app,
its routes, limits, streaming and metrics are the ones the pods serve.
"""

from __future__ import annotations

import errno
import signal
import socket
import threading
from typing import Any, Callable, Optional

from .errors import StartupError


def check_port_free(host: str, port: int) -> None:
    """Fail early, with a clear message, when ``host:port`` cannot be listened on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise StartupError(f"port {port} on {host} is already in use; pick another with --port") from None
            raise StartupError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def serving_device(choice: str) -> str:
    """``"cpu"`` or ``"cuda"``: where the start-up path puts the model for ``--device``/``KAITOCTL_DEVICE``.

    ``kaitoctl serve -f`` asks before loading, to pick the dtype a preset is served in here.
    """
    from .loader import _resolve_device

    return _resolve_device(choice)


def serve_forever(app: Any, host: str, port: int, *, on_ready: Optional[Callable[[str], None]] = None,
                  stop_event: Optional[threading.Event] = None) -> None:
    """Serve ``app`` on ``host:port`` until Ctrl-C, SIGTERM or ``stop_event`` is set, then stop cleanly."""
    from werkzeug.serving import make_server

    check_port_free(host, port)
    server = make_server(host, port, app, threaded=True)
    # Join request threads on close instead of leaving daemon threads inside
    # torch while the interpreter finalizes (that aborts the process:
    # "terminate called without an active exception", pytorch#38228).
    server.daemon_threads = False
    stopping = threading.Event()
    # Helper threads are joined before returning: they hold the server (and so the model), and a
    # thread that drops the last reference while the interpreter finalizes frees tensors without
    # the GIL and aborts the process (the same pytorch#38228 failure as above).
    helpers: list[threading.Thread] = []

    def stop(_signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            helper = threading.Thread(target=server.shutdown, daemon=True)
            helpers.append(helper)
            helper.start()

    def watch(event: threading.Event) -> None:
        while not stopping.is_set():
            if event.wait(0.1):
                stop(0, None)

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    if stop_event is not None:  # `kaitoctl demo` stops its own server once its requests are answered
        watcher = threading.Thread(target=watch, args=(stop_event,), daemon=True)
        watcher.start()
    serving = False
    try:
        if on_ready is not None:
            on_ready(f"http://{host}:{server.port}")
        serving = True
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        stopping.set()
        if stop_event is not None:
            watcher.join()
        if serving:  # server.shutdown() returns only once serve_forever() has run and ended
            for helper in helpers:
                helper.join()


def run(config: Any, *, on_ready: Optional[Callable[[Any, str], None]] = None,
        stop_event: Optional[threading.Event] = None) -> None:
    """Load the model with the pods' start-up path, then serve it here until stopped.

    ``on_ready(served, url)`` is called once the model is merged and the port
    is open; setting ``stop_event`` stops the server as SIGTERM would. Raises
    ``StartupError`` (bad model, adapter or port) before serving.
    """
    from .app import create_app
    from .loader import load_served_model
    from .logs import configure_logging

    configure_logging()
    host, _, port = config.bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    check_port_free(host, int(port))
    served = load_served_model(config)
    app = create_app(config, served=served)
    try:
        serve_forever(app, host, int(port), on_ready=None if on_ready is None else (lambda url: on_ready(served, url)),
                      stop_event=stop_event)
    finally:
        # The scheduler thread must not be inside torch while the interpreter finalizes (pytorch#38228).
        served.engine.close()
