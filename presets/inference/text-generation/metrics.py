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
        if gpu_memory is not None and gpu_memory() is not None:
            self.registry.register(_GpuMemoryCollector(gpu_memory))
        self.model_ready.set(1)

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
