"""Placement: namespace parsing, pinned groups, ketama balance and minimal movement."""

from __future__ import annotations

import random
from collections import Counter

import luigi.task
import pytest

from federation.config import FederationConfig
from federation.errors import ConfigError
from federation.placement import Placement, namespace_of

FAMILIES = [
    "daily.Extract",
    "daily.Transform",
    "daily.Enrich",
    "daily.Load",
    "Report",
    "x.y.Agg",
    "finance.ledger.Post",
    "ops.Check",
]
TOPICS = ["orders", "clicks", "payments", "inventory", "empty"]


def luigi_ids(n: int, seed: int = 7) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        family = FAMILIES[i % len(FAMILIES)]
        params = {
            "date": f"2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
            "topic": rnd.choice(TOPICS),
            "n": str(i),
        }
        out.append(luigi.task.task_id_str(family, params))
    return out


def test_namespace_is_everything_before_the_last_dot() -> None:
    assert (
        namespace_of(luigi.task.task_id_str("daily.Load", {"date": "2026-11-20", "topic": "a.b"})) == "daily"
    )
    assert namespace_of(luigi.task.task_id_str("my.ns.T", {"x": "h.llo"})) == "my.ns"
    assert namespace_of(luigi.task.task_id_str("Foo", {})) == ""
    assert namespace_of("A") == ""


def test_balance_over_four_shards() -> None:
    p = Placement({"default": ["s0", "s1", "s2", "s3"]})
    counts = Counter(p.owner(t) for t in luigi_ids(100_000))
    assert set(counts) == {"s0", "s1", "s2", "s3"}
    mean = 100_000 / 4
    assert max(counts.values()) / mean <= 1.25


def test_adding_a_fifth_shard_moves_about_a_fifth_all_to_it() -> None:
    ids = luigi_ids(100_000)
    four = Placement({"default": ["s0", "s1", "s2", "s3"]})
    five = Placement({"default": ["s0", "s1", "s2", "s3", "s4"]})
    moved = [(four.owner(t), five.owner(t)) for t in ids if four.owner(t) != five.owner(t)]
    assert all(new == "s4" for _, new in moved)
    assert 0.15 <= len(moved) / len(ids) <= 0.25


def test_pinned_namespaces_land_only_on_their_group() -> None:
    p = Placement(
        {"default": ["s0", "s1", "s2"], "finance": ["fin-0", "fin-1"]}, {"finance": "finance"}, "default"
    )
    owners_fin = Counter(
        p.owner(luigi.task.task_id_str(f, {"d": str(i)}))
        for i in range(2000)
        for f in ("finance.Post", "finance.ledger.Close")
    )
    assert set(owners_fin) == {"fin-0", "fin-1"}
    # "financeX" is not below "finance"; the empty namespace and others go to the default group
    owners_other = Counter(
        p.owner(luigi.task.task_id_str(f, {"d": str(i)}))
        for i in range(2000)
        for f in ("financeX.Post", "Plain", "daily.Load")
    )
    assert set(owners_other) == {"s0", "s1", "s2"}


def test_longest_pinned_prefix_wins() -> None:
    p = Placement(
        {"default": ["s0"], "fin": ["f0"], "ledger": ["l0"]},
        {"finance": "fin", "finance.ledger": "ledger"},
        "default",
    )
    assert p.group_of_namespace("finance") == "fin"
    assert p.group_of_namespace("finance.ledger") == "ledger"
    assert p.group_of_namespace("finance.ledger.eod") == "ledger"
    assert p.group_of_namespace("finance.payroll") == "fin"
    assert p.owner("finance.ledger.eod.Close_x_0123456789") == "l0"


def test_same_config_same_owner_and_cached() -> None:
    cfg = FederationConfig.local(3)
    a, b = Placement.from_config(cfg), Placement.from_config(cfg)
    ids = luigi_ids(2000)
    assert [a.owner(t) for t in ids] == [b.owner(t) for t in ids]
    assert a.owner.cache_info().hits == 0
    a.owner(ids[0])
    assert a.owner.cache_info().hits == 1


def test_bad_placement_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        Placement({"default": [], "x": ["a"]}, {"n": "nope"}, "missing")
    msg = str(e.value)
    assert "'default' has no shards" in msg and "'missing'" in msg and "'nope'" in msg
