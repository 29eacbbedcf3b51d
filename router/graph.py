"""``dep_graph`` / ``inverse_dep_graph`` across shards, walked as one luigid walks them.

The router walks the graph itself (:class:`router.merge.GraphWalk`: Luigi's breadth-first
``_traverse_graph``, sorted deps, cut at ``max_graph_nodes``), and asks the shards for the nodes
the walk reaches (``fed_graph_nodes``): each answer also brings what that shard can walk on its
own from there (at most as many nodes as the answer can still take), so a graph held by one
shard costs one round trip, and every further round asks every shard needed for the nodes
waiting in the walk's queue at once.

A node is known when:

- ``dep_graph``: some shard has the task with a family (its owner's node first), or its owner
  answered that it has no family for it (Luigi's UNKNOWN node, made by the router);
- ``inverse_dep_graph``: as above, and, for a task with a family, every shard that mirrors it
  said which of its tasks depend on it (Luigi's inverse graph spans every shard); Luigi does not
  walk on from a task without a family.
- ``dep_graph(include_done=False)``: as above, and the owners of its deps that its shard holds
  no task for (an assistant's ``add_task`` makes no placeholder) answered for them: Luigi leaves
  out a DONE dep, which only its owner knows to be DONE.

The root must exist somewhere (luigid answers ``{}`` otherwise): on its owner, or as a
placeholder on a shard that mirrors it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from federation.errors import FederationError, TransportError
from router import merge
from router.calls import Call
from router.links import LinkState

if TYPE_CHECKING:
    from router.core import RouterCore


class Graph:
    def __init__(
        self, core: RouterCore, call: Call, root: str, kwargs: dict[str, Any], *, inverse: bool
    ) -> None:
        self.core = core
        self.call = call
        self.root = root
        self.include_done = bool(kwargs.get("include_done", True))
        self.inverse = inverse
        self.walk = merge.GraphWalk(root, core.max_graph_nodes)
        #: task id -> (shard, node) of a shard that has the task with a family (the owner's first)
        self.family: dict[str, tuple[str, dict[str, Any]]] = {}
        #: (shard, task id): that shard said all it knows of the task for this walk
        self.answered: set[tuple[str, str]] = set()
        #: tasks some shard has (with or without a family)
        self.present: set[str] = set()
        #: inverse: a task's dependents on the shards that mirror it
        self.dependents: dict[str, set[str]] = defaultdict(set)
        #: not include_done: a node's deps its shard holds no task for (their owner's status counts)
        self.unheld: dict[str, list[str]] = {}
        self.in_flight = 0
        self.asking = False
        self.root_found = False
        self.done = False
        self.failed: FederationError | None = None

    def start(self) -> None:
        self._pump()

    # -- what is known ---------------------------------------------------------------------------
    def _missing(self, task_id: str) -> list[str]:
        """The shards still to ask about ``task_id`` before the walk can take its node."""
        core = self.core
        owner = core.route(task_id)
        if task_id not in self.family:
            return [] if (owner, task_id) in self.answered else [owner]
        if not self.inverse:
            return []
        # its dependents: on the shards that mirror it, and on any shard that names it as a
        # dependency without a placeholder (an assistant's add_task makes none): every shard
        return sorted(
            sid
            for sid, link in core.links.items()
            if link.state is not LinkState.DOWN and (sid, task_id) not in self.answered
        )

    def _unheld_missing(self, task_id: str) -> list[tuple[str, str]]:
        """``(owner, dep)``: the deps of ``task_id``'s node whose status only their owner knows,
        not answered for yet."""
        route = self.core.route
        return [
            (owner, d)
            for d in self.unheld.get(task_id, ())
            if d not in self.family and (owner := route(d), d) not in self.answered
        ]

    def _node_of(self, task_id: str) -> dict[str, Any] | None:
        if self._missing(task_id) or self._unheld_missing(task_id):
            return None
        held = self.family.get(task_id)
        if held is None:
            return merge.unknown_node(task_id)
        node = held[1]
        unheld = self.unheld.get(task_id)
        if unheld:
            done = {d for d in unheld if d in self.family and self.family[d][1].get("status") == "DONE"}
            if done:
                deps = node.get("deps")
                node = {**node, "deps": [d for d in deps or () if d not in done]}
        more = self.dependents.get(task_id)
        if more:
            deps = node.get("deps")
            node = {**node, "deps": sorted(set(deps if isinstance(deps, list) else ()) | more)}
        return node

    # -- the walk --------------------------------------------------------------------------------
    def _pump(self) -> None:
        core = self.core
        while not self.done:
            asks: dict[str, list[str]] = {}
            if not self.root_found:
                root = self.root
                if root in self.present:
                    self.root_found = True
                    continue
                owner = core.route(root)
                if (owner, root) not in self.answered:
                    asks[owner] = [root]
                else:
                    # the owner does not have it: luigid has it if a dependent's shard does
                    for sid in sorted(core.relay.mirrors_of(root)):
                        if (sid, root) not in self.answered:
                            asks[sid] = [root]
                    if not asks:
                        self._finish({})
                        return
            elif self.walk.advance(self._node_of):
                self._finish(self.walk.out)
                return
            else:
                for task_id in self.walk.pending():
                    for sid in self._missing(task_id):
                        asks.setdefault(sid, []).append(task_id)
                    for sid, dep in self._unheld_missing(task_id):
                        if dep not in asks.setdefault(sid, []):
                            asks[sid].append(dep)
            self.asking = True
            try:
                for sid, task_ids in asks.items():
                    self._ask(sid, task_ids)
            finally:
                self.asking = False
            if self.in_flight:
                return

    def _ask(self, sid: str, task_ids: list[str]) -> None:
        self.in_flight += 1
        kwargs = {
            "task_ids": task_ids,
            "include_done": self.include_done,
            "inverse": self.inverse,
            "limit": max(1, self.core.max_graph_nodes - len(self.walk.out)),
        }
        self.core.pool.call(
            sid, "fed_graph_nodes", kwargs, lambda res, err: self._on(sid, task_ids, res, err)
        )

    def _on(self, sid: str, task_ids: list[str], result: Any, err: FederationError | None) -> None:
        self.in_flight -= 1
        # asked and answered (or failed: what is reachable is merged, as every read does)
        self.answered.update((sid, task_id) for task_id in task_ids)
        if err is not None:
            if not isinstance(err, TransportError) and err.code != "unknown_method":
                self.failed = self.failed or err
        elif isinstance(result, dict):
            self._take(sid, task_ids, result)
        if self.in_flight == 0 and not self.asking:
            self._pump()

    def _take(self, sid: str, task_ids: list[str], result: dict[str, Any]) -> None:
        owner = self.core.route
        nodes = result.get("nodes")
        unheld_of = result.get("unheld")
        if not isinstance(unheld_of, dict):
            unheld_of = {}
        if isinstance(nodes, dict):
            for task_id, node in nodes.items():
                if not isinstance(task_id, str) or not isinstance(node, dict):
                    continue
                self.present.add(task_id)
                self.answered.add((sid, task_id))
                if task_id not in self.family or owner(task_id) == sid:
                    self.family[task_id] = (sid, node)
                    if not self.inverse and not self.include_done:
                        unheld = unheld_of.get(task_id)
                        if isinstance(unheld, list):
                            self.unheld[task_id] = [d for d in unheld if isinstance(d, str)]
                        else:
                            self.unheld.pop(task_id, None)
        asked = set(task_ids)
        for task_id in result.get("unknown") or ():
            if isinstance(task_id, str):
                self.present.add(task_id)
                # met on the way (not asked): its dependents here were not looked at
                if not self.inverse or task_id in asked:
                    self.answered.add((sid, task_id))
        dependents = result.get("dependents")
        if isinstance(dependents, dict):
            for task_id, ids in dependents.items():
                if isinstance(task_id, str) and isinstance(ids, list):
                    self.dependents[task_id].update(d for d in ids if isinstance(d, str))

    def _finish(self, out: dict[str, Any]) -> None:
        self.done = True
        if self.failed is not None and not self.present:
            self.core.fail(self.call, self.failed)
            return
        self.core.reply(self.call, out)
