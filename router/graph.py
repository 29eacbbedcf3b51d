"""``dep_graph`` / ``inverse_dep_graph`` across shards, breadth first, Luigi's node limit."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from federation.errors import FederationError, TransportError
from router import merge
from router.calls import Call

if TYPE_CHECKING:
    from router.core import RouterCore


class Graph:
    def __init__(
        self, core: RouterCore, call: Call, root: str, kwargs: dict[str, Any], *, inverse: bool
    ) -> None:
        self.core = core
        self.call = call
        self.root = root
        self.kwargs = kwargs
        self.inverse = inverse
        self.nodes: dict[str, tuple[dict[str, Any], bool]] = {}
        self.deps: dict[str, set[str]] = defaultdict(set)
        self.asked: set[tuple[str, str]] = set()
        self.in_flight = 0
        self.failed: FederationError | None = None

    def start(self) -> None:
        core = self.core
        owner = core.route(self.root)
        # the inverse walk goes on to other shards (where the root is mirrored) once its owner
        # has shown the root is a task Luigi would expand (below, in _on)
        self._ask(owner, self.root, "inverse_dep_graph" if self.inverse else "dep_graph")
        if self.in_flight == 0:
            self._finish()

    def _ask(self, sid: str, task_id: str, method: str) -> None:
        if (sid, task_id) in self.asked or len(self.nodes) >= self.core.max_graph_nodes:
            return
        self.asked.add((sid, task_id))
        self.in_flight += 1
        kwargs = {**self.kwargs, "task_id": task_id}
        self.core.pool.call(sid, method, kwargs, lambda res, err: self._on(sid, task_id, res, err))

    def _on(self, sid: str, task_id: str, result: Any, err: FederationError | None) -> None:
        core = self.core
        self.in_flight -= 1
        if err is not None:
            if not isinstance(err, TransportError) and err.code != "unknown_method":
                self.failed = self.failed or err
        elif isinstance(result, dict):
            foreign = merge.merge_graph_nodes(self.nodes, result, sid, core.route, self.root)
            for node_id, node in result.items():
                if isinstance(node, dict) and isinstance(node.get("deps"), list):
                    self.deps[node_id].update(d for d in node["deps"] if isinstance(d, str))
            if not self.inverse:
                # nodes this shard only mirrors: their owner knows their deps
                for node_id in foreign:
                    self._ask(core.route(node_id), node_id, "dep_graph")
            else:
                # a task's dependents on other shards are found where it is mirrored; Luigi does
                # not expand a node it only knows as a placeholder ("start_time": "UNKNOWN")
                for node_id, node in result.items():
                    if not isinstance(node, dict) or node.get("start_time") == "UNKNOWN":
                        continue
                    if core.route(node_id) == sid:
                        for other in core.relay.mirrors_of(node_id):
                            if other != sid:
                                self._ask(other, node_id, "fed_inverse_dep_graph")
        if self.in_flight == 0:
            self._finish()

    def _finish(self) -> None:
        core = self.core
        if self.failed is not None and not self.nodes:
            core.fail(self.call, self.failed)
            return
        out: dict[str, Any] = {}
        for task_id, (node, _) in self.nodes.items():
            node = dict(node)
            if "deps" in node or self.deps.get(task_id):
                node["deps"] = sorted(self.deps.get(task_id, set()) | set(node.get("deps") or []))
            out[task_id] = node
            if len(out) >= core.max_graph_nodes:
                break
        core.reply(self.call, out)
