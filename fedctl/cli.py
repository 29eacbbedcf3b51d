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
from pathlib import Path
from typing import Any

from federation import __version__
from federation.errors import ConfigError, FederationError

DEFAULT_ZMQ = "tcp://127.0.0.1:5555"
#: ``--pg-url`` of ``fedctl up``/``demo`` with ``--store postgres``: the local server's database ``test``
DEFAULT_PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(name, default)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # luigi's import-time chatter ("Loaded []") is not news in a server's log
    logging.getLogger("luigi-interface").setLevel(logging.WARNING)


# -- fedctl shard serve ---------------------------------------------------------
def _has_shards(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return "shards" in tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return False  # resolve_config reports the problem with the file name


def _server_config(path: str | None, *, federation: bool = True, overrides: Any = None) -> Any:
    """What a server runs with: command line > FED_* > federation.toml > Luigi's luigi.cfg > defaults
    (``federation.config.resolve_config``); each setting it does not honour is one warning."""
    from federation.config import resolve_config

    resolved = resolve_config(path, overrides=overrides, federation=federation)
    for warning in resolved.warnings:
        logging.getLogger("fedctl.config").warning("%s", warning)
    return resolved


def cmd_shard_serve(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    if not args.id:
        raise ConfigError("--id (or FED_SHARD_ID) is required")
    federated = bool(args.config and _has_shards(args.config))
    # federation.toml (or a TOML with just [scheduler]/[resources]) over Luigi's own configuration
    resolved = _server_config(args.config, federation=federated)
    if federated:
        # a member of a federation: endpoint, store, [scheduler] and placement from federation.toml
        from shard.app import build_federated_shard

        if args.db or args.schema:
            raise ConfigError(
                "--db/--schema cannot be combined with a federation.toml; set the shard's store there",
                source=args.config,
            )
        from fedctl.secure import refuse_open_binds

        fed = resolved.federation
        refuse_open_binds(
            [(f"shard {args.id} endpoint", args.bind or fed.shard(args.id).endpoint)],
            secured=fed.security is not None,
            insecure=args.insecure,
        )
        store = None
        bind = args.bind
        if args.standby:
            takeover = _wait_as_standby(fed, args)
            if takeover is None:
                return 0
            store, bind = takeover.store, args.bind or fed.shard(args.id).endpoint
        server = build_federated_shard(
            fed, args.id, bind=bind, prune_interval=args.prune_interval, store=store
        )
    elif args.standby:
        raise ConfigError(
            "--standby needs --config: the shard's [[shards]] entry names its store and the endpoints "
            "(endpoint, standbys) the router looks for it on"
        )
    else:
        from fedctl.secure import refuse_open_binds
        from shard.app import build_shard

        if not args.db:
            raise ConfigError("--db (or FED_DB) is required, e.g. sqlite:///./.federation/s0.db")
        refuse_open_binds(
            [("shard endpoint (--bind)", args.bind or "tcp://127.0.0.1:5556")],
            secured=False,
            insecure=args.insecure,
        )
        server = build_shard(
            args.id,
            args.bind or "tcp://127.0.0.1:5556",
            args.db,
            config=resolved.scheduler,
            schema=args.schema,
            prune_interval=args.prune_interval,
        )
    server.install_signal_handlers()
    print(
        f"shard {args.id} listening on {server.endpoint} ({server.store.backend}: {server.store.location}"
        + (", CURVE" if server.curve is not None else "")
        + ")",
        flush=True,
    )
    if args.metrics:
        host, port = server.metrics.serve(args.metrics)
        print(f"shard {args.id} metrics on http://{host}:{port}/metrics", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
        server.store.close()
    if server.lost_ownership is not None:
        if args.standby:
            # not a user mistake: another process owns the shard now; restarted, this one is its standby
            print(f"fedctl: {server.lost_ownership}", file=sys.stderr, flush=True)
            return LOST_OWNERSHIP
        raise server.lost_ownership
    return 0


#: exit status of a standby-mode shard that was fenced out (its supervisor restarts it as a standby)
LOST_OWNERSHIP = 3


def _wait_as_standby(config: Any, args: argparse.Namespace) -> Any:
    """``--standby``: check the bind is one of the shard's endpoints, then wait until this process
    owns the shard (None when stopped by a signal meanwhile)."""
    import signal
    import threading

    from shard.standby import wait_for_ownership

    spec = config.shard(args.id)
    bind = args.bind or spec.endpoint
    if bind not in spec.endpoints:
        raise ConfigError(
            f"--bind {bind}: not an endpoint of shard {spec.id} ({', '.join(spec.endpoints)}); the router "
            "would never find this standby: add it to the shard's standbys",
            source=config.source,
        )
    if spec.backend != "postgres":
        raise ConfigError(
            f"shard {spec.id}: --standby needs a Postgres store (a standby waits on the shard's lock in "
            "Postgres); an SQLite shard is restarted in place",
            source=config.source,
        )
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    print(f"shard {spec.id} standby on {bind}: waiting for {spec.location} to be free", flush=True)
    takeover = wait_for_ownership(
        spec.store,
        spec.id,
        schema=spec.schema,
        session_timeout=spec.owner_session_timeout,
        stop=stop,
        on_wait=lambda holder: print(f"shard {spec.id} standby: the owner is {holder}", flush=True),
    )
    if takeover is not None and takeover.last_holder is None:
        print(f"shard {spec.id}: nobody served it; this process owns it now", flush=True)
    elif takeover is not None:
        freed = (
            f" ({takeover.freed * 1000:.0f} ms after the owner let go)" if takeover.freed is not None else ""
        )
        print(
            f"shard {spec.id} standby: took the shard over after waiting {takeover.waited:.1f} s{freed}",
            flush=True,
        )
    return takeover


# -- fedctl run ----------------------------------------------------------------
def cmd_run(args: argparse.Namespace, luigi_args: list[str]) -> int:
    """Mirror of the ``luigi`` command line, with the scheduler reached over ZeroMQ."""
    from federation.client import FederationSchedulerFactory

    if not luigi_args:
        raise ConfigError(
            "nothing to run: give a task, e.g. fedctl run --module examples.daily daily.DailyBatch"
        )
    from fedctl.secure import client_curve

    factory = FederationSchedulerFactory(args.scheduler, curve=client_curve(args.key, args.server_key))
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


# -- fedctl router serve / up / demo / status --------------------------------------
def cmd_router_serve(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    cfg = _server_config(args.config, overrides={"router.zmq": args.zmq, "router.http": args.http}).federation
    from fedctl.secure import refuse_open_binds
    from router.server import serve

    refuse_open_binds(
        [("router ZeroMQ endpoint", cfg.router.zmq), ("router HTTP address", cfg.router.http or "")]
        + [("router metrics address (--metrics)", args.metrics or "")],
        secured=cfg.security is not None,
        insecure=args.insecure,
    )
    watchdog = None
    if args.leader_lock and not args.standby:
        raise ConfigError("--leader-lock is the lock of --standby routers: add --standby (or drop it)")
    if args.standby:
        from fedctl.routerha import lead_or_wait

        watchdog = lead_or_wait(cfg, args)
        if watchdog is None:
            return 0

    def ready(router: Any) -> None:
        if watchdog is not None:
            router.lease = watchdog.valid
            watchdog.start()
        if args.metrics:
            from prometheus_client import start_http_server

            host, _, port = args.metrics.rpartition(":")
            server, _thread = start_http_server(
                int(port), addr=host or "127.0.0.1", registry=router.metrics.registry
            )
            bound_host, bound_port = server.server_address[:2]
            shown = bound_host.decode() if isinstance(bound_host, bytes) else bound_host
            print(f"router metrics on http://{shown}:{bound_port}/metrics", flush=True)

    return serve(cfg, ready=ready) or 0


# -- fedctl config show -----------------------------------------------------------
def cmd_config_show(args: argparse.Namespace) -> int:
    """The settings a server started here would run with, and where each one came from."""
    import json

    from federation.config import ENV_PREFIX, LAYERS, mask_secrets, resolve_config

    path = args.config or os.environ.get(ENV_PREFIX + "CONFIG") or None
    federated = bool(path and _has_shards(path))
    resolved = resolve_config(path, federation=federated)
    luigi = resolved.luigi
    shards = []
    if resolved.federation is not None:
        cfg = resolved.federation
        shards = [
            {
                "id": s.id,
                "group": cfg.group_of_shard(s.id),
                "endpoint": s.endpoint,
                "store": mask_secrets(s.store),
                "schema": s.schema,
            }
            for s in cfg.shards
        ]
    if args.json:
        doc = {
            "config": path,
            "federation": federated,
            "precedence": list(LAYERS),
            "luigi": None
            if luigi is None
            else {"parser": luigi.parser, "search_path": list(luigi.search_path), "files": list(luigi.files)},
            "settings": [
                {"key": k, "value": v, "layer": src.layer, "from": src.where}
                for k, v, src in resolved.settings()
            ],
            "shards": shards,
            "warnings": list(resolved.warnings),
        }
        print(json.dumps(doc, indent=2))
        return 0
    out = [
        f"federation.toml   {path or '(none)'}"
        + ("" if federated else "   (no [[shards]]: a standalone shard's [scheduler] and [resources])"),
        "precedence        " + " > ".join(LAYERS),
    ]
    if luigi is None:
        out.append("Luigi config      not read (luigi_config = false)")
    else:
        out.append(f"Luigi config      {luigi.parser} parser; read: {', '.join(luigi.files) or 'no file'}")
        out.append(f"  search path     {', '.join(luigi.search_path)}")
    rows = [("KEY", "VALUE", "FROM")]
    for key, value, src in resolved.settings():
        shown = "(none)" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        rows.append((key, mask_secrets(shown), str(src)))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    out.append("")
    out += [f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}".rstrip() for r in rows]
    if shards:
        out.append("")
        out.append("shards")
        for sh in shards:
            schema = f" schema {sh['schema']}" if sh["schema"] else ""
            out.append(f"  {sh['id']:<8} {sh['group']:<10} {sh['endpoint']:<24} {sh['store']}{schema}")
    if resolved.warnings:
        out.append("")
        out.append("warnings")
        out += [f"  {w}" for w in resolved.warnings]
    print("\n".join(out))
    return 0


def local_federation(
    n_shards: int,
    data_dir: Path,
    zmq: str,
    http: str | None,
    store: str = "sqlite",
    pg_url: str | None = None,
    schema_prefix: str = "fed_",
    secure: bool = False,
) -> Path:
    """Write ``<data_dir>/federation.toml`` for a local federation and return its path.

    ``secure``: keys and tokens under ``<data_dir>/keys`` (:func:`fedctl.secure.provision`) and the
    ``[security]``/``[[principals]]`` that name them."""
    from federation.config import FederationConfig

    if n_shards < 1:
        raise ConfigError("--shards must be at least 1")
    shards = []
    for i in range(n_shards):
        sid = f"s{i}"
        shard: dict[str, Any] = {"id": sid, "endpoint": f"tcp://127.0.0.1:{_free_port()}"}
        if store == "sqlite":
            shard["store"] = f"sqlite:///{(data_dir / f'{sid}.db').resolve()}"
        else:
            shard["store"], shard["schema"] = pg_url, f"{schema_prefix}{sid}"
        shards.append(shard)
    mapping: dict[str, Any] = {"router": {"zmq": zmq, "http": http or ""}, "shards": shards}
    if secure:
        from fedctl.secure import provision

        creds = provision(data_dir)
        mapping["security"], mapping["principals"] = creds.security, creds.principals
    cfg = FederationConfig.from_mapping(mapping, source="fedctl up")
    path = data_dir / "federation.toml"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a store URL may hold a password
        os.close(fd)
        tmp.chmod(0o600)
        tmp.write_text(cfg.to_toml())
        tmp.replace(path)
    except OSError as e:
        raise ConfigError(f"--data-dir {data_dir}: cannot write {path.name}: {e.strerror or e}") from None
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def federation_children(config_path: Path, *, insecure: bool = False, routers: int = 1) -> list[Any]:
    from fedctl.secure import supervisor_curves
    from fedctl.supervisor import Child
    from federation.config import load_federation_config

    cfg = load_federation_config(str(config_path))
    extra = ["--insecure"] if insecure else []
    to_shards, to_router = supervisor_curves(cfg.security)
    children = []
    for s in cfg.shards:
        argv = ["shard", "serve", "--config", str(config_path), "--id", s.id, *extra]
        # with standbys every process of the shard waits for the lock rather than failing on it: a
        # killed owner restarted by the supervisor becomes the standby of the one that took over
        children.append(
            Child(
                f"shard-{s.id}",
                argv + (["--standby"] if s.standbys else []),
                endpoint=s.endpoint,
                curve=to_shards,
            )
        )
        children += [
            # no endpoint: a standby answers nothing until it owns the shard (started after the owners)
            Child(f"shard-{s.id}-standby{k}", [*argv, "--standby", "--bind", ep])
            for k, ep in enumerate(s.standbys, 1)
        ]
    # with --routers N every router is a --standby on the same ports: the first leads, the others
    # bind once it is gone (a killed leader, restarted, waits as a standby)
    router_argv = ["router", "serve", "--config", str(config_path), *extra]
    router_argv += ["--standby"] if routers > 1 else []
    children.append(
        Child(
            "router", router_argv, endpoint=cfg.router.zmq, ready_method="federation_health", curve=to_router
        )
    )
    children += [Child(f"router-standby{k}", router_argv) for k in range(1, routers)]
    return children


def _up_config(args: argparse.Namespace) -> tuple[Path, Any]:
    """Check every flag and port, take the data directory's lock, then (only then) write federation.toml
    (resolved with FED_* and Luigi's configuration for the children: :func:`_resolved_for_children`).

    Returns the config path and the held :class:`~fedctl.supervisor.DataDirLock`; nothing is
    written when a check fails, and a second ``fedctl up`` on a running data directory changes nothing.
    """
    from fedctl.supervisor import DataDirLock, check_free
    from federation.config import load_federation_config

    data_dir = Path(args.data_dir)
    if not args.data_dir or "\0" in args.data_dir:
        raise ConfigError(f"--data-dir {args.data_dir!r} is not a usable directory name")
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir}: not a directory")
    if not args.config and args.shards < 1:
        raise ConfigError("--shards must be at least 1")
    from fedctl.secure import refuse_open_binds

    if args.config and args.secure:
        raise ConfigError(
            "--secure generates the federation's keys and config; with --config, put [security] in it"
        )
    lock = DataDirLock(data_dir).acquire(create=False)  # fails here if a federation runs from it
    try:
        if args.config:
            cfg = load_federation_config(args.config)
            endpoints = [("router ZeroMQ endpoint", cfg.router.zmq)]
            endpoints += [("router HTTP address", cfg.router.http)] if cfg.router.http else []
            endpoints += [(f"shard {s.id} endpoint", ep) for s in cfg.shards for ep in s.endpoints]
            secured = cfg.security is not None
        else:
            endpoints = [("router ZeroMQ endpoint (--zmq)", args.zmq)]
            endpoints += [("router HTTP address (--http)", args.http)] if args.http else []
            secured = args.secure
        refuse_open_binds(endpoints, secured=secured, insecure=args.insecure)
        check_free(endpoints)
        lock.acquire()
        if args.config:
            return _resolved_for_children(Path(args.config), data_dir / "federation.resolved.toml"), lock
        path = local_federation(
            args.shards,
            data_dir,
            args.zmq,
            args.http or None,
            store=args.store,
            pg_url=args.pg_url,
            schema_prefix=args.schema_prefix,
            secure=args.secure,
        )
        return _resolved_for_children(path, path), lock
    except BaseException:
        lock.release()
        raise


def _resolved_for_children(config_path: Path, out: Path) -> Path:
    """Resolve federation.toml, FED_* and Luigi's luigi.cfg once, here, and hand the children the
    result in ``out`` (``luigi_config = false``): every shard, the router and every restart of one
    then run with the same values, whatever happens to luigi.cfg meanwhile."""
    from datetime import UTC, datetime

    from federation.config import resolve_config

    resolved = resolve_config(str(config_path))
    for warning in resolved.warnings:
        print(f"fedctl: warning: {warning}", file=sys.stderr, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"written by fedctl up at {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} from {config_path}, the FED_* "
        "environment and Luigi's configuration\n"
        f"({', '.join(resolved.luigi.files) if resolved.luigi and resolved.luigi.files else 'no luigi.cfg'}): "
        "what its children run with (fedctl config show explains each value)"
    )
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(resolved.to_toml(header))
    tmp.chmod(0o600)  # store URLs may carry a password
    tmp.replace(out)
    return out


def _banner(config_path: Path, *, stays_up: bool = True) -> str:
    from federation.config import load_federation_config, mask_secrets

    cfg = load_federation_config(str(config_path))
    # the tui is only advertised for a federation that will still be there to watch
    tui = f" | fedctl tui --router {cfg.router.zmq}" if stays_up else ""
    lines = [
        f"luigi-federation: {len(cfg.shards)} shard(s) and a router  (config {config_path})",
        f"  ZeroMQ  {cfg.router.zmq}   fedctl run --scheduler {cfg.router.zmq} ...{tui}",
    ]
    if cfg.router.http:
        lines.append(
            f"  HTTP    http://{cfg.router.http}   luigi.cfg [core] scheduler_url, web visualiser at /"
        )
    for s in cfg.shards:
        lines.append(
            f"  shard {s.id:<6} {s.endpoint:<24} {mask_secrets(s.store)}"
            + (f" schema {s.schema}" if s.schema else "")
            + (f" standbys {', '.join(s.standbys)}" if s.standbys else "")
        )
    if cfg.security is not None:
        from fedctl.secure import banner_lines

        lines += banner_lines(cfg, stays_up=stays_up)
    return "\n".join(lines)


def cmd_up(args: argparse.Namespace) -> int:
    from fedctl.supervisor import Supervisor

    if args.routers < 1:
        raise ConfigError(f"--routers {args.routers}: at least 1")
    config_path, lock = _up_config(args)
    try:
        sup = Supervisor(
            federation_children(config_path, insecure=args.insecure, routers=args.routers),
            Path(args.data_dir) / "logs",
        )
        sup.start()
        print(_banner(config_path), flush=True)
        print(f"  logs    {Path(args.data_dir) / 'logs'}\nCtrl-C stops everything.", flush=True)
        sup.run_forever()
    finally:
        lock.release()
    print("fedctl up: stopped", flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import json

    from fedctl.secure import client_curve
    from federation.errors import RequestTimeout, UnknownMethodError
    from federation.transport import ZmqClient

    client = ZmqClient(args.router, timeout=args.timeout, curve=client_curve(args.key, args.server_key))
    try:
        health = client.call("federation_health", {})
    except RequestTimeout as e:
        if args.key:
            raise
        raise ConfigError(f"{e} (a secured federation answers only known keys: --key / FED_KEY)") from None
    except UnknownMethodError:
        # something answers, but not a router: most likely one shard served on its own
        try:
            info = client.call("shard_info", {})
        except FederationError:
            info = None
        what = f"a standalone shard ({info.get('shard_id')})" if isinstance(info, dict) else "not a router"
        raise ConfigError(
            f"{args.router} is {what}: fedctl status needs a router's endpoint (fedctl up prints it; "
            f"default {DEFAULT_ZMQ})"
        ) from None
    finally:
        client.close()
    if args.json:
        print(json.dumps(health, indent=2, sort_keys=True))
    else:
        print(format_health(health))
    return 0 if all(s["up"] for s in health["shards"]) else 1


STATUSES = ("PENDING", "RUNNING", "DONE", "FAILED", "DISABLED")


def format_health(health: dict[str, Any]) -> str:
    rows = [("shard", "group", "up", "ms", *[st.lower() for st in STATUSES], "workers", "store")]
    for s in health["shards"]:
        counts = s.get("counts") or {}
        rows.append(
            (
                s["shard_id"],
                s["group"],
                "up" if s["up"] else "DOWN",
                f"{s['latency_ms']:.1f}" if s.get("latency_ms") is not None else "-",
                *[str(counts.get(st, 0)) for st in STATUSES],
                str(s.get("workers", 0)),
                f"{s.get('backend') or '-'} {s.get('location') or ''}".strip()
                if s["up"]
                else (s.get("error") or "")[:60],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = [
        f"router {health['router']['zmq']}"
        + (f"  http {health['router']['http']}" if health["router"].get("http") else "")
    ]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(out)


# -- fedctl history export ------------------------------------------------------
def _when(value: str | None, flag: str) -> float | None:
    """Epoch seconds from ``--since``/``--until``: a number, or an ISO 8601 date/time (UTC if no zone)."""
    if value is None or value == "":
        return None
    from datetime import UTC, datetime

    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{flag} {value!r}: give epoch seconds or an ISO 8601 date/time (2026-11-25T06:00)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _default_config(command: str) -> str:
    """``<data dir>/federation.toml`` of ``fedctl up`` (``$FED_DATA_DIR`` or ./.federation) when no --config is given."""
    data_dir = Path(os.environ.get("FED_DATA_DIR") or "./.federation")
    path = data_dir / "federation.toml"
    if path.is_file():
        return str(path)
    raise ConfigError(
        f"{command} needs the federation's config: pass --config federation.toml (or set FED_CONFIG); "
        f"no {path} from fedctl up here"
    )


def cmd_history_export(args: argparse.Namespace) -> int:
    from federation.config import load_federation_config
    from shard.history import StoreRef, export_history, read_history

    config = args.config or _default_config("fedctl history export")
    cfg = load_federation_config(config)
    wanted = args.shard or list(cfg.shard_ids)
    unknown = [s for s in wanted if s not in cfg.shard_ids]
    if unknown:
        raise ConfigError(f"no shard {', '.join(unknown)} in {config} (shards: {', '.join(cfg.shard_ids)})")
    refs = [StoreRef(sid, cfg.shard(sid).store, cfg.shard(sid).schema) for sid in wanted]
    result = export_history(
        refs,
        args.out,
        since=_when(args.since, "--since"),
        until=_when(args.until, "--until"),
        namespaces=args.namespace or (),
    )
    print(f"{result.rows} events from {len(refs)} shard(s) written to {result.path}")
    if result.rows:
        df = read_history(result.path)
        table = df.pivot_table(
            index=df["namespace"].fillna("(pruned)"),
            columns="status",
            values="event_id",
            aggfunc="count",
            fill_value=0,
        )
        print(table.to_string())
    return 0


def cmd_history_prune(args: argparse.Namespace) -> int:
    from federation.transport import ZmqClient

    before = _when(args.before, "--before")
    if before is None:
        raise ConfigError("--before is required: epoch seconds or an ISO 8601 date/time")
    from fedctl.secure import client_curve

    client = ZmqClient(args.router, timeout=args.timeout, curve=client_curve(args.key, args.server_key))
    per_shard: dict[str, int] = {}
    try:
        everyone = {s["shard_id"] for s in client.call("federation_health", {})["shards"]}
        answered = set(everyone)
        more = True
        while more:  # each call deletes a bounded slice per shard, so no shard stalls for long
            result = client.call("prune_history", {"before": before})
            answered &= set(result["shards"])
            for sid, n in result["shards"].items():
                per_shard[sid] = per_shard.get(sid, 0) + n
            more = bool(result.get("more"))
    finally:
        client.close()
    for sid, n in sorted(per_shard.items()):
        print(f"{sid}: {n} events deleted")
    missed = sorted(everyone - answered)
    print(
        f"{sum(per_shard.values())} history events before {args.before} deleted on {len(answered)} shard(s)"
    )
    if missed:
        print(f"not pruned (unavailable): {', '.join(missed)}; run again when they are up", file=sys.stderr)
        return 1
    return 0


# -- fedctl deploy render --------------------------------------------------------
def cmd_deploy_render(args: argparse.Namespace) -> int:
    from fedctl.deploy import RenderOptions, render
    from federation.config import load_federation_config

    cfg = load_federation_config(args.config)
    targets = tuple(t for arg in (args.target or ["systemd,kubernetes"]) for t in arg.split(",") if t)
    opts = RenderOptions(
        targets=targets,
        groups=tuple(args.group or ()),
        fedctl=args.fedctl,
        config_path=args.config_path,
        user=args.user,
        state_dir=args.state_dir,
        image=args.image,
        k8s_namespace=args.k8s_namespace,
        insecure=args.insecure,
    )
    files = render(cfg, opts)  # every check first: nothing is written on a bad config or flag
    out = Path(args.out)
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A local federation running a week of the daily pipeline with real Luigi workers."""
    import datetime as dt

    from rich.console import Console

    console = Console()
    data_dir = Path(args.data_dir)
    if args.days < 1 or args.workers < 1:
        raise ConfigError("--days and --workers must be at least 1")
    try:
        start = dt.date.fromisoformat(args.start)
    except ValueError:
        raise ConfigError(f"--start {args.start!r}: give a date as YYYY-MM-DD") from None
    config_path, lock = _up_config(args)
    try:
        return _demo(args, console, data_dir, config_path, start)
    finally:
        lock.release()


def _demo(args: argparse.Namespace, console: Any, data_dir: Path, config_path: Path, start: Any) -> int:
    import threading

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fedctl.secure import supervisor_curves
    from fedctl.supervisor import Supervisor
    from federation.client import FederationSchedulerFactory
    from federation.config import load_federation_config
    from federation.transport import ZmqClient

    sup = Supervisor(federation_children(config_path, insecure=args.insecure), data_dir / "logs")
    _, curve = supervisor_curves(load_federation_config(str(config_path)).security)
    console.print(f"starting a local federation under {data_dir} ...")
    sup.start()
    console.print(_banner(config_path, stays_up=args.keep), markup=False, soft_wrap=True, highlight=False)
    os.environ.setdefault("FED_DAILY_ROOT", str((data_dir / "data").resolve()))
    import luigi

    from examples.daily import DEFAULT_TOPICS, RangeBatch

    topics = list(DEFAULT_TOPICS)
    # per day: the DailyBatch, and Extract/Transform/Enrich/Load per topic, but no Enrich for an empty topic
    per_day = 1 + 4 * len(topics) - sum(1 for t in topics if t == "empty")
    expected = 1 + args.days * per_day
    zmq_endpoint = _router_zmq(config_path)
    client = ZmqClient(zmq_endpoint, timeout=5, curve=curve)
    done = threading.Event()
    failures: list[FederationError] = []
    ok = False
    try:
        with Progress(
            TextColumn("daily pipeline"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("run", total=expected, detail="")

            def watch() -> None:
                # Luigi's worker must own the main thread (it installs signal handlers), so the
                # progress is polled from here, through the router like any other client.
                watcher = ZmqClient(zmq_endpoint, timeout=5, curve=curve)
                try:
                    while not done.wait(0.5):
                        try:
                            sup.check()
                        except FederationError as e:  # a child refused to run: everything is stopped
                            failures.append(e)
                            return
                        try:
                            totals = _sum_counts(watcher.call("federation_health", {}))
                        except FederationError:
                            continue
                        progress.update(bar, completed=totals.get("DONE", 0), detail=_progress_detail(totals))
                finally:
                    watcher.close()

            watcher_thread = threading.Thread(target=watch, daemon=True)
            watcher_thread.start()
            try:
                ok = luigi.build(
                    [RangeBatch(start=start, days=args.days, topics=topics)],
                    worker_scheduler_factory=FederationSchedulerFactory(zmq_endpoint, curve=curve),
                    workers=args.workers,
                    log_level="WARNING",
                )
            finally:
                done.set()
                watcher_thread.join(5)
            if failures:
                raise failures[0]
            # the last line of the bar is the final state, not the last poll's
            health = client.call("federation_health", {})
            totals = _sum_counts(health)
            progress.update(bar, completed=totals.get("DONE", 0), detail=_progress_detail(totals))
        console.print(format_health(health), markup=False, soft_wrap=True, highlight=False)
        console.print(
            f"pipeline {'finished' if ok else 'did NOT finish'}: "
            f"{_sum_counts(health).get('DONE', 0)} tasks DONE across {len(health['shards'])} shards; "
            f"outputs under {os.environ['FED_DAILY_ROOT']}"
        )
        if args.keep:
            console.print(f"watch it live: fedctl tui --router {zmq_endpoint}")
            console.print("--keep: the federation keeps running; Ctrl-C stops it.")
            sup.run_forever()
        else:
            console.print(
                f"the federation is stopped (its state stays in {data_dir}); "
                "fedctl demo --keep leaves it running to watch"
            )
    finally:
        client.close()
        sup.stop()
    return 0 if ok else 1


def _progress_detail(totals: dict[str, int]) -> str:
    return (
        f"running {totals.get('RUNNING', 0)} · pending {totals.get('PENDING', 0)}"
        f" · failed {totals.get('FAILED', 0)}"
    )


def _router_zmq(config_path: Path) -> str:
    from federation.config import load_federation_config

    return load_federation_config(str(config_path)).router.zmq


def _sum_counts(health: dict[str, Any]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for s in health.get("shards", []):
        for st, n in (s.get("counts") or {}).items():
            totals[st] = totals.get(st, 0) + n
    return totals


def cmd_call(args: argparse.Namespace) -> int:
    """One request to a router (or shard), the answer as JSON: what the TUI's actions do, by hand."""
    import json

    from federation.transport import ZmqClient

    kwargs: dict[str, Any] = {}
    for item in args.args:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"{item!r}: give arguments as KEY=VALUE (VALUE is JSON, or else a string)")
        try:
            kwargs[key] = json.loads(value)
        except ValueError:
            kwargs[key] = value
    from fedctl.secure import client_curve

    client = ZmqClient(args.router, timeout=args.timeout, curve=client_curve(args.key, args.server_key))
    try:
        answer = client.call(args.method, kwargs)
    finally:
        client.close()
    print(json.dumps(answer, indent=2, sort_keys=True, default=str))
    return 0


def cmd_tui(args: argparse.Namespace) -> int:
    from federation.config import read_toml
    from tui.app import run as run_tui

    config = args.config
    if config is None and not args.replay and Path(".federation/federation.toml").is_file():
        config = ".federation/federation.toml"  # what fedctl up wrote here: its stores, logs and router
    router = args.router
    if router is None and config:
        own = read_toml(config).get("router")
        router = own.get("zmq") if isinstance(own, dict) and isinstance(own.get("zmq"), str) else None
    from fedctl.secure import client_curve

    curve = client_curve(args.key, args.server_key)
    return run_tui(
        router or DEFAULT_ZMQ,
        args.refresh,
        args.readonly,
        config_path=config,
        timeout=args.timeout,
        replay=args.replay,
        record=args.record,
        curve=curve,
    )


# -- parser ----------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """fedctl's parsers: no prefix matching (``--shard`` is not ``--shards``), errors as one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        print(f"fedctl: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def env_name(action: argparse.Action) -> str | None:
    """The environment variable of a flag: the ``[FED_...]`` its help names, else ``FED_<FLAG>``."""
    import re

    longs = [o for o in action.option_strings if o.startswith("--")]
    if not longs or isinstance(action, argparse._HelpAction | argparse._VersionAction):
        return None
    named = re.search(r"\[(FED_[A-Z0-9_]+)\]", action.help or "")
    return named.group(1) if named else "FED_" + longs[0][2:].upper().replace("-", "_")


def wire_env(parser: argparse.ArgumentParser, environ: Any = os.environ) -> None:
    """Give every flag of ``parser`` and its subcommands an environment variable, shown in ``--help``.

    Precedence: the command line, then the variable, then the default.  A variable's value goes
    through the flag's own ``type`` (argparse converts string defaults), so a bad value is a
    one-line error naming the flag; switches take 1/true/yes/on or 0/false/no/off, repeatable
    flags a comma-separated list.
    """
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                wire_env(sub, environ)
            continue
        name = env_name(action)
        if name is None:
            continue
        if f"[{name}]" not in (action.help or ""):
            action.help = f"{action.help or ''} [{name}]".strip()
        value = environ.get(name)
        if value is None:
            continue
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            if value.lower() not in _TRUE + _FALSE:
                parser.error(f"{name}={value!r} for {flag}: use 1/true/yes/on or 0/false/no/off")
            on = value.lower() in _TRUE
            action.default = on if isinstance(action, argparse._StoreTrueAction) else not on
        elif isinstance(action, argparse._AppendAction):
            items = [v.strip() for v in value.split(",") if v.strip()]
            convert: Any = action.type or str
            action.default = [convert(v) for v in items] or None
        else:
            if action.choices is not None and value not in action.choices:
                parser.error(
                    f"{name}={value!r} for {flag}: choose from {', '.join(map(str, action.choices))}"
                )
            action.default = value
        action.required = False


def key_options(cmd: argparse.ArgumentParser) -> None:
    """``--key``/``--server-key``: the CURVE credentials of a client of a secured federation."""
    cmd.add_argument(
        "--key",
        default=None,
        help="this client's key file on a secured federation (NAME.key_secret; fedctl up --secure writes "
        "them under DATA_DIR/keys) [FED_KEY]",
    )
    cmd.add_argument(
        "--server-key",
        default=None,
        help="the server's public key file (default: router.key next to --key) [FED_SERVER_KEY]",
    )


def insecure_option(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--insecure",
        action="store_true",
        help="serve an address other hosts can reach without [security] (refused otherwise) [FED_INSECURE]",
    )


def cmd_keys_new(args: argparse.Namespace) -> int:
    from federation.keys import new_keypair

    public, secret = new_keypair(args.dir, args.name)
    print(f"public key  {public}   (name it in federation.toml: [[principals]] key, or [security])")
    print(f"secret key  {secret}   (0600; give it to the client only: --key / FED_KEY)")
    return 0


def cmd_keys_token(args: argparse.Namespace) -> int:
    import secrets

    from federation.auth import hash_token

    token = secrets.token_urlsafe(32)
    print(f"token         {token}")
    print(
        f'token_sha256 = "{hash_token(token)}"   (federation.toml [[principals]]; the token itself is not kept)'
    )
    return 0


LOADTEST_HELP = "thousands of daily partitions against a federation (and luigid), with a report"


def build_parser(*, with_loadtest: bool = True) -> argparse.ArgumentParser:
    p = Parser(
        prog="fedctl",
        description="luigi-federation: a sharded, durable federation of Luigi central schedulers.",
    )
    p.add_argument("--version", action="version", version=f"fedctl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    shard = sub.add_parser("shard", help="one scheduler shard")
    shard_sub = shard.add_subparsers(dest="shard_command", metavar="SUBCOMMAND")
    serve = shard_sub.add_parser(
        "serve",
        help="serve one shard on a ZeroMQ socket",
        description="Serve one scheduler shard: Luigi's scheduler semantics, every acknowledged change "
        "committed to its store before the reply. Luigi's own luigi.cfg/luigi.toml [scheduler] and "
        "[resources] apply under --config and FED_* (fedctl config show).",
    )
    serve.add_argument("--id", default=_env("FED_SHARD_ID"), help="shard id, e.g. s0 [FED_SHARD_ID]")
    serve.add_argument(
        "--bind",
        default=_env("FED_BIND"),
        help="ZeroMQ endpoint to bind (default: the shard's endpoint in --config, "
        "else tcp://127.0.0.1:5556) [FED_BIND]",
    )
    serve.add_argument(
        "--db",
        default=_env("FED_DB"),
        help="store URL: sqlite:///path/shard.db or postgresql://user@host/db [FED_DB]",
    )
    serve.add_argument(
        "--schema", default=_env("FED_SCHEMA"), help="Postgres schema (default fed_<id>) [FED_SCHEMA]"
    )
    serve.add_argument(
        "--config",
        default=_env("FED_CONFIG"),
        help="federation.toml (the shard's endpoint, store and [scheduler] are read from it), "
        "or a TOML file with just [scheduler] (Luigi's keys) and [resources] [FED_CONFIG]",
    )
    serve.add_argument(
        "--prune-interval",
        type=float,
        default=float(_env("FED_PRUNE_INTERVAL", "60")),
        help="seconds between prunes, as luigid's 60 [FED_PRUNE_INTERVAL]",
    )
    serve.add_argument(
        "--metrics",
        default=_env("FED_METRICS"),
        help="HOST:PORT for Prometheus /metrics (default: off) [FED_METRICS]",
    )
    serve.add_argument(
        "--standby",
        action="store_true",
        help="Postgres shards of a --config: if another process serves the shard, wait (binding "
        "nothing, answering nothing) and take it over when that owner dies or freezes; --bind one "
        "of the shard's standbys (docs/operations.md)",
    )
    serve.add_argument("--log-level", default=_env("FED_LOG_LEVEL", "INFO"), help="[FED_LOG_LEVEL]")
    insecure_option(serve)
    serve.set_defaults(func=cmd_shard_serve)

    run = sub.add_parser(
        "run",
        help="run Luigi tasks against a shard or router (like the luigi command)",
        description="Run Luigi tasks with the scheduler reached over ZeroMQ. Everything after the "
        "fedctl options is Luigi's own command line: --module M TaskName --param value "
        "--workers N ...",
    )
    run.add_argument(
        "--scheduler",
        default=_env("FED_SCHEDULER", DEFAULT_ZMQ),
        help=f"ZeroMQ endpoint of a router or shard, or a comma-separated list of redundant routers (default {DEFAULT_ZMQ}) [FED_SCHEDULER]",
    )
    key_options(run)
    run.set_defaults(func=cmd_run, passthrough=True)

    router = sub.add_parser("router", help="the router in front of the shards")
    router_sub = router.add_subparsers(dest="router_command", metavar="SUBCOMMAND")
    rserve = router_sub.add_parser(
        "serve",
        help="serve the router (ZeroMQ front and Luigi's HTTP API)",
        description="Route every task id to its shard, merge reads across shards, relay cross-shard "
        "dependencies, and serve Luigi's HTTP RPC and web visualiser. Luigi's own luigi.cfg/luigi.toml "
        "[scheduler] applies under --config and FED_* (fedctl config show).",
    )
    rserve.add_argument("--config", default=_env("FED_CONFIG"), help="federation.toml [FED_CONFIG]")
    rserve.add_argument("--zmq", default=None, help="ZeroMQ bind, overrides [router] zmq [FED_ROUTER_ZMQ]")
    rserve.add_argument(
        "--http", default=None, help="HTTP host:port, overrides [router] http [FED_ROUTER_HTTP]"
    )
    rserve.add_argument(
        "--metrics",
        default=_env("FED_METRICS"),
        help="HOST:PORT for Prometheus /metrics besides the HTTP gateway's /metrics [FED_METRICS]",
    )
    rserve.add_argument(
        "--standby",
        action="store_true",
        help="run as one of several routers: bind and serve only while holding the leader lock, "
        "wait for it before (docs/operations.md, router redundancy) [FED_ROUTER_STANDBY]",
    )
    rserve.add_argument(
        "--leader-lock",
        default=_env("FED_ROUTER_LEADER_LOCK"),
        help="with --standby: a postgresql:// URL (advisory lock) or a file path (flock); default the "
        "first Postgres store, else router.leader.lock beside the first SQLite store [FED_ROUTER_LEADER_LOCK]",
    )
    rserve.add_argument(
        "--leader-timeout",
        type=float,
        default=5.0,
        help="with a Postgres leader lock: seconds after which a frozen leader's lock is freed (default 5)",
    )
    rserve.add_argument("--log-level", default=_env("FED_LOG_LEVEL", "INFO"), help="[FED_LOG_LEVEL]")
    insecure_option(rserve)
    rserve.set_defaults(func=cmd_router_serve)

    config = sub.add_parser("config", help="the effective configuration of the servers")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    cshow = config_sub.add_parser(
        "show",
        help="every setting a server would run with here, and where it came from",
        description="Resolve the configuration the way fedctl up, fedctl router serve and fedctl shard "
        "serve do -- command line > FED_* environment > federation.toml > Luigi's own configuration "
        "(luigi.cfg / luigi.toml, LUIGI_CONFIG_PATH, LUIGI_CONFIG_PARSER, as luigid reads it) > "
        "defaults -- and print each setting with the layer and file or variable it came from "
        "(passwords in store URLs masked), then the warnings a server would log.",
    )
    cshow.add_argument(
        "--config",
        default=_env("FED_CONFIG"),
        help="federation.toml, or a standalone shard's TOML with [scheduler]/[resources] [FED_CONFIG]",
    )
    cshow.add_argument("--json", action="store_true", help="print it as JSON")
    cshow.set_defaults(func=cmd_config_show)

    def local_options(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument(
            "--shards",
            type=int,
            default=3,
            help="number of shards (default 3) [FED_SHARDS]",
        )
        cmd.add_argument(
            "--data-dir",
            default="./.federation",
            help="SQLite files, logs and the generated federation.toml (default ./.federation) [FED_DATA_DIR]",
        )
        cmd.add_argument(
            "--zmq",
            default=DEFAULT_ZMQ,
            help=f"router ZeroMQ bind (default {DEFAULT_ZMQ}) [FED_ROUTER_ZMQ]",
        )
        cmd.add_argument(
            "--http",
            default="127.0.0.1:8082",
            help="router HTTP bind for Luigi's RPC and visualiser (default 127.0.0.1:8082; '' for none) [FED_ROUTER_HTTP]",
        )
        cmd.add_argument(
            "--store",
            choices=["sqlite", "postgres"],
            default="sqlite",
            help="store of the generated shards (default sqlite) [FED_STORE]",
        )
        cmd.add_argument(
            "--pg-url",
            default=DEFAULT_PG_URL,
            help=f"Postgres URL for --store postgres (default {DEFAULT_PG_URL}: the local server's "
            "database 'test'; give your own for anything that matters; a password is better given "
            "as FED_PG_URL, which ps does not show) [FED_PG_URL]",
        )
        cmd.add_argument(
            "--schema-prefix",
            default="fed_",
            help="with --store postgres, shard <id> uses schema <prefix><id> (default fed_) [FED_SCHEMA_PREFIX]",
        )
        cmd.add_argument(
            "--config",
            default=_env("FED_CONFIG"),
            help="use this federation.toml instead of generating one [FED_CONFIG]",
        )
        cmd.add_argument(
            "--secure",
            action="store_true",
            help="generate keys and tokens under DATA_DIR/keys and secure every link (CURVE, HTTP tokens; "
            "docs/security.md) [FED_SECURE]",
        )
        insecure_option(cmd)

    up = sub.add_parser(
        "up",
        help="a whole local federation: router + N shards as child processes",
        description="Start a router and N shards as child processes (SQLite files under "
        "--data-dir by default), restart any that dies, stop all on Ctrl-C.",
    )
    local_options(up)
    up.add_argument(
        "--routers",
        type=int,
        default=1,
        help="routers on the same ports: one leads, the others (--standby) bind them when it dies "
        "(default 1; docs/operations.md) [FED_ROUTERS]",
    )
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser(
        "demo",
        help="start a local federation and run the daily example pipeline through it",
        description="Start a local federation, run examples/daily.py for a week of partitions "
        "with real Luigi workers, print a per-shard summary.",
    )
    local_options(demo)
    demo.add_argument("--days", type=int, default=7, help="days of partitions (default 7)")
    demo.add_argument("--start", default="2026-11-20", help="first day (default 2026-11-20)")
    demo.add_argument("--workers", type=int, default=4, help="Luigi worker processes (default 4)")
    demo.add_argument("--keep", action="store_true", help="leave the federation running afterwards")
    demo.set_defaults(func=cmd_demo)

    status = sub.add_parser(
        "status",
        help="health of every shard, through the router",
        description="Ask the router for federation_health and print one line per shard: up or DOWN, "
        "round trip, tasks by status, live workers, store. Exits 1 when a shard is down, 2 when the "
        "router cannot be reached (or the endpoint is a shard, not a router).",
    )
    status.add_argument(
        "--router",
        default=_env("FED_ROUTER", DEFAULT_ZMQ),
        help=f"router ZeroMQ endpoint, or a comma-separated list of redundant routers (default {DEFAULT_ZMQ}) [FED_ROUTER]",
    )
    status.add_argument("--json", action="store_true", help="print federation_health as JSON")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the router")
    key_options(status)
    status.set_defaults(func=cmd_status)

    from fedctl.reshard import add_parser as add_reshard_parser

    add_reshard_parser(sub, _env, DEFAULT_ZMQ)

    history = sub.add_parser("history", help="task history from the shards' event tables")
    history_sub = history.add_subparsers(dest="history_cmd", metavar="COMMAND")
    export = history_sub.add_parser(
        "export",
        help="every shard's task history to one Parquet file",
        description="Read the event history (every status change: task, status, worker, host, time) of the "
        "shards in federation.toml straight from their stores, read-only (the shards may be "
        "running), and write it to one Parquet file (pyarrow; pandas.read_parquet reads it).",
    )
    export.add_argument("--config", default=_env("FED_CONFIG"), help="federation.toml [FED_CONFIG]")
    export.add_argument("--out", required=True, help="Parquet file to write (replaced when complete)")
    export.add_argument("--shard", action="append", help="only this shard (repeatable; default: all)")
    export.add_argument(
        "--namespace", action="append", help="only tasks of this namespace and the ones below it (repeatable)"
    )
    export.add_argument(
        "--since", help="events at or after this time: epoch seconds or ISO 8601 (UTC if no zone)"
    )
    export.add_argument("--until", help="events before this time: epoch seconds or ISO 8601")
    export.set_defaults(func=cmd_history_export)
    prune = history_sub.add_parser(
        "prune",
        help="delete the task history older than a time, on every shard",
        description="Ask every shard, through the router, to delete its history events older than --before "
        "(export them first: fedctl history export). Task state is untouched. Exits 1 if a shard "
        "was unavailable (its history is kept; run again).",
    )
    prune.add_argument(
        "--router",
        default=_env("FED_ROUTER", DEFAULT_ZMQ),
        help=f"router ZeroMQ endpoint, or a comma-separated list of redundant routers (default {DEFAULT_ZMQ}) [FED_ROUTER]",
    )
    prune.add_argument(
        "--before", required=True, help="delete events before this time: epoch seconds or ISO 8601"
    )
    prune.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the router")
    key_options(prune)
    prune.set_defaults(func=cmd_history_prune)

    from fedctl.deploy import RenderOptions

    render_defaults = RenderOptions()
    deploy = sub.add_parser("deploy", help="deployment files per business unit")
    deploy_sub = deploy.add_subparsers(dest="deploy_cmd", metavar="COMMAND")
    rend = deploy_sub.add_parser(
        "render",
        help="systemd units and Kubernetes manifests per business unit, from federation.toml",
        description="Render, for each business unit (placement group) of federation.toml, the files that run "
        "its shards — systemd units, Kubernetes Deployments/Services (and volume claims for SQLite "
        "stores) — plus the router's and the federation.toml each target needs. See docs/federation.md.",
    )
    rend.add_argument("--config", default=_env("FED_CONFIG"), help="federation.toml [FED_CONFIG]")
    rend.add_argument(
        "--out", required=True, help="folder to write into (files of the same name are replaced)"
    )
    rend.add_argument(
        "--target", action="append", help="systemd, kubernetes, or both comma separated (default both)"
    )
    rend.add_argument("--group", action="append", help="only this business unit (repeatable; default all)")
    rend.add_argument("--fedctl", default=render_defaults.fedctl, help="fedctl path in the systemd units")
    rend.add_argument(
        "--config-path",
        default=render_defaults.config_path,
        help="where the rendered federation.toml is installed (systemd) or mounted (Kubernetes)",
    )
    rend.add_argument(
        "--user", default=render_defaults.user, help="systemd User= of the services (default %(default)s)"
    )
    rend.add_argument(
        "--state-dir",
        default=render_defaults.state_dir,
        help="folder of the SQLite stores (a volume per shard on Kubernetes)",
    )
    rend.add_argument("--image", default=render_defaults.image, help="container image (Kubernetes)")
    rend.add_argument(
        "--k8s-namespace", default=render_defaults.k8s_namespace, help="Kubernetes namespace of every object"
    )
    rend.add_argument(
        "--insecure",
        action="store_true",
        help="render servers that bind addresses other hosts reach without [security] (refused otherwise; "
        "their commands get --insecure) [FED_INSECURE]",
    )
    rend.set_defaults(func=cmd_deploy_render)

    tui = sub.add_parser(
        "tui",
        help="the federation's health in the terminal (Textual)",
        description="A k9s-like terminal UI over the router: shards, namespaces, tasks, workers; "
        "`:` commands, `/` filter, Enter drills down, `?` help.",
    )
    tui.add_argument(
        "--router",
        default=None,
        help=f"router ZeroMQ endpoint, or a comma-separated list of redundant routers (default: [router] zmq of --config, else {DEFAULT_ZMQ}) [FED_ROUTER]",
    )
    tui.add_argument(
        "--refresh",
        type=float,
        default=_env("FED_TUI_REFRESH"),
        help="seconds between refreshes (default 2) [FED_TUI_REFRESH]",
    )
    tui.add_argument(
        "--readonly",
        action="store_true",
        default=_env("FED_TUI_READONLY", "") not in ("", "0", "false"),
        help="hide every action that changes the federation [FED_TUI_READONLY]",
    )
    tui.add_argument(
        "--config",
        default=None,
        help="federation.toml or any TOML with a [tui] table (and [tui.contexts] for :ctx); the shards' "
        "stores and fedctl up's logs/ next to it are shown too (default ./.federation/federation.toml "
        "when there is one) [FED_CONFIG]",
    )
    tui.add_argument(
        "--timeout", type=float, default=None, help="seconds per call before the router counts as down"
    )
    tui.add_argument("--replay", default=None, help="show a recorded capture instead of a live router")
    tui.add_argument("--record", default=None, help="record every call and answer to this capture file")
    key_options(tui)
    tui.set_defaults(func=cmd_tui)

    call = sub.add_parser(
        "call",
        help="one request to a router or shard, the answer as JSON",
        description="Send one request to a router (or a shard) and print the answer as JSON: "
        "fedctl call forgive_failures task_id=ID. Each argument is KEY=VALUE, the value read as JSON "
        "when it parses (1, true, [..]) and as a string otherwise. The TUI shows the fedctl call of "
        "each action before it runs.",
    )
    call.add_argument("method", help="the method, e.g. task_list, forgive_failures, pause")
    call.add_argument("args", nargs="*", metavar="KEY=VALUE", help="the method's arguments")
    call.add_argument(
        "--router",
        default=DEFAULT_ZMQ,
        help=f"ZeroMQ endpoint of a router or shard, or a comma-separated list of redundant routers (default {DEFAULT_ZMQ}) [FED_ROUTER]",
    )
    call.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")
    key_options(call)
    call.set_defaults(func=cmd_call)

    keys = sub.add_parser("keys", help="CURVE keypairs and HTTP tokens for a secured federation")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    knew = keys_sub.add_parser(
        "new",
        help="write a CURVE keypair NAME.key (public) and NAME.key_secret (0600)",
        description="Write a ZeroMQ CURVE keypair in zmq.auth's format: DIR/NAME.key (public: name it in "
        "federation.toml) and DIR/NAME.key_secret (0600: the client's --key). Existing files are never "
        "overwritten.",
    )
    knew.add_argument("name", help="the key's name, e.g. fin-worker")
    knew.add_argument("--dir", default="keys", help="folder to write into (default ./keys) [FED_KEYS_DIR]")
    knew.set_defaults(func=cmd_keys_new)
    ktoken = keys_sub.add_parser(
        "token",
        help="print a new HTTP token and the token_sha256 line for federation.toml",
        description="Print a random HTTP token (give it to the client: http://USER:TOKEN@host:8082 or "
        "Authorization: Bearer TOKEN) and its SHA-256 for [[principals]] token_sha256.",
    )
    ktoken.set_defaults(func=cmd_keys_token)

    if with_loadtest:
        from loadtest.command import register as register_loadtest

        register_loadtest(sub)
    else:
        # ``fedctl --help`` lists it without importing the load test package
        sub.add_parser("loadtest", help=LOADTEST_HELP)
    wire_env(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(with_loadtest=bool(argv) and argv[0] == "loadtest")
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
