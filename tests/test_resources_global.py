"""Luigi's resources are global limits: the federation enforces them across shards."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import luigi

from federation.config import SchedulerConfig
from federation.placement import Placement
from shard.store import open_store
from tests.fedcluster import FedCluster
from tests.procs import ROOT, fed_env

OUT_ENV = "FED_TEST_RES_OUT"


class DbTask(luigi.Task):
    task_namespace = "res"
    i = luigi.IntParameter()
    resources = {"db": 1}

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(os.path.join(os.environ[OUT_ENV], f"{self.i}.done"))

    def run(self) -> None:
        time.sleep(0.15)
        with self.output().open("w") as f:
            f.write("ok")


class AllDb(luigi.WrapperTask):
    task_namespace = "res"
    n = luigi.IntParameter()

    def requires(self) -> list[DbTask]:
        return [DbTask(i=i) for i in range(self.n)]


def test_db_2_across_three_shards_never_more_than_two_running(tmp_path: Path) -> None:
    (tmp_path / "fed").mkdir()
    c = FedCluster(tmp_path / "fed", 3, scheduler=SchedulerConfig(resources={"db": 2}))
    out = tmp_path / "out"
    out.mkdir()
    placement = Placement.from_config(c.config)
    tasks = [DbTask(i=i) for i in range(20)]
    spread = Counter(placement.owner(t.task_id) for t in tasks)
    assert len(spread) == 3, spread  # the 20 tasks live on all three shards
    samples: list[int] = []
    stop = threading.Event()
    try:
        c.start()
        monitor = c.client(timeout=5)

        def sample() -> None:
            while not stop.is_set():
                rows = {r["name"]: r for r in monitor.call("resource_list", {})}
                if "db" in rows:
                    samples.append(rows["db"]["num_used"])
                    assert rows["db"]["num_total"] == 2
                time.sleep(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # two Luigi workers (separate processes, three task processes each) compete for the two slots
        argv = [
            sys.executable,
            "-m",
            "fedctl",
            "run",
            "--scheduler",
            c.endpoint,
            "--module",
            "tests.test_resources_global",
            "res.AllDb",
            "--n",
            "20",
            "--workers",
            "3",
            "--log-level",
            "WARNING",
        ]
        env = fed_env(**{OUT_ENV: str(out)})
        workers = [
            subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for _ in range(2)
        ]
        outputs = [w.communicate(timeout=120)[0].decode(errors="replace") for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outputs
        stop.set()
        sampler.join(10)
        assert all((out / f"{i}.done").exists() for i in range(20))
        assert samples and max(samples) <= 2
        # the shards' histories: at no instant were more than two db tasks RUNNING in the federation
        ids = {t.task_id for t in tasks}
        edges: list[tuple[float, int]] = []
        for sid in c.config.shard_ids:
            spec = c.config.shard(sid)
            with open_store(spec.store, sid, readonly=True) as store:
                state: dict[str, str] = {}
                for ev in store.events():
                    if ev.task_id not in ids:
                        continue
                    if ev.status == "RUNNING" and state.get(ev.task_id) != "RUNNING":
                        edges.append((ev.ts, 1))
                    elif ev.status != "RUNNING" and state.get(ev.task_id) == "RUNNING":
                        edges.append((ev.ts, -1))
                    state[ev.task_id] = ev.status
        assert sum(1 for _, d in edges if d == 1) >= 20
        running = peak = 0
        for _, d in sorted(edges, key=lambda e: (e[0], e[1])):  # at equal times, ends before starts
            running += d
            peak = max(peak, running)
        assert peak <= 2
    finally:
        stop.set()
        c.stop()
