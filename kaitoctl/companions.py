"""ConfigMaps and Secrets next to a Workspace in one file, as kubectl takes such files.

KAITO's example files often carry a Secret (``HF_TOKEN`` for a gated model, named by
``presetOptions.modelAccessSecret``) and a ConfigMap (``inference_config.yaml``, named by
``inference.config``) before the Workspace. kaitoctl checks them (shape, names, the keys a
Workspace needs), applies them with the workspace under the same field manager, and ``render``
shows them with every Secret value replaced (keys only, never the data).
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kaitoctl.loader import LoadedDocument

KINDS = ("ConfigMap", "Secret")
HF_TOKEN_KEY = "HF_TOKEN"                       # key of the model-access Secret
INFERENCE_CONFIG_KEY = "inference_config.yaml"  # key of the inference.config ConfigMap
REDACTED = "<redacted>"
_FIELDS = {
    "ConfigMap": ("apiVersion", "kind", "metadata", "data", "binaryData", "immutable"),
    "Secret": ("apiVersion", "kind", "metadata", "data", "stringData", "type", "immutable"),
}
_DATA_FIELDS = {"ConfigMap": ("data", "binaryData"), "Secret": ("data", "stringData")}
# Patterns as text, compiled on first use (re caches them): render's start-up never pays for them.
_KEY = r"[-._a-zA-Z0-9]+"
_DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"


def check(doc: "LoadedDocument", data: dict[str, Any]) -> None:
    """Record the problems of one ConfigMap/Secret document; set ``doc.companion`` when there are none."""
    from kaitoctl.loader import show_value

    kind = data["kind"]
    before = len(doc.findings)

    def error(path: tuple[Any, ...], message: str, *, key: bool = False) -> None:
        doc.findings.append(doc.finding("error", path, message, key=key))

    if data.get("apiVersion") != "v1":
        error(("apiVersion",), f"a {kind} has apiVersion: v1, found {show_value(data.get('apiVersion'))}")
    for key in data:
        if key not in _FIELDS[kind]:
            error((key,), f"unknown field {show_value(key)} of a {kind}: valid fields are "
                          f"{', '.join(_FIELDS[kind])}", key=True)
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        error(("metadata", "name"), f"the {kind} needs a metadata.name (the Workspace refers to it by name)")
    elif len(name) > 253 or not re.fullmatch(_DNS1123_SUBDOMAIN, name):
        error(("metadata", "name"), f"{kind} name {show_value(name)} must be a DNS subdomain: lower-case letters, "
                                    "digits, '-' and '.', at most 253 characters")
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    if namespace is not None and (not isinstance(namespace, str) or not re.fullmatch(_DNS1123_LABEL, namespace)):
        error(("metadata", "namespace"), f"namespace {show_value(namespace)} must be a DNS label")
    for section in _DATA_FIELDS[kind]:
        if section not in data or data[section] is None:
            continue
        values = data[section]
        if not isinstance(values, dict):
            error((section,), f"{section} must be a mapping of keys to strings")
            continue
        for key, value in values.items():
            if not re.fullmatch(_KEY, key) or len(key) > 253:
                error((section, key), f"key {show_value(key)} must consist of letters, digits, '-', '_' or '.'",
                      key=True)
            if not isinstance(value, str):
                error((section, key), f"the value of {key} must be a string, found {show_value(value)}: quote it")
            elif section in ("data", "binaryData") and (kind == "Secret" or section == "binaryData"):
                import base64
                import binascii

                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    error((section, key), f"the value of {key} in {section} must be base64-encoded; write the plain "
                                          "text under stringData instead")
    if len(doc.findings) == before:
        doc.companion = data


def ref(obj: dict[str, Any]) -> tuple[str, str, str]:
    """(kind, namespace or "", name)."""
    meta = obj.get("metadata") or {}
    return obj["kind"], meta.get("namespace") or "", meta.get("name") or ""


def keys(obj: dict[str, Any]) -> list[str]:
    """Every key of the object's data, sorted."""
    out: set[str] = set()
    for section in _DATA_FIELDS.get(obj.get("kind", ""), ()):
        out.update((obj.get(section) or {}).keys())
    return sorted(out)


def text_value(obj: dict[str, Any], key: str) -> Optional[str]:
    """The value of ``key`` as text (Secret data decoded), or None when absent or not UTF-8."""
    if key in (obj.get("stringData") or {}):
        return obj["stringData"][key]
    value = (obj.get("data") or {}).get(key)
    if value is None:
        return None
    if obj.get("kind") == "Secret":
        import base64
        import binascii

        try:
            return base64.b64decode(value).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return value


def content_hash(obj: dict[str, Any]) -> str:
    """A short hash of the object's data (what the pods see), for the pod template: a change rolls out."""
    import hashlib

    digest = hashlib.sha256()
    for key in keys(obj):
        digest.update(key.encode() + b"\0" + (text_value(obj, key) or "").encode() + b"\0")
    return digest.hexdigest()[:16]


def for_apply(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The object as ``apply`` sends it: as written, placed in ``namespace``."""
    out = copy.deepcopy(obj)
    out.setdefault("metadata", {})["namespace"] = namespace
    return out


def redacted(obj: dict[str, Any]) -> dict[str, Any]:
    """The object for printing: a Secret's values replaced by ``<redacted>`` (its keys stay, under stringData)."""
    if obj.get("kind") != "Secret":
        return copy.deepcopy(obj)
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("data", "stringData")}
    names = keys(obj)
    if names:
        out["stringData"] = {key: REDACTED for key in names}
    return out
