"""End-to-end fixtures: a KubeSim, and the real `kaitoctl` command run as a subprocess against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
import yaml

from kubesim import KubeSim, controlplane

ROOT = Path(__file__).resolve().parents[2]
ITYPE = "Standard_NC12s_v3"        # 2 x V100 in the catalog; falcon-7b needs 1 GPU on it
MODEL_IMAGE = "ghcr.io/kaitoctl/kaitoctl-falcon-7b:0.1.0"


def kaitoctl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITOCTL_")}
    env.update(KUBECONFIG=os.devnull, NO_COLOR="1", COLUMNS="200", PYTHONUNBUFFERED="1", KAITOCTL_PRESET_REGISTRY="ghcr.io/kaitoctl")
    return env


class Runner:
    """Runs `python -m kaitoctl ... --kubeconfig <sim>` and keeps what it printed."""

    def __init__(self, sim: KubeSim) -> None:
        self.sim = sim

    def argv(self, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", "kaitoctl", *args, "--kubeconfig", self.sim.kubeconfig_path]

    def __call__(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(args), cwd=ROOT, env=kaitoctl_env(), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(args), cwd=ROOT, env=kaitoctl_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)


@pytest.fixture
def sim() -> Iterator[KubeSim]:
    """The session's real control plane (tests/kubesim), left clean for the next test."""
    controlplane.skip_unless_available()
    with KubeSim(tick_seconds=0.02) as running:
        yield running
        assert not running.internal_errors, running.internal_errors


@pytest.fixture
def kaitoctl(sim: KubeSim) -> Runner:
    return Runner(sim)


def workspace_doc(name: str = "falcon", *, adapters: Optional[list[dict[str, Any]]] = None,
                  namespace: Optional[str] = None, count: int = 1, selector: Optional[dict[str, str]] = None,
                  preset: str = "falcon-7b", instance_type: str = ITYPE,
                  preset_extra: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    doc: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": meta,
        "resource": {"count": count, "instanceType": instance_type,
                     "labelSelector": {"matchLabels": selector or {"apps": "llm"}}},
        "inference": {"preset": {"name": preset, **(preset_extra or {})}},
    }
    if adapters:
        doc["inference"]["adapters"] = adapters
    return doc


def adapter(name: str, image: Optional[str] = None, strength: Optional[str] = None,
            secrets: Optional[list[str]] = None) -> dict[str, Any]:
    source: dict[str, Any] = {"name": name, "image": image or f"registry.example.com/adapters/{name}:1"}
    if secrets:
        source["imagePullSecrets"] = secrets
    entry: dict[str, Any] = {"source": source}
    if strength is not None:
        entry["strength"] = strength
    return entry


@pytest.fixture
def write_ws(tmp_path: Path) -> Callable[..., str]:
    counter = iter(range(1000))

    def write(doc: Optional[dict[str, Any]] = None, **kwargs: Any) -> str:
        path = tmp_path / f"ws-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(doc or workspace_doc(**kwargs), sort_keys=False))
        return str(path)

    return write


def gpu_node(sim: KubeSim, name: str = "gpu-1", gpus: int = 2, **kwargs: Any) -> None:
    labels = {"apps": "llm", **kwargs.pop("labels", {})}
    sim.add_node(name, labels=labels, gpus=gpus, instance_type=kwargs.pop("instance_type", ITYPE), **kwargs)


def requests_of(sim: KubeSim, method: str, fragment: str = "") -> list[tuple[str, str, dict[str, str]]]:
    return [r for r in list(sim.requests) if r[0] == method and fragment in r[1]]


def writes(sim: KubeSim) -> list[tuple[str, str, dict[str, str]]]:
    """Requests that would change something (dry runs excluded)."""
    return [r for r in list(sim.requests)
            if r[0] in ("POST", "PUT", "PATCH", "DELETE") and r[2].get("dryRun") != "All"]


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def ready_pods(sim: KubeSim, name: str, namespace: str = "default") -> list[dict[str, Any]]:
    out = []
    for pod in sim.list("Pod", namespace, f"kaito.sh/workspace={name}"):
        if pod["metadata"].get("deletionTimestamp"):
            continue
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod["status"].get("conditions") or []):
            out.append(pod)
    return out


def scheduler_retry(sim: KubeSim, namespace: str = "default") -> None:
    """What kube-scheduler does on each retry of a pending pod: its FailedScheduling event again (count and
    lastTimestamp bumped), so the cluster's clock, moved by ``sim.advance``, shows in a timestamp."""
    for event in sim.list("Event", namespace):
        if event.get("reason") == "FailedScheduling":
            sim.add_event("Pod", namespace, event["involvedObject"]["name"], "FailedScheduling", event["message"],
                          type_="Warning", component="default-scheduler")


class Lines:
    """Reads a running command's stderr in the background, so a test can wait for a line."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True)
        self._thread.start()

    def has(self, text):
        return any(text in line for line in list(self.lines))

    def text(self):
        self._thread.join(timeout=30)
        return "".join(self.lines)
