"""Correctness checks on the trace of a run: what was granted, when, and what the scheduler ended with.

A run is correct when:

* **exactly once**: every task is granted as often as planned (once; twice for a task that
  fails its first attempt; never below a permanent failure) and completed (DONE) exactly once
  when it should end DONE, never otherwise; no task is granted again while it is still running
  (a report must come between two grants); no task outside the DAG is granted;
* **dependencies first**: no grant before *all* the task's dependencies were reported DONE.
  Times are the drivers' ``perf_counter`` stamps (one clock for all processes): a grant whose
  ``get_work`` reply was *received* before a dependency's DONE report was even *sent* is a
  violation for sure.  (The scheduler decided somewhere inside each call's window; windows that
  overlap cannot be ordered and are given the benefit of the doubt.)
* **final state**: the scheduler's own view at the end: DONE everywhere, except DISABLED for the
  planned permanent failures and PENDING below them;
* the run itself finished: no worker error, no stall.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from loadtest.dag import FAIL_ALWAYS, FAIL_ONCE, Dag

REPORT_DONE, REPORT_FAILED = 1, 2
MAX_EXAMPLES = 5


@dataclass
class Trace:
    """Grants and reports of a run (task indices into the DAG, perf_counter seconds)."""

    grant_idx: list[int] = field(default_factory=list)
    grant_t0: list[float] = field(default_factory=list)  # get_work sent
    grant_t1: list[float] = field(default_factory=list)  # get_work answer received
    grant_worker: list[int] = field(default_factory=list)
    rep_idx: list[int] = field(default_factory=list)
    rep_status: list[int] = field(default_factory=list)
    rep_t0: list[float] = field(default_factory=list)  # add_task(DONE/FAILED) sent
    rep_t1: list[float] = field(default_factory=list)  # its answer received
    rep_worker: list[int] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # worker errors, stalls

    def grant(self, i: int, t0: float, t1: float, worker: int = 0) -> None:
        self.grant_idx.append(i)
        self.grant_t0.append(t0)
        self.grant_t1.append(t1)
        self.grant_worker.append(worker)

    def report(self, i: int, status: int, t0: float, t1: float, worker: int = 0) -> None:
        self.rep_idx.append(i)
        self.rep_status.append(status)
        self.rep_t0.append(t0)
        self.rep_t1.append(t1)
        self.rep_worker.append(worker)

    @classmethod
    def from_results(cls, results: Iterable[Any]) -> Trace:
        """Merge the :class:`loadtest.drivers.WorkerResult` of every worker."""
        tr = cls()
        results = list(results)
        for r in results:
            n = len(r.grant_idx)
            tr.grant_idx.extend(r.grant_idx)
            tr.grant_t0.extend(r.grant_t0)
            tr.grant_t1.extend(r.grant_t1)
            tr.grant_worker.extend([r.wid] * n)
            m = len(r.rep_idx)
            tr.rep_idx.extend(r.rep_idx)
            tr.rep_status.extend(r.rep_status)
            tr.rep_t0.extend(r.rep_t0)
            tr.rep_t1.extend(r.rep_t1)
            tr.rep_worker.extend([r.wid] * m)
            tr.foreign.extend(r.foreign)
            if r.error:
                tr.problems.append(f"worker {r.wid} error: {r.error.strip().splitlines()[-1]}")
        stopped = [r.wid for r in results if r.stopped]
        if stopped:
            tr.problems.append(f"{len(stopped)} worker(s) stopped before they finished (e.g. {stopped[:5]})")
        return tr


@dataclass
class CheckReport:
    """Violations by kind, with a few examples each."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    checked_tasks: int = 0
    checked_grants: int = 0
    checked_edges: int = 0
    final_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def violations(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < MAX_EXAMPLES:
            self.examples[kind].append(example)

    def summary(self) -> str:
        if self.ok:
            return (
                f"OK: {self.checked_tasks} tasks, {self.checked_grants} grants, {self.checked_edges} dependency "
                f"checks{', final state' if self.final_checked else ''}"
            )
        parts = [
            f"{kind}: {n} (e.g. {'; '.join(self.examples[kind][:2])})"
            for kind, n in self.counts.most_common()
        ]
        return "FAILED: " + " | ".join(parts)


def check(dag: Dag, trace: Trace, final: dict[str, str] | None) -> CheckReport:
    """Check ``trace`` (and the scheduler's ``final`` statuses by task id, if fetched) against ``dag``."""
    rep = CheckReport(checked_tasks=len(dag), checked_grants=len(trace.grant_idx))
    ids = dag.ids
    for p in trace.problems:
        rep.add("run incomplete", p)
    for tid in trace.foreign[:1000]:
        rep.add("task outside the DAG granted", tid)

    attempts = dag.expected_attempts()
    expected = dag.expected_status()
    grants: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for i, t0, t1 in zip(trace.grant_idx, trace.grant_t0, trace.grant_t1, strict=True):
        grants[i].append((t0, t1))
    done_sent: dict[int, float] = {}
    done_n: Counter[int] = Counter()
    reports: dict[int, list[float]] = defaultdict(list)
    for i, st, t0 in zip(trace.rep_idx, trace.rep_status, trace.rep_t0, strict=True):
        reports[i].append(t0)
        if st == REPORT_DONE:
            done_n[i] += 1
            done_sent[i] = min(t0, done_sent.get(i, t0))
        elif st == REPORT_FAILED and dag.fail[i] not in (FAIL_ONCE, FAIL_ALWAYS):
            rep.add("unplanned failure reported", ids[i])

    for i in range(len(dag)):
        g = len(grants.get(i, ()))
        if g > attempts[i]:
            rep.add("granted more often than planned", f"{ids[i]} granted {g}x, planned {attempts[i]}x")
        elif g < attempts[i]:
            rep.add("granted less often than planned", f"{ids[i]} granted {g}x, planned {attempts[i]}x")
        want_done = 1 if expected[i] == "DONE" else 0
        if done_n[i] != want_done:
            rep.add(
                "not completed exactly once" if want_done else "completed although it should not",
                f"{ids[i]} reported DONE {done_n[i]}x",
            )

    for i, gs in grants.items():
        gs.sort(key=lambda x: x[1])
        # no second grant while the first is still running: a report of the task must lie between
        for (a0, _a1), (_b0, b1) in zip(gs, gs[1:], strict=False):
            if not any(a0 <= r <= b1 for r in reports.get(i, ())):
                rep.add("granted again while running", f"{ids[i]}")
        for _t0, t1 in gs:
            for d in dag.deps[i]:
                rep.checked_edges += 1
                sent = done_sent.get(d)
                if sent is None:
                    rep.add("granted before a dependency was DONE", f"{ids[i]}: {ids[d]} never reported DONE")
                elif t1 < sent:
                    rep.add(
                        "granted before a dependency was DONE",
                        f"{ids[i]} granted {sent - t1:.3f}s before {ids[d]} was reported DONE",
                    )

    if final is not None:
        rep.final_checked = True
        for i, tid in enumerate(ids):
            got = final.get(tid)
            if got is None:
                rep.add("missing from the scheduler's final state", tid)
            elif got != expected[i]:
                rep.add("unexpected final status", f"{tid} is {got}, expected {expected[i]}")
    return rep
