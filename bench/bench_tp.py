"""Benchmark of tensor parallelism on CPU (gloo): what each rank holds, and what splitting costs per token.

One run, side by side, on a random ~25M-parameter Llama (hidden 512, 8 layers,
8 heads) with two LoRA adapters merged, built offline in a temporary directory.
Each variant is the real start-up path under ``torchrun --standalone``
(``kaitoctl_server.loader``: load split with ``tp_plan="auto"``, merge into each
slice) and the real driving path (rank 0's broadcasting runner, the other ranks'
follower loop), decoding a batch greedily for a fixed number of steps:

- weight bytes held per rank ÷ the whole model, at world size 2 (goal <= 0.55:
  every rank holds about half, never a copy of the model);
- tokens/s at world size 2 ÷ world size 1. On one CPU machine with gloo this is
  expected below 1: the ranks share the same cores and memory bandwidth, and
  every layer adds two all-reduces over loopback TCP. The split exists for
  models that do not fit one node, not for speed on a CPU.

Every process gets ``--threads`` threads (default 1: on a small, shared machine
OpenMP threads that wait on each other make the numbers noise; world size 2
then uses twice the cores of world size 1, which favours it). Variants are
interleaved ``--repeats`` times and the median is kept, so that background load
hits both alike. Run:

    .venv/bin/python bench/bench_tp.py [--steps 48] [--batch 4] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STRENGTHS = {"a": 0.6, "b": 0.8}


def worker(out: str, batch: int, steps: int) -> int:
    """Under torchrun: load as the pods do, then rank 0 drives ``steps`` decode steps; rank 0 writes JSON."""
    import time

    from kaitoctl_server.config import ServerConfig
    from kaitoctl_server.distributed import World, run_follower
    from kaitoctl_server.loader import load_served_model
    from kaitoctl_server.runner import BatchRunner

    world = World.from_env()
    config = ServerConfig.from_env()
    if world.rank > 0:
        return run_follower(config, world)
    served = load_served_model(config)
    runner = served.group or BatchRunner(served.model, served.model.get_input_embeddings().weight.device)
    held = whole = 0
    for param in served.model.parameters():
        local = param.to_local() if hasattr(param, "to_local") else param
        held += local.numel() * local.element_size()
        whole += param.numel() * param.element_size()
    prompt = served.tokenizer("Kubernetes schedules pods onto nodes that have free GPUs, and").input_ids
    started = time.perf_counter()
    tokens = runner.add([prompt] * batch).argmax(-1).tolist()
    for _ in range(steps - 1):
        tokens = runner.step(tokens).argmax(-1).tolist()
    seconds = time.perf_counter() - started
    runner.clear()
    Path(out).write_text(json.dumps({"held": held, "whole": whole, "tokens": batch * steps, "seconds": seconds}))
    if served.group is not None:
        served.group.stop()
    return 0


def run_variant(nproc: int, env: dict[str, str], batch: int, steps: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        env = {**env, "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
             __file__, "--worker", out.name, "--batch", str(batch), "--steps", str(steps)],
            env=env, capture_output=True, text=True, timeout=900, check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"world size {nproc} failed:\n{done.stderr[-4000:]}")
        return json.loads(Path(out.name).read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.batch, args.steps)

    from kaitoctl_server.tiny import make_lora_adapter, make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "llama", "llama", hidden_size=512, num_layers=8,
                                intermediate_size=1376, num_heads=8)
        for (name, strength), (r, targets, seed) in zip(STRENGTHS.items(), [
                (8, ("q_proj", "v_proj", "o_proj"), 1), (16, ("gate_proj", "up_proj", "down_proj"), 2)]):
            make_lora_adapter(model, Path(tmp) / "adapters" / name, r=r, alpha=2 * r, targets=targets, seed=seed)
        env = {**os.environ, "KAITOCTL_MODEL": str(model), "KAITOCTL_ADAPTER_DIR": str(Path(tmp) / "adapters"),
               "KAITOCTL_ADAPTERS": json.dumps([{"name": n, "strength": s} for n, s in STRENGTHS.items()]),
               "HF_HUB_OFFLINE": "1"}
        results: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for nproc in (1, 2):
                results[nproc].append(run_variant(nproc, env, args.batch, args.steps, args.threads))

    def rate(nproc: int) -> float:
        return statistics.median(r["tokens"] / r["seconds"] for r in results[nproc])

    one, two = results[1][0], results[2][0]
    print(f"model: {one['whole'] / 2**20:.1f} MiB of float32 weights; batch {args.batch}, {args.steps} greedy steps, "
          f"{args.threads} thread(s) per process, median of {args.repeats}")
    print(f"{'world size':>10} {'held per rank (MiB)':>20} {'held / whole':>13} {'tokens/s':>9}")
    for nproc, r in ((1, one), (2, two)):
        print(f"{nproc:>10} {r['held'] / 2**20:>20.1f} {r['held'] / r['whole']:>13.3f} {rate(nproc):>9.1f}")
    share = two["held"] / two["whole"]
    print(f"weight bytes held per rank / whole model at world size 2: {share:.3f} (goal <= 0.55: "
          f"{'met' if share <= 0.55 else 'NOT met'})")
    print(f"tokens/s world size 2 / world size 1 (CPU, gloo): {rate(2) / rate(1):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
