"""The change feed's bounded memory against the real router: a cursor older than a forgotten
deletion makes the router resynchronise, and the deletion still reaches the mirrors.

Real shards (``ShardServer`` without a socket, SQLite stores, ``FederatedCore``) and the real
router logic on the in-process pool (``router.core.InProcRouter``), one fake clock for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.config import SchedulerConfig
from router.core import FakeClock
from router.links import LinkState
from tests.inproc_federation import InProcFederation

IDS = ["s0", "s1"]
W = "worker-b"  # adds B (on s1), which needs A (on s0)
W0 = "worker-a"  # adds A on s0, then goes away: A is removed there


class Fed(InProcFederation):
    def __init__(self, tmp_path: Path) -> None:
        clock = FakeClock()  # one clock: the shards' scheduler time and the router's
        scheduler = SchedulerConfig(worker_disconnect_delay=10.0, remove_delay=10.0)
        super().__init__(tmp_path, IDS, scheduler, clock=clock, shard_clock=clock)

    def pass_time(self, seconds: float) -> None:
        """Time passes; W keeps polling (stays alive), W0 does not; every shard prunes."""
        self.clock.advance(seconds)
        self.call("ping", worker=W)
        self.call("prune")


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Fed]:
    f = Fed(tmp_path)
    try:
        yield f
    finally:
        f.close()


def mirror_status(fed: Fed, sid: str, task_id: str) -> str | None:
    rows = fed.core(sid).task_list("", "")
    return rows[task_id]["status"] if task_id in rows else None


def test_a_forgotten_deletion_makes_the_router_resync_and_still_reaches_the_mirror(fed: Fed) -> None:
    a, b = fed.task_on("s0", "a"), fed.task_on("s1", "b")
    fed.call("add_task", task_id=a, worker=W0, family="T")
    fed.pass_time(15)  # W0 is gone: A has no stakeholder left, it is due for removal
    # W is A's stakeholder from now on (on s0 too), but as in Luigi A stays due for removal
    fed.call("add_task", task_id=b, worker=W, family="T", deps=[a])
    assert mirror_status(fed, "s1", a) == "PENDING"  # s1 mirrors A
    relay = fed.router.core.relay
    assert relay.mirrors_of(a) == {"s1"}

    # s0 keeps no deletion at all: the router's cursor falls behind the feed's floor at once
    fed.core("s0").feed_max_deletions = 0
    cursor = relay.feeds["s0"].cursor
    fed.pass_time(15)  # A is removed from s0
    assert fed.core("s0").task_list("", "").get(a) is None  # A is gone from s0
    assert fed.core("s0").fed_changes(cursor)["resync"] is True

    fed.clock.advance(1.0)  # the next periodic pull meets the floor and resynchronises
    fed.router.settle()
    fed.clock.advance(1.0)  # (a resync may wait for its turn)
    fed.router.settle()
    link = fed.router.core.links["s0"]
    assert link.state is LinkState.READY
    assert relay.feeds["s0"].epoch == fed.core("s0").fed_state()["epoch"]
    assert relay.feeds["s0"].cursor >= fed.core("s0")._floor
    # the owner no longer has A: its mirror on s1 says so (UNKNOWN: nothing for B to wait on)
    assert mirror_status(fed, "s1", a) == "UNKNOWN"

    # and the feed is followed as before: A made again and finished on s0 reaches the mirror
    fed.call("add_task", task_id=a, worker=W0, family="T")
    assert fed.call("get_work", worker=W0, host="h")["task_id"] == a
    fed.call("add_task", task_id=a, worker=W0, family="T", status="DONE")
    assert mirror_status(fed, "s1", a) == "DONE"
    assert fed.call("get_work", worker=W, host="h")["task_id"] == b


def test_a_remote_stakeholder_reaches_an_owner_that_was_down(fed: Fed) -> None:
    """W adds B (s1) needing A (s0) while s0 is down: W is A's stakeholder in luigid, so s0 is
    told when it is back, and keeps A after A's own worker went away while W lives."""
    a, b = fed.task_on("s0", "a"), fed.task_on("s1", "b")
    fed.call("add_task", task_id=a, worker=W0, family="T")
    fed.router.pool.kill("s0")
    fed.clock.advance(3.0)  # past the router's deadline: s0 is down
    fed.call("ping", worker=W)
    fed.router.settle()
    assert fed.router.core.links["s0"].state is LinkState.DOWN
    fed.call("add_task", task_id=b, worker=W, family="T", deps=[a])
    fed.clock.advance(1.0)
    fed.router.settle()
    assert a in fed.router.core.relay._stakes_owed["s0"][0]
    old = fed.servers["s0"]
    old.store.close()
    old.close()
    fed.servers["s0"] = fed.build("s0")
    fed.router.pool.restart("s0", fed.servers["s0"])
    for _ in range(4):  # the probe finds it, the relay resynchronises it
        fed.clock.advance(1.0)
        fed.call("ping", worker=W)
    assert fed.router.core.links["s0"].state is LinkState.READY
    assert not fed.router.core.relay._stakes_owed.get("s0")
    fed.pass_time(15)  # W0 is gone; W is alive and A's stakeholder on s0
    fed.pass_time(15)
    assert fed.core("s0").task_list("", "").get(a) is not None
    fed.pass_time(0)
    for _ in range(3):  # now W goes away too: A goes, as in luigid
        fed.clock.advance(10.0)
        fed.call("prune")
    assert fed.core("s0").task_list("", "").get(a) is None
