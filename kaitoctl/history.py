"""What was applied: the Workspace recorded with the workload, and its revision history.

The cluster is the only source of truth (DESIGN.md). Apply records, on the
Deployment/StatefulSet, the canonical JSON of the Workspace it applied
(annotation ``kaitoctl.io/workspace``, set by the renderer) and the revision
number (``kaitoctl.io/revision``). Every revision is also kept, bounded, in a
ConfigMap ``<ws>-kaitoctl-history`` so that ``history`` and ``rollback`` can
re-apply a whole earlier Workspace (adapters, strengths, Service and all), which
``kubectl rollout undo`` cannot (it restores the pod template only).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

ANNOTATION_WORKSPACE = "kaitoctl.io/workspace"
ANNOTATION_REVISION = "kaitoctl.io/revision"
# Pod-template label apply adds: a hash of the rendered template, so that the
# rollout watch can tell the pods of the current template from older ones for
# Deployments and StatefulSets alike (and it changes only when the template does).
LABEL_TEMPLATE_HASH = "kaitoctl.io/pod-template-hash"
WORKSPACE_LABEL = "kaito.sh/workspace"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kaitoctl"
HISTORY_SUFFIX = "-kaitoctl-history"
HISTORY_KEY = "revisions.json"
HISTORY_LIMIT = 10
# Outcomes of revisions that never served: `rollback` and the automatic rollback skip them.
NOT_ROLLBACK_TARGETS = ("failed", "interrupted", "applying")
# Writing the history ConfigMap: attempts when another writer got there first (409) or the server failed.
WRITE_ATTEMPTS = 5


def canonical_json(data: Any) -> str:
    """The one JSON spelling of ``data`` used for recording and comparing."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def recorded_workspace(workload: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The canonical Workspace recorded on a workload, or None (not created by kaitoctl, or unreadable)."""
    if not workload:
        return None
    text = ((workload.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_WORKSPACE)
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def revision_of(workload: Optional[dict[str, Any]]) -> int:
    """The kaitoctl revision recorded on a workload (0 when none)."""
    text = (((workload or {}).get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_REVISION, "0")
    try:
        return int(text)
    except ValueError:
        return 0


def adapters_of(workspace: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """The adapters of a canonical Workspace dict, as plain dicts (name, image, strength, pullSecrets)."""
    out = []
    for entry in ((workspace or {}).get("inference") or {}).get("adapters") or []:
        source = entry.get("source") or {}
        out.append({
            "name": source.get("name") or "",
            "image": source.get("image") or "",
            "strength": str(entry.get("strength", "1.0")),
            "imagePullSecrets": list(source.get("imagePullSecrets") or []),
        })
    return out


# --------------------------------------------------------------------------------------------
# Change summaries


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else canonical_json(value)
    return text if len(text) <= 60 else text[:57] + "..."


def summarize_changes(old: Optional[dict[str, Any]], new: dict[str, Any]) -> list[str]:
    """What changed between two canonical Workspaces, adapters first, one phrase per change."""
    if old is None:
        adapters = adapters_of(new)
        listed = ", ".join(f"{a['name']}={a['strength']}" for a in adapters)
        return ["created" + (f" with adapters {listed}" if adapters else "")]
    changes: list[str] = []
    before = {a["name"]: a for a in adapters_of(old)}
    after = {a["name"]: a for a in adapters_of(new)}
    for name, adapter in after.items():
        prior = before.get(name)
        if prior is None:
            changes.append(f"adapter {name} added ({adapter['image']}, strength {adapter['strength']})")
            continue
        if prior["image"] != adapter["image"]:
            changes.append(f"adapter {name} image {prior['image']} → {adapter['image']}")
        if prior["strength"] != adapter["strength"]:
            changes.append(f"adapter {name} strength {prior['strength']} → {adapter['strength']}")
        if prior["imagePullSecrets"] != adapter["imagePullSecrets"]:
            changes.append(f"adapter {name} pull secrets {prior['imagePullSecrets'] or 'none'} → "
                           f"{adapter['imagePullSecrets'] or 'none'}")
    for name in before:
        if name not in after:
            changes.append(f"adapter {name} removed")
    if not changes and [a["name"] for a in adapters_of(old)] != [a["name"] for a in adapters_of(new)]:
        changes.append("adapters reordered")

    def rest(ws: dict[str, Any]) -> dict[str, Any]:
        data = json.loads(canonical_json(ws))
        (data.get("inference") or {}).pop("adapters", None)
        return _flatten(data)

    flat_old, flat_new = rest(old), rest(new)
    for path in sorted(set(flat_old) | set(flat_new)):
        if flat_old.get(path) != flat_new.get(path):
            if path not in flat_old:
                changes.append(f"{path} set to {_short(flat_new[path])}")
            elif path not in flat_new:
                changes.append(f"{path} removed")
            else:
                changes.append(f"{path}: {_short(flat_old[path])} → {_short(flat_new[path])}")
    return changes or ["no change to the Workspace"]


# --------------------------------------------------------------------------------------------
# The history ConfigMap


@dataclass
class Revision:
    """One applied Workspace."""

    revision: int
    time: str                                   # RFC 3339, UTC
    workspace: dict[str, Any]                   # canonical Workspace
    changes: list[str] = field(default_factory=list)
    change: str = "apply"                       # what made it: apply, adapters update, rollback to N, ...
    strategy: Optional[str] = None
    # applying (being written), applied (not watched), succeeded, failed, interrupted (the watch ended
    # before the outcome was known: Ctrl-C, an API error), no rollout
    outcome: str = "applied"
    rollout_seconds: Optional[float] = None
    failure: Optional[str] = None               # why it failed, when it did

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "time": self.time,
            "change": self.change,
            "changes": list(self.changes),
            "strategy": self.strategy,
            "outcome": self.outcome,
            "rolloutSeconds": self.rollout_seconds,
            "failure": self.failure,
            "workspace": self.workspace,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Revision":
        return cls(revision=int(data["revision"]), time=str(data.get("time", "")), workspace=data["workspace"],
                   changes=list(data.get("changes") or []), change=str(data.get("change", "apply")),
                   strategy=data.get("strategy"), outcome=str(data.get("outcome", "applied")),
                   rollout_seconds=data.get("rolloutSeconds"), failure=data.get("failure"))


@dataclass
class History:
    """The revisions kept for one workspace, oldest first."""

    name: str
    namespace: str
    revisions: list[Revision] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    resource_version: Optional[str] = None      # of the ConfigMap it was read from (None: there was none)

    @property
    def latest(self) -> int:
        return self.revisions[-1].revision if self.revisions else 0

    def get(self, revision: int) -> Optional[Revision]:
        return next((r for r in self.revisions if r.revision == revision), None)

    def good(self, below: Optional[int] = None) -> list[Revision]:
        """Revisions a rollback may return to (newest first): none that failed, was interrupted or never finished."""
        return [r for r in reversed(self.revisions)
                if r.outcome not in NOT_ROLLBACK_TARGETS and (below is None or r.revision < below)]

    def last_rollout_seconds(self) -> Optional[float]:
        """How long the most recent successful rollout took (the expected outage of a Recreate)."""
        for rev in reversed(self.revisions):
            if rev.outcome == "succeeded" and rev.rollout_seconds is not None:
                return rev.rollout_seconds
        return None


def configmap_name(name: str) -> str:
    return f"{name}{HISTORY_SUFFIX}"


def workspace_labels(name: str) -> dict[str, str]:
    """The labels every kaitoctl object of workspace ``name`` carries (as the renderer sets them)."""
    from kaitoctl.render import workspace_labels as render_labels
    from kaitoctl.workspace import Workspace

    return render_labels(Workspace.model_validate({"metadata": {"name": name}}))


def parse(configmap: Optional[dict[str, Any]], name: str, namespace: str) -> History:
    """The History held by a ConfigMap (empty when there is none or it cannot be read)."""
    out = History(name=name, namespace=namespace,
                  resource_version=((configmap or {}).get("metadata") or {}).get("resourceVersion") or None)
    text = ((configmap or {}).get("data") or {}).get(HISTORY_KEY)
    if not text:
        return out
    try:
        entries = json.loads(text)
        out.revisions = sorted((Revision.from_dict(e) for e in entries), key=lambda r: r.revision)
    except (ValueError, KeyError, TypeError):
        return out
    return out


def to_configmap(history: History) -> dict[str, Any]:
    """The ConfigMap that stores ``history`` (the last HISTORY_LIMIT revisions)."""
    kept = history.revisions[-HISTORY_LIMIT:]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(history.name),
            "namespace": history.namespace,
            "labels": workspace_labels(history.name),
        },
        "data": {HISTORY_KEY: json.dumps([r.to_dict() for r in kept], sort_keys=True, indent=1)},
    }


def read(kube: Any, name: str, namespace: str) -> History:
    """The workspace's history from the cluster (one GET)."""
    return parse(kube.get_or_none("ConfigMap", configmap_name(name), namespace), name, namespace)


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write(kube: Any, history: History, change: Callable[[History], None]) -> History:
    """Apply ``change`` to ``history`` and store it, never losing another writer's entries.

    The write carries the resourceVersion the history was read at (a create when there was
    no ConfigMap), so the API server refuses it if someone else wrote in between (409); then
    the history is read again and ``change`` applied to the fresh copy. Server errors and
    throttling are retried too. ``history`` is updated in place and returned.
    """
    from kaitoctl.errors import Conflict
    from kaitoctl.kube import is_transient, retry_after

    for attempt in range(1, WRITE_ATTEMPTS + 1):
        change(history)
        history.revisions = sorted(history.revisions, key=lambda r: r.revision)[-HISTORY_LIMIT:]
        body = to_configmap(history)
        try:
            if history.resource_version is None:
                stored = kube.create(body)
            else:
                body["metadata"]["resourceVersion"] = history.resource_version
                stored = kube.apply(body, force=True)
        except Exception as err:  # noqa: BLE001 - only a lost race (409) and transient API errors are retried
            if attempt == WRITE_ATTEMPTS or not (isinstance(err, Conflict) or is_transient(err)):
                raise
            if not isinstance(err, Conflict):
                time.sleep(min(retry_after(err) or 0.2 * attempt, 5.0))
            fresh = read(kube, history.name, history.namespace)
            history.revisions, history.resource_version = fresh.revisions, fresh.resource_version
            continue
        history.resource_version = ((stored or {}).get("metadata") or {}).get("resourceVersion") or None
        return history
    return history  # pragma: no cover - the loop returns or raises


def reserve(kube: Any, history: History, *, workspace: dict[str, Any], previous: Optional[dict[str, Any]],
            strategy: Optional[str], change: str, at_least: int) -> int:
    """Record a new revision as ``applying`` before anything is applied; its number (>= ``at_least``).

    The number is taken under the resourceVersion check of :func:`write`: two concurrent
    applies get different numbers and both entries stay.
    """
    chosen: list[int] = []

    def add(h: History) -> None:
        number = max(at_least, h.latest + 1)
        chosen[:] = [number]
        h.revisions.append(Revision(revision=number, time=_now(), workspace=workspace,
                                    changes=summarize_changes(previous, workspace), change=change,
                                    strategy=strategy, outcome="applying"))

    write(kube, history, add)
    return chosen[0]


def record(kube: Any, history: History, *, revision: int, workspace: dict[str, Any],
           previous: Optional[dict[str, Any]], strategy: Optional[str], change: str,
           outcome: str = "applied") -> History:
    """Record ``revision`` (replacing an entry of that number) and write the ConfigMap."""
    def add(h: History) -> None:
        entry = Revision(revision=revision, time=_now(), workspace=workspace,
                         changes=summarize_changes(previous, workspace), change=change, strategy=strategy,
                         outcome=outcome)
        h.revisions = [r for r in h.revisions if r.revision != revision] + [entry]

    return write(kube, history, add)


def finish(kube: Any, history: History, revision: int, *, outcome: str, seconds: Optional[float] = None,
           failure: Optional[str] = None) -> None:
    """Record how the rollout of ``revision`` ended (how long it took, or why it failed)."""
    def set_outcome(h: History) -> None:
        entry = h.get(revision)
        if entry is not None:
            entry.outcome = outcome
            entry.failure = failure
            entry.rollout_seconds = round(seconds, 1) if seconds is not None else None

    if history.get(revision) is not None:
        write(kube, history, set_outcome)
