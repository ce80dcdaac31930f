"""Generation: one request at a time on the model, tokens handed over as they are made.

``Engine.stream`` runs ``model.generate`` on a background thread that holds the
engine's lock for the whole generation (requests never interleave on the model,
so concurrent requests cannot corrupt each other or the seeded RNG), and yields
text pieces to the caller as tokens arrive. The caller may stop early (a stop
string matched, or the HTTP client went away): closing the iterator sets a
cancel flag that a stopping criterion checks at every step, so generation ends
within one token and the lock is released for the next request.

Detokenization is incremental: only a short window of tokens is decoded per
step, and text is held back while it ends in an incomplete UTF-8 sequence or
could be the start of a stop string.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig

_END = object()
# How many prompt tokens seed the decoder, so that the first generated word
# gets the spacing it would have after the prompt (SentencePiece strips a
# leading space from a lone token).
_CONTEXT_TOKENS = 5


class GenerationFailed(Exception):
    """``model.generate`` raised: the request gets a logged 5xx."""


@dataclass
class Piece:
    """Text generated since the previous piece (may be empty on the final one)."""

    text: str


@dataclass
class Finished:
    """End of one generation."""

    finish_reason: str  # "stop" (EOS or stop string) or "length"
    prompt_tokens: int
    completion_tokens: int
    first_token_at: Optional[float]  # time.perf_counter() of the first generated token


class IncrementalDecoder:
    """Decode a growing list of token ids into text pieces, a small window at a time."""

    def __init__(self, tokenizer: Any, context: Sequence[int], **decode_kwargs: Any) -> None:
        self._tokenizer = tokenizer
        self._ids = list(context)
        self._prefix = 0
        self._read = len(self._ids)
        self._kwargs = decode_kwargs

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, **self._kwargs)

    def add(self, new_ids: Sequence[int]) -> str:
        """Append tokens; return the text that is now complete (may be "")."""
        self._ids.extend(new_ids)
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """The text of tokens still held back (an incomplete character at the very end)."""
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        self._prefix = self._read = len(self._ids)
        return after[len(before):] if len(after) > len(before) else ""


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class Engine:
    """Serialised access to one model for generation (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, input_device: Any) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.input_device = input_device
        self.lock = threading.Lock()
        self.tokens_generated = 0  # all tokens made since start, cancelled generations included

    def eos_ids(self, generation_config: "GenerationConfig") -> set[int]:
        """Token ids that end a generation normally (finish_reason "stop")."""
        ids: set[int] = set()
        for source in (generation_config.eos_token_id, self.model.generation_config.eos_token_id,
                       self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        return ids

    def stream(
        self,
        prompt_ids: Sequence[int],
        generation_config: "GenerationConfig",
        *,
        stop: Sequence[str] = (),
        seed: Optional[int] = None,
        logits_processors: Sequence[Any] = (),
        skip_special_tokens: bool = True,
        clean_up_tokenization_spaces: Optional[bool] = None,
    ) -> Iterator[Piece | Finished]:
        """Generate from ``prompt_ids``; yield ``Piece``s as text is made, then one ``Finished``.

        Raises ``GenerationFailed`` if the model raises. Closing the iterator
        early cancels the generation.
        """
        cancel = threading.Event()
        running = threading.Event()  # set once the thread holds the model
        tokens: "queue.Queue[Any]" = queue.Queue()
        thread = threading.Thread(
            target=self._generate,
            args=(list(prompt_ids), generation_config, seed, list(logits_processors), cancel, running, tokens),
            name="kaitoctl-generate",
            daemon=True,
        )
        decode_kwargs: dict[str, Any] = {"skip_special_tokens": skip_special_tokens}
        if clean_up_tokenization_spaces is not None:
            decode_kwargs["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        decoder = IncrementalDecoder(self.tokenizer, prompt_ids[-_CONTEXT_TOKENS:], **decode_kwargs)
        eos = self.eos_ids(generation_config)
        generated: list[int] = []
        first_token_at: Optional[float] = None
        pending = ""  # decoded text not yet yielded (may hold the start of a stop string)
        finish_reason: Optional[str] = None
        thread.start()
        try:
            while finish_reason is None:
                item = tokens.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise GenerationFailed(f"{type(item).__name__}: {item}") from item
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                generated.extend(item)
                pending += decoder.add(item)
                if stop:
                    hits = [i for i in (pending.find(s) for s in stop) if i >= 0]
                    if hits:
                        pending = pending[: min(hits)]
                        finish_reason = "stop"
                        break
                    keep = _held_back(pending, stop)
                else:
                    keep = 0
                if len(pending) > keep:
                    cut = len(pending) - keep
                    yield Piece(pending[:cut])
                    pending = pending[cut:]
            if finish_reason is None:
                pending += decoder.flush()
                finish_reason = "stop" if generated and generated[-1] in eos else "length"
            if pending:
                yield Piece(pending)
            yield Finished(
                finish_reason=finish_reason,
                prompt_tokens=len(prompt_ids),
                completion_tokens=len(generated),
                first_token_at=first_token_at,
            )
        finally:
            cancel.set()
            if running.is_set():
                # Stops within one step; waiting means the model is free when we return.
                thread.join()

    def _generate(
        self,
        prompt_ids: list[int],
        generation_config: "GenerationConfig",
        seed: Optional[int],
        logits_processors: list[Any],
        cancel: threading.Event,
        running: threading.Event,
        tokens: "queue.Queue[Any]",
    ) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        try:
            with self.lock:
                if cancel.is_set():  # the client left while this request waited for the model
                    return
                running.set()
                if seed is not None:
                    torch.manual_seed(seed)
                input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.input_device)
                streamer = _QueueStreamer(self, tokens) if (generation_config.num_beams or 1) == 1 else None
                with torch.inference_mode():
                    output = self.model.generate(
                        input_ids=input_ids,
                        attention_mask=torch.ones_like(input_ids),
                        generation_config=generation_config,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
                        logits_processor=LogitsProcessorList(logits_processors),
                    )
                if streamer is None:  # beam search cannot stream: hand over the winner at the end
                    new_ids = output[0, len(prompt_ids):].tolist()
                    self.tokens_generated += len(new_ids)
                    tokens.put(new_ids)
        except BaseException as err:  # noqa: BLE001 - handed to the request thread, which reports it
            tokens.put(err)
        finally:
            tokens.put(_END)


class _QueueStreamer:
    """transformers streamer: skip the prompt, put each new token's id list on a queue."""

    def __init__(self, engine: Engine, tokens: "queue.Queue[Any]") -> None:
        self._engine = engine
        self._tokens = tokens
        self._prompt_seen = False

    def put(self, value: "torch.Tensor") -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        ids = value.reshape(-1).tolist()
        self._engine.tokens_generated += len(ids)  # only the thread holding the lock writes it
        self._tokens.put(ids)

    def end(self) -> None:
        """Nothing to do: the generating thread signals the end itself."""


class _Cancelled:
    """Stopping criterion: true once the request was cancelled."""

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel

    def __call__(self, input_ids: "torch.Tensor", scores: "torch.Tensor", **kwargs: Any) -> "torch.Tensor":
        import torch

        return torch.full((input_ids.shape[0],), self._cancel.is_set(), dtype=torch.bool, device=input_ids.device)


class OpenAIPenalties:
    """Logits processor for OpenAI's presence/frequency penalties and logit_bias.

    Penalties count generated tokens only (not the prompt), as vLLM does.
    """

    def __init__(self, prompt_length: int, presence: float, frequency: float, logit_bias: dict[int, float]) -> None:
        self._prompt_length = prompt_length
        self._presence = presence
        self._frequency = frequency
        self._bias = logit_bias

    def __call__(self, input_ids: "torch.Tensor", scores: "torch.Tensor") -> "torch.Tensor":
        import torch

        scores = scores.clone()
        if self._presence or self._frequency:
            generated = input_ids[:, self._prompt_length:]
            counts = torch.zeros_like(scores)
            counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
            scores -= self._frequency * counts + self._presence * (counts > 0).to(scores.dtype)
        for token, bias in self._bias.items():
            scores[:, token] += bias
        return scores
