"""The REST verbs of the simulated API server, independent of HTTP.

``Api`` turns (verb, resource, namespace, name, query, body) into an answer or an
``ApiError``: list/get/create/replace/patch (merge, strategic, JSON, apply)/delete,
the status and log subresources, dry runs, managed fields, and the test faults
(``forbid``, ``fail_next``). The HTTP layer (server.py) only parses and serialises.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

from . import errors, fieldmanager
from .cluster import WORKLOADS, Cluster, initial_status, same_object
from .errors import ApiError
from .merge import json_merge_patch, json_patch, strategic_merge_patch
from .resources import BY_PLURAL, Resource
from .schema import apply_defaults, validate
from .selectors import make_filter

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

LogReader = Callable[[dict[str, Any], str | None, bool], str]


@dataclass
class Fault:
    """A failure a test asked for: the next matching request answers ``code``."""

    verb: str
    resource: str
    code: int
    message: str
    causes: list[dict[str, str]] | None = None
    remaining: int = 1
    after: int = 0          # matching requests let through before the fault starts


@dataclass
class Faults:
    forbidden: set[tuple[str, str]] = field(default_factory=set)
    pending: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _resource_names(res: Resource, subresource: str | None) -> set[str]:
    names = {"*", res.plural, res.qualified}
    if subresource:
        names |= {f"{res.plural}/{subresource}", f"{res.qualified}/{subresource}"}
        names -= {res.plural, res.qualified}
    return names


def dry_run_requested(query: dict[str, str], body: dict[str, Any] | None = None) -> bool:
    values = [query.get("dryRun")] + list((body or {}).get("dryRun") or [])
    for value in values:
        if value in (None, ""):
            continue
        if value != "All":
            raise errors.bad_request(f'Invalid dryRun value: "{value}"; supported values: "All"')
        return True
    return False


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise errors.bad_request(f"error decoding JSON body: {exc}") from exc


def _strip_server_metadata(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    for key in ("managedFields", "resourceVersion", "uid", "creationTimestamp", "generation", "selfLink"):
        meta.pop(key, None)


class Api:
    """REST semantics over a ``Cluster``; one instance per simulated API server."""

    def __init__(self, cluster: Cluster, log_reader: LogReader) -> None:
        self.cluster = cluster
        self.store = cluster.store
        self.faults = Faults()
        self.log_reader = log_reader

    # ------------------------------------------------------------------ faults

    def check_faults(
        self, verb: str, res: Resource, namespace: str | None, name: str | None, subresource: str | None
    ) -> None:
        names = _resource_names(res, subresource)
        with self.faults.lock:
            if any((v, r) in self.faults.forbidden for v in (verb, "*") for r in names):
                raise errors.forbidden(res, verb, name, namespace, subresource)
            for fault in self.faults.pending:
                if fault.verb in (verb, "*") and fault.resource in names:
                    if fault.after > 0:
                        fault.after -= 1
                        continue
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.pending.remove(fault)
                    details: dict[str, Any] = {"kind": res.plural}
                    if name:
                        details["name"] = name
                    if res.group:
                        details["group"] = res.group
                    if fault.causes:
                        details["causes"] = fault.causes
                    raise ApiError(fault.code, fault.message, details=details)

    def allowed(self, verb: str, res: Resource, subresource: str | None) -> bool:
        names = _resource_names(res, subresource)
        with self.faults.lock:
            return not any((v, r) in self.faults.forbidden for v in (verb, "*") for r in names)

    # ------------------------------------------------------------------ reads

    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.store.get(res.plural, namespace, name)
        if obj is None:
            raise errors.not_found(res, name)
        return obj

    def list(self, res: Resource, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        matches = make_filter(res, query.get("labelSelector"), query.get("fieldSelector"))
        with self.store.lock:
            items = [obj for obj in self.store.items(res.plural, namespace) if matches(obj)]
            rv = str(self.store.rv)
        start = 0
        if query.get("continue"):
            try:
                start = int(base64.urlsafe_b64decode(query["continue"].encode()).decode())
            except ValueError as exc:
                raise errors.bad_request("continue key is not valid") from exc
        limit = int(query.get("limit") or 0)
        page = items[start : start + limit] if limit else items[start:]
        metadata: dict[str, Any] = {"resourceVersion": rv}
        if limit and start + limit < len(items):
            metadata["continue"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            metadata["remainingItemCount"] = len(items) - start - limit
        listed = []
        for obj in page:
            item = dict(obj)
            item.pop("apiVersion", None)
            item.pop("kind", None)
            listed.append(item)
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": metadata, "items": listed}

    def read_log(self, namespace: str, name: str, query: dict[str, str]) -> str:
        pod = self.get(BY_PLURAL["pods"], namespace, name)
        text = self.log_reader(pod, query.get("container") or None, query.get("previous") in ("true", "1"))
        if query.get("tailLines"):
            lines = text.splitlines(keepends=True)
            tail = int(query["tailLines"])
            text = "".join(lines[-tail:]) if tail > 0 else ""
        return text

    # ------------------------------------------------------------------ writes

    def _check_namespace(self, res: Resource, namespace: str | None) -> None:
        if res.namespaced and self.store.get("namespaces", None, namespace or "") is None:
            raise errors.namespace_not_found(namespace or "")

    def _prepare(
        self,
        res: Resource,
        namespace: str | None,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        subresource: str | None,
    ) -> dict[str, Any]:
        """Turn a client's object into what would be stored: system fields, status rules, defaults."""
        new = copy.deepcopy(new)
        if subresource == "status" and old is not None:
            status = new.get("status")
            new = copy.deepcopy(old)
            new["status"] = status
            return new
        new["apiVersion"], new["kind"] = res.api_version, res.kind
        meta = new.setdefault("metadata", {})
        if res.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if old is not None:
            old_meta = old["metadata"]
            for key in ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            if res.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if res.plural == "services":
                spec = new.setdefault("spec", {})
                old_spec = old.get("spec") or {}
                for key in ("clusterIP", "clusterIPs"):
                    if not spec.get(key) and old_spec.get(key):
                        spec[key] = old_spec[key]
        else:
            for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(key, None)
            if res.plural != "nodes":
                initial_status(res, new, self.cluster)
        apply_defaults(res, new)
        if res.plural in WORKLOADS:
            if old is None:
                meta["generation"] = 1
            elif old.get("spec") != new.get("spec"):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        return new

    def _finish(
        self,
        res: Resource,
        old: dict[str, Any] | None,
        new: dict[str, Any],
        owners: fieldmanager.Owners,
        dry_run: bool,
        subresource: str | None,
    ) -> dict[str, Any]:
        """Validate, render managedFields, and store (unless a no-op or a dry run)."""
        name = new["metadata"].get("name", "")
        if subresource != "status":
            causes = validate(res, new, old)
            if causes:
                raise errors.invalid(res, name, causes)
        if owners:
            new["metadata"]["managedFields"] = fieldmanager.render(owners)
        else:
            new["metadata"].pop("managedFields", None)
        if old is not None and same_object(old, new):
            return old
        if dry_run:
            if old is None:
                new["metadata"].setdefault("uid", "00000000-0000-0000-0000-000000000000")
                new["metadata"].setdefault("creationTimestamp", self.cluster.now())
            else:
                new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            return new
        with self.store.lock:
            if old is None:
                stored = self.store.create(res.plural, new)
            else:
                stored = self.store.update(res.plural, new)
            self.store.owners[stored["metadata"]["uid"]] = owners
            meta = stored["metadata"]
            if meta.get("deletionTimestamp") and not meta.get("finalizers") and res.plural != "pods":
                self.store.remove(res.plural, meta.get("namespace"), meta["name"])
            return stored

    def create(
        self,
        res: Resource,
        namespace: str | None,
        body: dict[str, Any],
        manager: str,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        if body.get("kind") not in (None, res.kind):
            raise errors.bad_request(f"the kind in the data ({body.get('kind')}) does not match the resource ({res.kind})")
        with self.store.lock:
            self._check_namespace(res, namespace)
            body = copy.deepcopy(body)
            _strip_server_metadata(body)
            meta = body.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + self.cluster.random_suffix()
            if res.namespaced and meta.get("namespace") not in (None, namespace):
                raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
            name = meta.get("name")
            if name and self.store.get(res.plural, namespace, name) is not None:
                raise errors.already_exists(res, name)
            new = self._prepare(res, namespace, None, body, None)
            owners = fieldmanager.record_update(None, new, {}, manager, res.api_version, self.cluster.now())
            return self._finish(res, None, new, owners, dry_run, None)

    def replace(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        manager: str,
        dry_run: bool = False,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        body_name = (body.get("metadata") or {}).get("name")
        if body_name not in (None, name):
            raise errors.bad_request(f"the name of the object ({body_name}) does not match the name on the URL ({name})")
        with self.store.lock:
            old = self.get(res, namespace, name)
            self._check_version(res, old, body)
            body = copy.deepcopy(body)
            _strip_server_metadata(body)
            body.setdefault("metadata", {})["name"] = name
            return self._update(res, namespace, old, body, manager, dry_run, subresource)

    def _check_version(self, res: Resource, old: dict[str, Any], body: dict[str, Any]) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise errors.modified(res, old["metadata"]["name"])

    def _update(
        self,
        res: Resource,
        namespace: str | None,
        old: dict[str, Any],
        body: dict[str, Any],
        manager: str,
        dry_run: bool,
        subresource: str | None,
    ) -> dict[str, Any]:
        new = self._prepare(res, namespace, old, body, subresource)
        owners = self.store.owners.get(old["metadata"]["uid"], {})
        if subresource != "status":
            owners = fieldmanager.record_update(old, new, owners, manager, res.api_version, self.cluster.now())
        return self._finish(res, old, new, owners, dry_run, subresource)

    def patch(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        content_type: str,
        body: bytes,
        query: dict[str, str],
        default_manager: str,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        dry_run = dry_run_requested(query)
        manager = query.get("fieldManager") or ""
        if content_type == APPLY:
            if subresource:
                raise errors.bad_request(f"kubesim does not support apply patches to the {subresource} subresource")
            return self.apply(res, namespace, name, body, manager, query.get("force") in ("true", "1"), dry_run)
        if query.get("force"):
            raise errors.bad_request("force may only be specified with apply patches")
        patch = parse_json(body)
        with self.store.lock:
            old = self.get(res, namespace, name)
            if content_type == JSON_PATCH:
                if not isinstance(patch, list):
                    raise errors.bad_request("a JSON patch must be a list of operations")
                new = json_patch(old, patch)
            elif content_type == MERGE:
                new = json_merge_patch(old, patch)
            elif content_type == STRATEGIC:
                new = strategic_merge_patch(old, patch)
            else:
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media types include: {JSON_PATCH}, {MERGE}, {APPLY}, {STRATEGIC}")
            if isinstance(patch, dict):
                self._check_version(res, old, patch)
            new.setdefault("metadata", {})["name"] = name
            _strip_server_metadata(new)
            return self._update(res, namespace, old, new, manager or default_manager, dry_run, subresource)

    def apply(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        body: bytes | dict[str, Any],
        manager: str,
        force: bool,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply: create if absent, merge and track ownership otherwise."""
        if not manager:
            raise errors.bad_request("PATCH requests with apply content type must specify fieldManager: fieldManager is required for apply requests")
        if isinstance(body, dict):
            applied = copy.deepcopy(body)
        else:
            try:
                applied = yaml.safe_load(body.decode() or "null")
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise errors.bad_request(f"error decoding YAML: {exc}") from exc
        if not isinstance(applied, dict):
            raise errors.bad_request("the apply configuration must be an object")
        if applied.get("apiVersion") != res.api_version or applied.get("kind") != res.kind:
            raise errors.bad_request(
                f"invalid object type: {applied.get('apiVersion') or ''}, Kind={applied.get('kind') or ''} "
                f"(expected {res.api_version}, Kind={res.kind})"
            )
        meta = applied.setdefault("metadata", {})
        if meta.get("name") != name:
            raise errors.bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        if res.namespaced and meta.get("namespace") not in (None, namespace):
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        with self.store.lock:
            old = self.store.get(res.plural, namespace, name)
            if old is None:
                self._check_namespace(res, namespace)
            else:
                self._check_version(res, old, applied)
            _strip_server_metadata(applied)
            if res.has_status:
                applied.pop("status", None)
            owners = self.store.owners.get(old["metadata"]["uid"], {}) if old else {}
            merged, owners, conflicts = fieldmanager.apply(
                old, applied, owners, manager, res.api_version, force, self.cluster.now()
            )
            if conflicts and not force:
                raise fieldmanager.conflict_error(res, name, conflicts)
            new = self._prepare(res, namespace, old, merged, None)
            return self._finish(res, old, new, owners, dry_run, None)

    def delete(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        query: dict[str, str],
        options: dict[str, Any] | None,
    ) -> dict[str, Any]:
        options = options or {}
        dry_run = dry_run_requested(query, options)
        propagation = query.get("propagationPolicy") or options.get("propagationPolicy") or "Background"
        if propagation not in ("Foreground", "Background", "Orphan"):
            raise errors.bad_request(f'unsupported propagationPolicy "{propagation}"')
        if options.get("orphanDependents") is True or query.get("orphanDependents") == "true":
            propagation = "Orphan"
        grace = query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        with self.store.lock:
            obj = self.get(res, namespace, name)
            preconditions = options.get("preconditions") or {}
            if preconditions.get("uid") not in (None, obj["metadata"]["uid"]):
                raise errors.modified(res, name)
            if preconditions.get("resourceVersion") not in (None, obj["metadata"]["resourceVersion"]):
                raise errors.modified(res, name)
            if dry_run:
                return obj if res.plural in ("pods", "services") else self._success(res, obj)
            remaining = self.cluster.delete(res, obj, propagation, None if grace is None else int(grace))
            if remaining is not None:
                return remaining
            if res.plural in ("pods", "services"):
                return obj
            return self._success(res, obj)

    def delete_collection(
        self, res: Resource, namespace: str | None, query: dict[str, str], options: dict[str, Any] | None
    ) -> dict[str, Any]:
        with self.store.lock:
            listed = self.list(res, namespace, query)
            for item in listed["items"]:
                self.delete(res, item["metadata"].get("namespace"), item["metadata"]["name"], query, options)
        return self._success(res, None)

    @staticmethod
    def _success(res: Resource, obj: dict[str, Any] | None) -> dict[str, Any]:
        details: dict[str, Any] = {"kind": res.plural}
        if obj is not None:
            details.update(name=obj["metadata"]["name"], uid=obj["metadata"]["uid"])
        if res.group:
            details["group"] = res.group
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
