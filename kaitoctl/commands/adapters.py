"""Commands: ``adapters list|update``, ``history``, ``rollback`` — changing a deployed workspace safely.

Everything starts from what the cluster records (the Workspace annotation on
the workload and the history ConfigMap), never from a local file, and every
change re-applies a whole Workspace through the same path as ``apply -f``:
preflight, surge or an explained refusal, rollout watch, history, rollback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from kaitoctl.commands._options import ContextOption, KubeconfigOption, NamespaceOption, OptionalFileOption
from kaitoctl.commands.cluster import (WAIT_CONTEXT, AllowDowntimeOption, ConsoleUI, ForceConflictsOption,
                                       NoRollbackOption, NoWaitOption, ReportFormat, ReportOutputOption,
                                       TimeoutOption, connect, name_and_wait, parse_duration, run_interruptible)
from kaitoctl.errors import NotFound, UsageError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kaitoctl.adapters import AdapterDiff
    from kaitoctl.history import History

adapters_app = typer.Typer(
    name="adapters",
    help="The LoRA adapters of a deployed workspace: list them, or change them with a safe rollout.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NameArgument = Annotated[str, typer.Argument(help="The workspace.")]
# Commands that also take --wait[=BOOL] parse NAME leniently (see kaitoctl.commands.cluster.name_and_wait).
OptionalNameArgument = Annotated[Optional[str], typer.Argument(help="The workspace.", show_default=False)]


def _name_and_wait(ctx: typer.Context, name: Optional[str], no_wait: bool) -> tuple[str, bool]:
    found, wait = name_and_wait(ctx, name, no_wait, default=True)
    if found is None:
        raise UsageError("missing argument NAME: the workspace")
    return found, wait


def _recorded(kube: Any, name: str, namespace: str) -> tuple[dict[str, Any], Any]:
    """The Workspace recorded with the workload, and the status view it came from."""
    from kaitoctl.status import get_workspace

    view = get_workspace(kube, name, namespace)
    if view.workspace is None:
        raise NotFound(f"{view.kind.lower()} {namespace}/{name} carries no recorded Workspace "
                       "(annotation kaitoctl.io/workspace): it was not applied by kaitoctl",
                       hint="apply the workspace with `kaitoctl apply -f FILE` first")
    return view.workspace, view


# --------------------------------------------------------------------------------------------
# adapters list


@adapters_app.command("list")
def list_command(
    name: NameArgument,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    output: ReportOutputOption = ReportFormat.table,
) -> None:
    """The adapters deployed now (from the cluster): image, strength, pull secret, and the pods serving them."""
    from rich.table import Table

    from kaitoctl.adapters import deployed_adapters
    from kaitoctl.output import emit, print_table, stderr_console, stdout_console

    kube = connect(kubeconfig, context, namespace)
    ns = namespace or kube.namespace
    recorded, view = _recorded(kube, name, ns)
    rows = deployed_adapters(recorded, view.pods)
    if output is not ReportFormat.table:
        emit(rows, output.value)
        return
    if not rows:
        stderr_console().print(f"workspace {ns}/{name} has no adapters", markup=False)
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style=None)
    for column in ("NAME", "IMAGE", "STRENGTH", "PULL SECRET", "IN PODS"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(row["name"], row["image"], row["strength"], ",".join(row["imagePullSecrets"]) or "-",
                      f"{row['podsWithIt']}/{row['readyPods']} ready pod(s)")
    console = stdout_console()
    print_table(table, console)


# --------------------------------------------------------------------------------------------
# adapters update


def print_diff(rows: list["AdapterDiff"], console: Any) -> None:
    """Old → new per adapter."""
    def show(a: Optional[dict[str, Any]], key: str) -> str:
        if a is None:
            return "-"
        value = a[key]
        return ",".join(value) or "-" if isinstance(value, list) else str(value)

    for row in rows:
        if row.change == "unchanged":
            console.print(f"  = {row.name}: unchanged ({show(row.after, 'image')}, strength "
                          f"{show(row.after, 'strength')})", markup=False, highlight=False)
            continue
        if row.change == "added":
            console.print(f"  + {row.name}: added: image {show(row.after, 'image')}, strength "
                          f"{show(row.after, 'strength')}, pull secrets {show(row.after, 'imagePullSecrets')}",
                          markup=False, highlight=False)
            continue
        if row.change == "removed":
            console.print(f"  - {row.name}: removed (was {show(row.before, 'image')}, strength "
                          f"{show(row.before, 'strength')})", markup=False, highlight=False)
            continue
        parts = []
        for key, label in (("image", "image"), ("strength", "strength"), ("imagePullSecrets", "pull secrets")):
            old, new = show(row.before, key), show(row.after, key)
            parts.append(f"{label} {old} → {new}" if old != new else f"{label} {new}")
        console.print(f"  ~ {row.name}: " + ", ".join(parts), markup=False, highlight=False)


@adapters_app.command("update", context_settings=WAIT_CONTEXT)
def update_command(
    ctx: typer.Context,
    name: OptionalNameArgument = None,
    adapter: Annotated[Optional[list[str]], typer.Option(
        "--adapter", "--add", metavar="NAME=IMAGE", help="Add an adapter, or replace its image. Repeatable.")] = None,
    strength: Annotated[Optional[list[str]], typer.Option(
        "--strength", metavar="NAME=VALUE", help="Set an adapter's strength (0 to 1). Repeatable.")] = None,
    pull_secret: Annotated[Optional[list[str]], typer.Option(
        "--pull-secret", metavar="NAME=SECRET",
        help="The pull secret for an adapter's image (repeat for several; NAME= clears them).")] = None,
    remove: Annotated[Optional[list[str]], typer.Option(
        "--remove", metavar="NAME", help="Remove an adapter. Repeatable.")] = None,
    filename: OptionalFileOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would change.")] = False,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    allow_downtime: AllowDowntimeOption = False,
    no_rollback: NoRollbackOption = False,
    no_wait: NoWaitOption = False,
    timeout: TimeoutOption = "15m",
    force_conflicts: ForceConflictsOption = False,
) -> None:
    """Change a deployed workspace's adapters in one rollout, without editing YAML by hand.

    Starts from the Workspace recorded in the cluster; with -f FILE the adapter list is taken
    from that Workspace file instead. The result is validated like `kaitoctl validate`, the
    changes are shown (old → new), then applied like `kaitoctl apply`: a surge when a second
    pod's GPUs fit, otherwise a refusal unless --allow-downtime; a failed update rolls back.
    """
    from kaitoctl.adapters import AdapterEdits, adapters_from_file, diff, parse_pairs, updated_workspace
    from kaitoctl.apply import ApplyOptions, apply_workspace
    from kaitoctl.output import stderr_console, stdout_console

    name, wait = _name_and_wait(ctx, name, no_wait)
    secrets: dict[str, list[str]] = {}
    for value in pull_secret or []:
        key, sep, secret = value.partition("=")
        if not sep or not key:
            raise UsageError(f"--pull-secret {value!r}: expected NAME=SECRET")
        secrets.setdefault(key, [])
        if secret and secret not in secrets[key]:
            secrets[key].append(secret)
    edits = AdapterEdits(images=parse_pairs(adapter or [], "--adapter"),
                         strengths=parse_pairs(strength or [], "--strength"), pull_secrets=secrets,
                         remove=list(dict.fromkeys(remove or [])),
                         from_file=adapters_from_file(filename) if filename else None)
    if edits.empty:
        raise UsageError("nothing to change",
                         hint="use --adapter NAME=IMAGE, --strength NAME=VALUE, --pull-secret NAME=SECRET, "
                              "--remove NAME, or -f FILE")
    timeout_s = parse_duration(timeout)
    kube = connect(kubeconfig, context, namespace)
    ns = namespace or kube.namespace
    recorded, _ = _recorded(kube, name, ns)
    ws = updated_workspace(recorded, edits)
    rows = diff(recorded, ws.canonical())
    console = stdout_console() if dry_run else stderr_console()
    console.print(f"adapters of {ns}/{name}:", markup=False, highlight=False)
    print_diff(rows, console)
    if all(r.change == "unchanged" for r in rows):
        stderr_console().print("nothing changes: no rollout", markup=False)
        return
    if dry_run:
        return
    summary = ", ".join(f"{r.change} {r.name}" for r in rows if r.change != "unchanged")
    opts = ApplyOptions(wait=wait, timeout_s=timeout_s, allow_downtime=allow_downtime, rollback=not no_rollback,
                        force_conflicts=force_conflicts, namespace=ns, change=f"adapters update: {summary}")
    ui = ConsoleUI()
    run_interruptible(lambda: apply_workspace(kube, ws, opts, ui), name, ns, ui)


# --------------------------------------------------------------------------------------------
# history and rollback


def _history(kube: Any, name: str, namespace: str) -> tuple["History", int]:
    """The recorded history and the revision running now (0 when the workload is gone)."""
    from kaitoctl import history as hist

    history = hist.read(kube, name, namespace)
    current = _running_revision(kube, name, namespace)
    if not history.revisions:
        from kaitoctl.kube import namespace_missing

        raise namespace_missing(kube, namespace) or NotFound(f"no history recorded for workspace {namespace}/{name} "
                       f"(ConfigMap {hist.configmap_name(name)} not found)",
                       hint="history starts with the first `kaitoctl apply`")
    return history, current


def _running_revision(kube: Any, name: str, namespace: str) -> int:
    """The revision on the workspace's workload: one LIST per workload kind (no pods, Services or events)."""
    from kaitoctl.history import WORKSPACE_LABEL, revision_of

    for kind in ("Deployment", "StatefulSet"):
        items, _ = kube.list(kind, namespace, label_selector=f"{WORKSPACE_LABEL}={name}")
        for workload in items:
            if (workload.get("metadata") or {}).get("name") == name:
                return revision_of(workload)
    return 0


def history_command(
    name: NameArgument,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    output: ReportOutputOption = ReportFormat.table,
) -> None:
    """The revisions of a workspace (the last 10): when, what changed in adapters and strengths, how it went."""
    from rich.table import Table

    from kaitoctl.output import emit, print_table, stdout_console

    kube = connect(kubeconfig, context, namespace)
    ns = namespace or kube.namespace
    history, current = _history(kube, name, ns)
    if output is not ReportFormat.table:
        emit([{**r.to_dict(), "current": r.revision == current} for r in reversed(history.revisions)],
             output.value)
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style=None)
    for column in ("REVISION", "TIME", "ORIGIN", "OUTCOME", "ROLLOUT", "CHANGES"):
        table.add_column(column, no_wrap=column not in ("CHANGES", "ORIGIN"), overflow="fold")
    for rev in reversed(history.revisions):
        mark = "*" if rev.revision == current else " "
        seconds = f"{rev.rollout_seconds:.0f}s" if rev.rollout_seconds is not None else "-"
        table.add_row(f"{rev.revision}{mark}", rev.time, rev.change, rev.outcome, seconds, "; ".join(rev.changes))
    console = stdout_console()
    print_table(table, console)
    console.print("* = running now", markup=False)
    for rev in reversed(history.revisions):
        if rev.failure:
            console.print(f"revision {rev.revision} failed: {rev.failure}", markup=False, highlight=False)


def rollback_command(
    ctx: typer.Context,
    name: OptionalNameArgument = None,
    to_revision: Annotated[Optional[int], typer.Option("--to-revision", help="The revision to restore (default: "
                                                       "the latest earlier one that rolled out).")] = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    allow_downtime: AllowDowntimeOption = False,
    no_wait: NoWaitOption = False,
    timeout: TimeoutOption = "15m",
    force_conflicts: ForceConflictsOption = False,
) -> None:
    """Re-apply a whole earlier Workspace (adapters, strengths, Service and all) as a new revision.

    Unlike `kubectl rollout undo`, which restores the pod template only, this restores
    everything the Workspace says, through the same safe path as `kaitoctl apply`.
    """
    from kaitoctl.apply import ApplyOptions, apply_workspace
    from kaitoctl.workspace import Workspace

    name, wait = _name_and_wait(ctx, name, no_wait)
    timeout_s = parse_duration(timeout)
    kube = connect(kubeconfig, context, namespace)
    ns = namespace or kube.namespace
    history, current = _history(kube, name, ns)
    known = ", ".join(str(r.revision) for r in history.revisions)
    if to_revision is not None:
        target = history.get(to_revision)
        if target is None:
            raise UsageError(f"--to-revision {to_revision}: workspace {ns}/{name} has no such revision",
                             hint=f"recorded revisions: {known} (`kaitoctl history {name}`)")
    else:
        running = history.get(current)
        candidates = [r for r in history.good(below=current)
                      if running is None or r.workspace != running.workspace]
        if not candidates:
            raise UsageError(f"workspace {ns}/{name} has no earlier revision to roll back to",
                             hint=f"recorded revisions: {known}; pick one with --to-revision")
        target = candidates[0]
    ui = ConsoleUI()
    ui.step(f"rolling back {ns}/{name} to revision {target.revision} ({target.time}: "
            f"{'; '.join(target.changes)})")
    ws = Workspace.model_validate(target.workspace)
    opts = ApplyOptions(wait=wait, timeout_s=timeout_s, allow_downtime=allow_downtime, rollback=True,
                        force_conflicts=force_conflicts, namespace=ns,
                        change=f"rollback to revision {target.revision}")
    run_interruptible(lambda: apply_workspace(kube, ws, opts, ui), name, ns, ui)


def register(app: typer.Typer) -> None:
    """Add ``adapters``, ``history`` and ``rollback`` to ``app``."""
    app.add_typer(adapters_app, name="adapters")
    app.command("history")(history_command)
    app.command("rollback", context_settings=WAIT_CONTEXT)(rollback_command)
