"""Screens: the main one (header, four views, prompts, footer), the detail screens and the dialogs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.json import JSON
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Button,
    ContentSwitcher,
    DataTable,
    Footer,
    Input,
    Log,
    Static,
    TabbedContent,
    TabPane,
    Tree,
)

from tui.commands import Command, CommandError, help_lines, parse
from tui.model import (
    STATUS_STYLE,
    DepNode,
    RowFilter,
    Snapshot,
    TaskQuery,
    compile_filter,
    dep_tree,
    fmt_age,
    fmt_count,
    fmt_ms,
    fmt_time,
    namespace_of,
    params_text,
)
from tui.poller import ACTIONS, Action, TaskDetail, describe_error, fetch_detail
from tui.views import (
    VIEW_CLASSES,
    ActionRequested,
    OpenItem,
    RawRequested,
    TaskQueryChanged,
    TasksView,
    View,
    ViewRedrawn,
    applicable,
)
from tui.widgets import CommandPrompt, FilterPrompt, HealthHeader, KeyedTable, PromptClosed, PromptSuggester


class MainScreen(Screen[None]):
    """k9s-like main screen: one view at a time, ``:`` to switch, ``/`` to filter, Esc to go back."""

    BINDINGS = [
        # priority: the app runs them as soon as it reads the key, so the prompt has the focus before
        # the next key is dispatched (keys typed right after ":" are not lost to the table)
        Binding("colon", "command", "Cmd", key_display=":", priority=True),
        Binding("slash", "filter", "Filter", key_display="/", priority=True),
        Binding("l", "logs", "Logs"),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.history: list[tuple[str, TaskQuery]] = []

    def compose(self) -> ComposeResult:
        yield HealthHeader(id="header")
        # the prompts take the title's line while they are open, so the table never moves
        with Vertical(id="bar"):
            yield Static("", id="view-title", classes="view-title")
            yield CommandPrompt(
                placeholder=":shards :ns :tasks :workers :help — Tab completes",
                id="prompt",
                suggester=PromptSuggester(self._known),
                compact=True,
            )
            yield FilterPrompt(
                placeholder="/regex over the visible columns (!regex inverts), Enter keeps it",
                id="filter",
                compact=True,
            )
        with ContentSwitcher(initial="shards", id="views"):
            for cls in VIEW_CLASSES:
                yield cls()
        yield Footer()

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", lambda _: self._refresh_view(), init=False)
        self.watch(self.app, "faults_only", lambda _: self._refresh_view(), init=False)
        self.current_view.focus_table()

    def on_screen_resume(self) -> None:
        self._refresh_view()

    # -- views -------------------------------------------------------------------------------
    @property
    def current_view(self) -> View:
        return self.query_one(f"#{self.query_one(ContentSwitcher).current or 'shards'}", View)

    @property
    def tasks_view(self) -> TasksView:
        return self.query_one(TasksView)

    @property
    def view_label(self) -> str:
        try:
            return self.current_view.label
        except NoMatches:  # the header mounts before the views
            return ""

    def _refresh_view(self) -> None:
        app: Any = self.app
        self.current_view.show(app.snapshot, app.faults_only)
        self.query_one("#view-title", Static).update(self.current_view.title_text)
        self.query_one(HealthHeader).refresh_header()

    def on_view_redrawn(self, message: ViewRedrawn) -> None:
        if message.view is self.current_view:
            self.query_one("#view-title", Static).update(message.view.title_text)

    def _open_prompt(self, prompt: Input, value: str) -> None:
        for widget in self.query("#bar > *"):
            widget.display = widget is prompt
        prompt.value = value
        # focus now, not on the next idle (Widget.focus): keys typed right after ":" arrive before that
        self.set_focus(prompt, scroll_visible=False)

    def _close_prompts(self) -> None:
        for widget in self.query("#bar > *"):
            widget.display = widget.id == "view-title"
        self.current_view.focus_table()

    def show_view(self, view_id: str, query: TaskQuery | None = None, *, remember: bool = True) -> None:
        switcher = self.query_one(ContentSwitcher)
        here = (switcher.current or "shards", self.tasks_view.query_spec)
        if remember and (view_id, query or self.tasks_view.query_spec) != here:
            self.history.append(here)
            del self.history[:-20]
        switcher.current = view_id
        if query is not None:
            self.tasks_view.set_query(query)
        self._refresh_view()
        self.current_view.focus_table()
        app: Any = self.app
        if view_id in ("tasks", "workers"):
            app.poll_now()  # these views need data the header poll does not fetch

    def wants(self) -> tuple[TaskQuery | None, bool]:
        if not self.is_mounted:
            return None, False
        view = self.current_view
        if isinstance(view, TasksView):
            return view.effective_query(), False
        return None, view.view_id == "workers"

    def _known(self) -> dict[str, list[str]]:
        app: Any = self.app
        snap: Snapshot | None = app.snapshot
        known: dict[str, list[str]] = {
            "contexts": [c.name for c in app.contexts],
            "logs": [f.stem for f in app.log_files()],
            "columns": [label.lower() for _, label in self.current_view.COLUMNS] if self.is_mounted else [],
        }
        if snap is not None:
            known["families"] = sorted({r.family for r in snap.tasks.rows if r.family}) if snap.tasks else []
            known["namespaces"] = [n.namespace for n in snap.namespaces if n.namespace]
        return known

    # -- messages from the views --------------------------------------------------------------
    def on_open_item(self, message: OpenItem) -> None:
        if message.kind == "namespace":
            ns = "" if message.key == "(none)" else message.key
            self.show_view("tasks", TaskQuery(namespace=ns))
        elif message.kind == "shard":
            self.app.push_screen(ShardDetailScreen(message.key))
        elif message.kind == "task":
            self.app.push_screen(TaskDetailScreen(message.key))
        elif message.kind == "worker":
            self.app.push_screen(WorkerDetailScreen(message.key))

    def on_raw_requested(self, message: RawRequested) -> None:
        self.app.push_screen(RawScreen(message.title, message.data))

    def on_task_query_changed(self, message: TaskQueryChanged) -> None:
        app: Any = self.app
        app.poll_now()

    def on_action_requested(self, message: ActionRequested) -> None:
        app: Any = self.app
        app.request_action(message.action, message.task_id)

    # -- keys --------------------------------------------------------------------------------
    def _typing_in(self) -> Input | None:
        focused = self.focused
        return focused if isinstance(focused, CommandPrompt | FilterPrompt) else None

    def action_command(self) -> None:
        if (prompt := self._typing_in()) is not None:
            prompt.insert_text_at_cursor(":")  # a ":" typed inside a prompt is text
            return
        self._open_prompt(self.query_one(CommandPrompt), "")

    def action_filter(self) -> None:
        if (prompt := self._typing_in()) is not None:
            prompt.insert_text_at_cursor("/")
            return
        self._open_prompt(self.query_one(FilterPrompt), self.current_view.row_filter.text)

    def action_logs(self) -> None:
        """The log of the selected shard in the shards view, else fedctl up's logs from the router's."""
        app: Any = self.app
        view = self.current_view
        key = view.selected_key if view.view_id == "shards" else None
        app.open_logs(f"shard-{key}" if key else None)

    def action_back(self) -> None:
        view = self.current_view
        if view.row_filter.active or view.row_filter.text:
            view.set_filter(RowFilter())
            return
        if self.history:
            view_id, query = self.history.pop()
            self.query_one(ContentSwitcher).current = view_id
            self.tasks_view.set_query(query)
            self._refresh_view()
            self.current_view.focus_table()
            app: Any = self.app
            app.poll_now()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "filter":
            return
        row_filter = compile_filter(event.value)
        event.input.set_class(row_filter.error is not None, "-error")
        if row_filter.error is None:
            self.current_view.set_filter(row_filter)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._close_prompts()
        if event.input.id == "filter":
            row_filter = compile_filter(event.value)
            if row_filter.error:
                self.notify(row_filter.error, severity="error")
            else:
                self.current_view.set_filter(row_filter)
            return
        line = event.value
        event.input.value = ""
        if line.strip():
            try:
                self.run_command(parse(line))
            except CommandError as e:
                self.notify(str(e), severity="error")

    def on_prompt_closed(self, message: PromptClosed) -> None:
        self._close_prompts()

    def run_command(self, cmd: Command) -> None:
        app: Any = self.app
        tq = self.tasks_view.query_spec
        opts = cmd.options
        if cmd.name in ("shards", "workers"):
            self.show_view(cmd.name)
        elif cmd.name == "namespaces":
            if cmd.args:
                self.show_view("tasks", TaskQuery(namespace=cmd.args[0]))
            else:
                self.show_view("namespaces")
        elif cmd.name == "tasks":
            status = opts.get("status", cmd.args[0] if cmd.args else None)
            if cmd.args or opts:
                status = None if status is None or status.upper() == "ALL" else status.upper()
                self.show_view(
                    "tasks",
                    TaskQuery(
                        status, opts.get("ns", opts.get("namespace")) or None, opts.get("family") or None
                    ),
                )
            else:
                self.show_view("tasks")
        elif cmd.name == "status":
            status = cmd.args[0].upper() if cmd.args else "ALL"
            self.show_view("tasks", TaskQuery(None if status == "ALL" else status, tq.namespace, tq.family))
        elif cmd.name == "family":
            family = cmd.args[0] if cmd.args else "all"
            self.show_view("tasks", TaskQuery(tq.status, tq.namespace, None if family == "all" else family))
        elif cmd.name == "filter":
            row_filter = compile_filter(" ".join(cmd.args))
            if row_filter.error:
                self.notify(row_filter.error, severity="error")
            else:
                self.current_view.set_filter(row_filter)
        elif cmd.name == "faults":
            app.action_toggle_faults()
        elif cmd.name == "refresh":
            if cmd.args:
                app.set_refresh(float(cmd.args[0]))
            app.poll_now()
        elif cmd.name in ("pause", "unpause"):
            app.request_action(cmd.name, None)
        elif cmd.name == "ctx":
            if cmd.args:
                app.switch_context(cmd.args[0])
            else:
                app.push_screen(ContextsScreen())
        elif cmd.name == "logs":
            app.open_logs(cmd.args[0] if cmd.args else None)
        elif cmd.name == "sort":
            view = self.current_view
            if not cmd.args:
                view.sort_by(None)
                return
            wanted = cmd.args[0].lower()
            keys = {k.lower(): k for k, _ in view.COLUMNS} | {label.lower(): k for k, label in view.COLUMNS}
            if wanted not in keys:
                names = ", ".join(label.lower() for _, label in view.COLUMNS)
                self.notify(f"no column {cmd.args[0]!r} in {view.label}: {names}", severity="error")
                return
            view.sort_by(
                keys[wanted], reverse=len(cmd.args) > 1 and cmd.args[1].lower() in ("desc", "-", "reverse")
            )
        elif cmd.name == "help":
            app.action_help()
        elif cmd.name == "quit":
            app.exit(0)


# -- detail screens ------------------------------------------------------------------------------


class DetailScreen(Screen[None]):
    """A drill-down page under the same header; Esc goes back."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]
    view_label = "Detail"

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self.on_snapshot, init=True)

    def on_snapshot(self, snap: Snapshot | None) -> None:
        pass


def _kv(rows: list[tuple[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value if isinstance(value, Text) else Text(str(value)))
    return grid


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def _progress(p: Any) -> Text:
    if not isinstance(p, int | float) or isinstance(p, bool):
        return Text("—")
    pct = max(0.0, min(100.0, float(p)))
    filled = int(pct / 5)
    return Text(f"{'█' * filled}{'░' * (20 - filled)} {pct:.0f}%", style="cyan")


class DetailLoaded(Message):
    def __init__(self, detail: TaskDetail) -> None:
        super().__init__()
        self.detail = detail


class TaskDetailScreen(DetailScreen):
    """Everything about one task: fields, parameters, error, message, progress, dependency trees."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("1", "tab('overview')", "Info", show=False),
        Binding("2", "tab('error')", "Error", show=False),
        Binding("3", "tab('upstream')", "Upstream", show=False),
        Binding("4", "tab('downstream')", "Downstream", show=False),
        Binding("5", "tab('history')", "History", show=False),
        Binding("y", "raw", "Raw"),
        Binding("e", "act('re_enable')", "Enable"),
        Binding("g", "act('forgive')", "Forgive"),
        Binding("d", "act('mark_done')", "Done"),
    ]
    view_label = "Task"

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.detail: TaskDetail | None = None
        self._loading = False
        self._seen_seq = -1
        self._trees: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        yield HealthHeader(id="header")
        yield Static(Text(f" Task  {self.task_id}", style="bold"), classes="view-title", id="task-title")
        with TabbedContent(initial="overview", id="task-tabs"):
            with TabPane("1 Info", id="overview"), VerticalScroll():
                yield Static("loading…", id="overview-body")
            with TabPane("2 Error", id="error"), VerticalScroll():
                yield Static("loading…", id="error-body")
            with TabPane("3 Upstream", id="upstream"):
                yield Tree("upstream", id="upstream-tree")
            with TabPane("4 Downstream", id="downstream"):
                yield Tree("downstream", id="downstream-tree")
            with TabPane("5 History", id="history"):
                yield KeyedTable(
                    [("time", "TIME"), ("status", "STATUS"), ("host", "HOST"), ("worker", "WORKER")],
                    id="history-table",
                )
                yield Static("", id="history-note")
        yield Footer()

    def on_mount(self) -> None:
        for tree in self.query(Tree):
            tree.auto_expand = False
            tree.show_root = True
        super().on_mount()

    def on_snapshot(self, snap: Snapshot | None) -> None:
        if snap is not None and snap.seq != self._seen_seq:
            self._seen_seq = snap.seq
            self.load()

    def load(self) -> None:
        if self._loading:
            return  # a slow router: the answer in flight will do
        self._loading = True
        self._fetch()

    @work(thread=True, exclusive=True, exit_on_error=False, group="detail")
    def _fetch(self) -> None:
        app: Any = self.app
        try:
            detail = fetch_detail(app.source, self.task_id, app.owner_lookup)
        except Exception as e:  # a bug must not take the screen down; show it instead
            detail = TaskDetail(self.task_id, problems={"all": describe_error(e)})
        self.post_message(DetailLoaded(detail))

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        self._loading = False
        self.detail = message.detail
        self._show(message.detail)
        self.refresh_bindings()

    def _show(self, d: TaskDetail) -> None:
        app: Any = self.app
        snap: Snapshot | None = app.snapshot
        now = snap.time if snap else 0.0
        t = d.task
        rows: list[tuple[str, Any]] = [("task id", d.task_id)]
        running = t is not None and t.status in ("RUNNING", "BATCH_RUNNING")
        if t is not None:
            self.query_one("#task-title", Static).update(
                Text.assemble((" Task  ", "bold"), _status(t.status), "  ", (t.display_name, "bold"))
            )
            rows += [
                ("status", _status(t.status)),
                ("family", t.family or "—"),
                ("namespace", t.namespace or "(none)"),
                ("shard", d.owner or "?"),
                ("priority", t.priority),
                ("workers", ", ".join(t.workers) or "—"),
                # Luigi keeps worker_running after a task stops: only a running task is "running on" it
                ("running on", (t.worker_running or "—") if running else "—"),
                *([("last run by", t.worker_running)] if t.worker_running and not running else []),
                (
                    "started",
                    f"{fmt_time(t.start_time)}  ({fmt_age(now - t.start_time) if t.start_time else '—'} ago)",
                ),
                (
                    "last updated",
                    f"{fmt_time(t.last_updated)}  "
                    f"({fmt_age(now - t.last_updated) if t.last_updated else '—'} ago)",
                ),
                (
                    "running for",
                    fmt_age(now - t.raw["time_running"])
                    if isinstance(t.raw.get("time_running"), int | float) and t.status == "RUNNING"
                    else "—",
                ),
                ("tracking url", t.raw.get("tracking_url") or "—"),
                ("resources", params_text(t.raw.get("resources")) or "—"),
            ]
            if t.re_enable_able is not None:
                rows.append(
                    (
                        "re-enable",
                        "possible (disabled by the scheduler)"
                        if t.re_enable_able
                        else "no (disabled by a worker)",
                    )
                )
        else:
            rows += [("namespace", namespace_of(d.task_id) or "(none)"), ("shard", d.owner or "?")]
        rows += [("status message", d.status_message or "—"), ("progress", _progress(d.progress))]
        parts: list[Any] = [_kv(rows)]
        if t is not None and t.params:
            parts += [Text("\nparameters", style="bold"), _kv([(k, v) for k, v in sorted(t.params.items())])]
        if d.problems:
            parts.append(Text("\n" + "\n".join(f"! {p}" for p in d.problems.values()), style="red"))
        self.query_one("#overview-body", Static).update(Group(*parts))
        error = d.problems.get("error") or d.error or "no error recorded"
        self.query_one("#error-body", Static).update(Text(error, style="red" if d.error else "dim"))
        self._show_history(d)
        cfg = app.config
        self._fill_tree("upstream", d.upstream, cfg.max_tree_nodes, d.problems.get("upstream"))
        self._fill_tree("downstream", d.downstream, cfg.max_tree_nodes, d.problems.get("downstream"))

    def _show_history(self, d: TaskDetail) -> None:
        """Tab 5: every status change the owner committed, newest first (time, status, host, worker)."""
        rows = []
        for i, e in reversed(list(enumerate(d.events))):
            status = str(e.get("status") or "")
            rows.append(
                (
                    str(i),
                    (
                        fmt_time(e.get("time")),
                        _status(status),
                        str(e.get("host") or "—"),
                        str(e.get("worker") or "—"),
                    ),
                )
            )
        self.query_one("#history-table", KeyedTable).sync(rows)
        note = d.problems.get("history")
        if note and "unknown_method" in note:
            note = "this router does not offer task_events (a router from before the history tab)"
        elif not note:
            note = (
                f"{len(d.events)} status change{'s' if len(d.events) != 1 else ''} from shard {d.owner or '?'}'s "
                "event table" + (" (the newest; older ones not shown)" if d.events_truncated else "")
            )
        self.query_one("#history-note", Static).update(Text(note, style="dim"))

    def action_raw(self) -> None:
        d = self.detail
        if d is None:
            return
        data = {
            "task_id": d.task_id,
            "owner": d.owner,
            "task": d.task.raw if d.task else None,
            "error": d.error,
            "status_message": d.status_message,
            "progress": d.progress,
            "events": d.events,
            "problems": d.problems,
        }
        self.app.push_screen(RawScreen(f"Task {d.task_id}", data))

    def _fill_tree(self, which: str, graph: dict[str, Any], max_nodes: int, problem: str | None) -> None:
        tree: Tree[str] = self.query_one(f"#{which}-tree", Tree)
        root, left_out = dep_tree(graph, self.task_id, max_nodes=max_nodes)
        signature = (root, left_out, problem)
        if self._trees.get(which) == signature:
            return  # unchanged: keep the user's cursor and folds
        self._trees[which] = signature
        tree.clear()
        label = "depends on" if which == "upstream" else "needed by"
        if root is None:
            tree.root.set_label(
                Text(problem or f"{self.task_id} is not in the graph", style="red" if problem else "dim")
            )
            return
        tree.root.set_label(_node_label(root, prefix=f"{label}: "))
        tree.root.data = root.task_id

        def add(parent: Any, node: DepNode) -> None:
            for child in node.children:
                if child.children:
                    add(parent.add(_node_label(child), data=child.task_id, expand=True), child)
                else:
                    parent.add_leaf(_node_label(child), data=child.task_id)

        add(tree.root, root)
        if not root.children:
            tree.root.add_leaf(Text("nothing", style="dim"))
        if left_out:
            tree.root.add_leaf(
                Text(f"… {left_out:,} more not drawn (limit {max_nodes:,} nodes)", style="dim")
            )
        tree.root.expand()

    def on_tree_node_selected(self, event: Tree.NodeSelected[str]) -> None:
        task_id = event.node.data
        if task_id and task_id != self.task_id:
            self.app.push_screen(TaskDetailScreen(task_id))

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_act(self, action: str) -> None:
        app: Any = self.app
        app.request_action(action, self.task_id)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action != "act":
            return True
        app: Any = self.app
        if app.config.readonly:
            return False
        t = self.detail.task if self.detail else None
        return applicable(str(parameters[0]), t.status if t else None, t.re_enable_able if t else None)


def _node_label(node: DepNode, prefix: str = "") -> Text:
    text = Text(prefix, style="dim")
    text.append(f"{node.status:<8}", style=STATUS_STYLE.get(node.status, ""))
    text.append(" ")
    text.append(node.label)
    if node.repeated:
        text.append("  (shown above)", style="dim")
    if node.missing:
        text.append("  (not in the answer)", style="dim")
    return text


class ShardDetailScreen(DetailScreen):
    """One shard: its health fields and its tasks by namespace and status."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("l", "logs", "Logs"),
        Binding("y", "raw", "Raw"),
    ]
    view_label = "Shard"

    def action_logs(self) -> None:
        app: Any = self.app
        app.open_logs(f"shard-{self.shard_id}")

    def action_raw(self) -> None:
        app: Any = self.app
        snap: Snapshot | None = app.snapshot
        shard = next((s for s in snap.shards if s.shard_id == self.shard_id), None) if snap else None
        self.app.push_screen(
            RawScreen(f"Shard {self.shard_id}", dataclasses.asdict(shard) if shard else None)
        )

    def __init__(self, shard_id: str) -> None:
        super().__init__()
        self.shard_id = shard_id

    def compose(self) -> ComposeResult:
        yield HealthHeader(id="header")
        yield Static(Text(f" Shard  {self.shard_id}", style="bold"), classes="view-title")
        with VerticalScroll():
            yield Static("", id="shard-body")
        yield Footer()

    def on_snapshot(self, snap: Snapshot | None) -> None:
        if snap is None:
            return
        shard = next((s for s in snap.shards if s.shard_id == self.shard_id), None)
        body = self.query_one("#shard-body", Static)
        if shard is None:
            body.update(Text(f"The router no longer reports shard {self.shard_id}.", style="red"))
            return
        state = Text("up", style="bold green") if shard.up else Text("DOWN", style="bold white on red")
        kv = _kv(
            [
                ("state", state),
                ("error", Text(shard.error or "—", style="red" if shard.error else "")),
                ("group", shard.group + ("  (default group)" if shard.group == snap.default_group else "")),
                ("endpoint", shard.endpoint),
                ("latency", fmt_ms(shard.latency_ms)),
                ("store", f"{shard.backend or '—'}  {shard.location or ''}"),
                ("version", shard.version or "—"),
                (
                    "started",
                    f"{fmt_time(shard.started)}  (up {fmt_age(snap.time - shard.started)})"
                    if shard.started
                    else "—",
                ),
                ("live workers", fmt_count(shard.workers)),
                ("tasks", fmt_count(shard.total)),
            ]
        )
        statuses = ["PENDING", "RUNNING", "DONE", "FAILED", "DISABLED", "UNKNOWN"]
        table = Table(
            title="tasks by namespace",
            title_justify="left",
            title_style="bold",
            box=None,
            header_style="bold",
            pad_edge=False,
        )
        table.add_column("NAMESPACE")
        for s in statuses:
            table.add_column(s[:4], justify="right", style=STATUS_STYLE[s])
        for ns in sorted(shard.namespaces):
            c = shard.namespaces[ns]
            table.add_row(ns or "(none)", *(fmt_count(c.get(s, 0)) if c.get(s) else "·" for s in statuses))
        body.update(Group(kv, Text(""), table))


class WorkerDetailScreen(DetailScreen):
    """One worker: what it told the scheduler about itself and the tasks it is running."""

    view_label = "Worker"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.worker_name = name

    def compose(self) -> ComposeResult:
        yield HealthHeader(id="header")
        yield Static(Text(f" Worker  {self.worker_name}", style="bold"), classes="view-title")
        with Vertical():
            yield Static("", id="worker-body")
            yield Static(Text(" running tasks (Enter opens)", style="bold"), classes="section-title")
            yield KeyedTable([("status", "STATUS"), ("task", "TASK"), ("id", "TASK ID")], id="running-table")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        app: Any = self.app
        app.poll_now()  # the running tasks come with the next poll

    def on_snapshot(self, snap: Snapshot | None) -> None:
        if snap is None or snap.workers is None:
            return
        w = next((x for x in snap.workers if x.name == self.worker_name), None)
        body = self.query_one("#worker-body", Static)
        if w is None:
            body.update(Text("This worker is gone (pruned after worker_disconnect_delay).", style="red"))
            self.query_one(KeyedTable).sync([])
            return
        rows = [
            ("host", w.host or "—"),
            ("pid", w.pid or "—"),
            ("user", w.username or "—"),
            ("state", Text(w.state, style="green" if w.state == "active" else "bold red")),
            ("last seen", f"{fmt_age(snap.time - w.last_active)} ago" if w.last_active else "—"),
            ("started", fmt_time(w.started)),
            ("processes", w.processes or "—"),
            (
                "running / pending / unique",
                f"{w.num_running if w.num_running is not None else '—'} / "
                f"{w.num_pending if w.num_pending is not None else '—'} / "
                f"{w.num_uniques if w.num_uniques is not None else '—'}",
            ),
            ("first task", w.first_task or "—"),
        ]
        rows += [
            (k, v)
            for k, v in sorted(w.info.items())
            if k not in ("host", "pid", "username", "workers", "first_task")
        ]
        body.update(_kv(rows))
        self.query_one(KeyedTable).sync(
            [
                (tid, (_status(str(t.get("status", ""))), str(t.get("display_name", tid)), tid))
                for tid, t in sorted(w.running.items())
                if isinstance(t, dict)
            ]
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.app.push_screen(TaskDetailScreen(event.row_key.value))


# -- dialogs ------------------------------------------------------------------------------------


class ConfirmScreen(ModalScreen[bool]):
    """Every action asks first; No is the default."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, action: Action, task_id: str | None, command: str = "") -> None:
        super().__init__()
        self.action_spec = action
        self.task_id = task_id
        #: the fedctl command line that does the same, shown before it runs
        self.command = command

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(Text(self.action_spec.title, style="bold"), id="dialog-title")
            yield Static(self.action_spec.question, id="dialog-question")
            if self.task_id:
                yield Static(Text(self.task_id, style="bold"), id="dialog-subject")
            if self.command:
                yield Static(
                    Text.assemble(("same as  ", "dim"), (self.command, "bold cyan")), id="dialog-command"
                )
            with Horizontal(id="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpScreen(ModalScreen[None]):
    """``?``: the keys of the screen underneath and the ``:`` commands."""

    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def __init__(self, keys: list[tuple[str, str]], title: str) -> None:
        super().__init__()
        self.keys = keys
        self.title_text = title

    def compose(self) -> ComposeResult:
        keys = Table(box=None, show_header=False, pad_edge=False)
        keys.add_column(style="bold cyan", no_wrap=True)
        keys.add_column()
        for key, description in self.keys:
            keys.add_row(key, description)
        commands = Table(box=None, show_header=False, pad_edge=False)
        commands.add_column(style="bold cyan", no_wrap=True)
        commands.add_column(style="dim")
        commands.add_column()
        for usage, aliases, text in help_lines():
            commands.add_row(usage, aliases, text)
        with VerticalScroll(id="help"):
            yield Static(Text(f"Keys — {self.title_text}", style="bold"))
            yield Static(keys)
            yield Static(Text("\nCommands (: then Tab completes)", style="bold"))
            yield Static(commands)
            yield Static(
                Text(
                    "\n/ filters with a regex over the visible columns; a leading ! inverts it. "
                    "Esc clears the filter, then goes back.",
                    style="dim",
                )
            )


class RawScreen(Screen[None]):
    """``y``: what the router said about a row or a task, as JSON (k9s' YAML view)."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Back")]
    view_label = "Raw"

    def __init__(self, title: str, data: Any) -> None:
        super().__init__()
        self.title_text = title
        self.data = data

    def compose(self) -> ComposeResult:
        yield HealthHeader(id="header")
        yield Static(Text(f" Raw  {self.title_text}", style="bold"), classes="view-title")
        with VerticalScroll(id="raw"):
            if self.data is None:
                yield Static(Text("nothing known about it any more", style="dim"))
            else:
                yield Static(
                    JSON(json.dumps(self.data, indent=2, sort_keys=True, default=str)), id="raw-body"
                )
        yield Footer()


class LogsScreen(Screen[None]):
    """The log files of ``fedctl up``'s processes, one at a time; ``f`` follows (k9s' log view)."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("f", "follow", "Follow"),
        Binding("left_square_bracket", "other(-1)", "Prev log", key_display="["),
        Binding("right_square_bracket", "other(1)", "Next log", key_display="]"),
    ]
    view_label = "Logs"
    #: lines shown when a file is opened (its tail)
    TAIL = 2000

    def __init__(self, files: list[Path], index: int = 0, *, follow: bool = True) -> None:
        super().__init__()
        self.files = files
        self.index = index
        self.follow = follow
        self._offset = 0
        self._partial = ""

    def compose(self) -> ComposeResult:
        yield HealthHeader(id="header")
        yield Static("", classes="view-title", id="logs-title")
        yield Log(id="log", highlight=False, max_lines=20_000)
        yield Footer()

    def on_mount(self) -> None:
        self._open()
        self.set_interval(0.5, self._tail)

    @property
    def path(self) -> Path:
        return self.files[self.index]

    def _title(self) -> None:
        title = Text(no_wrap=True, overflow="ellipsis")
        title.append(" Logs ", style="bold reverse")
        title.append(f"  {self.path.name}", style="bold")
        title.append(f"  ({self.index + 1}/{len(self.files)}: [ ] switch)", style="dim")
        title.append(
            "  following" if self.follow else "  paused (f follows)",
            style="bold green" if self.follow else "bold yellow",
        )
        self.query_one("#logs-title", Static).update(title)

    def _open(self) -> None:
        log = self.query_one(Log)
        log.clear()
        self._offset, self._partial = 0, ""
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                f.seek(max(0, size - 256 * 1024))
                text = f.read().decode("utf-8", "replace")
                self._offset = f.tell()
        except OSError as e:
            log.write_line(f"cannot read {self.path}: {e.strerror or e}")
            self._title()
            return
        lines = text.splitlines()
        if size > 256 * 1024 and lines:
            lines = lines[1:]  # the first line was cut
        if text and not text.endswith("\n"):
            self._partial = lines.pop() if lines else ""
        log.write_lines(lines[-self.TAIL :])
        log.auto_scroll = self.follow
        if self.follow:
            log.scroll_end(animate=False)
        self._title()

    def _tail(self) -> None:
        """Append what was written since; a file that shrank (a new run truncated it) is reopened."""
        if not self.follow:
            return
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size < self._offset:
            self._open()
            return
        if size == self._offset:
            return
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read(size - self._offset).decode("utf-8", "replace")
            self._offset = f.tell()
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        if lines:
            self.query_one(Log).write_lines(lines)

    def action_follow(self) -> None:
        self.follow = not self.follow
        log = self.query_one(Log)
        log.auto_scroll = self.follow
        if self.follow:
            self._tail()
            log.scroll_end(animate=False)
        self._title()

    def action_other(self, step: int) -> None:
        self.index = (self.index + step) % len(self.files)
        self._open()


class ContextsScreen(ModalScreen[None]):
    """``:ctx`` without a name: the federations of the config, Enter switches."""

    BINDINGS = [Binding("escape,q", "app.pop_screen", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="contexts"):
            yield Static(Text("Contexts — Enter switches (:ctx NAME does too)", style="bold"))
            yield KeyedTable(
                [("name", "NAME"), ("router", "ROUTER"), ("config", "CONFIG")], id="contexts-table"
            )

    def on_mount(self) -> None:
        app: Any = self.app
        current = app.context.name if app.context else None
        self.query_one(KeyedTable).sync(
            [
                (
                    c.name,
                    (
                        Text(
                            ("* " if c.name == current else "  ") + c.name,
                            style="bold" if c.name == current else "",
                        ),
                        c.router,
                        c.config or "—",
                    ),
                )
                for c in app.contexts
            ]
        )
        self.query_one(KeyedTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        app: Any = self.app
        self.dismiss()
        if event.row_key.value:
            app.switch_context(event.row_key.value)


ACTION_NAMES = tuple(ACTIONS)
__all__ = [
    "ACTION_NAMES",
    "ConfirmScreen",
    "ContextsScreen",
    "HelpScreen",
    "LogsScreen",
    "RawScreen",
    "MainScreen",
    "ShardDetailScreen",
    "TaskDetailScreen",
    "WorkerDetailScreen",
]
