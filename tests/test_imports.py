"""CLI import hygiene: the command line never loads the ML stack, and offline commands never load the
kubernetes client. `kaitoctl --help` must stay fast, and `validate`/`render` must work on a machine
(or in CI) that has neither a GPU stack nor a cluster.

Two checks: run the real commands in fresh interpreters and look at ``sys.modules`` when they exit;
and read every module of the ``kaitoctl`` package, so that an import hidden in a command that these
runs do not reach is caught too.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kaitoctl"
ML_STACK = ("torch", "transformers", "peft", "flask", "accelerate", "safetensors", "gunicorn")
SERVER = "kaitoctl_server"  # imports the ML stack; `kaitoctl serve` may start it, from inside the command
CLUSTER = ("kubernetes",)

# Runs kaitoctl's real entry point, and whatever way it exits, writes the loaded module names.
_WRAPPER = """
import atexit, json, sys
out = sys.argv[1]
atexit.register(lambda: json.dump(sorted(sys.modules), open(out, "w")))
from kaitoctl.cli import main
main(sys.argv[2:])
"""


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def loaded_modules(argv: list[str], tmp_path: Path) -> set[str]:
    return {_top(name) for name in loaded_module_names(argv, tmp_path)}


def loaded_module_names(argv: list[str], tmp_path: Path, **extra_env: str) -> set[str]:
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITOCTL_")} | extra_env
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, str(out), *argv],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, f"kaitoctl {' '.join(argv)} failed:\n{proc.stderr}"
    return set(json.loads(out.read_text()))


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["validate", "-f", "examples/falcon-7b.yaml"],
        ["render", "-f", "examples/falcon-7b-adapters.yaml"],
        ["render", "-f", "examples/llama-2-13b-chat.yaml", "-o", "json"],
        ["presets", "list"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_offline_commands_load_neither_ml_stack_nor_kubernetes(argv: list[str], tmp_path: Path) -> None:
    modules = loaded_modules(argv, tmp_path)
    assert "kaitoctl" in modules  # the run really went through kaitoctl
    assert not modules & {*ML_STACK, SERVER, *CLUSTER}


def _command_modules(names: set[str]) -> set[str]:
    return {name for name in names if name.startswith("kaitoctl.commands.") and name != "kaitoctl.commands._options"}


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["render", "-f", "examples/falcon-7b-adapters.yaml"], "render"),
        (["validate", "-f", "examples/falcon-7b.yaml"], "validate"),
        (["presets", "list"], "catalog"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else value,
)
def test_running_one_command_imports_only_its_command_module(argv: list[str], module: str, tmp_path: Path) -> None:
    # Start-up: building every command's options costs time one command never uses.
    assert _command_modules(loaded_module_names(argv, tmp_path)) == {f"kaitoctl.commands.{module}"}


def test_command_table_names_the_module_that_registers_each_command() -> None:
    # COMMAND_MODULES is how `kaitoctl <name>` finds its module without importing the rest. A command
    # missing from it still runs (every module is then imported), only slower: add it to the table.
    import typer

    from kaitoctl.commands import COMMAND_MODULES, MODULES, register_function

    registered = {}
    for module in MODULES:
        holder = typer.Typer()
        register_function(module)(holder)
        registered.update(dict.fromkeys(typer.main.get_group(holder).commands, module))
    assert COMMAND_MODULES == registered


def test_help_completion_and_suggestions_see_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from kaitoctl.cli import main
    from kaitoctl.commands import COMMAND_MODULES

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listed = capsys.readouterr().out.split("Commands:", 1)[1]
    assert sorted(line.split()[0] for line in listed.strip().splitlines()) == sorted(COMMAND_MODULES)

    with pytest.raises(SystemExit) as exit_info:
        main(["rollbak"])
    assert exit_info.value.code == 2
    assert "kaitoctl: error: no such command 'rollbak'. Did you mean 'rollback'?" in capsys.readouterr().err

    env = {**os.environ, "_KAITOCTL_COMPLETE": "complete_bash", "COMP_WORDS": "kaitoctl s", "COMP_CWORD": "1"}
    proc = subprocess.run([sys.executable, "-m", "kaitoctl"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["status", "serve", "skus"]


RENDER = ["render", "-f", "examples/falcon-7b-adapters.yaml"]


def test_without_pydantic_plugins_start_up_skips_their_discovery(tmp_path: Path) -> None:
    # importlib.metadata (imported by pydantic's plugin lookup) is ~20 ms of start-up; no distribution
    # in this environment declares a pydantic plugin, so the answer is known without it.
    assert "importlib.metadata" not in loaded_module_names(RENDER, tmp_path)


_PLUGIN = """
import os

class Plugin:
    def new_schema_validator(self, schema, schema_type, schema_type_path, schema_kind, config, settings):
        with open(os.environ["SEEN"], "a", encoding="utf-8") as f:
            f.write(schema_type_path.name + "\\n")
        return None, None, None

plugin = Plugin()
"""


def test_an_installed_pydantic_plugin_is_still_loaded(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "seeplugin-1.0.dist-info").mkdir(parents=True)
    (site / "seeplugin-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: seeplugin\nVersion: 1.0\n")
    (site / "seeplugin-1.0.dist-info" / "entry_points.txt").write_text("[pydantic]\nsee = seeplugin:plugin\n")
    (site / "seeplugin.py").write_text(_PLUGIN)
    seen = tmp_path / "seen.txt"
    modules = loaded_module_names(RENDER, tmp_path, PYTHONPATH=str(site), SEEN=str(seen))
    assert "seeplugin" in modules
    assert "Workspace" in seen.read_text().split()


def test_the_stand_in_hands_anything_else_to_pydantic(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from kaitoctl._pydantic_plugins import skip_discovery_when_no_plugin_is_installed as skip\n"
        "assert skip() and not skip()\n"
        "from pydantic.plugin import _loader\n"
        "assert list(_loader.get_plugins()) == [] and 'importlib.metadata' not in sys.modules\n"
        "assert _loader.PYDANTIC_ENTRY_POINT_GROUP == 'pydantic'\n"  # a name the stand-in lacks
        "assert type(sys.modules['pydantic.plugin._loader']).__name__ == 'module'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(_top(alias.name), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((_top(node.module), node.lineno))
    return found


def _module_level_imports(tree: ast.Module) -> list[tuple[str, int]]:
    """Imports executed when the module is imported: the body, and ifs/trys at module level."""
    found = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found += _imports(node)
        elif isinstance(node, ast.If):
            is_type_checking = isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
            if not is_type_checking:
                pending += node.body
            pending += node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                pending += handler.body
        elif isinstance(node, (ast.With,)):
            pending += node.body
    return found


def _package_modules() -> list[Path]:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 10  # the walk found the package
    return modules


def test_no_cli_module_imports_the_ml_stack_anywhere() -> None:
    offenders = []
    for path in _package_modules():
        for name, line in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if name in ML_STACK:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: imports {name}")
    assert offenders == []


def test_no_cli_module_imports_kubernetes_or_the_server_at_module_level() -> None:
    offenders = []
    for path in _package_modules():
        for name, line in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if name in (*CLUSTER, SERVER):
                offenders.append(f"{path.relative_to(ROOT)}:{line}: imports {name} when the module loads")
    assert offenders == []


def test_the_source_checks_can_fail() -> None:
    # Guard against a checker that never finds anything.
    tree = ast.parse("import os\nif True:\n    import kubernetes.client\ndef f():\n    from torch import nn\n")
    assert ("torch", 5) in _imports(tree)
    assert ("kubernetes", 3) in _module_level_imports(tree)
    assert ("torch", 5) not in _module_level_imports(tree)
