"""Apply a Workspace: read the cluster, preflight, render, dry-run everything, apply, watch, roll back.

The order is the safety argument:

1. read what is there (the workload, Services, nodes, pods, pull secrets);
2. preflight: fail before anything is written, and pick the rollout strategy;
3. render with that plan, stamp the revision and the pod-template hash;
4. server-side DRY RUN of every object; only when all pass
5. compare with the live objects: nothing would change → "unchanged", no new
   revision, no rollout; a pod-template change on a serving workspace that
   cannot surge → refuse unless ``--allow-downtime``;
6. record the new revision as ``applying`` in the history ConfigMap (under a
   resourceVersion check, so concurrent applies never lose entries);
7. the real server-side apply, in render order, all or nothing: a failure part
   way undoes what this apply changed and records the revision as failed;
8. watch the rollout (a pod-template change, or a new pod count); on failure
   roll back to the last good revision (unless ``--no-rollback``) and say so.
   A watch that ends early (an API error, Ctrl-C) records the revision as
   ``interrupted``: ``rollback`` never returns to failed or interrupted ones.

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
from kaitoctl.registry import PresetImage, preset_image
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
    companions: list[dict[str, Any]] = field(default_factory=list)  # the file's ConfigMaps/Secrets, applied too


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
    # Rendered objects not found by the label LISTs above, read by name: (kind, name) -> object or None.
    # Any kind the renderer adds (ConfigMaps, Secrets, ...) is looked up here, so an apply knows
    # what was there before it (for "created"/"configured" and to undo a failed apply).
    by_name: dict[tuple[str, str], Optional[dict[str, Any]]] = field(default_factory=dict)
    # ConfigMaps/Secrets of the file or named by the workspace: (kind, name) → live object (None: absent);
    # a pair missing from the dict could not be read (forbidden).
    companions: dict[tuple[str, str], Optional[dict[str, Any]]] = field(default_factory=dict)

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


def named_objects(ws: Workspace) -> list[tuple[str, str]]:
    """The (kind, name) of the model-access Secret and the inference-config ConfigMap ``ws`` names."""
    out = []
    if ws.model_access_secret:
        out.append(("Secret", ws.model_access_secret))
    if ws.inference_config:
        out.append(("ConfigMap", ws.inference_config))
    return out


def _file_objects(companions: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """The file's ConfigMaps/Secrets as apply sends them: their own namespace, else the workspace's."""
    from kaitoctl.companions import for_apply

    return [for_apply(o, (o.get("metadata") or {}).get("namespace") or namespace) for o in companions]


def _read_companions(kube: Any, ws: Workspace, namespace: str, file_objs: list[dict[str, Any]],
                     state: ClusterState, ui: ApplyUI) -> None:
    from kaitoctl.kube import is_forbidden

    wanted = named_objects(ws) + [(o["kind"], o["metadata"]["name"]) for o in file_objs]
    for kind, name in dict.fromkeys(wanted):
        try:
            state.companions[(kind, name)] = kube.get_or_none(kind, name, namespace)
        except ClusterError as err:
            if not is_forbidden(err):
                raise
            ui.warn(f"cannot read {kind} {name} in {namespace!r} (forbidden): not checked")


def _missing_references(ws: Workspace, file_objs: list[dict[str, Any]], state: ClusterState) -> list[str]:
    """Preflight problems: a Secret/ConfigMap the workspace names that is neither in the file nor in the cluster."""
    from kaitoctl.companions import HF_TOKEN_KEY, INFERENCE_CONFIG_KEY, keys

    in_file = {(o["kind"], o["metadata"]["name"]): o for o in file_objs}
    problems = []
    for kind, name in named_objects(ws):
        key = HF_TOKEN_KEY if kind == "Secret" else INFERENCE_CONFIG_KEY
        field_name = "presetOptions.modelAccessSecret" if kind == "Secret" else "inference.config"
        if (kind, name) in in_file or (kind, name) not in state.companions:
            continue
        live = state.companions[(kind, name)]
        if live is None:
            problems.append(f"{kind} {name} (named by {field_name}) is neither in the file nor in namespace "
                            f"{ws.metadata.namespace}: create it with the key {key}, or add it to the file")
        elif key not in keys(live):
            problems.append(f"{kind} {name} (named by {field_name}) in namespace {ws.metadata.namespace} has no key "
                            f"{key}")
    return problems


def _config_text(ws: Workspace, file_objs: list[dict[str, Any]], state: ClusterState) -> Optional[str]:
    """The inference config's content, from the file, else from the cluster (its hash goes into the pods)."""
    from kaitoctl.companions import INFERENCE_CONFIG_KEY, text_value

    if not ws.inference_config:
        return None
    for obj in file_objs:
        if (obj["kind"], obj["metadata"]["name"]) == ("ConfigMap", ws.inference_config):
            return text_value(obj, INFERENCE_CONFIG_KEY)
    live = state.companions.get(("ConfigMap", ws.inference_config))
    return text_value(live, INFERENCE_CONFIG_KEY) if live else None


def _byo_plan(ws: Workspace, state: ClusterState) -> Plan:
    """Your own nodes (empty instanceType): GPUs per pod from their GPU Feature Discovery labels."""
    from kaitoctl.plan import default_plan
    from kaitoctl.preflight import gfd_shape

    shape = gfd_shape(ws, state.nodes)
    if shape is None:
        return default_plan(ws)
    return default_plan(ws, node_gpus=shape.count, per_gpu_bytes=shape.per_gpu_bytes,
                        shape_name=f"{shape.product or 'GPU'} node ({shape.count} GPUs)")


def _printable(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Objects for the terminal: Secret values never printed."""
    from kaitoctl.companions import redacted

    return [redacted(o) if o.get("kind") == "Secret" else o for o in objs]


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
    image = preset_image(ws, opts.registry, live)
    file_objs = _file_objects(opts.companions, namespace)
    _read_companions(kube, ws, namespace, file_objs, state, ui)
    if ws.byo_nodes and state.nodes:
        first = render_workspace(ws, _byo_plan(ws, state), registry=opts.registry)

    report: Optional[PreflightReport] = None
    if opts.skip_preflight:
        plan = default_plan(ws)
        ui.warn(f"preflight skipped: {plan.strategy} from the catalog, not checked against the nodes")
        if image is not None and image.registry is None:
            raise PreflightFailed(f"cannot apply workspace {namespace}/{name}: nothing was applied",
                                  details=[image.problem()])
    else:
        report = _check(ws, first, state, namespace, image)
        report.problems.extend(_missing_references(ws, file_objs, state))
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
    config_text = _config_text(ws, file_objs, state)

    def render_objects(at_revision: int) -> list[dict[str, Any]]:
        """The file's ConfigMaps/Secrets first, then the workspace's objects stamped with the revision."""
        return file_objs + stamp(render_workspace(ws, plan, registry=image.registry if image else opts.registry,
                                                  config_data=config_text), at_revision)

    objs = render_objects(revision)
    result = ApplyResult(name=name, namespace=namespace, revision=revision, strategy=plan.strategy,
                         dry_run=opts.dry_run)
    _read_by_name(kube, objs, state, namespace)

    if opts.dry_run == "client":
        ui.objects(_printable(objs))
        for obj in objs:
            result.actions.append((_ref(obj), "configured" if _live_of(obj, state) else "created"))
            ui.result(f"{_ref(obj)} {result.actions[-1][1]} (dry run)")
        return result

    recorded = state.history or hist.History(name, namespace)
    # The history ConfigMap joins the dry run: a forbidden or refused history write stops the
    # apply before anything is written, not after the workload has changed.
    dry = _server_dry_run(kube, objs + ([] if same_workspace else [_history_probe(recorded, ws, revision)]),
                          opts.force_conflicts)[:len(objs)]
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
    live_replicas = ((live or {}).get("spec") or {}).get("replicas", 1)
    new_replicas = (workload_of(dry).get("spec") or {}).get("replicas", 1)
    scaled = live is not None and not template_changed and live_replicas != new_replicas
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
        ui.objects(_printable(dry))
        for ref, action in result.actions:
            ui.result(f"{ref} {action} (server dry run)")
        return result

    if template_changed and is_serving(live) and live is not None:
        _gate_downtime(ws, live, kind, plan, report, state, opts, ui)

    if not same_workspace:
        # Recorded as "applying" before anything changes, under a resourceVersion check: a
        # concurrent apply gets the next number, and a crash leaves a trace in `history`.
        try:
            revision = hist.reserve(kube, recorded, workspace=ws.canonical(), previous=previous,
                                    strategy=plan.strategy, change=opts.change, at_least=revision)
        except KaitoctlError as err:
            err.message = f"cannot record the revision: {err.message}; nothing was applied"
            raise
        objs = render_objects(revision)
        result.revision = revision

    def finish(outcome: str, seconds: Optional[float] = None, failure: Optional[str] = None) -> None:
        if not same_workspace:
            hist.finish(kube, recorded, revision, outcome=outcome, seconds=seconds, failure=failure)

    try:
        # When the workload changes kind (the downtime gate allowed it), the old one's pods stop first,
        # so the new pods find the GPUs free instead of being reported unschedulable next to them.
        from kaitoctl.delete import wait_pods_gone

        applied = apply_all(kube, [(obj, _live_of(obj, state)) for obj in objs], stale, opts.force_conflicts, ui,
                            stop_first=lambda: wait_pods_gone(kube, name, namespace, opts.timeout_s))
    except KaitoctlError as err:
        finish("failed", failure=f"apply failed: {err.message}")
        raise
    ui.objects(_printable(applied))
    for ref, action in result.actions:
        ui.result(f"{ref} {action}")

    if not opts.wait:
        ui.step(f"not waiting for the rollout: `kaitoctl status {name} -n {namespace} --watch` follows it")
        finish("applied")
        return result
    if not template_changed and not scaled and live is not None and _rolled_out(live):
        ui.step("the pod template and the pod count did not change: no rollout")
        finish("no rollout")
        return result
    if scaled:
        ui.step(f"scaling from {live_replicas} to {new_replicas} pod(s): waiting until every pod is Ready")
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
    except BaseException as err:
        # The watch ended before the outcome was known (an API error such as a 403 on the pod
        # watch, Ctrl-C): never "applied", so that `rollback` does not take it for a good revision.
        why = err.message if isinstance(err, KaitoctlError) else \
            "kaitoctl stopped watching (Ctrl-C)" if isinstance(err, KeyboardInterrupt) else repr(err)
        try:
            finish("interrupted", failure=f"the rollout watch ended early: {why}")
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        if isinstance(err, KaitoctlError) and not same_workspace:
            err.hint = (f"{err.hint + '; ' if err.hint else ''}revision {revision} is recorded as interrupted; "
                        f"`kaitoctl status {name} -n {namespace} --watch` follows the rollout")
        raise
    finish("succeeded", result.rollout_seconds)
    return result


def _history_probe(history: hist.History, ws: Workspace, revision: int) -> dict[str, Any]:
    """The history ConfigMap as the apply will write it (for the server-side dry run)."""
    probe = hist.History(history.name, history.namespace, revisions=list(history.revisions))
    probe.revisions.append(hist.Revision(revision=revision, time="", workspace=ws.canonical()))
    return hist.to_configmap(probe)


# --------------------------------------------------------------------------------------------
# All or nothing


_RESTORED_META = ("name", "namespace", "labels", "annotations", "ownerReferences")


def restorable(live: dict[str, Any]) -> dict[str, Any]:
    """A live object as an apply configuration that puts it back (server bookkeeping and status dropped)."""
    meta = live.get("metadata") or {}
    out = {k: copy.deepcopy(v) for k, v in live.items() if k not in ("status", "metadata")}
    out["metadata"] = {k: copy.deepcopy(meta[k]) for k in _RESTORED_META if k in meta}
    return out


def _retrying(call: Any, attempts: int = 3) -> Any:
    """``call()``, again after a short pause when the API server was busy or failing (5xx, 429, no answer)."""
    import time

    from kaitoctl.kube import is_transient, retry_after

    for attempt in range(1, attempts + 1):
        try:
            return call()
        except ClusterError as err:
            if attempt == attempts or not is_transient(err):
                raise
            time.sleep(min(retry_after(err) or 0.3 * attempt, 5.0))
    return None  # pragma: no cover


def apply_all(kube: Any, objs: list[tuple[dict[str, Any], Optional[dict[str, Any]]]], stale: list[dict[str, Any]],
              force: bool, ui: ApplyUI, stop_first: Any = None) -> list[dict[str, Any]]:
    """Apply every ``(object, live before)`` in order, then delete ``stale``; all or nothing.

    With ``stop_first``, stale workloads are deleted before anything is applied and
    ``stop_first()`` waits for their pods to go.

    Any number of objects of any kind (workload, Services, ConfigMaps, Secrets) can join the
    list. A transient API error is retried; any other failure undoes the steps already done,
    newest first (a created object is deleted, a changed or deleted one is put back as it was)
    and raises the error, saying what was restored.
    """
    done: list[tuple[str, dict[str, Any], Optional[dict[str, Any]]]] = []   # (step, object, live before)
    applied: list[dict[str, Any]] = []
    first = [o for o in stale if o.get("kind") in ("Deployment", "StatefulSet")] if stop_first else []

    def delete(obj: dict[str, Any]) -> None:
        _retrying(lambda: kube.delete(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")))
        done.append(("delete", obj, obj))

    try:
        for obj in first:
            ui.step(f"stopping {_ref(obj)} before its replacement starts")
            delete(obj)
        if first:
            stop_first()
        for obj, before in objs:
            applied.append(_retrying(lambda: kube.apply(obj, force=force)))
            done.append(("apply", obj, before))
        for obj in stale:
            if obj not in first:
                delete(obj)
    except (ClusterError, RolloutTimeout) as err:
        undone, failed = _undo(kube, done)
        what = ", ".join(undone) or "nothing had been written yet"
        err.message = f"{err.message}; the apply stopped there and was undone ({what})"
        if failed:
            err.details = list(err.details) + [f"could not undo {line}" for line in failed]
            err.hint = "some objects could not be put back: `kaitoctl status NAME` shows what is there now"
        raise
    return applied


def _undo(kube: Any, done: list[tuple[str, dict[str, Any], Optional[dict[str, Any]]]]) -> tuple[list[str], list[str]]:
    """Undo applied/deleted steps, newest first: what was undone, and what could not be."""
    undone: list[str] = []
    failed: list[str] = []
    for step, obj, before in reversed(done):
        ref = _ref(obj)
        try:
            if before is None:
                _retrying(lambda: kube.delete(obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")))
                undone.append(f"{ref} removed")
            else:
                back = restorable(before)
                if step == "delete":
                    for key in ("clusterIP", "clusterIPs"):
                        (back.get("spec") or {}).pop(key, None)
                _retrying(lambda: kube.apply(back, force=True))
                undone.append(f"{ref} restored")
        except ClusterError as err:
            failed.append(f"{ref}: {err.message}")
    return undone, failed


def _check(ws: Workspace, first: list[dict[str, Any]], state: ClusterState, namespace: str,
           image: Optional[PresetImage]) -> PreflightReport:
    from kaitoctl import preflight as pf

    workload = workload_of(first)
    report = pf.check(ws, workload["spec"]["template"]["spec"], state.nodes, state.pods, namespace=namespace,
                      distributed=workload["kind"] == "StatefulSet", secrets=state.secrets,
                      pods_complete=state.pods_complete)
    if image is not None:  # where the pods pull the preset image from, or why they could not
        if image.registry is None:
            report.problems.append(image.problem())
        else:
            report.image = image.describe()
    return report


def preflight_report(kube: Any, ws: Workspace, namespace_flag: Optional[str], ui: ApplyUI,
                     registry: Optional[str] = None,
                     companions: list[dict[str, Any]] = ()) -> PreflightReport:  # type: ignore[assignment]
    """The preflight alone (``kaitoctl preflight``): reads the cluster, writes nothing.

    ``companions``: the file's ConfigMaps/Secrets (a Secret the workspace names may be there
    instead of in the cluster)."""
    from kaitoctl.plan import default_plan
    from kaitoctl.render import render_workspace

    namespace = resolve_namespace(ws, namespace_flag, kube.namespace)
    ws = with_namespace(ws, namespace)
    first = render_workspace(ws, default_plan(ws))
    state = read_cluster(kube, ws, namespace, preflight=True, ui=ui)
    if ws.byo_nodes:
        first = render_workspace(ws, _byo_plan(ws, state))
    file_objs = _file_objects(companions, namespace)
    _read_companions(kube, ws, namespace, file_objs, state, ui)
    report = _check(ws, first, state, namespace, preset_image(ws, registry, state.workload))
    report.problems.extend(_missing_references(ws, file_objs, state))
    return report


def rollback_target(history: hist.History, failed: int, previous: dict[str, Any],
                    previous_revision: int) -> tuple[dict[str, Any], int]:
    """What a failed update returns to: the latest earlier revision that did not fail and differs from it.

    Usually the revision that ran before; but when that one had failed too (left with
    --no-rollback), going back to it would not restore service.
    """
    failed_entry = history.get(failed)
    for rev in history.good(below=failed):
        if failed_entry is not None and rev.workspace == failed_entry.workspace:
            continue
        return rev.workspace, rev.revision
    return previous, previous_revision


def _ref(obj: dict[str, Any]) -> str:
    from kaitoctl.kube import object_ref

    return object_ref(obj)


def _listed(obj: dict[str, Any], state: ClusterState) -> Optional[dict[str, Any]]:
    name = obj["metadata"]["name"]
    if obj.get("kind") in ("ConfigMap", "Secret") and (obj["kind"], name) in state.companions:
        return state.companions[(obj["kind"], name)]
    pool = state.workloads if obj.get("kind") in WORKLOAD_KINDS else \
        state.services if obj.get("kind") == "Service" else []
    for live in pool:
        if live.get("kind", obj.get("kind")) == obj.get("kind") and live["metadata"]["name"] == name:
            return live
    return None


def _read_by_name(kube: Any, objs: list[dict[str, Any]], state: ClusterState, namespace: str) -> None:
    """GET the rendered objects the label LISTs did not return (new ones, other kinds, unlabelled ones)."""
    from kaitoctl.kube import is_forbidden

    for obj in objs:
        key = (obj["kind"], obj["metadata"]["name"])
        if _listed(obj, state) is not None or key in state.by_name:
            continue
        try:
            state.by_name[key] = kube.get_or_none(obj["kind"], key[1], namespace)
        except ClusterError as err:
            if not is_forbidden(err):
                raise
            state.by_name[key] = None


def _live_of(obj: dict[str, Any], state: ClusterState) -> Optional[dict[str, Any]]:
    return _listed(obj, state) or state.by_name.get((obj["kind"], obj["metadata"]["name"]))


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
    missing = next((err for _, err in errors if getattr(err, "missing_namespace", None)), None)
    if missing is not None:
        missing.message = f"{missing.message}; nothing was applied"
        raise missing
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
