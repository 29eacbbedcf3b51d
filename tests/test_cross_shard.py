"""Dependencies across shards: real Luigi workers, every edge crossing shards, restarts, priorities."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import luigi.task
import pytest
from luigi.execution_summary import LuigiStatusCode

from federation.client import FederationSchedulerFactory
from federation.placement import Placement
from shard.store import open_store
from tests.fedcluster import FedCluster
from tests.procs import wait_for

#: name -> names of its dependencies; filled by the test before Luigi builds the DAG
GRAPH: dict[str, list[str]] = {}
OUT: dict[str, Path] = {}


class XNode(luigi.Task):
    task_namespace = "xs"
    name = luigi.Parameter()

    def requires(self) -> list[XNode]:
        return [XNode(name=d) for d in GRAPH[self.name]]

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(OUT["dir"] / f"{self.name}.json"))

    def run(self) -> None:
        started = time.time()
        for dep in self.input():  # the worker checked this too; a missing input would fail the task
            assert dep.exists()
        time.sleep(0.02)
        with self.output().open("w") as f:
            json.dump({"started": started}, f)


def owner_of(placement: Placement, name: str) -> str:
    return placement.owner(XNode(name=name).task_id)


def crossing_dag(placement: Placement, layers: int = 4, tag: str = "") -> tuple[dict[str, list[str]], str]:
    """Layers of one node per shard; each node depends on the previous layer's nodes on *other* shards."""
    shards = placement.shard_ids
    by_shard: dict[str, list[str]] = {s: [] for s in shards}
    i = 0
    while min(len(v) for v in by_shard.values()) < layers:
        name = f"{tag}n{i}"
        by_shard[owner_of(placement, name)].append(name)
        i += 1
    graph: dict[str, list[str]] = {}
    prev: list[str] = []
    for k in range(layers):
        layer = [by_shard[s][k] for s in shards]
        for name in layer:
            graph[name] = [p for p in prev if owner_of(placement, p) != owner_of(placement, name)]
        prev = layer
    # the root depends on the last layer's nodes on other shards than its own
    j = 0
    while True:
        root = f"{tag}root{j}"
        graph[root] = [p for p in prev if owner_of(placement, p) != owner_of(placement, root)]
        if len(graph[root]) == len(shards) - 1:
            break
        del graph[root]
        j += 1
    reachable, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo.extend(graph[name])
    return {k: v for k, v in graph.items() if k in reachable}, root


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FedCluster]:
    c = FedCluster(tmp_path_factory.mktemp("xfed"), 3)
    try:
        yield c.start()
    finally:
        c.stop()


def test_every_edge_crosses_shards_and_luigi_finishes(cluster: FedCluster, tmp_path: Path) -> None:
    placement = Placement.from_config(cluster.config)
    graph, root = crossing_dag(placement, layers=4, tag="a")
    edges = [(name, d) for name, deps in graph.items() for d in deps]
    assert len(edges) >= 15
    assert all(owner_of(placement, d) != owner_of(placement, name) for name, d in edges)
    GRAPH.clear()
    GRAPH.update(graph)
    OUT["dir"] = tmp_path
    result = luigi.build(
        [XNode(name=root)],
        worker_scheduler_factory=FederationSchedulerFactory(cluster.endpoint),
        workers=3,
        log_level="WARNING",
        detailed_summary=True,
    )
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    assert all((tmp_path / f"{n}.json").exists() for n in graph)
    # the history of every shard: no task was handed out (RUNNING) before all its deps were DONE
    ids = {XNode(name=n).task_id: n for n in graph}
    running: dict[str, float] = {}
    done: dict[str, float] = {}
    for sid in cluster.config.shard_ids:
        spec = cluster.config.shard(sid)
        with open_store(spec.store, sid, readonly=True) as store:
            for ev in store.events():
                if ev.task_id not in ids or placement.owner(ev.task_id) != sid:
                    continue
                if ev.status == "RUNNING":
                    running.setdefault(ev.task_id, ev.ts)
                elif ev.status == "DONE":
                    done[ev.task_id] = ev.ts
    assert set(running) == set(ids) == set(done)
    for tid, name in ids.items():
        for dep in graph[name]:
            dep_id = XNode(name=dep).task_id
            assert running[tid] >= done[dep_id], f"{name} ran before its dependency {dep} was done"
    # the federation's view: all DONE, each on its owner, mirrors not counted twice
    listed = cluster.call("task_list", status="DONE")
    assert set(ids) <= set(listed)
    health = cluster.health()
    assert sum(s["namespaces"].get("xs", {}).get("DONE", 0) for s in health["shards"]) == len(ids)
    # the dependency graph across shards is complete
    g = cluster.call("dep_graph", task_id=XNode(name=root).task_id)
    assert set(g) == set(ids)
    for tid, node in g.items():
        assert node["status"] == "DONE" and node["name"] == "xs.XNode"
        assert sorted(node["deps"]) == sorted(XNode(name=d).task_id for d in graph[ids[tid]])
    inv = cluster.call("inverse_dep_graph", task_id=XNode(name="an0").task_id)
    reach = {"an0"}
    changed = True
    while changed:
        changed = False
        for name, deps in graph.items():
            if name not in reach and reach & set(deps):
                reach.add(name)
                changed = True
    assert set(inv) == {XNode(name=n).task_id for n in reach}


def pair(placement: Placement, tag: str) -> tuple[str, str]:
    for i in range(10_000):
        dep = luigi.task.task_id_str("xs.Dep", {"i": f"{tag}{i}"})
        parent = luigi.task.task_id_str("xs.Parent", {"i": f"{tag}{i}"})
        if placement.owner(dep) != placement.owner(parent):
            return dep, parent
    raise AssertionError("no crossing pair")


def add(client: Any, task_id: str, worker: str, **kw: Any) -> None:
    client.call("add_task", {"task_id": task_id, "worker": worker, "family": task_id.split("_")[0], **kw})


def test_mirror_is_never_handed_out_and_waits_for_the_owner(cluster: FedCluster) -> None:
    placement = Placement.from_config(cluster.config)
    client = cluster.client()
    dep, parent = pair(placement, "m")
    worker = "w-mirror"
    add(client, parent, worker, deps=[dep])
    # the dependency's shard has not heard of it yet: nothing to do, the parent is pending upstream
    r = client.call("get_work", {"worker": worker, "current_tasks": []})
    assert r["task_id"] is None and r["n_pending_tasks"] == 1
    # the dependent shard holds the mirror as Luigi's placeholder, not as work
    mirror_shard = cluster.shard_client(placement.owner(parent))
    assert mirror_shard.call("task_list", {"status": "UNKNOWN"})[dep]["name"] == ""
    other = "w-other"
    add(client, dep, other)
    assert client.call("get_work", {"worker": worker, "current_tasks": []})["task_id"] is None
    r = client.call("get_work", {"worker": other, "current_tasks": []})
    assert r["task_id"] == dep
    # the mirror follows the owner: RUNNING (shown upstream), then DONE (the parent is runnable)
    wait_for(lambda: mirror_shard.call("task_list", {"status": "RUNNING"}).get(dep), 5, what="mirror RUNNING")
    listed = client.call("task_list", {"status": "PENDING", "upstream_status": "UPSTREAM_RUNNING"})
    assert parent in listed
    add(client, dep, other, status="DONE", runnable=None)
    # no waiting: the relay happened before the DONE was acknowledged
    r = client.call("get_work", {"worker": worker, "current_tasks": []})
    assert r["task_id"] == parent
    add(client, parent, worker, status="DONE", runnable=None)


def test_priority_is_inherited_across_shards(cluster: FedCluster) -> None:
    placement = Placement.from_config(cluster.config)
    client = cluster.client()
    dep, parent = pair(placement, "p")
    add(client, dep, "w-prio", priority=0)
    add(client, parent, "w-prio", priority=70, deps=[dep])
    owner = cluster.shard_client(placement.owner(dep))
    wait_for(
        lambda: owner.call("task_list", {"status": "PENDING"})[dep]["priority"] == 70,
        5,
        what="the dependent's priority to reach the owner",
    )
    assert client.call("task_list", {"status": "PENDING"})[dep]["priority"] == 70


def test_dependent_shard_restart_reconciles(cluster: FedCluster) -> None:
    placement = Placement.from_config(cluster.config)
    client = cluster.client(timeout=5)
    dep, parent = pair(placement, "r")
    worker = "w-restart"
    add(client, parent, worker, deps=[dep])
    add(client, dep, worker)
    assert client.call("get_work", {"worker": worker, "current_tasks": []})["task_id"] == dep
    dependent = placement.owner(parent)
    cluster.kill_shard(dependent)
    add(client, dep, worker, status="DONE", runnable=None)  # relayed while the dependent is down: lost
    cluster.start_shard(dependent)
    # once it is back the router pulls the owner's status into the mirror
    r = wait_for(lambda: _get_work(client, worker), 20, what="parent runnable after the dependent restarted")
    assert r == parent
    cluster.wait_all_up()


def _get_work(client: Any, worker: str) -> str | None:
    try:
        return client.call("get_work", {"worker": worker, "current_tasks": []})["task_id"]
    except Exception:
        return None


def chain(placement: Placement, tag: str) -> tuple[str, str, str]:
    """Ids a <- b <- c (c needs b needs a), each on another shard than the task it depends on."""
    for i in range(10_000):
        a, b, c = (luigi.task.task_id_str(f"xs.{f}", {"i": f"{tag}{i}"}) for f in ("A", "B", "C"))
        if placement.owner(a) != placement.owner(b) != placement.owner(c):
            return a, b, c
    raise AssertionError("no crossing chain")


def _upstream_disabled_calls(a: str, b: str, c: str, worker: str) -> list[tuple[str, dict[str, Any]]]:
    """c needs b needs a; a fails once with retry_count 1 and is DISABLED."""
    policy = {"retry_count": 1, "disable_hard_timeout": 3600, "disable_window": 3600}
    return [
        ("add_task", {"task_id": c, "worker": worker, "family": "xs.C", "deps": [b]}),
        ("add_task", {"task_id": b, "worker": worker, "family": "xs.B", "deps": [a]}),
        ("add_task", {"task_id": a, "worker": worker, "family": "xs.A", "retry_policy_dict": policy}),
        ("get_work", {"worker": worker, "current_tasks": []}),
        (
            "add_task",
            {
                "task_id": a,
                "worker": worker,
                "status": "FAILED",
                "runnable": None,
                "family": "xs.A",
                "retry_policy_dict": policy,
            },
        ),
    ]


def test_upstream_disabled_across_shards_lets_the_worker_exit(cluster: FedCluster) -> None:
    """A task whose upstream is DISABLED on another shard is not pending work (Luigi's UPSTREAM_DISABLED):
    workers see n_pending_tasks fall to what luigid says, two shards away, and back after a re-enable."""
    from luigi.scheduler import Scheduler

    placement = Placement.from_config(cluster.config)
    a, b, c = chain(placement, "ud")
    worker = "w-ud"
    luigid = Scheduler()
    client = cluster.client()
    for method, kwargs in _upstream_disabled_calls(a, b, c, worker):
        expected = getattr(luigid, method)(**kwargs)
        got = client.call(method, kwargs)
        if method == "get_work":
            assert got["task_id"] == expected["task_id"] == a
    assert luigid.task_list("DISABLED", "")[a]["status"] == "DISABLED"
    want = luigid.count_pending(worker)
    assert want["n_pending_tasks"] == 0  # luigid: nothing left that can run, the worker may stop

    def pending() -> int:
        return client.call("count_pending", {"worker": worker})["n_pending_tasks"]

    wait_for(lambda: pending() == want["n_pending_tasks"], 5, what="n_pending_tasks to drop to luigid's 0")
    got = client.call("count_pending", {"worker": worker})
    for key in ("n_pending_tasks", "n_unique_pending", "n_pending_last_scheduled"):
        assert got[key] == want[key], key
    # both dependents are listed as UPSTREAM_DISABLED, as by luigid; the owner's status (PENDING) wins
    for status_filter in ("PENDING",):
        want_list = luigid.task_list(status_filter, "UPSTREAM_DISABLED")
        got_list = client.call("task_list", {"status": status_filter, "upstream_status": "UPSTREAM_DISABLED"})
        assert {b, c} <= set(want_list)
        assert {b, c} <= set(got_list)
        assert got_list[c]["status"] == got_list[b]["status"] == "PENDING"
    assert client.call("get_work", {"worker": worker, "current_tasks": []})["n_pending_tasks"] == 0
    # re-enabled: a is FAILED again (luigid's re_enable), b and c count as pending once more
    luigid.re_enable_task(a)
    client.call("re_enable_task", {"task_id": a})
    want = luigid.count_pending(worker)
    assert want["n_pending_tasks"] == 3
    wait_for(lambda: pending() == want["n_pending_tasks"], 5, what="n_pending_tasks back after re-enable")


def test_concurrent_registrations_of_one_remote_dep_all_wait_for_its_status(cluster: FedCluster) -> None:
    """Two add_tasks in one router turn subscribe the same DONE remote dependency from the same shard:
    neither is answered before the dependency's status reached the mirror, so each worker's next
    get_work hands out its task (Luigi's worker with keep_alive=False would otherwise quit).  The
    owner is frozen (SIGSTOP) for a moment so that its status answer surely comes last."""
    import signal

    import zmq

    from federation import wire

    placement = Placement.from_config(cluster.config)
    client = cluster.client()
    dep = luigi.task.task_id_str("xs.Dep", {"i": "cc"})
    parents: list[str] = []
    i = 0
    while len(parents) < 2:
        p = luigi.task.task_id_str("xs.Parent", {"i": f"cc-{i}"})
        if placement.owner(p) != placement.owner(dep) and (
            not parents or placement.owner(p) == placement.owner(parents[0])
        ):
            parents.append(p)
        i += 1
    add(client, dep, "w-cc-dep")
    assert client.call("get_work", {"worker": "w-cc-dep", "current_tasks": []})["task_id"] == dep
    add(client, dep, "w-cc-dep", status="DONE", runnable=None)  # nobody mirrors it yet: no relay
    workers = ["w-cc-0", "w-cc-1"]
    owner = cluster.shards[placement.owner(dep)]
    ctx = zmq.Context()
    socks = [ctx.socket(zmq.DEALER) for _ in range(2)]
    try:
        for s in socks:
            s.setsockopt(zmq.LINGER, 0)
            s.connect(cluster.endpoint)
        client.call("ping", {"worker": "w-cc-dep"})  # both sockets connected by now
        owner.send_signal(signal.SIGSTOP)
        try:
            for k, s in enumerate(socks):  # back to back: the router takes both in one turn
                body = wire.encode_request(
                    k + 1,
                    "add_task",
                    {"task_id": parents[k], "worker": workers[k], "family": "xs.Parent", "deps": [dep]},
                )
                s.send_multipart([parents[k].encode(), body])
            time.sleep(0.4)  # the dependent shard has answered both add_tasks by now
            assert [s.poll(0) for s in socks] == [0, 0], (
                "an add_task was answered before its dependency's status"
            )
        finally:
            owner.send_signal(signal.SIGCONT)
        for k, s in enumerate(socks):
            assert s.poll(10_000), "no answer to add_task"
            reply = wire.decode_reply(s.recv_multipart()[-1])
            assert reply.ok, reply.error
            got = client.call("get_work", {"worker": workers[k], "current_tasks": []})
            assert got["task_id"] == parents[k], f"{workers[k]} got no work"
    finally:
        for s in socks:
            s.close(0)
        ctx.term()
