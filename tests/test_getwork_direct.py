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
        return {
            p: m.get_work_paths.labels(p)._value.get() for p in ("direct", "offers", "declined", "waited")
        }

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


def test_a_done_relayed_elsewhere_is_answered_once_the_mirror_has_it(fed: Fed) -> None:
    """The worker's DONE of a dependency on s0 is answered only once s1 answered the relay's
    update of its mirror (and the router has s1's summaries from that answer): the worker's next
    get_work is granted directly, waiting for no call in flight, and finds the dependent."""
    a, b = fed.task_on("s0", "a"), fed.task_on("s1", "b")
    fed.add(b, deps=[a])
    fed.add(a)
    assert fed.call("get_work", worker=W, host="h")["task_id"] == a
    # what s1 and the router's table of s1 say at the moment the DONE is answered
    seen: list[tuple[str, Any, bool]] = []
    send_front = fed.router.core.send_front

    def spy(route: list[bytes], body: bytes) -> None:
        seen.append(
            (fed.core("s1").get_task(a).status, fed.link("s1").sums[W][1], summaries.usable(fed.link("s1")))
        )
        send_front(route, body)

    fed.router.core.send_front = spy
    fed.call("add_task", task_id=a, worker=W, family="F", status="DONE")
    fed.router.core.send_front = send_front
    assert len(seen) == 1
    status, top, usable = seen[0]
    assert status == "DONE" and usable and top is not None  # b runnable, in the router's table
    assert not any(fed.link(sid).unsettled for sid in IDS)
    before = fed.paths()
    assert fed.call("get_work", worker=W, host="h", current_tasks=[])["task_id"] == b
    after = fed.paths()
    assert after["direct"] - before["direct"] == 1
    assert after["waited"] == before["waited"] and after["offers"] == before["offers"]


def test_a_registration_is_answered_once_its_relays_are_sent_and_a_get_work_waits_for_them(
    fed: Fed,
) -> None:
    """An add_task naming a dependency on another shard is answered once the feed's relays for it
    (the worker as the dependency's stakeholder, its first mention, to the owner) are sent, not
    answered: a worker registering its tasks sends another add_task next.  A get_work arriving
    meanwhile waits for them (they are tracked as unsettled)."""
    a, b = fed.task_on("s0", "a"), fed.task_on("s1", "b")
    seen: list[bool] = []
    send_front = fed.router.core.send_front

    def spy(route: list[bytes], body: bytes) -> None:
        seen.append(bool(fed.link("s0").unsettled))
        send_front(route, body)

    fed.router.core.send_front = spy
    fed.add(b, deps=[a])
    fed.router.core.send_front = send_front
    assert seen == [True]  # answered with the relay to s0 in flight, and tracked
    assert not fed.link("s0").unsettled  # (answered since)


def test_a_get_work_waits_for_the_relays_in_flight_when_it_arrived(fed: Fed) -> None:
    """A mirror update sent as a client may already know it (as after a resynchronisation: not a
    ``concurrent`` call): a get_work that arrives before s1 answered it waits for that answer (and
    its summaries), so it sees the dependent runnable on s1, as one luigid would; calls sent
    after it arrived are not waited for."""
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
    assert fed.paths()["waited"] == 1
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


# -- the shard's side: SchedulerCore.worker_summaries and the frame ---------------------------------
def test_worker_summaries_give_what_changed_and_only_that() -> None:
    from shard.scheduler import SchedulerCore

    core = SchedulerCore()
    whole, first = core.worker_summaries()
    assert whole and first == {}  # a new core: every worker (none yet)
    core.add_task(task_id="A", worker="w1", family="F", priority=3)
    core.add_task(task_id="B", worker="w2", family="F", deps=["A"])
    whole, got = core.worker_summaries()
    assert not whole and set(got) == {"w1", "w2"}
    assert got["w1"][1][0] == 3 and got["w2"][1] is None  # B waits for A
    assert core.worker_summaries() == (False, {})  # nothing changed
    core.get_work(worker="w1", host="h")
    _, got = core.worker_summaries()
    assert set(got) == {"w1"} and got["w1"][1] is None and got["w1"][3] == ["A"]
    core.add_task(task_id="A", worker="w1", family="F", status="DONE")
    _, got = core.worker_summaries()
    assert got["w2"][1] is not None  # B is ready now
    assert all(core.summary_of(w) == s for w, s in got.items())
    # a restore (a reload of the store) gives every worker again
    core.restore(core.snapshot())
    whole, got = core.worker_summaries()
    assert whole and set(got) == {"w1", "w2"}


def test_upstream_disabled_counts_reach_the_summaries() -> None:
    from federation.config import SchedulerConfig
    from shard.scheduler import SchedulerCore

    core = SchedulerCore(SchedulerConfig(retry_count=1))
    core.add_task(task_id="B", worker="w2", family="F", deps=["A"])
    core.add_task(task_id="A", worker="w1", family="F")
    core.worker_summaries()
    assert core.summary_of("w2")[0]["n_pending_tasks"] == 1
    core.get_work(worker="w1", host="h")
    core.add_task(task_id="A", worker="w1", family="F", status="FAILED")  # retry_count 1: DISABLED
    _, got = core.worker_summaries()
    assert got["w2"][0]["n_pending_tasks"] == 0  # B is UPSTREAM_DISABLED: luigid leaves it out
    assert got["w2"] == core.summary_of("w2")


def test_the_frame_rides_on_the_first_reply_to_a_stamped_request_only(tmp_path: Path) -> None:
    from federation.config import FederationConfig, RouterConfig, SchedulerConfig, ShardSpec
    from shard.app import build_federated_shard

    spec = ShardSpec("s0", "tcp://127.0.0.1:1", f"sqlite:///{tmp_path / 's0.db'}", None)
    config = FederationConfig(
        shards=(spec,),
        groups={"default": ("s0",)},
        namespaces={},
        default_group="default",
        router=RouterConfig(),
        scheduler=SchedulerConfig(),
    )
    server = build_federated_shard(config, "s0", in_process=True)
    try:

        def req(i: int, stamped: bool, **kw: Any) -> list[bytes]:
            body = wire.encode_request(i, "add_task", {"worker": "w", "family": "F", **kw})
            return [b"peer", b"tag%d" % i, b"", wire.add_stamp(body, 1 << 40) if stamped else body]

        out = server.handle_batch([req(1, False, task_id="X")])
        assert [len(f) for f in out] == [3]  # [peer, tag, reply]: no one to tell
        out = server.handle_batch(
            [req(2, False, task_id="Y"), req(3, True, task_id="Z"), req(4, True, task_id="Q")]
        )
        assert [len(f) for f in out] == [3, 4, 3]
        token, n, whole, prunes, entries = wire.unpack(out[1][3])
        assert whole and n == 1 and not prunes and set(entries) == {"w"}  # the first: every worker
        out = server.handle_batch([req(5, True, task_id="R")])
        token2, n2, whole2, _, entries2 = wire.unpack(out[0][3])
        assert (token2, n2, whole2) == (token, 2, False) and set(entries2) == {"w"}
        out = server.handle_batch(
            [[b"peer", b"tag6", b"", wire.add_stamp(wire.encode_request(6, "task_list", {}), 1 << 41)]]
        )
        assert [len(f) for f in out] == [3]  # nothing changed: no frame
    finally:
        server.store.close()
        server.close()


def test_a_mirrors_update_waits_for_the_next_commit_and_a_restart_gets_it_back(fed: Fed) -> None:
    """A mirror update (the task RUNNING, then DONE, where its dependents are) commits nothing by
    itself while the mirror's status made nothing runnable: it rides on the shard's next commit.
    Lost with a kill -9 before that, it comes back from the owner when the router resynchronises
    the restarted shard; a DONE mirror's next status commits at once."""
    a, b = fed.task_on("s0", "a"), fed.task_on("s1", "b")
    fed.add(b, deps=[a], worker="w2")  # (W on s1 would be touched there, a commit of its own)
    fed.add(a)

    def stored(sid: str) -> str | None:
        snap = fed.servers[sid].store.load()
        return next((r["status"] for r in snap.tasks if r["task_id"] == a), None)

    def mirrored(sid: str) -> str | None:
        t = fed.core(sid).core.get_task(a)
        return None if t is None else t.status

    assert fed.call("get_work", worker=W, host="h")["task_id"] == a
    assert mirrored("s1") == "RUNNING" and stored("s1") in ("UNKNOWN", "PENDING")
    fed.restart("s1")  # kill -9: the held-back update is gone with the process
    fed.clock.advance(1.0)
    fed.router.settle()
    fed.clock.advance(1.0)
    fed.router.settle()
    assert mirrored("s1") == "RUNNING"  # the owner's status, pushed by the resync
    fed.add(fed.task_on("s1", "other"))  # any other change commits it too
    assert stored("s1") == "RUNNING"
    fed.add(a, status="DONE")
    assert mirrored("s1") == "DONE"  # held back too, unless the batch had other changes
    fed.restart("s1")  # whatever was held back is lost: the resync says DONE again
    fed.clock.advance(1.0)
    fed.router.settle()
    fed.clock.advance(1.0)
    fed.router.settle()
    assert mirrored("s1") == "DONE"
    assert fed.call("get_work", worker="w2", host="h")["task_id"] == b
    assert stored("s1") == "DONE"  # committed with the grant of b
    # a mirror that was DONE commits its next status at once (losing it would make b runnable)
    s1 = fed.core("s1")
    epoch, seq = s1.core.get_task(a).fed["epoch"], s1.core.get_task(a).fed["seq"]
    s1.fed_mirror_update([[a, "PENDING", epoch, seq + 1]])
    assert a in s1.collect_changes().tasks
    s1.fed_mirror_update([[a, "RUNNING", epoch, seq + 2]])
    assert s1.collect_changes().is_empty()  # from PENDING: held back


def test_a_task_made_batchable_changes_its_workers_summaries() -> None:
    """Found by the differential machine (one shard, random seed), minimized: a task added first
    without ``batchable`` and then with it, its family batched by the worker, puts the batch flag
    on the worker's summary; the router's table must follow (``FederationAsCore`` checks it after
    every call), or a direct grant would hand out one task where Luigi hands out a batch."""
    from tests.differential import Differential, make_config
    from tests.test_federation_scenarios import OneShard

    d = Differential(make_config(), OneShard, check_changes=False)
    common = {"family": "Fam", "module": "mod.f", "params": {"a": "2", "b": "x"}}
    d.add_task(task_id="Fam_2", worker="W1", priority=5, batchable=False, **common)
    d.add_task_batcher(worker="W1", task_family="Fam", batched_args=["a"], max_batch_size=float("inf"))
    d.add_task(task_id="Fam_2", worker="W1", batchable=True, **common)
    d.add_task(task_id="Fam_3", worker="W1", batchable=True, **{**common, "params": {"a": "3", "b": "x"}})
    d.get_work(worker="W1", host="h")
    d.observe()
