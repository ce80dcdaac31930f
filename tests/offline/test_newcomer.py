"""What a newcomer trips over (issue 14): each case a user hit, with the documented exit code and the fix."""

from __future__ import annotations

import re
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


def test_presets_list_piped_never_cuts_a_name_whatever_columns_says(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from kaitoctl.catalog import presets

    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run(["presets", "list", "-o", "wide"], capsys)
    assert code == 0 and "…" not in out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == set(presets())  # every name whole, first on its line
    for preset in presets().values():
        if preset.access == "public":
            assert preset.image() in rows[preset.name]  # the IMAGE column in full too


def test_presets_list_on_an_80_column_terminal_shows_every_name_whole(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from kaitoctl.catalog import presets

    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich: stdout is a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    code, out, _ = run(["presets", "list"], capsys)
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)  # the header is bold on a terminal
    assert code == 0 and "…" not in out
    assert all(len(line) <= 80 for line in out.splitlines())
    firsts = [line.split()[0] for line in out.splitlines()[1:] if line[:1].strip()]
    assert [n for n in firsts if n != "NAME"] == list(presets())  # each name whole at the start of its row


def test_tables_on_a_narrow_terminal_keep_names_whole_and_wrap_the_rest() -> None:
    from rich.console import Console
    from rich.table import Table

    from kaitoctl.output import print_table

    console = Console(width=40, force_terminal=True, no_color=True, record=True)
    table = Table(box=None, pad_edge=False)
    table.add_column("NAME", no_wrap=True)
    table.add_column("CHANGES")
    table.add_row("workspace-falcon-7b-adapters", "adapter additional-source strength 0.5 → 0.8")
    print_table(table, console)
    text = console.export_text()
    assert "…" not in text
    assert "workspace-falcon-7b-adapters" in text and all(len(line) <= 40 for line in text.splitlines())
    assert " ".join(text.split()).count("strength") == 1 and "0.8" in text  # wrapped, not cut


def test_tables_not_on_a_terminal_print_each_row_on_one_line_at_full_width() -> None:
    import io

    from rich.console import Console
    from rich.table import Table

    from kaitoctl.output import print_table

    sink = io.StringIO()
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "IMAGE", "CHANGES"):
        table.add_column(column, no_wrap=column != "CHANGES")
    changes = "; ".join(f"adapter a{i} strength 0.{i} → 0.{i + 1}" for i in range(12))
    table.add_row("w", "registry.example.com/" + "x" * 300 + ":1", changes)
    print_table(table, Console(file=sink, width=80))
    lines = sink.getvalue().splitlines()
    assert len(lines) == 2 and "x" * 300 in lines[1] and changes in lines[1]


def test_help_shows_what_to_type_not_python_types(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(["adapters", "update", "--help"], capsys)
    assert code == 0 and "list[" not in out
    for shown in ("--adapter, --add NAME=IMAGE", "--strength NAME=VALUE", "--pull-secret NAME=SECRET",
                  "--remove NAME", "-f, --filename FILE", "-n, --namespace NAMESPACE", "--kubeconfig PATH"):
        assert shown in out


@pytest.mark.parametrize("argv,message", [
    (["skus", "list", "--cloud", "gcp"], "invalid value for '--cloud': 'gcp' is not one of 'azure', 'aws'"),
    (["status", "-o", "bogus"], "invalid value for '-o' / '--output': 'bogus' is not one of 'table', 'wide', "
                                "'json', 'yaml'"),
    (["serve", "--port", "0"], "invalid value for '--port': "),
])
def test_bad_flag_values_are_reported_in_kaitoctls_style(argv: list[str], message: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    command = " ".join(a for a in argv[:2] if not a.startswith("-"))
    # How a range is worded ("must be greater than or equal to 1", or click's "0 is not in the range
    # 1<=x<=65535" at the Typer floor) is the framework's; the form around it is kaitoctl's.
    first, *rest = err.splitlines()
    assert first.startswith(f"kaitoctl: error: {message}") and "Value error" not in first
    assert rest == [f"hint: `kaitoctl {command} -h` lists the options and their values"]


@pytest.fixture
def bench_venv(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import _venv

    monkeypatch.setattr(sys, "argv", ["bench/bench_status.py", "--repeat", "1"])
    return _venv


def test_a_benchmark_started_without_the_venv_reruns_itself_with_it(
        bench_venv: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    venv_python = tmp_path / ".venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.touch()
    monkeypatch.setattr(bench_venv, "VENV_PYTHON", venv_python)
    execs: list[tuple[str, list[str]]] = []

    def execv(path: str, argv: list[str]) -> None:  # os.execv does not return: the process is replaced
        execs.append((path, argv))
        raise SystemExit(0)

    monkeypatch.setattr("os.execv", execv)
    with pytest.raises(SystemExit):
        bench_venv.use_project_venv("json", "no_such_module_for_kaitoctl")  # type: ignore[attr-defined]
    assert execs == [(str(venv_python), [str(venv_python), "bench/bench_status.py", "--repeat", "1"])]
    assert "no_such_module_for_kaitoctl not installed" in capsys.readouterr().err


def test_a_benchmark_without_any_venv_says_what_to_run(
        bench_venv: object, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(bench_venv, "VENV_PYTHON", tmp_path / "nothing" / "python")
    with pytest.raises(SystemExit) as info:
        bench_venv.use_project_venv("no_such_module_for_kaitoctl")  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert "bench_status.py needs no_such_module_for_kaitoctl" in err
    assert "hint: run `make bench`" in err and ".venv/bin/python bench/bench_status.py" in err
    bench_venv.use_project_venv("json")  # what is installed: nothing to do


def test_validate_and_render_say_when_no_registry_is_set_for_the_preset_image(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("KAITOCTL_PRESET_REGISTRY", raising=False)
    problem = ("no registry is set for the preset image kaitoctl-falcon-7b:0.1.0: nothing is published at the "
               "default ghcr.io/kaitoctl, so the pods could not pull it; build and push the preset images "
               "(docker/build-presets.sh --push --registry R; docs/docker.md), then pass --registry R or export "
               "KAITOCTL_PRESET_REGISTRY=R")
    code, out, err = run(["validate", "-f", "examples/falcon-7b.yaml"], capsys)
    assert code == 0 and out.startswith("workspace/workspace-falcon-7b valid")
    assert f"kaitoctl: workspace-falcon-7b: note: {problem}; `kaitoctl apply` refuses it until then" in err

    code, out, err = run(["render", "-f", "examples/falcon-7b.yaml"], capsys)
    assert code == 0 and "image: ghcr.io/kaitoctl/kaitoctl-falcon-7b:0.1.0" in out
    assert (f"# workspace-falcon-7b: ghcr.io/kaitoctl/kaitoctl-falcon-7b:0.1.0 is a placeholder: {problem}; "
            "`kaitoctl apply` refuses it") in err.splitlines()

    code, out, err = run(["render", "-f", "examples/falcon-7b.yaml", "--registry", "reg.example.com/t"], capsys)
    assert code == 0 and "image: reg.example.com/t/kaitoctl-falcon-7b:0.1.0" in out
    assert ("# workspace-falcon-7b: preset image reg.example.com/t/kaitoctl-falcon-7b:0.1.0 (registry from "
            "--registry)") in err.splitlines()
