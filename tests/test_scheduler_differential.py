"""Differential tests: ``shard.scheduler.SchedulerCore`` must answer exactly like Luigi's scheduler.

Three layers (harness in ``tests/differential.py``):

* a hypothesis state machine that drives Luigi 3.8.1 and the core with the
  same generated RPC sequences over a small universe of tasks, workers and
  resources, under one fake clock, comparing every answer and, periodically,
  the whole observable state; in some runs also ``restore(snapshot())`` and
  ``collect_changes()`` after every step;
* behaviour cases ported from Luigi's ``test/scheduler_api_test.py``, run as
  differential cases (same calls on both sides, answers compared, plus the
  original assertions on Luigi's answers);
* the RPC signatures themselves.

The same machine runs Luigi against a second Luigi as a check that the
harness has no false positives.

``FED_DIFF_EXAMPLES=N`` runs N generated sequences instead of the CI default;
``FED_DIFF_STEPS`` sets the steps per sequence; ``FED_DIFF_RANDOM=1`` draws
new sequences instead of the reproducible (derandomized) ones.  Found
mismatches are written up in ``/work/notes/differential_findings.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.differential import (
    NOT_WIRE_CALLABLE,
    Differential,
    LuigiAsCore,
    make_config,
    signature_differences,
)

try:
    from shard.scheduler import SchedulerCore

    _CORE_IMPORT_ERROR = ""
except Exception as e:  # the core is written in parallel; skip until it imports
    SchedulerCore = None  # type: ignore[assignment,misc]
    _CORE_IMPORT_ERROR = f"shard.scheduler.SchedulerCore not importable yet: {type(e).__name__}: {e}"

needs_core = pytest.mark.skipif(SchedulerCore is None, reason=_CORE_IMPORT_ERROR or "core missing")

CI_EXAMPLES = 120
CI_STEPS = 40
SELF_CHECK_EXAMPLES = 25


def _examples(default: int) -> int:
    return int(os.environ.get("FED_DIFF_EXAMPLES", default))


def _settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        stateful_step_count=int(os.environ.get("FED_DIFF_STEPS", CI_STEPS)),
        deadline=None,
        derandomize=os.environ.get("FED_DIFF_RANDOM", "") != "1",
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


def _make_core(config: Any = None, clock: Any = None) -> Any:
    return SchedulerCore(config=config, clock=clock)


def _missing_core_methods() -> set[str]:
    if SchedulerCore is None:
        return set()
    import luigi.scheduler as lsched

    return {m for m in lsched.RPC_METHODS if not callable(getattr(SchedulerCore, m, None))}


# --------------------------------------------------------------------------- the universe

WORKERS = ("W1", "W2", "W3", "AS")
#: task id -> (family, module, params); "Fam_*" are batchable in family "Fam"
CATALOG: dict[str, tuple[str, str | None, dict[str, str]]] = {
    "A": ("TA", "mod.a", {"p": "1"}),
    "B": ("TB", "mod.b", {"p": "2", "q": "x"}),
    "C": ("TC", None, {}),
    "Fam_1": ("Fam", "mod.f", {"a": "1", "b": "x"}),
    "Fam_2": ("Fam", "mod.f", {"a": "2", "b": "x"}),
    "Fam_3": ("Fam", "mod.f", {"a": "3", "b": "y"}),
}
TASK_IDS = tuple(CATALOG)
#: the deps a worker usually declares for each task (generated calls deviate sometimes)
USUAL_DEPS: dict[str, list[str]] = {
    "A": [],
    "B": ["A"],
    "C": ["A", "B"],
    "Fam_1": [],
    "Fam_2": [],
    "Fam_3": ["A"],
}
DEP_IDS = (*TASK_IDS, "X_missing")
RUNNER_IDS = ("Fam_run1", "Fam_run2")
ALL_IDS = (*TASK_IDS, "X_missing", *RUNNER_IDS)
CLIENT_STATUSES = ("PENDING", "PENDING", "DONE", "FAILED", "RUNNING", "DISABLED", "UNKNOWN", "SUSPENDED")
RESOURCE_SETS = (None, {}, {"r1": 1}, {"r1": 2}, {"r2": 1}, {"r1": 1, "r2": 1})
ADVANCES = (0.5, 1.0, 2.0, 3.0, 4.0, 5.5, 6.5, 8.5, 11.0, 21.0, 41.0, 100.0)

#: the rarely-needed calls, drawn inside one rule: name -> RPC methods it needs
OTHER_CALLS: dict[str, tuple[str, ...]] = {
    name: (name,)
    for name in (
        "pause",
        "unpause",
        "is_paused",
        "is_pause_enabled",
        "has_task_history",
        "prune",
        "disable_worker",
        "count_pending",
        "set_worker_processes",
        "send_scheduler_message",
        "add_scheduler_message_response",
        "get_scheduler_message_response",
        "set_task_status_message",
        "set_task_progress_percentage",
        "decrease_running_task_resources",
        "update_resource",
        "update_resources",
        "re_enable_task",
        "forgive_failures",
        "mark_as_done",
        "fetch_error",
        "get_running_task_resources",
        "report_task_statistics",
        "announce_scheduling_failure",
    )
}

config_strategy = st.builds(
    make_config,
    retry_delay=st.sampled_from([5.0, 5.0, 0.0, -1.0]),
    remove_delay=st.sampled_from([8.0, 8.0, 0.0]),
    worker_disconnect_delay=st.sampled_from([6.0, 6.0, 30.0]),
    disable_window=st.sampled_from([10, 3]),
    retry_count=st.sampled_from([2, 3, 1, 999999999]),
    disable_hard_timeout=st.sampled_from([40, 12, 999999999]),
    disable_persist=st.sampled_from([20, 5]),
    max_shown_tasks=st.sampled_from([100000, 100000, 3]),
    max_graph_nodes=st.sampled_from([100000, 100000, 2]),
    prune_on_get_work=st.booleans(),
    pause_enabled=st.sampled_from([True, True, False]),
    send_messages=st.sampled_from([True, True, False]),
    stable_done_cooldown_secs=st.sampled_from([3, 0, 10]),
    resources=st.sampled_from([{}, {"r1": 1}, {"r1": 2, "r2": 1}, {"r2": 0}]),
)


def _maybe(strategy: st.SearchStrategy[Any], none_weight: int = 1) -> st.SearchStrategy[Any]:
    return st.one_of(*([st.none()] * none_weight), strategy)


class DifferentialMachine(RuleBasedStateMachine):
    """Random RPC sequences against Luigi and the core; every answer compared."""

    make_core: Callable[..., Any] = staticmethod(_make_core)
    missing: frozenset[str] = frozenset()
    sequences = 0
    roundtrip_sequences = 0

    def __init__(self) -> None:
        super().__init__()
        self._d: Differential | None = None
        self.roundtrip = False
        self.workers: tuple[str, ...] = WORKERS

    def supports(self, *methods: str) -> bool:
        return not (set(methods) & self.missing)

    # ---- setup
    @initialize(
        cfg=config_strategy,
        roundtrip=st.sampled_from([False, False, True]),
        cast=st.sampled_from([("W1",), ("W1", "W2"), ("W1", "W2"), ("W1", "W2", "W3")]),
    )
    def setup(self, cfg: Any, roundtrip: bool, cast: tuple[str, ...]) -> None:
        type(self).sequences += 1
        # fewer workers per sequence: their calls meet on the same tasks more often
        self.workers = (*cast, "AS")
        core_ok = not ({"snapshot", "restore", "collect_changes"} & self.missing)
        self.roundtrip = roundtrip and core_ok
        type(self).roundtrip_sequences += int(self.roundtrip)
        self._d = Differential(cfg, type(self).make_core, check_changes=core_ok)

    def after(self) -> None:
        """Cheap reads after every step, and the persistence round trip in some runs."""
        self.d.observe(full=False)
        if self.roundtrip:
            self.d.check_roundtrip()

    @property
    def d(self) -> Differential:
        assert self._d is not None, "setup() runs first"
        return self._d

    @property
    def luigi(self) -> Any:
        return self.d.luigi

    # ---- add_task, the workhorse
    def _schedule(self, data: st.DataObject) -> None:
        """What a worker sends while scheduling a DAG: one full add_task per task, root first."""
        roots = [*TASK_IDS, "Fam_*"]
        root = data.draw(st.sampled_from(roots), "root")
        worker = data.draw(st.sampled_from(self.workers[:-1]), "worker")
        todo = ["Fam_1", "Fam_2", "Fam_3"] if root == "Fam_*" else [root]
        seen: list[str] = []
        while todo:  # the worker walks the DAG breadth-first, as Worker.add does
            tid = todo.pop(0)
            if tid in seen:
                continue
            seen.append(tid)
            deps = self._schedule_one(data, worker, tid)
            todo += [t for t in deps if t in CATALOG]
        self.after()

    def _schedule_one(self, data: st.DataObject, worker: str, tid: str) -> list[str]:
        family, module, params = CATALOG[tid]
        # a worker registers its batcher before the family's tasks
        if family == "Fam" and data.draw(st.integers(0, 3), "send batcher") > 0:
            self.d.call(
                "add_task_batcher",
                worker=worker,
                task_family="Fam",
                batched_args=["a"],
                max_batch_size=math.inf,
            )
        usual = data.draw(st.integers(0, 5), "usual") > 0
        complete = data.draw(st.integers(0, 5), "completeness")
        status, runnable = (
            ("DONE", False) if complete == 0 else ("PENDING", complete != 1)
        )  # 1: external task
        deps = (
            USUAL_DEPS[tid]
            if usual
            else data.draw(
                st.lists(st.sampled_from([t for t in DEP_IDS if t != tid]), max_size=2, unique=True), "deps"
            )
        )
        if status == "DONE":
            deps = []  # a complete task's requirements are not walked
        kw: dict[str, Any] = {
            "task_id": tid,
            "worker": worker,
            "status": status,
            "runnable": runnable,
            "deps": deps,
            "expl": None,
            "resources": {"r1": 1}
            if tid == "B" and usual
            else None
            if usual
            else data.draw(st.sampled_from(RESOURCE_SETS)),
            "priority": data.draw(st.sampled_from([0, 0, 0, 1, 5, 10]), "priority"),
            "family": family,
            "module": module,
            "params": params,
            "param_visibilities": {k: 0 for k in params},
            "accepts_messages": data.draw(st.booleans(), "accepts_messages"),
            "assistant": False,
            "tracking_url": None,
            "batchable": family == "Fam" and data.draw(st.integers(0, 4), "batchable") > 0,
            "retry_policy_dict": data.draw(
                st.sampled_from([{}, {}, {}, {"retry_count": 1}, {"retry_count": None, "disable_window": 2}]),
                "retry_policy",
            ),
            "owners": [],
        }
        self.d.call("add_task", **kw)
        return deps

    @rule(data=st.data())
    def schedule_task(self, data: st.DataObject) -> None:
        self._schedule(data)

    @rule(data=st.data())
    def schedule_task_2(self, data: st.DataObject) -> None:
        self._schedule(data)

    @rule(data=st.data())
    def schedule_task_3(self, data: st.DataObject) -> None:
        self._schedule(data)

    @rule(data=st.data())
    def add_task(self, data: st.DataObject) -> None:
        """Any well-typed add_task: odd statuses, partial descriptions, assistants, new_deps."""
        tid = data.draw(st.sampled_from(ALL_IDS), "task_id")
        family, module, params = CATALOG.get(tid, ("Fam", "mod.f", {"a": "9", "b": "x"}))
        kw: dict[str, Any] = {"task_id": tid, "worker": data.draw(st.sampled_from(self.workers), "worker")}
        kw["status"] = data.draw(st.sampled_from(CLIENT_STATUSES), "status")
        if data.draw(st.booleans(), "describe"):  # a scheduling call sends the whole description
            kw.update(family=family, module=module, params=params)
            if data.draw(st.booleans(), "visibilities") and params:
                kw["param_visibilities"] = {k: data.draw(st.sampled_from([0, 0, 1, 2])) for k in params}
        opt = data.draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "runnable": st.sampled_from([True, False, None]),
                    "deps": _maybe(st.lists(st.sampled_from(DEP_IDS), max_size=3, unique=True)),
                    "new_deps": _maybe(st.lists(st.sampled_from(DEP_IDS), max_size=2, unique=True)),
                    "expl": st.sampled_from([None, "null", '"boom"', '""']),
                    "resources": st.sampled_from(RESOURCE_SETS),
                    "priority": st.sampled_from([0, 1, 5, 10, -3, 2.5]),
                    "accepts_messages": st.sampled_from([True, False, None]),
                    "assistant": st.sampled_from([False, False, True]),
                    "tracking_url": st.sampled_from([None, "http://t/1", "http://t/2"]),
                    "batchable": st.sampled_from([None, True, False]),
                    "retry_policy_dict": _maybe(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "retry_count": _maybe(st.sampled_from([1, 2, 5])),
                                "disable_hard_timeout": _maybe(st.sampled_from([7, 100])),
                                "disable_window": _maybe(st.sampled_from([2, 50])),
                            },
                        )
                    ),
                    "owners": st.just(["owner@example.com"]),
                    "task_family": st.just(family),  # unknown kwarg, ignored by Luigi
                },
            ),
            "options",
        )
        kw.update(opt)
        self.d.call("add_task", **kw)
        self.after()

    @precondition(lambda self: self._d is not None and any(t.status == "RUNNING" for t in self.luigi.tasks()))
    @rule(data=st.data())
    def report_result(self, data: st.DataObject) -> None:
        self._report(data)

    @precondition(lambda self: self._d is not None and any(t.status == "RUNNING" for t in self.luigi.tasks()))
    @rule(data=st.data())
    def report_result_2(self, data: st.DataObject) -> None:
        self._report(data)

    def _report(self, data: st.DataObject) -> None:
        """What a worker sends when its task ends: DONE, FAILED, or PENDING with dynamic deps."""
        running = [t for t in self.luigi.tasks() if t.status == "RUNNING"]
        task = data.draw(st.sampled_from(running), "running task")
        worker = (
            task.worker_running
            if data.draw(st.integers(0, 4), "own worker")
            else data.draw(st.sampled_from(self.workers))
        )
        status = data.draw(
            st.sampled_from(["DONE", "DONE", "FAILED", "FAILED", "PENDING", "RUNNING"]), "status"
        )
        kw: dict[str, Any] = {"task_id": task.id, "worker": worker, "status": status, "runnable": None}
        kw["expl"] = data.draw(st.sampled_from(["null", '"Traceback: boom"']), "expl")
        if status == "PENDING":
            kw["new_deps"] = data.draw(
                st.lists(st.sampled_from(DEP_IDS), min_size=1, max_size=2, unique=True), "new_deps"
            )
        if status == "RUNNING":  # a tracking-url update
            kw = {"task_id": task.id, "worker": worker, "status": "RUNNING", "tracking_url": "http://t/run"}
        if task.family:
            kw.update(family=task.family, module=task.module, params=dict(task.params))
        self.d.call("add_task", **kw)
        self.after()

    @precondition(lambda self: self._d is not None and bool(self.luigi.batch_ids()))
    @rule(data=st.data())
    def start_batch_runner(self, data: st.DataObject) -> None:
        """The worker announces the combined task of a batch it got from get_work."""
        batch_id = data.draw(st.sampled_from(self.luigi.batch_ids()), "batch_id")
        members = [t for t in self.luigi.tasks() if t.batch_id == batch_id]
        runner = data.draw(st.sampled_from([*RUNNER_IDS, *(t.id for t in members)]), "runner id")
        worker_running = next((t.worker_running for t in members if t.worker_running), "W1")
        worker = (
            worker_running
            if data.draw(st.integers(0, 5), "own worker")
            else data.draw(st.sampled_from(self.workers))
        )
        values = ",".join(sorted(t.params.get("a", "?") for t in members))
        kw: dict[str, Any] = {
            "task_id": runner,
            "worker": worker,
            "status": "RUNNING",
            "batch_id": batch_id,
            "family": "Fam",
            "module": "mod.f",
            "params": {"a": values, "b": "x"},
        }
        if data.draw(st.booleans(), "resources"):
            kw["resources"] = data.draw(st.sampled_from(RESOURCE_SETS), "runner resources")
        self.d.call("add_task", **kw)
        self.after()

    # ---- get_work and keep-alive
    def _get_work(self, data: st.DataObject) -> None:
        worker = data.draw(st.sampled_from(self.workers), "worker")
        assistant = data.draw(
            st.sampled_from([False, False, True]) if worker != "AS" else st.sampled_from([True, True, False])
        )
        mine = [t.id for t in self.luigi.tasks() if t.status == "RUNNING" and t.worker_running == worker]
        current = data.draw(
            st.one_of(
                st.none(),
                st.just([]),
                st.just(mine),
                st.lists(st.sampled_from(ALL_IDS), max_size=3, unique=True),
            ),
            "current_tasks",
        )
        kw: dict[str, Any] = {"worker": worker, "host": "host-" + worker}
        if assistant:
            kw["assistant"] = True
        if current is not None:
            kw["current_tasks"] = current
        self.d.call("get_work", **kw)
        self.after()

    # hypothesis picks rules uniformly: the busy paths get several rules
    @rule(data=st.data())
    def get_work(self, data: st.DataObject) -> None:
        self._get_work(data)

    @rule(data=st.data())
    def get_work_2(self, data: st.DataObject) -> None:
        self._get_work(data)

    @rule(data=st.data())
    def get_work_3(self, data: st.DataObject) -> None:
        self._get_work(data)

    @rule(data=st.data())
    def ping(self, data: st.DataObject) -> None:
        self.d.call("ping", worker=data.draw(st.sampled_from(self.workers)))
        self.after()

    @rule(
        data=st.data(),
        info=st.sampled_from(
            [
                {"workers": 2},
                {"workers": 1},
                [["workers", 3], ["host", "h"], ["first_task", "A"]],
                [["salt", "42"], ["workers", 1], ["first_task", "Fam_2"]],
                [["assistant", True]],
                {},
                [],
                {"first_task": "nope", "username": "u"},
            ]
        ),
    )
    def add_worker(self, data: st.DataObject, info: Any) -> None:
        self.d.call("add_worker", worker=data.draw(st.sampled_from(self.workers)), info=info)
        self.after()

    @rule(
        data=st.data(),
        args=st.sampled_from([["a"], ["a"], ["a"], ["a", "b"], ["zz"]]),
        size=st.sampled_from([math.inf, math.inf, 2, 1]),
        explicit=st.booleans(),
    )
    def add_task_batcher(self, data: st.DataObject, args: list[str], size: float, explicit: bool) -> None:
        kw: dict[str, Any] = {
            "worker": data.draw(st.sampled_from(self.workers)),
            "task_family": "Fam",
            "batched_args": args,
        }
        if explicit or size != math.inf:
            kw["max_batch_size"] = size
        self.d.call("add_task_batcher", **kw)
        self.after()

    # ---- everything else a UI, a worker's task code or the server does, one rule
    @rule(data=st.data())
    def other_call(self, data: st.DataObject) -> None:
        d = self.d
        which = data.draw(st.sampled_from(sorted(OTHER_CALLS)), "call")
        if not self.supports(*OTHER_CALLS[which]):
            return
        worker = data.draw(st.sampled_from(self.workers), "worker")
        task_id = data.draw(st.sampled_from(ALL_IDS), "task_id")
        if which in ("pause", "unpause", "is_paused", "is_pause_enabled", "has_task_history", "prune"):
            d.call(which)
        elif which in ("disable_worker", "count_pending"):
            d.call(which, worker=worker)
        elif which == "set_worker_processes":
            d.call(which, worker=worker, n=data.draw(st.sampled_from([0, 1, 4])))
        elif which == "send_scheduler_message":
            d.call(which, worker=worker, task=task_id, content=data.draw(st.sampled_from(["hello", "stop"])))
        elif which in ("add_scheduler_message_response", "get_scheduler_message_response"):
            mid = data.draw(st.sampled_from([*d.msg.luigi, "no-such-message"]), "message_id")
            if which == "add_scheduler_message_response":
                d.call(
                    which,
                    task_id=task_id,
                    message_id=mid,
                    response=data.draw(st.sampled_from(["ok", "", "done"])),
                )
            else:
                d.call(which, task_id=task_id, message_id=mid)
        elif which == "set_task_status_message":
            d.call(which, task_id=task_id, status_message=data.draw(st.sampled_from(["step 1", "", None])))
        elif which == "set_task_progress_percentage":
            d.call(which, task_id=task_id, progress_percentage=data.draw(st.sampled_from([0, 30, 100, None])))
        elif which == "decrease_running_task_resources":
            dec = data.draw(
                st.sampled_from(
                    [{"r1": 1}, {"r1": 5}, {"r2": 1, "r1": 1}, {"r3": 1}, {"r1": 0}, {"r1": -1}, {}]
                )
            )
            running = [t.id for t in self.luigi.tasks() if t.status == "RUNNING"]
            if running and data.draw(st.booleans()):
                task_id = data.draw(st.sampled_from(running))
            d.call(which, task_id=task_id, decrease_resources=dec)
        elif which == "update_resource":
            amount = data.draw(st.sampled_from([0, 1, 2, 3, -1, 1.5, "2", None, True]))
            d.call(which, resource=data.draw(st.sampled_from(["r1", "r2", "r3"])), amount=amount)
        elif which == "update_resources":
            d.call(
                which,
                **data.draw(st.dictionaries(st.sampled_from(["r1", "r2"]), st.integers(0, 3), max_size=2)),
            )
        elif which in (
            "re_enable_task",
            "forgive_failures",
            "mark_as_done",
            "fetch_error",
            "get_running_task_resources",
        ):
            d.call(which, task_id=task_id)
        elif which == "report_task_statistics":
            d.call(which, task_id=task_id, statistics={"rows": 3})
        elif which == "announce_scheduling_failure":
            d.call(
                which,
                task_name=task_id,
                family="TA",
                params={"p": "1"},
                expl="boom",
                owners=[],
                worker=worker,
            )
        else:  # pragma: no cover - OTHER_CALLS and this chain must agree
            raise AssertionError(which)
        self.after()

    # ---- time and observation
    @rule(seconds=st.sampled_from(ADVANCES))
    def advance_clock(self, seconds: float) -> None:
        self.d.advance(seconds)
        self.after()

    @rule()
    def observe(self) -> None:
        self.d.observe()

    def teardown(self) -> None:
        # a final full comparison, unless a step already failed (the first error is the one to show)
        if self._d is not None and not self._d.broken:
            self.d.observe()


def _run_machine(make_core: Callable[..., Any], missing: set[str], examples: int) -> tuple[int, int]:
    machine = type(
        "Machine",
        (DifferentialMachine,),
        {"make_core": staticmethod(make_core), "missing": frozenset(missing)},
    )
    run_state_machine_as_test(machine, settings=_settings(examples))
    return machine.sequences, machine.roundtrip_sequences


# --------------------------------------------------------------------------- generated sequences


@needs_core
def test_generated_sequences_match_luigi(record_property: Callable[[str, Any], None]) -> None:
    """Random RPC sequences: the core answers exactly like Luigi (CI: ``CI_EXAMPLES`` sequences)."""
    missing = _missing_core_methods()
    core_needed = {"add_task", "get_work", "task_list"}
    if core_needed & missing:
        pytest.skip(f"core lacks {sorted(core_needed & missing)}")
    sequences, roundtrips = _run_machine(_make_core, missing, _examples(CI_EXAMPLES))
    record_property("generated_sequences", sequences)
    print(
        f"\ndifferential: {sequences} generated sequences ({roundtrips} with restore/snapshot after every step)"
    )
    if missing:
        pytest.skip(f"ran {sequences} sequences, but the core still lacks {sorted(missing)}")


def test_harness_self_check_luigi_vs_luigi() -> None:
    """The harness itself: Luigi against Luigi never mismatches (no false positives from order or ids)."""
    sequences, _ = _run_machine(LuigiAsCore, {"snapshot", "restore", "collect_changes"}, SELF_CHECK_EXAMPLES)
    assert sequences >= SELF_CHECK_EXAMPLES


def test_harness_detects_a_difference() -> None:
    """A core that differs in one detail is caught (the comparison can fail)."""

    class OffByOne(LuigiAsCore):
        def __getattr__(self, name: str) -> Any:
            fn = super().__getattr__(name)
            if name != "count_pending":
                return fn
            return lambda **kw: {**fn(**kw), "n_pending_tasks": fn(**kw)["n_pending_tasks"] + 1}

    d = Differential(make_config(), OffByOne, check_changes=False)
    d.add_task(worker="W1", task_id="A")
    with pytest.raises(AssertionError, match="n_pending_tasks"):
        d.count_pending(worker="W1")


# --------------------------------------------------------------------------- signatures


@needs_core
def test_rpc_signatures_match_luigi() -> None:
    problems = [p for p in signature_differences(SchedulerCore) if p.split(":")[0] not in NOT_WIRE_CALLABLE]
    assert not problems, "\n".join(problems)


@needs_core
def test_core_has_persistence_hooks() -> None:
    for name in ("snapshot", "restore", "collect_changes", "prune"):
        assert callable(getattr(SchedulerCore, name, None)), name
