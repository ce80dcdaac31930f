"""GET /metrics: Prometheus text with requests, latency, tokens, time to first token, load and merge, adapters."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    response.close()
    return found


def value(found: dict, name: str, **labels) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_metrics_count_requests_tokens_and_first_token_time(make_client, served):
    client = make_client()
    with client.post("/chat", json={"prompt": "hi", "generate_kwargs": {"max_new_tokens": 3,
                                                                        "min_new_tokens": 3}}) as r:
        assert r.status_code == 200
    with client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                   "max_tokens": 4, "min_tokens": 4, "stream": True}) as r:
        r.get_data()
    with client.post("/v1/completions", json={"prompt": "hi", "temperature": 7}) as r:
        assert r.status_code == 400

    found = samples(client)
    assert value(found, "kaitoctl_http_requests_total", route="/chat", method="POST", status="200") == 1
    assert value(found, "kaitoctl_http_requests_total", route="/v1/completions", method="POST", status="400") == 1
    assert value(found, "kaitoctl_http_request_duration_seconds_count", route="/v1/chat/completions") == 1
    assert value(found, "kaitoctl_generation_tokens_total", route="/chat") == 3
    assert value(found, "kaitoctl_generation_tokens_total", route="/v1/chat/completions") == 4
    assert value(found, "kaitoctl_prompt_tokens_total", route="/chat") == len(served.tokenizer("hi").input_ids)
    assert value(found, "kaitoctl_time_to_first_token_seconds_count", route="/v1/chat/completions") == 1
    assert value(found, "kaitoctl_http_requests_in_flight") == 1  # only the scrape itself


def test_metrics_describe_the_model_and_its_adapters(make_client, served):
    found = samples(make_client())
    assert value(found, "kaitoctl_model_ready") == 1
    assert value(found, "kaitoctl_model_load_seconds") == served.load_seconds
    assert value(found, "kaitoctl_adapter_merge_seconds") == served.merge_seconds
    assert value(found, "kaitoctl_adapter_info", adapter="a1", rank="4", alpha="8", strength="0.7") == 1
    assert value(found, "kaitoctl_adapter_info", adapter="a2", rank="8", alpha="16", strength="0.4") == 1
    assert value(found, "kaitoctl_model_info", model=served.model_name, dtype="float32", device="cpu") == 1
    assert not any(name.startswith("kaitoctl_gpu_") for name, _ in found)  # no GPU here
