"""How the router serves each method: the routing table.

Every ``@rpc_method`` of ``luigi.scheduler.Scheduler`` (39 in luigi 3.8.1)
has exactly one entry here, checked at import time, plus the federation's
own ``federation_health``.

Each entry is a :class:`Route`: the kind (which handler of :class:`router.core.RouterCore`
serves it: ``RouterCore.handlers`` maps every kind to one method), and for fan-out kinds the
merge function of :mod:`router.merge` that makes the shards' answers one luigid's answer.

Kinds:

``FORWARD``
    Single-task call: forwarded to the owner of its ``task_id`` (the routing
    frame) without decoding the body, the reply passed back as is.
``ADD_TASK``
    Forwarded to the owner, but decoded first: the router learns which
    shards know the worker, which remote dependencies a shard now mirrors,
    and which shards hold tasks that need resources.
``FORWARD_RELAY``
    Forwarded to the owner; the reply waits until the owner's status change
    has been relayed to the shards that mirror the task (UI actions).
``WORKER``
    Sent to every shard that knows ``worker``; answers merged.
``ONE_WORKER``
    Sent to one shard that knows ``worker`` (a message queued once: ``set_worker_processes``,
    ``send_scheduler_message``), its home shard when none does yet.
``ALL``
    Sent to every shard; answers merged (reads) or checked (writes).
``TASK_LIST``
    ``task_list``: with a limit and no search, every shard first counts the tasks of the status
    (``fed_task_list(count_only=True)``, no prune): over ``max_shown_tasks`` luigid answers the
    count before it prunes anything; else an ``ALL`` read.
``WORKER_LIST``
    ``worker_list``: an ``ALL`` read, then, for workers whose first task no shard answered as
    its own, every shard is asked for that task's display name (``fed_display_names``).
``ANY``
    Any one shard answers for the whole federation (same config everywhere).
``GET_WORK``, ``DEP_GRAPH``, ``INVERSE_DEP_GRAPH``, ``HEALTH``
    Their own algorithms (:mod:`router.getwork`, :mod:`router.graph`, :mod:`router.core`).
``OWNER``
    Answered by the router itself: the shard that serves a task id.
``RESHARD``
    Online resharding, served by :class:`router.reshard.Resharder` (``fedctl reshard``).
"""

from __future__ import annotations

from typing import NamedTuple

import luigi.scheduler

from router import merge

FORWARD = "forward"
ADD_TASK = "add_task"
FORWARD_RELAY = "forward_relay"
WORKER = "worker"
ONE_WORKER = "one_worker"
ALL = "all"
WORKER_LIST = "worker_list"
TASK_LIST = "task_list"
ANY = "any"
GET_WORK = "get_work"
DEP_GRAPH = "dep_graph"
INVERSE_DEP_GRAPH = "inverse_dep_graph"
HEALTH = "health"
OWNER = "owner"
RESHARD = "reshard"
#: a single-task read whose owner may not know the task while a dependent's shard has its placeholder
PLACEHOLDER_READ = "placeholder_read"

KINDS = frozenset(
    {
        FORWARD,
        ADD_TASK,
        FORWARD_RELAY,
        WORKER,
        ONE_WORKER,
        ALL,
        WORKER_LIST,
        TASK_LIST,
        ANY,
        GET_WORK,
        PLACEHOLDER_READ,
        DEP_GRAPH,
        INVERSE_DEP_GRAPH,
        HEALTH,
        OWNER,
        RESHARD,
    }
)


class Route(NamedTuple):
    kind: str
    #: WORKER/ALL: how the answers are merged
    merge: merge.Merge | None = None
    #: ALL: a read (down shards are left out, the others answer) rather than a write (every shard must)
    read: bool = False
    #: WORKER: an error of one shard does not fail the call (Luigi only logs a failed ping)
    tolerant: bool = False
    #: ALL: the federation's variant the shards are asked instead (answers carry what the merge needs)
    shard_method: str | None = None


def _read(fn: merge.Merge) -> Route:
    return Route(ALL, fn, read=True)


#: method -> how the router serves it
METHODS: dict[str, Route] = {
    # single task, forwarded untouched
    "set_task_status_message": Route(FORWARD),
    "get_task_status_message": Route(PLACEHOLDER_READ),
    "set_task_progress_percentage": Route(FORWARD),
    "get_task_progress_percentage": Route(PLACEHOLDER_READ),
    "decrease_running_task_resources": Route(FORWARD),
    "get_running_task_resources": Route(FORWARD),
    "report_task_statistics": Route(FORWARD),
    "add_scheduler_message_response": Route(FORWARD),
    "get_scheduler_message_response": Route(FORWARD),
    "fetch_error": Route(PLACEHOLDER_READ),
    "task_events": Route(FORWARD),  # the federation's own: a task's status history from its owner
    "add_task": Route(ADD_TASK),
    "mark_as_done": Route(FORWARD_RELAY),
    "forgive_failures": Route(FORWARD_RELAY),
    "re_enable_task": Route(FORWARD_RELAY),
    # one worker
    "get_work": Route(GET_WORK),
    "count_pending": Route(WORKER, merge.counts_reply),
    "ping": Route(WORKER, merge.ping_reply, tolerant=True),
    "add_worker": Route(WORKER, merge.nothing_reply),
    "disable_worker": Route(WORKER, merge.nothing_reply),
    "add_task_batcher": Route(WORKER, merge.nothing_reply),
    "announce_scheduling_failure": Route(WORKER, merge.nothing_reply),
    "set_worker_processes": Route(ONE_WORKER),
    # luigid queues the message on the worker (made on demand), not on the task: the shard that
    # queues it must be one the worker's next ping asks
    "send_scheduler_message": Route(ONE_WORKER),
    # the whole federation
    "task_list": Route(TASK_LIST, merge.task_list_reply, read=True, shard_method="fed_task_list"),
    "worker_list": Route(WORKER_LIST, merge.worker_list_reply, read=True, shard_method="fed_worker_list"),
    "resource_list": Route(ALL, merge.resource_list_reply, read=True, shard_method="fed_resource_list"),
    "graph": Route(ALL, merge.graph_reply, read=True, shard_method="fed_graph"),
    "task_search": Route(ALL, merge.task_search_reply, read=True, shard_method="fed_task_search"),
    "is_paused": _read(merge.paused_reply),
    "prune_history": _read(merge.prune_history_reply),
    "pause": Route(ALL, merge.nothing_reply),
    "unpause": Route(ALL, merge.nothing_reply),
    "prune": Route(ALL, merge.nothing_reply),
    "update_resource": Route(ALL, merge.first_reply),
    "update_resources": Route(ALL, merge.nothing_reply),
    "dep_graph": Route(DEP_GRAPH),
    "inverse_dep_graph": Route(INVERSE_DEP_GRAPH),
    "is_pause_enabled": Route(ANY),
    "has_task_history": Route(ANY),
    "update_metrics_task_started": Route(ANY),
    # the federation's own
    "federation_health": Route(HEALTH),
    "owner": Route(OWNER),
    # online resharding (router/reshard.py; ZeroMQ only, like prune_history)
    "reshard_plan": Route(RESHARD),
    "reshard_apply": Route(RESHARD),
    "reshard_status": Route(RESHARD),
    "reshard_abort": Route(RESHARD),
}

#: forwarded without decoding when the routing frame names the task
UNDECODED = frozenset(m for m, route in METHODS.items() if route.kind == FORWARD)
#: Luigi's RPC methods, the ones the HTTP gateway serves under /api/<method>
LUIGI_METHODS = frozenset(luigi.scheduler.RPC_METHODS)

_missing = LUIGI_METHODS - set(METHODS)
if _missing:  # a new Luigi release added a method: fail loudly rather than answer "unknown method"
    raise ImportError(f"router.methods: no routing for Luigi RPC methods {sorted(_missing)}")
