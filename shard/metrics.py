"""Prometheus metrics of one shard, on a registry of its own (several shards may share a process in tests)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class ShardMetrics:
    def __init__(self, shard_id: str, methods: set[str]) -> None:
        self.registry = CollectorRegistry()
        self.methods = methods
        self.requests = Counter(
            "fed_shard_requests",
            "Requests handled, by method and outcome (ok or error code)",
            ["shard", "method", "outcome"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "fed_shard_batch_size",
            "Requests per group commit",
            ["shard"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "fed_shard_commit_seconds",
            "Store commit time per batch",
            ["shard"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "fed_shard_batch_seconds",
            "Time from first request taken to last reply sent",
            ["shard"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.up_since = Gauge(
            "fed_shard_start_time_seconds", "Unix time the shard started", ["shard"], registry=self.registry
        )
        self.shard_id = shard_id
        self._children: dict[tuple[str, str], Any] = {}
        #: each histogram's child of this shard, made at its first observation (as
        #: ``labels(shard_id)`` at each one would): labels() per batch costs a lock and lookups
        self._histograms: dict[Any, Any] = {}

    def request(self, method: str, outcome: str) -> None:
        key = (method, outcome)
        child = self._children.get(key)
        if child is None:
            # unknown method names come from the wire: never let them become label values
            child = self.requests.labels(
                self.shard_id, method if method in self.methods else "(other)", outcome
            )
            if method in self.methods:
                self._children[key] = child  # labels() per request costs a lock and lookups
        child.inc()

    def observe(self, histogram: Any, value: float) -> None:
        """``histogram.labels(shard_id).observe(value)`` for this shard's histograms."""
        child = self._histograms.get(histogram)
        if child is None:
            child = self._histograms[histogram] = histogram.labels(self.shard_id)
        child.observe(value)

    def serve(self, address: str) -> tuple[str, int]:
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        bound = server.server_address[0]  # a str for an AF_INET/AF_INET6 server
        return (bound.decode() if isinstance(bound, (bytes, bytearray)) else bound), server.server_address[1]
