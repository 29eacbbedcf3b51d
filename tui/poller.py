"""The blocking side of the TUI: one refresh cycle, a task's detail, an action.

These functions run in worker threads (never on the UI thread) and never
raise for a federation problem: an unreachable router, a shard that is down
or a malformed answer becomes part of what they return, for the screens to
show.  The app guarantees one poll at a time; :class:`Poller` also locks, so
a benchmark or a test can drive it directly.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from federation.errors import FederationError, UnknownMethodError
from tui.config import TuiConfig
from tui.model import (
    STATUSES,
    PollData,
    Snapshot,
    TaskQuery,
    TaskRow,
    TaskSet,
    Tracker,
    is_count_only,
    parse_health,
    sort_tasks,
    task_row,
)
from tui.source import Session, Source

#: methods the router may offer to name the owner shard of a task id, tried in order
OWNER_METHODS = ("owner",)
#: status changes of one task asked of its owner (``task_events``), the newest ones
EVENTS_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Wants:
    """What the screens on show need beyond the header: the task list, the workers' running tasks."""

    tasks: TaskQuery | None = None
    workers_running: bool = False


def describe_error(e: BaseException) -> str:
    if isinstance(e, FederationError):
        return f"{e.message or type(e).__name__} [{e.code}]"
    return f"{type(e).__name__}: {e}"


class Poller:
    def __init__(self, source: Source, config: TuiConfig) -> None:
        self.source = source
        self.config = config
        self.tracker = Tracker(config, source=source.name, live=source.live)
        self._lock = threading.Lock()

    def poll(self, wants: Wants = Wants()) -> Snapshot:
        """One refresh: health, workers, pause state and (when shown) the task list."""
        with self._lock:
            t0 = time.perf_counter()
            data = PollData(time=self.source.now())
            with self.source.session(poll=True) as s:
                data.time = self.source.now()
                try:
                    data.health = s.call("federation_health", {})
                    data.router_latency_ms = (time.perf_counter() - t0) * 1000
                except FederationError as e:
                    data.health_error = describe_error(e)
                if data.health_error is None:
                    # a router that answered health is worth asking the rest; a dead one is not
                    try:
                        data.workers = s.call("worker_list", {"include_running": wants.workers_running})
                    except FederationError as e:
                        data.workers_error = f"worker_list: {describe_error(e)}"
                    data.paused, data.pause_enabled = _pause_state(s, data.errors)
                    if wants.tasks is not None:
                        totals = _totals(data.health)
                        data.tasks = fetch_tasks(s, wants.tasks, totals, self.config.max_tasks)
            data.poll_seconds = time.perf_counter() - t0
            return self.tracker.update(data)


def _pause_state(s: Session, errors: list[str]) -> tuple[Any, Any]:
    out = []
    for method, key in (("is_paused", "paused"), ("is_pause_enabled", "enabled")):
        try:
            answer = s.call(method, {})
            out.append(answer.get(key) if isinstance(answer, dict) else None)
        except FederationError as e:
            errors.append(f"{method}: {describe_error(e)}")
            out.append(None)
    return out[0], out[1]


def _totals(health: Any) -> dict[str, int] | None:
    try:
        shards = parse_health(health).shards
    except FederationError:
        return None
    totals: dict[str, int] = {}
    for shard in shards:
        for status, n in shard.counts.items():
            totals[status] = totals.get(status, 0) + n
    return totals


def fetch_tasks(s: Session, query: TaskQuery, totals: dict[str, int] | None, max_tasks: int) -> TaskSet:
    """``task_list`` once per status, so a huge DONE set becomes a count while the failures are still listed."""
    # by id: a task that changes status between two of these calls must be listed once (the later answer)
    rows: dict[str, TaskRow] = {}
    overflow: dict[str, int] = {}
    errors: list[str] = []
    search = query.search()
    for status in query.statuses(totals):
        kwargs: dict[str, Any] = {
            "status": status,
            "upstream_status": "",
            "limit": True,
            "max_shown_tasks": max_tasks,
        }
        if search:
            kwargs["search"] = search
        try:
            result = s.call("task_list", kwargs)
        except FederationError as e:
            errors.append(f"task_list {status}: {describe_error(e)}")
            continue
        if is_count_only(result):
            overflow[status] = result["num_tasks"]
        elif isinstance(result, dict):
            for tid, d in result.items():
                if isinstance(d, dict):
                    row = task_row(tid, d)
                    if query.keeps(row):
                        rows[tid] = row
        else:
            errors.append(f"task_list {status}: unexpected answer {str(result)[:80]!r}")
    return TaskSet(
        query=query,
        rows=tuple(sort_tasks(rows.values())),
        overflow=overflow,
        errors=tuple(errors),
        max_tasks=max_tasks,
    )


# -- a task's detail ---------------------------------------------------------------------------------


@dataclass
class TaskDetail:
    task_id: str
    task: TaskRow | None = None
    upstream: dict[str, Any] = field(default_factory=dict)
    downstream: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    status_message: str | None = None
    progress: Any = None
    #: the owning shard, or None when the router cannot say
    owner: str | None = None
    #: section -> error text, for the sections that could not be fetched
    problems: dict[str, str] = field(default_factory=dict)
    #: the owner's event history of the task, oldest first: {"status", "worker", "host", "time"}
    events: list[dict[str, Any]] = field(default_factory=list)
    #: True when the answer stopped at the limit (older events exist)
    events_truncated: bool = False


def decode_error(raw: Any) -> str | None:
    """Luigi's workers send a task's traceback JSON-encoded (``json.dumps(expl)``); the visualiser
    decodes it, and so do we.  Anything that is not a JSON string is shown as it came."""
    if raw is None or raw == "":
        return None
    text = str(raw)
    if text.startswith('"') and text.endswith('"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text
        if isinstance(decoded, str):
            return decoded or None
    return text


class OwnerLookup:
    """Remembers whether the router offers an owner method at all, so it is asked once, not per task."""

    def __init__(self, methods: tuple[str, ...] = OWNER_METHODS) -> None:
        self._methods = list(methods)

    def __call__(self, s: Session, task_id: str) -> str | None:
        for method in list(self._methods):
            try:
                answer = s.call(method, {"task_id": task_id})
            except UnknownMethodError:
                self._methods.remove(method)
                continue
            if isinstance(answer, dict):
                answer = answer.get("shard_id") or answer.get("shard") or answer.get("owner")
            return str(answer) if answer else None
        return None


def fetch_detail(source: Source, task_id: str, owner: OwnerLookup | None = None) -> TaskDetail:
    """Everything the detail screen shows about one task; each part fails on its own."""
    detail = TaskDetail(task_id)
    with source.session() as s:

        def ask(section: str, method: str, kwargs: dict[str, Any]) -> Any:
            try:
                return s.call(method, kwargs)
            except FederationError as e:
                detail.problems[section] = f"{method}: {describe_error(e)}"
                return None

        up = ask("upstream", "dep_graph", {"task_id": task_id, "include_done": True})
        if isinstance(up, dict):
            detail.upstream = up
            if isinstance(up.get(task_id), dict):
                detail.task = task_row(task_id, up[task_id])
        down = ask("downstream", "inverse_dep_graph", {"task_id": task_id, "include_done": True})
        if isinstance(down, dict):
            detail.downstream = down
        err = ask("error", "fetch_error", {"task_id": task_id})
        if isinstance(err, dict):
            detail.error = decode_error(err.get("error"))
        msg = ask("message", "get_task_status_message", {"task_id": task_id})
        if isinstance(msg, dict):
            detail.status_message = msg.get("statusMessage")
        prog = ask("progress", "get_task_progress_percentage", {"task_id": task_id})
        if isinstance(prog, dict):
            detail.progress = prog.get("progressPercentage")
        hist = ask("history", "task_events", {"task_id": task_id, "limit": EVENTS_LIMIT})
        if isinstance(hist, dict) and isinstance(hist.get("events"), list):
            detail.events = [e for e in hist["events"] if isinstance(e, dict)]
            detail.events_truncated = bool(hist.get("truncated"))
        if owner is not None:
            try:
                detail.owner = owner(s, task_id)
            except FederationError as e:
                detail.problems["owner"] = f"owner: {describe_error(e)}"
    return detail


# -- actions --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """A change the operator can make; every one is confirmed first."""

    method: str
    title: str
    question: str
    needs_task: bool = True


ACTIONS = {
    "re_enable": Action(
        "re_enable_task",
        "Re-enable",
        "Re-enable this disabled task? Its failures are cleared and it becomes FAILED, so it is retried.",
    ),
    "forgive": Action(
        "forgive_failures",
        "Forgive failures",
        "Forgive this task's failures? A FAILED task goes back to PENDING and is scheduled again.",
    ),
    "mark_done": Action(
        "mark_as_done",
        "Mark as done",
        "Mark this task as DONE? Its dependents may then run although it did not.",
    ),
    "pause": Action(
        "pause",
        "Pause",
        "Pause the federation? No shard hands out new work until unpaused.",
        needs_task=False,
    ),
    "unpause": Action(
        "unpause", "Unpause", "Unpause the federation? Shards hand out work again.", needs_task=False
    ),
}


def run_action(source: Source, action: Action, task_id: str | None) -> tuple[bool, str]:
    """Perform ``action``; returns (ok, a one-line outcome for a notification)."""
    kwargs = {"task_id": task_id} if action.needs_task else {}
    try:
        with source.session() as s:
            result = s.call(action.method, kwargs)
    except FederationError as e:
        return False, f"{action.title} failed: {describe_error(e)}"
    what = task_id or "federation"
    if action.method == "re_enable_task":
        if not result:
            return False, f"{what} was not re-enabled (only a task disabled by the scheduler can be)"
        return True, f"{what} re-enabled: now {result.get('status', '?')}"
    if action.method in ("forgive_failures", "mark_as_done"):
        status = result.get("status") if isinstance(result, dict) else None
        if status is None:
            return False, f"{action.title}: {what} is not known to the federation"
        return True, f"{action.title}: {what} is now {status}"
    return True, f"{action.title}: done"


__all__ = [
    "ACTIONS",
    "STATUSES",
    "Action",
    "OwnerLookup",
    "Poller",
    "TaskDetail",
    "Wants",
    "fetch_detail",
    "fetch_tasks",
    "run_action",
]
