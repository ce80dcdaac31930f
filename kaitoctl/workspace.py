"""The Workspace model (kaito.sh/v1alpha1 and kaito.sh/v1beta1), as KAITO's API types define it.

Both versions describe the same object with the same shape (kaito-2026-facts): v1beta1 adds
``presetOptions.modelAccessSecret``, ``inference.config`` and ``resource.partition`` and
deprecates a few fields (still accepted). kaitoctl accepts the new fields under both versions
and records every Workspace under one apiVersion (``API_VERSION``), so a workspace applied as
v1alpha1 and re-applied as v1beta1 is the same workspace with the same history.

This module is the contract every other part reads: the loader produces these
objects, validation checks them, rendering turns them into Kubernetes objects.
Field names are KAITO's JSON names (camelCase); there is no ``spec:`` key.

Defaults are KAITO's CRD defaults (count 1, instanceType Standard_NC12s_v3,
accessMode public) plus strength "1.0" when omitted (KAITO documents that
default but never persists it; see kaito-facts §2.6).

The model checks shape and types only (unknown fields are errors); the rules
(names, GPU fit, KAITO's webhook checks) live in ``kaitoctl.validate``, and
``docs/workspace.md`` documents every field.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kaitoctl.companions import HF_TOKEN_KEY, INFERENCE_CONFIG_KEY  # noqa: F401 - re-exported

API_VERSION = "kaito.sh/v1alpha1"       # the version the record (canonical JSON) is written in
API_VERSION_BETA = "kaito.sh/v1beta1"
API_VERSIONS = (API_VERSION, API_VERSION_BETA)
# v1beta1 fields KAITO marks deprecated (still accepted; validate notes them).
DEPRECATED_IN_BETA = (
    ("resource", "count"), ("resource", "preferredNodes"), ("inference", "preset", "accessMode"),
    ("inference", "preset", "presetOptions", "image"), ("inference", "preset", "presetOptions", "imagePullSecrets"),
)
KIND = "Workspace"
DEFAULT_INSTANCE_TYPE = "Standard_NC12s_v3"
DEFAULT_STRENGTH = "1.0"
MAX_ADAPTERS = 10


class _Strict(BaseModel):
    """Unknown fields are errors (the loader turns them into did-you-mean findings)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False)


class LabelSelectorRequirement(_Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Optional[list[str]] = None


class LabelSelector(_Strict):
    matchLabels: Optional[dict[str, str]] = None
    matchExpressions: Optional[list[LabelSelectorRequirement]] = None


class PartitionSpec(_Strict):
    """resource.partition (v1beta1): a MIG profile, or N whole GPUs for one workload."""

    mode: Literal["mig", "accelerator"]
    profile: Optional[str] = None   # mig only, e.g. "1g.10gb"
    count: Optional[int] = None     # accelerator only, >= 1


class ResourceSpec(_Strict):
    count: int = 1
    # "" (written empty) = your own GPU nodes: no instance type, GPU facts from the nodes' labels.
    instanceType: str = DEFAULT_INSTANCE_TYPE
    labelSelector: Optional[LabelSelector] = None
    preferredNodes: Optional[list[str]] = None
    partition: Optional[PartitionSpec] = None


class PresetOptions(_Strict):
    image: Optional[str] = None
    imagePullSecrets: Optional[list[str]] = None
    modelAccessSecret: Optional[str] = None  # Secret with key HF_TOKEN (gated Hugging Face repos)


class PresetSpec(_Strict):
    name: str
    accessMode: Literal["public", "private"] = "public"
    presetOptions: Optional[PresetOptions] = None


class DataSource(_Strict):
    name: Optional[str] = None
    urls: Optional[list[str]] = None
    volumeSource: Optional[dict[str, Any]] = None
    image: Optional[str] = None
    imagePullSecrets: Optional[list[str]] = None


class AdapterSpec(_Strict):
    source: Optional[DataSource] = None
    # KAITO types strength as a string holding a float; we keep the string as
    # written (it is what gets recorded and rendered) and expose the number.
    strength: Optional[str] = None

    @field_validator("strength", mode="before")
    @classmethod
    def _number_to_string(cls, value: Any) -> Any:
        # YAML `strength: 0.5` (a number) is accepted and kept as its text; the
        # validator warns that KAITO's CRD wants a string there.
        if isinstance(value, bool):
            return value  # let pydantic reject it as a non-string
        if isinstance(value, (int, float)):
            return repr(value) if isinstance(value, float) else str(value)
        return value

    @property
    def name(self) -> str:
        return (self.source.name if self.source else None) or ""

    @property
    def strength_value(self) -> float:
        """The strength as a float (``DEFAULT_STRENGTH`` when omitted); NaN if unparsable."""
        text = self.strength if self.strength is not None else DEFAULT_STRENGTH
        try:
            return float(text)
        except ValueError:
            return math.nan


class InferenceSpec(_Strict):
    preset: Optional[PresetSpec] = None
    template: Optional[dict[str, Any]] = None  # a PodTemplateSpec, schemaless as in KAITO's CRD
    adapters: Optional[list[AdapterSpec]] = None
    config: Optional[str] = None  # ConfigMap with key inference_config.yaml


class TuningSpec(BaseModel):
    """Recognised so that it can be rejected clearly: kaitoctl does not run tuning jobs."""

    model_config = ConfigDict(extra="allow")


class ObjectMeta(BaseModel):
    """metadata. Server-populated fields (uid, resourceVersion, ...) are tolerated and ignored."""

    model_config = ConfigDict(extra="allow")

    name: Optional[str] = None
    namespace: Optional[str] = None
    labels: Optional[dict[str, str]] = None
    annotations: Optional[dict[str, str]] = None


class Workspace(_Strict):
    apiVersion: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    resource: ResourceSpec = Field(default_factory=ResourceSpec)
    inference: Optional[InferenceSpec] = None
    tuning: Optional[TuningSpec] = None
    status: Optional[dict[str, Any]] = None  # as found in `kubectl get -o yaml`; ignored

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def adapters(self) -> list[AdapterSpec]:
        return list(self.inference.adapters or []) if self.inference else []

    @property
    def byo_nodes(self) -> bool:
        """Empty instanceType: the user's own GPU nodes (no instance type to match or look up)."""
        return not self.resource.instanceType.strip()

    @property
    def model_access_secret(self) -> Optional[str]:
        preset = self.inference.preset if self.inference else None
        options = preset.presetOptions if preset else None
        return options.modelAccessSecret if options else None

    @property
    def inference_config(self) -> Optional[str]:
        return self.inference.config if self.inference else None

    @property
    def preset_name(self) -> Optional[str]:
        if self.inference and self.inference.preset:
            return self.inference.preset.name
        return None

    def canonical(self) -> dict[str, Any]:
        """The Workspace as plain data with defaults filled in and status dropped.

        Recorded under ``API_VERSION`` whichever version the file was written in: the two
        versions are one object, so switching a file to v1beta1 changes nothing.

        This is what gets recorded in the cluster with the workload (the source
        of truth for status, adapters update and rollback) and what a revision
        hash is computed from: key order is fixed, so equal Workspaces give
        byte-identical JSON.
        """
        meta: dict[str, Any] = {"name": self.metadata.name}
        if self.metadata.namespace:
            meta["namespace"] = self.metadata.namespace
        if self.metadata.labels:
            meta["labels"] = dict(sorted(self.metadata.labels.items()))
        if self.metadata.annotations:
            meta["annotations"] = dict(sorted(self.metadata.annotations.items()))
        out: dict[str, Any] = {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta}
        out["resource"] = self.resource.model_dump(exclude_none=True)
        if self.inference is not None:
            inf = self.inference.model_dump(exclude_none=True)
            for i, adapter in enumerate(inf.get("adapters", [])):
                adapter.setdefault("strength", DEFAULT_STRENGTH)
                inf["adapters"][i] = adapter
            out["inference"] = inf
        if self.tuning is not None:
            out["tuning"] = self.tuning.model_dump()
        return out
