"""Faults under load: ``fedctl loadtest run ... --chaos SPEC``.

While the load test registers and runs its DAG, a thread injects faults at seeded random moments
into the federation the load test started (``fedctl up`` with a standby per shard, Postgres
stores in a throwaway cluster, :mod:`loadtest.pgcluster`):

==================== ============================================================================
``kill-shard``        SIGKILL the process that owns a shard (its standby takes over; ``fedctl up``
                      restarts the killed one, which becomes the new standby)
``kill-standby``      SIGKILL a waiting standby (``fedctl up`` restarts it)
``kill-router``       SIGKILL the router (``fedctl up`` restarts it; clients retry)
``freeze-shard``      SIGSTOP a shard's owner for a while, then SIGCONT (past the owner's session
                      timeout its standby takes over and the woken owner is fenced out)
``freeze-router``     SIGSTOP the router for a while, then SIGCONT
``restart-postgres``  restart the Postgres cluster every shard uses (``fast`` or ``immediate``:
                      a crash and recovery), seeded
==================== ============================================================================

Faults come one at a time: wait a seeded gap, inject, wait until ``federation_health`` shows the
router and every shard up again (the *recovery*), then the next gap.  The load test's own checks
decide correctness (every task granted and completed exactly once, none before its
dependencies, the final state); this module adds what the faults did: one row per fault, the
recovery time, and the *stall*: the longest time without progress (no registration
acknowledged, no task completed) from the fault until the next one.  Fewer faults injected
than asked (the run ended first), or a fault not recovered from, is a failed check.

SPEC is a profile, ``key=value`` settings, or both: ``short`` (CI: one fault of each kind),
``long`` (20 faults), ``long,seed=7,faults=30``, ``faults=8,kinds=kill-shard+freeze-router``.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from federation.errors import FederationError
from federation.transport import ZmqClient
from loadtest import procstats

KINDS = ("kill-shard", "kill-standby", "kill-router", "freeze-shard", "freeze-router", "restart-postgres")


@dataclass(frozen=True)
class ChaosSpec:
    """What ``--chaos`` injects (see the module docstring)."""

    faults: int = 20
    kinds: tuple[str, ...] = KINDS
    seed: int = 1
    #: seconds between the recovery from one fault and the next fault (uniform in the range)
    gap: tuple[float, float] = (2.0, 6.0)
    #: seconds a frozen process stays stopped (uniform in the range)
    freeze: tuple[float, float] = (1.0, 8.0)
    #: seconds after the load starts before the first fault
    first: float = 2.0
    #: standbys per shard
    standbys: int = 1
    #: the owners' Postgres session timeout: a freeze longer than this makes the standby take over
    session_timeout: float = 3.0
    #: the longest wait for the federation to recover from one fault before the next
    recover_timeout: float = 90.0

    def describe(self) -> str:
        return (
            f"{self.faults} faults ({'+'.join(self.kinds)}), seed {self.seed}, gaps {self.gap[0]:g}-{self.gap[1]:g} s, "
            f"freezes {self.freeze[0]:g}-{self.freeze[1]:g} s, {self.standbys} standby per shard, "
            f"owner session timeout {self.session_timeout:g} s"
        )


PROFILES = {
    # CI: one fault of each kind, short gaps (the run must last ~30 s: see tests/test_chaos.py)
    "short": ChaosSpec(faults=len(KINDS), gap=(1.0, 3.0), freeze=(1.0, 4.5), first=2.0, session_timeout=2.0),
    # the documented run: 20 faults, every kind several times
    "long": ChaosSpec(faults=20, gap=(2.0, 6.0), freeze=(1.0, 8.0), first=2.0, session_timeout=3.0),
}


def _range(key: str, value: str) -> tuple[float, float]:
    lo, sep, hi = value.partition("-")
    try:
        a, b = float(lo), float(hi if sep else lo)
    except ValueError:
        raise ValueError(f"--chaos {key}={value!r}: give seconds, or a range like 1-5") from None
    if not 0 <= a <= b or b > 3600:
        raise ValueError(f"--chaos {key}={value!r}: need 0 <= low <= high <= 3600")
    return a, b


def parse_spec(text: str) -> ChaosSpec:
    """``short``, ``long``, or comma-separated ``key=value`` (after an optional profile);
    ValueError with the offending part for anything else."""
    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    if not parts:
        raise ValueError("--chaos needs a profile (short, long) or key=value settings")
    spec = ChaosSpec()
    if "=" not in parts[0]:
        if parts[0] not in PROFILES:
            raise ValueError(f"--chaos: unknown profile {parts[0]!r} (profiles: {', '.join(PROFILES)})")
        spec = PROFILES[parts.pop(0)]
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        value = value.strip()
        if not sep:
            raise ValueError(f"--chaos: {part!r} is not key=value (a profile comes first)")
        try:
            if key == "faults":
                n = int(value)
                if not 1 <= n <= 1000:
                    raise ValueError
                spec = replace(spec, faults=n)
            elif key == "seed":
                spec = replace(spec, seed=int(value))
            elif key == "kinds":
                kinds = tuple(k.strip() for k in value.split("+") if k.strip())
                bad = [k for k in kinds if k not in KINDS]
                if bad or not kinds:
                    raise ValueError(
                        f"--chaos kinds: unknown {', '.join(bad) or '(none)'} (kinds: {'+'.join(KINDS)})"
                    )
                spec = replace(spec, kinds=kinds)
            elif key in ("gap", "freeze"):
                changes: dict[str, Any] = {key: _range(key, value)}
                spec = replace(spec, **changes)
            elif key in ("first", "session_timeout", "recover_timeout"):
                x = float(value)
                if not 0 <= x <= 3600 or (key == "session_timeout" and x < 1):
                    raise ValueError
                spec = replace(spec, **dict[str, Any]({key: x}))
            elif key == "standbys":
                n = int(value)
                if not 1 <= n <= 5:
                    raise ValueError
                spec = replace(spec, standbys=n)
            else:
                raise ValueError(
                    f"--chaos: unknown setting {key!r} (faults, kinds, seed, gap, freeze, first, standbys, "
                    "session_timeout, recover_timeout)"
                )
        except ValueError as e:
            if str(e).startswith("--chaos"):
                raise
            raise ValueError(f"--chaos: bad value in {part!r}") from None
    return spec


@dataclass
class Fault:
    """One injected fault and what it did."""

    n: int
    kind: str
    at: float  # seconds since the chaos started
    target: str = ""
    detail: str = ""
    duration: float = 0.0  # a freeze's length, a Postgres restart's downtime
    recovered: float | None = None  # seconds from the fault until the federation answered whole again
    stall: float = 0.0  # the longest time without progress that began between this fault and the next
    skipped: str = ""

    def line(self) -> str:
        if self.skipped:
            return f"fault {self.n:>2} at {self.at:6.1f} s: {self.kind} skipped ({self.skipped})"
        rec = f"recovered in {self.recovered:.1f} s" if self.recovered is not None else "NOT recovered"
        dur = f", {self.duration:.1f} s" if self.duration else ""
        return (
            f"fault {self.n:>2} at {self.at:6.1f} s: {self.kind} {self.target}{dur} ({self.detail}); "
            f"{rec}; longest stall {self.stall:.1f} s"
        )


@dataclass
class ChaosResult:
    spec: ChaosSpec
    faults: list[Fault] = field(default_factory=list)

    @property
    def injected(self) -> int:
        return sum(1 for f in self.faults if not f.skipped)

    @property
    def longest_stall(self) -> float:
        return max((f.stall for f in self.faults), default=0.0)

    def problems(self) -> list[str]:
        out = []
        if self.injected < self.spec.faults:
            out.append(
                f"{self.injected} of {self.spec.faults} faults injected (the run ended first: give it more tasks)"
            )
        out += [
            f"fault {f.n} ({f.kind}) not recovered from"
            for f in self.faults
            if not f.skipped and f.recovered is None
        ]
        return out

    def summary(self) -> str:
        by_kind: dict[str, int] = {}
        for f in self.faults:
            if not f.skipped:
                by_kind[f.kind] = by_kind.get(f.kind, 0) + 1
        rec = [f.recovered for f in self.faults if f.recovered is not None]
        return (
            f"chaos: {self.injected}/{self.spec.faults} faults ({', '.join(f'{k} {n}' for k, n in by_kind.items())}); "
            f"longest stall after a fault {self.longest_stall:.1f} s; recovery median "
            f"{sorted(rec)[len(rec) // 2] if rec else 0:.1f} s, max {max(rec, default=0):.1f} s"
        )


class Chaos:
    """Injects ``spec``'s faults into a :class:`loadtest.servers.LocalFederation` while a run goes on.

    ``start(progress)`` (``progress()`` = work acknowledged so far: registrations and completed
    tasks) starts the fault thread and a sampler; ``stop()`` ends them (a freeze in progress is thawed first) and fills the stalls.
    """

    def __init__(self, spec: ChaosSpec, federation: Any, pg: Any, log: Callable[[str], None] = print) -> None:
        self.spec, self.fed, self.pg, self.log = spec, federation, pg, log
        self.rng = random.Random(spec.seed)
        self.result = ChaosResult(spec)
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._samples: list[tuple[float, int]] = []
        self._t0 = 0.0
        self._frozen: int | None = None
        # the schedule: every kind at least once (when there are enough faults), the rest at random
        kinds = list(spec.kinds) if spec.faults >= len(spec.kinds) else []
        kinds += [self.rng.choice(spec.kinds) for _ in range(spec.faults - len(kinds))]
        self.rng.shuffle(kinds)
        self.schedule = kinds

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, progress: Callable[[], int]) -> None:
        self._t0 = time.monotonic()
        self._threads = [
            threading.Thread(target=self._sample, args=(progress,), daemon=True, name="chaos-sample"),
            threading.Thread(target=self._inject_all, daemon=True, name="chaos"),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> ChaosResult:
        self._halt.set()
        for t in self._threads:
            t.join(self.spec.recover_timeout + 30)
        self._thaw()
        self._fill_stalls()
        return self.result

    def _sample(self, progress: Callable[[], int]) -> None:
        while not self._halt.is_set():
            try:
                self._samples.append((time.monotonic() - self._t0, progress()))
            except Exception:
                pass
            self._halt.wait(0.05)

    # -- the faults --------------------------------------------------------------------------------
    def _inject_all(self) -> None:
        if self._halt.wait(self.spec.first):
            return
        for n, kind in enumerate(self.schedule, 1):
            if n > 1 and self._halt.wait(self.rng.uniform(*self.spec.gap)):
                return
            fault = Fault(n, kind, time.monotonic() - self._t0)
            try:
                self._inject(fault)
            except Exception as e:  # a fault that could not be injected is reported, not fatal
                fault.skipped = f"{type(e).__name__}: {e}"
            self.result.faults.append(fault)
            if not fault.skipped:
                fault.recovered = self._await_recovery(fault)
            self.log(fault.line())
            if self._halt.is_set():
                return

    def _inject(self, fault: Fault) -> None:
        kind = fault.kind
        if kind == "restart-postgres":
            mode = self.rng.choice(["fast", "immediate"])
            fault.target, fault.detail = "cluster", f"pg_ctl restart -m {mode}"
            fault.duration = self.pg.restart(mode)
            return
        if kind.endswith("router"):
            pids = self._router_pids()
            if not pids:
                raise RuntimeError("no router process")
            pid, fault.target = pids[0], "router"
        else:
            owners, standbys = self._shard_pids()
            pool = owners if kind.endswith("shard") else standbys
            if not pool:
                raise RuntimeError(f"no {'owner' if kind.endswith('shard') else 'standby'} process")
            (pid, sid, where) = self.rng.choice(sorted(pool))
            fault.target = sid
            fault.detail = f"pid {pid}{', ' + where if where else ''}"
        if kind.startswith("kill"):
            os.kill(pid, signal.SIGKILL)
            fault.detail = fault.detail or f"pid {pid}"
            fault.detail += ", SIGKILL"
            return
        seconds = self.rng.uniform(*self.spec.freeze)
        fault.duration = seconds
        fault.detail = (fault.detail or f"pid {pid}") + ", SIGSTOP/SIGCONT"
        self._frozen = pid
        os.kill(pid, signal.SIGSTOP)
        self._halt.wait(seconds)  # stop() thaws it if the run ends meanwhile
        self._thaw()

    def _thaw(self) -> None:
        pid, self._frozen = self._frozen, None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def _await_recovery(self, fault: Fault) -> float | None:
        """Seconds from the fault until the router answers and every shard is up (None: timed out)."""
        t_fault = self._t0 + fault.at
        deadline = time.monotonic() + self.spec.recover_timeout
        while time.monotonic() < deadline:
            try:
                client = ZmqClient(self.fed.zmq, timeout=1.0)
                try:
                    health = client.call("federation_health", {})
                finally:
                    client.close()
                if all(s.get("up") for s in health["shards"]):
                    return time.monotonic() - t_fault
            except FederationError:
                pass
            time.sleep(0.1)
        return None

    # -- which process is which ----------------------------------------------------------------------
    def _children(self) -> list[tuple[int, list[str]]]:
        proc = getattr(self.fed, "proc", None)
        if proc is None:
            return []
        out = []
        for pid in procstats.children(proc.pid):
            if procstats.comm(pid) and _state(pid) != "Z":
                out.append((pid, procstats.cmdline(pid)))
        return out

    def _router_pids(self) -> list[int]:
        return [pid for pid, args in self._children() if _command(args) == "router"]

    def _shard_pids(self) -> tuple[list[tuple[int, str, str]], list[tuple[int, str, str]]]:
        """(owners, standbys) as ``(pid, shard id, endpoint)``: an owner listens on one of its shard's endpoints."""
        listening: dict[int, str] = {}
        for spec in self.fed.config.shards:
            for ep in spec.endpoints:
                port = ep.rsplit(":", 1)[-1]
                if port.isdigit():
                    for pid in procstats.listening_pids(int(port)):
                        listening[pid] = ep
        owners, standbys = [], []
        for pid, args in self._children():
            if _command(args) != "shard" or "--id" not in args:
                continue
            sid = args[args.index("--id") + 1]
            if pid in listening:
                owners.append((pid, sid, f"owner on {listening[pid]}"))
            elif _state(pid) != "T":
                standbys.append((pid, sid, "standby"))
        return owners, standbys

    # -- stalls --------------------------------------------------------------------------------------
    def _fill_stalls(self) -> None:
        """For each fault, the longest span without progress that began between the fault and the
        next one (the end of the run for the last), measured from the fault."""
        samples = self._samples
        if not samples:
            return
        # times at which the progress count went up
        ups = [t for (t, n), (_t0, n0) in zip(samples[1:], samples, strict=False) if n > n0]
        end = samples[-1][0]
        faults = [f for f in self.result.faults if not f.skipped]
        for i, f in enumerate(faults):
            until = faults[i + 1].at if i + 1 < len(faults) else end
            prev, longest = f.at, 0.0
            for t in (t for t in ups if t > f.at):
                if prev > until:
                    break
                longest = max(longest, t - prev)
                prev = t
            f.stall = round(longest, 2)


def _command(args: list[str]) -> str:
    return args[args.index("fedctl") + 1] if "fedctl" in args[:-1] else ""


def _state(pid: int) -> str:
    """The process state letter from /proc (R, S, T stopped, Z zombie; '' when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
