"""Adapters of a deployed workspace: what runs now, and edits that go through the safe apply path.

``adapters list`` reads the Workspace recorded with the workload and checks the
running pods for each adapter (its init container and its entry in
``KAITOCTL_ADAPTERS``). ``adapters update`` edits that recorded Workspace
(never a local file), validates the result exactly as ``kaitoctl validate``
does, shows old → new per adapter, and re-applies the whole Workspace through
:func:`kaitoctl.apply.apply_workspace`, so it gets the same preflight, surge or
refusal, rollout watch, history record and automatic rollback as ``apply -f``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from kaitoctl.errors import InvalidWorkspace, UsageError
from kaitoctl.history import adapters_of
from kaitoctl.workspace import DEFAULT_STRENGTH, Workspace

ADAPTERS_ENV = "KAITOCTL_ADAPTERS"


# --------------------------------------------------------------------------------------------
# Editing


@dataclass
class AdapterEdits:
    """The changes one ``adapters update`` asks for (several become one rollout)."""

    images: dict[str, str] = field(default_factory=dict)            # add or replace: name -> image
    strengths: dict[str, str] = field(default_factory=dict)         # name -> strength text
    pull_secrets: dict[str, list[str]] = field(default_factory=dict)  # name -> secrets (replaces the list)
    remove: list[str] = field(default_factory=list)
    from_file: Optional[list[dict[str, Any]]] = None                # a whole adapter list (``-f FILE``)

    @property
    def empty(self) -> bool:
        return not (self.images or self.strengths or self.pull_secrets or self.remove) and self.from_file is None


def parse_pairs(values: list[str], flag: str) -> dict[str, str]:
    """``NAME=VALUE`` flag values → dict, with an error naming the flag for anything else."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise UsageError(f"{flag} {value!r}: expected NAME=VALUE")
        if name in out and out[name] != rest:
            raise UsageError(f"{flag} names adapter {name!r} twice with different values")
        out[name] = rest
    return out


def edit_adapters(current: list[dict[str, Any]], edits: AdapterEdits) -> list[dict[str, Any]]:
    """The new ``inference.adapters`` list (KAITO's shape) after ``edits``; order kept, new ones appended."""
    if edits.from_file is not None:
        adapters = copy.deepcopy(edits.from_file)
    else:
        adapters = copy.deepcopy(current)
    names = [((a.get("source") or {}).get("name")) for a in adapters]
    for name in edits.remove:
        if name in edits.images or name in edits.strengths or name in edits.pull_secrets:
            raise UsageError(f"adapter {name!r} is both removed and changed")
        if name not in names:
            raise UsageError(f"--remove {name}: the workspace has no adapter {name!r}",
                             hint=f"its adapters: {', '.join(n for n in names if n) or 'none'}")
    adapters = [a for a in adapters if (a.get("source") or {}).get("name") not in edits.remove]
    by_name = {(a.get("source") or {}).get("name"): a for a in adapters}
    for name, image in edits.images.items():
        if name in by_name:
            by_name[name].setdefault("source", {})["image"] = image
        else:
            entry = {"source": {"name": name, "image": image}}
            adapters.append(entry)
            by_name[name] = entry
    for flag, values in (("--strength", edits.strengths), ("--pull-secret", edits.pull_secrets)):
        for name in values:
            if name not in by_name:
                raise UsageError(f"{flag} {name}=...: the workspace has no adapter {name!r}",
                                 hint=f"add it with --adapter {name}=IMAGE in the same command")
    for name, strength in edits.strengths.items():
        by_name[name]["strength"] = strength
    for name, secrets in edits.pull_secrets.items():
        source = by_name[name].setdefault("source", {})
        if secrets:
            source["imagePullSecrets"] = list(secrets)
        else:
            source.pop("imagePullSecrets", None)
    return adapters


def updated_workspace(recorded: dict[str, Any], edits: AdapterEdits) -> Workspace:
    """The recorded Workspace with its adapters edited, validated as ``kaitoctl validate`` validates."""
    from kaitoctl.validate import check_workspace

    data = copy.deepcopy(recorded)
    inference = data.setdefault("inference", {})
    new = edit_adapters(list(inference.get("adapters") or []), edits)
    if new:
        inference["adapters"] = new
    else:
        inference.pop("adapters", None)
    name = (data.get("metadata") or {}).get("name", "?")
    try:
        ws = Workspace.model_validate(data)
    except Exception as exc:  # pydantic's ValidationError: report it like validate does
        errors = getattr(exc, "errors", lambda: [])()
        details = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors] or [str(exc)]
        raise InvalidWorkspace(f"workspace {name!r} after the adapter changes is invalid; nothing was applied",
                               details=details) from exc
    try:
        check_workspace(ws)
    except InvalidWorkspace as err:
        err.message = f"workspace {name!r} after the adapter changes is invalid; nothing was applied"
        raise
    return ws


def adapters_from_file(path: str) -> list[dict[str, Any]]:
    """The adapter list of the (single) Workspace in ``path``, validated by the loader."""
    from kaitoctl.validate import load_workspaces

    workspaces = load_workspaces(path)
    if len(workspaces) != 1:
        raise UsageError(f"{path}: holds {len(workspaces)} Workspaces; -f needs exactly one")
    return list(workspaces[0].canonical().get("inference", {}).get("adapters") or [])


# --------------------------------------------------------------------------------------------
# Diffs and what runs


@dataclass
class AdapterDiff:
    """One adapter, before and after (None: absent on that side)."""

    name: str
    before: Optional[dict[str, Any]]
    after: Optional[dict[str, Any]]

    @property
    def change(self) -> str:
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        return "unchanged" if self.before == self.after else "changed"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "change": self.change, "before": self.before, "after": self.after}


def diff(old: Optional[dict[str, Any]], new: dict[str, Any]) -> list[AdapterDiff]:
    """Per adapter old → new, in the new order, removed ones last."""
    before = {a["name"]: a for a in adapters_of(old)}
    after = {a["name"]: a for a in adapters_of(new)}
    rows = [AdapterDiff(name, before.get(name), after[name]) for name in after]
    rows += [AdapterDiff(name, before[name], None) for name in before if name not in after]
    return rows


def _env_adapters(container: dict[str, Any]) -> Optional[list[dict[str, Any]]]:
    for env in container.get("env") or []:
        if env.get("name") == ADAPTERS_ENV:
            try:
                data = json.loads(env.get("value") or "[]")
            except ValueError:
                return None
            return data if isinstance(data, list) else None
    return None


def _pod_has(pod: dict[str, Any], adapter: dict[str, Any]) -> bool:
    """Whether a pod copied this adapter's image and merges it at this strength."""
    spec = pod.get("spec") or {}
    fetched = any(c.get("name") == adapter["name"] and c.get("image") == adapter["image"]
                  for c in spec.get("initContainers") or [])
    for container in spec.get("containers") or []:
        listed = _env_adapters(container)
        if listed is None:
            continue
        for entry in listed:
            if entry.get("name") == adapter["name"]:
                try:
                    same = float(entry.get("strength", DEFAULT_STRENGTH)) == float(adapter["strength"])
                except (TypeError, ValueError):
                    same = False
                return fetched and same
    return False


def _ready(pod: dict[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def deployed_adapters(workspace: Optional[dict[str, Any]], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded adapters, each with how many ready pods serve it as recorded."""
    live = [p for p in pods if _ready(p) and not (p.get("metadata") or {}).get("deletionTimestamp")]
    out = []
    for adapter in adapters_of(workspace):
        serving = sum(1 for p in live if _pod_has(p, adapter))
        out.append({**adapter, "readyPods": len(live), "podsWithIt": serving})
    return out
