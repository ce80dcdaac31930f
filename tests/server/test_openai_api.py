"""OpenAI's API: models, completions, chat, streaming (incremental, cancellable), errors, concurrency."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from .conftest import SERVED_STRENGTHS, greedy_ids, open_stream, serving

PROMPT = "The quick brown fox"


def reference_text(served, prompt_ids_or_text, new_tokens):
    tokenizer = served.tokenizer
    return tokenizer.decode(greedy_ids(served.model, tokenizer, prompt_ids_or_text, new_tokens),
                            skip_special_tokens=True)


def sse_events(raw: str) -> list:
    """Parse an SSE body: every event is 'data: ...' followed by a blank line."""
    assert raw.endswith("data: [DONE]\n\n")
    events = [block for block in raw.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    return [json.loads(block[6:]) for block in events[:-1]]


def token_id(served, text: str) -> int:
    ids = served.tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) == 1, f"{text!r} is not one token"
    return ids[0]


# --- models ------------------------------------------------------------------


def test_models_lists_the_merged_adapters_and_strengths(client, served):
    body = client.get("/v1/models").json
    assert body["object"] == "list" and len(body["data"]) == 1
    card = body["data"][0]
    assert (card["id"], card["object"], card["owned_by"]) == (served.model_name, "model", "kaitoctl")
    assert [(a["name"], a["strength"]) for a in card["adapters"]] == list(SERVED_STRENGTHS.items())
    assert [a["rank"] for a in card["adapters"]] == [4, 8]
    assert client.get(f"/v1/models/{served.model_name}").json == card
    missing = client.get("/v1/models/gpt-4")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "model_not_found"


# --- completions ---------------------------------------------------------------


def test_completion_greedy_matches_generate_with_usage_and_length_finish(client, served):
    response = client.post("/v1/completions", json={"model": "anything", "prompt": PROMPT, "max_tokens": 10,
                                                     "temperature": 0, "min_tokens": 10})
    assert response.status_code == 200
    body = response.json
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    choice = body["choices"][0]
    assert choice["text"] == reference_text(served, PROMPT, 10)
    assert choice["finish_reason"] == "length"
    prompt_tokens = len(served.tokenizer(PROMPT).input_ids)
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 10,
                             "total_tokens": prompt_tokens + 10}


def test_completion_prompt_forms_and_echo(client, served):
    ids = served.tokenizer(PROMPT).input_ids
    base = {"max_tokens": 6, "temperature": 0}
    by_text = client.post("/v1/completions", json={**base, "prompt": PROMPT}).json["choices"][0]["text"]
    by_ids = client.post("/v1/completions", json={**base, "prompt": ids}).json["choices"][0]["text"]
    assert by_ids == by_text
    several = client.post("/v1/completions", json={**base, "prompt": [PROMPT, "Hello world"], "n": 2}).json
    assert [c["index"] for c in several["choices"]] == [0, 1, 2, 3]
    assert several["choices"][0]["text"] == several["choices"][1]["text"] == by_text  # greedy: n copies
    echoed = client.post("/v1/completions", json={**base, "prompt": PROMPT, "echo": True}).json
    assert echoed["choices"][0]["text"] == PROMPT + by_text


@pytest.mark.parametrize("stream", [False, True])
def test_stop_string_across_tokens_truncates_and_finishes_with_stop(client, served, stream):
    forced = token_id(served, "Hello")  # every token is "Hello": "HelloHelloHello..."
    body = {"prompt": PROMPT, "max_tokens": 16, "temperature": 0, "logit_bias": {str(forced): 100},
            "stop": ["xyz", "loHel"], "stream": stream}
    response = client.post("/v1/completions", json=body)
    if stream:
        chunks = sse_events(response.get_data(as_text=True))
        text = "".join(c["choices"][0]["text"] for c in chunks)
        finish = chunks[-1]["choices"][0]["finish_reason"]
    else:
        text, finish = response.json["choices"][0]["text"], response.json["choices"][0]["finish_reason"]
    response.close()
    assert (text, finish) == ("Hel", "stop")


def test_eos_finishes_with_stop(client, served):
    eos = served.tokenizer.eos_token_id
    body = client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "logit_bias": {str(eos): 100}}).json
    choice = body["choices"][0]
    assert (choice["finish_reason"], choice["message"]["content"], body["usage"]["completion_tokens"]) == (
        "stop", "", 1)


@pytest.mark.parametrize("seed", [1234, -1, 2**70])
def test_seed_makes_sampling_reproducible(client, seed):
    body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 1.0, "seed": seed}
    first = client.post("/v1/completions", json=body)
    assert first.status_code == 200
    assert client.post("/v1/completions", json=body).json["choices"][0]["text"] == first.json["choices"][0]["text"]


def test_logit_bias_and_penalties_reach_the_sampler(client, served):
    forced = token_id(served, "Hello")
    body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0, "logit_bias": {str(forced): 100}}
    assert client.post("/v1/completions", json=body).json["choices"][0]["text"] == "Hello" * 4
    # a frequency penalty larger than the bias lets the model move away from the repeated token
    penalised = client.post("/v1/completions", json={**body, "frequency_penalty": 2.0,
                                                     "logit_bias": {str(forced): 3}}).json
    assert penalised["choices"][0]["text"] != "Hello" * 4


# --- chat ----------------------------------------------------------------------


def test_chat_completion_uses_the_chat_template(client, served):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    body = client.post("/v1/chat/completions", json={"messages": messages, "max_completion_tokens": 8,
                                                     "temperature": 0, "min_tokens": 8}).json
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    prompt = "<|system|>be brief<|endoftext|><|user|>hi<|endoftext|><|assistant|>"
    ids = served.tokenizer(prompt, add_special_tokens=False).input_ids
    assert body["choices"][0]["message"] == {"role": "assistant", "content": reference_text(served, prompt, 8)}
    assert body["usage"]["prompt_tokens"] == len(ids)


# --- streaming -----------------------------------------------------------------


def test_chat_stream_chunks_add_up_to_the_non_streamed_answer(client):
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 12, "temperature": 0,
            "min_tokens": 12}
    whole = client.post("/v1/chat/completions", json=body).json
    response = client.post("/v1/chat/completions", json={**body, "stream": True,
                                                          "stream_options": {"include_usage": True}})
    assert response.mimetype == "text/event-stream"
    chunks = sse_events(response.get_data(as_text=True))
    response.close()
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_completion_stream_without_usage(client):
    response = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 5, "temperature": 0,
                                                    "stream": True})
    chunks = sse_events(response.get_data(as_text=True))
    response.close()
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.fixture()
def gate(served, monkeypatch):
    """Hold generation before its second forward pass until the test opens the gate."""
    opened = threading.Event()
    calls = []
    original = served.model.forward

    def gated(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            assert opened.wait(60), "the test never opened the gate"
        return original(*args, **kwargs)

    monkeypatch.setattr(served.model, "forward", gated)
    yield SimpleNamespace(opened=opened, calls=calls)
    opened.set()


def next_event(response) -> dict:
    while True:
        line = response.readline().decode()
        if line.startswith("data: "):
            return json.loads(line[6:])


def test_first_chunk_arrives_while_generation_is_still_running(served, live_url, gate):
    forced = token_id(served, "Hello")
    conn, response = open_stream(live_url, "/v1/completions", {
        "prompt": PROMPT, "max_tokens": 20, "temperature": 0, "stream": True, "logit_bias": {str(forced): 100}})
    first = next_event(response)
    assert first["choices"][0]["text"] == "Hello"
    assert len(gate.calls) <= 2 and not gate.opened.is_set()  # the model is held at its second step
    gate.opened.set()
    rest = response.read().decode()
    conn.close()
    assert rest.count('"text":"Hello"') == 19 and rest.endswith("data: [DONE]\n\n")


def test_client_disconnect_stops_the_generation(served, live_url, gate):
    forced = token_id(served, "Hello")
    before = served.engine.tokens_generated
    conn, response = open_stream(live_url, "/v1/completions", {
        "prompt": PROMPT, "max_tokens": 900, "temperature": 0, "stream": True, "logit_bias": {str(forced): 100}})
    assert next_event(response)["choices"][0]["text"] == "Hello"
    response.close()
    conn.close()
    gate.opened.set()
    for _ in range(1200):  # wait until the row has left the batch (bounded: 120 s)
        if served.engine.running == 0:
            break
        threading.Event().wait(0.1)
    assert served.engine.running == 0
    assert served.engine.tokens_generated - before < 900


# --- errors --------------------------------------------------------------------


CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", {**CHAT, "temperature": 3}, "temperature"),
    ("/v1/chat/completions", {**CHAT, "top_p": 0}, "top_p"),
    ("/v1/chat/completions", {**CHAT, "n": 0}, "n"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "max_tokens": "many"}, "max_tokens"),
    ("/v1/chat/completions", {**CHAT, "presence_penalty": 9}, "presence_penalty"),
    ("/v1/chat/completions", {**CHAT, "temprature": 0.5}, "temprature"),
    ("/v1/chat/completions", {**CHAT, "logprobs": True}, "logprobs"),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, "tools"),
    ("/v1/chat/completions", {**CHAT, "stop": [""]}, "stop"),
    ("/v1/chat/completions", {**CHAT, "logit_bias": {"999999": 1}}, "logit_bias"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages.0.content"),
    ("/v1/completions", {"prompt": [99999], "max_tokens": 2}, "prompt"),
    ("/v1/completions", {}, "prompt"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 5000}, "max_tokens"),
    ("/v1/completions", {"prompt": "hello world " * 600, "max_tokens": 100}, "max_tokens"),
])
def test_bad_requests_are_400_in_openai_shape_naming_the_field(client, path, body, param):
    response = client.post(path, json=body)
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"]


def test_context_overflow_says_how_many_tokens(client):
    error = client.post("/v1/completions", json={"prompt": "hello world " * 600, "max_tokens": 100}).json["error"]
    assert error["code"] == "context_length_exceeded" and "maximum context length is 1024" in error["message"]


def test_invalid_json_and_unknown_route_in_openai_shape(client):
    bad = client.post("/v1/chat/completions", data=b"{", content_type="application/json")
    assert bad.status_code == 400 and "not valid JSON" in bad.json["error"]["message"]
    assert client.post("/v1/embeddings", json={}).json["error"]["code"] == "not_found"


def test_api_key_errors_in_openai_shape(make_client):
    client = make_client(api_key="k1")
    response = client.get("/v1/models")
    assert response.status_code == 401 and response.json["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 200


# --- concurrency ---------------------------------------------------------------


def post(url: str, body: dict) -> str:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["choices"][0]["text"]


def test_concurrent_requests_get_the_same_answers_as_sequential_ones(live_url):
    url = live_url + "/v1/completions"
    bodies = [{"prompt": p, "max_tokens": 12, "temperature": 0} for p in (PROMPT, "Hello world", "1 2 3")]
    bodies += [{"prompt": PROMPT, "max_tokens": 12, "temperature": 1.0, "seed": s} for s in (1, 2)]
    sequential = [post(url, b) for b in bodies]
    with ThreadPoolExecutor(max_workers=len(bodies) * 2) as pool:
        concurrent = list(pool.map(lambda b: post(url, b), bodies * 2))
    assert concurrent == sequential * 2


# --- the official openai client ------------------------------------------------


def test_openai_client_completions_chat_and_streaming(live_url, served):
    from openai import BadRequestError, OpenAI

    client = OpenAI(base_url=live_url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [served.model_name]

    completion = client.completions.create(model=served.model_name, prompt=PROMPT, max_tokens=8, temperature=0,
                                           extra_body={"min_tokens": 8})
    assert completion.choices[0].text == reference_text(served, PROMPT, 8)
    assert completion.usage.completion_tokens == 8

    messages = [{"role": "user", "content": "hello"}]
    chat = client.chat.completions.create(model=served.model_name, messages=messages, max_tokens=8, temperature=0)
    assert chat.choices[0].message.role == "assistant" and chat.usage.completion_tokens >= 1

    stream = client.chat.completions.create(model=served.model_name, messages=messages, max_tokens=8,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == chat.choices[0].message.content
    assert chunks[-1].usage.total_tokens == chat.usage.total_tokens

    with pytest.raises(BadRequestError, match="temperature"):
        client.chat.completions.create(model=served.model_name, messages=messages, temperature=5)


def test_openai_client_with_an_api_key(served_config, served):
    from openai import AuthenticationError, OpenAI

    from kaitoctl_server.app import create_app

    with serving(create_app(served_config.with_changes(api_key="s3cret"), served=served)) as url:
        with pytest.raises(AuthenticationError):
            OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        models = OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0).models.list()
        assert models.data[0].id == served.model_name


def test_urllib_sees_401_over_http(served_config, served):
    from kaitoctl_server.app import create_app

    with serving(create_app(served_config.with_changes(api_key="k"), served=served)) as url:
        with pytest.raises(urllib.error.HTTPError) as err:
            post(url + "/v1/completions", {"prompt": "hi"})
        assert err.value.code == 401
