"""The four main views (shards, namespaces, tasks, workers): a title line, a keyed table, a notice.

A view turns the latest :class:`~tui.model.Snapshot` into table rows,
applies the ``/`` filter and faults-only toggle, and reports what the user
asks for with messages (open a task, change the task query, run an action);
the screen and the app decide what to do with them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from tui.model import (
    FAULT_STATUSES,
    STATUSES,
    NamespaceRow,
    RowFilter,
    ShardRow,
    Snapshot,
    TaskQuery,
    TaskRow,
    WorkerRow,
    fmt_age,
    fmt_count,
    fmt_ms,
    fmt_rate,
    sort_key,
    sparkline,
)
from tui.widgets import KeyedTable, status_text

Row = tuple[str, tuple[Any, ...]]

#: ``s`` in the task view walks through these (None = every status)
STATUS_CYCLE: tuple[str | None, ...] = (
    None,
    "FAILED",
    "DISABLED",
    "RUNNING",
    "PENDING",
    "DONE",
    "UNKNOWN",
    "BATCH_RUNNING",
)


def _n(n: int) -> Text:
    return Text(fmt_count(n) if n else "·", justify="right", style="" if n else "dim")


def _fault_n(n: int, style: str) -> Text:
    return Text(fmt_count(n) if n else "·", justify="right", style=style if n else "dim")


def _clip(s: str, width: int) -> str:
    return s if len(s) <= width else s[: width - 1] + "…"


class OpenItem(Message):
    """Enter on a row: open what it stands for."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__()
        self.kind = kind
        self.key = key


class ViewRedrawn(Message):
    """The view's rows or title changed; the screen shows the new title."""

    def __init__(self, view: View) -> None:
        super().__init__()
        self.view = view


class TaskQueryChanged(Message):
    """The task view wants a different list from the router."""

    def __init__(self, query: TaskQuery) -> None:
        super().__init__()
        self.query = query


class RawRequested(Message):
    """``y`` on a row: show what the router said about it, as it said it."""

    def __init__(self, title: str, data: Any) -> None:
        super().__init__()
        self.title = title
        self.data = data


class ActionRequested(Message):
    """The user asked for an action; the app confirms it first."""

    def __init__(self, action: str, task_id: str | None) -> None:
        super().__init__()
        self.action = action
        self.task_id = task_id


class View(Vertical):
    """Base of the main views."""

    view_id: ClassVar[str] = ""
    label: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    COLUMNS: ClassVar[list[tuple[str, str]]] = []

    BINDINGS = [
        Binding("o", "sort_next", "Sort"),
        Binding("O", "sort_reverse", "Reverse", key_display="O"),
        Binding("y", "raw", "Raw"),
    ]

    def __init__(self) -> None:
        super().__init__(id=self.view_id, classes="view")
        #: column key the rows are sorted by (None: the view's own order) and its direction
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.snapshot: Snapshot | None = None
        self.faults_only = False
        self.row_filter = RowFilter()
        self.shown = 0
        self.matching = 0
        #: the line the screen shows above the table (name, narrowing, filter, counts)
        self.title_text = Text(f" {self.label} ", style="bold reverse")

    def compose(self) -> ComposeResult:
        yield KeyedTable(self.COLUMNS, id=f"{self.view_id}-table")
        yield Static("", classes="view-notice")

    @property
    def table(self) -> KeyedTable:
        return self.query_one(KeyedTable)

    def show(self, snap: Snapshot | None, faults_only: bool) -> None:
        self.snapshot = snap
        self.faults_only = faults_only
        self.redraw()

    def set_filter(self, row_filter: RowFilter) -> None:
        self.row_filter = row_filter
        self.redraw()

    # -- sorting (o: next column, O: reverse, a click on a header: that column, again: reverse) -----
    @property
    def sort_index(self) -> int | None:
        keys = [k for k, _ in self.COLUMNS]
        return keys.index(self.sort_column) if self.sort_column in keys else None

    def sorted_rows(self, rows: list[Row]) -> list[Row]:
        i = self.sort_index
        if i is None:
            return rows
        return sorted(rows, key=lambda r: sort_key(r[1][i]), reverse=self.sort_reverse)

    def sort_by(self, column: str | None, reverse: bool = False) -> None:
        self.sort_column, self.sort_reverse = column, reverse
        self.table.mark_sorted(column, reverse)
        self.redraw()

    def action_sort_next(self) -> None:
        keys = [k for k, _ in self.COLUMNS]
        i = self.sort_index
        self.sort_by(keys[0] if i is None else (keys[i + 1] if i + 1 < len(keys) else None))

    def action_sort_reverse(self) -> None:
        self.sort_by(self.sort_column or self.COLUMNS[0][0], not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        column = str(event.column_key.value)
        self.sort_by(column, not self.sort_reverse if column == self.sort_column else False)

    # -- raw ------------------------------------------------------------------------------------
    def raw_of(self, key: str) -> Any:
        """What the router said about the row ``key``, for the raw view (``y``)."""
        return None

    def action_raw(self) -> None:
        key = self.selected_key
        if key is not None:
            self.post_message(
                RawRequested(
                    f"{self.label[:-1] if self.label.endswith('s') else self.label} {key}", self.raw_of(key)
                )
            )

    def redraw(self) -> None:
        rows, notice = (
            self.build_rows() if self.snapshot is not None else ([], "waiting for the first answer…")
        )
        rows = self.sorted_rows(rows)
        self.table.sync(rows)
        self.shown = len(rows)
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append(f" {self.label} ", style="bold reverse")
        for part in self.title_parts():
            title.append(f"  {part}", style="bold")
        if self.row_filter.active:
            title.append(f"  /{self.row_filter.text}", style="bold yellow")
        title.append(f"  {fmt_count(self.shown)}", style="bold")
        if self.matching != self.shown:
            title.append(f" of {fmt_count(self.matching)}", style="dim")
        if self.sort_index is not None:
            label = self.COLUMNS[self.sort_index][1]
            title.append(f"  sorted by {label} {'▼' if self.sort_reverse else '▲'}", style="dim")
        self.title_text = title
        self.post_message(ViewRedrawn(self))
        notice_widget = self.query_one(".view-notice", Static)
        notice_widget.update(notice)
        notice_widget.display = bool(notice)

    def title_parts(self) -> list[str]:
        return ["faults only"] if self.faults_only else []

    def build_rows(self) -> tuple[list[Row], str]:
        raise NotImplementedError

    def filtered(self, rows: list[Row]) -> list[Row]:
        """Apply the ``/`` regex to the text of the visible cells."""
        if not self.row_filter.active:
            return rows
        return [r for r in rows if self.row_filter.matches(str(c) for c in r[1])]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(OpenItem(self.kind, event.row_key.value))

    @property
    def selected_key(self) -> str | None:
        return self.table.selected_key

    def focus_table(self) -> None:
        self.table.focus()


class ShardsView(View):
    view_id = "shards"
    label = "Shards"
    kind = "shard"
    COLUMNS = [
        ("shard", "SHARD"),
        ("group", "GROUP"),
        ("state", "STATE"),
        ("latency", "LATENCY"),
        ("pend", "PEND"),
        ("run", "RUN"),
        ("done", "DONE"),
        ("fail", "FAIL"),
        ("dis", "DIS"),
        ("workers", "WRK"),
        ("backend", "BACKEND"),
        ("location", "LOCATION"),
        ("version", "VERSION"),
        ("error", "ERROR"),
    ]

    def is_fault(self, s: ShardRow) -> bool:
        cfg = self.app.config  # type: ignore[attr-defined]
        slow = s.latency_ms is not None and cfg.latency_warn_ms and s.latency_ms >= cfg.latency_warn_ms
        return not s.up or bool(s.error) or bool(slow)

    def build_rows(self) -> tuple[list[Row], str]:
        assert self.snapshot is not None
        shards = [s for s in self.snapshot.shards if not self.faults_only or self.is_fault(s)]
        rows = self.filtered([(s.shard_id, self.cells(s)) for s in shards])
        self.matching = len(rows)
        notice = ""
        if not self.snapshot.shards:
            notice = (
                "The router reports no shards."
                if self.snapshot.router_ok
                else "No answer from the router yet; the shards show up with its first answer."
            )
        elif not rows:
            notice = "No shard matches." if self.row_filter.active else "Every shard is up and answering."
        return rows, notice

    def raw_of(self, key: str) -> Any:
        snap = self.snapshot
        shard = next((s for s in snap.shards if s.shard_id == key), None) if snap else None
        return dataclasses.asdict(shard) if shard else None

    def cells(self, s: ShardRow) -> tuple[Any, ...]:
        return (
            Text(s.shard_id, style="bold"),
            s.group,
            Text("up", style="green") if s.up else Text("DOWN", style="bold white on red"),
            Text(fmt_ms(s.latency_ms), justify="right"),
            _n(s.count("PENDING")),
            _n(s.count("RUNNING") + s.count("BATCH_RUNNING")),
            _n(s.count("DONE")),
            _fault_n(s.count("FAILED"), "bold red"),
            _fault_n(s.count("DISABLED"), "bold magenta"),
            _n(s.workers),
            s.backend or "—",
            s.location or "—",
            s.version or "—",
            Text(s.error or "", style="red"),
        )


class NamespacesView(View):
    view_id = "namespaces"
    label = "Namespaces"
    kind = "namespace"
    COLUMNS = [
        ("ns", "NAMESPACE"),
        ("group", "GROUP"),
        ("shards", "SHARDS"),
        ("pend", "PEND"),
        ("run", "RUN"),
        ("done", "DONE"),
        ("fail", "FAIL"),
        ("dis", "DIS"),
        ("rate", "FAIL%"),
        ("dpm", "DONE/MIN"),
        ("spark", "THROUGHPUT"),
    ]

    def build_rows(self) -> tuple[list[Row], str]:
        assert self.snapshot is not None
        items = [
            n
            for n in self.snapshot.namespaces
            if not self.faults_only or n.count("FAILED") + n.count("DISABLED") > 0
        ]
        rows = self.filtered([(n.namespace or "(none)", self.cells(n)) for n in items])
        self.matching = len(rows)
        notice = ""
        if not rows:
            notice = (
                "No namespace matches."
                if self.row_filter.active
                else "No failing namespace."
                if self.faults_only
                else "No tasks yet."
            )
        return rows, notice

    def raw_of(self, key: str) -> Any:
        snap = self.snapshot
        ns = "" if key == "(none)" else key
        row = next((n for n in snap.namespaces if n.namespace == ns), None) if snap else None
        return dataclasses.asdict(row) if row else None

    def cells(self, n: NamespaceRow) -> tuple[Any, ...]:
        rate = n.failure_rate
        return (
            Text(n.namespace or "(none)", style="bold"),
            ",".join(n.groups),
            ",".join(n.shards),
            _n(n.count("PENDING")),
            _n(n.count("RUNNING") + n.count("BATCH_RUNNING")),
            _n(n.count("DONE")),
            _fault_n(n.count("FAILED"), "bold red"),
            _fault_n(n.count("DISABLED"), "bold magenta"),
            Text("—" if rate is None else f"{rate * 100:.1f}%", justify="right", style="red" if rate else ""),
            Text(fmt_rate(n.done_per_min), justify="right"),
            Text(sparkline(n.throughput, 16), style="green"),
        )


class TasksView(View):
    view_id = "tasks"
    label = "Tasks"
    kind = "task"
    COLUMNS = [
        ("status", "STATUS"),
        ("ns", "NAMESPACE"),
        ("family", "FAMILY"),
        ("params", "PARAMS"),
        ("updated", "UPDATED"),
        ("worker", "WORKER"),
        ("id", "TASK ID"),
    ]
    BINDINGS = [
        Binding("s", "cycle_status", "Status"),
        Binding("c", "clear_query", "Clear"),
        Binding("e", "act('re_enable')", "Enable"),
        Binding("g", "act('forgive')", "Forgive"),
        Binding("d", "act('mark_done')", "Done"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.query_spec = TaskQuery()
        self._rows_by_id: dict[str, TaskRow] = {}

    def set_query(self, query: TaskQuery) -> None:
        if query != self.query_spec:
            self.query_spec = query
            self.redraw()
            self.post_message(TaskQueryChanged(query))

    def title_parts(self) -> list[str]:
        q = self.query_spec
        parts = [q.describe()] if q.describe() else []
        if self.faults_only and not q.faults_only:
            parts.append("faults only")
        return parts

    def effective_query(self) -> TaskQuery:
        q = self.query_spec
        return TaskQuery(q.status, q.namespace, q.family, faults_only=q.faults_only or self.faults_only)

    def build_rows(self) -> tuple[list[Row], str]:
        assert self.snapshot is not None
        app: Any = self.app
        tasks = self.snapshot.tasks
        if tasks is None or tasks.query != self.effective_query():
            self.matching = 0
            if tasks is None and not self.snapshot.router_ok:
                return [], "The router does not answer; the task list comes back with it."
            return [], "loading…"
        now = self.snapshot.time
        visible = [r for r in tasks.rows if tasks.query.keeps(r)]
        if self.row_filter.active:
            # match on plain text; styled cells are built only for the rows that are drawn
            visible = [r for r in visible if self.row_filter.matches(self.plain_cells(r, now))]
        self.matching = len(visible)
        i = self.sort_index
        if i is not None:  # sort everything fetched, then draw the first max_rows
            visible.sort(key=lambda r: self.row_sort_key(r, now, i), reverse=self.sort_reverse)
        drawn = visible[: app.config.max_rows]
        rows = [(r.task_id, self.cells(r, now)) for r in drawn]
        self._rows_by_id = {r.task_id: r for r in drawn}
        notes = []
        for status, n in sorted(tasks.overflow.items()):
            notes.append(
                f"{status}: {n:,} tasks, too many to list (over {tasks.max_tasks:,}) — narrow the filter "
                f"with :status, :ns or :family"
            )
        if self.matching > len(rows):
            notes.append(f"showing the first {len(rows):,} of {self.matching:,}; narrow with / or :status")
        notes.extend(tasks.errors)
        down = [s.shard_id for s in self.snapshot.shards if not s.up]
        if down:
            notes.append(
                f"shard{'s' if len(down) > 1 else ''} {', '.join(down)} down: "
                f"{'their' if len(down) > 1 else 'its'} tasks are missing from this list"
            )
        if not rows and not tasks.overflow:
            notes.insert(
                0,
                "No task matches."
                if self.row_filter.active or self.effective_query().describe()
                else "No tasks.",
            )
        return rows, "\n".join(notes)

    def row_sort_key(self, r: TaskRow, now: float, i: int) -> tuple[int, float, str]:
        if self.COLUMNS[i][0] == "updated" and r.last_updated is not None:
            return (1, now - r.last_updated, "")  # the exact age, not the rounded "5m" on screen
        return sort_key(self.plain_cells(r, now)[i])

    def sorted_rows(self, rows: list[Row]) -> list[Row]:
        return rows  # sorted in build_rows, before the first max_rows are drawn

    def plain_cells(self, r: TaskRow, now: float) -> tuple[str, ...]:
        """The visible columns as text: what the ``/`` filter matches."""
        return (
            r.status,
            r.namespace,
            r.class_name or r.family,
            _clip(r.params_text, 48),
            fmt_age(now - r.last_updated) if r.last_updated else "—",
            _clip(_worker_short(r.worker_running or (r.workers[0] if r.workers else "")), 24),
            r.task_id,
        )

    def cells(self, r: TaskRow, now: float) -> tuple[Any, ...]:
        status, ns, family, params, age, worker, task_id = self.plain_cells(r, now)
        return (status_text(status), ns, family, params, Text(age, justify="right"), worker, task_id)

    def raw_of(self, key: str) -> Any:
        row = self._rows_by_id.get(key)
        return {"task_id": key, **row.raw} if row else None

    def selected_task(self) -> TaskRow | None:
        key = self.selected_key
        return self._rows_by_id.get(key) if key else None

    def action_cycle_status(self) -> None:
        current = self.query_spec.status
        i = STATUS_CYCLE.index(current) if current in STATUS_CYCLE else 0
        nxt = STATUS_CYCLE[(i + 1) % len(STATUS_CYCLE)]
        q = self.query_spec
        self.set_query(TaskQuery(nxt, q.namespace, q.family, q.faults_only))

    def action_clear_query(self) -> None:
        self.set_query(TaskQuery())

    def action_act(self, action: str) -> None:
        row = self.selected_task()
        if row is not None:
            self.post_message(ActionRequested(action, row.task_id))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action != "act":
            return True
        app: Any = self.app
        if app.config.readonly:
            return False
        row = self.selected_task()
        return applicable(
            str(parameters[0]), row.status if row else None, row.re_enable_able if row else None
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_bindings()


def applicable(action: str, status: str | None, re_enable_able: bool | None) -> bool | None:
    """True when the action makes sense for a task in ``status`` (None dims the key in the footer)."""
    if status is None:
        return None
    if action == "re_enable":
        return True if status == "DISABLED" and re_enable_able is not False else None
    if action == "forgive":
        return True if status == "FAILED" else None
    if action == "mark_done":
        return True if status in ("RUNNING", "FAILED", "DISABLED") else None
    return True


def _worker_short(name: str) -> str:
    """``Worker(salt=1234, workers=1, host=box, username=u, pid=42)`` → ``box:42``."""
    if not name.startswith("Worker("):
        return name
    fields = dict(part.split("=", 1) for part in name[7:-1].split(", ") if "=" in part)
    if "host" in fields and "pid" in fields:
        return f"{fields['host']}:{fields['pid']}"
    return name


class WorkersView(View):
    view_id = "workers"
    label = "Workers"
    kind = "worker"
    COLUMNS = [
        ("host", "HOST"),
        ("pid", "PID"),
        ("user", "USER"),
        ("state", "STATE"),
        ("seen", "SEEN"),
        ("up", "UP"),
        ("run", "RUN"),
        ("pend", "PEND"),
        ("uniq", "UNIQ"),
        ("procs", "PROCS"),
        ("first", "FIRST TASK"),
        ("id", "WORKER ID"),
    ]

    def is_fault(self, w: WorkerRow, now: float) -> bool:
        stale = self.app.config.worker_stale  # type: ignore[attr-defined]
        return w.state != "active" or bool(
            stale and w.last_active is not None and now - w.last_active >= stale
        )

    def build_rows(self) -> tuple[list[Row], str]:
        assert self.snapshot is not None
        snap = self.snapshot
        if snap.workers is None:
            self.matching = 0
            return [], snap.workers_error or "loading…"
        now = snap.time
        items = [w for w in snap.workers if not self.faults_only or self.is_fault(w, now)]
        rows = self.filtered([(w.name, self.cells(w, now)) for w in items])
        self.matching = len(rows)
        notice = snap.workers_error or ""
        if not rows and not notice:
            notice = (
                "No worker matches."
                if self.row_filter.active
                else "No worker is disabled or stale."
                if self.faults_only
                else "No live workers."
            )
        return rows, notice

    def raw_of(self, key: str) -> Any:
        snap = self.snapshot
        row = next((w for w in snap.workers or () if w.name == key), None) if snap else None
        return dataclasses.asdict(row) if row else None

    def cells(self, w: WorkerRow, now: float) -> tuple[Any, ...]:
        stale = self.is_fault(w, now)
        return (
            Text(w.host or "?", style="bold"),
            w.pid,
            w.username,
            Text(w.state, style="green" if w.state == "active" else "bold red"),
            Text(
                fmt_age(now - w.last_active) if w.last_active else "—",
                justify="right",
                style="red" if stale else "",
            ),
            Text(fmt_age(now - w.started) if w.started else "—", justify="right"),
            _n(w.num_running or 0) if w.num_running is not None else Text("—", justify="right"),
            _n(w.num_pending or 0) if w.num_pending is not None else Text("—", justify="right"),
            _n(w.num_uniques or 0) if w.num_uniques is not None else Text("—", justify="right"),
            w.processes,
            _clip(w.first_task, 40),
            w.name,
        )


VIEW_CLASSES: tuple[type[View], ...] = (ShardsView, NamespacesView, TasksView, WorkersView)
__all__ = [
    "FAULT_STATUSES",
    "STATUSES",
    "VIEW_CLASSES",
    "ActionRequested",
    "NamespacesView",
    "OpenItem",
    "RawRequested",
    "ShardsView",
    "TaskQueryChanged",
    "TasksView",
    "View",
    "WorkersView",
    "applicable",
]
