"""federation.toml: validation (every problem at once, with file and key) and precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.config import FederationConfig, load_federation_config, merge_overrides
from federation.errors import ConfigError
from federation.placement import Placement

GOOD = """
default_group = "general"

[router]
zmq = "tcp://127.0.0.1:6000"
http = "127.0.0.1:9000"
timeout = 3

[[shards]]
id = "s0"
endpoint = "tcp://127.0.0.1:6001"
store = "data/s0.db"

[[shards]]
id = "s1"
endpoint = "tcp://127.0.0.1:6002"
store = "sqlite:///data/s1.db"

[[shards]]
id = "fin-0"
endpoint = "tcp://127.0.0.1:6003"
store = "postgresql+psycopg2://postgres@127.0.0.1/test"
schema = "fed_fin_0"

[groups]
general = ["s0", "s1"]
finance = ["fin-0"]

[namespaces]
"finance.ledger" = "finance"
ops.audit = "finance"

[scheduler]
retry_delay = 30
worker-disconnect-delay = 20

[resources]
db = 2
"""


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "federation.toml"
    p.write_text(text)
    return str(p)


def test_good_file(tmp_path: Path) -> None:
    cfg = load_federation_config(write(tmp_path, GOOD), env={})
    assert cfg.router.zmq == "tcp://127.0.0.1:6000"
    assert cfg.router.http_host_port == ("127.0.0.1", 9000)
    assert cfg.router.timeout == 3.0
    assert cfg.shard_ids == ["s0", "s1", "fin-0"]
    # bare paths and relative sqlite URLs are relative to the config file's folder
    assert cfg.shard("s0").store == f"sqlite:///{tmp_path}/data/s0.db"
    assert cfg.shard("s1").store == f"sqlite:///{tmp_path}/data/s1.db"
    assert cfg.shard("fin-0").schema == "fed_fin_0"
    assert cfg.groups == {"general": ("s0", "s1"), "finance": ("fin-0",)}
    # an unquoted dotted key is a nested table in TOML; both spellings mean the dotted namespace
    assert cfg.namespaces == {"finance.ledger": "finance", "ops.audit": "finance"}
    assert cfg.scheduler.retry_delay == 30.0 and cfg.scheduler.worker_disconnect_delay == 20.0
    assert cfg.scheduler.resources == {"db": 2}
    assert cfg.group_of_shard("fin-0") == "finance"
    p = Placement.from_config(cfg)
    assert p.owner("finance.ledger.Post_x_0123456789") == "fin-0"
    assert p.owner("daily.Load_x_0123456789") in ("s0", "s1")


def test_every_problem_reported_at_once_with_file_and_key(tmp_path: Path) -> None:
    bad = """
colour = "blue"
[router]
zmq = "localhost:5555"
http = "nohost"
timeout = -1
speed = 3
[[shards]]
id = "a"
endpoint = "tcp://127.0.0.1:1"
store = "mysql://x"
bogus = 1
[[shards]]
id = "a"
endpoint = "tcp://127.0.0.1:1"
[groups]
g = ["a", "zz"]
[namespaces]
"x." = "g"
y = "nope"
[scheduler]
retry_delay = "soon"
not_a_key = 1
[resources]
db = -2
"""
    path = write(tmp_path, bad)
    with pytest.raises(ConfigError) as e:
        load_federation_config(path, env={})
    problems = e.value.problems
    text = str(e.value)
    assert text.startswith(path + ": ")
    for needle in [
        "unknown key 'colour'",
        "[router] zmq",
        "[router] http",
        "[router] timeout",
        "[router] unknown key 'speed'",
        "'a'.store: unsupported store 'mysql'",
        "unknown key 'bogus'",
        "'a'.id: duplicate",
        "'a'.store: required",
        "unknown shard 'zz'",
        "'x.'",
        "unknown group 'nope'",
        "[scheduler] retry_delay",
        "unknown key 'not_a_key'",
        "resource 'db'",
    ]:
        assert any(needle in p for p in problems), (needle, problems)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_federation_config(str(tmp_path / "missing.toml"), env={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_federation_config(write(tmp_path, "[router\nzmq="), env={})


def test_no_shards_and_empty_default_group_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one shard"):
        load_federation_config(write(tmp_path, "[router]\n"), env={})
    text = GOOD.replace('default_group = "general"', 'default_group = "nobody"')
    # s0/s1/fin-0 are all in named groups, so the default group would be empty
    with pytest.raises(ConfigError, match="'nobody' has no shards"):
        load_federation_config(write(tmp_path, text), env={})


def test_shards_in_no_group_serve_the_default_group(tmp_path: Path) -> None:
    text = GOOD.replace('general = ["s0", "s1"]\n', "")
    cfg = load_federation_config(write(tmp_path, text), env={})
    assert cfg.groups["general"] == ("s0", "s1")


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    env = {
        "FED_ROUTER_ZMQ": "tcp://127.0.0.1:7000",
        "FED_ROUTER_HTTP": "127.0.0.1:7001",
        "FED_SCHEDULER_RETRY_DELAY": "45",
        "FED_ROUTER_TIMEOUT": "2.5",
        "UNRELATED": "x",
    }
    cfg = load_federation_config(path, env=env)
    assert cfg.router.zmq == "tcp://127.0.0.1:7000"  # env over file
    assert cfg.router.timeout == 2.5
    assert cfg.scheduler.retry_delay == 45.0
    assert cfg.router.health_timeout == 1.0  # default
    cfg = load_federation_config(
        path,
        env=env,
        overrides={"router.zmq": "tcp://127.0.0.1:7100", "router.http": None, "scheduler.retry_delay": 5},
    )
    assert cfg.router.zmq == "tcp://127.0.0.1:7100"  # CLI over env
    assert cfg.router.http == "127.0.0.1:7001"  # None = flag not given
    assert cfg.scheduler.retry_delay == 5.0
    cfg = load_federation_config(None, env={"FED_CONFIG": path, "FED_ROUTER_HTTP": ""})
    assert cfg.router.http is None and cfg.router.http_host_port is None


def test_bad_env_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[router\] timeout"):
        load_federation_config(write(tmp_path, GOOD), env={"FED_ROUTER_TIMEOUT": "fast"})


def test_merge_overrides_does_not_mutate() -> None:
    data = {"router": {"zmq": "a"}}
    out = merge_overrides(data, {"router.zmq": "b", "default_group": "g"})
    assert data == {"router": {"zmq": "a"}}
    assert out == {"router": {"zmq": "b"}, "default_group": "g"}


def test_local_federation_round_trips_through_toml(tmp_path: Path) -> None:
    cfg = FederationConfig.local(3, data_dir=str(tmp_path), shard_ports=[7001, 7002, 7003], http=None)
    assert cfg.shard_ids == ["s0", "s1", "s2"]
    assert cfg.shard("s2").store == f"sqlite:///{tmp_path}/s2.db"
    again = load_federation_config(write(tmp_path, cfg.to_toml()), env={})
    assert again.replace(source="") == cfg
    pinned = cfg.replace(namespaces={"finance.ledger": "default"})
    text = pinned.replace(scheduler=pinned.scheduler.replace(retry_delay=1.0, resources={"db": 2})).to_toml()
    again = load_federation_config(write(tmp_path, text), env={})
    assert again.namespaces == {"finance.ledger": "default"}
    assert again.scheduler.resources == {"db": 2} and again.scheduler.retry_delay == 1.0


def test_the_deploy_example_is_valid() -> None:
    root = Path(__file__).resolve().parent.parent
    cfg = load_federation_config(str(root / "deploy" / "federation.toml"), env={})
    assert cfg.groups == {"default": ("s0", "s1", "s2"), "finance": ("fin-0", "fin-1")}
    p = Placement.from_config(cfg)
    assert p.owner("finance.ledger.Close_2026_11_20_0123456789") in ("fin-0", "fin-1")
    assert p.owner("daily.Load_2026_11_20_orders_0123456789") in ("s0", "s1", "s2")


def test_one_coercer_for_every_table() -> None:
    """federation.toml's tables and the TUI's [tui] read booleans and numbers the same way."""
    from federation.config import coerce
    from tui.config import TuiConfig

    for raw, want in (("yes", True), ("No", False), ("on", True), ("0", False), (True, True)):
        assert coerce("bool", raw) is want
        assert TuiConfig.from_mapping({"readonly": raw}).readonly is want
    with pytest.raises(TypeError):
        coerce("bool", "maybe")
    with pytest.raises(ValueError):
        coerce("float", "nan")
    with pytest.raises(ValueError):
        coerce("int", 1.5)
    with pytest.raises(ConfigError):
        TuiConfig.from_mapping({"readonly": "maybe"})


def test_coercer_messages_name_the_expected_type() -> None:
    """luigi.cfg and FED_* values are text: a bad one says what was expected, not Python's int()."""
    from federation.config import coerce, resource_capacity

    with pytest.raises(ValueError, match=r"must be a number \(an integer\), got 'lots'"):
        coerce("int", "lots")
    with pytest.raises(ValueError, match=r"must be a number, got 'soon'"):
        coerce("float", "soon")
    assert coerce("int", " 7 ") == 7 and coerce("float", "1e3") == 1000.0
    assert resource_capacity("db", "3") == 3 and resource_capacity("db", 0) == 0
    for bad in ("2.5", -1, "-1", 1.0, True, "x"):
        with pytest.raises(ValueError, match="resource 'db' must be a non-negative integer"):
            resource_capacity("db", bad)


def test_resources_from_the_environment_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    cfg = load_federation_config(path, env={"FED_RESOURCES_DB": "5", "FED_RESOURCES_GPU": "1"})
    assert cfg.scheduler.resources == {"db": 5, "gpu": 1}
    with pytest.raises(ConfigError, match="environment FED_RESOURCES_GPU: resource 'gpu'"):
        load_federation_config(path, env={"FED_RESOURCES_GPU": "many"})
