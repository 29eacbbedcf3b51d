"""SVG snapshots of every view at fixed terminal sizes, from the replayed capture (pytest-textual-snapshot).

Regenerate after an intended change with ``pytest tests/test_tui_snapshots.py --snapshot-update``
and look at the SVGs under ``tests/__snapshots__/test_tui_snapshots/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.test_tui_app import polled, until
from tests.test_tui_capture import ROUTER, T0, build_capture
from tui.app import FederationApp
from tui.config import Context, TuiConfig
from tui.screens import TaskDetailScreen
from tui.source import CAPTURE_FORMAT, ReplaySource

SMALL = (80, 24)
LARGE = (200, 50)


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("snap") / "capture.json"
    build_capture(path)
    return path


def app_on(capture: Path, **config: Any) -> FederationApp:
    return FederationApp(ReplaySource(capture), TuiConfig(refresh=3600, **config))


def steps(*keys: str, polls: int = 2, detail: bool = False) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Refresh until ``polls`` frames were shown, then press ``keys`` (a ``|`` waits for the next poll)."""

    async def run(pilot: Pilot[Any]) -> None:
        app: Any = pilot.app
        await polled(pilot, 1)
        while app.polls < polls:
            n = app.polls
            await pilot.press("r")
            await polled(pilot, n + 1)
        for key in keys:
            if key == "|":  # the key before asked for a poll (a view that needs data): wait for its answer
                await until(pilot, lambda: not app._polling, "the poll to finish")
            else:
                await pilot.press(key)
        if detail:
            await until(
                pilot,
                lambda: isinstance(app.screen, TaskDetailScreen) and app.screen.detail is not None,
                "the task detail",
            )
        await pilot.pause()

    return run


def typed(line: str) -> tuple[str, ...]:
    return ("colon", *line, "enter")


def test_shards_small(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(app_on(capture), terminal_size=SMALL, run_before=steps())


def test_shard_down_small(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(app_on(capture), terminal_size=SMALL, run_before=steps(polls=3))


def test_namespaces_small(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(app_on(capture), terminal_size=SMALL, run_before=steps(*typed("ns")))


def test_tasks_small(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(app_on(capture), terminal_size=SMALL, run_before=steps(*typed("tasks"), "|"))


def test_tasks_too_many_small(snap_compare: Any, capture: Path) -> None:
    app = app_on(capture, max_tasks=20)
    assert snap_compare(app, terminal_size=SMALL, run_before=steps(*typed("tasks"), "|"))


def test_workers_small(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(app_on(capture), terminal_size=SMALL, run_before=steps(*typed("workers"), "|"))


def test_task_detail_small(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(
        app_on(capture), terminal_size=SMALL, run_before=steps(*typed("tasks"), "|", "enter", detail=True)
    )


def test_task_detail_error_small(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(
        app_on(capture),
        terminal_size=SMALL,
        run_before=steps(*typed("tasks"), "|", "enter", "2", detail=True),
    )


def test_task_detail_downstream_small(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(
        app_on(capture),
        terminal_size=SMALL,
        run_before=steps(*typed("tasks"), "|", "enter", "4", detail=True),
    )


def test_confirm_dialog_small(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(app_on(capture), terminal_size=SMALL, run_before=steps(*typed("tasks"), "|", "g"))


def test_help_small(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(
        app_on(capture), terminal_size=SMALL, run_before=steps(*typed("tasks"), "|", "question_mark")
    )


def test_shards_large(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(app_on(capture), terminal_size=LARGE, run_before=steps(polls=3))


def test_tasks_large(snap_compare: Any, capture: Path) -> None:
    assert snap_compare(app_on(capture), terminal_size=LARGE, run_before=steps(*typed("tasks"), "|"))


def test_router_unreachable_small(snap_compare: Any) -> None:
    error = {
        "code": "timeout",
        "message": "no reply to federation_health from tcp://127.0.0.1:5555 within 3 s",
    }
    doc = {
        "format": CAPTURE_FORMAT,
        "version": 1,
        "router": "tcp://127.0.0.1:5555",
        "frames": [{"time": T0, "calls": [{"method": "federation_health", "kwargs": {}, "error": error}]}],
    }
    app = FederationApp(ReplaySource(doc), TuiConfig(refresh=3600))
    assert snap_compare(app, terminal_size=SMALL, run_before=steps(polls=1))


# -- issue 13: the new views, at both sizes --------------------------------------------------------------
def logs_app(capture: Path, tmp_path: Path) -> FederationApp:
    cfg = tmp_path / "federation.toml"
    cfg.write_text('[router]\nzmq = "tcp://127.0.0.1:5555"\n')
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "router.log").write_text("router up\n")
    (tmp_path / "logs" / "shard-s0.log").write_text(
        "".join(
            f"2026-11-20 10:00:{i:02d},000 INFO shard.server: shard s0: committed {i * 7} changes in 1 batch\n"
            for i in range(40)
        )
    )
    return FederationApp(
        ReplaySource(capture), TuiConfig(refresh=3600), contexts=(Context("current", ROUTER, str(cfg)),)
    )


def contexts_app(capture: Path) -> FederationApp:
    contexts = (
        Context("local", ROUTER, ".federation/federation.toml"),
        Context("staging", "tcp://10.0.0.2:5555", "deploy/staging.toml"),
        Context("prod", "tcp://fed-router.prod:5555"),
    )
    return FederationApp(ReplaySource(capture), TuiConfig(refresh=3600), contexts=contexts, context="local")


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_raw_view(snap_compare: Any, capture: Path, size: tuple[int, int]) -> None:
    assert snap_compare(app_on(capture), terminal_size=size, run_before=steps("y"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_sorted_tasks(snap_compare: Any, capture: Path, size: tuple[int, int]) -> None:
    assert snap_compare(
        app_on(capture),
        terminal_size=size,
        run_before=steps(*typed("tasks"), "|", *typed("sort updated desc")),
    )


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_task_history_tab(snap_compare: Any, capture: Path, size: tuple[int, int]) -> None:
    assert snap_compare(
        app_on(capture), terminal_size=size, run_before=steps(*typed("tasks"), "|", "enter", "5", detail=True)
    )


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_logs_view(snap_compare: Any, capture: Path, tmp_path: Path, size: tuple[int, int]) -> None:
    assert snap_compare(logs_app(capture, tmp_path), terminal_size=size, run_before=steps("l"))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_contexts(snap_compare: Any, capture: Path, size: tuple[int, int]) -> None:
    assert snap_compare(contexts_app(capture), terminal_size=size, run_before=steps(*typed("ctx")))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "200x50"])
def test_action_with_its_fedctl_command(snap_compare: Any, capture: Path, size: tuple[int, int]) -> None:
    assert snap_compare(
        contexts_app(capture), terminal_size=size, run_before=steps(*typed("tasks FAILED"), "|", "g")
    )
