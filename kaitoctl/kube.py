"""The one module that talks to the Kubernetes API.

Everything else in kaitoctl works on plain dicts (the JSON the API server
sends) and takes a :class:`Kube` when it needs the cluster, so it can be tested
with fixtures. This module:

- resolves the connection as kubectl does: ``--kubeconfig``, else ``$KUBECONFIG``
  (a path list, merged), else ``~/.kube/config``, else the in-cluster service
  account; ``--context`` picks the context; the namespace is ``-n``, else the
  context's, else ``default``;
- makes typed calls (list/get/apply/delete/watch/log per kind, from the
  :data:`KINDS` table) through the official client's ``ApiClient``, which does
  the authentication (tokens, client certificates, exec plugins), TLS and
  proxies, and reads the responses as JSON dicts. The generated ``CoreV1Api``
  and ``AppsV1Api`` classes are not used: importing them builds about a
  thousand pydantic models (over a second on every command), and their
  model objects would only be converted back to dicts;
- does server-side apply (PATCH ``application/apply-patch+yaml`` with the field
  manager ``kaitoctl``; dry run and force on request), because the typed client
  has no first-class apply (kubernetes-client/python#1430);
- watches with resume: the stream is re-opened from the last resourceVersion
  when the server or the network drops it, and a 410 Gone turns into a relist;
- turns every API or transport error into :mod:`kaitoctl.errors` types with a
  message that says what was refused, why, and what would fix it.

The ``kubernetes`` package is imported here only, and only inside functions,
so that the offline commands never load it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence
from urllib.parse import quote

from kaitoctl.errors import ClusterError, Conflict, NotFound

FIELD_MANAGER = "kaitoctl"
DEFAULT_NAMESPACE = "default"
IN_CLUSTER_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

# (connect, read) seconds for ordinary requests. Watches use their own read timeout.
REQUEST_TIMEOUT = (10.0, 60.0)
# A watch stream is re-opened after this long even when the server keeps it open:
# it bounds how stale a silently broken connection can make the view.
WATCH_SECONDS = 240
# Resuming after a dropped stream: attempts before the error is given to the caller.
WATCH_RETRIES = 5
# Backoff between reopened watches: the cap of the exponential delay, and of a server's Retry-After.
BACKOFF_CAP = 5.0
MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True)
class ResourceKind:
    """What kaitoctl needs to know to call the API for one kind."""

    kind: str
    plural: str
    group: str          # "" for the core group
    version: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """``deployments.apps``, ``pods``: how kubectl and RBAC messages name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def display(self) -> str:
        """``deployment.apps``, ``service``: how kubectl prints an object's kind."""
        singular = self.kind.lower()
        return f"{singular}.{self.group}" if self.group else singular

    def rbac_rule(self, verb: str) -> str:
        return f'apiGroups: ["{self.group}"], resources: ["{self.plural}"], verbs: ["{verb}"]'

    def path(self, namespace: Optional[str] = None, name: Optional[str] = None,
             subresource: Optional[str] = None) -> str:
        """The REST path: ``/apis/apps/v1/namespaces/ns/deployments/x``; no namespace = all namespaces."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        out = f"{base}/{self.plural}"
        if name is not None:
            out += f"/{quote(name, safe='')}"
        if subresource:
            out += f"/{subresource}"
        return out


KINDS: dict[str, ResourceKind] = {
    k.kind: k
    for k in (
        ResourceKind("Namespace", "namespaces", "", "v1", False),
        ResourceKind("Node", "nodes", "", "v1", False),
        ResourceKind("Pod", "pods", "", "v1", True),
        ResourceKind("Event", "events", "", "v1", True),
        ResourceKind("Service", "services", "", "v1", True),
        ResourceKind("Secret", "secrets", "", "v1", True),
        ResourceKind("ConfigMap", "configmaps", "", "v1", True),
        ResourceKind("Deployment", "deployments", "apps", "v1", True),
        ResourceKind("StatefulSet", "statefulsets", "apps", "v1", True),
        ResourceKind("ReplicaSet", "replicasets", "apps", "v1", True),
    )
}


def kind_of(kind: str) -> ResourceKind:
    """The :class:`ResourceKind` for ``kind`` (``Deployment``); a bug if kaitoctl asks for another."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"kaitoctl does not handle kind {kind!r}") from None


def object_ref(obj: dict[str, Any]) -> str:
    """``deployment.apps/falcon``: an object as kubectl names it in its output."""
    spec = KINDS.get(obj.get("kind", ""))
    name = (obj.get("metadata") or {}).get("name", "?")
    return f"{spec.display if spec else str(obj.get('kind', '?')).lower()}/{name}"


# --------------------------------------------------------------------------------------------
# Connection


@dataclass(frozen=True)
class Connection:
    """Where kaitoctl talks to, resolved from flags, kubeconfig or the service account."""

    server: str
    namespace: str
    context: Optional[str]      # None in-cluster
    source: str                 # the kubeconfig path(s), or "in-cluster"


def _kubeconfig_paths(explicit: Optional[Path]) -> tuple[str, bool]:
    """The kubeconfig path list as kubectl picks it, and whether a file there exists."""
    if explicit is not None:
        return str(explicit), Path(explicit).expanduser().exists()
    env = os.environ.get("KUBECONFIG")
    if env:
        paths = [p for p in env.split(os.pathsep) if p]
        return env, any(Path(p).expanduser().exists() for p in paths)
    default = str(Path("~/.kube/config").expanduser())
    return default, Path(default).exists()


def connect(kubeconfig: Optional[Path] = None, context: Optional[str] = None,
            namespace: Optional[str] = None) -> "Kube":
    """A :class:`Kube` for the cluster the flags name, resolved as kubectl resolves it."""
    import yaml
    from kubernetes import client as k8s_client
    from kubernetes.config import incluster_config, kube_config
    from kubernetes.config.config_exception import ConfigException

    configuration = k8s_client.Configuration()
    paths, exists = _kubeconfig_paths(kubeconfig)
    in_cluster = (not exists and kubeconfig is None and context is None
                  and bool(os.environ.get("KUBERNETES_SERVICE_HOST")))
    if in_cluster:
        try:
            incluster_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ClusterError(f"cannot use the in-cluster service account: {exc}") from exc
        ns = namespace
        if not ns:
            try:
                ns = Path(IN_CLUSTER_NAMESPACE_FILE).read_text(encoding="utf-8").strip()
            except OSError:
                ns = DEFAULT_NAMESPACE
        conn = Connection(server=configuration.host, namespace=ns or DEFAULT_NAMESPACE, context=None,
                          source="in-cluster")
        return _client(k8s_client, configuration, conn)

    if not exists:
        where = f"--kubeconfig {paths}" if kubeconfig is not None else (
            f"KUBECONFIG={paths}" if os.environ.get("KUBECONFIG") else paths)
        raise ClusterError(
            f"no Kubernetes configuration found: {where} does not exist",
            hint="pass --kubeconfig PATH, set KUBECONFIG, or run inside a pod with a service account",
        )
    try:
        merged = kube_config.KubeConfigMerger(paths)
        if merged.config is None:
            raise ConfigException("no configuration found")
        contexts = [c["name"] for c in (merged.config.value.get("contexts") or [])]
        if context is not None and context not in contexts:
            raise ClusterError(
                f"context {context!r} not found in {paths}",
                hint=f"known contexts: {', '.join(contexts) or '(none)'}",
            )
        loader = kube_config.KubeConfigLoader(config_dict=merged.config, active_context=context)
        loader.load_and_set(configuration)
        active = loader.current_context
    except ClusterError:
        raise
    except yaml.YAMLError as exc:  # the parser's whole message: what it expected, with file, line and column
        raise ClusterError(
            f"cannot use the kubeconfig {paths}: it is not valid YAML",
            details=[line for line in str(exc).splitlines() if line.strip()],
            hint="fix the file at the line and column above (`kubectl config view` shows how kubectl reads it), "
                 "or pass another --kubeconfig",
        ) from exc
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterError(
            f"cannot use the kubeconfig {paths}: {exc}",
            hint="check the file with `kubectl config view`, or pass --kubeconfig / --context",
        ) from exc
    ctx_ns = ((active or {}).get("context") or {}).get("namespace") if active else None
    conn = Connection(
        server=configuration.host,
        namespace=namespace or ctx_ns or DEFAULT_NAMESPACE,
        context=(active or {}).get("name") if active else context,
        source=paths,
    )
    return _client(k8s_client, configuration, conn)


def _client(k8s_client: Any, configuration: Any, conn: Connection) -> "Kube":
    import atexit

    configuration.retries = 1  # a refused connection is reported at once, not after urllib3's 3 retries
    kube = Kube(k8s_client.ApiClient(configuration), conn)
    atexit.register(kube.close)
    return kube


# --------------------------------------------------------------------------------------------
# Errors


def _status_body(body: Any) -> dict[str, Any]:
    """The ``Status`` object the API server sent with an error, or {}."""
    if not body:
        return {}
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return {"message": str(body)[:500]}
    return data if isinstance(data, dict) else {}


def _where(name: Optional[str], namespace: Optional[str]) -> str:
    parts = []
    if name:
        parts.append(f'"{name}"')
    if namespace:
        parts.append(f'in namespace "{namespace}"')
    return (" " + " ".join(parts)) if parts else ""


def http_status(err: BaseException) -> int:
    """The HTTP status behind a kaitoctl error from this module (0 when there was no answer)."""
    return int(getattr(err, "http_status", 0) or 0)


def retry_after(err: BaseException) -> Optional[float]:
    """Seconds the server asked to wait before retrying (its ``Retry-After`` header), if it said."""
    return getattr(err, "retry_after", None)


def _retry_after(value: Any) -> Optional[float]:
    try:
        return max(0.0, float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def is_transient(err: BaseException) -> bool:
    """A failure worth retrying: throttled (429), a server or webhook error (5xx), or no answer at all."""
    status = http_status(err)
    return status == 429 or status >= 500 or (status == 0 and isinstance(err, ClusterError))


def is_forbidden(err: BaseException) -> bool:
    return http_status(err) in (401, 403)


def api_error(status: int, raw_body: Any, verb: str, spec: ResourceKind, name: Optional[str],
              namespace: Optional[str], server: str, reason: str = "") -> ClusterError:
    """The kaitoctl error for an HTTP ``status`` answered to ``verb`` on ``spec`` (``http_status`` set)."""
    err = _api_error(status, raw_body, verb, spec, name, namespace, server, reason)
    err.http_status = status  # type: ignore[attr-defined]
    return err


def not_an_api_server(server: str, what: str, status: int, raw_body: Any) -> ClusterError:
    """What answered is not a Kubernetes API server: kaitoctl's resources all answer JSON there."""
    if isinstance(raw_body, bytes):
        raw_body = raw_body.decode("utf-8", errors="replace")
    said = " ".join(str(raw_body or "").split())[:200] or "(an empty body)"
    return ClusterError(
        f"the server at {server} is not a Kubernetes API server: asked to {what}, it answered HTTP {status} "
        "with something other than Kubernetes' JSON",
        details=[f"server said: {said}"],
        hint="check `clusters[].cluster.server` of the kubeconfig's current context (or pick another with "
             "--context / --kubeconfig); `kubectl version` shows what answers there",
    )


def _is_kubernetes_status(raw_body: Any) -> bool:
    """Whether ``raw_body`` is a JSON ``Status`` object, as every error of the API server is for these resources."""
    try:
        data = json.loads(raw_body) if raw_body else None
    except (TypeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == "Status"


def _api_error(status: int, raw_body: Any, verb: str, spec: ResourceKind, name: Optional[str],
               namespace: Optional[str], server: str, reason: str) -> ClusterError:
    if status == 404 and not _is_kubernetes_status(raw_body):
        # The API server answers a missing object with a NotFound Status; a bare 404 (an HTML page,
        # "404 page not found") means the path is not served: not a Kubernetes API, or a wrong URL prefix.
        return not_an_api_server(server, f"{verb} {spec.resource}{_where(name, namespace)}", status, raw_body)
    body = _status_body(raw_body)
    server_msg = body.get("message") or reason or "no message"
    what = f"{verb} {spec.resource}{_where(name, namespace)}"
    details = [f"server said: {server_msg}"]
    if status == 401:
        return ClusterError(
            f"unauthorized: the API server at {server} did not accept kaitoctl's credentials to {what}",
            details=details,
            hint="refresh your credentials (log in again, or renew the token in the kubeconfig), "
                 "or pick another --context",
        )
    if status == 403:
        return _forbidden(body, server_msg, what, verb, spec, namespace, details)
    if status == 404:
        missing = body.get("details") or {}
        if missing.get("kind") == "namespaces" and namespace and missing.get("name", namespace) == namespace:
            return missing_namespace(namespace, details)
        return NotFound(f"{spec.display}{'/' + name if name else ''} not found"
                        f"{' in namespace ' + repr(namespace) if namespace else ''}", details=details)
    if status == 429:
        return ClusterError(f"the API server at {server} is throttling requests: cannot {what} (429)",
                            details=details, hint="the cluster is busy (API priority and fairness); retry shortly")
    if status == 409:
        causes = (body.get("details") or {}).get("causes") or []
        owned = [c for c in causes if (c.get("reason") or c.get("type")) == "FieldManagerConflict"]
        if owned:
            lines = [f"{c.get('field', '?')}: {c.get('message', '')}" for c in owned]
            return Conflict(
                f"server-side apply conflict on {spec.display}/{name}: "
                f"{len(owned)} field(s) are owned by another field manager",
                details=lines,
                hint="rerun with --force-conflicts to let kaitoctl take these fields over "
                     "(the other manager's values are replaced), or change them back with the tool that set them",
            )
        return Conflict(f"conflict: cannot {what}", details=details,
                        hint="the object changed or is being deleted; try again in a moment")
    if status == 422:
        causes = (body.get("details") or {}).get("causes") or []
        lines = [f"{c.get('field') or '(object)'}: {c.get('message') or c.get('reason', '')}" for c in causes]
        return ClusterError(
            f"the API server rejected {spec.display}/{name} as invalid",
            details=lines or details,
            hint="an admission policy or a newer API schema refused it; `kaitoctl render -f FILE` shows "
                 "what was sent",
        )
    if status == 410:
        return ClusterError(f"cannot {what}: the requested resourceVersion is too old (410 Gone)", details=details)
    if status >= 500:
        return ClusterError(f"the API server at {server} failed to {what} (HTTP {status})", details=details,
                            hint="the server or an admission webhook is failing; retry, or ask the cluster admin")
    return ClusterError(f"cannot {what}: HTTP {status or '?'}", details=details)


def _forbidden(body: dict[str, Any], server_msg: str, what: str, verb: str, spec: ResourceKind,
               namespace: Optional[str], details: list[str]) -> ClusterError:
    """A 403: RBAC only when the server says so; terminating namespaces, quotas and webhooks answer 403 too."""
    causes = [c.get("reason") or c.get("type") for c in (body.get("details") or {}).get("causes") or []]
    lower = server_msg.lower()
    if "namespacetermination" in " ".join(map(str, causes)).lower() or "being terminated" in lower:
        return ClusterError(f"namespace {namespace!r} is being deleted: cannot {what}", details=details,
                            hint="wait until it is gone and create it again, or use another namespace")
    if "exceeded quota" in lower or "resourcequota" in lower:
        return ClusterError(f"a ResourceQuota refused it: cannot {what}", details=details,
                            hint="`kubectl describe resourcequota -n NAMESPACE` shows the limits; free capacity "
                                 "or ask for a larger quota")
    if "admission webhook" in lower or "denied the request" in lower:
        return ClusterError(f"an admission webhook refused it: cannot {what}", details=details,
                            hint="the webhook's message above says which policy; change the workspace to meet it "
                                 "or ask its owner")
    if " cannot " not in lower and any(word in lower for word in ("validatingadmissionpolicy", "denied request",
                                                                   "violates", "limitrange", "maximum", "minimum")):
        return ClusterError(f"an admission policy refused it: cannot {what}", details=details,
                            hint="the policy's message above says what it requires; change the workspace to meet it "
                                 "or ask the cluster admin")
    scope = "ClusterRole" if not spec.namespaced else "Role (or ClusterRole)"
    return ClusterError(
        f"forbidden: you may not {what}",
        details=details + [f"RBAC rule that would allow it ({scope}): {spec.rbac_rule(verb)}"],
        hint="ask a cluster admin to grant it; docs/cluster.md has the Role kaitoctl needs",
    )


def missing_namespace(namespace: str, details: Sequence[str] = ()) -> NotFound:
    """The error for a namespace that does not exist (``missing_namespace`` set on it)."""
    err = NotFound(f"namespace {namespace!r} not found", details=details,
                   hint=f"create it (`kubectl create namespace {namespace}`), or pick another with -n")
    err.missing_namespace = namespace  # type: ignore[attr-defined]
    return err


def namespace_missing(kube: "Kube", namespace: str) -> Optional[NotFound]:
    """The missing-namespace error when ``namespace`` does not exist; None when it does or cannot be told."""
    try:
        kube.get("Namespace", namespace)
    except NotFound:
        return missing_namespace(namespace)
    except ClusterError:
        return None   # e.g. no RBAC to get namespaces: say nothing more
    return None


def transport_error(exc: BaseException, server: str) -> ClusterError:
    """The kaitoctl error for a connection, TLS or timeout failure talking to ``server``."""
    import ssl

    import urllib3.exceptions as ux

    reason: BaseException = getattr(exc, "reason", None) or exc
    text = str(reason)
    if isinstance(reason, (ux.SSLError, ssl.SSLError)) or "CERTIFICATE" in text.upper() or "SSL" in text.upper():
        return ClusterError(
            f"TLS error talking to the API server at {server}",
            details=[text],
            hint="the server certificate is not trusted by the kubeconfig's certificate-authority, or the "
                 "address is wrong; check `clusters[].cluster` in the kubeconfig",
        )
    if "refused" in text.lower():
        return ClusterError(
            f"cannot reach the API server at {server}: connection refused",
            hint="is the cluster running, and is this the right --context / kubeconfig?",
        )
    timeout_types = (ux.TimeoutError, TimeoutError)
    # NewConnectionError subclasses ConnectTimeoutError in urllib3, but a DNS failure is no timeout.
    if "timed out" in text.lower() or (isinstance(reason, timeout_types)
                                       and not isinstance(reason, ux.NewConnectionError)):
        return ClusterError(
            f"timed out talking to the API server at {server}",
            details=[text],
            hint="the server is slow or unreachable from here (VPN? firewall?)",
        )
    return ClusterError(
        f"cannot reach the API server at {server}",
        details=[text],
        hint="check the address in the kubeconfig and your network",
    )


# --------------------------------------------------------------------------------------------
# The client


class WatchExpired(Exception):
    """The resourceVersion a watch started from is gone (410): relist."""


@dataclass(frozen=True)
class WatchEvent:
    """One change seen by an :class:`Informer`.

    ``type`` is ADDED, MODIFIED or DELETED (``obj`` set), or SYNC: the complete
    current list (``items`` set), sent first and again after every relist, which
    replaces whatever the consumer held.
    """

    type: str
    kind: str
    obj: Optional[dict[str, Any]] = None
    items: Optional[list[dict[str, Any]]] = None


class Kube:
    """Typed calls on one cluster, returning plain dicts. Safe to use from several threads."""

    def __init__(self, api_client: Any, connection: Connection) -> None:
        self._client = api_client
        self.connection = connection

    @property
    def namespace(self) -> str:
        return self.connection.namespace

    @property
    def server(self) -> str:
        return self.connection.server

    def close(self) -> None:
        """Close pooled connections (the server sees an orderly end, not a reset)."""
        try:
            self._client.rest_client.pool_manager.clear()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass

    # -- plumbing --

    def _send(self, method: str, path: str, query: list[tuple[str, Any]], *, verb: str, spec: ResourceKind,
              name: Optional[str] = None, namespace: Optional[str] = None, body: Any = None,
              content_type: Optional[str] = None, timeout: Any = REQUEST_TIMEOUT, stream: bool = False) -> Any:
        """One request through the official ApiClient (auth, TLS, proxies); kaitoctl errors on failure.

        Returns the JSON body as a dict, or with ``stream`` the unread urllib3 response.
        """
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            request = self._client.param_serialize(method=method, resource_path=path, query_params=query or None,
                                                   header_params=headers, body=body,
                                                   auth_settings=["BearerToken"])
            resp = self._client.call_api(*request, _request_timeout=timeout)
            if not 200 <= resp.status <= 299:
                err = api_error(resp.status, resp.read(), verb, spec, name, namespace, self.server,
                                reason=resp.reason or "")
                err.retry_after = _retry_after(resp.getheader("Retry-After"))  # type: ignore[attr-defined]
                raise err
            if stream:
                return resp.response
            data = resp.read()
        except ApiException as exc:  # the client reports TLS failures this way (status 0)
            if exc.status:
                err = api_error(exc.status, exc.body, verb, spec, name, namespace, self.server)
                err.retry_after = _retry_after((exc.headers or {}).get("Retry-After"))  # type: ignore[attr-defined]
                raise err from exc
            raise transport_error(OSError(f"SSL: {exc.reason}"), self.server) from exc
        except (HTTPError, OSError) as exc:
            raise transport_error(exc, self.server) from exc
        if not data:
            return {}
        if verb == "log":
            return data
        try:
            return json.loads(data)
        except ValueError:
            raise not_an_api_server(self.server, f"{verb} {spec.resource}{_where(name, namespace)}", resp.status,
                                    data) from None

    def _ns(self, namespace: Optional[str]) -> str:
        return namespace or self.namespace

    @staticmethod
    def _typed(obj: dict[str, Any], spec: ResourceKind) -> dict[str, Any]:
        obj.setdefault("kind", spec.kind)
        obj.setdefault("apiVersion", spec.api_version)
        return obj

    # -- reads --

    def list(self, kind: str, namespace: Optional[str] = None, *, all_namespaces: bool = False,
             label_selector: Optional[str] = None, field_selector: Optional[str] = None,
             ) -> tuple[list[dict[str, Any]], str]:
        """Every object of ``kind`` matching the selectors, and the list's resourceVersion (one request)."""
        spec = kind_of(kind)
        ns = None if (all_namespaces or not spec.namespaced) else self._ns(namespace)
        query: list[tuple[str, Any]] = []
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        data = self._send("GET", spec.path(ns), query, verb="list", spec=spec, namespace=ns)
        items = [self._typed(i, spec) for i in data.get("items") or []]
        return items, (data.get("metadata") or {}).get("resourceVersion", "")

    def get(self, kind: str, name: str, namespace: Optional[str] = None) -> dict[str, Any]:
        """The object, or :class:`NotFound`."""
        spec = kind_of(kind)
        ns = self._ns(namespace) if spec.namespaced else None
        return self._typed(self._send("GET", spec.path(ns, name), [], verb="get", spec=spec, name=name,
                                      namespace=ns), spec)

    def get_or_none(self, kind: str, name: str, namespace: Optional[str] = None) -> Optional[dict[str, Any]]:
        """The object, or None when it does not exist."""
        try:
            return self.get(kind, name, namespace)
        except NotFound:
            return None

    def pod_log(self, name: str, container: str, namespace: Optional[str] = None, *, tail_lines: int = 20,
                previous: bool = False) -> str:
        """The last ``tail_lines`` lines of a container's log ('' if there is none yet)."""
        spec = ResourceKind("Pod", "pods/log", "", "v1", True)
        ns = self._ns(namespace)
        query: list[tuple[str, Any]] = [("container", container), ("tailLines", str(tail_lines))]
        if previous:
            query.append(("previous", "true"))
        data = self._send("GET", KINDS["Pod"].path(ns, name, "log"), query, verb="log", spec=spec, name=name,
                          namespace=ns)
        return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else ""

    # -- writes --

    def apply(self, obj: dict[str, Any], *, dry_run: bool = False, force: bool = False) -> dict[str, Any]:
        """Server-side apply ``obj`` as field manager ``kaitoctl``; the object as the server has it after.

        ``dry_run``: the server validates, defaults and admits it but stores
        nothing. ``force``: take over fields another manager owns.
        """
        spec = kind_of(obj["kind"])
        name = obj["metadata"]["name"]
        ns = self._ns(obj["metadata"].get("namespace")) if spec.namespaced else None
        query: list[tuple[str, Any]] = [("fieldManager", FIELD_MANAGER)]
        if dry_run:
            query.append(("dryRun", "All"))
        if force:
            query.append(("force", "true"))
        out = self._send("PATCH", spec.path(ns, name), query, verb="patch", spec=spec, name=name, namespace=ns,
                         body=obj, content_type="application/apply-patch+yaml")
        return self._typed(out, spec)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj`` (POST, field manager ``kaitoctl``); :class:`Conflict` when it already exists."""
        spec = kind_of(obj["kind"])
        name = obj["metadata"]["name"]
        ns = self._ns(obj["metadata"].get("namespace")) if spec.namespaced else None
        out = self._send("POST", spec.path(ns), [("fieldManager", FIELD_MANAGER)], verb="create", spec=spec,
                         name=name, namespace=ns, body=obj, content_type="application/json")
        return self._typed(out, spec)

    def delete(self, kind: str, name: str, namespace: Optional[str] = None, *,
               propagation: str = "Background") -> bool:
        """Delete one object; False when it was already gone."""
        spec = kind_of(kind)
        ns = self._ns(namespace) if spec.namespaced else None
        try:
            self._send("DELETE", spec.path(ns, name), [("propagationPolicy", propagation)], verb="delete",
                       spec=spec, name=name, namespace=ns)
        except NotFound:
            return False
        return True

    # -- watch --

    def _watch_stream(self, spec: ResourceKind, namespace: Optional[str], label_selector: Optional[str],
                      field_selector: Optional[str], resource_version: str, holder: "Informer",
                      ) -> Iterator[tuple[str, dict[str, Any]]]:
        """One watch request from ``resource_version``: (type, object) until the stream ends.

        Raises :class:`WatchExpired` on 410, kaitoctl errors on other failures.
        """
        from urllib3.exceptions import HTTPError

        query: list[tuple[str, Any]] = [("watch", "true"), ("resourceVersion", resource_version),
                                        ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(WATCH_SECONDS))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        try:
            resp = self._send("GET", spec.path(namespace), query, verb="watch", spec=spec, namespace=namespace,
                              timeout=(REQUEST_TIMEOUT[0], WATCH_SECONDS + 30), stream=True)
        except ClusterError as err:
            if http_status(err) == 410:
                raise WatchExpired() from err
            raise
        holder._set_response(resp)
        try:
            for line in _lines(resp):
                if holder.stopped:
                    return
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                etype = event.get("type")
                obj = event.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpired()
                    raise ClusterError(f"watch of {spec.resource} failed: {obj.get('message', obj)}")
                yield etype, obj
        except (HTTPError, OSError) as exc:
            if holder.stopped:
                return
            raise transport_error(exc, self.server) from exc
        finally:
            holder._set_response(None)
            try:
                resp.release_conn()
            except Exception:  # noqa: BLE001 - a shut-down socket may refuse even that
                pass


def _lines(resp: Any) -> Iterator[bytes]:
    """Newline-delimited JSON lines of a streaming response, as they arrive."""
    buffer = b""
    read1 = getattr(resp, "read1", None)
    chunks: Iterator[bytes]
    if getattr(resp, "chunked", False) and getattr(resp, "supports_chunked_reads", lambda: False)():
        chunks = resp.read_chunked(decode_content=True)
    elif read1 is not None:
        chunks = iter(lambda: read1(65536), b"")
    else:
        chunks = resp.stream(amt=None)
    for chunk in chunks:
        if not chunk:
            continue
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


def reopen_delay(failures: int, err: Optional[BaseException] = None) -> float:
    """Seconds before reopening a watch: the server's Retry-After when it sent one, else exponential (capped)."""
    asked = retry_after(err) if err is not None else None
    if asked is not None:
        return min(asked, MAX_RETRY_AFTER)
    return min(0.1 * 2 ** failures, BACKOFF_CAP)


class Informer:
    """List then watch one kind, resuming through drops and relisting on 410.

    Iterate :meth:`events` (typically in a thread); :meth:`stop` from another
    thread ends it promptly by closing the open stream.
    """

    def __init__(self, kube: Kube, kind: str, namespace: Optional[str], *, label_selector: Optional[str] = None,
                 field_selector: Optional[str] = None) -> None:
        self.kube = kube
        self.spec = kind_of(kind)
        self.namespace = namespace if self.spec.namespaced else None
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.stopped = False
        self._resp: Any = None
        self._lock = threading.Lock()

    def _set_response(self, resp: Any) -> None:
        with self._lock:
            self._resp = resp

    def stop(self) -> None:
        self.stopped = True
        with self._lock:
            resp = self._resp
        if resp is not None:
            try:
                resp.shutdown() if hasattr(resp, "shutdown") else resp.close()
            except Exception:  # noqa: BLE001 - closing a dying socket may fail any way it likes
                pass

    def _relist(self) -> tuple[WatchEvent, str]:
        items, rv = self.kube.list(self.spec.kind, self.namespace, all_namespaces=self.namespace is None and
                                   self.spec.namespaced, label_selector=self.label_selector,
                                   field_selector=self.field_selector)
        return WatchEvent("SYNC", self.spec.kind, items=items), rv

    def _backoff(self, failures: int, err: Optional[BaseException] = None) -> None:
        self._sleep(reopen_delay(failures, err))

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once when :meth:`stop` is called."""
        deadline = time.monotonic() + seconds
        while not self.stopped and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _relist_retrying(self) -> tuple[WatchEvent, str]:
        failures = 0
        while True:
            try:
                return self._relist()
            except ClusterError as err:
                failures += 1
                if self.stopped or not is_transient(err) or failures > WATCH_RETRIES:
                    raise
                self._backoff(failures, err)

    def events(self) -> Iterator[WatchEvent]:
        """SYNC first, then changes, until :meth:`stop` (or an error that retries cannot fix).

        A stream the server closes is reopened from the last resourceVersion; one that closes
        again without delivering anything backs off (0.1 s doubling up to 5 s), so a server or
        proxy that keeps cutting streams is not hammered. A 429 waits the Retry-After it sent.
        """
        sync, rv = self._relist_retrying()
        yield sync
        failures = 0
        empty_closes = 0
        while not self.stopped:
            delivered = 0
            try:
                for etype, obj in self.kube._watch_stream(self.spec, self.namespace, self.label_selector,
                                                          self.field_selector, rv, self):
                    failures = 0
                    delivered += 1
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if etype in ("ADDED", "MODIFIED", "DELETED"):
                        obj.setdefault("kind", self.spec.kind)
                        obj.setdefault("apiVersion", self.spec.api_version)
                        yield WatchEvent(etype, self.spec.kind, obj=obj)
                # The server ended the stream (its timeout, a restart, a proxy): resume from rv.
                if self.stopped:
                    return
                empty_closes = 0 if delivered else empty_closes + 1
                if empty_closes:
                    self._backoff(empty_closes)
            except WatchExpired:
                if self.stopped:
                    return
                sync, rv = self._relist_retrying()
                yield sync
            except ClusterError as err:
                if self.stopped:
                    return
                if not is_transient(err):
                    raise
                failures += 1
                if failures > WATCH_RETRIES:
                    raise
                self._backoff(failures, err)
