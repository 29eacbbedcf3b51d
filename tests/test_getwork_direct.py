"""``get_work`` granted directly from the shards' summaries (router/summaries.py, router/getwork.py).

Each shard sends the router, with the first reply of a batch, the get_work summaries of the
workers that changed in it; the router grants at the shard with the best task, guarded by the
next shard's best rank, and asks for offers only where a summary cannot decide.  These tests use
three in-process shards behind the real router (``tests/inproc_federation.py``) and compare the
answers with ``luigi.scheduler.Scheduler`` where an order is at stake.  (The 126 ported Luigi
scenarios also check, after every call, that the router's table equals every shard's summaries
now: ``FederationAsCore.check_summaries``.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi.scheduler as lsched
import pytest

from federation import wire
from federation.errors import FederationError
from router import summaries
from tests.inproc_federation import InProcFederation

IDS = ["s0", "s1", "s2"]
W = "worker-1"


class Fed(InProcFederation):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, IDS)
        self.router.core.workers.touch_every = 0.0

    def add(self, task_id: str, *, worker: str = W, **kw: Any) -> Any:
        return self.call("add_task", task_id=task_id, worker=worker, family="F", **kw)

    def paths(self) -> dict[str, float]:
        m = self.router.core.metrics
        return {p: m.get_work_paths.labels(p)._value.get() for p in ("direct", "offers", "declined")}

    def link(self, sid: str) -> Any:
        return self.router.core.pool.links[sid]


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Fed]:
    f = Fed(tmp_path)
    try:
        yield f
    finally:
        f.close()


def test_a_workers_tasks_over_three_shards_come_in_luigis_order_without_offers(fed: Fed) -> None:
    luigi = lsched.Scheduler()
    ids = []
    for i, sid in enumerate(IDS * 3):
        tid = fed.task_on(sid, f"p{i}")
        prio = (i * 7) % 5
        ids.append(tid)
        fed.add(tid, priority=prio)
        luigi.add_task(task_id=tid, worker=W, family="F", priority=prio)
    assert all(summaries.usable(fed.link(sid)) and not fed.link(sid).unsettled for sid in IDS)
    before = fed.paths()
    got, want = [], []
    for _ in range(len(ids) + 1):
        reply = fed.call("get_work", worker=W, host="h", current_tasks=got[:])
        expected = luigi.get_work(worker=W, host="h", current_tasks=want[:])
        assert reply == expected
        if reply["task_id"] is None:
            break
        got.append(reply["task_id"])
        want.append(expected["task_id"])
    assert got == want and len(got) == len(ids)
    after = fed.paths()
    assert after["direct"] - before["direct"] == len(ids) + 1
    assert after["offers"] == before["offers"]


def test_the_table_follows_every_change_and_a_dependency_done_elsewhere(fed: Fed) -> None:
    a, b = fed.task_on("s0", "a"), fed.task_on("s1", "b")
    fed.add(b, deps=[a])
    fed.add(a)
    assert fed.link("s1").sums[W][1] is None  # b waits for a
    assert fed.call("get_work", worker=W, host="h")["task_id"] == a
    fed.add(a, status="DONE")
    # the relay's mirror update reached s1 and its frame the router before the DONE was answered
    top = fed.link("s1").sums[W][1]
    assert top is not None
    assert fed.call("get_work", worker=W, host="h", current_tasks=[])["task_id"] == b


def test_a_get_work_waits_for_the_relays_in_flight_when_it_arrived(fed: Fed) -> None:
    """A dependency DONE on s0 is acknowledged once its mirror update to s1 is sent: a get_work
    that arrives before s1 answered it waits for that answer (and its summaries), so it sees the
    dependent runnable on s1, as one luigid would; calls sent after it arrived are not waited
    for."""
    a, b, c = fed.task_on("s0", "a"), fed.task_on("s1", "b"), fed.task_on("s2", "c")
    fed.add(b, deps=[a], priority=5)
    fed.add(a, priority=5)
    fed.add(c, priority=1)
    assert fed.call("get_work", worker=W, host="h")["task_id"] == a
    pool = fed.router.core.pool
    link = fed.link("s1")
    # the relay's update of a, sent and not answered yet, as after the worker's DONE was answered
    fed.call("add_task", task_id=a, worker=W, family="F", status="DONE")
    update = [[a, "DONE", fed.core("s0")._epoch, 10**9]]
    pool.call("s1", "fed_mirror_update", {"updates": update}, lambda r, e: None)
    assert list(link.unsettled)
    route = fed.router.send("get_work", worker=W, host="h", current_tasks=[])
    fed.router.core.step()
    assert link.settle_waiters  # held until s1 answered
    later = []
    pool.call("s1", "fed_mirror_update", {"updates": []}, lambda r, e: later.append(r))
    fed.router.settle()
    assert fed.router.answer(route)["task_id"] == b
    assert later and not link.unsettled and not link.settle_waiters


def test_a_missed_frame_puts_the_shard_out_of_step_until_a_whole_table_came(fed: Fed) -> None:
    for i, sid in enumerate(IDS):
        fed.add(fed.task_on(sid, f"t{i}"))
    link = fed.link("s2")
    link.sum_n -= 1  # as if a frame had been lost with a reply
    fed.add(fed.task_on("s2", "more"))  # s2's next frame does not follow
    assert link.sum_ok  # the whole table was asked for and came in the same settle
    shard = fed.servers["s2"].core.core
    assert link.sums == {w: shard.summary_of(w) for w in shard.known_workers()}
    assert fed.call("get_work", worker=W, host="h")["task_id"] is not None


def test_a_malformed_frame_is_logged_and_the_table_rebuilt(fed: Fed, caplog: Any) -> None:
    fed.add(fed.task_on("s0", "x"))
    link = fed.link("s0")
    pool = fed.router.core.pool
    for junk in (b"\xc1", wire.pack([1, 2]), wire.pack(["t", 1, False, False, {"w": [1, 2]}])):
        summaries.on_frame(pool, link, junk)
        assert not link.sum_ok and link.sums == {}
        fed.router.settle()
        assert link.sum_ok and W in link.sums
    assert "malformed summaries frame" in caplog.text


def test_a_grant_refused_by_its_guard_falls_back_to_the_offers(fed: Fed) -> None:
    """Two workers plan from the same table: the first takes the shared best task on s0, the
    second's grant there ranks below its best on s1 now, s0 declines, the offers decide."""
    luigi = lsched.Scheduler()
    top, low = fed.task_on("s0", "top"), fed.task_on("s0", "low")
    mid = fed.task_on("s1", "mid")
    for worker, tid, prio in [("w1", top, 10), ("w2", top, 10), ("w2", low, 1), ("w2", mid, 5)]:
        fed.add(tid, worker=worker, priority=prio)
        luigi.add_task(task_id=tid, worker=worker, family="F", priority=prio)
    r1 = fed.router.send("get_work", worker="w1", host="h")
    r2 = fed.router.send("get_work", worker="w2", host="h")
    fed.router.settle()
    assert fed.router.answer(r1) == luigi.get_work(worker="w1", host="h")
    second = fed.router.answer(r2)
    assert second == luigi.get_work(worker="w2", host="h")
    assert second["task_id"] == mid
    # (w1 is known to s0 only: its get_work goes there without a choice to make)
    paths = fed.paths()
    assert paths["declined"] == 1 and paths["direct"] == 1 and paths["offers"] == 1


def test_a_shard_with_nothing_after_all_passes_to_the_next(fed: Fed) -> None:
    """The table's best task went to another worker; that shard has nothing more for this one:
    it answers without a task and the next shard in rank order is asked."""
    top, mid = fed.task_on("s0", "top"), fed.task_on("s2", "mid")
    fed.add(top, worker="w1", priority=10)
    fed.add(top, worker="w2", priority=10)
    fed.add(mid, worker="w2", priority=5)
    r1 = fed.router.send("get_work", worker="w1", host="h")
    r2 = fed.router.send("get_work", worker="w2", host="h")
    fed.router.settle()
    assert fed.router.answer(r1)["task_id"] == top
    assert fed.router.answer(r2)["task_id"] == mid
    assert fed.paths()["declined"] == 0


def test_a_guard_the_router_did_not_set_is_dropped_and_a_bad_one_refused(fed: Fed) -> None:
    t = fed.task_on("s1", "g")
    fed.add(t, priority=1)
    # a client cannot make the shard decline: fed_get_work's guard is the router's to set
    assert fed.call("get_work", worker=W, host="h", guard=[99, 0, 0])["task_id"] == t
    pool = fed.router.core.pool
    got: list[Any] = []
    pool.call("s1", "fed_get_work", {"worker": W, "guard": "high"}, lambda r, e: got.append((r, e)))
    fed.router.settle()
    ((result, err),) = got
    assert result is None and isinstance(err, FederationError) and err.code == "bad_arguments"
    assert fed.call("task_list", status="RUNNING", upstream_status="")[t]["status"] == "RUNNING"
