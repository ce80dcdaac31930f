"""What a newcomer trips over (issue 14): each case a user hit, with the documented exit code and the fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kaitoctl.cli import main
from kaitoctl.local import SERVER_MODULES


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture
def cli_only_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """As after `pip install .` without the server extra: none of the server's packages can be imported."""
    for name in SERVER_MODULES:
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize("argv", [
    ["demo"],
    ["serve", "--model", "./weights"],
    ["serve", "-f", "examples/falcon-7b-adapters.yaml"],
])
def test_serve_and_demo_without_the_server_extra_exit_8_naming_the_fix(
        argv: list[str], cli_only_install: None, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if argv == ["demo"]:
        argv = ["demo", "--dir", str(tmp_path / "demo")]
    code, out, err = run(argv, capsys)
    assert code == 8, err
    assert "internal error" not in err and "Traceback" not in err
    assert "torch" in err and "not installed" in err
    assert "hint: install the server extra" in err and "pip install '.[server]'" in err
    assert out == ""  # the demo says nothing else, and creates nothing
    assert not (tmp_path / "demo").exists()


def test_kubeconfig_with_a_yaml_syntax_error_exits_4_with_the_parsers_whole_message(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nclusters:\n- name: x\n  not: [valid\n")
    code, _, err = run(["status", "--kubeconfig", str(config)], capsys)
    assert code == 4, err
    assert "internal error" not in err
    assert f"kaitoctl: error: cannot use the kubeconfig {config}: it is not valid YAML" in err
    # what the parser expected and where: the flow sequence's start and where it ran out, with the file
    assert f'in "{config}", line 4, column 8' in err
    assert "expected ',' or ']', but got '<stream end>'" in err
    assert f'in "{config}", line 5, column 1' in err
    assert "hint: fix the file at the line and column above" in err
