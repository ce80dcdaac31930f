"""The images and kaitoctl's renderer agree: the pod runs what the image runs, where the image put it."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kaitoctl.catalog import presets
from kaitoctl.render import render_workspace
from kaitoctl.workspace import Workspace

from .conftest import REPO, script_env
from .dockerfile_model import Dockerfile


def _workspace(preset_name: str, **inference: Any) -> Workspace:
    preset = presets()[preset_name]
    data: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": "ws-docker", "namespace": "llm"},
        "resource": {"instanceType": "Standard_NC24ads_A100_v4", "labelSelector": {"matchLabels": {"apps": "x"}}},
        "inference": {"preset": {"name": preset.name}, **inference},
    }
    if preset.distributed:
        data["resource"]["count"] = 2
    if preset.access == "private":
        data["inference"]["preset"]["accessMode"] = "private"
        data["inference"]["preset"]["presetOptions"] = {"image": "myregistry.azurecr.io/llama/llama-2:0.1.0"}
    return Workspace.model_validate(data)


def _main_container(ws: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rendered workload's main container and its pod spec."""
    workload = next(o for o in render_workspace(ws) if o["kind"] in ("Deployment", "StatefulSet"))
    return workload["spec"]["template"]["spec"]["containers"][0], workload["spec"]["template"]["spec"]


def _public() -> list[str]:
    return [name for name, p in presets().items() if p.access == "public" and not p.distributed]


@pytest.mark.parametrize("preset_name", _public()[:3])
def test_pod_command_and_args_are_the_image_cmd(server_dockerfile: Dockerfile, preset_name: str) -> None:
    container, _ = _main_container(_workspace(preset_name))
    assert container["command"] + container["args"] == server_dockerfile.final.last("CMD").words


def test_pod_pulls_the_image_build_presets_tags(server_dockerfile: Dockerfile) -> None:
    name = _public()[0]
    container, _ = _main_container(_workspace(name))
    printed = subprocess.run(
        ["bash", str(REPO / "docker" / "build-presets.sh"), name], capture_output=True, text=True, env=script_env(), timeout=60
    )
    command = shlex.split(printed.stdout.splitlines()[-1])
    assert container["image"] == command[command.index("--tag") + 1]


def test_pod_runs_as_the_image_user_with_a_writable_home(server_dockerfile: Dockerfile) -> None:
    container, pod = _main_container(_workspace(_public()[0]))
    final = server_dockerfile.final
    uid, gid = final.last("USER").words[0].split(":")
    assert pod["securityContext"]["runAsUser"] == int(uid) and pod["securityContext"]["runAsGroup"] == int(gid)
    assert pod["securityContext"]["runAsNonRoot"] is True
    # the root filesystem is read-only in the pod: home and caches must sit on the /tmp emptyDir
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounted
    assert final.last("WORKDIR").words[0] == "/tmp"
    env = {e["name"]: e.get("value") for e in container["env"]}
    for name in ("HOME", "HF_HOME"):
        assert (env.get(name) or final.env[name]).startswith("/tmp")


def test_pod_reads_weights_where_the_image_puts_them_and_serves_the_exposed_port(server_dockerfile: Dockerfile) -> None:
    container, _ = _main_container(_workspace(_public()[0]))
    final = server_dockerfile.final
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KAITOCTL_MODEL"] == final.env["KAITOCTL_MODEL"] == "/workspace/tfs/weights"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert [str(ports["http"])] == final.last("EXPOSE").words
    assert env["KAITOCTL_BIND"].endswith(f":{ports['http']}")


def test_distributed_pods_run_torchrun_on_the_installed_server_module() -> None:
    name = next(n for n, p in presets().items() if p.distributed)
    container, _ = _main_container(_workspace(name))
    assert container["command"] == ["torchrun"]
    assert container["args"][-2:] == ["-m", "kaitoctl_server"]
    # torch (installed first in the image) provides torchrun; the server package provides __main__
    assert shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert importlib.util.find_spec("kaitoctl_server.__main__") is not None


def test_adapter_pods_copy_data_from_the_adapter_image(adapter_dockerfile: Dockerfile) -> None:
    image = "myregistry.azurecr.io/adapters/tiny-lora:0.1.0"
    ws = _workspace(_public()[0], adapters=[{"source": {"name": "tiny-lora", "image": image}, "strength": "0.5"}])
    _, pod = _main_container(ws)
    (adapter_init,) = [c for c in pod["initContainers"] if c["image"] == image]
    (copy,) = adapter_dockerfile.final.all("COPY")
    data_dir = copy.words[-1].rstrip("/")
    # the copy runs a tool from a shared volume, nothing from the (FROM scratch) adapter image but its data
    assert adapter_init["command"][0] != "/bin/sh"
    assert f"{data_dir}/." in adapter_init["command"] or data_dir in adapter_init["command"]
