"""Luigi's ``upstream_status`` walk, one function for the shard and the router.

``task_list(upstream_status=...)`` keeps a PENDING task only if the worst status upstream of it
matches.  A shard walks its own tasks; over several shards a PENDING task's dependencies live
anywhere, so the router walks every shard's tasks (``router.merge``) with the same function.
Pure: it reads tasks through ``lookup``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

DONE = "DONE"
PENDING = "PENDING"

UPSTREAM_RUNNING = "UPSTREAM_RUNNING"
UPSTREAM_MISSING_INPUT = "UPSTREAM_MISSING_INPUT"
UPSTREAM_FAILED = "UPSTREAM_FAILED"
UPSTREAM_DISABLED = "UPSTREAM_DISABLED"
#: Luigi's ``UPSTREAM_SEVERITY_ORDER``, as ranks
UPSTREAM_SEVERITY = {
    "": 0,
    UPSTREAM_RUNNING: 1,
    UPSTREAM_MISSING_INPUT: 2,
    UPSTREAM_FAILED: 3,
    UPSTREAM_DISABLED: 4,
}
#: Luigi's ``STATUS_TO_UPSTREAM_MAP``
STATUS_TO_UPSTREAM = {
    "FAILED": UPSTREAM_FAILED,
    "RUNNING": UPSTREAM_RUNNING,
    "BATCH_RUNNING": UPSTREAM_RUNNING,
    PENDING: UPSTREAM_MISSING_INPUT,
    "DISABLED": UPSTREAM_DISABLED,
}

#: a task's ``(status, deps)``, or None when the scheduler has no such task
Lookup = Callable[[str], "tuple[str, Collection[str]] | None"]


def upstream_status(task_id: str, table: dict[str, str], lookup: Lookup) -> str | None:
    """Luigi's memoised post-order DFS (``Scheduler._upstream_status``), verbatim, quirks
    included: ``table`` is shared by every task of one ``task_list`` call, so the order the
    tasks are asked in matters where dependencies form cycles; None for a task it has not."""
    if task_id in table:
        return table[task_id]
    if lookup(task_id) is None:
        return None
    stack = [task_id]
    dep_id = task_id
    while stack:
        dep_id = stack.pop()
        dep = lookup(dep_id)
        if dep is None:
            continue
        status, deps = dep
        if status == DONE:
            continue
        if dep_id not in table:
            if status == PENDING and deps:
                stack.append(dep_id)
                stack.extend(deps)
                table[dep_id] = ""
            else:
                table[dep_id] = STATUS_TO_UPSTREAM.get(status, "")
        elif table[dep_id] == "" and deps:
            table[dep_id] = max((table.get(a, "") for a in deps), key=UPSTREAM_SEVERITY.__getitem__)
    return table[dep_id]
