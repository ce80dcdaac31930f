"""Benchmark: `kaitoctl status` against 1, 10 and 100 workspaces, and how fast `apply` notices Ready.

Runs against the test cluster (tests/kubesim: the real control plane from KUBEBUILDER_ASSETS),
side by side:

1. API requests and wall time of `kaitoctl status` (the real command, a subprocess) in a
   namespace holding 1, 10 and 100 ready workspaces: the requests must stay flat in N.
   The same list view is also timed in-process, without the interpreter start-up.
2. The delay between the last pod of a workspace turning Ready (when the fixture's pod watch
   first sees it) and `kaitoctl apply` returning, for 1 and 3 replicas.

    .venv/bin/python bench/bench_status.py [--repeat 3]

Numbers depend on the machine; compare the rows of one run, not runs on different machines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _venv import use_project_venv

use_project_venv("kubernetes", "kaitoctl")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from kubesim import KubeSim  # noqa: E402

ITYPE = "Standard_NC12s_v3"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITOCTL_")}
    env.update(KUBECONFIG=os.devnull, NO_COLOR="1", COLUMNS="250")
    return env


def _workspace(name: str, count: int = 1) -> "object":
    from kaitoctl.workspace import Workspace

    return Workspace.model_validate({
        "apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace",
        "metadata": {"name": name, "namespace": "default"},
        "resource": {"count": count, "instanceType": ITYPE, "labelSelector": {"matchLabels": {"apps": "llm"}}},
        "inference": {"preset": {"name": "falcon-7b"}},
    })


def _populate(sim: KubeSim, n: int) -> None:
    """n ready workspaces, created the way apply creates them (rendered, stamped, server-side applied)."""
    from kaitoctl.apply import stamp
    from kaitoctl.render import render_workspace

    have = {d["metadata"]["name"] for d in sim.list("Deployment", "default")}
    for i in range(n):
        name = f"ws-{i:03d}"
        if name in have:
            continue
        for obj in stamp(render_workspace(_workspace(name)), 1):
            sim.apply_as("kaitoctl", obj)

    def all_ready() -> bool:
        deps = sim.list("Deployment", "default")
        return len(deps) >= n and all((d.get("status") or {}).get("readyReplicas") == 1 for d in deps)

    sim.wait_until(all_ready, timeout=300, what=f"{n} ready workspaces")


def _status_subprocess(sim: KubeSim) -> tuple[float, int, int]:
    sim.clear_requests()
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kaitoctl", "status", "--kubeconfig", sim.kubeconfig_path],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    rows = len(proc.stdout.splitlines()) - 1
    return wall, len(sim.requests), rows


def _status_in_process(sim: KubeSim) -> tuple[float, int]:
    from kaitoctl.kube import connect
    from kaitoctl.status import list_workspaces

    kube = connect(Path(sim.kubeconfig_path))
    sim.clear_requests()
    start = time.perf_counter()
    views = list_workspaces(kube, "default")
    wall = time.perf_counter() - start
    assert all(v.condition("InferenceReady") == "True" for v in views)
    return wall, len(sim.requests)


def bench_status(repeat: int) -> None:
    print("kaitoctl status (list view) against N ready workspaces")
    print(f"{'N':>4}  {'requests':>8}  {'rows':>4}  {'subprocess s (median)':>22}  {'in-process ms (median)':>23}")
    with KubeSim(tick_seconds=0.01) as sim:
        for i in range(12):
            sim.add_node(f"gpu-{i}", labels={"apps": "llm"}, gpus=10, instance_type=ITYPE)
        first_requests = None
        for n in (1, 10, 100):
            _populate(sim, n)
            runs = [_status_subprocess(sim) for _ in range(repeat)]
            inproc = [_status_in_process(sim) for _ in range(repeat)]
            requests = {r[1] for r in runs}
            assert len(requests) == 1, f"request count varied between runs: {requests}"
            first_requests = first_requests or runs[0][1]
            print(f"{n:>4}  {runs[0][1]:>8}  {runs[0][2]:>4}  {statistics.median(r[0] for r in runs):>22.2f}  "
                  f"{statistics.median(r[0] for r in inproc) * 1000:>23.1f}")
        print(f"requests per `status` do not grow with N: {first_requests} for 1, 10 and 100 workspaces "
              "(one LIST each of deployments, statefulsets, pods, services)")


def _apply_and_time(sim: KubeSim, path: Path) -> tuple[float, float]:
    """Run `kaitoctl apply`; (when it printed that the rollout is done, when it exited), time.time()."""
    proc = subprocess.Popen([sys.executable, "-m", "kaitoctl", "apply", "-f", str(path), "--kubeconfig",
                             sim.kubeconfig_path, "--timeout", "120s"], cwd=ROOT, env={**_env(), "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reported = None
    assert proc.stderr is not None
    for line in proc.stderr:
        if "successfully rolled out after" in line and reported is None:
            reported = time.time()
    code = proc.wait()
    exited = time.time()
    if code != 0 or reported is None:
        raise SystemExit(f"apply failed with exit code {code}")
    return reported, exited


def bench_ready_to_return(repeat: int) -> None:
    import yaml

    print()
    print("delay between the last pod turning Ready and `kaitoctl apply` reporting it / returning")
    print(f"{'replicas':>8}  {'ready->reported ms':>20}  {'ready->exited ms':>18}  {'median reported/exited':>23}")
    for replicas in (1, 3):
        reported_ms, exited_ms = [], []
        for attempt in range(repeat):
            with KubeSim(tick_seconds=0.025) as sim, tempfile.TemporaryDirectory() as tmp:
                for i in range(replicas + 1):
                    sim.add_node(f"gpu-{i}", labels={"apps": "llm"}, gpus=2, instance_type=ITYPE)
                path = Path(tmp) / "ws.yaml"
                path.write_text(yaml.safe_dump(_workspace(f"lat-{attempt}", replicas).canonical()))
                reported, exited = _apply_and_time(sim, path)
                pods = [p["metadata"]["name"] for p in sim.list("Pod", "default")]
                last_ready = max(t for t in (sim.ready_time("default", p) for p in pods) if t is not None)
                reported_ms.append((reported - last_ready) * 1000)
                exited_ms.append((exited - last_ready) * 1000)
        print(f"{replicas:>8}  {', '.join(f'{d:.0f}' for d in reported_ms):>20}  "
              f"{', '.join(f'{d:.0f}' for d in exited_ms):>18}  "
              f"{statistics.median(reported_ms):>11.0f} / {statistics.median(exited_ms):<9.0f}")
    print("(ready->reported includes the deployment controller's status update after the pod's Ready; "
          "ready->exited adds the history write and the interpreter's exit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median shown)")
    args = parser.parse_args()
    bench_status(args.repeat)
    bench_ready_to_return(args.repeat)


if __name__ == "__main__":
    main()
