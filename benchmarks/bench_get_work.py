"""get_work latency: Luigi's ``luigi.scheduler.Scheduler`` against ``shard.scheduler.SchedulerCore``.

For every size N both schedulers get the same N pending tasks, then answer the
same sequence of ``get_work`` calls; only ``get_work`` is timed.  Each call's
task is reported DONE and one new pending task is added (both untimed), so the
state stays at N pending tasks.  Two scenarios, in the same run:

* ``trivial``   — the polling worker's tasks have no resources (Luigi's trivial-worker path);
* ``resources`` — its tasks need ``{"r": 1}`` (capacity 4) and a second live worker holds a
  RUNNING task with the same resource: Luigi's full greedy walk over all pending tasks.

Luigi costs ~0.5 s per call at 100k pending, so its samples are capped by a time budget.
Latency is wall time; ``cpu p99`` is the calling thread's CPU time, which leaves out
preemption by other processes (this benchmark often shares a small box).

    python -m benchmarks.bench_get_work --sizes 1000 10000 100000
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from typing import Any

from federation.config import SchedulerConfig
from shard.scheduler import SchedulerCore

SCENARIOS = ("trivial", "resources")


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, int(round(q / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


class Workload:
    """Builds the same state in any scheduler and drives the same get_work calls."""

    def __init__(self, scenario: str, size: int, seed: int = 7) -> None:
        self.scenario = scenario
        self.size = size
        self.rnd = random.Random(seed)
        self.next_id = 0
        self.resources = {"r": 1} if scenario == "resources" else None

    def _new_task(self, sch: Any) -> None:
        i = self.next_id
        self.next_id += 1
        sch.add_task(
            worker="W",
            task_id=f"Task_{i:08d}_{i % 97:02x}",
            family="Task",
            module="bench",
            params={"i": str(i)},
            priority=self.rnd.randint(0, 9),
            resources=self.resources,
        )

    def build(self, sch: Any) -> None:
        sch.add_worker("W", {"workers": 1})
        for _ in range(self.size):
            self._new_task(sch)
        if self.scenario == "resources":
            # another live worker, running a task that holds the same resource
            sch.update_resources(r=4)
            sch.add_worker("V", {"workers": 2})
            sch.add_task(worker="V", task_id="Other_running", family="Other", resources={"r": 1})
            sch.get_work(worker="V")
            sch.add_task(worker="V", task_id="Other_pending", family="Other", resources={"r": 1}, priority=-1)

    def step(self, sch: Any, timings: list[float], cpu: list[float]) -> str | None:
        c0 = time.thread_time_ns()
        t0 = time.perf_counter_ns()
        reply = sch.get_work(worker="W", host="bench")
        timings.append((time.perf_counter_ns() - t0) / 1e6)
        cpu.append((time.thread_time_ns() - c0) / 1e6)
        task_id = reply["task_id"]
        if task_id is not None:
            sch.add_task(worker="W", task_id=task_id, status="DONE", runnable=None)
            self._new_task(sch)
        if self.scenario == "resources":
            sch.ping(worker="V")  # V stays live (it polls too, in real life)
        return task_id


def measure(
    make: Callable[[], Any], scenario: str, size: int, samples: int, budget_s: float
) -> tuple[list[float], list[float], list[str | None], float]:
    wl = Workload(scenario, size)
    sch = make()
    t0 = time.perf_counter()
    wl.build(sch)
    build_s = time.perf_counter() - t0
    gc.collect()
    timings: list[float] = []
    cpu: list[float] = []
    picks: list[str | None] = []
    deadline = time.perf_counter() + budget_s
    while len(timings) < samples and (time.perf_counter() < deadline or len(timings) < 3):
        picks.append(wl.step(sch, timings, cpu))
    return timings, cpu, picks, build_s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    ap.add_argument("--core-samples", type=int, default=3000, help="get_work calls timed on the core")
    ap.add_argument("--luigi-samples", type=int, default=200, help="at most this many Luigi calls")
    ap.add_argument("--luigi-budget", type=float, default=15.0, help="seconds of Luigi calls per case")
    ap.add_argument("--skip-luigi", action="store_true")
    args = ap.parse_args(argv)

    def make_core() -> SchedulerCore:
        return SchedulerCore(SchedulerConfig())

    def make_luigi() -> Any:
        import luigi.scheduler  # reads luigi's config; only the benchmark needs it

        return luigi.scheduler.Scheduler(record_task_history=False, prune_on_get_work=False)

    header = (
        f"{'pending':>8} {'scenario':>9} | {'core p50':>9} {'core p99':>9} {'cpu p99':>8} {'n':>5} | "
        f"{'luigi p50':>10} {'luigi p99':>10} {'n':>4} | {'p50 x':>7} {'p99 x':>7} | same picks"
    )
    print("get_work latency in ms; x = luigi / core", flush=True)
    print(header)
    print("-" * len(header))
    worst = (0.0, 0.0)  # core wall p99, cpu p99 at the largest size
    for size in args.sizes:
        for scenario in args.scenarios:
            ct, cc, cpicks, _ = measure(make_core, scenario, size, args.core_samples, budget_s=float("inf"))
            c50, c99, cpu99 = percentile(ct, 50), percentile(ct, 99), percentile(cc, 99)
            if size == max(args.sizes):
                worst = (max(worst[0], c99), max(worst[1], cpu99))
            core_cols = f"{size:>8} {scenario:>9} | {c50:>9.3f} {c99:>9.3f} {cpu99:>8.3f} {len(ct):>5} |"
            if args.skip_luigi:
                print(core_cols, flush=True)
                continue
            lt, _, lpicks, _ = measure(make_luigi, scenario, size, args.luigi_samples, args.luigi_budget)
            l50, l99 = percentile(lt, 50), percentile(lt, 99)
            same = "yes" if cpicks[: len(lpicks)] == lpicks else "NO"
            print(
                f"{core_cols} {l50:>10.3f} {l99:>10.3f} {len(lt):>4} | {l50 / c50:>7.0f} {l99 / c99:>7.0f} | {same}",
                flush=True,
            )
    target = "met" if worst[0] <= 1.0 else "NOT met"
    print(
        f"\ntarget core p99 <= 1 ms at {max(args.sizes)} pending: {target} "
        f"(wall p99 {worst[0]:.3f} ms, cpu p99 {worst[1]:.3f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
