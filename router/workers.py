"""What the router knows of Luigi workers: which shards know each, and batches handed out.

A worker's tasks are spread over shards; the router learns from ``add_task`` which shards
know each worker, so ``get_work``, ``ping``, ``add_worker`` ... go to those shards, and a
shard that meets a worker for the first time gets the worker's cached ``add_worker`` info,
batchers and disabled flag first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from router.links import LinkState, ShardPool

#: a worker silent this long at least is gone (luigid drops it after worker_disconnect_delay)
MIN_FORGET_AFTER = 600.0
#: seconds between two activity touches of one worker on one shard (``WorkerRegistry.active_on``)
TOUCH_EVERY = 1.0


@dataclass(slots=True)
class WorkerState:
    """What the router knows of one Luigi worker."""

    shards: dict[str, None] = field(default_factory=dict)  # ordered set
    info: dict[str, Any] = field(default_factory=dict)
    batchers: dict[str, dict[str, Any]] = field(default_factory=dict)
    disabled: bool = False
    turn: int = 0
    last_seen: float = 0.0
    #: shard -> when the router last passed this worker's activity on to it (``active_on``)
    touched: dict[str, float] = field(default_factory=dict)
    #: the router's clock at the worker's last get_work (None: never)
    last_get_work: float | None = None


@dataclass(slots=True)
class CrossBatch:
    """A batch whose tasks were handed out by several shards (``WorkerRegistry.cross``)."""

    worker: str
    members: dict[str, str]  # task id -> shard
    runner: bool = False


class WorkerRegistry:
    def __init__(self, pool: ShardPool, *, forget_after: float, home: Callable[[str], str]) -> None:
        self.pool = pool
        #: the shard that hears a worker first when no shard knows it yet (its first call may be
        #: add_worker, ping or get_work, before any add_task): placement of the worker id, so every
        #: router picks the same one and luigid's "first seen" is kept for worker_list
        self.home = home
        self.forget_after = max(MIN_FORGET_AFTER, forget_after)
        self.workers: dict[str, WorkerState] = {}
        #: batch id -> shard that handed the batch out; batch runner task id -> that shard (kept
        #: until that shard deletes the runner: it is hosted there, ``fed_state().hosted``)
        self.batches: dict[str, str] = {}
        self.pinned: dict[str, str] = {}
        self._batch_worker: dict[str, str] = {}
        #: batches handed out from several shards and not settled yet: batch id -> its worker,
        #: its tasks' shards, and whether its runner was reported (router/getwork.py)
        self.cross: dict[str, CrossBatch] = {}
        #: runner task id -> its batch over several shards (its reports change the other shards)
        self.cross_runners: dict[str, str] = {}
        #: shard -> workers active elsewhere since the last flush (``fed_touch_workers``), and
        #: whether they asked for work
        self._touches: dict[str, dict[str, bool]] = {}
        #: seconds between two touches of one worker on one shard (0: every activity, exactly)
        self.touch_every = TOUCH_EVERY

    def get(self, worker: Any) -> WorkerState | None:
        return self.workers.get(worker) if isinstance(worker, str) else None

    def seen(self, worker: str) -> WorkerState:
        ws = self.workers.get(worker)
        if ws is None:
            ws = self.workers[worker] = WorkerState()
        ws.last_seen = self.pool.clock()
        return ws

    def meet(self, worker: str, sid: str) -> None:
        """Record that shard ``sid`` knows ``worker``; bring it up to date if it is new there."""
        ws = self.seen(worker)
        if sid in ws.shards:
            return
        ws.shards[sid] = None
        self._replay(worker, ws, sid)

    def meet_all(self, sid: str, workers: list[str]) -> None:
        """Shard ``sid`` knows these workers now (stakeholders of its tasks through other shards'
        dependency placeholders: ``fed_add_stakeholders``)."""
        for worker in workers:
            self.meet(worker, sid)

    def active_on(self, worker: str, sid: str, get_work: bool = False) -> None:
        """``worker`` called shard ``sid`` (an ``add_task``, a ``get_work`` there): the other shards
        that know it hear of it too (at most every ``TOUCH_EVERY`` s), so none of them prunes it
        as gone while it works elsewhere: luigid has one ``last_active`` per worker (and one
        ``last_get_work``, with ``get_work``)."""
        ws = self.workers.get(worker)
        if ws is None or len(ws.shards) < 2:
            return
        now = self.pool.clock()
        ws.touched[sid] = now
        for other in ws.shards:
            if other != sid and (other not in ws.touched or now - ws.touched[other] >= self.touch_every):
                ws.touched[other] = now
                pending = self._touches.setdefault(other, {})
                pending[worker] = get_work or pending.get(worker, False)

    def got_work(self, worker: str) -> None:
        """``worker`` called ``get_work`` (a shard that meets it later hears of it: ``_replay``)."""
        self.seen(worker).last_get_work = self.pool.clock()

    def flush_touches(self) -> None:
        """Once per router turn: one ``fed_touch_workers`` per shard with workers active elsewhere."""
        if not self._touches:
            return
        touches, self._touches = self._touches, {}

        def ignore(result: Any, err: Any) -> None:
            """Best effort: the worker's next call there touches it anyway."""

        for sid, workers in touches.items():
            if self.pool.links[sid].state is not LinkState.DOWN:
                plain = [w for w, gw in workers.items() if not gw]
                asked = [w for w, gw in workers.items() if gw]
                if plain:
                    self.pool.call(sid, "fed_touch_workers", {"workers": plain}, ignore)
                if asked:
                    self.pool.call(sid, "fed_touch_workers", {"workers": asked, "get_work": True}, ignore)

    def on_shard_workers(self, sid: str, workers: list[str]) -> None:
        """A shard (re)synchronised: it knows these workers; replay what the router knows of them."""
        for worker in workers:
            ws = self.workers.get(worker)
            if ws is None:
                ws = self.workers[worker] = WorkerState(last_seen=self.pool.clock())
            if sid not in ws.shards:
                ws.shards[sid] = None
            self._replay(worker, ws, sid)

    def _replay(self, worker: str, ws: WorkerState, sid: str) -> None:
        def ignore(result: Any, err: Any) -> None:
            """Best effort; a resync replays again."""

        if ws.info:
            self.pool.call(
                sid, "add_worker", {"worker": worker, "info": [[k, v] for k, v in ws.info.items()]}, ignore
            )
        for batcher in ws.batchers.values():
            self.pool.call(sid, "add_task_batcher", batcher, ignore)
        if ws.disabled:
            self.pool.call(sid, "disable_worker", {"worker": worker}, ignore)
        if ws.last_get_work is not None and self.pool.clock() - ws.last_get_work < self.forget_after / 4:
            # Luigi reserves resources for the tasks of workers that asked for work lately
            self.pool.call(sid, "fed_touch_workers", {"workers": [worker], "get_work": True}, ignore)

    def gone(self, sid: str, workers: list[str]) -> None:
        """Shard ``sid`` pruned these workers (silent for ``worker_disconnect_delay``, or its
        ``prune_on_get_work``): it no longer knows them.  A worker no shard knows any more is gone
        as in luigid, which makes a new, active worker at its next call: its ``add_worker`` info,
        batchers, disabled flag and last ``get_work`` are not replayed to a shard meeting it."""
        for worker in workers:
            ws = self.workers.get(worker)
            if ws is None:
                continue
            ws.shards.pop(sid, None)
            ws.touched.pop(sid, None)
            if not ws.shards:
                ws.info = {}
                ws.batchers = {}
                ws.disabled = False
                ws.last_get_work = None

    def targets(self, worker: Any, *, all_shards: bool = False) -> list[str]:
        """Shards that know ``worker`` (all shards for an assistant).

        Until every shard has been synchronised after a start, shards not yet synchronised
        (and not down) are asked too: they may know the worker.
        """
        links = self.pool.links
        if all_shards:
            return list(links)
        ws = self.get(worker)
        if isinstance(worker, str) and (ws is None or not ws.shards):
            ws = self.seen(worker)
            ws.shards[self.home(worker)] = None
        ids = list(ws.shards) if ws else []
        ids += [
            lid
            for lid, link in links.items()
            if not link.synced and link.state is not LinkState.DOWN and lid not in ids
        ]
        return ids

    def remember(self, method: str, kwargs: dict[str, Any]) -> None:
        """What a worker call tells the router to replay to shards that meet the worker later."""
        worker = kwargs.get("worker")
        if not isinstance(worker, str):
            return
        ws = self.seen(worker)
        if method == "add_worker":
            info = kwargs.get("info")
            try:
                ws.info.update(dict(info) if isinstance(info, (list, dict)) else {})
            except (TypeError, ValueError):
                pass  # the shards will say what is wrong with it
        elif method == "disable_worker":
            ws.disabled = True
        elif method == "add_task_batcher":
            family = kwargs.get("task_family")
            if isinstance(family, str):
                ws.batchers[family] = dict(kwargs)

    def rotation(self, worker: str, targets: list[str]) -> list[str]:
        """Fair rotation: each get_work of a worker starts one shard further on."""
        ws = self.workers.get(worker)
        if ws is None or not targets:
            return targets
        ws.last_seen = self.pool.clock()
        k = ws.turn % len(targets)
        ws.turn += 1
        return targets[k:] + targets[:k]

    # -- batches --------------------------------------------------------------------------------
    def batch_handed_out(self, batch_id: str, sid: str, worker: Any) -> None:
        self.batches[batch_id] = sid
        if isinstance(worker, str):
            self._batch_worker[batch_id] = worker

    def pin_runner(self, task_id: str, batch_id: Any) -> None:
        """Luigi's batch runner: its task id is new, its members sit on the shard that handed the
        batch out, and that shard must see the runner's every report.  A runner that is one of
        its batch's tasks (Luigi allows it) stays with its owner."""
        if not isinstance(batch_id, str):
            return
        cross = self.cross.get(batch_id)
        if cross is not None:
            cross.runner = True
            self.cross_runners[task_id] = batch_id
            if task_id in cross.members:
                return
        sid = self.batches.get(batch_id)
        if sid is not None:
            self.pinned[task_id] = sid

    def cross_handed_out(self, batch_id: str, home: str, worker: Any, members: dict[str, str]) -> None:
        self.batch_handed_out(batch_id, home, worker)
        if isinstance(worker, str):
            self.cross[batch_id] = CrossBatch(worker, members)

    def orphaned(self, worker: Any) -> list[str]:
        """The worker's batches over several shards whose runner it never reported, forgotten:
        Luigi resets them to PENDING on the worker's next ``get_work`` with ``current_tasks``."""
        gone = [b for b, c in self.cross.items() if c.worker == worker and not c.runner]
        for batch_id in gone:
            del self.cross[batch_id]
        return gone

    def is_runner(self, task_id: str) -> bool:
        """A batch runner's report changes its batch's tasks, some maybe on other shards."""
        return task_id in self.pinned or task_id in self.cross_runners

    def runner_finished(self, task_id: str) -> None:
        """A cross-shard batch's runner reported an end status: the batch is settled."""
        batch_id = self.cross_runners.pop(task_id, None)
        if batch_id is not None:
            self.cross.pop(batch_id, None)

    def on_hosted(self, sid: str, task_ids: list[str]) -> None:
        """A shard (re)synchronised: it hosts these batch runners (ids another shard owns)."""
        for task_id in task_ids:
            if isinstance(task_id, str):
                self.pinned[task_id] = sid

    def unpin(self, task_id: str, sid: str) -> None:
        """Shard ``sid`` deleted ``task_id``: a runner pinned there is gone."""
        if self.pinned.get(task_id) == sid:
            del self.pinned[task_id]

    def forget(self, now: float) -> None:
        """Forget workers silent for ``forget_after``, and the batches they were handed."""
        gone = [w for w, ws in self.workers.items() if now - ws.last_seen > self.forget_after]
        for w in gone:
            del self.workers[w]
        if gone and self.batches:
            dead = set(gone)
            for batch_id in [b for b, w in self._batch_worker.items() if w in dead]:
                self.batches.pop(batch_id, None)
                self.cross.pop(batch_id, None)
                del self._batch_worker[batch_id]
            for task_id in [t for t, b in self.cross_runners.items() if b not in self.cross]:
                del self.cross_runners[task_id]
