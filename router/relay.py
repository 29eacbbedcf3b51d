"""The router's side of cross-shard dependencies; the shard's side is ``shard/federated.py``.

The two files mirror each other:

============================  ======================================  ==============================
what                          router (``Relay``)                      shard (``FederatedCore``)
============================  ======================================  ==============================
who mirrors what              ``subs``: dependency -> mirroring        its UNKNOWN placeholders
                              shards (learned from ``add_task``, and   (``fed_state().mirrors``)
                              from ``fed_state`` after any restart)
an owner's status changes     ``_pull`` -> ``on_changes`` ->           ``fed_changes(since)`` (feed,
                              ``fed_mirror_update`` to the mirrors     cursor, epoch)
                                                                       ``fed_mirror_update``
a mirror's priority rises     ``fed_raise_priority`` to the owner      ``fed_raise_priority``
a mirror's new stakeholders   ``fed_add_stakeholders`` to the owner    ``fed_changes().stakeholders``
                              (``_tell_stakeholders``)                 ``fed_add_stakeholders``
a new subscription            ``fed_status`` from the owner, pushed    ``fed_status``
                              to the new mirror (``_status_asks``)
a shard restarts              ``resync``: ``fed_state``, pull every    new epoch; ``fed_state``
                              owner's status of its mirrors and push
                              its own tasks' status to theirs
============================  ======================================  ==============================

What goes to one shard in one router turn (or for one feed page) goes in one ``fed_relay``
(``Outgoing``, ``_queue``, ``_send_outbox``): mirror updates, and for its own tasks forgotten and
first mentions, priority rises, stakeholders and status asks.  The single methods named above are
what ``fed_relay`` applies in that order, and what an older shard that does not know it is sent.

Entry points: :meth:`Relay.on_add_task` (new subscriptions; the answer waits until each remote
dependency's status is at the mirror), :meth:`Relay.hold` (a call that changes a mirrored task
is answered after the owner's feed was relayed), :meth:`Relay.flush` (once per router turn),
:meth:`Relay.tick` (timers: resync, periodic pulls) and :meth:`Relay.on_shard_down`.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from federation.errors import FederationError, TransportError
from router.calls import Call
from router.links import LinkState, ShardLink, ShardPool

log = logging.getLogger("router.relay")

RESYNC_BACKOFF = 1.0
#: task ids per fed_status / fed_mirror_update message
CHUNK = 5000
#: at most this many pushed versions and told first mentions are remembered (``Relay``)
MAX_REMEMBERED = 50_000


@dataclass(slots=True)
class Feed:
    """The router's cursor in one shard's change feed."""

    epoch: Any = None
    cursor: int = 0
    pulls_sent: int = 0
    pulls_done: int = 0
    #: a pull is owed (asked this turn, or the last page said "more")
    owed: bool = False
    periodic_in_flight: bool = False
    #: (pull number that must be done, call, until answered) — answers waiting for this shard's
    #: feed (``Relay.hold``)
    held: list[tuple[int, Call, bool]] = field(default_factory=list)
    #: pulls whose page was relayed and not all answered yet; and the held
    #: answers whose pull was handled, let go once every relay up to their pull was answered
    #: (``Relay._let_go``: a mirror update is acknowledged to nobody before the mirror has it)
    relaying: set[int] = field(default_factory=set)
    answering: list[tuple[int, Call]] = field(default_factory=list)


@dataclass(slots=True)
class Outgoing:
    """What goes to one shard in its next ``fed_relay`` (``Relay._queue``)."""

    parts: dict[str, Any] = field(default_factory=dict)
    #: ``status`` asks: task -> the mirror shards its owner's answer goes to
    targets: dict[str, set[str]] = field(default_factory=dict)
    #: called once the answer was handled (a status ask's waiting calls are let go)
    after: list[Callable[[], None]] = field(default_factory=list)
    #: a change-feed pull owed to this shard, answered with the rest (``fed_relay(since=)``):
    #: the cursor, and the pull's handler of ``fed_changes``' answer
    pull: tuple[int, Callable[[Any, FederationError | None], None]] | None = None
    #: a part may be acknowledged to a client before the shard answers (a priority asked again
    #: after an add_task, a first mention): a ``get_work`` meanwhile waits for the answer
    #: (``router.summaries``).  Not for a feed page's parts whose held answers all wait for the
    #: relays' answers (``Relay.hold``), nor for a grant's push (a RUNNING mirror gives nobody
    #: better work).
    waited: bool = False

    def mention(self, found: dict[str, list[Any]]) -> None:
        """First mentions: the earliest of each task (as the owner keeps it)."""
        if not found:
            return
        mentions = self.parts.setdefault("mentions", {})
        for task_id, pair in found.items():
            kept = mentions.get(task_id)
            if kept is None or tuple(pair) < tuple(kept):
                mentions[task_id] = pair

    def raise_to(self, priorities: dict[str, float]) -> None:
        """Priority rises: the highest of each task."""
        raises = self.parts.setdefault("raises", {})
        for task_id, p in priorities.items():
            if task_id not in raises or p > raises[task_id]:
                raises[task_id] = p

    def ask_status(self, targets: dict[str, set[str]], after: Callable[[], None] | None) -> None:
        """The owner's status of ``targets``' tasks, for the mirror shards named there."""
        status = self.parts.setdefault("status", [])
        for task_id, sids in targets.items():
            known = self.targets.get(task_id)
            if known is None:
                status.append(task_id)
                self.targets[task_id] = set(sids)
            else:
                known |= sids
        if after is not None:
            self.after.append(after)


class Relay:
    """Subscriptions, status asks, held answers, feed cursors and epochs: the cross-shard state."""

    def __init__(
        self,
        pool: ShardPool,
        owner: Callable[[str], str],
        fingerprint: str,
        *,
        release: Callable[[Call], None],
        on_report: Callable[[ShardLink, dict[str, Any], int], None],
        report_version: Callable[[str], int],
        on_workers: Callable[[str, list[str]], None],
        interval: float,
        on_hosted: Callable[[str, list[str]], None] | None = None,
        on_deleted: Callable[[str, str], None] | None = None,
        on_stakeholders: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.pool = pool
        self.owner = owner
        self.fingerprint = fingerprint
        self._release = release
        self._on_report = on_report
        self._report_version = report_version
        self._on_workers = on_workers
        #: a shard hosts batch runners (ids it does not own) / deleted a task it does not own
        self._on_hosted = on_hosted
        self._on_deleted = on_deleted
        #: an owner was told of stakeholders of its tasks (workers it must know from now on)
        self._on_stakeholders = on_stakeholders
        #: stakeholders not told to an owner that was down: sent when it is synchronised again
        self._stakes_owed: dict[str, list[list[Any]]] = defaultdict(list)
        self.interval = interval
        self.feeds: dict[str, Feed] = {sid: Feed() for sid in pool.links}
        #: remote dependency -> shards that mirror it; and by owner
        self.subs: dict[str, set[str]] = {}
        self.subs_by_owner: dict[str, set[str]] = defaultdict(set)
        #: highest priority already pushed to a task's owner from a mirror
        self.prio_sent: dict[str, float] = {}
        #: the priority asked again after the owner's add_task (``reraise``): the owner has it
        self.prio_reraised: dict[str, float] = {}
        #: what goes to each shard in one ``fed_relay`` at the end of this router turn (or with a
        #: feed page's relay, if sooner): mirror updates (``push``), first mentions, priority
        #: rises, the status asks of new subscriptions (``_queue``, ``_send_outbox``)
        self._outbox: dict[str, Outgoing] = {}
        #: (task id, mirror shard) -> the (epoch, seq) pushed there: the feed's same entry is not
        #: relayed again (``on_changes``)
        self._pushed: dict[tuple[str, str], tuple[Any, Any]] = {}
        #: first mentions already sent to owners (task id -> [time, number]), the newest last: a
        #: placeholder reported fresh by its shard's feed and again as created by its first update
        #: is told once (``fed_first_mention`` keeps the earliest anyway)
        self._mentioned: OrderedDict[str, list[Any]] = OrderedDict()
        #: this turn's new mirror subscriptions, by owner: dependency -> shards that mirror it
        self._status_asks: dict[str, dict[str, set[str]]] = {}
        #: (dependency, mirroring shard) whose owner status is not at the mirror yet -> calls waiting
        self._unsettled: dict[tuple[str, str], list[Call]] = {}
        self._next_periodic = 0.0
        #: shards sent a batch runner's effects during a shard's feed pull: that pull's held
        #: answers wait for their feeds next
        self._batch_targets: dict[str, set[str]] = {}
        #: the placement a resharding in progress goes to (its shards may serve it already)
        self.next_fingerprint: str | None = None
        #: during a resharding, until the switch: task ids whose status is not relayed (moving)
        self.frozen: Callable[[str], bool] | None = None

    # -- entry points -------------------------------------------------------------------------
    def on_add_task(self, call: Call, sid: str, kwargs: dict[str, Any]) -> None:
        """``add_task`` forwarded to shard ``sid``: its remote dependencies are mirrored there from now on.

        The answer waits until the owner's current status of each has been sent to the mirror
        (after the add_task that makes the placeholder: same FIFO), so the worker's next get_work
        sees it — also when another call of this turn subscribed the same dependency first.
        """
        for field_name in ("deps", "new_deps"):
            deps = kwargs.get(field_name)
            if not isinstance(deps, list):
                continue
            for dep in deps:
                if not isinstance(dep, str):
                    continue
                dep_owner = self.owner(dep)
                if dep_owner == sid:
                    # made here as a placeholder, perhaps: with the priority its mirrors asked for
                    self.reraise(dep, sid, kwargs.get("priority", 0), remember=False)
                    continue
                key = (dep, sid)
                if self._subscribe(dep, sid):
                    self._status_asks.setdefault(dep_owner, {}).setdefault(dep, set()).add(sid)
                    waiting = self._unsettled.setdefault(key, [])
                else:
                    found = self._unsettled.get(key)
                    if found is None:
                        continue  # its status reached the mirror already
                    waiting = found
                if not any(c is call for c in waiting):
                    call.waits += 1
                    waiting.append(call)

    def reraise(self, task_id: str, sid: str, priority: Any, *, remember: bool = True) -> None:
        """``add_task(task_id)`` was just forwarded to its owner ``sid``: a priority its mirrors
        already asked for (sent when the owner may not have had the task yet) is asked again,
        after it on the same FIFO, so the task starts with the priority one luigid would give it.
        Also for an ``add_task`` naming ``task_id`` as a dependency, which may make it there
        (a placeholder: Luigi's placeholder has the highest priority any dependent asked for);
        that one is not remembered (the owner may not have made it: a disabled worker's call)."""
        wanted = self.prio_sent.get(task_id)
        if wanted is None or self.owner(task_id) != sid:
            return
        if isinstance(priority, (int, float)) and not isinstance(priority, bool) and priority >= wanted:
            return
        if self.prio_reraised.get(task_id) == wanted:
            return  # asked again after an earlier add_task: the owner has it (a DONE report...)
        if remember:
            self.prio_reraised[task_id] = wanted
        self._queue(sid).raise_to({task_id: wanted})

    def is_mirrored(self, task_id: str) -> bool:
        return task_id in self.subs

    def mirrors_of(self, task_id: str) -> set[str]:
        return self.subs.get(task_id, set())

    def hold(self, call: Call, sid: str, *, until_answered: bool = True) -> None:
        """Answer ``call`` only after the owner's next change-feed pull has been relayed.

        ``until_answered``: once every relay of that page was answered (a report that changes a
        mirrored task: its mirror updates are then ``concurrent`` calls, for which no get_work
        waits); else once they are sent (an ``add_task`` naming remote dependencies: a worker
        registering its tasks sends another ``add_task`` next, and a get_work waits for these
        relays meanwhile).  The pull is sent once the shard is synchronised (right away,
        normally); a shard that goes down or turns out not to be federated releases what it held.
        """
        link = self.pool.links[sid]
        if link.state is LinkState.DOWN or link.federated is False:
            return
        feed = self.feeds[sid]
        call.waits += 1
        feed.owed = True
        feed.held.append((feed.pulls_sent + 1, call, until_answered))

    def push(self, sid: str, update: list[Any]) -> None:
        """Send ``update`` (a feed entry) to mirror shard ``sid`` at the end of this router turn,
        with the turn's others for that shard in one ``fed_relay``: ahead of anything
        sent there in a later turn (the same FIFO), so ahead of the next call of any client that
        was answered in this one."""
        self._queue(sid, waited=False).parts.setdefault("updates", []).append(update)
        pushed = self._pushed
        if len(pushed) >= MAX_REMEMBERED:
            pushed.pop(next(iter(pushed)))
        pushed[(update[0], sid)] = (update[2], update[3])

    def flush(self) -> None:
        """Once per router turn: what is queued for each shard (pushed mirror updates, first
        mentions, priority rises, the status of this turn's new subscriptions from their owners)
        in one ``fed_relay`` per shard, and owed pulls."""
        asks, self._status_asks = self._status_asks, {}
        for owner, targets in asks.items():

            def settled(targets: dict[str, set[str]] = targets) -> None:
                for dep, sids in targets.items():
                    for sid in sids:
                        for call in self._unsettled.pop((dep, sid), ()):
                            self._release(call)

            self._queue(owner).ask_status(targets, settled)
        for sid, feed in self.feeds.items():
            if not feed.owed:
                continue
            link = self.pool.links[sid]
            if link.federated is False:
                feed.owed = False
                held, feed.held = feed.held, []
                for _, call, _ in held:
                    self._release(call)
            elif link.state is LinkState.READY:
                feed.owed = False
                # with what else goes there this turn (after it, as if sent after it)
                self._pull(link, via=self._outbox.get(sid))
        self._send_outbox()

    def tick(self, now: float) -> None:
        """Timers: resynchronise shards that need it, and pull every feed each ``interval``."""
        for link in self.pool.links.values():
            # a shard not heard from yet is synchronised at once: its answer is how it comes up
            if link.state in (LinkState.UNSYNCED, LinkState.CONNECTING) and now >= link.next_sync:
                self.resync(link)
        if now >= self._next_periodic:
            self._next_periodic = now + self.interval
            for sid, feed in self.feeds.items():
                link = self.pool.links[sid]
                if link.state is LinkState.READY and not feed.periodic_in_flight:
                    feed.periodic_in_flight = True
                    self._pull(link, periodic=True)

    def next_timer(self) -> float:
        return self._next_periodic

    def on_shard_down(self, link: ShardLink) -> None:
        feed = self.feeds[link.id]
        feed.periodic_in_flight = False
        held, feed.held = feed.held, []
        for _, call, _ in held:
            self.pool.defer(lambda call=call: self._release(call))  # type: ignore[misc]
        # (what waits for relays of this shard's pages is let go as their answers come: the
        # relays went to the other shards)

    # -- the change feed ----------------------------------------------------------------------
    def _pull(self, link: ShardLink, *, periodic: bool = False, via: Outgoing | None = None) -> None:
        feed = self.feeds[link.id]
        feed.pulls_sent += 1
        number = feed.pulls_sent
        version = self._report_version(link.id)
        epoch = feed.epoch

        def relayed() -> None:
            feed.relaying.discard(number)
            self._let_go(feed)

        def done(result: Any, err: FederationError | None) -> None:
            if periodic:
                feed.periodic_in_flight = False
            feed.relaying.add(number)
            try:
                if err is None and isinstance(result, dict) and epoch == feed.epoch:
                    more = self.on_changes(link, result, version)
                    if more and link.state is LinkState.READY:
                        feed.owed = True
                elif err is not None and not isinstance(err, TransportError):
                    log.warning("router: change feed of shard %s: %s", link.id, err)
            finally:
                feed.pulls_done = max(feed.pulls_done, number)
                chained = self._batch_targets.pop(link.id, ())
                keep, sent = [], []
                for n, call, until_answered in feed.held:
                    if n <= feed.pulls_done:
                        for sid in chained:
                            self.hold(call, sid, until_answered=until_answered)
                        if until_answered:
                            feed.answering.append((n, call))
                        else:
                            sent.append(call)
                    else:
                        keep.append((n, call, until_answered))
                feed.held = keep
                if sent:
                    # answered once sent: a get_work meanwhile waits for these relays
                    for out in self._outbox.values():
                        out.waited = True
                # the page's relays (and what else went this turn); the answers held until they
                # are answered are let go then (``_let_go``), the others now
                self._send_outbox(relayed)
                for call in sent:
                    self._release(call)

        if via is not None and via.pull is None:
            via.pull = (feed.cursor, done)
        else:
            self.pool.call(link.id, "fed_changes", {"since": feed.cursor}, done)

    def _let_go(self, feed: Feed) -> None:
        """Answer the held calls whose pull was handled and every relay up to it answered."""
        if not feed.answering:
            return
        first = min(feed.relaying) if feed.relaying else None
        ready = [call for n, call in feed.answering if first is None or n < first]
        if ready:
            feed.answering = [(n, c) for n, c in feed.answering if not (first is None or n < first)]
            for call in ready:
                self._release(call)

    def on_changes(self, link: ShardLink, result: dict[str, Any], version: int) -> bool:
        """Queue one change-feed page's relays (sent by the caller); True when the shard has more."""
        feed = self.feeds[link.id]
        if result.get("epoch") != feed.epoch:
            log.info("router: shard %s restarted (new epoch); resynchronising", link.id)
            if link.state in (LinkState.READY, LinkState.SYNCING):
                link.state = LinkState.UNSYNCED
            return False
        feed.cursor = max(feed.cursor, int(result.get("seq") or 0))
        self._on_report(link, result, version)
        updates: dict[str, list[list[Any]]] = defaultdict(list)
        raises: dict[str, dict[str, float]] = defaultdict(dict)
        fresh: dict[str, list[str]] = defaultdict(list)
        mentions: dict[str, dict[str, list[Any]]] = defaultdict(dict)
        forgotten: dict[str, list[str]] = defaultdict(list)
        for change in result.get("changes") or ():
            task_id, status, priority, seq = change[:4]
            owner = self.owner(task_id)
            if owner == link.id:
                if status is None:
                    self.prio_reraised.pop(task_id, None)  # made again later: asked again then
                if self.frozen is not None and self.frozen(task_id):
                    continue  # moving (resharding): its new owner's status is relayed after the switch
                for sid in self.subs.get(task_id, ()):
                    if self._pushed and self._pushed.pop((task_id, sid), None) == (feed.epoch, seq):
                        continue  # pushed there at its grant already: the same version
                    updates[sid].append([task_id, status, feed.epoch, seq])
                continue
            if status is None:
                mirrored = task_id in self.subs
                self._unsubscribe(task_id, link.id)  # the mirror is gone from that shard
                if mirrored and task_id not in self.subs:
                    # its last placeholder: a first mention its owner keeps is no mention any more
                    forgotten[owner].append(task_id)
                if self._on_deleted is not None:
                    self._on_deleted(task_id, link.id)  # or a batch runner it hosted
                continue
            if len(change) > 4 and change[4]:
                # a placeholder no update has reached (new, or deleted and made again since the
                # router last looked): subscribe it and pull its owner's status
                self._subscribe(task_id, link.id)
                fresh[owner].append(task_id)
                if len(change) > 6:
                    mentions[owner][task_id] = [change[5], change[6]]
            if _is_priority(priority) and priority > self.prio_sent.get(task_id, -math.inf):
                # as is: Luigi's priorities may be floats
                self.prio_sent[task_id] = priority
                raises[owner][task_id] = priority
        found_raises = result.get("raises")
        if isinstance(found_raises, dict):
            # Luigi's inheritance into a dependency the shard has no placeholder of: its owner
            # raises it if it has it (not remembered: luigid raises only a task it has)
            for task_id, p in found_raises.items():
                if (
                    isinstance(task_id, str)
                    and _is_priority(p)
                    and (dep_owner := self.owner(task_id)) != link.id
                ):
                    raises[dep_owner][task_id] = max(p, raises[dep_owner].get(task_id, p))
        effects = result.get("batch")
        if isinstance(effects, list) and effects:
            # a batch runner here changed its batch: the batch's tasks on other shards follow, and
            # what waited for this feed waits for theirs too (their mirrors elsewhere follow them)
            targets = self._batch_targets.setdefault(link.id, set())
            for sid, other in self.pool.links.items():
                if sid != link.id and other.state is LinkState.READY and other.federated is True:
                    self.pool.call(sid, "fed_batch_apply", {"effects": effects}, _log_error)
                    targets.add(sid)
        # what goes to each shard goes in one fed_relay (in the order of the single methods),
        # with what was queued for it this turn, before the answers held for this page are let go
        for owner, gone in forgotten.items():
            for task_id in gone:
                self._mentioned.pop(task_id, None)  # mentioned again later: told again
            self._queue(owner, waited=False).parts.setdefault("forget", []).extend(gone)
        for owner, found in mentions.items():
            # the placeholder was the task's first mention: its owner takes that creation time
            self._queue(owner, waited=False).mention(self._new_mentions(found))
        for sid, items in updates.items():
            self._queue(sid, waited=False).parts.setdefault("updates", []).extend(items)
        for owner, prios in raises.items():
            self._queue(owner, waited=False).raise_to(prios)
        for owner, entries in self._stakeholders_by_owner(link.id, result.get("stakeholders")).items():
            self._queue(owner, waited=False).parts.setdefault("stakeholders", []).extend(entries)
        for owner, task_ids in fresh.items():
            self._queue(owner, waited=False).ask_status({t: {link.id} for t in task_ids}, None)
        return bool(result.get("more"))

    def _queue(self, sid: str, *, waited: bool = True) -> Outgoing:
        """What goes to shard ``sid`` in its next ``fed_relay`` (``_send_outbox``); ``waited``:
        see ``Outgoing.waited``."""
        out = self._outbox.get(sid)
        if out is None:
            out = self._outbox[sid] = Outgoing()
        if waited:
            out.waited = True
        return out

    def _send_outbox(self, then: Callable[[], None] | None = None) -> None:
        """Send what is queued for each shard; ``then`` once every one of these relays was answered."""
        if not self._outbox:
            if then is not None:
                then()
            return
        outbox, self._outbox = self._outbox, {}
        left = [1]

        def one() -> None:
            left[0] -= 1
            if left[0] == 0 and then is not None:
                then()

        for sid, out in outbox.items():
            if sid in self.pool.links:
                left[0] += 1
                self._send_relay(sid, out, one)
            elif out.pull is not None:
                # the shard left the federation meanwhile (resharding): its pull fails as a call would
                out.pull[1](None, TransportError(f"shard {sid} is not in the federation (any more)"))
        one()

    def _send_relay(self, sid: str, out: Outgoing, then: Callable[[], None] = lambda: None) -> None:
        """One ``fed_relay`` to shard ``sid`` with ``out``'s parts (``updates`` for its mirrors;
        ``forget``, ``mentions``, ``raises``, ``stakeholders``, ``status`` for its own tasks); its
        answer is handled as the single methods' answers.  A shard that does not know
        ``fed_relay`` (an older one during a rolling upgrade) is sent the single methods; parts
        over ``CHUNK`` entries go on their own, in chunks.  ``then`` once the answer was handled."""
        parts, targets, after, pull = out.parts, out.targets, out.after, out.pull
        stakes = parts.get("stakeholders")
        if stakes is not None and self.pool.links[sid].state is LinkState.DOWN:
            # told when it is synchronised again (``resync``; router memory: a restarted router
            # resynchronises every shard, whose ``fed_state`` tells them all again)
            self._stakes_owed[sid].extend(parts.pop("stakeholders"))
            stakes = None
        big = {
            k: parts.pop(k) for k in ("updates", "status", "stakeholders") if len(parts.get(k) or ()) > CHUNK
        }
        if big:
            self._send_single(sid, big, targets, after if "status" in big else [])
            if "status" in big:
                after = []
            if "stakeholders" in big:
                stakes = None
        if not parts:
            try:
                for fn in after:
                    fn()
                if pull is not None:
                    self.pool.call(sid, "fed_changes", {"since": pull[0]}, pull[1])
            finally:
                then()
            return
        if stakes is not None and self._on_stakeholders is not None:
            self._met(sid, stakes)
        if pull is not None:
            parts["since"] = pull[0]

        def done(result: Any, err: FederationError | None) -> None:
            if err is not None and err.code == "unknown_method":
                try:
                    parts.pop("since", None)
                    self._send_single(sid, parts, targets, after)
                    if pull is not None:
                        self.pool.call(sid, "fed_changes", {"since": pull[0]}, pull[1])
                finally:
                    then()
                return
            try:
                if "updates" in parts:
                    self._updated(sid, result, err)
                if stakes is not None and isinstance(err, TransportError):
                    self._stakes_owed[sid].extend(stakes)  # the shard went down meanwhile
                if "raises" in parts:
                    self._raised(sid, result, err)
                if "status" in parts:
                    # (the calls waiting for a new mirror's first status are let go once it is sent:
                    # those updates are waited for by a get_work, as a worker registering its tasks
                    # calls get_work only at the end, and the registration need not wait)
                    self._statuses(sid, result, err, targets)
                elif err is not None and not isinstance(err, TransportError):
                    _log_error(result, err)
            finally:
                try:
                    for fn in after:
                        fn()
                finally:
                    try:
                        if pull is not None:
                            # the feed's page, as fed_changes answers it (after the parts: the same FIFO)
                            page = result.get("feed") if err is None and isinstance(result, dict) else None
                            pull[1](page, err)
                    finally:
                        then()

        self.pool.call(sid, "fed_relay", parts, done, concurrent=not out.waited)

    def _send_single(
        self, sid: str, parts: dict[str, Any], targets: dict[str, set[str]], after: list[Callable[[], None]]
    ) -> None:
        """``parts`` of a ``fed_relay`` as the single methods (an older shard; a part too big)."""
        if "updates" in parts:
            self._send_updates({sid: parts["updates"]})
        if "forget" in parts:
            self.pool.call(sid, "fed_forget_mentions", {"task_ids": parts["forget"]}, _log_error)
        if "mentions" in parts:
            self.pool.call(sid, "fed_first_mention", {"mentions": parts["mentions"]}, _log_error)
        if "raises" in parts:
            self._send_raises({sid: parts["raises"]})
        if "stakeholders" in parts:
            self._tell_stakeholders("", parts["stakeholders"])
        if "status" in parts:
            self._relay_status(sid, parts["status"], targets, _all(after) if after else None)
        else:
            for fn in after:
                fn()

    def _stakeholders_by_owner(self, sid: str, found: Any) -> dict[str, list[list[Any]]]:
        """Shard ``sid``'s mirrors have these stakeholders (``[[task_id, [[worker, last_active],
        ...]], ...]``), by owner: their owners make them stakeholders too, and know these workers
        from now on (so the router keeps them active there: luigid has one task and one worker)."""
        by_owner: dict[str, list[list[Any]]] = defaultdict(list)
        if not isinstance(found, list):
            return by_owner
        for entry in found:
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
                owner = self.owner(entry[0])
                if owner != sid and owner in self.pool.links:
                    by_owner[owner].append(entry)
        return by_owner

    def _tell_stakeholders(self, sid: str, found: Any) -> None:
        """``fed_add_stakeholders`` to the owners of shard ``sid``'s mirrors with stakeholders
        (``_stakeholders_by_owner``); after a resynchronisation, and to an older shard."""
        for owner, entries in self._stakeholders_by_owner(sid, found).items():
            if self.pool.links[owner].state is LinkState.DOWN:
                # told when it is synchronised again (``resync``; router memory: a restarted
                # router resynchronises every shard, whose ``fed_state`` tells them all again)
                self._stakes_owed[owner].extend(entries)
                continue
            for i in range(0, len(entries), CHUNK):
                chunk = entries[i : i + CHUNK]

                def told(
                    result: Any, err: FederationError | None, owner: str = owner, chunk: list[Any] = chunk
                ) -> None:
                    if isinstance(err, TransportError):
                        self._stakes_owed[owner].extend(chunk)  # the owner went down meanwhile
                    else:
                        _log_error(result, err)

                self.pool.call(owner, "fed_add_stakeholders", {"stakeholders": chunk}, told)
            if self._on_stakeholders is not None:
                self._met(owner, entries)

    def _met(self, owner: str, entries: list[list[Any]]) -> None:
        assert self._on_stakeholders is not None
        workers = {w[0] for e in entries if isinstance(e[1], list) for w in e[1] if isinstance(w, list) and w}
        self._on_stakeholders(owner, sorted(w for w in workers if isinstance(w, str)))

    def _send_updates(self, updates: dict[str, list[list[Any]]]) -> None:
        for sid, items in updates.items():
            for i in range(0, len(items), CHUNK):
                chunk = items[i : i + CHUNK]

                def done(result: Any, err: FederationError | None, sid: str = sid) -> None:
                    self._updated(sid, result, err)

                self.pool.call(sid, "fed_mirror_update", {"updates": chunk}, done)

    def _updated(self, sid: str, result: Any, err: FederationError | None) -> None:
        """``fed_mirror_update``'s answer from mirror shard ``sid``."""
        if err is None and isinstance(result, dict):
            for task_id in result.get("missing") or ():
                self._unsubscribe(task_id, sid)
            created = result.get("created")
            if isinstance(created, dict) and created:
                # new placeholders: their tasks' first mentions, for their owners (at the end of
                # this turn, with what else goes there)
                by_owner: dict[str, dict[str, Any]] = defaultdict(dict)
                for task_id, pair in created.items():
                    by_owner[self.owner(task_id)][task_id] = pair
                retell = result.get("retell")
                again = set(retell) if isinstance(retell, list) else ()
                for owner, found in by_owner.items():
                    if owner in self.pool.links:
                        self._queue(owner).mention(self._new_mentions(found, again))

    def _new_mentions(self, found: dict[str, Any], again: Collection[str] = ()) -> dict[str, Any]:
        """Of ``found``, what was not told already, and ``again``; remembered as told."""
        told = self._mentioned
        new = {
            task_id: pair for task_id, pair in found.items() if task_id in again or told.get(task_id) != pair
        }
        for task_id, pair in new.items():
            told.pop(task_id, None)
            told[task_id] = pair
        while len(told) > MAX_REMEMBERED:
            told.popitem(last=False)
        return new

    def _send_raises(self, raises: dict[str, dict[str, float]]) -> None:
        for sid, prios in raises.items():

            def raised(result: Any, err: FederationError | None, sid: str = sid) -> None:
                self._raised(sid, result, err)

            self.pool.call(sid, "fed_raise_priority", {"priorities": prios}, raised)

    def _raised(self, sid: str, result: Any, err: FederationError | None) -> None:
        # the owner passes the rise on to its own dependencies, some of them mirrors of a third
        # shard's tasks: pull its feed now, so a chain of shards rises in one go
        if err is None and not (isinstance(result, dict) and result.get("mirrors") is False):
            self.feeds[sid].owed = True  # (an older shard answers None: pulled too)

    # -- subscriptions ------------------------------------------------------------------------
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
            self.prio_reraised.pop(task_id, None)

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

        def one(result: Any, err: FederationError | None) -> None:
            try:
                self._statuses(owner, result, err, targets)
            finally:
                left[0] -= 1
                if left[0] == 0 and done is not None:
                    done()

        for chunk in chunks:
            self.pool.call(owner, "fed_status", {"task_ids": chunk}, one)

    def _statuses(
        self, owner: str, result: Any, err: FederationError | None, targets: dict[str, set[str]] | None
    ) -> None:
        """``fed_status``'s answer from ``owner``: pushed to the mirrors (``targets``, or all)."""
        if err is None and isinstance(result, dict):
            epoch = result.get("epoch")
            updates: dict[str, list[list[Any]]] = defaultdict(list)
            for task_id, state in (result.get("tasks") or {}).items():
                if self.owner(task_id) != owner or (self.frozen is not None and self.frozen(task_id)):
                    continue  # moving (resharding), or moved while the answer was on its way
                status, seq = (state[0], state[2]) if state else (None, 0)
                for sid in (targets or {}).get(task_id) or self.subs.get(task_id) or ():
                    updates[sid].append([task_id, status, epoch, seq])
            self._send_updates(updates)
        elif err is not None:
            log.info("router: cannot read status from shard %s yet: %s", owner, err.message)

    # -- after any restart --------------------------------------------------------------------
    def resync(self, link: ShardLink) -> None:
        """Rebuild what the router knows of one shard and bring its mirrors (and theirs) up to date."""
        link.state = LinkState.SYNCING
        link.bundles = False  # until it says so again (a restarted shard may be another build)
        # a restarted shard may have lost what it was told: tell and relay everything again
        self._mentioned.clear()
        self._pushed.clear()
        feed = self.feeds[link.id]

        def on_state(result: Any, err: FederationError | None) -> None:
            if link.state is not LinkState.SYNCING:
                return  # went down meanwhile; a later resync starts over
            if err is not None or not isinstance(result, dict):
                link.state = LinkState.UNSYNCED
                link.next_sync = self.pool.clock() + RESYNC_BACKOFF
                if err is not None and err.code == "unknown_method":
                    link.federated = False
                    link.state = LinkState.PLAIN  # nothing to synchronise; served as a plain scheduler
                    log.error(
                        "router: shard %s is not federated (no fed_state): remote dependencies and "
                        "global resources are off for it; serve it with the federation config",
                        link.id,
                    )
                elif err is not None and not isinstance(err, TransportError):
                    log.warning("router: cannot synchronise shard %s: %s", link.id, err)
                return
            link.federated = True
            link.bundles = result.get("bundles") is True
            theirs = result.get("placement")
            if theirs != self.fingerprint and theirs != self.next_fingerprint:
                # the shard tells its own tasks from mirrors by placement: it must be the router's
                log.error(
                    "router: shard %s places tasks differently (placement %s, router %s): "
                    "serve every shard and the router from the same federation.toml",
                    link.id,
                    theirs,
                    self.fingerprint,
                )
            feed.epoch = result.get("epoch")
            feed.cursor = int(result.get("seq") or 0)
            self._on_report(link, result, self._report_version(link.id))
            self._on_workers(link.id, list(result.get("workers") or ()))
            if self._on_hosted is not None:
                self._on_hosted(link.id, list(result.get("hosted") or ()))
            by_owner: dict[str, list[str]] = defaultdict(list)
            raises: dict[str, dict[str, float]] = defaultdict(dict)
            for task_id, priority in (result.get("mirrors") or {}).items():
                owner = self.owner(task_id)
                if owner == link.id:
                    continue
                self._subscribe(task_id, link.id)
                by_owner[owner].append(task_id)
                if _is_priority(priority) and priority > self.prio_sent.get(task_id, -math.inf):
                    self.prio_sent[task_id] = priority
                    raises[owner][task_id] = priority
            for owner, task_ids in by_owner.items():
                self._relay_status(owner, task_ids, {t: {link.id} for t in task_ids})
            self._send_raises(raises)
            self._tell_stakeholders(link.id, result.get("stakeholders"))
            owed = self._stakes_owed.pop(link.id, None)
            if owed:
                self._tell_stakeholders("", owed)
            owned = sorted(self.subs_by_owner.get(link.id, ()))
            if owned:
                self._relay_status(link.id, owned, None)
            link.state = LinkState.READY
            log.info(
                "router: shard %s synchronised (%d mirrors, %d mirrored elsewhere)",
                link.id,
                len(result.get("mirrors") or ()),
                len(owned),
            )

        self.pool.call(link.id, "fed_state", {}, on_state)


def _all(fns: list[Callable[[], None]]) -> Callable[[], None]:
    def run() -> None:
        for fn in fns:
            fn()

    return run


def _log_error(result: Any, err: FederationError | None) -> None:
    if err is not None and not isinstance(err, TransportError):
        log.warning("router: a relayed call failed: %s", err)


def _is_priority(value: Any) -> bool:
    """A priority as Luigi takes it: a number (int or float), not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
