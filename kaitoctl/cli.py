"""The kaitoctl command line: one Typer app, thin commands, one error boundary.

Commands live in ``kaitoctl/commands/<area>.py`` and are registered here. This
module is on every command's start-up path: keep its imports light.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from kaitoctl import __version__
from kaitoctl.errors import KaitoctlError

app = typer.Typer(
    name="kaitoctl",
    help=(
        "Run KAITO Workspaces (kaito.sh/v1alpha1) on any Kubernetes cluster from the client side: "
        "validate, preflight GPU nodes, apply, watch the rollout, and manage LoRA adapters. "
        "No operator, CRD or webhook needed in the cluster."
    ),
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


_COMMANDS_REGISTERED = False


def _register_commands() -> None:
    # Once per process: main() runs many times in-process in tests, and registering again would add
    # every command a second time (and make each later call slower).
    global _COMMANDS_REGISTERED
    if _COMMANDS_REGISTERED:
        return
    from kaitoctl.commands import REGISTERED

    for register in REGISTERED:
        register(app)
    _COMMANDS_REGISTERED = True


def _print_error(err: KaitoctlError) -> None:
    from kaitoctl.output import stderr_console

    console = stderr_console()
    console.print(f"kaitoctl: error: {err.message}", markup=False)
    for line in err.details:
        console.print(f"  {line}", markup=False)
    if err.hint:
        console.print(f"hint: {err.hint}", markup=False)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: run the app and map every outcome to a documented exit code."""
    _register_commands()
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
    except typer.TyperException as exc:
        # Typer >= 0.29 vendors click: usage errors are typer.TyperException, not click.ClickException.
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            print(f"kaitoctl: error: {exc.format_message()}", file=sys.stderr)
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
    sys.exit(rv if isinstance(rv, int) else 0)
