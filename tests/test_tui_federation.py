"""The TUI against a real local federation (3 shard processes + the router): actions, readonly, a killed shard."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from luigi.task import task_id_str

from federation.config import SchedulerConfig
from tests.fedcluster import FedCluster
from tests.test_tui_app import command, header_text, main, polled, screen_text, sync, table_keys, until
from tui.app import FederationApp
from tui.config import TuiConfig
from tui.screens import ConfirmScreen, MainScreen, RawScreen, TaskDetailScreen
from tui.source import RouterSource

SIZE = (120, 36)
WORKER = "Worker(salt=1, workers=1, host=tui-test, username=tester, pid=99)"
DATES = [f"2026-11-{d}" for d in range(15, 21)]
TRACE = "Traceback (most recent call last):\n  ...\nValueError: the extract went wrong"


def tid(family: str, **params: str) -> str:
    return task_id_str(family, params)


def add(cluster: FedCluster, family: str, params: dict[str, str], **kw: Any) -> str:
    task_id = tid(family, **params)
    cluster.call(
        "add_task",
        task_id=task_id,
        worker=WORKER,
        family=family,
        params=params,
        module="examples.daily",
        **kw,
    )
    return task_id


def populate(cluster: FedCluster) -> dict[str, str]:
    """A small daily pipeline: Extract -> Load per date, ledger posts, with one failure of each kind."""
    names = {}
    for date in DATES:
        extract = add(cluster, "daily.Extract", {"date": date})
        add(cluster, "daily.Load", {"date": date}, deps=[extract])
        add(cluster, "finance.ledger.Post", {"date": date}, deps=[tid("daily.Load", date=date)])
    names["failed"] = add(cluster, "daily.Extract", {"date": DATES[-1]}, status="FAILED", expl=TRACE)
    names["done_me"] = add(cluster, "daily.Extract", {"date": DATES[-2]}, status="FAILED", expl=TRACE)
    for _ in range(2):  # Luigi applies a task's retry policy after the status: the second failure disables it
        names["disabled"] = add(
            cluster,
            "daily.Extract",
            {"date": DATES[0]},
            status="FAILED",
            expl=TRACE,
            retry_policy_dict={"retry_count": 1},
        )
    names["load"] = tid("daily.Load", date=DATES[-1])
    cluster.call("add_worker", worker=WORKER, info=[["host", "tui-test"], ["pid", 99], ["workers", 1]])
    return names


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FedCluster]:
    c = FedCluster(tmp_path_factory.mktemp("tuifed"), 3, scheduler=SchedulerConfig(retry_delay=3600))
    try:
        yield c.start()
    finally:
        c.stop()


def status_of(cluster: FedCluster, task_id: str) -> str | None:
    for status in ("PENDING", "RUNNING", "DONE", "FAILED", "DISABLED"):
        if task_id in cluster.call("task_list", status=status, search=task_id.split("_")[0]):
            return status
    return None


def live_app(cluster: FedCluster, **config: Any) -> FederationApp:
    return FederationApp(RouterSource(cluster.endpoint, timeout=3.0), TuiConfig(refresh=0.3, **config))


@sync
async def test_the_tui_reads_and_acts_on_a_live_federation(cluster: FedCluster) -> None:
    names = populate(cluster)
    assert status_of(cluster, names["disabled"]) == "DISABLED"
    app = live_app(cluster)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: app.snapshot and app.snapshot.totals and app.snapshot.totals.get("FAILED"),
            "the first counts",
        )
        assert "3/3 up" in header_text(app) and "FAIL 2" in header_text(app) and "DIS 1" in header_text(app)
        assert table_keys(app) == ["s0", "s1", "s2"]
        # namespaces, summed over the shards that hold them
        await command(pilot, "ns")
        await until(pilot, lambda: set(table_keys(app)) == {"daily", "finance.ledger"}, "the namespaces")
        # the task list puts the failures first; drill into the failed extract
        await command(pilot, "tasks FAILED")
        await until(
            pilot, lambda: set(table_keys(app)) == {names["failed"], names["done_me"]}, "the failures"
        )
        table = main(app).current_view.table
        table.move_cursor(row=table_keys(app).index(names["failed"]))
        await pilot.press("enter")
        screen = await until(
            pilot, lambda: isinstance(app.screen, TaskDetailScreen) and app.screen, "the detail"
        )
        await until(
            pilot, lambda: screen.detail is not None and screen.detail.task is not None, "the answers"
        )
        assert screen.detail.error == TRACE
        assert tid("daily.Load", date=DATES[-1]) in screen.detail.downstream  # across shards, via the router
        assert tid("finance.ledger.Post", date=DATES[-1]) in screen.detail.downstream
        # forgive from the detail: asks first, then the router has it PENDING
        await pilot.press("g")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(
            pilot, lambda: any("is now PENDING" in n.message for n in app._notifications), "the outcome"
        )
        assert status_of(cluster, names["failed"]) == "PENDING"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await until(
            pilot, lambda: table_keys(app) == [names["done_me"]], "the list without the forgiven task"
        )
        # mark as done from the list
        await pilot.press("d", "y")
        await until(pilot, lambda: status_of(cluster, names["done_me"]) == "DONE", "mark as done")
        # re-enable the scheduler-disabled task
        await command(pilot, "status DISABLED")
        await until(pilot, lambda: table_keys(app) == [names["disabled"]], "the disabled task")
        await pilot.press("e", "y")
        await until(pilot, lambda: status_of(cluster, names["disabled"]) == "FAILED", "re-enable")
        # pause and unpause the whole federation
        await pilot.press("p", "y")
        await until(pilot, lambda: "PAUSED" in header_text(app), "the paused header")
        assert cluster.call("is_paused") == {"paused": True}
        await pilot.press("p")
        assert isinstance(app.screen, ConfirmScreen) and app.screen.action_spec.method == "unpause"
        await pilot.press("y")
        await until(pilot, lambda: cluster.call("is_paused") == {"paused": False}, "unpause")
        # the workers view lists the test's worker with its host
        await command(pilot, "workers")
        await until(pilot, lambda: WORKER in table_keys(app), "the worker")
        assert "tui-test" in screen_text(app)
        assert not [n for n in app._notifications if "poll failed" in n.message]


@sync
async def test_readonly_on_a_live_federation_changes_nothing(cluster: FedCluster) -> None:
    failing = add(cluster, "daily.Extract", {"date": "2026-10-01"}, status="FAILED", expl=TRACE)
    app = live_app(cluster, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await command(pilot, "tasks FAILED")
        await until(pilot, lambda: failing in table_keys(app), "the failed task")
        main(app).current_view.table.move_cursor(row=table_keys(app).index(failing))
        for key in ("g", "d", "e", "p"):
            await pilot.press(key)
            assert isinstance(app.screen, MainScreen)
        # "y" is the raw view (reading is fine in readonly), never a "yes" to an action
        await pilot.press("y")
        assert isinstance(app.screen, RawScreen) and app.screen.data["status"] == "FAILED"
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        assert status_of(cluster, failing) == "FAILED"
        assert cluster.call("is_paused") == {"paused": False}


@sync
async def test_a_killed_shard_shows_within_two_refreshes_and_the_app_keeps_working(tmp_path: Path) -> None:
    cluster = FedCluster(tmp_path, 3, timeout=1.0)
    try:
        cluster.start()
        for date in DATES:
            add(cluster, "daily.Extract", {"date": date})
        app = live_app(cluster)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot and app.snapshot.shards_up == 3, "every shard up")
            cluster.kill_shard("s1")
            seq_at_kill = app.snapshot.seq  # type: ignore[union-attr]
            snap = await until(
                pilot,
                lambda: app.snapshot and app.snapshot.shards_up == 2 and app.snapshot,
                "the shard down in a snapshot",
                timeout=20,
            )
            assert snap.seq <= seq_at_kill + 2
            await pilot.pause()
            assert "2/3 up" in header_text(app) and "shard s1 down" in header_text(app)
            assert "CRITICAL" in header_text(app)
            row = main(app).current_view.table.get_row("s1")
            assert "DOWN" in str(row[2]) and str(row[-1])  # the error is in the table
            # still working: the task list shows what the live shards hold, and says what is missing
            await command(pilot, "tasks")
            await until(
                pilot, lambda: table_keys(app) and "shard s1 down" in screen_text(app), "a partial list"
            )
            assert set(table_keys(app)) < {tid("daily.Extract", date=d) for d in DATES}
            await pilot.press("enter")
            assert isinstance(app.screen, TaskDetailScreen)
            await pilot.press("escape")
            # and when the shard comes back, so does the header
            cluster.start_shard("s1")
            await until(pilot, lambda: app.snapshot and app.snapshot.shards_up == 3, "s1 back", timeout=20)
            await polled(pilot, app.polls + 1)
            assert "3/3 up" in header_text(app)
            assert not [n for n in app._notifications if "poll failed" in n.message]
    finally:
        cluster.stop()
