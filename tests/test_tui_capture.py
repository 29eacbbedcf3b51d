"""A deterministic capture of a small federation for the TUI tests, and tests of the replay/record seam.

``build_capture()`` writes what a router would have answered on three
refreshes, two seconds apart: a week of the daily pipeline over five topics
on shards s0/s1 (default group), the ledger of ``finance.ledger`` on fin-0,
a weekly report, per-date batches; a new failure appears in the second
frame and shard s1 is down in the third.  The answers follow Luigi 3.8.1's
shapes (``_serialize_task``, ``task_list``'s ``{"num_tasks": N}``,
``dep_graph`` with ``deps``) and the ``federation_health`` contract.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from luigi.task import task_id_str

from federation.errors import FederationError, RequestTimeout, UnknownMethodError
from tui.config import TuiConfig, load_tui_config
from tui.model import STATUSES, TaskQuery
from tui.poller import ACTIONS, OwnerLookup, Poller, Wants, fetch_detail, fetch_tasks, run_action
from tui.source import CAPTURE_FORMAT, NotRecorded, RecordingSource, ReplaySource, open_source

T0 = 1795168800.0  # 2026-11-20 10:00:00 UTC
ROUTER = "tcp://127.0.0.1:5555"
TOPICS = ("orders", "clicks", "payments", "users", "stock")
DATES = tuple(f"2026-11-{d}" for d in range(14, 21))
STAGES = ("Extract", "Transform", "Enrich", "Load")
WORKERS = (
    "Worker(salt=418276311, workers=4, host=etl-01, username=etl, pid=4242)",
    "Worker(salt=902113876, workers=4, host=etl-02, username=etl, pid=5150)",
    "Worker(salt=133700042, workers=1, host=fin-batch, username=ledger, pid=777)",
)
SEARCHES = (None, "daily.", "finance.ledger.", "reports.", "daily.Load(", "daily.Extract(")
TRACEBACK = """Traceback (most recent call last):
  File "luigi/worker.py", line 210, in run
    new_deps = self._run_get_new_deps()
  File "examples/daily.py", line 61, in run
    rows = fetch(self.topic, self.date)
ConnectionError: source api.payments.example answered 503 after 3 attempts"""


class Task:
    def __init__(self, family: str, params: dict[str, str], deps: list[Task]) -> None:
        self.family, self.params, self.deps = family, params, deps
        self.id = task_id_str(family, params)
        self.display_name = f"{family}({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})"
        self.shard = (
            "fin-0"
            if family.startswith("finance.")
            else ("s0" if int(hashlib.md5(self.id.encode()).hexdigest(), 16) % 2 == 0 else "s1")
        )
        self.namespace = family.rpartition(".")[0]


def build_tasks() -> list[Task]:
    tasks: list[Task] = []
    loads: dict[tuple[str, str], Task] = {}
    for date in DATES:
        for topic in TOPICS:
            prev: list[Task] = []
            for stage in STAGES:
                t = Task(f"daily.{stage}", {"date": date, "topic": topic}, prev)
                tasks.append(t)
                prev = [t]
            loads[(date, topic)] = prev[0]
        tasks.append(Task("finance.ledger.Post", {"date": date}, [loads[(date, "payments")]]))
        tasks.append(Task("DailyBatch", {"date": date}, [loads[(date, t)] for t in TOPICS]))
    tasks.append(Task("reports.Weekly", {"week": "2026-W47"}, [loads[(d, "orders")] for d in DATES]))
    return tasks


def status_in_frame(t: Task, frame: int) -> str:
    date = t.params.get("date", "")
    topic = t.params.get("topic", "")
    stage = t.family.rpartition(".")[2]
    if t.family == "reports.Weekly":
        return "PENDING"
    if date <= "2026-11-18":
        return "DONE"
    if t.family == "daily.Extract" and date == "2026-11-20" and topic == "stock":
        return "DISABLED"
    if t.family == "daily.Extract" and date == "2026-11-20" and topic == "payments":
        return "FAILED"
    if date == "2026-11-19":
        if stage in ("Extract", "Transform"):
            return "DONE"
        if stage == "Enrich" and topic in ("orders", "clicks"):
            return "DONE" if frame >= 1 and topic == "orders" else "RUNNING"
        if stage == "Load" and topic == "orders" and frame >= 1:
            return "RUNNING"
        return "PENDING"
    if stage == "Extract" and topic == "orders":
        return "DONE" if frame >= 1 else "RUNNING"
    if stage == "Extract" and topic == "clicks":
        return "DONE"
    if stage == "Transform" and topic == "clicks" and frame >= 1:
        return "FAILED"
    return "PENDING"


def serialize(t: Task, status: str, frame: int, with_deps: bool) -> dict[str, Any]:
    worker = WORKERS[2] if t.family.startswith("finance") else WORKERS[hash_index(t.id, 2)]
    start = T0 - 86400 + DATES.index(t.params["date"]) * 3600 if "date" in t.params else T0 - 7200
    updated = (
        start
        if status in ("PENDING", "UNKNOWN")
        else T0 - 600 + (DATES.index(t.params.get("date", DATES[0])) * 37 + hash_index(t.id, 90))
    )
    if status in ("RUNNING", "FAILED") and t.params.get("date") == "2026-11-20":
        updated = T0 - 30 + 2 * frame
    d: dict[str, Any] = {
        "display_name": t.display_name,
        "status": status,
        "workers": [worker] if status != "DONE" else [],
        # Luigi clears worker_running only when a task goes back to PENDING: a FAILED one keeps it
        "worker_running": worker if status in ("RUNNING", "FAILED") else None,
        "time_running": updated if status == "RUNNING" else None,
        "start_time": start,
        "last_updated": updated,
        "params": dict(t.params),
        "name": t.family,
        "priority": 10 if t.family.startswith("finance") else 0,
        "resources": {"db": 1} if t.family == "daily.Load" else {},
        "resources_running": {"db": 1} if t.family == "daily.Load" and status == "RUNNING" else None,
        "tracking_url": None,
        "status_message": "enriching 41,200 of 80,000 rows"
        if status == "RUNNING" and "Enrich" in t.family
        else None,
        "progress_percentage": 51 if status == "RUNNING" and "Enrich" in t.family else None,
    }
    if status == "DISABLED":
        d["re_enable_able"] = True
    if status == "RUNNING":
        d["accepts_messages"] = False
    if with_deps:
        d["deps"] = sorted(x.id for x in t.deps)
    return d


def hash_index(s: str, n: int) -> int:
    return int(hashlib.md5(s.encode()).hexdigest()[:8], 16) % n


def frame_calls(tasks: list[Task], frame: int, down: set[str]) -> list[dict[str, Any]]:
    statuses = {t.id: status_in_frame(t, frame) for t in tasks}
    by_id = {t.id: t for t in tasks}
    visible = [t for t in tasks if t.shard not in down]
    calls: list[dict[str, Any]] = []

    def add(
        method: str, kwargs: dict[str, Any], result: Any = None, error: dict[str, str] | None = None
    ) -> None:
        entry: dict[str, Any] = {"method": method, "kwargs": kwargs, "elapsed_ms": 1.0}
        if error is not None:
            entry["error"] = error
        else:
            entry["result"] = result
        calls.append(entry)

    shards = []
    groups = {"default": ["s0", "s1"], "finance": ["fin-0"]}
    for sid, group, port in (("s0", "default", 5701), ("s1", "default", 5702), ("fin-0", "finance", 5703)):
        mine = [t for t in tasks if t.shard == sid]
        up = sid not in down
        counts: dict[str, int] = {}
        namespaces: dict[str, dict[str, int]] = {}
        for t in mine if up else []:
            s = statuses[t.id]
            counts[s] = counts.get(s, 0) + 1
            ns = namespaces.setdefault(t.namespace, {})
            ns[s] = ns.get(s, 0) + 1
        shards.append(
            {
                "shard_id": sid,
                "group": group,
                "endpoint": f"tcp://127.0.0.1:{port}",
                "up": up,
                "latency_ms": (0.8 + 0.3 * len(calls) % 1 + {"s0": 0.4, "s1": 0.9, "fin-0": 0.6}[sid])
                if up
                else None,
                "error": None
                if up
                else f"timeout: no reply to shard_info from tcp://127.0.0.1:{port} within 1 s",
                "counts": counts,
                "namespaces": namespaces,
                "workers": (2 if sid != "fin-0" else 1) if up else 0,
                "backend": "sqlite" if up else None,
                "location": f".federation/{sid}.db" if up else None,
                "version": "0.1.0" if up else None,
                "started": T0 - 90061 if up else None,
            }
        )
    add(
        "federation_health",
        {},
        {
            "router": {"zmq": ROUTER, "http": "127.0.0.1:8082", "version": "0.1.0", "time": T0 + 2 * frame},
            "default_group": "default",
            "groups": groups,
            "shards": shards,
        },
    )

    def worker_entry(w: str, include_running: bool) -> dict[str, Any]:
        fields = dict(p.split("=", 1) for p in w[7:-1].split(", "))
        d: dict[str, Any] = {
            "name": w,
            "last_active": T0 + 2 * frame - 1 - WORKERS.index(w) * 20,
            "started": T0 - 3600 * (WORKERS.index(w) + 1),
            "state": "active",
            "first_task_display_name": "DailyBatch(date=2026-11-20)"
            if "fin" not in w
            else "finance.ledger.Post(date=2026-11-20)",
            "num_unread_rpc_messages": 0,
            "salt": fields["salt"],
            "workers": int(fields["workers"]),
            "host": fields["host"],
            "username": fields["username"],
            "pid": int(fields["pid"]),
        }
        if include_running:
            running = {
                t.id: serialize(t, "RUNNING", frame, False)
                for t in visible
                if statuses[t.id] == "RUNNING"
                and serialize(t, "RUNNING", frame, False)["worker_running"] == w
            }
            pending = [
                t
                for t in visible
                if statuses[t.id] == "PENDING" and w in serialize(t, "PENDING", frame, False)["workers"]
            ]
            d.update(
                num_running=len(running), num_pending=len(pending), num_uniques=len(pending), running=running
            )
        return d

    for include_running in (False, True):
        add(
            "worker_list",
            {"include_running": include_running},
            [worker_entry(w, include_running) for w in sorted(WORKERS, key=lambda w: -WORKERS.index(w))],
        )
    add("is_paused", {}, {"paused": False})
    add("is_pause_enabled", {}, {"enabled": True})

    for status in STATUSES:
        for search in SEARCHES:
            for max_shown in (5000, 20):
                kwargs: dict[str, Any] = {
                    "status": status,
                    "upstream_status": "",
                    "limit": True,
                    "max_shown_tasks": max_shown,
                }
                if search:
                    kwargs["search"] = search
                matching = [
                    t
                    for t in visible
                    if statuses[t.id] == status
                    and (not search or search.casefold() in t.display_name.casefold())
                ]
                if len(matching) > max_shown:
                    add("task_list", kwargs, {"num_tasks": len(matching)})
                else:
                    add("task_list", kwargs, {t.id: serialize(t, status, frame, False) for t in matching})

    reverse: dict[str, list[Task]] = {}
    for t in tasks:
        for dep in t.deps:
            reverse.setdefault(dep.id, []).append(t)

    def graph(root: Task, edges: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        queue = deque([root])
        while queue:
            t = queue.popleft()
            if t.id in out:
                continue
            d = serialize(t, statuses[t.id], frame, False)
            d["deps"] = sorted(x.id for x in edges(t))
            if t is not root:
                del d["display_name"]  # Luigi keeps it on the root only
            out[t.id] = d
            queue.extend(sorted(edges(t), key=lambda x: x.id))
        return out

    for t in tasks:
        if t.shard in down:
            err = {"code": "unavailable", "message": f"shard {t.shard} is down"}
            for m in ("dep_graph", "inverse_dep_graph"):
                add(m, {"task_id": t.id, "include_done": True}, error=err)
            for m in ("fetch_error", "get_task_status_message", "get_task_progress_percentage"):
                add(m, {"task_id": t.id}, error=err)
        else:
            add("dep_graph", {"task_id": t.id, "include_done": True}, graph(t, lambda x: x.deps))
            add(
                "inverse_dep_graph",
                {"task_id": t.id, "include_done": True},
                graph(t, lambda x: reverse.get(x.id, [])),
            )
            s = statuses[t.id]
            add(
                "fetch_error",
                {"task_id": t.id},
                {
                    "taskId": t.id,
                    # as Luigi's worker sends it (json.dumps of the traceback); the TUI decodes it
                    "error": json.dumps(TRACEBACK) if s in ("FAILED", "DISABLED") else "",
                    "displayName": t.display_name,
                    "taskParams": t.params,
                    "taskModule": "examples.daily",
                    "taskFamily": t.family,
                },
            )
            sd = serialize(t, s, frame, False)
            add("task_events", {"task_id": t.id, "limit": 500}, task_events(t, s, sd))
            add(
                "get_task_status_message",
                {"task_id": t.id},
                {"taskId": t.id, "statusMessage": sd["status_message"]},
            )
            add(
                "get_task_progress_percentage",
                {"task_id": t.id},
                {"taskId": t.id, "progressPercentage": sd["progress_percentage"]},
            )
        # the router has no owner lookup (yet): the detail shows "?" for the shard
        add("owner", {"task_id": t.id}, error={"code": "unknown_method", "message": "unknown method 'owner'"})
    _ = by_id
    return calls


def task_events(t: Task, status: str, sd: dict[str, Any]) -> dict[str, Any]:
    """The owner's ``task_events`` answer: the status changes that led to ``status``."""
    worker = WORKERS[2] if t.family.startswith("finance") else WORKERS[hash_index(t.id, 2)]
    host = worker.split("host=")[1].split(",")[0]
    updated = sd["last_updated"]

    def ev(st: str, when: float, who: str | None = worker) -> dict[str, Any]:
        return {"status": st, "worker": who, "host": host if who else None, "time": when}

    events = [ev("PENDING", sd["start_time"])]
    if status in ("RUNNING", "DONE", "FAILED"):
        events.append(ev("RUNNING", updated - (0 if status == "RUNNING" else 95)))
    if status in ("DONE", "FAILED"):
        events.append(ev(status, updated))
    if status == "DISABLED":
        events += [ev("RUNNING", updated - 400), ev("FAILED", updated - 300), ev("DISABLED", updated, None)]
    return {"task_id": t.id, "shard_id": t.shard, "events": events, "truncated": False}


def build_capture(path: Path | None = None) -> dict[str, Any]:
    """Three frames, two seconds apart; shard s1 is down in the last one."""
    tasks = build_tasks()
    frames = [
        {"time": T0 + 2 * i, "calls": frame_calls(tasks, i, {"s1"} if i == 2 else set())} for i in range(3)
    ]
    doc = {"format": CAPTURE_FORMAT, "version": 1, "router": ROUTER, "frames": frames}
    if path is not None:
        path.write_text(json.dumps(doc))
    return doc


def task_id(family: str, **params: str) -> str:
    return task_id_str(family, params)


FAILED_EXTRACT = task_id("daily.Extract", date="2026-11-20", topic="payments")
DISABLED_EXTRACT = task_id("daily.Extract", date="2026-11-20", topic="stock")


@pytest.fixture(scope="session")
def capture_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("capture") / "federation.json"
    build_capture(path)
    return path


# -- the replay source -------------------------------------------------------------------------------


def test_replay_serves_frames_in_order_and_repeats_the_last(capture_path: Path) -> None:
    source = ReplaySource(capture_path)
    seen = []
    for _ in range(5):
        with source.session(poll=True) as s:
            seen.append(s.call("federation_health", {})["router"]["time"])
            assert source.now() == seen[-1]
    assert seen == [T0, T0 + 2, T0 + 4, T0 + 4, T0 + 4]


def test_replay_matches_arguments_regardless_of_order_and_reraises_recorded_errors(
    capture_path: Path,
) -> None:
    source = ReplaySource(capture_path)
    with source.session(poll=True) as s:
        a = s.call(
            "task_list", {"status": "FAILED", "upstream_status": "", "limit": True, "max_shown_tasks": 5000}
        )
        b = s.call(
            "task_list", {"max_shown_tasks": 5000, "limit": True, "upstream_status": "", "status": "FAILED"}
        )
        assert a == b and FAILED_EXTRACT in a
        with pytest.raises(NotRecorded):
            s.call("task_list", {"status": "FAILED"})
        with pytest.raises(NotRecorded, match="changes nothing"):
            s.call("mark_as_done", {"task_id": FAILED_EXTRACT})
    for _ in range(2):
        with source.session(poll=True) as s:
            pass
    with source.session() as s:  # frame 2: s1 is down, its tasks' details are recorded as errors
        s1_task = next(t for t in build_tasks() if t.shard == "s1")
        with pytest.raises(FederationError, match="down") as info:
            s.call("fetch_error", {"task_id": s1_task.id})
        assert info.value.code == "unavailable"


def test_replay_refuses_files_that_are_not_captures(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"frames": []}')
    with pytest.raises(FederationError, match="not a luigi-federation-tui-capture"):
        ReplaySource(bad)
    bad.write_text("not json")
    with pytest.raises(FederationError, match="not a JSON capture"):
        ReplaySource(bad)
    with pytest.raises(FederationError, match="cannot read"):
        ReplaySource(tmp_path / "missing.json")


def test_recording_a_replay_gives_back_the_same_answers(capture_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    rec = RecordingSource(ReplaySource(capture_path), out)
    poller = Poller(rec, TuiConfig())
    first = [poller.poll(Wants(tasks=TaskQuery())) for _ in range(3)]
    with pytest.raises(FederationError):
        with rec.session() as s:
            s.call("nonexistent_method", {})
    again = Poller(ReplaySource(out), TuiConfig())
    second = [again.poll(Wants(tasks=TaskQuery())) for _ in range(3)]
    assert [s.totals for s in first] == [s.totals for s in second]
    assert [s.tasks.rows for s in first] == [s.tasks.rows for s in second]  # type: ignore[union-attr]
    doc = json.loads(out.read_text())
    assert len(doc["frames"]) == 3
    assert doc["frames"][-1]["calls"][-1]["error"]["code"] == "not_recorded"


# -- the poller on the capture -------------------------------------------------------------------------


def test_poll_computes_totals_deltas_rates_and_alerts(capture_path: Path) -> None:
    poller = Poller(ReplaySource(capture_path), TuiConfig())
    s0, s1, s2 = (poller.poll(Wants()) for _ in range(3))
    tasks = build_tasks()
    assert sum(s0.totals.values()) == len(tasks)  # type: ignore[union-attr]
    assert s0.totals["FAILED"] == 1 and s0.totals["DISABLED"] == 1  # type: ignore[index]
    assert s0.deltas == {} and s0.done_per_min is None
    assert s1.deltas["FAILED"] == 1 and s1.deltas["DONE"] == 2 and s1.deltas["RUNNING"] == -1
    assert s1.done_per_min == pytest.approx(60.0)  # 2 more DONE in 2 seconds
    assert {a.text for a in s1.alerts} >= {"failures rising: +1 since the last refresh"}
    assert s1.level == "warning"
    assert s2.shards_up == 2 and s2.level == "critical"
    assert not any(s2.deltas.values())  # s1 going down is not work disappearing
    assert any(a.level == "critical" and a.text.startswith("shard s1 down: timeout") for a in s2.alerts)
    ns = {n.namespace: n for n in s1.namespaces}
    assert set(ns) == {"", "daily", "finance.ledger", "reports"}
    assert ns["finance.ledger"].shards == ("fin-0",) and ns["finance.ledger"].groups == ("finance",)
    assert ns["daily"].done_per_min == pytest.approx(60.0)
    assert s1.live_workers == 3


def test_task_list_is_asked_per_status_and_overflow_is_reported(capture_path: Path) -> None:
    poller = Poller(ReplaySource(capture_path), TuiConfig(max_tasks=20))
    snap = poller.poll(Wants(tasks=TaskQuery()))
    assert snap.tasks is not None
    assert snap.tasks.overflow == {"DONE": snap.totals["DONE"], "PENDING": snap.totals["PENDING"]}  # type: ignore[index]
    listed = {r.status for r in snap.tasks.rows}
    assert listed == {"FAILED", "DISABLED", "RUNNING"}
    assert [r.status for r in snap.tasks.rows][:2] == ["FAILED", "DISABLED"]  # faults first
    narrowed = poller.poll(Wants(tasks=TaskQuery(namespace="finance.ledger")))
    assert narrowed.tasks is not None and not narrowed.tasks.overflow
    assert {r.family for r in narrowed.tasks.rows} == {"finance.ledger.Post"}
    assert len(narrowed.tasks.rows) == len(DATES)


def test_detail_has_trees_error_and_owner(capture_path: Path) -> None:
    source = ReplaySource(capture_path)
    d = fetch_detail(source, FAILED_EXTRACT, OwnerLookup())
    assert d.task is not None and d.task.status == "FAILED"
    assert "503 after 3 attempts" in (d.error or "")
    assert not d.problems
    assert d.owner is None  # the router does not say which shard owns a task
    assert set(d.upstream) == {FAILED_EXTRACT}
    load = task_id("daily.Load", date="2026-11-20", topic="payments")
    assert load in d.downstream and task_id("finance.ledger.Post", date="2026-11-20") in d.downstream


class _NoOwnerSession:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, method: str, kwargs: dict[str, Any] | None = None) -> Any:
        self.calls.append(method)
        raise UnknownMethodError(f"unknown method {method!r}")


class _OwnerSession:
    def call(self, method: str, kwargs: dict[str, Any] | None = None) -> Any:
        assert method == "owner" and kwargs
        return {"task_id": kwargs["task_id"], "shard_id": "s2"}


def test_owner_lookup_reads_the_router_answer() -> None:
    assert OwnerLookup()(_OwnerSession(), "a") == "s2"


def test_owner_lookup_gives_up_on_a_router_without_the_method() -> None:
    lookup = OwnerLookup()
    s = _NoOwnerSession()
    assert lookup(s, "a") is None and lookup(s, "b") is None
    assert s.calls == ["owner"]  # asked once, then remembered


def test_actions_on_a_replay_fail_cleanly(capture_path: Path) -> None:
    ok, text = run_action(ReplaySource(capture_path), ACTIONS["forgive"], FAILED_EXTRACT)
    assert not ok and "changes nothing" in text


def test_a_dead_router_becomes_a_critical_snapshot_not_an_exception(tmp_path: Path) -> None:
    doc = {
        "format": CAPTURE_FORMAT,
        "version": 1,
        "router": ROUTER,
        "frames": [
            {
                "time": T0,
                "calls": [
                    {
                        "method": "federation_health",
                        "kwargs": {},
                        "error": RequestTimeout("no reply within 3 s").to_wire(),
                    }
                ],
            }
        ],
    }
    snap = Poller(ReplaySource(doc), TuiConfig()).poll(Wants(tasks=TaskQuery()))
    assert not snap.router_ok and snap.level == "critical"
    assert snap.alerts[0].text.startswith("router unreachable: no reply within 3 s")
    assert snap.tasks is None  # nothing else is asked of a router that does not answer


# -- configuration and the entry point's checks ---------------------------------------------------------


def test_tui_config_reads_only_its_table_and_names_every_problem(tmp_path: Path) -> None:
    good = tmp_path / "federation.toml"
    good.write_text(
        '[router]\nzmq = "tcp://127.0.0.1:5555"\n\n[tui]\nrefresh = 5\nreadonly = true\nfailed_warn = 0\n'
    )
    cfg = load_tui_config(str(good))
    assert cfg.refresh == 5.0 and cfg.readonly and cfg.failed_warn == 0 and cfg.max_tasks == 5000
    assert cfg.replace(refresh=None, readonly=None).readonly  # unset flags keep the file's values
    bad = tmp_path / "bad.toml"
    bad.write_text('[tui]\nrefrsh = 5\nmax_rows = "many"\ntimeout = -1\n')
    with pytest.raises(FederationError) as e:
        load_tui_config(str(bad))
    text = str(e.value)
    assert str(bad) in text and "unknown key 'refrsh'" in text and "max_rows: must be a number" in text
    with pytest.raises(FederationError, match="refresh must be > 0"):
        TuiConfig().replace(refresh=0)
    with pytest.raises(FederationError, match="cannot read"):
        load_tui_config(str(tmp_path / "missing.toml"))


def test_open_source_checks_its_arguments(capture_path: Path) -> None:
    with pytest.raises(FederationError, match="--router is required"):
        open_source(None)
    with pytest.raises(FederationError, match="ZeroMQ endpoint"):
        open_source("127.0.0.1:5555")
    with pytest.raises(FederationError, match="cannot be used together"):
        open_source(None, replay=str(capture_path), record="x.json")
    assert isinstance(open_source(None, replay=str(capture_path)), ReplaySource)
    assert open_source("tcp://127.0.0.1:1", record="x.json").name == "tcp://127.0.0.1:1"


class _MovingSession:
    """Answers task_list as a scheduler whose task moves from RUNNING to FAILED between two calls."""

    def call(self, method: str, kwargs: dict[str, Any] | None = None) -> Any:
        assert method == "task_list" and kwargs
        status = kwargs["status"]
        if status in ("RUNNING", "FAILED"):
            return {
                "ns.T_1_abc": {"status": status, "name": "ns.T", "params": {"n": "1"}, "last_updated": 1.0}
            }
        return {}


def test_a_task_seen_in_two_status_answers_is_listed_once() -> None:
    tasks = fetch_tasks(_MovingSession(), TaskQuery(), {"RUNNING": 1, "FAILED": 1}, 5000)
    assert [(r.task_id, r.status) for r in tasks.rows] == [("ns.T_1_abc", "FAILED")]
