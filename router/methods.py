"""How the router serves each method: the routing table.

Every ``@rpc_method`` of ``luigi.scheduler.Scheduler`` (39 in luigi 3.8.1)
has exactly one entry here, checked at import time, plus the federation's
own ``federation_health``.

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
``BY_ARG``
    Single-task call whose task id is in another argument (``task`` of
    ``send_scheduler_message``).
``WORKER``
    Sent to every shard that knows ``worker``; answers merged.
``ONE_WORKER``
    Sent to one shard that knows ``worker`` (a message queued once).
``ALL``
    Sent to every shard; answers merged (reads) or checked (writes).
``ANY``
    Any one shard answers for the whole federation (same config everywhere).
``GET_WORK``, ``DEP_GRAPH``, ``INVERSE_DEP_GRAPH``, ``HEALTH``
    Their own algorithms in :mod:`router.server`.
``OWNER``
    Answered by the router itself: the shard that serves a task id.
"""

from __future__ import annotations

from typing import Any

import luigi.scheduler

FORWARD = "forward"
ADD_TASK = "add_task"
FORWARD_RELAY = "forward_relay"
BY_ARG = "by_arg"
WORKER = "worker"
ONE_WORKER = "one_worker"
ALL = "all"
ANY = "any"
GET_WORK = "get_work"
DEP_GRAPH = "dep_graph"
INVERSE_DEP_GRAPH = "inverse_dep_graph"
HEALTH = "health"
OWNER = "owner"

#: method -> (kind, option); the option is the merge name for WORKER/ALL, the argument for BY_ARG
METHODS: dict[str, tuple[str, Any]] = {
    # single task, forwarded untouched
    "set_task_status_message": (FORWARD, None),
    "get_task_status_message": (FORWARD, None),
    "set_task_progress_percentage": (FORWARD, None),
    "get_task_progress_percentage": (FORWARD, None),
    "decrease_running_task_resources": (FORWARD, None),
    "get_running_task_resources": (FORWARD, None),
    "report_task_statistics": (FORWARD, None),
    "add_scheduler_message_response": (FORWARD, None),
    "get_scheduler_message_response": (FORWARD, None),
    "fetch_error": (FORWARD, None),
    "task_events": (FORWARD, None),  # the federation's own: a task's status history from its owner
    "add_task": (ADD_TASK, None),
    "mark_as_done": (FORWARD_RELAY, None),
    "forgive_failures": (FORWARD_RELAY, None),
    "re_enable_task": (FORWARD_RELAY, None),
    "send_scheduler_message": (BY_ARG, "task"),
    # one worker
    "get_work": (GET_WORK, None),
    "count_pending": (WORKER, "counts"),
    "ping": (WORKER, "ping"),
    "add_worker": (WORKER, "none"),
    "disable_worker": (WORKER, "none"),
    "add_task_batcher": (WORKER, "none"),
    "announce_scheduling_failure": (WORKER, "none"),
    "set_worker_processes": (ONE_WORKER, None),
    # the whole federation
    "task_list": (ALL, "task_list"),
    "worker_list": (ALL, "worker_list"),
    "resource_list": (ALL, "resource_list"),
    "graph": (ALL, "graph"),
    "task_search": (ALL, "task_search"),
    "is_paused": (ALL, "any_paused"),
    "pause": (ALL, "none"),
    "unpause": (ALL, "none"),
    "prune": (ALL, "none"),
    "update_resource": (ALL, "first"),
    "update_resources": (ALL, "none"),
    "dep_graph": (DEP_GRAPH, None),
    "inverse_dep_graph": (INVERSE_DEP_GRAPH, None),
    "is_pause_enabled": (ANY, None),
    "has_task_history": (ANY, None),
    "update_metrics_task_started": (ANY, None),
    # the federation's own
    "federation_health": (HEALTH, None),
    "owner": (OWNER, None),
    "prune_history": (ALL, "sum_deleted"),
}

#: forwarded without decoding when the routing frame names the task
UNDECODED = frozenset(m for m, (kind, _) in METHODS.items() if kind == FORWARD)
#: Luigi's RPC methods, the ones the HTTP gateway serves under /api/<method>
LUIGI_METHODS = frozenset(luigi.scheduler.RPC_METHODS)

_missing = LUIGI_METHODS - set(METHODS)
if _missing:  # a new Luigi release added a method: fail loudly rather than answer "unknown method"
    raise ImportError(f"router.methods: no routing for Luigi RPC methods {sorted(_missing)}")
