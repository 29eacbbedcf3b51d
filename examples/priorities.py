"""Priorities, a batchable family and a ``[resources]`` limit: a pipeline whose order the scheduler decides.

An ordinary Luigi pipeline, in the default namespace, run the way Luigi users run it::

    LUIGI_CONFIG_PATH=examples/priorities.cfg \\
        luigi --module examples.priorities Nightly --date 2026-11-20 --workers 4

Per date, for each topic of ``TOPICS``:

- ``Snapshot(date, topic)`` copies the topic's (generated) source rows.  It is **batchable**
  over ``topic`` (``batch_method=",".join``, ``max_batch_size = 2``): a worker that gets one
  snapshot from the scheduler gets up to two of the same date at once, and one ``run()``
  snapshots each of them.
- ``Publish(date, topic)`` requires the snapshot and publishes a summary.  Its ``priority``
  is the topic's business priority (``TOPICS``); a snapshot inherits the priority of what
  needs it, as Luigi's scheduler does.
- ``Nightly(date)`` wraps one ``Publish`` per topic.

Every ``Snapshot`` and ``Publish`` holds the ``db`` resource, of which ``priorities.cfg``
grants **one** (``[resources] db = 1``): however many ``--workers`` ask, one task runs at a
time, and which one is the scheduler's choice alone (priority, then the order tasks were
scheduled; a batch for the first of its family).  So the order of the ``run()`` calls,
appended to ``<root>/order.log``, is the scheduler's order, and two schedulers that decide
alike produce the same file.

Outputs go under ``[priorities] root`` (``--priorities-root``; default
``./data/priorities``), which is not a task parameter: task ids do not depend on it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import luigi

#: topic -> business priority (higher runs first)
TOPICS: dict[str, int] = {"billing": 90, "orders": 60, "clicks": 30, "audit": 0, "search": 60}


class priorities(luigi.Config):  # noqa: N801 - Luigi's config sections are named by their class
    root = luigi.Parameter(default="./data/priorities", description="where outputs and order.log go")


def _root() -> Path:
    return Path(str(priorities().root))


def record(line: str) -> None:
    """Append one line to ``order.log`` (runs are serialised by the ``db`` resource)."""
    path = _root() / "order.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _rows(date: dt.date, topic: str) -> list[dict[str, object]]:
    seed = hashlib.sha256(f"{date}-{topic}".encode()).digest()
    return [{"topic": topic, "date": str(date), "n": i, "value": seed[i]} for i in range(8 + seed[0] % 8)]


class Snapshot(luigi.Task):
    date = luigi.DateParameter()
    topic = luigi.Parameter(batch_method=",".join)

    max_batch_size = 2
    resources = {"db": 1}

    def topics(self) -> list[str]:
        return str(self.topic).split(",")

    def output(self) -> list[luigi.LocalTarget]:
        return [luigi.LocalTarget(_root() / "snapshot" / str(self.date) / f"{t}.json") for t in self.topics()]

    def run(self) -> None:
        record(f"Snapshot {self.date} {self.topic}")
        for topic, target in zip(self.topics(), self.output(), strict=True):
            with target.open("w") as f:
                json.dump(_rows(self.date, topic), f)


class Publish(luigi.Task):
    date = luigi.DateParameter()
    topic = luigi.Parameter()

    resources = {"db": 1}

    @property
    def priority(self) -> int:  # type: ignore[override]
        return TOPICS[str(self.topic)]

    def requires(self) -> Snapshot:
        return Snapshot(date=self.date, topic=self.topic)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(_root() / "publish" / str(self.date) / f"{self.topic}.json")

    def run(self) -> None:
        record(f"Publish {self.date} {self.topic}")
        with self.input()[0].open("r") as f:
            rows = json.load(f)
        with self.output().open("w") as f:
            json.dump({"rows": len(rows), "total": sum(int(r["value"]) for r in rows)}, f)


class Nightly(luigi.WrapperTask):
    date = luigi.DateParameter()

    def requires(self) -> list[Publish]:
        return [Publish(date=self.date, topic=t) for t in TOPICS]
