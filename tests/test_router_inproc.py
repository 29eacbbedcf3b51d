"""The router's logic in the test process: RouterCore on the in-process shard pool.

Real shards (``ShardServer`` with ``bind=None`` on SQLite stores, federated cores, group
commit) and the real router logic; only the sockets are replaced by
:class:`router.links.InProcShardPool` and time by a fake clock, so faults and their order are
exact and each test runs in milliseconds without sleeps.  The multi-process tests
(``test_router.py``, ``test_cross_shard.py``) remain the end-to-end layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.errors import FederationError, TransportError
from router.links import LinkState
from tests.inproc_federation import InProcFederation

IDS = ["s0", "s1", "s2"]
W = "worker-1"


class Fed(InProcFederation):
    """Three shards and the router; the worker's calls as a Luigi worker makes them."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, IDS)

    def add(self, task_id: str, *, deps: list[str] | None = None, worker: str = W, **kw: Any) -> Any:
        return self.call(
            "add_task", task_id=task_id, worker=worker, family=task_id.split(".")[1], deps=deps or [], **kw
        )

    def get_work(self, worker: str = W) -> str | None:
        return self.call("get_work", worker=worker, host="h")["task_id"]


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Fed]:
    f = Fed(tmp_path)
    try:
        yield f
    finally:
        f.close()


def test_every_shard_is_synchronised_at_first_contact(fed: Fed) -> None:
    assert {sid: link.state for sid, link in fed.router.core.links.items()} == dict.fromkeys(
        IDS, LinkState.READY
    )
    assert fed.router.pool.in_flight() == 0


def test_cross_shard_dependency_is_relayed_before_the_done_report_is_answered(fed: Fed) -> None:
    a, b = fed.task_on("s0", "a"), fed.task_on("s1", "b")
    fed.add(b, deps=[a])
    fed.add(a)
    assert fed.router.core.relay.mirrors_of(a) == {"s1"}
    assert fed.get_work() == a
    assert fed.get_work() is None  # b waits for its remote dependency
    fed.add(a, status="DONE")
    # no clock advance, no periodic pull: the DONE report was answered after the relay
    assert a in fed.servers["s1"].core.task_list("DONE", "")  # the mirror on s1
    assert fed.get_work() == b
    tasks = fed.call("task_list", status="", upstream_status="")
    assert tasks[a]["status"] == "DONE" and tasks[b]["status"] == "RUNNING"


def test_shard_restart_is_resynchronised_from_the_owner(fed: Fed) -> None:
    a, b = fed.task_on("s0", "a"), fed.task_on("s1", "b")
    fed.add(b, deps=[a])
    fed.add(a)
    assert fed.get_work() == a
    # the mirroring shard dies; the owner's DONE cannot reach it
    fed.router.pool.kill("s1")
    fed.add(a, status="DONE")
    assert fed.router.core.links["s1"].state is LinkState.DOWN
    with pytest.raises(TransportError, match="s1"):
        fed.get_work()  # the worker's other shard is down: "no work" would make it quit
    # it comes back from its store with a new epoch; the probe finds it, the relay resyncs it
    fed.restart("s1")
    fed.clock.advance(1.0)
    fed.router.settle()
    assert fed.router.core.links["s1"].state is LinkState.READY
    assert fed.get_work() == b


def test_owner_restart_new_epoch_is_noticed_in_the_feed(fed: Fed) -> None:
    a, b = fed.task_on("s0", "a"), fed.task_on("s1", "b")
    fed.add(b, deps=[a])
    fed.add(a)
    assert fed.get_work() == a
    fed.restart("s0")  # A stays RUNNING (durable); a new epoch
    fed.clock.advance(1.0)
    fed.router.settle()
    assert fed.router.core.links["s0"].state is LinkState.READY
    assert fed.router.core.relay.feeds["s0"].epoch == fed.servers["s0"].core.fed_state()["epoch"]
    fed.add(a, status="DONE")
    assert fed.get_work() == b


def test_shard_down_mid_call_fails_at_the_deadline_and_others_keep_serving(fed: Fed) -> None:
    tasks = {sid: fed.task_on(sid, "m") for sid in IDS}
    for task_id in tasks.values():
        fed.add(task_id)
    route = fed.router.send("task_list", status="PENDING", upstream_status="")
    fed.router.pool.kill("s2")  # it had the request, it never answers
    fed.router.settle()
    with pytest.raises(LookupError):
        fed.router.answer(route)  # still waiting for s2
    fed.clock.advance(fed.config.router.timeout + 0.01)
    fed.router.settle()
    # a read answers with the shards that are up
    assert set(fed.router.answer(route)) == {tasks["s0"], tasks["s1"]}
    assert fed.router.core.links["s2"].state is LinkState.DOWN
    # a call for s2's task fails at once with "unavailable" (Luigi's client retries those)
    with pytest.raises(FederationError) as err:
        fed.add(tasks["s2"], status="DONE")
    assert err.value.code == "unavailable"
    # s0 and s1 are untouched and keep serving
    assert fed.add(fed.task_on("s1", "more")) is None
    assert fed.get_work() in (tasks["s0"], tasks["s1"])


def test_get_work_hands_out_the_highest_ranked_task_of_all_shards(fed: Fed) -> None:
    """Luigi's rank across shards: priority first, then the older task (not the first shard asked)."""
    plan = [("s0", 1), ("s1", 5), ("s2", 3), ("s0", 4), ("s2", 5)]
    ids = {}
    for k, (sid, priority) in enumerate(plan):
        ids[fed.task_on(sid, f"p{k}")] = priority
        fed.add(next(reversed(ids)), priority=priority)
    granted = [fed.get_work() for _ in plan]
    assert [ids[t] for t in granted if t] == [5, 5, 4, 3, 1]
    # the two priority-5 tasks: the older one (added first, on s1) first
    assert fed.placement.owner(granted[0]) == "s1" and fed.placement.owner(granted[1]) == "s2"
    assert fed.get_work() is None


def test_an_offer_not_granted_stays_free(fed: Fed) -> None:
    """Every shard offers; only the best is handed out, the others stay PENDING for the next call."""
    low, high = fed.task_on("s0", "low"), fed.task_on("s1", "high")
    fed.add(low, priority=1)
    fed.add(high, priority=9)
    assert fed.get_work() == high
    pending = fed.call("task_list", status="PENDING", upstream_status="")
    assert set(pending) == {low}
    assert fed.get_work(worker="worker-2") is None  # worker-2 is no stakeholder of low
    assert fed.get_work() == low


def test_one_get_work_never_grants_two_tasks(fed: Fed) -> None:
    for sid in IDS:
        fed.add(fed.task_on(sid, "g"))
    routes = [fed.router.send("get_work", worker=W, host="h") for _ in range(3)]
    fed.router.settle()
    granted = [fed.router.answer(r)["task_id"] for r in routes]
    assert len(set(granted)) == 3 and None not in granted
    running = fed.call("task_list", status="RUNNING", upstream_status="")
    assert set(running) == set(granted)


def test_bad_input_gets_an_error_and_changes_nothing(fed: Fed) -> None:
    a = fed.task_on("s0", "bad")
    fed.add(a)
    before = fed.call("task_list", status="", upstream_status="")
    with pytest.raises(FederationError) as err:
        fed.call("no_such_method", task_id=a)
    assert err.value.code == "unknown_method"
    with pytest.raises(FederationError) as err:
        fed.call("add_task", task_id=123)
    assert err.value.code == "bad_arguments"
    with pytest.raises(FederationError):
        fed.call("get_work")  # worker is required
    # malformed frames are answered, not crashed on
    fed.router.core.handle([b"client-x", b"junk"])
    fed.router.core.handle([b"client-y", b"", b"\xc1\xc1 not msgpack"])
    fed.router.settle()
    for route in (b"client-x", b"client-y"):
        with pytest.raises(FederationError):
            fed.router.answer(route)
    assert fed.call("task_list", status="", upstream_status="") == before


def test_num_tasks_over_the_limit_counts_tasks_not_mirrors(fed: Fed) -> None:
    """Luigi's ``{"num_tasks": n}`` above max_shown_tasks: each task once, however many shards mirror it."""
    roots = [fed.task_on(sid, "root") for sid in IDS]
    for k in range(12):
        # every task depends on the roots of the two other shards: two mirrors per task's shard
        task_id = fed.task_on(IDS[k % 3], f"c{k}")
        fed.add(task_id, deps=[r for r in roots if fed.placement.owner(r) != fed.placement.owner(task_id)])
    fed.add(fed.task_on("s0", "orphan-parent"), deps=["nowhere.Missing_1"])  # a placeholder nobody owns
    everything = fed.call("task_list", status="", upstream_status="")
    assert set(everything) >= set(roots) and "nowhere.Missing_1" in everything
    n = len(everything)  # 12 + 3 roots + parent + the placeholder
    assert n == 17
    assert fed.call("task_list", status="", upstream_status="", max_shown_tasks=5) == {"num_tasks": n}
    pending = fed.call("task_list", status="PENDING", upstream_status="")
    assert fed.call("task_list", status="PENDING", upstream_status="", max_shown_tasks=3) == {
        "num_tasks": len(pending)
    }


def test_resources_freed_on_one_shard_are_free_for_the_next_get_work_on_another(fed: Fed) -> None:
    """[resources] are federation-wide: a DONE report is answered once the owner's usage is known."""
    fed.call("update_resource", resource="db", amount=1)
    a, b = fed.task_on("s0", "res-a"), fed.task_on("s1", "res-b")
    fed.add(a, worker="X", resources={"db": 1})
    fed.add(b, worker="Y", resources={"db": 1})
    assert fed.get_work("X") == a
    assert fed.get_work("Y") is None  # db is held on s0
    fed.add(a, worker="X", status="DONE")
    # no clock advance, no periodic pull: the report's answer waited for s0's usage
    assert fed.get_work("Y") == b


def test_health_of_a_down_shard_keeps_its_configured_store(fed: Fed) -> None:
    fed.router.pool.kill("s2")
    by_id = {s["shard_id"]: s for s in fed.call("federation_health")["shards"]}
    down = by_id["s2"]
    assert down["up"] is False and down["error"]
    # what its config says, as its shard_info would (an SQLite path), never a password
    assert down["backend"] == "sqlite" and down["location"].endswith("s2.db")
    assert by_id["s0"]["up"] is True and by_id["s0"]["location"] == fed.servers["s0"].store.location


@pytest.mark.parametrize("shards", ["current", "older"])
def test_what_a_feed_page_has_for_an_owner_reaches_it_in_one_fed_relay_or_one_by_one(
    fed: Fed, shards: str
) -> None:
    """A remote dependency's first mention, its dependent's priority and its stakeholder reach
    its owner in one ``fed_relay``; an older shard without it gets the single methods."""
    if shards == "older":
        for server in fed.servers.values():
            del server._methods["fed_relay"]
    a, b = fed.task_on("s0", "a"), fed.task_on("s1", "b")
    fed.add(b, deps=[a], priority=5)  # a placeholder of a on s1: its first mention
    fed.router.clock.advance(1.0)
    fed.router.settle()
    placeholder = fed.servers["s1"].core.core.get_task(a)
    assert placeholder is not None
    fed.add(a, worker="other")  # a made by its owner later: older by its first mention
    fed.router.clock.advance(1.0)
    fed.router.settle()
    tasks = fed.call("task_list", status="PENDING", upstream_status="")
    assert tasks[a]["start_time"] == placeholder.time  # the first mention, not the add_task
    assert tasks[a]["priority"] == 5  # inherited from b on s1
    owned = fed.servers["s0"].core.core.get_task(a)
    assert owned is not None and W in owned.stakeholders  # b's worker is a's stakeholder too
    assert fed.get_work(worker="other") == a
    fed.add(a, worker="other", status="DONE")
    assert fed.get_work() == b

    def handled(method: str) -> float:
        labels = {"shard": "s0", "method": method, "outcome": "ok"}
        return fed.servers["s0"].metrics.registry.get_sample_value("fed_shard_requests_total", labels) or 0.0

    if shards == "current":
        assert handled("fed_relay") >= 1
        assert handled("fed_add_stakeholders") == 0  # (a priority asked again after a's add_task
        # goes alone: ``Relay.reraise``)
    else:
        assert handled("fed_add_stakeholders") >= 1 and handled("fed_raise_priority") >= 1
