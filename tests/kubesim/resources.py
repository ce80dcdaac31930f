"""The resource types the simulated API server knows, and how their names are spelled.

One table, looked up by plural, kind or short name, so that routing, error messages
(``deployments.apps "x" not found``) and the test helpers (``sim.get("Deployment", ...)``)
all agree on one spelling.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMON_FIELDS = ("metadata.name", "metadata.namespace")


@dataclass(frozen=True)
class Resource:
    """One REST resource: where it lives in the URL space and what it is called."""

    plural: str
    kind: str
    group: str
    version: str
    namespaced: bool
    has_status: bool
    fields: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        """``v1`` for the core group, ``apps/v1`` otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The name error messages use: ``pods``, ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """The name validation messages use: ``Pod``, ``Deployment.apps``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def field_selectors(self) -> tuple[str, ...]:
        return COMMON_FIELDS + self.fields


_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

RESOURCES: tuple[Resource, ...] = (
    Resource("namespaces", "Namespace", "", "v1", False, True, ("status.phase",), ("ns",)),
    Resource("nodes", "Node", "", "v1", False, True, ("spec.unschedulable",), ("no",)),
    Resource(
        "pods",
        "Pod",
        "",
        "v1",
        True,
        True,
        (
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ),
        ("po",),
    ),
    Resource("events", "Event", "", "v1", True, False, _EVENT_FIELDS, ("ev",)),
    Resource("services", "Service", "", "v1", True, True, (), ("svc",)),
    Resource("secrets", "Secret", "", "v1", True, False, ("type",)),
    Resource("configmaps", "ConfigMap", "", "v1", True, False, (), ("cm",)),
    Resource("serviceaccounts", "ServiceAccount", "", "v1", True, False, (), ("sa",)),
    Resource("deployments", "Deployment", "apps", "v1", True, True, (), ("deploy",)),
    Resource("replicasets", "ReplicaSet", "apps", "v1", True, True, (), ("rs",)),
    Resource("statefulsets", "StatefulSet", "apps", "v1", True, True, (), ("sts",)),
)

BY_PLURAL: dict[str, Resource] = {r.plural: r for r in RESOURCES}
BY_GROUP_PLURAL: dict[tuple[str, str], Resource] = {(r.group, r.plural): r for r in RESOURCES}


def lookup(name: str) -> Resource:
    """Find a resource by plural, singular, kind, short name or ``plural.group``.

    Raises KeyError naming the known resources, so a typo in a test fails clearly.
    """
    wanted = name.strip().lower()
    for res in RESOURCES:
        names = {res.plural, res.kind.lower(), res.qualified, *res.short_names}
        if wanted in names:
            return res
    known = ", ".join(r.plural for r in RESOURCES)
    raise KeyError(f"kubesim knows no resource {name!r}; known: {known}")
