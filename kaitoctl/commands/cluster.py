"""Commands: ``apply``, ``preflight``, ``status``, ``delete`` — the cluster half.

Thin: parse flags, connect, call one core function (kaitoctl.apply, .preflight,
.status, .delete), hand the result to the console helpers below. Progress and
diagnostics go to stderr, data (object lines, tables, JSON/YAML) to stdout.
The kubernetes client and the core modules are imported inside the commands.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from kaitoctl.commands._options import (ContextOption, KubeconfigOption, NamespaceOption, OptionalFileOption,
                                        FileOption, RegistryOption)
from kaitoctl.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kaitoctl.kube import Kube
    from kaitoctl.preflight import PreflightReport
    from kaitoctl.rollout import RolloutStatus
    from kaitoctl.status import WorkspaceView

# Options that take `--wait`, `--wait=BOOL` and `--no-wait` (kubectl spells booleans `--wait=false`;
# Typer flags cannot take a value, so `--wait[=BOOL]` is read from the extra arguments).
WAIT_CONTEXT = {"ignore_unknown_options": True, "allow_extra_args": True}
_TRUE = ("", "true", "1", "yes", "t", "y")
_FALSE = ("false", "0", "no", "f", "n")


class DryRun(str, Enum):
    none = "none"
    client = "client"
    server = "server"


class ObjectsFormat(str, Enum):
    yaml = "yaml"
    json = "json"


class ReportFormat(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


class StatusFormat(str, Enum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


TimeoutOption = Annotated[
    str, typer.Option("--timeout", help="How long to wait, e.g. 90s, 15m, 1h30m (a bare number is seconds).")
]
NoWaitOption = Annotated[
    bool, typer.Option("--no-wait", help="Do not wait (same as --wait=false).", show_default=False)
]
AllowDowntimeOption = Annotated[
    bool, typer.Option("--allow-downtime", help="Allow an update that must stop the serving pod first (Recreate) "
                       "when no second pod's GPUs fit.")
]
NoRollbackOption = Annotated[
    bool, typer.Option("--no-rollback", help="Leave a failed update in place for inspection instead of rolling back.")
]
ForceConflictsOption = Annotated[
    bool, typer.Option("--force-conflicts", help="Take over fields another field manager owns (server-side apply "
                       "conflicts).")
]
ReportOutputOption = Annotated[ReportFormat, typer.Option("-o", "--output", help="table, json or yaml.")]
ValidationStrictOption = Annotated[bool, typer.Option("--strict", help="Treat validation warnings as errors.")]


def parse_duration(text: str) -> float:
    """``15m`` / ``90s`` / ``1h30m`` / ``300`` → seconds (kubectl's duration flags)."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise UsageError(f"--timeout: {text!r} is not a duration",
                             hint="use a number with a unit: 90s, 15m, 1h30m")
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        seconds = sum(float(n) * scale[u] for n, u in parts)
    if seconds <= 0:  # a bare 0 too: a zero timeout would give up before the first look
        raise UsageError("--timeout must be more than zero")
    return seconds


def wait_flag(ctx: typer.Context, no_wait: bool, default: bool) -> bool:
    """The value of ``--wait``/``--wait=BOOL``/``--no-wait`` from the extra arguments; others are errors."""
    return name_and_wait(ctx, None, no_wait, default, takes_name=False)[1]


def name_and_wait(ctx: typer.Context, name: Optional[str], no_wait: bool, default: bool, *,
                  takes_name: bool = True) -> tuple[Optional[str], bool]:
    """A command's NAME argument and ``--wait[=BOOL]``/``--no-wait``.

    With unknown options allowed (so that ``--wait=false`` parses), the parser may hand
    ``--wait`` over as NAME and NAME over as an extra argument: sort them out here.
    """
    value = default
    positional: list[str] = []
    for arg in ([name] if name is not None else []) + list(ctx.args):
        if arg == "--wait" or arg.startswith("--wait="):
            raw = arg.partition("=")[2].lower()
            if raw in _TRUE:
                value = True
            elif raw in _FALSE:
                value = False
            else:
                raise UsageError(f"--wait={raw}: expected true or false")
        elif arg.startswith("-"):
            raise UsageError(f"no such option: {arg}", hint=f"`kaitoctl {ctx.info_name} --help` lists the options")
        else:
            positional.append(arg)
    if len(positional) > (1 if takes_name else 0):
        raise UsageError(f"unexpected argument(s): {' '.join(positional[1 if takes_name else 0:])}")
    return (positional[0] if positional else None), (False if no_wait else value)


def connect(kubeconfig: Any, context: Optional[str], namespace: Optional[str]) -> "Kube":
    from kaitoctl.kube import connect as kube_connect

    return kube_connect(kubeconfig, context, namespace)


# --------------------------------------------------------------------------------------------
# Console helpers


class ConsoleUI:
    """Apply's :class:`kaitoctl.apply.ApplyUI` on the terminal: progress on stderr, results on stdout."""

    def __init__(self, objects_format: Optional[str] = None, preflight_table: bool = True) -> None:
        from kaitoctl.output import stderr_console, stdout_console

        self.err = stderr_console()
        self.out = stdout_console()
        self.objects_format = objects_format
        self.preflight_table = preflight_table
        self._shown: dict[str, str] = {}
        self._message = ""

    def step(self, text: str) -> None:
        self.err.print(text, markup=False, highlight=False)

    def warn(self, text: str) -> None:
        self.err.print(f"warning: {text}", markup=False, style="yellow")

    def preflight(self, report: "PreflightReport") -> None:
        if self.preflight_table:
            print_preflight(report, self.err)

    def result(self, text: str) -> None:
        if self.objects_format is None:
            self.out.print(text, markup=False, highlight=False)
        else:
            self.err.print(text, markup=False, highlight=False)

    def objects(self, objs: list[dict[str, Any]]) -> None:
        if self.objects_format is not None:
            from kaitoctl.output import emit

            emit(objs, self.objects_format)

    def progress(self, status: "RolloutStatus", elapsed: float) -> None:
        stamp = f"[{int(elapsed):>4}s]"
        if status.message and status.message != self._message:
            self._message = status.message
            self.err.print(f"{stamp} {status.message}", markup=False, highlight=False)
        for line in status.pods:
            pod, _, state = line.partition(": ")
            if self._shown.get(pod) != state:
                self._shown[pod] = state
                self.err.print(f"{stamp} {line}", markup=False, highlight=False)


def print_preflight(report: "PreflightReport", console: Any) -> None:
    """The preflight verdict: one row per matching node, then problems, warnings and the strategy."""
    from rich.table import Table

    from kaitoctl.output import print_table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("NODE", "INSTANCE", "READY", "GPUS ALLOC", "REQUESTED", "FREE", "FITS", "WHY NOT"):
        table.add_column(column, no_wrap=column != "WHY NOT", overflow="fold")
    for row in report.rows:
        table.add_row(row.name + (" (preferred)" if row.preferred else ""), row.instance_type or "-",
                      "yes" if row.ready else "no", str(row.gpus_allocatable), str(row.gpus_requested),
                      str(row.gpus_free), "yes" if row.fits else "no", "; ".join(row.why_not) or "-")
    console.print(f"preflight {report.namespace}/{report.workspace}: {report.count} pod(s) of "
                  f"{report.gpus_per_pod} GPU(s)", markup=False, highlight=False)
    if report.rows:
        print_table(table, console)
    if report.unmatched_nodes:
        console.print(f"({report.unmatched_nodes} other node(s) do not match the labelSelector)", markup=False)
    if report.image:
        console.print(report.image, markup=False, highlight=False)
    for problem in report.problems:
        console.print(f"✗ {problem}", markup=False, highlight=False)
    for warning in report.warnings:
        console.print(f"! {warning}", markup=False, highlight=False)
    if report.ok:
        console.print(f"✓ fits; strategy {report.plan.strategy}: {report.plan.reason}", markup=False,
                      highlight=False)


# --------------------------------------------------------------------------------------------
# apply


def apply_command(
    ctx: typer.Context,
    filename: FileOption,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    dry_run: Annotated[DryRun, typer.Option("--dry-run", help="client: render + preflight, send nothing; "
                                            "server: the API server validates everything, stores nothing.")]
    = DryRun.none,
    force_conflicts: ForceConflictsOption = False,
    skip_preflight: Annotated[bool, typer.Option("--skip-preflight", help="Do not check nodes, GPUs and pull "
                                                 "secrets first (the strategy then comes from the catalog).")]
    = False,
    no_wait: NoWaitOption = False,
    timeout: TimeoutOption = "15m",
    allow_downtime: AllowDowntimeOption = False,
    no_rollback: NoRollbackOption = False,
    output: Annotated[Optional[ObjectsFormat], typer.Option("-o", "--output", help="Also print the objects "
                                                             "(as sent, or as the server returned them).")] = None,
    registry: RegistryOption = None,
    strict: ValidationStrictOption = False,
) -> None:
    """Validate, preflight, server-side apply and watch the rollout of each Workspace in FILE.

    --wait is the default (also --wait=true); --no-wait or --wait=false returns after applying.
    Nothing is written unless the preflight and a server-side dry run of every object pass.
    Re-applying an unchanged file reports "unchanged" and starts no rollout. A failed update
    is rolled back to the previous revision unless --no-rollback.
    """
    from kaitoctl.apply import ApplyOptions, apply_workspace
    from kaitoctl.validate import load_objects

    wait = wait_flag(ctx, no_wait, default=True)
    timeout_s = parse_duration(timeout)
    workspaces, companions = load_objects(filename, strict=strict)
    ui = ConsoleUI(objects_format=output.value if output else None)
    kube = connect(kubeconfig, context, namespace)
    opts = ApplyOptions(dry_run=dry_run.value, force_conflicts=force_conflicts, skip_preflight=skip_preflight,
                        wait=wait, timeout_s=timeout_s, allow_downtime=allow_downtime, rollback=not no_rollback,
                        registry=registry, namespace=namespace, companions=companions)
    for ws in workspaces:
        run_interruptible(lambda: apply_workspace(kube, ws, opts, ui), ws.name,
                          ws.metadata.namespace or namespace or kube.namespace, ui)


def run_interruptible(action: Any, name: str, namespace: str, ui: ConsoleUI) -> Any:
    """Run ``action``; on Ctrl-C say what stays applied and how to resume, then exit 130."""
    try:
        return action()
    except KeyboardInterrupt:
        ui.err.print(f"\nstopped watching {namespace}/{name}: what was applied stays in place.\n"
                     f"resume with: kaitoctl status {name} -n {namespace} --watch", markup=False, highlight=False)
        raise


# --------------------------------------------------------------------------------------------
# preflight


def preflight_command(
    filename: FileOption,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    output: ReportOutputOption = ReportFormat.table,
    strict: ValidationStrictOption = False,
    registry: RegistryOption = None,
) -> None:
    """Check, without writing anything, that the cluster can run each Workspace in FILE.

    For every node matching the labelSelector: Ready, schedulable, taints, GPUs allocatable,
    requested and free, and whether a pod fits; then preferredNodes, pull secrets, and the
    rollout strategy an update would use. Exit code 5 when something does not fit.
    """
    from kaitoctl.apply import preflight_report
    from kaitoctl.errors import PreflightFailed
    from kaitoctl.output import emit, stdout_console
    from kaitoctl.validate import load_objects

    workspaces, companions = load_objects(filename, strict=strict)
    kube = connect(kubeconfig, context, namespace)
    ui = ConsoleUI(preflight_table=False)
    reports = [preflight_report(kube, ws, namespace, ui, registry, companions=companions) for ws in workspaces]
    if output is ReportFormat.table:
        for report in reports:
            print_preflight(report, stdout_console())
    else:
        data = [r.to_dict() for r in reports]
        emit(data if len(data) > 1 else data[0], output.value)
    failed = [r for r in reports if not r.ok]
    if failed:
        raise PreflightFailed(
            f"preflight failed for {', '.join(f'{r.namespace}/{r.workspace}' for r in failed)}",
            details=[p for r in failed for p in r.problems],
        )


# --------------------------------------------------------------------------------------------
# status


def status_command(
    name: Annotated[Optional[str], typer.Argument(help="A workspace: show why it is (not) serving.")] = None,
    namespace: NamespaceOption = None,
    all_namespaces: Annotated[bool, typer.Option("-A", "--all-namespaces", help="List every namespace.")] = False,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    output: Annotated[StatusFormat, typer.Option("-o", "--output", help="table, wide, json or yaml.")]
    = StatusFormat.table,
    watch: Annotated[bool, typer.Option("-w", "--watch", help="With NAME: follow the rollout until it is done "
                                        "or fails (resumes an interrupted `apply`).")] = False,
    timeout: TimeoutOption = "15m",
) -> None:
    """List workspaces with KAITO's columns, or explain one workspace on one screen.

    Without NAME: INSTANCE, RESOURCEREADY, INFERENCEREADY, WORKSPACESUCCEEDED, AGE, plus preset,
    adapters, ready replicas and endpoint (one LIST per kind, however many workspaces).
    With NAME: conditions, pods with container and init-container states, recent Warning
    events, adapters with strengths, the endpoint and a port-forward + curl line.
    """
    from kaitoctl import status as st
    from kaitoctl.output import emit

    kube = connect(kubeconfig, context, namespace)
    if name is None:
        if watch:
            raise UsageError("--watch needs a workspace NAME")
        views = st.list_workspaces(kube, namespace, all_namespaces, warn=ConsoleUI().warn)
        if output in (StatusFormat.json, StatusFormat.yaml):
            emit([v.to_dict() for v in views], output.value)
        else:
            from kaitoctl.kube import namespace_missing

            ns = namespace or kube.namespace
            gone = not views and not all_namespaces and namespace_missing(kube, ns) is not None
            print_status_table(views, wide=output is StatusFormat.wide, all_namespaces=all_namespaces,
                               namespace=ns, missing=" (the namespace does not exist)" if gone else "")
        return
    if all_namespaces:
        raise UsageError("-A cannot be combined with a workspace NAME; use -n NAMESPACE")
    ns = namespace or kube.namespace
    if watch:
        from kaitoctl import rollout

        view = st.get_workspace(kube, name, ns)
        ui = ConsoleUI()
        watched = run_interruptible(lambda: rollout.watch(kube, view.kind, name, ns, timeout_s=parse_duration(timeout),
                                                          on_progress=ui.progress), name, ns, ui)
        if watched is not None:
            _record_watched(kube, name, ns, view.revision, ui)
    view = st.get_workspace(kube, name, ns)
    if output in (StatusFormat.json, StatusFormat.yaml):
        data = view.to_dict()
        data["status"]["pods"] = st.pod_rows(view)
        data["status"]["events"] = [_event_dict(e) for e in view.events if e.get("type") == "Warning"][-10:]
        emit(data, output.value)
    else:
        print_status_detail(view)


def _record_watched(kube: "Kube", name: str, namespace: str, revision: int, ui: ConsoleUI) -> None:
    """A revision whose apply stopped watching early (interrupted, --wait=false) has now rolled out: say so."""
    from kaitoctl import history as hist
    from kaitoctl.errors import ClusterError

    try:
        recorded = hist.read(kube, name, namespace)
        entry = recorded.get(revision)
        was = entry.outcome if entry is not None else None
        if was in ("interrupted", "applied", "applying"):
            # How long the whole rollout took is unknown here (this watch saw only its end).
            hist.finish(kube, recorded, revision, outcome="succeeded")
            ui.step(f"revision {revision} recorded as succeeded (was {was})")
    except ClusterError as err:
        ui.warn(f"the rollout finished, but its history entry could not be updated: {err.message}")


def _event_dict(ev: dict[str, Any]) -> dict[str, Any]:
    from kaitoctl.rollout import event_time

    inv = ev.get("involvedObject") or {}
    return {"time": event_time(ev), "object": f"{inv.get('kind', '?').lower()}/{inv.get('name', '?')}",
            "reason": ev.get("reason"), "message": ev.get("message"), "count": ev.get("count", 1)}


def print_status_table(views: list["WorkspaceView"], *, wide: bool, all_namespaces: bool, namespace: str,
                       missing: str = "") -> None:
    from rich.table import Table

    from kaitoctl.output import print_table, stderr_console

    if not views:
        where = "any namespace" if all_namespaces else f"namespace {namespace!r}"
        stderr_console().print(f"No workspaces found in {where}{missing}.", markup=False)
        return
    columns = (["NAMESPACE"] if all_namespaces else []) + [
        "NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACESUCCEEDED", "AGE",
        "PRESET", "ADAPTERS", "READY", "ENDPOINT"]
    if wide:
        columns += ["REVISION", "STRATEGY", "NODES", "IMAGE"]
    table = Table(box=None, pad_edge=False, show_edge=False, header_style=None)
    for column in columns:
        table.add_column(column, no_wrap=True)
    for v in views:
        adapters = ",".join(f"{a['name']}={a['strength']}" for a in v.adapters) or "-"
        row = ([v.namespace] if all_namespaces else []) + [
            v.name, v.instance_type, v.condition("ResourceReady"), v.condition("InferenceReady"),
            v.condition("WorkspaceSucceeded"), v.age(), v.preset, adapters, f"{v.ready_replicas}/{v.replicas}",
            v.endpoint]
        if wide:
            row += [str(v.revision), v.strategy, ",".join(v.nodes) or "-", v.image]
        table.add_row(*row)
    print_table(table)


def print_status_detail(view: "WorkspaceView") -> None:
    from kaitoctl import status as st
    from kaitoctl.output import stdout_console

    out = stdout_console()

    def line(text: str = "") -> None:
        out.print(text, markup=False, highlight=False)

    serving = view.condition("InferenceReady") == "True"
    line(f"Workspace {view.namespace}/{view.name}  ({view.kind}, preset {view.preset}, instance "
         f"{view.instance_type}, revision {view.revision})")
    if serving:
        line(f"Serving: yes, {view.ready_replicas}/{view.replicas} pod(s) ready")
    elif view.serving:
        line(f"Serving: yes, {view.ready_replicas}/{view.replicas} pod(s) ready; an update is in progress: "
             f"{view.rollout_message}")
    else:
        line(f"Serving: NO, {view.ready_replicas}/{view.replicas} pod(s) ready")
    if view.failure:
        line(f"Why: {view.failure}")
        for detail in view.failure_details:
            line(f"  {detail}")
    elif not serving and view.rollout_message:
        line(f"Why: {view.rollout_message}")
    line()
    line("Conditions:")
    for c in view.conditions:
        line(f"  {c.type:<19} {c.status:<7} {c.reason}: {c.message}")
    line()
    line("Pods:")
    rows = st.pod_rows(view)
    if not rows:
        line("  (none)")
    for row in rows:
        line(f"  {row['name']}  ready {row['ready']}  {row['status']}  restarts {row['restarts']}  "
             f"node {row['node']}  age {row['age']}")
        for c in row["containers"]:
            line(f"    {c['kind']} {c['name']}: {c['state']}" + (f", {c['restarts']} restart(s)"
                                                                   if c["restarts"] else ""))
    line()
    line("Adapters:")
    if not view.adapters:
        line("  (none)")
    for a in view.adapters:
        secrets = f", pull secret {', '.join(a['imagePullSecrets'])}" if a["imagePullSecrets"] else ""
        line(f"  {a['name']}: strength {a['strength']}, image {a['image']}{secrets}")
    warnings = [e for e in view.events if e.get("type") == "Warning"][-10:]
    if warnings:
        line()
        line("Recent Warning events:")
        for ev in warnings:
            d = _event_dict(ev)
            count = f" (x{d['count']})" if (d["count"] or 1) > 1 else ""
            line(f"  {d['time'] or '?'}  {d['object']}  {d['reason']}: {d['message']}{count}")
    line()
    line(f"Endpoint: {view.endpoint}" + (f" (service/{view.name})" if view.service else ""))
    for cmd in st.port_forward_lines(view):
        line(f"  {cmd}")


# --------------------------------------------------------------------------------------------
# delete


def delete_command(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="The workspace to delete.")] = None,
    filename: OptionalFileOption = None,
    namespace: NamespaceOption = None,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    no_wait: NoWaitOption = False,
    timeout: TimeoutOption = "5m",
    ignore_not_found: Annotated[bool, typer.Option(
        "--ignore-not-found", help="A workspace that does not exist (e.g. already deleted) is not an error: exit 0, "
                                   "as kubectl delete --ignore-not-found.")] = False,
) -> None:
    """Delete exactly the objects kaitoctl created for a workspace (found by its labels).

    Give NAME, or -f FILE for every Workspace in it. --wait (or --wait=true) also waits
    until the workspace's pods are gone.
    """
    from kaitoctl.delete import delete_workspace

    name, wait = name_and_wait(ctx, name, no_wait, default=False)
    if (name is None) == (filename is None):
        raise UsageError("give a workspace NAME or -f FILE (not both)")
    timeout_s = parse_duration(timeout)
    kube = connect(kubeconfig, context, namespace)
    targets: list[tuple[str, str]] = []
    if filename is not None:
        from kaitoctl.apply import resolve_namespace
        from kaitoctl.validate import load_workspaces

        for ws in load_workspaces(filename):
            targets.append((ws.name, resolve_namespace(ws, namespace, kube.namespace)))
    else:
        targets.append((name or "", namespace or kube.namespace))
    ui = ConsoleUI()
    for ws_name, ns in targets:
        delete_workspace(kube, ws_name, ns, wait=wait, timeout_s=timeout_s, report=ui.result,
                         ignore_not_found=ignore_not_found)
        if wait:
            ui.step(f"the pods of {ns}/{ws_name} are gone")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("apply", context_settings=WAIT_CONTEXT)(apply_command)
    app.command("preflight")(preflight_command)
    app.command("status")(status_command)
    app.command("delete", context_settings=WAIT_CONTEXT)(delete_command)
