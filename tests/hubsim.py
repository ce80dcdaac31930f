"""A Hugging Face Hub endpoint on 127.0.0.1 serving a local directory as one repository at one revision.

Only the routes huggingface_hub's download functions call (read from the installed
huggingface_hub: ``HfApi.model_info``, ``hf_hub_download`` and ``snapshot_download``):

- ``GET /api/models/<repo>/revision/<rev>``: the commit (``sha``) and the files (``siblings``);
- ``GET /api/models/<repo>/tree/<rev>``: the files (path, size, oid), as one page;
- ``HEAD``/``GET /<repo>/resolve/<rev>/<path>``: the file, with ``X-Repo-Commit``, ``ETag`` and
  ``Content-Length``; ``Range`` requests are answered 206 (resumed downloads); ``cut`` drops the
  connection once, mid-file, to test that a download resumes; ``stall`` sends part of a file once
  and then holds the connection open (``stalled`` is set) until the hub stops, so a test can kill
  the downloading process mid-file, as a container is killed.

Errors carry the Hub's ``X-Error-Code``/``X-Error-Message`` headers, which huggingface_hub turns
into its exceptions: 401 ``GatedRepo`` without a token for a gated repo, 401 "Invalid credentials
in Authorization header" for a wrong token, 404 ``RevisionNotFound``, 404 ``RepoNotFound``.
Test infrastructure; the standard library only.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit


class HubSim:
    def __init__(self, repo: str, revision: str, commit: str, files: Path, *, token: Optional[str] = None,
                 cut: Optional[tuple[str, int]] = None, stall: Optional[tuple[str, int]] = None) -> None:
        self.repo, self.revision, self.commit, self.files, self.token = repo, revision, commit, files, token
        self.requests: list[tuple[str, str]] = []
        self.ranges: list[tuple[str, str]] = []   # (file, Range header) of ranged GETs: resumed downloads
        # (file, bytes): the first full GET of that file stops after so many bytes (a dropped connection).
        self.cut = cut
        # (file, bytes): the first full GET of that file sends so many bytes, then hangs until the hub stops.
        self.stall = stall
        self.stalled = threading.Event()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "HubSim":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _names(self) -> list[str]:
        return sorted(str(p.relative_to(self.files)) for p in self.files.rglob("*") if p.is_file())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _fail(self, status: int, code: Optional[str], message: str) -> None:
                body = json.dumps({"error": message}).encode()
                self.send_response(status)
                if code:
                    self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _authorised(self) -> bool:
                if hub.token is None:
                    return True
                given = self.headers.get("Authorization", "")
                if not given:
                    self._fail(401, "GatedRepo", f"Access to model {hub.repo} is restricted. You must have access to "
                                                 "it and be authenticated to access it. Please log in.")
                    return False
                if given != f"Bearer {hub.token}":
                    self._fail(401, None, "Invalid credentials in Authorization header")
                    return False
                return True

            def _revision_ok(self, revision: str) -> bool:
                # The Hub resolves a branch/tag or a commit hash prefix (huggingface_hub issue #197, fixed
                # server-side in 2023); the catalog pins KAITO's 12-character prefixes.
                if revision == hub.revision or (len(revision) >= 7 and hub.commit.startswith(revision)):
                    return True
                self._fail(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return False

            def do_HEAD(self) -> None:  # noqa: N802
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802
                path = unquote(urlsplit(self.path).path)
                hub.requests.append((self.command, path))
                api = f"/api/models/{hub.repo}/revision/"
                tree = f"/api/models/{hub.repo}/tree/"
                resolve = f"/{hub.repo}/resolve/"
                if path.startswith(api):
                    if self._authorised() and self._revision_ok(path[len(api):]):
                        siblings = [{"rfilename": n, "size": (hub.files / n).stat().st_size} for n in hub._names()]
                        self._json({"id": hub.repo, "modelId": hub.repo, "sha": hub.commit, "siblings": siblings})
                elif path.startswith(tree):  # snapshot_download's file list (recursive, one page)
                    if self._authorised() and self._revision_ok(path[len(tree):].partition("/")[0]):
                        self._json([{"type": "file", "path": n, "size": (hub.files / n).stat().st_size,
                                     "oid": hashlib.sha1((hub.files / n).read_bytes()).hexdigest()}
                                    for n in hub._names()])
                elif path.startswith(resolve):
                    revision, _, name = path[len(resolve):].partition("/")
                    if self._authorised() and self._revision_ok(revision):
                        self._file(name)
                elif path.startswith("/api/models/") or path.count("/") >= 3:
                    self._fail(404, "RepoNotFound", "Repository not found")
                else:
                    self._fail(404, None, "Not found")

            def _json(self, data: object) -> None:
                body = json.dumps(data).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _file(self, name: str) -> None:
                target = hub.files / name
                if not name or not target.is_file() or ".." in Path(name).parts:
                    self._fail(404, "EntryNotFound", f"{name} does not exist on {hub.revision}")
                    return
                data = target.read_bytes()
                start = 0
                ranged = self.headers.get("Range", "")
                if ranged and self.command == "GET":
                    hub.ranges.append((name, ranged))
                if ranged.startswith("bytes=") and ranged[6:].split("-")[0].isdigit():
                    start = min(int(ranged[6:].split("-")[0]), len(data))
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if hub.cut is not None and hub.cut[0] == name and not start:
                    size, hub.cut = hub.cut[1], None
                    self.wfile.write(data[:size])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-file
                    return
                if hub.stall is not None and hub.stall[0] == name and not start:
                    size, hub.stall = hub.stall[1], None
                    self.wfile.write(data[:size])
                    self.wfile.flush()
                    hub.stalled.set()
                    hub._stopping.wait(timeout=120)  # a hung transfer: the client is killed meanwhile
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

        return Handler
