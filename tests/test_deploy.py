"""``fedctl deploy render``: systemd units and Kubernetes manifests per business unit — and they run."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedctl.cli import main
from fedctl.deploy import RenderOptions, k8s_name, render
from federation.config import FederationConfig, RouterConfig, ShardSpec, load_federation_config
from federation.errors import ConfigError
from federation.transport import ZmqClient
from tests.conftest import free_port
from tests.procs import ROOT, fed_env, wait_for

EXAMPLE = ROOT / "deploy" / "federation.toml"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _unit(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    return cp


def test_systemd_units_per_business_unit(tmp_path: Path) -> None:
    cfg = load_federation_config(str(EXAMPLE))
    files = render(cfg, RenderOptions(targets=("systemd",)))
    assert set(files) == {
        "systemd/federation.toml",
        "systemd/luigi-federation-router.service",
        *(f"systemd/default/luigi-federation-shard-{s}.service" for s in ("s0", "s1", "s2")),
        *(f"systemd/finance/luigi-federation-shard-{s}.service" for s in ("fin-0", "fin-1")),
    }
    for path, text in files.items():
        if not path.endswith(".service"):
            continue
        unit = _unit(text)
        argv = shlex.split(unit["Service"]["ExecStart"])
        assert argv[:2] == ["/usr/local/bin/fedctl", "router" if "router" in path else "shard"]
        assert argv[argv.index("--config") + 1] == "/etc/luigi-federation/federation.toml"
        assert unit["Service"]["Restart"] == "on-failure" and unit["Service"]["KillSignal"] == "SIGTERM"
        assert unit["Service"]["User"] == "luigi" and unit["Install"]["WantedBy"] == "multi-user.target"
        assert int(unit["Service"]["LimitNOFILE"]) >= 65536  # not systemd's usual 1024
        if "shard" in path:
            sid = path.rsplit("shard-", 1)[1].removesuffix(".service")
            assert argv[argv.index("--id") + 1] == sid
            assert path.split("/")[1] == cfg.group_of_shard(sid)
    # the config the units read: the same federation, SQLite stores moved under the state dir
    (tmp_path / "federation.toml").write_text(files["systemd/federation.toml"])
    moved = load_federation_config(str(tmp_path / "federation.toml"))
    assert (
        moved.groups == cfg.groups and moved.namespaces == cfg.namespaces and moved.shard_ids == cfg.shard_ids
    )
    assert moved.shard("s2").store == "sqlite:////var/lib/luigi-federation/s2.db"
    assert moved.shard("s0").store == cfg.shard("s0").store
    assert moved.scheduler == cfg.scheduler
    # one business unit only
    only = render(cfg, RenderOptions(targets=("systemd",), groups=("finance",)))
    assert sorted(p for p in only if "shard" in p) == [
        "systemd/finance/luigi-federation-shard-fin-0.service",
        "systemd/finance/luigi-federation-shard-fin-1.service",
    ]


def test_kubernetes_manifests_per_business_unit(tmp_path: Path) -> None:
    cfg = load_federation_config(str(EXAMPLE))
    files = render(
        cfg,
        RenderOptions(
            targets=("kubernetes",), image="registry.local/lf:1", k8s_namespace="data", insecure=True
        ),
    )
    assert set(files) == {"kubernetes/router.json", "kubernetes/default.json", "kubernetes/finance.json"}
    router = json.loads(files["kubernetes/router.json"])
    assert router["kind"] == "List"
    by_kind = {i["kind"]: i for i in router["items"]}
    toml = by_kind["ConfigMap"]["data"]["federation.toml"]
    (tmp_path / "k8s.toml").write_text(toml)
    kcfg = load_federation_config(str(tmp_path / "k8s.toml"))
    # the router binds every interface; shards are reached at their Services
    assert kcfg.router.zmq == "tcp://0.0.0.0:5555" and kcfg.router.http == "0.0.0.0:8082"
    for s in kcfg.shards:
        assert s.endpoint == f"tcp://{k8s_name(s.id)}:{cfg.shard(s.id).endpoint.rsplit(':', 1)[1]}"
    assert kcfg.shard("s2").store == "sqlite:////var/lib/luigi-federation/s2.db"
    seen: set[str] = set()
    for group in ("default", "finance"):
        items = json.loads(files[f"kubernetes/{group}.json"])["items"]
        deployments = {i["metadata"]["name"]: i for i in items if i["kind"] == "Deployment"}
        services = {i["metadata"]["name"]: i for i in items if i["kind"] == "Service"}
        claims = {i["metadata"]["name"] for i in items if i["kind"] == "PersistentVolumeClaim"}
        assert set(deployments) == set(services) == {k8s_name(s) for s in cfg.groups[group]}
        for name, dep in deployments.items():
            assert DNS_LABEL.match(name) and dep["metadata"]["namespace"] == "data"
            spec = dep["spec"]
            assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
            assert spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
            assert spec["template"]["metadata"]["labels"]["luigi-federation/business-unit"] == group
            container = spec["template"]["spec"]["containers"][0]
            assert container["image"] == "registry.local/lf:1"
            cmd = container["command"]
            sid = cmd[cmd.index("--id") + 1]
            port = int(kcfg.shard(sid).endpoint.rsplit(":", 1)[1])
            assert cmd[cmd.index("--bind") + 1] == f"tcp://0.0.0.0:{port}"
            assert {"name": "zmq", "containerPort": port} in container["ports"]
            svc = services[name]
            assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]
            assert svc["spec"]["ports"] == [{"name": "zmq", "port": port, "targetPort": port}]
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts["config"] == "/etc/luigi-federation"
            volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
            assert volumes["config"]["configMap"]["name"] == "luigi-federation-config"
            if kcfg.shard(sid).store.startswith("sqlite:"):
                assert mounts["data"] == "/var/lib/luigi-federation"
                assert volumes["data"]["persistentVolumeClaim"]["claimName"] in claims
            else:
                assert "data" not in mounts
            seen.add(sid)
    assert seen == set(cfg.shard_ids)
    assert json.loads(files["kubernetes/finance.json"])["items"][0]["kind"] == "Deployment"  # no SQLite there


def test_bad_input_is_one_clear_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    cases = [
        (["--group", "marketing"], "no business unit (group) marketing"),
        (["--target", "docker"], "--target: choose from systemd, kubernetes"),
        (["--config-path", "etc/federation.toml"], "--config-path must be an absolute path"),
    ]
    for extra, message in cases:
        assert main(["deploy", "render", "--config", str(EXAMPLE), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not out.exists()
    clash = FederationConfig(
        shards=(ShardSpec("a_b", "tcp://127.0.0.1:1", "a.db"), ShardSpec("a-b", "tcp://127.0.0.1:2", "b.db")),
        groups={"default": ("a_b", "a-b")},
    )
    with pytest.raises(ConfigError, match="same Kubernetes name"):
        render(clash, RenderOptions())
    ipc = FederationConfig(shards=(ShardSpec("s0", "ipc:///tmp/s0", "s0.db"),), groups={"default": ("s0",)})
    with pytest.raises(ConfigError, match="tcp://host:port"):
        render(ipc, RenderOptions())


def test_rendered_systemd_units_run_a_federation(tmp_path: Path) -> None:
    """Every rendered unit's ExecStart, run as systemd would run it, gives a working federation."""
    fedctl = shutil.which("fedctl", path=str(Path(sys.executable).parent))
    assert fedctl, "fedctl is installed next to the interpreter"
    ids = ["s0", "s1", "fin-0"]
    cfg = FederationConfig(
        shards=tuple(
            ShardSpec(s, f"tcp://127.0.0.1:{free_port()}", f"sqlite:///{tmp_path / 'dev' / s}.db")
            for s in ids
        ),
        groups={"default": ("s0", "s1"), "finance": ("fin-0",)},
        namespaces={"finance": "finance"},
        router=RouterConfig(zmq=f"tcp://127.0.0.1:{free_port()}", http=None),
    )
    (tmp_path / "federation.toml").write_text(cfg.to_toml())
    state, etc, out = tmp_path / "state", tmp_path / "etc", tmp_path / "rendered"
    state.mkdir()
    code = main(
        [
            "deploy",
            "render",
            "--config",
            str(tmp_path / "federation.toml"),
            "--out",
            str(out),
            "--target",
            "systemd",
            "--fedctl",
            fedctl,
            "--config-path",
            str(etc / "federation.toml"),
            "--state-dir",
            str(state),
        ]
    )
    assert code == 0
    etc.mkdir()
    shutil.copy(out / "systemd" / "federation.toml", etc / "federation.toml")  # "install" it
    units = sorted(out.glob("systemd/**/*.service"))
    assert len(units) == 4
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for unit in units:
            argv = shlex.split(_unit(unit.read_text())["Service"]["ExecStart"])
            procs.append(
                subprocess.Popen(
                    argv, env=fed_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        client = ZmqClient(cfg.router.zmq, timeout=5)

        def all_up() -> Any:
            try:
                health = client.call("federation_health", {})
            except Exception:
                return None
            return health if all(s["up"] for s in health["shards"]) else None

        health = wait_for(all_up, 30, what="the rendered federation to come up")
        assert {s["shard_id"]: s["location"] for s in health["shards"]} == {
            s: str(state / f"{s}.db") for s in ids
        }
        client.call("add_task", {"task_id": "finance.Ledger_x_1", "worker": "w", "family": "finance.Ledger"})
        assert (
            client.call("get_work", {"worker": "w", "current_tasks": []})["task_id"] == "finance.Ledger_x_1"
        )
        client.close()
        for p in procs:
            p.send_signal(signal.SIGTERM)  # systemctl stop
        assert [p.wait(timeout=20) for p in procs] == [0, 0, 0, 0]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
