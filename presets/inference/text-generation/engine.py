"""Generation: continuous batching on one scheduler thread, tokens handed over as they are made.

``Engine.stream`` (or ``submit`` for several generations at once) puts a
request on a bounded queue and returns at once; past ``max_batch`` running +
``max_queue`` waiting generations it raises ``QueueFull`` (the APIs answer
429). One scheduler thread owns the model through a ``BatchRunner``
(runner.py): at every step boundary it lets waiting requests join the running
batch (prefill, then their KV cache joins the batch's), runs one decode step
for every row, samples each row's next token with that request's own settings
(temperature, top_p, top_k, repetition penalty, min tokens, OpenAI penalties
and logit_bias, a per-request ``torch.Generator`` for seeds), and drops rows
that are finished (EOS, max tokens) or cancelled. Nothing global is seeded.

Requests whose settings the batch cannot express (beam search, and the rarer
``generate_kwargs`` KAITO's /chat forwards: no_repeat_ngram_size, bad_words_ids,
typical_p, ...) run alone through ``model.generate`` on the same thread, when
the batch is empty; the queue stays first-in, first-out.

The caller side (the request's thread) reads token ids from the request's own
queue, detokenizes incrementally (only a short window of tokens per step; text
is held back while it ends in an incomplete UTF-8 sequence or could be the
start of a stop string) and yields text pieces. Closing the iterator early (a
stop string matched, the HTTP client went away) cancels that request only: its
row leaves the batch at the next step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence

if TYPE_CHECKING:
    import torch
    from transformers import GenerationConfig

log = logging.getLogger("kaitoctl_server")

# How many prompt tokens seed the decoder, so that the first generated word
# gets the spacing it would have after the prompt (SentencePiece strips a
# leading space from a lone token).
_CONTEXT_TOKENS = 5
DEFAULT_MAX_BATCH = 16
DEFAULT_MAX_QUEUE = 64

# Generation settings the batch expresses; any other one that is switched on sends the request to
# the serial model.generate path. Each entry: attribute -> the values that mean "off".
_SERIAL_ONLY = {
    "num_beams": (None, 1), "num_beam_groups": (None, 1), "penalty_alpha": (None,), "diversity_penalty": (None, 0.0),
    "typical_p": (None, 1.0), "min_p": (None,), "top_h": (None,), "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0), "no_repeat_ngram_size": (None, 0), "encoder_no_repeat_ngram_size": (None, 0),
    "encoder_repetition_penalty": (None, 1.0), "bad_words_ids": (None,), "sequence_bias": (None,),
    "force_words_ids": (None,), "constraints": (None,), "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,), "exponential_decay_length_penalty": (None,), "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,), "max_time": (None,), "stop_strings": (None,), "guidance_scale": (None, 1.0),
    "watermarking_config": (None,), "renormalize_logits": (None, False), "remove_invalid_values": (None, False),
    "prompt_lookup_num_tokens": (None,), "assistant_early_exit": (None,), "dola_layers": (None,),
}


class GenerationFailed(Exception):
    """The model raised: the request gets a logged 5xx."""


class QueueFull(Exception):
    """More generations than ``max_batch`` running + ``max_queue`` waiting: the APIs answer 429."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyGenerations(Exception):
    """One request asks for more generations than the server can ever hold at once: a 400."""


class NeedsGenerate(Exception):
    """Settings only ``model.generate`` handles, on a model split over processes (tensor parallel): a 400."""


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
    last_token_at: Optional[float] = None  # time.perf_counter() of the last generated token
    queued_seconds: float = 0.0  # time spent waiting for a place in the batch


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


def batchable(config: "GenerationConfig") -> bool:
    """Whether the running batch can express ``config`` (else: the serial ``model.generate`` path)."""
    for name, off in _SERIAL_ONLY.items():
        value = getattr(config, name, None)
        if value not in off:
            if name == "typical_p" and not config.do_sample:
                continue  # only applied when sampling
            return False
    return True


class _Request:
    """One generation: its settings, its sampling state, and the queue its tokens go to."""

    def __init__(self, engine: "Engine", prompt_ids: list[int], config: "GenerationConfig", seed: Optional[int],
                 processors: list[Any]) -> None:
        self.prompt_ids = prompt_ids
        self.config = config
        self.seed = seed
        self.processors = processors
        self.eos = engine.eos_ids(config)
        if config.max_new_tokens is not None:
            self.max_new = int(config.max_new_tokens)
        else:
            self.max_new = max(1, int(config.max_length or 20) - len(prompt_ids))
        min_new = int(config.min_new_tokens or 0)
        if config.min_length:
            min_new = max(min_new, int(config.min_length) - len(prompt_ids))
        self.min_new = min(min_new, self.max_new)
        self.serial = not batchable(config)
        self.out: "queue.Queue[Any]" = queue.Queue()
        self.cancelled = threading.Event()
        self.submitted_at = time.perf_counter()
        self.admitted_at: Optional[float] = None
        self.generated: list[int] = []
        self.generator: Any = None  # torch.Generator, made on the scheduler thread for seeded sampling
        self.warpers: list[Any] = []

    def setup_sampling(self) -> None:
        """Per-request processors (on the scheduler thread, which imports torch)."""
        from transformers import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
                                  TopPLogitsWarper)

        config = self.config
        chain: list[Any] = []
        if config.repetition_penalty not in (None, 1.0):
            chain.append(RepetitionPenaltyLogitsProcessor(float(config.repetition_penalty)))
        chain.extend(self.processors)
        if config.do_sample:
            if config.temperature not in (None, 1.0):
                chain.append(TemperatureLogitsWarper(float(config.temperature)))
            if config.top_k:
                chain.append(TopKLogitsWarper(int(config.top_k)))
            if config.top_p is not None and config.top_p < 1.0:
                chain.append(TopPLogitsWarper(float(config.top_p)))
        self.warpers = chain

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing to apply now: the batch's argmax is this row's token."""
        return not self.config.do_sample and not self.warpers and len(self.generated) >= self.min_new

    def sample(self, logits: "torch.Tensor") -> int:
        """The next token from this row's float32 logits [vocab]."""
        import torch

        scores = logits.unsqueeze(0)
        if len(self.generated) < self.min_new and self.eos:
            scores = scores.clone()
            scores[0, [i for i in self.eos if 0 <= i < scores.shape[-1]]] = -float("inf")
        if self.warpers:
            ids = torch.tensor([self.prompt_ids + self.generated], dtype=torch.long, device=scores.device)
            for warper in self.warpers:
                scores = warper(ids, scores)
        if not self.config.do_sample:
            return int(scores[0].argmax())
        probs = torch.softmax(scores[0], dim=-1)
        if self.generator is None:  # this request's own generator, on the logits' device; never the global one
            self.generator = torch.Generator(device=probs.device)
            if self.seed is not None:
                self.generator.manual_seed(self.seed)
            else:
                self.generator.seed()
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def finish_reason(self) -> Optional[str]:
        """Why this request is done after its latest token, or None to go on."""
        if self.generated and self.generated[-1] in self.eos:
            return "stop"
        if len(self.generated) >= self.max_new:
            return "length"
        return None


class Generation:
    """The caller's side of one request: iterate for ``Piece``s then one ``Finished``; ``close()`` cancels."""

    def __init__(self, engine: "Engine", request: _Request, skip_special_tokens: bool,
                 clean_up_tokenization_spaces: Optional[bool], stop: Sequence[str]) -> None:
        self._engine = engine
        self._request = request
        decode_kwargs: dict[str, Any] = {"skip_special_tokens": skip_special_tokens}
        if clean_up_tokenization_spaces is not None:
            decode_kwargs["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        self._decoder = IncrementalDecoder(engine.tokenizer, request.prompt_ids[-_CONTEXT_TOKENS:], **decode_kwargs)
        self._stop = list(stop)
        self._events = self._run()

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> Piece | Finished:
        return next(self._events)

    def close(self) -> None:
        self._events.close()
        self._engine.cancel(self._request)

    def _run(self) -> Iterator[Piece | Finished]:
        request, stop = self._request, self._stop
        first_token_at: Optional[float] = None
        last_token_at: Optional[float] = None
        count = 0
        pending = ""  # decoded text not yet yielded (may hold the start of a stop string)
        finish_reason: Optional[str] = None
        ended: Optional[str] = None
        try:
            while finish_reason is None:
                item = request.out.get()
                if isinstance(item, BaseException):
                    raise GenerationFailed(f"{type(item).__name__}: {item}") from item
                if isinstance(item, str):  # the scheduler's finish reason
                    ended = item
                    break
                last_token_at = time.perf_counter()
                if first_token_at is None:
                    first_token_at = last_token_at
                count += len(item)
                pending += self._decoder.add(item)
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
                pending += self._decoder.flush()
                finish_reason = ended or "length"
            if pending:
                yield Piece(pending)
            admitted = request.admitted_at if request.admitted_at is not None else request.submitted_at
            yield Finished(
                finish_reason=finish_reason,
                prompt_tokens=len(request.prompt_ids),
                completion_tokens=count,
                first_token_at=first_token_at,
                last_token_at=last_token_at,
                queued_seconds=max(0.0, admitted - request.submitted_at),
            )
        finally:
            self._engine.cancel(request)


class Engine:
    """The model behind a bounded queue and one scheduler thread (see the module docstring).

    ``runner``: a ``BatchRunner`` or an object with the same ``add``/``step``/``keep``/``clear`` and
    ``rows`` (the tensor-parallel server's broadcasting proxy), or a factory ``(model, input_device)
    -> runner`` called on the scheduler thread; default ``BatchRunner(model, input_device)``.
    """

    def __init__(self, model: Any, tokenizer: Any, input_device: Any, *, runner: Any = None,
                 max_batch: int = DEFAULT_MAX_BATCH, max_queue: int = DEFAULT_MAX_QUEUE,
                 generate_allowed: bool = True) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be >= 1 and max_queue >= 0, not {max_batch} and {max_queue}")
        self.model = model
        self.tokenizer = tokenizer
        self.input_device = input_device
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.tokens_generated = 0  # all tokens made since start, cancelled generations included
        self._runner = runner
        # False on a tensor-parallel rank 0: model.generate would run its collectives on rank 0 alone.
        self.generate_allowed = generate_allowed
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._joining: list[_Request] = []  # taken off the queue, being prefilled
        self._serial: Optional[_Request] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = False
        self._listeners: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._rate: deque[tuple[float, int]] = deque()  # (time, tokens) of recent steps, for tokens/s

    # --- the caller's side -------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._active) + len(self._joining) + (1 if self._serial is not None else 0)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add_listener(self, listener: Any) -> None:
        """``listener.on_step(rows, tokens, seconds)`` after each model call; ``listener.on_reject()``."""
        self._listeners.add(listener)

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
    ) -> Generation:
        """Queue one generation from ``prompt_ids``; iterate the result for ``Piece``s, then one ``Finished``.

        Raises ``QueueFull`` at once when the server is full. Iterating raises
        ``GenerationFailed`` if the model raises. Closing it early cancels the generation.
        """
        return self.submit([dict(prompt_ids=prompt_ids, generation_config=generation_config, stop=stop, seed=seed,
                                 logits_processors=logits_processors, skip_special_tokens=skip_special_tokens,
                                 clean_up_tokenization_spaces=clean_up_tokenization_spaces)])[0]

    def submit(self, jobs: list[dict[str, Any]]) -> list[Generation]:
        """Queue several generations at once, all or none (``QueueFull``); each dict holds ``stream``'s arguments."""
        capacity = self.max_batch + self.max_queue
        if len(jobs) > capacity:
            raise TooManyGenerations(
                f"this request asks for {len(jobs)} generations at once, but this server holds at most {capacity} "
                f"(KAITOCTL_MAX_BATCH={self.max_batch} + KAITOCTL_MAX_QUEUE={self.max_queue}); ask for fewer"
            )
        made = []
        for job in jobs:
            request = _Request(self, list(job["prompt_ids"]), job["generation_config"], job.get("seed"),
                               list(job.get("logits_processors") or ()))
            made.append((request, Generation(self, request, job.get("skip_special_tokens", True),
                                             job.get("clean_up_tokenization_spaces"), job.get("stop") or ())))
        if not self.generate_allowed and any(request.serial for request, _ in made):
            raise NeedsGenerate(
                "these generation settings (beam search, or a generate_kwargs option such as no_repeat_ngram_size) "
                "need transformers' generate, which cannot run on a model split over several processes (tensor "
                "parallel); leave them out"
            )
        with self._cond:
            busy = self.running + len(self._waiting)
            if busy + len(jobs) > capacity:
                for listener in list(self._listeners):
                    listener.on_reject()
                raise QueueFull(
                    f"the server is at capacity ({self.running} generations running, {len(self._waiting)} waiting; "
                    f"KAITOCTL_MAX_BATCH={self.max_batch}, KAITOCTL_MAX_QUEUE={self.max_queue}); retry shortly",
                    retry_after=1,
                )
            self._waiting.extend(request for request, _ in made)
            self._ensure_thread()
            self._cond.notify_all()
        return [generation for _, generation in made]

    def cancel(self, request: _Request) -> None:
        """Stop ``request``: out of the queue now, out of the batch at the next step (idempotent)."""
        if request.cancelled.is_set():
            return
        request.cancelled.set()
        with self._cond:
            try:
                self._waiting.remove(request)
            except ValueError:
                pass

    def close(self) -> None:
        """Stop the scheduler thread (requests still queued or running end with an error)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="kaitoctl-scheduler", daemon=True)
            self._thread.start()

    # --- the scheduler thread ----------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        if self._runner is None:
            from .runner import BatchRunner

            self._runner = BatchRunner(self.model, self.input_device)
        elif not hasattr(self._runner, "step"):  # a factory: made here, on the thread that will call it
            self._runner = self._runner(self.model, self.input_device)
        with torch.inference_mode():
            while True:
                admit, serial = self._next_work()
                if admit is None:
                    break
                try:
                    if serial is not None:
                        self._run_serial(serial)
                        continue
                    if admit:
                        self._admit(admit)
                    if self._active:
                        self._step()
                except BaseException as err:  # noqa: BLE001 - every request in the batch is told
                    log.error("generation failed: %s: %s", type(err).__name__, err)
                    for request in self._active + self._joining:
                        request.out.put(err)
                    self._active, self._joining = [], []
                    try:
                        self._runner.clear()
                    except BaseException:  # noqa: BLE001 - the runner is reset on the next add anyway
                        log.exception("clearing the batch after a failure failed")
        for request in self._active:
            request.out.put(GenerationFailed("the server is shutting down"))
        self._active = []

    def _next_work(self) -> tuple[Optional[list[_Request]], Optional[_Request]]:
        """Wait for work; return (requests to add to the batch, a serial request) or (None, None) to stop."""
        with self._cond:
            while not self._stopping and not self._waiting and not self._active:
                self._cond.wait()
            if self._stopping:
                for request in self._waiting:
                    request.out.put(GenerationFailed("the server is shutting down"))
                self._waiting.clear()
                return None, None
            admit: list[_Request] = []
            if self._waiting and self._waiting[0].serial:
                if not self._active:
                    self._serial = self._waiting.popleft()
                    self._serial.admitted_at = time.perf_counter()
                    return [], self._serial
            else:
                while self._waiting and not self._waiting[0].serial and len(self._active) + len(admit) < self.max_batch:
                    admit.append(self._waiting.popleft())
            now = time.perf_counter()
            for request in admit:
                request.admitted_at = now
            self._joining = admit
            return admit, None

    def _admit(self, admit: list[_Request]) -> None:
        started = time.perf_counter()
        for request in admit:
            request.setup_sampling()
        logits = self._runner.add([request.prompt_ids for request in admit])
        with self._cond:
            self._active = self._active + admit  # one assignment: ``running`` never counts a row twice
            self._joining = []
        self._sample(admit, logits)
        self._notify(len(admit), sum(len(r.prompt_ids) for r in admit), time.perf_counter() - started, decode=False)
        self._retire()

    def _step(self) -> None:
        started = time.perf_counter()
        logits = self._runner.step([request.generated[-1] for request in self._active])
        self._sample(self._active, logits)
        self._notify(len(self._active), len(self._active), time.perf_counter() - started, decode=True)
        self._retire()

    def _sample(self, requests: list[_Request], logits: "torch.Tensor") -> None:
        greedy = None
        for i, request in enumerate(requests):
            row = logits[i]
            if request.plain_greedy:
                if greedy is None:
                    greedy = logits.argmax(-1).tolist()
                token = greedy[i]
            else:
                token = request.sample(row)
            request.generated.append(token)
            self.tokens_generated += 1
            if not request.cancelled.is_set():
                request.out.put([token])

    def _retire(self) -> None:
        """Drop finished and cancelled rows from the batch, then tell the finished requests why they ended."""
        keep, ended = [], []
        for i, request in enumerate(self._active):
            reason = request.finish_reason()
            if request.cancelled.is_set():
                continue
            if reason is not None:
                ended.append((request, reason))
                continue
            keep.append(i)
        if len(keep) != len(self._active):
            self._runner.keep(keep)
            with self._cond:
                self._active = [self._active[i] for i in keep]
        for request, reason in ended:  # after the batch shrank: a caller that sees its end sees it gone
            request.out.put(reason)

    def _notify(self, rows: int, tokens: int, seconds: float, *, decode: bool) -> None:
        now = time.perf_counter()
        self._rate.append((now, rows))
        while self._rate and now - self._rate[0][0] > 10:
            self._rate.popleft()
        for listener in list(self._listeners):
            listener.on_step(rows, tokens, seconds, decode)

    def tokens_per_second(self) -> float:
        """Generated tokens per second over the last 10 s."""
        now = time.perf_counter()
        recent = [(t, n) for t, n in list(self._rate) if now - t <= 10]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1e-3)
        return sum(n for _, n in recent) / span

    def _run_serial(self, request: _Request) -> None:
        """One request through ``model.generate`` (settings the batch cannot express), alone on the model."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        end: Any = "length"
        try:
            if request.cancelled.is_set():
                return
            input_ids = torch.tensor([request.prompt_ids], dtype=torch.long, device=self.input_device)
            streamer = _QueueStreamer(self, request) if (request.config.num_beams or 1) == 1 else None
            devices = [input_ids.device] if input_ids.device.type == "cuda" else []
            # A seed applies to this request only: the global generators are restored afterwards.
            with torch.random.fork_rng(devices=devices, enabled=request.seed is not None):
                if request.seed is not None:
                    torch.manual_seed(request.seed)
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=request.config,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Cancelled(request.cancelled)]),
                    logits_processor=LogitsProcessorList(request.processors),
                )
            new_ids = output[0, len(request.prompt_ids):].tolist()
            if streamer is None:  # beam search cannot stream: hand over the winner at the end
                self.tokens_generated += len(new_ids)
                request.out.put(new_ids)
            end = "stop" if new_ids and new_ids[-1] in request.eos else "length"
        except BaseException as err:  # noqa: BLE001 - handed to the request thread, which reports it
            end = err
        finally:
            with self._cond:
                self._serial = None
            request.out.put(end)


class _QueueStreamer:
    """transformers streamer: skip the prompt, put each new token's id list on the request's queue."""

    def __init__(self, engine: Engine, request: _Request) -> None:
        self._engine = engine
        self._request = request
        self._prompt_seen = False

    def put(self, value: "torch.Tensor") -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        ids = value.reshape(-1).tolist()
        self._engine.tokens_generated += len(ids)  # only the scheduler thread writes it
        self._request.out.put(ids)

    def end(self) -> None:
        """Nothing to do: the scheduler signals the end itself."""


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
