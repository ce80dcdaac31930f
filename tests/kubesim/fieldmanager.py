"""Server-side apply: field ownership per manager, conflicts, and removal of dropped fields.

Ownership is tracked as sets of leaf paths. A path element is a field name, or
``("k", key, value)`` for an item of a keyed list (containers by name, ...); every
other list is atomic (a leaf). What this models, as the real API server does:

- an Apply owns exactly the fields in its configuration; fields it applied before and
  no longer applies are removed, unless another manager also owns them;
- an Update (create, PUT, merge/strategic/JSON patch) owns the fields whose value it changed,
  taking them from whoever owned them, without conflict;
- an Apply that would change a field owned by another manager fails with a conflict,
  unless ``force``, which transfers ownership.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from .errors import ApiError
from .merge import list_key
from .resources import Resource

ItemKey = tuple[str, str, Any]
Path = tuple[Any, ...]

# Fields the server owns itself: never tracked, never applied.
UNTRACKED_TOP = frozenset({"apiVersion", "kind", "status"})
UNTRACKED_METADATA = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "managedFields",
        "selfLink",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generateName",
    }
)


@dataclass
class Manager:
    """One managedFields entry: who, how (Apply/Update), with which API version, what."""

    name: str
    operation: str
    api_version: str
    time: str
    paths: set[Path] = field(default_factory=set)


Owners = dict[tuple[str, str], Manager]  # keyed by (manager name, operation)
Conflict = tuple[Manager, Path]


def _is_item(element: Any) -> bool:
    return isinstance(element, tuple)


def _collect(value: Any, path: Path, name: str, out: set[Path]) -> None:
    if value is None:
        return
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _collect(child, path + (key,), key, out)
        return
    key = list_key(name, value)
    if key is not None and value:
        for item in value:
            item_path = path + (("k", key, item[key]),)
            out.add(item_path)
            for child_name, child in item.items():
                _collect(child, item_path + (child_name,), child_name, out)
        return
    out.add(path)


def fieldset(obj: dict[str, Any]) -> set[Path]:
    """Every trackable leaf path of an object (plus keyed-list item markers)."""
    paths: set[Path] = set()
    for key, value in obj.items():
        if key in UNTRACKED_TOP:
            continue
        if key == "metadata" and isinstance(value, dict):
            for meta_key, meta_value in value.items():
                if meta_key not in UNTRACKED_METADATA:
                    _collect(meta_value, ("metadata", meta_key), meta_key, paths)
            continue
        _collect(value, (key,), key, paths)
    return paths


def lookup(obj: Any, path: Path) -> tuple[bool, Any]:
    current = obj
    for element in path:
        if _is_item(element):
            _, key, wanted = element
            if not isinstance(current, list):
                return False, None
            for item in current:
                if isinstance(item, dict) and item.get(key) == wanted:
                    current = item
                    break
            else:
                return False, None
        else:
            if not isinstance(current, dict) or element not in current:
                return False, None
            current = current[element]
    return True, current


def _delete(obj: dict[str, Any], path: Path) -> None:
    found, parent = lookup(obj, path[:-1])
    if not found:
        return
    last = path[-1]
    if _is_item(last) and isinstance(parent, list):
        _, key, wanted = last
        parent[:] = [i for i in parent if not (isinstance(i, dict) and i.get(key) == wanted)]
    elif isinstance(parent, dict):
        parent.pop(last, None)
    # Prune containers this removal emptied (but never the top-level sections).
    for depth in range(len(path) - 1, 1, -1):
        found, container = lookup(obj, path[:depth])
        if not found or container not in ({}, []):
            break
        _delete_exact(obj, path[:depth])


def _delete_exact(obj: dict[str, Any], path: Path) -> None:
    found, parent = lookup(obj, path[:-1])
    last = path[-1]
    if not found:
        return
    if _is_item(last) and isinstance(parent, list):
        _, key, wanted = last
        parent[:] = [i for i in parent if not (isinstance(i, dict) and i.get(key) == wanted)]
    elif isinstance(parent, dict):
        parent.pop(last, None)


def _merge(live: Any, applied: Any, name: str | None) -> Any:
    if isinstance(applied, dict):
        result = live if isinstance(live, dict) else {}
        for key, value in applied.items():
            if value is not None:
                result[key] = _merge(result.get(key), value, key)
        return result
    if isinstance(applied, list):
        key = list_key(name, applied)
        if key is not None and isinstance(live, list) and list_key(name, live) == key:
            by_key = {item[key]: item for item in live}
            applied_keys = {item[key] for item in applied}
            merged = [_merge(by_key.get(item[key]), item, None) for item in applied]
            return merged + [item for item in live if item[key] not in applied_keys]
        return copy.deepcopy(applied)
    return applied


def format_path(path: Path) -> str:
    """``.spec.template.spec.containers[name="x"].image``, as conflicts are reported."""
    text = ""
    for element in path:
        if _is_item(element):
            _, key, value = element
            text += f"[{key}={json.dumps(value)}]"
        else:
            text += f".{element}"
    return text


def _prune_missing(obj: dict[str, Any], owners: Owners) -> Owners:
    result: Owners = {}
    for key, manager in owners.items():
        kept = {p for p in manager.paths if lookup(obj, p)[0]}
        if kept:
            result[key] = Manager(manager.name, manager.operation, manager.api_version, manager.time, kept)
    return result


def copy_owners(owners: Owners) -> Owners:
    return {k: Manager(m.name, m.operation, m.api_version, m.time, set(m.paths)) for k, m in owners.items()}


def apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    owners: Owners,
    manager: str,
    api_version: str,
    force: bool,
    now: str,
) -> tuple[dict[str, Any], Owners, list[Conflict]]:
    """Merge an apply configuration into ``live``.

    Returns the merged object, the new ownership and the conflicts found. With conflicts
    and no ``force`` the caller must reject the request; the merged object is then moot.
    """
    owners = copy_owners(owners)
    new_paths = fieldset(applied)
    conflicts: list[Conflict] = []
    for path in sorted(new_paths, key=format_path):
        if _is_item(path[-1]):
            continue
        _, applied_value = lookup(applied, path)
        found, live_value = lookup(live or {}, path)
        if found and live_value == applied_value:
            continue
        for key, other in owners.items():
            if other.name != manager and path in other.paths:
                conflicts.append((other, path))
    if conflicts and force:
        for other, path in conflicts:
            other.paths.discard(path)
    merged = _merge(copy.deepcopy(live or {}), applied, None)

    mine = owners.get((manager, "Apply"))
    previous = mine.paths if mine else set()
    others: set[Path] = set()
    for key, other in owners.items():
        if key != (manager, "Apply"):
            others |= other.paths
    # Shortest first: a dropped keyed-list item goes as a whole (with its defaulted fields)
    # before its own leaves; deleting its key field first would leave a nameless item behind.
    for path in sorted(previous - new_paths, key=len):
        if path in others or any(q[: len(path)] == path for q in others):
            continue
        if len(path) >= 2 and _is_item(path[-2]) and path[-1] == path[-2][1]:
            continue  # an item's key field stays while the item does (another manager keeps it)
        _delete(merged, path)

    if mine is None or mine.paths != new_paths:
        owners[(manager, "Apply")] = Manager(manager, "Apply", api_version, now, set(new_paths))
    return merged, _prune_missing(merged, owners), conflicts


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    owners: Owners,
    manager: str,
    api_version: str,
    now: str,
) -> Owners:
    """Give ``manager`` the fields whose value this non-apply write changed."""
    owners = copy_owners(owners)
    changed = set()
    for path in fieldset(new):
        found, old_value = lookup(old or {}, path)
        if not found or (not _is_item(path[-1]) and old_value != lookup(new, path)[1]):
            changed.add(path)
    if changed:
        for other in owners.values():
            if other.name != manager:
                other.paths -= changed
        key = (manager, "Update")
        entry = owners.get(key) or Manager(manager, "Update", api_version, now)
        entry.paths |= changed
        entry.time = now
        entry.api_version = api_version
        owners[key] = entry
    return _prune_missing(new, owners)


def _fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths, key=format_path):
        node = root
        for element in path:
            if _is_item(element):
                _, key, value = element
                name = "k:" + json.dumps({key: value}, separators=(",", ":"))
            else:
                name = f"f:{element}"
            node = node.setdefault(name, {})
        if _is_item(path[-1]):
            node["."] = {}
    return root


def render(owners: Owners) -> list[dict[str, Any]]:
    """The ``metadata.managedFields`` list for these owners."""
    return [
        {
            "manager": m.name,
            "operation": m.operation,
            "apiVersion": m.api_version,
            "time": m.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": _fields_v1(m.paths),
        }
        for m in owners.values()
    ]


def conflict_error(res: Resource, name: str, conflicts: list[Conflict]) -> ApiError:
    """409 in the API server's words: ``Apply failed with 1 conflict: conflict with ...``."""
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "{m.name}" using {m.api_version}',
            "field": format_path(p),
        }
        for m, p in conflicts
    ]
    count = len(conflicts)
    if count == 1:
        manager, path = conflicts[0]
        text = f'conflict with "{manager.name}" using {manager.api_version}: {format_path(path)}'
    else:
        groups: dict[tuple[str, str], list[str]] = {}
        for manager, path in conflicts:
            groups.setdefault((manager.name, manager.api_version), []).append(format_path(path))
        text = "\n".join(
            f'conflicts with "{n}" using {v}:\n' + "\n".join(f"- {p}" for p in paths)
            for (n, v), paths in groups.items()
        )
    plural = "" if count == 1 else "s"
    details = {"name": name, "kind": res.plural, "causes": causes}
    if res.group:
        details["group"] = res.group
    return ApiError(409, f"Apply failed with {count} conflict{plural}: {text}", details=details)
