"""Pilot tests of the TUI on a replayed capture: navigation, commands, filter, drill-down, dialogs, readonly.

The capture (tests/test_tui_capture.py) has three refreshes; the app's own
timer is set far away so the tests decide when a refresh happens.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Tree

from tests.test_tui_capture import DISABLED_EXTRACT, FAILED_EXTRACT, T0, build_capture, task_id
from tui.app import FederationApp
from tui.config import TuiConfig
from tui.model import RowFilter
from tui.screens import (
    ConfirmScreen,
    HelpScreen,
    MainScreen,
    ShardDetailScreen,
    TaskDetailScreen,
    WorkerDetailScreen,
)
from tui.source import RecordingSource, ReplaySource, Session
from tui.views import KeyedTable, TasksView
from tui.widgets import CommandPrompt, FilterPrompt, HealthHeader

SIZE = (120, 36)


def sync(fn: Callable[..., Any]) -> Callable[..., None]:
    """Run an async test body in its own event loop (no async pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tui") / "capture.json"
    build_capture(path)
    return path


def make_app(capture: Path, **config: Any) -> FederationApp:
    return FederationApp(ReplaySource(capture), TuiConfig(refresh=3600, **config))


async def until(pilot: Pilot[Any], cond: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


async def polled(pilot: Pilot[Any], n: int) -> None:
    app: FederationApp = pilot.app  # type: ignore[assignment]
    await until(pilot, lambda: app.polls >= n and not app._polling, f"{n} polls")


async def command(pilot: Pilot[Any], line: str) -> None:
    await pilot.press("colon")
    await pilot.press(*line)
    await pilot.press("enter")
    await pilot.pause()


def main(app: FederationApp) -> MainScreen:
    screen = app.screen_stack[0]
    assert isinstance(screen, MainScreen)
    return screen


def table_keys(app: FederationApp) -> list[str]:
    table = main(app).current_view.table
    return [str(k) for k in table._order]


def header_text(app: FederationApp) -> str:
    return str(app.screen.query_one(HealthHeader).render())


def screen_text(app: FederationApp) -> str:
    """What the terminal shows, as plain text."""
    return "\n".join("".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips())


@sync
async def test_views_switch_by_command_and_alias_and_esc_goes_back(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        assert main(app).current_view.view_id == "shards"
        assert table_keys(app) == ["s0", "s1", "fin-0"]
        await command(pilot, "ns")
        assert main(app).current_view.view_id == "namespaces"
        assert table_keys(app) == ["(none)", "daily", "finance.ledger", "reports"]
        await command(pilot, "w")
        await polled(pilot, 2)
        assert main(app).current_view.view_id == "workers"
        assert len(table_keys(app)) == 3
        await command(pilot, "tasks FAILED")
        await polled(pilot, 3)
        assert main(app).current_view.view_id == "tasks"
        assert main(app).tasks_view.query_spec.status == "FAILED"
        await pilot.press("escape")
        assert main(app).current_view.view_id == "workers"
        await pilot.press("escape")
        assert main(app).current_view.view_id == "namespaces"
        await pilot.press("escape", "escape")
        assert main(app).current_view.view_id == "shards"
        # a bad command says so and changes nothing
        await command(pilot, "bogus")
        assert main(app).current_view.view_id == "shards"
        assert any("unknown command 'bogus'" in n.message for n in app._notifications)


@sync
async def test_command_prompt_completes_names_and_arguments(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await pilot.press("colon", "t", "a")
        prompt = app.screen.query_one(CommandPrompt)
        assert prompt.has_focus
        await until(pilot, lambda: prompt._suggestion == "tasks", "a completion")
        await pilot.press("tab")
        assert prompt.value == "tasks "  # the completed word is followed by a space
        await pilot.press("d", "i")
        await until(pilot, lambda: prompt._suggestion == "tasks DISABLED", "a status completion")
        await pilot.press("tab", "enter")
        await polled(pilot, 2)
        view = main(app).current_view
        assert isinstance(view, TasksView) and view.query_spec.status == "DISABLED"
        assert table_keys(app) == [DISABLED_EXTRACT]
        # namespaces come from the last refresh
        await pilot.press("colon", *"ns fin")
        await until(pilot, lambda: prompt._suggestion == "ns finance.ledger", "a namespace completion")
        await pilot.press("escape")
        assert not prompt.display and main(app).current_view.table.has_focus


@sync
async def test_filter_regex_inverts_and_rejects_bad_patterns(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await command(pilot, "tasks")
        await polled(pilot, 2)
        everything = table_keys(app)
        assert len(everything) > 20
        await pilot.press("slash", *"payments")
        await until(pilot, lambda: len(table_keys(app)) < len(everything), "the filter")
        kept = table_keys(app)
        assert kept and all("payments" in k for k in kept)
        # typing a leading ! inverts
        await pilot.press("home", "exclamation_mark", "enter")
        await until(
            pilot, lambda: table_keys(app) and all("payments" not in k for k in table_keys(app)), "inverted"
        )
        assert len(table_keys(app)) == len(everything) - len(kept)
        assert not app.screen.query_one(FilterPrompt).display
        # a bad regex leaves the current filter alone and marks the prompt
        await pilot.press("slash", "ctrl+u", *"load")
        await until(pilot, lambda: table_keys(app) and all("Load" in k for k in table_keys(app)), "load only")
        before = table_keys(app)
        await pilot.press("left_square_bracket")
        prompt = app.screen.query_one(FilterPrompt)
        await until(pilot, lambda: prompt.has_class("-error"), "the error mark")
        assert table_keys(app) == before
        await pilot.press("escape")
        # Esc on the view clears the filter
        await pilot.press("escape")
        assert main(app).current_view.row_filter == RowFilter()
        assert table_keys(app) == everything


@sync
async def test_namespace_drill_down_narrows_tasks_on_the_router(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await command(pilot, "ns")
        table = main(app).current_view.table
        table.move_cursor(row=table_keys(app).index("finance.ledger"))
        await pilot.press("enter")
        await polled(pilot, 2)
        view = main(app).current_view
        assert isinstance(view, TasksView) and view.query_spec.namespace == "finance.ledger"
        await until(pilot, lambda: len(table_keys(app)) == 7, "the ledger's seven days")
        assert all(k.startswith("finance.ledger.Post_") for k in table_keys(app))
        # the status key narrows further, the clear key resets
        await pilot.press("s")
        await polled(pilot, 3)
        assert view.query_spec.status == "FAILED" and view.query_spec.namespace == "finance.ledger"
        assert table_keys(app) == []
        assert "No task matches" in str(view.query_one(".view-notice").render())
        assert "ns=finance.ledger" in screen_text(app) and "status=FAILED" in screen_text(app)
        await pilot.press("c")
        assert view.query_spec.describe() == ""


@sync
async def test_task_detail_shows_error_and_both_trees_and_drills_further(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await command(pilot, "tasks")
        await polled(pilot, 2)
        assert table_keys(app)[0] == FAILED_EXTRACT  # failures first
        await pilot.press("enter")
        screen = await until(
            pilot, lambda: isinstance(app.screen, TaskDetailScreen) and app.screen, "the detail"
        )
        assert screen.task_id == FAILED_EXTRACT
        await until(pilot, lambda: screen.detail is not None, "the detail's answers")
        await pilot.pause()
        overview = screen_text(app)
        assert "family          daily.Extract" in overview and "status          FAILED" in overview
        assert "topic  payments" in overview and "shard           ?" in overview
        await pilot.press("2")
        await pilot.pause()
        assert "answered 503 after 3 attempts" in screen_text(app)
        await pilot.press("4")
        tree: Tree[str] = screen.query_one("#downstream-tree", Tree)
        labels = [str(n.label) for n in _walk(tree.root)]
        assert any("daily.Transform(date=2026-11-20, topic=payments)" in lbl for lbl in labels)
        assert any("finance.ledger.Post(date=2026-11-20)" in lbl for lbl in labels)
        # Enter on a node opens that task
        tree.focus()
        tree.move_cursor(
            next(
                n
                for n in _walk(tree.root)
                if n.data == task_id("daily.Load", date="2026-11-20", topic="payments")
            )
        )
        await pilot.press("enter")
        nested = await until(pilot, lambda: app.screen is not screen and app.screen, "the nested detail")
        assert isinstance(nested, TaskDetailScreen) and nested.task_id.startswith(
            "daily.Load_2026_11_20_payments"
        )
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


def _walk(node: Any) -> Iterator[Any]:
    yield node
    for child in node.children:
        yield from _walk(child)


@sync
async def test_shard_and_worker_drill_down(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await pilot.press("enter")  # s0
        assert isinstance(app.screen, ShardDetailScreen) and app.screen.shard_id == "s0"
        await pilot.pause()
        body = screen_text(app)
        assert "sqlite" in body and "daily" in body and "tcp://127.0.0.1:5701" in body
        await pilot.press("escape")
        await command(pilot, "workers")
        await polled(pilot, 2)
        main(app).current_view.table.move_cursor(
            row=[i for i, k in enumerate(table_keys(app)) if "etl-02" in k][0]
        )
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, WorkerDetailScreen)
        await polled(pilot, 3)
        running = screen.query_one(KeyedTable)
        await until(pilot, lambda: running.row_count > 0, "the worker's running tasks")
        await pilot.press("enter")
        assert isinstance(app.screen, TaskDetailScreen)


@sync
async def test_actions_ask_first_and_no_cancels(capture: Path, tmp_path: Path) -> None:
    source = RecordingSource(ReplaySource(capture), tmp_path / "rec.json")
    app = FederationApp(source, TuiConfig(refresh=3600))
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await command(pilot, "tasks")
        await polled(pilot, 2)
        footer_keys = {b.binding.key for b in app.screen.active_bindings.values()}
        assert {"e", "g", "d", "p"} <= footer_keys
        await pilot.press("g")  # forgive the FAILED task under the cursor
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.task_id == FAILED_EXTRACT
        await pilot.press("n")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("g")
        await pilot.press("y")
        # the replay refuses to change anything, and says so
        await until(
            pilot, lambda: any("changes nothing" in n.message for n in app._notifications), "the outcome"
        )
        actions = [c for f in source._frames for c in f["calls"] if c["method"] == "forgive_failures"]
        assert [c["kwargs"] for c in actions] == [{"task_id": FAILED_EXTRACT}]
        # pause asks too
        await pilot.press("p")
        assert isinstance(app.screen, ConfirmScreen) and app.screen.action_spec.method == "pause"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


@sync
async def test_actions_that_do_not_apply_are_dimmed(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await command(pilot, "tasks DISABLED")
        await polled(pilot, 2)
        enabled = {b.binding.key: b.enabled for b in app.screen.active_bindings.values()}
        assert enabled["e"] and enabled["d"] and not enabled["g"]
        await pilot.press("g")
        assert isinstance(app.screen, MainScreen)  # nothing to forgive on a DISABLED task
        await pilot.press("e")
        assert isinstance(app.screen, ConfirmScreen) and app.screen.action_spec.method == "re_enable_task"


@sync
async def test_readonly_hides_every_action(capture: Path) -> None:
    app = make_app(capture, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await command(pilot, "tasks")
        await polled(pilot, 2)
        keys = {b.binding.key for b in app.screen.active_bindings.values()}
        assert not {"e", "g", "d", "p"} & keys
        for key in ("e", "g", "d", "p"):
            await pilot.press(key)
            assert isinstance(app.screen, MainScreen)
        await command(pilot, "pause")
        assert isinstance(app.screen, MainScreen)
        assert any("read-only" in n.message for n in app._notifications)
        await pilot.press("enter")
        assert isinstance(app.screen, TaskDetailScreen)
        await until(pilot, lambda: app.screen.detail is not None, "the detail")
        assert not {"e", "g", "d"} & {b.binding.key for b in app.screen.active_bindings.values()}
        assert "readonly" in header_text(app)


@sync
async def test_faults_only_and_help(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await pilot.press("f")
        assert app.faults_only and table_keys(app) == []  # every shard is healthy
        await command(pilot, "tasks")
        await polled(pilot, 2)
        assert set(table_keys(app)) == {
            FAILED_EXTRACT,
            DISABLED_EXTRACT,
            task_id("daily.Transform", date="2026-11-20", topic="clicks"),
        }
        await pilot.press("f")
        await polled(pilot, 3)
        assert len(table_keys(app)) > 3
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_keys = dict(app.screen.keys)
        assert help_keys["s"] == "Status" and help_keys["/"] == "Filter" and help_keys[":"] == "Cmd"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


@sync
async def test_header_counts_deltas_and_a_shard_going_down(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        assert "3/3 up" in header_text(app) and app.screen.query_one(HealthHeader).has_class("-warning")
        await pilot.press("r")
        await polled(pilot, 2)
        text = header_text(app)
        assert "FAIL 2 +1" in text and "DONE 123 +2" in text and "failures rising" in text
        await pilot.press("r")
        await polled(pilot, 3)
        text = header_text(app)
        assert "2/3 up" in text and "shard s1 down" in text and "CRITICAL" in text
        assert app.screen.query_one(HealthHeader).has_class("-critical")
        row = main(app).current_view.table.get_row("s1")
        assert "DOWN" in str(row[2]) and "timeout" in str(row[-1])
        assert app.snapshot is not None and app.snapshot.time == T0 + 4


class GatedSource:
    """A replay whose polls wait for a gate: a router that is slow to answer."""

    def __init__(self, inner: ReplaySource) -> None:
        self.inner = inner
        self.name, self.live = inner.name, True
        self.gate = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.sessions = 0
        self._lock = threading.Lock()

    @contextmanager
    def session(self, *, poll: bool = False) -> Iterator[Session]:
        with self._lock:
            self.in_flight += 1
            self.sessions += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if poll:
                self.gate.wait(10)
            with self.inner.session(poll=poll) as s:
                yield s
        finally:
            with self._lock:
                self.in_flight -= 1

    def now(self) -> float:
        return self.inner.now()

    def close(self) -> None:
        pass


@sync
async def test_a_slow_router_never_stacks_polls_nor_freezes_the_ui(capture: Path) -> None:
    source = GatedSource(ReplaySource(capture))
    app = FederationApp(source, TuiConfig(refresh=0.05))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: source.in_flight == 1, "the first poll to start")
        for _ in range(5):
            await pilot.press("r")
        await command(pilot, "ns")  # the UI still answers while the poll hangs
        assert main(app).current_view.view_id == "namespaces"
        # give a buggy app time to start more polls (refresh is 50 ms and r was pressed 5 times): none may start
        await asyncio.sleep(0.2)
        assert source.in_flight == 1 and source.sessions == 1
        source.gate.set()
        await until(pilot, lambda: app.polls >= 4, "polls to resume")
        assert source.max_in_flight == 1
