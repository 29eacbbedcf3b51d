"""fedctl loadtest: the DAG generator, the wire arguments, the correctness checks (fed bad traces),
small end-to-end runs against a local federation and a stock luigid, the Parquet report and compare."""

from __future__ import annotations

import argparse
import copy
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import luigi
import luigi.rpc
import luigi.scheduler
import pytest
import sqlalchemy as sa
from luigi.task import task_id_str

from loadtest import report
from loadtest.checks import REPORT_DONE, REPORT_FAILED, Trace, check
from loadtest.command import options_from_args, register
from loadtest.dag import FAIL_ALWAYS, FAIL_ONCE, DagSpec, build_dag, registration_kwargs, report_kwargs
from loadtest.drivers import plan_workers
from loadtest.runner import RunOptions, run
from loadtest.servers import LocalFederation
from tests.procs import ROOT, fed_env

# -- the DAG -------------------------------------------------------------------------------------


def test_dag_has_the_daily_shape_with_luigi_task_ids() -> None:
    spec = DagSpec(days=2, topics=5, fan_in=3, fan_out=2, run="t1")
    dag = build_dag(spec)
    assert len(dag) == spec.size == 2 * (4 * 5 + 3 + 1)
    assert len(set(dag.ids)) == len(dag)
    for i, tid in enumerate(dag.ids):
        assert tid == task_id_str(dag.families[i], dag.params[i])
        assert all(d < i for d in dag.deps[i])  # upstream first: the DAG is acyclic
    assert {dag.namespace(i) for i in range(len(dag))} == {"fin", "mkt", "ops", "ref", "daily"}
    by = {(dag.where[i][0], dag.where[i][1], dag.where[i][2]): i for i in range(len(dag))}
    for day in range(2):
        daily = by[(day, -1, "Daily")]
        assert sorted(dag.deps[daily]) == sorted(by[(day, t, "Load")] for t in range(5))
        for t in range(5):
            enrich = dag.deps[by[(day, t, "Enrich")]]
            stages = [dag.where[d][2] for d in enrich]
            # its own Transform, fan-in - 1 = 2 other topics' Transforms, one Reference
            assert stages.count("Transform") == 3 and stages.count("Reference") == 1
            assert by[(day, t, "Transform")] in enrich
            assert dag.deps[by[(day, t, "Transform")]] == [by[(day, t, "Extract")]]
    # priorities: the latest (hot) days' wrappers are urgent, business units differ
    assert dag.priority[by[(1, -1, "Daily")]] == 100
    assert dag.priority[by[(0, 0, "Extract")]] == 20  # fin
    # deterministic, and the run tag makes new ids
    assert build_dag(spec).ids == dag.ids
    assert not set(build_dag(spec.with_run("t2")).ids) & set(dag.ids)


def test_failures_plan_expected_statuses_and_attempts() -> None:
    dag = build_dag(DagSpec(days=3, topics=6, fail_rate=0.1, perm_fail_rate=0.05, seed=7))
    status, attempts = dag.expected_status(), dag.expected_attempts()
    assert FAIL_ONCE in dag.fail and FAIL_ALWAYS in dag.fail
    assert any(dag.fail[i] == FAIL_ALWAYS and status[i] == "PENDING" for i in range(len(dag)))
    for i in range(len(dag)):
        assert (status[i] == "PENDING") == any(status[d] != "DONE" for d in dag.deps[i])
        if dag.fail[i] == FAIL_ALWAYS and status[i] != "PENDING":
            assert status[i] == "DISABLED" and attempts[i] == 1
            assert dag.retry_policy(i)["retry_count"] == 1  # one failure disables it
        if status[i] == "DONE":
            assert all(status[d] == "DONE" for d in dag.deps[i])
            assert attempts[i] == (2 if dag.fail[i] == FAIL_ONCE else 1)
        if status[i] == "PENDING":
            assert attempts[i] == 0
            assert any(status[d] in ("DISABLED", "PENDING") for d in dag.deps[i])


def test_workers_partition_the_dag_in_luigi_order() -> None:
    dag = build_dag(DagSpec(days=2, topics=7))
    plans = plan_workers(dag, "many", 3)
    owned = sorted(i for p in plans for i in p.tasks)
    assert owned == list(range(len(dag)))  # every task has exactly one owner
    assert all(p.slots == 1 for p in plans) and len({p.worker_id for p in plans}) == 3
    for p in plans:
        pos = {i: k for k, i in enumerate(p.tasks)}
        for i in p.tasks:  # Luigi's LIFO walk: a task registers before its own upstream
            assert all(pos[d] > pos[i] for d in dag.deps[i] if d in pos)
    (one,) = plan_workers(dag, "one", 4)
    assert one.slots == 4 and sorted(one.tasks) == list(range(len(dag)))
    assert "workers=4" in one.worker_id


class _Wire(luigi.rpc.RemoteScheduler):
    """Luigi's own client, recording what it would send instead of sending it."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:1")
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def _request(self, url: str, data: dict[str, Any], attempts: int = 3, allow_null: bool = True) -> Any:
        self.sent.append((url.rsplit("/", 1)[-1], copy.deepcopy(data)))
        return {
            "n_pending_tasks": 0,
            "running_tasks": [],
            "task_id": None,
            "n_unique_pending": 0,
            "n_pending_last_scheduled": 0,
            "worker_state": "active",
        }


def test_registration_is_what_luigis_worker_sends() -> None:
    dag = build_dag(DagSpec(days=1, topics=1, fan_out=0, run="wire"))
    i = dag.families.index("fin.Extract")

    class Extract(luigi.Task):
        task_namespace = "fin"
        date, run, topic = luigi.Parameter(), luigi.Parameter(), luigi.Parameter()
        priority = dag.priority[i]

        def complete(self) -> bool:
            return False

    wire = _Wire()
    with luigi.worker.Worker(scheduler=wire, worker_id="w-1") as worker:
        assert worker.add(Extract(**dag.params[i]))
    (sent,) = [d for m, d in wire.sent if m == "add_task"]
    ours = registration_kwargs(dag, i, "w-1")
    assert set(ours) == set(sent)  # every argument Luigi's client fills in, no more
    for key in ours:
        if key != "module":
            assert ours[key] == sent[key], key
    # a result report carries the same argument names (Scheduler.add_task's signature)
    names = set(inspect.signature(luigi.scheduler.Scheduler.add_task).parameters) - {"self", "kwargs"}
    assert set(report_kwargs(dag, i, "w-1", "DONE")) == names == set(ours)


# -- the checks, fed fabricated traces ----------------------------------------------------------------


def _ideal(dag: Any) -> Trace:
    """A correct serial schedule: tasks in index order (deps first), failures retried."""
    tr, t = Trace(), 0.0
    attempts = dag.expected_attempts()
    for i in range(len(dag)):
        for a in range(attempts[i]):
            tr.grant(i, t, t + 0.1)
            failed = dag.fail[i] == FAIL_ALWAYS or (dag.fail[i] == FAIL_ONCE and a == 0)
            tr.report(i, REPORT_FAILED if failed else REPORT_DONE, t + 0.2, t + 0.3)
            t += 1.0
    return tr


@pytest.fixture
def planned() -> Any:
    dag = build_dag(DagSpec(days=2, topics=4, fail_rate=0.15, perm_fail_rate=0.05, seed=3))
    final = dict(zip(dag.ids, dag.expected_status(), strict=True))
    return dag, final


def test_checks_pass_a_correct_trace(planned: Any) -> None:
    dag, final = planned
    rep = check(dag, _ideal(dag), final)
    assert rep.ok, rep.summary()
    assert rep.checked_edges > 0 and rep.final_checked


def _first(dag: Any, stage: str) -> int:
    return next(
        i
        for i in range(len(dag))
        if dag.where[i][2] == stage and dag.expected_attempts()[i] == 1 and dag.fail[i] == 0
    )


def test_checks_catch_a_task_granted_twice(planned: Any) -> None:
    dag, final = planned
    tr = _ideal(dag)
    i = _first(dag, "Load")
    k = tr.grant_idx.index(i)
    tr.grant(i, tr.grant_t0[k] + 0.01, tr.grant_t1[k] + 0.01, worker=1)  # a second worker got it too
    rep = check(dag, tr, final)
    assert rep.counts["granted more often than planned"] == 1
    assert rep.counts["granted again while running"] == 1


def test_checks_catch_a_grant_before_its_dependency_was_done(planned: Any) -> None:
    dag, final = planned
    tr = _ideal(dag)
    i = _first(dag, "Transform")
    (dep,) = dag.deps[i]
    k = tr.grant_idx.index(i)
    r = tr.rep_idx.index(dep)
    tr.grant_t0[k], tr.grant_t1[k] = tr.rep_t0[r] - 0.5, tr.rep_t0[r] - 0.4  # answered before DONE was sent
    rep = check(dag, tr, final)
    assert rep.counts["granted before a dependency was DONE"] == 1
    assert dag.ids[i] in rep.examples["granted before a dependency was DONE"][0]


def test_checks_catch_missing_completion_lost_retry_and_bad_final_state(planned: Any) -> None:
    dag, final = planned
    tr = _ideal(dag)
    i = _first(dag, "Enrich")
    r = tr.rep_idx.index(i)
    for col in (tr.rep_idx, tr.rep_status, tr.rep_t0, tr.rep_t1, tr.rep_worker):
        del col[r]
    once = dag.fail.index(FAIL_ONCE)
    k = tr.grant_idx.index(once) + 1  # drop the retry of a task that fails once
    for col in (tr.grant_idx, tr.grant_t0, tr.grant_t1, tr.grant_worker):
        del col[k]
    tr.foreign.append("fin.Extract_not_ours_0123456789")
    bad = dict(final)
    bad[dag.ids[0]] = "FAILED"
    del bad[dag.ids[1]]
    rep = check(dag, tr, bad)
    assert rep.counts["not completed exactly once"] == 1  # the Enrich
    assert rep.counts["granted less often than planned"] == 1
    assert rep.counts["task outside the DAG granted"] == 1
    assert rep.counts["unexpected final status"] == 1
    assert rep.counts["missing from the scheduler's final state"] == 1
    # the Enrich's downstream Load was granted although the Enrich never completed
    assert rep.counts["granted before a dependency was DONE"] >= 1
    assert not rep.ok and "FAILED" in rep.summary()


# -- end to end ----------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_run_against_a_local_federation_and_luigid_with_report_and_compare(tmp_path: Path) -> None:
    opts = RunOptions(
        days=2,
        topics=3,
        workers=4,
        shards=2,
        via=("zmq", "http"),
        against_luigid=True,
        fail_rate=0.15,
        seed=5,
        label="e2e",
        stall_timeout=60,
    )
    out = run(opts, log=lambda _m: None)
    assert [(t.target, t.via) for t in out.targets] == [
        ("federation", "zmq"),
        ("federation", "http"),
        ("luigid", "http"),
    ]
    for t in out.targets:
        dag = t.dag
        retried = sum(1 for f in dag.fail if f == FAIL_ONCE)
        assert retried > 0 and dag.ids == out.targets[0].dag.ids  # the same DAG for every target
        assert t.checks.ok, (t.target, t.via, t.checks.summary(), t.notes)
        assert t.checks.checked_grants == len(dag) + retried and t.checks.final_checked
        reg, run_row = t.rows
        assert (reg["phase"], run_row["phase"]) == ("register", "run")
        assert reg["calls"] == len(dag) and run_row["tasks_done"] == len(dag)
        assert run_row["grants"] == len(dag) + retried
        assert run_row["lat_p50_ms"] > 0 and run_row["server_cpu_s"] > 0 and run_row["server_peak_rss_mb"] > 0
        assert sum(run_row["timeline"]) == len(dag)
    fed = out.targets[0].rows[1]
    shard_tasks = __import__("json").loads(fed["shard_tasks"])
    assert set(shard_tasks) == {"s0", "s1"} and sum(shard_tasks.values()) == len(dag)
    assert shard_tasks == __import__("json").loads(fed["placement_tasks"])  # health agrees with placement
    assert 0 < fed["cross_shard_edges"] < 1

    # a second run, one worker id with 3 slots, only luigid, with permanent failures
    opts2 = RunOptions(
        days=1,
        topics=4,
        workers=3,
        shape="one",
        against_luigid=True,
        perm_fail_rate=0.2,
        fail_rate=0.1,
        seed=11,
        label="one",
    )
    out2 = run(opts2, log=lambda _m: None)
    (t2,) = out2.targets
    assert t2.checks.ok, t2.checks.summary()
    assert "DISABLED" in t2.dag.expected_status()

    path = tmp_path / "lt.parquet"
    assert report.append_rows(path, out.rows) == 6
    assert report.append_rows(path, out2.rows) == 8
    df = report.read_rows(path)
    assert set(df["run_id"]) == {out.run_id, out2.run_id} and df["checks_ok"].all()
    tables = dict(report.compare_frames(df))
    assert len(tables["runs"]) == 4
    vs = tables["federation vs luigid in the same run (x = times better)"]
    assert list(vs.index.get_level_values("via")) == ["zmq", "http"] and (vs["throughput x"] > 0).all()
    between = next(f for title, f in tables.items() if title.startswith("each run / baseline"))
    assert list(between.index) == [(out2.run_id, "luigid", "http")]


@pytest.mark.e2e
def test_local_federation_on_postgres_drops_its_schemas(pg_url: str) -> None:
    fed = LocalFederation(2, store="postgres", pg_url=pg_url).start()
    try:
        opts = RunOptions(days=1, topics=3, workers=2)
        from loadtest.runner import run_target

        out = run_target(opts, build_dag(opts.spec("pg")), fed, "federation", "zmq", "pg")
        assert out.checks.ok, out.checks.summary()
        assert out.rows[0]["store"] == "postgres"
        assert sorted(s["location"] for s in fed.health()["shards"]) == [f"schema {s}" for s in fed.schemas]
    finally:
        fed.stop()
    eng = sa.create_engine(pg_url)
    with eng.connect() as c:
        left = c.execute(
            sa.text("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE :p"),
            {"p": fed.prefix + "%"},
        ).all()
    eng.dispose()
    assert left == []


# -- the command line ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedctl")
    register(p.add_subparsers(dest="command"))
    return p


def test_register_wires_run_and_compare_and_refuses_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    p = _parser()
    args = p.parse_args(
        [
            "loadtest",
            "run",
            "--days",
            "30",
            "--topics",
            "50",
            "--workers",
            "32",
            "--shards",
            "3",
            "--store",
            "postgres",
            "--against",
            "luigid",
            "--via",
            "zmq,http",
            "--report",
            "x.parquet",
        ]
    )
    opts = options_from_args(args)
    assert (opts.days, opts.topics, opts.workers, opts.shards, opts.store, opts.via, opts.against_luigid) == (
        30,
        50,
        32,
        3,
        "postgres",
        ("zmq", "http"),
        True,
    )
    assert opts.spec("r").size == 30 * (4 * 50 + 5 + 1)
    assert p.parse_args(["loadtest", "compare", "x.parquet"]).func.__name__ == "cmd_compare"
    for bad in (
        ["--router", "tcp://127.0.0.1:1", "--shards", "2"],
        [],
        ["--shards", "2", "--via", "udp"],
        ["--shards", "2", "--fail-rate", "2"],
    ):
        args = p.parse_args(["loadtest", "run", *bad])
        assert args.func(args) == 2
        assert capsys.readouterr().err.startswith("fedctl loadtest: error:")


def test_importing_the_command_stays_light() -> None:
    code = "import sys, loadtest.command; print(sorted(m for m in ('pandas', 'pyarrow', 'rich', 'zmq') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=fed_env(), cwd=ROOT, capture_output=True, text=True
    )
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.e2e
def test_command_line_run_and_compare(tmp_path: Path) -> None:
    path = tmp_path / "r.parquet"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest",
            "run",
            "--days",
            "1",
            "--topics",
            "2",
            "--workers",
            "2",
            "--against",
            "luigid",
            "--report",
            str(path),
            "--no-progress",
            "--label",
            "cli",
        ],
        env=fed_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checks luigid/http: OK" in r.stdout and "luigid/http" in r.stdout
    assert len(report.read_rows(path)) == 2
    r = subprocess.run(
        [sys.executable, "-m", "loadtest", "compare", str(path)],
        env=fed_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "runs" in r.stdout and "cli" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "loadtest", "compare", str(tmp_path / "none.parquet")],
        env=fed_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_the_driver_retries_long_enough_to_outlast_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A channel that fails for ~20 s (a shard restart under load) is outlasted; waits double."""
    import loadtest.drivers as drivers

    cfg = drivers.DriverConfig(endpoint="tcp://127.0.0.1:1")
    slept: list[float] = []
    monkeypatch.setattr(drivers.time, "sleep", slept.append)

    class Flaky:
        def call(self, method: str, kwargs: dict) -> str:
            if sum(slept) < 20.0:
                raise drivers.ChannelError("unavailable")
            return "ok"

    counters: dict[str, int] = {}
    assert drivers.call_retrying(Flaky(), "get_work", {}, cfg.attempts, cfg.retry_wait, counters) == "ok"  # type: ignore[arg-type]
    assert slept[:4] == [0.5, 1.0, 2.0, 4.0] and max(slept) == drivers.MAX_RETRY_WAIT
    assert counters["retries"] == len(slept)
