"""The router's merges (pure) and the shard-side federation core (in process, no sockets)."""

from __future__ import annotations

from typing import Any

import pytest

from federation import wire
from federation.config import SchedulerConfig
from federation.placement import Placement
from federation.wire import peek_header
from router import merge
from router.methods import LUIGI_METHODS, METHODS
from shard.changes import Snapshot
from shard.federated import FederatedCore
from shard.scheduler import SchedulerCore

OWNERS = {"A": "s0", "B": "s1", "C": "s2", "num_tasks": "s0"}


def owner(task_id: str) -> str:
    return OWNERS.get(task_id, "s0")


def ser(status: str, **kw: Any) -> dict[str, Any]:
    return {"status": status, "display_name": "x", **kw}


def test_every_luigi_method_has_a_route() -> None:
    assert len(LUIGI_METHODS) == 39
    assert LUIGI_METHODS <= set(METHODS) and "federation_health" in METHODS


def test_peek_header_reads_only_the_envelope_head() -> None:
    body = wire.encode_request(42, "get_task_status_message", {"task_id": "A"})
    assert peek_header(body) == (42, "get_task_status_message")
    assert peek_header(b"\xc1junk") is None
    assert peek_header(wire.pack([2, 1, "x", {}, {}])) is None
    assert peek_header(wire.pack([1, "id", "x", {}, {}])) is None


def test_task_list_prefers_the_owner_and_keeps_only_placeholder_mirrors() -> None:
    results = [
        ("s0", {"A": ser("DONE"), "B": ser("DONE")}),  # B here is a stale mirror
        ("s1", {"B": ser("PENDING")}),
        ("s2", {"X": ser("UNKNOWN")}),  # a mirror whose owner (s0) does not have it
    ]
    out = merge.merge_task_list(results, owner, limit=True, max_shown_tasks=100)
    assert out == {"A": ser("DONE"), "B": ser("PENDING"), "X": ser("UNKNOWN")}
    stale = merge.merge_task_list(
        [("s0", {"B": ser("DONE")}), ("s1", {})], owner, limit=True, max_shown_tasks=100
    )
    assert stale == {}  # the owner answered the DONE filter without B: the mirror's view is stale


def test_task_list_limits_like_luigi() -> None:
    results = [("s0", {"A": ser("DONE")}), ("s1", {"B": ser("DONE")}), ("s2", {"C": ser("DONE")})]
    assert merge.merge_task_list(results, owner, limit=True, max_shown_tasks=2) == {"num_tasks": 3}
    assert len(merge.merge_task_list(results, owner, limit=False, max_shown_tasks=2)) == 3
    over = [("s0", {"num_tasks": 5}), ("s1", {"B": ser("DONE")})]
    assert merge.merge_task_list(over, owner, limit=True, max_shown_tasks=4) == {"num_tasks": 6}
    upstream = [("s0", {"num_tasks": -1}), ("s1", {"B": ser("DONE")})]
    assert merge.merge_task_list(upstream, owner, limit=True, max_shown_tasks=4) == {"num_tasks": -1}
    # a task *named* num_tasks is a task, not a count
    named = [("s0", {"num_tasks": ser("DONE")})]
    assert merge.merge_task_list(named, owner, limit=True, max_shown_tasks=4) == {"num_tasks": ser("DONE")}


def test_worker_list_merges_one_row_per_worker_newest_first() -> None:
    w1_s0 = {
        "name": "w1",
        "last_active": 10,
        "started": 5,
        "state": "active",
        "first_task_display_name": "A_x",
        "first_task": "A_x",
        "num_unread_rpc_messages": 1,
        "workers": 2,
        "num_running": 1,
        "num_pending": 2,
        "num_uniques": 1,
        "running": {"A": ser("RUNNING")},
    }
    w1_s1 = {
        "name": "w1",
        "last_active": 12,
        "started": 4,
        "state": "disabled",
        "first_task_display_name": "A(x=1)",
        "first_task": "A_x",
        "num_unread_rpc_messages": 0,
        "workers": 2,
        "num_running": 1,
        "num_pending": 3,
        "num_uniques": 0,
        "running": {"B": ser("RUNNING")},
    }
    w2 = {
        "name": "w2",
        "last_active": 3,
        "started": 9,
        "state": "active",
        "num_unread_rpc_messages": 0,
        "num_running": 0,
        "num_pending": 0,
        "num_uniques": 0,
        "running": {},
    }
    rows = merge.merge_worker_list([("s0", [w1_s0, w2]), ("s1", [w1_s1])], owner)
    assert [r["name"] for r in rows] == ["w2", "w1"]
    w1 = rows[1]
    assert (w1["last_active"], w1["started"], w1["state"]) == (12, 4, "disabled")
    assert w1["first_task_display_name"] == "A(x=1)"
    assert (w1["num_pending"], w1["num_uniques"], w1["num_unread_rpc_messages"]) == (5, 1, 1)
    assert set(w1["running"]) == {"A", "B"} and w1["num_running"] == 2
    bare = merge.merge_worker_list([("s0", [{"name": "w", "started": 1}])], owner, include_running=False)
    assert bare == [{"name": "w", "started": 1}]


def test_resource_list_adds_usage_and_consumers() -> None:
    s0 = [{"name": "db", "num_total": 2, "num_used": 1, "num_consumer": 1, "running": {"A": ser("RUNNING")}}]
    s1 = [
        {"name": "db", "num_total": 2, "num_used": 1, "num_consumer": 1, "running": {"B": ser("RUNNING")}},
        {"name": "gpu", "num_total": 1, "num_used": 0, "num_consumer": 0, "running": {}},
    ]
    out = merge.merge_resource_list([("s0", s0), ("s1", s1)], owner)
    assert out == [
        {
            "name": "db",
            "num_total": 2,
            "num_used": 2,
            "num_consumer": 2,
            "running": {"A": ser("RUNNING"), "B": ser("RUNNING")},
        },
        {"name": "gpu", "num_total": 1, "num_used": 0, "num_consumer": 0, "running": {}},
    ]


def test_counts_ping_and_search() -> None:
    counts = merge.merge_counts(
        [
            {
                "n_pending_tasks": 2,
                "n_unique_pending": 1,
                "n_pending_last_scheduled": 1,
                "worker_state": "active",
                "running_tasks": [{"task_id": "A"}],
            },
            {
                "n_pending_tasks": 1,
                "n_unique_pending": 0,
                "running_tasks": [],
                "worker_state": "disabled",
                "task_id": None,
            },
        ]
    )
    assert counts == {
        "n_pending_tasks": 3,
        "n_unique_pending": 1,
        "n_pending_last_scheduled": 1,
        "worker_state": "disabled",
        "running_tasks": [{"task_id": "A"}],
    }
    assert merge.merge_ping([("s0", {"rpc_messages": [1]}), ("s1", {"rpc_messages": [2]})]) == {
        "rpc_messages": [1, 2]
    }
    search = merge.merge_task_search(
        [("s0", {"DONE": {"A": ser("DONE"), "B": ser("DONE")}}), ("s1", {"PENDING": {"B": ser("PENDING")}})],
        owner,
    )
    assert search == {"DONE": {"A": ser("DONE")}, "PENDING": {"B": ser("PENDING")}}


# -- FederatedCore ------------------------------------------------------------------------------------

PLACEMENT = Placement({"default": ["s0", "s1"]})


def ids_for(shard: str, n: int, family: str = "ns.T") -> list[str]:
    out: list[str] = []
    i = 0
    while len(out) < n:
        tid = f"{family}_{i}_0123456789"
        if PLACEMENT.owner(tid) == shard:
            out.append(tid)
        i += 1
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fed_core(shard: str = "s0", resources: dict[str, int] | None = None) -> tuple[FederatedCore, Clock]:
    clock = Clock()
    core = SchedulerCore(SchedulerConfig(resources=resources or {}), clock=clock)
    return FederatedCore(core, shard, PLACEMENT, clock=clock), clock


def test_mirror_follows_its_owner_and_unblocks_the_dependent() -> None:
    fed, _ = fed_core("s0")
    (parent,) = ids_for("s0", 1)
    (dep,) = ids_for("s1", 1)
    fed.add_task(task_id=parent, worker="w", deps=[dep], family="ns.T")
    fed.collect_changes()
    assert fed.fed_state()["mirrors"] == {dep: 0}
    # a new mirror is "fresh" in the feed (the router then pulls its owner's status); an owned task never is
    feed = {c[0]: c for c in fed.fed_changes(0)["changes"]}
    assert feed[dep][1] == "UNKNOWN" and feed[dep][4] is True and feed[parent][4] is False
    assert fed.get_work(worker="w")["task_id"] is None
    epoch = 5.0
    placeholder = fed.core._tasks[dep]
    # the first update of a new placeholder says when it was made: its task's first mention
    assert fed.fed_mirror_update([[dep, "RUNNING", epoch, 1]]) == {
        "missing": [],
        "created": {dep: [placeholder.time, placeholder.cseq]},
    }
    assert fed.core._tasks[dep].status == "RUNNING" and fed.core._tasks[dep].worker_running is None
    assert fed.fed_mirror_update([[dep, "DONE", epoch, 3]]) == {"missing": []}  # not new any more
    fed.fed_mirror_update([[dep, "PENDING", epoch, 2]])  # late: ignored
    assert fed.core._tasks[dep].status == "DONE"
    assert {c[0]: c[4] for c in fed.fed_changes(0)["changes"]}[dep] is False
    changes = fed.collect_changes()
    assert changes.tasks[dep]["fed"] == {"epoch": epoch, "seq": 3, "live": True, "gone": False}
    assert not [e for e in changes.events if e.task_id == dep]  # the owner's history, not ours
    reply = fed.get_work(worker="w")
    assert reply["task_id"] == parent
    # a mirror is counted nowhere in this shard's health, its owned task is
    health = fed.fed_health()
    assert health["counts"] == {"RUNNING": 1} and health["mirrors"] == 1
    # the version survives a restore; an unknown task is reported missing
    snap = Snapshot(
        tasks=list(changes.tasks.values()) + [r for r in fed.snapshot().tasks if r["task_id"] != dep]
    )
    fed.restore(snap)
    fed.fed_mirror_update([[dep, "FAILED", epoch, 2]])
    assert fed.core._tasks[dep].status == "DONE"
    unknown = ids_for("s1", 2)[1]
    assert fed.fed_mirror_update([[unknown, "DONE", epoch, 9]]) == {"missing": [unknown]}


def test_a_mirror_is_never_handed_out_even_to_an_assistant() -> None:
    fed, _ = fed_core("s0")
    (parent,) = ids_for("s0", 1)
    (dep,) = ids_for("s1", 1)
    fed.add_task(task_id=parent, worker="w", deps=[dep], family="ns.T")
    fed.fed_mirror_update([[dep, "PENDING", 1.0, 1]])
    assert fed.core._tasks[dep].status == "PENDING"
    assert fed.get_work(worker="helper", assistant=True)["task_id"] is None
    assert fed.get_work(worker="w")["task_id"] is None


def test_owned_tasks_are_never_overwritten_by_a_mirror_update() -> None:
    fed, _ = fed_core("s0")
    (mine,) = ids_for("s0", 1)
    fed.add_task(task_id=mine, worker="w", family="ns.T")
    fed.fed_mirror_update([[mine, "DONE", 9.0, 9]])
    assert fed.core._tasks[mine].status == "PENDING"


def test_change_feed_pages_and_reports_latest_state() -> None:
    fed, clock = fed_core("s0")
    mine = ids_for("s0", 5)
    for tid in mine:
        fed.add_task(task_id=tid, worker="w", family="ns.T")
    first = fed.fed_changes(0)
    assert sorted(c[0] for c in first["changes"]) == sorted(mine) and not first["more"]
    assert [c[1] for c in first["changes"]] == ["PENDING"] * 5
    pos = first["seq"]
    clock.now += 1
    fed.add_task(task_id=mine[0], worker="w", status="DONE")
    fed.add_task(task_id=mine[1], worker="w", priority=9)
    page = fed.fed_changes(pos, limit=1)
    assert page["more"] and [c[:3] for c in page["changes"]] == [[mine[0], "DONE", 0]]
    rest = fed.fed_changes(page["seq"])
    assert [c[:3] for c in rest["changes"]] == [[mine[1], "PENDING", 9]] and not rest["more"]
    assert fed.fed_status([mine[0], "ns.T_x_0123456789"])["tasks"] == {
        mine[0]: ["DONE", 0, page["seq"]],
        "ns.T_x_0123456789": [None, None, rest["seq"]],  # absent as of the feed's position
    }
    # a restore starts a new epoch: the router resynchronises
    epoch = fed.fed_state()["epoch"]
    fed.restore(fed.snapshot())
    assert fed.fed_state()["epoch"] > epoch and fed.fed_state()["seq"] == 0


def test_changes_absorbed_mid_batch_still_reach_the_store_once() -> None:
    fed, _ = fed_core("s0")
    a, b = ids_for("s0", 2)
    fed.add_task(task_id=a, worker="w", family="ns.T")
    fed.fed_changes(0)  # mid-batch: takes the core's changes into the feed
    fed.add_task(task_id=b, worker="w", family="ns.T")
    changes = fed.collect_changes()
    assert set(changes.tasks) == {a, b} and "w" in changes.workers
    assert [e.task_id for e in changes.events] == [a, b]
    assert fed.collect_changes().is_empty()


def test_external_usage_counts_against_capacity() -> None:
    fed, _ = fed_core("s0", resources={"db": 2})
    a, b = ids_for("s0", 2)
    fed.add_task(task_id=a, worker="w", family="ns.T", resources={"db": 1})
    fed.add_task(task_id=b, worker="w", family="ns.T", resources={"db": 1})
    assert fed.fed_state()["resource_pending"] is True
    blocked = fed.fed_get_work(external_used_resources={"db": 2}, worker="w")
    assert blocked["reply"]["task_id"] is None and blocked["resources_running"] == {}
    got = fed.fed_get_work(external_used_resources={"db": 1}, worker="w")
    assert got["reply"]["task_id"] in (a, b) and got["resources_running"] == {"db": 1}
    assert fed.fed_get_work(external_used_resources={"db": 1}, worker="w")["reply"]["task_id"] is None
    fed.add_task(task_id=got["reply"]["task_id"], worker="w", status="DONE", resources={"db": 1})
    last = fed.fed_get_work(external_used_resources={}, worker="w")
    assert last["reply"]["task_id"] is not None
    fed.add_task(task_id=last["reply"]["task_id"], worker="w", status="DONE", resources={"db": 1})
    assert fed.fed_changes(0)["resource_pending"] is False
    with pytest.raises(TypeError):
        fed.fed_get_work(external_used_resources={"db": "two"}, worker="w")


def test_priority_rises_into_the_owners_task_and_its_deps() -> None:
    fed, _ = fed_core("s0")
    a, b = ids_for("s0", 2)
    fed.add_task(task_id=a, worker="w", family="ns.T", deps=[b])
    fed.add_task(task_id=b, worker="w", family="ns.T")
    assert fed.fed_raise_priority({a: 40}) == {"mirrors": False}  # no other shard to tell
    assert fed.core._tasks[a].priority == 40 and fed.core._tasks[b].priority == 40
    with pytest.raises(TypeError):
        fed.fed_raise_priority({a: "high"})


def test_a_priority_rise_that_reaches_a_mirror_says_so() -> None:
    """The owner passes a rise on to a dependency another shard owns (its mirror here): the
    answer says so, and the router pulls this shard's feed at once to tell that owner."""
    fed, _ = fed_core("s0")
    (a,) = ids_for("s0", 1)
    (remote,) = ids_for("s1", 1)
    fed.add_task(task_id=a, worker="w", family="ns.T", deps=[remote])
    assert fed.fed_raise_priority({a: 40}) == {"mirrors": True}
    assert fed.core._tasks[remote].priority == 40
    assert fed.fed_raise_priority({a: 30}) == {"mirrors": False}  # nothing rose
