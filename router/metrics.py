"""Prometheus metrics of the router, on a registry of its own.

Served at ``/metrics`` by the HTTP gateway (where luigid serves its own), or on a separate
``--metrics HOST:PORT`` listener when the gateway is off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class _LinkCollector(Collector):
    """Shard up/down and latency, read from the router's links at scrape time (no bookkeeping)."""

    def __init__(self, router: Any) -> None:
        self.router = router

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("fed_router_shard_up", "1 when the router reaches the shard", labels=["shard"])
        ms = GaugeMetricFamily(
            "fed_router_shard_probe_ms", "Last probe round trip to the shard", labels=["shard"]
        )
        for sid, link in list(self.router.links.items()):
            up.add_metric([sid], 1.0 if link.up else 0.0)
            if link.latency_ms is not None:
                ms.add_metric([sid], float(link.latency_ms))
        inflight = GaugeMetricFamily("fed_router_inflight", "Requests waiting for a shard's answer")
        inflight.add_metric([], float(self.router.pool.in_flight()))
        yield up
        yield ms
        yield inflight


class RouterMetrics:
    def __init__(self, methods: set[str]) -> None:
        self.registry = CollectorRegistry()
        self.methods = methods
        self.requests = Counter(
            "fed_router_requests",
            "Requests taken at the front, by method",
            ["method"],
            registry=self.registry,
        )
        self.errors = Counter(
            "fed_router_errors",
            "Error replies the router itself sent, by code",
            ["code"],
            registry=self.registry,
        )
        self.shard_seconds = Histogram(
            "fed_router_shard_seconds",
            "Round trip of one request to a shard",
            ["shard"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.get_work_paths = Counter(
            "fed_router_get_work_paths",
            "get_work over several shards by how it was decided: direct (from the shards' "
            "summaries), offers, declined (a direct grant refused; the offers decided)",
            ["path"],
            registry=self.registry,
        )
        self._paths = {p: self.get_work_paths.labels(p) for p in ("direct", "offers", "declined")}
        # labels() costs a lock and a dict lookup per call: on the forward path keep the children
        self._requests: dict[str, Any] = {}
        self._shard: dict[str, Any] = {}

    def request(self, method: str) -> None:
        child = self._requests.get(method)
        if child is None:
            # method names come from the wire: unknown ones must not become label values
            child = self.requests.labels(method if method in self.methods else "(other)")
            if method in self.methods:
                self._requests[method] = child
        child.inc()

    def get_work_path(self, path: str) -> None:
        self._paths[path].inc()

    def shard_round_trip(self, shard: str, seconds: float) -> None:
        child = self._shard.get(shard)
        if child is None:
            child = self._shard[shard] = self.shard_seconds.labels(shard)
        child.observe(seconds)

    def watch(self, router: Any) -> None:
        self.registry.register(_LinkCollector(router))
