"""Deployment files per business unit, rendered from ``federation.toml`` (``fedctl deploy render``).

A business unit is a placement group: its pinned namespaces live on its own
shards.  For each group this renders the files that run its shards, and once
the router's; the federation.toml each target needs is rendered with them:

``systemd/``
    ``federation.toml`` (SQLite stores moved under ``--state-dir``), the
    router's unit, and ``<group>/luigi-federation-shard-<id>.service`` per
    shard: ``fedctl shard serve --config ... --id <id>``, restarted on
    failure, stopped with SIGTERM (the shard drains its batch).
``kubernetes/``
    ``router.json``: the ConfigMap with a federation.toml in which every
    shard is reached at its Service (``tcp://lf-shard-<id>:<port>``), and the
    router's Deployment and Service; ``<group>.json`` per business unit: for
    each shard a Deployment (one replica, ``Recreate``: one process owns a
    shard's store at a time; the store's lock fences a second one out anyway),
    its Service, and for an SQLite store a PersistentVolumeClaim.  Manifests
    are JSON (``kind: List``), which ``kubectl apply -f`` reads as it reads
    YAML.

No secret is rendered (docs/security.md): a Postgres password is taken out of every store URL and
read by libpq from ``PGPASSFILE``, which points at a systemd credential (``LoadCredential=pgpass``)
or at the Kubernetes Secret ``luigi-federation-pgpass``; the secret halves of the CURVE keys of
``[security]`` come the same way (systemd ``LoadCredential=<name>.key_secret``, read from
``$CREDENTIALS_DIRECTORY``; the Kubernetes Secret ``luigi-federation-keys`` mounted next to the
public key files).  Kubernetes binds every interface, so without ``[security]`` it is rendered only
with ``insecure`` (``--insecure``), whose commands then say ``--insecure`` too.

Everything here is pure (config in, ``{relative path: text}`` out); the CLI writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from federation.config import FederationConfig, ShardSpec
from federation.errors import ConfigError
from federation.secconfig import SecurityConfig

TARGETS = ("systemd", "kubernetes")
METRICS_PORT = 9100
LABEL = "luigi-federation"


@dataclasses.dataclass(frozen=True)
class RenderOptions:
    targets: tuple[str, ...] = TARGETS
    groups: tuple[str, ...] = ()  # business units to render (all when empty)
    fedctl: str = "/usr/local/bin/fedctl"
    config_path: str = "/etc/luigi-federation/federation.toml"
    user: str = "luigi"
    state_dir: str = "/var/lib/luigi-federation"
    image: str = "luigi-federation:latest"
    k8s_namespace: str = "luigi-federation"
    storage: str = "1Gi"
    #: render open binds without [security] (the servers are told --insecure)
    insecure: bool = False


#: where libpq finds the Postgres password (never in the rendered federation.toml)
PGPASS_CREDENTIAL = "pgpass"
PGPASS_SECRET = "luigi-federation-pgpass"
KEYS_SECRET = "luigi-federation-keys"


def _password_free(store: str) -> tuple[str, bool]:
    """A store URL without its password, and whether it had one."""
    parts = urlsplit(store)
    if parts.password is None:
        return store, False
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl(), True


def _scrubbed(cfg: FederationConfig, keys_dir: str) -> tuple[FederationConfig, bool]:
    """``cfg`` with no password in a store URL and its key files under ``keys_dir``; True when a
    password was taken out (the units then read it through PGPASSFILE)."""
    shards, had = [], False
    for s in cfg.shards:
        store, pw = _password_free(s.store)
        had = had or pw
        shards.append(dataclasses.replace(s, store=store))
    sec = cfg.security
    if sec is not None:
        moved = lambda path: f"{keys_dir}/{path.rsplit('/', 1)[-1]}" if path else path  # noqa: E731
        sec = dataclasses.replace(
            sec,
            router_key=moved(sec.router_key),
            shard_key=moved(sec.shard_key),
            gateway_key=moved(sec.gateway_key) if sec.gateway_key else None,
            principals=tuple(
                dataclasses.replace(p, key=moved(p.key) if p.key else None) for p in sec.principals
            ),
        )
    return dataclasses.replace(cfg, shards=tuple(shards), security=sec), had


def _secret_keys(sec: SecurityConfig | None, role: str) -> list[str]:
    """File names of the secret keys a process needs: the router its own and the gateway's, a shard its own."""
    if sec is None:
        return []
    if role == "router":
        names = [sec.router_key] + ([sec.gateway_key] if sec.gateway_key else [])
    else:
        names = [sec.shard_key]
    return [n.rsplit("/", 1)[-1] + "_secret" for n in names]


def _public_keys(sec: SecurityConfig | None) -> list[str]:
    if sec is None:
        return []
    paths = [sec.router_key, sec.shard_key, sec.gateway_key, *(p.key for p in sec.principals)]
    return sorted({p.rsplit("/", 1)[-1] for p in paths if p})


def k8s_name(shard_id: str) -> str:
    """``lf-shard-<id>`` as a DNS-1123 label (Kubernetes object and Service name)."""
    name = re.sub(r"[^a-z0-9-]+", "-", shard_id.lower()).strip("-")
    return f"lf-shard-{name}"[:63].rstrip("-")


def _port(endpoint: str) -> int:
    parts = urlsplit(endpoint)
    if parts.scheme != "tcp" or parts.port is None:
        raise ConfigError(f"endpoint {endpoint!r}: deployment needs tcp://host:port endpoints")
    return parts.port


def _sqlite_path(store: str) -> str | None:
    return store[len("sqlite:///") :] if store.startswith("sqlite:///") else None


def _check(cfg: FederationConfig, opts: RenderOptions) -> list[str]:
    unknown_targets = [t for t in opts.targets if t not in TARGETS]
    if unknown_targets or not opts.targets:
        raise ConfigError(
            f"--target: choose from {', '.join(TARGETS)} (got {', '.join(opts.targets) or 'none'})"
        )
    unknown = [g for g in opts.groups if g not in cfg.groups]
    if unknown:
        raise ConfigError(
            f"no business unit (group) {', '.join(unknown)} in the config (groups: {', '.join(cfg.groups)})",
            source=cfg.source,
        )
    for name, path in (("--config-path", opts.config_path), ("--state-dir", opts.state_dir)):
        if not path.startswith("/"):
            raise ConfigError(f"{name} must be an absolute path, got {path!r}")
    bad = [g for g in cfg.groups if not re.fullmatch(r"[A-Za-z0-9_.-]+", g) or g.startswith(".")]
    if bad:
        raise ConfigError(
            f"group names become folder names: {', '.join(map(repr, bad))} must use letters, "
            "digits, '_', '-', '.'",
            source=cfg.source,
        )
    names: dict[str, str] = {}
    for s in cfg.shards:
        _port(s.endpoint)
        other = names.setdefault(k8s_name(s.id), s.id)
        if other != s.id:
            raise ConfigError(
                f"shards {other!r} and {s.id!r} get the same Kubernetes name {k8s_name(s.id)!r}"
            )
    _port(cfg.router.zmq)
    with_standbys = [s.id for s in cfg.shards if s.standbys]
    if with_standbys and "kubernetes" in opts.targets:
        raise ConfigError(
            f"shards {', '.join(with_standbys)} have standbys: rendered for systemd only (a Kubernetes "
            "Deployment restarts a shard's pod in place; render --target systemd, or drop the standbys)",
            source=cfg.source,
        )
    if cfg.security is None and not opts.insecure:
        from fedctl.secure import is_loopback

        open_binds = [
            a
            for a in [cfg.router.zmq, cfg.router.http or "", *(ep for s in cfg.shards for ep in s.endpoints)]
            if a
        ]
        if "kubernetes" in opts.targets or not all(is_loopback(a) for a in open_binds):
            raise ConfigError(
                "the rendered servers bind addresses other hosts reach and the config has no [security]: "
                "add [security] (docs/security.md) or pass --insecure",
                source=cfg.source,
            )
    return list(opts.groups or cfg.groups)


def render(cfg: FederationConfig, opts: RenderOptions) -> dict[str, str]:
    """``{relative path: file text}`` for every target and business unit asked for."""
    groups = _check(cfg, opts)
    out: dict[str, str] = {}
    if "systemd" in opts.targets:
        out.update(_systemd(cfg, opts, groups))
    if "kubernetes" in opts.targets:
        out.update(_kubernetes(cfg, opts, groups))
    return out


# -- systemd ---------------------------------------------------------------------------------
def _moved_sqlite(cfg: FederationConfig, state_dir: str) -> FederationConfig:
    shards = []
    for s in cfg.shards:
        if _sqlite_path(s.store) is not None:
            s = dataclasses.replace(s, store=f"sqlite:///{state_dir.rstrip('/')}/{s.id}.db")
        shards.append(s)
    return dataclasses.replace(cfg, shards=tuple(shards))


def _unit(
    description: str,
    exec_start: list[str],
    opts: RenderOptions,
    *,
    after_db: bool,
    credentials: list[str] = (),  # type: ignore[assignment]
    pgpass: bool = False,
) -> str:
    after = "network-online.target" + (" postgresql.service" if after_db else "")
    config_dir = opts.config_path.rsplit("/", 1)[0] or "/"
    # secrets as systemd credentials: copied to $CREDENTIALS_DIRECTORY (%d), readable by the service only
    creds = [f"LoadCredential={name}:{config_dir}/keys/{name}" for name in credentials]
    if pgpass:
        creds += [
            f"LoadCredential={PGPASS_CREDENTIAL}:{config_dir}/{PGPASS_CREDENTIAL}",
            f"Environment=PGPASSFILE=%d/{PGPASS_CREDENTIAL}",
        ]
    return "\n".join(
        [
            "# rendered by `fedctl deploy render`; edit federation.toml and render again",
            "[Unit]",
            f"Description={description}",
            f"After={after}",
            "Wants=network-online.target",
            "",
            "[Service]",
            "Type=simple",
            f"User={opts.user}",
            # systemd makes /var/lib/<StateDirectory> for the service user; elsewhere the folder must exist
            f"StateDirectory={opts.state_dir[len('/var/lib/') :].strip('/')}"
            if opts.state_dir.startswith("/var/lib/")
            else f"ReadWritePaths={opts.state_dir}",
            f"ExecStart={shlex.join(exec_start)}",
            *creds,
            "Restart=on-failure",
            "RestartSec=2",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=30",
            # the router's HTTP gateway caps its connections at 512, but its ZeroMQ sockets and the
            # shards' store connections need descriptors too: systemd's usual 1024 is too tight
            "LimitNOFILE=65536",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def _systemd(cfg: FederationConfig, opts: RenderOptions, groups: Iterable[str]) -> dict[str, str]:
    config_dir = opts.config_path.rsplit("/", 1)[0] or "/"
    moved, pgpass = _scrubbed(_moved_sqlite(cfg, opts.state_dir), f"{config_dir}/keys")
    notes = f"# install as {opts.config_path}\n"
    if pgpass:
        notes += f"# the Postgres password is not here: put it in {config_dir}/{PGPASS_CREDENTIAL} (libpq's .pgpass format)\n"
    if moved.security is not None:
        notes += f"# the key files named here go in {config_dir}/keys (the units load the secret halves as credentials)\n"
    out = {"systemd/federation.toml": notes + moved.to_toml()}
    uses_pg = any(_sqlite_path(s.store) is None for s in moved.shards)
    extra = ["--insecure"] if opts.insecure and cfg.security is None else []
    out["systemd/luigi-federation-router.service"] = _unit(
        "luigi-federation router (ZeroMQ front, Luigi's HTTP API)",
        [opts.fedctl, "router", "serve", "--config", opts.config_path, *extra],
        opts,
        after_db=False,
        credentials=_secret_keys(moved.security, "router"),
    )
    for group in groups:
        for sid in cfg.groups[group]:
            spec = moved.shard(sid)
            argv = [opts.fedctl, "shard", "serve", "--config", opts.config_path, "--id", sid]
            after_db = uses_pg and _sqlite_path(spec.store) is None
            # with standbys every member waits for the shard's lock (docs/operations.md); a fenced
            # owner exits with status 3 and Restart=on-failure brings it back as a standby
            out[f"systemd/{group}/luigi-federation-shard-{sid}.service"] = _unit(
                f"luigi-federation shard {sid} (business unit {group})",
                argv + (["--standby"] if spec.standbys else []) + extra,
                opts,
                after_db=after_db,
                credentials=_secret_keys(moved.security, "shard"),
                pgpass=pgpass and _sqlite_path(spec.store) is None,
            )
            for k, endpoint in enumerate(spec.standbys, 1):
                out[f"systemd/{group}/luigi-federation-shard-{sid}-standby{k}.service"] = _unit(
                    f"luigi-federation shard {sid} standby {k} on {endpoint} (business unit {group}); "
                    "install it on that host",
                    [*argv, "--standby", "--bind", endpoint, *extra],
                    opts,
                    after_db=after_db,
                    credentials=_secret_keys(moved.security, "shard"),
                    pgpass=pgpass and _sqlite_path(spec.store) is None,
                )
    return out


# -- Kubernetes ------------------------------------------------------------------------------
def _k8s_config(cfg: FederationConfig, opts: RenderOptions) -> FederationConfig:
    shards = []
    for s in cfg.shards:
        store = s.store
        if _sqlite_path(store) is not None:
            store = f"sqlite:///{opts.state_dir.rstrip('/')}/{s.id}.db"
        shards.append(
            dataclasses.replace(s, endpoint=f"tcp://{k8s_name(s.id)}:{_port(s.endpoint)}", store=store)
        )
    http = cfg.router.http_host_port
    router = dataclasses.replace(
        cfg.router, zmq=f"tcp://0.0.0.0:{_port(cfg.router.zmq)}", http=f"0.0.0.0:{http[1]}" if http else None
    )
    return dataclasses.replace(cfg, shards=tuple(shards), router=router)


def _labels(component: str, group: str | None = None, shard: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": LABEL, "app.kubernetes.io/component": component}
    if group is not None:
        labels[f"{LABEL}/business-unit"] = group
    if shard is not None:
        labels[f"{LABEL}/shard"] = re.sub(r"[^A-Za-z0-9_.-]", "_", shard)[:63]
    return labels


def _meta(name: str, opts: RenderOptions, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": opts.k8s_namespace, "labels": labels}


def _deployment(
    name: str,
    opts: RenderOptions,
    labels: dict[str, str],
    command: list[str],
    ports: list[tuple[str, int]],
    volumes: list[tuple[str, dict[str, Any], str]],
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": opts.image,
        "command": command,
        "ports": [{"name": n, "containerPort": p} for n, p in ports],
        "volumeMounts": [{"name": v, "mountPath": mount} for v, _, mount in volumes],
        "readinessProbe": {"tcpSocket": {"port": ports[0][1]}, "periodSeconds": 5},
    }
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, opts, labels),
        "spec": {
            "replicas": 1,
            # one process per shard store (and one router): never two during a rollout
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [{"name": v, **source} for v, source, _ in volumes],
                },
            },
        },
    }


def _service(
    name: str, opts: RenderOptions, labels: dict[str, str], ports: list[tuple[str, int]]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, opts, labels),
        "spec": {"selector": labels, "ports": [{"name": n, "port": p, "targetPort": p} for n, p in ports]},
    }


def _k8s_list(items: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2) + "\n"


def _secret_volumes(
    sec: SecurityConfig | None, role: str, keys_dir: str, pgpass: bool
) -> tuple[list[tuple[str, dict[str, Any], str]], dict[str, str]]:
    """Volumes (and env) of the Secrets one pod needs: the public keys and its own secret keys, the
    pgpass file.  The Secrets are referenced, never rendered: ``kubectl create secret generic``."""
    volumes: list[tuple[str, dict[str, Any], str]] = []
    env: dict[str, str] = {}
    if sec is not None:
        files = _public_keys(sec) + _secret_keys(sec, role)
        volumes.append(
            (
                "keys",
                {
                    "secret": {
                        "secretName": KEYS_SECRET,
                        "defaultMode": 0o400,
                        "items": [{"key": f, "path": f} for f in files],
                    }
                },
                keys_dir,
            )
        )
    if pgpass:
        volumes.append(
            (
                "pgpass",
                {
                    "secret": {
                        "secretName": PGPASS_SECRET,
                        "defaultMode": 0o400,
                        "items": [{"key": PGPASS_CREDENTIAL, "path": PGPASS_CREDENTIAL}],
                    }
                },
                f"{keys_dir}-pgpass",
            )
        )
        env["PGPASSFILE"] = f"{keys_dir}-pgpass/{PGPASS_CREDENTIAL}"
    return volumes, env


def _kubernetes(cfg: FederationConfig, opts: RenderOptions, groups: Iterable[str]) -> dict[str, str]:
    config_dir = opts.config_path.rsplit("/", 1)[0] or "/"
    keys_dir = (config_dir.rstrip("/") or "") + "-keys"
    kcfg, pgpass = _scrubbed(_k8s_config(cfg, opts), keys_dir)
    extra = ["--insecure"] if opts.insecure and cfg.security is None else []
    config_file = opts.config_path.rsplit("/", 1)[1]
    config_volume = ("config", {"configMap": {"name": "luigi-federation-config"}}, config_dir)
    router_secrets, _ = _secret_volumes(kcfg.security, "router", keys_dir, False)
    router_labels = _labels("router")
    router_ports = [("zmq", _port(cfg.router.zmq))]
    if kcfg.router.http_host_port:
        router_ports.append(("http", kcfg.router.http_host_port[1]))
    router_ports.append(("metrics", METRICS_PORT))
    router_items = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("luigi-federation-config", opts, _labels("config")),
            "data": {config_file: kcfg.to_toml()},
        },
        _deployment(
            "lf-router",
            opts,
            router_labels,
            [
                "fedctl",
                "router",
                "serve",
                "--config",
                opts.config_path,
                "--metrics",
                f"0.0.0.0:{METRICS_PORT}",
                *extra,
            ],
            router_ports,
            [config_volume, *router_secrets],
        ),
        _service("lf-router", opts, router_labels, router_ports),
    ]
    out = {"kubernetes/router.json": _k8s_list(router_items)}
    for group in groups:
        items: list[dict[str, Any]] = []
        for sid in cfg.groups[group]:
            spec: ShardSpec = kcfg.shard(sid)
            name = k8s_name(sid)
            labels = _labels("shard", group, sid)
            port = _port(spec.endpoint)
            ports = [("zmq", port), ("metrics", METRICS_PORT)]
            is_pg = _sqlite_path(spec.store) is None
            secret_volumes, env = _secret_volumes(kcfg.security, "shard", keys_dir, pgpass and is_pg)
            volumes = [config_volume, *secret_volumes]
            if _sqlite_path(spec.store) is not None:
                claim = f"{name}-data"
                items.append(
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": _meta(claim, opts, labels),
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": opts.storage}},
                        },
                    }
                )
                volumes = [
                    config_volume,
                    *secret_volumes,
                    ("data", {"persistentVolumeClaim": {"claimName": claim}}, opts.state_dir),
                ]
            items.append(
                _deployment(
                    name,
                    opts,
                    labels,
                    [
                        "fedctl",
                        "shard",
                        "serve",
                        "--config",
                        opts.config_path,
                        "--id",
                        sid,
                        "--bind",
                        f"tcp://0.0.0.0:{port}",
                        "--metrics",
                        f"0.0.0.0:{METRICS_PORT}",
                        *extra,
                    ],
                    ports,
                    volumes,
                    env,
                )
            )
            items.append(_service(name, opts, labels, [("zmq", port)]))
        out[f"kubernetes/{group}.json"] = _k8s_list(items)
    return out
