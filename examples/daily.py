"""The daily pipeline: Extract → Transform → Enrich → Load, one partition per (date, topic).

This is an ordinary Luigi pipeline on local files, the kind of workload the federation
schedules. Every task lives in the ``daily`` namespace (``task_namespace = "daily"``), so
its family is ``daily.Extract``, ``daily.Load`` ... and the federation places it by that
namespace.

Per partition (``date``, ``topic``):

- ``Extract``   writes deterministic raw records as JSON lines (``extract/<topic>/<date>.jsonl``);
  topic ``empty`` always yields zero records (an empty file).
- ``Transform`` cleans the records with pandas and writes Parquet (``transform/...parquet``).
- ``Enrich``    joins a small reference table (country → region, currency; topic → business
  unit) and writes Parquet (``enrich/...parquet``).
- ``Load``      statically requires ``Extract``; in ``run()`` it looks at the raw file and
  yields ``Enrich`` when there were records, ``Transform`` when there were none (a dynamic
  dependency, Luigi's ``new_deps`` path). It replaces the partition in the SQLite table
  ``events`` in one transaction and writes a JSON marker (``load/<topic>/<date>.json``).

``DailyBatch(date, topics)`` wraps one ``Load`` per topic; ``RangeBatch(start, days, topics)``
wraps one ``DailyBatch`` per day.

The data root is the ``[daily] root`` Luigi setting. Precedence: ``--daily-root`` on the
command line, then the environment variable ``FED_DAILY_ROOT``, then ``[daily] root`` in the
Luigi config file, then ``./data/daily``. It is deliberately not a task parameter, so task
ids do not depend on where the data lives.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import sqlite3
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import luigi
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from luigi.cmdline_parser import CmdlineParser
from luigi.parameter import _no_value

NAMESPACE = "daily"
ROOT_ENV = "FED_DAILY_ROOT"
DEFAULT_ROOT = "./data/daily"
DEFAULT_TOPICS: tuple[str, ...] = ("orders", "clicks", "payments", "inventory", "empty")
EMPTY_TOPIC = "empty"
WAREHOUSE_FILE = "warehouse.sqlite"

_TOPIC_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")

# Reference data for Enrich. Small, fixed and versioned with the code so reruns are stable.
COUNTRIES = pd.DataFrame(
    [
        ("DE", "EMEA", "EUR", 1.0),
        ("FR", "EMEA", "EUR", 1.0),
        ("GB", "EMEA", "GBP", 1.17),
        ("US", "AMER", "USD", 0.92),
        ("BR", "AMER", "BRL", 0.18),
        ("JP", "APAC", "JPY", 0.0061),
        ("IN", "APAC", "INR", 0.011),
    ],
    columns=["country", "region", "currency", "eur_rate"],
)
TOPIC_OWNERS: dict[str, str] = {
    "orders": "commerce",
    "payments": "finance",
    "inventory": "supply",
    "clicks": "marketing",
}
UNASSIGNED_UNIT = "unassigned"
UNKNOWN_REGION = "UNKNOWN"

# Raw record kinds per topic; topics not listed here use the generic kinds.
_KINDS: dict[str, tuple[str, ...]] = {
    "orders": ("created", "paid", "shipped", "cancelled"),
    "clicks": ("view", "click", "add_to_cart"),
    "payments": ("authorised", "captured", "refunded"),
    "inventory": ("received", "picked", "adjusted"),
}
_GENERIC_KINDS = ("event",)
# Raw countries include messy spellings and an unknown code, which Transform normalises.
_RAW_COUNTRIES = ("DE", "FR", "GB", "US", "BR", "JP", "IN", "de", " us ", "Fr", "XX")

TRANSFORM_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("topic", pa.string()),
        ("date", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("hour", pa.int8()),
        ("user_id", pa.int64()),
        ("country", pa.string()),
        ("kind", pa.string()),
        ("amount", pa.float64()),
        ("amount_cents", pa.int64()),
    ]
)
ENRICH_SCHEMA = pa.schema(
    list(TRANSFORM_SCHEMA)
    + [
        ("region", pa.string()),
        ("currency", pa.string()),
        ("amount_eur", pa.float64()),
        ("business_unit", pa.string()),
    ]
)


class _RootParameter(luigi.Parameter):
    """A Parameter that consults ``FED_DAILY_ROOT`` between the command line and the config file.

    Luigi's own order is command line > config file > default; the project's order is
    command line > environment > file > default, so the environment is slotted in here.
    """

    def _value_iterator(self, task_name: str, param_name: str) -> Iterator[tuple[Any, str | None]]:
        values = super()._value_iterator(task_name, param_name)
        if CmdlineParser.get_instance() is not None:
            yield next(values)  # the command-line value comes first in Luigi's iterator
        env = os.environ.get(ROOT_ENV)
        yield (env if env else _no_value, None)
        yield from values


class daily(luigi.Config):  # noqa: N801 - the class name is the config section, [daily]
    """``[daily]`` settings."""

    root: str = _RootParameter(default=DEFAULT_ROOT, description="Directory holding the pipeline's data")


def data_root() -> Path:
    """The data root currently in effect (see the module docstring for the precedence)."""
    return Path(daily().root)


class TopicParameter(luigi.Parameter):
    """A topic name; it becomes a path component and a SQL value, so it is kept to ``[a-z][a-z0-9_]*``."""

    def normalize(self, x: Any) -> str:
        topic = str(x)
        if not _TOPIC_RE.fullmatch(topic):
            raise ValueError(f"invalid topic {topic!r}: expected lowercase letters, digits and '_'")
        return topic


def generate_records(date: dt.date, topic: str) -> list[dict[str, Any]]:
    """The raw records of one partition: deterministic in (date, topic), a few hundred of them.

    Topic ``empty`` has none. The data is deliberately messy: about 2% of records are exact
    duplicates, about 3% have no amount, and countries come in mixed spellings.
    """
    if topic == EMPTY_TOPIC:
        return []
    rng = random.Random(f"{date.isoformat()}-{topic}")
    kinds = _KINDS.get(topic, _GENERIC_KINDS)
    midnight = dt.datetime.combine(date, dt.time(), tzinfo=dt.UTC)
    records: list[dict[str, Any]] = []
    for i in range(rng.randint(200, 400)):
        ts = midnight + dt.timedelta(seconds=rng.randrange(86_400))
        record = {
            "event_id": f"{topic}-{date.isoformat()}-{i:05d}",
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "user_id": rng.randrange(1, 5_000),
            "country": rng.choice(_RAW_COUNTRIES),
            "kind": rng.choice(kinds),
            "amount": None if rng.random() < 0.03 else round(rng.uniform(0.5, 500.0), 2),
        }
        records.append(record)
        if rng.random() < 0.02:
            records.append(dict(record))  # an at-least-once source re-sends some events
    return records


def clean(records: pd.DataFrame, date: dt.date, topic: str) -> pd.DataFrame:
    """Transform's rules: drop re-sent events and records without an amount, normalise
    countries, parse timestamps and derive ``hour`` and ``amount_cents``."""
    if records.empty:
        return TRANSFORM_SCHEMA.empty_table().to_pandas()
    df = records.drop_duplicates(subset="event_id", keep="first")
    df = df[df["amount"].notna()].copy()
    df["country"] = df["country"].str.strip().str.upper()
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="%Y-%m-%dT%H:%M:%SZ")
    df["hour"] = df["ts"].dt.hour
    df["amount"] = df["amount"].astype("float64")
    df["amount_cents"] = (df["amount"] * 100).round().astype("int64")
    df["topic"] = topic
    df["date"] = date.isoformat()
    df = df.sort_values("event_id", kind="stable").reset_index(drop=True)
    return df[TRANSFORM_SCHEMA.names]


def enrich(df: pd.DataFrame, topic: str) -> pd.DataFrame:
    """Enrich's rules: region, currency and a EUR amount from the country; the owning
    business unit from the topic. Unknown countries keep their rows (region ``UNKNOWN``)."""
    out = df.merge(COUNTRIES, on="country", how="left", validate="many_to_one")
    out["region"] = out["region"].fillna(UNKNOWN_REGION)
    out["amount_eur"] = (out["amount"] * out["eur_rate"]).round(2)
    out["business_unit"] = TOPIC_OWNERS.get(topic, UNASSIGNED_UNIT)
    return out[ENRICH_SCHEMA.names]


def _write_parquet(df: pd.DataFrame, schema: pa.Schema, target: luigi.LocalTarget) -> None:
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    # temporary_path renames into place on success, so a reader never sees half a file.
    with target.temporary_path() as tmp:
        pq.write_table(table, tmp)


class _Partition(luigi.Task):
    """One partition (``date``, ``topic``) of a stage, written to ``<root>/<stage>/<topic>/<date><suffix>``."""

    task_namespace = NAMESPACE
    stage = ""
    suffix = ""

    date: dt.date = luigi.DateParameter()
    topic: str = TopicParameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(
            str(data_root() / self.stage / self.topic / f"{self.date.isoformat()}{self.suffix}")
        )


class Extract(_Partition):
    """Raw records of one partition as JSON lines (empty file when there are none)."""

    stage = "extract"
    suffix = ".jsonl"
    retry_count = 3  # the source is remote in real life; let the scheduler retry it

    def run(self) -> None:
        # LocalTarget.open("w") writes to a temporary file and renames it on close.
        with self.output().open("w") as out:
            for record in generate_records(self.date, self.topic):
                out.write(json.dumps(record, sort_keys=True) + "\n")


class Transform(_Partition):
    """Cleaned records of one partition as Parquet (zero rows with the full schema when empty)."""

    stage = "transform"
    suffix = ".parquet"

    def requires(self) -> Extract:
        return Extract(date=self.date, topic=self.topic)

    def run(self) -> None:
        with self.input().open("r") as raw:
            rows = [json.loads(line) for line in raw if line.strip()]
        records = pd.DataFrame.from_records(
            rows, columns=["event_id", "ts", "user_id", "country", "kind", "amount"]
        )
        _write_parquet(clean(records, self.date, self.topic), TRANSFORM_SCHEMA, self.output())


class Enrich(_Partition):
    """Transform's rows joined with the reference data, as Parquet."""

    stage = "enrich"
    suffix = ".parquet"

    def requires(self) -> Transform:
        return Transform(date=self.date, topic=self.topic)

    def run(self) -> None:
        df = pd.read_parquet(self.input().path)
        _write_parquet(enrich(df, self.topic), ENRICH_SCHEMA, self.output())


_EVENT_COLUMNS = (
    "topic",
    "date",
    "event_id",
    "ts",
    "user_id",
    "country",
    "kind",
    "amount_cents",
    "region",
    "currency",
    "amount_eur",
    "business_unit",
)
_DDL = (
    """CREATE TABLE IF NOT EXISTS events (
        topic TEXT NOT NULL, date TEXT NOT NULL, event_id TEXT NOT NULL, ts TEXT NOT NULL,
        user_id INTEGER NOT NULL, country TEXT NOT NULL, kind TEXT NOT NULL,
        amount_cents INTEGER NOT NULL, region TEXT, currency TEXT, amount_eur REAL,
        business_unit TEXT, PRIMARY KEY (topic, date, event_id))""",
    """CREATE TABLE IF NOT EXISTS partitions (
        topic TEXT NOT NULL, date TEXT NOT NULL, row_count INTEGER NOT NULL,
        source TEXT NOT NULL, PRIMARY KEY (topic, date))""",
)


def warehouse_path() -> Path:
    """The SQLite file Load writes into."""
    return data_root() / WAREHOUSE_FILE


def replace_partition(db_path: Path, topic: str, date: dt.date, df: pd.DataFrame, source: str) -> int:
    """Replace the rows of (topic, date) in ``events`` and record the load in ``partitions``.

    Delete-then-insert in one transaction, so a rerun never duplicates rows and a reader
    never sees a half-loaded partition. ``df`` has Enrich's columns, or Transform's when the
    partition took the no-Enrich path (the enrichment columns are then NULL).
    Returns the number of rows loaded.
    """
    rows = [
        (
            topic,
            date.isoformat(),
            r.event_id,
            r.ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            int(r.user_id),
            r.country,
            r.kind,
            int(r.amount_cents),
            getattr(r, "region", None),
            getattr(r, "currency", None),
            None if pd.isna(getattr(r, "amount_eur", None)) else float(r.amount_eur),
            getattr(r, "business_unit", None),
        )
        for r in df.itertuples(index=False)
    ]
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # Several worker processes load at once; wait for the write lock instead of failing.
    conn = sqlite3.connect(db_path, timeout=60, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for ddl in _DDL:
                conn.execute(ddl)
            conn.execute("DELETE FROM events WHERE topic = ? AND date = ?", (topic, date.isoformat()))
            placeholders = ", ".join("?" for _ in _EVENT_COLUMNS)
            conn.executemany(
                f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES ({placeholders})", rows
            )
            conn.execute(
                "INSERT OR REPLACE INTO partitions (topic, date, row_count, source) VALUES (?, ?, ?, ?)",
                (topic, date.isoformat(), len(rows), source),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return len(rows)


class Load(_Partition):
    """One partition loaded into the SQLite warehouse; the output is a JSON marker.

    ``Extract`` is a static dependency. Whether ``Enrich`` is needed is only known once the
    raw file exists, so ``run()`` yields ``Enrich`` (records present) or ``Transform`` (empty
    partition) as a dynamic dependency.
    """

    stage = "load"
    suffix = ".json"

    def requires(self) -> Extract:
        return Extract(date=self.date, topic=self.topic)

    def run(self) -> Generator[luigi.Task, luigi.LocalTarget, None]:
        if os.path.getsize(self.input().path) > 0:
            source = "enrich"
            upstream = yield Enrich(date=self.date, topic=self.topic)
        else:
            source = "transform"
            upstream = yield Transform(date=self.date, topic=self.topic)
        df = pd.read_parquet(upstream.path)
        count = replace_partition(warehouse_path(), self.topic, self.date, df, source)
        # The marker is written after the commit: a crash in between reruns Load, which is safe.
        with self.output().open("w") as out:
            json.dump(
                {"topic": self.topic, "date": self.date.isoformat(), "rows": count, "source": source}, out
            )


class DailyBatch(luigi.WrapperTask):
    """Every topic of one day.

    The wrappers live in the default namespace (family ``DailyBatch``), so the command line
    reads ``luigi --module examples.daily DailyBatch --date 2026-11-20``; the partitions they
    wrap are the ``daily.*`` tasks.
    """

    task_namespace = ""

    date: dt.date = luigi.DateParameter()
    topics: Sequence[str] = luigi.ListParameter(default=DEFAULT_TOPICS)

    def requires(self) -> list[Load]:
        return [Load(date=self.date, topic=topic) for topic in self.topics]


class RangeBatch(luigi.WrapperTask):
    """``days`` consecutive days starting at ``start`` (a week by default)."""

    task_namespace = ""

    start: dt.date = luigi.DateParameter()
    days: int = luigi.IntParameter(default=7)
    topics: Sequence[str] = luigi.ListParameter(default=DEFAULT_TOPICS)

    def requires(self) -> list[DailyBatch]:
        return [
            DailyBatch(date=self.start + dt.timedelta(days=i), topics=list(self.topics))
            for i in range(self.days)
        ]
