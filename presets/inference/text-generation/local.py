"""Serving on a laptop (``kaitoctl serve``): the same app, in this process, no fork.

gunicorn forks its workers; a model already loaded in the parent (which is
how ``kaitoctl serve`` reports a bad model or adapter as a clean error before
listening) must not be used across a fork. So local mode serves the app with
werkzeug's threaded WSGI server in the process that loaded the model. The app,
its routes, limits, streaming and metrics are the ones the pods serve.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import sys
import threading
from dataclasses import dataclass
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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def access_log_in_colour() -> bool:
    """werkzeug colours 4xx/5xx access-log lines: only on a terminal, and never with NO_COLOR set."""
    return "NO_COLOR" not in os.environ and sys.stderr.isatty()


def _request_handler() -> Any:
    """werkzeug's request handler, its access-log lines without ANSI codes unless `access_log_in_colour`."""
    from werkzeug.serving import WSGIRequestHandler

    class RequestHandler(WSGIRequestHandler):
        def log(self, type: str, message: str, *args: Any) -> None:
            if not access_log_in_colour():
                args = tuple(_ANSI.sub("", arg) if isinstance(arg, str) else arg for arg in args)
            super().log(type, message, *args)

    return RequestHandler


def serve_forever(app: Any, host: str, port: int, *, on_ready: Optional[Callable[[str], None]] = None,
                  stop_event: Optional[threading.Event] = None) -> None:
    """Serve ``app`` on ``host:port`` until Ctrl-C, SIGTERM or ``stop_event`` is set, then stop cleanly."""
    from werkzeug.serving import make_server

    check_port_free(host, port)
    server = make_server(host, port, app, threaded=True, request_handler=_request_handler())
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
        stop_event: Optional[threading.Event] = None, nproc: int = 1) -> None:
    """Load the model with the pods' start-up path, then serve it here until stopped.

    ``on_ready(served, url)`` is called once the model is merged and the port
    is open; setting ``stop_event`` stops the server as SIGTERM would. Raises
    ``StartupError`` (bad model, adapter or port) before serving. ``nproc`` > 1
    splits the model over that many processes, as a distributed preset's pods
    do (``serve_split``).
    """
    if nproc > 1:
        serve_split(config, nproc, on_ready=on_ready, stop_event=stop_event)
        return
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


@dataclass(frozen=True)
class SplitServer:
    """What ``serve_split`` hands to ``on_ready``: the served model's id and the number of processes."""

    model_name: str
    processes: int


def split_environment(config: Any, adapter_links: str) -> dict[str, str]:
    """The ``KAITOCTL_*`` variables that make ``python -m kaitoctl_server`` serve ``config``.

    The server finds adapters at ``<KAITOCTL_ADAPTER_DIR>/<name>``: each one is
    linked from ``adapter_links`` to where it really is.
    """
    env = {
        "KAITOCTL_MODEL": config.model_dir,
        "KAITOCTL_DTYPE": config.dtype,
        "KAITOCTL_PIPELINE": config.pipeline,
        "KAITOCTL_DEVICE": config.device,
        "KAITOCTL_BIND": config.bind,
        "KAITOCTL_MAX_TOKENS": str(config.max_tokens),
        "KAITOCTL_MAX_BODY_BYTES": str(config.max_body_bytes),
        "KAITOCTL_ADAPTER_DIR": config.adapter_dir,
    }
    for name, on in (("KAITOCTL_TRUST_REMOTE_CODE", config.trust_remote_code),
                     ("KAITOCTL_ALLOW_PICKLED_ADAPTERS", config.allow_pickled_adapters)):
        if on:
            env[name] = "true"
    for name, value in (("KAITOCTL_API_KEY", config.api_key), ("KAITOCTL_MODEL_NAME", config.model_name)):
        if value:
            env[name] = value
    if config.adapters is not None:
        for ref in config.adapters:
            os.symlink(os.path.abspath(ref.path), os.path.join(adapter_links, ref.name))
        env["KAITOCTL_ADAPTER_DIR"] = adapter_links
        env["KAITOCTL_ADAPTERS"] = json.dumps([{"name": r.name, "strength": r.strength} for r in config.adapters])
    return env


def serve_split(config: Any, nproc: int, *, on_ready: Optional[Callable[[Any, str], None]] = None,
                stop_event: Optional[threading.Event] = None) -> None:
    """Serve ``config`` with the model split over ``nproc`` processes on this machine, until stopped.

    Runs what a distributed preset's pod runs, ``torchrun -m kaitoctl_server``
    (one node, ``nproc`` processes; gloo on a CPU), as a child process whose
    log goes to this terminal. Waits for rank 0's /health, calls ``on_ready``,
    then serves until Ctrl-C, SIGTERM or ``stop_event``. Raises
    ``StartupError`` when the processes end before they are ready.
    """
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.error
    import urllib.request

    host, _, port = config.bind.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    check_port_free(host, int(port))
    reach = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    url = f"http://[{reach}]:{port}" if ":" in reach else f"http://{reach}:{port}"
    stopping = threading.Event()

    def stop(_signum: int, _frame: Any) -> None:
        stopping.set()

    with tempfile.TemporaryDirectory(prefix="kaitoctl-adapters-") as links:
        env = dict(os.environ, **split_environment(config, links))
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "kaitoctl_server"]
        previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
        # Its own session: Ctrl-C reaches this process only, which stops the job with one SIGTERM. The
        # servers' log (gunicorn's access log included) goes to stderr, like `kaitoctl serve`'s own.
        child = subprocess.Popen(command, env=env, stdout=sys.stderr, start_new_session=True,
                                 preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        ready = False
        try:
            while not (stopping.is_set() or (stop_event is not None and stop_event.is_set())):
                if child.poll() is not None:
                    when = "while serving" if ready else "before they were ready"
                    raise StartupError(f"the {nproc} server processes stopped (exit {child.returncode}) {when}; "
                                       "see their log above")
                if not ready:
                    ready = _healthy(url, urllib.request, urllib.error)
                    if ready and on_ready is not None:
                        on_ready(SplitServer(_model_id(url, urllib.request, config.api_key), nproc), url)
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            _stop_job(child)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _die_with_parent() -> None:
    """Linux, in the child before exec: SIGTERM it when this process dies, even by SIGKILL (no orphaned job)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop_job(child: Any) -> None:
    """Stop the torchrun job as a clean shutdown of its workers, then the launcher if it is still there.

    SIGTERM to rank 0 (its gunicorn stops gracefully and tells the other ranks
    to end) lets torchrun exit quietly with 0; SIGTERM to torchrun itself makes
    it print a traceback.
    """
    import subprocess

    import psutil

    if child.poll() is not None:
        return
    try:
        workers = psutil.Process(child.pid).children()
        rank0 = [w for w in workers if w.environ().get("RANK") == "0"]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        rank0 = []
    try:
        (rank0[0] if rank0 else psutil.Process(child.pid)).send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        pass
    for last_resort in (child.terminate, child.kill):
        try:
            child.wait(timeout=60)
            return
        except subprocess.TimeoutExpired:
            last_resort()
    child.wait()


def _healthy(url: str, request: Any, error: Any) -> bool:
    try:
        with request.urlopen(url + "/health", timeout=5) as answer:
            return bool(answer.status == 200)
    except (error.URLError, OSError):
        return False


def _model_id(url: str, request: Any, api_key: Optional[str]) -> str:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with request.urlopen(request.Request(url + "/v1/models", headers=headers), timeout=30) as answer:
        return str(json.loads(answer.read())["data"][0]["id"])
