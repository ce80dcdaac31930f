"""Prometheus metrics (prometheus-client), one registry per app.

A registry per app (rather than the global one) lets tests build several apps
in one process, and keeps the exposition to what this server knows about.
With one gunicorn worker per pod there is no multiprocess aggregation to do.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TPOT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_ITERATION_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class ServerMetrics:
    """The server's metrics; ``render()`` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kaitoctl_http_requests", "HTTP requests by route, method and status code.",
            ["route", "method", "status"], registry=r,
        )
        self.latency = Histogram(
            "kaitoctl_http_request_duration_seconds", "Time from request to the last byte of the response.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.in_flight = Gauge("kaitoctl_http_requests_in_flight", "Requests being served now.", registry=r)
        self.prompt_tokens = Counter(
            "kaitoctl_prompt_tokens", "Prompt tokens processed.", ["route"], registry=r,
        )
        self.generation_tokens = Counter(
            "kaitoctl_generation_tokens", "Tokens generated.", ["route"], registry=r,
        )
        self.time_to_first_token = Histogram(
            "kaitoctl_time_to_first_token_seconds", "Time from request to the first generated token.",
            ["route"], buckets=_TTFT_BUCKETS, registry=r,
        )
        # The scheduler's view, under vLLM's names (dashboards made for KAITO's vLLM runtime read them).
        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, registry=r)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, buckets=buckets, registry=r)

        self.num_requests_running = gauge("vllm:num_requests_running", "Generations in the running batch.")
        self.num_requests_waiting = gauge("vllm:num_requests_waiting", "Generations waiting for a place in the batch.")
        self.generation_throughput = gauge("vllm:avg_generation_throughput_toks_per_s",
                                           "Generated tokens per second over the last 10 s.")
        self.vllm_time_to_first_token = histogram("vllm:time_to_first_token_seconds",
                                                  "Time from request to the first generated token.", _TTFT_BUCKETS)
        self.time_per_output_token = histogram("vllm:time_per_output_token_seconds",
                                               "Time between generated tokens of one request, averaged.", _TPOT_BUCKETS)
        self.queue_time = histogram("vllm:request_queue_time_seconds",
                                    "Time a generation waited for a place in the batch.", _TTFT_BUCKETS)
        self.e2e_latency = histogram("vllm:e2e_request_latency_seconds",
                                     "Time from request to the last generated token.", _LATENCY_BUCKETS)
        self.iteration_tokens = histogram("vllm:iteration_tokens_total",
                                          "Tokens per model call (prompt tokens on prefill, rows on decode).",
                                          _ITERATION_BUCKETS)
        self.batch_size = histogram("kaitoctl_batch_size", "Rows (generations) in the batch at each decode step.",
                                    _BATCH_BUCKETS)
        self.vllm_prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed.", registry=r)
        self.vllm_generation_tokens = Counter("vllm:generation_tokens", "Tokens generated.", registry=r)
        self.rejected = Counter("kaitoctl_requests_rejected",
                                "Generations refused with 429 because the batch and queue were full.", registry=r)
        self.model_ready = Gauge("kaitoctl_model_ready", "1 once the merged model sits on its device.", registry=r)
        self.model_load_seconds = Gauge("kaitoctl_model_load_seconds", "Time to load the base model.", registry=r)
        self.adapter_merge_seconds = Gauge(
            "kaitoctl_adapter_merge_seconds", "Time to merge the LoRA adapters into the weights.", registry=r,
        )
        self.adapter_info = Gauge(
            "kaitoctl_adapter_info", "One series per merged adapter (value 1).",
            ["adapter", "rank", "alpha", "strength"], registry=r,
        )
        self.model_info = Gauge(
            "kaitoctl_model_info", "The served model (value 1).", ["model", "dtype", "device"], registry=r,
        )

    def model_loaded(self, served: Any, gpu_memory: Optional[Callable[[], Any]] = None) -> None:
        """Record what the start-up path did; add GPU memory gauges when there is a GPU."""
        self.model_load_seconds.set(served.load_seconds)
        self.adapter_merge_seconds.set(served.merge_seconds)
        for adapter in served.adapters:
            self.adapter_info.labels(
                adapter["name"], str(adapter["rank"]), f"{adapter['alpha']:g}", f"{adapter['strength']:g}"
            ).set(1)
        self.model_info.labels(served.model_name, served.dtype, served.device).set(1)
        engine = getattr(served, "engine", None)
        if engine is not None:
            self.num_requests_running.set_function(lambda: engine.running)
            self.num_requests_waiting.set_function(lambda: engine.waiting)
            self.generation_throughput.set_function(engine.tokens_per_second)
            engine.add_listener(self)
        if gpu_memory is not None and gpu_memory() is not None:
            self.registry.register(_GpuMemoryCollector(gpu_memory))
        self.model_ready.set(1)

    def on_step(self, rows: int, tokens: int, seconds: float, decode: bool) -> None:
        """The engine's scheduler made one model call (prefill of new rows, or a decode step)."""
        self.iteration_tokens.observe(tokens)
        if decode:
            self.batch_size.observe(rows)

    def on_reject(self) -> None:
        self.rejected.inc()

    def generation_finished(self, route: str, started: float, finished: Any) -> None:
        """Token counters and latencies of one finished generation (``engine.Finished``)."""
        self.prompt_tokens.labels(route).inc(finished.prompt_tokens)
        self.generation_tokens.labels(route).inc(finished.completion_tokens)
        self.vllm_prompt_tokens.inc(finished.prompt_tokens)
        self.vllm_generation_tokens.inc(finished.completion_tokens)
        self.queue_time.observe(finished.queued_seconds)
        if finished.first_token_at is None:
            return
        first = max(0.0, finished.first_token_at - started)
        self.time_to_first_token.labels(route).observe(first)
        self.vllm_time_to_first_token.observe(first)
        last = finished.last_token_at if finished.last_token_at is not None else finished.first_token_at
        self.e2e_latency.observe(max(0.0, last - started))
        if finished.completion_tokens > 1:
            self.time_per_output_token.observe(max(0.0, last - finished.first_token_at) / (finished.completion_tokens - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _GpuMemoryCollector(Collector):
    """torch's allocator statistics per GPU, read at scrape time."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        allocated = GaugeMetricFamily(
            "kaitoctl_gpu_memory_allocated_bytes", "GPU memory held by tensors.", labels=["device"]
        )
        reserved = GaugeMetricFamily(
            "kaitoctl_gpu_memory_reserved_bytes", "GPU memory reserved by torch's caching allocator.", labels=["device"]
        )
        for device, used, held in self._read() or []:
            allocated.add_metric([device], used)
            reserved.add_metric([device], held)
        yield allocated
        yield reserved
