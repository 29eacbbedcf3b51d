"""Security over ZeroMQ with real sockets: no peer in without a known key, no principal out of its
role or namespaces, and no change on a shard but through the router (docs/security.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from federation import wire
from federation.auth import POLICY, SHARD_READS
from federation.errors import AccessDenied, RequestTimeout
from federation.keys import ClientCurve, new_keypair
from router.methods import METHODS
from tests.procs import wait_for
from tests.securecluster import SecureCluster

pytestmark = pytest.mark.e2e

#: every method a shard or the router serves (Luigi's 39, the federation's own, the shards' fed_*)
FED_METHODS = (
    "fed_state",
    "fed_changes",
    "fed_status",
    "fed_mirror_update",
    "fed_raise_priority",
    "fed_get_work",
    "fed_offer",
    "fed_task_list",
    "fed_graph",
    "fed_health",
    "fed_inverse_dep_graph",
    "fed_graph_nodes",
    "fed_add_stakeholders",
    "fed_relay",
    "fed_display_names",
    "shard_info",
    "prune_history",
    "task_events",
)
EVERY_METHOD = sorted(set(METHODS) | set(POLICY) | set(FED_METHODS))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    c = SecureCluster(tmp_path_factory.mktemp("secfed"), 2, http=True)
    try:
        yield c.start()
    finally:
        c.stop()


def split_pair(cluster: SecureCluster, prefix: str) -> tuple[str, str]:
    """Two task ids of namespace ``prefix`` owned by different shards (a remote dependency)."""
    admin = cluster.client()
    first = f"{prefix}.Up_0_aaaa"
    owner = admin.call("owner", {"task_id": first})["shard_id"]
    for i in range(1, 200):
        other = f"{prefix}.Down_{i}_bbbb"
        if admin.call("owner", {"task_id": other})["shard_id"] != owner:
            return first, other
    raise AssertionError("no two ids on different shards")


def mirrored_running(cluster: SecureCluster, up: str, down: str) -> None:
    """Wait for the relay to bring the dependent's shard the owner's RUNNING (the legitimate change)."""
    shard = cluster.shard_client(cluster.client().call("owner", {"task_id": down})["shard_id"])
    wait_for(
        lambda: up in shard.call("task_list", {"status": "RUNNING", "upstream_status": ""}),
        20,
        what="the mirror of the running dependency",
    )


def raw_dealer(endpoint: str, curve: ClientCurve | None) -> Any:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(sock)
    sock.connect(endpoint)
    return sock


def attack_args(task_id: str) -> dict[str, Any]:
    # what the attacker of the issue sent: a DONE forged with a version nobody outranks
    return {
        "task_id": task_id,
        "task": task_id,
        "worker": "attacker",
        "status": "DONE",
        "updates": [[task_id, "DONE", 1e12, 10**9]],
        "before": time.time() + 1e6,
        "is_paused": True,
    }


def replies_within(sock: Any, seconds: float) -> list[list[bytes]]:
    got = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if sock.poll(int(left * 1000) + 1, zmq.POLLIN):
            got.append(sock.recv_multipart())
    return got


def test_peers_without_a_known_key_get_nothing_and_change_nothing(
    cluster: SecureCluster, tmp_path: Path
) -> None:
    up, down = split_pair(cluster, "atk")
    worker = cluster.client_as("worker")
    worker.call("add_task", {"task_id": up, "worker": "w-owner", "status": "PENDING"})
    worker.call("add_task", {"task_id": down, "worker": "w-owner", "status": "PENDING", "deps": [up]})
    got = worker.call("get_work", {"worker": "w-owner", "host": "h"})
    assert got["task_id"] == up  # RUNNING now, owned by w-owner
    mirrored_running(cluster, up, down)
    before = cluster.all_tasks()
    stranger_pub, _ = new_keypair(tmp_path / "stranger", "stranger")
    endpoints = {"router": cluster.endpoint} | {
        sid: cluster.config.shard(sid).endpoint for sid in cluster.config.shard_ids
    }
    socks = []
    for name, endpoint in endpoints.items():
        server = cluster.creds.public("router" if name == "router" else "shard")
        for curve in (None, ClientCurve.from_files(str(stranger_pub), server)):
            sock = raw_dealer(endpoint, curve)
            for i, method in enumerate(EVERY_METHOD):
                body = wire.encode_request(i + 1, method, attack_args(up if i % 2 else down))
                sock.send_multipart([up.encode(), body])
            socks.append((name, curve is not None, sock))
    try:
        for name, with_key, sock in socks:
            assert replies_within(sock, 1.0) == [], (
                f"{name} answered a peer ({'unknown key' if with_key else 'no CURVE'})"
            )
    finally:
        for _, _, sock in socks:
            sock.close(0)
    assert cluster.all_tasks() == before
    assert "refused a ZeroMQ peer with an unknown CURVE key" in cluster.log("router")
    assert worker.call("task_list", {"status": "RUNNING", "upstream_status": ""}).keys() >= {up}


def test_a_shard_takes_changes_only_from_the_router(cluster: SecureCluster) -> None:
    """Even an admin key, let onto a shard to read, cannot forge a mirror or change a task there."""
    up, down = split_pair(cluster, "forge")
    worker = cluster.client_as("worker")
    worker.call("add_task", {"task_id": up, "worker": "w-f", "status": "PENDING"})
    worker.call("add_task", {"task_id": down, "worker": "w-f", "status": "PENDING", "deps": [up]})
    assert worker.call("get_work", {"worker": "w-f", "host": "h"})["task_id"] == up
    mirrored_running(cluster, up, down)
    down_shard = cluster.client().call("owner", {"task_id": down})["shard_id"]
    before = cluster.all_tasks()
    admin_on_shard = cluster.shard_client(down_shard)
    writes = [m for m in EVERY_METHOD if m not in SHARD_READS]
    assert "fed_mirror_update" in writes and "mark_as_done" in writes and "prune_history" in writes
    for method in writes:
        with pytest.raises(AccessDenied, match="only from the router"):
            admin_on_shard.call(method, attack_args(up))
    assert admin_on_shard.call("shard_info", {})["shard_id"] == down_shard  # reads are served
    assert cluster.all_tasks() == before
    # the dependent is still waiting: its mirror of `up` is not DONE
    assert worker.call("get_work", {"worker": "w-f", "host": "h"})["task_id"] is None


def test_a_worker_scoped_to_fin_cannot_change_an_mkt_task(cluster: SecureCluster) -> None:
    mkt = cluster.client_as("mkt-worker")
    mkt.call("add_task", {"task_id": "mkt.Load_1_cccc", "worker": "w-mkt", "status": "PENDING"})
    assert mkt.call("get_work", {"worker": "w-mkt", "host": "h"})["task_id"] == "mkt.Load_1_cccc"
    before = cluster.all_tasks()
    fin = cluster.client_as("fin-worker")
    fin_op = cluster.client_as("fin-operator")
    attempts = [
        (fin, "add_task", {"task_id": "mkt.Load_1_cccc", "worker": "w-fin", "status": "DONE"}),
        (fin, "add_task", {"task_id": "mkt.New_1_dddd", "worker": "w-fin", "status": "PENDING"}),
        (fin, "set_task_status_message", {"task_id": "mkt.Load_1_cccc", "status_message": "x"}),
        (fin, "get_work", {"worker": "w-fin", "host": "h", "assistant": True}),
        (fin_op, "mark_as_done", {"task_id": "mkt.Load_1_cccc"}),
        (fin_op, "forgive_failures", {"task_id": "mkt.Load_1_cccc"}),
        (fin_op, "re_enable_task", {"task_id": "mkt.Load_1_cccc"}),
        (fin_op, "send_scheduler_message", {"worker": "w-mkt", "task": "mkt.Load_1_cccc", "content": "x"}),
        (fin_op, "pause", {}),
        (fin_op, "update_resource", {"resource": "db", "amount": 1}),
    ]
    for client, method, kwargs in attempts:
        with pytest.raises(AccessDenied) as e:
            client.call(method, kwargs)
        assert method in str(e.value) and ("fin" in str(e.value))
    # the hot path cannot be fooled by a routing frame that names a fin task
    with pytest.raises(AccessDenied, match="namespace 'mkt'"):
        fin.call(
            "set_task_progress_percentage",
            {"task_id": "mkt.Load_1_cccc", "progress_percentage": 99},
            routing_key=b"fin.Load_1_cccc",
        )
    assert cluster.all_tasks() == before
    # and the same principals do their job in their own namespace
    fin.call("add_task", {"task_id": "fin.Load_1_eeee", "worker": "w-fin", "status": "DONE"})
    fin_op.call("forgive_failures", {"task_id": "fin.Load_1_eeee"})
    assert "fin.Load_1_eeee" in fin.call("task_list", {"status": "DONE", "upstream_status": ""})


def test_a_viewer_reads_and_cannot_mutate(cluster: SecureCluster) -> None:
    cluster.client_as("worker").call(
        "add_task", {"task_id": "view.T_1_ffff", "worker": "w-v", "status": "PENDING"}
    )
    before = cluster.all_tasks()
    viewer = cluster.client_as("viewer")
    assert "view.T_1_ffff" in viewer.call("task_list", {"status": "PENDING", "upstream_status": ""})
    assert viewer.call("federation_health", {})["shards"]
    mutating = [m for m, rule in POLICY.items() if rule.role != "viewer"]
    assert {"add_task", "mark_as_done", "pause", "disable_worker", "prune_history"} <= set(mutating)
    for method in mutating:
        with pytest.raises(AccessDenied, match=f"may not call {method}"):
            viewer.call(method, attack_args("view.T_1_ffff"))
    assert cluster.all_tasks() == before


def test_only_the_gateway_key_may_assert_a_principal(cluster: SecureCluster) -> None:
    worker = cluster.client_as("worker")
    with pytest.raises(AccessDenied, match="pause"):
        worker.call("pause", {}, meta={"principal": "admin"})
    assert worker.call("is_paused", {})["paused"] is False


def test_a_client_holding_no_key_times_out_with_nothing_changed(cluster: SecureCluster) -> None:
    from federation.transport import ZmqClient

    before = cluster.all_tasks()
    plain = ZmqClient(cluster.endpoint, timeout=0.5)
    try:
        with pytest.raises(RequestTimeout):
            plain.call("pause", {})
    finally:
        plain.close()
    assert cluster.client().call("is_paused", {})["paused"] is False
    assert cluster.all_tasks() == before


def test_the_tui_source_needs_a_key_and_a_viewer_key_cannot_act(cluster: SecureCluster) -> None:
    """``fedctl tui --key``: the TUI's RouterSource talks CURVE; with a viewer's key (--readonly's
    companion) the router itself refuses the TUI's actions."""
    from federation.errors import FederationError
    from tui.source import ACTION_METHODS, RouterSource

    bare = RouterSource(cluster.endpoint, timeout=0.5)
    with bare.session() as s, pytest.raises(RequestTimeout):
        s.call("federation_health", {})
    viewer = RouterSource(cluster.endpoint, timeout=5, curve=cluster.curve("viewer"))
    with viewer.session() as s:
        assert s.call("federation_health", {})["shards"]
        assert ACTION_METHODS
        for method in ACTION_METHODS:
            with pytest.raises(FederationError) as e:
                s.call(method, {"task_id": "view.T_1_ffff", "worker": "w-v"})
            assert e.value.code == "forbidden", method


def test_a_scoped_viewer_reads_only_its_namespaces(cluster: SecureCluster) -> None:
    worker = cluster.client_as("worker")
    for task_id in ("fin.Read_1_aaaa", "mkt.Read_1_bbbb", "Bare_1_cccc"):
        worker.call("add_task", {"task_id": task_id, "worker": "w-r", "status": "PENDING"})
    everything = cluster.client_as("viewer").call("task_list", {"status": "PENDING", "upstream_status": ""})
    assert {"fin.Read_1_aaaa", "mkt.Read_1_bbbb", "Bare_1_cccc"} <= set(everything)
    fin_viewer = cluster.client_as("fin-viewer")
    mine = fin_viewer.call("task_list", {"status": "PENDING", "upstream_status": ""})
    assert "fin.Read_1_aaaa" in mine and all(t.startswith("fin.") for t in mine)
    found = fin_viewer.call("task_search", {"task_str": "Read_1"})
    assert {t for group in found.values() for t in group} == {"fin.Read_1_aaaa"}
    graph = fin_viewer.call("graph", {})
    assert graph and all(t.startswith("fin.") for t in graph)
    with pytest.raises(AccessDenied, match="namespace 'mkt'"):
        fin_viewer.call("fetch_error", {"task_id": "mkt.Read_1_bbbb"})


def test_a_plaintext_peer_is_refused_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer without CURVE never reaches the ZAP handler: the socket's monitor logs it, at most
    once per endpoint and interval however often it retries, and no message gets through."""
    from federation import keys, transport

    public, _secret = new_keypair(tmp_path, "srv")
    curve = keys.server_curve(str(public), {})
    ctx = zmq.Context()
    gate = curve.start(ctx)
    sock = transport.bind_router(ctx, "tcp://127.0.0.1:*", curve=curve)
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    plain = zmq.Context().socket(zmq.DEALER)
    plain.connect(endpoint)
    plain.send_multipart([b"", wire.encode_request(1, "mark_as_done", {"task_id": "A"})])
    try:
        with caplog.at_level("WARNING", logger="federation.keys"):
            wait_for(
                lambda: any("without a valid CURVE handshake" in r.getMessage() for r in caplog.records), 10
            )
            time.sleep(1.0)  # the plaintext peer keeps retrying meanwhile
        refused = [r for r in caplog.records if "without a valid CURVE handshake" in r.getMessage()]
        assert len(refused) == 1, [r.getMessage() for r in refused]
        assert not sock.poll(200)  # nothing got through
    finally:
        plain.close(0)
        sock.close(0)
        gate.stop()
        ctx.term()
