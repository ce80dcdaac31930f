"""Apply a Workspace: read the cluster, preflight, render, dry-run everything, apply, watch, roll back.

The order is the safety argument:

1. read what is there (the workload, Services, nodes, pods, pull secrets);
2. preflight: fail before anything is written, and pick the rollout strategy;
3. render with that plan, stamp the revision and the pod-template hash;
4. server-side DRY RUN of every object; only when all pass
5. compare with the live objects: nothing would change → "unchanged", no new
   revision, no rollout; a pod-template change on a serving workspace that
   cannot surge → refuse unless ``--allow-downtime``;
6. the real server-side apply, in render order; record the revision;
7. watch the rollout; on failure roll back to the previous revision (unless
   ``--no-rollback``) and say so.

Printing goes through an :class:`ApplyUI` so that the core can run silently in
tests and benchmarks.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from kaitoctl import history as hist
from kaitoctl.errors import ClusterError, KaitoctlError, PreflightFailed, RolloutFailed, RolloutTimeout, UsageError
from kaitoctl.history import (ANNOTATION_REVISION, LABEL_TEMPLATE_HASH, MANAGED_BY, MANAGED_BY_LABEL,
                              WORKSPACE_LABEL, canonical_json)
from kaitoctl.plan import Plan
from kaitoctl.preflight import PreflightReport
from kaitoctl.rollout import RolloutStatus
from kaitoctl.workspace import Workspace

WORKLOAD_KINDS = ("Deployment", "StatefulSet")
DRY_RUN_MODES = ("none", "client", "server")
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"


class ApplyUI(Protocol):
    """Where apply reports what it does (stderr progress, stdout results)."""

    def step(self, text: str) -> None: ...
    def warn(self, text: str) -> None: ...
    def preflight(self, report: PreflightReport) -> None: ...
    def result(self, text: str) -> None: ...
    def objects(self, objs: list[dict[str, Any]]) -> None: ...
    def progress(self, status: RolloutStatus, elapsed: float) -> None: ...


@dataclass
class ApplyOptions:
    """The flags of ``kaitoctl apply`` (and of the commands that re-apply: adapters update, rollback)."""

    dry_run: str = "none"
    force_conflicts: bool = False
    skip_preflight: bool = False
    wait: bool = True
    timeout_s: float = 900.0
    allow_downtime: bool = False
    rollback: bool = True
    registry: Optional[str] = None
    namespace: Optional[str] = None       # -n; the file's namespace wins when they agree
    change: str = "apply"                 # how the history describes this revision's origin


@dataclass
class ClusterState:
    """What apply read before deciding anything."""

    workloads: list[dict[str, Any]]               # kaitoctl's Deployment/StatefulSet of this workspace
    services: list[dict[str, Any]]
    nodes: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    pods_complete: bool = True
    secrets: Optional[dict[str, bool]] = None
    history: Optional[hist.History] = None

    @property
    def workload(self) -> Optional[dict[str, Any]]:
        return self.workloads[0] if self.workloads else None


@dataclass
class ApplyResult:
    """What happened, for the command to print and for callers that chain applies (rollback)."""

    name: str
    namespace: str
    revision: int
    unchanged: bool = False
    actions: list[tuple[str, str]] = field(default_factory=list)   # (object ref, created|configured|...)
    strategy: Optional[str] = None
    rollout_seconds: Optional[float] = None
    dry_run: str = "none"


# --------------------------------------------------------------------------------------------
# Pure helpers


def resolve_namespace(ws: Workspace, flag: Optional[str], default: str) -> str:
    """kubectl's rule: the file's namespace, unless ``-n`` names another (an error), else ``-n``, else default."""
    file_ns = ws.metadata.namespace
    if file_ns and flag and file_ns != flag:
        raise UsageError(
            f"the namespace from the provided object {file_ns!r} does not match the namespace {flag!r}",
            hint=f"pass --namespace={file_ns}, or remove metadata.namespace from the file",
        )
    return file_ns or flag or default


def with_namespace(ws: Workspace, namespace: str) -> Workspace:
    """A copy of ``ws`` placed in ``namespace`` (rendered objects and the record carry it)."""
    out = ws.model_copy(deep=True)
    out.metadata.namespace = namespace
    return out


def template_hash(template: dict[str, Any]) -> str:
    """A short hash of a rendered pod template (without the hash label itself)."""
    tmpl = copy.deepcopy(template)
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    labels.pop(LABEL_TEMPLATE_HASH, None)
    return hashlib.sha256(canonical_json(tmpl).encode()).hexdigest()[:12]


def stamp(objs: list[dict[str, Any]], revision: int) -> list[dict[str, Any]]:
    """Copies of the rendered objects with the revision annotation and pod-template hash label set."""
    out = copy.deepcopy(objs)
    for obj in out:
        if obj.get("kind") in WORKLOAD_KINDS:
            obj["metadata"].setdefault("annotations", {})[ANNOTATION_REVISION] = str(revision)
            tmpl = obj["spec"]["template"]
            tmpl.setdefault("metadata", {}).setdefault("labels", {})[LABEL_TEMPLATE_HASH] = template_hash(tmpl)
    return out


def workload_of(objs: list[dict[str, Any]]) -> dict[str, Any]:
    for obj in objs:
        if obj.get("kind") in WORKLOAD_KINDS:
            return obj
    raise ValueError("rendered objects hold no workload")


_VOLATILE_META = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink")


def comparable(obj: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The parts of an object an apply can change, without server bookkeeping or our revision counter."""
    if obj is None:
        return None
    out = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE_META}
    annotations = dict(meta.get("annotations") or {})
    annotations.pop(ANNOTATION_REVISION, None)
    meta["annotations"] = annotations
    out["metadata"] = meta
    return out


def _template(obj: Optional[dict[str, Any]]) -> Any:
    return ((obj or {}).get("spec") or {}).get("template")


def is_serving(workload: Optional[dict[str, Any]]) -> bool:
    """Whether a workload has at least one ready pod (an update could interrupt someone)."""
    status = (workload or {}).get("status") or {}
    return bool(status.get("readyReplicas") or status.get("availableReplicas"))


def progress_deadline_s(ws: Workspace) -> Optional[float]:
    """kaitoctl's no-progress deadline for StatefulSets: what the renderer gives a Deployment of the preset."""
    from kaitoctl.catalog import get_preset
    from kaitoctl.render import PULL_ALLOWANCE_SECONDS

    preset = get_preset(ws.preset_name or "") if ws.preset_name else None
    return float(preset.readiness_timeout_seconds + PULL_ALLOWANCE_SECONDS) if preset else None


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    return f"{minutes}m{sec:02d}s" if sec else f"{minutes}m"


# --------------------------------------------------------------------------------------------
# Reading the cluster


def needed_secrets(ws: Workspace) -> list[str]:
    """Pull secrets the workspace names (model image and adapters)."""
    names: set[str] = set()
    preset = ws.inference.preset if ws.inference else None
    if preset and preset.presetOptions:
        names.update(preset.presetOptions.imagePullSecrets or [])
    for adapter in ws.adapters:
        if adapter.source is not None:
            names.update(adapter.source.imagePullSecrets or [])
    return sorted(names)


def read_cluster(kube: Any, ws: Workspace, namespace: str, *, preflight: bool, ui: ApplyUI) -> ClusterState:
    """Everything apply decides from; a handful of requests, none of them per node."""
    from kaitoctl.kube import is_forbidden

    selector = f"{WORKSPACE_LABEL}={ws.name}"
    workloads: list[dict[str, Any]] = []
    for kind in WORKLOAD_KINDS:
        items, _ = kube.list(kind, namespace, label_selector=selector)
        workloads.extend(i for i in items if (i.get("metadata") or {}).get("name") == ws.name)
    services, _ = kube.list("Service", namespace, label_selector=selector)
    state = ClusterState(workloads=workloads, services=services)
    state.history = hist.read(kube, ws.name, namespace)
    if not preflight:
        return state
    state.nodes, _ = kube.list("Node")
    try:
        state.pods, _ = kube.list("Pod", all_namespaces=True, field_selector=ACTIVE_PODS)
    except ClusterError as err:
        if not is_forbidden(err):
            raise
        state.pods, _ = kube.list("Pod", namespace, field_selector=ACTIVE_PODS)
        state.pods_complete = False
    names = needed_secrets(ws)
    if names:
        secrets: dict[str, bool] = {}
        try:
            for name in names:
                secrets[name] = kube.get_or_none("Secret", name, namespace) is not None
            state.secrets = secrets
        except ClusterError as err:
            if not is_forbidden(err):
                raise
            ui.warn(f"cannot read Secrets in {namespace!r} (forbidden): pull secrets "
                    f"{', '.join(names)} were not checked")
    return state


# --------------------------------------------------------------------------------------------
# Apply


def apply_workspace(kube: Any, ws: Workspace, opts: ApplyOptions, ui: ApplyUI) -> ApplyResult:
    """Apply one Workspace as described in the module docstring; raise kaitoctl errors on failure."""
    from kaitoctl.plan import default_plan
    from kaitoctl.render import render_workspace

    if opts.dry_run not in DRY_RUN_MODES:
        raise UsageError(f"--dry-run must be one of {', '.join(DRY_RUN_MODES)}, not {opts.dry_run!r}")
    namespace = resolve_namespace(ws, opts.namespace, kube.namespace)
    ws = with_namespace(ws, namespace)
    name = ws.name

    first = render_workspace(ws, default_plan(ws), registry=opts.registry)
    kind = workload_of(first)["kind"]
    state = read_cluster(kube, ws, namespace, preflight=not opts.skip_preflight, ui=ui)
    live = state.workload

    report: Optional[PreflightReport] = None
    if opts.skip_preflight:
        plan = default_plan(ws)
        ui.warn(f"preflight skipped: {plan.strategy} from the catalog, not checked against the nodes")
    else:
        report = _check(ws, first, state, namespace)
        ui.preflight(report)
        if not report.ok:
            raise PreflightFailed(
                f"preflight failed for workspace {namespace}/{name}: nothing was applied",
                details=report.problems,
                hint="fix the cluster or the workspace; `kaitoctl preflight -f FILE` shows the node table "
                     "(--skip-preflight if you know better)",
            )
        plan = report.plan

    previous = hist.recorded_workspace(live)
    same_workspace = previous == ws.canonical()
    # A new revision only for a new Workspace: re-rendering the same one (a strategy that follows
    # the cluster's free GPUs, a newer kaitoctl) updates objects under the same revision.
    revision = hist.revision_of(live) if same_workspace else \
        max(hist.revision_of(live), state.history.latest if state.history else 0) + 1
    objs = stamp(render_workspace(ws, plan, registry=opts.registry), revision)
    result = ApplyResult(name=name, namespace=namespace, revision=revision, strategy=plan.strategy,
                         dry_run=opts.dry_run)

    if opts.dry_run == "client":
        ui.objects(objs)
        for obj in objs:
            result.actions.append((_ref(obj), "configured" if _live_of(obj, state) else "created"))
            ui.result(f"{_ref(obj)} {result.actions[-1][1]} (dry run)")
        return result

    dry = _server_dry_run(kube, objs, opts.force_conflicts)
    actions = [(obj, _action(_live_of(obj, state), out)) for obj, out in zip(objs, dry)]
    rendered = {(o["kind"], o["metadata"]["name"]) for o in objs}
    # kaitoctl's own objects of this workspace that the new rendering no longer has (the workload
    # of the other kind, the headless Service of a distributed preset): removed after the apply.
    stale = [o for o in state.workloads + state.services
             if (o.get("kind"), o["metadata"]["name"]) not in rendered
             and ((o["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY)]
    template_changed = live is not None and (
        live.get("kind") != kind or comparable({"t": _template(live)}) != comparable({"t": _template(workload_of(dry))})
    )
    result.actions = [(_ref(o), a) for o, a in actions] + [(_ref(w), "deleted") for w in stale]
    if all(a == "unchanged" for _, a in actions) and not stale:
        result.unchanged = True
        result.revision = hist.revision_of(live)
        for ref, action in result.actions:
            ui.result(f"{ref} {action}")
        if opts.dry_run == "none" and opts.wait and live is not None and not _rolled_out(live):
            ui.step("nothing changed; the last rollout has not finished yet: waiting for it")
            result.rollout_seconds = _watch(kube, ws, live["kind"], namespace, opts, ui)
        return result

    if opts.dry_run == "server":
        ui.objects(dry)
        for ref, action in result.actions:
            ui.result(f"{ref} {action} (server dry run)")
        return result

    if template_changed and is_serving(live) and live is not None:
        _gate_downtime(ws, live, kind, plan, report, state, opts, ui)

    old_workloads = [o for o in stale if o.get("kind") in ("Deployment", "StatefulSet")]
    if old_workloads:
        # The workload changes kind (the downtime gate allowed it): its pods stop first, so the new
        # pods find the GPUs free instead of being reported unschedulable next to them.
        from kaitoctl.delete import wait_pods_gone

        for obj in old_workloads:
            ui.step(f"stopping {_ref(obj)} before its replacement starts")
            kube.delete(obj["kind"], obj["metadata"]["name"], namespace)
        wait_pods_gone(kube, name, namespace, opts.timeout_s)
    applied = [kube.apply(obj, force=opts.force_conflicts) for obj, _ in actions]
    ui.objects(applied)
    for obj in stale:
        if obj not in old_workloads:
            kube.delete(obj["kind"], obj["metadata"]["name"], namespace)
    for ref, action in result.actions:
        ui.result(f"{ref} {action}")
    recorded = state.history or hist.History(name, namespace)
    if not same_workspace:
        hist.record(kube, recorded, revision=revision, workspace=ws.canonical(), previous=previous,
                    strategy=plan.strategy, change=opts.change)

    def finish(outcome: str, seconds: Optional[float] = None, failure: Optional[str] = None) -> None:
        if not same_workspace:
            hist.finish(kube, recorded, revision, outcome=outcome, seconds=seconds, failure=failure)

    if not opts.wait:
        ui.step(f"not waiting for the rollout: `kaitoctl status {name} -n {namespace} --watch` follows it")
        return result
    if not template_changed and live is not None and _rolled_out(live):
        ui.step("the pod template did not change: no rollout")
        finish("no rollout")
        return result
    try:
        result.rollout_seconds = _watch(kube, ws, kind, namespace, opts, ui)
    except (RolloutFailed, RolloutTimeout) as err:
        finish("failed", failure=err.message)
        if previous is not None and not same_workspace:
            target, target_revision = rollback_target(recorded, revision, previous, hist.revision_of(live))
            if opts.rollback:
                raise _roll_back(kube, err, target, target_revision, namespace, opts, ui) from err
            err.hint = (f"--no-rollback: revision {revision} is left in place for inspection; "
                        f"`kaitoctl rollback {name} -n {namespace}` restores revision {target_revision}")
        elif live is None:
            err.hint = (f"{err.hint + '; ' if err.hint else ''}nothing to roll back to (first revision): "
                        f"`kaitoctl delete {name} -n {namespace}` removes it")
        raise
    finish("succeeded", result.rollout_seconds)
    return result


def _check(ws: Workspace, first: list[dict[str, Any]], state: ClusterState, namespace: str) -> PreflightReport:
    from kaitoctl import preflight as pf

    workload = workload_of(first)
    return pf.check(ws, workload["spec"]["template"]["spec"], state.nodes, state.pods, namespace=namespace,
                    distributed=workload["kind"] == "StatefulSet", secrets=state.secrets,
                    pods_complete=state.pods_complete)


def preflight_report(kube: Any, ws: Workspace, namespace_flag: Optional[str], ui: ApplyUI) -> PreflightReport:
    """The preflight alone (``kaitoctl preflight``): reads the cluster, writes nothing."""
    from kaitoctl.plan import default_plan
    from kaitoctl.render import render_workspace

    namespace = resolve_namespace(ws, namespace_flag, kube.namespace)
    ws = with_namespace(ws, namespace)
    first = render_workspace(ws, default_plan(ws))
    state = read_cluster(kube, ws, namespace, preflight=True, ui=ui)
    return _check(ws, first, state, namespace)


def rollback_target(history: hist.History, failed: int, previous: dict[str, Any],
                    previous_revision: int) -> tuple[dict[str, Any], int]:
    """What a failed update returns to: the latest earlier revision that did not fail and differs from it.

    Usually the revision that ran before; but when that one had failed too (left with
    --no-rollback), going back to it would not restore service.
    """
    failed_entry = history.get(failed)
    for rev in reversed(history.revisions):
        if rev.revision >= failed or rev.outcome == "failed":
            continue
        if failed_entry is not None and rev.workspace == failed_entry.workspace:
            continue
        return rev.workspace, rev.revision
    return previous, previous_revision


def _ref(obj: dict[str, Any]) -> str:
    from kaitoctl.kube import object_ref

    return object_ref(obj)


def _live_of(obj: dict[str, Any], state: ClusterState) -> Optional[dict[str, Any]]:
    name = obj["metadata"]["name"]
    pool = state.workloads if obj.get("kind") in WORKLOAD_KINDS else state.services
    for live in pool:
        if live.get("kind", obj.get("kind")) == obj.get("kind") and live["metadata"]["name"] == name:
            return live
    return None


def _action(live: Optional[dict[str, Any]], dry: dict[str, Any]) -> str:
    if live is None:
        return "created"
    return "unchanged" if comparable(live) == comparable(dry) else "configured"


def _rolled_out(workload: dict[str, Any]) -> bool:
    from kaitoctl.rollout import workload_status

    _, done, failure = workload_status(workload)
    return done and failure is None


def _server_dry_run(kube: Any, objs: list[dict[str, Any]], force: bool) -> list[dict[str, Any]]:
    """Dry-run every object; raise one error listing every rejection (nothing has been written)."""
    results: list[dict[str, Any]] = []
    errors: list[tuple[dict[str, Any], KaitoctlError]] = []
    for obj in objs:
        try:
            results.append(kube.apply(obj, dry_run=True, force=force))
        except ClusterError as err:
            errors.append((obj, err))
    if not errors:
        return results
    if len(errors) == 1:
        err = errors[0][1]
        err.message = f"server-side dry run: {err.message}; nothing was applied"
        raise err
    first = errors[0][1]
    details = []
    for obj, err in errors:
        details.append(f"{_ref(obj)}: {err.message}")
        details.extend(f"  {line}" for line in err.details)
    raise type(first)(f"server-side dry run rejected {len(errors)} of {len(objs)} objects; nothing was applied",
                      details=details, hint=first.hint)


def _gate_downtime(ws: Workspace, live: dict[str, Any], kind: str, plan: Plan, report: Optional[PreflightReport],
                   state: ClusterState, opts: ApplyOptions, ui: ApplyUI) -> None:
    """Refuse a pod-template change that would stop a serving workspace, unless --allow-downtime."""
    surge = plan.strategy == "RollingUpdate" and kind == "Deployment" and live.get("kind") == kind
    if surge:
        ui.step("safe rollout: the new pod must be Ready before the old one stops serving (maxSurge 1, "
                "maxUnavailable 0)")
        return
    last = state.history.last_rollout_seconds() if state.history else None
    outage = (f"expected outage: about {_duration(last)} (the last rollout took that long)" if last is not None
              else "expected outage: unknown (no earlier rollout recorded): the image pull plus model load")
    if kind == "StatefulSet" or live.get("kind") != kind:
        headline = ("its pods are replaced in place (a distributed preset runs one torchrun job), so the update "
                    "stops the serving pods first")
        why = [plan.reason]
        hint = "accept the outage with --allow-downtime"
    else:
        headline = ("a second pod cannot run next to the serving one, so the update would have to stop the old "
                    "pod first")
        why = (["--skip-preflight: kaitoctl cannot show that a second pod fits"] if report is None
               else report.surge_summary())
        hint = ("free GPUs on a matching node (or add one) so that the update can surge, or accept the outage "
                "with --allow-downtime")
    if opts.allow_downtime:
        how = "with Recreate" if kind == "Deployment" else "in place"
        ui.warn(f"--allow-downtime: {kind} {ws.name} is replaced {how}; {outage}")
        return
    raise PreflightFailed(
        f"updating {ws.metadata.namespace}/{ws.name} would stop it serving: {headline}; nothing was applied",
        details=why + [outage], hint=hint,
    )


def _watch(kube: Any, ws: Workspace, kind: str, namespace: str, opts: ApplyOptions, ui: ApplyUI) -> float:
    from kaitoctl import rollout

    ui.step(f"waiting for {kind.lower()} {namespace}/{ws.name} to roll out (timeout {_duration(opts.timeout_s)}; "
            f"Ctrl-C stops waiting and leaves it applied)")
    result = rollout.watch(kube, kind, ws.name, namespace, timeout_s=opts.timeout_s, on_progress=ui.progress,
                           progress_deadline_s=progress_deadline_s(ws))
    ui.step(f"{result.status.message} after {_duration(result.seconds)}")
    return result.seconds


def _roll_back(kube: Any, err: KaitoctlError, previous: dict[str, Any], previous_revision: int, namespace: str,
               opts: ApplyOptions, ui: ApplyUI) -> KaitoctlError:
    """Re-apply the previous Workspace after a failed update; the error to raise, saying what happened."""
    ws = Workspace.model_validate(previous)
    ui.warn(f"rollout failed: {err.message}")
    ui.step(f"rolling back to revision {previous_revision} (--no-rollback would leave the failed revision)")
    back = ApplyOptions(dry_run="none", force_conflicts=opts.force_conflicts, skip_preflight=opts.skip_preflight,
                        wait=True, timeout_s=opts.timeout_s, allow_downtime=True, rollback=False,
                        registry=opts.registry, namespace=namespace,
                        change=f"automatic rollback to revision {previous_revision}")
    adapters = ", ".join(f"{a['name']}={a['strength']}" for a in hist.adapters_of(previous)) or "none"
    try:
        apply_workspace(kube, ws, back, ui)
    except KaitoctlError as again:
        return type(err)(
            f"{err.message}; the automatic rollback to revision {previous_revision} failed too: {again.message}",
            details=err.details + again.details,
            hint=f"`kaitoctl status {ws.name} -n {namespace}` shows the state; `kaitoctl history {ws.name}` "
                 "lists revisions to roll back to",
        )
    return type(err)(
        f"{err.message}; rolled back to revision {previous_revision}, which is serving again (adapters: {adapters})",
        details=err.details,
        hint=f"fix the workspace and apply again; `kaitoctl history {ws.name} -n {namespace}` lists revisions",
    )
