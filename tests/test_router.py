"""The router with real shard processes: placement, fan-out reads, get_work, health, bad input, failures."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi.task
import msgpack
import pytest
import zmq

from federation import transport, wire
from federation.config import SchedulerConfig
from federation.errors import BadArgumentsError, ProtocolError, TransportError, UnknownMethodError
from federation.placement import Placement
from tests.fedcluster import FedCluster
from tests.procs import wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FedCluster]:
    c = FedCluster(tmp_path_factory.mktemp("fed"), 3, scheduler=SchedulerConfig(resources={"db": 3}))
    try:
        yield c.start()
    finally:
        c.stop()


def ids_on_each_shard(placement: Placement, family: str, per_shard: int = 2) -> list[str]:
    """Luigi task ids, at least ``per_shard`` owned by each shard."""
    out: list[str] = []
    have: dict[str, int] = {}
    i = 0
    while min((have.get(s, 0) for s in placement.shard_ids), default=0) < per_shard:
        tid = luigi.task.task_id_str(family, {"n": str(i), "run": uuid.uuid4().hex[:6]})
        owner = placement.owner(tid)
        if have.get(owner, 0) < per_shard:
            have[owner] = have.get(owner, 0) + 1
            out.append(tid)
        i += 1
    return out


def add(c: Any, task_id: str, worker: str, **kw: Any) -> None:
    c.call("add_task", {"task_id": task_id, "worker": worker, "family": task_id.split("_")[0], **kw})


def test_single_task_calls_go_to_the_owner(cluster: FedCluster) -> None:
    placement = Placement.from_config(cluster.config)
    client = cluster.client()
    worker = f"w-{uuid.uuid4().hex[:8]}"
    ids = ids_on_each_shard(placement, "ns.Owner")
    for tid in ids:
        add(client, tid, worker)
        client.call("set_task_status_message", {"task_id": tid, "status_message": f"msg {tid}"})
    for sid in cluster.config.shard_ids:
        on_shard = cluster.shard_client(sid).call("task_list", {"status": "PENDING"})
        mine = {t for t in on_shard if t in ids}
        assert mine == {t for t in ids if placement.owner(t) == sid}
    for tid in ids:
        assert client.call("get_task_status_message", {"task_id": tid}) == {
            "taskId": tid,
            "statusMessage": f"msg {tid}",
        }
    # the merged task_list has every task once, with Luigi's serialized shape
    listed = client.call("task_list", {"status": "PENDING"})
    assert set(ids) <= set(listed)
    assert listed[ids[0]]["status"] == "PENDING" and "display_name" in listed[ids[0]]
    # Luigi's limit: more than max_shown_tasks -> {"num_tasks": n}
    over = client.call("task_list", {"status": "PENDING", "max_shown_tasks": 2})
    assert set(over) == {"num_tasks"} and over["num_tasks"] >= len(ids)


def test_get_work_hands_out_one_task_per_call_in_luigis_order(cluster: FedCluster) -> None:
    placement = Placement.from_config(cluster.config)
    client = cluster.client()
    worker = f"w-{uuid.uuid4().hex[:8]}"
    ids = ids_on_each_shard(placement, "ns.Work", per_shard=2)
    for tid in ids:
        add(client, tid, worker)
    client.call("add_worker", {"worker": worker, "info": [["workers", 1], ["host", "h"]]})
    counts = client.call("count_pending", {"worker": worker})
    assert counts["n_pending_tasks"] == len(ids) and counts["n_unique_pending"] == len(ids)
    handed: list[str] = []
    owners: list[str] = []
    while True:
        r = client.call("get_work", {"worker": worker, "host": "h", "current_tasks": handed})
        if r["task_id"] is None:
            assert r["n_pending_tasks"] == 0 and r["worker_state"] == "active"
            break
        assert r["task_id"] not in handed  # never twice, never two per call
        handed.append(r["task_id"])
        owners.append(placement.owner(r["task_id"]))
        assert r["task_family"] == "ns.Work"
    assert sorted(handed) == sorted(ids)
    # Luigi's rank across the shards: equal priorities, so the oldest task first, wherever it lives
    assert handed == ids
    assert len(set(owners)) == 3
    running = client.call("task_list", {"status": "RUNNING"})
    assert set(handed) <= set(running)
    # every shard that knows the worker lists it once, merged
    workers = {w["name"]: w for w in client.call("worker_list", {})}
    assert workers[worker]["num_running"] == len(ids)
    assert set(workers[worker]["running"]) == set(ids)
    assert workers[worker]["host"] == "h"
    for tid in handed:
        add(client, tid, worker, status="DONE", runnable=None)
    assert client.call("get_work", {"worker": worker, "current_tasks": []})["task_id"] is None


def test_ping_delivers_queued_messages_once(cluster: FedCluster) -> None:
    placement = Placement.from_config(cluster.config)
    client = cluster.client()
    worker = f"w-{uuid.uuid4().hex[:8]}"
    for tid in ids_on_each_shard(placement, "ns.Ping", per_shard=1):
        add(client, tid, worker)
    assert client.call("ping", {"worker": worker}) == {"rpc_messages": []}
    client.call("set_worker_processes", {"worker": worker, "n": 3})
    got = client.call("ping", {"worker": worker})
    assert got == {"rpc_messages": [{"name": "set_worker_processes", "kwargs": {"n": 3}}]}
    assert client.call("ping", {"worker": worker}) == {"rpc_messages": []}


def test_resources_pause_and_global_settings_fan_out(cluster: FedCluster) -> None:
    client = cluster.client()
    assert client.call("update_resource", {"resource": "gpu", "amount": 4}) is True
    assert client.call("update_resource", {"resource": "gpu", "amount": -1}) is False
    for sid in cluster.config.shard_ids:
        rows = {r["name"]: r for r in cluster.shard_client(sid).call("resource_list", {})}
        assert rows["gpu"]["num_total"] == 4 and rows["db"]["num_total"] == 3
    rows = {r["name"]: r for r in client.call("resource_list", {})}
    assert rows["gpu"] == {"name": "gpu", "num_total": 4, "num_used": 0, "num_consumer": 0, "running": {}}
    assert client.call("is_pause_enabled", {}) == {"enabled": True}
    client.call("pause", {})
    assert client.call("is_paused", {}) == {"paused": True}
    assert all(cluster.shard_client(s).call("is_paused", {})["paused"] for s in cluster.config.shard_ids)
    client.call("unpause", {})
    assert client.call("is_paused", {}) == {"paused": False}
    assert client.call("has_task_history", {}) is False


def test_federation_health_shape(cluster: FedCluster) -> None:
    placement = Placement.from_config(cluster.config)
    client = cluster.client()
    worker = f"w-{uuid.uuid4().hex[:8]}"
    ids = ids_on_each_shard(placement, "health.Check", per_shard=1)
    for tid in ids:
        add(client, tid, worker)
    h = client.call("federation_health", {})
    assert set(h) == {"router", "default_group", "groups", "shards"}
    assert set(h["router"]) == {"zmq", "http", "version", "time"}
    assert h["router"]["zmq"] == cluster.endpoint and h["router"]["http"] is None
    assert h["default_group"] == "default" and h["groups"] == {"default": ["s0", "s1", "s2"]}
    keys = {
        "shard_id",
        "group",
        "endpoint",
        "up",
        "latency_ms",
        "error",
        "counts",
        "namespaces",
        "workers",
        "backend",
        "location",
        "version",
        "started",
    }
    for s in h["shards"]:
        assert set(s) == keys
        assert s["up"] is True and s["error"] is None and s["latency_ms"] > 0
        assert s["backend"] == "sqlite" and s["location"].endswith(f"{s['shard_id']}.db")
        assert s["namespaces"]["health"]["PENDING"] == 1  # one per shard, by construction
        assert s["workers"] >= 1
        assert s["counts"]["PENDING"] >= 1


def raw_dealer(endpoint: str) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    return ctx, transport.connect_dealer(ctx, endpoint)


def recv_reply(sock: zmq.Socket) -> wire.Reply:
    assert sock.poll(5000), "no reply"
    frames = sock.recv_multipart()
    return wire.decode_reply(frames[-1])


def test_bad_input_at_the_front_gets_errors_and_changes_nothing(cluster: FedCluster) -> None:
    client = cluster.client()
    before = client.call("task_list", {})
    ctx, sock = raw_dealer(cluster.endpoint)
    try:
        sock.send_multipart([b"", b"\xc1not msgpack"])
        r = recv_reply(sock)
        assert not r.ok and r.error["code"] == "bad_msgpack"
        sock.send_multipart([b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i", b"j", b"k", b"l"])
        r = recv_reply(sock)
        assert not r.ok and r.error["code"] == "bad_frames"
        sock.send_multipart([b"", msgpack.packb([1, 7, "add_task", "not a map", {}])])
        r = recv_reply(sock)
        assert not r.ok and r.req_id == 7 and r.error["code"] == "bad_request"
        # junk arguments forwarded undecoded: the owner shard refuses them
        sock.send_multipart([b"T_1_x", msgpack.packb([1, 8, "set_task_status_message", {"task_id": 5}, {}])])
        r = recv_reply(sock)
        assert not r.ok and r.req_id == 8 and r.error["code"] == "bad_arguments"
    finally:
        sock.close(0)
        ctx.term()
    with pytest.raises(UnknownMethodError):
        client.call("no_such_method", {})
    with pytest.raises(BadArgumentsError):
        client.call("add_task", {"task_id": 12, "worker": "w"})
    with pytest.raises(BadArgumentsError):
        client.call("add_task", {"task_id": "X_1_y", "worker": "w", "priority": "high"})
    with pytest.raises(BadArgumentsError):
        client.call("get_work", {"worker": None})
    with pytest.raises(ProtocolError):
        client.call("task_list", {"status": 3})
    assert client.call("task_list", {}) == before  # nothing changed, and the router still serves


def test_shard_down_others_serve_and_it_comes_back(tmp_path: Path) -> None:
    c = FedCluster(tmp_path, 3, timeout=1.0)
    try:
        c.start()
        placement = Placement.from_config(c.config)
        client = c.client(timeout=5)
        worker = "w-down"
        ids = ids_on_each_shard(placement, "ns.Down", per_shard=2)
        for tid in ids:
            add(client, tid, worker)
        c.kill_shard("s1")
        on_s1 = [t for t in ids if placement.owner(t) == "s1"]
        others = [t for t in ids if placement.owner(t) != "s1"]
        with pytest.raises(TransportError) as e:
            add(client, on_s1[0], worker, status="DONE")
        assert e.value.code == "unavailable" and "s1" in str(e.value)
        # the other shards keep serving, reads merge what is reachable
        add(client, others[0], worker, priority=1)
        listed = client.call("task_list", {"status": "PENDING"})
        assert set(others) <= set(listed) and not set(on_s1) & set(listed)
        h = client.call("federation_health", {})
        down = {s["shard_id"]: s for s in h["shards"]}
        assert down["s1"]["up"] is False and down["s1"]["error"]
        assert down["s0"]["up"] and down["s2"]["up"]
        # the worker's get_work: a task from a live shard, or a clear error (never "no work")
        got = []
        for _ in range(len(others)):
            r = client.call("get_work", {"worker": worker, "current_tasks": got})
            assert r["task_id"] in others
            got.append(r["task_id"])
        with pytest.raises(TransportError):
            client.call("get_work", {"worker": worker, "current_tasks": got})
        # it comes back with its state (SQLite), and its work goes on
        c.start_shard("s1")
        wait_for(
            lambda: all(s["up"] for s in c.call("federation_health", timeout=5)["shards"]),
            20,
            what="s1 up again",
        )
        add(client, on_s1[0], worker, status="PENDING")
        r = client.call("get_work", {"worker": worker, "current_tasks": got})
        assert r["task_id"] in on_s1
    finally:
        c.stop()


def test_router_restart_rebuilds_workers_and_subscriptions(tmp_path: Path) -> None:
    c = FedCluster(tmp_path, 3)
    try:
        c.start()
        placement = Placement.from_config(c.config)
        client = c.client(timeout=5)
        worker = "w-restart"
        # a dependent on one shard, its dependency on another
        dep, parent = None, None
        for i in range(1000):
            d = luigi.task.task_id_str("ns.Dep", {"i": str(i)})
            p = luigi.task.task_id_str("ns.Parent", {"i": str(i)})
            if placement.owner(d) != placement.owner(p):
                dep, parent = d, p
                break
        assert dep and parent
        add(client, parent, worker, deps=[dep])
        add(client, dep, worker)
        r = client.call("get_work", {"worker": worker, "current_tasks": []})
        assert r["task_id"] == dep
        c.kill_router()
        # while the router is away, the worker reports to the owner shard directly
        c.shard_client(placement.owner(dep)).call(
            "add_task", {"task_id": dep, "worker": worker, "status": "DONE", "runnable": None}
        )
        c.start_router()
        client = c.client(timeout=5)
        # the new router learned the worker and the subscription from the shards and pulled the status
        r = wait_for(
            lambda: client.call("get_work", {"worker": worker, "current_tasks": []})["task_id"],
            10,
            what="the dependent to become runnable after the router restart",
        )
        assert r == parent
    finally:
        c.stop()


def test_unknown_worker_calls_are_harmless(cluster: FedCluster) -> None:
    client = cluster.client()
    worker = f"nobody-{uuid.uuid4().hex[:6]}"
    r = client.call("get_work", {"worker": worker, "current_tasks": []})
    assert r["task_id"] is None and r["n_pending_tasks"] == 0
    assert client.call("ping", {"worker": worker}) == {"rpc_messages": []}
    assert client.call("count_pending", {"worker": worker})["n_pending_tasks"] == 0
    assert client.call("fetch_error", {"task_id": "Nope_x_0123456789"}) == {
        "taskId": "Nope_x_0123456789",
        "error": "",
    }


def test_pinned_namespaces_stay_on_their_group(tmp_path: Path) -> None:
    c = FedCluster(
        tmp_path, 3, groups={"default": ["s0", "s1"], "finance": ["s2"]}, namespaces={"finance": "finance"}
    )
    try:
        c.start()
        client = c.client()
        worker = "w-groups"
        fin = [
            luigi.task.task_id_str(f, {"d": str(i)})
            for i in range(12)
            for f in ("finance.Post", "finance.gl.Close")
        ]
        other = [luigi.task.task_id_str(f, {"d": str(i)}) for i in range(12) for f in ("daily.Load", "Plain")]
        for tid in fin + other:
            add(client, tid, worker)
        on = {sid: set(c.shard_client(sid).call("task_list", {})) for sid in c.config.shard_ids}
        assert on["s2"] == set(fin)
        assert on["s0"] | on["s1"] == set(other) and on["s0"] and on["s1"]
        h = c.health()
        assert h["groups"] == {"default": ["s0", "s1"], "finance": ["s2"]}
        assert [s["group"] for s in h["shards"]] == ["default", "default", "finance"]
        assert h["shards"][2]["namespaces"] == {"finance": {"PENDING": 12}, "finance.gl": {"PENDING": 12}}
        # one worker, work in both groups: get_work reaches all of it
        handed = []
        while (r := client.call("get_work", {"worker": worker, "current_tasks": handed}))["task_id"]:
            handed.append(r["task_id"])
        assert sorted(handed) == sorted(fin + other)
    finally:
        c.stop()


def test_a_shard_with_another_placement_is_flagged(tmp_path: Path) -> None:
    c = FedCluster(tmp_path, 2)
    try:
        c.start()
        c.kill_shard("s1")
        other = c.config.replace(namespaces={"finance": "default"}, groups={"default": ("s0", "s1")})
        c.config_path.write_text(other.to_toml())  # s1 restarts with a different [namespaces]
        c.start_shard("s1")
        h = wait_for(
            lambda: (h := c.call("federation_health", timeout=5))["shards"][1]["up"] and h, 20, what="s1 back"
        )
        assert h["shards"][0]["error"] is None
        assert "placement differs" in (h["shards"][1]["error"] or "")
    finally:
        c.stop()


def test_owner_names_the_shard_placement_chose(tmp_path: Path) -> None:
    from federation.placement import Placement

    cluster = FedCluster(tmp_path, 3).start()
    try:
        placement = Placement.from_config(cluster.config)
        for tid in ("daily.Load_2026_11_20_orders_69f73ffafa", "A", "x.y.Z_1_abc"):
            assert cluster.call("owner", task_id=tid) == {
                "task_id": tid,
                "shard_id": placement.owner(tid),
                "group": "default",
            }
        with pytest.raises(BadArgumentsError):
            cluster.call("owner", task_id=5)
    finally:
        cluster.stop()


def test_a_turns_requests_for_one_shard_go_in_one_bundle_and_are_answered_each() -> None:
    """``ZmqShardPool``: a shard that takes bundles gets one message per router turn
    (``flush_sends``); its answers reach each call's callback; a shard that does not is sent
    each request alone."""
    from federation.config import ShardSpec
    from router.server import ZmqShardPool

    ctx = zmq.Context()
    shard = ctx.socket(zmq.ROUTER)
    port = shard.bind_to_random_port("tcp://127.0.0.1")
    got: list[tuple[Any, Any]] = []
    deferred: list[Any] = []
    pool = ZmqShardPool(
        ctx,
        [(ShardSpec("s0", f"tcp://127.0.0.1:{port}", "sqlite://"), "default")],
        timeout=5.0,
        defer=deferred.append,
    )
    link = pool.links["s0"]
    try:
        # the DEALER sends only over a completed connection (ZMQ_IMMEDIATE): wait for it
        wait_for(lambda: transport.send_frames(pool._socks["s0"], [b"hello"]), timeout=5)
        assert shard.poll(5000) and shard.recv_multipart()[1:] == [b"hello"]
        for bundles in (True, False):
            link.bundles = bundles
            for i in range(3):
                pool.call("s0", "ping", {"n": i}, lambda r, e: got.append((r, e)))
            pool.flush_sends()
            messages = []
            while sum(1 if m[1] != wire.BUNDLE else (len(m) - 2) // 3 for m in messages) < 3:
                assert shard.poll(5000)
                messages.append(shard.recv_multipart())
            if bundles:
                assert len(messages) == 1 and messages[0][1] == wire.BUNDLE and len(messages[0]) == 2 + 3 * 3
                identity, rest = messages[0][0], messages[0][2:]
                requests = [rest[i : i + 3] for i in range(0, 9, 3)]
            else:
                assert len(messages) == 3 and all(m[1] != wire.BUNDLE for m in messages)
                identity, requests = messages[0][0], [m[1:] for m in messages]
            assert [
                wire.decode_request(r[2], wire.DEFAULT_MAX_MESSAGE_BYTES).kwargs["n"] for r in requests
            ] == [0, 1, 2]
            answers = []
            for tag, _key, body in reversed(requests):
                req = wire.decode_request(body, wire.DEFAULT_MAX_MESSAGE_BYTES)
                answers.append([tag, wire.encode_ok(req.req_id, req.kwargs["n"])])
            if bundles:  # answered in one bundle too: [BUNDLE, tag, body, summaries or b"", ...]
                transport.send_frames(
                    shard, [identity, wire.BUNDLE, *(f for a in answers for f in (*a, b""))]
                )
            else:
                for answer in answers:
                    transport.send_frames(shard, [identity, *answer])
            while len(got) < 3:
                assert pool_poll(pool)
            assert sorted(r for r, e in got) == [0, 1, 2] and all(e is None for _, e in got)
            got.clear()
    finally:
        pool.close()
        shard.close(0)
        ctx.term()


def pool_poll(pool: Any) -> bool:
    for sock in pool.sockets():
        if sock.poll(5000):
            pool.drain(sock)
            return True
    return False
