"""Soak: apply / adapters update / rollback / scale, over and over, with API faults in between.

Runs the real `kaitoctl` command (a subprocess per operation) against the suite's test cluster
(tests/kubesim). One workspace, one 8-GPU node. Each cycle picks the next operation in turn:

    apply            the recorded Workspace with a new strength for adapter sql
    adapters update  `kaitoctl adapters update soak --strength chat=X`
    rollback         `kaitoctl rollback soak` (the latest earlier good revision)
    scale            the recorded Workspace with resource.count 1 <-> 2

and, in the faulted phase, arms the next fault in turn for the duration of that operation:

    forbid-history   configmaps patch forbidden (the history write): the apply must change nothing
    forbid-watch     pods watch forbidden: the revision must end "interrupted", never "applied"
    drop-watch       every open watch stream cut twice while the rollout is watched
    5xx              the Deployment write answers 500 once after its dry run passed (retried)
    webhook-403      the Deployment write is refused by an admission webhook after its dry run
                     passed: what was applied must be undone and the revision recorded failed
    none

After every cycle, once the cluster has settled, it checks that the workspace is consistent:
`kaitoctl apply --dry-run=server` of the Workspace recorded on the Deployment reports every
object "unchanged" (the live objects are what the record says), no other kaitoctl object of the
workspace exists, and the history is complete (no entry left "applying", the running revision
recorded with that very Workspace, revision numbers without gaps). Every object or entry that
fails a check counts as one inconsistency.

The baseline is the same operations without faults, measured in the same run: the faulted
cycles' mean time is printed as a ratio of it.

    .venv/bin/python bench/bench_soak.py [--cycles 50] [--baseline-cycles 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from kubesim import KubeSim  # noqa: E402

NAME = "soak"
ITYPE = "Standard_NC12s_v3"
OPERATIONS = ("apply", "adapters update", "rollback", "scale")
FAULTS = ("forbid-history", "forbid-watch", "drop-watch", "5xx", "webhook-403", "none")
STRENGTHS = ("0.2", "0.4", "0.6", "0.8", "1.0")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITOCTL_")}
    env.update(KUBECONFIG=os.devnull, NO_COLOR="1", COLUMNS="250")
    return env


class Soak:
    def __init__(self, sim: KubeSim, workdir: Path) -> None:
        self.sim = sim
        self.workdir = workdir
        self.files = 0
        self.exit_codes: dict[int, int] = {}

    def kaitoctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "kaitoctl", *args, "--kubeconfig", self.sim.kubeconfig_path]
        result = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
        self.exit_codes[result.returncode] = self.exit_codes.get(result.returncode, 0) + 1
        return result

    def write(self, doc: dict[str, Any]) -> str:
        self.files += 1
        path = self.workdir / f"ws-{self.files}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return str(path)

    def recorded(self) -> dict[str, Any]:
        deploy = self.sim.get("Deployment", "default", NAME)
        return json.loads(deploy["metadata"]["annotations"]["kaitoctl.io/workspace"])

    # -- operations --

    def operate(self, op: str, cycle: int) -> subprocess.CompletedProcess[str]:
        doc = self.recorded()
        if op == "apply":
            doc["inference"]["adapters"][0]["strength"] = STRENGTHS[cycle % len(STRENGTHS)]
            return self.kaitoctl("apply", "-f", self.write(doc), "--timeout", "120s")
        if op == "adapters update":
            return self.kaitoctl("adapters", "update", NAME, "--strength",
                                 f"chat={STRENGTHS[(cycle * 3) % len(STRENGTHS)]}", "--timeout", "120s")
        if op == "rollback":
            return self.kaitoctl("rollback", NAME, "--timeout", "120s")
        doc["resource"]["count"] = 2 if doc["resource"]["count"] == 1 else 1
        return self.kaitoctl("apply", "-f", self.write(doc), "--timeout", "120s")

    def with_fault(self, fault: str, action: Callable[[], Any]) -> Any:
        sim = self.sim
        stop = threading.Event()
        cutter: Optional[threading.Thread] = None
        if fault == "forbid-history":
            sim.forbid("patch", "configmaps")
        elif fault == "forbid-watch":
            sim.forbid("watch", "pods")
        elif fault == "5xx":
            sim.fail_next("patch", "deployments", 500, "etcdserver: request timed out", after=1)
        elif fault == "webhook-403":
            sim.fail_next("patch", "deployments", 403, 'admission webhook "soak.example.com" denied the request: '
                          "not now", after=1)
        elif fault == "drop-watch":
            def cut() -> None:
                for delay in (0.8, 0.4):
                    if stop.wait(delay):
                        return
                    sim.drop_watches()
            cutter = threading.Thread(target=cut, daemon=True)
            cutter.start()
        try:
            return action()
        finally:
            stop.set()
            if cutter is not None:
                cutter.join()
            sim.clear_faults()   # a fault the operation never reached is not left armed

    # -- checks --

    def settle(self) -> None:
        def settled() -> bool:
            deploy = self.sim.get("Deployment", "default", NAME)
            if deploy is None:
                return True
            spec, st = deploy["spec"], deploy.get("status") or {}
            pods = [p for p in self.sim.list("Pod", "default", f"kaito.sh/workspace={NAME}")]
            return (st.get("observedGeneration") == deploy["metadata"].get("generation")
                    and st.get("updatedReplicas", 0) == st.get("availableReplicas", 0) == st.get("replicas", 0)
                    == spec.get("replicas", 1) and len(pods) == spec.get("replicas", 1))
        self.sim.wait_until(settled, timeout=120.0, what="the workspace to settle")

    def inconsistencies(self) -> list[str]:
        problems: list[str] = []
        deploy = self.sim.get("Deployment", "default", NAME)
        if deploy is None:
            return ["deployment/soak is missing"]
        recorded = self.recorded()
        dry = self.kaitoctl("apply", "-f", self.write(recorded), "--dry-run=server")
        if dry.returncode != 0:
            problems.append(f"server dry run of the recorded workspace failed: {dry.stderr.strip()[-200:]}")
        problems += [f"differs from its record: {line}" for line in dry.stdout.splitlines()
                     if line.strip() and not line.endswith(" unchanged")]
        selector = f"kaito.sh/workspace={NAME}"
        for kind in ("Deployment", "StatefulSet", "Service"):
            for obj in self.sim.list(kind, "default", selector):
                if obj["metadata"]["name"] != NAME:
                    problems.append(f"stray {kind} {obj['metadata']['name']}")
        cm = self.sim.get("ConfigMap", "default", f"{NAME}-kaitoctl-history")
        entries = json.loads((cm or {}).get("data", {}).get("revisions.json", "[]"))
        numbers = [e["revision"] for e in entries]
        current = int(deploy["metadata"]["annotations"]["kaitoctl.io/revision"])
        problems += [f"revision {e['revision']} left 'applying'" for e in entries if e["outcome"] == "applying"]
        if numbers != list(range(numbers[0], numbers[0] + len(numbers))) if numbers else True:
            problems.append(f"history revisions have gaps: {numbers}")
        entry = next((e for e in entries if e["revision"] == current), None)
        if entry is None:
            problems.append(f"running revision {current} is not in the history")
        elif entry["workspace"] != recorded:
            problems.append(f"history of revision {current} records another Workspace than the one running")
        return problems


def run(cycles: int, faulted: bool, soak: Soak, first_cycle: int) -> tuple[list[float], int, list[str], dict[str, int]]:
    times: list[float] = []
    injected = 0
    inconsistent: list[str] = []
    outcomes: dict[str, int] = {}
    for i in range(cycles):
        cycle = first_cycle + i
        op = OPERATIONS[cycle % len(OPERATIONS)]
        # Shifted every round of operations, so that each operation meets every fault.
        fault = FAULTS[(i + i // len(OPERATIONS)) % len(FAULTS)] if faulted else "none"
        injected += fault != "none"
        start = time.perf_counter()
        result = soak.with_fault(fault, lambda: soak.operate(op, cycle))
        times.append(time.perf_counter() - start)
        key = f"{op} / {fault}: exit {result.returncode}"
        outcomes[key] = outcomes.get(key, 0) + 1
        soak.settle()
        found = soak.inconsistencies()
        inconsistent += [f"cycle {cycle} ({op}, {fault}): {p}" for p in found]
    return times, injected, inconsistent, outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--baseline-cycles", type=int, default=8)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, KubeSim(tick_seconds=0.02) as sim:
        sim.add_node("gpu-1", labels={"apps": "llm"}, gpus=8, instance_type=ITYPE)
        soak = Soak(sim, Path(tmp))
        doc = {"apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "metadata": {"name": NAME},
               "resource": {"count": 1, "instanceType": ITYPE, "labelSelector": {"matchLabels": {"apps": "llm"}}},
               "inference": {"preset": {"name": "falcon-7b"}, "adapters": [
                   {"source": {"name": "sql", "image": "registry.example.com/adapters/sql:1"}, "strength": "0.5"},
                   {"source": {"name": "chat", "image": "registry.example.com/adapters/chat:1"}, "strength": "0.5"}]}}
        first = soak.kaitoctl("apply", "-f", soak.write(doc), "--timeout", "120s")
        if first.returncode != 0:
            print(first.stderr, file=sys.stderr)
            return 1
        base_times, _, base_bad, _ = run(args.baseline_cycles, False, soak, 0)
        times, injected, bad, outcomes = run(args.cycles, True, soak, args.baseline_cycles)
        history = json.loads(soak.kaitoctl("history", NAME, "-o", "json").stdout)["items"]
        final = soak.inconsistencies()
    base = statistics.mean(base_times)
    mean = statistics.mean(times)
    print(f"baseline: {len(base_times)} cycles without faults, {base:.2f} s per cycle, "
          f"{len(base_bad)} inconsistencies")
    print(f"soak:     {len(times)} cycles, {injected} faults injected, {mean:.2f} s per cycle "
          f"({mean / base:.2f}x the baseline)")
    print("outcomes (operation / fault: exit code):")
    for key in sorted(outcomes):
        print(f"  {outcomes[key]:3d}  {key}")
    kept = {r["outcome"] for r in history}
    print(f"history: {len(history)} revisions kept, outcomes {sorted(kept)}")
    print(f"objects left inconsistent after a cycle: {len(bad)}; at the end: {len(final)}")
    for line in (bad + final)[:20]:
        print(f"  {line}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0 if not bad and not final and not base_bad else 1


if __name__ == "__main__":
    sys.exit(main())
