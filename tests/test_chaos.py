"""``fedctl loadtest run --chaos``: faults under load, and the load test's checks still hold.

The short profile runs here (one fault of each kind against a 3-shard Postgres federation with a
standby per shard, in a throwaway Postgres cluster); the long one (20 faults) is in
docs/operations.md with its figures.
"""

from __future__ import annotations

import shutil

import pytest

from loadtest.chaos import KINDS, PROFILES, ChaosSpec, parse_spec
from loadtest.runner import RunOptions, run


def test_spec_profiles_and_settings() -> None:
    assert parse_spec("short") == PROFILES["short"]
    spec = parse_spec("long,seed=7,faults=30,kinds=kill-shard+freeze-router,gap=1-2,freeze=3")
    assert (spec.faults, spec.seed, spec.kinds, spec.gap, spec.freeze) == (
        30,
        7,
        ("kill-shard", "freeze-router"),
        (1.0, 2.0),
        (3.0, 3.0),
    )
    assert parse_spec("faults=3").faults == 3 and parse_spec("faults=3").kinds == KINDS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "needs a profile"),
        ("medium", "unknown profile 'medium'"),
        ("faults=0", "bad value in 'faults=0'"),
        ("kinds=kill-shard+nuke", "unknown nuke"),
        ("gap=5-1", "need 0 <= low <= high"),
        ("long,speed=3", "unknown setting 'speed'"),
        ("long,short", "is not key=value"),
        ("session_timeout=0.5", "bad value"),
    ],
)
def test_bad_specs_are_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(text)


def test_chaos_needs_a_started_postgres_federation() -> None:
    with pytest.raises(ValueError, match="--chaos needs --shards N --store postgres"):
        run(RunOptions(shards=3, store="sqlite", chaos="short"), None, lambda _m: None)
    with pytest.raises(ValueError, match="unknown profile"):
        run(RunOptions(shards=3, store="postgres", chaos="nope"), None, lambda _m: None)


def test_schedule_is_seeded_and_has_every_kind() -> None:
    from loadtest.chaos import Chaos

    a = Chaos(ChaosSpec(faults=20, seed=3), None, None).schedule
    assert a == Chaos(ChaosSpec(faults=20, seed=3), None, None).schedule
    assert a != Chaos(ChaosSpec(faults=20, seed=4), None, None).schedule
    assert set(a) == set(KINDS) and len(a) == 20


@pytest.mark.skipif(
    not shutil.which("pg_ctl") and not shutil.which("initdb"), reason="no PostgreSQL binaries"
)
def test_short_chaos_profile_under_load_keeps_every_check() -> None:
    lines: list[str] = []
    opts = RunOptions(
        days=5,
        topics=40,
        workers=8,
        task_ms=150.0,
        shards=3,
        store="postgres",
        timeout=10.0,
        stall_timeout=60.0,
        deadline=150.0,
        chaos="short",
    )
    outcome = run(opts, None, lines.append)
    (target,) = outcome.targets
    report = "\n".join(lines + target.notes)
    # every task granted and completed exactly once, none before its dependencies, the final
    # state as planned, the run finished, and every fault injected and recovered from
    assert target.checks.ok, f"{target.checks.summary()}\n{report}"
    (row,) = [r for r in target.rows if r["phase"] == "run"]
    assert row["chaos_faults"] == len(KINDS), report
    injected = {line.split(": ")[1].split()[0] for line in target.notes if line.startswith("fault ")}
    assert injected == set(KINDS), report
    assert "not recovered" not in report and "skipped" not in report, report
    print("\n" + report)


def test_stall_is_the_longest_span_without_progress_from_each_fault_until_the_next() -> None:
    from loadtest.chaos import Chaos, Fault

    chaos = Chaos(ChaosSpec(faults=2), None, None)
    # progress every 0.5 s, except nothing from 2.0 to 6.0 (fault 1 at 1.2) and from 8.0 to 9.5 (fault 2 at 7.0)
    times = [i * 0.5 for i in range(0, 25)]
    count, samples = 0, []
    for t in times:
        if not (2.0 < t < 6.0 or 8.0 < t < 9.5):
            count += 1
        samples.append((t, count))
    chaos._samples = samples
    chaos.result.faults = [
        Fault(1, "kill-router", 1.2),
        Fault(2, "kill-shard", 7.0),
        Fault(3, "kill-standby", 9.0, skipped="no standby"),
    ]
    chaos._fill_stalls()
    first, second, skipped = chaos.result.faults
    assert first.stall == 4.0  # 2.0 -> 6.0
    assert second.stall == 1.5  # 8.0 -> 9.5
    assert skipped.stall == 0.0
    assert chaos.result.longest_stall == 4.0
