"""The policy, the [security] config, key files and rendered deployment files: no socket needed."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import luigi.scheduler
import pytest

from fedctl.deploy import RenderOptions, render
from federation.auth import (
    ADMIN,
    OPERATOR,
    POLICY,
    VIEWER,
    WORKER,
    AccessDenied,
    Authorizer,
    Principal,
    Unauthenticated,
    matches,
    shard_allows,
)
from federation.config import FederationConfig, load_federation_config
from federation.credentials import provision
from federation.errors import ConfigError, error_from_wire
from federation.keys import ClientCurve, load_pair, new_keypair
from federation.placement import namespace_of
from router.methods import METHODS


def test_every_method_the_router_serves_has_a_rule() -> None:
    assert set(luigi.scheduler.RPC_METHODS) <= set(POLICY)
    assert set(METHODS) <= set(POLICY) | {"owner"}
    assert len(luigi.scheduler.RPC_METHODS) == 39


@pytest.mark.parametrize(
    ("pattern", "namespace", "ok"),
    [
        ("*", "", True),
        ("*", "mkt.eu", True),
        ("fin.*", "fin", True),
        ("fin.*", "fin.ledger", True),
        ("fin.*", "finance", False),
        ("fin.*", "mkt", False),
        ("fin", "fin", True),
        ("fin", "fin.ledger", False),
    ],
)
def test_namespace_patterns(pattern: str, namespace: str, ok: bool) -> None:
    assert matches(pattern, namespace) is ok


def authz() -> Authorizer:
    return Authorizer(
        [
            Principal("fin", WORKER, ("fin.*",)),
            Principal("ops", OPERATOR, ("fin.*",)),
            Principal("view", VIEWER),
            Principal("root", ADMIN),
            Principal("gateway", "gateway", ()),
        ],
        namespace_of,
    )


def test_roles_and_namespaces() -> None:
    a = authz()
    fin, ops, view, root = (a.principals[n] for n in ("fin", "ops", "view", "root"))
    assert a.authorize(fin, "add_task", {"task_id": "fin.A_1"}) is None
    denied = a.authorize(fin, "add_task", {"task_id": "mkt.A_1"})
    assert isinstance(denied, AccessDenied)
    assert "fin" in denied.message and "add_task" in denied.message and "'mkt'" in denied.message
    assert a.authorize(fin, "mark_as_done", {"task_id": "fin.A_1"}) is not None  # an operator's button
    assert a.authorize(ops, "mark_as_done", {"task_id": "fin.A_1"}) is None
    assert a.authorize(ops, "pause", {}) is not None  # federation-wide: scoped principals may not
    assert a.authorize(root, "pause", {}) is None and a.authorize(root, "prune_history", {}) is None
    assert a.authorize(view, "task_list", {}) is None
    assert all(
        a.authorize(view, m, {"task_id": "x.A"}) is not None for m, r in POLICY.items() if r.role != VIEWER
    )
    assert a.authorize(fin, "get_work", {"worker": "w", "assistant": True}) is not None
    assert a.authorize(fin, "set_task_status_message", None) is None or a.needs_body(
        fin, "set_task_status_message"
    )


def test_only_the_gateway_asserts_and_only_known_principals() -> None:
    a = authz()
    assert a.resolve("fin", {"principal": "root"}) == a.principals["fin"]
    assert a.resolve("gateway", {"principal": "root"}) == a.principals["root"]
    assert isinstance(a.resolve("gateway", {}), Unauthenticated)
    assert isinstance(a.resolve("gateway", {"principal": "gateway"}), Unauthenticated)
    assert isinstance(a.resolve("gateway", {"principal": "nobody"}), Unauthenticated)
    assert isinstance(a.resolve(None, {}), Unauthenticated)
    assert isinstance(error_from_wire({"code": "forbidden", "message": "x"}), AccessDenied)


def test_shards_take_changes_from_the_router_only() -> None:
    assert shard_allows("router", "fed_mirror_update") is None
    assert isinstance(shard_allows("admin", "fed_mirror_update"), AccessDenied)
    assert isinstance(shard_allows("admin", "mark_as_done"), AccessDenied)
    assert shard_allows("admin", "shard_info") is None
    assert isinstance(shard_allows(None, "shard_info"), Unauthenticated)


def _base(tmp_path: Path, security: str) -> Path:
    path = tmp_path / "federation.toml"
    path.write_text('[[shards]]\nid = "s0"\nendpoint = "tcp://127.0.0.1:5601"\nstore = "s0.db"\n' + security)
    return path


def test_bad_security_config_is_every_problem_at_once(tmp_path: Path) -> None:
    path = _base(
        tmp_path,
        '[security]\nrouter_key = "rQ]#x7Fh=Wt1kQ0dA[xP2lcu3Qp-dVpbA2V4(u/E"\nbogus = 1\n'
        '[[principals]]\nname = "w"\nrole = "king"\nnamespaces = ["fi*n"]\ntoken = "plain"\n',
    )
    with pytest.raises(ConfigError) as e:
        load_federation_config(str(path))
    text = str(e.value)
    for bit in ("never a key itself", "bogus", "shard_key", "king", "fi*n", "hashed"):
        assert bit in text, bit


def test_config_round_trips_and_names_files_only(tmp_path: Path) -> None:
    creds = provision(tmp_path)
    cfg = FederationConfig.local(1, data_dir=str(tmp_path))
    from federation.credentials import security_config

    cfg = cfg.replace(security=security_config(creds))
    (tmp_path / "f.toml").write_text(cfg.to_toml())
    back = load_federation_config(str(tmp_path / "f.toml"))
    assert back.security == cfg.security
    text = (tmp_path / "f.toml").read_text()
    for token in creds.tokens.values():
        assert token not in text
    for secret in (tmp_path / "keys").glob("*.key_secret"):
        assert load_pair(str(secret))[1].decode() not in text
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600


def test_keys_are_never_overwritten_and_credentials_dirs_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    public, secret = new_keypair(tmp_path / "k", "a")
    with pytest.raises(ConfigError, match="never overwritten"):
        new_keypair(tmp_path / "k", "a")
    pair = load_pair(str(public))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "a.key_secret").write_bytes(secret.read_bytes())
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    (elsewhere / "a.key").write_bytes(public.read_bytes())
    with pytest.raises(ConfigError):
        load_pair(str(elsewhere / "a.key"))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_pair(str(elsewhere / "a.key")) == pair
    assert ClientCurve.from_files(str(secret), str(public)).server == pair[0]


def test_deploy_render_keeps_every_secret_out(tmp_path: Path) -> None:
    creds = provision(tmp_path)
    from federation.credentials import security_config

    path = tmp_path / "federation.toml"
    path.write_text(
        '[[shards]]\nid = "s0"\nendpoint = "tcp://127.0.0.1:5601"\n'
        'store = "postgresql://fed:S3cretPw@db.example:5432/fed"\n'
        '[[shards]]\nid = "s1"\nendpoint = "tcp://127.0.0.1:5602"\nstore = "s1.db"\n'
    )
    cfg = load_federation_config(str(path)).replace(security=security_config(creds))
    files = render(cfg, RenderOptions())
    everything = "\n".join(files.values())
    assert "S3cretPw" not in everything
    for token in creds.tokens.values():
        assert token not in everything
    for secret in (tmp_path / "keys").glob("*.key_secret"):
        assert load_pair(str(secret))[1].decode() not in everything
    shard_unit = files["systemd/default/luigi-federation-shard-s0.service"]
    assert "LoadCredential=shard.key_secret:/etc/luigi-federation/keys/shard.key_secret" in shard_unit
    assert "LoadCredential=pgpass:/etc/luigi-federation/pgpass" in shard_unit
    assert "Environment=PGPASSFILE=%d/pgpass" in shard_unit
    assert "router.key_secret" not in shard_unit
    router_unit = files["systemd/luigi-federation-router.service"]
    assert "router.key_secret" in router_unit and "gateway.key_secret" in router_unit
    items = json.loads(files["kubernetes/default.json"])["items"]
    assert not [i for i in items if i["kind"] == "Secret"]  # referenced, never rendered
    dep = next(i for i in items if i["kind"] == "Deployment" and i["metadata"]["name"] == "lf-shard-s0")
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["keys"]["secret"]["secretName"] == "luigi-federation-keys"
    assert "router.key_secret" not in json.dumps(volumes["keys"])
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PGPASSFILE"].endswith("/pgpass")
    toml = json.loads(files["kubernetes/router.json"])["items"][0]["data"]["federation.toml"]
    assert "postgresql://fed@db.example:5432/fed" in toml and "[security]" in toml


def test_deploy_render_refuses_open_binds_without_security(tmp_path: Path) -> None:
    path = _base(tmp_path, "")
    cfg = load_federation_config(str(path))
    with pytest.raises(ConfigError, match="--insecure"):
        render(cfg, RenderOptions(targets=("kubernetes",)))
    files = render(cfg, RenderOptions(targets=("kubernetes",), insecure=True))
    items = json.loads(files["kubernetes/default.json"])["items"]
    assert (
        "--insecure"
        in next(i for i in items if i["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0][
            "command"
        ]
    )
    assert render(cfg, RenderOptions(targets=("systemd",)))  # loopback binds: nothing open


def test_gateway_tls_and_metrics_behind_a_token(tmp_path: Path) -> None:
    """[security] http_tls_cert/key: the gateway speaks HTTPS; metrics_auth: /metrics needs a token."""
    import base64
    import dataclasses
    import shutil
    import ssl
    import subprocess
    import urllib.error
    import urllib.request

    from prometheus_client import CollectorRegistry

    from federation.credentials import security_config
    from router.core import authorizer
    from router.http import Gateway

    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    creds = provision(tmp_path)
    sec = dataclasses.replace(
        security_config(creds), http_tls_cert=str(cert), http_tls_key=str(key), metrics_auth=True
    )
    cfg = FederationConfig.local(1, data_dir=str(tmp_path)).replace(security=sec)
    az = authorizer(cfg)
    assert az is not None
    gw = Gateway(
        "tcp://127.0.0.1:9", "127.0.0.1:0", metrics_registry=CollectorRegistry(), security=sec, authz=az
    ).start()
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False

        def get(headers: dict[str, str]) -> int:
            req = urllib.request.Request(f"https://{gw.address}/metrics", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                    return r.status
            except urllib.error.HTTPError as e:
                return e.code

        assert get({}) == 401
        token = creds.tokens["viewer"]
        assert get({"Authorization": "Basic " + base64.b64encode(f"x:{token}".encode()).decode()}) == 200
        with pytest.raises(OSError):  # plain HTTP is not served on a TLS gateway
            urllib.request.urlopen(f"http://{gw.address}/metrics", timeout=5)
    finally:
        gw.stop()
