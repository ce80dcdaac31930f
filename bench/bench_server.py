"""Benchmark of the bundled inference server: what merging saves, and what HTTP costs.

One run, side by side, on a random ~25M-parameter Llama (hidden 512, 8 layers)
with two LoRA adapters of different ranks, built offline in a temporary
directory:

- tokens/s of the merged model ÷ the base model (target >= 0.98: merging must
  cost nothing per token);
- tokens/s of an unmerged PeftModel combined KAITO's way (add_weighted_adapter,
  svd, never merge_and_unload) ÷ the base model (what merging saves);
- tokens/s of HTTP POST /chat on the pods' gunicorn server ÷ raw generate()
  on the same merged weights (target >= 0.95);
- merge time ÷ load time, and peak memory growth during the merge ÷ model size
  (the merge must never hold a second copy of the model).

Generation is greedy with a fixed number of new tokens (min_new_tokens), runs
are interleaved and the median is kept, so that background load hits all
variants alike. Run:

    .venv/bin/python bench/bench_server.py [--new-tokens 64] [--repeats 5]
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
import time
import urllib.request
from pathlib import Path

from _venv import use_project_venv

use_project_venv("torch", "transformers", "peft", "flask", "kaitoctl_server")

PROMPT = "Kubernetes schedules pods onto nodes that have free GPUs, and"
STRENGTHS = {"a": 0.6, "b": 0.8}


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Reset VmHWM (peak RSS) so the next reading is the peak of what follows (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def build(root: Path) -> tuple[Path, dict[str, Path]]:
    from kaitoctl_server.tiny import make_lora_adapter, make_tiny_model

    model = make_tiny_model(root / "model", "llama", hidden_size=512, num_layers=8, intermediate_size=1376,
                            num_heads=8, max_position_embeddings=2048)
    adapters = {
        "a": make_lora_adapter(model, root / "adapters" / "a", r=8, alpha=16,
                               targets=["q_proj", "k_proj", "v_proj", "o_proj"], seed=1),
        "b": make_lora_adapter(model, root / "adapters" / "b", r=16, alpha=16,
                               targets=["q_proj", "v_proj", "gate_proj"], seed=2),
    }
    return model, adapters


def tokens_per_second(model, input_ids, new_tokens: int) -> float:
    import torch

    with torch.inference_mode():
        started = time.perf_counter()
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
        elapsed = time.perf_counter() - started
    assert out.shape[1] - input_ids.shape[1] == new_tokens
    return new_tokens / elapsed


def http_tokens_per_second(url: str, new_tokens: int) -> float:
    body = {"prompt": PROMPT, "return_full_text": False,
            "generate_kwargs": {"do_sample": False, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}}
    request = urllib.request.Request(url + "/chat", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        response.read()
    return new_tokens / (time.perf_counter() - started)


def kaito_unmerged(model_dir: Path, adapters: dict[str, Path]):
    """KAITO's 2024 server: PeftModel + add_weighted_adapter(svd) into "combined_adapter", left unmerged."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    names = list(adapters)
    peft_model = PeftModel.from_pretrained(base, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(adapters[name], adapter_name=name)
    peft_model.add_weighted_adapter(names, [STRENGTHS[n] for n in names], adapter_name="combined_adapter",
                                    combination_type="svd")
    peft_model.set_adapter("combined_adapter")
    for name in names:
        peft_model.delete_adapter(name)
    return peft_model.eval()


def start_gunicorn(model_dir: Path, adapter_dir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITOCTL_")}
    env.update(KAITOCTL_MODEL=str(model_dir), KAITOCTL_ADAPTER_DIR=str(adapter_dir),
               KAITOCTL_ADAPTERS=json.dumps([{"name": n, "strength": s} for n, s in STRENGTHS.items()]),
               KAITOCTL_BIND=f"127.0.0.1:{port}", HF_HUB_OFFLINE="1")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    proc = subprocess.Popen([str(gunicorn), "--config", "python:kaitoctl_server.gunicorn_conf",
                             "kaitoctl_server.wsgi:app"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(3000):
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("gunicorn did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from kaitoctl_server.adapters import load_adapter
    from kaitoctl_server.config import AdapterRef
    from kaitoctl_server.merge import merge_adapters

    hf_logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="kaitoctl-bench-") as tmp:
        model_dir, adapters = build(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        input_ids = tokenizer(PROMPT, return_tensors="pt").input_ids

        # load, then merge (the start-up path's two CPU steps), three times on fresh models;
        # the peak memory growth is read around the merge
        refs = [AdapterRef(n, str(adapters[n]), s) for n, s in STRENGTHS.items()]
        load_times, page_in_times, merge_times = [], [], []
        for _ in range(3):
            started = time.perf_counter()
            merged = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
            load_times.append(time.perf_counter() - started)
            # from_pretrained maps the checkpoint lazily: read one value per page of every weight, so
            # that page-in is timed on its own and the memory baseline holds the whole model
            started = time.perf_counter()
            for param in merged.parameters():
                param.detach().view(-1)[::1024].sum()
            page_in_times.append(time.perf_counter() - started)
            loaded = [load_adapter(ref, merged) for ref in refs]
            rss_before = status_kb("VmRSS")
            reset_peak_rss()
            merge_times.append(merge_adapters(merged, loaded).seconds)
            peak_growth = (status_kb("VmHWM") - rss_before) * 1024
        model_bytes = sum(p.numel() * p.element_size() for p in merged.parameters())
        merged_bytes = sum(merged.get_submodule(name).weight.numel() * 4
                           for name in {m for a in loaded for m in a.layers})
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        unmerged = kaito_unmerged(model_dir, adapters)

        proc, url = start_gunicorn(model_dir, Path(tmp) / "adapters")
        try:
            runs: dict[str, list[float]] = {"base": [], "merged": [], "kaito": [], "http": [], "raw": []}
            for model in (base, merged, unmerged):  # warm up
                tokens_per_second(model, input_ids, 8)
            http_tokens_per_second(url, 8)
            for _ in range(args.repeats):
                runs["base"].append(tokens_per_second(base, input_ids, args.new_tokens))
                runs["merged"].append(tokens_per_second(merged, input_ids, args.new_tokens))
                runs["kaito"].append(tokens_per_second(unmerged, input_ids, args.new_tokens))
                runs["raw"].append(tokens_per_second(merged, input_ids, args.new_tokens))
                runs["http"].append(http_tokens_per_second(url, args.new_tokens))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

    tps = {k: statistics.median(v) for k, v in runs.items()}
    load, page_in, merge = (statistics.median(t) for t in (load_times, page_in_times, merge_times))
    rows = [
        ("merged ÷ base tokens/s", tps["merged"] / tps["base"], ">= 0.98",
         f"{tps['merged']:.1f} / {tps['base']:.1f} tok/s"),
        ("unmerged PeftModel (KAITO) ÷ base", tps["kaito"] / tps["base"], "(shows the saving)",
         f"{tps['kaito']:.1f} / {tps['base']:.1f} tok/s"),
        ("HTTP /chat ÷ raw generate()", tps["http"] / tps["raw"], ">= 0.95",
         f"{tps['http']:.1f} / {tps['raw']:.1f} tok/s"),
        ("merge time ÷ load time (lazy mmap)", merge / load, "",
         f"{merge * 1000:.0f} ms / {load * 1000:.0f} ms"),
        ("merge time ÷ (load + page-in)", merge / (load + page_in), "",
         f"{merge * 1000:.0f} ms / {(load + page_in) * 1000:.0f} ms"),
        ("peak memory growth in merge ÷ model size", peak_growth / model_bytes, "< 1 (no second copy)",
         f"{peak_growth / 2**20:.1f} MiB / {model_bytes / 2**20:.1f} MiB"),
        ("  (for scale: merged weights ÷ model size)", merged_bytes / model_bytes, "",
         f"{merged_bytes / 2**20:.1f} MiB of weights rewritten"),
    ]
    params = model_bytes / 4 / 1e6
    print(f"model: random Llama, {params:.1f}M params, float32, CPU, torch threads {torch.get_num_threads()}; "
          f"adapters a (r=8, q/k/v/o, strength {STRENGTHS['a']}) + b (r=16, q/v/gate, strength {STRENGTHS['b']}); "
          f"{args.new_tokens} new tokens, greedy, median of {args.repeats}")
    width = max(len(r[0]) for r in rows)
    print(f"{'ratio'.ljust(width)}  {'value':>7}  {'target':<22} measured")
    for name, ratio, target, detail in rows:
        print(f"{name.ljust(width)}  {ratio:7.3f}  {target:<22} {detail}")


if __name__ == "__main__":
    main()
