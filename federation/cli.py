"""``fedctl``: the one command line, and the one composition root.

Each subcommand builds its objects through the same factories the tests use
(``shard.app.build_shard``, ...), imported lazily so that ``federation``
never depends on its siblings at import time.  A user mistake ends as one
clear line on stderr and a non-zero exit, never a traceback.  Every flag has
an environment variable (``FED_...``); the command line wins over it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from collections.abc import Sequence
from typing import Any

from federation import __version__
from federation.errors import ConfigError, FederationError

DEFAULT_ZMQ = "tcp://127.0.0.1:5555"


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(name, default)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def load_scheduler_config(path: str | None) -> Any:
    """``[scheduler]`` and ``[resources]`` of a TOML file as a SchedulerConfig."""
    from federation.config import SchedulerConfig

    if not path:
        return SchedulerConfig()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", source=path) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", source=path) from e
    section = dict(data.get("scheduler", {}))
    if "resources" in data:
        section["resources"] = data["resources"]
    return SchedulerConfig.from_mapping(section, source=path)


# -- fedctl shard serve ---------------------------------------------------------
def cmd_shard_serve(args: argparse.Namespace) -> int:
    from shard.app import build_shard

    _setup_logging(args.log_level)
    if not args.id:
        raise ConfigError("--id (or FED_SHARD_ID) is required")
    if not args.db:
        raise ConfigError("--db (or FED_DB) is required, e.g. sqlite:///./.federation/s0.db")
    config = load_scheduler_config(args.config)
    server = build_shard(args.id, args.bind, args.db, config=config, schema=args.schema,
                         prune_interval=args.prune_interval)
    server.install_signal_handlers()
    print(f"shard {args.id} listening on {server.endpoint} "
          f"({server.store.backend}: {server.store.location})", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
        server.store.close()
    return 0


# -- fedctl run ----------------------------------------------------------------
def cmd_run(args: argparse.Namespace, luigi_args: list[str]) -> int:
    """Mirror of the ``luigi`` command line, with the scheduler reached over ZeroMQ."""
    from federation.client import FederationSchedulerFactory

    if not luigi_args:
        raise ConfigError("nothing to run: give a task, e.g. fedctl run --module examples.daily daily.DailyBatch")
    factory = FederationSchedulerFactory(args.scheduler)
    return run_with_retcodes(luigi_args, factory)


def run_with_retcodes(argv: list[str], factory: Any) -> int:
    """``luigi.retcodes.run_with_retcodes`` with our scheduler factory; same exit codes as ``luigi``."""
    import luigi.execution_summary as summary
    import luigi.interface
    from luigi.cmdline_parser import CmdlineParser
    from luigi.retcodes import retcode

    with CmdlineParser.global_instance(argv):
        retcodes = retcode()
    try:
        worker = luigi.interface._run(argv, worker_scheduler_factory=factory).worker
    except luigi.interface.PidLockAlreadyTakenExit:
        return retcodes.already_running
    except SystemExit:
        raise
    except Exception:
        logging.getLogger("luigi-interface").exception("Uncaught exception in luigi")
        return retcodes.unhandled_exception
    with CmdlineParser.global_instance(argv):
        task_sets = summary._summary_dict(worker)
        root_task = summary._root_task(worker)
    non_empty = {k for k, v in task_sets.items() if v}
    code = max(
        c * (1 if cond else 0)
        for c, cond in (
            (retcodes.missing_data, "still_pending_ext" in non_empty),
            (retcodes.task_failed, "failed" in non_empty),
            (retcodes.already_running, "run_by_other_worker" in non_empty),
            (retcodes.scheduling_error, "scheduling_error" in non_empty),
            (retcodes.not_run, "not_run" in non_empty),
        )
    )
    if code == 0 and root_task not in task_sets["completed"] and root_task not in task_sets["already_done"]:
        return retcodes.not_run
    return code


# -- parser ----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedctl",
        description="luigi-federation: a sharded, durable federation of Luigi central schedulers.",
    )
    p.add_argument("--version", action="version", version=f"fedctl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    shard = sub.add_parser("shard", help="one scheduler shard")
    shard_sub = shard.add_subparsers(dest="shard_command", metavar="SUBCOMMAND")
    serve = shard_sub.add_parser(
        "serve", help="serve one shard on a ZeroMQ socket",
        description="Serve one scheduler shard: Luigi's scheduler semantics, every acknowledged change "
                    "committed to its store before the reply.",
    )
    serve.add_argument("--id", default=_env("FED_SHARD_ID"), help="shard id, e.g. s0 [FED_SHARD_ID]")
    serve.add_argument("--bind", default=_env("FED_BIND", "tcp://127.0.0.1:5556"),
                       help="ZeroMQ endpoint to bind (default tcp://127.0.0.1:5556) [FED_BIND]")
    serve.add_argument("--db", default=_env("FED_DB"),
                       help="store URL: sqlite:///path/shard.db or postgresql://user@host/db [FED_DB]")
    serve.add_argument("--schema", default=_env("FED_SCHEMA"),
                       help="Postgres schema (default fed_<id>) [FED_SCHEMA]")
    serve.add_argument("--config", default=_env("FED_CONFIG"),
                       help="TOML file with [scheduler] (Luigi's keys) and [resources] [FED_CONFIG]")
    serve.add_argument("--prune-interval", type=float, default=float(_env("FED_PRUNE_INTERVAL", "60")),
                       help="seconds between prunes, as luigid's 60 [FED_PRUNE_INTERVAL]")
    serve.add_argument("--log-level", default=_env("FED_LOG_LEVEL", "INFO"), help="[FED_LOG_LEVEL]")
    serve.set_defaults(func=cmd_shard_serve)

    run = sub.add_parser(
        "run", help="run Luigi tasks against a shard or router (like the luigi command)",
        description="Run Luigi tasks with the scheduler reached over ZeroMQ. Everything after the "
                    "fedctl options is Luigi's own command line: --module M TaskName --param value "
                    "--workers N ...",
    )
    run.add_argument("--scheduler", default=_env("FED_SCHEDULER", DEFAULT_ZMQ),
                     help=f"ZeroMQ endpoint of a router or shard (default {DEFAULT_ZMQ}) [FED_SCHEDULER]")
    run.set_defaults(func=cmd_run, passthrough=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "passthrough", False):
            return args.func(args, rest)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        return args.func(args)
    except FederationError as e:
        print(f"fedctl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
