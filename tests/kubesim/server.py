"""HTTP front end: the URL space, bearer-token auth, JSON and chunked watch responses.

Speaks HTTP/1.1 with keep-alive, as urllib3 (under the official client) expects:
every plain answer has a Content-Length, every watch is a chunked stream of
newline-terminated JSON events.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from .api import dry_run_requested, parse_json
from .errors import ApiError
from .resources import BY_GROUP_PLURAL, Resource
from .watch import WatchStream

if TYPE_CHECKING:
    from .sim import KubeSim

NOT_FOUND = ApiError(404, "the server could not find the requested resource")
BOOKMARK_INTERVAL = 1.0
VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-kubesim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class Target:
    """What a URL names: resource, namespace, name, subresource."""

    def __init__(self, res: Resource, namespace: str | None, name: str | None, subresource: str | None) -> None:
        self.res, self.namespace, self.name, self.subresource = res, namespace, name, subresource


def parse_path(path: str) -> Target:
    parts = [unquote(p) for p in path.strip("/").split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
        if parts[2] != "v1":
            raise NOT_FOUND
    else:
        raise NOT_FOUND
    if not rest:
        raise NOT_FOUND
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and (group, rest[2]) in BY_GROUP_PLURAL:
        namespace, rest = rest[1], rest[2:]
    res = BY_GROUP_PLURAL.get((group, rest[0]))
    if res is None or len(rest) > 3:
        raise NOT_FOUND
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if res.namespaced and name is not None and namespace is None:
        raise NOT_FOUND
    if subresource not in (None, "status") and not (res.plural == "pods" and subresource == "log"):
        raise NOT_FOUND
    return Target(res, namespace, name, subresource)


def verb_for(method: str, target: Target, query: dict[str, str]) -> str:
    if method == "GET":
        if target.name is None:
            return "watch" if query.get("watch") in ("true", "1") else "list"
        return "get"
    if method == "DELETE":
        return "delete" if target.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "SimServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence per-request logging; tests read ``sim.requests`` instead."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing

    def _send(self, code: int, payload: Any) -> None:
        if isinstance(payload, str):
            data, content_type = payload.encode(), "text/plain"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        sim.record_request(method, url.path, query)
        try:
            if self.headers.get("Authorization") != f"Bearer {sim.token}":
                raise ApiError(401, "Unauthorized")
            if url.path.rstrip("/") == "/version":
                self._send(200, VERSION)
                return
            if url.path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" and method == "POST":
                self._send(201, self._access_review(json.loads(body or b"{}")))
                return
            target = parse_path(url.path)
            verb = verb_for(method, target, query)
            sim.api.check_faults(verb, target.res, target.namespace, target.name, target.subresource)
            if verb == "watch":
                self._watch(target, query)
                return
            code, payload = self._handle(method, verb, target, query, body)
            self._send(code, payload)
        except ApiError as exc:
            self._send(exc.code, exc.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # a bug in the simulator: make it visible to the test
            message = "kubesim internal error:\n" + traceback.format_exc()
            sim.internal_errors.append(message)
            self._send(500, ApiError(500, message).status())

    def _handle(
        self, method: str, verb: str, target: Target, query: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        api = self.server.sim.api
        res, ns, name, sub = target.res, target.namespace, target.name, target.subresource
        manager = query.get("fieldManager") or (self.headers.get("User-Agent") or "unknown").split("/")[0]
        if verb == "list":
            return 200, api.list(res, ns, query)
        if verb == "get":
            if sub == "log":
                return 200, api.read_log(ns or "", name or "", query)
            return 200, api.get(res, ns, name or "")
        if sub == "log":
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if verb == "create":
            if name is not None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            created = api.create(res, ns, parse_json(body), manager, dry_run_requested(query))
            return 201, created
        if verb == "update":
            return 200, api.replace(res, ns, name or "", parse_json(body), manager, dry_run_requested(query), sub)
        if verb == "patch":
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            existed = api.store.get(res.plural, ns, name or "") is not None
            patched = api.patch(res, ns, name or "", content_type, body, query, manager, sub)
            return (200 if existed else 201), patched
        if verb == "delete":
            options = parse_json(body) if body else None
            return 200, api.delete(res, ns, name or "", query, options)
        if verb == "deletecollection":
            options = parse_json(body) if body else None
            return 200, api.delete_collection(res, ns, query, options)
        raise ApiError(405, "the server does not allow this method on the requested resource")

    def _access_review(self, review: dict[str, Any]) -> dict[str, Any]:
        attrs = (review.get("spec") or {}).get("resourceAttributes") or {}
        res = BY_GROUP_PLURAL.get((attrs.get("group") or "", attrs.get("resource") or ""))
        allowed = res is None or self.server.sim.api.allowed(attrs.get("verb") or "", res, attrs.get("subresource"))
        review = dict(review)
        review.setdefault("apiVersion", "authorization.k8s.io/v1")
        review.setdefault("kind", "SelfSubjectAccessReview")
        review["status"] = {"allowed": allowed}
        if not allowed:
            review["status"]["denied"] = True
        return review

    # ------------------------------------------------------------------ watch

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if readable:
                return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True
        return False

    def _chunk(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, target: Target, query: dict[str, str]) -> None:
        sim = self.server.sim
        stream = WatchStream(sim.cluster.store, target.res, target.namespace, query, sim.watch_epoch)
        first = stream.start()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        timeout = query.get("timeoutSeconds")
        deadline = time.monotonic() + float(timeout) if timeout else None
        next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
        try:
            batch: list[dict[str, Any]] | None = first
            while True:
                if batch:
                    self._chunk(batch)
                    if batch[-1]["type"] == "ERROR":
                        break
                if sim.watch_epoch != stream.epoch:
                    self.close_connection = True
                    break
                if self.server.stopping.is_set() or self._client_gone():
                    self.close_connection = True
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if stream.bookmarks and time.monotonic() >= next_bookmark:
                    self._chunk([stream.bookmark()])
                    next_bookmark = time.monotonic() + BOOKMARK_INTERVAL
                wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
                batch = stream.next_batch(wait)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


class SimServer(ThreadingHTTPServer):
    """The HTTP server bound to 127.0.0.1 at a free port."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sim: "KubeSim") -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.sim = sim
        self.stopping = threading.Event()
