"""The one module that talks to the Kubernetes API.

Everything else in kaitoctl works on plain dicts (the JSON the API server
sends) and takes a :class:`Kube` when it needs the cluster, so it can be tested
with fixtures. This module:

- resolves the connection as kubectl does: ``--kubeconfig``, else ``$KUBECONFIG``
  (a path list, merged), else ``~/.kube/config``, else the in-cluster service
  account; ``--context`` picks the context; the namespace is ``-n``, else the
  context's, else ``default``;
- makes typed calls (list/get/apply/delete/watch/log per kind, from the
  :data:`KINDS` table) over urllib3 (as the official client does underneath)
  and reads the responses as JSON dicts. A kubeconfig whose user has a token,
  a client certificate or a password is read here directly; anything else
  (exec plugins, auth providers, several merged files, in-cluster) is resolved
  by the official client's loader, which then also refreshes the token. The
  ``kubernetes`` package costs about a third of a second to import (it loads
  every generated API class), so the common case does without it;
- says nothing when the kubeconfig turns TLS verification off (as kubectl;
  urllib3 would warn on every request), one line with ``--debug``;
- does server-side apply (PATCH ``application/apply-patch+yaml`` with the field
  manager ``kaitoctl``; dry run and force on request), because the typed client
  has no first-class apply (kubernetes-client/python#1430);
- watches with resume: the stream is re-opened from the last resourceVersion
  when the server or the network drops it, and a 410 Gone turns into a relist;
- turns every API or transport error into :mod:`kaitoctl.errors` types with a
  message that says what was refused, why, and what would fix it.

The ``kubernetes`` package is imported here only, and only inside functions,
so that the offline commands (and most cluster commands) never load it.
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
    paths, exists = _kubeconfig_paths(kubeconfig)
    in_cluster = (not exists and kubeconfig is None and context is None
                  and bool(os.environ.get("KUBERNETES_SERVICE_HOST")))
    if not in_cluster and exists:
        simple = _simple_kubeconfig(paths, context)
        if simple is not None:
            tls, auth, ctx = simple
            conn = Connection(server=tls.server, namespace=namespace or ctx.get("namespace") or DEFAULT_NAMESPACE,
                              context=ctx["name"], source=paths)
            return _kube(tls, lambda: auth, conn)

    from kubernetes import client as k8s_client
    from kubernetes.config import incluster_config, kube_config
    from kubernetes.config.config_exception import ConfigException

    configuration = k8s_client.Configuration()
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
        return _from_configuration(configuration, conn)

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
    return _from_configuration(configuration, conn)


@dataclass(frozen=True)
class Tls:
    """Where and how to connect: the server URL and what urllib3 needs for its TLS."""

    server: str
    verify: bool = True
    ca_file: Optional[str] = None
    ca_data: Optional[str] = None
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    server_name: Optional[str] = None
    proxy: Optional[str] = None


# What a kubeconfig user may hold for the fast path; anything else (exec plugins, auth providers,
# token files, impersonation) goes through the official client's loader.
_SIMPLE_USER_KEYS = {"token", "client-certificate", "client-certificate-data", "client-key", "client-key-data",
                     "username", "password"}
_SIMPLE_CLUSTER_KEYS = {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify",
                        "tls-server-name"}


def _simple_kubeconfig(paths: str, context: Optional[str]) -> Optional[tuple[Tls, Optional[str], dict[str, Any]]]:
    """(TLS, Authorization header, context) for one kubeconfig file that needs no plugin, else None.

    This covers token, client-certificate and basic-auth users without importing the
    ``kubernetes`` package (a third of a second on every command); None sends every other
    case, and every malformed file, through the official loader and its error messages.
    """
    import base64

    if os.pathsep in paths:
        return None
    path = Path(paths).expanduser()
    try:
        import yaml

        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        name = context or config.get("current-context")
        ctx = next(c for c in config.get("contexts") or [] if c.get("name") == name)
        ctx_body = ctx.get("context") or {}
        cluster = next(c for c in config.get("clusters") or [] if c.get("name") == ctx_body.get("cluster"))["cluster"]
        user = next((u for u in config.get("users") or [] if u.get("name") == ctx_body.get("user")),
                    {"user": {}}).get("user") or {}
        if set(user) - _SIMPLE_USER_KEYS or set(cluster) - _SIMPLE_CLUSTER_KEYS or not cluster.get("server"):
            return None

        def local(file: Optional[str]) -> Optional[str]:
            return str((path.parent / Path(file).expanduser()).resolve()) if file else None

        def data_file(data: Optional[str], fallback: Optional[str]) -> Optional[str]:
            if not data:
                return local(fallback)
            import tempfile

            fd, name = tempfile.mkstemp(prefix="kaitoctl-")
            with os.fdopen(fd, "wb") as out:
                out.write(base64.b64decode(data, validate=True))
            import atexit

            atexit.register(lambda: Path(name).unlink(missing_ok=True))
            return name

        ca_data = cluster.get("certificate-authority-data")
        tls = Tls(server=str(cluster["server"]).rstrip("/"),
                  verify=not cluster.get("insecure-skip-tls-verify", False),
                  ca_file=None if ca_data else local(cluster.get("certificate-authority")),
                  ca_data=base64.b64decode(ca_data, validate=True).decode() if ca_data else None,
                  cert_file=data_file(user.get("client-certificate-data"), user.get("client-certificate")),
                  key_file=data_file(user.get("client-key-data"), user.get("client-key")),
                  server_name=cluster.get("tls-server-name"))
        if user.get("token"):
            auth: Optional[str] = f"Bearer {user['token']}"
        elif user.get("username"):
            pair = f"{user['username']}:{user.get('password', '')}".encode()
            auth = "Basic " + base64.b64encode(pair).decode()
        else:
            auth = None
        return tls, auth, {"name": name, "namespace": ctx_body.get("namespace")}
    except Exception:  # noqa: BLE001 - anything unusual: the official loader decides and explains
        return None


def _from_configuration(configuration: Any, conn: Connection) -> "Kube":
    """A :class:`Kube` from the official client's resolved ``Configuration`` (exec plugins, in-cluster...)."""
    tls = Tls(server=str(configuration.host).rstrip("/"), verify=bool(configuration.verify_ssl),
              ca_file=configuration.ssl_ca_cert, cert_file=configuration.cert_file, key_file=configuration.key_file,
              server_name=getattr(configuration, "tls_server_name", None), proxy=configuration.proxy)

    def auth() -> Optional[str]:
        # Refreshes an exec plugin's or the service account's token when it expires.
        token = configuration.get_api_key_with_prefix("authorization") or configuration.get_api_key_with_prefix(
            "BearerToken")
        if token:
            return token
        if configuration.username:
            return configuration.get_basic_auth_token()
        return None

    return _kube(tls, auth, conn)


def _kube(tls: Tls, auth: Any, conn: Connection) -> "Kube":
    import atexit

    kube = Kube(Transport(tls, auth), conn)
    atexit.register(kube.close)
    return kube


class Transport:
    """HTTP to the API server with urllib3, as the official client does underneath (one pool, threads share it)."""

    def __init__(self, tls: Tls, auth: Any) -> None:
        import urllib3

        self.tls = tls
        self.auth = auth
        kwargs: dict[str, Any] = {"num_pools": 4, "maxsize": 8, "retries": urllib3.Retry(total=1, redirect=False)}
        if tls.server.startswith("https"):
            if tls.verify:
                kwargs.update(cert_reqs="CERT_REQUIRED", ca_certs=tls.ca_file, ca_cert_data=tls.ca_data)
                if not tls.ca_file and not tls.ca_data:
                    import certifi

                    kwargs["ca_certs"] = certifi.where()
                if tls.server_name:
                    kwargs["server_hostname"] = tls.server_name
            else:
                kwargs["cert_reqs"] = "CERT_NONE"
                _insecure_once(tls.server)
            kwargs.update(cert_file=tls.cert_file, key_file=tls.key_file)
        self.pool: Any = (urllib3.ProxyManager(tls.proxy, **kwargs) if tls.proxy else urllib3.PoolManager(**kwargs))

    def request(self, method: str, path: str, query: list[tuple[str, Any]], headers: dict[str, str], body: Any,
                timeout: Any, stream: bool) -> Any:
        from urllib.parse import urlencode

        import urllib3

        url = self.tls.server + path + (f"?{urlencode(query)}" if query else "")
        auth = self.auth()
        if auth:
            headers = {**headers, "Authorization": auth}
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        return self.pool.request(method, url, body=data, headers=headers, preload_content=not stream,
                                 timeout=urllib3.Timeout(connect=connect, read=read), redirect=False)

    def close(self) -> None:
        self.pool.clear()


DEBUG = False   # set by `kaitoctl --debug`


def _insecure_once(server: str) -> None:
    """No urllib3 warning on every request when the kubeconfig turns TLS verification off (kubectl is
    silent too); with --debug, one line says so."""
    import warnings

    from urllib3.exceptions import InsecureRequestWarning

    warnings.simplefilter("ignore", InsecureRequestWarning)
    if DEBUG:
        import sys

        print(f"kaitoctl: debug: TLS verification is off for {server} (insecure-skip-tls-verify in the "
              "kubeconfig): the server's certificate is not checked", file=sys.stderr)


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

    def __init__(self, transport: Transport, connection: Connection) -> None:
        self._transport = transport
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
            self._transport.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass

    # -- plumbing --

    def _send(self, method: str, path: str, query: list[tuple[str, Any]], *, verb: str, spec: ResourceKind,
              name: Optional[str] = None, namespace: Optional[str] = None, body: Any = None,
              content_type: Optional[str] = None, timeout: Any = REQUEST_TIMEOUT, stream: bool = False) -> Any:
        """One request (auth, TLS and proxy as the kubeconfig says); kaitoctl errors on failure.

        Returns the JSON body as a dict, or with ``stream`` the unread urllib3 response.
        """
        from urllib3.exceptions import HTTPError

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            resp = self._transport.request(method, path, query, headers, body, timeout, stream)
            if not 200 <= resp.status <= 299:
                err = api_error(resp.status, resp.read() if stream else resp.data, verb, spec, name, namespace,
                                self.server, reason=resp.reason or "")
                err.retry_after = _retry_after(resp.headers.get("Retry-After"))  # type: ignore[attr-defined]
                raise err
            if stream:
                return resp
            data = resp.data
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
