"""Luigi's batching through the router: a batch takes its family's tasks from every shard, as one luigid would."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from federation.client import FederationSchedulerFactory
from federation.placement import Placement
from tests.fedcluster import FedCluster

OUT: dict[str, Path] = {}
RUNS: list[str] = []


class Part(luigi.Task):
    task_namespace = "bt"
    day = luigi.Parameter(batch_method=",".join)

    def _targets(self) -> list[Path]:
        return [OUT["dir"] / f"{d}.done" for d in self.day.split(",")]

    def complete(self) -> bool:
        return all(p.exists() for p in self._targets())

    def run(self) -> None:
        RUNS.append(self.day)
        for p in self._targets():
            p.write_text(str(os.getpid()))


class AllParts(luigi.WrapperTask):
    task_namespace = "bt"
    n = luigi.IntParameter()

    def requires(self) -> list[Part]:
        return [Part(day=f"d{i:02d}") for i in range(self.n)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FedCluster]:
    c = FedCluster(tmp_path, 3)
    try:
        yield c.start()
    finally:
        c.stop()


def test_batches_run_on_their_shard_and_finish(cluster: FedCluster, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    OUT["dir"] = out
    RUNS.clear()
    placement = Placement.from_config(cluster.config)
    spread = Counter(placement.owner(Part(day=f"d{i:02d}").task_id) for i in range(15))
    assert len(spread) == 3 and max(spread.values()) >= 2
    result = luigi.build(
        [AllParts(n=15)],
        worker_scheduler_factory=FederationSchedulerFactory(cluster.endpoint),
        workers=1,
        log_level="WARNING",
        detailed_summary=True,
    )
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert all((out / f"d{i:02d}.done").exists() for i in range(15))
    # as with one luigid: one worker, no max_batch_size -> the 15 days ran as one batch, which
    # took the tasks of all three shards (each shard handed out its part; the runner's report
    # finished the tasks on the other two)
    assert len(RUNS) == 1, RUNS
    days = RUNS[0].split(",")
    assert sorted(days) == [f"d{i:02d}" for i in range(15)]
    assert len({placement.owner(Part(day=d).task_id) for d in days}) == 3
    # nothing is left running or batch-running anywhere
    for status in ("RUNNING", "BATCH_RUNNING", "PENDING"):
        listed = cluster.call("task_list", status=status)
        assert not [t for t in listed if t.startswith("bt.")], (status, listed)
