"""KAITO's API: ``GET /``, ``GET /health`` and ``/healthz``, ``POST /chat``.

``/chat`` keeps KAITO's request fields, ``generate_kwargs`` defaults
(max_length 200 counting the prompt, do_sample true, top_k 10, ...), response
``{"Result": ...}`` and 400 messages, so KAITO clients work unchanged. What it
adds: range checks (a 422 naming the field instead of a 500 from deep inside
generate), the context-length and max-token checks, and ``messages`` answered
with the assistant's reply text rather than KAITO's Python repr of a
conversation object.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from .api_common import (
    ApiError,
    chat_prompt_ids,
    check_length,
    collect,
    ensure_prompt,
    generation_config,
    now,
    parse,
    read_json_object,
    start_generations,
    state,
)
from .distributed import World
from .schemas import GenerateKwargs, KaitoChatRequest

bp = Blueprint("kaito", __name__)

PROMPT_REQUIRED = "Text generation parameter prompt required"
MESSAGES_REQUIRED = "Conversational parameter messages required"


@bp.get("/")
def root() -> dict[str, str]:
    return {"message": "Server is running"}


@bp.get("/health")
@bp.get("/healthz")
def health() -> tuple[dict[str, Any], int]:
    """200 only once the merged model sits on its device and, in a tensor-parallel job, every rank answers."""
    st = state()
    world = World.from_env()
    where = {"rank": world.rank, "world_size": world.world_size}
    if st.status == "ready":
        group = st.served.group if st.served is not None else None
        ok, detail = group.health() if group is not None else (True, "")
        if ok:
            return {"status": "Healthy", **where}, 200
        return {"status": "Unhealthy", "detail": detail, **where}, 503
    if st.status == "failed":
        return {"status": "Failed", "detail": st.error or "", **where}, 503
    return {"status": "Loading", "detail": "the model is being loaded and merged", **where}, 503


@bp.post("/chat")
def chat() -> dict[str, Any]:
    started = now()
    st = state()
    served = st.require_ready()
    req = parse(KaitoChatRequest, read_json_object(), openai=False)
    kwargs = req.generate_kwargs or GenerateKwargs()
    tokenizer = served.tokenizer

    if req.messages is not None:
        ids = chat_prompt_ids(served, [m.model_dump() for m in req.messages])
    elif req.prompt is not None:
        ids = list(tokenizer((req.prefix or "") + req.prompt).input_ids)
    else:
        raise ApiError(400, MESSAGES_REQUIRED if st.config.pipeline == "chat" else PROMPT_REQUIRED)
    ids = ensure_prompt(served, ids, "prompt")

    if kwargs.max_new_tokens is not None:
        new_tokens, field = kwargs.max_new_tokens, "generate_kwargs.max_new_tokens"
    else:
        new_tokens, field = kwargs.max_length - len(ids), "generate_kwargs.max_length"
        if new_tokens < 1:
            raise ApiError(
                400,
                f"the prompt is {len(ids)} tokens, which leaves no room to generate under "
                f"generate_kwargs.max_length={kwargs.max_length} (it counts prompt and new tokens); raise "
                "max_length or set generate_kwargs.max_new_tokens",
            )
    if req.handle_long_generation == "hole" and len(ids) + new_tokens > served.context_length:
        keep = served.context_length - new_tokens
        if keep <= 0:
            raise ApiError(
                400,
                f"handle_long_generation=hole: {field} asks for {new_tokens} new tokens, which leaves no room for "
                f"the prompt in the model's context of {served.context_length} tokens; ask for fewer",
            )
        ids = ids[-keep:]  # KAITO's (and the pipeline's) "hole": drop the start of the prompt
    check_length(served, len(ids), new_tokens, new_tokens_field=field)

    settings = kwargs.model_dump(exclude={"stop_strings", "max_new_tokens"})
    if settings["pad_token_id"] is None:
        settings["pad_token_id"] = tokenizer.pad_token_id
    if settings["eos_token_id"] is None:
        settings["eos_token_id"] = tokenizer.eos_token_id
    settings["max_new_tokens"] = new_tokens  # KAITO's max_length, turned into a number of new tokens above
    del settings["max_length"]
    config = generation_config(served, **settings)
    stops = [kwargs.stop_strings] if isinstance(kwargs.stop_strings, str) else list(kwargs.stop_strings or [])

    [run] = start_generations(served, [dict(prompt_ids=ids, generation_config=config, stop=stops,
                                            clean_up_tokenization_spaces=req.clean_up_tokenization_spaces)])
    text, _ = collect(run, st.metrics, "/chat", started)
    if req.messages is None and req.return_full_text:
        text = (req.prompt or "") + text
    return {"Result": text}
