"""Reads of a 3-shard federation that must answer as one luigid (issue 10).

Each test is a difference the differential machine (``tests/test_federation_differential.py``)
found with random seeds against three shards, minimized: the same calls go to
``luigi.scheduler.Scheduler`` and to a federation of in-process shards behind the router, and
every answer must match.  Ids that must sit on given shards come from ``fed.task_on``.
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


def _fed(d: Differential) -> ThreeShards:
    fed = d.core
    assert isinstance(fed, ThreeShards)
    return fed


def test_over_max_shown_tasks_a_batch_runner_hosted_off_its_owner_counts() -> None:
    """A batch runner runs on its batch's shard, which does not own its id: luigid counts it in
    ``{"num_tasks": n}`` like any task."""
    d = Differential(make_config(max_shown_tasks=2), ThreeShards, check_changes=False)
    fed = _fed(d)
    a, b = fed.task_on("s0", "a"), fed.task_on("s0", "b")
    runner = fed.task_on("s1", "runner")
    d.add_task_batcher(worker="W", task_family="Fam", batched_args=["a"], max_batch_size=float("inf"))
    for task_id, p in ((a, "1"), (b, "2")):
        d.add_task(
            task_id=task_id, worker="W", family="Fam", module="m", params={"a": p, "b": "x"}, batchable=True
        )
    reply = d.get_work(worker="W", host="h", current_tasks=[])
    d.add_task(
        task_id=runner,
        worker="W",
        status="RUNNING",
        batch_id=reply["batch_id"],
        family="Fam",
        module="m",
        params={"a": "1,2", "b": "x"},
    )
    d.task_list(status="", upstream_status="")
    d.task_list(status="RUNNING", upstream_status="", max_shown_tasks=0)
    d.task_list(status="", upstream_status="", limit=False)


def test_first_task_display_name_of_a_task_the_workers_shards_do_not_have() -> None:
    """The worker's first task is on a shard that does not know the worker: luigid shows the
    task's display name (it has the task), not its id."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = _fed(d)
    first, mine = fed.task_on("s1", "first"), fed.task_on("s0", "mine")
    d.add_task(task_id=first, worker="W2", family="TA", module="m", params={"p": "1"})
    d.add_task(task_id=mine, worker="W", family="TB", module="m", params={})
    d.add_worker(worker="W", info={"first_task": first})
    d.worker_list()
    d.worker_list(include_running=False)


def test_first_task_display_name_is_the_owners_not_a_placeholders() -> None:
    """The worker's first task is a dependency of its task on another shard, where it is a bare
    placeholder ("()"); luigid has one task, with the owner's family and params."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = _fed(d)
    dependent, first = fed.task_on("s0", "dependent"), fed.task_on("s1", "first")
    d.add_task(task_id=dependent, worker="W", deps=[first], family="TB", module="m", params={})
    d.add_task(task_id=first, worker="W", family="TA", module="m", params={"p": "1"})
    d.add_worker(worker="W", info={"first_task": first})
    d.worker_list()


def test_first_task_display_name_of_a_placeholder_on_a_shard_that_does_not_know_the_worker() -> None:
    """The worker's first task is only another worker's dependency, a placeholder on a shard
    the worker never called: luigid has that placeholder ("()")."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = _fed(d)
    dependent, first = fed.task_on("s0", "dependent"), fed.task_on("s1", "first")
    mine = fed.task_on("s2", "mine")
    d.add_task(task_id=dependent, worker="W2", deps=[first], family="TB", module="m", params={})
    d.add_task(task_id=mine, worker="W", family="TC", module="m", params={})
    d.add_worker(worker="W", info={"first_task": first})
    d.worker_list()
    d.add_worker(worker="W3", info={"first_task": "never_mentioned"})
    d.worker_list()


def _dependency_split(d: Differential) -> tuple[str, str, str]:
    """A dependent on s0, another dependent on s1 and their dependency owned by s1."""
    fed = _fed(d)
    return fed.task_on("s0", "dependent"), fed.task_on("s1", "local"), fed.task_on("s1", "dependency")


def test_a_placeholder_made_first_on_another_shard_was_last_updated_then() -> None:
    """The dependency's placeholder is made first on the dependent's shard, then on its owner
    (for the owner's own dependent): luigid has one placeholder, made and last updated at the
    first mention (and listed in UNKNOWN in that order)."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    dependent, local, dep = _dependency_split(d)
    d.add_task(task_id=dependent, worker="W", deps=[dep], family="R", module="m", params={"i": "4"})
    d.advance(0.25)
    d.add_task(task_id=local, worker="W", deps=[dep], family="R", module="m", params={"i": "1"})
    d.task_list(status="", upstream_status="")
    d.task_list(status="UNKNOWN", upstream_status="")
    d.observe()


def test_a_placeholders_priority_is_its_highest_dependents_on_any_shard() -> None:
    """Luigi's placeholder takes its first dependent's priority and every later dependent's
    higher one; the owner's own placeholder, made after a dependent elsewhere asked for a higher
    priority, has it too."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    dependent, local, dep = _dependency_split(d)
    d.add_task(task_id=dependent, worker="W", deps=[dep], family="R", module="m", params={}, priority=10)
    d.advance(0.25)
    d.add_task(task_id=local, worker="W", deps=[dep], family="R", module="m", params={"i": "1"})
    d.task_list(status="UNKNOWN", upstream_status="")
    d.observe()


def test_a_first_mention_pruned_with_its_dependent_is_forgotten() -> None:
    """The dependency was mentioned only by a dependent on another shard, which luigid pruned
    (with the placeholder): the dependency added later is created then."""
    d = Differential(
        make_config(remove_delay=0.0, worker_disconnect_delay=6.0), ThreeShards, check_changes=False
    )
    dependent, _, dep = _dependency_split(d)
    d.add_task(task_id=dependent, worker="W1", deps=[dep], family="R", module="m", params={"i": "1"})
    d.advance(40)
    d.prune()
    d.advance(5)
    d.add_task(task_id=dep, worker="W2", family="R", module="m", params={"i": "0"})
    d.task_list(status="", upstream_status="")
    d.observe()


def test_ui_actions_on_a_dependency_only_a_placeholder_on_another_shard() -> None:
    """luigid has the dependency's placeholder (UNKNOWN): ``forgive_failures`` and
    ``mark_as_done`` answer its status, not None (the owner does not have the task)."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    dependent, _, dep = _dependency_split(d)
    d.forgive_failures(task_id=dep)
    d.add_task(task_id=dependent, worker="W", deps=[dep], family="R", module="m", params={})
    d.forgive_failures(task_id=dep)
    d.mark_as_done(task_id=dep)
    d.re_enable_task(task_id=dep)
    d.observe()


def test_inverse_dep_graph_finds_a_dependent_that_made_no_placeholder() -> None:
    """An assistant's ``add_task`` (or a RUNNING task's ``new_deps``) names a dependency
    without making its placeholder; luigid's inverse graph still has the dependent."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = _fed(d)
    dep, dependent, other = fed.task_on("s0", "dep"), fed.task_on("s1", "dependent"), fed.task_on("s2", "o")
    d.add_task(task_id=dep, worker="W", family="F", module="m", params={"a": "9"})
    d.add_task(task_id=dependent, worker="AS", family="F", module="m", params={}, deps=[dep], assistant=True)
    d.add_task(task_id=other, worker="W", family="F", module="m", params={"o": "1"})
    d.add_task(task_id=other, worker="W", status="RUNNING", new_deps=[dep], assistant=True)
    d.inverse_dep_graph(task_id=dep)
    d.inverse_dep_graph(task_id=dep, include_done=False)
    d.dep_graph(task_id=dependent)
    d.add_task(task_id=dep, worker="W", status="DONE")
    d.inverse_dep_graph(task_id=dep)
    d.inverse_dep_graph(task_id=dependent, include_done=False)
    d.graph()


def test_priority_rises_into_a_dependency_that_has_no_placeholder_here() -> None:
    """An assistant's (or a disabled worker's running task's) ``add_task`` names a dependency
    on another shard without making its placeholder; Luigi's priority still rises into it."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = _fed(d)
    dep, dependent, deeper = fed.task_on("s1", "dep"), fed.task_on("s0", "dependent"), fed.task_on("s2", "d")
    other = fed.task_on("s1", "other")
    d.add_task(task_id=dep, worker="W", family="F", module="m", params={"a": "1"}, deps=[deeper])
    d.add_task(task_id=deeper, worker="W", family="F", module="m", params={"a": "2"})
    d.add_task(task_id=other, worker="W", family="F", module="m", params={"a": "3"}, priority=5)
    d.add_task(
        task_id=dependent,
        worker="AS",
        family="F",
        module="m",
        params={},
        deps=[dep],
        assistant=True,
        priority=10,
    )
    d.task_list(status="PENDING", upstream_status="")
    d.get_work(worker="W", host="h")
    d.get_work(worker="W", host="h")


def test_a_float_priority_rises_into_a_dependency_on_another_shard_as_is() -> None:
    """Luigi's priorities may be floats: a dependent's 2.5 reaches its dependency's owner as 2.5."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    dependent, _, dep = _dependency_split(d)
    d.add_task(task_id=dep, worker="W", family="F", module="m", params={}, priority=2)
    d.add_task(
        task_id=dependent, worker="W", family="F", module="m", params={"a": "1"}, deps=[dep], priority=2.5
    )
    d.task_list(status="PENDING", upstream_status="")


def test_a_placeholder_on_two_dependents_shards_is_luigids_one() -> None:
    """Two dependents on two shards name a dependency no shard has (placeholders on both): luigid
    has one placeholder, made and last updated at the first mention, with the highest priority."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = _fed(d)
    first, second, dep = fed.task_on("s2", "first"), fed.task_on("s0", "second"), fed.task_on("s1", "dep")
    d.add_task(task_id=first, worker="W", deps=[dep], family="R", module="m", params={"i": "2"}, priority=1)
    d.advance(0.5)
    d.add_task(task_id=second, worker="W", deps=[dep], family="R", module="m", params={"i": "3"}, priority=3)
    d.task_list(status="", upstream_status="")
    d.task_list(status="UNKNOWN", upstream_status="")
    d.observe()


def test_over_max_shown_tasks_a_dependency_its_owner_has_as_a_placeholder_counts_once() -> None:
    """The owner has the dependency as its own placeholder (for a dependent there), another
    shard mirrors it: ``{"num_tasks": n}`` counts it once."""
    d = Differential(make_config(max_shown_tasks=1), ThreeShards, check_changes=False)
    dependent, local, dep = _dependency_split(d)
    d.add_task(task_id=dependent, worker="W", deps=[dep], family="R", module="m", params={"i": "3"})
    d.add_task(task_id=local, worker="W", deps=[dep], family="R", module="m", params={"i": "2"})
    d.task_list(status="", upstream_status="")
    d.task_list(status="UNKNOWN", upstream_status="", max_shown_tasks=0)
    d.task_list(status="PENDING", upstream_status="UPSTREAM_MISSING_INPUT")


def test_upstream_status_walks_into_a_remote_dependencys_dependencies() -> None:
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = _fed(d)
    top, middle, bottom = fed.task_on("s0", "top"), fed.task_on("s1", "middle"), fed.task_on("s2", "bottom")
    d.add_task(task_id=top, worker="W", deps=[middle], family="R", module="m", params={"i": "1"})
    d.add_task(task_id=middle, worker="W", deps=[bottom], family="R", module="m", params={"i": "2"})
    d.add_task(task_id=bottom, worker="W", family="R", module="m", params={"i": "3"})
    d.get_work(worker="W", host="h")  # bottom RUNNING: middle is UPSTREAM_RUNNING, and so is top
    for upstream in ("UPSTREAM_RUNNING", "UPSTREAM_MISSING_INPUT", "UPSTREAM_FAILED", ""):
        d.task_list(status="PENDING", upstream_status=upstream)
    d.task_list(status="", upstream_status="UPSTREAM_RUNNING")
    # bottom fails: both dependents are UPSTREAM_FAILED (two shards away for top)
    d.add_task(task_id=bottom, worker="W", status="FAILED")
    for upstream in ("UPSTREAM_FAILED", "UPSTREAM_RUNNING"):
        d.task_list(status="PENDING", upstream_status=upstream)
    # bottom done: the walk skips it, middle (PENDING, no undone dep) counts as nothing upstream
    d.add_task(task_id=bottom, worker="W", status="DONE")
    for upstream in ("", "UPSTREAM_MISSING_INPUT", "UPSTREAM_FAILED"):
        d.task_list(status="PENDING", upstream_status=upstream)


def test_upstream_status_over_a_dependency_cycle_across_shards() -> None:
    """Luigi's walk shares one memo table over the listing: around a cycle the answer depends
    on which task it starts from, i.e. on luigid's listing order, which the router follows."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = _fed(d)
    a, b, c = fed.task_on("s0", "a"), fed.task_on("s1", "b"), fed.task_on("s2", "c")
    d.add_task(task_id=a, worker="W", deps=[b], family="R", module="m", params={"i": "1"})
    d.add_task(task_id=b, worker="W", deps=[c], family="R", module="m", params={"i": "2"})
    d.add_task(task_id=c, worker="W", deps=[a], family="R", module="m", params={"i": "3"})
    for upstream in ("", "UPSTREAM_MISSING_INPUT", "UPSTREAM_RUNNING"):
        d.task_list(status="PENDING", upstream_status=upstream)


def test_a_task_made_batchable_changes_its_workers_get_work_summary() -> None:
    """Found by the machine as the harness's check of the router's get_work summaries
    (``router.summaries``): a task the worker re-adds as batchable (it has the family's batcher)
    is a batch choice, which its shard's summary must say."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    task = _fed(d).task_on("s2", "t")
    kwargs = {"family": "Fam", "module": "m", "params": {"a": "1", "b": "x"}, "priority": 5}
    d.add_task(task_id=task, worker="W1", batchable=False, **kwargs)
    d.add_task_batcher(worker="W1", task_family="Fam", batched_args=["a"], max_batch_size=float("inf"))
    d.add_task(task_id=task, worker="W1", batchable=True, **kwargs)
    d.get_work(worker="W1", host="h")


def test_over_max_shown_tasks_a_mirror_listed_whose_owner_counts_the_task_counts_once() -> None:
    """The owner is over the limit (it answers a count, its own placeholder of the dependency
    in it) while the dependent's shard lists its mirror of that placeholder: counted once."""
    d = Differential(make_config(max_shown_tasks=2), ThreeShards, check_changes=False)
    fed = _fed(d)
    owner_tasks = [fed.task_on("s0", f"o{i}") for i in range(2)]
    dep, dependent = fed.task_on("s0", "dep"), fed.task_on("s1", "dependent")
    d.add_task(task_id=dependent, worker="W", deps=[dep], family="R", module="m", params={"i": "1"})
    for i, task_id in enumerate(owner_tasks):
        d.add_task(task_id=task_id, worker="W", deps=[dep], family="R", module="m", params={"o": str(i)})
    d.task_list(status="", upstream_status="")
    d.task_list(status="UNKNOWN", upstream_status="", max_shown_tasks=0)


def test_a_lower_priority_dependent_elsewhere_raises_a_negative_placeholder() -> None:
    """Luigi's placeholder made with a dependent's negative priority rises to 0 for a later
    dependent of priority 0 on another shard (0 is a rise too)."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = _fed(d)
    first, dep, second = fed.task_on("s0", "first"), fed.task_on("s0", "dep"), fed.task_on("s1", "second")
    d.add_task(task_id=first, worker="W", deps=[dep], family="R", module="m", params={"i": "1"}, priority=-3)
    d.add_task(task_id=second, worker="W", deps=[dep], family="R", module="m", params={"i": "2"})
    d.task_list(status="", upstream_status="")


def test_get_work_resends_the_running_task_luigid_would_among_equal_ranks() -> None:
    """Luigi re-sends the *last* of a worker's RUNNING tasks (not in ``current_tasks``) in rank
    order: among equal priority and creation time, the one that entered RUNNING last."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    fed = _fed(d)
    dependent, dep = fed.task_on("s2", "dependent"), fed.task_on("s1", "dep")
    d.add_task(
        task_id=dependent, worker="W2", deps=[dep], family="F", module="m", params={"a": "3"}, priority=1
    )
    d.advance(17)
    d.add_task(
        task_id=dep, worker="W3", family="T", module="m", params={"p": "1"}, priority=1
    )  # created at the mention
    d.add_task(task_id=dependent, worker="W3", deps=[], family="F", module="m", params={"a": "3"})
    d.advance(1)
    d.get_work(worker="W3", host="h", current_tasks=[])
    d.advance(1)
    d.get_work(worker="W3", host="h")
    d.advance(1)
    d.get_work(worker="W3", host="h", current_tasks=[])
    d.get_work(worker="W3", host="h", current_tasks=[dep])


def test_status_message_and_progress_of_a_dependency_only_a_placeholder() -> None:
    """luigid has the dependency's placeholder: its status message and progress can be set and
    read (the owner does not have the task; the dependent's shard has the placeholder)."""
    d = Differential(make_config(), ThreeShards, check_changes=False)
    dependent, _, dep = _dependency_split(d)
    d.add_task(task_id=dependent, worker="W", deps=[dep], family="R", module="m", params={"i": "3"})
    d.set_task_progress_percentage(task_id=dep, progress_percentage=100)
    d.get_task_progress_percentage(task_id=dep)
    d.set_task_status_message(task_id=dep, status_message="half way")
    d.get_task_status_message(task_id=dep)
    d.add_task(task_id=dep, worker="W", family="R", module="m", params={"i": "0"})
    d.get_task_progress_percentage(task_id=dep)
    d.get_task_status_message(task_id=dep)
    d.set_task_progress_percentage(task_id=dep, progress_percentage=50)
    d.get_task_progress_percentage(task_id=dep)


def test_tasks_failed_by_one_prune_on_several_shards_are_listed_in_creation_order() -> None:
    """luigid's prune walks every task once, in creation order.  A client's call to every shard
    goes under one order stamp (``RouterCore.gather(one_stamp=True)``) and each shard numbers
    what its walk did by the walk's place, so the router interleaves the shards' walks."""
    d = Differential(make_config(worker_disconnect_delay=6.0), ThreeShards, check_changes=False)
    fed = _fed(d)
    first, second = fed.task_on("s2", "first"), fed.task_on("s0", "second")
    d.add_task(task_id=first, worker="W", family="F", module="m", params={"a": "1"}, priority=1)
    d.add_task(task_id=second, worker="W", family="F", module="m", params={"a": "2"})
    d.get_work(worker="W", host="h")
    d.get_work(worker="W", host="h")
    d.advance(10)
    d.task_list(status="FAILED", upstream_status="")


def test_over_max_shown_tasks_luigid_counts_before_it_prunes() -> None:
    """luigid compares the number of tasks with ``max_shown_tasks`` before the prune of the same
    call removes a task (here an assistant's, which has no stakeholder): the count is of the
    tasks before that prune, also on a shard that is under the limit on its own."""
    cfg = make_config(max_shown_tasks=3, worker_disconnect_delay=6.0, remove_delay=8.0)
    d = Differential(cfg, ThreeShards, check_changes=False)
    fed = _fed(d)
    a, b = fed.task_on("s0", "a"), fed.task_on("s0", "b")
    ra, rb, lone = fed.task_on("s2", "ra"), fed.task_on("s1", "rb"), fed.task_on("s2", "lone")
    d.add_task(task_id=lone, worker="AS", family="C", module="m", params={}, assistant=True)
    d.add_task(task_id=a, worker="W1", deps=[ra], family="R", module="m", params={"i": "3"}, priority=2)
    d.add_task(task_id=b, worker="W1", deps=[rb], family="R", module="m", params={"i": "4"}, priority=1)
    d.prune()
    d.advance(10)
    d.ping(worker="W1")
    d.task_list(status="", upstream_status="")
    d.task_list(status="PENDING", upstream_status="UPSTREAM_MISSING_INPUT")


def test_a_task_list_over_max_shown_tasks_prunes_nothing() -> None:
    """luigid answers ``{num_tasks}`` over ``max_shown_tasks`` before it prunes, so that
    ``task_list`` prunes nothing; no shard under the limit on its own can know that, so the
    router has every shard count first (``fed_task_list(count_only=True)``)."""
    cfg = make_config(max_shown_tasks=3, worker_disconnect_delay=6.0, remove_delay=8.0)
    d = Differential(cfg, ThreeShards, check_changes=False)
    fed = _fed(d)
    a, b = fed.task_on("s0", "a"), fed.task_on("s0", "b")
    ra, rb, lone = fed.task_on("s2", "ra"), fed.task_on("s1", "rb"), fed.task_on("s2", "lone")
    d.add_task(task_id=lone, worker="AS", family="C", module="m", params={}, assistant=True)
    d.add_task(task_id=a, worker="W1", deps=[ra], family="R", module="m", params={"i": "3"}, priority=2)
    d.add_task(task_id=b, worker="W1", deps=[rb], family="R", module="m", params={"i": "4"}, priority=1)
    d.prune()
    d.advance(10)
    d.ping(worker="W1")
    d.task_list(status="", upstream_status="")
    d.task_list(status="", upstream_status="")
