"""A real Kubernetes control plane for the test session, started from ``KUBEBUILDER_ASSETS``.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (which plays the kubelet
of the fake GPU nodes, driven by the Stages in ``kwok.yaml``) run as child processes on
127.0.0.1 with their data in one temporary folder. One control plane per test session:
:func:`shared` starts it on first use and stops it when the interpreter exits.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
ADMIN_TOKEN = "kubesim-admin-token"          # system:masters
USER_TOKEN = "kubesim-token"                 # kaitoctl's user: RBAC from sim.py's ClusterRole
USER_NAME = "kaitoctl-user"
HERE = Path(__file__).resolve().parent


def assets_dir() -> Optional[Path]:
    """The folder named by KUBEBUILDER_ASSETS if it holds all five binaries, else None."""
    value = os.environ.get("KUBEBUILDER_ASSETS")
    if not value:
        return None
    path = Path(value)
    return path if all((path / b).is_file() for b in BINARIES) else None


def why_unavailable() -> str:
    value = os.environ.get("KUBEBUILDER_ASSETS")
    if not value:
        return ("KUBEBUILDER_ASSETS is not set: the cluster tests need etcd, kube-apiserver, "
                "kube-controller-manager, kube-scheduler and kwok (see tests/kubesim/README.md)")
    missing = [b for b in BINARIES if not (Path(value) / b).is_file()]
    return f"KUBEBUILDER_ASSETS={value} lacks {', '.join(missing)}"


def skip_unless_available() -> None:
    """In a test: skip it when the binaries are missing (fail instead under KUBESIM_REQUIRED=1, as CI sets)."""
    import pytest

    if assets_dir() is None:
        if os.environ.get("KUBESIM_REQUIRED") == "1":
            pytest.fail(why_unavailable(), pytrace=False)
        pytest.skip(why_unavailable())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class ControlPlane:
    """The five processes; ``url`` is the apiserver, ``ca`` its serving certificate (self-signed)."""

    def __init__(self, assets: Path) -> None:
        self.assets = assets
        self.dir = Path(tempfile.mkdtemp(prefix="kubesim-cp-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.version = ""
        self.ca = self.dir / "serving.crt"
        self.key = self.dir / "serving.key"

    # ------------------------------------------------------------------ files

    def _write_files(self) -> None:
        d = self.dir
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(self.key),
                 "-out", str(self.ca))
        _openssl("genrsa", "-out", str(d / "sa.key"), "2048")
        _openssl("rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub"))
        (d / "tokens.csv").write_text(f"{ADMIN_TOKEN},kubesim-admin,uid-admin,system:masters\n"
                                      f"{USER_TOKEN},{USER_NAME},uid-user,kubesim-users\n")
        (d / "admin.kubeconfig").write_text(json.dumps(self.kubeconfig(ADMIN_TOKEN, "admin")))

    def kubeconfig(self, token: str, user: str, server: Optional[str] = None) -> dict:
        import base64

        ca = base64.b64encode(self.ca.read_bytes()).decode()
        return {
            "apiVersion": "v1", "kind": "Config", "current-context": "sim",
            "clusters": [{"name": "sim", "cluster": {"server": server or self.url,
                                                     "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": user, "namespace": "default"}}],
        }

    # ------------------------------------------------------------------ processes

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.dir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen([str(self.assets / name), *args], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.dir, start_new_session=True)

    def _get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        req = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def _wait(self, what: str, check, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                       + self.log_tail(name))
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}:\n" + self.log_tail("kube-apiserver"))

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def start(self) -> "ControlPlane":
        d = self.dir
        self._write_files()
        etcd_port, peer_port = free_port(), free_port()
        self._spawn("etcd", "--data-dir", str(d / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                    "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                    "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                    "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync", "--log-level", "warn")
        self._spawn("kube-apiserver", f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                    "--bind-address=127.0.0.1", f"--secure-port={self.port}",
                    f"--tls-cert-file={self.ca}", f"--tls-private-key-file={self.key}",
                    f"--token-auth-file={d / 'tokens.csv'}", "--authorization-mode=RBAC",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={d / 'sa.pub'}",
                    f"--service-account-signing-key-file={d / 'sa.key'}",
                    "--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false",
                    "--kubelet-preferred-address-types=InternalIP", "--kubelet-timeout=2s",
                    "--event-ttl=10m")
        self._wait("kube-apiserver /readyz", lambda: self._get("/readyz")[0] == 200)
        self.version = json.loads(self._get("/version")[1]).get("gitVersion", "?")
        kubeconfig = str(d / "admin.kubeconfig")
        self._spawn("kube-controller-manager", f"--kubeconfig={kubeconfig}", "--leader-elect=false",
                    f"--service-account-private-key-file={d / 'sa.key'}", f"--root-ca-file={self.ca}",
                    "--controllers=*,-nodeipam,-cloud-node-lifecycle,-route,-service,-serviceaccount-token",
                    "--use-service-account-credentials=false", f"--secure-port={free_port()}",
                    "--bind-address=127.0.0.1", "--concurrent-deployment-syncs=5",
                    "--node-monitor-period=1s")
        self._spawn("kube-scheduler", f"--kubeconfig={kubeconfig}", "--leader-elect=false",
                    f"--secure-port={free_port()}", "--bind-address=127.0.0.1")
        kwok_port = free_port()
        config = (HERE / "kwok.yaml").read_text().replace("KWOK_PORT", str(kwok_port))
        (d / "kwok.yaml").write_text(config)
        self._spawn("kwok", f"--kubeconfig={kubeconfig}", f"--config={d / 'kwok.yaml'}",
                    f"--server-address=127.0.0.1:{kwok_port}")
        # The default ServiceAccount appears once the controller-manager runs.
        self._wait("the default ServiceAccount",
                   lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200)
        return self

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if not os.environ.get("KUBESIM_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def pause(self, names: tuple[str, ...] = ("kube-controller-manager", "kube-scheduler", "kwok")) -> None:
        for name in names:
            os.killpg(self.procs[name].pid, signal.SIGSTOP)

    def resume(self, names: tuple[str, ...] = ("kube-controller-manager", "kube-scheduler", "kwok")) -> None:
        for name in names:
            os.killpg(self.procs[name].pid, signal.SIGCONT)


_SHARED: Optional[ControlPlane] = None


def shared() -> ControlPlane:
    """The session's control plane, started on first use (raises if KUBEBUILDER_ASSETS is missing)."""
    global _SHARED
    if _SHARED is None:
        assets = assets_dir()
        if assets is None:
            raise RuntimeError(why_unavailable())
        plane = ControlPlane(assets)
        try:
            plane.start()
        except BaseException:
            plane.stop()
            raise
        _SHARED = plane
        atexit.register(plane.stop)
    return _SHARED


def started() -> Optional[ControlPlane]:
    return _SHARED
