"""The daily example pipeline, run for real with Luigi's local scheduler on tmp_path."""

from __future__ import annotations

import collections
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import luigi
import luigi.configuration
import luigi.scheduler
import luigi.worker
import pandas as pd
import pytest
from luigi.cmdline_parser import CmdlineParser
from luigi.execution_summary import LuigiRunResult, LuigiStatusCode

from examples import daily

DATE = dt.date(2026, 11, 20)
NON_EMPTY = [t for t in daily.DEFAULT_TOPICS if t != daily.EMPTY_TOPIC]


class _RecordingFactory:
    """Luigi's usual local scheduler and worker, keeping the scheduler so a test can inspect it."""

    def __init__(self) -> None:
        self.schedulers: list[luigi.scheduler.Scheduler] = []

    def create_local_scheduler(self) -> luigi.scheduler.Scheduler:
        sch = luigi.scheduler.Scheduler(prune_on_get_work=True, record_task_history=False)
        self.schedulers.append(sch)
        return sch

    def create_remote_scheduler(self, url: str) -> Any:
        raise AssertionError("these tests only use the local scheduler")

    def create_worker(
        self, scheduler: Any, worker_processes: int, assistant: bool = False
    ) -> luigi.worker.Worker:
        return luigi.worker.Worker(
            scheduler=scheduler, worker_processes=worker_processes, assistant=assistant
        )


def build(tasks: list[luigi.Task], workers: int = 2) -> tuple[LuigiRunResult, dict[str, dict[str, Any]]]:
    """Run ``tasks`` with luigi.build; return the run result and every task the scheduler saw."""
    factory = _RecordingFactory()
    result = luigi.build(
        tasks,
        worker_scheduler_factory=factory,
        local_scheduler=True,
        workers=workers,
        detailed_summary=True,
    )
    (sch,) = factory.schedulers
    return result, sch.task_list("", "")


def families(tasks: dict[str, dict[str, Any]]) -> collections.Counter[str]:
    return collections.Counter(t["name"] for t in tasks.values())


def statuses(tasks: dict[str, dict[str, Any]]) -> set[str]:
    return {t["status"] for t in tasks.values()}


def raw_records(root: Path, topic: str, date: dt.date = DATE) -> list[dict[str, Any]]:
    lines = (root / "extract" / topic / f"{date.isoformat()}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def expected_clean_ids(records: list[dict[str, Any]]) -> set[str]:
    """Transform's expected rows, computed independently: re-sent events are exact copies,
    so the distinct event ids of records with an amount."""
    return {r["event_id"] for r in records if r["amount"] is not None}


def query(root: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(root / daily.WAREHOUSE_FILE) as conn:
        return conn.execute(sql, args).fetchall()


def file_stamps(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "daily"
    monkeypatch.setenv(daily.ROOT_ENV, str(path))
    return path


def test_daily_batch_runs_every_stage(root: Path) -> None:
    result, tasks = build([daily.DailyBatch(date=DATE)], workers=2)

    assert result.scheduling_succeeded
    assert result.status == LuigiStatusCode.SUCCESS
    assert statuses(tasks) == {"DONE"}
    # 1 wrapper + Load, Extract, Transform, Enrich per topic, except no Enrich for the empty one.
    assert families(tasks) == {
        "DailyBatch": 1,
        "daily.Load": 5,
        "daily.Extract": 5,
        "daily.Transform": 5,
        "daily.Enrich": 4,
    }
    assert len(tasks) == 20
    assert daily.DailyBatch(date=DATE).complete()

    seen_duplicates = seen_missing_amounts = 0
    for topic in NON_EMPTY:
        records = raw_records(root, topic)
        ids = [r["event_id"] for r in records]
        seen_duplicates += len(ids) - len(set(ids))
        seen_missing_amounts += sum(r["amount"] is None for r in records)
        assert 200 <= len(set(ids)) <= 400
        expected = expected_clean_ids(records)

        transformed = pd.read_parquet(root / "transform" / topic / "2026-11-20.parquet")
        assert set(transformed["event_id"]) == expected
        assert len(transformed) == len(expected)
        assert transformed["amount"].notna().all()
        assert set(transformed["country"]) <= set(daily.COUNTRIES["country"]) | {"XX"}
        assert (transformed["ts"].dt.date == DATE).all()
        assert (transformed["hour"] == transformed["ts"].dt.hour).all()

        enriched = pd.read_parquet(root / "enrich" / topic / "2026-11-20.parquet")
        assert list(enriched.columns) == daily.ENRICH_SCHEMA.names
        assert len(enriched) == len(expected)
        assert set(enriched["business_unit"]) == {daily.TOPIC_OWNERS[topic]}
        assert enriched["region"].notna().all()
        known = enriched["country"] != "XX"
        assert enriched.loc[known, "amount_eur"].notna().all()
        assert (enriched.loc[~known, "region"] == daily.UNKNOWN_REGION).all()

        loaded = query(
            root,
            "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events WHERE topic = ? AND date = ?",
            topic,
            "2026-11-20",
        )
        assert loaded == [(len(expected), len(expected))]
        marker = json.loads((root / "load" / topic / "2026-11-20.json").read_text())
        assert marker == {"topic": topic, "date": "2026-11-20", "rows": len(expected), "source": "enrich"}
    # The generated data really is messy, so the cleaning rules above were exercised.
    assert seen_duplicates > 0
    assert seen_missing_amounts > 0

    # The empty topic: an empty raw file, a zero-row Transform, no Enrich, Load via Transform.
    empty = daily.EMPTY_TOPIC
    assert (root / "extract" / empty / "2026-11-20.jsonl").stat().st_size == 0
    transformed = pd.read_parquet(root / "transform" / empty / "2026-11-20.parquet")
    assert len(transformed) == 0
    assert list(transformed.columns) == daily.TRANSFORM_SCHEMA.names
    assert not (root / "enrich" / empty).exists()
    assert not daily.Enrich(date=DATE, topic=empty).complete()
    assert json.loads((root / "load" / empty / "2026-11-20.json").read_text())["source"] == "transform"
    assert query(root, "SELECT COUNT(*) FROM events WHERE topic = ?", empty) == [(0,)]

    partitions = dict(
        ((t, s), n)
        for t, n, s in query(
            root, "SELECT topic, row_count, source FROM partitions WHERE date = '2026-11-20'"
        )
    )
    assert partitions == {
        **{(t, "enrich"): len(expected_clean_ids(raw_records(root, t))) for t in NON_EMPTY},
        (empty, "transform"): 0,
    }


def test_rerun_is_a_no_op(root: Path) -> None:
    first, _ = build([daily.DailyBatch(date=DATE)], workers=2)
    assert first.status == LuigiStatusCode.SUCCESS
    stamps = file_stamps(root)
    rows = query(root, "SELECT * FROM events ORDER BY topic, event_id")
    assert rows

    again, tasks = build([daily.DailyBatch(date=DATE)], workers=2)

    assert again.status == LuigiStatusCode.SUCCESS
    # The wrapper is complete, so the worker never even looks below it.
    assert list(families(tasks).items()) == [("DailyBatch", 1)]
    assert statuses(tasks) == {"DONE"}
    assert file_stamps(root) == stamps
    assert query(root, "SELECT * FROM events ORDER BY topic, event_id") == rows


def test_load_replaces_its_partition(root: Path) -> None:
    build([daily.DailyBatch(date=DATE, topics=["orders", "clicks"])], workers=1)
    before = query(root, "SELECT topic, COUNT(*) FROM events GROUP BY topic ORDER BY topic")
    with sqlite3.connect(root / daily.WAREHOUSE_FILE) as conn:
        conn.execute(
            "INSERT INTO events (topic, date, event_id, ts, user_id, country, kind, amount_cents)"
            " VALUES ('orders', '2026-11-20', 'stale', '2026-11-20T00:00:00Z', 1, 'DE', 'paid', 1)"
        )
    (root / "load" / "orders" / "2026-11-20.json").unlink()

    result, tasks = build([daily.Load(date=DATE, topic="orders")], workers=1)

    assert result.status == LuigiStatusCode.SUCCESS
    # Only Load reran. Its static Extract was complete; its dynamic Enrich was complete too,
    # and a worker never reports an already-complete dynamic dependency to the scheduler.
    assert families(tasks) == {"daily.Load": 1, "daily.Extract": 1}
    assert statuses(tasks) == {"DONE"}
    assert query(root, "SELECT topic, COUNT(*) FROM events GROUP BY topic ORDER BY topic") == before
    assert query(root, "SELECT COUNT(*) FROM events WHERE event_id = 'stale'") == [(0,)]


def test_range_batch_runs_a_partition_per_day(root: Path) -> None:
    result, tasks = build([daily.RangeBatch(start=DATE, days=3, topics=["orders", "empty"])], workers=2)

    assert result.status == LuigiStatusCode.SUCCESS
    assert families(tasks) == {
        "RangeBatch": 1,
        "DailyBatch": 3,
        "daily.Load": 6,
        "daily.Extract": 6,
        "daily.Transform": 6,
        "daily.Enrich": 3,
    }
    days = [(DATE + dt.timedelta(days=i)).isoformat() for i in range(3)]
    loaded = query(root, "SELECT date, topic, row_count, source FROM partitions ORDER BY date, topic")
    assert [(d, t, s) for d, t, _, s in loaded] == [
        (d, t, s) for d in days for t, s in (("empty", "transform"), ("orders", "enrich"))
    ]
    per_day = dict(query(root, "SELECT date, COUNT(*) FROM events GROUP BY date"))
    assert set(per_day) == set(days)
    for d, t, n, _ in loaded:
        if t == "orders":
            assert per_day[d] == n > 0
    # Each day's data is its own (seeded by date), not one partition copied three times.
    first_ids = {r["user_id"] for r in raw_records(root, "orders", DATE)}
    second_ids = {r["user_id"] for r in raw_records(root, "orders", DATE + dt.timedelta(days=1))}
    assert first_ids != second_ids


def test_extract_is_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = []
    for name in ("a", "b"):
        monkeypatch.setenv(daily.ROOT_ENV, str(tmp_path / name))
        result, _ = build([daily.Extract(date=DATE, topic="payments")], workers=1)
        assert result.status == LuigiStatusCode.SUCCESS
        outputs.append((tmp_path / name / "extract" / "payments" / "2026-11-20.jsonl").read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0]
    assert daily.generate_records(DATE, "payments") == daily.generate_records(DATE, "payments")
    assert daily.generate_records(DATE, "payments") != daily.generate_records(DATE, "orders")
    assert daily.generate_records(DATE, daily.EMPTY_TOPIC) == []


def test_extract_asks_the_scheduler_for_three_retries() -> None:
    assert daily.Extract.retry_count == 3
    # What the worker sends with add_task (retry_policy_dict).
    policy = luigi.worker._get_retry_policy_dict(daily.Extract(date=DATE, topic="orders"))
    assert policy["retry_count"] == 3
    assert luigi.worker._get_retry_policy_dict(daily.Load(date=DATE, topic="orders"))["retry_count"] is None


def test_families_and_ids_carry_the_namespace() -> None:
    tasks = [
        cls(date=DATE, topic="orders") for cls in (daily.Extract, daily.Transform, daily.Enrich, daily.Load)
    ]
    for task in tasks:
        family = task.get_task_family()
        assert family == f"daily.{type(task).__name__}"
        assert task.task_id.startswith(family + "_")
    # the wrappers are in the default namespace, so `luigi --module examples.daily DailyBatch` works
    for wrapper in (daily.DailyBatch(date=DATE), daily.RangeBatch(start=DATE)):
        assert wrapper.get_task_family() == type(wrapper).__name__
        assert wrapper.task_id.startswith(type(wrapper).__name__ + "_")
    assert daily.Load(date=DATE, topic="orders").task_id.startswith("daily.Load_2026_11_20_orders_")
    # The data root is configuration, not a parameter: ids do not depend on it.
    assert daily.Load(date=DATE, topic="orders").to_str_params() == {"date": "2026-11-20", "topic": "orders"}


@pytest.mark.parametrize("topic", ["../etc", "Orders", "", "a b", "x" * 65])
def test_unsafe_topics_are_refused(topic: str) -> None:
    with pytest.raises(ValueError, match="invalid topic"):
        daily.Extract(date=DATE, topic=topic)


@pytest.fixture
def luigi_config() -> Any:
    config = luigi.configuration.get_config()
    had_section = config.has_section("daily")
    if not had_section:
        config.add_section("daily")
    old = config.get("daily", "root", None)
    yield config
    if had_section:
        if old is None:
            config.remove_option("daily", "root")
        else:
            config.set("daily", "root", old)
    else:
        config.remove_section("daily")


def test_root_precedence_is_cli_then_env_then_file_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, luigi_config: Any
) -> None:
    monkeypatch.delenv(daily.ROOT_ENV, raising=False)
    luigi_config.remove_option("daily", "root")
    assert daily.data_root() == Path(daily.DEFAULT_ROOT)

    luigi_config.set("daily", "root", str(tmp_path / "file"))
    assert daily.data_root() == tmp_path / "file"

    monkeypatch.setenv(daily.ROOT_ENV, str(tmp_path / "env"))
    assert daily.data_root() == tmp_path / "env"

    base = ["DailyBatch", "--date", "2026-11-20"]
    with CmdlineParser.global_instance(base):
        assert daily.data_root() == tmp_path / "env"
    with CmdlineParser.global_instance([*base, "--daily-root", str(tmp_path / "cli")]):
        assert daily.data_root() == tmp_path / "cli"
