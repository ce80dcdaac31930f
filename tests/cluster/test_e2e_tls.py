"""TLS as the real apiserver serves it: verified by the kubeconfig's CA, or knowingly not verified."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import ROOT, gpu_node, kaitoctl_env


def _kubeconfig(sim, tmp_path: Path, name: str, **cluster_fields) -> str:
    config = yaml.safe_load(Path(sim.kubeconfig_path).read_text())
    cluster = config["clusters"][0]["cluster"]
    del cluster["certificate-authority-data"]
    cluster.update(cluster_fields)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kaitoctl", *args], cwd=ROOT, env=kaitoctl_env(),
                          capture_output=True, text=True, timeout=60, check=False)


def test_insecure_skip_tls_verify_is_quiet_and_debug_says_so_once(sim, kaitoctl, write_ws, tmp_path):
    gpu_node(sim)
    assert kaitoctl("apply", "-f", write_ws(), "--timeout", "60s").returncode == 0
    insecure = _kubeconfig(sim, tmp_path, "insecure", **{"insecure-skip-tls-verify": True})

    quiet = _run("status", "-A", "--kubeconfig", insecure)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines()[1].split()[:2] == ["default", "falcon"]
    assert quiet.stderr == ""                       # kubectl prints nothing either; urllib3 warned 4 times

    watched = _run("status", "falcon", "--watch", "--timeout", "30s", "--kubeconfig", insecure)
    assert watched.returncode == 0, watched.stderr
    assert "Warning" not in watched.stderr and "InsecureRequest" not in watched.stderr

    debug = _run("--debug", "status", "--kubeconfig", insecure)
    assert debug.returncode == 0, debug.stderr
    assert debug.stderr.count("TLS verification is off") == 1
    assert f"TLS verification is off for {sim.url}" in debug.stderr
    assert "InsecureRequestWarning" not in debug.stderr


def test_a_server_certificate_the_kubeconfig_does_not_trust_is_refused(sim, tmp_path):
    untrusted = _kubeconfig(sim, tmp_path, "no-ca")
    result = _run("status", "--kubeconfig", untrusted)
    assert result.returncode == 4
    assert f"kaitoctl: error: TLS error talking to the API server at {sim.url}" in result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr
