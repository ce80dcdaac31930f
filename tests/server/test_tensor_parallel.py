"""Tensor parallelism on CPU with gloo: a model split over two torchrun processes (docs/distributed.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kaitoctl_server.config import AdapterRef, ServerConfig
from kaitoctl_server.loader import load_served_model

HERE = Path(__file__).parent
# Two adapters of different ranks (8, 2) and strengths, one rsLoRA, touching
# column-parallel (q/k/v, gate/up) and row-parallel (o, down) projections.
TP_ADAPTERS = {"a2": -0.6, "a3": 1.5}


def torchrun(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def server_env(tiny, strengths: dict[str, float], **extra: str) -> dict[str, str]:
    import json

    env = dict(os.environ)
    env.update(
        KAITOCTL_MODEL=str(tiny.llama),
        KAITOCTL_ADAPTER_DIR=str(tiny.adapters),
        KAITOCTL_ADAPTERS=json.dumps([{"name": n, "strength": s} for n, s in strengths.items()]),
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def test_sharded_merge_equals_the_unsharded_merge(tiny, tmp_path):
    out = tmp_path / "gathered.pt"
    run = torchrun(["--standalone", "--nproc_per_node=2", str(HERE / "tp_shard_dump.py"), str(out)],
                   server_env(tiny, TP_ADAPTERS))
    assert run.returncode == 0, run.stderr[-4000:]
    dumped = torch.load(out)
    single = load_served_model(ServerConfig(
        model_dir=str(tiny.llama),
        adapters=tuple(AdapterRef(n, str(tiny.adapter(n)), s) for n, s in TP_ADAPTERS.items()),
    )).model
    expected = dict(single.named_parameters())
    assert dumped["weights"].keys() == expected.keys()
    for name, weight in expected.items():
        assert torch.equal(dumped["weights"][name], weight.detach()), name
    # Split, not copied: column-parallel rows, row-parallel columns, vocabulary rows of the embeddings.
    placements = dumped["placements"]
    assert placements["model.layers.0.self_attn.q_proj.weight"] == "(Shard(dim=0),)"
    assert placements["model.layers.0.self_attn.o_proj.weight"] == "(Shard(dim=1),)"
    assert placements["model.layers.1.mlp.down_proj.weight"] == "(Shard(dim=1),)"
    whole = sum(w.numel() for w in expected.values())
    assert all(held / whole <= 0.55 for held in dumped["held"]), (dumped["held"], whole)
    # ... and the adapters really changed the weights the test compares.
    base = load_served_model(ServerConfig(model_dir=str(tiny.llama))).model
    assert not torch.equal(base.get_submodule("model.layers.0.self_attn.o_proj").weight,
                           expected["model.layers.0.self_attn.o_proj.weight"])
    assert not torch.equal(base.get_submodule("model.layers.1.mlp.down_proj").weight,
                           expected["model.layers.1.mlp.down_proj.weight"])


def test_a_process_count_that_does_not_divide_the_heads_is_refused_before_loading(tiny, monkeypatch):
    from kaitoctl_server.errors import StartupError

    monkeypatch.setenv("WORLD_SIZE", "3")  # the tiny Llama has 4 heads
    with pytest.raises(StartupError, match=r"4 attention heads and 4 key/value heads.*WORLD_SIZE=3.*: 1, 2, 4$"):
        load_served_model(ServerConfig(model_dir=str(tiny.llama)))
