"""SQLite ownership: one owner per real file, and a second owner fences the first out by epoch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from federation.config import SchedulerConfig
from federation.errors import ShardLockedError
from shard.scheduler import SchedulerCore
from shard.store import open_store


def _changes_adding(task_id: str):  # type: ignore[no-untyped-def]
    core = SchedulerCore(SchedulerConfig())
    core.add_task(task_id=task_id, worker="w", family="F")
    return core.collect_changes()


def test_a_symlink_to_the_database_names_the_same_lock(tmp_path: Path) -> None:
    real = tmp_path / "s0.db"
    first = open_store(f"sqlite:///{real}", "s0")
    try:
        link = tmp_path / "alias.db"
        os.symlink(real, link)
        with pytest.raises(ShardLockedError, match="already served by another process"):
            open_store(f"sqlite:///{link}", "s0")
        first.commit(_changes_adding("A"))  # the owner is untouched
        assert {t["task_id"] for t in first.load().tasks} == {"A"}
    finally:
        first.close()


def test_an_owner_that_lost_its_lock_file_is_fenced_by_epoch(tmp_path: Path) -> None:
    path = tmp_path / "s0.db"
    first = open_store(f"sqlite:///{path}", "s0")
    second = None
    try:
        first.commit(_changes_adding("A"))
        os.unlink(str(path) + ".lock")  # someone cleans up "stale" files
        second = open_store(f"sqlite:///{path}", "s0")  # a new lock file: the flock is no guard now
        second.commit(_changes_adding("B"))
        with pytest.raises(ShardLockedError, match="ownership lost"):
            first.commit(_changes_adding("C"))
        # nothing of the fenced batch was written; the new owner's state is whole
        assert {t["task_id"] for t in second.load().tasks} == {"A", "B"}
    finally:
        first.close()
        if second is not None:
            second.close()
