"""The router's shards: one call interface, a ZeroMQ pool and an in-process pool.

A :class:`ShardPool` is everything the router knows of the *transport* to its
shards: the calls in flight (a pending table keyed by an 8-byte tag), their
deadlines, and each shard's :class:`LinkState`.  Nothing in it blocks: a call
is an entry with a callback, answered by the shard's reply or by its deadline,
so one dead or slow shard costs only the calls that need it.

* ``router.server.ZmqShardPool`` — one DEALER per shard (``ZMQ_IMMEDIATE``:
  nothing queues for a shard that is down).  The router's loop polls its
  sockets.  (It lives there: ``router.server`` is the router's one ZeroMQ module.)
* :class:`InProcShardPool` — the same pool driving ``ShardServer.handle_batch``
  objects in this process (dramatiq's ``StubBroker`` is the model): the same
  pending table, tags, deadlines and state machine, with :meth:`~InProcShardPool.pump`
  in place of the sockets, so router tests run in milliseconds without sleeps.

Frames are the shard's ROUTER frames either way: the pool sends ``[tag, key,
body]`` and the shard answers ``[tag, reply_body]``; a forwarded call's body
goes through undecoded, and a reply after its deadline finds no entry and is
dropped.

A shard's life, as the router sees it (``ShardLink.state``)::

    CONNECTING ──reply──▶ UNSYNCED ──fed_state──▶ SYNCING ──▶ READY (federated)
        │                    ▲                        └─────▶ PLAIN (not federated)
        └──deadline/send──▶ DOWN ──probe answered──┘
                    (any state) ──deadline, or cannot send──▶ DOWN

``DOWN`` fails calls at once with ``unavailable`` (Luigi's client retries
those) and probes the shard with ``shard_info``; the relay (``router.relay``)
moves a link from ``UNSYNCED`` to ``READY``/``PLAIN`` and back to ``UNSYNCED``
when the shard's epoch changes (a restart).
"""

from __future__ import annotations

import enum
import itertools
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from federation import wire
from federation.config import ShardSpec
from federation.errors import FederationError, ProtocolError, TransportError, error_from_wire
from router import summaries
from router.summaries import is_settled

log = logging.getLogger("router.links")

_TAG = struct.Struct(">Q")
PROBE_INTERVAL = 0.5
FIRST_PROBE_DELAY = 0.05

#: ``cb(result, None)`` or ``cb(None, error)``; a raw call's result is the undecoded reply body
Callback = Callable[[Any, FederationError | None], None]


class LinkState(enum.Enum):
    CONNECTING = "connecting"  # not heard from yet
    DOWN = "down"  # missed a deadline or could not be sent to; probed until it answers
    UNSYNCED = "unsynced"  # answering; the relay has not (re)synchronised it yet
    SYNCING = "syncing"  # the relay's fed_state is in flight
    READY = "ready"  # answering and synchronised (a federated shard)
    PLAIN = "plain"  # answering, not a federated shard: served as a plain Luigi scheduler


SYNCED = frozenset({LinkState.READY, LinkState.PLAIN})


@dataclass(slots=True)
class ShardLink:
    """The router's view of one shard: where it is and what state its link is in."""

    spec: ShardSpec
    group: str
    state: LinkState = LinkState.CONNECTING
    #: what the shard is, once known: True = serves the fed_* methods, False = a plain scheduler
    federated: bool | None = None
    error: str | None = None
    latency_ms: float | None = None
    next_probe: float = 0.0
    probe_delay: float = FIRST_PROBE_DELAY
    probing: bool = False
    #: the relay's next fed_state attempt (backoff after a failed one)
    next_sync: float = 0.0
    #: the shard's get_work summaries (``router.summaries``): worker -> summary, the frames'
    #: token and number, whether the table is whole and in step, a whole one asked for
    sums: dict[str, list[Any]] = field(default_factory=dict)
    sum_token: Any = None
    sum_n: int = 0
    sum_ok: bool = False
    sum_asked: bool = False
    #: Luigi's prune_on_get_work on that shard (every get_work there prunes)
    sum_prunes: bool = False
    #: the router's own calls in flight there that may give a worker better work (a relay's
    #: mirror update...), by number: until answered, its summaries may be behind what was
    #: acknowledged; and what waits for them (``router.summaries.after_settled``)
    unsettled: dict[int, None] = field(default_factory=dict)
    settle_waiters: list[tuple[int, Callable[[], None]]] = field(default_factory=list)
    #: the shard takes a router turn's requests in one message (``wire.BUNDLE``; it said so in
    #: ``fed_state``); off while down and until synchronised again (it may be an older build)
    bundles: bool = False
    #: ``spec.id``, read on every message (a plain slot, not a property)
    id: str = field(init=False)

    def __post_init__(self) -> None:
        self.id = self.spec.id

    @property
    def up(self) -> bool | None:
        """None until first heard from, False while down, True otherwise."""
        if self.state is LinkState.CONNECTING:
            return None
        return self.state is not LinkState.DOWN

    @property
    def synced(self) -> bool:
        return self.state in SYNCED


@dataclass(slots=True)
class _Wait:
    """A call in flight to a shard."""

    shard: str
    deadline: float
    sent: float
    cb: Callback
    raw: bool  # the callback gets the undecoded reply body
    probe: bool = False


class PoolListener(Protocol):
    def on_shard_down(self, link: ShardLink) -> None: ...

    def on_shard_up(self, link: ShardLink) -> None: ...

    def on_workers_gone(self, link: ShardLink, workers: list[str]) -> None: ...


class ShardPool:
    """Calls to shards with deadlines and health; subclasses move the frames.

    ``defer(fn)`` runs ``fn`` later on the router's turn: a callback never runs inside the
    call that caused it.  ``clock`` is monotonic seconds (a fake one in tests).
    """

    def __init__(
        self,
        specs: Iterable[tuple[ShardSpec, str]],
        *,
        timeout: float,
        defer: Callable[[Callable[[], None]], None],
        clock: Callable[[], float] = time.monotonic,
        metrics: Any = None,
    ) -> None:
        self.links: dict[str, ShardLink] = {spec.id: ShardLink(spec, group) for spec, group in specs}
        self.timeout = timeout
        self.defer = defer
        self.clock = clock
        self.metrics = metrics
        self.listener: PoolListener | None = None
        self._tags = itertools.count(1)
        self._unsettled = itertools.count(1)
        self._stamp = 0
        self._waits: dict[bytes, _Wait] = {}
        #: (deadline, tag) of every call sent, one FIFO per timeout (deadlines in each are in order,
        #: so both ends are O(1); a heap of all calls cost ~4 % of the router at 1k tasks/s)
        self._deadlines: dict[float, deque[tuple[float, bytes]]] = {}

    # -- what subclasses provide ---------------------------------------------------------------
    def _transmit(self, link: ShardLink, frames: list[bytes]) -> bool:
        """Hand ``[tag, key, body]`` to the shard without blocking; False if it cannot take it."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the transport."""

    def add_link(self, spec: ShardSpec, group: str) -> ShardLink:
        """A shard joins at run time (resharding): a new link, CONNECTING."""
        link = self.links[spec.id] = ShardLink(spec, group)
        self._open_link(link)
        return link

    def remove_link(self, sid: str) -> None:
        """A shard leaves at run time (resharding): what waits on it fails, its link goes."""
        link = self.links.get(sid)
        if link is None:
            return
        err = TransportError(f"shard {sid} left the federation")
        for tag, w in list(self._waits.items()):
            if w.shard == sid:
                del self._waits[tag]
                self.defer(lambda w=w: w.cb(None, err))  # type: ignore[misc]
        del self.links[sid]
        self._close_link(link)

    def _open_link(self, link: ShardLink) -> None:
        """Subclasses: open the transport to a link added at run time."""

    def _close_link(self, link: ShardLink) -> None:
        """Subclasses: close the transport of a link removed at run time."""

    # -- calls ---------------------------------------------------------------------------------
    def next_stamp(self) -> int:
        """The order stamp of the next request to any shard (``federation.wire.add_stamp``).

        One counter over every shard, so the events of all shards fall in the order the router
        sent their requests: task creation and status-entry order as in one luigid.  It never
        falls behind the wall clock in milliseconds, so a restarted router stamps above what
        shards already saw."""
        self._stamp = max(self._stamp + 1, int(time.time() * 1000))
        return self._stamp << wire.STAMP_SHIFT

    def in_flight(self) -> int:
        return len(self._waits)

    def send(
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
        stamp: int | None = None,
    ) -> None:
        """Send a request body to shard ``sid``; ``cb`` gets the answer (decoded unless ``raw``).

        A shard that is down fails the call at once unless ``force`` (probes, health); so does
        one that left the federation (resharding).  ``stamp``: the order stamp to send (one
        :meth:`next_stamp` shared by the requests of one fan-out), else a new one."""
        link = self.links.get(sid)
        if link is None:
            gone = TransportError(f"shard {sid} is not in the federation (any more)")
            self.defer(lambda: cb(None, gone))
            return
        if link.state is LinkState.DOWN and not force:
            err = self.down_error(link)
            self.defer(lambda: cb(None, err))
            return
        tag = _TAG.pack(next(self._tags))
        ok = False
        try:
            ok = self._transmit(link, [tag, key, wire.add_stamp(body, stamp or self.next_stamp())])
        except TransportError as e:
            log.warning("router: send to shard %s failed: %s", sid, e)
        if not ok:
            self.mark_down(link, "cannot send (not connected or queue full)")
            err = self.down_error(link)
            self.defer(lambda: cb(None, err))
            return
        now = self.clock()
        span = timeout or self.timeout
        deadline = now + span
        self._waits[tag] = _Wait(sid, deadline, now, cb, raw, probe)
        q = self._deadlines.get(span)
        if q is None:
            q = self._deadlines[span] = deque()
        q.append((deadline, tag))

    def call(
        self,
        sid: str,
        method: str,
        kwargs: dict[str, Any],
        cb: Callback,
        *,
        timeout: float | None = None,
        force: bool = False,
        probe: bool = False,
        stamp: int | None = None,
        concurrent: bool = False,
    ) -> None:
        """Call ``method(**kwargs)`` on shard ``sid``; ``cb(result, error)`` (``stamp``: :meth:`send`).

        ``concurrent``: nothing this call changes is acknowledged to any client before its answer
        (the caller waits for it first), so it is concurrent with every ``get_work`` arriving
        meanwhile, which need not wait for it (``router.summaries``)."""
        body = wire.encode_request(0, method, kwargs)
        link = self.links.get(sid)
        if link is not None and not concurrent and not is_settled(method, kwargs):
            # until answered, the shard's summaries may not show what this call changes
            number = next(self._unsettled)
            link.unsettled[number] = None
            inner = cb

            def cb(result: Any, err: FederationError | None, link: ShardLink = link) -> None:
                summaries.settled(link, number)
                inner(result, err)

        self.send(sid, b"", body, cb, timeout=timeout, force=force, probe=probe, stamp=stamp)

    def _on_reply(self, link: ShardLink, frames: list[bytes]) -> None:
        """A shard's ``[tag, reply_body]`` (``[tag, reply_body, summaries]``: ``router.summaries``)."""
        if len(frames) == 3:
            gone = summaries.on_frame(self, link, frames[2])
            if gone and self.listener is not None:
                self.listener.on_workers_gone(link, gone)
        elif len(frames) != 2:
            log.warning("router: shard %s sent %d frames, expected [tag, body]", link.id, len(frames))
            return
        tag, body = frames[0], frames[1]
        w = self._waits.pop(tag, None)
        if w is None:
            return  # its deadline passed; the caller already had its answer
        now = self.clock()
        if self.metrics is not None:
            self.metrics.shard_round_trip(link.id, now - w.sent)
        if w.probe:
            link.latency_ms = (now - w.sent) * 1000.0
        if link.state in (LinkState.DOWN, LinkState.CONNECTING):
            self.mark_up(link)
        # (the callbacks run here rather than through ``_safely``: one call less per reply)
        try:
            if w.raw:
                w.cb(body, None)
                return
            try:
                reply = wire.decode_reply(body)
            except ProtocolError as e:
                w.cb(None, e)
                return
            if reply.ok:
                w.cb(reply.result, None)
            else:
                w.cb(None, error_from_wire(reply.error))
        except Exception:
            log.error("router callback failed", exc_info=True)

    # -- deadlines and health ------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        due = [q[0][0] for q in self._deadlines.values() if q]
        return min(due) if due else None

    def expire(self) -> None:
        """Fail every call whose deadline has passed, and mark its shard down."""
        now = self.clock()
        due: list[bytes] = []
        for q in self._deadlines.values():
            while q and q[0][0] <= now:
                due.append(q.popleft()[1])
        for tag in due:
            w = self._waits.pop(tag, None)
            if w is None:
                continue
            link = self.links.get(w.shard)
            if link is None:
                continue  # the shard left the federation
            self.mark_down(link, f"no reply within {w.deadline - w.sent:g} s")
            err = self.down_error(link)
            _safely(lambda w=w, err=err: w.cb(None, err))  # type: ignore[misc]

    def down_error(self, link: ShardLink) -> TransportError:
        return TransportError(
            f"shard {link.id} ({link.spec.endpoint}) is unavailable: {link.error or 'down'}"
        )

    def mark_down(self, link: ShardLink, reason: str) -> None:
        if link.state is not LinkState.DOWN:
            log.warning("router: shard %s is down: %s", link.id, reason)
        link.state = LinkState.DOWN
        link.bundles = False
        link.error = reason
        summaries.forget(link)
        link.next_probe = self.clock() + link.probe_delay
        # everything still waiting on this shard fails now rather than at its own deadline
        err = self.down_error(link)
        for tag, w in list(self._waits.items()):
            if w.shard == link.id and not w.probe:
                del self._waits[tag]
                self.defer(lambda w=w: w.cb(None, err))  # type: ignore[misc]
        if self.listener is not None:
            self.listener.on_shard_down(link)

    def mark_up(self, link: ShardLink) -> None:
        if link.state is LinkState.DOWN:
            log.info("router: shard %s is back", link.id)
        link.state = LinkState.UNSYNCED
        link.error = None
        link.probe_delay = FIRST_PROBE_DELAY
        link.next_sync = 0.0  # resynchronise at once
        if self.listener is not None:
            self.listener.on_shard_up(link)

    def probe_due(self, health_timeout: float) -> None:
        """Probe every down shard whose next probe is due (``shard_info``, quick at first)."""
        now = self.clock()
        for link in self.links.values():
            if link.state is LinkState.DOWN and not link.probing and now >= link.next_probe:
                self._probe(link, health_timeout)

    def _probe(self, link: ShardLink, health_timeout: float) -> None:
        link.probing = True

        def done(result: Any, err: FederationError | None) -> None:
            link.probing = False
            # quick at first (a shard still connecting), then every PROBE_INTERVAL
            link.probe_delay = min(PROBE_INTERVAL, link.probe_delay * 2)
            link.next_probe = self.clock() + link.probe_delay

        self.call(link.id, "shard_info", {}, done, timeout=health_timeout, force=True, probe=True)


def _safely(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        log.error("router callback failed", exc_info=True)


class ShardHandler(Protocol):
    """What :class:`InProcShardPool` drives: ``shard.server.ShardServer`` built with ``bind=None``."""

    def handle_batch(self, batch: list[list[bytes]]) -> list[list[bytes]]: ...


class InProcShardPool(ShardPool):
    """The shards live in this process; :meth:`pump` delivers what was sent, one group commit per shard.

    Faults, without sleeps: :meth:`kill` makes a shard vanish (calls in flight get no answer and
    fail at their deadline once the clock passes it; new sends fail at once, as ``ZMQ_IMMEDIATE``
    does), :meth:`restart` puts a (rebuilt) shard back.
    """

    _ROUTE = b"inproc"

    def __init__(
        self, shards: dict[str, ShardHandler], specs: Iterable[tuple[ShardSpec, str]], **kwargs: Any
    ):
        super().__init__(specs, **kwargs)
        self.shards: dict[str, ShardHandler | None] = dict(shards)
        self._queues: dict[str, list[list[bytes]]] = {sid: [] for sid in self.links}

    def _transmit(self, link: ShardLink, frames: list[bytes]) -> bool:
        if self.shards.get(link.id) is None:
            return False
        self._queues[link.id].append([self._ROUTE, *frames])
        return True

    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def pump(self) -> int:
        """Every shard handles what was sent to it (one batch each); replies reach their callbacks."""
        handled = 0
        for sid, queue in list(self._queues.items()):
            shard = self.shards.get(sid)
            if not queue or shard is None:
                continue
            batch, self._queues[sid] = queue, []
            handled += len(batch)
            for frames in shard.handle_batch(batch):
                link = self.links.get(sid)
                if link is not None:  # else it left the federation (resharding) meanwhile
                    self._on_reply(link, frames[1:])
        return handled

    def kill(self, sid: str) -> ShardHandler | None:
        """The shard vanishes mid-call: what it was sent is lost, unanswered."""
        shard, self.shards[sid] = self.shards.get(sid), None
        self._queues[sid] = []
        return shard

    def restart(self, sid: str, shard: ShardHandler) -> None:
        self.shards[sid] = shard

    def _open_link(self, link: ShardLink) -> None:
        self._queues.setdefault(link.id, [])

    def _close_link(self, link: ShardLink) -> None:
        self._queues.pop(link.id, None)
        self.shards.pop(link.id, None)
