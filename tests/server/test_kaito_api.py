"""KAITO's API: routes, its generate_kwargs defaults reaching generate, its 400 messages, readiness."""

from __future__ import annotations

import threading

import pytest

from kaitoctl_server.app import create_app
from kaitoctl_server.config import ServerConfig
from kaitoctl_server.errors import StartupError


@pytest.fixture()
def captured(served, monkeypatch):
    """Record the prompt and generation config of every generation queued on the engine (it still runs)."""
    calls = []
    original = served.engine.submit

    def spy(jobs):
        calls.extend(jobs)
        return original(jobs)

    monkeypatch.setattr(served.engine, "submit", spy)
    return calls


def test_root_and_health(client):
    assert client.get("/").json == {"message": "Server is running"}
    for path in ("/health", "/healthz"):
        response = client.get(path)
        assert (response.status_code, response.json) == (200, {"status": "Healthy", "rank": 0, "world_size": 1})


def test_chat_with_prompt_returns_the_prompt_and_the_continuation(client, served):
    from .conftest import greedy_ids

    body = {"prompt": "The quick brown fox", "generate_kwargs": {"do_sample": False, "max_new_tokens": 12,
                                                                "min_new_tokens": 12}}
    response = client.post("/chat", json=body)
    assert response.status_code == 200
    expected = served.tokenizer.decode(greedy_ids(served.model, served.tokenizer, "The quick brown fox", 12),
                                       skip_special_tokens=True)
    assert response.json == {"Result": "The quick brown fox" + expected}

    body["return_full_text"] = False
    assert client.post("/chat", json=body).json == {"Result": expected}


def test_kaito_defaults_reach_generate(client, served, captured):
    prompt_tokens = len(served.tokenizer("Hello world").input_ids)
    assert client.post("/chat", json={"prompt": "Hello world"}).status_code == 200
    config = captured[-1]["generation_config"]
    assert config.max_new_tokens == 200 - prompt_tokens  # KAITO's max_length 200 counts the prompt
    assert (config.min_length, config.do_sample, config.early_stopping, config.num_beams) == (0, True, False, 1)
    assert (config.temperature, config.top_k, config.top_p, config.typical_p, config.repetition_penalty) == (
        1.0, 10, 1.0, 1.0, 1.0)
    assert config.pad_token_id == served.tokenizer.pad_token_id
    assert config.eos_token_id == served.tokenizer.eos_token_id


def test_request_generate_kwargs_override_the_defaults(client, captured):
    body = {"prompt": "Hello", "generate_kwargs": {"temperature": 0.5, "top_k": 3, "max_new_tokens": 7,
                                                    "no_repeat_ngram_size": 2}}
    assert client.post("/chat", json=body).status_code == 200
    config = captured[-1]["generation_config"]
    assert (config.temperature, config.top_k, config.max_new_tokens, config.no_repeat_ngram_size) == (0.5, 3, 7, 2)


def test_max_length_bounds_the_new_tokens(client, served, captured):
    prompt = "Kubernetes schedules pods"
    prompt_tokens = len(served.tokenizer(prompt).input_ids)
    before = served.engine.tokens_generated
    body = {"prompt": prompt, "generate_kwargs": {"max_length": prompt_tokens + 5, "min_length": prompt_tokens + 5}}
    assert client.post("/chat", json=body).status_code == 200
    assert captured[-1]["generation_config"].max_new_tokens == 5
    assert served.engine.tokens_generated - before == 5


def test_messages_use_the_chat_template_and_return_the_reply(client, served, captured):
    body = {"messages": [{"role": "user", "content": "hi"}], "generate_kwargs": {"max_new_tokens": 4}}
    response = client.post("/chat", json=body)
    assert response.status_code == 200 and isinstance(response.json["Result"], str)
    prompt_ids = list(captured[-1]["prompt_ids"])
    assert served.tokenizer.decode(prompt_ids) == "<|user|>hi<|endoftext|><|assistant|>"


def test_missing_prompt_gives_kaitos_400_per_pipeline(make_client):
    assert make_client().post("/chat", json={}).json == {"detail": "Text generation parameter prompt required"}
    response = make_client(pipeline="chat").post("/chat", json={"generate_kwargs": {}})
    assert (response.status_code, response.json) == (400, {"detail": "Conversational parameter messages required"})


@pytest.mark.parametrize("generate_kwargs,field", [
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"num_beams": 0}, "num_beams"),
    ({"temperature": 0}, "generate_kwargs"),  # sampling at temperature 0
    ({"streamer": "x"}, "generate_kwargs"),  # not a plain generation setting
    ({"max_new_tokens": 0}, "max_new_tokens"),
])
def test_bad_generate_kwargs_are_a_422_naming_the_field(client, generate_kwargs, field):
    response = client.post("/chat", json={"prompt": "hi", "generate_kwargs": generate_kwargs})
    assert response.status_code == 422
    detail = response.json["detail"]
    assert detail[0]["loc"][:2] == ["body", "generate_kwargs"] and field in detail[0]["msg"]


def test_wrong_top_level_type_is_a_422(client):
    response = client.post("/chat", json={"prompt": ["not", "a", "string"]})
    assert response.status_code == 422 and response.json["detail"][0]["loc"] == ["body", "prompt"]


@pytest.mark.parametrize("data,needle", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b"", "empty"),
])
def test_unparsable_bodies_are_a_400(client, data, needle):
    response = client.post("/chat", data=data, content_type="application/json")
    assert response.status_code == 400 and needle in response.json["detail"]


def test_prompt_longer_than_the_context_is_a_400_and_hole_truncates_it(client, served):
    long_prompt = "hello world " * 1200
    assert len(served.tokenizer(long_prompt).input_ids) > served.context_length
    body = {"prompt": long_prompt, "return_full_text": False, "generate_kwargs": {"max_new_tokens": 4}}
    response = client.post("/chat", json=body)
    assert response.status_code == 400 and "maximum context length is 1024" in response.json["detail"]

    body["handle_long_generation"] = "hole"
    assert client.post("/chat", json=body).status_code == 200


def test_max_length_smaller_than_the_prompt_explains_itself(client):
    response = client.post("/chat", json={"prompt": "hello world " * 20, "generate_kwargs": {"max_length": 5}})
    assert response.status_code == 400 and "max_length=5" in response.json["detail"]


def test_new_tokens_above_the_server_cap_are_refused(make_client):
    response = make_client(max_tokens=32).post("/chat", json={"prompt": "hi"})  # KAITO default asks ~198
    assert response.status_code == 400 and "KAITOCTL_MAX_TOKENS" in response.json["detail"]


def test_oversized_body_is_a_413(make_client):
    response = make_client(max_body_bytes=2048).post("/chat", json={"prompt": "x" * 4096})
    assert response.status_code == 413 and "KAITOCTL_MAX_BODY_BYTES" in response.json["detail"]


def test_api_key_guards_generation_but_not_probes(make_client):
    client = make_client(api_key="s3cret")
    response = client.post("/chat", json={"prompt": "hi", "generate_kwargs": {"max_new_tokens": 2}})
    assert response.status_code == 401 and "Bearer" in response.json["detail"]
    assert response.headers["WWW-Authenticate"] == "Bearer"
    wrong = client.post("/chat", json={"prompt": "hi"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = client.post("/chat", json={"prompt": "hi", "generate_kwargs": {"max_new_tokens": 2}},
                     headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert client.get("/health").status_code == 200 and client.get("/metrics").status_code == 200


def test_unknown_route_and_method(client):
    assert (client.get("/nope").status_code, client.get("/nope").json) == (404, {"detail": "Not Found"})
    assert client.get("/chat").status_code == 405


def test_generation_error_is_a_logged_500_and_the_server_keeps_serving(client, served, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(served.model, "forward", broken)
    response = client.post("/chat", json={"prompt": "hi"})
    assert response.status_code == 500 and "device-side assert" in response.json["detail"]
    assert any("generation failed" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    assert client.post("/chat", json={"prompt": "hi", "generate_kwargs": {"max_new_tokens": 2}}).status_code == 200


def test_health_is_503_until_the_model_is_ready(served):
    release = threading.Event()

    def slow_loader(config):
        release.wait(30)
        return served

    client = create_app(ServerConfig(model_dir="/unused"), loader=slow_loader).test_client()
    health = client.get("/health")
    assert (health.status_code, health.json["status"]) == (503, "Loading")
    chat = client.post("/chat", json={"prompt": "hi"})
    assert (chat.status_code, chat.json) == (503, {"detail": "Model not initialized"})
    models = client.get("/v1/models")
    assert models.status_code == 503 and "still loading" in models.json["error"]["message"]
    assert models.headers["Retry-After"]
    release.set()
    state = client.application.extensions["kaitoctl"]
    for _ in range(3000):
        if state.status == "ready":
            break
        threading.Event().wait(0.01)
    assert client.get("/health").status_code == 200


def test_failed_load_is_reported_on_health_and_to_the_failure_hook():
    failures = []
    loaded = threading.Event()

    def failing_loader(config):
        raise StartupError("adapter 'x': directory /mnt/adapter/x does not exist")

    def on_failure(err):
        failures.append(err)
        loaded.set()

    client = create_app(ServerConfig(model_dir="/unused"), loader=failing_loader,
                        on_load_failure=on_failure).test_client()
    client.get("/")  # the first request starts loading
    assert loaded.wait(30)
    health = client.get("/health")
    assert health.status_code == 503 and health.json["status"] == "Failed"
    assert "/mnt/adapter/x" in health.json["detail"] and isinstance(failures[0], StartupError)
