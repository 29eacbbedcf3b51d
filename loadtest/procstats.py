"""CPU and memory of processes, read from Linux's ``/proc`` (psutil is not installed here).

* ``cpu_seconds(pid)``: user + system time (``/proc/<pid>/stat`` fields 14 and 15).
* ``peak_rss_mb(pid)``: ``VmHWM``, the peak resident set since the process started.
* ``machine_jiffies()``: busy and total jiffies of the whole machine (``/proc/stat``), for the
  share of the 2 cores a phase used and how much of it was someone else's.
* ``listening_pids(port)``: the process listening on a TCP port on this host (how a server we
  did not start is found: a ``--router`` federation's router and shards, by their ports).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    kb = _status_kb(pid, "VmHWM")
    return None if kb is None else kb / 1024.0


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    try:
        return [
            a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a
        ]
    except OSError:
        return []


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out.extend(int(x) for x in (task / "children").read_text().split())
            except OSError:
                continue
    except OSError:
        pass
    return out


def pids_named(name: str) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and comm(int(p)) == name]


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    return sum(parts) - idle, sum(parts)


def listening_pids(port: int) -> list[int]:
    """Processes with a TCP socket listening on ``port`` (any address)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return []
    found: list[int] = []
    targets = {f"socket:[{i}]" for i in inodes}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                try:
                    if os.readlink(f"/proc/{p}/fd/{fd}") in targets:
                        found.append(int(p))
                        break
                except OSError:
                    continue
        except OSError:
            continue
    return found


@dataclass
class Snapshot:
    """CPU seconds of named process groups and of the machine, at one moment."""

    cpu: dict[str, float] = field(default_factory=dict)  # role -> seconds (sum over its pids)
    per_pid: dict[int, float] = field(default_factory=dict)
    busy: int = 0
    total: int = 0


def snapshot(roles: dict[str, list[int]]) -> Snapshot:
    snap = Snapshot()
    for role, pids in roles.items():
        total = 0.0
        for pid in pids:
            c = cpu_seconds(pid)
            if c is not None:
                snap.per_pid[pid] = c
                total += c
        snap.cpu[role] = total
    snap.busy, snap.total = machine_jiffies()
    return snap


def delta(a: Snapshot, b: Snapshot, roles: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds per role between two snapshots (a process born in between counts from 0),
    plus ``machine_busy_cores`` (average busy CPUs) over the interval."""
    out: dict[str, float] = {}
    for role, pids in roles.items():
        out[role] = sum(max(0.0, b.per_pid.get(p, 0.0) - a.per_pid.get(p, 0.0)) for p in pids)
    jiffies = b.total - a.total
    ncpu = os.cpu_count() or 1
    out["machine_busy_cores"] = (b.busy - a.busy) / jiffies * ncpu if jiffies > 0 else 0.0
    return out
