"""`kaitoctl serve`: flag parsing, errors as exit codes with a message, and no heavy imports on the CLI path."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from kaitoctl.commands.serve import parse_adapter_option
from kaitoctl.errors import UsageError


@pytest.mark.parametrize("value,expected", [
    ("sql=./adapters/sql", ("sql", "./adapters/sql", 1.0)),
    ("sql=./adapters/sql:0.5", ("sql", "./adapters/sql", 0.5)),
    ("neg=/a:-1.5", ("neg", "/a", -1.5)),
    ("win=C:\\adapters\\x", ("win", "C:\\adapters\\x", 1.0)),  # a ':' that is not a strength
    ("odd=/data/v1:2:0.25", ("odd", "/data/v1:2", 0.25)),
])
def test_adapter_option_syntax(value, expected):
    assert parse_adapter_option(value) == expected


@pytest.mark.parametrize("value", ["sql", "=dir", "sql=", "sql=/a:nan", "sql=/a:inf"])
def test_bad_adapter_option_is_a_usage_error(value):
    with pytest.raises(UsageError):
        parse_adapter_option(value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    # A free port, so that these errors do not depend on 5000 being free on the test machine
    # (serve checks the port before it loads anything).
    port = ("--port", str(_free_port())) if args[:1] == ("serve",) else ()
    return subprocess.run([sys.executable, "-m", "kaitoctl", *args, *port], capture_output=True, text=True,
                          timeout=120)


def test_missing_model_is_exit_8_with_the_reason(tmp_path):
    result = run_cli("serve", "--model", str(tmp_path / "nope"))
    assert result.returncode == 8
    assert f"kaitoctl: error: model directory {tmp_path / 'nope'} does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_adapter_is_exit_8_naming_it(tiny, tmp_path):
    result = run_cli("serve", "--model", str(tiny.llama), "--adapter", f"sql={tmp_path / 'sql'}:0.5")
    assert result.returncode == 8 and "adapter 'sql': directory" in result.stderr


@pytest.mark.parametrize("args,needle", [
    (["--adapter", "a=/x", "--adapter", "a=/y"], "a given more than once"),
    (["--adapter", "bad"], "expected NAME=DIR[:STRENGTH]"),
    (["--adapter", "../up=/x"], "not a valid adapter name"),
    (["--nproc", "2"], "--nproc works with -f only"),
])
def test_bad_flags_are_usage_errors(tiny, args, needle):
    result = run_cli("serve", "--model", str(tiny.llama), *args)
    assert result.returncode == 2 and needle in result.stderr


def test_cli_path_does_not_import_torch_or_the_server():
    code = (
        "import sys\n"
        "from kaitoctl.cli import main\n"
        "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'flask', 'kaitoctl_server.app') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "NAME=DIR[:STRENGTH]" in result.stdout
    assert "HEAVY []" in result.stdout, result.stdout
