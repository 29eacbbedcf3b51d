"""The shard over real ZeroMQ sockets: calls, durability across restarts, and bad input."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from federation import transport, wire
from federation.errors import BadArgumentsError, RequestTimeout, UnknownMethodError
from federation.transport import ZmqClient
from shard.app import build_shard


class RunningShard:
    def __init__(self, shard_id: str, db_url: str, schema: str | None, **kwargs: Any) -> None:
        self.args = (shard_id, db_url, schema, kwargs)
        self.server = build_shard(shard_id, "tcp://127.0.0.1:*", db_url, schema=schema, **kwargs)
        self.endpoint = self.server.endpoint
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.client = ZmqClient(self.endpoint, timeout=5)

    def call(self, method: str, **kwargs: Any) -> Any:
        return self.client.call(method, kwargs)

    def close(self) -> None:
        self.client.close()
        self.server.stop()
        self.thread.join(10)
        self.server.close()
        self.server.store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def shard_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/s0.db", None
    pg_url = request.getfixturevalue("pg_url")
    return pg_url, request.getfixturevalue("pg_schema")


@pytest.fixture
def shard(shard_target: tuple[str, str | None]) -> Iterator[RunningShard]:
    url, schema = shard_target
    s = RunningShard("s0", url, schema)
    yield s
    s.close()


def add(s: RunningShard, task_id: str, worker: str = "w1", **kw: Any) -> Any:
    return s.call("add_task", task_id=task_id, worker=worker, **kw)


def test_a_worker_cycle_over_zeromq(shard: RunningShard) -> None:
    add(shard, "B", deps=["A"], family="B", params={})
    add(shard, "A", family="A", params={"n": "1"})
    reply = shard.call("get_work", worker="w1", host="h")
    assert reply["task_id"] == "A" and reply["task_family"] == "A" and reply["task_params"] == {"n": "1"}
    assert reply["n_pending_tasks"] == 2
    add(shard, "A", status="DONE", runnable=None)
    assert shard.call("get_work", worker="w1", host="h")["task_id"] == "B"
    add(shard, "B", status="DONE", runnable=None)
    assert shard.call("get_work", worker="w1", host="h")["task_id"] is None
    assert set(shard.call("task_list", status="DONE")) == {"A", "B"}


def test_acknowledged_state_survives_a_restart(shard_target: tuple[str, str | None]) -> None:
    url, schema = shard_target
    s = RunningShard("s0", url, schema)
    add(s, "A", family="A")
    add(s, "B", family="B", deps=["A"], priority=5)
    assert s.call("get_work", worker="w1", host="h")["task_id"] == "A"
    before = {k: s.call(k) for k in ("task_list", "worker_list")}
    s.close()
    s = RunningShard("s0", url, schema)
    try:
        assert s.call("task_list") == before["task_list"]
        assert [w["name"] for w in s.call("worker_list")] == [w["name"] for w in before["worker_list"]]
        add(s, "A", status="DONE", runnable=None)
        assert s.call("get_work", worker="w1", host="h")["task_id"] == "B"
    finally:
        s.close()


def test_a_second_process_for_the_same_shard_is_refused(
    shard: RunningShard, shard_target: tuple[str, str | None]
) -> None:
    from federation.errors import ShardLockedError

    url, schema = shard_target
    with pytest.raises(ShardLockedError):
        build_shard("s0", "tcp://127.0.0.1:*", url, schema=schema)
    assert shard.call("ping", worker="w1") is not None


# -- bad input --------------------------------------------------------------------
def raw_exchange(endpoint: str, frames: list[bytes], timeout: float = 5.0) -> Any:
    ctx = zmq.Context.instance()
    sock = transport.connect_dealer(ctx, endpoint)
    try:
        sock.send_multipart(frames)
        if not sock.poll(int(timeout * 1000)):
            return None
        return wire.decode_reply(sock.recv_multipart()[-1])
    finally:
        sock.close(0)


def state_of(s: RunningShard) -> Any:
    return s.call("task_list"), sorted(w["name"] for w in s.call("worker_list"))


def test_malformed_frames_get_error_replies_and_change_nothing(shard: RunningShard) -> None:
    add(shard, "A", family="A")
    before = state_of(shard)
    cases = [
        (
            [wire.encode_request(1, "add_task", {"task_id": "X", "worker": "w9"})],
            "bad_frames",
        ),  # no routing frame
        ([b"", b"\xc1\xc1 not msgpack"], "bad_msgpack"),
        ([b"", msgpack.packb([1, 5, "add_task"])], "bad_request"),  # truncated envelope
        ([b"", msgpack.packb([1, 6, "add_task", {"task_id": "X", "worker": "w9"}, {}])[:-4]], "bad_msgpack"),
        ([b"", msgpack.packb([99, 7, "ping", {}, {}])], "bad_request"),
        ([b"", wire.encode_request(8, "drop_all_tables", {})], "unknown_method"),
        ([b"", wire.encode_request(9, "__init__", {})], "unknown_method"),
        ([b"", wire.encode_request(10, "add_task", {"task_id": 5, "worker": "w9"})], "bad_arguments"),
        (
            [b"", wire.encode_request(11, "add_task", {"task_id": "X", "worker": "w9", "deps": 7})],
            "bad_arguments",
        ),
        ([b"", wire.encode_request(12, "pause", {"nonsense": 1})], "bad_arguments"),
        ([b"", wire.encode_request(13, "update_resource", {})], "bad_arguments"),
    ]
    for frames, code in cases:
        reply = raw_exchange(shard.endpoint, frames)
        assert reply is not None, f"no reply for {code}"
        assert not reply.ok and reply.error["code"] == code, (frames, reply)
    assert state_of(shard) == before
    assert shard.call("get_work", worker="w1", host="h")["task_id"] == "A"


def test_errors_reach_the_client_as_typed_exceptions(shard: RunningShard) -> None:
    with pytest.raises(UnknownMethodError):
        shard.call("no_such_method")
    with pytest.raises(BadArgumentsError):
        shard.call("add_task", task_id=["not", "a", "string"], worker="w")
    assert shard.call("task_list") == {}


def test_oversized_messages_are_cut_off_and_the_shard_keeps_serving(tmp_path: Path) -> None:
    s = RunningShard("s0", f"sqlite:///{tmp_path}/s0.db", None, max_message_bytes=64 * 1024)
    try:
        big = ZmqClient(s.endpoint, timeout=1.0)
        with pytest.raises(RequestTimeout):
            big.call("add_task", {"task_id": "Big", "worker": "w", "expl": "x" * 200_000})
        big.close()
        assert s.call("task_list") == {}
        add(s, "Small", family="Small")
        assert set(s.call("task_list")) == {"Small"}
    finally:
        s.close()


def test_prometheus_metrics_count_requests_and_commits(shard: RunningShard) -> None:
    import urllib.request

    host, port = shard.server.metrics.serve("127.0.0.1:0")
    add(shard, "A", family="A")
    with pytest.raises(UnknownMethodError):
        shard.call("no_such_method")
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    assert 'fed_shard_requests_total{method="add_task",outcome="ok",shard="s0"} 1.0' in text
    assert 'fed_shard_requests_total{method="(other)",outcome="unknown_method",shard="s0"} 1.0' in text
    assert "fed_shard_commit_seconds_count" in text


def test_a_bundle_of_requests_is_answered_request_by_request_in_order(shard: RunningShard) -> None:
    ctx = zmq.Context.instance()
    sock = transport.connect_dealer(ctx, shard.endpoint)
    try:
        requests = [
            (b"t1", wire.encode_request(1, "add_task", {"task_id": "B1", "worker": "w1"})),
            (b"t2", wire.encode_request(2, "add_task", {"task_id": "B2", "worker": "w1", "deps": ["B1"]})),
            (b"t3", wire.encode_request(3, "no_such_method", {})),
            (b"t4", wire.encode_request(4, "get_work", {"worker": "w1", "host": "h"})),
        ]
        sock.send_multipart([wire.BUNDLE, *(f for tag, body in requests for f in (tag, b"", body))])
        assert sock.poll(5000), "no reply"
        frames = sock.recv_multipart()
    finally:
        sock.close(0)
    # the answers come back in one bundle too: [BUNDLE, tag, body, summaries or b"", ...]
    assert frames[0] == wire.BUNDLE and len(frames) == 1 + 3 * len(requests)
    replies = [(frames[i], wire.decode_reply(frames[i + 1])) for i in range(1, len(frames), 3)]
    assert [tag for tag, _ in replies] == [b"t1", b"t2", b"t3", b"t4"]
    assert [r.req_id for _, r in replies] == [1, 2, 3, 4]
    assert replies[2][1].error["code"] == "unknown_method"
    assert replies[3][1].result["task_id"] == "B1"  # B2 waits for B1: applied in the bundle's order
    assert sorted(shard.call("task_list", status="", upstream_status="")) == ["B1", "B2"]


@pytest.mark.parametrize(
    "rest",
    [
        [],
        [b"t1"],
        [b"t1", b""],
        [b"t1", b"", wire.encode_request(1, "add_task", {"task_id": "X", "worker": "w"}), b"t2"],
    ],
)
def test_a_bundle_that_is_not_whole_requests_is_refused_whole(shard: RunningShard, rest: list[bytes]) -> None:
    add(shard, "A", family="A")
    before = state_of(shard)
    reply = raw_exchange(shard.endpoint, [wire.BUNDLE, *rest])
    assert reply is not None and not reply.ok and reply.error["code"] == "bad_frames"
    assert state_of(shard) == before  # the whole request inside was not applied either
