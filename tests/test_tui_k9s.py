"""Issue 13's TUI: the fixes (Error tab, keys after ':', Tab, '?', glyphs, a DOWN shard's store, FAILED
detail) and what a k9s user expects (sort, raw, task history, logs with follow, :ctx, the fedctl
command of an action), as pilots on the replayed capture; ``task_events`` over a real federation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import luigi.task
import pytest
from textual import events
from textual.widgets import Log, Static

from tests.fedcluster import FedCluster
from tests.test_tui_app import (
    command as run_command,
)
from tests.test_tui_app import (
    main,
    make_app,
    polled,
    screen_text,
    sync,
    table_keys,
    until,
)
from tests.test_tui_capture import FAILED_EXTRACT, ROUTER, TRACEBACK, build_capture
from tui.app import FederationApp
from tui.config import Context, TuiConfig, load_contexts, shard_stores
from tui.screens import (
    ConfirmScreen,
    ContextsScreen,
    HelpScreen,
    LogsScreen,
    RawScreen,
    TaskDetailScreen,
)
from tui.source import ReplaySource
from tui.widgets import CommandPrompt, HealthHeader, KeyedTable

SIZE = (120, 36)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("k9s") / "capture.json"
    build_capture(path)
    return path


async def open_task(pilot: Any, task_id: str) -> TaskDetailScreen:
    app: FederationApp = pilot.app
    app.push_screen(TaskDetailScreen(task_id))
    screen = await until(
        pilot,
        lambda: isinstance(app.screen, TaskDetailScreen) and app.screen.detail is not None and app.screen,
        "the task detail",
    )
    await pilot.pause()
    return screen


def static_text(screen: Any, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


# -- the fixes ----------------------------------------------------------------------------------------
@sync
async def test_error_tab_decodes_lugis_json_encoded_traceback(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        screen = await open_task(pilot, FAILED_EXTRACT)
        await pilot.press("2")
        await pilot.pause()
        shown = screen_text(app)
        assert "\\n" not in static_text(screen, "#error-body")
        assert screen.detail.error == TRACEBACK
        assert "ConnectionError: source api.payments.example answered 503" in shown


@sync
async def test_keys_typed_right_after_colon_reach_the_prompt(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        # all at once, as a fast typist on a busy machine: nothing waits for the prompt to open
        for key, char in (("colon", ":"), ("w", "w"), ("k", "k")):
            app.post_message(events.Key(key, char))
        prompt = app.screen.query_one(CommandPrompt)
        await until(pilot, lambda: prompt.value == "wk", "every key in the prompt")
        await pilot.press("enter")
        await until(pilot, lambda: main(app).current_view.view_id == "workers", "the workers view")


@sync
async def test_tab_completion_adds_a_space(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await pilot.press("colon", "w", "o")
        prompt = app.screen.query_one(CommandPrompt)
        await until(pilot, lambda: prompt._suggestion == "workers", "a completion")
        await pilot.press("tab")
        assert prompt.value == "workers " and prompt.cursor_position == len("workers ")
        await pilot.press("escape")
        await pilot.press("colon", *"tasks ns")
        await until(pilot, lambda: prompt._suggestion == "tasks ns=", "an option completion")
        await pilot.press("tab")
        assert prompt.value == "tasks ns="  # an option wants its value, not a space


@sync
async def test_help_lists_only_this_apps_keys(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await run_command(pilot, "tasks")
        await polled(pilot, 2)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "help")
        descriptions = {d for _, d in app.screen.keys}
        assert {"Sort", "Raw", "Status", "Filter", "Cmd", "Quit", "Logs"} <= descriptions
        textual_own = {"Focus Next", "Focus Previous", "Copy text", "Palette", "Maximize", "Scroll Up"}
        assert not descriptions & textual_own, descriptions
        assert not any("cursor" in d.lower() or "scroll" in d.lower() for d in descriptions), descriptions


BLOCKS = re.compile("[\u2580-\u259f]")


@sync
async def test_no_block_glyphs_left_in_the_table_area(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=(80, 24)) as pilot:
        await polled(pilot, 1)
        for view in ("tasks", "shards", "workers"):
            await run_command(pilot, view)
            n = app.polls
            await pilot.press("r")
            await polled(pilot, n + 1)
            lines = screen_text(app).splitlines()
            table_area = lines[6:-1]  # below the header and the view title, above the footer
            assert not [line for line in table_area if BLOCKS.search(line)], "\n".join(table_area)


@sync
async def test_a_down_shard_keeps_its_store_from_before_and_from_the_config(
    capture: Path, tmp_path: Path
) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        for n in (2, 3):  # s1 is down in the third frame
            await pilot.press("r")
            await polled(pilot, n)
        s1 = next(s for s in app.snapshot.shards if s.shard_id == "s1")
        assert not s1.up and (s1.backend, s1.location) == ("sqlite", ".federation/s1.db")
        assert "DOWN" in screen_text(app) and screen_text(app).count(".federation/s1.db") == 1

    # a TUI started while s1 is already down knows it from the federation.toml
    doc = json.loads(capture.read_text())
    doc["frames"] = doc["frames"][2:]
    cfg = tmp_path / "federation.toml"
    cfg.write_text(
        '[router]\nzmq = "tcp://127.0.0.1:5555"\n'
        '[[shards]]\nid = "s1"\nendpoint = "tcp://127.0.0.1:5702"\nstore = "sqlite:///.federation/s1.db"\n'
        '[[shards]]\nid = "fin-0"\nendpoint = "tcp://127.0.0.1:5703"\n'
        'store = "postgresql://postgres@127.0.0.1/test"\nschema = "fed_fin_0"\n'
    )
    assert shard_stores(str(cfg)) == {
        "s1": ("sqlite", ".federation/s1.db"),
        "fin-0": ("postgresql", "schema fed_fin_0"),
    }
    app = FederationApp(
        ReplaySource(doc), TuiConfig(refresh=3600), contexts=(Context("current", ROUTER, str(cfg)),)
    )
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        s1 = next(s for s in app.snapshot.shards if s.shard_id == "s1")
        assert not s1.up and s1.backend == "sqlite" and s1.location == ".federation/s1.db"


@sync
async def test_a_failed_task_is_not_running_on_its_worker(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        screen = await open_task(pilot, FAILED_EXTRACT)
        assert screen.detail.task.status == "FAILED" and screen.detail.task.worker_running
        text = screen_text(app)
        assert re.search(r"running on\s+—", text), text
        assert re.search(r"last run by\s+Worker\(", text), text


# -- sort ---------------------------------------------------------------------------------------------
@sync
async def test_o_sorts_by_the_next_column_and_shift_o_reverses(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        assert table_keys(app) == ["s0", "s1", "fin-0"]
        await pilot.press("o")  # SHARD
        assert table_keys(app) == ["fin-0", "s0", "s1"]
        assert "sorted by SHARD ▲" in str(main(app).current_view.title_text)
        await pilot.press("O")
        assert table_keys(app) == ["s1", "s0", "fin-0"]
        await pilot.press("o", "o", "o", "O")  # GROUP, STATE, LATENCY; reversed: slowest first
        view = main(app).current_view
        assert view.sort_column == "latency" and view.sort_reverse
        assert table_keys(app) == ["s1", "fin-0", "s0"]  # 1.7ms, 1.4ms, 1.2ms
        # a sorted table keeps its order across a refresh
        await pilot.press("r")
        await polled(pilot, 2)
        assert table_keys(app)[0] == "s1"


@sync
async def test_sort_command_and_header_click(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await run_command(pilot, "tasks")
        await polled(pilot, 2)
        await run_command(pilot, "sort updated desc")
        view = main(app).current_view
        ages = [view._rows_by_id[k].last_updated for k in table_keys(app)]
        assert ages == sorted(ages)  # UPDATED is an age: the oldest update is the largest age
        await run_command(pilot, "sort nosuch")
        assert view.sort_column == "updated"
        table = view.table
        table.post_message(
            table.HeaderSelected(
                table,
                table.columns[table.ordered_columns[1].key].key,
                1,
                table.columns[table.ordered_columns[1].key].label,
            )
        )
        await until(pilot, lambda: view.sort_column == "ns", "a header click")
        namespaces = [view._rows_by_id[k].namespace for k in table_keys(app)]
        assert namespaces == sorted(namespaces, key=str.lower)
        await run_command(pilot, "sort")
        assert view.sort_column is None


# -- raw ----------------------------------------------------------------------------------------------
@sync
async def test_y_shows_the_raw_answer_of_any_row(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, RawScreen), "the raw view")
        assert app.screen.data["shard_id"] == "s0" and app.screen.data["backend"] == "sqlite"
        await until(
            pilot, lambda: '"endpoint": "tcp://127.0.0.1:5701"' in screen_text(app), "the JSON on screen"
        )
        await pilot.press("escape")
        await run_command(pilot, "workers")
        await polled(pilot, 2)
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, RawScreen), "the raw view of a worker")
        assert app.screen.data["name"].startswith("Worker(")
        await pilot.press("escape")
        screen = await open_task(pilot, FAILED_EXTRACT)
        await pilot.press("y")
        await until(pilot, lambda: isinstance(app.screen, RawScreen), "the raw view of a task")
        assert app.screen.data["task"]["status"] == "FAILED" and app.screen.data["error"] == TRACEBACK
        assert screen is not app.screen


# -- task history ---------------------------------------------------------------------------------------
@sync
async def test_5_shows_the_task_history_from_the_store(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        screen = await open_task(pilot, FAILED_EXTRACT)
        await pilot.press("5")
        await pilot.pause()
        table = screen.query_one("#history-table", KeyedTable)
        cells = [table._cells[k] for k in table._order]
        assert [str(c[1]) for c in cells] == ["FAILED", "RUNNING", "PENDING"]  # newest first
        assert all(c[2] == "etl-01" or c[2] == "etl-02" for c in cells)
        assert all(c[3].startswith("Worker(") for c in cells)
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", cells[0][0])
        assert "3 status changes" in static_text(screen, "#history-note")


# -- logs -----------------------------------------------------------------------------------------------
def federation_dir(tmp_path: Path) -> Path:
    cfg = tmp_path / "federation.toml"
    cfg.write_text('[router]\nzmq = "tcp://127.0.0.1:5555"\n')
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "router.log").write_text("router up\n")
    (logs / "shard-s0.log").write_text("".join(f"s0 line {i}\n" for i in range(5)))
    (logs / "shard-s1.log").write_text("s1 line\n")
    return cfg


def log_lines(app: FederationApp) -> list[str]:
    return list(app.screen.query_one(Log).lines)


@sync
async def test_l_opens_the_selected_shards_log_and_follows_it(capture: Path, tmp_path: Path) -> None:
    cfg = federation_dir(tmp_path)
    app = FederationApp(
        ReplaySource(capture), TuiConfig(refresh=3600), contexts=(Context("current", ROUTER, str(cfg)),)
    )
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await pilot.press("l")  # the cursor is on s0
        await until(pilot, lambda: isinstance(app.screen, LogsScreen), "the logs")
        assert app.screen.path.name == "shard-s0.log"
        assert log_lines(app) == [f"s0 line {i}" for i in range(5)]
        with open(tmp_path / "logs" / "shard-s0.log", "a") as f:
            f.write("s0 line 5\ns0 par")
        await until(pilot, lambda: log_lines(app)[-1] == "s0 line 5", "the new line (follow)")
        await pilot.press("f")  # pause
        assert not app.screen.follow and "paused" in static_text(app.screen, "#logs-title")
        with open(tmp_path / "logs" / "shard-s0.log", "a") as f:
            f.write("tial\ns0 line 7\n")
        await pilot.pause(0.8)
        assert log_lines(app)[-1] == "s0 line 5"
        await pilot.press("f")  # follow again: catches up
        await until(
            pilot, lambda: log_lines(app)[-2:] == ["s0 partial", "s0 line 7"], "the lines written meanwhile"
        )
        await pilot.press("right_square_bracket")
        assert app.screen.path.name == "shard-s1.log" and log_lines(app) == ["s1 line"]
        await pilot.press("escape")
        await run_command(pilot, "logs router")
        await until(pilot, lambda: isinstance(app.screen, LogsScreen), "the router's log")
        assert log_lines(app) == ["router up"]


@sync
async def test_logs_without_a_known_data_dir_say_how(capture: Path) -> None:
    app = make_app(capture)
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await pilot.press("l")
        await pilot.pause()
        assert not isinstance(app.screen, LogsScreen)
        assert any("--config" in str(n.message) for n in app._notifications)


# -- :ctx -------------------------------------------------------------------------------------------------
@sync
async def test_ctx_switches_between_the_federations_of_the_config(capture: Path, tmp_path: Path) -> None:
    other = json.loads(capture.read_text().replace("tcp://127.0.0.1:5555", "tcp://10.0.0.2:5555"))
    cfg = tmp_path / "tui.toml"
    cfg.write_text(
        '[tui]\nrefresh = 3600\n[tui.contexts]\nlocal = "tcp://127.0.0.1:5555"\n'
        'staging = { router = "tcp://10.0.0.2:5555", config = "staging.toml" }\n'
    )
    contexts = load_contexts(str(cfg), ROUTER)
    assert [(c.name, c.router) for c in contexts] == [
        ("local", "tcp://127.0.0.1:5555"),
        ("staging", "tcp://10.0.0.2:5555"),
    ]
    assert contexts[1].config == str(tmp_path / "staging.toml")
    connected: list[str] = []

    def connect(ctx: Context) -> ReplaySource:
        connected.append(ctx.name)
        return ReplaySource(other)

    app = FederationApp(
        ReplaySource(capture), TuiConfig(refresh=3600), contexts=contexts, context="local", connect=connect
    )
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await run_command(pilot, "ctx")
        await until(pilot, lambda: isinstance(app.screen, ContextsScreen), "the context list")
        assert "* local" in screen_text(app) and "staging" in screen_text(app)
        await pilot.press("escape")
        await pilot.press("colon", *"ctx st")
        prompt = app.screen.query_one(CommandPrompt)
        await until(pilot, lambda: prompt._suggestion == "ctx staging", "a context completion")
        await pilot.press("tab", "enter")
        await until(
            pilot, lambda: app.snapshot is not None and "10.0.0.2" in str(app.snapshot.router), "staging"
        )
        assert connected == ["staging"] and app.context.name == "staging"
        assert "tcp://10.0.0.2:5555" in str(app.screen.query_one(HealthHeader).render())
        await run_command(pilot, "ctx nowhere")
        assert app.context.name == "staging"
        assert any("no context 'nowhere'" in str(n.message) for n in app._notifications)


def test_bad_contexts_are_reported_with_the_file(tmp_path: Path) -> None:
    from federation.errors import ConfigError

    cfg = tmp_path / "tui.toml"
    cfg.write_text(
        '[tui.contexts]\nprod = "not-an-endpoint"\nqa = { router = "tcp://h:1", colour = "red" }\n'
    )
    with pytest.raises(ConfigError) as e:
        load_contexts(str(cfg), ROUTER)
    assert str(cfg) in str(e.value) and "prod" in str(e.value) and "colour" in str(e.value)


# -- the fedctl command of an action ------------------------------------------------------------------
@sync
async def test_an_action_shows_its_fedctl_command_before_it_runs(capture: Path) -> None:
    app = make_app(capture)
    app.contexts = (Context("current", ROUTER),)
    app.context = app.contexts[0]
    async with app.run_test(size=SIZE) as pilot:
        await polled(pilot, 1)
        await open_task(pilot, FAILED_EXTRACT)
        await pilot.press("g")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        expected = f"fedctl call forgive_failures task_id={FAILED_EXTRACT} --router {ROUTER}"
        assert app.screen.command == expected
        assert "same as" in screen_text(app) and "fedctl call forgive_failures" in screen_text(app)
        await pilot.press("n")


# -- task_events over the wire ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_task_events_reach_the_owner_through_the_router_and_fedctl_call(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.procs import ROOT, fed_env

    cluster = FedCluster(tmp_path, 2).start()
    try:
        client = cluster.client()
        tid = luigi.task.task_id_str("hist.Job", {"i": "1"})
        worker = "Worker(salt=1, workers=1, host=box-7, username=u, pid=42)"
        client.call("add_worker", {"worker": worker, "info": {"host": "box-7", "pid": 42}})
        client.call("add_task", {"task_id": tid, "worker": worker, "family": "hist.Job"})
        assert client.call("get_work", {"worker": worker, "current_tasks": []})["task_id"] == tid
        client.call("add_task", {"task_id": tid, "worker": worker, "status": "FAILED", "family": "hist.Job"})
        answer = client.call("task_events", {"task_id": tid, "limit": 500})
        owner = client.call("owner", {"task_id": tid})["shard_id"]
        assert answer["shard_id"] == owner and answer["truncated"] is False
        assert [e["status"] for e in answer["events"]] == ["PENDING", "RUNNING", "FAILED"]
        assert all(e["worker"] == worker for e in answer["events"])
        times = [e["time"] for e in answer["events"]]
        assert times == sorted(times)
        assert client.call("task_events", {"task_id": tid, "limit": 1})["truncated"] is True
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "fedctl",
                "call",
                "task_events",
                f"task_id={tid}",
                "limit=2",
                "--router",
                cluster.endpoint,
            ],
            env=fed_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert [e["status"] for e in out["events"]] == ["RUNNING", "FAILED"] and out["truncated"] is True
        r = subprocess.run(
            [sys.executable, "-m", "fedctl", "call", "task_events", "task_id", "--router", cluster.endpoint],
            env=fed_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and r.stderr.startswith("fedctl: error:") and len(r.stderr.splitlines()) == 1
        client.close()
    finally:
        cluster.stop()
