"""Benchmark of continuous batching in the bundled server: what concurrent clients get.

One run, on the ~25M-parameter random Llama of bench_server.py (hidden 512, 8
layers) with two merged LoRA adapters, built offline in a temporary directory:

- the pods' server (``python -m kaitoctl_server``: gunicorn) with the two
  adapters merged; aggregate tokens/s of 1, 2, 4, 8, 16 concurrent clients,
  each streaming /v1/completions (greedy, a fixed number of new tokens), ÷ the
  tokens/s of 1 client (goal >= 3.0 at 8 clients on a 2-core machine);
- p50 / p95 time to first token at 8 clients;
- merged ÷ no-adapter tokens/s, one client, for the pods' server and for
  ``kaitoctl serve`` (werkzeug, in-process) (goal >= 0.95 for both): the two
  servers of a pair run side by side and are requested alternately, so
  background load hits both alike; the median of the repeats is kept.

The machine's load average is printed before and after: other work on the
machine lowers every absolute number (ratios are taken within one run).

    .venv/bin/python bench/bench_batching.py [--new-tokens 32] [--rounds 5] [--repeats 15] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import STRENGTHS, build  # noqa: E402 - the same model and adapters as bench_server

PROMPTS = [
    "Kubernetes schedules pods onto nodes that have free GPUs, and",
    "The workspace controller reconciles the desired state by",
    "A LoRA adapter adds a low-rank update to each target weight so",
    "Continuous batching lets new requests join a running batch when",
]
CLIENTS = (1, 2, 4, 8, 16)
TORCH_THREADS = ""  # --torch-threads: OMP_NUM_THREADS of the servers ("" = torch's default, one per core)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], env_changes: dict[str, str]) -> tuple[subprocess.Popen, str, int]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITOCTL_")}
    env.update(env_changes, HF_HUB_OFFLINE="1")
    if TORCH_THREADS:
        env["OMP_NUM_THREADS"] = TORCH_THREADS
    argv = [a.replace("{port}", str(port)) for a in cmd]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}", port


def wait_ready(proc: subprocess.Popen, url: str) -> None:
    for _ in range(3000):
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.args}")
        time.sleep(0.1)
    raise SystemExit(f"server not ready: {proc.args}")


def pods_server(model_dir: Path, adapter_dir: Path, adapters: dict[str, float]) -> tuple[subprocess.Popen, str]:
    proc, url, port = start(
        [sys.executable, "-m", "kaitoctl_server", "--model", str(model_dir), "--bind", "127.0.0.1:{port}",
         "--adapter-dir", str(adapter_dir),
         "--adapters", json.dumps([{"name": n, "strength": s} for n, s in adapters.items()])],
        {"KAITOCTL_MAX_BATCH": "16", "KAITOCTL_MAX_QUEUE": "64"})
    return proc, url


def local_server(model_dir: Path, adapter_dir: Path, adapters: dict[str, float]) -> tuple[subprocess.Popen, str]:
    kaitoctl = Path(sys.executable).parent / "kaitoctl"
    flags = []
    for name, strength in adapters.items():
        flags += ["--adapter", f"{name}={adapter_dir / name}:{strength}"]
    proc, url, _ = start([str(kaitoctl), "serve", "--model", str(model_dir), "--port", "{port}", *flags], {})
    return proc, url


def stream_completion(url: str, prompt: str, new_tokens: int) -> tuple[float, float, int]:
    """(seconds to the first text chunk, total seconds, completion tokens) of one streamed completion."""
    body = {"prompt": prompt, "max_tokens": new_tokens, "min_tokens": new_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    request = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    first = None
    tokens = 0
    with urllib.request.urlopen(request, timeout=600) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if first is None and event["choices"] and event["choices"][0].get("text"):
                first = time.perf_counter() - started
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
    assert tokens == new_tokens, f"expected {new_tokens} tokens, got {tokens}"
    return first if first is not None else time.perf_counter() - started, time.perf_counter() - started, tokens


def concurrent_run(url: str, clients: int, new_tokens: int) -> tuple[float, list[float]]:
    """Aggregate tokens/s of ``clients`` clients, each making one request at the same time; and the TTFTs."""
    ttfts: list[float] = []
    totals = [0] * clients
    lock = threading.Lock()

    def client(i: int) -> None:
        first, _, tokens = stream_completion(url, PROMPTS[i % len(PROMPTS)], new_tokens)
        with lock:
            ttfts.append(first)
        totals[i] += tokens

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(totals) / (time.perf_counter() - started), ttfts


def paired(merged_url: str, none_url: str, repeats: int, new_tokens: int) -> tuple[float, float, float]:
    """One client, the two servers requested alternately: (median ratio merged ÷ none, median merged, median none)."""
    for _ in range(3):  # warm up
        for url in (merged_url, none_url):
            stream_completion(url, PROMPTS[0], 16)
    ratios, merged, none = [], [], []
    for i in range(repeats):
        prompt = PROMPTS[i % len(PROMPTS)]
        pair = {}
        for name, url in ((("merged", merged_url), ("none", none_url)) if i % 2 == 0
                          else (("none", none_url), ("merged", merged_url))):
            _, seconds, tokens = stream_completion(url, prompt, new_tokens)
            pair[name] = tokens / seconds
        ratios.append(pair["merged"] / pair["none"])
        merged.append(pair["merged"])
        none.append(pair["none"])
    return statistics.median(ratios), statistics.median(merged), statistics.median(none)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def fresh_pair(start: Callable[..., tuple[subprocess.Popen, str]], model_dir: Path, adapter_dir: Path,
               procs: list[subprocess.Popen], repeats: int, new_tokens: int) -> tuple[float, float, float]:
    """``paired`` on a merged and a no-adapter server of one kind (``pods_server`` or ``local_server``),
    fresh and started together so that neither carries the other's history; stopped after. ``procs``
    holds them meanwhile, for the caller's cleanup."""
    merged, merged_url = start(model_dir, adapter_dir, STRENGTHS)
    procs.append(merged)
    bare, bare_url = start(model_dir, adapter_dir, {})
    procs.append(bare)
    wait_ready(merged, merged_url)
    wait_ready(bare, bare_url)
    pair = paired(merged_url, bare_url, repeats, new_tokens)
    for proc in procs:
        stop(proc)
    procs.clear()
    return pair


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM if "kaitoctl_server" in proc.args else signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of 1, 2, 4, 8, 16 clients")
    parser.add_argument("--repeats", type=int, default=15, help="alternating requests per server, merged vs none")
    parser.add_argument("--torch-threads", default="",
                        help="OMP_NUM_THREADS for the servers (default: torch's, one per core); 1 is steadier on a "
                             "machine shared with other work, where 2 threads per server fight for 2 cores")
    args = parser.parse_args()
    global TORCH_THREADS
    TORCH_THREADS = args.torch_threads
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="kaitoctl-bench-") as tmp:
        model_dir, adapters = build(Path(tmp))
        adapter_dir = Path(tmp) / "adapters"
        procs: list[subprocess.Popen] = []
        try:
            pods, pods_url = pods_server(model_dir, adapter_dir, STRENGTHS)
            procs.append(pods)
            wait_ready(pods, pods_url)
            concurrent_run(pods_url, 2, 8)  # warm up
            # Rounds interleave the client counts, and each round's ratio is taken against its own 1-client
            # run, so that load from other work on the machine hits every count alike.
            tps: dict[int, list[float]] = {c: [] for c in CLIENTS}
            ratios: dict[int, list[float]] = {c: [] for c in CLIENTS}
            ttfts: dict[int, list[float]] = {c: [] for c in CLIENTS}
            for _ in range(args.rounds):
                one = None
                for clients in CLIENTS:
                    rate, firsts = concurrent_run(pods_url, clients, args.new_tokens)
                    one = rate if clients == 1 else one
                    tps[clients].append(rate)
                    ratios[clients].append(rate / one)
                    ttfts[clients].extend(firsts)

            for proc in procs:
                stop(proc)
            procs.clear()

            pods_pair = fresh_pair(pods_server, model_dir, adapter_dir, procs, args.repeats, args.new_tokens)
            local_pair = fresh_pair(local_server, model_dir, adapter_dir, procs, args.repeats, args.new_tokens)
        finally:
            for proc in procs:
                stop(proc)

    load_after = os.getloadavg()
    print(f"model: random Llama ~25M params (hidden 512, 8 layers), float32, CPU ({os.cpu_count()} cores); "
          f"adapters a (r=8) + b (r=16) merged; {args.new_tokens} new tokens per request, greedy, streamed "
          f"/v1/completions; median of {args.rounds} interleaved rounds; server torch threads "
          f"{args.torch_threads or 'default'}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (other work on the machine)")
    print(f"{'clients':>7}  {'tokens/s':>9}  {'÷ 1 client':>10}  {'TTFT p50':>9}  {'TTFT p95':>9}")
    for clients in CLIENTS:
        print(f"{clients:>7}  {statistics.median(tps[clients]):9.1f}  {statistics.median(ratios[clients]):10.2f}  "
              f"{percentile(ttfts[clients], 0.5) * 1000:7.0f}ms  {percentile(ttfts[clients], 0.95) * 1000:7.0f}ms")
    print(f"8 clients ÷ 1 client: {statistics.median(ratios[8]):.2f} (goal >= 3.0); TTFT at 8 clients p50 "
          f"{percentile(ttfts[8], 0.5) * 1000:.0f} ms, p95 {percentile(ttfts[8], 0.95) * 1000:.0f} ms")
    for name, (ratio, merged, none) in (("pods' server (gunicorn)", pods_pair), ("kaitoctl serve (werkzeug)", local_pair)):
        print(f"merged ÷ no-adapter tokens/s, {name}: {ratio:.3f} (median of {args.repeats} alternating pairs; "
              f"medians {merged:.1f} / {none:.1f} tok/s; goal >= 0.95)")


if __name__ == "__main__":
    main()
