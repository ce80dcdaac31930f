"""The kaitoctl command line: one Typer app, thin commands, one error boundary.

Commands live in ``kaitoctl/commands/<area>.py`` and are built here on first use. This
module is on every command's start-up path: keep its imports light.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any, Optional

import typer
from typer.core import TyperGroup

from kaitoctl import __version__
from kaitoctl._pydantic_plugins import skip_discovery_when_no_plugin_is_installed
from kaitoctl.errors import KaitoctlError

# Click commands built from the command modules, once per process: main() runs many times
# in-process in tests. Key: a module name, or None for every module.
_BUILT: dict[Optional[str], dict[str, Any]] = {}


def _module_commands(module: Optional[str]) -> dict[str, Any]:
    """The commands ``kaitoctl.commands.<module>`` registers (every module's for None), in order."""
    if module not in _BUILT:
        from kaitoctl.commands import MODULES, register_function

        holder = typer.Typer(
            rich_markup_mode=app.rich_markup_mode,
            pretty_exceptions_short=app.pretty_exceptions_short,
            suggest_commands=app.suggest_commands,
            add_completion=False,
        )
        for name in MODULES if module is None else (module,):
            register_function(name)(holder)
        _BUILT[module] = dict(typer.main.get_group(holder).commands)
    return _BUILT[module]


class _LazyCommands(MutableMapping[str, Any]):
    """The root group's commands, imported and built on first use.

    Looking one name up (running a command) builds only the module that
    ``COMMAND_MODULES`` names for it: the other modules' imports and option
    parsing cost start-up time a single command never uses. Listing them
    (``--help``, completion, did-you-mean) or an unknown name builds them all,
    in registration order, so the table is only ever a shortcut.
    """

    def __init__(self, own: dict[str, Any]) -> None:
        self._own = own  # commands registered on `app` itself, if any
        self._commands: dict[str, Any] = {}
        self._complete = False

    def _all(self) -> dict[str, Any]:
        if not self._complete:
            self._commands = {**_module_commands(None), **self._own}
            self._complete = True
        return self._commands

    def __getitem__(self, name: str) -> Any:
        if name in self._own:
            return self._own[name]
        if name not in self._commands and not self._complete:
            from kaitoctl.commands import COMMAND_MODULES

            module = COMMAND_MODULES.get(name)
            command = _module_commands(module).get(name) if module else None
            if command is None:
                return self._all()[name]
            self._commands[name] = command
        return self._commands[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __setitem__(self, name: str, command: Any) -> None:
        self._all()[name] = command

    def __delitem__(self, name: str) -> None:
        del self._all()[name]


class _LazyGroup(TyperGroup):
    """The root group, with commands from `_LazyCommands`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = _LazyCommands(dict(self.commands))


app = typer.Typer(
    name="kaitoctl",
    help=(
        "Run KAITO Workspaces (kaito.sh/v1beta1 and v1alpha1) on any Kubernetes cluster from the client side: "
        "validate, preflight GPU nodes, apply, watch the rollout, and manage LoRA adapters. "
        "No operator, CRD or webhook needed in the cluster."
    ),
    cls=_LazyGroup,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_DEBUG = False


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"kaitoctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.", envvar="KAITOCTL_DEBUG"),
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Global options."""
    global _DEBUG
    _DEBUG = debug
    if debug:
        from kaitoctl import kube

        kube.DEBUG = True


def _print_error(err: KaitoctlError) -> None:
    from kaitoctl.output import stderr_console

    from kaitoctl.errors import Interrupted

    console = stderr_console()
    console.print(f"kaitoctl: {'' if isinstance(err, Interrupted) else 'error: '}{err.message}", markup=False)
    for line in err.details:
        console.print(f"  {line}", markup=False)
    if err.hint:
        console.print(f"hint: {err.hint}", markup=False)


def _print_usage_error(exc: Any) -> None:
    """A bad flag or argument in kaitoctl's own style: ``kaitoctl: error: ...`` and where the options are."""
    message = exc.format_message()
    # Typer validates choices with pydantic, whose message starts "Value error, ": not a user's word.
    message = message.replace("Value error, ", "").replace("Input should be ", "must be ").rstrip(".")
    message = message[:1].lower() + message[1:]
    print(f"kaitoctl: error: {message}", file=sys.stderr)
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        what = "commands" if message.startswith("no such command") else "options and their values"
        print(f"hint: `{ctx.command_path} -h` lists the {what}", file=sys.stderr)


def _usage_error_types() -> tuple[type[Exception], ...]:
    """The exception types Typer/click raise for bad flags and arguments, whichever Typer is installed."""
    types: list[type[Exception]] = []
    if hasattr(typer, "TyperException"):
        types.append(typer.TyperException)
    try:
        import click
    except ImportError:  # Typer >= 0.29 no longer needs click
        pass
    else:
        types.append(click.ClickException)
    return tuple(types)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: run the app and map every outcome to a documented exit code."""
    # Before any pydantic model or Typer option is built: ~20 ms of start-up (see the module).
    skip_discovery_when_no_plugin_is_installed()
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="kaitoctl", standalone_mode=False)
    except KaitoctlError as err:
        if _DEBUG:
            import traceback

            traceback.print_exc()
        _print_error(err)
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("kaitoctl: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except _usage_error_types() as exc:
        # Typer >= 0.29 vendors click: usage errors are typer.TyperException; older Typer raises
        # click.ClickException (the floor in setup.cfg, tested by `make test-floors`).
        _print_usage_error(exc)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        # `kaitoctl render ... | head`: not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
    except Exception:  # noqa: BLE001 - the one place that catches everything
        if _DEBUG:
            raise
        import traceback

        print("kaitoctl: internal error (this is a bug in kaitoctl; rerun with --debug for the traceback):",
              file=sys.stderr)
        print("  " + traceback.format_exc().strip().splitlines()[-1], file=sys.stderr)
        sys.exit(1)
    if rv == 130:  # Typer turns a Ctrl-C that nothing caught into exit code 130, silently
        print("kaitoctl: interrupted", file=sys.stderr)
    sys.exit(rv if isinstance(rv, int) else 0)
