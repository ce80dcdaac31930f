"""Suite-wide settings: never reach a model hub, never use a real kubeconfig."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Where the preset images are (kaitoctl has no default: issue 14); tests of the unset case delenv it.
os.environ.setdefault("KAITOCTL_PRESET_REGISTRY", "ghcr.io/kaitoctl")
# A stray ~/.kube/config must never be used by a test: tests pass --kubeconfig explicitly.
os.environ["KUBECONFIG"] = os.devnull


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001 - pytest's hook signature
    """Say which control plane the cluster tests ran on (or why they could not)."""
    import sys

    kubesim = sys.modules.get("kubesim.controlplane")
    plane = kubesim.started() if kubesim else None
    if plane is not None:
        terminalreporter.write_line(f"cluster tests: kube-apiserver {plane.version} at {plane.url} "
                                    f"(etcd, controller-manager, scheduler, kwok from {plane.assets})")
    elif kubesim is not None and any("KUBEBUILDER_ASSETS" in str(r.longrepr)
                                     for r in terminalreporter.stats.get("skipped", [])):
        terminalreporter.write_line(f"cluster tests: skipped: {kubesim.why_unavailable()}")
