"""Luigi 3.8.1's central scheduler semantics: pure, in memory, indexed.

:class:`SchedulerCore` answers every ``@rpc_method`` of
``luigi.scheduler.Scheduler`` (the 39 names in :data:`RPC_METHODS`) with
Luigi's names, keyword arguments, defaults and return shapes, and reproduces
``luigi/scheduler.py`` line by line: the ``add_task`` merge rules,
``set_status`` (batch fan-out, failures and auto-disable with a per-task retry
policy, scheduler disables), ``prune`` (worker timeouts, dead-worker tasks,
removal, retry, ``disable_persist``), resources, batching, pause, scheduler
messages and the read methods.  It does no I/O, no logging and starts no
threads; time comes only from the injected ``clock`` (read once per call, so
one call sees one instant).  It never imports ``luigi.scheduler``.

Durability contract (``shard.changes``)
----------------------------------------
Every mutation marks the touched task/worker ids; :meth:`SchedulerCore.collect_changes`
builds the full records of exactly those (plus deletions, changed meta keys and
the status events) and resets the marks.  :meth:`SchedulerCore.snapshot` /
:meth:`SchedulerCore.restore` give and take the whole state as records.

* Task record: everything needed to rebuild the task (see ``_task_record``),
  including ``seq`` (order in which the task entered its status — Luigi's
  ``_status_tasks`` order, the tie-break of ``get_work``) and ``cseq``
  (creation order — Luigi's ``_tasks`` order, used by ``prune``, ``graph``,
  ``task_list``).
* Worker record: ``worker_id, last_active, started, last_get_work, reference,
  info, disabled, rpc_messages, cseq``.  ``worker.tasks`` is derived from the
  tasks' ``workers`` lists.
* ``Changes.meta`` keys: ``"resources"`` — the resource amounts set at run time
  through ``update_resource(s)`` (the effective capacities are the config's
  ``[resources]`` overlaid with these); ``"paused"`` — bool; ``"batchers"`` —
  ``{worker: {family: [batched_args, max_batch_size]}}``.
  Luigi keeps resources and the pause flag only in memory; a shard persists
  them on purpose (surviving restarts is the point of the federation).
* ``Changes.events``: one :class:`~shard.changes.Event` per actual status
  change of a task — including its creation, as a change from nothing to its
  first status — plus a RUNNING event with the host each time ``get_work``
  hands a task out (also when it re-sends a task that was already RUNNING).

Indexes (T tasks, d deps per task, W workers)
---------------------------------------------
* status index in status-entry order (Luigi's ``_status_tasks``);
* reverse dependencies + per-task count of deps not DONE: "schedulable" is
  O(1); a status change to/from DONE touches only direct dependents;
* ready (PENDING, all deps DONE) tasks in :class:`~shard._index.RankQueue`\\ s
  ordered by Luigi's rank: per worker and resource signature, globally per
  (runnable, resource signature), and per family (for batching);
* per-worker counters for ``count_pending`` / ``worker_list`` (PENDING and
  FAILED counts, unique, last-scheduled, PENDING-with-resources for the
  trivial-worker test), the RUNNING tasks each worker could run, and the
  RUNNING/BATCH_RUNNING tasks by ``worker_running`` and by ``batch_id``;
* prune candidates: tasks without stakeholders and not yet marked for removal,
  a min-heap of removal times, plus the FAILED/DISABLED/RUNNING status sets.

Costs: ``add_task`` O(d + workers of the task · log n) plus Luigi's priority
propagation; ``get_work`` for a trivial worker O(log n); for a worker with
resources or an assistant, the greedy walk merges, in rank order, one stream
per (live worker with a free greedy slot, resource signature) plus the asking
worker's candidates and the RUNNING tasks of live workers.  Every ready task it
takes either is the answer or is charged to a slot (so at most the live
workers' slots of them), and a stream is dropped as soon as its owner has no
slot left or its resource signature stops fitting the (only growing) greedy
resources: O((W_live · signatures + slots + R) · log) — not growing with the
number of pending tasks.  Plus O(W) to find the live workers and O(R) for the
used resources, as Luigi.  Stale heap entries are skipped on the way; they are
bounded by the live ones (a queue is rebuilt past 2x).  Batching (only when
the worker registered a batcher for the family) walks that family's ready
queue: O(ready tasks of the family) — the one place with a fuller walk.  ``count_pending`` is O(1)
plus the worker's RUNNING tasks; only when some task is DISABLED does it
subtract the tasks whose upstream is disabled, computed once by a reverse
walk from the DISABLED tasks through PENDING dependents and cached until a
relevant change.  ``prune`` visits only tasks that can change (FAILED,
DISABLED, RUNNING, BATCH_RUNNING, unmarked orphans, due removals), in creation
order like Luigi, plus O(W); removing a worker costs O(its tasks).

Deliberate differences from Luigi
---------------------------------
* Bad arguments raise ``TypeError``/``ValueError`` before any state changes
  (Luigi sometimes half-applies a call before failing).  Ids are ``str``;
  priorities and resource amounts are numbers (not bool, not NaN); statuses
  must be Luigi statuses; worker ``info`` may not use the keys ``worker_list``
  itself writes (Luigi would crash there later).
* ``add_task(status=RUNNING, batch_id=X)`` for a batch with no BATCH_RUNNING
  member raises ``ValueError`` up front (Luigi raises IndexError half-way).
  ``decrease_running_task_resources`` on a RUNNING task that never had
  ``resources_running`` set is a no-op (Luigi raises AttributeError, changing
  nothing).
* Ties that Luigi leaves to hash order are made deterministic: deps keep the
  order in which they were sent (Luigi: set order) and placeholders are created
  in that order; a trivial worker's candidates are taken in status-entry order
  (Luigi uses that order or, when the worker has few tasks, the arbitrary
  order of a set of Task objects).  Luigi keeps pruned Task objects in
  ``worker.tasks``; only live tasks count here.
* Upstream-disabled exclusion in ``count_pending`` is the exact fixpoint on
  the dependency DAG; Luigi's memoised DFS can differ from it only on cyclic
  graphs or UNKNOWN tasks that carry deps.
* No e-mail is sent (``batch_emails``/``announce_scheduling_failure`` are
  accepted and do nothing), metrics collectors are not run
  (``update_metrics_task_started`` and ``report_task_statistics`` are no-ops,
  like Luigi's default collector), and there is no task-history DB:
  ``has_task_history`` returns the config flag and the event history replaces it.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from heapq import heapify, heappop, heappush
from itertools import chain
from typing import Any, Protocol

from federation.config import SchedulerConfig
from federation.summary import SUMMARY_BATCH, SUMMARY_BATCH_RUNNING, SUMMARY_NONTRIVIAL
from federation.upstream import upstream_status
from shard._index import RankQueue
from shard.changes import Changes, Event, Snapshot

__all__ = ["RPC_METHODS", "SchedulerCore", "TaskView"]


def _disabled_reply(w: _Worker) -> dict[str, Any]:
    """Luigi's answer to a disabled worker's get_work (its exact keys and order)."""
    return {
        "n_pending_tasks": 0,
        "running_tasks": [],
        "task_id": None,
        "n_unique_pending": 0,
        "worker_state": w.state,
    }


#: the methods callable over the wire: exactly luigi.scheduler.RPC_METHODS of 3.8.1
RPC_METHODS: frozenset[str] = frozenset(
    {
        "prune", "add_task_batcher", "forgive_failures", "mark_as_done", "add_task",
        "announce_scheduling_failure", "add_worker", "disable_worker", "set_worker_processes",
        "send_scheduler_message", "add_scheduler_message_response", "get_scheduler_message_response",
        "has_task_history", "is_pause_enabled", "is_paused", "pause", "unpause", "update_resources",
        "update_resource", "count_pending", "get_work", "ping", "graph", "dep_graph",
        "inverse_dep_graph", "task_list", "worker_list", "resource_list", "task_search",
        "re_enable_task", "fetch_error", "set_task_status_message", "get_task_status_message",
        "set_task_progress_percentage", "get_task_progress_percentage",
        "decrease_running_task_resources", "get_running_task_resources",
        "update_metrics_task_started", "report_task_statistics",
    }
)  # fmt: skip

# Luigi's task statuses (``luigi.task_status``), spelled out: importing anything from ``luigi``
# runs ``luigi/__init__``, which loads tornado, tenacity and Luigi's RPC client into a pure module.
PENDING = "PENDING"
FAILED = "FAILED"
DONE = "DONE"
RUNNING = "RUNNING"
BATCH_RUNNING = "BATCH_RUNNING"
SUSPENDED = "SUSPENDED"  # deprecated by Luigi; add_task takes it as PENDING
UNKNOWN = "UNKNOWN"
DISABLED = "DISABLED"

WORKER_STATE_DISABLED = "disabled"
WORKER_STATE_ACTIVE = "active"
_TASK_FAMILY_RE = re.compile(r"([^(_]+)[(_]")

_ALL_STATUSES = (PENDING, RUNNING, DONE, FAILED, DISABLED, UNKNOWN, BATCH_RUNNING, SUSPENDED)
_STATUSES = frozenset(_ALL_STATUSES)
_ACTIVE = (RUNNING, BATCH_RUNNING)
_COUNTED = (PENDING, FAILED, RUNNING)
_RETRY_KEYS = ("retry_count", "disable_hard_timeout", "disable_window")
# keys worker_list() writes itself; Luigi crashes (duplicate kwarg) if info has them
_RESERVED_INFO = frozenset(
    {"name", "last_active", "started", "state", "first_task_display_name", "num_unread_rpc_messages"}
)
_PUBLIC, _HIDDEN = 0, 1  # luigi.parameter.ParameterVisibility values

Sig = tuple[tuple[str, float], ...]
#: a worker's ``info`` as Luigi sends it: a mapping, or a list of ``[key, value]`` pairs
WorkerInfo = dict[str, Any] | Sequence[Sequence[Any]]

_NOTHING: frozenset[str] = frozenset()


#: numbers left below a batch runner's for its batch's tasks on every shard (router stamps are
#: ``1 << STAMP_SHIFT`` apart, so a request's own events never reach this far)
MEMBER_ROOM = 1 << 15

#: first mentions kept for tasks a shard does not have yet (``SchedulerCore.first_mention``)
MAX_MENTIONS = 100_000


class TaskView(Protocol):
    """What a caller outside the core may read of a task (:meth:`SchedulerCore.get_task`)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def priority(self) -> Any: ...
    @property
    def family(self) -> Any: ...
    @property
    def time(self) -> float:
        """When the task was created (Luigi's ``start_time``)."""
        ...

    @property
    def cseq(self) -> int:
        """Its creation number (the order this core first heard of it; ``observe_stamp``)."""
        ...

    @property
    def resources(self) -> dict[str, Any]: ...
    @property
    def stakeholders(self) -> AbstractSet[str]: ...
    @property
    def deps(self) -> Mapping[str, None]:
        """Its dependencies (ids, in the order Luigi keeps them)."""
        ...

    @property
    def pretty_id(self) -> str:
        """Luigi's display name: ``Family(k=v, ...)`` over the public params."""
        ...

    @property
    def fed(self) -> dict[str, Any]:
        """Opaque federation data, persisted in the record; change it with ``update_fed``."""
        ...


# --------------------------------------------------------------------------- validation


def _running_event(t: _Task, worker: str) -> list[Any]:
    """A RUNNING task as a greedy event for other shards' walks (``external_greedy``, group 1):
    in its rank place it uses a slot of ``worker`` and holds its resources."""
    rr = t.resources_running if t.resources_running is not None else t.resources
    return [-t.priority, t.time, t.seq, 1, [[r, a] for r, a in (rr or {}).items()], worker]


def _pairs(value: Any) -> list[tuple[Any, Any]]:
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        raise TypeError("resources must be [[name, amount], ...]")
    return [(p[0], p[1]) for p in value]


def _is_num(v: object) -> bool:
    return (
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and not (isinstance(v, float) and math.isnan(v))
    )


def _req_str(name: str, v: object) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{name} must be a string, got {type(v).__name__}")
    return v


def _opt_str(name: str, v: object) -> None:
    if v is not None and not isinstance(v, str):
        raise TypeError(f"{name} must be a string or null, got {type(v).__name__}")


def _opt_bool(name: str, v: object) -> None:
    if v is not None and not isinstance(v, bool):
        raise TypeError(f"{name} must be a boolean or null, got {type(v).__name__}")


def _flag(name: str, v: object) -> None:
    if v is not None and not isinstance(v, (bool, int)):
        raise TypeError(f"{name} must be a boolean, got {type(v).__name__}")


def _number(name: str, v: object) -> None:
    if not _is_num(v):
        raise TypeError(f"{name} must be a number, got {v!r}")


def _str_list(name: str, v: object) -> list[str] | None:
    if v is None:
        return None
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"{name} must be a list of task ids, got {type(v).__name__}")
    for x in v:
        if not isinstance(x, str):
            raise TypeError(f"{name} must be a list of strings, got an item of type {type(x).__name__}")
    return list(v)


def _amounts(name: str, v: object) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise TypeError(f"{name} must be a mapping of name to number, got {type(v).__name__}")
    for k, a in v.items():
        if not isinstance(k, str):
            raise TypeError(f"{name} keys must be strings")
        if not _is_num(a):
            raise TypeError(f"{name}[{k!r}] must be a number, got {a!r}")
    return dict(v)


def _str_dict(name: str, v: object) -> None:
    if v is None:
        return
    if not isinstance(v, dict):
        raise TypeError(f"{name} must be a mapping, got {type(v).__name__}")
    for k in v:
        if not isinstance(k, str):
            raise TypeError(f"{name} keys must be strings")


def _visibilities(v: object) -> None:
    _str_dict("param_visibilities", v)
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(x, int) or isinstance(x, bool):
                raise TypeError(f"param_visibilities[{k!r}] must be an int, got {x!r}")


def _info_items(info: object) -> list[tuple[str, Any]]:
    if isinstance(info, dict):
        items = list(info.items())
    elif isinstance(info, (list, tuple)):
        items = []
        for pair in info:
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise TypeError("info must be a mapping or a list of [key, value] pairs")
            items.append((pair[0], pair[1]))
    else:
        raise TypeError(f"info must be a mapping or a list of pairs, got {type(info).__name__}")
    for k, v in items:
        if not isinstance(k, str):
            raise TypeError("info keys must be strings")
        if k in _RESERVED_INFO:
            raise ValueError(f"info key {k!r} is reserved")
        if k == "workers" and not _is_num(v):
            raise TypeError(f"info['workers'] must be a number, got {v!r}")
    return items


def _sig(resources: dict[str, Any]) -> Sig:
    return tuple(sorted(resources.items())) if resources else ()


# --------------------------------------------------------------------------- state objects


class _Marks(dict[str, None]):
    """An insertion-ordered set of ids: changes come out in the order they were first touched."""

    __slots__ = ()

    def add(self, key: str) -> None:
        self[key] = None

    def discard(self, key: str) -> None:
        self.pop(key, None)


class _Task:
    __slots__ = (
        "id", "status", "deps", "stakeholders", "workers", "time", "updated", "retry", "remove",
        "worker_running", "time_running", "expl", "priority", "resources", "resources_running",
        "family", "module", "param_visibilities", "params", "public_params", "hidden_params",
        "accepts_messages", "retry_policy", "failures", "first_failure_time", "tracking_url",
        "status_message", "progress_percentage", "scheduler_message_responses",
        "scheduler_disable_time", "runnable", "batchable", "batch_id", "owners", "fed",
        # index fields
        "seq", "cseq", "walk", "nd", "queued", "qkey", "sig",
    )  # fmt: skip

    def __init__(self, task_id: str, status: str, now: float) -> None:
        self.id = task_id
        self.status = status
        self.deps: dict[str, None] = {}
        self.stakeholders: set[str] = set()
        self.workers: dict[str, None] = {}  # Luigi's OrderedSet
        self.time = now
        self.updated = now
        self.retry: float | None = None
        self.remove: float | None = None
        self.worker_running: str | None = None
        self.time_running: float | None = None
        self.expl: Any = None
        self.priority: Any = 0
        self.resources: dict[str, Any] = {}
        self.resources_running: dict[str, Any] | None = None  # None: never set (Luigi: attribute missing)
        self.family: Any = ""
        self.module: Any = None
        self.param_visibilities: dict[str, Any] = {}
        self.params: dict[str, Any] = {}
        self.public_params: dict[str, Any] = {}
        self.hidden_params: dict[str, Any] = {}
        self.accepts_messages: Any = False
        self.retry_policy: tuple[Any, Any, Any] = (0, 0, 0)
        self.failures: deque[float] = deque()
        self.first_failure_time: float | None = None
        self.tracking_url: Any = None
        self.status_message: Any = None
        self.progress_percentage: Any = None
        self.scheduler_message_responses: dict[str, Any] = {}
        self.scheduler_disable_time: float | None = None
        self.runnable = False
        self.batchable: Any = False
        self.batch_id: str | None = None
        self.owners: Any = None
        self.fed: dict[str, Any] = {}  # opaque federation data (shard.federated), persisted as is
        self.seq = 0
        self.cseq = 0
        #: entered its status in a prune's walk: (the prune's first number, the creation number of
        #: the task the walk was at); None otherwise (``order_keys``)
        self.walk: tuple[int, int] | None = None
        self.nd = 0  # deps that are missing or not DONE
        self.queued: tuple[RankQueue, ...] | list[RankQueue] = ()
        self.qkey: tuple[Any, float, int] | None = None  # the key it is queued under
        self.sig: Sig = ()

    def set_params(self, params: dict[str, Any] | None) -> None:
        self.params = params if params is not None else {}
        vis = self.param_visibilities
        self.public_params = {k: v for k, v in self.params.items() if vis.get(k, _PUBLIC) == _PUBLIC}
        self.hidden_params = {k: v for k, v in self.params.items() if vis.get(k, _PUBLIC) == _HIDDEN}

    @property
    def pretty_id(self) -> str:
        param_str = ", ".join(f"{k}={v}" for k, v in sorted(self.public_params.items()))
        return f"{self.family}({param_str})"


class _Worker:
    __slots__ = (
        "id",
        "reference",
        "last_active",
        "last_get_work",
        "started",
        "info",
        "disabled",
        "rpc_messages",
        "cseq",
    )

    def __init__(self, worker_id: str, now: float, cseq: int) -> None:
        self.id = worker_id
        self.reference: Any = None
        self.last_active = now
        self.last_get_work: float | None = None
        self.started = now
        self.info: dict[str, Any] = {}
        self.disabled = False
        self.rpc_messages: list[dict[str, Any]] = []
        self.cseq = cseq

    @property
    def state(self) -> str:
        return WORKER_STATE_DISABLED if self.disabled else WORKER_STATE_ACTIVE


#: what get_work would hand out: (the task, its batch (batched params, members), a re-send?)
_Pick = tuple[_Task | None, tuple[dict[str, list[Any]], list[_Task]] | None, bool]


# --------------------------------------------------------------------------- the core


class SchedulerCore:
    """Luigi's central scheduler, indexed; see the module docstring."""

    def __init__(self, config: SchedulerConfig | None = None, clock: Callable[[], float] = time.time) -> None:
        self._config = config if config is not None else SchedulerConfig()
        self._clock = clock
        #: message ids for send_scheduler_message (replaceable in tests)
        self.new_message_id: Callable[[], str] = lambda: str(uuid.uuid4())
        #: keep what batch runners do to their batches for ``take_batch_effects`` (a federation
        #: shard passes it on to the shards that hold the rest of a batch)
        self.keep_batch_effects = False
        #: federation: record the priorities Luigi's inheritance would raise into dependencies
        #: this core does not have (``take_dep_raises``): their owners elsewhere may have them
        self.keep_dep_raises = False
        self._dep_raises: dict[str, Any] = {}
        cfg = self._config
        self._default_policy = (cfg.retry_count, cfg.disable_hard_timeout, cfg.disable_window)
        self._reset()

    # ------------------------------------------------------------------ state

    def _reset(self) -> None:
        self._now = 0.0
        self._ctx_worker: str | None = None
        self._ctx_host: str | None = None
        self._tasks: dict[str, _Task] = {}
        self._by_status: dict[str, dict[str, _Task]] = {s: {} for s in _ALL_STATUSES}
        self._workers: dict[str, _Worker] = {}
        self._batchers: dict[str, dict[str, tuple[list[str], Any]]] = {}
        #: federation: batches whose members here were handed out with a batch of another shard
        #: (that shard holds the runner and decides); effects of batch runners for other shards
        self._remote_batches: set[str] = set()
        self._batch_effects: list[list[Any]] = []
        #: federation: first mentions (as another shard's dependency placeholder) of tasks not
        #: here yet: task id -> (time, creation number), taken when the task is created
        self._mentions: dict[str, tuple[float, int]] = {}
        #: federation: workers that are stakeholders of a task not here yet through another shard's
        #: dependency placeholder (``add_stakeholders``): task id -> workers, taken at its creation
        self._stake_later: dict[str, dict[str, None]] = {}
        #: federation: status message / progress set on another shard's placeholder of a task not
        #: here yet (``placeholder_fields``): the task made here later has them, as luigid's does
        self._pending_fields: dict[str, dict[str, Any]] = {}
        #: placeholders of tasks deleted where they live (a federation's mirrors whose owner pruned
        #: the task): the next mention makes them anew, as Luigi makes a deleted task anew (a new
        #: creation time and number, the federation data cleared: ``_remake``)
        self.gone: set[str] = set()
        self._resource_overrides: dict[str, Any] = {}
        self._resources: dict[str, Any] = dict(self._config.resources)
        self._paused = False
        self._seq = 0
        self._cseq = 0
        self._wseq = 0
        self._walk: tuple[int, int] | None = None  # a prune's walk is at (``_prune_walk``)
        # indexes
        self._rdeps: dict[str, set[str]] = {}
        self._wtasks: dict[str, set[str]] = {}  # worker -> tasks with worker in task.workers
        self._wstake: dict[str, set[str]] = {}  # worker -> tasks with worker in task.stakeholders
        # worker -> [PENDING, FAILED, unique P, unique F, last P, last F, PENDING with resources]
        self._wcnt: dict[str, list[int]] = {}
        self._wrun: dict[str, set[str]] = {}  # worker -> RUNNING tasks with worker in task.workers
        self._active_by_wr: dict[Any, set[str]] = {}  # worker_running -> RUNNING/BATCH_RUNNING tasks
        self._batch: dict[Any, set[str]] = {}  # batch_id -> BATCH_RUNNING tasks
        self._wq: dict[str, dict[Sig, RankQueue]] = {}
        self._gq: dict[tuple[bool, Sig], RankQueue] = {}
        self._fq: dict[Any, RankQueue] = {}
        self._orphans: set[str] = set()  # no stakeholders and remove is None
        self._remove_heap: list[tuple[float, str]] = []
        self._ud: set[str] | None = None  # PENDING tasks whose upstream status is UPSTREAM_DISABLED
        self._ud_sub: dict[str, list[int]] = {}
        self._external_used: dict[str, Any] = {}
        #: federation: other shards' greedy events for this get_work (None: count their RUNNING
        #: resources up front), and this walk's own (``external_greedy``, ``greedy_events``)
        self._external_greedy: list[tuple[Any, Any, int, int, Sig, str | None]] | None = None
        self.greedy_events: list[list[Any]] = []
        #: federation: a router's guarded grant (``fed_get_work(guard=...)``): hand out only a plain
        #: choice ranked at least this (``[]``: any plain choice); ``declined`` says one was refused
        self.grant_guard: list[Any] | None = None
        self.declined = False
        # dirty marks
        self._d_tasks = _Marks()
        self._d_del_tasks = _Marks()
        self._d_workers = _Marks()
        self._d_del_workers = _Marks()
        self._d_meta = _Marks()
        self._events: list[Event] = []
        #: federation: the workers whose get_work summary may have changed since the last
        #: ``worker_summaries`` (all of them after a restore), and the summaries last given out
        self._sum_dirty: set[Any] = set()
        self._sum_all = True
        self._sum_sent: dict[str, list[Any]] = {}
        self._sum_ud_sub: dict[str, list[int]] | None = None

    def _begin(self, worker: str | None = None, host: str | None = None) -> float:
        now = self._now = self._clock()
        self._ctx_worker = worker
        self._ctx_host = host
        return now

    # ------------------------------------------------------------------ workers

    def _get_worker(self, worker_id: str) -> _Worker:
        w = self._workers.get(worker_id)
        if w is None:
            self._wseq += 1
            w = self._workers[worker_id] = _Worker(worker_id, self._now, self._wseq)
            self._sum_dirty.add(worker_id)
            self._d_del_workers.discard(worker_id)
            self._d_workers.add(worker_id)
        return w

    def _update_worker(self, worker_id: str, reference: Any = None, get_work: bool = False) -> _Worker:
        w = self._get_worker(worker_id)
        if reference:
            w.reference = reference
        w.last_active = self._now
        if get_work:
            w.last_get_work = self._now
        self._d_workers.add(worker_id)
        return w

    def _remove_worker_everywhere(self, worker_id: str, stakeholders: bool) -> None:
        tasks = self._tasks
        if stakeholders:
            for tid in self._wstake.pop(worker_id, ()):
                t = tasks[tid]
                t.stakeholders.discard(worker_id)
                if not t.stakeholders and t.remove is None:
                    self._orphans.add(tid)
                self._d_tasks.add(tid)
        for tid in list(self._wtasks.get(worker_id, ())):
            self._del_task_worker(tasks[tid], worker_id)
        self._wtasks.pop(worker_id, None)
        if stakeholders and self._stake_later:
            for tid in [tid for tid, ws in self._stake_later.items() if worker_id in ws]:
                ws = self._stake_later[tid]
                del ws[worker_id]
                if not ws:
                    del self._stake_later[tid]
        self._sum_dirty.add(worker_id)
        self._wq.pop(worker_id, None)
        self._wrun.pop(worker_id, None)
        self._wcnt.pop(worker_id, None)

    # ------------------------------------------------------------------ task indexes

    def _wcontrib(self, t: _Task, d: int) -> None:
        """Add (d=1) or remove (d=-1) the task's share of its workers' counters."""
        s = t.status
        workers = t.workers
        if not workers:
            return
        self._sum_dirty.update(workers)
        if s == PENDING or s == FAILED:
            i = 0 if s == PENDING else 1
            single = len(workers) == 1
            last = next(reversed(workers))
            pres = s == PENDING and bool(t.resources)
            cnt = self._wcnt
            for g in workers:
                c = cnt.get(g)
                if c is None:
                    c = cnt[g] = [0, 0, 0, 0, 0, 0, 0]
                c[i] += d
                if single:
                    c[2 + i] += d
                if g == last:
                    c[4 + i] += d
                if pres:
                    c[6] += d
        elif s == RUNNING:
            wrun = self._wrun
            tid = t.id
            if d > 0:
                for g in workers:
                    ws = wrun.get(g)
                    if ws is None:
                        ws = wrun[g] = set()
                    ws.add(tid)
            else:
                for g in workers:
                    ws = wrun.get(g)
                    if ws is not None:
                        ws.discard(tid)

    def _active_add(self, t: _Task) -> None:
        self._sum_dirty.add(t.worker_running)
        s = self._active_by_wr.get(t.worker_running)
        if s is None:
            s = self._active_by_wr[t.worker_running] = set()
        s.add(t.id)
        if t.status == BATCH_RUNNING:
            b = self._batch.get(t.batch_id)
            if b is None:
                b = self._batch[t.batch_id] = set()
            b.add(t.id)

    def _active_remove(self, t: _Task) -> None:
        self._sum_dirty.add(t.worker_running)
        s = self._active_by_wr.get(t.worker_running)
        if s is not None:
            s.discard(t.id)
            if not s:
                del self._active_by_wr[t.worker_running]
        if t.status == BATCH_RUNNING:
            b = self._batch.get(t.batch_id)
            if b is not None:
                b.discard(t.id)
                if not b:
                    del self._batch[t.batch_id]

    def _set_worker_running(self, t: _Task, worker_id: str | None) -> None:
        if t.worker_running == worker_id:
            return
        active = t.status in _ACTIVE
        if active:
            self._active_remove(t)
        t.worker_running = worker_id
        if active:
            self._active_add(t)
        self._d_tasks.add(t.id)

    def _set_batch_id(self, t: _Task, batch_id: str | None) -> None:
        if t.batch_id == batch_id:
            return
        active = t.status == BATCH_RUNNING
        if active:
            self._active_remove(t)
        t.batch_id = batch_id
        if active:
            self._active_add(t)
        self._d_tasks.add(t.id)

    def _batch_tasks(self, batch_id: Any) -> list[_Task]:
        """Luigi's get_batch_running_tasks, in BATCH_RUNNING entry order."""
        ids = self._batch.get(batch_id)
        if not ids:
            return []
        tasks = self._tasks
        return sorted((tasks[i] for i in ids), key=lambda t: t.seq)

    def _sync(self, t: _Task) -> None:
        """Put the task in exactly the ready queues it belongs to, touching only what changed."""
        tid = t.id
        self._sum_dirty.update(t.workers)
        old = t.queued
        q: RankQueue | None
        if t.status != PENDING or t.nd:
            for q in old:
                q.discard(tid)
            t.queued = ()
            t.qkey = None
            return
        sig = t.sig
        gkey = (bool(t.runnable), sig)
        q = self._gq.get(gkey)
        if q is None:
            q = self._gq[gkey] = RankQueue()
        qs = [q]
        q = self._fq.get(t.family)
        if q is None:
            q = self._fq[t.family] = RankQueue()
        qs.append(q)
        wq = self._wq
        for g in t.workers:
            m = wq.get(g)
            if m is None:
                m = wq[g] = {}
            q = m.get(sig)
            if q is None:
                q = m[sig] = RankQueue()
            qs.append(q)
        key = (-t.priority, t.time, t.seq)
        if key == t.qkey:
            keep = {id(q) for q in qs}
            for q in old:
                if id(q) not in keep:
                    q.discard(tid)
            had = {id(q) for q in old}
            for q in qs:
                if id(q) not in had:
                    q.add(tid, key[0], key[1], key[2])
        else:
            for q in old:
                q.discard(tid)
            for q in qs:
                q.add(tid, key[0], key[1], key[2])
        t.queued = qs
        t.qkey = key

    def _done_changed(self, task_id: str, done: bool) -> None:
        parents = self._rdeps.get(task_id)
        if not parents:
            return
        tasks = self._tasks
        if done:
            for p in parents:
                pt = tasks[p]
                pt.nd -= 1
                if pt.nd == 0 and pt.status == PENDING:
                    self._sync(pt)
        else:
            for p in parents:
                pt = tasks[p]
                pt.nd += 1
                if pt.nd == 1 and pt.status == PENDING:
                    self._sync(pt)

    def _count_not_done(self, deps: Iterable[str]) -> int:
        tasks = self._tasks
        n = 0
        for d in deps:
            dt = tasks.get(d)
            if dt is None or dt.status != DONE:
                n += 1
        return n

    def _ud_maybe_joins(self, t: _Task) -> bool:
        ud = self._ud
        if ud is None:
            return False
        tasks = self._tasks
        for d in t.deps:
            if d in ud:
                return True
            dt = tasks.get(d)
            if dt is not None and dt.status == DISABLED:
                return True
        return False

    def _move(self, t: _Task, new: str) -> None:
        """Move the task to another status (the body of Luigi's ``if new_status != task.status``)."""
        old = t.status
        tid = t.id
        del self._by_status[old][tid]
        counted = old in _COUNTED or new in _COUNTED
        if counted:
            self._wcontrib(t, -1)
        if old in _ACTIVE:
            self._active_remove(t)
        t.status = new
        self._seq += 1
        t.seq = self._seq
        t.walk = self._walk
        self._by_status[new][tid] = t
        if counted:
            self._wcontrib(t, 1)
        if new in _ACTIVE:
            self._active_add(t)
        t.updated = self._now
        if old == DONE:
            self._done_changed(tid, False)
        elif new == DONE:
            self._done_changed(tid, True)
        if old == PENDING or new == PENDING:
            self._sync(t)
        ud = self._ud
        if ud is not None:
            if (
                old == DISABLED
                or new == DISABLED
                or (old == PENDING and tid in ud)
                or (new == PENDING and self._ud_maybe_joins(t))
            ):
                self._ud = None
        self._events.append(Event(tid, new, self._ctx_worker, self._ctx_host, self._now))
        self._d_tasks.add(tid)

    def _create_task(
        self,
        task_id: str,
        status: str,
        deps: Iterable[str] | None,
        resources: dict[str, Any],
        priority: Any,
        family: Any,
        module: Any,
        params: dict[str, Any] | None,
        param_visibilities: dict[str, Any] | None,
    ) -> _Task:
        t = _Task(task_id, status, self._now)
        if deps:
            t.deps = dict.fromkeys(deps)
        t.resources = resources
        t.sig = _sig(resources)
        t.priority = priority
        t.family = family
        t.module = module
        t.param_visibilities = param_visibilities if param_visibilities is not None else {}
        t.set_params(params)
        t.retry_policy = self._default_policy
        self._cseq += 1
        t.cseq = self._cseq
        self._seq += 1
        t.seq = self._seq
        if self._mentions:
            mention = self._mentions.pop(task_id, None)
            if mention is not None and mention[0] < t.time:
                self._adopt_mention(t, *mention)
        if self._pending_fields:
            for name, value in (self._pending_fields.pop(task_id, None) or {}).items():
                setattr(t, name, value)
        self._tasks[task_id] = t
        self._by_status[status][task_id] = t
        rdeps = self._rdeps
        for d in t.deps:
            s = rdeps.get(d)
            if s is None:
                s = rdeps[d] = set()
            s.add(task_id)
        t.nd = self._count_not_done(t.deps)
        self._orphans.add(task_id)
        if self._stake_later:
            for worker_id in self._stake_later.pop(task_id, ()):
                if worker_id in self._workers:
                    self._add_stakeholder(t, worker_id)
        if status == PENDING:
            self._sync(t)
            if self._ud is not None and self._ud_maybe_joins(t):
                self._ud = None
        self._events.append(Event(task_id, status, self._ctx_worker, self._ctx_host, self._now))
        self._d_del_tasks.discard(task_id)
        self._d_tasks.add(task_id)
        return t

    def _delete_task(self, task_id: str) -> None:
        t = self._tasks.pop(task_id)
        del self._by_status[t.status][task_id]
        if t.status in _COUNTED:
            self._wcontrib(t, -1)
        for g in t.workers:
            s = self._wtasks.get(g)
            if s is not None:
                s.discard(task_id)
        for g in t.stakeholders:
            s = self._wstake.get(g)
            if s is not None:
                s.discard(task_id)
        if t.status in _ACTIVE:
            self._active_remove(t)
        for q in t.queued:
            q.discard(task_id)
        t.queued = ()
        rdeps = self._rdeps
        for d in t.deps:
            s = rdeps.get(d)
            if s is not None:
                s.discard(task_id)
                if not s:
                    del rdeps[d]
        self._orphans.discard(task_id)
        if t.status == DONE:
            self._done_changed(task_id, False)
        if self._ud is not None and (t.status == DISABLED or task_id in self._ud):
            self._ud = None
        self._d_tasks.discard(task_id)
        self._d_del_tasks.add(task_id)

    def _set_deps(self, t: _Task, deps: dict[str, None]) -> None:
        old = t.deps
        if old.keys() == deps.keys():
            t.deps = deps  # same set; keep the newest order
            self._d_tasks.add(t.id)
            return
        tid = t.id
        rdeps = self._rdeps
        for d in old:
            if d not in deps:
                s = rdeps.get(d)
                if s is not None:
                    s.discard(tid)
                    if not s:
                        del rdeps[d]
        for d in deps:
            if d not in old:
                s = rdeps.get(d)
                if s is None:
                    s = rdeps[d] = set()
                s.add(tid)
        t.deps = deps
        was_ready = t.nd == 0
        t.nd = self._count_not_done(deps)
        if t.status == PENDING:
            if was_ready != (t.nd == 0):
                self._sync(t)
            if self._by_status[DISABLED] or self._ud:
                self._ud = None
        self._d_tasks.add(tid)

    def _set_resources(self, t: _Task, resources: dict[str, Any]) -> None:
        sig = _sig(resources)
        if sig == t.sig:
            t.resources = resources
            return
        pending = t.status == PENDING
        if pending and bool(resources) != bool(t.resources):
            self._wcontrib(t, -1)
            t.resources = resources
            self._wcontrib(t, 1)
        else:
            t.resources = resources
        t.sig = sig
        if t.queued:
            self._sync(t)

    def _add_task_worker(self, t: _Task, worker_id: str) -> None:
        if worker_id in t.workers:
            return
        counted = t.status in _COUNTED
        if counted:
            self._wcontrib(t, -1)
        t.workers[worker_id] = None
        s = self._wtasks.get(worker_id)
        if s is None:
            s = self._wtasks[worker_id] = set()
        s.add(t.id)
        if counted:
            self._wcontrib(t, 1)
        if t.status == PENDING and t.nd == 0:
            self._sync(t)
        if self._ud and t.id in self._ud:
            self._ud = None
        self._d_tasks.add(t.id)

    def _del_task_worker(self, t: _Task, worker_id: str) -> None:
        if worker_id not in t.workers:
            return
        counted = t.status in _COUNTED
        if counted:
            self._wcontrib(t, -1)
        del t.workers[worker_id]
        s = self._wtasks.get(worker_id)
        if s is not None:
            s.discard(t.id)
        if counted:
            self._wcontrib(t, 1)
        if t.queued:
            self._sync(t)
        if self._ud and t.id in self._ud:
            self._ud = None
        self._d_tasks.add(t.id)

    def _add_stakeholder(self, t: _Task, worker_id: str) -> None:
        if worker_id in t.stakeholders:
            return
        t.stakeholders.add(worker_id)
        s = self._wstake.get(worker_id)
        if s is None:
            s = self._wstake[worker_id] = set()
        s.add(t.id)
        self._orphans.discard(t.id)
        self._d_tasks.add(t.id)

    def _set_remove(self, t: _Task, value: float | None) -> None:
        t.remove = value
        if value is None:
            if not t.stakeholders:
                self._orphans.add(t.id)
        else:
            self._orphans.discard(t.id)
            heappush(self._remove_heap, (value, t.id))
        self._d_tasks.add(t.id)

    def _set_priority(self, t: _Task, value: Any) -> None:
        old = t.priority
        t.priority = value
        if old != value:
            if t.queued:
                self._sync(t)
            self._d_tasks.add(t.id)
        elif type(old) is not type(value):
            self._d_tasks.add(t.id)

    def _set_family(self, t: _Task, family: Any) -> None:
        if t.family != family:
            t.family = family
            if t.queued:
                self._sync(t)
        else:
            t.family = family

    # ------------------------------------------------------------------ Luigi's state transitions

    def _add_failure(self, t: _Task) -> None:
        if not t.first_failure_time:
            t.first_failure_time = self._now
        t.failures.append(self._now)

    def _num_failures(self, t: _Task) -> int:
        min_time = self._now - t.retry_policy[2]
        failures = t.failures
        while failures and failures[0] < min_time:
            failures.popleft()
        return len(failures)

    def _has_excessive_failures(self, t: _Task) -> bool:
        if t.first_failure_time is not None:
            if self._now >= t.first_failure_time + t.retry_policy[1]:
                return True
        return self._num_failures(t) >= t.retry_policy[0]

    def _clear_failures(self, t: _Task) -> None:
        t.failures.clear()
        t.first_failure_time = None

    def _re_enable(self, t: _Task, with_config: bool) -> None:
        t.scheduler_disable_time = None
        self._clear_failures(t)
        if with_config:
            self._set_status(t, FAILED)
            self._clear_failures(t)
        self._d_tasks.add(t.id)

    def _set_status(self, t: _Task, new: str) -> None:
        """Luigi's SimpleTaskState.set_status."""
        if new == DISABLED and t.status in _ACTIVE:
            return
        now = self._now
        self._d_tasks.add(t.id)
        remove_on_failure = t.batch_id is not None and not t.batchable
        if t.status == DISABLED:
            if new == DONE:
                self._re_enable(t, False)
            elif t.scheduler_disable_time is not None and new != DISABLED:
                return
        if t.status == RUNNING and t.batch_id is not None and new != RUNNING:
            batch_id = t.batch_id
            cross = batch_id in self._remote_batches
            # a batch over several shards: its tasks enter the new status in batch order, before
            # the runner, here and on the other shards (numbers just below this one)
            first = (self._walk[0] if self._walk is not None else self._seq) - MEMBER_ROOM
            if cross:
                # in a prune's walk, the walk's place too (``_Task.walk``)
                self._batch_effect(["status", batch_id, new, first, *(self._walk or ())])
            for bt in self._batch_tasks(batch_id):
                self._set_status(bt, new)
                if cross:
                    self._renumber_member(bt, first)
                self._set_batch_id(bt, None)
            self._set_batch_id(t, None)
            if cross:
                self._forget_remote_batch(batch_id)
        if new == FAILED and t.status != DISABLED:
            self._add_failure(t)
            if self._has_excessive_failures(t):
                t.scheduler_disable_time = now
                new = DISABLED
        elif new == DISABLED:
            t.scheduler_disable_time = None
        if new != t.status:
            self._move(t, new)
        if new == FAILED:
            t.retry = now + self._config.retry_delay
            if remove_on_failure:
                self._set_remove(t, now)

    def _update_priority(self, t: _Task, prio: Any) -> None:
        """Luigi's _update_priority: priority only rises, and rises into existing deps."""
        existing = t.priority if isinstance(t.priority, (int, float)) else 0
        prio = max(prio, existing)
        self._set_priority(t, prio)
        tasks = self._tasks
        stack = [t]
        while stack:
            cur = stack.pop()
            for d in cur.deps:
                dt = tasks.get(d)
                if dt is not None and prio > dt.priority:
                    self._set_priority(dt, prio)
                    stack.append(dt)
                elif dt is None and self.keep_dep_raises and prio > self._dep_raises.get(d, prio - 1):
                    self._dep_raises[d] = prio

    # ------------------------------------------------------------------ prune

    def prune(self) -> None:
        self._begin()
        self._prune()

    def _prune(self) -> None:
        ctx = self._ctx_worker, self._ctx_host
        self._ctx_worker = self._ctx_host = None  # prune's transitions belong to no caller
        try:
            self._prune_now()
        finally:
            self._ctx_worker, self._ctx_host = ctx

    def _prune_now(self) -> None:
        base = self._seq
        try:
            self._prune_walk(base)
        finally:
            self._walk = None

    def _runner_made_first(self, t: _Task) -> int | None:
        """The creation number of the runner of ``t``'s batch, when ``t`` is this shard's part
        of a batch over shards whose runner, on another shard, was made before it
        (``fed["runner"]``: ``[batch id, creation number]``, ``batch_apply``'s ``runner``)."""
        batch_id = t.batch_id
        if t.status != BATCH_RUNNING or batch_id not in self._remote_batches:
            return None
        runner = t.fed.get("runner")
        if not (isinstance(runner, list) and len(runner) == 2 and runner[0] == batch_id):
            return None
        made = runner[1]
        if not isinstance(made, int) or isinstance(made, bool) or made >= t.cseq:
            return None
        return made

    def _prune_walk(self, base: int) -> None:
        """Luigi's prune: its workers, then its tasks in creation order.  What a task's visit
        makes enter a status is numbered ``(base, that task's creation number)`` too
        (``_Task.walk``): one luigid walks all tasks of a federation's shards in one creation
        order, which these numbers give across shards when they pruned under one order stamp."""
        now = self._now
        cfg = self._config
        delay = cfg.worker_disconnect_delay
        for w in [w for w in self._workers.values() if w.last_active + delay < now]:
            del self._workers[w.id]
            self._d_workers.discard(w.id)
            self._d_del_workers.add(w.id)
            self._remove_worker_everywhere(w.id, stakeholders=True)

        assistants = {w.id for w in self._workers.values() if w.info.get("assistant", False)}
        tasks = self._tasks
        bs = self._by_status
        cands: dict[str, _Task] = {}
        cands.update(bs[RUNNING])
        cands.update(bs[BATCH_RUNNING])
        cands.update(bs[FAILED])
        for tid, t in bs[DISABLED].items():
            if t.scheduler_disable_time is not None:
                cands[tid] = t
        for tid in self._orphans:
            cands[tid] = tasks[tid]
        heap = self._remove_heap
        while heap and heap[0][0] <= now:
            value, tid = heappop(heap)
            due = tasks.get(tid)
            if due is not None and due.remove == value:
                cands[tid] = due
        remove: list[str] = []
        for t in sorted(cands.values(), key=lambda t: t.cseq):
            self._walk = (base, t.cseq)
            # fail_dead_worker_task
            if (
                t.status in _ACTIVE
                and t.worker_running
                and t.worker_running not in t.stakeholders
                and t.worker_running not in assistants
            ):
                runner = self._runner_made_first(t)
                if runner is None:
                    self._set_worker_running(t, None)
                    self._set_status(t, FAILED)
                    t.retry = now + cfg.retry_delay
                else:
                    # luigid's walk met the batch's runner (on another shard) first: it failed it
                    # and its batch with it (Luigi's set_status), keeping the members'
                    # worker_running, numbered just below the runner; that shard's status effect
                    # then finds this task done with
                    self._walk = (base, runner)
                    self._set_status(t, FAILED)
                    self._renumber_member(t, base - MEMBER_ROOM)
                    self._set_batch_id(t, None)
                    self._walk = (base, t.cseq)
            # update_status; a federation's mirror whose owner has the task (``fed["live"]``) is
            # that task, which lives as long as its owner keeps it (the owner knows all its
            # stakeholders): never removed here while so
            live = t.fed.get("live") if t.fed else False
            if not t.stakeholders and t.remove is None and t.status != RUNNING and not live:
                self._set_remove(t, now + cfg.remove_delay)
            if t.status == DISABLED and t.scheduler_disable_time is not None:
                if now - t.scheduler_disable_time > cfg.disable_persist:
                    self._re_enable(t, True)
            if t.status == FAILED and cfg.retry_delay >= 0 and t.retry is not None and t.retry < now:
                self._set_status(t, PENDING)
            if t.remove and now >= t.remove:
                if live:
                    self._set_remove(t, None)  # marked again once its owner deleted the task
                else:
                    remove.append(t.id)
        for tid in remove:
            self._delete_task(tid)
        # drop empty queues so the dicts do not grow with every family/signature ever seen
        for gkey in [k for k, q in self._gq.items() if not q]:
            del self._gq[gkey]
        for family in [k for k, q in self._fq.items() if not q]:
            del self._fq[family]
        for m in self._wq.values():
            for sig in [k for k, q in m.items() if not q]:
                del m[sig]

    # ------------------------------------------------------------------ add_task and friends

    def _retry_policy(self, d: object) -> tuple[Any, Any, Any]:
        if d is None:
            return self._default_policy
        if not isinstance(d, dict):
            raise TypeError("retry_policy_dict must be a mapping")
        policy = list(self._default_policy)
        for k, v in d.items():
            if k not in _RETRY_KEYS:
                raise TypeError(f"retry_policy_dict: unexpected key {k!r}")
            if v is not None:
                _number(f"retry_policy_dict[{k!r}]", v)
                policy[_RETRY_KEYS.index(k)] = v
        return (policy[0], policy[1], policy[2])

    def add_task_batcher(
        self, worker: str, task_family: str, batched_args: Sequence[str], max_batch_size: float = float("inf")
    ) -> None:
        _req_str("worker", worker)
        _req_str("task_family", task_family)
        args = _str_list("batched_args", batched_args)
        if args is None:
            raise TypeError("batched_args must be a list of parameter names")
        _number("max_batch_size", max_batch_size)
        self._begin(worker)
        self._batchers.setdefault(worker, {})[task_family] = (args, max_batch_size)
        self._d_meta.add("batchers")
        self._sum_dirty.add(worker)

    def forgive_failures(self, task_id: str | None = None) -> dict[str, Any]:
        _opt_str("task_id", task_id)
        self._begin()
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is None:
            return {"task_id": task_id, "status": None}
        if t.status == FAILED:
            self._set_status(t, PENDING)
        return {"task_id": task_id, "status": t.status}

    def mark_as_done(self, task_id: str | None = None) -> dict[str, Any]:
        _opt_str("task_id", task_id)
        self._begin()
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is None:
            return {"task_id": task_id, "status": None}
        if t.status in (RUNNING, FAILED, DISABLED):
            self._set_status(t, DONE)
        return {"task_id": task_id, "status": t.status}

    def add_task(
        self,
        task_id: str | None = None,
        status: str = PENDING,
        runnable: bool = True,
        deps: Sequence[str] | None = None,
        new_deps: Sequence[str] | None = None,
        expl: Any = None,
        resources: dict[str, float] | None = None,
        priority: float = 0,
        family: str | None = "",
        module: str | None = None,
        params: dict[str, Any] | None = None,
        param_visibilities: dict[str, int] | None = None,
        accepts_messages: bool | None = False,
        assistant: bool = False,
        tracking_url: str | None = None,
        worker: str | None = None,
        batchable: bool | None = None,
        batch_id: str | None = None,
        retry_policy_dict: dict[str, float | None] | None = None,
        owners: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        # --- validate everything before touching state
        task_id = _req_str("task_id", task_id)
        worker = _req_str("worker", worker)
        if not isinstance(status, str):
            raise TypeError("status must be a string")
        if status not in _STATUSES:
            raise ValueError(f"unknown status {status!r}")
        _flag("runnable", runnable)
        deps_l = _str_list("deps", deps)
        new_deps_l = _str_list("new_deps", new_deps)
        res = _amounts("resources", resources)
        _number("priority", priority)
        _opt_str("family", family)
        _opt_str("module", module)
        _str_dict("params", params)
        _visibilities(param_visibilities)
        _opt_bool("accepts_messages", accepts_messages)
        _flag("assistant", assistant)
        _opt_str("tracking_url", tracking_url)
        _opt_bool("batchable", batchable)
        _opt_str("batch_id", batch_id)
        policy = self._retry_policy(retry_policy_dict)
        if owners is not None and not isinstance(owners, (list, tuple)):
            raise TypeError("owners must be a list")

        tasks = self._tasks
        t = tasks.get(task_id)
        w0 = self._workers.get(worker)
        enabled = w0 is None or not w0.disabled
        reached = (t is None and enabled) or (t is not None and (t.status == RUNNING or enabled))
        if status == RUNNING and batch_id and reached and (t is None or not t.worker_running):
            # Luigi copies resources_running from the first BATCH_RUNNING task of the batch
            # (IndexError/AttributeError half-way through when there is none); refuse up front.
            first = self._batch_tasks(batch_id)
            if not first or first[0].resources_running is None:
                raise ValueError(f"no running batch with batch_id {batch_id!r}")

        now = self._begin(worker)
        cfg = self._config
        w = self._update_worker(worker)
        resources = res if res is not None else {}
        if t is None:
            if w.disabled:
                return None
            t = self._create_task(
                task_id, PENDING, deps_l, resources, priority, family, module, params, param_visibilities
            )
        elif t.status != RUNNING and w.disabled:
            return None

        if status == PENDING and t.status == DONE and (now - t.updated) < cfg.stable_done_cooldown_secs:
            return None

        self._d_tasks.add(task_id)
        if not t.family:
            self._set_family(t, family)
        if not t.module:
            t.module = module
        if not t.param_visibilities:
            t.param_visibilities = param_visibilities if param_visibilities is not None else {}
        if not t.params:
            t.set_params(params)

        if batch_id is not None:
            self._set_batch_id(t, batch_id)
            if status == RUNNING and batch_id in self._remote_batches:
                # the runner of a batch over shards: the other shards hear when it was made
                # (``_runner_fails_first``)
                self._batch_effect(["runner", batch_id, t.cseq])
        if status == RUNNING and not t.worker_running:
            self._set_worker_running(t, worker)
            if batch_id:
                rr = self._batch_tasks(batch_id)[0].resources_running
                t.resources_running = dict(rr) if rr is not None else None
            t.time_running = now

        if accepts_messages is not None:
            t.accepts_messages = accepts_messages

        if tracking_url is not None or t.status != RUNNING:
            t.tracking_url = tracking_url
            if t.batch_id is not None:
                if t.batch_id in self._remote_batches:
                    self._batch_effect(["tracking_url", t.batch_id, tracking_url])
                for bt in self._batch_tasks(t.batch_id):
                    bt.tracking_url = tracking_url
                    self._d_tasks.add(bt.id)

        if batchable is not None:
            if bool(t.batchable) != bool(batchable):
                # a get_work summary says whether the best task is batchable (``SUMMARY_BATCH``)
                self._sum_dirty.update(t.workers)
            t.batchable = batchable

        if t.remove is not None:
            self._set_remove(t, None)

        if expl is not None:
            t.expl = expl
            if t.batch_id is not None:
                if t.batch_id in self._remote_batches:
                    self._batch_effect(["expl", t.batch_id, expl])
                for bt in self._batch_tasks(t.batch_id):
                    bt.expl = expl
                    self._d_tasks.add(bt.id)

        if (
            t.status not in _ACTIVE
            or (status in (DONE, FAILED, RUNNING) and t.worker_running == worker)
            or new_deps_l
        ):
            self._set_status(t, PENDING if status == SUSPENDED else status)

        if deps_l is not None or new_deps_l is not None:
            nd = dict.fromkeys(deps_l) if deps_l is not None else dict(t.deps)
            if new_deps_l:
                nd.update(dict.fromkeys(new_deps_l))
            self._set_deps(t, nd)

        self._set_resources(t, resources)

        if not w.disabled and not assistant:
            self._add_stakeholder(t, worker)
            for d in list(t.deps):
                dt = tasks.get(d)
                if dt is None:
                    dt = self._create_task(d, UNKNOWN, None, {}, priority, "", None, None, None)
                elif d in self.gone:
                    self._remake(dt)
                elif dt.fed and worker in dt.fed.get("stale", ()):
                    self._unstale(dt, worker)
                self._add_stakeholder(dt, worker)

        self._update_priority(t, priority)
        t.retry_policy = policy
        if owners is not None:
            t.owners = list(owners)

        if runnable and status != FAILED and not w.disabled:
            self._add_task_worker(t, worker)
            if not t.runnable:
                t.runnable = True
                if t.queued:
                    self._sync(t)
        return None

    def announce_scheduling_failure(
        self,
        task_name: str,
        family: str,
        params: dict[str, Any],
        expl: Any,
        owners: Sequence[str] | None,
        **kwargs: Any,
    ) -> None:
        # Only feeds Luigi's batch e-mailer; a shard sends no e-mail.
        return None

    def add_worker(self, worker: str, info: WorkerInfo, **kwargs: Any) -> None:
        _req_str("worker", worker)
        items = _info_items(info)
        self._begin(worker)
        w = self._get_worker(worker)
        w.info.update(items)
        self._d_workers.add(worker)
        # other workers' running_tasks show this worker's info
        self._sum_all = True

    def disable_worker(self, worker: str) -> None:
        _req_str("worker", worker)
        self._begin(worker)
        self._remove_worker_everywhere(worker, stakeholders=False)
        w = self._get_worker(worker)
        w.disabled = True
        self._d_workers.add(worker)
        self._sum_dirty.add(worker)

    def set_worker_processes(self, worker: str, n: int) -> None:
        _req_str("worker", worker)
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"n must be an integer, got {n!r}")
        self._begin(worker)
        self._get_worker(worker).rpc_messages.append({"name": "set_worker_processes", "kwargs": {"n": n}})
        self._d_workers.add(worker)

    def send_scheduler_message(self, worker: str, task: str, content: Any) -> dict[str, str | None]:
        _req_str("worker", worker)
        _req_str("task", task)
        if not self._config.send_messages:
            return {"message_id": None}
        self._begin(worker)
        message_id = self.new_message_id()
        self._get_worker(worker).rpc_messages.append(
            {
                "name": "dispatch_scheduler_message",
                "kwargs": {"task_id": task, "message_id": message_id, "content": content},
            }
        )
        self._d_workers.add(worker)
        return {"message_id": message_id}

    def add_scheduler_message_response(self, task_id: str | None, message_id: str, response: Any) -> None:
        _opt_str("task_id", task_id)
        _req_str("message_id", message_id)
        self._begin()
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is not None:
            t.scheduler_message_responses[message_id] = response
            self._d_tasks.add(t.id)

    def get_scheduler_message_response(self, task_id: str | None, message_id: str) -> dict[str, Any]:
        _opt_str("task_id", task_id)
        _req_str("message_id", message_id)
        self._begin()
        response = None
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is not None and message_id in t.scheduler_message_responses:
            response = t.scheduler_message_responses.pop(message_id)
            self._d_tasks.add(t.id)
        return {"response": response}

    def has_task_history(self) -> bool:
        return self._config.record_task_history

    def is_pause_enabled(self) -> dict[str, bool]:
        return {"enabled": self._config.pause_enabled}

    def is_paused(self) -> dict[str, bool]:
        return {"paused": self._paused}

    def pause(self) -> None:
        if self._config.pause_enabled and not self._paused:
            self._paused = True
            self._d_meta.add("paused")
            self._sum_all = True

    def unpause(self) -> None:
        if self._config.pause_enabled and self._paused:
            self._paused = False
            self._d_meta.add("paused")
            self._sum_all = True

    def update_resources(self, **resources: float) -> None:
        amounts = _amounts("resources", resources) or {}
        if amounts:
            self._resources.update(amounts)
            self._resource_overrides.update(amounts)
            self._d_meta.add("resources")

    def update_resource(self, resource: str, amount: int) -> bool:
        _req_str("resource", resource)
        if not isinstance(amount, int) or amount < 0:
            return False
        self._resources[resource] = amount
        self._resource_overrides[resource] = amount
        self._d_meta.add("resources")
        return True

    # ------------------------------------------------------------------ get_work

    def _used_resources(self) -> dict[str, Any]:
        used: dict[str, Any] = {}
        for t in self._by_status[RUNNING].values():
            rr = t.resources_running if t.resources_running is not None else t.resources
            if rr:
                for r, a in rr.items():
                    used[r] = used.get(r, 0) + a
        return used

    def _is_trivial(self, w: _Worker) -> bool:
        if w.info.get("assistant", False):
            return False
        c = self._wcnt.get(w.id)
        return c is None or c[6] == 0

    def _reset_orphaned_batch_running_tasks(self, worker_id: str) -> None:
        tasks = self._tasks
        active = [tasks[i] for i in self._active_by_wr.get(worker_id, ())]
        running_batch_ids = {t.batch_id for t in active if t.status == RUNNING}
        # a batch handed out with another shard's batch is that shard's to reset (its runner is there)
        running_batch_ids |= self._remote_batches
        orphaned = sorted(
            (t for t in active if t.status == BATCH_RUNNING and t.batch_id not in running_batch_ids),
            key=lambda t: t.seq,
        )
        for t in orphaned:
            self._set_status(t, PENDING)

    def _greedy_pick(self, worker_id: str, assistant: bool) -> _Task | None:
        """Luigi's walk over all PENDING+RUNNING tasks for a non-trivial worker, without the full walk.

        Only entries that can change the outcome are visited, in rank order: RUNNING tasks of
        live workers, the asking worker's candidates, and ready tasks that a live worker with a
        free greedy slot would be charged for.  A stream of one resource signature is dropped
        once that signature stops fitting the (only growing) greedy resources; a stream owned by
        a worker is dropped once that worker has no slot left (slots only shrink).
        """
        tasks = self._tasks
        greedy = self._greedy_workers()
        caps = self._resources
        used = self._used_resources()
        gres: dict[str, Any] = {}
        external = self._external_greedy
        events: list[list[Any]] = []
        self.greedy_events = events
        for r, a in self._external_used.items():  # RUNNING elsewhere in the federation
            used[r] = used.get(r, 0) + a
            if external is None:  # without their ranks: as if they ranked first
                gres[r] = gres.get(r, 0) + a

        def fits(sig: Sig, pool: dict[str, Any]) -> bool:
            for r, a in sig:
                if a + pool.get(r, 0) > caps.get(r, 1):
                    return False
            return True

        streams: list[tuple[Iterator[tuple[Any, Any, int, str]], str | None, Sig]] = []
        heap: list[tuple[Any, Any, int, int, int, str]] = []

        def add(q: RankQueue, owner: str | None, sig: Sig) -> None:
            if q.peek() is None:
                return
            it = q.ordered()
            e = next(it)
            heap.append((e[0], e[1], 0, e[2], len(streams), e[3]))
            streams.append((it, owner, sig))

        runs = []
        abw = self._active_by_wr
        for g in greedy:
            for tid in abw.get(g, ()):
                t = tasks[tid]
                if t.status == RUNNING:
                    runs.append((-t.priority, t.time, t.seq, tid))
                    events.append(_running_event(t, g))
        if runs:
            runs.sort()
            it_runs = iter(runs)
            e = next(it_runs)
            heap.append((e[0], e[1], 1, e[2], len(streams), e[3]))
            streams.append((it_runs, None, ()))
        if external:
            # other shards' RUNNING tasks and reservations, in their rank places (group 2)
            ext = sorted(external, key=lambda x: (x[0], x[1], x[2]))
            it_ext = iter([(x[0], x[1], x[2], str(i)) for i, x in enumerate(ext)])
            e = next(it_ext)
            heap.append((e[0], e[1], 2, e[2], len(streams), e[3]))
            streams.append((it_ext, None, ()))

        empty: dict[Sig, RankQueue] = {}
        if assistant:
            own_slots = greedy.get(worker_id, 0) > 0
            for (runnable, sig), q in self._gq.items():
                if not fits(sig, gres):
                    continue
                if runnable and fits(sig, used):
                    add(q, None, sig)  # candidates
                elif own_slots:
                    add(q, worker_id, sig)  # chargeable to the assistant itself
            for g, slots in greedy.items():
                if g != worker_id and slots > 0:
                    for sig, q in self._wq.get(g, empty).items():
                        if not fits(sig, used) and fits(sig, gres):
                            add(q, g, sig)
        else:
            for sig, q in self._wq.get(worker_id, empty).items():
                if fits(sig, used) and fits(sig, gres):
                    add(q, None, sig)  # candidates
            for g, slots in greedy.items():
                if slots > 0:
                    for sig, q in self._wq.get(g, empty).items():
                        if g == worker_id and fits(sig, used):
                            continue
                        if fits(sig, gres):
                            add(q, g, sig)

        heapify(heap)
        seen: set[str] = set()
        while heap:
            negp, tm, grp, seq, idx, tid = heappop(heap)
            it, owner, sig = streams[idx]
            if grp == 2:
                assert external is not None
                x = ext[int(tid)]
                if x[5] is not None and x[5] in greedy:
                    greedy[x[5]] -= 1
                for r, a in x[4]:
                    gres[r] = gres.get(r, 0) + a
            elif grp:
                t = tasks[tid]
                wr = t.worker_running
                if wr is not None:  # always: it came from _active_by_wr[wr]
                    greedy[wr] -= 1
                rr = t.resources_running if t.resources_running is not None else t.resources
                if rr:
                    for r, a in rr.items():
                        gres[r] = gres.get(r, 0) + a
            else:
                if owner is not None and greedy.get(owner, 0) <= 0:
                    continue  # drop: the owner has no slot left
                if sig and not fits(sig, gres):
                    continue  # drop: this signature no longer fits
                if tid not in seen:
                    seen.add(tid)
                    t = tasks[tid]
                    if ((assistant and t.runnable) or worker_id in t.workers) and fits(sig, used):
                        return t
                    for g in chain(t.workers, (worker_id,)) if assistant else t.workers:
                        if greedy.get(g, 0) > 0:
                            greedy[g] -= 1
                            for r, a in sig:
                                gres[r] = gres.get(r, 0) + a
                            if sig:  # a reservation other shards' walks must count
                                events.append([negp, tm, seq, 0, [[r, a] for r, a in sig], g])
                            break
            nxt = next(it, None)
            if nxt is not None:
                heappush(heap, (nxt[0], nxt[1], grp, nxt[2], idx, nxt[3]))
        return None

    def _collect_batch(
        self, best: _Task, worker_id: str, scope: str | None
    ) -> tuple[dict[str, list[Any]], list[_Task]] | None:
        names, max_batch_size = self._batchers.get(worker_id, {}).get(best.family, (None, 1))
        if not (names and best.batchable):
            return None
        try:
            batched = {n: [best.params[n]] for n in names}
        except KeyError:
            return None
        unbatched = {k: v for k, v in best.params.items() if k not in batched}
        members = [best]
        q = self._fq.get(best.family)
        if q is None or q.peek() is None:
            return batched, members
        bkey = (-best.priority, best.time, best.seq)
        tasks = self._tasks
        for e in q.ordered():
            if len(members) >= max_batch_size:
                break
            if (e[0], e[1], e[2]) <= bkey:
                continue
            t = tasks[e[3]]
            if scope is not None and scope not in t.workers:
                continue
            if (
                t.batchable
                and all(t.params.get(n) == v for n, v in unbatched.items())
                and t.resources == best.resources
            ):
                for n, values in batched.items():
                    values.append(t.params.get(n))
                members.append(t)
        return batched, members

    def offer_work(
        self,
        host: str | None = None,
        assistant: bool = False,
        current_tasks: Sequence[str] | None = None,
        worker: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """``get_work`` up to the choice, without handing anything out (the federation's offer).

        Everything Luigi's ``get_work`` does before the hand-out happens (the worker's activity,
        an orphaned batch reset), then the answer is ``{"reply": <get_work's answer with no task>,
        "offer": None | {"task_id", "rank": [priority, -time, -seq], "resend": bool, "batch": bool}}``:
        what this scheduler would hand out, so a router can compare the offers of several shards
        by Luigi's rank and grant only the best one (``get_work`` on that shard).
        """
        _now, w, picked = self._pick_work(host, assistant, current_tasks, worker)
        if w.disabled:
            return {"reply": _disabled_reply(w), "offer": None}
        best, batch, resend = picked
        reply = self._count_pending(w.id)
        reply["task_id"] = None
        offer = None
        if best is not None:
            offer = {
                "task_id": best.id,
                "rank": [best.priority, -best.time, -best.seq],
                "resend": resend,
                "batch": batch is not None and len(batch[1]) > 1,
            }
            if batch is not None and not resend:
                # a batchable best task: what a router needs to add other shards' tasks to its batch
                names, max_batch_size = self._batchers[w.id][best.family]
                offer["batcher"] = {
                    "family": best.family,
                    "module": best.module,
                    "params": dict(best.params),
                    "names": list(names),
                    "max_batch_size": max_batch_size,
                    "resources": dict(best.resources),
                    "trivial": self._is_trivial(w),
                    "members": [[t.id, [t.priority, -t.time, -t.seq], dict(t.params)] for t in batch[1]],
                }
        return {"reply": reply, "offer": offer, "trivial": self._is_trivial(w)}

    # ------------------------------------------------------------------ get_work summaries
    def worker_summaries(self, full: bool = False) -> tuple[bool, dict[str, list[Any] | None]]:
        """What ``get_work`` would tell each worker here, for the workers where that changed since
        the last call (every worker with ``full``; ``None``: the worker is gone), and whether that
        is every worker (after a ``restore`` too): ``(whole, {worker: summary})``.

        A summary is ``[counts, top, flags, running, seqs]``: ``counts`` is ``count_pending``'s answer
        (the counters, ``worker_state``, ``running_tasks``); ``top`` the rank ``[priority, -time,
        -seq]`` of the task a plain ``get_work`` would hand out now (None: nothing); ``flags``
        (``SUMMARY_*``) say when that choice needs more than the rank (a worker Luigi does not treat
        as trivial, a batchable best task, a batch that may be orphaned); ``running`` the ids of its
        RUNNING tasks (Luigi re-sends one that ``current_tasks`` does not list); ``seqs`` those of
        ``running_tasks`` (``running_seqs``).  A federation
        router keeps them and grants a worker's ``get_work`` at the shard with the best ``top``
        without asking every shard first (docs/federation.md, "`get_work`")."""
        dirty = self._sum_dirty
        if self._by_status[DISABLED] or self._sum_ud_sub is not None:
            # counters leave out the UPSTREAM_DISABLED tasks: where that set changed, they changed
            old = self._sum_ud_sub or {}
            if self._by_status[DISABLED]:
                self._upstream_disabled()
                new = self._ud_sub
                self._sum_ud_sub = new
            else:
                new = {}
                self._sum_ud_sub = None
            if new is not old:
                dirty.update(g for g in old.keys() | new.keys() if old.get(g) != new.get(g))
        sent = self._sum_sent
        out: dict[str, list[Any] | None] = {}
        full = full or self._sum_all
        if full:
            ids: Iterable[Any] = list(self._workers) + [g for g in sent if g not in self._workers]
        else:
            ids = dirty
        workers = self._workers
        for g in ids:
            w = workers.get(g) if isinstance(g, str) else None
            if w is None:
                if g in sent:
                    del sent[g]
                    out[g] = None
                continue
            summary = self._summary(w)
            if full or sent.get(g) != summary:
                sent[g] = summary
                out[g] = summary
        dirty.clear()
        self._sum_all = False
        return full, out

    def summary_of(self, worker_id: str) -> list[Any] | None:
        """The worker's get_work summary now (None: not known here), changing nothing."""
        w = self._workers.get(worker_id)
        return None if w is None else self._summary(w)

    def known_workers(self) -> list[str]:
        return list(self._workers)

    def resend_summaries(self) -> None:
        """The next ``worker_summaries`` gives every worker's (a router lost track of them)."""
        self._sum_all = True

    @property
    def prunes_on_get_work(self) -> bool:
        """Luigi's ``prune_on_get_work``: every ``get_work`` prunes, on every shard it reaches."""
        return bool(self._config.prune_on_get_work)

    def _summary(self, w: _Worker) -> list[Any]:
        counts = self._count_pending(w.id)
        flags = 0
        top = None
        if not self._is_trivial(w):
            flags |= SUMMARY_NONTRIVIAL
        elif not w.disabled and not self._paused:
            q = self._wq.get(w.id, {}).get(())
            e = q.peek() if q is not None else None
            if e is not None:
                top = [-e[0], -e[1], -e[2]]
                t = self._tasks[e[3]]
                if t.batchable and t.family in self._batchers.get(w.id, {}):
                    flags |= SUMMARY_BATCH
        running: list[str] = []
        tasks = self._tasks
        for tid in self._active_by_wr.get(w.id, ()):
            st = tasks[tid].status
            if st == RUNNING:
                running.append(tid)
            elif st == BATCH_RUNNING:
                flags |= SUMMARY_BATCH_RUNNING
        running.sort()
        return [counts, top, flags, running, self.running_seqs(w.id)]

    def seqs_of(self, task_ids: Iterable[str]) -> list[int]:
        """The status-entry numbers of these tasks (0 for one not here)."""
        tasks = self._tasks
        return [t.seq if (t := tasks.get(i)) is not None else 0 for i in task_ids]

    def running_seqs(self, worker_id: str) -> list[int]:
        """The status-entry numbers of ``count_pending``'s ``running_tasks``, in that order: a
        router merging several shards' lists sorts by them, as one luigid lists them."""
        run = self._wrun.get(worker_id)
        if not run:
            return []
        tasks = self._tasks
        return sorted(tasks[i].seq for i in run)

    # ------------------------------------------------------------------ batches over several shards
    def batch_candidates(
        self,
        family: str,
        unbatched: dict[str, Any],
        resources: dict[str, Any],
        after: Sequence[float],
        worker: str | None,
        limit: int,
    ) -> list[list[Any]]:
        """The tasks Luigi would add here to a batch whose best task (rank ``after``) is elsewhere.

        ``[[task_id, rank, params]]`` in rank order, at most ``limit``: ready, batchable, of
        ``family``, ranked below ``after``, with the ``unbatched`` params and the ``resources`` of
        the best task (and ``worker``'s own tasks only, for a worker Luigi treats as trivial)."""
        out: list[list[Any]] = []
        q = self._fq.get(family)
        if q is None or limit <= 0:
            return out
        bkey = (-after[0], -after[1], -after[2])
        tasks = self._tasks
        for e in q.ordered():
            if len(out) >= limit:
                break
            if (e[0], e[1], e[2]) <= bkey:
                continue
            t = tasks[e[3]]
            if worker is not None and worker not in t.workers:
                continue
            if (
                t.batchable
                and all(t.params.get(n) == v for n, v in unbatched.items())
                and t.resources == resources
            ):
                out.append([t.id, [t.priority, -t.time, -t.seq], dict(t.params)])
        return out

    def batch_claim(
        self,
        worker: str,
        host: str | None,
        batch_id: str,
        task_ids: Sequence[str],
        remote: bool,
        first: int | None = None,
        positions: Sequence[int] | None = None,
    ) -> bool:
        """Hand ``task_ids`` out to ``worker`` as (part of) batch ``batch_id``, as Luigi's
        ``get_work`` does its batch; all or nothing: False (nothing changed) if one is not ready
        any more.  ``remote``: the batch's best task, and so its runner, is on another shard."""
        tasks = self._tasks
        chosen = [tasks.get(i) for i in task_ids]
        if not chosen or any(t is None or t.status != PENDING or t.nd for t in chosen):
            return False
        now = self._begin(worker, host)
        for i, t in enumerate(chosen):
            assert t is not None
            self._set_status(t, BATCH_RUNNING)
            if first is not None and positions is not None:
                # its place in the whole batch: the batch's tasks enter BATCH_RUNNING (and later
                # statuses) in that order over all shards, numbered ``first + position``
                t.fed["bpos"] = positions[i]
                self._renumber_member(t, first)
            self._set_batch_id(t, batch_id)
            self._set_worker_running(t, worker)
            t.resources_running = t.resources  # Luigi shares the dict here
            t.time_running = now
        if remote:
            self._remote_batches.add(batch_id)
            self._d_meta.add("remote_batches")
        return True

    def batch_apply(self, effects: Sequence[Sequence[Any]]) -> None:
        """Apply what a batch runner on another shard did to its batch (``take_batch_effects``
        there) to this shard's tasks of that batch, as Luigi does to every task of a batch."""
        self._begin()
        for eff in effects:
            op, batch_id = eff[0], eff[1]
            members = self._batch_tasks(batch_id)
            if op == "status":
                first = eff[3] if len(eff) > 3 else None
                walk = (eff[4], eff[5]) if len(eff) > 5 else None
                for bt in members:
                    self._set_status(bt, eff[2])
                    if first is not None:
                        self._renumber_member(bt, first)
                    if walk is not None and bt.status == eff[2]:
                        bt.walk = walk
                    self._set_batch_id(bt, None)
                self._forget_remote_batch(batch_id)
            elif op == "runner":
                for bt in members:
                    bt.fed["runner"] = [batch_id, eff[2]]
                    self._d_tasks.add(bt.id)
            elif op == "reset":
                first = eff[2] if len(eff) > 2 else None
                for bt in members:
                    self._set_status(bt, PENDING)
                    if first is not None:
                        self._renumber_member(bt, first)
                self._forget_remote_batch(batch_id)
            elif op == "decrease":
                for bt in members:
                    self._decrease(bt, eff[2])
            elif op in ("tracking_url", "expl", "status_message", "progress_percentage"):
                for bt in members:
                    setattr(bt, op, eff[2])
                    self._d_tasks.add(bt.id)
            else:
                raise ValueError(f"unknown batch effect {op!r}")

    def _renumber_member(self, t: _Task, first: int) -> None:
        """Number a task of a batch over several shards by its place in the batch (``bpos``)."""
        pos = t.fed.get("bpos")
        if isinstance(pos, int) and not isinstance(pos, bool):
            t.seq = first + pos
            self._d_tasks.add(t.id)
            if t.status == PENDING:
                self._sync(t)

    def _forget_remote_batch(self, batch_id: str) -> None:
        if batch_id in self._remote_batches:
            self._remote_batches.discard(batch_id)
            self._d_meta.add("remote_batches")

    def batch_release(self, batch_id: str) -> None:
        """Undo ``batch_claim`` (the batch could not be handed out whole): its tasks are PENDING."""
        self._begin()
        for bt in self._batch_tasks(batch_id):
            self._set_status(bt, PENDING)
            self._set_batch_id(bt, None)
        self._forget_remote_batch(batch_id)

    def _batch_effect(self, effect: list[Any]) -> None:
        if self.keep_batch_effects:
            self._batch_effects.append(effect)

    def touch_workers(self, worker_ids: Iterable[str], get_work: bool = False) -> None:
        """These workers were active on another scheduler of the federation just now (and asked
        for work, with ``get_work``): they are here too (``last_active``, ``last_get_work``), as
        with one luigid.  Unknown workers are left alone, unless they asked for work."""
        now = self._begin()
        for worker_id in worker_ids:
            w = self._workers.get(worker_id)
            if w is None:
                if not get_work:
                    continue
                # a worker that asked for work elsewhere and now brings a task here (the router
                # tells first): known from now on, as luigid knows it
                w = self._get_worker(worker_id)
            if w.last_active < now:
                w.last_active = now
                self._d_workers.add(worker_id)
            if get_work and (w.last_get_work is None or w.last_get_work < now):
                w.last_get_work = now
                self._d_workers.add(worker_id)

    def _remake(self, t: _Task) -> None:
        """A gone placeholder mentioned again: created now, as a new task would be."""
        tid = t.id
        self.gone.discard(tid)
        t.time = t.updated = self._now
        self._cseq += 1
        t.cseq = self._cseq
        # it enters its status now, and is the newest task (Luigi's dicts' insertion order)
        bucket = self._by_status[t.status]
        del bucket[tid]
        self._seq += 1
        t.seq = self._seq
        bucket[tid] = t
        del self._tasks[tid]
        self._tasks[tid] = t
        t.fed = {}
        # a new placeholder: only the worker mentioning it now is its stakeholder, and it is not
        # due for removal (the deleted task's were Luigi's, gone with it)
        for g in t.stakeholders:
            stake = self._wstake.get(g)
            if stake is not None:
                stake.discard(tid)
        t.stakeholders.clear()
        if t.remove is not None:
            self._set_remove(t, None)
        else:
            self._orphans.add(tid)
        self._d_tasks.add(tid)

    def _unstale(self, t: _Task, worker_id: str) -> None:
        """A federation's mirror made again by its owner keeps the stakeholders it had here, those
        of the deleted task (``fed["stale"]``: kept so the mirror stays); one of them naming it as
        a dependency again is a stakeholder of the new task (``FederatedCore`` tells its owner)."""
        t.fed["stale"] = [g for g in t.fed["stale"] if g != worker_id]
        self._d_tasks.add(t.id)

    def first_mention(self, task_id: str, time: float, number: int) -> None:
        """Another shard made ``task_id`` a dependency placeholder at ``time`` (creation
        ``number``): in one scheduler that placeholder *is* the task, so its creation time (Luigi's
        ``start_time`` and the ``-time`` of its rank) and place in creation order are the earliest
        mention's.  Kept for later when the task is not here yet (at most ``MAX_MENTIONS``)."""
        t = self._tasks.get(task_id)
        if t is None:
            if task_id in self._mentions or len(self._mentions) < MAX_MENTIONS:
                old = self._mentions.get(task_id)
                if old is None or time < old[0]:
                    self._mentions[task_id] = (time, number)
            return
        if time < t.time:
            self._adopt_mention(t, time, number)
            self._d_tasks.add(task_id)
            self._sync(t)

    def forget_mentions(self, task_ids: Iterable[str]) -> None:
        """The placeholders that mentioned these tasks elsewhere are all gone (pruned with their
        dependents, as luigid prunes the one placeholder): a task not here yet is created when it
        comes, not at that mention."""
        for task_id in task_ids:
            self._mentions.pop(task_id, None)
            self._pending_fields.pop(task_id, None)

    def placeholder_fields(self, task_id: str, fields: dict[str, Any]) -> None:
        """A dependent's shard's placeholder of ``task_id`` (owned here) got these fields
        (``status_message``, ``progress_percentage``): in one scheduler they are the task's.  Kept
        for later when the task is not here yet (at most ``MAX_MENTIONS`` tasks)."""
        if task_id in self._tasks:
            return
        pending = self._pending_fields
        if task_id in pending or len(pending) < MAX_MENTIONS:
            pending.setdefault(task_id, {}).update(
                (k, v) for k, v in fields.items() if k in ("status_message", "progress_percentage")
            )

    def _adopt_mention(self, t: _Task, time: float, number: int) -> None:
        """``t`` was first mentioned earlier elsewhere: created then.  A task still UNKNOWN since
        it was made here has been the placeholder since that mention in one scheduler: it
        entered UNKNOWN then too (``last_updated`` and its place among the UNKNOWN tasks)."""
        if t.status == UNKNOWN and t.updated == t.time:
            t.updated = time
            t.seq = min(t.seq, number)
        t.time = time
        t.cseq = min(t.cseq, number)

    def take_dep_raises(self) -> dict[str, Any]:
        """``{task_id: priority}``: the rises into dependencies not here since the last call."""
        out, self._dep_raises = self._dep_raises, {}
        return out

    def add_stakeholders(self, task_id: str, workers: dict[str, float]) -> None:
        """Another shard's dependency placeholder of ``task_id`` has these stakeholders
        (worker -> its ``last_active`` there): in one scheduler that placeholder *is* the task, so
        they are its stakeholders here too (Luigi's add_task loop over a task's deps), and workers
        here, alive as long as they are active anywhere (the router touches them here from then
        on).  A worker unknown here is made with that ``last_active`` (at most now), so it is
        pruned when luigid would prune it; as in Luigi, a task already marked for removal stays
        marked.  A task not here yet takes them when it is made (at most ``MAX_MENTIONS``)."""
        now = self._begin()
        t = self._tasks.get(task_id)
        for worker_id, last_active in workers.items():
            w = self._workers.get(worker_id)
            if w is None:
                w = self._get_worker(worker_id)
                w.last_active = min(last_active, now)
            elif w.last_active < last_active:
                w.last_active = min(last_active, now)
                self._d_workers.add(worker_id)
            if t is not None:
                self._add_stakeholder(t, worker_id)
            elif task_id in self._stake_later or len(self._stake_later) < MAX_MENTIONS:
                self._stake_later.setdefault(task_id, {})[worker_id] = None

    def worker_last_active(self, worker_id: str) -> float | None:
        """When ``worker_id`` was last active here (None: not a worker here)."""
        w = self._workers.get(worker_id)
        return w.last_active if w is not None else None

    def take_batch_effects(self) -> list[list[Any]]:
        """What batch runners here did to their batches since the last call (for other shards)."""
        out, self._batch_effects = self._batch_effects, []
        return out

    def _pick_work(
        self, host: str | None, assistant: bool, current_tasks: Sequence[str] | None, worker: str | None
    ) -> tuple[float, _Worker, _Pick]:
        """Luigi's get_work up to the choice: ``(now, worker, (best, batch, resend))``."""
        worker = _req_str("worker", worker)
        _opt_str("host", host)
        _flag("assistant", assistant)
        current = _str_list("current_tasks", current_tasks)
        now = self._begin(worker, host)
        if self._config.prune_on_get_work:
            self._prune()
        w = self._update_worker(worker, {"host": host}, get_work=True)
        if w.disabled:
            return now, w, (None, None, False)
        if assistant:
            if w.info.get("assistant") != assistant:
                self._sum_all = True  # other workers' running_tasks show this worker's info
            w.info["assistant"] = assistant

        tasks = self._tasks
        best: _Task | None = None
        if current is not None:
            ct_set = set(current)
            best_rank = None
            for tid in self._active_by_wr.get(worker, ()):
                t = tasks[tid]
                if t.status == RUNNING and tid not in ct_set:
                    rank = (t.priority, -t.time, t.seq)
                    if best_rank is None or rank > best_rank:
                        best, best_rank = t, rank
            self._reset_orphaned_batch_running_tasks(worker)
        resend = best is not None

        batch = None
        if best is None and not self._paused:
            if self._is_trivial(w):
                q = self._wq.get(worker, {}).get(())
                e = q.peek() if q is not None else None
                if e is not None:
                    best = tasks[e[3]]
                    batch = self._collect_batch(best, worker, worker)
            else:
                best = self._greedy_pick(worker, bool(assistant))
                if best is not None:
                    batch = self._collect_batch(best, worker, None)
        return now, w, (best, batch, resend)

    def get_work(
        self,
        host: str | None = None,
        assistant: bool = False,
        current_tasks: Sequence[str] | None = None,
        worker: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        now, w, picked = self._pick_work(host, assistant, current_tasks, worker)
        if w.disabled:
            return _disabled_reply(w)
        best, batch, resend = picked
        worker = w.id
        reply = self._count_pending(worker)
        guard = self.grant_guard
        self.declined = False
        if guard is not None and best is not None:
            # a federation router's direct grant (docs/federation.md, "`get_work`"): only a plain
            # choice ranked at least ``guard`` (another shard's best); else nothing, and it asks
            if (
                resend
                or batch is not None
                or not self._is_trivial(w)
                or (guard and [best.priority, -best.time, -best.seq] < list(guard))
            ):
                self.declined = True
                reply["task_id"] = None
                return reply
        if batch is not None and len(batch[1]) > 1:
            assert best is not None
            batched, members = batch
            ids = [t.id for t in members]
            batch_id = hashlib.md5("|".join(ids).encode("utf-8"), usedforsecurity=False).hexdigest()
            for t in members:
                self._set_status(t, BATCH_RUNNING)
                self._set_batch_id(t, batch_id)
                self._set_worker_running(t, worker)
                t.resources_running = t.resources  # Luigi shares the dict here
                t.time_running = now
            combined = dict(best.params)
            combined.update(batched)
            reply["task_id"] = None
            reply["task_family"] = best.family
            reply["task_module"] = best.module
            reply["task_params"] = combined
            reply["batch_id"] = batch_id
            reply["batch_task_ids"] = ids
        elif best is not None:
            was_running = best.status == RUNNING
            self._set_status(best, RUNNING)
            self._set_worker_running(best, worker)
            best.resources_running = dict(best.resources)
            best.time_running = now
            if was_running:  # a re-send: no status change, but still a hand-out
                self._events.append(Event(best.id, RUNNING, worker, host, now))
            reply["task_id"] = best.id
            reply["task_family"] = best.family
            reply["task_module"] = best.module
            reply["task_params"] = dict(best.params)
        else:
            reply["task_id"] = None
        return reply

    def ping(self, **kwargs: Any) -> dict[str, list[dict[str, Any]]]:
        worker = _req_str("worker", kwargs.get("worker"))
        self._begin(worker)
        w = self._update_worker(worker)
        messages = w.rpc_messages[:]
        if messages:
            w.rpc_messages.clear()
        return {"rpc_messages": messages}

    # ------------------------------------------------------------------ count_pending

    def _upstream_disabled(self) -> set[str]:
        ud = self._ud
        if ud is not None:
            return ud
        ud = set()
        tasks = self._tasks
        rdeps = self._rdeps
        stack = list(self._by_status[DISABLED])
        while stack:
            d = stack.pop()
            for p in rdeps.get(d, ()):
                if p not in ud and tasks[p].status == PENDING:
                    ud.add(p)
                    stack.append(p)
        sub: dict[str, list[int]] = {}
        for p in ud:
            workers = tasks[p].workers
            if not workers:
                continue
            single = len(workers) == 1
            last = next(reversed(workers))
            for g in workers:
                c = sub.get(g)
                if c is None:
                    c = sub[g] = [0, 0, 0]
                c[0] += 1
                if single:
                    c[1] += 1
                if g == last:
                    c[2] += 1
        self._ud = ud
        self._ud_sub = sub
        return ud

    def count_pending(self, worker: str) -> dict[str, Any]:
        _req_str("worker", worker)
        self._begin(worker)
        return self._count_pending(worker)

    def _count_pending(self, worker_id: str) -> dict[str, Any]:
        w = self._get_worker(worker_id)
        c = self._wcnt.get(worker_id)
        if c is None:
            n_pending = n_unique = n_last = 0
        else:
            n_pending, n_unique, n_last = c[0] + c[1], c[2] + c[3], c[4] + c[5]
        if self._by_status[DISABLED]:
            self._upstream_disabled()
            s = self._ud_sub.get(worker_id)
            if s is not None:
                n_pending -= s[0]
                n_unique -= s[1]
                n_last -= s[2]
        running_tasks: list[dict[str, Any]] = []
        run = self._wrun.get(worker_id)
        if run:
            tasks = self._tasks
            for t in sorted((tasks[i] for i in run), key=lambda t: t.seq):
                if t.worker_running is None:
                    running_tasks.append({"task_id": t.id, "worker": None})
                    continue
                other = self._get_worker(t.worker_running)
                more = {"task_id": t.id, "worker": other.id}
                more.update(other.info)
                running_tasks.append(more)
        return {
            "n_pending_tasks": n_pending,
            "n_unique_pending": n_unique,
            "n_pending_last_scheduled": n_last,
            "worker_state": w.state,
            "running_tasks": running_tasks,
        }

    # ------------------------------------------------------------------ read methods

    def _serialize_task(
        self, t: _Task, include_deps: bool = True, deps: Iterable[str] | None = None
    ) -> dict[str, Any]:
        rr = t.resources_running
        ret = {
            "display_name": t.pretty_id,
            "status": t.status,
            "workers": list(t.workers),
            "worker_running": t.worker_running,
            "time_running": t.time_running,
            "start_time": t.time,
            "last_updated": t.updated,
            "params": dict(t.public_params),
            "name": t.family,
            "priority": t.priority,
            "resources": dict(t.resources),
            "resources_running": dict(rr) if rr is not None else None,
            "tracking_url": t.tracking_url,
            "status_message": t.status_message,
            "progress_percentage": t.progress_percentage,
        }
        if t.status == DISABLED:
            ret["re_enable_able"] = t.scheduler_disable_time is not None
        if include_deps:
            ret["deps"] = list(t.deps if deps is None else deps)
        if self._config.send_messages and t.status == RUNNING:
            ret["accepts_messages"] = t.accepts_messages
        return ret

    def _upstream_status(self, task_id: str, table: dict[str, str]) -> str | None:
        """Luigi's memoised post-order DFS (:func:`federation.upstream.upstream_status`)."""
        tasks = self._tasks

        def lookup(tid: str) -> tuple[str, Collection[str]] | None:
            t = tasks.get(tid)
            return None if t is None else (t.status, t.deps)

        return upstream_status(task_id, table, lookup)

    def _traverse_graph(
        self,
        root: str,
        seen: set[str] | None = None,
        dep_func: Callable[[_Task], Iterable[str]] | None = None,
        include_done: bool = True,
    ) -> dict[str, Any]:
        if seen is None:
            seen = set()
        elif root in seen:
            return {}
        if dep_func is None:

            def dep_func(t: _Task) -> Iterable[str]:
                return t.deps

        tasks = self._tasks
        seen.add(root)
        serialized: dict[str, Any] = {}
        queue = deque([root])
        max_nodes = self._config.max_graph_nodes
        while queue:
            task_id = queue.popleft()
            t = tasks.get(task_id)
            if t is None or not t.family:
                m = _TASK_FAMILY_RE.match(task_id)
                serialized[task_id] = {
                    "deps": [],
                    "status": UNKNOWN,
                    "workers": [],
                    "start_time": UNKNOWN,
                    "params": {"task_id": task_id},
                    "name": m.group(1) if m else UNKNOWN,
                    "display_name": task_id,
                    "priority": 0,
                }
            else:
                deps = list(dep_func(t))
                if not include_done:
                    deps = [d for d in deps if (dt := tasks.get(d)) is None or dt.status != DONE]
                serialized[task_id] = self._serialize_task(t, deps=deps)
                for d in sorted(deps):
                    if d not in seen:
                        seen.add(d)
                        queue.append(d)
            if task_id != root:
                del serialized[task_id]["display_name"]
            if len(serialized) >= max_nodes:
                break
        return serialized

    def graph(self, **kwargs: Any) -> dict[str, Any]:
        self._begin()
        self._prune()
        serialized: dict[str, Any] = {}
        seen: set[str] = set()
        for tid in list(self._tasks):
            serialized.update(self._traverse_graph(tid, seen))
        return serialized

    def creation_order(self) -> list[tuple[str, float, int]]:
        """Every task as ``(task_id, created, creation number)``, in the order this scheduler
        first heard of them (Luigi's iteration order of its tasks), for a router that merges
        several schedulers' lists in one luigid's order."""
        return [(tid, t.time, t.cseq) for tid, t in self._tasks.items()]

    def observe_stamp(self, stamp: int) -> None:
        """Number the next events after ``stamp`` (a router's order stamp, ``federation.wire``):
        task creations and status entries then sort across several schedulers as in one."""
        if stamp > self._seq:
            self._seq = stamp
        if stamp > self._cseq:
            self._cseq = stamp
        if stamp > self._wseq:
            self._wseq = stamp

    def worker_order(self) -> dict[str, int]:
        """``{worker_id: creation number}`` (the numbers follow :meth:`observe_stamp`)."""
        return {wid: w.cseq for wid, w in self._workers.items()}

    def order_keys(self, task_ids: Iterable[str]) -> dict[str, tuple[int, ...]]:
        """``{task_id: (status-entry number, creation number)}`` of the tasks this core has;
        ``(status-entry number, creation number, prune's first number, creation number of the
        task its walk was at)`` for a task that entered its status in a prune's walk (Luigi's
        order of status entry is then the walk's: ``_Task.walk``)."""
        tasks = self._tasks
        return {
            tid: (t.seq, t.cseq) if t.walk is None else (t.seq, t.cseq, *t.walk)
            for tid in task_ids
            if (t := tasks.get(tid)) is not None
        }

    def dep_graph(self, task_id: str, include_done: bool = True, **kwargs: Any) -> dict[str, Any]:
        _req_str("task_id", task_id)
        self._begin()
        self._prune()
        if task_id not in self._tasks:
            return {}
        return self._traverse_graph(task_id, include_done=bool(include_done))

    def inverse_dep_graph(self, task_id: str, include_done: bool = True, **kwargs: Any) -> dict[str, Any]:
        _req_str("task_id", task_id)
        self._begin()
        self._prune()
        if task_id not in self._tasks:
            return {}
        rdeps = self._rdeps
        return self._traverse_graph(
            task_id, dep_func=lambda t: sorted(rdeps.get(t.id, ())), include_done=bool(include_done)
        )

    def graph_nodes(
        self,
        roots: Iterable[str] | None = None,
        *,
        include_done: bool = True,
        inverse: bool = False,
        limit: int | None = None,
        mirrored: AbstractSet[str] = frozenset(),
    ) -> dict[str, Any]:
        """This scheduler's part of a graph that a router walks over several schedulers.

        ``roots`` None (``graph``): every task with a family, serialized as Luigi's graph nodes
        (display name and ``deps`` included), uncut: ``{"nodes": {task_id: node}}``.

        Else a breadth first walk from ``roots`` (deps, or dependents when ``inverse``) through
        the tasks with a family here, at most ``limit`` nodes serialized: ``{"nodes": ...,
        "unknown": [ids here without a family, met on the walk], "dependents": {id: [ids]}}``.
        A node's ``deps`` are what this scheduler knows (``include_done`` False: not DONE here;
        ``"unheld": {id: [deps]}`` names the deps it has no task for, whose status their owner
        knows).  A root without a family is Luigi's UNKNOWN leaf; one in ``mirrored`` (a placeholder of a
        task owned elsewhere) gives, when ``inverse``, its dependents here, walked on.  The
        router puts the nodes of several schedulers together and walks them in luigid's order.
        """
        self._begin()
        self._prune()
        tasks = self._tasks
        if roots is None:
            return {"nodes": {tid: self._serialize_task(t) for tid, t in tasks.items() if t.family}}
        rdeps = self._rdeps
        include = bool(include_done)
        max_nodes = limit if limit is not None else self._config.max_graph_nodes
        nodes: dict[str, Any] = {}
        unknown: list[str] = []
        dependents: dict[str, list[str]] = {}
        unheld: dict[str, list[str]] = {}
        queue: deque[str] = deque()
        seen: set[str] = set()
        for root in roots:
            if root not in seen:
                seen.add(root)
                queue.append(root)
        root_set = set(seen)
        # every root is answered for, then the walk goes on while the answer can take more
        roots_left = len(queue)

        def step(task_id: str, t: _Task) -> list[str]:
            out = sorted(rdeps.get(task_id, ())) if inverse else list(t.deps)
            if not include:
                out = [d for d in out if (dt := tasks.get(d)) is None or dt.status != DONE]
            return out

        while queue and (roots_left > 0 or len(nodes) < max_nodes):
            roots_left -= 1
            task_id = queue.popleft()
            t = tasks.get(task_id)
            if t is None:
                if inverse and task_id in root_set and task_id in mirrored and task_id in rdeps:
                    # named as a dependency here without a placeholder (an assistant's add_task
                    # makes none): its dependents here are in luigid's inverse graph all the same
                    following = dependents[task_id] = sorted(rdeps[task_id])
                    if not include:
                        following = [
                            d for d in following if (dt := tasks.get(d)) is None or dt.status != DONE
                        ]
                        dependents[task_id] = following
                    for d in following:
                        if d not in seen:
                            seen.add(d)
                            queue.append(d)
                continue
            if not t.family:
                unknown.append(task_id)
                if not (inverse and task_id in root_set and task_id in mirrored):
                    continue
                following = dependents[task_id] = step(task_id, t)
            else:
                following = step(task_id, t)
                nodes[task_id] = self._serialize_task(t, deps=following)
                if not include and not inverse:
                    held = [d for d in following if d not in tasks]
                    if held:
                        unheld[task_id] = held
            for d in sorted(following):
                if d not in seen:
                    seen.add(d)
                    queue.append(d)
        answer: dict[str, Any] = {"nodes": nodes, "unknown": unknown}
        if dependents:
            answer["dependents"] = dependents
        if unheld:
            answer["unheld"] = unheld
        return answer

    def task_list(
        self,
        status: str | None = "",
        upstream_status: str | None = "",
        limit: bool = True,
        search: str | None = None,
        max_shown_tasks: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        _opt_str("status", status)
        _opt_str("upstream_status", upstream_status)
        _opt_str("search", search)
        if max_shown_tasks is not None and (
            not isinstance(max_shown_tasks, int) or isinstance(max_shown_tasks, bool)
        ):
            raise TypeError("max_shown_tasks must be an integer")
        self._begin()
        shown = max_shown_tasks or self._config.max_shown_tasks
        if not search:
            pre_count = len(self._by_status.get(status, ())) if status else len(self._tasks)
            if limit and pre_count > shown:
                return {"num_tasks": -1 if upstream_status else pre_count}
        self._prune()

        if search is None:
            terms: list[str] | None = None
        else:
            terms = [term.casefold() for term in search.split()]
        table: dict[str, str] = {}
        result: dict[str, Any] = {}
        source = self._by_status.get(status, {}) if status else self._tasks
        for t in list(source.values()):
            if terms is not None:
                name = t.pretty_id.casefold()
                if not all(term in name for term in terms):
                    continue
            if (
                t.status != PENDING
                or not upstream_status
                or upstream_status == self._upstream_status(t.id, table)
            ):
                result[t.id] = self._serialize_task(t, include_deps=False)
        if limit and len(result) > shown:
            return {"num_tasks": len(result)}
        return result

    def worker_list(self, include_running: bool = True, **kwargs: Any) -> list[dict[str, Any]]:
        self._begin()
        self._prune()
        tasks = self._tasks
        workers: list[dict[str, Any]] = []
        for w in self._workers.values():
            first = w.info.get("first_task", "")
            ft = tasks.get(first) if isinstance(first, str) else None
            entry: dict[str, Any] = dict(
                name=w.id,
                last_active=w.last_active,
                started=w.started,
                state=w.state,
                first_task_display_name=ft.pretty_id if ft is not None else first,
                num_unread_rpc_messages=len(w.rpc_messages),
            )
            entry.update(w.info)
            workers.append(entry)
        workers.sort(key=lambda e: e["started"], reverse=True)
        if include_running:
            running: dict[Any, dict[str, Any]] = {}
            for t in self._by_status[RUNNING].values():
                if t.worker_running:
                    running.setdefault(t.worker_running, {})[t.id] = self._serialize_task(
                        t, include_deps=False
                    )
            for entry in workers:
                c = self._wcnt.get(entry["name"])
                entry["num_running"] = len(running.get(entry["name"], ()))
                entry["num_pending"] = c[0] if c else 0
                entry["num_uniques"] = c[2] if c else 0
                entry["running"] = running.get(entry["name"], {})
        return workers

    def resource_list(self) -> list[dict[str, Any]]:
        self._begin()
        self._prune()
        used = self._used_resources()
        resources = [
            {"name": r, "num_total": total, "num_used": used.get(r, 0)}
            for r, total in self._resources.items()
        ]
        consumers: dict[str, dict[str, Any]] = {}
        for t in self._by_status[RUNNING].values():
            if t.resources:
                for r in t.resources:
                    consumers.setdefault(r, {})[t.id] = self._serialize_task(t, include_deps=False)
        for entry in resources:
            tasks = consumers.get(entry["name"], {})
            entry["num_consumer"] = len(tasks)
            entry["running"] = tasks
        return resources

    def task_search(self, task_str: str, **kwargs: Any) -> dict[str, dict[str, Any]]:
        _req_str("task_str", task_str)
        self._begin()
        self._prune()
        result: dict[str, dict[str, Any]] = {}
        for t in self._tasks.values():
            if task_str in t.id:
                result.setdefault(t.status, {})[t.id] = self._serialize_task(t, include_deps=False)
        return result

    def re_enable_task(self, task_id: str | None) -> dict[str, Any]:
        _opt_str("task_id", task_id)
        self._begin()
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is not None and t.status == DISABLED and t.scheduler_disable_time:
            self._re_enable(t, True)
            return self._serialize_task(t)
        return {}

    def fetch_error(self, task_id: str | None, **kwargs: Any) -> dict[str, Any]:
        _opt_str("task_id", task_id)
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is None:
            return {"taskId": task_id, "error": ""}
        return {
            "taskId": task_id,
            "error": t.expl,
            "displayName": t.pretty_id,
            "taskParams": dict(t.params),
            "taskModule": t.module,
            "taskFamily": t.family,
        }

    def set_task_status_message(self, task_id: str | None, status_message: Any) -> None:
        _opt_str("task_id", task_id)
        self._begin()
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is not None:
            t.status_message = status_message
            self._d_tasks.add(t.id)
            if t.status == RUNNING and t.batch_id is not None:
                if t.batch_id in self._remote_batches:
                    self._batch_effect(["status_message", t.batch_id, status_message])
                for bt in self._batch_tasks(t.batch_id):
                    bt.status_message = status_message
                    self._d_tasks.add(bt.id)

    def get_task_status_message(self, task_id: str | None) -> dict[str, Any]:
        _opt_str("task_id", task_id)
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is None:
            return {"taskId": task_id, "statusMessage": ""}
        return {"taskId": task_id, "statusMessage": t.status_message}

    def set_task_progress_percentage(self, task_id: str | None, progress_percentage: Any) -> None:
        _opt_str("task_id", task_id)
        self._begin()
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is not None:
            t.progress_percentage = progress_percentage
            self._d_tasks.add(t.id)
            if t.status == RUNNING and t.batch_id is not None:
                if t.batch_id in self._remote_batches:
                    self._batch_effect(["progress_percentage", t.batch_id, progress_percentage])
                for bt in self._batch_tasks(t.batch_id):
                    bt.progress_percentage = progress_percentage
                    self._d_tasks.add(bt.id)

    def get_task_progress_percentage(self, task_id: str | None) -> dict[str, Any]:
        _opt_str("task_id", task_id)
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is None:
            return {"taskId": task_id, "progressPercentage": None}
        return {"taskId": task_id, "progressPercentage": t.progress_percentage}

    def decrease_running_task_resources(
        self, task_id: str | None, decrease_resources: dict[str, float] | None
    ) -> None:
        _opt_str("task_id", task_id)
        dec = _amounts("decrease_resources", decrease_resources) or {}
        self._begin()
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is None or t.status != RUNNING or t.resources_running is None:
            return None

        self._decrease(t, dec)
        if t.batch_id is not None:
            if t.batch_id in self._remote_batches:
                self._batch_effect(["decrease", t.batch_id, dec])
            for bt in self._batch_tasks(t.batch_id):
                self._decrease(bt, dec)
        return None

    def _decrease(self, task: _Task, dec: dict[str, float]) -> None:
        rr = task.resources_running
        if rr is None:
            return
        for r, amount in dec.items():
            if amount > 0 and r in rr:
                rr[r] = max(0, rr[r] - amount)
        if rr is task.resources:  # shared with resources (batch members): keep the signature true
            task.sig = _sig(task.resources)
        self._d_tasks.add(task.id)

    def get_running_task_resources(self, task_id: str | None) -> dict[str, Any]:
        _opt_str("task_id", task_id)
        t = self._tasks.get(task_id) if task_id is not None else None
        if t is None:
            return {"taskId": task_id, "resources": None}
        rr = t.resources_running
        return {"taskId": task_id, "resources": dict(rr) if rr is not None else None}

    def update_metrics_task_started(self, task: str | dict[str, Any]) -> None:
        # Luigi passes a scheduler Task to its metrics collector; the default collector does nothing.
        task_id = task.get("task_id") if isinstance(task, dict) else task
        if not isinstance(task_id, str):
            raise TypeError("task must be a task id (or a mapping with task_id)")
        return None

    def report_task_statistics(self, task_id: str | None, statistics: Any) -> None:
        # Luigi hands these to the metrics collector; the default collector does nothing.
        _opt_str("task_id", task_id)
        return None

    # ------------------------------------------------------------------ the federation's surface
    #
    # What shard.federated (or any other wrapper) may use besides Luigi's 39 methods and the
    # durability contract.  Everything here is a query or an explicit mutation called from outside;
    # nothing is called back from the core, so Luigi's paths (get_work, add_task) pay nothing for it.

    @property
    def external_used_resources(self) -> dict[str, Any]:
        """Resources held by RUNNING tasks elsewhere (other shards); ``get_work`` counts them as used.

        They are added to Luigi's ``used_resources`` and to the initial greedy resources of the
        walk for workers with resources and assistants.  Default ``{}`` (a standalone shard).
        """
        return self._external_used

    @external_used_resources.setter
    def external_used_resources(self, value: dict[str, Any]) -> None:
        self._external_used = _amounts("external_used_resources", value) or {}

    def greedy_walk_events(
        self, worker: str, assistant: bool = False, running_only: bool = False
    ) -> list[list[Any]]:
        """The greedy events of Luigi's ``get_work`` walk for ``worker`` over this scheduler's tasks,
        without its bookkeeping (nothing changes here): its RUNNING tasks holding resources and
        the reservations for other workers' slots (``external_greedy``'s shape), for the walk of
        another shard where ``worker`` has work."""
        self._begin()
        if running_only:
            return self._running_events()
        if self._paused:
            return []
        self._greedy_pick(worker, assistant)
        events, self.greedy_events = self.greedy_events, []
        return events

    def _greedy_workers(self) -> dict[str, Any]:
        """Luigi's greedy workers: those that asked for work within ``worker_disconnect_delay``,
        each with its slots (``info["workers"]``)."""
        limit = self._now - self._config.worker_disconnect_delay
        return {
            w.id: w.info.get("workers", 1)
            for w in self._workers.values()
            if w.last_get_work is not None and w.last_get_work > limit
        }

    def _running_events(self) -> list[list[Any]]:
        tasks = self._tasks
        return [
            _running_event(t, g)
            for g in self._greedy_workers()
            for tid in self._active_by_wr.get(g, ())
            if (t := tasks[tid]).status == RUNNING
        ]

    @property
    def external_greedy(self) -> list[list[Any]] | None:
        """Other shards' greedy events for the next ``get_work`` walk (the federation's).

        ``[negated priority, time, seq, group, [[resource, amount], ...], worker]``: a RUNNING
        task (group 1; ``worker`` running it) or a reservation Luigi's walk made for a worker's
        slot (group 0).  Each counts, in its rank place, as in one luigid's walk over all tasks:
        its resources are reserved from there on and the worker's slot is used.  With them the
        other shards' RUNNING resources are not counted up front.  The walk's own events are
        left in ``greedy_events``.  None (default): no such events."""
        if self._external_greedy is None:
            return None
        return [[x[0], x[1], x[2], x[3], [list(p) for p in x[4]], x[5]] for x in self._external_greedy]

    @external_greedy.setter
    def external_greedy(self, value: list[list[Any]] | None) -> None:
        if value is None:
            self._external_greedy = None
            return
        if not isinstance(value, list):
            raise TypeError("external_greedy must be a list of greedy events")
        out = []
        for x in value:
            if not (
                isinstance(x, list)
                and len(x) == 6
                and all(_is_num(v) for v in x[:3])
                and x[3] in (0, 1)
                and isinstance(x[4], list)
                and (x[5] is None or isinstance(x[5], str))
            ):
                raise TypeError(
                    f"a greedy event must be [negprio, time, seq, group, resources, worker], got {x!r:.100}"
                )
            sig = _amounts("external_greedy resources", dict(_pairs(x[4]))) or {}
            out.append((x[0], x[1], int(x[2]), int(x[3]), tuple(sorted(sig.items())), x[5]))
        self._external_greedy = out

    def get_task(self, task_id: str) -> TaskView | None:
        """The live task (read it; change it only through the methods here)."""
        return self._tasks.get(task_id)

    def tasks(self) -> Iterator[TaskView]:
        """Every live task, in creation order.  Do not call the core while iterating."""
        return iter(self._tasks.values())

    def worker_ids(self) -> list[str]:
        """The ids of the workers the core knows (as ``worker_list`` would name them, unpruned)."""
        return list(self._workers)

    def used_resources(self) -> dict[str, Any]:
        """What this core's RUNNING tasks hold (Luigi's ``_used_resources``); a new dict."""
        return self._used_resources()

    def upstream_disabled(self) -> AbstractSet[str]:
        """The PENDING tasks whose upstream status is UPSTREAM_DISABLED.

        Empty without any DISABLED task (O(1)).  Otherwise computed once and cached: the same
        object is returned until a relevant change, so a caller may compare results with ``is``
        to learn whether to look again.  Do not mutate it.
        """
        if not self._by_status[DISABLED]:
            return _NOTHING
        return self._upstream_disabled()

    def update_fed(self, task_id: str, values: dict[str, Any]) -> None:
        """Merge ``values`` into a task's opaque federation data (``fed``, persisted in its record)."""
        t = self._tasks.get(task_id)
        if t is not None:
            t.fed.update(values)
            self._d_tasks.add(task_id)

    def force_status(self, task_id: str, status: str) -> None:
        """Set a status without Luigi's ``set_status`` rules (no failures, retry, disable, batch
        fan-out, history event), keeping every index consistent.  A missing task is created as a
        bare UNKNOWN placeholder first (no family, no workers, not runnable)."""
        _req_str("task_id", task_id)
        if status not in _STATUSES or status == SUSPENDED:
            raise ValueError(f"unknown status {status!r}")
        self._begin()
        n_events = len(self._events)
        t = self._tasks.get(task_id)
        if t is None:
            t = self._create_task(task_id, UNKNOWN, None, {}, 0, "", None, None, None)
        if t.status != status:
            self._move(t, status)
        del self._events[n_events:]
        self._d_tasks.add(task_id)

    def raise_priority(self, task_id: str, priority: Any) -> None:
        """Luigi's ``_update_priority`` on an existing task: raise it (and its existing deps)."""
        _req_str("task_id", task_id)
        _number("priority", priority)
        self._begin()
        t = self._tasks.get(task_id)
        if t is not None:
            self._update_priority(t, priority)

    def dependents_graph(self, task_id: str, include_done: bool = True) -> dict[str, Any]:
        """``inverse_dep_graph`` that also starts from a bare placeholder (a remote dependency).

        Luigi's ``inverse_dep_graph`` shows a placeholder (no family) as a leaf; here its
        dependents on this core are its ``deps`` and are walked on, so that the dependents of a
        task owned elsewhere can be found where it is mirrored.  A task with a family gets
        Luigi's answer.
        """
        _req_str("task_id", task_id)
        t = self._tasks.get(task_id)
        if t is None:
            return {}
        if t.family:
            return self.inverse_dep_graph(task_id, include_done=include_done)
        include = bool(include_done)
        rdeps = self._rdeps
        tasks = self._tasks
        dependents = sorted(rdeps.get(task_id, ()))
        if not include:
            dependents = [d for d in dependents if tasks[d].status != DONE]
        out = self._traverse_graph(task_id, include_done=include)
        out[task_id]["deps"] = list(dependents)
        seen = {task_id}
        for dep in dependents:
            part = self._traverse_graph(
                dep, seen, dep_func=lambda x: sorted(rdeps.get(x.id, ())), include_done=include
            )
            for node_id, node in part.items():
                node.pop("display_name", None)
                out[node_id] = node
        return out

    # ------------------------------------------------------------------ durability

    def _task_record(self, t: _Task) -> dict[str, Any]:
        rr = t.resources_running
        return {
            "task_id": t.id,
            "status": t.status,
            "family": t.family,
            "module": t.module,
            "priority": t.priority,
            "updated": t.updated,
            "time": t.time,
            "params": dict(t.params),
            "param_visibilities": dict(t.param_visibilities),
            "public_params": dict(t.public_params),
            "hidden_params": dict(t.hidden_params),
            "deps": list(t.deps),
            "stakeholders": sorted(t.stakeholders),
            "workers": list(t.workers),
            "worker_running": t.worker_running,
            "time_running": t.time_running,
            "resources": dict(t.resources),
            "resources_running": dict(rr) if rr is not None else None,
            "resources_running_shared": rr is not None and rr is t.resources,
            "failures": list(t.failures),
            "first_failure_time": t.first_failure_time,
            "scheduler_disable_time": t.scheduler_disable_time,
            "retry": t.retry,
            "remove": t.remove,
            "expl": t.expl,
            "tracking_url": t.tracking_url,
            "status_message": t.status_message,
            "progress_percentage": t.progress_percentage,
            "scheduler_message_responses": dict(t.scheduler_message_responses),
            "batchable": t.batchable,
            "batch_id": t.batch_id,
            "runnable": t.runnable,
            "accepts_messages": t.accepts_messages,
            "retry_policy": dict(zip(_RETRY_KEYS, t.retry_policy, strict=True)),
            "owners": list(t.owners) if t.owners is not None else None,
            "fed": dict(t.fed),
            "seq": t.seq,
            "cseq": t.cseq,
            "walk": list(t.walk) if t.walk is not None else None,
        }

    @staticmethod
    def _worker_record(w: _Worker) -> dict[str, Any]:
        return {
            "worker_id": w.id,
            "last_active": w.last_active,
            "started": w.started,
            "last_get_work": w.last_get_work,
            "reference": dict(w.reference) if isinstance(w.reference, dict) else w.reference,
            "info": dict(w.info),
            "disabled": w.disabled,
            "rpc_messages": [dict(m) for m in w.rpc_messages],
            "cseq": w.cseq,
        }

    def _meta(self, key: str) -> Any:
        if key == "resources":
            return dict(self._resource_overrides)
        if key == "paused":
            return self._paused
        if key == "batchers":
            return {
                w: {fam: [list(args), mx] for fam, (args, mx) in fams.items()}
                for w, fams in self._batchers.items()
            }
        if key == "remote_batches":
            return sorted(self._remote_batches)
        raise KeyError(key)  # pragma: no cover

    def has_changes(self) -> bool:
        """Whether anything was touched since the last ``collect_changes`` or there are dependency
        rises or batch effects not taken yet (``take_dep_raises``, ``take_batch_effects``), in
        O(1).  False: those three would give nothing (an empty ``Changes``, ``{}``, ``[]``)."""
        return bool(
            self._d_tasks
            or self._d_del_tasks
            or self._d_workers
            or self._d_del_workers
            or self._d_meta
            or self._events
            or self._dep_raises
            or self._batch_effects
        )

    def collect_changes(self) -> Changes:
        """Everything touched since the last call (full records, in first-touch order), then reset the marks."""
        tasks = self._tasks
        workers = self._workers
        record = self._task_record
        # most calls find only tasks touched: the other parts are built only when marked
        ch = Changes(
            tasks={tid: record(tasks[tid]) for tid in self._d_tasks if tid in tasks},
            deleted_tasks={tid for tid in self._d_del_tasks if tid not in tasks}
            if self._d_del_tasks
            else set(),
            workers=(
                {wid: self._worker_record(workers[wid]) for wid in self._d_workers if wid in workers}
                if self._d_workers
                else {}
            ),
            deleted_workers=(
                {wid for wid in self._d_del_workers if wid not in workers} if self._d_del_workers else set()
            ),
            meta={k: self._meta(k) for k in self._d_meta} if self._d_meta else {},
            events=self._events,
        )
        if self._d_tasks:
            self._d_tasks = _Marks()
        if self._d_del_tasks:
            self._d_del_tasks = _Marks()
        if self._d_workers:
            self._d_workers = _Marks()
        if self._d_del_workers:
            self._d_del_workers = _Marks()
        if self._d_meta:
            self._d_meta = _Marks()
        self._events = []
        return ch

    def snapshot(self) -> Snapshot:
        """The full state as records (tasks and workers in creation order)."""
        return Snapshot(
            tasks=[self._task_record(t) for t in self._tasks.values()],
            workers=[self._worker_record(w) for w in self._workers.values()],
            meta={k: self._meta(k) for k in ("resources", "paused", "batchers", "remote_batches")},
        )

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole state by ``snapshot`` and rebuild every index."""
        self._reset()
        meta = snapshot.meta or {}
        self._resource_overrides = dict(meta.get("resources") or {})
        self._resources = dict(self._config.resources)
        self._resources.update(self._resource_overrides)
        self._paused = bool(meta.get("paused", False))
        self._batchers = {
            w: {fam: (list(v[0]), v[1]) for fam, v in fams.items()}
            for w, fams in (meta.get("batchers") or {}).items()
        }
        self._remote_batches = {b for b in meta.get("remote_batches") or () if isinstance(b, str)}

        for rec in sorted(snapshot.workers, key=lambda r: r.get("cseq", 0)):
            w = _Worker(rec["worker_id"], rec.get("started", rec["last_active"]), rec.get("cseq", 0))
            w.last_active = rec["last_active"]
            w.last_get_work = rec.get("last_get_work")
            w.reference = rec.get("reference")
            w.info = dict(rec.get("info") or {})
            w.disabled = bool(rec.get("disabled", False))
            w.rpc_messages = [dict(m) for m in rec.get("rpc_messages") or []]
            self._workers[w.id] = w
            self._wseq = max(self._wseq, w.cseq)

        built: list[_Task] = []
        for rec in sorted(snapshot.tasks, key=lambda r: r.get("cseq", 0)):
            t = _Task(rec["task_id"], rec["status"], rec.get("time", rec["updated"]))
            t.updated = rec["updated"]
            t.family = rec.get("family", "")
            t.module = rec.get("module")
            t.priority = rec.get("priority", 0)
            t.param_visibilities = dict(rec.get("param_visibilities") or {})
            t.params = dict(rec.get("params") or {})
            t.public_params = dict(rec.get("public_params") or {})
            t.hidden_params = dict(rec.get("hidden_params") or {})
            t.deps = dict.fromkeys(rec.get("deps") or ())
            t.stakeholders = set(rec.get("stakeholders") or ())
            t.workers = dict.fromkeys(rec.get("workers") or ())
            t.worker_running = rec.get("worker_running")
            t.time_running = rec.get("time_running")
            t.resources = dict(rec.get("resources") or {})
            t.sig = _sig(t.resources)
            rr = rec.get("resources_running")
            if rec.get("resources_running_shared"):
                t.resources_running = t.resources
            else:
                t.resources_running = dict(rr) if rr is not None else None
            t.failures = deque(rec.get("failures") or ())
            t.first_failure_time = rec.get("first_failure_time")
            t.scheduler_disable_time = rec.get("scheduler_disable_time")
            t.retry = rec.get("retry")
            t.remove = rec.get("remove")
            t.expl = rec.get("expl")
            t.tracking_url = rec.get("tracking_url")
            t.status_message = rec.get("status_message")
            t.progress_percentage = rec.get("progress_percentage")
            t.scheduler_message_responses = dict(rec.get("scheduler_message_responses") or {})
            t.batchable = rec.get("batchable", False)
            t.batch_id = rec.get("batch_id")
            t.runnable = bool(rec.get("runnable", False))
            t.accepts_messages = rec.get("accepts_messages", False)
            rp = rec.get("retry_policy") or {}
            count, hard_timeout, window = self._default_policy
            t.retry_policy = (
                rp.get("retry_count", count),
                rp.get("disable_hard_timeout", hard_timeout),
                rp.get("disable_window", window),
            )
            owners = rec.get("owners")
            t.owners = list(owners) if owners is not None else None
            t.fed = dict(rec.get("fed") or {})
            t.seq = rec.get("seq", 0)
            t.cseq = rec.get("cseq", 0)
            walk = rec.get("walk")
            t.walk = (walk[0], walk[1]) if walk else None
            self._tasks[t.id] = t
            built.append(t)
            self._cseq = max(self._cseq, t.cseq)
            self._seq = max(self._seq, t.seq)

        for t in sorted(built, key=lambda t: t.seq):
            self._by_status.setdefault(t.status, {})[t.id] = t
        # A worker named by a task but without a record (a partial hand-over) gets one, so that it
        # times out and is pruned from the tasks like any silent worker.
        self._now = self._clock()
        for t in built:
            for g in chain(t.workers, t.stakeholders):
                if g not in self._workers:
                    self._get_worker(g)
        for t in built:
            for d in t.deps:
                self._rdeps.setdefault(d, set()).add(t.id)
            t.nd = self._count_not_done(t.deps)
            for g in t.workers:
                self._wtasks.setdefault(g, set()).add(t.id)
            for g in t.stakeholders:
                self._wstake.setdefault(g, set()).add(t.id)
            if t.status in _COUNTED:
                self._wcontrib(t, 1)
            if t.status in _ACTIVE:
                self._active_add(t)
            if not t.stakeholders and t.remove is None:
                self._orphans.add(t.id)
            if t.remove is not None:
                self._remove_heap.append((t.remove, t.id))
        heapify(self._remove_heap)
        for t in self._by_status[PENDING].values():
            if t.nd == 0:
                self._sync(t)
