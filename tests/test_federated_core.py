"""``shard.federated.FederatedCore`` in process: its contract with the core, and its change feed."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import shard.federated
from federation.config import SchedulerConfig
from federation.placement import Placement
from shard.federated import FEED_RETENTION, FederatedCore
from shard.scheduler import SchedulerCore

PLACEMENT = Placement({"default": ["s0", "s1"]})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ids_for(shard: str, n: int, family: str = "ns.T", start: int = 0) -> list[str]:
    """``n`` Luigi-like task ids that ``PLACEMENT`` gives to ``shard``."""
    out: list[str] = []
    i = start
    while len(out) < n:
        tid = f"{family}_{i}_0123456789"
        if PLACEMENT.owner(tid) == shard:
            out.append(tid)
        i += 1
    return out


def fed_core(shard: str = "s0", **config: Any) -> tuple[FederatedCore, Clock]:
    clock = Clock()
    core = SchedulerCore(SchedulerConfig(**config), clock=clock)
    return FederatedCore(core, shard, PLACEMENT, clock=clock), clock


# -- the contract with the core ---------------------------------------------------------------------


def test_federated_uses_only_the_public_surface_of_the_core() -> None:
    """No ``<anything>.core._x`` or ``core._x`` in shard/federated.py: only the core's public hooks."""
    tree = ast.parse(Path(shard.federated.__file__).read_text())
    private = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", None)
            if name == "core":
                private.append(f"line {node.lineno}: core.{node.attr}")
    assert private == []


def test_private_names_are_not_forwarded_to_the_core() -> None:
    fed, _ = fed_core()
    fed.add_task(task_id=ids_for("s0", 1)[0], worker="w")  # Luigi's methods are forwarded
    assert fed.count_pending(worker="w")["n_pending_tasks"] == 1
    with pytest.raises(AttributeError):
        fed._tasks  # noqa: B018


# -- the change feed under churn ---------------------------------------------------------------------


def churn(fed: FederatedCore, clock: Clock, rounds: int, per_round: int, start: int = 0) -> list[str]:
    """Add ``per_round`` tasks (each with a remote dependency, so mirrors churn too), run them to
    DONE, let the worker go and prune until everything is removed; ``rounds`` times.  Every step is
    followed by ``collect_changes`` as the server does after each batch.  Returns the ids deleted."""
    deleted: list[str] = []
    n = start
    for _ in range(rounds):
        mine = ids_for("s0", per_round, start=n)
        remote = ids_for("s1", per_round, family="ns.R", start=n)
        n += 10 * per_round
        for tid, dep in zip(mine, remote, strict=True):
            fed.add_task(task_id=tid, worker="w", deps=[dep], family="ns.T")
        fed.collect_changes()
        fed.fed_mirror_update([[dep, "DONE", 1.0, i + 1] for i, dep in enumerate(remote)])
        fed.collect_changes()
        for _ in mine:
            got = fed.get_work(worker="w")["task_id"]
            assert got is not None
            fed.add_task(task_id=got, worker="w", status="DONE")
            fed.collect_changes()
        clock.now += 20  # the worker goes away, then its tasks are removed
        # so do the dependencies on their owner, whose stakeholder the worker was too: a mirror
        # lives while its owner has the task
        fed.fed_mirror_update([[dep, None, 1.0, per_round + i + 1] for i, dep in enumerate(remote)])
        fed.collect_changes()
        fed.prune()
        fed.collect_changes()
        clock.now += 20
        fed.prune()
        fed.collect_changes()
        assert fed.fed_health()["counts"] == {} and fed.fed_state()["mirrors"] == {}
        deleted += mine + remote
    return deleted


FAST = {"worker_disconnect_delay": 10.0, "remove_delay": 10.0}


def test_change_feed_stays_bounded_under_churn() -> None:
    fed, clock = fed_core("s0", **FAST)
    sizes = []
    for i in range(8):
        churn(fed, clock, rounds=10, per_round=50, start=i * 10_000)
        sizes.append(len(fed._feed))
    # 8,000 tasks and mirrors came and went, 100 a round, each round taking 40 s of the fake
    # clock: the feed keeps the deletions of the last FEED_RETENTION seconds only
    window = (int(FEED_RETENTION // 40) + 1) * 100
    assert max(sizes) <= window < 8000 and sizes[-1] == sizes[1]
    assert len(fed._deletions) == len(fed._feed)  # nothing is live
    assert fed.fed_health()["counts"] == {} and fed._ns == {}


class FeedReader:
    """What the router does with one shard's feed: a cursor, pages, and resync from fed_state."""

    def __init__(self, fed: FederatedCore) -> None:
        self.fed = fed
        state = fed.fed_state()
        self.epoch, self.cursor = state["epoch"], state["seq"]
        self.deleted: set[str] = set()
        self.resyncs = 0

    def pull(self, limit: int = 20_000) -> None:
        while True:
            page = self.fed.fed_changes(self.cursor, limit)
            if page["epoch"] != self.epoch:
                assert page.get("resync") is True and page["changes"] == []
                self.resyncs += 1
                state = self.fed.fed_state()  # what Router._resync reads
                self.epoch, self.cursor = state["epoch"], state["seq"]
                return
            for task_id, status, _priority, seq, _fresh in page["changes"]:
                assert seq > self.cursor
                if status is None:
                    self.deleted.add(task_id)
            self.cursor = page["seq"]
            if not page["more"]:
                return


def test_a_router_that_pulls_in_time_sees_every_deletion() -> None:
    fed, clock = fed_core("s0", **FAST)
    reader = FeedReader(fed)
    deleted: list[str] = []
    for i in range(12):  # 480 s of churn, longer than the retention; a pull every 40 s
        deleted += churn(fed, clock, rounds=1, per_round=30, start=i * 1000)
        reader.pull(limit=25)  # small pages: the cursor walks through every deletion
    assert fed._floor > 0  # deletions were forgotten meanwhile
    assert reader.resyncs == 0 and reader.deleted == set(deleted)


def test_a_router_that_pulls_too_late_is_told_to_resync() -> None:
    fed, clock = fed_core("s0", **FAST)
    reader = FeedReader(fed)
    churn(fed, clock, rounds=10, per_round=20)  # 400 s: the first deletions are forgotten
    page = fed.fed_changes(reader.cursor)
    assert page["resync"] is True and page["epoch"] is None and page["changes"] == []
    # a router that knows nothing of "resync" sees an epoch that is not the shard's: it resyncs too
    assert page["epoch"] != fed.fed_state()["epoch"]
    reader.pull()
    assert reader.resyncs == 1
    # after the resync the reader follows the feed again, and sees the next deletions
    later = churn(fed, clock, rounds=1, per_round=20, start=50_000)
    reader.pull()
    assert reader.resyncs == 1 and reader.deleted == set(later)
    # the floor itself is a complete cursor
    assert fed.fed_changes(fed._floor).get("resync") is None


def test_a_burst_of_deletions_beyond_the_cap_forgets_the_oldest() -> None:
    fed, clock = fed_core("s0", **FAST)
    fed.feed_max_deletions = 30
    reader = FeedReader(fed)
    deleted = churn(fed, clock, rounds=1, per_round=40)  # 80 deletions in one prune
    assert len(fed._deletions) == 30 and len(fed._feed) == 30
    assert fed.fed_changes(reader.cursor)["resync"] is True
    newest = fed.fed_changes(fed._floor)["changes"]
    assert {c[0] for c in newest} <= set(deleted) and len(newest) == 30


def test_a_task_deleted_and_made_again_is_live_in_the_feed() -> None:
    fed, clock = fed_core("s0", **FAST)
    tid, gone, later = ids_for("s0", 3)

    def prune_twice() -> None:  # the worker "v" stays; every other worker and its tasks go
        for _ in range(2):
            clock.now += 20
            fed.ping(worker="v")
            fed.prune()
            fed.collect_changes()

    fed.add_task(task_id=tid, worker="w")
    fed.add_task(task_id=gone, worker="w")
    fed.collect_changes()
    prune_twice()
    now = fed.fed_state()["seq"]  # a task not here is "absent as of now"
    assert fed.fed_status([tid, gone])["tasks"] == {tid: [None, None, now], gone: [None, None, now]}
    assert set(fed._deletions) == {tid, gone}
    fed.add_task(task_id=tid, worker="v")
    fed.collect_changes()
    assert set(fed._deletions) == {gone}
    gone_seq = fed._deletions[gone][0]
    status, _priority, seq = fed.fed_status([tid])["tasks"][tid]
    assert status == "PENDING" and seq == fed.fed_state()["seq"]
    clock.now += 3600
    fed.add_task(task_id=later, worker="w")
    fed.collect_changes()
    prune_twice()  # deletes `later`, forgets the deletion of `gone`, keeps the live `tid`
    assert set(fed._deletions) == {later} and fed._floor == gone_seq
    assert fed.fed_status([tid])["tasks"][tid] == ["PENDING", 0, seq]
    assert [c[0] for c in fed.fed_changes(fed._floor)["changes"]] == [tid, later]
    assert fed.fed_changes(gone_seq - 1)["resync"] is True


def test_feed_side_lists_return_exactly_the_entries_after_the_cursor_up_to_the_page_end() -> None:
    from collections import deque

    from shard.federated import _since

    out = deque((seq, 0.0, [f"e{seq}"]) for seq in (3, 5, 8, 9, 12))
    assert _since(out, 0, 12) == [["e3"], ["e5"], ["e8"], ["e9"], ["e12"]]
    assert _since(out, 5, 9) == [["e8"], ["e9"]]
    assert _since(out, 4, 4) == []
    assert _since(out, 12, 20) == []
    assert _since(deque(), 0, 5) == []
