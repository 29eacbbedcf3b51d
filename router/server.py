"""The router: one ZeroMQ front for the whole federation, one DEALER per shard.

One thread runs an event loop over the front ROUTER socket and every shard
DEALER (``zmq.Poller``).  Nothing in it blocks on a shard: every request to
a shard is an entry in a pending table with a deadline, answered by the
shard's reply or by the deadline, so one dead or slow shard costs only the
calls that need it.

Frames (``federation.wire``): a client sends ``[routing_key, body]``; the
router sends a shard ``[tag, routing_key, body]`` and the shard answers
``[tag, reply_body]``.  ``tag`` (8 bytes) indexes the pending table, so a
forwarded call's reply goes back to the client without being decoded, and a
reply after its deadline finds no entry and is dropped.

How each method is served is in :mod:`router.methods`; how answers are
merged in :mod:`router.merge`.  The federation's own machinery:

* **Shard health.**  A shard that misses a deadline (or cannot be sent to)
  is marked down: its calls fail at once with ``unavailable`` (Luigi's
  client retries those), the other shards keep serving, and a ``shard_info``
  probe every half second brings it back.  When it is back it is
  re-synchronised (below).
* **Workers.**  The router learns from ``add_task`` which shards know each
  worker; ``get_work``, ``ping``, ``add_worker`` ... go to those shards, and
  a shard that meets a worker for the first time gets the worker's cached
  ``add_worker`` info, batchers and disabled flag first.
* **Remote dependencies** (docs/federation.md).  When ``add_task`` on shard
  S names a dependency owned by shard O, S holds a *mirror* of it (Luigi's
  own UNKNOWN placeholder) and the router records the subscription.  Every
  shard keeps a change feed (``fed_changes``); the router pulls it every
  ``relay_interval`` and right after forwarding a call that changes a
  mirrored task, relays owners' status changes to the mirrors
  (``fed_mirror_update``) and mirrors' priority rises to owners
  (``fed_raise_priority``).  A worker's ``add_task(status=DONE)`` for a
  mirrored task is answered only after the relay was sent, so the worker's
  next ``get_work`` already finds the dependent runnable.  After any restart
  the router rebuilds its subscriptions from the shards (``fed_state``) and
  pulls the owners' current statuses, so nothing is missed.
* **Global resources.**  Shards report their running resource usage with
  every ``fed_get_work`` and ``fed_changes`` reply; a ``get_work`` that
  could hand out a task needing resources holds the federation-wide
  resource token and tells the shard what the other shards use, so the sum
  never exceeds Luigi's capacities.
"""

from __future__ import annotations

import itertools
import logging
import signal
import struct
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from federation import __version__, transport, wire
from federation.config import FederationConfig, ShardSpec
from federation.errors import (
    BadArgumentsError,
    FederationError,
    ProtocolError,
    TransportError,
    UnknownMethodError,
    error_from_wire,
)
from federation.placement import Placement
from router import merge
from router.methods import (
    ADD_TASK,
    ALL,
    ANY,
    BY_ARG,
    DEP_GRAPH,
    FORWARD,
    FORWARD_RELAY,
    GET_WORK,
    HEALTH,
    INVERSE_DEP_GRAPH,
    METHODS,
    ONE_WORKER,
    OWNER,
    UNDECODED,
    WORKER,
)
from router.metrics import RouterMetrics

log = logging.getLogger("router.server")

_TAG = struct.Struct(">Q")
MAX_FRONT_FRAMES = 2 + wire.MAX_HOPS + 1
#: requests taken from the front per loop turn before the shards' replies get their turn
FRONT_BATCH = 512
PROBE_INTERVAL = 0.5
FIRST_PROBE_DELAY = 0.05
FORGET_INTERVAL = 30.0
#: after the first SIGTERM, how long calls in flight may still be answered
DRAIN_SECONDS = 2.0
#: at start, how long the router waits for its shards before taking requests anyway
WARMUP_SECONDS = 3.0
RESYNC_BACKOFF = 1.0
#: task ids per fed_status / fed_mirror_update message
CHUNK = 5000

Callback = Callable[[Any, FederationError | None], None]


@dataclass(slots=True)
class _Wait:
    """A request in flight to a shard."""

    shard: str
    deadline: float
    sent: float
    cb: Callback
    raw: bool  # the callback gets the undecoded reply body
    probe: bool = False


@dataclass(slots=True)
class ShardLink:
    """The router's view of one shard."""

    spec: ShardSpec
    group: str
    sock: zmq.Socket
    up: bool | None = None  # None: not heard from yet
    error: str | None = None
    latency_ms: float | None = None
    next_probe: float = 0.0
    probe_delay: float = 0.05
    probing: bool = False
    synced: bool = False
    syncing: bool = False
    next_sync: float = 0.0
    federated: bool | None = None
    epoch: Any = None
    cursor: int = 0
    periodic_pull: bool = False
    pulls_sent: int = 0
    pulls_done: int = 0
    need_pull: bool = False
    held: list[tuple[int, _Call]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    resource_pending: bool = True
    res_version: int = 0

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(slots=True)
class WorkerState:
    """What the router knows of one Luigi worker."""

    shards: dict[str, None] = field(default_factory=dict)  # ordered set
    info: dict[str, Any] = field(default_factory=dict)
    batchers: dict[str, dict[str, Any]] = field(default_factory=dict)
    disabled: bool = False
    turn: int = 0
    last_seen: float = field(default_factory=time.monotonic)


class _Call:
    """A client's request: where to answer, and what the answer waits for."""

    __slots__ = ("route", "req_id", "method", "kwargs", "waits", "body", "done")

    def __init__(self, route: list[bytes], req_id: int, method: str, kwargs: dict[str, Any] | None) -> None:
        self.route = route
        self.req_id = req_id
        self.method = method
        self.kwargs = kwargs
        self.waits = 0
        self.body: bytes | None = None
        self.done = False


def peek_header(body: bytes) -> tuple[int, str] | None:
    """``(req_id, method)`` of a request body without decoding its arguments, or None if malformed."""
    try:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(body), 1))
        unpacker.feed(body)
        if unpacker.read_array_header() != 5 or unpacker.unpack() != wire.VERSION:
            return None
        req_id = unpacker.unpack()
        method = unpacker.unpack()
    except Exception:
        return None
    if not isinstance(req_id, int) or isinstance(req_id, bool) or not isinstance(method, str):
        return None
    return req_id, method


class Router:
    """The federation router (see the module docstring)."""

    def __init__(self, config: FederationConfig, *, bind: str | None = None) -> None:
        self.config = config
        self.metrics = RouterMetrics(set(METHODS))
        self.placement = Placement.from_config(config)
        self.owner = self.placement.owner
        self.timeout = config.router.timeout
        self.health_timeout = config.router.health_timeout
        self.relay_interval = config.router.relay_interval
        self.max_graph_nodes = config.scheduler.max_graph_nodes
        self.max_shown_tasks = config.scheduler.max_shown_tasks
        self.http_endpoint: str | None = None
        self.started = time.time()
        self._ctx = zmq.Context()
        self.front = transport.bind_router(
            self._ctx, bind or config.router.zmq, max_message_bytes=config.router.max_message_bytes
        )
        self.endpoint = transport.last_endpoint(self.front)
        self.links: dict[str, ShardLink] = {}
        self._by_sock: dict[zmq.Socket, ShardLink] = {}
        try:
            for spec in config.shards:
                sock = _connect(self._ctx, spec.endpoint, spec.id)
                link = ShardLink(spec, config.group_of_shard(spec.id), sock)
                self.links[spec.id] = link
                self._by_sock[sock] = link
        except BaseException:
            self.close()
            raise
        self.workers: dict[str, WorkerState] = {}
        #: remote dependency -> shards that mirror it; and by owner
        self.subs: dict[str, set[str]] = {}
        self.subs_by_owner: dict[str, set[str]] = defaultdict(set)
        #: highest priority already pushed to a task's owner from a mirror
        self.prio_sent: dict[str, int] = {}
        #: batch id -> shard that handed the batch out; batch runner task id -> that shard
        self.batches: dict[str, str] = {}
        self.pinned: dict[str, str] = {}
        self._tags = itertools.count(1)
        self._waits: dict[bytes, _Wait] = {}
        #: (deadline, tag) of every call sent, one FIFO per timeout (deadlines in each are in order,
        #: so both ends are O(1); a heap of all calls cost ~4 % of the router at 1k tasks/s)
        self._deadlines: dict[float, deque[tuple[float, bytes]]] = {}
        self._soon: list[Callable[[], None]] = []
        #: this turn's new mirror subscriptions, by owner: dependency -> shards that mirror it
        self._status_asks: dict[str, dict[str, set[str]]] = {}
        #: (dependency, mirroring shard) whose owner status is not at the mirror yet -> calls waiting
        self._unsettled: dict[tuple[str, str], list[_Call]] = {}
        self._token_busy = False
        self._token_waiters: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._next_relay = 0.0
        self._next_forget = time.monotonic() + FORGET_INTERVAL
        #: a worker silent this long is gone (Luigi's worker pings every second; luigid drops it after
        #: worker_disconnect_delay); the router forgets it and the batches it was handed
        self.forget_after = max(600.0, 4 * config.scheduler.worker_disconnect_delay)
        self._batch_worker: dict[str, str] = {}
        self.stats = {"requests": 0, "errors": 0, "forwarded": 0}
        self.metrics.watch(self)

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        for link in self.links.values():
            link.sock.close(0)
        self.front.close(0)
        self._ctx.term()

    def serve_forever(self) -> None:
        """Run the loop until :meth:`stop`; sockets stay open (call :meth:`close` after)."""
        log.info("router serving on %s for %d shard(s)", self.endpoint, len(self.links))
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        for link in self.links.values():
            poller.register(link.sock, zmq.POLLIN)
        # warm up: connect to and synchronise the shards before taking requests (they wait in the
        # front socket meanwhile), so the first calls do not find every shard "down, connecting"
        warm_until = time.monotonic() + WARMUP_SECONDS
        while (
            not self._stop.is_set()
            and time.monotonic() < warm_until
            and not all(link.synced for link in self.links.values())
        ):
            self._turn(poller, front=False, timers=True)
        while not self._stop.is_set():
            try:
                self._turn(poller)
            except Exception:  # a bug must not take the federation's front door down
                log.error("router loop error", exc_info=True)
                time.sleep(0.05)
        # drain: no new requests, but the calls in flight get their answers (or their deadline)
        poller.unregister(self.front)
        drain_until = time.monotonic() + DRAIN_SECONDS
        while self._waits and time.monotonic() < drain_until:
            try:
                self._turn(poller, front=False, timers=False)
            except Exception:
                log.error("router loop error while draining", exc_info=True)
                break
        log.info("router stopped")

    def _turn(self, poller: zmq.Poller, *, front: bool = True, timers: bool = True) -> None:
        wait_ms = self._wait_ms()
        events = dict(poller.poll(wait_ms))
        for sock in events:
            if sock is self.front:
                continue
            self._drain_shard(self._by_sock[sock])
        if front and self.front in events:
            self._drain_front()
        self._run_soon()
        self._flush_status_asks()
        self._flush_pulls()
        self._expire()
        if timers:
            self._timers()
        self._run_soon()

    def _wait_ms(self) -> int:
        if self._soon:
            return 0
        now = time.monotonic()
        nxt = min(self._next_relay, now + 0.1)
        for q in self._deadlines.values():
            if q:
                nxt = min(nxt, q[0][0])
        return max(0, int((nxt - now) * 1000) + 1)

    def _run_soon(self) -> None:
        while self._soon:
            todo, self._soon = self._soon, []
            for fn in todo:
                self._safely(fn)

    @staticmethod
    def _safely(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.error("router callback failed", exc_info=True)

    # -- talking to shards ------------------------------------------------------------------------
    def _send(
        self,
        sid: str,
        key: bytes,
        body: bytes,
        cb: Callback,
        *,
        raw: bool = False,
        timeout: float | None = None,
        force: bool = False,
        probe: bool = False,
    ) -> None:
        link = self.links[sid]
        if link.up is False and not force:
            err = self._down_error(link)
            self._soon.append(lambda: cb(None, err))
            return
        tag = _TAG.pack(next(self._tags))
        ok = False
        try:
            ok = transport.send_frames(link.sock, [tag, key, body])
        except TransportError as e:
            log.warning("router: send to shard %s failed: %s", sid, e)
        if not ok:
            self._mark_down(link, "cannot send (not connected or queue full)")
            err = self._down_error(link)
            self._soon.append(lambda: cb(None, err))
            return
        now = time.monotonic()
        span = timeout or self.timeout
        deadline = now + span
        self._waits[tag] = _Wait(sid, deadline, now, cb, raw, probe)
        q = self._deadlines.get(span)
        if q is None:
            q = self._deadlines[span] = deque()
        q.append((deadline, tag))

    def _call(
        self,
        sid: str,
        method: str,
        kwargs: dict[str, Any],
        cb: Callback,
        *,
        timeout: float | None = None,
        force: bool = False,
        probe: bool = False,
    ) -> None:
        body = wire.encode_request(0, method, kwargs)
        self._send(sid, b"", body, cb, timeout=timeout, force=force, probe=probe)

    def _drain_shard(self, link: ShardLink) -> None:
        for _ in range(FRONT_BATCH * 4):
            if not transport.has_input(link.sock):
                return
            try:
                frames = link.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                log.warning("router: shard %s sent %d frames, expected [tag, body]", link.id, len(frames))
                continue
            tag, body = frames
            w = self._waits.pop(tag, None)
            if w is None:
                continue  # its deadline passed; the caller already had its answer
            self.metrics.shard_round_trip(link.id, time.monotonic() - w.sent)
            if w.probe:
                link.latency_ms = (time.monotonic() - w.sent) * 1000.0
            if link.up is not True:
                self._mark_up(link)
            if w.raw:
                self._safely(lambda w=w, body=body: w.cb(body, None))
                continue
            try:
                reply = wire.decode_reply(body)
            except ProtocolError as e:
                self._safely(lambda w=w, e=e: w.cb(None, e))
                continue
            if reply.ok:
                self._safely(lambda w=w, r=reply: w.cb(r.result, None))
            else:
                err = error_from_wire(reply.error)
                self._safely(lambda w=w, err=err: w.cb(None, err))

    def _expire(self) -> None:
        now = time.monotonic()
        due: list[bytes] = []
        for q in self._deadlines.values():
            while q and q[0][0] <= now:
                due.append(q.popleft()[1])
        for tag in due:
            w = self._waits.pop(tag, None)
            if w is None:
                continue
            link = self.links[w.shard]
            self._mark_down(link, f"no reply within {w.deadline - w.sent:g} s")
            err = self._down_error(link)
            self._safely(lambda w=w, err=err: w.cb(None, err))

    def _down_error(self, link: ShardLink) -> TransportError:
        return TransportError(
            f"shard {link.id} ({link.spec.endpoint}) is unavailable: {link.error or 'down'}"
        )

    def _mark_down(self, link: ShardLink, reason: str) -> None:
        if link.up is not False:
            log.warning("router: shard %s is down: %s", link.id, reason)
        link.up = False
        link.error = reason
        link.synced = False
        link.syncing = False
        link.periodic_pull = False
        link.next_probe = time.monotonic() + link.probe_delay
        # everything still waiting on this shard fails now rather than at its own deadline
        err = self._down_error(link)
        for tag, w in list(self._waits.items()):
            if w.shard == link.id and not w.probe:
                del self._waits[tag]
                self._soon.append(lambda w=w: w.cb(None, err))
        held, link.held = link.held, []
        for _, call in held:
            self._soon.append(lambda call=call: self._release(call))

    def _mark_up(self, link: ShardLink) -> None:
        if link.up is False:
            log.info("router: shard %s is back", link.id)
        link.up = True
        link.error = None
        link.probe_delay = FIRST_PROBE_DELAY
        link.next_sync = 0.0  # resynchronise at once

    # -- timers: probes, resync, relay -----------------------------------------------------------
    def _timers(self) -> None:
        now = time.monotonic()
        for link in self.links.values():
            if link.up is False:
                if not link.probing and now >= link.next_probe:
                    self._probe(link)
            elif not link.synced and not link.syncing and now >= link.next_sync:
                self._resync(link)
        if now >= self._next_forget:
            self._next_forget = now + FORGET_INTERVAL
            self._forget(now)
        if now >= self._next_relay:
            self._next_relay = now + self.relay_interval
            for link in self.links.values():
                if link.up and link.synced and link.federated and not link.periodic_pull:
                    link.periodic_pull = True
                    self._pull(link, periodic=True)

    def _forget(self, now: float) -> None:
        gone = [w for w, ws in self.workers.items() if now - ws.last_seen > self.forget_after]
        for w in gone:
            del self.workers[w]
        if gone and self.batches:
            dead = set(gone)
            for batch_id in [b for b, w in self._batch_worker.items() if w in dead]:
                self.batches.pop(batch_id, None)
                del self._batch_worker[batch_id]

    def _probe(self, link: ShardLink) -> None:
        link.probing = True

        def done(result: Any, err: FederationError | None) -> None:
            link.probing = False
            # quick at first (a shard still connecting), then every PROBE_INTERVAL
            link.probe_delay = min(PROBE_INTERVAL, link.probe_delay * 2)
            link.next_probe = time.monotonic() + link.probe_delay

        self._call(link.id, "shard_info", {}, done, timeout=self.health_timeout, force=True, probe=True)

    # -- client requests -------------------------------------------------------------------------
    def _drain_front(self) -> None:
        for _ in range(FRONT_BATCH):
            if not transport.has_input(self.front):
                return
            try:
                frames = self.front.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.stats["requests"] += 1
            try:
                self._on_request(frames)
            except Exception as e:
                log.error("router: request failed", exc_info=True)
                self._reply_error(
                    frames[:1] if len(frames) < 3 else frames[:-2],
                    wire.peek_req_id(frames[-1]),
                    FederationError(f"router error: {type(e).__name__}: {e}"),
                )

    def _on_request(self, frames: list[bytes]) -> None:
        if len(frames) < 3 or len(frames) > MAX_FRONT_FRAMES:
            self.stats["errors"] += 1
            log.warning(
                "router: dropped a message of %d frames (expected [routing_key, body])", len(frames) - 1
            )
            self._reply_error(
                frames[:1],
                wire.peek_req_id(frames[-1]) if len(frames) > 1 else -1,
                ProtocolError(
                    f"expected frames [routing_key, body], got {len(frames) - 1} frame(s)", code="bad_frames"
                ),
            )
            return
        route, key, body = frames[:-2], frames[-2], frames[-1]
        if len(body) > self.config.router.max_message_bytes:
            self._reply_error(
                route,
                wire.peek_req_id(body),
                ProtocolError("request exceeds the size limit", code="too_large"),
            )
            return
        head = peek_header(body) if key else None
        if head is not None and head[1] in UNDECODED:
            # the hot path: a single-task call placed by its routing frame, body passed through
            self.metrics.request(head[1])
            self._forward(_Call(route, head[0], head[1], None), self._owner_of_key(key), key, body)
            return
        try:
            req = wire.decode_request(body, self.config.router.max_message_bytes)
        except ProtocolError as e:
            self.stats["errors"] += 1
            self._reply_error(route, wire.peek_req_id(body), e)
            return
        call = _Call(route, req.req_id, req.method, req.kwargs)
        self.metrics.request(req.method)
        spec = METHODS.get(req.method)
        if spec is None:
            self.stats["errors"] += 1
            self._fail(call, UnknownMethodError(f"unknown method {req.method!r}"))
            return
        kind, option = spec
        kwargs = req.kwargs
        if kind == FORWARD:
            task_id = kwargs.get("task_id")
            self._forward(call, self._owner_or_any(task_id), _key(task_id), body)
        elif kind == ADD_TASK:
            self._add_task(call, body)
        elif kind == FORWARD_RELAY:
            self._forward_relay(call, body)
        elif kind == BY_ARG:
            task_id = kwargs.get(option)
            self._forward(call, self._owner_or_any(task_id), _key(task_id), body)
        elif kind == GET_WORK:
            self._get_work(call)
        elif kind == WORKER:
            self._worker_call(call, option)
        elif kind == ONE_WORKER:
            self._one_worker_call(call)
        elif kind == ALL:
            self._all_call(call, option)
        elif kind == ANY:
            self._any_call(call)
        elif kind == DEP_GRAPH:
            self._dep_graph(call)
        elif kind == INVERSE_DEP_GRAPH:
            self._inverse_dep_graph(call)
        elif kind == HEALTH:
            self._health(call)
        elif kind == OWNER:
            self._owner(call)

    def _route(self, task_id: str) -> str:
        """The shard serving ``task_id``: its owner, unless it is a batch runner pinned to its batch's shard."""
        if self.pinned:
            pinned = self.pinned.get(task_id)
            if pinned is not None:
                return pinned
        return self.owner(task_id)

    def _owner_of_key(self, key: bytes) -> str:
        try:
            return self._route(key.decode("utf-8"))
        except UnicodeDecodeError:
            return self._route(key.decode("utf-8", "replace"))

    def _owner_or_any(self, task_id: Any) -> str:
        if isinstance(task_id, str):
            return self._route(task_id)
        return self._any_link_id()

    def _any_link_id(self) -> str:
        for link in self.links.values():
            if link.up is not False:
                return link.id
        return next(iter(self.links))

    # -- answering clients -------------------------------------------------------------------------
    def _send_front(self, route: list[bytes], body: bytes) -> None:
        try:
            transport.send_frames(self.front, [*route, body])
        except TransportError as e:
            log.warning("router: cannot answer a client: %s", e)

    def _reply_error(self, route: list[bytes], req_id: int, err: FederationError) -> None:
        self.metrics.errors.labels(err.code).inc()
        self._send_front(route, wire.encode_error(req_id, err))

    def _reply(self, call: _Call, result: Any) -> None:
        if call.done:
            return
        call.done = True
        try:
            body = wire.encode_ok(call.req_id, result)
        except Exception as e:
            log.error("router: cannot encode the answer to %s", call.method, exc_info=True)
            body = wire.encode_error(call.req_id, FederationError(f"cannot encode reply: {e}"))
        self._send_front(call.route, body)

    def _fail(self, call: _Call, err: FederationError) -> None:
        if call.done:
            return
        call.done = True
        self.metrics.errors.labels(err.code).inc()
        self._send_front(call.route, wire.encode_error(call.req_id, err))

    def _release(self, call: _Call) -> None:
        """One thing the answer waited for is done; send the answer when nothing is left."""
        call.waits -= 1
        if call.waits <= 0 and call.body is not None and not call.done:
            call.done = True
            self._send_front(call.route, call.body)

    # -- forwarding ----------------------------------------------------------------------------------
    def _forward(self, call: _Call, sid: str, key: bytes, body: bytes) -> None:
        self.stats["forwarded"] += 1

        def done(reply_body: Any, err: FederationError | None) -> None:
            if err is not None:
                self._fail(call, err)
                return
            call.body = reply_body
            if call.waits <= 0 and not call.done:
                call.done = True
                self._send_front(call.route, reply_body)

        self._send(sid, key, body, done, raw=True)

    def _hold_for_relay(self, call: _Call, link: ShardLink) -> None:
        """Answer ``call`` only after the owner's next change-feed pull has been relayed.

        The pull is sent once the shard is synchronised (right away, normally); a shard that goes
        down or turns out not to be federated releases what it held.
        """
        if link.up is False or link.federated is False:
            return
        call.waits += 1
        link.need_pull = True
        link.held.append((link.pulls_sent + 1, call))

    def _add_task(self, call: _Call, body: bytes) -> None:
        kwargs = call.kwargs or {}
        task_id = kwargs.get("task_id")
        if not isinstance(task_id, str):
            self._fail(call, BadArgumentsError("add_task: task_id must be a string"))
            return
        batch_id = kwargs.get("batch_id")
        if isinstance(batch_id, str) and batch_id in self.batches:
            # Luigi's batch runner: its task id is new, its members sit on the shard that handed
            # the batch out, and that shard must see the runner's every report
            self.pinned[task_id] = self.batches[batch_id]
        sid = self._route(task_id)
        runner = task_id in self.pinned
        if runner and kwargs.get("status") in ("DONE", "FAILED", "DISABLED"):
            del self.pinned[task_id]
        link = self.links[sid]
        worker = kwargs.get("worker")
        if isinstance(worker, str) and link.up is not False:
            self._meet_worker(worker, sid)
        if kwargs.get("resources"):
            link.resource_pending = True
            link.res_version += 1
        if runner or task_id in self.subs:
            # a batch runner's report also changes its members, which other shards may mirror
            self._hold_for_relay(call, link)
        self._forward(call, sid, task_id.encode("utf-8"), body)
        # remote dependencies: the shard of this task mirrors them from now on.  The answer waits
        # until the owner's current status of each has been sent to the mirror (after the add_task
        # that makes the placeholder: same FIFO), so the worker's next get_work sees it — also
        # when another call of this turn subscribed the same dependency first.
        for field_name in ("deps", "new_deps"):
            deps = kwargs.get(field_name)
            if not isinstance(deps, list):
                continue
            for dep in deps:
                if not isinstance(dep, str):
                    continue
                dep_owner = self.owner(dep)
                if dep_owner == sid:
                    continue
                key = (dep, sid)
                if self._subscribe(dep, sid):
                    self._status_asks.setdefault(dep_owner, {}).setdefault(dep, set()).add(sid)
                    waiting = self._unsettled.setdefault(key, [])
                else:
                    waiting = self._unsettled.get(key)
                    if waiting is None:
                        continue  # its status reached the mirror already
                if not any(c is call for c in waiting):
                    call.waits += 1
                    waiting.append(call)

    def _flush_status_asks(self) -> None:
        """One ``fed_status`` per owner for every dependency subscribed this turn (not one per add_task)."""
        asks, self._status_asks = self._status_asks, {}
        for owner, targets in asks.items():

            def settled(targets: dict[str, set[str]] = targets) -> None:
                for dep, sids in targets.items():
                    for sid in sids:
                        for call in self._unsettled.pop((dep, sid), ()):
                            self._release(call)

            self._relay_status(owner, list(targets), targets, settled)

    def _forward_relay(self, call: _Call, body: bytes) -> None:
        task_id = (call.kwargs or {}).get("task_id")
        sid = self._owner_or_any(task_id)
        if isinstance(task_id, str) and task_id in self.subs:
            self._hold_for_relay(call, self.links[sid])
        self._forward(call, sid, _key(task_id), body)

    # -- workers -------------------------------------------------------------------------------------
    def _meet_worker(self, worker: str, sid: str) -> None:
        """Record that shard ``sid`` knows ``worker``; bring it up to date if it is new there."""
        ws = self.workers.get(worker)
        if ws is None:
            ws = self.workers[worker] = WorkerState()
        ws.last_seen = time.monotonic()
        if sid in ws.shards:
            return
        ws.shards[sid] = None
        self._replay_worker(worker, ws, sid)

    def _replay_worker(self, worker: str, ws: WorkerState, sid: str) -> None:
        ignore: Callback = lambda r, e: None  # noqa: E731 - best effort; a resync replays again
        if ws.info:
            self._call(
                sid, "add_worker", {"worker": worker, "info": [[k, v] for k, v in ws.info.items()]}, ignore
            )
        for batcher in ws.batchers.values():
            self._call(sid, "add_task_batcher", batcher, ignore)
        if ws.disabled:
            self._call(sid, "disable_worker", {"worker": worker}, ignore)

    def _worker_targets(self, worker: Any, *, all_shards: bool = False) -> list[str]:
        """Shards that know ``worker`` (all shards for an assistant), down ones left out.

        Until every shard has been synchronised after a start, shards not yet
        synchronised are asked too: they may know the worker.
        """
        if all_shards:
            ids = list(self.links)
        else:
            ws = self.workers.get(worker) if isinstance(worker, str) else None
            ids = list(ws.shards) if ws else []
            ids += [
                lid
                for lid, link in self.links.items()
                if not link.synced and link.up is not False and lid not in ids
            ]
        return ids

    def _remember_worker_call(self, call: _Call) -> None:
        kwargs = call.kwargs or {}
        worker = kwargs.get("worker")
        if not isinstance(worker, str):
            return
        ws = self.workers.setdefault(worker, WorkerState())
        ws.last_seen = time.monotonic()
        if call.method == "add_worker":
            info = kwargs.get("info")
            try:
                ws.info.update(dict(info) if isinstance(info, (list, dict)) else {})
            except (TypeError, ValueError):
                pass  # the shards will say what is wrong with it
        elif call.method == "disable_worker":
            ws.disabled = True
        elif call.method == "add_task_batcher":
            family = kwargs.get("task_family")
            if isinstance(family, str):
                ws.batchers[family] = dict(kwargs)

    def _worker_call(self, call: _Call, how: str) -> None:
        kwargs = call.kwargs or {}
        self._remember_worker_call(call)
        worker = kwargs.get("worker")
        if call.method == "announce_scheduling_failure" and not isinstance(worker, str):
            worker = None
        targets = self._worker_targets(worker)
        if not targets:
            empty: Any = None
            if how == "counts":
                empty = {k: v for k, v in merge.merge_counts([]).items()}
            elif how == "ping":
                empty = {"rpc_messages": []}
            self._reply(call, empty)
            return

        def done(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            if how == "ping":
                # Luigi only logs a failed ping; what the reachable shards queued is still delivered
                self._reply(call, merge.merge_ping(results))
            elif errors:
                self._fail(call, errors[0][1])
            elif how == "counts":
                self._reply(call, merge.merge_counts(r for _, r in results))
            else:
                self._reply(call, None)

        self._gather(targets, call.method, kwargs, done)

    def _one_worker_call(self, call: _Call) -> None:
        # set_worker_processes queues one message for the worker; one shard must queue it, once
        targets = [
            t
            for t in self._worker_targets((call.kwargs or {}).get("worker"))
            if self.links[t].up is not False
        ]
        sid = targets[0] if targets else self._any_link_id()
        self._call(
            sid,
            call.method,
            call.kwargs or {},
            lambda r, e: self._fail(call, e) if e else self._reply(call, r),
        )

    # -- fan-out -------------------------------------------------------------------------------------
    def _gather(
        self,
        targets: Iterable[str],
        method: str,
        kwargs: dict[str, Any] | Callable[[str], dict[str, Any]],
        done: Callable[[list[tuple[str, Any]], list[tuple[str, FederationError]]], None],
        *,
        timeout: float | None = None,
        force: bool = False,
    ) -> None:
        """Call every target; ``done(results, errors)`` once all have answered or failed."""
        ids = list(dict.fromkeys(targets))
        results: dict[str, Any] = {}
        errors: dict[str, FederationError] = {}
        if not ids:
            self._soon.append(lambda: done([], []))
            return

        def one(sid: str) -> Callback:
            def cb(result: Any, err: FederationError | None) -> None:
                if err is not None:
                    errors[sid] = err
                else:
                    results[sid] = result
                if len(results) + len(errors) == len(ids):
                    done(
                        [(s, results[s]) for s in ids if s in results],
                        [(s, errors[s]) for s in ids if s in errors],
                    )

            return cb

        for sid in ids:
            kw = kwargs(sid) if callable(kwargs) else kwargs
            self._call(sid, method, kw, one(sid), timeout=timeout, force=force)

    def _all_call(self, call: _Call, how: str) -> None:
        kwargs = call.kwargs or {}
        reads = how not in ("none", "first")
        targets = [lid for lid, link in self.links.items() if not (reads and link.up is False)]
        if not targets:
            self._fail(call, TransportError("no shard is available"))
            return

        def done(results: list[tuple[str, Any]], errors: list[tuple[str, FederationError]]) -> None:
            bad = [e for _, e in errors if not isinstance(e, TransportError)]
            if bad or (errors and not reads) or not results:
                self._fail(call, (bad or [e for _, e in errors])[0])
                return
            try:
                self._reply(call, self._merge(how, kwargs, results))
            except (TypeError, ValueError, AttributeError) as e:
                self._fail(call, ProtocolError(f"{call.method}: shards answered in an unexpected shape: {e}"))

        self._gather(targets, call.method, kwargs, done)

    def _merge(self, how: str, kwargs: dict[str, Any], results: list[tuple[str, Any]]) -> Any:
        owner = self.owner
        if how == "task_list":
            return merge.merge_task_list(
                results,
                owner,
                limit=bool(kwargs.get("limit", True)),
                max_shown_tasks=kwargs.get("max_shown_tasks") or self.max_shown_tasks,
                upstream_status=kwargs.get("upstream_status") or "",
            )
        if how == "worker_list":
            return merge.merge_worker_list(
                results, owner, include_running=bool(kwargs.get("include_running", True))
            )
        if how == "resource_list":
            return merge.merge_resource_list(results, owner)
        if how == "graph":
            return merge.merge_graph(results, owner)
        if how == "task_search":
            return merge.merge_task_search(results, owner)
        if how == "any_paused":
            return {"paused": any(isinstance(r, dict) and r.get("paused") for _, r in results)}
        if how == "first":
            return results[0][1]
        if how == "sum_deleted":  # prune_history: what each shard that answered deleted
            per_shard = {sid: int(r.get("deleted")) for sid, r in results}
            return {
                "deleted": sum(per_shard.values()),
                "shards": per_shard,
                "more": any(bool(r.get("more")) for _, r in results),
            }
        return None

    def _any_call(self, call: _Call) -> None:
        self._call(
            self._any_link_id(),
            call.method,
            call.kwargs or {},
            lambda r, e: self._fail(call, e) if e else self._reply(call, r),
        )

    # -- get_work --------------------------------------------------------------------------------------
    def _get_work(self, call: _Call) -> None:
        kwargs = call.kwargs or {}
        worker = kwargs.get("worker")
        if not isinstance(worker, str):
            self._fail(call, BadArgumentsError("get_work: worker is required"))
            return
        assistant = bool(kwargs.get("assistant"))
        targets = self._worker_targets(worker, all_shards=assistant)
        ws = self.workers.get(worker)
        if ws is not None:
            ws.last_seen = time.monotonic()
        if ws is not None and targets:
            # fair rotation: each call starts one shard further on
            k = ws.turn % len(targets)
            ws.turn += 1
            targets = targets[k:] + targets[:k]
        _GetWork(self, call, targets).next()

    def external_usage(self, exclude: str) -> dict[str, int]:
        """Resources in use on every shard but ``exclude`` (last reported; never lower than real)."""
        total: dict[str, int] = defaultdict(int)
        for lid, link in self.links.items():
            if lid != exclude:
                for name, amount in link.usage.items():
                    total[name] += amount
        return dict(total)

    def _take_token(self, resume: Callable[[], None]) -> bool:
        if self._token_busy:
            self._token_waiters.append(resume)
            return False
        self._token_busy = True
        return True

    def _give_token(self) -> None:
        self._token_busy = False
        if self._token_waiters:
            self._soon.append(self._token_waiters.pop(0))

    def _note_usage(self, link: ShardLink, report: dict[str, Any], version: int) -> None:
        usage = report.get("resources_running")
        if isinstance(usage, dict):
            link.usage = {str(k): v for k, v in usage.items() if isinstance(v, (int, float)) and v > 0}
        pending = report.get("resource_pending")
        # an add_task with resources forwarded after this report was asked for must not be forgotten
        if isinstance(pending, bool) and version == link.res_version:
            link.resource_pending = pending

    # -- dependency graphs ---------------------------------------------------------------------------
    def _dep_graph(self, call: _Call) -> None:
        kwargs = dict(call.kwargs or {})
        root = kwargs.get("task_id")
        if not isinstance(root, str):
            self._forward(
                call, self._any_link_id(), b"", wire.encode_request(call.req_id, call.method, kwargs)
            )
            return
        _Graph(self, call, root, kwargs, inverse=False).start()

    def _inverse_dep_graph(self, call: _Call) -> None:
        kwargs = dict(call.kwargs or {})
        root = kwargs.get("task_id")
        if not isinstance(root, str):
            self._forward(
                call, self._any_link_id(), b"", wire.encode_request(call.req_id, call.method, kwargs)
            )
            return
        _Graph(self, call, root, kwargs, inverse=True).start()

    def _owner(self, call: _Call) -> None:
        """``owner(task_id)`` -> ``{"task_id", "shard_id", "group"}``: where placement puts the task."""
        task_id = (call.kwargs or {}).get("task_id")
        if not isinstance(task_id, str):
            self._fail(call, BadArgumentsError("owner: task_id must be a string"))
            return
        sid = self._route(task_id)
        self._reply(call, {"task_id": task_id, "shard_id": sid, "group": self.links[sid].group})

    # -- federation_health -----------------------------------------------------------------------------
    def _health(self, call: _Call) -> None:
        ids = list(self.links)
        infos: dict[str, Any] = {}
        feds: dict[str, Any] = {}
        errs: dict[str, str] = {}
        remaining = [2 * len(ids)]

        def finish() -> None:
            shards = []
            for sid in ids:
                link = self.links[sid]
                info = infos.get(sid) or {}
                fed = feds.get(sid) or {}
                up = sid in infos
                if up and sid in fed_errs:
                    errs[sid] = fed_errs[sid]
                elif up and fed and fed.get("placement") != self.placement.fingerprint:
                    errs[sid] = (
                        f"placement differs from the router's ({fed.get('placement')} != "
                        f"{self.placement.fingerprint}): serve it with the same federation.toml"
                    )
                shards.append(
                    {
                        "shard_id": sid,
                        "group": link.group,
                        "endpoint": link.spec.endpoint,
                        "up": up,
                        "latency_ms": link.latency_ms if up else None,
                        "error": None if up and sid not in errs else (errs.get(sid) or link.error or "down"),
                        "counts": dict(fed.get("counts") or {}),
                        "namespaces": dict(fed.get("namespaces") or {}),
                        "workers": int(fed.get("workers") or 0),
                        "backend": info.get("backend"),
                        "location": info.get("location"),
                        "version": info.get("version"),
                        "started": info.get("started"),
                    }
                )
            self._reply(
                call,
                {
                    "router": {
                        "zmq": self.endpoint,
                        "http": self.http_endpoint,
                        "version": __version__,
                        "time": time.time(),
                    },
                    "default_group": self.config.default_group,
                    "groups": {g: list(m) for g, m in self.config.groups.items()},
                    "shards": shards,
                },
            )

        def step() -> None:
            remaining[0] -= 1
            if remaining[0] == 0:
                finish()

        fed_errs: dict[str, str] = {}
        for sid in ids:

            def on_info(r: Any, e: FederationError | None, sid: str = sid) -> None:
                if e is None and isinstance(r, dict):
                    infos[sid] = r
                elif e is not None:
                    errs[sid] = e.message or e.code
                step()

            def on_fed(r: Any, e: FederationError | None, sid: str = sid) -> None:
                if e is None and isinstance(r, dict):
                    feds[sid] = r
                elif e is not None:
                    fed_errs[sid] = (
                        f"not a federated shard: {e.message}"
                        if e.code == "unknown_method"
                        else e.message or e.code
                    )
                step()

            self._call(sid, "shard_info", {}, on_info, timeout=self.health_timeout, force=True, probe=True)
            self._call(sid, "fed_health", {}, on_fed, timeout=self.health_timeout, force=True)

    # -- cross-shard relay ---------------------------------------------------------------------------
    def _flush_pulls(self) -> None:
        for link in self.links.values():
            if not link.need_pull:
                continue
            if link.federated is False:
                link.need_pull = False
                held, link.held = link.held, []
                for _, call in held:
                    self._release(call)
            elif link.synced and link.up:
                link.need_pull = False
                self._pull(link)

    def _pull(self, link: ShardLink, *, periodic: bool = False) -> None:
        link.pulls_sent += 1
        number = link.pulls_sent
        version = link.res_version
        epoch = link.epoch

        def done(result: Any, err: FederationError | None) -> None:
            if periodic:
                link.periodic_pull = False
            try:
                if err is None and isinstance(result, dict) and epoch == link.epoch:
                    more = self._on_changes(link, result, version)
                    if more and link.synced:
                        link.need_pull = True
                elif err is not None and not isinstance(err, TransportError):
                    log.warning("router: change feed of shard %s: %s", link.id, err)
            finally:
                link.pulls_done = max(link.pulls_done, number)
                keep = []
                for n, call in link.held:
                    if n <= link.pulls_done:
                        self._release(call)
                    else:
                        keep.append((n, call))
                link.held = keep

        self._call(link.id, "fed_changes", {"since": link.cursor}, done)

    def _on_changes(self, link: ShardLink, result: dict[str, Any], version: int) -> bool:
        """Relay one change-feed page; True when the shard has more."""
        if result.get("epoch") != link.epoch:
            log.info("router: shard %s restarted (new epoch); resynchronising", link.id)
            link.synced = False
            return False
        link.cursor = max(link.cursor, int(result.get("seq") or 0))
        self._note_usage(link, result, version)
        updates: dict[str, list[list[Any]]] = defaultdict(list)
        raises: dict[str, dict[str, int]] = defaultdict(dict)
        fresh: dict[str, list[str]] = defaultdict(list)
        for change in result.get("changes") or ():
            task_id, status, priority, seq = change[:4]
            owner = self.owner(task_id)
            if owner == link.id:
                for sid in self.subs.get(task_id, ()):
                    updates[sid].append([task_id, status, link.epoch, seq])
                continue
            if status is None:
                self._unsubscribe(task_id, link.id)  # the mirror is gone from that shard
                continue
            if len(change) > 4 and change[4]:
                # a placeholder no update has reached (new, or deleted and made again since the
                # router last looked): subscribe it and pull its owner's status
                self._subscribe(task_id, link.id)
                fresh[owner].append(task_id)
            if isinstance(priority, (int, float)) and priority > self.prio_sent.get(task_id, 0):
                self.prio_sent[task_id] = priority
                raises[owner][task_id] = priority
        self._send_updates(updates)
        self._send_raises(raises)
        for owner, task_ids in fresh.items():
            self._relay_status(owner, task_ids, {t: {link.id} for t in task_ids})
        return bool(result.get("more"))

    def _send_updates(self, updates: dict[str, list[list[Any]]]) -> None:
        for sid, items in updates.items():
            for i in range(0, len(items), CHUNK):
                chunk = items[i : i + CHUNK]

                def done(result: Any, err: FederationError | None, sid: str = sid) -> None:
                    if err is None and isinstance(result, dict):
                        for task_id in result.get("missing") or ():
                            self._unsubscribe(task_id, sid)

                self._call(sid, "fed_mirror_update", {"updates": chunk}, done)

    def _send_raises(self, raises: dict[str, dict[str, int]]) -> None:
        for sid, prios in raises.items():
            self._call(sid, "fed_raise_priority", {"priorities": prios}, lambda r, e: None)

    def _subscribe(self, task_id: str, sid: str) -> bool:
        """Record that shard ``sid`` mirrors ``task_id``; True if that is new."""
        subscribers = self.subs.get(task_id)
        if subscribers is None:
            subscribers = self.subs[task_id] = set()
            self.subs_by_owner[self.owner(task_id)].add(task_id)
        if sid in subscribers:
            return False
        subscribers.add(sid)
        return True

    def _unsubscribe(self, task_id: str, sid: str) -> None:
        subscribers = self.subs.get(task_id)
        if subscribers is None:
            return
        subscribers.discard(sid)
        if not subscribers:
            del self.subs[task_id]
            self.subs_by_owner[self.owner(task_id)].discard(task_id)
            self.prio_sent.pop(task_id, None)

    def _relay_status(
        self,
        owner: str,
        task_ids: list[str],
        targets: dict[str, set[str]] | None,
        done: Callable[[], None] | None = None,
    ) -> None:
        """Pull the owner's current status of ``task_ids`` and push it to their mirrors."""
        chunks = [task_ids[i : i + CHUNK] for i in range(0, len(task_ids), CHUNK)] or [[]]
        left = [len(chunks)]
        link = self.links[owner]

        def one(result: Any, err: FederationError | None) -> None:
            try:
                if err is None and isinstance(result, dict):
                    epoch = result.get("epoch")
                    updates: dict[str, list[list[Any]]] = defaultdict(list)
                    for task_id, state in (result.get("tasks") or {}).items():
                        status, seq = (state[0], state[2]) if state else (None, 0)
                        for sid in (targets or {}).get(task_id) or self.subs.get(task_id, ()):
                            updates[sid].append([task_id, status, epoch, seq])
                    self._send_updates(updates)
                elif err is not None:
                    log.info("router: cannot read status from shard %s yet: %s", link.id, err.message)
            finally:
                left[0] -= 1
                if left[0] == 0 and done is not None:
                    done()

        for chunk in chunks:
            self._call(owner, "fed_status", {"task_ids": chunk}, one)

    def _resync(self, link: ShardLink) -> None:
        """Rebuild what the router knows of one shard and bring its mirrors (and theirs) up to date."""
        link.syncing = True

        def on_state(result: Any, err: FederationError | None) -> None:
            link.syncing = False
            if err is not None or not isinstance(result, dict):
                link.next_sync = time.monotonic() + RESYNC_BACKOFF
                if err is not None and err.code == "unknown_method":
                    link.federated = False
                    link.synced = True  # nothing to synchronise; served as a plain Luigi scheduler
                    log.error(
                        "router: shard %s is not federated (no fed_state): remote dependencies and "
                        "global resources are off for it; serve it with the federation config",
                        link.id,
                    )
                elif err is not None and not isinstance(err, TransportError):
                    log.warning("router: cannot synchronise shard %s: %s", link.id, err)
                return
            link.federated = True
            theirs = result.get("placement")
            if theirs != self.placement.fingerprint:
                # the shard tells its own tasks from mirrors by placement: it must be the router's
                log.error(
                    "router: shard %s places tasks differently (placement %s, router %s): "
                    "serve every shard and the router from the same federation.toml",
                    link.id,
                    theirs,
                    self.placement.fingerprint,
                )
            link.epoch = result.get("epoch")
            link.cursor = int(result.get("seq") or 0)
            self._note_usage(link, result, link.res_version)
            for worker in result.get("workers") or ():
                ws = self.workers.get(worker)
                if ws is None:
                    ws = self.workers[worker] = WorkerState()
                if link.id not in ws.shards:
                    ws.shards[link.id] = None
                self._replay_worker(worker, ws, link.id)
            by_owner: dict[str, list[str]] = defaultdict(list)
            raises: dict[str, dict[str, int]] = defaultdict(dict)
            for task_id, priority in (result.get("mirrors") or {}).items():
                owner = self.owner(task_id)
                if owner == link.id:
                    continue
                self._subscribe(task_id, link.id)
                by_owner[owner].append(task_id)
                if isinstance(priority, (int, float)) and priority > self.prio_sent.get(task_id, 0):
                    self.prio_sent[task_id] = priority
                    raises[owner][task_id] = priority
            for owner, task_ids in by_owner.items():
                self._relay_status(owner, task_ids, {t: {link.id} for t in task_ids})
            self._send_raises(raises)
            owned = sorted(self.subs_by_owner.get(link.id, ()))
            if owned:
                self._relay_status(link.id, owned, None)
            link.synced = True
            log.info(
                "router: shard %s synchronised (%d mirrors, %d mirrored elsewhere)",
                link.id,
                len(result.get("mirrors") or ()),
                len(owned),
            )

        self._call(link.id, "fed_state", {}, on_state)


class _GetWork:
    """One ``get_work``: ask the worker's shards one at a time until one hands out work.

    Never two tasks for one call: the next shard is asked only after the
    previous one answered without a task.  The counters are summed over the
    shards asked, which is what one luigid would count when no shard had
    work (the only case in which Luigi's worker looks at them).
    """

    def __init__(self, router: Router, call: _Call, targets: list[str]) -> None:
        self.router = router
        self.call = call
        self.queue = list(targets)
        self.replies: list[dict[str, Any]] = []
        self.unavailable: FederationError | None = None
        self.token = False

    def next(self) -> None:
        r = self.router
        while self.queue:
            sid = self.queue[0]
            link = r.links[sid]
            if link.up is False:
                self.queue.pop(0)
                self.unavailable = r._down_error(link)
                continue
            if link.resource_pending and not self.token:
                if not r._take_token(self.next):
                    return  # resumed by the token's next release
                self.token = True
            self.queue.pop(0)
            version = link.res_version
            if link.federated is False:
                r._call(
                    sid,
                    "get_work",
                    self.call.kwargs or {},
                    lambda res, err, sid=sid, v=version: self.on_reply(
                        sid, v, {"reply": res} if err is None else None, err
                    ),
                )
                return
            kwargs = {**(self.call.kwargs or {}), "external_used_resources": r.external_usage(sid)}
            r._call(
                sid,
                "fed_get_work",
                kwargs,
                lambda res, err, sid=sid, v=version: self.on_reply(sid, v, res, err),
            )
            return
        self.finish(None)

    def _drop_token(self) -> None:
        if self.token:
            self.token = False
            self.router._give_token()

    def on_reply(self, sid: str, version: int, result: Any, err: FederationError | None) -> None:
        r = self.router
        self._drop_token()
        if err is not None:
            if isinstance(err, TransportError):
                self.unavailable = err
                self.next()
            else:
                r._fail(self.call, err)
            return
        if not isinstance(result, dict) or not isinstance(result.get("reply"), dict):
            r._fail(self.call, ProtocolError(f"shard {sid} answered fed_get_work in an unexpected shape"))
            return
        r._note_usage(r.links[sid], result, version)
        reply = result["reply"]
        self.replies.append(reply)
        batch_id = reply.get("batch_id")
        if isinstance(batch_id, str):
            r.batches[batch_id] = sid
            worker = (self.call.kwargs or {}).get("worker")
            if isinstance(worker, str):
                r._batch_worker[batch_id] = worker
        if reply.get("task_id") is not None or batch_id is not None:
            self.finish(reply)
        else:
            self.next()

    def finish(self, chosen: dict[str, Any] | None) -> None:
        r = self.router
        self._drop_token()
        if chosen is None and self.unavailable is not None:
            # a shard with this worker's tasks is down: "no work" would make the worker quit
            r._fail(self.call, self.unavailable)
            return
        out = merge.merge_counts(self.replies)
        out["task_id"] = None
        if chosen is not None:
            for key, value in chosen.items():
                if key not in merge.COUNTERS and key not in ("worker_state", "running_tasks"):
                    out[key] = value
        r._reply(self.call, out)


class _Graph:
    """``dep_graph`` / ``inverse_dep_graph`` across shards, breadth first, Luigi's node limit."""

    def __init__(
        self, router: Router, call: _Call, root: str, kwargs: dict[str, Any], *, inverse: bool
    ) -> None:
        self.router = router
        self.call = call
        self.root = root
        self.kwargs = kwargs
        self.inverse = inverse
        self.nodes: dict[str, tuple[dict[str, Any], bool]] = {}
        self.deps: dict[str, set[str]] = defaultdict(set)
        self.asked: set[tuple[str, str]] = set()
        self.in_flight = 0
        self.failed: FederationError | None = None

    def start(self) -> None:
        r = self.router
        owner = r.owner(self.root)
        self._ask(owner, self.root, "inverse_dep_graph" if self.inverse else "dep_graph")
        if self.inverse:
            for sid in r.subs.get(self.root, ()):
                self._ask(sid, self.root, "fed_inverse_dep_graph")
        if self.in_flight == 0:
            self._finish()

    def _ask(self, sid: str, task_id: str, method: str) -> None:
        if (sid, task_id) in self.asked or len(self.nodes) >= self.router.max_graph_nodes:
            return
        self.asked.add((sid, task_id))
        self.in_flight += 1
        kwargs = {**self.kwargs, "task_id": task_id}
        self.router._call(sid, method, kwargs, lambda res, err: self._on(sid, task_id, res, err))

    def _on(self, sid: str, task_id: str, result: Any, err: FederationError | None) -> None:
        r = self.router
        self.in_flight -= 1
        if err is not None:
            if not isinstance(err, TransportError) and err.code != "unknown_method":
                self.failed = self.failed or err
        elif isinstance(result, dict):
            foreign = merge.merge_graph_nodes(self.nodes, result, sid, r.owner, self.root)
            for node_id, node in result.items():
                if isinstance(node, dict) and isinstance(node.get("deps"), list):
                    self.deps[node_id].update(d for d in node["deps"] if isinstance(d, str))
            if not self.inverse:
                # nodes this shard only mirrors: their owner knows their deps
                for node_id in foreign:
                    self._ask(r.owner(node_id), node_id, "dep_graph")
            else:
                # a task's dependents on other shards are found where it is mirrored
                for node_id in result:
                    if r.owner(node_id) == sid or node_id == self.root:
                        for other in r.subs.get(node_id, ()):
                            if other != sid:
                                self._ask(other, node_id, "fed_inverse_dep_graph")
        if self.in_flight == 0:
            self._finish()

    def _finish(self) -> None:
        r = self.router
        if self.failed is not None and not self.nodes:
            r._fail(self.call, self.failed)
            return
        out: dict[str, Any] = {}
        for task_id, (node, _) in self.nodes.items():
            node = dict(node)
            if "deps" in node or self.deps.get(task_id):
                node["deps"] = sorted(self.deps.get(task_id, set()) | set(node.get("deps") or []))
            out[task_id] = node
            if len(out) >= r.max_graph_nodes:
                break
        r._reply(self.call, out)


def _key(task_id: Any) -> bytes:
    return task_id.encode("utf-8") if isinstance(task_id, str) else b""


def _connect(ctx: zmq.Context, endpoint: str, shard_id: str) -> zmq.Socket:
    """A DEALER to one shard; ``immediate`` so that nothing queues up for a shard that is down."""
    try:
        return transport.connect_dealer(ctx, endpoint, immediate=True)  # type: ignore[call-arg]
    except TypeError:  # an older transport without the option: timeouts still catch a dead shard
        return transport.connect_dealer(ctx, endpoint)


# -- entry point ---------------------------------------------------------------------------------------
def serve(
    config: FederationConfig, *, ready: Callable[[Router], None] | None = None, install_signals: bool = True
) -> int:
    """Run the router (and its HTTP gateway when ``[router] http`` is set) until SIGTERM/SIGINT.

    The first signal stops taking requests and drains; a second one exits at once.
    ``ready(router)`` is called once both listeners are bound (tests read the endpoints there).
    """
    router = Router(config)
    stop_http: Callable[[], None] | None = None
    try:
        if install_signals:

            def handler(signum: int, _frame: Any) -> None:
                if router._stop.is_set():
                    raise SystemExit(128 + signum)
                log.info("router: signal %d, stopping", signum)
                router.stop()
                if stop_http is not None:
                    stop_http()

            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)
        if config.router.http:
            from router.http import start_gateway

            gateway = start_gateway(router.endpoint, config.router.http, router_obj=router)
            router.http_endpoint = gateway.address
            stop_http = gateway.stop
        print(
            f"router listening on {router.endpoint}"
            + (f", http://{router.http_endpoint}" if router.http_endpoint else ""),
            flush=True,
        )
        if ready is not None:
            ready(router)
        router.serve_forever()
    finally:
        if stop_http is not None:
            stop_http()
        router.close()
    return 0
