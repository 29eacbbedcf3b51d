"""``graph``, ``dep_graph`` and ``inverse_dep_graph`` of a 3-shard federation answer as one luigid.

Every test drives ``luigi.scheduler.Scheduler`` and a federation of three in-process shards behind
the router (``tests/inproc_federation.py``) with the same calls (``tests/differential.py``), with
task ids that placement really puts on different shards, and compares every answer exactly (key
order included); ``observe()`` then compares every read of every task (all graph reads of every
task, both ``include_done``).  What is checked: luigid's walk (breadth first, sorted deps, cut at
``max_graph_nodes``, nodes met but cut never walked from again in ``graph``), the UNKNOWN node of
a task no shard has a family of, the display name kept only by a walk's root, and the inverse
graph over the dependents on every shard.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.differential import Differential, make_config
from tests.test_federation_scenarios import ThreeShards

W = "W1"


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _diff(**config: object) -> tuple[Differential, ThreeShards]:
    d = Differential(make_config(**config), ThreeShards, check_changes=False)
    fed = d.core
    assert isinstance(fed, ThreeShards)
    return d, fed


def _add(d: Differential, task_id: str, deps: list[str] | None = None, **kwargs: object) -> None:
    d.advance(0.25)
    d.add_task(
        worker=W, task_id=task_id, family=task_id.split(".")[1].split("_")[1].upper(), deps=deps, **kwargs
    )


def _tree(d: Differential, fed: ThreeShards) -> dict[str, str]:
    """A graph whose every edge crosses shards, and whose breadth-first order differs from any
    one shard's: root (s0) -> a (s1), b (s2), c (s0); a -> d (s2), e (s0); b -> f (s1);
    e -> g (s1); f -> g."""
    ids = {
        "root": fed.task_on("s0", "root"),
        "a": fed.task_on("s1", "a"),
        "b": fed.task_on("s2", "b"),
        "c": fed.task_on("s0", "c"),
        "d": fed.task_on("s2", "d"),
        "e": fed.task_on("s0", "e"),
        "f": fed.task_on("s1", "f"),
        "g": fed.task_on("s1", "g"),
    }
    _add(d, ids["root"], [ids["a"], ids["b"], ids["c"]])
    _add(d, ids["a"], [ids["d"], ids["e"]])
    _add(d, ids["b"], [ids["f"]])
    _add(d, ids["c"])
    _add(d, ids["d"], status="DONE")
    _add(d, ids["e"], [ids["g"]])
    _add(d, ids["f"], [ids["g"]])
    _add(d, ids["g"])
    return ids


def test_the_tree_really_spans_three_shards() -> None:
    d, fed = _diff()
    ids = _tree(d, fed)
    assert {fed.placement.owner(t) for t in ids.values()} == {"s0", "s1", "s2"}
    for child in ("a", "b"):
        assert fed.placement.owner(ids[child]) != fed.placement.owner(ids["root"])


@pytest.mark.parametrize("max_graph_nodes", [1, 2, 3, 4, 5, 6, 100])
def test_dep_graph_walks_breadth_first_over_shards_and_cuts_as_luigid(max_graph_nodes: int) -> None:
    d, fed = _diff(max_graph_nodes=max_graph_nodes)
    ids = _tree(d, fed)
    for include_done in (True, False):
        answer = d.dep_graph(task_id=ids["root"], include_done=include_done)
        assert len(answer) == min(max_graph_nodes, 8 if include_done else 7)
    d.dep_graph(task_id=ids["a"])
    d.observe()


@pytest.mark.parametrize("max_graph_nodes", [1, 2, 3, 4, 100])
def test_inverse_dep_graph_finds_dependents_on_every_shard_in_luigids_order(max_graph_nodes: int) -> None:
    d, fed = _diff(max_graph_nodes=max_graph_nodes)
    ids = _tree(d, fed)
    # g's dependents e (s0) and f (s1), theirs a (s1) and b (s2), and the root (s0)
    answer = d.inverse_dep_graph(task_id=ids["g"])
    assert len(answer) == min(max_graph_nodes, 6)
    d.inverse_dep_graph(task_id=ids["d"], include_done=False)
    d.observe()


@pytest.mark.parametrize("max_graph_nodes", [2, 3, 100])
def test_graph_walks_every_task_in_creation_order_with_luigids_cut(max_graph_nodes: int) -> None:
    """Luigi's ``graph`` walks from every task not met yet, in creation order (a dependency's
    first mention is its creation), each walk cut at ``max_graph_nodes``: a node met by a cut
    walk is not walked from again, so it is missing from the answer."""
    d, fed = _diff(max_graph_nodes=max_graph_nodes)
    _tree(d, fed)
    lone = fed.task_on("s2", "lone")
    _add(d, lone)
    d.graph()
    d.observe()


def test_a_dependency_without_a_family_is_luigis_unknown_node_without_display_name() -> None:
    """``case_batch_ignore_items_not_ready``, reduced: the dependencies' owner has them without a
    family (added with no family), a dependent's shard as placeholders; luigid's node is the
    UNKNOWN one, and, met as a dependency, without a display name."""
    d, fed = _diff()
    dependent = fed.task_on("s0", "dependent")
    not_done, done = fed.task_on("s1", "notdone"), fed.task_on("s2", "done")
    _add(d, dependent, [not_done, done])
    d.advance(0.25)
    d.add_task(worker=W, task_id=not_done, runnable=False)
    d.advance(0.25)
    d.add_task(worker=W, task_id=done, status="DONE")
    d.graph()
    d.dep_graph(task_id=dependent)
    d.dep_graph(task_id=not_done)  # the root: Luigi's UNKNOWN node keeps its display name
    d.inverse_dep_graph(task_id=done)  # Luigi does not walk on from a task without a family
    d.observe()


def test_a_root_known_only_as_a_placeholder_elsewhere() -> None:
    """The owner never heard of the task, a dependent's shard has its placeholder: luigid has
    the placeholder, so ``dep_graph`` is its UNKNOWN node, not ``{}``; a task nobody has: ``{}``."""
    d, fed = _diff()
    dependent, dependency = fed.task_on("s0", "dependent"), fed.task_on("s1", "dependency")
    _add(d, dependent, [dependency])
    assert list(d.dep_graph(task_id=dependency)) == [dependency]
    assert list(d.inverse_dep_graph(task_id=dependency)) == [dependency]
    assert d.dep_graph(task_id=fed.task_on("s2", "nobody")) == {}
    assert d.inverse_dep_graph(task_id=fed.task_on("s2", "nobody")) == {}
    d.get_task_status_message(task_id=dependency)  # the placeholder's None, not the unknown ""
    d.observe()


def test_status_message_of_a_task_is_its_owners_also_when_empty() -> None:
    d, fed = _diff()
    dependent, dependency = fed.task_on("s0", "dependent"), fed.task_on("s1", "dependency")
    _add(d, dependent, [dependency])
    _add(d, dependency)
    d.set_task_status_message(task_id=dependency, status_message="")
    assert d.get_task_status_message(task_id=dependency) == {"taskId": dependency, "statusMessage": ""}
    d.set_task_status_message(task_id=dependency, status_message="half way")
    d.get_task_status_message(task_id=dependency)


def test_running_nodes_show_their_owners_resources_running() -> None:
    """A RUNNING dependency with resources on another shard: its node in ``dep_graph`` and
    ``graph`` is its owner's (``resources_running``, ``worker_running``, ``time_running``)."""
    d, fed = _diff(resources={"db": 3})
    dependent, dependency = fed.task_on("s0", "dependent"), fed.task_on("s1", "dependency")
    _add(d, dependent, [dependency], resources={"db": 1})
    _add(d, dependency, resources={"db": 2})
    d.advance(0.25)
    d.get_work(worker=W, host="h")
    d.dep_graph(task_id=dependent)
    d.inverse_dep_graph(task_id=dependency)
    d.graph()
    d.observe()
