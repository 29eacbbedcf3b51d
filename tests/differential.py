"""Differential-testing harness: Luigi's own scheduler against ``shard.scheduler.SchedulerCore``.

Both sides receive the same RPC calls (each side its own JSON-decoded copy of
the arguments, as a wire client would send them) under one controlled clock,
and every answer is compared after a JSON round trip, because that is what a
client sees.  :class:`Differential` is the driver; tests build call sequences
on top of it (hypothesis state machine, ported ``scheduler_api_test`` cases).

How Luigi is driven (``luigi.scheduler`` 3.8.1, unmodified):

* ``luigi.scheduler.time`` is replaced, only for the duration of each call,
  by the fake clock; the core gets the same clock through ``clock=``.
* ``luigi.scheduler.set`` is replaced, only during each call, by an
  insertion-ordered set.  Luigi keeps ``task.deps``, ``task.stakeholders``,
  ``worker.tasks`` and the inverse graph in builtin sets, whose iteration
  order is arbitrary (string hashes are salted per process, ``worker.tasks``
  holds objects hashed by address).  That order leaks into a few answers
  (``get_work`` tie-breaks for a trivial worker, the upstream-status walk).
  Insertion order is one of the orders Luigi can produce, and it is
  deterministic, so the comparison stays exact; the core is expected to use
  insertion order wherever Luigi iterates a set.
* ``luigi.scheduler.notifications`` is replaced by a recorder (a disable
  would otherwise try to e-mail), and ``luigi.scheduler.configuration`` by an
  empty config while the scheduler is built, so no user ``luigi.cfg`` is read.
  ``state_path`` points at a temp path; ``load``/``dump`` are never called.
* When a Luigi call raises (Luigi crashes half-way on a few well-typed but
  inconsistent calls), Luigi's state is rolled back to before the call: the
  client saw an error either way, and the core is expected to refuse the call
  without changing state.

Deliberate deviations of the core (documented in ``shard/scheduler.py``),
each accepted here exactly and only where it applies:

* D1 ``Worker.get_tasks``: Luigi walks either the status index or, when the
  worker has fewer tasks than the index, ``worker.tasks`` -- a set of Task
  objects (arbitrary order) that also keeps tasks already pruned, which Luigi
  then counts as pending and can even hand out.  The core always takes live
  tasks in status-entry order.  The harness makes Luigi take its first branch
  always (same tasks, one of Luigi's orders, no pruned objects).
* D2 ``decrease_running_task_resources`` on a RUNNING task that never got
  ``resources_running``: Luigi raises AttributeError without changing
  anything, the core returns None without changing anything.
* D3 ``count_pending`` leaves out PENDING tasks whose upstream is disabled;
  the core computes the exact set, Luigi a memoised DFS whose answer depends
  on the walk order when a dependency cycle or an UNKNOWN task with deps
  exists.  Only then, ``count_pending``'s three counters are checked against
  that exact set (computed here from Luigi's state) instead of Luigi's answer,
  and inside ``get_work``'s reply (computed before the task is handed out)
  they are not compared.
* D4 calls Luigi crashes on half-way (e.g. ``add_task(status=RUNNING,
  batch_id=<no BATCH_RUNNING member>)``): the core refuses them up front;
  Luigi is rolled back (see above) and both must raise.

Normalizations (places where Luigi's answer is arbitrary, not where the core
merely differs):

* ``deps`` lists inside serialized tasks come from a ``set`` -> sorted.
* ``running_tasks`` of ``count_pending``/``get_work`` iterate ``worker.tasks``
  (a set of objects) in one branch -> sorted by task id.
* message ids are ``uuid4`` -> the core's ids are mapped to Luigi's by the
  order the two sides issued them (a bijection is required).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import inspect
import json
import math
import os
import tempfile
import types
from collections.abc import Callable, Iterable, Iterator, MutableSet
from dataclasses import dataclass, field
from typing import Any

import luigi.scheduler as lsched
from luigi.metrics import MetricsCollectors

from federation.config import SchedulerConfig

T0 = 1_000_000.0  # a realistic epoch: Luigi tests truthiness of timestamps (``if task.remove``)

STATUSES = ("PENDING", "RUNNING", "DONE", "FAILED", "DISABLED", "UNKNOWN", "BATCH_RUNNING")
UPSTREAM_STATUSES = ("UPSTREAM_RUNNING", "UPSTREAM_MISSING_INPUT", "UPSTREAM_FAILED", "UPSTREAM_DISABLED")

#: ``@rpc_method``s that take or return Python objects and cannot be called over the wire
NOT_WIRE_CALLABLE = frozenset({"update_metrics_task_started"})

_LUIGI_CONFIG_KEYS = (
    "retry_delay",
    "remove_delay",
    "worker_disconnect_delay",
    "state_path",
    "batch_emails",
    "disable_window",
    "retry_count",
    "disable_hard_timeout",
    "disable_persist",
    "max_shown_tasks",
    "max_graph_nodes",
    "record_task_history",
    "prune_on_get_work",
    "pause_enabled",
    "send_messages",
    "metrics_collector",
    "metrics_custom_import",
    "stable_done_cooldown_secs",
)


#: methods whose Luigi implementation may raise after it changed state (copied first, to roll back)
CAN_CRASH_AFTER_CHANGES = frozenset({"add_task", "get_work", "decrease_running_task_resources"})


class HarnessError(Exception):
    """The harness itself cannot continue (not a core/Luigi difference)."""


class FakeClock:
    """A clock both schedulers read: callable for the core, ``.time()`` for Luigi."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, now: float) -> None:
        self.now = now


class InsertionOrderedSet(MutableSet):
    """A ``set`` replacement that iterates in insertion order (see module docstring)."""

    def __init__(self, iterable: Iterable[Any] = ()) -> None:
        self._d: dict[Any, None] = dict.fromkeys(iterable)

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> InsertionOrderedSet:
        return cls(it)

    def __contains__(self, x: object) -> bool:
        return x in self._d

    def __iter__(self) -> Iterator[Any]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def add(self, value: Any) -> None:
        self._d[value] = None

    def discard(self, value: Any) -> None:
        self._d.pop(value, None)

    def update(self, *iterables: Iterable[Any]) -> None:
        for it in iterables:
            for v in it:
                self._d[v] = None

    def difference_update(self, *iterables: Iterable[Any]) -> None:
        for it in iterables:
            for v in list(it):
                self._d.pop(v, None)

    def clear(self) -> None:
        self._d.clear()

    def copy(self) -> InsertionOrderedSet:
        return InsertionOrderedSet(self._d)

    def __repr__(self) -> str:
        return f"{{{', '.join(map(repr, self._d))}}}"

    __hash__ = None  # type: ignore[assignment]


class _NoConfig:
    def getintdict(self, section: str) -> dict[str, int]:
        return {}


@dataclass
class EmailRecorder:
    """Stands in for ``luigi.notifications`` inside ``luigi.scheduler``."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def send_error_email(self, subject: str, message: str, additional_recipients: Any = None) -> None:
        self.sent.append((subject, message))


_MISSING = object()


#: how Luigi's sets iterate during the comparison: "insertion" (deterministic, see the module
#: docstring) or "builtin" (Luigi untouched: hash order for strings, address order for objects)
LUIGI_SETS = os.environ.get("FED_DIFF_LUIGI_SETS", "insertion")


def _get_tasks_live_in_status_order(self: Any, state: Any, *statuses: str) -> Iterator[Any]:
    """``Worker.get_tasks`` as Luigi computes it when the worker has many tasks (deviation D1)."""
    return filter(lambda task: self.id in task.workers, state.get_active_tasks_by_status(*statuses))


@contextlib.contextmanager
def luigi_patched(clock: FakeClock, emails: EmailRecorder) -> Iterator[None]:
    """Run Luigi's scheduler code under the fake clock and deterministic sets."""
    saved_get_tasks = lsched.Worker.get_tasks
    lsched.Worker.get_tasks = _get_tasks_live_in_status_order  # type: ignore[method-assign]
    patches = {
        "time": clock,
        "set": InsertionOrderedSet if LUIGI_SETS == "insertion" else set,
        "notifications": emails,
        "configuration": types.SimpleNamespace(get_config=lambda *a, **k: _NoConfig()),
    }
    saved = {name: lsched.__dict__.get(name, _MISSING) for name in patches}
    for name, value in patches.items():
        setattr(lsched, name, value)
    try:
        yield
    finally:
        lsched.Worker.get_tasks = saved_get_tasks  # type: ignore[method-assign]
        for name, value in saved.items():
            if value is _MISSING:
                delattr(lsched, name)
            else:
                setattr(lsched, name, value)


def luigi_config_kwargs(cfg: SchedulerConfig) -> dict[str, Any]:
    """All ``[scheduler]`` keys, explicitly, so Luigi's Config never consults a config file."""
    kw = {k: getattr(cfg, k) for k in _LUIGI_CONFIG_KEYS}
    kw["metrics_collector"] = MetricsCollectors[cfg.metrics_collector]
    kw["state_path"] = os.path.join(tempfile.gettempdir(), "fed-diff-luigi-state-never-written.pickle")
    return kw


def make_config(**overrides: Any) -> SchedulerConfig:
    """A config for both sides; defaults are small so the timed paths are reached."""
    base: dict[str, Any] = dict(
        retry_delay=5.0,
        remove_delay=8.0,
        worker_disconnect_delay=6.0,
        disable_window=10,
        retry_count=3,
        disable_hard_timeout=40,
        disable_persist=20,
        stable_done_cooldown_secs=3,
    )
    base.update(overrides)
    return SchedulerConfig(**base)


def wire(value: Any) -> Any:
    """What a client sees: the value after a JSON round trip."""
    return json.loads(json.dumps(value))


@dataclass
class Outcome:
    value: Any = None
    error: str | None = None  # exception type and message when the call raised

    def show(self) -> str:
        return f"raised {self.error}" if self.error is not None else json.dumps(self.value, sort_keys=False)


class LuigiSide:
    """Luigi 3.8.1's ``Scheduler``, driven under the fake clock."""

    def __init__(self, cfg: SchedulerConfig, clock: FakeClock) -> None:
        self.clock = clock
        self.emails = EmailRecorder()
        with luigi_patched(clock, self.emails):
            lcfg = lsched.scheduler(**luigi_config_kwargs(cfg))
            self.sch = lsched.Scheduler(config=lcfg, resources=dict(cfg.resources) or None)
            self.sch._resources = dict(cfg.resources)

    def raw_call(self, method: str, kwargs: dict[str, Any]) -> Any:
        """Call Luigi; if it raises, roll its state back first (see module docstring)."""
        saved = None
        if method in CAN_CRASH_AFTER_CHANGES:
            saved = (copy.deepcopy((self.sch._state, self.sch._resources)), self.sch._paused)
        try:
            with luigi_patched(self.clock, self.emails):
                return getattr(self.sch, method)(**kwargs)
        except Exception as e:
            if saved is None:
                raise HarnessError(
                    f"luigi raised in {method}({kwargs}), which the harness cannot roll back: {e!r}"
                ) from e
            (self.sch._state, self.sch._resources), self.sch._paused = saved
            raise

    def call(self, method: str, kwargs: dict[str, Any]) -> Outcome:
        try:
            return Outcome(value=wire(self.raw_call(method, kwargs)))
        except HarnessError:
            raise
        except Exception as e:
            return Outcome(error=f"{type(e).__name__}: {e}")

    def clone(self) -> LuigiSide:
        other = copy.copy(self)
        other.sch = copy.copy(self.sch)
        other.sch._state, other.sch._resources = copy.deepcopy((self.sch._state, self.sch._resources))
        return other

    # introspection for the generators (read-only)
    def worker_ids(self) -> list[str]:
        return list(self.sch._state._active_workers)

    def task_ids(self) -> list[str]:
        return list(self.sch._state._tasks)

    def tasks(self) -> list[Any]:
        return list(self.sch._state._tasks.values())

    def batch_ids(self) -> list[str]:
        return sorted({t.batch_id for t in self.sch._state._tasks.values() if t.batch_id is not None})


class LuigiAsCore:
    """A second Luigi wearing the core's interface, to check the harness itself (Luigi vs Luigi)."""

    def __init__(
        self, config: SchedulerConfig | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        assert isinstance(clock, FakeClock)
        self._side = LuigiSide(config or SchedulerConfig(), clock)

    def __getattr__(self, name: str) -> Any:
        if name not in lsched.RPC_METHODS:
            raise AttributeError(name)
        return lambda **kwargs: self._side.raw_call(name, kwargs)


# --------------------------------------------------------------------------- normalization


def _sort_deps(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _sort_deps(v) for k, v in value.items()}
        if isinstance(out.get("deps"), list) and all(isinstance(d, str) for d in out["deps"]):
            out["deps"] = sorted(out["deps"])
        return out
    if isinstance(value, list):
        return [_sort_deps(v) for v in value]
    return value


def normalize(method: str, value: Any) -> Any:
    """Remove the arbitrariness Luigi itself has (see module docstring)."""
    value = _sort_deps(value)
    if method in ("count_pending", "get_work") and isinstance(value, dict):
        rt = value.get("running_tasks")
        if isinstance(rt, list) and all(isinstance(r, dict) for r in rt):
            value["running_tasks"] = sorted(rt, key=lambda r: (str(r.get("task_id")), str(r.get("worker"))))
    return value


def first_difference(a: Any, b: Any, path: str = "$", check_order: bool = True) -> str | None:
    """Where two JSON values differ (dict key order included when ``check_order``), or None."""
    if type(a) is not type(b) and not (_is_num(a) and _is_num(b)):
        return f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path}: keys only in luigi {sorted(set(a) - set(b))}, only in core {sorted(set(b) - set(a))}"
        for k in a:
            d = first_difference(a[k], b[k], f"{path}.{k}", check_order)
            if d:
                return d
        if check_order and list(a) != list(b):
            return f"{path}: key order luigi {list(a)} != core {list(b)}"
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{path}[{i}]", check_order)
            if d:
                return d
        return None
    if _is_num(a):
        # JSON shows 1 and 1.0 differently, and true is not 1
        if type(a) is type(b) and (a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))):
            return None
        return f"{path}: {a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})"
    return None if a == b else f"{path}: {a!r} != {b!r}"


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float)


def upstream_walk_is_order_dependent(luigi: LuigiSide) -> bool:
    """True when Luigi's upstream-status DFS may depend on walk order (deviation D3)."""
    tasks = luigi.sch._state._tasks
    if any(t.status == "UNKNOWN" and t.deps for t in tasks.values()):
        return True
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def has_cycle(root: str) -> bool:
        stack = [(root, iter(tasks[root].deps))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            for dep in it:
                if dep not in tasks:
                    continue
                if state.get(dep) == 1:
                    return True
                if dep not in state:
                    state[dep] = 1
                    stack.append((dep, iter(tasks[dep].deps)))
                    break
            else:
                state[node] = 2
                stack.pop()
        return False

    return any(tid not in state and has_cycle(tid) for tid in tasks)


def exact_pending_counters(luigi: LuigiSide, worker: str) -> tuple[int, int, int]:
    """``count_pending``'s counters with the exact upstream-disabled set (the core's D3 semantics).

    A PENDING task is left out when one of its existing deps is DISABLED or is
    itself a PENDING task left out (the fixpoint of Luigi's rule on a DAG).
    """
    tasks = luigi.sch._state._tasks
    left_out: set[str] = set()
    changed = True
    while changed:
        changed = False
        for t in tasks.values():
            if t.status == "PENDING" and t.id not in left_out:
                if any(d in tasks and (tasks[d].status == "DISABLED" or d in left_out) for d in t.deps):
                    left_out.add(t.id)
                    changed = True
    mine = [
        t
        for t in tasks.values()
        if t.status in ("PENDING", "FAILED") and worker in t.workers and t.id not in left_out
    ]
    return (
        len(mine),
        sum(len(t.workers) == 1 for t in mine),
        sum(list(t.workers)[-1] == worker for t in mine),
    )


# --------------------------------------------------------------------------- the driver


class Mismatch(AssertionError):
    """Luigi and the core answered differently; the message carries a replayable call log."""


class MessageIds:
    """The bijection between the core's and Luigi's scheduler-message ids."""

    def __init__(self) -> None:
        self.luigi: list[str] = []
        self.core_to_luigi: dict[str, str] = {}
        self.luigi_to_core: dict[str, str] = {}

    def learn(self, luigi_id: Any, core_id: Any) -> str | None:
        if luigi_id is None and core_id is None:
            return None
        if not isinstance(luigi_id, str) or not isinstance(core_id, str):
            return f"message ids: luigi {luigi_id!r}, core {core_id!r}"
        if core_id in self.core_to_luigi or luigi_id in self.luigi_to_core:
            return f"message id reused: luigi {luigi_id!r}, core {core_id!r}"
        self.core_to_luigi[core_id] = luigi_id
        self.luigi_to_core[luigi_id] = core_id
        self.luigi.append(luigi_id)
        return None

    def core_value_in_luigi_terms(self, method: str, value: Any) -> Any:
        """Rewrite the core's message ids into Luigi's, for comparison."""
        if method == "ping" and isinstance(value, dict):
            for msg in value.get("rpc_messages") or []:
                kw = msg.get("kwargs") if isinstance(msg, dict) else None
                if isinstance(kw, dict) and kw.get("message_id") in self.core_to_luigi:
                    kw["message_id"] = self.core_to_luigi[kw["message_id"]]
        return value


def _fmt_call(method: str, kwargs: dict[str, Any]) -> str:
    return f"{method}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


class Differential:
    """Drives Luigi and a core with the same calls; every answer must match.

    ``make_core(config, clock)`` builds the core (``SchedulerCore`` or
    :class:`LuigiAsCore`).  ``check_changes`` verifies after every call that
    ``collect_changes()`` covers every task/worker record that changed in the
    core's ``snapshot()``.
    """

    def __init__(
        self,
        cfg: SchedulerConfig,
        make_core: Callable[..., Any],
        *,
        clock: FakeClock | None = None,
        check_changes: bool = True,
        check_order: bool = True,
    ) -> None:
        self.cfg = cfg
        self.clock = clock or FakeClock()
        self.make_core = make_core
        self.luigi = LuigiSide(cfg, self.clock)
        self.core = make_core(config=cfg, clock=self.clock)
        self.msg = MessageIds()
        self.check_order = check_order
        self.log: list[str] = [f"# config: {cfg!r}", f"clock.set({self.clock.now!r})"]
        self.calls = 0
        self.broken = False  # set once a mismatch was reported
        self.deviations: collections.Counter[str] = collections.Counter()  # accepted deviations seen
        #: seconds the clock moves before every call (0: calls of one step share a timestamp)
        self.auto_tick = 0.0
        self.check_changes = (
            check_changes and hasattr(self.core, "collect_changes") and hasattr(self.core, "snapshot")
        )
        self._prev_snapshot: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None = None
        if self.check_changes:
            self.core.collect_changes()  # whatever construction produced
            self._prev_snapshot = self._snapshot_maps(self.core)

    # ---- time
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.log.append(f"clock.advance({seconds!r})  # now {self.clock.now!r}")

    def set_time(self, now: float) -> None:
        self.clock.set(now)
        self.log.append(f"clock.set({now!r})")

    def _tick(self) -> None:
        if self.auto_tick:
            self.clock.advance(self.auto_tick)
            self.log.append(f"clock.advance({self.auto_tick!r})  # now {self.clock.now!r}")

    # ---- calls
    def call(self, method: str, /, **kwargs: Any) -> Any:
        """Call both sides; raise :class:`Mismatch` unless they agree. Returns Luigi's (wire) answer."""
        self.calls += 1
        self._tick()
        self.log.append(_fmt_call(method, kwargs))
        luigi_kwargs = wire(kwargs)
        core_kwargs = wire(kwargs)
        if method in ("add_scheduler_message_response", "get_scheduler_message_response"):
            mid = core_kwargs.get("message_id")
            core_kwargs["message_id"] = self.msg.luigi_to_core.get(mid, mid)
        lo = self.luigi.call(method, luigi_kwargs)
        co = self._core_call(self.core, method, core_kwargs)
        self._compare(method, kwargs, lo, co)
        if self.check_changes:
            self._verify_changes()
        return lo.value

    def _core_call(self, core: Any, method: str, kwargs: dict[str, Any]) -> Outcome:
        try:
            result = getattr(core, method)(**kwargs)
        except Exception as e:
            return Outcome(error=f"{type(e).__name__}: {e}")
        try:
            return Outcome(value=wire(result))
        except (TypeError, ValueError) as e:
            return Outcome(error=f"answer not JSON-serializable: {e}: {result!r}")

    def _compare(
        self,
        method: str,
        kwargs: dict[str, Any],
        lo: Outcome,
        co: Outcome,
        who: str = "core",
        luigi: LuigiSide | None = None,
    ) -> None:
        if lo.error is not None or co.error is not None:
            if lo.error is not None and co.error is not None:
                self.deviations[f"D4 both raised in {method} (luigi {lo.error.split(':')[0]})"] += 1
                return
            if (  # D2
                method == "decrease_running_task_resources"
                and lo.error is not None
                and lo.error.startswith("AttributeError")
                and "resources_running" in lo.error
                and co.error is None
                and co.value is None
            ):
                self.deviations["D2"] += 1
                return
            self.fail(f"{_fmt_call(method, kwargs)}: luigi {lo.show()} / {who} {co.show()}")
        lv = normalize(method, lo.value)
        cv = normalize(method, co.value)
        if (  # D3
            method in ("count_pending", "get_work")
            and isinstance(lv, dict)
            and isinstance(cv, dict)
            and upstream_walk_is_order_dependent(luigi or self.luigi)
        ):
            counters = ("n_pending_tasks", "n_unique_pending", "n_pending_last_scheduled")
            if any(lv.get(k) != cv.get(k) for k in counters):
                self.deviations["D3"] += 1
                if method == "count_pending":  # no state change: check the core's documented semantics
                    expected = exact_pending_counters(luigi or self.luigi, kwargs["worker"])
                    got = tuple(cv.get(k) for k in counters)
                    if got != expected:
                        self.fail(
                            f"{_fmt_call(method, kwargs)}: D3 applies, but the core's counters {got} are not "
                            f"the exact upstream-disabled exclusion {expected} (luigi's DFS: "
                            f"{tuple(lv.get(k) for k in counters)})"
                        )
            lv = {k: v for k, v in lv.items() if k not in counters}
            cv = {k: v for k, v in cv.items() if k not in counters}
        if method == "send_scheduler_message" and isinstance(lv, dict) and isinstance(cv, dict):
            problem = self.msg.learn(lv.get("message_id"), cv.get("message_id"))
            if problem:
                self.fail(f"{_fmt_call(method, kwargs)}: {problem}")
            cv = dict(cv, message_id=lv.get("message_id"))
        cv = self.msg.core_value_in_luigi_terms(method, cv)
        diff = first_difference(lv, cv, check_order=self.check_order)
        if diff:
            self.fail(
                f"{_fmt_call(method, kwargs)}\n  differs at {diff}\n  luigi: {json.dumps(lv)}\n  {who}: {json.dumps(cv)}"
            )

    def fail(self, what: str) -> None:
        self.broken = True
        tail = "\n".join(self.log[-400:])
        raise Mismatch(f"{what}\n--- call log (replay against both) ---\n{tail}")

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name not in lsched.RPC_METHODS:
            raise AttributeError(name)
        return lambda **kwargs: self.call(name, **kwargs)

    # ---- observation
    def observation_calls(
        self, luigi: LuigiSide | None = None, extra_task_ids: Iterable[str] = ()
    ) -> list[tuple[str, dict[str, Any]]]:
        """Reads that together show the whole observable state (several prune)."""
        luigi = luigi or self.luigi
        ids = sorted(set(luigi.task_ids()) | set(extra_task_ids))
        calls: list[tuple[str, dict[str, Any]]] = [
            ("worker_list", {}),
            ("worker_list", {"include_running": False}),
        ]
        for s in ("", *STATUSES):
            calls.append(("task_list", {"status": s, "upstream_status": ""}))
        for u in UPSTREAM_STATUSES:
            calls.append(("task_list", {"status": "PENDING", "upstream_status": u}))
        calls += [
            ("task_list", {"status": "", "upstream_status": "UPSTREAM_FAILED"}),
            ("task_list", {"status": "", "upstream_status": "", "limit": False}),
            ("task_list", {"status": "", "upstream_status": "", "max_shown_tasks": 2}),
            ("task_list", {"status": "PENDING", "upstream_status": "", "search": "a"}),
            ("task_list", {"status": "", "upstream_status": "", "search": "Fam A=1"}),
            ("task_list", {"status": "", "upstream_status": "", "search": ""}),
            ("task_search", {"task_str": "A"}),
            ("task_search", {"task_str": "_"}),
            ("resource_list", {}),
            ("graph", {}),
            ("is_paused", {}),
            ("is_pause_enabled", {}),
            ("has_task_history", {}),
        ]
        for t in ids:
            calls += [
                ("dep_graph", {"task_id": t}),
                ("dep_graph", {"task_id": t, "include_done": False}),
                ("inverse_dep_graph", {"task_id": t}),
                ("inverse_dep_graph", {"task_id": t, "include_done": False}),
            ]
        calls += self.cheap_calls(luigi, ids)
        return calls

    def cheap_calls(
        self, luigi: LuigiSide | None = None, task_ids: Iterable[str] | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """Reads that do not prune (safe to run after every step)."""
        luigi = luigi or self.luigi
        ids = sorted(luigi.task_ids()) if task_ids is None else list(task_ids)
        calls: list[tuple[str, dict[str, Any]]] = [
            ("count_pending", {"worker": w}) for w in luigi.worker_ids()
        ]
        for t in ids:
            calls += [
                ("fetch_error", {"task_id": t}),
                ("get_task_status_message", {"task_id": t}),
                ("get_task_progress_percentage", {"task_id": t}),
                ("get_running_task_resources", {"task_id": t}),
            ]
        calls.append(("is_paused", {}))
        return calls

    def observe(self, full: bool = True) -> None:
        """Compare the observable state of both sides (the reads are real calls on both)."""
        self.log.append("observe()" if full else "observe(full=False)")
        calls = self.observation_calls() if full else self.cheap_calls()
        for method, kwargs in calls:
            lo = self.luigi.call(method, wire(kwargs))
            co = self._core_call(self.core, method, wire(kwargs))
            try:
                self._compare(method, kwargs, lo, co)
            except Mismatch as e:
                raise Mismatch(f"[observation {_fmt_call(method, kwargs)}] {e}") from None
        if self.check_changes:
            self._verify_changes()

    # ---- persistence round trip
    def check_roundtrip(self, continue_on_restored: bool = True) -> None:
        """A fresh core restored from ``snapshot()`` must be the same scheduler.

        Three checks: the restored core's own snapshot has the same records;
        the full observation on it equals the one on a copy of Luigi (neither
        the core nor Luigi is touched by these reads); and, with
        ``continue_on_restored``, the restored core replaces the core, so every
        later call also tests the state that is not visible right away
        (failure history, retry policies, removal timers, stakeholders...).
        """
        snap = self.core.snapshot()
        before = self._snapshot_maps(self.core)
        fresh = self.make_core(config=self.cfg, clock=self.clock)
        fresh.restore(snap)
        after = self._snapshot_maps(fresh)
        for kind, a, b in zip(("tasks", "workers", "meta"), before, after, strict=True):
            if a != b:
                diff = first_difference(a, b, check_order=False)
                self.fail(f"[round trip] snapshot of the restored core differs in {kind}: {diff}")
        lcopy = self.luigi.clone()
        for method, kwargs in self.observation_calls(lcopy):
            lo = lcopy.call(method, wire(kwargs))
            co = self._core_call(fresh, method, wire(kwargs))
            try:
                self._compare(method, kwargs, lo, co, who="restored core", luigi=lcopy)
            except Mismatch as e:
                raise Mismatch(
                    f"[round trip: core.restore(core.snapshot()) then {_fmt_call(method, kwargs)}] {e}"
                ) from None
        if continue_on_restored:
            self.core = self.make_core(config=self.cfg, clock=self.clock)
            self.core.restore(snap)
            self.log.append("core = SchedulerCore(...); core.restore(old_core.snapshot())")
            if self.check_changes:
                self.core.collect_changes()  # whatever restore() marked is already stored
                self._prev_snapshot = self._snapshot_maps(self.core)

    # ---- collect_changes
    @staticmethod
    def _snapshot_maps(core: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        snap = core.snapshot()
        tasks = {r["task_id"]: wire(r) for r in snap.tasks}
        workers = {r["worker_id"]: wire(r) for r in snap.workers}
        return tasks, workers, wire(snap.meta)

    def _verify_changes(self) -> None:
        assert self._prev_snapshot is not None
        changes = self.core.collect_changes()
        cur = self._snapshot_maps(self.core)
        prev_tasks, prev_workers, prev_meta = self._prev_snapshot
        tasks, workers, meta = cur
        problems: list[str] = []
        for kind, prev, now, upserts, deleted in (
            ("task", prev_tasks, tasks, changes.tasks, changes.deleted_tasks),
            ("worker", prev_workers, workers, changes.workers, changes.deleted_workers),
        ):
            for key, rec in now.items():
                if prev.get(key) != rec:
                    if key not in upserts:
                        problems.append(
                            f"{kind} {key!r} changed but is not in collect_changes(): {prev.get(key)} -> {rec}"
                        )
                    elif wire(upserts[key]) != rec:
                        problems.append(
                            f"{kind} {key!r}: change record {wire(upserts[key])} != snapshot {rec}"
                        )
                elif key in upserts and wire(upserts[key]) != rec:
                    problems.append(f"{kind} {key!r}: change record {wire(upserts[key])} != snapshot {rec}")
            for key in prev:
                if key not in now and key not in deleted:
                    problems.append(f"{kind} {key!r} vanished from the snapshot but is not in deleted")
            for key in deleted:
                if key in now:
                    problems.append(f"{kind} {key!r} reported deleted but still in the snapshot")
            for key in upserts:
                if key not in now:
                    problems.append(f"{kind} {key!r} upserted but not in the snapshot")
        for key, value in meta.items():
            if prev_meta.get(key) != value and wire(changes.meta.get(key, _MISSING_META)) != value:
                problems.append(
                    f"meta {key!r} changed but collect_changes().meta has {changes.meta.get(key, '(nothing)')!r}"
                )
        self._prev_snapshot = cur
        if problems:
            self.fail("collect_changes() does not match the snapshot:\n  " + "\n  ".join(problems[:10]))


_MISSING_META = "\x00missing"


def signature_differences(core_cls: type) -> list[str]:
    """Every wire-callable ``@rpc_method`` must exist on the core with Luigi's parameters and defaults."""
    problems = []
    for name in sorted(lsched.RPC_METHODS):
        luigi_fn = getattr(lsched.Scheduler, name)
        core_fn = getattr(core_cls, name, None)
        if core_fn is None:
            problems.append(f"{name}: missing")
            continue
        lp = list(inspect.signature(luigi_fn).parameters.values())[1:]
        cp = list(inspect.signature(core_fn).parameters.values())[1:]
        ls = [(p.name, p.kind, _default(p.default)) for p in lp]
        cs = [(p.name, p.kind, _default(p.default)) for p in cp]
        if ls != cs:
            problems.append(f"{name}: luigi {ls} != core {cs}")
    return problems


def _default(d: Any) -> Any:
    if d is inspect.Parameter.empty:
        return "<required>"
    if isinstance(d, float) and math.isinf(d):
        return "inf"
    return d
