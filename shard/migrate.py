"""A shard's side of online resharding: export, import and fencing of moving task ids.

The router drives a migration (``router/reshard.py``) from an *old* placement to a *new* one
(two ``federation.toml`` files); a task id *moves* when its owner differs between them.  Every
step below is one request to one shard, applied and committed in one batch (group commit), and
idempotent, so the router can repeat any of them after a crash of anything:

``fed_migrate_plan(old, new)``
    How many of this shard's tasks would move, per new owner.  Changes nothing.
``fed_migrate_out(mig, old, new)`` (source)
    In one batch: every task this shard owns under ``old`` and not under ``new`` leaves the
    core and goes into the *outbox* (a durable meta record: the task records, the records of
    the workers they name, placeholders for their dependencies).  A moved task that a task
    staying here depends on stays as a *mirror* (a bare placeholder, fresh, so the relay pulls
    its new owner's status).  From then on the moved ids are *fenced*: any call about one of
    them is refused with ``unavailable`` (Luigi's clients retry; a router routes them to the new
    owner after the switch).  The shard's placement becomes ``new``.
``fed_migrate_page(mig, target, after, limit)`` (source)
    A page of the outbox for one target, with the tasks' history rows from the store.
``fed_migrate_in(mig, source, page)`` (target)
    Keeps a page in the *inbox* (durable, one meta record per page) and appends its history
    rows; a page already kept is skipped.
``fed_migrate_apply(mig, new)`` (target)
    In one batch: every inbox page of ``mig`` becomes this shard's tasks (a mirror placeholder
    of the same id is replaced; workers and dependency placeholders are added when missing),
    the inbox is dropped, the placement becomes ``new``.
``fed_migrate_switch(mig, old, new)`` (every shard)
    The placement becomes ``new``; mirrors whose owner changed forget the version of the last
    update (their new owner's feed has a different epoch), so the new owner's status applies.
``fed_migrate_cleanup(mig)`` (every shard)
    Drops the outbox.  The fence stays: a router still routing by the old placement (one that
    missed the switch) must never write to a task that lives elsewhere now.

Everything is in the shard's store (meta keys ``fed_placement``, ``fed_fence``,
``fed_outbox``, ``fed_inbox:*``, ``fed_applied``): a restarted shard serves the placement it
was switched to, whatever its ``federation.toml`` says (logged when they differ).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from typing import Any

from federation.errors import BadArgumentsError, TransportError
from federation.placement import Placement
from shard.changes import Changes, Event, Snapshot
from shard.federated import FederatedCore, _merge_into, _mirror_status
from shard.scheduler import UNKNOWN, SchedulerCore

log = logging.getLogger("shard.migrate")

MIGRATE_METHODS = (
    "fed_migrate_plan",
    "fed_migrate_out",
    "fed_migrate_page",
    "fed_migrate_in",
    "fed_migrate_apply",
    "fed_migrate_switch",
    "fed_migrate_cleanup",
    "fed_migrate_status",
)

#: Luigi methods about one task, and the argument naming it: refused for a fenced (moved) id
FENCED_METHODS = {
    "add_task": "task_id",
    "set_task_status_message": "task_id",
    "get_task_status_message": "task_id",
    "set_task_progress_percentage": "task_id",
    "get_task_progress_percentage": "task_id",
    "decrease_running_task_resources": "task_id",
    "get_running_task_resources": "task_id",
    "report_task_statistics": "task_id",
    "add_scheduler_message_response": "task_id",
    "get_scheduler_message_response": "task_id",
    "fetch_error": "task_id",
    "mark_as_done": "task_id",
    "forgive_failures": "task_id",
    "re_enable_task": "task_id",
}

PAGE_LIMIT = 2000
_INBOX = "fed_inbox:"

#: what a task record keeps when it becomes a mirror placeholder here
_PLACEHOLDER_KEEP = ("task_id", "status", "priority", "updated", "time", "stakeholders", "seq", "cseq")


def placement_doc(placement: Placement) -> dict[str, Any]:
    """A placement as plain data (what a migration record and the meta key ``fed_placement`` hold)."""
    return {
        "groups": {g: list(m) for g, m in placement.groups.items()},
        "namespaces": dict(placement.namespaces),
        "default_group": placement.default_group,
    }


def placement_of(doc: Any) -> Placement:
    """The inverse of :func:`placement_doc`; a bad document is a ``BadArgumentsError``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), dict):
        raise BadArgumentsError(f"placement must be {{groups, namespaces, default_group}}, got {doc!r:.200}")
    try:
        return Placement(doc["groups"], doc.get("namespaces") or {}, doc.get("default_group") or "default")
    except Exception as e:
        raise BadArgumentsError(f"bad placement: {e}") from e


def placeholder(rec: dict[str, Any]) -> dict[str, Any]:
    """A task record reduced to a bare mirror placeholder (Luigi's UNKNOWN dependency), fresh:
    no family, workers, resources, failures or federation version; the status is what its owner
    last had, until the relay pushes the owner's current one."""
    out = {k: rec[k] for k in _PLACEHOLDER_KEEP if k in rec}
    out.update(
        family="",
        module=None,
        status=_mirror_status(rec.get("status")) if rec.get("family") else rec.get("status", UNKNOWN),
        deps=[],
        workers=[],
        worker_running=None,
        time_running=None,
        resources={},
        resources_running=None,
        resources_running_shared=False,
        failures=[],
        retry=None,
        remove=None,
        batch_id=None,
        runnable=False,
        fed={},
    )
    return out


class MigratingCore(FederatedCore):
    """:class:`~shard.federated.FederatedCore` with the resharding methods and the fence."""

    def __init__(
        self,
        core: SchedulerCore,
        shard_id: str,
        placement: Placement | None,
        clock: Callable[[], float] = time.time,
        *,
        events_of: Callable[[list[str]], list[Event]] | None = None,
        **kwargs: Any,
    ) -> None:
        #: the placement of the federation.toml this shard was started with
        self.file_placement = placement
        self.events_of = events_of
        self.fence: set[str] = set()
        self.outbox: dict[str, Any] | None = None
        #: (mig, source) -> pages kept, in order
        self.inbox: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.applied: str | None = None
        self.switched: str | None = None
        super().__init__(core, shard_id, placement, clock, **kwargs)

    # -- state from the store ------------------------------------------------------------------
    def restore(self, snapshot: Snapshot) -> None:
        meta = snapshot.meta or {}
        stored = meta.get("fed_placement")
        placement = self.file_placement
        if stored:
            placement = placement_of(stored)
            if self.file_placement is not None and placement.fingerprint != self.file_placement.fingerprint:
                log.warning(
                    "shard %s: serving the placement it was resharded to (%s), not its federation.toml's (%s)",
                    self.shard_id,
                    placement.fingerprint,
                    self.file_placement.fingerprint,
                )
        self.placement = placement
        self.fence = set(meta.get("fed_fence") or ())
        self.outbox = meta.get("fed_outbox") or None
        self.applied = meta.get("fed_applied")
        self.switched = meta.get("fed_switched")
        self.inbox = {}
        for key in sorted(k for k in meta if k.startswith(_INBOX)):
            page = meta[key]
            if page:
                self.inbox.setdefault((page["mig"], page["source"]), []).append(page)
        super().restore(snapshot)

    def _replace(self, snapshot: Snapshot, changes: Changes) -> None:
        """Replace the core's state by ``snapshot`` and queue ``changes`` for this batch's commit
        (after whatever the core changed before, already absorbed)."""
        self._absorb()
        stash = self._with_lazy(self._stash or Changes())
        self.core.restore(snapshot)
        self.core.collect_changes()  # restoring is not a change
        self._stash = None
        self._rebuild()  # a new epoch: the router resynchronises this shard
        if stash is None:
            stash = Changes()
        _merge_into(stash, changes)
        self._stash = stash

    def _meta_of(self, snap: Snapshot, placement: Placement) -> dict[str, Any]:
        return {**snap.meta, "fed_placement": placement_doc(placement)}

    # -- Luigi's methods, fenced -----------------------------------------------------------------
    def extra_methods(self) -> dict[str, Callable[..., Any]]:
        out = super().extra_methods()
        out.update({name: getattr(self, name) for name in MIGRATE_METHODS})
        out.update({name: self._fenced(name, arg) for name, arg in FENCED_METHODS.items()})
        return out

    def _fenced(self, name: str, arg: str) -> Callable[..., Any]:
        fn = getattr(self, name)  # the federated layer's own (add_task), else the core's
        fence = self.fence_check

        def call(*args: Any, **kwargs: Any) -> Any:
            fence(kwargs.get(arg))
            return fn(*args, **kwargs)

        call.__name__ = name
        return call

    def fence_check(self, task_id: Any) -> None:
        if self.fence and task_id in self.fence:
            raise TransportError(
                f"task {task_id} moved to another shard (resharding); retry through the router"
            )

    # -- the steps -------------------------------------------------------------------------------
    def _moving(self, old: Placement, new: Placement, task_ids: Any) -> dict[str, list[str]]:
        me = self.shard_id
        out: dict[str, list[str]] = {}
        for task_id in task_ids:
            if old.owner(task_id) == me:
                target = new.owner(task_id)
                if target != me:
                    out.setdefault(target, []).append(task_id)
        for ids in out.values():
            ids.sort()
        return out

    def fed_migrate_plan(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """``{"moves": {target: n}, "tasks": n}``: what ``fed_migrate_out`` would move now."""
        p_old, p_new = placement_of(old), placement_of(new)
        self._absorb()
        ids = [t.id for t in self.core.tasks()]
        moving = self._moving(p_old, p_new, ids)
        return {"moves": {t: len(v) for t, v in moving.items()}, "tasks": len(ids)}

    def fed_migrate_out(self, mig: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Move every task leaving this shard into the outbox, fence them (see the module doc)."""
        _req_mig(mig)
        p_old, p_new = placement_of(old), placement_of(new)
        if self.outbox is not None and self.outbox.get("id") == mig:
            return _outbox_summary(self.outbox)
        if self.outbox is not None:
            raise BadArgumentsError(
                f"shard {self.shard_id} holds the outbox of migration {self.outbox.get('id')}: finish it first"
            )
        self._absorb()
        snap = self.core.snapshot()
        recs = {r["task_id"]: r for r in snap.tasks}
        moving = self._moving(p_old, p_new, recs)
        gone = {tid for ids in moving.values() for tid in ids}
        # local dependents that stay keep a moved dependency as a mirror
        keep: set[str] = set()
        for rec in snap.tasks:
            if rec["task_id"] not in gone:
                keep.update(d for d in rec.get("deps") or () if d in gone)
        workers = {w["worker_id"]: w for w in snap.workers}
        named: set[str] = set()
        deps: dict[str, dict[str, Any]] = {}
        for tid in gone:
            rec = recs[tid]
            named.update(rec.get("workers") or ())
            named.update(rec.get("stakeholders") or ())
            if rec.get("worker_running"):
                named.add(rec["worker_running"])
            for d in rec.get("deps") or ():
                # also a dependency moving too, maybe elsewhere: the target needs a placeholder
                # unless it gets the task itself (then the task's record wins at apply)
                if d in recs:
                    deps[d] = placeholder(recs[d])
        batchers = snap.meta.get("batchers") or {}
        outbox = {
            "id": mig,
            "old": old,
            "new": new,
            "targets": moving,
            "tasks": {tid: recs[tid] for tid in gone},
            "placeholders": deps,
            "workers": {w: workers[w] for w in sorted(named) if w in workers},
            "meta": {
                "resources": snap.meta.get("resources") or {},
                "paused": bool(snap.meta.get("paused")),
                "batchers": {w: batchers[w] for w in named if w in batchers},
            },
        }
        kept = {tid: placeholder(recs[tid]) for tid in keep}
        new_tasks = [r for r in snap.tasks if r["task_id"] not in gone] + list(kept.values())
        self.fence |= gone
        self.outbox = outbox
        meta = self._meta_of(snap, p_new)
        meta_changes = {
            "fed_outbox": outbox,
            "fed_fence": sorted(self.fence),
            "fed_placement": placement_doc(p_new),
        }
        self.placement = p_new
        self._replace(
            Snapshot(tasks=new_tasks, workers=snap.workers, meta=meta),
            Changes(tasks=kept, deleted_tasks=gone - keep, meta=meta_changes),
        )
        log.info(
            "shard %s: migration %s: %d task(s) out (%s), %d kept as mirrors",
            self.shard_id,
            mig,
            len(gone),
            ", ".join(f"{t}: {len(v)}" for t, v in sorted(moving.items())),
            len(kept),
        )
        return _outbox_summary(outbox)

    def fed_migrate_page(
        self, mig: str, target: str, after: str = "", limit: int = PAGE_LIMIT
    ) -> dict[str, Any]:
        """The outbox's tasks for ``target`` after id ``after`` (at most ``limit``), with what they
        need: placeholders of their dependencies, their workers, their history rows."""
        _req_mig(mig)
        if not isinstance(target, str) or not isinstance(after, str):
            raise BadArgumentsError("target and after must be strings")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise BadArgumentsError(f"limit must be a positive integer, got {limit!r}")
        box = self.outbox
        if box is None or box.get("id") != mig:
            raise BadArgumentsError(f"shard {self.shard_id} has no outbox for migration {mig}")
        ids = box["targets"].get(target) or []
        start = bisect.bisect_right(ids, after) if after else 0
        page_ids = ids[start : start + limit]
        tasks = [box["tasks"][tid] for tid in page_ids]
        deps: dict[str, Any] = {}
        named: set[str] = set()
        for rec in tasks:
            for d in rec.get("deps") or ():
                if d in box["placeholders"]:
                    deps[d] = box["placeholders"][d]
            named.update(rec.get("workers") or ())
            named.update(rec.get("stakeholders") or ())
            if rec.get("worker_running"):
                named.add(rec["worker_running"])
        events = self.events_of(page_ids) if self.events_of is not None and page_ids else []
        batchers = box["meta"].get("batchers") or {}
        return {
            "mig": mig,
            "source": self.shard_id,
            "after": after,
            "last": page_ids[-1] if page_ids else after,
            "done": start + limit >= len(ids),
            "total": len(ids),
            "tasks": tasks,
            "placeholders": list(deps.values()),
            "workers": [box["workers"][w] for w in sorted(named) if w in box["workers"]],
            "events": [[e.task_id, e.status, e.worker, e.host, e.ts] for e in events],
            "meta": {
                "resources": box["meta"].get("resources") or {},
                "paused": box["meta"].get("paused", False),
                "batchers": {w: batchers[w] for w in named if w in batchers},
            },
        }

    def fed_migrate_in(self, mig: str, source: str, page: dict[str, Any]) -> dict[str, Any]:
        """Keep one page of a source's outbox (idempotent: a page kept already is skipped)."""
        _req_mig(mig)
        if not isinstance(page, dict) or page.get("mig") != mig or page.get("source") != source:
            raise BadArgumentsError("page must be a fed_migrate_page answer of this migration and source")
        for key in ("tasks", "placeholders", "workers", "events"):
            if not isinstance(page.get(key), list):
                raise BadArgumentsError(f"page: {key} must be a list")
        if self.applied == mig:
            return {"kept": 0, "skipped": True}
        pages = self.inbox.setdefault((mig, source), [])
        last = pages[-1]["last"] if pages else ""
        if page["last"] <= last or not page["tasks"]:
            return {"kept": 0, "skipped": True}
        rows = page["events"]
        if page["after"] != last:
            raise BadArgumentsError(f"page after {page['after']!r} does not follow the last kept ({last!r})")
        page = dict(page, events=[])  # the history rows go to the events table, not the inbox
        pages.append(page)
        events = []
        for e in rows:
            task_id, status, worker, host, ts = e
            events.append(Event(task_id, status, worker, host, ts))
        key = f"{_INBOX}{mig}:{source}:{len(pages):06d}"
        self._absorb()
        stash = self._stash or Changes()
        _merge_into(stash, Changes(meta={key: page}, events=events))
        self._stash = stash
        return {"kept": len(page["tasks"]), "skipped": False}

    def fed_migrate_apply(self, mig: str, new: dict[str, Any]) -> dict[str, Any]:
        """Make every kept page of ``mig`` this shard's own tasks, in one batch (idempotent)."""
        _req_mig(mig)
        p_new = placement_of(new)
        if self.applied == mig:
            return {"applied": 0, "already": True}
        self._absorb()
        snap = self.core.snapshot()
        tasks = {r["task_id"]: r for r in snap.tasks}
        workers = {w["worker_id"]: w for w in snap.workers}
        meta = dict(snap.meta)
        resources = dict(meta.get("resources") or {})
        batchers = dict(meta.get("batchers") or {})
        paused = bool(meta.get("paused"))
        changed_tasks: dict[str, dict[str, Any]] = {}
        changed_workers: dict[str, dict[str, Any]] = {}
        inbox_keys: dict[str, Any] = {}
        n = 0
        for (m, source), pages in sorted(self.inbox.items()):
            if m != mig:
                continue
            for i, page in enumerate(pages, 1):
                inbox_keys[f"{_INBOX}{mig}:{source}:{i:06d}"] = None
                for rec in page["tasks"]:
                    rec = dict(rec, fed={})
                    tasks[rec["task_id"]] = changed_tasks[rec["task_id"]] = rec
                    n += 1
                for rec in page["placeholders"]:
                    if rec["task_id"] not in tasks:
                        tasks[rec["task_id"]] = changed_tasks[rec["task_id"]] = rec
                for rec in page["workers"]:
                    if rec["worker_id"] not in workers:
                        workers[rec["worker_id"]] = changed_workers[rec["worker_id"]] = rec
                pm = page.get("meta") or {}
                for k, v in (pm.get("resources") or {}).items():
                    resources.setdefault(k, v)
                for w, fams in (pm.get("batchers") or {}).items():
                    batchers.setdefault(w, fams)
                paused = paused or bool(pm.get("paused"))
        for tid in changed_tasks:
            self.fence.discard(tid)
        meta.update(resources=resources, batchers=batchers, paused=paused)
        self.placement = p_new
        self.applied = mig
        for key in [k for k in self.inbox if k[0] == mig]:
            del self.inbox[key]
        meta_changes = {
            **inbox_keys,
            "resources": resources,
            "batchers": batchers,
            "paused": paused,
            "fed_applied": mig,
            "fed_fence": sorted(self.fence),
            "fed_placement": placement_doc(p_new),
        }
        ordered = sorted(tasks.values(), key=lambda r: r.get("cseq", 0))
        self._replace(
            Snapshot(
                tasks=ordered, workers=list(workers.values()), meta=self._meta_of(Snapshot(meta=meta), p_new)
            ),
            Changes(tasks=changed_tasks, workers=changed_workers, meta=meta_changes),
        )
        log.info("shard %s: migration %s: %d task(s) in", self.shard_id, mig, n)
        return {"applied": n, "already": False}

    def fed_migrate_switch(self, mig: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        """Serve ``new`` from now on; mirrors whose owner changed take the new owner's next status."""
        _req_mig(mig)
        p_old, p_new = placement_of(old), placement_of(new)
        if self.switched == mig:
            return {"reset": 0, "already": True}
        self._absorb()
        reset = 0
        for task_id in list(self._mirrors):
            if p_old.owner(task_id) != p_new.owner(task_id):
                self.core.update_fed(task_id, {"epoch": -1.0, "seq": -1})
                reset += 1
        self.placement = p_new
        self.switched = mig
        self._rebuild()  # placement decides mirrors; a new epoch makes the router resynchronise
        self._absorb()
        stash = self._stash or Changes()
        _merge_into(stash, Changes(meta={"fed_placement": placement_doc(p_new), "fed_switched": mig}))
        self._stash = stash
        return {"reset": reset, "already": False}

    def fed_migrate_cleanup(self, mig: str) -> dict[str, Any]:
        """Drop the outbox of ``mig`` (the fence stays)."""
        _req_mig(mig)
        if self.outbox is None or self.outbox.get("id") != mig:
            return {"dropped": False}
        self.outbox = None
        self._absorb()
        stash = self._stash or Changes()
        _merge_into(stash, Changes(meta={"fed_outbox": None}))
        self._stash = stash
        return {"dropped": True}

    def fed_migrate_status(self) -> dict[str, Any]:
        """Where this shard is in a migration (for ``fedctl reshard`` and the tests)."""
        return {
            "placement": self.placement.fingerprint if self.placement is not None else None,
            "outbox": self.outbox.get("id") if self.outbox else None,
            "inbox": {
                f"{m}:{s}": sum(len(p["tasks"]) for p in pages) for (m, s), pages in self.inbox.items()
            },
            "applied": self.applied,
            "switched": self.switched,
            "fenced": len(self.fence),
        }


def _req_mig(mig: Any) -> None:
    if not isinstance(mig, str) or not mig:
        raise BadArgumentsError("mig (the migration id) must be a non-empty string")


def _outbox_summary(box: dict[str, Any]) -> dict[str, Any]:
    moves = {t: len(ids) for t, ids in box["targets"].items()}
    return {"moves": moves, "total": sum(moves.values())}
