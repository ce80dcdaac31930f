"""The image's CMD, run here exactly as written, starts the server: /health turns 200, SIGTERM stops it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from .conftest import BIN_DIR
from .dockerfile_model import Dockerfile

START_DEADLINE_S = 180   # a bound so a broken server fails the test instead of hanging it
STOP_DEADLINE_S = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0  # not listening yet


def _image_env(df: Dockerfile, tmp: Path) -> dict[str, str]:
    """The image's ENV with its /tmp rebased into ``tmp`` (the pod's /tmp emptyDir)."""
    env = {}
    for name, value in df.final.env.items():
        env[name] = str(tmp) + value[len("/tmp"):] if value == "/tmp" or value.startswith("/tmp/") else value
    return env


def test_image_cmd_serves_health_and_stops_on_sigterm(server_dockerfile: Dockerfile, tiny_model: Path, tmp_path: Path) -> None:
    argv = server_dockerfile.final.last("CMD").words
    port = _free_port()
    env = {
        "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        "LANG": "C.UTF-8",
        **_image_env(server_dockerfile, tmp_path),
        # what `docker run -e` would change for a local run: the weights and the address
        "KAITOCTL_MODEL": str(tiny_model),
        "KAITOCTL_BIND": f"127.0.0.1:{port}",
    }
    log = (tmp_path / "server.log").open("w+")
    server = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        status = 0
        while time.monotonic() < deadline and server.poll() is None:
            status = _health(port)
            if status == 200:
                break
            time.sleep(0.25)
        log.seek(0)
        assert status == 200, f"/health never turned 200 (last {status}, exit {server.poll()}):\n{log.read()[-4000:]}"
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=STOP_DEADLINE_S)
        log.seek(0)
        assert code == 0, f"gunicorn exited {code} on SIGTERM:\n{log.read()[-4000:]}"
        assert _health(port) == 0  # nothing listens any more
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
