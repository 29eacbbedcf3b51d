"""The shard-side mechanisms that make N shards answer as one luigid, one by one in process:
order stamps, first mentions, worker touches, batches over shards, and the greedy walk's
events from other shards.  (End to end they are checked by Luigi's scenarios against 3 shards,
``tests/test_federation_scenarios.py``.)"""

from __future__ import annotations

from typing import Any

from federation import wire
from federation.config import SchedulerConfig
from shard.scheduler import SchedulerCore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def core(**config: Any) -> tuple[SchedulerCore, Clock]:
    clock = Clock()
    return SchedulerCore(SchedulerConfig(**config), clock=clock), clock


def order(c: SchedulerCore, *ids: str) -> dict[str, tuple[int, int]]:
    return c.order_keys(ids)


def test_a_stamp_numbers_the_events_of_a_request_above_it() -> None:
    a, _ = core()
    b, _ = core()
    b.add_task(worker="w", task_id="B1")  # b's own numbers are small
    stamp = 7 << wire.STAMP_SHIFT
    a.observe_stamp(stamp)
    a.add_task(worker="w", task_id="A1")
    b.observe_stamp(stamp + (1 << wire.STAMP_SHIFT))
    b.add_task(worker="w", task_id="B2")
    seq_a1, cseq_a1 = order(a, "A1")["A1"]
    seq_b2, cseq_b2 = order(b, "B2")["B2"]
    assert stamp < seq_a1 < seq_b2 and stamp < cseq_a1 < cseq_b2
    assert order(b, "B1")["B1"][1] < stamp  # before any stamp: below
    # a stamp never moves the numbers back
    a.observe_stamp(3)
    a.add_task(worker="w", task_id="A2")
    assert order(a, "A2")["A2"][1] > cseq_a1


def test_the_owner_takes_an_earlier_first_mention_as_the_tasks_creation() -> None:
    c, clock = core()
    clock.now = 1005.0
    c.add_task(worker="w", task_id="T", priority=0)
    c.add_task(worker="w", task_id="U", priority=0)
    # U was a dependency placeholder on another shard at 1001: it ranks first now (older)
    c.first_mention("U", 1001.0, 5)
    assert c.task_list(status="PENDING", upstream_status="")["U"]["start_time"] == 1001.0
    reply = c.get_work(worker="w")
    assert reply["task_id"] == "U"
    # a later mention changes nothing
    c.first_mention("T", 2000.0, 99)
    assert c.task_list(status="PENDING", upstream_status="")["T"]["start_time"] == 1005.0
    # a mention before the task exists is taken when it is created
    c.first_mention("V", 1000.5, 3)
    clock.now = 1010.0
    c.add_task(worker="w", task_id="V")
    assert c.task_list(status="PENDING", upstream_status="")["V"]["start_time"] == 1000.5


def test_a_touch_keeps_a_worker_active_on_a_shard_it_is_silent_on() -> None:
    c, clock = core(worker_disconnect_delay=10)
    c.add_task(worker="w", task_id="A", status="DONE")
    for _ in range(5):
        clock.now += 8
        c.touch_workers(["w", "unknown"])
    c.prune()
    assert c.task_list(status="DONE", upstream_status="")["A"]["workers"] == ["w"]
    assert [w["name"] for w in c.worker_list()] == ["w"]  # an unknown worker is not made up
    clock.now += 11
    c.prune()
    assert c.task_list(status="DONE", upstream_status="")["A"]["workers"] == []


def test_a_touch_after_get_work_elsewhere_makes_the_worker_known() -> None:
    c, _ = core()
    c.touch_workers(["x"], get_work=True)
    assert [w["name"] for w in c.worker_list()] == ["x"]


def _batchable(c: SchedulerCore, *ids: str, worker: str = "w") -> None:
    c.add_task_batcher(worker=worker, task_family="F", batched_args=["p"])
    for tid in ids:
        c.add_task(worker=worker, task_id=tid, family="F", params={"p": tid}, batchable=True)


def test_a_batch_claim_is_all_or_nothing() -> None:
    c, _ = core()
    _batchable(c, "F1", "F2")
    c.add_task(worker="w", task_id="F3", family="F", params={"p": "F3"}, batchable=True, deps=["X"])
    assert c.batch_claim("w", None, "b1", ["F1", "F3"], remote=True) is False  # F3 is not ready
    assert set(c.task_list(status="PENDING", upstream_status="")) == {"F1", "F2", "F3"}
    assert c.batch_claim("w", None, "b1", ["F2", "F1"], remote=True, first=50 << 16, positions=[1, 0])
    listed = c.task_list(status="BATCH_RUNNING", upstream_status="")
    assert list(listed) == ["F2", "F1"]  # entry order on this shard...
    keys = c.order_keys(["F1", "F2"])
    assert keys["F1"][0] < keys["F2"][0]  # ...but numbered in batch order for the router


def test_a_remote_batch_is_not_reset_here_and_follows_its_runners_status() -> None:
    c, _ = core()
    c.keep_batch_effects = True
    _batchable(c, "F1", "F2")
    assert c.batch_claim("w", None, "b1", ["F1", "F2"], remote=True, first=50 << 16, positions=[1, 2])
    # the runner is on another shard: a get_work with current_tasks does not orphan the batch here
    c.get_work(worker="w", current_tasks=[])
    assert set(c.task_list(status="BATCH_RUNNING", upstream_status="")) == {"F1", "F2"}
    c.batch_apply([["status_message", "b1", "half way"], ["status", "b1", "DONE", 60 << 16]])
    done = c.task_list(status="DONE", upstream_status="")
    assert set(done) == {"F1", "F2"} and done["F1"]["status_message"] == "half way"
    assert c.take_batch_effects() == []  # applying another shard's effects emits none
    # the batch is over: nothing left to skip
    assert c.snapshot().meta["remote_batches"] == []


def test_a_runner_here_emits_its_batch_effects_for_the_other_shards() -> None:
    c, _ = core()
    c.keep_batch_effects = True
    _batchable(c, "F1")
    assert c.batch_claim("w", None, "b1", ["F1"], remote=True, first=50 << 16, positions=[0])
    c.add_task(worker="w", task_id="R", family="F", params={"p": "F1,F9"}, status="RUNNING", batch_id="b1")
    c.set_task_status_message(task_id="R", status_message="m")
    c.add_task(worker="w", task_id="R", status="DONE")
    effects = c.take_batch_effects()
    # entering RUNNING names the runner (its place in a prune walk), its first add_task sets its
    # batch's tracking URL (Luigi), then the message, the end
    assert [e[0] for e in effects] == ["runner", "tracking_url", "status_message", "status"]
    assert effects[0][:2] == ["runner", "b1"] and isinstance(effects[0][2], int)
    assert effects[3][:3] == ["status", "b1", "DONE"] and isinstance(effects[3][3], int)
    assert c.task_list(status="DONE", upstream_status="")["F1"]["status_message"] == "m"


def test_a_core_outside_a_federation_keeps_no_effects() -> None:
    c, _ = core()
    _batchable(c, "F1")
    assert c.batch_claim("w", None, "b1", ["F1"], remote=True)
    c.add_task(worker="w", task_id="R", family="F", params={"p": "F1"}, status="RUNNING", batch_id="b1")
    c.add_task(worker="w", task_id="R", status="DONE")
    assert c.task_list(status="DONE", upstream_status="")["F1"]["status"] == "DONE"
    assert c.take_batch_effects() == []  # nobody would take them: none are kept


def test_another_shards_reservation_in_its_rank_place_blocks_a_lower_task() -> None:
    c, _ = core(resources={"r": 1})
    c.get_work(worker="w")  # w asked for work: it is one of Luigi's greedy workers
    c.add_task(worker="w", task_id="LOW", resources={"r": 1}, priority=1)
    c.add_worker(worker="w", info=[["workers", 1]])
    # without events from elsewhere LOW is handed out
    c.external_greedy = []
    offer = c.offer_work(worker="w")["offer"]
    assert offer is not None and offer["task_id"] == "LOW"
    # a higher-ranked task of worker "x" on another shard reserved r: LOW waits, as in luigid
    c.external_greedy = [[-10, 999.0, 1, 0, [["r", 1]], "x"]]
    assert c.offer_work(worker="w")["offer"] is None
    # the same reservation ranked below LOW does not block it
    c.external_greedy = [[0, 999.0, 1, 0, [["r", 1]], "x"]]
    assert c.offer_work(worker="w")["offer"]["task_id"] == "LOW"
    c.external_greedy = None
