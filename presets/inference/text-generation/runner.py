"""The model plus the KV cache of the running batch (see RUNNER-CONTRACT.md / docs/server.md).

Rows are requests, in a stable order. The scheduler (engine.py) calls, from its
one thread:

- ``add(prompts)``: prefill new rows and append them after the existing ones;
- ``step(tokens)``: one decode step for every row;
- ``keep(rows)``: drop the other rows' cache;
- ``clear()``: drop every row.

Arguments are plain ints and lists, and the results depend only on the
sequence of calls, so a tensor-parallel server can broadcast each call from
rank 0 and replay it on every rank.

How rows of different lengths share one cache: the cache is left-padded.
Every row's tokens end at the right edge; ``self._mask`` (rows x cache length,
1 = real token, 0 = padding) is passed as the attention mask, and each row's
position ids count only its real tokens, so a row sees exactly what it would
see alone (padding gets an attention weight of exactly 0). New rows are
prefilled in their own left-padded batch, then the old and new caches are
padded on the left to the same length and concatenated along the batch
dimension. When rows leave, columns that are padding for every remaining row
are cut off the left edge.

transformers' own model forward, ``DynamicCache`` and mask construction do the
work; nothing here is an attention kernel.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch


class BatchRunner:
    """The model plus the KV cache of the running batch. Rows are requests, in a stable order."""

    def __init__(self, model: Any, input_device: Any) -> None:
        self.model = model
        self.input_device = torch.device(input_device) if input_device is not None else torch.device("cpu")
        params = inspect.signature(type(model).forward).parameters
        # transformers >= 5.x names the argument ``cache``; older releases ``past_key_values``.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in params
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # [rows, cache length] long
        self._positions: list[int] = []  # next position id of each row (= its real token count)

    @property
    def rows(self) -> int:
        return len(self._positions)

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "position_ids": positions,
            self._cache_arg: cache,
            "use_cache": True,
        }
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        with torch.inference_mode():
            out = self.model(**kwargs)
        return out.logits[:, -1, :].float()

    def add(self, prompts: list[list[int]]) -> torch.Tensor:
        """Prefill new rows (one per prompt) and append them after the existing rows.

        Returns float32 logits of each new row's last prompt position: [len(prompts), vocab].
        """
        from transformers import DynamicCache

        if not prompts or any(not p for p in prompts):
            raise ValueError("add() needs at least one prompt, and every prompt at least one token")
        width = max(len(p) for p in prompts)
        device = self.input_device
        ids = torch.zeros((len(prompts), width), dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[i, width - len(prompt):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
        cache = DynamicCache()
        logits = self._forward(ids, mask, positions, cache)
        if self._cache is None:
            self._cache, self._mask = cache, mask
        else:
            self._cache, self._mask = _concat(self._cache, self._mask, cache, mask)
        self._positions.extend(len(p) for p in prompts)
        return logits

    def step(self, tokens: list[int]) -> torch.Tensor:
        """One decode step for every row: ``tokens[i]`` is row i's next input token.

        Returns float32 logits [rows, vocab].
        """
        if len(tokens) != self.rows or not tokens:
            raise ValueError(f"step() needs one token per row: {self.rows} rows, {len(tokens)} tokens")
        assert self._mask is not None
        device = self.input_device
        ids = torch.tensor(tokens, dtype=torch.long, device=device).unsqueeze(1)
        positions = torch.tensor(self._positions, dtype=torch.long, device=device).unsqueeze(1)
        mask = torch.cat([self._mask, torch.ones((self.rows, 1), dtype=self._mask.dtype, device=self._mask.device)], 1)
        logits = self._forward(ids, mask, positions, self._cache)
        self._mask = mask
        self._positions = [p + 1 for p in self._positions]
        return logits

    def keep(self, rows: list[int]) -> None:
        """Keep only these row indices (ascending); the other rows' cache is dropped."""
        if list(rows) == list(range(self.rows)):
            return
        if not rows:
            self.clear()
            return
        if any(not 0 <= r < self.rows for r in rows) or sorted(set(rows)) != list(rows):
            raise ValueError(f"keep() takes ascending, distinct row indices below {self.rows}, not {rows}")
        assert self._mask is not None
        index = torch.tensor(rows, dtype=torch.long, device=self._mask.device)
        mask = self._mask.index_select(0, index)
        # Columns that are padding for every remaining row are dead weight: cut them off the left.
        used = mask.any(0).nonzero()
        start = int(used[0]) if used.numel() else mask.shape[1]
        for layer in self._cache.layers:
            if getattr(layer, "keys", None) is None or layer.keys.numel() == 0:
                continue
            layer_index = index.to(layer.keys.device)
            layer.keys = layer.keys.index_select(0, layer_index)[:, :, start:, :]
            layer.values = layer.values.index_select(0, layer_index)[:, :, start:, :]
        self._mask = mask[:, start:]
        self._positions = [self._positions[r] for r in rows]

    def clear(self) -> None:
        """Drop every row."""
        self._cache = None
        self._mask = None
        self._positions = []


def _concat(cache_a: Any, mask_a: torch.Tensor, cache_b: Any, mask_b: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """One cache holding ``cache_a``'s rows then ``cache_b``'s, both left-padded to the longer length."""
    length = max(mask_a.shape[1], mask_b.shape[1])
    mask = torch.cat([_pad_left(mask_a, length, 1), _pad_left(mask_b, length, 1)], 0)
    if len(cache_a.layers) != len(cache_b.layers):
        raise RuntimeError("the running batch's cache and the new rows' cache have different layer counts")
    for layer_a, layer_b in zip(cache_a.layers, cache_b.layers):
        if getattr(layer_b, "keys", None) is None or layer_b.keys.numel() == 0:
            continue
        if getattr(layer_a, "keys", None) is None or layer_a.keys.numel() == 0:
            raise RuntimeError("a cache layer is empty in the running batch but not in the new rows")
        layer_a.keys = torch.cat([_pad_left(layer_a.keys, length, 2), _pad_left(layer_b.keys, length, 2)], 0)
        layer_a.values = torch.cat([_pad_left(layer_a.values, length, 2), _pad_left(layer_b.values, length, 2)], 0)
    return cache_a, mask


def _pad_left(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Zeros prepended along ``dim`` up to ``length``."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=tensor.dtype, device=tensor.device), tensor], dim)
