"""The router's per-message metrics, counted in plain ints and exposed as Prometheus families."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import LATENCY_BUCKETS, RouterMetrics


def _samples(metrics: RouterMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_round_trips_fall_in_prometheus_le_buckets_with_count_and_sum() -> None:
    m = RouterMetrics({"add_task"})
    for seconds in (0.0005, 0.0007, 0.001, 0.3, 9.0):  # on a bound, between, on, between, over all
        m.shard_round_trip("s0", seconds)
    m.shard_round_trip("s1", 0.0001)
    got = _samples(m)

    def bucket(shard: str, le: str) -> float:
        return got[("fed_router_shard_seconds_bucket", (("le", le), ("shard", shard)))]

    assert bucket("s0", "0.0005") == 1  # le is inclusive, as Prometheus's
    assert bucket("s0", "0.001") == 3
    assert bucket("s0", "0.2") == 3
    assert bucket("s0", "0.5") == 4
    assert bucket("s0", "5.0") == 4
    assert bucket("s0", "+Inf") == 5
    assert bucket("s1", "0.0005") == 1
    assert got[("fed_router_shard_seconds_count", (("shard", "s0"),))] == 5
    assert abs(got[("fed_router_shard_seconds_sum", (("shard", "s0"),))] - 9.3022) < 1e-9
    buckets = [name for name, _labels in got if name == "fed_router_shard_seconds_bucket"]
    assert len(buckets) == 2 * (len(LATENCY_BUCKETS) + 1)


def test_requests_by_method_and_unknown_names_never_become_labels() -> None:
    m = RouterMetrics({"add_task", "get_work"})
    for method in ("add_task", "add_task", "get_work", "no_such_method", "\x00junk"):
        m.request(method)
    got = _samples(m)
    assert got[("fed_router_requests_total", (("method", "add_task"),))] == 2
    assert got[("fed_router_requests_total", (("method", "get_work"),))] == 1
    assert got[("fed_router_requests_total", (("method", "(other)"),))] == 2
    assert not any(dict(labels).get("method") == "no_such_method" for _, labels in got)
