"""Rank-ordered queues for the scheduler core (``shard.scheduler``).

A :class:`RankQueue` holds task ids ordered by Luigi's ``get_work`` rank,
encoded as an ascending key ``(-priority, time, seq)``: higher priority first,
then older ``task.time`` first, then ``seq`` — the order in which the task
entered its current status, which is the order of Luigi's ``_status_tasks``
dict and therefore the tie-break that Luigi's stable sort keeps.

It is a binary heap with lazy deletion: ``members`` maps each live task id to
its current entry tuple, and a heap entry is live only while it is
(identically) that tuple.  Removal is O(1); stale entries are popped when they
reach the top or dropped by a rebuild once they outnumber the live ones, so
memory stays O(live).  :meth:`RankQueue.ordered` enumerates live entries in
order without mutating the heap, in O(k log k) for the first k entries, which
is what lets ``get_work`` stop early.
"""

from __future__ import annotations

from collections.abc import Iterator
from heapq import heapify, heappop, heappush

#: a queue entry: (-priority, time, seq, task_id)
Entry = tuple[float, float, int, str]

_SLACK = 64


class RankQueue:
    """Task ids ordered by ``(-priority, time, seq)``; O(log n) add, O(1) discard."""

    __slots__ = ("heap", "members")

    def __init__(self) -> None:
        self.heap: list[Entry] = []
        self.members: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self.members)

    def __bool__(self) -> bool:
        return bool(self.members)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.members

    def add(self, task_id: str, negprio: float, time: float, seq: int) -> None:
        """Insert ``task_id`` (or move it to a new key)."""
        entry = (negprio, time, seq, task_id)
        self.members[task_id] = entry
        heappush(self.heap, entry)
        if len(self.heap) > 2 * len(self.members) + _SLACK:
            self._rebuild()

    def discard(self, task_id: str) -> None:
        members = self.members
        entry = members.pop(task_id, None)
        if entry is None:
            return
        heap = self.heap
        if not members:
            heap.clear()
        elif heap[0] is entry:
            # the usual case (the best task was handed out): drop the stale top entries now
            heappop(heap)
            while heap and members.get(heap[0][3]) is not heap[0]:
                heappop(heap)
        elif len(heap) > 2 * len(members) + _SLACK:
            self._rebuild()

    def peek(self) -> Entry | None:
        """The first live entry (drops stale entries from the top on the way)."""
        heap = self.heap
        members = self.members
        while heap:
            entry = heap[0]
            if members.get(entry[3]) is entry:
                return entry
            heappop(heap)
        return None

    def ordered(self) -> Iterator[Entry]:
        """Live entries in ascending key order, without mutating the heap.

        The queue must not be modified while the iterator is in use.
        """
        heap = self.heap
        members = self.members
        n = len(heap)
        if not n:
            return
        frontier: list[tuple[Entry, int]] = [(heap[0], 0)]
        while frontier:
            entry, i = heappop(frontier)
            if members.get(entry[3]) is entry:
                yield entry
            child = 2 * i + 1
            if child < n:
                heappush(frontier, (heap[child], child))
                child += 1
                if child < n:
                    heappush(frontier, (heap[child], child))

    def _rebuild(self) -> None:
        heap = list(self.members.values())
        heapify(heap)
        self.heap = heap
