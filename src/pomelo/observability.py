"""Prometheus metrics of the process, in a registry per platform instance (tests build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pomelo.core.events import PublishedEvent


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "pomelo_http_requests_total",
            "HTTP requests handled",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "pomelo_http_request_duration_seconds",
            "HTTP request handling time",
            ["method", "route"],
            registry=self.registry,
        )
        self.events = Counter(
            "pomelo_events_published_total",
            "Domain events published on the bus",
            ["kind"],
            registry=self.registry,
        )
        self.stream_connections = Gauge(
            "pomelo_stream_connections",
            "Open WebSocket stream connections",
            registry=self.registry,
        )

    async def on_event(self, published: PublishedEvent) -> None:
        self.events.labels(published.event.kind).inc()
