"""Benchmark: `kaitoctl status -A` and `apply` start-up against kubectl, on the real test control plane.

Starts the suite's control plane (tests/kubesim, from KUBEBUILDER_ASSETS), applies a few ready
workspaces, then times in the same run, alternating, each command as a user runs it (a fresh
process, wall time, median of --repeat runs):

- `kaitoctl status -A`                                  vs `kubectl get deploy,sts -A`
- `kaitoctl apply -f ws.yaml --dry-run=server` (no-op)  vs `kubectl apply --server-side --dry-run=server -f rendered.yaml`

and prints the ratios. Goal: `kaitoctl status -A` within 5x kubectl's wall time. kubectl must be on
PATH (or named by KUBECTL); without it the comparison is not made and the bench says so.

    KUBEBUILDER_ASSETS=.k8s-bin .venv/bin/python bench/bench_startup.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from kubesim import KubeSim, controlplane  # noqa: E402

ITYPE = "Standard_NC12s_v3"
GOAL = 5.0


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITOCTL_")}
    env.update(KUBECONFIG=os.devnull, NO_COLOR="1", COLUMNS="250")
    return env


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="runs per command (median shown)")
    parser.add_argument("--workspaces", type=int, default=3)
    args = parser.parse_args()
    if controlplane.assets_dir() is None:
        print(f"not run: {controlplane.why_unavailable()}")
        return 1
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    import yaml

    with KubeSim() as sim, tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            sim.add_node(f"gpu-{i}", labels={"apps": "llm"}, gpus=8, instance_type=ITYPE)
        kaitoctl = [sys.executable, "-m", "kaitoctl"]
        cfg = ["--kubeconfig", sim.kubeconfig_path]
        first = Path(tmp) / "ws-0.yaml"
        for i in range(args.workspaces):
            path = Path(tmp) / f"ws-{i}.yaml"
            path.write_text(yaml.safe_dump({
                "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "metadata": {"name": f"ws-{i}"},
                "resource": {"count": 1, "instanceType": ITYPE, "labelSelector": {"matchLabels": {"apps": "llm"}}},
                "inference": {"preset": {"name": "falcon-7b"}}}))
            _time([*kaitoctl, "apply", "-f", str(path), *cfg])
        rendered = Path(tmp) / "rendered.yaml"
        rendered.write_text(subprocess.run([*kaitoctl, "render", "-f", str(first)], cwd=ROOT, env=_env(),
                                           capture_output=True, text=True, check=True).stdout)
        pairs = [
            ("status -A", [*kaitoctl, "status", "-A", *cfg],
             [kubectl or "kubectl", "get", "deploy,sts", "-A", *cfg]),
            ("apply (no-op, server dry run)", [*kaitoctl, "apply", "-f", str(first), "--dry-run=server", *cfg],
             [kubectl or "kubectl", "apply", "--server-side", "--field-manager=kaitoctl", "--dry-run=server",
              "-f", str(rendered), *cfg]),
        ]
        print(f"control plane: kube-apiserver {sim.plane.version if sim.plane else '?'}; "
              f"{args.workspaces} ready workspaces; median of {args.repeat} runs, wall time of a fresh process")
        if kubectl is None:
            print("kubectl NOT FOUND on PATH (set KUBECTL=/path/to/kubectl): kaitoctl's times are shown without "
                  f"the kubectl baseline, so the goal (status -A <= {GOAL:.0f}x kubectl) is NOT checked")
        print(f"{'command':<32} {'kaitoctl s':>10} {'kubectl s':>10} {'ratio':>7}")
        verdict = 0
        for label, ours, theirs in pairs:
            mine, base = [], []
            for _ in range(args.repeat):
                mine.append(_time(ours))
                if kubectl:
                    base.append(_time(theirs))
            m = statistics.median(mine)
            if kubectl:
                b = statistics.median(base)
                print(f"{label:<32} {m:>10.3f} {b:>10.3f} {m / b:>6.1f}x")
                if label == "status -A":
                    ok = m / b <= GOAL
                    verdict = 0 if ok else 1
                    print(f"{'':<32} goal <= {GOAL:.0f}x: {'met' if ok else 'NOT met'}")
            else:
                print(f"{label:<32} {m:>10.3f} {'-':>10} {'-':>7}")
    return verdict


if __name__ == "__main__":
    sys.exit(main())
