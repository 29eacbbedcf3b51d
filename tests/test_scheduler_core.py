"""Behaviour tests for :class:`shard.scheduler.SchedulerCore`.

* Cases ported from Luigi's own ``test/scheduler_api_test.py`` (same scenarios and
  expectations), run with an injected fake clock instead of patching ``time.time``.
* Cases for what that file does not cover: batching, messages, graphs, pause,
  resources, events.
* White-box index invariants and a reference check of the greedy ``get_work``
  walk against Luigi's full walk (ported verbatim over the core's own data),
  on random states.
* ``restore(snapshot())`` round trips, change-log completeness (replaying
  ``collect_changes`` into a dict store gives ``snapshot()``), and bad-argument
  calls (TypeError/ValueError, nothing changed).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import subprocess
import sys
from collections import defaultdict
from typing import Any

import pytest
from luigi.task_status import BATCH_RUNNING, DISABLED, DONE, FAILED, PENDING, RUNNING, UNKNOWN

import shard.scheduler
from federation.config import SchedulerConfig
from shard.changes import Changes, Snapshot
from shard.scheduler import RPC_METHODS, SchedulerCore, _sig

WORKER = "myworker"
# the configuration of Luigi's scheduler_api_test.py
CONF: dict[str, Any] = dict(
    retry_delay=100.0,
    remove_delay=1000.0,
    worker_disconnect_delay=10.0,
    disable_persist=10,
    disable_window=10,
    retry_count=3,
    disable_hard_timeout=60 * 60,
)


class FakeClock:
    """Advances by ``tick`` on every read, like real time; ``set(t)`` freezes it (Luigi's setTime)."""

    def __init__(self, t: float = 1000.0, tick: float = 0.001) -> None:
        self.t = t
        self.tick = tick

    def __call__(self) -> float:
        now = self.t
        self.t += self.tick
        return now

    def set(self, t: float) -> None:
        self.t = t
        self.tick = 0.0


def make(clock: FakeClock, **over: Any) -> SchedulerCore:
    return SchedulerCore(SchedulerConfig(**{**CONF, **over}), clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sch(clock: FakeClock) -> SchedulerCore:
    return make(clock)


def check_task_order(sch: SchedulerCore, order: Any) -> None:
    for expected_id in order:
        assert sch.get_work(worker=WORKER)["task_id"] == expected_id
        sch.add_task(worker=WORKER, task_id=expected_id, status=DONE)
    assert sch.get_work(worker=WORKER)["task_id"] is None


# ============================================================================ ported from Luigi


def test_dep(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="B", deps=("A",))
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    sch.add_task(worker=WORKER, task_id="A", status=DONE)
    assert sch.get_work(worker=WORKER)["task_id"] == "B"
    sch.add_task(worker=WORKER, task_id="B", status=DONE)
    assert sch.get_work(worker=WORKER)["task_id"] is None


def test_failed_dep(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="B", deps=("A",))
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    assert sch.get_work(worker=WORKER)["task_id"] is None
    sch.add_task(worker=WORKER, task_id="A", status=DONE)
    assert sch.get_work(worker=WORKER)["task_id"] == "B"
    sch.add_task(worker=WORKER, task_id="B", status=DONE)
    assert sch.get_work(worker=WORKER)["task_id"] is None


def test_broken_dep(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="B", deps=("A",))
    sch.add_task(worker=WORKER, task_id="A", runnable=False)
    assert sch.get_work(worker=WORKER)["task_id"] is None
    sch.add_task(worker=WORKER, task_id="A", status=DONE)
    assert sch.get_work(worker=WORKER)["task_id"] == "B"
    sch.add_task(worker=WORKER, task_id="B", status=DONE)
    assert sch.get_work(worker=WORKER)["task_id"] is None


def test_two_workers(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A")
    sch.add_task(worker="Y", task_id="A")
    sch.add_task(task_id="B", deps=("A",), worker="X")
    sch.add_task(task_id="C", deps=("A",), worker="Y")
    assert sch.get_work(worker="X")["task_id"] == "A"
    assert sch.get_work(worker="Y")["task_id"] is None
    sch.add_task(worker="X", task_id="A", status=DONE)
    assert sch.get_work(worker="Y")["task_id"] == "C"
    assert sch.get_work(worker="X")["task_id"] == "B"


def test_retry(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    for t in range(100):
        clock.set(t)
        assert sch.get_work(worker=WORKER)["task_id"] is None
        sch.ping(worker=WORKER)
        if t % 10 == 0:
            sch.prune()
    clock.set(101)
    sch.prune()
    assert sch.get_work(worker=WORKER)["task_id"] == "A"


def test_resend_task(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A")
    sch.add_task(worker=WORKER, task_id="B")
    for _ in range(10):
        assert sch.get_work(worker=WORKER, current_tasks=[])["task_id"] == "A"
    assert sch.get_work(worker=WORKER, current_tasks=["A"])["task_id"] == "B"


def test_resend_multiple_tasks(sch: SchedulerCore) -> None:
    for t in "ABC":
        sch.add_task(worker=WORKER, task_id=t)
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    assert sch.get_work(worker=WORKER)["task_id"] == "B"
    for _ in range(10):
        assert sch.get_work(worker=WORKER, current_tasks=[])["task_id"] == "A"
        assert sch.get_work(worker=WORKER, current_tasks=["B"])["task_id"] == "A"
        assert sch.get_work(worker=WORKER, current_tasks=["A"])["task_id"] == "B"
        assert sch.get_work(worker=WORKER, current_tasks=["A", "B"])["task_id"] == "C"


def test_disconnect_running(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.add_task(task_id="A", worker="X")
    sch.add_task(task_id="A", worker="Y")
    assert sch.get_work(worker="X")["task_id"] == "A"
    for t in range(200):
        clock.set(t)
        sch.ping(worker="Y")
        if t % 10 == 0:
            sch.prune()
    assert sch.get_work(worker="Y")["task_id"] == "A"


def test_do_not_overwrite_tracking_url_while_running(sch: SchedulerCore) -> None:
    sch.add_task(task_id="A", worker="X", status="RUNNING", tracking_url="trackme")
    assert sch.task_list("RUNNING", "")["A"]["tracking_url"] == "trackme"
    sch.add_task(task_id="A", worker="Y", status="PENDING")
    assert sch.task_list("RUNNING", "")["A"]["tracking_url"] == "trackme"


def test_do_update_tracking_url_while_running(sch: SchedulerCore) -> None:
    sch.add_task(task_id="A", worker="X", status="RUNNING", tracking_url="trackme")
    sch.add_task(task_id="A", worker="X", status="RUNNING", tracking_url="stage_2")
    assert sch.task_list("RUNNING", "")["A"]["tracking_url"] == "stage_2"


def test_keep_tracking_url_on_done_and_fail(sch: SchedulerCore) -> None:
    for status in ("DONE", "FAILED"):
        sch.add_task(task_id="A", worker="X", status="RUNNING", tracking_url="trackme")
        assert sch.task_list("RUNNING", "")["A"]["tracking_url"] == "trackme"
        sch.add_task(task_id="A", worker="X", status=status)
        assert sch.task_list(status, "")["A"]["tracking_url"] == "trackme"


def test_drop_tracking_url_when_rescheduled_while_not_running(sch: SchedulerCore, clock: FakeClock) -> None:
    for status in ("DONE", "FAILED", "PENDING"):
        clock.t += 100  # past the DONE cooldown
        sch.add_task(task_id="A", worker="X", status=status, tracking_url="trackme")
        assert sch.task_list(status, "")["A"]["tracking_url"] == "trackme"
        clock.t += 100
        sch.add_task(task_id="A", worker="Y", status="PENDING")
        assert sch.task_list("PENDING", "")["A"]["tracking_url"] is None


def test_reset_tracking_url_on_new_run(sch: SchedulerCore) -> None:
    sch.add_task(task_id="A", worker="X", status="PENDING", tracking_url="trackme")
    sch.add_task(task_id="A", worker="Y", status="RUNNING")
    assert sch.task_list("RUNNING", "")["A"]["tracking_url"] is None


def test_remove_dep(sch: SchedulerCore) -> None:
    sch.add_task(task_id="A", worker="X", runnable=False)
    sch.add_task(task_id="B", deps=("A",), worker="X")
    assert sch.get_work(worker="X")["task_id"] is None
    sch.add_task(task_id="B", deps=("C",), worker="Y")
    sch.add_task(task_id="C", worker="Y", status=DONE)
    assert sch.get_work(worker="Y")["task_id"] == "B"


def test_start_time(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(100)
    sch.add_task(worker=WORKER, task_id="A")
    clock.set(200)
    sch.add_task(worker=WORKER, task_id="A")
    sch.add_task(worker=WORKER, task_id="A", status=DONE)
    assert sch.task_list(DONE, "")["A"]["start_time"] == 100


def test_last_updated_does_not_change_with_same_status_update(sch: SchedulerCore, clock: FakeClock) -> None:
    for t, status in ((100, PENDING), (300, DONE), (500, DISABLED)):
        clock.set(t)
        sch.add_task(worker=WORKER, task_id="A", status=status)
        assert sch.task_list(status, "")["A"]["last_updated"] == t
        clock.set(t + 100)
        sch.add_task(worker=WORKER, task_id="A", status=status)
        assert sch.task_list(status, "")["A"]["last_updated"] == t


def test_last_updated_shows_running_start(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(100)
    sch.add_task(worker=WORKER, task_id="A", status=PENDING)
    assert sch.task_list(PENDING, "")["A"]["last_updated"] == 100
    clock.set(200)
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    assert sch.task_list("RUNNING", "")["A"]["last_updated"] == 200
    clock.set(300)
    sch.add_task(worker=WORKER, task_id="A", status=PENDING)
    assert sch.task_list("RUNNING", "")["A"]["last_updated"] == 200


def test_last_updated_with_failure_and_recovery(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(100)
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    clock.set(200)
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    assert sch.task_list(FAILED, "")["A"]["last_updated"] == 200
    clock.set(1000)
    sch.prune()
    assert sch.task_list(PENDING, "")["A"]["last_updated"] == 1000


def test_timeout(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.add_task(task_id="A", worker="X")
    assert sch.get_work(worker="X")["task_id"] == "A"
    clock.set(10000)
    sch.add_task(task_id="A", worker="Y")
    for i in range(2000):
        clock.set(10000 + i)
        sch.ping(worker="Y")
    sch.add_task(task_id="A", status=DONE, worker="Y")  # used to raise in Luigi: A had been removed
    task = sch.get_task("A")
    assert task is not None and task.status == RUNNING  # only X, which runs it, may finish it


def test_disallowed_state_changes(sch: SchedulerCore) -> None:
    sch.add_task(task_id="A", worker="X")
    assert sch.get_work(worker="X")["task_id"] == "A"
    sch.add_task(task_id="A", worker="Y")
    assert sch.get_work(worker="Y")["task_id"] is None


def test_two_worker_info(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A")
    sch.add_task(worker="Y", task_id="A")
    assert sch.get_work(worker="X")["task_id"] == "A"
    r = sch.get_work(worker="Y")
    assert r["task_id"] is None
    assert r["running_tasks"][0]["task_id"] == "A"
    assert r["running_tasks"][0]["worker"] == "X"


def test_assistant_get_work(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A")
    sch.add_worker("Y", [])
    assert sch.get_work(worker="Y", assistant=True)["task_id"] == "A"
    running = sch.task_list("RUNNING", "")
    assert list(running) == ["A"]
    assert running["A"]["worker_running"] == "Y"


def test_assistant_get_work_external_task(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", runnable=False)
    assert sch.get_work(worker="Y", assistant=True)["task_id"] is None


def test_task_fails_when_assistant_dies(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.add_task(worker="X", task_id="A")
    sch.add_worker("Y", [])
    assert sch.get_work(worker="Y", assistant=True)["task_id"] == "A"
    assert list(sch.task_list("RUNNING", "")) == ["A"]
    clock.set(50)
    sch.ping(worker="X")
    assert list(sch.task_list("FAILED", "")) == ["A"]


def test_prune_with_live_assistant(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.add_task(worker="X", task_id="A")
    sch.get_work(worker="Y", assistant=True)
    sch.add_task(worker="Y", task_id="A", status=DONE, assistant=True)
    clock.set(600)
    sch.ping(worker="Y")
    sch.prune()
    clock.set(2000)
    sch.prune()
    assert not list(sch.task_list("", ""))


def test_re_enable_failed_task_assistant(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.add_worker("X", [("assistant", True)])
    sch.add_task(worker="X", task_id="A", status=FAILED, assistant=True)
    assert sch.task_list("", "")["A"]["status"] == FAILED
    clock.set(101)
    sch.ping(worker="X")
    assert sch.task_list("", "")["A"]["status"] == PENDING


def test_assistant_doesnt_keep_alive_task(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.add_task(worker="X", task_id="A")
    assert sch.get_work(worker="X")["task_id"] == "A"
    sch.add_worker("Y", {"assistant": True})
    remove_delay = CONF["remove_delay"] + 1.0
    clock.set(remove_delay)
    sch.ping(worker="Y")
    sch.prune()
    assert list(sch.task_list(status="FAILED", upstream_status="")) == ["A"]
    assert list(sch.task_list(status="", upstream_status="")) == ["A"]
    clock.set(2 * remove_delay)
    sch.ping(worker="Y")
    sch.prune()
    assert list(sch.task_list(status="", upstream_status="")) == []


def test_assistant_request_runnable_task(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.add_task(worker="X", task_id="A", runnable=True)
    clock.set(600)
    sch.prune()
    assert sch.get_work(worker="Y", assistant=True)["task_id"] == "A"


def _prune_done_tasks(sch: SchedulerCore, clock: FakeClock, expected: list[str]) -> None:
    clock.set(0)
    sch.add_task(worker=WORKER, task_id="A", status=DONE)
    sch.add_task(worker=WORKER, task_id="B", deps=["A"], status=DONE)
    sch.add_task(worker=WORKER, task_id="C", deps=["B"])
    clock.set(600)
    sch.ping(worker="MAYBE_ASSITANT")
    sch.prune()
    clock.set(2000)
    sch.ping(worker="MAYBE_ASSITANT")
    sch.prune()
    assert set(sch.task_list("", "")) == set(expected)


def test_prune_done_tasks_not_assistant(sch: SchedulerCore, clock: FakeClock) -> None:
    _prune_done_tasks(sch, clock, [])


def test_keep_tasks_for_assistant(sch: SchedulerCore, clock: FakeClock) -> None:
    sch.get_work(worker="MAYBE_ASSITANT", assistant=True)
    _prune_done_tasks(sch, clock, [])


def test_keep_scheduler_disabled_tasks_for_assistant(sch: SchedulerCore, clock: FakeClock) -> None:
    sch.get_work(worker="MAYBE_ASSITANT", assistant=True)
    for _ in range(10):
        sch.add_task(worker=WORKER, task_id="D", status=FAILED)
    sch.add_task(worker=WORKER, task_id="E", status=DISABLED)
    assert set(sch.task_list(DISABLED, "")) == {"D", "E"}
    _prune_done_tasks(sch, clock, [])


def test_scheduler_resources_none_allow_one(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", resources={"R1": 1})
    assert sch.get_work(worker="X")["task_id"] == "A"


def test_scheduler_resources_none_disallow_two(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", resources={"R1": 2})
    assert not sch.get_work(worker="X")["task_id"]


def test_scheduler_with_insufficient_resources(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", resources={"R1": 3})
    sch.update_resources(R1=2)
    assert not sch.get_work(worker="X")["task_id"]


def test_scheduler_with_sufficient_resources(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", resources={"R1": 3})
    sch.update_resources(R1=3)
    assert sch.get_work(worker="X")["task_id"] == "A"


def test_scheduler_with_resources_used(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", resources={"R1": 1})
    assert sch.get_work(worker="X")["task_id"] == "A"
    sch.add_task(worker="Y", task_id="B", resources={"R1": 1})
    sch.update_resources(R1=1)
    assert not sch.get_work(worker="Y")["task_id"]


def test_scheduler_overprovisioned_on_other_resource(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", resources={"R1": 2})
    sch.update_resources(R1=2)
    assert sch.get_work(worker="X")["task_id"] == "A"
    sch.add_task(worker="Y", task_id="B", resources={"R2": 2})
    sch.update_resources(R1=1, R2=2)
    assert sch.get_work(worker="Y")["task_id"] == "B"


def test_scheduler_with_priority_and_competing_resources(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A")
    assert sch.get_work(worker="X")["task_id"] == "A"
    sch.add_task(worker="X", task_id="B", resources={"R": 1}, priority=10)
    sch.add_task(worker="Y", task_id="C", resources={"R": 1}, priority=1)
    sch.update_resources(R=1)
    assert not sch.get_work(worker="Y")["task_id"]
    sch.add_task(worker="Y", task_id="D", priority=0)
    assert sch.get_work(worker="Y")["task_id"] == "D"


def test_do_not_lock_resources_when_not_ready(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", priority=10)
    sch.add_task(worker="X", task_id="B", resources={"R": 1}, priority=5)
    sch.add_task(worker="Y", task_id="C", resources={"R": 1}, priority=1)
    sch.update_resources(R=1)
    sch.add_worker("X", [("workers", 1)])
    assert sch.get_work(worker="Y")["task_id"] == "C"


def test_lock_resources_when_one_of_multiple_workers_is_ready(sch: SchedulerCore) -> None:
    sch.get_work(worker="X")
    sch.add_task(worker="X", task_id="A", priority=10)
    sch.add_task(worker="X", task_id="B", resources={"R": 1}, priority=5)
    sch.add_task(worker="Y", task_id="C", resources={"R": 1}, priority=1)
    sch.update_resources(R=1)
    sch.add_worker("X", [("workers", 2)])
    sch.add_worker("Y", [])
    assert not sch.get_work(worker="Y")["task_id"]


def test_do_not_lock_resources_while_running_higher_priority(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", priority=10)
    sch.add_task(worker="X", task_id="B", resources={"R": 1}, priority=5)
    sch.add_task(worker="Y", task_id="C", resources={"R": 1}, priority=1)
    sch.update_resources(R=1)
    sch.add_worker("X", [("workers", 1)])
    assert sch.get_work(worker="X")["task_id"] == "A"
    assert sch.get_work(worker="Y")["task_id"] == "C"


def test_lock_resources_while_running_lower_priority(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", priority=4)
    assert sch.get_work(worker="X")["task_id"] == "A"
    sch.add_task(worker="X", task_id="B", resources={"R": 1}, priority=5)
    sch.add_task(worker="Y", task_id="C", resources={"R": 1}, priority=1)
    sch.update_resources(R=1)
    sch.add_worker("X", [("workers", 1)])
    assert not sch.get_work(worker="Y")["task_id"]


def test_lock_resources_for_second_worker(sch: SchedulerCore) -> None:
    sch.get_work(worker="Y")
    sch.add_task(worker="X", task_id="A", resources={"R": 1})
    sch.add_task(worker="X", task_id="B", resources={"R": 1})
    sch.add_task(worker="Y", task_id="C", resources={"R": 1}, priority=10)
    sch.add_worker("X", {"workers": 2})
    sch.add_worker("Y", {"workers": 1})
    sch.update_resources(R=2)
    assert sch.get_work(worker="X")["task_id"] == "A"
    assert not sch.get_work(worker="X")["task_id"]


def test_can_work_on_lower_priority_while_waiting_for_resources(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", resources={"R": 1}, priority=0)
    assert sch.get_work(worker="X")["task_id"] == "A"
    sch.add_task(worker="Y", task_id="B", resources={"R": 1}, priority=10)
    sch.add_task(worker="Y", task_id="C", priority=0)
    sch.update_resources(R=1)
    assert sch.get_work(worker="Y")["task_id"] == "C"


def test_priority_update_with_pruning(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.add_task(task_id="A", worker="X")
    clock.set(50)
    sch.prune()
    sch.add_task(task_id="B", deps=["A"], worker="X")
    clock.set(2000)
    sch.prune()
    sch.add_task(worker=WORKER, task_id="C", deps=["B"], priority=100)
    sch.add_task(worker=WORKER, task_id="B", deps=["A"])
    sch.add_task(worker=WORKER, task_id="A")
    sch.add_task(worker=WORKER, task_id="D", priority=10)
    check_task_order(sch, "ABCD")


def test_update_resources(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", deps=["B"])
    sch.add_task(worker=WORKER, task_id="B", resources={"r": 2})
    sch.update_resources(r=1)
    check_task_order(sch, [])
    sch.add_task(worker=WORKER, task_id="B", resources={"r": 1})
    check_task_order(sch, ["B", "A"])


def test_handle_multiple_resources(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", resources={"r1": 1, "r2": 1})
    sch.add_task(worker=WORKER, task_id="B", resources={"r1": 1, "r2": 1})
    sch.add_task(worker=WORKER, task_id="C", resources={"r1": 1})
    sch.update_resources(r1=2, r2=1)
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    check_task_order(sch, "C")


def test_single_resource_lock(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", resources={"r": 1})
    assert sch.get_work(worker="X")["task_id"] == "A"
    sch.add_task(worker=WORKER, task_id="B", resources={"r": 2}, priority=10)
    sch.add_task(worker=WORKER, task_id="C", resources={"r": 1})
    sch.update_resources(r=2)
    check_task_order(sch, [])


def test_no_lock_if_too_many_resources_required(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", resources={"r": 2}, priority=10)
    sch.add_task(worker=WORKER, task_id="B", resources={"r": 1})
    sch.update_resources(r=1)
    check_task_order(sch, "B")


def test_multiple_resources_lock(sch: SchedulerCore) -> None:
    sch.get_work(worker="X")
    sch.add_task(worker="X", task_id="A", resources={"r1": 1, "r2": 1}, priority=10)
    sch.add_task(worker=WORKER, task_id="B", resources={"r2": 1})
    sch.add_task(worker=WORKER, task_id="C", resources={"r1": 1})
    sch.update_resources(r1=1, r2=1)
    check_task_order(sch, [])


def test_multiple_resources_no_lock(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", resources={"r1": 1}, priority=10)
    sch.add_task(worker=WORKER, task_id="B", resources={"r1": 1, "r2": 1}, priority=10)
    sch.add_task(worker=WORKER, task_id="C", resources={"r2": 1})
    sch.update_resources(r1=1, r2=2)
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    check_task_order(sch, "C")


def test_allow_resource_use_while_scheduling(sch: SchedulerCore) -> None:
    sch.update_resources(r1=1)
    sch.add_task(worker="SCHEDULING", task_id="A", resources={"r1": 1}, priority=10)
    sch.add_task(worker=WORKER, task_id="B", resources={"r1": 1}, priority=1)
    assert sch.get_work(worker=WORKER)["task_id"] == "B"


def test_stop_locking_resource_for_uninterested_worker(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.update_resources(r1=1)
    assert sch.get_work(worker=WORKER)["task_id"] is None
    sch.add_task(worker=WORKER, task_id="A", resources={"r1": 1}, priority=10)
    sch.add_task(worker="LOW_PRIO", task_id="B", resources={"r1": 1}, priority=1)
    assert sch.get_work(worker="LOW_PRIO")["task_id"] is None
    clock.set(120)
    assert sch.get_work(worker="LOW_PRIO")["task_id"] == "B"


def test_priorities(sch: SchedulerCore) -> None:
    for t, p in (("A", 10), ("B", 5), ("C", 15), ("D", 9)):
        sch.add_task(worker=WORKER, task_id=t, priority=p)
    check_task_order(sch, ["C", "A", "D", "B"])


def test_priorities_default_and_negative(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", priority=10)
    sch.add_task(worker=WORKER, task_id="B")
    sch.add_task(worker=WORKER, task_id="C", priority=15)
    sch.add_task(worker=WORKER, task_id="D", priority=-20)
    sch.add_task(worker=WORKER, task_id="E", priority=1)
    check_task_order(sch, ["C", "A", "E", "B", "D"])


def test_priorities_and_dependencies(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", deps=["Z"], priority=10)
    sch.add_task(worker=WORKER, task_id="B", priority=5)
    sch.add_task(worker=WORKER, task_id="C", deps=["Z"], priority=3)
    sch.add_task(worker=WORKER, task_id="D", priority=2)
    sch.add_task(worker=WORKER, task_id="Z", priority=1)
    check_task_order(sch, ["Z", "A", "B", "C", "D"])


def test_priority_update_dependency_after_scheduling(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", priority=1)
    sch.add_task(worker=WORKER, task_id="B", priority=5, deps=["A"])
    sch.add_task(worker=WORKER, task_id="C", priority=10, deps=["B"])
    sch.add_task(worker=WORKER, task_id="D", priority=6)
    check_task_order(sch, ["A", "B", "C", "D"])


def test_priority_update_dependency_chain(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", priority=10, deps=["B"])
    sch.add_task(worker=WORKER, task_id="B", priority=5, deps=["C"])
    sch.add_task(worker=WORKER, task_id="C", priority=1)
    sch.add_task(worker=WORKER, task_id="D", priority=6)
    check_task_order(sch, ["C", "B", "A", "D"])


def test_priority_no_decrease_with_multiple_updates(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", priority=1)
    sch.add_task(worker=WORKER, task_id="B", priority=10, deps=["A"])
    sch.add_task(worker=WORKER, task_id="C", priority=5, deps=["A"])
    sch.add_task(worker=WORKER, task_id="D", priority=6)
    check_task_order(sch, ["A", "B", "D", "C"])


def _fail_three_times(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A")
    for _ in range(3):
        sch.add_task(worker=WORKER, task_id="A", status=FAILED)


def test_disable(sch: SchedulerCore) -> None:
    _fail_three_times(sch)
    assert len(sch.task_list("DISABLED", "")) == 1
    assert len(sch.task_list("FAILED", "")) == 0
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] is None


def test_disable_and_reenable(sch: SchedulerCore) -> None:
    _fail_three_times(sch)
    reply = sch.re_enable_task("A")
    assert reply["status"] == FAILED and reply["deps"] == []
    assert len(sch.task_list("DISABLED", "")) == 0
    assert len(sch.task_list("FAILED", "")) == 1
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] == "A"


def test_disable_and_reenable_and_disable_again(sch: SchedulerCore) -> None:
    _fail_three_times(sch)
    sch.re_enable_task("A")
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    assert len(sch.task_list("DISABLED", "")) == 0
    assert len(sch.task_list("FAILED", "")) == 1
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    assert len(sch.task_list("DISABLED", "")) == 1
    assert len(sch.task_list("FAILED", "")) == 0
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] is None


def test_disable_and_done(sch: SchedulerCore, clock: FakeClock) -> None:
    _fail_three_times(sch)
    sch.add_task(worker=WORKER, task_id="A", status=DONE)
    assert len(sch.task_list("DISABLED", "")) == 0
    assert len(sch.task_list("DONE", "")) == 1
    clock.t += 100  # past stable_done_cooldown_secs
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] == "A"


def test_automatic_re_enable(clock: FakeClock) -> None:
    sch = make(clock, retry_count=2, disable_persist=100)
    clock.set(0)
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    assert sch.task_list("", "")["A"]["status"] == DISABLED
    clock.set(101)
    assert sch.task_list("", "")["A"]["status"] == FAILED


def test_automatic_re_enable_with_one_failure_allowed(clock: FakeClock) -> None:
    sch = make(clock, retry_count=1, disable_persist=100)
    clock.set(0)
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    assert sch.task_list("", "")["A"]["status"] == DISABLED
    clock.set(101)
    assert sch.task_list("", "")["A"]["status"] == FAILED


def test_no_automatic_re_enable_after_manual_disable(clock: FakeClock) -> None:
    sch = make(clock, disable_persist=100)
    clock.set(0)
    sch.add_task(worker=WORKER, task_id="A", status=DISABLED)
    assert sch.task_list("", "")["A"]["status"] == DISABLED
    clock.set(101)
    assert sch.task_list("", "")["A"]["status"] == DISABLED


def test_no_automatic_re_enable_after_auto_then_manual_disable(clock: FakeClock) -> None:
    sch = make(clock, retry_count=2, disable_persist=100)
    clock.set(0)
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    assert sch.task_list("", "")["A"]["status"] == DISABLED
    sch.add_task(worker=WORKER, task_id="A", status=DISABLED)
    assert sch.task_list("", "")["A"]["status"] == DISABLED
    clock.set(101)
    assert sch.task_list("", "")["A"]["status"] == DISABLED


def test_disable_by_worker(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", status=DISABLED)
    assert len(sch.task_list("DISABLED", "")) == 1
    sch.add_task(worker=WORKER, task_id="A")
    assert len(sch.task_list("DISABLED", "")) == 0
    assert sch.get_work(worker=WORKER)["task_id"] == "A"


def test_disable_worker(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A")
    sch.disable_worker(worker=WORKER)
    work = sch.get_work(worker=WORKER)
    assert work == {
        "n_pending_tasks": 0,
        "running_tasks": [],
        "task_id": None,
        "n_unique_pending": 0,
        "worker_state": "disabled",
    }


def test_disable_worker_leaves_jobs_running(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A")
    sch.get_work(worker=WORKER)
    sch.disable_worker(worker=WORKER)
    assert list(sch.task_list("RUNNING", "")) == ["A"]
    assert list(sch.worker_list()[0]["running"]) == ["A"]


def test_disable_worker_cannot_pick_up_failed_jobs(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(0)
    sch.add_task(worker=WORKER, task_id="A")
    sch.get_work(worker=WORKER)
    sch.disable_worker(worker=WORKER)
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    clock.set(1000)
    sch.ping(worker=WORKER)
    sch.prune()
    assert sch.get_work(worker=WORKER)["task_id"] is None
    sch.add_task(worker="other_worker", task_id="B")
    assert sch.get_work(worker=WORKER)["task_id"] is None


def test_disable_worker_cannot_continue_scheduling(sch: SchedulerCore) -> None:
    sch.disable_worker(worker=WORKER)
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] is None
    assert sch.task_list("", "") == {}


@pytest.mark.parametrize(("new_status", "new_deps"), [(DONE, []), (FAILED, []), (PENDING, ["B", "C"])])
def test_disable_worker_can_finish_task(sch: SchedulerCore, new_status: str, new_deps: list[str]) -> None:
    sch.add_task(worker=WORKER, task_id="A")
    assert sch.get_work(worker=WORKER)["task_id"] == "A"
    sch.disable_worker(worker=WORKER)
    assert list(sch.task_list("RUNNING", "")) == ["A"]
    for dep in new_deps:
        sch.add_task(worker=WORKER, task_id=dep, status="PENDING")
    sch.add_task(worker=WORKER, task_id="A", status=new_status, new_deps=new_deps)
    assert not sch.task_list("RUNNING", "")
    assert list(sch.task_list(new_status, "")) == ["A"]
    assert sch.get_work(worker=WORKER)["task_id"] is None
    for task in sch.task_list("", "").values():
        assert not task["workers"]


def test_prune_worker(sch: SchedulerCore, clock: FakeClock) -> None:
    clock.set(1)
    sch.add_worker(worker=WORKER, info={})
    clock.set(10000)
    sch.prune()
    clock.set(20000)
    sch.prune()
    assert not sch.worker_list()


def test_task_list_beyond_limit(clock: FakeClock) -> None:
    sch = make(clock, max_shown_tasks=3)
    for c in "ABCD":
        sch.add_task(worker=WORKER, task_id=c)
    assert set(sch.task_list("PENDING", "", False)) == set("ABCD")
    assert sch.task_list("PENDING", "") == {"num_tasks": 4}
    assert sch.task_list("PENDING", "UPSTREAM_DISABLED") == {"num_tasks": -1}


def test_task_list_within_limit(clock: FakeClock) -> None:
    sch = make(clock, max_shown_tasks=4)
    for c in "ABCD":
        sch.add_task(worker=WORKER, task_id=c)
    assert set(sch.task_list("PENDING", "")) == set("ABCD")


def test_task_lists_some_beyond_limit(clock: FakeClock) -> None:
    sch = make(clock, max_shown_tasks=3)
    for c in "ABCD":
        sch.add_task(worker=WORKER, task_id=c, status=DONE)
    for c in "EFG":
        sch.add_task(worker=WORKER, task_id=c)
    assert set(sch.task_list("PENDING", "")) == set("EFG")
    assert sch.task_list("DONE", "") == {"num_tasks": 4}


def _add_searchable(sch: SchedulerCore, family: str, **params: str) -> str:
    task_id = hashlib.md5(f"{family}{sorted(params.items())}".encode()).hexdigest()
    sch.add_task(worker=WORKER, family=family, params=params, task_id=task_id)
    return task_id


def _search_pending(sch: SchedulerCore, term: str) -> set[str]:
    return set(sch.task_list("PENDING", "", search=term))


def test_task_list_search(sch: SchedulerCore) -> None:
    t1 = _add_searchable(sch, "MySpecialTask")
    t2 = _add_searchable(sch, "OtherSpecialTask")
    assert _search_pending(sch, "Special") == {t1, t2}
    assert _search_pending(sch, "My") == {t1}
    t3 = _add_searchable(sch, "ClassA", day="2016-02-01")
    t4 = _add_searchable(sch, "ClassB", hour="2016-02-01T12")
    assert _search_pending(sch, "day") == {t3}
    assert _search_pending(sch, "2016-02-01") == {t3, t4}
    assert _search_pending(sch, "T12") == {t4}
    assert _search_pending(sch, "day=2016") == {t3}
    assert _search_pending(sch, "classa DAY") == {t3}  # case-folded
    assert _search_pending(sch, t1) == set()  # never by task id


def test_search_results_beyond_limit(clock: FakeClock) -> None:
    sch = make(clock, max_shown_tasks=3)
    for i in range(4):
        sch.add_task(worker=WORKER, family="Test", params={"p": str(i)}, task_id="Test_%i" % i)
    assert sch.task_list("PENDING", "", search="Test") == {"num_tasks": 4}
    assert list(sch.task_list("PENDING", "", search="0")) == ["Test_0"]


def test_unique_tasks(sch: SchedulerCore) -> None:
    for t in "ABC":
        sch.add_task(worker=WORKER, task_id=t)
    sch.add_task(worker=WORKER + "_2", task_id="B")
    response = sch.get_work(worker=WORKER)
    assert response["n_pending_tasks"] == 3
    assert response["n_unique_pending"] == 2


def test_pending_downstream_disable(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", status=DISABLED)
    sch.add_task(worker=WORKER, task_id="B", deps=("A",))
    sch.add_task(worker=WORKER, task_id="C", deps=("B",))
    response = sch.get_work(worker=WORKER)
    assert response["task_id"] is None
    assert response["n_pending_tasks"] == 0
    assert response["n_unique_pending"] == 0
    # and it comes back once the disable is lifted
    sch.add_task(worker=WORKER, task_id="A", status=DONE)
    assert sch.count_pending(WORKER)["n_pending_tasks"] == 2


def test_pending_downstream_failure(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="A", status=FAILED)
    sch.add_task(worker=WORKER, task_id="B", deps=("A",))
    sch.add_task(worker=WORKER, task_id="C", deps=("B",))
    response = sch.get_work(worker=WORKER)
    assert response["task_id"] is None
    assert response["n_pending_tasks"] == 2
    assert response["n_unique_pending"] == 2


def test_task_list_no_deps(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="B", deps=("A",))
    sch.add_task(worker=WORKER, task_id="A")
    assert "deps" not in sch.task_list("PENDING", "")["A"]


def test_task_list_upstream_status(sch: SchedulerCore) -> None:
    sch.add_task(worker=WORKER, task_id="F", status=FAILED)
    sch.add_task(worker=WORKER, task_id="X", status=DISABLED)
    sch.add_task(worker=WORKER, task_id="A", deps=["F"])
    sch.add_task(worker=WORKER, task_id="B", deps=["X"])
    sch.add_task(worker=WORKER, task_id="C", deps=["A", "B"])
    sch.add_task(worker=WORKER, task_id="D", deps=["A"])
    assert set(sch.task_list(PENDING, "UPSTREAM_DISABLED")) == {"B", "C"}
    assert set(sch.task_list(PENDING, "UPSTREAM_FAILED")) == {"A", "D"}
    # non-PENDING tasks always pass the upstream filter
    assert set(sch.task_list("", "UPSTREAM_FAILED")) == {"A", "D", "F", "X"}


# ============================================================================ beyond Luigi's file


def test_rpc_methods_and_signatures_are_luigis() -> None:
    import luigi.scheduler as ls  # tests may import it; the core must not

    assert set(ls.RPC_METHODS) == RPC_METHODS
    assert len(RPC_METHODS) == 39
    for name in RPC_METHODS:
        theirs = inspect.signature(getattr(ls.Scheduler, name))
        ours = inspect.signature(getattr(SchedulerCore, name))
        assert [(p.name, p.kind, p.default) for p in theirs.parameters.values()] == [
            (p.name, p.kind, p.default) for p in ours.parameters.values()
        ], name


def test_core_module_imports_no_luigi_scheduler_and_reads_no_wall_clock() -> None:
    import ast

    import shard._index
    import shard.scheduler

    for mod in (shard.scheduler, shard._index):
        tree = ast.parse(inspect.getsource(mod))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert not (isinstance(node.func.value, ast.Name) and node.func.value.id == "time"), (
                    "wall clock"
                )
        assert not imported & {"luigi.scheduler", "luigi", "logging", "threading", "socket"}, imported


def test_get_work_reply_shape(sch: SchedulerCore) -> None:
    sch.add_task(worker="W", task_id="A", family="Fam", module="mod", params={"n": "1", "secret": "x"},
                 param_visibilities={"n": 0, "secret": 1})  # fmt: skip
    reply = sch.get_work(worker="W", host="h")
    assert reply == {
        "n_pending_tasks": 1,
        "n_unique_pending": 1,
        "n_pending_last_scheduled": 1,
        "worker_state": "active",
        "running_tasks": [],
        "task_id": "A",
        "task_family": "Fam",
        "task_module": "mod",
        "task_params": {"n": "1", "secret": "x"},  # hidden params too
    }
    listed = sch.task_list(RUNNING, "")["A"]
    assert listed["params"] == {"n": "1"} and listed["display_name"] == "Fam(n=1)"
    assert listed["resources_running"] == {} and listed["accepts_messages"] is False
    assert json.loads(json.dumps(reply)) == reply


def test_count_pending_counts_failed_and_last_scheduled(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A")
    sch.add_task(worker="Y", task_id="A")
    sch.add_task(worker="X", task_id="B")
    sch.add_task(worker="X", task_id="F", status=FAILED)
    assert sch.count_pending("X") == {
        "n_pending_tasks": 2,  # A and B; F was reported FAILED, so X is not among its workers
        "n_unique_pending": 1,
        "n_pending_last_scheduled": 1,
        "worker_state": "active",
        "running_tasks": [],
    }
    sch.add_task(worker="Y", task_id="F")  # FAILED tasks count for their workers
    assert sch.count_pending("Y")["n_pending_tasks"] == 2
    assert sch.count_pending("Y")["n_pending_last_scheduled"] == 2


def test_done_cooldown_ignores_pending_claims(sch: SchedulerCore, clock: FakeClock) -> None:
    sch.add_task(worker="X", task_id="A", status=DONE)
    clock.t += 5
    sch.add_task(worker="Y", task_id="A", status=PENDING)
    assert sch.task_list("", "")["A"]["status"] == DONE
    assert sch.task_list("", "")["A"]["workers"] == ["X"]  # the whole call was ignored: no Y
    clock.t += 10
    sch.add_task(worker="Y", task_id="A", status=PENDING)
    assert sch.task_list("", "")["A"]["status"] == PENDING


def test_forgive_failures_and_mark_as_done(sch: SchedulerCore) -> None:
    assert sch.forgive_failures("nope") == {"task_id": "nope", "status": None}
    sch.add_task(worker="X", task_id="A", status=FAILED)
    assert sch.forgive_failures("A") == {"task_id": "A", "status": PENDING}
    assert sch.forgive_failures("A") == {"task_id": "A", "status": PENDING}
    assert sch.mark_as_done("A") == {"task_id": "A", "status": PENDING}  # only RUNNING/FAILED/DISABLED
    sch.add_task(worker="X", task_id="A", status=FAILED)
    assert sch.mark_as_done("A") == {"task_id": "A", "status": DONE}


def test_retry_policy_per_task(sch: SchedulerCore) -> None:
    sch.add_task(worker="X", task_id="A", retry_policy_dict={"retry_count": 1})
    sch.add_task(worker="X", task_id="A", status=FAILED, retry_policy_dict={"retry_count": 1})
    assert sch.task_list("", "")["A"]["status"] == DISABLED
    assert sch.task_list("", "")["A"]["re_enable_able"] is True


def test_batching(sch: SchedulerCore) -> None:
    sch.add_task_batcher(worker="W", task_family="F", batched_args=["d"], max_batch_size=3)
    for i in range(5):
        sch.add_task(worker="W", task_id=f"F{i}", family="F", params={"d": str(i), "k": "v"}, batchable=True,
                     priority=10 - i, resources={"r": 1})  # fmt: skip
    sch.add_task(worker="W", task_id="other", family="F", params={"d": "9", "k": "OTHER"}, batchable=True,
                 priority=7, resources={"r": 1})  # fmt: skip
    sch.update_resource("r", 5)
    reply = sch.get_work(worker="W", host="h")
    ids = ["F0", "F1", "F2"]
    assert reply["task_id"] is None
    assert reply["batch_task_ids"] == ids
    assert reply["batch_id"] == hashlib.md5("|".join(ids).encode()).hexdigest()
    assert reply["task_params"] == {"d": ["0", "1", "2"], "k": "v"}
    assert set(sch.task_list(BATCH_RUNNING, "")) == set(ids)
    # the worker announces the combined task, which takes over the batch's resources
    sch.add_task(worker="W", task_id="F_0_2", status=RUNNING, batch_id=reply["batch_id"], family="F",
                 params={"d": "0-2", "k": "v"})  # fmt: skip
    assert sch.get_running_task_resources("F_0_2") == {"taskId": "F_0_2", "resources": {"r": 1}}
    sch.set_task_status_message("F_0_2", "half way")
    assert sch.get_task_status_message("F1") == {"taskId": "F1", "statusMessage": "half way"}
    sch.decrease_running_task_resources("F_0_2", {"r": 5})
    assert sch.get_running_task_resources("F1")["resources"] == {"r": 0}
    sch.add_task(worker="W", task_id="F_0_2", status=DONE)
    assert {t for t, v in sch.task_list("", "").items() if v["status"] == DONE} == set(ids) | {"F_0_2"}
    reply = sch.get_work(worker="W")  # the next batch: "other" has another unbatched param
    assert reply["batch_task_ids"] == ["F3", "F4"] and reply["task_params"] == {"d": ["3", "4"], "k": "v"}
    assert sch.task_list("", "")["other"]["status"] == PENDING


def test_batch_runner_failure_fans_out_and_is_removed(sch: SchedulerCore) -> None:
    sch.add_task_batcher(worker="W", task_family="F", batched_args=["d"])
    for i in range(2):
        sch.add_task(worker="W", task_id=f"F{i}", family="F", params={"d": str(i)}, batchable=True)
    reply = sch.get_work(worker="W")
    sch.add_task(worker="W", task_id="R", status=RUNNING, batch_id=reply["batch_id"], family="F")
    sch.add_task(worker="W", task_id="R", status=FAILED)
    assert sch.get_task("R").status == FAILED  # type: ignore[union-attr]
    # the batch runner (not batchable) was marked for removal at once: the read's prune drops it
    statuses = {t: v["status"] for t, v in sch.task_list("", "").items()}
    assert statuses == {"F0": FAILED, "F1": FAILED}


def test_orphaned_batch_running_tasks_go_back_to_pending(sch: SchedulerCore) -> None:
    sch.add_task_batcher(worker="W", task_family="F", batched_args=["d"])
    for i in range(2):
        sch.add_task(worker="W", task_id=f"F{i}", family="F", params={"d": str(i)}, batchable=True)
    first = sch.get_work(worker="W")["batch_id"]
    sch.pause()  # so that the same call does not hand the batch out again
    assert sch.get_work(worker="W", current_tasks=[])["task_id"] is None  # the runner never showed up
    assert set(sch.task_list(PENDING, "")) == {"F0", "F1"}
    sch.unpause()
    assert sch.get_work(worker="W", current_tasks=[])["batch_id"] == first


def test_add_task_running_with_unknown_batch_is_refused_whole(sch: SchedulerCore) -> None:
    before = sch.snapshot()
    with pytest.raises(ValueError):
        sch.add_task(worker="W", task_id="R", status=RUNNING, batch_id="nope")
    assert sch.snapshot() == before


def test_pause(clock: FakeClock) -> None:
    sch = make(clock)
    sch.add_task(worker="W", task_id="A")
    sch.pause()
    assert sch.is_paused() == {"paused": True}
    reply = sch.get_work(worker="W")
    assert reply["task_id"] is None and reply["n_pending_tasks"] == 1
    sch.unpause()
    assert sch.get_work(worker="W")["task_id"] == "A"
    off = make(clock, pause_enabled=False)
    off.pause()
    assert off.is_paused() == {"paused": False} and off.is_pause_enabled() == {"enabled": False}


def test_messages(sch: SchedulerCore) -> None:
    sch.new_message_id = lambda: "mid"
    sch.add_task(worker="W", task_id="A", accepts_messages=True)
    assert sch.get_work(worker="W")["task_id"] == "A"
    assert sch.send_scheduler_message("W", "A", "hello") == {"message_id": "mid"}
    sch.set_worker_processes("W", 3)
    assert sch.worker_list()[0]["num_unread_rpc_messages"] == 2
    assert sch.ping(worker="W") == {
        "rpc_messages": [
            {
                "name": "dispatch_scheduler_message",
                "kwargs": {"task_id": "A", "message_id": "mid", "content": "hello"},
            },
            {"name": "set_worker_processes", "kwargs": {"n": 3}},
        ]
    }
    assert sch.ping(worker="W") == {"rpc_messages": []}
    sch.add_scheduler_message_response("A", "mid", "world")
    assert sch.get_scheduler_message_response("A", "mid") == {"response": "world"}
    assert sch.get_scheduler_message_response("A", "mid") == {"response": None}
    assert make(FakeClock(), send_messages=False).send_scheduler_message("W", "A", "x") == {
        "message_id": None
    }


def test_resources_and_update_resource(clock: FakeClock) -> None:
    sch = make(clock, resources={"db": 2})
    assert sch.update_resource("db", "3") is False
    assert sch.update_resource("db", -1) is False
    assert sch.update_resource("cpu", 4) is True
    sch.add_task(worker="W", task_id="A", resources={"db": 1, "cpu": 2})
    sch.get_work(worker="W")
    lst = sch.resource_list()
    assert [(r["name"], r["num_total"], r["num_used"], r["num_consumer"]) for r in lst] == [
        ("db", 2, 1, 1),
        ("cpu", 4, 2, 1),
    ]
    assert set(lst[0]["running"]) == {"A"}
    sch.decrease_running_task_resources("A", {"db": 5, "cpu": 1})
    assert sch.get_running_task_resources("A") == {"taskId": "A", "resources": {"db": 0, "cpu": 1}}
    assert sch.get_running_task_resources("zz") == {"taskId": "zz", "resources": None}


def test_fetch_error_and_status_messages(sch: SchedulerCore) -> None:
    assert sch.fetch_error("zz") == {"taskId": "zz", "error": ""}
    sch.add_task(worker="W", task_id="A", family="F", module="m", params={"a": "1"}, status=FAILED,
                 expl='"boom"')  # fmt: skip
    assert sch.fetch_error("A") == {
        "taskId": "A",
        "error": '"boom"',
        "displayName": "F(a=1)",
        "taskParams": {"a": "1"},
        "taskModule": "m",
        "taskFamily": "F",
    }
    assert sch.get_task_status_message("zz") == {"taskId": "zz", "statusMessage": ""}
    assert sch.get_task_progress_percentage("zz") == {"taskId": "zz", "progressPercentage": None}
    sch.set_task_progress_percentage("A", 50)
    assert sch.get_task_progress_percentage("A") == {"taskId": "A", "progressPercentage": 50}


def test_graphs(clock: FakeClock) -> None:
    sch = make(clock, max_graph_nodes=100)
    sch.add_task(worker="W", task_id="C", family="C", deps=["B", "Ext_2024_x"])
    sch.add_task(worker="W", task_id="B", family="B", deps=["A"])
    sch.add_task(worker="W", task_id="A", family="A", status=DONE)
    g = sch.dep_graph("C")
    assert set(g) == {"C", "B", "A", "Ext_2024_x"}
    assert g["C"]["display_name"] == "C()" and "display_name" not in g["B"]
    assert sorted(g["C"]["deps"]) == ["B", "Ext_2024_x"]
    assert g["Ext_2024_x"] == {
        "deps": [],
        "status": UNKNOWN,
        "workers": [],
        "start_time": UNKNOWN,
        "params": {"task_id": "Ext_2024_x"},
        "name": "Ext",
        "priority": 0,
    }
    assert set(sch.dep_graph("C", include_done=False)) == {"C", "B", "Ext_2024_x"}
    assert sch.dep_graph("nope") == {}
    inv = sch.inverse_dep_graph("A")
    assert set(inv) == {"A", "B", "C"} and inv["A"]["deps"] == ["B"]
    assert set(sch.graph()) == {"A", "B", "C", "Ext_2024_x"}
    assert set(sch.task_search("B")) == {PENDING}
    small = make(clock, max_graph_nodes=2)
    small.add_task(worker="W", task_id="C", family="C", deps=["B"])
    small.add_task(worker="W", task_id="B", family="B", deps=["A"])
    assert len(small.dep_graph("C")) == 2


def test_worker_list(sch: SchedulerCore, clock: FakeClock) -> None:
    sch.add_worker("X", [["host", "hx"], ["first_task", "A"]])
    clock.t += 1
    sch.add_task(worker="Y", task_id="A", family="Fam", params={"p": "1"})
    sch.add_task(worker="X", task_id="A")
    sch.add_task(worker="X", task_id="B")
    sch.get_work(worker="X")
    wl = sch.worker_list()
    assert [w["name"] for w in wl] == ["Y", "X"]  # newest first
    x = wl[1]
    assert x["host"] == "hx" and x["first_task_display_name"] == "Fam(p=1)" and x["state"] == "active"
    assert (x["num_running"], x["num_pending"], x["num_uniques"]) == (1, 1, 1)
    assert list(x["running"]) == ["A"]
    assert wl[0]["num_pending"] == 0
    assert "running" not in sch.worker_list(include_running=False)[0]


def test_events(sch: SchedulerCore, clock: FakeClock) -> None:
    sch.collect_changes()
    sch.add_task(worker="W", task_id="B", deps=["A"])
    sch.add_task(worker="W", task_id="A")
    sch.get_work(worker="W", host="h1")
    sch.get_work(worker="W", host="h2", current_tasks=[])  # re-send: one more RUNNING hand-out
    sch.add_task(worker="W", task_id="A", status=DONE)
    events = [(e.task_id, e.status, e.worker, e.host) for e in sch.collect_changes().events]
    assert events == [
        ("B", PENDING, "W", None),  # created
        ("A", UNKNOWN, "W", None),  # placeholder created
        ("A", PENDING, "W", None),
        ("A", RUNNING, "W", "h1"),
        ("A", RUNNING, "W", "h2"),
        ("A", DONE, "W", None),
    ]
    assert sch.collect_changes().is_empty()


def test_statuses_are_luigis() -> None:
    import luigi.task_status

    names = ["PENDING", "FAILED", "DONE", "RUNNING", "BATCH_RUNNING", "SUSPENDED", "UNKNOWN", "DISABLED"]
    assert [getattr(shard.scheduler, n) for n in names] == [getattr(luigi.task_status, n) for n in names]


def test_importing_the_core_loads_no_io_library_and_not_luigi() -> None:
    """The core is pure: no zmq, msgpack, sqlalchemy; and not luigi, whose __init__ loads tornado."""
    code = (
        "import sys, shard.scheduler, shard.federated; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'zmq', 'msgpack', 'sqlalchemy', 'psycopg2', 'tornado', 'luigi', 'textual'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_federation_hooks(clock: FakeClock) -> None:
    sch = make(clock, resources={"r": 1})
    sch.add_task(worker="W", task_id="A", resources={"r": 1})
    sch.external_used_resources = {"r": 1}
    assert sch.get_work(worker="W")["task_id"] is None
    sch.external_used_resources = {}
    sch.add_task(worker="W", task_id="B", deps=["Remote"])
    sch.force_status("Remote", DONE)
    sch.collect_changes()
    assert sch.get_task("Remote").status == DONE  # type: ignore[union-attr]
    assert sch.get_work(worker="W")["task_id"] == "A"
    assert sch.get_work(worker="W")["task_id"] == "B"
    sch.collect_changes()
    sch.force_status("New", DONE)
    ch = sch.collect_changes()
    assert "New" in ch.tasks and not ch.events
    sch.raise_priority("B", 50)
    assert sch.task_list("", "")["B"]["priority"] == 50
    sch.collect_changes()
    sch.update_fed("B", {"mirror": True})
    assert sch.collect_changes().tasks["B"]["fed"] == {"mirror": True}
    sch.update_fed("B", {"epoch": 2.5, "seq": 7})
    assert sch.collect_changes().tasks["B"]["fed"] == {"mirror": True, "epoch": 2.5, "seq": 7}
    sch.update_fed("Nope", {"seq": 1})  # a missing task: nothing to record
    assert sch.collect_changes().is_empty()


def test_federation_queries(clock: FakeClock) -> None:
    sch = make(clock, resources={"r": 2})
    sch.add_task(worker="W", task_id="A", resources={"r": 1}, family="Fam")
    sch.add_task(worker="V", task_id="B", deps=["Remote"], family="Fam")
    sch.add_task(worker="V", task_id="C", deps=["B"], family="Fam")
    assert [t.id for t in sch.tasks()] == ["A", "B", "Remote", "C"]  # creation order
    assert sch.worker_ids() == ["W", "V"]
    assert sch.used_resources() == {}
    assert sch.get_work(worker="W")["task_id"] == "A"
    used = sch.used_resources()
    assert used == {"r": 1}
    used["r"] = 99  # a copy: the core's own view is unchanged
    assert sch.used_resources() == {"r": 1}

    # upstream_disabled: empty without DISABLED tasks, then cached (same object) until a change
    assert not sch.upstream_disabled()
    sch.force_status("Remote", DISABLED)
    ud = sch.upstream_disabled()
    assert ud == {"B", "C"}
    assert sch.upstream_disabled() is ud
    sch.force_status("Remote", DONE)
    assert not sch.upstream_disabled()

    # dependents_graph: Luigi's inverse_dep_graph for a task, and walks on from a placeholder
    assert sch.dependents_graph("B") == sch.inverse_dep_graph("B")
    g = sch.dependents_graph("Remote")
    assert g["Remote"]["deps"] == ["B"] and g["Remote"]["status"] == UNKNOWN  # shown as Luigi shows it
    assert set(g) == {"Remote", "B", "C"} and g["B"]["deps"] == ["C"]
    assert "display_name" in g["Remote"] and "display_name" not in g["B"]
    assert sch.inverse_dep_graph("Remote")["Remote"]["deps"] == []  # Luigi stops at a placeholder
    assert sch.dependents_graph("Missing") == {}


# ============================================================================ random states

STATUSES = [PENDING, PENDING, PENDING, DONE, FAILED, RUNNING, DISABLED, UNKNOWN]
SIGS: list[dict[str, int] | None] = [None, None, {}, {"r": 1}, {"r": 2}, {"q": 1}, {"r": 1, "q": 1}]


def random_ops(
    rnd: random.Random, n: int, ids: list[str], workers: list[str]
) -> list[tuple[float, str, dict[str, Any]]]:
    """A random but valid call sequence (DAG deps: a task depends only on later ids)."""
    ops: list[tuple[float, str, dict[str, Any]]] = []
    dt_choices = [0.001, 0.5, 1, 3, 11, 50, 120, 1100]
    for step in range(n):
        dt = rnd.choice(dt_choices)
        w = rnd.choice(workers)
        r = rnd.random()
        tid = rnd.choice(ids)
        later = ids[ids.index(tid) + 1 :]
        if r < 0.4:
            kw: dict[str, Any] = {"task_id": tid, "worker": w}
            if rnd.random() < 0.5:
                kw["status"] = rnd.choice(STATUSES + ["SUSPENDED"])
            if later and rnd.random() < 0.4:
                kw["deps"] = rnd.sample(later, min(len(later), rnd.randint(0, 2)))
            if later and rnd.random() < 0.1:
                kw["new_deps"] = rnd.sample(later, 1)
            if rnd.random() < 0.3:
                kw["priority"] = rnd.randint(-2, 5)
            if rnd.random() < 0.4:
                kw["resources"] = rnd.choice(SIGS)
            if rnd.random() < 0.2:
                kw["runnable"] = rnd.choice([True, False, None])
            if rnd.random() < 0.08:
                kw["assistant"] = True
            if rnd.random() < 0.8:
                kw["family"] = rnd.choice(["F", "F", "G"])
                kw["params"] = {"p": str(rnd.randint(0, 3)), "k": "v"}
            if rnd.random() < 0.5:
                kw["batchable"] = rnd.random() < 0.7
            if rnd.random() < 0.2:
                kw["tracking_url"] = "u%d" % rnd.randint(0, 3)
            if rnd.random() < 0.1:
                kw["retry_policy_dict"] = {"retry_count": rnd.randint(1, 3)}
            ops.append((dt, "add_task", kw))
        elif r < 0.62:
            kw = {"worker": w, "host": "h" + w}
            if rnd.random() < 0.15:
                kw["assistant"] = True
            if rnd.random() < 0.25:
                kw["current_tasks"] = rnd.sample(ids, rnd.randint(0, 2))
            ops.append((dt, "get_work", kw))
        else:
            choice = rnd.choice(
                [
                    ("ping", {"worker": w}),
                    ("prune", {}),
                    ("add_worker", {"worker": w, "info": {"workers": rnd.randint(1, 3)}}),
                    ("add_worker", {"worker": w, "info": [["assistant", True]]}),
                    ("count_pending", {"worker": w}),
                    ("re_enable_task", {"task_id": tid}),
                    ("forgive_failures", {"task_id": tid}),
                    ("mark_as_done", {"task_id": tid}),
                    ("update_resource", {"resource": rnd.choice("rq"), "amount": rnd.randint(0, 3)}),
                    ("add_task_batcher", {"worker": w, "task_family": "F", "batched_args": ["p"],
                                          "max_batch_size": rnd.choice([2, 3, float("inf")])}),
                    ("set_task_status_message", {"task_id": tid, "status_message": f"m{step}"}),
                    ("decrease_running_task_resources", {"task_id": tid, "decrease_resources": {"r": 1}}),
                    ("send_scheduler_message", {"worker": w, "task": tid, "content": "c"}),
                    ("add_scheduler_message_response", {"task_id": tid, "message_id": "m", "response": "r"}),
                    ("pause", {}),
                    ("unpause", {}),
                    ("task_list", {"status": "", "upstream_status": ""}),
                    ("disable_worker", {"worker": w}) if rnd.random() < 0.2 else ("ping", {"worker": w}),
                ]
            )  # fmt: skip
            ops.append((dt, choice[0], choice[1]))
    return ops


def all_reads(sch: SchedulerCore, ids: list[str], workers: list[str]) -> Any:
    """Every read method (they prune, so call them on both sides of a comparison)."""
    out: dict[str, Any] = {
        "task_list": sch.task_list("", ""),
        "upstream": sch.task_list(PENDING, "UPSTREAM_DISABLED"),
        "search": sch.task_list("", "", search="F p=1"),
        "worker_list": sch.worker_list(),
        "resource_list": sch.resource_list(),
        "graph": sch.graph(),
        "task_search": sch.task_search("T"),
        "paused": sch.is_paused(),
    }
    for t in ids:
        out["dep_" + t] = sch.dep_graph(t)
        out["inv_" + t] = sch.inverse_dep_graph(t, include_done=False)
        out["err_" + t] = sch.fetch_error(t)
        out["res_" + t] = sch.get_running_task_resources(t)
        out["msg_" + t] = sch.get_task_status_message(t)
    for w in workers:
        out["count_" + w] = sch.count_pending(w)
    return json.loads(json.dumps(out))


def check_invariants(sch: SchedulerCore) -> None:
    """Recompute every index from the tasks and workers and compare."""
    tasks = sch._tasks
    for status, bucket in sch._by_status.items():
        assert all(t.status == status for t in bucket.values())
        seqs = [t.seq for t in bucket.values()]
        assert seqs == sorted(seqs)
    assert sum(len(b) for b in sch._by_status.values()) == len(tasks)
    rdeps: dict[str, set[str]] = defaultdict(set)
    for t in tasks.values():
        for d in t.deps:
            rdeps[d].add(t.id)
        assert t.nd == sum(1 for d in t.deps if d not in tasks or tasks[d].status != DONE), t.id
        assert t.sig == _sig(t.resources)
    assert {k: v for k, v in sch._rdeps.items() if v} == dict(rdeps)
    wtasks: dict[str, set[str]] = defaultdict(set)
    wstake: dict[str, set[str]] = defaultdict(set)
    cnt: dict[str, list[int]] = defaultdict(lambda: [0] * 7)
    wrun: dict[str, set[str]] = defaultdict(set)
    active: dict[Any, set[str]] = defaultdict(set)
    batch: dict[Any, set[str]] = defaultdict(set)
    for t in tasks.values():
        ws = list(t.workers)
        for g in ws:
            wtasks[g].add(t.id)
            assert g in sch._workers
            if t.status in (PENDING, FAILED):
                i = 0 if t.status == PENDING else 1
                cnt[g][i] += 1
                cnt[g][2 + i] += len(ws) == 1
                cnt[g][4 + i] += ws[-1] == g
                cnt[g][6] += t.status == PENDING and bool(t.resources)
            if t.status == RUNNING:
                wrun[g].add(t.id)
        for g in t.stakeholders:
            wstake[g].add(t.id)
        if t.status in (RUNNING, BATCH_RUNNING):
            active[t.worker_running].add(t.id)
        if t.status == BATCH_RUNNING:
            batch[t.batch_id].add(t.id)
    assert {k: v for k, v in sch._wtasks.items() if v} == dict(wtasks)
    assert {k: v for k, v in sch._wstake.items() if v} == dict(wstake)
    assert {k: v for k, v in sch._wcnt.items() if any(v)} == {k: v for k, v in cnt.items() if any(v)}
    assert {k: v for k, v in sch._wrun.items() if v} == dict(wrun)
    assert sch._active_by_wr == dict(active)
    assert sch._batch == dict(batch)
    assert sch._orphans == {t.id for t in tasks.values() if not t.stakeholders and t.remove is None}
    # ready queues: exactly the ready tasks, in exactly their queues, with their current key
    expected: dict[int, set[str]] = defaultdict(set)
    for t in tasks.values():
        if t.status == PENDING and t.nd == 0:
            qs = [sch._gq[(bool(t.runnable), t.sig)], sch._fq[t.family]] + [
                sch._wq[g][t.sig] for g in t.workers
            ]
            for q in qs:
                assert q.members[t.id][:3] == (-t.priority, t.time, t.seq)
                expected[id(q)].add(t.id)
        else:
            assert not t.queued
    all_queues = (
        list(sch._gq.values()) + list(sch._fq.values()) + [q for m in sch._wq.values() for q in m.values()]
    )
    for q in all_queues:
        assert set(q.members) == expected.get(id(q), set())
    if sch._ud is not None:
        fresh = SchedulerCore(sch._config, clock=sch._clock)
        fresh.restore(sch.snapshot())
        assert fresh._upstream_disabled() == sch._ud


def apply_changes(store: dict[str, Any], ch: Changes) -> None:
    for tid, rec in ch.tasks.items():
        store["tasks"][tid] = rec
    for tid in ch.deleted_tasks:
        store["tasks"].pop(tid, None)
    for wid, rec in ch.workers.items():
        store["workers"][wid] = rec
    for wid in ch.deleted_workers:
        store["workers"].pop(wid, None)
    store["meta"].update(ch.meta)
    for e in ch.events:
        store["last_event"][e.task_id] = e.status


def run_op(sch: SchedulerCore, name: str, kw: dict[str, Any]) -> Any:
    try:
        return json.loads(json.dumps(getattr(sch, name)(**kw)))
    except (TypeError, ValueError) as e:  # e.g. RUNNING with a batch id that is gone
        return repr(e)


@pytest.mark.parametrize("seed", range(12))
def test_random_round_trip_changes_and_invariants(seed: int) -> None:
    rnd = random.Random(seed)
    ids = [f"T{i}" for i in range(rnd.randint(4, 9))]
    workers = ["X", "Y", "Z"]
    clock = FakeClock(tick=0.0)
    a = make(clock, resources={"r": 2})
    a.new_message_id = lambda: "m"
    store: dict[str, Any] = {"tasks": {}, "workers": {}, "meta": {}, "last_event": {}}
    b: SchedulerCore | None = None
    for i, (dt, name, kw) in enumerate(random_ops(rnd, 250, ids, workers)):
        clock.t += dt
        ra = run_op(a, name, kw)
        if b is not None:
            assert run_op(b, name, kw) == ra, (i, name, kw)
        apply_changes(store, a.collect_changes())
        if b is not None:
            b.collect_changes()
        if i % 25 == 24:
            check_invariants(a)
            snap = a.snapshot()
            # the change log replayed into a store gives exactly the snapshot
            assert store["tasks"] == {r["task_id"]: r for r in snap.tasks}
            assert store["workers"] == {r["worker_id"]: r for r in snap.workers}
            assert {k: store["meta"].get(k, v) for k, v in snap.meta.items()} == snap.meta
            for tid, rec in store["tasks"].items():
                assert store["last_event"][tid] == rec["status"], tid
            # restore(snapshot()) answers everything the same, and goes on the same
            b = make(clock, resources={"r": 2})
            b.new_message_id = lambda: "m"
            b.restore(Snapshot(tasks=list(snap.tasks), workers=list(snap.workers), meta=dict(snap.meta)))
            check_invariants(b)
            assert b.snapshot() == snap
            assert all_reads(b, ids, workers) == all_reads(a, ids, workers)
            apply_changes(store, a.collect_changes())
            b.collect_changes()


def test_restore_gives_unknown_workers_a_record_so_they_time_out(clock: FakeClock) -> None:
    a = make(clock)
    a.add_task(worker="W", task_id="A")
    snap = a.snapshot()
    b = make(clock)
    b.restore(Snapshot(tasks=snap.tasks, workers=[], meta=snap.meta))  # a hand-over without workers
    assert [w["name"] for w in b.worker_list()] == ["W"]
    assert b.count_pending("W")["n_pending_tasks"] == 1
    clock.t += 3600
    b.prune()
    assert b.worker_list() == [] and b.task_list("", "")["A"]["workers"] == []


# ---------------------------------------------------------------------------- the greedy walk


def reference_pick(sch: SchedulerCore, worker_id: str, assistant: bool) -> str | None:
    """Luigi's get_work candidate walk, ported verbatim, over the core's own data."""
    state_tasks = sch._by_status
    w = sch._workers[worker_id]
    if sch._paused:
        return None
    caps = sch._resources

    def has_resources(needed: dict[str, Any], used: dict[str, Any]) -> bool:
        return all(amount + used[r] <= caps.get(r, 1) for r, amount in needed.items())

    my_pending = [t for t in state_tasks[PENDING].values() if worker_id in t.workers]
    trivial = not w.info.get("assistant", False) and all(not t.resources for t in my_pending)
    greedy_resources: dict[str, Any] = defaultdict(int)
    if trivial:
        relevant = [t for s in (PENDING, RUNNING) for t in state_tasks[s].values() if worker_id in t.workers]
        used: dict[str, Any] = defaultdict(int)
        greedy_workers: dict[str, Any] = {}
    else:
        relevant = [t for s in (PENDING, RUNNING) for t in state_tasks[s].values()]
        used = defaultdict(int)
        for t in state_tasks[RUNNING].values():
            for r, a in (t.resources_running if t.resources_running is not None else t.resources).items():
                used[r] += a
        limit = sch._now - sch._config.worker_disconnect_delay
        greedy_workers = {
            g.id: g.info.get("workers", 1)
            for g in sch._workers.values()
            if g.last_get_work is not None and g.last_get_work > limit
        }
    relevant.sort(key=lambda t: (t.priority, -t.time), reverse=True)

    def schedulable(t: Any) -> bool:
        return t.status == PENDING and all(d in sch._tasks and sch._tasks[d].status == DONE for d in t.deps)

    for task in relevant:
        if task.status == RUNNING and task.worker_running in greedy_workers:
            greedy_workers[task.worker_running] -= 1
            rr = task.resources_running if task.resources_running is not None else task.resources
            for r, a in rr.items():
                greedy_resources[r] += a
        if schedulable(task) and has_resources(task.resources, greedy_resources):
            in_workers = (assistant and task.runnable) or worker_id in task.workers
            if in_workers and has_resources(task.resources, used):
                return task.id
            workers = list(task.workers) + [worker_id] if assistant else list(task.workers)
            for tw in workers:
                if greedy_workers.get(tw, 0) > 0:
                    greedy_workers[tw] -= 1
                    for r, a in task.resources.items():
                        greedy_resources[r] += a
                    break
    return None


@pytest.mark.parametrize("seed", range(40))
def test_greedy_walk_matches_luigis_full_walk(seed: int) -> None:
    rnd = random.Random(1000 + seed)
    clock = FakeClock(tick=0.0)
    sch = make(
        clock, worker_disconnect_delay=60.0, resources={"r": rnd.randint(1, 3), "q": rnd.randint(0, 2)}
    )
    workers = [f"W{i}" for i in range(rnd.randint(2, 6))]
    for w in workers:
        sch.add_worker(w, {"workers": rnd.randint(1, 3)})
        if rnd.random() < 0.2:
            sch.add_worker(w, {"assistant": True})
    n = rnd.randint(10, 60)
    ids = [f"T{i:02d}" for i in range(n)]
    for tid in ids:
        clock.t += rnd.choice([0.0, 0.001, 1.0])  # ties on time too
        owners = rnd.sample(workers, rnd.randint(1, min(3, len(workers))))
        later = ids[ids.index(tid) + 1 :]
        deps = rnd.sample(later, min(len(later), rnd.choice([0, 0, 0, 1, 2])))
        res = rnd.choice([{}, {}, {}, {"r": 1}, {"r": 2}, {"q": 1}, {"r": 1, "q": 1}])
        prio = rnd.choice([0, 0, 1, 5])
        for w in owners:
            sch.add_task(worker=w, task_id=tid, deps=deps, resources=res, priority=prio,
                         runnable=rnd.random() < 0.9)  # fmt: skip
    for tid in rnd.sample(ids, n // 3):
        sch.add_task(worker=rnd.choice(workers), task_id=tid, status=DONE)
    for _ in range(rnd.randint(0, 6)):  # some RUNNING tasks, handed out the normal way
        clock.t += 1
        sch.get_work(worker=rnd.choice(workers))
    for _ in range(10):
        w = rnd.choice(workers + ["Assist"])
        assistant = w == "Assist" or rnd.random() < 0.1
        clock.t += rnd.choice([1, 5])
        probe = SchedulerCore(sch._config, clock=clock)
        probe.restore(sch.snapshot())
        probe._now = clock.t
        pw = probe._update_worker(w, {"host": None}, get_work=True)
        if assistant:
            pw.info["assistant"] = True
        expected = reference_pick(probe, w, assistant)
        got = sch.get_work(worker=w, assistant=assistant)["task_id"]
        assert got == expected, (seed, w, assistant)
        if got is not None and rnd.random() < 0.5:
            sch.add_task(worker=w, task_id=got, status=DONE)


# ---------------------------------------------------------------------------- bad arguments

BAD_CALLS: list[tuple[str, dict[str, Any], type[Exception]]] = [
    ("add_task", {"task_id": 5, "worker": "W"}, TypeError),
    ("add_task", {"task_id": "A"}, TypeError),  # no worker
    ("add_task", {"task_id": "A", "worker": "W", "deps": "abc"}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "deps": ["B", 3]}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "new_deps": "B"}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "priority": "x"}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "priority": float("nan")}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "priority": True}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "status": "BOGUS"}, ValueError),
    ("add_task", {"task_id": "A", "worker": "W", "resources": {"r": "1"}}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "resources": ["r"]}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "params": ["p"]}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "param_visibilities": {"p": "0"}}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "retry_policy_dict": {"bogus": 1}}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "retry_policy_dict": {"retry_count": "3"}}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "batchable": "yes"}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "family": 3}, TypeError),
    ("add_task", {"task_id": "A", "worker": "W", "status": RUNNING, "batch_id": "gone"}, ValueError),
    ("get_work", {}, TypeError),
    ("get_work", {"worker": "W", "current_tasks": "A"}, TypeError),
    ("get_work", {"worker": "W", "host": 5}, TypeError),
    ("ping", {}, TypeError),
    ("count_pending", {"worker": 5}, TypeError),
    ("count_pending", {"worker": "W", "extra": 1}, TypeError),
    ("add_worker", {"worker": "W", "info": "x"}, TypeError),
    ("add_worker", {"worker": "W", "info": [["name", "x"]]}, ValueError),
    ("add_worker", {"worker": "W", "info": {"workers": "3"}}, TypeError),
    ("update_resources", {"r": "x"}, TypeError),
    ("update_resource", {"resource": "r", "amount": 1, "bogus": 1}, TypeError),
    ("set_worker_processes", {"worker": "W", "n": "3"}, TypeError),
    ("task_list", {"max_shown_tasks": "3"}, TypeError),
    ("task_list", {"status": 3}, TypeError),
    ("add_task_batcher", {"worker": "W", "task_family": "F", "batched_args": "p"}, TypeError),
    ("re_enable_task", {"task_id": "A", "x": 1}, TypeError),
    ("decrease_running_task_resources", {"task_id": "A", "decrease_resources": {"r": "1"}}, TypeError),
    ("dep_graph", {"task_id": 3}, TypeError),
    ("update_metrics_task_started", {"task": 3}, TypeError),
    ("pause", {"x": 1}, TypeError),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "exc"), BAD_CALLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)]
)
def test_bad_arguments_change_nothing(clock: FakeClock, name: str, kwargs: dict[str, Any], exc: type) -> None:
    sch = make(clock)
    sch.add_task(worker="W", task_id="A", deps=["B"], resources={"r": 1})
    sch.add_task(worker="W", task_id="B")
    sch.get_work(worker="W")
    sch.collect_changes()
    before = sch.snapshot()
    clock.t += 100  # a state change would also show up as a new timestamp
    with pytest.raises(exc):
        getattr(sch, name)(**kwargs)
    assert sch.snapshot() == before
    assert sch.collect_changes().is_empty()


def test_unknown_kwargs_accepted_where_luigi_has_kwargs(sch: SchedulerCore) -> None:
    sch.add_task(worker="W", task_id="A", some_future_field=1)
    assert sch.get_work(worker="W", whatever=2)["task_id"] == "A"
    assert sch.task_list(status="", upstream_status="", foo=1)
    sch.add_worker("W", {}, extra=True)
    assert sch.ping(worker="W", extra=1) == {"rpc_messages": []}
    assert sch.fetch_error("A", extra=1)["taskId"] == "A"
    assert sch.update_metrics_task_started({"task_id": "A"}) is None
    assert sch.report_task_statistics("A", {"x": 1}) is None
    assert sch.announce_scheduling_failure("n", "F", {}, "e", [], worker="W") is None
    assert sch.has_task_history() is False
