"""Validation: every rule of KAITO's webhook, plus what KAITO misses.

KAITO's rules (kaito-facts §2) keep KAITO's message text, so that users who
search for it find it; each message then says how to fix the problem. The
rules KAITO lacks (§2.6, §10) follow the same style. Every rule runs, and every
finding comes back at once, errors and warnings both: the caller decides what
fails (warnings only fail with ``--strict``).

Where kaitoctl deliberately differs from KAITO (docs/workspace.md lists them):
adapter checks run on create as well as update; GPU memory is compared exactly
in bytes; unknown instance types are a warning, not an error; all
matchExpressions operators are accepted and honoured; the workspace name must
work as a Service name.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, Optional

from kaitoctl import catalog
from kaitoctl.errors import InvalidWorkspace
from kaitoctl.loader import STDIN_NAME, Finding, LoadedDocument, Path, format_path, load_file, show_value
from kaitoctl.workspace import (API_VERSION_BETA, DEFAULT_INSTANCE_TYPE, DEPRECATED_IN_BETA, HF_TOKEN_KEY,
                                INFERENCE_CONFIG_KEY, MAX_ADAPTERS, Workspace)

# Kubernetes name grammars (k8s.io/apimachinery/pkg/util/validation).
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_MAX = 63
SUBDOMAIN_MAX = 253
# A StatefulSet's pods carry controller-revision-hash=<name>-<10-character hash>, a label value
# (at most 63 characters): a StatefulSet name longer than 52 characters cannot run pods.
STATEFULSET_NAME_MAX = 52
HEADLESS_SUFFIX = "-headless"
INT32_MAX = 2**31 - 1
# Kubernetes limits the annotations of one object to 256 KiB in total; the applied Workspace
# travels with its workload as an annotation holding its canonical JSON.
MAX_CANONICAL_BYTES = 256 * 1024 - 4 * 1024

# Image references (github.com/distribution/reference).
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_IMAGE_REF = re.compile(
    rf"^(?P<name>(?:(?P<domain>{_DOMAIN})/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_DECIMAL = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
# Fields of Kubernetes' ObjectMeta: anything else under metadata is a typo.
ADAPTER_VOLUME_PREFIX = "adapter-"  # kaitoctl.render names an adapter's own volume so
_OBJECT_META_FIELDS = (
    "name", "namespace", "labels", "annotations", "generateName", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "finalizers",
    "managedFields", "selfLink",
)


@dataclass
class _Context:
    """What every rule needs: the workspace, where its fields were written, and the findings so far."""

    ws: Workspace
    doc: Optional[LoadedDocument]
    raw: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    # The ConfigMaps and Secrets of the same file, by (kind, namespace or "", name); None: not from a file.
    companions: Optional[dict[tuple[str, str, str], dict[str, Any]]] = None
    max_model_len: Optional[int] = None  # from the file's inference config, when it sets one

    @property
    def dropped(self) -> frozenset[Path]:
        return self.doc.dropped if self.doc is not None else frozenset()

    def unread(self, path: Path) -> bool:
        """Whether the schema rejected something written at ``path``, inside it or above it.

        The model then holds a default or nothing there: a rule whose input
        this is would report a problem that is not in the file.
        """
        return any(path[:len(gone)] == gone or gone[:len(path)] == path for gone in self.dropped)

    def add(self, severity: Literal["error", "warning", "note"], path: Path, message: str, *, key: bool = False) -> None:
        if any(path[:len(gone)] == gone for gone in self.dropped):
            return  # the value there was rejected and reported by the loader; anything more is fallout
        if self.doc is not None:
            self.findings.append(self.doc.finding(severity, path, message, key=key))
        else:
            where = f"workspace/{self.ws.name}" if self.ws.name else "<workspace>"
            self.findings.append(Finding(severity, format_path(path), message, where, None, None))

    def error(self, path: Path, message: str, *, key: bool = False) -> None:
        self.add("error", path, message, key=key)

    def warning(self, path: Path, message: str, *, key: bool = False) -> None:
        self.add("warning", path, message, key=key)

    def note(self, path: Path, message: str, *, key: bool = False) -> None:
        """A remark that never fails: what would not carry over to KAITO itself."""
        self.add("note", path, message, key=key)

    def raw_at(self, path: Path) -> tuple[bool, Any]:
        """(written?, value) for ``path`` in the data as the user wrote it."""
        node: Any = self.raw
        for part in path:
            if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
                node = node[part]
            elif isinstance(part, str) and isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return False, None
        return True, node

    @property
    def preset(self) -> Optional[catalog.Preset]:
        name = self.ws.preset_name
        return catalog.presets().get(name) if name else None

    @property
    def sku(self) -> Optional[catalog.Sku]:
        return None if self.ws.byo_nodes else catalog.get_sku(self.ws.resource.instanceType)


# --------------------------------------------------------------------------------------------------
# Name helpers


def _bare(text: str) -> str:
    """A user's string inside a message without quotes (KAITO's style), shortened if huge."""
    return show_value(text, quote=False)


def _label_problem(name: str, *, what: str, dns1035: bool = False, max_len: int = LABEL_MAX,
                   purpose: str = "") -> Optional[str]:
    """Why ``name`` is not a DNS label (None when it is one), in words, with a suggestion."""
    if not name:
        return f"{what} must not be empty"
    problems = []
    if len(name) > max_len:
        problems.append(f"is {len(name)} characters long (at most {max_len})")
    pattern = _DNS1035_LABEL if dns1035 else _DNS1123_LABEL
    if not pattern.fullmatch(name):
        if name != name.lower():
            problems.append("contains upper-case letters")
        if re.search(r"[^A-Za-z0-9-]", name):
            problems.append("contains characters other than a-z, 0-9 and '-'")
        if dns1035 and not re.match(r"[A-Za-z]", name):
            problems.append("does not start with a letter")
        elif not re.match(r"[A-Za-z0-9]", name):
            problems.append("does not start with a letter or digit")
        if not re.search(r"[A-Za-z0-9]\Z", name):
            problems.append("does not end with a letter or digit")
    if not problems:
        return None
    kind = "DNS-1035 label" if dns1035 else "DNS-1123 label"
    rule = ("lower-case letters, digits and '-', starting with a letter and ending with a letter or digit"
            if dns1035 else "lower-case letters, digits and '-', starting and ending with a letter or digit")
    message = (f"{what} {show_value(name)} {', '.join(problems)}: it must be a {kind} ({rule}, at most "
               f"{max_len} characters){purpose}")
    suggestion = _suggest_label(name, dns1035=dns1035, max_len=max_len)
    if suggestion and suggestion != name:
        message += f"; for example {show_value(suggestion)}"
    return message


def _suggest_label(name: str, *, dns1035: bool, max_len: int) -> str:
    text = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    text = re.sub(r"^[^a-z0-9]+", "", text)
    if dns1035:
        text = re.sub(r"^[^a-z]+", "", text)
    return text[:max_len].rstrip("-")


def _qualified_name_problem(key: str) -> Optional[str]:
    """Why ``key`` is not a valid label or annotation key (None when it is)."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "the prefix before '/' must not be empty"
    if prefix and (len(prefix) > SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return f"the prefix {show_value(prefix)} must be a DNS subdomain (lower-case, e.g. example.com)"
    if not name or len(name) > LABEL_MAX or not _QUALIFIED_NAME.fullmatch(name):
        return ("the name part must be 1-63 characters of letters, digits, '-', '_' and '.', starting and ending "
                "with a letter or digit")
    return None


def _label_value_problem(value: str) -> Optional[str]:
    if len(value) > LABEL_MAX or not _LABEL_VALUE.fullmatch(value):
        return ("a label value must be at most 63 characters of letters, digits, '-', '_' and '.', starting and "
                "ending with a letter or digit (or empty)")
    return None


def _check_secret_names(ctx: _Context, path: Path, names: Optional[list[str]]) -> None:
    seen: set[str] = set()
    for i, secret in enumerate(names or []):
        if not secret or len(secret) > SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN.fullmatch(secret):
            ctx.error(path + (i,), f"image pull secret name {show_value(secret)} is not a valid Secret name (a DNS "
                                   "subdomain: lower-case letters, digits, '-' and '.')")
        elif secret in seen:
            ctx.warning(path + (i,), f"image pull secret {show_value(secret)} is listed twice")
        seen.add(secret)


def image_problem(ref: str) -> tuple[Optional[str], Optional[str]]:
    """(error, warning) for an image reference; both None when it is fine.

    Tags and digests are both accepted (KAITO's pattern refuses digests). A
    reference with neither gets a warning: it means ``:latest``, which moves.
    """
    if not ref or ref != ref.strip():
        return "image reference must not be empty or have surrounding spaces", None
    match = _IMAGE_REF.fullmatch(ref)
    if not match:
        hint = ""
        if re.search(r"[A-Z]", ref.split("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]):
            hint = ": repository names must be lower-case"
        elif "://" in ref:
            hint = ": give the reference without a scheme (no https://)"
        return (f"invalid image reference {show_value(ref)}{hint}; expected registry/repository:tag or "
                "registry/repository@sha256:<digest>"), None
    if len(match.group("name")) > 255:
        return f"image repository name is {len(match.group('name'))} characters long (at most 255)", None
    if not match.group("tag") and not match.group("digest"):
        return None, (f"image {show_value(ref)} has no tag or digest, so Kubernetes pulls :latest, which can change "
                      "under a running workspace: pin a tag or a digest")
    return None, None


# --------------------------------------------------------------------------------------------------
# Rules. Each takes the context and records findings; RULES runs them in order.


def _rule_top_level(ctx: _Context) -> None:
    # A section the schema rejected was still written: it counts as given.
    inference = ctx.ws.inference is not None or ctx.unread(("inference",))
    tuning = ctx.ws.tuning is not None or ctx.unread(("tuning",))
    if not inference and not tuning:
        ctx.error((), "Either Inference or Tuning must be specified, not neither: add an inference: section with a "
                      "preset (kaitoctl presets list) or a pod template")
    elif inference and tuning:
        ctx.error(("tuning",), "Either Inference or Tuning must be specified, but not both: remove tuning: "
                               "(kaitoctl runs inference workspaces only)", key=True)
    elif tuning:
        ctx.error(("tuning",), "tuning is not supported by kaitoctl: it runs inference workspaces only; run tuning "
                               "jobs with KAITO itself", key=True)


def _rule_version(ctx: _Context) -> None:
    """v1beta1's deprecated fields: accepted, with a note (KAITO still reads them)."""
    if ctx.ws.apiVersion != API_VERSION_BETA:
        return
    replacements = {
        "count": "one replica per Workspace is KAITO's v1beta1 direction; kaitoctl still runs count replicas",
        "preferredNodes": "select nodes with labelSelector instead",
        "accessMode": "public/private is decided by the image you give",
        "image": "kaitoctl still runs this image for accessMode: private",
        "imagePullSecrets": "kaitoctl still uses these pull secrets",
    }
    for path in DEPRECATED_IN_BETA:
        written, _ = ctx.raw_at(path)
        if written:
            ctx.note(path, f"{path[-1]} is deprecated in {API_VERSION_BETA} (still accepted): "
                           f"{replacements[str(path[-1])]}", key=True)


def _rule_metadata(ctx: _Context) -> None:
    from kaitoctl.render import API_KEY_SECRET_ANNOTATION

    ws, meta = ctx.ws, ctx.ws.metadata
    _, raw_meta = ctx.raw_at(("metadata",))
    for key in raw_meta if isinstance(raw_meta, dict) else ():
        if key not in _OBJECT_META_FIELDS:
            close = difflib.get_close_matches(key, _OBJECT_META_FIELDS, n=1, cutoff=0.6)
            hint = (f" (did you mean {close[0]}?)" if close
                    else ": valid fields are name, namespace, labels, annotations")
            ctx.error(("metadata", key), f"unknown field {show_value(key)}{hint}", key=True)
    if not meta.name:
        ctx.error(("metadata", "name"), "metadata.name is required: name the workspace (it names its Service and "
                                        "pods), e.g. workspace-falcon-7b")
    else:
        problem = _label_problem(meta.name, what="workspace name", dns1035=True,
                                 purpose=", because it names the workspace's Service and pods")
        if problem:
            ctx.error(("metadata", "name"), problem)
        preset = ctx.preset
        if not problem and preset is not None and preset.distributed and len(meta.name) > STATEFULSET_NAME_MAX:
            ctx.error(("metadata", "name"),
                      f"workspace name {show_value(meta.name)} is {len(meta.name)} characters long; preset "
                      f"{preset.name} is distributed and runs as a StatefulSet (with a headless Service "
                      f"{meta.name + HEADLESS_SUFFIX!r}), whose pods carry the label controller-revision-hash="
                      f"<name>-<hash>: the name can have at most {STATEFULSET_NAME_MAX} characters")
    if meta.namespace is not None:
        problem = _label_problem(meta.namespace, what="namespace")
        if problem:
            ctx.error(("metadata", "namespace"), problem)
    for key, value in (meta.labels or {}).items():
        problem = _qualified_name_problem(key)
        if problem:
            ctx.error(("metadata", "labels", key), f"invalid label key {show_value(key)}: {problem}", key=True)
        problem = _label_value_problem(value)
        if problem:
            ctx.error(("metadata", "labels", key),
                      f"invalid value {show_value(value)} for label {_bare(key)}: {problem}")
    for key, value in (meta.annotations or {}).items():
        problem = _qualified_name_problem(key)
        if problem:
            ctx.error(("metadata", "annotations", key), f"invalid annotation key {show_value(key)}: {problem}",
                      key=True)
        if key == API_KEY_SECRET_ANNOTATION and not _DNS1123_SUBDOMAIN.fullmatch(value):
            ctx.error(("metadata", "annotations", key), f"{key} must name a Secret in the workspace's namespace "
                                                        f"(a DNS subdomain), found {show_value(value)}")
        if key in _KAITO_ANNOTATIONS:
            _check_kaito_annotation(ctx, key, value)
        if key == "kaito.sh/enablelb" and value not in ("True", "False"):
            ctx.warning(("metadata", "annotations", key),
                        f"kaito.sh/enablelb is {show_value(value)}: KAITO makes the Service a LoadBalancer only for "
                        "the exact value \"True\"")
    if ws.inference is not None or ws.tuning is not None:
        size = len(json.dumps(ws.canonical(), separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if size > MAX_CANONICAL_BYTES:
            ctx.error((), f"the Workspace is {size} bytes as JSON: kaitoctl records the applied Workspace in an "
                          "annotation of its workload, and Kubernetes allows at most 256 KiB of annotations per "
                          f"object; keep it under {MAX_CANONICAL_BYTES} bytes")


# KAITO's annotations of today (kaito-2026-facts): allowed values (None: any), what kaitoctl does with them.
_KAITO_ANNOTATIONS: dict[str, tuple[Optional[tuple[str, ...]], str]] = {
    "kaito.sh/runtime": (("transformers", "vllm"), "kaitoctl always runs its bundled transformers server; vLLM engine "
                                                   "arguments of inference.config are listed as ignored"),
    "kaito.sh/performance-mode": (("balanced", "interactivity", "throughput"),
                                  "kaitoctl does not tune vLLM; set batching in inference.config instead"),
    "kaito.sh/bypass-resource-checks": (None, "kaitoctl's GPU fit stays an error at validate time; "
                                              "`kaitoctl apply --skip-preflight` skips the cluster check"),
    "kaito.sh/disable-benchmark": (None, "kaitoctl runs no benchmark at start"),
}


def _check_kaito_annotation(ctx: _Context, key: str, value: str) -> None:
    allowed, what = _KAITO_ANNOTATIONS[key]
    path: Path = ("metadata", "annotations", key)
    if allowed is not None and value not in allowed:
        ctx.error(path, f"{key} must be one of {', '.join(allowed)}, found {show_value(value)}")
    elif key != "kaito.sh/runtime" or value == "vllm":
        ctx.note(path, f"{key}: {what}")


def _rule_resource(ctx: _Context) -> None:
    res = ctx.ws.resource
    if res.count < 1:
        ctx.error(("resource", "count"), f"count must be at least 1, found {res.count}: it is the number of GPU nodes "
                                         "(and of replicas for presets that are not distributed)")
    elif res.count > INT32_MAX:
        ctx.error(("resource", "count"), f"count {res.count} is larger than Kubernetes' replica limit ({INT32_MAX})")
    written, _ = ctx.raw_at(("resource", "instanceType"))
    if not written:
        sku = catalog.get_sku(DEFAULT_INSTANCE_TYPE)
        what = f" ({sku.gpu_count} × {sku.gpu_model})" if sku else ""
        ctx.warning(("resource",), f"resource.instanceType is not set: KAITO's default {DEFAULT_INSTANCE_TYPE}{what} "
                                   "is assumed; set it to the instance type of your GPU nodes")
    elif not res.instanceType.strip():
        ctx.note(("resource", "instanceType"), "instanceType is empty: your own GPU nodes (no auto-provisioning); the "
                                               "GPU fit is checked by the preflight from the nodes' GPU Feature "
                                               "Discovery labels (nvidia.com/gpu.product, gpu.count, gpu.memory)")
    elif _label_value_problem(res.instanceType):
        ctx.error(("resource", "instanceType"),
                  f"instance type {show_value(res.instanceType)} cannot match any node: nodes carry it in the label "
                  f"node.kubernetes.io/instance-type, and {_label_value_problem(res.instanceType)}")
    elif ctx.sku is None:
        message = (f"instance type {show_value(res.instanceType)} is not in kaitoctl's catalog, so the GPU fit is "
                   "unchecked here (the preflight checks the nodes' GPUs against the cluster)")
        close = difflib.get_close_matches(res.instanceType, list(catalog.skus()), n=1, cutoff=0.85)
        lower = [name for name in catalog.skus() if name.lower() == res.instanceType.lower()]
        if lower or close:
            message += f"; did you mean {(lower or close)[0]}?"
        else:
            message += "; see kaitoctl skus list"
        ctx.warning(("resource", "instanceType"), message)
    _check_selector(ctx)
    _check_partition(ctx)
    seen: set[str] = set()
    for i, node in enumerate(res.preferredNodes or []):
        if not node or len(node) > SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN.fullmatch(node):
            ctx.error(("resource", "preferredNodes", i), f"{show_value(node)} is not a valid node name (a DNS "
                                                         "subdomain: lower-case letters, digits, '-' and '.')")
        elif node in seen:
            ctx.warning(("resource", "preferredNodes", i), f"node {show_value(node)} is listed twice")
        seen.add(node)


_MIG_PROFILE = r"[1-9][0-9]*g\.[1-9][0-9]*gb"  # compiled on first use: start-up never pays for it


def _check_partition(ctx: _Context) -> None:
    """resource.partition: a MIG profile or N whole GPUs, on your own nodes only (as KAITO)."""
    part = ctx.ws.resource.partition
    base: Path = ("resource", "partition")
    if part is None:
        return
    if not ctx.ws.byo_nodes:
        ctx.error(base, "partition needs your own nodes: set resource.instanceType to \"\" (KAITO allows a partition "
                        "only without auto-provisioning), or remove partition", key=True)
    preset = ctx.preset
    if preset is not None and preset.distributed:
        ctx.error(base, f"preset {preset.name} is distributed over several nodes (torchrun); a partition of one "
                        "node's GPUs cannot hold it: remove partition", key=True)
    if part.mode == "mig":
        if part.count is not None:
            ctx.error(base + ("count",), "count is for mode: accelerator; a MIG partition is one MIG device of the "
                                         "given profile: remove count")
        if not part.profile:
            ctx.error(base + ("profile",) if part.profile is not None else base,
                      "mode: mig needs a profile, e.g. profile: \"1g.10gb\" (requested as nvidia.com/mig-1g.10gb)")
        elif not re.fullmatch(_MIG_PROFILE, part.profile):
            ctx.error(base + ("profile",), f"MIG profile {show_value(part.profile)} is not of the form <n>g.<m>gb "
                                           "(e.g. 1g.10gb, 3g.40gb, 7g.80gb)")
        elif preset is not None and preset.total_gpu_memory_bytes:
            size = int(part.profile.split(".")[1][:-2]) * 10**9
            if size < preset.total_gpu_memory_bytes:
                ctx.error(base + ("profile",),
                          f"MIG profile {part.profile} has {part.profile.split('.')[1][:-2]} GB of GPU memory, but "
                          f"preset {preset.name} needs {preset.total_gpu_memory}: choose a larger profile or whole "
                          "GPUs (mode: accelerator)")
    else:
        if part.profile is not None:
            ctx.error(base + ("profile",), "profile is for mode: mig; mode: accelerator takes count (whole GPUs): "
                                           "remove profile")
        if part.count is None:
            ctx.error(base, "mode: accelerator needs count: the number of whole GPUs for the workload (at least 1)",
                      key=True)
        elif part.count < 1:
            ctx.error(base + ("count",), f"count must be at least 1, found {part.count}")


def _check_selector(ctx: _Context) -> None:
    selector = ctx.ws.resource.labelSelector
    base: Path = ("resource", "labelSelector")
    if selector is None:
        preset = ctx.ws.inference.preset if ctx.ws.inference is not None else None
        example = preset.name if preset is not None and preset.name else "my-gpus"
        ctx.error(base, "labelSelector is required (KAITO's CRD requires it): it selects the GPU nodes to run on, "
                        f"e.g. labelSelector: {{matchLabels: {{apps: {example}}}}}")
        return
    rejected = ctx.unread(base + ("matchLabels",)) or ctx.unread(base + ("matchExpressions",))
    if not selector.matchLabels and not selector.matchExpressions and not rejected:
        ctx.error(base, "labelSelector is empty: an empty selector matches every node in the cluster; add "
                        "matchLabels (or matchExpressions) that select your GPU nodes")
        return
    for key, value in (selector.matchLabels or {}).items():
        problem = _qualified_name_problem(key)
        if problem:
            ctx.error(base + ("matchLabels", key), f"invalid label key {show_value(key)}: {problem}", key=True)
        problem = _label_value_problem(value)
        if problem:
            ctx.error(base + ("matchLabels", key),
                      f"invalid value {show_value(value)} for label {_bare(key)}: {problem}")
    for i, expr in enumerate(selector.matchExpressions or []):
        path = base + ("matchExpressions", i)
        problem = _qualified_name_problem(expr.key)
        if problem:
            ctx.error(path + ("key",), f"invalid label key {show_value(expr.key)}: {problem}")
        values = expr.values or []
        if expr.operator in ("In", "NotIn") and not values:
            ctx.error(path + ("values",), f"values must be given (at least one) when operator is {expr.operator}")
        if expr.operator in ("Exists", "DoesNotExist") and expr.values is not None and values:
            ctx.error(path + ("values",), f"values must be empty when operator is {expr.operator}: remove them")
        for j, value in enumerate(values):
            problem = _label_value_problem(value)
            if problem:
                ctx.error(path + ("values", j), f"invalid value {show_value(value)}: {problem}")
        well_formed = bool(values) == (expr.operator in ("In", "NotIn"))
        if well_formed and not (expr.operator == "In" and len(values) == 1):
            ctx.note(path, f"matchExpressions with operator {expr.operator}"
                              f"{f' and {len(values)} values' if expr.operator == 'In' else ''} is honoured by "
                              "kaitoctl (node affinity and preflight), but KAITO's webhook rejects it (\"Only allow "
                              "matchLabels or 'IN' matchExpression\" with one value): not portable to KAITO")


def _rule_inference(ctx: _Context) -> None:
    inf = ctx.ws.inference
    if inf is None:
        return
    # A preset or template the schema rejected was still written: it counts as given.
    preset = inf.preset is not None or ctx.unread(("inference", "preset"))
    template = inf.template is not None or ctx.unread(("inference", "template"))
    if not preset and not template:
        ctx.error(("inference",), "Preset or Template must be specified: add inference.preset.name (see kaitoctl "
                                  "presets list) or an inference.template pod template")
    elif preset and template:
        ctx.error(("inference", "template"), "Preset and Template cannot be set at the same time: keep one of "
                                             "inference.preset and inference.template", key=True)
    if inf.preset is not None:
        _check_preset(ctx)
    if inf.template is not None:
        _check_template(ctx, inf.template)
        if not preset and inf.adapters:
            ctx.error(("inference", "adapters"), "adapters need a preset: with a custom pod template kaitoctl runs "
                                                 "your pod as written and cannot load adapters into it", key=True)


def _check_preset(ctx: _Context) -> None:
    spec = ctx.ws.inference.preset  # type: ignore[union-attr]
    assert spec is not None
    base: Path = ("inference", "preset")
    preset = ctx.preset
    if preset is None:
        names = list(catalog.presets())
        if not spec.name:
            message = "preset name must not be empty"
        else:
            message = f"Unsupported inference preset name {_bare(spec.name)}"
        lower = catalog.presets().get(spec.name.lower())
        close = [lower.name] if lower else difflib.get_close_matches(spec.name, names, n=1, cutoff=0.6)
        if close:
            message += f" (did you mean {close[0]}?)"
        ctx.error(base + ("name",), f"{message}; valid names: {', '.join(names)}")
        return
    options = spec.presetOptions
    image = options.image if options else None
    mode_known = not ctx.unread(base + ("accessMode",))  # a rejected accessMode reads as the default, public
    if mode_known and preset.access == "private" and spec.accessMode != "private":
        ctx.error(base + ("accessMode",),
                  "This preset only supports private AccessMode, AccessMode must be private to continue: "
                  f"{preset.name}'s weights are not redistributable; build its image, then set accessMode: private "
                  "and presetOptions.image")
    if spec.accessMode == "private":
        if not image:
            ctx.error(base + ("presetOptions", "image"),
                      "When AccessMode is private, an image must be provided in PresetOptions: set "
                      "presetOptions.image to the image you built (e.g. myregistry.azurecr.io/"
                      f"{preset.name}:0.0.3)")
    elif image and mode_known:
        ctx.warning(base + ("presetOptions", "image"),
                    "presetOptions.image is ignored when accessMode is public (as in KAITO): set accessMode: private "
                    "to run this image")
    if image:
        error, warning = image_problem(image)
        if error:
            ctx.error(base + ("presetOptions", "image"), error)
        elif warning:
            ctx.warning(base + ("presetOptions", "image"), warning)
    if options is not None:
        _check_secret_names(ctx, base + ("presetOptions", "imagePullSecrets"), options.imagePullSecrets)
    _check_model_access(ctx, preset)
    _check_architecture(ctx, preset)


def _check_model_access(ctx: _Context, preset: catalog.Preset) -> None:
    spec = ctx.ws.inference.preset  # type: ignore[union-attr]
    secret = ctx.ws.model_access_secret
    path: Path = ("inference", "preset", "presetOptions", "modelAccessSecret")
    if secret is not None and not _DNS1123_SUBDOMAIN.fullmatch(secret):
        ctx.error(path, f"modelAccessSecret must name a Secret in the workspace's namespace (a DNS subdomain), found "
                        f"{show_value(secret)}")
    own_image = spec is not None and spec.accessMode == "private"
    if preset.gated and preset.weights_at_start and not secret and not own_image:
        ctx.error(path if ctx.ws.inference.preset.presetOptions else ("inference", "preset"),  # type: ignore[union-attr]
                  f"preset {preset.name} downloads {preset.model_id} from Hugging Face when the pod starts, and that "
                  "repository is gated: set presetOptions.modelAccessSecret to a Secret whose key HF_TOKEN holds a "
                  "token of an account that accepted the model's license (kubectl create secret generic hf-token "
                  "--from-literal=HF_TOKEN=hf_...)")
    elif secret and not preset.gated:
        ctx.note(path, f"{preset.model_id} is not gated: the token is passed to the download but not needed")


def _check_architecture(ctx: _Context, preset: catalog.Preset) -> None:
    if not preset.architecture:
        return
    arch = catalog.architectures().get(preset.architecture)
    path: Path = ("inference", "preset", "name")
    if arch is None or not arch.served:
        reason = arch.reason if arch is not None else "kaitoctl's catalog does not know this architecture"
        ctx.error(path, f"preset {preset.name} is a {preset.architecture} model, which kaitoctl's server cannot "
                        f"serve: {reason}; pick a preset it serves (kaitoctl presets list) or run this one with KAITO")
        return
    sku = ctx.sku
    if arch.min_compute_capability and sku is not None and sku.vendor == "nvidia":
        gpu = catalog.get_gpu_model(sku.gpu_model)
        if gpu is not None and catalog.compute_capability(gpu.compute_capability) < \
                catalog.compute_capability(arch.min_compute_capability):
            ctx.error(("resource", "instanceType"),
                      f"preset {preset.name} ({preset.architecture}) cannot run on {sku.gpu_model} (compute "
                      f"capability {gpu.compute_capability}) of instance type {sku.name}: {arch.reason}; pick "
                      f"an instance type with GPUs of compute capability {arch.min_compute_capability} or newer "
                      f"({', '.join(_gpus_at_least(arch.min_compute_capability))}; kaitoctl skus list shows "
                      "each type's GPU model)")


def _gpus_at_least(capability: str) -> list[str]:
    """The catalog's GPU models of compute capability ``capability`` or newer."""
    floor = catalog.compute_capability(capability)
    return [g.name for g in catalog.gpu_models().values() if catalog.compute_capability(g.compute_capability) >= floor]


def _check_template(ctx: _Context, template: dict[str, Any]) -> None:
    """A light check of the pod template: enough that the Deployment built from it can be created."""
    base: Path = ("inference", "template")
    spec = template.get("spec")
    if not isinstance(spec, dict):
        ctx.error(base, "template must be a pod template with spec.containers (at least one container with a name "
                        "and an image)")
        return
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        ctx.error(base + ("spec",), "template.spec.containers must list at least one container (with a name and an "
                                    "image)")
        return
    for i, container in enumerate(containers):
        path = base + ("spec", "containers", i)
        if not isinstance(container, dict):
            ctx.error(path, "a container must be a mapping with a name and an image")
            continue
        name = container.get("name")
        if not isinstance(name, str) or not name:
            ctx.error(path, "container name is required")
        else:
            problem = _label_problem(name, what="container name")
            if problem:
                ctx.error(path + ("name",), problem)
        image = container.get("image")
        if not isinstance(image, str) or not image:
            ctx.error(path, "container image is required")
        else:
            error, warning = image_problem(image)
            if error:
                ctx.error(path + ("image",), error)
            elif warning:
                ctx.warning(path + ("image",), warning)


def _rule_adapters(ctx: _Context) -> None:
    adapters = ctx.ws.adapters
    base: Path = ("inference", "adapters")
    if len(adapters) > MAX_ADAPTERS:
        ctx.error(base, f"Number of Adapters exceeds the maximum limit, maximum of {MAX_ADAPTERS} allowed "
                        f"(found {len(adapters)})", key=True)
    seen: dict[str, int] = {}
    scaled: list[tuple[int, str]] = []  # adapters whose strength is not 1
    for i, adapter in enumerate(adapters):
        path = base + (i,)
        source = adapter.source
        if source is None:
            if not ctx.unread(path + ("source",)):
                ctx.error(path, "adapter has no source: give source.name and source.image")
        else:
            _check_adapter_source(ctx, path + ("source",), source)
            name = source.name or ""
            if name in seen:
                ctx.error(path + ("source", "name"), f"Duplicate adapter source name found: {_bare(name)} (also "
                                                     f"adapter {seen[name]}): adapter names must be unique")
            elif name:
                seen[name] = i
        name = source.name if source and source.name else str(i)
        value = _check_strength(ctx, path, adapter.strength, name)
        if value is not None and value != 1:
            scaled.append((i, name))
    if scaled:
        # One warning per workspace, not one per adapter: it is the same portability concern.
        others = [_bare(name) for _, name in scaled[1:]]
        ctx.note(base + (scaled[0][0], "strength"),
                 "strength is not portable to KAITO's vLLM runtime (it rejects adapter strength; KAITO's "
                    "transformers runtime and kaitoctl honour it)"
                    + (f"; also set on adapter{'s' if len(others) > 1 else ''} {', '.join(others)}" if others else ""))


def _check_adapter_source(ctx: _Context, path: Path, source: Any) -> None:
    name = source.name
    if not name:
        ctx.error(path + ("name",), "Name of Adapter field must be specified")
    else:
        problem = _label_problem(name, what="adapter name",
                                 purpose=", because it names the adapter's init container and its directory")
        if problem:
            ctx.error(path + ("name",), f"Name of Adapter must be a valid DNS subdomain value: {problem}")
        elif name == ctx.ws.name:
            ctx.error(path + ("name",), f"adapter name {show_value(name)} is the workspace's name, which the main "
                                        "container uses: rename the adapter")
        elif name in _reserved_container_names():
            ctx.error(path + ("name",), f"adapter name {show_value(name)} is reserved: kaitoctl names one of its own "
                                        "init containers so; rename the adapter")
    kinds = [k for k, v in (("urls", source.urls), ("volumeSource", source.volumeSource), ("image", source.image))
             if v is not None]
    if len(kinds) > 1:
        ctx.error(path, f"Exactly one of URLs, Volume, or Image must be specified (found {', '.join(kinds)}): "
                        "keep one of source.image and source.volumeSource")
    if source.volumeSource is not None:
        volume = source.volumeSource
        if len(volume) != 1 or not isinstance(next(iter(volume.values())), dict):
            ctx.error(path + ("volumeSource",), "volumeSource must be one Kubernetes volume source, e.g. "
                                                "{persistentVolumeClaim: {claimName: my-adapters}}; it is mounted at "
                                                f"/mnt/adapter/{name or '<name>'}", key=True)
        elif next(iter(volume)) == "emptyDir":
            ctx.error(path + ("volumeSource",), "an emptyDir holds no adapter files: use a volume with the adapter "
                                                "in it (a PersistentVolumeClaim, a CSI volume, ...)", key=True)
        if name and len(ADAPTER_VOLUME_PREFIX + name) > LABEL_MAX:
            ctx.error(path + ("name",), f"adapter name {show_value(name)} is too long for its volume "
                                        f"({ADAPTER_VOLUME_PREFIX}<name>, at most {LABEL_MAX} characters)")
    if source.urls is not None:
        ctx.error(path + ("urls",), "URL adapters are not supported (by KAITO either): package the adapter in an "
                                    "image under /data and set source.image, or put it on a volume and set "
                                    "source.volumeSource", key=True)
    if source.image is None:
        if not kinds and source.volumeSource is None:
            ctx.error(path + ("image",), "Image of Adapter field must be specified: the image that holds the adapter "
                                         "files under /data")
    else:
        _check_adapter_image(ctx, path + ("image",), source.image)
    _check_secret_names(ctx, path + ("imagePullSecrets",), source.imagePullSecrets)


def _reserved_container_names() -> tuple[str, ...]:
    """Container names the renderer uses itself (adapters' init containers are named after the adapters)."""
    from kaitoctl.render import COPY_TOOL_CONTAINER

    return (COPY_TOOL_CONTAINER,)


def _check_adapter_image(ctx: _Context, path: Path, image: str) -> None:
    if not image:
        ctx.error(path, "Image of Adapter field must be specified: the image that holds the adapter files under /data")
        return
    error, warning = image_problem(image)
    if error:
        ctx.error(path, error)
        return
    name = _IMAGE_REF.fullmatch(image).group("name")  # type: ignore[union-attr]
    if "/" not in name:
        ctx.error(path, f"Invalid image format, require full input image URL: {show_value(image)} has no registry or "
                        "repository path (it would be pulled from Docker Hub's library/); give the full reference, "
                        "e.g. myregistry.azurecr.io/adapters/my-adapter:0.0.1")
    elif warning:
        ctx.warning(path, warning)


def _check_strength(ctx: _Context, path: Path, strength: Optional[str], name: str) -> Optional[float]:
    """Check one adapter's strength; return its value when it is valid (None when omitted or invalid)."""
    spath = path + ("strength",)
    if strength is None:
        return None
    text = strength  # no stripping: KAITO (Go ParseFloat) rejects " 0.5 " too
    if not _DECIMAL.fullmatch(text):
        lowered = text.lower().lstrip("+-")
        if lowered in ("nan", "inf", "infinity", ".nan", ".inf"):
            ctx.error(spath, f"Strength value for Adapter '{_bare(name)}' must be between 0 and 1: "
                             f"{show_value(strength)} is not a finite number")
        else:
            ctx.error(spath, f"Invalid strength value for Adapter '{_bare(name)}': {show_value(strength)} is not a "
                             "number; write a number between 0 and 1 as a string, e.g. \"0.5\"")
        return None
    value = float(text)
    if not math.isfinite(value) or value < 0 or value > 1:
        ctx.error(spath, f"Strength value for Adapter '{_bare(name)}' must be between 0 and 1 (found "
                         f"{_bare(strength)}): it scales the adapter's weights, 1.0 applies them fully")
        return None
    written, raw = ctx.raw_at(spath)
    if written and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        ctx.warning(spath, f"strength is written as a YAML number; KAITO's CRD types it as a string: write "
                           f"strength: \"{_bare(strength)}\"")
    return value


def _rule_gpu_fit(ctx: _Context) -> None:
    """GPU count and memory of ``count`` nodes of the SKU against the preset, exactly in bytes.

    Distributed presets spread ``world_size`` processes over ``count`` nodes, so
    capacity adds up over nodes. Other presets run one whole copy of the model
    per replica, each on one node: a single node must hold it (KAITO multiplies
    by count there too, and by the GPU count a second time; both are wrong).
    """
    preset, sku, res = ctx.preset, ctx.sku, ctx.ws.resource
    if preset is None or res.count < 1:
        return
    if ctx.unread(("resource", "instanceType")) or (preset.distributed and ctx.unread(("resource", "count"))):
        return  # rejected, so read as its default: the arithmetic would be about another node pool
    path: Path = ("resource", "instanceType")
    if preset.distributed and preset.world_size % res.count:
        divisors = [d for d in range(1, preset.world_size + 1) if preset.world_size % d == 0]
        ctx.error(("resource", "count"),
                  f"preset {preset.name} runs {preset.world_size} processes (its world size), which cannot be split "
                  f"evenly over count {res.count} nodes: set count to one of {', '.join(map(str, divisors))}")
        return
    split = preset.tensor_parallel_problem(preset.world_size) if preset.distributed else None
    if split:
        ctx.error(("inference", "preset", "name"),
                  f"preset {split}: the catalog entry is inconsistent; "
                  "choose another preset or serve the model with a template")
    if sku is None:
        return
    if sku.vendor != "nvidia":
        ctx.error(path, f"instance type {sku.name} has {sku.gpu_model} accelerators, not NVIDIA GPUs: kaitoctl's "
                        "preset images need CUDA (nvidia.com/gpu); choose an NVIDIA instance type (kaitoctl skus list)")
        return
    nodes = res.count if preset.distributed else 1
    per_node_note = "" if preset.distributed or res.count == 1 else (
        f" (the preset is not distributed: each of the {res.count} replicas runs on one node)")
    gpus = nodes * sku.gpu_count
    if gpus < preset.gpu_count:
        ctx.error(path, f"Insufficient number of GPUs: Instance type {sku.name} provides {gpus}, but preset "
                        f"{preset.name} requires at least {preset.gpu_count}{per_node_note}: choose an instance type "
                        "with more GPUs" + (" or raise count" if preset.distributed else ""))
    elif preset.distributed:
        # Enough GPUs in total, but each node must also host its share of the processes.
        per_node = preset.world_size // res.count
        if per_node > sku.gpu_count:
            ctx.error(path, f"Insufficient number of GPUs per node: preset {preset.name} runs {preset.world_size} "
                            f"processes over {res.count} node(s), {per_node} per node, but instance type {sku.name} "
                            f"has {sku.gpu_count} GPU(s) per node: raise count or choose a larger instance type")
    if preset.per_gpu_memory_bytes and sku.gpu_memory_per_gpu_bytes < preset.per_gpu_memory_bytes:
        ctx.error(path, f"Insufficient per GPU memory: Instance type {sku.name} provides {sku.gpu_memory_per_gpu} per "
                        f"GPU, but preset {preset.name} requires at least {preset.per_gpu_memory} per GPU: choose an "
                        "instance type with larger GPUs")
    total = nodes * sku.gpu_memory_total_bytes
    if total < preset.total_gpu_memory_bytes:
        ctx.error(path, f"Insufficient total GPU memory: Instance type {sku.name} has a total of "
                        f"{catalog.format_bytes(total)}, but preset {preset.name} requires at least "
                        f"{preset.total_gpu_memory}{per_node_note}: choose an instance type with more GPU memory"
                        + (" or raise count" if preset.distributed else ""))


def _rule_context_fit(ctx: _Context) -> None:
    """Weights plus one full-context sequence's KV cache against the GPUs a pod gets.

    A note, not a warning: most of today's models have far more context than one GPU holds, and the
    server serves shorter prompts all the same; the note says how much fits and how to cap it.
    """
    preset, sku = ctx.preset, ctx.sku
    if preset is None or sku is None or not preset.kv_cache_bytes(1) or not preset.weight_bytes or preset.distributed:
        return
    if sku.gpu_memory_total_bytes < preset.total_gpu_memory_bytes:
        return  # already an error of the GPU fit
    tokens = min(preset.context_length, ctx.max_model_len or preset.context_length)
    # Room after the weights and 10% for activations and the CUDA context (today's presets' memory figure).
    room = max(0, sku.gpu_memory_total_bytes - preset.weight_bytes * 11 // 10)
    need = preset.kv_cache_bytes(tokens)
    if need > room:
        fits = room // preset.kv_cache_bytes(1)
        ctx.note(("resource", "instanceType"),
                    f"the KV cache of one {tokens}-token sequence of {preset.name} takes "
                    f"{catalog.format_bytes(need)}, but {sku.name} has {catalog.format_bytes(room)} left after the "
                    f"weights: about {fits} tokens of context fit; set max-model-len in the inference config "
                    "(inference.config) or choose larger GPUs")


def _rule_references(ctx: _Context) -> None:
    """The Secret and ConfigMap the workspace names: in the file (then checked here) or in the cluster."""
    from kaitoctl import companions

    namespace = ctx.ws.metadata.namespace or ""
    wanted = []
    if ctx.ws.model_access_secret:
        wanted.append(("Secret", ctx.ws.model_access_secret, HF_TOKEN_KEY,
                       ("inference", "preset", "presetOptions", "modelAccessSecret")))
    if ctx.ws.inference_config:
        wanted.append(("ConfigMap", ctx.ws.inference_config, INFERENCE_CONFIG_KEY, ("inference", "config")))
    for kind, name, key, path in wanted:
        # A ConfigMap/Secret without a namespace goes where the workspace goes (kaitoctl apply puts it there).
        obj = (ctx.companions or {}).get((kind, namespace, name)) or (ctx.companions or {}).get((kind, "", name))
        if obj is None:
            where = f"namespace {namespace}" if namespace else "the namespace it is applied to"
            ctx.note(path, f"{kind} {name} is not in this file: it must exist in {where} with the key {key} "
                           "(kaitoctl apply's preflight checks it)")
            continue
        if key not in companions.keys(obj):
            ctx.error(path, f"{kind} {name} (in this file) has no key {key}: add {key} to its "
                            f"{'stringData' if kind == 'Secret' else 'data'}")
            continue
        if kind == "ConfigMap":
            from kaitoctl.inference_config import interpret

            config = interpret(companions.text_value(obj, key) or "")
            for problem in config.errors:
                ctx.error(path, f"ConfigMap {name}: {problem}")
            for text in config.ignored:
                ctx.note(path, f"ConfigMap {name}: ignored by kaitoctl's server: {text}")
            if "KAITOCTL_MAX_MODEL_LEN" in config.settings:
                ctx.max_model_len = int(config.settings["KAITOCTL_MAX_MODEL_LEN"])
            if "KAITOCTL_TENSOR_PARALLEL_SIZE" in config.settings and ctx.preset is not None and ctx.sku is not None:
                from kaitoctl.plan import default_plan

                tp, gpus = int(config.settings["KAITOCTL_TENSOR_PARALLEL_SIZE"]), default_plan(ctx.ws).gpus_per_pod
                if tp != gpus:
                    ctx.warning(path, f"ConfigMap {name}: tensor-parallel-size is {tp}, but each pod gets {gpus} "
                                      f"GPU(s) on {ctx.sku.name}, over which kaitoctl's server spreads the model: "
                                      f"set tensor-parallel-size: {gpus} (or remove it)")


RULES: tuple[Callable[[_Context], None], ...] = (
    _rule_version,
    _rule_references,
    _rule_top_level,
    _rule_metadata,
    _rule_resource,
    _rule_inference,
    _rule_adapters,
    _rule_gpu_fit,
    _rule_context_fit,
)


def validate(ws: Workspace, doc: Optional[LoadedDocument] = None,
             companions: Optional[dict[tuple[str, str, str], dict[str, Any]]] = None) -> list[Finding]:
    """Run every rule on ``ws``; return all findings (errors and warnings), in file order.

    ``doc`` (from :func:`kaitoctl.loader.load_file`) supplies the file, line and
    column of each finding and the data as written; without it, findings carry
    only the field path.
    """
    raw = doc.data if doc is not None and isinstance(doc.data, dict) else ws.model_dump(exclude_unset=True)
    ctx = _Context(ws, doc, raw, companions=companions)
    for rule in RULES:
        rule(ctx)
    return _in_file_order(ctx.findings)


def _in_file_order(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.line or 0, f.column or 0))


def summary(ws: Workspace) -> str:
    """One line for a valid workspace.

    ``workspace/NAME valid: preset falcon-7b, 1 × Standard_NC12s_v3, 2 adapters``
    """
    what = f"preset {ws.preset_name}" if ws.preset_name else "custom pod template"
    count = len(ws.adapters)
    adapters = f", {count} adapter{'s' if count != 1 else ''}" if count else ""
    namespace = f" (namespace {ws.metadata.namespace})" if ws.metadata.namespace else ""
    return f"workspace/{ws.name} valid{namespace}: {what}, {ws.resource.count} × {ws.resource.instanceType}{adapters}"


def print_warning(finding: Finding) -> None:
    """The default ``warn`` of :func:`load_workspaces`: one line on stderr."""
    from kaitoctl.output import stderr_console

    stderr_console().print(f"kaitoctl: {finding.format()}", markup=False)


@dataclass
class Report:
    """Everything ``kaitoctl validate`` learnt about one file."""

    file: str
    documents: list[LoadedDocument]
    findings: dict[int, list[Finding]]  # by document index

    @property
    def all_findings(self) -> list[Finding]:
        return [f for doc in self.documents for f in self.findings[doc.index]]

    def failing(self, strict: bool) -> list[Finding]:
        return [f for f in self.all_findings if fails(f, strict)]

    @property
    def workspaces(self) -> list[Workspace]:
        return [d.workspace for d in self.documents if d.workspace is not None]

    @property
    def companions(self) -> list[dict[str, Any]]:
        """The file's ConfigMaps and Secrets, in file order."""
        return [d.companion for d in self.documents if d.companion is not None]


def fails(finding: Finding, strict: bool) -> bool:
    """Errors always fail; warnings with --strict; notes never."""
    return finding.severity == "error" or (strict and finding.severity == "warning")


def check_file(path: str) -> Report:
    """Load and validate every document of ``path``; collect every finding without raising."""
    return check_documents(load_file(path), path)


def check_documents(documents: list[LoadedDocument], path: str = STDIN_NAME) -> Report:
    """Validate documents already loaded (e.g. by :func:`kaitoctl.loader.load_text`), as :func:`check_file` does."""
    from kaitoctl import companions as comp

    findings: dict[int, list[Finding]] = {}
    seen: dict[tuple[str, str], int] = {}
    objects: dict[tuple[str, str, str], dict[str, Any]] = {}
    named: set[tuple[str, str, str]] = set()
    for doc in documents:
        if doc.companion is not None:
            ref = comp.ref(doc.companion)
            if ref in objects:
                doc.findings.append(doc.finding("error", ("metadata", "name"), f"{ref[0]} {ref[2]} is defined twice "
                                                                               "in this file: keep one"))
            objects.setdefault(ref, doc.companion)
    for doc in documents:
        found = list(doc.findings)
        ws = doc.draft  # even when the schema rejected parts: the rules report the rest
        if ws is not None:
            found.extend(validate(ws, doc, objects))
            namespace = ws.metadata.namespace or ""
            for ns in {namespace, ""}:
                named.update({("Secret", ns, ws.model_access_secret or ""), ("ConfigMap", ns, ws.inference_config or "")})
            key = (ws.metadata.namespace or "", ws.name)
            namespace_known = not doc.dropped & {("metadata",), ("metadata", "namespace")}
            if ws.name and namespace_known and key in seen:
                found.append(doc.finding("error", ("metadata", "name"),
                                         f"workspace {ws.name} is defined twice in this file (documents "
                                         f"{seen[key] + 1} and {doc.index + 1}): give each a different name"))
            seen.setdefault(key, doc.index)
        findings[doc.index] = _in_file_order(found)
    for doc in documents:
        if doc.companion is not None and comp.ref(doc.companion) not in named:
            kind, _, name = comp.ref(doc.companion)
            findings[doc.index].append(doc.finding("note", (), f"{kind} {name} is not named by a Workspace of this "
                                                               "file: kaitoctl applies it with them all the same"))
    return Report(documents[0].file if documents else path, documents, findings)


def raise_for(report: Report, *, strict: bool = False) -> None:
    """Raise InvalidWorkspace listing every failing finding of every document (no-op when none fail)."""
    failing = report.failing(strict)
    if not failing:
        return
    errors = sum(f.severity == "error" for f in failing)
    warnings = len(failing) - errors
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''} (--strict makes warnings fail)")
    again = "-" if report.file == STDIN_NAME else report.file
    if not report.workspaces and all(f.line is None for f in failing):
        # Nothing could be read at all (no file, a directory, an empty file): no fields to fix.
        raise InvalidWorkspace(f"cannot read a Workspace from {report.file}", details=[f.format() for f in failing])
    raise InvalidWorkspace(
        f"{report.file} is not a valid Workspace file: {' and '.join(parts)}",
        details=[f.format() for f in failing],
        hint=f"fix the fields listed above, then run: kaitoctl validate -f {again}",
    )


def load_workspaces(path: str, *, strict: bool = False,
                    warn: Callable[[Finding], None] = print_warning) -> list[Workspace]:
    """Load and validate every document of ``path`` (``-`` for stdin): the entry point of every command.

    Raises InvalidWorkspace listing ALL errors of ALL documents (and the
    warnings too when ``strict``). Otherwise passes each warning to ``warn``
    and returns the workspaces in file order.
    """
    report = check_file(path)
    raise_for(report, strict=strict)
    for finding in report.all_findings:
        if finding.severity == "warning":
            warn(finding)
    return report.workspaces


def load_objects(path: str, *, strict: bool = False, warn: Callable[[Finding], None] = print_warning
                 ) -> tuple[list[Workspace], list[dict[str, Any]]]:
    """:func:`load_workspaces`, plus the file's ConfigMaps and Secrets (in file order)."""
    report = check_file(path)
    raise_for(report, strict=strict)
    for finding in report.all_findings:
        if finding.severity == "warning":
            warn(finding)
    return report.workspaces, report.companions


def config_data(ws: Workspace, objects: list[dict[str, Any]]) -> Optional[str]:
    """The content of the inference config ConfigMap ``ws`` names, when ``objects`` (the file) holds it."""
    from kaitoctl import companions

    if not ws.inference_config:
        return None
    refs = {("ConfigMap", ws.metadata.namespace or "", ws.inference_config), ("ConfigMap", "", ws.inference_config)}
    for obj in objects:
        if companions.ref(obj) in refs:
            return companions.text_value(obj, INFERENCE_CONFIG_KEY)
    return None


def check_workspace(ws: Workspace, *, strict: bool = False,
                    warn: Callable[[Finding], None] = print_warning) -> None:
    """Validate a Workspace built in code (e.g. after ``adapters update`` edits one); raise like load_workspaces."""
    findings = validate(ws)
    failing = [f for f in findings if fails(f, strict)]
    if failing:
        raise InvalidWorkspace(f"workspace {ws.name or '<unnamed>'} is not valid",
                               details=[f.format() for f in failing])
    for finding in findings:
        if finding.severity == "warning":
            warn(finding)


__all__ = [
    "Finding", "LoadedDocument", "Report", "validate", "load_workspaces", "load_objects", "config_data", "check_file", "check_documents",
    "check_workspace", "raise_for", "fails", "summary", "image_problem", "print_warning",
]
