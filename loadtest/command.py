"""``fedctl loadtest run`` and ``fedctl loadtest compare``: the argparse wiring.

``fedctl/cli.py`` calls :func:`register` with its subparsers; each subcommand's ``func``
takes the parsed Namespace and returns the exit code (0: every check passed; 1: a check failed;
2: a usage or setup error, as one line on stderr).  pandas, pyarrow and rich are imported only
when a subcommand runs, so ``fedctl --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from federation.errors import FederationError

DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
TIMEOUT_DEFAULT = 60.0


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(name, default)


def register(subparsers: Any) -> None:
    """Add ``loadtest`` (with ``run`` and ``compare``) to fedctl's subparsers."""
    lt = subparsers.add_parser(
        "loadtest",
        help="thousands of daily partitions against a federation (and luigid), with a report",
        description="Generate a partitioned Luigi DAG, drive it through many simulated Luigi workers, "
        "check that every task ran exactly once and in dependency order, and measure.",
    )
    lt_sub = lt.add_subparsers(dest="loadtest_command", metavar="SUBCOMMAND")
    lt.set_defaults(func=lambda args: _usage(lt))

    run = lt_sub.add_parser(
        "run",
        help="run a load test (see docs/loadtest.md)",
        description="Run a generated DAG (days x topics x Extract/Transform/Enrich/Load + a daily "
        "WrapperTask) through W simulated Luigi workers against a federation (--router or "
        "--shards) and/or a stock luigid (--against luigid), check it, report it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = run.add_argument_group("the DAG")
    g.add_argument(
        "--days", type=int, default=int(_env("FED_LT_DAYS", "2")), help="days of partitions [FED_LT_DAYS]"
    )
    g.add_argument(
        "--topics", type=int, default=int(_env("FED_LT_TOPICS", "3")), help="topics per day [FED_LT_TOPICS]"
    )
    g.add_argument(
        "--units",
        default=_env("FED_LT_UNITS", "fin,mkt,ops"),
        help="business units = task namespaces, topics spread round robin [FED_LT_UNITS]",
    )
    g.add_argument(
        "--fan-in",
        type=int,
        default=int(_env("FED_LT_FAN_IN", "2")),
        help="Transforms each Enrich reads (its own + others of the day) [FED_LT_FAN_IN]",
    )
    g.add_argument(
        "--fan-out",
        type=int,
        default=int(_env("FED_LT_FAN_OUT", "10")),
        help="Enrich tasks fed by one ref.Reference task per day (0: none) [FED_LT_FAN_OUT]",
    )
    g.add_argument(
        "--priorities",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="business-unit priorities and high priority on the latest days",
    )
    g.add_argument(
        "--fail-rate",
        type=float,
        default=float(_env("FED_LT_FAIL_RATE", "0")),
        help="share of tasks that fail once and succeed on the retry [FED_LT_FAIL_RATE]",
    )
    g.add_argument(
        "--perm-fail-rate",
        type=float,
        default=float(_env("FED_LT_PERM_FAIL_RATE", "0")),
        help="share of tasks that always fail (retry_count 1: disabled) [FED_LT_PERM_FAIL_RATE]",
    )
    g.add_argument(
        "--resources",
        type=int,
        default=int(_env("FED_LT_RESOURCES", "0")),
        help="Load tasks need warehouse=1 of this capacity (0: no resources) [FED_LT_RESOURCES]",
    )
    g.add_argument("--seed", type=int, default=1, help="chooses fan-in partners and failing tasks")
    g.add_argument("--start", default="2026-01-01", help="first day")

    g = run.add_argument_group("the workers")
    g.add_argument(
        "--workers",
        type=int,
        default=int(_env("FED_LT_WORKERS", "8")),
        help="worker ids (--shape many) or slots of the one worker id (--shape one) [FED_LT_WORKERS]",
    )
    g.add_argument(
        "--shape",
        choices=["many", "one"],
        default=_env("FED_LT_SHAPE", "many"),
        help="many worker ids each owning part of the DAG, or one worker id with N slots [FED_LT_SHAPE]",
    )
    g.add_argument(
        "--via",
        default=_env("FED_LT_VIA", "zmq"),
        help="federation transports, comma separated: zmq, http (the gateway) [FED_LT_VIA]",
    )
    g.add_argument(
        "--task-ms",
        type=float,
        default=float(_env("FED_LT_TASK_MS", "0")),
        help="simulated run time of a task [FED_LT_TASK_MS]",
    )
    g.add_argument(
        "--wait-interval",
        type=float,
        default=float(_env("FED_LT_WAIT_INTERVAL", "0.05")),
        help="idle sleep when no work (Luigi's [worker] wait_interval, 1 s by default) [FED_LT_WAIT_INTERVAL]",
    )
    g.add_argument(
        "--timeout",
        type=float,
        default=float(_env("FED_LT_TIMEOUT", str(TIMEOUT_DEFAULT))),
        help="seconds per scheduler call before it is retried [FED_LT_TIMEOUT]",
    )

    g = run.add_argument_group("the servers")
    g.add_argument(
        "--router", default=_env("FED_ROUTER"), help="ZeroMQ address of a running federation [FED_ROUTER]"
    )
    g.add_argument(
        "--config",
        default=_env("FED_CONFIG"),
        help="its federation.toml (for placement: cross-shard edges) [FED_CONFIG]",
    )
    g.add_argument(
        "--shards",
        type=int,
        default=None,
        help="start a federation of N shards for the run (fedctl up, free ports, temp dir)",
    )
    g.add_argument(
        "--store",
        choices=["sqlite", "postgres"],
        default=_env("FED_STORE", "sqlite"),
        help="store of the started shards [FED_STORE]",
    )
    g.add_argument(
        "--pg-url",
        default=_env("FED_PG_URL", DEFAULT_PG_URL),
        help="Postgres for --store postgres (schemas lt_<hex>_s<i>, dropped afterwards) [FED_PG_URL]",
    )
    g.add_argument(
        "--against",
        choices=["luigid"],
        default=None,
        help="also run the same DAG against a stock luigid started for the run",
    )
    g.add_argument(
        "--retry-delay",
        type=float,
        default=float(_env("FED_LT_RETRY_DELAY", "1")),
        help="[scheduler] retry_delay of the started servers [FED_LT_RETRY_DELAY]",
    )
    g.add_argument(
        "--prune-every",
        type=float,
        default=1.0,
        help="with failures: call prune this often, so retries come after retry_delay",
    )
    g.add_argument("--keep", action="store_true", help="keep the started federation's data (and schemas)")
    g.add_argument(
        "--secure",
        action="store_true",
        help="secure the started federation (CURVE on every link, HTTP tokens; the workers use the worker "
        "key and token): what security costs [FED_LT_SECURE]",
    )

    g = run.add_argument_group("the run")
    g.add_argument(
        "--report",
        default=_env("FED_LT_REPORT"),
        help="append the results to this Parquet file [FED_LT_REPORT]",
    )
    g.add_argument("--label", default="", help="a label stored with the results")
    g.add_argument(
        "--stall-timeout", type=float, default=120.0, help="stop when no task completes for this long"
    )
    g.add_argument("--deadline", type=float, default=None, help="stop each target after this many seconds")
    g.add_argument(
        "--chaos",
        default=_env("FED_LT_CHAOS"),
        metavar="SPEC",
        help="inject faults while the load runs (with --shards N --store postgres: a standby per shard, "
        "stores in a throwaway Postgres cluster): SIGKILL and SIGSTOP/SIGCONT of shards, standbys "
        "and the router, Postgres restarts, at seeded random moments. SPEC: short (one of each kind), "
        "long (20), and/or key=value: faults=N,seed=N,kinds=kill-shard+kill-standby+kill-router+"
        "freeze-shard+freeze-router+restart-postgres,gap=LO-HI,freeze=LO-HI,session_timeout=S "
        "(docs/operations.md). Calls time out after 10 s unless --timeout is given [FED_LT_CHAOS]",
    )
    g.add_argument("--no-progress", action="store_true", help="no live progress bar (logs only)")
    run.set_defaults(func=cmd_run)

    cmp = lt_sub.add_parser(
        "compare",
        help="ratio tables between the runs of a report",
        description="Print every run of a Parquet report, federation/luigid ratios inside "
        "each run, and every run against a baseline run.",
    )
    cmp.add_argument("report", help="the Parquet file written by fedctl loadtest run --report")
    cmp.add_argument("--baseline", default=None, help="run id to compare against (default: the first run)")
    cmp.add_argument("--last", type=int, default=None, help="only the last N runs")
    cmp.set_defaults(func=cmd_compare)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _fail(msg: str) -> int:
    print(f"fedctl loadtest: error: {msg}", file=sys.stderr)
    return 2


def options_from_args(args: argparse.Namespace) -> Any:
    from loadtest.runner import RunOptions

    via = tuple(v.strip() for v in args.via.split(",") if v.strip())
    bad = [v for v in via if v not in ("zmq", "http")]
    if bad or not via:
        raise ValueError(f"--via takes zmq and/or http, got {args.via!r}")
    if args.router and args.shards:
        raise ValueError("give --router (a running federation) or --shards (start one), not both")
    if not (args.router or args.shards or args.against):
        raise ValueError("nothing to run against: give --router ADDR or --shards N, and/or --against luigid")
    if args.workers < 1:
        raise ValueError("--workers must be at least 1")
    units = tuple(u.strip() for u in args.units.split(",") if u.strip())
    return RunOptions(
        days=args.days,
        topics=args.topics,
        workers=args.workers,
        shape=args.shape,
        via=via,
        router=args.router,
        config=args.config,
        shards=args.shards,
        store=args.store,
        pg_url=args.pg_url,
        against_luigid=args.against == "luigid",
        units=units,
        fan_in=args.fan_in,
        fan_out=args.fan_out,
        priorities=args.priorities,
        fail_rate=args.fail_rate,
        perm_fail_rate=args.perm_fail_rate,
        resources=args.resources,
        seed=args.seed,
        start=args.start,
        task_ms=args.task_ms,
        wait_interval=args.wait_interval,
        wait_jitter=args.wait_interval,
        # under --chaos a call lost with a killed router is retried after 10 s, not the default 60
        timeout=10.0 if args.chaos and args.timeout == TIMEOUT_DEFAULT else args.timeout,
        retry_delay=args.retry_delay,
        prune_every=args.prune_every,
        stall_timeout=args.stall_timeout,
        deadline=args.deadline,
        label=args.label,
        keep=args.keep,
        secure=args.secure,
        chaos=args.chaos,
    )


def _console() -> Any:
    from rich.console import Console

    # tables are wide; when the output is a file or a pipe, do not fold them to 80 columns
    return Console() if sys.stdout.isatty() else Console(width=200)


def cmd_run(args: argparse.Namespace) -> int:
    from loadtest import report, runner

    console = _console()
    try:
        opts = options_from_args(args)
        opts.spec("check")  # validates the DAG parameters before anything starts
    except ValueError as e:
        return _fail(str(e))

    def log(msg: str) -> None:
        console.print(msg, markup=False, highlight=False, soft_wrap=True)

    try:
        if args.no_progress:
            outcome = runner.run(opts, None, log)
        else:
            with _LiveProgress(console) as live:
                outcome = runner.run(opts, live.update, log)
    except (ValueError, RuntimeError, FederationError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return 130

    rows = outcome.rows
    console.print(report.summary_table(rows, title=f"run {outcome.run_id}"))
    for line in report.placement_lines(rows) + report.ratio_lines(rows):
        log(line)
    for t in outcome.targets:
        log(f"checks {t.target}/{t.via}: {t.checks.summary()}")
        for kind, examples in t.checks.examples.items():
            for ex in examples:
                log(f"  {kind}: {ex}")
        for note in t.notes:
            log(f"  note: {note}")
    if args.report:
        total = report.append_rows(args.report, rows)
        log(f"report: {len(rows)} rows appended to {args.report} ({total} rows)")
    return 0 if outcome.ok else 1


class _LiveProgress:
    """A rich progress bar per target and phase, fed by the driver's ticks."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.bars: dict[tuple[str, str], Any] = {}
        self.last: dict[tuple[str, str], tuple[float, int]] = {}

    def __enter__(self) -> _LiveProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, label: str, phase: str, done: int, total: int) -> None:
        key = (label, phase)
        if key not in self.bars:
            self.bars[key] = self.progress.add_task(f"{label} {phase}", total=total, rate="")
            self.last[key] = (time.monotonic(), 0)
        now = time.monotonic()
        t0, n0 = self.last[key]
        fields: dict[str, Any] = {}  # rich's extra task fields
        if now - t0 >= 1.0:
            fields["rate"] = f"{(done - n0) / (now - t0):,.0f}/s"
            self.last[key] = (now, done)
        self.progress.update(self.bars[key], completed=done, total=total, **fields)


def cmd_compare(args: argparse.Namespace) -> int:
    from loadtest import report

    console = _console()
    try:
        df = report.read_rows(args.report)
    except (OSError, ValueError) as e:
        return _fail(f"cannot read {args.report}: {e}")
    if args.last:
        keep = df.drop_duplicates("run_id")["run_id"].tolist()[-args.last :]
        df = df[df["run_id"].isin(keep)]
    try:
        tables = report.compare_frames(df, args.baseline)
    except (ValueError, KeyError) as e:
        return _fail(str(e))
    for title, frame in tables:
        console.print(report.frame_table(title, frame))
    return 0
