"""Merging the answers of several shards into what one ``luigid`` would answer.

Pure functions over plain values.  Each takes ``results``: a list of
``(shard_id, result)`` for the shards that answered, and ``owner``: the
placement function, because a task can appear on more than one shard — on
its owner, and as a *mirror* (the placeholder of a remote dependency) on the
shards of its dependents.  The owner's view of a task always wins; a
mirror's view is kept only when the owner does not know the task at all,
which is exactly when ``luigid`` would show Luigi's own UNKNOWN placeholder.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from federation.upstream import PENDING
from federation.upstream import upstream_status as walk_upstream

Owner = Callable[[str], str]
Results = list[tuple[str, Any]]
#: a task's place in one luigid's order, from the shards' numbers (``_order_keys``)
OrderKey = tuple[float, ...]

UNKNOWN = "UNKNOWN"
DISABLED_STATE = "disabled"


def _is_count(result: Any) -> bool:
    """Luigi's over-the-limit answer ``{"num_tasks": n}`` (a task could be *named* num_tasks)."""
    return (
        isinstance(result, dict)
        and len(result) == 1
        and isinstance(result.get("num_tasks"), int)
        and not isinstance(result.get("num_tasks"), bool)
    )


def merge_tasks(
    results: Iterable[tuple[str, dict[str, Any]]],
    owner: Owner,
    keep_mirror: Callable[[dict[str, Any]], bool] | None = None,
    *,
    order: str = "start_time",
    order_keys: dict[str, OrderKey] | None = None,
) -> dict[str, Any]:
    """Union of ``{task_id: serialized}`` maps, the owner's entry first.

    A non-owner entry (a mirror) is kept only if the owner did not report the
    task and ``keep_mirror(entry)`` allows it (default: always).  The result is in
    Luigi's order: by ``order_keys`` (the shards' stamped numbers) when given, else from the
    timestamps (``order``: see :func:`_in_luigi_order`).
    """
    merged: dict[str, Any] = {}
    foreign: dict[str, Any] = {}
    #: a task's creation is its first mention anywhere.  The owner takes a placeholder's
    #: earlier creation on a dependent's shard as its own (``fed_first_mention``), so its time
    #: is the task's; without the owner's entry, the earliest placeholder's
    mirror_time: dict[str, float] = {}
    #: luigid's one placeholder of a task no owner has is its first mention's (made then, last
    #: updated then), with the highest priority any dependent gave it
    top_priority: dict[str, Any] = {}
    for shard_id, tasks in results:
        if not isinstance(tasks, dict):
            continue
        for task_id, entry in tasks.items():
            if owner(task_id) == shard_id:
                merged[task_id] = entry
                continue
            t = entry.get("start_time") if isinstance(entry, dict) else None
            earliest = isinstance(t, (int, float)) and t < mirror_time.get(task_id, t + 1)
            if task_id not in foreign or earliest:
                foreign[task_id] = entry
            if earliest and isinstance(t, (int, float)):
                mirror_time[task_id] = t
            p = entry.get("priority") if isinstance(entry, dict) else None
            if _is_time(p) and (task_id not in top_priority or p > top_priority[task_id]):
                top_priority[task_id] = p
    placeholder: dict[str, int] = {}
    for task_id, entry in foreign.items():
        if task_id not in merged and (keep_mirror is None or keep_mirror(entry)):
            t = mirror_time.get(task_id)
            if t is not None and isinstance(entry, dict) and entry.get("start_time") != t:
                entry = {**entry, "start_time": t}
            p = top_priority.get(task_id)
            if p is not None and isinstance(entry, dict) and entry.get("priority") != p:
                entry = {**entry, "priority": p}
            merged[task_id] = entry
            placeholder[task_id] = 1  # at equal times the task a worker added comes first
    if order_keys is not None:
        last = (float("inf"),)
        return {
            task_id: entry
            for _, (task_id, entry) in sorted(
                enumerate(merged.items()), key=lambda item: (order_keys.get(item[1][0], last), item[0])
            )
        }
    return _in_luigi_order(merged, order, placeholder)


def _is_time(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _in_luigi_order(
    tasks: dict[str, Any], field: str, placeholder: dict[str, int] | None = None
) -> dict[str, Any]:
    """The order one luigid lists these tasks in, from their own timestamps.

    Luigi iterates dicts in insertion order: all its tasks in the order it first heard of them
    (``start_time``, the task's creation time), the tasks of one status in the order they
    entered it (``last_updated``, set exactly when a task changes status).  Each shard's own
    order is kept among equal times; entries without the field (placeholders) come last.
    """

    first_as_placeholder = placeholder or {}

    def key(item: tuple[int, tuple[str, Any]]) -> tuple[float, int, int]:
        i, (task_id, entry) = item
        t = entry.get(field) if isinstance(entry, dict) else None
        t = t if isinstance(t, (int, float)) and not isinstance(t, bool) else float("inf")
        tie = first_as_placeholder.get(task_id, 0) if field == "start_time" else 0
        return (t, tie, i)

    return {task_id: entry for _, (task_id, entry) in sorted(enumerate(tasks.items()), key=key)}


def _is_owned_count(result: Any) -> bool:
    """``fed_task_list``'s over-the-limit answer: ``{"num_tasks": owned, "placeholders": [ids]}``."""
    return (
        isinstance(result, dict)
        and set(result) == {"num_tasks", "placeholders"}
        and isinstance(result["num_tasks"], int)
        and isinstance(result["placeholders"], list)
    )


_LISTING = frozenset({"listed", "order"})
_COUNTED_LISTING = frozenset({"listed", "order", "pre_count", "placeholders"})
_HOSTED = "hosted"
#: in ``fed_task_list``'s listing: its UNKNOWN mirrors whose owner has the task (the owner counts it)
_OWNER_HAS = "owner_has"
#: in ``fed_task_list``'s listing (asked with ``upstream=True``): ``{id: [status, [deps]]}`` of
#: the shard's own tasks that are not DONE, what Luigi's ``upstream_status`` walk reads
_UPSTREAM = "upstream"


def _hosted_owner(results: Results, owner: Owner) -> Owner:
    """``owner``, except for the tasks a shard says it *hosts* (``"hosted": [ids]`` in its
    answer: batch runners pinned to their batch's shard), which that shard answers for."""
    hosted: dict[str, str] = {}
    for sid, r in results:
        if isinstance(r, dict) and isinstance(r.get(_HOSTED), list):
            for task_id in r[_HOSTED]:
                if isinstance(task_id, str):
                    hosted[task_id] = sid
    if not hosted:
        return owner
    return lambda task_id: hosted.get(task_id) or owner(task_id)


def _is_listing(result: Any) -> bool:
    """``fed_task_list``'s answer under the limit: ``{"listed": {...}, "order": {id: [seq, cseq]}}``,
    with ``"pre_count"`` and ``"placeholders"`` under an ``upstream_status`` filter."""
    if not isinstance(result, dict) or not isinstance(result.get("listed"), dict):
        return False
    keys = set(result) - {_HOSTED, _OWNER_HAS, _UPSTREAM}
    if keys == _LISTING:
        return isinstance(result["order"], dict)
    return (
        keys == _COUNTED_LISTING
        and isinstance(result["order"], dict)
        and isinstance(result["pre_count"], int)
        and isinstance(result["placeholders"], list)
    )


def _entry_key(numbers: list[int]) -> OrderKey:
    """A status entry's place: ``[seq, cseq]`` by its number; ``[seq, cseq, base, visit]`` (it
    entered its status in a prune's walk, ``SchedulerCore.order_keys``) where that walk was
    when it did.  Shards that pruned under one order stamp (a client's call to every shard)
    share ``base``: their walks interleave in creation order, as luigid's one walk."""
    if len(numbers) == 4:
        return (numbers[2], numbers[3], numbers[0])
    return (numbers[0], 0, 0)


def _order_keys(listings: Results, owner: Owner, *, by_status: bool) -> dict[str, OrderKey]:
    """Each task's place in one luigid's order, from the shards' numbers (they follow the
    router's order stamps, so they compare across shards): with a status, the owner's
    status-entry number (:func:`_entry_key`); without, the task's first mention anywhere (its
    smallest creation number, a dependency's placeholder included)."""
    keys: dict[str, OrderKey] = {}
    owned: set[str] = set()
    for sid, r in listings:
        for task_id, numbers in r["order"].items():
            if not (
                isinstance(numbers, list)
                and len(numbers) in (2, 4)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in numbers)
            ):
                continue
            if by_status:
                key = _entry_key(numbers)
                # the owner's number; without it, the earliest placeholder's (luigid's one)
                if owner(task_id) == sid:
                    keys[task_id] = key
                    owned.add(task_id)
                elif task_id not in owned:
                    keys[task_id] = min(keys.get(task_id, key), key)
            else:
                first = (numbers[1],)
                keys[task_id] = min(keys.get(task_id, first), first)
    return keys


def _mirror_is_placeholder(entry: Any) -> bool:
    # a status filter run on a mirror sees the relayed status, which the owner already reported
    # if the owner has the task; only owner-less placeholders (UNKNOWN) are the mirror's to show
    return isinstance(entry, dict) and entry.get("status") == UNKNOWN


def merge_task_list(
    results: Results,
    owner: Owner,
    *,
    limit: bool,
    max_shown_tasks: int,
    upstream_status: str = "",
    status: str = "",
) -> dict[str, Any]:
    """``task_list``: union, Luigi's ``{"num_tasks": n}`` when over ``max_shown_tasks``.

    A shard over the limit answers ``fed_task_list``'s count: the tasks it owns, and the
    placeholders whose owner does not know the task, so every task is counted once (owner
    first), never once per mirror.
    """
    owner = _hosted_owner(results, owner)
    listings = [(sid, r) for sid, r in results if _is_listing(r)]
    order_keys: dict[str, OrderKey] | None = None
    # Luigi counts the tasks of the status before it prunes: every shard's count from then
    # (its count answer, or its listing's pre_count), each task once
    pre = [r for _, r in results if _is_owned_count(r) or (_is_listing(r) and "pre_count" in r)]
    if limit and pre and len(pre) == len(results):
        owned = sum(r["num_tasks"] if _is_owned_count(r) else r["pre_count"] for r in pre)
        pending = {p for r in pre for p in r["placeholders"] if isinstance(p, str)}
        if owned + len(pending) > max_shown_tasks:
            # with upstream_status: -1, however few pass the filter
            return {"num_tasks": -1 if upstream_status else owned + len(pending)}
    if listings:
        counted_listings = [r for _, r in listings if "pre_count" in r]
        if counted_listings and upstream_status:
            owned = sum(r["pre_count"] for r in counted_listings)
            pending = {p for r in counted_listings for p in r["placeholders"] if isinstance(p, str)}
            if limit and owned + len(pending) > max_shown_tasks:
                return {"num_tasks": -1}
        if len(listings) == len(results):
            order_keys = _order_keys(listings, owner, by_status=bool(status))
        owner_has = {tid for _, r in listings for tid in r.get(_OWNER_HAS) or () if isinstance(tid, str)}
        upstream = _upstream_graph(listings) if upstream_status else None
        results = [(sid, r["listed"] if _is_listing(r) else r) for sid, r in results]
    else:
        owner_has = set()
        upstream = None
    counted = [r for _, r in results if _is_count(r) or _is_owned_count(r)]
    if counted:
        if any(r["num_tasks"] == -1 for r in counted):
            return {"num_tasks": -1}
        total = sum(r["num_tasks"] for r in counted)
        owned_listed: set[str] = set()
        placeholders: set[str] = set()
        for r in counted:
            placeholders.update(p for p in r.get("placeholders") or () if isinstance(p, str))
        for sid, r in results:
            if isinstance(r, dict) and not _is_count(r) and not _is_owned_count(r):
                for task_id, entry in r.items():
                    if owner(task_id) == sid:
                        owned_listed.add(task_id)
                    elif _mirror_is_placeholder(entry) and task_id not in owner_has:
                        placeholders.add(task_id)
        return {"num_tasks": total + len(owned_listed) + len(placeholders - owned_listed)}
    # one status: the order tasks entered it; all: the order they were created
    merged = merge_tasks(
        ((s, r) for s, r in results),
        owner,
        _mirror_is_placeholder,
        order="last_updated" if status else "start_time",
        order_keys=order_keys,
    )
    if upstream is not None:
        merged = _upstream_filter(merged, upstream, upstream_status)
    if limit and len(merged) > max_shown_tasks:
        return {"num_tasks": len(merged)}
    return merged


def _upstream_graph(listings: Results) -> dict[str, tuple[str, list[str]]] | None:
    """Every shard's tasks that are not DONE, ``{id: (status, deps)}``, from the listings asked
    with ``upstream=True`` (``fed_task_list``); None unless every listing carries them."""
    graph: dict[str, tuple[str, list[str]]] = {}
    for _, r in listings:
        tasks = r.get(_UPSTREAM)
        if not isinstance(tasks, dict):
            return None
        for task_id, value in tasks.items():
            if (
                isinstance(value, list)
                and len(value) == 2
                and isinstance(value[0], str)
                and isinstance(value[1], list)
            ):
                graph[task_id] = (value[0], [d for d in value[1] if isinstance(d, str)])
    return graph


def _upstream_filter(
    merged: dict[str, Any], graph: dict[str, tuple[str, list[str]]], upstream_status: str
) -> dict[str, Any]:
    """Luigi's ``upstream_status`` filter over every shard's tasks: a PENDING task stays if the
    worst status upstream of it, walked as luigid walks (:func:`federation.upstream.upstream_status`,
    one memo table, in the listing's order), is ``upstream_status``; any other task stays.
    A task absent from ``graph`` is DONE or unknown to its owner: the walk skips it, as Luigi's."""
    table: dict[str, str] = {}
    return {
        task_id: entry
        for task_id, entry in merged.items()
        if not isinstance(entry, dict)
        or entry.get("status") != PENDING
        or upstream_status == walk_upstream(task_id, table, graph.get)
    }


#: how Luigi guesses the family of a task it knows no family of, in its graphs
TASK_FAMILY_RE = re.compile(r"([^(_]+)[(_]")


def unknown_node(task_id: str) -> dict[str, Any]:
    """Luigi's graph node of a task it does not have, or has without a family (a dependency's
    placeholder): the same for every shard, so made here, never sent."""
    m = TASK_FAMILY_RE.match(task_id)
    return {
        "deps": [],
        "status": UNKNOWN,
        "workers": [],
        "start_time": UNKNOWN,
        "params": {"task_id": task_id},
        "name": m.group(1) if m else UNKNOWN,
        "display_name": task_id,
        "priority": 0,
    }


class GraphWalk:
    """Luigi's ``_traverse_graph`` from ``root`` over nodes that may still have to be fetched.

    Breadth first, each node's ``deps`` in sorted order, ``seen`` shared with the caller (Luigi's
    ``graph`` walks from every task with one ``seen``), only the root keeps its display name, and
    the walk stops once ``max_nodes`` nodes are out (a node met but not reached stays in ``seen``).
    :meth:`advance` goes on while the next node is known and says whether the walk is over.
    """

    def __init__(self, root: str, max_nodes: int, seen: set[str] | None = None) -> None:
        self.root = root
        self.max_nodes = max_nodes
        self.seen = seen if seen is not None else set()
        self.seen.add(root)
        self.queue: deque[str] = deque([root])
        self.out: dict[str, Any] = {}
        self.stopped = False

    def advance(self, node_of: Callable[[str], dict[str, Any] | None]) -> bool:
        """Walk on; ``node_of(task_id)`` is the task's node (``deps`` as the walk should follow
        them), or None while it is not known yet.  True when the walk is over."""
        queue, seen = self.queue, self.seen
        while queue and not self.stopped:
            task_id = queue[0]
            node = node_of(task_id)
            if node is None:
                return False
            queue.popleft()
            node = dict(node)
            if task_id != self.root:
                node.pop("display_name", None)
            self.out[task_id] = node
            for dep in sorted(d for d in node.get("deps") or () if isinstance(d, str)):
                if dep not in seen:
                    seen.add(dep)
                    queue.append(dep)
            if len(self.out) >= self.max_nodes:
                self.stopped = True
        return True

    def pending(self) -> list[str]:
        """The tasks met and not walked yet, in the walk's order."""
        return [] if self.stopped else list(self.queue)


def merge_graph(results: Results, owner: Owner, max_graph_nodes: int) -> dict[str, Any]:
    """``graph``: every task of every shard, walked as one luigid walks its tasks.

    Each shard answers ``fed_graph``: ``{"nodes": {task_id: node}, "created": [[task_id, time,
    creation number]]}``, its tasks with a family as Luigi's graph nodes (uncut) and the
    creation of all its tasks, placeholders included.  Luigi walks its tasks in creation order
    (a task's creation is its first mention on any shard), each one not met yet breadth first
    (:class:`GraphWalk`, cut at ``max_graph_nodes`` per walk); a task no shard has a family of
    is Luigi's UNKNOWN node.  (A ``"graph"`` answer — Luigi's own graph — is read the same way.)
    """
    nodes: dict[str, Any] = {}
    created: dict[str, tuple[float, float, int]] = {}
    for i, (sid, r) in enumerate(results):
        if not isinstance(r, dict):
            continue
        part = r.get("nodes") if isinstance(r.get("nodes"), dict) else r.get("graph")
        if not isinstance(part, dict):
            continue
        for task_id, node in part.items():
            if not isinstance(node, dict) or node.get("start_time") == UNKNOWN:
                continue
            if owner(task_id) == sid or task_id not in nodes:
                nodes[task_id] = node
        for row in r.get("created") or ():
            # [task_id, time, creation number]: the number follows the router's order stamps
            task_id, t = row[0], row[1]
            n = row[2] if len(row) > 2 and isinstance(row[2], int) else float("inf")
            if isinstance(task_id, str) and isinstance(t, (int, float)):
                key = (n, t, i)
                if task_id not in created or key < created[task_id]:
                    created[task_id] = key
    roots = sorted(created, key=created.__getitem__)
    roots += [task_id for task_id in nodes if task_id not in created]
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for root in roots:
        if root in seen:
            continue
        walk = GraphWalk(root, max_graph_nodes, seen)
        walk.advance(lambda task_id: nodes.get(task_id) or unknown_node(task_id))
        out.update(walk.out)
    return out


def merge_task_search(results: Results, owner: Owner) -> dict[str, dict[str, Any]]:
    """``task_search``: ``{status: {task_id: serialized}}`` regrouped after the owner-first union.

    A shard answers ``fed_task_search``: ``{"found": Luigi's answer, "order": {id: [seq, cseq]}}``;
    Luigi walks its tasks in creation order (first mention), which the numbers give across
    shards.  (A plain ``task_search`` answer is taken as is, ordered by timestamps.)"""
    flat: list[tuple[str, dict[str, Any]]] = []
    owner = _hosted_owner(results, owner)
    wrapped = [(sid, r) for sid, r in results if _is_found(r)]
    order_keys = None
    if wrapped and len(wrapped) == len(results):
        order_keys = _order_keys(wrapped, owner, by_status=False)
    results = [(sid, r["found"] if _is_found(r) else r) for sid, r in results]
    for shard_id, by_status in results:
        if not isinstance(by_status, dict):
            continue
        tasks: dict[str, Any] = {}
        for status, group in by_status.items():
            if isinstance(group, dict):
                for task_id, entry in group.items():
                    # the group a task was found in travels with it through the merge (copies)
                    tasks[task_id] = {**entry, _GROUP: status} if isinstance(entry, dict) else entry
        flat.append((shard_id, tasks))
    out: dict[str, dict[str, Any]] = {}
    for task_id, entry in merge_tasks(flat, owner, order_keys=order_keys).items():
        if isinstance(entry, dict):
            entry = dict(entry)
            out.setdefault(entry.pop(_GROUP), {})[task_id] = entry
    return out


def _is_found(result: Any) -> bool:
    return (
        isinstance(result, dict)
        and set(result) - {_HOSTED} == {"found", "order"}
        and isinstance(result["found"], dict)
        and isinstance(result["order"], dict)
    )


_GROUP = "\0status"


def _is_worker_listing(r: Any) -> bool:
    """``fed_worker_list``'s answer: ``{"workers", "order"}`` (and ``"names"``)."""
    return (
        isinstance(r, dict)
        and set(r) - {"names"} == {"workers", "order"}
        and isinstance(r["order"], dict)
        and isinstance(r.get("names", {}), dict)
    )


def _first_tasks(results: Results) -> set[str]:
    """The first tasks (``info["first_task"]``) of the workers the shards listed."""
    out: set[str] = set()
    for _, r in results:
        workers = r["workers"] if _is_worker_listing(r) else r
        for w in workers if isinstance(workers, list) else ():
            if isinstance(w, dict) and isinstance(w.get("first_task"), str) and w["first_task"]:
                out.add(w["first_task"])
    return out


def _display_names(results: Results) -> list[tuple[str, dict[str, Any]]]:
    """Each shard's ``names`` (``fed_worker_list``, ``fed_display_names``): ``{id: [name, own]}``."""
    out = []
    for sid, r in results:
        names = r.get("names") if _is_worker_listing(r) else r
        if isinstance(names, dict) and not _is_worker_listing(names):
            out.append((sid, names))
    return out


def unnamed_first_tasks(results: Results) -> list[str]:
    """The workers' first tasks no shard answered ``fed_worker_list`` for as its own: a shard
    that does not know the worker may own the task, or have its placeholder (the router asks
    them all: ``fed_display_names``)."""
    own = {
        tid
        for _, names in _display_names(results)
        for tid, pair in names.items()
        if isinstance(pair, list) and len(pair) == 2 and pair[1] is True
    }
    return sorted(_first_tasks(results) - own)


def first_task_names(answers: Results, owner: Owner) -> dict[str, str]:
    """Luigi's ``first_task_display_name`` of each task some shard named (``{id: [name, own]}``
    answers): the display name where the task is a shard's own (the owner's first), else its
    placeholder's (luigid has the placeholder); a task no shard has shows its id."""
    named: dict[str, tuple[int, str]] = {}
    for sid, names in _display_names(answers):
        for tid, pair in names.items():
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
                continue
            rank = 0 if pair[1] is True and owner(tid) == sid else 1 if pair[1] is True else 2
            if tid not in named or rank < named[tid][0]:
                named[tid] = (rank, pair[0])
    return {tid: name for tid, (_, name) in named.items()}


def merge_worker_list(
    results: Results,
    owner: Owner,
    *,
    include_running: bool = True,
    names: Results | None = None,
) -> list[dict[str, Any]]:
    """``worker_list``: one row per worker id, newest ``started`` first (Luigi's order).

    A shard answers ``fed_worker_list``: ``{"workers": Luigi's list, "order": {name: n},
    "names": {id: [display name, own]}}``; among equal ``started`` Luigi keeps the order it
    first heard of the workers: the smallest creation number over the shards (a plain
    ``worker_list`` answer is taken as is).  A worker's ``first_task_display_name`` is its first
    task's as one luigid has the task (:func:`first_task_names` over the shards' ``names`` and
    the further ``fed_display_names`` answers ``names``); a task no shard named shows its id."""
    rows: dict[str, dict[str, Any]] = {}
    running: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    first: dict[str, int] = {}
    plain: Results = []
    display: dict[str, str] | None = None
    if any(_is_worker_listing(r) for _, r in results):
        display = first_task_names([*results, *(names or [])], owner)
    for shard_id, r in results:
        if _is_worker_listing(r):
            for name, n in r["order"].items():
                if isinstance(n, int) and not isinstance(n, bool):
                    first[name] = min(first.get(name, n), n)
            r = r["workers"]
        plain.append((shard_id, r))
    for shard_id, workers in plain:
        if not isinstance(workers, list):
            continue
        for w in workers:
            if not isinstance(w, dict) or "name" not in w:
                continue
            name = w["name"]
            if include_running:
                running.setdefault(name, []).append((shard_id, w.get("running") or {}))
            row = rows.get(name)
            if row is None:
                rows[name] = dict(w)
                continue
            for key, value in w.items():
                if key == "last_active":
                    row[key] = _max(row.get(key), value)
                elif key == "started":
                    row[key] = _min(row.get(key), value)
                elif key == "state":
                    if value == DISABLED_STATE:
                        row[key] = value
                elif key in ("num_unread_rpc_messages", "num_running", "num_pending", "num_uniques"):
                    row[key] = (row.get(key) or 0) + (value or 0)
                elif key == "first_task_display_name":
                    # the shard that has the first task shows its pretty name; the others the raw id
                    if row.get(key) == row.get("first_task") and value != w.get("first_task"):
                        row[key] = value
                elif key == "running":
                    continue
                elif key not in row:
                    row[key] = value
    out = list(rows.values())
    if display is not None:
        for row in out:
            task_id = row.get("first_task")
            if isinstance(task_id, str) and "first_task_display_name" in row:
                row["first_task_display_name"] = display.get(task_id, task_id)
    if include_running:
        for row in out:
            tasks = merge_tasks(running.get(row["name"], []), owner, order="last_updated")
            row["running"] = tasks
            row["num_running"] = len(tasks)
    out.sort(
        key=lambda r: (r.get("started") is not None, r.get("started") or 0, -first.get(r["name"], 0)),
        reverse=True,
    )
    return out


def merge_resource_list(results: Results, owner: Owner) -> list[dict[str, Any]]:
    """``resource_list``: capacities are the same on every shard; usage and consumers add up.

    A shard answers ``fed_resource_list``: ``{"resources": Luigi's answer, "order": {id: [seq,
    cseq]}}``; Luigi lists each resource's running tasks in the order they entered RUNNING, which
    the status-entry numbers give across shards (equal timestamps do not).  A plain
    ``resource_list`` answer is taken as is, ordered by timestamps."""
    owner = _hosted_owner(results, owner)
    wrapped = [(sid, r) for sid, r in results if _is_resources(r)]
    order_keys = None
    if wrapped and len(wrapped) == len(results):
        order_keys = _order_keys(wrapped, owner, by_status=True)
    results = [(sid, r["resources"] if _is_resources(r) else r) for sid, r in results]
    rows: dict[str, dict[str, Any]] = {}
    running: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for shard_id, resources in results:
        if not isinstance(resources, list):
            continue
        for r in resources:
            if not isinstance(r, dict) or "name" not in r:
                continue
            name = r["name"]
            row = rows.setdefault(name, {"name": name, "num_total": r.get("num_total"), "num_used": 0})
            row["num_total"] = _max(row.get("num_total"), r.get("num_total"))
            row["num_used"] += r.get("num_used") or 0
            if "running" in r or "num_consumer" in r:
                running.setdefault(name, []).append((shard_id, r.get("running") or {}))
    for name, row in rows.items():
        if name in running:
            tasks = merge_tasks(running[name], owner, order_keys=order_keys)
            row["num_consumer"] = len(tasks)
            row["running"] = tasks
    return list(rows.values())


def _is_resources(result: Any) -> bool:
    return (
        isinstance(result, dict)
        and set(result) - {_HOSTED} == {"resources", "order"}
        and isinstance(result["resources"], list)
        and isinstance(result["order"], dict)
    )


COUNTERS = ("n_pending_tasks", "n_unique_pending", "n_pending_last_scheduled")


def merge_counts(replies: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``count_pending`` (and the counters of ``get_work``): sums over shards, running tasks listed.

    A counter no shard reported stays out (Luigi's answer to a disabled worker's get_work has no
    ``n_pending_last_scheduled``)."""
    out: dict[str, Any] = {
        "n_pending_tasks": 0,
        "n_unique_pending": 0,
        "n_pending_last_scheduled": 0,
        "worker_state": "active",
        "running_tasks": [],
    }
    seen: set[str] = set()
    any_reply = False
    for r in replies:
        if not isinstance(r, dict):
            continue
        any_reply = True
        for key in COUNTERS:
            if key in r:
                seen.add(key)
            out[key] += r.get(key) or 0
        if r.get("worker_state") == DISABLED_STATE:
            out["worker_state"] = DISABLED_STATE
        out["running_tasks"].extend(r.get("running_tasks") or [])
    if any_reply:
        for key in COUNTERS:
            if key not in seen:
                del out[key]
    return out


def merge_ping(results: Results) -> dict[str, Any]:
    """``ping``: the worker's queued messages from every shard that knows it."""
    messages: list[Any] = []
    for _, r in results:
        if isinstance(r, dict):
            messages.extend(r.get("rpc_messages") or [])
    return {"rpc_messages": messages}


def _max(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _min(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


# -- the answer of a fan-out call, one function per merge (router.methods names them) -----------------
@dataclass(frozen=True, slots=True)
class MergeContext:
    """What a merge needs besides the shards' answers."""

    owner: Owner
    max_shown_tasks: int
    max_graph_nodes: int = 100_000


#: ``merge(results, kwargs, ctx)`` -> the answer one luigid would give
Merge = Callable[[Results, dict[str, Any], MergeContext], Any]


def task_list_reply(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    return merge_task_list(
        results,
        ctx.owner,
        limit=bool(kwargs.get("limit", True)),
        max_shown_tasks=kwargs.get("max_shown_tasks") or ctx.max_shown_tasks,
        upstream_status=kwargs.get("upstream_status") or "",
        status=kwargs.get("status") or "",
    )


def task_count_over_limit(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    """``task_list``'s answer from every shard's count before it prunes
    (``fed_task_list(count_only=True)``: ``{"num_tasks": owned, "placeholders": [ids]}``), when
    over ``max_shown_tasks`` (with ``upstream_status``: ``-1``, however few would pass); None
    when under it, or when a shard answered otherwise (it lists, as an older shard would)."""
    if not results or not all(_is_owned_count(r) for _, r in results):
        return None
    owned = sum(r["num_tasks"] for _, r in results)
    pending = {p for _, r in results for p in r["placeholders"] if isinstance(p, str)}
    limit = kwargs.get("max_shown_tasks") or ctx.max_shown_tasks
    if owned + len(pending) > limit:
        return {"num_tasks": -1 if kwargs.get("upstream_status") else owned + len(pending)}
    return None


def worker_list_reply(
    results: Results, kwargs: dict[str, Any], ctx: MergeContext, names: Results | None = None
) -> Any:
    return merge_worker_list(
        results, ctx.owner, include_running=bool(kwargs.get("include_running", True)), names=names
    )


def resource_list_reply(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    return merge_resource_list(results, ctx.owner)


def graph_reply(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    return merge_graph(results, ctx.owner, ctx.max_graph_nodes)


def task_search_reply(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    return merge_task_search(results, ctx.owner)


def paused_reply(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    return {"paused": any(isinstance(r, dict) and r.get("paused") for _, r in results)}


def first_reply(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    return results[0][1]


def nothing_reply(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    return None


def counts_reply(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    return merge_counts(r for _, r in results)


def ping_reply(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    return merge_ping(results)


def prune_history_reply(results: Results, kwargs: dict[str, Any], ctx: MergeContext) -> Any:
    """What each shard that answered deleted."""
    per_shard = {sid: int(r.get("deleted")) for sid, r in results}
    return {
        "deleted": sum(per_shard.values()),
        "shards": per_shard,
        "more": any(bool(r.get("more")) for _, r in results),
    }
