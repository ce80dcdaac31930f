"""Rendering: a Workspace (plus its plan) to the exact Kubernetes objects ``apply`` sends.

A pure function of (workspace, preset, SKU, plan, registry): no clock, no
randomness, no cluster. Same input, same dicts in the same key order, so the
YAML/JSON is byte-identical and re-applying an unchanged workspace changes
nothing and triggers no rollout. ``docs/rendering.md`` explains every choice,
and where it departs from what KAITO generates (kaito-facts §5, §10).

Objects come back in apply order: the Service(s) first, then the workload.
"""

from __future__ import annotations

import copy
import json
import math
import os
from typing import TYPE_CHECKING, Any, Optional

from kaitoctl.errors import InvalidWorkspace
from kaitoctl.history import ANNOTATION_WORKSPACE, MANAGED_BY, MANAGED_BY_LABEL, WORKSPACE_LABEL, canonical_json
from kaitoctl.plan import GPU_RESOURCE, Plan, default_plan
from kaitoctl.companions import HF_TOKEN_KEY, INFERENCE_CONFIG_KEY

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kaitoctl.catalog import Preset
    from kaitoctl.workspace import AdapterSpec, Workspace

# --- names and numbers other parts rely on -----------------------------------------------------

API_KEY_SECRET_ANNOTATION = "kaitoctl.io/api-key-secret"
API_KEY_SECRET_KEY = "api-key"
ENABLE_LB_ANNOTATION = "kaito.sh/enablelb"              # value exactly "True" -> LoadBalancer, as KAITO
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
BETA_INSTANCE_TYPE_LABEL = "beta.kubernetes.io/instance-type"   # deprecated, still on older nodes
HOSTNAME_LABEL = "kubernetes.io/hostname"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"        # set on StatefulSet pods since Kubernetes 1.28
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"

SERVER_PORT = 5000
SERVICE_PORT = 80
TORCHRUN_PORT = 29500
HEALTH_PATH = "/health"
MODEL_DIR = "/workspace/tfs/weights"
ADAPTER_DIR = "/mnt/adapter"
ADAPTER_VOLUME = "adapter-volume"
TOOLS_DIR = "/kaitoctl-tools"
TOOLS_VOLUME = "kaitoctl-tools"
COPY_TOOL_CONTAINER = "kaitoctl-copy-tool"
# A static busybox: copied into a shared emptyDir so that adapter images built
# FROM scratch (no shell, no cp) can still have their /data copied out.
# Overridable for mirrored or air-gapped registries.
COPY_TOOL_IMAGE = "busybox:1.36.1-musl"
COPY_TOOL_IMAGE_ENV = "KAITOCTL_COPY_TOOL_IMAGE"

# Weights fetched at pod start (presets marked weights_at_start, kaito-2026-facts).
WEIGHTS_DIR = "/workspace/weights"
WEIGHTS_VOLUME = "weights"
FETCH_CONTAINER = "kaitoctl-fetch-weights"     # kaitoctl.rollout names its failures after it
FETCH_MODULE = "kaitoctl_server.fetch"
SERVER_IMAGE_NAME = "kaitoctl-server"          # the server image without weights
WEIGHTS_AT_START_ANNOTATION = "kaitoctl.io/weights-at-start"  # "true": fetch any preset at start
# inference.config: the ConfigMap's inference_config.yaml, mounted read-only for the server.
CONFIG_DIR = "/etc/kaitoctl/inference-config"
CONFIG_VOLUME = "inference-config"
CONFIG_HASH_ANNOTATION = "kaitoctl.io/inference-config-hash"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"

RUN_AS_ID = 1000
SHM_SIZE = "8Gi"          # NCCL / torch shared memory between GPU processes of a pod
TMP_SIZE = "4Gi"          # /tmp, HOME and the HF cache dir under a read-only root filesystem
TOOLS_SIZE = "16Mi"       # one static busybox (~1 MiB)
PRESTOP_SLEEP_SECONDS = 10             # let kube-proxy / endpoints drop the pod before SIGTERM
TERMINATION_GRACE_SECONDS = 300        # preStop + a long generation finishing (gunicorn graceful stop)
# gunicorn's graceful_timeout: in-flight requests may finish after SIGTERM, ending before the kubelet's SIGKILL.
GRACEFUL_TIMEOUT_SECONDS = TERMINATION_GRACE_SECONDS - PRESTOP_SLEEP_SECONDS - 10
STARTUP_PERIOD_SECONDS = 10
PROBE_TIMEOUT_SECONDS = 5
REVISION_HISTORY_LIMIT = 10
# Time for scheduling and pulling a multi-GB model image, on top of the
# preset's readiness timeout, before a Deployment reports ProgressDeadlineExceeded.
PULL_ALLOWANCE_SECONDS = 900
TEMPLATE_READINESS_SECONDS = 600       # KAITO waits 10 minutes for template workloads

GPU_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
)


def render_workspace(ws: "Workspace", plan: Optional[Plan] = None, *, registry: Optional[str] = None,
                     config_data: Optional[str] = None) -> list[dict]:
    """The objects for ``ws``, in apply order (Services, then the Deployment or StatefulSet).

    ``plan`` defaults to :func:`kaitoctl.plan.default_plan` (the catalog's view
    of an empty node of ``resource.instanceType``); ``registry`` overrides where
    public preset images come from. ``config_data`` is the content of the
    ``inference.config`` ConfigMap when known (its hash goes into the pod
    template, so a changed ConfigMap rolls the pods). Raises :class:`InvalidWorkspace` for a
    workspace that cannot be rendered (validation normally catches these first).
    """
    if ws.inference is None:
        raise InvalidWorkspace(
            f"workspace {ws.name!r}: nothing to render: `inference` is not set",
            hint="kaitoctl runs inference workspaces only; tuning is not supported",
        )
    if plan is None:
        plan = default_plan(ws)
    inference = ws.inference
    if inference.preset is not None and inference.template is not None:
        raise InvalidWorkspace(
            f"workspace {ws.name!r}: inference: Preset and Template cannot be set at the same time",
            hint="keep inference.preset (kaitoctl's server) or inference.template (your own pod), not both",
        )
    if inference.preset is None:
        if inference.template is None:
            raise InvalidWorkspace(
                f"workspace {ws.name!r}: inference: Preset or Template must be specified",
            )
        return _render_template(ws, plan)
    return _render_preset(ws, plan, registry, config_data)


# --- shared pieces ------------------------------------------------------------------------------


def workspace_labels(ws: "Workspace") -> dict[str, str]:
    """Labels on every object kaitoctl creates for ``ws`` (selectors use only ``kaito.sh/workspace``)."""
    return {
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/instance": ws.name,
        MANAGED_BY_LABEL: MANAGED_BY,
        "app.kubernetes.io/name": "kaito-workspace",
        WORKSPACE_LABEL: ws.name,
    }


def image_pull_policy(image: str) -> str:
    """``Always`` for a ``latest`` or missing tag (it moves), ``IfNotPresent`` for pinned tags and digests."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _metadata(ws: "Workspace", name: str, annotations: Optional[dict[str, str]] = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ws.metadata.namespace:
        meta["namespace"] = ws.metadata.namespace
    meta["labels"] = workspace_labels(ws)
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return meta


def _selector_expressions(ws: "Workspace") -> list[dict[str, Any]]:
    """The whole labelSelector as node selector requirements (matchLabels -> In, then matchExpressions)."""
    selector = ws.resource.labelSelector
    if selector is None:
        return []
    exprs: list[dict[str, Any]] = [
        {"key": key, "operator": "In", "values": [value]} for key, value in sorted((selector.matchLabels or {}).items())
    ]
    for req in selector.matchExpressions or []:
        expr: dict[str, Any] = {"key": req.key, "operator": req.operator}
        if req.operator in ("In", "NotIn"):
            expr["values"] = list(req.values or [])
        exprs.append(expr)
    return exprs


def node_affinity(ws: "Workspace") -> dict[str, Any]:
    """Required affinity from the labelSelector and instance type; preferred affinity for preferredNodes.

    KAITO's node check also accepts nodes that carry no instance-type label, and
    preflight reads the GA label, else the deprecated beta one (older nodes carry
    only that). The required part is three ORed terms, each with the selector:
    GA In [type]; no GA label and beta In [type]; neither label.
    """
    instance_type = ws.resource.instanceType

    def label(key: str, operator: str) -> dict[str, Any]:
        return {"key": key, "operator": operator, **({"values": [instance_type]} if operator == "In" else {})}

    # Each term gets its own copies: shared dicts would come out as YAML anchors.
    if ws.byo_nodes:
        # Your own nodes (empty instanceType): the labelSelector alone picks them.
        terms = [{"matchExpressions": _selector_expressions(ws)}]
    else:
        terms = [
            {"matchExpressions": _selector_expressions(ws) + [label(INSTANCE_TYPE_LABEL, "In")]},
            {"matchExpressions": _selector_expressions(ws) + [label(INSTANCE_TYPE_LABEL, "DoesNotExist"),
                                                              label(BETA_INSTANCE_TYPE_LABEL, "In")]},
            {"matchExpressions": _selector_expressions(ws) + [label(INSTANCE_TYPE_LABEL, "DoesNotExist"),
                                                              label(BETA_INSTANCE_TYPE_LABEL, "DoesNotExist")]},
        ]
    affinity: dict[str, Any] = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}
    preferred = sorted(set(ws.resource.preferredNodes or []))
    if preferred:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {
                "weight": 100,
                "preference": {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": preferred}]},
            }
        ]
    return affinity


def _merge_tolerations(existing: Optional[list[Any]]) -> list[Any]:
    merged = list(existing or [])
    for toleration in GPU_TOLERATIONS:
        if toleration not in merged:
            merged.append(dict(toleration))
    return merged


def _service(ws: "Workspace", distributed: bool, target_port: int) -> dict[str, Any]:
    """The client-facing Service ``<ws>``: port 80 (http) to the server; only ready pods get traffic."""
    annotations = ws.metadata.annotations or {}
    selector = {WORKSPACE_LABEL: ws.name}
    if distributed:
        # Only rank 0 (pod <ws>-0) serves the generation API.
        selector[POD_NAME_LABEL] = f"{ws.name}-0"
    spec: dict[str, Any] = {
        "type": "LoadBalancer" if annotations.get(ENABLE_LB_ANNOTATION) == "True" else "ClusterIP",
        "selector": selector,
        "ports": [{"name": "http", "protocol": "TCP", "port": SERVICE_PORT, "targetPort": target_port}],
    }
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(ws, ws.name), "spec": spec}


def _headless_service(ws: "Workspace") -> dict[str, Any]:
    """``<ws>-headless``: stable DNS for the torchrun rendezvous, published before pods are ready."""
    spec = {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {WORKSPACE_LABEL: ws.name},
        "ports": [{"name": "torchrun", "protocol": "TCP", "port": TORCHRUN_PORT, "targetPort": TORCHRUN_PORT}],
    }
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(ws, f"{ws.name}-headless"), "spec": spec}


def _deployment(ws: "Workspace", plan: Plan, pod_template: dict[str, Any], readiness_seconds: int) -> dict[str, Any]:
    if plan.strategy == "RollingUpdate":
        strategy: dict[str, Any] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    else:
        strategy = {"type": "Recreate"}
    spec = {
        "replicas": ws.resource.count,
        "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
        "progressDeadlineSeconds": readiness_seconds + PULL_ALLOWANCE_SECONDS,
        "selector": {"matchLabels": {WORKSPACE_LABEL: ws.name}},
        "strategy": strategy,
        "template": pod_template,
    }
    meta = _metadata(ws, ws.name, {ANNOTATION_WORKSPACE: canonical_json(ws.canonical())})
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


# --- custom pod template ------------------------------------------------------------------------


def _merge_node_affinity(user: Optional[dict[str, Any]], ours: dict[str, Any]) -> dict[str, Any]:
    """AND our node affinity with the user's: every user term crossed with every one of ours.

    Node selector terms are ORed and expressions inside a term ANDed, so the
    cross product keeps exactly the nodes both sides allow. Preferred terms add up.
    """
    user = user or {}
    merged: dict[str, Any] = {}
    user_required = (user.get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    our_terms = ours["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    if user_required:
        terms = []
        for user_term in user_required:
            for our_term in our_terms:
                term = copy.deepcopy(user_term)
                term["matchExpressions"] = list(term.get("matchExpressions") or []) + copy.deepcopy(
                    our_term["matchExpressions"]
                )
                terms.append(term)
    else:
        terms = our_terms
    merged["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    preferred = list(user.get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    preferred += ours.get("preferredDuringSchedulingIgnoredDuringExecution", [])
    if preferred:
        merged["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return merged


def _template_target_port(spec: dict[str, Any]) -> int:
    """The Service targets the template's first declared containerPort, else the server port 5000."""
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if isinstance(port, dict) and isinstance(port.get("containerPort"), int):
                return port["containerPort"]
    return SERVER_PORT


def _render_template(ws: "Workspace", plan: Plan) -> list[dict]:
    """KAITO's custom template: the user's pod, our labels, placement, tolerations and Service."""
    if ws.adapters:
        raise InvalidWorkspace(
            f"workspace {ws.name!r}: inference.adapters: adapters need a preset; a custom template runs its own server",
            hint="remove inference.adapters, or use inference.preset",
        )
    template = copy.deepcopy(ws.inference.template)  # type: ignore[union-attr]
    spec = template.get("spec") if isinstance(template, dict) else None
    if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
        raise InvalidWorkspace(
            f"workspace {ws.name!r}: inference.template.spec.containers: a pod template needs at least one container",
        )
    meta = template.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    meta["labels"] = {**(meta.get("labels") or {}), **workspace_labels(ws)}
    affinity = dict(spec.get("affinity") or {})
    affinity["nodeAffinity"] = _merge_node_affinity(affinity.get("nodeAffinity"), node_affinity(ws))
    spec["affinity"] = affinity
    spec["tolerations"] = _merge_tolerations(spec.get("tolerations"))
    pod_template = {"metadata": meta, "spec": spec}
    return [
        _service(ws, distributed=False, target_port=_template_target_port(spec)),
        _deployment(ws, plan, pod_template, TEMPLATE_READINESS_SECONDS),
    ]


# --- presets ------------------------------------------------------------------------------------


def _preset(ws: "Workspace") -> "Preset":
    from kaitoctl.catalog import get_preset

    name = ws.preset_name or ""
    preset = get_preset(name)
    if preset is None:
        raise InvalidWorkspace(
            f"workspace {ws.name!r}: inference.preset.name: Unsupported inference preset name {name}",
            hint="run `kaitoctl presets list` for the valid names",
        )
    return preset


def _model_image(ws: "Workspace", preset: "Preset", registry: Optional[str]) -> tuple[str, list[str]]:
    """The model image and its pull secrets: the user's image in private mode (as KAITO), else ours."""
    spec = ws.inference.preset  # type: ignore[union-attr]
    options = spec.presetOptions if spec else None
    if spec is not None and spec.accessMode == "private":
        if not options or not options.image:
            raise InvalidWorkspace(
                f"workspace {ws.name!r}: inference.preset.presetOptions.image: "
                "When AccessMode is private, an image must be provided in PresetOptions",
            )
        return options.image, list(options.imagePullSecrets or [])
    if fetches_weights(ws, preset):
        # The plain server image: the weights come from Hugging Face when the pod starts.
        import dataclasses

        return dataclasses.replace(preset, image_name=SERVER_IMAGE_NAME).image(registry), []
    return preset.image(registry), []


def fetches_weights(ws: "Workspace", preset: "Preset") -> bool:
    """Whether the pods download the weights at start: presets KAITO fetches at run time, and any preset
    whose image the user has not built (annotation kaitoctl.io/weights-at-start: "true"); never for
    accessMode private (the user's image holds the weights)."""
    if _own_image(ws):
        return False
    return preset.weights_at_start or (ws.metadata.annotations or {}).get(WEIGHTS_AT_START_ANNOTATION) == "true"


def _adapters_env(ws: "Workspace") -> str:
    """KAITOCTL_ADAPTERS: compact JSON list of {name, strength} in spec order (strength a number)."""
    entries = []
    for index, adapter in enumerate(ws.adapters):
        strength = adapter.strength_value
        if not math.isfinite(strength):
            raise InvalidWorkspace(
                f"workspace {ws.name!r}: inference.adapters[{index}].strength: {adapter.strength!r} is not a number",
                hint='write a number between 0 and 1, for example strength: "0.5"',
            )
        entries.append({"name": adapter.name, "strength": strength})
    return json.dumps(entries, separators=(",", ":"))


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }


def _adapter_init_containers(ws: "Workspace") -> list[dict[str, Any]]:
    """One copy-tool init container, then one per adapter copying its image's /data, argv only.

    The adapter containers run the static busybox from the tools volume, so
    they need nothing from the adapter image but /data (FROM scratch works).
    ``cp -r /data/. DIR`` copies the contents (dotfiles too) and is idempotent
    when the pod's init containers run again over the same emptyDir.
    """
    adapters = [a for a in ws.adapters if not _volume_adapter(a)]
    if not adapters:
        return []
    tool_image = os.environ.get(COPY_TOOL_IMAGE_ENV) or COPY_TOOL_IMAGE
    busybox = f"{TOOLS_DIR}/busybox"
    containers: list[dict[str, Any]] = [
        {
            "name": COPY_TOOL_CONTAINER,
            "image": tool_image,
            "imagePullPolicy": image_pull_policy(tool_image),
            "command": ["/bin/busybox", "cp", "/bin/busybox", busybox],
            "volumeMounts": [{"name": TOOLS_VOLUME, "mountPath": TOOLS_DIR}],
            "securityContext": _security_context(),
        }
    ]
    for adapter in adapters:
        _check_adapter(ws, ws.adapters.index(adapter), adapter)
        image = adapter.source.image  # type: ignore[union-attr]
        containers.append(
            {
                "name": adapter.name,
                "image": image,
                "imagePullPolicy": image_pull_policy(image),  # type: ignore[arg-type]
                "command": [busybox, "cp", "-r", "/data/.", f"{ADAPTER_DIR}/{adapter.name}"],
                "volumeMounts": [
                    {"name": ADAPTER_VOLUME, "mountPath": ADAPTER_DIR},
                    {"name": TOOLS_VOLUME, "mountPath": TOOLS_DIR, "readOnly": True},
                ],
                "securityContext": _security_context(),
            }
        )
    return containers


ADAPTER_VOLUME_PREFIX = "adapter-"


def _volume_adapter(adapter: "AdapterSpec") -> bool:
    """An adapter read from a volume (source.volumeSource, mounted at /mnt/adapter/<name>), not copied from an image."""
    return adapter.source is not None and adapter.source.volumeSource is not None and not adapter.source.image


def _check_adapter(ws: "Workspace", index: int, adapter: "AdapterSpec") -> None:
    """Guards against what would make an invalid pod (validation reports these with line numbers)."""
    path = f"inference.adapters[{index}]"
    if adapter.source is None or not adapter.source.image:
        raise InvalidWorkspace(
            f"workspace {ws.name!r}: {path}.source.image: Image of Adapter field must be specified",
            hint="kaitoctl copies adapters from images; urls and volumeSource are not supported",
        )
    if adapter.name in ("", ws.name, COPY_TOOL_CONTAINER):
        raise InvalidWorkspace(
            f"workspace {ws.name!r}: {path}.source.name: {adapter.name!r} cannot name an init container "
            f"(it must be non-empty and differ from the workspace name and {COPY_TOOL_CONTAINER!r})",
            hint="rename the adapter",
        )


def _pull_secrets(ws: "Workspace", preset_secrets: list[str]) -> list[dict[str, str]]:
    names = set(preset_secrets)
    for adapter in ws.adapters:
        if adapter.source is not None:
            names.update(adapter.source.imagePullSecrets or [])
    return [{"name": name} for name in sorted(names)]


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": PROBE_TIMEOUT_SECONDS,
        "failureThreshold": failures,
    }


def torchrun_args(ws: "Workspace", preset: "Preset") -> list[str]:
    """torchrun flags for this workspace alone (sorted), then the server module.

    Node rank comes from the pod's ordinal and the rendezvous is pod 0 through
    the headless Service, so nothing is shared between workspaces (KAITO
    mutates package-level maps here).
    """
    count = max(ws.resource.count, 1)
    flags = {
        "master_addr": f"{ws.name}-0.{ws.name}-headless.$(KAITOCTL_NAMESPACE).svc.cluster.local",
        "master_port": str(TORCHRUN_PORT),
        "nnodes": str(count),
        "node_rank": "$(KAITOCTL_NODE_RANK)",
        "nproc_per_node": str(preset.world_size // count),
    }
    return [f"--{key}={value}" for key, value in sorted(flags.items())] + ["-m", "kaitoctl_server"]


def _main_env(ws: "Workspace", preset: "Preset") -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": "/tmp/huggingface"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
        {"name": "KAITOCTL_ADAPTERS", "value": _adapters_env(ws)},
        {"name": "KAITOCTL_ADAPTER_DIR", "value": ADAPTER_DIR},
        {"name": "KAITOCTL_BIND", "value": f"0.0.0.0:{SERVER_PORT}"},
        {"name": "KAITOCTL_DTYPE", "value": preset.dtype},
        {"name": "KAITOCTL_GRACEFUL_TIMEOUT", "value": str(GRACEFUL_TIMEOUT_SECONDS)},
        {"name": "KAITOCTL_MODEL", "value": WEIGHTS_DIR if fetches_weights(ws, preset) else MODEL_DIR},
        {"name": "KAITOCTL_PIPELINE", "value": preset.pipeline},
    ]
    if ws.inference_config:
        env.append({"name": "KAITOCTL_INFERENCE_CONFIG", "value": f"{CONFIG_DIR}/{INFERENCE_CONFIG_KEY}"})
    if preset.trust_remote_code:
        env.append({"name": "KAITOCTL_TRUST_REMOTE_CODE", "value": "true"})
    secret = (ws.metadata.annotations or {}).get(API_KEY_SECRET_ANNOTATION)
    if secret:
        env.append(
            {"name": "KAITOCTL_API_KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": API_KEY_SECRET_KEY}}}
        )
    if preset.distributed:
        env.append({"name": "KAITOCTL_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
        env.append(
            {
                "name": "KAITOCTL_NODE_RANK",
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}},
            }
        )
    return sorted(env, key=lambda item: item["name"])


def _main_container(ws: "Workspace", preset: "Preset", plan: Plan, image: str) -> dict[str, Any]:
    ports = [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}]
    if preset.distributed:
        command = ["torchrun"]
        args = torchrun_args(ws, preset)
        ports.append({"name": "torchrun", "containerPort": TORCHRUN_PORT, "protocol": "TCP"})
    else:
        command = ["gunicorn"]
        args = ["--config", "python:kaitoctl_server.gunicorn_conf", "kaitoctl_server.wsgi:app"]
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "tmp", "mountPath": "/tmp"}]
    if ws.adapters:
        mounts.insert(0, {"name": ADAPTER_VOLUME, "mountPath": ADAPTER_DIR, "readOnly": True})
        mounts[1:1] = [{"name": ADAPTER_VOLUME_PREFIX + a.name, "mountPath": f"{ADAPTER_DIR}/{a.name}", "readOnly": True}
                       for a in ws.adapters if _volume_adapter(a)]
    if ws.inference_config:
        mounts.append({"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True})
    if fetches_weights(ws, preset):
        mounts.append({"name": WEIGHTS_VOLUME, "mountPath": WEIGHTS_DIR, "readOnly": True})
    startup_failures = math.ceil(preset.readiness_timeout_seconds / STARTUP_PERIOD_SECONDS)
    return {
        "name": ws.name,
        "image": image,
        "imagePullPolicy": image_pull_policy(image),
        "command": command,
        "args": args,
        "ports": ports,
        "env": _main_env(ws, preset),
        "resources": accelerator_resources(ws, plan),
        "volumeMounts": mounts,
        "startupProbe": _probe(STARTUP_PERIOD_SECONDS, startup_failures),
        "livenessProbe": _probe(10, 3),
        "readinessProbe": _probe(5, 3),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": _security_context(),
    }


def accelerator_resources(ws: "Workspace", plan: Plan) -> dict[str, Any]:
    """requests/limits of the server container: a MIG device of the partition's profile, else whole GPUs."""
    partition = ws.resource.partition
    if partition is not None and partition.mode == "mig":
        if not partition.profile:
            raise InvalidWorkspace(f"workspace {ws.name!r}: resource.partition.profile: mode mig needs a profile",
                                   hint='e.g. profile: "1g.10gb"')
        name, count = MIG_RESOURCE_PREFIX + partition.profile, "1"
    else:
        name, count = GPU_RESOURCE, str(plan.gpus_per_pod)
    return {"requests": {name: count}, "limits": {name: count}}


def _fetch_container(ws: "Workspace", preset: "Preset", image: str) -> dict[str, Any]:
    """The init container that downloads the pinned revision into the weights volume (kaitoctl_server.fetch).

    The token comes from the model-access Secret by reference, never as a literal; a failure
    is written as the container's termination message, which the rollout watch reports.
    """
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": "/tmp/huggingface"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "HOME", "value": "/tmp"},
    ]
    secret = ws.model_access_secret
    if secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": HF_TOKEN_KEY}}})
    return {
        "name": FETCH_CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy(image),
        "command": ["python", "-m", FETCH_MODULE],
        "args": ["--repo", preset.model_id, "--revision", preset.model_revision, "--dir", WEIGHTS_DIR],
        "env": sorted(env, key=lambda item: item["name"]),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": WEIGHTS_VOLUME, "mountPath": WEIGHTS_DIR}],
        "securityContext": _security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _volumes(ws: "Workspace", preset: Optional["Preset"] = None) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE}},
    ]
    if preset is not None and fetches_weights(ws, preset):
        volumes.append({"name": WEIGHTS_VOLUME, "emptyDir": {"sizeLimit": preset.disk}})
    if ws.inference_config:
        volumes.append({"name": CONFIG_VOLUME, "configMap": {
            "name": ws.inference_config, "items": [{"key": INFERENCE_CONFIG_KEY, "path": INFERENCE_CONFIG_KEY}]}})
    if ws.adapters:
        volumes.append({"name": ADAPTER_VOLUME, "emptyDir": {}})
        if any(not _volume_adapter(a) for a in ws.adapters):
            volumes.append({"name": TOOLS_VOLUME, "emptyDir": {"sizeLimit": TOOLS_SIZE}})
        volumes.extend({"name": ADAPTER_VOLUME_PREFIX + a.name, **copy.deepcopy(a.source.volumeSource)}  # type: ignore
                       for a in ws.adapters if _volume_adapter(a))
    return sorted(volumes, key=lambda item: item["name"])


def _preset_pod_template(ws: "Workspace", preset: "Preset", plan: Plan, registry: Optional[str],
                         config_data: Optional[str] = None) -> dict[str, Any]:
    image, preset_secrets = _model_image(ws, preset, registry)
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_ID,
            "runAsGroup": RUN_AS_ID,
            "fsGroup": RUN_AS_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": {"nodeAffinity": node_affinity(ws)},
        "tolerations": [dict(t) for t in GPU_TOLERATIONS],
    }
    secrets = _pull_secrets(ws, preset_secrets)
    if secrets:
        spec["imagePullSecrets"] = secrets
    init_containers = _adapter_init_containers(ws)
    if fetches_weights(ws, preset):
        init_containers.insert(0, _fetch_container(ws, preset, image))
    if init_containers:
        spec["initContainers"] = init_containers
    spec["containers"] = [_main_container(ws, preset, plan, image)]
    spec["volumes"] = _volumes(ws, preset)
    spec["terminationGracePeriodSeconds"] = TERMINATION_GRACE_SECONDS
    metadata: dict[str, Any] = {"labels": workspace_labels(ws)}
    if ws.inference_config and config_data is not None:
        metadata["annotations"] = {CONFIG_HASH_ANNOTATION: config_hash(config_data)}
    return {"metadata": metadata, "spec": spec}


def config_hash(text: str) -> str:
    """Short hash of the inference config's content: in the pod template, so a changed ConfigMap rolls out."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _own_image(ws: "Workspace") -> bool:
    """accessMode private: the user's image holds the weights; nothing is fetched."""
    spec = ws.inference.preset if ws.inference else None
    return spec is not None and spec.accessMode == "private"


def _statefulset(ws: "Workspace", pod_template: dict[str, Any]) -> dict[str, Any]:
    spec = {
        "replicas": ws.resource.count,
        "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
        "serviceName": f"{ws.name}-headless",
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": {WORKSPACE_LABEL: ws.name}},
        # The pods form one torchrun job: replace them together. Rolling one pod at a time would
        # wait for a new worker to become Ready while it cannot join the old master's running job.
        # (maxUnavailable is beta and on by default from Kubernetes 1.35; older servers ignore it.)
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
        "template": pod_template,
    }
    meta = _metadata(ws, ws.name, {ANNOTATION_WORKSPACE: canonical_json(ws.canonical())})
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta, "spec": spec}


def _render_preset(ws: "Workspace", plan: Plan, registry: Optional[str], config_data: Optional[str]) -> list[dict]:
    preset = _preset(ws)
    pod_template = _preset_pod_template(ws, preset, plan, registry, config_data)
    if preset.distributed:
        return [
            _service(ws, distributed=True, target_port=SERVER_PORT),
            _headless_service(ws),
            _statefulset(ws, pod_template),
        ]
    return [
        _service(ws, distributed=False, target_port=SERVER_PORT),
        _deployment(ws, plan, pod_template, preset.readiness_timeout_seconds),
    ]
