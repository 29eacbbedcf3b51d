"""Compound widgets shared by the screens: the health header, keyed tables, the prompts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import ColumnKey

from tui.commands import complete
from tui.model import (
    SHORT,
    STATUS_STYLE,
    Snapshot,
    fmt_age,
    fmt_count,
    fmt_delta,
    fmt_ms,
    fmt_rate,
    sparkline,
)

LEVEL_STYLE = {
    "ok": "bold black on green",
    "warning": "bold black on yellow",
    "critical": "bold white on red",
}
ALERT_MARK = {"warning": ("▲", "yellow"), "critical": ("✖", "bold red")}
HEADER_STATUSES = ("PENDING", "RUNNING", "BATCH_RUNNING", "DONE", "FAILED", "DISABLED", "UNKNOWN")


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def render_header(
    snap: Snapshot | None, *, width: int, refresh: float, faults_only: bool, view: str, readonly: bool
) -> Text:
    """The four header lines: where, shards and workers, counts with deltas, alerts."""
    out = Text(no_wrap=True, overflow="ellipsis")
    if snap is None:
        out.append(" connecting…", style="dim")
        return out
    level = snap.level
    badge = f" {level.upper()} "
    # line 1: the router
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(" router ", style="dim")
    router = snap.router.get("zmq") or snap.source
    line.append(str(router), style="bold")
    if snap.router.get("http") and width >= 120:
        line.append(f" http {snap.router['http']}", style="dim")
    if snap.router.get("version"):
        line.append(f" v{snap.router['version']}", style="dim")
    line.append(" · ", style="dim")
    if not snap.router_ok:
        since = f" for {fmt_age(snap.time - snap.last_ok)}" if snap.last_ok else ""
        line.append(f"UNREACHABLE{since}", style="bold red")
    elif snap.live:
        line.append(f"{fmt_ms(snap.router_latency_ms)} · every {refresh:g}s", style="green")
    else:
        line.append("replay", style="bold yellow")
    if readonly:
        line.append(" · readonly", style="dim")
    right = Text.assemble(
        (view, "bold"), (" · faults" if faults_only else "", "bold yellow"), "  ", (badge, LEVEL_STYLE[level])
    )
    line.truncate(max(0, width - right.cell_len - 1), overflow="ellipsis")
    line.append(" " * max(1, width - line.cell_len - right.cell_len))
    line.append_text(right)
    out.append_text(line)
    out.append("\n")

    # line 2: shards, workers, throughput, faults
    line = Text(no_wrap=True, overflow="ellipsis")
    total = len(snap.shards)
    up = snap.shards_up
    line.append(" shards ", style="dim")
    if total:
        line.append(f"{up}/{total} up", style="bold green" if up == total else "bold red")
    else:
        line.append("—", style="bold red")
    line.append(" · workers ", style="dim")
    live = snap.live_workers
    line.append(fmt_count(live), style="bold")
    line.append(" · done/min ", style="dim")
    line.append(fmt_rate(snap.done_per_min), style="bold")
    if snap.throughput:
        line.append(" " + sparkline(snap.throughput, 12), style="green")
    failed, disabled = snap.total("FAILED"), snap.total("DISABLED")
    line.append(" · failing ", style="dim")
    line.append(fmt_count(failed), style="bold red" if failed else "bold")
    line.append(" · disabled ", style="dim")
    line.append(fmt_count(disabled), style="bold magenta" if disabled else "bold")
    if snap.paused:
        line.append(" · ", style="dim")
        line.append("PAUSED", style="bold black on yellow")
    out.append_text(line)
    out.append("\n")

    # line 3: every status with its change since the last refresh
    line = Text(no_wrap=True, overflow="ellipsis")
    if snap.totals is None:
        line.append(" counts unknown while the router does not answer", style="dim")
    else:
        first = True
        for status in HEADER_STATUSES:
            n = snap.totals.get(status, 0)
            if status in ("BATCH_RUNNING", "UNKNOWN") and not n:
                continue
            line.append(" " if first else " · ", style="dim")
            first = False
            line.append(SHORT[status] + " ", style=STATUS_STYLE[status])
            line.append(fmt_count(n), style="bold")
            d = snap.deltas.get(status, 0)
            if d:
                good = (d > 0) == (status in ("DONE", "RUNNING"))
                line.append(" " + fmt_delta(d), style="green" if good else "red")
    out.append_text(line)
    out.append("\n")

    # line 4: alerts, worst first
    line = Text(no_wrap=True, overflow="ellipsis")
    alerts = sorted(snap.alerts, key=lambda a: a.level != "critical")
    if not alerts:
        line.append(" ✔ all shards up, nothing failing", style="green")
    for i, alert in enumerate(alerts):
        mark, style = ALERT_MARK[alert.level]
        line.append(" " if i == 0 else "  ")
        line.append(f"{mark} {alert.text}", style=style)
    out.append_text(line)
    return out


class HealthHeader(Static):
    """Always on top: the federation's health; its border turns yellow or red with the alerts."""

    DEFAULT_CLASSES = "-ok"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self._snapshot: Snapshot | None = None

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._show, init=True)
        self.watch(self.app, "faults_only", lambda _: self.refresh_header(), init=False)

    def _show(self, snap: Snapshot | None) -> None:
        self._snapshot = snap
        level = snap.level if snap else "ok"
        for lv in ("ok", "warning", "critical"):
            self.set_class(lv == level, f"-{lv}")
        self.refresh_header()

    def on_resize(self) -> None:
        self.refresh_header()

    def refresh_header(self) -> None:
        app: Any = self.app
        width = self.content_size.width or self.app.size.width
        self.update(
            render_header(
                self._snapshot,
                width=width,
                refresh=app.config.refresh,
                faults_only=app.faults_only,
                view=getattr(self.screen, "view_label", ""),
                readonly=app.config.readonly,
            )
        )


def _cell_width(cell: Any) -> int:
    if isinstance(cell, Text):
        return cell.cell_len
    return cell_len(str(cell))


class KeyedTable(DataTable[Any]):
    """A DataTable updated by key: only changed cells are touched, the cursor stays on its row."""

    # "?" repeated here so the footer lists it right after Enter, before it is cut at 80 columns
    BINDINGS = [
        Binding("enter", "select_cursor", "Open"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
    ]

    def __init__(self, columns: Sequence[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self._column_keys = [key for key, _ in columns]
        self._labels = [label for _, label in columns]
        self._cells: dict[str, tuple[Any, ...]] = {}
        self._order: list[str] = []

    def on_mount(self) -> None:
        for key, label in zip(self._column_keys, self._labels, strict=True):
            self.add_column(label, key=key)

    def mark_sorted(self, column: str | None, reverse: bool) -> None:
        """Show ▲/▼ after the label of the column the rows are sorted by."""
        for key, label in zip(self._column_keys, self._labels, strict=True):
            mark = (" ▼" if reverse else " ▲") if key == column else ""
            col = self.columns[ColumnKey(key)]
            col.label = Text(label + mark)
        self._require_update_dimensions = True
        self.refresh()

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except Exception:  # the cursor sits outside the rows while they change
            return None

    def sync(self, rows: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Show exactly ``rows`` in this order, adding, removing and updating only what changed."""
        keep = self.selected_key
        new_order = [k for k, _ in rows]
        wanted = dict(rows)
        survivors_before = [k for k in self._order if k in wanted]
        survivors_after = [k for k in new_order if k in self._cells]
        in_place = (
            survivors_before == survivors_after and new_order[: len(survivors_after)] == survivors_after
        )
        with self.app.batch_update():
            if not in_place:
                self.clear()
                self._cells.clear()
            for k in self._order:
                if k not in wanted and k in self._cells:
                    self.remove_row(k)
                    del self._cells[k]
            for k, cells in rows:
                old = self._cells.get(k)
                if old is None:
                    self.add_row(*cells, key=k)
                elif old != cells:
                    for i, (a, b) in enumerate(zip(old, cells, strict=True)):
                        if a != b:
                            # Only let a column grow: DataTable re-measures the whole column when a cell
                            # shrinks, which made a refresh of 1,000 changed ages O(rows²) (40 s).
                            column = self.columns[ColumnKey(self._column_keys[i])]
                            grows = _cell_width(b) > column.content_width
                            self.update_cell(k, self._column_keys[i], b, update_width=grows)
                self._cells[k] = cells
            self._order = new_order
            if keep is not None and keep in self._cells:
                index = self.get_row_index(keep)
                if index != self.cursor_row:
                    self.move_cursor(row=index, animate=False)


class PromptSuggester(Suggester):
    """Completes command names, then their arguments: statuses, and the namespaces, families,
    contexts, log names and columns ``known()`` returns (keyword arguments of :func:`complete`)."""

    def __init__(self, known: Callable[[], Mapping[str, Iterable[str]]]) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self._known = known

    async def get_suggestion(self, value: str) -> str | None:
        return complete(value, **self._known())


class CommandPrompt(Input):
    """``:`` line at the bottom; Tab or → accepts the completion, Esc closes it."""

    BINDINGS = [
        Binding("tab", "accept_completion", "Complete", show=False),
        Binding("escape", "close", "Close", show=False),
    ]

    def action_accept_completion(self) -> None:
        if self._suggestion:
            # a completed word is followed by a space, ready for the next one (not "ns=", which wants its value)
            self.value = self._suggestion + ("" if self._suggestion.endswith("=") else " ")
            self.cursor_position = len(self.value)

    def action_close(self) -> None:
        self.value = ""
        self.post_message(PromptClosed(self))


class FilterPrompt(Input):
    """``/`` filter: applied as you type; Enter keeps it, Esc closes the prompt (the filter stays)."""

    BINDINGS = [Binding("escape", "close", "Close", show=False)]

    def action_close(self) -> None:
        self.post_message(PromptClosed(self))


class PromptClosed(Message):
    """A prompt was closed with Esc; the screen gives the focus back to its table."""

    def __init__(self, prompt: Input) -> None:
        super().__init__()
        self.prompt = prompt
