"""Prometheus metrics of the router, on a registry of its own.

Served at ``/metrics`` by the HTTP gateway (where luigid serves its own), or on a separate
``--metrics HOST:PORT`` listener when the gateway is off.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


class _HotCollector(Collector):
    """The two metrics counted on every message (requests by method, each shard's round trips)
    kept in plain ints and lists and turned into Prometheus families at scrape time.

    ``prometheus_client``'s ``Counter.inc`` and ``Histogram.observe`` take a lock and walk the
    buckets in Python on each call: on the router's loop, which counts every request and every
    shard reply, a cProfile of the 20k-task load test put them at about 4 % of its CPU.  The loop is the only
    writer; a scrape (the gateway's thread) copies each list in one step under the GIL, so it
    may see a round trip counted in its bucket and not yet in the sum, never a bucket behind."""

    def __init__(self) -> None:
        #: method -> requests taken at the front
        self.requests: dict[str, int] = {}
        #: shard -> [count per bucket (non-cumulative, the last one +Inf)..., sum]
        self.round_trips: dict[str, list[float]] = {}

    def collect(self) -> Iterator[Any]:
        requests = CounterMetricFamily(
            "fed_router_requests", "Requests taken at the front, by method", labels=["method"]
        )
        for method, n in sorted(self.requests.copy().items()):
            requests.add_metric([method], float(n))
        yield requests
        hist = HistogramMetricFamily(
            "fed_router_shard_seconds", "Round trip of one request to a shard", labels=["shard"]
        )
        for shard, row in sorted(self.round_trips.copy().items()):
            counts = list(row)
            total = counts.pop()
            buckets: list[tuple[str, float]] = []
            running = 0.0
            for bound, in_bucket in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
                running += in_bucket
                buckets.append((floatToGoString(bound), running))
            hist.add_metric([shard], buckets, total)
        yield hist


class RouterMetrics:
    def __init__(self, methods: set[str]) -> None:
        self.registry = CollectorRegistry()
        self.methods = methods
        self.errors = Counter(
            "fed_router_errors",
            "Error replies the router itself sent, by code",
            ["code"],
            registry=self.registry,
        )
        self.get_work_paths = Counter(
            "fed_router_get_work_paths",
            "get_work over several shards by how it was decided: direct (from the shards' "
            "summaries), offers, declined (a direct grant refused; the offers decided); waited: "
            "it first waited for the router's own calls in flight that a client was told of",
            ["path"],
            registry=self.registry,
        )
        self._paths = {p: self.get_work_paths.labels(p) for p in ("direct", "offers", "declined", "waited")}
        self._hot = _HotCollector()
        self.registry.register(self._hot)
        self._requests = self._hot.requests
        self._round_trips = self._hot.round_trips

    def request(self, method: str) -> None:
        # method names come from the wire: unknown ones must not become label values
        if method not in self.methods:
            method = "(other)"
        requests = self._requests
        requests[method] = requests.get(method, 0) + 1

    def get_work_path(self, path: str) -> None:
        self._paths[path].inc()

    def shard_round_trip(self, shard: str, seconds: float) -> None:
        row = self._round_trips.get(shard)
        if row is None:
            row = self._round_trips[shard] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        row[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        row[-1] += seconds

    def watch(self, router: Any) -> None:
        self.registry.register(_LinkCollector(router))
