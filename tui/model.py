"""What the screens show, computed from the router's answers; pure, no I/O, no Textual.

The poller feeds one refresh worth of answers to :class:`Tracker`, which
keeps the little history the header needs (previous counts, DONE samples for
done/min and the namespace sparklines, when something last finished) and
returns an immutable :class:`Snapshot`.  Everything here is a function of its
inputs and of the data's own clock, so a replayed capture always gives the
same snapshot.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from federation.errors import ProtocolError
from federation.placement import namespace_of
from tui.config import TuiConfig

#: Luigi's task statuses (luigi/task_status.py), in the order the header lists them
STATUSES = ("PENDING", "RUNNING", "BATCH_RUNNING", "DONE", "FAILED", "DISABLED", "UNKNOWN")
FAULT_STATUSES = ("FAILED", "DISABLED")
#: the task table lists faults first, then work in flight, then the rest
STATUS_ORDER = {
    "FAILED": 0,
    "DISABLED": 1,
    "RUNNING": 2,
    "BATCH_RUNNING": 3,
    "PENDING": 4,
    "UNKNOWN": 5,
    "DONE": 6,
}
STATUS_STYLE = {
    "PENDING": "yellow",
    "RUNNING": "bold cyan",
    "BATCH_RUNNING": "cyan",
    "DONE": "green",
    "FAILED": "bold red",
    "DISABLED": "bold magenta",
    "UNKNOWN": "dim",
}
SHORT = {
    "PENDING": "PEND",
    "RUNNING": "RUN",
    "BATCH_RUNNING": "BATCH",
    "DONE": "DONE",
    "FAILED": "FAIL",
    "DISABLED": "DIS",
    "UNKNOWN": "UNKN",
}
LEVELS = ("ok", "warning", "critical")
SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 32  # samples kept for rates and sparklines


# -- formatting ------------------------------------------------------------------------------


def fmt_count(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def fmt_delta(n: int | None) -> str:
    if not n:
        return ""
    return f"+{n:,}" if n > 0 else f"{n:,}"


def fmt_age(seconds: float | None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``: how long ago, as k9s shows ages."""
    if seconds is None or math.isnan(seconds):
        return "—"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def fmt_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def fmt_time(ts: Any) -> str:
    """A Unix time as UTC (``2026-11-20 10:00:03Z``); Luigi's placeholders are shown as they are."""
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        return "—" if ts is None else str(ts)
    try:
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(ts)


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    return f"{ms:.1f}ms" if ms < 10 else f"{ms:.0f}ms"


def fmt_rate(per_min: float | None) -> str:
    if per_min is None:
        return "—"
    return f"{per_min:.1f}" if per_min < 10 else f"{per_min:,.0f}"


def sparkline(values: Sequence[float], width: int = 16) -> str:
    """Unicode blocks for the last ``width`` values, scaled to their maximum (zero is the baseline)."""
    vals = [max(0.0, v) for v in values[-width:]]
    if not vals:
        return ""
    top = max(vals)
    if top <= 0:
        return SPARK[0] * len(vals)
    return "".join(
        SPARK[0] if v <= 0 else SPARK[min(len(SPARK) - 1, 1 + int((v / top) * (len(SPARK) - 2) + 0.5))]
        for v in vals
    )


def params_text(params: Mapping[str, Any] | None) -> str:
    if not params:
        return ""
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))


# -- rows ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardRow:
    shard_id: str
    group: str
    endpoint: str
    up: bool
    latency_ms: float | None
    error: str | None
    counts: dict[str, int]
    namespaces: dict[str, dict[str, int]]
    workers: int
    backend: str | None
    location: str | None
    version: str | None
    started: float | None

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class NamespaceRow:
    namespace: str
    groups: tuple[str, ...]
    shards: tuple[str, ...]
    counts: dict[str, int]
    done_per_min: float | None
    throughput: tuple[float, ...]  # done/min per refresh interval, oldest first

    def count(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def failure_rate(self) -> float | None:
        """Share of finished tasks that ended FAILED or DISABLED."""
        bad = self.count("FAILED") + self.count("DISABLED")
        finished = bad + self.count("DONE")
        return bad / finished if finished else None


@dataclass(frozen=True, slots=True)
class WorkerRow:
    name: str
    host: str
    username: str
    pid: str
    state: str
    last_active: float | None
    started: float | None
    processes: str
    num_running: int | None
    num_pending: int | None
    num_uniques: int | None
    first_task: str
    running: dict[str, dict[str, Any]]
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TaskRow:
    task_id: str
    status: str
    namespace: str
    family: str
    display_name: str
    params: dict[str, Any]
    params_text: str
    start_time: float | None
    last_updated: float | None
    workers: tuple[str, ...]
    worker_running: str | None
    priority: Any
    status_message: str | None
    progress: Any
    re_enable_able: bool | None
    raw: dict[str, Any]

    @property
    def class_name(self) -> str:
        return self.family.rpartition(".")[2] if self.family else ""


def display_name(task_id: str, d: Mapping[str, Any]) -> str:
    """Luigi's pretty id; graph answers drop it for every node but the root, so rebuild it from family and params."""
    if d.get("display_name"):
        return str(d["display_name"])
    params = d.get("params")
    if not d.get("name") or not isinstance(params, dict) or d.get("start_time") == "UNKNOWN":
        return task_id  # a placeholder: Luigi itself knows only the id
    return f"{d['name']}({params_text(params)})"


def task_row(task_id: str, d: Mapping[str, Any]) -> TaskRow:
    """A row from one entry of Luigi's ``task_list``/``dep_graph`` (``_serialize_task``)."""
    family = str(d.get("name") or "")
    raw_params = d.get("params")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    return TaskRow(
        task_id=task_id,
        status=str(d.get("status") or "UNKNOWN"),
        namespace=namespace_of(family or task_id),
        family=family,
        display_name=display_name(task_id, d),
        params=dict(params),
        params_text=params_text(params),
        start_time=_num(d.get("start_time")),
        last_updated=_num(d.get("last_updated")),
        workers=tuple(str(w) for w in d.get("workers") or ()),
        worker_running=d.get("worker_running"),
        priority=d.get("priority", 0),
        status_message=d.get("status_message"),
        progress=d.get("progress_percentage"),
        re_enable_able=d.get("re_enable_able"),
        raw=dict(d),
    )


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _int(v: Any) -> int:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0


def worker_row(d: Mapping[str, Any]) -> WorkerRow:
    """A row from one entry of Luigi's ``worker_list`` (``info`` keys are flattened into it)."""
    known = {
        "name",
        "last_active",
        "started",
        "state",
        "first_task_display_name",
        "num_unread_rpc_messages",
        "num_running",
        "num_pending",
        "num_uniques",
        "running",
    }
    raw_running = d.get("running")
    running: dict[str, dict[str, Any]] = raw_running if isinstance(raw_running, dict) else {}
    return WorkerRow(
        name=str(d.get("name", "")),
        host=str(d.get("host") or ""),
        username=str(d.get("username") or ""),
        pid=str(d.get("pid") or ""),
        state=str(d.get("state") or ""),
        last_active=_num(d.get("last_active")),
        started=_num(d.get("started")),
        processes=str(d.get("workers") or ""),
        num_running=d.get("num_running") if isinstance(d.get("num_running"), int) else None,
        num_pending=d.get("num_pending") if isinstance(d.get("num_pending"), int) else None,
        num_uniques=d.get("num_uniques") if isinstance(d.get("num_uniques"), int) else None,
        first_task=str(d.get("first_task_display_name") or d.get("first_task") or ""),
        running=dict(running),
        info={k: v for k, v in d.items() if k not in known},
    )


# -- federation_health ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    router: dict[str, Any]
    default_group: str
    groups: dict[str, list[str]]
    shards: tuple[ShardRow, ...]


def _counts(raw: Any, where: str) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ProtocolError(f"federation_health: {where} is not a map of status to count")
    return {str(k): _int(v) for k, v in raw.items()}


def parse_health(raw: Any) -> Health:
    """Check and convert a ``federation_health`` answer; a malformed one raises ProtocolError."""
    if not isinstance(raw, dict) or not isinstance(raw.get("shards"), list):
        raise ProtocolError(f"federation_health: unexpected answer {str(raw)[:120]!r}")
    shards = []
    for i, s in enumerate(raw["shards"]):
        if not isinstance(s, dict) or not isinstance(s.get("shard_id"), str):
            raise ProtocolError(f"federation_health: shards[{i}] has no shard_id")
        ns_raw = s.get("namespaces") or {}
        if not isinstance(ns_raw, dict):
            raise ProtocolError(f"federation_health: shards[{i}].namespaces is not a map")
        shards.append(
            ShardRow(
                shard_id=s["shard_id"],
                group=str(s.get("group") or ""),
                endpoint=str(s.get("endpoint") or ""),
                up=bool(s.get("up")),
                latency_ms=_num(s.get("latency_ms")),
                error=str(s["error"]) if s.get("error") else None,
                counts=_counts(s.get("counts"), f"shards[{i}].counts"),
                namespaces={
                    str(ns): _counts(c, f"shards[{i}].namespaces[{ns!r}]") for ns, c in ns_raw.items()
                },
                workers=_int(s.get("workers")),
                backend=s.get("backend"),
                location=s.get("location"),
                version=s.get("version"),
                started=_num(s.get("started")),
            )
        )
    groups_raw: dict[str, Any] = raw["groups"] if isinstance(raw.get("groups"), dict) else {}
    groups = {str(g): [str(x) for x in m] for g, m in groups_raw.items() if isinstance(m, list)}
    return Health(
        router=dict(raw.get("router") or {}),
        default_group=str(raw.get("default_group") or ""),
        groups=groups,
        shards=tuple(shards),
    )


# -- the task list ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """What the task view asks the router for; the regex filter is applied locally afterwards."""

    status: str | None = None
    namespace: str | None = None
    family: str | None = None
    faults_only: bool = False

    def statuses(self, totals: Mapping[str, int] | None) -> tuple[str, ...]:
        """Statuses to ask one by one (so one big status cannot hide the others)."""
        if self.status:
            return (self.status,)
        wanted = FAULT_STATUSES if self.faults_only else STATUSES
        if totals is not None:
            # the router knows which statuses are empty: skip them (UNKNOWN placeholders are not counted everywhere)
            return tuple(s for s in wanted if totals.get(s, 0) > 0)
        return wanted

    def search(self) -> str | None:
        """Luigi's ``search`` (case-folded substrings of display_name) that narrows the answer on the server."""
        if self.family:
            return f"{self.family}("
        if self.namespace:
            return f"{self.namespace}."
        return None

    def keeps(self, row: TaskRow) -> bool:
        if self.status and row.status != self.status:
            return False
        if self.faults_only and row.status not in FAULT_STATUSES:
            return False
        if self.family and row.family != self.family:
            return False
        return not (self.namespace is not None and self.namespace != "" and row.namespace != self.namespace)

    def describe(self) -> str:
        parts = []
        if self.status:
            parts.append(f"status={self.status}")
        if self.namespace:
            parts.append(f"ns={self.namespace}")
        if self.family:
            parts.append(f"family={self.family}")
        if self.faults_only:
            parts.append("faults")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class TaskSet:
    query: TaskQuery
    rows: tuple[TaskRow, ...]
    #: statuses whose answer was only ``{"num_tasks": N}``: too many to list
    overflow: dict[str, int]
    errors: tuple[str, ...]
    max_tasks: int


def is_count_only(result: Any) -> bool:
    """Luigi answers ``{"num_tasks": N}`` instead of the tasks when there are more than ``max_shown_tasks``."""
    return isinstance(result, dict) and len(result) == 1 and isinstance(result.get("num_tasks"), int)


def sort_tasks(rows: Iterable[TaskRow]) -> list[TaskRow]:
    return sorted(rows, key=lambda r: (STATUS_ORDER.get(r.status, 9), -(r.last_updated or 0.0), r.task_id))


# -- the regex filter ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowFilter:
    """``/`` filter: a case-insensitive regex over the visible columns; a leading ``!`` inverts it."""

    text: str = ""
    pattern: re.Pattern[str] | None = None
    invert: bool = False
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.pattern is not None

    def matches(self, cells: Iterable[str]) -> bool:
        if self.pattern is None:
            return True
        found = any(self.pattern.search(c) for c in cells)
        return found != self.invert


def compile_filter(text: str) -> RowFilter:
    raw = text.strip()
    invert = raw.startswith("!")
    body = raw[1:] if invert else raw
    if not body:
        return RowFilter(text=text)
    try:
        return RowFilter(text=text, pattern=re.compile(body, re.IGNORECASE), invert=invert)
    except re.error as e:
        return RowFilter(text=text, error=f"bad regex: {e}")


# -- dependency trees ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DepNode:
    task_id: str
    status: str
    label: str
    children: tuple[DepNode, ...] = ()
    #: already drawn elsewhere in this tree (a diamond); its subtree is not repeated
    repeated: bool = False
    #: the graph answer did not include this node (outside the graph limit or unknown)
    missing: bool = False


def dep_tree(
    graph: Mapping[str, Any], root: str, *, max_nodes: int = 500, max_depth: int = 40
) -> tuple[DepNode | None, int]:
    """The tree under ``root`` in a ``dep_graph``/``inverse_dep_graph`` answer, and how many nodes were left out."""
    if root not in graph:
        return None, 0
    seen: set[str] = set()
    budget = [max_nodes]
    left_out = [0]

    def build(task_id: str, depth: int) -> DepNode:
        d = graph.get(task_id)
        if not isinstance(d, dict):
            return DepNode(task_id, "UNKNOWN", task_id, missing=True)
        label = display_name(task_id, d)
        status = str(d.get("status") or "UNKNOWN")
        if task_id in seen:
            return DepNode(task_id, status, label, repeated=True)
        seen.add(task_id)
        budget[0] -= 1
        children = []
        deps = sorted(str(x) for x in d.get("deps") or ())
        for i, dep in enumerate(deps):
            if budget[0] <= 0 or depth >= max_depth:
                left_out[0] += len(deps) - i
                break
            children.append(build(dep, depth + 1))
        return DepNode(task_id, status, label, tuple(children))

    return build(root, 0), left_out[0]


# -- alerts and the snapshot -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alert:
    level: str  # "warning" | "critical"
    text: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One refresh, as the screens show it."""

    seq: int
    time: float
    source: str
    live: bool
    router_ok: bool
    router_error: str | None
    router_latency_ms: float | None
    router: dict[str, Any]
    #: time of the last answer from the router, when this one failed
    last_ok: float | None
    default_group: str
    groups: dict[str, list[str]]
    shards: tuple[ShardRow, ...]
    totals: dict[str, int] | None
    deltas: dict[str, int]
    done_per_min: float | None
    throughput: tuple[float, ...]
    namespaces: tuple[NamespaceRow, ...]
    workers: tuple[WorkerRow, ...] | None
    workers_error: str | None
    paused: bool | None
    pause_enabled: bool | None
    tasks: TaskSet | None
    alerts: tuple[Alert, ...]
    poll_seconds: float
    errors: tuple[str, ...] = ()

    @property
    def level(self) -> str:
        worst = 0
        for a in self.alerts:
            worst = max(worst, LEVELS.index(a.level))
        return LEVELS[worst]

    @property
    def shards_up(self) -> int:
        return sum(1 for s in self.shards if s.up)

    @property
    def live_workers(self) -> int | None:
        if self.workers is None:
            return None
        return sum(1 for w in self.workers if w.state == "active")

    def total(self, status: str) -> int | None:
        return None if self.totals is None else self.totals.get(status, 0)


@dataclass
class PollData:
    """The raw answers of one refresh cycle (errors as one-line strings)."""

    time: float
    health: Any = None
    health_error: str | None = None
    router_latency_ms: float | None = None
    workers: Any = None
    workers_error: str | None = None
    paused: Any = None
    pause_enabled: Any = None
    tasks: TaskSet | None = None
    poll_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class Tracker:
    """Turns each cycle's answers into a :class:`Snapshot`, remembering what the deltas and rates need."""

    def __init__(self, config: TuiConfig, *, source: str = "", live: bool = True) -> None:
        self.config = config
        self.source = source
        self.live = live
        self.seq = 0
        #: per shard (up shards only), the counts of the previous refresh
        self._prev_counts: dict[str, dict[str, int]] | None = None
        #: (time, DONE per shard and per shard/namespace); rates only compare shards seen in both samples
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=HISTORY)
        self._last_progress: float | None = None
        self._last_ok: float | None = None
        self._last_health: Health | None = None
        self._last_workers: tuple[WorkerRow, ...] | None = None
        #: shard id -> (backend, location): from the federation's config, then from each answer of the
        #: shard itself, so a shard that is down still shows where its store is
        self.stores: dict[str, tuple[str | None, str | None]] = {}

    def update(self, data: PollData) -> Snapshot:
        self.seq += 1
        now = data.time
        health: Health | None = None
        router_error = data.health_error
        if router_error is None:
            try:
                health = parse_health(data.health)
            except ProtocolError as e:
                router_error = e.message
        if health is not None:
            health = self._with_stores(health)
            now = _num(health.router.get("time")) or now
            self._last_ok = now
            self._last_health = health
        shown = health or self._last_health

        totals: dict[str, int] | None = None
        deltas: dict[str, int] = {}
        namespaces: tuple[NamespaceRow, ...] = ()
        done_rate: float | None = None
        throughput: tuple[float, ...] = ()
        if health is not None:
            totals = {s: 0 for s in STATUSES}
            ns_counts: dict[str, dict[str, int]] = {}
            ns_shards: dict[str, list[ShardRow]] = {}
            for shard in health.shards:
                for status, n in shard.counts.items():
                    totals[status] = totals.get(status, 0) + n
                for ns, counts in shard.namespaces.items():
                    acc = ns_counts.setdefault(ns, {})
                    for status, n in counts.items():
                        acc[status] = acc.get(status, 0) + n
                    ns_shards.setdefault(ns, []).append(shard)
            # A shard that went down (or came back) is not a change in the work: compare like with like.
            counts_now = {s.shard_id: s.counts for s in health.shards if s.up}
            if self._prev_counts is not None:
                for sid in counts_now.keys() & self._prev_counts.keys():
                    before, after = self._prev_counts[sid], counts_now[sid]
                    for status in before.keys() | after.keys():
                        deltas[status] = deltas.get(status, 0) + after.get(status, 0) - before.get(status, 0)
            self._prev_counts = counts_now
            done: dict[str, int] = {}
            for shard in health.shards:
                if shard.up:
                    done[shard.shard_id] = shard.counts.get("DONE", 0)
                    for ns, c in shard.namespaces.items():
                        done[f"{shard.shard_id}\0{ns}"] = c.get("DONE", 0)
            if self._samples and now <= self._samples[-1][0]:
                self._samples.pop()  # same instant seen twice (a replay's last frame): keep one sample
            if self._last_progress is None or (
                self._samples and _gain(self._samples[-1][1], done, _is_shard) > 0
            ):
                self._last_progress = now
            self._samples.append((now, done))
            done_rate = self._rate(_is_shard, now)
            throughput = self._series(_is_shard)
            namespaces = tuple(
                NamespaceRow(
                    namespace=ns,
                    groups=tuple(sorted({s.group for s in ns_shards[ns]})),
                    shards=tuple(sorted(s.shard_id for s in ns_shards[ns])),
                    counts=ns_counts[ns],
                    done_per_min=self._rate(_in_namespace(ns), now),
                    throughput=self._series(_in_namespace(ns)),
                )
                for ns in sorted(ns_counts)
            )

        workers: tuple[WorkerRow, ...] | None
        if data.workers is not None and isinstance(data.workers, list):
            workers = tuple(worker_row(w) for w in data.workers if isinstance(w, dict))
            self._last_workers = workers
        else:
            workers = self._last_workers if health is None else None
        workers_error = data.workers_error
        if data.workers is not None and not isinstance(data.workers, list):
            workers_error = f"worker_list: unexpected answer {str(data.workers)[:80]!r}"

        snap_alerts = self._alerts(now, health, router_error, data, totals, deltas)
        return Snapshot(
            seq=self.seq,
            time=now,
            source=self.source,
            live=self.live,
            router_ok=health is not None,
            router_error=router_error,
            router_latency_ms=data.router_latency_ms if health is not None else None,
            router=dict(shown.router) if shown else {},
            last_ok=self._last_ok,
            default_group=shown.default_group if shown else "",
            groups=dict(shown.groups) if shown else {},
            shards=shown.shards if shown else (),
            totals=totals,
            deltas=deltas,
            done_per_min=done_rate,
            throughput=throughput,
            namespaces=namespaces,
            workers=workers,
            workers_error=workers_error,
            paused=data.paused if isinstance(data.paused, bool) else None,
            pause_enabled=data.pause_enabled if isinstance(data.pause_enabled, bool) else None,
            tasks=data.tasks,
            alerts=snap_alerts,
            poll_seconds=data.poll_seconds,
            errors=tuple(data.errors),
        )

    def _with_stores(self, health: Health) -> Health:
        shards = []
        for s in health.shards:
            if s.backend or s.location:
                self.stores[s.shard_id] = (s.backend, s.location)
            elif s.shard_id in self.stores:
                backend, location = self.stores[s.shard_id]
                s = dataclasses.replace(s, backend=backend, location=location)
            shards.append(s)
        return dataclasses.replace(health, shards=tuple(shards))

    def _rate(self, keep: Any, now: float) -> float | None:
        """Per-minute increase of DONE over the configured window (decreases, e.g. pruned tasks, count as 0)."""
        window = [s for s in self._samples if s[0] >= now - self.config.rate_window]
        if len(window) < 2:
            return None
        dt = window[-1][0] - window[0][0]
        if dt <= 0:
            return None
        gained = sum(_gain(a[1], b[1], keep) for a, b in zip(window, window[1:], strict=False))
        return gained / dt * 60.0

    def _series(self, keep: Any) -> tuple[float, ...]:
        samples = list(self._samples)
        return tuple(
            _gain(a[1], b[1], keep) / (b[0] - a[0]) * 60.0
            for a, b in zip(samples, samples[1:], strict=False)
            if b[0] > a[0]
        )

    def _alerts(
        self,
        now: float,
        health: Health | None,
        router_error: str | None,
        data: PollData,
        totals: dict[str, int] | None,
        deltas: dict[str, int],
    ) -> tuple[Alert, ...]:
        cfg = self.config
        out: list[Alert] = []
        if health is None:
            out.append(Alert("critical", f"router unreachable: {router_error}"))
            return tuple(out)

        def by_threshold(value: float, warn: float, critical: float) -> str | None:
            if critical and value >= critical:
                return "critical"
            if warn and value >= warn:
                return "warning"
            return None

        for shard in health.shards:
            if not shard.up:
                out.append(Alert("critical", f"shard {shard.shard_id} down: {shard.error or 'no answer'}"))
            elif shard.latency_ms is not None:
                level = by_threshold(shard.latency_ms, cfg.latency_warn_ms, cfg.latency_critical_ms)
                if level:
                    out.append(Alert(level, f"shard {shard.shard_id} slow: {fmt_ms(shard.latency_ms)}"))
        if data.router_latency_ms is not None:
            level = by_threshold(data.router_latency_ms, cfg.latency_warn_ms, cfg.latency_critical_ms)
            if level:
                out.append(Alert(level, f"router slow: {fmt_ms(data.router_latency_ms)}"))
        assert totals is not None
        failing = totals.get("FAILED", 0) + totals.get("DISABLED", 0)
        level = by_threshold(failing, cfg.failed_warn, cfg.failed_critical)
        if level:
            out.append(
                Alert(
                    level,
                    f"{failing:,} failing ({totals.get('FAILED', 0):,} failed, "
                    f"{totals.get('DISABLED', 0):,} disabled)",
                )
            )
        rising = deltas.get("FAILED", 0) + deltas.get("DISABLED", 0)
        if cfg.rising_warn and rising >= cfg.rising_warn:
            out.append(Alert("warning", f"failures rising: +{rising:,} since the last refresh"))
        waiting = totals.get("PENDING", 0) + totals.get("RUNNING", 0) + totals.get("BATCH_RUNNING", 0)
        if waiting and self._last_progress is not None:
            idle = now - self._last_progress
            level = by_threshold(idle, cfg.stall_warn, cfg.stall_critical)
            if level:
                out.append(
                    Alert(
                        level, f"nothing finished for {fmt_duration(idle)} with {waiting:,} pending/running"
                    )
                )
        if data.paused is True:
            out.append(Alert("warning", "scheduling is paused: no shard hands out work"))
        for err in data.errors:
            out.append(Alert("warning", err))
        if data.workers_error:
            out.append(Alert("warning", data.workers_error))
        return tuple(out)


def _is_shard(key: str) -> bool:
    return "\0" not in key


def _in_namespace(ns: str) -> Any:
    suffix = f"\0{ns}"
    return lambda key: (
        key.endswith(suffix) and key.count("\0") == 1 and key.index("\0") == len(key) - len(suffix)
    )


def _gain(before: Mapping[str, int], after: Mapping[str, int], keep: Any) -> int:
    """How much the kept counters grew, over the keys present in both samples."""
    return sum(max(0, n - before[k]) for k, n in after.items() if k in before and keep(k))


# -- sorting ------------------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER = re.compile(r"^(-?[\d,]*\.?\d+)\s*(ms|s|m|h|d|w|%)?$")


def sort_key(cell: Any) -> tuple[int, float, str]:
    """How a table cell sorts: numbers, ages ("5m", "18h") and latencies ("1.2ms") by value, before
    text; empty cells ("·", "—", "") count as zero / nothing and go first."""
    text = str(getattr(cell, "plain", cell)).strip()
    if text in ("", "·", "—", "-", "?"):
        return (0, 0.0, "")
    m = _NUMBER.match(text)
    if m:
        value = float(m.group(1).replace(",", ""))
        unit = m.group(2)
        return (1, value * _UNITS.get(unit or "", 1.0), "")
    return (2, 0.0, text.lower())
