"""Continuous batching: batched answers equal solo answers, per-request settings, streams, cancellation,
backpressure (429) and the scheduler's metrics."""

from __future__ import annotations

import dataclasses
import json
import threading
from types import SimpleNamespace

import pytest

from .conftest import open_stream, serving


def same_length_prompts(tokenizer, count: int) -> list[list[int]]:
    """``count`` different prompts of the same token length (plain word tokens of the tiny vocabulary)."""
    base = tokenizer("The quick brown fox jumps over").input_ids
    return [base[:-2] + [base[-2] + 3 * i, base[-1] + i] for i in range(count)]


def generate_ids(model, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy continuation straight from ``generate`` (the reference the batch must match)."""
    import torch

    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def greedy_config(served, new_tokens: int, **extra):
    from kaitoctl_server.api_common import generation_config as make

    return make(served, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                pad_token_id=served.tokenizer.pad_token_id, **extra)


def text_and_finish(generation) -> tuple[str, object]:
    from kaitoctl_server.engine import Finished, Piece

    pieces, finished = [], None
    for event in generation:
        if isinstance(event, Piece):
            pieces.append(event.text)
        else:
            assert isinstance(event, Finished)
            finished = event
    return "".join(pieces), finished


@pytest.fixture()
def engine(served):
    """A fresh engine over the session's model (its own scheduler, batch and limits)."""
    from kaitoctl_server.engine import Engine

    made = []

    def make(**limits):
        made.append(Engine(served.model, served.tokenizer, "cpu", **limits))
        return made[-1]

    yield make
    for e in made:
        e.close()


@pytest.fixture()
def gate(served, monkeypatch):
    """Hold every model call after the first ``allowed`` until the test opens the gate."""
    opened = threading.Event()
    calls = []
    original = served.model.forward
    state = SimpleNamespace(opened=opened, calls=calls, allowed=1)

    def gated(*args, **kwargs):
        calls.append(1)
        if len(calls) > state.allowed:
            assert opened.wait(60), "the test never opened the gate"
        return original(*args, **kwargs)

    monkeypatch.setattr(served.model, "forward", gated)
    yield state
    opened.set()


def test_batched_greedy_answers_equal_solo_generate(served, engine):
    """Same-length prompts generated together give exactly the tokens of generate() alone."""
    tok = served.tokenizer
    prompts = same_length_prompts(tok, 4)
    eng = engine(max_batch=8)
    runs = eng.submit([dict(prompt_ids=p, generation_config=greedy_config(served, 10)) for p in prompts])
    texts = [text_and_finish(run)[0] for run in runs]
    expected = [tok.decode(generate_ids(served.model, p, 10), skip_special_tokens=True) for p in prompts]
    assert texts == expected


def test_rows_joining_and_leaving_mid_generation_do_not_change_the_others(served, engine):
    """A short request leaves and two join while a long one runs: each answer is its solo answer."""
    tok = served.tokenizer
    prompts = same_length_prompts(tok, 4)
    eng = engine(max_batch=8)
    solo = [text_and_finish(eng.stream(p, greedy_config(served, 14)))[0] for p in prompts]
    long_run, short_run = eng.submit([dict(prompt_ids=prompts[0], generation_config=greedy_config(served, 14)),
                                      dict(prompt_ids=prompts[1], generation_config=greedy_config(served, 3))])
    first = next(long_run)  # the long row is running; the next two join at a later step
    late = eng.submit([dict(prompt_ids=p, generation_config=greedy_config(served, 14)) for p in prompts[2:]])
    long_text = first.text + text_and_finish(long_run)[0]
    short_text = text_and_finish(short_run)[0]
    assert long_text == solo[0]
    assert solo[1].startswith(short_text) and short_text
    assert [text_and_finish(run)[0] for run in late] == solo[2:]


def test_mixed_settings_in_one_batch_each_get_their_own(served, engine):
    """Greedy, seeded sampling, a stop string, logit_bias and different lengths, all in one batch."""
    from kaitoctl_server.api_common import generation_config as make
    from kaitoctl_server.engine import OpenAIPenalties

    tok = served.tokenizer
    prompts = same_length_prompts(tok, 3)
    hello = tok("Hello", add_special_tokens=False).input_ids[0]
    sampled = make(served, do_sample=True, temperature=1.0, top_k=0, top_p=0.9, max_new_tokens=8, min_new_tokens=8)
    jobs = [
        dict(prompt_ids=prompts[0], generation_config=greedy_config(served, 6)),
        dict(prompt_ids=prompts[1], generation_config=sampled, seed=7),
        dict(prompt_ids=prompts[2], generation_config=greedy_config(served, 9),
             logits_processors=[OpenAIPenalties(len(prompts[2]), 0.0, 0.0, {hello: 100.0})]),
        dict(prompt_ids=prompts[0], generation_config=greedy_config(served, 12), stop=["Hello"]),
    ]
    eng = engine(max_batch=8)
    solo = [text_and_finish(eng.submit([job])[0]) for job in jobs]
    together = [text_and_finish(run) for run in eng.submit(jobs)]
    assert [t for t, _ in together] == [t for t, _ in solo]
    assert [f.completion_tokens for _, f in together][:3] == [6, 8, 9]
    assert together[2][0] == "Hello" * 9
    assert [f.finish_reason for _, f in together][:3] == ["length", "length", "length"]
    # the same seed again gives the same sample, in a batch or not
    assert text_and_finish(eng.submit([jobs[1]])[0])[0] == together[1][0]


def test_a_seeded_request_leaves_torchs_global_generator_alone(client):
    """A seed used to seed torch's global generator, making later unseeded requests predictable."""
    import torch

    before = torch.random.get_rng_state()
    body = {"prompt": "The quick brown fox", "max_tokens": 6, "temperature": 1.0, "seed": 42}
    assert client.post("/v1/completions", json=body).status_code == 200
    assert torch.equal(torch.random.get_rng_state(), before)
    # a KAITO request whose settings take the serial generate() path, seeded through the OpenAI route's twin
    unseeded = {"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 1.0}
    texts = {client.post("/v1/completions", json=unseeded).json["choices"][0]["text"] for _ in range(4)}
    assert len(texts) > 1  # unseeded sampling differs from one request to the next


def test_serial_path_requests_still_work_and_keep_the_global_generator(served, engine):
    """Settings the batch cannot express (here no_repeat_ngram_size) run through generate() on the same thread."""
    import torch

    from kaitoctl_server.api_common import generation_config as make
    from kaitoctl_server.engine import batchable

    config = make(served, do_sample=True, top_k=5, no_repeat_ngram_size=2, max_new_tokens=6, min_new_tokens=6)
    assert not batchable(config)
    eng = engine(max_batch=4)
    prompt = served.tokenizer("The quick brown fox").input_ids
    before = torch.random.get_rng_state()
    first = text_and_finish(eng.stream(prompt, config, seed=3))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert first[1].completion_tokens == 6
    assert text_and_finish(eng.stream(prompt, config, seed=3))[0] == first[0]


def wait_until(condition, seconds: float = 60) -> None:
    """Poll ``condition`` every 50 ms; fail after ``seconds`` (a bound, never a timing assertion)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        threading.Event().wait(0.05)
    assert condition()


def next_text(response) -> str:
    while True:
        line = response.readline().decode()
        assert line, "the stream ended early"
        if line.startswith("data: "):
            return json.loads(line[6:])["choices"][0]["text"]


def forced(served, max_tokens: int) -> dict:
    hello = served.tokenizer("Hello", add_special_tokens=False).input_ids[0]
    return {"prompt": "The quick brown fox", "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "logit_bias": {str(hello): 100}}


def test_streams_interleave_and_one_client_leaving_does_not_stop_the_others(served, served_config):
    """Two clients stream at once (both rows in the batch); the first hangs up, the second gets every token."""
    from kaitoctl_server.app import create_app
    from kaitoctl_server.engine import Engine

    own = dataclasses.replace(served, engine=Engine(served.model, served.tokenizer, "cpu", max_batch=4))
    try:
        with serving(create_app(served_config, served=own)) as url:
            conn_a, stream_a = open_stream(url, "/v1/completions", forced(served, 400))
            assert next_text(stream_a) == "Hello"
            conn_b, stream_b = open_stream(url, "/v1/completions", forced(served, 40))
            assert next_text(stream_b) == "Hello"
            assert next_text(stream_a) == "Hello"  # A keeps streaming after B started
            assert own.engine.running == 2  # both generations are in the running batch
            stream_a.close()
            conn_a.close()
            rest = stream_b.read().decode()
            conn_b.close()
            assert rest.count('"text":"Hello"') == 39 and rest.endswith("data: [DONE]\n\n")
            wait_until(lambda: own.engine.running == 0)  # A's row leaves the batch once its client is gone
            assert own.engine.tokens_generated < 400 + 40
    finally:
        own.engine.close()


def test_queue_full_is_a_429_with_retry_after_in_each_apis_shape(served, served_config, gate):
    from kaitoctl_server.app import create_app
    from kaitoctl_server.engine import Engine

    own = dataclasses.replace(served, engine=Engine(served.model, served.tokenizer, "cpu", max_batch=1, max_queue=1))
    try:
        client = create_app(served_config, served=own).test_client()
        prompt = served.tokenizer("hi").input_ids
        held = own.engine.submit([dict(prompt_ids=prompt, generation_config=greedy_config(served, 5))] * 2)
        assert (own.engine.running + own.engine.waiting) == 2  # full, whether the first has joined the batch or not
        wait_until(lambda: own.engine.running == 1)  # the first is in the batch (held by the gate), one waits

        full = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 5})
        assert full.status_code == 429 and full.headers["Retry-After"] == "1"
        assert full.json["error"]["code"] == "rate_limit_exceeded"
        assert "KAITOCTL_MAX_QUEUE" in full.json["error"]["message"]
        kaito = client.post("/chat", json={"prompt": "hi", "generate_kwargs": {"max_new_tokens": 2}})
        assert kaito.status_code == 429 and kaito.headers["Retry-After"]
        assert set(kaito.json) == {"detail"} and "at capacity" in kaito.json["detail"]
        too_many = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "n": 3})
        assert too_many.status_code == 400 and "at most 2" in too_many.json["error"]["message"]
        metrics = client.get("/metrics").get_data(as_text=True)
        assert "kaitoctl_requests_rejected_total 2.0" in metrics
        assert "vllm:num_requests_running 1.0" in metrics and "vllm:num_requests_waiting 1.0" in metrics

        gate.opened.set()
        assert [text_and_finish(run)[1].completion_tokens for run in held] == [5, 5]
        assert client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 200
    finally:
        own.engine.close()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def test_scheduler_metrics_move(make_client):
    client = make_client()
    before = client.get("/metrics").get_data(as_text=True)
    body = {"prompt": "The quick brown fox", "max_tokens": 4, "min_tokens": 4, "temperature": 0, "n": 3}
    assert client.post("/v1/completions", json=body).status_code == 200
    after = client.get("/metrics").get_data(as_text=True)
    for name in ("vllm:time_to_first_token_seconds_count", "vllm:time_per_output_token_seconds_count",
                 "vllm:request_queue_time_seconds_count", "vllm:e2e_request_latency_seconds_count"):
        assert metric(after, name) - metric(before, name) == 3, name
    assert metric(after, "vllm:generation_tokens_total") - metric(before, "vllm:generation_tokens_total") == 12
    # the three choices ran together: a decode step with 3 rows
    assert metric(after, 'kaitoctl_batch_size_bucket{le="2.0"}') < metric(after, 'kaitoctl_batch_size_bucket{le="4.0"}')
    assert metric(after, "vllm:avg_generation_throughput_toks_per_s") > 0
    assert metric(after, "vllm:num_requests_running") == 0


# --- limits on what one request may ask (issue 13) ---------------------------------


@pytest.mark.parametrize("stops,needle", [
    ([f"s{i}" for i in range(17)], "at most 16 stop strings"),
    (["x" * 257], "at most 256 characters"),
    ([""], "must not be empty"),
])
def test_kaito_stop_strings_are_capped(client, stops, needle):
    response = client.post("/chat", json={"prompt": "hi", "generate_kwargs": {"max_new_tokens": 2,
                                                                             "stop_strings": stops}})
    assert response.status_code == 422
    detail = response.json["detail"][0]
    assert detail["loc"] == ["body", "generate_kwargs", "stop_strings"] and needle in detail["msg"]


def test_openai_stop_strings_have_the_same_length_cap(client):
    response = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "stop": ["x" * 257]})
    assert response.status_code == 400 and "at most 256 characters" in response.json["error"]["message"]


def test_completion_prompt_lists_are_capped(client):
    response = client.post("/v1/completions", json={"prompt": ["hi"] * 33, "max_tokens": 1})
    assert response.status_code == 400
    assert response.json["error"]["param"] == "prompt" and "at most 32 prompts" in response.json["error"]["message"]
    many_ids = client.post("/v1/completions", json={"prompt": [[5, 6]] * 33, "max_tokens": 1})
    assert many_ids.status_code == 400 and "at most 32 prompts" in many_ids.json["error"]["message"]
    ok = client.post("/v1/completions", json={"prompt": ["hi"] * 3, "max_tokens": 1})
    assert ok.status_code == 200 and len(ok.json["choices"]) == 3


def test_runner_calls_are_plain_data_and_replay_to_the_same_logits(served):
    """The contract with the tensor-parallel server: the engine takes a runner (or a factory) from outside,
    calls it with plain ints and lists only, and replaying the same calls on another runner gives the same
    logits (what every rank does in lockstep)."""
    import torch

    from kaitoctl_server.engine import Engine
    from kaitoctl_server.runner import BatchRunner

    calls, results = [], []

    class Recording:
        def __init__(self, model, device):
            self.inner = BatchRunner(model, device)

        @property
        def rows(self):
            return self.inner.rows

        def __getattr__(self, name):
            method = getattr(self.inner, name)

            def call(*args):
                calls.append((name, args))
                out = method(*args)
                results.append(out)
                return out
            return call

    eng = Engine(served.model, served.tokenizer, "cpu", runner=Recording, max_batch=3)
    try:
        prompts = same_length_prompts(served.tokenizer, 2) + [[7, 8, 9]]
        runs = eng.submit([dict(prompt_ids=p, generation_config=greedy_config(served, n))
                           for p, n in zip(prompts, (3, 6, 4))])
        [text_and_finish(run) for run in runs]
    finally:
        eng.close()

    def plain(value):
        return isinstance(value, int) or (isinstance(value, list) and all(plain(v) for v in value))

    assert {name for name, _ in calls} >= {"add", "step", "keep"}
    assert all(plain(list(args)) for _, args in calls)
    replay = BatchRunner(served.model, "cpu")
    for (name, args), expected in zip(calls, results):
        got = getattr(replay, name)(*args)
        if expected is not None:
            assert torch.equal(got, expected), name
