"""Online resharding on the in-process federation: add a shard, move a namespace, drain a shard.

Real shards (SQLite stores, group commit) and the real router logic on a fake clock
(``tests/inproc_federation.py``): every test builds tasks in every status with cross-shard
dependencies and running tasks, reshards, and then checks that each task lives, whole, on its
new owner only, that calls for moving ids were held and answered once, that mirrors follow the
new owners (the rest of the DAG runs to the end through the router), and, in the crash tests,
that a migration interrupted anywhere is finished by a restarted router or shard.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.config import FederationConfig, ShardSpec
from federation.errors import FederationError, TransportError
from federation.placement import Placement
from router.core import InProcRouter
from router.links import LinkState
from router.reshard import add_shard, remove_shard
from shard.app import build_federated_shard
from shard.server import ShardServer
from tests.inproc_federation import InProcFederation

W = "worker-1"
W2 = "worker-2"
#: what must be equal before and after a move (the record's whole task state but bookkeeping)
FIELDS = (
    "status",
    "family",
    "priority",
    "params",
    "deps",
    "stakeholders",
    "workers",
    "worker_running",
    "resources",
    "resources_running",
    "failures",
    "expl",
    "status_message",
    "batch_id",
)


class Fed(InProcFederation):
    """Shards and a router whose config is a real ``federation.toml`` (the migration record and
    the rewritten file live next to it)."""

    def __init__(self, tmp_path: Path, ids: list[str]) -> None:
        super().__init__(tmp_path, ids)
        #: task id -> the worker running it
        self.running: dict[str, str] = {}
        self.path = tmp_path / "federation.toml"
        self.config = self.config.replace(source=str(self.path))
        self.path.write_text(self.config.to_toml())
        self.new_router()

    def new_router(self) -> None:
        """A router (re)started from its ``federation.toml`` (a router crash loses its memory)."""
        self.router = InProcRouter(self.config, dict(self.servers), clock=self.clock)
        self.router.settle()

    def start_shard(self, config: FederationConfig, sid: str) -> ShardServer:
        """A new shard process, started from the new config."""
        server = build_federated_shard(config, sid, in_process=True)
        self.servers[sid] = server
        self.router.pool.restart(sid, server)
        return server

    def build(self, sid: str) -> ShardServer:
        cfg = getattr(self, "target", None) or self.config
        if sid not in cfg.shard_ids:
            cfg = self.config
        return build_federated_shard(cfg, sid, in_process=True)

    def add(self, task_id: str, *, deps: list[str] | None = None, worker: str = W, **kw: Any) -> Any:
        return self.call(
            "add_task", task_id=task_id, worker=worker, family=task_id.split(".")[-1], deps=deps or [], **kw
        )

    def get_work(self, worker: str = W) -> str | None:
        return self.call("get_work", worker=worker, host="h")["task_id"]

    def records(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """task id -> shard -> that shard's records of it (own tasks: with a family)."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for sid, server in self.servers.items():
            if self.router.pool.shards.get(sid) is None:
                continue
            for rec in server.core.snapshot().tasks:
                if rec["family"]:
                    out.setdefault(rec["task_id"], {}).setdefault(sid, []).append(rec)
        return out

    def drive(self, max_turns: int = 400) -> dict[str, Any]:
        """Run the federation until the migration is done."""
        for _ in range(max_turns):
            self.clock.advance(0.6)
            self.router.settle()
            st = self.router.core.reshard.status()
            if st["phase"] == "done":
                return st
        raise AssertionError(f"migration did not finish: {self.router.core.reshard.status()}")


def config_with(base: FederationConfig, directory: Path, ids: list[str], **changes: Any) -> FederationConfig:
    specs = []
    for i, sid in enumerate(ids):
        if sid in base.shard_ids:
            specs.append(base.shard(sid))
        else:
            specs.append(
                ShardSpec(
                    sid,
                    f"tcp://127.0.0.1:{21100 + i}",
                    f"sqlite:///{directory / f'{sid}.db'}?synchronous=normal",
                    None,
                )
            )
    groups = changes.pop("groups", {"default": tuple(ids)})
    return base.replace(shards=tuple(specs), groups=groups, **changes)


def populate(fed: Fed, namespaces: tuple[str, ...] = ("xs", "fin")) -> dict[str, str]:
    """Tasks in every status, chains of dependencies across shards, two running; returns the
    status each was left in."""
    expect: dict[str, str] = {}
    fed.call("update_resource", resource="db", amount=10)  # a runtime override every shard keeps
    for ns in namespaces:
        ids = [f"{ns}.T_{i:03d}" for i in range(40)]
        # chains of 4: each task depends on the previous one (owners differ about 2/3 of the time)
        for i, tid in enumerate(ids):
            deps = [ids[i - 1]] if i % 4 else []
            res = {"db": 1} if i % 2 == 0 else {}
            fed.add(tid, deps=deps, priority=i % 3, resources=res)
            if i % 4 == 0:
                fed.add(tid, worker=W2, resources=res)  # a second worker's stake
            expect[tid] = "PENDING"
        for tid in ids[36:38]:
            fed.add(tid, status="FAILED", expl="boom")
            expect[tid] = "FAILED"
        fed.add(ids[38], status="DISABLED")
        expect[ids[38]] = "DISABLED"
    # a few done, two running
    for _ in range(6):
        tid = fed.get_work(W)
        assert tid is not None
        fed.add(tid, status="DONE")
        expect[tid] = "DONE"
    for w in (W, W2):
        tid = fed.get_work(w)
        assert tid is not None
        expect[tid] = "RUNNING"
        fed.running[tid] = w
    return expect


def check_moved(fed: Fed, before: dict[str, dict[str, list[dict[str, Any]]]], placement: Placement) -> None:
    """Every task is owned by exactly one shard, its new owner, with the state it had."""
    after = fed.records()
    assert set(after) == set(before)
    for tid, where in after.items():
        assert list(where) == [placement.owner(tid)], (tid, list(where))
        (old,) = [r for recs in before[tid].values() for r in recs]
        (new,) = where[placement.owner(tid)]
        assert {k: new[k] for k in FIELDS} == {k: old[k] for k in FIELDS}, tid


def run_to_the_end(fed: Fed, expect: dict[str, str]) -> dict[str, int]:
    """Report the running tasks done and run everything runnable: each task granted once."""
    granted: dict[str, int] = {}
    for tid, worker in fed.running.items():
        fed.add(tid, status="DONE", worker=worker)
    for _ in range(400):
        tid = fed.get_work(W)
        if tid is None:
            break
        granted[tid] = granted.get(tid, 0) + 1
        fed.add(tid, status="DONE")
    return granted


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Fed]:
    f = Fed(tmp_path, ["s0", "s1", "s2"])
    try:
        yield f
    finally:
        f.close()


def statuses(fed: Fed) -> dict[str, str]:
    return {tid: t["status"] for tid, t in fed.call("task_list", status="", upstream_status="").items()}


def test_add_a_shard_moves_its_tasks_whole_and_the_dag_runs_on(fed: Fed, tmp_path: Path) -> None:
    expect = populate(fed)
    before = fed.records()
    assert statuses(fed) == expect
    used_before = {r["name"]: r["num_used"] for r in fed.call("resource_list")}
    new = config_with(fed.config, tmp_path, ["s0", "s1", "s2", "s3"])
    plan = fed.call("reshard_plan", config=new.to_mapping())
    assert plan["added"] == ["s3"] and plan["removed"] == []
    assert set(plan["moves"]) == {"s0", "s1", "s2"}
    assert all(list(m) == ["s3"] for m in plan["moves"].values() if m)  # a new ring node takes, never gives
    moving = [t for t in expect if Placement.from_config(new).owner(t) == "s3"]
    assert plan["total"] == len(moving) > 5
    fed.start_shard(new, "s3")
    st = fed.call("reshard_apply", config=new.to_mapping())
    assert st["active"] and st["phase"] == "out"
    st = fed.drive()
    assert st["total"] == len(moving) and st["copied"] == len(moving)
    check_moved(fed, before, Placement.from_config(new))
    assert statuses(fed) == expect
    # resource state: the new shard has the runtime capacity, the running tasks' usage counts
    assert fed.servers["s3"].core.snapshot().meta["resources"] == {"db": 10}
    used = {r["name"]: r["num_used"] for r in fed.call("resource_list")}
    assert used == used_before and used["db"] >= 1
    # the router routes by the new placement, and a restarted router too (rewritten file)
    assert fed.call("owner", task_id=moving[0])["shard_id"] == "s3"
    assert "s3" in fed.path.read_text()
    # history rows moved with the tasks
    events = fed.call("task_events", task_id=moving[0])["events"]
    assert events and events[0]["status"] in ("PENDING", "UNKNOWN")
    # the old owner refuses calls about a moved id (a router with the old placement)
    old_owner = Placement.from_config(fed.config).owner(moving[0])
    with pytest.raises(TransportError, match="moved"):
        fed.servers[old_owner].core.extra_methods()["add_task"](task_id=moving[0], worker=W)
    # the whole DAG runs to the end: mirrors of moved tasks follow their new owner
    finish(fed, expect)


def finish(fed: Fed, expect: dict[str, str]) -> None:
    """The rest of the DAG runs to the end through the router: each task granted once, and every
    task DONE but the FAILED and DISABLED ones and those behind them."""
    granted = run_to_the_end(fed, expect)
    assert granted and all(n == 1 for n in granted.values())
    final = statuses(fed)
    stuck = {t for t, s in final.items() if s != "DONE"}
    blocked = {t for t, s in expect.items() if s in ("FAILED", "DISABLED")}
    blocked |= {t for t in expect if expect[t] == "PENDING" and _blocked(t, expect)}
    assert stuck - {t for t in final if t not in expect} == blocked


def _blocked(tid: str, expect: dict[str, str]) -> bool:
    """A pending task whose chain has a FAILED or DISABLED task before it."""
    ns, _, name = tid.rpartition(".")
    i = int(name.split("_")[1])
    while i % 4:
        i -= 1
        if expect[f"{ns}.T_{i:03d}"] in ("FAILED", "DISABLED"):
            return True
    return False


def test_calls_for_moving_ids_wait_for_the_switch_and_are_answered_once(fed: Fed, tmp_path: Path) -> None:
    expect = populate(fed, ("xs",))
    new = config_with(fed.config, tmp_path, ["s0", "s1", "s2", "s3"])
    p_new = Placement.from_config(new)
    moving_old = next(t for t, s in expect.items() if s == "PENDING" and p_new.owner(t) == "s3")
    fresh = next(f"xs.New_{i}" for i in range(1000) if p_new.owner(f"xs.New_{i}") == "s3")
    staying = next(t for t, s in expect.items() if s == "PENDING" and p_new.owner(t) != "s3")
    fed.start_shard(new, "s3")
    fed.router.send("reshard_apply", config=new.to_mapping())
    assert not fed.router.core.reshard.holding  # nothing held before the first fed_migrate_out
    for _ in range(100):  # until the outs are sent (s3 must be synchronised first)
        fed.router.core.step()
        if fed.router.core.reshard.holding:
            break
        fed.router.pool.pump()
        fed.clock.advance(0.1)
    assert fed.router.core.reshard.holding
    held = [
        fed.router.send("set_task_status_message", task_id=moving_old, status_message="hi"),
        fed.router.send("add_task", task_id=fresh, worker=W, family="New"),
    ]
    other = fed.router.send("set_task_status_message", task_id=staying, status_message="ok")
    assert len(fed.router.core.reshard.held) == 2
    fed.router.core.step()
    fed.router.pool.pump()
    fed.router.core.step()
    assert fed.router.answer(other) is None  # not moving: served at once
    for route in held:
        with pytest.raises(LookupError):
            fed.router.answer(route)  # held
    fed.drive()
    assert [fed.router.answer(r) for r in held][0] is None
    for route in held:
        with pytest.raises(LookupError):
            fed.router.answer(route)  # answered once
    recs = fed.records()
    assert list(recs[fresh]) == ["s3"] and list(recs[moving_old]) == ["s3"]
    assert fed.call("get_task_status_message", task_id=moving_old)["statusMessage"] == "hi"
    assert fed.router.core.reshard.status()["held"] == 2


def test_move_a_namespace_to_its_own_group(fed: Fed, tmp_path: Path) -> None:
    expect = populate(fed)
    before = fed.records()
    new = config_with(
        fed.config,
        tmp_path,
        ["s0", "s1", "s2", "f0"],
        groups={"default": ("s0", "s1", "s2"), "fin": ("f0",)},
        namespaces={"fin": "fin"},
    )
    fed.start_shard(new, "f0")
    plan = fed.call("reshard_plan", config=new.to_mapping())
    assert plan["total"] == sum(1 for t in expect if t.startswith("fin."))
    fed.call("reshard_apply", config=new.to_mapping())
    fed.drive()
    check_moved(fed, before, Placement.from_config(new))
    recs = fed.records()
    assert {t for t, w in recs.items() if "f0" in w} == {t for t in expect if t.startswith("fin.")}
    assert statuses(fed) == expect
    finish(fed, expect)


def test_drain_with_a_get_work_in_flight_when_the_shard_leaves(
    fed: Fed, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expect = populate(fed)
    new = config_with(fed.config, tmp_path, ["s0", "s1"])
    fed.router.send("reshard_apply", config=new.to_mapping())
    fed.call("reshard_apply", config=new.to_mapping())
    fed.drive()
    core, pool = fed.router.core, fed.router.pool
    # as if s2 had not left yet: a get_work asks every shard that knows the worker for offers
    add_shard(core, fed.config.shard("s2"), "default")
    pool.restart("s2", fed.servers["s2"])
    fed.clock.advance(0.6)
    fed.router.settle()
    core.workers.workers[W2].shards["s2"] = None
    asked = fed.router.send("get_work", worker=W2, host="h")
    assert any(w.shard == "s2" for w in pool._waits.values())
    # s2 answers its offer, then leaves the router, before s0 and s1 answer theirs
    others = {sid: pool.shards[sid] for sid in ("s0", "s1")}
    pool.shards.update(dict.fromkeys(others))
    pool.pump()
    remove_shard(core, "s2")
    pool.shards.update(others)
    fed.router.settle()
    try:
        tid = fed.router.answer(asked)["task_id"]
    except TransportError:
        tid = None  # "unavailable": the worker asks again
    if tid is not None:
        expect[tid] = "RUNNING"
        fed.running[tid] = W2
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    finish(fed, expect)


def test_drain_a_shard_and_it_leaves_the_router(fed: Fed, tmp_path: Path) -> None:
    expect = populate(fed)
    before = fed.records()
    new = config_with(fed.config, tmp_path, ["s0", "s1"])
    fed.call("reshard_apply", config=new.to_mapping())
    st = fed.drive()
    assert set(st["moves"]["s2"]) <= {"s0", "s1"} and not st["moves"].get("s0") and not st["moves"].get("s1")
    assert "s2" not in fed.router.core.links
    del fed.servers["s2"]  # a drained shard: stopped by the operator
    check_moved(fed, before, Placement.from_config(new))
    assert statuses(fed) == expect
    finish(fed, expect)
    health = fed.call("federation_health")
    assert [s["shard_id"] for s in health["shards"]] == ["s0", "s1"]


def run_to_phase(fed: Fed, phase: str, pumps: int = 1) -> None:
    """Turn the federation batch by batch until the migration is in ``phase`` and ``pumps``
    batches of it have run (the moment a crash strikes)."""
    seen = 0
    for _ in range(5000):
        if fed.router.core.reshard.record["phase"] == phase:
            seen += 1
            if seen > pumps:
                return
        fed.router.core.step()
        fed.router.pool.pump()
        fed.clock.advance(0.05)
    raise AssertionError(f"never reached {phase}: {fed.router.core.reshard.status()}")


@pytest.mark.parametrize(
    "crash_at",
    [("out", 1), ("copy", 0), ("copy", 2), ("apply", 0), ("switch", 0), ("cleanup", 0)],
)
def test_a_router_crash_anywhere_is_resumed_by_the_restarted_router(
    fed: Fed, tmp_path: Path, crash_at: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("router.reshard.PAGE", 4)  # several pages per pair: a crash between two
    expect = populate(fed)
    before = fed.records()
    new = config_with(fed.config, tmp_path, ["s0", "s1", "s2", "s3"])
    fed.start_shard(new, "s3")
    fed.router.send("reshard_apply", config=new.to_mapping())
    run_to_phase(fed, *crash_at)
    # the router dies; a new one starts from its federation.toml (rewritten after the switch)
    fed.config = FederationConfig.from_mapping(
        __import__("tomllib").loads(fed.path.read_text()), source=str(fed.path)
    )
    fed.new_router()
    assert fed.router.core.reshard.active
    fed.drive()
    check_moved(fed, before, Placement.from_config(new))
    assert statuses(fed) == expect
    finish(fed, expect)


def test_a_shard_crash_mid_move_is_resumed(fed: Fed, tmp_path: Path) -> None:
    expect = populate(fed)
    before = fed.records()
    new = config_with(fed.config, tmp_path, ["s0", "s1", "s2", "s3"])
    fed.target = new
    fed.start_shard(new, "s3")
    fed.router.send("reshard_apply", config=new.to_mapping())
    run_to_phase(fed, "copy", 1)
    rec = fed.router.core.reshard.record
    # a source and the target die (kill -9) and come back from their stores
    src = next(s for s, m in rec["moves"].items() if m)
    fed.restart(src)
    fed.restart("s3")
    fed.drive()
    check_moved(fed, before, Placement.from_config(new))
    assert statuses(fed) == expect
    finish(fed, expect)
    # a restarted source serves the placement it was switched to, whatever its file says
    fed.restart(src)
    fed.clock.advance(0.6)
    fed.router.settle()
    assert fed.servers[src].core.placement.fingerprint == Placement.from_config(new).fingerprint


def test_bad_target_config_is_refused_and_changes_nothing(fed: Fed, tmp_path: Path) -> None:
    populate(fed, ("xs",))
    same = fed.config.to_mapping()
    with pytest.raises(FederationError, match="nothing to reshard"):
        fed.call("reshard_apply", config=same)
    moved = fed.config.to_mapping()
    moved["shards"][0]["endpoint"] = "tcp://127.0.0.1:1"
    with pytest.raises(FederationError, match="endpoint differs"):
        fed.call("reshard_apply", config=moved)
    bad = fed.config.to_mapping()
    bad["groups"] = {"default": ["s0", "nope"]}
    with pytest.raises(FederationError, match="not valid"):
        fed.call("reshard_apply", config=bad)
    assert not fed.router.core.reshard.active
    assert not (tmp_path / "federation.toml.reshard.json").exists()
    assert all(link.state is LinkState.READY for link in fed.router.core.links.values())


def test_a_mirror_follows_the_new_owner_even_if_the_old_ones_clock_is_ahead(fed: Fed, tmp_path: Path) -> None:
    """Mirror versions are (owner epoch, seq), epochs are owners' clocks: an old owner whose
    clock runs ahead must not outrank the new owner's updates of a task that moved."""
    old_s1 = fed.router.pool.kill("s1")
    assert old_s1 is not None
    fed.servers["s1"].store.close()
    fed.servers["s1"].close()
    fed.servers["s1"] = build_federated_shard(
        fed.config, "s1", in_process=True, clock=lambda: time.time() + 3600
    )
    fed.router.pool.restart("s1", fed.servers["s1"])
    fed.clock.advance(1.0)
    fed.router.settle()
    new = config_with(fed.config, tmp_path, ["s0", "s1", "s2", "s3"])
    p_old, p_new = Placement.from_config(fed.config), Placement.from_config(new)
    x = next(
        f"xs.X_{i}"
        for i in range(5000)
        if p_old.owner(f"xs.X_{i}") == "s1" and p_new.owner(f"xs.X_{i}") == "s3"
    )
    y = next(f"xs.Y_{i}" for i in range(5000) if p_old.owner(f"xs.Y_{i}") == "s0" == p_new.owner(f"xs.Y_{i}"))
    fed.add(y, deps=[x])
    fed.add(x)
    assert fed.get_work() == x
    fed.clock.advance(0.6)
    fed.router.settle()
    mirror = fed.servers["s0"].core.core.get_task(x)
    assert mirror.status == "RUNNING" and mirror.fed["epoch"] > time.time() + 3000  # from s1's clock
    fed.start_shard(new, "s3")
    fed.call("reshard_apply", config=new.to_mapping())
    fed.drive()
    assert fed.servers["s3"].core.core.get_task(x).status == "RUNNING"
    fed.add(x, status="DONE")  # the running worker's report reaches the new owner, then the mirror
    assert fed.servers["s0"].core.core.get_task(x).status == "DONE"
    assert fed.get_work() == y


def test_a_worker_whose_pending_tasks_are_moving_is_not_told_nothing_is_pending(
    fed: Fed, tmp_path: Path
) -> None:
    """Between a task's old and new owner it is counted nowhere: a get_work answered "no work,
    nothing pending" then would make Luigi's worker quit; it is answered after the switch."""
    new = config_with(fed.config, tmp_path, ["s0", "s1", "s2", "s3"])
    p_new = Placement.from_config(new)
    t = next(f"xs.Only_{i}" for i in range(5000) if p_new.owner(f"xs.Only_{i}") == "s3")
    lonely = "worker-lonely"
    fed.add(t, worker=lonely)
    fed.start_shard(new, "s3")
    fed.router.send("reshard_apply", config=new.to_mapping())
    run_to_phase(fed, "copy", 0)  # out: t is in its old owner's outbox, on no shard's books
    asked = fed.router.send("get_work", worker=lonely, host="h")
    for _ in range(3):
        fed.router.core.step()
        with pytest.raises(LookupError):
            fed.router.answer(asked)
        if fed.router.core.reshard.record["phase"] == "cleanup":
            break
        fed.router.pool.pump()
    fed.drive()
    assert fed.router.answer(asked)["task_id"] == t


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("fed_migrate_plan", {"old": {"groups": "x"}, "new": {}}),
        ("fed_migrate_out", {"mig": "", "old": {}, "new": {}}),
        ("fed_migrate_out", {"mig": "m", "old": {"groups": {"default": []}}, "new": {"groups": {}}}),
        ("fed_migrate_page", {"mig": "m", "target": "s1"}),  # no outbox for it
        ("fed_migrate_page", {"mig": "m", "target": "s1", "limit": 0}),
        ("fed_migrate_in", {"mig": "m", "source": "s1", "page": {"mig": "m", "source": "s1", "tasks": 3}}),
        ("fed_migrate_in", {"mig": "m", "source": "s1", "page": "x"}),
        ("fed_migrate_apply", {"mig": "m", "new": None}),
        ("fed_migrate_switch", {"mig": 5, "old": {}, "new": {}}),
        ("fed_migrate_cleanup", {"mig": None}),
    ],
)
def test_migrate_methods_refuse_bad_input_and_change_nothing(
    fed: Fed, method: str, kwargs: dict[str, Any]
) -> None:
    from federation import wire

    server = fed.servers["s0"]
    populate(fed, ("xs",))
    before = server.core.snapshot()
    [reply] = server.handle_batch([[b"client", b"", wire.encode_request(1, method, kwargs)]])
    answer = wire.decode_reply(reply[-1])
    assert not answer.ok and answer.error["code"] == "bad_arguments", answer
    after = server.core.snapshot()
    assert after.tasks == before.tasks and after.workers == before.workers
    assert server.core.fed_migrate_status()["outbox"] is None and not server.core.fence


def test_a_router_restarted_after_the_switch_of_a_drain_still_cleans_the_drained_shard(
    fed: Fed, tmp_path: Path
) -> None:
    expect = populate(fed)
    new = config_with(fed.config, tmp_path, ["s0", "s1"])
    fed.router.send("reshard_apply", config=new.to_mapping())
    run_to_phase(fed, "cleanup", 0)
    fed.config = FederationConfig.from_mapping(
        __import__("tomllib").loads(fed.path.read_text()), source=str(fed.path)
    )
    assert fed.config.shard_ids == ["s0", "s1"]  # rewritten at the switch
    fed.new_router()
    fed.drive()
    assert fed.servers["s2"].core.fed_migrate_status()["outbox"] is None  # cleaned
    assert "s2" not in fed.router.core.links
    finish(fed, expect)


def test_a_migration_waiting_for_a_shard_that_never_comes_can_be_aborted_until_it_moves(
    fed: Fed, tmp_path: Path
) -> None:
    expect = populate(fed, ("xs",))
    new = config_with(fed.config, tmp_path, ["s0", "s1", "s2", "s3"])  # s3 is never started
    fed.call("reshard_apply", config=new.to_mapping())
    for _ in range(5):
        fed.clock.advance(0.6)
        fed.router.settle()
    st = fed.call("reshard_status")
    assert st["phase"] == "out" and "s3" in (st["error"] or "")
    assert fed.call("reshard_abort")["aborted"]
    assert "s3" not in fed.router.core.links and not fed.router.core.reshard.active
    assert statuses(fed) == expect  # nothing moved
    with pytest.raises(FederationError, match="no migration"):
        fed.call("reshard_abort")
    # a migration that moved something cannot be aborted
    fed.start_shard(new, "s3")
    fed.router.send("reshard_apply", config=new.to_mapping())
    run_to_phase(fed, "copy", 0)
    with pytest.raises(FederationError, match="can only be finished"):
        fed.call("reshard_abort")
    fed.drive()
    finish(fed, expect)
