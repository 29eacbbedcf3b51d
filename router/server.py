"""The router process: the ZeroMQ front for the whole federation, one DEALER per shard.

One thread runs an event loop over the front ROUTER socket and every shard
DEALER (``zmq.Poller``); the logic is :class:`router.core.RouterCore`, which
this module only feeds: front messages in (``RouterCore.handle``), shard
replies in (``ZmqShardPool.drain``), one ``RouterCore.step`` per turn.

Frames (``federation.wire``): a client sends ``[routing_key, body]``; the
router sends a shard ``[tag, routing_key, body]`` and the shard answers
``[tag, reply_body]``.  ``tag`` (8 bytes) indexes the pool's pending table,
so a forwarded call's reply goes back to the client without being decoded.

Where the rest lives: how each method is served, :mod:`router.methods` (the
table) and :mod:`router.core` (the handlers); calls, deadlines and shard
health, :mod:`router.links`; cross-shard dependencies, :mod:`router.relay`
(and its mirror image ``shard/federated.py``); workers and batches,
:mod:`router.workers`; Luigi's ``[resources]`` across shards,
:mod:`router.resources`; ``get_work``, :mod:`router.getwork`; graphs,
:mod:`router.graph`; merging answers, :mod:`router.merge`; Luigi's HTTP API,
:mod:`router.http`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from federation import transport, wire
from federation.config import FederationConfig, ShardSpec
from federation.errors import TransportError
from router.core import RouterCore
from router.links import LinkState, ShardLink, ShardPool

log = logging.getLogger("router.server")

#: requests taken from the front per loop turn before the shards' replies get their turn
FRONT_BATCH = 512
#: after the first SIGTERM, how long calls in flight may still be answered
DRAIN_SECONDS = 2.0
#: at start, how long the router waits for its shards before taking requests anyway
WARMUP_SECONDS = 3.0
#: the timers (probes of down shards, periodic feed pulls, resynchronisation, resharding steps)
#: run at most this often: a busy loop turns every few tens of microseconds, and the shortest
#: of their delays is 50 ms (a first probe, a resharding step's poll)
TIMERS_EVERY = 0.005


class ZmqShardPool(ShardPool):
    """One ZeroMQ DEALER per shard; the router's loop polls :meth:`sockets` and calls :meth:`drain`."""

    #: replies taken from one shard per drain before the loop turns
    DRAIN_BATCH = 2048

    def __init__(
        self, ctx: Any, specs: Iterable[tuple[ShardSpec, str]], *, curve: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(specs, **kwargs)
        self._ctx = ctx
        #: sockets opened (True) or closed (False) since the loop last looked (resharding)
        self.changed: list[tuple[Any, bool]] = []
        self._socks: dict[str, Any] = {}
        #: requests queued this turn for shards that take bundles (``flush_sends``)
        self._outq: dict[str, list[list[bytes]]] = {}
        self._by_sock: dict[Any, ShardLink] = {}
        #: a shard with standbys: its DEALER's monitor -> (link, endpoints with a completed handshake)
        self._monitors: dict[Any, tuple[ShardLink, set[str]]] = {}
        try:
            for sid, link in self.links.items():
                sock = transport.connect_dealer(ctx, link.spec.endpoint, immediate=True, curve=curve)
                self._socks[sid] = sock
                self._by_sock[sock] = link
                # A shard with standbys: one DEALER connected to every endpoint it may be served on.
                # Only the owner binds (a standby binds after it took the shard over), and with
                # ZMQ_IMMEDIATE requests go only to completed connections: to the owner alone.
                for endpoint in link.spec.standbys:
                    try:
                        sock.connect(endpoint)
                    except zmq.ZMQError as e:
                        raise TransportError(f"cannot connect to {endpoint}: {e}") from e
                if link.spec.standbys:
                    # Calls sent to an owner that froze are lost with it; once a standby serves, later
                    # sends succeed, so nothing would fail them before their deadline. The monitor
                    # sees the frozen owner's connection dropped (ZeroMQ heartbeat) and fails them then.
                    events = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
                    self._monitors[sock.get_monitor_socket(events)] = (link, set())
        except BaseException:
            self.close()
            raise

    def sockets(self) -> list[Any]:
        return [*self._socks.values(), *self._monitors]

    def _open_link(self, link: ShardLink) -> None:
        sock = transport.connect_dealer(self._ctx, link.spec.endpoint, immediate=True)
        self._socks[link.id] = sock
        self._by_sock[sock] = link
        self.changed.append((sock, True))

    def _close_link(self, link: ShardLink) -> None:
        sock = self._socks.pop(link.id, None)
        if sock is not None:
            self._by_sock.pop(sock, None)
            self.changed.append((sock, False))

    def _transmit(self, link: ShardLink, frames: list[bytes]) -> bool:
        if link.bundles:
            # sent with the turn's others for that shard in one message (``flush_sends``)
            self._outq.setdefault(link.id, []).append(frames)
            return True
        return bool(transport.send_frames(self._socks[link.id], frames))

    def flush_sends(self) -> None:
        """Send what this turn queued for each shard: one message, a bundle (``wire.BUNDLE``) when
        there is more than one request (fewer ZeroMQ sends: each wakes the I/O thread and the
        shard).  The same FIFO: nothing queued for a shard is sent after anything sent later."""
        if not self._outq:
            return
        outq, self._outq = self._outq, {}
        for sid, msgs in outq.items():
            link = self.links.get(sid)
            sock = self._socks.get(sid)
            if link is None or sock is None or link.state is LinkState.DOWN:
                continue  # its calls failed when it went down (or it left the federation)
            frames = msgs[0] if len(msgs) == 1 else [wire.BUNDLE, *(f for m in msgs for f in m)]
            try:
                ok = transport.send_frames(sock, frames)
            except TransportError as e:
                log.warning("router: send to shard %s failed: %s", sid, e)
                ok = False
            if not ok:
                self.mark_down(link, "cannot send (not connected or queue full)")

    def mark_down(self, link: ShardLink, reason: str) -> None:
        self._outq.pop(link.id, None)  # those calls fail with the rest of the shard's
        super().mark_down(link, reason)

    def drain(self, sock: Any) -> None:
        """Take the replies waiting on one shard's socket (or the events on its monitor)."""
        if sock in self._monitors:
            self._on_monitor(sock)
            return
        link = self._by_sock[sock]
        recv_frames = transport.recv_frames
        on_reply = self._on_reply
        for _ in range(self.DRAIN_BATCH):
            frames = recv_frames(sock)
            if frames is None:
                return
            if frames[0] == wire.BUNDLE:
                # the replies to a bundle: ``[BUNDLE, tag, body, summaries or b"", ...]``
                if len(frames) % 3 != 1:
                    log.warning("router: shard %s sent a bundle of %d frames", link.id, len(frames))
                    continue
                for i in range(1, len(frames), 3):
                    tag, body, sums = frames[i : i + 3]
                    on_reply(link, [tag, body, sums] if sums else [tag, body])
                continue
            on_reply(link, frames)

    def _on_monitor(self, mon: Any) -> None:
        link, live = self._monitors[mon]
        while transport.has_input(mon):
            try:
                event = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            endpoint = event.get("endpoint", b"")
            endpoint = endpoint.decode(errors="replace") if isinstance(endpoint, bytes) else str(endpoint)
            if event.get("event") == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                live.add(endpoint)
            elif event.get("event") == zmq.EVENT_DISCONNECTED and endpoint in live:
                # (a connection that never completed its handshake, such as one to a frozen process's
                # listening socket, is not one that carried calls)
                live.discard(endpoint)
                self.mark_down(link, f"lost its connection to {endpoint}")

    def close(self) -> None:
        for mon in self._monitors:
            mon.close(0)
        self._monitors.clear()
        for sock in self._socks.values():
            sock.close(0)
        self._socks.clear()


class Router:
    """The federation router on ZeroMQ sockets (see the module docstring)."""

    def __init__(self, config: FederationConfig, *, bind: str | None = None) -> None:
        self.config = config
        self._ctx = zmq.Context()
        self._stop = threading.Event()
        self._gate: Any = None
        front_curve = shard_curve = None
        if config.security is not None:
            from federation.keys import router_front_curve, router_to_shards_curve

            front_curve = router_front_curve(config.security)
            shard_curve = router_to_shards_curve(config.security)
            self._gate = front_curve.start(self._ctx)
        self.secure = front_curve is not None
        try:
            self.front = transport.bind_router(
                self._ctx,
                bind or config.router.zmq,
                max_message_bytes=config.router.max_message_bytes,
                curve=front_curve,
            )
        except BaseException:
            self._close_gate()
            self._ctx.term()
            raise
        self.endpoint = transport.last_endpoint(self.front)
        try:
            self.core = RouterCore(
                config,
                self._send_front,
                lambda specs, **kw: ZmqShardPool(self._ctx, specs, curve=shard_curve, **kw),
            )
        except BaseException:
            self.front.close(0)
            self._close_gate()
            self._ctx.term()
            raise
        self.core.endpoint = self.endpoint
        #: ``fedctl router serve --standby``: False while this leader may have lost the lead
        self.lease: Callable[[], bool] | None = None
        self._timers_due = 0.0
        pool = self.core.pool
        assert isinstance(pool, ZmqShardPool)
        self.pool: ZmqShardPool = pool
        self.metrics = self.core.metrics
        self.timeout = self.core.timeout
        self.links = self.core.links

    @property
    def http_endpoint(self) -> str | None:
        return self.core.http_endpoint

    @http_endpoint.setter
    def http_endpoint(self, value: str | None) -> None:
        self.core.http_endpoint = value

    # -- lifecycle ---------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _close_gate(self) -> None:
        if self._gate is not None:
            self._gate.stop()
            self._gate = None

    def close(self) -> None:
        self.pool.close()
        self.front.close(0)
        self._close_gate()
        self._ctx.term()

    def serve_forever(self) -> None:
        """Run the loop until :meth:`stop`; sockets stay open (call :meth:`close` after)."""
        log.info("router serving on %s for %d shard(s)", self.endpoint, len(self.links))
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        for sock in self.pool.sockets():
            poller.register(sock, zmq.POLLIN)
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
            if self.lease is not None and not self.lease():
                # a standby-mode leader whose lease ran out (it was frozen, router/standby.py): no
                # request and no relay until its watchdog proves it still leads, or it exits
                self._stop.wait(0.01)
                continue
            try:
                self._turn(poller)
            except Exception:  # a bug must not take the federation's front door down
                log.error("router loop error", exc_info=True)
                time.sleep(0.05)
        # drain: no new requests, but the calls in flight get their answers (or their deadline)
        poller.unregister(self.front)
        drain_until = time.monotonic() + DRAIN_SECONDS
        while self.pool.in_flight() and time.monotonic() < drain_until:
            try:
                self._turn(poller, front=False, timers=False)
            except Exception:
                log.error("router loop error while draining", exc_info=True)
                break
        log.info("router stopped")

    def _turn(self, poller: zmq.Poller, *, front: bool = True, timers: bool = True) -> None:
        wait_ms = max(0, int((self.core.next_wakeup() - time.monotonic()) * 1000) + 1)
        if self.pool.changed:
            for sock, opened in self.pool.changed:
                if opened:
                    poller.register(sock, zmq.POLLIN)
                else:
                    poller.unregister(sock)
                    sock.close(0)
            self.pool.changed.clear()
        self.pool.flush_sends()  # nothing waits in the queue while the loop sleeps
        events = dict(poller.poll(wait_ms))
        for sock in events:
            if sock is not self.front:
                self.pool.drain(sock)
        if front and self.front in events:
            self._drain_front()
        if timers:
            now = time.monotonic()
            if now >= self._timers_due:
                self._timers_due = now + TIMERS_EVERY
            else:
                timers = False
        self.core.step(timers=timers)
        self.pool.flush_sends()

    def _drain_front(self) -> None:
        handle = self.core.handle
        if self.secure:
            for _ in range(FRONT_BATCH):
                got = transport.recv_frames_user(self.front) if transport.has_input(self.front) else None
                if got is None:
                    return
                handle(got[0], got[1])
            return
        recv_frames = transport.recv_frames
        for _ in range(FRONT_BATCH):
            frames = recv_frames(self.front)
            if frames is None:
                return
            handle(frames)

    def _send_front(self, route: list[bytes], body: bytes) -> None:
        try:
            transport.send_frames(self.front, [*route, body])
        except TransportError as e:
            log.warning("router: cannot answer a client: %s", e)


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

            gateway = start_gateway(
                router.endpoint,
                config.router.http,
                router_obj=router,
                max_body_bytes=config.router.max_message_bytes,
                security=config.security,
            )
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
