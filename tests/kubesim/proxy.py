"""A thin HTTPS proxy in front of the real kube-apiserver: it records and can break requests.

kaitoctl's kubeconfig points here. The proxy passes every request through unchanged (the
bearer token too, so authentication and RBAC are the apiserver's) and adds only what a real
server will not do on demand:

- ``requests``: every request as ``(method, path, query)``, to count API calls;
- ``fail_next``: the next matching request(s) get a given ``Status`` (a 5xx, a 422 ...);
- ``drop_watches``: end every open watch stream now;
- ``expire``: open watches get an ERROR event with a 410 ``Status``, and a watch resumed from an
  older resourceVersion gets the same (etcd compaction, on demand);
- container logs: there is no container runtime behind kwok's nodes, so when the apiserver
  accepted a ``pods/log`` request (authorized, pod exists) the proxy answers with the log that
  the test gave the image (``log_source``).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qsl, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate", "host", "content-length"}
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
           410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
           504: "Timeout"}


def parse_path(path: str) -> tuple[str, Optional[str], str, Optional[str], Optional[str]]:
    """``(group, namespace, resource, name, subresource)`` of an API path ('' group for core)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return "", None, "", None, None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return group, namespace, resource, name, sub


def verb_of(method: str, name: Optional[str], query: dict[str, str]) -> str:
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def status_body(code: int, message: str, resource: str = "", name: Optional[str] = None, group: str = "",
                causes: Optional[list[dict[str, str]]] = None, reason: Optional[str] = None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if resource:
        details["kind"] = resource
    if causes:
        details["causes"] = causes
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason or REASONS.get(code, "Unknown"), "code": code}
    if details:
        body["details"] = details
    return body


@dataclass
class Fault:
    verb: str
    resource: str
    code: int
    message: str
    causes: Optional[list[dict[str, str]]] = None
    times: int = 1
    after: int = 0          # matching requests let through before the fault starts


@dataclass(eq=False)
class Stream:
    """One watch being relayed; ``end`` is set by another thread to stop it."""
    upstream: Optional[http.client.HTTPSConnection]
    end: Optional[str] = None            # "drop" or "expire"

    def stop(self, how: str) -> None:
        self.end = how
        sock = self.upstream.sock if self.upstream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FaultProxy:
    def __init__(self, upstream_port: int, cert: str, key: str, ca: str,
                 log_source: Callable[[str, str, Optional[str], bool], str]) -> None:
        self.upstream_port = upstream_port
        self.client_ctx = ssl.create_default_context(cafile=ca)
        self.log_source = log_source
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.faults: list[Fault] = []
        self.streams: set[Stream] = set()
        self.expired_before: Optional[int] = None
        self.lock = threading.Lock()
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False       # relays of finished watches end on their own
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        self.server.socket = server_ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True, name="kubesim-proxy")

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.drop_watches()
        self.server.shutdown()
        self.server.server_close()

    def upstream(self, timeout: Optional[float] = 60) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.upstream_port, context=self.client_ctx, timeout=timeout)

    # ------------------------------------------------------------------ hooks

    def fail_next(self, verb: str, resource: str, code: int, message: str,
                  causes: Optional[list[dict[str, str]]] = None, times: int = 1, after: int = 0) -> None:
        with self.lock:
            self.faults.append(Fault(verb, resource, code, message, causes, times, after))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def take_fault(self, verb: str, resource: str) -> Optional[Fault]:
        with self.lock:
            for fault in self.faults:
                if fault.verb in (verb, "*") and fault.resource in (resource, "*"):
                    if fault.after > 0:
                        fault.after -= 1
                        return None
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def drop_watches(self) -> None:
        with self.lock:
            streams = list(self.streams)
        for stream in streams:
            stream.stop("drop")

    def expire(self, resource_version: int) -> None:
        """Forget history up to ``resource_version``: open watches and older resumes get 410 Gone."""
        with self.lock:
            self.expired_before = resource_version
            streams = list(self.streams)
        for stream in streams:
            stream.stop("expire")

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], OSError):   # a client that hung up (Ctrl-C) is no error
            super().handle_error(request, client_address)


def _gone_event(rv: str) -> bytes:
    status = status_body(410, f"too old resource version: {rv or 0} ({0})", reason="Expired")
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"
    _conn: Optional[http.client.HTTPSConnection] = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _send(self, code: int, body: bytes, content_type: str = "application/json",
              headers: Optional[list[tuple[str, str]]] = None) -> None:
        self.send_response(code)
        for key, value in headers or []:
            self.send_header(key, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def handle_any(self) -> None:
        proxy = self.owner
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        with proxy.lock:
            proxy.requests.append((self.command, split.path, query))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        group, namespace, resource, name, sub = parse_path(split.path)
        verb = verb_of(self.command, name, query)
        full_resource = f"{resource}/{sub}" if sub else resource
        fault = proxy.take_fault(verb, full_resource)
        if fault is not None:
            status = status_body(fault.code, fault.message, resource, name, group, fault.causes)
            self._send(fault.code, json.dumps(status).encode())
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if verb == "watch":
            self._relay_watch(headers, query)
            return
        if self._conn is None:
            self._conn = proxy.upstream()
        try:
            self._conn.request(self.command, self.path, body=body, headers=headers)
            resp = self._conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = None
            self._send(503, json.dumps(status_body(503, "kubesim proxy: the apiserver did not answer")).encode())
            return
        if resource == "pods" and sub == "log" and resp.status not in (401, 403, 404) and namespace and name:
            text = proxy.log_source(namespace, name, query.get("container"), query.get("previous") == "true")
            if query.get("tailLines"):
                text = "".join(text.splitlines(keepends=True)[-int(query["tailLines"]):])
            self._send(200, text.encode(), "text/plain")
            return
        passed = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"content-type"}]
        self._send(resp.status, data, resp.getheader("Content-Type") or "application/json", passed)

    def _relay_watch(self, headers: dict[str, str], query: dict[str, str]) -> None:
        proxy = self.owner
        rv = query.get("resourceVersion", "")
        stream: Optional[Stream] = None
        with proxy.lock:   # the expiry check and the registration are one step: an expire() between them is not lost
            expired = proxy.expired_before
            if not (expired is not None and rv not in ("", "0") and rv.isdigit() and int(rv) < expired):
                stream = Stream(None)
                proxy.streams.add(stream)
        if stream is None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(_gone_event(rv))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        conn = proxy.upstream(timeout=None)
        stream.upstream = conn           # from now on drop_watches/expire also shut its socket
        resp = None
        try:
            if stream.end is None:       # stopped before it reached the apiserver: nothing to relay
                conn.request("GET", self.path, headers=headers)
                if stream.end is not None:   # stopped while it connected, before its socket could be shut
                    stream.stop(stream.end)
                resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            with proxy.lock:
                proxy.streams.discard(stream)
            conn.close()
            if stream.end is None:
                self._send(503, json.dumps(status_body(503, "kubesim proxy: the apiserver did not answer")).encode())
                return
            resp = None
        if resp is not None and resp.status != 200:
            data = resp.read()
            with proxy.lock:
                proxy.streams.discard(stream)
            conn.close()
            self._send(resp.status, data, resp.getheader("Content-Type") or "application/json")
            return
        self.send_response(200)
        self.send_header("Content-Type", (resp.getheader("Content-Type") if resp else None) or "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        try:
            while stream.end is None and resp is not None:
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException, ValueError):
                    break
                if not line or stream.end is not None:   # stopped while waiting: that event is not relayed
                    break
                self._chunk(line)
            if stream.end == "expire":
                self._chunk(_gone_event(rv))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True
        finally:
            with proxy.lock:
                proxy.streams.discard(stream)
            conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = handle_any
