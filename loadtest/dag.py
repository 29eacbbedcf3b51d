"""A realistic partitioned Luigi DAG, generated: days x topics x stages, over business units.

Per day ``d`` and topic ``t`` (the topic's namespace is its business unit, ``fin``/``mkt``/``ops``
by default, round robin)::

    <unit>.Extract(date, run, topic)
      └─> <unit>.Transform          (deps: Extract)
            └─> <unit>.Enrich       (deps: Transform, fan-in - 1 other topics' Transform of the
                                     same day, and ref.Reference(date, part) when fan-out is on)
                  └─> <unit>.Load   (deps: Enrich)
    daily.Daily(date, run)          the day's WrapperTask: deps on every topic's Load

* **fan-in** (``fan_in``): how many Transforms each Enrich reads (its own plus ``fan_in - 1``
  other topics of the same day, picked deterministically; they often sit on other shards and in
  other namespaces).
* **fan-out** (``fan_out``): ``ref.Reference(date, part)`` tasks, one per ``fan_out`` topics of a
  day; each feeds ``fan_out`` Enrich tasks.  0 turns them off.
* **priorities**: business-unit bases (fin 20, mkt 10, ops 0) and priority 100 on the Daily
  wrappers of the most recent ``hot_days`` days, which Luigi's priority inheritance pushes into
  their whole upstream (across shards in a federation).
* **failures**: a share ``fail_rate`` of tasks fails on its first attempt and succeeds on the
  retry; a share ``perm_fail_rate`` fails permanently.  Those carry
  ``retry_policy_dict = {"retry_count": 1}`` (Luigi's per-task retry policy), so one failure
  disables them and their downstream stays PENDING (UPSTREAM_DISABLED) — the run can end.
* **resources**: with ``resources`` > 0 every Load needs ``{"warehouse": 1}``, and the servers are
  configured with ``[resources] warehouse = <resources>``.

Task ids are Luigi's own, :func:`luigi.task.task_id_str` of the family and the string params.
The ``run`` param is a per-run tag, so two runs against one long-lived scheduler never share ids
(Luigi would ignore a re-added DONE task for ``stable_done_cooldown_secs``).

Tasks are numbered; everything else (drivers, checks) works with those indices.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from luigi.task import task_id_str

STAGES = ("Extract", "Transform", "Enrich", "Load")
DEFAULT_UNITS = ("fin", "mkt", "ops")
UNIT_PRIORITY = {"fin": 20, "mkt": 10, "ops": 0}
HOT_PRIORITY = 100
MODULE = "loadtest.dag"
RESOURCE = "warehouse"

#: what a task is meant to do when run
OK, FAIL_ONCE, FAIL_ALWAYS = 0, 1, 2

#: the expected final status of a task
DONE, DISABLED, PENDING = "DONE", "DISABLED", "PENDING"


@dataclass(frozen=True)
class DagSpec:
    """The parameters of a generated DAG (everything that decides the task ids and edges)."""

    days: int = 2
    topics: int = 3
    run: str = "run0"
    start: str = "2026-01-01"
    units: tuple[str, ...] = DEFAULT_UNITS
    fan_in: int = 2
    fan_out: int = 10
    priorities: bool = True
    hot_days: int = 3
    fail_rate: float = 0.0
    perm_fail_rate: float = 0.0
    resources: int = 0
    seed: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.days < 1 or self.topics < 1:
            problems.append("days and topics must be at least 1")
        if self.fan_in < 1:
            problems.append("fan-in must be at least 1")
        if self.fan_out < 0:
            problems.append("fan-out must be 0 (off) or more")
        if not 0 <= self.fail_rate <= 1 or not 0 <= self.perm_fail_rate <= 1 - self.fail_rate:
            problems.append("fail rates must be shares between 0 and 1 (together at most 1)")
        if not self.units:
            problems.append("at least one business unit")
        if not self.run or not all(c.isalnum() or c == "_" for c in self.run):
            problems.append(f"run tag must be letters, digits and '_', got {self.run!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def with_run(self, run: str) -> DagSpec:
        return DagSpec(**{**asdict(self), "run": run})

    @property
    def per_day(self) -> int:
        refs = math.ceil(self.topics / self.fan_out) if self.fan_out else 0
        return len(STAGES) * self.topics + refs + 1

    @property
    def size(self) -> int:
        """How many tasks the DAG has (without building it)."""
        return self.days * self.per_day


@dataclass
class Dag:
    """The generated tasks, numbered 0..n-1; ``deps[i]`` are indices of i's upstream tasks."""

    spec: DagSpec
    ids: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    params: list[dict[str, str]] = field(default_factory=list)
    deps: list[list[int]] = field(default_factory=list)
    priority: list[int] = field(default_factory=list)
    resources: list[dict[str, int]] = field(default_factory=list)
    fail: list[int] = field(default_factory=list)
    #: (day, topic index or -1, stage name) of each task, for ownership and reports
    where: list[tuple[int, int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    # -- building ------------------------------------------------------------------------------
    def _add(
        self,
        family: str,
        params: dict[str, str],
        deps: list[int],
        priority: int,
        where: tuple[int, int, str],
        resources: dict[str, int] | None = None,
    ) -> int:
        idx = len(self.ids)
        tid = task_id_str(family, params)
        self.ids.append(tid)
        self.families.append(family)
        self.params.append(params)
        self.deps.append(deps)
        self.priority.append(priority)
        self.resources.append(resources or {})
        self.fail.append(self._fate(tid))
        self.where.append(where)
        return idx

    def _fate(self, task_id: str) -> int:
        s = self.spec
        if not s.fail_rate and not s.perm_fail_rate:
            return OK
        h = hashlib.blake2b(f"{s.seed}:{task_id}".encode(), digest_size=8).digest()
        u = int.from_bytes(h, "big") / 2.0**64
        if u < s.fail_rate:
            return FAIL_ONCE
        if u < s.fail_rate + s.perm_fail_rate:
            return FAIL_ALWAYS
        return OK

    # -- derived views ---------------------------------------------------------------------------
    @property
    def index(self) -> dict[str, int]:
        idx = getattr(self, "_index", None)
        if idx is None:
            idx = self._index = {tid: i for i, tid in enumerate(self.ids)}
        return idx

    def namespace(self, i: int) -> str:
        return self.families[i].rpartition(".")[0]

    def edges(self) -> Iterator[tuple[int, int]]:
        """(task, dependency) pairs."""
        for i, ds in enumerate(self.deps):
            for d in ds:
                yield i, d

    @property
    def n_edges(self) -> int:
        return sum(len(d) for d in self.deps)

    def retry_policy(self, i: int) -> dict[str, int | None]:
        """Luigi's ``retry_policy_dict`` for task i (``RetryPolicy._asdict()`` of the task's attributes)."""
        return {
            "retry_count": 1 if self.fail[i] == FAIL_ALWAYS else None,
            "disable_hard_timeout": None,
            "disable_window": None,
        }

    def expected_status(self) -> list[str]:
        """Final status of every task: DONE, DISABLED (fails permanently) or PENDING (below a failure).

        A task whose upstream does not end DONE is never run, so it stays PENDING even if it
        would fail itself.
        """
        out: list[str] = []
        for i, deps in enumerate(self.deps):
            assert all(d < i for d in deps), "tasks are generated upstream first"
            if any(out[d] != DONE for d in deps):
                out.append(PENDING)
            else:
                out.append(DISABLED if self.fail[i] == FAIL_ALWAYS else DONE)
        return out

    def expected_attempts(self) -> list[int]:
        """How many times each task is granted: 2 for fail-once, 0 below a permanent failure, else 1."""
        status = self.expected_status()
        return [
            0 if st == PENDING else 2 if f == FAIL_ONCE else 1
            for st, f in zip(status, self.fail, strict=True)
        ]

    def owners(self, workers: int) -> list[int]:
        """Which of ``workers`` worker ids owns (registers and runs) each task.

        Topic stages go by topic (``topic % workers``), so a worker owns whole pipelines; the
        Reference and Daily tasks of a day go round robin.  The Daily wrapper's owner depends on
        Loads other workers own: exactly the cross-worker waiting of a real deployment.
        """
        out = []
        for i, (day, topic, stage) in enumerate(self.where):
            if topic >= 0:
                out.append(topic % workers)
            elif stage == "Reference":
                out.append((day + int(self.params[i]["part"])) % workers)
            else:
                out.append(day % workers)
        return out

    def registration_order(self, owned: list[int]) -> list[int]:
        """Luigi's order for a worker's own tasks: a task before its upstream (Worker.add is a LIFO walk).

        Downstream tasks register first, so the scheduler meets most deps as placeholders first.
        """
        rank = {"Daily": 0, "Load": 1, "Enrich": 2, "Reference": 3, "Transform": 4, "Extract": 5}
        return sorted(owned, key=lambda i: (self.where[i][0], rank[self.where[i][2]], self.where[i][1]))


def topic_name(t: int) -> str:
    return f"t{t:04d}"


def build_dag(spec: DagSpec) -> Dag:
    """Generate the DAG of ``spec`` (deterministic: the same spec gives the same ids and edges)."""
    dag = Dag(spec)
    start = dt.date.fromisoformat(spec.start)
    units = spec.units
    hot_from = spec.days - spec.hot_days
    for d in range(spec.days):
        date = (start + dt.timedelta(days=d)).isoformat()
        refs: list[int] = []
        if spec.fan_out:
            for part in range(math.ceil(spec.topics / spec.fan_out)):
                refs.append(
                    dag._add(
                        "ref.Reference",
                        {"date": date, "part": str(part), "run": spec.run},
                        [],
                        0,
                        (d, -1, "Reference"),
                    )
                )
        transforms: list[int] = []
        pipelines: list[tuple[int, int]] = []  # (topic, Extract index)
        for t in range(spec.topics):
            unit = units[t % len(units)]
            prio = UNIT_PRIORITY.get(unit, 0) if spec.priorities else 0
            params = {"date": date, "run": spec.run, "topic": topic_name(t)}
            ex = dag._add(f"{unit}.Extract", dict(params), [], prio, (d, t, "Extract"))
            tr = dag._add(f"{unit}.Transform", dict(params), [ex], prio, (d, t, "Transform"))
            transforms.append(tr)
            pipelines.append((t, tr))
        loads: list[int] = []
        for t, tr in pipelines:
            unit = units[t % len(units)]
            prio = UNIT_PRIORITY.get(unit, 0) if spec.priorities else 0
            params = {"date": date, "run": spec.run, "topic": topic_name(t)}
            deps = [tr] + [transforms[o] for o in _others(spec, d, t)]
            if refs:
                deps.append(refs[t // spec.fan_out])
            en = dag._add(f"{unit}.Enrich", dict(params), deps, prio, (d, t, "Enrich"))
            res = {RESOURCE: 1} if spec.resources else None
            loads.append(dag._add(f"{unit}.Load", dict(params), [en], prio, (d, t, "Load"), res))
        hot = spec.priorities and d >= hot_from
        dag._add(
            "daily.Daily",
            {"date": date, "run": spec.run},
            loads,
            HOT_PRIORITY if hot else 0,
            (d, -1, "Daily"),
        )
    return dag


def _others(spec: DagSpec, day: int, topic: int) -> list[int]:
    """The ``fan_in - 1`` other topics whose Transform an Enrich reads (distinct, deterministic)."""
    want = min(spec.fan_in - 1, spec.topics - 1)
    out: list[int] = []
    k = 0
    while len(out) < want:
        h = hashlib.blake2b(f"{spec.seed}:{day}:{topic}:{k}".encode(), digest_size=4).digest()
        o = int.from_bytes(h, "big") % spec.topics
        if o != topic and o not in out:
            out.append(o)
        k += 1
    return out


# -- what Luigi's worker sends ----------------------------------------------------------------------
def registration_kwargs(dag: Dag, i: int, worker: str) -> dict[str, Any]:
    """``add_task`` exactly as Luigi's ``Worker._add`` sends it for an incomplete task.

    All 20 named arguments are present, as ``luigi.rpc.RemoteScheduler`` fills every default in.
    """
    params = dag.params[i]
    return {
        "task_id": dag.ids[i],
        "status": "PENDING",
        "runnable": True,
        "deps": [dag.ids[d] for d in dag.deps[i]],
        "new_deps": None,
        "expl": None,
        "resources": dict(dag.resources[i]),
        "priority": dag.priority[i],
        "family": dag.families[i],
        "module": MODULE,
        "params": dict(params),
        "param_visibilities": {k: 0 for k in params},
        "accepts_messages": False,
        "assistant": False,
        "tracking_url": None,
        "worker": worker,
        "batchable": False,
        "batch_id": None,
        "retry_policy_dict": dag.retry_policy(i),
        "owners": [],
    }


def report_kwargs(dag: Dag, i: int, worker: str, status: str) -> dict[str, Any]:
    """``add_task`` as Luigi's ``Worker._handle_next_task`` reports a result (DONE or FAILED)."""
    params = dag.params[i]
    expl = None if status == "DONE" else "Traceback (most recent call last):\n  loadtest: planned failure\n"
    return {
        "task_id": dag.ids[i],
        "status": status,
        "runnable": None,
        "deps": None,
        "new_deps": [],
        "expl": json.dumps(expl),
        "resources": dict(dag.resources[i]),
        "priority": 0,
        "family": dag.families[i],
        "module": MODULE,
        "params": dict(params),
        "param_visibilities": {k: 0 for k in params},
        "accepts_messages": False,
        "assistant": False,
        "tracking_url": None,
        "worker": worker,
        "batchable": None,
        "batch_id": None,
        "retry_policy_dict": dag.retry_policy(i),
        "owners": [],
    }
