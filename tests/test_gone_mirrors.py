"""A task its owner pruned while another shard still mirrors it (issue 10).

luigid deletes a pruned task outright: it is in no listing any more, and the next mention of its
id (a dependent's ``add_task``) makes it anew, created *then* (its place in ``task_list``'s
order and its ``start_time``).  In a federation the dependent's shard keeps the mirror (it must
hear of the task when its owner makes it again), marked gone: left out of reads, and made anew
by its next mention here (``SchedulerCore.gone``, ``FederatedCore.fed_mirror_update``).
Each sequence runs against ``luigi.scheduler.Scheduler`` and a 3-shard federation with the two
ids on different shards; every answer and the whole observable state must match.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.differential import Differential, make_config
from tests.test_federation_scenarios import ThreeShards


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _pruned_dependency() -> tuple[Differential, str, str, str]:
    """``dep`` (owned by s0) pruned by its owner while ``dependent`` (s1) still depends on it."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = d.core
    assert isinstance(fed, ThreeShards)
    dep, dependent, other = (
        fed.task_on("s0", "dep"),
        fed.task_on("s1", "dependent"),
        fed.task_on("s2", "other"),
    )
    d.add_task(task_id=dep, worker="X")
    d.advance(50)
    d.prune()
    d.add_task(task_id=dependent, deps=[dep], worker="X")
    d.advance(1950)
    d.prune()  # the owner deletes dep (its removal time passed); the dependent stays a while
    return d, dep, dependent, other


def test_a_pruned_dependency_is_in_no_listing() -> None:
    d, dep, dependent, _ = _pruned_dependency()
    d.task_list(status="", upstream_status="")
    d.task_list(status="UNKNOWN", upstream_status="")
    d.task_list(status="", upstream_status="", search=dep[-4:])
    d.task_search(task_str=dep[-4:])
    d.task_list(status="PENDING", upstream_status="UPSTREAM_MISSING_INPUT")
    d.observe()


def test_a_pruned_dependency_mentioned_again_is_created_then() -> None:
    d, dep, dependent, other = _pruned_dependency()
    d.advance(1)
    d.add_task(task_id=other, worker="W", priority=5)
    d.advance(1)
    d.add_task(task_id=dependent, deps=[dep], worker="W")  # dep made anew here, after other
    d.task_list(status="", upstream_status="")
    d.observe()
    d.advance(1)
    d.add_task(task_id=dep, worker="W")
    d.task_list(status="", upstream_status="")
    d.get_work(worker="W")
    d.observe()


def test_a_pruned_dependency_made_again_by_its_owner_reaches_the_dependent() -> None:
    d, dep, dependent, _ = _pruned_dependency()
    d.advance(1)
    d.add_task(task_id=dependent, deps=[dep], worker="W")
    d.add_task(task_id=dep, worker="W2", status="DONE")
    d.task_list(status="", upstream_status="")
    d.get_work(worker="W")
    d.observe()


def test_gone_survives_a_restart_of_the_dependents_shard() -> None:
    d, dep, dependent, other = _pruned_dependency()
    fed = d.core
    assert isinstance(fed, ThreeShards)
    fed.restart("s1")
    d.task_list(status="", upstream_status="")
    d.advance(1)
    d.add_task(task_id=other, worker="W")
    d.advance(1)
    d.add_task(task_id=dependent, deps=[dep], worker="W")
    d.add_task(task_id=dep, worker="W")
    d.task_list(status="", upstream_status="")
    d.observe()
