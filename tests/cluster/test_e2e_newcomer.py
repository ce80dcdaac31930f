"""What a newcomer trips over against a cluster (issue 14): whole tables when piped, a second delete,
a kubeconfig that reaches something that is not a Kubernetes API."""

from __future__ import annotations

import http.server
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

from kaitoctl.cli import main

from .conftest import ROOT, adapter, gpu_node, kaitoctl_env, workspace_doc, writes

LONG = "a-rather-long-adapter-name-that-people-type"


def test_piped_status_wide_and_history_print_every_cell_whole_on_one_line(sim, kaitoctl, write_ws):
    gpu_node(sim, gpus=4)
    adapters = [adapter(f"{LONG}-{i}", f"registry.example.com/team/adapters/{LONG}-{i}:1.0.0", "0.5")
                for i in range(4)]
    path = write_ws(workspace_doc("falcon", adapters=adapters))
    assert kaitoctl("apply", "-f", path, "--timeout", "60s").returncode == 0
    update = ["adapters", "update", "falcon"] + [arg for i in range(4) for arg in ("--strength", f"{LONG}-{i}=0.8")]
    assert kaitoctl(*update, "--timeout", "60s").returncode == 0

    wide = kaitoctl("status", "-o", "wide")  # piped, COLUMNS=200 in the environment
    assert wide.returncode == 0, wide.stderr
    assert "…" not in wide.stdout
    header, row = wide.stdout.splitlines()
    assert header.split()[-1] == "IMAGE" and row.split()[0] == "falcon"
    assert ",".join(f"{LONG}-{i}=0.8" for i in range(4)) in row
    assert len(row.rstrip()) > 250  # longer than the width it used to be cut at

    history = kaitoctl("history", "falcon")
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert lines[0].split() == ["REVISION", "TIME", "ORIGIN", "OUTCOME", "ROLLOUT", "CHANGES"]
    changes = "; ".join(f"adapter {LONG}-{i} strength 0.5 → 0.8" for i in range(4))
    assert lines[1].startswith("2*") and lines[1].rstrip().endswith(changes)  # one line, not wrapped
    assert lines[2].startswith("1 ") and lines[3] == "* = running now"


def test_a_second_delete_is_not_found_unless_ignore_not_found(sim, kaitoctl, write_ws):
    gpu_node(sim)
    assert kaitoctl("apply", "-f", write_ws(), "--timeout", "60s").returncode == 0
    assert kaitoctl("delete", "falcon").returncode == 0
    again = kaitoctl("delete", "falcon")
    assert again.returncode == 4
    assert "workspace 'falcon' not found in namespace 'default'" in again.stderr
    assert "--ignore-not-found" in again.stderr
    ignored = kaitoctl("delete", "falcon", "--ignore-not-found")
    assert ignored.returncode == 0, ignored.stderr
    assert ignored.stdout == "" and "error" not in ignored.stderr


class _NotKubernetes(http.server.BaseHTTPRequestHandler):
    """A web server that is not a Kubernetes API: an HTML page with ``status`` for every path."""

    status = 404

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"<html><body><h1>Not Found</h1>nginx</body></html>" if self.status == 404 else b"<html>welcome</html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_kubernetes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    handler = type("Handler", (_NotKubernetes,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: web
  cluster: {{server: "http://127.0.0.1:{server.server_port}", insecure-skip-tls-verify: true}}
users:
- name: me
  user: {{token: abc}}
contexts:
- name: web
  context: {{cluster: web, user: me, namespace: llm}}
current-context: web
""")
    try:
        yield config
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("not_kubernetes", [404, 200], indirect=True, ids=["a-404-page", "a-200-page"])
@pytest.mark.parametrize("argv", [["status", "falcon"], ["delete", "falcon"]])
def test_a_server_that_is_not_a_kubernetes_api_is_named_as_such(
        not_kubernetes: Path, argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--kubeconfig", str(not_kubernetes)])
    err = capsys.readouterr().err
    assert info.value.code == 4, err
    assert "not found" not in err
    assert "is not a Kubernetes API server: asked to list deployments.apps" in err
    assert "server said: <html>" in err
    assert "hint: check `clusters[].cluster.server`" in err


def _without_registry(kaitoctl, *args: str) -> "subprocess.CompletedProcess[str]":
    """`kaitoctl ARGS` as a newcomer runs it: KAITOCTL_PRESET_REGISTRY not set."""
    env = {k: v for k, v in kaitoctl_env().items() if k != "KAITOCTL_PRESET_REGISTRY"}
    return subprocess.run(kaitoctl.argv(args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
                          check=False)


def test_apply_and_preflight_refuse_a_preset_image_without_a_registry_and_say_the_fix(sim, kaitoctl, write_ws):
    gpu_node(sim)
    path = write_ws()
    for args in (("preflight", "-f", path), ("apply", "-f", path), ("apply", "-f", path, "--skip-preflight")):
        refused = _without_registry(kaitoctl, *args)
        assert refused.returncode == 5, refused.stderr
        assert ("no registry is set for the preset image kaitoctl-falcon-7b:0.1.0: nothing is published at the "
                "default ghcr.io/kaitoctl" in refused.stdout + refused.stderr)
        assert "pass --registry R or export KAITOCTL_PRESET_REGISTRY=R" in refused.stdout + refused.stderr
    assert writes(sim) == []  # nothing half-applied


def test_the_registry_is_said_and_updates_keep_pulling_from_where_apply_did(sim, kaitoctl, write_ws):
    gpu_node(sim)
    path = write_ws(workspace_doc("falcon", adapters=[adapter("a", strength="0.5")]))
    checked = _without_registry(kaitoctl, "preflight", "-f", path, "--registry", "reg.example.com/team")
    assert checked.returncode == 0, checked.stderr
    assert "preset image reg.example.com/team/kaitoctl-falcon-7b:0.1.0 (registry from --registry)" in checked.stdout
    applied = _without_registry(kaitoctl, "apply", "-f", path, "--registry", "reg.example.com/team",
                                "--timeout", "60s")
    assert applied.returncode == 0, applied.stderr
    assert "preset image reg.example.com/team/kaitoctl-falcon-7b:0.1.0 (registry from --registry)" in applied.stderr

    updated = _without_registry(kaitoctl, "adapters", "update", "falcon", "--strength", "a=0.8", "--timeout", "60s")
    assert updated.returncode == 0, updated.stderr
    assert ("preset image reg.example.com/team/kaitoctl-falcon-7b:0.1.0 (registry from the running workload)"
            in updated.stderr)
    containers = sim.get("Deployment", "default", "falcon")["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == "reg.example.com/team/kaitoctl-falcon-7b:0.1.0"
