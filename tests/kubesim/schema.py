"""Defaulting and a small slice of the API server's validation.

Defaults are the ones a client sees echoed back (restartPolicy, imagePullPolicy,
deployment strategy, ...), so that "did my apply change anything?" behaves as on a
real cluster. Validation covers the mistakes a manifest renderer can make (names,
duplicate containers, negative replicas, selector/labels mismatch, mounts of missing
volumes, GPU requests without limits); each error is a 422 cause with the real wording.
"""

from __future__ import annotations

import re
from typing import Any

from .resources import Resource
from .selectors import label_selector_matches

Cause = tuple[str, str, str]  # (reason, field, message)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
PORT_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")

MSG_LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
MSG_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
MSG_DNS1035 = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
MSG_LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)

NON_OVERCOMMITTABLE = ("nvidia.com/gpu", "amd.com/gpu")
WORKLOADS = ("deployments", "replicasets", "statefulsets")


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def invalid(field: str, value: Any, message: str) -> Cause:
    return ("FieldValueInvalid", field, f"Invalid value: {_quote(value)}: {message}")


def required(field: str) -> Cause:
    return ("FieldValueRequired", field, "Required value")


# ---------------------------------------------------------------- defaulting


def _default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for container in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        if not isinstance(container, dict):
            continue
        image = str(container.get("image") or "")
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
        resources = container["resources"]
        if isinstance(resources, dict):
            for section in ("requests", "limits"):
                values = resources.get(section)
                if isinstance(values, dict):
                    resources[section] = {k: str(v) for k, v in values.items()}
            # Extended resources: requests default to limits, as on a real cluster.
            limits = resources.get("limits") or {}
            for name in NON_OVERCOMMITTABLE:
                if name in limits:
                    resources.setdefault("requests", {}).setdefault(name, limits[name])


def apply_defaults(res: Resource, obj: dict[str, Any]) -> None:
    """Fill the defaults the real API server fills, in place."""
    spec = obj.get("spec")
    if res.plural == "pods" and isinstance(spec, dict):
        _default_pod_spec(spec)
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if isinstance(tolerations, list) and not any(
                isinstance(t, dict) and t.get("key") == key for t in tolerations
            ):
                tolerations.append(
                    {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                )
    if res.plural in WORKLOADS and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        template_spec = (spec.get("template") or {}).get("spec")
        if isinstance(template_spec, dict):
            _default_pod_spec(template_spec)
    if res.plural == "deployments" and isinstance(spec, dict):
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxSurge", "25%")
                    rolling.setdefault("maxUnavailable", "25%")
    if res.plural == "statefulsets" and isinstance(spec, dict):
        spec.setdefault("podManagementPolicy", "OrderedReady")
        strategy = spec.setdefault("updateStrategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                strategy.setdefault("rollingUpdate", {"partition": 0})
        spec.setdefault(
            "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
        )
    if res.plural == "services" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
    if res.plural == "secrets":
        obj.setdefault("type", "Opaque")


# ---------------------------------------------------------------- validation


def _validate_metadata(res: Resource, obj: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        causes.append(required("metadata.name"))
    elif res.plural in ("services", "namespaces"):
        pattern, message = (DNS1035_LABEL, MSG_DNS1035) if res.plural == "services" else (
            DNS1123_LABEL,
            MSG_LABEL,
        )
        if not pattern.match(name) or len(name) > 63:
            causes.append(invalid("metadata.name", name, message))
    elif not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
        causes.append(invalid("metadata.name", name, MSG_SUBDOMAIN))
    causes += _validate_labels(meta.get("labels"), "metadata.labels")
    annotations = meta.get("annotations") or {}
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > 262144:
        causes.append(("FieldValueTooLong", "metadata.annotations", "Too long: must have at most 262144 bytes"))
    return causes


def _validate_labels(labels: Any, field: str) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (labels or {}).items():
        name = key.rsplit("/", 1)[-1]
        if not QUALIFIED_NAME.match(name) or len(name) > 63:
            causes.append(invalid(field, key, "name part must consist of alphanumeric characters, '-', '_' or '.'"))
        if not isinstance(value, str):
            causes.append(invalid(f"{field}", value, "label values must be strings"))
        elif len(value) > 63:
            causes.append(invalid(field, value, "must be no more than 63 characters"))
        elif not LABEL_VALUE.match(value):
            causes.append(invalid(field, value, MSG_LABEL_VALUE))
    return causes


def _validate_container(container: Any, field: str, volumes: set[str]) -> list[Cause]:
    if not isinstance(container, dict):
        return [invalid(field, container, "must be an object")]
    causes: list[Cause] = []
    name = container.get("name")
    if not name:
        causes.append(required(f"{field}.name"))
    elif not DNS1123_LABEL.match(name) or len(name) > 63:
        causes.append(invalid(f"{field}.name", name, MSG_LABEL))
    if not container.get("image"):
        causes.append(required(f"{field}.image"))
    port_names: set[str] = set()
    for j, port in enumerate(container.get("ports") or []):
        number = port.get("containerPort") if isinstance(port, dict) else None
        if not isinstance(number, int) or not 1 <= number <= 65535:
            causes.append(invalid(f"{field}.ports[{j}].containerPort", number, "must be between 1 and 65535, inclusive"))
        port_name = port.get("name") if isinstance(port, dict) else None
        if port_name:
            if len(port_name) > 15 or not PORT_NAME.match(port_name) or not re.search("[a-z]", port_name):
                causes.append(invalid(f"{field}.ports[{j}].name", port_name, "must be no more than 15 characters"))
            elif port_name in port_names:
                causes.append(("FieldValueDuplicate", f"{field}.ports[{j}].name", f'Duplicate value: "{port_name}"'))
            port_names.add(port_name)
    for j, mount in enumerate(container.get("volumeMounts") or []):
        mount_name = mount.get("name") if isinstance(mount, dict) else None
        if mount_name not in volumes:
            causes.append(("FieldValueNotFound", f"{field}.volumeMounts[{j}].name", f'Not found: "{mount_name}"'))
        if not (isinstance(mount, dict) and mount.get("mountPath")):
            causes.append(required(f"{field}.volumeMounts[{j}].mountPath"))
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    for resource in NON_OVERCOMMITTABLE:
        if resource in requests and resource not in limits:
            causes.append(("FieldValueForbidden", f"{field}.resources.limits", f"Forbidden: Limit must be set for non overcommitable resources"))
        elif resource in requests and str(requests[resource]) != str(limits[resource]):
            causes.append(
                invalid(f"{field}.resources.requests", str(requests[resource]), f"must be equal to {resource} limit of {limits[resource]}")
            )
    for j, env in enumerate(container.get("env") or []):
        if not (isinstance(env, dict) and env.get("name")):
            causes.append(required(f"{field}.env[{j}].name"))
    return causes


def validate_pod_spec(spec: Any, field: str, restart_policies: tuple[str, ...]) -> list[Cause]:
    if not isinstance(spec, dict):
        return [required(field)]
    causes: list[Cause] = []
    volumes: set[str] = set()
    for i, volume in enumerate(spec.get("volumes") or []):
        name = volume.get("name") if isinstance(volume, dict) else None
        if not name:
            causes.append(required(f"{field}.volumes[{i}].name"))
        elif name in volumes:
            causes.append(("FieldValueDuplicate", f"{field}.volumes[{i}].name", f'Duplicate value: "{name}"'))
        volumes.add(name or "")
    containers = spec.get("containers")
    if not containers:
        causes.append(required(f"{field}.containers"))
    seen: set[str] = set()
    for section in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(section) or []):
            causes += _validate_container(container, f"{field}.{section}[{i}]", volumes)
            name = container.get("name") if isinstance(container, dict) else None
            if name and name in seen:
                causes.append(("FieldValueDuplicate", f"{field}.{section}[{i}].name", f'Duplicate value: "{name}"'))
            if name:
                seen.add(name)
    policy = spec.get("restartPolicy")
    if policy is not None and policy not in restart_policies:
        supported = ", ".join(f'"{p}"' for p in restart_policies)
        causes.append(("FieldValueNotSupported", f"{field}.restartPolicy", f'Unsupported value: "{policy}": supported values: {supported}'))
    for i, toleration in enumerate(spec.get("tolerations") or []):
        if isinstance(toleration, dict) and toleration.get("operator") == "Exists" and toleration.get("value"):
            causes.append(invalid(f"{field}.tolerations[{i}].operator", toleration.get("value"), "value must be empty when `operator` is 'Exists'"))
    return causes


def _int_or_percent(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit():
        return int(value[:-1])
    return None


def _validate_workload(res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    causes: list[Cause] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        causes.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    selector = spec.get("selector")
    template = spec.get("template") or {}
    template_labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(required("spec.selector"))
    elif not label_selector_matches(selector, template_labels):
        causes.append(invalid("spec.template.metadata.labels", template_labels, "`selector` does not match template `labels`"))
    causes += _validate_labels(template_labels, "spec.template.metadata.labels")
    causes += validate_pod_spec(template.get("spec"), "spec.template.spec", ("Always",))
    if old is not None and (old.get("spec") or {}).get("selector") != selector:
        causes.append(invalid("spec.selector", selector, "field is immutable"))
    if res.plural == "deployments":
        causes += _validate_strategy(spec.get("strategy") or {})
    if res.plural == "statefulsets":
        policy = spec.get("podManagementPolicy")
        if policy not in ("OrderedReady", "Parallel"):
            causes.append(("FieldValueNotSupported", "spec.podManagementPolicy", f'Unsupported value: "{policy}": supported values: "OrderedReady", "Parallel"'))
        strategy_type = (spec.get("updateStrategy") or {}).get("type")
        if strategy_type not in ("RollingUpdate", "OnDelete"):
            causes.append(("FieldValueNotSupported", "spec.updateStrategy.type", f'Unsupported value: "{strategy_type}": supported values: "OnDelete", "RollingUpdate"'))
        if old is not None:
            mutable = (
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
                "revisionHistoryLimit",
            )
            old_spec = old.get("spec") or {}
            if {k: v for k, v in spec.items() if k not in mutable} != {k: v for k, v in old_spec.items() if k not in mutable}:
                causes.append((
                    "FieldValueForbidden",
                    "spec",
                    "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                    "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ))
    return causes


def _validate_strategy(strategy: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    kind = strategy.get("type")
    if kind not in ("RollingUpdate", "Recreate"):
        return [("FieldValueNotSupported", "spec.strategy.type", f'Unsupported value: "{kind}": supported values: "Recreate", "RollingUpdate"')]
    rolling = strategy.get("rollingUpdate")
    if kind == "Recreate":
        if rolling is not None:
            causes.append(("FieldValueForbidden", "spec.strategy.rollingUpdate", "Forbidden: may not be specified when strategy `type` is 'Recreate'"))
        return causes
    rolling = rolling or {}
    surge = _int_or_percent(rolling.get("maxSurge"))
    unavailable = _int_or_percent(rolling.get("maxUnavailable"))
    for name, value in (("maxSurge", surge), ("maxUnavailable", unavailable)):
        if value is None or value < 0:
            causes.append(invalid(f"spec.strategy.rollingUpdate.{name}", rolling.get(name), "must be greater than or equal to 0"))
    if surge == 0 and unavailable == 0:
        causes.append(invalid("spec.strategy.rollingUpdate.maxUnavailable", rolling.get("maxUnavailable"), "may not be 0 when `maxSurge` is 0"))
    return causes


def _validate_service(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [required("spec")]
    causes: list[Cause] = []
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None":
        causes.append(required("spec.ports"))
    names: set[str] = set()
    for i, port in enumerate(ports):
        number = port.get("port") if isinstance(port, dict) else None
        if not isinstance(number, int) or not 1 <= number <= 65535:
            causes.append(invalid(f"spec.ports[{i}].port", number, "must be between 1 and 65535, inclusive"))
        name = port.get("name") if isinstance(port, dict) else None
        if len(ports) > 1 and not name:
            causes.append(required(f"spec.ports[{i}].name"))
        if name in names:
            causes.append(("FieldValueDuplicate", f"spec.ports[{i}].name", f'Duplicate value: "{name}"'))
        names.add(name)
    kind = spec.get("type")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(("FieldValueNotSupported", "spec.type", f'Unsupported value: "{kind}": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"'))
    if old is not None:
        old_ip = (old.get("spec") or {}).get("clusterIP")
        if spec.get("clusterIP") not in (None, "", old_ip):
            causes.append(invalid("spec.clusterIP", spec.get("clusterIP"), "field is immutable"))
    return causes


def validate(res: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """All field errors of ``obj`` (``old`` is the stored object on updates)."""
    causes = _validate_metadata(res, obj)
    if res.plural == "pods":
        causes += validate_pod_spec(obj.get("spec"), "spec", ("Always", "OnFailure", "Never"))
    elif res.plural in WORKLOADS:
        causes += _validate_workload(res, obj, old)
    elif res.plural == "services":
        causes += _validate_service(obj, old)
    return causes
