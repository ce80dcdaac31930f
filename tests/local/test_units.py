"""Local mode's pieces without a model: dtype choice, URLs and curl lines, flags, and the server's stop paths."""

from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest

from kaitoctl import local
from kaitoctl.errors import UsageError
from kaitoctl.loader import load_text

from .conftest import free_port, workspace_yaml


@pytest.mark.parametrize("preset_dtype,on_gpu,expected", [
    ("bfloat16", True, "bfloat16"),   # as in the pod
    ("float16", True, "float16"),
    ("auto", True, "auto"),           # the server's auto: the checkpoint's dtype on a GPU
    ("bfloat16", False, "float32"),   # half precision is slow on CPUs
    ("float16", False, "float32"),
    ("auto", False, "float32"),
])
def test_dtype_is_the_presets_on_a_gpu_and_float32_on_a_cpu(preset_dtype: str, on_gpu: bool, expected: str) -> None:
    dtype, why = local.local_dtype(preset_dtype, on_gpu)
    assert dtype == expected and why


@pytest.mark.parametrize("host,url", [
    ("127.0.0.1", "http://127.0.0.1:5000"),
    ("0.0.0.0", "http://127.0.0.1:5000"),  # a wildcard is reached through loopback
    ("::", "http://[::1]:5000"),
    ("::1", "http://[::1]:5000"),
])
def test_clients_are_told_an_address_they_can_reach(host: str, url: str) -> None:
    assert local.base_url(host, 5000) == url


def test_curl_lines_carry_the_exact_json_body_through_the_shell() -> None:
    body = {"prompt": "it's \"quoted\" $HOME", "generate_kwargs": {"max_new_tokens": 4}}
    line = local.curl_line("http://127.0.0.1:5000", "/chat", body, api_key=True)
    words = shlex.split(line)
    assert words[:3] == ["curl", "-s", "http://127.0.0.1:5000/chat"]
    assert json.loads(words[words.index("-d") + 1]) == body
    assert "Authorization: Bearer $KAITOCTL_API_KEY" in words


def test_example_requests_follow_the_presets_pipeline() -> None:
    (_, chat_body), (_, openai_body) = local.example_requests("chat", "m")
    assert "messages" in chat_body and openai_body["model"] == "m"
    (_, text_body), _ = local.example_requests("text-generation", "m")
    assert "prompt" in text_body


def workspace(text: str):
    doc = load_text(text, "ws.yaml")[0]
    assert doc.workspace is not None
    return doc.workspace


def test_adapter_directories_map_onto_the_workspaces_adapters(tmp_path: Path) -> None:
    ws = workspace(workspace_yaml("ws", {"a1": "0.5", "a2": "0.5"}))
    odd = tmp_path / "v1:2"  # a directory whose name ends like a strength is still a directory
    odd.mkdir()
    assert local.parse_adapter_dirs([f"a1={odd}", "a2=/x"], ws) == {"a1": str(odd), "a2": "/x"}
    with pytest.raises(UsageError, match="given more than once"):
        local.parse_adapter_dirs(["a1=/x", "a1=/y"], ws)
    with pytest.raises(UsageError, match="expected NAME=DIR"):
        local.parse_adapter_dirs(["a1"], ws)


def test_a_private_preset_needs_its_weights_given(tmp_path: Path) -> None:
    from kaitoctl.errors import ServeError

    ws = workspace(workspace_yaml("ws", {}, preset="llama-2-7b", instance_type="Standard_NC12s_v3").replace(
        "    name: llama-2-7b\n",
        "    name: llama-2-7b\n    accessMode: private\n    presetOptions:\n"
        "      image: registry.example.com/llama-2-7b:1\n"))
    with pytest.raises(ServeError) as error:
        local.plan_workspace(ws, model=None, adapter_dirs={})
    assert any("preset llama-2-7b is private" in line for line in error.value.details)


def _hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok": true}']


def test_the_local_server_stops_on_its_stop_event_and_leaves_no_thread_behind() -> None:
    from kaitoctl_server.local import serve_forever

    before = set(threading.enumerate())
    stop = threading.Event()
    answers = []

    def ask(url: str) -> None:
        with urllib.request.urlopen(url, timeout=30) as answer:
            answers.append(json.loads(answer.read()))
        stop.set()

    clients: list[threading.Thread] = []

    def ready(url: str) -> None:
        clients.append(threading.Thread(target=ask, args=(url,)))
        clients[0].start()

    serve_forever(_hello, "127.0.0.1", free_port(), on_ready=ready, stop_event=stop)
    clients[0].join(timeout=30)
    assert answers == [{"ok": True}]
    # Threads that hold the server (and, in kaitoctl serve, the model) must be gone when it returns: one
    # that drops the last reference while the interpreter exits aborts the process (pytorch#38228).
    assert set(threading.enumerate()) <= before


def test_the_local_server_stops_on_sigterm_and_restores_the_handler() -> None:
    from kaitoctl_server.local import serve_forever

    before = set(threading.enumerate())
    handler = signal.getsignal(signal.SIGTERM)
    serve_forever(_hello, "127.0.0.1", free_port(), on_ready=lambda _url: os.kill(os.getpid(), signal.SIGTERM))
    assert set(threading.enumerate()) <= before
    assert signal.getsignal(signal.SIGTERM) is handler


@pytest.mark.parametrize("no_color", ["1", None])
def test_the_local_servers_access_log_has_no_colour_codes_off_a_terminal_or_with_no_color(
        no_color: Optional[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """`kaitoctl serve 2> server.log`, or NO_COLOR: werkzeug's 4xx lines without ANSI escape codes."""
    import logging
    import urllib.error

    from kaitoctl_server.local import serve_forever

    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    stop = threading.Event()
    codes: list[int] = []

    def ask(url: str) -> None:
        for path in ("/", "/nope"):
            try:
                with urllib.request.urlopen(url + path, timeout=30) as answer:
                    codes.append(answer.status)
            except urllib.error.HTTPError as err:
                codes.append(err.code)
        stop.set()

    def not_found_but_root(environ: dict, start_response: Any) -> list[bytes]:
        status = "200 OK" if environ["PATH_INFO"] == "/" else "404 NOT FOUND"
        start_response(status, [("Content-Type", "text/plain")])
        return [b"x"]

    client: list[threading.Thread] = []

    def ready(url: str) -> None:
        client.append(threading.Thread(target=ask, args=(url,)))
        client[0].start()

    with caplog.at_level(logging.INFO, logger="werkzeug"):
        serve_forever(not_found_but_root, "127.0.0.1", free_port(), on_ready=ready, stop_event=stop)
    client[0].join(timeout=30)
    assert codes == [200, 404]
    lines = [record.getMessage() for record in caplog.records if record.name == "werkzeug"]
    assert any('"GET /nope HTTP/1.1" 404' in line for line in lines), lines
    assert not any("\x1b[" in line for line in lines), lines


def test_ctrl_c_while_the_model_loads_says_what_it_interrupted(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from kaitoctl.cli import main
    from kaitoctl_server import local as server_local

    def interrupted_while_loading(config: Any, **_: Any) -> None:
        raise KeyboardInterrupt  # Ctrl-C before on_ready: the model is still loading

    monkeypatch.setattr(server_local, "run", interrupted_while_loading)
    with pytest.raises(SystemExit) as info:
        main(["serve", "--model", str(tmp_path), "--port", str(free_port())])
    err = capsys.readouterr().err
    assert info.value.code == 130
    assert err.splitlines()[-1] == (f"kaitoctl: interrupted while loading the model from {tmp_path} (load, adapter "
                                    "merge, move to the device): nothing was served")


def test_ctrl_c_once_serving_still_propagates_to_the_server_loop() -> None:
    class Served:
        def run(self, config: Any, *, on_ready: Any, stop_event: Any = None, nproc: int = 1) -> None:
            on_ready(object(), "http://127.0.0.1:1")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        local.run_until_stopped(Served(), object(), lambda served, url: None)


def test_a_ctrl_c_that_no_command_catches_is_not_silent(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    from kaitoctl import catalog
    from kaitoctl.cli import main

    def interrupted() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(catalog, "presets", interrupted)
    with pytest.raises(SystemExit) as info:
        main(["presets", "list"])
    assert info.value.code == 130
    assert capsys.readouterr().err.splitlines() == ["kaitoctl: interrupted"]
