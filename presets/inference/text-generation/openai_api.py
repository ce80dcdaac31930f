"""OpenAI's API: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Streaming follows OpenAI's server-sent events: one ``data: {json}`` event per
piece of text, sent as soon as it is generated (gunicorn's gthread worker and
werkzeug write each yielded chunk straight to the socket), a last chunk per
choice with its ``finish_reason``, an optional usage chunk
(``stream_options.include_usage``), then ``data: [DONE]``. A client that
disconnects closes the response iterator, which cancels the generation.

Sampling defaults: a field the request omits takes the model's own
``generation_config`` value when it has one (as vLLM does), else OpenAI's
default (temperature 1, top_p 1). ``temperature: 0`` means greedy decoding.
The ``model`` field is accepted whatever it says: this server serves one
merged model.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import closing
from typing import TYPE_CHECKING, Any, Iterator, Optional

from flask import Blueprint, Response

from .api_common import (
    ApiError,
    chat_prompt_ids,
    check_length,
    collect_all,
    ensure_prompt,
    generation_config,
    now,
    parse,
    read_json_object,
    record_generation,
    start_generations,
    state,
)
from .engine import Generation, GenerationFailed, OpenAIPenalties, Piece
from .schemas import ChatCompletionRequest, CompletionRequest, SamplingRequest

if TYPE_CHECKING:
    from .loader import ServedModel
    from .metrics import ServerMetrics

log = logging.getLogger("kaitoctl_server")
bp = Blueprint("openai", __name__, url_prefix="/v1")


def model_card(served: "ServedModel") -> dict[str, Any]:
    """The served model as /v1/models lists it, with the merged adapters as metadata."""
    return {
        "id": served.model_name,
        "object": "model",
        "created": served.created,
        "owned_by": "kaitoctl",
        "root": served.model_name,
        "parent": None,
        "max_model_len": served.context_length,
        "dtype": served.dtype,
        "adapters": [
            {key: a[key] for key in ("name", "strength", "rank", "alpha", "use_rslora")} for a in served.adapters
        ],
    }


@bp.get("/models")
def list_models() -> dict[str, Any]:
    served = state().require_ready()
    return {"object": "list", "data": [model_card(served)]}


@bp.get("/models/<path:model_id>")
def get_model(model_id: str) -> dict[str, Any]:
    served = state().require_ready()
    if model_id != served.model_name:
        raise ApiError(
            404, f"the model {model_id!r} does not exist; this server serves {served.model_name!r}",
            param="model", code="model_not_found",
        )
    return model_card(served)


class _Job:
    """One choice to generate: prompt ids, settings, and where it goes in the response."""

    def __init__(self, index: int, prompt_ids: list[int], config: Any, seed: Optional[int],
                 processors: list[Any], echo: str = "") -> None:
        self.index = index
        self.prompt_ids = prompt_ids
        self.config = config
        self.seed = seed
        self.processors = processors
        self.echo = echo


def _unsupported(condition: bool, field: str, why: str = "is not supported by this server") -> None:
    if condition:
        raise ApiError(400, f"{field} {why}; remove it from the request", param=field)


def _max_new_tokens(served: "ServedModel", prompt_len: int, requested: Optional[int], field: str) -> int:
    if requested is None:  # as many as fit, up to the server's cap
        room = served.context_length - prompt_len
        if room < 1:
            check_length(served, prompt_len, 1, new_tokens_field=field)
        return min(state().config.max_tokens, room)
    check_length(served, prompt_len, requested, new_tokens_field=field)
    return requested


def _jobs(served: "ServedModel", req: SamplingRequest, prompts: list[tuple[list[int], str]],
          requested_max: Optional[int], max_field: str) -> list[_Job]:
    gen = served.model.generation_config
    vocab = len(served.tokenizer)

    def default(value: Any, model_value: Any, fallback: Any) -> Any:
        if value is not None:
            return value
        return model_value if model_value is not None else fallback

    temperature = default(req.temperature, gen.temperature, 1.0)
    top_p = default(req.top_p, gen.top_p, 1.0)
    top_k = default(req.top_k, gen.top_k, 0)
    do_sample = temperature > 0
    bias = {int(k): v for k, v in (req.logit_bias or {}).items()}
    bad = [k for k in bias if not 0 <= k < vocab]
    if bad:
        raise ApiError(400, f"logit_bias: token id {bad[0]} is outside the vocabulary (0..{vocab - 1})",
                       param="logit_bias")
    jobs = []
    for p, (ids, echo) in enumerate(prompts):
        max_new = _max_new_tokens(served, len(ids), requested_max, max_field)
        config = generation_config(
            served,
            do_sample=do_sample,
            temperature=temperature if do_sample else 1.0,
            top_p=top_p if do_sample else 1.0,
            top_k=max(top_k, 0) if do_sample else 0,
            repetition_penalty=default(req.repetition_penalty, gen.repetition_penalty, 1.0),
            num_beams=1,
            num_return_sequences=1,
            max_new_tokens=max_new,
            min_new_tokens=min(req.min_tokens, max_new),
        )
        processors = []
        if req.presence_penalty or req.frequency_penalty or bias:
            processors.append(OpenAIPenalties(len(ids), req.presence_penalty, req.frequency_penalty, bias))
        for i in range(req.n):
            # torch takes seeds in [0, 2**64); any JSON integer maps into it
            seed = None if req.seed is None else (req.seed + i) % 2**64
            jobs.append(_Job(p * req.n + i, ids, config, seed, processors, echo))
    return jobs


def _completion_prompts(served: "ServedModel", req: CompletionRequest) -> list[tuple[list[int], str]]:
    """(token ids, echo text) for each prompt: a string, a list of strings, or token ids."""
    tokenizer = served.tokenizer
    raw = req.prompt
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif raw and all(isinstance(x, int) for x in raw):
        items = [raw]
    else:
        items = list(raw)
    if not items:
        raise ApiError(400, "prompt: the list is empty; send a string or a list of strings", param="prompt")
    vocab = len(tokenizer)
    prompts = []
    for item in items:
        if isinstance(item, str):
            ids = list(tokenizer(item).input_ids)
            text = item
        else:
            if any(not 0 <= t < vocab for t in item):
                raise ApiError(400, f"prompt: token ids must be between 0 and {vocab - 1}", param="prompt")
            ids = list(item)
            text = tokenizer.decode(ids)
        prompts.append((ensure_prompt(served, ids, "prompt"), text if req.echo else ""))
    return prompts


def _chat_messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    messages = []
    for i, message in enumerate(req.messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    raise ApiError(400, f"messages.{i}.content.{j}: only text parts are supported, not {part.type!r}",
                                   param=f"messages.{i}.content")
                texts.append(part.text)
            content = "".join(texts)
        messages.append({"role": message.role, "content": content or ""})
    return messages


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _start(served: "ServedModel", jobs: list[_Job], stop: list[str]) -> list[Generation]:
    """Queue every choice at once, so that they are generated together in the batch (or a 429)."""
    return start_generations(served, [dict(prompt_ids=job.prompt_ids, generation_config=job.config, stop=stop,
                                           seed=job.seed, logits_processors=job.processors) for job in jobs])


def _prompt_usage(jobs: list[_Job], n: int) -> int:
    """Each prompt counts once, however many choices it has (OpenAI's usage rule)."""
    return sum(len(job.prompt_ids) for job in jobs[::n])


@bp.post("/completions")
def completions() -> Any:
    started = now()
    st = state()
    served = st.require_ready()
    req = parse(CompletionRequest, read_json_object(), openai=True)
    _unsupported(req.logprobs is not None, "logprobs")
    _unsupported(req.suffix is not None, "suffix")
    _unsupported(req.best_of not in (None, 1, req.n), "best_of", "other than n is not supported")
    jobs = _jobs(served, req, _completion_prompts(served, req), req.max_tokens, "max_tokens")
    meta = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": served.model_name}
    if req.stream:
        return _stream(served, st.metrics, "/v1/completions", started, jobs, req, meta, chat=False)
    choices = []
    completion_tokens = 0
    results = collect_all(_start(served, jobs, req.stop_list), st.metrics, "/v1/completions", started)
    for job, (text, finished) in zip(jobs, results):
        completion_tokens += finished.completion_tokens
        choices.append({"index": job.index, "text": job.echo + text, "logprobs": None,
                        "finish_reason": finished.finish_reason})
    return {**meta, "choices": choices, "usage": _usage(_prompt_usage(jobs, req.n), completion_tokens)}


@bp.post("/chat/completions")
def chat_completions() -> Any:
    started = now()
    st = state()
    served = st.require_ready()
    req = parse(ChatCompletionRequest, read_json_object(), openai=True)
    _unsupported(bool(req.logprobs), "logprobs")
    _unsupported(req.top_logprobs is not None, "top_logprobs")
    _unsupported(bool(req.tools) or bool(req.functions), "tools", "(function calling) is not supported")
    _unsupported(req.response_format is not None and req.response_format.get("type") not in (None, "text"),
                 "response_format", "other than {\"type\": \"text\"} is not supported")
    ids = ensure_prompt(served, chat_prompt_ids(served, _chat_messages(req)), "messages")
    if req.max_completion_tokens is not None:
        requested, field = req.max_completion_tokens, "max_completion_tokens"
    else:
        requested, field = req.max_tokens, "max_tokens"
    jobs = _jobs(served, req, [(ids, "")], requested, field)
    meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": served.model_name}
    if req.stream:
        return _stream(served, st.metrics, "/v1/chat/completions", started, jobs, req,
                       {**meta, "object": "chat.completion.chunk"}, chat=True)
    choices = []
    completion_tokens = 0
    results = collect_all(_start(served, jobs, req.stop_list), st.metrics, "/v1/chat/completions", started)
    for job, (text, finished) in zip(jobs, results):
        completion_tokens += finished.completion_tokens
        choices.append({"index": job.index, "message": {"role": "assistant", "content": text},
                        "logprobs": None, "finish_reason": finished.finish_reason})
    return {**meta, "choices": choices, "usage": _usage(_prompt_usage(jobs, req.n), completion_tokens)}


def _stream(served: "ServedModel", metrics: "ServerMetrics", route: str, started: float, jobs: list[_Job],
            req: SamplingRequest, meta: dict[str, Any], *, chat: bool) -> Response:
    include_usage = req.include_usage
    extra = {"usage": None} if include_usage else {}
    runs = _start(served, jobs, req.stop_list)  # before the 200 goes out: a full server is a 429

    def chunk(index: int, text: Optional[str] = None, finish: Optional[str] = None, role: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else (
                {"content": text} if text is not None else {})
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        return _sse({**meta, "choices": [choice], **extra})

    def events() -> Iterator[str]:
        completion_tokens = 0
        try:
            for job, generation in zip(jobs, runs):
                if chat:
                    yield chunk(job.index, role=True)
                elif job.echo:
                    yield chunk(job.index, job.echo)
                with closing(generation) as run:
                    for event in run:
                        if isinstance(event, Piece):
                            if event.text:
                                yield chunk(job.index, event.text)
                        else:
                            completion_tokens += event.completion_tokens
                            record_generation(metrics, route, started, event)
                            yield chunk(job.index, None if chat else "", finish=event.finish_reason)
            if include_usage:
                yield _sse({**meta, "choices": [],
                            "usage": _usage(_prompt_usage(jobs, req.n), completion_tokens)})
        except GenerationFailed as err:
            # The status line is gone already: report the failure in-band, as OpenAI does.
            log.error("%s: generation failed while streaming: %s", route, err, exc_info=err.__cause__)
            yield _sse(ApiError(500, f"generation failed: {err}").body(openai=True))
        finally:
            for generation in runs:  # choices not streamed yet (the client left): cancel them too
                generation.close()
        yield "data: [DONE]\n\n"

    response = Response(
        events(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    # A client that leaves before the first chunk never starts events(): cancel its generations here.
    response.call_on_close(lambda: [generation.close() for generation in runs])
    return response
