"""Patch formats: JSON merge patch (RFC 7386), strategic merge patch, JSON patch (RFC 6902).

Strategic merge here knows the handful of lists Kubernetes merges by key (containers
by name, volumeMounts by mountPath, ...); every other list is replaced whole. The same
table drives server-side apply, so both agree on what a list item is.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError

# Field name -> merge key, for the associative lists kaitoctl-style manifests use.
KEYED_LISTS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
}


def list_key(field: str | None, items: Any) -> str | None:
    """The merge key for this list, or None when it is atomic (or items lack the key)."""
    key = KEYED_LISTS.get(field or "")
    if key is None or not isinstance(items, list):
        return None
    if all(isinstance(i, dict) and key in i for i in items):
        return key
    return None


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str | None = None) -> Any:
    """Merge like JSON merge patch, except that keyed lists merge item by item.

    ``$patch: delete`` on a keyed list item removes it; other ``$`` directives are dropped.
    """
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value, key)
        return result
    if isinstance(patch, list):
        key = list_key(field, [p for p in patch if not (isinstance(p, dict) and "$patch" in p)])
        if key is None or not isinstance(target, list) or list_key(field, target) is None:
            return [p for p in copy.deepcopy(patch) if not (isinstance(p, dict) and "$patch" in p)]
        merged = copy.deepcopy(target)
        index = {item[key]: i for i, item in enumerate(merged)}
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                continue
            if item.get("$patch") == "delete":
                merged = [m for m in merged if m.get(key) != item[key]]
                index = {m[key]: i for i, m in enumerate(merged)}
            elif item[key] in index:
                pos = index[item[key]]
                merged[pos] = strategic_merge_patch(merged[pos], item)
            else:
                index[item[key]] = len(merged)
                merged.append(strategic_merge_patch({}, item))
        return merged
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict):
            doc = doc[part]
        else:
            raise KeyError(part)
    return doc


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 add/remove/replace/move/copy/test; a failing op is a 422 naming it."""
    doc = copy.deepcopy(target)
    for op in operations:
        kind = op.get("op")
        try:
            parts = _pointer(op.get("path", ""))
            if kind == "test":
                if _walk(doc, parts) != op.get("value"):
                    raise ApiError(422, f"the test operation failed at {op.get('path')}")
                continue
            if kind in ("move", "copy"):
                value = copy.deepcopy(_walk(doc, _pointer(op.get("from", ""))))
                if kind == "move":
                    doc = _remove(doc, _pointer(op["from"]))
                doc = _add(doc, parts, value)
            elif kind == "add":
                doc = _add(doc, parts, copy.deepcopy(op.get("value")))
            elif kind == "remove":
                doc = _remove(doc, parts)
            elif kind == "replace":
                doc = _remove(doc, parts)
                doc = _add(doc, parts, copy.deepcopy(op.get("value")))
            else:
                raise ApiError(422, f"unknown JSON patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, f"JSON patch {kind} {op.get('path')!r} failed: {exc}") from exc
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent[last] = value
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        del parent[int(last)]
    else:
        del parent[last]
    return doc
