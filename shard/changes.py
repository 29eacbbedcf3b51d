"""The contract between the pure scheduler core and the store.

The core (``shard.scheduler``) keeps everything in memory and marks what each
RPC touched.  After a batch of requests the server calls
``core.collect_changes()`` and hands the result to ``store.commit()``; only
when that returns are the replies sent.  On start the server calls
``store.load()`` and gives the :class:`Snapshot` to ``core.restore()``.

Records are plain msgpack-able dicts (str keys; values may be nested lists,
dicts, str, int, float including ``inf``, bool, None).  The store treats them
as opaque except for a few keys every record has, which it also keeps in
their own SQL columns for queries and exports: a task's ``task_id``,
``status``, ``family``, ``priority`` and ``updated``; a worker's
``worker_id`` and ``last_active``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Event:
    """One row of the append-only history: a task changed status (or was handed out)."""

    task_id: str
    status: str
    worker: str | None
    host: str | None
    ts: float


@dataclass(slots=True)
class Changes:
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # task_id -> full record (upsert)
    deleted_tasks: set[str] = field(default_factory=set)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)  # worker_id -> full record (upsert)
    deleted_workers: set[str] = field(default_factory=set)
    meta: dict[str, Any] = field(
        default_factory=dict
    )  # key -> value (upsert), e.g. "resources", "paused", "batchers"
    events: list[Event] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (
            self.tasks
            or self.deleted_tasks
            or self.workers
            or self.deleted_workers
            or self.meta
            or self.events
        )


@dataclass(slots=True)
class Snapshot:
    tasks: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
