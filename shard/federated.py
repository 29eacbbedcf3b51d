"""A shard's federation side: mirrors of remote dependencies, a change feed, global resources.

:class:`FederatedCore` wraps a :class:`shard.scheduler.SchedulerCore` and
is what the :class:`~shard.server.ShardServer` serves: Luigi's 39 methods
are the core's own, untouched; the ``fed_*`` methods (given to the server as
``extra_methods``) are what the router uses.  Everything stays durable
through the same ``collect_changes``/``restore`` contract.

Mirrors
    A task on this shard whose owner (``federation.placement``) is another
    shard is a *mirror*: Luigi's own UNKNOWN placeholder for a dependency,
    created by the core's ``add_task``.  The router pushes the owner's status
    into it (``fed_mirror_update``); the status is set directly (no
    failures, retries or history events of its own), through the core's
    status index, so that dependents become schedulable exactly when the
    owner's task is DONE.  A mirror has no workers and is never runnable, so
    it is never handed out; with no ``worker_running`` and no ``retry`` time,
    ``prune`` never changes its status either (``SchedulerCore.force_status``).
    The version of the last update applied (``(owner_epoch, seq)``) is kept in
    the task's ``fed`` field, which the core persists in its record, so a late
    or repeated update never moves a mirror backwards, also across restarts.

Change feed
    Every status or priority change of a task here gets a sequence number in
    this process's *epoch* (its start time).  ``fed_changes(since)`` returns
    the latest state of every task changed after ``since``; the router relays
    owned tasks' changes to their mirrors and mirrors' priority rises to
    their owners.  A restart (or a store reload) starts a new epoch, which
    tells the router to resynchronise.  The feed is only answered after the
    batch that produced it was committed (the server replies after commit),
    so nothing is relayed that a crash could take back.  The feed holds one
    entry per live task and the deletions of the last ``FEED_RETENTION``
    seconds (at most ``FEED_MAX_DELETIONS``), so its memory stays flat under
    churn; a router whose cursor is older than a forgotten deletion is told
    to resynchronise (``resync``) instead of missing it.

Stakeholders
    Luigi's ``add_task`` makes the worker a stakeholder of each dependency; a mirror is one task
    with its owner's, so the feed names a mirror's new stakeholders (with their ``last_active``
    here) and the router tells the owner (``fed_add_stakeholders``): the owner keeps the task
    while any of them lives anywhere, and prunes them as luigid would.  Conversely a mirror whose
    owner has the task (``fed["live"]``) is not removed here while so.  What an owner may have
    lost is told again: when the owner first has the task, after its restart (a new epoch), and
    in ``fed_state`` (the router's resync of this shard).

Global resources
    ``fed_get_work`` takes ``external_used_resources`` — what the other
    shards' RUNNING tasks hold — and counts it as used while the core picks a
    task; its reply reports this shard's own usage and whether it has any
    unfinished task needing resources.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import Any

from federation.placement import Placement, namespace_of
from shard.changes import Changes, Snapshot
from shard.scheduler import (
    BATCH_RUNNING,
    DISABLED,
    DONE,
    FAILED,
    PENDING,
    RPC_METHODS,
    RUNNING,
    SUSPENDED,
    UNKNOWN,
    SchedulerCore,
)

#: what a batch runner's status change can hand on to its batch's tasks
_EFFECT_STATUSES = frozenset({PENDING, DONE, FAILED, DISABLED, SUSPENDED, UNKNOWN})

#: most changes returned by one fed_changes call (the router asks again when ``more`` is set)
FEED_PAGE = 20_000
#: seconds a deletion stays in the change feed; a router that pulls less often is told to resync
FEED_RETENTION = 120.0
#: most deletions the change feed keeps, however recent (memory stays flat under any churn)
FEED_MAX_DELETIONS = 50_000

FED_METHODS = (
    "fed_state",
    "fed_changes",
    "fed_status",
    "fed_mirror_update",
    "fed_raise_priority",
    "fed_get_work",
    "fed_offer",
    "fed_graph",
    "fed_task_list",
    "fed_task_search",
    "fed_resource_list",
    "fed_worker_list",
    "fed_display_names",
    "fed_health",
    "fed_inverse_dep_graph",
    "fed_graph_nodes",
    "fed_first_mention",
    "fed_forget_mentions",
    "fed_placeholder_fields",
    "fed_touch_workers",
    "fed_greedy_walk",
    "fed_batch_candidates",
    "fed_batch_claim",
    "fed_batch_release",
    "fed_batch_apply",
    "fed_worker_summaries",
    "fed_add_stakeholders",
    "fed_relay",
)


class FederatedCore:
    """A drop-in core for :class:`~shard.server.ShardServer` with the federation's methods."""

    def __init__(
        self,
        core: SchedulerCore,
        shard_id: str,
        placement: Placement | None,
        clock: Callable[[], float] = time.time,
        *,
        feed_retention: float = FEED_RETENTION,
        feed_max_deletions: int = FEED_MAX_DELETIONS,
    ) -> None:
        self.core = core
        self.shard_id = shard_id
        self.placement = placement
        self.RPC_METHODS = RPC_METHODS
        # the core's methods the server calls on every request or batch, bound here: reaching
        # them through ``__getattr__`` (a failed lookup first) costs more than the calls
        self.observe_stamp = core.observe_stamp
        self.worker_summaries = core.worker_summaries
        self._clock = clock
        self.feed_retention = feed_retention
        self.feed_max_deletions = feed_max_deletions
        self._epoch = 0.0
        self._stash: Changes | None = None
        #: mirror updates not committed yet (``fed_mirror_update``): written with the next commit
        #: that has anything else.  A crash loses only mirror statuses that replaced one which
        #: made nothing runnable (not DONE, not DISABLED): the mirror is back at that status, which
        #: makes nothing runnable either, until the router's resync of the restarted shard pushes
        #: the owners' statuses again; anything granted meanwhile committed them with it
        self._lazy: Changes | None = None
        core.keep_batch_effects = True
        core.keep_dep_raises = True
        #: priorities Luigi's inheritance raised into dependencies other shards own, not mirrored
        #: here (no placeholder: an assistant's add_task makes none): for the router to pass on
        self._dep_raises: dict[str, Any] = {}
        self._rebuild()

    # -- the core contract ------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        # Luigi's methods and the rest of the core's public surface come from the core itself;
        # its private state is not part of the contract
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.core, name)

    @property
    def prunes_on_get_work(self) -> bool:
        return self.core.prunes_on_get_work

    def collect_changes(self) -> Changes:
        """What to commit: everything changed since the last call, with the mirror updates held
        back (``_lazy``) when nothing else changed."""
        self._absorb()
        changes, self._stash = self._stash, None
        if changes is None or changes.is_empty():
            return Changes()
        return self._with_lazy(changes)

    def _with_lazy(self, changes: Changes) -> Changes:
        """``changes`` after the held-back mirror updates (which they override)."""
        lazy, self._lazy = self._lazy, None
        if lazy is None:
            return changes
        _merge_into(lazy, changes)
        return lazy

    def snapshot(self) -> Snapshot:
        return self.core.snapshot()

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the state; a new epoch starts (the router resynchronises)."""
        self.core.restore(snapshot)
        self._stash = None
        self._lazy = None
        self._rebuild()

    def prune(self) -> None:
        self.core.prune()

    def add_task(self, **kwargs: Any) -> None:
        """Luigi's ``add_task``; a task added here that another shard owns is a batch runner the
        router pinned to its batch's shard: it is *hosted* here (this shard's own task in every
        respect, listed as such to the router), not a mirror."""
        core = self.core
        gone = set(core.gone) if core.gone else None
        core.add_task(**kwargs)
        if gone is not None and gone != core.gone:
            # placeholders of tasks their owners deleted, mentioned again: made anew here (a new
            # first mention); the feed shows them fresh so the router tells their owners
            self._absorb()
            for dep in gone - core.gone:
                self._refeed(dep)
        task_id = kwargs.get("task_id")
        if isinstance(task_id, str) and not self.owns(task_id):
            t = self.core.get_task(task_id)
            if t is not None and not t.fed.get("hosted"):
                self.core.update_fed(task_id, {"hosted": True})

    def _hosted_ids(self, task_ids: Any) -> list[str]:
        """Of ``task_ids`` (listed here), those this shard hosts without owning them."""
        get_task = self.core.get_task
        return [
            tid
            for tid in task_ids
            if not self.owns(tid) and (t := get_task(tid)) is not None and _hosted(t.family, t.fed)
        ]

    def extra_methods(self) -> dict[str, Callable[..., Any]]:
        """The ``fed_*`` methods, for ``ShardServer(extra_methods=...)``."""
        return {name: getattr(self, name) for name in FED_METHODS}

    # -- bookkeeping ----------------------------------------------------------------------------
    def owns(self, task_id: str) -> bool:
        return self.placement is None or self.placement.owner(task_id) == self.shard_id

    def _rebuild(self) -> None:
        self._epoch = max(self._clock(), self._epoch + 1e-3)
        self._seq = 0
        # task id -> (seq, status, priority) of its last change, oldest first: every live task that
        # changed in this epoch, and the deletions not yet forgotten (status None)
        self._feed: OrderedDict[str, tuple[int, str | None, Any]] = OrderedDict()
        # the deletions in _feed, oldest first: task id -> (seq, time of the deletion)
        self._deletions: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # the feed is complete after this seq: the newest deletion forgotten
        self._floor = 0
        # what batch runners here did to their batches, for the shards holding the rest of a
        # batch: (seq, time, effect), oldest first, forgotten like deletions
        self._batch_out: deque[tuple[int, float, list[Any]]] = deque()
        # new stakeholders of mirrors, for their owners: (seq, time, [task_id, [[worker,
        # last_active], ...]]), oldest first, forgotten like deletions; and each mirror's
        # stakeholders as last put there (``_stakes``)
        self._stake_out: deque[tuple[int, float, list[Any]]] = deque()
        self._told: dict[str, frozenset[str]] = {}
        self._state: dict[str, tuple[str, Any]] = {}
        self._mirrors: set[str] = set()
        self._res_tasks: set[str] = set()
        self._ns: dict[str, dict[str, int]] = {}
        self._counted: dict[str, str] = {}  # owned task -> the status it is counted under in _ns
        self._ud: AbstractSet[str] = self.core.upstream_disabled()
        self.core.gone = {t.id for t in self.core.tasks() if t.fed.get("gone")}
        owned_live = []
        for t in self.core.tasks():
            self._note(t.id, t.status, t.priority, bool(t.resources), _hosted(t.family, t.fed), feed=False)
            if t.fed.get("live") and self.owns(t.id):
                owned_live.append(t.id)
        for task_id in owned_live:
            # a mirror whose task moved here (resharding): this shard's own task now, pruned as such
            self.core.update_fed(task_id, {"live": False})
        # what mirrors' owners were told before is in ``fed_state`` (the router's resync tells them)
        self._told = {
            tid: _tellable(m.stakeholders, m.fed)
            for tid in self._mirrors
            if (m := self.core.get_task(tid)) is not None
        }

    def _note(
        self,
        task_id: str,
        status: str | None,
        priority: Any,
        needs_resources: bool,
        has_family: bool,
        *,
        feed: bool,
    ) -> None:
        """Record a task's (possibly) new state: feed, namespace counts, mirrors, resource tasks.

        The feed carries the status a mirror should take: DISABLED for a PENDING task whose
        upstream is DISABLED (Luigi's UPSTREAM_DISABLED, which only this shard can see), so that
        the dependents elsewhere are UPSTREAM_DISABLED too and left out of ``n_pending_tasks``.

        A task this shard does not own is a mirror only while it is Luigi's bare placeholder (no
        family): a batch runner, whose id belongs elsewhere but which runs here with its batch,
        is this shard's own task in every respect.
        """
        prev = self._state.get(task_id)
        counted = self._counted.get(task_id)
        if counted is not None:
            self._count(task_id, counted, -1)
            del self._counted[task_id]
        if status is None:
            if prev is None:
                return
            del self._state[task_id]
            self._mirrors.discard(task_id)
            self.core.gone.discard(task_id)
            self._res_tasks.discard(task_id)
        else:
            if has_family or self.owns(task_id):
                self._mirrors.discard(task_id)
                self._counted[task_id] = status
                self._count(task_id, status, 1)
                if needs_resources and status != DONE:
                    self._res_tasks.add(task_id)
                else:
                    self._res_tasks.discard(task_id)
            else:
                self._mirrors.add(task_id)
                self._res_tasks.discard(task_id)
            if status == PENDING and task_id in self._ud:
                status = DISABLED
            if prev is not None and prev == (status, priority):
                return
            self._state[task_id] = (status, priority)
        if feed:
            self._seq += 1
            self._feed[task_id] = (self._seq, status, priority)
            self._feed.move_to_end(task_id)
            if status is not None:
                self._deletions.pop(task_id, None)

    def _refeed(self, task_id: str) -> None:
        """A new feed entry for ``task_id`` although its status did not change."""
        state = self._state.get(task_id)
        if state is not None:
            self._seq += 1
            self._feed[task_id] = (self._seq, state[0], state[1])
            self._feed.move_to_end(task_id)

    def _count(self, task_id: str, status: str, d: int) -> None:
        ns = namespace_of(task_id)
        by_status = self._ns.setdefault(ns, {})
        n = by_status.get(status, 0) + d
        if n:
            by_status[status] = n
        else:
            by_status.pop(status, None)
            if not by_status:
                del self._ns[ns]

    def _absorb(self, lazy: bool = False) -> None:
        """Take what the core changed since the last look into the feed (and the stash for the
        store; with ``lazy``, the held-back changes: ``collect_changes``)."""
        if not self.core.has_changes():
            return  # nothing to take: what follows would find everything empty
        core = self.core
        for task_id, p in core.take_dep_raises().items():
            if not self.owns(task_id) and p > self._dep_raises.get(task_id, p - 1):
                self._dep_raises[task_id] = p
        effects = core.take_batch_effects()
        if effects:
            now = self._clock()
            for effect in effects:
                self._seq += 1
                self._batch_out.append((self._seq, now, effect))
        changes = core.collect_changes()
        if changes.is_empty():
            return
        old_ud = self._ud
        self._ud = ud = core.upstream_disabled()
        note = self._note
        for task_id, rec in changes.tasks.items():
            note(
                task_id,
                rec["status"],
                rec.get("priority"),
                bool(rec.get("resources")),
                _hosted(rec.get("family"), rec.get("fed")),
                feed=True,
            )
        if changes.tasks or changes.deleted_tasks:
            self._stakes(changes)
        if changes.deleted_tasks:
            now = self._clock()
            deletions = self._deletions
            for task_id in changes.deleted_tasks:
                if task_id in self._state:
                    self._note(task_id, None, None, False, False, feed=True)
                    deletions.pop(task_id, None)
                    deletions[task_id] = (self._seq, now)
        if ud is not old_ud:
            # tasks that became (or stopped being) upstream-disabled without a change of their own
            for task_id in ud ^ old_ud:
                t = self.core.get_task(task_id)
                if t is not None and task_id not in changes.tasks:
                    self._note(
                        task_id, t.status, t.priority, bool(t.resources), _hosted(t.family, t.fed), feed=True
                    )
        if lazy:
            stash = self._stash
            if stash is not None:
                # a task the next commit writes anyway gets its newer record there (the held-back
                # part goes under the stash when they are committed, and must not undo it)
                for task_id in [t for t in changes.tasks if t in stash.tasks]:
                    stash.tasks[task_id] = changes.tasks.pop(task_id)
            if self._lazy is None:
                self._lazy = changes
            else:
                _merge_into(self._lazy, changes)
        elif self._stash is None:
            self._stash = changes
        else:
            _merge_into(self._stash, changes)
        if self._deletions:
            self._forget_deletions()
        for out in (self._batch_out, self._stake_out):
            if out:
                horizon = self._clock() - self.feed_retention
                while out and (out[0][1] <= horizon or len(out) > self.feed_max_deletions):
                    self._floor = max(self._floor, out.popleft()[0])

    def _stakes(self, changes: Changes) -> None:
        """Mirrors that got new stakeholders (Luigi's add_task makes the adding worker a
        stakeholder of each dependency): the feed tells their owners, so the task stays there
        while any of them is alive, as in one luigid where the placeholder is the task."""
        told = self._told
        mirrors = self._mirrors
        now = None
        for task_id, rec in changes.tasks.items():
            if task_id not in mirrors:
                told.pop(task_id, None)
                continue
            stakeholders = _tellable(rec.get("stakeholders") or (), rec.get("fed") or {})
            before = told.get(task_id)
            if before is not None and before >= stakeholders:
                told[task_id] = stakeholders  # pruned workers left; a returning one is told again
                continue
            told[task_id] = stakeholders
            new = stakeholders - before if before is not None else stakeholders  # the owner has the rest
            if not new:
                continue
            if now is None:
                now = self._clock()
            self._seq += 1
            self._stake_out.append((self._seq, now, [task_id, self._with_last_active(new)]))
        for task_id in changes.deleted_tasks:
            told.pop(task_id, None)

    def _with_last_active(self, workers: AbstractSet[str]) -> list[list[Any]]:
        """``[[worker, last_active here], ...]`` of the workers this shard knows, sorted."""
        last_active = self.core.worker_last_active
        return [[w, la] for w in sorted(workers) if (la := last_active(w)) is not None]

    def _forget_deletions(self) -> None:
        """Drop the deletions older than ``feed_retention`` or beyond ``feed_max_deletions``.

        Live tasks keep one feed entry each (bounded by the tasks the shard has); only deletions
        would pile up under churn.  A forgotten deletion raises the feed's floor: a router whose
        cursor is below it could miss that deletion, so ``fed_changes`` tells it to resynchronise.
        """
        deletions = self._deletions
        feed = self._feed
        horizon = self._clock() - self.feed_retention
        excess = len(deletions) - self.feed_max_deletions
        while deletions:
            task_id, (seq, when) = next(iter(deletions.items()))
            if excess <= 0 and when > horizon:
                break
            del deletions[task_id]
            del feed[task_id]
            self._floor = seq
            excess -= 1

    # -- federation methods ------------------------------------------------------------------------
    def _usage(self) -> dict[str, Any]:
        return self.core.used_resources()

    def fed_state(self) -> dict[str, Any]:
        """Everything the router rebuilds after a restart: epoch, feed position, workers, mirrors."""
        self._absorb()
        get_task = self.core.get_task
        return {
            "shard_id": self.shard_id,
            "placement": self.placement.fingerprint if self.placement is not None else None,
            "epoch": self._epoch,
            "seq": self._seq,
            # the router may send a turn's requests in one message (``wire.BUNDLE``)
            "bundles": True,
            "workers": self.core.worker_ids(),
            "mirrors": {tid: t.priority for tid in self._mirrors if (t := get_task(tid)) is not None},
            # batch runners this shard runs although another shard owns their ids
            "hosted": [tid for tid in self._counted if not self.owns(tid)],
            "resources_running": self._usage(),
            "resource_pending": bool(self._res_tasks),
            # each mirror's stakeholders, for its owner (``fed_add_stakeholders``)
            "stakeholders": [
                [tid, self._with_last_active(told)]
                for tid in sorted(self._mirrors)
                if (t := get_task(tid)) is not None and (told := _tellable(t.stakeholders, t.fed))
            ],
        }

    def fed_changes(self, since: int = 0, limit: int = FEED_PAGE) -> dict[str, Any]:
        """Latest ``[task_id, status, priority, seq, fresh]`` of every task changed after ``since``.

        ``fresh`` marks a mirror that no update has reached yet (a new placeholder): the router
        then pulls its owner's status, even if it believed this shard already mirrored the task,
        and tells the owner when the placeholder was made (the entry's ``time, cseq`` after
        ``fresh``; ``fed_first_mention``).
        A deleted task's status is None.

        Deletions are kept for ``feed_retention`` seconds (and at most ``feed_max_deletions`` of
        them).  When ``since`` is older than a deletion already forgotten, the answer is
        ``{"resync": True, "epoch": None, "changes": [], ...}``: the caller must rebuild from
        ``fed_state`` (and pull the owners' status of what it mirrors) and go on from its
        ``seq``.  ``epoch`` is None so that a router that does not know ``resync`` sees an epoch
        it does not know, which makes it resynchronise too.
        """
        if not isinstance(since, int) or isinstance(since, bool):
            raise TypeError("since must be an integer")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise TypeError(f"limit must be an integer of at least 1, got {limit!r}")
        self._absorb()
        if since < self._floor:
            return {
                "epoch": None,
                "resync": True,
                "seq": self._seq,
                "changes": [],
                "more": False,
                "resources_running": self._usage(),
                "resource_pending": bool(self._res_tasks),
            }
        raises, self._dep_raises = self._dep_raises, {}
        newer: list[list[Any]] = []
        feed, mirrors, get_task = self._feed, self._mirrors, self.core.get_task
        for task_id in reversed(feed):
            seq, status, priority = feed[task_id]
            if seq <= since:
                break
            t = get_task(task_id) if task_id in mirrors else None
            # ``_version`` is None: no update reached the mirror yet
            fresh = task_id in mirrors and (t is None or _fed_version(t.fed) is None)
            entry = [task_id, status, priority, seq, fresh]
            if fresh and t is not None:
                # when and in what order this placeholder was made: its owner adopts a first mention
                entry += [t.time, t.cseq]
            newer.append(entry)
        newer.reverse()
        more = len(newer) > limit
        if more:
            newer = newer[:limit]
        upto = newer[-1][3] if more else self._seq
        return {
            "epoch": self._epoch,
            "seq": upto,
            "changes": newer,
            # what batch runners here did to their batches: for the shards with the rest of them
            "batch": _since(self._batch_out, since, upto),
            # mirrors' new stakeholders: ``[[task_id, [[worker, last_active], ...]], ...]``, for
            # their owners (``fed_add_stakeholders``)
            "stakeholders": _since(self._stake_out, since, upto),
            # priority rises into other shards' tasks this shard has no placeholder of
            "raises": raises,
            "more": more,
            "resources_running": self._usage(),
            "resource_pending": bool(self._res_tasks),
        }

    def fed_status(self, task_ids: list[str]) -> dict[str, Any]:
        """Current ``[status, priority, seq]`` of each task; ``[None, None, seq]`` when this shard
        does not have it.

        ``seq`` versions the answer in the feed's order.  For a task this shard does not have
        (never had, or deleted) it is the feed's current position: "absent as of now" is newer
        than any change of that task already relayed, so a mirror that missed the deletion (a
        router resynchronising after a pause) takes it, while any later change still wins.
        """
        _check_task_ids(task_ids)
        self._absorb()
        out: dict[str, Any] = {}
        feed = self._feed
        for task_id in task_ids:
            state = self._state.get(task_id)
            if state is None:
                out[task_id] = [None, None, self._seq]
            else:
                entry = feed.get(task_id)  # none: unchanged since the epoch began
                out[task_id] = [state[0], state[1], entry[0] if entry is not None else 0]
        return {"epoch": self._epoch, "tasks": out}

    def fed_mirror_update(self, updates: list[list[Any]]) -> dict[str, Any]:
        """Apply owners' statuses to mirrors: ``[[task_id, status | None, owner_epoch, seq], ...]``."""
        return self._mirror_update(_parse_updates(updates))

    def _mirror_update(self, parsed: list[list[Any]]) -> dict[str, Any]:
        self._absorb()
        core = self.core
        missing: list[str] = []
        created: dict[str, list[Any]] = {}
        retell: list[str] = []  # of created: told before, told again (not new placeholders)
        # updates of mirrors whose status makes nothing runnable (not DONE, not DISABLED: losing
        # them in a crash is safe) need no commit of their own: held back to the next (``_lazy``)
        lazy = True
        owns, get_task = self.owns, core.get_task
        for task_id, status, epoch, seq in parsed:
            if owns(task_id):
                continue  # never overwrite a task this shard owns
            t = get_task(task_id)
            if t is None:
                missing.append(task_id)
                continue
            if _hosted(t.family, t.fed):
                continue  # not a placeholder: a batch runner running here with its batch
            version = (float(epoch) if isinstance(epoch, (int, float)) else 0.0, seq)
            current = _fed_version(t.fed)
            if current is not None and version <= current:
                continue
            if current is None:
                # the first update of a new placeholder: when it was made is its task's first
                # mention, which the owner takes as the task's creation (fed_first_mention)
                created[task_id] = [t.time, t.cseq]
            elif version[0] != current[0] and status is not None:
                # the owner restarted (a new epoch): what it kept in memory only (stakeholders of
                # a task it did not have) or had not committed yet is told again
                self._told.pop(task_id, None)
            # no failures, retries or history of its own: the owner's history has this change
            new = _mirror_status(status)
            if current is None or new == DISABLED or t.status in (DONE, DISABLED):
                lazy = False
            core.force_status(task_id, new)
            fed: dict[str, Any] = {"epoch": version[0], "seq": version[1]}
            if status is None:
                if t.fed.get("live"):
                    # the owner had the task and deleted it: luigid has no such task any more,
                    # and its next mention here makes it anew (``SchedulerCore.gone``)
                    fed.update(live=False, gone=True)
                    core.gone.add(task_id)
            elif not t.fed.get("live"):
                if not t.fed.get("gone") and current is not None:
                    # the owner has the task for the first time since this placeholder was made:
                    # its first mention and stakeholders here are told again (the owner may have
                    # lost what it kept for later in a restart); a gone mirror's are the deleted
                    # task's, not the new one's
                    created[task_id] = [t.time, t.cseq]
                    retell.append(task_id)
                    self._told.pop(task_id, None)
                elif t.fed.get("gone"):
                    # made again by its owner: the stakeholders here are the deleted task's, kept
                    # (the mirror must stay) but not the new task's until they name it again
                    fed["stale"] = sorted(t.stakeholders)
                    self._told[task_id] = frozenset()
                fed.update(live=True, gone=False)
                core.gone.discard(task_id)
            core.update_fed(task_id, fed)
        if lazy:
            self._absorb(lazy=True)
        if retell:
            return {"missing": missing, "created": created, "retell": retell}
        return {"missing": missing, "created": created} if created else {"missing": missing}

    def _version(self, task_id: str) -> tuple[float, int] | None:
        """``(owner_epoch, seq)`` of the last update applied to a mirror (kept in its record)."""
        t = self.core.get_task(task_id)
        return _fed_version(t.fed) if t is not None else None

    def fed_raise_priority(self, priorities: dict[str, Any]) -> dict[str, bool]:
        """A dependent elsewhere has a higher priority: Luigi's priority inheritance, across shards.
        ``{"mirrors": True}`` when the rise went on to a mirror here (a task of a third shard,
        whose owner must hear of it: the router pulls this feed at once)."""
        _check_priorities(priorities)
        self._absorb()
        before = self._seq
        for task_id, p in priorities.items():
            if self.owns(task_id):
                self.core.raise_priority(task_id, p)
        self._absorb()
        feed, mirrors = self._feed, self._mirrors
        for task_id in reversed(feed):
            if feed[task_id][0] <= before:
                break
            if task_id in mirrors:
                return {"mirrors": True}
        return {"mirrors": False}

    def fed_get_work(
        self,
        external_used_resources: dict[str, Any] | None = None,
        external_greedy: list[list[Any]] | None = None,
        guard: list[Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Luigi's ``get_work``, counting what other shards' RUNNING tasks hold as already used
        (and, given, other shards' greedy events in their rank places: ``external_greedy``).

        ``guard``: the router grants without offers (from the workers' summaries): hand out only
        a plain choice (no re-send, no batch, a trivial worker) ranked at least ``guard`` (the
        best rank of the other shards; ``[]``: any); otherwise nothing, ``declined`` in the answer.
        """
        if guard is not None and (
            not isinstance(guard, list) or len(guard) not in (0, 3) or not _is_rank(guard)
        ):
            raise TypeError("guard must be a rank [priority, -time, -seq] or []")
        core = self.core
        core.grant_guard = guard
        try:
            out = self._with_external(
                external_used_resources, external_greedy, "reply", core.get_work, kwargs
            )
        finally:
            core.grant_guard = None
        if core.declined:
            out["declined"] = True
            core.declined = False
        return out

    def fed_offer(
        self,
        external_used_resources: dict[str, Any] | None = None,
        external_greedy: list[list[Any]] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """What ``fed_get_work`` would hand out, and its rank, without handing it out
        (``SchedulerCore.offer_work``): the router grants only the best offer of all shards.
        ``greedy`` in the answer: this walk's RUNNING tasks and reservations needing resources,
        for the other shards' walks (``SchedulerCore.external_greedy``)."""
        return self._with_external(
            external_used_resources, external_greedy, None, self.core.offer_work, kwargs
        )

    def _with_external(
        self,
        external: Any,
        greedy: Any,
        key: str | None,
        fn: Callable[..., Any],
        kwargs: dict[str, Any],
    ) -> dict[str, Any]:
        external = external or {}
        if not isinstance(external, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in external.items()
        ):
            raise TypeError("external_used_resources must be a map of resource name to amount")
        core = self.core
        core.external_used_resources = external
        core.greedy_events = []
        try:
            core.external_greedy = greedy
            answer = fn(**kwargs)
        finally:
            core.external_used_resources = {}
            core.external_greedy = None
        self._absorb()
        out = {key: answer} if key is not None else dict(answer)
        reply = answer if key == "reply" else answer.get("reply")
        if isinstance(reply, dict) and reply.get("running_tasks"):
            # the order they entered RUNNING, for a router listing several shards' as luigid
            out["running_seq"] = core.seqs_of([r["task_id"] for r in reply["running_tasks"]])
        if key is None and core.greedy_events:
            out["greedy"] = core.greedy_events
        if key == "reply" and isinstance(answer, dict) and isinstance(answer.get("task_id"), str):
            # the task handed out, as the change feed has it: the router updates its mirrors at
            # once (the same update the relay would send at the next pull)
            entry = self._feed.get(answer["task_id"])
            if entry is not None:
                out["mirror"] = [answer["task_id"], entry[1], self._epoch, entry[0]]
        out.update(resources_running=self._usage(), resource_pending=bool(self._res_tasks))
        return out

    def fed_task_list(self, **kwargs: Any) -> Any:
        """Luigi's ``task_list``; over ``max_shown_tasks``, the count of the tasks this shard owns
        (not its mirrors) and the placeholders whose owner does not know the task
        (``{"num_tasks": n, "placeholders": [ids]}``), so the router counts every task once.

        Luigi compares the number of tasks of the status with the limit *before* it prunes (and
        answers ``{"num_tasks": -1}`` then with ``upstream_status``, however few pass the
        filter): with a limit and no search, the shard counts first and adds ``"pre_count":
        owned, "placeholders": [ids]`` to its listing (its count answer is that count), so the
        router counts the status over all shards as luigid would.

        Under the limit: ``{"listed": <Luigi's answer>, "order": {task_id: [status-entry number,
        creation number]}}``, the numbers the router sorts every shard's tasks by (they follow
        its order stamps, so they compare across shards).

        ``count_only``: only that count, before any prune, changing nothing (the router asks
        every shard so first: over the limit, luigid prunes nothing).

        ``upstream``: also ``"upstream": {task_id: [status, [deps]]}`` of the tasks this shard
        owns or hosts that are not DONE, what Luigi's ``upstream_status`` walk reads (a listing
        the router filters by ``upstream_status`` over every shard's tasks, asked for with
        ``upstream_status=""``: ``merge.merge_task_list``)."""
        upstream = kwargs.pop("upstream", False) is True
        if kwargs.pop("count_only", False) is True:
            status = kwargs.get("status") or ""
            if not isinstance(status, str):
                raise TypeError("status must be a string")
            owned, placeholders = self._pre_count(status)
            return {"num_tasks": owned, "placeholders": placeholders}
        # Luigi compares the count with the limit before it prunes: counted here first
        counting = not kwargs.get("search") and kwargs.get("limit", True)
        pre = self._pre_count(kwargs.get("status") or "") if counting else None
        result = self._without_gone(self.core.task_list(**kwargs))
        over = isinstance(result, dict) and set(result) == {"num_tasks"}
        if over and result["num_tasks"] == -1:
            return result
        answer: dict[str, Any] = {}
        if pre is not None:
            if over:
                return {"num_tasks": pre[0], "placeholders": pre[1]}
            answer = {"pre_count": pre[0], "placeholders": pre[1]}
        elif over:
            return result
        order = self.core.order_keys(result)
        hosted = self._hosted_ids(result)
        if hosted:
            answer["hosted"] = hosted
        # mirrors whose owner has the task (UNKNOWN there too): the owner's to count
        owner_has = [
            tid
            for tid, entry in result.items()
            if not self.owns(tid) and entry.get("status") == UNKNOWN and self._owner_has(tid)
        ]
        if owner_has:
            answer["owner_has"] = owner_has
        if upstream:
            answer["upstream"] = {
                t.id: [t.status, list(t.deps)]
                for t in self.core.tasks()
                if t.status != DONE
                and t.id not in self.core.gone
                and (self.owns(t.id) or _hosted(t.family, t.fed))
            }
        return {"listed": result, "order": {tid: list(k) for tid, k in order.items()}, **answer}

    def _pre_count(self, status: str) -> tuple[int, list[str]]:
        """The tasks of ``status`` (all without) as Luigi counts them for ``max_shown_tasks``,
        before it prunes: this shard's own ones (owned or hosted), and the placeholders whose
        owner does not have the task (a mirror the relay told its owner has it is the owner's to
        count; the mirror of a task its owner deleted is no task)."""
        gone = self.core.gone
        owned = 0
        placeholders: list[str] = []
        for t in self.core.tasks():
            if (status and t.status != status) or t.id in gone:
                continue
            if self.owns(t.id) or _hosted(t.family, t.fed):
                owned += 1
            elif t.status == UNKNOWN and not t.fed.get("live"):
                placeholders.append(t.id)
        return owned, sorted(placeholders)

    def _owner_has(self, task_id: str) -> bool:
        """The relay told this mirror its owner has the task (its status, even UNKNOWN, is the
        owner's): the owner counts it."""
        t = self.core.get_task(task_id)
        return t is not None and bool(t.fed.get("live"))

    def _without_gone(self, listed: Any) -> Any:
        """A listing without the mirrors of tasks their owners deleted (luigid has no such task)."""
        gone = self.core.gone
        if not gone or not isinstance(listed, dict) or set(listed) == {"num_tasks"}:
            return listed
        return {tid: entry for tid, entry in listed.items() if tid not in gone}

    def fed_task_search(self, **kwargs: Any) -> dict[str, Any]:
        """Luigi's ``task_search`` (``{"found": ...}``) and, as in ``fed_task_list``, the numbers
        the router sorts the tasks of every shard by (``{"order": {task_id: [seq, cseq]}}``)."""
        found = self.core.task_search(**kwargs)
        if self.core.gone:
            found = {status: self._without_gone(group) for status, group in found.items()}
        ids = [tid for group in found.values() for tid in group]
        answer: dict[str, Any] = {
            "found": found,
            "order": {tid: list(k) for tid, k in self.core.order_keys(ids).items()},
        }
        hosted = self._hosted_ids(ids)
        if hosted:
            answer["hosted"] = hosted
        return answer

    def fed_resource_list(self) -> dict[str, Any]:
        """Luigi's ``resource_list`` (``{"resources": ...}``) and, as in ``fed_task_list``, the
        numbers of the tasks listed as running (``{"order": {task_id: [seq, cseq]}}``): Luigi
        lists them in the order they entered RUNNING, which the status-entry numbers give across
        shards (timestamps tie)."""
        resources = self.core.resource_list()
        ids = list(dict.fromkeys(tid for r in resources for tid in r.get("running") or {}))
        answer: dict[str, Any] = {
            "resources": resources,
            "order": {tid: list(k) for tid, k in self.core.order_keys(ids).items()},
        }
        hosted = self._hosted_ids(ids)
        if hosted:
            answer["hosted"] = hosted
        return answer

    def fed_worker_list(self, **kwargs: Any) -> dict[str, Any]:
        """Luigi's ``worker_list`` (``{"workers": [...]}``) and each worker's creation number
        (``{"order": {worker: n}}``): Luigi lists workers of equal ``started`` in the order it
        first heard of them, which the numbers give across shards."""
        workers = self.core.worker_list(**kwargs)
        order = self.core.worker_order()
        firsts = [w.get("first_task") for w in workers]
        return {
            "workers": workers,
            "order": {w["name"]: order.get(w["name"], 0) for w in workers},
            "names": self.fed_display_names([t for t in firsts if isinstance(t, str)]),
        }

    def fed_display_names(self, task_ids: list[str]) -> dict[str, list[Any]]:
        """``{task_id: [display name, own]}`` of the tasks here among ``task_ids``: ``own`` when
        this shard owns (or hosts) the task, else the name is its placeholder's (``"()"``).
        What the router shows as a worker's ``first_task_display_name`` (Luigi's: the task's
        display name if the scheduler has the task, else the id); mirrors of tasks their owners
        deleted are not here (luigid has no such task)."""
        if not isinstance(task_ids, list) or not all(isinstance(t, str) for t in task_ids):
            raise TypeError("task_ids must be a list of task ids")
        core = self.core
        out: dict[str, list[Any]] = {}
        for task_id in task_ids:
            t = core.get_task(task_id)
            if t is None or task_id in core.gone:
                continue
            out[task_id] = [t.pretty_id, self.owns(task_id) or _hosted(t.family, t.fed)]
        return out

    def fed_greedy_walk(
        self,
        worker: str,
        assistant: bool = False,
        running_only: bool = False,
        external_greedy: list[list[Any]] | None = None,
    ) -> list[list[Any]]:
        """The greedy events (RUNNING tasks holding resources, reservations) of ``worker``'s
        ``get_work`` walk here, changing nothing: for the shards where it has work
        (``SchedulerCore.greedy_walk_events``); only the RUNNING ones with ``running_only``."""
        if (
            not isinstance(worker, str)
            or not isinstance(assistant, bool)
            or not isinstance(running_only, bool)
        ):
            raise TypeError("worker must be a string, assistant and running_only bools")
        core = self.core
        core.external_greedy = external_greedy
        try:
            return core.greedy_walk_events(worker, assistant, running_only)
        finally:
            core.external_greedy = None

    def fed_worker_summaries(self) -> None:
        """Every worker's get_work summary rides on this reply (a router that lost track of them:
        ``SchedulerCore.worker_summaries``, ``shard.server.ShardServer._summary_frame``)."""
        self.core.resend_summaries()

    def fed_touch_workers(self, workers: list[str], get_work: bool = False) -> None:
        """These workers are active on another shard (and asked for work there, with
        ``get_work``): active here too (``last_active``, ``last_get_work``)."""
        if not isinstance(workers, list) or not all(isinstance(w, str) for w in workers):
            raise TypeError("workers must be a list of worker ids")
        if not isinstance(get_work, bool):
            raise TypeError("get_work must be a bool")
        self.core.touch_workers(workers, get_work)

    def fed_add_stakeholders(self, stakeholders: list[list[Any]]) -> None:
        """``[[task_id, [[worker, last_active], ...]], ...]``: another shard's dependency
        placeholders of tasks owned here have these stakeholders (``last_active`` on that shard):
        they are these tasks' stakeholders here too (``SchedulerCore.add_stakeholders``)."""
        self._add_stakeholders(_parse_stakeholders(stakeholders))

    def _add_stakeholders(self, parsed: list[tuple[str, dict[str, float]]]) -> None:
        for task_id, workers in parsed:
            if self.owns(task_id) and workers:
                self.core.add_stakeholders(task_id, workers)

    def fed_first_mention(self, mentions: dict[str, list[Any]]) -> None:
        """``{task_id: [time, creation number]}``: another shard made these tasks (owned here)
        dependency placeholders then; the earliest mention is the task's creation, as in one
        scheduler (``SchedulerCore.first_mention``)."""
        _check_mentions(mentions)
        self._first_mention(mentions)

    def _first_mention(self, mentions: dict[str, list[Any]]) -> None:
        for task_id, (when, number) in mentions.items():
            if self.owns(task_id):
                self.core.first_mention(task_id, float(when), number)

    def fed_forget_mentions(self, task_ids: list[str]) -> None:
        """No shard has a placeholder of these tasks (owned here) any more: a first mention kept
        for one not here yet is forgotten (``SchedulerCore.forget_mentions``)."""
        _check_task_ids(task_ids)
        self._forget_mentions(task_ids)

    def _forget_mentions(self, task_ids: list[str]) -> None:
        self.core.forget_mentions(t for t in task_ids if self.owns(t))

    def fed_relay(
        self,
        updates: list[list[Any]] | None = None,
        forget: list[str] | None = None,
        mentions: dict[str, list[Any]] | None = None,
        raises: dict[str, Any] | None = None,
        stakeholders: list[list[Any]] | None = None,
        status: list[str] | None = None,
        since: int | None = None,
    ) -> dict[str, Any]:
        """What the router has for this shard at once (one page of another shard's change feed, or
        one router turn), in one message instead of one per kind: ``fed_mirror_update(updates)``
        (other owners' statuses for the mirrors here), then, for tasks owned here,
        ``fed_forget_mentions(forget)``, ``fed_first_mention(mentions)``,
        ``fed_raise_priority(raises)``, ``fed_add_stakeholders(stakeholders)`` and
        ``fed_status(status)``, applied in that order (the order they were sent in one by one),
        and last ``fed_changes(since)``, its page under ``feed``.
        Every part is checked before any is applied: bad input changes nothing.  The answer has
        the single methods' answers together: ``missing``, ``created``, ``retell`` (with
        ``updates``), ``mirrors`` (with ``raises``), ``epoch`` and ``tasks`` (with ``status``)."""
        parsed_updates = _parse_updates(updates) if updates is not None else None
        if forget is not None:
            _check_task_ids(forget)
        if mentions is not None:
            _check_mentions(mentions)
        if raises is not None:
            _check_priorities(raises)
        parsed = _parse_stakeholders(stakeholders) if stakeholders is not None else None
        if status is not None:
            _check_task_ids(status)
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            raise TypeError("since must be an integer")
        out: dict[str, Any] = {}
        if parsed_updates:
            out.update(self._mirror_update(parsed_updates))
        if forget:
            self._forget_mentions(forget)
        if mentions:
            self._first_mention(mentions)
        if raises:
            out.update(self.fed_raise_priority(raises))
        if parsed:
            self._add_stakeholders(parsed)
        if status is not None:
            out.update(self.fed_status(status))
        if since is not None:
            out["feed"] = self.fed_changes(since)
        return out

    def fed_placeholder_fields(self, task_id: str, fields: dict[str, Any]) -> None:
        """A status message or progress set on another shard's placeholder of ``task_id`` (owned
        here, not here yet): the task has it when it is made (``SchedulerCore.placeholder_fields``)."""
        if not isinstance(task_id, str) or not isinstance(fields, dict):
            raise TypeError("task_id must be a task id and fields a map")
        if self.owns(task_id):
            self.core.placeholder_fields(task_id, fields)

    # -- batches whose tasks sit on several shards (router/getwork.py hands them out) -----------
    def fed_batch_candidates(
        self,
        family: str,
        unbatched: dict[str, Any],
        resources: dict[str, Any],
        after: list[float],
        worker: str | None = None,
        limit: int = 1,
    ) -> list[list[Any]]:
        """This shard's tasks Luigi would add to a batch whose best task is on another shard."""
        if not isinstance(family, str):
            raise TypeError("family must be a string")
        if not isinstance(unbatched, dict) or not isinstance(resources, dict):
            raise TypeError("unbatched and resources must be maps")
        if not (
            isinstance(after, list)
            and len(after) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in after)
        ):
            raise TypeError("after must be a rank [priority, -time, -seq]")
        if worker is not None and not isinstance(worker, str):
            raise TypeError("worker must be a string")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise TypeError("limit must be a non-negative integer")
        self._absorb()
        return self.core.batch_candidates(family, unbatched, resources, after, worker, limit)

    def fed_batch_claim(
        self,
        worker: str,
        batch_id: str,
        task_ids: list[str],
        remote: bool,
        host: str | None = None,
        first: int | None = None,
        positions: list[int] | None = None,
    ) -> dict[str, Any]:
        """Hand this shard's ``task_ids`` out as part of batch ``batch_id`` (all or nothing);
        ``positions``: their places in the whole batch, numbered from ``first`` (a router stamp)."""
        if not isinstance(worker, str) or not isinstance(batch_id, str) or not batch_id:
            raise TypeError("worker and batch_id must be strings")
        if not isinstance(task_ids, list) or not all(isinstance(t, str) for t in task_ids):
            raise TypeError("task_ids must be a list of task ids")
        if not isinstance(remote, bool) or (host is not None and not isinstance(host, str)):
            raise TypeError("remote must be a bool and host a string")
        if (first is None) != (positions is None):
            raise TypeError("first and positions go together")
        if positions is not None and not (
            isinstance(first, int)
            and isinstance(positions, list)
            and len(positions) == len(task_ids)
            and all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p < 1 << 15 for p in positions)
        ):
            raise TypeError("positions must be one small integer per task id, after an integer first")
        claimed = self.core.batch_claim(worker, host, batch_id, task_ids, remote, first, positions)
        return {"claimed": claimed}

    def fed_batch_release(self, batch_id: str) -> None:
        """Undo ``fed_batch_claim``: the batch could not be handed out whole."""
        if not isinstance(batch_id, str):
            raise TypeError("batch_id must be a string")
        self.core.batch_release(batch_id)

    def fed_batch_apply(self, effects: list[list[Any]]) -> None:
        """Apply another shard's batch runner's effects (its ``fed_changes()["batch"]``) here."""
        ops = {
            "status",
            "reset",
            "decrease",
            "runner",
            "tracking_url",
            "expl",
            "status_message",
            "progress_percentage",
        }
        if not isinstance(effects, list) or not all(
            isinstance(e, list) and len(e) >= 2 and e[0] in ops and isinstance(e[1], str) for e in effects
        ):
            raise TypeError("effects must be a list of [op, batch_id, value]")
        for e in effects:
            if e[0] == "status" and (len(e) not in (3, 4, 6) or e[2] not in _EFFECT_STATUSES):
                raise TypeError(f"a batch status effect needs a status, got {e!r:.100}")
            if e[0] == "decrease" and (len(e) != 3 or not isinstance(e[2], dict)):
                raise TypeError("a decrease effect needs a map of amounts")
            if e[0] not in ("status", "reset", "decrease") and len(e) != 3:
                raise TypeError(f"effect {e[0]} needs a value")
            numbers = e[3:] if e[0] == "status" else e[2:] if e[0] in ("reset", "runner") else []
            if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
                raise TypeError("a batch effect's first number must be an integer")
        self.core.batch_apply(effects)

    def fed_graph(self, **kwargs: Any) -> dict[str, Any]:
        """``graph``'s material: every task here with a family as Luigi's graph node, uncut
        (``{"nodes": ...}``), and the creation order of all tasks here, placeholders included
        (``"created": [[task_id, time, creation number]]``).  The router walks every shard's
        tasks as one luigid would: in creation order, breadth first, cut at ``max_graph_nodes``
        per walk, a task without a family anywhere Luigi's UNKNOWN node."""
        nodes = self.core.graph_nodes()["nodes"]
        gone = self.core.gone  # mirrors of tasks their owners deleted: luigid has no such task
        created = [[tid, t, n] for tid, t, n in self.core.creation_order() if tid not in gone]
        return {"nodes": nodes, "created": created}

    def fed_graph_nodes(
        self,
        task_ids: list[str],
        include_done: bool = True,
        inverse: bool = False,
        limit: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Part of a ``dep_graph``/``inverse_dep_graph`` that the router walks over the shards:
        the nodes this shard has with a family, breadth first from ``task_ids`` through them, at
        most ``limit`` (``SchedulerCore.graph_nodes``).  A root this shard only mirrors gives its
        dependents here when ``inverse``."""
        if not isinstance(task_ids, list) or not all(isinstance(t, str) for t in task_ids):
            raise TypeError("task_ids must be a list of strings")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise TypeError("limit must be a positive integer")
        mirrored = {tid for tid in task_ids if not self.owns(tid)}
        return self.core.graph_nodes(
            task_ids, include_done=bool(include_done), inverse=bool(inverse), limit=limit, mirrored=mirrored
        )

    def fed_health(self) -> dict[str, Any]:
        """Task counts of the tasks this shard owns (mirrors left out), by status and by namespace."""
        self._absorb()
        counts: dict[str, int] = {}
        namespaces: dict[str, dict[str, int]] = {}
        for ns, by_status in self._ns.items():
            if by_status:
                namespaces[ns] = dict(by_status)
                for status, n in by_status.items():
                    counts[status] = counts.get(status, 0) + n
        return {
            "counts": counts,
            "namespaces": namespaces,
            "workers": len(self.core.worker_ids()),
            "mirrors": len(self._mirrors),
            "epoch": self._epoch,
            "placement": self.placement.fingerprint if self.placement is not None else None,
        }

    def fed_inverse_dep_graph(self, task_id: str, include_done: bool = True, **kwargs: Any) -> dict[str, Any]:
        """``inverse_dep_graph`` that also starts from a mirror: this shard's dependents of a remote task."""
        if not isinstance(task_id, str):
            raise TypeError("task_id must be a string")
        return self.core.dependents_graph(task_id, include_done=include_done)


def _tellable(stakeholders: Any, fed: dict[str, Any]) -> frozenset[str]:
    """A mirror's stakeholders its owner is told of: none of a gone mirror (its owner deleted the
    task), and not the deleted task's kept on a mirror made again (``fed["stale"]``)."""
    if fed.get("gone"):
        return frozenset()
    stale = fed.get("stale")
    return frozenset(stakeholders) - frozenset(stale) if stale else frozenset(stakeholders)


def _fed_version(fed: dict[str, Any]) -> tuple[float, int] | None:
    """``FederatedCore._version`` of the task whose ``fed`` field this is."""
    if not fed or "epoch" not in fed:
        return None
    return (float(fed["epoch"]), int(fed.get("seq", 0)))


def _mirror_status(status: str | None) -> str:
    if status is None:
        return UNKNOWN  # the owner does not have the task (yet, or any more)
    if status == BATCH_RUNNING:
        return RUNNING
    if status == SUSPENDED:
        return PENDING
    return status


def _merge_into(a: Changes, b: Changes) -> None:
    """Fold the later ``b`` into ``a`` (both from ``collect_changes``)."""
    for tid in b.deleted_tasks:
        a.tasks.pop(tid, None)
    if a.deleted_tasks:
        a.deleted_tasks.difference_update(b.tasks)
    a.deleted_tasks |= b.deleted_tasks
    a.tasks.update(b.tasks)
    for wid in b.deleted_workers:
        a.workers.pop(wid, None)
    if a.deleted_workers:
        a.deleted_workers.difference_update(b.workers)
    a.deleted_workers |= b.deleted_workers
    a.workers.update(b.workers)
    a.meta.update(b.meta)
    a.events.extend(b.events)


def _hosted(family: Any, fed: Any) -> bool:
    """A task this shard runs as its own although another shard owns its id (a batch runner)."""
    return bool(family) or (isinstance(fed, dict) and bool(fed.get("hosted")))


def _since(out: deque[tuple[int, float, list[Any]]], since: int, upto: int) -> list[list[Any]]:
    """The entries of ``out`` (oldest first, by seq) after ``since`` up to ``upto``: read from the
    newest end, so that a pull costs what it returns, not the whole retention window."""
    found = []
    for seq, _, entry in reversed(out):
        if seq <= since:
            break
        if seq <= upto:
            found.append(entry)
    found.reverse()
    return found


def _parse_updates(updates: Any) -> list[list[Any]]:
    """``fed_mirror_update``'s argument, checked."""
    if not isinstance(updates, list):
        raise TypeError("updates must be a list of [task_id, status, epoch, seq]")
    for u in updates:
        if (
            not isinstance(u, list)
            or len(u) != 4
            or not isinstance(u[0], str)
            or not (u[1] is None or isinstance(u[1], str))
            or not isinstance(u[3], int)
            or isinstance(u[3], bool)
        ):
            raise TypeError(f"bad mirror update {u!r:.100}")
    return updates


def _check_task_ids(task_ids: Any) -> None:
    if not isinstance(task_ids, list):
        raise TypeError("task_ids must be a list of task ids")
    for t in task_ids:  # a loop: cheaper than all() over a generator
        if not isinstance(t, str):
            raise TypeError("task_ids must be a list of task ids")


def _is_rank(rank: list[Any]) -> bool:
    """Every item a number (not a bool); a loop, cheaper than all() over a generator."""
    for x in rank:
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            return False
    return True


def _check_priorities(priorities: Any) -> None:
    if not isinstance(priorities, dict):
        raise TypeError("priorities must be a map of task id to priority")
    for task_id, p in priorities.items():
        if not isinstance(task_id, str) or isinstance(p, bool) or not isinstance(p, (int, float)):
            raise TypeError(f"bad priority {task_id!r}: {p!r}")


def _check_mentions(mentions: Any) -> None:
    if not isinstance(mentions, dict):
        raise TypeError("mentions must be a map of task id -> [time, number]")
    for task_id, pair in mentions.items():
        if not (
            isinstance(task_id, str)
            and isinstance(pair, list)
            and len(pair) == 2
            and isinstance(pair[0], (int, float))
            and not isinstance(pair[0], bool)
            and isinstance(pair[1], int)
            and not isinstance(pair[1], bool)
        ):
            raise TypeError(f"mention of {task_id!r:.80} must be [time, number]")


def _parse_stakeholders(stakeholders: Any) -> list[tuple[str, dict[str, float]]]:
    """``fed_add_stakeholders``'s argument, checked: ``[(task_id, {worker: last_active}), ...]``."""
    if not isinstance(stakeholders, list):
        raise TypeError("stakeholders must be a list of [task_id, [[worker, last_active], ...]]")
    parsed: list[tuple[str, dict[str, float]]] = []
    for entry in stakeholders:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], list)
        ):
            raise TypeError(f"bad stakeholders entry {entry!r:.100}")
        workers: dict[str, float] = {}
        for p in entry[1]:  # checked and taken in one loop (an error drops everything parsed)
            if not (
                isinstance(p, list)
                and len(p) == 2
                and isinstance(p[0], str)
                and isinstance(p[1], (int, float))
                and not isinstance(p[1], bool)
            ):
                raise TypeError(f"bad stakeholders entry {entry!r:.100}")
            workers[p[0]] = float(p[1])
        parsed.append((entry[0], workers))
    return parsed
